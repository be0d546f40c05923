//! Configuration: the TOML file, command-line overrides, and the defaults.
//!
//! Precedence: command-line flag > config file > default. Every option is documented in
//! docs/configuration.md; keep the two in step.

use anyhow::{Context, Result, bail};
use meridian_fs::blocks::S3Config;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Where the embedded namespace, local blocks and logs live.
    pub data_dir: Option<PathBuf>,
    /// The bucket; absent means blocks are kept in `<data_dir>/blocks`.
    pub s3: Option<S3Config>,
    /// A site metaserver instead of the embedded namespace.
    pub meta: Option<crate::site::MetaSection>,
    pub mount: MountSection,
    pub cache: CacheSection,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountSection {
    pub attr_ttl_ms: u64,
    pub allow_other: bool,
    pub read_only: bool,
    pub threads: usize,
    /// The kernel's read-ahead for the mount, in KiB (0: the kernel's own).
    pub read_ahead_kb: u32,
    pub inline_max_bytes: u64,
    pub capacity_bytes: u64,
    pub upload_concurrency: usize,
    pub max_dirty_bytes: u64,
    pub readahead_max_bytes: u64,
    pub sequence_depth: u32,
    /// Stage blocks on local disk and upload in the background (the weaker guarantee).
    pub write_back: bool,
    /// FUSE passthrough for files whose blocks are all in the NVMe tier (default: on when
    /// the NVMe tier is).
    pub passthrough: Option<bool>,
    pub passthrough_bytes: u64,
}

impl Default for MountSection {
    fn default() -> Self {
        let fs = meridian_fs::FsConfig::default();
        MountSection {
            attr_ttl_ms: 1000,
            allow_other: false,
            read_only: false,
            threads: 8,
            read_ahead_kb: 1024,
            inline_max_bytes: fs.inline_max,
            capacity_bytes: fs.capacity_bytes,
            upload_concurrency: fs.upload_concurrency,
            max_dirty_bytes: fs.max_dirty_bytes,
            readahead_max_bytes: fs.readahead_max_bytes,
            sequence_depth: fs.sequence_depth,
            write_back: false,
            passthrough: None,
            passthrough_bytes: fs.passthrough_bytes,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    pub memory_bytes: u64,
    /// NVMe cache directory; default `<data_dir>/cache` when blocks are in a bucket.
    pub disk_dir: Option<PathBuf>,
    /// `false` turns the disk tier off (default: on with a bucket, off for local blocks).
    pub disk: Option<bool>,
    pub disk_bytes: u64,
    pub disk_min_free_ratio: f64,
    pub fetch_concurrency: usize,
}

impl Default for CacheSection {
    fn default() -> Self {
        let c = meridian_fs::cache::CacheConfig::default();
        CacheSection {
            memory_bytes: c.memory_bytes,
            disk_dir: None,
            disk: None,
            disk_bytes: c.disk_bytes,
            disk_min_free_ratio: c.disk_min_free_ratio,
            fetch_concurrency: c.fetch_concurrency,
        }
    }
}

/// Reads a TOML file; an error names the file, the line and column, and the problem.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let at = e.span().map(|s| {
            let before = &text[..s.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" line {line}, column {col}")
        });
        anyhow::anyhow!(
            "{what} {}{}: {}",
            path.display(),
            at.unwrap_or_default(),
            e.message().trim()
        )
    })
}

impl FileConfig {
    /// The block cache settings these options describe.
    pub fn cache_config(&self) -> Result<meridian_fs::cache::CacheConfig> {
        let c = &self.cache;
        let disk_on = c.disk.unwrap_or(self.s3.is_some());
        let disk_dir = match (&c.disk_dir, disk_on) {
            (_, false) => None,
            (Some(d), true) => Some(d.clone()),
            (None, true) => Some(self.data_dir()?.join("cache")),
        };
        if !(0.0..1.0).contains(&c.disk_min_free_ratio) {
            bail!(
                "cache.disk_min_free_ratio = {} must be at least 0 and below 1",
                c.disk_min_free_ratio
            );
        }
        Ok(meridian_fs::cache::CacheConfig {
            memory_bytes: c.memory_bytes,
            disk_dir,
            disk_bytes: c.disk_bytes,
            disk_min_free_ratio: c.disk_min_free_ratio,
            fetch_concurrency: c.fetch_concurrency.max(1),
        })
    }
}

impl FileConfig {
    /// Reads `path`; errors name the file and the offending key.
    pub fn load(path: &Path) -> Result<Self> {
        load_toml(path, "config file")
    }

    /// The data directory: configured, or `~/.local/share/meridian`.
    pub fn data_dir(&self) -> Result<PathBuf> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => match dirs::data_dir() {
                Some(d) => Ok(d.join("meridian")),
                None => bail!("cannot find a data directory (no HOME?): pass --data-dir DIR"),
            },
        }
    }
}

/// S3 flags shared by commands that open the block store.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct S3Flags {
    /// S3 bucket for file blocks (default: blocks stay in DATA_DIR/blocks)
    #[arg(long, env = "MERIDIAN_BUCKET")]
    pub bucket: Option<String>,
    /// S3 endpoint URL, e.g. http://127.0.0.1:3900 (default: AWS)
    #[arg(long, env = "MERIDIAN_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Region to sign requests for [default: us-east-1]
    #[arg(long, env = "MERIDIAN_REGION")]
    pub region: Option<String>,
    /// Key prefix inside the bucket, e.g. "studio/"
    #[arg(long)]
    pub prefix: Option<String>,
    /// Use path-style addressing (default: on with --endpoint, off for AWS)
    #[arg(long)]
    pub path_style: Option<bool>,
    /// Access key id (default: the standard AWS credential chain)
    #[arg(long, env = "MERIDIAN_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// Secret access key
    #[arg(long, env = "MERIDIAN_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
    /// Sign upload payloads with SHA-256 instead of a CRC32C checksum (servers that refuse
    /// unsigned payloads)
    #[arg(long)]
    pub sign_payload: bool,
}

/// Flags that locate the namespace and blocks.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct StoreFlags {
    /// TOML configuration file (see docs/configuration.md)
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Where the embedded namespace and local blocks live [default: ~/.local/share/meridian]
    #[arg(long, env = "MERIDIAN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub s3: S3Flags,
}

impl StoreFlags {
    /// The file configuration with these flags applied on top.
    pub fn resolve(&self) -> Result<FileConfig> {
        let mut cfg = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        if let Some(d) = &self.data_dir {
            cfg.data_dir = Some(d.clone());
        }
        let f = &self.s3;
        if f.bucket.is_some() || cfg.s3.is_some() {
            let mut s3 = cfg.s3.take().unwrap_or_default();
            macro_rules! set {
                ($field:ident) => {
                    if let Some(v) = &f.$field {
                        s3.$field = v.clone().into();
                    }
                };
            }
            set!(bucket);
            set!(region);
            set!(prefix);
            if f.endpoint.is_some() {
                s3.endpoint = f.endpoint.clone();
            }
            if f.path_style.is_some() {
                s3.path_style = f.path_style;
            }
            if f.access_key_id.is_some() {
                s3.access_key_id = f.access_key_id.clone();
            }
            if f.secret_access_key.is_some() {
                s3.secret_access_key = f.secret_access_key.clone();
            }
            s3.sign_payload |= f.sign_payload;
            cfg.s3 = Some(s3);
        } else if f.endpoint.is_some() {
            bail!("--endpoint given without --bucket: name the bucket that holds the blocks");
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(&p, "[mount]\nattr_ttl = 5\n").unwrap();
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("m.toml") && e.contains("attr_ttl"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(&p, "[s3]\nbucket = \"a\"\nregion = \"garage\"\n").unwrap();
        let flags = StoreFlags {
            config: Some(p),
            s3: S3Flags {
                bucket: Some("b".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let cfg = flags.resolve().unwrap();
        let s3 = cfg.s3.unwrap();
        assert_eq!((s3.bucket.as_str(), s3.region.as_str()), ("b", "garage"));
    }
}
