//! [`Meta`]: the POSIX namespace rules, written once over any [`Store`].
//!
//! Layout: `perm` (permission checks), `create` (mknod, mkdir, symlink, link), `remove`
//! (unlink, rmdir, dropping links), `rename`, `attr` (setattr, xattrs), `data` (open,
//! release, layouts and commits), `feed` (the HLC-stamped change feed), `locks` (byte-range
//! locks, in memory) and `shared_locks` (the same in a store several metaservers share).
//!
//! Invariants:
//! - Every public operation runs in one store transaction (`Store::write_with` or
//!   `Store::read`). Writes are deferred: they survive a crash of the process when the
//!   operation returns (the store's journal) and a crash of the machine after `sync`.
//! - A directory's nlink is 2 plus its number of subdirectories; the root is its own parent.
//! - An inode whose nlink reaches 0 while open is marked in the orphan table and purged on
//!   its last release, or at the next start if the process died first (with a shared
//!   store: on its last release on every metaserver, see [`shared_opens`]).
//!
//! Locks: `opens` (the in-memory open counts) is taken only outside store transactions or
//! inside them without calling back into the store's lock, so the order is always
//! store transaction → `opens`. `locks` (the byte-range lock table) is taken alone.

mod attr;
mod create;
mod data;
pub mod feed;
pub mod locks;
pub(crate) mod perm;
pub mod placement;
mod remove;
mod rename;
pub mod shared_locks;
mod shared_opens;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_format;
#[cfg(test)]
mod tests_placement;
#[cfg(test)]
mod tests_privileges;
#[cfg(test)]
mod tests_shared;

use crate::records::{
    DentryRec, FORMAT, FORMAT_VERSION, InodeRec, NEXT_INO, Records, Writer, key_ino,
};
use crate::store::{Durability, ReadTxn, Store, Table, nowait};
use meridian_proto::*;
use parking_lot::Mutex;
use std::collections::HashMap;

/// How a namespace is set up when first created, and its limits.
#[derive(Clone, Debug)]
pub struct MetaConfig {
    /// This site's id, stamped in the high bits of every inode it creates.
    pub site: u16,
    /// Owner of the root directory when the namespace is first created.
    pub root_uid: u32,
    pub root_gid: u32,
    /// Files up to this many bytes are stored inline.
    pub inline_max: u64,
    /// With a store several metaservers share: the silence after which another
    /// metaserver counts as gone, its locks are taken away and its orphans purged (see
    /// [`shared_locks`]). Upkeep runs every third of it.
    pub instance_lease: std::time::Duration,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            site: 1,
            root_uid: 0,
            root_gid: 0,
            inline_max: DEFAULT_INLINE_MAX,
            instance_lease: shared_locks::INSTANCE_LEASE,
        }
    }
}

/// The namespace over store `S`.
pub struct Meta<S: Store> {
    store: S,
    config: MetaConfig,
    /// Open counts per inode (the embedded client's opens; clients of a site service keep
    /// theirs in sessions).
    opens: Mutex<HashMap<InodeId, u32>>,
    /// Orphans this process holds open (see [`shared_opens`]): only their last release
    /// can purge, so a release of any other inode needs no store access.
    orphaned: Mutex<std::collections::HashSet<InodeId>>,
    /// The compiled objectives and the generation they were built at (see [`placement`]).
    engine: Mutex<Option<(u64, std::sync::Arc<meridian_objectives::Engine>)>>,
    /// Directory names and attachments for placement, valid at one objectives
    /// generation (see [`placement`]).
    dirs: Mutex<placement::DirCache>,
    /// Every client's byte-range locks (see [`locks`]).
    locks: Mutex<locks::LockTable>,
    /// This process's id in the change feed (random per open).
    instance: u64,
    /// Feed entries appended by this process (every [`feed::TRIM_EVERY`]th trims).
    appended: std::sync::atomic::AtomicU64,
}

impl<S: Store> Meta<S> {
    /// Opens the namespace in `store`, creating the root on first use and purging orphans
    /// left by a process that died with files open.
    pub fn open(store: S, config: MetaConfig) -> MetaResult<Self> {
        let meta = Meta {
            store,
            config,
            opens: Mutex::new(HashMap::new()),
            orphaned: Mutex::default(),
            engine: Mutex::new(None),
            dirs: Mutex::default(),
            locks: Mutex::new(locks::LockTable::default()),
            instance: crate::random_u64(),
            appended: Default::default(),
        };
        meta.init_root()?;
        if !meta.store.shared() {
            meta.purge_orphans()?;
        }
        meta.maintain_at(Hlc::wall_millis())?; // alive, for shared locks
        Ok(meta)
    }

    /// This process's id in the change feed ([`Change::origin`]).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    pub fn config(&self) -> &MetaConfig {
        &self.config
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn init_root(&self) -> MetaResult<()> {
        self.store.write(|txn| {
            let mut w = Writer::new(txn);
            if w.try_inode(ROOT)?.is_some() {
                let format = w.counter(FORMAT)?;
                if format == 1 {
                    w.pack_counters()?;
                    w.set_counter(FORMAT, FORMAT_VERSION)?;
                    tracing::info!("namespace records moved from format 1 to {FORMAT_VERSION}");
                    return Ok(());
                }
                if format != FORMAT_VERSION {
                    return Err(MetaError::Corrupt(format!(
                        "the namespace is in format {format}, this build reads format {FORMAT_VERSION}: \
                         use the Meridian release that wrote it"
                    )));
                }
                return Ok(());
            }
            w.set_counter(FORMAT, FORMAT_VERSION)?;
            let now = Timestamp::now();
            let attr = Attr {
                ino: ROOT,
                kind: FileKind::Directory,
                perm: 0o755,
                nlink: 2,
                uid: self.config.root_uid,
                gid: self.config.root_gid,
                rdev: 0,
                size: 0,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
            };
            w.put_inode(&InodeRec {
                attr,
                parent: ROOT,
                target: Vec::new(),
                placement: None,
            })?;
            w.set_counter(NEXT_INO, 2)?;
            w.set_counter(crate::records::FILES, 1)
        })
    }

    fn purge_orphans(&self) -> MetaResult<()> {
        let orphans = self
            .store
            .read(|t| t.scan(Table::Orphans, &[], None, usize::MAX))?;
        for (key, _) in orphans {
            let ino = key_ino(Table::Orphans, &key)?;
            self.store.write(|txn| Writer::new(txn).purge_inode(ino))?;
            tracing::info!(
                ino = ino.0,
                "purged an inode unlinked while open before the last stop"
            );
        }
        Ok(())
    }

    /// Every block referenced by any file (for garbage collection).
    pub fn referenced_blocks(&self) -> MetaResult<std::collections::HashSet<BlockId>> {
        let mut out = std::collections::HashSet::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .read(|t| t.scan(Table::Data, &[], after.as_deref(), 1024))?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (k, v) in &page {
                let layout: Layout = postcard::from_bytes(v)
                    .map_err(|e| MetaError::Corrupt(format!("data key {k:?}: {e}")))?;
                out.extend(layout.blocks().copied());
            }
        }
        Ok(out)
    }

    fn alloc_ino(&self, w: &mut Writer<'_>) -> MetaResult<InodeId> {
        let n = w.counter(NEXT_INO)?;
        w.set_counter(NEXT_INO, n + 1)?;
        let ino = InodeId::new(self.config.site, n);
        // Nothing is kept under a number never given before: its entries, extended
        // attributes and data layout are known absent (the ones a create and its first
        // writes read).
        for t in [Table::Dentries, Table::Xattrs, Table::Data] {
            w.txn.fresh(t, &crate::records::ino_key(ino));
        }
        Ok(ino)
    }

    fn read<T>(&self, f: impl FnOnce(&dyn ReadTxn) -> MetaResult<T>) -> MetaResult<T> {
        self.store.read(f).inspect_err(|e| {
            if matches!(e, MetaError::Store(_)) && !nowait::gave_up() {
                // Perhaps a change this process saw was lost (see `PgStore`).
                self.forget_derived();
            }
        })
    }

    /// Empties what was derived from transactions (directory names and attachments, the
    /// compiled objectives).
    fn forget_derived(&self) {
        self.dirs.lock().clear();
        *self.engine.lock() = None;
    }

    /// Every change survives a crash of this process when this returns (the store's
    /// journal), and a crash of the machine after the store's next sync: `sync` (fsync,
    /// fsyncdir, syncfs) forces one, as POSIX asks.
    ///
    /// What the transaction changed is appended to the change feed in the same
    /// transaction (see [`feed`]).
    fn write<T>(&self, f: impl FnOnce(&mut Writer<'_>) -> MetaResult<T>) -> MetaResult<T> {
        self.write_for(None, f)
    }

    /// [`Self::write`] for the site call `call` (recorded with the change in the feed, so
    /// that a retry of the call is recognised as done: the calls that make or remove names
    /// of files or of extended attributes).
    fn write_for<T>(
        &self,
        call: Option<CallTag>,
        f: impl FnOnce(&mut Writer<'_>) -> MetaResult<T>,
    ) -> MetaResult<T> {
        self.store
            .write_with(Durability::Deferred, |txn| {
                let mut w = Writer::new(txn);
                let out = f(&mut w)?;
                let Some(hlc) = w.append_feed(Hlc::wall_millis(), self.instance, call)? else {
                    return Ok(out);
                };
                if self.store.shared() && self.others_alive(&w)? {
                    w.txn.announce(self.instance); // their clients may cache what changed
                }
                let n = self
                    .appended
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n.is_multiple_of(feed::TRIM_EVERY) {
                    feed::trim(&mut w, hlc)?;
                }
                Ok(out)
            })
            // It may have read its own writes, now rolled back (or lost); a call tried in
            // place that gave up ran no write and runs again.
            .inspect_err(|_| {
                if !nowait::gave_up() {
                    self.forget_derived()
                }
            })
    }
}

/// Checks a name for one directory entry.
fn check_name(name: &[u8]) -> MetaResult<()> {
    if name.len() > NAME_MAX {
        return Err(MetaError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(MetaError::Invalid(format!(
            "bad file name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// Looks up `name` in directory record `dir`, resolving `.` and `..`.
fn resolve(r: &impl Records, dir: &InodeRec, name: &[u8]) -> MetaResult<Option<DentryRec>> {
    match name {
        b"." => Ok(Some(DentryRec {
            ino: dir.attr.ino,
            kind: FileKind::Directory,
        })),
        b".." => Ok(Some(DentryRec {
            ino: dir.parent,
            kind: FileKind::Directory,
        })),
        _ => r.dentry(dir.attr.ino, name),
    }
}

/// The directory record for `ino`, or `NotDirectory`.
fn dir_rec(r: &impl Records, ino: InodeId) -> MetaResult<InodeRec> {
    let rec = r.inode(ino)?;
    if rec.attr.kind != FileKind::Directory {
        return Err(MetaError::NotDirectory);
    }
    Ok(rec)
}

impl<S: Store> Namespace for Meta<S> {
    fn resolve(&self, names: &[(InodeId, &[u8])]) -> Vec<Option<InodeId>> {
        if names.is_empty() {
            return Vec::new(); // most calls remove nothing: no read
        }
        let found = self.read(|t| {
            t.prefetch_names(names)?;
            let ino = |&(p, n): &(InodeId, &[u8])| Ok(t.dentry(p, n)?.map(|d| d.ino));
            names.iter().map(ino).collect::<MetaResult<Vec<_>>>()
        });
        found.unwrap_or_else(|_| vec![None; names.len()])
    }

    fn lookup(&self, who: &Caller, parent: InodeId, name: &[u8]) -> MetaResult<Attr> {
        if name.len() > NAME_MAX {
            return Err(MetaError::NameTooLong);
        }
        self.read(|t| {
            t.prefetch_entries(&[(parent, name)])?;
            let dir = dir_rec(&t, parent)?;
            perm::check(who, &dir.attr, perm::X)?;
            let d = resolve(&t, &dir, name)?.ok_or(MetaError::NotFound)?;
            Ok(t.inode(d.ino)?.attr)
        })
    }

    fn getattr(&self, ino: InodeId) -> MetaResult<Attr> {
        self.read(|t| Ok(t.inode(ino)?.attr))
    }

    fn setattr(&self, who: &Caller, ino: InodeId, set: &SetAttr) -> MetaResult<Attr> {
        self.write(|w| attr::setattr(w, who, ino, set))
    }

    fn access(&self, who: &Caller, ino: InodeId, mask: u32) -> MetaResult<()> {
        self.read(|t| perm::check(who, &t.inode(ino)?.attr, mask))
    }

    fn mknod(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        kind: FileKind,
        mode: u16,
        rdev: u32,
    ) -> MetaResult<Attr> {
        let what = Make::Node { kind, mode, rdev };
        Ok(self.make(who, parent, name, what)?.0)
    }

    fn create(&self, who: &Caller, parent: InodeId, name: &[u8], mode: u16) -> MetaResult<Attr> {
        Ok(self.make(who, parent, name, Make::File { mode })?.0)
    }

    fn mkdir(&self, who: &Caller, parent: InodeId, name: &[u8], mode: u16) -> MetaResult<Attr> {
        Ok(self.make(who, parent, name, Make::Dir { mode })?.0)
    }

    fn symlink(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        target: &[u8],
    ) -> MetaResult<Attr> {
        Ok(self.make(who, parent, name, Make::Symlink { target })?.0)
    }

    fn make(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        what: Make<'_>,
    ) -> MetaResult<(Attr, Attr)> {
        let new = create::New::of(what)?;
        let made = self.write_for(who.call, |w| {
            let attr = self.create(w, who, parent, name, new)?;
            self.place(w, attr.ino, parent, name, true)?;
            // The transaction's own write: no read of the store.
            Ok((attr, w.inode(parent)?.attr))
        })?;
        if let Make::File { .. } = what {
            *self.opens.lock().entry(made.0.ino).or_insert(0) += 1;
        }
        Ok(made)
    }

    fn readlink(&self, ino: InodeId) -> MetaResult<Vec<u8>> {
        let rec = self.read(|t| t.inode(ino))?;
        if rec.attr.kind != FileKind::Symlink {
            return Err(MetaError::Invalid("not a symbolic link".into()));
        }
        Ok(rec.target)
    }

    fn link(&self, who: &Caller, ino: InodeId, parent: InodeId, name: &[u8]) -> MetaResult<Attr> {
        self.write_for(who.call, |w| create::link(w, who, ino, parent, name))
    }

    fn unlink(&self, who: &Caller, parent: InodeId, name: &[u8]) -> MetaResult<()> {
        self.write_for(who.call, |w| self.remove(w, who, parent, name, false))
    }

    fn rmdir(&self, who: &Caller, parent: InodeId, name: &[u8]) -> MetaResult<()> {
        self.write_for(who.call, |w| self.remove(w, who, parent, name, true))
    }

    fn rename(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        mode: RenameMode,
    ) -> MetaResult<()> {
        self.write_for(who.call, |w| {
            self.rename_in(
                w,
                who,
                rename::Move {
                    parent,
                    name,
                    new_parent,
                    new_name,
                    mode,
                },
            )?;
            self.after_rename(w, [(parent, name), (new_parent, new_name)])
        })
    }

    fn readdir(
        &self,
        who: &Caller,
        dir: InodeId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<DirEntry>> {
        self.read(|t| {
            let d = dir_rec(&t, dir)?;
            perm::check(who, &d.attr, perm::R)?;
            Ok(t.children(dir, after, limit)?
                .into_iter()
                .map(|(name, e)| DirEntry {
                    name,
                    ino: e.ino,
                    kind: e.kind,
                })
                .collect())
        })
    }

    fn parent(&self, dir: InodeId) -> MetaResult<InodeId> {
        self.read(|t| Ok(dir_rec(&t, dir)?.parent))
    }

    fn open(&self, who: &Caller, ino: InodeId, read: bool, write: bool) -> MetaResult<Attr> {
        self.open_file(who, ino, read, write)
    }

    fn release(&self, ino: InodeId) -> MetaResult<()> {
        self.release_file(ino)
    }

    fn release_in_memory(&self, ino: InodeId) -> bool {
        // Only an orphan this process holds reaches the store (see `release_file`).
        !self.orphaned.lock().contains(&ino)
    }

    fn answers_at_once(&self) -> bool {
        self.store.answers_at_once()
    }

    fn layout(&self, ino: InodeId) -> MetaResult<(Layout, u64)> {
        self.read(|t| {
            let rec = t.inode(ino)?;
            if rec.attr.kind != FileKind::Regular {
                return Err(MetaError::Invalid("not a regular file".into()));
            }
            Ok((t.layout(ino)?, rec.attr.size))
        })
    }

    fn commit(&self, ino: InodeId, commit: &Commit) -> MetaResult<Attr> {
        self.write(|w| {
            let attr = data::commit(w, ino, commit)?;
            self.replace(w, ino)?;
            Ok(attr)
        })
    }

    fn getxattr(&self, who: &Caller, ino: InodeId, name: &[u8]) -> MetaResult<Vec<u8>> {
        self.read(|t| {
            if name == placement::PLACEMENT {
                perm::check(who, &t.inode(ino)?.attr, perm::R)?;
                return self.placement_text(&t, ino);
            }
            attr::getxattr(&t, who, ino, name)
        })
    }

    fn setxattr(
        &self,
        who: &Caller,
        ino: InodeId,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
    ) -> MetaResult<()> {
        self.write_for(who.call, |w| {
            placement::validate(w, ino, name, value)?;
            attr::setxattr(w, who, ino, name, value, mode)?;
            self.after_xattr(w, ino, name)
        })
    }

    fn listxattr(&self, who: &Caller, ino: InodeId) -> MetaResult<Vec<Vec<u8>>> {
        // `user.meridian.placement` is virtual, read by name and not listed (as Ceph's
        // layout attributes), so copy tools do not try to write it elsewhere.
        self.read(|t| {
            let mut names = attr::listxattr(&t, who, ino)?;
            names.retain(|n| !placement::is_internal(n));
            Ok(names)
        })
    }

    fn removexattr(&self, who: &Caller, ino: InodeId, name: &[u8]) -> MetaResult<()> {
        self.write_for(who.call, |w| {
            if name == placement::PLACEMENT {
                return Err(MetaError::NotPermitted);
            }
            attr::removexattr(w, who, ino, name)?;
            self.after_xattr(w, ino, name)
        })
    }

    fn sync(&self) -> MetaResult<()> {
        self.store.sync()
    }

    fn getlk(&self, ino: InodeId, owner: LockOwner, lock: &Lock) -> MetaResult<Option<Lock>> {
        if self.store.shared() {
            return self.getlk_shared(ino, owner, lock);
        }
        self.getattr(ino)?;
        Ok(self.locks.lock().test(ino, owner, lock))
    }

    fn setlk(&self, ino: InodeId, owner: LockOwner, lock: &Lock) -> MetaResult<()> {
        if self.store.shared() {
            return self.setlk_shared(ino, owner, lock);
        }
        self.getattr(ino)?;
        self.locks.lock().set(ino, owner, lock)
    }

    fn maintain(&self) -> MetaResult<()> {
        self.maintain_at(Hlc::wall_millis()).map(drop)
    }

    fn end_session(&self, session: u64) -> MetaResult<()> {
        let n = match self.store.shared() {
            true => self.end_session_shared(session)?,
            false => self.locks.lock().end_session(session),
        };
        if n > 0 {
            tracing::info!(session, locks = n, "released the locks of an ended session");
        }
        Ok(())
    }

    fn changes(&self, after: Hlc, limit: usize) -> MetaResult<Vec<Change>> {
        self.read(|t| feed::read(t, after, limit))
    }

    fn statfs(&self) -> MetaResult<StatFs> {
        self.read(|t| {
            Ok(StatFs {
                files: t.counter(crate::records::FILES)?,
                bytes_used: t.counter(crate::records::BYTES)?,
            })
        })
    }
}
