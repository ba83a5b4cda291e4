//! Host-based authentication rules (`hba` in the YAML, or `hba_file` in
//! pg_hba.conf syntax): which method a connection must pass, chosen by
//! connection type, database, user and client address. First match wins;
//! no match is refused with PostgreSQL's message. See
//! `docs/authentication.md`.

use std::net::IpAddr;
use std::path::Path;

use pgbalancer_config::{check_hba_entry, mask_prefix_len, parse_hba_address, AuthType, Config, HbaAddress};
use pgbalancer_config::{HbaEntry, HbaType};

/// One name in a database or user column.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    /// `all` (unquoted).
    All,
    /// `sameuser` (databases): the database named like the user.
    SameUser,
    /// `replication` (databases): replication connections, which
    /// pgbalancer refuses before authentication; never matches.
    Replication,
    Literal(String),
}

/// One rule, checked and ready to match.
#[derive(Debug, Clone)]
pub struct Rule {
    kind: HbaType,
    databases: Vec<Name>,
    users: Vec<Name>,
    address: HbaAddress,
    pub method: AuthType,
    /// Where the rule comes from (`hba[2]`, `/etc/pgbalancer/hba.conf:7`),
    /// for logs.
    pub origin: String,
}

/// The rules of one config, in order.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// A connection as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub ip: IpAddr,
    pub tls: bool,
    pub user: &'a str,
    pub database: &'a str,
}

impl Rules {
    /// The rules of `c`: its `hba` entries or its `hba_file` (read now).
    /// `None` when neither is set (then `auth_type` applies to everyone).
    /// Errors name the entry or the file and line.
    pub fn from_config(c: &Config) -> Result<Option<Rules>, String> {
        if let Some(path) = &c.hba_file {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("hba_file: cannot read {}: {e}", path.display()))?;
            return parse_file(&text, path, c).map(Some);
        }
        if c.hba.is_empty() {
            return Ok(None);
        }
        let mut rules = Vec::with_capacity(c.hba.len());
        for (i, e) in c.hba.iter().enumerate() {
            let origin = format!("hba[{i}]");
            rules.push(compile(e, origin.clone(), c).map_err(|(field, m)| format!("{origin}.{field}: {m}"))?);
        }
        Ok(Some(Rules { rules }))
    }

    /// The first rule that matches `peer`.
    pub fn find(&self, peer: &Peer) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(peer))
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Rule {
    fn matches(&self, p: &Peer) -> bool {
        let kind = match self.kind {
            HbaType::Host => true,
            HbaType::HostSsl => p.tls,
            HbaType::HostNoSsl => !p.tls,
            HbaType::Local => false,
        };
        kind && self.address.contains(p.ip)
            && self.databases.iter().any(|n| match n {
                Name::All => true,
                Name::SameUser => p.database == p.user,
                Name::Replication => false,
                Name::Literal(d) => d == p.database,
            })
            && self.users.iter().any(|n| match n {
                Name::All => true,
                Name::Literal(u) => u == p.user,
                Name::SameUser | Name::Replication => false,
            })
    }
}

/// Checks an entry (the same checks as `validate`) and compiles it.
fn compile(e: &HbaEntry, origin: String, c: &Config) -> Result<Rule, (&'static str, String)> {
    if let Some(problem) = check_hba_entry(e, c).into_iter().next() {
        return Err(problem);
    }
    let address = match &e.address {
        Some(a) => parse_hba_address(a).map_err(|m| ("address", m))?,
        None => return Err(("address", "required".into())),
    };
    let databases = names(&e.database, true).map_err(|m| ("database", m))?;
    let users = names(&e.user, false).map_err(|m| ("user", m))?;
    Ok(Rule { kind: e.kind, databases, users, address, method: e.method, origin })
}

/// A comma-separated list of names, each maybe double-quoted (a quoted
/// name is never a keyword; `""` inside quotes is one `"`).
fn names(list: &str, database: bool) -> Result<Vec<Name>, String> {
    let mut out = Vec::new();
    for token in split_list(list)? {
        out.push(match token {
            Token { text, quoted: false } if text == "all" => Name::All,
            Token { text, quoted: false } if database && text == "sameuser" => Name::SameUser,
            Token { text, quoted: false } if database && text == "replication" => Name::Replication,
            Token { text, quoted: false } if text.starts_with('+') || text.starts_with('@') => {
                return Err(format!("'{text}': +role and @file are not supported; list the names"))
            }
            Token { text, .. } => Name::Literal(text),
        });
    }
    if out.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(out)
}

struct Token {
    text: String,
    quoted: bool,
}

/// Splits `a,"b c",d` into its names.
fn split_list(list: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = list.trim().chars().peekable();
    loop {
        let mut text = String::new();
        let mut quoted = false;
        while let Some(&ch) = chars.peek() {
            match ch {
                ',' => break,
                '"' => {
                    quoted = true;
                    chars.next();
                    loop {
                        match chars.next() {
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                text.push('"');
                            }
                            Some('"') => break,
                            Some(c) => text.push(c),
                            None => return Err(format!("'{list}': unterminated quote")),
                        }
                    }
                }
                c => {
                    text.push(c);
                    chars.next();
                }
            }
        }
        let text = if quoted { text } else { text.trim().to_owned() };
        if text.is_empty() && !quoted {
            return Err(format!("'{list}': empty name (use all, or names separated by commas)"));
        }
        out.push(Token { text, quoted });
        if chars.next().is_none() {
            return Ok(out);
        }
    }
}

/// The fields of one pg_hba.conf line: whitespace-separated, `#` starts a
/// comment outside quotes, quotes keep whitespace and commas in a field.
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                in_quotes = !in_quotes;
                field.push(ch);
            }
            '#' if !in_quotes => break,
            c if c.is_whitespace() && !in_quotes => {
                if !field.is_empty() {
                    out.push(std::mem::take(&mut field));
                }
            }
            c => field.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    if !field.is_empty() {
        out.push(field);
    }
    Ok(out)
}

/// Parses pg_hba.conf text: `type database user address [mask] method
/// [options]` per line (`host`, `hostssl`, `hostnossl`), comments, `\`
/// continuation lines. Errors name the file and line.
pub fn parse_file(text: &str, path: &Path, c: &Config) -> Result<Rules, String> {
    let mut rules = Vec::new();
    let mut logical = String::new();
    let mut first_line = 0;
    for (n, raw) in text.lines().enumerate() {
        if logical.is_empty() {
            first_line = n + 1;
        }
        match raw.strip_suffix('\\') {
            Some(part) => {
                logical.push_str(part);
                logical.push(' ');
                continue;
            }
            None => logical.push_str(raw),
        }
        let line = std::mem::take(&mut logical);
        let origin = format!("{}:{first_line}", path.display());
        let at = |m: String| format!("hba_file: {origin}: {m}");
        let f = fields(&line).map_err(at)?;
        if f.is_empty() {
            continue;
        }
        let entry = entry_of(&f).map_err(at)?;
        rules.push(compile(&entry, origin.clone(), c).map_err(|(field, m)| at(format!("{field}: {m}")))?);
    }
    if !logical.is_empty() {
        return Err(format!("hba_file: {}:{first_line}: the last line ends with a continuation", path.display()));
    }
    Ok(Rules { rules })
}

/// One line's fields as an entry.
fn entry_of(f: &[String]) -> Result<HbaEntry, String> {
    let kind = match f[0].as_str() {
        "host" => HbaType::Host,
        "hostssl" => HbaType::HostSsl,
        "hostnossl" => HbaType::HostNoSsl,
        "local" => HbaType::Local,
        "hostgssenc" | "hostnogssenc" => return Err(format!("{}: GSSAPI encryption is not supported", f[0])),
        "include" | "include_if_exists" | "include_dir" => return Err(format!("{} is not supported", f[0])),
        other => return Err(format!("invalid connection type \"{other}\"")),
    };
    let need = |i: usize, what: &str| f.get(i).cloned().ok_or_else(|| format!("end-of-line before {what}"));
    let database = need(1, "database specification")?;
    let user = need(2, "role specification")?;
    let (address, rest) = if kind == HbaType::Local {
        (None, &f[3..])
    } else {
        let addr = need(3, "IP address")?;
        // An address without /bits may be followed by a netmask.
        let with_mask = match (addr.contains('/'), addr.parse::<IpAddr>(), f.get(4)) {
            (false, Ok(ip), Some(mask)) if mask.parse::<IpAddr>().is_ok() => {
                let bits = mask_prefix_len(ip, mask)?;
                Some(format!("{ip}/{bits}"))
            }
            _ => None,
        };
        match with_mask {
            Some(cidr) => (Some(cidr), &f[5..]),
            None => (Some(addr), &f[4..]),
        }
    };
    let method = match rest.first().map(String::as_str) {
        None => return Err("end-of-line before authentication method".into()),
        Some("trust") => AuthType::Trust,
        Some("reject") => AuthType::Reject,
        Some("md5") => AuthType::Md5,
        Some("scram-sha-256") => AuthType::ScramSha256,
        Some("cert") => AuthType::Cert,
        Some(m) => {
            return Err(format!(
                "authentication method \"{m}\" is not supported (pgbalancer: trust, reject, md5, scram-sha-256, cert)"
            ))
        }
    };
    for option in &rest[1..] {
        // `cert` always verifies the full certificate and its CN.
        let implied = method == AuthType::Cert && option == "clientcert=verify-full";
        if !implied {
            return Err(format!("authentication option \"{option}\" is not supported"));
        }
    }
    Ok(HbaEntry { kind, database, user, address, method })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            ssl: true,
            ssl_cert: Some("/x".into()),
            ssl_key: Some("/x".into()),
            ssl_ca_cert: Some("/x".into()),
            ..Config::default()
        }
    }

    fn rules(text: &str) -> Result<Rules, String> {
        parse_file(text, Path::new("hba.conf"), &config())
    }

    fn decide(r: &Rules, ip: &str, tls: bool, user: &str, database: &str) -> Option<(AuthType, String)> {
        let peer = Peer { ip: ip.parse().unwrap(), tls, user, database };
        r.find(&peer).map(|r| (r.method, r.origin.clone()))
    }

    #[test]
    fn first_match_wins() {
        let r = rules(
            "# comment\n\
             \n\
             hostssl all      admin  10.0.0.0/8          cert   # certs for admin\n\
             host    sales    all    10.1.0.0 255.255.0.0 md5\n\
             host    all      \"all\" 127.0.0.1/32        trust\n\
             hostnossl all    all    all                  reject\n\
             host    sameuser all    ::/0                 scram-sha-256\n\
             host    \"a db\",other bob,carol 0.0.0.0/0 scram-sha-256\n",
        )
        .unwrap();
        assert_eq!(r.len(), 6);
        let m = |ip, tls, u, d| decide(&r, ip, tls, u, d).map(|(m, o)| (m, o.rsplit(':').next().unwrap().to_owned()));
        assert_eq!(m("10.1.2.3", true, "admin", "sales"), Some((AuthType::Cert, "3".into())));
        assert_eq!(m("10.1.2.3", false, "admin", "sales"), Some((AuthType::Md5, "4".into())));
        assert_eq!(m("10.2.2.3", false, "x", "sales"), Some((AuthType::Reject, "6".into())));
        // Quoted "all" is a user named all.
        assert_eq!(m("127.0.0.1", true, "all", "db"), Some((AuthType::Trust, "5".into())));
        assert_eq!(m("::1", true, "x", "x"), Some((AuthType::ScramSha256, "7".into())));
        assert_eq!(m("::1", true, "x", "y"), None, "sameuser");
        assert_eq!(m("192.0.2.1", true, "carol", "a db"), Some((AuthType::ScramSha256, "8".into())));
        assert_eq!(m("192.0.2.1", true, "dave", "a db"), None);
        assert_eq!(m("192.0.2.1", true, "carol", "replication"), None);
        // IPv4-mapped IPv6 clients match IPv4 rules.
        assert_eq!(m("::ffff:10.1.2.3", false, "admin", "sales"), Some((AuthType::Md5, "4".into())));
    }

    #[test]
    fn continuation_and_options() {
        let r = rules("hostssl all all \\\n  all cert clientcert=verify-full\n").unwrap();
        assert_eq!(decide(&r, "10.0.0.1", true, "u", "d").map(|x| x.0), Some(AuthType::Cert));
        assert_eq!(decide(&r, "10.0.0.1", false, "u", "d"), None);
    }

    #[test]
    fn errors_name_the_line() {
        for (text, needle) in [
            ("local all all trust\n", "hba.conf:1: type: local (Unix socket) rules are not supported"),
            ("\nhost all all 10.0.0.0/8 ident\n", "hba.conf:2: authentication method \"ident\" is not supported"),
            ("host all all db.example.com md5\n", "hba.conf:1: address: 'db.example.com' is not an IP address"),
            ("host all all 10.0.0.0 255.0.255.0 md5\n", "netmask '255.0.255.0' is not contiguous"),
            ("host all all 10.0.0.0/33 md5\n", "the prefix length must be 0..=32"),
            ("host all all 10.0.0.0/8 md5 map=x\n", "authentication option \"map=x\" is not supported"),
            ("host all all all cert\n", "cert is only supported on hostssl rules"),
            ("host all +admins all md5\n", "+role (membership) is not supported"),
            ("host all all\n", "end-of-line before IP address"),
            ("host all all all\n", "end-of-line before authentication method"),
            ("hostgssenc all all all md5\n", "GSSAPI encryption is not supported"),
            ("host \"all all all md5\n", "unterminated quote"),
            ("host all all all md5 \\\n", "ends with a continuation"),
            ("host ,x all all md5\n", "empty name"),
            ("hots all all all md5\n", "invalid connection type \"hots\""),
        ] {
            let e = rules(text).expect_err(text);
            assert!(e.starts_with("hba_file: hba.conf:"), "{e}");
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        assert_eq!(rules("# nothing\n\n").unwrap().len(), 0);
    }

    #[test]
    fn yaml_entries() {
        let mut c = config();
        c.hba = vec![
            HbaEntry {
                kind: HbaType::HostNoSsl,
                database: "app,reports".into(),
                user: "all".into(),
                address: Some("192.168.0.0/16".into()),
                method: AuthType::Md5,
            },
            HbaEntry {
                kind: HbaType::Host,
                database: "all".into(),
                user: "all".into(),
                address: Some("all".into()),
                method: AuthType::Reject,
            },
        ];
        let r = Rules::from_config(&c).unwrap().unwrap();
        assert_eq!(decide(&r, "192.168.1.1", false, "u", "reports"), Some((AuthType::Md5, "hba[0]".into())));
        assert_eq!(decide(&r, "192.168.1.1", true, "u", "reports"), Some((AuthType::Reject, "hba[1]".into())));
        c.hba[0].address = Some("nope".into());
        let e = Rules::from_config(&c).unwrap_err();
        assert!(e.starts_with("hba[0].address: 'nope'"), "{e}");
        assert!(Rules::from_config(&Config::default()).unwrap().is_none());
    }
}
