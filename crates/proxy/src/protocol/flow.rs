//! Which replies a server still owes, worked out from the message types
//! forwarded to it and the types it sends back. This decides when a server
//! connection may go back to the pool; it follows PostgreSQL's rules:
//!
//! * each extended-protocol message (Parse, Bind, Describe, Execute, Close)
//!   completes with one reply; after an error in one, the server discards
//!   everything until Sync (Query and FunctionCall included);
//! * Query and FunctionCall complete at their ReadyForQuery, Sync at its own;
//! * during COPY IN the server ignores Sync and Flush until CopyDone or
//!   CopyFail;
//! * until a Sync, an extended batch keeps state on the server (implicit
//!   transaction, unnamed portal) even when every reply has arrived.

use std::collections::VecDeque;

use super::{be, fe};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Parse,
    Bind,
    Close,
    Describe,
    Execute,
    Query,
    FunctionCall,
    Sync,
    /// The client's CopyDone/CopyFail: no reply of its own, a marker.
    CopyEnd,
    /// A message pgbalancer answers itself (the server never saw it); its
    /// answer goes out when it reaches the front.
    Answered,
}

impl Owed {
    fn is_extended(self) -> bool {
        matches!(self, Owed::Parse | Owed::Bind | Owed::Close | Owed::Describe | Owed::Execute)
    }
}

/// What the caller attached to a forwarded message, handed back when the
/// server has answered it (or skipped it).
pub trait Note: Default {
    /// Plain notes are not handed back.
    fn is_plain(&self) -> bool;
}

impl Note for () {
    fn is_plain(&self) -> bool {
        true
    }
}

/// How a noted message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its completion message arrived (ParseComplete, BindComplete, the
    /// ReadyForQuery of a Query …).
    Done,
    /// The server answered it with an ErrorResponse (a Query: one of its
    /// statements failed).
    Failed,
    /// The server discarded it (an earlier error in the batch).
    Skipped,
}

#[derive(Debug, Clone)]
pub struct Flow<N = ()> {
    owed: VecDeque<(Owed, N)>,
    /// Entries of `owed` that are not CopyEnd markers.
    real: usize,
    /// Extended messages sent since the last Sync.
    batch_open: bool,
    /// The server is in COPY IN and the client has not ended it yet.
    copy_in: bool,
    /// An extended message failed and no Sync has been forwarded since:
    /// the server discards what the client sends until one.
    ignore_till_sync: bool,
    /// Noted entries that ended, oldest first, until the caller takes them.
    ended: VecDeque<(Outcome, N)>,
    /// The Query or FunctionCall at the front got an ErrorResponse.
    front_failed: bool,
}

impl<N> Default for Flow<N> {
    fn default() -> Self {
        Flow {
            owed: VecDeque::new(),
            real: 0,
            batch_open: false,
            copy_in: false,
            ignore_till_sync: false,
            ended: VecDeque::new(),
            front_failed: false,
        }
    }
}

impl<N: Note> Flow<N> {
    /// A message of type `tag` was forwarded to the server.
    pub fn client(&mut self, tag: u8) {
        self.client_noted(tag, N::default());
    }

    /// A message of type `tag` was forwarded to the server, with a note the
    /// caller gets back once the server has answered it.
    pub fn client_noted(&mut self, tag: u8, note: N) {
        if self.ignore_till_sync {
            if tag == fe::SYNC {
                self.ignore_till_sync = false;
                self.batch_open = false;
                self.real += 1;
                self.owed.push_back((Owed::Sync, note));
            } else {
                self.end(Outcome::Skipped, note);
            }
            return;
        }
        let owed = match tag {
            fe::PARSE => Owed::Parse,
            fe::BIND => Owed::Bind,
            fe::CLOSE => Owed::Close,
            fe::DESCRIBE => Owed::Describe,
            fe::EXECUTE => Owed::Execute,
            fe::QUERY => Owed::Query,
            fe::FUNCTION_CALL => Owed::FunctionCall,
            fe::SYNC if self.copy_in => return,
            fe::SYNC => {
                self.batch_open = false;
                Owed::Sync
            }
            fe::COPY_DONE | fe::COPY_FAIL if self.copy_in => {
                self.copy_in = false;
                return;
            }
            fe::COPY_DONE | fe::COPY_FAIL => {
                // A marker matters only when a listed Query or Execute may
                // still start the COPY it ends; one in a row is enough. Stray
                // ones (the server ignores them) are not recorded, so a flood
                // of them costs nothing.
                let may_start_copy = self.owed.iter().any(|(o, _)| matches!(o, Owed::Query | Owed::Execute));
                if !may_start_copy || self.owed.back().map(|(o, _)| *o) == Some(Owed::CopyEnd) {
                    return;
                }
                Owed::CopyEnd
            }
            _ => return,
        };
        if owed.is_extended() {
            self.batch_open = true;
        }
        if owed != Owed::CopyEnd {
            self.real += 1;
        }
        self.owed.push_back((owed, note));
    }

    /// A message of type `tag` that pgbalancer answers itself (the server
    /// never sees it). Its note comes back from [`Flow::take_answer`] when
    /// every reply before it has gone to the client.
    pub fn answered(&mut self, tag: u8, note: N) {
        if self.ignore_till_sync {
            // PostgreSQL would have discarded it.
            self.end(Outcome::Skipped, note);
            return;
        }
        if matches!(tag, fe::PARSE | fe::BIND | fe::CLOSE | fe::DESCRIBE | fe::EXECUTE) {
            self.batch_open = true;
        }
        self.real += 1;
        self.owed.push_back((Owed::Answered, note));
    }

    /// The note of a self-answered message that is now due (nothing owed
    /// before it).
    pub fn take_answer(&mut self) -> Option<N> {
        self.drop_markers();
        if self.owed.front().map(|(o, _)| *o) != Some(Owed::Answered) {
            return None;
        }
        self.pop_front().map(|(_, n)| n)
    }

    /// True when a self-answered message is due.
    pub fn answer_due(&self) -> bool {
        self.owed.iter().find(|(o, _)| *o != Owed::CopyEnd).map(|(o, _)| *o) == Some(Owed::Answered)
    }

    /// True when the server's next completion message answers a noted
    /// message (the caller may want to look at it).
    pub fn front_noted(&self) -> bool {
        self.owed.iter().find(|(o, _)| *o != Owed::CopyEnd).is_some_and(|(_, n)| !n.is_plain())
    }

    /// Noted messages that ended since the last call, oldest first.
    pub fn take_ended(&mut self) -> Option<(Outcome, N)> {
        self.ended.pop_front()
    }

    pub fn has_ended(&self) -> bool {
        !self.ended.is_empty()
    }

    fn end(&mut self, outcome: Outcome, note: N) {
        if !note.is_plain() {
            self.ended.push_back((outcome, note));
        }
    }

    /// Removes the front entry, keeping the count of real entries.
    fn pop_front(&mut self) -> Option<(Owed, N)> {
        let e = self.owed.pop_front()?;
        if e.0 != Owed::CopyEnd {
            self.real -= 1;
        }
        Some(e)
    }

    /// The server sent a message of type `tag`.
    pub fn server(&mut self, tag: u8) {
        self.drop_markers();
        if tag == be::ERROR_RESPONSE {
            // Any error ends a COPY on the server side.
            self.copy_in = false;
        }
        let Some(&(front, _)) = self.owed.front() else { return };
        match tag {
            be::PARSE_COMPLETE if front == Owed::Parse => self.pop(Outcome::Done),
            be::BIND_COMPLETE if front == Owed::Bind => self.pop(Outcome::Done),
            be::CLOSE_COMPLETE if front == Owed::Close => self.pop(Outcome::Done),
            be::ROW_DESCRIPTION | be::NO_DATA if front == Owed::Describe => self.pop(Outcome::Done),
            be::COMMAND_COMPLETE | be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED if front == Owed::Execute => {
                self.pop(Outcome::Done)
            }
            be::ERROR_RESPONSE if front.is_extended() => {
                self.pop(Outcome::Failed);
                self.discard_until_sync();
            }
            be::ERROR_RESPONSE if matches!(front, Owed::Query | Owed::FunctionCall) => self.front_failed = true,
            be::COPY_IN_RESPONSE if matches!(front, Owed::Execute | Owed::Query) => self.copy_in_started(),
            be::READY_FOR_QUERY => {
                // Completes the first Query, FunctionCall or Sync; anything
                // before it that is still listed was answered already.
                while let Some((o, n)) = self.pop_front() {
                    if matches!(o, Owed::Query | Owed::FunctionCall | Owed::Sync) {
                        let failed = std::mem::take(&mut self.front_failed);
                        self.end(if failed { Outcome::Failed } else { Outcome::Done }, n);
                        break;
                    }
                    let outcome = if o == Owed::Answered { Outcome::Skipped } else { Outcome::Done };
                    self.end(outcome, n);
                }
            }
            _ => {}
        }
    }

    fn pop(&mut self, outcome: Outcome) {
        if let Some((_, n)) = self.pop_front() {
            self.end(outcome, n);
        }
        self.drop_markers();
    }

    fn drop_markers(&mut self) {
        while self.owed.front().map(|(o, _)| *o) == Some(Owed::CopyEnd) {
            self.owed.pop_front();
        }
    }

    /// The server now ignores messages until a Sync: forget what it will
    /// not answer.
    fn discard_until_sync(&mut self) {
        while let Some(&(o, _)) = self.owed.front() {
            if o == Owed::Sync {
                return;
            }
            if let Some((_, n)) = self.pop_front() {
                self.end(Outcome::Skipped, n);
            }
        }
        self.ignore_till_sync = true;
    }

    /// COPY IN began for the front message: Syncs sent after it and before
    /// the client's CopyDone/CopyFail are ignored by the server.
    fn copy_in_started(&mut self) {
        let end = self.owed.iter().skip(1).position(|(o, _)| *o == Owed::CopyEnd).map(|p| p + 1);
        let upto = end.unwrap_or(self.owed.len());
        let mut i = 1;
        let mut limit = upto;
        while i < limit {
            if self.owed[i].0 == Owed::Sync {
                if let Some((_, n)) = self.owed.remove(i) {
                    self.end(Outcome::Skipped, n);
                }
                self.real -= 1;
                limit -= 1;
            } else {
                i += 1;
            }
        }
        if end.is_none() {
            self.copy_in = true;
        }
    }

    /// Nothing is owed: the server is waiting for the client.
    pub fn owes_nothing(&self) -> bool {
        self.real == 0 && !self.ignore_till_sync
    }

    /// The server will send nothing until the client sends more: it is
    /// discarding until a Sync, or waiting for COPY data.
    pub fn server_waits_for_client(&self) -> bool {
        self.ignore_till_sync || self.copy_in
    }

    /// The server holds nothing of an unfinished exchange: no reply owed,
    /// no unsynced batch, no COPY in progress. With ReadyForQuery 'I' this
    /// makes the connection reusable by another client.
    pub fn is_settled(&self) -> bool {
        self.owes_nothing() && !self.batch_open && !self.copy_in
    }

    /// The client is expected to send COPY data now.
    pub fn in_copy_in(&self) -> bool {
        self.copy_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(client: &[u8], server: &[u8]) -> Flow {
        let mut f: Flow = Flow::default();
        for &t in client {
            f.client(t);
        }
        for &t in server {
            f.server(t);
        }
        f
    }

    #[test]
    fn simple_query() {
        assert!(run(b"Q", b"TDCZ").is_settled());
        assert!(!run(b"Q", b"TDC").is_settled());
        assert!(run(b"QQ", b"CZCZ").is_settled());
        assert!(!run(b"QQ", b"CZ").is_settled());
    }

    #[test]
    fn extended_batch_needs_sync() {
        assert!(run(b"PBDES", b"12TDCZ").is_settled());
        let f = run(b"PBEH", b"12C");
        assert!(f.owes_nothing());
        assert!(!f.is_settled(), "unsynced batch keeps server state");
    }

    #[test]
    fn error_in_batch_discards_until_sync() {
        // Parse fails: Bind, Execute and a Query before the Sync get no reply.
        assert!(run(b"PBEQS", b"EZ").is_settled());
        // The same, with the Query and Sync sent after the error arrived.
        let mut f = run(b"P", b"E");
        assert!(!f.is_settled());
        f.client(b'Q');
        f.client(b'S');
        f.server(b'Z');
        assert!(f.is_settled());
    }

    #[test]
    fn error_in_simple_query_does_not_discard() {
        assert!(!run(b"QQ", b"EZ").is_settled());
        assert!(run(b"QQ", b"EZCZ").is_settled());
    }

    #[test]
    fn query_after_successful_batch_part() {
        // Parse ok, then the Query fails on its own: its Z still comes.
        let f = run(b"PQS", b"1EZ");
        assert!(!f.is_settled());
        assert!(run(b"PQS", b"1EZZ").is_settled());
    }

    #[test]
    fn copy_in_ignores_syncs_until_done() {
        // libpq/tokio-postgres: Bind/Execute/Sync, data, CopyDone, Sync.
        let mut f = run(b"BES", b"2G");
        assert!(f.in_copy_in());
        for t in *b"ddcS" {
            f.client(t);
        }
        assert!(!f.is_settled());
        for t in *b"CZ" {
            f.server(t);
        }
        assert!(f.is_settled());
        // The whole exchange pipelined before the server answered.
        assert!(run(b"BESddcS", b"2GCZ").is_settled());
    }

    #[test]
    fn simple_copy_in() {
        assert!(run(b"Qddc", b"GCZ").is_settled());
        // A failed COPY: the server is done with it; the client's late
        // data and CopyDone change nothing.
        let mut f = run(b"Qdd", b"GEZ");
        assert!(f.is_settled());
        f.client(b'd');
        f.client(b'c');
        assert!(f.is_settled());
    }

    #[test]
    fn copy_in_failure_in_extended_mode_waits_for_sync() {
        let mut f = run(b"BES", b"2GE");
        f.client(b'c');
        assert!(!f.is_settled());
        f.client(b'S');
        f.server(b'Z');
        assert!(f.is_settled());
    }

    #[test]
    fn stray_copy_ends_are_not_recorded() {
        let mut f = run(b"Q", b"CZ");
        for _ in 0..100_000 {
            f.client(b'c');
        }
        assert_eq!(f.owed.len(), 0);
        assert!(f.is_settled());
        // Inside a transaction on a linked server, the same.
        let mut f = run(b"QBES", b"");
        for _ in 0..1000 {
            f.client(b'f');
        }
        assert_eq!(f.owed.len(), 5, "four entries and one marker at most");
    }

    #[derive(Debug, Default, PartialEq)]
    struct N(u8);
    impl Note for N {
        fn is_plain(&self) -> bool {
            self.0 == 0
        }
    }

    #[test]
    fn notes_come_back_with_outcomes() {
        let mut f: Flow<N> = Flow::default();
        f.client_noted(b'P', N(1));
        f.client(b'B');
        f.client_noted(b'E', N(2));
        f.client_noted(b'S', N(3));
        f.client_noted(b'Q', N(4));
        for t in *b"1EZ" {
            f.server(t);
        }
        assert_eq!(f.take_ended(), Some((Outcome::Done, N(1))));
        assert_eq!(f.take_ended(), Some((Outcome::Skipped, N(2))));
        assert_eq!(f.take_ended(), Some((Outcome::Done, N(3))));
        assert_eq!(f.take_ended(), None);
        // A Query with a failing statement ends Failed at its ReadyForQuery.
        for t in *b"CEZ" {
            f.server(t);
        }
        assert_eq!(f.take_ended(), Some((Outcome::Failed, N(4))));
        assert!(f.is_settled());
    }

    #[test]
    fn answers_come_due_in_order() {
        let mut f: Flow<N> = Flow::default();
        f.client(b'B');
        f.answered(b'C', N(5));
        f.client(b'S');
        assert!(!f.answer_due());
        f.server(b'2');
        assert!(f.answer_due());
        assert_eq!(f.take_answer(), Some(N(5)));
        f.server(b'Z');
        assert!(f.is_settled());
        // After an error, a later self-answered message is skipped, as
        // PostgreSQL would discard it.
        f.client(b'B');
        f.answered(b'C', N(6));
        f.client(b'S');
        f.server(b'E');
        assert_eq!(f.take_ended(), Some((Outcome::Skipped, N(6))));
        assert!(!f.answer_due());
        f.server(b'Z');
        assert!(f.is_settled());
    }

    #[test]
    fn async_messages_change_nothing() {
        assert!(run(b"Q", b"NASCZ").is_settled());
    }
}
