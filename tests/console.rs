//! The SQL admin console (issue 6, item 4): `psql -d pgbalancer` as one of
//! `admin_users` / `stats_users`, PgBouncer-style SHOW commands, PAUSE and
//! RESUME, and who may do what.

mod common;

use std::time::Duration;

use common::*;
use pgbalancer_config::UserEntry;
use tokio_postgres::{NoTls, SimpleQueryMessage};

const MON_USER: &str = "mon";
const MON_PASSWORD: &str = "mon-secret";

/// `app` is an admin, `mon` (a user of pgbalancer only) a stats user.
/// SCRAM logins, a pool of 10 (`base_config`).
async fn console_proxy() -> TestProxy {
    let mut c = base_config();
    c.users.push(UserEntry { name: MON_USER.into(), password: Some(MON_PASSWORD.into()) });
    c.admin_users = vec![APP_USER.into()];
    c.stats_users = vec![MON_USER.into()];
    TestProxy::start(c).await
}

async fn console(
    proxy: &TestProxy,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let info = format!("host=127.0.0.1 port={} user={user} password={password} dbname=pgbalancer", proxy.port());
    let (client, conn) = tokio_postgres::connect(&info, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The rows of a console command as (column name → value) maps.
async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<(String, String)>> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_owned(), r.get(i).unwrap_or("").to_owned()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn get<'a>(row: &'a [(String, String)], col: &str) -> &'a str {
    row.iter().find(|(k, _)| k == col).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no column {col}: {row:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_report_real_state() {
    let db = fresh_db("console_show");
    let proxy = console_proxy().await;
    let app = proxy.connect(&db).await;
    // A client inside a transaction holds a server: it shows as active,
    // with the server's real pid.
    app.batch_execute("BEGIN").await.unwrap();
    let pid = one(&app, "SELECT pg_backend_pid()").await.unwrap();

    let admin = console(&proxy, APP_USER, APP_PASSWORD).await.expect("admin console login");
    let clients = rows(&admin, "SHOW CLIENTS").await;
    let me = clients.iter().find(|r| get(r, "database") == db).unwrap_or_else(|| panic!("{clients:?}"));
    assert_eq!(get(me, "state"), "active", "{me:?}");
    assert_eq!(get(me, "server_pid"), pid, "{me:?}");
    assert_eq!(get(me, "user"), APP_USER);

    let servers = rows(&admin, "SHOW SERVERS").await;
    let held = servers.iter().find(|r| get(r, "pid") == pid).unwrap_or_else(|| panic!("{servers:?}"));
    assert_eq!(get(held, "state"), "active");
    assert_eq!(get(held, "client_id"), get(me, "id"));

    let pools = rows(&admin, "SHOW POOLS").await;
    let pool = pools.iter().find(|r| get(r, "database") == db).unwrap_or_else(|| panic!("{pools:?}"));
    assert_eq!(get(pool, "sv_active"), "1", "{pool:?}");
    assert_eq!(get(pool, "pool_mode"), "transaction");

    app.batch_execute("COMMIT").await.unwrap();
    let pools = rows(&admin, "SHOW POOLS").await;
    let pool = pools.iter().find(|r| get(r, "database") == db).unwrap();
    assert_eq!((get(pool, "sv_active"), get(pool, "sv_idle")), ("0", "1"), "{pool:?}");
    let servers = rows(&admin, "SHOW SERVERS").await;
    let idle = servers.iter().find(|r| get(r, "pid") == pid).unwrap_or_else(|| panic!("{servers:?}"));
    assert_eq!(get(idle, "state"), "idle");

    let nodes = rows(&admin, "SHOW pool_nodes").await;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!((get(&nodes[0], "role"), get(&nodes[0], "write_target")), ("primary", "t"));
    assert_eq!(get(&nodes[0], "port"), primary().port().to_string());

    let stats = rows(&admin, "SHOW STATS").await;
    let tx: u64 = get(stats.iter().find(|r| get(r, "name") == "transactions").unwrap(), "value").parse().unwrap();
    assert!(tx >= 1, "{stats:?}");

    let config = rows(&admin, "SHOW CONFIG").await;
    let pool_size = config.iter().find(|r| get(r, "key") == "pool_size").unwrap();
    assert_eq!(get(pool_size, "value"), "10");
    let all = format!("{config:?}");
    assert!(!all.contains("SCRAM-SHA-256$") && !all.contains(MON_PASSWORD), "secrets in SHOW CONFIG: {all}");

    let version = rows(&admin, "SHOW VERSION").await;
    assert!(get(&version[0], "version").starts_with("pgbalancer "), "{version:?}");
    assert!(rows(&admin, "SHOW HELP").await.len() >= 10);

    // Several commands in one query run in order; an unknown one is an
    // error that ends the query.
    let msgs = admin.simple_query("SHOW VERSION; SHOW VERSION").await.unwrap();
    assert_eq!(msgs.iter().filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_))).count(), 2);
    let e = admin.simple_query("SHOW NONSENSE").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42601"), "{e}");
    let e = admin.simple_query("DROP TABLE x").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42601"), "{e}");
    // The extended protocol is refused with an error, and the console goes on.
    let e = admin.query("SHOW VERSION", &[]).await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
    assert_eq!(rows(&admin, "SHOW VERSION").await.len(), 1);

    // psql, as operators use it.
    let o = psql(&proxy, "pgbalancer", &["-c", "SHOW POOLS;"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&db), "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_do_what() {
    let db = fresh_db("console_access");
    let mut c = base_config();
    c.users.push(UserEntry { name: MON_USER.into(), password: Some(MON_PASSWORD.into()) });
    c.stats_users = vec![MON_USER.into()];
    let proxy = TestProxy::start(c).await;
    // A user of pgbalancer not listed: refused, like a wrong password would be refused.
    let e = console(&proxy, APP_USER, APP_PASSWORD).await.expect_err("app is not a console user");
    assert_eq!(e.code().map(|c| c.code()), Some("28000"), "{e}");
    // A wrong password for a console user: the usual 28P01.
    let e = console(&proxy, MON_USER, "wrong").await.expect_err("wrong password");
    assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{e}");

    let mon = console(&proxy, MON_USER, MON_PASSWORD).await.expect("stats user login");
    assert!(!rows(&mon, "SHOW STATS").await.is_empty());
    for cmd in ["PAUSE", "RESUME", "RELOAD", "SHUTDOWN"] {
        let e = mon.simple_query(cmd).await.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{cmd}: {e}");
    }
    // Nothing was paused: clients still work.
    proxy.assert_alive(&db).await;
    // Without a daemon to ask, RELOAD is refused clearly (the daemon test
    // in tests/admin.rs covers RELOAD through the daemon).
    let proxy = console_proxy().await;
    let admin = console(&proxy, APP_USER, APP_PASSWORD).await.unwrap();
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
}

/// PAUSE waits for transactions under way to end and holds new ones until
/// RESUME (PgBouncer's semantics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_transactions_and_holds_new_ones() {
    let db = fresh_db("console_pause");
    create_table(&db).await;
    let proxy = console_proxy().await;
    let busy = proxy.connect(&db).await;
    busy.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();

    let admin = console(&proxy, APP_USER, APP_PASSWORD).await.unwrap();
    let pause = tokio::spawn(async move { admin.simple_query("PAUSE").await.map(|_| admin) });
    // Once paused, PAUSE itself is still waiting: a transaction holds a server.
    let watcher = console(&proxy, APP_USER, APP_PASSWORD).await.unwrap();
    let paused =
        |rows: Vec<Vec<(String, String)>>| rows.iter().any(|r| get(r, "name") == "paused" && get(r, "value") == "t");
    within(Duration::from_secs(10), "paused", async {
        while !paused(rows(&watcher, "SHOW STATS").await) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(!pause.is_finished(), "PAUSE returned while a transaction held a server");

    // A new transaction waits ...
    let waiting = proxy.connect(&db).await;
    let held = tokio::spawn(async move { waiting.simple_query("INSERT INTO t VALUES (2)").await.map(|_| waiting) });
    within(Duration::from_secs(10), "the new client waiting", async {
        loop {
            let clients = rows(&watcher, "SHOW CLIENTS").await;
            if clients.iter().any(|r| get(r, "database") == db && get(r, "state") == "waiting") {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    // ... while the open one finishes; then PAUSE returns.
    busy.batch_execute("COMMIT").await.unwrap();
    let admin = within(Duration::from_secs(10), "PAUSE after the commit", pause).await.unwrap().expect("PAUSE");
    assert_eq!(row_count(&db).await, 1, "the held INSERT has not run");
    assert!(!held.is_finished());

    admin.simple_query("RESUME").await.expect("RESUME");
    within(Duration::from_secs(10), "the held INSERT after RESUME", held).await.unwrap().expect("held INSERT");
    assert_eq!(row_count(&db).await, 2);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The console inside the real daemon: RELOAD re-reads the file (a valid
/// change applies, an invalid file is refused with its problems and the old
/// config stays), and SHUTDOWN stops the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_shutdown_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (config, log) = (dir.path().join("pgbalancer.yml"), dir.path().join("daemon.log"));
    let port = free_port();
    let yaml = |pool_size: u32| {
        format!(
            "listen_addresses: '127.0.0.1'\nport: {port}\nauth_type: scram-sha-256\n\
             users:\n  - name: app\n    password: '{}'\nadmin_users: [app]\n\
             backends:\n  - host: 127.0.0.1\n    port: {}\n    role: primary\npool_size: {pool_size}\n",
            app_verifier(),
            primary().port()
        )
    };
    std::fs::write(&config, yaml(20)).unwrap();
    let mut child = spawn_daemon(&config, &log, &[]);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let info = format!("host=127.0.0.1 port={port} user=app password={APP_PASSWORD} dbname=pgbalancer");
    let admin = within(Duration::from_secs(30), "the daemon's console", async {
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("pgbalancer exited ({st}): {}", read_log());
            }
            if let Ok((c, conn)) = tokio_postgres::connect(&info, NoTls).await {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let pool_size = |rows: Vec<Vec<(String, String)>>| {
        get(rows.iter().find(|r| get(r, "key") == "pool_size").unwrap(), "value").to_owned()
    };
    assert_eq!(pool_size(rows(&admin, "SHOW CONFIG").await), "20");

    std::fs::write(&config, yaml(7)).unwrap();
    admin.simple_query("RELOAD").await.expect("RELOAD of a valid file");
    assert_eq!(pool_size(rows(&admin, "SHOW CONFIG").await), "7");

    std::fs::write(&config, yaml(0)).unwrap();
    let e = admin.simple_query("RELOAD").await.expect_err("RELOAD of an invalid file");
    let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
    assert!(msg.contains("pool_size") && msg.contains("old configuration kept"), "{msg}");
    assert_eq!(pool_size(rows(&admin, "SHOW CONFIG").await), "7", "the old config stays");

    admin.simple_query("SHUTDOWN").await.expect("SHUTDOWN");
    let status = within(Duration::from_secs(30), "the daemon's exit after SHUTDOWN", async {
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "{status}: {}", read_log());
}
