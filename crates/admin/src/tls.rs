//! HTTPS for the admin API (`rest_api.ssl_cert` / `rest_api.ssl_key`):
//! rustls with the ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`.
//!
//! The certificate and key are read at start-up and again on every reload
//! ([`load`] then [`crate::AdminState::set_tls`]): new connections get the
//! renewed certificate, connections already open keep theirs. Whether the
//! API speaks HTTPS at all is fixed when it starts.
//!
//! The handshake runs inside the connection's first read or write
//! ([`AdminStream`]), not in the accept loop: a client that stalls in the
//! handshake holds up nobody else, and the listener's idle timeout applies
//! to it like to any other silent connection.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pgbalancer_config::{ConfigError, Problem, RestApiConfig};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::listener::LimitedStream;

const CERT: &str = "rest_api.ssl_cert";
const KEY: &str = "rest_api.ssl_key";

/// The server config for `r`'s certificate and key; `None` when neither is
/// set (plain HTTP). Errors name the key (`rest_api.ssl_key`) and the file,
/// and never repeat anything of a key file's content.
pub fn load(r: &RestApiConfig, origin: &str) -> Result<Option<Arc<ServerConfig>>, ConfigError> {
    let invalid = |key: &str, msg: String| ConfigError::Invalid {
        file: origin.to_string(),
        problems: vec![Problem::new(key, msg)],
    };
    let (cert_path, key_path) = match (&r.ssl_cert, &r.ssl_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        // Validation refuses this already; say it again rather than serve HTTP.
        (Some(_), None) => return Err(invalid(KEY, "required when rest_api.ssl_cert is set".into())),
        (None, Some(_)) => return Err(invalid(CERT, "required when rest_api.ssl_key is set".into())),
    };
    let certs = load_certs(cert_path).map_err(|m| invalid(CERT, m))?;
    let key = load_key(key_path).map_err(|m| invalid(KEY, m))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid(CERT, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(KEY, format!("{}: cannot be used with rest_api.ssl_cert: {e}", key_path.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let fail = |e: pem::Error| format!("{}: {}", path.display(), pem_error(&e, false));
    let certs = CertificateDer::pem_file_iter(path).map_err(fail)?.collect::<Result<Vec<_>, _>>().map_err(fail)?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate (BEGIN CERTIFICATE) in the file", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => {
                "no private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in the file".to_owned()
            }
            e => pem_error(&e, true),
        };
        format!("{}: {why}", path.display())
    })
}

/// A PEM error in words; for key files nothing of the content is repeated.
fn pem_error(e: &pem::Error, secret: bool) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => "nothing usable in the file".to_owned(),
        _ if secret => "malformed PEM".to_owned(),
        e => format!("malformed PEM: {e}"),
    }
}

/// One admin connection: plain, or TLS whose handshake runs on first use.
pub enum AdminStream {
    Plain(LimitedStream),
    Tls(Box<TlsConn>),
}

pub enum TlsConn {
    Handshake(tokio_rustls::Accept<LimitedStream>),
    Ready(tokio_rustls::server::TlsStream<LimitedStream>),
    Failed,
}

impl AdminStream {
    pub fn tls(stream: LimitedStream, config: Arc<ServerConfig>) -> AdminStream {
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
        AdminStream::Tls(Box::new(TlsConn::Handshake(accept)))
    }
}

impl TlsConn {
    /// Drives the handshake; `Ready(Ok(stream))` once it is done.
    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut tokio_rustls::server::TlsStream<LimitedStream>>> {
        if let TlsConn::Handshake(accept) = self {
            match Pin::new(accept).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(s)) => *self = TlsConn::Ready(s),
                Poll::Ready(Err(e)) => {
                    // Port scanners, plain HTTP on the HTTPS port, untrusted
                    // certificates: the client's business, not an error here.
                    tracing::debug!(error = %e, "admin API: TLS handshake failed");
                    *self = TlsConn::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match self {
            TlsConn::Ready(s) => Poll::Ready(Ok(s)),
            _ => Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "TLS handshake failed"))),
        }
    }
}

impl AsyncRead for AdminStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AdminStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            AdminStream::Tls(t) => match t.poll_ready(cx) {
                Poll::Ready(Ok(s)) => Pin::new(s).poll_read(cx, buf),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for AdminStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AdminStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            AdminStream::Tls(t) => match t.poll_ready(cx) {
                Poll::Ready(Ok(s)) => Pin::new(s).poll_write(cx, buf),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AdminStream::Plain(s) => Pin::new(s).poll_flush(cx),
            AdminStream::Tls(t) => match &mut **t {
                TlsConn::Ready(s) => Pin::new(s).poll_flush(cx),
                _ => Poll::Ready(Ok(())),
            },
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AdminStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            AdminStream::Tls(t) => match &mut **t {
                TlsConn::Ready(s) => Pin::new(s).poll_shutdown(cx),
                _ => Poll::Ready(Ok(())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, RestApiConfig) {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let r = RestApiConfig {
            ssl_cert: Some(dir.path().join("cert.pem")),
            ssl_key: Some(dir.path().join("key.pem")),
            ..RestApiConfig::default()
        };
        (dir, r)
    }

    fn problem(r: &RestApiConfig) -> Problem {
        match load(r, "f.yml") {
            Err(ConfigError::Invalid { file, problems }) if problems.len() == 1 => {
                assert_eq!(file, "f.yml");
                problems.into_iter().next().unwrap()
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("loaded"),
        }
    }

    #[test]
    fn loads_a_pair_and_names_the_key_of_a_bad_file() {
        let (dir, r) = files();
        let c = load(&r, "f.yml").unwrap().expect("a config");
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(load(&RestApiConfig::default(), "f.yml").unwrap().is_none(), "neither: plain HTTP");

        let p = problem(&RestApiConfig { ssl_key: None, ..r.clone() });
        assert_eq!(p.key, KEY);
        let p = problem(&RestApiConfig { ssl_cert: Some(dir.path().join("missing.pem")), ..r.clone() });
        assert_eq!(p.key, CERT);
        assert!(p.message.contains("missing.pem: cannot read"), "{}", p.message);

        // A key file with junk (key material, perhaps) is named, never echoed.
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA!!\n-----END PRIVATE KEY-----\n")
            .unwrap();
        let p = problem(&RestApiConfig { ssl_key: Some(junk), ..r.clone() });
        assert_eq!(p.key, KEY);
        assert!(!p.message.contains("c2VjcmV0"), "{}", p.message);
        // The certificate file as key: no key in it.
        let p = problem(&RestApiConfig { ssl_key: r.ssl_cert.clone(), ..r.clone() });
        assert_eq!(p.key, KEY);
        assert!(p.message.contains("no private key"), "{}", p.message);
        // Another key than the certificate's.
        let other = dir.path().join("other.pem");
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let p = problem(&RestApiConfig { ssl_key: Some(other), ..r.clone() });
        assert_eq!(p.key, KEY);
        assert!(p.message.contains("cannot be used with rest_api.ssl_cert"), "{}", p.message);
    }
}
