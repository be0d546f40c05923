//! Reads libpq's TLS settings out of a PostgreSQL connection string, in either of libpq's
//! forms (`postgresql://…?sslmode=verify-full&sslrootcert=/etc/…` or
//! `host=… sslmode=verify-full sslrootcert=/etc/…`): tokio-postgres knows only
//! `sslmode=disable|prefer|require` and refuses the rest, so they are taken out here and
//! what is left is handed to it. Also makes the string's form for messages, with any
//! password hidden.
//!
//! Owns: no state; pure functions (fuzzed: `fuzz/fuzz_targets/conninfo.rs`).
//!
//! Invariants: every setting that is not one of [`TLS_KEYS`] is passed on as written, in
//! its order; a password (in the URL's user part or a `password` setting) never appears in
//! [`Split::shown`].

use percent_encoding::percent_decode_str;

/// The settings read here rather than by tokio-postgres.
pub const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// The TLS settings of a connection string, each as written (decoded).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TlsParams {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

impl TlsParams {
    fn set(&mut self, key: &str, value: String) {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            _ => &mut self.sslkey,
        };
        *slot = Some(value); // the last one written wins, as in libpq
    }
}

/// A connection string taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The string without its TLS settings (for tokio-postgres).
    pub rest: String,
    pub tls: TlsParams,
    /// The whole string with any password replaced by `***` (for messages and logs).
    pub shown: String,
}

/// Splits `s` (a URL or `key=value` pairs); an error names what cannot be read.
pub fn split(s: &str) -> Result<Split, String> {
    if s.starts_with("postgresql://") || s.starts_with("postgres://") {
        split_url(s)
    } else {
        split_pairs(s)
    }
}

/// `s` as it may be shown: with any password hidden (or, if it cannot be read, not at all).
pub fn redacted(s: &str) -> String {
    split(s).map_or_else(|_| "(an unreadable connection string)".into(), |s| s.shown)
}

fn split_url(s: &str) -> Result<Split, String> {
    let (base, query) = s.split_once('?').unwrap_or((s, ""));
    let shown_base = hide_url_password(base);
    let mut tls = TlsParams::default();
    let (mut kept, mut shown) = (Vec::new(), Vec::new());
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if TLS_KEYS.contains(&key) {
            let value = percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| format!("the value of {key} is not UTF-8 once %-decoded"))?;
            tls.set(key, value.into_owned());
            shown.push(param.to_string());
        } else {
            kept.push(param);
            shown.push(if key == "password" {
                "password=***".to_string()
            } else {
                param.to_string()
            });
        }
    }
    let join = |base: &str, params: Vec<String>| match params.is_empty() {
        true => base.to_string(),
        false => format!("{base}?{}", params.join("&")),
    };
    Ok(Split {
        rest: join(base, kept.into_iter().map(str::to_string).collect()),
        tls,
        shown: join(&shown_base, shown),
    })
}

/// `scheme://user:password@host…` with the password replaced.
fn hide_url_password(base: &str) -> String {
    let Some((scheme, after)) = base.split_once("://") else {
        return base.to_string();
    };
    let authority_end = after.find('/').unwrap_or(after.len());
    let (authority, path) = after.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, hosts)) => match user.split_once(':') {
            Some((name, _)) => format!("{scheme}://{name}:***@{hosts}{path}"),
            None => base.to_string(),
        },
        None => base.to_string(),
    }
}

fn split_pairs(s: &str) -> Result<Split, String> {
    let mut tls = TlsParams::default();
    let (mut kept, mut shown) = (Vec::new(), Vec::new());
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let pair = Pair::read(rest)?;
        if TLS_KEYS.contains(&pair.key) {
            tls.set(pair.key, pair.value);
            shown.push(pair.text.to_string());
        } else {
            kept.push(pair.text);
            shown.push(match pair.key {
                "password" => "password=***".to_string(),
                _ => pair.text.to_string(),
            });
        }
        rest = &rest[pair.text.len()..];
    }
    Ok(Split {
        rest: kept.join(" "),
        tls,
        shown: shown.join(" "),
    })
}

/// One `key = value` of the pairs form, as libpq reads it: a value is a run of non-blank
/// characters or a single-quoted string; a backslash takes the next character as it is.
struct Pair<'a> {
    key: &'a str,
    value: String,
    /// The pair as written (from its key to the end of its value).
    text: &'a str,
}

impl<'a> Pair<'a> {
    fn read(s: &'a str) -> Result<Pair<'a>, String> {
        let key_end = s
            .find(|c: char| c == '=' || c.is_whitespace())
            .ok_or_else(|| format!("`{}` has no `=` and no value", truncate(s)))?;
        let key = &s[..key_end];
        let after_key = s[key_end..].trim_start();
        let Some(after_eq) = after_key.strip_prefix('=') else {
            return Err(format!("`{key}` is not followed by `=` and a value"));
        };
        let value_start = after_eq.trim_start();
        let (value, used) = read_value(value_start, key)?;
        let end = s.len() - value_start.len() + used;
        Ok(Pair {
            key,
            value,
            text: &s[..end],
        })
    }
}

/// The value at the start of `s` and how many bytes of `s` it took.
fn read_value(s: &str, key: &str) -> Result<(String, usize), String> {
    let quoted = s.starts_with('\'');
    let mut value = String::new();
    let mut chars = s.char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => value.push(escaped),
                None => return Err(format!("the value of {key} ends with a lone backslash")),
            },
            '\'' if quoted => return Ok((value, i + 1)),
            c if !quoted && c.is_whitespace() => return Ok((value, i)),
            c => value.push(c),
        }
    }
    match quoted {
        true => Err(format!("the value of {key} has no closing quote")),
        false => Ok((value, s.len())),
    }
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(40).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tls_settings_are_taken_out_and_the_rest_kept_in_order() {
        let s = split(
            "postgresql://meta:s3cret@db1:5432,db2/site?connect_timeout=5&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fpg%20ca.pem&target_session_attrs=read-write&password=x",
        )
        .unwrap();
        assert_eq!(
            s.rest,
            "postgresql://meta:s3cret@db1:5432,db2/site?connect_timeout=5\
             &target_session_attrs=read-write&password=x"
        );
        assert_eq!(s.tls.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(s.tls.sslrootcert.as_deref(), Some("/etc/pg ca.pem"));
        assert_eq!(s.tls.sslcert, None);
        assert!(!s.shown.contains("s3cret") && !s.shown.contains("password=x"));
        assert!(
            s.shown
                .starts_with("postgresql://meta:***@db1:5432,db2/site?")
        );
        assert!(s.shown.contains("sslmode=verify-full"));
    }

    #[test]
    fn a_url_without_settings_or_password_is_passed_on_as_it_is() {
        for url in [
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgres://h",
            "postgresql:///db?host=/run/postgresql",
        ] {
            let s = split(url).unwrap();
            assert_eq!((s.rest.as_str(), s.shown.as_str()), (url, url));
            assert_eq!(s.tls, TlsParams::default());
        }
    }

    #[test]
    fn pairs_form_reads_quotes_and_escapes_as_libpq_does() {
        let s = split(
            "host=db1 port = 5432 sslmode='verify-ca' sslcert=/etc/my\\ cert.pem \
             sslkey = '/etc/it\\'s.key' password='a b' dbname=site",
        )
        .unwrap();
        assert_eq!(s.rest, "host=db1 port = 5432 password='a b' dbname=site");
        assert_eq!(s.tls.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(s.tls.sslcert.as_deref(), Some("/etc/my cert.pem"));
        assert_eq!(s.tls.sslkey.as_deref(), Some("/etc/it's.key"));
        assert!(!s.shown.contains("a b"), "{}", s.shown);
        assert!(s.shown.contains("password=***"));
        // What is left parses as tokio-postgres reads it.
        let config: tokio_postgres::Config = s.rest.parse().unwrap();
        assert_eq!(config.get_dbname(), Some("site"));
        assert_eq!(config.get_password(), Some(&b"a b"[..]));
    }

    #[test]
    fn unreadable_strings_say_what_is_wrong() {
        for (s, says) in [
            ("host=db1 sslmode='verify-full", "no closing quote"),
            ("host", "no `=`"),
            ("host db1", "not followed by `=`"),
            ("sslrootcert=a\\", "lone backslash"),
            ("postgresql://h?sslrootcert=%ff", "not UTF-8"),
        ] {
            let e = split(s).unwrap_err();
            assert!(e.contains(says), "{s}: {e}");
        }
    }

    proptest::proptest! {
        /// The fuzz target's property (fuzz/fuzz_targets/conninfo.rs), on strings made of
        /// the characters that matter to either form.
        #[test]
        fn what_is_left_splits_again_to_itself(
            url in proptest::bool::ANY,
            body in "[a-z=' \\\\%&?/:@]{0,40}",
        ) {
            let s = if url { format!("postgresql://{body}") } else { body };
            if let Ok(first) = split(&s) {
                let again = split(&first.rest).unwrap();
                proptest::prop_assert_eq!(&again.rest, &first.rest);
                proptest::prop_assert_eq!(again.tls, TlsParams::default());
            }
        }
    }

    #[test]
    fn the_last_setting_written_wins() {
        let s = split("sslmode=require host=h sslmode=verify-full").unwrap();
        assert_eq!(s.tls.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(s.rest, "host=h");
    }
}
