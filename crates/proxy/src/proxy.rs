//! Listeners, the maintenance tick, reload and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pgbalancer_config::Config;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cancel::CancelRegistry;
use crate::pool::{PoolSettings, Pools};
use crate::stats::Stats;
use crate::tls::TlsState;
use crate::users::{UserDb, UserError};
use crate::{client, Phase, Shared};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Users(#[from] UserError),
    /// A TLS certificate, key or CA file cannot be used (names the key).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A running proxy.
pub struct ProxyHandle {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    tasks: Vec<JoinHandle<()>>,
}

fn pool_settings(c: &Config, tls: Arc<crate::tls::BackendTls>) -> PoolSettings {
    PoolSettings {
        tls,
        size: c.pool_size as usize,
        min_size: c.min_pool_size as usize,
        server_lifetime: c.server_lifetime,
        server_idle_timeout: c.server_idle_timeout,
        connect_timeout: c.server_connect_timeout,
    }
}

fn classifier(c: &Config) -> crate::sql::classify::Classifier {
    crate::sql::classify::Classifier::new(&c.write_functions, &c.read_only_functions)
}

impl ProxyHandle {
    /// Binds every listen address and starts serving.
    pub async fn start(config: Config) -> Result<ProxyHandle, StartError> {
        let mut dummy_secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut dummy_secret);
        let users = UserDb::from_config(&config, dummy_secret)?;
        let prepared = TlsState::prepare(&config)?;
        let backend_tls = prepared.backend();
        let tls = TlsState::new(prepared);
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let mut listeners = Vec::new();
        for host in config.listen_hosts() {
            let addr = if host.contains(':') {
                format!("[{host}]:{}", config.port)
            } else {
                format!("{host}:{}", config.port)
            };
            let l = TcpListener::bind(&addr).await.map_err(|source| StartError::Bind { addr: addr.clone(), source })?;
            listeners.push(l);
        }
        let addrs = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        let shared = Arc::new(Shared {
            pools: Pools::new(pool_settings(&config, backend_tls)),
            topology: crate::topology::Topology::new(&config),
            classifier: ArcSwap::from_pointee(classifier(&config)),
            cancels: CancelRegistry::new(config.server_connect_timeout),
            statements: crate::prepared::Registry::default(),
            config: ArcSwap::from_pointee(config),
            config_generation: Default::default(),
            users: ArcSwap::from_pointee(users),
            stats: Stats::default(),
            auth_failures: Default::default(),
            pause: crate::control::Pause::default(),
            clients: Arc::default(),
            traffic: crate::measure::Traffic::default(),
            control: std::sync::OnceLock::new(),
            tls,
            phase: phase_rx,
        });
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(tokio::spawn(accept_loop(l, shared.clone())));
        }
        tasks.push(tokio::spawn(maintenance(shared.clone())));
        tasks.push(tokio::spawn(crate::topology::health::run(shared.clone())));
        Ok(ProxyHandle { addrs, shared, phase: phase_tx, tasks })
    }

    /// The addresses actually bound (port 0 becomes a real port).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Applies a new, already validated config. Pools keep their
    /// connections; new sizes and timeouts apply from the next checkout.
    /// Listen addresses and ports change only with a restart.
    pub fn reload(&self, config: Config) -> Result<(), StartError> {
        let users = UserDb::from_config(&config, self.shared.users.load().dummy_secret)?;
        // Certificates are read anew: new handshakes use them, connected
        // clients keep theirs. A bad file rejects the whole reload.
        let tls = TlsState::prepare(&config)?;
        let old = self.shared.config.load();
        if old.listen_addresses != config.listen_addresses || old.port != config.port {
            tracing::warn!("listen_addresses and port changes need a restart; keeping the current listeners");
        }
        let moved = old.backends.len() != config.backends.len()
            || old.backends.iter().zip(&config.backends).any(|(a, b)| a.host != b.host || a.port != b.port);
        if moved {
            tracing::warn!(
                "changes to the backend list (hosts, ports, order) need a restart; weights and roles apply now"
            );
        }
        self.shared.pools.set_settings(pool_settings(&config, tls.backend()));
        self.shared.topology.reconfigure(&config);
        self.shared.classifier.store(Arc::new(classifier(&config)));
        self.shared.users.store(Arc::new(users));
        self.shared.tls.apply(tls);
        self.shared.config.store(Arc::new(config));
        self.shared.config_generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Graceful shutdown: stop accepting, let clients finish their
    /// transactions for up to `shutdown_timeout`, then close everything.
    pub async fn shutdown(&self) {
        let timeout = self.shared.config.load().shutdown_timeout;
        self.stop_accepting();
        let _ = self.phase.send(Phase::Draining);
        self.shared.clients.wake_all();
        // Clients waiting out a PAUSE finish their transactions too.
        self.shared.pause.resume();
        let drained = async {
            loop {
                let notified = self.shared.stats.no_clients.notified();
                if self.shared.stats.clients() == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(timeout, drained).await.is_err() {
            tracing::warn!(
                clients = self.shared.stats.clients(),
                "shutdown_timeout reached; closing remaining clients"
            );
        }
        self.shutdown_now();
    }

    /// Closes every client and server connection now.
    pub fn shutdown_now(&self) {
        self.stop_accepting();
        let _ = self.phase.send(Phase::Stopping);
        self.shared.clients.wake_all();
        self.shared.pools.close_all();
    }

    fn stop_accepting(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(client::serve(stream, peer, shared.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: log, back off, go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Closes idle and expired server connections, keeps min_pool_size.
async fn maintenance(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.pools.maintain();
        shared.statements.prune();
    }
}
