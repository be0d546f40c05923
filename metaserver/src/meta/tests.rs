//! The namespace test suite, run against every store backend (as JuiceFS's testMeta).

use super::{Meta, MetaConfig};
use crate::store::{MemStore, RedbStore, Store};
use meridian_proto::wire::{Decoder, Remote, Request, Response, Transport, dispatch, encode};
use meridian_proto::*;

fn user(uid: u32) -> Caller {
    Caller::new(uid, uid, vec![])
}

type Case = (&'static str, fn(&dyn Namespace));

fn suite<S: Store>(make: impl Fn() -> S) {
    let cases: &[Case] = &[
        ("create_lookup_readdir", create_lookup_readdir),
        ("directory_nlink_and_rmdir", directory_nlink_and_rmdir),
        ("hard_links", hard_links),
        ("resolve_names", resolve_names),
        ("rename_rules", rename_rules),
        (
            "rename_exchange_and_noreplace",
            rename_exchange_and_noreplace,
        ),
        ("permissions_and_sticky", permissions_and_sticky),
        ("setgid_directories", setgid_directories),
        ("setattr_rules", setattr_rules),
        ("xattrs", xattrs),
        ("commit_and_truncate", commit_and_truncate),
        (
            "unlinked_open_file_survives_until_release",
            unlinked_open_file_survives_until_release,
        ),
        ("names_are_checked", names_are_checked),
        ("byte_range_locks", byte_range_locks),
        ("change_feed", change_feed),
        (
            "objectives_and_placement",
            super::tests_placement::objectives_and_placement,
        ),
        (
            "set_id_bits_go_as_on_a_local_disk",
            super::tests_privileges::set_id_bits_go_as_on_a_local_disk,
        ),
    ];
    for (name, case) in cases {
        let meta = Meta::open(make(), MetaConfig::default()).unwrap();
        eprintln!("namespace suite: {name}");
        case(&meta);
        // The same case through the wire protocol: every request and response encoded,
        // framed, decoded and dispatched, as a metaserver serves a client.
        let remote = Remote(Loopback(Meta::open(make(), MetaConfig::default()).unwrap()));
        eprintln!("namespace suite over the wire: {name}");
        case(&remote);
    }
}

/// A transport that runs the codec both ways and dispatches in process.
struct Loopback<N>(N);

impl<N: Namespace + Send + Sync> Transport for Loopback<N> {
    fn call(&self, req: Request) -> MetaResult<Response> {
        let mut d = Decoder::default();
        d.push(&encode(&req).unwrap());
        let req: Request = d.decode_next().unwrap().expect("a whole frame");
        let mut d = Decoder::default();
        d.push(&encode(&dispatch(&self.0, 0, req)).unwrap());
        Ok(d.decode_next().unwrap().expect("a whole frame"))
    }
}

#[test]
fn suite_on_postgresql() {
    let cluster = crate::store::pg::testing::Cluster::start();
    let n = std::sync::atomic::AtomicU32::new(0);
    suite(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        crate::store::pg::execute(&cluster.url(), &format!("CREATE DATABASE ns{i}")).unwrap();
        let url = format!("postgresql://postgres@127.0.0.1:{}/ns{i}", cluster.port);
        crate::store::PgStore::connect(&url).unwrap()
    });
}

#[test]
fn suite_on_memory_store() {
    suite(MemStore::new);
}

#[test]
fn suite_on_redb_store() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicU32::new(0);
    suite(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        RedbStore::open(&dir.path().join(format!("ns{i}.redb"))).unwrap()
    });
}

pub(super) fn root() -> Caller {
    Caller::root()
}

pub(super) fn file(ns: &dyn Namespace, parent: InodeId, name: &str) -> Attr {
    ns.mknod(
        &root(),
        parent,
        name.as_bytes(),
        FileKind::Regular,
        0o644,
        0,
    )
    .unwrap()
}

fn dir(ns: &dyn Namespace, parent: InodeId, name: &str) -> Attr {
    ns.mkdir(&root(), parent, name.as_bytes(), 0o755).unwrap()
}

fn create_lookup_readdir(ns: &dyn Namespace) {
    let a = file(ns, ROOT, "b");
    file(ns, ROOT, "a");
    dir(ns, ROOT, "c");
    assert_eq!(ns.lookup(&root(), ROOT, b"b").unwrap().ino, a.ino);
    assert_eq!(ns.lookup(&root(), ROOT, b"nope"), Err(MetaError::NotFound));
    assert_eq!(
        ns.mknod(&root(), ROOT, b"b", FileKind::Regular, 0o644, 0),
        Err(MetaError::Exists)
    );
    let names: Vec<_> = ns
        .readdir(&root(), ROOT, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    let page: Vec<_> = ns
        .readdir(&root(), ROOT, Some(b"a"), 1)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(page, vec![b"b".to_vec()]);
    assert_eq!(
        ns.lookup(&root(), a.ino, b"x"),
        Err(MetaError::NotDirectory)
    );
    assert_eq!(ns.statfs().unwrap().files, 4);
}

fn directory_nlink_and_rmdir(ns: &dyn Namespace) {
    let d = dir(ns, ROOT, "d");
    assert_eq!(ns.getattr(ROOT).unwrap().nlink, 3);
    let sub = dir(ns, d.ino, "sub");
    file(ns, d.ino, "f");
    assert_eq!(ns.getattr(d.ino).unwrap().nlink, 3);
    assert_eq!(ns.rmdir(&root(), ROOT, b"d"), Err(MetaError::NotEmpty));
    assert_eq!(ns.rmdir(&root(), d.ino, b"f"), Err(MetaError::NotDirectory));
    assert_eq!(
        ns.unlink(&root(), d.ino, b"sub"),
        Err(MetaError::IsDirectory)
    );
    ns.rmdir(&root(), d.ino, b"sub").unwrap();
    assert_eq!(ns.getattr(sub.ino), Err(MetaError::NotFound));
    ns.unlink(&root(), d.ino, b"f").unwrap();
    ns.rmdir(&root(), ROOT, b"d").unwrap();
    assert_eq!(ns.getattr(ROOT).unwrap().nlink, 2);
    assert_eq!(ns.parent(ROOT).unwrap(), ROOT);
}

fn hard_links(ns: &dyn Namespace) {
    let f = file(ns, ROOT, "f");
    let d = dir(ns, ROOT, "d");
    ns.link(&root(), f.ino, d.ino, b"g").unwrap();
    assert_eq!(ns.getattr(f.ino).unwrap().nlink, 2);
    assert_eq!(
        ns.link(&root(), d.ino, ROOT, b"dd"),
        Err(MetaError::NotPermitted)
    );
    assert_eq!(ns.link(&root(), f.ino, ROOT, b"f"), Err(MetaError::Exists));
    ns.unlink(&root(), ROOT, b"f").unwrap();
    assert_eq!(ns.getattr(f.ino).unwrap().nlink, 1);
    ns.unlink(&root(), d.ino, b"g").unwrap();
    assert_eq!(ns.getattr(f.ino), Err(MetaError::NotFound));
}

fn rename_rules(ns: &dyn Namespace) {
    let a = dir(ns, ROOT, "a");
    let b = dir(ns, a.ino, "b");
    let f = file(ns, ROOT, "f");
    file(ns, ROOT, "g");
    let r = RenameMode::Replace;
    assert!(matches!(
        ns.rename(&root(), ROOT, b"a", b.ino, b"x", r),
        Err(MetaError::Invalid(_))
    ));
    assert!(matches!(
        ns.rename(&root(), ROOT, b"a", a.ino, b"x", r),
        Err(MetaError::Invalid(_))
    ));
    assert_eq!(
        ns.rename(&root(), ROOT, b"f", ROOT, b"a", r),
        Err(MetaError::IsDirectory)
    );
    assert_eq!(
        ns.rename(&root(), ROOT, b"a", ROOT, b"f", r),
        Err(MetaError::NotDirectory)
    );
    dir(ns, ROOT, "empty");
    assert_eq!(
        ns.rename(&root(), ROOT, b"empty", ROOT, b"a", r),
        Err(MetaError::NotEmpty)
    );
    // move a directory across parents: nlinks follow
    ns.rename(&root(), a.ino, b"b", ROOT, b"b2", r).unwrap();
    assert_eq!(ns.getattr(a.ino).unwrap().nlink, 2);
    assert_eq!(ns.getattr(ROOT).unwrap().nlink, 5);
    assert_eq!(ns.parent(b.ino).unwrap(), ROOT);
    // replace a file: the old target goes
    let g = ns.lookup(&root(), ROOT, b"g").unwrap();
    ns.rename(&root(), ROOT, b"f", ROOT, b"g", r).unwrap();
    assert_eq!(ns.lookup(&root(), ROOT, b"g").unwrap().ino, f.ino);
    assert_eq!(ns.getattr(g.ino), Err(MetaError::NotFound));
    // replace an empty directory
    ns.rename(&root(), ROOT, b"b2", ROOT, b"empty", r).unwrap();
    assert_eq!(ns.getattr(ROOT).unwrap().nlink, 4);
    // onto another name of the same inode: nothing happens
    ns.link(&root(), f.ino, ROOT, b"h").unwrap();
    ns.rename(&root(), ROOT, b"g", ROOT, b"h", r).unwrap();
    assert!(ns.lookup(&root(), ROOT, b"g").is_ok());
    assert_eq!(ns.getattr(f.ino).unwrap().nlink, 2);
}

/// What a site server reads before a removal: the inodes names lead to, without checks.
fn resolve_names(ns: &dyn Namespace) {
    let d = ns.mkdir(&root(), ROOT, b"d", 0o700).unwrap();
    let f = file(ns, d.ino, "f");
    let names: [(InodeId, &[u8]); 4] = [(ROOT, b"d"), (d.ino, b"f"), (d.ino, b"g"), (ROOT, b"f")];
    assert_eq!(
        ns.resolve(&names),
        vec![Some(d.ino), Some(f.ino), None, None]
    );
    assert_eq!(ns.resolve(&[]), Vec::<Option<InodeId>>::new());
}

fn rename_exchange_and_noreplace(ns: &dyn Namespace) {
    let d = dir(ns, ROOT, "d");
    let f = file(ns, ROOT, "f");
    assert_eq!(
        ns.rename(&root(), ROOT, b"f", ROOT, b"d", RenameMode::NoReplace),
        Err(MetaError::Exists)
    );
    assert_eq!(
        ns.rename(&root(), ROOT, b"f", ROOT, b"zz", RenameMode::Exchange),
        Err(MetaError::NotFound)
    );
    let sub = dir(ns, d.ino, "sub");
    ns.rename(&root(), ROOT, b"f", d.ino, b"sub", RenameMode::Exchange)
        .unwrap();
    assert_eq!(ns.lookup(&root(), ROOT, b"f").unwrap().ino, sub.ino);
    assert_eq!(ns.lookup(&root(), d.ino, b"sub").unwrap().ino, f.ino);
    assert_eq!(ns.parent(sub.ino).unwrap(), ROOT);
    assert_eq!(ns.getattr(d.ino).unwrap().nlink, 2);
    assert_eq!(ns.getattr(ROOT).unwrap().nlink, 4);
}

fn permissions_and_sticky(ns: &dyn Namespace) {
    let t = ns.mkdir(&root(), ROOT, b"tmp", 0o1777).unwrap();
    let alice = user(1000);
    let bob = user(1001);
    ns.mknod(&alice, t.ino, b"a", FileKind::Regular, 0o600, 0)
        .unwrap();
    assert_eq!(ns.unlink(&bob, t.ino, b"a"), Err(MetaError::NotPermitted));
    assert_eq!(
        ns.rename(&bob, t.ino, b"a", t.ino, b"b", RenameMode::Replace),
        Err(MetaError::NotPermitted)
    );
    let a = ns.lookup(&bob, t.ino, b"a").unwrap();
    assert_eq!(
        ns.open(&bob, a.ino, true, false),
        Err(MetaError::AccessDenied)
    );
    let priv_dir = ns.mkdir(&alice, t.ino, b"p", 0o700).unwrap();
    assert_eq!(
        ns.lookup(&bob, priv_dir.ino, b"x"),
        Err(MetaError::AccessDenied)
    );
    assert_eq!(
        ns.mknod(&bob, priv_dir.ino, b"x", FileKind::Regular, 0o644, 0),
        Err(MetaError::AccessDenied)
    );
    // moving a directory to another parent needs write permission on it
    let ro = ns.mkdir(&bob, t.ino, b"ro", 0o555).unwrap();
    let _ = ro;
    let other = ns.mkdir(&bob, t.ino, b"other", 0o777).unwrap();
    assert_eq!(
        ns.rename(&bob, t.ino, b"ro", other.ino, b"ro", RenameMode::Replace),
        Err(MetaError::AccessDenied)
    );
    ns.unlink(&alice, t.ino, b"a").unwrap();
}

fn setgid_directories(ns: &dyn Namespace) {
    let d = ns.mkdir(&root(), ROOT, b"sg", 0o2777).unwrap();
    ns.setattr(
        &root(),
        d.ino,
        &SetAttr {
            gid: Some(500),
            ..Default::default()
        },
    )
    .unwrap();
    let f = ns
        .mknod(&user(1000), d.ino, b"f", FileKind::Regular, 0o644, 0)
        .unwrap();
    assert_eq!(f.gid, 500);
    let sub = ns.mkdir(&user(1000), d.ino, b"sub", 0o755).unwrap();
    assert_eq!((sub.gid, sub.perm & 0o2000), (500, 0o2000));
}

fn setattr_rules(ns: &dyn Namespace) {
    let alice = Caller::new(1000, 1000, vec![2000]);
    let f = ns
        .mknod(&root(), ROOT, b"f", FileKind::Regular, 0o666, 0)
        .unwrap();
    ns.setattr(
        &root(),
        f.ino,
        &SetAttr {
            uid: Some(1000),
            gid: Some(1000),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        ns.setattr(
            &alice,
            f.ino,
            &SetAttr {
                uid: Some(0),
                ..Default::default()
            }
        ),
        Err(MetaError::NotPermitted)
    );
    assert_eq!(
        ns.setattr(
            &alice,
            f.ino,
            &SetAttr {
                gid: Some(3000),
                ..Default::default()
            }
        ),
        Err(MetaError::NotPermitted)
    );
    assert_eq!(
        ns.setattr(
            &alice,
            f.ino,
            &SetAttr {
                gid: Some(2000),
                ..Default::default()
            }
        )
        .unwrap()
        .gid,
        2000
    );
    assert_eq!(
        ns.setattr(
            &user(7),
            f.ino,
            &SetAttr {
                mode: Some(0o777),
                ..Default::default()
            }
        ),
        Err(MetaError::NotPermitted)
    );
    let t = Timestamp {
        secs: 12345,
        nanos: 678,
    };
    assert_eq!(
        ns.setattr(
            &user(7),
            f.ino,
            &SetAttr {
                mtime: Some(TimeSet::At(t)),
                ..Default::default()
            }
        ),
        Err(MetaError::NotPermitted)
    );
    // "now" is allowed to any writer (the file is 0666)
    ns.setattr(
        &user(7),
        f.ino,
        &SetAttr {
            mtime: Some(TimeSet::Now),
            atime: Some(TimeSet::Now),
            ..Default::default()
        },
    )
    .unwrap();
    let a = ns
        .setattr(
            &alice,
            f.ino,
            &SetAttr {
                mtime: Some(TimeSet::At(t)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.mtime, t);
    let d = dir(ns, ROOT, "d");
    assert_eq!(
        ns.setattr(
            &root(),
            d.ino,
            &SetAttr {
                size: Some(0),
                ..Default::default()
            }
        ),
        Err(MetaError::IsDirectory)
    );
    // chmod by a non-member of the group drops set-gid
    let a = ns
        .setattr(
            &alice,
            f.ino,
            &SetAttr {
                gid: Some(1000),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.gid, 1000);
    ns.setattr(
        &root(),
        f.ino,
        &SetAttr {
            gid: Some(4000),
            ..Default::default()
        },
    )
    .unwrap();
    let a = ns
        .setattr(
            &alice,
            f.ino,
            &SetAttr {
                mode: Some(0o2755),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.perm, 0o755);
}

fn xattrs(ns: &dyn Namespace) {
    let f = file(ns, ROOT, "f");
    let r = root();
    assert_eq!(
        ns.getxattr(&r, f.ino, b"user.a"),
        Err(MetaError::NoAttribute)
    );
    ns.setxattr(&r, f.ino, b"user.a", b"1", XattrMode::CreateOnly)
        .unwrap();
    assert_eq!(
        ns.setxattr(&r, f.ino, b"user.a", b"2", XattrMode::CreateOnly),
        Err(MetaError::Exists)
    );
    assert_eq!(
        ns.setxattr(&r, f.ino, b"user.b", b"2", XattrMode::ReplaceOnly),
        Err(MetaError::NoAttribute)
    );
    ns.setxattr(&r, f.ino, b"user.a", b"2", XattrMode::ReplaceOnly)
        .unwrap();
    assert_eq!(ns.getxattr(&r, f.ino, b"user.a").unwrap(), b"2");
    ns.setxattr(&r, f.ino, b"user.b", b"", XattrMode::Any)
        .unwrap();
    assert_eq!(
        ns.listxattr(&r, f.ino).unwrap(),
        vec![b"user.a".to_vec(), b"user.b".to_vec()]
    );
    ns.removexattr(&r, f.ino, b"user.a").unwrap();
    assert_eq!(
        ns.removexattr(&r, f.ino, b"user.a"),
        Err(MetaError::NoAttribute)
    );
    assert_eq!(
        ns.setxattr(&user(5), f.ino, b"user.c", b"", XattrMode::Any),
        Err(MetaError::AccessDenied)
    );
    assert_eq!(
        ns.setxattr(
            &r,
            f.ino,
            b"user.big",
            &vec![0; XATTR_SIZE_MAX + 1],
            XattrMode::Any
        ),
        Err(MetaError::AttributeTooLarge)
    );
    // xattrs go with the inode
    ns.unlink(&r, ROOT, b"f").unwrap();
    let g = file(ns, ROOT, "g");
    assert!(ns.listxattr(&r, g.ino).unwrap().is_empty());
}

fn commit_and_truncate(ns: &dyn Namespace) {
    let f = file(ns, ROOT, "f");
    let t = Timestamp::now();
    ns.commit(
        f.ino,
        &Commit {
            chunks: vec![],
            inline: Some(b"hello".to_vec()),
            size: 5,
            mtime: t,
        },
    )
    .unwrap();
    assert_eq!(
        ns.layout(f.ino).unwrap(),
        (Layout::Inline(b"hello".to_vec()), 5)
    );
    let id = BlockId([7; 32]);
    let r = BlockRef {
        id,
        len: CHUNK_SIZE as u32,
    };
    assert!(matches!(
        ns.commit(
            f.ino,
            &Commit {
                chunks: vec![(2, Some(r))],
                inline: None,
                size: 3 * CHUNK_SIZE,
                mtime: t
            }
        ),
        Err(MetaError::Invalid(_))
    ));
    ns.commit(
        f.ino,
        &Commit {
            chunks: vec![(0, Some(r)), (2, Some(r))],
            inline: None,
            size: 3 * CHUNK_SIZE,
            mtime: t,
        },
    )
    .unwrap();
    assert_eq!(ns.statfs().unwrap().bytes_used, 3 * CHUNK_SIZE);
    let a = ns
        .setattr(
            &root(),
            f.ino,
            &SetAttr {
                size: Some(CHUNK_SIZE + 1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.size, CHUNK_SIZE + 1);
    let (layout, size) = ns.layout(f.ino).unwrap();
    assert_eq!(size, CHUNK_SIZE + 1);
    assert_eq!(layout.blocks().count(), 1);
    let m = match &layout {
        Layout::Chunks(m) => m.clone(),
        _ => panic!("expected chunks"),
    };
    assert_eq!(m.get(&0), Some(&r));
    assert!(ns.referenced_blocks_probe(f.ino));
}

fn unlinked_open_file_survives_until_release(ns: &dyn Namespace) {
    let f = file(ns, ROOT, "f");
    ns.open(&root(), f.ino, true, true).unwrap();
    ns.unlink(&root(), ROOT, b"f").unwrap();
    assert_eq!(ns.getattr(f.ino).unwrap().nlink, 0);
    ns.commit(
        f.ino,
        &Commit {
            chunks: vec![],
            inline: Some(b"still here".to_vec()),
            size: 10,
            mtime: Timestamp::now(),
        },
    )
    .unwrap();
    assert_eq!(ns.layout(f.ino).unwrap().1, 10);
    ns.release(f.ino).unwrap();
    assert_eq!(ns.getattr(f.ino), Err(MetaError::NotFound));
}

fn names_are_checked(ns: &dyn Namespace) {
    let long = vec![b'x'; NAME_MAX + 1];
    assert_eq!(
        ns.mknod(&root(), ROOT, &long, FileKind::Regular, 0o644, 0),
        Err(MetaError::NameTooLong)
    );
    assert_eq!(ns.lookup(&root(), ROOT, &long), Err(MetaError::NameTooLong));
    let ok = vec![b'x'; NAME_MAX];
    ns.mknod(&root(), ROOT, &ok, FileKind::Regular, 0o644, 0)
        .unwrap();
    assert!(matches!(
        ns.mknod(&root(), ROOT, b"a/b", FileKind::Regular, 0o644, 0),
        Err(MetaError::Invalid(_))
    ));
    assert_eq!(
        ns.symlink(&root(), ROOT, b"l", &vec![b'a'; PATH_MAX + 1]),
        Err(MetaError::NameTooLong)
    );
    let l = ns.symlink(&root(), ROOT, b"l", b"target").unwrap();
    assert_eq!(ns.readlink(l.ino).unwrap(), b"target");
    assert_eq!(l.size, 6);
}

/// Helper used by the suite through the trait object: whether the layout still names a block.
trait Probe {
    fn referenced_blocks_probe(&self, ino: InodeId) -> bool;
}
impl Probe for dyn Namespace + '_ {
    fn referenced_blocks_probe(&self, ino: InodeId) -> bool {
        self.layout(ino)
            .map(|(l, _)| l.blocks().count() > 0)
            .unwrap_or(false)
    }
}

fn byte_range_locks(ns: &dyn Namespace) {
    let root = Caller::root();
    let f = ns.create(&root, ROOT, b"edl", 0o644).unwrap();
    let w = |start, end| Lock {
        kind: LockKind::Write,
        start,
        end,
        pid: 42,
        flock: false,
    };
    let (a, b) = (
        LockOwner {
            session: 0,
            owner: 1,
        },
        LockOwner {
            session: 0,
            owner: 2,
        },
    );
    ns.setlk(f.ino, a, &w(0, 99)).unwrap();
    assert_eq!(ns.setlk(f.ino, b, &w(50, 60)), Err(MetaError::WouldBlock));
    assert_eq!(ns.getlk(f.ino, b, &w(50, 60)).unwrap(), Some(w(0, 99)));
    ns.setlk(f.ino, b, &w(100, u64::MAX)).unwrap();
    let mut unlock = w(0, u64::MAX);
    unlock.kind = LockKind::Unlock;
    ns.setlk(f.ino, a, &unlock).unwrap();
    assert_eq!(ns.getlk(f.ino, b, &w(0, 99)).unwrap(), None);
    assert_eq!(
        ns.setlk(InodeId(999_999), a, &w(0, 1)),
        Err(MetaError::NotFound)
    );
}

fn change_feed(ns: &dyn Namespace) {
    use meridian_proto::session::Invalidation::{Entry, Inode};
    let root = Caller::root();
    let start = ns.changes(Hlc(0), 10_000).unwrap();
    let cursor = start.last().map_or(Hlc(0), |c| c.hlc);
    let d = ns.mkdir(&root, ROOT, b"shot", 0o755).unwrap();
    let f = ns.create(&root, d.ino, b"a.exr", 0o644).unwrap();
    ns.release(f.ino).unwrap();
    ns.rename(&root, d.ino, b"a.exr", d.ino, b"b.exr", RenameMode::Replace)
        .unwrap();
    let set = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    ns.setattr(&root, f.ino, &set).unwrap();
    let feed = ns.changes(cursor, 10_000).unwrap();
    assert!(feed.len() >= 4, "{feed:?}");
    assert!(feed.windows(2).all(|w| w[0].hlc < w[1].hlc), "{feed:?}");
    let has =
        |item: &meridian_proto::session::Invalidation| feed.iter().any(|c| c.items.contains(item));
    assert!(has(&Entry {
        parent: ROOT,
        name: b"shot".to_vec()
    }));
    assert!(has(&Entry {
        parent: d.ino,
        name: b"a.exr".to_vec()
    }));
    assert!(has(&Entry {
        parent: d.ino,
        name: b"b.exr".to_vec()
    }));
    assert!(feed.last().unwrap().items.contains(&Inode(f.ino)));
    // A cursor: reading after the last stamp gives nothing; after the first, the rest.
    assert!(ns.changes(feed.last().unwrap().hlc, 10).unwrap().is_empty());
    assert_eq!(ns.changes(feed[0].hlc, 10_000).unwrap(), feed[1..].to_vec());
    assert_eq!(ns.changes(cursor, 2).unwrap(), feed[..2].to_vec());
    // Reads change nothing.
    ns.lookup(&root, d.ino, b"b.exr").unwrap();
    assert_eq!(ns.changes(cursor, 10_000).unwrap(), feed);
}
