//! Mount settings and the session: mount options, worker threads, and the notifier the
//! adapter keeps for invalidations (set once, before the session runs).

use super::FuseFs;
use crate::core::Fs;
use fuser::{Config, MountOption, Session, SessionACL};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Kernel-facing settings.
#[derive(Clone, Debug)]
pub struct FuseOptions {
    /// How long the kernel may cache attributes and entries.
    pub attr_ttl: Duration,
    /// Allow users other than the mounting one (needs root or user_allow_other).
    pub allow_other: bool,
    pub read_only: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// Name shown in `mount` output.
    pub fs_name: String,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            attr_ttl: Duration::from_secs(1),
            allow_other: false,
            read_only: false,
            threads: 8,
            fs_name: "meridian".into(),
        }
    }
}

/// Mounts `fs` at `mountpoint`; the session runs when [`Session::run`] is called.
pub fn session(fs: Arc<Fs>, mountpoint: &Path, opts: &FuseOptions) -> io::Result<Session<FuseFs>> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fs_name.clone()),
        MountOption::Subtype("meridian".into()),
        MountOption::DefaultPermissions,
        if opts.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
        MountOption::Suid,
        MountOption::Dev,
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    let fuse_fs = FuseFs::new(fs, opts);
    let notifier = fuse_fs.notifier.clone();
    let session = Session::new(fuse_fs, mountpoint, &config)?;
    let _ = notifier.set(session.notifier());
    Ok(session)
}
