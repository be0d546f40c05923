//! `meridian metaserver`: a site's metaserver over QUIC, its client credentials and status;
//! and opening such a metaserver for `meridian mount --meta quic://…`.
//!
//! Files in the site's data directory: `namespace.redb` (+ journal), `metaserver.crt` and
//! `metaserver.key` (generated on first start; clients pin the certificate), `clients`
//! (credential hashes), `sessions` (connected clients, rewritten every second while
//! running; `meridian metaserver status` reads it) and, over PostgreSQL, `calls` (how many
//! calls ran on the metaserver's thread and how many moved to another, likewise).

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use meridian_metaserver::meta::shared_locks;
use meridian_metaserver::service::client::QuicClient;
use meridian_metaserver::service::{clients, server};
use meridian_proto::Namespace;
use meridian_proto::wire::Remote;
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct SiteArgs {
    #[command(subcommand)]
    cmd: Option<SiteCmd>,
    /// The site's TOML file (see docs/configuration.md, "Site metaserver")
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum SiteCmd {
    /// Issue a credential for a client (printed once; the server keeps only its hash)
    AddClient { name: String },
    /// List the clients connected to the running metaserver
    Status,
    /// Print the change feed after a cursor (what the next site follows): one line per
    /// change, `STAMP  ITEMS`, then the cursor to pass as --after next time
    Feed {
        /// The last stamp already read (0: from the oldest change kept)
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Most changes to print
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// A client credential of this site (from add-client)
        #[arg(long, env = "MERIDIAN_META_TOKEN", hide_env_values = true)]
        token: String,
    },
}

/// The site file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: String,
    /// Extra names (host names, addresses) for a generated certificate.
    pub names: Vec<String>,
    /// A certificate from the site's CA instead of the generated one (PEM), and its key.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Keep the namespace in PostgreSQL (a libpq URL) instead of `<data_dir>/namespace.redb`;
    /// several metaservers may share one database.
    pub postgres: Option<String>,
    /// With `postgres`: how often the change feed is read when no other metaserver's
    /// change was announced (a fallback; announcements wake the reader at once).
    pub feed_poll_ms: u64,
    /// With `postgres`: the longest wait for any answer of the database; past it the
    /// call fails (clients get EIO) and the connection is made again at the next one.
    pub postgres_timeout_ms: u64,
    /// With `postgres`: while this metaserver is the database's only writer, work in sole
    /// mode (decide writes from what it knows, see the pg store's `sole` module).
    pub postgres_sole_writer: bool,
    /// How long a client that went silent (crashed, lost the network) keeps its session:
    /// then its locks and open files are released. At least 3000 (clients send a
    /// keep-alive every second).
    pub client_lease_ms: u64,
    /// With `postgres`: how long a metaserver that went silent keeps its locks before the
    /// others take them away (and purge its orphans). At least 3000; each metaserver marks
    /// itself alive every third of it.
    pub instance_lease_ms: u64,
    /// How long a change waits for the other clients that cached what it changed to
    /// acknowledge the invalidation, before it is answered anyway (and the silent client
    /// is logged). At least 1.
    pub invalidation_wait_ms: u64,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            data_dir: None,
            listen: "127.0.0.1:7443".into(),
            names: Vec::new(),
            cert: None,
            key: None,
            postgres: None,
            feed_poll_ms: server::FOLLOW_EVERY.as_millis() as u64,
            postgres_timeout_ms: meridian_metaserver::store::pg::DEFAULT_TIMEOUT.as_millis() as u64,
            postgres_sole_writer: true,
            client_lease_ms: meridian_metaserver::service::LEASE.as_millis() as u64,
            instance_lease_ms: shared_locks::INSTANCE_LEASE.as_millis() as u64,
            invalidation_wait_ms: meridian_metaserver::service::hub::ACK_WAIT.as_millis() as u64,
        }
    }
}

impl SiteConfig {
    fn load(path: Option<&Path>) -> Result<SiteConfig> {
        let cfg: SiteConfig = match path {
            Some(path) => crate::config::load_toml(path, "site file")?,
            None => SiteConfig::default(),
        };
        let min = meridian_metaserver::service::MIN_LEASE.as_millis() as u64;
        for (name, value) in [
            ("client_lease_ms", cfg.client_lease_ms),
            ("instance_lease_ms", cfg.instance_lease_ms),
        ] {
            if value < min {
                let file = path.map_or("the site file".into(), |p| p.display().to_string());
                bail!("{name} = {value} in {file} is too short: use at least {min} (milliseconds)");
            }
        }
        if cfg.invalidation_wait_ms == 0 {
            let file = path.map_or("the site file".into(), |p| p.display().to_string());
            bail!("invalidation_wait_ms = 0 in {file}: use at least 1 (milliseconds)");
        }
        Ok(cfg)
    }
    fn dir(&self) -> Result<PathBuf> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => Ok(dirs::data_local_dir()
                .ok_or_else(|| anyhow!("no home directory: set data_dir in the site file"))?
                .join("meridian-site")),
        }
    }
}

pub fn run(args: SiteArgs) -> Result<()> {
    let cfg = SiteConfig::load(args.config.as_deref())?;
    let dir = cfg.dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match args.cmd {
        Some(SiteCmd::AddClient { name }) => {
            let token = clients::add(&dir.join("clients"), &name).map_err(|e| anyhow!(e))?;
            println!("client {name}: token {token}");
            println!(
                "mount with: meridian mount --meta quic://{} --meta-cert {} --meta-token {token} MOUNTPOINT",
                cfg.listen,
                cfg.cert
                    .clone()
                    .unwrap_or(dir.join("metaserver.crt"))
                    .display()
            );
            Ok(())
        }
        Some(SiteCmd::Status) => status(&dir),
        Some(SiteCmd::Feed {
            after,
            limit,
            token,
        }) => feed(&cfg, &dir, after, limit, token),
        None => serve(&cfg, &dir),
    }
}

fn feed(cfg: &SiteConfig, dir: &Path, after: u64, limit: usize, token: String) -> Result<()> {
    use meridian_proto::session::Invalidation;
    let m = MetaSection {
        url: format!("quic://{}", cfg.listen),
        cert: cfg.cert.clone().unwrap_or(dir.join("metaserver.crt")),
        token: Some(token),
        client: Some("feed".into()),
        timeout_ms: Some(10_000),
    };
    let (ns, _) = connect(&m)?;
    let changes = ns
        .changes(meridian_proto::Hlc(after), limit)
        .map_err(|e| anyhow!("metaserver {}: {e}", m.url))?;
    let mut cursor = after;
    for c in &changes {
        let items: Vec<String> = c
            .items
            .iter()
            .map(|i| match i {
                Invalidation::Inode(ino) => format!("inode {}", ino.0),
                Invalidation::Locks(ino) => format!("locks {}", ino.0),
                Invalidation::Entry { parent, name } => {
                    format!("entry {}/{}", parent.0, String::from_utf8_lossy(name))
                }
            })
            .collect();
        println!("{}\t{}\t{}", c.hlc.0, c.hlc, items.join(", "));
        cursor = c.hlc.0;
    }
    println!("cursor {cursor}");
    Ok(())
}

/// What `status` prints of the calls over a database (see `Hub::in_place`).
fn calls_line(hub: &meridian_metaserver::service::hub::Hub) -> String {
    let [here, apart] = hub
        .in_place
        .each_ref()
        .map(|n| n.load(std::sync::atomic::Ordering::Relaxed));
    format!(
        "calls over the database since start: {here} answered on the metaserver's thread, \
         {apart} moved to another (the database was slow to answer)\n"
    )
}

fn status(dir: &Path) -> Result<()> {
    let path = dir.join("sessions");
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(5));
    if !fresh {
        bail!(
            "no metaserver is running for {} (start it with `meridian metaserver --config …`)",
            dir.display()
        );
    }
    let text = std::fs::read_to_string(&path)?;
    println!(
        "metaserver running; {} client(s) connected",
        text.lines().count()
    );
    print!("{text}");
    if let Ok(calls) = std::fs::read_to_string(dir.join("calls")) {
        print!("{calls}");
    }
    Ok(())
}

fn serve(cfg: &SiteConfig, dir: &Path) -> Result<()> {
    let listen: SocketAddr = cfg
        .listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            anyhow!(
                "listen = {:?} is not an address (e.g. \"0.0.0.0:7443\")",
                cfg.listen
            )
        })?;
    let mut file = crate::config::FileConfig {
        data_dir: Some(dir.to_path_buf()),
        ..Default::default()
    };
    file.mount.inline_max_bytes = meridian_proto::DEFAULT_INLINE_MAX;
    // With PostgreSQL, other metaservers may change the namespace too: follow the feed.
    let (ns, follow, location): (Arc<dyn Namespace>, _, _) = match &cfg.postgres {
        Some(url) => {
            let shown = meridian_metaserver::store::pg::conninfo::redacted(url);
            let timeout = Duration::from_millis(cfg.postgres_timeout_ms.max(1));
            let sole = cfg.postgres_sole_writer;
            let store = meridian_metaserver::PgStore::connect_opts(url, timeout, sole)
                .map_err(|e| anyhow!("postgres = {shown:?} in the site file: {e}"))?;
            let mcfg = meridian_metaserver::MetaConfig {
                instance_lease: Duration::from_millis(cfg.instance_lease_ms),
                ..crate::open::meta_config(&file)
            };
            let meta = meridian_metaserver::Meta::open(store, mcfg)
                .map_err(|e| anyhow!("namespace in {shown}: {e}"))?;
            let origin = meta.instance();
            (Arc::new(meta), Some(origin), shown)
        }
        None => (
            crate::open::namespace(&file)?,
            None,
            dir.join("namespace.redb").display().to_string(),
        ),
    };
    let scfg = server::ServerConfig {
        listen,
        cert: cfg.cert.clone().unwrap_or(dir.join("metaserver.crt")),
        key: cfg.key.clone().unwrap_or(dir.join("metaserver.key")),
        clients: dir.join("clients"),
        names: cfg.names.clone(),
        lease: Duration::from_millis(cfg.client_lease_ms),
        ack_wait: Duration::from_millis(cfg.invalidation_wait_ms),
    };
    let rt = server::runtime()?;
    rt.block_on(async {
        let srv = Arc::new(server::Server::bind(&scfg).map_err(|e| anyhow!(e))?);
        println!(
            "meridian metaserver: listening on quic://{}",
            srv.local_addr()
        );
        println!("  namespace:   {location}");
        println!(
            "  certificate: {} (clients pin it: --meta-cert)",
            scfg.cert.display()
        );
        let (sessions, calls) = (dir.join("sessions"), dir.join("calls"));
        // One left by a metaserver killed before it could remove it is not this one's.
        let _ = std::fs::remove_file(&calls);
        let s2 = srv.clone();
        tokio::spawn(async move {
            loop {
                let text: String = s2
                    .sessions()
                    .iter()
                    .map(|s| format!("{}\t{}\n", s.name, s.addr))
                    .collect();
                let _ = std::fs::write(&sessions, text);
                if s2.hub.blocking.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::write(&calls, calls_line(&s2.hub));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        if let Some(origin) = follow {
            srv.hub
                .blocking
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let (s3, ns3) = (srv.clone(), ns.clone());
            let wake = Arc::new(tokio::sync::Notify::new());
            let url = cfg.postgres.clone().unwrap_or_default();
            let listen = meridian_metaserver::store::pg::listen::follow_announcements;
            tokio::spawn(listen(url, origin, wake.clone()));
            let poll = Duration::from_millis(cfg.feed_poll_ms.max(1));
            let upkeep = shared_locks::maintain_every(Duration::from_millis(cfg.instance_lease_ms));
            tokio::spawn(async move { s3.follow(ns3, origin, wake, poll, upkeep).await });
        }
        let serving = srv.serve(ns.clone(), scfg.clients.clone());
        tokio::select! {
            _ = serving => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate() => {}
        }
        srv.close();
        let ns4 = ns.clone();
        let _ = tokio::task::spawn_blocking(move || ns4.sync()).await;
        let _ = std::fs::remove_file(dir.join("sessions"));
        let _ = std::fs::remove_file(dir.join("calls"));
        tracing::info!("metaserver stopped");
        Ok(())
    })
}

async fn terminate() {
    if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        s.recv().await;
    }
}

/// Where a mount finds its site metaserver.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaSection {
    /// `quic://host:port`
    pub url: String,
    /// The metaserver's certificate (PEM), pinned.
    pub cert: PathBuf,
    pub token: Option<String>,
    /// The name this client gives (default: the host name).
    pub client: Option<String>,
    /// How long a metadata call may take before it fails with EIO (default 30000).
    pub timeout_ms: Option<u64>,
}

/// Connects to the site metaserver; errors name the URL or file and the fix. Returns the
/// namespace and the client (to install the invalidation handler once mounted).
pub fn connect(m: &MetaSection) -> Result<(Arc<dyn Namespace>, Arc<QuicClient>)> {
    let hostport = m
        .url
        .strip_prefix("quic://")
        .ok_or_else(|| anyhow!("--meta {:?}: expected quic://HOST:PORT", m.url))?;
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| anyhow!("--meta {}: {e}", m.url))?
        .next()
        .ok_or_else(|| anyhow!("--meta {}: no address", m.url))?;
    let token = m.token.clone().ok_or_else(|| {
        anyhow!("--meta needs a credential: pass --meta-token (from `meridian metaserver add-client NAME`)")
    })?;
    let name = m.client.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "client".into())
    });
    let timeout = Duration::from_millis(m.timeout_ms.unwrap_or(30_000));
    let client = QuicClient::connect(addr, &m.cert, &name, &token, timeout)
        .map_err(|e| anyhow!("metaserver {}: {e}", m.url))?;
    let client = Arc::new(client);
    Ok((Arc::new(Remote(client.clone())), client))
}
