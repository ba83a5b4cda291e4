//! Property tests for `pgbalancer_proxy::sql`: the lexer and
//! `session_effects` never panic, tokens are in-order slices of the input
//! separated only by whitespace, what sits inside a literal, a quoted
//! identifier or a comment never counts, and the common case allocates
//! nothing.

use pgbalancer_proxy::sql::lexer::{Lexer, TokenKind};
use pgbalancer_proxy::sql::session::{plainly_without_effects, session_effects, session_effects_lexed, SessionEffects};
use proptest::prelude::*;

#[path = "support/alloc.rs"]
mod alloc;
use alloc::allocations_during;

/// `cases` random cases; failures are reported, not persisted.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Pieces of SQL that exercise every lexer state and every rule.
const PIECES: &[&str] = &[
    " ",
    "\n",
    "\t",
    "x",
    "é",
    "\u{0}",
    "1",
    ".5",
    "e",
    "E'",
    "U&'",
    "U&\"",
    "B'",
    "N'",
    "'",
    "''",
    "\"",
    "\"\"",
    "$$",
    "$a$",
    "$1",
    "$",
    "\\",
    "\\'",
    "/*",
    "*/",
    "--",
    ";",
    "(",
    ")",
    ",",
    ".",
    "=",
    "-",
    "+",
    "::",
    "SET ",
    "LOCAL ",
    "SESSION ",
    "ROLE ",
    "AUTHORIZATION ",
    "TIME ZONE ",
    "RESET ",
    "ALL ",
    "TO ",
    "LISTEN ",
    "CREATE ",
    "TEMP ",
    "INTO ",
    "SELECT ",
    "DECLARE ",
    "WITH HOLD ",
    "FOR ",
    "PREPARE ",
    "TRANSACTION ",
    "LOAD ",
    "DISCARD ",
    "DEALLOCATE ",
    "set_config(",
    "pg_advisory_lock(",
    "pg_temp.",
    "BEGIN ATOMIC ",
    "CASE ",
    "END ",
    "FUNCTION ",
    "UESCAPE ",
    "EXPLAIN ",
];

fn sqlish(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..max).prop_map(|p| p.concat())
}

/// Arbitrary text: unicode strings, lossily decoded bytes, or SQL-like soup.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        sqlish(40),
    ]
}

/// Checks the token stream of `sql`, comments included.
fn check_tokens(sql: &str) -> Result<(), TestCaseError> {
    let mut pos = 0;
    for t in Lexer::with_comments(sql) {
        prop_assert!(t.start >= pos && t.end() <= sql.len(), "{t:?} out of order or outside the input");
        prop_assert!(!t.text.is_empty());
        prop_assert_eq!(&sql[t.range()], t.text);
        let gap = &sql[pos..t.start];
        prop_assert!(gap.bytes().all(|c| b" \t\n\r\x0b\x0c".contains(&c)), "non-whitespace gap {gap:?}");
        pos = t.end();
    }
    prop_assert!(sql[pos..].bytes().all(|c| b" \t\n\r\x0b\x0c".contains(&c)));
    let without: Vec<_> = Lexer::new(sql).collect();
    let filtered: Vec<_> = Lexer::with_comments(sql).filter(|t| !t.is_comment()).collect();
    prop_assert_eq!(without, filtered);
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn lexer_tokens_are_ordered_slices(sql in text()) {
        check_tokens(&sql)?;
    }

    #[test]
    fn session_effects_is_total_and_ignores_a_leading_comment(sql in text()) {
        let fx = session_effects(&sql);
        prop_assert_eq!(&session_effects(&format!("/* lead */\n{sql}")), &fx);
        prop_assert_eq!(fx.is_none(), fx == SessionEffects::default());
    }

    #[test]
    fn the_quick_look_agrees_with_the_lexer(sql in text(), lead in prop::sample::select(&["", " ", "\n", "select", "SELECT ", "Select\t"][..])) {
        let sql = format!("{lead}{sql}");
        if plainly_without_effects(&sql) {
            prop_assert_eq!(session_effects_lexed(&sql), SessionEffects::default(), "{:?}", sql);
        }
        prop_assert_eq!(session_effects(&sql), session_effects_lexed(&sql), "{:?}", sql);
    }

    #[test]
    fn nothing_inside_a_string_literal_counts(inner in text()) {
        let sql = format!("SELECT '{}'", inner.replace('\'', "''"));
        prop_assert_eq!(Lexer::new(&sql).count(), 2);
        prop_assert!(session_effects(&sql).is_none(), "{sql:?}");
        let sql = format!("SELECT E'{}'", inner.replace('\\', "\\\\").replace('\'', "\\'"));
        prop_assert_eq!(Lexer::new(&sql).count(), 2);
        prop_assert!(session_effects(&sql).is_none(), "{sql:?}");
    }

    #[test]
    fn nothing_inside_quoted_identifiers_dollar_quotes_or_comments_counts(inner in text()) {
        let sql = format!("SELECT \"{}\"", inner.replace('"', "\"\""));
        prop_assert!(session_effects(&sql).is_none(), "{sql:?}");
        let sql = format!("SELECT $q$ {inner} $q$");
        if !inner.contains("$q$") {
            prop_assert_eq!(Lexer::new(&sql).count(), 2);
            prop_assert!(session_effects(&sql).is_none(), "{sql:?}");
        }
        let sql = format!("/* {inner} */ SELECT 1");
        if !inner.contains("/*") && !inner.contains("*/") {
            prop_assert_eq!(Lexer::new(&sql).count(), 2);
            prop_assert!(session_effects(&sql).is_none(), "{sql:?}");
        }
        let sql = format!("SELECT 1 -- {}\n", inner.replace(['\n', '\r'], " "));
        prop_assert!(session_effects(&sql).is_none(), "{sql:?}");
    }
}

/// The quick look takes the plain reads and leaves everything else to
/// the lexer.
#[test]
fn the_quick_look_takes_only_plain_selects() {
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
        "  select * from t where a = $1 for update",
        "SELECT 1",
        "select\n1 ;  ",
    ] {
        assert!(plainly_without_effects(sql), "{sql:?}");
    }
    for sql in [
        "SELECT set_config('a', 'b', false)",
        "SELECT pg_advisory_lock(1)",
        "SELECT * INTO TEMP t FROM u",
        "SELECT * FROM pg_temp.t",
        "SELECT 1; SET a = 1",
        "selectx 1",
        "/* c */ SELECT 1",
        "SET a = 1",
        "SELECT count(*) FROM t",
    ] {
        assert!(!plainly_without_effects(sql), "{sql:?}");
    }
}

#[test]
fn common_statements_do_not_allocate() {
    let statements = [
        "SELECT 1",
        "select * from accounts where id = $1 for update",
        "INSERT INTO t (a, b) VALUES ($1, 'it''s') RETURNING id",
        "UPDATE t SET a = a + 1, note = E'line\\n' WHERE id = $2",
        "DELETE FROM t WHERE id IN (SELECT id FROM u /* nested /* comment */ */)",
        "BEGIN; SELECT $$body$$; COMMIT",
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
        "SET LOCAL statement_timeout = 0",
        "WITH x AS (SELECT 1) SELECT * FROM x -- trailing",
        "COMMIT",
        "ROLLBACK",
        "SELECT pg_advisory_xact_lock(1)",
        "DECLARE c CURSOR FOR SELECT 1",
        "DISCARD PLANS",
    ];
    for sql in statements {
        let mut fx = SessionEffects::default();
        let n = allocations_during(|| fx = session_effects(sql));
        assert!(fx.is_none(), "{sql:?}: {fx:?}");
        assert_eq!(n, 0, "{sql:?} allocated {n} times");
        let n = allocations_during(|| {
            for t in Lexer::with_comments(sql) {
                std::hint::black_box(t);
            }
        });
        assert_eq!(n, 0, "lexing {sql:?} allocated");
    }
    // The counter does count.
    assert!(allocations_during(|| drop(session_effects("SET a = 1"))) > 0);
}

#[test]
fn every_token_kind_is_reachable() {
    let sql = "a \"b\" U&\"c\" 'd' N'e' E'f' U&'g' B'1' $$h$$ 2 $3 ; ( ) [ ] , . = \\ -- i\n/* j */";
    let kinds: Vec<TokenKind> = Lexer::with_comments(sql).map(|t| t.kind).collect();
    use TokenKind::*;
    assert_eq!(
        kinds,
        [
            Ident,
            QuotedIdent,
            UnicodeIdent,
            String,
            NationalString,
            EscapeString,
            UnicodeString,
            BitString,
            DollarString,
            Number,
            Param,
            Semicolon,
            LParen,
            RParen,
            LBracket,
            RBracket,
            Comma,
            Dot,
            Operator,
            Other,
            LineComment,
            BlockComment
        ]
    );
}
