//! Processes we start must not outlive us: eager cleanup on drop, and the watchdog when the
//! owning process is SIGKILLed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pgcluster::{Cluster, ClusterOptions};

const CHILD_ENV: &str = "PGCLUSTER_CLEANUP_TEST_CHILD";

/// Alive = /proc/<pid> exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // "pid (comm) S ..." — comm may contain spaces/parens; state follows the last ')'.
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start()).unwrap_or("");
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

fn wait_gone(pids: &[u32], dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() && !dir.exists() {
            return;
        }
        assert!(Instant::now() < deadline, "still alive: {left:?}; dir exists: {}", dir.exists());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn drop_stops_everything() {
    let c = Cluster::start(ClusterOptions {
        replicas: 0,
        extra_conf: vec!["work_mem = '8MB'".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.psql(&c.primary, "postgres", "SHOW work_mem").unwrap(), "8MB");
    let pid = c.primary.postmaster_pid().unwrap();
    assert!(alive(pid));
    let dir = c.dir().to_path_buf();
    drop(c);
    // Eager: gone right after drop returns.
    assert!(!alive(pid), "postmaster {pid} survived drop");
    assert!(!dir.exists(), "{} survived drop", dir.display());
}

/// Runs only inside the re-executed child: start a cluster, report, then hang until killed.
#[test]
fn cleanup_child_entry() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let c = Cluster::start(ClusterOptions::default()).unwrap();
    let pids: Vec<String> = c.nodes().map(|n| n.postmaster_pid().unwrap().to_string()).collect();
    // Write to the real stdout: libtest's capture would swallow println!.
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nREADY {} {}", c.dir().display(), pids.join(" ")).unwrap();
    out.flush().unwrap();
    drop(out);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn sigkilled_owner_is_cleaned_up_by_watchdog() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cleanup_child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                // libtest may print "test name ... " on the same line first.
                Ok(l) if l.contains("READY ") => {
                    let _ = tx.send(l[l.find("READY ").unwrap()..].to_string());
                    return;
                }
                Ok(_) => continue,
                Err(_) => return,
            }
        }
    });
    let ready = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not report READY: {e}");
        }
    };
    let mut parts = ready.split_whitespace().skip(1);
    let dir = PathBuf::from(parts.next().unwrap());
    let pids: Vec<u32> = parts.map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "primary + 1 replica");
    assert!(pids.iter().all(|p| alive(*p)));
    assert!(dir.exists());

    // SIGKILL: no destructor, no atexit — only the watchdog can clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    wait_gone(&pids, &dir);
}
