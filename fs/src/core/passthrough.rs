//! Whole-file copies for FUSE passthrough: reads of a file whose blocks are all in the NVMe
//! tier can go straight from the kernel to a local file, bypassing this process.
//!
//! Owns: the passthrough directory (`<ino>-<mtime s>-<mtime ns>-<size>` files, so a changed
//! file never matches an old copy), its budget, and background assembly. A copy is built
//! from blocks verified against their BLAKE3 names, written under a temporary name and
//! renamed, so a complete name is a complete, verified copy. The kernel then reads it without
//! further checks (as it would its page cache): corruption of the copy after assembly is not
//! detected, which is why the feature is a mount option.
//!
//! Copies come from two places: assembled in the background from blocks that are all in the
//! NVMe tier (here), at an open of a file this mount has read before, or written through
//! while this mount writes a file from empty ([`super::tee`]). An assembly runs at the
//! lowest CPU priority and leaves the memory tier as it found it.
//!
//! Crash safety: a copy's name is complete before the kernel has necessarily written its
//! bytes, so after a crash of the machine a named copy could hold zeros. The directory
//! therefore carries a marker written at a clean unmount and removed at start; a start that
//! finds no marker deletes every copy.
//!
//! Safety: a copy is used only for read-only opens of a file that no handle of this mount
//! has open for writing and that has nothing uncommitted; a reader keeps the version it
//! opened (close-to-open), as readers on other mounts do.

use super::Fs;
use meridian_proto::{Attr, CHUNK_SIZE, InodeId, Layout};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Smallest file worth a copy.
pub(super) const MIN_SIZE: u64 = 4 << 20;

pub(super) fn copy_name(attr: &Attr) -> String {
    format!(
        "{}-{}-{}-{}",
        attr.ino.0, attr.mtime.secs, attr.mtime.nanos, attr.size
    )
}

/// Removes the oldest copies until the directory holds at most `budget` bytes.
pub(super) fn trim(dir: &Path, budget: u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let md = e.metadata().ok()?;
            Some((md.modified().ok()?, md.len(), e.path()))
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    for (_, len, path) in files {
        if total <= budget {
            break;
        }
        let _ = std::fs::remove_file(path);
        total -= len;
    }
}

/// Written at a clean unmount; its absence at start means the copies cannot be trusted.
const CLEAN: &str = ".clean";

/// At start: keeps the copies only if the last unmount was clean; removes temporaries.
pub(super) fn open_dir(dir: &Path) {
    let clean = std::fs::remove_file(dir.join(CLEAN)).is_ok();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if !clean || e.file_name().to_string_lossy().starts_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Asks the kernel, on a worker thread, to read the first `len` bytes of each copy into the
/// page cache (`POSIX_FADV_WILLNEED`; a 50 MB frame takes the caller ~2.5 ms to submit).
/// The kernel's passthrough file shares the copy's page cache, while the reader's own
/// `fadvise` (fio's `FADV_SEQUENTIAL`, a player's `WILLNEED`) stops at the FUSE file: a
/// paced reader otherwise gets only the disk's default read-ahead window.
pub(super) fn read_ahead_later(copies: Vec<File>, len: u64) {
    if copies.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("meridian-pageahead".into())
        .spawn(move || {
            for f in copies {
                let size = f.metadata().map_or(0, |m| m.len()).min(len);
                will_need(&f, size);
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "no read-ahead thread for passthrough copies");
    }
}

/// How much of `f` is in the page cache, from 0 to 1 (0 if it cannot be told). Uses
/// `cachestat` (Linux 6.5; every kernel with FUSE passthrough, 6.9, has it).
pub(super) fn cached_fraction(f: &File) -> f64 {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        cache: u64,
        dirty: u64,
        writeback: u64,
        evicted: u64,
        recently_evicted: u64,
    }
    /// The same number on every architecture (syscalls added since 5.1 share numbers).
    const SYS_CACHESTAT: libc::c_long = 451;
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return 0.0;
    };
    // SAFETY: sysconf has no memory effects.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let pages = len.div_ceil(page.max(1));
    if pages == 0 {
        return 0.0;
    }
    let range = Range { off: 0, len };
    let mut stat = Stat::default();
    // SAFETY: the kernel reads `range` and writes `stat`, both live, laid out as its
    // `struct cachestat_range` and `struct cachestat`.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            f.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0,
        )
    };
    if rc != 0 {
        return 0.0;
    }
    stat.cache as f64 / pages as f64
}

/// One `WILLNEED` reads at most the larger of the device's read-ahead window and its
/// largest request (often 128 KiB to 8 MiB), so the range is asked for in steps.
const WILL_NEED_STEP: u64 = 1 << 20;

fn will_need(f: &File, len: u64) {
    for off in (0..len).step_by(WILL_NEED_STEP as usize) {
        let step = WILL_NEED_STEP.min(len - off);
        let (Ok(off), Ok(step)) = (libc::off_t::try_from(off), libc::off_t::try_from(step)) else {
            return;
        };
        // SAFETY: `f` is an open descriptor that outlives the call.
        let rc =
            unsafe { libc::posix_fadvise(f.as_raw_fd(), off, step, libc::POSIX_FADV_WILLNEED) };
        if rc != 0 {
            tracing::debug!(errno = rc, "read-ahead of a passthrough copy refused");
            return;
        }
    }
}

/// Puts the calling thread (a background assembly) at the lowest CPU priority, so the
/// mount's readers, on whose behalf it works, are never slowed by it where cores are few.
fn yield_to_readers() {
    // SAFETY: plain system calls on the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "passthrough assembly keeps its priority");
    }
}

/// At a clean unmount: the copies may be trusted at the next start.
pub(super) fn close_dir(dir: &Path) {
    if dir.is_dir() {
        let _ = File::create(dir.join(CLEAN)).and_then(|f| f.sync_all());
    }
}

impl Fs {
    /// A local copy of `ino` for a read-only open, if one is ready; otherwise starts
    /// assembling one in the background when every block is in the NVMe tier and this mount
    /// has opened and closed this version of the file before.
    pub fn passthrough_file(&self, ino: InodeId) -> Option<File> {
        let dir = self.cfg.passthrough_dir.as_ref()?;
        if let Some(oi) = self.open_inode(ino) {
            let writers = oi.writers.load(Ordering::SeqCst) > 0;
            if writers || oi.state.lock().pending_mtime().is_some() {
                return None;
            }
        }
        let attr = self.ns.getattr(ino).ok()?;
        if attr.size < MIN_SIZE {
            return None;
        }
        if let Some(f) = self.ready_copy(&attr) {
            if self.playing(ino) {
                self.prefetch_sequence(ino, f.try_clone().into_iter().collect());
            }
            return Some(f);
        }
        // A copy costs writing the whole file once more: worth it for a file read again (a
        // clip played twice), not for one read once, and not beside its first read, which
        // it slows (a warm 1 GiB read after a remount, three runs: 1.5-1.9 GB/s alone,
        // 0.8-1.5 GB/s with an assembly beside it, at twice the mount's CPU).
        if self.seen.lock().get(&ino) == Some(&(attr.mtime, attr.size)) {
            self.assemble_later(attr, dir.clone());
        }
        None
    }

    /// The complete copy of the file version `attr` describes, if there is one, opened for
    /// sequential reading: the kernel reads a passthrough file through this open file, whose
    /// read-ahead the reader's own `fadvise` never reaches (it stops at the FUSE file), and
    /// a sequential reader of a local disk gets twice the default window from it (fio's
    /// playback job reading this machine's disk directly: 11–28 frames/s without the hint,
    /// 40 with it).
    pub(super) fn ready_copy(&self, attr: &Attr) -> Option<File> {
        let dir = self.cfg.passthrough_dir.as_ref()?;
        let f = File::open(dir.join(copy_name(attr))).ok()?;
        // SAFETY: advice on an open descriptor that outlives the call.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
        Some(f)
    }

    /// Builds the copy of `attr`'s file on a worker thread, if all its blocks are on disk.
    fn assemble_later(&self, attr: Attr, dir: PathBuf) {
        let Ok((Layout::Chunks(map), _)) = self.ns.layout(attr.ino) else {
            return;
        };
        let cache = self.cache.clone();
        if map
            .values()
            .any(|r| cache.tier(&r.id) == crate::cache::Tier::Store)
        {
            return; // not all local: passthrough would only move the fetch, not save it
        }
        if !self.assembling.lock().insert(attr.ino) {
            return;
        }
        let budget = self.cfg.passthrough_bytes;
        let assembling = self.assembling.clone();
        let ino = attr.ino;
        let spawned = std::thread::Builder::new()
            .name("meridian-passthrough".into())
            .spawn(move || {
                yield_to_readers();
                let result = (|| -> std::io::Result<()> {
                    std::fs::create_dir_all(&dir)?;
                    let tmp = dir.join(format!(".tmp-{}", copy_name(&attr)));
                    let f = File::create(&tmp)?;
                    f.set_len(attr.size)?;
                    for (i, r) in &map {
                        let block = cache.get_passing(&r.id).map_err(std::io::Error::other)?;
                        let len = (r.len as usize)
                            .min(block.len())
                            .min((attr.size - i * CHUNK_SIZE) as usize);
                        f.write_all_at(&block[..len], i * CHUNK_SIZE)?;
                    }
                    std::fs::rename(&tmp, dir.join(copy_name(&attr)))?;
                    trim(&dir, budget);
                    Ok(())
                })();
                if let Err(e) = result {
                    tracing::debug!(ino = attr.ino.0, error = %e, "no passthrough copy");
                }
                assembling.lock().remove(&attr.ino);
            });
        if spawned.is_err() {
            self.assembling.lock().remove(&ino);
        }
    }
}
