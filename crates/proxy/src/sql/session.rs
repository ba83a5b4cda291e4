//! Which statements leave session state behind on a server connection.
//!
//! In transaction pooling a server goes back to the pool after each
//! transaction, so anything a client changes at session level would leak
//! into the next client. [`session_effects`] looks at the text of a Query
//! (or of a Parse) and says what it changes: settings pgbalancer can replay
//! on other servers, or a reason to pin the client to its server.

use super::lexer::{continuation, Lexer, StatementTokens, Token, TokenKind};

/// Why a client must keep its server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    /// `SET ROLE`, `SET SESSION AUTHORIZATION` or their `RESET`s (or the
    /// `role` / `session_authorization` settings by name).
    Role,
    /// A session setting that cannot be replayed by name: `RESET ALL`,
    /// `SET SESSION CHARACTERISTICS`, a `SET` or `set_config` whose name is unknown.
    SessionSetting,
    /// `LISTEN`.
    Listen,
    /// A temporary table, view, sequence, function... (`TEMP`, `pg_temp.`).
    TempObject,
    /// A session-level advisory lock.
    AdvisoryLock,
    /// `DECLARE ... WITH HOLD`.
    HoldCursor,
    /// Protocol-level named statements with `max_prepared_statements: 0`
    /// (set by the session).
    NamedStatement,
    /// A setting whose value cannot be read back and set again (`seed`).
    Unreplayable,
    /// The client named one of pgbalancer's own statements (`_pgb_…`),
    /// which other clients share on that server. Set by the session, not by
    /// [`session_effects`].
    ReservedName,
    /// SQL-level `PREPARE`.
    SqlPrepare,
    /// `LOAD` of a shared library.
    Load,
}

/// What the statements of one SQL text do to the session.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionEffects {
    /// First reason found that the client must keep its server.
    pub pin: Option<PinReason>,
    /// Lower-case names of run-time parameters changed at session level that can be replayed:
    /// pgbalancer reads `current_setting(name)` afterwards and sets it on other servers.
    pub settings: Vec<String>,
    /// `DISCARD ALL` appears.
    pub discard_all: bool,
    /// `DEALLOCATE [PREPARE] ALL` appears.
    pub deallocate_all: bool,
    /// The whole text is exactly one statement `DEALLOCATE [PREPARE] name` (name folded to lower case
    /// unless double-quoted, quotes removed, `""` unescaped): the name.
    pub deallocate: Option<String>,
}

impl SessionEffects {
    /// Nothing at all: the text leaves no session state.
    pub fn is_none(&self) -> bool {
        self.pin.is_none()
            && self.settings.is_empty()
            && !self.discard_all
            && !self.deallocate_all
            && self.deallocate.is_none()
    }

    fn pin(&mut self, reason: PinReason) {
        self.pin.get_or_insert(reason);
    }

    /// Records a replayable setting; `role` and `session_authorization` pin instead.
    fn setting(&mut self, name: String) {
        if name.eq_ignore_ascii_case("role") || name.eq_ignore_ascii_case("session_authorization") {
            self.pin(PinReason::Role);
        } else if !self.settings.contains(&name) {
            self.settings.push(name);
        }
    }
}

/// The session state every statement of `sql` leaves behind.
///
/// Statements are split at `;` outside parentheses and outside SQL-standard
/// `BEGIN ATOMIC ... END` function bodies. Keywords are matched
/// case-insensitively on real tokens only: nothing inside string literals,
/// dollar quotes, comments or quoted identifiers counts.
///
/// Rules, per statement:
/// - `SET [SESSION] name {TO|=|FROM CURRENT}` and `RESET name` record `name`
///   (dotted names whole, unquoted parts lower-cased; `TIME ZONE`, `NAMES`,
///   `SCHEMA`, `XML OPTION` as `timezone`, `client_encoding`, `search_path`,
///   `xmloption`). `SET LOCAL`, `SET TRANSACTION`, `SET CONSTRAINTS` change
///   nothing past the transaction. `SET ROLE`, `SET SESSION AUTHORIZATION`
///   and their `RESET`s pin ([`PinReason::Role`]); so do `role` and
///   `session_authorization` set by name. `RESET ALL`, `SET SESSION
///   CHARACTERISTICS` and unreadable names pin ([`PinReason::SessionSetting`]).
/// - `set_config('name', ...)` anywhere records `name` when the first
///   argument is a `'...'` or `E'...'` literal, and pins otherwise.
/// - `LISTEN`, `CREATE ... TEMP ...`, `SELECT ... INTO TEMP`, a name
///   qualified by `pg_temp.` (or `pg_temp_N.`), calls of the session-level
///   `pg_[try_]advisory_lock[_shared]`, `DECLARE ... WITH HOLD`, `PREPARE`
///   (not `PREPARE TRANSACTION`) and `LOAD` pin.
/// - `DISCARD ALL`, `DEALLOCATE [PREPARE] ALL` and a lone `DEALLOCATE name` are reported.
///
/// Function calls are not looked at in statements that only name functions
/// or store code without running it: `CREATE [OR REPLACE] FUNCTION`,
/// `PROCEDURE`, `VIEW`, `RULE`, `TRIGGER`, `ALTER FUNCTION|PROCEDURE|ROUTINE`,
/// `DROP`, `COMMENT`, `GRANT`, `REVOKE`. `EXPLAIN` is looked through only for
/// `CREATE` (`EXPLAIN ANALYZE CREATE TEMP TABLE ... AS` creates the table).
/// An unqualified `pg_temp` (as in `SET search_path = public, pg_temp`) names
/// the schema, not an object, and pins nothing.
///
/// Limitations: only the text is analysed. What runs inside functions,
/// procedures and `DO` blocks (bodies in dollar quotes or strings), in
/// `EXECUTE` of a prepared statement, in triggers or in rules is not seen:
/// such code can set parameters, create temporary objects, take advisory
/// locks or `LISTEN` without pgbalancer knowing.
///
/// The common case (no session effect) does not allocate.
pub fn session_effects(sql: &str) -> SessionEffects {
    if plainly_without_effects(sql) {
        return SessionEffects::default();
    }
    session_effects_lexed(sql)
}

/// A quick look that spares the lexer the commonest statement: one plain
/// `SELECT` with no parenthesis anywhere (so no function call, the only
/// way a `SELECT` changes a session besides temp objects) and no `temp`
/// anywhere (`INTO TEMP`, `pg_temp.`). Parentheses or `temp` inside
/// comments or literals only send the text to the full analysis, which
/// gives the same answer for everything this accepts (property-tested).
pub fn plainly_without_effects(sql: &str) -> bool {
    let Some(body) = super::plain_select_body(sql) else {
        return false;
    };
    // One pass, one table look-up per byte.
    let mut rest = body;
    while let Some(i) = rest.iter().position(|&c| STOP_BYTES[c as usize]) {
        match rest[i] {
            b'(' | b';' => return false,
            _ if rest[i..].get(..4).is_some_and(|w| w.eq_ignore_ascii_case(b"temp")) => return false,
            _ => rest = &rest[i + 1..],
        }
    }
    true
}

/// The bytes [`plainly_without_effects`] stops at: `(`, `;`, and `t`/`T`
/// (which may start `temp`).
static STOP_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    t[b'(' as usize] = true;
    t[b';' as usize] = true;
    t[b't' as usize] = true;
    t[b'T' as usize] = true;
    t
};

/// [`session_effects`] without the quick look: every token lexed.
pub fn session_effects_lexed(sql: &str) -> SessionEffects {
    let mut fx = SessionEffects::default();
    let mut lx = Lexer::new(sql);
    let mut statements = 0usize;
    let mut deallocate = None;
    while let Some(first) = lx.next() {
        if first.kind == TokenKind::Semicolon {
            continue;
        }
        statements += 1;
        let mut stmt = head(first, Cursor::new(lx.clone()), &mut fx);
        if stmt.deallocate.is_some() {
            deallocate = stmt.deallocate.take();
        }
        body(first, &mut lx, &mut fx, &stmt);
    }
    if statements == 1 {
        fx.deallocate = deallocate;
    }
    fx
}

/// What the head of a statement says about how to read its body.
#[derive(Default)]
struct Stmt {
    /// Function calls in it are not executed (definitions, DROP, GRANT...).
    no_calls: bool,
    /// `CREATE FUNCTION|PROCEDURE`: `BEGIN ATOMIC ... END` may hold `;`.
    routine: bool,
    /// `INTO TEMP` cannot mean `SELECT ... INTO TEMP`.
    no_select_into: bool,
    deallocate: Option<String>,
}

/// Lookahead within one statement: ends at the first `;`.
type Cursor<'a> = StatementTokens<'a>;

/// Statement-level rules, decided by the first few tokens.
fn head<'a>(first: Token<'a>, mut cur: Cursor<'a>, fx: &mut SessionEffects) -> Stmt {
    let mut stmt = Stmt::default();
    let mut t = first;
    if t.is_keyword("explain") {
        skip_explain_options(&mut cur);
        match cur.next() {
            Some(n) if n.is_keyword("create") => t = n,
            _ => return stmt,
        }
    }
    if t.kind != TokenKind::Ident {
        return stmt;
    }
    let kw = |k: &str| t.is_keyword(k);
    if kw("set") {
        set(&mut cur, fx);
    } else if kw("reset") {
        reset(&mut cur, fx);
    } else if kw("create") {
        create(&mut cur, fx, &mut stmt);
    } else if kw("listen") {
        fx.pin(PinReason::Listen);
    } else if kw("declare") {
        while let Some(t) = cur.next() {
            if t.is_keyword("for") {
                break;
            }
            if t.is_keyword("with") && cur.peek_kw("hold") {
                fx.pin(PinReason::HoldCursor);
                break;
            }
        }
    } else if kw("prepare") {
        let two_phase = cur.eat_kw("transaction") && cur.peek().is_some_and(|t| t.is_string());
        if !two_phase {
            fx.pin(PinReason::SqlPrepare);
        }
    } else if kw("load") {
        fx.pin(PinReason::Load);
    } else if kw("discard") {
        fx.discard_all |= cur.peek_kw("all");
    } else if kw("deallocate") {
        stmt.deallocate = deallocate(&mut cur, fx);
    } else if kw("drop") || kw("comment") || kw("grant") || kw("revoke") {
        stmt.no_calls = true;
    } else if kw("alter") {
        stmt.no_calls = cur.peek_kw("function") || cur.peek_kw("procedure") || cur.peek_kw("routine");
    } else if kw("import") || kw("insert") || kw("merge") {
        stmt.no_select_into = true;
    }
    stmt
}

/// After `EXPLAIN`: `(option, ...)` or `ANALYZE`/`VERBOSE` words.
fn skip_explain_options(cur: &mut Cursor<'_>) {
    if cur.peek().is_some_and(|t| t.kind == TokenKind::LParen) {
        let mut depth = 0usize;
        while let Some(t) = cur.next() {
            match t.kind {
                TokenKind::LParen => depth += 1,
                TokenKind::RParen if depth <= 1 => return,
                TokenKind::RParen => depth -= 1,
                _ => {}
            }
        }
    } else {
        while cur.eat_kw("analyze") || cur.eat_kw("analyse") || cur.eat_kw("verbose") {}
    }
}

/// `SET ...` after the `SET`.
fn set(cur: &mut Cursor<'_>, fx: &mut SessionEffects) {
    if cur.peek_kw("local") {
        return;
    }
    // `SET SESSION x` is `SET x`, except for the two forms SESSION starts.
    for _ in 0..2 {
        if cur.peek_kw("session") {
            cur.next();
            if cur.peek_kw("authorization") {
                return fx.pin(PinReason::Role);
            }
            if cur.peek_kw("characteristics") {
                return fx.pin(PinReason::SessionSetting);
            }
        }
    }
    let Some(t) = cur.next() else { return fx.pin(PinReason::SessionSetting) };
    let kw = |k: &str| t.is_keyword(k);
    // `SET CATALOG 'db'` is always rejected ("current database cannot be changed").
    if kw("transaction") || kw("constraints") || (kw("catalog") && cur.peek().is_some_and(|t| t.is_string())) {
        return;
    }
    if kw("role") {
        return fx.pin(PinReason::Role);
    }
    let special = if kw("time") && cur.peek_kw("zone") {
        Some("timezone")
    } else if kw("names") {
        Some("client_encoding")
    } else if kw("schema") {
        Some("search_path")
    } else if kw("xml") && cur.peek_kw("option") {
        Some("xmloption")
    } else {
        None
    };
    if let Some(name) = special {
        return fx.setting(name.to_owned());
    }
    match var_name(cur, t) {
        Some(name) if cur.peek().is_some_and(|n| n.text == "=" || n.is_keyword("to") || n.is_keyword("from")) => {
            fx.setting(name)
        }
        _ => fx.pin(PinReason::SessionSetting),
    }
}

/// `RESET ...` after the `RESET`.
fn reset(cur: &mut Cursor<'_>, fx: &mut SessionEffects) {
    let Some(t) = cur.next() else { return fx.pin(PinReason::SessionSetting) };
    if t.is_keyword("all") {
        fx.pin(PinReason::SessionSetting);
    } else if t.is_keyword("session") {
        let reason = if cur.peek_kw("authorization") { PinReason::Role } else { PinReason::SessionSetting };
        fx.pin(reason);
    } else if t.is_keyword("time") && cur.peek_kw("zone") {
        fx.setting("timezone".to_owned());
    } else if t.is_keyword("transaction") && cur.peek_kw("isolation") {
        // Only the current transaction's isolation level.
    } else {
        match var_name(cur, t) {
            Some(name) => fx.setting(name),
            None => fx.pin(PinReason::SessionSetting),
        }
    }
}

/// `CREATE ...` after the `CREATE`.
fn create(cur: &mut Cursor<'_>, fx: &mut SessionEffects, stmt: &mut Stmt) {
    if cur.eat_kw("or") {
        cur.eat_kw("replace");
    }
    let _ = cur.eat_kw("global") || cur.eat_kw("local");
    if cur.eat_kw("temp") || cur.eat_kw("temporary") {
        fx.pin(PinReason::TempObject);
    }
    let Some(t) = cur.next() else { return };
    stmt.routine = t.is_keyword("function") || t.is_keyword("procedure");
    stmt.no_calls =
        stmt.routine || ["view", "recursive", "rule", "trigger", "constraint"].iter().any(|k| t.is_keyword(k));
}

/// `DEALLOCATE ...` after the `DEALLOCATE`: the name if it is all there is.
fn deallocate(cur: &mut Cursor<'_>, fx: &mut SessionEffects) -> Option<String> {
    let mut t = cur.next()?;
    // `DEALLOCATE prepare` deallocates a statement named "prepare".
    if t.is_keyword("prepare") && cur.peek().is_some() {
        t = cur.next()?;
    }
    if t.is_keyword("all") {
        fx.deallocate_all = true;
        return None;
    }
    let name = ident(cur, t)?;
    cur.next().is_none().then_some(name)
}

/// A possibly dotted run-time parameter name starting with `first`.
fn var_name(cur: &mut Cursor<'_>, first: Token<'_>) -> Option<String> {
    let mut name = ident(cur, first)?;
    while cur.peek().is_some_and(|t| t.kind == TokenKind::Dot) {
        cur.next();
        let part = cur.next()?;
        name.push('.');
        name.push_str(&ident(cur, part)?);
    }
    Some(name)
}

/// The name an identifier token stands for: unquoted folded to lower case,
/// quoted as written. A `U&"..."` identifier takes its `UESCAPE 'c'` from `cur`.
fn ident(cur: &mut Cursor<'_>, t: Token<'_>) -> Option<String> {
    match t.kind {
        TokenKind::Ident => Some(t.text.to_ascii_lowercase()),
        TokenKind::QuotedIdent if t.terminated && t.text.len() > 2 => {
            Some(t.text[1..t.text.len() - 1].replace("\"\"", "\""))
        }
        TokenKind::UnicodeIdent if t.terminated && t.text.len() > 4 => {
            let mut escape = b'\\';
            if cur.peek_kw("uescape") {
                cur.next();
                let s = cur.next().filter(|s| s.kind == TokenKind::String && s.text.len() == 3)?;
                escape = s.text.as_bytes()[1];
                if escape.is_ascii_hexdigit() || escape.is_ascii_whitespace() || b"+'\"".contains(&escape) {
                    return None;
                }
            }
            unicode_unescape(&t.text[3..t.text.len() - 1].replace("\"\"", "\""), escape)
        }
        _ => None,
    }
}

/// Decodes `\XXXX` and `\+XXXXXX` (with `escape` for `\`) as in `U&` literals.
fn unicode_unescape(s: &str, escape: u8) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut high_surrogate: Option<u32> = None;
    let mut i = 0;
    while i < b.len() {
        let doubled = b[i] == escape && b.get(i + 1) == Some(&escape);
        if b[i] != escape || doubled {
            if high_surrogate.is_some() {
                return None;
            }
            let next = if doubled { i + 2 } else { s[i..].find(escape as char).map_or(b.len(), |p| i + p) };
            out.push_str(&s[i..next - usize::from(doubled)]);
            i = next;
            continue;
        }
        let (from, len) = if b.get(i + 1) == Some(&b'+') { (i + 2, 6) } else { (i + 1, 4) };
        let hex = s.get(from..from + len).filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))?;
        let code = u32::from_str_radix(hex, 16).ok()?;
        i = from + len;
        match (high_surrogate.take(), code) {
            (None, 0xD800..=0xDBFF) => high_surrogate = Some(code),
            (Some(hi), 0xDC00..=0xDFFF) => out.push(char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (code - 0xDC00))?),
            (None, code) if code != 0 => out.push(char::from_u32(code)?),
            _ => return None,
        }
    }
    high_surrogate.is_none().then_some(out)
}

/// The value of a `'...'`, `N'...'` or `E'...'` literal, continuations joined.
fn string_value(t: &Token<'_>) -> Option<String> {
    let (escapes, body) = match t.kind {
        TokenKind::String => (false, 1),
        TokenKind::NationalString => (false, 2),
        TokenKind::EscapeString => (true, 2),
        _ => return None,
    };
    if !t.terminated {
        return None;
    }
    let b = t.text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = body;
    while i < b.len() {
        match b[i] {
            b'\'' if b.get(i + 1) == Some(&b'\'') => {
                out.push(b'\'');
                i += 2;
            }
            b'\'' => match continuation(b, i + 1) {
                Some(q) => i = q + 1,
                None => break,
            },
            b'\\' if escapes => i = backslash_escape(b, i + 1, &mut out)?,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.contains('\0'))
}

/// Decodes the escape after a `\` at `b[i..]` of an `E'...'` literal; returns where it ends.
fn backslash_escape(b: &[u8], i: usize, out: &mut Vec<u8>) -> Option<usize> {
    let digits = |from: usize, max: usize, radix: u32| {
        let n = b[from..].iter().take(max).take_while(|c| (**c as char).is_digit(radix)).count();
        (n, b[from..from + n].iter().fold(0u32, |v, c| v * radix + (*c as char).to_digit(radix).unwrap_or(0)))
    };
    let c = *b.get(i)?;
    match c {
        b'0'..=b'7' => {
            let (n, v) = digits(i, 3, 8);
            out.push(v as u8);
            Some(i + n)
        }
        b'x' if b.get(i + 1).is_some_and(u8::is_ascii_hexdigit) => {
            let (n, v) = digits(i + 1, 2, 16);
            out.push(v as u8);
            Some(i + 1 + n)
        }
        b'u' | b'U' => {
            let want = if c == b'u' { 4 } else { 8 };
            let (n, v) = digits(i + 1, want, 16);
            let ch = char::from_u32(v).filter(|_| n == want)?;
            out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            Some(i + 1 + n)
        }
        _ => {
            out.push(match c {
                b'b' => 8,
                b'f' => 12,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                _ => c,
            });
            Some(i + 1)
        }
    }
}

/// Reserved words that may follow `SELECT ... INTO name`: after `INTO temp`
/// they make `temp` the name of a regular table.
const AFTER_INTO_NAME: [&str; 13] = [
    "from",
    "where",
    "group",
    "having",
    "window",
    "union",
    "intersect",
    "except",
    "order",
    "limit",
    "offset",
    "fetch",
    "for",
];

const ADVISORY_LOCKS: [&str; 4] =
    ["pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared"];

/// Whether `t` is the function name `name`: unquoted in any case, or quoted exactly.
fn names(t: &Token<'_>, name: &str) -> bool {
    match t.kind {
        TokenKind::Ident => t.text.eq_ignore_ascii_case(name),
        TokenKind::QuotedIdent => t.terminated && t.text.len() == name.len() + 2 && &t.text[1..=name.len()] == name,
        _ => false,
    }
}

/// `pg_temp` or `pg_temp_N`, unquoted in any case or quoted exactly.
fn is_temp_schema(t: &Token<'_>) -> bool {
    let name = match t.kind {
        TokenKind::Ident => t.text.as_bytes(),
        TokenKind::QuotedIdent if t.terminated => &t.text.as_bytes()[1..t.text.len() - 1],
        _ => return false,
    };
    let prefix = &name[..name.len().min(7)];
    let prefix_ok =
        if t.kind == TokenKind::Ident { prefix.eq_ignore_ascii_case(b"pg_temp") } else { prefix == b"pg_temp" };
    prefix_ok
        && match &name[7..] {
            [] => true,
            [b'_', digits @ ..] => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

/// Rules that apply anywhere in a statement; consumes it, its `;` included.
fn body<'a>(first: Token<'a>, lx: &mut Lexer<'a>, fx: &mut SessionEffects, stmt: &Stmt) {
    let mut depth = 0usize;
    let mut atomic = 0usize;
    let (mut prev, mut prev2): (Option<Token<'a>>, Option<Token<'a>>) = (None, None);
    let mut t = first;
    loop {
        match t.kind {
            TokenKind::Semicolon if depth == 0 && atomic == 0 => return,
            TokenKind::LParen => {
                depth += 1;
                if let Some(name) = prev.filter(|_| !stmt.no_calls) {
                    call(&name, lx, fx);
                }
            }
            TokenKind::RParen => depth = depth.saturating_sub(1),
            TokenKind::Ident | TokenKind::QuotedIdent => {
                let peek = || lx.clone().next();
                if atomic == 0 && is_temp_schema(&t) && peek().is_some_and(|n| n.kind == TokenKind::Dot) {
                    fx.pin(PinReason::TempObject);
                }
                // In a `BEGIN ATOMIC` body, `CASE ... END` nests like `BEGIN ... END`.
                if stmt.routine {
                    let opens = if atomic == 0 { t.is_keyword("begin") } else { t.is_keyword("case") };
                    if opens && (atomic > 0 || peek().is_some_and(|n| n.is_keyword("atomic"))) {
                        atomic += 1;
                    } else if atomic > 0 && t.is_keyword("end") {
                        atomic -= 1;
                    }
                }
                let select_into = !stmt.no_calls
                    && !stmt.no_select_into
                    && (t.is_keyword("temp") || t.is_keyword("temporary"))
                    && prev.is_some_and(|p| p.is_keyword("into"))
                    && !prev2.is_some_and(|p| p.is_keyword("insert") || p.is_keyword("merge"))
                    && peek().is_some_and(|n| n.is_ident() && !AFTER_INTO_NAME.iter().any(|k| n.is_keyword(k)));
                if select_into {
                    fx.pin(PinReason::TempObject);
                }
            }
            _ => {}
        }
        (prev2, prev) = (prev, Some(t));
        match lx.next() {
            Some(n) => t = n,
            None => return,
        }
    }
}

/// `name(` seen, `lx` just after the `(`.
fn call(name: &Token<'_>, lx: &Lexer<'_>, fx: &mut SessionEffects) {
    if ADVISORY_LOCKS.iter().any(|f| names(name, f)) {
        fx.pin(PinReason::AdvisoryLock);
    } else if names(name, "set_config") {
        let mut args = lx.clone();
        let literal = args.next();
        let mut after = args.next();
        // `'name'::text,` is as plain as `'name',`.
        if after.is_some_and(|t| t.text == "::") && args.next().is_some_and(|t| t.kind == TokenKind::Ident) {
            after = args.next();
        }
        let setting = match (literal, after) {
            (Some(lit), Some(comma)) if comma.kind == TokenKind::Comma => string_value(&lit),
            _ => None,
        };
        match setting {
            Some(s) => fx.setting(s.to_ascii_lowercase()),
            None => fx.pin(PinReason::SessionSetting),
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
