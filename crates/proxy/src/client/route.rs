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

use super::session::{link_error_message, link_server, Exit, Link, Session};
use crate::cancel::CancelTarget;
use crate::error::{Error, PoolError, ServerError};
use crate::pool::{Pool, PoolKey};
use crate::prepared::ClientStatements;
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::{fe, read};
use crate::protocol::{sqlstate, write, TxStatus};
use crate::sql::classify::{Class, Classifier};
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

/// What one statement text needs.
pub fn text_need(text: &str, classifier: &Classifier) -> Need {
    if text.contains("pgbalancer") {
        match comment_hint(text) {
            Some(Hint::Primary) => return Need::Primary,
            Some(Hint::Replica) => return Need::Read,
            None => {}
        }
    }
    match classifier.classify(text) {
        Class::Read | Class::Begin { read_only: true } | Class::SetTransactionReadOnly => Need::Read,
        // `SET ROLE`, `SET SESSION AUTHORIZATION` and the like pin the
        // client to its server: that must be the primary.
        Class::Neutral if session_effects(text).pin.is_some() => Need::Primary,
        Class::Neutral => Need::Any,
        Class::Write | Class::Begin { read_only: false } | Class::Commit => Need::Primary,
    }
}

/// What a batch of complete client messages needs. `statements` resolves
/// names of protocol-level statements bound in it.
pub fn batch_need(src: &[u8], classifier: &Classifier, statements: &ClientStatements) -> Need {
    let mut need = Need::Any;
    let mut complete = false;
    let mut unnamed_parsed = false;
    let mut off = 0;
    while let Ok(Some(h)) = frame::peek_header(&src[off..], usize::MAX) {
        let body = &src[off + HEADER_LEN..off + h.total_len];
        off += h.total_len;
        complete = false;
        let this = match h.tag {
            fe::QUERY => {
                complete = true;
                text_need(read::query_text(body).unwrap_or(""), classifier)
            }
            fe::PARSE => match read::parse(body) {
                Some((name, rest)) => {
                    unnamed_parsed |= name.is_empty();
                    text_need(read::parse_query(rest).unwrap_or(""), classifier)
                }
                None => Need::Primary,
            },
            fe::BIND => match read::bind(body) {
                Some((_, b"", _)) => {
                    // The unnamed statement: decided by its Parse in this
                    // batch; one from an earlier batch lives where that ran.
                    if unnamed_parsed {
                        Need::Any
                    } else {
                        Need::Primary
                    }
                }
                Some((_, stmt, _)) => match statements.get(stmt) {
                    Some(s) => text_need(s.query(), classifier),
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
    if need == Need::Read && !complete {
        // An implicit transaction still open at the end of the batch may go
        // on with a write.
        return Need::Primary;
    }
    need
}

/// A lone `BEGIN` / `START TRANSACTION` that `transaction_routing:
/// first_statement` may hold back until the next statement says where the
/// transaction runs. Not `SERIALIZABLE` (a replica refuses it) and not
/// `READ ONLY` (that is routed to a read node at once).
pub fn deferrable_begin(text: &str, classifier: &Classifier) -> bool {
    classifier.classify(text) == Class::Begin { read_only: false }
        && !text.contains(';')
        && !text.to_ascii_lowercase().contains("serializable")
        && !text.to_ascii_lowercase().contains("read write")
}

/// How a held-back transaction ends when nothing ran in it: the command
/// tag to answer, or None when it must reach a server.
pub fn lone_end_tag(text: &str) -> Option<&'static str> {
    let t = text.trim().trim_end_matches(';').trim_end().to_ascii_lowercase();
    let mut words = t.split_ascii_whitespace();
    let first = words.next()?;
    let rest: Vec<&str> = words.collect();
    let plain = rest.is_empty() || matches!(rest.as_slice(), ["work"] | ["transaction"]);
    if !plain {
        return None;
    }
    match first {
        "commit" | "end" => Some("COMMIT"),
        "rollback" | "abort" => Some("ROLLBACK"),
        _ => None,
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
}

/// A routed transaction in flight.
pub struct Exchange {
    pub flight: InFlight,
    pub need: Need,
    /// Set when response times are measured (`load_balance: latency`).
    pub started: Option<Instant>,
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
        let first_statement = self.shared.config.load().transaction_routing == TransactionRouting::FirstStatement;
        let router = self.router.as_mut().expect("routed session");
        if let (Some(text), true) = (single_query(src), self.flow.owes_nothing()) {
            let mut out = BytesMut::new();
            if router.deferred_begin.is_some() {
                if let Some(tag) = lone_end_tag(text) {
                    router.deferred_begin = None;
                    write::command_complete(&mut out, tag);
                    write::ready_for_query(&mut out, TxStatus::Idle);
                }
            } else if first_statement && self.pin.is_none() && deferrable_begin(text, &classifier) {
                router.deferred_begin = Some(text.to_owned());
                write::command_complete(&mut out, "BEGIN");
                write::ready_for_query(&mut out, TxStatus::InTransaction);
            }
            if !out.is_empty() {
                self.client.write_all(&out).await?;
                return Ok(Routed::Answered);
            }
        }
        let need = batch_need(src, &classifier, &self.statements);
        let hint = self.params.get(ROLE_SETTING).and_then(hint_word);
        Ok(Routed::Need(match hint {
            Some(Hint::Primary) => Need::Primary,
            Some(Hint::Replica) => Need::Read,
            None => need,
        }))
    }

    /// A batch must wait: the client holds a read node for an implicit
    /// transaction that has not ended, and the next batch needs the
    /// primary.
    pub(super) fn must_hold(&mut self, end: usize) -> bool {
        let Some(router) = &self.router else { return false };
        if !router.current.as_ref().is_some_and(|x| x.need == Need::Read) || self.pin.is_some() {
            return false;
        }
        let Link::Linked(g) = &mut self.link else { return false };
        if g.conn().tx_status != TxStatus::Idle {
            // Inside the client's read-only transaction: it goes on there,
            // as on PostgreSQL.
            return false;
        }
        let classifier = self.shared.classifier.load();
        batch_need(&self.client.read_buf[..end], &classifier, &self.statements) == Need::Primary
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

    /// Links a server on the node `need` calls for, trying others when a
    /// node cannot be reached, and waiting up to `failover_wait_timeout`
    /// for a primary. On failure the client has been told.
    pub(super) async fn link_routed(&mut self, need: Need) -> Result<(), Exit> {
        let (wait, failover_wait, measure) = {
            let c = self.shared.config.load();
            (c.query_wait_timeout, c.failover_wait_timeout, c.load_balance == pgbalancer_config::LoadBalance::Latency)
        };
        let shared = self.shared.clone();
        let topology = &shared.topology;
        let deadline = tokio::time::Instant::now() + failover_wait;
        let mut tried = 0u64;
        loop {
            let mut changed = topology.subscribe();
            let node = match self.choose(need, tried) {
                Ok(n) => n,
                Err(NoNode::Conflict) => {
                    self.client
                        .fatal(
                            sqlstate::CANNOT_CONNECT_NOW,
                            "pgbalancer: more than one backend claims to be primary; writes are refused until \
                             one is left (follow_primary: strict)",
                        )
                        .await;
                    return Err(Exit::Closed);
                }
                Err(NoNode::NoPrimary) => {
                    if tried == 0 {
                        if topology.wait_primary(deadline - tokio::time::Instant::now()).await.is_ok() {
                            continue;
                        }
                    } else if tokio::time::timeout_at(deadline, changed.changed()).await.is_ok() {
                        tried = 0;
                        continue;
                    }
                    self.client
                        .fatal(
                            sqlstate::CANNOT_CONNECT_NOW,
                            "pgbalancer: no primary is available (failover_wait_timeout reached)",
                        )
                        .await;
                    return Err(Exit::Closed);
                }
            };
            let pool = self.node_pool(node);
            match link_server(&pool, &mut self.params, wait).await {
                Ok(mut guard) => {
                    let c = guard.conn();
                    self.cancel.slot.set(CancelTarget { addr: c.addr, pid: c.backend_pid, key: c.backend_key });
                    let router = self.router.as_mut().expect("routed session");
                    let flight = topology.nodes()[node].begin(need == Need::Read);
                    router.current = Some(Exchange { flight, need, started: measure.then(Instant::now) });
                    self.link = Link::Linked(guard);
                    return Ok(());
                }
                Err(e) if unreachable(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(node, error = %e, "node unreachable; trying another");
                    topology.suspect(node);
                    tried |= bit(node);
                }
                Err(e) => {
                    let (code, msg) = link_error_message(&e);
                    self.client.fatal(code, &msg).await;
                    return Err(Exit::Closed);
                }
            }
        }
    }

    /// The node for `need` now, not one of `tried`.
    fn choose(&mut self, need: Need, tried: u64) -> Result<usize, NoNode> {
        let (algorithm, sticky_mode, ryw, window) = {
            let c = self.shared.config.load();
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
        let reads_primary = match ryw {
            ReadYourWrites::Primary => router.wrote_at.is_some_and(|t| t.elapsed() < window),
            _ => false,
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
        let pool = self.shared.pools.get_or_create(key, &n.host, n.port, self.pool.login());
        router.pools[node] = Some(pool.clone());
        pool
    }

    /// The transaction on the linked server ended (or the server is gone):
    /// its node's counters and the client's read-your-writes marks.
    pub(super) fn end_exchange(&mut self, wrote_lsn: Option<u64>) {
        let Some(router) = self.router.as_mut() else { return };
        let Some(x) = router.current.take() else { return };
        if let Some(t0) = x.started {
            if x.need == Need::Read {
                x.flight.node().observe_latency(t0.elapsed());
            }
        }
        if x.need == Need::Primary {
            router.wrote_at = Some(Instant::now());
            if let Some(lsn) = wrote_lsn {
                router.wrote_lsn = router.wrote_lsn.max(lsn);
            }
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
        batch_need(src, &c(), &ClientStatements::default())
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
        assert_eq!(need(&lone), Need::Primary, "unnamed statement of an earlier batch");
        let mut unknown = bind("s1");
        unknown.extend(sync());
        assert_eq!(need(&unknown), Need::Primary);
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
        assert_eq!(batch_need(&r, &c(), &statements), Need::Read);
        let mut w = bind("w");
        w.extend(sync());
        assert_eq!(batch_need(&w, &c(), &statements), Need::Primary);
    }

    #[test]
    fn begin_deferral() {
        let c = c();
        assert!(deferrable_begin("BEGIN", &c));
        assert!(deferrable_begin("start transaction", &c));
        assert!(!deferrable_begin("BEGIN ISOLATION LEVEL SERIALIZABLE", &c));
        assert!(!deferrable_begin("BEGIN READ ONLY", &c));
        assert!(!deferrable_begin("BEGIN; SELECT 1", &c));
        assert_eq!(lone_end_tag("commit;"), Some("COMMIT"));
        assert_eq!(lone_end_tag("END WORK"), Some("COMMIT"));
        assert_eq!(lone_end_tag("ROLLBACK"), Some("ROLLBACK"));
        assert_eq!(lone_end_tag("COMMIT AND CHAIN"), None);
        assert_eq!(lone_end_tag("ROLLBACK PREPARED 'x'"), None);
    }
}
