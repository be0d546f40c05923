//! `kill -9` of the mount process during a loop of writes: after a remount the namespace is
//! consistent and every file whose close returned reads back exactly.

mod common;
use common::*;
use std::time::Duration;

fn crash_during_writes(backend: Backend) {
    let mut m = Mount::new(backend);
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    // Each iteration writes a file of a varying size (inline, one chunk, several chunks),
    // and only after `cp` has closed it records its checksum on local disk.
    let script = format!(
        r#"
        i=0
        while true; do
          i=$((i+1))
          case $((i % 4)) in 0) n=900;; 1) n=150000;; 2) n=5000000;; 3) n=9437185;; esac
          head -c $n /dev/urandom > {t}/src.$i
          mkdir -p {m}/d$((i % 3))
          cp {t}/src.$i {m}/d$((i % 3))/f.$i || exit 0
          echo "d$((i % 3))/f.$i $(md5sum < {t}/src.$i | cut -d' ' -f1)" >> {ledger}
          rm {t}/src.$i
        done
        "#,
        t = tmp.path().display(),
        m = m.dir.display(),
        ledger = ledger.display()
    );
    let mut writer = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // The mount dies first; the writer is stopped before the stale mount is cleared, or
    // its next `cp` would land in the bare mountpoint directory (and be hidden by the
    // remount) and be counted as a closed file (seen once in CI under load).
    unsafe { libc::kill(m.pid().unwrap() as i32, libc::SIGKILL) };
    let _ = writer.kill();
    let _ = writer.wait();
    m.kill9();

    m.start();
    let ledger = std::fs::read_to_string(&ledger).unwrap();
    let entries: Vec<(&str, &str)> = ledger.lines().filter_map(|l| l.split_once(' ')).collect();
    assert!(
        entries.len() >= 3,
        "the writer made too little progress to test anything: {entries:?}"
    );
    for (name, sum) in &entries {
        let got = sh(&format!(
            "md5sum < '{}' | cut -d' ' -f1",
            m.path(name).display()
        ));
        assert_eq!(
            got.trim(),
            *sum,
            "{name} does not read back as written before the crash"
        );
    }
    // The namespace is consistent: every entry can be listed and stat'ed, and the tree can
    // be changed and removed.
    sh(&format!(
        "cd '{}' && find . -exec stat -c '%n %s' {{}} + > /dev/null && rm -rf d0 d1 d2 && test -z \"$(ls -A)\"",
        m.dir.display()
    ));
    println!(
        "crash test ({backend:?}): {} files closed before the crash, all intact",
        entries.len()
    );
}

#[test]
fn kill9_during_writes_with_local_blocks() {
    crash_during_writes(Backend::LocalDir);
}

#[test]
fn kill9_during_writes_with_garage() {
    crash_during_writes(Backend::Garage);
}

/// Name changes are durable once a directory is fsynced (or within the sync interval, or
/// at the next close of a written file), even if the mount is killed right after.
#[test]
fn fsynced_directories_survive_kill9() {
    let mut m = Mount::new(Backend::LocalDir);
    let d = m.path("published");
    sh(&format!(
        "mkdir -p '{d}/SH010' && mv '{d}/SH010' '{d}/SH020' && touch '{d}/SH020/empty.clip' && \
         python3 -c \"import os; fd=os.open('{d}', os.O_RDONLY); os.fsync(fd); fd2=os.open('{d}/SH020', os.O_RDONLY); os.fsync(fd2)\"",
        d = d.display()
    ));
    m.kill9();
    m.start();
    assert!(m.path("published/SH020/empty.clip").exists());
    assert!(!m.path("published/SH010").exists());
}

/// Write-back mode: close returns once blocks are staged locally; a kill -9 right after
/// loses nothing — the next mount serves the file and finishes the uploads, after which the
/// bucket alone has the data.
#[test]
fn write_back_uploads_resume_after_kill9() {
    let mut m = Mount::with_args(Backend::Garage, &["--write-back"]);
    let data: Vec<u8> = (0..10u64 << 20).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(m.path("render.exr"), &data).unwrap();
    m.kill9();
    m.start();
    assert!(
        std::fs::read(m.path("render.exr")).unwrap() == data,
        "staged blocks are read back"
    );
    let staging = m.data_dir.join("staging/blocks");
    let staged = || {
        sh(&format!("find '{}' -type f | wc -l", staging.display()))
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while staged() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "uploads did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Now without write-back and with an empty disk cache: the bucket has everything.
    m.unmount();
    std::fs::remove_dir_all(m.data_dir.join("cache")).unwrap();
    m.extra.clear();
    m.start();
    assert!(
        std::fs::read(m.path("render.exr")).unwrap() == data,
        "the bucket holds the uploaded blocks"
    );
}

/// An unmount closes the namespace's file cleanly, so the next open takes it as it is; a
/// mount that ended without closing it (it used to, at every unmount) makes the next one
/// read and check every page of it first — seconds for a namespace of a few GiB, a
/// gigabyte of memory held after. A crash still has to be checked, and is.
#[test]
fn an_unmount_closes_the_namespace_cleanly_and_a_crash_is_checked() {
    use meridian_metaserver::RedbStore;
    let mut m = Mount::new(Backend::LocalDir);
    std::fs::write(m.path("a"), b"x").unwrap();
    m.unmount();
    let file = m.data_dir.join("namespace.redb");
    let store = RedbStore::open(&file).unwrap();
    assert!(
        !store.was_repaired(),
        "an unmounted namespace needs no check"
    );
    drop(store);
    m.start();
    std::fs::write(m.path("b"), b"y").unwrap();
    m.kill9();
    let store = RedbStore::open(&file).unwrap();
    assert!(
        store.was_repaired(),
        "a crashed mount's namespace is checked"
    );
    drop(store);
    m.start();
    assert_eq!(std::fs::read(m.path("a")).unwrap(), b"x");
    m.unmount();
}
