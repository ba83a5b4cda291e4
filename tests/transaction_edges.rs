//! Transaction-mode edges found in review, byte by byte with raw clients,
//! each next to a direct connection's answers where that makes sense. A
//! pool of one server shared by the clients: what a client leaves behind
//! shows up for the next one.
//!
//! * unnamed Parse texts: settings replayed for their client only, state
//!   (temp tables, advisory locks, `_pgb_` names) pins;
//! * `DISCARD ALL` / `DEALLOCATE ALL` with more queries in the same write;
//! * statement mode keeps the server's replies around a refused block;
//! * `max_prepared_statements: 0`: named statements pin;
//! * Closes, `DEALLOCATE` and LRU evictions that PostgreSQL discards or
//!   answers in turn;
//! * huge ErrorResponses, `SET seed`, and statement texts read under a
//!   client's own `standard_conforming_strings` and `search_path`.
//!
//! Tests marked `BUG:` fail against the current proxy on purpose.

mod common;

use common::raw::{
    self, ask, bind_execute, bind_execute_with, close, exchange, get_raw, login, parse, parse_typed, script, sync,
    unnamed,
};
use common::*;
use pgbalancer_config::PoolMode;

/// What a client waiting for a pinned server gets.
const WAITED: &str = "E 08P01 query_wait_timeout | closed";

/// work_mem, statement_timeout, temp objects, advisory locks, server pid.
const SEEN: &str = "SELECT current_setting('work_mem') || '/' || current_setting('statement_timeout') || '/' || \
    (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) || '/' || \
    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) || '/' || pg_backend_pid()";

/// Review u1/psy3: unnamed Parse/Bind/Execute of `SET`, `set_config($1)`,
/// `CREATE TEMP TABLE` and `pg_advisory_lock`: the settings are replayed for
/// that client only, the state pins it, and the next client sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_replay_settings_and_pin_state() {
    let db = fresh_db("unnamed");
    let proxy = proxy_with(|_| {}).await;
    let stats = proxy.handle.stats();
    let (mut direct, mut a) = raw_pair(&db, &proxy).await;
    let mut b = login(proxy.addr, &db, None).await;
    let before = get_raw(&mut b, SEEN).await;
    let pid = before.rsplit('/').next().unwrap().to_owned();

    let settings = [
        unnamed("SET work_mem = '777kB'", &[]),
        unnamed("SELECT set_config('statement_timeout', $1, false)", &["1500ms"]),
    ];
    let want = script(&mut direct, &settings).await;
    assert_eq!(want, ["1 | 2 | C SET | Z I", "1 | 2 | D 1500ms | C SELECT 1 | Z I"], "PostgreSQL itself");
    assert_eq!(script(&mut a, &settings).await, want, "pgbalancer vs PostgreSQL");
    assert_eq!(stats.pinned_clients(), 0, "settings are replayed, not pinned");
    assert_eq!(get_raw(&mut a, SEEN).await, format!("777kB/1500ms/0/0/{pid}"), "A's settings");
    assert_eq!(get_raw(&mut b, SEEN).await, before, "B, on the same server, has none of A's settings");

    let state = [
        unnamed("CREATE TEMP TABLE a_tmp(x int)", &[]),
        unnamed("CREATE TEMP TABLE psy_tmp AS SELECT $1::int AS x", &["1"]),
        unnamed("SELECT pg_advisory_lock(4242)", &[]),
    ];
    let want = script(&mut direct, &state).await;
    assert_eq!(ask(&mut direct, "SELECT pg_advisory_unlock(4242)").await, "T | D t | C SELECT 1 | Z I");
    let got = script(&mut a, &state[..1]).await;
    assert_eq!(stats.pinned_clients(), 1, "an unnamed CREATE TEMP TABLE pins");
    let got = [got, script(&mut a, &state[1..]).await].concat();
    assert_eq!(got, want, "pgbalancer vs PostgreSQL");
    assert_eq!(get_raw(&mut a, SEEN).await, format!("777kB/1500ms/2/1/{pid}"), "A keeps its server");
    assert_eq!(ask(&mut b, SEEN).await, WAITED, "B cannot have A's server meanwhile");
    assert_eq!(stats.pinned_clients(), 1);

    leave(a, &proxy).await;
    let mut next = login(proxy.addr, &db, None).await;
    assert_eq!(get_raw(&mut next, SEEN).await, before, "the next client on A's server sees none of it");
}

/// Review c2: an unnamed Parse whose text names a shared statement
/// (`EXECUTE _pgb_s1`, `DEALLOCATE _pgb_s1`) pins, so whatever it does stays
/// on its own server (reset when it leaves): the statement's owner never
/// notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_parse_naming_a_shared_statement_pins() {
    let db = fresh_db("unnamedpgb");
    let proxy = proxy_with(|_| {}).await;
    let stats = proxy.handle.stats();
    let mut a = login(proxy.addr, &db, None).await;
    let use_secret = [bind_execute("secret"), sync()].concat();
    let ok = "2 | D hunter2 | C SELECT 1 | Z I";
    let prepare = [parse("secret", "SELECT 'hunter2'::text AS k"), sync()].concat();
    assert_eq!(script(&mut a, &[prepare, use_secret.clone()]).await, ["1 | Z I", ok]);
    let mut b = login(proxy.addr, &db, None).await;
    let shared = get_raw(&mut b, "SELECT name FROM pg_prepared_statements WHERE statement LIKE '%hunter2%'").await;
    assert_eq!(stats.pinned_clients(), 0);
    let executed = script(&mut b, &[unnamed(&format!("EXECUTE {shared}"), &[])]).await;
    assert_eq!(executed, ["1 | 2 | D hunter2 | C SELECT 1 | Z I"], "what PostgreSQL does with it");
    assert_eq!(stats.pinned_clients(), 1, "an unnamed Parse of EXECUTE {shared} pins");
    let dealloc = script(&mut b, &[unnamed(&format!("DEALLOCATE {shared}"), &[])]).await;
    assert_eq!(dealloc, ["1 | 2 | C DEALLOCATE | Z I"], "on B's own server");
    let mut c = login(proxy.addr, &db, None).await;
    assert_eq!(ask(&mut c, "SELECT 1").await, WAITED, "nobody else gets B's server meanwhile");
    leave(b, &proxy).await;
    assert_eq!(script(&mut a, &[use_secret]).await, [ok], "A's statement works on the reset server");
}

/// Review dp/da: `DISCARD ALL` or `DEALLOCATE ALL` with more queries in the
/// same write acts only on what came before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_followed_by_more_in_one_write() {
    let db = fresh_db("discardmore");
    let proxy = proxy_with(|_| {}).await;
    let stats = proxy.handle.stats();
    let temp_count = "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()";

    // A pinned client: DISCARD ALL then a new temp table; still pinned.
    let mut a = login(proxy.addr, &db, None).await;
    let pid = get_raw(&mut a, "SELECT pg_backend_pid()").await;
    assert_eq!(ask(&mut a, "CREATE TEMP TABLE first_tmp(x int)").await, "C CREATE TABLE | Z I");
    assert_eq!(stats.pinned_clients(), 1);
    let both = [raw::query("DISCARD ALL"), raw::query("CREATE TEMP TABLE second_tmp(x int)")].concat();
    assert_eq!(exchange(&mut a, &both, 2).await, ["C DISCARD ALL | Z I", "C CREATE TABLE | Z I"]);
    assert_eq!(stats.pinned_clients(), 1, "the temp table made after DISCARD ALL keeps A pinned");
    assert_eq!(get_raw(&mut a, temp_count).await, "1");
    leave(a, &proxy).await;
    let mut b = login(proxy.addr, &db, None).await;
    assert_eq!(get_raw(&mut b, "SELECT pg_backend_pid()").await, pid, "the same server");
    assert_eq!(get_raw(&mut b, temp_count).await, "0", "no second_tmp for the next client");

    // An unpinned client: DISCARD ALL then SET; the SET is replayed for it only.
    let default_mem = get_raw(&mut b, "SHOW work_mem").await;
    let mut c = login(proxy.addr, &db, None).await;
    let both = [raw::query("DISCARD ALL"), raw::query("SET work_mem = '3333kB'")].concat();
    assert_eq!(exchange(&mut c, &both, 2).await, ["C DISCARD ALL | Z I", "C SET | Z I"]);
    assert_eq!(stats.pinned_clients(), 0);
    assert_eq!(get_raw(&mut b, "SHOW work_mem").await, default_mem, "the next client on the server");
    assert_eq!(get_raw(&mut c, "SHOW work_mem").await, "3333kB", "C keeps its SET");
    assert_eq!(get_raw(&mut b, "SELECT pg_backend_pid()").await, pid);

    // DEALLOCATE ALL, then a statement prepared and used in the same write.
    let (mut direct, mut pooled) = raw_pair(&db, &proxy).await;
    let first = [raw::query("DEALLOCATE ALL"), parse("s1", "SELECT 11"), sync(), bind_execute("s1"), sync()].concat();
    let again = [bind_execute("s1"), sync()].concat();
    let mut want = exchange(&mut direct, &first, 3).await;
    want.extend(script(&mut direct, std::slice::from_ref(&again)).await);
    assert_eq!(
        want,
        ["C DEALLOCATE ALL | Z I", "1 | Z I", "2 | D 11 | C SELECT 1 | Z I", "2 | D 11 | C SELECT 1 | Z I"]
    );
    let mut got = exchange(&mut pooled, &first, 3).await;
    got.extend(script(&mut pooled, &[again]).await);
    assert_eq!(got, want, "pgbalancer vs PostgreSQL");
}

const REFUSED: &str = "E 0A000 transaction blocks are not allowed in statement pooling mode";

/// Review s1/s2: statement mode refuses a transaction left open, but keeps
/// every reply of the server before that (rows, errors, a 3 MB row). A
/// transaction that already failed is rolled back without a second error
/// (PostgreSQL sends one ErrorResponse per query).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_keeps_replies_before_the_refusal() {
    let db = fresh_db("stmtkeep");
    let proxy = proxy_with(|c| c.pool_mode = PoolMode::Statement).await;
    let mut c = login(proxy.addr, &db, None).await;
    let open = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND state LIKE 'idle in tr%'");
    let steps = [
        raw::query("BEGIN"),
        raw::query("BEGIN; SELECT 1/0"),
        raw::query("BEGIN; SELECT 1 AS one"),
        raw::query("BEGIN; SELECT repeat('x', 3000000)"),
        raw::query("SELECT 1"),
    ];
    let got = script(&mut c, &steps).await;
    let want = [
        format!("C BEGIN | {REFUSED} | Z I"),
        "C BEGIN | E 22012 division by zero | Z I".to_owned(),
        format!("C BEGIN | T | D 1 | C SELECT 1 | {REFUSED} | Z I"),
        format!("C BEGIN | T | D <3000000 bytes> | C SELECT 1 | {REFUSED} | Z I"),
        "T | D 1 | C SELECT 1 | Z I".to_owned(),
    ];
    assert_eq!(got, want);
    assert_eq!(get_raw(&mut c, &open).await, "0", "no transaction left open");

    // Pipelined in one write: the server runs SELECT 2 inside the block; the
    // first Sync's ReadyForQuery (`T`) is passed on, the refusal comes at the last.
    let ext = [unnamed("BEGIN", &[]), unnamed("SELECT 2", &[])].concat();
    let got = exchange(&mut c, &ext, 2).await;
    assert_eq!(got, ["1 | 2 | C BEGIN | Z T".to_owned(), format!("1 | 2 | D 2 | C SELECT 1 | {REFUSED} | Z I")]);
    assert_eq!(get_raw(&mut c, &open).await, "0", "no transaction left open");

    assert_eq!(ask(&mut c, "SET work_mem = '2MB'").await, "C SET | Z I");
    let mut other = login(proxy.addr, &db, None).await;
    let default_mem = get_raw(&mut other, "SHOW work_mem").await;
    assert_ne!(default_mem, "2MB");
    assert_eq!(get_raw(&mut c, "SHOW work_mem").await, "2MB");
}

/// Review z1: with `max_prepared_statements: 0` a named Parse pins (the
/// statement stays on that server); the next client cannot use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_pin_without_mapping() {
    let db = fresh_db("nomap");
    let proxy = proxy_with(|c| c.max_prepared_statements = 0).await;
    let stats = proxy.handle.stats();
    let mut a = login(proxy.addr, &db, None).await;
    let prepare = [parse("s1", "SELECT 'a-secret'"), sync()].concat();
    let use_s1 = [bind_execute("s1"), sync()].concat();
    assert_eq!(script(&mut a, &[prepare, use_s1.clone()]).await, ["1 | Z I", "2 | D a-secret | C SELECT 1 | Z I"]);
    assert_eq!(stats.pinned_clients(), 1, "a named Parse pins when names are not mapped");
    let mut waiting = login(proxy.addr, &db, None).await;
    assert_eq!(ask(&mut waiting, "SELECT 1").await, WAITED);
    leave(a, &proxy).await;

    let steps = [use_s1.clone(), [parse("s1", "SELECT 'b'"), sync()].concat(), use_s1];
    let (mut direct, mut b) = raw_pair(&db, &proxy).await;
    let want = script(&mut direct, &steps).await;
    assert_eq!(want[0], "E 26000 prepared statement \"s1\" does not exist | Z I", "PostgreSQL itself");
    assert_eq!(script(&mut b, &steps).await, want, "the next client: pgbalancer vs PostgreSQL");
}

/// Review b1: a Close that PostgreSQL discards (an error earlier in the
/// batch) keeps the statement; a refused DISCARD ALL too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarded_close_keeps_the_statement() {
    let db = fresh_db("closeskip");
    let proxy = proxy_with(|_| {}).await;
    let (mut direct, mut pooled) = raw_pair(&db, &proxy).await;
    let steps = [
        [parse("s1", "SELECT 42"), sync()].concat(),
        [parse("", "SELECT 1/0"), bind_execute(""), close("s1"), sync()].concat(),
        [bind_execute("s1"), sync()].concat(),
        [parse("s2", "SELECT 7"), sync()].concat(),
        raw::query("BEGIN; DISCARD ALL; COMMIT"),
        [bind_execute("s2"), sync()].concat(),
    ];
    let want = script(&mut direct, &steps).await;
    assert_eq!(want[1], "1 | E 22012 division by zero | Z I", "PostgreSQL itself");
    assert_eq!(want[2], "2 | D 42 | C SELECT 1 | Z I", "PostgreSQL keeps s1");
    assert_eq!(script(&mut pooled, &steps).await, want, "pgbalancer vs PostgreSQL");
}

/// Review d1: `DEALLOCATE s1` queued behind other queries is answered in its
/// turn (in a failed transaction: 25P02, s1 kept), and does not keep the
/// server from other clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_behind_other_queries_is_answered_in_turn() {
    let db = fresh_db("deallocturn");
    let proxy = proxy_with(|_| {}).await;
    let (mut direct, mut pooled) = raw_pair(&db, &proxy).await;
    let prepare = [parse("s1", "SELECT 1"), sync()].concat();
    let use_s1 = [bind_execute("s1"), sync()].concat();
    let queued = [raw::query("SET work_mem = '1234kB'"), raw::query("DEALLOCATE s1")].concat();
    let failed = [raw::query("BEGIN; SELECT 1/0"), raw::query("DEALLOCATE s1"), raw::query("ROLLBACK")].concat();
    let mut want = Vec::new();
    let mut got = Vec::new();
    for (c, out) in [(&mut direct, &mut want), (&mut pooled, &mut got)] {
        out.extend(exchange(c, &prepare, 1).await);
        out.extend(exchange(c, &queued, 2).await);
        out.extend(script(c, &[use_s1.clone(), prepare.clone()]).await);
        out.extend(exchange(c, &failed, 3).await);
        out.extend(exchange(c, &use_s1, 1).await);
    }
    assert_eq!(want[1..3], ["C SET | Z I", "C DEALLOCATE | Z I"], "PostgreSQL itself");
    let aborted = "E 25P02 current transaction is aborted, commands ignored until end of transaction block | Z E";
    assert_eq!(want[6], aborted, "PostgreSQL itself");
    assert_eq!(got, want, "pgbalancer vs PostgreSQL");

    // The client is idle and unpinned: another gets the server, with its own settings.
    let mut other = login(proxy.addr, &db, None).await;
    assert_ne!(get_raw(&mut other, "SHOW work_mem").await, "1234kB");
    assert_eq!(get_raw(&mut pooled, "SHOW work_mem").await, "1234kB");
    assert_eq!(proxy.handle.stats().pinned_clients(), 0);
}

/// Review ic: a Bind error of 1.2 MB (it quotes the value) reaches the
/// client whole, with ReadyForQuery, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_bind_error_reaches_the_client() {
    let db = fresh_db("hugeerr");
    let proxy = proxy_with(|_| {}).await;
    let (mut direct, mut pooled) = raw_pair(&db, &proxy).await;
    let nines = vec![b'9'; 1_200_000];
    let steps = [
        [parse_typed("s1", "SELECT $1::int", &[23]), sync()].concat(),
        [bind_execute_with("s1", &[&nines]), sync()].concat(),
        raw::query("SELECT 1"),
        [bind_execute_with("s1", &[b"5"]), sync()].concat(),
    ];
    let want = script(&mut direct, &steps).await;
    assert!(want[1].starts_with("E 22003 <") && want[1].ends_with("bytes> | Z I"), "PostgreSQL itself: {}", want[1]);
    assert_eq!(script(&mut pooled, &steps).await, want, "pgbalancer vs PostgreSQL");
}

/// Review l2: `max_prepared_statements: 2`; LRU eviction Closes that
/// PostgreSQL discards after an error leave the statements prepared, and
/// pgbalancer counts them so: the server never holds more than 2.
///
/// BUG: 3 after step 7 (the next batch, one new statement). A statement whose
/// eviction Close was skipped is re-marked prepared with a fresh LRU tick,
/// after the failed batch's Sync, so it counts as used by the batch in
/// flight and the next batch cannot evict it (`ServerStatements::insert` in
/// `ended`, `Note::OwnClose`). It should get back its old tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarded_evictions_keep_the_cache_bounded() {
    let db = fresh_db("evictskip");
    let proxy = proxy_with(|c| c.max_prepared_statements = 2).await;
    let (mut direct, mut pooled) = raw_pair(&db, &proxy).await;
    let count = "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '\\_pgb\\_s%'";
    let prep_use = |i: usize| [parse(&format!("q{i}"), &format!("SELECT {i}")), bind_execute(&format!("q{i}")), sync()];
    let failing = [
        parse("", "SELECT 1/0"),
        bind_execute(""),
        parse("z1", "SELECT 101"),
        parse("z2", "SELECT 102"),
        parse("z3", "SELECT 103"),
        sync(),
    ];
    let mut steps: Vec<Vec<u8>> = (0..6).map(|i| prep_use(i).concat()).collect();
    steps.push(failing.concat());
    steps.push([parse("z1", "SELECT 101"), bind_execute("z1"), sync()].concat());
    steps.extend((0..6).map(|i| [bind_execute(&format!("q{i}")), sync()].concat()));
    let want = script(&mut direct, &steps).await;
    assert_eq!(want[6], "1 | E 22012 division by zero | Z I", "PostgreSQL itself");
    let mut got = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        got.extend(script(&mut pooled, std::slice::from_ref(step)).await);
        let n: usize = get_raw(&mut pooled, count).await.parse().unwrap();
        assert!(n <= 2, "{n} statements on the server after step {i} (answered {:?})", got.last());
    }
    assert_eq!(got, want, "pgbalancer vs PostgreSQL");
}

/// Review g2: `SET seed` cannot be read back and replayed: it pins the
/// client, whose random() sequence is PostgreSQL's, and nobody is
/// disconnected for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_seed_pins_and_the_client_goes_on() {
    let db = fresh_db("seed");
    let proxy = proxy_with(|_| {}).await;
    let stats = proxy.handle.stats();
    let (mut direct, mut c) = raw_pair(&db, &proxy).await;
    let pid = get_raw(&mut c, "SELECT pg_backend_pid()").await;
    let steps = [raw::query("SET seed = 0.5"), raw::query("SELECT random()"), raw::query("SELECT random()")];
    let want = script(&mut direct, &steps).await;
    let got = script(&mut c, &steps[..1]).await;
    assert_eq!(stats.pinned_clients(), 1, "SET seed pins");
    let got = [got, script(&mut c, &steps[1..]).await].concat();
    assert_eq!(got, want, "pgbalancer vs PostgreSQL");
    let mut waiting = login(proxy.addr, &db, None).await;
    assert_eq!(ask(&mut waiting, "SELECT 1").await, WAITED);
    for _ in 0..3 {
        assert_eq!(get_raw(&mut c, "SELECT pg_backend_pid()").await, pid, "still connected, same server");
    }
    leave(c, &proxy).await;
    let mut next = login(proxy.addr, &db, None).await;
    assert_eq!(get_raw(&mut next, "SELECT pg_backend_pid()").await, pid, "the server was reset and reused");
}

/// Review scs: the same statement text means different things under
/// `standard_conforming_strings` on and off; clients with either setting,
/// connected at once and sharing one server, each get PostgreSQL's own
/// answer for theirs. (The escape warning is off: a Parse of a statement
/// the server already has is answered without parsing, so it would be missing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_text_is_read_under_each_clients_settings() {
    let db = fresh_db("scs");
    let proxy = proxy_with(|_| {}).await;
    let off = Some("-c standard_conforming_strings=off -c escape_string_warning=off");
    let steps = [
        [parse("q", r"SELECT length('a\nb')"), bind_execute("q"), sync()].concat(),
        [bind_execute("q"), sync()].concat(),
    ];
    let mut answers = Vec::new();
    for addr in [primary(), proxy.addr] {
        let mut clients = Vec::new();
        for options in [None, off, None, off] {
            clients.push(login(addr, &db, options).await);
        }
        let mut got = Vec::new();
        for c in &mut clients {
            got.push(script(c, &steps).await);
        }
        answers.push(got);
    }
    let (want, got) = (&answers[0], &answers[1]);
    assert_eq!(want[0], ["1 | 2 | D 4 | C SELECT 1 | Z I", "2 | D 4 | C SELECT 1 | Z I"], "PostgreSQL, on");
    assert_eq!(want[1], ["1 | 2 | D 3 | C SELECT 1 | Z I", "2 | D 3 | C SELECT 1 | Z I"], "PostgreSQL, off");
    assert_eq!(got, want, "pgbalancer vs PostgreSQL");
}

/// Review sp2: two clients with different `search_path`s prepare the same
/// text. They share one statement, but PostgreSQL analyses it again under
/// each caller's search_path: B never gets A's table. (Remaining, documented
/// difference: B's Parse is answered without parsing, so B's error shows at
/// Bind instead of Parse, and B's name `q` stays taken.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_statement_follows_each_clients_search_path() {
    let db = fresh_db("spath");
    admin_sql(&db, "CREATE SCHEMA ta; CREATE SCHEMA tb; CREATE TABLE ta.only_a AS SELECT 'a-row'::text AS v");
    let proxy = proxy_with(|_| {}).await;
    let steps = [
        [parse("q", "SELECT v FROM only_a"), bind_execute("q"), sync()].concat(),
        [bind_execute("q"), sync()].concat(),
    ];
    let mut answers = Vec::new();
    for addr in [primary(), proxy.addr] {
        let mut a = login(addr, &db, Some("-c search_path=ta")).await;
        let mut b = login(addr, &db, Some("-c search_path=tb")).await;
        answers.push([script(&mut a, &steps).await, script(&mut b, &steps).await, script(&mut a, &steps[1..]).await]);
    }
    let missing = "E 42P01 relation \"only_a\" does not exist | Z I";
    let a_ok = "2 | D a-row | C SELECT 1 | Z I";
    let no_q = "E 26000 prepared statement \"q\" does not exist | Z I";
    assert_eq!(
        answers[0],
        [vec![format!("1 | {a_ok}"), a_ok.into()], vec![missing.into(), no_q.into()], vec![a_ok.into()]],
        "PostgreSQL"
    );
    let b_bind = format!("1 | {missing}");
    assert_eq!(
        answers[1],
        [vec![format!("1 | {a_ok}"), a_ok.into()], vec![b_bind, missing.into()], vec![a_ok.into()]],
        "pgbalancer"
    );
}
