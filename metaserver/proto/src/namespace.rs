//! The [`Namespace`] trait: every metadata operation a client needs.
//!
//! Implementations: `meridian_metaserver::Meta` (the POSIX rules over a transactional store,
//! embedded in the client or served by a site's metaserver). Contract:
//! - every mutating call is atomic: it happens completely or not at all;
//! - every change survives a crash of the serving process when its call returns, and a
//!   crash of its machine once `sync` returns (an implementation may defer the fsync, as a
//!   local filesystem defers its journal commit);
//! - every call checks the caller's permissions as POSIX says; a caller with uid 0 passes
//!   every permission check except execute on a file with no execute bit;
//! - an inode whose last name is removed while it is open (see [`Namespace::open`]) stays
//!   readable and writable until the last [`Namespace::release`].

use crate::session::Invalidation;
use crate::{
    Attr, BlockRef, Caller, DirEntry, FileKind, Hlc, InodeId, Layout, MetaResult, Timestamp,
};
use serde::{Deserialize, Serialize};

/// How a time attribute is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    Now,
    At(Timestamp),
}

/// A `setattr` request: each `Some` field changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    pub mode: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub ctime: Option<Timestamp>,
    /// The change comes through an open file handle (ftruncate): the open already checked
    /// write permission.
    pub via_handle: bool,
    /// Clear set-user-ID, and set-group-ID where the group may execute or the caller is
    /// neither root nor in the file's group, as a local file system does when a caller
    /// without `CAP_FSETID` writes or truncates (FUSE's `FATTR_KILL_SUIDGID` and
    /// `FUSE_WRITE_KILL_SUIDGID`). A change of owner or group of a non-directory clears
    /// them whatever this says.
    pub kill_suidgid: bool,
}

/// What `rename` does when the target exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenameMode {
    /// Replace the target as POSIX `rename(2)` does.
    Replace,
    /// Fail with [`crate::MetaError::Exists`] if the target exists.
    NoReplace,
    /// Swap source and target atomically; both must exist.
    Exchange,
}

/// How `setxattr` treats an existing attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum XattrMode {
    Any,
    CreateOnly,
    ReplaceOnly,
}

/// A write committed on flush, fsync or close: chunks replaced (or made holes with `None`),
/// or the whole file made inline, and the size and mtime after the write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub chunks: Vec<(u64, Option<BlockRef>)>,
    /// Replace the whole layout with these inline bytes (then `chunks` must be empty).
    #[serde(with = "serde_bytes")]
    pub inline: Option<Vec<u8>>,
    pub size: u64,
    pub mtime: Timestamp,
}

/// Capacity figures for `statfs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatFs {
    pub files: u64,
    pub bytes_used: u64,
}

/// A byte-range lock: POSIX record locks (fcntl) and flock, which Linux keeps apart (a
/// flock never conflicts with a record lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub kind: LockKind,
    /// First byte covered.
    pub start: u64,
    /// Last byte covered (inclusive); `u64::MAX` reaches past any end of file.
    pub end: u64,
    /// The process that holds it (reported by F_GETLK; 0 if unknown).
    pub pid: u32,
    /// A flock rather than a record lock.
    pub flock: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Read,
    Write,
    Unlock,
}

/// Who holds a lock: the client session (0 in embedded mode; a metaserver fills in the
/// connection's own, so clients cannot forge each other's) and the kernel's lock owner in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockOwner {
    pub session: u64,
    pub owner: u64,
}

/// One entry of the change feed: what one transaction changed, stamped with its hybrid
/// logical clock (the feed's cursor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub hlc: Hlc,
    /// Which metaserver process wrote it (random per process): a metaserver sharing its
    /// store with others pushes to its clients the changes the others made.
    pub origin: u64,
    pub items: Vec<Invalidation>,
    /// The site call it was made for, if any (see [`crate::Caller::call`]).
    pub call: Option<crate::CallTag>,
}

/// What [`Namespace::make`] makes.
#[derive(Clone, Copy, Debug)]
pub enum Make<'a> {
    /// A regular file, FIFO, socket or device node (`mknod`).
    Node {
        kind: FileKind,
        mode: u16,
        rdev: u32,
    },
    /// A regular file, recorded open (`create`).
    File {
        mode: u16,
    },
    Dir {
        mode: u16,
    },
    Symlink {
        target: &'a [u8],
    },
}

/// The metadata operations of one namespace.
pub trait Namespace: Send + Sync {
    fn lookup(&self, who: &Caller, parent: InodeId, name: &[u8]) -> MetaResult<Attr>;
    fn getattr(&self, ino: InodeId) -> MetaResult<Attr>;
    fn setattr(&self, who: &Caller, ino: InodeId, set: &SetAttr) -> MetaResult<Attr>;
    /// Checks `mask` (bits 4 read, 2 write, 1 execute; 0 existence) for the caller.
    fn access(&self, who: &Caller, ino: InodeId, mask: u32) -> MetaResult<()>;

    /// Creates a regular file, FIFO, socket or device node. `mode` is already masked by umask.
    fn mknod(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        kind: FileKind,
        mode: u16,
        rdev: u32,
    ) -> MetaResult<Attr>;
    /// Creates a regular file and records it open (as `open` does) without checking the new
    /// file's own mode: `open(O_CREAT|O_WRONLY, 0444)` must succeed.
    fn create(&self, who: &Caller, parent: InodeId, name: &[u8], mode: u16) -> MetaResult<Attr>;
    fn mkdir(&self, who: &Caller, parent: InodeId, name: &[u8], mode: u16) -> MetaResult<Attr>;
    fn symlink(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        target: &[u8],
    ) -> MetaResult<Attr>;
    /// Makes `name` in `parent` as `mknod`, `create`, `mkdir` or `symlink` does, and returns
    /// its attributes with the directory's afterwards (a namespace that can should take
    /// both from one transaction).
    fn make(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        what: Make<'_>,
    ) -> MetaResult<(Attr, Attr)> {
        let made = match what {
            Make::Node { kind, mode, rdev } => self.mknod(who, parent, name, kind, mode, rdev),
            Make::File { mode } => self.create(who, parent, name, mode),
            Make::Dir { mode } => self.mkdir(who, parent, name, mode),
            Make::Symlink { target } => self.symlink(who, parent, name, target),
        }?;
        Ok((made, self.getattr(parent)?))
    }
    /// What each `(parent, name)` names now — no permission check, no attributes. A site
    /// server reads this before a removal or rename, to invalidate those inodes in other
    /// clients' caches after it (a namespace that can answers in one read).
    fn resolve(&self, names: &[(InodeId, &[u8])]) -> Vec<Option<InodeId>> {
        let root = Caller::root();
        let ino = |&(p, n): &(InodeId, &[u8])| self.lookup(&root, p, n).ok().map(|a| a.ino);
        names.iter().map(ino).collect()
    }
    fn readlink(&self, ino: InodeId) -> MetaResult<Vec<u8>>;
    fn link(&self, who: &Caller, ino: InodeId, parent: InodeId, name: &[u8]) -> MetaResult<Attr>;
    fn unlink(&self, who: &Caller, parent: InodeId, name: &[u8]) -> MetaResult<()>;
    fn rmdir(&self, who: &Caller, parent: InodeId, name: &[u8]) -> MetaResult<()>;
    fn rename(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        mode: RenameMode,
    ) -> MetaResult<()>;

    /// Up to `limit` entries of `dir` whose names sort after `after` (all, if `None`), in
    /// name order. Does not include `.` and `..`.
    fn readdir(
        &self,
        who: &Caller,
        dir: InodeId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<DirEntry>>;
    /// The parent of directory `dir` (the root is its own parent).
    fn parent(&self, dir: InodeId) -> MetaResult<InodeId>;

    /// Checks that the caller may open `ino` for reading and/or writing, and records the
    /// open so the inode outlives its last name until [`Namespace::release`].
    fn open(&self, who: &Caller, ino: InodeId, read: bool, write: bool) -> MetaResult<Attr>;
    fn release(&self, ino: InodeId) -> MetaResult<()>;
    /// Whether a release of `ino` now would need only memory, not the store (a server
    /// over a store that blocks on the network runs such a call at once rather than on a
    /// thread of its own). A hint: a release may still reach the store if the file lost
    /// its last name meanwhile. By default, no.
    fn release_in_memory(&self, _ino: InodeId) -> bool {
        false
    }
    /// Whether a call now would likely be answered without waiting for the network (a
    /// store in memory or on a local disk: always), so that a server may try it on its
    /// own thread, ready to run it elsewhere if it gives up (see the metaserver's
    /// `store::nowait`). By default, yes.
    fn answers_at_once(&self) -> bool {
        true
    }
    /// The current data layout of a regular file, and its size.
    fn layout(&self, ino: InodeId) -> MetaResult<(Layout, u64)>;
    fn commit(&self, ino: InodeId, commit: &Commit) -> MetaResult<Attr>;

    fn getxattr(&self, who: &Caller, ino: InodeId, name: &[u8]) -> MetaResult<Vec<u8>>;
    fn setxattr(
        &self,
        who: &Caller,
        ino: InodeId,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
    ) -> MetaResult<()>;
    fn listxattr(&self, who: &Caller, ino: InodeId) -> MetaResult<Vec<Vec<u8>>>;
    fn removexattr(&self, who: &Caller, ino: InodeId, name: &[u8]) -> MetaResult<()>;

    /// The first lock held by another owner that conflicts with `lock`, if any (F_GETLK).
    fn getlk(&self, ino: InodeId, owner: LockOwner, lock: &Lock) -> MetaResult<Option<Lock>>;
    /// Takes, changes or (with [`LockKind::Unlock`]) releases `owner`'s lock over the range;
    /// a conflict with another owner is [`crate::MetaError::WouldBlock`] (F_SETLK).
    fn setlk(&self, ino: InodeId, owner: LockOwner, lock: &Lock) -> MetaResult<()>;
    /// Releases every lock of a client session that ended (its connection closed or its
    /// lease ran out).
    fn end_session(&self, session: u64) -> MetaResult<()>;
    /// Periodic upkeep a service runs every few seconds (for a store several metaservers
    /// share: liveness, and the locks of metaservers gone silent). Nothing by default.
    fn maintain(&self) -> MetaResult<()> {
        Ok(())
    }

    /// Up to `limit` entries of the change feed stamped after `after` (from the start with
    /// `Hlc(0)`), oldest first. A subscriber keeps the last stamp it read as its cursor.
    /// Entries older than the feed's retention are gone: a cursor older than the first
    /// entry is [`crate::MetaError::Invalid`] (the subscriber must resynchronise).
    fn changes(&self, after: Hlc, limit: usize) -> MetaResult<Vec<Change>>;

    fn statfs(&self) -> MetaResult<StatFs>;
    /// Makes every completed change durable (fsync of a directory).
    fn sync(&self) -> MetaResult<()>;
}
