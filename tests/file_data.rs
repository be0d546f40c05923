//! File data through the real mount, checked against the same operations on local disk:
//! random writes across chunk boundaries, sparse files, truncate up and down, O_APPEND,
//! O_TRUNC, fallocate, unlinked-but-open files, locks, and garbage collection.

mod common;
use common::*;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// A tiny deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn read_all(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

#[test]
fn random_writes_truncates_and_holes_match_local_disk() {
    random_writes_match_local_disk(Mount::new(Backend::Garage));
}

/// The same with an open file allowed to buffer only 1 MiB: chunks written at scattered
/// places are stored (merged with their committed bytes) between the writes and reads.
#[test]
fn random_writes_match_local_disk_when_uploading_early() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("meridian.toml");
    std::fs::write(&config, "[mount]\nmax_dirty_bytes = 1048576\n").unwrap();
    let config = config.display().to_string();
    random_writes_match_local_disk(Mount::with_args(Backend::Garage, &["--config", &config]));
}

fn random_writes_match_local_disk(mut m: Mount) {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("ref");
    let target = m.path("file");
    let open = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .unwrap()
    };
    let (a, b) = (open(&reference), open(&target));
    let mut rng = Rng(0x5eed);
    for step in 0..300 {
        match rng.below(10) {
            0 => {
                let len = rng.below(14 * MIB);
                a.set_len(len).unwrap();
                b.set_len(len).unwrap();
            }
            1 => {
                a.sync_all().unwrap();
                b.sync_all().unwrap();
            }
            _ => {
                let off = rng.below(13 * MIB);
                let max = if rng.below(4) == 0 { 5 * MIB } else { 70_000 };
                let len = 1 + rng.below(max) as usize;
                let byte = (step % 251) as u8;
                let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                a.write_all_at(&data, off).unwrap();
                b.write_all_at(&data, off).unwrap();
            }
        }
        if step % 25 == 0 {
            assert_eq!(
                a.metadata().unwrap().len(),
                b.metadata().unwrap().len(),
                "size after step {step}"
            );
            let off = rng.below(a.metadata().unwrap().len().max(1));
            let mut x = vec![0u8; 300_000];
            let mut y = vec![0u8; 300_000];
            let nx = a.read_at(&mut x, off).unwrap();
            let ny = b.read_at(&mut y, off).unwrap();
            assert_eq!(
                (nx, &x[..nx]),
                (ny, &y[..ny]),
                "read at {off} after step {step}"
            );
        }
    }
    drop((a, b));
    assert!(
        read_all(&reference) == read_all(&target),
        "contents differ after close"
    );
    m.remount();
    assert!(
        read_all(&reference) == read_all(&target),
        "contents differ after remount"
    );
}

#[test]
fn append_trunc_fallocate_and_sparse() {
    let m = Mount::new(Backend::LocalDir);
    let p = m.path("log");
    for line in ["one\n", "two\n", "three\n"] {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&p)
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\nthree\n");
    // Two handles in O_APPEND interleave without overwriting each other.
    let mut h1 = OpenOptions::new().append(true).open(&p).unwrap();
    let mut h2 = OpenOptions::new().append(true).open(&p).unwrap();
    h1.write_all(b"A\n").unwrap();
    h2.write_all(b"B\n").unwrap();
    drop((h1, h2));
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "one\ntwo\nthree\nA\nB\n"
    );
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap()
        .write_all(b"new")
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"new");

    sh(&format!(
        "fallocate -l 10485760 '{}'",
        m.path("prealloc").display()
    ));
    let pre = std::fs::read(m.path("prealloc")).unwrap();
    assert_eq!(pre.len(), 10 * MIB as usize);
    assert!(pre.iter().all(|&b| b == 0));

    let sparse = m.path("sparse");
    let mut f = File::create(&sparse).unwrap();
    f.seek(SeekFrom::Start(20 * MIB + 7)).unwrap();
    f.write_all(b"end").unwrap();
    drop(f);
    let data = std::fs::read(&sparse).unwrap();
    assert_eq!(data.len() as u64, 20 * MIB + 10);
    assert!(data[..(20 * MIB + 7) as usize].iter().all(|&b| b == 0));
    assert_eq!(&data[(20 * MIB + 7) as usize..], b"end");
}

#[test]
fn unlinked_open_files_live_until_closed() {
    let m = Mount::new(Backend::LocalDir);
    let p = m.path("tmpfile");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(&vec![7u8; 5 * MIB as usize]).unwrap();
    std::fs::remove_file(&p).unwrap();
    assert!(!p.exists());
    f.write_all(b"more").unwrap();
    f.sync_all().unwrap();
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back.len() as u64, 5 * MIB + 4);
    assert_eq!(f.metadata().unwrap().len(), 5 * MIB + 4);
}

#[test]
fn locks_are_enforced_within_a_mount() {
    let m = Mount::new(Backend::LocalDir);
    let p = m.path("locked");
    std::fs::write(&p, b"x").unwrap();
    let p = p.display();
    // The holder says when it holds its lock and keeps it until the other process tried
    // (at most 30 s): no guess of how long starting a process takes.
    let wait_for = |f: &str| format!("timeout 30 sh -c 'until [ -e {f} ]; do sleep 0.05; done'");
    // flock: a second exclusive lock is refused while the first is held.
    let (held, done) = (format!("{p}.held1"), format!("{p}.done1"));
    sh(&format!(
        "flock -x '{p}' -c \"touch '{held}'; {}\" & {}; if flock -n -x '{p}' true; then touch '{done}'; exit 1; fi; touch '{done}'; wait",
        wait_for(&done),
        wait_for(&held)
    ));
    // fcntl: a second process cannot take a conflicting POSIX lock.
    let (held, done) = (format!("{p}.held2"), format!("{p}.done2"));
    sh(&format!(
        "python3 -c \"import fcntl,os,time; f=open('{p}','r+'); fcntl.lockf(f, fcntl.LOCK_EX); open('{held}','w').close()\n\
         for _ in range(600):\n if os.path.exists('{done}'): break\n time.sleep(0.05)\" & {}; \
         python3 -c \"import fcntl,sys; f=open('{p}','r+');\ntry:\n fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB); sys.exit(1)\nexcept OSError: pass\"; \
         r=$?; touch '{done}'; wait; exit $r",
        wait_for(&held)
    ));
}

#[test]
fn gc_removes_only_unreferenced_blocks() {
    let mut m = Mount::new(Backend::Garage);
    let keep: Vec<u8> = (0..9 * MIB).map(|i| (i % 253) as u8).collect();
    std::fs::write(m.path("keep"), &keep).unwrap();
    std::fs::write(m.path("drop"), vec![3u8; 6 * MIB as usize]).unwrap();
    std::fs::remove_file(m.path("drop")).unwrap();
    m.unmount();
    let mut gc_args = vec![
        "gc".to_string(),
        "--data-dir".into(),
        m.data_dir.display().to_string(),
        "--grace-secs".into(),
        "0".into(),
    ];
    gc_args.extend(m.s3_flags());
    let args: Vec<&str> = gc_args.iter().map(String::as_str).collect();
    let out = run(meridian(), &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let removed: u64 = text
        .split("removed ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        removed >= 2,
        "the deleted file's two blocks should go: {text}"
    );
    let again = String::from_utf8_lossy(&run(meridian(), &args).stdout).into_owned();
    assert!(
        again.contains("removed 0 "),
        "a second gc finds nothing: {again}"
    );
    m.start();
    assert!(
        std::fs::read(m.path("keep")).unwrap() == keep,
        "gc must never remove a live file's blocks"
    );
}

#[test]
fn corrupted_disk_cache_blocks_are_refetched_not_served() {
    // The NVMe tier must take blocks however full the host's disk is.
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("c.toml");
    std::fs::write(&conf, "[cache]\ndisk_min_free_ratio = 0.0\n").unwrap();
    let mut m = Mount::with_args(Backend::Garage, &["-c", conf.to_str().unwrap()]);
    let data: Vec<u8> = (0..9 * MIB).map(|i| (i * 7 % 255) as u8).collect();
    std::fs::write(m.path("frame.exr"), &data).unwrap();
    // A write fills the disk tier only when its writer keeps up (never slowing the write);
    // a read after a remount fills it for sure.
    m.remount();
    let _ = std::fs::remove_dir_all(m.data_dir.join("passthrough"));
    assert!(std::fs::read(m.path("frame.exr")).unwrap() == data);
    m.unmount();
    // Flip a byte in every cached block (the NVMe tier lives in DATA_DIR/cache).
    let cache = m.data_dir.join("cache");
    let flipped = sh(&format!(
        "n=0; for f in $(find '{}' -type f ! -name '*.cv'); do printf '\\xff' | dd of=\"$f\" bs=1 seek=70000 conv=notrunc status=none; n=$((n+1)); done; echo $n",
        cache.display()
    ));
    assert!(
        flipped.trim().parse::<u32>().unwrap() >= 3,
        "the disk tier should hold the file's blocks: {flipped}"
    );
    // Reads must go through the mount, not a passthrough copy written at close.
    let _ = std::fs::remove_dir_all(m.data_dir.join("passthrough"));
    m.start();
    // A small read is served piecewise from the disk tier: the corrupted piece is caught.
    let f = File::open(m.path("frame.exr")).unwrap();
    let mut small = vec![0u8; 4096];
    let at = 4 * MIB + 70000 - 100;
    f.read_exact_at(&mut small, at).unwrap();
    assert_eq!(&small[..], &data[at as usize..][..4096]);
    assert!(
        std::fs::read(m.path("frame.exr")).unwrap() == data,
        "whole-file reads refetch corrupted blocks"
    );
}

/// `meridian warmup` of a frame range lands in a full NVMe tier of blocks read often,
/// which turns a one-off pass away (TinyLFU): the mount warms each file itself, ranking
/// its blocks with the hottest, and the tier stays within its capacity.
#[test]
fn warmup_lands_in_a_full_disk_tier() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("c.toml");
    let block = 4 * MIB + 64 * 32; // a block and its piece values
    std::fs::write(
        &conf,
        format!(
            "[mount]\npassthrough = false\n[cache]\ndisk_min_free_ratio = 0.0\n\
             memory_bytes = 1\ndisk_bytes = {}\n",
            6 * block
        ),
    )
    .unwrap();
    let mut m = Mount::with_args(Backend::Garage, &["-c", conf.to_str().unwrap()]);
    let bytes = |seed: u64, len: u64| -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 31 + seed * 7919) % 251) as u8)
            .collect()
    };
    std::fs::write(m.path("hot.exr"), bytes(1, 16 * MIB)).unwrap();
    for f in [1001, 1002] {
        std::fs::write(m.path(&format!("shot.{f}.exr")), bytes(f, 8 * MIB)).unwrap();
    }
    m.unmount();
    let cache = m.data_dir.join("cache");
    let blocks = || -> std::collections::BTreeSet<String> {
        sh(&format!(
            "find '{}' -type f ! -name '*.cv' -printf '%f\\n'",
            cache.display()
        ))
        .lines()
        .map(str::to_string)
        .collect()
    };
    std::fs::remove_dir_all(&cache).unwrap();
    m.start();
    // The hot file's four blocks, read twice (its pages dropped between reads).
    let hot = m.path("hot.exr");
    sh(&format!(
        "python3 -c \"import os\nfor _ in range(2):\n  f = os.open('{}', os.O_RDONLY)\n  \
         while os.read(f, 1 << 20): pass\n  os.posix_fadvise(f, 0, 0, os.POSIX_FADV_DONTNEED)\n  \
         os.close(f)\"",
        hot.display()
    ));
    let before = blocks();
    assert_eq!(before.len(), 4, "the hot file's blocks: {before:?}");
    let range = m.path("shot.[1001-1002].exr");
    let out = run(meridian(), &["warmup", range.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("warmup: 2 files, 16.0 MiB") && !said.contains("not kept"),
        "{said}"
    );
    let after = blocks();
    let warmed = after.difference(&before).count();
    assert_eq!(
        warmed, 4,
        "the frames' four blocks, in a tier full of hotter ones"
    );
    assert!(after.len() <= 6, "over capacity: {} blocks", after.len());
    // A warmed file reads back whole (from the tier). The attribute is not stored.
    assert!(std::fs::read(m.path("shot.1002.exr")).unwrap() == bytes(1002, 8 * MIB));
    let set = sh(&format!(
        "python3 -c \"import os\ntry: os.setxattr('{0}', 'user.meridian.warmup', b'1')\n\
         except OSError as e: print(e.strerror)\nprint(os.listxattr('{0}'))\"",
        m.path("shot.1002.exr").display()
    ));
    assert_eq!(set.trim(), "Invalid argument\n[]");
}

#[test]
fn prometheus_metrics_count_reads_and_writes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let m = Mount::with_args(Backend::Garage, &["--metrics", &addr]);
    std::fs::write(m.path("f"), vec![1u8; 5 * MIB as usize]).unwrap();
    let scrape = || {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    };
    let text = scrape();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let value = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.split(' ').nth(1))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(value("meridian_store_puts_total") >= 2, "{text}");
    assert!(value("meridian_store_put_bytes_total") >= 5 * MIB, "{text}");
}

/// A mount with metrics on a free port, and a function summing its cache hits (reads that
/// reached the mount).
fn mount_with_hits() -> (Mount, impl Fn() -> u64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let m = Mount::with_args(Backend::Garage, &["--metrics", &addr]);
    let hits = move || {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s.lines()
            .filter(|l| {
                l.starts_with("meridian_cache_memory_hits_total")
                    || l.starts_with("meridian_cache_disk_hits_total")
            })
            .map(|l| l.split(' ').nth(1).unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    (m, hits)
}

/// The passthrough copies in a mount's data directory (names not starting with '.').
fn copies(m: &Mount) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(m.data_dir.join("passthrough"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn files_written_here_get_a_passthrough_copy_at_close() {
    let (mut m, hits) = mount_with_hits();
    const MIB: usize = 1 << 20;
    // Streamed, then overwritten in the middle, extended past a hole and cut back:
    // every way a writer shapes a file must be in the copy.
    let mut data: Vec<u8> = (0..9 * MIB).map(|i| (i * 7 % 253) as u8).collect();
    {
        let mut f = File::create(m.path("render.exr")).unwrap();
        f.write_all(&data).unwrap();
        f.write_all_at(b"patched", 5 * (MIB as u64) + 3).unwrap();
        data[5 * MIB + 3..5 * MIB + 10].copy_from_slice(b"patched");
        f.set_len(14 * (MIB as u64)).unwrap();
        f.write_all_at(b"tail", 13 * (MIB as u64)).unwrap();
        f.set_len(13 * (MIB as u64) + 2).unwrap();
        data.resize(13 * MIB + 2, 0);
        data[13 * MIB..].copy_from_slice(b"ta");
    }
    // A file that had data before this mount opened it is not copied through.
    std::fs::write(m.path("small.txt"), b"x").unwrap();
    m.remount();
    OpenOptions::new()
        .append(true)
        .open(m.path("small.txt"))
        .unwrap()
        .write_all(&vec![1u8; 6 * MIB])
        .unwrap();
    m.remount();
    let found = copies(&m);
    assert_eq!(found.len(), 1, "one copy, of render.exr: {found:?}");
    assert!(
        std::fs::read(&found[0]).unwrap() == data,
        "the copy is the file"
    );
    sh("sync && echo 3 > /proc/sys/vm/drop_caches");
    let before = hits();
    assert!(std::fs::read(m.path("render.exr")).unwrap() == data);
    assert_eq!(
        hits(),
        before,
        "the first read after the write is passthrough"
    );

    // After a crash the copies are not trusted (their bytes may not have reached the disk).
    m.kill9();
    m.start();
    assert!(copies(&m).is_empty(), "copies survived an unclean stop");
    let again = std::fs::read(m.path("render.exr")).unwrap_or_else(|e| panic!("{e}: {}", m.log()));
    assert!(again == data);
}

#[test]
fn passthrough_serves_fully_cached_files_and_steps_aside_for_writers() {
    let (mut m, hits) = mount_with_hits();
    let data: Vec<u8> = (0..20 * MIB).map(|i| (i * 3 % 251) as u8).collect();
    std::fs::write(m.path("plate.dpx"), &data).unwrap();
    m.unmount();
    // No copy written through (as for a file written on another machine): one is assembled
    // from the NVMe tier when the file is opened again after a read through the mount.
    let _ = std::fs::remove_dir_all(m.data_dir.join("passthrough"));
    m.start();
    assert!(
        std::fs::read(m.path("plate.dpx")).unwrap() == data,
        "first read, through the mount"
    );
    // A file read once is not copied (nor is a copy begun beside its first read).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let begun: Vec<_> = std::fs::read_dir(m.data_dir.join("passthrough"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        begun.iter().all(|n| n == ".clean"),
        "a copy was assembled after one read: {begun:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while copies(&m).is_empty() {
        // A read-only open of a file read here before, its blocks all local, starts an
        // assembly.
        drop(File::open(m.path("plate.dpx")).unwrap());
        assert!(
            std::time::Instant::now() < deadline,
            "no passthrough copy was assembled"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sh("sync && echo 3 > /proc/sys/vm/drop_caches");
    let before = hits();
    assert!(
        std::fs::read(m.path("plate.dpx")).unwrap() == data,
        "passthrough read"
    );
    assert_eq!(
        hits(),
        before,
        "a passthrough read does not reach the mount"
    );

    // Readers open at once share the copy; a writer meanwhile is refused (the kernel cannot
    // take an inode out of passthrough while it is open), and welcome once they close.
    let (r1, r2) = (
        File::open(m.path("plate.dpx")).unwrap(),
        File::open(m.path("plate.dpx")).unwrap(),
    );
    let mut a = vec![0u8; 4096];
    r1.read_exact_at(&mut a, 7 * MIB).unwrap();
    r2.read_exact_at(&mut a, 9 * MIB).unwrap();
    assert_eq!(&a[..], &data[9 * MIB as usize..][..4096]);
    let busy = OpenOptions::new().write(true).open(m.path("plate.dpx"));
    assert_eq!(busy.unwrap_err().raw_os_error(), Some(libc::ETXTBSY));
    // An O_DIRECT reader meanwhile joins the copy (the kernel allows no mix) ...
    let mut page = Page([0; 4096]);
    direct_read(&m.path("plate.dpx"), &mut page, 11 * MIB);
    assert_eq!(&page.0[..], &data[11 * MIB as usize..][..4096]);
    assert_eq!(hits(), before, "all three readers were passthrough");
    drop((r1, r2));
    // ... and alone it is served by the mount, from the NVMe tier (not by the device).
    direct_read(&m.path("plate.dpx"), &mut page, 13 * MIB + 4096);
    assert_eq!(&page.0[..], &data[(13 * MIB + 4096) as usize..][..4096]);
    assert!(
        hits() > before,
        "an O_DIRECT open alone reads through the mount"
    );

    // A writer in this mount: readers must see its writes, so no passthrough for them.
    let w = OpenOptions::new()
        .write(true)
        .open(m.path("plate.dpx"))
        .unwrap();
    w.write_all_at(b"NEW", 1000).unwrap();
    let mut buf = [0u8; 3];
    File::open(m.path("plate.dpx"))
        .unwrap()
        .read_exact_at(&mut buf, 1000)
        .unwrap();
    assert_eq!(&buf, b"NEW");
}

/// A page-aligned buffer, as direct I/O wants.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Reads one page of `path` at `offset` through an O_DIRECT open.
fn direct_read(path: &Path, page: &mut Page, offset: u64) {
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    f.read_exact_at(&mut page.0, offset).unwrap();
}

/// Pages of `path` in the page cache, and its pages in all (`mincore` over a mapping).
fn resident_pages(path: &Path) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: a shared read-only mapping of an open file, unmapped before returning;
    // `vec` has one byte per page of the mapping, as mincore requires.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
        libc::munmap(p, len);
    }
    (vec.iter().filter(|b| *b & 1 == 1).count(), vec.len())
}

#[test]
fn a_passthrough_open_in_playback_reads_its_frame_and_the_next_into_the_page_cache() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let m = Mount::new(Backend::Garage);
    let name = |n: u32| format!("shot.{n:04}.exr");
    for n in 0..=3 {
        std::fs::write(m.path(&name(n)), vec![n as u8 + 1; 6 * MIB as usize]).unwrap();
    }
    // The copies: written through (named at each file's release, which the kernel sends
    // after close returns), or — the tee gives up when its writer falls behind — assembled
    // after a read through the mount. Then evicted from the page cache.
    sh("sync");
    let copy = |n: u32| -> std::path::PathBuf {
        let ino = std::fs::metadata(m.path(&name(n))).unwrap().ino();
        let prefix = format!("{ino}-");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let found = copies(&m).into_iter().find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&prefix)
            });
            if let Some(p) = found {
                return p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no passthrough copy of frame {n}: {:?}",
                copies(&m)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
            // A read-only open of a frame read here before, its blocks all local, starts an
            // assembly.
            assert_eq!(
                std::fs::read(m.path(&name(n))).unwrap().len(),
                6 * MIB as usize
            );
        }
    };
    // Written back first (a copy just assembled may still be dirty), then dropped.
    let evict = || {
        for n in 0..=3 {
            let f = File::open(copy(n)).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                f.sync_all().unwrap();
                // SAFETY: a plain advice call on an open descriptor.
                let rc =
                    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                assert_eq!(rc, 0);
                if resident_pages(&copy(n)).0 == 0 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "frame {n} stays in the page cache"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    };
    // A scan reading each frame's header reads no more than the kernel's own read-ahead.
    evict();
    for n in 0..=3 {
        let mut header = [0u8; 4096];
        File::open(m.path(&name(n)))
            .unwrap()
            .read_exact(&mut header)
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    for n in 0..=3 {
        let (cached, all) = resident_pages(&copy(n));
        assert!(
            cached * 2 < all,
            "a header scan read frame {n}: {cached} of {all} pages"
        );
    }
    // Playback: frame 0 read through; opening frame 1 (nothing read yet) brings it and
    // frame 2 in, and stops there. An open is passthrough only once the kernel released
    // the file's earlier handles (it sends releases after close returns, later under
    // load), so each step is tried until it is.
    evict();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while resident_pages(&copy(0)).0 * 10 < resident_pages(&copy(0)).1 * 9 {
        assert!(
            std::time::Instant::now() < deadline,
            "frame 0 never read through its copy"
        );
        assert!(std::fs::read(m.path(&name(0))).unwrap().len() == 6 * MIB as usize);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let read_ahead = || {
        let (one, two) = (resident_pages(&copy(1)), resident_pages(&copy(2)));
        (one.0 == one.1 && two.0 == two.1, (one, two))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let reader = File::open(m.path(&name(1))).unwrap();
        let tried = std::time::Instant::now();
        while !read_ahead().0 && tried.elapsed() < std::time::Duration::from_secs(2) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(reader);
        if read_ahead().0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "frames 1 and 2 not read ahead: {:?} pages resident",
            read_ahead().1
        );
    }
    assert_eq!(
        resident_pages(&copy(3)).0,
        0,
        "only one frame ahead is read"
    );
}

/// The kernel's read-ahead of the mount (its device's `read_ahead_kb`, which the kernel
/// starts at 128 KiB for every FUSE mount) is what `--read-ahead-kb` says: 1 MiB by
/// default; 0 leaves the kernel's own.
#[test]
fn the_mount_sets_the_kernel_read_ahead() {
    let read_ahead = |m: &Mount| {
        let dev = mount_device(&m.dir).expect("mounted");
        std::fs::read_to_string(format!("/sys/class/bdi/{dev}/read_ahead_kb"))
            .unwrap()
            .trim()
            .to_string()
    };
    let m = Mount::new(Backend::LocalDir);
    assert_eq!(read_ahead(&m), "1024");
    let m = Mount::with_args(Backend::LocalDir, &["--read-ahead-kb", "512"]);
    assert_eq!(read_ahead(&m), "512");
    let m = Mount::with_args(Backend::LocalDir, &["--read-ahead-kb", "0"]);
    assert_eq!(read_ahead(&m), "128", "the kernel's own");
}
