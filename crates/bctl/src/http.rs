//! A minimal blocking HTTP/1.1 client for the admin API: one request per
//! connection (`Connection: close`), plain HTTP or HTTPS (rustls, ring
//! provider, the server's certificate verified against the roots given).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Why a request got no response.
pub enum Error {
    /// No TCP connection could be made.
    Connect(std::io::Error),
    /// The TLS handshake failed (certificate not trusted, wrong name, a
    /// server that does not speak TLS).
    Tls(String),
    /// Connected, but the exchange failed or the answer is not HTTP.
    Exchange(String),
}

/// A TLS client config trusting the certificates of the PEM file `ca`
/// (a CA, or a self-signed server certificate itself).
pub fn tls_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let fail = |e: rustls::pki_types::pem::Error| format!("{}: {e}", ca.display());
    let certs = CertificateDer::pem_file_iter(ca).map_err(fail)?.collect::<Result<Vec<_>, _>>().map_err(fail)?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no usable certificate (BEGIN CERTIFICATE) in the file", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `host` may be a name, an IPv4 address or an IPv6 address (with or without
/// brackets); with `tls` the server's certificate must be valid for it.
/// `timeout`: for each read and write once connected.
pub fn request(
    host: &str,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Response, Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = (bare, port).to_socket_addrs().map_err(Error::Connect)?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or(Error::Connect(last))?;
    let io = |e: std::io::Error| Error::Exchange(e.to_string());
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let host_header = if bare.contains(':') { format!("[{bare}]:{port}") } else { format!("{bare}:{port}") };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: bctl/{}\r\nAccept: application/json\r\n\
         Connection: close\r\nContent-Length: 0\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    let mut raw = Vec::new();
    match tls {
        None => {
            stream.write_all(req.as_bytes()).map_err(io)?;
            (&mut stream).take(MAX_RESPONSE).read_to_end(&mut raw).map_err(io)?;
            // Nothing, or a TLS record (an alert): an HTTPS server refusing
            // plain HTTP.
            if raw.is_empty() || matches!(raw[0], 0x15 | 0x16) {
                return Err(Error::Exchange(
                    "no HTTP answer (the admin API may be serving HTTPS: give --cacert FILE, or --config with \
                     rest_api.ssl_cert)"
                        .into(),
                ));
            }
        }
        Some(config) => {
            let name = ServerName::try_from(bare.to_owned()).map_err(|e| Error::Tls(format!("{bare}: {e}")))?;
            let mut conn =
                rustls::ClientConnection::new(config.clone(), name).map_err(|e| Error::Tls(e.to_string()))?;
            while conn.is_handshaking() {
                conn.complete_io(&mut stream).map_err(|e| Error::Tls(e.to_string()))?;
            }
            let mut tls = rustls::StreamOwned::new(conn, stream);
            tls.write_all(req.as_bytes()).map_err(io)?;
            match (&mut tls).take(MAX_RESPONSE).read_to_end(&mut raw) {
                Ok(_) => {}
                // Closed without close_notify: what arrived is checked
                // against Content-Length below.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
    parse(&raw).map_err(Error::Exchange)
}

fn parse(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| "the connection closed before a complete HTTP response".to_string())?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "response headers are not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP response: {status_line:?}"));
    }
    let status: u16 = code.parse().map_err(|_| format!("bad HTTP status line: {status_line:?}"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    let decoded;
    if chunked {
        decoded = dechunk(body)?;
        body = &decoded;
    } else if let Some((_, len)) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        let len: usize = len.parse().map_err(|_| format!("bad Content-Length {len:?}"))?;
        if body.len() < len {
            return Err(format!("response body cut short ({} of {len} bytes)", body.len()));
        }
        body = &body[..len];
    }
    Ok(Response { status, headers, body: String::from_utf8_lossy(body).into_owned() })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").ok_or("bad chunked encoding")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("response body cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").ok().unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "{}"));
        let r = parse(
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
        )
        .ok()
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (401, "{\"a\":1}"));
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse(b"SSH-2.0\r\n\r\n").is_err());
    }
}
