//! `pgbalancer --demo`: a throwaway local PostgreSQL primary and streaming
//! replica, with pgbalancer in front of them. Everything is removed when
//! pgbalancer exits.

use std::net::SocketAddr;

use pgbalancer_config::{AuthType, BackendConfig, BackendRole, Config, UserEntry};
use pgcluster::{Cluster, ClusterOptions};

pub const DEMO_USER: &str = "app";
pub const DEMO_PASSWORD: &str = "app";

pub struct Demo {
    cluster: Cluster,
}

impl Demo {
    /// Starts the cluster, creates role and database `app` (password
    /// `app`), and returns a config serving them on `port`.
    pub fn start(port: u16) -> Result<(Demo, Config), pgcluster::Error> {
        eprintln!("pgbalancer --demo: starting a local PostgreSQL primary and streaming replica ...");
        let cluster = Cluster::start(ClusterOptions { replicas: 1, ..ClusterOptions::default() })?;
        cluster.create_role(DEMO_USER, DEMO_PASSWORD)?;
        cluster.create_database(DEMO_USER, DEMO_USER)?;
        // pgbalancer holds the same SCRAM verifier as PostgreSQL, so it can
        // pass the client's proof through without knowing the password.
        let verifier = cluster.psql(
            &cluster.primary,
            "postgres",
            &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{DEMO_USER}'"),
        )?;
        let mut backends = vec![BackendConfig {
            host: cluster.primary.host.clone(),
            port: cluster.primary.port,
            role: BackendRole::Primary,
            weight: 1,
        }];
        backends.extend(cluster.replicas.iter().map(|r| BackendConfig {
            host: r.host.clone(),
            port: r.port,
            role: BackendRole::Replica,
            weight: 1,
        }));
        let config = Config {
            port,
            auth_type: AuthType::ScramSha256,
            users: vec![UserEntry { name: DEMO_USER.into(), password: Some(verifier) }],
            backends,
            log_connections: true,
            log_disconnections: true,
            ..Config::default()
        };
        config.validate("--demo").map_err(|e| pgcluster::Error::Other(e.to_string()))?;
        Ok((Demo { cluster }, config))
    }

    pub fn print_banner(&self, addrs: &[SocketAddr]) {
        let port = addrs.first().map(|a| a.port()).unwrap_or(9999);
        let p = &self.cluster.primary;
        eprintln!();
        eprintln!("pgbalancer --demo is ready.");
        eprintln!("  primary:  127.0.0.1:{} ({})", p.port, p.data_dir.display());
        for r in &self.cluster.replicas {
            eprintln!("  replica:  127.0.0.1:{} ({})", r.port, r.data_dir.display());
        }
        eprintln!("  connect:  PGPASSWORD={DEMO_PASSWORD} psql -h 127.0.0.1 -p {port} -U {DEMO_USER} {DEMO_USER}");
        eprintln!("  Ctrl-C stops pgbalancer and removes the cluster.");
        eprintln!();
    }
}
