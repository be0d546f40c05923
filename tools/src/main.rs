//! `meridian`: mount the namespace, unmount it, collect garbage, manage objectives.
//!
//! Layout: `config` (TOML file and flags), `open` (namespace and block store with clear
//! errors), `mount` (the mount command, background mode, signals), `admin` (umount, gc), `data` (warmup, cache, bench), `objective` (objectives,
//! keywords, labels).
//! Errors end the process with one line on stderr and exit status 1.

mod admin;
mod config;
mod data;
mod fstab;
mod metrics;
mod mount;
mod objective;
mod open;
mod site;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "Meridian: a global-namespace filesystem for VFX and finishing studios"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount the namespace at MOUNTPOINT (embedded metaserver; blocks in DATA_DIR or a bucket)
    Mount(mount::MountArgs),
    /// Run a site metaserver over QUIC (foreground); add-client, status
    Metaserver(site::SiteArgs),
    /// Unmount MOUNTPOINT, committing open files first
    Umount(admin::UmountArgs),
    /// Delete blocks that no file references (run while the namespace is not mounted)
    Gc(admin::GcArgs),
    /// Read files, directories or frame ranges (shot.[1001-1100].exr) into the caches
    Warmup(data::WarmupArgs),
    /// Show the disk cache's usage, or empty it with --evict
    Cache(data::CacheArgs),
    /// Placement objectives: add, list, remove, apply, detach, explain, check
    #[command(subcommand)]
    Objective(objective::ObjectiveCmd),
    /// Keywords of files and directories (HAS_KEYWORD in objectives)
    #[command(subcommand)]
    Keyword(objective::TagCmd),
    /// Labels of files and directories (HAS_LABEL in objectives)
    #[command(subcommand)]
    Label(objective::TagCmd),
    /// Measure things; `meridian bench s3` gives the bucket's own PUT and GET rates
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// PUT and GET 4 MiB objects in parallel: the ceiling for cold reads and durable writes
    S3(data::BenchS3Args),
}

fn main() {
    // Chunk buffers are 4 MiB: by default glibc maps each from the kernel and unmaps it on
    // free, so every chunk paid for page faults and zeroing (an eighth of a core at
    // 250 MiB/s). Kept in the heap, freed buffers are reused.
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "mount.meridian")
    {
        fstab::main();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
                .unwrap_or_else(|_| "info,fuser=error".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Mount(a) => mount::run(a),
        Cmd::Umount(a) => admin::umount(a),
        Cmd::Metaserver(a) => site::run(a),
        Cmd::Gc(a) => admin::gc(a),
        Cmd::Warmup(a) => data::warmup(a),
        Cmd::Cache(a) => data::cache(a),
        Cmd::Bench(BenchCmd::S3(a)) => data::bench_s3(a),
        Cmd::Objective(c) => objective::run(c),
        Cmd::Keyword(c) => objective::tags(c, objective::KEYWORDS),
        Cmd::Label(c) => objective::tags(c, objective::LABELS),
    };
    if let Err(e) = result {
        eprintln!("meridian: {e:#}");
        std::process::exit(1);
    }
}
