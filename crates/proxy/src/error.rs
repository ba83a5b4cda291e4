//! The proxy crate's error type: says where a fault came from and whether a
//! retry on another server connection is safe.

use crate::protocol::frame::FrameError;
use crate::protocol::read::ErrorFields;
use crate::protocol::startup::StartupError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client sent something invalid or went away.
    #[error("client: {0}")]
    Client(#[from] ClientError),
    /// A PostgreSQL server failed or misbehaved.
    #[error("server: {0}")]
    Server(#[from] ServerError),
    /// A pool could not hand out a connection.
    #[error("pool: {0}")]
    Pool(#[from] PoolError),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("startup: {0}")]
    Startup(#[from] StartupError),
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("authentication failed for user \"{0}\"")]
    AuthFailed(String),
    #[error("login timed out")]
    LoginTimeout,
    #[error("pgbalancer is shutting down")]
    ShuttingDown,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("server closed the connection")]
    Closed,
    #[error("server sent an invalid message: {0}")]
    Protocol(&'static str),
    #[error("server rejected login: {}", .0.message.as_deref().unwrap_or("(no message)"))]
    Rejected(ErrorFields),
    #[error("server asks for a password and none is configured for user \"{0}\"")]
    NoPassword(String),
    #[error("authentication with server failed: {0}")]
    Auth(String),
    #[error("server login is being retried after a failure; try again shortly")]
    LoginRetryWait,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("query_wait_timeout")]
    WaitTimeout,
    #[error("pool is shutting down")]
    Closed,
    #[error("{0}")]
    Server(#[from] ServerError),
}

impl Error {
    /// Whether retrying the same work on another server connection is safe:
    /// true only when nothing of the client's was sent to a server yet.
    pub fn retry_safe(&self) -> bool {
        matches!(self, Error::Pool(PoolError::WaitTimeout) | Error::Server(ServerError::Connect { .. }))
    }
}
