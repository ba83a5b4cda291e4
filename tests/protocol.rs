//! Protocol bad input end to end (scenarios 1-18 of test-scenarios.md):
//! raw bytes against an in-process pgbalancer in front of real PostgreSQL.
//! Beside the scenarios proper, a few protocol-accounting cases found on
//! the way: Sync ignored during COPY FROM STDIN, late copy messages after a
//! failed COPY, and a Query pipelined with Terminate.
//!
//! After every bad input the proxy must still serve a fresh client
//! ("proxy alive") and, where the scenario says so, a client that stayed
//! connected across the bad input (a "bystander", holding an open
//! transaction and so a server connection) must be undisturbed.
//!
//! Raw-socket tests use a proxy with trust auth so `Raw::login` works;
//! pgbalancer logs in to PostgreSQL as `app` with the password from the
//! config, or as `postgres` (trusted by the cluster on loopback) with none.
//! Nothing sleeps to wait for state: waits are reads with the `Raw`
//! deadline, or polls of pg_stat_activity with a deadline.

mod common;

use std::time::{Duration, Instant};

use common::raw::*;
use common::*;
use pgbalancer_config::ByteSize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const PROTOCOL_3_0: i32 = 196_608;

/// A backend message: (type byte, body).
type Msg = (u8, Vec<u8>);
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn trust_proxy() -> TestProxy {
    TestProxy::start(trust_config()).await
}

/// `server_connections` runs psql; keep it off the runtime's workers.
async fn server_conns(db: &str) -> i64 {
    let db = db.to_owned();
    tokio::task::spawn_blocking(move || server_connections(&db)).await.unwrap()
}

/// Login returning the messages seen up to ReadyForQuery.
async fn login_msgs(r: &mut Raw, params: &[(&str, &str)]) -> Vec<(u8, Vec<u8>)> {
    r.send(&startup(params)).await;
    let msgs = r.until_ready().await;
    let out: Vec<(u8, Vec<u8>)> = msgs
        .into_iter()
        .map(|m| match m {
            Next::Message(t, b) => (t, b),
            Next::Closed => panic!("closed during login"),
        })
        .collect();
    assert_eq!(out.last().map(|m| m.0), Some(b'Z'), "login ends with ReadyForQuery: {out:?}");
    out
}

/// A client that stays connected across the bad input, inside an open
/// transaction (so it holds a server connection the whole time).
struct Bystander {
    client: Client,
}

impl Bystander {
    async fn start(proxy: &TestProxy, db: &str) -> Bystander {
        let client = proxy.connect(db).await;
        client.batch_execute("BEGIN").await.expect("bystander BEGIN");
        let b = Bystander { client };
        b.check().await;
        b
    }

    async fn check(&self) {
        let rows = tokio::time::timeout(DEADLINE, self.client.simple_query("SELECT 42"))
            .await
            .expect("bystander answered in time")
            .expect("bystander query");
        let v = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        assert_eq!(v.as_deref(), Some("42"), "bystander undisturbed");
    }

    async fn finish(self) {
        self.check().await;
        self.client.batch_execute("COMMIT").await.expect("bystander COMMIT");
    }
}

/// Everything the peer sends until it closes (EOF or reset), raw.
async fn read_to_eof(r: &mut Raw) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(DEADLINE, r.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("peer neither answered nor closed within {DEADLINE:?}; got {out:?}"),
        }
    }
}

/// The peer closes without sending a single byte.
async fn assert_silent_close(r: &mut Raw, what: &str) {
    let got = read_to_eof(r).await;
    assert!(got.is_empty(), "{what}: expected a close with no reply, got {got:?}");
}

/// Splits raw backend bytes into whole messages.
fn split_messages(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 5, "truncated message header: {b:?}");
        let len = i32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        assert!(len >= 4 && b.len() > len as usize, "bad or truncated message: {b:?}");
        out.push((b[0], b[5..=len as usize].to_vec()));
        b = &b[len as usize + 1..];
    }
    out
}

/// The connection got exactly one ErrorResponse, FATAL with `code`, and was
/// then closed. Returns the message text.
fn assert_fatal(msgs: &[(u8, Vec<u8>)], code: &str, what: &str) -> String {
    let errors: Vec<&Vec<u8>> = msgs.iter().filter(|(t, _)| *t == b'E').map(|(_, b)| b).collect();
    assert_eq!(errors.len(), 1, "{what}: expected one ErrorResponse, got {msgs:?}");
    assert_eq!(msgs.last().map(|m| m.0), Some(b'E'), "{what}: the error is the last message: {msgs:?}");
    let body = errors[0];
    assert_eq!(field(body, b'S').as_deref(), Some("FATAL"), "{what}: severity of {msgs:?}");
    assert_eq!(sqlstate(body).as_deref(), Some(code), "{what}: sqlstate of {:?}", field(body, b'M'));
    field(body, b'M').unwrap_or_default()
}

/// Reads to close and checks for one FATAL `code` as the last thing said.
async fn expect_fatal_close(r: &mut Raw, code: &str, what: &str) -> String {
    let msgs = r.until_closed().await;
    assert_fatal(&msgs, code, what)
}

/// Reads to close; whatever was said must be FATAL errors only.
async fn expect_close_maybe_fatal(r: &mut Raw, what: &str) {
    let bytes = read_to_eof(r).await;
    for (t, body) in split_messages(&bytes) {
        assert_eq!(t, b'E', "{what}: only an ErrorResponse may precede the close, got {t} {body:?}");
        assert_eq!(field(&body, b'S').as_deref(), Some("FATAL"), "{what}");
    }
}

/// Reads messages until `count` messages of type `until` (or panics on close).
async fn read_until(r: &mut Raw, until: u8, count: usize) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < count {
        match r.next().await {
            Next::Message(t, b) => {
                if t == until {
                    seen += 1;
                }
                out.push((t, b));
            }
            Next::Closed => panic!("closed while waiting for {:?}: got {out:?}", until as char),
        }
    }
    out
}

fn types(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter().map(|(t, _)| *t as char).collect()
}

/// A startup-phase packet with an arbitrary body.
fn startup_packet(code: i32, body: &[u8]) -> Vec<u8> {
    let mut p = ((body.len() + 8) as i32).to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(body);
    p
}

fn cancel_packet(pid: i32, key: i32) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(&key.to_be_bytes());
    startup_packet(CANCEL_REQUEST, &body)
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

// Extended-protocol messages.

/// Bind with text parameters (None = NULL) and text results.
fn bind(portal: &str, stmt: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(stmt));
    b.extend(0i16.to_be_bytes()); // parameter formats: all text
    b.extend((params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                b.extend((v.len() as i32).to_be_bytes());
                b.extend(v.as_bytes());
            }
            None => b.extend((-1i32).to_be_bytes()),
        }
    }
    b.extend(0i16.to_be_bytes()); // result formats: all text
    msg(b'B', &b)
}

fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend(cstr(name));
    msg(b'D', &b)
}

fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(max_rows.to_be_bytes());
    msg(b'E', &b)
}

fn close(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend(cstr(name));
    msg(b'C', &b)
}

fn copy_data(d: &[u8]) -> Vec<u8> {
    msg(b'd', d)
}

/// FunctionCall with text arguments and a text result.
fn function_call(oid: i32, args: &[&str]) -> Vec<u8> {
    let mut b = oid.to_be_bytes().to_vec();
    b.extend(0i16.to_be_bytes());
    b.extend((args.len() as i16).to_be_bytes());
    for a in args {
        b.extend((a.len() as i32).to_be_bytes());
        b.extend(a.as_bytes());
    }
    b.extend(0i16.to_be_bytes());
    msg(b'F', &b)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// A regular message header with an arbitrary declared length, and `rest`.
fn header(tag: u8, declared: i32, rest: &[u8]) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend(declared.to_be_bytes());
    b.extend(rest);
    b
}

// ---------------------------------------------------------------------------
// 1. Startup length out of range
// ---------------------------------------------------------------------------

/// Startup lengths 0 / 3 / 7 / -1 / 10001 / 0x7FFFFFFF: the connection is
/// closed without a reply, from the length word alone (no body is ever
/// sent, so a proxy that reserved or waited for the declared size would
/// hang here instead of closing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_length_out_of_range_closes_without_reply() {
    let db = fresh_db("p_len");
    let proxy = trust_proxy().await;
    let bystander = Bystander::start(&proxy, &db).await;
    for len in [0i32, 3, 7, -1, 10_001, 0x7fff_ffff, i32::MIN] {
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&len.to_be_bytes()).await;
        assert_silent_close(&mut r, &format!("startup length {len}")).await;
    }
    // The same with a few body bytes behind the length word.
    for len in [7i32, 10_001, 0x7fff_ffff] {
        let mut r = Raw::connect(proxy.addr).await;
        let mut b = len.to_be_bytes().to_vec();
        b.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        b.extend_from_slice(b"user\0app\0\0");
        r.send(&b).await;
        assert_silent_close(&mut r, &format!("startup length {len} with body")).await;
    }
    // The limits themselves: exactly 10000 bytes logs in; 10001 with a
    // whole body is closed.
    let base = startup(&[("user", APP_USER), ("database", &db), ("x.pad", "")]);
    let pad = "p".repeat(10_000 - base.len());
    let max = startup(&[("user", APP_USER), ("database", &db), ("x.pad", &pad)]);
    assert_eq!(max.len(), 10_000);
    let mut r = Raw::connect(proxy.addr).await;
    r.login(&[("user", APP_USER), ("database", &db), ("x.pad", &pad)]).await;
    let over = startup(&[("user", APP_USER), ("database", &db), ("x.pad", &format!("{pad}p"))]);
    assert_eq!(over.len(), 10_001);
    let mut r = Raw::connect(proxy.addr).await;
    r.send(&over).await;
    assert_silent_close(&mut r, "10001-byte startup with its body").await;

    bystander.finish().await;
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 2. Slowloris
// ---------------------------------------------------------------------------

/// Truncated startup packets, then silence: each is closed at the login
/// timeout, and meanwhile another client logs in and queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_startup_is_closed_at_login_timeout() {
    let db = fresh_db("p_slow");
    let mut cfg = trust_config();
    cfg.client_login_timeout = Duration::from_secs(2);
    let proxy = TestProxy::start(cfg).await;
    let bystander = Bystander::start(&proxy, &db).await;

    let full = startup(&[("user", APP_USER), ("database", &db)]);
    let mut slow = Vec::new();
    for cut in [0usize, 2, 4, 8, full.len() - 1] {
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&full[..cut]).await;
        slow.push((cut, r));
    }
    // A second slow client per cut that already completed SSL negotiation.
    let mut r = Raw::connect(proxy.addr).await;
    r.send(&startup_packet(SSL_REQUEST, b"")).await;
    assert_eq!(r.read_byte().await, Some(b'N'));
    r.send(&full[..10]).await;
    slow.push((10, r));

    // Meanwhile: a new client logs in and queries; the bystander works.
    let c = proxy.connect(&db).await;
    c.simple_query("SELECT 1").await.expect("query while slow clients hang");
    bystander.check().await;

    for (cut, mut r) in slow {
        expect_close_maybe_fatal(&mut r, &format!("startup cut at {cut} bytes")).await;
    }
    c.simple_query("SELECT 1").await.expect("query after slow clients closed");
    bystander.finish().await;
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 3. Protocol versions
// ---------------------------------------------------------------------------

/// Protocol 2.0 or 4.0 → FATAL 0A000; 3.9 or `_pq_.x` options → exactly one
/// NegotiateProtocolVersion, then the login goes on to ReadyForQuery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_versions() {
    let db = fresh_db("p_ver");
    let proxy = trust_proxy().await;
    for (major, minor) in [(2i32, 0i32), (4, 0), (1, 0), (0, 0), (65535, 65535)] {
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&startup_with_code((major << 16) | minor, &[("user", APP_USER), ("database", &db)])).await;
        expect_fatal_close(&mut r, "0A000", &format!("protocol {major}.{minor}")).await;
    }

    struct Case<'a> {
        minor: i32,
        extra: Vec<(&'a str, &'a str)>,
        unrecognized: Vec<&'a str>,
    }
    let cases = [
        Case { minor: 9, extra: vec![], unrecognized: vec![] },
        Case { minor: 1, extra: vec![], unrecognized: vec![] },
        Case { minor: 0, extra: vec![("_pq_.x", "1")], unrecognized: vec!["_pq_.x"] },
        Case { minor: 9, extra: vec![("_pq_.a", "on"), ("_pq_.b", "")], unrecognized: vec!["_pq_.a", "_pq_.b"] },
    ];
    for case in cases {
        let what = format!("3.{} with {:?}", case.minor, case.extra);
        let mut params = vec![("user", APP_USER), ("database", db.as_str())];
        params.extend(case.extra.iter().copied());
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&startup_with_code((3 << 16) | case.minor, &params)).await;
        let msgs = r.until_ready().await;
        let msgs: Vec<(u8, Vec<u8>)> = msgs
            .into_iter()
            .map(|m| match m {
                Next::Message(t, b) => (t, b),
                Next::Closed => panic!("{what}: closed during login"),
            })
            .collect();
        let v: Vec<&Vec<u8>> = msgs.iter().filter(|(t, _)| *t == b'v').map(|(_, b)| b).collect();
        assert_eq!(v.len(), 1, "{what}: exactly one NegotiateProtocolVersion in {}", types(&msgs));
        assert_eq!(msgs[0].0, b'v', "{what}: NegotiateProtocolVersion comes first: {}", types(&msgs));
        let body = v[0].clone();
        assert_eq!(i32::from_be_bytes(body[4..8].try_into().unwrap()) as usize, case.unrecognized.len(), "{what}");
        let names: Vec<&str> =
            body[8..].split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| std::str::from_utf8(s).unwrap()).collect();
        assert_eq!(names, case.unrecognized, "{what}");
        // PostgreSQL itself answers the same packet with the same bytes: its
        // first Int32 is PG_PROTOCOL_LATEST, the full version 3.0 =
        // 0x00030000 (libpq 16+ reads it as major << 16 | minor), not a bare
        // minor number.
        let mut direct_params = vec![("user", "postgres"), ("database", db.as_str())];
        direct_params.extend(case.extra.iter().copied());
        let mut d = Raw::connect(primary()).await;
        d.send(&startup_with_code((3 << 16) | case.minor, &direct_params)).await;
        let direct_v = match d.next().await {
            Next::Message(b'v', b) => b,
            other => panic!("{what}: PostgreSQL answered {other:?}"),
        };
        assert_eq!(
            i32::from_be_bytes(body[0..4].try_into().unwrap()),
            i32::from_be_bytes(direct_v[0..4].try_into().unwrap()),
            "{what}: NegotiateProtocolVersion's version field, pgbalancer vs PostgreSQL (PostgreSQL sends {PROTOCOL_3_0})"
        );
        assert_eq!(body, direct_v, "{what}: NegotiateProtocolVersion body, pgbalancer vs PostgreSQL");
        assert!(!msgs.iter().any(|(t, _)| *t == b'E'), "{what}: {msgs:?}");
        assert_eq!(msgs.last().unwrap(), &(b'Z', b"I".to_vec()), "{what}");
        r.send(&query("SELECT 1")).await;
        assert_eq!(types(&read_until(&mut r, b'Z', 1).await), "TDCZ", "{what}: session works");
    }

    // Plain 3.0 gets no NegotiateProtocolVersion.
    let mut r = Raw::connect(proxy.addr).await;
    let msgs = login_msgs(&mut r, &[("user", APP_USER), ("database", &db)]).await;
    assert!(!msgs.iter().any(|(t, _)| *t == b'v'), "3.0: {}", types(&msgs));
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 4. Startup packet layout
// ---------------------------------------------------------------------------

/// No final terminator, a name without a value, terminator not last →
/// FATAL 08P01 "invalid startup packet layout".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_startup_layout() {
    let db = fresh_db("p_layout");
    let proxy = trust_proxy().await;
    let bodies: [(&str, Vec<u8>); 6] = [
        ("no final terminator", b"user\0app\0".to_vec()),
        ("no terminator at all", b"user\0app".to_vec()),
        ("name without a value", format!("user\0app\0database\0{db}\0application_name\0\0").into_bytes()),
        ("terminator not last", b"user\0app\0\0x".to_vec()),
        ("pairs after the terminator", format!("user\0app\0\0database\0{db}\0\0").into_bytes()),
        ("empty name", b"\0app\0\0".to_vec()),
    ];
    for (what, body) in bodies {
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&startup_packet(PROTOCOL_3_0, &body)).await;
        let m = expect_fatal_close(&mut r, "08P01", what).await;
        assert!(m.contains("invalid startup packet layout"), "{what}: message {m:?}");
    }
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 5. User, big parameters, invalid UTF-8
// ---------------------------------------------------------------------------

/// Missing or empty `user` → FATAL 28000; 4 KB `user`/`database` and
/// invalid UTF-8 → a clean FATAL (an ErrorResponse, then close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_user_big_params_invalid_utf8() {
    let db = fresh_db("p_user");
    let proxy = trust_proxy().await;
    let bystander = Bystander::start(&proxy, &db).await;

    for (what, params) in [
        ("missing user", vec![("database", db.as_str())]),
        ("empty user", vec![("user", ""), ("database", db.as_str())]),
        ("no parameters", vec![]),
        ("user only empty, later", vec![("user", APP_USER), ("database", db.as_str()), ("user", "")]),
    ] {
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&startup(&params)).await;
        expect_fatal_close(&mut r, "28000", what).await;
    }

    let big_user = "u".repeat(4000);
    let big_db = "d".repeat(4000);
    for (what, params) in [
        ("4 KB user", vec![("user", big_user.as_str()), ("database", db.as_str())]),
        ("4 KB database", vec![("user", APP_USER), ("database", big_db.as_str())]),
        ("4 KB user and database", vec![("user", big_user.as_str()), ("database", big_db.as_str())]),
    ] {
        let p = startup(&params);
        assert!(p.len() <= 10_000, "{what} stays within the startup limit");
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&p).await;
        let msgs = r.until_closed().await;
        let e =
            msgs.iter().find(|(t, _)| *t == b'E').unwrap_or_else(|| panic!("{what}: no error before close: {msgs:?}"));
        assert_eq!(field(&e.1, b'S').as_deref(), Some("FATAL"), "{what}: {msgs:?}");
        assert_eq!(msgs.last().map(|m| m.0), Some(b'E'), "{what}: error is the last message");
        assert!(!msgs.iter().any(|(t, _)| *t == b'Z'), "{what}: must not log in: {msgs:?}");
    }

    let utf8_cases: [(&str, Vec<u8>); 3] = [
        ("invalid UTF-8 value", b"user\0app\0application_name\0\xff\xfe\0\0".to_vec()),
        ("invalid UTF-8 user", b"user\0ap\xc3\x28\0\0".to_vec()),
        ("invalid UTF-8 name", b"user\0app\0\xe2\x82\0x\0\0".to_vec()),
    ];
    for (what, body) in utf8_cases {
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&startup_packet(PROTOCOL_3_0, &body)).await;
        let msgs = r.until_closed().await;
        assert!(!msgs.iter().any(|(t, _)| *t == b'Z'), "{what}: must not log in: {msgs:?}");
        let e = msgs.iter().find(|(t, _)| *t == b'E').unwrap_or_else(|| panic!("{what}: no error before close"));
        assert_eq!(field(&e.1, b'S').as_deref(), Some("FATAL"), "{what}");
    }

    bystander.finish().await;
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 6. Many parameters, duplicate user, replication
// ---------------------------------------------------------------------------

/// 1,000 tiny parameters, a duplicate `user`, `replication=maybe`: handled
/// (an error or a login), no crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_params_duplicate_user_replication() {
    let db = fresh_db("p_many");
    let proxy = trust_proxy().await;
    let bystander = Bystander::start(&proxy, &db).await;

    // 1,000 placeholder settings (PostgreSQL itself accepts `x.*` names).
    let names: Vec<String> = (0..1000).map(|i| format!("x.p{i}")).collect();
    let mut params = vec![("user", APP_USER), ("database", db.as_str())];
    params.extend(names.iter().map(|n| (n.as_str(), "v")));
    let p = startup(&params);
    assert!(p.len() <= 10_000, "{} bytes", p.len());
    let mut r = Raw::connect(proxy.addr).await;
    r.send(&p).await;
    let msgs = r.until_ready().await;
    match msgs.last() {
        Some(Next::Message(b'Z', _)) => {
            r.send(&query("SELECT current_setting('x.p0') || current_setting('x.p999')")).await;
            let got = read_until(&mut r, b'Z', 1).await;
            assert_eq!(types(&got), "TDCZ", "{got:?}");
            assert!(got[1].1.ends_with(b"vv"), "the settings hold: {got:?}");
        }
        _ => {
            let e = first_error(&msgs).unwrap_or_else(|| panic!("1000 params: neither login nor error: {msgs:?}"));
            eprintln!("1000 params refused: {e:?}");
        }
    }

    // Duplicate `user`: the later one wins, as in PostgreSQL.
    let mut r = Raw::connect(proxy.addr).await;
    r.login(&[("user", "nobody_here"), ("database", &db), ("user", APP_USER)]).await;
    r.send(&query("SELECT current_user")).await;
    let got = read_until(&mut r, b'Z', 1).await;
    assert_eq!(types(&got), "TDCZ");
    assert!(got[1].1.ends_with(b"app"), "logged in as the last user given: {got:?}");

    // replication: bad values as PostgreSQL (22023), walsender refused,
    // false-ish values log in.
    for v in ["maybe", "", "2"] {
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&startup(&[("user", APP_USER), ("database", &db), ("replication", v)])).await;
        expect_fatal_close(&mut r, "22023", &format!("replication={v:?}")).await;
    }
    for v in ["true", "database", "on", "1"] {
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&startup(&[("user", APP_USER), ("database", &db), ("replication", v)])).await;
        let msgs = r.until_closed().await;
        assert!(!msgs.iter().any(|(t, _)| *t == b'Z'), "replication={v}: must not log in: {msgs:?}");
        assert_eq!(msgs.last().map(|m| m.0), Some(b'E'), "replication={v}: {msgs:?}");
    }
    for v in ["false", "off", "0"] {
        let mut r = Raw::connect(proxy.addr).await;
        r.login(&[("user", APP_USER), ("database", &db), ("replication", v)]).await;
    }

    bystander.finish().await;
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 7. Plaintext after SSLRequest
// ---------------------------------------------------------------------------

/// SSLRequest (or GSSENCRequest) with plaintext bytes in the same write →
/// FATAL 08P01, no 'N', and no server connection is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_after_ssl_request_is_refused() {
    let db = fresh_db("p_sslinj");
    let alive_db = fresh_db("p_sslinj_alive");
    let proxy = trust_proxy().await;
    let bystander = Bystander::start(&proxy, &alive_db).await;
    let login = startup(&[("user", APP_USER), ("database", &db)]);
    for (what, code, extra) in [
        ("SSLRequest + StartupMessage", SSL_REQUEST, login.clone()),
        ("GSSENCRequest + StartupMessage", GSSENC_REQUEST, login.clone()),
        ("SSLRequest + one byte", SSL_REQUEST, vec![0u8]),
        ("SSLRequest + Query", SSL_REQUEST, query("SELECT 1")),
    ] {
        let mut r = Raw::connect(proxy.addr).await;
        let mut b = startup_packet(code, b"");
        b.extend_from_slice(&extra);
        r.send(&b).await;
        let bytes = read_to_eof(&mut r).await;
        assert_eq!(bytes.first(), Some(&b'E'), "{what}: no 'N'/'S' answer, straight to the error: {bytes:?}");
        let msgs = split_messages(&bytes);
        assert_fatal(&msgs, "08P01", what);
    }
    assert_eq!(server_conns(&db).await, 0, "no server connection was opened for the injected login");
    bystander.finish().await;
    proxy.assert_alive(&alive_db).await;
}

// ---------------------------------------------------------------------------
// 8. SSL/GSS negotiation
// ---------------------------------------------------------------------------

/// SSLRequest → 'N' → GSSENCRequest → 'N' → StartupMessage logs in (and in
/// the other order); a second SSLRequest (or GSSENCRequest) after its 'N'
/// gets a FATAL and a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_then_gss_then_startup() {
    let db = fresh_db("p_neg");
    let proxy = trust_proxy().await;
    for order in [[SSL_REQUEST, GSSENC_REQUEST], [GSSENC_REQUEST, SSL_REQUEST]] {
        let mut r = Raw::connect(proxy.addr).await;
        for code in order {
            r.send(&startup_packet(code, b"")).await;
            assert_eq!(r.read_byte().await, Some(b'N'), "answer to {code}");
        }
        r.login(&[("user", APP_USER), ("database", &db)]).await;
        r.send(&query("SELECT 1")).await;
        assert_eq!(types(&read_until(&mut r, b'Z', 1).await), "TDCZ");
    }
    for (what, seq) in [
        ("SSL twice", vec![SSL_REQUEST, SSL_REQUEST]),
        ("GSS twice", vec![GSSENC_REQUEST, GSSENC_REQUEST]),
        ("SSL, GSS, SSL", vec![SSL_REQUEST, GSSENC_REQUEST, SSL_REQUEST]),
    ] {
        let mut r = Raw::connect(proxy.addr).await;
        for code in &seq[..seq.len() - 1] {
            r.send(&startup_packet(*code, b"")).await;
            assert_eq!(r.read_byte().await, Some(b'N'), "{what}");
        }
        r.send(&startup_packet(*seq.last().unwrap(), b"")).await;
        let bytes = read_to_eof(&mut r).await;
        assert_eq!(bytes.first(), Some(&b'E'), "{what}: {bytes:?}");
        let msgs = split_messages(&bytes);
        assert_eq!(msgs.len(), 1, "{what}: {msgs:?}");
        assert_eq!(field(&msgs[0].1, b'S').as_deref(), Some("FATAL"), "{what}");
    }
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 9. Direct TLS
// ---------------------------------------------------------------------------

/// A TLS ClientHello as the first bytes (PostgreSQL 17 direct TLS, with
/// ALPN "postgresql" or without) is rejected: closed, at most after an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_client_hello_is_rejected() {
    let db = fresh_db("p_tls");
    let proxy = trust_proxy().await;
    let bystander = Bystander::start(&proxy, &db).await;
    // Record header (handshake, TLS 1.0 record version, length), then the
    // start of a ClientHello.
    let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0, 0x03, 0x03];
    hello.extend_from_slice(&[0xab; 32]); // random
    hello.extend_from_slice(&[0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00]); // session id, suites, compression
    let alpn = b"\x00\x10\x00\x0d\x00\x0b\x0apostgresql";
    let mut with_alpn = hello.clone();
    with_alpn.extend_from_slice(&(alpn.len() as u16).to_be_bytes());
    with_alpn.extend_from_slice(alpn);
    for (what, bytes) in [("ClientHello", hello), ("ClientHello with ALPN postgresql", with_alpn)] {
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&bytes).await;
        expect_close_maybe_fatal(&mut r, what).await;
    }
    // A lone 0x16 is not even a length word: closed at the login timeout.
    let mut cfg = trust_config();
    cfg.client_login_timeout = Duration::from_secs(1);
    let quick = TestProxy::start(cfg).await;
    let mut r = Raw::connect(quick.addr).await;
    r.send(&[0x16]).await;
    expect_close_maybe_fatal(&mut r, "lone 0x16").await;
    bystander.finish().await;
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 10. Cancel requests
// ---------------------------------------------------------------------------

/// Waits until a client backend on `db` runs a query starting with `prefix`.
async fn wait_active(su: &Client, db: &str, prefix: &str) -> i32 {
    let start = Instant::now();
    loop {
        let rows = su
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE $2 || '%'",
                &[&db, &prefix],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(r) = rows.first() {
            return r.get(0);
        }
        assert!(start.elapsed() < DEADLINE, "query {prefix:?} never became active on {db}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CancelRequests of the wrong length, with an unknown pid, or with the
/// victim's pid and a wrong key cancel nothing and get no reply; the
/// right key does cancel (so the negative cases are meaningful).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cancel_requests_cancel_nothing() {
    let db = fresh_db("p_cancel");
    let proxy = trust_proxy().await;
    let su = superuser("postgres").await;

    let mut victim = Raw::connect(proxy.addr).await;
    let msgs = login_msgs(&mut victim, &[("user", APP_USER), ("database", &db)]).await;
    let k = &msgs.iter().find(|(t, _)| *t == b'K').expect("BackendKeyData").1;
    assert_eq!(k.len(), 8);
    let pid = i32::from_be_bytes(k[0..4].try_into().unwrap());
    let key = i32::from_be_bytes(k[4..8].try_into().unwrap());

    victim.send(&query("SELECT pg_sleep(2)")).await;
    let server_pid = wait_active(&su, &db, "SELECT pg_sleep(2)").await;

    let wrong_12 = startup_packet(CANCEL_REQUEST, &pid.to_be_bytes());
    assert_eq!(wrong_12.len(), 12);
    let mut wrong_20 = cancel_packet(pid, key);
    wrong_20.extend_from_slice(&[0, 0, 0, 0]);
    wrong_20[..4].copy_from_slice(&20i32.to_be_bytes());
    let wrong_8 = startup_packet(CANCEL_REQUEST, b"");
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("length 12", wrong_12),
        ("length 20 with the right pid and key", wrong_20),
        ("length 8", wrong_8),
        ("unknown pid", cancel_packet(pid ^ 0x0101_0101, key)),
        ("pid 0", cancel_packet(0, key)),
        ("victim pid, wrong key", cancel_packet(pid, key.wrapping_add(1))),
        ("victim pid, flipped key", cancel_packet(pid, !key)),
        ("the server's own pid", cancel_packet(server_pid, key)),
    ];
    for (what, p) in bad {
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&p).await;
        assert_silent_close(&mut r, what).await;
    }
    let got = read_until(&mut victim, b'Z', 1).await;
    assert_eq!(types(&got), "TDCZ", "query was not cancelled: {got:?}");

    // Control: the right key cancels.
    victim.send(&query("SELECT pg_sleep(60)")).await;
    wait_active(&su, &db, "SELECT pg_sleep(60)").await;
    let mut r = Raw::connect(proxy.addr).await;
    r.send(&cancel_packet(pid, key)).await;
    assert_silent_close(&mut r, "valid cancel").await;
    let got = read_until(&mut victim, b'Z', 1).await;
    let code = got.iter().find(|(t, _)| *t == b'E').and_then(|(_, b)| sqlstate(b));
    assert_eq!(code.as_deref(), Some("57014"), "the right key cancels: {got:?}");
    victim.send(&query("SELECT 1")).await;
    assert_eq!(types(&read_until(&mut victim, b'Z', 1).await), "TDCZ");
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 11. Password before startup, Query during SCRAM
// ---------------------------------------------------------------------------

/// A PasswordMessage before any startup packet is closed; a Query where a
/// SASL message is due gets FATAL 08P01 and a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_before_startup_and_query_during_scram() {
    let db = fresh_db("p_scram");
    let trust = trust_proxy().await;
    let mut r = Raw::connect(trust.addr).await;
    r.send(&msg(b'p', b"app-secret\0")).await;
    expect_close_maybe_fatal(&mut r, "password before startup").await;
    trust.assert_alive(&db).await;

    let proxy = TestProxy::start(base_config()).await; // SCRAM
    let sasl_started = |msgs: &[(u8, Vec<u8>)]| -> bool {
        msgs.iter().any(|(t, b)| *t == b'R' && b.len() >= 4 && i32::from_be_bytes(b[0..4].try_into().unwrap()) == 10)
    };
    // Query instead of SASLInitialResponse.
    let mut r = Raw::connect(proxy.addr).await;
    r.send(&startup(&[("user", APP_USER), ("database", &db)])).await;
    let first = read_until(&mut r, b'R', 1).await;
    assert!(sasl_started(&first), "AuthenticationSASL expected: {first:?}");
    r.send(&query("SELECT 1")).await;
    expect_fatal_close(&mut r, "08P01", "Query instead of SASLInitialResponse").await;

    // Query instead of SASLResponse (after the server-first-message).
    let mut r = Raw::connect(proxy.addr).await;
    r.send(&startup(&[("user", APP_USER), ("database", &db)])).await;
    read_until(&mut r, b'R', 1).await;
    let first_msg = b"n,,n=,r=abcdefghijklmnop";
    let mut body = cstr("SCRAM-SHA-256");
    body.extend((first_msg.len() as i32).to_be_bytes());
    body.extend(first_msg);
    r.send(&msg(b'p', &body)).await;
    let cont = read_until(&mut r, b'R', 1).await;
    assert_eq!(cont.last().map(|(_, b)| i32::from_be_bytes(b[0..4].try_into().unwrap())), Some(11), "{cont:?}");
    r.send(&query("SELECT 1")).await;
    expect_fatal_close(&mut r, "08P01", "Query instead of SASLResponse").await;

    // Terminate, Sync, bad lengths where a SASL message is due.
    for (what, bytes) in [
        ("Sync", sync()),
        ("length -1", header(b'p', -1, b"")),
        ("length 0x7fffffff", header(b'p', i32::MAX, b"SCRAM")),
        ("inner length 0x7fffffff", {
            let mut body = cstr("SCRAM-SHA-256");
            body.extend(i32::MAX.to_be_bytes());
            body.extend(first_msg);
            msg(b'p', &body)
        }),
    ] {
        let mut r = Raw::connect(proxy.addr).await;
        r.send(&startup(&[("user", APP_USER), ("database", &db)])).await;
        read_until(&mut r, b'R', 1).await;
        r.send(&bytes).await;
        expect_fatal_close(&mut r, "08P01", what).await;
    }
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 12. Bad message lengths after login
// ---------------------------------------------------------------------------

/// A regular message with length -1, -2, 0 or 3 after login → FATAL 08P01
/// and close (no endless loop), other clients unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_message_length_after_login() {
    let db = fresh_db("p_badlen");
    let proxy = trust_proxy().await;
    let bystander = Bystander::start(&proxy, &db).await;
    for declared in [-1i32, -2, 0, 3, i32::MIN] {
        for tag in [b'Q', b'S', b'P', b'X'] {
            let what = format!("{} with length {declared}", tag as char);
            let mut r = app_login(&proxy, &db).await;
            r.send(&header(tag, declared, b"SELECT 1\0")).await;
            expect_fatal_close(&mut r, "08P01", &what).await;
        }
    }
    // After a good message, in the same write.
    let mut r = app_login(&proxy, &db).await;
    let mut b = query("SELECT 1");
    b.extend(header(b'Q', -1, b""));
    r.send(&b).await;
    let msgs = r.until_closed().await;
    assert_eq!(msgs.last().map(|m| m.0), Some(b'E'), "{msgs:?}");
    assert_eq!(sqlstate(&msgs.last().unwrap().1).as_deref(), Some("08P01"));
    bystander.finish().await;
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 13. Declared length above the cap
// ---------------------------------------------------------------------------

/// A declared length above the cap with a short body is rejected at once
/// (08P01 + close): the body is never sent, so waiting for it would hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_length_above_cap_rejected_without_body() {
    let db = fresh_db("p_cap");
    let mut cfg = trust_config();
    cfg.max_message_size = ByteSize(1024 * 1024);
    let proxy = TestProxy::start(cfg).await;
    let bystander = Bystander::start(&proxy, &db).await;
    let mib = 1024 * 1024;
    for (what, bytes) in [
        ("Query of 100 MB", header(b'Q', 100 * mib, b"SELECT 1\0")),
        ("Query of 2 GB", header(b'Q', i32::MAX, b"SELECT 1\0")),
        ("Query one byte over", header(b'Q', mib, b"SELECT 1\0")),
        ("Parse of 2 GB", header(b'P', i32::MAX, b"\0SELECT 1\0\0\0")),
        ("Bind of 64 MB", header(b'B', 64 * mib, b"\0\0")),
        ("CopyData of 2 GB", header(b'd', i32::MAX, b"")),
        ("Sync of 20000", header(b'S', 20_000, b"")),
        ("Execute of 1 MB", header(b'E', mib - 1, b"\0")),
        ("Terminate of 10001", header(b'X', 10_001, b"")),
    ] {
        let mut r = app_login(&proxy, &db).await;
        r.send(&bytes).await;
        expect_fatal_close(&mut r, "08P01", what).await;
    }
    // Just under the cap is fine.
    let mut r = app_login(&proxy, &db).await;
    let sql = format!("SELECT length('{}')", "a".repeat(mib as usize - 100));
    let q = query(&sql);
    assert!(q.len() <= mib as usize);
    r.send(&q).await;
    let got = read_until(&mut r, b'Z', 1).await;
    assert_eq!(types(&got), "TDCZ");
    bystander.finish().await;
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 14. Unknown message types
// ---------------------------------------------------------------------------

/// Unknown (or backend-only, or login-only) message types after login →
/// FATAL 08P01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_after_login() {
    let db = fresh_db("p_type");
    let proxy = trust_proxy().await;
    let bystander = Bystander::start(&proxy, &db).await;
    for tag in [b'Z', b'p', b'A', b'T', b'v', 0u8, 0xff, b'q'] {
        let mut r = app_login(&proxy, &db).await;
        r.send(&msg(tag, b"")).await;
        expect_fatal_close(&mut r, "08P01", &format!("type {tag}")).await;
    }
    bystander.finish().await;
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 15. Malformed Query
// ---------------------------------------------------------------------------

/// 'Q' without its trailing NUL, or empty: an error or a close, never a
/// hang; then a new client still works, even with a pool of one (the
/// broken server connection is not handed out again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_query_message() {
    let db = fresh_db("p_badq");
    let mut cfg = trust_config();
    cfg.pool_size = 1;
    let proxy = TestProxy::start(cfg).await;
    for (what, bytes) in [
        ("Q without NUL", msg(b'Q', b"SELECT 1")),
        ("empty Q", msg(b'Q', b"")),
        ("Q with bytes after the NUL", msg(b'Q', b"SELECT 1\0junk")),
        ("Q with two statements split by NUL", msg(b'Q', b"SELECT 1\0SELECT 2\0")),
    ] {
        let mut r = app_login(&proxy, &db).await;
        r.send(&bytes).await;
        // Error then close (PostgreSQL's FATAL), or an error and the
        // session goes on; either way no hang.
        let mut msgs = Vec::new();
        let closed = loop {
            match r.next().await {
                Next::Closed => break true,
                Next::Message(b'Z', b) => {
                    msgs.push((b'Z', b));
                    break false;
                }
                Next::Message(t, b) => msgs.push((t, b)),
            }
        };
        assert!(msgs.iter().any(|(t, _)| *t == b'E'), "{what}: expected an error: {msgs:?}");
        if !closed {
            r.send(&query("SELECT 1")).await;
            assert_eq!(types(&read_until(&mut r, b'Z', 1).await), "TDCZ", "{what}: session goes on");
        }
        // A new client works through the single pooled server.
        let c = tokio::time::timeout(DEADLINE, proxy.connect(&db)).await.expect("connect in time");
        let rows = tokio::time::timeout(DEADLINE, c.simple_query("SELECT 1")).await.expect("in time");
        rows.unwrap_or_else(|e| panic!("{what}: new client after it: {e}"));
    }
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 16. Simple Query inside an unfinished extended batch
// ---------------------------------------------------------------------------

/// Reads until the CommandComplete "DO" of the marker query, then its
/// ReadyForQuery.
async fn read_to_marker(r: &mut Raw) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let m = read_until(r, b'Z', 1).await;
        let done = m.iter().any(|(t, b)| *t == b'C' && b == b"DO\0");
        out.extend(m);
        if done {
            return out;
        }
    }
}

/// Parse (with or without an error) and no Sync, then a simple Query: the
/// same messages as PostgreSQL itself answers (which, after an error,
/// discards the Query until Sync), no hang; then Sync gives ReadyForQuery.
/// Afterwards the single pooled server connection is free for another
/// client while this one stays connected: pgbalancer's count of the
/// ReadyForQuery messages it is owed must match what the server sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_inside_extended_batch() {
    let db = fresh_db("p_mixed");
    let mut cfg = trust_config();
    cfg.pool_size = 1;
    cfg.query_wait_timeout = Duration::from_secs(3);
    let proxy = TestProxy::start(cfg).await;
    let marker = query("DO $$ BEGIN END $$");
    let cases: [(&str, Vec<u8>); 5] = [
        ("Parse, Query", cat(&[parse("", "SELECT 1"), query("SELECT 2")])),
        (
            "Parse, Bind, Execute, Query",
            cat(&[parse("", "SELECT 1"), bind("", "", &[]), execute("", 0), query("SELECT 2")]),
        ),
        ("bad Parse, Query", cat(&[parse("", "SELEC 1"), query("SELECT 2")])),
        (
            "Parse, failing Execute, Query",
            cat(&[parse("", "SELECT 1/0"), bind("", "", &[]), execute("", 0), query("SELECT 2")]),
        ),
        ("bad Parse, FunctionCall", cat(&[parse("", "SELEC 1"), function_call(177, &["1", "2"])])),
    ];
    let mut stuck = Vec::new();
    for (what, bytes) in cases {
        let (mut direct, mut proxied) = raw_pair(&db, &proxy).await;
        let mut sides = Vec::new();
        for r in [&mut direct, &mut proxied] {
            r.send(&cat(&[bytes.clone(), sync(), marker.clone()])).await;
            let got = read_to_marker(r).await;
            r.send(&query("SELECT 3")).await;
            let after = read_until(r, b'Z', 1).await;
            sides.push((types(&got), types(&after)));
        }
        assert_eq!(sides[0], sides[1], "{what}: direct vs proxy message types");
        assert_eq!(sides[1].1, "TDCZ", "{what}: the session goes on");
        // The raw client is idle now; the one server connection must be
        // back in the pool for someone else.
        if let Some(p) = another_client_gets_server(&proxy, &db).await {
            stuck.push(format!("{what}: {p}"));
        }
    }
    assert!(stuck.is_empty(), "{}", stuck.join("\n"));
    proxy.assert_alive(&db).await;
}

/// PostgreSQL ignores Sync (and Flush) during COPY FROM STDIN: such a Sync
/// gets no ReadyForQuery of its own. libpq relies on this: for a COPY
/// started with the extended protocol it sends Sync after Execute *and*
/// after CopyDone.
/// The answers must match PostgreSQL's, and afterwards the single pooled
/// server must be free for another client while this one idles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_with_sync_releases_server() {
    let db = fresh_db("p_copysync");
    superuser(&db).await.batch_execute("CREATE TABLE t (a int, b text)").await.unwrap();
    let mut cfg = trust_config();
    cfg.pool_size = 1;
    cfg.query_wait_timeout = Duration::from_secs(3);
    let proxy = TestProxy::start(cfg).await;
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "extended COPY FROM STDIN, libpq style",
            vec![
                step_until(cat(&[parse("", "COPY t FROM STDIN"), bind("", "", &[]), execute("", 0), sync()]), b'G'),
                step(cat(&[copy_data(b"1\tx\n"), msg(b'c', b""), sync()]), 1),
            ],
        ),
        (
            "simple COPY FROM STDIN with a stray Sync and Flush",
            vec![
                step_until(query("COPY t FROM STDIN"), b'G'),
                step(cat(&[copy_data(b"2\ty\n"), sync(), flush(), copy_data(b"3\tz\n"), msg(b'c', b"")]), 1),
            ],
        ),
    ];
    let mut problems = Vec::new();
    for (what, steps) in &cases {
        let (mut direct, mut proxied) = raw_pair(&db, &proxy).await;
        for (i, s) in steps.iter().enumerate() {
            direct.send(&s.send).await;
            let want = read_until(&mut direct, s.until, s.count).await;
            proxied.send(&s.send).await;
            let got = read_until(&mut proxied, s.until, s.count).await;
            assert_eq!(types(&want), types(&got), "{what} step {i}: direct vs proxy");
        }
        proxied.send(&query("SELECT 3")).await;
        assert_eq!(types(&read_until(&mut proxied, b'Z', 1).await), "TDCZ", "{what}: the session goes on");
        if let Some(p) = another_client_gets_server(&proxy, &db).await {
            problems.push(format!("{what}: {p}"));
        }
    }
    // The same with a real client: tokio-postgres's copy_in uses the
    // extended protocol and sends Sync after Execute and after CopyDone.
    {
        use futures_util::SinkExt;
        let info = format!("host=127.0.0.1 port={} user=postgres dbname={db}", proxy.port());
        let (c, conn) = tokio_postgres::connect(&info, NoTls).await.expect("connect as postgres");
        tokio::spawn(conn);
        let copy = async {
            let sink = c.copy_in::<_, bytes::Bytes>("COPY t FROM STDIN").await?;
            let mut sink = Box::pin(sink);
            sink.send(bytes::Bytes::from_static(b"5\tv\n")).await?;
            sink.as_mut().finish().await
        };
        let n = tokio::time::timeout(DEADLINE, copy).await.expect("copy_in in time").expect("copy_in");
        assert_eq!(n, 1);
        if let Some(p) = another_client_gets_server(&proxy, &db).await {
            problems.push(format!("tokio-postgres copy_in: {p}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    proxy.assert_alive(&db).await;
}

/// A COPY FROM STDIN that fails on the server ends at once (ErrorResponse,
/// ReadyForQuery); CopyData/CopyDone the client still sends afterwards are
/// dropped by PostgreSQL without any answer. pgbalancer must not take a
/// server out of the pool for them and keep it (nothing will ever come back
/// to release it): with a pool of one, another client holding and then
/// releasing the server must be able to use it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_copy_data_after_failed_copy_does_not_pin_server() {
    let db = fresh_db("p_latecopy");
    superuser(&db).await.batch_execute("CREATE TABLE t (a int, b text)").await.unwrap();
    let mut cfg = trust_config();
    cfg.pool_size = 1;
    cfg.query_wait_timeout = Duration::from_secs(3);
    let proxy = TestProxy::start(cfg).await;
    let info = format!("host=127.0.0.1 port={} user=postgres dbname={db}", proxy.port());
    let (other, conn) = tokio_postgres::connect(&info, NoTls).await.expect("connect as postgres");
    tokio::spawn(conn);

    let (mut direct, mut proxied) = raw_pair(&db, &proxy).await;
    for r in [&mut direct, &mut proxied] {
        r.send(&query("COPY t FROM STDIN")).await;
        read_until(r, b'G', 1).await;
        r.send(&copy_data(b"not a number\tz\n")).await;
        let got = read_until(r, b'Z', 1).await;
        assert_eq!(types(&got), "EZ", "the COPY failed and ended");
    }
    // The other client takes the only server, the raw client's late copy
    // messages arrive, the other client lets the server go and wants it back.
    other.batch_execute("BEGIN").await.expect("BEGIN");
    let late = cat(&[copy_data(b"5\tv\n"), msg(b'c', b"")]);
    direct.send(&late).await;
    proxied.send(&late).await;
    other.batch_execute("COMMIT").await.expect("COMMIT");
    let again = tokio::time::timeout(DEADLINE, other.simple_query("SELECT 1")).await.expect("answer in time");
    let pinned = again.err().map(|e| e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string()));

    // Both sides answered nothing to the late messages and go on alike.
    let mut sides = Vec::new();
    for r in [&mut direct, &mut proxied] {
        r.send(&query("SELECT 3")).await;
        sides.push(types(&read_until(r, b'Z', 1).await));
    }
    assert_eq!(sides, ["TDCZ", "TDCZ"]);
    assert_eq!(pinned, None, "late CopyData/CopyDone kept the only server from the other client");
    proxy.assert_alive(&db).await;
}

/// With a pool of one, a second `postgres` client (same pool as the raw
/// clients) runs a query; None if it could, else why not.
async fn another_client_gets_server(proxy: &TestProxy, db: &str) -> Option<String> {
    let info = format!("host=127.0.0.1 port={} user=postgres dbname={db}", proxy.port());
    let (other, conn) = tokio::time::timeout(DEADLINE, tokio_postgres::connect(&info, NoTls))
        .await
        .expect("connect in time")
        .expect("connect as postgres");
    tokio::spawn(conn);
    let r = tokio::time::timeout(DEADLINE, other.simple_query("SELECT 1")).await.expect("answer in time");
    r.err().map(|e| {
        let why = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string());
        format!("another client cannot get the server while the first one idles: {why}")
    })
}

// ---------------------------------------------------------------------------
// 17. One byte at a time
// ---------------------------------------------------------------------------

/// Messages with the BackendKeyData contents blanked and ParameterStatus
/// sorted out to a set (their order on login is not part of the protocol).
fn normalize(msgs: Vec<Msg>) -> (Vec<Msg>, Vec<Vec<u8>>) {
    let mut status: Vec<Vec<u8>> = Vec::new();
    let mut rest = Vec::new();
    for (t, b) in msgs {
        match t {
            b'K' => rest.push((t, Vec::new())),
            b'S' => status.push(b),
            _ => rest.push((t, b)),
        }
    }
    status.sort();
    (rest, status)
}

/// The same valid stream (login, simple and extended queries) delivered in
/// one write and one byte per write gives identical messages and rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_at_a_time_gives_identical_results() {
    let db = fresh_db("p_bytes");
    let proxy = trust_proxy().await;
    proxy.assert_alive(&db).await; // the pool exists: both logins take the same path
    let stream = cat(&[
        startup(&[("user", APP_USER), ("database", &db), ("application_name", "bytes")]),
        query("SELECT 1 AS a, 'x' AS b"),
        parse("", "SELECT $1::int * 2 AS doubled, $2::text AS t"),
        bind("", "", &[Some("21"), None]),
        describe(b'P', ""),
        execute("", 0),
        sync(),
        query("SELECT g FROM generate_series(1, 3) g; SELECT 'two'"),
        query("SELECT 1/0"),
        parse_typed("s", "SELECT $1::text || '!'", &[25]),
        describe(b'S', "s"),
        bind("p", "s", &[Some("hey")]),
        execute("p", 0),
        close(b'S', "s"),
        sync(),
        query("BEGIN; SELECT current_setting('application_name'); COMMIT"),
    ]);
    let rfqs = 7; // login + 6 (Q, S, Q, Q, S, Q)
    let mut results = Vec::new();
    for one_byte in [false, true] {
        let mut r = Raw::connect(proxy.addr).await;
        if one_byte {
            for b in &stream {
                r.stream.write_all(std::slice::from_ref(b)).await.expect("write one byte");
                r.stream.flush().await.unwrap();
                // Pace the bytes so the proxy sees them in separate reads.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } else {
            r.send(&stream).await;
        }
        let msgs = read_until(&mut r, b'Z', rfqs).await;
        results.push(normalize(msgs));
    }
    assert_eq!(results[0].1, results[1].1, "ParameterStatus set");
    assert_eq!(types(&results[0].0), types(&results[1].0), "message types");
    assert_eq!(results[0].0, results[1].0, "message contents");
    let data: Vec<&Vec<u8>> = results[0].0.iter().filter(|(t, _)| *t == b'D').map(|(_, b)| b).collect();
    assert_eq!(data.len(), 1 + 1 + 3 + 1 + 1 + 1, "{data:?}");
    assert!(data[1].windows(2).any(|w| w == b"42"), "extended query result: {:?}", data[1]);
    assert!(data[data.len() - 1].ends_with(b"bytes"), "application_name: {:?}", data.last());
}

// ---------------------------------------------------------------------------
// 18. Proxy vs direct, byte for byte
// ---------------------------------------------------------------------------

/// One step: send bytes, then read until `count` messages of type `until`.
struct Step {
    send: Vec<u8>,
    until: u8,
    count: usize,
}

fn step(send: Vec<u8>, count: usize) -> Step {
    Step { send, until: b'Z', count }
}

fn step_until(send: Vec<u8>, until: u8) -> Step {
    Step { send, until, count: 1 }
}

/// Where two message sequences differ, shortly (bodies can be megabytes).
fn first_difference(want: &[(u8, Vec<u8>)], got: &[(u8, Vec<u8>)]) -> String {
    let short = |m: Option<&(u8, Vec<u8>)>| match m {
        None => "nothing".to_owned(),
        Some((t, b)) => {
            let shown = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
            format!("{:?} ({} bytes) {shown:?}", *t as char, b.len())
        }
    };
    let i = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(want.len().min(got.len()));
    let cut = |t: String| if t.len() > 300 { format!("{}...({} messages)", &t[..300], t.len()) } else { t };
    format!(
        "direct types {:?}, proxy types {:?}; message {i}: direct {} vs proxy {}",
        cut(types(want)),
        cut(types(got)),
        short(want.get(i)),
        short(got.get(i))
    )
}

/// After login, a catalogue of message sequences gets byte-for-byte the
/// same answers through pgbalancer as from PostgreSQL directly (both as
/// `postgres` on the same database; the login itself is not compared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_matches_direct_byte_for_byte() {
    let db = fresh_db("p_same");
    {
        let su = superuser(&db).await;
        su.batch_execute("CREATE TABLE t (a int, b text)").await.unwrap();
    }
    let proxy = trust_proxy().await;
    let int4pl_oid = 177;

    let catalogue: Vec<(&str, Vec<Step>)> = vec![
        (
            "simple SELECT with rows",
            vec![step(query("SELECT g, 'row ' || g AS label, NULL::text AS n FROM generate_series(1, 5) g"), 1)],
        ),
        ("multi-statement", vec![step(query("SELECT 1 AS a; SELECT 'b' AS b, 2.5::numeric AS c; VALUES (1), (2)"), 1)]),
        ("error in simple query", vec![step(query("SELECT 1/0"), 1)]),
        ("error mid multi-statement", vec![step(query("SELECT 1; SELECT 1/0; SELECT 3"), 1)]),
        ("syntax error", vec![step(query("SELEC 1"), 1)]),
        (
            "extended Parse/Describe/Bind/Describe/Execute/Sync",
            vec![step(
                cat(&[
                    parse("", "SELECT $1::int + 1 AS n, $2::text AS t"),
                    describe(b'S', ""),
                    bind("", "", &[Some("41"), None]),
                    describe(b'P', ""),
                    execute("", 0),
                    sync(),
                ]),
                1,
            )],
        ),
        (
            "named statement and portal, Close",
            vec![step(
                cat(&[
                    parse_typed("s1", "SELECT $1::text || 'x'", &[25]),
                    bind("p1", "s1", &[Some("a")]),
                    execute("p1", 0),
                    bind("p1", "s1", &[Some("b")]),
                    close(b'P', "p1"),
                    close(b'S', "s1"),
                    close(b'S', "never_existed"),
                    sync(),
                ]),
                1,
            )],
        ),
        (
            "portal suspended",
            vec![step(
                cat(&[
                    parse("", "SELECT generate_series(1, 5)"),
                    bind("", "", &[]),
                    execute("", 2),
                    execute("", 2),
                    execute("", 0),
                    sync(),
                ]),
                1,
            )],
        ),
        (
            "error mid-batch, then Sync",
            vec![
                step(cat(&[parse("", "SELECT 1/0"), bind("", "", &[]), execute("", 0), sync()]), 1),
                step(
                    cat(&[
                        parse("", "SELEC 1"),
                        bind("", "", &[]),
                        describe(b'P', ""),
                        execute("", 0),
                        sync(),
                        parse("", "SELECT 'after'"),
                        bind("", "", &[]),
                        execute("", 0),
                        sync(),
                    ]),
                    2,
                ),
                step(cat(&[bind("", "no_such", &[]), execute("", 0), sync()]), 1),
                step(cat(&[execute("no_portal", 0), sync()]), 1),
            ],
        ),
        ("empty query", vec![step(query(""), 1), step(query("   ;  "), 1)]),
        (
            "empty extended query",
            vec![step(cat(&[parse("", ""), bind("", "", &[]), describe(b'P', ""), execute("", 0), sync()]), 1)],
        ),
        (
            "statement without rows, described",
            vec![step(cat(&[parse("", "DO $$ BEGIN END $$"), describe(b'S', ""), sync()]), 1)],
        ),
        ("COPY TO STDOUT", vec![step(query("COPY (SELECT g, 'v' || g FROM generate_series(1, 4) g) TO STDOUT"), 1)]),
        (
            "COPY TO STDOUT binary",
            vec![step(query("COPY (SELECT g FROM generate_series(1, 2) g) TO STDOUT (FORMAT binary)"), 1)],
        ),
        (
            "COPY FROM STDIN",
            vec![
                step_until(query("COPY t FROM STDIN"), b'G'),
                step(cat(&[copy_data(b"1\tx\n"), copy_data(b"2\t"), copy_data(b"y\n"), msg(b'c', b"")]), 1),
                step(query("SELECT count(*) FROM t"), 1),
            ],
        ),
        (
            "COPY FROM STDIN failed by the client",
            vec![
                step_until(query("COPY t FROM STDIN"), b'G'),
                step(cat(&[copy_data(b"3\tz\n"), msg(b'f', b"client says no\0")]), 1),
            ],
        ),
        (
            "COPY FROM STDIN with bad data",
            vec![
                step_until(query("COPY t FROM STDIN"), b'G'),
                step(cat(&[copy_data(b"not a number\tz\n"), msg(b'c', b"")]), 1),
            ],
        ),
        ("NOTICE", vec![step(query("DO $$ BEGIN RAISE NOTICE 'x'; RAISE WARNING 'w %', 1; END $$"), 1)]),
        (
            "transaction status bytes",
            vec![
                step(query("BEGIN"), 1),
                step(query("SELECT 1"), 1),
                step(query("SELECT 1/0"), 1),
                step(query("SELECT 1"), 1),
                step(query("ROLLBACK"), 1),
                step(query("BEGIN; SELECT 2; COMMIT"), 1),
                step(query("COMMIT"), 1),
                step(cat(&[parse("", "BEGIN"), bind("", "", &[]), execute("", 0), sync()]), 1),
                step(cat(&[parse("", "COMMIT"), bind("", "", &[]), execute("", 0), sync()]), 1),
            ],
        ),
        (
            "ParameterStatus on SET",
            vec![step(query("SET application_name = 'zz'"), 1), step(query("RESET application_name"), 1)],
        ),
        (
            "Flush before Sync",
            vec![
                step_until(cat(&[parse("", "SELECT 7"), bind("", "", &[]), execute("", 0), flush()]), b'C'),
                step(sync(), 1),
            ],
        ),
        ("FunctionCall", vec![step(function_call(int4pl_oid, &["1", "2"]), 1)]),
        ("FunctionCall with a bad oid", vec![step(function_call(0, &[]), 1)]),
        (
            "pipeline of simple and extended queries in one write",
            vec![step(
                cat(&[
                    query("SELECT 1"),
                    query("SELECT 1/0"),
                    parse("", "SELECT $1::int"),
                    bind("", "", &[Some("5")]),
                    execute("", 0),
                    sync(),
                    query("BEGIN"),
                    query("SELECT 2"),
                    query("COMMIT"),
                ]),
                5,
            )],
        ),
        ("a 2 MB row", vec![step(query("SELECT repeat('x', 2000000), 'after'"), 1)]),
        ("many rows", vec![step(query("SELECT g, md5(g::text) FROM generate_series(1, 20000) g"), 1)]),
        (
            "a 2 MB CopyData in",
            vec![
                step_until(query("COPY t (b) FROM STDIN"), b'G'),
                step(cat(&[copy_data(format!("{}\n", "y".repeat(2_000_000)).as_bytes()), msg(b'c', b"")]), 1),
                step(query("SELECT length(b) FROM t WHERE length(b) > 100"), 1),
            ],
        ),
        (
            "Describe of unknown statement and portal",
            vec![step(cat(&[describe(b'S', "nope"), sync(), describe(b'P', "nope"), sync()]), 2)],
        ),
    ];

    let (mut direct, mut proxied) = raw_pair(&db, &proxy).await;
    let mut failures = Vec::new();
    for (what, steps) in &catalogue {
        for (i, s) in steps.iter().enumerate() {
            direct.send(&s.send).await;
            let want = read_until(&mut direct, s.until, s.count).await;
            proxied.send(&s.send).await;
            let got = read_until(&mut proxied, s.until, s.count).await;
            if want != got {
                failures.push(format!("{what} step {i}: {}", first_difference(&want, &got)));
            }
        }
    }
    assert!(failures.is_empty(), "proxy differs from direct:\n{}", failures.join("\n"));
    proxy.assert_alive(&db).await;
}

/// A Query and a Terminate in the same write: PostgreSQL answers the query,
/// then closes; so must pgbalancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_then_terminate_in_one_write_matches_direct() {
    let db = fresh_db("p_term");
    let proxy = trust_proxy().await;
    let bytes = cat(&[query("SELECT 1"), msg(b'X', b"")]);
    let mut sides = Vec::new();
    for addr in [primary(), proxy.addr] {
        let mut r = login(addr, &db, None).await;
        r.send(&bytes).await;
        sides.push(r.until_closed().await);
    }
    assert_eq!(types(&sides[0]), "TDCZ", "direct");
    assert_eq!(sides[0], sides[1], "direct vs proxy");
    proxy.assert_alive(&db).await;
}
