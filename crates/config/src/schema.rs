//! The `pgbalancer.yml` schema: types and defaults. See `docs/configuration.md`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::{serialize_redacted, SecretRef};
use crate::units::ByteSize;

/// The default `auth_query`: PgBouncer 1.21's, with every name schema-
/// qualified. An expired role (`VALID UNTIL` in the past) gets no password,
/// so it cannot log in; a role without `LOGIN` is not found.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil OPERATOR(pg_catalog.<) pg_catalog.now() \
     THEN NULL ELSE rolpassword END FROM pg_catalog.pg_authid WHERE rolname OPERATOR(pg_catalog.=) $1 AND rolcanlogin";

/// The whole configuration file. Every key is optional; an empty file is valid.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Comma-separated hosts to listen on; `*` = all (0.0.0.0 and ::).
    pub listen_addresses: String,
    /// Client port; 0 picks a free port.
    pub port: u16,
    pub pool_mode: PoolMode,
    /// Transaction/statement mode: protocol-level prepared statements kept
    /// per server connection (LRU); 0 turns the feature off.
    pub max_prepared_statements: u32,
    /// Server connections per (database, user) per backend.
    pub pool_size: u32,
    pub min_pool_size: u32,
    pub max_client_conn: u32,
    /// How clients authenticate when no `hba` rule decides (or none are set).
    pub auth_type: AuthType,
    pub users: Vec<UserEntry>,
    /// PgBouncer `userlist.txt`: `"name" "password"` lines, the password a
    /// SCRAM verifier, an md5 hash or plaintext. Read at start and reload.
    pub users_file: Option<PathBuf>,
    /// Role that looks up users found in neither `users` nor `users_file`
    /// with `auth_query` (its password from those). Unset = no lookup.
    pub auth_user: Option<String>,
    /// The lookup: `$1` is the user name; the first row's first two
    /// columns are (name, password or verifier); no row = no such user.
    pub auth_query: String,
    /// Database `auth_query` runs in.
    pub auth_dbname: String,
    /// pg_hba.conf-like rules, first match wins; empty (and no `hba_file`)
    /// = `auth_type` for every connection.
    pub hba: Vec<HbaEntry>,
    /// The rules in pg_hba.conf syntax instead (conflicts with `hba`).
    pub hba_file: Option<PathBuf>,
    /// Connections still in startup or authentication at once; more are
    /// refused (FATAL 53300).
    pub max_unauthenticated_clients: u32,
    /// Failed logins from one address within `auth_failure_window` after
    /// which its further logins are refused for the window; 0 = no limit.
    pub auth_failure_limit: u32,
    #[serde(with = "crate::units::duration")]
    pub auth_failure_window: Duration,
    /// Users (from `users`) who may use the SQL admin console (database
    /// `pgbalancer`) and get an `admin` token from `POST /api/v1/auth/login`.
    pub admin_users: Vec<String>,
    /// Users who may run the console's `SHOW` commands and get a `read` token.
    pub stats_users: Vec<String>,
    pub backends: Vec<BackendConfig>,
    pub server_user: Option<String>,
    pub server_password: Option<SecretRef>,
    pub server_password_file: Option<PathBuf>,
    /// 0 = wait forever.
    #[serde(with = "crate::units::duration")]
    pub query_wait_timeout: Duration,
    /// 0 = never.
    #[serde(with = "crate::units::duration")]
    pub server_idle_timeout: Duration,
    /// 0 = never.
    #[serde(with = "crate::units::duration")]
    pub server_lifetime: Duration,
    /// 0 = disabled.
    #[serde(with = "crate::units::duration")]
    pub client_idle_timeout: Duration,
    /// 0 = disabled.
    #[serde(with = "crate::units::duration")]
    pub idle_transaction_timeout: Duration,
    /// Time a client may take to finish startup + auth; 0 = no limit.
    #[serde(with = "crate::units::duration")]
    pub client_login_timeout: Duration,
    /// TCP connect + server login.
    #[serde(with = "crate::units::duration")]
    pub server_connect_timeout: Duration,
    /// After a failed server login, how long new attempts fail fast.
    #[serde(with = "crate::units::duration")]
    pub server_login_retry: Duration,
    /// Session-mode reset on release; empty = no reset.
    pub server_reset_query: String,
    /// Graceful shutdown: how long to wait for transactions to finish.
    #[serde(with = "crate::units::duration")]
    pub shutdown_timeout: Duration,
    /// Cap for one client message.
    pub max_message_size: ByteSize,
    /// 0 = number of cores.
    pub workers: u32,
    pub log_connections: bool,
    pub log_disconnections: bool,
    pub log_statement: bool,
    pub log_format: LogFormat,
    /// A tracing `EnvFilter` directive string.
    pub log_level: String,
    // ---------------------------------------------------------------- TLS
    /// Accept TLS from clients (needs `ssl_cert` and `ssl_key`).
    pub ssl: bool,
    /// Whether clients may stay in plaintext: unset = `allow` with `ssl`,
    /// `disable` without. See [`Config::client_ssl_mode`].
    pub ssl_mode: Option<ClientSslMode>,
    /// Certificate chain (PEM) pgbalancer presents to clients.
    pub ssl_cert: Option<PathBuf>,
    /// Private key (PEM) of `ssl_cert`.
    pub ssl_key: Option<PathBuf>,
    /// CA certificates (PEM): clients are asked for a certificate, and one
    /// presented must chain to these. Unset = clients are not asked.
    pub ssl_ca_cert: Option<PathBuf>,
    /// Accept PostgreSQL 17 direct TLS (`sslnegotiation=direct`, ALPN
    /// `postgresql`) besides the SSLRequest upgrade.
    pub ssl_direct: bool,
    /// Seed key: `true` means TLS to the backends is required
    /// (`backend_sslmode: require` unless that is set).
    pub backend_encryption: bool,
    /// TLS to the backends, as libpq's `sslmode`; unset = `require` with
    /// `backend_encryption`, `disable` without. See [`Config::backend_ssl_mode`].
    pub backend_sslmode: Option<BackendSslMode>,
    /// CA certificates (PEM) the backends' certificates must chain to
    /// (`verify-ca`, `verify-full`).
    pub backend_sslrootcert: Option<PathBuf>,

    // ------------------------------------------------------------ routing
    /// Time between health checks of each backend; 0 = no checks (every
    /// backend is taken as up, in its configured role).
    #[serde(with = "crate::units::duration")]
    pub health_check_period: Duration,
    /// Connect, log in and answer the check query within this.
    #[serde(with = "crate::units::duration")]
    pub health_check_timeout: Duration,
    /// Failed checks in a row, beyond the first, before a backend is down.
    pub health_check_max_retries: u32,
    /// Time before the next check after a failed one.
    #[serde(with = "crate::units::duration")]
    pub health_check_retry_delay: Duration,
    /// Role the checker logs in as; unset = `server_user`, else `postgres`.
    pub health_check_user: Option<String>,
    /// Unset = `server_password` (when `health_check_user` is unset too).
    pub health_check_password: Option<SecretRef>,
    pub health_check_database: String,
    /// Two backends both primary: refuse writes (`strict`) or write to the
    /// first in config order (`first`).
    pub follow_primary: FollowPrimary,
    /// How long a client that needs the primary waits while no primary is
    /// up (a failover in progress); 0 = fail at once.
    #[serde(with = "crate::units::duration")]
    pub failover_wait_timeout: Duration,
    pub load_balance: LoadBalance,
    pub load_balance_mode: LoadBalanceMode,
    /// Whether the primary takes reads too (with its weight).
    pub primary_reads: bool,
    pub transaction_routing: TransactionRouting,
    /// Ban a replica more than this many bytes of WAL behind; 0 = no limit.
    pub max_lag_bytes: ByteSize,
    /// Ban a replica whose replay is this far behind in time; 0 = no limit.
    #[serde(with = "crate::units::duration")]
    pub max_lag: Duration,
    pub read_your_writes: ReadYourWrites,
    /// `read_your_writes: primary`: how long after a write a client reads
    /// from the primary.
    #[serde(with = "crate::units::duration")]
    pub read_your_writes_window: Duration,
    /// Functions whose call makes a statement a write.
    pub write_functions: Vec<String>,
    /// When set, calls of any function not listed here (nor known to be
    /// read-only) make a statement a write.
    pub read_only_functions: Vec<String>,
    /// `POST /api/v1/nodes/{id}/promote` may run `pg_promote()`.
    pub allow_pg_promote: bool,

    pub rest_api: RestApiConfig,
}

/// What to do when more than one backend reports being primary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowPrimary {
    /// Refuse writes until one primary is left (no split brain).
    #[default]
    Strict,
    /// Write to the first of them in config order.
    First,
}

/// How reads are spread over the nodes that may take them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalance {
    /// Random, in proportion to `weight` (pgpool-II's way).
    #[default]
    WeightedRandom,
    /// In turn, `weight` times each per round.
    RoundRobin,
    /// The node with the fewest queries in flight (per weight).
    LeastOutstanding,
    /// The node with the lowest moving average of response time, times
    /// its queries in flight (per weight).
    Latency,
}

/// When the read node is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadBalanceMode {
    /// For each read transaction.
    #[default]
    Transaction,
    /// Once per client session, kept while that node stays usable (pgpool-II).
    Session,
}

/// Where an explicit read-write transaction runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionRouting {
    /// On the primary.
    #[default]
    Primary,
    /// Where its first statement after `BEGIN` would go: a transaction of
    /// reads may run on a replica.
    FirstStatement,
}

/// Read-your-writes after a client's write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadYourWrites {
    #[default]
    Off,
    /// That client's reads go to the primary for `read_your_writes_window`.
    Primary,
    /// That client's reads go only to nodes that replayed its last commit.
    Lsn,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    Session,
    #[default]
    Transaction,
    /// Like transaction mode, but a server is released after every
    /// statement; multi-statement transactions are refused.
    Statement,
}

/// Whether clients must use TLS (`ssl_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientSslMode {
    /// No TLS: SSLRequest is answered `N`.
    Disable,
    /// TLS for clients that ask for it; plaintext for the others.
    Allow,
    /// TLS only: a plaintext StartupMessage is refused (FATAL 28000).
    Require,
}

/// TLS to the backends (`backend_sslmode`), as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendSslMode {
    /// Plaintext; no SSLRequest is sent.
    Disable,
    /// TLS when the server offers it, plaintext when it answers `N`;
    /// the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS, and the certificate must chain to `backend_sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the backend's host.
    VerifyFull,
}

impl BackendSslMode {
    /// Whether the server's certificate is checked against a CA.
    pub fn verifies(self) -> bool {
        matches!(self, BackendSslMode::VerifyCa | BackendSslMode::VerifyFull)
    }
}

/// A client authentication method (`auth_type`, and `method` of `hba`
/// rules), PostgreSQL's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum AuthType {
    /// No password.
    #[serde(rename = "trust")]
    Trust,
    /// Always refused.
    #[serde(rename = "reject")]
    Reject,
    /// md5 challenge; users whose secret is a SCRAM verifier get SCRAM
    /// instead (as PostgreSQL).
    #[serde(rename = "md5")]
    Md5,
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// A client certificate (verified against `ssl_ca_cert`) whose CN is
    /// the user name; TLS only.
    #[serde(rename = "cert")]
    Cert,
}

/// Which connections an `hba` rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HbaType {
    /// TLS or plaintext.
    Host,
    /// TLS only.
    HostSsl,
    /// Plaintext only.
    HostNoSsl,
    /// Unix sockets: not supported (pgbalancer listens on TCP only); an
    /// error, so a pasted pg_hba.conf line is not silently ignored.
    Local,
}

/// One `hba` rule, as a pg_hba.conf line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HbaEntry {
    #[serde(rename = "type")]
    pub kind: HbaType,
    /// `all`, `sameuser`, or comma-separated database names.
    pub database: String,
    /// `all` or comma-separated user names.
    pub user: String,
    /// `all`, an address (`10.0.0.5`, `::1`) or a CIDR block (`10.0.0.0/8`).
    #[serde(default)]
    pub address: Option<String>,
    pub method: AuthType,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A client login. `password` is a SCRAM verifier
/// (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`) or a plaintext password.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    #[serde(default, serialize_with = "serialize_redacted")]
    pub password: Option<String>,
}

impl fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("UserEntry")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| crate::secret::REDACTED))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    pub host: String,
    pub port: u16,
    pub role: BackendRole,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendRole {
    #[default]
    Primary,
    Replica,
    Auto,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestApiConfig {
    pub enabled: bool,
    pub port: u16,
    pub bind_address: String,
    pub jwt_enabled: bool,
    /// HMAC secret (inline, `{file: ...}` or `{env: ...}`); or `jwt_secret_file`.
    pub jwt_secret: Option<SecretRef>,
    /// A file holding the HMAC secret (trailing newline trimmed).
    pub jwt_secret_file: Option<PathBuf>,
    /// Fixed by config, never taken from a token.
    pub jwt_algorithm: JwtAlgorithm,
    /// RS256/EdDSA: the public key (PEM) tokens are verified with.
    pub jwt_public_key_file: Option<PathBuf>,
    /// RS256/EdDSA: the private key (PEM) `POST /api/v1/auth/login` signs
    /// tokens with; without it, login is disabled under those algorithms.
    pub jwt_private_key_file: Option<PathBuf>,
    /// When set, tokens must carry this `aud`.
    pub jwt_audience: Option<String>,
    /// When set, tokens must carry this `iss`.
    pub jwt_issuer: Option<String>,
    /// Longest lifetime a token may have (`exp - iat`, and `exp - now`).
    #[serde(with = "crate::units::duration")]
    pub jwt_max_ttl: Duration,
    /// HTTPS: the certificate chain (PEM) the admin API presents; with
    /// `ssl_key`. Both or neither; when set the API serves HTTPS only.
    pub ssl_cert: Option<PathBuf>,
    /// HTTPS: the private key (PEM) of `ssl_cert`.
    pub ssl_key: Option<PathBuf>,
}

/// Signing algorithm of the admin API's tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA-256 with `jwt_secret` / `jwt_secret_file`.
    #[default]
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, verified with `jwt_public_key_file`.
    RS256,
    /// Ed25519, verified with `jwt_public_key_file`.
    EdDSA,
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::EdDSA => "EdDSA",
        })
    }
}

impl RestApiConfig {
    /// The JWT signing secret: `jwt_secret` (resolved) or the contents of
    /// `jwt_secret_file` (trailing newline trimmed); `None` if neither is set.
    /// Read anew on every call, so a reload picks up a rotated secret.
    pub fn jwt_secret(&self) -> Result<Option<String>, crate::ConfigError> {
        match (&self.jwt_secret, &self.jwt_secret_file) {
            (Some(s), _) => s.resolve().map(Some),
            (None, Some(file)) => crate::secret::read_secret_file(file).map(Some),
            (None, None) => Ok(None),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen_addresses: "127.0.0.1".to_string(),
            port: 9999,
            pool_mode: PoolMode::Transaction,
            max_prepared_statements: 200,
            pool_size: 20,
            min_pool_size: 0,
            max_client_conn: 5000,
            auth_type: AuthType::ScramSha256,
            users: Vec::new(),
            users_file: None,
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.to_string(),
            auth_dbname: "postgres".to_string(),
            hba: Vec::new(),
            hba_file: None,
            max_unauthenticated_clients: 1000,
            auth_failure_limit: 20,
            auth_failure_window: Duration::from_secs(60),
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            backends: vec![BackendConfig::default()],
            server_user: None,
            server_password: None,
            server_password_file: None,
            query_wait_timeout: Duration::from_secs(120),
            server_idle_timeout: Duration::from_secs(600),
            server_lifetime: Duration::from_secs(3600),
            client_idle_timeout: Duration::ZERO,
            idle_transaction_timeout: Duration::ZERO,
            client_login_timeout: Duration::from_secs(60),
            server_connect_timeout: Duration::from_secs(15),
            server_login_retry: Duration::from_secs(15),
            server_reset_query: "DISCARD ALL".to_string(),
            shutdown_timeout: Duration::from_secs(30),
            max_message_size: ByteSize(64 * ByteSize::MIB),
            workers: 0,
            log_connections: false,
            log_disconnections: false,
            log_statement: false,
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            ssl: false,
            ssl_mode: None,
            ssl_cert: None,
            ssl_key: None,
            ssl_ca_cert: None,
            ssl_direct: false,
            backend_encryption: false,
            backend_sslmode: None,
            backend_sslrootcert: None,
            health_check_period: Duration::from_secs(5),
            health_check_timeout: Duration::from_secs(2),
            health_check_max_retries: 1,
            health_check_retry_delay: Duration::from_secs(1),
            health_check_user: None,
            health_check_password: None,
            health_check_database: "postgres".to_string(),
            follow_primary: FollowPrimary::Strict,
            failover_wait_timeout: Duration::from_secs(30),
            load_balance: LoadBalance::WeightedRandom,
            load_balance_mode: LoadBalanceMode::Transaction,
            primary_reads: true,
            transaction_routing: TransactionRouting::Primary,
            max_lag_bytes: ByteSize(0),
            max_lag: Duration::ZERO,
            read_your_writes: ReadYourWrites::Off,
            read_your_writes_window: Duration::from_secs(5),
            write_functions: Vec::new(),
            read_only_functions: Vec::new(),
            allow_pg_promote: false,
            rest_api: RestApiConfig::default(),
        }
    }
}

impl Default for BackendConfig {
    fn default() -> BackendConfig {
        BackendConfig { host: "127.0.0.1".to_string(), port: 5432, role: BackendRole::Primary, weight: 1 }
    }
}

impl Default for RestApiConfig {
    fn default() -> RestApiConfig {
        RestApiConfig {
            enabled: false,
            port: 8080,
            bind_address: "127.0.0.1".to_string(),
            jwt_enabled: true,
            jwt_secret: None,
            jwt_secret_file: None,
            jwt_algorithm: JwtAlgorithm::HS256,
            jwt_public_key_file: None,
            jwt_private_key_file: None,
            jwt_audience: None,
            jwt_issuer: None,
            jwt_max_ttl: Duration::from_secs(3600),
            ssl_cert: None,
            ssl_key: None,
        }
    }
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        })
    }
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            AuthType::Trust => "trust",
            AuthType::Reject => "reject",
            AuthType::Md5 => "md5",
            AuthType::ScramSha256 => "scram-sha-256",
            AuthType::Cert => "cert",
        })
    }
}

impl AuthType {
    /// Whether the method checks a password (md5, scram-sha-256).
    pub fn uses_password(self) -> bool {
        matches!(self, AuthType::Md5 | AuthType::ScramSha256)
    }
}

impl fmt::Display for HbaType {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            HbaType::Host => "host",
            HbaType::HostSsl => "hostssl",
            HbaType::HostNoSsl => "hostnossl",
            HbaType::Local => "local",
        })
    }
}

impl fmt::Display for BackendRole {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            BackendRole::Primary => "primary",
            BackendRole::Replica => "replica",
            BackendRole::Auto => "auto",
        })
    }
}

impl fmt::Display for ClientSslMode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            ClientSslMode::Disable => "disable",
            ClientSslMode::Allow => "allow",
            ClientSslMode::Require => "require",
        })
    }
}

impl fmt::Display for BackendSslMode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            BackendSslMode::Disable => "disable",
            BackendSslMode::Prefer => "prefer",
            BackendSslMode::Require => "require",
            BackendSslMode::VerifyCa => "verify-ca",
            BackendSslMode::VerifyFull => "verify-full",
        })
    }
}
