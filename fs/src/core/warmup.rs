//! Warmup: brings a file's blocks into this machine's caches ahead of use, asked for by
//! reading the extended attribute [`WARMUP`] (what `meridian warmup` does for each file).
//!
//! Owns: nothing; it walks the file's committed layout and has the block cache warm each
//! block ([`crate::cache::BlockCache::warm`]), as many at a time as the cache fetches
//! (`cache.fetch_concurrency`).
//!
//! Invariants:
//! - A warmed block is checked against its name like any fetch.
//! - The disk tier ranks a warmed block with the blocks read most, so a warmup lands in a
//!   full tier instead of being turned away as a one-off pass over cold data is.
//! - Nothing goes through the kernel's page cache or to the caller but the byte count.
//! - The attribute is not stored: it cannot be set or removed, and is not listed.

use super::Fs;
use crate::error::{FsError, FsResult};
use meridian_proto::{BlockId, Caller, InodeId, Layout, MetaError};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Reading it warms the file and answers `KEPT TOTAL`: the bytes of its blocks the caches
/// now hold, and the bytes its blocks hold, in decimal.
pub const WARMUP: &[u8] = b"user.meridian.warmup";

impl Fs {
    /// Warms every block of `ino`'s committed data for `who` (who must be able to read
    /// it); the bytes of the blocks the caches kept, and of all of them. An inline file
    /// has none: its bytes come with its metadata.
    pub fn warmup(&self, who: &Caller, ino: InodeId) -> FsResult<(u64, u64)> {
        self.ns.access(who, ino, 4)?;
        let Layout::Chunks(chunks) = self.ns.layout(ino)?.0 else {
            return Ok((0, 0));
        };
        let mut ids: Vec<BlockId> = chunks.values().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let next = AtomicUsize::new(0);
        let warm = || -> FsResult<(u64, u64)> {
            let (mut kept, mut total) = (0, 0);
            while let Some(id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                let (len, held) = self.cache.warm(id)?;
                total += len as u64;
                kept += if held { len as u64 } else { 0 };
            }
            Ok((kept, total))
        };
        std::thread::scope(|s| {
            let n = self.cache.fetch_concurrency().min(ids.len());
            let workers: Vec<_> = (0..n).map(|_| s.spawn(warm)).collect();
            workers.into_iter().try_fold((0, 0), |(k, t), w| {
                let (kept, total) = w.join().expect("a warmup worker panicked")?;
                Ok((k + kept, t + total))
            })
        })
    }
}

/// Refuses to store or remove [`WARMUP`].
pub(super) fn not_stored(name: &[u8]) -> FsResult<()> {
    if name == WARMUP {
        return Err(FsError::Meta(MetaError::Invalid(
            "user.meridian.warmup is not stored: reading it brings the file into this \
             machine's caches"
                .into(),
        )));
    }
    Ok(())
}
