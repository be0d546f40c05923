//! The integration-test harness: a real Garage S3 server on loopback, real FUSE mounts of
//! the real `meridian` binary, and helpers to run shell tools against them.
//!
//! Every process it starts dies with the test process (PR_SET_PDEATHSIG), and every mount is
//! unmounted on drop. Garage must be installed (`.ci/run` does it); a missing Garage fails
//! the tests rather than skipping them.

#![allow(dead_code)]

pub mod site;

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn meridian() -> &'static str {
    env!("CARGO_BIN_EXE_meridian")
}

/// Runs `cmd` so that it is killed when the test process dies.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a shell command line; panics with its output if it fails.
pub fn sh(script: &str) -> String {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "command failed: {script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A single-node Garage on loopback with one bucket and one key.
pub struct Garage {
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    child: Child,
}

impl Garage {
    /// One Garage per test binary, started on first use.
    pub fn shared() -> &'static Garage {
        static G: OnceLock<Garage> = OnceLock::new();
        // PR_SET_PDEATHSIG fires when the spawning *thread* ends: start Garage from a thread
        // that lives as long as the test process.
        G.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                tx.send(Garage::start()).unwrap();
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("garage started")
        })
    }

    fn admin(&self, args: &[&str]) -> String {
        let conf = self.dir.path().join("garage.toml");
        let out = Command::new("garage")
            .arg("-c")
            .arg(&conf)
            .args(args)
            .output()
            .expect("garage runs");
        assert!(
            out.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn start() -> Garage {
        let found = Command::new("garage").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "garage is not installed: run `cargo install garage --version 2.5.0 --locked` (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let (s3, rpc) = (free_port(), free_port());
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + s3 as usize) % 256))
            .collect();
        let conf = format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
             [s3_api]\napi_bind_addr = \"127.0.0.1:{s3}\"\ns3_region = \"us-east-1\"\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("garage.toml"), conf).unwrap();
        let log = std::fs::File::create(dir.path().join("garage.log")).unwrap();
        let child = die_with_parent(
            Command::new("garage")
                .arg("-c")
                .arg(dir.path().join("garage.toml"))
                .arg("server")
                .env("RUST_LOG", "warn")
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .spawn()
        .unwrap();
        let mut g = Garage {
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "meridian-test".into(),
            key_id: String::new(),
            secret: String::new(),
            child,
        };
        g.configure();
        g
    }

    fn configure(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let node = loop {
            let conf = self.dir.path().join("garage.toml");
            let up = Command::new("garage")
                .arg("-c")
                .arg(&conf)
                .arg("status")
                .output()
                .unwrap();
            let out = Command::new("garage")
                .arg("-c")
                .arg(&conf)
                .args(["node", "id", "-q"])
                .output()
                .unwrap();
            if up.status.success() && out.status.success() {
                break String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .split('@')
                    .next()
                    .unwrap()
                    .to_string();
            }
            assert!(
                Instant::now() < deadline,
                "garage did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        self.admin(&["layout", "assign", "-z", "dc1", "-c", "10G", &node]);
        self.admin(&["layout", "apply", "--version", "1"]);
        self.admin(&["bucket", "create", &self.bucket.clone()]);
        let key = self.admin(&["key", "create", "meridian-test-key"]);
        let field = |name: &str| {
            key.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in: {key}"))
        };
        self.key_id = field("Key ID");
        self.secret = field("Secret key");
        self.admin(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &self.bucket.clone(),
            "--key",
            "meridian-test-key",
        ]);
    }

    /// The flags that point `meridian` at this Garage.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--bucket".into(),
            self.bucket.clone(),
            "--endpoint".into(),
            self.endpoint.clone(),
            "--access-key-id".into(),
            self.key_id.clone(),
            "--secret-access-key".into(),
            self.secret.clone(),
        ]
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where blocks go for a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    LocalDir,
    Garage,
}

/// A real FUSE mount of the `meridian` binary, in the foreground as a child process.
pub struct Mount {
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub backend: Backend,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    pub extra: Vec<String>,
}

pub fn is_mounted(path: &Path) -> bool {
    mount_device(path).is_some()
}

/// The device (`major:minor`) of the topmost mount at `path`, if any.
pub fn mount_device(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    info.lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(&p))
        .and_then(|l| l.split(' ').nth(2))
        .map(str::to_string)
}

impl Mount {
    /// A fresh namespace in a new temporary directory.
    pub fn new(backend: Backend) -> Mount {
        Self::with_args(backend, &[])
    }

    pub fn with_args(backend: Backend, extra: &[&str]) -> Mount {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mnt");
        let data_dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = Mount {
            dir,
            data_dir,
            backend,
            child: None,
            _tmp: Some(tmp),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        m.start();
        m
    }

    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "mount".to_string(),
            "--foreground".into(),
            self.dir.display().to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
        ];
        if self.backend == Backend::Garage {
            a.extend(self.s3_flags());
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// The bucket flags of this mount: the shared Garage, under a key prefix of its own
    /// (unless the test gives one, as mounts of one site share theirs), so tests running at
    /// once (a `gc` among them) never touch each other's blocks.
    pub fn s3_flags(&self) -> Vec<String> {
        let mut f = Garage::shared().flags();
        if !self.extra.iter().any(|a| a == "--prefix") {
            let unique = self.data_dir.parent().unwrap().file_name().unwrap();
            f.extend([
                "--prefix".to_string(),
                format!("{}/", unique.to_string_lossy()),
            ]);
        }
        f
    }

    /// Starts the mount process and waits until the kernel shows the mount.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = die_with_parent(
            Command::new(meridian())
                .args(self.args())
                .env("MERIDIAN_LOG", "info")
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .spawn()
        .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&self.dir) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mount exited early ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "mount did not appear: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The mount process's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.parent().unwrap().join("mount.log")
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log_path()) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Unmounts through `meridian umount` and waits for the process to end cleanly.
    pub fn unmount(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let out = run(meridian(), &["umount", &self.dir.display().to_string()]);
        assert!(
            out.status.success(),
            "umount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "mount process ended with {status}: {}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mount process did not end after umount"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the mount process with SIGKILL and clears the stale mount it leaves.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let out = run(meridian(), &["umount", &self.dir.display().to_string()]);
        assert!(
            out.status.success(),
            "clearing the stale mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn remount(&mut self) {
        self.unmount();
        self.start();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.dir)
                .output();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}
