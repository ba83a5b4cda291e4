//! The startup phase: SSL/GSS negotiation, CancelRequest, StartupMessage
//! checks and client authentication.

use pgbalancer_config::{AuthType, ClientSslMode};

use super::conn::ClientConn;
use crate::auth::scram::{self, ServerExchange, Verifier};
use crate::error::ClientError;
use crate::protocol::frame::{FrameError, HEADER_LEN, SASL_MESSAGE_LIMIT};
use crate::protocol::startup::{self, StartupError, StartupMessage, StartupPacket};
use crate::protocol::{fe, read, sqlstate, write};
use crate::tls::ClientTls;
use crate::Shared;

/// What a new connection turned out to be.
pub enum Opening {
    /// A CancelRequest, handled; close without reply.
    Cancel,
    Startup(StartupMessage),
}

/// Reads startup packets until a StartupMessage or CancelRequest. Sends
/// the FATAL PostgreSQL would send for bad packets. With `ssl` on, answers
/// SSLRequest with `S` and runs the handshake (and, with `ssl_direct`,
/// accepts a ClientHello as the very first bytes); with `ssl_mode:
/// require`, refuses a plaintext StartupMessage.
pub async fn negotiate(conn: &mut ClientConn, shared: &Shared) -> Result<Opening, ClientError> {
    let tls = shared.tls.client();
    let mut ssl_answered = false;
    let mut gss_answered = false;
    if let Some(t) = tls.as_deref().filter(|t| t.direct) {
        // A startup packet starts with its length (first byte 0); a TLS
        // record with 0x16.
        if conn.peek_first_byte().await? == crate::tls::TLS_HANDSHAKE_RECORD {
            handshake(conn, t, true).await?;
            // As after `S`: no further SSLRequest or GSSENCRequest.
            ssl_answered = true;
            gss_answered = true;
        }
    }
    loop {
        let packet = match conn.read_startup().await {
            Ok(p) => p,
            Err(ClientError::Startup(e)) => {
                report_startup_error(conn, &e).await;
                return Err(ClientError::Startup(e));
            }
            Err(e) => return Err(e),
        };
        match packet {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                let seen =
                    if matches!(packet, StartupPacket::SslRequest) { &mut ssl_answered } else { &mut gss_answered };
                if *seen {
                    // As PostgreSQL: a repeated request is an unsupported protocol.
                    conn.fatal(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "unsupported frontend protocol: duplicate encryption request",
                    )
                    .await;
                    return Err(ClientError::Protocol("duplicate encryption request"));
                }
                *seen = true;
                // Bytes already sent after the request were not protected by
                // whatever the answer negotiates (CVE-2021-23214 class).
                if !conn.read_buf.is_empty() {
                    conn.fatal(sqlstate::PROTOCOL_VIOLATION, "received unencrypted data after SSL request").await;
                    return Err(ClientError::Protocol("data after SSL request"));
                }
                match tls.as_deref() {
                    Some(t) if matches!(packet, StartupPacket::SslRequest) => {
                        conn.write_all(b"S").await?;
                        handshake(conn, t, false).await?;
                        // As PostgreSQL: inside TLS, a GSSENCRequest is a
                        // repeated encryption request.
                        gss_answered = true;
                    }
                    _ => conn.write_all(b"N").await?,
                }
            }
            StartupPacket::Cancel { pid, key } => {
                shared.cancels.cancel(pid, key).await;
                return Ok(Opening::Cancel);
            }
            StartupPacket::Startup(msg) => {
                if !conn.is_tls() && tls.as_deref().is_some_and(|t| t.mode == ClientSslMode::Require) {
                    return Err(refuse_plaintext(conn, &msg).await);
                }
                return Ok(Opening::Startup(msg));
            }
        }
    }
}

/// The TLS handshake; a failure ends the connection (nothing can be sent).
async fn handshake(conn: &mut ClientConn, tls: &ClientTls, direct: bool) -> Result<(), ClientError> {
    if let Err(e) = conn.start_tls(tls.config.clone(), direct).await {
        tracing::debug!(peer = %conn.peer, direct, error = %e, "TLS handshake failed");
        return Err(e);
    }
    if let Some((version, suite)) = conn.tls_info() {
        tracing::debug!(peer = %conn.peer, direct, ?version, ?suite, "TLS established");
    }
    Ok(())
}

/// `ssl_mode: require` and a plaintext StartupMessage: PostgreSQL's answer
/// when only `hostssl` lines would match.
async fn refuse_plaintext(conn: &mut ClientConn, msg: &StartupMessage) -> ClientError {
    let user = msg.get("user").unwrap_or_default();
    if user.is_empty() {
        conn.fatal(sqlstate::INVALID_AUTHORIZATION, "no PostgreSQL user name specified in startup packet").await;
        return ClientError::Protocol("no user name");
    }
    let database = msg.get("database").filter(|d| !d.is_empty()).unwrap_or(user);
    let m = format!(
        "no pg_hba.conf entry for host \"{}\", user \"{user}\", database \"{database}\", no encryption",
        conn.peer.ip()
    );
    conn.fatal(sqlstate::INVALID_AUTHORIZATION, &m).await;
    ClientError::Protocol("plaintext connection refused (ssl_mode: require)")
}

async fn report_startup_error(conn: &mut ClientConn, e: &StartupError) {
    let code = match e {
        StartupError::BadLength(_) | StartupError::BadCancelLength => return,
        StartupError::UnsupportedProtocol { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
        StartupError::BadLayout => sqlstate::PROTOCOL_VIOLATION,
        StartupError::BadUtf8 => sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
    };
    conn.fatal(code, &e.to_string()).await;
}

/// Who the client is, once its StartupMessage passed the checks.
pub struct Identity {
    pub user: String,
    pub database: String,
    pub application_name: String,
}

/// Checks a StartupMessage: user present, no replication, and one
/// NegotiateProtocolVersion for a newer minor version or `_pq_` options.
pub async fn check_startup(conn: &mut ClientConn, msg: &StartupMessage) -> Result<Identity, ClientError> {
    let user = msg.get("user").unwrap_or_default();
    if user.is_empty() {
        conn.fatal(sqlstate::INVALID_AUTHORIZATION, "no PostgreSQL user name specified in startup packet").await;
        return Err(ClientError::Protocol("no user name"));
    }
    if let Some(r) = msg.get("replication") {
        match r.to_ascii_lowercase().as_str() {
            "false" | "off" | "no" | "0" => {}
            "true" | "on" | "yes" | "1" | "database" => {
                conn.fatal(sqlstate::FEATURE_NOT_SUPPORTED, "replication connections are not supported by pgbalancer")
                    .await;
                return Err(ClientError::Protocol("replication connection"));
            }
            _ => {
                let m = format!("invalid value for parameter \"replication\": \"{r}\"");
                conn.fatal(sqlstate::INVALID_PARAMETER_VALUE, &m).await;
                return Err(ClientError::Protocol("bad replication parameter"));
            }
        }
    }
    let options: Vec<&str> = msg.protocol_options().collect();
    if msg.minor > 0 || !options.is_empty() {
        // PostgreSQL sends its newest version as a whole (3.0 = 196608).
        write::negotiate_protocol_version(&mut conn.write_buf, startup::PROTOCOL_3_0, options.into_iter());
    }
    let database = msg.get("database").filter(|d| !d.is_empty()).unwrap_or(user);
    Ok(Identity {
        user: user.to_owned(),
        database: database.to_owned(),
        application_name: msg.get("application_name").unwrap_or_default().to_owned(),
    })
}

/// Authenticates the client. On success returns the SCRAM ClientKey when
/// the client proved one (for pass-through to servers).
pub async fn authenticate(
    conn: &mut ClientConn,
    shared: &Shared,
    user: &str,
) -> Result<Option<ScramPass>, ClientError> {
    let auth_type = shared.config.load().auth_type;
    match auth_type {
        AuthType::Trust => Ok(None),
        AuthType::ScramSha256 => scram_login(conn, shared, user).await.map(Some),
    }
}

/// What a successful SCRAM login leaves behind for server logins.
pub struct ScramPass {
    pub client_key: [u8; 32],
    pub verifier: Verifier,
    pub plaintext: Option<String>,
}

async fn scram_login(conn: &mut ClientConn, shared: &Shared, user: &str) -> Result<ScramPass, ClientError> {
    let users = shared.users.load();
    let (verifier, plaintext, known) = match users.users.get(user) {
        Some(u) => (u.verifier.clone(), u.plaintext.clone(), true),
        // Unknown users run the same exchange against a fake verifier, so
        // the answer and its timing match a wrong password.
        None => (Verifier::dummy(user, &users.dummy_secret), None, false),
    };
    drop(users);
    write::authentication_sasl(&mut conn.write_buf, scram::MECHANISM);
    conn.flush().await?;

    let body = read_sasl_message(conn).await?;
    let Some((mechanism, first)) = read::sasl_initial_response(&body) else {
        conn.fatal(sqlstate::PROTOCOL_VIOLATION, "malformed SASLInitialResponse message").await;
        return Err(ClientError::Protocol("malformed SASLInitialResponse"));
    };
    if mechanism != scram::MECHANISM {
        conn.fatal(sqlstate::PROTOCOL_VIOLATION, "client selected an invalid SASL authentication mechanism").await;
        return Err(ClientError::Protocol("invalid SASL mechanism"));
    }
    let mut exchange = ServerExchange::new(verifier.clone());
    let server_first = match exchange.client_first(first) {
        Ok(m) => m,
        Err(_) => return Err(auth_failed(conn, shared, user).await),
    };
    write::authentication_sasl_continue(&mut conn.write_buf, &server_first);
    conn.flush().await?;

    let body = read_sasl_message(conn).await?;
    let server_final = match exchange.client_final(&body) {
        Ok(m) if known => m,
        _ => return Err(auth_failed(conn, shared, user).await),
    };
    write::authentication_sasl_final(&mut conn.write_buf, &server_final);
    let client_key = exchange.client_key().expect("set by a successful client_final");
    Ok(ScramPass { client_key, verifier, plaintext })
}

async fn read_sasl_message(conn: &mut ClientConn) -> Result<bytes::BytesMut, ClientError> {
    match conn.read_message(SASL_MESSAGE_LIMIT + HEADER_LEN).await {
        Ok((fe::PASSWORD, body)) => Ok(body),
        Ok((tag, _)) => {
            let m = format!("expected SASL response, got message type {tag}");
            conn.fatal(sqlstate::PROTOCOL_VIOLATION, &m).await;
            Err(ClientError::Protocol("expected SASL response"))
        }
        Err(ClientError::Frame(e @ (FrameError::BadLength { .. } | FrameError::TooLarge { .. }))) => {
            conn.fatal(sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await;
            Err(ClientError::Frame(e))
        }
        Err(e) => Err(e),
    }
}

async fn auth_failed(conn: &mut ClientConn, shared: &Shared, user: &str) -> ClientError {
    shared.stats.login_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let m = format!("password authentication failed for user \"{user}\"");
    conn.fatal(sqlstate::INVALID_PASSWORD, &m).await;
    ClientError::AuthFailed(user.to_owned())
}
