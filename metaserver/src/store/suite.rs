//! The store contract as one test suite, run against every backend (as JuiceFS's testMeta).

use super::{Durability, Store, Table};
use meridian_proto::MetaError;

pub(crate) fn run_all<S: Store>(s: &S) {
    put_get_delete(s);
    failed_transaction_leaves_no_trace(s);
    scan_respects_prefix_cursor_and_limit(s);
    tables_are_separate(s);
    deferred_writes_are_visible_at_once(s);
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
