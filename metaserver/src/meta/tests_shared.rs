//! Several metaservers over one PostgreSQL database: names and inode numbers, locks and
//! files unlinked while open hold across them.

use super::{Meta, MetaConfig};
use crate::store::pg::testing::Cluster;
use meridian_proto::*;

/// A metaserver's namespace over `cluster`'s database (several may share it).
fn on_postgresql(cluster: &Cluster) -> Meta<crate::store::PgStore> {
    let store = crate::store::PgStore::connect(&cluster.url()).unwrap();
    Meta::open(store, MetaConfig::default()).unwrap()
}

/// Two metaservers over one PostgreSQL database, creating at once in one directory: no
/// name or inode number is lost or given twice, and each sees the other's files.
#[test]
fn two_metaservers_share_one_postgresql_database() {
    let cluster = Cluster::start();
    let (a, b) = (on_postgresql(&cluster), on_postgresql(&cluster));
    let (a, b): (&dyn Namespace, &dyn Namespace) = (&a, &b);
    let root = Caller::root();
    let d = a.mkdir(&root, ROOT, b"renders", 0o755).unwrap();
    let made: Vec<Vec<InodeId>> = std::thread::scope(|s| {
        [(a, "a"), (b, "b")]
            .map(|(m, tag)| {
                let root = root.clone();
                s.spawn(move || {
                    (0..60)
                        .map(|i| {
                            let name = format!("{tag}{i:03}.exr");
                            let f = m.create(&root, d.ino, name.as_bytes(), 0o644).unwrap();
                            m.release(f.ino).unwrap();
                            f.ino
                        })
                        .collect()
                })
            })
            .map(|h| h.join().unwrap())
            .into()
    });
    let mut all: Vec<InodeId> = made.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 120, "an inode number was given twice");
    // A deferred commit is seen by other metaservers once the database has it (one round
    // trip after the call returned): the last creates may be on their way still.
    for m in [a, b] {
        m.sync().unwrap();
    }
    for m in [a, b] {
        assert_eq!(m.readdir(&root, d.ino, None, 1000).unwrap().len(), 120);
        assert_eq!(m.statfs().unwrap().files, 122);
    }
    // Each sees the other's changes in the shared feed, in one order.
    let feed = b.changes(Hlc(0), 10_000).unwrap();
    assert!(feed.windows(2).all(|w| w[0].hlc < w[1].hlc));
    assert!(feed.len() >= 121);
}

/// Two metaservers over a database that does not deliver notifications (as some
/// PostgreSQL-compatible engines), writing while each knows the other alive: nothing is
/// announced (a failed notification would roll an acknowledged write back), neither takes
/// sole mode (whose lock is asked for by notification), and each sees every file.
#[test]
fn metaservers_share_a_database_without_notifications() {
    let cluster = Cluster::start();
    let url = cluster.without_notifications("nonotify");
    let open = || {
        Meta::open(
            crate::store::PgStore::connect(&url).unwrap(),
            MetaConfig::default(),
        )
    };
    let (a, b) = (open().unwrap(), open().unwrap());
    for m in [&a, &b] {
        m.maintain_at(Hlc::wall_millis()).unwrap();
    }
    let root = Caller::root();
    let d = Namespace::mkdir(&a, &root, ROOT, b"plates", 0o755).unwrap();
    for i in 0..20 {
        for (m, tag) in [(&a, "a"), (&b, "b")] {
            let name = format!("{tag}{i:02}.dpx");
            let f = Namespace::create(m, &root, d.ino, name.as_bytes(), 0o644).unwrap();
            Namespace::release(m, f.ino).unwrap();
        }
    }
    for m in [&a, &b] {
        m.sync().unwrap();
        assert!(!m.store.is_sole(), "sole mode without notifications");
    }
    for m in [&a, &b] {
        let names = Namespace::readdir(m, &root, d.ino, None, 100).unwrap();
        assert_eq!(names.len(), 40, "a write was lost");
    }
}

/// Two metaservers over one PostgreSQL database: a lock taken through one holds against
/// the other's clients (sessions of different metaservers never match, even with the same
/// number); an ended session's locks go at once; a silent metaserver's go after its lease.
#[test]
fn locks_hold_across_metaservers_sharing_postgresql() {
    let cluster = Cluster::start();
    let (a, b) = (on_postgresql(&cluster), on_postgresql(&cluster));
    let root = Caller::root();
    let f = Namespace::create(&a, &root, ROOT, b"edl.lock", 0o644).unwrap();
    let whole = |kind| Lock {
        kind,
        start: 0,
        end: u64::MAX,
        pid: 1,
        flock: false,
    };
    let same = LockOwner {
        session: 1,
        owner: 7,
    };
    a.setlk(f.ino, same, &whole(LockKind::Write)).unwrap();
    assert_eq!(
        b.setlk(f.ino, same, &whole(LockKind::Read)),
        Err(MetaError::WouldBlock),
        "same session number on another metaserver is another client"
    );
    assert!(
        b.getlk(f.ino, same, &whole(LockKind::Read))
            .unwrap()
            .is_some()
    );
    let before = Namespace::changes(&a, Hlc(0), 10_000).unwrap().len();
    a.end_session(1).unwrap();
    // The release is in the change feed, which the other metaserver follows to wake its
    // clients waiting for a lock there (read back through the writer: its commit may
    // still be on its way, deferred).
    let feed = Namespace::changes(&a, Hlc(0), 10_000).unwrap();
    assert!(
        feed[before..].iter().any(|c| c
            .items
            .contains(&meridian_proto::session::Invalidation::Locks(f.ino))),
        "a lock release is announced in the feed"
    );
    b.setlk(f.ino, same, &whole(LockKind::Read)).unwrap();
    // b goes silent: its lock stays while its lease runs, then a's upkeep removes it.
    let now = Hlc::wall_millis();
    assert_eq!(a.maintain_at(now + 1_000).unwrap(), 0);
    assert_eq!(
        a.setlk(f.ino, same, &whole(LockKind::Write)),
        Err(MetaError::WouldBlock)
    );
    let lease = super::shared_locks::INSTANCE_LEASE.as_millis() as u64;
    assert_eq!(a.maintain_at(now + lease + 1_000).unwrap(), 1);
    a.setlk(f.ino, same, &whole(LockKind::Write)).unwrap();
}

/// A file open through one metaserver outlives an unlink through another until its last
/// close there; one open only through a metaserver that then dies goes after its lease.
#[test]
fn a_file_open_through_one_metaserver_outlives_an_unlink_through_another() {
    let cluster = Cluster::start();
    let (a, b) = (on_postgresql(&cluster), on_postgresql(&cluster));
    let root = Caller::root();
    let make = |name: &[u8]| Namespace::create(&a, &root, ROOT, name, 0o644).unwrap().ino;
    // A create opens, as open(O_CREAT) does.
    let (held, dropped) = (make(b"shot.1001.exr"), make(b"shot.1002.exr"));
    Namespace::open(&a, &root, held, true, false).unwrap();
    Namespace::release(&a, held).unwrap();
    Namespace::unlink(&b, &root, ROOT, b"shot.1001.exr").unwrap();
    Namespace::unlink(&b, &root, ROOT, b"shot.1002.exr").unwrap();
    let now = Hlc::wall_millis();
    b.maintain_at(now).unwrap(); // b answers: not open here; a is still pending
    assert_eq!(
        b.getattr(held).unwrap().nlink,
        0,
        "kept while a may hold it"
    );
    a.maintain_at(now).unwrap(); // a answers: it holds both
    b.maintain_at(now).unwrap();
    assert_eq!(Namespace::layout(&b, held).unwrap().0, Layout::default());
    Namespace::release(&a, held).unwrap();
    a.sync().unwrap(); // a's commit is deferred: b sees it once it reaches the database
    assert_eq!(
        b.getattr(held),
        Err(MetaError::NotFound),
        "purged at a's last close"
    );
    assert_eq!(b.getattr(dropped).unwrap().nlink, 0);
    // a dies holding `dropped`: b's upkeep purges it once a's lease has run out.
    let lease = super::shared_locks::INSTANCE_LEASE.as_millis() as u64;
    b.maintain_at(now + lease / 2).unwrap();
    assert_eq!(b.getattr(dropped).unwrap().nlink, 0);
    b.maintain_at(now + lease + 1_000).unwrap();
    assert_eq!(b.getattr(dropped), Err(MetaError::NotFound));
    // With b alone alive, an unlink of a file open nowhere purges at once.
    let solo = Namespace::create(&b, &root, ROOT, b"solo", 0o644)
        .unwrap()
        .ino;
    Namespace::release(&b, solo).unwrap();
    drop(a);
    b.maintain_at(now + 3 * lease).unwrap();
    Namespace::unlink(&b, &root, ROOT, b"solo").unwrap();
    assert_eq!(b.getattr(solo), Err(MetaError::NotFound));
}
