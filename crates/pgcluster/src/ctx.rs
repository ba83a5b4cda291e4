//! How to run PostgreSQL binaries for one cluster.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::SUPERUSER;

/// Environment variables that could redirect our client/server binaries elsewhere.
pub(crate) const PG_ENV_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGDATA",
    "PGTARGETSESSIONATTRS",
    "PGAPPNAME",
    "PGCLIENTENCODING",
    "PGTZ",
];

/// Shared, immutable facts about how to run PostgreSQL binaries for one cluster.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) bin_dir: PathBuf,
    /// `Some(runuser)` when we are root and must run server binaries as `postgres`.
    pub(crate) runuser: Option<PathBuf>,
    /// The cluster's temp dir (also the unix socket directory and cwd for commands).
    pub(crate) dir: PathBuf,
}

impl Ctx {
    pub(crate) fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A command running PostgreSQL binary `name`, as `postgres` when we are root.
    pub(crate) fn server_cmd(&self, name: &str) -> Command {
        let mut cmd = match &self.runuser {
            Some(runuser) => {
                let mut c = Command::new(runuser);
                c.args(["-u", SUPERUSER, "--"]).arg(self.bin(name));
                c
            }
            None => Command::new(self.bin(name)),
        };
        self.prepare(&mut cmd);
        cmd
    }

    /// A client command (psql, pgbench, ...) run as the current user.
    pub(crate) fn client_cmd(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin(name));
        self.prepare(&mut cmd);
        cmd
    }

    fn prepare(&self, cmd: &mut Command) {
        for v in PG_ENV_VARS {
            cmd.env_remove(v);
        }
        cmd.env("PGCONNECT_TIMEOUT", "10");
        // The `postgres` user may not be able to enter our cwd (e.g. /root).
        cmd.current_dir(&self.dir);
        cmd.stdin(Stdio::null());
    }
}
