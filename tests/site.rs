//! A site: one `meridian metaserver` process, clients mounting it over QUIC.
//!
//! Shown here: clients without a valid credential are refused (a clear error on their side,
//! a log line on the server's); two mounts of one site share the namespace; a metaserver
//! killed with -9 and restarted is rejoined by the mounts, which carry on with nothing
//! acknowledged lost; while it is down, calls fail with EIO after the timeout instead of
//! hanging.

mod common;
use common::site::Site;
use common::*;

fn mount(site: &Site, token: &str, extra: &[&str]) -> Mount {
    site.mount(token, extra)
}

#[test]
fn a_client_without_credentials_is_refused() {
    let site = Site::start();
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mut args = vec![
        "mount".to_string(),
        mp.display().to_string(),
        "--data-dir".into(),
        dir.path().join("d").display().to_string(),
    ];
    args.extend(site.mount_flags("not-a-credential"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(meridian(), &args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metaserver refused this client: unknown client credential"),
        "{err}"
    );
    assert!(!is_mounted(&mp));
    assert!(
        site.log()
            .contains("refused a client without a valid credential"),
        "{}",
        site.log()
    );
}

#[test]
fn two_mounts_share_the_namespace_and_survive_a_metaserver_restart() {
    let mut site = Site::start();
    let (t1, t2) = (site.add_client("ws1"), site.add_client("ws2"));
    let a = mount(&site, &t1, &[]);
    let b = mount(&site, &t2, &[]);
    std::fs::create_dir(a.path("shot")).unwrap();
    std::fs::write(a.path("shot/SH010.clip"), b"<clip v=1/>").unwrap();
    assert_eq!(
        std::fs::read(b.path("shot/SH010.clip")).unwrap(),
        b"<clip v=1/>"
    );
    std::fs::rename(b.path("shot/SH010.clip"), b.path("shot/SH020.clip")).unwrap();
    assert!(!a.path("shot/SH010.clip").exists());
    assert!(a.path("shot/SH020.clip").exists());
    let status = run(
        meridian(),
        &[
            "metaserver",
            "-c",
            site.dir.join("site.toml").to_str().unwrap(),
            "status",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status2 = run(
        meridian(),
        &[
            "metaserver",
            "-c",
            site.dir.join("site.toml").to_str().unwrap(),
            "status",
        ],
    );
    let text = String::from_utf8_lossy(&status2.stdout);
    assert!(
        status.status.success() && text.contains("ws1") && text.contains("ws2"),
        "{text}"
    );

    // Every write whose close returned survives a kill -9 of the metaserver.
    for i in 0..20 {
        std::fs::write(a.path(&format!("shot/f{i}")), vec![i as u8; 100_000]).unwrap();
    }
    site.kill9();
    site.run();
    for i in 0..20 {
        assert_eq!(
            std::fs::read(b.path(&format!("shot/f{i}"))).unwrap(),
            vec![i as u8; 100_000]
        );
    }
    std::fs::write(a.path("shot/after"), b"still here").unwrap();
    assert_eq!(std::fs::read(b.path("shot/after")).unwrap(), b"still here");
}

#[test]
fn an_unreachable_metaserver_gives_eio_not_a_hang() {
    let mut site = Site::start();
    let t = site.add_client("ws");
    let a = mount(
        &site,
        &t,
        &["--attr-ttl-ms", "0", "--meta-timeout-ms", "1500"],
    );
    std::fs::write(a.path("x"), b"1").unwrap();
    site.kill9();
    let started = std::time::Instant::now();
    // (A stat of "x" may still be answered by the client's cache while its connection
    // lives; a create needs the metaserver.)
    let err = std::fs::write(a.path("y"), b"2").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the call hung"
    );
    site.run();
    assert_eq!(std::fs::read(a.path("x")).unwrap(), b"1");
}

/// Two clients write files and make directories in a loop while the metaserver is killed
/// with -9 and restarted: every file whose close returned is intact afterwards, read
/// through either mount, and no mkdir is told EEXIST.
#[test]
fn kill9_of_the_metaserver_during_two_clients_write_loops_loses_nothing_acknowledged() {
    kill9_during_write_loops(&mut Site::start());
}

/// The same over PostgreSQL in sole mode, where a change is answered once its commit is
/// written to the database connection, not once the database answered it: the commits a
/// killed metaserver wrote still reach the database. `status` then tells how many calls
/// ran on the metaserver's own thread.
#[test]
fn kill9_of_a_postgresql_metaserver_during_write_loops_loses_nothing_acknowledged() {
    let pg = meridian_metaserver::store::pg::testing::Cluster::start();
    let mut site = Site::start_postgres(&pg.url(), "kill9-pg/");
    kill9_during_write_loops(&mut site);
    std::thread::sleep(std::time::Duration::from_millis(1200)); // the status files' period
    let cfg = site.dir.join("site.toml");
    let out = run(
        meridian(),
        &["metaserver", "-c", cfg.to_str().unwrap(), "status"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let here: u64 = text
        .split("since start: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of calls in {text}"));
    assert!(here > 0, "no call ran on the metaserver's thread: {text}");
}

fn kill9_during_write_loops(site: &mut Site) {
    let (t1, t2) = (site.add_client("ws1"), site.add_client("ws2"));
    let a = mount(site, &t1, &["--meta-timeout-ms", "20000"]);
    let b = mount(site, &t2, &["--meta-timeout-ms", "20000"]);
    std::fs::create_dir(a.path("renders")).unwrap();
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let closed: std::sync::Arc<[AtomicUsize; 2]> = Default::default();
    let writer = |m: &Mount, who: u8| {
        let dir = m.path("renders");
        let (stop, closed) = (stop.clone(), closed.clone());
        std::thread::spawn(move || {
            let mut done = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("c{who}-{i:05}.exr");
                let body = vec![who ^ i as u8; 4096 + (i as usize % 7) * 70_000];
                // A failure (the metaserver is down) is allowed; only closes that returned
                // count.
                match std::fs::write(dir.join(&name), &body) {
                    Ok(()) => {
                        done.push((name, body));
                        closed[who as usize - 1].fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if done.is_empty() => eprintln!("{name}: {e}"),
                    Err(_) => {}
                }
                // A name made once: a mkdir retried after the restart must not be told
                // EEXIST for the directory its first attempt made.
                let sub = dir.join(format!("d{who}-{i:05}"));
                if let Err(e) = std::fs::create_dir(&sub) {
                    assert_ne!(
                        e.kind(),
                        std::io::ErrorKind::AlreadyExists,
                        "{}",
                        sub.display()
                    );
                }
                i += 1;
            }
            done
        })
    };
    // Waits until both writers closed at least `n` files, or fails after a minute.
    let both_reach = |n: usize, when: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while closed.iter().any(|c| c.load(Ordering::SeqCst) < n) {
            assert!(
                std::time::Instant::now() < deadline,
                "{when}: the writers closed only {closed:?} files"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let (wa, wb) = (writer(&a, 1), writer(&b, 2));
    both_reach(6, "before the kill");
    site.kill9();
    std::thread::sleep(std::time::Duration::from_millis(300));
    site.run();
    let at_restart = closed
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .max()
        .unwrap();
    both_reach(at_restart + 3, "after the restart");
    stop.store(true, Ordering::SeqCst);
    let (da, db) = (wa.join().unwrap(), wb.join().unwrap());
    for (name, body) in da.iter().chain(db.iter()) {
        for m in [&a, &b] {
            let got = std::fs::read(m.path("renders").join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(got == *body, "{name}: contents differ after the restart");
        }
    }
}

/// The cursor the feed command prints last.
fn cursor_of(out: &str) -> String {
    let last = out.lines().last().expect("some output");
    last.strip_prefix("cursor ")
        .expect("a cursor line")
        .to_string()
}

/// The change feed through a real metaserver: a change made in a mount appears, stamped,
/// and a cursor resumes after it.
#[test]
fn the_change_feed_is_read_from_a_cursor() {
    let site = Site::start();
    let t = site.add_client("ws");
    let a = mount(&site, &t, &[]);
    let cfg = site.dir.join("site.toml");
    let feed = |after: &str| {
        let out = run(
            meridian(),
            &[
                "metaserver",
                "-c",
                cfg.to_str().unwrap(),
                "feed",
                "--token",
                &t,
                "--after",
                after,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = feed("0");
    let cursor = cursor_of(&before);
    std::fs::write(a.path("SH010.clip"), b"<clip/>").unwrap();
    let after = feed(&cursor);
    assert!(after.contains("entry 1/SH010.clip"), "{after}");
    let next = cursor_of(&after);
    assert!(next.parse::<u64>().unwrap() > cursor.parse::<u64>().unwrap());
    assert_eq!(
        feed(&next).lines().count(),
        1,
        "nothing after the last cursor"
    );
}
