//! Read/write classification of SQL text, for routing to replicas.
//!
//! [`Classifier::classify`] looks at the text of a Query (or of a Parse, one statement) and says
//! whether it may run on a hot-standby replica. Only what is provably read-only is
//! [`Class::Read`]; anything uncertain is [`Class::Write`] and goes to the primary. It works on
//! the tokens of the [`lexer`](super::lexer), so words inside literals, dollar quotes, quoted
//! identifiers and comments never count, keywords match in any case, and it never allocates.
//!
//! # Statements
//!
//! - `SELECT`, `VALUES`, `TABLE`, `WITH ...` and parenthesized queries are `Read` unless they hold
//!   a locking clause (`FOR UPDATE | SHARE | NO KEY UPDATE | KEY SHARE`, at any depth); `INTO`
//!   (`SELECT ... INTO t` creates a table; `INTO` is reserved, so any unquoted one counts); a
//!   data-modifying statement (`INSERT` and `MERGE` through their `INTO`, `DELETE FROM` and
//!   `UPDATE name` right after `(` or as the main statement after a `WITH` list, at any depth); a
//!   call of a write function (see *Functions*); or a `'...'` / `N'...'` literal holding `\'`.
//! - `EXPLAIN` without `ANALYZE` (or with `ANALYZE false`) only plans: `Read` for a query,
//!   `INSERT`, `UPDATE`, `DELETE`, `MERGE` or `CREATE ... AS`, `Write` for `EXPLAIN EXECUTE`.
//!   `EXPLAIN ANALYZE` runs the statement: its class. In `(name [value], ...)` the last `ANALYZE`
//!   wins, and a value that is not a boolean counts as true.
//! - `COPY t TO STDOUT` and `COPY (query) TO STDOUT` of a read are `Read`; `COPY ... FROM`, `TO
//!   'file'` and `TO PROGRAM` are `Write`.
//! - `BEGIN` / `START TRANSACTION [modes]` is [`Class::Begin`], `read_only` when the last access
//!   mode is `READ ONLY` and the isolation level is not `SERIALIZABLE` (a hot standby refuses
//!   serializable transactions). `SET TRANSACTION` and `SET SESSION CHARACTERISTICS AS
//!   TRANSACTION` are [`Class::SetTransactionReadOnly`] under the same condition, `Write` with
//!   `READ WRITE`, `SERIALIZABLE`, `SNAPSHOT` or unreadable modes, `Neutral` otherwise. `SET
//!   [LOCAL|SESSION] [default_]transaction_read_only` to a true value is `SetTransactionReadOnly`,
//!   to anything else `Write`; `[default_]transaction_isolation` to `serializable` is `Write`.
//! - `COMMIT`, `END`, `ROLLBACK`, `ABORT` (`AND CHAIN` too: the server's ReadyForQuery says whether
//!   a transaction is still open) and `PREPARE TRANSACTION` are [`Class::Commit`]. `COMMIT
//!   PREPARED` / `ROLLBACK PREPARED` finish a two-phase transaction of the primary, outside any
//!   transaction block: `Write`.
//! - `Neutral` (no data read or written, any server will do): `SHOW`, every other `SET` (settings,
//!   `ROLE`, `SESSION AUTHORIZATION`, `CONSTRAINTS`...) and `RESET` (their session effects are
//!   `session_effects`' business), `SAVEPOINT`, `RELEASE` and `ROLLBACK TO` (meaningful only in a
//!   transaction, which already has its server), and empty text (whitespace, comments, `;`).
//! - Everything else is `Write`: DML, DDL, `GRANT`, `VACUUM`, `ANALYZE`, `LOCK`, `CALL`, `DO`,
//!   `CHECKPOINT`, `REFRESH`, `COMMENT`, `SECURITY LABEL`, `IMPORT`..., unknown words and text
//!   not starting with a word. So are statements on session objects other than settings
//!   (`PREPARE`, `EXECUTE`, `DEALLOCATE`, `DECLARE`, `FETCH`, `MOVE`, `CLOSE`, `LISTEN`,
//!   `UNLISTEN`, `NOTIFY`, `DISCARD`, `LOAD`): they live on the primary, where later statements
//!   will look for them.
//!
//! Several statements (split at every `;`): `Write` as soon as one is; `Read` if all are `Read` or
//! `Neutral` and one is `Read`; `Neutral` if all are; `Write` if transaction control (`Begin`,
//! `SetTransactionReadOnly`, `Commit`) comes with any other statement.
//!
//! # Functions
//!
//! A name followed by `(` in a query is a call. A qualified name (`pg_catalog.nextval`,
//! `"public"."f"`) counts by its last component, folded to lower case unless double-quoted and
//! truncated to 63 bytes as PostgreSQL does. The first rule that matches decides:
//!
//! 1. configured `write_functions`: `Write`;
//! 2. configured `read_only_functions`: not a write (overrides the built-in list);
//! 3. built-in writes: `nextval`, `setval`, `currval` and `lastval` (session state of the primary),
//!    `pg_advisory*`, `pg_try_advisory*`, `pg_notify`, `pg_listening_channels`, `lo_*`, `loread`,
//!    `lowrite`, `txid_current*`, `pg_current_xact_id*`, `pg_export_snapshot`, WAL, replication
//!    and backup functions (`pg_switch_wal`, `pg_current_wal*`, `pg_create_*`, `pg_drop_*`,
//!    `pg_copy_*`, `pg_logical_*`, `pg_replication_origin*`...), `dblink*`, administration
//!    (`pg_cancel_backend`, `pg_terminate_backend`, `pg_reload_conf`, `pg_stat_reset*`...), index
//!    maintenance (`brin_summarize_*`, `gin_clean_pending_list`), `pg_file_*`;
//! 4. when `read_only_functions` is not empty (pgpool's `read_only_function_list`), every other
//!    call is `Write`, except a built-in allow list of common read-only functions (aggregates,
//!    window, string, math, date/time functions, `array_*`, `json_*`, `jsonb_*`, `regexp_*`,
//!    `to_*`, `pg_get_*`...), keywords and type names before `(` (`IN (`, `OVER (`,
//!    `varchar(10)`), names after `AS` or `::` (aliases with column lists, types), CTE names and
//!    `TABLESAMPLE` methods;
//! 5. otherwise (no `read_only_functions`, the default, as pgpool without its lists): no write.
//!
//! List entries may be schema-qualified (the last component counts), double-quoted (kept as
//! written) and end in `*` (a prefix: `audit_*`). `set_config` is no write: it changes settings,
//! like `SET`.
//!
//! # Limitations
//!
//! Only the text is seen, not what runs in views, rules, triggers, defaults, operators or
//! functions: by default `SELECT my_function()` is `Read` even if it writes (list it in
//! `write_functions`, or use `read_only_functions`). A write that reaches a replica fails there;
//! it does not go astray. The lexer assumes `standard_conforming_strings = on`; a plain literal
//! holding `\'` lexes differently with it off, hence `Write`. A `U&"..."` function name is not
//! decoded: `Write`. Accepted false `Write`s: an unquoted keyword used as a column where a
//! statement could start or a lock be taken (`substring(delete FROM 2)`, `substring(s FOR
//! share)`), an alias with a column list but no `AS` (`FROM t x(a, b)`) in strict mode.

use super::lexer::{Lexer, StatementTokens, Token, TokenKind};

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Provably read-only: may run on a replica.
    Read,
    /// Writes, or may write, or cannot be decided: primary.
    Write,
    /// `BEGIN` / `START TRANSACTION`; `read_only` if it may run on a replica (`READ ONLY`, not `SERIALIZABLE`).
    Begin { read_only: bool },
    /// `SET TRANSACTION READ ONLY`, `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`.
    SetTransactionReadOnly,
    /// `COMMIT`, `END`, `ROLLBACK`, `ABORT`, `PREPARE TRANSACTION`.
    Commit,
    /// Reads and writes no data, may run anywhere: `SHOW`, `SET`, `RESET`, `SAVEPOINT`, empty text.
    Neutral,
}

/// Longest name PostgreSQL keeps (`NAMEDATALEN - 1`); longer ones are truncated.
const NAME_MAX: usize = 63;

/// Priority levels of the function tables: the lowest level that matches decides.
const CONFIG_WRITE: u8 = 0;
const CONFIG_READ_ONLY: u8 = 1;
const BUILTIN_WRITE: u8 = 2;
const BUILTIN_SAFE: u8 = 3;
/// Matches unquoted, unqualified names only.
const KEYWORD: u8 = 4;

/// Built-in write functions (`*`: prefixes).
const WRITE_FUNCTIONS: &str = "nextval setval currval lastval pg_notify pg_listening_channels txid_current
    txid_current_if_assigned pg_current_xact_id pg_current_xact_id_if_assigned pg_export_snapshot loread lowrite
    pg_switch_wal pg_switch_xlog pg_start_backup pg_stop_backup pg_promote pg_reload_conf pg_rotate_logfile
    pg_cancel_backend pg_terminate_backend pg_log_backend_memory_contexts pg_import_system_collations
    pg_replication_slot_advance pg_truncate_visibility_map brin_summarize_new_values brin_summarize_range
    brin_desummarize_range gin_clean_pending_list pg_stat_statements_reset pg_advisory* pg_try_advisory* lo_*
    dblink* pg_create_* pg_drop_* pg_copy_* pg_logical_* pg_replication_origin* pg_backup_* pg_current_wal*
    pg_wal_replay_* pg_stat_reset* pg_file_*";

/// Read-only built-ins (`*`: prefixes) allowed when `read_only_functions` is set.
const SAFE_FUNCTIONS: &str = "abs age ascii avg bit_and bit_length bit_or bool_and bool_or btrim cardinality cbrt
    ceil ceiling char_length character_length chr clock_timestamp col_description concat concat_ws corr count
    covar_pop covar_samp cume_dist current_database current_schema current_schemas current_setting current_time
    current_timestamp decode degrees dense_rank div encode every exp first_value floor format format_type
    gen_random_uuid generate_series generate_subscripts initcap isfinite justify_days justify_hours
    justify_interval lag last_value lead left length ln localtime localtimestamp log log10 lower lpad ltrim max
    md5 min mod mode now nth_value ntile obj_description octet_length percent_rank percentile_cont
    percentile_disc pg_backend_pid pg_database_size pg_is_in_recovery pg_relation_size pg_size_pretty pg_sleep
    pg_table_size pg_total_relation_size pg_typeof pi power quote_ident quote_literal quote_nullable radians
    random rank repeat replace reverse right round row_number row_to_json rpad rtrim set_config sha256 sign
    split_part sqrt starts_with statement_timestamp stddev stddev_pop stddev_samp strpos substr sum timeofday
    transaction_timestamp translate trunc unnest upper var_pop var_samp variance version array_* json_* jsonb_*
    regexp_* string_* to_* date_* make_* has_* pg_get_* ts_* xml*";

/// Unquoted words that come before `(` without being function calls (when `read_only_functions` is set).
const NOT_CALLS: &str = "all and any array as between bit both by case cast char character coalesce collate
    columns content cube day dec decimal default distinct document else escape except exists extract fetch filter
    first float following for from greatest group grouping groups having hour ilike in intersect interval is join
    json json_array json_arrayagg json_exists json_object json_objectagg json_query json_scalar json_serialize
    json_table json_value lateral leading least like limit materialized merge_action minute month national nchar
    next normalize not nullif numeric offset on only or order over overlay partition passing position preceding
    range repeatable returning rollup row rows second select sets similar some substring symmetric table
    tablesample then time timestamp to trailing treat trim union using values varchar variadic varying when where
    window with within xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi
    xmlroot xmlserialize xmltable year zone";

/// Words that follow a column named `update` rather than the table of an `UPDATE` statement.
const AFTER_COLUMN: &str = "and as asc at between collate default desc else end escape from ilike in is isnull
    like not notnull nulls or over overlaps search select set similar table then to using values when with";

#[derive(Debug, Clone)]
struct Entry {
    name: Box<[u8]>,
    level: u8,
    write: bool,
    prefix: bool,
}

/// Decides where statements may run; built once from configuration.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Exact names, sorted, one entry per name (the lowest level).
    exact: Vec<Entry>,
    /// Name prefixes, by level.
    prefixes: Vec<Entry>,
    /// First bytes of the names in `exact` and in `prefixes`: most lookups stop there.
    first_bytes: [[bool; 256]; 2],
    /// `read_only_functions` is set: unknown calls write.
    strict: bool,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new(&[], &[])
    }
}

impl Classifier {
    /// A classifier with the configured function lists (see the module documentation for the
    /// syntax of entries and the rules).
    pub fn new(write_functions: &[String], read_only_functions: &[String]) -> Classifier {
        fn add<'s>(entries: &mut Vec<Entry>, names: impl Iterator<Item = &'s str>, level: u8, write: bool) {
            for (name, prefix) in names.filter_map(config_name) {
                entries.push(Entry { name: name.into(), level, write, prefix });
            }
        }
        let mut entries = Vec::new();
        add(&mut entries, write_functions.iter().map(String::as_str), CONFIG_WRITE, true);
        add(&mut entries, read_only_functions.iter().map(String::as_str), CONFIG_READ_ONLY, false);
        let strict = entries.iter().any(|e| e.level == CONFIG_READ_ONLY);
        add(&mut entries, WRITE_FUNCTIONS.split_whitespace(), BUILTIN_WRITE, true);
        if strict {
            add(&mut entries, SAFE_FUNCTIONS.split_whitespace(), BUILTIN_SAFE, false);
            add(&mut entries, NOT_CALLS.split_whitespace(), KEYWORD, false);
        }
        let (mut prefixes, mut exact): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| e.prefix);
        exact.sort_by(|a, b| a.name.cmp(&b.name).then(a.level.cmp(&b.level)));
        exact.dedup_by(|later, first| later.name == first.name);
        prefixes.sort_by_key(|e| e.level);
        let mut first_bytes = [[false; 256]; 2];
        for (set, list) in first_bytes.iter_mut().zip([&exact, &prefixes]) {
            list.iter().for_each(|e| set[usize::from(e.name[0])] = true);
        }
        Classifier { exact, prefixes, first_bytes, strict }
    }

    /// The class of a whole Query text (see the module documentation).
    pub fn classify(&self, sql: &str) -> Class {
        if plainly_read(sql) {
            return Class::Read;
        }
        self.classify_lexed(sql)
    }

    /// [`Classifier::classify`] without the quick look: every token lexed.
    pub fn classify_lexed(&self, sql: &str) -> Class {
        let mut cur = Cursor::new(Lexer::new(sql));
        let mut result: Option<Class> = None;
        while cur.next_statement() {
            let Some(first) = cur.next() else { continue };
            let class = self.statement(first, &mut cur);
            if class == Class::Write {
                return Class::Write;
            }
            cur.finish();
            result = Some(match (result, class) {
                (None, class) => class,
                (Some(Class::Neutral), Class::Neutral) => Class::Neutral,
                (Some(Class::Read | Class::Neutral), Class::Read | Class::Neutral) => Class::Read,
                _ => return Class::Write,
            });
        }
        result.unwrap_or(Class::Neutral)
    }

    /// One statement starting with `first`.
    fn statement<'a>(&self, first: Token<'a>, cur: &mut Cursor<'a>) -> Class {
        use Class::*;
        let query = |cur: &mut Cursor<'a>| if self.scan(cur, first, false) { Write } else { Read };
        if first.kind == TokenKind::LParen {
            return query(cur);
        }
        if first.kind != TokenKind::Ident {
            return Write;
        }
        if matches!(kw(&first), Kw::Select | Kw::Values | Kw::Table | Kw::With) {
            return query(cur);
        }
        let k = |word: &str| first.is_keyword(word);
        if k("show") || k("reset") || k("savepoint") || k("release") {
            Neutral
        } else if k("set") {
            set(cur)
        } else if k("begin") || (k("start") && cur.eat_kw("transaction")) {
            if k("begin") && !cur.eat_kw("work") {
                cur.eat_kw("transaction");
            }
            Begin { read_only: modes(cur).read_only() }
        } else if k("commit") || k("end") || k("abort") {
            if cur.peek_kw("prepared") {
                Write
            } else {
                Commit
            }
        } else if k("rollback") {
            let _ = cur.eat_kw("work") || cur.eat_kw("transaction");
            match cur.peek() {
                Some(t) if t.is_keyword("to") => Neutral,
                Some(t) if t.is_keyword("prepared") => Write,
                _ => Commit,
            }
        } else if k("prepare") && cur.eat_kw("transaction") && cur.peek().is_some_and(|t| t.is_string()) {
            Commit
        } else if k("explain") {
            self.explain(cur)
        } else if k("copy") {
            self.copy(cur)
        } else {
            Write
        }
    }

    /// `EXPLAIN ...` after the `EXPLAIN`.
    fn explain<'a>(&self, cur: &mut Cursor<'a>) -> Class {
        let mut analyze = false;
        let Some(mut t) = cur.next() else { return Class::Write };
        if t.kind == TokenKind::LParen {
            let mut closed = false;
            while !closed {
                let Some(option) = cur.next() else { return Class::Write };
                if option.kind == TokenKind::RParen {
                    break;
                }
                let (mut value, mut values) = (None, 0);
                closed = loop {
                    match cur.next() {
                        None => return Class::Write,
                        Some(v) if v.kind == TokenKind::Comma => break false,
                        Some(v) if v.kind == TokenKind::RParen => break true,
                        v => (value, values) = (v, values + 1),
                    }
                };
                if option.is_keyword("analyze") || option.is_keyword("analyse") {
                    // No value means true; an unreadable one is taken as true.
                    analyze = values != 1 || value.and_then(|v| bool_value(&v)) != Some(false);
                }
            }
            let Some(next) = cur.next() else { return Class::Write };
            t = next;
        } else {
            while t.is_keyword("analyze") || t.is_keyword("analyse") || t.is_keyword("verbose") {
                analyze |= !t.is_keyword("verbose");
                let Some(next) = cur.next() else { return Class::Write };
                t = next;
            }
        }
        let read = if t.is_keyword("explain") {
            false
        } else if analyze {
            self.statement(t, cur) == Class::Read
        } else {
            t.kind == TokenKind::LParen
                || matches!(kw(&t), Kw::Select | Kw::Values | Kw::Table | Kw::With | Kw::Update | Kw::Delete)
                || ["insert", "merge", "create"].iter().any(|k| t.is_keyword(k))
        };
        if read {
            Class::Read
        } else {
            Class::Write
        }
    }

    /// `COPY ...` after the `COPY`.
    fn copy<'a>(&self, cur: &mut Cursor<'a>) -> Class {
        let Some(mut t) = cur.next() else { return Class::Write };
        if t.is_keyword("binary") {
            let Some(next) = cur.next() else { return Class::Write };
            t = next;
        }
        let after = if t.kind == TokenKind::LParen {
            if self.scan(cur, t, true) {
                return Class::Write;
            }
            cur.next()
        } else if t.is_ident() {
            let mut n = cur.next();
            while n.is_some_and(|d| d.kind == TokenKind::Dot) {
                cur.next();
                n = cur.next();
            }
            if n.is_some_and(|p| p.kind == TokenKind::LParen) {
                let mut depth = 1usize;
                while depth > 0 {
                    match cur.next().map(|t| t.kind) {
                        Some(TokenKind::LParen) => depth += 1,
                        Some(TokenKind::RParen) => depth -= 1,
                        Some(_) => {}
                        None => return Class::Write,
                    }
                }
                n = cur.next();
            }
            n
        } else {
            return Class::Write;
        };
        match after {
            Some(to) if to.is_keyword("to") && cur.next().is_some_and(|s| s.is_keyword("stdout")) => Class::Read,
            _ => Class::Write,
        }
    }

    /// Scans a query from `start` to the end of the statement, or, with `group`, from the `(` at
    /// `start` to its closing `)`. True if it writes (or may).
    fn scan<'a>(&self, cur: &mut Cursor<'a>, start: Token<'a>, group: bool) -> bool {
        const MAX_WITH: usize = 8;
        // Depths at which a `WITH` list is open: at that depth, before the main statement, the
        // scan is in the list's "header" (CTE names, `AS`, `SEARCH`/`CYCLE` clauses).
        let mut withs = [0usize; MAX_WITH];
        let mut nwith = 0;
        let mut depth = usize::from(group);
        let (mut prev, mut prev_kw) = if group { (Some(start), Kw::Other) } else { (None, Kw::Other) };
        let mut prev2: Option<Token<'a>> = None;
        let mut pending = Kw::Other;
        let mut cast = Cast::No;
        let mut tok = if group { cur.next() } else { Some(start) };
        while let Some(t) = tok {
            let k = kw(&t);
            let header = nwith > 0 && withs[nwith - 1] == depth;
            match std::mem::replace(&mut pending, Kw::Other) {
                Kw::Delete if k == Kw::From => return true,
                Kw::Update if update_target(&t) => return true,
                _ => {}
            }
            let after_cast = std::mem::replace(&mut cast, Cast::No);
            match t.kind {
                TokenKind::LParen => {
                    if let Some(name) = prev.filter(Token::is_ident) {
                        let qualified = prev2.is_some_and(|p| p.kind == TokenKind::Dot);
                        let not_call =
                            after_cast == Cast::Name || header || prev2.is_some_and(|p| p.is_keyword("tablesample"));
                        if self.call_writes(&name, qualified, not_call) {
                            return true;
                        }
                    }
                    depth += 1;
                }
                TokenKind::RParen if depth > 0 => {
                    depth -= 1;
                    while nwith > 0 && withs[nwith - 1] > depth {
                        nwith -= 1;
                    }
                    if group && depth == 0 {
                        return false;
                    }
                }
                TokenKind::String | TokenKind::NationalString if backslash_quote(t.text) => return true,
                TokenKind::Operator if t.text == "::" => cast = Cast::Type,
                TokenKind::Dot if after_cast == Cast::Name => cast = Cast::Type,
                TokenKind::Ident | TokenKind::QuotedIdent | TokenKind::UnicodeIdent => {
                    if after_cast == Cast::Type {
                        cast = Cast::Name;
                    }
                    match k {
                        Kw::Into => return true,
                        Kw::Update | Kw::Share | Kw::No | Kw::Key if prev_kw == Kw::For => return true,
                        Kw::Update | Kw::Delete if header || prev.is_some_and(|p| p.kind == TokenKind::LParen) => {
                            pending = k
                        }
                        Kw::With if !prev.is_some_and(|p| p.kind != TokenKind::LParen) => {
                            if nwith == MAX_WITH {
                                return true;
                            }
                            withs[nwith] = depth;
                            nwith += 1;
                        }
                        Kw::Select | Kw::Values | Kw::Table if header => nwith -= 1,
                        Kw::As => cast = Cast::Type,
                        _ => {}
                    }
                }
                _ => {}
            }
            (prev2, prev, prev_kw) = (prev, Some(t), k);
            tok = cur.next();
        }
        false
    }

    /// Whether the call of `name` may write; `not_call` if the context says `name(` is no call.
    fn call_writes(&self, name: &Token<'_>, qualified: bool, not_call: bool) -> bool {
        let mut buf = [0u8; NAME_MAX];
        let Some(folded) = fold(name, &mut buf) else { return true };
        match self.lookup(folded, name.kind == TokenKind::Ident && !qualified) {
            Some(write) => write,
            None => self.strict && !not_call,
        }
    }

    /// The rule for a folded function name: `Some(true)` writes, `Some(false)` does not.
    fn lookup(&self, name: &[u8], plain: bool) -> Option<bool> {
        let first = usize::from(*name.first()?);
        let mut best = None;
        if self.first_bytes[0][first] {
            let found = self.exact.binary_search_by(|e| (*e.name).cmp(name)).ok().map(|i| &self.exact[i]);
            best = found.filter(|e| plain || e.level < KEYWORD);
        }
        let prefixes = if self.first_bytes[1][first] { &self.prefixes[..] } else { &[] };
        for e in prefixes {
            if best.is_some_and(|b| b.level <= e.level) {
                break;
            }
            if name.starts_with(&e.name) {
                best = Some(e);
                break;
            }
        }
        best.map(|e| e.write)
    }
}

/// A quick look that spares the lexer the commonest read: one plain
/// `SELECT` with no parenthesis anywhere (so no function call), no
/// backslash (a string with `\'` is taken as a possible write), and
/// neither `for` (locking clauses) nor `into` anywhere, in any case. Such
/// bytes inside literals, identifiers or comments only send the text to
/// the full analysis, which gives the same answer for everything this
/// accepts (property-tested).
pub fn plainly_read(sql: &str) -> bool {
    let Some(body) = super::plain_select_body(sql) else {
        return false;
    };
    // One pass, one table look-up per byte.
    let mut rest = body;
    while let Some(i) = rest.iter().position(|&c| READ_STOP_BYTES[c as usize]) {
        let at = &rest[i..];
        match at[0] {
            b'(' | b';' | b'\\' => return false,
            b'f' | b'F' if at.get(1..3).is_some_and(|w| w.eq_ignore_ascii_case(b"or")) => return false,
            b'i' | b'I' if at.get(1..4).is_some_and(|w| w.eq_ignore_ascii_case(b"nto")) => return false,
            _ => rest = &at[1..],
        }
    }
    true
}

/// The bytes [`plainly_read`] stops at: `(`, `;`, `\`, and the first
/// letters of `for` and `into`.
static READ_STOP_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let stops = b"(;\\fFiI";
    let mut i = 0;
    while i < stops.len() {
        t[stops[i] as usize] = true;
        i += 1;
    }
    t
};

/// Where the scan is in a type name after `::` or `AS` (a `(` after it is a type modifier or
/// column list): `Type` when a name may come next, `Name` just after it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cast {
    No,
    Type,
    Name,
}

/// Keywords the query scan reacts to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kw {
    Other,
    As,
    Delete,
    For,
    From,
    Into,
    Key,
    No,
    Select,
    Share,
    Table,
    Update,
    Values,
    With,
}

#[inline]
fn kw(t: &Token<'_>) -> Kw {
    if t.kind != TokenKind::Ident {
        return Kw::Other;
    }
    let eq = |k: &str| t.text.eq_ignore_ascii_case(k);
    match (t.text.len(), t.text.as_bytes()[0] | 0x20) {
        (2, b'a') if eq("as") => Kw::As,
        (2, b'n') if eq("no") => Kw::No,
        (3, b'f') if eq("for") => Kw::For,
        (3, b'k') if eq("key") => Kw::Key,
        (4, b'f') if eq("from") => Kw::From,
        (4, b'i') if eq("into") => Kw::Into,
        (4, b'w') if eq("with") => Kw::With,
        (5, b's') if eq("share") => Kw::Share,
        (5, b't') if eq("table") => Kw::Table,
        (6, b'd') if eq("delete") => Kw::Delete,
        (6, b's') if eq("select") => Kw::Select,
        (6, b'u') if eq("update") => Kw::Update,
        (6, b'v') if eq("values") => Kw::Values,
        _ => Kw::Other,
    }
}

/// Whether a plain literal holds `\'` (see the module documentation).
fn backslash_quote(text: &str) -> bool {
    text.as_bytes().windows(2).any(|w| w == b"\\'")
}

/// After a statement-position `UPDATE`: whether `t` names the table to update.
fn update_target(t: &Token<'_>) -> bool {
    match t.kind {
        TokenKind::QuotedIdent | TokenKind::UnicodeIdent => true,
        TokenKind::Ident => !AFTER_COLUMN.split_whitespace().any(|k| t.is_keyword(k)),
        _ => false,
    }
}

/// Transaction modes of `BEGIN`, `START TRANSACTION`, `SET TRANSACTION`.
#[derive(Default)]
struct Modes {
    read_only: Option<bool>,
    serializable: bool,
    unknown: bool,
}

impl Modes {
    fn read_only(&self) -> bool {
        self.read_only == Some(true) && !self.serializable && !self.unknown
    }

    /// The class of `SET TRANSACTION` with these modes.
    fn set_class(&self) -> Class {
        if self.unknown || self.serializable || self.read_only == Some(false) {
            Class::Write
        } else if self.read_only == Some(true) {
            Class::SetTransactionReadOnly
        } else {
            Class::Neutral
        }
    }
}

fn modes(cur: &mut Cursor<'_>) -> Modes {
    let mut m = Modes::default();
    while let Some(t) = cur.next() {
        let known = if t.kind == TokenKind::Comma || t.is_keyword("deferrable") {
            true
        } else if t.is_keyword("not") {
            cur.eat_kw("deferrable")
        } else if t.is_keyword("isolation") && cur.eat_kw("level") {
            let level = cur.next();
            let kw = |k: &str| level.is_some_and(|l| l.is_keyword(k));
            m.serializable = kw("serializable");
            m.serializable
                || (kw("repeatable") && cur.eat_kw("read"))
                || (kw("read") && (cur.eat_kw("committed") || cur.eat_kw("uncommitted")))
        } else if t.is_keyword("read") {
            let only = cur.eat_kw("only");
            m.read_only = Some(only);
            only || cur.eat_kw("write")
        } else {
            false
        };
        m.unknown |= !known;
    }
    m
}

/// `SET ...` after the `SET`.
fn set(cur: &mut Cursor<'_>) -> Class {
    let Some(mut t) = cur.next() else { return Class::Write };
    if t.is_keyword("session") && cur.eat_kw("characteristics") {
        let ok = cur.eat_kw("as") && cur.eat_kw("transaction");
        return if ok { modes(cur).set_class() } else { Class::Write };
    }
    if t.is_keyword("session") || t.is_keyword("local") {
        let Some(next) = cur.next() else { return Class::Write };
        t = next;
    }
    if t.is_keyword("transaction") {
        return if cur.peek_kw("snapshot") { Class::Write } else { modes(cur).set_class() };
    }
    let mut buf = [0u8; NAME_MAX];
    let name = fold(&t, &mut buf).unwrap_or_default();
    let read_only = matches!(name, b"transaction_read_only" | b"default_transaction_read_only");
    let isolation = matches!(name, b"transaction_isolation" | b"default_transaction_isolation");
    if !read_only && !isolation {
        return Class::Neutral;
    }
    let value = match cur.next() {
        Some(op) if op.text == "=" || op.is_keyword("to") => cur.next(),
        _ => None,
    };
    if read_only {
        match value.and_then(|v| bool_value(&v)) {
            Some(true) => Class::SetTransactionReadOnly,
            _ => Class::Write,
        }
    } else if value.is_some_and(|v| literal(&v).eq_ignore_ascii_case("serializable")) {
        Class::Write
    } else {
        Class::Neutral
    }
}

/// The text of a word, number or `'...'` literal (quotes removed).
fn literal<'a>(t: &Token<'a>) -> &'a str {
    match t.kind {
        TokenKind::String if t.terminated && t.text.len() >= 2 => &t.text[1..t.text.len() - 1],
        TokenKind::Ident | TokenKind::Number => t.text,
        _ => "",
    }
}

/// A boolean setting value (`on`, `true`, `yes`, `1`, `t`, `y` and their opposites).
fn bool_value(t: &Token<'_>) -> Option<bool> {
    let v = literal(t);
    let any = |words: &[&str]| words.iter().any(|w| v.eq_ignore_ascii_case(w));
    if any(&["on", "true", "yes", "1", "t", "y"]) {
        Some(true)
    } else if any(&["off", "false", "no", "0", "f", "n"]) {
        Some(false)
    } else {
        None
    }
}

/// The name an identifier token stands for, in `buf`: unquoted folded to lower case, quoted as
/// written (`""` unescaped), truncated to [`NAME_MAX`] bytes. `None` for `U&"..."` and non-names.
fn fold<'b>(t: &Token<'_>, buf: &'b mut [u8; NAME_MAX]) -> Option<&'b [u8]> {
    let mut n = 0;
    match t.kind {
        TokenKind::Ident => {
            for c in clip(t.text).bytes() {
                buf[n] = c.to_ascii_lowercase();
                n += 1;
            }
        }
        TokenKind::QuotedIdent => {
            let body = t.text.get(1..)?;
            let body = if t.terminated { body.strip_suffix('"')? } else { body };
            let mut chars = body.chars();
            while let Some(c) = chars.next() {
                if c == '"' {
                    chars.next();
                }
                if n + c.len_utf8() > NAME_MAX {
                    break;
                }
                n += c.encode_utf8(&mut buf[n..]).len();
            }
        }
        _ => return None,
    }
    Some(&buf[..n])
}

/// `s` truncated to [`NAME_MAX`] bytes on a character boundary.
fn clip(s: &str) -> &str {
    let mut n = s.len().min(NAME_MAX);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// A configured function name: its last component, folded unless quoted, and whether it ends in `*`.
fn config_name(raw: &str) -> Option<(Vec<u8>, bool)> {
    let s = raw.trim();
    let (s, prefix) = match s.strip_suffix('*') {
        Some(p) => (p, true),
        None => (s, false),
    };
    let (mut quoted, mut start) = (false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => start = i + 1,
            _ => {}
        }
    }
    let part = s[start..].trim();
    let name = match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => part.to_ascii_lowercase(),
    };
    let name = clip(&name);
    (!name.is_empty()).then(|| (name.as_bytes().to_vec(), prefix))
}

/// Tokens of one statement: ends at its `;`.
type Cursor<'a> = StatementTokens<'a>;
