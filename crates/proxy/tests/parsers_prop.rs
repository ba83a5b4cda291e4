//! Property tests for every parser in `pgbalancer_proxy::protocol` and the
//! SCRAM server exchange: arbitrary bytes never panic, declared lengths above
//! a cap are always rejected before the body matters, and what pgbalancer
//! writes parses back to what it meant.

use bytes::BytesMut;
use pgbalancer_proxy::auth::scram::{
    ClientExchange, ClientSecret, ScramError, ServerExchange, Verifier, MAX_ITERATIONS,
};
use pgbalancer_proxy::protocol::frame::{self, FrameError, Frames, Header, HEADER_LEN, SMALL_MESSAGE_LIMIT};
use pgbalancer_proxy::protocol::read::{self, ErrorFields};
use pgbalancer_proxy::protocol::startup::{
    self, StartupError, StartupPacket, CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, MAX_STARTUP_LEN, MIN_STARTUP_LEN,
    PROTOCOL_3_0, SSL_REQUEST_CODE,
};
use pgbalancer_proxy::protocol::write::{self, Severity};
use pgbalancer_proxy::protocol::{fe, TxStatus};
use proptest::prelude::*;

/// `cases` random cases; failures are reported, not persisted to a
/// regressions file next to this one.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// Bytes biased towards the ones protocol parsers care about (NUL, ',', '=',
/// letters the SCRAM grammar uses, invalid UTF-8), so random inputs reach
/// deeper than the first check.
fn spicy_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => any::<u8>(),
        2 => Just(0u8),
        1 => prop::sample::select(b"nyrpcsvimae=,abAB/+0123456789".to_vec()),
        1 => Just(0xffu8),
    ]
}

fn spicy_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..max), prop::collection::vec(spicy_byte(), 0..max)]
}

/// A startup-phase code: mostly the interesting ones.
fn startup_code() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(PROTOCOL_3_0),
        Just(SSL_REQUEST_CODE),
        Just(GSSENC_REQUEST_CODE),
        Just(CANCEL_REQUEST_CODE),
        (0u16..6, any::<u16>()).prop_map(|(maj, min)| ((maj as i32) << 16) | min as i32),
        any::<i32>(),
    ]
}

/// A string without NUL (what a C string may hold).
fn cstring(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..max)
        .prop_map(|v| v.into_iter().collect())
}

/// A startup parameter name: non-empty, no NUL.
fn param_name() -> impl Strategy<Value = String> {
    cstring(12).prop_filter("non-empty", |s| !s.is_empty())
}

/// A regular frontend tag, any byte at all.
fn tag() -> impl Strategy<Value = u8> {
    prop_oneof![prop::sample::select(b"BCdcfDEHFPpQSXZ\0".to_vec()), any::<u8>()]
}

/// Big-endian i32 prefix + rest.
fn with_len(len: i32, rest: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(rest);
    v
}

/// `s` cut at its first NUL (what pgbalancer's writers do to C strings).
fn cut_at_nul(s: &str) -> &str {
    s.split('\0').next().unwrap_or("")
}

fn one_frame(buf: &[u8]) -> (u8, Vec<u8>) {
    let mut f = Frames::new(buf);
    let (tag, body) = f.next().expect("one message").expect("well framed");
    assert_eq!(f.consumed(), buf.len(), "exactly one message");
    assert!(f.next().is_none());
    (tag, body.to_vec())
}

// ---------------------------------------------------------------------------
// startup
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn peek_startup_len_total(buf in spicy_bytes(16)) {
        match startup::peek_startup_len(&buf) {
            Ok(None) => prop_assert!(buf.len() < 4),
            Ok(Some(n)) => {
                prop_assert!(buf.len() >= 4);
                prop_assert!((MIN_STARTUP_LEN..=MAX_STARTUP_LEN).contains(&n));
                prop_assert_eq!(n as i32, i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
            }
            Err(StartupError::BadLength(l)) => {
                prop_assert!(buf.len() >= 4);
                prop_assert!(l < MIN_STARTUP_LEN as i64 || l > MAX_STARTUP_LEN as i64);
            }
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }

    /// Any declared length outside 8..=10000 is rejected from the 4 length
    /// bytes alone, whatever follows.
    #[test]
    fn startup_length_out_of_range_rejected_before_body(
        len in prop_oneof![i32::MIN..8, 10_001i32..=i32::MAX, Just(-1), Just(0), Just(7), Just(10_001), Just(i32::MAX)],
        rest in spicy_bytes(64),
    ) {
        let buf = with_len(len, &rest);
        prop_assert_eq!(startup::peek_startup_len(&buf), Err(StartupError::BadLength(len as i64)));
        prop_assert_eq!(startup::peek_startup_len(&buf[..4]), Err(StartupError::BadLength(len as i64)));
    }

    #[test]
    fn parse_startup_total(code in startup_code(), body in spicy_bytes(200)) {
        let mut packet = with_len((body.len() + 8) as i32, &code.to_be_bytes());
        packet.extend_from_slice(&body);
        match startup::parse_startup(&packet) {
            Ok(StartupPacket::SslRequest) => prop_assert!(code == SSL_REQUEST_CODE && body.is_empty()),
            Ok(StartupPacket::GssEncRequest) => prop_assert!(code == GSSENC_REQUEST_CODE && body.is_empty()),
            Ok(StartupPacket::Cancel { pid, key }) => {
                prop_assert_eq!(code, CANCEL_REQUEST_CODE);
                prop_assert_eq!(body.len(), 8);
                prop_assert_eq!(pid.to_be_bytes(), [body[0], body[1], body[2], body[3]]);
                prop_assert_eq!(key.to_be_bytes(), [body[4], body[5], body[6], body[7]]);
            }
            Ok(StartupPacket::Startup(m)) => {
                prop_assert_eq!(m.major, 3);
                prop_assert_eq!(((m.major as i32) << 16) | m.minor as i32, code);
                prop_assert_eq!(body.last(), Some(&0u8));
                for (k, v) in &m.params {
                    prop_assert!(!k.is_empty());
                    prop_assert!(!k.contains('\0') && !v.contains('\0'));
                }
                // An accepted 3.0 packet is canonical: writing its
                // parameters back gives the same bytes.
                if code == PROTOCOL_3_0 {
                    let mut again = BytesMut::new();
                    write::startup_message(&mut again, m.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                    prop_assert_eq!(&again[..], &packet[..]);
                }
            }
            Err(StartupError::BadCancelLength) => {
                prop_assert_eq!(code, CANCEL_REQUEST_CODE);
                prop_assert_ne!(body.len(), 8);
            }
            Err(StartupError::UnsupportedProtocol { major, minor }) => {
                prop_assert_ne!(major, 3);
                prop_assert_eq!(((major as u32) << 16) | minor as u32, code as u32);
            }
            Err(StartupError::BadLayout) | Err(StartupError::BadUtf8) => {}
            Err(StartupError::BadLength(_)) => prop_assert!(false, "length was in range"),
        }
    }

    /// Slices of any length (including too short / too long for a startup
    /// packet) never panic, and out-of-range ones are BadLength.
    #[test]
    fn parse_startup_any_slice(buf in prop_oneof![
        spicy_bytes(24),
        // Near the 10000-byte limit: a random head repeated to length n
        // (cheap to generate, unlike 10000 independent bytes).
        (MAX_STARTUP_LEN - 2..MAX_STARTUP_LEN + 3, prop::collection::vec(spicy_byte(), 1..24))
            .prop_map(|(n, head)| head.iter().copied().cycle().take(n).collect::<Vec<u8>>()),
    ]) {
        let r = startup::parse_startup(&buf);
        if buf.len() < MIN_STARTUP_LEN || buf.len() > MAX_STARTUP_LEN {
            prop_assert_eq!(r, Err(StartupError::BadLength(buf.len() as i64)));
        }
    }

    #[test]
    fn startup_message_round_trips(
        params in prop::collection::vec((param_name(), cstring(20)), 0..20),
    ) {
        let mut b = BytesMut::new();
        write::startup_message(&mut b, params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        prop_assert_eq!(startup::peek_startup_len(&b), Ok(Some(b.len())));
        let Ok(StartupPacket::Startup(m)) = startup::parse_startup(&b) else {
            return Err(TestCaseError::fail("not a startup message"));
        };
        prop_assert_eq!((m.major, m.minor), (3, 0));
        prop_assert_eq!(&m.params, &params);
        // Later pairs win.
        for (k, _) in &params {
            let last = params.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            prop_assert_eq!(m.get(k), last);
        }
    }

    #[test]
    fn cancel_request_round_trips(pid in any::<i32>(), key in any::<i32>()) {
        let mut b = BytesMut::new();
        write::cancel_request(&mut b, pid, key);
        prop_assert_eq!(startup::peek_startup_len(&b), Ok(Some(16)));
        prop_assert_eq!(startup::parse_startup(&b), Ok(StartupPacket::Cancel { pid, key }));
    }
}

// ---------------------------------------------------------------------------
// frame
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn peek_header_total(buf in spicy_bytes(16), cap in prop_oneof![0usize..64, any::<usize>()]) {
        match frame::peek_header(&buf, cap) {
            Ok(None) => prop_assert!(buf.len() < HEADER_LEN),
            Ok(Some(h)) => {
                prop_assert_eq!(h.tag, buf[0]);
                prop_assert!(h.total_len >= HEADER_LEN && h.total_len <= cap);
                prop_assert_eq!(h.body_len() + HEADER_LEN, h.total_len);
                prop_assert_eq!(h.total_len as i64 - 1, i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as i64);
            }
            Err(FrameError::BadLength { tag, declared }) => {
                prop_assert_eq!(tag, buf[0]);
                prop_assert!(declared < 4);
            }
            Err(FrameError::TooLarge { tag, declared, cap: c }) => {
                prop_assert_eq!(tag, buf[0]);
                prop_assert_eq!(c, cap);
                prop_assert!(declared > cap);
            }
            Err(e @ FrameError::UnknownType { .. }) => prop_assert!(false, "peek_header has no type check: {e:?}"),
        }
    }

    /// The cap is enforced from the 5 header bytes alone: how many body
    /// bytes follow (none, some, or all of them) does not matter.
    #[test]
    fn declared_length_above_cap_always_rejected(
        t in tag(),
        (cap, declared) in prop_oneof![0usize..20_000, 0usize..=(i32::MAX as usize - 1), Just(1 << 20)]
            .prop_flat_map(|cap| {
                // total = declared + 1 > cap, and declared >= 4 (else BadLength).
                let lo = cap.max(4) as i32;
                (Just(cap), prop_oneof![Just(lo), lo..=i32::MAX, Just(i32::MAX)])
            }),
        body in spicy_bytes(128),
        follow in any::<prop::sample::Index>(),
    ) {
        let mut buf = vec![t];
        buf.extend_from_slice(&declared.to_be_bytes());
        let n = follow.index(body.len() + 1);
        buf.extend_from_slice(&body[..n]);
        let want = Err(FrameError::TooLarge { tag: t, declared: declared as usize + 1, cap });
        prop_assert_eq!(frame::peek_header(&buf, cap), want);
        prop_assert_eq!(frame::peek_header(&buf[..HEADER_LEN], cap), want);
        // The same through the per-type caps used after login.
        if let Ok(c) = frame::frontend_cap(t, cap) {
            if (declared as usize) >= c {
                let too_large = matches!(frame::peek_frontend(&buf, cap), Err(FrameError::TooLarge { .. }));
                prop_assert!(too_large);
            }
        }
    }

    /// Lengths below 4 are always rejected, whatever the cap and body.
    #[test]
    fn declared_length_below_four_always_rejected(
        t in tag(),
        declared in prop_oneof![i32::MIN..4, Just(-1), Just(-2), Just(0), Just(3)],
        cap in any::<usize>(),
        body in spicy_bytes(32),
    ) {
        let mut buf = vec![t];
        buf.extend_from_slice(&declared.to_be_bytes());
        buf.extend_from_slice(&body);
        prop_assert_eq!(frame::peek_header(&buf, cap), Err(FrameError::BadLength { tag: t, declared }));
    }

    #[test]
    fn peek_frontend_total(buf in spicy_bytes(16), large in prop_oneof![0usize..64, 5usize..(1 << 30), any::<usize>()]) {
        let r = frame::peek_frontend(&buf, large);
        if buf.is_empty() {
            prop_assert_eq!(r, Ok(None));
            return Ok(());
        }
        match frame::frontend_cap(buf[0], large) {
            Err(e) => prop_assert_eq!(r, Err(e)),
            Ok(cap) => {
                prop_assert_eq!(r, frame::peek_header(&buf, cap));
                if let Ok(Some(Header { total_len, .. })) = r {
                    prop_assert!(total_len <= cap);
                }
            }
        }
    }

    /// Small messages are capped at 10000 bytes whatever max_message_size says;
    /// the large ones follow max_message_size; 'p' and anything unknown are
    /// refused after login.
    #[test]
    fn frontend_caps(t in any::<u8>(), large in any::<usize>()) {
        let r = frame::frontend_cap(t, large);
        match t {
            fe::QUERY | fe::PARSE | fe::BIND | fe::FUNCTION_CALL | fe::COPY_DATA | fe::COPY_FAIL => prop_assert_eq!(r, Ok(large)),
            fe::CLOSE | fe::DESCRIBE | fe::EXECUTE | fe::SYNC | fe::FLUSH | fe::TERMINATE | fe::COPY_DONE => {
                prop_assert_eq!(r, Ok(SMALL_MESSAGE_LIMIT))
            }
            _ => prop_assert_eq!(r, Err(FrameError::UnknownType { tag: t })),
        }
    }

    #[test]
    fn frames_total(buf in spicy_bytes(256)) {
        let mut f = Frames::new(&buf);
        let mut total = 0usize;
        // Frames repeats its error forever (it does not advance past a bad
        // header), so stop at the first one.
        for _ in 0..=buf.len() {
            match f.next() {
                Some(Ok((_, body))) => {
                    total += HEADER_LEN + body.len();
                    prop_assert_eq!(f.consumed(), total);
                }
                Some(Err(e)) => {
                    prop_assert!(matches!(e, FrameError::BadLength { .. }), "{:?}", e);
                    break;
                }
                None => break,
            }
        }
        prop_assert!(f.consumed() <= buf.len());
    }

    /// Messages written back to back frame into the same messages, and a
    /// truncated stream yields exactly the complete ones.
    #[test]
    fn frames_split_written_messages(
        msgs in prop::collection::vec((tag(), spicy_bytes(40)), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for (t, body) in &msgs {
            stream.push(*t);
            stream.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            stream.extend_from_slice(body);
            ends.push(stream.len());
        }
        let got: Vec<(u8, Vec<u8>)> = Frames::new(&stream).map(|r| r.map(|(t, b)| (t, b.to_vec())).unwrap()).collect();
        prop_assert_eq!(&got, &msgs);

        let n = cut.index(stream.len() + 1);
        let mut f = Frames::new(&stream[..n]);
        let whole = ends.iter().filter(|&&e| e <= n).count();
        let got: Vec<_> = f.by_ref().map(|r| r.unwrap()).collect();
        prop_assert_eq!(got.len(), whole);
        prop_assert_eq!(f.consumed(), if whole == 0 { 0 } else { ends[whole - 1] });
    }
}

// ---------------------------------------------------------------------------
// read (arbitrary bytes) and write → read round trips
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn readers_total(body in spicy_bytes(96)) {
        let f = ErrorFields::parse(&body);
        for s in [&f.severity, &f.code, &f.message].into_iter().flatten() {
            prop_assert!(!s.contains('\0'));
        }
        if let Some((name, value)) = read::parameter_status(&body) {
            prop_assert!(!name.contains('\0') && !value.contains('\0'));
        }
        match read::backend_key_data(&body) {
            Some(_) => prop_assert_eq!(body.len(), 8),
            None => prop_assert_ne!(body.len(), 8),
        }
        match read::authentication(&body) {
            Some((_, rest)) => prop_assert_eq!(rest.len() + 4, body.len()),
            None => prop_assert!(body.len() < 4),
        }
        if let Some(q) = read::query_text(&body) {
            prop_assert_eq!(q.len() + 1, body.len());
            prop_assert_eq!(body.last(), Some(&0u8));
        }
        if let Some((mech, data)) = read::sasl_initial_response(&body) {
            prop_assert!(mech.len() + 1 + 4 + data.len() == body.len());
        }
        let mut n = 0;
        for m in read::sasl_mechanisms(&body) {
            prop_assert!(!m.is_empty() && !m.contains(&0));
            n += 1;
            prop_assert!(n <= body.len());
        }
        if let Some((a, b)) = read::cstr(&body) {
            prop_assert_eq!(a.len() + 1 + b.len(), body.len());
        }
    }

    /// The SASLInitialResponse inner length must match the bytes present,
    /// whatever it declares (0x7fffffff, negative, off by one).
    #[test]
    fn sasl_initial_response_inner_length(
        mech in cstring(20),
        data in spicy_bytes(64),
        declared in prop_oneof![any::<i32>(), Just(i32::MAX), Just(-1), Just(-2), Just(0)],
    ) {
        let mut body = mech.as_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(&declared.to_be_bytes());
        body.extend_from_slice(&data);
        let r = read::sasl_initial_response(&body);
        let valid = declared as i64 == data.len() as i64 || (declared == -1 && data.is_empty());
        if valid {
            prop_assert_eq!(r, Some((mech.as_str(), &data[..])));
        } else {
            prop_assert_eq!(r, None);
        }
    }

    #[test]
    fn error_response_round_trips(
        severity in prop::sample::select(vec![Severity::Error, Severity::Fatal, Severity::Warning, Severity::Notice]),
        code in cstring(8),
        message in any::<String>(),
    ) {
        let mut b = BytesMut::new();
        write::error_response(&mut b, severity, &code, &message);
        let (tag, body) = one_frame(&b);
        let (want_tag, want_sev) = match severity {
            Severity::Error => (b'E', "ERROR"),
            Severity::Fatal => (b'E', "FATAL"),
            Severity::Warning => (b'N', "WARNING"),
            Severity::Notice => (b'N', "NOTICE"),
        };
        prop_assert_eq!(tag, want_tag);
        let f = ErrorFields::parse(&body);
        prop_assert_eq!(f.severity.as_deref(), Some(want_sev));
        prop_assert_eq!(f.code.as_deref(), Some(code.as_str()));
        prop_assert_eq!(f.message.as_deref(), Some(cut_at_nul(&message)));
        prop_assert_eq!(body.last(), Some(&0u8));
    }

    #[test]
    fn parameter_status_round_trips(name in any::<String>(), value in any::<String>()) {
        let mut b = BytesMut::new();
        write::parameter_status(&mut b, &name, &value);
        let (tag, body) = one_frame(&b);
        prop_assert_eq!(tag, b'S');
        prop_assert_eq!(read::parameter_status(&body), Some((cut_at_nul(&name), cut_at_nul(&value))));
    }

    #[test]
    fn small_backend_messages_round_trip(pid in any::<i32>(), key in any::<i32>(), data in spicy_bytes(64), mech in cstring(30)) {
        let mut b = BytesMut::new();
        write::backend_key_data(&mut b, pid, key);
        let (tag, body) = one_frame(&b);
        prop_assert_eq!(tag, b'K');
        prop_assert_eq!(read::backend_key_data(&body), Some((pid, key)));

        let mut b = BytesMut::new();
        write::authentication_ok(&mut b);
        let (tag, body) = one_frame(&b);
        prop_assert_eq!(tag, b'R');
        prop_assert_eq!(read::authentication(&body), Some((0, &b""[..])));

        let mut b = BytesMut::new();
        write::authentication_sasl(&mut b, &mech);
        let (tag, body) = one_frame(&b);
        prop_assert_eq!(tag, b'R');
        let (code, rest) = read::authentication(&body).unwrap();
        prop_assert_eq!(code, 10);
        let mechs: Vec<&[u8]> = read::sasl_mechanisms(rest).collect();
        if mech.is_empty() {
            prop_assert!(mechs.is_empty());
        } else {
            prop_assert_eq!(mechs, vec![mech.as_bytes()]);
        }

        for (f, want) in [
            (write::authentication_sasl_continue as fn(&mut BytesMut, &[u8]), 11),
            (write::authentication_sasl_final, 12),
        ] {
            let mut b = BytesMut::new();
            f(&mut b, &data);
            let (tag, body) = one_frame(&b);
            prop_assert_eq!(tag, b'R');
            prop_assert_eq!(read::authentication(&body), Some((want, &data[..])));
        }

        for status in [TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed] {
            let mut b = BytesMut::new();
            write::ready_for_query(&mut b, status);
            let (tag, body) = one_frame(&b);
            prop_assert_eq!(tag, b'Z');
            prop_assert_eq!(body.len(), 1);
            prop_assert_eq!(TxStatus::from_byte(body[0]), Some(status));
        }
    }

    #[test]
    fn negotiate_protocol_version_layout(minor in any::<i32>(), names in prop::collection::vec(cstring(16), 0..6)) {
        let mut b = BytesMut::new();
        write::negotiate_protocol_version(&mut b, minor, names.iter().map(String::as_str));
        let (tag, body) = one_frame(&b);
        prop_assert_eq!(tag, b'v');
        prop_assert_eq!(i32::from_be_bytes(body[0..4].try_into().unwrap()), minor);
        prop_assert_eq!(i32::from_be_bytes(body[4..8].try_into().unwrap()) as usize, names.len());
        let mut rest = &body[8..];
        for n in &names {
            let (got, after) = read::cstr(rest).unwrap();
            prop_assert_eq!(got, n.as_bytes());
            rest = after;
        }
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn frontend_writers_round_trip(sql in any::<String>(), mech in cstring(20), data in spicy_bytes(64), pw in any::<String>()) {
        let large = 1 << 20;
        let mut b = BytesMut::new();
        write::query(&mut b, &sql);
        prop_assert_eq!(frame::peek_frontend(&b, large), Ok(Some(Header { tag: b'Q', total_len: b.len() })));
        let (_, body) = one_frame(&b);
        prop_assert_eq!(read::query_text(&body), Some(cut_at_nul(&sql)));

        let mut b = BytesMut::new();
        write::sasl_initial_response(&mut b, &mech, &data);
        let (tag, body) = one_frame(&b);
        prop_assert_eq!(tag, fe::PASSWORD);
        prop_assert_eq!(read::sasl_initial_response(&body), Some((mech.as_str(), &data[..])));

        let mut b = BytesMut::new();
        write::sasl_response(&mut b, &data);
        prop_assert_eq!(one_frame(&b), (fe::PASSWORD, data.clone()));

        let mut b = BytesMut::new();
        write::password_message(&mut b, &pw);
        let (tag, body) = one_frame(&b);
        prop_assert_eq!(tag, fe::PASSWORD);
        prop_assert_eq!(read::cstr(&body), Some((cut_at_nul(&pw).as_bytes(), &b""[..])));

        let mut b = BytesMut::new();
        write::terminate(&mut b);
        prop_assert_eq!(frame::peek_frontend(&b, large), Ok(Some(Header { tag: b'X', total_len: 5 })));
        prop_assert_eq!(one_frame(&b), (b'X', vec![]));
    }
}

// ---------------------------------------------------------------------------
// SCRAM
// ---------------------------------------------------------------------------

fn verifier(salt: &[u8], iterations: u32, pw: &str) -> Verifier {
    Verifier::from_password(pw, salt, iterations)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Strings shaped like verifiers, with random damage.
fn verifier_like() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just(String::new()),
        (1usize..64).prop_map(|n| b64(&vec![7u8; n])),
        Just(b64(&[1u8; 32])),
        "[0-9]{0,12}",
        "[ -~]{0,16}",
    ];
    (part.clone(), part.clone(), part.clone(), part, "(SCRAM-SHA-256|scram-sha-256|)", "[$:]{0,2}")
        .prop_map(|(a, b, c, d, prefix, junk)| format!("{prefix}${a}:{b}${c}:{d}{junk}"))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn verifier_parse_total(s in prop_oneof![any::<String>(), verifier_like()]) {
        if let Ok(v) = Verifier::parse(&s) {
            prop_assert!((1..=MAX_ITERATIONS).contains(&v.iterations));
            prop_assert!(!v.salt.is_empty() && v.salt.len() <= 256);
        }
    }

    #[test]
    fn verifier_display_round_trips(
        iterations in 1..=MAX_ITERATIONS,
        salt in prop::collection::vec(any::<u8>(), 1..=256),
        stored in any::<[u8; 32]>(),
        server in any::<[u8; 32]>(),
    ) {
        let v = Verifier { iterations, salt: salt.clone(), stored_key: stored, server_key: server };
        let p = Verifier::parse(&v.to_string()).expect("own output parses");
        prop_assert_eq!(p.iterations, iterations);
        prop_assert_eq!(p.salt, salt);
        prop_assert_eq!(p.stored_key, stored);
        prop_assert_eq!(p.server_key, server);
    }

    #[test]
    fn server_exchange_client_first_total(msg in prop_oneof![spicy_bytes(128), "[nyp]=?,(a=[a-z]*)?,(n=[a-z]*)?,?(r=[!-~]{0,10})?(,[a-z]=[a-z]*){0,2}".prop_map(String::into_bytes)]) {
        let mut ex = ServerExchange::new(Verifier::dummy("u", b"secret"));
        if let Ok(first) = ex.client_first(&msg) {
            prop_assert!(first.starts_with(b"r="));
        }
        // A second client_first is always out of order.
        prop_assert_eq!(ex.client_first(b"n,,n=,r=abc").err(), Some(ScramError::InvalidState));
        prop_assert!(ex.client_key().is_none());
    }

    /// Any client-final that is not the right proof fails, never panics,
    /// and ends the exchange.
    #[test]
    fn server_exchange_client_final_total(
        msg in prop_oneof![
            spicy_bytes(200),
            (spicy_bytes(30), "[A-Za-z0-9+/=]{0,48}").prop_map(|(mid, p)| {
                let mut m = b"c=biws,r=".to_vec();
                m.extend_from_slice(&mid);
                m.extend_from_slice(b",p=");
                m.extend_from_slice(p.as_bytes());
                m
            }),
        ],
    ) {
        let mut ex = ServerExchange::new(Verifier::dummy("u", b"secret"));
        ex.client_first(b"n,,n=,r=clientnonce").expect("valid client-first");
        prop_assert!(ex.client_final(&msg).is_err());
        prop_assert!(ex.client_key().is_none());
        prop_assert_eq!(ex.client_final(&msg).err(), Some(ScramError::InvalidState));
    }

    /// A full exchange with ClientExchange: the right password succeeds and
    /// both sides agree; a wrong password or any altered client-final fails.
    #[test]
    fn scram_exchange_round_trip(
        password in "[ -~]{0,20}",
        wrong in "[ -~]{0,20}",
        salt in prop::collection::vec(any::<u8>(), 1..32),
        iterations in 1u32..8,
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let v = verifier(&salt, iterations, &password);

        // Right password.
        let mut server = ServerExchange::new(v.clone());
        let mut client = ClientExchange::new(ClientSecret::Password(password.clone()));
        let sf = server.client_first(&client.client_first()).expect("client-first");
        let cf = client.server_first(&sf).expect("server-first");
        let fin = server.client_final(&cf).expect("right password accepted");
        client.server_final(&fin).expect("server signature verifies");
        let key = server.client_key().expect("client key");

        // Pass-through with the recovered key against the same verifier.
        let mut server2 = ServerExchange::new(v.clone());
        let mut client2 = ClientExchange::new(ClientSecret::from_verifier(&v, key));
        let sf = server2.client_first(&client2.client_first()).unwrap();
        let cf2 = client2.server_first(&sf).unwrap();
        let fin = server2.client_final(&cf2).expect("pass-through accepted");
        client2.server_final(&fin).unwrap();

        // Wrong password.
        if wrong != password {
            let mut server = ServerExchange::new(v.clone());
            let mut client = ClientExchange::new(ClientSecret::Password(wrong));
            let sf = server.client_first(&client.client_first()).unwrap();
            let cf = client.server_first(&sf).unwrap();
            prop_assert_eq!(server.client_final(&cf).err(), Some(ScramError::BadProof));
        }

        // One flipped bit anywhere in a correct client-final fails.
        let mut server = ServerExchange::new(v.clone());
        let mut client = ClientExchange::new(ClientSecret::Password(password));
        let sf = server.client_first(&client.client_first()).unwrap();
        let mut cf = client.server_first(&sf).unwrap();
        let i = flip.index(cf.len());
        cf[i] ^= 1 << bit;
        prop_assert!(server.client_final(&cf).is_err(), "altered client-final accepted: {:?}", String::from_utf8_lossy(&cf));
    }

    /// The client side against arbitrary server messages: never panics; a
    /// server-first with a forged nonce or huge iteration count is refused.
    #[test]
    fn client_exchange_total(
        msg in spicy_bytes(200),
        suffix in "[!-+\\--~]{1,20}",
        iters in prop_oneof![0u64..20, Just(MAX_ITERATIONS as u64 + 1), Just(u64::MAX)],
        fin in spicy_bytes(80),
    ) {
        let mut c = ClientExchange::new(ClientSecret::Password("pw".into()));
        let _ = c.server_first(&msg);
        let _ = c.server_final(&fin);

        let mut c = ClientExchange::new(ClientSecret::Password("pw".into()));
        let first = c.client_first();
        let nonce = std::str::from_utf8(&first).unwrap().strip_prefix("n,,n=,r=").unwrap().to_owned();
        let sf = format!("r={nonce}{suffix},s={},i={iters}", b64(b"salt"));
        let r = c.server_first(sf.as_bytes());
        if (1..=20).contains(&iters) {
            prop_assert!(r.is_ok(), "{:?}", r);
            let _ = c.server_final(&fin); // random: almost surely fails, never panics
        } else {
            prop_assert_eq!(r.err(), Some(ScramError::Malformed("bad iteration count")));
        }
        // A nonce that does not extend ours.
        let mut c = ClientExchange::new(ClientSecret::Password("pw".into()));
        let sf = format!("r=x{suffix},s={},i=1", b64(b"salt"));
        prop_assert_eq!(c.server_first(sf.as_bytes()).err(), Some(ScramError::NonceMismatch));
    }
}
