//! Conversions between the kernel's types and the core's, the caller's identity, and the
//! kernel-side handler for a site metaserver's pushed invalidations.
//!
//! Owns no state.

use super::*;

/// What a mount does with invalidations its site metaserver pushes: the kernel drops the
/// named attributes, entries and cached pages. Called from the client's invalidation
/// thread, never from a FUSE request (the kernel may hold the directory's lock while a
/// request of ours is in flight).
/// A lock released elsewhere wakes this mount's lock waiters.
pub fn invalidator(n: Notifier, fs: Arc<Fs>) -> meridian_proto::session::InvalidationHandler {
    use meridian_proto::session::Invalidation;
    Box::new(move |items| {
        for item in items {
            // ENOENT: the kernel holds nothing of it, which is fine.
            let _ = match item {
                Invalidation::Inode(i) => n.inval_inode(INodeNo(i.0), 0, 0),
                Invalidation::Entry { parent, name } => {
                    n.inval_entry(INodeNo(parent.0), OsStr::from_bytes(name))
                }
                Invalidation::Locks(_) => {
                    fs.locks_changed();
                    Ok(())
                }
            };
        }
    })
}

/// A lock request from the kernel (flock arrives as a whole-file lock; fuser does not say
/// which it is, so both kinds share one table: see docs/operations.md).
pub(super) fn lock(start: u64, end: u64, typ: i32, pid: u32) -> Option<meridian_proto::Lock> {
    let kind = match typ {
        libc::F_RDLCK => meridian_proto::LockKind::Read,
        libc::F_WRLCK => meridian_proto::LockKind::Write,
        libc::F_UNLCK => meridian_proto::LockKind::Unlock,
        _ => return None,
    };
    Some(meridian_proto::Lock {
        kind,
        start,
        end,
        pid,
        flock: false,
    })
}

pub(super) fn lock_type(k: meridian_proto::LockKind) -> i32 {
    match k {
        meridian_proto::LockKind::Read => libc::F_RDLCK,
        meridian_proto::LockKind::Write => libc::F_WRLCK,
        meridian_proto::LockKind::Unlock => libc::F_UNLCK,
    }
}

pub(super) fn ino(i: INodeNo) -> InodeId {
    InodeId(i.0)
}

pub(super) fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

pub(super) fn kind_from_mode(mode: u32) -> Option<FileKind> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Some(FileKind::Regular),
        libc::S_IFIFO => Some(FileKind::Fifo),
        libc::S_IFSOCK => Some(FileKind::Socket),
        libc::S_IFCHR => Some(FileKind::CharDevice),
        libc::S_IFBLK => Some(FileKind::BlockDevice),
        _ => None,
    }
}

pub(super) fn to_fuse(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.blocks(),
        atime: a.atime.into(),
        mtime: a.mtime.into(),
        ctime: a.ctime.into(),
        crtime: a.crtime.into(),
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 1 << 20,
        flags: 0,
    }
}

pub(super) fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

/// Supplementary groups of process `pid`, from `/proc/<pid>/status`.
/// Whether thread `tid` has a signal pending that it neither blocks nor ignores, or is
/// gone: a blocking lock request made by it should stop waiting (the kernel cannot tell
/// us: fuser answers FUSE_INTERRUPT with ENOSYS, and a request already read by the daemon
/// keeps even a SIGKILLed caller waiting until it is answered).
pub(super) fn signal_pending(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    const KILL: u64 = 1 << (libc::SIGKILL - 1);
    pending & KILL != 0 || pending & !mask("SigBlk:") & !mask("SigIgn:") != 0
}

pub(super) fn groups_of(pid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The process asking. Its supplementary groups are read from /proc only if a check
/// needs them (see [`meridian_proto::Groups`]): reading them costs more than most
/// requests it comes with.
pub(super) fn caller(req: &Request) -> Caller {
    let groups = match req.uid() {
        0 => meridian_proto::Groups::known(Vec::new()),
        _ => meridian_proto::Groups::lazy(groups_of, req.pid()),
    };
    Caller::with_groups(req.uid(), req.gid(), groups)
}

pub(super) fn time(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(t.into()),
    }
}

pub(super) fn open_mode(flags: i32) -> OpenMode {
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => OpenMode {
            read: true,
            write: false,
        },
        libc::O_WRONLY => OpenMode {
            read: false,
            write: true,
        },
        _ => OpenMode {
            read: true,
            write: true,
        },
    }
}
