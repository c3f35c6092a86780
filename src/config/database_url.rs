//! `DATABASE_URL`: which backend, parsed strictly, and shown without its passwords.
//!
//! A value that is mistaken for a SQLite path is the worst outcome here: payhook would then
//! write production events to a local file named after the URL. So only three shapes are
//! accepted and anything that merely looks like a URL or a libpq key=value string but is not a
//! supported backend is refused:
//! - `postgres://…`/`postgresql://…` (scheme in any case) and libpq key=value strings
//!   (`host=h dbname=d`): PostgreSQL, parsed with libpq's own grammar so that the passwords it
//!   would read are the ones we redact, and so that libpq never sees a value it would quote
//!   back in an error (libpq echoes malformed tokens, which may be passwords);
//! - `sqlite://path`, `sqlite:path` (any case): SQLite;
//! - anything else: a SQLite file path.
//!
//! Every password form libpq accepts is redacted wherever the URL is shown: user-info
//! (`postgres://u:p@h/db`), query parameters (`?password=p`, and the other secret keywords such
//! as `sslpassword`), and key=value strings (`password=p`, `password='p q'`).

use std::fmt;
use std::path::PathBuf;

/// Where the data lives, parsed from `DATABASE_URL` (or its default).
///
/// `Postgres` holds a string libpq accepts as it is (a URL with a lower-case scheme, or a
/// key=value string). `Debug` and `Display` never show its passwords.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Why a `DATABASE_URL` was refused. The messages never quote the value: it may hold a
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error(
        "the scheme `{0}://` is not a supported backend: use postgres:// (or postgresql://) for \
         PostgreSQL, or sqlite://path or a plain file path for SQLite"
    )]
    UnsupportedScheme(String),
    #[error(
        "looks like a key=value connection string but `{0}` is not a libpq keyword, so it is \
         neither PostgreSQL nor a file path (for a SQLite file named like this, write sqlite:path)"
    )]
    UnknownKeyword(String),
    #[error("names no database: add one (postgres://user@host/DBNAME, or dbname=DBNAME)")]
    NoDatabase,
    #[error("malformed PostgreSQL connection string: {0}")]
    Malformed(&'static str),
    #[error("names no SQLite file")]
    NoFile,
}

/// libpq's connection keywords (PostgreSQL 17), plus `ssl`, which libpq's URL parser maps to
/// `sslmode=require`. A key outside this list makes libpq refuse the string anyway; refusing it
/// here gives a message that does not quote the value.
const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
    "scram_client_key",
    "scram_server_key",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
    "min_protocol_version",
    "max_protocol_version",
];

/// Keywords whose value is a secret: shown as `***`.
const SECRET_KEYWORDS: &[&str] = &[
    "password",
    "sslpassword",
    "oauth_client_secret",
    "scram_client_key",
    "scram_server_key",
];

const REDACTED: &str = "***";

impl DatabaseUrl {
    /// The embedded default: a SQLite file under `./data/`.
    pub fn default_sqlite() -> Self {
        Self::Sqlite(PathBuf::from("data/payhook.sqlite3"))
    }

    /// Parses a `DATABASE_URL` value (see the module docs for the accepted shapes).
    pub fn parse(raw: &str) -> Result<Self, DatabaseUrlError> {
        let raw = raw.trim();
        if let Some((scheme, rest)) = split_scheme(raw) {
            let lower = scheme.to_ascii_lowercase();
            return match lower.as_str() {
                "postgres" | "postgresql" => {
                    // libpq matches its URL prefixes case-sensitively: hand it lower case.
                    let url = format!("{lower}://{rest}");
                    let parsed = parse_postgres(&url)?;
                    if parsed.dbname.is_none() {
                        return Err(DatabaseUrlError::NoDatabase);
                    }
                    Ok(Self::Postgres(url))
                }
                "sqlite" => sqlite_path(rest),
                _ => Err(DatabaseUrlError::UnsupportedScheme(lower)),
            };
        }
        if looks_like_conninfo(raw) {
            let parsed = parse_postgres(raw)?;
            if parsed.dbname.is_none() {
                return Err(DatabaseUrlError::NoDatabase);
            }
            return Ok(Self::Postgres(raw.to_owned()));
        }
        if raw.len() >= 7 && raw[..7].eq_ignore_ascii_case("sqlite:") {
            return sqlite_path(&raw[7..]);
        }
        if raw.is_empty() {
            return Err(DatabaseUrlError::NoFile);
        }
        Ok(Self::Sqlite(PathBuf::from(raw)))
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// The value as `DATABASE_URL` would hold it, passwords included: call only to hand it on
    /// (to a child process, or to the configuration loader in tests).
    pub fn expose(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite:{}", path.display()),
            Self::Postgres(url) => url.clone(),
        }
    }

    /// `text` with every password of this URL replaced by `***`: for messages that come from
    /// elsewhere (libpq, r2d2) and might quote the connection string.
    pub fn scrub(&self, text: &str) -> String {
        let Self::Postgres(url) = self else {
            return text.to_owned();
        };
        let mut secrets = parse_postgres(url).map(|p| p.secrets).unwrap_or_default();
        // Longest first, so that a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text.to_owned(), |acc, s| acc.replace(s.as_str(), REDACTED))
    }
}

/// Prints the location without any password.
impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(url) => match parse_postgres(url) {
                Ok(parsed) => f.write_str(&parsed.redacted),
                // Only a value built by hand can get here; show nothing of it.
                Err(_) => f.write_str("postgres (connection string hidden: malformed)"),
            },
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

fn sqlite_path(rest: &str) -> Result<DatabaseUrl, DatabaseUrlError> {
    if rest.is_empty() {
        return Err(DatabaseUrlError::NoFile);
    }
    Ok(DatabaseUrl::Sqlite(PathBuf::from(rest)))
}

/// `scheme://rest` with an RFC 3986 scheme, or `None`.
fn split_scheme(raw: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = raw.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some((scheme, rest))
}

/// Starts like `keyword=`: libpq takes any string with `=` as key=value, but a file path may
/// hold one too (`./a=b.db`), so only a leading identifier followed by `=` counts.
fn looks_like_conninfo(raw: &str) -> bool {
    let key_len = raw
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(raw.len());
    key_len > 0
        && raw.as_bytes()[0].is_ascii_alphabetic()
        && raw[key_len..].trim_start().starts_with('=')
}

/// What payhook needs to know of a PostgreSQL connection string.
#[derive(Debug, PartialEq, Eq)]
struct PgConnInfo {
    dbname: Option<String>,
    /// The string with every secret value replaced by `***`.
    redacted: String,
    /// Every secret value, as written and as libpq decodes it.
    secrets: Vec<String>,
}

fn parse_postgres(s: &str) -> Result<PgConnInfo, DatabaseUrlError> {
    match split_scheme(s) {
        Some((_, rest)) => parse_pg_url(s, s.len() - rest.len()),
        None => parse_conninfo(s),
    }
}

/// libpq's URL grammar: `scheme://[user[:password]@][host[:port][,…]][/dbname][?k=v&…]`.
fn parse_pg_url(url: &str, authority_start: usize) -> Result<PgConnInfo, DatabaseUrlError> {
    if url.chars().any(char::is_whitespace) {
        return Err(DatabaseUrlError::Malformed(
            "spaces must be percent-encoded (%20)",
        ));
    }
    let mut redacted = String::from(&url[..authority_start]);
    let mut secrets = Vec::new();
    let mut dbname = None;
    let rest = &url[authority_start..];

    // As libpq: the user-info ends at the first `@` before any `/`.
    let (userinfo, after_userinfo) = match rest[..rest.find('/').unwrap_or(rest.len())].find('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, password)) => {
                decode(user)?;
                secrets.push(password.to_owned());
                secrets.push(decode(password)?);
                redacted.push_str(user);
                redacted.push(':');
                redacted.push_str(REDACTED);
            }
            None => {
                decode(userinfo)?;
                redacted.push_str(userinfo);
            }
        }
        redacted.push('@');
    }
    let (hosts_and_path, query) = match after_userinfo.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (after_userinfo, None),
    };
    redacted.push_str(hosts_and_path);
    if let Some((_, path)) = hosts_and_path.split_once('/') {
        let name = decode(path)?;
        if !name.is_empty() {
            dbname = Some(name);
        }
    }
    if let Some(query) = query {
        redacted.push('?');
        for (n, pair) in query.split('&').enumerate() {
            if n > 0 {
                redacted.push('&');
            }
            let Some((key, value)) = pair.split_once('=') else {
                return Err(DatabaseUrlError::Malformed(
                    "a query parameter lacks its `=`",
                ));
            };
            if value.contains('=') {
                return Err(DatabaseUrlError::Malformed(
                    "a query parameter has a second `=`",
                ));
            }
            let key = decode(key)?;
            if key != "ssl" && !KEYWORDS.contains(&key.as_str()) {
                return Err(DatabaseUrlError::UnknownKeyword(key));
            }
            let decoded = decode(value)?;
            redacted.push_str(&key);
            redacted.push('=');
            if SECRET_KEYWORDS.contains(&key.as_str()) {
                secrets.push(value.to_owned());
                secrets.push(decoded);
                redacted.push_str(REDACTED);
            } else {
                if key == "dbname" && !decoded.is_empty() {
                    dbname = Some(decoded);
                }
                redacted.push_str(value);
            }
        }
    }
    Ok(PgConnInfo {
        dbname,
        redacted,
        secrets,
    })
}

/// libpq's percent-decoding: `%` takes two hex digits, and `%00` is refused.
fn decode(s: &str) -> Result<String, DatabaseUrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(DatabaseUrlError::Malformed(
                    "`%` must be followed by two hex digits",
                ))?;
            if hex == 0 {
                return Err(DatabaseUrlError::Malformed("%00 is not allowed"));
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// libpq's key=value grammar: `key = value` pairs separated by whitespace; a value is either
/// unquoted (up to whitespace) or in single quotes; a backslash escapes the next character in
/// both.
fn parse_conninfo(s: &str) -> Result<PgConnInfo, DatabaseUrlError> {
    let mut redacted = String::new();
    let mut secrets = Vec::new();
    let mut dbname = None;
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = rest[key_end..].trim_start();
        let Some(after_eq) = rest.strip_prefix('=') else {
            return Err(DatabaseUrlError::Malformed("a keyword lacks its `=`"));
        };
        if !KEYWORDS.contains(&key) {
            return Err(DatabaseUrlError::UnknownKeyword(key.to_owned()));
        }
        rest = after_eq.trim_start();
        let (raw_value, value, consumed) = conninfo_value(rest)?;
        rest = rest[consumed..].trim_start();
        if !redacted.is_empty() {
            redacted.push(' ');
        }
        redacted.push_str(key);
        redacted.push('=');
        if SECRET_KEYWORDS.contains(&key) {
            secrets.push(raw_value.to_owned());
            secrets.push(value);
            redacted.push_str(REDACTED);
        } else {
            if key == "dbname" && !value.is_empty() {
                dbname = Some(value);
            }
            redacted.push_str(raw_value);
        }
    }
    Ok(PgConnInfo {
        dbname,
        redacted,
        secrets,
    })
}

/// One value at the start of `s`: (as written, as libpq reads it, bytes consumed).
fn conninfo_value(s: &str) -> Result<(&str, String, usize), DatabaseUrlError> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    if s.starts_with('\'') {
        chars.next();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, escaped)) => value.push(escaped),
                    None => break,
                },
                '\'' => return Ok((&s[..i + 1], value, i + 1)),
                c => value.push(c),
            }
        }
        return Err(DatabaseUrlError::Malformed("a quoted value is not closed"));
    }
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => return Ok((&s[..i], value, i)),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            c => value.push(c),
        }
    }
    Ok((s, value, s.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(raw: &str) -> String {
        match DatabaseUrl::parse(raw) {
            Ok(DatabaseUrl::Postgres(url)) => url,
            other => panic!("{raw} → {other:?}"),
        }
    }

    #[test]
    fn urls_select_the_backend() {
        assert_eq!(pg("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(pg("postgresql://u@h/db"), "postgresql://u@h/db");
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/x.db"),
            Ok(DatabaseUrl::Sqlite("data/x.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:x.db"),
            Ok(DatabaseUrl::Sqlite("x.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("/tmp/x.db"),
            Ok(DatabaseUrl::Sqlite("/tmp/x.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("./a=b.db"),
            Ok(DatabaseUrl::Sqlite("./a=b.db".into()))
        );
    }

    #[test]
    fn schemes_are_case_insensitive_and_handed_to_libpq_in_lower_case() {
        assert_eq!(pg("Postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(pg("POSTGRESQL://u@h/db"), "postgresql://u@h/db");
        assert_eq!(
            DatabaseUrl::parse("SQLITE://x.db"),
            Ok(DatabaseUrl::Sqlite("x.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("SQLite:x.db"),
            Ok(DatabaseUrl::Sqlite("x.db".into()))
        );
    }

    #[test]
    fn key_value_strings_select_postgres() {
        assert_eq!(pg("host=h dbname=d user=u"), "host=h dbname=d user=u");
        assert_eq!(pg("dbname = 'my db'"), "dbname = 'my db'");
    }

    #[test]
    fn look_alikes_of_unsupported_backends_are_refused_not_taken_as_paths() {
        for (raw, expected) in [
            (
                "mysql://u@h/db",
                DatabaseUrlError::UnsupportedScheme("mysql".into()),
            ),
            (
                "postgress://h/db",
                DatabaseUrlError::UnsupportedScheme("postgress".into()),
            ),
            ("foo=bar", DatabaseUrlError::UnknownKeyword("foo".into())),
            (
                "postgres://h/db?foo=bar",
                DatabaseUrlError::UnknownKeyword("foo".into()),
            ),
            ("postgres://", DatabaseUrlError::NoDatabase),
            ("Postgres://u:p@h:5432", DatabaseUrlError::NoDatabase),
            ("postgres://h/", DatabaseUrlError::NoDatabase),
            ("host=h user=u", DatabaseUrlError::NoDatabase),
            ("sqlite://", DatabaseUrlError::NoFile),
            ("", DatabaseUrlError::NoFile),
        ] {
            assert_eq!(DatabaseUrl::parse(raw), Err(expected), "{raw}");
        }
        assert_eq!(pg("postgres://h?dbname=d"), "postgres://h?dbname=d");
    }

    #[test]
    fn malformed_strings_are_refused_before_libpq_could_quote_them() {
        for raw in [
            "postgres://u:pass word@h/db",
            "postgres://u:p%zz@h/db",
            "postgres://u:p%00@h/db",
            "postgres://h/db?password",
            "host=h dbname=d password='open",
            "host=h dbname=d password=p q",
        ] {
            let err = DatabaseUrl::parse(raw).expect_err(raw);
            let message = err.to_string();
            for word in ["pass word", "p%zz", "open", "q\""] {
                assert!(!message.contains(word), "{message}");
            }
        }
    }

    #[test]
    fn every_password_form_is_redacted() {
        for (raw, shown, secret) in [
            (
                "postgres://payhook:hunter2@db:5432/payhook",
                "postgres://payhook:***@db:5432/payhook",
                "hunter2",
            ),
            (
                "postgres://db/payhook?user=u&password=hunter2&sslmode=require",
                "postgres://db/payhook?user=u&password=***&sslmode=require",
                "hunter2",
            ),
            (
                "postgres://db/payhook?sslpassword=hunter2",
                "postgres://db/payhook?sslpassword=***",
                "hunter2",
            ),
            (
                "host=db dbname=payhook password=hunter2",
                "host=db dbname=payhook password=***",
                "hunter2",
            ),
            (
                "host=db dbname=payhook password = 'hunter2 \\'quoted\\''",
                "host=db dbname=payhook password=***",
                "hunter2",
            ),
            (
                "postgres://u:hunter%32@db/payhook",
                "postgres://u:***@db/payhook",
                "hunter",
            ),
        ] {
            let url = DatabaseUrl::parse(raw).expect(raw);
            assert_eq!(url.to_string(), shown, "{raw}");
            assert_eq!(format!("{url:?}"), shown, "{raw}");
            let scrubbed = url.scrub(&format!("libpq said: {raw}"));
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
    }

    #[test]
    fn scrubbing_replaces_the_password_as_written_and_as_decoded() {
        let url = DatabaseUrl::parse("postgres://u:pw%21x@h/db").expect("valid");
        assert_eq!(url.scrub("a pw%21x b pw!x c"), "a *** b *** c");
        let url = DatabaseUrl::parse("host=h dbname=d password='a \\'b'").expect("valid");
        assert_eq!(url.scrub("said a 'b and 'a \\'b'"), "said *** and ***");
        assert_eq!(DatabaseUrl::default_sqlite().scrub("x"), "x");
    }

    #[test]
    fn a_string_built_by_hand_that_does_not_parse_shows_nothing() {
        let url = DatabaseUrl::Postgres("postgres://u:secret word@h/db".into());
        assert!(!url.to_string().contains("secret"));
    }

    #[test]
    fn exposing_round_trips() {
        for raw in ["postgres://u:p@h/db?sslmode=require", "sqlite:data/x.db"] {
            let url = DatabaseUrl::parse(raw).expect(raw);
            assert_eq!(DatabaseUrl::parse(&url.expose()), Ok(url));
        }
    }
}
