//! Calls tried in place ([`crate::store::nowait`]) on real PostgreSQL: a sole writer's
//! write that reads nothing is made without waiting; a call that would wait gives up soon
//! (not after the store's timeout) having changed nothing, and the connection stays
//! usable; a write whose commit must be waited for gives up before it is sent; a large
//! deferred write is written whole before it returns.

use super::tests_sole::sole_store;
use super::*;
use crate::store::nowait;
use std::time::Instant;

/// A generous deadline for an attempt: these tests are about what gives up, not when.
const BUDGET: Duration = Duration::from_millis(100);

/// `k` as the database holds it, read on a connection of its own (a store in shared mode:
/// reads take no lock, so the sole writer keeps its own).
fn in_database(c: &testing::Cluster, k: &[u8]) -> Option<Vec<u8>> {
    let other = PgStore::connect_opts(&c.url(), DEFAULT_TIMEOUT, false).unwrap();
    other.read(|t| t.get(Table::Xattrs, k)).unwrap()
}

fn put(s: &PgStore, k: &[u8], v: &[u8]) -> MetaResult<()> {
    s.write_with(Durability::Deferred, |t| t.put(Table::Xattrs, k, v))
}

#[test]
fn a_sole_writer_makes_a_write_that_reads_nothing_in_place() {
    let c = testing::Cluster::start();
    let shared = PgStore::connect_opts(&c.url(), DEFAULT_TIMEOUT, false).unwrap();
    shared
        .write(|t| t.put(Table::Xattrs, b"d/0", b"s"))
        .unwrap();
    assert!(!shared.answers_at_once(), "shared mode reads and locks");
    drop(shared);
    let store = sole_store(&c);
    assert!(store.answers_at_once());
    for i in 0..20u8 {
        let k = [b'd', b'/', b'a', i];
        let made = nowait::attempt(BUDGET, || put(&store, &k, b"x"));
        assert_eq!(made, Some(Ok(())), "write {i} in place");
    }
    store.sync().unwrap();
    assert_eq!(in_database(&c, b"d/a\x13").as_deref(), Some(&b"x"[..]));
}

#[test]
fn a_call_in_place_that_would_wait_gives_up_soon_and_changes_nothing() {
    let c = testing::Cluster::start();
    let store = PgStore::connect_with(&c.url(), Duration::from_secs(60)).unwrap();
    assert!(store.wait_listening(Duration::from_secs(10)));
    put(&store, b"d/1", b"a").unwrap();
    assert!(store.is_sole());
    c.pause(true);
    // Sent, not waited for: the database does not answer while paused.
    put(&store, b"d/6", b"a").unwrap();
    let since = Instant::now();
    // Sent after d/6 without waiting for its answer: it reads nothing.
    let later = nowait::attempt(BUDGET, || put(&store, b"d/7", b"a"));
    // A row the store never saw must be read.
    let unknown = nowait::attempt(BUDGET, || store.read(|t| t.get(Table::Xattrs, b"u/1")));
    // So must a write that reads one first: it gives up before it sends anything.
    let reads_first = nowait::attempt(BUDGET, || {
        store.write_with(Durability::Deferred, |t| {
            t.get(Table::Xattrs, b"u/2")?;
            t.put(Table::Xattrs, b"d/8", b"a")
        })
    });
    let took = since.elapsed();
    c.pause(false);
    assert_eq!(
        later,
        Some(Ok(())),
        "a write that reads nothing waits for no answer"
    );
    assert_eq!(unknown, None, "gave up waiting for a read");
    assert_eq!(reads_first, None, "gave up waiting for the write's read");
    assert!(
        took < Duration::from_secs(30),
        "gave up at its deadline, not the timeout: {took:?}"
    );
    assert!(store.is_sole(), "the connection and the lock stay");
    assert_eq!(value(&store, b"d/6").as_deref(), Some(&b"a"[..]));
    assert_eq!(value(&store, b"d/7").as_deref(), Some(&b"a"[..]));
    assert_eq!(
        value(&store, b"d/8"),
        None,
        "nothing of a call that gave up is written"
    );
    store.sync().unwrap();
    assert_eq!(in_database(&c, b"d/6").as_deref(), Some(&b"a"[..]));
    assert_eq!(in_database(&c, b"d/7").as_deref(), Some(&b"a"[..]));
    assert_eq!(in_database(&c, b"d/8"), None);
    // Run again outside an attempt, the call that gave up is made.
    put(&store, b"d/8", b"a").unwrap();
    assert_eq!(value(&store, b"d/8").as_deref(), Some(&b"a"[..]));
}

#[test]
fn a_write_whose_commit_is_waited_for_gives_up_before_it_is_sent() {
    let c = testing::Cluster::start();
    let store = sole_store(&c);
    let durable = nowait::attempt(BUDGET, || {
        store.write(|t| t.put(Table::Xattrs, b"d/8", b"a"))
    });
    assert_eq!(durable, None, "a durable write waits for its commit");
    store.sync().unwrap();
    assert_eq!(in_database(&c, b"d/8"), None);
    assert_eq!(value(&store, b"d/8"), None);
    // A large deferred write is written whole to the socket, not waited for: in place.
    let big = vec![7u8; 64 << 10];
    let large = nowait::attempt(BUDGET, || put(&store, b"d/9", &big));
    assert_eq!(large, Some(Ok(())));
    store.sync().unwrap();
    assert_eq!(in_database(&c, b"d/9"), Some(big));
}

/// A deferred write returns once the socket took all of it: not before (the rest would
/// wait in the connection's buffer for the next call, lost if the process died first).
#[test]
fn a_deferred_write_bigger_than_the_socket_buffers_returns_once_written_whole() {
    let c = testing::Cluster::start();
    let store = Arc::new(sole_store(&c)); // a write sends no query first
    store.sync().unwrap(); // nothing unanswered: the write below waits for nothing else
    c.pause(true);
    let big = vec![1u8; 32 << 20]; // more than both ends' socket buffers hold
    let (s2, b2, (tx, rx)) = (store.clone(), big.clone(), std::sync::mpsc::channel());
    std::thread::spawn(move || tx.send(put(&s2, b"d/big", &b2)));
    let early = rx.recv_timeout(Duration::from_millis(500));
    c.pause(false);
    assert!(
        early.is_err(),
        "returned before the socket took it all: {early:?}"
    );
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), Ok(()));
    store.sync().unwrap();
    assert_eq!(in_database(&c, b"d/big").map(|v| v.len()), Some(big.len()));
}

#[test]
fn a_connection_in_use_elsewhere_makes_a_call_in_place_give_up() {
    let c = testing::Cluster::start();
    let store = Arc::new(sole_store(&c));
    let held = store.inner.conn.lock();
    let s2 = store.clone();
    let tried = std::thread::spawn(move || {
        let answers = s2.answers_at_once();
        (answers, nowait::attempt(BUDGET, || put(&s2, b"d/2", b"a")))
    })
    .join()
    .unwrap();
    drop(held);
    assert_eq!(
        tried,
        (false, None),
        "neither tried nor waited for the lock"
    );
    assert_eq!(value(&store, b"d/2"), None);
}

fn value(s: &PgStore, k: &[u8]) -> Option<Vec<u8>> {
    s.read(|t| t.get(Table::Xattrs, k)).unwrap()
}
