//! Block stores: where the immutable, content-addressed blocks of file data live.
//!
//! Contract ([`BlockStore`], checked by `suite` against every implementation):
//! - `put(id, bytes)` stores `bytes` under `id` (the caller guarantees `id` is their BLAKE3
//!   hash) durably before returning; putting an existing block again succeeds and refreshes
//!   its modification time, so garbage collection's grace period protects re-used blocks.
//! - `get(id)` returns exactly the stored bytes or [`BlockError::NotFound`]; callers verify
//!   the hash with [`fetch_verified`], so a corrupted block is never served.
//! - `list` reports every block with its modification time; `delete` of a missing block
//!   succeeds.
//!
//! Names in a bucket or directory: `blocks/<first 2 hex>/<64 hex>`.

mod local;
mod mem;
mod s3;
#[cfg(test)]
mod suite;
mod writeback;

pub use local::LocalDirStore;
pub use mem::MemBlockStore;
pub use s3::{S3Config, S3Store};
pub use writeback::WriteBackStore;

use bytes::Bytes;
use meridian_proto::BlockId;
use std::time::SystemTime;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BlockError {
    #[error("block {} is missing from the block store", .0.to_hex())]
    NotFound(BlockId),
    #[error("block {} failed its BLAKE3 check (corrupted in storage or in transit)", .0.to_hex())]
    Corrupt(BlockId),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("S3 {op} failed: {message}")]
    S3 { op: &'static str, message: String },
    #[error("{0}")]
    Config(String),
    /// One failed fetch, reported to every reader that waited for it.
    #[error(transparent)]
    Shared(std::sync::Arc<BlockError>),
}

/// One stored block, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    pub id: BlockId,
    pub size: u64,
    pub modified: SystemTime,
}

/// A place blocks live.
pub trait BlockStore: Send + Sync {
    fn put(&self, id: &BlockId, data: Bytes) -> Result<(), BlockError>;
    fn get(&self, id: &BlockId) -> Result<Bytes, BlockError>;
    fn delete(&self, id: &BlockId) -> Result<(), BlockError>;
    fn list(&self) -> Result<Vec<BlockInfo>, BlockError>;
    /// Checks the store is reachable and usable; the error says what to fix.
    fn check(&self) -> Result<(), BlockError>;
    /// Where the blocks live, for humans.
    fn describe(&self) -> String;
}

/// The name of `data`.
pub fn block_id(data: &[u8]) -> BlockId {
    BlockId(*blake3::hash(data).as_bytes())
}

/// Fetches a block and checks it against its name.
pub fn fetch_verified(store: &dyn BlockStore, id: &BlockId) -> Result<Bytes, BlockError> {
    let data = store.get(id)?;
    if block_id(&data) != *id {
        return Err(BlockError::Corrupt(*id));
    }
    Ok(data)
}

/// The relative key of a block: `blocks/ab/abcd…`.
pub fn block_key(id: &BlockId) -> String {
    let hex = id.to_hex();
    format!("blocks/{}/{}", &hex[..2], hex)
}

/// The block named by a key produced by [`block_key`], if it is one.
pub fn parse_block_key(key: &str) -> Option<BlockId> {
    let rest = key.strip_prefix("blocks/")?;
    let (dir, name) = rest.split_once('/')?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None; // only the lowercase names block_key writes
    }
    let id = BlockId::from_hex(name)?;
    (dir.len() == 2 && name.starts_with(dir)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_reject_strangers() {
        let id = block_id(b"frame");
        assert_eq!(parse_block_key(&block_key(&id)), Some(id));
        assert_eq!(parse_block_key("blocks/zz/nothex"), None);
        assert_eq!(parse_block_key("other/ab/x"), None);
        let upper = block_key(&id)
            .to_uppercase()
            .replacen("BLOCKS", "blocks", 1);
        assert_eq!(parse_block_key(&upper), None);
    }

    #[test]
    fn corrupted_blocks_are_never_served() {
        let store = MemBlockStore::new();
        let id = block_id(b"good");
        store.put(&id, Bytes::from_static(b"evil")).unwrap();
        assert!(matches!(
            fetch_verified(&store, &id),
            Err(BlockError::Corrupt(_))
        ));
    }
}
