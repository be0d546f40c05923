//! Write-back: a [`BlockStore`] that stages blocks on local disk and uploads them to the
//! real store in the background.
//!
//! The weaker guarantee, chosen per mount (`[mount] write_back = true`): `put` returns once
//! the block is fsynced in the staging directory, so close and fsync return at local-disk
//! speed, and the namespace may reference blocks that are not yet in the bucket. Until a
//! block is uploaded, only this machine can read it, and losing this machine's disk loses
//! it. A crash of the client loses nothing: staged blocks are found again at the next start
//! and their upload resumes.
//!
//! Invariants: a block is deleted from staging only after the real store acknowledged it;
//! `get` looks in staging first, so a staged block is always readable here. One uploader
//! thread pool drains the queue; it holds only a weak reference to the store.

use super::{BlockError, BlockInfo, BlockStore, LocalDirStore};
use bytes::Bytes;
use meridian_proto::BlockId;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Weak};

pub struct WriteBackStore {
    staging: LocalDirStore,
    remote: Arc<dyn BlockStore>,
    queue: Mutex<Sender<BlockId>>,
    pending: Mutex<HashSet<BlockId>>,
}

impl WriteBackStore {
    /// Stages in `dir`, uploads to `remote` with `workers` threads; queues every block left
    /// in `dir` by an earlier run.
    pub fn open(
        dir: &Path,
        remote: Arc<dyn BlockStore>,
        workers: usize,
    ) -> Result<Arc<Self>, BlockError> {
        let staging = LocalDirStore::open(dir)?;
        let (tx, rx) = channel();
        let store = Arc::new(WriteBackStore {
            staging,
            remote,
            queue: Mutex::new(tx),
            pending: Mutex::new(HashSet::new()),
        });
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..workers.max(1) {
            let (weak, rx) = (Arc::downgrade(&store), rx.clone());
            std::thread::Builder::new()
                .name(format!("meridian-writeback-{n}"))
                .spawn(move || upload_loop(weak, rx))
                .map_err(|e| BlockError::Io {
                    what: "starting write-back uploaders".into(),
                    source: e,
                })?;
        }
        let left = store.staging.list()?;
        if !left.is_empty() {
            tracing::info!(
                blocks = left.len(),
                "resuming uploads of blocks staged before the last stop"
            );
        }
        for b in left {
            store.enqueue(b.id);
        }
        Ok(store)
    }

    fn enqueue(&self, id: BlockId) {
        if self.pending.lock().insert(id) {
            let _ = self.queue.lock().send(id);
        }
    }

    /// Blocks staged but not yet uploaded.
    pub fn pending(&self) -> usize {
        self.pending.lock().len()
    }

    /// Waits until every staged block is uploaded (tests, and `meridian umount --wait`).
    pub fn drain(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.pending() > 0 {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        true
    }

    fn upload_one(&self, id: &BlockId) -> Result<(), BlockError> {
        let data = match self.staging.get(id) {
            Ok(d) => d,
            Err(BlockError::NotFound(_)) => return Ok(()), // uploaded by an earlier attempt
            Err(e) => return Err(e),
        };
        if super::block_id(&data) != *id {
            tracing::error!(block = %id.to_hex(), "a staged block is corrupt and cannot be uploaded");
            return Err(BlockError::Corrupt(*id));
        }
        self.remote.put(id, data)?;
        self.staging.delete(id)
    }
}

fn upload_loop(store: Weak<WriteBackStore>, rx: Arc<Mutex<Receiver<BlockId>>>) {
    loop {
        let next = rx.lock().recv();
        let Ok(id) = next else { return };
        let Some(store) = store.upgrade() else { return };
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            match store.upload_one(&id) {
                Ok(()) => break,
                Err(BlockError::Corrupt(_)) => break, // kept in staging for an operator
                Err(e) => {
                    tracing::warn!(block = %id.to_hex(), error = %e, "write-back upload failed; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
        store.pending.lock().remove(&id);
    }
}

impl BlockStore for WriteBackStore {
    fn put(&self, id: &BlockId, data: Bytes) -> Result<(), BlockError> {
        self.staging.put(id, data)?;
        self.enqueue(*id);
        Ok(())
    }

    fn get(&self, id: &BlockId) -> Result<Bytes, BlockError> {
        match self.staging.get(id) {
            Err(BlockError::NotFound(_)) => self.remote.get(id),
            other => other,
        }
    }

    fn delete(&self, id: &BlockId) -> Result<(), BlockError> {
        // Let an upload of this block finish first, or it could land after the delete.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.pending.lock().contains(id) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.staging.delete(id)?;
        self.remote.delete(id)
    }

    fn list(&self) -> Result<Vec<BlockInfo>, BlockError> {
        // Staging first: a block leaves staging only after the remote has it, so listing in
        // this order never misses one that is moving.
        let staged = self.staging.list()?;
        let mut all = self.remote.list()?;
        let known: HashSet<BlockId> = all.iter().map(|b| b.id).collect();
        all.extend(staged.into_iter().filter(|b| !known.contains(&b.id)));
        Ok(all)
    }

    fn check(&self) -> Result<(), BlockError> {
        self.staging.check()?;
        self.remote.check()
    }

    fn describe(&self) -> String {
        format!(
            "{} (write-back, staged in {})",
            self.remote.describe(),
            self.staging.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{MemBlockStore, block_id};
    use std::time::Duration;

    #[test]
    fn block_store_suite() {
        let dir = tempfile::tempdir().unwrap();
        let remote = Arc::new(MemBlockStore::new());
        crate::blocks::suite::run_all(
            WriteBackStore::open(dir.path(), remote, 2)
                .unwrap()
                .as_ref(),
        );
    }

    /// A remote that refuses every put until told otherwise (an unreachable bucket).
    struct Flaky {
        inner: MemBlockStore,
        up: std::sync::atomic::AtomicBool,
    }
    impl BlockStore for Flaky {
        fn put(&self, id: &BlockId, data: Bytes) -> Result<(), BlockError> {
            if !self.up.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(BlockError::S3 {
                    op: "PutObject",
                    message: "unreachable".into(),
                });
            }
            self.inner.put(id, data)
        }
        fn get(&self, id: &BlockId) -> Result<Bytes, BlockError> {
            self.inner.get(id)
        }
        fn delete(&self, id: &BlockId) -> Result<(), BlockError> {
            self.inner.delete(id)
        }
        fn list(&self) -> Result<Vec<BlockInfo>, BlockError> {
            self.inner.list()
        }
        fn check(&self) -> Result<(), BlockError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    #[test]
    fn staged_blocks_are_readable_and_uploads_resume_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let remote = Arc::new(Flaky {
            inner: MemBlockStore::new(),
            up: false.into(),
        });
        let data = Bytes::from(vec![3u8; 100_000]);
        let id = block_id(&data);
        {
            let wb = WriteBackStore::open(dir.path(), remote.clone(), 1).unwrap();
            wb.put(&id, data.clone()).unwrap();
            assert_eq!(wb.get(&id).unwrap(), data, "readable before upload");
            assert!(!wb.drain(Duration::from_millis(300)), "the bucket is down");
        } // the client "dies" with the block staged
        remote.up.store(true, std::sync::atomic::Ordering::SeqCst);
        let wb = WriteBackStore::open(dir.path(), remote.clone(), 1).unwrap();
        assert!(
            wb.drain(Duration::from_secs(30)),
            "uploads resume at the next start"
        );
        assert_eq!(remote.inner.get(&id).unwrap(), data);
        assert!(
            wb.staging.list().unwrap().is_empty(),
            "staging is emptied after upload"
        );
    }
}
