//! The admin API's listener: at most [`MAX_CONNECTIONS`] open connections
//! (further ones wait in the kernel's backlog, costing the daemon no file
//! descriptor), and a connection with no traffic for [`IDLE_TIMEOUT`] is
//! closed — unless a request of it is being handled: a long answer (a
//! `pause` that waits for transactions) is not cut off. Without these, idle
//! or half-sent HTTP requests (no token is needed to open a connection)
//! could use up the file descriptors the proxy needs.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::tls::AdminStream;

/// Open admin connections at most.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection that sends and receives nothing this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
    /// HTTPS: the server config of each new connection (swapped by reload).
    tls: Option<Arc<ArcSwapOption<ServerConfig>>>,
}

impl LimitedListener {
    pub fn new(inner: TcpListener) -> LimitedListener {
        LimitedListener::with_idle_timeout(inner, IDLE_TIMEOUT)
    }

    pub fn with_idle_timeout(inner: TcpListener, idle_timeout: Duration) -> LimitedListener {
        LimitedListener { inner, permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)), idle_timeout, tls: None }
    }

    /// Serves HTTPS only, with the config `tls` holds when a connection
    /// comes in.
    pub fn with_tls(mut self, tls: Arc<ArcSwapOption<ServerConfig>>) -> LimitedListener {
        self.tls = Some(tls);
        self
    }
}

/// The client's address, as the handlers see it (`ConnectInfo<Peer>`), and
/// the count of its connection's requests being handled now.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    busy: Arc<AtomicUsize>,
}

impl Peer {
    fn new(addr: SocketAddr) -> Peer {
        Peer { addr, busy: Arc::new(AtomicUsize::new(0)) }
    }

    /// Marks a request of this connection as being handled until the guard
    /// is dropped: meanwhile the connection is not closed as idle.
    pub fn busy(&self) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.busy.clone())
    }
}

/// Middleware: marks the connection busy while its request is handled.
pub async fn track_busy(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let _busy = req.extensions().get::<axum::extract::ConnectInfo<Peer>>().map(|c| c.0.busy());
    next.run(req).await
}

/// See [`Peer::busy`].
pub struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connected<IncomingStream<'_, LimitedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, LimitedListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

impl Listener for LimitedListener {
    type Io = AdminStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (AdminStream, Peer) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; stay pending if it were.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let idle = Box::pin(tokio::time::sleep(self.idle_timeout));
                    let peer = Peer::new(addr);
                    let stream = LimitedStream {
                        stream,
                        idle,
                        idle_timeout: self.idle_timeout,
                        busy: peer.busy.clone(),
                        _permit: permit,
                    };
                    let stream = match self.tls.as_ref().map(|t| t.load_full()) {
                        None => AdminStream::Plain(stream),
                        Some(Some(config)) => AdminStream::tls(stream, config),
                        // HTTPS without a certificate cannot happen (a reload
                        // never takes it away); refuse rather than speak HTTP.
                        Some(None) => continue,
                    };
                    return (stream, peer);
                }
                Err(e) => {
                    // Out of descriptors and the like: log, back off, go on.
                    tracing::warn!(error = %e, "admin API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        self.inner.local_addr().map(Peer::new)
    }
}

/// A connection holding one of the listener's places until it is dropped,
/// failing with `TimedOut` once it has been idle for [`IDLE_TIMEOUT`] with
/// no request of it being handled.
pub struct LimitedStream {
    stream: TcpStream,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    busy: Arc<AtomicUsize>,
    _permit: OwnedSemaphorePermit,
}

impl LimitedStream {
    fn progressed(&mut self) {
        self.idle.as_mut().reset(Instant::now() + self.idle_timeout);
    }

    fn check_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            match self.idle.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // A handler is still at work: its answer is the traffic to come.
                Poll::Ready(()) if self.busy.load(Ordering::Acquire) > 0 => self.progressed(),
                Poll::Ready(()) => {
                    return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "admin connection idle"))
                }
            }
        }
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.check_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.check_idle(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on a listener closing idle connections after 150 ms, with a
    /// handler that takes 600 ms.
    async fn serve() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = axum::Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    "done"
                }),
            )
            .layer(axum::middleware::from_fn(track_busy));
        let listener = LimitedListener::with_idle_timeout(l, Duration::from_millis(150));
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn a_slow_answer_outlives_the_idle_timeout_but_idleness_does_not() {
        let addr = serve().await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("done"), "{answer:?}");

        // A connection that sends nothing is closed once idle.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await.expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
}
