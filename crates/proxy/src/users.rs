//! Where client credentials come from: the config's `users`, a
//! `users_file` (PgBouncer's `userlist.txt` format), and, for users in
//! neither, PostgreSQL itself through `auth_query` run as `auth_user`.
//! Configured secrets are turned into verifiers once per load (never per
//! login); looked-up ones are fetched at every login (not cached, so a
//! changed or expired password takes effect at once).
//!
//! Also held here, swapped whole on reload: the hba rules.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use pgbalancer_config::{is_md5_hash, Config};

use crate::auth::scram::Verifier;
use crate::hba::Rules;
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::{be, read, TxStatus};
use crate::server::{ServerConn, ServerLogin, ServerSecret};
use crate::Shared;

/// A user's stored secret.
#[derive(Clone)]
pub(crate) enum Secret {
    /// A SCRAM verifier: SCRAM only (md5 is answered with SCRAM, as
    /// PostgreSQL does); servers are logged in to with the client's proof.
    Scram(Verifier),
    /// An md5 hash (`md5` + hex(md5(password + user))): md5 only; servers
    /// that ask for md5 are answered from it.
    Md5(String),
    /// The password itself, with a verifier made from it at load.
    Plain { password: String, verifier: Verifier },
}

impl Secret {
    /// Classifies a stored password: a SCRAM verifier (checked), an md5
    /// hash, or plaintext.
    ///
    /// A plaintext password gets a verifier whose salt is the one an unknown
    /// user of that name would be shown (`Verifier::dummy` under
    /// `dummy_secret`): stable across reloads, so the salt tells nothing
    /// about whether the name is configured.
    pub fn parse(stored: &str, user: &str, dummy_secret: &[u8]) -> Result<Secret, String> {
        if stored.starts_with("SCRAM-SHA-256$") {
            Verifier::parse(stored).map(Secret::Scram).map_err(|e| e.to_string())
        } else if is_md5_hash(stored) {
            // PostgreSQL writes lower case; compare in that form.
            Ok(Secret::Md5(stored.to_ascii_lowercase()))
        } else {
            let salt = Verifier::dummy(user, dummy_secret).salt;
            let verifier = Verifier::from_password(stored, &salt, crate::auth::scram::DEFAULT_ITERATIONS);
            Ok(Secret::Plain { password: stored.to_owned(), verifier })
        }
    }

    /// How servers can be logged in to with this secret alone (no client
    /// proof): the password, or the md5 hash for servers that ask for md5.
    pub fn server_secret(&self) -> Option<ServerSecret> {
        match self {
            Secret::Plain { password, .. } => Some(ServerSecret::Password(password.clone())),
            Secret::Md5(h) => Some(ServerSecret::Md5Hash(h.clone())),
            Secret::Scram(_) => None,
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Scram(_) => "Scram(..)",
            Secret::Md5(_) => "Md5(..)",
            Secret::Plain { .. } => "Plain(..)",
        })
    }
}

pub(crate) struct UserDb {
    /// Users with a secret, from `users` and `users_file`.
    pub users: HashMap<String, Secret>,
    /// Secret behind the fake verifiers of unknown users.
    pub dummy_secret: [u8; 32],
    /// `hba` / `hba_file`; None = `auth_type` for everyone.
    pub hba: Option<Rules>,
    /// `auth_user` + `auth_query`, when configured.
    pub lookup: Option<AuthQuery>,
}

/// A users, users_file or hba problem found at start or reload; names the
/// key (and file and line).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

impl UserDb {
    /// `dummy_secret` must stay the same for the life of the process (a
    /// reload keeps it): a fake verifier whose salt changed between two
    /// logins would give an unknown user away.
    pub fn from_config(config: &Config, dummy_secret: [u8; 32]) -> Result<UserDb, UserError> {
        let mut users = HashMap::new();
        for (index, u) in config.users.iter().enumerate() {
            let Some(pw) = &u.password else { continue };
            let secret = Secret::parse(pw, &u.name, &dummy_secret)
                .map_err(|m| UserError(format!("users[{index}].password: {m}")))?;
            users.insert(u.name.clone(), secret);
        }
        if let Some(path) = &config.users_file {
            let at = |m: String| UserError(format!("users_file: {}: {m}", path.display()));
            let text = std::fs::read_to_string(path).map_err(|e| at(format!("cannot read: {e}")))?;
            let mut seen = std::collections::HashSet::new();
            for (line, name, password) in parse_userlist(&text).map_err(at)? {
                if !seen.insert(name.clone()) {
                    return Err(at(format!("line {line}: user \"{name}\" is listed twice")));
                }
                if password.is_empty() {
                    continue;
                }
                if users.contains_key(&name) {
                    return Err(at(format!("line {line}: user \"{name}\" also has a password in users; keep one")));
                }
                let secret =
                    Secret::parse(&password, &name, &dummy_secret).map_err(|m| at(format!("line {line}: {m}")))?;
                users.insert(name, secret);
            }
        }
        let hba = Rules::from_config(config).map_err(UserError)?;
        let lookup = match &config.auth_user {
            Some(auth_user) => {
                let secret = match users.get(auth_user) {
                    None => ServerSecret::None,
                    Some(s) => s.server_secret().ok_or_else(|| {
                        UserError(format!(
                            "auth_user: '{auth_user}' has a SCRAM verifier, which cannot log in to PostgreSQL; \
                             give its password in plaintext (users_file, chmod 600) or an md5 hash"
                        ))
                    })?,
                };
                let login = ServerLogin { user: auth_user.clone(), database: config.auth_dbname.clone(), secret };
                Some(AuthQuery::new(login, config.auth_query.clone()))
            }
            None => None,
        };
        Ok(UserDb { users, dummy_secret, hba, lookup })
    }
}

/// Parses PgBouncer's `userlist.txt`: one `"name" "password"` per line,
/// `""` inside quotes is one `"`; blank lines and lines starting with `;`
/// or `#` are skipped. Returns (line number, name, password); an empty
/// password means none. Anything else is an error naming the line.
pub(crate) fn parse_userlist(text: &str) -> Result<Vec<(usize, String, String)>, String> {
    fn quoted(s: &str) -> Option<(String, &str)> {
        let mut out = String::new();
        let mut chars = s.strip_prefix('"')?.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' if chars.peek().map(|p| p.1) == Some('"') => {
                    chars.next();
                    out.push('"');
                }
                '"' => return Some((out, &s[1 + i + 1..])),
                c => out.push(c),
            }
        }
        None
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let bad = || format!("line {n}: expected \"user\" \"password\"");
        let (name, rest) = quoted(line).ok_or_else(bad)?;
        let (password, rest) = quoted(rest.trim_start()).ok_or_else(bad)?;
        let rest = rest.trim();
        if !(rest.is_empty() || rest.starts_with('#') || rest.starts_with(';')) {
            return Err(bad());
        }
        if name.is_empty() {
            return Err(format!("line {n}: empty user name"));
        }
        out.push((n, name, password));
    }
    Ok(out)
}

/// Looks users up in PostgreSQL: `auth_query` with the user name as `$1`
/// (extended protocol, a parameter, never pasted into the text), run as
/// `auth_user` on connections of its own that no client ever gets, with
/// `search_path` pinned to `pg_catalog, pg_temp` when each is opened.
pub(crate) struct AuthQuery {
    login: ServerLogin,
    query: String,
    idle: Mutex<Vec<(usize, Box<ServerConn>)>>,
    /// Lookups at once (each holds one connection).
    permits: tokio::sync::Semaphore,
}

/// Lookup connections per proxy.
const LOOKUP_CONNECTIONS: usize = 4;
/// Largest message a lookup reads (a row with a name and a verifier).
const LOOKUP_MESSAGE_CAP: usize = 64 * 1024;

impl AuthQuery {
    fn new(login: ServerLogin, query: String) -> AuthQuery {
        AuthQuery {
            login,
            query,
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(LOOKUP_CONNECTIONS),
        }
    }

    /// The auth user's name (for logs).
    pub fn user(&self) -> &str {
        &self.login.user
    }

    /// The stored password of `user`: None when the query returns no row,
    /// or NULL (an expired role with the default query). Errors are about
    /// the lookup itself (connection, permissions, a bad query) and say
    /// nothing about the user.
    pub async fn lookup(&self, shared: &Shared, user: &str) -> Result<Option<String>, String> {
        let _permit = self.permits.acquire().await.map_err(|_| "lookups closed".to_owned())?;
        let config = shared.config.load_full();
        let timeout = config.server_connect_timeout;
        let node = lookup_node(shared);
        let mut conn = match self.idle_conn(node, config.server_idle_timeout) {
            Some(c) => c,
            None => {
                let n = &shared.topology.nodes()[node];
                let tls = shared.tls.backend();
                let mut c = ServerConn::connect_tls(&n.host, n.port, &tls, &self.login, timeout)
                    .await
                    .map_err(|e| format!("cannot connect as auth_user \"{}\": {e}", self.login.user))?;
                let pin = tokio::time::timeout(timeout, c.run_own_query("SET search_path = pg_catalog, pg_temp"));
                match pin.await {
                    Ok(Ok(None)) => {}
                    Ok(Ok(Some(e))) => return Err(format!("SET search_path: {}", e.message.unwrap_or_default())),
                    Ok(Err(e)) => return Err(format!("SET search_path: {e}")),
                    Err(_) => return Err("SET search_path timed out".into()),
                }
                c
            }
        };
        let result = match tokio::time::timeout(timeout, run_lookup(&mut conn, &self.query, user)).await {
            Ok(r) => r,
            Err(_) => Err(Broken("auth_query timed out (server_connect_timeout)".into())),
        };
        match result {
            Ok(found) => {
                if conn.tx_status == TxStatus::Idle {
                    conn.last_used = Instant::now();
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).push((node, conn));
                }
                found
            }
            // The connection is in an unknown state: dropped.
            Err(Broken(e)) => Err(e),
        }
    }

    /// An idle lookup connection to `node` that is still good.
    fn idle_conn(&self, node: usize, max_idle: Duration) -> Option<Box<ServerConn>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((n, mut c)) = idle.pop() {
            let fresh = max_idle.is_zero() || c.last_used.elapsed() < max_idle;
            if n == node && fresh && c.is_quiet() {
                return Some(c);
            }
        }
        None
    }
}

/// Where lookups run: the primary, else the first usable node (roles are
/// replicated), else the first node.
fn lookup_node(shared: &Shared) -> usize {
    let t = &shared.topology;
    t.primary().ok().or_else(|| t.nodes().iter().position(|n| n.usable())).unwrap_or(0)
}

/// The connection cannot be reused after this.
struct Broken(String);

/// Runs the lookup on `conn`: Parse/Bind/Execute/Sync with one text
/// parameter. Ok(Err(..)) is a query error after which the connection is
/// still usable (the server sent ReadyForQuery).
async fn run_lookup(conn: &mut ServerConn, query: &str, user: &str) -> Result<Result<Option<String>, String>, Broken> {
    let mut out = BytesMut::new();
    let msg = |out: &mut BytesMut, tag: u8, body: &dyn Fn(&mut BytesMut)| {
        out.put_u8(tag);
        let at = out.len();
        out.put_i32(0);
        body(out);
        let len = (out.len() - at) as i32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    };
    msg(&mut out, b'P', &|b| {
        b.put_u8(0); // unnamed statement
        b.put_slice(query.as_bytes());
        b.put_u8(0);
        b.put_i16(1);
        b.put_i32(0); // parameter type: let the server infer it
    });
    msg(&mut out, b'B', &|b| {
        b.put_u8(0); // unnamed portal
        b.put_u8(0); // unnamed statement
        b.put_i16(0); // parameters in text
        b.put_i16(1);
        b.put_i32(user.len() as i32);
        b.put_slice(user.as_bytes());
        b.put_i16(0); // results in text
    });
    msg(&mut out, b'E', &|b| {
        b.put_u8(0);
        b.put_i32(0);
    });
    msg(&mut out, b'S', &|_| {});
    conn.write_all(&out).await.map_err(|e| Broken(format!("auth_query: {e}")))?;

    let mut rows = 0usize;
    let mut first: Option<Option<String>> = None;
    let mut error: Option<String> = None;
    loop {
        let (tag, body) = read_message(conn).await?;
        match tag {
            be::DATA_ROW => {
                rows += 1;
                if rows == 1 {
                    let cols = read::data_row(&body).ok_or_else(|| Broken("auth_query: bad DataRow".into()))?;
                    if cols.len() < 2 {
                        error = Some("auth_query must return two columns (name, password)".into());
                    }
                    first = Some(cols.into_iter().nth(1).flatten());
                }
            }
            be::ERROR_RESPONSE => {
                let e = read::ErrorFields::parse(&body);
                error.get_or_insert(format!(
                    "auth_query failed: {} ({})",
                    e.message.unwrap_or_default(),
                    e.code.unwrap_or_default()
                ));
            }
            be::READY_FOR_QUERY => {
                conn.tx_status = body
                    .first()
                    .copied()
                    .and_then(TxStatus::from_byte)
                    .ok_or_else(|| Broken("auth_query: bad ReadyForQuery".into()))?;
                break;
            }
            be::COPY_IN_RESPONSE | be::COPY_OUT_RESPONSE | be::COPY_BOTH_RESPONSE => {
                return Err(Broken("auth_query started a COPY".into()))
            }
            // ParseComplete, BindComplete, CommandComplete, notices,
            // ParameterStatus, notifications.
            _ => {}
        }
    }
    if let Some(e) = error {
        return Ok(Err(e));
    }
    if rows > 1 {
        return Ok(Err(format!("auth_query returned {rows} rows for one user; it must return at most one")));
    }
    Ok(Ok(first.flatten()))
}

/// One whole message of at most [`LOOKUP_MESSAGE_CAP`] bytes.
async fn read_message(conn: &mut ServerConn) -> Result<(u8, BytesMut), Broken> {
    loop {
        let n = conn.buffered();
        let header = frame::peek_header(conn.buffered_bytes(0..n), LOOKUP_MESSAGE_CAP)
            .map_err(|e| Broken(format!("auth_query: {e}")))?;
        if let Some(h) = header {
            if n >= h.total_len {
                let mut m = conn.take(h.total_len);
                let _ = m.split_to(HEADER_LEN);
                return Ok((h.tag, m));
            }
        }
        conn.fill().await.map_err(|e| Broken(format!("auth_query: {e}")))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userlist_format() {
        let text = "; PgBouncer userlist\n\
                    # also a comment\n\
                    \n\
                    \"app\" \"SCRAM-SHA-256$4096:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n\
                    \"md5user\"   \"md5a3556571e93b0d20722ba62be61e8c2d\"\n\
                    \"quo\"\"te\" \"pa ss\"\"word\"  ; trailing comment\n\
                    \"nopass\" \"\"\n";
        let u = parse_userlist(text).unwrap();
        let names: Vec<&str> = u.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(names, ["app", "md5user", "quo\"te", "nopass"]);
        assert_eq!(u[2].2, "pa ss\"word");
        assert_eq!(u[2].0, 6);
        assert_eq!(u[3].2, "");
        assert!(matches!(Secret::parse(&u[0].2, "a", b"k"), Ok(Secret::Scram(_))));
        assert!(matches!(Secret::parse(&u[1].2, "b", b"k"), Ok(Secret::Md5(_))));
        assert!(matches!(Secret::parse(&u[2].2, "c", b"k"), Ok(Secret::Plain { .. })));
        for (bad, line) in [
            ("app \"pw\"\n", 1),
            ("\n\"app\" pw\n", 2),
            ("\"app\" \"pw\" extra\n", 1),
            ("\"app\n", 1),
            ("\"app\" \"pw\n", 1),
            ("\"\" \"pw\"\n", 1),
        ] {
            let e = parse_userlist(bad).expect_err(bad);
            assert!(e.starts_with(&format!("line {line}: ")), "{bad:?}: {e}");
        }
        assert!(Secret::parse("SCRAM-SHA-256$bad", "u", b"k").is_err());
        // A plaintext password's salt is an unknown user's salt: stable, and
        // no different from what an unconfigured name is shown.
        let Ok(Secret::Plain { verifier, .. }) = Secret::parse("pw", "u", b"k") else { panic!("plain") };
        assert_eq!(verifier.salt, Verifier::dummy("u", b"k").salt);
        let Ok(Secret::Plain { verifier: again, .. }) = Secret::parse("pw", "u", b"k") else { panic!("plain") };
        assert_eq!(verifier.stored_key, again.stored_key);
    }

    #[test]
    fn users_file_and_users_merge() {
        let dir = tempdir();
        let path = dir.join("userlist.txt");
        std::fs::write(&path, "\"a\" \"pw-a\"\n\"b\" \"md5a3556571e93b0d20722ba62be61e8c2d\"\n\"c\" \"\"\n").unwrap();
        let mut c = Config { users_file: Some(path.clone()), ..Config::default() };
        c.users.push(pgbalancer_config::UserEntry { name: "y".into(), password: Some("pw-y".into()) });
        let db = UserDb::from_config(&c, [0; 32]).unwrap();
        assert!(matches!(db.users.get("a"), Some(Secret::Plain { .. })));
        assert!(matches!(db.users.get("b"), Some(Secret::Md5(_))));
        assert!(!db.users.contains_key("c"), "an empty password is none");
        assert!(db.users.contains_key("y"));
        c.users.push(pgbalancer_config::UserEntry { name: "a".into(), password: Some("other".into()) });
        let e = UserDb::from_config(&c, [0; 32]).err().expect("a in both").to_string();
        assert!(e.contains("line 1: user \"a\" also has a password in users"), "{e}");
        // auth_user with a SCRAM verifier cannot log in to PostgreSQL.
        let c = Config {
            users: vec![pgbalancer_config::UserEntry {
                name: "auth".into(),
                password: Some(Verifier::generate("x").to_string()),
            }],
            auth_user: Some("auth".into()),
            ..Config::default()
        };
        let e = UserDb::from_config(&c, [0; 32]).err().expect("SCRAM auth_user").to_string();
        assert!(e.starts_with("auth_user: 'auth' has a SCRAM verifier"), "{e}");
        let missing = Config { users_file: Some(dir.join("missing")), ..Config::default() };
        let e = UserDb::from_config(&missing, [0; 32]).err().expect("missing file").to_string();
        assert!(e.starts_with("users_file: ") && e.contains("cannot read"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pgb-users-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
