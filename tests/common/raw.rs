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
