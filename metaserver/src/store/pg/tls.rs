//! TLS to PostgreSQL (rustls): what a connection string's libpq settings ask for —
//! `sslmode` (`disable`, `prefer` — the default —, `require`, `verify-ca`, `verify-full`),
//! `sslrootcert` (a PEM file of the CA that signed the server's certificate, or `system`
//! for the system's roots), `sslcert` and `sslkey` (a client certificate, for
//! PostgreSQL's `cert` authentication) — made into the connector every connection of the
//! store uses.
//!
//! Owns: [`Target`], a parsed connection string with its connector. The files are read
//! when a target is made (each time the store connects): a renewed certificate is picked
//! up at the next connection.
//!
//! Invariants: as in libpq, `prefer` and `require` with an `sslrootcert` verify the chain
//! (as `verify-ca`); without one they encrypt but trust any certificate
//! (its handshake signature is still checked); `verify-ca` checks the chain and not the
//! name, `verify-full` both. A Unix-socket host never uses TLS (PostgreSQL offers none
//! there). Messages show the connection string with its password hidden.

use super::conninfo::{self, TlsParams};
use meridian_proto::{MetaError, MetaResult};
use rustls::SignatureScheme;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use std::sync::Arc;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How far the server is checked (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A connection string made ready to connect: tokio-postgres's settings and the TLS
/// connector its own settings ask for.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub mode: Mode,
    /// The connection string with its password hidden, for messages.
    pub shown: String,
}

impl Target {
    /// Reads `url` and the files it names; an error names the setting or file at fault.
    pub fn parse(url: &str) -> MetaResult<Target> {
        let bad = |e: String| MetaError::Store(format!("postgresql connection string: {e}"));
        let split = conninfo::split(url).map_err(bad)?;
        let shown = split.shown;
        let bad = |e: String| MetaError::Store(format!("{shown}: {e}"));
        let mut config: tokio_postgres::Config =
            split.rest.parse().map_err(|e| bad(format!("{e}")))?;
        let mode = mode(&split.tls).map_err(bad)?;
        let all_unix = config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, Host::Unix(_)));
        config.ssl_mode(match mode {
            _ if all_unix && !config.get_hosts().is_empty() => SslMode::Disable,
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        });
        let client = client_config(mode, &split.tls).map_err(bad)?;
        Ok(Target {
            config,
            tls: MakeRustlsConnect::new(client),
            mode,
            shown,
        })
    }

    /// Connects to the first host that answers, on the caller's tokio runtime.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <MakeRustlsConnect as MakeTlsConnect<tokio_postgres::Socket>>::Stream,
            >,
        ),
        String,
    > {
        let shown = &self.shown;
        let connected = self.config.connect(self.tls.clone()).await;
        connected.map_err(|e| format!("{shown}: {}", super::describe(&e)))
    }
}

fn mode(tls: &TlsParams) -> Result<Mode, String> {
    Ok(match tls.sslmode.as_deref() {
        None | Some("prefer") => Mode::Prefer,
        Some("disable") => Mode::Disable,
        Some("require") if tls.sslrootcert.is_some() => Mode::VerifyCa,
        Some("require") => Mode::Require,
        Some("verify-ca") => Mode::VerifyCa,
        Some("verify-full") => Mode::VerifyFull,
        Some("allow") => return Err("sslmode=allow is not supported: use prefer".into()),
        Some(other) => {
            return Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ));
        }
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(mode: Mode, tls: &TlsParams) -> Result<ClientConfig, String> {
    let provider = provider();
    // As libpq: a root given is used (the chain checked) whatever the mode.
    let chain = match (mode, tls.sslrootcert.as_deref()) {
        (Mode::VerifyCa | Mode::VerifyFull, None) => {
            let mode = if mode == Mode::VerifyCa {
                "verify-ca"
            } else {
                "verify-full"
            };
            return Err(format!(
                "sslmode={mode} needs sslrootcert: the PEM file of the CA that signed the \
                 server's certificate (or sslrootcert=system for the system's roots)"
            ));
        }
        (_, Some(root)) => {
            let roots = Arc::new(roots(root)?);
            let chain = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| format!("sslrootcert={root}: {e}"))?;
            Some(chain)
        }
        (_, None) => None,
    };
    let verifier = Arc::new(Check {
        chain,
        name: mode == Mode::VerifyFull,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (tls.sslcert.as_deref(), tls.sslkey.as_deref()) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "sslcert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("sslkey={key}: {e} (a PEM private key is expected)"))?;
            (builder.with_client_auth_cert(chain, key))
                .map_err(|e| format!("sslcert={cert} and sslkey: {e}"))
        }
        _ => Err("sslcert and sslkey go together: give both files, or neither".into()),
    }
}

fn roots(root: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    if root == "system" {
        let found = rustls_native_certs::load_native_certs();
        store.add_parsable_certificates(found.certs);
        if store.is_empty() {
            return Err("sslrootcert=system: no certificate in the system's store".into());
        }
        return Ok(store);
    }
    for cert in certificates(root, "sslrootcert")? {
        store
            .add(cert)
            .map_err(|e| format!("sslrootcert={root}: {e}"))?;
    }
    Ok(store)
}

/// The certificates of the PEM file at `path` (at least one).
fn certificates(path: &str, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let read = |e: &dyn std::fmt::Display| format!("{setting}={path}: {e}");
    let bytes = std::fs::read(path).map_err(|e| read(&e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(&e))?;
    match certs.is_empty() {
        true => Err(read(&"no PEM certificate in the file")),
        false => Ok(certs),
    }
}

/// The check of the server's certificate a mode asks for; the handshake's signature is
/// checked in every mode.
#[derive(Debug)]
struct Check {
    /// The chain must lead to one of these roots; none (`prefer` and `require` without
    /// `sslrootcert`): any certificate, as libpq takes it — encrypted, not authenticated.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// The certificate must name the host (`verify-full`).
    name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Check {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::Error::InvalidCertificate;
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // The chain is checked before the name: a name error means the chain passed.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(InvalidCertificate(CertificateError::NotValidForName))
            | Err(InvalidCertificate(CertificateError::NotValidForNameContext { .. }))
                if !self.name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match Target::parse(url) {
            Ok(_) => panic!("{url} was taken"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn modes_follow_libpq() {
        let m = |url: &str| Target::parse(url).unwrap().mode;
        assert_eq!(m("postgresql://h/db"), Mode::Prefer);
        assert_eq!(m("postgresql://h/db?sslmode=disable"), Mode::Disable);
        assert_eq!(m("host=h sslmode=require"), Mode::Require);
        let t = Target::parse("postgresql:///db?host=/run/postgresql&sslmode=require").unwrap();
        assert_eq!(
            t.config.get_ssl_mode(),
            SslMode::Disable,
            "no TLS on a Unix socket"
        );
    }

    #[test]
    fn bad_settings_name_the_setting_and_the_fix() {
        let e = err("postgresql://u:pw@h/db?sslmode=verify-full");
        assert!(e.contains("needs sslrootcert") && !e.contains("pw@"), "{e}");
        let e = err("postgresql://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem");
        assert!(e.contains("sslrootcert=/nonexistent/ca.pem") && e.contains("No such file"));
        assert!(err("host=h sslmode=allow").contains("use prefer"));
        assert!(err("host=h sslmode=on").contains("not one of disable"));
        assert!(err("host=h sslcert=/x.pem").contains("sslcert and sslkey go together"));
        let empty = tempfile::NamedTempFile::new().unwrap();
        let e = err(&format!("host=h sslrootcert={}", empty.path().display()));
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
