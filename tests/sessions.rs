//! What a client believes about its session holds on whichever server it is
//! given: startup parameters and their later changes in transaction mode,
//! a clean server in session mode; and tokio-postgres's extended protocol
//! works through pgbalancer.

mod common;

use common::raw::{self, Next, Raw};
use common::*;
use pgbalancer_config::{AuthType, PoolMode};

async fn settings(c: &tokio_postgres::Client) -> (String, String, String, String, i32) {
    let r = c
        .query_one(
            "SELECT current_setting('application_name'), current_setting('search_path'), \
             current_setting('DateStyle'), current_setting('TimeZone'), pg_backend_pid()",
            &[],
        )
        .await
        .expect("settings query");
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

/// Two clients with different startup parameters share one server (pool
/// of 1) and alternate; each always sees its own settings, including a
/// `SET` of a reported parameter made later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_follow_the_client_across_servers() {
    let db = fresh_db("params");
    let mut cfg = base_config();
    cfg.pool_size = 1;
    let proxy = TestProxy::start(cfg).await;
    let default_tz = admin_sql(&db, "SHOW TimeZone");
    let a_info = format!(
        "{} application_name=alpha options='-c search_path=sa,public -c DateStyle=German -c TimeZone=Asia/Tokyo'",
        proxy.conninfo(&db)
    );
    let (a, conn) = tokio_postgres::connect(&a_info, tokio_postgres::NoTls).await.expect("client a");
    tokio::spawn(conn);
    let b_info = format!("{} application_name=beta", proxy.conninfo(&db));
    let (b, conn) = tokio_postgres::connect(&b_info, tokio_postgres::NoTls).await.expect("client b");
    tokio::spawn(conn);

    let mut pids = std::collections::HashSet::new();
    for _ in 0..5 {
        let (app, path, ds, tz, pid) = settings(&a).await;
        assert_eq!(
            (app.as_str(), path.as_str(), ds.as_str(), tz.as_str()),
            ("alpha", "sa,public", "German, DMY", "Asia/Tokyo")
        );
        pids.insert(pid);
        let (app, path, ds, tz, pid) = settings(&b).await;
        assert_eq!((app.as_str(), path.as_str(), ds.as_str()), ("beta", "\"$user\", public", "ISO, MDY"));
        assert_eq!(tz, default_tz);
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 1, "a pool of 1 means both clients used the same server");

    // Later changes of reported parameters travel with the client too.
    a.batch_execute("SET DateStyle = 'SQL, MDY'").await.unwrap();
    b.batch_execute("SET application_name = 'beta2'").await.unwrap();
    for _ in 0..3 {
        let (app, _, ds, _, _) = settings(&a).await;
        assert_eq!((app.as_str(), ds.as_str()), ("alpha", "SQL, MDY"));
        let (app, _, ds, _, _) = settings(&b).await;
        assert_eq!((app.as_str(), ds.as_str()), ("beta2", "ISO, MDY"));
    }
}

/// The ParameterStatus values a client saw do not change behind its back:
/// the settings pgbalancer replays on a server switch send the client no
/// ParameterStatus at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_switches_send_no_parameter_status() {
    let db = fresh_db("pstatus");
    let mut cfg = base_config();
    cfg.pool_size = 1;
    cfg.auth_type = AuthType::Trust;
    let proxy = TestProxy::start(cfg).await;
    let mut a = Raw::connect(proxy.addr).await;
    // With trust, pgbalancer logs in to PostgreSQL as the client's user;
    // the cluster trusts `postgres` from loopback.
    a.login(&[("user", "postgres"), ("database", &db), ("DateStyle", "German"), ("application_name", "a")]).await;
    let mut b = Raw::connect(proxy.addr).await;
    b.login(&[("user", "postgres"), ("database", &db), ("application_name", "b")]).await;
    for _ in 0..3 {
        for (client, want) in [(&mut a, "German, DMY"), (&mut b, "ISO, MDY")] {
            client.send(&raw::query("SHOW DateStyle")).await;
            let msgs = client.until_ready().await;
            assert!(!msgs.iter().any(|m| matches!(m, Next::Message(b'S', _))), "unexpected ParameterStatus: {msgs:?}");
            let row = msgs.iter().find_map(|m| match m {
                Next::Message(b'D', body) => Some(String::from_utf8_lossy(&body[6..]).into_owned()),
                _ => None,
            });
            assert_eq!(row.as_deref(), Some(want));
        }
    }
}

/// tokio-postgres drives the extended protocol: typed parameters, binary
/// results, NULLs, large values, an error inside a transaction, COPY, and
/// many clients on a smaller pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_extended_protocol() {
    use tokio_postgres::types::Type;
    let db = fresh_db("tpg");
    let mut cfg = base_config();
    cfg.pool_size = 3;
    let proxy = std::sync::Arc::new(TestProxy::start(cfg).await);
    let setup = proxy.connect(&db).await;
    setup.batch_execute("CREATE TABLE kv (k int PRIMARY KEY, v text, b bytea)").await.unwrap();

    let mut tasks = Vec::new();
    for client_no in 0..12i32 {
        let proxy = proxy.clone();
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = proxy.connect(&db).await;
            for i in 0..20i32 {
                // Unnamed statement: Parse/Bind/Describe/Execute/Sync in one go.
                let row = c
                    .query_typed_one(
                        "SELECT $1::int4 * 1000 + $2::int4, $3::text IS NULL",
                        &[(&client_no, Type::INT4), (&i, Type::INT4), (&None::<String>, Type::TEXT)],
                    )
                    .await
                    .unwrap();
                assert_eq!(row.get::<_, i32>(0), client_no * 1000 + i);
                assert!(row.get::<_, bool>(1));
            }
            // Named statements inside a transaction stay on its server.
            let tx = c.transaction().await.unwrap();
            let ins = tx.prepare("INSERT INTO kv VALUES ($1, $2, $3)").await.unwrap();
            for i in 0..10i32 {
                let k = client_no * 100 + i;
                tx.execute(&ins, &[&k, &format!("v{k}"), &vec![k as u8; 3]]).await.unwrap();
            }
            tx.commit().await.unwrap();
            // An error inside a transaction, then recovery.
            let tx = c.transaction().await.unwrap();
            let err = tx.execute("INSERT INTO kv VALUES ($1, 'dup', NULL)", &[&(client_no * 100)]).await.unwrap_err();
            assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION));
            tx.rollback().await.unwrap();
            let n: i64 = c
                .query_typed_one("SELECT count(*) FROM kv WHERE k / 100 = $1", &[(&client_no, Type::INT4)])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 10);
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    // A large value both ways.
    let big = "x".repeat(3 << 20);
    let row = setup.query_typed_one("SELECT length($1::text), md5($1::text)", &[(&big, Type::TEXT)]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3 << 20);
    let back = setup.query_typed_one("SELECT repeat('y', 2000000)", &[]).await.unwrap();
    assert_eq!(back.get::<_, String>(0).len(), 2_000_000);
    // COPY through the extended protocol (inside a transaction).
    let mut c = proxy.connect(&db).await;
    let tx = c.transaction().await.unwrap();
    let sink = tx.copy_in("COPY kv (k, v) FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    let data: String = (5000..5100).map(|k| format!("{k}\tc{k}\n")).collect();
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 100);
    tx.commit().await.unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM kv", &[]).await.unwrap().get(0);
    assert_eq!(n, 12 * 10 + 100);
}

/// Session mode resets a server (DISCARD ALL) before the next client gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_resets_server_between_clients() {
    let db = fresh_db("sreset");
    let mut cfg = base_config();
    cfg.pool_size = 1;
    cfg.pool_mode = PoolMode::Session;
    let proxy = TestProxy::start(cfg).await;
    let a = proxy.connect(&db).await;
    a.batch_execute("SET work_mem = '7MB'; CREATE TEMP TABLE tmp (x int); PREPARE p AS SELECT 1").await.unwrap();
    let pid_a: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    drop(a);
    let b = proxy.connect(&db).await;
    let r = b
        .query_one(
            "SELECT pg_backend_pid(), current_setting('work_mem'), \
             (SELECT count(*) FROM pg_prepared_statements WHERE name = 'p'), to_regclass('pg_temp.tmp') IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i32>(0), pid_a, "pool of 1: the same server");
    assert_eq!(r.get::<_, String>(1), admin_sql(&db, "SHOW work_mem"));
    assert_eq!(r.get::<_, i64>(2), 0);
    assert!(r.get::<_, bool>(3), "temp table survived");
}

fn parameter_statuses(msgs: &[Next]) -> Vec<(String, String)> {
    msgs.iter()
        .filter_map(|m| match m {
            Next::Message(b'S', body) => {
                let mut parts = body.split(|&b| b == 0).map(|p| String::from_utf8_lossy(p).into_owned());
                Some((parts.next()?, parts.next()?))
            }
            _ => None,
        })
        .collect()
}

/// Logins report parameters as PostgreSQL spells them (`iso` → `ISO, MDY`,
/// `utf-8` → `UTF8`), also when answered without a server; and a setting
/// PostgreSQL rejects fails the login, as it would directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_reports_server_spelling_and_rejects_bad_settings() {
    let db = fresh_db("spell");
    let proxy = TestProxy::start(trust_config()).await;
    let params = [("user", "postgres"), ("database", db.as_str()), ("DateStyle", "iso"), ("client_encoding", "utf-8")];
    for attempt in 0..3 {
        let mut c = Raw::connect(proxy.addr).await;
        c.send(&raw::startup(&params)).await;
        let msgs = c.until_ready().await;
        assert!(matches!(msgs.last(), Some(Next::Message(b'Z', _))), "{msgs:?}");
        let ps = parameter_statuses(&msgs);
        let get = |n: &str| ps.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("DateStyle").as_deref(), Some("ISO, MDY"), "attempt {attempt}");
        assert_eq!(get("client_encoding").as_deref(), Some("UTF8"), "attempt {attempt}");
    }
    let mut c = Raw::connect(proxy.addr).await;
    c.send(&raw::startup(&[("user", "postgres"), ("database", &db), ("bogus_param", "1")])).await;
    let msgs = c.until_ready().await;
    let (code, message) = raw::first_error(&msgs).expect("login must fail");
    assert_eq!(code, "42704", "{message}");
}

/// A graceful shutdown reaches every session, whatever it is waiting on:
/// an idle client is told at once (57P01) while a query elsewhere still
/// runs, and that query's client is closed when `shutdown_timeout` ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reaches_idle_and_busy_sessions() {
    let db = fresh_db("shutdown");
    let mut cfg = trust_config();
    cfg.shutdown_timeout = std::time::Duration::from_secs(2);
    let proxy = std::sync::Arc::new(TestProxy::start(cfg).await);
    let mut idle = Raw::connect(proxy.addr).await;
    idle.login(&[("user", APP_USER), ("database", &db)]).await;
    idle.send(&raw::query("SELECT 1")).await;
    idle.until_ready().await;
    let busy = proxy.connect(&db).await;
    let query = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(60)").await.map(|_| ()) });
    // The busy client's query is running before the shutdown starts.
    let su = superuser(&db).await;
    loop {
        let n: i64 = su
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'", &[])
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let shutdown = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.handle.shutdown().await }
    });
    let msgs = idle.until_closed().await;
    let err = msgs.iter().find(|(t, _)| *t == b'E').map(|(_, b)| raw::sqlstate(b));
    assert_eq!(err, Some(Some("57P01".to_owned())), "idle client got {msgs:?}");
    assert!(!shutdown.is_finished() && !query.is_finished(), "the query must still run when the idle client is told");
    let r = query.await.unwrap();
    assert!(r.is_err(), "the running query's client is closed at shutdown_timeout");
    shutdown.await.unwrap();
}

/// A reload reaches sessions that are already open: a client connected
/// before `max_message_size` was lowered is held to the new cap on its
/// next message (the session keeps its own copy of the config and renews
/// it when a reload stored a new one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reaches_open_sessions() {
    let db = fresh_db("reloadcfg");
    let mut cfg = trust_config();
    let proxy = TestProxy::start(cfg.clone()).await;
    let mut c = Raw::connect(proxy.addr).await;
    c.login(&[("user", APP_USER), ("database", &db)]).await;
    let big = raw::query(&format!("SELECT length('{}')", "a".repeat(8 * 1024)));
    c.send(&big).await;
    let msgs = c.until_ready().await;
    assert!(raw::first_error(&msgs).is_none(), "before the reload: {msgs:?}");
    cfg.max_message_size = pgbalancer_config::ByteSize(4 * 1024);
    proxy.handle.reload(cfg).expect("reload");
    c.send(&big).await;
    let msgs = c.until_closed().await;
    let err = msgs.iter().find(|(t, _)| *t == b'E').map(|(_, b)| raw::sqlstate(b));
    assert_eq!(err, Some(Some("08P01".to_owned())), "after the reload: {msgs:?}");
}
