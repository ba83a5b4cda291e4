//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it: pure state
//! machines, no I/O. The caller moves the bytes in and out of SASL messages.
//!
//! [`ServerExchange`] authenticates a client against a stored [`Verifier`];
//! [`ClientExchange`] authenticates pgbalancer to PostgreSQL with a password or,
//! for pass-through (as PgBouncer does), with the ClientKey that a
//! `ServerExchange` recovered from the client plus the verifier's ServerKey.
//!
//! * No channel binding: GS2 flag `p=` is refused; `n` and `y` are accepted.
//! * No authzid (`a=`), no mandatory extensions (`m=`); other extensions are
//!   ignored, as PostgreSQL does. The `n=` username is ignored (PostgreSQL uses
//!   the startup-message user).
//! * Passwords are not SASLprep-normalised: their UTF-8 bytes are used as is,
//!   which equals SASLprep for printable-ASCII passwords. Passwords SASLprep
//!   would change (NFKC, non-ASCII spaces, ...) get a different key than
//!   PostgreSQL derives.
//! * Parsers are total (any bytes give `Ok` or `Err`, never a panic) and
//!   allocate at most in proportion to their input. Any error ends an exchange:
//!   later calls return `InvalidState`.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Iterations used by [`Verifier::generate`] and [`Verifier::dummy`] (PostgreSQL's default).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Largest iteration count accepted from a verifier or a server.
pub const MAX_ITERATIONS: u32 = 10_000_000;
const MAX_SALT_LEN: usize = 256; // bytes, from a verifier or a server
const MAX_MESSAGE_LEN: usize = 4096; // the caller caps at 1024 anyway
const NONCE_LEN: usize = 18; // random bytes, sent as 24 base64 characters
const SALT_LEN: usize = 16;
const DUMMY_LABEL: &[u8] = b"pgbalancer scram dummy ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("SCRAM exchange step out of order or after an error")]
    InvalidState,
    #[error("SCRAM channel binding is not supported")]
    UnsupportedChannelBinding,
    #[error("SCRAM channel binding does not match the GS2 header")]
    ChannelBindingMismatch,
    #[error("SCRAM authorization identity (a=) is not supported")]
    UnsupportedAuthzid,
    #[error("unsupported mandatory SCRAM extension (m=)")]
    UnsupportedExtension,
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    #[error("SCRAM client proof is invalid")]
    BadProof,
    #[error("invalid SCRAM verifier: {0}")]
    InvalidVerifier(&'static str),
    #[error("SCRAM server signature does not match")]
    ServerSignatureMismatch,
    #[error("server's SCRAM salt/iterations differ from our verifier: no pass-through")]
    ServerVerifierMismatch,
    #[error("server reported SCRAM error: {0}")]
    ServerError(&'static str),
}
use ScramError::Malformed;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn random_nonce() -> String {
    let mut buf = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut buf);
    B64.encode(buf)
}

/// Standard padded base64 of at most `max` bytes.
fn b64_decode(input: &[u8], max: usize) -> Option<Vec<u8>> {
    if input.len() > max.div_ceil(3) * 4 {
        return None;
    }
    B64.decode(input).ok()
}

/// Standard padded base64 of exactly 32 bytes.
fn b64_32(input: &[u8]) -> Option<[u8; 32]> {
    b64_decode(input, 32)?.try_into().ok()
}

/// Decimal digits only (no sign, no spaces), value in `1..=MAX_ITERATIONS`.
fn parse_iterations(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = s
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    (1..=u64::from(MAX_ITERATIONS))
        .contains(&n)
        .then_some(n as u32)
}

fn check_message(msg: &[u8]) -> Result<(), ScramError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(Malformed("message too long"));
    }
    if msg.contains(&0) {
        return Err(Malformed("NUL byte in message"));
    }
    Ok(())
}

fn split_commas(msg: &[u8]) -> impl Iterator<Item = &[u8]> {
    msg.split(|&b| b == b',')
}

/// The value of field `name=value`.
fn attr<'a>(field: Option<&'a [u8]>, name: u8, err: &'static str) -> Result<&'a [u8], ScramError> {
    match field {
        Some([n, b'=', value @ ..]) if *n == name => Ok(value),
        _ => Err(Malformed(err)),
    }
}

/// Trailing optional extensions (`x=value`) are checked for syntax and ignored.
fn check_extensions<'a>(fields: impl Iterator<Item = &'a [u8]>) -> Result<(), ScramError> {
    for field in fields {
        match field {
            [b'm', b'=', ..] => return Err(ScramError::UnsupportedExtension),
            [n, b'=', ..] if n.is_ascii_alphabetic() => {}
            _ => return Err(Malformed("bad attribute")),
        }
    }
    Ok(())
}

/// Nonce: one or more printable ASCII characters other than ','.
fn check_nonce(n: &[u8]) -> Result<(), ScramError> {
    let ok = !n.is_empty() && n.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b',');
    ok.then_some(()).ok_or(Malformed("bad nonce"))
}

/// A stored verifier, as in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>`.
#[derive(Clone)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl Verifier {
    /// Parses a verifier. Iterations must be in `1..=MAX_ITERATIONS`, the salt
    /// 1 to 256 bytes, the keys 32 bytes, all in canonical padded base64.
    pub fn parse(s: &str) -> Result<Verifier, ScramError> {
        use ScramError::InvalidVerifier as Bad;
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(Bad("not SCRAM-SHA-256"))?;
        let (params, keys) = rest.split_once('$').ok_or(Bad("missing keys"))?;
        let (iter, salt) = params.split_once(':').ok_or(Bad("missing salt"))?;
        let (stored, server) = keys.split_once(':').ok_or(Bad("missing server key"))?;
        Ok(Verifier {
            iterations: parse_iterations(iter.as_bytes()).ok_or(Bad("bad iteration count"))?,
            salt: b64_decode(salt.as_bytes(), MAX_SALT_LEN)
                .filter(|s| !s.is_empty())
                .ok_or(Bad("bad salt"))?,
            stored_key: b64_32(stored.as_bytes()).ok_or(Bad("bad stored key"))?,
            server_key: b64_32(server.as_bytes()).ok_or(Bad("bad server key"))?,
        })
    }

    /// SaltedPassword = Hi(password, salt, i) = PBKDF2-HMAC-SHA-256;
    /// StoredKey = H(HMAC(SaltedPassword, "Client Key")); ServerKey =
    /// HMAC(SaltedPassword, "Server Key"). No SASLprep (see the module docs).
    /// 0 iterations are taken as 1 (Hi needs at least one).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let iterations = iterations.max(1);
        let (client_key, server_key) = password_keys(password, salt, iterations);
        let stored_key = sha256(&client_key);
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key,
            server_key,
        }
    }

    /// A fresh verifier: random 16-byte salt, 4096 iterations.
    pub fn generate(password: &str) -> Verifier {
        let mut salt = [0u8; SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        Verifier::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// A deterministic fake verifier for a user that does not exist, so that
    /// the exchange looks the same (same salt each time, 4096 iterations) and
    /// fails like a wrong password (`BadProof`). Salt and keys are HMACs of the
    /// username under `secret`, which should be random per deployment and
    /// stable across restarts. No password matches the keys.
    pub fn dummy(username: &str, secret: &[u8]) -> Verifier {
        let derive = |label: &[u8]| hmac(secret, &[DUMMY_LABEL, label, username.as_bytes()]);
        Verifier {
            iterations: DEFAULT_ITERATIONS,
            salt: derive(b"salt\0")[..SALT_LEN].to_vec(),
            stored_key: derive(b"stored key\0"),
            server_key: derive(b"server key\0"),
        }
    }
}

/// (ClientKey, ServerKey) for a password.
fn password_keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations);
    (
        hmac(&salted, &[b"Client Key"]),
        hmac(&salted, &[b"Server Key"]),
    )
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (i, salt) = (self.iterations, B64.encode(&self.salt));
        let (stored, server) = (B64.encode(self.stored_key), B64.encode(self.server_key));
        write!(f, "{MECHANISM}${i}:{salt}${stored}:{server}")
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (i, n) = (self.iterations, self.salt.len());
        write!(f, "Verifier {{ iterations: {i}, salt_len: {n}, .. }}")
    }
}

enum ServerState {
    Initial,
    /// `auth_prefix` = client-first-message-bare "," server-first-message ",".
    SentFirst {
        gs2_header: Vec<u8>,
        nonce: Vec<u8>,
        auth_prefix: Vec<u8>,
    },
    Done {
        client_key: [u8; 32],
    },
    Failed,
}

/// Server side of one SCRAM exchange (pgbalancer authenticating a client).
pub struct ServerExchange {
    verifier: Verifier,
    server_nonce: String,
    state: ServerState,
}

impl ServerExchange {
    /// Starts an exchange with a random 18-byte (24 base64 characters) server nonce.
    pub fn new(verifier: Verifier) -> Self {
        Self::with_nonce(verifier, random_nonce())
    }

    pub(crate) fn with_nonce(verifier: Verifier, server_nonce: String) -> Self {
        ServerExchange {
            verifier,
            server_nonce,
            state: ServerState::Initial,
        }
    }

    /// Takes the client-first-message (the SASLInitialResponse data) and returns
    /// the server-first-message to send in AuthenticationSASLContinue.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::Initial = std::mem::replace(&mut self.state, ServerState::Failed) else {
            return Err(ScramError::InvalidState);
        };
        check_message(msg)?;
        // gs2-header = ("n" / "y" / "p=" cb-name) "," [authzid] ","
        let mut parts = msg.splitn(3, |&b| b == b',');
        let (flag, authzid) = (parts.next().unwrap_or_default(), parts.next());
        let bare = parts.next().ok_or(Malformed("missing GS2 header"))?;
        match flag {
            b"n" | b"y" => {}
            [b'p', b'=', ..] => return Err(ScramError::UnsupportedChannelBinding),
            _ => return Err(Malformed("bad channel binding flag")),
        }
        match authzid.unwrap_or_default() {
            [] => {}
            [b'a', b'=', ..] => return Err(ScramError::UnsupportedAuthzid),
            _ => return Err(Malformed("bad authzid")),
        }
        let gs2_header = &msg[..msg.len() - bare.len()];
        let mut fields = split_commas(bare);
        let user = fields.next();
        if let Some([b'm', b'=', ..]) = user {
            return Err(ScramError::UnsupportedExtension);
        }
        attr(user, b'n', "missing username")?; // ignored, may be empty
        let client_nonce = attr(fields.next(), b'r', "missing nonce")?;
        check_nonce(client_nonce)?;
        check_extensions(fields)?;

        let nonce = [client_nonce, self.server_nonce.as_bytes()].concat();
        let (salt, iterations) = (B64.encode(&self.verifier.salt), self.verifier.iterations);
        let params = format!(",s={salt},i={iterations}");
        let server_first = [b"r=", &nonce[..], params.as_bytes()].concat();
        let auth_prefix = [bare, b",", &server_first, b","].concat();
        let gs2_header = gs2_header.to_vec();
        self.state = ServerState::SentFirst {
            gs2_header,
            nonce,
            auth_prefix,
        };
        Ok(server_first)
    }

    /// Takes the client-final-message (the SASLResponse data), checks channel
    /// binding, nonce and proof (in constant time), and returns the
    /// server-final-message `v=<ServerSignature>` for AuthenticationSASLFinal.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::SentFirst {
            gs2_header,
            nonce,
            auth_prefix,
        } = std::mem::replace(&mut self.state, ServerState::Failed)
        else {
            return Err(ScramError::InvalidState);
        };
        check_message(msg)?;
        // c=<b64 gs2-header> "," r=<nonce> ["," extensions] "," p=<b64 proof>
        let last = msg
            .iter()
            .rposition(|&b| b == b',')
            .ok_or(Malformed("missing proof"))?;
        let (without_proof, proof) = (&msg[..last], &msg[last + 1..]);
        let proof = attr(Some(proof), b'p', "missing proof")?;
        let mut fields = split_commas(without_proof);
        let cbind = attr(fields.next(), b'c', "missing channel binding")?;
        let their_nonce = attr(fields.next(), b'r', "missing nonce")?;
        check_extensions(fields)?;
        let cbind = b64_decode(cbind, 64).ok_or(Malformed("bad channel binding encoding"))?;
        if cbind != gs2_header {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if their_nonce != nonce {
            return Err(ScramError::NonceMismatch);
        }
        let proof = b64_32(proof).ok_or(Malformed("bad proof encoding"))?;

        let auth_message = [&auth_prefix[..], without_proof].concat();
        let client_key = xor32(&proof, &hmac(&self.verifier.stored_key, &[&auth_message]));
        if !bool::from(sha256(&client_key).ct_eq(&self.verifier.stored_key)) {
            return Err(ScramError::BadProof);
        }
        let signature = hmac(&self.verifier.server_key, &[&auth_message]);
        self.state = ServerState::Done { client_key };
        Ok(format!("v={}", B64.encode(signature)).into_bytes())
    }

    /// After a successful `client_final`: the client's ClientKey (= proof XOR
    /// ClientSignature), for logging in to a PostgreSQL that holds the same
    /// verifier (see [`ClientSecret::from_verifier`]).
    pub fn client_key(&self) -> Option<[u8; 32]> {
        match self.state {
            ServerState::Done { client_key } => Some(client_key),
            _ => None,
        }
    }
}

impl fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerExchange { .. }")
    }
}

/// What pgbalancer authenticates to PostgreSQL with.
#[derive(Clone)]
pub enum ClientSecret {
    /// A plaintext password (not SASLprep-normalised, see the module docs).
    Password(String),
    /// Pass-through: a ClientKey recovered by [`ServerExchange::client_key`] and
    /// the ServerKey, salt and iterations of the verifier it was checked
    /// against. The server must use the same salt and iterations (hold the
    /// same verifier), else `ServerVerifierMismatch`.
    Keys {
        client_key: [u8; 32],
        server_key: [u8; 32],
        salt: Vec<u8>,
        iterations: u32,
    },
}

impl ClientSecret {
    /// Pass-through secret from a verifier and a ClientKey proven against it.
    pub fn from_verifier(v: &Verifier, client_key: [u8; 32]) -> Self {
        let (server_key, salt, iterations) = (v.server_key, v.salt.clone(), v.iterations);
        ClientSecret::Keys {
            client_key,
            server_key,
            salt,
            iterations,
        }
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientSecret::Password(_) => "Password(..)",
            ClientSecret::Keys { .. } => "Keys { .. }",
        })
    }
}

enum ClientState {
    Initial,
    SentFinal { server_signature: [u8; 32] },
    Done,
    Failed,
}

/// Client side of one SCRAM exchange (pgbalancer authenticating to PostgreSQL).
pub struct ClientExchange {
    secret: ClientSecret,
    nonce: String,
    client_first_bare: String,
    state: ClientState,
}

impl ClientExchange {
    /// Starts an exchange with a random 18-byte (24 base64 characters) nonce.
    pub fn new(secret: ClientSecret) -> Self {
        Self::with_nonce(secret, "", random_nonce())
    }

    /// `user` goes into `n=` verbatim (PostgreSQL ignores it; tests use RFC vectors).
    pub(crate) fn with_nonce(secret: ClientSecret, user: &str, nonce: String) -> Self {
        let client_first_bare = format!("n={user},r={nonce}");
        ClientExchange {
            secret,
            nonce,
            client_first_bare,
            state: ClientState::Initial,
        }
    }

    /// The client-first-message `n,,n=,r=<nonce>`: the SASLInitialResponse data.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Takes the server-first-message (the AuthenticationSASLContinue data) and
    /// returns the client-final-message to send in SASLResponse.
    pub fn server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ClientState::Initial = std::mem::replace(&mut self.state, ClientState::Failed) else {
            return Err(ScramError::InvalidState);
        };
        check_message(msg)?;
        let mut fields = split_commas(msg);
        let first = fields.next();
        if let Some([b'm', b'=', ..]) = first {
            return Err(ScramError::UnsupportedExtension);
        }
        let nonce = attr(first, b'r', "missing nonce")?;
        check_nonce(nonce)?;
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(self.nonce.as_bytes()) {
            return Err(ScramError::NonceMismatch);
        }
        let salt = attr(fields.next(), b's', "missing salt")?;
        let salt = b64_decode(salt, MAX_SALT_LEN).filter(|s| !s.is_empty());
        let salt = salt.ok_or(Malformed("bad salt"))?;
        let iterations = attr(fields.next(), b'i', "missing iteration count")?;
        let iterations = parse_iterations(iterations).ok_or(Malformed("bad iteration count"))?;
        check_extensions(fields)?;

        let (client_key, server_key) = match &self.secret {
            ClientSecret::Password(password) => password_keys(password, &salt, iterations),
            ClientSecret::Keys {
                client_key,
                server_key,
                salt: s,
                iterations: i,
            } => {
                if *s != salt || *i != iterations {
                    return Err(ScramError::ServerVerifierMismatch);
                }
                (*client_key, *server_key)
            }
        };
        let mut reply = [b"c=biws,r=", nonce].concat(); // biws = base64("n,,")
        let auth_message = [self.client_first_bare.as_bytes(), b",", msg, b",", &reply].concat();
        let proof = xor32(&client_key, &hmac(&sha256(&client_key), &[&auth_message]));
        reply.extend_from_slice(format!(",p={}", B64.encode(proof)).as_bytes());
        let server_signature = hmac(&server_key, &[&auth_message]);
        self.state = ClientState::SentFinal { server_signature };
        Ok(reply)
    }

    /// Takes the server-final-message (the AuthenticationSASLFinal data) and
    /// checks the server's signature in constant time. Authentication succeeded
    /// only if this returns `Ok`.
    pub fn server_final(&mut self, msg: &[u8]) -> Result<(), ScramError> {
        let ClientState::SentFinal { server_signature } =
            std::mem::replace(&mut self.state, ClientState::Failed)
        else {
            return Err(ScramError::InvalidState);
        };
        check_message(msg)?;
        let mut fields = split_commas(msg);
        let first = fields.next().unwrap_or_default();
        if let Some(e) = first.strip_prefix(b"e=") {
            return Err(ScramError::ServerError(server_error_name(e)));
        }
        let signature = attr(Some(first), b'v', "missing server signature")?;
        let signature = b64_32(signature).ok_or(Malformed("bad server signature encoding"))?;
        check_extensions(fields)?;
        if !bool::from(signature.ct_eq(&server_signature)) {
            return Err(ScramError::ServerSignatureMismatch);
        }
        self.state = ClientState::Done;
        Ok(())
    }
}

impl fmt::Debug for ClientExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientExchange { .. }")
    }
}

/// An RFC 5802 server-error-value as a static name; unknown ones are "other-error".
fn server_error_name(e: &[u8]) -> &'static str {
    const KNOWN: &str = "invalid-encoding extensions-not-supported invalid-proof \
        channel-bindings-dont-match server-does-support-channel-binding \
        channel-binding-not-supported unsupported-channel-binding-type unknown-user \
        invalid-username-encoding no-resources";
    KNOWN
        .split(' ')
        .find(|k| k.as_bytes() == e)
        .unwrap_or("other-error")
}

#[cfg(test)]
mod tests {
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
            assert_eq!(
                c.server_final(RFC_SERVER_FINAL.as_bytes()),
                Err(InvalidState)
            );
        }
    }

    #[test]
    fn round_trips_and_pass_through() {
        let v = Verifier::generate("correct horse");
        assert_eq!((v.iterations, v.salt.len()), (4096, 16));
        let client_key = run(&v, pw("correct horse")).unwrap();
        assert_eq!(sha256(&client_key), v.stored_key);
        // Pass-through: the recovered key logs in to a second server on the same verifier.
        assert_eq!(
            run(&v, ClientSecret::from_verifier(&v, client_key)),
            Ok(client_key)
        );
        assert_eq!(run(&v, pw("wrong horse")), Err(BadProof));

        // It cannot work against a server whose salt or iterations differ.
        let keys = ClientSecret::from_verifier(&v, client_key);
        let others = [
            cheap("correct horse"),
            Verifier::from_password("x", &v.salt, 4097),
        ];
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
        assert_eq!(
            (&a.salt, a.stored_key, a.server_key),
            (&b.salt, b.stored_key, b.server_key)
        );
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
        assert_eq!(
            c.server_final(forged.as_bytes()),
            Err(ServerSignatureMismatch)
        );

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
        let client_final = c
            .server_first(&s.client_first(&client_first).unwrap())
            .unwrap();
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
        let bad =
            "\nn\nn,\nn,,\nn,,r=abc\nn,,n=,r=\nx,,n=,r=a\nn,,n=,r=a b\nn,,n=,r=a,=x\nn,,n=,r=a\0";
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
        assert_eq!(
            first("m=x,r=NONCEx,s=c2FsdA==,i=16"),
            Err(UnsupportedExtension)
        );
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
        assert!(
            text.starts_with("SCRAM-SHA-256$16:MDEyMzQ1Njc4OWFiY2RlZg==$"),
            "{text}"
        );
        let p = Verifier::parse(&text).unwrap();
        assert_eq!((p.iterations, &p.salt), (v.iterations, &v.salt));
        assert_eq!((p.stored_key, p.server_key), (v.stored_key, v.server_key));
        assert_eq!(p.to_string(), text);
        let debug = format!(
            "{v:?} {:?} {:?}",
            pw("hunter2"),
            ServerExchange::new(v.clone())
        );
        assert!(!debug.contains(&B64.encode(v.stored_key)) && !debug.contains("hunter2"));

        let key = B64.encode([1u8; 32]);
        let with = |it: &str, salt: &str| format!("SCRAM-SHA-256${it}:{salt}${key}:{key}");
        assert!(Verifier::parse(&with("1", "c2FsdA==")).is_ok());
        assert!(Verifier::parse(&with("10000000", "c2FsdA==")).is_ok());
        let mut bad: Vec<String> = ["0", "10000001", "+4096", "-1", "", "99999999999999999999"]
            .iter()
            .map(|it| with(it, "c2FsdA=="))
            .collect();
        for salt in [
            "",
            "c2FsdA",
            "c2FsdA=!",
            "c2FsdB==",
            &B64.encode([0u8; 300]),
        ] {
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
}
