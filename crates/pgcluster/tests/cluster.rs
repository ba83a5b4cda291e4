//! Behaviour of the shared cluster (primary + 1 replica). One cluster for this whole binary.

use std::process::Command;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use pgcluster::{shared, Cluster};

/// Tests that need every node up take a read lock; tests that stop nodes take the write lock.
static NODES: RwLock<()> = RwLock::new(());

fn cluster() -> &'static Cluster {
    shared()
}

#[test]
fn layout_and_helpers() {
    let _g = NODES.read().unwrap();
    let c = cluster();
    assert_eq!(c.replicas.len(), 1);
    assert_eq!(c.superuser(), "postgres");
    assert_eq!(c.primary.host, "127.0.0.1");
    assert_ne!(c.primary.port, c.replicas[0].port);
    assert!(c.bin("psql").is_file());
    assert!(c.bin("pgbench").is_file());
    assert_eq!(
        c.primary.conninfo("app", "appdb"),
        format!("host=127.0.0.1 port={} user=app dbname=appdb", c.primary.port)
    );
    assert!(c.primary.postmaster_pid().is_some());
    assert!(c.primary.data_dir.starts_with(c.dir()));
    assert_eq!(c.nodes().count(), 2);
    // Only loopback TCP, sockets in the temp dir.
    assert_eq!(c.psql(&c.primary, "postgres", "SHOW listen_addresses").unwrap(), "127.0.0.1");
    assert_eq!(
        c.psql(&c.primary, "postgres", "SHOW unix_socket_directories").unwrap(),
        c.socket_dir().display().to_string()
    );
    assert_eq!(c.psql(&c.primary, "postgres", "SHOW password_encryption").unwrap(), "scram-sha-256");
    // pg_stat_statements is preloaded and usable.
    c.psql(&c.primary, "postgres", "SELECT count(*) FROM pg_stat_statements").unwrap();
}

#[test]
fn replica_is_in_recovery() {
    let _g = NODES.read().unwrap();
    let c = cluster();
    assert_eq!(c.psql(&c.replicas[0], "postgres", "SELECT pg_is_in_recovery()").unwrap(), "t");
    assert_eq!(c.psql(&c.primary, "postgres", "SELECT pg_is_in_recovery()").unwrap(), "f");
    let streaming =
        c.psql(&c.primary, "postgres", "SELECT application_name || ':' || state FROM pg_stat_replication").unwrap();
    assert_eq!(streaming, "replica1:streaming");
}

#[test]
fn write_on_primary_visible_on_replica() {
    let _g = NODES.read().unwrap();
    let c = cluster();
    c.create_database("pgcluster_repl", "postgres").unwrap();
    c.psql(
        &c.primary,
        "pgcluster_repl",
        "CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'hello')",
    )
    .unwrap();
    c.wait_replicas_caught_up().unwrap();
    assert_eq!(c.psql(&c.replicas[0], "pgcluster_repl", "SELECT v FROM t WHERE id = 1").unwrap(), "hello");
    // Writes on the replica are refused.
    let err = c.psql(&c.replicas[0], "pgcluster_repl", "INSERT INTO t VALUES (2, 'x')").unwrap_err().to_string();
    assert!(err.contains("read-only transaction"), "{err}");
}

#[test]
fn psql_error_carries_stderr() {
    let _g = NODES.read().unwrap();
    let c = cluster();
    let err = c.psql(&c.primary, "postgres", "SELECT * FROM no_such_table").unwrap_err().to_string();
    assert!(err.contains("no_such_table"), "{err}");
}

#[test]
fn create_role_and_database_are_idempotent() {
    let _g = NODES.read().unwrap();
    let c = cluster();
    c.create_role("pgc_app", "first").unwrap();
    c.create_role("pgc_app", "s3cr'et").unwrap();
    c.create_database("pgc_appdb", "pgc_app").unwrap();
    c.create_database("pgc_appdb", "pgc_app").unwrap();
    assert_eq!(
        c.psql(
            &c.primary,
            "postgres",
            "SELECT rolcanlogin, rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'pgc_app'"
        )
        .unwrap(),
        "t|t"
    );
    assert_eq!(
        c.psql(&c.primary, "postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'pgc_appdb'")
            .unwrap(),
        "pgc_app"
    );
    // The (second) password works over TCP with SCRAM; a wrong one does not.
    let login = |pw: &str| {
        Command::new(c.bin("psql"))
            .args(["-X", "-At", "-c", "SELECT current_user"])
            .arg(c.primary.conninfo("pgc_app", "pgc_appdb"))
            .env("PGPASSWORD", pw)
            .env_remove("PGPASSFILE")
            .output()
            .unwrap()
    };
    let ok = login("s3cr'et");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "pgc_app");
    let bad = login("first");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"));
}

#[test]
fn concurrent_create_role_and_database() {
    let _g = NODES.read().unwrap();
    let c = cluster();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                c.create_role("pgc_conc", "pw").unwrap();
                c.create_database("pgc_concdb", "pgc_conc").unwrap();
            });
        }
    });
    assert_eq!(
        c.psql(&c.primary, "postgres", "SELECT count(*) FROM pg_database WHERE datname = 'pgc_concdb'").unwrap(),
        "1"
    );
}

#[test]
fn replica_stop_start_restart() {
    let _g = NODES.write().unwrap();
    let c = cluster();
    let r = &c.replicas[0];
    let pid = r.postmaster_pid().expect("replica running");
    r.stop().unwrap();
    assert!(r.postmaster_pid().is_none());
    assert!(!r.is_running());
    assert!(c.psql(r, "postgres", "SELECT 1").is_err());
    r.stop().unwrap(); // idempotent

    // Writes made while the replica is down arrive after it comes back (replication slot).
    c.create_database("pgcluster_stopstart", "postgres").unwrap();
    c.psql(&c.primary, "pgcluster_stopstart", "CREATE TABLE t AS SELECT 42 AS v").unwrap();

    r.start().unwrap();
    r.start().unwrap(); // idempotent
    assert_ne!(r.postmaster_pid(), Some(pid));
    c.wait_replicas_caught_up().unwrap();
    assert_eq!(c.psql(r, "pgcluster_stopstart", "SELECT v FROM t").unwrap(), "42");

    let pid = r.postmaster_pid().unwrap();
    r.restart().unwrap();
    assert_ne!(r.postmaster_pid(), Some(pid));
    assert_eq!(c.psql(r, "postgres", "SELECT pg_is_in_recovery()").unwrap(), "t");

    // Back to streaming before releasing the lock.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = c
            .psql(&c.primary, "postgres", "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
            .unwrap();
        if n == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "replica not streaming again");
        std::thread::sleep(Duration::from_millis(20));
    }
}
