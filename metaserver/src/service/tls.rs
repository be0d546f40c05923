//! The metaserver's TLS identity: a self-signed certificate made on first start (rcgen)
//! and kept beside the namespace, or one from the site's CA given in the configuration.
//! Clients pin it: they trust exactly this certificate.

use super::SERVER_NAME;
use anyhow_lite::{Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// Small error helpers (the crate has no anyhow).
pub mod anyhow_lite {
    pub type Result<T> = std::result::Result<T, String>;
    pub trait Context<T> {
        fn context(self, what: impl FnOnce() -> String) -> Result<T>;
    }
    impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
        fn context(self, what: impl FnOnce() -> String) -> Result<T> {
            self.map_err(|e| format!("{}: {e}", what()))
        }
    }
}

/// Loads `cert` and `key` (PEM), generating a self-signed pair there first if neither
/// exists. Extra names (host names, addresses) go into the certificate too.
pub fn load_or_create(
    cert: &Path,
    key: &Path,
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    if !cert.exists() && !key.exists() {
        let mut sans = vec![SERVER_NAME.to_string()];
        sans.extend(names.iter().cloned());
        let made = rcgen::generate_simple_self_signed(sans)
            .context(|| "generating a certificate".into())?;
        if let Some(dir) = cert.parent() {
            std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(cert, made.cert.pem()).context(|| format!("writing {}", cert.display()))?;
        write_private(key, made.signing_key.serialize_pem().as_bytes())?;
        tracing::info!(cert = %cert.display(), "generated the metaserver certificate; give it to clients (--meta-cert)");
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .context(|| format!("reading {}", cert.display()))?
        .collect::<std::result::Result<_, _>>()
        .context(|| format!("reading {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).context(|| format!("reading {}", key.display()))?;
    Ok((certs, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .context(|| format!("writing {}", path.display()))
}

/// The certificates a client pins, from a PEM file.
pub fn pinned(cert: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(cert).context(|| format!("reading {}", cert.display()))?
    {
        let c = c.context(|| format!("reading {}", cert.display()))?;
        roots
            .add(c)
            .context(|| format!("{} is not a usable certificate", cert.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    Ok(roots)
}
