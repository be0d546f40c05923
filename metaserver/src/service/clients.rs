//! Client credentials: `meridian metaserver add-client NAME` issues a random token; the
//! metaserver keeps only its BLAKE3 hash, one `name hash` line per client in a file beside
//! the namespace (re-read at every new connection, so adding a client needs no restart).

use super::tls::anyhow_lite::{Context, Result};
use std::path::Path;

fn hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Issues a credential for `name` and records it; returns the token (shown once).
pub fn add(file: &Path, name: &str) -> Result<String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "invalid client name {name:?}: use letters, digits, '-', '_' and '.'"
        ));
    }
    if list(file)?.iter().any(|(n, _)| n == name) {
        return Err(format!(
            "client {name} already has a credential in {}",
            file.display()
        ));
    }
    let mut raw = [0u8; 32];
    crate::random_bytes(&mut raw).context(|| "reading /dev/urandom".into())?;
    let token = hex::encode(raw);
    let mut text = std::fs::read_to_string(file).unwrap_or_default();
    text.push_str(&format!("{name} {}\n", hash(&token)));
    std::fs::write(file, text).context(|| format!("writing {}", file.display()))?;
    Ok(token)
}

/// Every (name, token hash).
pub fn list(file: &Path) -> Result<Vec<(String, String)>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", file.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, h)| (n.to_string(), h.trim().to_string()))
        .collect())
}

/// The client a token belongs to, if any.
pub fn check(file: &Path, token: &str) -> Option<String> {
    let h = hash(token);
    list(file)
        .ok()?
        .into_iter()
        .find(|(_, k)| *k == h)
        .map(|(n, _)| n)
}
