//! The corpus for `session_effects`: statements and what they must report.

use super::PinReason::*;
use super::*;

/// Expected effects, compactly.
enum X {
    /// Nothing.
    N,
    /// A pin.
    P(PinReason),
    /// Settings.
    S(&'static [&'static str]),
    /// A pin and settings.
    PS(PinReason, &'static [&'static str]),
    DiscardAll,
    DeallocAll,
    /// A lone `DEALLOCATE name`.
    D(&'static str),
    /// `discard_all`, `deallocate_all` and settings together.
    F(bool, bool, &'static [&'static str]),
}

use X::*;

impl X {
    fn effects(&self) -> SessionEffects {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        match self {
            N => SessionEffects::default(),
            P(r) => SessionEffects { pin: Some(*r), ..Default::default() },
            S(s) => SessionEffects { settings: strings(s), ..Default::default() },
            PS(r, s) => SessionEffects { pin: Some(*r), settings: strings(s), ..Default::default() },
            DiscardAll => SessionEffects { discard_all: true, ..Default::default() },
            DeallocAll => SessionEffects { deallocate_all: true, ..Default::default() },
            D(name) => SessionEffects { deallocate: Some(name.to_string()), ..Default::default() },
            F(discard_all, deallocate_all, s) => SessionEffects {
                discard_all: *discard_all,
                deallocate_all: *deallocate_all,
                settings: strings(s),
                ..Default::default()
            },
        }
    }
}

const CORPUS: &[(&str, X)] = &[
    // Ordinary statements.
    ("", N),
    (";", N),
    (" ; ;; ", N),
    ("SELECT 1", N),
    ("select * from t where a = $1", N),
    ("INSERT INTO t VALUES (1, 'x')", N),
    ("UPDATE t SET a = 1, b = 'SET ROLE x' WHERE id = $2", N),
    ("DELETE FROM t WHERE id = 1", N),
    ("BEGIN", N),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 1; COMMIT", N),
    ("START TRANSACTION READ ONLY", N),
    ("COMMIT; ROLLBACK", N),
    ("SAVEPOINT a; RELEASE SAVEPOINT a; ROLLBACK TO SAVEPOINT a", N),
    ("WITH x AS (SELECT 1) SELECT * FROM x", N),
    ("COPY t FROM STDIN", N),
    ("SHOW search_path", N),
    ("VACUUM ANALYZE t", N),
    ("CREATE TABLE t (id int)", N),
    ("CREATE UNLOGGED TABLE t (id int)", N),
    ("CREATE TABLE temp (id int)", N),
    ("INSERT INTO temp VALUES (1)", N),
    ("INSERT INTO temp (a) SELECT 1", N),
    ("WITH x AS (SELECT 1) INSERT INTO temp SELECT * FROM x", N),
    ("MERGE INTO temp t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", N),
    ("SELECT temp FROM t", N),
    ("SELECT * INTO temp FROM s", N),
    ("SELECT 1 INTO temporary WHERE true", N),
    ("SELECT 1 INTO temp", N),
    ("SELECT 1 INTO temp UNION SELECT 2", N),
    ("ALTER TABLE t SET (fillfactor = 70)", N),
    ("ALTER ROLE r SET search_path = x", N),
    ("ALTER DATABASE d SET work_mem = '1MB'", N),
    ("ALTER SYSTEM SET work_mem = '1MB'", N),
    ("UNLISTEN chan", N),
    ("UNLISTEN *", N),
    ("NOTIFY chan, 'payload'", N),
    ("SELECT pg_notify('c', 'x')", N),
    ("EXECUTE p(1)", N),
    ("FETCH 10 FROM c", N),
    ("CLOSE c", N),
    ("DISCARD PLANS", N),
    ("DISCARD TEMP", N),
    ("DISCARD SEQUENCES", N),
    ("CHECKPOINT", N),
    ("SELECT current_setting('search_path')", N),
    ("SELECT setting FROM pg_settings WHERE name = 'set_config'", N),
    ("SELECT my_set_config('a', 'b')", N),
    ("SELECT 1 AS set_config", N),
    ("SELECT t.set_config FROM t", N),
    ("select \"set_config\" from t", N),
    ("SELECT \"SET_CONFIG\"('a', 'b', false)", N),
    ("SELECT s.pg_advisory_lock FROM s", N),
    ("SELECT \"pg_advisory_lock\" FROM t", N),
    ("SELECT pg_temp FROM t", N),
    ("SELECT 1; ; SELECT 2;", N),
    ("CALL do_things()", N),
    ("DO $$BEGIN PERFORM set_config('a.b', 'c', false); END$$", N),
    ("TABLE t", N),
    ("VALUES (1), (2)", N),
    ("EXPLAIN SELECT * FROM t", N),
    ("EXPLAIN (ANALYZE, BUFFERS) SELECT 1", N),
    // Words inside literals, quotes and comments.
    ("SELECT 'SET ROLE x'", N),
    ("SELECT $$LISTEN x$$", N),
    ("SELECT $tag$ SET x = 1; LISTEN y $tag$", N),
    ("SELECT $a$ $b$ LISTEN $b$ $a$", N),
    ("/* LISTEN */ SELECT 1", N),
    ("-- LISTEN x\nSELECT 1", N),
    ("/* outer /* LISTEN */ still comment; SET ROLE x */ SELECT 1", N),
    ("SELECT E'it\\'s; SET ROLE x'", N),
    ("SELECT 'it''s; LISTEN x'", N),
    ("SELECT \"LISTEN x\"", N),
    ("SELECT \"a\"\"; SET ROLE x\"", N),
    ("SELECT U&'\\0041; LISTEN x'", N),
    ("SELECT 'a'\n'; LISTEN x'", N),
    ("SELECT 'back\\'; SELECT 1", N),
    ("SELECT $1; SELECT $2::text", N),
    ("SELECT x'ff', b'0101'", N),
    ("SELECT 1 -- SET ROLE x", N),
    ("SELECT 'unterminated; SET ROLE x", N),
    ("SELECT $$unterminated; LISTEN x", N),
    ("SELECT 1 /* unterminated; LISTEN x", N),
    ("SELECT \"unterminated; LISTEN x", N),
    ("SELECT E'\\", N),
    // SET that ends with the transaction.
    ("SET LOCAL search_path TO x", N),
    ("set local statement_timeout = 0", N),
    ("SET LOCAL ROLE admin", N),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", N),
    ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", N),
    ("SET CONSTRAINTS ALL DEFERRED", N),
    ("BEGIN; SET LOCAL work_mem = '1GB'; COMMIT", N),
    ("SET CATALOG 'db'", N),
    // Replayable settings.
    ("SET search_path TO myschema, public", S(&["search_path"])),
    ("set Search_Path = public", S(&["search_path"])),
    ("SET SESSION statement_timeout = 5000", S(&["statement_timeout"])),
    ("set session work_mem to '64MB'", S(&["work_mem"])),
    ("SET myapp.user_id = 42", S(&["myapp.user_id"])),
    ("SET MyApp . User_Id TO '42'", S(&["myapp.user_id"])),
    ("SET \"MyApp\".\"User\" = 1", S(&["MyApp.User"])),
    ("SET \"quoted\"\"name\" = 1", S(&["quoted\"name"])),
    ("SET U&\"d\\0061ta.x\" = 1", S(&["data.x"])),
    ("SET U&\"d!0061ta.x\" UESCAPE '!' = 1", S(&["data.x"])),
    ("SET TIME ZONE 'UTC'", S(&["timezone"])),
    ("SET time zone LOCAL", S(&["timezone"])),
    ("SET SESSION TIME ZONE INTERVAL '+02:00' HOUR TO MINUTE", S(&["timezone"])),
    ("SET timezone = 'Europe/Paris'", S(&["timezone"])),
    ("SET NAMES 'UTF8'", S(&["client_encoding"])),
    ("SET NAMES", S(&["client_encoding"])),
    ("SET SCHEMA 'app'", S(&["search_path"])),
    ("SET XML OPTION DOCUMENT", S(&["xmloption"])),
    ("SET datestyle TO DEFAULT", S(&["datestyle"])),
    ("SET x=-1", S(&["x"])),
    ("SET application_name='a;b'", S(&["application_name"])),
    ("SET search_path FROM CURRENT", S(&["search_path"])),
    ("SET search_path = public, pg_temp", S(&["search_path"])),
    ("/* hint */ SET -- c\n work_mem /* c */ = 1", S(&["work_mem"])),
    ("SET a = 1; SET b = 2; SET a = 3", S(&["a", "b"])),
    ("BEGIN; SET search_path = x; COMMIT", S(&["search_path"])),
    ("SET local_preload_libraries = ''", S(&["local_preload_libraries"])),
    ("SET transaction_isolation = 'serializable'", S(&["transaction_isolation"])),
    ("RESET search_path", S(&["search_path"])),
    ("reset MyApp.User_Id", S(&["myapp.user_id"])),
    ("RESET TIME ZONE", S(&["timezone"])),
    ("RESET TRANSACTION ISOLATION LEVEL", N),
    // set_config.
    ("SELECT set_config('search_path', 'x', false)", S(&["search_path"])),
    ("SELECT set_config('Search_Path', 'x', true)", S(&["search_path"])),
    ("SELECT pg_catalog.set_config('myapp.user', $1, false)", S(&["myapp.user"])),
    ("select SET_CONFIG ( 'a.b' , 'c' , false )", S(&["a.b"])),
    ("SELECT set_config(E'my\\x61pp.u', 'x', false)", S(&["myapp.u"])),
    ("SELECT set_config(E'a\\'b', 'x', false)", S(&["a'b"])),
    ("SELECT set_config('a''b', 'x', false)", S(&["a'b"])),
    ("SELECT set_config('my'\n'app.x', 'v', false)", S(&["myapp.x"])),
    ("SELECT \"set_config\"('w', '1', false)", S(&["w"])),
    ("SELECT set_config /* c */ ('w', '1', false)", S(&["w"])),
    ("SELECT set_config('app.user'::text, $1::text, false)", S(&["app.user"])),
    ("SELECT set_config('a'::pg_catalog.text, 'b', false)", P(SessionSetting)),
    ("SELECT set_config($1, $2, false)", P(SessionSetting)),
    ("SELECT set_config(name, 'x', false) FROM t", P(SessionSetting)),
    ("SELECT set_config('a' || 'b', 'x', false)", P(SessionSetting)),
    ("SELECT set_config(U&'a', 'x', false)", P(SessionSetting)),
    ("SELECT set_config($$a$$, 'x', false)", P(SessionSetting)),
    ("SELECT set_config('unterminated", P(SessionSetting)),
    ("SELECT set_config(E'\\0', 'x', false)", P(SessionSetting)),
    ("SELECT set_config('role', 'admin', false)", P(Role)),
    ("SELECT set_config('a', '1', false), set_config('b', '2', true)", S(&["a", "b"])),
    ("WITH s AS (SELECT set_config('x.y', '1', false)) SELECT * FROM s", S(&["x.y"])),
    ("SELECT 'set_config(''x'', ''y'', false)'", N),
    // Role.
    ("SET ROLE admin", P(Role)),
    ("set role none", P(Role)),
    ("SET SESSION ROLE admin", P(Role)),
    ("SET role = 'admin'", P(Role)),
    ("SET \"role\" TO admin", P(Role)),
    ("SET SESSION AUTHORIZATION 'bob'", P(Role)),
    ("SET SESSION SESSION AUTHORIZATION DEFAULT", P(Role)),
    ("SET session_authorization = bob", P(Role)),
    ("RESET ROLE", P(Role)),
    ("RESET SESSION AUTHORIZATION", P(Role)),
    ("SET search_path = x; SET ROLE y", PS(Role, &["search_path"])),
    // Session settings that cannot be replayed.
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", P(SessionSetting)),
    ("RESET ALL", P(SessionSetting)),
    ("SET", P(SessionSetting)),
    ("SET 'x' = 1", P(SessionSetting)),
    ("SET x.", P(SessionSetting)),
    ("SET x", P(SessionSetting)),
    ("RESET", P(SessionSetting)),
    ("SET U&\"bad\\00\" = 1", P(SessionSetting)),
    // LISTEN.
    ("LISTEN chan", P(Listen)),
    ("listen \"Chan\"", P(Listen)),
    ("SELECT 1; LISTEN x; SELECT 2", P(Listen)),
    ("/* c */ LISTEN/* c */x", P(Listen)),
    // Temporary objects.
    ("CREATE TEMP TABLE t (id int)", P(TempObject)),
    ("create temporary table t as select 1", P(TempObject)),
    ("CREATE GLOBAL TEMPORARY TABLE t (id int)", P(TempObject)),
    ("CREATE LOCAL TEMP TABLE t (id int)", P(TempObject)),
    ("CREATE TEMP SEQUENCE s", P(TempObject)),
    ("CREATE TEMP VIEW v AS SELECT 1", P(TempObject)),
    ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", P(TempObject)),
    ("CREATE OR REPLACE TEMPORARY RECURSIVE VIEW v (n) AS SELECT 1", P(TempObject)),
    ("CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1", P(TempObject)),
    ("SELECT * INTO TEMP t FROM s", P(TempObject)),
    ("SELECT a, b INTO TEMPORARY TABLE t FROM s", P(TempObject)),
    ("select 1 into temp table \"T\"", P(TempObject)),
    ("WITH x AS (SELECT 1) SELECT * INTO TEMP y FROM x", P(TempObject)),
    ("CREATE TABLE pg_temp.t (id int)", P(TempObject)),
    ("CREATE TABLE PG_TEMP . t (id int)", P(TempObject)),
    ("CREATE TABLE \"pg_temp\".t (id int)", P(TempObject)),
    ("CREATE TABLE pg_temp_3.t (id int)", P(TempObject)),
    ("CREATE FUNCTION pg_temp.f() RETURNS int AS $$SELECT 1$$ LANGUAGE sql", P(TempObject)),
    ("CREATE VIEW v AS SELECT * FROM pg_temp.t", P(TempObject)),
    ("EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", P(TempObject)),
    ("EXPLAIN (ANALYZE) CREATE TEMP TABLE t AS SELECT 1", P(TempObject)),
    ("CREATE TABLE pg_temporary.t (id int)", N),
    ("CREATE TABLE pg_temp_x.t (id int)", N),
    ("CREATE TABLE \"PG_TEMP\".t (id int)", N),
    ("SELECT 'CREATE TEMP TABLE x'", N),
    // Advisory locks.
    ("SELECT pg_advisory_lock(1)", P(AdvisoryLock)),
    ("SELECT PG_ADVISORY_LOCK_SHARED(1, 2)", P(AdvisoryLock)),
    ("SELECT pg_try_advisory_lock(hashtext('job'))", P(AdvisoryLock)),
    ("SELECT pg_catalog.pg_try_advisory_lock_shared(1)", P(AdvisoryLock)),
    ("SELECT \"pg_advisory_lock\"(1)", P(AdvisoryLock)),
    ("SELECT pg_advisory_lock /* c */ (1)", P(AdvisoryLock)),
    ("SELECT x FROM t WHERE pg_try_advisory_lock(t.id) LIMIT 1", P(AdvisoryLock)),
    ("SELECT pg_advisory_xact_lock(1)", N),
    ("SELECT pg_try_advisory_xact_lock_shared(1)", N),
    ("SELECT pg_advisory_unlock(1)", N),
    ("SELECT pg_advisory_unlock_all()", N),
    ("SELECT 'pg_advisory_lock(1)'", N),
    ("-- pg_advisory_lock(1)\nSELECT 1", N),
    // Cursors.
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", P(HoldCursor)),
    ("declare c no scroll cursor with hold for select 1", P(HoldCursor)),
    ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", N),
    ("DECLARE c CURSOR FOR SELECT 1", N),
    ("DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold", N),
    ("DECLARE c BINARY INSENSITIVE SCROLL CURSOR WITH /* x */ HOLD FOR SELECT 1", P(HoldCursor)),
    // PREPARE and LOAD.
    ("PREPARE p AS SELECT 1", P(SqlPrepare)),
    ("prepare p (int) as select $1", P(SqlPrepare)),
    ("PREPARE transaction AS SELECT 1", P(SqlPrepare)),
    ("PREPARE TRANSACTION 'gid'", N),
    ("LOAD 'auto_explain'", P(Load)),
    ("load '$libdir/plugins/x'", P(Load)),
    // DISCARD and DEALLOCATE.
    ("DISCARD ALL", DiscardAll),
    ("discard all;", DiscardAll),
    ("DEALLOCATE ALL", DeallocAll),
    ("DEALLOCATE PREPARE ALL", DeallocAll),
    ("DEALLOCATE p1", D("p1")),
    ("DEALLOCATE P1;", D("p1")),
    ("deallocate prepare S_1", D("s_1")),
    ("DEALLOCATE \"S_1\"", D("S_1")),
    ("DEALLOCATE \"a\"\"b\"", D("a\"b")),
    ("DEALLOCATE prepare", D("prepare")),
    ("/* c */ DEALLOCATE -- c\n x ; ;", D("x")),
    ("DEALLOCATE U&\"\\0041\"", D("A")),
    ("DEALLOCATE p1; SELECT 1", N),
    ("SELECT 1; DEALLOCATE p1", N),
    ("DEALLOCATE p1 junk", N),
    ("DEALLOCATE \"unterminated", N),
    ("DEALLOCATE", N),
    ("DEALLOCATE 'p'", N),
    // Multi-statement mixes.
    ("DISCARD ALL; SET search_path = x", F(true, false, &["search_path"])),
    ("LISTEN a; SET ROLE b", P(Listen)),
    ("SELECT pg_advisory_lock(1); CREATE TEMP TABLE t ()", P(AdvisoryLock)),
    ("SET x = 1; DEALLOCATE ALL", F(false, true, &["x"])),
    ("SELECT 1;LISTEN x", P(Listen)),
    ("SELECT ';';LISTEN x", P(Listen)),
    ("SELECT $$;$$;SET ROLE x", P(Role)),
    ("SELECT 'a'  'b'; LISTEN x", P(Listen)),
    // Statements that name functions without calling them.
    ("CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC SELECT pg_advisory_lock(1); END", N),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END; LISTEN x",
        P(Listen),
    ),
    ("CREATE PROCEDURE p() BEGIN ATOMIC SELECT 1; SELECT 2; END; SET ROLE r", P(Role)),
    ("CREATE FUNCTION begin() RETURNS int AS 'SELECT 1' LANGUAGE sql; LISTEN x", P(Listen)),
    ("CREATE OR REPLACE FUNCTION f(a text DEFAULT set_config('a', 'b', false)) RETURNS int AS $$ $$ LANGUAGE sql", N),
    ("CREATE FUNCTION f() RETURNS int SET search_path = admin, pg_temp AS $$SELECT 1$$ LANGUAGE sql", N),
    ("CREATE VIEW v AS SELECT pg_advisory_lock(1)", N),
    ("DROP FUNCTION set_config(text, text, boolean)", N),
    ("GRANT EXECUTE ON FUNCTION pg_advisory_lock(bigint) TO app", N),
    ("REVOKE EXECUTE ON FUNCTION pg_advisory_lock(bigint) FROM app", N),
    ("ALTER FUNCTION f(int) SET search_path = x", N),
    ("COMMENT ON FUNCTION pg_advisory_lock(bigint) IS 'x'", N),
    ("CREATE RULE r AS ON INSERT TO t DO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); LISTEN x", P(Listen)),
    ("CREATE TABLE t AS SELECT pg_advisory_lock(1)", P(AdvisoryLock)),
];

#[test]
fn corpus() {
    let mut failures = Vec::new();
    for (sql, want) in CORPUS {
        let want = want.effects();
        let got = session_effects(sql);
        if got != want {
            failures.push(format!("{sql:?}\n   want {want:?}\n    got {got:?}"));
        }
    }
    assert!(CORPUS.len() >= 150, "corpus has {} statements", CORPUS.len());
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), CORPUS.len(), failures.join("\n"));
}

#[test]
fn leading_comments_do_not_change_the_answer() {
    for (sql, want) in CORPUS {
        let commented = format!("/* lead */ -- line\n{sql}");
        assert_eq!(session_effects(&commented), want.effects(), "{commented:?}");
    }
}

#[test]
fn is_none() {
    assert!(SessionEffects::default().is_none());
    assert!(session_effects("SELECT 1; COMMIT").is_none());
    assert!(!session_effects("DISCARD ALL").is_none());
    assert!(!session_effects("DEALLOCATE x").is_none());
    assert!(!session_effects("DEALLOCATE ALL").is_none());
    assert!(!session_effects("SET a = 1").is_none());
    assert!(!session_effects("LISTEN a").is_none());
}

#[test]
fn first_pin_wins_and_settings_still_collected() {
    let fx = session_effects("LISTEN a; SET x = 1; SET ROLE r; SELECT set_config('y', '', false)");
    assert_eq!(fx.pin, Some(Listen));
    assert_eq!(fx.settings, ["x", "y"]);
}

#[test]
fn decoders() {
    fn t(s: &str) -> Token<'_> {
        Lexer::new(s).next().unwrap()
    }
    assert_eq!(string_value(&t(r"E'\t\n\101\x41\u00e9\U0001F600\q'")).as_deref(), Some("\t\nAAé😀q"));
    assert_eq!(string_value(&t("N'a''b'")).as_deref(), Some("a'b"));
    assert_eq!(string_value(&t(r"'a\n'")).as_deref(), Some(r"a\n"));
    assert_eq!(string_value(&t(r"E'\xff'")), None);
    assert_eq!(string_value(&t(r"E'\u12'")), None);
    assert_eq!(string_value(&t("$$a$$")), None);
    assert_eq!(unicode_unescape(r"\D83D\DE00 \+01F600 \\", b'\\').as_deref(), Some("😀 😀 \\"));
    assert_eq!(unicode_unescape(r"\D83D", b'\\'), None);
    assert_eq!(unicode_unescape(r"\DE00", b'\\'), None);
    assert_eq!(unicode_unescape(r"\12", b'\\'), None);
    assert_eq!(unicode_unescape("été!0041", b'!').as_deref(), Some("étéA"));
}
