//! The pgbalancer daemon: loads the config, starts the proxy and (with
//! `rest_api.enabled`) the admin API, and handles signals (SIGHUP reload,
//! SIGTERM/SIGINT graceful then immediate shutdown) and the admin API's
//! reload and stop, which take the same paths.

mod demo;
mod notify;

/// mimalloc: connection set-up and tear-down allocate many small objects on
/// several worker threads; glibc's malloc spent a tenth of pgbalancer's CPU
/// on them under `pgbench -C` (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use pgbalancer_admin::{AdminServer, AdminState, AuthSettings, Command, ReloadError};
use pgbalancer_config::{Config, LogFormat, DEFAULT_CONFIG_PATH};
use pgbalancer_proxy::ProxyHandle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(name = "pgbalancer", version, about = "PostgreSQL connection pooler and load balancer")]
struct Args {
    /// Config file (default: /etc/pgbalancer/pgbalancer.yml, then ./pgbalancer.yml).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate FILE, print OK or every problem, and exit.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "demo"])]
    check_config: Option<PathBuf>,
    /// Start a throwaway local PostgreSQL primary and replica and serve
    /// pgbalancer in front of them on 127.0.0.1:9999.
    #[arg(long)]
    demo: bool,
    /// Port to listen on in --demo mode.
    #[arg(long, default_value_t = 9999, requires = "demo")]
    demo_port: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check_config {
        return check_config(path);
    }
    let (config, config_path, demo) = if args.demo {
        match demo::Demo::start(args.demo_port) {
            Ok((demo, config)) => (config, None, Some(demo)),
            Err(e) => {
                eprintln!("pgbalancer --demo: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let path = match args.config.clone().or_else(default_config_path) {
            Some(p) => p,
            None => {
                eprintln!("pgbalancer: no config file: pass --config FILE or create {DEFAULT_CONFIG_PATH} or ./pgbalancer.yml");
                return ExitCode::FAILURE;
            }
        };
        match Config::load(&path) {
            Ok(c) => (c, Some(path), None),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    };
    init_tracing(&config);
    if let Some(path) = &config_path {
        for w in config.warnings() {
            tracing::warn!("{}: {w}", path.display());
        }
        // These name the file themselves.
        for w in Config::file_warnings(path) {
            tracing::warn!("{w}");
        }
    }
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        n => n as usize,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgbalancer: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(config, config_path, demo.as_ref()));
    drop(demo);
    code
}

fn default_config_path() -> Option<PathBuf> {
    [PathBuf::from(DEFAULT_CONFIG_PATH), PathBuf::from("pgbalancer.yml")].into_iter().find(|p| p.exists())
}

fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            for w in c.warnings() {
                eprintln!("warning: {}: {w}", path.display());
            }
            for w in Config::file_warnings(path) {
                eprintln!("warning: {w}");
            }
            println!("OK: {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config, config_path: Option<PathBuf>, demo: Option<&demo::Demo>) -> ExitCode {
    let started = Instant::now();
    let origin = config_path.as_ref().map_or_else(|| "--demo".to_string(), |p| p.display().to_string());
    let rest = config.rest_api.clone();
    // The JWT secret is read (and its length checked) before anything listens.
    let admin_state = if rest.enabled {
        let state = AuthSettings::from_config(&rest, &origin).map(|auth| AdminState::new(auth, started));
        match state.and_then(|s| s.load_tls(&rest, &origin).map(|()| s)) {
            Ok(state) => Some(state),
            Err(e) => {
                for line in e.to_string().lines() {
                    tracing::error!("{line}");
                }
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let proxy = match ProxyHandle::start(config).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in proxy.local_addrs() {
        tracing::info!(%addr, "listening");
    }
    // Reload and stop requests of the admin API and of the SQL admin
    // console (through `Shared::control`, also without the REST API) come
    // here, to the one reload function.
    let (control_tx, mut control_rx) = mpsc::channel::<Command>(8);
    if proxy.shared().control.set(control_tx.clone()).is_err() {
        tracing::error!("the proxy's control channel was already set");
        proxy.shutdown_now();
        return ExitCode::FAILURE;
    }
    let admin = match &admin_state {
        Some(state) => {
            match AdminServer::start(&rest.bind_address, rest.port, proxy.shared().clone(), state.clone(), control_tx)
                .await
            {
                Ok(a) => {
                    tracing::info!(addr = %a.local_addr(), "admin API listening");
                    if !rest.jwt_enabled {
                        tracing::warn!("admin API without authentication (rest_api.jwt_enabled: false)");
                    }
                    Some(a)
                }
                Err(e) => {
                    tracing::error!("{e}");
                    proxy.shutdown_now();
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    if let Some(d) = demo {
        d.print_banner(proxy.local_addrs());
    }
    let notifier = notify::Notifier::from_env();
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    // Only now: a SIGHUP sent as soon as systemd sees READY=1 must find its handler.
    notifier.ready();
    notifier.status(&format!("serving on {:?}", proxy.local_addrs()));
    // First SIGTERM/SIGINT (or a REST stop): graceful. Second signal: immediate.
    // SIGHUP and the REST reload share one reload function.
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notifier.reloading();
                let _ = reload(&proxy, config_path.as_deref(), admin_state.as_deref());
                notifier.ready();
            }
            Some(cmd) = control_rx.recv() => match cmd {
                Command::Reload(reply) => {
                    notifier.reloading();
                    let _ = reply.send(reload(&proxy, config_path.as_deref(), admin_state.as_deref()));
                    notifier.ready();
                }
                Command::Stop => {
                    tracing::info!("stop requested through the admin API or console");
                    break;
                }
            },
        }
    }
    // From here on, REST reload and stop answer 503.
    drop(control_rx);
    notifier.stopping();
    notifier.status("draining: waiting for transactions to finish");
    tracing::info!("shutting down: waiting for transactions to finish (send the signal again to stop now)");
    tokio::select! {
        _ = proxy.shutdown() => tracing::info!("shutdown complete"),
        _ = term.recv() => { tracing::info!("second signal: stopping now"); proxy.shutdown_now(); }
        _ = int.recv() => { tracing::info!("second signal: stopping now"); proxy.shutdown_now(); }
    }
    // The admin API answered health checks with 503 while draining; now it goes.
    if let Some(a) = admin {
        a.shutdown().await;
    }
    ExitCode::SUCCESS
}

/// Re-reads the config file (SIGHUP and `POST /api/v1/control/reload`). A
/// valid file applies to the proxy and to the admin API's JWT settings (the
/// secret is read anew: rotation); an invalid one is rejected, logged and
/// returned, and the old config stays.
fn reload(proxy: &ProxyHandle, path: Option<&Path>, admin: Option<&AdminState>) -> Result<(), ReloadError> {
    // Reading the files blocks: let the runtime move this worker's other
    // tasks elsewhere meanwhile (the runtime is always multi-threaded).
    let result = tokio::task::block_in_place(|| try_reload(proxy, path, admin));
    if let Err(e) = &result {
        for line in e.error.lines() {
            tracing::error!("reload rejected, keeping the old config: {line}");
        }
    }
    if let Some(a) = admin {
        a.record_reload(result.is_ok());
    }
    result
}

fn try_reload(proxy: &ProxyHandle, path: Option<&Path>, admin: Option<&AdminState>) -> Result<(), ReloadError> {
    let Some(path) = path else {
        return Err(ReloadError::other("no config file to reload (demo mode)"));
    };
    let c = Config::load(path).map_err(|e| ReloadError::from(&e))?;
    for w in c.warnings() {
        tracing::warn!("{}: {w}", path.display());
    }
    let old = proxy.shared().config.load().rest_api.clone();
    let new = &c.rest_api;
    if (old.enabled, old.port, &old.bind_address) != (new.enabled, new.port, &new.bind_address) {
        tracing::warn!(
            "rest_api.enabled, port and bind_address changes need a restart; keeping the admin API as it is"
        );
    }
    let auth = match admin {
        Some(_) if new.enabled => {
            Some(AuthSettings::from_config(new, &path.display().to_string()).map_err(|e| ReloadError::from(&e))?)
        }
        _ => None,
    };
    // Turning authentication off needs a restart, like moving the listener:
    // the check that allows it (loopback only) is about the new address,
    // while the running listener keeps the old one.
    let auth = auth.filter(|_| {
        let keep = old.jwt_enabled && !new.jwt_enabled;
        if keep {
            tracing::warn!("rest_api.jwt_enabled: false needs a restart; the admin API keeps requiring tokens");
        }
        !keep
    });
    // The admin API's certificate and key are re-read too (renewal); a
    // pair that cannot be used rejects the reload.
    let tls = match admin {
        Some(_) if new.enabled => {
            Some(pgbalancer_admin::tls::load(new, &path.display().to_string()).map_err(|e| ReloadError::from(&e))?)
        }
        _ => None,
    };
    proxy.reload(c).map_err(|e| ReloadError::other(e.to_string()))?;
    if let (Some(a), Some(auth)) = (admin, auth) {
        a.set_auth(auth);
    }
    if let (Some(a), Some(tls)) = (admin, tls) {
        a.set_tls(tls);
    }
    Ok(())
}
