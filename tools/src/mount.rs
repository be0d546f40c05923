//! `meridian mount`: checks, the embedded namespace, the block store, the FUSE session, and
//! a clean unmount (commit every open file first) on SIGINT, SIGTERM or `meridian umount`.
//!
//! Background mode re-runs this program in the foreground as a child in its own process
//! group; the child reports "ready" or its one-line error through a pipe, then writes its
//! log to `<data_dir>/meridian.log`. The parent exits with the child's verdict.

use crate::config::{FileConfig, StoreFlags};
use crate::open;
use anyhow::{Context, Result, anyhow, bail};
use meridian_fs::blocks::WriteBackStore;
use meridian_fs::cache::BlockCache;
use meridian_fs::fuse::FuseOptions;
use meridian_fs::{Fs, FsConfig};
use nix::sys::signal::{SigSet, Signal};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const READY: &str = "meridian-ready";

#[derive(Clone, Debug, clap::Args)]
pub struct MountArgs {
    /// Where to mount the namespace (an existing, empty directory)
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub store: StoreFlags,
    /// Stay in the foreground (default: detach once mounted, logging to DATA_DIR/meridian.log)
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// Let other users access the mount (root, or user_allow_other in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
    /// Mount read-only
    #[arg(long)]
    pub read_only: bool,
    /// How long the kernel caches attributes and names, in milliseconds [default: 1000]
    #[arg(long)]
    pub attr_ttl_ms: Option<u64>,
    /// FUSE worker threads [default: 8]
    #[arg(long)]
    pub threads: Option<usize>,
    /// The kernel's read-ahead for this mount, in KiB; 0 leaves the kernel's 128 KiB
    /// (setting it needs root) [default: 1024]
    #[arg(long)]
    pub read_ahead_kb: Option<u32>,
    /// Memory for the block cache, in bytes [default: 536870912]
    #[arg(long)]
    pub cache_memory_bytes: Option<u64>,
    /// close and fsync return once blocks are staged on local disk; uploads continue in the
    /// background and resume after a crash (weaker: until uploaded, only this machine has
    /// the data)
    #[arg(long)]
    pub write_back: bool,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9464
    #[arg(long)]
    pub metrics: Option<String>,
    /// Join a site metaserver instead of the embedded namespace, e.g. quic://meta:7443
    #[arg(long)]
    pub meta: Option<String>,
    /// The metaserver's certificate (PEM) to pin
    #[arg(long)]
    pub meta_cert: Option<PathBuf>,
    /// This client's credential (from `meridian metaserver add-client`)
    #[arg(long, env = "MERIDIAN_META_TOKEN", hide_env_values = true)]
    pub meta_token: Option<String>,
    /// Fail a metadata call with EIO after this long without an answer [default: 30000]
    #[arg(long)]
    pub meta_timeout_ms: Option<u64>,
}

/// Checks the mountpoint: exists, is a directory, is not a stale or live mount.
fn check_mountpoint(mp: &Path) -> Result<PathBuf> {
    // statfs always reaches the filesystem (stat may be answered from the kernel's cache),
    // so a mount whose process died shows up here as ENOTCONN.
    let probe = nix::sys::statfs::statfs(mp)
        .err()
        .map(|e| std::io::Error::from_raw_os_error(e as i32));
    match probe.map_or_else(|| std::fs::metadata(mp), Err) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!(
            "mountpoint {} is not a directory: choose a directory",
            mp.display()
        ),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "mountpoint {} is a stale mount left by a crashed meridian: run `meridian umount {}` and mount again",
            mp.display(),
            mp.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "mountpoint {} does not exist: create it with `mkdir -p {}`",
                mp.display(),
                mp.display()
            )
        }
        Err(e) => bail!("mountpoint {}: {e}", mp.display()),
    }
    let abs = std::fs::canonicalize(mp).with_context(|| format!("mountpoint {}", mp.display()))?;
    if let Some(fstype) = mounted_at(&abs)? {
        bail!(
            "mountpoint {} is busy: a {fstype} filesystem is already mounted there; run `meridian umount {}` or choose another directory",
            abs.display(),
            abs.display()
        );
    }
    Ok(abs)
}

/// The filesystem type mounted exactly at `path`, if any (from /proc/self/mountinfo).
pub fn mounted_at(path: &Path) -> Result<Option<String>> {
    Ok(mount_entry(path)?.map(|e| e.fstype))
}

/// One line of /proc/self/mountinfo.
struct MountEntry {
    /// The backing device, `major:minor`.
    device: String,
    fstype: String,
}

/// The topmost mount exactly at `path`, if any.
fn mount_entry(path: &Path) -> Result<Option<MountEntry>> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(entry_in(&info, path))
}

fn entry_in(mountinfo: &str, path: &Path) -> Option<MountEntry> {
    let want = path.to_string_lossy();
    mountinfo.lines().rev().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (unescape(fields.get(4)?) == want).then(|| MountEntry {
            device: fields.get(2).unwrap_or(&"").to_string(),
            fstype: fields.get(sep + 1).unwrap_or(&"unknown").to_string(),
        })
    })
}

/// Sets the kernel's read-ahead for the mount at `mountpoint` to `kb` KiB: its device's
/// `read_ahead_kb` in sysfs (root only; read from /proc/self/mountinfo, so the mount is
/// not touched before its session runs). The kernel starts every FUSE mount at 128 KiB
/// whatever the filesystem asks, so a 1 MiB sequential read arrives as several small
/// requests, each a worker thread's wake-up; at 1 MiB it arrives whole (a cold read of
/// 1 GiB: ~10,000 → ~2,200 worker wake-ups, ~7% less client CPU).
fn set_kernel_readahead(mountpoint: &Path, kb: u32) -> Result<()> {
    let entry = mount_entry(mountpoint)?.context("the mount is not in /proc/self/mountinfo")?;
    let knob = format!("/sys/class/bdi/{}/read_ahead_kb", entry.device);
    std::fs::write(&knob, kb.to_string()).with_context(|| format!("writing {knob}"))
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

pub fn run(args: MountArgs) -> Result<()> {
    let mp = check_mountpoint(&args.mountpoint)?;
    if !args.foreground && std::env::var_os("MERIDIAN_CHILD").is_none() {
        return spawn_background();
    }
    mount_foreground(args, mp)
}

/// The site metaserver from flags over the config file, if any.
fn site_meta(args: &MountArgs, cfg: &FileConfig) -> Result<Option<crate::site::MetaSection>> {
    let mut m = match (&args.meta, &cfg.meta) {
        (Some(url), file) => crate::site::MetaSection {
            url: url.clone(),
            ..file.clone().unwrap_or_default()
        },
        (None, Some(file)) => file.clone(),
        (None, None) => return Ok(None),
    };
    if let Some(c) = &args.meta_cert {
        m.cert = c.clone();
    }
    if args.meta_token.is_some() {
        m.token = args.meta_token.clone();
    }
    if args.meta_timeout_ms.is_some() {
        m.timeout_ms = args.meta_timeout_ms;
    }
    if m.cert.as_os_str().is_empty() {
        bail!("--meta needs the metaserver's certificate: pass --meta-cert (its metaserver.crt)");
    }
    Ok(Some(m))
}

fn fs_config(cfg: &FileConfig, cache: &meridian_fs::cache::CacheConfig) -> Result<FsConfig> {
    let passthrough = cfg.mount.passthrough.unwrap_or(cache.disk_dir.is_some());
    Ok(FsConfig {
        inline_max: cfg.mount.inline_max_bytes,
        max_dirty_bytes: cfg.mount.max_dirty_bytes,
        upload_concurrency: cfg.mount.upload_concurrency,
        capacity_bytes: cfg.mount.capacity_bytes,
        readahead_max_bytes: cfg.mount.readahead_max_bytes,
        sequence_depth: cfg.mount.sequence_depth,
        passthrough_dir: if passthrough {
            Some(cfg.data_dir()?.join("passthrough"))
        } else {
            None
        },
        passthrough_bytes: cfg.mount.passthrough_bytes,
    })
}

/// Raises this process's soft limit on open files to its hard limit, as Go programs do at
/// start: the NVMe tier keeps the files of recent blocks open for small reads, and a mount
/// under a service manager's default soft limit (1,024) would otherwise run short of them.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("could not raise the open-file limit");
            }
        }
    }
}

fn mount_foreground(args: MountArgs, mp: PathBuf) -> Result<()> {
    raise_open_file_limit();
    // Block the stop signals in every thread; one thread waits for them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.thread_block().context("blocking signals")?;

    let mut cfg = args.store.resolve()?;
    if let Some(m) = args.cache_memory_bytes {
        cfg.cache.memory_bytes = m;
    }
    let data_dir = cfg.data_dir()?;
    let mut blocks = open::blocks(&cfg)?;
    if args.write_back || cfg.mount.write_back {
        if cfg.s3.is_none() {
            bail!("--write-back needs a bucket: blocks are already on local disk without one");
        }
        let staging = data_dir.join("staging");
        blocks = WriteBackStore::open(&staging, blocks, cfg.mount.upload_concurrency)
            .map_err(|e| anyhow!("{e}"))?;
    }
    let cache_cfg = cfg.cache_config()?;
    let cache = BlockCache::new(blocks.clone(), &cache_cfg).map_err(|e| anyhow!("{e}"))?;
    if let Some(addr) = &args.metrics {
        crate::metrics::serve(addr, cache.clone())?;
    }
    let meta = site_meta(&args, &cfg)?;
    let (ns, site): (Arc<dyn meridian_proto::Namespace>, _) = match &meta {
        Some(m) => {
            let (ns, client) = crate::site::connect(m)?;
            (ns, Some(client))
        }
        None => (open::namespace(&cfg)?, None),
    };
    let fs = Arc::new(Fs::new(ns, cache, fs_config(&cfg, &cache_cfg)?));
    let opts = FuseOptions {
        attr_ttl: Duration::from_millis(args.attr_ttl_ms.unwrap_or(cfg.mount.attr_ttl_ms)),
        allow_other: args.allow_other || cfg.mount.allow_other,
        read_only: args.read_only || cfg.mount.read_only,
        threads: args.threads.unwrap_or(cfg.mount.threads),
        fs_name: "meridian".into(),
    };
    let mut session = meridian_fs::fuse::session(fs.clone(), &mp, &opts).map_err(|e| {
        anyhow!(
            "cannot mount at {}: {e} (is /dev/fuse there and fusermount3 installed?)",
            mp.display()
        )
    })?;
    let read_ahead_kb = args.read_ahead_kb.unwrap_or(cfg.mount.read_ahead_kb);
    if read_ahead_kb > 0
        && let Err(e) = set_kernel_readahead(&mp, read_ahead_kb)
    {
        tracing::info!("kernel read-ahead left as it was (128 KiB unless set): {e:#}");
    }
    let mut unmounter = session.unmount_callable();
    if let Some(client) = &site {
        client.on_invalidate(meridian_fs::fuse::invalidator(
            session.notifier(),
            fs.clone(),
        ));
    }

    println!("meridian: mounted at {}", mp.display());
    match &meta {
        Some(m) => println!("  namespace: metaserver {}", m.url),
        None => println!("  namespace: {}", data_dir.join("namespace.redb").display()),
    }
    println!("  blocks:    {}", blocks.describe());
    match &cache_cfg.disk_dir {
        Some(d) => println!(
            "  cache:     {} (up to {} bytes) and {} bytes of memory",
            d.display(),
            cache_cfg.disk_bytes,
            cache_cfg.memory_bytes
        ),
        None => println!("  cache:     {} bytes of memory", cache_cfg.memory_bytes),
    }
    if std::env::var_os("MERIDIAN_CHILD").is_some() {
        println!("{READY}");
        redirect_output(&data_dir)?;
    }
    let mp_for_signal = mp.clone();
    // The signal thread outlives the session: it must not keep the file system (and so
    // the namespace) alive past it — see the end of this function.
    let for_signal = Arc::downgrade(&fs);
    std::thread::Builder::new().name("meridian-signals".into()).spawn(move || {
        if let Ok(sig) = signals.wait() {
            tracing::info!(?sig, "stopping: committing open files and unmounting");
            if let Some(fs) = for_signal.upgrade()
                && let Err(e) = fs.flush_all()
            {
                tracing::error!(error = %e, "some open files could not be committed");
            }
            if let Err(e) = unmounter.unmount() {
                tracing::error!(error = %e, mountpoint = %mp_for_signal.display(), "unmount failed");
            }
        }
    })?;
    let ran = session.run(); // the session, and its hold on `fs`, end here
    // Close the namespace before the process ends: an embedded namespace's redb file is
    // marked closed cleanly only when its database is dropped, and one left marked open
    // is checked page by page (its whole file read) at the next mount.
    let closing = Arc::downgrade(&fs);
    drop(fs);
    if closing.strong_count() > 0 && site.is_none() {
        tracing::warn!("the namespace is still in use at exit: the next mount will check it");
    }
    ran.with_context(|| format!("FUSE session at {}", mp.display()))?;
    tracing::info!("unmounted {}", mp.display());
    Ok(())
}

/// Sends stdout and stderr to `<data_dir>/meridian.log` (background mode, once ready).
fn redirect_output(data_dir: &Path) -> Result<()> {
    let log = data_dir.join("meridian.log");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    std::io::stdout().flush()?;
    for fd in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors; both are valid for the whole process.
        if unsafe { libc::dup2(f.as_raw_fd(), fd) } < 0 {
            bail!(
                "redirecting output to {}: {}",
                log.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Starts the mount as a detached child and waits for its verdict.
fn spawn_background() -> Result<()> {
    let exe = std::env::current_exe().context("finding the meridian executable")?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MERIDIAN_CHILD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("starting the background mount")?;
    let out = BufReader::new(child.stdout.take().expect("piped"));
    for line in out.lines() {
        let line = line?;
        if line == READY {
            return Ok(());
        }
        println!("{line}");
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)?;
    let status = child.wait()?;
    eprint!("{err}");
    // The child already said what went wrong, in one line; exit with its status.
    std::process::exit(status.code().unwrap_or(1).max(1))
}

use std::os::unix::process::CommandExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topmost_mount_at_a_path_names_its_device_and_type() {
        let info = "\
22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
41 22 0:38 / /mnt/a\\040b rw - fuse.meridian meridian rw
42 22 0:39 / /mnt/m rw,relatime - fuse meridian rw,user_id=0
43 42 0:40 / /mnt/m rw,relatime shared:7 - fuse.meridian meridian rw,user_id=0
";
        let m = entry_in(info, Path::new("/mnt/m")).unwrap();
        assert_eq!(
            (m.device.as_str(), m.fstype.as_str()),
            ("0:40", "fuse.meridian")
        );
        let spaced = entry_in(info, Path::new("/mnt/a b")).unwrap();
        assert_eq!(spaced.device, "0:38");
        assert!(entry_in(info, Path::new("/mnt")).is_none());
    }
}
