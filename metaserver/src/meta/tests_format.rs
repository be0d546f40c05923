//! The namespace's life across restarts and formats (redb): files unlinked while open are
//! purged at the next start, a namespace in an unknown format is refused by name, and a
//! format-1 namespace opens in format 2 with its counters and placements carried over.

use super::tests::{file, root};
use super::{Meta, MetaConfig};
use crate::store::{RedbStore, Store};
use meridian_proto::*;

#[test]
fn orphans_are_purged_at_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.redb");
    let ino = {
        let meta = Meta::open(RedbStore::open(&path).unwrap(), MetaConfig::default()).unwrap();
        let f = file(&meta, ROOT, "f");
        meta.open(&root(), f.ino, true, true).unwrap();
        meta.unlink(&root(), ROOT, b"f").unwrap();
        f.ino // the process "dies" here with the file open
    };
    let meta = Meta::open(RedbStore::open(&path).unwrap(), MetaConfig::default()).unwrap();
    assert_eq!(meta.getattr(ino), Err(MetaError::NotFound));
    assert_eq!(meta.statfs().unwrap().files, 1);
}

#[test]
fn a_namespace_in_another_format_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.redb");
    drop(Meta::open(RedbStore::open(&path).unwrap(), MetaConfig::default()).unwrap());
    {
        let raw = RedbStore::open(&path).unwrap();
        let seven = postcard::to_allocvec(&7u64).unwrap();
        raw.write(|t| t.put(crate::store::Table::Meta, crate::records::FORMAT, &seven))
            .unwrap();
    }
    match Meta::open(RedbStore::open(&path).unwrap(), MetaConfig::default()) {
        Err(MetaError::Corrupt(m)) => assert!(m.contains("format 7"), "{m}"),
        other => panic!("expected a format error, got {:?}", other.map(|_| ())),
    }
}

/// A namespace written in format 1 (each counter in a row of its own, a file's placement
/// in a hidden xattr) opens in format 2 with every counter carried into the one row:
/// inode numbers, file count, bytes and change-feed stamps go on from where they were. A
/// format-1 inode (no placement in it) still reads, with its placement from the xattr,
/// which moves into the inode when the file is next placed.
#[test]
fn format_1_namespace_opens_in_format_2() {
    use crate::records::{COUNTERS, FORMAT, PACKED};
    use crate::store::Table::{Inodes, Meta as M, Xattrs};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.redb");
    let (shot, last, stamps, files) = {
        let meta = Meta::open(RedbStore::open(&path).unwrap(), MetaConfig::default()).unwrap();
        let ns: &dyn Namespace = &meta;
        let root = Caller::root();
        let d = ns.mkdir(&root, ROOT, b"shot", 0o755).unwrap();
        let f = ns.create(&root, d.ino, b"a.exr", 0o644).unwrap();
        ns.release(f.ino).unwrap();
        let feed = ns.changes(Hlc(0), 10_000).unwrap();
        let files = ns.statfs().unwrap().files;
        (d.ino, f.ino, feed.last().unwrap().hlc, files)
    };
    // Rewrite the counters and the file's inode as format 1 kept them.
    let (legacy, inode_key, record_key) = legacy_placement(last, shot);
    let raw = RedbStore::open(&path).unwrap();
    raw.write(|t| {
        let v = t.get(Inodes, &inode_key)?.unwrap();
        let now: crate::records::InodeRec = postcard::from_bytes(&v).unwrap();
        let v1 = (now.attr, now.parent, now.target);
        t.put(Inodes, &inode_key, &postcard::to_allocvec(&v1).unwrap())?;
        t.put(
            Xattrs,
            &record_key,
            &postcard::to_allocvec(&legacy).unwrap(),
        )?;
        let packed = t.get(M, COUNTERS)?.expect("format 2 writes the row");
        let values: [u64; PACKED.len()] = postcard::from_bytes(&packed).unwrap();
        for (name, v) in PACKED.iter().zip(values) {
            t.put(M, name, &postcard::to_allocvec(&v).unwrap())?;
        }
        t.delete(M, COUNTERS)?;
        t.put(M, FORMAT, &postcard::to_allocvec(&1u64).unwrap())
    })
    .unwrap();
    drop(raw);
    let meta = Meta::open(RedbStore::open(&path).unwrap(), MetaConfig::default()).unwrap();
    let ns: &dyn Namespace = &meta;
    assert_eq!(ns.statfs().unwrap().files, files);
    let g = ns.create(&Caller::root(), ROOT, b"b.exr", 0o644).unwrap();
    assert!(
        g.ino.0 > last.0,
        "inode numbers start again: {:?} after {:?}",
        g.ino,
        last
    );
    let feed = ns.changes(stamps, 10).unwrap();
    assert!(!feed.is_empty() && feed[0].hlc > stamps, "{feed:?}");
    assert_eq!(ns.statfs().unwrap().files, files + 1);
    let rows = meta
        .store()
        .read(|t| t.scan(M, b"", None, 100))
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect::<Vec<_>>();
    assert_eq!(rows, ["counters", "format"], "the old rows are gone");
    let format = meta.store().read(|t| t.get(M, FORMAT)).unwrap().unwrap();
    assert_eq!(postcard::from_bytes::<u64>(&format).unwrap(), 2);

    let read = |ns: &dyn Namespace| ns.getxattr(&Caller::root(), last, b"user.meridian.placement");
    assert_eq!(
        read(ns).unwrap(),
        b"legacy-slo",
        "read from format 1's xattr"
    );
    let commit = Commit {
        chunks: Vec::new(),
        inline: None,
        size: 10,
        mtime: Timestamp::now(),
    };
    ns.commit(last, &commit).unwrap();
    assert_eq!(read(ns).unwrap(), b"", "re-evaluated (no objectives)");
    let (inode, xattr) = meta
        .store()
        .read(|t| Ok((t.get(Inodes, &inode_key)?, t.get(Xattrs, &record_key)?)))
        .unwrap();
    assert_eq!(xattr, None, "format 1's record is gone");
    let inode: crate::records::InodeRec = postcard::from_bytes(&inode.unwrap()).unwrap();
    assert_eq!(inode.placement.unwrap().name, b"a.exr");
}

/// A format-1 placement record for `ino` (as `a.exr` in `dir`, at generation 0), with the
/// keys of its inode row and of the xattr row that held it.
fn legacy_placement(
    ino: InodeId,
    dir: InodeId,
) -> (crate::records::PlacementRec, Vec<u8>, Vec<u8>) {
    let key = crate::records::ino_key(ino).to_vec();
    let mut xattr = key.clone();
    xattr.extend_from_slice(b"system.meridian.placement");
    let rec = crate::records::PlacementRec {
        parent: dir,
        name: b"a.exr".to_vec(),
        generation: 0,
        slos: vec!["legacy-slo".into()],
    };
    (rec, key, xattr)
}
