//! Opening what a mount or an admin command needs: the namespace and the block store,
//! each failure turned into one line that names the problem and the fix.

use crate::config::FileConfig;
use anyhow::{Context, Result, anyhow};
use meridian_fs::blocks::{BlockStore, LocalDirStore, S3Store};
use meridian_metaserver::{Meta, MetaConfig, RedbStore};
use std::sync::Arc;

/// The embedded namespace in `<data_dir>/namespace.redb`.
pub fn namespace(cfg: &FileConfig) -> Result<Arc<Meta<RedbStore>>> {
    let dir = cfg.data_dir()?;
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let path = dir.join("namespace.redb");
    // A mount that was just unmounted may still be exiting: give it a moment to let go.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let store = loop {
        match RedbStore::open(&path) {
            Err(e)
                if e.to_string().contains("already open")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => break other.map_err(|e| anyhow!("{e}"))?,
        }
    };
    Ok(Arc::new(Meta::open(store, meta_config(cfg)).map_err(
        |e| anyhow!("namespace {}: {e}", path.display()),
    )?))
}

/// How a namespace is created: its root owned by whoever runs this.
pub fn meta_config(cfg: &FileConfig) -> MetaConfig {
    MetaConfig {
        root_uid: nix::unistd::getuid().as_raw(),
        root_gid: nix::unistd::getgid().as_raw(),
        inline_max: cfg.mount.inline_max_bytes,
        ..MetaConfig::default()
    }
}

/// The block store: the configured bucket, or `<data_dir>/blocks`. Checked before use.
pub fn blocks(cfg: &FileConfig) -> Result<Arc<dyn BlockStore>> {
    let store: Arc<dyn BlockStore> = match &cfg.s3 {
        Some(s3) => Arc::new(S3Store::new(s3.clone()).map_err(|e| anyhow!("{e}"))?),
        None => Arc::new(LocalDirStore::open(&cfg.data_dir()?).map_err(|e| anyhow!("{e}"))?),
    };
    store.check().map_err(|e| anyhow!("{e}"))?;
    Ok(store)
}
