//! Unit tests of the SCRAM exchanges (RFC 7677 vectors, round trips,
//! tampering, random input).
use super::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use ScramError::*;

// RFC 7677 section 3 test vector (user "user", password "pencil").
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn pw(p: &str) -> ClientSecret {
    ClientSecret::Password(p.into())
}

/// Low iteration count keeps the many exchanges below fast.
fn cheap(password: &str) -> Verifier {
    Verifier::from_password(password, b"0123456789abcdef", 16)
}

/// Runs an exchange up to the client-final-message.
fn start(v: &Verifier, secret: ClientSecret) -> (ServerExchange, ClientExchange, Vec<u8>) {
    let (mut s, mut c) = (ServerExchange::new(v.clone()), ClientExchange::new(secret));
    let server_first = s.client_first(&c.client_first()).unwrap();
    let client_final = c.server_first(&server_first).unwrap();
    (s, c, client_final)
}

/// A full exchange; returns the server's recovered ClientKey.
fn run(v: &Verifier, secret: ClientSecret) -> Result<[u8; 32], ScramError> {
    let (mut s, mut c, client_final) = start(v, secret);
    c.server_final(&s.client_final(&client_final)?)?;
    Ok(s.client_key().unwrap())
}

#[test]
fn rfc7677_vector() {
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let v = Verifier::from_password("pencil", &salt, 4096);
    let mut s = ServerExchange::with_nonce(v.clone(), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into());
    let out = s.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
    assert_eq!(out, RFC_SERVER_FIRST.as_bytes());
    let out = s.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(out, RFC_SERVER_FINAL.as_bytes());
    let client_key = s.client_key().unwrap();

    // Client side, with the password and with the recovered keys alike.
    for secret in [pw("pencil"), ClientSecret::from_verifier(&v, client_key)] {
        let mut c = ClientExchange::with_nonce(secret, "user", "rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(c.client_first(), RFC_CLIENT_FIRST.as_bytes());
        let out = c.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(out, RFC_CLIENT_FINAL.as_bytes());
        c.server_final(RFC_SERVER_FINAL.as_bytes()).unwrap();
        assert_eq!(c.server_final(RFC_SERVER_FINAL.as_bytes()), Err(InvalidState));
    }
}

#[test]
fn round_trips_and_pass_through() {
    let v = Verifier::generate("correct horse");
    assert_eq!((v.iterations, v.salt.len()), (4096, 16));
    let client_key = run(&v, pw("correct horse")).unwrap();
    assert_eq!(sha256(&client_key), v.stored_key);
    // Pass-through: the recovered key logs in to a second server on the same verifier.
    assert_eq!(run(&v, ClientSecret::from_verifier(&v, client_key)), Ok(client_key));
    assert_eq!(run(&v, pw("wrong horse")), Err(BadProof));

    // It cannot work against a server whose salt or iterations differ.
    let keys = ClientSecret::from_verifier(&v, client_key);
    let others = [cheap("correct horse"), Verifier::from_password("x", &v.salt, 4097)];
    for other in others {
        let mut s = ServerExchange::new(other);
        let mut c = ClientExchange::new(keys.clone());
        let server_first = s.client_first(&c.client_first()).unwrap();
        assert_eq!(c.server_first(&server_first), Err(ServerVerifierMismatch));
    }
}

#[test]
fn dummy_verifier() {
    let a = Verifier::dummy("nobody", b"secret");
    let b = Verifier::dummy("nobody", b"secret");
    assert_eq!((&a.salt, a.stored_key, a.server_key), (&b.salt, b.stored_key, b.server_key));
    assert_eq!((a.iterations, a.salt.len()), (4096, 16));
    assert_ne!(a.salt, Verifier::dummy("somebody", b"secret").salt);
    assert_ne!(a.salt, Verifier::dummy("nobody", b"other").salt);
    assert!(Verifier::parse(&a.to_string()).is_ok());
    assert_eq!(run(&a, pw("guess")), Err(BadProof));
}

#[test]
fn tampering_is_detected() {
    let v = cheap("pw");
    let (mut s, _, client_final) = start(&v, pw("pw"));
    let text = String::from_utf8(client_final.clone()).unwrap();
    let tampered = text.replacen(",p=", "X,p=", 1);
    assert_eq!(s.client_final(tampered.as_bytes()), Err(NonceMismatch));
    assert_eq!(s.client_final(&client_final), Err(InvalidState)); // dead after an error

    let (mut s, mut c, mut client_final) = start(&v, pw("pw"));
    let n = client_final.len() - 3;
    client_final[n] = if client_final[n] == b'A' { b'B' } else { b'A' };
    assert_eq!(s.client_final(&client_final), Err(BadProof));
    assert_eq!(s.client_key(), None);
    let forged = format!("v={}", B64.encode([7u8; 32]));
    assert_eq!(c.server_final(forged.as_bytes()), Err(ServerSignatureMismatch));

    let (_, mut c, _) = start(&v, pw("pw"));
    let e = c.server_final(b"e=invalid-proof");
    assert_eq!(e, Err(ServerError("invalid-proof")));

    // The server nonce must extend the client's.
    for server_first in ["r=abcdefXYZ,s=c2FsdA==,i=16", "r=NONCE,s=c2FsdA==,i=16"] {
        let mut c = ClientExchange::with_nonce(pw("pw"), "", "NONCE".into());
        assert_eq!(c.server_first(server_first.as_bytes()), Err(NonceMismatch));
    }

    // c= must repeat the client's own GS2 header ("y,," here, "n,," in c=biws).
    let mut s = ServerExchange::new(v);
    let mut c = ClientExchange::new(pw("pw"));
    let client_first = [b"y", &c.client_first()[1..]].concat();
    let client_final = c.server_first(&s.client_first(&client_first).unwrap()).unwrap();
    assert_eq!(s.client_final(&client_final), Err(ChannelBindingMismatch));
}

#[test]
fn server_parses_client_first() {
    let v = cheap("pw");
    let first = |m: &str| ServerExchange::new(v.clone()).client_first(m.as_bytes());
    assert!(first("n,,n=,r=abc").is_ok());
    assert!(first("y,,n=someone,r=abc").is_ok());
    assert!(first("n,,n=user,r=abc,x=ignored").is_ok());
    let p = "p=tls-server-end-point,,n=,r=abc";
    assert_eq!(first(p), Err(UnsupportedChannelBinding));
    assert_eq!(first("n,a=admin,n=,r=abc"), Err(UnsupportedAuthzid));
    assert_eq!(first("n,,m=ext,n=,r=abc"), Err(UnsupportedExtension));
    assert_eq!(first("n,,n=,r=abc,m=x"), Err(UnsupportedExtension));
    let bad = "\nn\nn,\nn,,\nn,,r=abc\nn,,n=,r=\nx,,n=,r=a\nn,,n=,r=a b\nn,,n=,r=a,=x\nn,,n=,r=a\0";
    for m in bad.split('\n') {
        assert!(matches!(first(m), Err(Malformed(_))), "{m:?}");
    }
}

#[test]
fn client_parses_server_first() {
    let first = |m: &str| {
        let mut c = ClientExchange::with_nonce(pw("pw"), "", "NONCE".into());
        c.server_first(m.as_bytes())
    };
    assert!(first("r=NONCEx,s=c2FsdA==,i=16,z=ext").is_ok());
    assert_eq!(first("m=x,r=NONCEx,s=c2FsdA==,i=16"), Err(UnsupportedExtension));
    let bad = "r=NONCEx,s=c2FsdA==,i=0
        r=NONCEx,s=c2FsdA==,i=10000001
        r=NONCEx,s=c2FsdA==,i=+4096
        r=NONCEx,s=c2FsdA==,i=4096x
        r=NONCEx,s=,i=16
        r=NONCEx,s=***,i=16
        r=NONCEx,i=16,s=c2FsdA==
        r=NONCEx,s=c2FsdA==
        r=NONCE\x01x,s=c2FsdA==,i=16";
    for m in bad.lines().map(str::trim) {
        assert!(matches!(first(m), Err(Malformed(_))), "{m:?}");
    }
}

#[test]
fn out_of_order_calls() {
    let mut s = ServerExchange::new(cheap("pw"));
    assert_eq!(s.client_final(b"c=biws,r=a,p=b"), Err(InvalidState));
    let mut s = ServerExchange::new(cheap("pw"));
    s.client_first(b"n,,n=,r=abc").unwrap();
    assert_eq!(s.client_first(b"n,,n=,r=abc"), Err(InvalidState));
    let mut c = ClientExchange::new(pw("pw"));
    assert_eq!(c.server_final(b"v=abc"), Err(InvalidState));
}

#[test]
fn verifier_parse_print() {
    let v = cheap("pw");
    let text = v.to_string();
    assert!(text.starts_with("SCRAM-SHA-256$16:MDEyMzQ1Njc4OWFiY2RlZg==$"), "{text}");
    let p = Verifier::parse(&text).unwrap();
    assert_eq!((p.iterations, &p.salt), (v.iterations, &v.salt));
    assert_eq!((p.stored_key, p.server_key), (v.stored_key, v.server_key));
    assert_eq!(p.to_string(), text);
    let debug = format!("{v:?} {:?} {:?}", pw("hunter2"), ServerExchange::new(v.clone()));
    assert!(!debug.contains(&B64.encode(v.stored_key)) && !debug.contains("hunter2"));

    let key = B64.encode([1u8; 32]);
    let with = |it: &str, salt: &str| format!("SCRAM-SHA-256${it}:{salt}${key}:{key}");
    assert!(Verifier::parse(&with("1", "c2FsdA==")).is_ok());
    assert!(Verifier::parse(&with("10000000", "c2FsdA==")).is_ok());
    let mut bad: Vec<String> =
        ["0", "10000001", "+4096", "-1", "", "99999999999999999999"].iter().map(|it| with(it, "c2FsdA==")).collect();
    for salt in ["", "c2FsdA", "c2FsdA=!", "c2FsdB==", &B64.encode([0u8; 300])] {
        bad.push(with("4096", salt));
    }
    let short = B64.encode([1u8; 31]);
    bad.extend([
        format!("SCRAM-SHA-256$4096:c2FsdA==${short}:{key}"),
        format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{key}:"),
        format!("SCRAM-SHA-256$4096:c2FsdA==${key}"),
        format!("SCRAM-SHA-1$4096:c2FsdA==${key}:{key}"),
        "md5abcdef".into(),
    ]);
    for b in &bad {
        assert!(matches!(Verifier::parse(b), Err(InvalidVerifier(_))), "{b}");
    }
}

fn mutate(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b",=nrpcsivmae+/0189AZaz \0\xff";
    let byte = |rng: &mut StdRng| match rng.gen_bool(0.5) {
        true => rng.gen(),
        false => ALPHABET[rng.gen_range(0..ALPHABET.len())],
    };
    if rng.gen_ratio(1, 20) {
        return (0..rng.gen_range(0..80)).map(|_| byte(rng)).collect();
    }
    let mut m = base.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        let pos = rng.gen_range(0..=m.len());
        match rng.gen_range(0..5) {
            0 if pos < m.len() => m[pos] = byte(rng),
            1 => m.insert(pos, byte(rng)),
            2 if pos < m.len() => drop(m.remove(pos)),
            3 => m.truncate(pos),
            _ => {
                let chunk = m[pos..rng.gen_range(pos..=m.len())].to_vec();
                m.splice(pos..pos, chunk);
            }
        }
    }
    m
}

/// 10k random or mutated inputs to every parser: none may panic.
#[test]
fn parsers_are_total() {
    let mut rng = StdRng::seed_from_u64(0x005c_4a4d);
    let v = cheap("pw");
    let client_key = password_keys("pw", &v.salt, 16).0;
    let keys = ClientSecret::from_verifier(&v, client_key); // no PBKDF2 per input
    let new_server = || ServerExchange::with_nonce(v.clone(), "srv".into());
    let new_client = || ClientExchange::with_nonce(keys.clone(), "", "cnonce".into());
    let (mut s, mut c) = (new_server(), new_client());
    let client_first = c.client_first();
    let server_first = s.client_first(&client_first).unwrap();
    let client_final = c.server_first(&server_first).unwrap();
    let server_final = s.client_final(&client_final).unwrap();
    c.server_final(&server_final).unwrap();
    let text = v.to_string();

    for _ in 0..10_000 {
        let m = mutate(&mut rng, text.as_bytes());
        if let Ok(p) = Verifier::parse(&String::from_utf8_lossy(&m)) {
            assert!(Verifier::parse(&p.to_string()).is_ok());
        }
        let _ = new_server().client_first(&mutate(&mut rng, &client_first));
        // Whatever changes in a signed message must make the exchange fail.
        let (mut s, m) = (new_server(), mutate(&mut rng, &client_final));
        s.client_first(&client_first).unwrap();
        assert!(s.client_final(&m).is_err() || m == client_final, "{m:?}");
        let (mut c, m) = (new_client(), mutate(&mut rng, &server_first));
        if c.server_first(&m).is_ok() {
            let m2 = mutate(&mut rng, &server_final);
            let same = m == server_first && m2 == server_final;
            assert!(c.server_final(&m2).is_err() || same, "{m:?} {m2:?}");
        }
    }
}

/// A client-final-message for `gs2` (the GS2 header) and channel binding
/// `data`, with the proof of `password` (what libpq computes).
fn cbind_final(password: &str, v: &Verifier, client_first: &str, server_first: &[u8], data: &[u8]) -> Vec<u8> {
    let bare = client_first.splitn(3, ',').nth(2).unwrap();
    let gs2 = &client_first[..client_first.len() - bare.len()];
    let nonce = std::str::from_utf8(server_first).unwrap().split(',').next().unwrap();
    let cbind = B64.encode([gs2.as_bytes(), data].concat());
    let without_proof = format!("c={cbind},{nonce}");
    let auth_message = [bare.as_bytes(), b",", server_first, b",", without_proof.as_bytes()].concat();
    let (client_key, _) = password_keys(password, &v.salt, v.iterations);
    let proof = xor32(&client_key, &hmac(&sha256(&client_key), &[&auth_message]));
    format!("{without_proof},p={}", B64.encode(proof)).into_bytes()
}

#[test]
fn channel_binding_tls_server_end_point() {
    let v = cheap("pw");
    let data = [0x5a; 32];
    let first = "p=tls-server-end-point,,n=,r=clientnonce";
    let used = || ServerExchange::with_channel_binding(v.clone(), ChannelBinding::Used(data.to_vec()));

    // The right data: success, with the ClientKey for pass-through.
    let mut s = used();
    let server_first = s.client_first(first.as_bytes()).unwrap();
    let fin = cbind_final("pw", &v, first, &server_first, &data);
    assert!(s.client_final(&fin).is_ok());
    assert!(s.client_key().is_some());

    // Data of another certificate (a man in the middle): refused before
    // the proof is even looked at, whatever the password.
    let mut s = used();
    let server_first = s.client_first(first.as_bytes()).unwrap();
    let fin = cbind_final("pw", &v, first, &server_first, &[0x5b; 32]);
    assert_eq!(s.client_final(&fin), Err(ChannelBindingMismatch));
    // No data at all after p=.
    let mut s = used();
    let server_first = s.client_first(first.as_bytes()).unwrap();
    let fin = cbind_final("pw", &v, first, &server_first, b"");
    assert_eq!(s.client_final(&fin), Err(ChannelBindingMismatch));

    // Negotiation, as PostgreSQL.
    let first_with = |b: ChannelBinding, m: &str| {
        ServerExchange::with_channel_binding(v.clone(), b).client_first(m.as_bytes()).map(drop)
    };
    use ChannelBinding::*;
    assert_eq!(first_with(Used(data.to_vec()), "n,,n=,r=a"), Err(ChannelBindingRequired));
    assert_eq!(first_with(Used(data.to_vec()), "y,,n=,r=a"), Err(ChannelBindingRequired));
    assert_eq!(first_with(Used(data.to_vec()), "p=tls-unique,,n=,r=a"), Err(UnsupportedChannelBindingType));
    assert_eq!(first_with(NotUsed, "y,,n=,r=a"), Err(ChannelBindingDowngrade));
    assert_eq!(first_with(NotUsed, "n,,n=,r=a"), Ok(()));
    assert_eq!(first_with(NotUsed, first), Err(ChannelBindingUnexpected));
    assert_eq!(first_with(Unsupported, "y,,n=,r=a"), Ok(()));
    assert_eq!(first_with(Unsupported, first), Err(UnsupportedChannelBinding));

    // Without channel binding, c= must be exactly the GS2 header.
    let mut s = ServerExchange::with_channel_binding(v.clone(), NotUsed);
    let server_first = s.client_first(b"n,,n=,r=abc").unwrap();
    let fin = cbind_final("pw", &v, "n,,n=,r=abc", &server_first, &data);
    assert_eq!(s.client_final(&fin), Err(ChannelBindingMismatch));
    let mut s = ServerExchange::with_channel_binding(v.clone(), NotUsed);
    let server_first = s.client_first(b"n,,n=,r=abc").unwrap();
    let fin = cbind_final("pw", &v, "n,,n=,r=abc", &server_first, b"");
    assert!(s.client_final(&fin).is_ok());
}
