//! The fault helpers failover tests rely on: freezing a node's whole process tree, pausing
//! replay, promotion, and teardown of a cluster left frozen. Each test owns its cluster.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pgcluster::{Cluster, ClusterOptions};

/// Process state letter from /proc (None if gone).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A startup packet for user postgres: the server answers with R (auth) at once when alive.
fn startup_answers_within(port: u16, limit: Duration) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("TCP connect (the kernel accepts even when frozen)");
    s.set_read_timeout(Some(limit)).unwrap();
    let params = b"user\0postgres\0database\0postgres\0\0";
    let len = (8 + params.len()) as u32;
    let mut msg = len.to_be_bytes().to_vec();
    msg.extend(196608u32.to_be_bytes());
    msg.extend(params);
    s.write_all(&msg).unwrap();
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(1))
}

#[test]
fn freeze_stops_every_process_and_thaw_resumes() {
    let c = Cluster::start(ClusterOptions { replicas: 1, ..Default::default() }).unwrap();
    let r = &c.replicas[0];
    let pids = r.process_pids();
    // postmaster + startup, walreceiver, checkpointer, ... at least.
    assert!(pids.len() >= 4, "{pids:?}");
    assert_eq!(pids[0], r.postmaster_pid().unwrap());
    assert!(!r.is_frozen());
    assert!(startup_answers_within(r.port(), Duration::from_secs(5)));

    r.freeze().unwrap();
    assert!(r.is_frozen());
    for p in r.process_pids() {
        assert_eq!(state(p), Some('T'), "pid {p} of the frozen node is not stopped");
    }
    // Listening socket still accepts, but nobody answers.
    assert!(!startup_answers_within(r.port(), Duration::from_millis(500)));
    r.freeze().unwrap(); // idempotent
                         // The primary is not affected.
    assert_eq!(c.psql(&c.primary, "postgres", "SELECT 1").unwrap(), "1");

    r.thaw().unwrap();
    assert!(!r.is_frozen());
    for p in r.process_pids() {
        assert_ne!(state(p), Some('T'), "pid {p} still stopped after thaw");
    }
    assert_eq!(c.psql(r, "postgres", "SELECT pg_is_in_recovery()").unwrap(), "t");
    r.thaw().unwrap(); // idempotent
    c.wait_streaming(r).unwrap();
}

#[test]
fn frozen_node_is_thawed_and_stopped_on_drop() {
    let c = Cluster::start(ClusterOptions { replicas: 1, ..Default::default() }).unwrap();
    let pids: Vec<u32> = c.nodes().flat_map(|n| n.process_pids()).collect();
    let dir = c.dir().to_path_buf();
    c.replicas[0].freeze().unwrap();
    c.primary.freeze().unwrap();
    let start = Instant::now();
    drop(c);
    // Fast shutdown after the thaw, not pg_ctl's 30 s timeout on a stopped postmaster.
    assert!(start.elapsed() < Duration::from_secs(25), "drop took {:?}", start.elapsed());
    let left: Vec<u32> = pids.iter().copied().filter(|p| matches!(state(*p), Some(s) if s != 'Z')).collect();
    assert!(left.is_empty(), "processes survived drop: {left:?}");
    assert!(!dir.exists());
}

#[test]
fn pause_replay_holds_back_replay_until_resumed() {
    let c = Cluster::start(ClusterOptions { replicas: 2, ..Default::default() }).unwrap();
    let (r1, r2) = (&c.replicas[0], &c.replicas[1]);
    c.psql(&c.primary, "postgres", "CREATE TABLE t (a int)").unwrap();
    c.wait_replicas_caught_up().unwrap();
    assert_eq!(r1.replay_pause_state().unwrap(), "not paused");

    r1.pause_replay().unwrap();
    assert_eq!(r1.replay_pause_state().unwrap(), "paused");
    c.psql(&c.primary, "postgres", "INSERT INTO t SELECT generate_series(1, 1000)").unwrap();
    let lsn = c.primary_lsn().unwrap();
    // The other replica catches up; the paused one does not.
    c.wait_caught_up(r2).unwrap();
    assert_eq!(c.psql(r2, "postgres", "SELECT count(*) FROM t").unwrap(), "1000");
    assert!(r1.wait_replayed(&lsn, Duration::from_millis(300)).is_err());
    assert_eq!(c.psql(r1, "postgres", "SELECT count(*) FROM t").unwrap(), "0");
    let behind = r1.lsn_behind(&lsn).unwrap();
    assert!(behind > 0, "{behind}");
    assert!(r2.lsn_behind(&lsn).unwrap() <= 0);

    r1.resume_replay().unwrap();
    c.wait_caught_up(r1).unwrap();
    assert_eq!(c.psql(r1, "postgres", "SELECT count(*) FROM t").unwrap(), "1000");
    assert!(r1.lsn_behind(&lsn).unwrap() <= 0);
}

#[test]
fn promote_after_primary_stop() {
    let c = Cluster::start(ClusterOptions { replicas: 1, ..Default::default() }).unwrap();
    let r = &c.replicas[0];
    assert!(r.is_in_recovery().unwrap());
    assert!(!c.primary.is_in_recovery().unwrap());
    c.psql(&c.primary, "postgres", "CREATE TABLE t AS SELECT 1 AS a").unwrap();
    c.wait_caught_up(r).unwrap();
    c.primary.stop().unwrap();
    r.promote().unwrap();
    assert!(!r.is_in_recovery().unwrap());
    c.psql(r, "postgres", "INSERT INTO t VALUES (2)").unwrap();
    assert_eq!(c.psql(r, "postgres", "SELECT count(*) FROM t").unwrap(), "2");
    // On a primary, wal_lsn is the insert position and nothing is "behind" it.
    let lsn = r.wal_lsn().unwrap();
    assert!(r.lsn_behind(&lsn).unwrap() <= 0);
    r.wait_replayed(&lsn, Duration::from_secs(1)).unwrap();
}

const CHILD_ENV: &str = "PGCLUSTER_FROZEN_CHILD";

/// Runs only inside the re-executed child: start a cluster, freeze both nodes, report every pid,
/// then hang until killed.
#[test]
fn frozen_child_entry() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let c = Cluster::start(ClusterOptions::default()).unwrap();
    c.replicas[0].freeze().unwrap();
    c.primary.freeze().unwrap();
    let pids: Vec<String> = c.nodes().flat_map(|n| n.process_pids()).map(|p| p.to_string()).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nREADY {} {}", c.dir().display(), pids.join(" ")).unwrap();
    out.flush().unwrap();
    drop(out);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// SIGKILL of the owner while nodes are frozen: the watchdog thaws and stops them all (a stopped
/// backend whose postmaster died would otherwise stay behind for good).
#[test]
fn watchdog_thaws_frozen_nodes_of_a_killed_owner() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "frozen_child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            match line {
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
    let dir = std::path::PathBuf::from(parts.next().unwrap());
    let pids: Vec<u32> = parts.map(|p| p.parse().unwrap()).collect();
    assert!(pids.len() >= 8, "{pids:?}");
    assert!(pids.iter().all(|p| state(*p) == Some('T')), "not all frozen: {pids:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| matches!(state(*p), Some(s) if s != 'Z')).collect();
        if left.is_empty() && !dir.exists() {
            break;
        }
        assert!(Instant::now() < deadline, "still alive: {left:?}; dir exists: {}", dir.exists());
        std::thread::sleep(Duration::from_millis(20));
    }
}
