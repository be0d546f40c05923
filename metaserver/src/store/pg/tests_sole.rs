//! Sole mode ([`super::sole`]) against real PostgreSQL: the contract holds in it, a second
//! writer takes the database over and both see each other's writes, a lost connection
//! frees the lock, and random writes and reads through two stores flipping the lock
//! between them agree with a model.

use super::*;

/// A store alone on `c`'s database that wrote `d/1` = `a`: in sole mode.
pub(super) fn sole_store(c: &testing::Cluster) -> PgStore {
    let store = PgStore::connect(&c.url()).unwrap();
    assert!(store.wait_listening(Duration::from_secs(10)));
    store.write(|t| t.put(Table::Xattrs, b"d/1", b"a")).unwrap();
    assert!(
        store.is_sole(),
        "the only writer takes the sole writer's lock"
    );
    store
}

/// The only writer on its database: in sole mode, and the contract holds there too.
#[test]
fn store_contract_in_sole_mode() {
    let c = testing::Cluster::start();
    let store = sole_store(&c);
    super::super::suite::run_all(&store);
    assert!(store.is_sole());
}

fn value(s: &PgStore, k: &[u8]) -> Option<Vec<u8>> {
    s.read(|t| t.get(Table::Xattrs, k)).unwrap()
}

fn keys(s: &PgStore, w: bool) -> Vec<Vec<u8>> {
    let scan = |t: &dyn ReadTxn| t.scan(Table::Xattrs, b"d/", None, 100);
    let rows = match w {
        true => s.write(|t| scan(t)),
        false => s.read(scan),
    };
    rows.unwrap().into_iter().map(|(k, _)| k).collect()
}

/// A second writer takes the database back from the sole writer: it sees everything
/// the sole writer wrote (also writes not waited for), and the former sole writer
/// forgets what it knew and sees the second writer's changes.
#[test]
fn a_second_writer_takes_the_database_from_the_sole_writer() {
    let c = testing::Cluster::start();
    let a = sole_store(&c);
    // Known to `a` now: the listing of d/ (complete), d/1, d/9's absence.
    assert_eq!(keys(&a, true), vec![b"d/1".to_vec()]);
    assert_eq!(value(&a, b"d/9"), None);
    for (k, v) in [(&b"d/2"[..], &b"a"[..]), (b"d/3", b"a")] {
        a.write_with(Durability::Deferred, |t| t.put(Table::Xattrs, k, v))
            .unwrap();
    }
    a.write_with(Durability::Deferred, |t| t.delete(Table::Xattrs, b"d/1"))
        .unwrap();

    let b = PgStore::connect(&c.url()).unwrap();
    assert!(b.wait_listening(Duration::from_secs(10)));
    let seen = b
        .write(|t| {
            let rows = t.scan(Table::Xattrs, b"d/", None, 100)?;
            t.put(Table::Xattrs, b"d/9", b"b")?;
            t.put(Table::Xattrs, b"d/2", b"b")?;
            Ok(rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>())
        })
        .unwrap();
    assert_eq!(
        seen,
        vec![b"d/2".to_vec(), b"d/3".to_vec()],
        "b saw a's writes"
    );
    assert!(!a.is_sole(), "a gave the lock up before b wrote");
    assert!(
        !b.is_sole(),
        "b asked: it does not take the lock within QUIET"
    );
    assert_eq!(value(&a, b"d/9").as_deref(), Some(&b"b"[..]));
    assert_eq!(value(&a, b"d/2").as_deref(), Some(&b"b"[..]));
    assert_eq!(
        keys(&a, true),
        [&b"d/2"[..], b"d/3", b"d/9"].map(|k| k.to_vec())
    );
    // And a's writes from now on are seen by b.
    a.write(|t| t.delete(Table::Xattrs, b"d/3")).unwrap();
    assert_eq!(keys(&b, false), [&b"d/2"[..], b"d/9"].map(|k| k.to_vec()));
}

/// A sole writer whose database connection ends loses the lock with it: another
/// writer does not wait for it.
#[test]
fn a_sole_writer_that_lost_its_connection_holds_nothing() {
    let c = testing::Cluster::start();
    let a = sole_store(&c);
    // End a's database session (not its listener's) from outside.
    let pid = a.inner.with_conn(|conn| {
        let row = conn
            .driver
            .run(conn.client.query_one("SELECT pg_backend_pid()", &[]))?;
        Ok(row.get::<_, i32>(0))
    });
    execute(
        &c.url(),
        &format!("SELECT pg_terminate_backend({})", pid.unwrap()),
    )
    .unwrap();
    let b = PgStore::connect_opts(&c.url(), Duration::from_secs(3), false).unwrap();
    b.write(|t| t.put(Table::Xattrs, b"d/2", b"b")).unwrap();
    // a connects again (its first call may fail with the lost connection) and sees b's.
    let _ = a.read(|t| t.get(Table::Xattrs, b"d/2"));
    assert_eq!(value(&a, b"d/2").as_deref(), Some(&b"b"[..]));
}

/// Random writes (waited for or not) and reads through two stores, against a model. Their
/// sole-mode waits are shortened so the lock flips between them again and again. Reads
/// run in write transactions (which take the lock, so they see every commit sent before)
/// or, on the store that wrote last, in read transactions.
#[test]
fn two_stores_flipping_the_sole_lock_agree_with_a_model() {
    let c = testing::Cluster::start();
    let stores = [
        PgStore::connect(&c.url()).unwrap(),
        PgStore::connect(&c.url()).unwrap(),
    ];
    for s in &stores {
        assert!(s.wait_listening(Duration::from_secs(10)));
        s.sole_timing(Duration::ZERO, Duration::ZERO);
    }
    let mut model = std::collections::BTreeMap::<Vec<u8>, Vec<u8>>::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (t, mut last, mut flips, mut was_sole) = (Table::Xattrs, 0, 0, [false; 2]);
    for step in 0..600 {
        let i = next(2) as usize;
        let s = &stores[i];
        let key = format!("{}/{}", ["d", "e"][next(2) as usize], next(6)).into_bytes();
        let durability = [Durability::Immediate, Durability::Deferred][next(2) as usize];
        match next(5) {
            0 | 1 => {
                let v = format!("{i}:{step}").into_bytes();
                s.write_with(durability, |w| w.put(t, &key, &v)).unwrap();
                model.insert(key, v);
                last = i;
            }
            2 => {
                s.write_with(durability, |w| w.delete(t, &key)).unwrap();
                model.remove(&key);
                last = i;
            }
            3 => {
                let got = s.write(|w| w.get(t, &key)).unwrap();
                assert_eq!(
                    got.as_ref(),
                    model.get(&key),
                    "step {step}: get through {i}"
                );
            }
            _ => {
                let prefix = &key[..2];
                let read = |r: &dyn ReadTxn| r.scan(t, prefix, None, 100);
                let (s, via) = match next(2) {
                    0 => (s, "a write"),
                    _ => (&stores[last], "a read"),
                };
                let got = match via {
                    "a write" => s.write(|w| read(w)),
                    _ => s.read(read),
                }
                .unwrap();
                let want: Vec<_> = model
                    .range(prefix.to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got, want, "step {step}: scan through {via}");
            }
        }
        let now = [stores[0].is_sole(), stores[1].is_sole()];
        if now != was_sole && now.contains(&true) {
            flips += 1;
        }
        assert!(!(now[0] && now[1]), "step {step}: both sole");
        was_sole = now;
    }
    assert!(flips >= 10, "the lock changed hands only {flips} times");
}

/// A request lost on its way (the holder was making its listening connection again): the
/// waiting writer asks again and gets the lock, rather than waiting out its timeout.
#[test]
fn a_lost_request_is_asked_again() {
    let c = testing::Cluster::start();
    let a = sole_store(&c);
    a.ignore_requests(1);
    let b = PgStore::connect_opts(&c.url(), Duration::from_secs(3), false).unwrap();
    let t0 = std::time::Instant::now();
    b.write(|t| t.put(Table::Xattrs, b"d/2", b"b")).unwrap();
    assert!(
        t0.elapsed() >= sole::ASK_EVERY,
        "the first request was heard"
    );
    assert!(!a.is_sole());
    assert_eq!(value(&a, b"d/2").as_deref(), Some(&b"b"[..]));
}

/// Rows written behind the store's back (raw SQL, no lock: only a test does that), to tell
/// what it answers from memory.
fn sneak_in(c: &testing::Cluster, keys: impl IntoIterator<Item = String>) {
    let rows: Vec<String> = keys
        .into_iter()
        .map(|k| format!("(2, '\\x{}'::bytea, 'x')", hex(k.as_bytes())))
        .collect();
    let sql = format!("INSERT INTO meridian_kv VALUES {}", rows.join(","));
    execute(&c.url(), &sql).unwrap();
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A listing read whole in sole mode answers later lookups in it, absent names included;
/// one longer than [`sole::LISTING`] is remembered as such and read name by name.
#[test]
fn a_listing_read_whole_answers_later_lookups() {
    let c = testing::Cluster::start();
    let s = sole_store(&c); // holds d/1
    assert_eq!(
        s.read(|t| Ok(t.listing_hint())).unwrap(),
        Some(sole::LISTING)
    );
    let listed = |s: &PgStore, prefix: &[u8]| {
        s.read(|t| t.prefetch_with_scans(&[], &[(Table::Xattrs, prefix, sole::LISTING)]))
            .unwrap()
    };
    listed(&s, b"d/");
    sneak_in(&c, ["d/2".to_string()]);
    assert_eq!(
        value(&s, b"d/2"),
        None,
        "d/ is known whole: answered from memory"
    );
    assert_eq!(keys(&s, true), vec![b"d/1".to_vec()]);

    sneak_in(&c, (0..=sole::LISTING).map(|i| format!("e/{i:05}")));
    listed(&s, b"e/");
    sneak_in(&c, ["e/zz".to_string()]);
    assert_eq!(
        value(&s, b"e/zz").as_deref(),
        Some(&b"x"[..]),
        "e/ is big: asked"
    );
    assert!(s.is_sole());
}

/// Deferred writes do not take turns with the database: while it answers nothing (its
/// processes stopped), the sole writer's deferred writes still return, each sent after the
/// one before (waiting for earlier answers would run into the store's 2 s timeout and
/// fail), and once it answers again every one of them is there.
#[test]
fn deferred_writes_do_not_wait_for_the_answers_to_earlier_ones() {
    let c = testing::Cluster::start();
    let store = PgStore::connect_with(&c.url(), Duration::from_secs(2)).unwrap();
    assert!(store.wait_listening(Duration::from_secs(10)));
    store.write(|t| t.put(Table::Xattrs, b"p/0", b"a")).unwrap();
    assert!(store.is_sole());
    c.pause(true);
    for i in 1..=20 {
        let key = format!("p/{i}");
        let sent = store.write_with(Durability::Deferred, |t| {
            t.put(Table::Xattrs, key.as_bytes(), b"a")
        });
        if sent.is_err() {
            c.pause(false);
        }
        sent.unwrap();
    }
    c.pause(false);
    // An immediate write waits for its own answer, so for every one sent before it.
    store
        .write(|t| t.put(Table::Xattrs, b"p/21", b"a"))
        .unwrap();
    let rows = c.number(&format!(
        "SELECT count(*) FROM meridian_kv WHERE tbl = {} AND k >= 'p/'::bytea AND k < 'p0'::bytea",
        txn::tbl(Table::Xattrs)
    ));
    assert_eq!(rows, 22, "every deferred write landed");
}
