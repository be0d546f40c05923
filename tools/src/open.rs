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
    let store = RedbStore::open(&path).map_err(|e| anyhow!("{e}"))?;
    let meta_cfg = MetaConfig {
        root_uid: nix::unistd::getuid().as_raw(),
        root_gid: nix::unistd::getgid().as_raw(),
        inline_max: cfg.mount.inline_max_bytes,
        ..MetaConfig::default()
    };
    Ok(Arc::new(Meta::open(store, meta_cfg).map_err(|e| {
        anyhow!("namespace {}: {e}", path.display())
    })?))
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
