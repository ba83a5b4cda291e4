//! The client's socket with its read and write buffers. Reads go into the
//! buffer owned here, so a read inside `select!` never loses bytes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ClientError;
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::startup::{self, StartupPacket};
use crate::protocol::write::{self, Severity};

/// Read at most this much ahead for one large message at a time, so a
/// declared length never turns into a reservation.
const READ_CHUNK: usize = 64 * 1024;

/// The client's socket: plaintext, or TLS once negotiated. The TLS state
/// is boxed so a plaintext client stays as small as before.
enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The socket is in a TLS handshake, or was lost in a failed one.
    Gone,
}

pub struct ClientConn {
    stream: ClientStream,
    pub read_buf: BytesMut,
    pub write_buf: BytesMut,
    pub peer: SocketAddr,
    /// SCRAM channel binding data of the certificate this connection's
    /// TLS handshake presented (set by the login; see `ClientTls`).
    pub tls_end_point: Option<Arc<[u8]>>,
}

/// A TLS peer's EOF without close_notify is still the client leaving.
fn tls_read_error(e: std::io::Error) -> ClientError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ClientError::Closed
    } else {
        e.into()
    }
}

impl ClientConn {
    /// Buffers start empty and grow on use, so an idle client costs little.
    pub fn new(stream: TcpStream, peer: SocketAddr) -> ClientConn {
        ClientConn {
            stream: ClientStream::Plain(stream),
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            peer,
            tls_end_point: None,
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, ClientStream::Tls(_))
    }

    /// The negotiated TLS version and cipher suite, for logs.
    pub fn tls_info(&self) -> Option<(rustls::ProtocolVersion, rustls::CipherSuite)> {
        let ClientStream::Tls(s) = &self.stream else { return None };
        let c = s.get_ref().1;
        Some((c.protocol_version()?, c.negotiated_cipher_suite()?.suite()))
    }

    /// The certificate the client presented in the TLS handshake (its
    /// chain was verified against `ssl_ca_cert` then), if any.
    pub fn peer_certificate(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        let ClientStream::Tls(s) = &self.stream else { return None };
        s.get_ref().1.peer_certificates()?.first()
    }

    /// The first byte the client sent, left in the socket. Only before
    /// anything was read (to tell direct TLS from a startup packet).
    pub async fn peek_first_byte(&mut self) -> Result<u8, ClientError> {
        let ClientStream::Plain(s) = &mut self.stream else {
            return Err(ClientError::Protocol("peek after the first read"));
        };
        let mut b = [0u8; 1];
        match s.peek(&mut b).await? {
            0 => Err(ClientError::Closed),
            _ => Ok(b[0]),
        }
    }

    /// Runs the TLS handshake on the plaintext socket (`direct`: PostgreSQL
    /// 17 direct TLS, ALPN `postgresql` required). The caller made sure no
    /// plaintext bytes are buffered. On failure the connection is unusable.
    pub async fn start_tls(&mut self, config: Arc<rustls::ServerConfig>, direct: bool) -> Result<(), ClientError> {
        let ClientStream::Plain(tcp) = std::mem::replace(&mut self.stream, ClientStream::Gone) else {
            return Err(ClientError::Protocol("TLS requested twice"));
        };
        let tls = if direct {
            crate::tls::accept_direct(tcp, config).await?
        } else {
            crate::tls::accept(tcp, config).await?
        };
        self.stream = ClientStream::Tls(Box::new(tls));
        Ok(())
    }

    /// Gives back a large read buffer once it is drained (after a big
    /// query or COPY), so a client that goes idle does not keep it.
    pub fn shrink_if_drained(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > READ_CHUNK {
            self.read_buf = BytesMut::new();
        }
    }

    /// Reads more bytes. Cancel-safe. `want` hints how many are missing.
    /// Waits for the socket to be readable before reserving, so a client
    /// idle between queries holds no read buffer it does not need.
    /// (TLS: rustls may hold decrypted bytes the socket no longer shows,
    /// so a TLS read reserves first.)
    pub async fn fill(&mut self, want: usize) -> Result<(), ClientError> {
        match &mut self.stream {
            ClientStream::Plain(s) => loop {
                s.readable().await?;
                self.read_buf.reserve(want.clamp(4096, READ_CHUNK));
                // The socket is readable, so this read completes at once.
                // Unlike `try_read_buf`, tokio's `poll_read` forgets the
                // readiness when the read did not fill the buffer (the
                // socket is drained): the next wait goes straight to epoll
                // instead of costing a `recv` that finds nothing.
                match s.read_buf(&mut self.read_buf).await {
                    Ok(0) => return Err(ClientError::Closed),
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e.into()),
                }
            },
            ClientStream::Tls(s) => {
                self.read_buf.reserve(want.clamp(4096, READ_CHUNK));
                match s.read_buf(&mut self.read_buf).await {
                    Ok(0) => Err(ClientError::Closed),
                    Ok(_) => Ok(()),
                    Err(e) => Err(tls_read_error(e)),
                }
            }
            ClientStream::Gone => Err(ClientError::Closed),
        }
    }

    /// After login: drop the buffers the handshake used, if drained.
    pub fn release_login_buffers(&mut self) {
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
        if self.write_buf.is_empty() {
            self.write_buf = BytesMut::new();
        }
    }

    /// Writes and clears the write buffer.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.write_buf.is_empty() {
            write_to(&mut self.stream, &self.write_buf).await?;
            self.write_buf.clear();
        }
        Ok(())
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        write_to(&mut self.stream, bytes).await
    }

    /// Writes what the socket takes now, without waiting; returns how many
    /// bytes went out. A TLS client, a full socket or an error write
    /// nothing here (the caller's later `write_all` reports an error).
    pub fn write_now(&mut self, bytes: &[u8]) -> usize {
        let ClientStream::Plain(s) = &mut self.stream else { return 0 };
        let mut written = 0;
        while written < bytes.len() {
            match s.try_write(&bytes[written..]) {
                Ok(n) if n > 0 => written += n,
                _ => break,
            }
        }
        written
    }

    /// Sends a FATAL error, best effort; the caller closes the connection.
    pub async fn fatal(&mut self, code: &str, message: &str) {
        write::error_response(&mut self.write_buf, Severity::Fatal, code, message);
        let _ = self.flush().await;
    }

    /// Reads one startup-phase packet; the length is checked before
    /// anything is waited for or kept.
    pub async fn read_startup(&mut self) -> Result<StartupPacket, ClientError> {
        loop {
            if let Some(len) = startup::peek_startup_len(&self.read_buf)? {
                if self.read_buf.len() >= len {
                    let packet = self.read_buf.split_to(len);
                    return Ok(startup::parse_startup(&packet)?);
                }
                let missing = len - self.read_buf.len();
                self.fill(missing).await?;
            } else {
                self.fill(8).await?;
            }
        }
    }

    /// Reads one whole regular message of at most `cap` bytes (login phase).
    pub async fn read_message(&mut self, cap: usize) -> Result<(u8, BytesMut), ClientError> {
        loop {
            if let Some(h) = frame::peek_header(&self.read_buf, cap)? {
                if self.read_buf.len() >= h.total_len {
                    let mut msg = self.read_buf.split_to(h.total_len);
                    msg.advance(HEADER_LEN);
                    return Ok((h.tag, msg));
                }
                let missing = h.total_len - self.read_buf.len();
                self.fill(missing).await?;
            } else {
                self.fill(HEADER_LEN).await?;
            }
        }
    }
}

/// Writes all of `bytes`; over TLS also flushes the records rustls holds.
async fn write_to(stream: &mut ClientStream, bytes: &[u8]) -> Result<(), ClientError> {
    match stream {
        ClientStream::Plain(s) => s.write_all(bytes).await?,
        ClientStream::Tls(s) => {
            s.write_all(bytes).await?;
            s.flush().await?;
        }
        ClientStream::Gone => return Err(ClientError::Closed),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TLS costs a plaintext client nothing: the enum fits in the
    /// TcpStream's own spare bits (idle-client memory is benchmarked).
    #[test]
    fn plaintext_stream_is_no_larger_than_a_socket() {
        assert_eq!(std::mem::size_of::<ClientStream>(), std::mem::size_of::<TcpStream>());
    }
}
