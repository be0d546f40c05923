//! `meridian umount` and `meridian gc`.

use crate::config::StoreFlags;
use crate::open;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug, clap::Args)]
pub struct UmountArgs {
    /// The mountpoint to unmount
    pub mountpoint: PathBuf,
    /// Detach now even if files are open (they are committed when closed)
    #[arg(long, short = 'l')]
    pub lazy: bool,
}

/// Unmounts through fusermount3 (works for root and for the mounting user). A stale mount
/// (its process died) is detached.
pub fn umount(args: UmountArgs) -> Result<()> {
    let mp = &args.mountpoint;
    let stale = matches!(std::fs::metadata(mp), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN));
    let mut cmd = Command::new("fusermount3");
    cmd.arg(if args.lazy || stale { "-uz" } else { "-u" })
        .arg(mp);
    let out = cmd
        .output()
        .context("running fusermount3 (install the fuse3 package)")?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("busy") {
        bail!(
            "{} is busy: files are open there (see `fuser -vm {}`); close them, or use --lazy",
            mp.display(),
            mp.display()
        );
    }
    if err.contains("not found in") || err.contains("not mounted") {
        bail!("{} is not a mounted meridian filesystem", mp.display());
    }
    bail!("unmounting {} failed: {}", mp.display(), err.trim())
}

#[derive(Clone, Debug, clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub store: StoreFlags,
    /// Keep unreferenced blocks younger than this many seconds (uploads not yet committed)
    #[arg(long, default_value_t = 3600)]
    pub grace_secs: u64,
    /// Only report what would be removed
    #[arg(long)]
    pub dry_run: bool,
}

/// Removes blocks no file references and that are older than the grace period.
pub fn gc(args: GcArgs) -> Result<()> {
    let cfg = args.store.resolve()?;
    let blocks = open::blocks(&cfg)?;
    let ns = open::namespace(&cfg)?;
    // List blocks before reading references: a block uploaded after the listing is not a
    // candidate, and one committed after the reference scan is younger than the grace.
    let listed = blocks.list().map_err(|e| anyhow::anyhow!("{e}"))?;
    let referenced = ns.referenced_blocks().map_err(|e| anyhow::anyhow!("{e}"))?;
    let cutoff = SystemTime::now() - Duration::from_secs(args.grace_secs);
    let (mut removed, mut bytes, mut young) = (0u64, 0u64, 0u64);
    for b in &listed {
        if referenced.contains(&b.id) {
            continue;
        }
        if b.modified > cutoff {
            young += 1;
            continue;
        }
        if !args.dry_run {
            blocks.delete(&b.id).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        removed += 1;
        bytes += b.size;
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "gc: {} blocks listed, {} referenced, {verb} {removed} ({bytes} bytes), kept {young} unreferenced blocks younger than {}s",
        listed.len(),
        referenced.len(),
        args.grace_secs
    );
    Ok(())
}
