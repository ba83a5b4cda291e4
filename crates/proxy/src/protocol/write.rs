//! Writers for the messages pgbalancer sends itself. Each appends one
//! message to the caller's buffer and patches its length.

use bytes::{BufMut, BytesMut};

use super::{auth_code, be, fe, startup, TxStatus};

/// Starts a regular message; returns where its length word is.
fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

/// Writes the length of the message whose length word is at `at`.
fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    // A NUL inside would mis-frame the message; cut at it.
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    buf.put_slice(&s[..end]);
    buf.put_u8(0);
}

// ---- backend messages (pgbalancer → client) ----

/// Severity of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Warning,
    Notice,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
        }
    }
}

/// ErrorResponse ('E'), or NoticeResponse ('N') for warning/notice severity.
pub fn error_response(buf: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let tag = match severity {
        Severity::Error | Severity::Fatal => be::ERROR_RESPONSE,
        _ => be::NOTICE_RESPONSE,
    };
    let at = begin(buf, tag);
    for field in [b'S', b'V'] {
        buf.put_u8(field);
        put_cstr(buf, severity.as_str().as_bytes());
    }
    buf.put_u8(b'C');
    put_cstr(buf, code.as_bytes());
    buf.put_u8(b'M');
    put_cstr(buf, message.as_bytes());
    buf.put_u8(0);
    finish(buf, at);
}

/// A message without a body (ParseComplete, CloseComplete, NoData …).
pub fn empty(buf: &mut BytesMut, tag: u8) {
    let at = begin(buf, tag);
    finish(buf, at);
}

pub fn command_complete(buf: &mut BytesMut, command_tag: &str) {
    let at = begin(buf, be::COMMAND_COMPLETE);
    put_cstr(buf, command_tag.as_bytes());
    finish(buf, at);
}

/// RowDescription of text columns (type `text`, text format), as the SQL
/// admin console answers.
pub fn row_description(buf: &mut BytesMut, columns: &[&str]) {
    const TEXT_OID: i32 = 25;
    let at = begin(buf, be::ROW_DESCRIPTION);
    buf.put_i16(columns.len() as i16);
    for name in columns {
        put_cstr(buf, name.as_bytes());
        buf.put_i32(0); // table OID
        buf.put_i16(0); // column number
        buf.put_i32(TEXT_OID);
        buf.put_i16(-1); // type size: variable
        buf.put_i32(-1); // type modifier
        buf.put_i16(0); // text format
    }
    finish(buf, at);
}

/// DataRow of text values (None is NULL).
pub fn data_row<'a>(buf: &mut BytesMut, values: impl ExactSizeIterator<Item = Option<&'a str>>) {
    let at = begin(buf, be::DATA_ROW);
    buf.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(v) => {
                buf.put_i32(v.len() as i32);
                buf.put_slice(v.as_bytes());
            }
            None => buf.put_i32(-1),
        }
    }
    finish(buf, at);
}

pub fn authentication_ok(buf: &mut BytesMut) {
    let at = begin(buf, be::AUTHENTICATION);
    buf.put_i32(auth_code::OK);
    finish(buf, at);
}

/// AuthenticationSASL listing one mechanism.
pub fn authentication_sasl(buf: &mut BytesMut, mechanism: &str) {
    let at = begin(buf, be::AUTHENTICATION);
    buf.put_i32(auth_code::SASL);
    put_cstr(buf, mechanism.as_bytes());
    buf.put_u8(0);
    finish(buf, at);
}

pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, be::AUTHENTICATION);
    buf.put_i32(auth_code::SASL_CONTINUE);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, be::AUTHENTICATION);
    buf.put_i32(auth_code::SASL_FINAL);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let at = begin(buf, be::PARAMETER_STATUS);
    put_cstr(buf, name.as_bytes());
    put_cstr(buf, value.as_bytes());
    finish(buf, at);
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, key: i32) {
    let at = begin(buf, be::BACKEND_KEY_DATA);
    buf.put_i32(pid);
    buf.put_i32(key);
    finish(buf, at);
}

pub fn ready_for_query(buf: &mut BytesMut, status: TxStatus) {
    let at = begin(buf, be::READY_FOR_QUERY);
    buf.put_u8(status.as_byte());
    finish(buf, at);
}

/// NegotiateProtocolVersion: the newest protocol version we support (as
/// PostgreSQL sends it: the whole version code, 3.0 = 196608) and the
/// protocol options we did not recognise.
pub fn negotiate_protocol_version<'a>(
    buf: &mut BytesMut,
    newest: i32,
    unrecognized: impl ExactSizeIterator<Item = &'a str>,
) {
    let at = begin(buf, be::NEGOTIATE_PROTOCOL_VERSION);
    buf.put_i32(newest);
    buf.put_i32(unrecognized.len() as i32);
    for name in unrecognized {
        put_cstr(buf, name.as_bytes());
    }
    finish(buf, at);
}

// ---- frontend messages (pgbalancer → server) ----

/// StartupMessage for protocol 3.0.
pub fn startup_message<'a>(buf: &mut BytesMut, params: impl IntoIterator<Item = (&'a str, &'a str)>) {
    let at = buf.len();
    buf.put_i32(0);
    buf.put_i32(startup::PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(buf, k.as_bytes());
        put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    finish(buf, at);
}

pub fn cancel_request(buf: &mut BytesMut, pid: i32, key: i32) {
    buf.put_i32(16);
    buf.put_i32(startup::CANCEL_REQUEST_CODE);
    buf.put_i32(pid);
    buf.put_i32(key);
}

pub fn query(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, fe::QUERY);
    put_cstr(buf, sql.as_bytes());
    finish(buf, at);
}

/// Parse: statement `name`, then `rest` (query, NUL, parameter types) as
/// the client sent it.
pub fn parse(buf: &mut BytesMut, name: &str, rest: &[u8]) {
    let at = begin(buf, fe::PARSE);
    put_cstr(buf, name.as_bytes());
    buf.put_slice(rest);
    finish(buf, at);
}

/// Bind of `portal` to statement `name`; `rest` (formats, parameters,
/// result formats) as the client sent it.
pub fn bind(buf: &mut BytesMut, portal: &[u8], name: &str, rest: &[u8]) {
    let at = begin(buf, fe::BIND);
    put_cstr(buf, portal);
    put_cstr(buf, name.as_bytes());
    buf.put_slice(rest);
    finish(buf, at);
}

/// Describe (`kind` b'S' statement or b'P' portal).
pub fn describe(buf: &mut BytesMut, kind: u8, name: &str) {
    let at = begin(buf, fe::DESCRIBE);
    buf.put_u8(kind);
    put_cstr(buf, name.as_bytes());
    finish(buf, at);
}

/// Close (`kind` b'S' statement or b'P' portal).
pub fn close(buf: &mut BytesMut, kind: u8, name: &str) {
    let at = begin(buf, fe::CLOSE);
    buf.put_u8(kind);
    put_cstr(buf, name.as_bytes());
    finish(buf, at);
}

pub fn terminate(buf: &mut BytesMut) {
    let at = begin(buf, fe::TERMINATE);
    finish(buf, at);
}

/// PasswordMessage with a cleartext or md5 password.
pub fn password_message(buf: &mut BytesMut, password: &str) {
    let at = begin(buf, fe::PASSWORD);
    put_cstr(buf, password.as_bytes());
    finish(buf, at);
}

pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let at = begin(buf, fe::PASSWORD);
    put_cstr(buf, mechanism.as_bytes());
    buf.put_i32(data.len() as i32);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, fe::PASSWORD);
    buf.put_slice(data);
    finish(buf, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::Frames;
    use crate::protocol::read::ErrorFields;

    #[test]
    fn error_response_round_trips() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Fatal, "08P01", "bad\0thing");
        let (tag, body) = Frames::new(&b).next().unwrap().unwrap();
        assert_eq!(tag, b'E');
        let f = ErrorFields::parse(body);
        assert_eq!(f.code.as_deref(), Some("08P01"));
        assert_eq!(f.message.as_deref(), Some("bad"));
        assert_eq!(f.severity.as_deref(), Some("FATAL"));
    }

    #[test]
    fn startup_message_layout() {
        let mut b = BytesMut::new();
        startup_message(&mut b, [("user", "u")]);
        assert_eq!(&b[..], b"\0\0\0\x10\0\x03\0\0user\0u\0\0");
    }
}
