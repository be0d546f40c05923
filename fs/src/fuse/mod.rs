//! The thin FUSE adapter: `fuser::Filesystem` over [`Fs`].
//!
//! Owns only translation: kernel types to core types and back, the caller's identity
//! (uid, gid and supplementary groups from `/proc`), and errno through
//! [`FsError::errno`]. Every decision about files lives in the core.
//!
//! Locks: `modes` (which opens are passthrough, see [`modes`]), held across an open's
//! reply and taken with no other lock held. POSIX (fcntl) and BSD (flock) locks go to the
//! namespace (see `core::locks`), so every client of a site sees them.

mod convert;
mod modes;
mod session;

use crate::core::{Fs, OpenMode};
use crate::error::FsError;
pub use convert::invalidator;
use convert::*;
use fuser::*;
use meridian_proto::{
    Attr, Caller, DirEntry, FileKind, InodeId, NAME_MAX, RenameMode, SetAttr, TimeSet, XattrMode,
};
pub use session::{FuseOptions, session};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The adapter.
pub struct FuseFs {
    fs: Arc<Fs>,
    ttl: Duration,
    /// The kernel accepted FUSE passthrough and opening backing files works.
    passthrough: std::sync::atomic::AtomicBool,
    /// Passthrough and cached opens per inode (see [`modes`]); dropping a backing id
    /// unregisters it.
    modes: parking_lot::Mutex<modes::Modes<BackingId>>,
    /// The session's notifier, set once the session exists.
    notifier: Arc<std::sync::OnceLock<Notifier>>,
}

const GEN: Generation = Generation(0);

/// 10 ms steps a writer waits for passthrough readers' releases before ETXTBSY.
const BUSY_GRACE_STEPS: usize = 20;

impl FuseFs {
    pub fn new(fs: Arc<Fs>, opts: &FuseOptions) -> Self {
        FuseFs {
            fs,
            ttl: opts.attr_ttl,
            passthrough: false.into(),
            modes: Default::default(),
            notifier: Default::default(),
        }
    }

    /// Clears set-user-ID and set-group-ID before a write by the caller, and drops the
    /// kernel's copy of the attributes if they changed. Dropping attributes only (offset
    /// -1) takes no lock the kernel may hold during this request.
    fn kill_suidgid(&self, req: &Request, i: INodeNo) -> Result<(), FsError> {
        if self.fs.kill_suidgid(&caller(req), ino(i))?
            && let Some(n) = self.notifier.get()
        {
            let _ = n.inval_inode(i, -1, 0);
        }
        Ok(())
    }
}

impl FuseFs {
    fn entry(&self, r: Result<Attr, FsError>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(&self.ttl, &to_fuse(&a), GEN),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn empty(&self, r: Result<(), FsError>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn xattr_reply(&self, r: Result<Vec<u8>, FsError>, size: u32, reply: ReplyXattr) {
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(errno(&FsError::Range)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // We clear set-user-ID on write, truncate and chown (see `write`, `setattr`), so
        // the kernel checks a file's privileges once per write stream instead of sending a
        // GETXATTR of security.capability before every WRITE.
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        // Record locks and flock go to the namespace, so every client of a site sees them.
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_LOCKS | InitFlags::FUSE_FLOCK_LOCKS);
        if self.fs.config().passthrough_dir.is_some() {
            // Kernels before 6.9 lack passthrough: then every read goes through this process.
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough
                .store(ok, std::sync::atomic::Ordering::Relaxed);
            if !ok {
                tracing::info!(
                    "the kernel does not offer FUSE passthrough; reads go through the mount"
                );
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.flush_all() {
            tracing::error!(error = %e, "could not commit every open file at unmount");
        }
    }

    /// A missing name is answered as a negative entry (node id 0) cached for the attribute
    /// TTL, so a create or a repeated stat of a missing name costs no second round trip.
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(&caller(req), ino(parent), name.as_bytes()) {
            Err(e) if e.errno() == libc::ENOENT => {
                let negative = FileAttr {
                    ino: INodeNo(0),
                    size: 0,
                    blocks: 0,
                    atime: SystemTime::UNIX_EPOCH,
                    mtime: SystemTime::UNIX_EPOCH,
                    ctime: SystemTime::UNIX_EPOCH,
                    crtime: SystemTime::UNIX_EPOCH,
                    kind: fuser::FileType::RegularFile,
                    perm: 0,
                    nlink: 0,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    blksize: 0,
                    flags: 0,
                };
                reply.entry(&self.ttl, &negative, GEN)
            }
            r => self.entry(r, reply),
        }
    }

    fn forget(&self, _req: &Request, i: INodeNo, nlookup: u64) {
        self.fs.forget(ino(i), nlookup)
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino(i)) {
            Ok(a) => reply.attr(&self.ttl, &to_fuse(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        i: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let who = caller(req);
        let set = SetAttr {
            mode: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            ctime: ctime.map(Into::into),
            via_handle: fh.is_some(),
            // The kernel's FATTR_KILL_SUIDGID, which fuser does not pass on: it asks for a
            // truncation by a caller without CAP_FSETID (root stands for that here).
            kill_suidgid: size.is_some() && !who.is_root(),
        };
        match self.fs.setattr(&who, ino(i), set) {
            Ok(a) => reply.attr(&self.ttl, &to_fuse(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, i: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino(i)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let Some(k) = kind_from_mode(mode) else {
            return reply.error(Errno::EINVAL);
        };
        let r = self.fs.mknod(
            &caller(req),
            ino(parent),
            name.as_bytes(),
            k,
            (mode & 0o7777) as u16,
            rdev,
        );
        self.entry(r, reply)
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.entry(
            self.fs.mkdir(
                &caller(req),
                ino(parent),
                name.as_bytes(),
                (mode & 0o7777) as u16,
            ),
            reply,
        )
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(
            self.fs.unlink(&caller(req), ino(parent), name.as_bytes()),
            reply,
        )
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(
            self.fs.rmdir(&caller(req), ino(parent), name.as_bytes()),
            reply,
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.fs.symlink(
            &caller(req),
            ino(parent),
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
        );
        self.entry(r, reply)
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            return reply.error(Errno::EINVAL);
        };
        let r = self.fs.rename(
            &caller(req),
            ino(parent),
            name.as_bytes(),
            ino(newparent),
            newname.as_bytes(),
            mode,
        );
        self.empty(r, reply)
    }

    fn link(
        &self,
        req: &Request,
        i: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.entry(
            self.fs
                .link(&caller(req), ino(i), ino(newparent), newname.as_bytes()),
            reply,
        )
    }

    fn open(&self, req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = open_mode(flags.0);
        let (fh, keep) = match self.fs.open(&caller(req), ino(i), mode) {
            Ok(r) => r,
            Err(e) => return reply.error(errno(&e)),
        };
        // The kernel sends a reader's release after its close returns: a writer opening
        // right after the last passthrough reader closed gives that release a moment.
        let mut modes = self.modes.lock();
        for _ in 0..BUSY_GRACE_STEPS {
            if !matches!(modes.mode(i.0, mode.write), modes::Mode::Busy) {
                break;
            }
            drop(modes);
            std::thread::sleep(Duration::from_millis(10));
            modes = self.modes.lock();
        }
        let may_passthrough = match modes.mode(i.0, mode.write) {
            modes::Mode::Busy => {
                drop(modes);
                let e = FsError::PassthroughBusy(i.0);
                tracing::warn!("open for writing refused: {e}");
                let _ = self.fs.release(fh);
                return reply.error(errno(&e));
            }
            modes::Mode::Passthrough(id) => {
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), id);
                modes.add_passthrough(i.0, fh, None);
                return;
            }
            modes::Mode::Cached { may_passthrough } => may_passthrough,
        };
        // An O_DIRECT open is not given a backing file of its own: the kernel would send its
        // reads to the copy by direct I/O, so every small read would wait on the device
        // (77 µs at QD1 on this project's machines), where this process serves it from the
        // NVMe tier's page cache, verified, in 25 µs (docs/design.md, "O_DIRECT opens").
        // It still joins a backing file other readers hold: the kernel allows no mix.
        let direct = flags.0 & libc::O_DIRECT != 0;
        if may_passthrough
            && !direct
            && self.passthrough.load(std::sync::atomic::Ordering::Relaxed)
            && let Some(file) = self.fs.passthrough_file(ino(i))
        {
            match reply.open_backing(&file) {
                Ok(id) => {
                    reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                    modes.add_passthrough(i.0, fh, Some(id));
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "FUSE passthrough refused; reads go through the mount");
                    self.passthrough
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        modes.add_cached(i.0, fh);
        let flags = if keep {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(fh), flags)
    }

    fn read(
        &self,
        _req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // With HANDLE_KILLPRIV_V2 the kernel leaves clearing set-user-ID to us: it flags
        // every write by a caller without CAP_FSETID.
        if wf.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            && let Err(e) = self.kill_suidgid(req, i)
        {
            return reply.error(errno(&e));
        }
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close drops the closing process's record locks on the file (POSIX).
        let r = self
            .fs
            .unlock_owner(ino(i), lock.0)
            .and_then(|_| self.fs.flush(fh.0));
        self.empty(r, reply)
    }

    fn release(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // The last close of a flock'ed open file drops its flock.
        if let Some(owner) = lock
            && let Err(e) = self.fs.unlock_owner(ino(i), owner.0)
        {
            tracing::warn!(error = %e, "releasing a flock at close");
        }
        self.modes.lock().release(fh.0);
        self.empty(self.fs.release(fh.0), reply)
    }

    fn fsync(
        &self,
        _req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(self.fs.fsync(fh.0), reply)
    }

    fn getlk(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let Some(want) = lock(start, end, typ, pid) else {
            return reply.error(Errno::EINVAL);
        };
        match self.fs.getlk(ino(i), owner.0, &want) {
            Ok(Some(l)) => reply.locked(l.start, l.end, lock_type(l.kind), l.pid),
            Ok(None) => reply.locked(start, end, libc::F_UNLCK, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setlk(
        &self,
        req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let Some(want) = lock(start, end, typ, pid) else {
            return reply.error(Errno::EINVAL);
        };
        let pid = req.pid();
        let interrupted = move || convert::signal_pending(pid);
        let wait = sleep.then_some(&interrupted as &dyn Fn() -> bool);
        self.empty(self.fs.setlk(ino(i), owner.0, &want, wait), reply)
    }

    fn opendir(&self, req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(&caller(req), ino(i)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.fs.dir_entries(fh.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        for (k, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(e.ino.0),
                k as u64 + 1,
                kind(e.kind),
                OsStr::from_bytes(&e.name),
            ) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.fs.dir_entries(fh.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        for (k, e) in entries.iter().enumerate().skip(offset as usize) {
            let Some(attr) = self.plus_attr(e) else {
                continue;
            };
            if reply.add(
                INodeNo(e.ino.0),
                k as u64 + 1,
                OsStr::from_bytes(&e.name),
                &self.ttl,
                &to_fuse(&attr),
                GEN,
            ) {
                // The kernel did not take this entry: give back the reference counted for it.
                if e.name != b"." && e.name != b".." {
                    self.fs.forget(e.ino, 1);
                }
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(
        &self,
        _req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.empty(self.fs.releasedir(fh.0), reply)
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(self.fs.sync_namespace(), reply)
    }

    fn statfs(&self, _req: &Request, _i: INodeNo, reply: ReplyStatfs) {
        const BSIZE: u64 = 4096;
        match self.fs.statfs() {
            Ok(s) => {
                let blocks = s.capacity_bytes / BSIZE;
                let free = blocks.saturating_sub(s.used_bytes.div_ceil(BSIZE));
                let ffree = u32::MAX as u64;
                reply.statfs(
                    blocks,
                    free,
                    free,
                    s.files + ffree,
                    ffree,
                    BSIZE as u32,
                    NAME_MAX as u32,
                    BSIZE as u32,
                )
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let mode = match flags {
            0 => XattrMode::Any,
            libc::XATTR_CREATE => XattrMode::CreateOnly,
            libc::XATTR_REPLACE => XattrMode::ReplaceOnly,
            _ => return reply.error(Errno::EINVAL),
        };
        self.empty(
            self.fs
                .setxattr(&caller(req), ino(i), name.as_bytes(), value, mode),
            reply,
        )
    }

    fn getxattr(&self, req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.xattr_reply(
            self.fs.getxattr(&caller(req), ino(i), name.as_bytes()),
            size,
            reply,
        )
    }

    fn listxattr(&self, req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.fs.listxattr(&caller(req), ino(i)).map(|names| {
            names
                .into_iter()
                .flat_map(|mut n| {
                    n.push(0);
                    n
                })
                .collect()
        });
        self.xattr_reply(r, size, reply)
    }

    fn removexattr(&self, req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(
            self.fs.removexattr(&caller(req), ino(i), name.as_bytes()),
            reply,
        )
    }

    fn access(&self, req: &Request, i: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.empty(
            self.fs.access(&caller(req), ino(i), mask.bits() as u32),
            reply,
        )
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if kind_from_mode(mode) != Some(FileKind::Regular) {
            return reply.error(Errno::EINVAL);
        }
        let (who, parent, name) = (caller(req), ino(parent), name.as_bytes());
        let (mode, open) = ((mode & 0o7777) as u16, open_mode(flags));
        let made = if flags & libc::O_EXCL != 0 {
            self.fs.create(&who, parent, name, mode, open)
        } else {
            let truncate = flags & libc::O_TRUNC != 0;
            let made = self
                .fs
                .create_or_open(&who, parent, name, mode, open, truncate);
            made.map(|(a, fh, _)| (a, fh))
        };
        match made {
            Ok((a, fh)) => {
                self.modes.lock().add_cached(a.ino.0, fh);
                reply.created(
                    &self.ttl,
                    &to_fuse(&a),
                    GEN,
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // A local file system clears set-user-ID here too (file_modified), and with
        // HANDLE_KILLPRIV_V2 the kernel no longer asks for it.
        let supported = matches!(mode, 0 | libc::FALLOC_FL_KEEP_SIZE);
        if supported
            && req.uid() != 0
            && let Err(e) = self.kill_suidgid(req, i)
        {
            return reply.error(errno(&e));
        }
        let r = match mode {
            0 => self.fs.fallocate(fh.0, offset, length, false),
            libc::FALLOC_FL_KEEP_SIZE => self.fs.fallocate(fh.0, offset, length, true),
            _ => Err(FsError::Unsupported(
                "fallocate modes other than 0 and KEEP_SIZE",
            )),
        };
        self.empty(r, reply)
    }
}

impl FuseFs {
    fn plus_attr(&self, e: &DirEntry) -> Option<Attr> {
        self.fs.readdir_attr(e)
    }
}
