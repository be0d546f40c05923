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
