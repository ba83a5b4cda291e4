//! Replication helpers: roles, WAL positions, pausing replay, waiting for replicas.

use std::time::{Duration, Instant};

use crate::{Cluster, Error, Node, POLL, WAIT_DEADLINE};

impl Node {
    /// `pg_is_in_recovery()`: true on a replica, false on a primary (or a promoted replica).
    pub fn is_in_recovery(&self) -> Result<bool, Error> {
        Ok(self.psql("postgres", "SELECT pg_is_in_recovery()")? == "t")
    }

    /// On a primary, `pg_current_wal_insert_lsn()`; on a replica, `pg_last_wal_replay_lsn()`.
    /// As text (`0/3000148`), usable as a `pg_lsn` literal.
    pub fn wal_lsn(&self) -> Result<String, Error> {
        self.psql(
            "postgres",
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END",
        )
    }

    /// Bytes of WAL between `lsn` and this node's position ([`Node::wal_lsn`]); negative when the
    /// node is past `lsn`.
    pub fn lsn_behind(&self, lsn: &str) -> Result<i64, Error> {
        let sql = format!(
            "SELECT pg_wal_lsn_diff({}::pg_lsn, CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
             ELSE pg_current_wal_insert_lsn() END)::bigint",
            crate::quote_literal(lsn)
        );
        let out = self.psql("postgres", &sql)?;
        out.parse().map_err(|_| Error::Other(format!("{}: unexpected pg_wal_lsn_diff output {out:?}", self.name)))
    }

    /// `pg_wal_replay_pause()`, then wait until `pg_get_wal_replay_pause_state()` says `paused`:
    /// from then on the replica keeps receiving WAL but applies none of it. Replica only.
    pub fn pause_replay(&self) -> Result<(), Error> {
        self.psql("postgres", "SELECT pg_wal_replay_pause()")?;
        self.wait_pause_state("paused")
    }

    /// `pg_wal_replay_resume()`, and wait until the pause state is `not paused`.
    pub fn resume_replay(&self) -> Result<(), Error> {
        self.psql("postgres", "SELECT pg_wal_replay_resume()")?;
        self.wait_pause_state("not paused")
    }

    /// `pg_get_wal_replay_pause_state()`: `not paused`, `pause requested` or `paused`.
    pub fn replay_pause_state(&self) -> Result<String, Error> {
        self.psql("postgres", "SELECT pg_get_wal_replay_pause_state()")
    }

    fn wait_pause_state(&self, want: &str) -> Result<(), Error> {
        let deadline = Instant::now() + WAIT_DEADLINE;
        loop {
            let state = self.replay_pause_state()?;
            if state == want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "{}: replay pause state still {state:?} after {WAIT_DEADLINE:?} (want {want:?})",
                    self.name
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Wait (up to `limit`) until this replica has replayed `lsn`; Ok at once if the node is not
    /// in recovery (a primary has every LSN it wrote).
    pub fn wait_replayed(&self, lsn: &str, limit: Duration) -> Result<(), Error> {
        let sql = format!(
            "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn() >= {}::pg_lsn, false)",
            crate::quote_literal(lsn)
        );
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.psql("postgres", &sql) {
                Ok(out) if out == "t|t" || out.starts_with("f|") => return Ok(()),
                Ok(out) => out,
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "{} did not replay LSN {lsn} within {limit:?} (last: {last})",
                    self.name
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Cluster {
    /// The primary's `pg_current_wal_insert_lsn()`.
    pub fn primary_lsn(&self) -> Result<String, Error> {
        self.psql(&self.primary, "postgres", "SELECT pg_current_wal_insert_lsn()")
    }

    /// Wait (up to 30 s) until `replica` has replayed the primary's insert position as of this
    /// call (see [`Cluster::wait_replicas_caught_up`]). Unlike that one, it names one replica, so
    /// the others may be paused, frozen or stopped meanwhile.
    pub fn wait_caught_up(&self, replica: &Node) -> Result<(), Error> {
        let lsn = self.primary_lsn()?;
        replica.wait_replayed(&lsn, WAIT_DEADLINE)
    }
}
