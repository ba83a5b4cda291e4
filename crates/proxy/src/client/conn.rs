//! The client's socket with its read and write buffers. Reads go into the
//! buffer owned here, so a read inside `select!` never loses bytes.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::ClientError;
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::startup::{self, StartupPacket};
use crate::protocol::write::{self, Severity};

/// Read at most this much ahead for one large message at a time, so a
/// declared length never turns into a reservation.
const READ_CHUNK: usize = 64 * 1024;

pub struct ClientConn {
    stream: TcpStream,
    pub read_buf: BytesMut,
    pub write_buf: BytesMut,
    pub peer: SocketAddr,
}

impl ClientConn {
    /// Buffers start empty and grow on use, so an idle client costs little.
    pub fn new(stream: TcpStream, peer: SocketAddr) -> ClientConn {
        ClientConn { stream, read_buf: BytesMut::new(), write_buf: BytesMut::new(), peer }
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
    pub async fn fill(&mut self, want: usize) -> Result<(), ClientError> {
        loop {
            self.stream.readable().await?;
            self.read_buf.reserve(want.clamp(4096, READ_CHUNK));
            match self.stream.try_read_buf(&mut self.read_buf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
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
            self.stream.write_all(&self.write_buf).await?;
            self.write_buf.clear();
        }
        Ok(())
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        Ok(())
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
