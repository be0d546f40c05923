//! Data commands: `meridian warmup` (bring files into the caches ahead of use),
//! `meridian cache` (disk-cache usage and eviction) and `meridian bench s3` (the bucket's
//! own PUT and GET rates, the ceiling the data path is measured against).

use crate::config::StoreFlags;
use crate::open;
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Clone, Debug, clap::Args)]
pub struct WarmupArgs {
    /// Files, directories (recursively) or frame ranges such as shot.[1001-1100].exr
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Files read at once
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
}

/// Expands `name.[A-B].ext` into each frame, zero-padded to the width of A.
pub fn expand_frames(path: &str) -> Result<Vec<PathBuf>> {
    let (Some(open), Some(close)) = (path.rfind('['), path.rfind(']')) else {
        return Ok(vec![path.into()]);
    };
    let Some((a, b)) = path[open + 1..close].split_once('-') else {
        return Ok(vec![path.into()]);
    };
    let (Ok(first), Ok(last)) = (a.parse::<u64>(), b.parse::<u64>()) else {
        return Ok(vec![path.into()]);
    };
    if last < first || last - first > 1_000_000 {
        bail!("frame range [{a}-{b}] in {path} is empty or too large");
    }
    Ok((first..=last)
        .map(|n| {
            format!(
                "{}{n:0w$}{}",
                &path[..open],
                &path[close + 1..],
                w = a.len()
            )
            .into()
        })
        .collect())
}

fn collect(path: &Path, out: &mut Vec<(PathBuf, u64)>) -> Result<()> {
    let md = std::fs::metadata(path).with_context(|| format!("warmup: {}", path.display()))?;
    if md.is_dir() {
        for e in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
            collect(&e?.path(), out)?;
        }
    } else if md.is_file() {
        out.push((path.to_path_buf(), md.len()));
    }
    Ok(())
}

/// The attribute whose reading has a Meridian mount warm a file (`core::warmup`).
const WARMUP_XATTR: &str = "user.meridian.warmup";

/// Has the mount holding `path` warm it: the bytes of its blocks the caches kept and of
/// all of them, or `None` where the path is not on a mount that offers it (another
/// filesystem, an older mount), which the caller then reads instead.
fn warm_in_mount(path: &Path) -> std::io::Result<Option<(u64, u64)>> {
    match xattr::get(path, WARMUP_XATTR) {
        Ok(Some(v)) => Ok(std::str::from_utf8(&v).ok().and_then(|t| {
            let (kept, total) = t.split_once(' ')?;
            Some((kept.parse().ok()?, total.parse().ok()?))
        })),
        Ok(None) => Ok(None),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP | libc::EPERM)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads `path` to its end through the page cache, counting the bytes on `bar`.
fn read_through(path: &Path, buf: &mut [u8], bar: &ProgressBar) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    loop {
        match f.read(buf)? {
            0 => return Ok(()),
            n => bar.inc(n as u64),
        }
    }
}

/// Brings every file into this machine's caches. On a Meridian mount each file is warmed by
/// the mount itself (its blocks fetched in parallel into the disk tier, ranked there with
/// the blocks read most, nothing copied to this process); elsewhere it is read once.
pub fn warmup(args: WarmupArgs) -> Result<()> {
    let mut files = Vec::new();
    for p in &args.paths {
        for f in expand_frames(p)? {
            collect(&f, &mut files)?;
        }
    }
    let total: u64 = files.iter().map(|f| f.1).sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{spinner} warmup [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let next = AtomicUsize::new(0);
    let errors = AtomicU64::new(0);
    // Bytes of blocks the mount warmed that its caches did not keep.
    let turned_away = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.parallel.max(1) {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                while let Some((path, size)) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let warmed = match warm_in_mount(path) {
                        Ok(Some((kept, total))) => {
                            turned_away.fetch_add(total - kept.min(total), Ordering::Relaxed);
                            bar.inc(*size);
                            Ok(())
                        }
                        Ok(None) => read_through(path, &mut buf, &bar),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = warmed {
                        bar.println(format!("warmup: {}: {e}", path.display()));
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "warmup: {} files, {:.1} MiB in {secs:.1}s ({:.0} MiB/s)",
        files.len(),
        total as f64 / 1048576.0,
        total as f64 / 1048576.0 / secs.max(1e-9)
    );
    let away = turned_away.load(Ordering::Relaxed);
    if away > 0 {
        println!(
            "warmup: {:.1} MiB were fetched but not kept: the NVMe tier is paused for space \
             (see `meridian cache`), or full of blocks read as often as warmed ones count",
            away as f64 / 1048576.0
        );
    }
    match errors.load(Ordering::Relaxed) {
        0 => Ok(()),
        n => bail!("{n} files could not be read"),
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct CacheArgs {
    #[command(flatten)]
    pub store: StoreFlags,
    /// Remove every block from the disk cache (a running mount refetches as needed)
    #[arg(long)]
    pub evict: bool,
}

fn walk(dir: &Path) -> (u64, u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    rd.flatten().fold((0, 0), |(n, b), e| match e.file_type() {
        Ok(t) if t.is_dir() => {
            let (n2, b2) = walk(&e.path());
            (n + n2, b + b2)
        }
        // A block's piece-value file (.cv) counts toward the bytes, not the blocks.
        Ok(_) if e.file_name().to_string_lossy().ends_with(".cv") => {
            (n, b + e.metadata().map_or(0, |m| m.len()))
        }
        Ok(_) => (n + 1, b + e.metadata().map_or(0, |m| m.len())),
        Err(_) => (n, b),
    })
}

/// Shows the disk cache's usage, or empties it.
pub fn cache(args: CacheArgs) -> Result<()> {
    let cfg = args.store.resolve()?;
    let cc = cfg.cache_config()?;
    let Some(dir) = cc.disk_dir else {
        println!(
            "cache: no disk cache (blocks are local, or [cache] disk = false); memory {} bytes",
            cc.memory_bytes
        );
        return Ok(());
    };
    let (n, bytes) = walk(&dir);
    if args.evict {
        for e in std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .flatten()
        {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
        // Passthrough copies are made from cached blocks: they go too.
        let copies = cfg.data_dir()?.join("passthrough");
        if copies.exists() {
            std::fs::remove_dir_all(&copies)
                .with_context(|| format!("removing {}", copies.display()))?;
        }
        println!(
            "cache: evicted {n} blocks ({:.1} MiB) from {}, and the passthrough copies",
            bytes as f64 / 1048576.0,
            dir.display()
        );
    } else {
        println!(
            "cache: {} holds {n} blocks, {:.1} MiB of {:.1} MiB ({:.1}%); memory tier {:.0} MiB",
            dir.display(),
            bytes as f64 / 1048576.0,
            cc.disk_bytes as f64 / 1048576.0,
            100.0 * bytes as f64 / cc.disk_bytes.max(1) as f64,
            cc.memory_bytes as f64 / 1048576.0
        );
        if let Some(free) = meridian_fs::cache::free_ratio(&dir)
            && free < cc.disk_min_free_ratio
        {
            println!(
                "cache: paused: the filesystem holding it has {:.1}% free, below \
                 cache.disk_min_free_ratio ({:.1}%): no new blocks are cached until space is freed",
                free * 100.0,
                cc.disk_min_free_ratio * 100.0
            );
        }
    }
    Ok(())
}

#[derive(Clone, Debug, clap::Args)]
pub struct BenchS3Args {
    #[command(flatten)]
    pub store: StoreFlags,
    /// Total bytes to PUT and GET, in MiB
    #[arg(long, default_value_t = 1024)]
    pub mib: u64,
    /// Requests in flight (Meridian's default upload and fetch concurrency is 8)
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Also GET once after dropping this machine's page cache (root; for a bucket server
    /// on this machine): the rate a cold read is to be compared with, the objects then
    /// coming from the server's disk as they do after benches/fio's cache drop
    #[arg(long)]
    pub drop_caches: bool,
}

/// PUTs and GETs 4 MiB objects with `parallel` requests in flight; prints MiB/s.
pub fn bench_s3(args: BenchS3Args) -> Result<()> {
    let cfg = args.store.resolve()?;
    if cfg.s3.is_none() {
        bail!("bench s3 needs a bucket: pass --bucket (and --endpoint for Garage or MinIO)");
    }
    let store = open::blocks(&cfg)?;
    let count = (args.mib / 4).max(1) as usize;
    let blocks: Vec<(meridian_proto::BlockId, Bytes)> = (0..count)
        .map(|i| {
            let mut data = vec![0u8; 4 << 20];
            let seed =
                (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ std::process::id() as u64;
            for (k, chunk) in data.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(
                    &(seed ^ k as u64)
                        .wrapping_mul(0x2545_f491_4f6c_dd1d)
                        .to_le_bytes(),
                );
            }
            let data = Bytes::from(data);
            (meridian_fs::blocks::block_id(&data), data)
        })
        .collect();
    let run = |f: &(dyn Fn(usize) -> Result<()> + Sync)| -> Result<f64> {
        let next = AtomicUsize::new(0);
        let start = Instant::now();
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..args.parallel.max(1))
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= count {
                                return Ok(());
                            }
                            f(i)?;
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().expect("bench worker panicked"))
        })?;
        Ok((count * 4) as f64 / start.elapsed().as_secs_f64())
    };
    let put = run(&|i| {
        store
            .put(&blocks[i].0, blocks[i].1.clone())
            .map_err(|e| anyhow!("{e}"))
    })?;
    let get_all = || {
        run(&|i| {
            store
                .get(&blocks[i].0)
                .map(drop)
                .map_err(|e| anyhow!("{e}"))
        })
    };
    let cold = match args.drop_caches {
        true => {
            drop_page_cache()?;
            Some(get_all()?)
        }
        false => None,
    };
    let get = get_all()?;
    for (id, _) in &blocks {
        store.delete(id).map_err(|e| anyhow!("{e}"))?;
    }
    let cold = cold.map_or(String::new(), |c| {
        format!(", GET {c:.1} MiB/s from the server's disk (page cache dropped first)")
    });
    println!(
        "s3 {}: PUT {put:.1} MiB/s, GET {get:.1} MiB/s{cold} ({count} x 4 MiB, {} in flight)",
        store.describe(),
        args.parallel
    );
    Ok(())
}

/// Writes dirty pages out and empties the page cache (root only).
fn drop_page_cache() -> Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").map_err(|e| {
        anyhow!(
            "--drop-caches: writing /proc/sys/vm/drop_caches: {e} (run as root, or leave it out)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ranges_expand_with_padding() {
        let v = expand_frames("/m/shot.[0998-1001].exr").unwrap();
        let names: Vec<String> = v.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "/m/shot.0998.exr",
                "/m/shot.0999.exr",
                "/m/shot.1000.exr",
                "/m/shot.1001.exr"
            ]
        );
        assert_eq!(
            expand_frames("/m/plain.exr").unwrap(),
            vec![PathBuf::from("/m/plain.exr")]
        );
        assert!(expand_frames("/m/x.[9-1].exr").is_err());
    }
}
