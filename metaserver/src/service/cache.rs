//! A site client's cache of attributes and directory entries, kept true by the
//! metaserver's pushed invalidations: a `stat` of something unchanged, or the lookup of a
//! name that does not exist in a directory this client knows completely, is answered
//! without a round trip.
//!
//! Owns: attributes by inode, entries by (directory, name) — present or known absent —,
//! the directories whose every entry is known (made here, unchanged by others since), and
//! an epoch counting the invalidations received.
//!
//! Invariants:
//! - Only a reply read while no invalidation arrived is stored: the epoch is read before
//!   the call is sent and the reply is stored only if it is unchanged, so a reply that
//!   crossed an invalidation of what it says is never cached after that invalidation.
//! - Invalidations are applied by the connection's reader before any later reply is
//!   delivered (the stream is ordered), and the cache is emptied when a connection is
//!   replaced (invalidations sent to the old session are lost). Another client's change
//!   of a name pushes both the entry and its directory, so absent entries and complete
//!   directories are dropped as present entries are.
//! - This client's own changes drop what they make stale before they are sent; a removal,
//!   rename or link drops everything (link counts and ctimes of inodes known by other
//!   names).
//! - Lookups answered here check search permission on the directory's last known
//!   attributes, as the metaserver would.
//!
//! Locks: one mutex over everything.

use crate::meta::perm;
use meridian_proto::session::Invalidation;
use meridian_proto::wire::{Request, Response};
use meridian_proto::{Attr, FileKind, InodeId, MetaError};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};

/// Items kept before the cache starts over (a bound, not a policy).
const MAX_ITEMS: usize = 1 << 20;

#[derive(Default)]
struct Inner {
    epoch: u64,
    attrs: HashMap<InodeId, Attr>,
    /// Directories' last known attributes, for permission checks (their times may be
    /// stale after this client's own creates; their mode and owner are not).
    dirs: HashMap<InodeId, Attr>,
    /// `None`: known absent.
    entries: HashMap<(InodeId, Vec<u8>), Option<InodeId>>,
    complete: HashSet<InodeId>,
}

impl Inner {
    fn clear(&mut self) {
        self.epoch += 1;
        self.attrs.clear();
        self.dirs.clear();
        self.entries.clear();
        self.complete.clear();
    }

    fn forget_inode(&mut self, i: InodeId) {
        self.attrs.remove(&i);
        self.dirs.remove(&i);
        self.complete.remove(&i);
    }

    fn put_attr(&mut self, a: &Attr) {
        if self.attrs.len() > MAX_ITEMS {
            self.attrs.clear();
            self.dirs.clear();
        }
        self.attrs.insert(a.ino, a.clone());
        if a.kind == FileKind::Directory {
            self.dirs.insert(a.ino, a.clone());
        }
    }

    fn put_entry(&mut self, parent: InodeId, name: Vec<u8>, ino: Option<InodeId>) {
        if self.entries.len() > MAX_ITEMS {
            self.entries.clear();
            self.complete.clear();
        }
        self.entries.insert((parent, name), ino);
    }
}

#[derive(Default)]
pub struct MetaCache {
    inner: Mutex<Inner>,
}

/// What a call will teach the cache, noted before the request is sent.
pub enum Plan {
    Nothing,
    /// Store the attributes in the reply.
    Attr,
    /// Store the reply as what `name` in `parent` resolves to (or that it is absent).
    Entry(InodeId, Vec<u8>),
    /// A directory made by this client: also known complete (empty).
    NewDir(InodeId, Vec<u8>),
}

impl MetaCache {
    pub fn epoch(&self) -> u64 {
        self.inner.lock().epoch
    }

    /// Applies pushed invalidations.
    pub fn apply(&self, items: &[Invalidation]) {
        let mut c = self.inner.lock();
        c.epoch += 1;
        for item in items {
            match item {
                Invalidation::Inode(i) => c.forget_inode(*i),
                Invalidation::Entry { parent, name } => {
                    if let Some(Some(i)) = c.entries.remove(&(*parent, name.clone())) {
                        c.attrs.remove(&i);
                    }
                }
            }
        }
    }

    /// Forgets everything (a new connection).
    pub fn clear(&self) {
        self.inner.lock().clear();
    }

    /// The answer to `req` from the cache, if it has one.
    pub fn answer(&self, req: &Request) -> Option<Response> {
        let c = self.inner.lock();
        match req {
            Request::Getattr { ino } => c.attrs.get(ino).cloned().map(Response::Attr),
            Request::Lookup { who, parent, name } => {
                let dir = c.attrs.get(parent).or_else(|| c.dirs.get(parent))?;
                if perm::check(who, dir, perm::X).is_err() {
                    return None; // let the metaserver give the error
                }
                match c.entries.get(&(*parent, name.clone())) {
                    Some(Some(ino)) => c.attrs.get(ino).cloned().map(Response::Attr),
                    Some(None) => Some(Response::Err(MetaError::NotFound)),
                    None if c.complete.contains(parent) => Some(Response::Err(MetaError::NotFound)),
                    None => None,
                }
            }
            _ => None,
        }
    }

    /// Drops what `req` (this client's own call) will make stale, and says what its reply
    /// will teach. Called before the call is sent.
    pub fn plan(&self, req: &Request) -> Plan {
        use Request as R;
        let mut c = self.inner.lock();
        match req {
            R::Getattr { .. } | R::Open { .. } | R::Commit { .. } => Plan::Attr,
            R::Setattr { ino, .. } => {
                c.forget_inode(*ino);
                Plan::Attr
            }
            R::Lookup { parent, name, .. } => Plan::Entry(*parent, name.clone()),
            R::Mknod { parent, name, .. }
            | R::Create { parent, name, .. }
            | R::Mkdir { parent, name, .. }
            | R::Symlink { parent, name, .. } => {
                // The directory's times change (its permissions do not).
                c.attrs.remove(parent);
                c.entries.remove(&(*parent, name.clone()));
                match req {
                    R::Mkdir { .. } => Plan::NewDir(*parent, name.clone()),
                    _ => Plan::Entry(*parent, name.clone()),
                }
            }
            R::Setxattr { ino, .. } | R::Removexattr { ino, .. } => {
                c.attrs.remove(ino);
                Plan::Nothing
            }
            R::Unlink { .. } | R::Rmdir { .. } | R::Rename { .. } | R::Link { .. } => {
                c.clear();
                Plan::Nothing
            }
            _ => Plan::Nothing,
        }
    }

    /// Stores what a reply taught, unless an invalidation arrived since `epoch`.
    pub fn learn(&self, epoch: u64, plan: Plan, resp: &Response) {
        let mut c = self.inner.lock();
        if c.epoch != epoch {
            if let Response::Attr(a) | Response::Made(a, _) = resp {
                c.attrs.remove(&a.ino);
            }
            return;
        }
        match (plan, resp) {
            (Plan::Attr, Response::Attr(a)) => c.put_attr(a),
            (Plan::Entry(p, n), Response::Attr(a)) => {
                c.put_entry(p, n, Some(a.ino));
                c.put_attr(a);
            }
            (Plan::Entry(p, n), Response::Made(a, dir)) => {
                c.put_entry(p, n, Some(a.ino));
                c.put_attr(a);
                c.put_attr(dir);
            }
            (Plan::NewDir(p, n), Response::Made(a, dir)) => {
                c.put_entry(p, n, Some(a.ino));
                c.put_attr(a);
                c.put_attr(dir);
                c.complete.insert(a.ino);
            }
            (Plan::Entry(p, n), Response::Err(MetaError::NotFound)) => c.put_entry(p, n, None),
            (_, Response::Attr(a) | Response::Made(a, _)) => {
                c.attrs.remove(&a.ino);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::{Caller, FileKind, ROOT, Timestamp};

    fn attr(ino: u64, perm: u16, kind: FileKind) -> Attr {
        let t = Timestamp::default();
        Attr {
            ino: InodeId(ino),
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
        }
    }

    fn lookup(who: Caller, name: &[u8]) -> Request {
        Request::Lookup {
            who,
            parent: ROOT,
            name: name.to_vec(),
        }
    }

    #[test]
    fn lookups_are_answered_until_invalidated() {
        let c = MetaCache::default();
        let root = Caller::root();
        let e = c.epoch();
        let p = c.plan(&Request::Getattr { ino: ROOT });
        c.learn(e, p, &Response::Attr(attr(1, 0o700, FileKind::Directory)));
        let e = c.epoch();
        let p = c.plan(&lookup(root.clone(), b"a"));
        c.learn(e, p, &Response::Attr(attr(5, 0o644, FileKind::Regular)));
        assert!(
            matches!(c.answer(&lookup(root.clone(), b"a")), Some(Response::Attr(a)) if a.ino == InodeId(5))
        );
        // Search permission is checked on the cached directory: user 1000 may not.
        let user = Caller {
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        assert!(c.answer(&lookup(user, b"a")).is_none());
        c.apply(&[Invalidation::Entry {
            parent: ROOT,
            name: b"a".to_vec(),
        }]);
        assert!(c.answer(&lookup(root, b"a")).is_none());
        assert!(c.answer(&Request::Getattr { ino: InodeId(5) }).is_none());
    }

    #[test]
    fn a_reply_that_crossed_an_invalidation_is_not_stored() {
        let c = MetaCache::default();
        let e = c.epoch();
        let p = c.plan(&Request::Getattr { ino: InodeId(9) });
        c.apply(&[Invalidation::Inode(InodeId(9))]);
        c.learn(e, p, &Response::Attr(attr(9, 0o644, FileKind::Regular)));
        assert!(c.answer(&Request::Getattr { ino: InodeId(9) }).is_none());
    }

    #[test]
    fn a_directory_made_here_answers_absent_names_until_another_client_changes_it() {
        let c = MetaCache::default();
        let root = Caller::root();
        let mkdir = Request::Mkdir {
            who: root.clone(),
            parent: ROOT,
            name: b"d".to_vec(),
            mode: 0o755,
        };
        let e = c.epoch();
        let p = c.plan(&mkdir);
        let made = |a| Response::Made(a, attr(1, 0o755, FileKind::Directory));
        c.learn(e, p, &made(attr(7, 0o755, FileKind::Directory)));
        let probe = Request::Lookup {
            who: root.clone(),
            parent: InodeId(7),
            name: b"f".to_vec(),
        };
        assert_eq!(c.answer(&probe), Some(Response::Err(MetaError::NotFound)));
        // This client creates it: the absent entry is dropped before the call goes out.
        let create = Request::Create {
            who: root.clone(),
            parent: InodeId(7),
            name: b"f".to_vec(),
            mode: 0o644,
        };
        let e = c.epoch();
        let p = c.plan(&create);
        c.learn(e, p, &made(attr(8, 0o644, FileKind::Regular)));
        assert!(matches!(
            c.answer(&Request::Getattr { ino: ROOT }),
            Some(Response::Attr(_))
        ));
        assert!(matches!(c.answer(&probe), Some(Response::Attr(a)) if a.ino == InodeId(8)));
        // Another client adds a name: the directory is no longer known complete.
        c.apply(&[
            Invalidation::Inode(InodeId(7)),
            Invalidation::Entry {
                parent: InodeId(7),
                name: b"g".to_vec(),
            },
        ]);
        let g = Request::Lookup {
            who: root,
            parent: InodeId(7),
            name: b"g".to_vec(),
        };
        assert_eq!(c.answer(&g), None);
    }
}
