//! Write-through passthrough copies: a file this mount writes from empty is copied to the
//! passthrough directory as its chunks go to the bucket, so the next read-only open of it
//! is handed to the kernel at once (local-disk speed), with no assembly from blocks.
//!
//! Owns: the per-inode [`Tee`] and one writer thread that applies copy operations in the
//! order they were queued (a FIFO), off the application's write path.
//!
//! Invariants:
//! - A tee exists only for a file that held no data (empty, or only holes) when this mount
//!   first opened it for writing, so every byte of it passes through this mount.
//! - Every chunk buffer handed to the uploader holds the whole current content of its chunk
//!   (up to the file size), so writing each one at its chunk offset, in submission order, and
//!   mirroring truncates and setting the committed size at the end, reproduces the file. A chunk handed out before the tee started
//!   (a flush while the file was small) turns the tee off: the copy would miss it.
//! - At the last release after a successful commit, a copy whose writes all succeeded is
//!   set to the committed size and renamed to the copy name of the committed
//!   attributes (inode, mtime, size); a later change gives the file another name, so a stale
//!   copy is never used. Anything else deletes the temporary file.
//!
//! Locks: the tee is only touched with its inode's `state` lock held (state → tee).

use super::passthrough::{MIN_SIZE, copy_name, trim};
use super::{Fs, OpenInode};
use crate::cache::aligned::{ALIGN, AlignedBuf, direct_ready};
use meridian_proto::{Attr, CHUNK_SIZE, Layout};
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// The write-through state of one open inode.
#[derive(Debug, Default)]
pub(crate) enum Tee {
    /// Not mirrored.
    #[default]
    Off,
    /// Created empty here and still small; `uploaded` if a chunk already went out.
    Pending { uploaded: bool },
    /// Mirrored into a temporary file.
    Active(Arc<Mirror>),
}

/// A copy being written.
#[derive(Debug)]
pub(crate) struct Mirror {
    file: File,
    tmp: PathBuf,
    failed: AtomicBool,
}

/// What the writer thread does, in queue order.
pub(crate) enum Job {
    Write(Arc<Mirror>, u64, Arc<crate::core::file::ChunkBuf>),
    SetLen(Arc<Mirror>, u64),
    Finish(Arc<Mirror>, Option<(Attr, PathBuf, u64)>),
    Barrier(SyncSender<()>),
}

/// Starts the writer thread; `None` if it cannot (then no copies are written through).
pub(crate) fn start_writer() -> Option<SyncSender<Job>> {
    let (tx, rx) = sync_channel(32);
    std::thread::Builder::new()
        .name("meridian-tee".into())
        .spawn(move || writer(rx))
        .ok()?;
    Some(tx)
}

fn writer(rx: Receiver<Job>) {
    let mut bounce = AlignedBuf::default();
    while let Ok(job) = rx.recv() {
        match job {
            Job::Write(c, offset, data) => {
                if write_at(&c.file, &mut bounce, &data, offset).is_err() {
                    c.failed.store(true, Ordering::Relaxed);
                }
            }
            Job::SetLen(c, len) => {
                if c.file.set_len(len).is_err() {
                    c.failed.store(true, Ordering::Relaxed);
                }
            }
            Job::Finish(c, keep) => finish(&c, keep),
            Job::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Writes a chunk at its (chunk-aligned) offset. Through O_DIRECT the bytes go straight
/// to the disk — from the chunk's own (aligned) buffer when its length is whole pages,
/// else from an aligned copy padded to 4 KiB (the final `set_len` cuts the padding): no
/// page-cache copy competes with the application for CPU.
fn write_at(file: &File, bounce: &mut AlignedBuf, data: &[u8], offset: u64) -> std::io::Result<()> {
    if data.len() > CHUNK_SIZE as usize || !offset.is_multiple_of(ALIGN as u64) {
        return file.write_all_at(data, offset);
    }
    if direct_ready(data) {
        return file.write_all_at(data, offset);
    }
    file.write_all_at(bounce.padded_copy(data), offset)
}

fn finish(c: &Mirror, keep: Option<(Attr, PathBuf, u64)>) {
    if let Some((attr, dir, budget)) = keep
        && !c.failed.load(Ordering::Relaxed)
        && std::fs::rename(&c.tmp, dir.join(copy_name(&attr))).is_ok()
    {
        trim(&dir, budget);
        return;
    }
    let _ = std::fs::remove_file(&c.tmp);
}

impl Fs {
    /// The tee a fresh open state starts with: mirrored if opened for writing while it
    /// holds no data (empty, or only holes, as after fio's fallocate).
    pub(super) fn new_tee(&self, write: bool, layout: &Layout) -> Tee {
        let no_data = match layout {
            Layout::Inline(bytes) => bytes.is_empty(),
            Layout::Chunks(map) => map.is_empty(),
        };
        if write && no_data && self.tee_tx.is_some() {
            Tee::Pending { uploaded: false }
        } else {
            Tee::Off
        }
    }

    fn tee_send(&self, job: Job) {
        if let Some(tx) = &self.tee_tx {
            let _ = tx.send(job);
        }
    }

    /// Mirrors chunk buffers handed to the uploader; `size` is the file's size now.
    pub(super) fn tee_chunks(
        &self,
        oi: &OpenInode,
        size: u64,
        chunks: &[(u64, Arc<crate::core::file::ChunkBuf>)],
    ) {
        if chunks.is_empty() {
            return;
        }
        let mut tee = oi.tee.lock();
        if let Tee::Pending { uploaded } = &mut *tee {
            if size < MIN_SIZE || *uploaded {
                *uploaded = true;
                if size >= MIN_SIZE {
                    *tee = Tee::Off;
                }
                return;
            }
            *tee = self.new_copy(oi).map_or(Tee::Off, Tee::Active);
        }
        if let Tee::Active(c) = &*tee {
            for (i, data) in chunks {
                self.tee_send(Job::Write(c.clone(), i * CHUNK_SIZE, data.clone()));
            }
        }
    }

    fn new_copy(&self, oi: &OpenInode) -> Option<Arc<Mirror>> {
        let dir = self.cfg.passthrough_dir.as_ref()?;
        std::fs::create_dir_all(dir).ok()?;
        let id = oi as *const OpenInode as usize; // unique among live open states
        let tmp = dir.join(format!(".tmp-tee-{}-{id}", std::process::id()));
        // O_DIRECT where the filesystem has it (see `write_at`); buffered elsewhere.
        let open = |flags: i32| {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(flags)
                .open(&tmp)
        };
        let file = open(libc::O_DIRECT).or_else(|_| open(0)).ok()?;
        Some(Arc::new(Mirror {
            file,
            tmp,
            failed: AtomicBool::new(false),
        }))
    }

    /// Mirrors a size change (truncate, or fallocate extending the file).
    pub(super) fn tee_set_len(&self, oi: &OpenInode, size: u64) {
        if let Tee::Active(c) = &*oi.tee.lock() {
            self.tee_send(Job::SetLen(c.clone(), size));
        }
    }

    /// At the last release: keeps the copy under the committed attributes' name
    /// (`committed` is `None` when the commit failed).
    pub(super) fn tee_finish(&self, oi: &OpenInode, committed: Option<Attr>) {
        let Tee::Active(c) = std::mem::take(&mut *oi.tee.lock()) else {
            return;
        };
        let keep = committed
            .filter(|a| a.size >= MIN_SIZE)
            .zip(self.cfg.passthrough_dir.clone())
            .map(|(a, dir)| (a, dir, self.cfg.passthrough_bytes));
        if let Some((a, ..)) = &keep {
            self.tee_send(Job::SetLen(c.clone(), a.size));
        }
        self.tee_send(Job::Finish(c, keep));
    }

    /// Waits until every queued copy operation is done (unmount).
    pub(super) fn tee_drain(&self) {
        if let Some(tx) = &self.tee_tx {
            let (done_tx, done_rx) = sync_channel(1);
            if tx.send(Job::Barrier(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
        }
    }
}
