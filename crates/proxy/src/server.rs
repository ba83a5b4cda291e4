//! One connection to a PostgreSQL server: connect, log in, and the buffered
//! reads the session loop needs. The read buffer lives here so a read inside
//! `select!` never loses bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::{md5, scram};
use crate::error::ServerError;
use crate::prepared::ServerStatements;
use crate::protocol::flow::{Flow, Note};
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::read::{self, ErrorFields};
use crate::protocol::{auth_code, be, write, TxStatus};
use crate::tls::{BackendTls, ServerStream};

/// Largest server message pgbalancer buffers whole to look into (login
/// messages, ParameterStatus, errors during its own queries). Everything else
/// is streamed through without buffering.
const INSPECT_CAP: usize = 1 << 20;

/// How much of a server's output is buffered while a client's batch is
/// still being written to it.
pub const READ_WHILE_WRITING_CAP: usize = 1 << 20;

/// How pgbalancer proves itself to the server.
#[derive(Clone)]
pub enum ServerSecret {
    None,
    Password(String),
    /// A stored md5 hash (`md5` + 32 hex digits, from `users_file` or
    /// `auth_query`): answers an md5 challenge without the password.
    Md5Hash(String),
    /// SCRAM keys recovered from a client's login (pass-through).
    ScramKeys {
        client_key: [u8; 32],
        server_key: [u8; 32],
        salt: Vec<u8>,
        iterations: u32,
    },
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerSecret::None => "None",
            ServerSecret::Password(_) => "Password(<redacted>)",
            ServerSecret::Md5Hash(_) => "Md5Hash(<redacted>)",
            ServerSecret::ScramKeys { .. } => "ScramKeys(<redacted>)",
        })
    }
}

#[derive(Debug, Clone)]
pub struct ServerLogin {
    pub user: String,
    pub database: String,
    pub secret: ServerSecret,
}

/// Something the scanner found in server bytes that the session must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    ReadyForQuery(TxStatus),
    /// A ParameterStatus was applied to [`ServerConn::params`]; its name is
    /// in `last_changed`.
    ParameterChanged,
    /// A self-answered message is due before the next server message.
    AnswerDue,
    /// The message that starts at this offset ended noted messages (see
    /// [`Flow::take_ended`]); an ErrorResponse among them is whole.
    Ended {
        start: usize,
    },
}

pub struct ServerConn {
    stream: ServerStream,
    read_buf: BytesMut,
    /// Bytes of a streamed-through message still to come.
    stream_remaining: usize,
    /// Server parameters as last reported by ParameterStatus, in the
    /// server's spelling.
    pub params: Vec<(String, String)>,
    /// Parameters pgbalancer set on behalf of the last client (startup
    /// parameters and their later changes), names in lower case.
    pub applied: Vec<(String, String)>,
    /// Name of the last parameter changed by a ParameterStatus.
    pub last_changed: Option<String>,
    pub backend_pid: i32,
    pub backend_key: i32,
    pub addr: SocketAddr,
    pub created: Instant,
    pub last_used: Instant,
    pub tx_status: TxStatus,
    /// Prepared statements pgbalancer made here (transaction mode).
    pub statements: ServerStatements,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn").field("addr", &self.addr).field("pid", &self.backend_pid).finish()
    }
}

impl ServerConn {
    /// Connects, negotiates encryption as `tls` says (SSLRequest, handshake,
    /// certificate checks) and logs in, all within `timeout`.
    pub async fn connect_tls(
        host: &str,
        port: u16,
        tls: &BackendTls,
        login: &ServerLogin,
        timeout: Duration,
    ) -> Result<Box<ServerConn>, ServerError> {
        let target = format!("{host}:{port}");
        match tokio::time::timeout(timeout, Self::connect_inner(&target, host, tls, login)).await {
            // Boxed once for its life: pools, guards and sessions move a
            // pointer, and a session's future does not carry it inline.
            Ok(r) => r.map(Box::new),
            Err(_) => Err(ServerError::ConnectTimeout(target)),
        }
    }

    async fn connect_inner(
        target: &str,
        host: &str,
        tls: &BackendTls,
        login: &ServerLogin,
    ) -> Result<ServerConn, ServerError> {
        let tcp = TcpStream::connect(target)
            .await
            .map_err(|source| ServerError::Connect { addr: target.to_owned(), source })?;
        tcp.set_nodelay(true)?;
        let addr = tcp.peer_addr()?;
        // Not a `Connect` error: the server was reached, so this is no
        // reason to try another address.
        let stream = crate::tls::connect_backend(tcp, host, tls)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("{target}: {e}")))?;
        let now = Instant::now();
        let mut conn = ServerConn {
            stream,
            read_buf: BytesMut::with_capacity(8192),
            stream_remaining: 0,
            params: Vec::new(),
            applied: Vec::new(),
            last_changed: None,
            backend_pid: 0,
            backend_key: 0,
            addr,
            created: now,
            last_used: now,
            tx_status: TxStatus::Idle,
            statements: ServerStatements::default(),
        };
        conn.login(login).await?;
        Ok(conn)
    }

    async fn login(&mut self, login: &ServerLogin) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        write::startup_message(&mut out, [("user", login.user.as_str()), ("database", login.database.as_str())]);
        self.write_all(&out).await?;
        let mut scram: Option<scram::ClientExchange> = None;
        loop {
            let (tag, body) = self.read_message().await?;
            out.clear();
            match tag {
                be::AUTHENTICATION => {
                    let (code, rest) =
                        read::authentication(&body).ok_or(ServerError::Protocol("short authentication message"))?;
                    match code {
                        // A SCRAM exchange that started must have ended with
                        // the server's signature checked: a server (or a man
                        // in the middle) that skips SASLFinal is refused.
                        auth_code::OK if scram.as_ref().is_some_and(|ex| !ex.is_done()) => {
                            return Err(ServerError::Auth(
                                "server ended SCRAM authentication without proving its signature".into(),
                            ));
                        }
                        auth_code::OK => {}
                        auth_code::CLEARTEXT_PASSWORD => {
                            let ServerSecret::Password(p) = &login.secret else {
                                return Err(ServerError::NoPassword(login.user.clone()));
                            };
                            write::password_message(&mut out, p);
                        }
                        auth_code::MD5_PASSWORD => {
                            let salt: [u8; 4] = rest
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or(ServerError::Protocol("short md5 salt"))?;
                            let response = match &login.secret {
                                ServerSecret::Password(p) => md5::md5_password_response(&login.user, p, salt),
                                ServerSecret::Md5Hash(h) => md5::md5_response_from_stored(h, salt)
                                    .ok_or_else(|| ServerError::NoPassword(login.user.clone()))?,
                                _ => return Err(ServerError::NoPassword(login.user.clone())),
                            };
                            write::password_message(&mut out, &response);
                        }
                        auth_code::SASL => {
                            if !read::sasl_mechanisms(rest).any(|m| m == scram::MECHANISM.as_bytes()) {
                                return Err(ServerError::Auth("server offers no supported SASL mechanism".into()));
                            }
                            let secret = match &login.secret {
                                ServerSecret::None => return Err(ServerError::NoPassword(login.user.clone())),
                                ServerSecret::Md5Hash(_) => {
                                    return Err(ServerError::Auth(
                                        "server asks for SCRAM, but only an md5 hash is known for this user".into(),
                                    ))
                                }
                                ServerSecret::Password(p) => scram::ClientSecret::Password(p.clone()),
                                ServerSecret::ScramKeys { client_key, server_key, salt, iterations } => {
                                    scram::ClientSecret::Keys {
                                        client_key: *client_key,
                                        server_key: *server_key,
                                        salt: salt.clone(),
                                        iterations: *iterations,
                                    }
                                }
                            };
                            let ex = scram::ClientExchange::new(secret);
                            write::sasl_initial_response(&mut out, scram::MECHANISM, &ex.client_first());
                            scram = Some(ex);
                        }
                        auth_code::SASL_CONTINUE => {
                            let ex = scram.as_mut().ok_or(ServerError::Protocol("SASL continue without SASL"))?;
                            let reply = ex.server_first(rest).map_err(|e| ServerError::Auth(e.to_string()))?;
                            write::sasl_response(&mut out, &reply);
                        }
                        auth_code::SASL_FINAL => {
                            let ex = scram.as_mut().ok_or(ServerError::Protocol("SASL final without SASL"))?;
                            ex.server_final(rest).map_err(|e| ServerError::Auth(e.to_string()))?;
                        }
                        _ => return Err(ServerError::Auth(format!("unsupported authentication request {code}"))),
                    }
                    if !out.is_empty() {
                        self.write_all(&out).await?;
                    }
                }
                be::PARAMETER_STATUS => self.apply_parameter_status(&body)?,
                be::BACKEND_KEY_DATA => {
                    let (pid, key) =
                        read::backend_key_data(&body).ok_or(ServerError::Protocol("bad BackendKeyData"))?;
                    self.backend_pid = pid;
                    self.backend_key = key;
                }
                be::ERROR_RESPONSE => return Err(ServerError::Rejected(ErrorFields::parse(&body))),
                be::NOTICE_RESPONSE | be::NEGOTIATE_PROTOCOL_VERSION => {}
                be::READY_FOR_QUERY => {
                    self.tx_status = body
                        .first()
                        .copied()
                        .and_then(TxStatus::from_byte)
                        .ok_or(ServerError::Protocol("bad ReadyForQuery"))?;
                    return Ok(());
                }
                _ => return Err(ServerError::Protocol("unexpected message during login")),
            }
        }
    }

    fn apply_parameter_status(&mut self, body: &[u8]) -> Result<(), ServerError> {
        let (k, v) = read::parameter_status(body).ok_or(ServerError::Protocol("bad ParameterStatus"))?;
        match self.params.iter_mut().find(|(name, _)| name == k) {
            Some((_, value)) if value == v => {}
            Some((_, value)) => *value = v.to_owned(),
            None => self.params.push((k.to_owned(), v.to_owned())),
        }
        self.last_changed = Some(k.to_owned());
        Ok(())
    }

    /// A reported parameter's value, by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Reads one whole message (for login and pgbalancer's own queries only).
    async fn read_message(&mut self) -> Result<(u8, BytesMut), ServerError> {
        loop {
            if let Some(h) = frame::peek_header(&self.read_buf, INSPECT_CAP)
                .map_err(|_| ServerError::Protocol("bad message length"))?
            {
                if self.read_buf.len() >= h.total_len {
                    let mut msg = self.read_buf.split_to(h.total_len);
                    msg.advance(HEADER_LEN);
                    return Ok((h.tag, msg));
                }
            }
            self.fill().await?;
        }
    }

    /// Reads more bytes into the buffer. Cancel-safe. Over TLS it also
    /// sends records rustls still holds from [`Self::write_some_reading`].
    pub async fn fill(&mut self) -> Result<(), ServerError> {
        self.read_buf.reserve(8192);
        let n = match &mut self.stream {
            ServerStream::Plain(s) => s.read_buf(&mut self.read_buf).await?,
            ServerStream::Tls(s) => {
                let s = &mut **s;
                let buf = &mut self.read_buf;
                std::future::poll_fn(|cx| {
                    if s.get_ref().1.wants_write() {
                        // Pending just means the socket is full for now.
                        if let Poll::Ready(Err(e)) = Pin::new(&mut *s).poll_flush(cx) {
                            return Poll::Ready(Err(e));
                        }
                    }
                    std::pin::pin!(s.read_buf(&mut *buf)).poll(cx)
                })
                .await
                .map_err(tls_read_error)?
            }
        };
        match n {
            0 => Err(ServerError::Closed),
            _ => Ok(()),
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ServerError> {
        match &mut self.stream {
            ServerStream::Plain(s) => s.write_all(bytes).await?,
            ServerStream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await?;
            }
        }
        Ok(())
    }

    /// Whether the connection to the server is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, ServerStream::Tls(_))
    }

    /// The certificates the server presented (TLS only), leaf first.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match &self.stream {
            ServerStream::Tls(s) => s.get_ref().1.peer_certificates(),
            ServerStream::Plain(_) => None,
        }
    }

    /// Writes as much of `bytes` as it can while reading whatever the
    /// server sends meanwhile into the read buffer, so a long client batch
    /// cannot deadlock with a server blocked on sending its answers. Returns
    /// (bytes written, whether anything was read) once everything is written
    /// or the read buffer reached [`READ_WHILE_WRITING_CAP`]; the caller then
    /// forwards the buffered output and calls again with the rest.
    ///
    /// Over TLS, bytes count as written once rustls took them; records it
    /// could not send yet go out with the next write or [`Self::fill`].
    pub async fn write_some_reading(&mut self, bytes: &[u8]) -> Result<(usize, bool), ServerError> {
        let tls = match &mut self.stream {
            ServerStream::Plain(_) => None,
            ServerStream::Tls(s) => Some(&mut **s),
        };
        if let Some(s) = tls {
            return write_some_reading_tls(s, &mut self.read_buf, bytes).await;
        }
        let ServerStream::Plain(stream) = &mut self.stream else { unreachable!("TLS handled above") };
        let mut written = 0;
        let mut read_any = false;
        let (mut rd, mut wr) = stream.split();
        while written < bytes.len() && self.read_buf.len() < READ_WHILE_WRITING_CAP {
            self.read_buf.reserve(8192);
            tokio::select! {
                r = wr.write(&bytes[written..]) => match r? {
                    0 => return Err(ServerError::Closed),
                    n => written += n,
                },
                r = rd.read_buf(&mut self.read_buf) => match r? {
                    0 => return Err(ServerError::Closed),
                    _ => read_any = true,
                },
            }
        }
        Ok((written, read_any))
    }

    /// Walks the buffered bytes from `from` message by message, streaming through what
    /// need not be looked at. Returns how many leading bytes are ready to
    /// forward and stops right after a ReadyForQuery (so the caller can
    /// decide about the connection before anything later is read), or at an
    /// incomplete message that must be inspected.
    /// Every message's type is fed to `flow`.
    pub fn scan<N: Note>(
        &mut self,
        from: usize,
        flow: &mut Flow<N>,
    ) -> Result<(usize, Option<ServerEvent>), ServerError> {
        let buf = &self.read_buf[..];
        let mut pos = from;
        loop {
            if self.stream_remaining > 0 {
                let n = self.stream_remaining.min(buf.len() - pos);
                self.stream_remaining -= n;
                pos += n;
                if self.stream_remaining > 0 {
                    return Ok((pos, None));
                }
            }
            if flow.answer_due() {
                return Ok((pos, Some(ServerEvent::AnswerDue)));
            }
            let rest = &buf[pos..];
            let Some(h) =
                frame::peek_header(rest, usize::MAX).map_err(|_| ServerError::Protocol("bad message length"))?
            else {
                return Ok((pos, None));
            };
            let inspect = match h.tag {
                be::READY_FOR_QUERY | be::PARAMETER_STATUS => true,
                // A huge error streams through; its fields then stay unread.
                be::ERROR_RESPONSE => flow.front_noted() && h.total_len <= INSPECT_CAP,
                _ => false,
            };
            if inspect {
                if h.total_len > INSPECT_CAP {
                    return Err(ServerError::Protocol("oversized message"));
                }
                if rest.len() < h.total_len {
                    return Ok((pos, None));
                }
            }
            let start = pos;
            flow.server(h.tag);
            match h.tag {
                be::READY_FOR_QUERY => {
                    pos += h.total_len;
                    let status = rest[HEADER_LEN..h.total_len]
                        .first()
                        .copied()
                        .and_then(TxStatus::from_byte)
                        .ok_or(ServerError::Protocol("bad ReadyForQuery"))?;
                    self.tx_status = status;
                    return Ok((pos, Some(ServerEvent::ReadyForQuery(status))));
                }
                be::PARAMETER_STATUS => {
                    pos += h.total_len;
                    let body = rest[HEADER_LEN..h.total_len].to_vec();
                    self.apply_parameter_status(&body)?;
                    return Ok((pos, Some(ServerEvent::ParameterChanged)));
                }
                _ if inspect => pos += h.total_len,
                _ => {
                    pos += HEADER_LEN;
                    self.stream_remaining = h.body_len();
                }
            }
            if flow.has_ended() {
                return Ok((pos, Some(ServerEvent::Ended { start })));
            }
        }
    }

    /// Bytes `range` of the read buffer (scanned, not yet taken).
    pub fn buffered_bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.read_buf[range]
    }

    /// Removes and returns the first `n` buffered bytes (from [`scan`]).
    pub fn take(&mut self, n: usize) -> BytesMut {
        self.read_buf.split_to(n)
    }

    /// True while part of a streamed-through message is still to come:
    /// the client has seen its start, so nothing else may be written to it.
    pub fn mid_message(&self) -> bool {
        self.stream_remaining > 0
    }

    /// Bytes read but not yet scanned.
    pub fn buffered(&self) -> usize {
        self.read_buf.len()
    }

    /// Runs a simple query of pgbalancer's own, discarding its rows.
    /// Returns the first error the server reported, if any.
    pub async fn run_own_query(&mut self, sql: &str) -> Result<Option<ErrorFields>, ServerError> {
        Ok(self.query_row(sql).await?.err())
    }

    /// Runs a simple query of pgbalancer's own and returns the columns of
    /// its first row (None for NULL), or the error the server reported.
    pub async fn query_row(&mut self, sql: &str) -> Result<Result<Vec<Option<String>>, ErrorFields>, ServerError> {
        let mut out = BytesMut::new();
        write::query(&mut out, sql);
        self.write_all(&out).await?;
        let mut result = Ok(Vec::new());
        let mut have_row = false;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                be::DATA_ROW if !have_row && result.is_ok() => {
                    have_row = true;
                    let row = read::data_row(&body).ok_or(ServerError::Protocol("bad DataRow"))?;
                    result = Ok(row);
                }
                be::ERROR_RESPONSE if result.is_ok() => result = Err(ErrorFields::parse(&body)),
                be::PARAMETER_STATUS => self.apply_parameter_status(&body)?,
                be::READY_FOR_QUERY => {
                    self.tx_status = body
                        .first()
                        .copied()
                        .and_then(TxStatus::from_byte)
                        .ok_or(ServerError::Protocol("bad ReadyForQuery"))?;
                    return Ok(result);
                }
                be::COPY_IN_RESPONSE | be::COPY_OUT_RESPONSE | be::COPY_BOTH_RESPONSE => {
                    return Err(ServerError::Protocol("COPY in an internal query"));
                }
                _ => {}
            }
        }
    }

    /// True when the idle connection has nothing unexpected to say: no bytes
    /// (a termination notice, a stray notification) and no EOF.
    pub fn is_quiet(&mut self) -> bool {
        if !self.read_buf.is_empty() || self.stream_remaining != 0 {
            return false;
        }
        match &mut self.stream {
            ServerStream::Plain(s) => {
                let mut probe = [0u8; 1];
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
            // One poll without waiting: TLS records that carry no data
            // (session tickets, key updates) leave the connection quiet.
            ServerStream::Tls(s) => {
                self.read_buf.reserve(64);
                let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
                let poll = std::pin::pin!(s.read_buf(&mut self.read_buf)).poll(&mut cx);
                poll.is_pending()
            }
        }
    }

    /// Sends Terminate and drops the connection.
    pub async fn close(mut self: Box<Self>) {
        let mut out = BytesMut::new();
        write::terminate(&mut out);
        let _ = tokio::time::timeout(Duration::from_millis(500), self.write_all(&out)).await;
    }
}

/// A TLS peer's EOF without close_notify is the server going away.
fn tls_read_error(e: std::io::Error) -> ServerError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ServerError::Closed
    } else {
        e.into()
    }
}

/// [`ServerConn::write_some_reading`] over TLS: one `&mut` stream, so reads
/// and writes are polled by hand in one future instead of split halves.
async fn write_some_reading_tls(
    s: &mut tokio_rustls::client::TlsStream<TcpStream>,
    read_buf: &mut BytesMut,
    bytes: &[u8],
) -> Result<(usize, bool), ServerError> {
    enum Step {
        Wrote(usize),
        Read(usize),
    }
    let mut written = 0;
    let mut read_any = false;
    while written < bytes.len() && read_buf.len() < READ_WHILE_WRITING_CAP {
        read_buf.reserve(8192);
        let step = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut *s).poll_write(cx, &bytes[written..]) {
                return Poll::Ready(r.map(Step::Wrote));
            }
            std::pin::pin!(s.read_buf(&mut *read_buf)).poll(cx).map_ok(Step::Read)
        })
        .await;
        match step {
            Ok(Step::Wrote(0) | Step::Read(0)) => return Err(ServerError::Closed),
            Ok(Step::Wrote(n)) => written += n,
            Ok(Step::Read(_)) => read_any = true,
            Err(e) => return Err(tls_read_error(e)),
        }
    }
    // Send what rustls holds, still reading so the server cannot block us;
    // at the read cap, the next fill() finishes it.
    while s.get_ref().1.wants_write() && read_buf.len() < READ_WHILE_WRITING_CAP {
        read_buf.reserve(8192);
        let step = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut *s).poll_flush(cx) {
                return Poll::Ready(r.map(|()| None));
            }
            std::pin::pin!(s.read_buf(&mut *read_buf)).poll(cx).map_ok(Some)
        })
        .await;
        match step {
            Ok(None) => break,
            Ok(Some(0)) => return Err(ServerError::Closed),
            Ok(Some(_)) => read_any = true,
            Err(e) => return Err(tls_read_error(e)),
        }
    }
    Ok((written, read_any))
}
