//! Read/write routing of one transaction-mode session: what a batch of
//! client messages needs (the primary, or any node that takes reads), and
//! the session's routing state (pools per node, read-your-writes marks,
//! the transaction in flight).
//!
//! A batch is routed when the client holds no server. It may go to a read
//! node only if every statement in it is provably read-only and it is
//! complete (ends with Sync or a Query), so an implicit transaction never
//! spans nodes. While a read batch runs, a batch that needs the primary
//! waits for it to finish (see `Session::holding`).

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use pgbalancer_config::{LoadBalanceMode, ReadYourWrites, TransactionRouting};

use super::session::{link_error_message, link_server, Exit, Link, Session, UNREPLAYABLE};
use crate::cancel::CancelTarget;
use crate::error::{Error, PoolError, ServerError};
use crate::pool::{Pool, PoolKey};
use crate::prepared::{names_reserved, ClientStatements};
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::{fe, read};
use crate::protocol::{sqlstate, write, TxStatus};
use crate::sql::classify::{Class, Classifier};
use crate::sql::command_words;
use crate::sql::session::session_effects;
use crate::topology::{InFlight, NoNode, Primary};

/// Where a batch may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Writes, transaction control, anything uncertain.
    Primary,
    /// Provably read-only.
    Read,
    /// Touches no data (`SET`, `SHOW`, a lone Sync): the primary when
    /// there is one, else any node.
    Any,
}

impl Need {
    fn and(self, other: Need) -> Need {
        match (self, other) {
            (Need::Primary, _) | (_, Need::Primary) => Need::Primary,
            (Need::Read, _) | (_, Need::Read) => Need::Read,
            _ => Need::Any,
        }
    }
}

/// A role forced by a hint: a `/* pgbalancer: primary|replica */` comment
/// or the session setting `pgbalancer.role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Primary,
    Replica,
}

/// The session setting that forces a role (`SET pgbalancer.role = ...`,
/// or `-c pgbalancer.role=...` in the startup options).
pub const ROLE_SETTING: &str = "pgbalancer.role";

/// `primary` / `replica` (or `standby`) as a hint; `auto` or anything else
/// is none.
pub fn hint_word(word: &str) -> Option<Hint> {
    let w = word.trim().trim_matches(['\'', '"']);
    if w.eq_ignore_ascii_case("primary") {
        Some(Hint::Primary)
    } else if w.eq_ignore_ascii_case("replica") || w.eq_ignore_ascii_case("standby") {
        Some(Hint::Replica)
    } else {
        None
    }
}

/// The hint of a `/* pgbalancer: primary */` comment at the start of
/// `text` (among its leading comments), if any. Only leading comments
/// count: a hint-like string inside a literal must not move a statement.
pub fn comment_hint(text: &str) -> Option<Hint> {
    const TAG: &[u8] = b"pgbalancer:";
    let mut rest = text.trim_start();
    loop {
        if let Some(line) = rest.strip_prefix("--") {
            rest = line.find('\n').map_or("", |n| &line[n + 1..]).trim_start();
            continue;
        }
        let body = rest.strip_prefix("/*")?;
        let end = body.find("*/")?;
        let inner = body[..end].trim();
        if inner.len() >= TAG.len() && inner.as_bytes()[..TAG.len()].eq_ignore_ascii_case(TAG) {
            return hint_word(&inner[TAG.len()..]);
        }
        rest = body[end + 2..].trim_start();
    }
}

/// What one statement text needs. `rewrite`: statement names are mapped
/// (a mention of pgbalancer's reserved names pins the client).
pub fn text_need(text: &str, classifier: &Classifier, rewrite: bool) -> Need {
    let t = text.trim_start();
    if t.starts_with("/*") || t.starts_with("--") {
        match comment_hint(text) {
            Some(Hint::Primary) => return Need::Primary,
            Some(Hint::Replica) => return Need::Read,
            None => {}
        }
    }
    let need = match classifier.classify(text) {
        Class::Read | Class::Begin { read_only: true } | Class::SetTransactionReadOnly => Need::Read,
        Class::Neutral => Need::Any,
        Class::Write | Class::Begin { read_only: false } | Class::Commit => return Need::Primary,
    };
    // Whatever pins the client to its server (SET ROLE, set_config of a
    // role, temp objects, SET seed ...) must happen on the primary: a
    // pinned client stays where it is.
    if pins(text, rewrite) {
        return Need::Primary;
    }
    need
}

/// Whether running `text` pins the client to its server (the rules of
/// `Session::note_effects`).
fn pins(text: &str, rewrite: bool) -> bool {
    let fx = session_effects(text);
    fx.pin.is_some()
        || fx.settings.iter().any(|n| UNREPLAYABLE.contains(&n.as_str()))
        || (rewrite && names_reserved(text))
}

/// What a batch of complete client messages needs. `statements`
/// resolves names of protocol-level statements bound in it; `rewrite`:
/// statement names are mapped (without, a named statement pins).
///
/// A batch that does not end with Sync or a Query needs the primary
/// whatever it holds: the implicit transaction it opens may go on with a
/// write, and the server then waits for more of this client's messages.
pub fn batch_need(src: &[u8], classifier: &Classifier, statements: &ClientStatements, rewrite: bool) -> Need {
    let mut need = Need::Any;
    let mut complete = false;
    let mut off = 0;
    while let Ok(Some(h)) = frame::peek_header(&src[off..], usize::MAX) {
        let body = &src[off + HEADER_LEN..off + h.total_len];
        off += h.total_len;
        complete = false;
        let this = match h.tag {
            fe::QUERY => {
                complete = true;
                text_need(read::query_text(body).unwrap_or(""), classifier, rewrite)
            }
            fe::PARSE => match read::parse(body) {
                Some((name, _)) if !name.is_empty() && !rewrite => Need::Primary,
                Some((_, rest)) => text_need(read::parse_query(rest).unwrap_or(""), classifier, rewrite),
                None => Need::Primary,
            },
            fe::BIND => match read::bind(body) {
                // The unnamed statement lives on the server its Parse went
                // to: with this batch's Parse, or on the server the client
                // still holds.
                Some((_, b"", _)) => Need::Any,
                Some((_, stmt, _)) => match statements.get(stmt) {
                    Some(s) if s.plain_read => Need::Read,
                    Some(s) => text_need(s.query(), classifier, rewrite),
                    None => Need::Primary,
                },
                None => Need::Primary,
            },
            fe::SYNC => {
                complete = true;
                Need::Any
            }
            fe::DESCRIBE | fe::EXECUTE | fe::CLOSE | fe::FLUSH => Need::Any,
            // FunctionCall, COPY data and anything else.
            _ => Need::Primary,
        };
        need = need.and(this);
        if need == Need::Primary {
            return Need::Primary;
        }
    }
    if !complete {
        return Need::Primary;
    }
    need
}

/// A lone plain `BEGIN` that `transaction_routing: first_statement` may
/// hold back until the next statement says where the transaction runs:
/// no access mode, no isolation level, no comment (those go where they
/// say, or to the primary).
pub fn deferrable_begin(text: &str) -> Option<&'static str> {
    let is = |w: &str, k: &str| w.eq_ignore_ascii_case(k);
    let mut words = command_words(text);
    let first = words.next().filter(|w| is(w, "begin") || is(w, "start"))?;
    let second = words.next();
    if words.next().is_some() {
        return None;
    }
    match second {
        None if is(first, "begin") => Some("BEGIN"),
        Some(w) if is(first, "begin") && (is(w, "work") || is(w, "transaction")) => Some("BEGIN"),
        Some(w) if is(first, "start") && is(w, "transaction") => Some("START TRANSACTION"),
        _ => None,
    }
}

/// How a held-back transaction ends when nothing ran in it: the command
/// tag to answer, or None when it must reach a server.
pub fn lone_end_tag(text: &str) -> Option<&'static str> {
    let mut words = command_words(text);
    let (first, second) = (words.next()?, words.next());
    let plain = match second {
        None => true,
        Some(w) => (w.eq_ignore_ascii_case("work") || w.eq_ignore_ascii_case("transaction")) && words.next().is_none(),
    };
    if !plain {
        return None;
    }
    let is = |k: &str| first.eq_ignore_ascii_case(k);
    if is("commit") || is("end") {
        Some("COMMIT")
    } else if is("rollback") || is("abort") {
        Some("ROLLBACK")
    } else {
        None
    }
}

/// The routing state of one session (boxed: only routed sessions have it).
#[derive(Default)]
pub struct Router {
    /// This client's pool on each node, made on first use.
    pub pools: Vec<Option<Arc<Pool>>>,
    /// `load_balance_mode: session`: the read node this session keeps.
    pub sticky: Option<usize>,
    /// `read_your_writes: lsn`: WAL position after the client's last write.
    pub wrote_lsn: u64,
    /// `read_your_writes: primary`: when the client's last write ended.
    pub wrote_at: Option<Instant>,
    /// The transaction in flight, while the client holds a server.
    pub current: Option<Exchange>,
    /// `transaction_routing: first_statement`: the client's `BEGIN`, held
    /// back (the client was told it is in a transaction).
    pub deferred_begin: Option<String>,
    /// `read_your_writes: lsn`: the position of the last write could not be
    /// read; reads go to the primary for `read_your_writes_window`.
    pub lsn_unknown: bool,
}

/// Where the primary's WAL was after a client's transaction there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Not asked (`read_your_writes` is not `lsn`, or not a write).
    NotRead,
    At(u64),
    /// Asked but not known (the query failed, the server is gone).
    Unknown,
}

/// A routed transaction in flight.
pub struct Exchange {
    pub flight: InFlight,
    pub need: Need,
}

impl Exchange {
    pub fn node(&self) -> usize {
        self.flight.node().id
    }
}

/// The text of a batch that is exactly one Query.
fn single_query(src: &[u8]) -> Option<&str> {
    let h = frame::peek_header(src, usize::MAX).ok()??;
    (h.tag == fe::QUERY && h.total_len == src.len()).then(|| read::query_text(&src[HEADER_LEN..]))?
}

/// What routing made of a batch that arrived while the client held no server.
pub(super) enum Routed {
    /// pgbalancer answered it (a held-back `BEGIN`, or its lone `COMMIT`).
    Answered,
    Need(Need),
}

/// The link failed because the node could not be reached (nothing was
/// sent): another node may be tried.
pub(super) fn unreachable(e: &super::session::LinkError) -> bool {
    use super::session::LinkError;
    matches!(
        e,
        LinkError::Pool(PoolError::Server(
            ServerError::Connect { .. } | ServerError::ConnectTimeout(_) | ServerError::LoginRetryWait
        ))
    ) || matches!(e, LinkError::Pool(PoolError::Server(ServerError::Rejected(f)))
        if f.code.as_deref().is_some_and(|c| c.starts_with("57P")))
}

/// Whether the server is a standby. PostgreSQL 14 and later report
/// `in_hot_standby` at login; an idle pooled server may not have reported
/// its promotion yet, so a standby is asked (one round trip, only then).
async fn in_recovery(guard: &mut crate::pool::ServerGuard) -> bool {
    let conn = guard.conn();
    if conn.param("in_hot_standby") != Some("on") {
        return false;
    }
    guard.set_clean(false);
    let conn = guard.conn();
    match conn.query_row("SELECT pg_catalog.pg_is_in_recovery()").await {
        Ok(Ok(row)) if row.first().and_then(|v| v.as_deref()) == Some("f") => {
            guard.set_clean(true);
            // The client's transaction time starts now, not before this check.
            guard.conn().last_used = std::time::Instant::now();
            false
        }
        Ok(Ok(_)) => {
            guard.set_clean(true);
            true
        }
        _ => true,
    }
}

pub(super) fn bit(id: usize) -> u64 {
    if id < 64 {
        1 << id
    } else {
        0
    }
}

impl Session {
    /// Routes a batch that arrived while the client holds no server: may
    /// answer it (`transaction_routing: first_statement`), else says what
    /// it needs.
    pub(super) async fn route_idle_batch(&mut self, src: &[u8]) -> Result<Routed, Error> {
        let classifier = self.shared.classifier.load();
        let first_statement = self.config().transaction_routing == TransactionRouting::FirstStatement;
        let router = self.router.as_mut().expect("routed session");
        if let (Some(text), true) = (single_query(src), self.flow.owes_nothing()) {
            let mut out = BytesMut::new();
            if router.deferred_begin.is_some() {
                if let Some(tag) = lone_end_tag(text) {
                    router.deferred_begin = None;
                    write::command_complete(&mut out, tag);
                    write::ready_for_query(&mut out, TxStatus::Idle);
                }
            } else if let (true, None, Some(tag)) = (first_statement, self.pin, deferrable_begin(text)) {
                router.deferred_begin = Some(text.to_owned());
                write::command_complete(&mut out, tag);
                write::ready_for_query(&mut out, TxStatus::InTransaction);
            }
            if !out.is_empty() {
                self.client.write_all(&out).await?;
                return Ok(Routed::Answered);
            }
        }
        let need = batch_need(src, &classifier, &self.statements, self.rewrite);
        let hint = self.params.get(ROLE_SETTING).and_then(hint_word);
        Ok(Routed::Need(match hint {
            Some(Hint::Primary) => Need::Primary,
            Some(Hint::Replica) => Need::Read,
            None => need,
        }))
    }

    /// A batch must wait: the client holds a node other than the primary
    /// for an implicit transaction that has not ended, and the batch needs
    /// the primary. (Batches that reach such a node are complete, so the
    /// server ends its work without more input from the client.)
    pub(super) fn must_hold(&mut self, end: usize) -> bool {
        let Some(router) = &self.router else { return false };
        let Some(node) = router.current.as_ref().map(Exchange::node) else { return false };
        if self.pin.is_some() || self.shared.topology.table().primary == Primary::Node(node) {
            return false;
        }
        let Link::Linked(g) = &mut self.link else { return false };
        if g.conn().tx_status != TxStatus::Idle {
            // Inside the client's read-only transaction: it goes on there,
            // as on PostgreSQL.
            return false;
        }
        let classifier = self.shared.classifier.load();
        let hinted = self.params.get(ROLE_SETTING).and_then(hint_word) == Some(Hint::Replica);
        !hinted
            && batch_need(&self.client.read_buf[..end], &classifier, &self.statements, self.rewrite) == Need::Primary
    }

    /// Whether client input waits (see `must_hold`); ends once the read
    /// batch released its server or opened a transaction.
    pub(super) fn holding(&mut self) -> bool {
        if !self.hold {
            return false;
        }
        let still = match &mut self.link {
            Link::Linked(g) => g.conn().tx_status == TxStatus::Idle && self.pin.is_none(),
            Link::Idle => false,
        };
        self.hold = still;
        still
    }

    /// Links a server on the node `need` calls for. A read goes to
    /// another node when one fails (in the end to the primary); the
    /// primary is waited for up to `failover_wait_timeout` when none is up
    /// or it cannot be reached, and a new server of the primary that turns
    /// out to be a standby (`in_hot_standby`) is not used. On failure the
    /// client has been told.
    pub(super) async fn link_routed(&mut self, need: Need) -> Result<(), Exit> {
        let (wait, failover_wait) = {
            let c = self.config();
            (c.query_wait_timeout, c.failover_wait_timeout)
        };
        let shared = self.shared.clone();
        let topology = &shared.topology;
        let deadline = tokio::time::Instant::now() + failover_wait;
        let mut tried = 0u64;
        let mut last_error: Option<Box<super::session::LinkError>> = None;
        loop {
            let mut changed = topology.subscribe();
            let node = match self.choose(need, tried) {
                Ok(n) => n,
                Err(NoNode::Conflict) => {
                    // Rare paths are boxed: inline, their futures would
                    // enlarge every session's.
                    Box::pin(self.client.fatal(
                        sqlstate::CANNOT_CONNECT_NOW,
                        "pgbalancer: more than one backend claims to be primary; writes are refused until \
                             one is left (follow_primary: strict)",
                    ))
                    .await;
                    return Err(Exit::Closed);
                }
                Err(NoNode::NoPrimary) => {
                    let waited = if tried == 0 {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        Box::pin(topology.wait_primary(left)).await.is_ok()
                    } else {
                        Box::pin(tokio::time::timeout_at(deadline, changed.changed())).await.is_ok()
                    };
                    if waited {
                        tried = 0;
                        continue;
                    }
                    let (code, msg) = match &last_error {
                        Some(e) => link_error_message(e),
                        None => (
                            sqlstate::CANNOT_CONNECT_NOW,
                            "pgbalancer: no primary is available (failover_wait_timeout reached)".to_owned(),
                        ),
                    };
                    Box::pin(self.client.fatal(code, &msg)).await;
                    return Err(Exit::Closed);
                }
            };
            let pool = self.node_pool(node);
            self.entry.waiting();
            match link_server(&pool, &mut self.params, wait).await {
                Ok(mut guard) => {
                    if need == Need::Primary && bit(node) != 0 && Box::pin(in_recovery(&mut guard)).await {
                        // The node went into recovery since its last check
                        // (a switchover): the next check will tell.
                        tracing::warn!(node, "the write target's server is a standby; waiting for a primary");
                        drop(guard);
                        topology.suspect(node);
                        tried |= bit(node);
                        continue;
                    }
                    let c = guard.conn();
                    self.cancel.slot.set(CancelTarget { addr: c.addr, pid: c.backend_pid, key: c.backend_key });
                    let (pid, at) = (c.backend_pid, c.last_used);
                    self.linked(node, pid, at);
                    let router = self.router.as_mut().expect("routed session");
                    let flight = topology.nodes()[node].begin(need == Need::Read);
                    router.current = Some(Exchange { flight, need });
                    self.link = Link::Linked(guard);
                    return Ok(());
                }
                // Nothing was sent: a read may run on any other node.
                Err(e) if need != Need::Primary && bit(node) != 0 => {
                    tracing::debug!(node, error = %e, "cannot link a read node; trying another");
                    if unreachable(&e) {
                        topology.suspect(node);
                    }
                    tried |= bit(node);
                    last_error = Some(Box::new(e));
                }
                Err(e) if unreachable(&e) && tokio::time::Instant::now() < deadline && bit(node) != 0 => {
                    tracing::debug!(node, error = %e, "primary unreachable; waiting for the next check");
                    topology.suspect(node);
                    tried |= bit(node);
                    last_error = Some(Box::new(e));
                }
                Err(e) => {
                    let (code, msg) = link_error_message(&e);
                    Box::pin(self.client.fatal(code, &msg)).await;
                    return Err(Exit::Closed);
                }
            }
        }
    }

    /// The node for `need` now, not one of `tried`.
    fn choose(&mut self, need: Need, tried: u64) -> Result<usize, NoNode> {
        let (algorithm, sticky_mode, ryw, window) = {
            let c = self.config();
            (
                c.load_balance,
                c.load_balance_mode == LoadBalanceMode::Session,
                c.read_your_writes,
                c.read_your_writes_window,
            )
        };
        let topology = &self.shared.topology;
        let table = topology.table();
        let router = self.router.as_mut().expect("routed session");
        let primary = match table.primary {
            Primary::Node(p) if tried & bit(p) == 0 => Ok(p),
            Primary::Node(_) | Primary::None => Err(NoNode::NoPrimary),
            Primary::Conflict => Err(NoNode::Conflict),
        };
        let recent_write = router.wrote_at.is_some_and(|t| t.elapsed() < window);
        let reads_primary = match ryw {
            ReadYourWrites::Primary => recent_write,
            // The position of the last write is not known: the window.
            ReadYourWrites::Lsn => router.lsn_unknown && recent_write,
            ReadYourWrites::Off => false,
        };
        match need {
            Need::Primary => primary,
            Need::Read if reads_primary && primary.is_ok() => primary,
            Need::Read | Need::Any => {
                if need == Need::Any && primary.is_ok() {
                    return primary;
                }
                let min_lsn = if ryw == ReadYourWrites::Lsn { router.wrote_lsn } else { 0 };
                let primary_id = primary.ok();
                let accept = |n: &crate::topology::Node| {
                    tried & bit(n.id) == 0
                        && (min_lsn == 0
                            || Some(n.id) == primary_id
                            || n.lsn.load(std::sync::atomic::Ordering::Relaxed) >= min_lsn)
                };
                if sticky_mode {
                    if let Some(s) = router.sticky {
                        if table.readers.iter().any(|&(id, _)| id == s) && accept(&topology.nodes()[s]) {
                            return Ok(s);
                        }
                    }
                }
                match topology.picker.pick(algorithm, &table, topology.nodes(), accept) {
                    Some(n) => {
                        if sticky_mode {
                            router.sticky = Some(n);
                        }
                        Ok(n)
                    }
                    None => primary,
                }
            }
        }
    }

    /// This client's pool on `node`.
    fn node_pool(&mut self, node: usize) -> Arc<Pool> {
        let router = self.router.as_mut().expect("routed session");
        if let Some(p) = &router.pools[node] {
            return p.clone();
        }
        let n = &self.shared.topology.nodes()[node];
        let key = PoolKey { database: self.database.clone(), user: self.user.clone(), backend: node };
        let login = self.pool.login();
        let pool = self.shared.pools.get_or_create(key, &n.host, n.port, login.clone());
        // An existing pool may hold an older login (a reload changed a
        // password since): this client's login is current.
        pool.set_login(login);
        router.pools[node] = Some(pool.clone());
        pool
    }

    /// The transaction on the linked server ended (`clean`: the server
    /// went back to its pool; else it is gone): the node's counters, a
    /// response-time sample, and the client's read-your-writes marks.
    pub(super) fn end_exchange(&mut self, commit: Commit, clean: bool, took: Option<std::time::Duration>) {
        let Some(router) = self.router.as_mut() else { return };
        let Some(x) = router.current.take() else { return };
        if let (Some(took), true, Need::Read) = (took, clean, x.need) {
            x.flight.node().observe_latency(took);
        }
        if x.need != Need::Primary {
            return;
        }
        router.wrote_at = Some(Instant::now());
        match commit {
            Commit::At(lsn) => {
                router.wrote_lsn = router.wrote_lsn.max(lsn);
                router.lsn_unknown = false;
            }
            Commit::Unknown => router.lsn_unknown = true,
            Commit::NotRead => {}
        }
    }

    /// `read_your_writes: lsn`: where the primary's WAL is after this
    /// client's transaction there (read before the server is released).
    pub(super) fn wants_commit_lsn(&self) -> bool {
        self.router.as_ref().is_some_and(|r| r.current.as_ref().is_some_and(|x| x.need == Need::Primary))
            && self.shared.config.load().read_your_writes == ReadYourWrites::Lsn
    }

    /// Runs the held-back `BEGIN` on the server just linked.
    pub(super) async fn run_deferred_begin(&mut self) -> Result<(), Error> {
        let Some(begin) = self.router.as_mut().and_then(|r| r.deferred_begin.take()) else { return Ok(()) };
        let Link::Linked(g) = &mut self.link else { return Ok(()) };
        g.set_clean(false);
        match Box::pin(g.conn().query_row(&begin)).await? {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::Server(ServerError::Rejected(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::write;
    use bytes::BytesMut;

    fn c() -> Classifier {
        Classifier::new(&["audit_log".into()], &[])
    }

    fn query(sql: &str) -> BytesMut {
        let mut b = BytesMut::new();
        write::query(&mut b, sql);
        b
    }

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(sql.as_bytes());
        body.extend_from_slice(&[0, 0, 0]);
        msg(fe::PARSE, &body)
    }

    fn bind(stmt: &str) -> Vec<u8> {
        let mut body = vec![0];
        body.extend_from_slice(stmt.as_bytes());
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        msg(fe::BIND, &body)
    }

    fn sync() -> Vec<u8> {
        msg(fe::SYNC, &[])
    }

    fn need(src: &[u8]) -> Need {
        batch_need(src, &c(), &ClientStatements::default(), true)
    }

    #[test]
    fn queries() {
        assert_eq!(need(&query("SELECT 1")), Need::Read);
        assert_eq!(need(&query("select * from t for update")), Need::Primary);
        assert_eq!(need(&query("SELECT audit_log('x')")), Need::Primary);
        assert_eq!(need(&query("SELECT 1; INSERT INTO t VALUES (1)")), Need::Primary);
        assert_eq!(need(&query("BEGIN")), Need::Primary);
        assert_eq!(need(&query("BEGIN READ ONLY")), Need::Read);
        assert_eq!(need(&query("SET search_path = a")), Need::Any);
        assert_eq!(need(&query("SET ROLE other")), Need::Primary, "pins the client");
        // Reads that pin the client go to the primary too: it stays there.
        assert_eq!(need(&query("SELECT set_config('role', 'other', false)")), Need::Primary);
        assert_eq!(need(&query("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")), Need::Primary);
        assert_eq!(need(&query("SELECT * FROM pg_temp.t")), Need::Primary);
        assert_eq!(need(&query("SELECT * FROM _pgb_s1")), Need::Primary, "reserved names pin");
        assert_eq!(need(&query("SET seed = 0.5")), Need::Primary, "unreplayable setting");
        let mut two = query("SELECT 1");
        two.extend_from_slice(&query("UPDATE t SET a = 1"));
        assert_eq!(need(&two), Need::Primary, "every statement of the batch counts");
    }

    #[test]
    fn hints() {
        assert_eq!(need(&query("/* pgbalancer: primary */ SELECT 1")), Need::Primary);
        assert_eq!(need(&query("/*pgbalancer:replica*/ SELECT nextval('s')")), Need::Read);
        assert_eq!(
            need(&query("INSERT INTO t VALUES ('/* pgbalancer: replica */')")),
            Need::Primary,
            "a hint inside a literal is data"
        );
        assert_eq!(need(&query("SELECT 1 /* pgbalancer: primary */")), Need::Read, "only leading comments");
        assert_eq!(need(&query("-- note\n/* pgbalancer: primary */ SELECT 1")), Need::Primary);
        assert_eq!(need(&query("/* PGBALANCER: Primary */ SELECT 1")), Need::Primary, "any case");
        assert_eq!(need(&query("/* pgbalancer: auto */ SELECT 1")), Need::Read);
        assert_eq!(comment_hint("/* pgbalancer: primaryx */"), None);
        assert_eq!(comment_hint("/* pgbalancer: primary, please */"), None);
        assert_eq!(comment_hint("/* pgbalancer: primary"), None, "unclosed comment");
        assert_eq!(comment_hint("/* other */ /* PGBALANCER: Standby */"), Some(Hint::Replica));
        assert_eq!(hint_word("'auto'"), None);
    }

    #[test]
    fn extended_batches() {
        let mut b = parse("", "SELECT 1");
        b.extend(bind(""));
        b.extend(msg(fe::EXECUTE, &[0, 0, 0, 0, 0]));
        assert_eq!(need(&b), Need::Primary, "no Sync yet: the implicit transaction may go on");
        b.extend(sync());
        assert_eq!(need(&b), Need::Read);
        let mut w = parse("", "INSERT INTO t VALUES (1)");
        w.extend(bind(""));
        w.extend(sync());
        assert_eq!(need(&w), Need::Primary);
        let mut lone = bind("");
        lone.extend(sync());
        assert_eq!(need(&lone), Need::Any, "the unnamed statement runs where its Parse went");
        let mut unknown = bind("s1");
        unknown.extend(sync());
        assert_eq!(need(&unknown), Need::Primary);
        let mut set = parse("", "SET search_path = a");
        set.extend(bind(""));
        assert_eq!(need(&set), Need::Primary, "an incomplete batch waits for more of the client on its server");
        assert_eq!(need(&msg(fe::FLUSH, &[])), Need::Primary);
        let mut named = parse("s1", "SELECT 1");
        named.extend(sync());
        assert_eq!(need(&named), Need::Read, "named statements are mapped");
        assert_eq!(batch_need(&named, &c(), &ClientStatements::default(), false), Need::Primary, "unmapped: pins");
        assert_eq!(need(&sync()), Need::Any);
        assert_eq!(need(&msg(b'F', &[0; 10])), Need::Primary, "FunctionCall");
    }

    #[test]
    fn named_statements_use_their_text() {
        let registry = crate::prepared::Registry::default();
        let mut statements = ClientStatements::default();
        let body = |sql: &str| {
            let mut v = sql.as_bytes().to_vec();
            v.extend_from_slice(&[0, 0, 0]);
            v
        };
        statements.insert(b"r", registry.register(&body("SELECT 1"), b""));
        statements.insert(b"w", registry.register(&body("DELETE FROM t"), b""));
        let mut r = bind("r");
        r.extend(sync());
        assert_eq!(batch_need(&r, &c(), &statements, true), Need::Read);
        let mut w = bind("w");
        w.extend(sync());
        assert_eq!(batch_need(&w, &c(), &statements, true), Need::Primary);
        // A plain read is known as one from its registration; anything else
        // is looked at with the classifier of the moment.
        let plain = registry.register(&body("SELECT a FROM t WHERE id = $1"), b"");
        assert!(plain.plain_read);
        for (name, sql) in [
            (&b"c"[..], "SELECT count(*) FROM t"),
            (b"f", "SELECT audit_log($1)"),
            (b"u", "SELECT a FROM t FOR UPDATE"),
            (b"x", "SELECT a FROM _pgb_s1"),
            (b"s", "SET ROLE a"),
        ] {
            let s = registry.register(&body(sql), b"");
            assert!(!s.plain_read, "{sql}");
            statements.insert(name, s);
        }
        let need_of = |name: &str, classifier: &Classifier| {
            let mut m = bind(name);
            m.extend(sync());
            batch_need(&m, classifier, &statements, true)
        };
        assert_eq!(need_of("c", &c()), Need::Read);
        assert_eq!(need_of("f", &Classifier::default()), Need::Read);
        assert_eq!(need_of("f", &c()), Need::Primary, "a configured write function (audit_log)");
        assert_eq!(need_of("u", &c()), Need::Primary);
        assert_eq!(need_of("x", &c()), Need::Primary, "names a reserved statement: pins");
        assert_eq!(need_of("s", &c()), Need::Primary, "SET ROLE pins");
    }

    #[test]
    fn begin_deferral() {
        assert_eq!(deferrable_begin("BEGIN"), Some("BEGIN"));
        assert_eq!(deferrable_begin("begin work;"), Some("BEGIN"));
        assert_eq!(deferrable_begin("start transaction"), Some("START TRANSACTION"));
        for not in [
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "BEGIN READ ONLY",
            "BEGIN READ\tWRITE",
            "BEGIN; SELECT 1",
            "/* pgbalancer: primary */ BEGIN",
            "BEGIN /* x */",
        ] {
            assert_eq!(deferrable_begin(not), None, "{not}");
        }
        assert_eq!(lone_end_tag("commit;"), Some("COMMIT"));
        assert_eq!(lone_end_tag("END WORK"), Some("COMMIT"));
        assert_eq!(lone_end_tag("ROLLBACK"), Some("ROLLBACK"));
        assert_eq!(lone_end_tag("COMMIT AND CHAIN"), None);
        assert_eq!(lone_end_tag("ROLLBACK PREPARED 'x'"), None);
    }
}
