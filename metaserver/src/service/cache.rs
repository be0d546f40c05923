//! A site client's cache of attributes and directory entries, kept true by the
//! metaserver's pushed invalidations: a `stat` of something unchanged, the lookup of a
//! name that does not exist in a directory this client knows completely, or the kernel's
//! question before every `write` whether the file has a `security.capability` attribute,
//! is answered without a round trip.
//!
//! Owns: attributes by inode, entries by (directory, name) — present or known absent —,
//! the directories whose every entry is known (made here, unchanged by others since),
//! `security.*` attribute names known absent per inode, and an epoch counting the
//! invalidations received.
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
//! - This client's own changes drop what they make stale before they are sent: the
//!   attributes of the directories they change and of the inodes they link, unlink or move
//!   (whose link counts and ctimes change, under every name). A removed or moved name keeps
//!   its entry meanwhile, pointing at an inode with no attributes, so lookups of it go to
//!   the metaserver until the reply says what it is now: absent, or the moved inode. An
//!   exchange forgets both entries and the directories' completeness. `.` and `..` are
//!   never cached (a move changes `..`).
//! - Lookups answered here check search permission on the directory's last known
//!   attributes, as the metaserver would.
//! - Absent `security.*` names (readable by every caller, so the answer is the same for
//!   all) are kept only beside the inode's attributes: whatever drops those (an
//!   invalidation of the inode, this client's own setxattr or removexattr, which change
//!   its ctime) drops them too, so they are never answered after a change.
//!
//! Locks: one mutex over everything.

use crate::meta::perm;
use meridian_proto::RenameMode;
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
    /// `security.*` attribute names known absent, by inode (only while `attrs` holds it).
    no_xattrs: HashMap<InodeId, HashSet<Vec<u8>>>,
}

impl Inner {
    fn clear(&mut self) {
        self.epoch += 1;
        self.attrs.clear();
        self.dirs.clear();
        self.entries.clear();
        self.complete.clear();
        self.no_xattrs.clear();
    }

    /// Drops an inode's attributes, and with them its known-absent attribute names.
    fn drop_attr(&mut self, i: &InodeId) {
        self.attrs.remove(i);
        self.no_xattrs.remove(i);
    }

    /// The inode `name` in `parent` is known to name, with its attributes forgotten (an
    /// unlink, rmdir or rename is about to change its link count or ctime).
    fn entry_ino(&mut self, parent: InodeId, name: &[u8]) -> Option<InodeId> {
        let ino = self
            .entries
            .get(&(parent, name.to_vec()))
            .copied()
            .flatten();
        if let Some(i) = ino {
            self.forget_inode(i);
        }
        ino
    }

    fn forget_inode(&mut self, i: InodeId) {
        self.drop_attr(&i);
        self.dirs.remove(&i);
        self.complete.remove(&i);
    }

    fn put_attr(&mut self, a: &Attr) {
        if self.attrs.len() > MAX_ITEMS {
            self.attrs.clear();
            self.dirs.clear();
            self.no_xattrs.clear();
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
    /// A `security.*` attribute: if the reply says it is absent, remember that.
    NoXattr(InodeId, Vec<u8>),
    /// On success, `from` is absent and `to` (if any) names `ino` (if known).
    Moved {
        from: (InodeId, Vec<u8>),
        to: Option<(InodeId, Vec<u8>)>,
        ino: Option<InodeId>,
    },
}

impl Plan {
    pub fn is_nothing(&self) -> bool {
        matches!(self, Plan::Nothing)
    }
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
                        c.drop_attr(&i);
                    }
                }
                Invalidation::Locks(_) => {} // locks are never cached
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
            Request::Getxattr { ino, name, .. } => {
                let absent = c.attrs.contains_key(ino)
                    && c.no_xattrs.get(ino).is_some_and(|n| n.contains(name));
                absent.then_some(Response::Err(MetaError::NoAttribute))
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
            R::Lookup { name, .. } if name == b"." || name == b".." => Plan::Nothing,
            R::Lookup { parent, name, .. } => Plan::Entry(*parent, name.clone()),
            R::Getxattr { ino, name, .. } if name.starts_with(b"security.") => {
                Plan::NoXattr(*ino, name.clone())
            }
            R::Mknod { parent, name, .. }
            | R::Create { parent, name, .. }
            | R::Mkdir { parent, name, .. }
            | R::Symlink { parent, name, .. } => {
                // The directory's times change (its permissions do not).
                c.drop_attr(parent);
                c.entries.remove(&(*parent, name.clone()));
                match req {
                    R::Mkdir { .. } => Plan::NewDir(*parent, name.clone()),
                    _ => Plan::Entry(*parent, name.clone()),
                }
            }
            R::Setxattr { ino, .. } | R::Removexattr { ino, .. } => {
                c.drop_attr(ino);
                Plan::Nothing
            }
            R::Unlink { parent, name, .. } | R::Rmdir { parent, name, .. } => {
                c.drop_attr(parent);
                let ino = c.entry_ino(*parent, name);
                Plan::Moved {
                    from: (*parent, name.clone()),
                    to: None,
                    ino,
                }
            }
            R::Rename {
                parent,
                name,
                new_parent,
                new_name,
                mode,
                ..
            } => {
                c.drop_attr(parent);
                c.drop_attr(new_parent);
                let ino = c.entry_ino(*parent, name);
                c.entry_ino(*new_parent, new_name); // a replaced inode loses a link
                let target = (*new_parent, new_name.clone());
                if *mode == RenameMode::Exchange {
                    for key in [(*parent, name.clone()), target] {
                        c.complete.remove(&key.0);
                        c.entries.remove(&key);
                    }
                    return Plan::Nothing;
                }
                // Unknown until the reply: neither the old inode nor absent.
                c.entries.remove(&target);
                c.complete.remove(new_parent);
                Plan::Moved {
                    from: (*parent, name.clone()),
                    to: Some(target),
                    ino,
                }
            }
            R::Link {
                ino, parent, name, ..
            } => {
                c.forget_inode(*ino);
                c.drop_attr(parent);
                Plan::Entry(*parent, name.clone())
            }
            _ => Plan::Nothing,
        }
    }

    /// Stores what a reply taught, unless an invalidation arrived since `epoch`.
    pub fn learn(&self, epoch: u64, plan: Plan, resp: &Response) {
        let mut c = self.inner.lock();
        if c.epoch != epoch {
            if let Response::Attr(a) | Response::Made(a, _) = resp {
                c.drop_attr(&a.ino);
            }
            if let Plan::Moved { from, to, .. } = plan {
                // Unknown now whether the names changed: ask the metaserver next time.
                for key in [Some(from), to].into_iter().flatten() {
                    c.complete.remove(&key.0);
                    c.entries.remove(&key);
                }
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
            (Plan::NoXattr(i, n), Response::Err(MetaError::NoAttribute))
                if c.attrs.contains_key(&i) =>
            {
                c.no_xattrs.entry(i).or_default().insert(n);
            }
            (Plan::Moved { from, to, ino }, Response::Unit) => {
                c.put_entry(from.0, from.1, None);
                if let (Some((p, n)), Some(i)) = (to, ino) {
                    c.put_entry(p, n, Some(i));
                }
            }
            (_, Response::Attr(a) | Response::Made(a, _)) => {
                c.drop_attr(&a.ino);
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
        let user = Caller::new(1000, 1000, vec![]);
        assert!(c.answer(&lookup(user, b"a")).is_none());
        c.apply(&[Invalidation::Entry {
            parent: ROOT,
            name: b"a".to_vec(),
        }]);
        assert!(c.answer(&lookup(root, b"a")).is_none());
        assert!(c.answer(&Request::Getattr { ino: InodeId(5) }).is_none());
    }

    fn getxattr(ino: u64, name: &[u8]) -> Request {
        Request::Getxattr {
            who: Caller::new(1000, 1000, vec![]),
            ino: InodeId(ino),
            name: name.to_vec(),
        }
    }

    /// Asks `req` through the cache as the client does; true if the metaserver was asked.
    fn ask(c: &MetaCache, req: &Request, reply: Response) -> bool {
        if c.answer(req).is_some() {
            return false;
        }
        let (e, p) = (c.epoch(), c.plan(req));
        c.learn(e, p, &reply);
        true
    }

    #[test]
    fn an_absent_security_attribute_is_answered_until_the_inode_changes() {
        let c = MetaCache::default();
        let cap = getxattr(5, b"security.capability");
        let absent = || Response::Err(MetaError::NoAttribute);
        // Without the inode's attributes nothing is kept.
        assert!(ask(&c, &cap, absent()));
        assert!(ask(&c, &cap, absent()));
        let file = Response::Attr(attr(5, 0o644, FileKind::Regular));
        assert!(ask(&c, &Request::Getattr { ino: InodeId(5) }, file.clone()));
        assert!(ask(&c, &cap, absent()));
        assert!(!ask(&c, &cap, absent()), "answered here");
        // Only security.* names, whose answer is the same for every caller.
        let user = getxattr(5, b"user.note");
        assert!(ask(&c, &user, absent()));
        assert!(ask(&c, &user, absent()));
        // Another client's change of the inode drops it, and a getattr does not bring it back.
        c.apply(&[Invalidation::Inode(InodeId(5))]);
        assert!(ask(&c, &Request::Getattr { ino: InodeId(5) }, file.clone()));
        assert!(ask(&c, &cap, absent()));
        assert!(!ask(&c, &cap, absent()));
        // So does this client's own setxattr, before it is sent.
        let set = Request::Setxattr {
            who: Caller::root(),
            ino: InodeId(5),
            name: b"security.capability".to_vec(),
            value: vec![1],
            mode: meridian_proto::XattrMode::Any,
        };
        c.plan(&set);
        assert!(c.answer(&Request::Getattr { ino: InodeId(5) }).is_none());
        assert!(ask(&c, &Request::Getattr { ino: InodeId(5) }, file));
        assert!(ask(&c, &cap, Response::Bytes(vec![1].into())));
        assert!(
            ask(&c, &cap, Response::Bytes(vec![1].into())),
            "a present value is not kept"
        );
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
        mkdir_here(&c);
        let probe = Request::Lookup {
            who: root.clone(),
            parent: InodeId(7),
            name: b"f".to_vec(),
        };
        assert_eq!(c.answer(&probe), Some(Response::Err(MetaError::NotFound)));
        // This client creates it: the absent entry is dropped before the call goes out.
        create_here(&c);
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

    /// This client's call `req` that made `made` in directory `dir`, planned and learnt.
    fn made_here(c: &MetaCache, req: Request, made: Attr, dir: Attr) {
        let e = c.epoch();
        let p = c.plan(&req);
        c.learn(e, p, &Response::Made(made, dir));
    }

    /// This client makes directory `d` (inode 7) in the root.
    fn mkdir_here(c: &MetaCache) {
        let mkdir = Request::Mkdir {
            who: Caller::root(),
            parent: ROOT,
            name: b"d".to_vec(),
            mode: 0o755,
        };
        let d = attr(7, 0o755, FileKind::Directory);
        made_here(c, mkdir, d, attr(1, 0o755, FileKind::Directory));
    }

    /// This client creates file `f` (inode 8) in `d`.
    fn create_here(c: &MetaCache) {
        let create = Request::Create {
            who: Caller::root(),
            parent: InodeId(7),
            name: b"f".to_vec(),
            mode: 0o644,
        };
        let f = attr(8, 0o644, FileKind::Regular);
        made_here(c, create, f, attr(7, 0o755, FileKind::Directory));
    }

    /// A directory made here with file `f` (inode 8) in it, known complete.
    fn dir_with_file(c: &MetaCache) -> Request {
        mkdir_here(c);
        create_here(c);
        in_dir(b"f")
    }

    fn in_dir(name: &[u8]) -> Request {
        Request::Lookup {
            who: Caller::root(),
            parent: InodeId(7),
            name: name.to_vec(),
        }
    }

    #[test]
    fn own_unlink_keeps_the_directory_complete_and_fails_safe() {
        let c = MetaCache::default();
        let f = dir_with_file(&c);
        assert!(matches!(c.answer(&f), Some(Response::Attr(a)) if a.ino == InodeId(8)));
        let unlink = Request::Unlink {
            who: Caller::root(),
            parent: InodeId(7),
            name: b"f".to_vec(),
        };
        // A failed unlink: the name still resolves, through the metaserver (its link
        // count is unknown here now).
        let e = c.epoch();
        let p = c.plan(&unlink);
        assert!(c.answer(&f).is_none());
        c.learn(e, p, &Response::Err(MetaError::AccessDenied));
        assert!(c.answer(&f).is_none());
        // A successful one: absent, answered here; the directory is still complete.
        let e = c.epoch();
        let p = c.plan(&unlink);
        c.learn(e, p, &Response::Unit);
        assert_eq!(c.answer(&f), Some(Response::Err(MetaError::NotFound)));
        assert_eq!(
            c.answer(&in_dir(b"g")),
            Some(Response::Err(MetaError::NotFound))
        );
        assert!(c.answer(&Request::Getattr { ino: InodeId(8) }).is_none());
        assert!(c.plan(&in_dir(b"..")).is_nothing());
    }

    #[test]
    fn own_rename_moves_the_entry_and_a_crossed_invalidation_forgets_both_names() {
        let c = MetaCache::default();
        let f = dir_with_file(&c);
        let rename = |to: &[u8]| Request::Rename {
            who: Caller::root(),
            parent: InodeId(7),
            name: b"f".to_vec(),
            new_parent: InodeId(7),
            new_name: to.to_vec(),
            mode: RenameMode::Replace,
        };
        let e = c.epoch();
        let p = c.plan(&rename(b"g"));
        c.learn(e, p, &Response::Unit);
        assert_eq!(c.answer(&f), Some(Response::Err(MetaError::NotFound)));
        // The new name is known to be inode 8, whose ctime changed: the metaserver says.
        assert!(c.answer(&in_dir(b"g")).is_none());
        let e = c.epoch();
        let p = c.plan(&Request::Getattr { ino: InodeId(8) });
        c.learn(e, p, &Response::Attr(attr(8, 0o644, FileKind::Regular)));
        assert!(matches!(c.answer(&in_dir(b"g")), Some(Response::Attr(a)) if a.ino == InodeId(8)));
        // A reply that crossed an invalidation: neither name nor absence is trusted.
        let e = c.epoch();
        let back = Request::Rename {
            who: Caller::root(),
            parent: InodeId(7),
            name: b"g".to_vec(),
            new_parent: InodeId(7),
            new_name: b"f".to_vec(),
            mode: RenameMode::Replace,
        };
        let p = c.plan(&back);
        c.apply(&[Invalidation::Inode(InodeId(99))]);
        c.learn(e, p, &Response::Unit);
        let e = c.epoch();
        let p = c.plan(&Request::Getattr { ino: InodeId(8) });
        c.learn(e, p, &Response::Attr(attr(8, 0o644, FileKind::Regular)));
        assert!(c.answer(&in_dir(b"g")).is_none());
        assert!(c.answer(&in_dir(b"f")).is_none());
        assert!(
            c.answer(&in_dir(b"h")).is_none(),
            "no longer known complete"
        );
    }
}
