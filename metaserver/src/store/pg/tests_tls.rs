//! TLS to a real PostgreSQL ([`testing::Cluster::start_tls`]: TCP over TLS only): the
//! store contract holds over `verify-full`, in sole mode (whose listener connects over TLS
//! too); the server is checked as each `sslmode` says; a client certificate logs in.

use super::*;
use testing::{CERT_USER, Cluster};

/// A URL to `c` naming `host` (its certificate's name is `localhost`), reaching 127.0.0.1.
fn url(c: &Cluster, user: &str, host: &str, params: &str) -> String {
    let port = c.port;
    format!("postgresql://{user}@{host}:{port}/postgres?hostaddr=127.0.0.1&{params}")
}

fn ca(c: &Cluster) -> String {
    c.tls.as_ref().unwrap().ca.display().to_string()
}

fn connect(url: &str) -> MetaResult<PgStore> {
    PgStore::connect_opts(url, Duration::from_secs(10), false)
}

#[test]
fn store_contract_over_verify_full() {
    let c = Cluster::start_tls();
    let store = PgStore::connect(&c.verify_full_url("postgres")).unwrap();
    assert!(
        store.wait_listening(Duration::from_secs(10)),
        "the listener connects over TLS"
    );
    store.write(|t| t.put(Table::Xattrs, b"d/1", b"a")).unwrap();
    assert!(store.is_sole());
    super::super::suite::run_all(&store);
    assert_eq!(
        c.plaintext_connections(),
        0,
        "no TCP connection without TLS"
    );
    let tls = "SELECT count(*) FROM pg_stat_ssl WHERE ssl";
    assert!(
        c.number(tls) >= 3,
        "the store's, its listener's and this one"
    );
}

#[test]
fn the_server_is_checked_as_sslmode_says() {
    let c = Cluster::start_tls();
    let (ca, other) = (
        ca(&c),
        c.tls.as_ref().unwrap().other_ca.display().to_string(),
    );
    let refused = |u: String, says: &str| match connect(&u) {
        Ok(_) => panic!("{u} connected"),
        Err(e) => assert!(e.to_string().contains(says), "{u}: {e}"),
    };
    // The cluster takes no plaintext connection over TCP.
    refused(
        url(&c, "postgres", "localhost", "sslmode=disable"),
        "no encryption",
    );
    // verify-full: the chain and the name.
    refused(
        url(
            &c,
            "postgres",
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={other}"),
        ),
        "UnknownIssuer",
    );
    refused(
        url(
            &c,
            "postgres",
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "not valid for name",
    );
    // verify-ca (and require with a root, as libpq): the chain only.
    connect(&url(
        &c,
        "postgres",
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .unwrap();
    refused(
        url(
            &c,
            "postgres",
            "localhost",
            &format!("sslmode=require&sslrootcert={other}"),
        ),
        "UnknownIssuer",
    );
    // prefer (the default) and require without a root: encrypted, not verified.
    connect(&url(&c, "postgres", "127.0.0.1", "sslmode=require")).unwrap();
    connect(&url(&c, "postgres", "127.0.0.1", "connect_timeout=5")).unwrap();
}

#[test]
fn a_client_certificate_logs_in() {
    let c = Cluster::start_tls();
    execute(
        &c.url(),
        &format!("CREATE ROLE {CERT_USER} LOGIN SUPERUSER"),
    )
    .unwrap();
    let f = c.tls.as_ref().unwrap();
    match connect(&c.verify_full_url(CERT_USER)) {
        Ok(_) => panic!("{CERT_USER} logged in without its certificate"),
        Err(e) => assert!(e.to_string().contains("certificate"), "{e}"),
    }
    let (cert, key) = (f.client_cert.display(), f.client_key.display());
    let with_cert = format!(
        "{}&sslcert={cert}&sslkey={key}",
        c.verify_full_url(CERT_USER)
    );
    let store = connect(&with_cert).unwrap();
    store.write(|t| t.put(Table::Xattrs, b"d/1", b"a")).unwrap();
    let got = store.read(|t| t.get(Table::Xattrs, b"d/1")).unwrap();
    assert_eq!(got.as_deref(), Some(&b"a"[..]));
}
