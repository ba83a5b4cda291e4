//! One client connection from accept to close.

pub mod conn;
pub mod console;
pub mod login;
pub mod params;
pub mod rewrite;
pub mod route;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use pgbalancer_config::{Config, PoolMode};
use tokio::net::TcpStream;

use crate::error::{ClientError, Error};
use crate::pool::{PoolKey, ServerGuard};
use crate::protocol::{sqlstate, write, TxStatus};
use crate::server::{ServerLogin, ServerSecret};
use crate::stats::ClientSlot;
use crate::topology::{NoNode, Primary};
use crate::{Phase, Shared};
use conn::ClientConn;
use login::{Authenticated, Opening};
use params::ClientParams;
use session::{link_error_message, link_server, sleep_unless_zero, Link, Session};

/// Serves one accepted connection until it ends.
///
/// Two steps, so an idle client costs only its session: everything up to
/// the start of the session (checks, login, the console) runs in a boxed
/// future that is freed once the session starts; this future then holds
/// just the session and its connection slot.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // Taken apart at once, so the session is not kept twice in this future.
    let (_slot, run, farewell) = match Box::pin(open(stream, peer, &shared)).await {
        Some(Ready { slot, session, farewell }) => (slot, session.run(), farewell),
        None => return,
    };
    let _ = run.await;
    if let Some(f) = farewell {
        let secs = f.started.elapsed().as_secs_f64();
        tracing::info!(
            user = %f.user, database = %f.database, application_name = %f.application_name, host = %peer.ip(),
            "disconnection: session time: {secs:.3}s"
        );
    }
}

/// A client whose session can start.
struct Ready<'a> {
    /// Its place under `max_client_conn`, for as long as it is connected.
    slot: ClientSlot<'a>,
    session: Session,
    /// What the disconnection line says (`log_disconnections`).
    farewell: Option<Box<Farewell>>,
}

struct Farewell {
    started: Instant,
    user: String,
    database: String,
    application_name: String,
}

/// Everything before the session: the connection limit, the login (under
/// `client_login_timeout`), the admin console. None when the connection
/// ended there.
async fn open(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) -> Option<Ready<'_>> {
    let _ = stream.set_nodelay(true);
    let mut conn = ClientConn::new(stream, peer);
    let max = shared.config.load().max_client_conn as usize;
    let Some(slot) = ClientSlot::enter(&shared.stats, max) else {
        shared.stats.clients_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        conn.fatal(sqlstate::TOO_MANY_CONNECTIONS, "sorry, too many clients already").await;
        return None;
    };
    let started = Instant::now();
    let (log_conn, log_disc) = {
        let c = shared.config.load();
        (c.log_connections, c.log_disconnections)
    };
    if log_conn {
        tracing::info!(host = %peer.ip(), port = peer.port(), "connection received");
    }
    let login_timeout = shared.config.load().client_login_timeout;
    let mut phase = shared.phase.clone();
    let outcome = tokio::select! {
        r = login(&mut conn, shared) => r,
        _ = sleep_unless_zero(login_timeout) => Err(ClientError::LoginTimeout.into()),
        // Logins in progress do not hold up a shutdown.
        _ = phase.wait_for(|p| *p != Phase::Running) => Err(ClientError::ShuttingDown.into()),
    };
    let done = match outcome {
        Ok(Some(Opened::Session(d))) => d,
        Ok(Some(Opened::Console { user, access })) => {
            conn.release_login_buffers();
            if log_conn {
                tracing::info!(%user, host = %peer.ip(), "admin console connection authorized");
            }
            console::run(conn, shared.clone(), user, access).await;
            return None;
        }
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "login ended");
            match e {
                Error::Client(ClientError::LoginTimeout) => {
                    conn.fatal(sqlstate::CONNECTION_FAILURE, "client_login_timeout").await;
                }
                Error::Client(ClientError::ShuttingDown) => {
                    conn.fatal(sqlstate::ADMIN_SHUTDOWN, "pgbalancer is shutting down").await;
                }
                _ => {}
            }
            return None;
        }
    };
    conn.release_login_buffers();
    let application_name = done.params.get("application_name").unwrap_or_default();
    if log_conn {
        tracing::info!(user = %done.user, database = %done.database, %application_name, host = %peer.ip(), "connection authorized");
    }
    let farewell = log_disc.then(|| {
        Box::new(Farewell {
            started,
            user: done.user.clone(),
            database: done.database.clone(),
            application_name: application_name.to_owned(),
        })
    });
    let entry = shared.clients.register(peer, &done.user, &done.database, application_name);
    let session = Session::new(
        shared.clone(),
        conn,
        done.user,
        done.database,
        done.params,
        done.pool,
        done.link,
        done.cancel,
        entry,
    );
    Some(Ready { slot, session, farewell })
}

/// A logged-in client, ready for its session.
struct LoggedIn {
    user: String,
    database: String,
    params: ClientParams,
    pool: Arc<crate::pool::Pool>,
    link: Link,
    cancel: crate::cancel::Registration,
}

/// Startup, authentication and the first server link. Returns None for a
/// CancelRequest.
/// What a login opened.
// A console login is rare and small; a session is what nearly every
// client gets.
#[allow(clippy::large_enum_variant)]
enum Opened {
    Session(LoggedIn),
    /// The SQL admin console (database `pgbalancer`).
    Console {
        user: String,
        access: console::Access,
    },
}

async fn login(conn: &mut ClientConn, shared: &Arc<Shared>) -> Result<Option<Opened>, Error> {
    // ---- authentication (login.rs): a place among unauthenticated
    // connections (max_unauthenticated_clients), held until it ends.
    let unauthenticated = login::admit(conn, shared).await?;
    let msg = match login::negotiate(conn, shared).await? {
        Opening::Cancel => return Ok(None),
        Opening::Startup(m) => m,
    };
    let id = login::check_startup(conn, &msg).await?;
    let auth = login::authenticate(conn, shared, &id).await?;
    drop(unauthenticated);
    // ---- end of authentication
    if id.database == console::DATABASE {
        let Some(access) = console::access(&shared.config.load(), &id.user) else {
            let msg =
                format!("user \"{}\" is not allowed to use the admin console (admin_users, stats_users)", id.user);
            conn.fatal(sqlstate::INVALID_AUTHORIZATION, &msg).await;
            return Err(ClientError::Protocol("console access refused").into());
        };
        write::authentication_ok(&mut conn.write_buf);
        console::greet(&mut conn.write_buf, &ClientParams::from_startup(&msg));
        let mut key = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
        let (pid, secret) =
            (i32::from_be_bytes(key[..4].try_into().unwrap()), i32::from_be_bytes(key[4..].try_into().unwrap()));
        write::backend_key_data(&mut conn.write_buf, pid, secret);
        write::ready_for_query(&mut conn.write_buf, TxStatus::Idle);
        conn.flush().await?;
        return Ok(Some(Opened::Console { user: id.user, access }));
    }
    write::authentication_ok(&mut conn.write_buf);

    let mut params = ClientParams::from_startup(&msg);
    let config = shared.config.load_full();
    let server_login = server_login(shared, &id.user, &id.database, &auth);
    let mode = config.pool_mode;
    let wait = config.query_wait_timeout;

    let cancel = shared.cancels.register();
    // Nodes that could not be reached during this login.
    let mut tried = 0u64;
    let (pool, link) = loop {
        let node = match login_node(shared, &config, &params, tried).await {
            Ok(n) => n,
            Err(e) => {
                let msg = match e {
                    NoNode::NoPrimary => "pgbalancer: no primary is available (failover_wait_timeout reached)",
                    NoNode::Conflict => {
                        "pgbalancer: more than one backend claims to be primary (follow_primary: strict)"
                    }
                };
                conn.fatal(sqlstate::CANNOT_CONNECT_NOW, msg).await;
                return Err(ClientError::Protocol("no node for login").into());
            }
        };
        let backend = &shared.topology.nodes()[node];
        let key = PoolKey { database: id.database.clone(), user: id.user.clone(), backend: node };
        let pool = shared.pools.get_or_create(key, &backend.host, backend.port, server_login.clone());
        pool.set_login(server_login.clone());
        // Like PgBouncer: once the pool knows what its servers report, and how
        // they spell each of this client's settings, a login needs no server.
        // Clients whose connect blocks (pgbench -C, many ORMs) must not wait
        // for one inside their login.
        let known = pool.initial_params().and_then(|initial| {
            let spelled: Option<Vec<(String, String)>> =
                params.iter().map(|(k, v)| pool.spelling(k, v).map(|s| (k.to_owned(), s))).collect();
            spelled.map(|s| (initial, s))
        });
        if let Some((initial, spelled)) = known {
            for (k, v) in initial.iter() {
                let v = spelled.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map_or(v.as_str(), |(_, s)| s.as_str());
                write::parameter_status(&mut conn.write_buf, k, v);
            }
            break (pool, Link::Idle);
        }
        // Otherwise link a server: it proves PostgreSQL accepts this user,
        // database and settings, and tells how it spells them.
        let asked: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        if shared.pause.is_paused() {
            shared.pause.wait_resumed().await;
        }
        let mut guard: ServerGuard = match link_server(&pool, &mut params, wait).await {
            Ok(g) => g,
            Err(e) if shared.topology.routed() && route::unreachable(&e) => {
                // Not known to be down yet: try another node.
                shared.topology.suspect(node);
                tried |= route::bit(node);
                continue;
            }
            Err(e) => {
                let (code, msg) = link_error_message(&e);
                conn.fatal(code, &msg).await;
                return Err(ClientError::Protocol("no server for login").into());
            }
        };
        let server = guard.conn();
        for (k, v) in &asked {
            pool.learn_spelling(k, v, server.param(k).unwrap_or(v));
        }
        for (k, v) in &server.params {
            write::parameter_status(&mut conn.write_buf, k, v);
        }
        let link = match mode {
            PoolMode::Session => {
                cancel.slot.set(crate::cancel::CancelTarget {
                    addr: server.addr,
                    pid: server.backend_pid,
                    key: server.backend_key,
                });
                Link::Linked(guard)
            }
            PoolMode::Transaction | PoolMode::Statement => Link::Idle,
        };
        break (pool, link);
    };
    write::backend_key_data(&mut conn.write_buf, cancel.pid, cancel.key);
    write::ready_for_query(&mut conn.write_buf, TxStatus::Idle);
    conn.flush().await?;
    Ok(Some(Opened::Session(LoggedIn { user: id.user, database: id.database, params, pool, link, cancel })))
}

/// The node a client logs in on, not one of `tried` (unreachable during
/// this login). Session mode: its node for life — the primary, or a read
/// node when the client asks for one (`-c pgbalancer.role=replica`).
/// Transaction mode: the login only proves the credentials and learns
/// parameters, so any node will do, the primary first. With no candidate,
/// waits up to `failover_wait_timeout` for the route table to change.
async fn login_node(shared: &Shared, config: &Config, params: &ClientParams, mut tried: u64) -> Result<usize, NoNode> {
    let topology = &shared.topology;
    if !topology.routed() {
        return Ok(0);
    }
    let hint = params.get(route::ROLE_SETTING).and_then(route::hint_word);
    let deadline = tokio::time::Instant::now() + config.failover_wait_timeout;
    loop {
        let mut changed = topology.subscribe();
        let table = topology.table();
        let (primary, no_primary) = match table.primary {
            Primary::Node(p) if tried & route::bit(p) == 0 => (Some(p), NoNode::NoPrimary),
            Primary::Conflict => (None, NoNode::Conflict),
            _ => (None, NoNode::NoPrimary),
        };
        let reader =
            || topology.picker.pick(config.load_balance, &table, topology.nodes(), |n| tried & route::bit(n.id) == 0);
        let choice = match (config.pool_mode, hint) {
            (PoolMode::Session, Some(route::Hint::Replica)) => reader().or(primary),
            (PoolMode::Session, _) => primary,
            _ => primary.or_else(reader),
        };
        if let Some(n) = choice {
            return Ok(n);
        }
        drop(table);
        if no_primary == NoNode::Conflict && config.pool_mode == PoolMode::Session {
            return Err(NoNode::Conflict);
        }
        topology.check_now.notify_one();
        if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
            return Err(no_primary);
        }
        tried = 0;
    }
}

/// How to log in to servers for this client: `server_user` with
/// `server_password` when configured; otherwise as the client, with what
/// authentication learned (its password, md5 hash, or the SCRAM keys the
/// client just proved: pass-through), else `server_password`.
fn server_login(shared: &Shared, user: &str, database: &str, auth: &Authenticated) -> ServerLogin {
    let config = shared.config.load();
    let configured = config.server_password().ok().flatten().map(ServerSecret::Password);
    if let Some(server_user) = &config.server_user {
        return ServerLogin {
            user: server_user.clone(),
            database: database.to_owned(),
            secret: configured.unwrap_or(ServerSecret::None),
        };
    }
    let secret = auth.server_secret.clone().or(configured).unwrap_or(ServerSecret::None);
    ServerLogin { user: user.to_owned(), database: database.to_owned(), secret }
}
