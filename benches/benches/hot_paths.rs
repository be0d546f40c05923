//! Criterion benchmarks of the client's hot paths: block hashing (every upload and every
//! verified fetch), a memory-cache hit, a 4 KiB random read from the NVMe tier (the path of
//! a QD1 random read on a mount without passthrough), a 1 MiB read through an open file's
//! layout, and the chunk lookup read-ahead does on a 100 GB file.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meridian_fs::FsResult;
use meridian_fs::blocks::{BlockStore, MemBlockStore, block_id};
use meridian_fs::cache::{BlockCache, CacheConfig};
use meridian_fs::core::file::{ChunkSource, FileState};
use meridian_proto::{BlockId, BlockRef, CHUNK_SIZE, InodeId, Layout};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("blake3");
    for size in [64 << 10, 4 << 20] {
        let data = vec![7u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, d| {
            b.iter(|| block_id(black_box(d)))
        });
    }
    g.finish();
}

struct Cached(Arc<BlockCache>);
impl ChunkSource for Cached {
    fn block(&self, id: &BlockId) -> FsResult<Bytes> {
        Ok(self.0.get(id)?)
    }
}

fn cache_and_reads(c: &mut Criterion) {
    let store = Arc::new(MemBlockStore::new());
    let mut map = BTreeMap::new();
    for i in 0..8u64 {
        let data = Bytes::from(vec![i as u8; CHUNK_SIZE as usize]);
        let id = block_id(&data);
        store.put(&id, data).unwrap();
        map.insert(
            i,
            BlockRef {
                id,
                len: CHUNK_SIZE as u32,
            },
        );
    }
    let cache = BlockCache::new(
        store,
        &CacheConfig {
            memory_bytes: 1 << 30,
            ..Default::default()
        },
    )
    .unwrap();
    let first = map[&0].id;
    cache.get(&first).unwrap();
    c.bench_function("cache hit (memory)", |b| {
        b.iter(|| cache.get(black_box(&first)).unwrap())
    });

    let state = FileState::new(InodeId(2), Layout::Chunks(map), 8 * CHUNK_SIZE);
    let src = Cached(cache);
    for ref_ in 0..8 {
        let _ = state.read(&src, ref_ * CHUNK_SIZE, 1);
    }
    let mut g = c.benchmark_group("file read (blocks in memory)");
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("1 MiB across a chunk boundary", |b| {
        b.iter(|| {
            state
                .read(&src, black_box(CHUNK_SIZE - (512 << 10)), 1 << 20)
                .unwrap()
        })
    });
    g.finish();
}

/// 4 KiB reads at scattered offsets of 8 blocks held by the disk tier alone (the memory tier
/// holds nothing), with the cache files in the page cache: what each read costs is finding,
/// reading and verifying the bytes around it.
fn disk_tier_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemBlockStore::new());
    let cache = BlockCache::new(
        store.clone(),
        &CacheConfig {
            memory_bytes: 0,
            disk_dir: Some(dir.path().to_path_buf()),
            disk_min_free_ratio: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let ids: Vec<BlockId> = (0..8u32)
        .map(|i| {
            let data: Vec<u8> = (0..CHUNK_SIZE as u32)
                .map(|j| (j.wrapping_mul(2_654_435_761) >> 24) as u8 ^ i as u8)
                .collect();
            let id = block_id(&data);
            store.put(&id, Bytes::from(data)).unwrap();
            cache.get(&id).unwrap();
            id
        })
        .collect();
    let mut n = 0usize;
    c.bench_function("4 KiB random read (NVMe tier, page cache warm)", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let id = &ids[n % ids.len()];
            let at = n.wrapping_mul(7_919) % (CHUNK_SIZE as usize / 4096) * 4096;
            cache.get_range(black_box(id), at, 4096).unwrap()
        })
    });
}

fn extent_lookup(c: &mut Criterion) {
    let chunks = (100u64 << 30) / CHUNK_SIZE;
    let map: BTreeMap<u64, BlockRef> = (0..chunks)
        .map(|i| {
            (
                i,
                BlockRef {
                    id: BlockId([(i % 251) as u8; 32]),
                    len: CHUNK_SIZE as u32,
                },
            )
        })
        .collect();
    let state = FileState::new(InodeId(2), Layout::Chunks(map), chunks * CHUNK_SIZE);
    c.bench_function("read-ahead lookup of 16 chunks in a 100 GB file", |b| {
        b.iter(|| state.chunk_ids(black_box(12_345), black_box(12_361)))
    });
}

criterion_group!(
    benches,
    hashing,
    cache_and_reads,
    disk_tier_reads,
    extent_lookup
);
criterion_main!(benches);
