//! The filesystem core: what a mount does, independent of the kernel interface.
//!
//! Owns: file and directory handles, the per-inode state of open regular files (buffered,
//! copy-on-write data; see [`file`]), the in-memory block cache, lookup counts, and the
//! flush path (upload blocks in parallel, then commit the new layout at the metaserver).
//!
//! Invariants:
//! - Data written through any handle is visible to every handle of this mount at once;
//!   other mounts see it after flush, fsync or close (close-to-open).
//! - A flush returns only after its blocks are stored and the layout is committed.
//! - An inode's open state lives from its first open to its last release.
//!
//! Lock order: `handles` → `inodes` → one `OpenInode::state` → its `tee`; `lookups` and
//! `locked` alone. No lock is
//! held across a call that takes an earlier one.

mod dir;
pub mod file;
mod locks;
mod ops;
mod passthrough;
mod patch;
mod readahead;
mod tee;
pub mod upload;
pub mod warmup;

use crate::cache::BlockCache;
use crate::error::{FsError, FsResult};
use bytes::Bytes;
use file::{ChunkSource, FileState};
use meridian_proto::*;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Tunables of a mount (see docs/configuration.md for defaults and meaning).
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Files up to this size are committed inline in the metadata.
    pub inline_max: u64,
    /// Dirty bytes one open file may buffer before full chunks are uploaded early.
    pub max_dirty_bytes: u64,
    /// Blocks uploaded at once on flush.
    pub upload_concurrency: usize,
    /// Capacity that statfs reports, in bytes.
    pub capacity_bytes: u64,
    /// Largest sequential read-ahead window, in bytes.
    pub readahead_max_bytes: u64,
    /// Frames of a numbered sequence (`shot.1001.exr` → `shot.1002.exr` …) fetched ahead
    /// when a frame is first read; 0 turns it off.
    pub sequence_depth: u32,
    /// Where whole-file copies for FUSE passthrough live; `None` turns passthrough off.
    pub passthrough_dir: Option<std::path::PathBuf>,
    /// Bytes of passthrough copies kept (oldest removed first).
    pub passthrough_bytes: u64,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            inline_max: DEFAULT_INLINE_MAX,
            max_dirty_bytes: 64 << 20,
            upload_concurrency: 16,
            capacity_bytes: 1 << 50,
            readahead_max_bytes: 64 << 20,
            sequence_depth: 4,
            passthrough_dir: None,
            passthrough_bytes: 16 << 30,
        }
    }
}

/// An open regular file, shared by all its handles.
pub(crate) struct OpenInode {
    pub(crate) handles: AtomicU64,
    /// Handles open for writing (passthrough is refused while any is).
    pub(crate) writers: AtomicU64,
    pub(crate) state: Mutex<FileState>,
    pub(crate) readahead: Mutex<readahead::ReadAhead>,
    /// The write-through passthrough copy (see [`tee`]).
    pub(crate) tee: Mutex<tee::Tee>,
}

/// What a handle refers to.
pub(crate) enum Handle {
    File {
        ino: InodeId,
        write: bool,
        inode: Arc<OpenInode>,
    },
    Dir {
        entries: Arc<Vec<DirEntry>>,
    },
}

/// Open flags the core cares about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenMode {
    pub read: bool,
    pub write: bool,
}

/// Capacity figures for statfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStat {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub files: u64,
}

/// A mounted filesystem, minus the kernel.
pub struct Fs {
    ns: Arc<dyn Namespace>,
    cache: Arc<BlockCache>,
    uploader: upload::Uploader,
    cfg: FsConfig,
    handles: Mutex<HashMap<u64, Handle>>,
    inodes: Mutex<HashMap<InodeId, Arc<OpenInode>>>,
    next_fh: AtomicU64,
    lookups: Mutex<HashMap<InodeId, u64>>,
    /// The last name each inode was reached by (parent, name): frame-sequence prefetch.
    names: Mutex<HashMap<InodeId, (InodeId, Vec<u8>)>>,
    /// (mtime, size) of each file when this mount last closed it: an open that finds the
    /// same keeps the kernel's page cache.
    seen: Mutex<HashMap<InodeId, (Timestamp, u64)>>,
    /// Inodes whose passthrough copy is being assembled.
    assembling: Arc<Mutex<std::collections::HashSet<InodeId>>>,
    /// (inode, lock owner) pairs that took a byte-range lock through this mount.
    locked: Mutex<locks::Locked>,
    /// Wakes blocking lock requests when a lock may have come free (see [`locks`]).
    lock_wake: locks::Wake,
    /// The write-through copy writer (with passthrough on).
    tee_tx: Option<std::sync::mpsc::SyncSender<tee::Job>>,
}

impl ChunkSource for Fs {
    fn block(&self, id: &BlockId) -> FsResult<Bytes> {
        Ok(self.cache.get(id)?)
    }
    fn block_range(&self, id: &BlockId, start: usize, len: usize) -> FsResult<Bytes> {
        Ok(self.cache.get_range(id, start, len)?)
    }
}

impl Fs {
    pub fn new(ns: Arc<dyn Namespace>, cache: Arc<BlockCache>, cfg: FsConfig) -> Self {
        if let Some(dir) = &cfg.passthrough_dir {
            passthrough::open_dir(dir);
        }
        let tee_tx = cfg
            .passthrough_dir
            .as_ref()
            .and_then(|_| tee::start_writer());
        Fs {
            ns,
            uploader: upload::Uploader::new(cache.clone(), cfg.upload_concurrency),
            cache,
            cfg,
            handles: Mutex::new(HashMap::new()),
            inodes: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            lookups: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            assembling: Default::default(),
            locked: Default::default(),
            lock_wake: Default::default(),
            tee_tx,
        }
    }

    pub fn namespace(&self) -> &Arc<dyn Namespace> {
        &self.ns
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    fn new_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, h);
        fh
    }

    fn file_handle(&self, fh: u64) -> FsResult<(InodeId, bool, Arc<OpenInode>)> {
        match self.handles.lock().get(&fh) {
            Some(Handle::File { ino, write, inode }) => Ok((*ino, *write, inode.clone())),
            Some(Handle::Dir { .. }) => Err(FsError::WrongMode(fh, "file I/O")),
            None => Err(FsError::BadHandle(fh)),
        }
    }

    /// The open state of `ino` if some handle has it open.
    fn open_inode(&self, ino: InodeId) -> Option<Arc<OpenInode>> {
        self.inodes.lock().get(&ino).cloned()
    }

    /// Overlays what this mount has written but not yet committed.
    fn overlay(&self, mut attr: Attr) -> Attr {
        if let Some(oi) = self.open_inode(attr.ino) {
            let st = oi.state.lock();
            attr.size = st.size();
            if let Some(t) = st.pending_mtime() {
                attr.mtime = t;
                attr.ctime = t.max(attr.ctime);
            }
        }
        attr
    }

    /// Remembers the name an inode was reached by (for frame-sequence prefetch).
    fn named(&self, parent: InodeId, name: &[u8], attr: Attr) -> Attr {
        if attr.kind == FileKind::Regular {
            let mut names = self.names.lock();
            if names.len() > 100_000 {
                names.clear(); // a bound, not a cache policy: names are re-learned on lookup
            }
            names.insert(attr.ino, (parent, name.to_vec()));
        }
        attr
    }

    /// Counts one more kernel reference to `ino` (every entry reply).
    fn remember(&self, attr: Attr) -> Attr {
        *self.lookups.lock().entry(attr.ino).or_insert(0) += 1;
        attr
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: InodeId, n: u64) {
        let mut l = self.lookups.lock();
        if let Some(c) = l.get_mut(&ino) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                l.remove(&ino);
            }
        }
    }

    /// How many kernel references `ino` has (for tests and stats).
    pub fn lookup_count(&self, ino: InodeId) -> u64 {
        self.lookups.lock().get(&ino).copied().unwrap_or(0)
    }

    /// Hands chunk buffers to the upload workers; they upload in parallel with each other
    /// and with whatever is already in flight.
    fn submit(&self, oi: &OpenInode, st: &mut FileState, bufs: file::ChunkBufs) {
        let bufs: Vec<(u64, Arc<file::ChunkBuf>)> =
            bufs.into_iter().map(|(i, b)| (i, Arc::new(b))).collect();
        self.tee_chunks(oi, st.size(), &bufs);
        for (i, data) in bufs {
            let slot = self.uploader.submit(data.clone());
            st.add_uploading(i, data, slot);
        }
    }

    /// Uploads and commits everything pending for one open inode.
    fn flush_state(&self, oi: &OpenInode, st: &mut FileState) -> FsResult<()> {
        let Some((bufs, inline)) = st.prepare_commit(self, self.cfg.inline_max)? else {
            return Ok(());
        };
        // The last chunks go out beside those still in flight; then wait for all of them.
        self.submit(oi, st, bufs);
        st.settle()?;
        let commit = st.commit_for(inline);
        self.ns.commit(st.ino, &commit)?;
        st.committed(commit.inline);
        Ok(())
    }

    /// Uploads early when a file buffers more than its share of memory.
    fn relieve(&self, oi: &OpenInode, st: &mut FileState) -> FsResult<()> {
        if st.dirty_bytes() > self.cfg.max_dirty_bytes {
            let bufs = st.take_for_early_upload(self)?;
            self.submit(oi, st, bufs);
        }
        Ok(())
    }

    /// Flushes every open file and makes every namespace change durable (on unmount).
    pub fn flush_all(&self) -> FsResult<()> {
        let open: Vec<Arc<OpenInode>> = self.inodes.lock().values().cloned().collect();
        let mut first_err = None;
        for oi in open {
            if let Err(e) = self.flush_state(&oi, &mut oi.state.lock()) {
                tracing::error!(error = %e, "flush at unmount failed");
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.ns.sync() {
            tracing::error!(error = %e, "could not make namespace changes durable at unmount");
            first_err.get_or_insert(e.into());
        }
        self.tee_drain();
        // Blocks fetched for reads are still queued for the NVMe tier: keep them.
        self.cache.flush_disk();
        if let Some(dir) = &self.cfg.passthrough_dir {
            passthrough::close_dir(dir);
        }
        first_err.map_or(Ok(()), Err)
    }

    pub fn statfs(&self) -> FsResult<FsStat> {
        let s = self.ns.statfs()?;
        Ok(FsStat {
            capacity_bytes: self.cfg.capacity_bytes,
            used_bytes: s.bytes_used,
            files: s.files,
        })
    }
}
