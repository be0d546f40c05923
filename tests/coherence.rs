//! Two mounts of one site, each with the kernel's attribute and entry caches on (the
//! default TTL): what one does, the other sees at once — the metaserver pushes
//! invalidations and answers the change only after the other mount dropped what it cached.
//! And byte-range locks (fcntl, flock) taken through one mount hold against the other,
//! until released, or until a crashed client's lease runs out.
//!
//! Every step reads through the second mount right after the first returns, with no sleep:
//! without invalidations the reads would answer from the kernel's cache and fail.

mod common;
use common::site::Site;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ls_l(dir: &std::path::Path) -> String {
    sh(&format!("ls -l {}", dir.display()))
}

#[test]
fn each_mount_sees_the_others_changes_at_once() {
    let site = Site::start();
    let (t1, t2) = (site.add_client("ws1"), site.add_client("ws2"));
    // A long TTL, so a stale kernel cache would last the whole test.
    let a = site.mount(&t1, &["--attr-ttl-ms", "60000"]);
    let b = site.mount(&t2, &["--attr-ttl-ms", "60000"]);
    std::fs::create_dir(a.path("shot")).unwrap();
    // b caches the empty directory and a negative entry for the name to come.
    assert_eq!(std::fs::read_dir(b.path("shot")).unwrap().count(), 0);
    assert!(!b.path("shot/SH010.clip").exists());

    // create
    std::fs::write(a.path("shot/SH010.clip"), b"<clip v=1/>").unwrap();
    assert!(ls_l(&b.path("shot")).contains("SH010.clip"));
    assert_eq!(
        std::fs::read(b.path("shot/SH010.clip")).unwrap(),
        b"<clip v=1/>"
    );
    // write after close (b has the old size and pages cached)
    std::fs::write(a.path("shot/SH010.clip"), b"<clip v=2 longer/>").unwrap();
    assert_eq!(
        std::fs::read(b.path("shot/SH010.clip")).unwrap(),
        b"<clip v=2 longer/>"
    );
    // chmod
    std::fs::set_permissions(
        a.path("shot/SH010.clip"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mode = std::fs::metadata(b.path("shot/SH010.clip"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(ls_l(&b.path("shot")).contains("-rw-------"));
    // an extended attribute b knew absent (its kernel asks for security.capability before
    // every write, and b answers that from its cache)
    let get = |m: &common::Mount| {
        let script = format!(
            "import os\ntry: print(os.getxattr('{}', 'security.meridian').decode())\nexcept OSError as e: print('errno', e.errno)",
            m.path("shot/SH010.clip").display()
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let no_data = format!("errno {}", libc::ENODATA);
    assert_eq!(get(&b), no_data);
    assert_eq!(get(&b), no_data);
    let set = format!(
        "import os; os.setxattr('{}', 'security.meridian', b'graded')",
        a.path("shot/SH010.clip").display()
    );
    assert!(
        Command::new("python3")
            .args(["-c", &set])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(get(&b), "graded");
    // rename
    std::fs::rename(a.path("shot/SH010.clip"), a.path("shot/SH020.clip")).unwrap();
    let listing = ls_l(&b.path("shot"));
    assert!(
        listing.contains("SH020.clip") && !listing.contains("SH010.clip"),
        "{listing}"
    );
    assert!(!b.path("shot/SH010.clip").exists());
    // delete
    std::fs::remove_file(a.path("shot/SH020.clip")).unwrap();
    assert!(!b.path("shot/SH020.clip").exists());
    assert_eq!(std::fs::read_dir(b.path("shot")).unwrap().count(), 0);
    // and the other way round, for directories
    std::fs::create_dir(b.path("shot/v002")).unwrap();
    assert!(a.path("shot/v002").is_dir());
    std::fs::remove_dir(b.path("shot/v002")).unwrap();
    assert!(!a.path("shot/v002").exists());
    assert!(
        !site.log().contains("did not acknowledge"),
        "{}",
        site.log()
    );
}

/// A python process that takes a lock on `path` and holds it until its stdin closes.
fn hold(path: &std::path::Path, how: &str) -> Child {
    let script = format!(
        "import fcntl,sys\nf=open({path:?},'r+')\n{how}\nprint('locked',flush=True)\nsys.stdin.read()\n",
        path = path.display().to_string()
    );
    spawn_ready(&script, "locked")
}

/// Runs the python `script` and waits for it to print `ready`.
fn spawn_ready(script: &str, ready: &str) -> Child {
    let mut c = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), ready);
    c
}

/// Whether a non-blocking attempt to take the lock succeeds.
fn try_lock(path: &std::path::Path, how: &str) -> bool {
    let script = format!(
        "import fcntl\nf=open({path:?},'r+')\ntry:\n  {how}\n  print('got')\nexcept OSError as e:\n  print('busy', e.errno)\n",
        path = path.display().to_string()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with("got") || text.starts_with("busy 11") || text.starts_with("busy 13"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.starts_with("got")
}

#[test]
fn locks_taken_in_one_mount_hold_in_the_other() {
    // A lease longer than the default 5 s, to see that the site's setting holds.
    let site = Site::start_with("client_lease_ms = 12000\n", None);
    let (t1, t2) = (site.add_client("ws1"), site.add_client("ws2"));
    let mut a = site.mount(&t1, &[]);
    let b = site.mount(&t2, &[]);
    std::fs::write(a.path("edl.lock"), b"").unwrap();
    for (take, probe) in [
        (
            "fcntl.lockf(f, fcntl.LOCK_EX)",
            "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        ),
        (
            "fcntl.flock(f, fcntl.LOCK_EX)",
            "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        ),
        (
            "fcntl.lockf(f, fcntl.LOCK_EX, 10, 0)",
            "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)",
        ),
    ] {
        let mut holder = hold(&a.path("edl.lock"), take);
        assert!(!try_lock(&b.path("edl.lock"), probe), "{take}: not held");
        // A range past the held one is free (the third case locks bytes 0..10 only).
        if take.contains("10, 0") {
            assert!(try_lock(
                &b.path("edl.lock"),
                "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 20)"
            ));
        }
        drop(holder.stdin.take()); // the holder exits: its close releases the lock
        holder.wait().unwrap();
        assert!(try_lock(&b.path("edl.lock"), probe), "{take}: not released");
    }

    // A client that crashes holding a lock loses it when its lease runs out.
    let mut holder = hold(&a.path("edl.lock"), "fcntl.lockf(f, fcntl.LOCK_EX)");
    let probe = "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)";
    assert!(!try_lock(&b.path("edl.lock"), probe));
    // The client process dies; its holder stays (with a dead file descriptor).
    unsafe { libc::kill(a.pid().unwrap() as i32, libc::SIGKILL) };
    let started = Instant::now();
    // Still held well past the default lease: the site's 12 s apply.
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        !try_lock(&b.path("edl.lock"), probe),
        "released before the site's lease ran out"
    );
    while !try_lock(&b.path("edl.lock"), probe) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the crashed client's lock was never released"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = holder.kill();
    let _ = holder.wait();
    a.kill9(); // clears the dead mount
}

/// Two metaserver processes over one PostgreSQL database serve one site: a mount of each
/// sees the other's changes — each metaserver announces its changes (NOTIFY), and the
/// other reads the shared change feed and pushes them to its own clients — and the other's
/// locks. The feed's fallback poll is set to a minute, so the announcements alone must
/// carry every change here (they arrive in milliseconds, not at once: this polls). The
/// database takes TLS connections only, and the metaservers check its certificate
/// (`sslmode=verify-full`).
/// Two metaservers with the site settings `toml` (one PostgreSQL database) and bucket
/// prefix `prefix`, and a mount of each (names cached for a minute: what each sees of the
/// other's changes comes by invalidation).
fn two_metaservers(toml: &str, prefix: &str) -> (Site, Site, Mount, Mount) {
    let site = || Site::start_with(toml, Some(prefix.to_string()));
    let (s1, s2) = (site(), site());
    let a = s1.mount(&s1.add_client("ws1"), &["--attr-ttl-ms", "60000"]);
    let b = s2.mount(&s2.add_client("ws2"), &["--attr-ttl-ms", "60000"]);
    (s1, s2, a, b)
}

/// Waits up to 5 s for `ok`.
fn soon(what: &str, ok: &dyn Fn() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(5), "{what}: not seen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_metaservers_over_one_postgresql_serve_one_site() {
    let pg = meridian_metaserver::store::pg::testing::Cluster::start_tls();
    let url = pg.verify_full_url("postgres");
    let toml = format!("postgres = {url:?}\nfeed_poll_ms = 60000\n");
    let (_s1, _s2, a, b) = two_metaservers(&toml, &format!("pg-site-{}/", pg.port));
    std::fs::create_dir(a.path("shot")).unwrap();
    assert_eq!(std::fs::read_dir(b.path("shot")).unwrap().count(), 0);
    std::fs::write(a.path("shot/SH010.clip"), b"<clip v=1/>").unwrap();
    soon("a create", &|| b.path("shot/SH010.clip").exists());
    assert_eq!(
        std::fs::read(b.path("shot/SH010.clip")).unwrap(),
        b"<clip v=1/>"
    );
    std::fs::write(b.path("shot/SH010.clip"), b"<clip v=2 from b/>").unwrap();
    soon("a write", &|| {
        std::fs::read(a.path("shot/SH010.clip")).unwrap() == b"<clip v=2 from b/>"
    });
    std::fs::rename(a.path("shot/SH010.clip"), a.path("shot/SH020.clip")).unwrap();
    soon("a rename", &|| !b.path("shot/SH010.clip").exists());
    assert!(b.path("shot/SH020.clip").exists());
    std::fs::remove_file(b.path("shot/SH020.clip")).unwrap();
    soon("a delete", &|| {
        std::fs::read_dir(a.path("shot")).unwrap().count() == 0
    });
    // Locks live in the shared database: one taken through either metaserver holds
    // against the other's clients, and its release is seen at once.
    std::fs::write(a.path("shot/edl.lock"), b"").unwrap();
    soon("the lock file", &|| b.path("shot/edl.lock").exists());
    for (take, probe) in [
        (
            "fcntl.lockf(f, fcntl.LOCK_EX)",
            "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        ),
        (
            "fcntl.flock(f, fcntl.LOCK_EX)",
            "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        ),
    ] {
        let mut holder = hold(&a.path("shot/edl.lock"), take);
        assert!(
            !try_lock(&b.path("shot/edl.lock"), probe),
            "{take}: not held across metaservers"
        );
        drop(holder.stdin.take());
        holder.wait().unwrap();
        assert!(
            try_lock(&b.path("shot/edl.lock"), probe),
            "{take}: not released"
        );
    }
    // A file open through one metaserver outlives an unlink through the other: it can
    // still be read, written and synced until it is closed (each metaserver's upkeep,
    // every 5 s, runs meanwhile).
    std::fs::write(a.path("shot/take.exr"), vec![7u8; 300 << 10]).unwrap();
    soon("the open file", &|| b.path("shot/take.exr").exists());
    let mut reader = open_then(
        &a.path("shot/take.exr"),
        "f.seek(0)\nf.write(b'new')\nf.flush()\nos.fsync(f.fileno())\nf.seek(0)\n\
         d=f.read()\nprint(os.fstat(f.fileno()).st_nlink, len(d), d[:4])",
    );
    std::fs::remove_file(b.path("shot/take.exr")).unwrap();
    soon("the unlink", &|| !a.path("shot/take.exr").exists());
    std::thread::sleep(Duration::from_secs(6));
    drop(reader.stdin.take());
    let out = reader.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0 307200 b'new\\x07'",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pg.plaintext_connections(),
        0,
        "every metaserver connection is TLS"
    );
}

/// Two metaservers over a database that does not deliver notifications (here PostgreSQL
/// with `pg_notify` failing for the site's role, as on engines without LISTEN/NOTIFY):
/// every change still reaches the other metaserver's mount, at the change feed's next
/// poll, and no write is lost to a failed notification.
#[test]
fn two_metaservers_without_notifications_see_each_others_changes_by_polling() {
    let pg = meridian_metaserver::store::pg::testing::Cluster::start();
    let url = pg.without_notifications("nonotify");
    let toml = format!("postgres = {url:?}\nfeed_poll_ms = 100\n");
    let (s1, _s2, a, b) = two_metaservers(&toml, &format!("pg-nonotify-{}/", pg.port));
    std::fs::create_dir(a.path("plates")).unwrap();
    soon("a mkdir", &|| b.path("plates").is_dir());
    assert_eq!(std::fs::read_dir(b.path("plates")).unwrap().count(), 0);
    for i in 0..10 {
        std::fs::write(a.path(&format!("plates/p{i}.dpx")), format!("frame {i}")).unwrap();
    }
    soon("ten creates", &|| {
        std::fs::read_dir(b.path("plates")).unwrap().count() == 10
    });
    assert_eq!(std::fs::read(b.path("plates/p7.dpx")).unwrap(), b"frame 7");
    std::fs::remove_file(b.path("plates/p0.dpx")).unwrap();
    soon("a delete", &|| !a.path("plates/p0.dpx").exists());
    assert!(
        s1.log().contains("does not deliver notifications"),
        "the metaserver did not say it polls: {}",
        s1.log()
    );
}

/// A python process that opens `path` read-write and, once its stdin closes, runs `then`
/// (with the file as `f`).
fn open_then(path: &std::path::Path, then: &str) -> Child {
    let script = format!(
        "import os,sys\nf=open({path:?},'r+b')\nprint('open',flush=True)\nsys.stdin.read()\n{then}\n",
        path = path.display().to_string()
    );
    spawn_ready(&script, "open")
}

/// A process waiting for a lock can be killed (SIGKILL) or interrupted (SIGINT) while the
/// lock is held elsewhere — the mount stops waiting for it — and leaves no lock behind.
#[test]
fn a_lock_waiter_can_be_killed_or_interrupted_and_leaves_no_lock() {
    let m = Mount::new(Backend::LocalDir);
    let path = m.path("edl.lock");
    std::fs::write(&path, b"").unwrap();
    for (take, probe) in [
        (
            "fcntl.lockf(f, fcntl.LOCK_EX)",
            "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        ),
        (
            "fcntl.flock(f, fcntl.LOCK_EX)",
            "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        ),
    ] {
        for signal in [libc::SIGKILL, libc::SIGINT] {
            let mut holder = hold(&path, take);
            let script = format!(
                "import fcntl\nf=open({p:?},'r+')\nprint('waiting',flush=True)\n{take}\nprint('got',flush=True)\n",
                p = path.display().to_string()
            );
            let mut waiter = spawn_ready(&script, "waiting");
            std::thread::sleep(Duration::from_millis(300)); // inside the blocking call
            unsafe { libc::kill(waiter.id() as i32, signal) };
            // It ends while the lock is still held (the holder has not let go).
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                if let Some(s) = waiter.try_wait().unwrap() {
                    break s;
                }
                assert!(
                    Instant::now() < deadline,
                    "{take}: the waiter did not end on signal {signal}"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(!status.success(), "{take}: the waiter was granted the lock");
            drop(holder.stdin.take());
            holder.wait().unwrap();
            // Nothing holds the lock now, and nothing takes it later on the waiter's behalf.
            assert!(
                try_lock(&path, probe),
                "{take}: not free after signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(300));
            assert!(try_lock(&path, probe), "{take}: taken for a dead waiter");
        }
    }
}

/// A blocking lock request in one mount is granted when the holder in the other mount
/// lets go (the metaserver wakes the waiting client; it would also find it by polling).
#[test]
fn a_blocked_lock_request_is_granted_when_the_other_mount_releases() {
    let site = Site::start();
    let (t1, t2) = (site.add_client("ws1"), site.add_client("ws2"));
    let a = site.mount(&t1, &[]);
    let b = site.mount(&t2, &[]);
    std::fs::write(a.path("edl.lock"), b"").unwrap();
    for take in [
        "fcntl.lockf(f, fcntl.LOCK_EX)",
        "fcntl.flock(f, fcntl.LOCK_EX)",
    ] {
        let mut holder = hold(&a.path("edl.lock"), take);
        let script = format!(
            "import fcntl\nf=open({p:?},'r+')\nprint('waiting',flush=True)\n{take}\nprint('got',flush=True)\n",
            p = b.path("edl.lock").display().to_string()
        );
        let mut waiter = spawn_ready(&script, "waiting");
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            waiter.try_wait().unwrap().is_none(),
            "{take}: granted while held"
        );
        drop(holder.stdin.take());
        holder.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while waiter.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{take}: never granted");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut out = String::new();
        std::io::Read::read_to_string(waiter.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert_eq!(out.trim(), "got", "{take}");
    }
}
