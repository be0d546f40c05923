//! Drop-behind through the filesystem core: a sequential reader's chunks leave the memory
//! tier once it is well past them (the NVMe tier keeps them), and a reader that jumps
//! around keeps what it read.

use bytes::Bytes;
use meridian_fs::blocks::{MemBlockStore, block_id};
use meridian_fs::cache::{BlockCache, CacheConfig, Tier};
use meridian_fs::core::OpenMode;
use meridian_fs::{Fs, FsConfig};
use meridian_metaserver::{MemStore, Meta, MetaConfig};
use meridian_proto::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const MIB: usize = 1 << 20;
const CHUNKS: usize = 5;

/// A core with a memory and a disk tier, holding one committed file of `CHUNKS` distinct
/// chunks; returns the core, the file's inode and each chunk's block id.
fn core_with_file(disk: &std::path::Path) -> (Fs, InodeId, Vec<BlockId>) {
    let meta: Arc<dyn Namespace> =
        Arc::new(Meta::open(MemStore::new(), MetaConfig::default()).unwrap());
    let cache = BlockCache::new(
        Arc::new(MemBlockStore::new()),
        &CacheConfig {
            memory_bytes: 256 << 20,
            disk_dir: Some(disk.to_path_buf()),
            disk_min_free_ratio: 0.0,
            ..CacheConfig::default()
        },
    )
    .unwrap();
    let fs = Fs::new(meta, cache, FsConfig::default());
    let rw = OpenMode {
        read: true,
        write: true,
    };
    let (attr, fh) = fs
        .create(&Caller::root(), ROOT, b"plate.mov", 0o644, rw)
        .unwrap();
    let mut ids = Vec::new();
    for k in 0..CHUNKS {
        let chunk: Vec<u8> = (0..CHUNK_SIZE as usize)
            .map(|i| (i % 251) as u8 ^ k as u8)
            .collect();
        fs.write(fh, (k as u64) * CHUNK_SIZE, &chunk).unwrap();
        ids.push(block_id(&Bytes::from(chunk)));
    }
    fs.release(fh).unwrap();
    fs.cache().flush_disk();
    (fs, attr.ino, ids)
}

fn read_only() -> OpenMode {
    OpenMode {
        read: true,
        write: false,
    }
}

#[test]
fn a_sequential_reader_lets_chunks_well_behind_it_go_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, ino, ids) = core_with_file(dir.path());
    let (fh, _) = fs.open(&Caller::root(), ino, read_only()).unwrap();
    let mut got = Vec::new();
    for off in (0..CHUNKS * CHUNK_SIZE as usize).step_by(MIB) {
        got.extend_from_slice(&fs.read(fh, off as u64, MIB as u32).unwrap());
    }
    for (k, id) in ids.iter().enumerate() {
        let want: Vec<u8> = (0..CHUNK_SIZE as usize)
            .map(|i| (i % 251) as u8 ^ k as u8)
            .collect();
        assert!(
            got[k * CHUNK_SIZE as usize..][..CHUNK_SIZE as usize] == want[..],
            "chunk {k}"
        );
        // The reader read to the end of the last chunk: every chunk that ended a whole
        // chunk before that is gone from memory, and still on disk.
        let tier = fs.cache().tier(id);
        match k + 1 < CHUNKS {
            true => assert_eq!(tier, Tier::Disk, "chunk {k} was dropped behind"),
            false => assert_eq!(tier, Tier::Memory, "chunk {k} is kept"),
        }
    }
    let dropped = fs.cache().stats.dropped_behind.load(Ordering::Relaxed);
    assert_eq!(dropped, CHUNKS as u64 - 1);
    // Read again: the disk tier serves it, nothing is fetched from the store again.
    let fetched = fs.cache().stats.store_fetches.load(Ordering::Relaxed);
    assert!(fs.read(fh, 0, MIB as u32).unwrap()[..] == got[..MIB]);
    assert_eq!(
        fs.cache().stats.store_fetches.load(Ordering::Relaxed),
        fetched
    );
    fs.release(fh).unwrap();
}

#[test]
fn a_reader_that_jumps_around_keeps_what_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, ino, ids) = core_with_file(dir.path());
    let (fh, _) = fs.open(&Caller::root(), ino, read_only()).unwrap();
    for k in [3u64, 0, 4, 1] {
        fs.read(fh, k * CHUNK_SIZE + 4096, MIB as u32).unwrap();
    }
    assert_eq!(fs.cache().stats.dropped_behind.load(Ordering::Relaxed), 0);
    for k in [3, 0, 4, 1] {
        assert_eq!(fs.cache().tier(&ids[k]), Tier::Memory, "chunk {k}");
    }
    fs.release(fh).unwrap();
}
