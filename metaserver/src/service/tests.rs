//! The site service in one process: a real QUIC metaserver and client on loopback.

use super::client::QuicClient;
use super::replay;
use super::server::{Server, ServerConfig};
use crate::{Meta, MetaConfig, RedbStore};
use meridian_proto::wire::{Remote, Request, Response};
use meridian_proto::{CallTag, Caller, MetaError, Namespace, ROOT, RenameMode, XattrMode};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn config(dir: &Path, listen: SocketAddr) -> ServerConfig {
    ServerConfig {
        listen,
        cert: dir.join("metaserver.crt"),
        key: dir.join("metaserver.key"),
        clients: dir.join("clients"),
        names: vec![],
        lease: super::LEASE,
        ack_wait: super::hub::ACK_WAIT,
    }
}

/// A metaserver on its own runtime (dropping the runtime kills it).
struct Running {
    _rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    hub: Arc<super::hub::Hub>,
}

/// Starts a metaserver serving `ns`.
fn start(cfg: &ServerConfig, ns: Arc<dyn Namespace>) -> Running {
    let rt = runtime();
    let server = rt.block_on(async { Server::bind(cfg) }).unwrap();
    let (addr, hub) = (server.local_addr(), server.hub.clone());
    let clients = cfg.clients.clone();
    rt.spawn(async move { server.serve(ns, clients).await });
    Running { _rt: rt, addr, hub }
}

/// Serves `ns` on a free loopback port; the runtime keeps it running. Returns a client
/// named `flame-07` connected to it.
fn serve(dir: &Path, ns: Arc<dyn Namespace>) -> (Running, QuicClient) {
    let cfg = config(dir, "127.0.0.1:0".parse().unwrap());
    let token = super::clients::add(&cfg.clients, "flame-07").unwrap();
    let server = start(&cfg, ns);
    let client = QuicClient::connect(
        server.addr,
        &cfg.cert,
        "flame-07",
        &token,
        Duration::from_secs(10),
    )
    .unwrap();
    (server, client)
}

/// A metaserver killed and restarted on the same address ends its old connections with a
/// stateless reset the moment a client's packet reaches it: clients reconnect at once
/// instead of waiting out the lease. (The restarted process must recognise the old
/// connection ids as its own for that.)
#[test]
fn a_restarted_metaserver_resets_the_old_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ns = || -> Arc<dyn Namespace> {
        Arc::new(Meta::open(crate::MemStore::new(), MetaConfig::default()).unwrap())
    };
    let cfg = config(dir.path(), "127.0.0.1:0".parse().unwrap());
    let first = start(&cfg, ns());
    let addr = first.addr;
    let client_rt = runtime();
    let roots = super::tls::pinned(&cfg.cert).unwrap();
    let mut client_cfg = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
    client_cfg.transport_config(Arc::new(super::transport(super::CLIENT_IDLE)));
    let conn = client_rt.block_on(async {
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.connect_with(client_cfg, addr, super::SERVER_NAME)
            .unwrap()
            .await
            .unwrap()
    });
    drop(first); // killed: no close frame is sent
    let second = start(&config(dir.path(), addr), ns());
    assert_eq!(second.addr, addr);
    // The client's next keep-alive (every second) reaches the new process.
    let why = client_rt.block_on(conn.closed());
    assert!(
        matches!(why, quinn::ConnectionError::Reset),
        "the old connection ended with {why:?}, not a stateless reset"
    );
}

#[test]
fn calls_retried_after_their_answer_was_lost_are_answered_as_done() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::open(
        RedbStore::open(&dir.path().join("ns.redb")).unwrap(),
        MetaConfig::default(),
    )
    .unwrap();
    let meta = Arc::new(meta);
    let (server, client) = serve(dir.path(), meta.clone());
    let client = Arc::new(client);
    let ns = Remote(client.clone());
    let root = Caller::root();
    // Each call below reaches the metaserver and takes effect, then its answer is lost
    // and the client sends it again on a new connection: run again, each would fail.
    let lose = || {
        client
            .lose_next_answer
            .store(true, std::sync::atomic::Ordering::SeqCst)
    };
    lose();
    let d = ns
        .mkdir(&root, ROOT, b"SH010", 0o755)
        .expect("mkdir retried");
    lose();
    let f = ns
        .create(&root, d.ino, b"plate.exr", 0o644)
        .expect("create retried");
    ns.release(f.ino).unwrap();
    lose();
    let l = ns
        .symlink(&root, d.ino, b"latest", b"plate.exr")
        .expect("symlink retried");
    lose();
    ns.link(&root, f.ino, d.ino, b"plate.v1.exr")
        .expect("link retried");
    lose();
    ns.rename(
        &root,
        d.ino,
        b"plate.exr",
        d.ino,
        b"plate.v2.exr",
        RenameMode::Replace,
    )
    .expect("rename retried");
    lose();
    ns.unlink(&root, d.ino, b"plate.v1.exr")
        .expect("unlink retried");
    lose();
    ns.setxattr(&root, f.ino, b"user.shot", b"SH010", XattrMode::CreateOnly)
        .expect("setxattr(XATTR_CREATE) retried");
    lose();
    ns.removexattr(&root, f.ino, b"user.shot")
        .expect("removexattr retried");
    assert_eq!(
        ns.getxattr(&root, f.ino, b"user.shot").unwrap_err(),
        MetaError::NoAttribute
    );
    assert!(
        !client
            .lose_next_answer
            .load(std::sync::atomic::Ordering::SeqCst)
    );
    // The namespace is as if each had run once.
    assert_eq!(ns.lookup(&root, ROOT, b"SH010").unwrap().ino, d.ino);
    assert_eq!(ns.lookup(&root, d.ino, b"latest").unwrap().ino, l.ino);
    assert_eq!(ns.lookup(&root, d.ino, b"plate.v2.exr").unwrap().ino, f.ino);
    assert_eq!(ns.getattr(f.ino).unwrap().nlink, 1);
    for gone in [&b"plate.exr"[..], b"plate.v1.exr"] {
        assert_eq!(
            ns.lookup(&root, d.ino, gone).unwrap_err(),
            MetaError::NotFound
        );
    }
    ns.unlink(&root, d.ino, b"plate.v2.exr").unwrap();
    ns.unlink(&root, d.ino, b"latest").unwrap();
    lose();
    ns.rmdir(&root, ROOT, b"SH010").expect("rmdir retried");
    // A retried create leaves the file open for its caller, as the first attempt did: an
    // unlink meanwhile keeps it until the release.
    lose();
    let held = ns
        .create(&root, ROOT, b"held.exr", 0o644)
        .expect("create retried");
    // Once the first attempt's connection has ended (its open released with it) ...
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.hub.sessions().len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lost connection never ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ns.unlink(&root, ROOT, b"held.exr").unwrap();
    assert_eq!(ns.getattr(held.ino).expect("still open").nlink, 0);
    ns.release(held.ino).unwrap();
    // (the release is sent without waiting, and this client's cache does not hear of the
    // purge: look in the namespace itself)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while meta.getattr(held.ino).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "never purged after its release"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A call that did not take effect the first time still fails on its retry.
    lose();
    assert_eq!(
        ns.rmdir(&root, ROOT, b"SH010").unwrap_err(),
        MetaError::NotFound
    );
}

#[test]
fn a_retry_after_a_restart_finds_what_the_first_attempt_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.redb");
    let tag = CallTag {
        session: replay::client_key("flame-07"),
        id: 41,
    };
    let mut req = Request::Mkdir {
        who: Caller::root(),
        parent: ROOT,
        name: b"SH020".to_vec(),
        mode: 0o755,
    };
    assert!(replay::tag(&mut req, tag));
    let Request::Mkdir { who, .. } = &req else {
        unreachable!()
    };
    let made = {
        let meta = Meta::open(RedbStore::open(&path).unwrap(), MetaConfig::default()).unwrap();
        meta.mkdir(who, ROOT, b"SH020", 0o755).unwrap()
        // Dropped without an answer sent: the process is gone.
    };
    let meta = Meta::open(RedbStore::open(&path).unwrap(), MetaConfig::default()).unwrap();
    let after = Duration::from_secs(2);
    match replay::answer(&meta, &req, tag, after) {
        Some(Response::Made(attr, _)) => assert_eq!(attr.ino, made.ino),
        other => panic!("the retry was not recognised: {other:?}"),
    }
    // Another call of the same client, or the same id from another client, did not run.
    let other = CallTag { id: 42, ..tag };
    assert_eq!(replay::answer(&meta, &req, other, after), None);
    let stranger = CallTag {
        session: replay::client_key("burn-03"),
        ..tag
    };
    assert_eq!(replay::answer(&meta, &req, stranger, after), None);
}

/// Over PostgreSQL in sole mode, calls are answered on the connection's task (no thread
/// hop), even creates while the database is paused (each sent after the one before, not
/// waited for); a call that would wait — the attributes of an inode the store has never
/// seen, which it must read — runs on the blocking pool instead and is answered once the
/// database answers.
#[test]
fn calls_over_postgresql_run_in_place_and_apart_when_they_would_wait() {
    use std::sync::atomic::Ordering::SeqCst;
    let c = crate::store::pg::testing::Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::PgStore::connect(&c.url()).unwrap();
    assert!(store.wait_listening(Duration::from_secs(10)));
    let meta: Arc<dyn Namespace> = Arc::new(Meta::open(store, MetaConfig::default()).unwrap());
    let root = Caller::root();
    meta.mkdir(&root, ROOT, b"warm", 0o755).unwrap(); // a write: sole mode from here on
    let (server, client) = serve(dir.path(), meta);
    server.hub.blocking.store(true, SeqCst);
    let client = Arc::new(client);
    let ns = Remote(client.clone());
    for i in 0..20 {
        let f = ns
            .create(&root, ROOT, format!("f{i}").as_bytes(), 0o644)
            .unwrap();
        ns.release(f.ino).unwrap();
    }
    let [answered, apart] = &server.hub.in_place;
    assert!(
        answered.load(SeqCst) >= 10,
        "answered in place: {answered:?}"
    );
    ns.sync().unwrap(); // every commit answered
    c.pause(true);
    let in_thread = |name: &'static [u8]| {
        let (ns, (tx, rx)) = (Remote(client.clone()), std::sync::mpsc::channel());
        std::thread::spawn(move || tx.send(ns.create(&Caller::root(), ROOT, name, 0o644)));
        rx
    };
    let sent = in_thread(b"sent").recv_timeout(Duration::from_secs(20));
    let next = in_thread(b"next").recv_timeout(Duration::from_secs(20));
    let before = apart.load(SeqCst);
    let unknown = {
        let (ns, (tx, rx)) = (Remote(client.clone()), std::sync::mpsc::channel());
        std::thread::spawn(move || tx.send(ns.getattr(meridian_proto::InodeId(999_999))));
        rx
    };
    std::thread::sleep(Duration::from_millis(300));
    let waited = unknown.try_recv().is_err();
    c.pause(false);
    assert!(sent.expect("answered with the database paused").is_ok());
    assert!(
        next.expect("a second create does not wait for the first one's answer")
            .is_ok()
    );
    assert!(
        waited,
        "a getattr that must read answered while the database was paused"
    );
    let absent = unknown.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(matches!(absent, Err(MetaError::NotFound)), "{absent:?}");
    assert!(apart.load(SeqCst) > before, "the getattr ran apart");
    for name in [&b"sent"[..], b"next", b"f19"] {
        ns.lookup(&root, ROOT, name).unwrap();
    }
}
