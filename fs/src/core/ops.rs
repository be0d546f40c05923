//! The core's operations: names and attributes pass through to the namespace (counting
//! kernel references), file data goes through the open inode's [`FileState`].

use super::{Fs, Handle, OpenInode, OpenMode};
use crate::core::file::{FileState, assemble};
use crate::error::{FsError, FsResult};
use bytes::Bytes;
use meridian_proto::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Fs {
    pub fn lookup(&self, who: &Caller, parent: InodeId, name: &[u8]) -> FsResult<Attr> {
        let attr = self.ns.lookup(who, parent, name)?;
        Ok(self.remember(self.named(parent, name, self.overlay(attr))))
    }

    pub fn getattr(&self, ino: InodeId) -> FsResult<Attr> {
        Ok(self.overlay(self.ns.getattr(ino)?))
    }

    /// Changes attributes; a size change first commits pending writes, then truncates at the
    /// metaserver and reloads this mount's view.
    pub fn setattr(&self, who: &Caller, ino: InodeId, set: SetAttr) -> FsResult<Attr> {
        let Some(oi) = self.open_inode(ino).filter(|_| set.size.is_some()) else {
            return Ok(self.overlay(self.ns.setattr(who, ino, &set)?));
        };
        let mut st = oi.state.lock();
        self.flush_state(&oi, &mut st)?;
        let attr = self.ns.setattr(who, ino, &set)?;
        let (layout, size) = self.ns.layout(ino)?;
        st.reset(layout, size);
        self.tee_set_len(&oi, size);
        Ok(attr)
    }

    /// Clears set-user-ID and set-group-ID before a write by `who`, as a local file system
    /// does (the metaserver decides whether set-group-ID goes); a file with neither costs
    /// one attribute read. Says whether the attributes changed.
    pub fn kill_suidgid(&self, who: &Caller, ino: InodeId) -> FsResult<bool> {
        let before = self.ns.getattr(ino)?.perm;
        if before & 0o6000 == 0 {
            return Ok(false);
        }
        let kill = SetAttr {
            kill_suidgid: true,
            via_handle: true,
            ..SetAttr::default()
        };
        Ok(self.ns.setattr(who, ino, &kill)?.perm != before)
    }

    pub fn access(&self, who: &Caller, ino: InodeId, mask: u32) -> FsResult<()> {
        Ok(self.ns.access(who, ino, mask)?)
    }

    pub fn mknod(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        kind: FileKind,
        mode: u16,
        rdev: u32,
    ) -> FsResult<Attr> {
        Ok(self.remember(self.ns.mknod(who, parent, name, kind, mode, rdev)?))
    }

    pub fn mkdir(&self, who: &Caller, parent: InodeId, name: &[u8], mode: u16) -> FsResult<Attr> {
        Ok(self.remember(self.ns.mkdir(who, parent, name, mode)?))
    }

    pub fn symlink(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        target: &[u8],
    ) -> FsResult<Attr> {
        Ok(self.remember(self.ns.symlink(who, parent, name, target)?))
    }

    pub fn readlink(&self, ino: InodeId) -> FsResult<Vec<u8>> {
        Ok(self.ns.readlink(ino)?)
    }

    pub fn link(&self, who: &Caller, ino: InodeId, parent: InodeId, name: &[u8]) -> FsResult<Attr> {
        let attr = self.ns.link(who, ino, parent, name)?;
        Ok(self.remember(self.overlay(attr)))
    }

    pub fn unlink(&self, who: &Caller, parent: InodeId, name: &[u8]) -> FsResult<()> {
        Ok(self.ns.unlink(who, parent, name)?)
    }

    pub fn rmdir(&self, who: &Caller, parent: InodeId, name: &[u8]) -> FsResult<()> {
        Ok(self.ns.rmdir(who, parent, name)?)
    }

    pub fn rename(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        mode: RenameMode,
    ) -> FsResult<()> {
        Ok(self
            .ns
            .rename(who, parent, name, new_parent, new_name, mode)?)
    }

    /// Creates and opens a regular file.
    pub fn create(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        mode: u16,
        open: OpenMode,
    ) -> FsResult<(Attr, u64)> {
        let attr = self.named(parent, name, self.ns.create(who, parent, name, mode)?);
        // A new file: its layout is empty, no need to ask.
        let fh = self.attach(attr.ino, open, Some((Layout::default(), 0)))?;
        Ok((self.remember(attr), fh))
    }

    /// `open(2)` with `O_CREAT` and without `O_EXCL` of a name the kernel saw absent:
    /// creates the file, or, if the name exists by now, opens the file it names (emptied
    /// if `truncate`), as the `open` would have had the kernel seen it. The name appears
    /// meanwhile when another client of the site made it, or when a call retried after a
    /// metaserver restart finds the file the first attempt made. Says whether it created.
    pub fn create_or_open(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        mode: u16,
        open: OpenMode,
        truncate: bool,
    ) -> FsResult<(Attr, u64, bool)> {
        match self.create(who, parent, name, mode, open) {
            Ok((attr, fh)) => Ok((attr, fh, true)),
            Err(FsError::Meta(MetaError::Exists)) => {
                let found = self.ns.lookup(who, parent, name)?;
                if found.kind != FileKind::Regular {
                    return Err(MetaError::Exists.into());
                }
                let (fh, _) = self.open(who, found.ino, open)?;
                let attr = match truncate && found.size > 0 {
                    false => self.overlay(found),
                    true => {
                        let empty = SetAttr {
                            size: Some(0),
                            via_handle: open.write, // else the metaserver checks write permission
                            kill_suidgid: !who.is_root(),
                            ..SetAttr::default()
                        };
                        match self.setattr(who, found.ino, empty) {
                            Ok(attr) => attr,
                            Err(e) => {
                                let _ = self.release(fh);
                                return Err(e);
                            }
                        }
                    }
                };
                // The reply names the file to the kernel, as a lookup would.
                Ok((self.remember(self.named(parent, name, attr)), fh, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Opens a regular file; also says whether the kernel may keep its cached pages (the
    /// file is unchanged since this mount last closed it, or is open here already).
    pub fn open(&self, who: &Caller, ino: InodeId, open: OpenMode) -> FsResult<(u64, bool)> {
        let attr = self.ns.open(who, ino, open.read, open.write)?;
        if attr.kind != FileKind::Regular {
            self.ns.release(ino)?;
            return Err(FsError::Unsupported(
                "opening this kind of file through the filesystem",
            ));
        }
        let keep = self.open_inode(ino).is_some()
            || self.seen.lock().get(&ino) == Some(&(attr.mtime, attr.size));
        let fh = self.attach(ino, open, None).inspect_err(|_| {
            let _ = self.ns.release(ino);
        })?;
        Ok((fh, keep))
    }

    /// Joins (or creates) the open state of `ino` and returns a new handle on it. The
    /// namespace has already counted the open. `known` is the layout and size if the caller
    /// knows them (a file just created), else they are fetched.
    fn attach(&self, ino: InodeId, open: OpenMode, known: Option<(Layout, u64)>) -> FsResult<u64> {
        let writer = u64::from(open.write);
        let joined = self
            .inodes
            .lock()
            .get(&ino)
            .inspect(|oi| {
                oi.handles.fetch_add(1, Ordering::SeqCst);
                oi.writers.fetch_add(writer, Ordering::SeqCst);
            })
            .cloned();
        let oi = match joined {
            Some(oi) => oi,
            None => {
                let (layout, size) = match known {
                    Some(k) => k,
                    None => self.ns.layout(ino)?,
                };
                let fresh = Arc::new(OpenInode {
                    handles: 0.into(),
                    writers: 0.into(),
                    tee: self.new_tee(open.write, &layout).into(),
                    state: FileState::new(ino, layout, size).into(),
                    readahead: Default::default(),
                });
                let mut map = self.inodes.lock();
                let oi = map.entry(ino).or_insert(fresh).clone();
                oi.handles.fetch_add(1, Ordering::SeqCst);
                oi.writers.fetch_add(writer, Ordering::SeqCst);
                oi
            }
        };
        Ok(self.new_handle(Handle::File {
            ino,
            write: open.write,
            inode: oi,
        }))
    }

    /// Reads through the open file; blocks are fetched after the file's lock is released,
    /// so concurrent readers (and the kernel's parallel read-ahead) do not queue behind I/O.
    pub fn read(&self, fh: u64, offset: u64, len: u32) -> FsResult<Bytes> {
        let (ino, _, oi) = self.file_handle(fh)?;
        let ahead = oi
            .readahead
            .lock()
            .on_read(offset, len as u64, self.cfg.readahead_max_bytes);
        let (plan, passed) = {
            let st = oi.state.lock();
            let mut passed = Vec::new();
            if let Some(p) = &ahead {
                self.cache.prefetch(st.chunk_ids(p.from_chunk, p.to_chunk));
                // Chunks that ended a whole chunk before this read's end: the kernel's
                // parallel reads just behind it may still want the one it just finished.
                let done = offset.saturating_add(len as u64) / CHUNK_SIZE;
                passed = st.chunk_ids(
                    (offset / CHUNK_SIZE).saturating_sub(1),
                    done.saturating_sub(1),
                );
            }
            (st.plan_read(offset, len as u64), passed)
        };
        if ahead.as_ref().is_some_and(|p| p.first_read) {
            self.prefetch_sequence(ino, Vec::new());
        }
        let data = assemble(self, plan);
        // Drop-behind: a sequential reader is done with the chunks well behind it.
        for id in &passed {
            self.cache.passed(id);
        }
        data
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (_, write, oi) = self.file_handle(fh)?;
        if !write {
            return Err(FsError::WrongMode(fh, "writing"));
        }
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(MetaError::FileTooLarge.into());
        }
        let mut st = oi.state.lock();
        st.write(self, offset, data, Timestamp::now())?;
        let filled = st.take_filled(offset, data.len() as u64);
        self.tee_chunks(&oi, st.size(), &filled);
        for (i, buf) in filled {
            let slot = self.uploader.submit(buf.clone());
            st.add_uploading(i, buf, slot);
        }
        st.reap_uploads();
        self.relieve(&oi, &mut st)?;
        Ok(data.len() as u32)
    }

    /// fallocate mode 0 (extend with zeros) and KEEP_SIZE (nothing to reserve in a bucket).
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, keep_size: bool) -> FsResult<()> {
        let (_, write, oi) = self.file_handle(fh)?;
        if !write {
            return Err(FsError::WrongMode(fh, "writing"));
        }
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or(MetaError::FileTooLarge)?;
        if !keep_size {
            let mut st = oi.state.lock();
            st.extend(end, Timestamp::now());
            self.tee_set_len(&oi, st.size());
        }
        Ok(())
    }

    /// Commits pending writes of the handle's file (close and fsync).
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let (_, _, oi) = self.file_handle(fh)?;
        let mut st = oi.state.lock();
        self.flush_state(&oi, &mut st)
    }

    /// fsync: commits pending writes and makes every earlier namespace change durable.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        self.flush(fh)?;
        Ok(self.ns.sync()?)
    }

    /// fsync of a directory: makes every completed namespace change durable.
    pub fn sync_namespace(&self) -> FsResult<()> {
        Ok(self.ns.sync()?)
    }

    /// Closes a handle; the last handle of an inode commits and drops its open state.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let Some(h) = self.handles.lock().remove(&fh) else {
            return Err(FsError::BadHandle(fh));
        };
        let Handle::File { ino, inode, write } = h else {
            return Ok(());
        };
        if write {
            inode.writers.fetch_sub(1, Ordering::SeqCst);
        }
        let (flushed, committed) = {
            let mut st = inode.state.lock();
            let r = self.flush_state(&inode, &mut st);
            let committed = r.as_ref().ok().and_then(|_| self.ns.getattr(ino).ok());
            if let Some(a) = &committed {
                self.seen.lock().insert(ino, (a.mtime, a.size));
            }
            (r, committed)
        };
        let last = {
            let mut map = self.inodes.lock();
            let last = inode.handles.fetch_sub(1, Ordering::SeqCst) == 1;
            if last {
                map.remove(&ino);
            }
            last
        };
        if last {
            let _st = inode.state.lock();
            self.tee_finish(&inode, committed);
        }
        let released = self.ns.release(ino);
        flushed?;
        Ok(released?)
    }

    pub fn getxattr(&self, who: &Caller, ino: InodeId, name: &[u8]) -> FsResult<Vec<u8>> {
        if name == super::warmup::WARMUP {
            let (kept, total) = self.warmup(who, ino)?;
            return Ok(format!("{kept} {total}").into_bytes());
        }
        Ok(self.ns.getxattr(who, ino, name)?)
    }

    pub fn setxattr(
        &self,
        who: &Caller,
        ino: InodeId,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
    ) -> FsResult<()> {
        super::warmup::not_stored(name)?;
        Ok(self.ns.setxattr(who, ino, name, value, mode)?)
    }

    pub fn listxattr(&self, who: &Caller, ino: InodeId) -> FsResult<Vec<Vec<u8>>> {
        Ok(self.ns.listxattr(who, ino)?)
    }

    pub fn removexattr(&self, who: &Caller, ino: InodeId, name: &[u8]) -> FsResult<()> {
        super::warmup::not_stored(name)?;
        Ok(self.ns.removexattr(who, ino, name)?)
    }
}
