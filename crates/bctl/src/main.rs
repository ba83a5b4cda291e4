//! bctl: the pgbalancer control CLI.
//!
//! Offline commands: `check-config`, `password-hash`, `token`, `completions`.
//! Commands that talk to a running daemon over its REST admin API (see
//! docs/rest-api.md): `status`, `nodes [ID]`, `nodes attach|detach|promote ID`,
//! `pools`, `clients`, `servers`, `stats`, `top`, `health`, `reload`, `pause`,
//! `resume`, `stop`; over HTTPS when the config has `rest_api.ssl_cert` or
//! `--cacert` is given.
//! Depends on `pgbalancer-config` only, never on the proxy or admin crates.

mod http;
mod render;
mod token;

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use pgbalancer_config::{Config, JwtAlgorithm};
use serde_json::Value;

use token::Signer;

#[derive(Parser, Debug)]
#[command(name = "bctl", version, about = "Control pgbalancer")]
struct Cli {
    /// pgbalancer.yml: where the admin API listens (`rest_api`) and the JWT
    /// secret to make tokens with.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A file holding the JWT secret (instead of the one in --config).
    #[arg(long, global = true, value_name = "FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// A PEM private key (RSA or Ed25519) to sign RS256/EdDSA tokens with,
    /// instead of rest_api.jwt_private_key_file of --config.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "jwt_secret_file")]
    private_key: Option<PathBuf>,
    /// Admin API host (default: rest_api.bind_address of --config, else 127.0.0.1).
    #[arg(long, global = true)]
    host: Option<String>,
    /// Admin API port (default: rest_api.port of --config, else 8080).
    #[arg(long, short = 'p', global = true)]
    port: Option<u16>,
    /// Bearer token for the admin API (visible to `ps`: prefer --token-file
    /// or the BCTL_TOKEN environment variable, used when neither is given).
    #[arg(long, global = true)]
    token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Use HTTPS and trust the certificates of this PEM file (the CA that
    /// signed the admin API's certificate, or that certificate itself).
    /// Default with --config: HTTPS trusting rest_api.ssl_cert when it is set.
    #[arg(long, global = true, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Print the API's JSON as is instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Old form of `bctl token` (with --jwt-secret-file or --config).
    #[arg(long, hide = true)]
    generate_token: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a pgbalancer.yml: prints OK, or every problem with its key.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Print a SCRAM-SHA-256 verifier for the `users:` list. The password
    /// is read from standard input (never from the command line, where
    /// `ps` would show it).
    PasswordHash,
    /// Print a JWT for the admin API: HS256 signed with the secret of
    /// --config (rest_api.jwt_secret / jwt_secret_file) or --jwt-secret-file;
    /// RS256/EdDSA signed with --private-key (or the config's
    /// rest_api.jwt_private_key_file).
    Token(TokenArgs),
    /// Daemon summary: version, uptime, pool mode, clients, servers, nodes.
    Status,
    /// The nodes (backends): roles, health, lag, where reads and writes go;
    /// `nodes ID` shows one; `nodes attach|detach|promote ID` steers them.
    Nodes(NodesArgs),
    /// Every pool with its counts.
    Pools,
    /// Every logged-in client: address, user, database, application, state
    /// and the server (node, backend pid) it holds.
    Clients,
    /// Every open server connection: idle in a pool, or held by a client.
    Servers,
    /// A live view of the nodes and pools, redrawn every --interval seconds
    /// until Ctrl-C.
    Top {
        /// Seconds between frames (0.2 to 3600).
        #[arg(long, default_value_t = 2.0, value_parser = parse_interval)]
        interval: f64,
        /// Print one frame and exit (no screen clearing).
        #[arg(long)]
        once: bool,
    },
    /// Process-wide totals and counters.
    Stats,
    /// Liveness: exit 0 when healthy, 1 otherwise.
    Health,
    /// Make the daemon re-read its config file (as SIGHUP).
    Reload,
    /// PAUSE (as in PgBouncer): new transactions wait until `resume`; waits
    /// until no client holds a server. Exit 0 when paused, 2 when clients
    /// still held servers after --wait (paused all the same).
    Pause {
        /// Seconds to wait for transactions under way to finish (0 to 300).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=300))]
        wait: u64,
    },
    /// RESUME: transactions that waited go on.
    Resume,
    /// Gracefully stop the daemon (as SIGTERM).
    Stop,
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct NodesArgs {
    #[command(subcommand)]
    action: Option<NodeAction>,
    /// Show only this node (its id: the backend's position in the config, from 0).
    id: Option<usize>,
}

#[derive(Subcommand, Debug, Clone, Copy)]
enum NodeAction {
    /// Put a detached node back in service.
    Attach {
        /// Node id.
        id: usize,
    },
    /// Take a node out of service: no new work goes there (work already
    /// on it finishes). Detaching the write target makes writes wait for a
    /// primary.
    Detach {
        /// Node id.
        id: usize,
    },
    /// Make a node the write target. A replica is refused unless the
    /// daemon has `allow_pg_promote: true`, which runs pg_promote() on it.
    Promote {
        /// Node id.
        id: usize,
    },
}

#[derive(clap::Args, Debug)]
struct TokenArgs {
    /// `read` allows GET requests; `admin` allows everything.
    #[arg(long, value_enum, default_value_t = Role::Read)]
    role: Role,
    /// Lifetime (e.g. 90s, 10m, 1h); at most the config's jwt_max_ttl.
    /// Default: 10m, or jwt_max_ttl when that is shorter.
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<Duration>,
    /// `aud` claim (default: rest_api.jwt_audience).
    #[arg(long)]
    aud: Option<String>,
    /// `iss` claim (default: rest_api.jwt_issuer).
    #[arg(long)]
    iss: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Read,
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.2..=3600.0).contains(&v) => Ok(v),
        _ => Err("a number of seconds from 0.2 to 3600".into()),
    }
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    pgbalancer_config::units::parse_duration(s)
}

/// Default lifetime of `bctl token`, and of the tokens bctl makes for itself.
const DEFAULT_TTL: Duration = Duration::from_secs(600);
const SELF_TTL: Duration = Duration::from_secs(60);
/// How long bctl waits for an answer (beyond a pause's own wait).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Exit status of `pause` when clients still held servers.
const EXIT_STILL_PAUSING: u8 = 2;

/// An error already worded for the user: printed as one line, exit 1.
type Fail = String;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::CheckConfig { file }) => return check_config(file),
        Some(Command::PasswordHash) => return password_hash(),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(*shell, &mut Cli::command(), "bctl", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::Token(args)) => token_cmd(&cli, args),
        None if cli.generate_token => token_cmd(&cli, &TokenArgs { role: Role::Read, ttl: None, aud: None, iss: None }),
        None => {
            let _ = Cli::command().print_help();
            return ExitCode::FAILURE;
        }
        Some(cmd) => api_cmd(&cli, cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bctl: {}", e.replace('\n', "; "));
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            for w in c.warnings() {
                eprintln!("warning: {}: {w}", file.display());
            }
            for w in Config::file_warnings(file) {
                eprintln!("warning: {w}");
            }
            println!("OK: {}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn password_hash() -> ExitCode {
    if std::io::stdin().is_terminal() {
        eprintln!("password (input is echoed; pipe it in to avoid that):");
    }
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim_end_matches(['\r', '\n']).is_empty() {
        eprintln!("bctl password-hash: no password on standard input");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    println!("{}", postgres_protocol::password::scram_sha_256(password.as_bytes()));
    ExitCode::SUCCESS
}

fn load_config(cli: &Cli) -> Result<Option<Config>, Fail> {
    match &cli.config {
        Some(f) => Config::load(f).map(Some).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// The signer from --jwt-secret-file (with the config's aud/iss/max_ttl when
/// --config is given too), else from the config (with --private-key for
/// RS256/EdDSA), else from --private-key alone; `None` if there is nothing
/// to sign with.
fn signer(cli: &Cli, config: Option<&Config>) -> Result<Option<Signer>, Fail> {
    if let Some(file) = &cli.jwt_secret_file {
        let mut s = Signer::from_secret_file(file)?;
        if let Some(c) = config {
            s.audience = c.rest_api.jwt_audience.clone();
            s.issuer = c.rest_api.jwt_issuer.clone();
            s.max_ttl = c.rest_api.jwt_max_ttl;
        }
        return Ok(Some(s));
    }
    match (config, &cli.config, &cli.private_key) {
        (Some(c), Some(path), key) => Signer::from_rest_api(&c.rest_api, path, key.as_deref()),
        (_, _, Some(key)) => Signer::from_private_key_file(key).map(Some),
        _ => Ok(None),
    }
}

fn token_cmd(cli: &Cli, args: &TokenArgs) -> Result<ExitCode, Fail> {
    let config = load_config(cli)?;
    let Some(signer) = signer(cli, config.as_ref())? else {
        return Err(match (&cli.config, config.as_ref().map(|c| c.rest_api.jwt_algorithm)) {
            (Some(f), Some(alg @ (JwtAlgorithm::RS256 | JwtAlgorithm::EdDSA))) => format!(
                "{}: rest_api.jwt_algorithm is {alg}: give --private-key FILE (or set rest_api.jwt_private_key_file)",
                f.display()
            ),
            (Some(f), _) => format!("{}: rest_api has no jwt_secret or jwt_secret_file", f.display()),
            (None, _) => "bctl token needs --config FILE, --jwt-secret-file FILE or --private-key FILE".into(),
        });
    };
    let ttl = args.ttl.unwrap_or(DEFAULT_TTL.min(signer.max_ttl));
    println!("{}", signer.mint(args.role.as_str(), ttl, args.aud.as_deref(), args.iss.as_deref())?);
    Ok(ExitCode::SUCCESS)
}

/// Where the admin API is: --host/--port, else the config's rest_api block.
fn endpoint(cli: &Cli, config: Option<&Config>) -> Result<(String, u16), Fail> {
    let rest = config.map(|c| &c.rest_api);
    if let (Some(r), Some(f), None) = (rest, &cli.config, cli.port) {
        if !r.enabled {
            return Err(format!("{}: rest_api.enabled is false: the daemon serves no admin API", f.display()));
        }
    }
    let host = match (&cli.host, rest) {
        (Some(h), _) => h.clone(),
        // A wildcard bind address is reached on loopback.
        (None, Some(r)) if r.bind_address == "0.0.0.0" || r.bind_address.is_empty() => "127.0.0.1".into(),
        (None, Some(r)) if r.bind_address == "::" || r.bind_address == "[::]" => "::1".into(),
        (None, Some(r)) => r.bind_address.clone(),
        (None, None) => "127.0.0.1".into(),
    };
    let port = cli.port.or(rest.map(|r| r.port)).unwrap_or(8080);
    Ok((host, port))
}

/// The bearer token: --token, --token-file, $BCTL_TOKEN, or one bctl makes
/// with the config's secret (role `role`, 60 s). `None`: send none.
fn bearer(cli: &Cli, config: Option<&Config>, role: Role) -> Result<Option<String>, Fail> {
    if let Some(t) = &cli.token {
        return Ok(Some(t.trim().to_string()));
    }
    if let Some(f) = &cli.token_file {
        let t = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        return Ok(Some(t.trim().to_string()));
    }
    if let Some(t) = std::env::var("BCTL_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        return Ok(Some(t.trim().to_string()));
    }
    if config.is_some_and(|c| !c.rest_api.jwt_enabled) {
        return Ok(None);
    }
    match signer(cli, config)? {
        Some(s) => Ok(Some(s.mint(role.as_str(), SELF_TTL.min(s.max_ttl), None, None)?)),
        None => Ok(None),
    }
}

/// The admin API of one invocation: where it is, how to reach it, and how
/// to get a token.
struct Api<'a> {
    cli: &'a Cli,
    config: Option<Config>,
    host: String,
    port: u16,
    /// `host:port` for messages.
    shown: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// An answer of the admin API, any status.
struct Answer {
    resp: http::Response,
    json: Option<Value>,
    sent_token: bool,
}

impl<'a> Api<'a> {
    fn new(cli: &'a Cli) -> Result<Api<'a>, Fail> {
        let config = load_config(cli)?;
        let (host, port) = endpoint(cli, config.as_ref())?;
        let shown = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        // --cacert, else the config's own certificate (HTTPS only when set).
        let ca = cli.cacert.clone().or_else(|| config.as_ref().and_then(|c| c.rest_api.ssl_cert.clone()));
        let tls = match &ca {
            Some(f) => Some(http::tls_config(f).map_err(|e| format!("cannot use the CA certificate: {e}"))?),
            None => None,
        };
        Ok(Api { cli, config, host, port, shown, tls })
    }

    /// One request; a token of `role` is sent when `role` is given.
    fn call(&self, method: &str, path: &str, role: Option<Role>, timeout: Duration) -> Result<Answer, Fail> {
        let token = match role {
            Some(r) => bearer(self.cli, self.config.as_ref(), r)?,
            None => None,
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let shown = &self.shown;
        let resp = http::request(&self.host, self.port, self.tls.as_ref(), method, path, token.as_deref(), timeout)
            .map_err(|e| match e {
                http::Error::Connect(e) => format!("cannot reach the admin API at {shown}: {e}"),
                http::Error::Tls(e) => format!(
                    "TLS with the admin API at {scheme}://{shown} failed: {e} (is it serving HTTPS, with a \
                     certificate for {} signed by --cacert or rest_api.ssl_cert?)",
                    self.host
                ),
                http::Error::Exchange(e) => format!("bad answer from the admin API at {scheme}://{shown}: {e}"),
            })?;
        let json = serde_json::from_str(&resp.body).ok();
        Ok(Answer { resp, json, sent_token: token.is_some() })
    }

    /// A GET that must succeed (2xx, JSON).
    fn get(&self, path: &str) -> Result<Value, Fail> {
        let a = self.call("GET", path, Some(Role::Read), ANSWER_TIMEOUT)?;
        if !(200..300).contains(&a.resp.status) {
            return Err(api_error(&a.resp, a.json.as_ref(), a.sent_token));
        }
        a.json.ok_or_else(|| format!("the admin API answered {} with a body that is not JSON", a.resp.status))
    }
}

fn api_cmd(cli: &Cli, cmd: &Command) -> Result<ExitCode, Fail> {
    if let Command::Top { interval, once } = cmd {
        return top(&Api::new(cli)?, Duration::from_secs_f64(*interval), *once, cli.json);
    }
    let (method, path, role) = match cmd {
        Command::Status => ("GET", "/api/v1/status".to_string(), Some(Role::Read)),
        Command::Nodes(NodesArgs { action: None, id: None }) => ("GET", "/api/v1/nodes".to_string(), Some(Role::Read)),
        Command::Nodes(NodesArgs { action: None, id: Some(id) }) => {
            ("GET", format!("/api/v1/nodes/{id}"), Some(Role::Read))
        }
        Command::Nodes(NodesArgs { action: Some(a), .. }) => {
            let (verb, id) = match a {
                NodeAction::Attach { id } => ("attach", id),
                NodeAction::Detach { id } => ("detach", id),
                NodeAction::Promote { id } => ("promote", id),
            };
            ("POST", format!("/api/v1/nodes/{id}/{verb}"), Some(Role::Admin))
        }
        Command::Pools => ("GET", "/api/v1/pools".to_string(), Some(Role::Read)),
        Command::Clients => ("GET", "/api/v1/clients".to_string(), Some(Role::Read)),
        Command::Servers => ("GET", "/api/v1/servers".to_string(), Some(Role::Read)),
        Command::Stats => ("GET", "/api/v1/stats".to_string(), Some(Role::Read)),
        Command::Health => ("GET", "/api/v1/health".to_string(), None),
        Command::Reload => ("POST", "/api/v1/control/reload".to_string(), Some(Role::Admin)),
        Command::Pause { wait } => ("POST", format!("/api/v1/control/pause?wait={wait}"), Some(Role::Admin)),
        Command::Resume => ("POST", "/api/v1/control/resume".to_string(), Some(Role::Admin)),
        Command::Stop => ("POST", "/api/v1/control/stop".to_string(), Some(Role::Admin)),
        _ => unreachable!("not an API command"),
    };
    let timeout = match cmd {
        Command::Pause { wait } => ANSWER_TIMEOUT + Duration::from_secs(*wait),
        _ => ANSWER_TIMEOUT,
    };
    let Answer { resp, json, sent_token } = Api::new(cli)?.call(method, &path, role, timeout)?;
    // Health answers 503 with a JSON body that is its result, not an error.
    if matches!(cmd, Command::Health) && matches!(resp.status, 200 | 503) {
        if cli.json {
            println!("{}", resp.body.trim_end());
        } else {
            println!("{}", render::health(json.as_ref().unwrap_or(&Value::Null)));
        }
        return Ok(if resp.status == 200 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    if !(200..300).contains(&resp.status) {
        return Err(api_error(&resp, json.as_ref(), sent_token));
    }
    // A pause that ended with clients still holding servers: paused all the same.
    let code = match cmd {
        Command::Pause { .. } if resp.status == 202 => ExitCode::from(EXIT_STILL_PAUSING),
        _ => ExitCode::SUCCESS,
    };
    if cli.json {
        println!("{}", resp.body.trim_end());
        return Ok(code);
    }
    let v = json.ok_or_else(|| format!("the admin API answered {} with a body that is not JSON", resp.status))?;
    if let Some(w) = v.get("warning").and_then(Value::as_str) {
        eprintln!("bctl: warning: {w}");
    }
    let text = match cmd {
        Command::Status => render::status(&v),
        Command::Nodes(NodesArgs { action: None, id: None }) => render::nodes(&v),
        Command::Nodes(NodesArgs { action: None, id: Some(_) }) => render::node(&v),
        Command::Nodes(NodesArgs { action: Some(_), .. }) => {
            v.get("message").and_then(Value::as_str).unwrap_or("ok").to_string()
        }
        Command::Pools => render::pools(&v),
        Command::Clients => render::clients(&v),
        Command::Servers => render::servers(&v),
        Command::Stats => render::stats(&v),
        Command::Pause { wait } => render::pause(&v, *wait),
        _ => v.get("status").and_then(Value::as_str).unwrap_or("ok").to_string(),
    };
    println!("{}", text.trim_end());
    Ok(code)
}

/// What one frame of `top` shows.
fn top_frame(api: &Api) -> Result<render::Frame, Fail> {
    Ok(render::Frame {
        status: api.get("/api/v1/status")?,
        stats: api.get("/api/v1/stats")?,
        nodes: api.get("/api/v1/nodes")?,
        pools: api.get("/api/v1/pools")?,
    })
}

/// `bctl top`: a frame every `interval` (the screen cleared before each on
/// a terminal) until Ctrl-C; with `once`, one frame and exit. A daemon
/// that cannot be reached is shown as such and tried again; a refused
/// token ends it.
fn top(api: &Api, interval: Duration, once: bool, json: bool) -> Result<ExitCode, Fail> {
    use std::io::Write;
    let clear = !once && !json && std::io::stdout().is_terminal();
    let mut last: Option<(Instant, u64)> = None;
    loop {
        let started = Instant::now();
        let text = match top_frame(api) {
            Ok(f) if json => {
                serde_json::json!({"status": f.status, "stats": f.stats, "nodes": f.nodes, "pools": f.pools})
                    .to_string()
            }
            Ok(f) => {
                let transactions = f.stats["transactions"].as_u64();
                let rate = match (last, transactions) {
                    (Some((at, before)), Some(now)) => {
                        Some(now.saturating_sub(before) as f64 / started.duration_since(at).as_secs_f64().max(1e-3))
                    }
                    _ => None,
                };
                last = transactions.map(|t| (started, t));
                render::top(&f, rate)
            }
            Err(e) if once || e.contains("(401)") || e.contains("(403)") => return Err(e),
            Err(e) if json => {
                eprintln!("bctl: {e} (retrying)");
                last = None;
                std::thread::sleep(interval.saturating_sub(started.elapsed()));
                continue;
            }
            Err(e) => {
                last = None;
                format!("bctl top: {e}\n(retrying every {} s; Ctrl-C to quit)", interval.as_secs_f64())
            }
        };
        let mut out = std::io::stdout().lock();
        let written = if clear {
            writeln!(out, "\x1b[H\x1b[2J{}", text.trim_end())
        } else if once || json {
            writeln!(out, "{}", text.trim_end())
        } else {
            writeln!(out, "{}\n", text.trim_end())
        };
        // A closed pipe (`bctl top | head`) ends it quietly.
        if written.and_then(|()| out.flush()).is_err() || once {
            return Ok(ExitCode::SUCCESS);
        }
        drop(out);
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

/// One line for a 4xx/5xx answer.
fn api_error(resp: &http::Response, json: Option<&Value>, sent_token: bool) -> String {
    let mut msg = match json.and_then(|v| v.get("error")).and_then(Value::as_str) {
        Some(e) => e.to_string(),
        None if resp.body.trim().is_empty() => "(no body)".to_string(),
        None => resp.body.trim().chars().take(200).collect(),
    };
    if let Some(problems) = json.and_then(|v| v.get("problems")).and_then(Value::as_array) {
        let list: Vec<String> = problems
            .iter()
            .map(|p| {
                format!(
                    "{}: {}",
                    p.get("key").and_then(Value::as_str).unwrap_or("?"),
                    p.get("message").and_then(Value::as_str).unwrap_or("?")
                )
            })
            .collect();
        if !list.is_empty() {
            msg = list.join("; ");
        }
    }
    match resp.status {
        401 if !sent_token => format!(
            "the admin API needs a token (401): {msg} (give --token, BCTL_TOKEN, --token-file, or --config with the JWT secret or private key)"
        ),
        401 => format!("the admin API refused the token (401): {msg}"),
        403 => format!("the token's role does not allow this (403): {msg}"),
        429 => format!(
            "too many failed authentications from this address (429): {msg}{}",
            resp.header("retry-after").map(|s| format!(" (retry after {s} s)")).unwrap_or_default()
        ),
        s => format!("the admin API answered {s}: {msg}"),
    }
}
