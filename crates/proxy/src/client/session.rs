//! The session loop after login: frames client messages and forwards them
//! to a server connection taken from the pool, streams the server's answers
//! back, and decides when the server goes back to the pool.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pgbalancer_config::PoolMode;
use tokio::sync::watch;

use super::conn::ClientConn;
use super::params::ClientParams;
use crate::cancel::{CancelTarget, Registration};
use crate::error::{ClientError, Error, PoolError, ServerError};
use crate::pool::{Pool, ServerGuard};
use crate::protocol::flow::Flow;
use crate::protocol::frame::{self, FrameError};
use crate::protocol::{fe, read, sqlstate, TxStatus};
use crate::server::ServerEvent;
use crate::{Phase, Shared};

/// Whether the client holds a server connection.
// Linked is large; boxing it would allocate on every checkout.
#[allow(clippy::large_enum_variant)]
pub enum Link {
    Idle,
    Linked(ServerGuard),
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The client sent Terminate or closed its socket.
    ClientLeft,
    /// pgbalancer closed the client (timeout, shutdown, error), having told it why.
    Closed,
}

pub struct Session {
    pub shared: Arc<Shared>,
    pub client: ClientConn,
    pub user: String,
    pub database: String,
    pub params: ClientParams,
    pub pool: Arc<Pool>,
    pub link: Link,
    pub cancel: Registration,
    pub mode: PoolMode,
    pub phase: watch::Receiver<Phase>,
    /// What the server still owes this client.
    flow: Flow,
    /// The client sent Terminate while replies were owed: answer them, then
    /// close.
    terminating: bool,
    /// Bytes still missing from the message at the head of the client buffer.
    read_hint: usize,
}

/// What woke the session up.
enum Wake {
    Client(Result<(), ClientError>),
    Server(Result<(), ServerError>),
    Timeout,
    Phase,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<Shared>,
        client: ClientConn,
        user: String,
        database: String,
        params: ClientParams,
        pool: Arc<Pool>,
        link: Link,
        cancel: Registration,
    ) -> Session {
        let mode = shared.config.load().pool_mode;
        let phase = shared.phase.clone();
        Session {
            shared,
            client,
            user,
            database,
            params,
            pool,
            link,
            cancel,
            mode,
            phase,
            flow: Flow::default(),
            terminating: false,
            read_hint: 0,
        }
    }

    /// Runs the session to its end and leaves the server connection (if
    /// any) clean or closed.
    pub async fn run(mut self) -> Result<Exit, Error> {
        let result = self.main_loop().await;
        self.finish().await;
        result
    }

    async fn main_loop(&mut self) -> Result<Exit, Error> {
        loop {
            if self.terminating {
                // After Terminate nothing the client sends counts; reading on
                // still notices its EOF.
                self.client.read_buf.clear();
                // PostgreSQL ends the session once it has answered what came
                // before, or at once when it was waiting for the client
                // (discarding until Sync, or in COPY IN).
                if self.flow.owes_nothing() || self.flow.server_waits_for_client() {
                    return Ok(Exit::ClientLeft);
                }
            } else if !self.client.read_buf.is_empty() {
                if let Some(exit) = self.forward_client().await? {
                    return Ok(exit);
                }
            }
            let waiting_on_client = self.flow.owes_nothing() && !self.flow.in_copy_in();
            let tx = match &mut self.link {
                Link::Linked(g) => g.conn().tx_status,
                Link::Idle => TxStatus::Idle,
            };
            let phase = *self.phase.borrow();
            if phase == Phase::Stopping || (phase == Phase::Draining && self.flow.is_settled() && tx == TxStatus::Idle)
            {
                self.client
                    .fatal(sqlstate::ADMIN_SHUTDOWN, "terminating connection: pgbalancer is shutting down")
                    .await;
                return Ok(Exit::Closed);
            }
            let timeout = {
                let cfg = self.shared.config.load();
                match (waiting_on_client && !self.terminating, tx) {
                    (false, _) => Duration::ZERO,
                    (true, TxStatus::Idle) => cfg.client_idle_timeout,
                    (true, _) => cfg.idle_transaction_timeout,
                }
            };
            let wake = {
                let Session { client, link, phase, read_hint, .. } = self;
                let client_read = client.fill(*read_hint);
                let server_read = async {
                    match link {
                        Link::Linked(g) => g.conn().fill().await,
                        Link::Idle => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = client_read => Wake::Client(r),
                    r = server_read => Wake::Server(r),
                    _ = sleep_unless_zero(timeout) => Wake::Timeout,
                    r = phase.changed() => {
                        if r.is_err() {
                            // The proxy is gone: stop.
                            return Ok(Exit::Closed);
                        }
                        Wake::Phase
                    }
                }
            };
            match wake {
                Wake::Client(Ok(())) | Wake::Phase => {}
                Wake::Client(Err(ClientError::Closed)) => return Ok(Exit::ClientLeft),
                Wake::Client(Err(e)) => return Err(e.into()),
                Wake::Server(Ok(())) => self.forward_server().await?,
                Wake::Server(Err(e)) => {
                    self.server_lost().await;
                    return Err(e.into());
                }
                Wake::Timeout => {
                    let (code, msg) = if tx == TxStatus::Idle {
                        (sqlstate::IDLE_SESSION_TIMEOUT, "terminating connection due to client_idle_timeout")
                    } else {
                        (
                            sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
                            "terminating connection due to idle_transaction_timeout",
                        )
                    };
                    self.client.fatal(code, msg).await;
                    return Ok(Exit::Closed);
                }
            }
        }
    }

    /// Frames the complete client messages at the head of the buffer and
    /// forwards them to the server in one write. Returns an exit when the
    /// client sent Terminate or broke the protocol.
    async fn forward_client(&mut self) -> Result<Option<Exit>, Error> {
        let large = self.shared.config.load().max_message_size.bytes() as usize;
        let log_statement = self.shared.config.load().log_statement;
        let mut end = 0;
        let mut terminate = false;
        let mut bad_frame = None;
        self.read_hint = 0;
        if matches!(self.link, Link::Idle) {
            self.drop_stray_copy_messages(large);
        }
        loop {
            let buf = &self.client.read_buf[end..];
            let h = match frame::peek_frontend(buf, large) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    bad_frame = Some(e);
                    break;
                }
            };
            if buf.len() < h.total_len {
                self.read_hint = h.total_len - buf.len();
                break;
            }
            if h.tag == fe::TERMINATE {
                terminate = true;
                break;
            }
            if log_statement && h.tag == fe::QUERY {
                let text = read::query_text(&buf[frame::HEADER_LEN..h.total_len]).unwrap_or("<invalid>");
                tracing::info!(user = %self.user, database = %self.database, "statement: {text}");
            }
            self.flow.client(h.tag);
            end += h.total_len;
        }
        if end > 0 {
            if let Err(exit) = self.ensure_linked().await {
                return Ok(Some(exit));
            }
            let bytes = self.client.read_buf.split_to(end);
            self.client.shrink_if_drained();
            let mut off = 0;
            while off < bytes.len() {
                // The server owes replies for these bytes, so it cannot have
                // been released by the forwarding below.
                let Link::Linked(guard) = &mut self.link else {
                    return Err(ServerError::Protocol("server released while a batch was being written").into());
                };
                guard.set_clean(false);
                match guard.conn().write_some_reading(&bytes[off..]).await {
                    Ok((n, read_any)) => {
                        off += n;
                        if read_any {
                            self.forward_server().await?;
                        }
                    }
                    Err(e) => {
                        self.server_lost().await;
                        return Err(e.into());
                    }
                }
            }
        }
        if let Some(e) = bad_frame {
            let msg = match e {
                FrameError::UnknownType { tag } => format!("invalid frontend message type {tag}"),
                e => e.to_string(),
            };
            self.client.fatal(sqlstate::PROTOCOL_VIOLATION, &msg).await;
            return Err(ClientError::Frame(e).into());
        }
        if terminate {
            self.client.read_buf.clear();
            if self.flow.owes_nothing() || self.flow.server_waits_for_client() {
                return Ok(Some(Exit::ClientLeft));
            }
            // Like PostgreSQL, answer what came before the Terminate first.
            self.terminating = true;
        }
        Ok(None)
    }

    /// CopyData, CopyDone and CopyFail outside a COPY (a client finishing a
    /// COPY the server already failed) are ignored, as PostgreSQL does;
    /// they must not take a server from the pool.
    fn drop_stray_copy_messages(&mut self, large: usize) {
        while let Ok(Some(h)) = frame::peek_frontend(&self.client.read_buf, large) {
            let stray = matches!(h.tag, fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL);
            if !stray || self.client.read_buf.len() < h.total_len {
                return;
            }
            let _ = self.client.read_buf.split_to(h.total_len);
        }
    }

    /// Makes sure the client holds a server, taking one from the pool and
    /// bringing its parameters in line. On failure the client has been told.
    async fn ensure_linked(&mut self) -> Result<(), Exit> {
        if matches!(self.link, Link::Idle) {
            let wait = self.shared.config.load().query_wait_timeout;
            match link_server(&self.pool, &mut self.params, wait).await {
                Ok(mut guard) => {
                    let c = guard.conn();
                    self.cancel.slot.set(CancelTarget { addr: c.addr, pid: c.backend_pid, key: c.backend_key });
                    self.link = Link::Linked(guard);
                }
                Err(e) => {
                    let (code, msg) = link_error_message(&e);
                    self.client.fatal(code, &msg).await;
                    return Err(Exit::Closed);
                }
            }
        }
        Ok(())
    }

    /// Streams what the server sent to the client, in one write, and
    /// returns the server to the pool at the end of a transaction.
    async fn forward_server(&mut self) -> Result<(), Error> {
        let Link::Linked(guard) = &mut self.link else { return Ok(()) };
        let conn = guard.conn();
        let mut pos = 0;
        let mut release = false;
        loop {
            let (end, event) = match conn.scan(pos, &mut self.flow) {
                Ok(r) => r,
                Err(e) => {
                    self.server_lost().await;
                    return Err(e.into());
                }
            };
            pos = end;
            match event {
                None => break,
                Some(ServerEvent::ParameterChanged) => {
                    if let Some(name) = conn.last_changed.take() {
                        if let Some(value) = conn.param(&name) {
                            let value = value.to_owned();
                            self.params.observe(&name, &value);
                            self.params.record_on(conn);
                        }
                    }
                }
                Some(ServerEvent::ReadyForQuery(status)) => {
                    if self.mode == PoolMode::Transaction && self.flow.is_settled() && status == TxStatus::Idle {
                        release = true;
                        break;
                    }
                }
            }
        }
        let bytes = conn.take(pos);
        if release {
            // Anything after the last ReadyForQuery is unexpected: do not
            // hand that connection to anyone else.
            let quiet = conn.buffered() == 0;
            guard.set_clean(quiet);
            self.cancel.slot.clear().await;
            self.link = Link::Idle;
            self.shared.stats.transactions.fetch_add(1, Ordering::Relaxed);
        } else if self.flow.is_settled() && conn.tx_status == TxStatus::Idle {
            guard.set_clean(true);
        }
        self.client.write_all(&bytes).await.map_err(Error::from)
    }

    /// The server connection broke while this client held it: tell the
    /// client (as PostgreSQL would when its backend dies) and drop it.
    async fn server_lost(&mut self) {
        let mut mid_message = false;
        if let Link::Linked(mut guard) = std::mem::replace(&mut self.link, Link::Idle) {
            guard.set_clean(false);
            self.cancel.slot.clear_now();
            // Forward whatever arrived (often the server's own FATAL
            // explaining why).
            let conn = guard.conn();
            let (end, _) = conn.scan(0, &mut Flow::default()).unwrap_or((0, None));
            let bytes = conn.take(end);
            mid_message = conn.mid_message();
            drop(guard);
            let _ = self.client.write_all(&bytes).await;
        }
        // Cut inside a message, the client could not frame anything more:
        // closing is all that is left.
        if !mid_message {
            self.client.fatal(sqlstate::CONNECTION_FAILURE, "server connection lost").await;
        }
    }

    /// Leaves the server connection clean (session mode reset) or closes it.
    async fn finish(&mut self) {
        let Link::Linked(mut guard) = std::mem::replace(&mut self.link, Link::Idle) else { return };
        self.cancel.slot.clear_now();
        let idle = {
            let c = guard.conn();
            self.flow.is_settled() && c.tx_status == TxStatus::Idle && c.buffered() == 0
        };
        if !idle {
            guard.set_clean(false);
            return;
        }
        if self.mode == PoolMode::Session {
            let query = self.shared.config.load().server_reset_query.clone();
            tokio::spawn(reset_and_return(guard, query));
        }
    }
}

/// Session mode: runs the reset query, then returns the server clean, or
/// closes it if the reset failed.
async fn reset_and_return(mut guard: ServerGuard, query: String) {
    guard.set_clean(false);
    if query.trim().is_empty() {
        guard.set_clean(true);
        return;
    }
    let conn = guard.conn();
    let ok = matches!(tokio::time::timeout(Duration::from_secs(10), conn.run_own_query(&query)).await, Ok(Ok(None)));
    if ok && conn.tx_status == TxStatus::Idle {
        // DISCARD ALL resets every parameter pgbalancer had set.
        conn.applied.clear();
        guard.set_clean(true);
    }
}

/// Takes a server from the pool and gives it this client's parameters.
pub async fn link_server(
    pool: &Arc<Pool>,
    params: &mut ClientParams,
    wait: Duration,
) -> Result<ServerGuard, LinkError> {
    let mut guard = pool.acquire(wait).await?;
    let conn = guard.conn();
    if let Some(sql) = params.sync_sql(conn) {
        guard.set_clean(false);
        let conn = guard.conn();
        if let Some(err) = conn.run_own_query(&sql).await? {
            return Err(LinkError::Params(err));
        }
        guard.set_clean(true);
    }
    params.synced(guard.conn());
    Ok(guard)
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("{}", .0.message.as_deref().unwrap_or("parameter rejected"))]
    Params(read::ErrorFields),
}

/// The SQLSTATE and message a client gets when no server could be linked.
pub fn link_error_message(e: &LinkError) -> (&'static str, String) {
    match e {
        LinkError::Pool(PoolError::WaitTimeout) => (sqlstate::PROTOCOL_VIOLATION, "query_wait_timeout".to_owned()),
        LinkError::Pool(PoolError::Closed) => (sqlstate::ADMIN_SHUTDOWN, "pgbalancer is shutting down".to_owned()),
        LinkError::Pool(PoolError::Server(ServerError::Rejected(f))) | LinkError::Params(f) => {
            let code = match f.code.as_deref() {
                Some(c) if c.len() == 5 => sqlstate_static(c),
                _ => sqlstate::CONNECTION_FAILURE,
            };
            (code, f.message.clone().unwrap_or_else(|| "server rejected the connection".to_owned()))
        }
        LinkError::Pool(PoolError::Server(e)) | LinkError::Server(e) => {
            (sqlstate::CONNECTION_FAILURE, format!("pgbalancer: cannot use server connection: {e}"))
        }
    }
}

/// Keeps common server SQLSTATEs as they are; others become a generic one.
fn sqlstate_static(code: &str) -> &'static str {
    const KNOWN: [&str; 8] = ["28P01", "28000", "3D000", "42704", "22023", "53300", "57P03", "42501"];
    KNOWN.iter().copied().find(|k| *k == code).unwrap_or(sqlstate::CONNECTION_FAILURE)
}

/// Sleeps for `d`; zero means forever (the timeout is off).
pub async fn sleep_unless_zero(d: Duration) {
    if d.is_zero() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(d).await;
}
