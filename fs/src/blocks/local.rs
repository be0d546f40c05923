//! A [`BlockStore`] in a local directory (or any mounted filesystem).
//!
//! Invariant: a block file appears under its final name only complete and fsynced (written
//! to a temporary name, synced, renamed), so a crash never leaves a torn block.

use super::{BlockError, BlockInfo, BlockStore, block_key, parse_block_key};
use bytes::Bytes;
use meridian_proto::BlockId;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

pub struct LocalDirStore {
    root: PathBuf,
    tmp_seq: AtomicU64,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BlockError {
    let what = what.into();
    move |source| BlockError::Io { what, source }
}

impl LocalDirStore {
    /// Uses (creating if needed) `root` as the block directory.
    pub fn open(root: &Path) -> Result<Self, BlockError> {
        fs::create_dir_all(root.join("blocks")).map_err(io(format!(
            "cannot create block directory {}",
            root.display()
        )))?;
        Ok(LocalDirStore {
            root: root.to_path_buf(),
            tmp_seq: AtomicU64::new(0),
        })
    }

    fn path(&self, id: &BlockId) -> PathBuf {
        self.root.join(block_key(id))
    }
}

impl BlockStore for LocalDirStore {
    fn put(&self, id: &BlockId, data: Bytes) -> Result<(), BlockError> {
        let path = self.path(id);
        if path.exists() {
            // Refresh the time so a collector's grace period covers this new reference.
            let f = fs::File::options()
                .write(true)
                .open(&path)
                .map_err(io(format!("open {}", path.display())))?;
            return f
                .set_modified(SystemTime::now())
                .map_err(io(format!("touch {}", path.display())));
        }
        let dir = path.parent().expect("block path has a parent");
        fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp.{}.{seq}", std::process::id()));
        let mut f = fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        f.write_all(&data)
            .map_err(io(format!("write {}", tmp.display())))?;
        f.sync_all()
            .map_err(io(format!("sync {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io(format!("rename to {}", path.display())))
    }

    fn get(&self, id: &BlockId) -> Result<Bytes, BlockError> {
        match fs::read(self.path(id)) {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlockError::NotFound(*id)),
            Err(e) => Err(BlockError::Io {
                what: format!("read {}", self.path(id).display()),
                source: e,
            }),
        }
    }

    fn delete(&self, id: &BlockId) -> Result<(), BlockError> {
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BlockError::Io {
                what: format!("delete {}", self.path(id).display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn list(&self) -> Result<Vec<BlockInfo>, BlockError> {
        let top = self.root.join("blocks");
        let mut out = Vec::new();
        for dir in fs::read_dir(&top).map_err(io(format!("list {}", top.display())))? {
            let dir = dir.map_err(io("list blocks"))?;
            let dir_name = dir.file_name().to_string_lossy().into_owned();
            for f in
                fs::read_dir(dir.path()).map_err(io(format!("list {}", dir.path().display())))?
            {
                let f = f.map_err(io("list blocks"))?;
                let key = format!("blocks/{dir_name}/{}", f.file_name().to_string_lossy());
                let Some(id) = parse_block_key(&key) else {
                    continue;
                };
                let md = match f.metadata() {
                    Ok(md) => md,
                    // Deleted (collected, or uploaded from staging) while listing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(BlockError::Io {
                            what: format!("stat {key}"),
                            source: e,
                        });
                    }
                };
                out.push(BlockInfo {
                    id,
                    size: md.len(),
                    modified: md.modified().map_err(io("mtime"))?,
                });
            }
        }
        Ok(out)
    }

    fn check(&self) -> Result<(), BlockError> {
        let probe = self.root.join("blocks").join(".probe");
        fs::write(&probe, b"ok").map_err(io(format!(
            "block directory {} is not writable",
            self.root.display()
        )))?;
        fs::remove_file(&probe).map_err(io("remove probe"))
    }

    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_store_suite() {
        let dir = tempfile::tempdir().unwrap();
        super::super::suite::run_all(&LocalDirStore::open(dir.path()).unwrap());
    }
}
