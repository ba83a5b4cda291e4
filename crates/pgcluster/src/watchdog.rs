//! The cleanup watchdog: a child `sh` that stops every node once our end of its stdin closes.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::ctx::{Ctx, PG_ENV_VARS};
use crate::Error;

/// The watchdog child process and the write end of its stdin.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Frozen nodes (see [`crate::Node::freeze`]) are thawed first: a stopped process does not act on
/// `pg_ctl stop`, and a stopped backend whose postmaster is killed would stay behind for good.
const WATCHDOG_SCRIPT: &str = r#"
trap '' INT HUP TERM QUIT PIPE
cat >/dev/null 2>&1
pgctl() {
  if [ -n "$PGCLUSTER_RUNUSER" ]; then
    "$PGCLUSTER_RUNUSER" -u postgres -- "$PGCLUSTER_PGCTL" "$@"
  else
    "$PGCLUSTER_PGCTL" "$@"
  fi
}
thaw() {
  kill -CONT "$1" 2>/dev/null
  for stat in /proc/[0-9]*/stat; do
    read -r line < "$stat" 2>/dev/null || continue
    rest=${line##*) }
    set -- $rest
    [ "$2" = "$pm" ] || continue
    child=${stat#/proc/}
    kill -CONT "${child%/stat}" 2>/dev/null
  done
}
for d in "$@"; do
  if [ -f "$d/postmaster.pid" ]; then
    pid=$(head -n 1 "$d/postmaster.pid" 2>/dev/null)
    if [ -n "$pid" ]; then
      pm=$pid
      (thaw "$pid")
    fi
    pgctl stop -D "$d" -m immediate -w -t 15 >/dev/null 2>&1 || {
      [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    }
  fi
done
rm -rf "$PGCLUSTER_DIR"
"#;

impl Watchdog {
    pub(crate) fn spawn(ctx: &Ctx, data_dirs: &[PathBuf]) -> Result<Watchdog, Error> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("pgcluster-watchdog")
            .args(data_dirs)
            .env("PGCLUSTER_DIR", &ctx.dir)
            .env("PGCLUSTER_PGCTL", ctx.bin("pg_ctl"))
            .env("PGCLUSTER_RUNUSER", ctx.runuser.as_deref().unwrap_or(Path::new("")))
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a terminal's Ctrl-C must not kill the watchdog before it cleans up.
            .process_group(0);
        for v in PG_ENV_VARS {
            cmd.env_remove(v);
        }
        let mut child = cmd.spawn().map_err(|e| Error::io("spawning the cleanup watchdog (sh)", e))?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    /// Close the pipe and wait for the watchdog to finish cleaning up.
    pub(crate) fn finish(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
