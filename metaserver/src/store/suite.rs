//! The store contract as one test suite, run against every backend (as JuiceFS's testMeta).

use super::{Durability, Pair, Store, Table};
use meridian_proto::MetaError;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeMap;

pub(crate) fn run_all<S: Store>(s: &S) {
    put_get_delete(s);
    failed_transaction_leaves_no_trace(s);
    scan_respects_prefix_cursor_and_limit(s);
    tables_are_separate(s);
    deferred_writes_are_visible_at_once(s);
    transactions_read_their_own_writes(s);
    prefetched_scans_answer_as_fresh_ones(s);
}

/// Scans a transaction announced (`prefetch_with_scans`) answer as unannounced ones do,
/// also after its own writes in their range, and when a scan wants more rows than the
/// prefetch fetched.
fn prefetched_scans_answer_as_fresh_ones<S: Store>(s: &S) {
    let t = Table::Xattrs;
    s.write(|w| {
        for (k, _) in w.scan(t, b"", None, usize::MAX)? {
            w.delete(t, &k)?;
        }
        for k in [b"p1", b"p2", b"p3", b"p4", b"p5"] {
            w.put(t, k, b"v")?;
        }
        Ok(())
    })
    .unwrap();
    let keys = |rows: Vec<Pair>| rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let ks = |names: &[&[u8]]| names.iter().map(|n| n.to_vec()).collect::<Vec<_>>();
    s.write(|w| {
        w.prefetch_with_scans(&[(t, b"p1")], &[(t, b"p", 2), (t, b"q", 5)])?;
        w.delete(t, b"p1")?;
        assert_eq!(keys(w.scan(t, b"p", None, 2)?), ks(&[b"p2", b"p3"]));
        assert_eq!(keys(w.scan(t, b"p", None, 9)?).len(), 4);
        w.put(t, b"p0", b"v")?;
        assert_eq!(keys(w.scan(t, b"p", None, 1)?), ks(&[b"p0"]));
        assert!(w.scan(t, b"q", None, 5)?.is_empty());
        assert_eq!(w.get(t, b"p1")?, None);
        Ok(())
    })
    .unwrap();
}

/// One step inside a write transaction.
#[derive(Clone, Debug)]
enum Op {
    Put(bool, Vec<u8>, u8),
    Delete(bool, Vec<u8>),
    Get(bool, Vec<u8>),
    Scan(bool, Vec<u8>, Option<Vec<u8>>, usize),
    /// Keys to get, and scans `(table, prefix, limit)` from the prefix's start.
    Prefetch(Vec<(bool, Vec<u8>)>, Vec<(bool, Vec<u8>, usize)>),
}

fn op() -> impl Strategy<Value = Op> {
    let key = || proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0xff)], 0..3);
    prop_oneof![
        (any::<bool>(), key(), any::<u8>()).prop_map(|(t, k, v)| Op::Put(t, k, v)),
        (any::<bool>(), key()).prop_map(|(t, k)| Op::Delete(t, k)),
        (any::<bool>(), key()).prop_map(|(t, k)| Op::Get(t, k)),
        (any::<bool>(), key(), proptest::option::of(key()), 0..5usize)
            .prop_map(|(t, p, a, l)| Op::Scan(t, p, a, l)),
        (
            proptest::collection::vec((any::<bool>(), key()), 0..4),
            proptest::collection::vec((any::<bool>(), key(), 0..5usize), 0..3),
        )
            .prop_map(|(keys, scans)| Op::Prefetch(keys, scans)),
    ]
}

type Model = BTreeMap<(bool, Vec<u8>), u8>;

fn table(t: bool) -> Table {
    if t { Table::Data } else { Table::Meta }
}

/// What `Op::Scan` must return, from the model.
fn model_scan(m: &Model, t: bool, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Vec<Pair> {
    let start = super::scan_start(prefix, after);
    m.iter()
        .filter(|((mt, k), _)| *mt == t && k.starts_with(prefix) && *k >= start)
        .take(limit)
        .map(|((_, k), v)| (k.clone(), vec![*v]))
        .collect()
}

/// Inside a write transaction, gets and scans see the committed state with the
/// transaction's own puts and deletes applied, whatever their order (stores that buffer
/// writes merge them into what they read); after commit, a new read sees the same.
fn transactions_read_their_own_writes<S: Store>(s: &S) {
    let base = proptest::collection::vec(
        (
            any::<bool>(),
            proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0xff)], 0..3),
            any::<u8>(),
        ),
        0..8,
    );
    let mut runner = TestRunner::new(Config::with_cases(48));
    runner
        .run(
            &(base, proptest::collection::vec(op(), 1..24)),
            |(base, ops)| {
                let mut model = Model::new();
                s.write(|t| {
                    for tb in [true, false] {
                        for (k, _) in t.scan(table(tb), b"", None, usize::MAX)? {
                            t.delete(table(tb), &k)?;
                        }
                    }
                    for (tb, k, v) in &base {
                        t.put(table(*tb), k, &[*v])?;
                        model.insert((*tb, k.clone()), *v);
                    }
                    Ok(())
                })
                .unwrap();
                s.write(|t| {
                    for op in &ops {
                        match op {
                            Op::Put(tb, k, v) => {
                                t.put(table(*tb), k, &[*v])?;
                                model.insert((*tb, k.clone()), *v);
                            }
                            Op::Delete(tb, k) => {
                                t.delete(table(*tb), k)?;
                                model.remove(&(*tb, k.clone()));
                            }
                            Op::Get(tb, k) => assert_eq!(
                                t.get(table(*tb), k)?,
                                model.get(&(*tb, k.clone())).map(|v| vec![*v]),
                                "get {op:?}"
                            ),
                            Op::Prefetch(keys, scans) => {
                                let keys: Vec<(Table, &[u8])> = keys
                                    .iter()
                                    .map(|(tb, k)| (table(*tb), k.as_slice()))
                                    .collect();
                                let scans: Vec<(Table, &[u8], usize)> = scans
                                    .iter()
                                    .map(|(tb, p, l)| (table(*tb), p.as_slice(), *l))
                                    .collect();
                                t.prefetch_with_scans(&keys, &scans)?;
                            }
                            Op::Scan(tb, p, a, l) => assert_eq!(
                                t.scan(table(*tb), p, a.as_deref(), *l)?,
                                model_scan(&model, *tb, p, a.as_deref(), *l),
                                "{op:?}"
                            ),
                        }
                    }
                    Ok(())
                })
                .unwrap();
                for tb in [true, false] {
                    let all = s
                        .read(|t| t.scan(table(tb), b"", None, usize::MAX))
                        .unwrap();
                    prop_assert_eq!(all, model_scan(&model, tb, b"", None, usize::MAX));
                }
                Ok(())
            },
        )
        .unwrap();
}

fn deferred_writes_are_visible_at_once<S: Store>(s: &S) {
    s.write_with(Durability::Deferred, |t| t.put(Table::Meta, b"soon", b"1"))
        .unwrap();
    assert_eq!(
        s.read(|t| t.get(Table::Meta, b"soon")).unwrap(),
        Some(b"1".to_vec())
    );
    let r: Result<(), _> = s.write_with(Durability::Deferred, |t| {
        t.put(Table::Meta, b"soon", b"2")?;
        Err(MetaError::Exists)
    });
    assert!(r.is_err());
    assert_eq!(
        s.read(|t| t.get(Table::Meta, b"soon")).unwrap(),
        Some(b"1".to_vec())
    );
    s.sync().unwrap();
}

fn put_get_delete<S: Store>(s: &S) {
    s.write(|t| t.put(Table::Inodes, b"a", b"1")).unwrap();
    assert_eq!(
        s.read(|t| t.get(Table::Inodes, b"a")).unwrap(),
        Some(b"1".to_vec())
    );
    s.write(|t| t.put(Table::Inodes, b"a", b"2")).unwrap();
    assert_eq!(
        s.read(|t| t.get(Table::Inodes, b"a")).unwrap(),
        Some(b"2".to_vec())
    );
    s.write(|t| t.delete(Table::Inodes, b"a")).unwrap();
    assert_eq!(s.read(|t| t.get(Table::Inodes, b"a")).unwrap(), None);
}

fn failed_transaction_leaves_no_trace<S: Store>(s: &S) {
    s.write(|t| t.put(Table::Meta, b"keep", b"old")).unwrap();
    let r: Result<(), _> = s.write(|t| {
        t.put(Table::Meta, b"keep", b"new")?;
        t.put(Table::Meta, b"fresh", b"x")?;
        t.delete(Table::Meta, b"keep")?;
        assert_eq!(t.get(Table::Meta, b"fresh")?, Some(b"x".to_vec()));
        Err(MetaError::NotFound)
    });
    assert_eq!(r, Err(MetaError::NotFound));
    assert_eq!(
        s.read(|t| t.get(Table::Meta, b"keep")).unwrap(),
        Some(b"old".to_vec())
    );
    assert_eq!(s.read(|t| t.get(Table::Meta, b"fresh")).unwrap(), None);
}

fn scan_respects_prefix_cursor_and_limit<S: Store>(s: &S) {
    s.write(|t| {
        for k in [
            &b"p\x00"[..],
            b"p\x01a",
            b"p\x01b",
            b"p\x01c",
            b"p\x01\xff",
            b"p\x02a",
            b"q",
        ] {
            t.put(Table::Dentries, k, k)?;
        }
        Ok(())
    })
    .unwrap();
    let keys = |after: Option<&[u8]>, limit| {
        s.read(|t| t.scan(Table::Dentries, b"p\x01", after, limit))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(None, 10),
        vec![
            b"p\x01a".to_vec(),
            b"p\x01b".to_vec(),
            b"p\x01c".to_vec(),
            b"p\x01\xff".to_vec()
        ]
    );
    assert_eq!(
        keys(Some(b"a"), 2),
        vec![b"p\x01b".to_vec(), b"p\x01c".to_vec()]
    );
    assert_eq!(keys(Some(b"\xff"), 10), Vec::<Vec<u8>>::new());
    let all_ff = s.read(|t| t.scan(Table::Dentries, b"", None, 100)).unwrap();
    assert_eq!(all_ff.len(), 7);
}

fn tables_are_separate<S: Store>(s: &S) {
    s.write(|t| t.put(Table::Xattrs, b"same", b"x")).unwrap();
    assert_eq!(s.read(|t| t.get(Table::Orphans, b"same")).unwrap(), None);
}
