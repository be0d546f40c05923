//! The NVMe tier: blocks as files in a cache directory, read and written through io_uring.
//!
//! Owns: the cache directory (`<dir>/<2 hex>/<64 hex>`), its index (a moka cache of block
//! sizes, weighed in bytes, whose evictions delete the files), and the free-space guard.
//! Whole blocks are read by direct I/O (no copy through the page cache), 64 KiB pieces
//! and their 16 KiB fine units through the page cache. Also the checked piece values of
//! recently read blocks (the `verified` map, weighed in bytes), with the fine values of the
//! pieces read so far, and the open files of the blocks small reads used last (`files`:
//! an open is a path walk, a sizeable part of a 4 KiB read).
//!
//! Invariants:
//! - A file appears under its block name only complete (written to a temporary name, then
//!   renamed); whatever is read is still checked against its BLAKE3 name, and a file that
//!   fails (torn by a crash, bit rot, tampering) is deleted and reported as a miss.
//! - The index is rebuilt from the directory at start, oldest first, so the cache survives
//!   remounts.
//! - Eviction is moka's TinyLFU: a block must be used more often than the one it would
//!   displace to be admitted, so one pass over a huge cold sequence does not flush the hot
//!   clips and setups of the day. A block the index does not admit is deleted at once. A
//!   block asked for by a warmup ([`DiskCache::want`]) counts as used as often as the
//!   sketch counts at all, so it is admitted over any block read less. The index runs
//!   its upkeep at every insert: the tier is back within its capacity when a block has
//!   been stored.
//! - A block leaving the index leaves `files` too. A reader that opened the file just as the
//!   block left may put it back; such a file is deleted but still holds the block's bytes
//!   (still checked at every read) until `files` drops it, and the index no longer sends
//!   reads to it.
//! - Nothing is written when the filesystem holding the directory has less free space than
//!   `min_free_ratio`; crossing that floor, either way, is logged once (a cache that
//!   silently stops filling makes every cold read a bucket read).

use super::pieces::{PIECE, Verified, cvs_match, piece_cvs};
use super::uring;
use crate::blocks::block_id;
pub use blake3::hazmat::ChainingValue as PieceValue;
use blake3::hazmat::ChainingValue;
use bytes::Bytes;
use meridian_proto::BlockId;
use moka::notification::RemovalCause;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct DiskCache {
    dir: PathBuf,
    index: moka::sync::Cache<BlockId, u32>,
    /// Piece chaining values already checked against their block's name.
    verified: moka::sync::Cache<BlockId, Arc<Verified>>,
    /// Open block files, for small reads.
    files: moka::sync::Cache<BlockId, Arc<File>>,
    min_free_ratio: f64,
    /// Whether the last free-space check found the filesystem below the floor.
    below_floor: AtomicBool,
    tmp_seq: AtomicU64,
}

/// Bytes of memory the checked piece values may take (about 10.5 KiB per 4 MiB block with
/// room for every fine value: the random-read working set of some 12 GiB).
const VERIFIED_BYTES: u64 = 32 << 20;

/// Block files kept open for small reads.
const OPEN_FILES: u64 = 256;

/// The uses a wanted block is counted for: where moka's frequency counters saturate.
const WANTED_USES: usize = 15;

fn path_in(dir: &Path, id: &BlockId) -> PathBuf {
    let hex = id.to_hex();
    dir.join(&hex[..2]).join(hex)
}

/// Bytes a cached block takes on disk: the block and its piece values.
pub(super) fn on_disk_size(len: u32) -> u32 {
    let len_usize = len as usize;
    if len_usize > PIECE {
        len + (len_usize.div_ceil(PIECE) * 32) as u32
    } else {
        len
    }
}

/// The file beside a block that holds its pieces' chaining values.
fn cv_path(block: &Path) -> PathBuf {
    block.with_extension("cv")
}

impl DiskCache {
    /// Opens (creating) the cache in `dir` holding at most `capacity` bytes.
    pub fn open(dir: &Path, capacity: u64, min_free_ratio: f64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let owned = Arc::new(dir.to_path_buf());
        let listener_dir = owned.clone();
        let files: moka::sync::Cache<BlockId, Arc<File>> = moka::sync::Cache::new(OPEN_FILES);
        let listener_files = files.clone();
        let index = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|_: &BlockId, len: &u32| on_disk_size(*len))
            .eviction_listener(move |id: Arc<BlockId>, _len, cause| {
                if cause != RemovalCause::Replaced {
                    listener_files.invalidate(&*id);
                    let path = path_in(&listener_dir, &id);
                    let _ = std::fs::remove_file(cv_path(&path));
                    let _ = std::fs::remove_file(path);
                }
            })
            .build();
        let cache = DiskCache {
            dir: dir.to_path_buf(),
            index,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_BYTES)
                .weigher(|_: &BlockId, v: &Arc<Verified>| v.weight())
                .build(),
            files,
            min_free_ratio,
            below_floor: AtomicBool::new(false),
            tmp_seq: AtomicU64::new(0),
        };
        cache.rebuild()?;
        Ok(cache)
    }

    /// Re-indexes the blocks already on disk, oldest first; removes stray temporary files.
    fn rebuild(&self) -> std::io::Result<()> {
        let mut found = Vec::new();
        for sub in std::fs::read_dir(&self.dir)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(sub.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                if name.ends_with(".cv") {
                    continue;
                }
                match BlockId::from_hex(&name) {
                    Some(id) => {
                        let md = f.metadata()?;
                        found.push((md.modified()?, id, md.len() as u32));
                    }
                    None => {
                        let _ = std::fs::remove_file(f.path());
                    }
                }
            }
        }
        found.sort();
        for (_, id, len) in found {
            self.index.insert(id, len);
        }
        self.index.run_pending_tasks();
        Ok(())
    }

    /// The block, if cached and intact.
    pub fn get(&self, id: &BlockId) -> Option<Bytes> {
        let len = self.index.get(id)?;
        let path = path_in(&self.dir, id);
        match uring::read_file(&path, len as usize) {
            Ok(data) if block_id(&data) == *id => Some(data.into_bytes()),
            Ok(_) => {
                tracing::warn!(block = %id.to_hex(), path = %path.display(), "cached block failed its BLAKE3 check; dropped");
                self.index.invalidate(id);
                None
            }
            Err(e) => {
                tracing::debug!(block = %id.to_hex(), error = %e, "cached block unreadable; dropped");
                self.index.invalidate(id);
                None
            }
        }
    }

    /// `len` bytes at `start` of a cached block, reading and verifying only the pieces (or,
    /// in a piece read before, the fine units) that cover them (see [`super::pieces`]).
    /// `None` if not cached or if anything fails its check (the block is then dropped).
    pub fn get_range(&self, id: &BlockId, start: usize, len: usize) -> Option<Bytes> {
        let size = self.index.get(id)? as usize;
        let end = (start + len).min(size);
        if size <= PIECE || start >= end {
            let whole = self.get(id)?;
            return Some(whole.slice(start.min(end)..end));
        }
        let verified = match self.verified.get(id) {
            Some(v) => v,
            None => {
                let raw = std::fs::read(cv_path(&path_in(&self.dir, id))).ok()?;
                let cvs: Vec<ChainingValue> = raw
                    .chunks_exact(32)
                    .map(|c| c.try_into().expect("32 bytes"))
                    .collect();
                if cvs.len() != size.div_ceil(PIECE) || !cvs_match(id, &cvs) {
                    return self.drop_bad(id, "piece values do not match the block name");
                }
                let v = Arc::new(Verified::new(cvs));
                self.verified.insert(*id, v.clone());
                v
            }
        };
        let (from, to) = verified.span(start, end, size);
        let bytes = uring::read_at(&*self.file(id)?, from as u64, to - from).ok()?;
        if !verified.check(from, &bytes, size) {
            return self.drop_bad(id, "a piece failed its BLAKE3 check");
        }
        Some(Bytes::from(bytes).slice(start - from..end - from))
    }

    /// The block's file, open (kept open for the next small read).
    fn file(&self, id: &BlockId) -> Option<Arc<File>> {
        if let Some(f) = self.files.get(id) {
            return Some(f);
        }
        let f = Arc::new(File::open(path_in(&self.dir, id)).ok()?);
        self.files.insert(*id, f.clone());
        Some(f)
    }

    fn drop_bad<T>(&self, id: &BlockId, why: &str) -> Option<T> {
        tracing::warn!(block = %id.to_hex(), "cached block dropped: {why}");
        self.index.invalidate(id);
        self.verified.invalidate(id);
        self.files.invalidate(id);
        None
    }

    pub fn contains(&self, id: &BlockId) -> bool {
        self.index.contains_key(id)
    }

    /// The size of block `id` if the tier holds it.
    pub fn len_of(&self, id: &BlockId) -> Option<usize> {
        self.index.get(id).map(|len| len as usize)
    }

    /// Counts block `id` as used [`WANTED_USES`] times (moka's frequency sketch counts a
    /// miss as a use too), so that admission — which keeps a block only over blocks used
    /// less — ranks it with the blocks read most, whether it is stored now or later.
    /// What `meridian warmup` asks for: a one-off pass would otherwise be turned away by a
    /// full tier.
    pub fn want(&self, id: &BlockId) {
        for _ in 0..WANTED_USES {
            let _ = self.index.get(id);
        }
        self.index.run_pending_tasks();
    }

    /// Whether blocks handed to the tier are being stored (its filesystem had room at the
    /// last write).
    pub fn accepting(&self) -> bool {
        !self.below_floor.load(Ordering::Relaxed)
    }

    /// Stores a block (already verified by the caller). Best effort: a cache that cannot
    /// write only logs.
    pub fn put(&self, id: &BlockId, data: &[u8]) {
        self.put_with_pieces(id, data, None)
    }

    /// Like [`DiskCache::put`], with the pieces' chaining values if the caller has them
    /// (from [`super::pieces::hash_with_pieces`]), saving a second pass over the bytes.
    pub fn put_with_pieces(&self, id: &BlockId, data: &[u8], cvs: Option<&[PieceValue]>) {
        if self.index.contains_key(id) || !self.has_room() {
            return;
        }
        let path = path_in(&self.dir, id);
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".tmp.{}.{seq}", std::process::id()));
        let cvs: Vec<u8> = match cvs {
            Some(c) if data.len() > PIECE => c.concat(),
            _ => piece_cvs(data).concat(),
        };
        let written = std::fs::create_dir_all(path.parent().expect("has a parent"))
            .and_then(|_| {
                if cvs.is_empty() {
                    Ok(())
                } else {
                    std::fs::write(cv_path(&path), &cvs)
                }
            })
            .and_then(|_| uring::write_file(&tmp, data))
            .and_then(|_| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => {
                self.index.insert(*id, data.len() as u32);
                // Admission, and eviction down to the capacity, now: moka otherwise waits
                // for its next upkeep, and a tier nobody reads from stayed over its
                // capacity (125% after a warmup here) until the next read.
                self.index.run_pending_tasks();
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not write to the disk cache");
            }
        }
    }

    fn has_room(&self) -> bool {
        let Some(free) = free_ratio(&self.dir) else {
            return true;
        };
        let room = free >= self.min_free_ratio;
        if self.below_floor.swap(!room, Ordering::Relaxed) == room {
            match room {
                true => tracing::info!(dir = %self.dir.display(), "disk cache filling again"),
                false => tracing::warn!(
                    dir = %self.dir.display(),
                    "disk cache paused: its filesystem has {:.1}% free, below \
                     cache.disk_min_free_ratio ({:.1}%); blocks are not cached (cold reads \
                     go to the bucket) until space is freed",
                    free * 100.0,
                    self.min_free_ratio * 100.0
                ),
            }
        }
        room
    }

    /// Bytes and blocks held.
    pub fn usage(&self) -> (u64, u64) {
        self.index.run_pending_tasks();
        (self.index.weighted_size(), self.index.entry_count())
    }

    /// Drops every cached block.
    pub fn clear(&self) {
        self.verified.invalidate_all();
        self.files.invalidate_all();
        self.index.invalidate_all();
        self.index.run_pending_tasks();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The share of the filesystem holding `dir` that is free (to unprivileged users).
pub fn free_ratio(dir: &Path) -> Option<f64> {
    let (free, total) = nix_statvfs(dir)?;
    (total > 0).then(|| free as f64 / total as f64)
}

/// Free and total bytes of the filesystem holding `dir`.
fn nix_statvfs(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some((
        s.f_bavail as u64 * s.f_frsize as u64,
        s.f_blocks as u64 * s.f_frsize as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::pieces::FINE;

    #[test]
    fn blocks_survive_reopen_and_corruption_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![5u8; 300_000];
        let id = block_id(&data);
        {
            let c = DiskCache::open(dir.path(), 1 << 30, 0.0).unwrap();
            assert!(c.get(&id).is_none());
            c.put(&id, &data);
            assert_eq!(c.get(&id).unwrap(), data);
        }
        let c = DiskCache::open(dir.path(), 1 << 30, 0.0).unwrap();
        assert_eq!(c.get(&id).unwrap(), data, "the cache survives a reopen");
        let mut bad = data.clone();
        bad[1000] ^= 1;
        std::fs::write(path_in(dir.path(), &id), &bad).unwrap();
        assert!(c.get(&id).is_none(), "a corrupted block is never served");
        c.index.run_pending_tasks();
        assert!(
            !path_in(dir.path(), &id).exists(),
            "and its file is removed"
        );
    }

    /// A cache in a new directory holding one block of `len` bytes (`i * step % 251`).
    fn one_block(len: usize, step: usize) -> (tempfile::TempDir, DiskCache, Vec<u8>, BlockId) {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * step % 251) as u8).collect();
        let id = block_id(&data);
        let c = DiskCache::open(dir.path(), 1 << 30, 0.0).unwrap();
        c.put(&id, &data);
        (dir, c, data, id)
    }

    #[test]
    fn ranges_are_served_piecewise_and_corrupt_pieces_are_refused() {
        let (dir, c, data, id) = one_block((4 << 20) - 123, 13);
        for (start, len) in [
            (0, 4096),
            (PIECE - 10, 20),
            (3 * PIECE + 5, 2 * PIECE),
            (data.len() - 100, 500),
        ] {
            let got = c.get_range(&id, start, len).unwrap();
            let end = (start + len).min(data.len());
            assert_eq!(&got[..], &data[start..end], "range {start}+{len}");
        }
        // Flip one byte inside piece 5 on disk: a read there is refused, the block dropped.
        let path = path_in(dir.path(), &id);
        let mut bad = std::fs::read(&path).unwrap();
        bad[5 * PIECE + 7] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        assert!(c.get_range(&id, 5 * PIECE, 100).is_none());
        assert!(!c.contains(&id));
    }

    #[test]
    fn a_piece_read_before_is_served_and_checked_by_its_fine_units() {
        let (dir, c, data, id) = one_block((4 << 20) - 5000, 29);
        let read = |start: usize, len: usize| c.get_range(&id, start, len);
        // The first read of piece 2 reads it whole and learns its fine values.
        assert_eq!(
            &read(2 * PIECE + 100, 10).unwrap()[..],
            &data[2 * PIECE + 100..][..10]
        );
        // Corrupt the second fine unit of piece 2 on disk: a read inside the first unit no
        // longer reads it (and is served); a read spanning into piece 3 (not read before,
        // so read whole) is served; a read that touches the corrupt unit is refused.
        let path = path_in(dir.path(), &id);
        let mut bad = std::fs::read(&path).unwrap();
        bad[2 * PIECE + FINE + 1] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(
            &read(2 * PIECE + 5000, 4096).unwrap()[..],
            &data[2 * PIECE + 5000..][..4096]
        );
        let tail = read(3 * PIECE - 10, 40).expect("the corrupt unit is not read");
        assert_eq!(&tail[..], &data[3 * PIECE - 10..][..40]);
        // The last piece is short: its fine units end with the block.
        let end = data.len();
        assert_eq!(&read(end - 3, 3).unwrap()[..], &data[end - 3..]);
        assert_eq!(
            &read(end - 70_000, 70_000).unwrap()[..],
            &data[end - 70_000..]
        );
        assert!(read(2 * PIECE + FINE, 2).is_none());
        assert!(!c.contains(&id), "the block is dropped");
    }

    #[test]
    fn nothing_is_cached_below_the_free_space_floor() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 10_000];
        let id = block_id(&data);
        // No filesystem has more than all of itself free.
        let c = DiskCache::open(dir.path(), 1 << 30, 1.01).unwrap();
        c.put(&id, &data);
        assert!(c.get(&id).is_none());
        assert!(c.below_floor.load(Ordering::Relaxed));
        let c = DiskCache::open(dir.path(), 1 << 30, 0.0).unwrap();
        c.put(&id, &data);
        assert_eq!(c.get(&id).as_deref(), Some(&data[..]));
        assert!(!c.below_floor.load(Ordering::Relaxed));
    }

    #[test]
    fn capacity_is_enforced_by_deleting_files() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1_000_000, 0.0).unwrap();
        for i in 0..20u8 {
            let data = vec![i; 200_000];
            c.put(&block_id(&data), &data);
        }
        // Small reads keep the files they used open; a block that leaves has its file closed.
        c.index.run_pending_tasks();
        let ids: Vec<BlockId> = (0..20u8).map(|i| block_id(&vec![i; 200_000])).collect();
        for id in &ids {
            let _ = c.get_range(id, 70_000, 10);
        }
        c.files.run_pending_tasks();
        let open: Vec<&BlockId> = ids.iter().filter(|id| c.files.contains_key(*id)).collect();
        assert!(!open.is_empty(), "small reads keep their files open");
        c.index.invalidate(open[0]);
        c.index.run_pending_tasks();
        c.files.run_pending_tasks();
        for id in &ids {
            assert!(
                c.contains(id) || !c.files.contains_key(id),
                "a block left, its file is still open"
            );
        }
        assert!(!c.files.contains_key(open[0]));
        let (bytes, _) = c.usage();
        assert!(bytes <= 1_000_000, "{bytes}");
        let on_disk: u64 = walk(dir.path());
        assert!(
            on_disk <= 1_000_000,
            "files beyond capacity remain: {on_disk}"
        );
    }

    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path())
                } else {
                    e.metadata().unwrap().len()
                }
            })
            .sum()
    }
}
