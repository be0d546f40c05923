//! Criterion benchmarks of one metadata call (`getattr`, and a create+unlink pair) served
//! three ways in one run: the namespace in process (embedded mode), through the wire codec
//! in process (encode → frame → decode → dispatch, no transport), and through a real QUIC
//! metaserver on loopback (a server task on its own runtime, a `QuicClient` as a mount
//! uses it). The ratio QUIC / in-process is what the site-metaserver issue asks for.

use criterion::{Criterion, criterion_group, criterion_main};
use meridian_metaserver::service::client::QuicClient;
use meridian_metaserver::service::{clients, server};
use meridian_metaserver::{Meta, MetaConfig, RedbStore};
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
    let f = ns.create(&root, ROOT, b"bench-file", 0o644).unwrap();
    ns.release(f.ino).unwrap();
    c.bench_function(&format!("getattr ({name})"), |b| {
        b.iter(|| black_box(ns.getattr(f.ino).unwrap()))
    });
    let mut i = 0u64;
    c.bench_function(&format!("create+release+unlink ({name})"), |b| {
        b.iter(|| {
            i += 1;
            let n = format!("f{i}");
            let a = ns.create(&root, ROOT, n.as_bytes(), 0o644).unwrap();
            ns.release(a.ino).unwrap();
            ns.unlink(&root, ROOT, n.as_bytes()).unwrap();
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

    let cfg = server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: dir.path().join("s.crt"),
        key: dir.path().join("s.key"),
        clients: dir.path().join("clients"),
        names: vec![],
    };
    let token = clients::add(&cfg.clients, "bench").unwrap();
    let rt = server::runtime().unwrap();
    let srv = Arc::new(rt.block_on(async { server::Server::bind(&cfg) }).unwrap());
    let addr = srv.local_addr();
    let ns = open("c.redb");
    let s2 = srv.clone();
    let file = cfg.clients.clone();
    std::thread::spawn(move || rt.block_on(async move { s2.serve(ns, file).await }));
    let client =
        QuicClient::connect(addr, &cfg.cert, "bench", &token, Duration::from_secs(10)).unwrap();
    calls(c, "QUIC loopback", &Remote(client));
    srv.close();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = meta_rpc
}
criterion_main!(benches);
