//! pjdfstest, the POSIX conformance suite, against a real mount backed by Garage.
//!
//! Needs root (the suite switches users) and `pjdfstest` on PATH (.ci/run installs it).
//! Passes only with "0 failed"; the summary is printed either way.

mod common;
use common::*;

#[test]
fn pjdfstest_passes_on_a_garage_backed_mount() {
    let m = Mount::with_args(Backend::Garage, &["--allow-other"]);
    pjdfstest(&m);
}

/// The same suite with the namespace served by a separate metaserver process over QUIC.
#[test]
fn pjdfstest_passes_over_a_quic_metaserver() {
    let site = common::site::Site::start();
    pjdfstest(&site.mount(&site.add_client("pjd"), &["--allow-other"]));
}

/// The same suite through a metaserver whose namespace is in PostgreSQL.
#[test]
fn pjdfstest_passes_over_a_postgresql_backed_metaserver() {
    let pg = meridian_metaserver::store::pg::testing::Cluster::start();
    let site = common::site::Site::start_postgres(&pg.url(), "pjd-pg/");
    pjdfstest(&site.mount(&site.add_client("pjd"), &["--allow-other"]));
}

fn pjdfstest(m: &Mount) {
    assert!(
        nix_is_root(),
        "pjdfstest needs root (it switches users); run the tests as root"
    );
    let work = m.path("pjd");
    std::fs::create_dir(&work).unwrap();
    let conf = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/pjdfstest/pjdfstest.toml"
    );
    let out = std::process::Command::new("pjdfstest")
        .args(["-c", conf, "-p"])
        .arg(&work)
        .current_dir(&work)
        .output()
        .expect("pjdfstest is installed (cargo install pjdfstest --version 0.2.2 --locked)");
    let text = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_end().ends_with("FAILED"))
        .collect();
    let summary = text
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or("no summary")
        .to_string();
    println!("pjdfstest: {summary}");
    assert!(
        failed.is_empty() && summary.contains(" 0 failed"),
        "pjdfstest failures:\n{}\n{summary}\n{}",
        failed.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The kernel leaves clearing set-user-ID and set-group-ID to the mount (so it need not ask
/// for security.capability before every write): a write, a truncation and a change of owner
/// leave the bits as ext4 does, and `stat` right after shows it.
#[test]
fn writes_truncations_and_chown_clear_set_id_bits_as_on_a_local_disk() {
    assert!(nix_is_root(), "switching to nobody needs root");
    let m = Mount::with_args(Backend::LocalDir, &["--allow-other"]);
    let top = m.dir.parent().unwrap();
    std::fs::set_permissions(top, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let d = m.path("suid");
    let script = format!(
        r#"
        cd {d}
        as_nobody() {{ setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "$1"; }}
        t() {{ rm -f f; touch f; chmod "$1" f; }}
        t 6777; as_nobody "printf x >> {d}/f"; echo "write $(stat -c %a f)"
        t 6767; as_nobody "printf x >> {d}/f"; echo "write-nogx $(stat -c %a f)"
        t 6777; printf x >> f; echo "write-root $(stat -c %a f)"
        t 6777; as_nobody "truncate -s 10 {d}/f"; echo "truncate $(stat -c %a f)"
        t 6777; truncate -s 10 f; echo "truncate-root $(stat -c %a f)"
        t 6777; chown nobody f; echo "chown $(stat -c %a f)"
        t 6767; chown nobody f; echo "chown-nogx $(stat -c %a f)"
        t 6777; as_nobody "exec 3>{d}/f"; echo "open-trunc $(stat -c %a f)"
        t 6777; as_nobody "fallocate -l 100 {d}/f"; echo "fallocate $(stat -c %a f)"
        "#,
        d = d.display()
    );
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let got = sh(&script);
    // What ext4 on this kernel answers to the same script.
    let want = "write 777\nwrite-nogx 767\nwrite-root 6777\ntruncate 777\ntruncate-root 6777\n\
                chown 777\nchown-nogx 2767\nopen-trunc 777\nfallocate 777\n";
    assert_eq!(got, want);
}
