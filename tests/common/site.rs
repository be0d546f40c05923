//! A site metaserver for tests: the real `meridian metaserver` process on a free loopback
//! port, with its own data directory, certificate and client credentials.

use super::{die_with_parent, meridian, run};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Site {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// Where this site's mounts keep blocks in the shared bucket.
    pub prefix: String,
}

impl Site {
    pub fn start() -> Site {
        Site::start_with("", None)
    }

    /// A metaserver whose namespace lives in PostgreSQL at `url` (several may share one),
    /// its mounts keeping blocks under `prefix`.
    pub fn start_postgres(url: &str, prefix: &str) -> Site {
        Site::start_with(&format!("postgres = {url:?}\n"), Some(prefix.to_string()))
    }

    /// `extra` lines go into site.toml.
    pub fn start_with(extra: &str, prefix: Option<String>) -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.join("site.toml"),
            format!(
                "data_dir = \"{}/data\"\nlisten = \"127.0.0.1:{port}\"\n{extra}",
                dir.display()
            ),
        )
        .unwrap();
        let mut s = Site {
            _tmp: tmp,
            dir,
            port,
            child: None,
            prefix: prefix.unwrap_or(format!("site-{port}/")),
        };
        s.run();
        s
    }

    /// Starts (or restarts) the process and waits until it listens.
    pub fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let before = self.log().matches("listening on").count();
        let child = die_with_parent(
            Command::new(meridian())
                .args(["metaserver", "-c"])
                .arg(self.dir.join("site.toml"))
                .env("MERIDIAN_LOG", "info")
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .spawn()
        .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log().matches("listening on").count() == before {
            assert!(
                Instant::now() < deadline,
                "metaserver did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A new credential for `name`.
    pub fn add_client(&self, name: &str) -> String {
        let out = run(
            meridian(),
            &[
                "metaserver",
                "-c",
                self.dir.join("site.toml").to_str().unwrap(),
                "add-client",
                name,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace().nth(3).unwrap().to_string()
    }

    /// The `meridian mount` flags that join this site with `token` (and its block prefix
    /// in the shared bucket: every mount of a site uses the same).
    pub fn mount_flags(&self, token: &str) -> Vec<String> {
        vec![
            "--prefix".into(),
            self.prefix.clone(),
            "--meta".into(),
            format!("quic://127.0.0.1:{}", self.port),
            "--meta-cert".into(),
            self.dir.join("data/metaserver.crt").display().to_string(),
            "--meta-token".into(),
            token.into(),
        ]
    }

    /// A mount of this site with `token`, plus `extra` flags, on the shared Garage.
    pub fn mount(&self, token: &str, extra: &[&str]) -> super::Mount {
        let mut f: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        f.extend(self.mount_flags(token));
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        super::Mount::with_args(super::Backend::Garage, &f)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill9();
    }
}
