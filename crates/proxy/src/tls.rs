//! TLS on both sides, with rustls and its ring provider, TLS 1.2 and 1.3
//! only.
//!
//! Clients: the acceptor (certificate, key, optional client CA) is built
//! from the config and kept in an `ArcSwapOption`, so a reload swaps the
//! certificate for new handshakes while connected clients keep theirs.
//! Backends: how pgbalancer opens TLS to PostgreSQL (SSLRequest, then a
//! handshake verified as `backend_sslmode` says), also swapped on reload.
//! See `docs/tls.md`.

use std::io;
use std::path::Path;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use pgbalancer_config::{BackendSslMode, ClientSslMode, Config};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The ALPN protocol PostgreSQL 17 defines; required for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// First byte of a TLS record carrying a handshake (a ClientHello, when a
/// client starts with direct TLS).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12, &rustls::version::TLS13];

/// A TLS setting that cannot be used, with the config key it comes from.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

impl TlsError {
    fn new(key: &'static str, message: impl Into<String>) -> TlsError {
        TlsError { key, message: message.into() }
    }
}

/// What clients are offered (only when `ssl` is on).
pub struct ClientTls {
    pub config: Arc<ServerConfig>,
    /// `allow` or `require`.
    pub mode: ClientSslMode,
    /// Direct TLS (first byte 0x16, ALPN `postgresql`) is accepted.
    pub direct: bool,
    /// SCRAM `tls-server-end-point` channel binding data: the hash of the
    /// certificate presented (RFC 5929); None when its signature algorithm
    /// names no hash (then `SCRAM-SHA-256-PLUS` is not offered).
    pub end_point: Option<Arc<[u8]>>,
}

/// How server connections are opened.
pub struct BackendTls {
    pub mode: BackendSslMode,
    /// None with `disable`.
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls").field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl BackendTls {
    /// Plaintext: no SSLRequest is sent.
    pub const PLAINTEXT: BackendTls = BackendTls { mode: BackendSslMode::Disable, config: None };

    /// Builds the backend side of `c` (reads `backend_sslrootcert`).
    pub fn from_config(c: &Config) -> Result<BackendTls, TlsError> {
        let mode = c.backend_ssl_mode();
        if mode == BackendSslMode::Disable {
            return Ok(BackendTls::PLAINTEXT);
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError::new("backend_sslmode", e.to_string()))?;
        let mut config = match mode {
            BackendSslMode::Disable => return Ok(BackendTls::PLAINTEXT),
            // Encrypted, not authenticated: as libpq without a root certificate.
            BackendSslMode::Prefer | BackendSslMode::Require => {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate)).with_no_client_auth()
            }
            BackendSslMode::VerifyCa | BackendSslMode::VerifyFull => {
                let key = "backend_sslrootcert";
                let path = c.backend_sslrootcert.as_deref().ok_or_else(|| TlsError::new(key, "required"))?;
                let roots = Arc::new(load_roots(key, path)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| TlsError::new(key, format!("{}: {e}", path.display())))?;
                let verifier: Arc<dyn ServerCertVerifier> =
                    if mode == BackendSslMode::VerifyCa { Arc::new(ChainOnly(webpki)) } else { webpki };
                builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()
            }
        };
        // As libpq 17: servers that negotiate ALPN expect this one.
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(BackendTls { mode, config: Some(Arc::new(config)) })
    }
}

/// The TLS state of one proxy, swapped whole on reload.
pub struct TlsState {
    client: ArcSwapOption<ClientTls>,
    backend: ArcSwap<BackendTls>,
}

/// TLS settings built from a config, not yet in use.
pub struct Prepared {
    client: Option<Arc<ClientTls>>,
    backend: Arc<BackendTls>,
}

impl Prepared {
    /// The backend side, for settings built alongside (pools).
    pub fn backend(&self) -> Arc<BackendTls> {
        self.backend.clone()
    }
}

impl TlsState {
    /// Reads and checks every TLS file of `c`; nothing is swapped, so a
    /// reload can refuse a bad certificate and keep the old one.
    pub fn prepare(c: &Config) -> Result<Prepared, TlsError> {
        let client = if c.ssl {
            let (config, end_point) = server_config(c)?;
            Some(Arc::new(ClientTls {
                config: Arc::new(config),
                mode: c.client_ssl_mode(),
                direct: c.ssl_direct,
                end_point: end_point.map(Arc::from),
            }))
        } else {
            None
        };
        let backend = BackendTls::from_config(c)?;
        Ok(Prepared { client, backend: Arc::new(backend) })
    }

    /// The state of a starting proxy.
    pub fn new(p: Prepared) -> TlsState {
        TlsState { client: ArcSwapOption::new(p.client), backend: ArcSwap::new(p.backend) }
    }

    /// New handshakes use `p`; established connections are not touched.
    pub fn apply(&self, p: Prepared) {
        self.client.store(p.client);
        self.backend.store(p.backend);
    }

    /// What a new client connection is offered; None when `ssl` is off.
    pub fn client(&self) -> Option<Arc<ClientTls>> {
        self.client.load_full()
    }

    /// How new server connections are opened.
    pub fn backend(&self) -> Arc<BackendTls> {
        self.backend.load_full()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The acceptor's config: certificate chain and key, client certificates
/// verified against `ssl_ca_cert` when one is presented, ALPN `postgresql`;
/// and the leaf certificate's channel binding data.
fn server_config(c: &Config) -> Result<(ServerConfig, Option<Vec<u8>>), TlsError> {
    let cert_path = c.ssl_cert.as_deref().ok_or_else(|| TlsError::new("ssl_cert", "required when ssl is true"))?;
    let key_path = c.ssl_key.as_deref().ok_or_else(|| TlsError::new("ssl_key", "required when ssl is true"))?;
    let certs = load_certs("ssl_cert", cert_path)?;
    let end_point = crate::auth::x509::tls_server_end_point(&certs[0]);
    let key = load_key("ssl_key", key_path)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::new("ssl", e.to_string()))?;
    let builder = match &c.ssl_ca_cert {
        Some(ca) => {
            let roots = Arc::new(load_roots("ssl_ca_cert", ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::new("ssl_ca_cert", format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::new("ssl_key", format!("{}: cannot be used with ssl_cert: {e}", key_path.display())))?;
    // PostgreSQL 17: a client that offers ALPN must offer `postgresql`
    // (rustls refuses the handshake otherwise); direct TLS checks it is there.
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok((config, end_point))
}

fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |e: pem::Error| TlsError::new(key, format!("{}: {}", path.display(), pem_error(&e, false)));
    let certs = CertificateDer::pem_file_iter(path).map_err(fail)?.collect::<Result<Vec<_>, _>>().map_err(fail)?;
    if certs.is_empty() {
        return Err(TlsError::new(key, format!("{}: no certificate (BEGIN CERTIFICATE) in the file", path.display())));
    }
    Ok(certs)
}

fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => {
                "no private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in the file".to_owned()
            }
            e => pem_error(&e, true),
        };
        TlsError::new(key, format!("{}: {why}", path.display()))
    })
}

fn load_roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(load_certs(key, path)?);
    if added == 0 {
        return Err(TlsError::new(key, format!("{}: no usable CA certificate in the file", path.display())));
    }
    Ok(roots)
}

/// A PEM error in words. For key files nothing of the file's content is
/// repeated (a malformed line could be key material).
fn pem_error(e: &pem::Error, secret: bool) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => "nothing usable in the file".to_owned(),
        pem::Error::Base64Decode(_) if secret => "invalid base64 inside a PEM section".to_owned(),
        pem::Error::IllegalSectionStart { .. } | pem::Error::MissingSectionEnd { .. } if secret => {
            "malformed PEM section".to_owned()
        }
        e => format!("malformed PEM: {e}"),
    }
}

/// `prefer` and `require`: any certificate, but the handshake signatures
/// are still checked (the key exchange is with whoever holds the key).
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// `verify-ca`: the chain must lead to a configured CA; the host name is
/// not checked (as libpq).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (and validity, usage) before the name, so
        // a name mismatch means everything else passed.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The stream to a server: plaintext or TLS.
pub(crate) enum ServerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Negotiates encryption on a fresh server socket as `tls` says: nothing
/// (`disable`), or SSLRequest, then the handshake on `S`; `N` is accepted
/// only with `prefer`. Errors use libpq's words.
pub(crate) async fn connect_backend(mut tcp: TcpStream, host: &str, tls: &BackendTls) -> io::Result<ServerStream> {
    let Some(config) = &tls.config else {
        return Ok(ServerStream::Plain(tcp));
    };
    tcp.write_all(&SSL_REQUEST).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {}
        b'N' if tls.mode == BackendSslMode::Prefer => return Ok(ServerStream::Plain(tcp)),
        b'N' => return Err(tls_error("server does not support SSL, but SSL was required")),
        // A server that predates SSLRequest answers with an ErrorResponse.
        b'E' => return Err(tls_error("server does not support SSL (it answered SSLRequest with an error)")),
        c => return Err(tls_error(format!("received invalid response to SSL negotiation: {}", c.escape_ascii()))),
    }
    // Bytes after 'S' but before the handshake were not encrypted (as
    // libpq, CVE-2021-23222).
    let mut probe = [0u8; 1];
    match tcp.try_read(&mut probe) {
        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(_) => return Err(tls_error("received unencrypted data after SSL response")),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| tls_error(format!("\"{host}\" is not a valid host name for TLS")))?;
    let stream = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with server: {e}")))?;
    Ok(ServerStream::Tls(Box::new(stream)))
}

fn tls_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, msg.into())
}

/// Accepts a TLS handshake after pgbalancer answered `S` to SSLRequest.
pub(crate) async fn accept(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
}

/// Accepts direct TLS (PostgreSQL 17 `sslnegotiation=direct`): the
/// ClientHello must offer ALPN `postgresql`, else the connection is closed
/// before the handshake goes on.
pub(crate) async fn accept_direct(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
    let alpn_ok = start.client_hello().alpn().is_some_and(|mut protocols| protocols.any(|p| p == ALPN_POSTGRESQL));
    if !alpn_ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "received direct SSL connection request without ALPN protocol negotiation extension",
        ));
    }
    start.into_stream(config).await
}
