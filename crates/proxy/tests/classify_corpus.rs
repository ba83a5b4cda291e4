//! The read/write classifier (`pgbalancer_proxy::sql::classify`) against its corpus of statements
//! with expected classes, plus properties: it never panics, never recurses on nesting, does not
//! allocate, and a comment in front or a write after never makes a write look like a read.

use pgbalancer_proxy::sql::classify::{Class, Classifier};
use proptest::prelude::*;

#[path = "../src/sql/classify_corpus.rs"]
mod corpus;

#[path = "support/alloc.rs"]
mod alloc;
use alloc::allocations_during;

/// The session-effects quick look gives the lexer's answer on every corpus
/// statement, and takes a fair share of its reads.
#[test]
fn corpus_statements_get_the_same_session_effects_with_the_quick_look() {
    use pgbalancer_proxy::sql::session::{plainly_without_effects, session_effects, session_effects_lexed};
    let corpus = corpus::load();
    let mut quick = 0;
    for case in &corpus.cases {
        assert_eq!(session_effects(&case.sql), session_effects_lexed(&case.sql), "line {}: {:?}", case.line, case.sql);
        quick += usize::from(plainly_without_effects(&case.sql));
    }
    assert!(quick >= 20, "only {quick} corpus statements took the quick look");
}

/// The classifier's quick look gives the lexer's answer on every corpus
/// statement, with each configured classifier, and takes a fair share of
/// the reads.
#[test]
fn corpus_statements_get_the_same_class_with_the_quick_look() {
    use pgbalancer_proxy::sql::classify::plainly_read;
    let corpus = corpus::load();
    let mut quick = 0;
    for case in &corpus.cases {
        for c in &corpus.classifiers {
            assert_eq!(c.classify(&case.sql), c.classify_lexed(&case.sql), "line {}: {:?}", case.line, case.sql);
        }
        quick += usize::from(plainly_read(&case.sql));
    }
    assert!(quick >= 20, "only {quick} corpus statements took the quick look");
}

/// The quick look takes one plain `SELECT` and leaves everything that may
/// write (or needs a closer look) to the lexer.
#[test]
fn the_classifier_quick_look_takes_only_plain_selects() {
    use pgbalancer_proxy::sql::classify::plainly_read;
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
        "  select * from t where a = $1",
        "SELECT 1",
        "select\n1 ;  ",
        "SELECT 'it''s' AS x",
    ] {
        assert!(plainly_read(sql), "{sql:?}");
        assert_eq!(Classifier::default().classify_lexed(sql), Class::Read, "{sql:?}");
    }
    for sql in [
        "SELECT * FROM t FOR UPDATE",
        "select * from t for share",
        "SELECT * INTO t2 FROM t",
        "SELECT nextval('s')",
        "SELECT 1; DELETE FROM t",
        "SELECT 'a\\'' FROM t",
        "selectx 1",
        "/* pgbalancer: primary */ SELECT 1",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM performance",
    ] {
        assert!(!plainly_read(sql), "{sql:?}");
    }
}

#[test]
fn corpus_statements_get_their_expected_class() {
    let corpus = corpus::load();
    assert!(corpus.cases.len() >= 300, "the corpus has only {} statements", corpus.cases.len());
    let failures: Vec<String> = corpus
        .cases
        .iter()
        .filter_map(|case| {
            let got = corpus.classifiers[case.classifier].classify(&case.sql);
            (got != case.expected)
                .then(|| format!("line {}: {:?}: expected {:?}, got {got:?}", case.line, case.sql, case.expected))
        })
        .collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), corpus.cases.len(), failures.join("\n"));
}

#[test]
fn classifying_does_not_allocate() {
    let corpus = corpus::load();
    let n = allocations_during(|| {
        for case in &corpus.cases {
            std::hint::black_box(corpus.classifiers[case.classifier].classify(&case.sql));
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn a_write_after_a_read_or_neutral_statement_makes_a_write() {
    let corpus = corpus::load();
    for case in corpus.cases.iter().filter(|c| matches!(c.expected, Class::Read | Class::Neutral)) {
        // Close whatever literal, identifier or comment the case leaves open only if it closes cleanly:
        // cases that end inside one are skipped.
        let classifier = &corpus.classifiers[case.classifier];
        let sql = format!("{}\n;DELETE FROM t", case.sql);
        if ends_inside_something(&case.sql) {
            continue;
        }
        assert_eq!(classifier.classify(&sql), Class::Write, "line {}: {sql:?}", case.line);
    }
}

/// Whether `sql` ends inside a literal, quoted identifier or block comment.
fn ends_inside_something(sql: &str) -> bool {
    use pgbalancer_proxy::sql::lexer::Lexer;
    Lexer::with_comments(sql).last().is_some_and(|t| !t.terminated)
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let c = Classifier::default();
    let deep = 1 << 20;
    assert_eq!(c.classify(&format!("{}DELETE FROM t", "(".repeat(deep))), Class::Write);
    assert_eq!(c.classify(&format!("{}SELECT 1{}", "(".repeat(deep), ")".repeat(deep))), Class::Read);
    assert_eq!(c.classify(&format!("SELECT {}1", "(".repeat(deep))), Class::Read);
    assert_eq!(c.classify(&"EXPLAIN ".repeat(deep)), Class::Write);
    assert_eq!(c.classify(&"EXPLAIN ANALYZE ".repeat(deep)), Class::Write);
    assert_eq!(c.classify(&"SELECT 1;".repeat(deep)), Class::Read);
    assert_eq!(c.classify(&"/*".repeat(deep)), Class::Neutral);
    // CTEs nested deeper than the classifier tracks are not read.
    let nested = format!("{}SELECT 1{}", "WITH x AS (".repeat(20), ") SELECT 1".repeat(20));
    assert_eq!(c.classify(&nested), Class::Write);
    let shallow = format!("{}SELECT 1{}", "WITH x AS (".repeat(4), ") SELECT 1".repeat(4));
    assert_eq!(c.classify(&shallow), Class::Read);
}

#[test]
fn configured_names_are_normalized() {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let c = Classifier::new(&names(&["  Public.Audit_Log  ", "\"s\".\"Odd\"\"Name\"", "\"a.b\"", "x.\"p\"*"]), &[]);
    assert_eq!(c.classify("SELECT audit_log()"), Class::Write);
    assert_eq!(c.classify("SELECT \"Odd\"\"Name\"()"), Class::Write);
    assert_eq!(c.classify("SELECT \"odd\"\"name\"()"), Class::Read);
    assert_eq!(c.classify("SELECT \"a.b\"()"), Class::Write);
    assert_eq!(c.classify("SELECT b()"), Class::Read);
    assert_eq!(c.classify("SELECT pqr()"), Class::Write);
    assert_eq!(c.classify("SELECT \"Pqr\"()"), Class::Read);
}

/// `cases` random cases; failures are reported, not persisted.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Pieces of SQL that reach every rule of the classifier.
const PIECES: &[&str] = &[
    " ",
    "\n",
    "\t",
    "\r",
    "\x0b",
    "for",
    "into",
    "\\",
    "x",
    "é",
    "1",
    "'",
    "''",
    "E'",
    "\\'",
    "\"",
    "$$",
    "$a$",
    "$1",
    "/*",
    "*/",
    "--",
    ";",
    "(",
    ")",
    ",",
    ".",
    "=",
    "::",
    "SELECT ",
    "WITH ",
    "RECURSIVE ",
    "AS ",
    "MATERIALIZED ",
    "INSERT ",
    "UPDATE ",
    "DELETE ",
    "MERGE ",
    "INTO ",
    "FROM ",
    "FOR ",
    "NO ",
    "KEY ",
    "SHARE ",
    "ONLY ",
    "VALUES ",
    "TABLE ",
    "EXPLAIN ",
    "ANALYZE ",
    "VERBOSE ",
    "false ",
    "COPY ",
    "BINARY ",
    "TO ",
    "STDOUT ",
    "BEGIN ",
    "START ",
    "TRANSACTION ",
    "READ ",
    "WRITE ",
    "ISOLATION ",
    "LEVEL ",
    "SERIALIZABLE ",
    "REPEATABLE ",
    "COMMIT ",
    "ROLLBACK ",
    "PREPARED ",
    "SET ",
    "SESSION ",
    "LOCAL ",
    "CHARACTERISTICS ",
    "transaction_read_only ",
    "on ",
    "SHOW ",
    "nextval",
    "my_fn",
    "count",
    "TABLESAMPLE ",
    "CYCLE ",
    "USING ",
    "U&\"",
    "\"x\"",
];

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn never_panics_on_arbitrary_text(sql in "\\PC{0,80}") {
        let _ = Classifier::default().classify(&sql);
        let strict = Classifier::new(&["f".into()], &["g".into()]);
        let _ = strict.classify(&sql);
    }

    #[test]
    fn the_quick_look_agrees_with_the_lexer(
        parts in proptest::collection::vec(proptest::sample::select(PIECES), 0..40),
        any_text in "\\PC{0,60}",
        lead in proptest::sample::select(&["", " ", "\n", "select ", "SELECT ", "Select\t", "select"][..]),
    ) {
        use pgbalancer_proxy::sql::classify::plainly_read;
        let default = Classifier::default();
        let strict = Classifier::new(&["my_fn".into()], &["count".into()]);
        for sql in [format!("{lead}{}", parts.concat()), format!("{lead}{any_text}")] {
            for c in [&default, &strict] {
                if plainly_read(&sql) {
                    prop_assert_eq!(c.classify_lexed(&sql), Class::Read, "{:?}", sql);
                }
                prop_assert_eq!(c.classify(&sql), c.classify_lexed(&sql), "{:?}", sql);
            }
        }
    }

    #[test]
    fn never_panics_on_sql_like_text(parts in proptest::collection::vec(proptest::sample::select(PIECES), 0..40)) {
        let sql = parts.concat();
        let default = Classifier::default();
        let strict = Classifier::new(&["my_fn".into()], &["count".into()]);
        let class = default.classify(&sql);
        let _ = strict.classify(&sql);
        // A comment in front changes nothing.
        prop_assert_eq!(default.classify(&format!("/* c */{sql}")), class);
        prop_assert_eq!(default.classify(&format!("-- c\n{sql}")), class);
        // A second statement that writes makes the whole text write, unless it is swallowed by
        // something left open.
        if !ends_inside_something(&sql) {
            prop_assert_eq!(default.classify(&format!("{sql}\n;DELETE FROM t")), Class::Write);
        }
    }
}
