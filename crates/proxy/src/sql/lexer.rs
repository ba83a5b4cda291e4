//! A byte-based, allocation-free lexer for PostgreSQL SQL text.
//!
//! It follows the lexical rules of PostgreSQL's `scan.l` closely enough that
//! the words inside literals, quoted identifiers and comments are never
//! mistaken for keywords:
//!
//! - whitespace (` \t\n\r\f\v`), `--` line comments, nested `/* /* */ */`
//!   block comments;
//! - `'..'` strings with `''` (standard_conforming_strings is assumed on, so a
//!   backslash is an ordinary character), `E'..'` with backslash escapes,
//!   `U&'..'`, `N'..'`, `B'..'` / `X'..'`, and the SQL continuation of a string
//!   by another one after whitespace that holds a newline (`'a'\n'b'` is one
//!   token);
//! - dollar quotes `$$..$$` and `$tag$..$tag$`; `$1` is a parameter;
//! - `".."` and `U&".."` identifiers with `""`;
//! - unquoted identifiers and keywords (letters, digits, `_`, `$` and every
//!   non-ASCII byte), numbers, punctuation and operators (with PostgreSQL's
//!   rule that a multi-character operator does not end in `+` or `-` unless it
//!   holds one of `~!@#^&|`?%`).
//!
//! Unterminated literals and comments run to the end of the input and are
//! marked `terminated: false`; nothing panics on any input. Every token is a
//! slice of the input, so slicing is always on character boundaries.

use std::iter::FusedIterator;
use std::ops::Range;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An unquoted identifier or keyword: `select`, `pg_temp`, `a$b`, `été`.
    Ident,
    /// `"..."`, `""` standing for one `"`.
    QuotedIdent,
    /// `U&"..."` (Unicode escapes inside, maybe followed by `UESCAPE '.'`).
    UnicodeIdent,
    /// `'...'` (backslashes are ordinary characters).
    String,
    /// `N'...'` (national character string, same rules as `String`).
    NationalString,
    /// `E'...'` with backslash escapes.
    EscapeString,
    /// `U&'...'`.
    UnicodeString,
    /// `B'...'` or `X'...'`.
    BitString,
    /// `$$...$$` or `$tag$...$tag$`.
    DollarString,
    /// `42`, `1.5e-3`, `.5`, `0x1F`, `1_000`.
    Number,
    /// `$1`.
    Param,
    Semicolon,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    /// A run of operator characters (`=`, `<>`, `||`, `->>`), or `:`, `::`, `:=`.
    Operator,
    /// Any other character (`\`, `{`, a lone `$`, control characters).
    Other,
    /// `-- ...` up to (not including) the end of the line.
    LineComment,
    /// `/* ... */`, nested.
    BlockComment,
}

/// One token: its kind and where it is in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    /// The token's text, delimiters and prefixes included (`E'a\'b'`, `"x"`).
    pub text: &'a str,
    /// Byte offset of `text` in the input.
    pub start: usize,
    /// False for a literal, quoted identifier or block comment that runs to
    /// the end of the input without its closing delimiter.
    pub terminated: bool,
}

impl<'a> Token<'a> {
    /// Byte offset just past the token.
    pub fn end(&self) -> usize {
        self.start + self.text.len()
    }

    /// Byte range of the token in the input.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end()
    }

    /// Whether this is the unquoted identifier `kw`, compared ASCII-case-insensitively.
    #[inline]
    pub fn is_keyword(&self, kw: &str) -> bool {
        self.kind == TokenKind::Ident && self.text.eq_ignore_ascii_case(kw)
    }

    /// Whether this is a string literal of any flavour (dollar quotes included).
    pub fn is_string(&self) -> bool {
        use TokenKind::*;
        matches!(self.kind, String | NationalString | EscapeString | UnicodeString | BitString | DollarString)
    }

    /// Whether this is a comment.
    pub fn is_comment(&self) -> bool {
        matches!(self.kind, TokenKind::LineComment | TokenKind::BlockComment)
    }

    /// Whether this is an identifier, quoted or not.
    pub fn is_ident(&self) -> bool {
        matches!(self.kind, TokenKind::Ident | TokenKind::QuotedIdent | TokenKind::UnicodeIdent)
    }
}

const SPACE: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CONT: u8 = 4;
const OP: u8 = 8;
const DIGIT: u8 = 16;
/// Operator characters that allow a multi-character operator to end in `+`/`-`.
const OP_SPECIAL: u8 = 32;

static CLASS: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut k = 0;
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            k |= SPACE;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            k |= IDENT_START | IDENT_CONT;
        }
        if c.is_ascii_digit() {
            k |= IDENT_CONT | DIGIT;
        }
        if c == b'$' {
            k |= IDENT_CONT;
        }
        if matches!(c, b'~' | b'!' | b'@' | b'#' | b'^' | b'&' | b'|' | b'`' | b'?' | b'%') {
            k |= OP | OP_SPECIAL;
        }
        if matches!(c, b'+' | b'-' | b'*' | b'/' | b'<' | b'>' | b'=') {
            k |= OP;
        }
        t[i] = k;
        i += 1;
    }
    t
}

#[inline]
fn is(b: Option<&u8>, class: u8) -> bool {
    b.is_some_and(|&c| CLASS[c as usize] & class != 0)
}

/// How a `'`-quoted literal treats `''` and `\`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// `''` is a quote; backslash is ordinary.
    Standard,
    /// `''` and `\'` are quotes.
    Backslash,
    /// Bit strings: no escapes at all.
    Bits,
}

/// The lexer: an iterator of tokens over a `&str`.
///
/// Cloning is cheap (a slice and two words) and is the way to look ahead.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    comments: bool,
}

impl<'a> Lexer<'a> {
    /// Tokens of `sql`, whitespace and comments skipped.
    pub fn new(sql: &'a str) -> Self {
        Lexer { src: sql, pos: 0, comments: false }
    }

    /// Tokens of `sql` with comments (`LineComment`, `BlockComment`) kept,
    /// for readers of hints such as `/* pgbalancer: primary */`.
    pub fn with_comments(sql: &'a str) -> Self {
        Lexer { src: sql, pos: 0, comments: true }
    }

    /// Byte offset where the next token scan starts.
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn token(&mut self, kind: TokenKind, start: usize, end: usize, terminated: bool) -> Token<'a> {
        self.pos = end;
        Token { kind, text: &self.src[start..end], start, terminated }
    }

    /// Scans one token starting at `start` (not whitespace, not past the end).
    fn scan(&mut self, start: usize) -> Token<'a> {
        use TokenKind::*;
        let b = self.src.as_bytes();
        let c = b[start];
        let next = b.get(start + 1).copied();
        match c {
            b'-' if next == Some(b'-') => {
                let end = b[start..].iter().position(|&c| c == b'\n' || c == b'\r').map_or(b.len(), |p| start + p);
                self.token(LineComment, start, end, true)
            }
            b'/' if next == Some(b'*') => {
                let (end, ok) = block_comment_end(b, start + 2);
                self.token(BlockComment, start, end, ok)
            }
            b'\'' => self.quoted(String, start, start + 1, Quoting::Standard),
            b'"' => self.quoted_ident(QuotedIdent, start, start + 1),
            b'$' => self.dollar(start),
            b'0'..=b'9' => self.number(start),
            b'.' if is(b.get(start + 1), DIGIT) => self.number(start),
            b'.' => self.token(Dot, start, start + 1, true),
            b';' => self.token(Semicolon, start, start + 1, true),
            b'(' => self.token(LParen, start, start + 1, true),
            b')' => self.token(RParen, start, start + 1, true),
            b'[' => self.token(LBracket, start, start + 1, true),
            b']' => self.token(RBracket, start, start + 1, true),
            b',' => self.token(Comma, start, start + 1, true),
            b':' => {
                let len = if matches!(next, Some(b':' | b'=')) { 2 } else { 1 };
                self.token(Operator, start, start + len, true)
            }
            _ if CLASS[c as usize] & OP != 0 => self.operator(start),
            _ if CLASS[c as usize] & IDENT_START != 0 => {
                let after = b.get(start + 2).copied();
                match (c, next, after) {
                    (b'e' | b'E', Some(b'\''), _) => self.quoted(EscapeString, start, start + 2, Quoting::Backslash),
                    (b'n' | b'N', Some(b'\''), _) => self.quoted(NationalString, start, start + 2, Quoting::Standard),
                    (b'b' | b'B' | b'x' | b'X', Some(b'\''), _) => {
                        self.quoted(BitString, start, start + 2, Quoting::Bits)
                    }
                    (b'u' | b'U', Some(b'&'), Some(b'\'')) => {
                        self.quoted(UnicodeString, start, start + 3, Quoting::Standard)
                    }
                    (b'u' | b'U', Some(b'&'), Some(b'"')) => self.quoted_ident(UnicodeIdent, start, start + 3),
                    _ => {
                        let end = b[start..].iter().position(|&c| CLASS[c as usize] & IDENT_CONT == 0);
                        self.token(Ident, start, end.map_or(b.len(), |p| start + p), true)
                    }
                }
            }
            // Only ASCII gets here: every byte >= 0x80 starts an identifier.
            _ => self.token(Other, start, start + 1, true),
        }
    }

    /// A `'`-quoted literal whose body starts at `body`.
    fn quoted(&mut self, kind: TokenKind, start: usize, body: usize, quoting: Quoting) -> Token<'a> {
        let b = self.src.as_bytes();
        let mut i = body;
        loop {
            while i < b.len() {
                match b[i] {
                    b'\'' => break,
                    b'\\' if quoting == Quoting::Backslash => i += 2,
                    _ => i += 1,
                }
            }
            if i >= b.len() {
                return self.token(kind, start, b.len(), false);
            }
            if quoting != Quoting::Bits && b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            match continuation(b, i + 1) {
                Some(q) => i = q + 1,
                None => return self.token(kind, start, i + 1, true),
            }
        }
    }

    /// A `"`-quoted identifier whose body starts at `body`.
    fn quoted_ident(&mut self, kind: TokenKind, start: usize, body: usize) -> Token<'a> {
        let b = self.src.as_bytes();
        let mut i = body;
        loop {
            match b[i.min(b.len())..].iter().position(|&c| c == b'"') {
                None => return self.token(kind, start, b.len(), false),
                Some(p) if b.get(i + p + 1) == Some(&b'"') => i += p + 2,
                Some(p) => return self.token(kind, start, i + p + 1, true),
            }
        }
    }

    /// `$1`, `$tag$...$tag$`, or a lone `$`.
    fn dollar(&mut self, start: usize) -> Token<'a> {
        let b = self.src.as_bytes();
        if is(b.get(start + 1), DIGIT) {
            let end = b[start + 1..].iter().position(|c| !c.is_ascii_digit()).map_or(b.len(), |p| start + 1 + p);
            return self.token(TokenKind::Param, start, end, true);
        }
        let mut i = start + 1;
        if is(b.get(i), IDENT_START) {
            while b.get(i).is_some_and(|&c| c != b'$' && CLASS[c as usize] & IDENT_CONT != 0) {
                i += 1;
            }
        }
        if b.get(i) != Some(&b'$') {
            return self.token(TokenKind::Other, start, start + 1, true);
        }
        let delim = &self.src[start..=i];
        match self.src[i + 1..].find(delim) {
            Some(p) => self.token(TokenKind::DollarString, start, i + 1 + p + delim.len(), true),
            None => self.token(TokenKind::DollarString, start, b.len(), false),
        }
    }

    fn number(&mut self, start: usize) -> Token<'a> {
        let b = self.src.as_bytes();
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(|&c| c.is_ascii_digit() || c == b'_') {
                i += 1;
            }
            i
        };
        let mut i = digits(start);
        // `1..5` is `1` then `..`: a dot followed by a dot is not a decimal point.
        if b.get(i) == Some(&b'.') && b.get(i + 1) != Some(&b'.') {
            i = digits(i + 1);
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
            if is(b.get(i + 1 + sign), DIGIT) {
                i = digits(i + 1 + sign);
            }
        }
        // Radix prefixes (`0x1F`) and trailing junk stay in the number, as PostgreSQL 16 lexes them.
        while b.get(i).is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_') {
            i += 1;
        }
        self.token(TokenKind::Number, start, i, true)
    }

    fn operator(&mut self, start: usize) -> Token<'a> {
        let b = self.src.as_bytes();
        let mut end = start + 1;
        while is(b.get(end), OP) {
            let starts_comment = matches!((b[end], b.get(end + 1)), (b'-', Some(b'-')) | (b'/', Some(b'*')));
            if starts_comment {
                break;
            }
            end += 1;
        }
        if end - start > 1 && !b[start..end].iter().any(|&c| CLASS[c as usize] & OP_SPECIAL != 0) {
            while end - start > 1 && matches!(b[end - 1], b'+' | b'-') {
                end -= 1;
            }
        }
        self.token(TokenKind::Operator, start, end, true)
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let b = self.src.as_bytes();
        loop {
            let mut i = self.pos;
            while i < b.len() && CLASS[b[i] as usize] & SPACE != 0 {
                i += 1;
            }
            if i >= b.len() {
                self.pos = b.len();
                return None;
            }
            let tok = self.scan(i);
            if self.comments || !tok.is_comment() {
                return Some(tok);
            }
        }
    }
}

impl FusedIterator for Lexer<'_> {}

/// End of a block comment whose body starts at `i` (after the first `/*`),
/// and whether it was closed.
fn block_comment_end(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut depth = 1usize;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return (i, true);
                }
            }
            _ => i += 1,
        }
    }
    (b.len(), false)
}

/// If the string literal that ended just before `i` continues (whitespace
/// holding at least one newline, `--` comments allowed, then `'`), the offset
/// of that next `'`.
pub(crate) fn continuation(b: &[u8], mut i: usize) -> Option<usize> {
    let mut newline = false;
    while i < b.len() {
        match b[i] {
            b'\n' | b'\r' => newline = true,
            b' ' | b'\t' | 0x0b | 0x0c => {}
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && !matches!(b[i], b'\n' | b'\r') {
                    i += 1;
                }
                continue;
            }
            b'\'' if newline => return Some(i),
            _ => return None,
        }
        i += 1;
    }
    None
}

/// The tokens of one statement of a text: ends at its `;` (or the end of
/// the input); [`StatementTokens::next_statement`] moves on to the next.
/// Cheap to clone for lookahead.
#[derive(Clone)]
pub struct StatementTokens<'a> {
    lx: Lexer<'a>,
    /// This statement's `;` (or the end) was reached.
    stop: bool,
    /// The end of the input was reached.
    eof: bool,
}

impl<'a> StatementTokens<'a> {
    /// Tokens from where `lx` stands.
    pub fn new(lx: Lexer<'a>) -> Self {
        StatementTokens { lx, stop: false, eof: false }
    }

    #[inline]
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Token<'a>> {
        if self.stop {
            return None;
        }
        match self.lx.next() {
            Some(t) if t.kind != TokenKind::Semicolon => Some(t),
            end => {
                self.stop = true;
                self.eof = end.is_none();
                None
            }
        }
    }

    pub fn peek(&self) -> Option<Token<'a>> {
        self.clone().next()
    }

    pub fn peek_kw(&self, kw: &str) -> bool {
        self.peek().is_some_and(|t| t.is_keyword(kw))
    }

    /// Takes the next token if it is keyword `kw`.
    pub fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.peek_kw(kw);
        if yes {
            self.next();
        }
        yes
    }

    /// Skips the rest of the statement.
    pub fn finish(&mut self) {
        while self.next().is_some() {}
    }

    /// Moves on to the next statement; false at the end of the input.
    pub fn next_statement(&mut self) -> bool {
        self.stop = false;
        !self.eof
    }
}

#[cfg(test)]
mod tests {
    use super::TokenKind::*;
    use super::*;

    fn kinds(sql: &str) -> Vec<(TokenKind, &str)> {
        Lexer::new(sql).map(|t| (t.kind, t.text)).collect()
    }

    #[test]
    fn keywords_identifiers_and_punctuation() {
        assert_eq!(
            kinds("SELECT a.b, \"Q\"\"x\" FROM t;"),
            [
                (Ident, "SELECT"),
                (Ident, "a"),
                (Dot, "."),
                (Ident, "b"),
                (Comma, ","),
                (QuotedIdent, "\"Q\"\"x\""),
                (Ident, "FROM"),
                (Ident, "t"),
                (Semicolon, ";")
            ]
        );
        assert_eq!(
            kinds("a$b$ été_1 x[1]"),
            [(Ident, "a$b$"), (Ident, "été_1"), (Ident, "x"), (LBracket, "["), (Number, "1"), (RBracket, "]")]
        );
        assert!(Lexer::new("sElEcT").next().unwrap().is_keyword("select"));
        assert!(!Lexer::new("\"select\"").next().unwrap().is_keyword("select"));
    }

    #[test]
    fn comments_are_skipped_or_kept() {
        let sql = "/* a /* nested */ still */ SELECT -- line\n1 /* open";
        assert_eq!(kinds(sql), [(Ident, "SELECT"), (Number, "1")]);
        let all: Vec<_> = Lexer::with_comments(sql).map(|t| (t.kind, t.text, t.terminated)).collect();
        assert_eq!(
            all,
            [
                (BlockComment, "/* a /* nested */ still */", true),
                (Ident, "SELECT", true),
                (LineComment, "-- line", true),
                (Number, "1", true),
                (BlockComment, "/* open", false)
            ]
        );
        assert_eq!(kinds("/*/ x */ y"), [(Ident, "y")]);
    }

    #[test]
    fn strings() {
        assert_eq!(kinds(r"'it''s' '\' x"), [(String, "'it''s'"), (String, r"'\'"), (Ident, "x")]);
        assert_eq!(kinds(r"E'a\'b' e'\\' x"), [(EscapeString, r"E'a\'b'"), (EscapeString, r"e'\\'"), (Ident, "x")]);
        assert_eq!(
            kinds("U&'d\\0061' u&\"x\" N'n' B'01' X'ff'"),
            [
                (UnicodeString, "U&'d\\0061'"),
                (UnicodeIdent, "u&\"x\""),
                (NationalString, "N'n'"),
                (BitString, "B'01'"),
                (BitString, "X'ff'")
            ]
        );
        // A prefix letter glued to a longer identifier is not a prefix.
        assert_eq!(kinds("xe'a' u&x"), [(Ident, "xe"), (String, "'a'"), (Ident, "u"), (Operator, "&"), (Ident, "x")]);
        // Continuation needs a newline; comments may sit in between.
        assert_eq!(kinds("'a'\n  'b' 'c'"), [(String, "'a'\n  'b'"), (String, "'c'")]);
        assert_eq!(kinds("'a' -- c'\n'b'"), [(String, "'a' -- c'\n'b'")]);
        assert_eq!(kinds("B'1''0'"), [(BitString, "B'1'"), (String, "'0'")]);
        let t = Lexer::new(r"E'abc\'").next().unwrap();
        assert_eq!((t.kind, t.text, t.terminated), (EscapeString, r"E'abc\'", false));
        assert!(!Lexer::new("'abc''").next().unwrap().terminated);
        assert!(!Lexer::new("\"abc").next().unwrap().terminated);
    }

    #[test]
    fn dollar_quotes_and_parameters() {
        assert_eq!(
            kinds("$$a'b$$ $x$ $$ $ x$ $x$ $1 $2x"),
            [(DollarString, "$$a'b$$"), (DollarString, "$x$ $$ $ x$ $x$"), (Param, "$1"), (Param, "$2"), (Ident, "x")]
        );
        assert_eq!(kinds("$a$ $ab$ $a$;"), [(DollarString, "$a$ $ab$ $a$"), (Semicolon, ";")]);
        assert_eq!(kinds("$ab"), [(Other, "$"), (Ident, "ab")]);
        let t = Lexer::new("$q$ never").next().unwrap();
        assert_eq!((t.kind, t.terminated), (DollarString, false));
        // `$` inside an identifier is part of it, not a dollar quote.
        assert_eq!(kinds("a$$b$$"), [(Ident, "a$$b$$")]);
    }

    #[test]
    fn numbers_and_operators() {
        assert_eq!(
            kinds("1 1.5 .5 1e10 2.E-3 1..5 0x1F 1_000"),
            [
                (Number, "1"),
                (Number, "1.5"),
                (Number, ".5"),
                (Number, "1e10"),
                (Number, "2.E-3"),
                (Number, "1"),
                (Dot, "."),
                (Number, ".5"),
                (Number, "0x1F"),
                (Number, "1_000")
            ]
        );
        assert_eq!(
            kinds("a=-1 b<>c d->>'k' e::int f:=1 g@-1"),
            [
                (Ident, "a"),
                (Operator, "="),
                (Operator, "-"),
                (Number, "1"),
                (Ident, "b"),
                (Operator, "<>"),
                (Ident, "c"),
                (Ident, "d"),
                (Operator, "->>"),
                (String, "'k'"),
                (Ident, "e"),
                (Operator, "::"),
                (Ident, "int"),
                (Ident, "f"),
                (Operator, ":="),
                (Number, "1"),
                (Ident, "g"),
                (Operator, "@-"),
                (Number, "1")
            ]
        );
        assert_eq!(kinds("1+-- c\n2 */*x*/"), [(Number, "1"), (Operator, "+"), (Number, "2"), (Operator, "*")]);
        assert_eq!(kinds("\\ {"), [(Other, "\\"), (Other, "{")]);
    }

    #[test]
    fn offsets_cover_the_input() {
        let sql = "SELECT 'x' /* c */, $1 -- d\n;";
        let toks: Vec<_> = Lexer::with_comments(sql).collect();
        let mut pos = 0;
        for t in &toks {
            assert!(sql[pos..t.start].bytes().all(|c| c.is_ascii_whitespace()));
            assert_eq!(&sql[t.range()], t.text);
            pos = t.end();
        }
        assert_eq!(pos, sql.len());
    }
}
