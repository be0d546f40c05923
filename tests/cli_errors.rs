//! Misconfiguration gives one clear line naming the problem and the fix, and exit status 1:
//! never a panic, never a hang.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// Runs `meridian ARGS`, expecting failure with exactly one line that contains every `needle`.
fn fails_with(args: &[&str], needles: &[&str]) {
    fails_with_cmd(meridian(), args, needles)
}

fn fails_with_cmd(cmd: &str, args: &[&str], needles: &[&str]) {
    let start = Instant::now();
    let out = run(cmd, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should exit 1; stderr: {stderr}"
    );
    assert_eq!(
        lines.len(),
        1,
        "{args:?} should say one line, said: {stderr}"
    );
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: {:?} lacks {n:?}", lines[0]);
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{args:?} took too long to fail"
    );
}

fn with_garage<'a>(
    g: &'a Garage,
    mp: &'a str,
    data: &'a str,
    key: &'a str,
    secret: &'a str,
    endpoint: &'a str,
    bucket: &'a str,
) -> Vec<&'a str> {
    let _ = g;
    vec![
        "mount",
        mp,
        "--data-dir",
        data,
        "--bucket",
        bucket,
        "--endpoint",
        endpoint,
        "--access-key-id",
        key,
        "--secret-access-key",
        secret,
    ]
}

#[test]
fn s3_misconfiguration() {
    let g = Garage::shared();
    let tmp = tempfile::tempdir().unwrap();
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let (mp, data) = (
        mp.display().to_string(),
        tmp.path().join("data").display().to_string(),
    );
    fails_with(
        &with_garage(
            g,
            &mp,
            &data,
            &g.key_id,
            "wrong-secret",
            &g.endpoint,
            &g.bucket,
        ),
        &["refused the credentials", "check the access key"],
    );
    fails_with(
        &with_garage(
            g,
            &mp,
            &data,
            &g.key_id,
            &g.secret,
            "http://127.0.0.1:9",
            &g.bucket,
        ),
        &["cannot reach", "127.0.0.1:9", "check --endpoint"],
    );
    fails_with(
        &with_garage(
            g,
            &mp,
            &data,
            &g.key_id,
            &g.secret,
            &g.endpoint,
            "no-such-bucket",
        ),
        &["does not exist", "no-such-bucket"],
    );
    assert!(!is_mounted(std::path::Path::new(&mp)));
}

#[test]
fn mountpoint_problems() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data").display().to_string();
    let missing = tmp.path().join("missing").display().to_string();
    fails_with(
        &["mount", &missing, "--data-dir", &data],
        &["does not exist", "mkdir -p"],
    );

    let mut m = Mount::new(Backend::LocalDir);
    let busy = m.dir.display().to_string();
    let other = tmp.path().join("data2").display().to_string();
    fails_with(
        &["mount", &busy, "--data-dir", &other],
        &["busy", "already mounted", "meridian umount"],
    );

    // The same namespace cannot be mounted twice.
    let mp2 = tmp.path().join("mnt2");
    std::fs::create_dir(&mp2).unwrap();
    fails_with(
        &[
            "mount",
            &mp2.display().to_string(),
            "--data-dir",
            &m.data_dir.display().to_string(),
        ],
        &["already open"],
    );

    // A crashed mount leaves a stale mountpoint: named as such, with the fix.
    let pid = m.pid().expect("mount is running") as i32;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    fails_with(
        &["mount", &busy, "--data-dir", &other],
        &["stale mount", "meridian umount"],
    );
    m.kill9();
}

#[test]
fn bad_config_file_names_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("site.toml");
    std::fs::write(&conf, "[mount]\nattr_ttl = 3\n").unwrap();
    let mp = tmp.path().display().to_string();
    fails_with(
        &["mount", &mp, "--config", &conf.display().to_string()],
        &["site.toml", "attr_ttl"],
    );
}

#[test]
fn site_timings_out_of_range_name_the_option_and_the_minimum() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("site.toml");
    let data = tmp.path().join("data").display().to_string();
    std::fs::write(
        &conf,
        format!("data_dir = {data:?}\nclient_lease_ms = 500\n"),
    )
    .unwrap();
    fails_with(
        &["metaserver", "-c", &conf.display().to_string()],
        &["client_lease_ms = 500", "site.toml", "at least 3000"],
    );
    std::fs::write(
        &conf,
        format!("data_dir = {data:?}\ninvalidation_wait_ms = 0\n"),
    )
    .unwrap();
    fails_with(
        &["metaserver", "-c", &conf.display().to_string()],
        &["invalidation_wait_ms = 0", "site.toml", "at least 1"],
    );
}

#[test]
fn fstab_helper_translates_and_refuses_unknown_options() {
    let tmp = tempfile::tempdir().unwrap();
    let helper = tmp.path().join("mount.meridian");
    std::os::unix::fs::symlink(meridian(), &helper).unwrap();
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let helper = helper.display().to_string();
    let mp_s = mp.display().to_string();
    fails_with_cmd(
        &helper,
        &["studio", &mp_s, "-o", "rw,colour=blue"],
        &["unknown option 'colour=blue'", &mp_s],
    );
    let data = format!("rw,_netdev,data_dir={}", tmp.path().join("data").display());
    let out = run(&helper, &["studio", &mp_s, "-o", &data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(&mp));
    let out = run(meridian(), &["umount", &mp_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
