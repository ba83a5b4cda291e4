//! Framing of regular messages: 1 type byte + Int32 length (the length counts
//! itself, not the type byte).

use super::fe;

/// Bytes in a regular message header (type byte + length).
pub const HEADER_LEN: usize = 5;

/// Cap for the small frontend messages (PostgreSQL's PQ_SMALL_MESSAGE_LIMIT).
pub const SMALL_MESSAGE_LIMIT: usize = 10_000;

/// Cap for password messages.
pub const PASSWORD_MESSAGE_LIMIT: usize = 65_535;

/// Cap for SASL messages (initial response and response).
pub const SASL_MESSAGE_LIMIT: usize = 1_024;

/// The header of one regular message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Total bytes of the message including the type byte.
    pub total_len: usize,
}

impl Header {
    /// Bytes of the body (after the header).
    pub fn body_len(&self) -> usize {
        self.total_len - HEADER_LEN
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid message length {declared} for message type \"{}\"", *tag as char)]
    BadLength { tag: u8, declared: i32 },
    #[error("message of type \"{}\" too large: {declared} bytes, limit {cap}", *tag as char)]
    TooLarge { tag: u8, declared: usize, cap: usize },
    #[error("invalid frontend message type {tag}")]
    UnknownType { tag: u8 },
}

/// Reads the header at the start of `buf`, if 5 bytes are there.
///
/// `cap` is the largest total message size accepted for this message; it is
/// checked before the caller reserves anything for the body.
pub fn peek_header(buf: &[u8], cap: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let declared = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if declared < 4 {
        return Err(FrameError::BadLength { tag, declared });
    }
    let total_len = declared as usize + 1;
    if total_len > cap {
        return Err(FrameError::TooLarge { tag, declared: total_len, cap });
    }
    Ok(Some(Header { tag, total_len }))
}

/// The largest total size accepted for a frontend message of type `tag`
/// once the session is established, or an error for a type a client may not
/// send then. `large` is the configured `max_message_size`.
pub fn frontend_cap(tag: u8, large: usize) -> Result<usize, FrameError> {
    match tag {
        fe::QUERY | fe::PARSE | fe::BIND | fe::FUNCTION_CALL | fe::COPY_DATA | fe::COPY_FAIL => Ok(large),
        fe::CLOSE | fe::DESCRIBE | fe::EXECUTE | fe::SYNC | fe::FLUSH | fe::TERMINATE | fe::COPY_DONE => {
            Ok(SMALL_MESSAGE_LIMIT)
        }
        _ => Err(FrameError::UnknownType { tag }),
    }
}

/// Reads a frontend message header, applying the per-type cap.
pub fn peek_frontend(buf: &[u8], large: usize) -> Result<Option<Header>, FrameError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let cap = frontend_cap(buf[0], large)?;
    peek_header(buf, cap)
}

/// Iterates over the complete messages in a byte slice.
/// Stops at the first incomplete one; [`Frames::consumed`] says how far.
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Frames<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Frames { buf, pos: 0 }
    }

    pub fn consumed(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Frames<'a> {
    /// (type byte, body)
    type Item = Result<(u8, &'a [u8]), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        match peek_header(rest, usize::MAX) {
            Ok(Some(h)) if rest.len() >= h.total_len => {
                self.pos += h.total_len;
                Some(Ok((h.tag, &rest[HEADER_LEN..h.total_len])))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffer_needs_more() {
        assert_eq!(peek_header(b"Q\0\0", 100), Ok(None));
    }

    #[test]
    fn lengths_below_four_are_errors() {
        for declared in [-1i32, -2, 0, 3] {
            let mut b = vec![b'Q'];
            b.extend_from_slice(&declared.to_be_bytes());
            assert_eq!(peek_header(&b, 100), Err(FrameError::BadLength { tag: b'Q', declared }));
        }
    }

    #[test]
    fn cap_checked_before_body_arrives() {
        let mut b = vec![b'Q'];
        b.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
        assert!(matches!(peek_frontend(&b, 1 << 20), Err(FrameError::TooLarge { .. })));
        let mut s = vec![b'S'];
        s.extend_from_slice(&20_000i32.to_be_bytes());
        assert!(matches!(peek_frontend(&s, 1 << 20), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn unknown_type_rejected() {
        assert_eq!(peek_frontend(b"Z\0\0\0\x04", 100), Err(FrameError::UnknownType { tag: b'Z' }));
        assert_eq!(peek_frontend(b"p\0\0\0\x04", 100), Err(FrameError::UnknownType { tag: b'p' }));
    }

    #[test]
    fn frames_iterates_complete_messages() {
        let data = b"S\0\0\0\x04Q\0\0\0\x06a\0Z\0\0";
        let mut f = Frames::new(data);
        assert_eq!(f.next(), Some(Ok((b'S', &b""[..]))));
        assert_eq!(f.next(), Some(Ok((b'Q', &b"a\0"[..]))));
        assert_eq!(f.next(), None);
        assert_eq!(f.consumed(), 12);
    }
}
