//! The session loop after login: frames client messages and forwards them
//! to a server connection taken from the pool, streams the server's answers
//! back, and decides when the server goes back to the pool.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgbalancer_config::PoolMode;
use tokio::sync::watch;

use super::conn::ClientConn;
use super::params::ClientParams;
use super::rewrite::{self, Answer, Batch, Handled, Note, Reply, Rewriter};
use super::route::{Commit, Need, Router};
use crate::cancel::{CancelTarget, Registration};
use crate::clients::ClientHandle;
use crate::error::{ClientError, Error, PoolError, ServerError};
use crate::pool::{Pool, ServerGuard};
use crate::prepared::{names_reserved, ClientStatements};
use crate::protocol::flow::{Flow, Outcome};
use crate::protocol::frame::{self, FrameError, HEADER_LEN};
use crate::protocol::{be, fe, read, sqlstate, write, TxStatus};
use crate::server::{ServerConn, ServerEvent};
use crate::sql::command_words;
use crate::sql::session::{session_effects, PinReason, SessionEffects};
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
    pub(super) flow: Flow<Note>,
    /// The client sent Terminate while replies were owed: answer them, then
    /// close.
    terminating: bool,
    /// Bytes still missing from the message at the head of the client buffer.
    read_hint: usize,
    /// Transaction/statement mode with `max_prepared_statements` > 0:
    /// statement names are mapped (fixed for the session's life).
    pub(super) rewrite: bool,
    /// The client's protocol-level statements (when `rewrite`).
    pub(super) statements: ClientStatements,
    /// Transaction/statement mode: why the client keeps its server.
    pub(super) pin: Option<PinReason>,
    /// Settings the client changed on its current server, read back before
    /// the server is released.
    capture: Vec<String>,
    /// Something pinned the client that `DISCARD ALL` cannot undo (`LOAD`):
    /// its server is closed when it leaves.
    close_on_leave: bool,
    /// The client settings a prepared statement's meaning depends on
    /// (client_encoding, standard_conforming_strings): part of its key.
    variant: Vec<u8>,
    /// Reused buffers: a rewritten client batch, and server output being
    /// edited on its way to the client.
    send_buf: BytesMut,
    recv_buf: BytesMut,
    /// Read/write routing (transaction and statement mode, more than one
    /// node); None otherwise.
    pub(super) router: Option<Box<Router>>,
    /// A batch that needs the primary waits until the read batch the
    /// client holds a replica for has finished.
    pub(super) hold: bool,
    /// This client in the list of clients (`SHOW CLIENTS`).
    pub(super) entry: ClientHandle,
    /// When the client took the server it holds.
    linked_at: Option<std::time::Instant>,
    /// Bytes forwarded since the last release (added to the process
    /// counters then, not per message).
    sent: u64,
    received: u64,
    /// The config as of `config_generation` (see [`Session::config`]).
    config: Arc<pgbalancer_config::Config>,
    config_generation: u64,
    /// Server wake-ups in a row (up to [`SERVER_STREAK_MAX`]).
    server_streak: u8,
}

/// After this many server wake-ups in a row the client is read first.
const SERVER_STREAK_MAX: u8 = 16;

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
        mut link: Link,
        cancel: Registration,
        entry: ClientHandle,
    ) -> Session {
        let mut linked_at = None;
        if let Link::Linked(g) = &mut link {
            let node = g.pool().key.backend;
            entry.linked(node, g.conn().backend_pid);
            linked_at = Some(std::time::Instant::now());
        }
        let config_generation = shared.config_generation.load(Ordering::Acquire);
        let config = shared.config.load_full();
        let (mode, max_prepared) = (config.pool_mode, config.max_prepared_statements);
        let phase = shared.phase.clone();
        let router = (mode != PoolMode::Session && shared.topology.routed()).then(|| {
            let mut pools = vec![None; shared.topology.nodes().len()];
            pools[pool.key.backend] = Some(pool.clone());
            Box::new(Router { pools, ..Router::default() })
        });
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
            rewrite: mode != PoolMode::Session && max_prepared > 0,
            statements: ClientStatements::default(),
            pin: None,
            capture: Vec::new(),
            close_on_leave: false,
            variant: Vec::new(),
            send_buf: BytesMut::new(),
            recv_buf: BytesMut::new(),
            router,
            hold: false,
            entry,
            linked_at,
            sent: 0,
            received: 0,
            config,
            config_generation,
            server_streak: 0,
        }
    }

    /// The current config: the session's own copy, renewed when a reload
    /// has stored a new one (one atomic load per use instead of an
    /// `ArcSwap` load).
    pub(super) fn config(&mut self) -> &pgbalancer_config::Config {
        let generation = self.shared.config_generation.load(Ordering::Acquire);
        if generation != self.config_generation {
            self.config = self.shared.config.load_full();
            self.config_generation = generation;
        }
        &self.config
    }

    /// Runs the session to its end and leaves the server connection (if
    /// any) clean or closed.
    // Not an `async fn`: that would keep the session twice in the future
    // (argument slot and local), and every idle client carries this future.
    #[allow(clippy::manual_async_fn)]
    pub fn run(mut self) -> impl std::future::Future<Output = Result<Exit, Error>> {
        async move {
            let result = self.main_loop().await;
            if let Err(e) = &result {
                tracing::debug!(peer = %self.client.peer, user = %self.user, error = %e, "session ended with error");
            }
            self.finish().await;
            result
        }
    }

    async fn main_loop(&mut self) -> Result<Exit, Error> {
        // Woken when the proxy's phase changes; one registration kept across
        // iterations (not a new waiter on a shared channel per wake-up).
        let entry = self.entry.entry();
        let mut stop = std::pin::pin!(entry.stop.notified());
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
            } else if !self.client.read_buf.is_empty() && !self.holding() {
                if let Some(exit) = self.forward_client().await? {
                    return Ok(exit);
                }
            }
            let holding = self.holding();
            let waiting_on_client = self.flow.owes_nothing() && !self.flow.in_copy_in();
            let tx = match &mut self.link {
                Link::Linked(g) => g.conn().tx_status,
                Link::Idle => self.unlinked_status(),
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
                let waiting = waiting_on_client && !self.terminating;
                let cfg = self.config();
                match (waiting, tx) {
                    (false, _) => Duration::ZERO,
                    (true, TxStatus::Idle) => cfg.client_idle_timeout,
                    (true, _) => cfg.idle_transaction_timeout,
                }
            };
            let wake = {
                let Session { client, link, read_hint, server_streak, .. } = self;
                let client_read = async {
                    if holding {
                        // Leave the client's bytes in its socket meanwhile.
                        std::future::pending().await
                    } else {
                        client.fill(*read_hint).await
                    }
                };
                let server_read = async {
                    match link {
                        Link::Linked(g) => g.conn().fill().await,
                        Link::Idle => std::future::pending().await,
                    }
                };
                let sleep = sleep_unless_zero(timeout);
                // Biased: no random start per wake-up; what the server sent
                // goes out first, then the client's next messages — except
                // after a long run of server wake-ups (a NOTIFY flood), when
                // the client goes first once, so it is never starved.
                if *server_streak >= SERVER_STREAK_MAX {
                    tokio::select! {
                        biased;
                        r = client_read => Wake::Client(r),
                        r = server_read => Wake::Server(r),
                        _ = stop.as_mut() => Wake::Phase,
                        _ = sleep => Wake::Timeout,
                    }
                } else {
                    tokio::select! {
                        biased;
                        r = server_read => Wake::Server(r),
                        r = client_read => Wake::Client(r),
                        _ = stop.as_mut() => Wake::Phase,
                        _ = sleep => Wake::Timeout,
                    }
                }
            };
            self.server_streak = match wake {
                Wake::Server(_) => (self.server_streak + 1).min(SERVER_STREAK_MAX),
                _ => 0,
            };
            match wake {
                Wake::Phase => stop.set(entry.stop.notified()),
                Wake::Client(Ok(())) => {}
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
        let large = self.config().max_message_size.bytes() as usize;
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
            end += h.total_len;
        }
        if end > 0 && self.must_hold(end) {
            self.hold = true;
            return Ok(None);
        }
        if end > 0 {
            let batch = self.client.read_buf.split_to(end);
            self.client.shrink_if_drained();
            if let Err(exit) = self.send_batch(&batch).await? {
                return Ok(Some(exit));
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

    /// Sends complete client messages to the server: records each in the
    /// flow, rewrites statement names, notes session state, and answers what
    /// pgbalancer answers itself.
    async fn send_batch(&mut self, src: &[u8]) -> Result<Result<(), Exit>, Error> {
        let (log_statement, cap) = {
            let c = self.config();
            (c.log_statement, c.max_prepared_statements as usize)
        };
        let pooled = self.mode != PoolMode::Session;
        let mut need = Need::Primary;
        if matches!(self.link, Link::Idle) && self.router.is_some() {
            match self.route_idle_batch(src).await? {
                super::route::Routed::Answered => return Ok(Ok(())),
                super::route::Routed::Need(n) => need = n,
            }
        }
        let mut out = std::mem::take(&mut self.send_buf);
        let mut batch = Batch::new(src, &mut out);
        let mut off = 0;
        while let Ok(Some(h)) = frame::peek_header(&src[off..], usize::MAX) {
            let (at, fin, tag) = (off, off + h.total_len, h.tag);
            off = fin;
            let body = &src[at + HEADER_LEN..fin];
            let mut query_note = Note::Plain;
            let mut clears = false;
            if tag == fe::QUERY {
                let text = read::query_text(body).unwrap_or("");
                if log_statement {
                    tracing::info!(user = %self.user, database = %self.database, "statement: {text}");
                }
                if pooled {
                    let fx = session_effects(text);
                    if !fx.is_none() {
                        if let Some(name) = self.deallocates(&fx) {
                            batch.replace(at, fin);
                            self.flow.answered(fe::QUERY, Note::Answer(Answer::Deallocate { name }));
                            continue;
                        }
                        self.note_effects(&fx);
                        clears = fx.discard_all || fx.deallocate_all;
                        let mark = self.statements.mark();
                        if fx.discard_all && is_lone_discard_all(text) {
                            query_note = Note::Discard(mark);
                        } else if clears {
                            query_note = Note::DropStatements(mark);
                        }
                    }
                    if self.rewrite && names_reserved(text) {
                        self.pin_to_server(PinReason::ReservedName);
                    }
                }
            } else if pooled && matches!(tag, fe::PARSE | fe::BIND) {
                self.note_statement_effects(tag, body);
            }
            if self.rewrite && tag == fe::CLOSE && rewrite::closes_known(&self.statements, body) {
                rewrite::close(&mut self.statements, &mut self.flow, &mut batch, at, fin);
                continue;
            }
            if let Err(exit) = self.ensure_linked(need).await? {
                return Ok(Err(exit));
            }
            let Link::Linked(guard) = &mut self.link else { unreachable!("linked just now") };
            let conn = guard.conn();
            if self.rewrite && tag == fe::PARSE {
                self.variant.clear();
                for name in ["client_encoding", "standard_conforming_strings"] {
                    self.variant.extend_from_slice(self.params.get(name).unwrap_or("").as_bytes());
                    self.variant.push(0);
                }
            }
            let handled = if self.rewrite && matches!(tag, fe::PARSE | fe::BIND | fe::DESCRIBE | fe::SYNC) {
                let mut rw = Rewriter {
                    registry: &self.shared.statements,
                    variant: &self.variant,
                    client: &mut self.statements,
                    server: &mut conn.statements,
                    flow: &mut self.flow,
                    cap,
                };
                rw.frame(&mut batch, tag, at, fin)
            } else {
                Handled::AsIs
            };
            match handled {
                Handled::AsIs => self.flow.client_noted(tag, query_note),
                Handled::Done => {}
            }
            if clears {
                // Whether or not it succeeds: a statement the list lacks is
                // just prepared again (after a Close).
                conn.statements.clear();
            }
        }
        let rewritten = batch.finish();
        let bytes = if rewritten { &out[..] } else { src };
        let result = self.write_to_server(bytes).await;
        self.sent += bytes.len() as u64;
        out.clear();
        self.send_buf = out;
        result?;
        self.send_due_answers().await?;
        Ok(Ok(()))
    }

    /// Writes a batch to the linked server, forwarding what it answers
    /// meanwhile (so neither side can block the other).
    async fn write_to_server(&mut self, bytes: &[u8]) -> Result<(), Error> {
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
        Ok(())
    }

    /// Sends the answers pgbalancer owes the client that are due now
    /// (nothing of the server's is owed before them).
    async fn send_due_answers(&mut self) -> Result<(), Error> {
        let tx = match &mut self.link {
            Link::Linked(g) => {
                let c = g.conn();
                if c.mid_message() {
                    return Ok(());
                }
                c.tx_status
            }
            Link::Idle => self.unlinked_status(),
        };
        if !self.flow.answer_due() {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.recv_buf);
        answer_due(&mut self.flow, &mut self.statements, &mut out, tx);
        let r = self.client.write_all(&out).await;
        out.clear();
        self.recv_buf = out;
        r.map_err(Error::from)
    }

    /// `DEALLOCATE name` (alone in its Query) of a statement this client
    /// prepared by protocol: pgbalancer answers it when it comes due, as
    /// PostgreSQL would at that point (see `answer_due`).
    fn deallocates(&mut self, fx: &SessionEffects) -> Option<Box<[u8]>> {
        let name = fx.deallocate.as_deref()?;
        (self.rewrite && self.statements.contains(name.as_bytes())).then(|| name.as_bytes().into())
    }

    /// Acts on what a statement does to session state: pins and settings
    /// to read back.
    fn note_effects(&mut self, fx: &SessionEffects) {
        if let Some(reason) = fx.pin {
            self.pin_to_server(reason);
        }
        for name in &fx.settings {
            if UNREPLAYABLE.contains(&name.as_str()) {
                self.pin_to_server(PinReason::Unreplayable);
                continue;
            }
            if !self.capture.iter().any(|n| n == name) {
                self.capture.push(name.clone());
            }
        }
    }

    /// Parse and Bind: the session state their statement creates.
    fn note_statement_effects(&mut self, tag: u8, body: &[u8]) {
        if tag == fe::PARSE {
            let Some((name, rest)) = read::parse(body) else { return };
            if !name.is_empty() && !self.rewrite {
                // Without mapping, a named statement stays on the server.
                self.pin_to_server(PinReason::NamedStatement);
            }
            let text = read::parse_query(rest).unwrap_or("");
            let fx = session_effects(text);
            if !fx.is_none() {
                self.note_effects(&fx);
            }
            if self.rewrite && names_reserved(text) {
                self.pin_to_server(PinReason::ReservedName);
            }
        } else if let Some((_, name, _)) = read::bind(body) {
            let stmt = match self.statements.get(name) {
                Some(s) if !s.effects.is_none() => s.clone(),
                _ => return,
            };
            self.note_effects(&stmt.effects);
        }
    }

    fn pin_to_server(&mut self, reason: PinReason) {
        if reason == PinReason::Load {
            self.close_on_leave = true;
        }
        if self.pin.is_none() {
            self.shared.stats.pinned_clients.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(user = %self.user, database = %self.database, ?reason, "client pinned to its server");
        }
        self.pin = Some(reason);
    }

    fn unpin(&mut self) {
        if self.pin.take().is_some() {
            self.shared.stats.pinned_clients.fetch_sub(1, Ordering::Relaxed);
        }
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
    async fn ensure_linked(&mut self, need: Need) -> Result<Result<(), Exit>, Error> {
        if !matches!(self.link, Link::Idle) {
            return Ok(Ok(()));
        }
        if self.shared.pause.is_paused() {
            self.entry.waiting();
            if let Err(exit) = self.wait_resumed().await {
                return Ok(Err(exit));
            }
        }
        if self.router.is_some() {
            if let Err(exit) = self.link_routed(need).await {
                return Ok(Err(exit));
            }
            if let Err(e) = self.run_deferred_begin().await {
                self.server_lost().await;
                return Err(e);
            }
            return Ok(Ok(()));
        }
        {
            let wait = self.config().query_wait_timeout;
            self.entry.waiting();
            match link_server(&self.pool, &mut self.params, wait).await {
                Ok(mut guard) => {
                    let c = guard.conn();
                    self.cancel.slot.set(CancelTarget { addr: c.addr, pid: c.backend_pid, key: c.backend_key });
                    let (node, pid, at) = (self.pool.key.backend, c.backend_pid, c.last_used);
                    self.linked(node, pid, at);
                    self.link = Link::Linked(guard);
                }
                Err(e) => {
                    let (code, msg) = link_error_message(&e);
                    self.client.fatal(code, &msg).await;
                    return Ok(Err(Exit::Closed));
                }
            }
        }
        Ok(Ok(()))
    }

    /// The client now holds a server of `node` since `at`: the server's
    /// `last_used`, set when the pool handed it out (or after a fresh login,
    /// a parameter sync or a recovery check), so only the client's own work
    /// is timed, with no second clock read.
    pub(super) fn linked(&mut self, node: usize, pid: i32, at: std::time::Instant) {
        self.entry.linked(node, pid);
        self.linked_at = Some(at);
    }

    /// Adds the bytes forwarded since the last call to the process counters.
    fn count_traffic(&mut self) {
        let t = &self.shared.traffic;
        t.client_bytes.fetch_add(std::mem::take(&mut self.sent), Ordering::Relaxed);
        t.server_bytes.fetch_add(std::mem::take(&mut self.received), Ordering::Relaxed);
    }

    /// PAUSE: a new transaction waits for RESUME (or the end).
    async fn wait_resumed(&mut self) -> Result<(), Exit> {
        let shared = self.shared.clone();
        tokio::select! {
            _ = shared.pause.wait_resumed() => Ok(()),
            _ = async { self.phase.wait_for(|p| *p == Phase::Stopping).await.is_ok() } => {
                self.client
                    .fatal(sqlstate::ADMIN_SHUTDOWN, "terminating connection: pgbalancer is shutting down")
                    .await;
                Err(Exit::Closed)
            }
        }
    }

    /// Streams what the server sent to the client, in one write, and
    /// returns the server to the pool at the end of a transaction.
    async fn forward_server(&mut self) -> Result<(), Error> {
        let Link::Linked(guard) = &mut self.link else { return Ok(()) };
        let conn = guard.conn();
        let mut out = std::mem::take(&mut self.recv_buf);
        let mut edit = Edit { out: &mut out, copied: 0, edited: false };
        let mut pos = 0;
        let mut release = Release::Keep;
        let mut discarded = None;
        loop {
            let (end, event) = match conn.scan(pos, &mut self.flow) {
                Ok(r) => r,
                Err(e) => {
                    self.recv_buf = out;
                    self.server_lost().await;
                    return Err(e.into());
                }
            };
            pos = end;
            let Some(event) = event else { break };
            let mut reply = Reply::Forward;
            while let Some((outcome, note)) = self.flow.take_ended() {
                if let Note::Discard(mark) = note {
                    if outcome == Outcome::Done {
                        discarded = Some(mark);
                    }
                    continue;
                }
                let error = match event {
                    ServerEvent::Ended { start } if outcome == Outcome::Failed => Some(error_at(conn, start..pos)),
                    _ => None,
                };
                let registry = &self.shared.statements;
                match rewrite::ended(
                    outcome,
                    note,
                    error.as_ref(),
                    &mut self.statements,
                    &mut conn.statements,
                    registry,
                ) {
                    Reply::Forward => {}
                    r => reply = r,
                }
            }
            match event {
                ServerEvent::ParameterChanged => {
                    if let Some(name) = conn.last_changed.take() {
                        if let Some(value) = conn.param(&name) {
                            let value = value.to_owned();
                            self.params.observe(&name, &value);
                            self.params.record_on(conn);
                        }
                    }
                }
                ServerEvent::Ended { start } => match reply {
                    Reply::Forward => {}
                    Reply::Hide => edit.cut(conn, start, pos),
                    Reply::Replace(answer) => {
                        edit.cut(conn, start, pos);
                        answer.write(edit.out, conn.tx_status);
                    }
                },
                ServerEvent::AnswerDue => {
                    edit.cut(conn, pos, pos);
                    answer_due(&mut self.flow, &mut self.statements, edit.out, conn.tx_status);
                }
                ServerEvent::ReadyForQuery(status) => {
                    if let Some(mark) = discarded.take().filter(|_| status == TxStatus::Idle) {
                        // DISCARD ALL: the server is back to its login state
                        // and the client's statements made before it are gone.
                        conn.applied.clear();
                        conn.statements.clear();
                        self.statements.clear_before(mark);
                        // With nothing sent after it, nothing of the client's
                        // is left: unpin, settings back to startup.
                        if self.flow.owes_nothing() && !self.close_on_leave {
                            if self.pin.take().is_some() {
                                self.shared.stats.pinned_clients.fetch_sub(1, Ordering::Relaxed);
                            }
                            self.capture.clear();
                            self.params.restore_startup();
                        }
                    }
                    if self.mode == PoolMode::Session || self.pin.is_some() || !self.flow.is_settled() {
                        continue;
                    }
                    if status == TxStatus::Idle {
                        release = Release::Now;
                        break;
                    }
                    if self.mode == PoolMode::Statement {
                        // Hold back this ReadyForQuery: the transaction is
                        // rolled back and refused below.
                        edit.cut(conn, pos - READY_FOR_QUERY_LEN, pos);
                        release = Release::RefuseTransaction;
                        break;
                    }
                }
            }
        }
        let mut bytes = Some(conn.take(pos));
        let taken = bytes.as_deref().unwrap_or_default();
        let edited = edit.finish(taken);
        // Counted before a release adds the counts up, so a transaction's
        // last answer is in the totals when it ends.
        let forwarded = if edited { out.len() } else { taken.len() };
        self.received += forwarded as u64;
        // Whether what goes to the client is in `out` (else in `bytes`, from
        // `skip` on).
        let mut from_out = edited;
        let mut skip = 0;
        if release != Release::Keep {
            // The server goes back before the client's write is waited for,
            // so a slow client never holds it; and its read buffer must not
            // be shared by then (its next user would allocate a new one).
            // What the client's socket takes at once is written now; a
            // small rest is copied out; a large one keeps sharing.
            if !edited {
                skip = self.client.write_now(taken);
                if taken.len() - skip <= COPY_BEFORE_RELEASE {
                    out.extend_from_slice(&taken[skip..]);
                    from_out = true;
                }
            }
            if from_out {
                bytes = None;
            }
            self.release(release, &mut out).await;
        } else if self.flow.is_settled() && self.tx_status() == TxStatus::Idle {
            if let Link::Linked(g) = &mut self.link {
                g.set_clean(true);
            }
        }
        let r = match bytes.as_deref() {
            Some(b) if !from_out => self.client.write_all(&b[skip..]).await,
            _ if out.is_empty() => Ok(()),
            _ => self.client.write_all(&out).await,
        };
        out.clear();
        // An idle client keeps no large buffer.
        if out.capacity() > RECV_BUF_KEEP {
            out = BytesMut::new();
        }
        self.recv_buf = out;
        r.map_err(Error::from)
    }

    /// The transaction status of the linked server (see `unlinked_status`
    /// when none).
    fn tx_status(&mut self) -> TxStatus {
        match &mut self.link {
            Link::Linked(g) => g.conn().tx_status,
            Link::Idle => self.unlinked_status(),
        }
    }

    /// The client's transaction status while it holds no server: idle,
    /// unless its `BEGIN` is held back (`transaction_routing:
    /// first_statement`).
    fn unlinked_status(&self) -> TxStatus {
        match &self.router {
            Some(r) if r.deferred_begin.is_some() => TxStatus::InTransaction,
            _ => TxStatus::Idle,
        }
    }

    /// Gives the server back at the end of a transaction: reads back the
    /// settings the client changed, and in statement mode first rolls back
    /// a transaction the client opened (telling it so in `out`).
    async fn release(&mut self, how: Release, out: &mut BytesMut) {
        let Link::Linked(mut guard) = std::mem::replace(&mut self.link, Link::Idle) else { return };
        let conn = guard.conn();
        // Anything after the last ReadyForQuery is unexpected: do not hand
        // that connection to anyone else.
        let mut clean = conn.buffered() == 0;
        if how == Release::RefuseTransaction {
            let failed = conn.tx_status == TxStatus::Failed;
            clean = clean
                && matches!(Box::pin(conn.run_own_query("ROLLBACK")).await, Ok(None))
                && conn.tx_status == TxStatus::Idle;
            // A failed transaction already carried its error to the client;
            // one ErrorResponse per query, as PostgreSQL sends.
            if !failed {
                write::error_response(
                    out,
                    write::Severity::Error,
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "transaction blocks are not allowed in statement pooling mode",
                );
            }
            write::ready_for_query(out, TxStatus::Idle);
        }
        if clean && !self.capture.is_empty() {
            clean = Box::pin(capture_settings(conn, &mut self.params, &self.capture)).await;
            self.capture.clear();
        }
        let mut commit = Commit::NotRead;
        if self.wants_commit_lsn() {
            commit = Commit::Unknown;
            if clean {
                let conn = guard.conn();
                match Box::pin(conn.query_row("SELECT pg_catalog.pg_current_wal_insert_lsn()")).await {
                    Ok(Ok(row)) => {
                        if let Some(lsn) =
                            row.first().and_then(|v| v.as_deref()).and_then(crate::topology::health::parse_lsn)
                        {
                            commit = Commit::At(lsn);
                        }
                    }
                    _ => clean = false,
                }
            }
        }
        guard.set_clean(clean);
        self.cancel.slot.clear().await;
        let node = guard.pool().key.backend;
        drop(guard);
        self.entry.released();
        let took = self.linked_at.take().map(|t| t.elapsed());
        if let (Some(took), Some(n)) = (took, self.shared.topology.node(node)) {
            n.transactions.observe(took);
        }
        self.count_traffic();
        self.end_exchange(commit, clean, took);
        self.shared.stats.transactions.fetch_add(1, Ordering::Relaxed);
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
            let (end, _) = conn.scan(0, &mut Flow::<()>::default()).unwrap_or((0, None));
            let bytes = conn.take(end);
            mid_message = conn.mid_message();
            drop(guard);
            self.entry.released();
            self.linked_at = None;
            self.end_exchange(Commit::Unknown, false, None);
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
        self.end_exchange(Commit::NotRead, false, None);
        self.count_traffic();
        let Link::Linked(mut guard) = std::mem::replace(&mut self.link, Link::Idle) else { return };
        self.cancel.slot.clear_now();
        let idle = {
            let c = guard.conn();
            self.flow.is_settled() && c.tx_status == TxStatus::Idle && c.buffered() == 0
        };
        let pinned = self.pin.is_some();
        self.unpin();
        // Settings changed but not read back would stay for the next client.
        if !idle || self.close_on_leave || (!pinned && !self.capture.is_empty()) {
            guard.set_clean(false);
            return;
        }
        if self.mode == PoolMode::Session {
            let query = self.shared.config.load().server_reset_query.clone();
            tokio::spawn(reset_and_return(guard, query));
        } else if pinned {
            // Whatever pinned the client (temp tables, locks, LISTEN …) goes
            // with DISCARD ALL, whatever server_reset_query says.
            tokio::spawn(reset_and_return(guard, "DISCARD ALL".to_owned()));
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
        // DISCARD ALL resets every parameter pgbalancer had set, and drops
        // the prepared statements.
        conn.applied.clear();
        conn.statements.clear();
        guard.set_clean(true);
    }
}

/// How a server goes back at a ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    Keep,
    Now,
    /// Statement mode: a transaction was left open.
    RefuseTransaction,
}

/// Server output on its way to the client, with some messages cut out or
/// answers put in: built in `out` only once something changes.
/// What the client's socket did not take of an answer is copied out of the
/// server's buffer before the server is released when it is at most this
/// large (larger rests keep sharing it).
const COPY_BEFORE_RELEASE: usize = 64 * 1024;

/// The most a session keeps of its buffer for server output between
/// answers.
const RECV_BUF_KEEP: usize = 8 * 1024;

struct Edit<'a> {
    out: &'a mut BytesMut,
    /// Scanned bytes up to here are in `out` or cut.
    copied: usize,
    edited: bool,
}

impl Edit<'_> {
    /// Cuts `start..end` of the scanned bytes (an empty range marks where
    /// the caller inserts into `out`).
    fn cut(&mut self, conn: &ServerConn, start: usize, end: usize) {
        self.out.extend_from_slice(conn.buffered_bytes(self.copied..start));
        self.copied = end;
        self.edited = true;
    }

    /// Completes `out` with the rest of `taken` (the scanned bytes); true
    /// when `out` holds what goes to the client.
    fn finish(&mut self, taken: &[u8]) -> bool {
        if self.edited {
            self.out.extend_from_slice(&taken[self.copied..]);
        }
        self.edited
    }
}

/// The fields of the ErrorResponse at `range` of the scanned bytes.
fn error_at(conn: &ServerConn, range: std::ops::Range<usize>) -> read::ErrorFields {
    let bytes = conn.buffered_bytes(range);
    if bytes.first() == Some(&be::ERROR_RESPONSE) && bytes.len() >= HEADER_LEN {
        read::ErrorFields::parse(&bytes[HEADER_LEN..])
    } else {
        read::ErrorFields::default()
    }
}

/// Reads back the settings a client changed and records them as the
/// client's. False when the server could not answer (it is then closed).
async fn capture_settings(conn: &mut ServerConn, params: &mut ClientParams, names: &[String]) -> bool {
    let mut sql = String::from("SELECT ");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("pg_catalog.current_setting(");
        super::params::push_literal(&mut sql, name);
        sql.push_str(",true)");
    }
    match conn.query_row(&sql).await {
        Ok(Ok(values)) if values.len() == names.len() && conn.tx_status == TxStatus::Idle => {
            for (name, value) in names.iter().zip(&values) {
                params.capture(name, value.as_deref());
            }
            params.record_on(conn);
            true
        }
        _ => false,
    }
}

/// Length of a ReadyForQuery message.
const READY_FOR_QUERY_LEN: usize = 6;

/// Settings whose value cannot be read back and set again: changing them
/// pins the client instead.
pub(super) const UNREPLAYABLE: [&str; 1] = ["seed"];

/// Writes the answers pgbalancer owes that are now due, `tx` being the
/// transaction status to report.
fn answer_due(flow: &mut Flow<Note>, statements: &mut ClientStatements, out: &mut BytesMut, tx: TxStatus) {
    while let Some(note) = flow.take_answer() {
        let Note::Answer(a) = note else { continue };
        if let Answer::Deallocate { name } = &a {
            // In a failed transaction PostgreSQL refuses it (and so do we).
            if tx != TxStatus::Failed {
                statements.remove(name);
            }
        }
        a.write(out, tx);
    }
}

/// A Query that is exactly `DISCARD ALL` (one statement).
fn is_lone_discard_all(text: &str) -> bool {
    let mut words = command_words(text);
    matches!((words.next(), words.next(), words.next()), (Some(a), Some(b), None)
        if a.eq_ignore_ascii_case("discard") && b.eq_ignore_ascii_case("all"))
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
        // Boxed (like the other rare own queries below) so the common path's
        // future, which every idle client carries, stays small.
        if let Some(err) = Box::pin(conn.run_own_query(&sql)).await? {
            return Err(LinkError::Params(err));
        }
        guard.set_clean(true);
        // The client's transaction time starts after the sync.
        guard.conn().last_used = std::time::Instant::now();
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
