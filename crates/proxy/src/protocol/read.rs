//! Decoders for the server messages pgbalancer must look into. All are total:
//! any input gives a value or `None`, never a panic.

/// Fields of an ErrorResponse or NoticeResponse body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
}

impl ErrorFields {
    pub fn parse(body: &[u8]) -> ErrorFields {
        let mut out = ErrorFields::default();
        let mut rest = body;
        while let Some((&field, after)) = rest.split_first() {
            if field == 0 {
                break;
            }
            let Some((value, after)) = cstr(after) else { break };
            let value = String::from_utf8_lossy(value).into_owned();
            match field {
                b'V' => out.severity = Some(value),
                b'S' if out.severity.is_none() => out.severity = Some(value),
                b'C' => out.code = Some(value),
                b'M' => out.message = Some(value),
                _ => {}
            }
            rest = after;
        }
        out
    }
}

/// Parse body: (statement name, the rest: query, NUL, parameter types).
pub fn parse(body: &[u8]) -> Option<(&[u8], &[u8])> {
    cstr(body)
}

/// The query text of a Parse body's rest (after the statement name): the
/// text up to its NUL (parameter types follow).
pub fn parse_query(rest: &[u8]) -> Option<&str> {
    let (text, _) = cstr(rest)?;
    std::str::from_utf8(text).ok()
}

/// Bind body: (portal, statement name, the rest).
pub fn bind(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (portal, rest) = cstr(body)?;
    let (name, rest) = cstr(rest)?;
    Some((portal, name, rest))
}

/// Describe or Close body: (kind b'S'/b'P', name).
pub fn target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    let (name, _) = cstr(rest)?;
    Some((kind, name))
}

/// DataRow body → its columns as text (None for NULL).
pub fn data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let (n, mut rest) = body.split_first_chunk::<2>()?;
    let n = i16::from_be_bytes(*n);
    let mut cols = Vec::with_capacity(usize::try_from(n).ok()?.min(rest.len() / 4));
    for _ in 0..n {
        let (len, after) = rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            cols.push(None);
            rest = after;
            continue;
        }
        let len = len as usize;
        if after.len() < len {
            return None;
        }
        cols.push(Some(String::from_utf8_lossy(&after[..len]).into_owned()));
        rest = &after[len..];
    }
    Some(cols)
}

/// Splits a NUL-terminated string off the front.
pub fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = memchr::memchr(0, b)?;
    Some((&b[..nul], &b[nul + 1..]))
}

/// ParameterStatus body → (name, value).
pub fn parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (name, rest) = cstr(body)?;
    let (value, _) = cstr(rest)?;
    Some((std::str::from_utf8(name).ok()?, std::str::from_utf8(value).ok()?))
}

/// BackendKeyData body → (pid, key).
pub fn backend_key_data(body: &[u8]) -> Option<(i32, i32)> {
    if body.len() != 8 {
        return None;
    }
    Some((
        i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
    ))
}

/// Authentication ('R') body → (code, rest).
pub fn authentication(body: &[u8]) -> Option<(i32, &[u8])> {
    if body.len() < 4 {
        return None;
    }
    Some((i32::from_be_bytes([body[0], body[1], body[2], body[3]]), &body[4..]))
}

/// The NUL-terminated query text of a Query ('Q') body, if well formed.
pub fn query_text(body: &[u8]) -> Option<&str> {
    let (text, rest) = cstr(body)?;
    if !rest.is_empty() {
        return None;
    }
    std::str::from_utf8(text).ok()
}

/// SASLInitialResponse body → (mechanism, client-first-message).
/// The inner length is checked against the bytes present; -1 means no data.
pub fn sasl_initial_response(body: &[u8]) -> Option<(&str, &[u8])> {
    let (mech, rest) = cstr(body)?;
    if rest.len() < 4 {
        return None;
    }
    let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let data = &rest[4..];
    if len == -1 && data.is_empty() {
        return Some((std::str::from_utf8(mech).ok()?, data));
    }
    if len < 0 || len as usize != data.len() {
        return None;
    }
    Some((std::str::from_utf8(mech).ok()?, data))
}

/// The mechanisms listed in an AuthenticationSASL request.
pub fn sasl_mechanisms(mut rest: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (m, after) = cstr(rest)?;
        if m.is_empty() {
            return None;
        }
        rest = after;
        Some(m)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_without_sqlstate() {
        let f = ErrorFields::parse(b"SERROR\0Mboom\0\0");
        assert_eq!(f.code, None);
        assert_eq!(f.message.as_deref(), Some("boom"));
    }

    #[test]
    fn sasl_inner_length_must_match() {
        let mut b = b"SCRAM-SHA-256\0".to_vec();
        b.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
        b.extend_from_slice(b"n,,n=,r=abc");
        assert_eq!(sasl_initial_response(&b), None);
    }

    #[test]
    fn query_text_needs_terminator() {
        assert_eq!(query_text(b"select 1\0"), Some("select 1"));
        assert_eq!(query_text(b"select 1"), None);
        assert_eq!(query_text(b""), None);
    }
}
