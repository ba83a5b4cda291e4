//! Session state in transaction (and statement) pooling, with a pool of one
//! server shared by several clients (scenario 30):
//!
//! * settings changed with `SET`, `RESET` or `set_config` follow their client
//!   to every server it gets and never reach another client's transactions;
//! * state that cannot be replayed (roles, LISTEN, temp objects, advisory
//!   locks, WITH HOLD cursors, SQL PREPARE, RESET ALL, LOAD …) pins the
//!   client to its server; nobody else gets that server until the client
//!   leaves (or sends DISCARD ALL), and then it comes back clean;
//! * statement mode refuses transaction blocks without leaving one open;
//! * protocol-level prepared statements behave as PostgreSQL's do at the
//!   edges (duplicate names, Close, DEALLOCATE, changed result types, LRU).
//!
//! Tests marked `BUG:` fail against the current proxy on purpose: each shows
//! PostgreSQL's own answer next to pgbalancer's.

mod common;

use std::time::Duration;

use common::raw::{self, bind_execute, close, get_raw, login, parse, script, sync};
use common::*;
use futures_util::{stream, StreamExt};
use pgbalancer_config::{Config, PoolMode};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio_postgres::{AsyncMessage, Client, Notification, SimpleQueryMessage};
use Leave::{DiscardAll, Disconnect};

/// A tokio-postgres client through pgbalancer as `user` (a password is only
/// used when asked for), with its notifications kept in a channel.
async fn connect_as(proxy: &TestProxy, user: &str, db: &str) -> (Client, UnboundedReceiver<Notification>) {
    let info = format!("host=127.0.0.1 port={} user={user} password={APP_PASSWORD} dbname={db}", proxy.port());
    let (client, mut conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await.expect("connect");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send(n);
            }
        }
    });
    (client, rx)
}

/// Every row of a simple query, its columns joined with `|` (NULL as `NULL`).
async fn rows(c: &Client, sql: &str) -> Vec<String> {
    let msgs = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL")).collect::<Vec<_>>().join("|"))
            }
            _ => None,
        })
        .collect()
}

async fn get(c: &Client, sql: &str) -> String {
    one(c, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// What a session carries that these tests could leave behind, as the
/// session itself sees it: roles, LISTEN channels, SQL-level and foreign
/// prepared statements, cursors, temp objects and every setting.
async fn fingerprint(c: &Client) -> Vec<String> {
    let mut v = rows(
        c,
        "SELECT 'users=' || current_user || '/' || session_user \
         UNION ALL SELECT 'listening=' || coalesce(string_agg(ch, ','), '') FROM pg_listening_channels() ch \
         UNION ALL SELECT 'prepared=' || coalesce(string_agg(name, ','), '') FROM pg_prepared_statements \
           WHERE name NOT LIKE '\\_pgb\\_s%' \
         UNION ALL SELECT 'cursors=' || count(*) FROM pg_cursors \
         UNION ALL SELECT 'temp objects=' || count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema() \
         UNION ALL SELECT 'setting ' || name || '=' || coalesce(setting, '') FROM pg_settings",
    )
    .await;
    v.sort();
    v
}

/// Lines of `after` not in `before` and the reverse, except those starting with `ignore`.
fn diff(before: &[String], after: &[String], ignore: Option<&str>) -> Vec<String> {
    let keep = |l: &&String| !ignore.is_some_and(|p| l.starts_with(p));
    let gone = before.iter().filter(keep).filter(|l| !after.contains(l)).map(|l| format!("- {l}"));
    let new = after.iter().filter(keep).filter(|l| !before.contains(l)).map(|l| format!("+ {l}"));
    gone.chain(new).collect()
}

async fn next_note(notes: &mut UnboundedReceiver<Notification>) -> Notification {
    within(Duration::from_secs(10), "a notification", notes.recv()).await.expect("connection open")
}

async fn advisory_locks(db: &str, pid: &str) -> String {
    let sql = format!("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = {pid}");
    get(&superuser(db).await, &sql).await
}

/// One kind of pinning session state.
#[derive(Clone, Copy)]
struct Kind {
    what: &'static str,
    /// What client A runs (`{role}` stands for the test's role).
    create: &'static str,
    /// Through the extended protocol (tokio-postgres `execute`) instead of a simple Query.
    extended: bool,
    /// The SQLSTATE `create` fails with, when it must fail.
    fails: Option<&'static str>,
    /// A's later queries, each its own transaction, and their first value.
    uses: Uses,
    /// Advisory locks A's backend holds meanwhile.
    locks: &'static str,
    /// A LISTENs on this channel: a NOTIFY sent straight to the primary reaches it.
    channel: Option<&'static str>,
    /// Settings that may stay defined in the server process (lines of the
    /// fingerprint starting so are not compared).
    lingers: Option<&'static str>,
    /// What the next client must see on that server.
    next_sees: Uses,
    /// The state cannot be undone (`LOAD`): the server is closed when A
    /// leaves, and the next client gets a new one.
    closes: bool,
}

type Uses = &'static [(&'static str, &'static str)];

fn kind(what: &'static str, create: &'static str, uses: Uses) -> Kind {
    Kind {
        what,
        create,
        uses,
        extended: false,
        fails: None,
        locks: "0",
        channel: None,
        lingers: None,
        next_sees: &[],
        closes: false,
    }
}

impl Kind {
    fn fails(self, code: &'static str) -> Kind {
        Kind { fails: Some(code), ..self }
    }

    fn extended(self) -> Kind {
        Kind { extended: true, ..self }
    }

    fn closes(self) -> Kind {
        Kind { closes: true, ..self }
    }
}

#[derive(Clone, Copy, Debug)]
enum Leave {
    Disconnect,
    DiscardAll,
}

/// Scenario 30 for one kind, on a pool-of-one proxy: B sees the server,
/// A creates the state and keeps using it, B cannot get the server
/// meanwhile, A leaves (or DISCARD ALLs), and a new client gets the same
/// server process back exactly as B first saw it.
async fn pinned_state_leaves_nothing(proxy: &TestProxy, db: &str, user: &str, role: &str, k: &Kind, leave: Leave) {
    let what = format!("{} ({leave:?})", k.what);
    let stats = proxy.handle.stats();
    assert_eq!(stats.pinned_clients(), 0, "{what}: nobody pinned at the start");
    let (b, _) = connect_as(proxy, user, db).await;
    let pid = get(&b, "SELECT pg_backend_pid()").await;
    let baseline = fingerprint(&b).await;
    let (a, mut notes) = connect_as(proxy, user, db).await;
    assert_eq!(get(&a, "SELECT pg_backend_pid()").await, pid, "{what}: pool of 1, one server");

    let create = k.create.replace("{role}", role);
    let created =
        if k.extended { a.execute(create.as_str(), &[]).await.map(drop) } else { a.batch_execute(&create).await };
    match (created, k.fails) {
        (Ok(()), None) => {}
        (Err(e), Some(code)) => assert_eq!(e.code().map(|c| c.code()), Some(code), "{what}: {e}"),
        (r, _) => panic!("{what}: `{create}` gave {r:?}, expected failure {:?}", k.fails),
    }
    assert_eq!(stats.pinned_clients(), 1, "{what}: A is pinned");
    for (sql, want) in k.uses {
        let got = get(&a, &sql.replace("{role}", role)).await;
        assert_eq!(got, want.replace("{role}", role), "{what}: A's later `{sql}`");
    }
    assert_eq!(get(&a, "SELECT pg_backend_pid()").await, pid, "{what}: A kept its server");
    assert_eq!(advisory_locks(db, &pid).await, k.locks, "{what}: advisory locks of A's backend");
    if let Some(ch) = k.channel {
        superuser(db).await.batch_execute(&format!("NOTIFY {ch}, 'direct'")).await.unwrap();
        let n = next_note(&mut notes).await;
        assert_eq!((n.channel(), n.payload()), (ch, "direct"), "{what}");
    }

    // B must not get A's server: it waits query_wait_timeout and is told so.
    let err = b.simple_query("SELECT pg_backend_pid()").await.expect_err("B must not run while A is pinned");
    let msg = err.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| err.to_string());
    assert_eq!(msg, "query_wait_timeout", "{what}: {err}");
    assert_eq!(stats.pinned_clients(), 1, "{what}");

    let a = match leave {
        Disconnect => {
            drop(a);
            None
        }
        DiscardAll => {
            // Inside a transaction DISCARD ALL fails and unpins nothing.
            a.batch_execute("BEGIN").await.unwrap();
            let e = a.batch_execute("DISCARD ALL").await.expect_err("DISCARD ALL in a transaction");
            assert_eq!(e.code().map(|c| c.code()), Some("25001"), "{what}: {e}");
            a.batch_execute("ROLLBACK").await.unwrap();
            assert_eq!(stats.pinned_clients(), 1, "{what}: a failed DISCARD ALL must not unpin");
            a.batch_execute("DISCARD ALL").await.unwrap();
            assert_eq!(stats.pinned_clients(), 0, "{what}: a lone DISCARD ALL unpins");
            assert!(diff(&baseline, &fingerprint(&a).await, k.lingers).is_empty(), "{what}: A's own state gone");
            Some(a)
        }
    };
    wait_until("pinned_clients back to 0", || stats.pinned_clients() == 0).await;

    let (b2, _) = connect_as(proxy, user, db).await;
    let next_pid = get(&b2, "SELECT pg_backend_pid()").await;
    if k.closes {
        assert_ne!(next_pid, pid, "{what}: A's server is closed, the next client gets a new one");
    } else {
        assert_eq!(next_pid, pid, "{what}: the next client gets the same server");
    }
    let leaked = diff(&baseline, &fingerprint(&b2).await, k.lingers);
    assert!(leaked.is_empty(), "{what}: state left on the server for the next client:\n{}", leaked.join("\n"));
    assert_eq!(advisory_locks(db, &pid).await, "0", "{what}: advisory locks left");
    for (sql, want) in k.next_sees {
        assert_eq!(get(&b2, sql).await, *want, "{what}: the next client's `{sql}`");
    }
    if let Some(a) = a {
        assert_eq!(get(&a, "SELECT pg_backend_pid()").await, pid, "{what}: A goes on, unpinned");
    }
}

/// Runs each kind in turn on one pool-of-one proxy (the same server all along).
async fn run_kinds(prefix: &str, cfg: Config, user: &str, kinds: &[(Kind, Leave)]) {
    let db = fresh_db(prefix);
    let role = format!("{db}_r");
    admin_sql(&db, &format!("CREATE ROLE {role} NOLOGIN; GRANT {role} TO app"));
    let proxy = TestProxy::start(pool_of_one(cfg)).await;
    for (k, leave) in kinds {
        pinned_state_leaves_nothing(&proxy, &db, user, &role, k, *leave).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_unreplayable_settings_pin_and_leave_nothing() {
    let role_is: Uses = &[("SELECT current_user || '/' || session_user", "{role}/app")];
    let app_is: Uses = &[("SELECT current_user || '/' || session_user", "app/app")];
    let no_auto_explain: Uses = &[("SELECT current_setting('auto_explain.log_min_duration', true) IS NULL", "t")];
    let kinds = [
        (kind("SET ROLE", "SET ROLE {role}", role_is), Disconnect),
        (kind("SET ROLE", "SET ROLE {role}", role_is), DiscardAll),
        (kind("set_config('role')", "SELECT set_config('role', '{role}', false)", role_is), Disconnect),
        (kind("RESET ROLE", "RESET ROLE", app_is), Disconnect),
        (kind("SET SESSION AUTHORIZATION", "SET SESSION AUTHORIZATION {role}", app_is).fails("42501"), Disconnect),
        (kind("RESET ALL", "SET statement_timeout = '3s'; RESET ALL", &[("SHOW statement_timeout", "0")]), Disconnect),
        (
            kind(
                "set_config with a computed name",
                "SELECT set_config('statement' || '_timeout', '4321ms', false)",
                &[("SHOW statement_timeout", "4321ms")],
            ),
            Disconnect,
        ),
        // app may LOAD only from $libdir/plugins (none here): the failed attempt pins, leaves nothing.
        (kind("LOAD", "LOAD 'auto_explain'", no_auto_explain).fails("42501").closes(), Disconnect),
    ];
    run_kinds("pin_roles", base_config(), APP_USER, &kinds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_and_temp_objects_pin_and_leave_nothing() {
    let listen = Kind { channel: Some("pgb_chan"), ..kind("LISTEN", "LISTEN pgb_chan", &[]) };
    let temp = kind(
        "CREATE TEMP TABLE",
        "CREATE TEMP TABLE pgb_tt AS SELECT 42 AS x",
        &[("SELECT x FROM pgb_tt", "42"), ("SELECT count(*) FROM pg_temp.pgb_tt", "1")],
    );
    let kinds = [
        (listen, Disconnect),
        (listen.extended(), DiscardAll),
        (temp, Disconnect),
        (temp, DiscardAll),
        (
            kind("TEMP VIEW", "CREATE TEMPORARY VIEW pgb_tv AS SELECT 7 AS v", &[("SELECT v FROM pgb_tv", "7")]),
            Disconnect,
        ),
        (kind("SELECT INTO TEMP", "SELECT 5 AS y INTO TEMP pgb_ti", &[("SELECT y FROM pgb_ti", "5")]), Disconnect),
    ];
    run_kinds("pin_temp", base_config(), APP_USER, &kinds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_cursors_and_sql_prepare_pin_and_leave_nothing() {
    let lock = Kind { locks: "1", ..kind("pg_advisory_lock", "SELECT pg_advisory_lock(4242)", &[]) };
    let own: Uses = &[("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()", "1")];
    let try_lock = Kind { locks: "1", ..kind("pg_try_advisory_lock", "SELECT pg_try_advisory_lock(1, 2)", own) };
    let fetch: Uses = &[("FETCH NEXT FROM pgb_c", "1"), ("FETCH NEXT FROM pgb_c", "2")];
    let execute: Uses = &[("EXECUTE pgb_p(3)", "300"), ("EXECUTE pgb_p(4)", "400")];
    let prepare = kind("PREPARE", "PREPARE pgb_p(int) AS SELECT $1 * 100", execute);
    let kinds = [
        (lock, Disconnect),
        (lock.extended(), DiscardAll),
        (try_lock, Disconnect),
        (
            kind("DECLARE WITH HOLD", "DECLARE pgb_c CURSOR WITH HOLD FOR SELECT generate_series(1, 3)", fetch),
            Disconnect,
        ),
        (prepare, Disconnect),
        (prepare, DiscardAll),
    ];
    run_kinds("pin_locks", base_config(), APP_USER, &kinds).await;
}

/// What only a superuser may do, through a trust proxy as `postgres`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superuser_session_authorization_and_load_pin_and_leave_nothing() {
    let auth: Uses = &[("SELECT current_user || '/' || session_user", "app/app")];
    // A loaded library cannot be unloaded (DISCARD ALL leaves its settings
    // defined): the server is closed, and the next one never loaded it.
    let load = Kind {
        next_sees: &[("SELECT count(*) FROM pg_settings WHERE name LIKE 'auto_explain.%'", "0")],
        ..kind(
            "LOAD",
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0",
            &[("SHOW auto_explain.log_min_duration", "0")],
        )
        .closes()
    };
    let kinds =
        [(kind("SET SESSION AUTHORIZATION", "SET SESSION AUTHORIZATION app", auth), Disconnect), (load, Disconnect)];
    run_kinds("pin_super", trust_config(), "postgres", &kinds).await;
}

const WATCHED: &str = "SELECT current_setting('statement_timeout'), current_setting('search_path'), \
    current_setting('lock_timeout'), current_setting('work_mem'), \
    coalesce(nullif(current_setting('myapp.user_id', true), ''), 'unset'), \
    coalesce(nullif(current_setting('myapp.tenant', true), ''), 'unset'), pg_backend_pid()";
const ST: usize = 0;
const PATH: usize = 1;
const LOCK: usize = 2;
const MEM: usize = 3;
const UID: usize = 4;
const TENANT: usize = 5;

/// The watched settings as `c` sees them, and its server's pid.
async fn watched(c: &Client) -> (Vec<String>, String) {
    let row = rows(c, WATCHED).await.pop().expect("a row");
    let mut v: Vec<String> = row.split('|').map(str::to_owned).collect();
    let pid = v.pop().expect("pid");
    (v, pid)
}

/// `SET`, `RESET` and `set_config` are replayed: with a pool of one server
/// and two clients alternating on it, each sees only its own settings,
/// and nobody gets pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_settings_follow_their_client_only() {
    let db = fresh_db("replay");
    let proxy = TestProxy::start(pool_of_one(base_config())).await;
    let a = proxy.connect(&db).await;
    let b = proxy.connect(&db).await;
    let (defaults, pid) = watched(&b).await;
    assert_eq!(defaults[UID], "unset");
    let mut want_a = defaults.clone();
    let mut want_b = defaults.clone();
    // A and B alternate (twice) on the one server, each seeing its own values.
    macro_rules! check {
        ($step:expr) => {
            for _ in 0..2 {
                assert_eq!(watched(&a).await, (want_a.clone(), pid.clone()), "A after {}", $step);
                assert_eq!(watched(&b).await, (want_b.clone(), pid.clone()), "B after {}", $step);
            }
            assert_eq!(proxy.handle.stats().pinned_clients(), 0, "{}: settings must not pin", $step);
        };
    }

    a.batch_execute("SET statement_timeout = '1234ms'").await.unwrap();
    want_a[ST] = "1234ms".into();
    check!("SET");

    a.batch_execute("SET SESSION search_path TO pgb_schema, public").await.unwrap();
    want_a[PATH] = "pgb_schema, public".into();
    check!("SET SESSION");

    a.batch_execute("SELECT set_config('myapp.user_id', '42', false)").await.unwrap();
    want_a[UID] = "42".into();
    check!("set_config");

    // In Parse text, then by Bind of a named statement, again and again.
    a.query_one("SELECT set_config('myapp.tenant', $1, false)", &[&"t1"]).await.unwrap();
    want_a[TENANT] = "t1".into();
    check!("set_config by Parse");
    let st = a.prepare("SELECT set_config('myapp.tenant', $1, false)").await.unwrap();
    for t in ["t2", "t3"] {
        a.query_one(&st, &[&t]).await.unwrap();
        want_a[TENANT] = t.into();
        check!("set_config by Bind");
    }

    a.batch_execute("SET lock_timeout = '2s'").await.unwrap();
    want_a[LOCK] = "2s".into();
    check!("SET lock_timeout");
    a.batch_execute("RESET lock_timeout").await.unwrap();
    want_a[LOCK] = defaults[LOCK].clone();
    check!("RESET");

    a.batch_execute("SET work_mem = '3MB'").await.unwrap();
    a.batch_execute("BEGIN; SET work_mem = '5MB'; SET statement_timeout = '1s'; ROLLBACK").await.unwrap();
    want_a[MEM] = "3MB".into();
    check!("SET in a rolled back transaction");

    let local = "BEGIN; SET LOCAL statement_timeout = '9s'; SELECT set_config('myapp.user_id', '99', true); COMMIT";
    a.batch_execute(local).await.unwrap();
    check!("SET LOCAL");

    b.batch_execute("SET statement_timeout = '5s'").await.unwrap();
    want_b[ST] = "5s".into();
    check!("B's own SET");

    a.batch_execute("BEGIN; SELECT set_config('myapp.user_id', '43', false); COMMIT").await.unwrap();
    want_a[UID] = "43".into();
    check!("set_config in a committed transaction");
    a.batch_execute("RESET myapp.user_id").await.unwrap();
    want_a[UID] = "unset".into();
    check!("RESET of a custom setting");
}

/// A LISTENing transaction-mode client receives notifications while idle,
/// from another client through pgbalancer and from a direct connection;
/// UNLISTEN does not unpin (documented choice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_receives_notifications_while_idle() {
    let db = fresh_db("listen");
    let mut cfg = base_config();
    cfg.pool_size = 2;
    let proxy = TestProxy::start(cfg).await;
    let stats = proxy.handle.stats();
    let (a, mut notes) = connect_as(&proxy, APP_USER, &db).await;
    a.batch_execute("LISTEN pgb_events").await.unwrap();
    assert_eq!(stats.pinned_clients(), 1);
    let b = proxy.connect(&db).await;
    b.batch_execute("NOTIFY pgb_events, 'via proxy'").await.unwrap();
    let n = next_note(&mut notes).await;
    assert_eq!((n.channel(), n.payload()), ("pgb_events", "via proxy"));
    b.query_one("SELECT pg_notify('pgb_events', 'extended')", &[]).await.unwrap();
    assert_eq!(next_note(&mut notes).await.payload(), "extended");
    let direct = superuser(&db).await;
    direct.batch_execute("NOTIFY pgb_events, 'direct'").await.unwrap();
    assert_eq!(next_note(&mut notes).await.payload(), "direct");
    // A stays idle meanwhile and still works afterwards, on the same server.
    let pid = get(&a, "SELECT pg_backend_pid()").await;
    assert_ne!(n.process_id().to_string(), pid, "B's NOTIFY came from B's own server");
    assert_eq!(rows(&a, "SELECT pg_listening_channels()").await, ["pgb_events"]);

    a.batch_execute("UNLISTEN pgb_events").await.unwrap();
    assert_eq!(stats.pinned_clients(), 1, "UNLISTEN keeps the client pinned");
    direct.batch_execute("NOTIFY pgb_events, 'not for A'").await.unwrap();
    a.batch_execute("LISTEN pgb_other").await.unwrap();
    direct.batch_execute("NOTIFY pgb_other, 'after'").await.unwrap();
    let n = next_note(&mut notes).await;
    assert_eq!((n.channel(), n.payload()), ("pgb_other", "after"), "nothing after UNLISTEN");
    assert_eq!(get(&a, "SELECT pg_backend_pid()").await, pid);
    drop(a);
    wait_until("pinned_clients back to 0", || stats.pinned_clients() == 0).await;
}

/// Statement mode: transaction blocks are refused with an error, nothing
/// stays open on the server, the client goes on; a whole transaction in one
/// Query and prepared statements work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_refuses_transaction_blocks() {
    let db = fresh_db("stmt");
    create_table(&db).await;
    let mut cfg = pool_of_one(base_config());
    cfg.pool_mode = PoolMode::Statement;
    let proxy = TestProxy::start(cfg).await;
    let mut c = proxy.connect(&db).await;
    let other = proxy.connect(&db).await;
    let open_transactions = || async {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND state LIKE 'idle in transaction%'"
        );
        get(&superuser(&db).await, &sql).await
    };
    let refused = |e: tokio_postgres::Error| {
        let d = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
        assert_eq!(
            (d.code().code(), d.message()),
            ("0A000", "transaction blocks are not allowed in statement pooling mode")
        );
    };
    refused(c.batch_execute("BEGIN").await.expect_err("simple BEGIN"));
    assert_eq!(open_transactions().await, "0");
    assert_eq!(get(&c, "SELECT 1").await, "1");
    assert_eq!(get(&other, "SELECT 2").await, "2", "the one server is free again");
    refused(c.transaction().await.err().expect("transaction() must fail"));
    assert_eq!(open_transactions().await, "0");
    refused(c.execute("START TRANSACTION", &[]).await.expect_err("extended START TRANSACTION"));
    assert_eq!(open_transactions().await, "0");
    // Statements run one by one, each committed.
    c.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    assert_eq!(get(&c, "SELECT txid_current_if_assigned() IS NULL").await, "t", "no transaction left open");
    // A whole transaction in one Query ends idle.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (2); COMMIT").await.unwrap();
    assert_eq!(row_count(&db).await, 2);
    let st = c.prepare("SELECT $1::int4 + 1").await.unwrap();
    let st2 = other.prepare("SELECT $1::int4 * 2").await.unwrap();
    for i in 0..3 {
        assert_eq!(c.query_one(&st, &[&i]).await.unwrap().get::<_, i32>(0), i + 1);
        assert_eq!(other.query_one(&st2, &[&i]).await.unwrap().get::<_, i32>(0), i * 2);
    }
    assert_eq!(open_transactions().await, "0");
}

// ---- Protocol-level prepared statements, byte by byte (raw client). ----

/// Duplicate Parse, Close then Bind, DEALLOCATE name, DEALLOCATE ALL: the
/// same answers as PostgreSQL's, message for message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_statements_answer_like_postgres() {
    let db = fresh_db("pstmt");
    let proxy = proxy_with(|_| {}).await;
    let (mut direct, mut pooled) = raw_pair(&db, &proxy).await;
    let steps = [
        [parse("x", "SELECT 1"), sync()].concat(),
        // Already there: the rest up to Sync is discarded.
        [parse("x", "SELECT 2"), bind_execute("x"), bind_execute(""), sync()].concat(),
        [bind_execute("x"), sync()].concat(),
        [close("x"), sync()].concat(),
        [bind_execute("x"), sync()].concat(),
        [parse("x", "SELECT 3"), bind_execute("x"), sync()].concat(),
        raw::query("DEALLOCATE x"),
        [bind_execute("x"), sync()].concat(),
        [parse("x", "SELECT 4"), parse("y", "SELECT 5"), sync()].concat(),
        raw::query("DEALLOCATE ALL"),
        [bind_execute("x"), sync()].concat(),
        [bind_execute("y"), sync()].concat(),
        [parse("y", "SELECT 6"), bind_execute("y"), close("y"), close("y"), sync()].concat(),
    ];
    let want = script(&mut direct, &steps).await;
    assert_eq!(want[1], "E 42P05 prepared statement \"x\" already exists | Z I", "PostgreSQL itself");
    assert_eq!(want[4], "E 26000 prepared statement \"x\" does not exist | Z I", "PostgreSQL itself");
    assert_eq!(want[6], "C DEALLOCATE | Z I", "PostgreSQL itself");
    let got = script(&mut pooled, &steps).await;
    assert_eq!(got, want, "pgbalancer vs PostgreSQL");
}

/// "cached plan must not change result type": the next execution fails as
/// on PostgreSQL, the one after succeeds (PostgreSQL would keep failing:
/// intended). Another client sharing the statement gets the error too (so
/// it knows the result shape changed), then recovers the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_result_type_fails_once_then_recovers() {
    let db = fresh_db("plan");
    admin_sql(&db, "CREATE TABLE cp (a int); INSERT INTO cp VALUES (1)");
    let proxy = proxy_with(|_| {}).await;
    let (mut direct, mut pooled) = raw_pair(&db, &proxy).await;
    let mut other = login(proxy.addr, &db, None).await;
    let prepare = [parse("s", "SELECT * FROM cp"), bind_execute("s"), sync()].concat();
    let run = [bind_execute("s"), sync()].concat();
    for c in [&mut direct, &mut pooled, &mut other] {
        assert_eq!(script(c, std::slice::from_ref(&prepare)).await, ["1 | 2 | D 1 | C SELECT 1 | Z I"]);
    }
    admin_sql(&db, "ALTER TABLE cp ADD COLUMN b int");
    let failed = "E 0A000 cached plan must not change result type | Z I";
    assert_eq!(script(&mut direct, &[run.clone(), run.clone()]).await, [failed, failed], "PostgreSQL");
    let ok = "2 | D 1, | C SELECT 1 | Z I";
    assert_eq!(script(&mut pooled, &[run.clone(), run.clone(), run.clone()]).await, [failed, ok, ok]);
    assert_eq!(script(&mut other, &[run.clone(), run]).await, [failed, ok], "the other client");
}

/// `max_prepared_statements: 2`, ten statements used round robin by two
/// clients on one server: every answer right, never more than 2 on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_cache_evicts_least_recently_used() {
    let db = fresh_db("lru");
    let mut cfg = pool_of_one(base_config());
    cfg.max_prepared_statements = 2;
    let proxy = TestProxy::start(cfg).await;
    let a = proxy.connect(&db).await;
    let b = proxy.connect(&db).await;
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    for k in 0..5 {
        sa.push(a.prepare(&format!("SELECT $1::int4 + {k}000")).await.unwrap());
        sb.push(b.prepare(&format!("SELECT $1::int4 - {k}000")).await.unwrap());
    }
    let count = "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '\\_pgb\\_s%'";
    for round in 0..3i32 {
        for k in 0..5i32 {
            assert_eq!(a.query_one(&sa[k as usize], &[&round]).await.unwrap().get::<_, i32>(0), round + k * 1000);
            assert_eq!(b.query_one(&sb[k as usize], &[&round]).await.unwrap().get::<_, i32>(0), round - k * 1000);
            let n: i64 = get(&a, count).await.parse().unwrap();
            assert!((1..=2).contains(&n), "{n} statements on the server");
        }
    }
    assert_eq!(get(&a, "SELECT pg_backend_pid()").await, get(&b, "SELECT pg_backend_pid()").await, "one server");
}

/// A duplicate Parse fails the transaction as in PostgreSQL: the implicit
/// transaction up to Sync is rolled back, an explicit one is marked failed
/// (`Z E`) and its COMMIT rolls back. (pgbalancer once answered the error
/// itself, the server never saw it, and both INSERTs were committed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_parse_aborts_the_transaction_like_postgres() {
    let db = fresh_db("dupabort");
    create_table(&db).await;
    let proxy = proxy_with(|_| {}).await;
    let (mut direct, mut pooled) = raw_pair(&db, &proxy).await;
    let insert = |v: u8| [parse("", &format!("INSERT INTO t VALUES ({v})")), bind_execute("")].concat();
    let steps = [
        [parse("x", "SELECT 1"), sync()].concat(),
        [insert(1), parse("x", "SELECT 2"), sync()].concat(),
        raw::query("BEGIN"),
        [insert(2), parse("x", "SELECT 3"), sync()].concat(),
        raw::query("COMMIT"),
    ];
    let want = script(&mut direct, &steps).await;
    assert_eq!(row_count(&db).await, 0, "PostgreSQL rolls both back");
    assert_eq!(want[3], "1 | 2 | C INSERT 0 1 | E 42P05 prepared statement \"x\" already exists | Z E");
    let got = script(&mut pooled, &steps).await;
    assert_eq!((got, row_count(&db).await), (want, 0), "pgbalancer vs PostgreSQL (steps, rows committed)");
}

/// `DISCARD ALL` / `DEALLOCATE [ALL]` that PostgreSQL refuses (inside a
/// transaction block, or in a failed transaction) keep the client's
/// protocol-level statements, and `DEALLOCATE x` in a failed transaction
/// gets PostgreSQL's 25P02. (Once pgbalancer forgot them up front.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_discard_or_deallocate_keeps_statements() {
    let db = fresh_db("keepstmt");
    let proxy = proxy_with(|_| {}).await;
    let cases = [
        vec![raw::query("BEGIN"), raw::query("DISCARD ALL"), raw::query("ROLLBACK")],
        vec![raw::query("BEGIN; SELECT 1/0"), raw::query("DEALLOCATE x"), raw::query("ROLLBACK")],
        vec![raw::query("BEGIN; SELECT 1/0"), raw::query("DEALLOCATE ALL"), raw::query("ROLLBACK")],
    ];
    let (mut want, mut got) = (Vec::new(), Vec::new());
    for case in cases {
        // Fresh clients for each case: x prepared, the refused command, x used.
        let steps = [vec![[parse("x", "SELECT 1"), sync()].concat()], case, vec![[bind_execute("x"), sync()].concat()]];
        let steps = steps.concat();
        let (mut direct, mut pooled) = raw_pair(&db, &proxy).await;
        want.push(script(&mut direct, &steps).await);
        got.push(script(&mut pooled, &steps).await);
    }
    assert_eq!(want[0][2], "E 25001 DISCARD ALL cannot run inside a transaction block | Z E", "PostgreSQL itself");
    assert_eq!(
        want[1][2],
        "E 25P02 current transaction is aborted, commands ignored until end of transaction block | Z E"
    );
    assert!(want.iter().all(|w| w[4] == "2 | D 1 | C SELECT 1 | Z I"), "PostgreSQL keeps x: {want:?}");
    assert_eq!(got, want, "pgbalancer vs PostgreSQL");
}

/// The shared server-side names (`_pgb_…`) are pgbalancer's: a client that
/// Binds one by protocol gets 26000 as if it did not exist; a client that
/// names one in SQL (`DEALLOCATE _pgb_s1`) is pinned, so whatever it does
/// to it stays on its own server, which is reset before anyone else gets
/// it. The client that prepared the statement never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_reach_each_others_statements() {
    let db = fresh_db("stmtns");
    let proxy = proxy_with(|_| {}).await;
    let (_, mut a) = raw_pair(&db, &proxy).await;
    let mut b = login(proxy.addr, &db, None).await;
    let use_x = [bind_execute("x"), sync()].concat();
    let ok = "2 | D A's | C SELECT 1 | Z I";
    assert_eq!(script(&mut a, &[[parse("x", "SELECT 'A''s'"), sync()].concat(), use_x.clone()]).await[1], ok);
    let shared = get_raw(&mut b, "SELECT name FROM pg_prepared_statements").await;
    let missing = format!("E 26000 prepared statement \"{shared}\" does not exist | Z I");
    let got_b = script(&mut b, &[[bind_execute(&shared), sync()].concat()]).await;
    assert_eq!(got_b, vec![missing]);
    assert_eq!(proxy.handle.stats().pinned_clients(), 0);
    script(&mut b, &[raw::query(&format!("DEALLOCATE {shared}"))]).await;
    assert_eq!(proxy.handle.stats().pinned_clients(), 1, "naming a shared statement in SQL pins");
    drop(b);
    wait_until("B unpinned", || proxy.handle.stats().pinned_clients() == 0).await;
    assert_eq!(script(&mut a, &[use_x]).await, vec![ok.to_owned()]);
}
