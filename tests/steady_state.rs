//! The steady path allocates nothing. Once a client's session is warm,
//! transactions through pgbalancer make no heap allocation on pgbalancer's
//! threads: simple queries, extended-protocol batches of a named statement
//! (with statement names mapped, as in transaction mode by default), and
//! checkouts that queue behind a full pool; with one backend, and with a
//! replica as a second one (every transaction classified and routed).
//!
//! This binary counts allocations with its own global allocator, but only on
//! the threads of the runtime pgbalancer runs on; the test's clients run on
//! another runtime and are not counted. Real PostgreSQL behind it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use common::raw::{self, Next, Raw};
use common::{trust_config, TestProxy};
use pgbalancer_config::{BackendConfig, BackendRole};

struct Counting;

thread_local! {
    static PROXY_THREAD: Cell<bool> = const { Cell::new(false) };
}

static PROXY_ALLOCS: AtomicU64 = AtomicU64::new(0);

fn count() {
    if PROXY_THREAD.try_with(Cell::get).unwrap_or(false) {
        PROXY_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// pgbalancer on a runtime of its own whose threads are counted.
fn proxy_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| PROXY_THREAD.with(|c| c.set(true)))
        .enable_all()
        .build()
        .expect("proxy runtime")
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime")
}

const TRANSACTIONS: u64 = 2000;
/// Allocations allowed over all the counted transactions: pool upkeep
/// ticks and the like, not one per transaction (a regression would show
/// at least `TRANSACTIONS`).
const SLACK: u64 = TRANSACTIONS / 100;

async fn expect_ready(c: &mut Raw) {
    loop {
        match c.next().await {
            Next::Message(b'Z', _) => return,
            Next::Message(b'E', body) => panic!("error: {:?}", raw::field(&body, b'M')),
            Next::Message(..) => {}
            Next::Closed => panic!("closed"),
        }
    }
}

/// Runs `each` on every client `rounds` times (clients take turns, each
/// sends before any reads, so with more clients than servers the
/// checkouts queue) and returns the allocations pgbalancer made meanwhile.
async fn count_allocations(clients: &mut [Raw], bytes: &[u8], rounds: u64) -> u64 {
    let before = PROXY_ALLOCS.load(Ordering::Relaxed);
    for _ in 0..rounds {
        for c in clients.iter_mut() {
            c.send(bytes).await;
        }
        for c in clients.iter_mut() {
            expect_ready(c).await;
        }
    }
    PROXY_ALLOCS.load(Ordering::Relaxed) - before
}

#[test]
fn warm_sessions_allocate_nothing_per_transaction() {
    let db = common::fresh_db("steady");
    let mut config = trust_config();
    // Four clients on two server connections: half the checkouts queue.
    config.pool_size = 2;
    assert_warm_sessions_allocate_nothing(config, &db, || {});
}

/// The same with the replica as a second backend: every transaction is
/// classified and a node picked (reads spread over primary and replica).
#[test]
fn warm_routed_sessions_allocate_nothing_per_transaction() {
    let db = common::fresh_db("steady_routed");
    let c = common::cluster();
    c.wait_replicas_caught_up().expect("the new database on the replica");
    let replica = &c.replicas[0];
    let mut config = trust_config();
    config.pool_size = 2;
    config.backends.push(BackendConfig {
        host: replica.host.clone(),
        port: replica.port(),
        role: BackendRole::Replica,
        weight: 1,
    });
    // No health checker: its checks would allocate on the counted threads
    // at times of their own. Both nodes count as up in their roles.
    config.health_check_period = std::time::Duration::ZERO;
    assert_warm_sessions_allocate_nothing(config, &db, || {
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'");
        let on_replica = c.psql(replica, "postgres", &sql).expect("count the replica's server connections");
        assert_ne!(on_replica, "0", "no read reached the replica");
    });
}

/// Four warm clients run simple and extended transactions through a proxy
/// with `config`; pgbalancer's threads must not allocate for them.
/// `while_up` runs after them, before the proxy stops.
fn assert_warm_sessions_allocate_nothing(config: pgbalancer_config::Config, db: &str, while_up: impl FnOnce()) {
    // One proxy runtime at a time: the counter is shared by all of them.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let proxy_rt = proxy_runtime();
    let proxy = proxy_rt.block_on(TestProxy::start(config));
    let addr = proxy.addr;

    client_runtime().block_on(async {
        let mut clients = Vec::new();
        for _ in 0..4 {
            let mut c = Raw::connect(addr).await;
            c.login(&[("user", common::APP_USER), ("database", db), ("application_name", "steady")]).await;
            clients.push(c);
        }
        // Plain statements (the quick looks answer for them) and ones the
        // lexer has to read (a function call, a cast in parentheses).
        let workloads = [
            ("simple-query", raw::query("SELECT 1")),
            ("lexed simple-query", raw::query("SELECT count(*) FROM pg_class WHERE relpages >= 0")),
            ("Bind/Execute/Sync", [raw::bind_execute_with("s1", &[b"41"]), raw::sync()].concat()),
            ("lexed Bind/Execute/Sync", [raw::bind_execute_with("s2", &[b"41"]), raw::sync()].concat()),
        ];
        let prepare = [
            raw::parse("s1", "SELECT $1::int4 + 1"),
            raw::parse("s2", "SELECT abs($1::int4) + (SELECT count(*) FROM pg_class WHERE relpages < 0)"),
            raw::sync(),
        ]
        .concat();
        for c in clients.iter_mut() {
            c.send(&prepare).await;
            expect_ready(c).await;
        }
        // Warm up: every client on every server connection, statements
        // prepared on all, buffers grown.
        for (_, bytes) in &workloads {
            count_allocations(&mut clients, bytes, 50).await;
        }
        let rounds = TRANSACTIONS / clients.len() as u64;
        for (what, bytes) in &workloads {
            let allocs = count_allocations(&mut clients, bytes, rounds).await;
            assert!(allocs <= SLACK, "{allocs} allocations over {TRANSACTIONS} {what} transactions");
        }
        // The counter does count pgbalancer's threads: a new client's
        // login allocates.
        let before = PROXY_ALLOCS.load(Ordering::Relaxed);
        let mut late = Raw::connect(addr).await;
        late.login(&[("user", common::APP_USER), ("database", db)]).await;
        assert!(PROXY_ALLOCS.load(Ordering::Relaxed) > before, "the allocation counter saw nothing");
    });
    while_up();
    drop(proxy);
    proxy_rt.shutdown_timeout(std::time::Duration::from_secs(5));
}
