//! A throwaway PostgreSQL cluster on loopback for tests and benchmarks: `initdb` and
//! `postgres` from Debian's packages, run as the `postgres` user in a temporary directory,
//! killed with the process that started it (PR_SET_PDEATHSIG) or when dropped.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    _dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    let found = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
        d.filter_map(|e| e.ok())
            .map(|e| e.path().join("bin").join(name))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!("{name} not found under /usr/lib/postgresql: apt-get install postgresql")
    })
}

fn postgres_user() -> (u32, u32) {
    passwd_entry().unwrap_or_else(|| panic!("no `postgres` user: apt-get install postgresql"))
}

fn passwd_entry() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = text.lines().find(|l| l.starts_with("postgres:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

impl Cluster {
    /// Starts a new cluster; `url()` connects to it.
    pub fn start() -> Cluster {
        let (uid, gid) = postgres_user();
        let dir = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        let data = dir.path().join("data");
        let out = Command::new(bin("initdb"))
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data)
            .uid(uid)
            .gid(gid)
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new(bin("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "fsync=off", "-c", "max_connections=50"])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Killed with the test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("postgres");
        let c = Cluster {
            _dir: dir,
            child,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while super::execute(&c.url(), "SELECT 1").is_err() {
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The first column of the first row of `sql` (a number), on a connection of its own.
    pub fn number(&self, sql: &str) -> i64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            let row = client.query_one(sql, &[]).await.expect("query");
            row.get::<_, i64>(0)
        })
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the server and its backends: a database that
    /// hangs without closing its connections.
    pub fn pause(&self, paused: bool) {
        let server = self.child.id();
        let mut pids = vec![server.to_string()];
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid …: the fields after the last ')'.
            let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
            if after.split_whitespace().nth(1) == Some(&server.to_string()) {
                pids.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        let signal = if paused { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill").arg(signal).args(&pids).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill {signal} {pids:?}");
    }
}
