//! A throwaway PostgreSQL cluster on loopback for tests and benchmarks: `initdb` and
//! `postgres` from Debian's packages, run as the `postgres` user in a temporary directory,
//! killed with the process that started it (PR_SET_PDEATHSIG) or when dropped.
//! [`Cluster::start_tls`] starts one that takes TCP connections over TLS only, with a
//! certificate authority, server and client certificates made for it (rcgen).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    _dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    /// The files of a TLS cluster ([`Cluster::start_tls`]).
    pub tls: Option<TlsFiles>,
}

/// PEM files made for a TLS cluster, in its directory.
pub struct TlsFiles {
    /// The authority that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// Another authority, which signed nothing here.
    pub other_ca: PathBuf,
    /// A client certificate and key for the role `certuser` (authenticated by them alone).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// The role a TLS cluster authenticates by its client certificate alone.
pub const CERT_USER: &str = "certuser";

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
        Cluster::start_with(false)
    }

    /// Starts a cluster that refuses TCP connections without TLS. Its certificate names
    /// `localhost` only (not 127.0.0.1); the role [`CERT_USER`] logs in with the client
    /// certificate of [`TlsFiles`] and nothing else. `url()` asks for TLS (`require`).
    pub fn start_tls() -> Cluster {
        Cluster::start_with(true)
    }

    fn start_with(tls: bool) -> Cluster {
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
        let files = tls.then(|| make_tls_files(dir.path(), &data, uid, gid));
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
            .args(files.iter().flat_map(|_| {
                ["-c", "ssl=on", "-c", "ssl_cert_file=server.crt"]
                    .into_iter()
                    .chain(["-c", "ssl_key_file=server.key", "-c", "ssl_ca_file=ca.crt"])
            }))
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
            tls: files,
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
        let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port);
        match self.tls {
            Some(_) => url + "?sslmode=require",
            None => url,
        }
    }

    /// A URL for the role `user`, made here, for which `pg_notify` fails as on a
    /// PostgreSQL-compatible engine without notifications: the role's search path puts a
    /// schema holding a failing `pg_notify` ahead of the system catalog (`LISTEN` still
    /// works, as it cannot be replaced).
    pub fn without_notifications(&self, user: &str) -> String {
        let sql = format!(
            "CREATE ROLE {user} LOGIN; CREATE SCHEMA {user} AUTHORIZATION {user}; \
             CREATE FUNCTION {user}.pg_notify(text, text) RETURNS void LANGUAGE plpgsql AS \
             $$BEGIN RAISE EXCEPTION 'LISTEN/NOTIFY is not supported' \
             USING ERRCODE = 'feature_not_supported'; END$$; \
             ALTER ROLE {user} SET search_path = {user}, pg_catalog, public"
        );
        super::execute(&self.url(), &sql).expect("a role without notifications");
        format!("postgresql://{user}@127.0.0.1:{}/postgres", self.port)
    }

    /// For a TLS cluster: a URL for `user` that checks the server's certificate
    /// (`verify-full`) against the name `localhost`, reaching it at 127.0.0.1.
    pub fn verify_full_url(&self, user: &str) -> String {
        let ca = &self.tls.as_ref().expect("a TLS cluster").ca;
        format!(
            "postgresql://{user}@localhost:{}/postgres?hostaddr=127.0.0.1\
             &sslmode=verify-full&sslrootcert={}",
            self.port,
            ca.display()
        )
    }

    /// How many TCP connections to the cluster are not encrypted (0 for a TLS cluster).
    pub fn plaintext_connections(&self) -> i64 {
        self.number(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.client_addr IS NOT NULL AND NOT s.ssl",
        )
    }

    /// The first column of the first row of `sql` (a number), on a connection of its own.
    pub fn number(&self, sql: &str) -> i64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let target = super::tls::Target::parse(&self.url()).expect("url");
            let (client, conn) = target.connect().await.expect("connect");
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

/// Makes a CA, the server's certificate and key (in `data`, owned by the server's user, as
/// PostgreSQL requires of its key), a client certificate for [`CERT_USER`], and a
/// `pg_hba.conf` that takes TCP connections over TLS only.
fn make_tls_files(dir: &std::path::Path, data: &std::path::Path, uid: u32, gid: u32) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "meridian test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        (params.signed_by(&key, &issuer).expect("sign"), key)
    };
    let (server, server_key) = leaf(vec!["localhost".into()], "localhost");
    let (client, client_key) = leaf(vec![], CERT_USER);
    let other_key = KeyPair::generate().expect("key");
    let mut other = CertificateParams::new(Vec::<String>::new()).expect("params");
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = other.self_signed(&other_key).expect("other ca");
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).expect("write");
        path
    };
    let private = |path: PathBuf, text: String| {
        let path = write(path, text);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
        path
    };
    write(data.join("ca.crt"), ca.pem());
    write(data.join("server.crt"), server.pem());
    private(data.join("server.key"), server_key.serialize_pem());
    let hba = format!(
        "local all all trust\nhostssl all {CERT_USER} 127.0.0.1/32 cert\n\
         hostssl all all 127.0.0.1/32 trust\n"
    );
    write(data.join("pg_hba.conf"), hba);
    TlsFiles {
        ca: write(dir.join("ca.crt"), ca.pem()),
        other_ca: write(dir.join("other-ca.crt"), other.pem()),
        client_cert: write(dir.join("client.crt"), client.pem()),
        client_key: private(dir.join("client.key"), client_key.serialize_pem()),
    }
}
