//! The client's block cache: memory → local NVMe → the block store, with prefetch.
//!
//! Owns: the memory tier (moka, weighed in bytes, LRU), the optional disk tier
//! ([`disk::DiskCache`]), a pool of fetch workers for read-ahead, and hit counters.
//!
//! Invariants:
//! - Every block returned was verified against its BLAKE3 name, whichever tier served it.
//! - Concurrent requests for one block share one fetch (moka's `try_get_with`).
//! - A fetch from the store fills the memory tier on the way back, and the disk tier through
//!   one background writer (so a slow or busy cache disk never delays a read or an upload;
//!   when the writer falls behind, blocks are simply not cached on disk).
//! - Prefetch never blocks the caller: requests beyond the queue depth are dropped.
//! - The memory tier lets go of a block a sequential reader is done with
//!   ([`BlockCache::passed`]), and skips a block just uploaded ([`BlockCache::put`]), only
//!   while a disk tier holds it or is taking blocks: it never drops the only local copy.

pub(crate) mod aligned;
mod disk;
pub use disk::free_ratio;
pub mod pieces;
pub mod uring;

pub use disk::{DiskCache, PieceValue};

use crate::blocks::{BlockError, BlockStore};
use bytes::Bytes;
use meridian_proto::BlockId;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Cache sizes and fetch parallelism (see docs/configuration.md).
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub memory_bytes: u64,
    /// The NVMe cache directory; `None` disables the disk tier.
    pub disk_dir: Option<PathBuf>,
    pub disk_bytes: u64,
    /// Stop writing to the disk tier when its filesystem has less free space than this.
    pub disk_min_free_ratio: f64,
    /// Blocks fetched from the store at once for read-ahead.
    pub fetch_concurrency: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory_bytes: 512 << 20,
            disk_dir: None,
            disk_bytes: 64 << 30,
            disk_min_free_ratio: 0.1,
            fetch_concurrency: 8,
        }
    }
}

/// Reads shorter than this are served piecewise from the disk tier.
const SMALL_READ: usize = 256 << 10;

fn slice(b: &Bytes, start: usize, len: usize) -> Bytes {
    let end = (start + len).min(b.len());
    b.slice(start.min(end)..end)
}

impl BlockCache {
    /// The counters in Prometheus's text format.
    pub fn prometheus(&self) -> String {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.stats;
        let (disk_bytes, disk_blocks) = self.disk.as_ref().map_or((0, 0), |d| d.usage());
        let mut out = String::new();
        for (name, help, kind, v) in [
            (
                "meridian_cache_memory_hits_total",
                "Block reads served from memory",
                "counter",
                c(&s.memory_hits),
            ),
            (
                "meridian_cache_disk_hits_total",
                "Block reads served from the NVMe tier",
                "counter",
                c(&s.disk_hits),
            ),
            (
                "meridian_store_fetches_total",
                "Blocks fetched from the block store",
                "counter",
                c(&s.store_fetches),
            ),
            (
                "meridian_store_fetch_bytes_total",
                "Bytes fetched from the block store",
                "counter",
                c(&s.store_bytes),
            ),
            (
                "meridian_store_puts_total",
                "Blocks stored",
                "counter",
                c(&s.store_puts),
            ),
            (
                "meridian_store_put_bytes_total",
                "Bytes stored",
                "counter",
                c(&s.store_put_bytes),
            ),
            (
                "meridian_prefetches_total",
                "Blocks queued for read-ahead",
                "counter",
                c(&s.prefetches),
            ),
            (
                "meridian_cache_dropped_behind_total",
                "Blocks a sequential reader finished a chunk ago, let go of by the memory tier",
                "counter",
                c(&s.dropped_behind),
            ),
            (
                "meridian_cache_memory_bytes",
                "Bytes in the memory tier",
                "gauge",
                self.memory.weighted_size(),
            ),
            (
                "meridian_cache_disk_bytes",
                "Bytes in the NVMe tier",
                "gauge",
                disk_bytes,
            ),
            (
                "meridian_cache_disk_blocks",
                "Blocks in the NVMe tier",
                "gauge",
                disk_blocks,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
        out
    }
}

/// Work for the disk writer: a block to cache, or a request to report when all before it
/// are done.
enum Fill {
    Block(BlockId, Bytes, Vec<PieceValue>),
    Flush(std::sync::mpsc::Sender<()>),
}

/// Where a block was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Disk,
    Store,
}

/// Counters for `meridian stats` and benchmarks.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub memory_hits: AtomicU64,
    pub disk_hits: AtomicU64,
    pub store_fetches: AtomicU64,
    pub store_bytes: AtomicU64,
    pub prefetches: AtomicU64,
    /// Blocks a sequential reader finished a chunk ago, let go of by the memory tier.
    pub dropped_behind: AtomicU64,
    pub store_puts: AtomicU64,
    pub store_put_bytes: AtomicU64,
}

pub struct BlockCache {
    store: Arc<dyn BlockStore>,
    memory: moka::sync::Cache<BlockId, Bytes>,
    disk: Option<DiskCache>,
    queue: SyncSender<BlockId>,
    queued: Mutex<HashSet<BlockId>>,
    disk_fill: Option<SyncSender<Fill>>,
    /// Blocks fetched from the store at once (`cache.fetch_concurrency`).
    fetch_concurrency: usize,
    pub stats: CacheStats,
}

impl BlockCache {
    /// Builds the cache and starts its fetch workers.
    pub fn new(store: Arc<dyn BlockStore>, cfg: &CacheConfig) -> Result<Arc<Self>, BlockError> {
        // LRU, not TinyLFU, in memory: read-ahead inserts blocks just before they are read,
        // and a frequency filter would refuse them in favour of blocks already read (and
        // so counted) several times — every streamed block would be fetched twice.
        let memory = moka::sync::Cache::builder()
            .weigher(|_: &BlockId, v: &Bytes| v.len().try_into().unwrap_or(u32::MAX))
            .max_capacity(cfg.memory_bytes)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        let disk = match &cfg.disk_dir {
            Some(dir) => Some(
                DiskCache::open(dir, cfg.disk_bytes, cfg.disk_min_free_ratio).map_err(|e| {
                    BlockError::Io {
                        what: format!("cannot open the disk cache {}", dir.display()),
                        source: e,
                    }
                })?,
            ),
            None => None,
        };
        let workers = cfg.fetch_concurrency.max(1);
        let (tx, rx) = sync_channel(workers * 16);
        let (fill_tx, fill_rx) = match disk.is_some() {
            true => {
                let (t, r) = sync_channel::<Fill>(32);
                (Some(t), Some(r))
            }
            false => (None, None),
        };
        let cache = Arc::new(BlockCache {
            store,
            memory,
            disk,
            queue: tx,
            queued: Mutex::new(HashSet::new()),
            disk_fill: fill_tx,
            fetch_concurrency: workers,
            stats: CacheStats::default(),
        });
        if let Some(rx) = fill_rx {
            let weak = Arc::downgrade(&cache);
            std::thread::Builder::new()
                .name("meridian-cache-fill".into())
                .spawn(move || disk_writer(weak, rx))
                .map_err(|e| BlockError::Io {
                    what: "starting the cache writer".into(),
                    source: e,
                })?;
        }
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..workers {
            let weak = Arc::downgrade(&cache);
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("meridian-fetch-{n}"))
                .spawn(move || fetch_worker(weak, rx))
                .map_err(|e| BlockError::Io {
                    what: "starting fetch workers".into(),
                    source: e,
                })?;
        }
        Ok(cache)
    }

    pub fn store(&self) -> &Arc<dyn BlockStore> {
        &self.store
    }

    pub fn disk(&self) -> Option<&DiskCache> {
        self.disk.as_ref()
    }

    /// Blocks fetched from the store at once, as configured.
    pub fn fetch_concurrency(&self) -> usize {
        self.fetch_concurrency
    }

    /// The block, from the fastest tier that has it.
    pub fn get(&self, id: &BlockId) -> Result<Bytes, BlockError> {
        if let Some(b) = self.memory_hit(id) {
            return Ok(b);
        }
        let got = self.memory.try_get_with(*id, || self.load(id));
        self.evict_now();
        got.map_err(|e| match Arc::try_unwrap(e) {
            Ok(e) => e,
            Err(shared) => BlockError::Shared(shared),
        })
    }

    /// The block if the memory tier has it, counted as a memory hit.
    fn memory_hit(&self, id: &BlockId) -> Option<Bytes> {
        let b = self.memory.get(id)?;
        self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
        Some(b)
    }

    /// The block for a one-off pass over it (a passthrough copy being assembled): from
    /// memory if it is there, else from the tiers below, without bringing it into memory —
    /// a 1 GiB copy would otherwise push out every block other readers come back to.
    pub fn get_passing(&self, id: &BlockId) -> Result<Bytes, BlockError> {
        if let Some(b) = self.memory_hit(id) {
            return Ok(b);
        }
        self.load(id)
    }

    /// Has the memory tier evict what an insert pushed over its bound at once: moka
    /// otherwise batches its upkeep, and a streaming reader or writer then holds dozens of
    /// 4 MiB blocks over `cache.memory_bytes` and frees them in bursts larger than the
    /// chunk pool keeps (its next chunks then fault in fresh pages).
    fn evict_now(&self) {
        self.memory.run_pending_tasks();
    }

    /// `len` bytes at `start` of a block. A block that is only on disk is not brought into
    /// memory for a small read: the disk tier serves (and verifies) just the pieces that
    /// cover the range, so random reads cost a few KiB of I/O, not a whole block.
    pub fn get_range(&self, id: &BlockId, start: usize, len: usize) -> Result<Bytes, BlockError> {
        if let Some(b) = self.memory_hit(id) {
            return Ok(slice(&b, start, len));
        }
        if len < SMALL_READ
            && let Some(d) = &self.disk
            && let Some(piece) = d.get_range(id, start, len)
        {
            self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(piece);
        }
        Ok(slice(&self.get(id)?, start, len))
    }

    /// Below memory: the disk tier, then the store (filling the disk tier).
    fn load(&self, id: &BlockId) -> Result<Bytes, BlockError> {
        if let Some(data) = self.disk.as_ref().and_then(|d| d.get(id)) {
            self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(data);
        }
        let (data, cvs) = self.fetch(id)?;
        let _ = self.fill_disk(id, &data, cvs, true);
        Ok(data)
    }

    /// The block from the store, checked against its name, with its pieces' chaining values
    /// (one pass gives both).
    fn fetch(&self, id: &BlockId) -> Result<(Bytes, Vec<PieceValue>), BlockError> {
        let data = self.store.get(id)?;
        let (name, cvs) = pieces::hash_with_pieces(&data);
        if name != *id {
            return Err(BlockError::Corrupt(*id));
        }
        self.stats.store_fetches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .store_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok((data, cvs))
    }

    /// Brings block `id` into the disk tier ahead of use (into memory without one), ranked
    /// with the blocks read most, so that a full tier keeps it over blocks read less
    /// ([`DiskCache::want`]); its size, and whether the tier kept it (it does not when
    /// paused for space, or full of blocks read as often). The block is stored when this
    /// returns (not handed to the disk writer), and one the tier holds already is not read.
    pub fn warm(&self, id: &BlockId) -> Result<(usize, bool), BlockError> {
        let Some(disk) = &self.disk else {
            return Ok((self.get(id)?.len(), true));
        };
        disk.want(id);
        if let Some(len) = disk.len_of(id) {
            return Ok((len, true));
        }
        let (data, cvs) = self.fetch(id)?;
        disk.put_with_pieces(id, &data, Some(&cvs));
        Ok((data.len(), disk.contains(id)))
    }

    /// Where a block is now, without fetching it.
    pub fn tier(&self, id: &BlockId) -> Tier {
        if self.memory.contains_key(id) {
            Tier::Memory
        } else if self.disk.as_ref().is_some_and(|d| d.contains(id)) {
            Tier::Disk
        } else {
            Tier::Store
        }
    }

    /// Stores a new block durably, then keeps it on the disk tier (or, when that does not
    /// take it, in memory). `cvs` are its pieces'
    /// chaining values if the caller computed them with its name.
    pub fn put(&self, id: &BlockId, data: Bytes, cvs: Vec<PieceValue>) -> Result<(), BlockError> {
        self.store.put(id, data.clone())?;
        self.stats.store_puts.fetch_add(1, Ordering::Relaxed);
        self.stats
            .store_put_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        // Written blocks are read back rarely, and then the page cache or the NVMe tier
        // serves them: the memory tier keeps one only when the disk tier does not take it
        // (as drop-behind does for readers, so a long write recycles pooled chunk buffers
        // instead of filling the tier with fresh ones: 30% of the client's CPU zeroed them).
        if !(self.fill_disk(id, &data, cvs, false) && self.disk_keeps(id)) {
            self.memory.insert(*id, data);
            self.evict_now();
        }
        Ok(())
    }

    /// Hands a block to the disk writer; says whether the disk tier has it or was handed
    /// it. A block fetched from the store waits for room in the writer's queue (fetches are
    /// what the disk tier is for, and fetch workers run ahead of readers); a block just
    /// written is dropped when the writer is busy, so a slow cache disk never slows durable
    /// writes.
    fn fill_disk(&self, id: &BlockId, data: &Bytes, cvs: Vec<PieceValue>, wait: bool) -> bool {
        let (Some(tx), Some(disk)) = (&self.disk_fill, &self.disk) else {
            return false;
        };
        if disk.contains(id) {
            return true;
        }
        let fill = Fill::Block(*id, data.clone(), cvs);
        match wait {
            true => tx.send(fill).is_ok(),
            false => tx.try_send(fill).is_ok(),
        }
    }

    /// Waits until the disk writer has stored everything handed to it so far (tests, and
    /// orderly shutdown).
    pub fn flush_disk(&self) {
        if let Some(tx) = &self.disk_fill {
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            if tx.send(Fill::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
        }
    }

    /// Drop-behind: a sequential reader is done with block `id` (it finished it a whole
    /// chunk ago: reads just behind it may still be in flight). The memory tier
    /// lets it go when the disk tier holds it or is storing it (a block fetched from the
    /// store waits in the disk writer's queue, which holds its own reference; the kernel's
    /// page cache holds what was just read), so a stream reuses a few pooled chunk buffers
    /// instead of filling the tier with fresh ones (each a fresh 4 MiB to fault in and
    /// zero: 17% of the client's CPU in a cold read) and pushing out the blocks other
    /// readers come back to. Without a disk tier, or with one paused for space, the memory
    /// tier is the only copy here and keeps it.
    pub fn passed(&self, id: &BlockId) {
        if self.disk_keeps(id) && self.memory.remove(id).is_some() {
            self.stats.dropped_behind.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the disk tier holds `id` or is storing what it is handed: only then may the
    /// memory tier go without it (the module's invariant).
    fn disk_keeps(&self, id: &BlockId) -> bool {
        self.disk
            .as_ref()
            .is_some_and(|d| d.contains(id) || d.accepting())
    }

    /// Asks the workers to bring blocks into memory ahead of use.
    pub fn prefetch(&self, ids: impl IntoIterator<Item = BlockId>) {
        for id in ids {
            if self.memory.contains_key(&id) {
                continue;
            }
            if !self.queued.lock().insert(id) {
                continue;
            }
            if self.queue.try_send(id).is_err() {
                self.queued.lock().remove(&id);
                return; // queue full: the reader is ahead of the store; try again later
            }
            self.stats.prefetches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes blocks handed to it into the disk tier, in order.
fn disk_writer(cache: std::sync::Weak<BlockCache>, rx: Receiver<Fill>) {
    while let Ok(fill) = rx.recv() {
        match fill {
            Fill::Block(id, data, cvs) => {
                let Some(cache) = cache.upgrade() else { return };
                if let Some(d) = &cache.disk {
                    d.put_with_pieces(
                        &id,
                        &data,
                        Some(&cvs).filter(|c| !c.is_empty()).map(|c| c.as_slice()),
                    );
                }
            }
            Fill::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn fetch_worker(cache: std::sync::Weak<BlockCache>, rx: Arc<Mutex<Receiver<BlockId>>>) {
    loop {
        let next = rx.lock().recv();
        let Ok(id) = next else { return };
        let Some(cache) = cache.upgrade() else { return };
        if let Err(e) = cache.get(&id) {
            tracing::debug!(block = %id.to_hex(), error = %e, "prefetch failed");
        }
        cache.queued.lock().remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{MemBlockStore, block_id};

    /// A cache with a disk tier in `dir`.
    fn with_disk(dir: &std::path::Path) -> CacheConfig {
        CacheConfig {
            disk_dir: Some(dir.join("cache")),
            // The test must not depend on how full the host's disk is.
            disk_min_free_ratio: 0.0,
            ..Default::default()
        }
    }

    /// Block files (not piece values) under `dir`.
    fn block_files(dir: &std::path::Path) -> usize {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => block_files(&e.path()),
                _ => usize::from(e.path().extension().is_none()),
            })
            .sum()
    }

    /// A full disk tier of blocks read often turns away a block fetched once (TinyLFU), and
    /// keeps a warmed one, ranked with the hottest; either way it is back within its
    /// capacity as soon as the block is stored, without waiting for the next read.
    #[test]
    fn a_full_disk_tier_keeps_a_warmed_block_and_turns_a_one_off_fetch_away() {
        let store = Arc::new(MemBlockStore::new());
        let dir = tempfile::tempdir().unwrap();
        let len = 256 << 10;
        let block = |n: u8| {
            let d = Bytes::from(vec![n; len]);
            let id = block_id(&d);
            store.put(&id, d).unwrap();
            id
        };
        let hot: Vec<BlockId> = (0..4).map(block).collect();
        let (once, warmed) = (block(10), block(11));
        let cfg = CacheConfig {
            memory_bytes: 1, // every read goes to the disk tier
            disk_bytes: 4 * u64::from(disk::on_disk_size(len as u32)),
            ..with_disk(dir.path())
        };
        let cache = BlockCache::new(store.clone(), &cfg).unwrap();
        let disk = cache.disk().unwrap();
        for id in &hot {
            cache.get(id).unwrap();
        }
        cache.flush_disk();
        for _ in 0..4 {
            for id in &hot {
                cache.get(id).unwrap();
            }
        }
        assert!(hot.iter().all(|id| disk.contains(id)));
        cache.get(&once).unwrap();
        cache.flush_disk();
        assert!(
            !disk.contains(&once),
            "a one-off fetch pushed out a hot block"
        );
        // Stored when `warm` returns.
        assert_eq!(cache.warm(&warmed).unwrap(), (len, true));
        assert!(
            disk.contains(&warmed),
            "a full tier turned a warmed block away"
        );
        assert_eq!(hot.iter().filter(|id| disk.contains(id)).count(), 3);
        assert_eq!(block_files(&dir.path().join("cache")), 4, "over capacity");
        // Warming a block the tier holds reads nothing.
        let fetches = cache.stats.store_fetches.load(Ordering::Relaxed);
        assert_eq!(cache.warm(&warmed).unwrap(), (len, true));
        assert_eq!(cache.stats.store_fetches.load(Ordering::Relaxed), fetches);
    }

    /// A tier paused for space keeps nothing, and warming says so.
    #[test]
    fn warming_into_a_paused_tier_says_the_block_was_not_kept() {
        let store = Arc::new(MemBlockStore::new());
        let dir = tempfile::tempdir().unwrap();
        let data = Bytes::from(vec![3u8; 100_000]);
        let id = block_id(&data);
        store.put(&id, data).unwrap();
        let cfg = CacheConfig {
            disk_min_free_ratio: 1.0, // no filesystem has all of itself free
            ..with_disk(dir.path())
        };
        let cache = BlockCache::new(store, &cfg).unwrap();
        assert_eq!(cache.warm(&id).unwrap(), (100_000, false));
    }

    #[test]
    fn tiers_fill_on_the_way_back_and_corruption_is_refetched() {
        let store = Arc::new(MemBlockStore::new());
        let dir = tempfile::tempdir().unwrap();
        let cfg = CacheConfig {
            memory_bytes: 1 << 20,
            ..with_disk(dir.path())
        };
        let data = Bytes::from(vec![9u8; 700_000]);
        let id = block_id(&data);
        store.put(&id, data.clone()).unwrap();
        let cache = BlockCache::new(store.clone(), &cfg).unwrap();
        assert_eq!(cache.tier(&id), Tier::Store);
        assert_eq!(cache.get(&id).unwrap(), data);
        assert_eq!(cache.stats.store_fetches.load(Ordering::Relaxed), 1);
        assert_eq!(cache.tier(&id), Tier::Memory);
        cache.flush_disk();
        // A new cache over the same directory: the block comes from disk, not the store.
        drop(cache);
        let cache = BlockCache::new(store.clone(), &cfg).unwrap();
        assert_eq!(cache.tier(&id), Tier::Disk);
        assert_eq!(cache.get(&id).unwrap(), data);
        assert_eq!(cache.stats.disk_hits.load(Ordering::Relaxed), 1);
        assert_eq!(cache.stats.store_fetches.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn drop_behind_lets_go_only_of_blocks_the_disk_tier_keeps() {
        let store = Arc::new(MemBlockStore::new());
        let data = Bytes::from(vec![7u8; 300_000]);
        let id = block_id(&data);
        store.put(&id, data.clone()).unwrap();
        // Memory only: the memory tier is the one copy here and keeps it.
        let memory_only = BlockCache::new(store.clone(), &CacheConfig::default()).unwrap();
        memory_only.get(&id).unwrap();
        memory_only.passed(&id);
        assert_eq!(memory_only.tier(&id), Tier::Memory);
        assert_eq!(memory_only.stats.dropped_behind.load(Ordering::Relaxed), 0);
        // With a disk tier: dropped from memory, served from disk, not fetched again.
        let dir = tempfile::tempdir().unwrap();
        let cfg = with_disk(dir.path());
        let cache = BlockCache::new(store, &cfg).unwrap();
        cache.get(&id).unwrap();
        cache.passed(&id);
        cache.flush_disk();
        assert_eq!(cache.tier(&id), Tier::Disk);
        assert_eq!(cache.get(&id).unwrap(), data);
        assert_eq!(cache.stats.store_fetches.load(Ordering::Relaxed), 1);
        assert_eq!(cache.stats.disk_hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_passing_read_leaves_the_memory_tier_as_it_was() {
        let store = Arc::new(MemBlockStore::new());
        let dir = tempfile::tempdir().unwrap();
        let data = Bytes::from(vec![5u8; 300_000]);
        let id = block_id(&data);
        store.put(&id, data.clone()).unwrap();
        let cache = BlockCache::new(store, &with_disk(dir.path())).unwrap();
        assert_eq!(cache.get_passing(&id).unwrap(), data);
        cache.flush_disk();
        assert_eq!(
            cache.tier(&id),
            Tier::Disk,
            "fetched, cached on disk, not in memory"
        );
        assert_eq!(cache.get_passing(&id).unwrap(), data);
        assert_eq!(cache.tier(&id), Tier::Disk);
        assert_eq!(cache.stats.store_fetches.load(Ordering::Relaxed), 1);
        assert_eq!(cache.stats.disk_hits.load(Ordering::Relaxed), 1);
        cache.get(&id).unwrap();
        assert_eq!(cache.get_passing(&id).unwrap(), data);
        assert_eq!(cache.stats.memory_hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn written_blocks_stay_in_memory_only_when_no_disk_tier_takes_them() {
        let data = Bytes::from(vec![3u8; 200_000]);
        let id = block_id(&data);
        let memory_only =
            BlockCache::new(Arc::new(MemBlockStore::new()), &CacheConfig::default()).unwrap();
        memory_only.put(&id, data.clone(), Vec::new()).unwrap();
        assert_eq!(memory_only.tier(&id), Tier::Memory);
        let dir = tempfile::tempdir().unwrap();
        let cfg = with_disk(dir.path());
        let cache = BlockCache::new(Arc::new(MemBlockStore::new()), &cfg).unwrap();
        cache.put(&id, data.clone(), Vec::new()).unwrap();
        cache.flush_disk();
        assert_eq!(cache.tier(&id), Tier::Disk);
        assert_eq!(cache.get(&id).unwrap(), data);
        assert_eq!(cache.stats.store_fetches.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn prefetch_brings_blocks_into_memory() {
        let store = Arc::new(MemBlockStore::new());
        let ids: Vec<BlockId> = (0..5u8)
            .map(|i| {
                let d = Bytes::from(vec![i; 1000]);
                let id = block_id(&d);
                store.put(&id, d).unwrap();
                id
            })
            .collect();
        let cache = BlockCache::new(store, &CacheConfig::default()).unwrap();
        cache.prefetch(ids.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ids.iter().any(|id| cache.tier(id) != Tier::Memory) {
            assert!(
                std::time::Instant::now() < deadline,
                "prefetch did not finish"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
