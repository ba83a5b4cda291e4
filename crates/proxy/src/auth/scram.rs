//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it: pure state
//! machines, no I/O. The caller moves the bytes in and out of SASL messages.
//!
//! [`ServerExchange`] authenticates a client against a stored [`Verifier`];
//! [`ClientExchange`] authenticates pgbalancer to PostgreSQL with a password or,
//! for pass-through (as PgBouncer does), with the ClientKey that a
//! `ServerExchange` recovered from the client plus the verifier's ServerKey.
//!
//! * Channel binding `tls-server-end-point` (RFC 5929) on the server side,
//!   as PostgreSQL: see [`ChannelBinding`]. GS2 flag `p=` is accepted only
//!   when the client chose `SCRAM-SHA-256-PLUS`; `y` is refused when the
//!   server offered it (a downgrade). The client side sends `n`.
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
/// The mechanism with channel binding, offered over TLS.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel binding type PostgreSQL (and pgbalancer) supports.
pub const CHANNEL_BINDING_TYPE: &str = "tls-server-end-point";
/// Longest channel binding data (a SHA-512 hash).
const MAX_CHANNEL_BINDING_LEN: usize = 64;
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
    /// `p=` with a type other than `tls-server-end-point`.
    #[error("unsupported SCRAM channel-binding type")]
    UnsupportedChannelBindingType,
    /// The client chose `SCRAM-SHA-256-PLUS` but sent `n` or `y`.
    #[error("the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data")]
    ChannelBindingRequired,
    /// The client chose `SCRAM-SHA-256` but sent `p=`.
    #[error("the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data")]
    ChannelBindingUnexpected,
    /// `y`: the client supports channel binding and thinks the server does
    /// not, but the server offered it: someone removed it on the way.
    #[error("SCRAM channel binding negotiation error")]
    ChannelBindingDowngrade,
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
    let n = s.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    (1..=u64::from(MAX_ITERATIONS)).contains(&n).then_some(n as u32)
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
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or(Bad("not SCRAM-SHA-256"))?;
        let (params, keys) = rest.split_once('$').ok_or(Bad("missing keys"))?;
        let (iter, salt) = params.split_once(':').ok_or(Bad("missing salt"))?;
        let (stored, server) = keys.split_once(':').ok_or(Bad("missing server key"))?;
        Ok(Verifier {
            iterations: parse_iterations(iter.as_bytes()).ok_or(Bad("bad iteration count"))?,
            salt: b64_decode(salt.as_bytes(), MAX_SALT_LEN).filter(|s| !s.is_empty()).ok_or(Bad("bad salt"))?,
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
        Verifier { iterations, salt: salt.to_vec(), stored_key, server_key }
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
    (hmac(&salted, &[b"Client Key"]), hmac(&salted, &[b"Server Key"]))
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

/// Channel binding for one server exchange: what was offered, and what
/// the client chose.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// Not offered (plaintext, or a certificate whose hash RFC 5929 does
    /// not define): `n` and `y` are fine, `p=` is refused.
    Unsupported,
    /// `SCRAM-SHA-256-PLUS` was offered and the client chose
    /// `SCRAM-SHA-256`: `n` is fine, `y` is a downgrade, `p=` is refused.
    NotUsed,
    /// The client chose `SCRAM-SHA-256-PLUS`: it must send
    /// `p=tls-server-end-point` and this data (the hash of pgbalancer's
    /// certificate) in `c=`.
    Used(Vec<u8>),
}

impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChannelBinding::Unsupported => "Unsupported",
            ChannelBinding::NotUsed => "NotUsed",
            ChannelBinding::Used(_) => "Used(..)",
        })
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
    binding: ChannelBinding,
    state: ServerState,
}

impl ServerExchange {
    /// Starts an exchange without channel binding, with a random 18-byte
    /// (24 base64 characters) server nonce.
    pub fn new(verifier: Verifier) -> Self {
        Self::with_nonce(verifier, random_nonce())
    }

    /// Starts an exchange with channel binding as offered and chosen.
    pub fn with_channel_binding(verifier: Verifier, binding: ChannelBinding) -> Self {
        let mut ex = Self::with_nonce(verifier, random_nonce());
        ex.binding = binding;
        ex
    }

    pub(crate) fn with_nonce(verifier: Verifier, server_nonce: String) -> Self {
        ServerExchange { verifier, server_nonce, binding: ChannelBinding::Unsupported, state: ServerState::Initial }
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
        // As PostgreSQL's read_client_first_message.
        match (flag, &self.binding) {
            (b"n", ChannelBinding::Used(_)) | (b"y", ChannelBinding::Used(_)) => {
                return Err(ScramError::ChannelBindingRequired)
            }
            (b"y", ChannelBinding::NotUsed) => return Err(ScramError::ChannelBindingDowngrade),
            (b"n" | b"y", _) => {}
            ([b'p', b'=', name @ ..], ChannelBinding::Used(_)) => {
                if name != CHANNEL_BINDING_TYPE.as_bytes() {
                    return Err(ScramError::UnsupportedChannelBindingType);
                }
            }
            ([b'p', b'=', ..], ChannelBinding::NotUsed) => return Err(ScramError::ChannelBindingUnexpected),
            ([b'p', b'=', ..], ChannelBinding::Unsupported) => return Err(ScramError::UnsupportedChannelBinding),
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
        self.state = ServerState::SentFirst { gs2_header, nonce, auth_prefix };
        Ok(server_first)
    }

    /// Takes the client-final-message (the SASLResponse data), checks channel
    /// binding, nonce and proof (in constant time), and returns the
    /// server-final-message `v=<ServerSignature>` for AuthenticationSASLFinal.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::SentFirst { gs2_header, nonce, auth_prefix } =
            std::mem::replace(&mut self.state, ServerState::Failed)
        else {
            return Err(ScramError::InvalidState);
        };
        check_message(msg)?;
        // c=<b64 gs2-header> "," r=<nonce> ["," extensions] "," p=<b64 proof>
        let last = msg.iter().rposition(|&b| b == b',').ok_or(Malformed("missing proof"))?;
        let (without_proof, proof) = (&msg[..last], &msg[last + 1..]);
        let proof = attr(Some(proof), b'p', "missing proof")?;
        let mut fields = split_commas(without_proof);
        let cbind = attr(fields.next(), b'c', "missing channel binding")?;
        let their_nonce = attr(fields.next(), b'r', "missing nonce")?;
        check_extensions(fields)?;
        // c= is base64(gs2-header + channel binding data); the data only
        // with p=, where it must be the hash of our certificate.
        let cbind = b64_decode(cbind, gs2_header.len() + MAX_CHANNEL_BINDING_LEN)
            .ok_or(Malformed("bad channel binding encoding"))?;
        let data: &[u8] = match &self.binding {
            ChannelBinding::Used(d) => d,
            _ => &[],
        };
        let expected = [&gs2_header[..], data].concat();
        if !bool::from(cbind.ct_eq(&expected)) {
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
    Keys { client_key: [u8; 32], server_key: [u8; 32], salt: Vec<u8>, iterations: u32 },
}

impl ClientSecret {
    /// Pass-through secret from a verifier and a ClientKey proven against it.
    pub fn from_verifier(v: &Verifier, client_key: [u8; 32]) -> Self {
        let (server_key, salt, iterations) = (v.server_key, v.salt.clone(), v.iterations);
        ClientSecret::Keys { client_key, server_key, salt, iterations }
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
        ClientExchange { secret, nonce, client_first_bare, state: ClientState::Initial }
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
            ClientSecret::Keys { client_key, server_key, salt: s, iterations: i } => {
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
        let ClientState::SentFinal { server_signature } = std::mem::replace(&mut self.state, ClientState::Failed)
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

    /// The server proved it knows the verifier (its final signature checked).
    pub fn is_done(&self) -> bool {
        matches!(self.state, ClientState::Done)
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
    KNOWN.split(' ').find(|k| k.as_bytes() == e).unwrap_or("other-error")
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
