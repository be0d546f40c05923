//! Criterion benchmarks of one metadata call (`getattr`, and a create+release+unlink)
//! served five ways in one run: the namespace in process (embedded mode; and on the
//! PostgreSQL store when Debian's postgresql is installed), through the wire
//! codec in process (encode → frame → decode → dispatch, no transport), and through a real
//! QUIC metaserver on loopback (a server on its own thread, a `QuicClient` as a mount uses
//! it) — with the client's coherent cache (a repeated getattr is a hit) and without it
//! (every call a round trip).

use criterion::{Criterion, criterion_group, criterion_main};
use meridian_metaserver::service::client::QuicClient;
use meridian_metaserver::service::{clients, server};
use meridian_metaserver::store::pg::testing::Cluster;
use meridian_metaserver::{Meta, MetaConfig, PgStore, RedbStore};
use meridian_proto::wire::{Decoder, Remote, Request, Response, Transport, dispatch, encode};
use meridian_proto::{Caller, MetaResult, Namespace, ROOT};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

struct Codec(Arc<dyn Namespace>);
impl Transport for Codec {
    fn call(&self, req: Request) -> MetaResult<Response> {
        let mut d = Decoder::default();
        d.push(&encode(&req).unwrap());
        let req: Request = d.decode_next().unwrap().unwrap();
        let mut d = Decoder::default();
        d.push(&encode(&dispatch(&*self.0, 0, req)).unwrap());
        Ok(d.decode_next().unwrap().unwrap())
    }
}

fn calls(c: &mut Criterion, name: &str, ns: &dyn Namespace) {
    let root = Caller::root();
    // Names of their own: two of the clients share one metaserver.
    let d = ns
        .mkdir(&root, ROOT, name.replace(' ', "-").as_bytes(), 0o755)
        .unwrap();
    let f = ns.create(&root, d.ino, b"bench-file", 0o644).unwrap();
    ns.release(f.ino).unwrap();
    c.bench_function(&format!("getattr ({name})"), |b| {
        b.iter(|| black_box(ns.getattr(f.ino).unwrap()))
    });
    let mut i = 0u64;
    c.bench_function(&format!("create+release+unlink ({name})"), |b| {
        b.iter(|| {
            i += 1;
            let n = format!("f{i}");
            let a = ns.create(&root, d.ino, n.as_bytes(), 0o644).unwrap();
            ns.release(a.ino).unwrap();
            ns.unlink(&root, d.ino, n.as_bytes()).unwrap();
        })
    });
}

fn meta_rpc(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let open = |n: &str| -> Arc<dyn Namespace> {
        Arc::new(
            Meta::open(
                RedbStore::open(&dir.path().join(n)).unwrap(),
                MetaConfig::default(),
            )
            .unwrap(),
        )
    };
    calls(c, "in process", &*open("a.redb"));
    calls(c, "wire codec", &Remote(Codec(open("b.redb"))));
    if std::path::Path::new("/usr/lib/postgresql").exists() {
        // The same calls on the PostgreSQL store (a throwaway cluster on loopback).
        let cluster = Cluster::start();
        let pg = Meta::open(
            PgStore::connect(&cluster.url()).unwrap(),
            MetaConfig::default(),
        )
        .unwrap();
        calls(c, "in process, PostgreSQL", &pg);
    }

    let cfg = server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: dir.path().join("s.crt"),
        key: dir.path().join("s.key"),
        clients: dir.path().join("clients"),
        names: vec![],
        lease: meridian_metaserver::service::LEASE,
        ack_wait: meridian_metaserver::service::hub::ACK_WAIT,
    };
    let token = clients::add(&cfg.clients, "bench").unwrap();
    let rt = server::runtime().unwrap();
    let srv = Arc::new(rt.block_on(async { server::Server::bind(&cfg) }).unwrap());
    let addr = srv.local_addr();
    let ns = open("c.redb");
    let s2 = srv.clone();
    let file = cfg.clients.clone();
    std::thread::spawn(move || rt.block_on(async move { s2.serve(ns, file).await }));
    let connect =
        || QuicClient::connect(addr, &cfg.cert, "bench", &token, Duration::from_secs(10)).unwrap();
    calls(c, "QUIC loopback, cached", &Remote(connect()));
    calls(
        c,
        "QUIC loopback, round trip",
        &Remote(connect().without_cache()),
    );
    srv.close();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = meta_rpc
}
criterion_main!(benches);
