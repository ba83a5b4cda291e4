//! Protocol-level prepared statements in transaction and statement mode.
//!
//! A client names its statements as it likes (`S_1`, `_pg3_0` …); those
//! names mean nothing on the server connection it gets for its next
//! transaction. pgbalancer therefore keeps three things:
//!
//! * a [`Registry`] shared by every client: one [`Statement`] per distinct
//!   Parse body (query text + parameter types), with a server-side name
//!   `_pgb_s<id>` used on every server;
//! * per client, [`ClientStatements`]: its names → statements;
//! * per server connection, [`ServerStatements`]: which statements that
//!   connection has prepared, bounded by `max_prepared_statements` (least
//!   recently used first out).
//!
//! The session rewrites Parse/Bind/Describe/Close accordingly and prepares
//! a statement on a server right before its first use there (see
//! `client/rewrite.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use dashmap::DashMap;

use crate::sql::classify::plainly_read;
use crate::sql::session::{session_effects, SessionEffects};

/// One distinct statement, shared by every client that prepared it.
#[derive(Debug)]
pub struct Statement {
    pub id: u64,
    /// The name it has on every server connection.
    pub name: Box<str>,
    /// The Parse message body after the statement name: query text, NUL,
    /// parameter type count and OIDs.
    pub body: Bytes,
    /// What running it does to session state (from its query text).
    pub effects: SessionEffects,
    /// Its text passed the classifier's quick look (one plain `SELECT`,
    /// see `plainly_read`), changes no session state and names no
    /// reserved statement: a read whatever the configured function lists
    /// say, so routing a Bind of it needs no second look at the text.
    pub plain_read: bool,
    /// Its registry key: the body plus the settings that change how the
    /// server reads it.
    key: Bytes,
}

impl Statement {
    /// The query text (without its NUL), as sent by the client.
    pub fn query(&self) -> &str {
        query_of(&self.body)
    }
}

/// Every statement some client holds, by Parse body and the client
/// settings that change its meaning (`client_encoding`,
/// `standard_conforming_strings`). Entries whose last client is gone are
/// pruned by the maintenance tick.
#[derive(Debug, Default)]
pub struct Registry {
    by_body: DashMap<Bytes, Weak<Statement>>,
    next_id: AtomicU64,
}

impl Registry {
    /// The statement for this Parse body read under `variant` (the client
    /// settings it depends on), created on first use.
    pub fn register(&self, body: &[u8], variant: &[u8]) -> Arc<Statement> {
        let mut key = Vec::with_capacity(body.len() + 1 + variant.len());
        key.extend_from_slice(body);
        key.push(0xff);
        key.extend_from_slice(variant);
        if let Some(s) = self.by_body.get(key.as_slice()).and_then(|w| w.upgrade()) {
            return s;
        }
        let key = Bytes::from(key);
        let mut entry = self.by_body.entry(key.clone()).or_default();
        if let Some(s) = entry.upgrade() {
            return s;
        }
        let s = self.create(key, body.len());
        *entry = Arc::downgrade(&s);
        s
    }

    /// A new version of `old` under a new name (the server's copy went
    /// stale: "cached plan must not change result type"); later
    /// registrations get it too.
    pub fn renew(&self, old: &Statement) -> Arc<Statement> {
        let s = self.create(old.key.clone(), old.body.len());
        self.by_body.insert(old.key.clone(), Arc::downgrade(&s));
        s
    }

    fn create(&self, key: Bytes, body_len: usize) -> Arc<Statement> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let body = key.slice(..body_len);
        let text = query_of(&body);
        let effects = session_effects(text);
        let plain_read = plainly_read(text) && effects.is_none() && !names_reserved(text);
        Arc::new(Statement { id, name: server_name(id).into(), body, effects, plain_read, key })
    }

    /// Forgets statements no client holds any more.
    pub fn prune(&self) {
        self.by_body.retain(|_, w| w.strong_count() > 0);
    }

    pub fn len(&self) -> usize {
        self.by_body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_body.is_empty()
    }
}

/// The name statement `id` has on servers.
pub fn server_name(id: u64) -> String {
    format!("_pgb_s{id}")
}

/// Names pgbalancer gives shared statements (`_pgb_…`, in any case);
/// clients may not use them.
pub fn is_reserved(name: &[u8]) -> bool {
    name.len() >= 5 && name[..5].eq_ignore_ascii_case(b"_pgb_")
}

/// True when a statement text may name one of pgbalancer's shared
/// statements: such a client is pinned, so what it does to them stays on
/// its own server, which is reset when it leaves.
pub fn names_reserved(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memchr_iter(b'_', b).any(|i| is_reserved(&b[i..]))
}

/// The query text of a Parse body (without its NUL).
fn query_of(body: &[u8]) -> &str {
    let end = memchr::memchr(0, body).unwrap_or(body.len());
    std::str::from_utf8(&body[..end]).unwrap_or("")
}

/// One client's statement names, each with the order it was made in (so a
/// `DEALLOCATE ALL` drops only those made before it).
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: HashMap<Box<[u8]>, (Arc<Statement>, u64)>,
    seq: u64,
}

impl ClientStatements {
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.by_name.get(name).map(|(s, _)| s)
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn insert(&mut self, name: &[u8], stmt: Arc<Statement>) {
        self.seq += 1;
        self.by_name.insert(name.into(), (stmt, self.seq));
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.by_name.remove(name).map(|(s, _)| s)
    }

    /// Removes `name` if it still stands for statement `id`.
    pub fn remove_if(&mut self, name: &[u8], id: u64) {
        if self.by_name.get(name).is_some_and(|(s, _)| s.id == id) {
            self.by_name.remove(name);
        }
    }

    /// A mark for [`ClientStatements::clear_before`]: everything made so far.
    pub fn mark(&self) -> u64 {
        self.seq
    }

    /// Forgets the names made up to `mark`.
    pub fn clear_before(&mut self, mark: u64) {
        self.by_name.retain(|_, (_, seq)| *seq > mark);
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Points every name that stands for `old` at its renewed version.
    pub fn renew(&mut self, old: &Statement, registry: &Registry) {
        let mut fresh = None;
        for (s, _) in self.by_name.values_mut() {
            if s.id == old.id {
                *s = fresh.get_or_insert_with(|| registry.renew(old)).clone();
            }
        }
    }
}

/// The statements one server connection has prepared, with their last use
/// for least-recently-used eviction.
#[derive(Debug, Default)]
pub struct ServerStatements {
    last_use: HashMap<u64, u64>,
    tick: u64,
    /// Statements used since this tick belong to the batch in flight (no
    /// Sync yet): closing them would close the client's portals.
    batch_start: u64,
}

impl ServerStatements {
    /// True when the statement is prepared here; counts as a use.
    pub fn touch(&mut self, id: u64) -> bool {
        self.tick += 1;
        match self.last_use.get_mut(&id) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    pub fn insert(&mut self, id: u64) {
        self.tick += 1;
        self.last_use.insert(id, self.tick);
    }

    pub fn remove(&mut self, id: u64) {
        self.last_use.remove(&id);
    }

    /// An eviction that did not happen (the server discarded the Close):
    /// the statement is back, as the least recently used.
    pub fn restore(&mut self, id: u64) {
        self.last_use.entry(id).or_insert(0);
    }

    /// The server dropped its prepared statements (DISCARD ALL,
    /// DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.last_use.clear();
    }

    /// A Sync went out: what was used so far may be evicted.
    pub fn batch_ended(&mut self) {
        self.batch_start = self.tick + 1;
    }

    /// With `cap` statements or more prepared, picks the least recently
    /// used one outside the current batch, forgets it and returns its id
    /// (the caller closes it on the server).
    pub fn evict(&mut self, cap: usize) -> Option<u64> {
        if self.last_use.len() < cap {
            return None;
        }
        let (&id, _) = self.last_use.iter().filter(|(_, &t)| t < self.batch_start).min_by_key(|(_, &t)| t)?;
        self.last_use.remove(&id);
        Some(id)
    }

    pub fn len(&self) -> usize {
        self.last_use.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_use.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(q: &str) -> Vec<u8> {
        let mut b = q.as_bytes().to_vec();
        b.extend([0, 0, 0]);
        b
    }

    #[test]
    fn same_body_and_variant_same_statement_until_renewed() {
        let r = Registry::default();
        let a = r.register(&body("SELECT 1"), b"UTF8");
        let b = r.register(&body("SELECT 1"), b"UTF8");
        assert!(Arc::ptr_eq(&a, &b));
        assert_ne!(r.register(&body("SELECT 2"), b"UTF8").id, a.id);
        assert_ne!(r.register(&body("SELECT 1"), b"LATIN1").id, a.id, "another encoding, another statement");
        let c = r.renew(&a);
        assert_ne!(c.id, a.id);
        assert_eq!(r.register(&body("SELECT 1"), b"UTF8").id, c.id, "later registrations get the renewed one");
        assert_eq!(&*c.name, &*format!("_pgb_s{}", c.id));
        assert_eq!(c.query(), "SELECT 1");
        assert_eq!(c.body, a.body);
    }

    #[test]
    fn prune_forgets_unheld_statements() {
        let r = Registry::default();
        let a = r.register(&body("SELECT 1"), b"");
        drop(r.register(&body("SELECT 2"), b""));
        r.prune();
        assert_eq!(r.len(), 1);
        drop(a);
        r.prune();
        assert!(r.is_empty());
    }

    #[test]
    fn client_renew_and_clear_before() {
        let r = Registry::default();
        let mut c = ClientStatements::default();
        let a = r.register(&body("SELECT 1"), b"");
        c.insert(b"s1", a.clone());
        c.insert(b"s2", a.clone());
        c.renew(&a, &r);
        let (s1, s2) = (c.get(b"s1").unwrap().id, c.get(b"s2").unwrap().id);
        assert_ne!(s1, a.id);
        assert_eq!(s1, s2, "one renewed statement for both names");
        let mark = c.mark();
        c.insert(b"s3", a);
        c.clear_before(mark);
        assert!(!c.contains(b"s1") && !c.contains(b"s2") && c.contains(b"s3"));
    }

    #[test]
    fn lru_evicts_oldest_outside_the_batch() {
        let mut s = ServerStatements::default();
        for id in 1..=3 {
            s.insert(id);
        }
        assert_eq!(s.evict(3), None, "batch in flight: nothing may go");
        s.batch_ended();
        assert!(s.touch(1));
        // 1 was used in the new batch; 2 is the oldest left.
        assert_eq!(s.evict(3), Some(2));
        assert_eq!(s.evict(3), None, "under the cap");
        assert!(!s.touch(2));
        assert_eq!(s.len(), 2);
        // A restored eviction is the first to go again, even in a new batch.
        s.restore(2);
        s.batch_ended();
        assert_eq!(s.evict(3), Some(2));
    }
}
