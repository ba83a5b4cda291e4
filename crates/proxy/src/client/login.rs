//! The startup phase: SSL/GSS negotiation, CancelRequest, StartupMessage
//! checks and client authentication (hba rules, trust, reject, md5,
//! scram-sha-256 with channel binding, cert; failed-login limiting and the
//! audit log of failures). See `docs/authentication.md`.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use pgbalancer_config::{AuthType, ClientSslMode};

use super::conn::ClientConn;
use crate::auth::scram::{self, ChannelBinding, ScramError, ServerExchange, Verifier};
use crate::auth::{md5, x509};
use crate::error::ClientError;
use crate::hba;
use crate::protocol::frame::{FrameError, HEADER_LEN, SASL_MESSAGE_LIMIT};
use crate::protocol::startup::{self, StartupError, StartupMessage, StartupPacket};
use crate::protocol::{auth_code, be, fe, read, sqlstate, write};
use crate::server::ServerSecret;
use crate::stats::UnauthSlot;
use crate::tls::ClientTls;
use crate::users::Secret;
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
    // Channel binding data of the certificate this handshake presented (a
    // reload may swap the certificate before authentication).
    conn.tls_end_point = tls.end_point.clone();
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
    // PostgreSQL keeps at most 63 bytes of a name (NAMEDATALEN - 1), cut at
    // a character boundary: so do hba rules, user lists and pools here.
    Ok(Identity {
        user: truncate_name(user).to_owned(),
        database: truncate_name(database).to_owned(),
        application_name: msg.get("application_name").unwrap_or_default().to_owned(),
    })
}

/// The first 63 bytes of `name`, cut at a character boundary.
pub fn truncate_name(name: &str) -> &str {
    const NAME_MAX: usize = 63;
    if name.len() <= NAME_MAX {
        return name;
    }
    let mut end = NAME_MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Takes a place among the connections still in startup or
/// authentication (`max_unauthenticated_clients`), or refuses the
/// connection with FATAL 53300. Held until authentication ends.
pub(crate) async fn admit<'a>(conn: &mut ClientConn, shared: &'a Shared) -> Result<UnauthSlot<'a>, ClientError> {
    let max = shared.config.load().max_unauthenticated_clients as usize;
    match UnauthSlot::enter(&shared.stats, max) {
        Some(slot) => Ok(slot),
        None => {
            shared.stats.unauthenticated_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(host = %conn.peer.ip(), max, "connection refused: max_unauthenticated_clients reached");
            conn.fatal(
                sqlstate::TOO_MANY_CONNECTIONS,
                "sorry, too many clients already (connections awaiting authentication: max_unauthenticated_clients)",
            )
            .await;
            Err(ClientError::Protocol("max_unauthenticated_clients"))
        }
    }
}

/// What a successful authentication leaves behind for server logins.
pub struct Authenticated {
    /// How servers can be logged in to as this user, learned here: the
    /// password, an md5 hash, or the SCRAM keys the client just proved.
    /// None: only `server_password` (if any) can help.
    pub server_secret: Option<ServerSecret>,
}

/// Who is logging in, for the rules and the audit log.
struct Ctx<'a> {
    user: &'a str,
    database: &'a str,
    application_name: &'a str,
    ip: IpAddr,
    tls: bool,
}

impl Ctx<'_> {
    /// PostgreSQL's hba messages: `… for host "…", user "…", database "…",
    /// SSL encryption|no encryption`.
    fn hba_message(&self, what: &str) -> String {
        let encryption = if self.tls { "SSL encryption" } else { "no encryption" };
        format!("{what} for host \"{}\", user \"{}\", database \"{}\", {encryption}", self.ip, self.user, self.database)
    }
}

/// Why an exchange failed.
enum Failure {
    /// The connection failed, or the client broke the protocol (it was
    /// answered already).
    Client(ClientError),
    /// Wrong password, unknown user (FATAL 28P01); the reason is logged.
    Password(&'static str),
    /// Refused with this code and message (channel binding problems).
    Refused { code: &'static str, message: String, reason: &'static str },
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

/// Whether an exchange can succeed: against a real secret, or a fake one
/// (for an unknown user) that fails with this reason whatever is sent.
#[derive(Clone, Copy)]
enum Expect {
    Real,
    Fail(&'static str),
}

/// Authenticates the client: the method of the first matching hba rule
/// (or `auth_type`), a source over `auth_failure_limit` refused at once,
/// then the exchange. Every failure is logged (warn) with user, database,
/// application_name, client address and a reason, never a secret.
pub async fn authenticate(conn: &mut ClientConn, shared: &Shared, id: &Identity) -> Result<Authenticated, ClientError> {
    let users = shared.users.load_full();
    let ctx = Ctx {
        user: &id.user,
        database: &id.database,
        application_name: &id.application_name,
        ip: conn.peer.ip(),
        tls: conn.is_tls(),
    };
    let (method, rule) = match &users.hba {
        None => (shared.config.load().auth_type, None),
        Some(rules) => {
            let peer = hba::Peer { ip: ctx.ip, tls: ctx.tls, user: ctx.user, database: ctx.database };
            match rules.find(&peer) {
                Some(r) => (r.method, Some(r.origin.as_str())),
                None => {
                    audit_failure(shared, &ctx, None, None, "no_hba_entry", false);
                    conn.fatal(sqlstate::INVALID_AUTHORIZATION, &ctx.hba_message("no pg_hba.conf entry")).await;
                    return Err(ClientError::AuthFailed(id.user.clone()));
                }
            }
        }
    };
    let configured = || users.users.get(ctx.user).and_then(Secret::server_secret);
    match method {
        AuthType::Trust => return Ok(Authenticated { server_secret: configured() }),
        AuthType::Reject => {
            audit_failure(shared, &ctx, Some(method), rule, "hba_reject", false);
            conn.fatal(sqlstate::INVALID_AUTHORIZATION, &ctx.hba_message("pg_hba.conf rejects connection")).await;
            return Err(ClientError::AuthFailed(id.user.clone()));
        }
        AuthType::Md5 | AuthType::ScramSha256 | AuthType::Cert => {}
    }
    if let Err(left) = shared.auth_failures.check(ctx.ip, Instant::now()) {
        shared.stats.auth_throttled.fetch_add(1, Ordering::Relaxed);
        audit_failure(shared, &ctx, Some(method), rule, "throttled", false);
        let m = format!(
            "too many failed logins from host \"{}\" (auth_failure_limit); try again in {} s",
            ctx.ip,
            left.as_secs().max(1)
        );
        conn.fatal(sqlstate::TOO_MANY_CONNECTIONS, &m).await;
        return Err(ClientError::AuthFailed(id.user.clone()));
    }
    if method == AuthType::Cert {
        return match cert_check(conn, ctx.user) {
            Ok(()) => Ok(Authenticated { server_secret: configured() }),
            Err(reason) => {
                audit_failure(shared, &ctx, Some(method), rule, reason, true);
                let m = format!("certificate authentication failed for user \"{}\"", ctx.user);
                conn.fatal(sqlstate::INVALID_AUTHORIZATION, &m).await;
                Err(ClientError::AuthFailed(id.user.clone()))
            }
        };
    }

    // Password methods. The secret: configured, else looked up.
    let secret = match users.users.get(ctx.user) {
        Some(s) => Some(s.clone()),
        None => match &users.lookup {
            None => None,
            Some(q) => match q.lookup(shared, ctx.user).await {
                Ok(None) => None,
                Ok(Some(stored)) => match Secret::parse(&stored, ctx.user, &users.dummy_secret) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(user = ctx.user, error = %e, "auth_query returned an unusable password");
                        None
                    }
                },
                Err(e) => {
                    tracing::error!(auth_user = q.user(), error = %e, "user lookup failed");
                    audit_failure(shared, &ctx, Some(method), rule, "lookup_failed", false);
                    conn.fatal(sqlstate::CONNECTION_FAILURE, "pgbalancer: cannot look up the user (auth_query failed)")
                        .await;
                    return Err(ClientError::AuthFailed(id.user.clone()));
                }
            },
        },
    };
    // As PostgreSQL: md5 with a SCRAM verifier runs SCRAM; scram-sha-256
    // with an md5 hash (or no secret) runs a mock exchange that fails.
    // Unknown users run a mock SCRAM exchange whatever the method (as
    // PostgreSQL with its default password_encryption), so an unknown name
    // looks like a SCRAM user with a wrong password, not like nobody.
    let mut pass_through = None;
    let gate = Gate { shared, ip: ctx.ip };
    let outcome = match (method, &secret) {
        (AuthType::Md5, Some(Secret::Md5(hash))) => md5_login(conn, hash, Expect::Real, &gate).await,
        (AuthType::Md5, Some(Secret::Plain { password, .. })) => {
            md5_login(conn, &md5::md5_stored_hash(ctx.user, password), Expect::Real, &gate).await
        }
        (_, Some(Secret::Scram(v))) => scram_login(conn, v.clone(), Expect::Real, &gate).await.map(|client_key| {
            pass_through = Some(ServerSecret::ScramKeys {
                client_key,
                server_key: v.server_key,
                salt: v.salt.clone(),
                iterations: v.iterations,
            });
        }),
        (_, Some(Secret::Plain { verifier, .. })) => {
            scram_login(conn, verifier.clone(), Expect::Real, &gate).await.map(drop)
        }
        (_, Some(Secret::Md5(_)) | None) => {
            let reason = if secret.is_some() { "no_scram_secret" } else { "unknown_user" };
            let dummy = Verifier::dummy(ctx.user, &users.dummy_secret);
            scram_login(conn, dummy, Expect::Fail(reason), &gate).await.map(drop)
        }
    };
    match outcome {
        Ok(()) => {
            let server_secret = pass_through.or_else(|| secret.as_ref().and_then(Secret::server_secret));
            Ok(Authenticated { server_secret })
        }
        Err(Failure::Client(e)) => Err(e),
        Err(Failure::Password(reason)) => {
            audit_failure(shared, &ctx, Some(method), rule, reason, true);
            let m = format!("password authentication failed for user \"{}\"", ctx.user);
            conn.fatal(sqlstate::INVALID_PASSWORD, &m).await;
            Err(ClientError::AuthFailed(id.user.clone()))
        }
        Err(Failure::Refused { code, message, reason }) => {
            // A throttled attempt is not counted again.
            audit_failure(shared, &ctx, Some(method), rule, reason, reason != Gate::REASON);
            conn.fatal(code, &message).await;
            Err(ClientError::AuthFailed(id.user.clone()))
        }
    }
}

/// Counts and logs a failed authentication; `count`: toward the source's
/// `auth_failure_limit`. Logs no secret, only who and why.
fn audit_failure(
    shared: &Shared,
    ctx: &Ctx,
    method: Option<AuthType>,
    rule: Option<&str>,
    reason: &'static str,
    count: bool,
) {
    shared.stats.login_failures.fetch_add(1, Ordering::Relaxed);
    let method = method.map(|m| m.to_string());
    tracing::warn!(
        user = ctx.user,
        database = ctx.database,
        application_name = ctx.application_name,
        host = %ctx.ip,
        tls = ctx.tls,
        method = method.as_deref().unwrap_or(""),
        hba_rule = rule.unwrap_or(""),
        reason,
        "authentication failed"
    );
    if count {
        let (limit, window) = {
            let c = shared.config.load();
            (c.auth_failure_limit, c.auth_failure_window)
        };
        if shared.auth_failures.failure(ctx.ip, limit, window, Instant::now()) {
            tracing::warn!(
                host = %ctx.ip,
                limit,
                "too many failed logins from this address: its logins are refused for {}s (auth_failure_window)",
                window.as_secs()
            );
        }
    }
}

/// The `cert` method: TLS, a client certificate (its chain was verified
/// in the handshake against `ssl_ca_cert`) whose subject CN is the user
/// name. Err: the reason for the log.
fn cert_check(conn: &ClientConn, user: &str) -> Result<(), &'static str> {
    if !conn.is_tls() {
        return Err("cert_without_tls");
    }
    let cert = conn.peer_certificate().ok_or("cert_missing")?;
    match x509::subject_common_name(cert) {
        None => Err("cert_no_common_name"),
        Some(cn) if cn == user => Ok(()),
        Some(_) => Err("cert_name_mismatch"),
    }
}

/// AuthenticationSASL with the mechanisms offered (PLUS first, as
/// PostgreSQL).
fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    buf.put_u8(be::AUTHENTICATION);
    let at = buf.len();
    buf.put_i32(0);
    buf.put_i32(auth_code::SASL);
    for m in mechanisms {
        buf.put_slice(m.as_bytes());
        buf.put_u8(0);
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// AuthenticationMD5Password with its salt.
fn authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    buf.put_u8(be::AUTHENTICATION);
    buf.put_i32(12);
    buf.put_i32(auth_code::MD5_PASSWORD);
    buf.put_slice(&salt);
}

/// One SCRAM exchange against `verifier`, offering `SCRAM-SHA-256-PLUS`
/// over TLS when the certificate has channel binding data. On success
/// writes AuthenticationSASLFinal (not flushed; AuthenticationOk follows)
/// and returns the client's ClientKey.
async fn scram_login(
    conn: &mut ClientConn,
    verifier: Verifier,
    expect: Expect,
    gate: &Gate<'_>,
) -> Result<[u8; 32], Failure> {
    let end_point = conn.tls_end_point.clone().filter(|_| conn.is_tls());
    let mechanisms: &[&str] =
        if end_point.is_some() { &[scram::MECHANISM_PLUS, scram::MECHANISM] } else { &[scram::MECHANISM] };
    authentication_sasl(&mut conn.write_buf, mechanisms);
    conn.flush().await?;

    let body = read_password_message(conn).await?;
    let Some((mechanism, first)) = read::sasl_initial_response(&body) else {
        conn.fatal(sqlstate::PROTOCOL_VIOLATION, "malformed SASLInitialResponse message").await;
        return Err(ClientError::Protocol("malformed SASLInitialResponse").into());
    };
    let binding = match (mechanism, &end_point) {
        (scram::MECHANISM_PLUS, Some(data)) => ChannelBinding::Used(data.to_vec()),
        (scram::MECHANISM, Some(_)) => ChannelBinding::NotUsed,
        (scram::MECHANISM, None) => ChannelBinding::Unsupported,
        _ => {
            conn.fatal(sqlstate::PROTOCOL_VIOLATION, "client selected an invalid SASL authentication mechanism").await;
            return Err(ClientError::Protocol("invalid SASL mechanism").into());
        }
    };
    let mut exchange = ServerExchange::with_channel_binding(verifier, binding);
    let server_first = exchange.client_first(first).map_err(|e| scram_failure(e, expect))?;
    write::authentication_sasl_continue(&mut conn.write_buf, &server_first);
    conn.flush().await?;

    let body = read_password_message(conn).await?;
    gate.check()?;
    let server_final = exchange.client_final(&body).map_err(|e| scram_failure(e, expect))?;
    if let Expect::Fail(reason) = expect {
        return Err(Failure::Password(reason));
    }
    write::authentication_sasl_final(&mut conn.write_buf, &server_final);
    Ok(exchange.client_key().expect("set by a successful client_final"))
}

/// The failed-login limit, checked again when the client's proof arrives
/// and before it is checked: exchanges already in flight when the source
/// reached its limit learn nothing about their passwords.
struct Gate<'a> {
    shared: &'a Shared,
    ip: std::net::IpAddr,
}

impl Gate<'_> {
    const REASON: &'static str = "throttled";

    fn check(&self) -> Result<(), Failure> {
        let Err(left) = self.shared.auth_failures.check(self.ip, Instant::now()) else { return Ok(()) };
        self.shared.stats.auth_throttled.fetch_add(1, Ordering::Relaxed);
        Err(Failure::Refused {
            code: sqlstate::TOO_MANY_CONNECTIONS,
            message: format!(
                "too many failed logins from host \"{}\" (auth_failure_limit); try again in {} s",
                self.ip,
                left.as_secs().max(1)
            ),
            reason: Self::REASON,
        })
    }
}

/// How a SCRAM error is answered: channel binding problems as PostgreSQL
/// answers them, everything else as a failed password.
fn scram_failure(e: ScramError, expect: Expect) -> Failure {
    use ScramError::*;
    let refused = |code, message: String| Failure::Refused { code, message, reason: "channel_binding" };
    match e {
        ChannelBindingDowngrade => refused(
            sqlstate::PROTOCOL_VIOLATION,
            "SCRAM channel binding negotiation error: the client supports SCRAM channel binding but thinks the \
             server does not; however, this server does support channel binding"
                .into(),
        ),
        ChannelBindingRequired
        | ChannelBindingUnexpected
        | UnsupportedChannelBinding
        | UnsupportedChannelBindingType => refused(sqlstate::PROTOCOL_VIOLATION, e.to_string()),
        ChannelBindingMismatch => Failure::Refused {
            code: sqlstate::INVALID_AUTHORIZATION,
            message: "SCRAM channel binding check failed".into(),
            reason: "channel_binding_mismatch",
        },
        BadProof => Failure::Password(match expect {
            Expect::Real => "wrong_password",
            Expect::Fail(reason) => reason,
        }),
        _ => Failure::Password(match expect {
            Expect::Real => "malformed_scram",
            Expect::Fail(reason) => reason,
        }),
    }
}

/// An md5 challenge, answered against a stored hash (compared in constant
/// time).
async fn md5_login(conn: &mut ClientConn, stored: &str, expect: Expect, gate: &Gate<'_>) -> Result<(), Failure> {
    let mut salt = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut salt);
    authentication_md5(&mut conn.write_buf, salt);
    conn.flush().await?;
    let body = read_password_message(conn).await?;
    // A C string that fills the message exactly.
    let Some((&0, response)) = body.split_last().filter(|(_, r)| !r.contains(&0)) else {
        conn.fatal(sqlstate::PROTOCOL_VIOLATION, "invalid password packet size").await;
        return Err(ClientError::Protocol("invalid password packet").into());
    };
    gate.check()?;
    let ok = md5::verify_md5_response(stored, salt, response);
    match expect {
        Expect::Real if ok => Ok(()),
        Expect::Real => Err(Failure::Password("wrong_password")),
        Expect::Fail(reason) => Err(Failure::Password(reason)),
    }
}

/// The next PasswordMessage-type message ('p': SASL or password), at most
/// 1 KiB; anything else is a protocol violation (FATAL 08P01).
async fn read_password_message(conn: &mut ClientConn) -> Result<bytes::BytesMut, ClientError> {
    match conn.read_message(SASL_MESSAGE_LIMIT + HEADER_LEN).await {
        Ok((fe::PASSWORD, body)) => Ok(body),
        Ok((tag, _)) => {
            let m = format!("expected password response, got message type {tag}");
            conn.fatal(sqlstate::PROTOCOL_VIOLATION, &m).await;
            Err(ClientError::Protocol("expected password response"))
        }
        Err(ClientError::Frame(e @ (FrameError::BadLength { .. } | FrameError::TooLarge { .. }))) => {
            conn.fatal(sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await;
            Err(ClientError::Frame(e))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_like_postgresql() {
        let long = "a".repeat(70);
        assert_eq!(truncate_name(&long).len(), 63);
        assert_eq!(truncate_name("short"), "short");
        // 62 ASCII bytes then a 2-byte character: cut before it.
        let mixed = format!("{}é", "b".repeat(62));
        assert_eq!(truncate_name(&mixed), "b".repeat(62));
    }
}
