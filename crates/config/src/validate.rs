//! Semantic checks (all problems at once) and warnings.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::{
    AuthType, BackendRole, BackendSslMode, ByteSize, ClientSslMode, Config, HbaEntry, HbaType, JwtAlgorithm, Problem,
    ReadYourWrites, SecretRef,
};

/// Upper bound for every duration key (keeps `Instant + Duration` far from overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86400);
/// Minimum length of `rest_api.jwt_secret` (inline ones are checked here;
/// ones from a file or a variable when the admin API reads them).
pub const MIN_JWT_SECRET_LEN: usize = 32;

/// Every problem in `c`, in key order.
pub(crate) fn problems(c: &Config) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut bad = |key: &str, msg: String| p.push(Problem::new(key, msg));

    if c.listen_addresses.trim().is_empty() {
        bad("listen_addresses", "must not be empty (use '*' for all addresses)".into());
    } else if c.listen_addresses.split(',').any(|h| h.trim().is_empty()) {
        bad("listen_addresses", format!("empty host in '{}'", c.listen_addresses));
    }
    if c.pool_size < 1 {
        bad("pool_size", "must be at least 1".into());
    }
    if c.min_pool_size > c.pool_size {
        bad("min_pool_size", format!("must not exceed pool_size ({} > {})", c.min_pool_size, c.pool_size));
    }
    if c.max_client_conn < 1 {
        bad("max_client_conn", "must be at least 1".into());
    }

    let mut names = HashSet::new();
    let passwords_from_users_only = passwords_from_users_only(c);
    for (i, u) in c.users.iter().enumerate() {
        if u.name.is_empty() {
            bad(&format!("users[{i}].name"), "must not be empty".into());
        } else if !names.insert(u.name.as_str()) {
            bad(&format!("users[{i}].name"), format!("duplicate user '{}'", u.name));
        }
        match &u.password {
            None if passwords_from_users_only => bad(
                &format!("users[{i}].password"),
                format!(
                    "required with auth_type {} (unless it can come from users_file or auth_user, or hba rules \
                     choose the method)",
                    c.auth_type
                ),
            ),
            Some(pw) if pw.is_empty() => bad(&format!("users[{i}].password"), "must not be empty".into()),
            Some(pw) if pw.starts_with("SCRAM-SHA-256$") => {
                if let Err(why) = check_scram_verifier(pw) {
                    bad(&format!("users[{i}].password"), format!("malformed SCRAM verifier: {why}"));
                }
            }
            _ => {}
        }
    }

    for (key, list) in [("admin_users", &c.admin_users), ("stats_users", &c.stats_users)] {
        for (i, name) in list.iter().enumerate() {
            if name.is_empty() {
                bad(&format!("{key}[{i}]"), "must not be empty".into());
            } else if passwords_from_users_only && !c.users.iter().any(|u| &u.name == name) {
                bad(&format!("{key}[{i}]"), format!("'{name}' is not in users (its password is read from there)"));
            } else if c.user(name).and_then(|u| u.password.as_deref()).is_some_and(is_md5_hash) {
                // POST /api/v1/auth/login checks users[].password as a
                // verifier or a plaintext password: a hash would be a
                // password anyone holding the hash could send.
                bad(
                    &format!("{key}[{i}]"),
                    format!("'{name}' has an md5 hash in users, which the admin API login cannot check; use a SCRAM verifier"),
                );
            }
        }
    }

    auth_problems(c, &mut bad);

    if c.backends.is_empty() {
        bad("backends", "at least one backend is required".into());
    } else if c.backends.len() > MAX_BACKENDS {
        bad("backends", format!("at most {MAX_BACKENDS} backends are supported (got {})", c.backends.len()));
    }
    let mut primaries = 0;
    let mut seen = HashSet::new();
    for (i, b) in c.backends.iter().enumerate() {
        if b.host.trim().is_empty() {
            bad(&format!("backends[{i}].host"), "must not be empty".into());
        } else if !seen.insert((b.host.as_str(), b.port)) {
            bad(&format!("backends[{i}]"), format!("duplicate backend {}:{}", b.host, b.port));
        }
        if b.port == 0 {
            bad(&format!("backends[{i}].port"), "must not be 0".into());
        }
        if b.role == BackendRole::Primary {
            primaries += 1;
            if primaries == 2 {
                bad(&format!("backends[{i}].role"), "more than one backend has role primary".into());
            }
        }
    }

    if c.server_user.as_deref() == Some("") {
        bad("server_user", "must not be empty (omit it to use the client's user name)".into());
    }
    if let Some(s) = &c.server_password {
        check_secret(&mut bad, "server_password", s);
    }
    match &c.server_password_file {
        Some(_) if c.server_password.is_some() => {
            bad("server_password_file", "conflicts with server_password; set only one of them".into())
        }
        Some(f) if f.as_os_str().is_empty() => bad("server_password_file", "must not be empty".into()),
        _ => {}
    }

    let durations = [
        ("query_wait_timeout", c.query_wait_timeout),
        ("server_idle_timeout", c.server_idle_timeout),
        ("server_lifetime", c.server_lifetime),
        ("client_idle_timeout", c.client_idle_timeout),
        ("idle_transaction_timeout", c.idle_transaction_timeout),
        ("client_login_timeout", c.client_login_timeout),
        ("server_connect_timeout", c.server_connect_timeout),
        ("server_login_retry", c.server_login_retry),
        ("shutdown_timeout", c.shutdown_timeout),
        ("health_check_period", c.health_check_period),
        ("health_check_timeout", c.health_check_timeout),
        ("health_check_retry_delay", c.health_check_retry_delay),
        ("failover_wait_timeout", c.failover_wait_timeout),
        ("max_lag", c.max_lag),
        ("read_your_writes_window", c.read_your_writes_window),
        ("auth_failure_window", c.auth_failure_window),
    ];
    for (key, d) in durations {
        if d > MAX_DURATION {
            bad(key, "must be at most 365d".into());
        }
    }
    if c.server_connect_timeout.is_zero() {
        bad("server_connect_timeout", "must be greater than 0".into());
    }

    if !c.health_check_period.is_zero() && c.health_check_timeout.is_zero() {
        bad("health_check_timeout", "must be greater than 0 when health_check_period is set".into());
    }
    if c.health_check_period.is_zero() {
        for (i, b) in c.backends.iter().enumerate() {
            if b.role == BackendRole::Auto {
                bad(
                    &format!("backends[{i}].role"),
                    "auto needs health checks to observe the role; set health_check_period above 0 or name the role"
                        .into(),
                );
            }
        }
        if c.max_lag_bytes.bytes() > 0 || !c.max_lag.is_zero() {
            bad("max_lag", "lag is measured by the health checks; set health_check_period above 0".into());
        }
        if c.read_your_writes == ReadYourWrites::Lsn {
            bad(
                "read_your_writes",
                "lsn needs the replay positions the health checks read; set health_check_period above 0".into(),
            );
        }
    }
    if c.health_check_user.as_deref() == Some("") {
        bad("health_check_user", "must not be empty (omit it for the default)".into());
    }
    if let Some(s) = &c.health_check_password {
        check_secret(&mut bad, "health_check_password", s);
    }
    if c.health_check_database.trim().is_empty() {
        bad("health_check_database", "must not be empty".into());
    }
    for (key, list) in [("write_functions", &c.write_functions), ("read_only_functions", &c.read_only_functions)] {
        for (i, f) in list.iter().enumerate() {
            let name = f.trim();
            if name.is_empty() || name == "*" {
                bad(&format!("{key}[{i}]"), "must name a function (a trailing * matches a prefix)".into());
            }
        }
    }

    let size = c.max_message_size.bytes();
    if !(ByteSize::KIB..=ByteSize::GIB).contains(&size) {
        bad("max_message_size", format!("must be between 1KiB and 1GiB (got {})", c.max_message_size));
    }
    if c.log_level.trim().is_empty() {
        bad("log_level", "must not be empty (e.g. 'info' or 'info,pgbalancer=debug')".into());
    }

    tls_problems(c, &mut bad);

    let r = &c.rest_api;
    if r.bind_address.trim().is_empty() {
        bad("rest_api.bind_address", "must not be empty".into());
    }
    if r.enabled && !r.jwt_enabled && !is_loopback(&r.bind_address) {
        bad(
            "rest_api.jwt_enabled",
            format!(
                "false is only allowed with a loopback bind_address, not '{}': anyone who could reach the API \
                 could reload or stop pgbalancer",
                r.bind_address
            ),
        );
    }
    if r.enabled && r.port != 0 && r.port == c.port {
        bad("rest_api.port", format!("same as port ({}); use a different port", c.port));
    }
    match &r.jwt_secret_file {
        Some(_) if r.jwt_secret.is_some() => {
            bad("rest_api.jwt_secret_file", "conflicts with rest_api.jwt_secret; set only one of them".into())
        }
        Some(f) if f.as_os_str().is_empty() => bad("rest_api.jwt_secret_file", "must not be empty".into()),
        _ => {}
    }
    let key_files = [
        ("rest_api.jwt_public_key_file", &r.jwt_public_key_file),
        ("rest_api.jwt_private_key_file", &r.jwt_private_key_file),
    ];
    if r.jwt_algorithm == JwtAlgorithm::HS256 {
        match &r.jwt_secret {
            None if r.enabled && r.jwt_enabled && r.jwt_secret_file.is_none() => bad(
                "rest_api.jwt_secret",
                "required (or rest_api.jwt_secret_file) when rest_api.enabled and rest_api.jwt_enabled are true".into(),
            ),
            Some(SecretRef::Plain(s)) if s.len() < MIN_JWT_SECRET_LEN => {
                bad("rest_api.jwt_secret", format!("too short: at least {MIN_JWT_SECRET_LEN} bytes are required"))
            }
            Some(s) => check_secret(&mut bad, "rest_api.jwt_secret", s),
            None => {}
        }
        for (key, file) in key_files {
            if file.is_some() {
                bad(key, "only used with jwt_algorithm RS256 or EdDSA; HS256 uses rest_api.jwt_secret".into());
            }
        }
    } else {
        // A secret next to a public-key algorithm would only mislead: the
        // algorithm is fixed, so it is never used.
        let alg = r.jwt_algorithm;
        for (key, set) in
            [("rest_api.jwt_secret", r.jwt_secret.is_some()), ("rest_api.jwt_secret_file", r.jwt_secret_file.is_some())]
        {
            if set {
                bad(
                    key,
                    format!(
                        "only used with jwt_algorithm HS256; {alg} verifies tokens with rest_api.jwt_public_key_file"
                    ),
                );
            }
        }
        if r.enabled && r.jwt_enabled && r.jwt_public_key_file.is_none() {
            bad(
                "rest_api.jwt_public_key_file",
                format!("required when jwt_algorithm is {alg} and rest_api.enabled and rest_api.jwt_enabled are true"),
            );
        }
        for (key, file) in key_files {
            if file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
                bad(key, "must not be empty".into());
            }
        }
    }
    for (key, v) in [("rest_api.jwt_audience", &r.jwt_audience), ("rest_api.jwt_issuer", &r.jwt_issuer)] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            bad(key, "must not be empty (omit it to accept any)".into());
        }
    }
    if r.jwt_max_ttl.is_zero() {
        bad("rest_api.jwt_max_ttl", "must be greater than 0".into());
    } else if r.jwt_max_ttl > MAX_DURATION {
        bad("rest_api.jwt_max_ttl", "must be at most 365d".into());
    }
    // HTTPS for the admin API: both files or neither. Whether they can be
    // read and parsed is checked where they are used (the daemon names the
    // key then), not here: bctl reads this file too, as an operator who may
    // read the certificate but not the daemon's private key.
    for (key, v, other) in
        [("rest_api.ssl_cert", &r.ssl_cert, &r.ssl_key), ("rest_api.ssl_key", &r.ssl_key, &r.ssl_cert)]
    {
        match (v, other) {
            (Some(p), _) if p.as_os_str().is_empty() => bad(key, "must not be empty".into()),
            (None, Some(_)) => bad(
                key,
                "required when the other of rest_api.ssl_cert and rest_api.ssl_key is set (both or neither)".into(),
            ),
            _ => {}
        }
    }
    p
}

/// Whether every password must come from `users`: a password method for
/// everyone, no `users_file`, no `auth_user` lookup, no hba rules.
fn passwords_from_users_only(c: &Config) -> bool {
    c.auth_type.uses_password()
        && c.users_file.is_none()
        && c.auth_user.is_none()
        && c.hba.is_empty()
        && c.hba_file.is_none()
}

/// Authentication keys: files, the lookup, hba rules, methods that need
/// TLS, limits.
fn auth_problems(c: &Config, bad: &mut impl FnMut(&str, String)) {
    if let Some(p) = &c.users_file {
        check_readable(bad, "users_file", p);
    }
    if c.auth_user.as_deref().is_some_and(|u| u.trim().is_empty()) {
        bad("auth_user", "must not be empty (omit it to look up no users)".into());
    }
    if !c.auth_query.contains("$1") {
        bad("auth_query", "must use $1 (the user name is passed as a parameter, never pasted into the text)".into());
    }
    if c.auth_dbname.trim().is_empty() {
        bad("auth_dbname", "must not be empty".into());
    }
    if c.auth_type == AuthType::Cert {
        if !c.ssl {
            bad("auth_type", "cert needs ssl: true (a client certificate comes with TLS)".into());
        } else if c.ssl_ca_cert.is_none() {
            bad("auth_type", "cert needs ssl_ca_cert (clients are asked for a certificate only with it)".into());
        }
    }
    match &c.hba_file {
        Some(_) if !c.hba.is_empty() => bad("hba_file", "conflicts with hba; set only one of them".into()),
        Some(p) => check_readable(bad, "hba_file", p),
        None => {}
    }
    for (i, e) in c.hba.iter().enumerate() {
        for (field, msg) in check_hba_entry(e, c) {
            bad(&format!("hba[{i}].{field}"), msg);
        }
    }
    if c.max_unauthenticated_clients < 1 {
        bad("max_unauthenticated_clients", "must be at least 1".into());
    }
    if c.auth_failure_limit > 0 && c.auth_failure_window.is_zero() {
        bad("auth_failure_window", "must be greater than 0 when auth_failure_limit is set".into());
    }
}

/// What an `hba` address matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaAddress {
    All,
    /// Addresses whose first `prefix` bits equal `addr`'s.
    Net {
        addr: IpAddr,
        prefix: u8,
    },
}

impl HbaAddress {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`) counts as its IPv4 address; otherwise IPv4
    /// rules match only IPv4 clients and IPv6 rules IPv6 clients (as in
    /// PostgreSQL).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (*self, ip) {
            (HbaAddress::All, _) => true,
            (HbaAddress::Net { addr: IpAddr::V4(net), prefix }, IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (HbaAddress::Net { addr: IpAddr::V6(net), prefix }, IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Parses an `hba` address: `all`, an IP address (one host) or a CIDR
/// block (`10.0.0.0/8`, `fd00::/8`). Host names, `samehost` and `samenet`
/// are not supported.
pub fn parse_hba_address(s: &str) -> Result<HbaAddress, String> {
    let s = s.trim();
    match s {
        "all" => return Ok(HbaAddress::All),
        "samehost" | "samenet" => return Err(format!("{s} is not supported; give addresses or CIDR blocks")),
        "" => return Err("must not be empty (an IP address, a CIDR block or all)".into()),
        _ => {}
    }
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (s, None),
    };
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| format!("'{s}' is not an IP address or CIDR block (host names are not supported; or use all)"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(bits) => match bits.parse::<u8>() {
            Ok(n) if n <= max && bits.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("'{s}': the prefix length must be 0..={max}")),
        },
    };
    Ok(HbaAddress::Net { addr, prefix })
}

/// The prefix length of a netmask (`255.255.0.0` → 16), for pg_hba.conf's
/// separate mask column; the mask must be contiguous and of `addr`'s family.
pub fn mask_prefix_len(addr: IpAddr, mask: &str) -> Result<u8, String> {
    let m: IpAddr = mask.parse().map_err(|_| format!("'{mask}' is not a netmask"))?;
    let (bits, width) = match (addr, m) {
        (IpAddr::V4(_), IpAddr::V4(m)) => (u128::from(u32::from(m)) << 96, 32),
        (IpAddr::V6(_), IpAddr::V6(m)) => (u128::from(m), 128),
        _ => return Err(format!("netmask '{mask}' is not of the address's family")),
    };
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(format!("netmask '{mask}' is not contiguous"));
    }
    Ok(ones.min(width) as u8)
}

/// Problems of one `hba` rule, as (field, message): the same checks for
/// `hba` entries and `hba_file` lines.
pub fn check_hba_entry(e: &HbaEntry, c: &Config) -> Vec<(&'static str, String)> {
    let mut p = Vec::new();
    if e.kind == HbaType::Local {
        p.push((
            "type",
            "local (Unix socket) rules are not supported: pgbalancer listens on TCP only; \
             use host, hostssl or hostnossl"
                .to_string(),
        ));
    }
    for (field, list, unsupported) in
        [("database", &e.database, &["samerole", "samegroup"][..]), ("user", &e.user, &[][..])]
    {
        if list.split(',').any(|n| n.trim().is_empty()) {
            p.push((field, format!("'{list}': empty name (use all, or names separated by commas)")));
            continue;
        }
        for name in list.split(',').map(str::trim) {
            if unsupported.contains(&name) {
                p.push((field, format!("{name} is not supported; list the names")));
            } else if name.starts_with('@') {
                p.push((field, format!("'{name}': @file inclusion is not supported; list the names")));
            } else if name.starts_with('+') {
                p.push((field, format!("'{name}': +role (membership) is not supported; list the names")));
            }
        }
    }
    if e.kind != HbaType::Local {
        match &e.address {
            None => p.push(("address", "required (an IP address, a CIDR block or all)".into())),
            Some(a) => {
                if let Err(why) = parse_hba_address(a) {
                    p.push(("address", why));
                }
            }
        }
    }
    if e.method == AuthType::Cert {
        if e.kind != HbaType::HostSsl {
            p.push(("method", "cert is only supported on hostssl rules (as in PostgreSQL)".into()));
        } else if c.ssl_ca_cert.is_none() || !c.ssl {
            p.push((
                "method",
                "cert needs ssl: true and ssl_ca_cert (clients are asked for a certificate only with it)".into(),
            ));
        }
    }
    p
}

/// TLS keys: what `ssl` needs, modes that contradict each other, and CA and
/// certificate files that must be there. The proxy parses the files (and
/// names the key again if one holds no usable PEM).
fn tls_problems(c: &Config, bad: &mut impl FnMut(&str, String)) {
    if c.ssl {
        for (key, path) in [("ssl_cert", &c.ssl_cert), ("ssl_key", &c.ssl_key)] {
            match path {
                None => bad(key, "required when ssl is true".into()),
                Some(p) => check_readable(bad, key, p),
            }
        }
        if let Some(p) = &c.ssl_ca_cert {
            check_readable(bad, "ssl_ca_cert", p);
        }
    }
    match c.ssl_mode {
        Some(ClientSslMode::Disable) if c.ssl => {
            bad("ssl_mode", "disable contradicts ssl: true; set ssl: false, or ssl_mode allow or require".into())
        }
        Some(m @ (ClientSslMode::Allow | ClientSslMode::Require)) if !c.ssl => {
            bad("ssl_mode", format!("{m} needs ssl: true (with ssl_cert and ssl_key)"))
        }
        _ => {}
    }
    if c.ssl_direct && !c.ssl {
        bad("ssl_direct", "needs ssl: true (with ssl_cert and ssl_key)".into());
    }
    match c.backend_sslmode {
        Some(m @ (BackendSslMode::Disable | BackendSslMode::Prefer)) if c.backend_encryption => bad(
            "backend_sslmode",
            format!(
                "{m} contradicts backend_encryption: true (encryption required); use require, verify-ca or verify-full"
            ),
        ),
        _ => {}
    }
    let mode = c.backend_ssl_mode();
    match &c.backend_sslrootcert {
        None if mode.verifies() => {
            bad("backend_sslrootcert", format!("required with backend_sslmode {mode} (the CA file to verify against)"))
        }
        Some(p) if mode.verifies() => check_readable(bad, "backend_sslrootcert", p),
        _ => {}
    }
}

/// A file key must name a file this process can open.
fn check_readable(bad: &mut impl FnMut(&str, String), key: &str, path: &Path) {
    if path.as_os_str().is_empty() {
        bad(key, "must not be empty".into());
    } else if let Err(e) = std::fs::File::open(path) {
        bad(key, format!("cannot read {}: {e}", path.display()));
    } else if path.is_dir() {
        bad(key, format!("{} is a directory, not a file", path.display()));
    }
}

/// Most backends one pgbalancer routes over.
pub const MAX_BACKENDS: usize = 64;

fn check_secret(bad: &mut impl FnMut(&str, String), key: &str, s: &SecretRef) {
    match s {
        SecretRef::Plain(v) if v.is_empty() => bad(key, "must not be empty".into()),
        SecretRef::File { file } if file.as_os_str().is_empty() => {
            bad(&format!("{key}.file"), "must not be empty".into())
        }
        SecretRef::Env { env } if env.is_empty() || env.contains('=') || env.contains('\0') => {
            bad(&format!("{key}.env"), format!("invalid environment variable name '{env}'"))
        }
        _ => {}
    }
}

/// Checks `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 fields,
/// 32-byte keys), the format PostgreSQL stores in `pg_authid.rolpassword`.
pub fn check_scram_verifier(v: &str) -> Result<(), String> {
    const FORM: &str = "expected SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>";
    let rest = v.strip_prefix("SCRAM-SHA-256$").ok_or(FORM)?;
    let (params, keys) = rest.split_once('$').ok_or(FORM)?;
    let (iter, salt) = params.split_once(':').ok_or(FORM)?;
    let (stored, server) = keys.split_once(':').ok_or(FORM)?;
    match iter.parse::<u32>() {
        Ok(n) if n >= 1 => {}
        _ => return Err(format!("iteration count '{iter}' is not a positive integer")),
    }
    match base64_len(salt) {
        Some(n) if n > 0 => {}
        _ => return Err("salt is not valid base64".into()),
    }
    for (what, k) in [("StoredKey", stored), ("ServerKey", server)] {
        if base64_len(k) != Some(32) {
            return Err(format!("{what} is not 32 bytes of base64"));
        }
    }
    Ok(())
}

/// Decoded length of padded standard base64, or `None` if `s` is not such base64.
fn base64_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() % 4 != 0 {
        return None;
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let body = &b[..b.len() - pad];
    if !body.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/') {
        return None;
    }
    Some(b.len() / 4 * 3 - pad)
}

/// `md5` followed by 32 hex digits: an md5 password hash as PostgreSQL
/// stores it (`md5` + hex(md5(password + user))).
pub fn is_md5_hash(pw: &str) -> bool {
    pw.len() == 35 && pw.starts_with("md5") && pw[3..].bytes().all(|c| c.is_ascii_hexdigit())
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

/// Non-fatal remarks about a valid configuration, each `key.path: message`.
pub(crate) fn warnings(c: &Config) -> Vec<String> {
    let mut w = Vec::new();
    for (i, u) in c.users.iter().enumerate() {
        match &u.password {
            Some(_) if c.auth_type == AuthType::Trust && c.hba.is_empty() && c.hba_file.is_none() => w.push(format!(
                "users[{i}].password: ignored with auth_type trust (any client may log in as '{}')",
                u.name
            )),
            Some(pw) if is_md5_hash(pw) => w.push(format!(
                "users[{i}].password: an md5 hash only works with method md5 (deprecated in PostgreSQL); \
                 store a SCRAM verifier instead"
            )),
            Some(pw) if !pw.starts_with("SCRAM-SHA-256$") => {
                w.push(format!("users[{i}].password: plaintext password in config; store a SCRAM verifier instead"))
            }
            _ => {}
        }
    }
    for (i, e) in c.hba.iter().enumerate() {
        let open = e.address.as_deref().and_then(|a| parse_hba_address(a).ok()).is_some_and(|a| match a {
            HbaAddress::All => true,
            HbaAddress::Net { addr, .. } => !addr.is_loopback(),
        });
        if e.method == AuthType::Trust && open {
            w.push(format!("hba[{i}]: trust for non-loopback addresses: anyone who can connect from there may log in"));
        }
        if e.kind == HbaType::HostSsl && !c.ssl {
            w.push(format!("hba[{i}]: a hostssl rule never matches while ssl is false"));
        }
    }
    if c.auth_type != AuthType::default() && (!c.hba.is_empty() || c.hba_file.is_some()) {
        w.push("auth_type: ignored: hba rules choose the method of every connection".into());
    }
    if let Some(p) = &c.users_file {
        w.extend(file_warnings(p).into_iter().map(|m| format!("users_file: {m}")));
    }
    if c.server_password.as_ref().is_some_and(SecretRef::is_plain) {
        w.push(
            "server_password: plaintext password in config; use server_password_file or {file: ...}/{env: ...}".into(),
        );
    }
    if c.rest_api.jwt_secret.as_ref().is_some_and(SecretRef::is_plain) {
        w.push("rest_api.jwt_secret: secret stored in config; use {file: ...} or {env: ...}".into());
    }
    if c.auth_type == AuthType::Trust
        && c.hba.is_empty()
        && c.hba_file.is_none()
        && c.listen_hosts().iter().any(|h| !is_loopback(h))
    {
        w.push(format!(
            "auth_type: trust on non-loopback listen_addresses '{}': anyone who can connect may log in",
            c.listen_addresses
        ));
    }
    if c.rest_api.enabled && !c.rest_api.jwt_enabled {
        w.push("rest_api.jwt_enabled: false: the REST API accepts requests without authentication".into());
    }
    if c.rest_api.enabled && !is_loopback(&c.rest_api.bind_address) {
        w.push(format!("rest_api.bind_address: '{}' exposes the admin API beyond this host", c.rest_api.bind_address));
    }
    for (key, v) in [("ssl_cert", &c.ssl_cert), ("ssl_key", &c.ssl_key), ("ssl_ca_cert", &c.ssl_ca_cert)] {
        if v.is_some() && !c.ssl {
            w.push(format!("{key}: ignored because ssl is false"));
        }
    }
    let mode = c.backend_ssl_mode();
    if c.backend_sslrootcert.is_some() && !mode.verifies() {
        w.push(format!(
            "backend_sslrootcert: ignored with backend_sslmode {mode} (only verify-ca and verify-full check certificates)"
        ));
    }
    if c.ssl {
        if let Some(key) = &c.ssl_key {
            w.extend(key_file_warning("ssl_key", key));
        }
    }
    if c.rest_api.enabled {
        if let Some(key) = &c.rest_api.ssl_key {
            w.extend(key_file_warning("rest_api.ssl_key", key));
        }
    }
    w
}

/// PostgreSQL refuses a private key file that group or others may read;
/// pgbalancer warns (`key`: the config key that names the file).
fn key_file_warning(key: &str, path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "{key}: {}: file mode {mode:04o} lets group/others read the private key; run chmod 600",
                path.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (key, path);
        None
    }
}

/// Warnings about the file itself: on Unix, permissions that let group or others access it.
pub(crate) fn file_warnings(path: &Path) -> Vec<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return vec![format!(
                    "{}: file mode {mode:04o} lets group/others access it and it may hold secrets; run chmod 600",
                    path.display()
                )];
            }
        }
        Vec::new()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_verifier_shapes() {
        let k = "A".repeat(43) + "=";
        let ok = format!("SCRAM-SHA-256$4096:c2FsdHNhbHQ=${k}:{k}");
        assert_eq!(check_scram_verifier(&ok), Ok(()));
        for bad in [
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==",
            &format!("SCRAM-SHA-256$0:c2FsdA==${k}:{k}"),
            &format!("SCRAM-SHA-256$x:c2FsdA==${k}:{k}"),
            &format!("SCRAM-SHA-256$4096:!!!!${k}:{k}"),
            &format!("SCRAM-SHA-256$4096:c2FsdA==$AAAA:{k}"),
        ] {
            assert!(check_scram_verifier(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_len("AAAA"), Some(3));
        assert_eq!(base64_len("AAA="), Some(2));
        assert_eq!(base64_len("AA=="), Some(1));
        assert_eq!(base64_len("A==="), None);
        assert_eq!(base64_len("AAA"), None);
        assert_eq!(base64_len("A=AA"), None);
    }

    #[test]
    fn md5_and_loopback() {
        assert!(is_md5_hash(&format!("md5{}", "0a".repeat(16))));
        assert!(!is_md5_hash("md5secret"));
        assert!(is_loopback("127.0.0.1") && is_loopback("::1") && is_loopback("[::1]"));
        assert!(!is_loopback("0.0.0.0") && !is_loopback("::"));
    }
}
