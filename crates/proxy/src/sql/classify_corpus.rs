//! The classifier's corpus, shared by `tests/classify_corpus.rs` and `benches/classify.rs`, which
//! include this file with `#[path]` (it is not part of the library).
//!
//! [`CORPUS`] holds one case per line, `statement => class`, the class being one of `read`,
//! `write`, `neutral`, `begin`, `begin-ro` (`Begin { read_only: true }`), `set-ro`
//! (`SetTransactionReadOnly`) and `commit`. The statement is everything before the last ` => `,
//! trimmed; `⏎` in it stands for a newline. Lines starting with `#` and blank lines are skipped.
//! `@write_functions a, b` and `@read_only_functions c` set that list of the classifier used by
//! the cases that follow (names separated by commas); `@default` clears both lists.

#![allow(dead_code)]

use pgbalancer_proxy::sql::classify::{Class, Classifier};

/// One statement and the class it must get.
pub struct Case {
    /// Line in [`CORPUS`], 1-based.
    pub line: usize,
    pub sql: String,
    pub expected: Class,
    /// Index into [`Corpus::classifiers`].
    pub classifier: usize,
}

pub struct Corpus {
    pub classifiers: Vec<Classifier>,
    pub cases: Vec<Case>,
}

/// Parses [`CORPUS`]; panics on a malformed line.
pub fn load() -> Corpus {
    let (mut write, mut read_only): (Vec<String>, Vec<String>) = (vec![], vec![]);
    let mut corpus = Corpus { classifiers: vec![Classifier::default()], cases: vec![] };
    for (i, line) in CORPUS.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(directive) = line.strip_prefix('@') {
            let (name, list) = directive.split_once(' ').unwrap_or((directive, ""));
            let names = list.split(',').map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
            match name {
                "default" => (write, read_only) = (vec![], vec![]),
                "write_functions" => write = names,
                "read_only_functions" => read_only = names,
                _ => panic!("corpus line {}: unknown directive {line}", i + 1),
            }
            corpus.classifiers.push(Classifier::new(&write, &read_only));
            continue;
        }
        let (sql, class) = line.rsplit_once(" => ").unwrap_or_else(|| panic!("corpus line {}: no ` => `", i + 1));
        let expected = match class.trim() {
            "read" => Class::Read,
            "write" => Class::Write,
            "neutral" => Class::Neutral,
            "begin" => Class::Begin { read_only: false },
            "begin-ro" => Class::Begin { read_only: true },
            "set-ro" => Class::SetTransactionReadOnly,
            "commit" => Class::Commit,
            other => panic!("corpus line {}: unknown class {other:?}", i + 1),
        };
        let sql = sql.trim().replace('⏎', "\n");
        corpus.cases.push(Case { line: i + 1, sql, expected, classifier: corpus.classifiers.len() - 1 });
    }
    corpus
}

/// The cases; see the module documentation for the format.
pub const CORPUS: &str = r####"
# --- Plain reads -------------------------------------------------------------
SELECT 1 => read
select 1 => read
SELECT 1; => read
SELECT abalance FROM pgbench_accounts WHERE aid = $1 => read
SELECT * FROM t => read
SELECT a, b FROM t WHERE c = 'x' ORDER BY a LIMIT 10 OFFSET 5 => read
SELECT count(*) FROM t => read
SELECT t.id, u.name FROM t JOIN u ON u.id = t.uid WHERE t.x > 3 => read
SELECT * FROM t LEFT JOIN u USING (id) => read
SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b DESC => read
SELECT a, sum(b) FROM t GROUP BY a HAVING sum(b) > 10 => read
SELECT * FROM t WHERE id IN (SELECT id FROM u) => read
SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id) => read
SELECT * FROM t WHERE id = ANY($1) => read
SELECT 1 UNION ALL SELECT 2 => read
SELECT 1 INTERSECT SELECT 1 EXCEPT SELECT 2 => read
(SELECT 1) UNION (SELECT 2) => read
((SELECT 1)) => read
VALUES (1, 'a'), (2, 'b') => read
VALUES (1) ORDER BY 1 => read
TABLE t => read
TABLE s.t => read
SELECT * FROM generate_series(1, 10) g => read
SELECT now(), current_timestamp, current_user => read
SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t => read
SELECT x::numeric(10,2), CAST(y AS varchar(20)) FROM t => read
SELECT '{"a":1}'::jsonb -> 'a' => read
SELECT * FROM t TABLESAMPLE SYSTEM (10) REPEATABLE (42) => read
SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.t = t.id) s => read
SELECT * FROM t WHERE a BETWEEN 1 AND 2 AND b LIKE 'x%' ESCAPE '!' => read
SELECT CASE WHEN a > 0 THEN 'p' ELSE 'n' END FROM t => read
SELECT array_agg(x ORDER BY x) FILTER (WHERE x > 0) FROM t => read
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t => read
SELECT * FROM t ORDER BY a FETCH FIRST 5 ROWS WITH TIES => read
SELECT * FROM unnest(ARRAY[1,2]) WITH ORDINALITY AS u(x, n) => read
SELECT ts AT TIME ZONE 'UTC' FROM t => read
SELECT * FROM t FOR READ ONLY => read
SELECT pg_is_in_recovery() => read
SELECT set_config('search_path', 'app', false) => read
SELECT pg_catalog.set_config('search_path', '', false) => read
SELECT set_config('request.jwt.claims', $1, true), set_config('role', $2, true) => read
SELECT current_setting('work_mem') => read
SELECT * FROM pg_stat_activity => read
SELECT pg_backend_pid() => read
SELECT x FROM t ORDER BY random() => read
SELECT lower(name), upper(name), length(name) FROM t => read
SELECT lot_number, lo FROM t => read
SELECT pg_sleep(1) => read
SELECT 'a' || 'b' => read
SELECT $1::int + $2 => read
SELECT * FROM t WHERE a @> ARRAY[1] => read
SELECT x FROM t WINDOW w AS (PARTITION BY y) => read
SELECT COALESCE(a, b), NULLIF(a, 0), GREATEST(a, b) FROM t => read
SELECT EXTRACT(YEAR FROM ts), date_trunc('day', ts) FROM t => read
SELECT substring(s FROM 2 FOR 3) FROM t => read
SELECT * FROM t ORDER BY a NULLS LAST => read
SELECT a FROM t GROUP BY ROLLUP (a), CUBE (b), GROUPING SETS ((a), ()) => read
SELECT "users"."id", "users"."email" FROM "users" WHERE "users"."id" = $1 LIMIT $2 => read
SELECT t0."id" FROM "public"."orders" AS t0 WHERE (t0."status" = $1) => read
SELECT 1 AS "one" FROM "t" WHERE "x" IS NOT NULL => read
SELECT oid, typname FROM pg_type WHERE typname = ANY($1) => read
SELECT exists(SELECT 1 FROM t) => read
SELECT été(1), "ünïcode" FROM t => read
SELECT 1 FROM t$x$ => read
SELECT => read
SELECT (((((1))))) => read
  SELECT 1   => read
SELECT⏎  a⏎FROM⏎  t => read

# --- Keywords as names ---------------------------------------------------------
SELECT "update" FROM t => read
SELECT "delete", "insert", "into" FROM t => read
SELECT update FROM t => read
SELECT t.delete, t.insert FROM t => read
SELECT 1 AS update => read
SELECT (update) FROM t => read
SELECT count(update) FROM t => read
SELECT max(delete) FROM t => read
SELECT key, share, no FROM t => read
SELECT for_update, into_x, nextval_x FROM t => read
SELECT 1 AS for_update => read
SELECT * FROM "for update" => read
SELECT * FROM t AS "FOR UPDATE" => read
SELECT * FROM t WHERE note = 'FOR UPDATE' => read
SELECT 'FOR UPDATE', "for" FROM t => read
SELECT * FROM t /* FOR UPDATE */ => read
SELECT * FROM t -- FOR UPDATE => read
SELECT * FROM t WHERE note = $$INTO$$ => read
SELECT "INTO" FROM "DELETE" => read
SELECT * FROM t WHERE x = 'a' AND "update" = 1 => read
SELECT * FROM t WHERE "for" = 1 AND update = 2 => read
SELECT x FROM t WHERE x::text = 'FOR UPDATE' => read
# Accepted false writes: a keyword-named column where a statement could start or a lock be taken.
SELECT substring(delete FROM 2) FROM t => write
SELECT substring(s FOR share) FROM t => write

# --- Literals, quoting and comments ---------------------------------------------
SELECT 'DELETE FROM t' => read
SELECT 'a''; DELETE FROM t; --' => read
SELECT E'\'; DELETE FROM t; --' => read
SELECT E'\\'; DELETE FROM t => write
SELECT E'\\\'' AS x => read
SELECT 1 FROM t WHERE a = 'x' AND "b" = E'y\'z' => read
SELECT $$; DELETE FROM t; $$ => read
SELECT $tag$ $$; DROP TABLE t; $$ $tag$ => read
SELECT $a$ x $a$, $b$ INSERT INTO t VALUES (1) $b$ => read
SELECT $a$it's$a$, 'a' FROM t => read
SELECT $_$x$_$ => read
SELECT '$$' || $$'$$ => read
SELECT 1 -- ; DELETE FROM t => read
SELECT 1 /* ; DELETE FROM t */ => read
SELECT 1 /* outer /* inner */ ; DELETE FROM t */ => read
SELECT 1 /* outer /* inner */ */ ; DELETE FROM t => write
/* leading comment */ SELECT 1 => read
-- only a comment => neutral
/* DELETE FROM t */ => neutral
-- x⏎DELETE FROM t => write
SELECT 1 --⏎; DELETE FROM t => write
SELECT "a;b" FROM t => read
SELECT "x"";DELETE" FROM t => read
SELECT U&'\0044ELETE' => read
SELECT U&"d\0061t" FROM t => read
SELECT B'1010', X'FF', N'delete' => read
SELECT 'multi'⏎  'line; DELETE' => read
SELECT 'it''s' AS "it's" => read
SELECT '\d+' ~ x FROM t => read
SELECT 1 /* unterminated comment; DELETE FROM t => read
SELECT 'unterminated; DELETE FROM t => read
SELECT "unterminated; DELETE FROM t => read
SELECT $q$ unterminated; DELETE FROM t => read
# A backslash-quote means something else with standard_conforming_strings off: uncertain.
SELECT '\' => write
SELECT 'C:\dir\' AS path => write
SELECT N'it\'s' => write
SELECT 'x\'' ; DELETE FROM t; --' => write

# --- Locking clauses ----------------------------------------------------------------
SELECT * FROM t FOR UPDATE => write
SELECT * FROM t FOR SHARE => write
SELECT * FROM t FOR NO KEY UPDATE => write
SELECT * FROM t FOR KEY SHARE => write
SELECT * FROM t WHERE id = 1 FOR UPDATE OF t SKIP LOCKED => write
SELECT * FROM t FOR UPDATE NOWAIT => write
select * from t for update => write
SELECT * FROM t FOR/* c */UPDATE => write
SELECT * FROM t FOR -- c⏎ UPDATE => write
SELECT * FROM (SELECT * FROM t FOR UPDATE) s => write
WITH l AS (SELECT * FROM t FOR UPDATE) SELECT * FROM l => write
SELECT * FROM t LIMIT 1 FOR SHARE OF t => write
SELECT * FROM t FOR UPDATE OF t FOR SHARE OF u => write
SELECT * FROM t WHERE id = $1 FOR UPDATE => write
SELECT * FROM t WHERE a = 'x' FOR NO KEY UPDATE OF t NOWAIT => write

# --- SELECT INTO ----------------------------------------------------------------------
SELECT * INTO newt FROM t => write
SELECT a, b INTO TEMP tmp FROM t => write
SELECT * INTO UNLOGGED t2 FROM t => write
select 1 into x => write
SELECT * INTO TABLE t2 FROM t => write
WITH c AS (SELECT 1) SELECT * INTO t2 FROM c => write
(SELECT 1 INTO t2) => write
SELECT 1 UNION SELECT 2 INTO t2 => write

# --- WITH ---------------------------------------------------------------------------------
WITH x AS (SELECT 1) SELECT * FROM x => read
WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r => read
WITH a AS (SELECT 1), b AS (SELECT 2) SELECT * FROM a, b => read
WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x => read
WITH x AS NOT MATERIALIZED (SELECT 1) SELECT * FROM x => read
WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d => write
WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM u => write
WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM i => write
WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING *) SELECT * FROM m => write
WITH x AS (SELECT 1), d AS (DELETE FROM t) SELECT 1 => write
WITH x AS MATERIALIZED (DELETE FROM t RETURNING *) SELECT * FROM x => write
with d as (delete from t returning *) select * from d => write
WITH d AS (/* c */ DELETE /* c */ FROM t RETURNING *) SELECT * FROM d => write
WITH d AS (UPDATE ONLY t SET a = 1 RETURNING *) SELECT * FROM d => write
WITH d AS (UPDATE "T" SET a = 1 RETURNING *) SELECT * FROM d => write
WITH x AS (SELECT 1) DELETE FROM t => write
WITH x AS (SELECT 1) UPDATE t SET a = 1 => write
WITH x AS (SELECT 1) UPDATE ONLY t SET a = 1 => write
WITH x AS (SELECT 1) UPDATE "T" SET a = 1 => write
WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x => write
WITH x AS (SELECT 1) MERGE INTO t USING x ON true WHEN MATCHED THEN DO NOTHING => write
WITH d AS (WITH x AS (SELECT 1) DELETE FROM t RETURNING *) SELECT * FROM d => write
WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) CYCLE n SET is_cycle USING path DELETE FROM t => write
WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SEARCH DEPTH FIRST BY n SET ord SELECT * FROM r => read
WITH update AS (SELECT 1) SELECT * FROM update => read
WITH delete(a) AS (SELECT 1) SELECT a FROM delete => read
WITH x AS (SELECT 1) SELECT update FROM x => read
WITH x AS (SELECT 1) SELECT a delete FROM x => read
WITH x AS (SELECT 1) (SELECT * FROM x) => read
WITH x AS (SELECT 1) TABLE x => read
WITH x AS (SELECT 1) VALUES (1) => read
SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s => read
WITH x AS (SELECT nextval('s')) SELECT * FROM x => write
WITH "with" AS (SELECT 'DELETE FROM t') SELECT * FROM "with" => read
(WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) => write
WITH x AS (SELECT 1) SELECT * FROM x FOR UPDATE => write
WITH => read

# --- EXPLAIN ---------------------------------------------------------------------------
EXPLAIN SELECT * FROM t => read
EXPLAIN DELETE FROM t => read
EXPLAIN UPDATE t SET a = 1 => read
EXPLAIN INSERT INTO t VALUES (1) => read
EXPLAIN MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE => read
EXPLAIN ANALYZE SELECT * FROM t => read
EXPLAIN ANALYZE DELETE FROM t => write
EXPLAIN ANALYSE UPDATE t SET a = 1 => write
EXPLAIN ANALYZE VERBOSE INSERT INTO t VALUES (1) => write
EXPLAIN VERBOSE SELECT 1 => read
EXPLAIN (ANALYZE, FORMAT JSON) UPDATE t SET a = 1 => write
EXPLAIN (FORMAT JSON, ANALYZE) SELECT 1 => read
EXPLAIN (ANALYZE false) UPDATE t SET a = 1 => read
EXPLAIN (ANALYZE off, BUFFERS) DELETE FROM t => read
EXPLAIN (ANALYZE true) DELETE FROM t => write
EXPLAIN (ANALYZE 1) DELETE FROM t => write
EXPLAIN (ANALYZE 'on') DELETE FROM t => write
EXPLAIN (ANALYZE false, ANALYZE) DELETE FROM t => write
EXPLAIN (ANALYZE, ANALYZE false) DELETE FROM t => read
EXPLAIN (ANALYZE maybe) DELETE FROM t => write
EXPLAIN (COSTS off) SELECT * FROM t FOR UPDATE => read
EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE => write
EXPLAIN ANALYZE SELECT nextval('s') => write
EXPLAIN SELECT nextval('s') => read
EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d => write
EXPLAIN WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d => read
EXPLAIN CREATE TABLE t2 AS SELECT 1 => read
EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT 1 => write
EXPLAIN ANALYZE SELECT * INTO t2 FROM t => write
EXPLAIN EXECUTE p(1) => write
EXPLAIN ANALYZE EXECUTE p(1) => write
EXPLAIN => write
EXPLAIN ANALYZE => write
EXPLAIN EXPLAIN SELECT 1 => write
EXPLAIN ANALYZE EXPLAIN SELECT 1 => write
EXPLAIN SHOW x => write
explain analyze select 1 => read
EXPLAIN (ANALYZE => write
EXPLAIN ANALYZE SELECT 1; SELECT 2 => read
EXPLAIN ANALYZE (SELECT 1) => read
EXPLAIN (ANALYZE, VERBOSE, BUFFERS, FORMAT YAML) VALUES (1) => read

# --- COPY -------------------------------------------------------------------------------------
COPY t TO STDOUT => read
COPY t (a, b) TO STDOUT WITH (FORMAT csv, HEADER) => read
COPY s.t TO STDOUT => read
COPY "My Table" TO STDOUT => read
COPY (SELECT * FROM t WHERE a > 1) TO STDOUT => read
COPY (SELECT * FROM t FOR UPDATE) TO STDOUT => write
COPY (SELECT nextval('s')) TO STDOUT => write
COPY (DELETE FROM t RETURNING *) TO STDOUT => write
COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT => write
COPY (UPDATE t SET a = 1 RETURNING *) TO STDOUT => write
COPY (WITH x AS (SELECT 1) SELECT * FROM x) TO STDOUT => read
COPY (WITH x AS (SELECT 1) DELETE FROM t RETURNING *) TO STDOUT => write
COPY t FROM STDIN => write
COPY t (a, b) FROM STDIN WITH (FORMAT csv) => write
COPY t TO '/tmp/t.csv' => write
COPY t TO PROGRAM 'gzip > /tmp/t.gz' => write
COPY t FROM '/tmp/t.csv' => write
COPY BINARY t TO STDOUT => read
copy t to stdout => read
COPY t TO STDIN => write
COPY => write
COPY t => write
COPY (SELECT 1 => write
COPY (SELECT 'x) TO STDOUT') TO STDOUT => read

# --- Several statements ----------------------------------------------------------------------
SELECT 1; SELECT 2 => read
SELECT 1; DELETE FROM t => write
DELETE FROM t; SELECT 1 => write
SELECT 1; SHOW work_mem => read
SET x = 1; SELECT 1 => read
SET a = 1; SET b = 2 => neutral
SELECT 1;;; SELECT 2;; => read
; => neutral
;;; => neutral
BEGIN; SELECT 1; COMMIT => write
BEGIN READ ONLY; SELECT 1 => write
SELECT 1; COMMIT => write
COMMIT; BEGIN => write
SELECT 1; SAVEPOINT a => read
SELECT 1; SELECT nextval('s') => write
SELECT 'x;y'; SELECT "a;b" => read
SELECT 1 \; DELETE FROM t => write
SELECT 1; -- DELETE FROM t => read
SELECT 1; /* DELETE FROM t */ => read
SHOW a; SHOW b => neutral
SELECT 1; SELECT 2; SELECT 3; UPDATE t SET a = 1 => write
SELECT 1;⏎DELETE FROM t => write

# --- Write functions ---------------------------------------------------------------------------
SELECT nextval('s') => write
SELECT NEXTVAL('s') => write
SELECT pg_catalog.nextval('s') => write
SELECT "pg_catalog"."nextval"('s') => write
SELECT "nextval"('s') => write
SELECT "NEXTVAL"('s') => read
SELECT nextval ('s') => write
SELECT nextval/* c */('s') => write
SELECT nextval⏎('s') => write
select "public"."nextval"('s') => write
SELECT public.nextval('"my seq"') => write
SELECT nextval('s') FROM generate_series(1, 3) => write
SELECT setval('s', 42) => write
SELECT currval('s') => write
SELECT lastval() => write
SELECT id, nextval('s') FROM t => write
SELECT * FROM t WHERE id = nextval('s') => write
SELECT (SELECT nextval('s')) => write
VALUES (nextval('s')) => write
SELECT 1 FROM t WHERE f(nextval('s')) => write
SELECT 1 FROM t WHERE a = ANY (SELECT nextval('s')) => write
SELECT pg_advisory_lock(1) => write
SELECT pg_advisory_xact_lock(1) => write
SELECT pg_advisory_unlock(1) => write
SELECT pg_advisory_unlock_all() => write
SELECT pg_advisory_lock_shared(1) => write
SELECT pg_try_advisory_lock(1) => write
SELECT pg_try_advisory_xact_lock_shared(1) => write
SELECT * FROM pg_catalog.pg_advisory_lock(1) => write
SELECT * FROM t WHERE pg_try_advisory_lock(id) LIMIT 1 => write
SELECT pg_notify('ch', 'msg') => write
SELECT lo_import('/tmp/x') => write
SELECT lo_create(0) => write
SELECT lo_unlink(42) => write
SELECT lo_put(42, 0, '\x00') => write
SELECT lo_from_bytea(0, 'x') => write
SELECT lowrite(0, 'x') => write
SELECT loread(0, 10) => write
SELECT lo_get(42) => write
SELECT txid_current() => write
SELECT pg_current_xact_id() => write
SELECT pg_switch_wal() => write
SELECT pg_current_wal_lsn() => write
SELECT * FROM pg_create_logical_replication_slot('s', 'pgoutput') => write
SELECT pg_create_restore_point('x') => write
SELECT pg_drop_replication_slot('s') => write
SELECT dblink_exec('conn', 'DELETE FROM t') => write
SELECT * FROM dblink('conn', 'SELECT 1') AS r(a int) => write
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'x' => write
SELECT pg_cancel_backend(123) => write
SELECT pg_reload_conf() => write
SELECT pg_stat_reset() => write
SELECT pg_export_snapshot() => write
SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL) => write
SELECT brin_summarize_new_values('idx') => write
SELECT my_function(1) => read
SELECT myschema.my_function(1) => read
SELECT nextval_like(1), xnextval(2) => read
SELECT lower('LO_X'), lpad('a', 3) => read
SELECT "lo_import" FROM t => read
SELECT 'nextval(''s'')' => read
SELECT nextval FROM t => read
SELECT t.nextval FROM t => read
SELECT x AS nextval FROM t => read
SELECT U&"nextval"('s') => write

# --- Transaction control -------------------------------------------------------------------------
BEGIN => begin
begin => begin
BEGIN; => begin
BEGIN;;⏎ => begin
BEGIN WORK => begin
BEGIN TRANSACTION => begin
BEGIN READ ONLY => begin-ro
BEGIN TRANSACTION READ ONLY => begin-ro
BEGIN WORK READ ONLY => begin-ro
begin read only => begin-ro
BEGIN READ WRITE => begin
BEGIN READ ONLY, READ WRITE => begin
BEGIN READ WRITE, READ ONLY => begin-ro
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY => begin-ro
BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY, NOT DEFERRABLE => begin-ro
BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE => begin
BEGIN ISOLATION LEVEL SERIALIZABLE, ISOLATION LEVEL REPEATABLE READ, READ ONLY => begin-ro
BEGIN ISOLATION LEVEL READ UNCOMMITTED => begin
BEGIN READ ONLY garbage => begin
BEGIN DEFERRABLE => begin
START TRANSACTION => begin
START TRANSACTION READ ONLY => begin-ro
START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY => begin
START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY => begin-ro
start transaction read only => begin-ro
START => write
START READ ONLY => write
/* pgbalancer: primary */ BEGIN READ ONLY => begin-ro
BEGIN /* x */ READ /* y */ ONLY => begin-ro
COMMIT => commit
commit; => commit
COMMIT WORK => commit
COMMIT TRANSACTION => commit
COMMIT AND CHAIN => commit
END => commit
END TRANSACTION => commit
ROLLBACK => commit
ROLLBACK WORK => commit
ROLLBACK AND NO CHAIN => commit
ABORT => commit
PREPARE TRANSACTION 'tx1' => commit
COMMIT PREPARED 'tx1' => write
ROLLBACK PREPARED 'tx1' => write
ROLLBACK TO SAVEPOINT a => neutral
ROLLBACK TO a => neutral
ROLLBACK WORK TO SAVEPOINT a => neutral
SAVEPOINT a => neutral
RELEASE SAVEPOINT a => neutral
RELEASE a => neutral
SET TRANSACTION READ ONLY => set-ro
set transaction read only => set-ro
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY => set-ro
SET TRANSACTION READ WRITE => write
SET TRANSACTION ISOLATION LEVEL SERIALIZABLE => write
SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY => write
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ => neutral
SET TRANSACTION ISOLATION LEVEL READ COMMITTED => neutral
SET TRANSACTION SNAPSHOT '00000003-0000001B-1' => write
SET TRANSACTION banana => write
SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY => set-ro
SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE => write
SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE => write
SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ => neutral
SET SESSION CHARACTERISTICS => write
SET transaction_read_only = on => set-ro
SET transaction_read_only TO true => set-ro
SET LOCAL transaction_read_only = 'on' => set-ro
SET transaction_read_only = off => write
SET default_transaction_read_only = on => set-ro
SET SESSION default_transaction_read_only = 1 => set-ro
SET default_transaction_read_only TO DEFAULT => write
SET "transaction_read_only" = on => set-ro
SET transaction_isolation = 'serializable' => write
SET default_transaction_isolation TO serializable => write
SET default_transaction_isolation = 'repeatable read' => neutral
SET TRANSACTION READ ONLY; SELECT 1 => write

# --- SHOW, SET, RESET --------------------------------------------------------------------------------
SHOW work_mem => neutral
SHOW ALL => neutral
SHOW TRANSACTION ISOLATION LEVEL => neutral
show search_path => neutral
SET search_path = app, public => neutral
SET search_path TO DEFAULT => neutral
SET LOCAL statement_timeout = '5s' => neutral
SET SESSION work_mem = '64MB' => neutral
SET TIME ZONE 'UTC' => neutral
SET NAMES 'UTF8' => neutral
SET ROLE app => neutral
SET SESSION AUTHORIZATION app => neutral
SET CONSTRAINTS ALL DEFERRED => neutral
SET pgbalancer.role = 'primary' => neutral
SET application_name = 'x; DELETE FROM t' => neutral
RESET ALL => neutral
RESET search_path => neutral
RESET ROLE => neutral
SET => write
⏎  ⏎ => neutral

# --- Session objects live on the primary -------------------------------------------------------
PREPARE p AS SELECT 1 => write
PREPARE transaction AS SELECT 1 => write
EXECUTE p => write
EXECUTE p(1, 2) => write
DEALLOCATE p => write
DEALLOCATE ALL => write
DECLARE c CURSOR FOR SELECT * FROM t => write
FETCH 10 FROM c => write
MOVE NEXT IN c => write
CLOSE c => write
CLOSE ALL => write
LISTEN ch => write
UNLISTEN * => write
NOTIFY ch, 'x' => write
DISCARD ALL => write
DISCARD PLANS => write
LOAD 'auto_explain' => write

# --- DML, DDL, maintenance, garbage --------------------------------------------------------------
INSERT INTO t VALUES (1) => write
insert into t select * from u => write
INSERT INTO t (a) VALUES ('SELECT') RETURNING * => write
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP) => write
UPDATE t SET a = 1 WHERE id = 2 => write
UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2 => write
DELETE FROM t WHERE id = 1 => write
MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a => write
TRUNCATE t => write
CREATE TABLE t (id int) => write
CREATE TEMP TABLE tmp AS SELECT 1 => write
CREATE INDEX CONCURRENTLY i ON t (a) => write
CREATE VIEW v AS SELECT 1 => write
CREATE MATERIALIZED VIEW mv AS SELECT 1 => write
CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END => write
CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql => write
ALTER TABLE t ADD COLUMN b int => write
DROP TABLE t => write
DROP TABLE IF EXISTS t CASCADE => write
GRANT SELECT ON t TO r => write
REVOKE ALL ON t FROM r => write
VACUUM t => write
VACUUM (ANALYZE) t => write
ANALYZE t => write
ANALYSE => write
CLUSTER t USING i => write
REINDEX TABLE t => write
LOCK TABLE t IN ACCESS SHARE MODE => write
CALL p(1) => write
DO $$ BEGIN PERFORM 1; END $$ => write
REFRESH MATERIALIZED VIEW mv => write
COMMENT ON TABLE t IS 'SELECT only' => write
SECURITY LABEL ON TABLE t IS 'x' => write
IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO local => write
CHECKPOINT => write
REASSIGN OWNED BY a TO b => write
ALTER SYSTEM SET work_mem = '1GB' => write
CREATE EXTENSION dblink => write
42 => write
'SELECT 1' => write
$1 => write
$$SELECT 1$$ => write
"select" 1 => write
SELEC 1 => write
SELECT ))) FROM t => read
+ => write

# --- Configured write_functions -----------------------------------------------------------------
@write_functions audit_log, app.bump_counter, "CamelWriter", stats_*, aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_tail_one
SELECT audit_log('x') => write
SELECT AUDIT_LOG('x') => write
SELECT app.audit_log('x') => write
SELECT bump_counter() => write
SELECT other.bump_counter() => write
SELECT "CamelWriter"() => write
SELECT camelwriter() => read
SELECT "camelwriter"() => read
SELECT stats_update(1) => write
SELECT stats_(1) => write
SELECT stat(1) => read
SELECT my_function(1) => read
SELECT nextval('s') => write
SELECT "audit_log" FROM t => read
SELECT 'audit_log(1)' => read
EXPLAIN SELECT audit_log(1) => read
EXPLAIN ANALYZE SELECT audit_log(1) => write
SELECT aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_something_else() => write

# --- Configured read_only_functions: every other call writes (pgpool semantics) -------------------
@read_only_functions my_pure_fn, app.format_name, "Pure"
SELECT my_pure_fn(1) => read
SELECT app.my_pure_fn(1) => read
SELECT format_name(a) FROM t => read
SELECT "Pure"(1) => read
SELECT pure(1) => write
SELECT my_function(1) => write
SELECT count(*), sum(a), avg(b), max(c) FROM t => read
SELECT coalesce(a, 0), lower(b), now() FROM t => read
SELECT jsonb_build_object('a', 1), array_length(a, 1), to_char(now(), 'YYYY') FROM t => read
SELECT * FROM t WHERE a IN (1, 2) AND EXISTS (SELECT 1) => read
SELECT CAST(a AS varchar(10)), b::numeric(5,2) FROM t => read
SELECT x::pg_catalog.varchar(10) FROM t => read
SELECT * FROM f(1) => write
SELECT * FROM t AS x(a, b) => read
# Accepted false write: an alias with a column list and no AS looks like a call.
SELECT * FROM t x(a, b) => write
WITH c(a) AS (SELECT 1) SELECT a FROM c => read
SELECT * FROM t TABLESAMPLE BERNOULLI (5) => read
SELECT row_number() OVER (ORDER BY a) FROM t => read
SELECT pg_catalog.count(*) FROM t => read
SELECT "in"(1) => write
SELECT nextval('s') => write
SELECT abalance FROM pgbench_accounts WHERE aid = $1 => read
SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY a) FROM t => read
SELECT a FROM t GROUP BY GROUPING SETS ((a), ()) => read
SELECT x FROM t WHERE ts > now() - interval '1 day' => read
SELECT EXTRACT(epoch FROM ts), timestamp(3) '2020-01-01' FROM t => read
SELECT xmlelement(name foo), json_object('a' : 1) FROM t => read
SELECT * FROM t JOIN u USING (id) WHERE (a, b) IN ((1, 2)) => read
SELECT set_config('search_path', 'app', false) => read
SELECT U&"count"(*) FROM t => write

# --- Both lists -------------------------------------------------------------------------------------
@default
@write_functions audit_log
@read_only_functions nextval, audit_*
SELECT nextval('s') => read
SELECT audit_log(1) => write
SELECT audit_view(1) => read
SELECT setval('s', 1) => write
SELECT my_function(1) => write
@default
@write_functions shared_fn
@read_only_functions shared_fn
SELECT shared_fn() => write
@default
@read_only_functions , ,
SELECT my_function(1) => read
SELECT nextval('s') => write
"####;
