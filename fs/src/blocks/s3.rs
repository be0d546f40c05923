//! A [`BlockStore`] in an S3 bucket (AWS S3, Garage, MinIO, private endpoints).
//!
//! Owns: its own small tokio runtime, so callers stay synchronous (FUSE worker threads call
//! `put`/`get` and block on the runtime). Invariant: callers are never tokio worker threads.
//! A transfer runs as a task on the runtime ([`S3Store::run`]), whose workers poll the
//! socket and run it in place; the caller is woken once, when it is done (a caller that
//! polled the request itself, `block_on`, was woken from a worker for every piece of a
//! body sent or received: a quarter of the CPU of a cold read went to those wake-ups).
//! Errors are turned into one line that names the endpoint or bucket and the likely fix.

use super::{BlockError, BlockInfo, BlockStore, block_key, parse_block_key};
use crate::cache::aligned::AlignedVec;
use aws_config::{BehaviorVersion, Region, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use meridian_proto::BlockId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The bucket name.
    pub bucket: String,
    /// Endpoint URL (e.g. `http://127.0.0.1:3900` for Garage); `None` means AWS.
    pub endpoint: Option<String>,
    /// Region to sign for (Garage's default is `garage`; AWS needs the bucket's region).
    pub region: String,
    /// Key prefix inside the bucket, e.g. `meridian/`.
    pub prefix: String,
    /// Use path-style addressing (`endpoint/bucket/key`); the default for custom endpoints.
    pub path_style: Option<bool>,
    /// Static credentials; when absent the standard AWS chain is used (environment,
    /// profile, instance metadata).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Sign each upload's payload with SHA-256 (SigV4) instead of sending it unsigned with
    /// a CRC32C checksum the server verifies. For servers that take neither unsigned
    /// payloads nor trailing checksums; costs a SHA-256 pass over every byte uploaded.
    pub sign_payload: bool,
}

pub struct S3Store {
    rt: tokio::runtime::Runtime,
    client: Client,
    /// Shared with the transfers' tasks (their errors name the bucket and endpoint).
    cfg: Arc<S3Config>,
}

fn s3_err<E>(op: &'static str, cfg: &S3Config, e: SdkError<E, HttpResponse>) -> BlockError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let where_ = format!(
        "bucket '{}' at {}",
        cfg.bucket,
        cfg.endpoint.as_deref().unwrap_or("AWS S3")
    );
    let message = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => format!(
            "cannot reach {where_}: {} — check --endpoint and that the S3 server is running",
            root_cause(&e)
        ),
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("");
            let status = se.raw().status().as_u16();
            match (code, status) {
                ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied", _) | (_, 403) => {
                    let code = if code.is_empty() {
                        String::new()
                    } else {
                        format!(" {code}")
                    };
                    format!(
                        "{where_} refused the credentials (HTTP {status}{code}) — check the access key and secret"
                    )
                }
                ("NoSuchBucket", _) | ("NotFound", _) if op == "HeadBucket" => {
                    format!("{where_} does not exist — create it or fix --bucket")
                }
                (_, 404) if op == "HeadBucket" => {
                    format!("{where_} does not exist — create it or fix --bucket")
                }
                ("AuthorizationHeaderMalformed", _) => {
                    format!(
                        "{where_} rejected the signing region '{}' — set --region to the server's region",
                        cfg.region
                    )
                }
                _ => format!("{where_}: {}", DisplayErrorContext(&e)),
            }
        }
        _ => format!("{where_}: {}", DisplayErrorContext(&e)),
    };
    BlockError::S3 { op, message }
}

/// The innermost cause of an error ("Connection refused (os error 111)"), or a timeout note.
fn root_cause<E: std::error::Error + 'static>(e: &SdkError<E, HttpResponse>) -> String {
    if let SdkError::TimeoutError(_) = e {
        return "timed out".into();
    }
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let msg = cur.to_string();
    if msg.is_empty() {
        DisplayErrorContext(e).to_string()
    } else {
        msg
    }
}

impl S3Store {
    pub fn new(cfg: S3Config) -> Result<Self, BlockError> {
        if cfg.bucket.is_empty() {
            return Err(BlockError::Config(
                "no S3 bucket given: pass --bucket NAME or set [s3] bucket".into(),
            ));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("meridian-s3")
            .enable_all()
            .build()
            .map_err(|e| BlockError::Config(format!("cannot start the S3 runtime: {e}")))?;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(60))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(if cfg.region.is_empty() {
                "us-east-1".to_string()
            } else {
                cfg.region.clone()
            }))
            .timeout_config(timeouts);
        if let Some(ep) = &cfg.endpoint {
            loader = loader.endpoint_url(ep);
        }
        match (&cfg.access_key_id, &cfg.secret_access_key) {
            (Some(k), Some(s)) => {
                loader = loader.credentials_provider(Credentials::new(
                    k,
                    s,
                    None,
                    None,
                    "meridian-config",
                ))
            }
            (None, None) => {}
            _ => {
                return Err(BlockError::Config(
                    "give both access_key_id and secret_access_key, or neither".into(),
                ));
            }
        }
        let sdk = rt.block_on(loader.load());
        let path_style = cfg.path_style.unwrap_or(cfg.endpoint.is_some());
        // Blocks carry their own BLAKE3 name, verified on every read: the SDK's extra CRC
        // checksums would only spend CPU on every byte again.
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(path_style)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        Ok(S3Store {
            rt,
            client: Client::from_conf(conf),
            cfg: Arc::new(cfg),
        })
    }

    fn key(&self, id: &BlockId) -> String {
        format!("{}{}", self.cfg.prefix, block_key(id))
    }

    /// Runs `transfer` as a task on the runtime and waits for it (see the module's doc).
    fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        transfer: impl Future<Output = Result<T, BlockError>> + Send + 'static,
    ) -> Result<T, BlockError> {
        let task = self.rt.spawn(transfer);
        self.rt.block_on(task).unwrap_or_else(|e| {
            Err(BlockError::S3 {
                op,
                message: format!("the request's task ended: {e}"),
            })
        })
    }
}

impl BlockStore for S3Store {
    fn put(&self, id: &BlockId, data: Bytes) -> Result<(), BlockError> {
        let req = self
            .client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(self.key(id))
            .body(ByteStream::from(data));
        // By default the payload goes unsigned (SigV4's UNSIGNED-PAYLOAD) with a CRC32C
        // checksum the server checks before storing (hardware CRC: next to free, where
        // SHA-256 cost a tenth of a core at 250 MiB/s); every read verifies the block's
        // BLAKE3 name besides.
        let req = match self.cfg.sign_payload {
            true => req.customize(),
            false => req
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C)
                .customize()
                .disable_payload_signing(),
        };
        let cfg = self.cfg.clone();
        self.run("PutObject", async move {
            req.send()
                .await
                .map(drop)
                .map_err(|e| s3_err("PutObject", &cfg, e))
        })
    }

    fn get(&self, id: &BlockId) -> Result<Bytes, BlockError> {
        let key = self.key(id);
        let req = self.client.get_object().bucket(&self.cfg.bucket).key(&key);
        let (id, cfg) = (*id, self.cfg.clone());
        self.run("GetObject", async move {
            let out = match req.send().await {
                Ok(out) => out,
                Err(SdkError::ServiceError(se)) if se.err().is_no_such_key() => {
                    return Err(BlockError::NotFound(id));
                }
                Err(e) => return Err(s3_err("GetObject", &cfg, e)),
            };
            // Received straight into aligned memory: the disk tier writes it from there.
            let len = out.content_length().and_then(|l| usize::try_from(l).ok());
            let mut data = AlignedVec::with_capacity(len.unwrap_or(0));
            let mut body = out.body;
            let failed = |e| BlockError::S3 {
                op: "GetObject",
                message: format!("reading the body of {key}: {e}"),
            };
            while let Some(piece) = body.try_next().await.map_err(failed)? {
                data.extend_from_slice(&piece);
            }
            Ok(data.into_bytes())
        })
    }

    fn delete(&self, id: &BlockId) -> Result<(), BlockError> {
        let req = self
            .client
            .delete_object()
            .bucket(&self.cfg.bucket)
            .key(self.key(id));
        self.rt
            .block_on(req.send())
            .map_err(|e| s3_err("DeleteObject", &self.cfg, e))?;
        Ok(())
    }

    fn list(&self) -> Result<Vec<BlockInfo>, BlockError> {
        let prefix = format!("{}blocks/", self.cfg.prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .client
                .list_objects_v2()
                .bucket(&self.cfg.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.clone());
            let page = self
                .rt
                .block_on(req.send())
                .map_err(|e| s3_err("ListObjectsV2", &self.cfg, e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                let Some(id) = key.strip_prefix(&self.cfg.prefix).and_then(parse_block_key) else {
                    continue;
                };
                let modified = obj
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::now());
                out.push(BlockInfo {
                    id,
                    size: obj.size().unwrap_or(0) as u64,
                    modified,
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    fn check(&self) -> Result<(), BlockError> {
        let req = self.client.head_bucket().bucket(&self.cfg.bucket);
        self.rt
            .block_on(req.send())
            .map_err(|e| s3_err("HeadBucket", &self.cfg, e))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "s3://{}/{} at {}",
            self.cfg.bucket,
            self.cfg.prefix,
            self.cfg.endpoint.as_deref().unwrap_or("AWS S3")
        )
    }
}
