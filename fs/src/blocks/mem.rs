//! An in-memory [`BlockStore`] for fast tests.

use super::{BlockError, BlockInfo, BlockStore};
use bytes::Bytes;
use meridian_proto::BlockId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::SystemTime;

#[derive(Default)]
pub struct MemBlockStore {
    blocks: Mutex<HashMap<BlockId, (Bytes, SystemTime)>>,
}

impl MemBlockStore {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.blocks.lock().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BlockStore for MemBlockStore {
    fn put(&self, id: &BlockId, data: Bytes) -> Result<(), BlockError> {
        self.blocks.lock().insert(*id, (data, SystemTime::now()));
        Ok(())
    }
    fn get(&self, id: &BlockId) -> Result<Bytes, BlockError> {
        self.blocks
            .lock()
            .get(id)
            .map(|(b, _)| b.clone())
            .ok_or(BlockError::NotFound(*id))
    }
    fn delete(&self, id: &BlockId) -> Result<(), BlockError> {
        self.blocks.lock().remove(id);
        Ok(())
    }
    fn list(&self) -> Result<Vec<BlockInfo>, BlockError> {
        Ok(self
            .blocks
            .lock()
            .iter()
            .map(|(id, (b, t))| BlockInfo {
                id: *id,
                size: b.len() as u64,
                modified: *t,
            })
            .collect())
    }
    fn check(&self) -> Result<(), BlockError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn block_store_suite() {
        super::super::suite::run_all(&super::MemBlockStore::new());
    }
}
