//! Rewrites a client's extended-protocol messages for a pooled server in
//! transaction and statement mode (see [`crate::prepared`]):
//!
//! * Parse of a named statement: registered under its shared name; when
//!   the server already has it, pgbalancer answers ParseComplete itself;
//! * Bind/Describe of a named statement: renamed, with a Parse of pgbalancer's
//!   own put in front when the server lacks it (its reply is hidden);
//! * Close of a named statement: forgotten for this client and answered
//!   by pgbalancer (other clients may still use it on the server).
//!
//! Unnamed statements and portals pass through untouched.

use std::sync::Arc;

use bytes::BytesMut;

use crate::prepared::{is_reserved, ClientStatements, Registry, ServerStatements, Statement};
use crate::protocol::flow::{self, Flow};
use crate::protocol::{be, fe, frame, read, sqlstate, write, TxStatus};

/// What the session attached to a message it sent, handed back by
/// [`Flow`] once the server answered (or skipped) it.
#[derive(Debug, Default)]
pub enum Note {
    #[default]
    Plain,
    /// pgbalancer's own Close of this statement: its CloseComplete is not
    /// the client's.
    OwnClose(u64),
    /// pgbalancer's own Parse of a statement the client uses next.
    OwnParse(Arc<Statement>),
    /// The client's Parse, under the shared name.
    ClientParse { stmt: Arc<Statement>, name: Box<[u8]> },
    /// A Bind or Describe of a shared statement.
    Uses(Arc<Statement>),
    /// A message pgbalancer answers itself.
    Answer(Answer),
    /// pgbalancer's own Parse that fails on purpose, so that the server
    /// aborts the batch (and transaction) exactly as PostgreSQL would for
    /// the client's message; its error is replaced by this one.
    Replace(Answer),
    /// A lone `DISCARD ALL`: once it succeeded, the server holds nothing of
    /// this client's, and the client's statements made before it (up to
    /// this [`ClientStatements::mark`]) are gone.
    Discard(u64),
    /// A Query with `DEALLOCATE ALL` or `DISCARD ALL`: once it succeeded,
    /// the client's statements made before it are gone.
    DropStatements(u64),
}

/// What becomes of the server's reply to a noted message.
#[derive(Debug)]
pub enum Reply {
    Forward,
    /// pgbalancer's own business: not for the client.
    Hide,
    /// Replaced by pgbalancer's answer.
    Replace(Answer),
}

/// A Parse the server rejects ("cannot insert multiple commands into a
/// prepared statement") without touching any named statement.
const FAILING_PARSE: &[u8] = b"SELECT 1; SELECT 2\0\0\0";

impl flow::Note for Note {
    fn is_plain(&self) -> bool {
        matches!(self, Note::Plain)
    }
}

/// A reply pgbalancer makes in the server's place.
#[derive(Debug)]
pub enum Answer {
    /// ParseComplete for a statement the server already had.
    Parsed { name: Box<[u8]>, id: u64 },
    /// CloseComplete for a statement the client closed (restored if
    /// PostgreSQL would have discarded the Close).
    Closed { name: Box<[u8]>, stmt: Option<Arc<Statement>> },
    /// `DEALLOCATE name` of a protocol-level statement, answered when due.
    Deallocate { name: Box<[u8]> },
    /// An error PostgreSQL would have raised (in place of the server's).
    Error { code: &'static str, message: String },
}

impl Answer {
    /// Appends the reply; `tx` is the transaction status to report.
    pub fn write(&self, out: &mut BytesMut, tx: TxStatus) {
        match self {
            Answer::Parsed { .. } => write::empty(out, be::PARSE_COMPLETE),
            Answer::Closed { .. } => write::empty(out, be::CLOSE_COMPLETE),
            Answer::Deallocate { .. } if tx == TxStatus::Failed => {
                write::error_response(
                    out,
                    write::Severity::Error,
                    sqlstate::IN_FAILED_SQL_TRANSACTION,
                    "current transaction is aborted, commands ignored until end of transaction block",
                );
                write::ready_for_query(out, tx);
            }
            Answer::Deallocate { .. } => {
                write::command_complete(out, "DEALLOCATE");
                write::ready_for_query(out, tx);
            }
            Answer::Error { code, message } => write::error_response(out, write::Severity::Error, code, message),
        }
    }
}

/// A batch of complete client messages on its way to the server: frames
/// that need no change go out as they are, in one piece when nothing in
/// the batch changed.
pub struct Batch<'a> {
    pub src: &'a [u8],
    copied: usize,
    pub out: &'a mut BytesMut,
    rewritten: bool,
}

impl<'a> Batch<'a> {
    pub fn new(src: &'a [u8], out: &'a mut BytesMut) -> Batch<'a> {
        out.clear();
        Batch { src, copied: 0, out, rewritten: false }
    }

    /// The frame at `src[at..end]` is replaced (or dropped): everything
    /// before it goes out first, then whatever the caller writes to `out`.
    pub fn replace(&mut self, at: usize, end: usize) {
        self.out.extend_from_slice(&self.src[self.copied..at]);
        self.copied = end;
        self.rewritten = true;
    }

    /// True when the bytes to send are in `out` (and not `src` as it is).
    pub fn finish(&mut self) -> bool {
        if self.rewritten {
            self.out.extend_from_slice(&self.src[self.copied..]);
            self.copied = self.src.len();
        }
        self.rewritten
    }
}

/// What happened to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Goes to the server as it is; the caller records it in the flow.
    AsIs,
    /// Rewritten or answered; recorded.
    Done,
}

pub struct Rewriter<'a> {
    pub registry: &'a Registry,
    /// The client settings a statement's meaning depends on (see
    /// [`Registry::register`]).
    pub variant: &'a [u8],
    pub client: &'a mut ClientStatements,
    pub server: &'a mut ServerStatements,
    pub flow: &'a mut Flow<Note>,
    /// `max_prepared_statements`.
    pub cap: usize,
}

impl Rewriter<'_> {
    /// Handles the frame `batch.src[at..end]` of type `tag`.
    pub fn frame(&mut self, batch: &mut Batch, tag: u8, at: usize, end: usize) -> Handled {
        let body = &batch.src[at + frame::HEADER_LEN..end];
        match tag {
            fe::PARSE => self.parse(batch, body, at, end),
            fe::BIND => {
                let Some((portal, name, rest)) = read::bind(body) else { return Handled::AsIs };
                let Some(stmt) = self.shared(name) else { return self.refuse_reserved(batch, name, at, end) };
                batch.replace(at, end);
                self.prepare_on_server(batch.out, &stmt);
                write::bind(batch.out, portal, &stmt.name, rest);
                self.flow.client_noted(fe::BIND, Note::Uses(stmt));
                Handled::Done
            }
            fe::DESCRIBE => {
                let Some((b'S', name)) = read::target(body) else { return Handled::AsIs };
                let Some(stmt) = self.shared(name) else { return self.refuse_reserved(batch, name, at, end) };
                batch.replace(at, end);
                self.prepare_on_server(batch.out, &stmt);
                write::describe(batch.out, b'S', &stmt.name);
                self.flow.client_noted(fe::DESCRIBE, Note::Uses(stmt));
                Handled::Done
            }
            fe::SYNC => {
                self.server.batch_ended();
                Handled::AsIs
            }
            _ => Handled::AsIs,
        }
    }

    fn parse(&mut self, batch: &mut Batch, body: &[u8], at: usize, end: usize) -> Handled {
        let Some((name, rest)) = read::parse(body) else { return Handled::AsIs };
        if name.is_empty() {
            return Handled::AsIs;
        }
        batch.replace(at, end);
        if self.client.contains(name) || is_reserved(name) {
            let message = format!("prepared statement \"{}\" already exists", String::from_utf8_lossy(name));
            self.fail(batch.out, sqlstate::DUPLICATE_PREPARED_STATEMENT, message);
            return Handled::Done;
        }
        let stmt = self.registry.register(rest, self.variant);
        self.client.insert(name, stmt.clone());
        if self.server.touch(stmt.id) {
            let answer = Answer::Parsed { name: name.into(), id: stmt.id };
            self.flow.answered(fe::PARSE, Note::Answer(answer));
        } else {
            self.send_parse(batch.out, &stmt);
            self.flow.client_noted(fe::PARSE, Note::ClientParse { stmt, name: name.into() });
        }
        Handled::Done
    }

    /// A Bind or Describe of a name the client has not prepared: passed on,
    /// unless it names one of pgbalancer's shared statements, which the
    /// client must not reach.
    fn refuse_reserved(&mut self, batch: &mut Batch, name: &[u8], at: usize, end: usize) -> Handled {
        if !is_reserved(name) {
            return Handled::AsIs;
        }
        batch.replace(at, end);
        let message = format!("prepared statement \"{}\" does not exist", String::from_utf8_lossy(name));
        self.fail(batch.out, sqlstate::INVALID_SQL_STATEMENT_NAME, message);
        Handled::Done
    }

    /// Makes the server fail here (so it discards until Sync and aborts the
    /// transaction, as PostgreSQL would), with this error for the client.
    fn fail(&mut self, out: &mut BytesMut, code: &'static str, message: String) {
        write::parse(out, "", FAILING_PARSE);
        self.flow.client_noted(fe::PARSE, Note::Replace(Answer::Error { code, message }));
    }

    /// The client's current statement called `name`, if it is a named
    /// protocol-level one pgbalancer tracks.
    fn shared(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        if name.is_empty() {
            return None;
        }
        self.client.get(name).cloned()
    }

    /// Puts a Parse of `stmt` in front when this server lacks it.
    fn prepare_on_server(&mut self, out: &mut BytesMut, stmt: &Arc<Statement>) {
        if self.server.touch(stmt.id) {
            return;
        }
        self.send_parse(out, stmt);
        self.flow.client_noted(fe::PARSE, Note::OwnParse(stmt.clone()));
    }

    /// Writes Close + Parse of `stmt` under its shared name (the Close
    /// makes sure no older copy is in the way), closing the least recently
    /// used statements first when the server is at `cap`. The caller
    /// records the Parse in the flow.
    fn send_parse(&mut self, out: &mut BytesMut, stmt: &Statement) {
        while let Some(old) = self.server.evict(self.cap) {
            write::close(out, b'S', &crate::prepared::server_name(old));
            self.flow.client_noted(fe::CLOSE, Note::OwnClose(old));
        }
        write::close(out, b'S', &stmt.name);
        self.flow.client_noted(fe::CLOSE, Note::OwnClose(stmt.id));
        write::parse(out, &stmt.name, &stmt.body);
        self.server.insert(stmt.id);
    }
}

/// A Close of a statement this client prepared (by protocol): forgotten
/// for this client and answered by pgbalancer; needs no server.
pub fn close(
    client: &mut ClientStatements,
    flow: &mut Flow<Note>,
    batch: &mut Batch,
    at: usize,
    end: usize,
) -> Handled {
    let body = &batch.src[at + frame::HEADER_LEN..end];
    let Some((b'S', name)) = read::target(body) else { return Handled::AsIs };
    // Closing a statement that does not exist is no error in PostgreSQL.
    let stmt = client.remove(name);
    if name.is_empty() || (stmt.is_none() && !is_reserved(name)) {
        return Handled::AsIs;
    }
    batch.replace(at, end);
    flow.answered(fe::CLOSE, Note::Answer(Answer::Closed { name: name.into(), stmt }));
    Handled::Done
}

/// True when `close` will answer this Close without a server.
pub fn closes_known(client: &ClientStatements, body: &[u8]) -> bool {
    matches!(read::target(body), Some((b'S', name)) if !name.is_empty() && (client.contains(name) || is_reserved(name)))
}

/// Does the bookkeeping for a noted message that ended and says what
/// becomes of its reply. `error` holds the ErrorResponse fields when it
/// failed.
pub fn ended(
    outcome: flow::Outcome,
    note: Note,
    error: Option<&read::ErrorFields>,
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    registry: &Registry,
) -> Reply {
    use flow::Outcome::*;
    match (outcome, note) {
        (Done, Note::OwnClose(_) | Note::OwnParse(_) | Note::Replace(_)) => Reply::Hide,
        (Failed, Note::Replace(answer)) => Reply::Replace(answer),
        (Failed | Skipped, Note::OwnClose(id)) => {
            // Still prepared there.
            server.restore(id);
            Reply::Forward
        }
        (Failed | Skipped, Note::OwnParse(s)) => {
            server.remove(s.id);
            Reply::Forward
        }
        (Failed | Skipped, Note::ClientParse { stmt, name }) => {
            client.remove_if(&name, stmt.id);
            server.remove(stmt.id);
            Reply::Forward
        }
        // PostgreSQL would have discarded these.
        (Skipped, Note::Answer(Answer::Parsed { name, id })) => {
            client.remove_if(&name, id);
            Reply::Forward
        }
        (Skipped, Note::Answer(Answer::Closed { name, stmt: Some(stmt) })) => {
            if !client.contains(&name) {
                client.insert(&name, stmt);
            }
            Reply::Forward
        }
        (Done, Note::DropStatements(mark)) => {
            client.clear_before(mark);
            Reply::Forward
        }
        (Failed, Note::Uses(s)) => {
            match error.and_then(|e| e.code.as_deref()) {
                // "cached plan must not change result type" (checked by code
                // only: the message is translated with lc_messages). The
                // client got PostgreSQL's error; its next use prepares the
                // statement afresh. Other clients get the error themselves
                // on their next use, so they know to describe it again.
                Some(sqlstate::FEATURE_NOT_SUPPORTED) => client.renew(&s, registry),
                // Someone deallocated it behind pgbalancer's back.
                Some(sqlstate::INVALID_SQL_STATEMENT_NAME) => server.remove(s.id),
                _ => {}
            }
            Reply::Forward
        }
        _ => Reply::Forward,
    }
}
