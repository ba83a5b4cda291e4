//! Startup-phase packets: Int32 length + Int32 code, no type byte.

/// Smallest and largest startup packet PostgreSQL accepts (total bytes).
pub const MIN_STARTUP_LEN: usize = 8;
pub const MAX_STARTUP_LEN: usize = 10_000;

pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// A parsed startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, key: i32 },
    Startup(StartupMessage),
}

/// A StartupMessage: protocol version and parameters in the client's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The last value given for `name` (PostgreSQL lets later pairs win).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Names of `_pq_.` protocol options, which pgbalancer does not support.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params.iter().filter(|(k, _)| k.starts_with("_pq_.")).map(|(k, _)| k.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// Bad total length: the connection is closed without a reply, as
    /// PostgreSQL does.
    #[error("invalid length of startup packet: {0}")]
    BadLength(i64),
    /// CancelRequest of the wrong size: closed without reply.
    #[error("invalid length of cancel request")]
    BadCancelLength,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: expected terminator as last byte")]
    BadLayout,
    #[error("invalid byte sequence for encoding \"UTF8\" in startup packet")]
    BadUtf8,
}

/// Reads the Int32 length at the start of a startup packet, if present, and
/// checks it against the allowed range before anything is reserved.
pub fn peek_startup_len(buf: &[u8]) -> Result<Option<usize>, StartupError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < MIN_STARTUP_LEN as i32 || len as i64 > MAX_STARTUP_LEN as i64 {
        return Err(StartupError::BadLength(len as i64));
    }
    Ok(Some(len as usize))
}

/// Parses one complete startup packet (`packet` includes the length word).
pub fn parse_startup(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    if packet.len() < MIN_STARTUP_LEN || packet.len() > MAX_STARTUP_LEN {
        return Err(StartupError::BadLength(packet.len() as i64));
    }
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    match code {
        SSL_REQUEST_CODE if body.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if body.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            if body.len() != 8 {
                return Err(StartupError::BadCancelLength);
            }
            let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            let key = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            Ok(StartupPacket::Cancel { pid, key })
        }
        _ => {
            let major = (code as u32 >> 16) as u16;
            let minor = (code as u32 & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol { major, minor });
            }
            Ok(StartupPacket::Startup(StartupMessage { major, minor, params: parse_params(body)? }))
        }
    }
}

/// NUL-terminated name/value pairs, then one final NUL that must be the
/// last byte.
fn parse_params(body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    if body.last() != Some(&0) {
        return Err(StartupError::BadLayout);
    }
    let mut params = Vec::new();
    let mut rest = &body[..body.len() - 1];
    while !rest.is_empty() {
        let (name, after) = split_cstr(rest).ok_or(StartupError::BadLayout)?;
        let (value, after) = split_cstr(after).ok_or(StartupError::BadLayout)?;
        if name.is_empty() {
            return Err(StartupError::BadLayout);
        }
        let name = std::str::from_utf8(name).map_err(|_| StartupError::BadUtf8)?;
        let value = std::str::from_utf8(value).map_err(|_| StartupError::BadUtf8)?;
        params.push((name.to_owned(), value.to_owned()));
        rest = after;
    }
    Ok(params)
}

fn split_cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = b.iter().position(|&c| c == 0)?;
    Some((&b[..nul], &b[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, body: &[u8]) -> Vec<u8> {
        let mut p = ((body.len() + 8) as i32).to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn lengths_out_of_range() {
        for len in [0i32, 3, 7, -1, 10_001, 0x7fff_ffff] {
            assert!(peek_startup_len(&len.to_be_bytes()).is_err(), "{len}");
        }
        assert_eq!(peek_startup_len(&8i32.to_be_bytes()), Ok(Some(8)));
    }

    #[test]
    fn startup_params() {
        let p = packet(PROTOCOL_3_0, b"user\0app\0database\0db\0\0");
        let StartupPacket::Startup(m) = parse_startup(&p).unwrap() else { panic!() };
        assert_eq!(m.get("user"), Some("app"));
        assert_eq!(m.get("database"), Some("db"));
        assert_eq!((m.major, m.minor), (3, 0));
    }

    #[test]
    fn bad_layouts() {
        for body in [&b"user\0app\0"[..], b"user\0\0", b"user\0app\0\0x", b"\0app\0\0"] {
            let p = packet(PROTOCOL_3_0, body);
            assert_eq!(parse_startup(&p), Err(StartupError::BadLayout), "{body:?}");
        }
    }

    #[test]
    fn protocol_versions() {
        let p = packet(2 << 16, b"\0");
        assert_eq!(parse_startup(&p), Err(StartupError::UnsupportedProtocol { major: 2, minor: 0 }));
        let p = packet((3 << 16) | 9, b"user\0u\0_pq_.x\0y\0\0");
        let StartupPacket::Startup(m) = parse_startup(&p).unwrap() else { panic!() };
        assert_eq!(m.minor, 9);
        assert_eq!(m.protocol_options().collect::<Vec<_>>(), ["_pq_.x"]);
    }

    #[test]
    fn cancel_needs_exactly_16_bytes() {
        let p = packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(parse_startup(&p), Ok(StartupPacket::Cancel { pid: 1, key: 2 }));
        let p = packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 1]);
        assert_eq!(parse_startup(&p), Err(StartupError::BadCancelLength));
    }

    #[test]
    fn invalid_utf8() {
        let p = packet(PROTOCOL_3_0, b"user\0\xff\xfe\0\0");
        assert_eq!(parse_startup(&p), Err(StartupError::BadUtf8));
    }
}
