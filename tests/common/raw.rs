//! A raw protocol client for bad-input tests: writes exactly the bytes a
//! test gives and reads messages back with deadlines, so a hang fails the
//! test instead of blocking it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DEADLINE: Duration = Duration::from_secs(15);

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

/// What the peer did next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Message(u8, Vec<u8>),
    Closed,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Raw { stream, buf: BytesMut::new() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        // The peer may already have closed; tests look at what comes back.
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads one byte (the answer to SSLRequest / GSSENCRequest).
    pub async fn read_byte(&mut self) -> Option<u8> {
        if self.buf.is_empty() && !self.fill().await {
            return None;
        }
        Some(self.buf.get_u8())
    }

    async fn fill(&mut self) -> bool {
        self.buf.reserve(8192);
        match tokio::time::timeout(DEADLINE, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(_)) => true,
            Err(_) => panic!("peer neither answered nor closed within {DEADLINE:?}"),
        }
    }

    /// The next whole message, or Closed.
    pub async fn next(&mut self) -> Next {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() > len {
                    let tag = self.buf.get_u8();
                    self.buf.advance(4);
                    let body = self.buf.split_to(len - 4).to_vec();
                    return Next::Message(tag, body);
                }
            }
            if !self.fill().await {
                return Next::Closed;
            }
        }
    }

    /// Reads messages until ReadyForQuery (returned last) or close.
    pub async fn until_ready(&mut self) -> Vec<Next> {
        let mut out = Vec::new();
        loop {
            let n = self.next().await;
            let stop = matches!(n, Next::Closed | Next::Message(b'Z', _));
            out.push(n);
            if stop {
                return out;
            }
        }
    }

    /// Reads until the peer closes; returns the messages seen on the way.
    pub async fn until_closed(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            match self.next().await {
                Next::Message(t, b) => out.push((t, b)),
                Next::Closed => return out,
            }
        }
    }

    /// StartupMessage 3.0 with `params`, then reads to ReadyForQuery
    /// (a trust-auth proxy). Panics if login fails.
    pub async fn login(&mut self, params: &[(&str, &str)]) {
        self.send(&startup(params)).await;
        let msgs = self.until_ready().await;
        assert!(matches!(msgs.last(), Some(Next::Message(b'Z', _))), "login failed: {msgs:?}");
    }
}

/// A StartupMessage for protocol 3.0.
pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    startup_with_code(196608, params)
}

pub fn startup_with_code(code: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32(0);
    b.put_i32(code);
    for (k, v) in params {
        b.put_slice(k.as_bytes());
        b.put_u8(0);
        b.put_slice(v.as_bytes());
        b.put_u8(0);
    }
    b.put_u8(0);
    let len = b.len() as i32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b.to_vec()
}

/// A regular message with a correct length.
pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    b.extend_from_slice(body);
    b
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    msg(b'Q', &body)
}

/// The SQLSTATE of an ErrorResponse body.
pub fn sqlstate(body: &[u8]) -> Option<String> {
    field(body, b'C')
}

/// A field of an ErrorResponse/NoticeResponse body.
pub fn field(body: &[u8], code: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&f, after)) = rest.split_first() {
        if f == 0 {
            return None;
        }
        let end = after.iter().position(|&c| c == 0)?;
        if f == code {
            return Some(String::from_utf8_lossy(&after[..end]).into_owned());
        }
        rest = &after[end + 1..];
    }
    None
}

/// The first ErrorResponse among messages, as (sqlstate, message).
pub fn first_error(msgs: &[Next]) -> Option<(String, String)> {
    msgs.iter().find_map(|m| match m {
        Next::Message(b'E', body) => Some((sqlstate(body).unwrap_or_default(), field(body, b'M').unwrap_or_default())),
        _ => None,
    })
}

/// A raw connection as `postgres` to `addr` (the primary, or a trust
/// proxy), with `options` as the startup parameter of that name if given.
pub async fn login(addr: SocketAddr, db: &str, options: Option<&str>) -> Raw {
    let mut c = Raw::connect(addr).await;
    let mut params = vec![("user", "postgres"), ("database", db)];
    params.extend(options.map(|o| ("options", o)));
    c.login(&params).await;
    c
}

// ---- Message builders. ----

/// Parse of `sql` as statement `name`, no parameter types.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    parse_typed(name, sql, &[])
}

/// Parse with parameter type OIDs.
pub fn parse_typed(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut body = [name.as_bytes(), b"\0", sql.as_bytes(), b"\0"].concat();
    body.extend_from_slice(&(types.len() as u16).to_be_bytes());
    types.iter().for_each(|t| body.extend_from_slice(&t.to_be_bytes()));
    msg(b'P', &body)
}

/// Bind of `stmt` to the unnamed portal, Execute, and nothing after.
pub fn bind_execute(stmt: &str) -> Vec<u8> {
    bind_execute_with(stmt, &[])
}

/// Bind of `stmt` with text parameters to the unnamed portal, then Execute.
pub fn bind_execute_with(stmt: &str, params: &[&[u8]]) -> Vec<u8> {
    let mut body = [b"\0", stmt.as_bytes(), b"\0\0\0"].concat();
    body.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        body.extend_from_slice(&(p.len() as i32).to_be_bytes());
        body.extend_from_slice(p);
    }
    body.extend_from_slice(b"\0\0");
    [msg(b'B', &body), msg(b'E', b"\0\0\0\0\0")].concat()
}

/// Close of prepared statement `stmt`.
pub fn close(stmt: &str) -> Vec<u8> {
    msg(b'C', &[b"S", stmt.as_bytes(), b"\0"].concat())
}

pub fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

pub fn flush() -> Vec<u8> {
    msg(b'H', b"")
}

/// Parse/Bind/Execute/Sync of an unnamed statement with text parameters.
pub fn unnamed(sql: &str, params: &[&str]) -> Vec<u8> {
    let params: Vec<&[u8]> = params.iter().map(|p| p.as_bytes()).collect();
    [parse("", sql), bind_execute_with("", &params), sync()].concat()
}

// ---- Answers in short. ----

/// A field in short: long ones (over 100 bytes: huge rows and errors) by
/// their length.
fn short(s: String) -> String {
    if s.len() > 100 {
        format!("<{} bytes>", s.len())
    } else {
        s
    }
}

/// The messages of one exchange, in short: `1` ParseComplete, `D a,b`,
/// `C tag`, `E code message`, `N code`, `Z status`…
pub fn summary(msgs: &[Next]) -> Vec<String> {
    let cstr = |b: &[u8]| String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(b"")).into_owned();
    msgs.iter()
        .map(|m| match m {
            Next::Closed => "closed".to_owned(),
            Next::Message(b'E', b) => {
                format!("E {} {}", sqlstate(b).unwrap_or_default(), short(field(b, b'M').unwrap_or_default()))
            }
            Next::Message(b'N', b) => format!("N {}", sqlstate(b).unwrap_or_default()),
            Next::Message(b'C', b) => format!("C {}", cstr(b)),
            Next::Message(b'Z', b) => format!("Z {}", b[0] as char),
            Next::Message(b'D', b) => {
                let (mut cols, mut at) = (Vec::new(), 2);
                for _ in 0..u16::from_be_bytes([b[0], b[1]]) {
                    let len = i32::from_be_bytes(b[at..at + 4].try_into().unwrap());
                    at += 4;
                    let len = len.max(0) as usize;
                    cols.push(short(String::from_utf8_lossy(&b[at..at + len]).into_owned()));
                    at += len;
                }
                format!("D {}", cols.join(","))
            }
            Next::Message(t, _) => (*t as char).to_string(),
        })
        .collect()
}

/// Sends `bytes` in one write and reads `n` answers up to ReadyForQuery
/// (or the close); one line per answer.
pub async fn exchange(c: &mut Raw, bytes: &[u8], n: usize) -> Vec<String> {
    c.send(bytes).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let msgs = c.until_ready().await;
        let closed = msgs.last() == Some(&Next::Closed);
        out.push(summary(&msgs).join(" | "));
        if closed {
            break;
        }
    }
    out
}

/// Sends each step (message bytes ending in Sync or a Query) and reads its
/// answer to ReadyForQuery; one line per step.
pub async fn script(c: &mut Raw, steps: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::new();
    for s in steps {
        out.extend(exchange(c, s, 1).await);
    }
    out
}

/// One answer line of a single Query.
pub async fn ask(c: &mut Raw, sql: &str) -> String {
    exchange(c, &query(sql), 1).await.remove(0)
}

/// The first column of the first DataRow of a simple query on a raw client.
pub async fn get_raw(c: &mut Raw, sql: &str) -> String {
    let line = ask(c, sql).await;
    line.split(" | ").find_map(|l| l.strip_prefix("D ")).unwrap_or_else(|| panic!("{sql}: {line}")).to_owned()
}
