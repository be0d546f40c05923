//! The Meridian client.
//!
//! Layout:
//! - [`core`]: the filesystem core ([`core::Fs`]): handles, buffered copy-on-write file
//!   data, directory listings, lookup counts. It speaks the [`meridian_proto::Namespace`]
//!   contract and the [`blocks::BlockStore`] trait and never imports `fuser`.
//! - [`blocks`]: where block bytes live: a local directory, S3 (Garage, MinIO, AWS), and an
//!   in-memory fake for tests; one suite runs against all.
//! - [`error`]: [`error::FsError`] and the one exhaustive match that chooses errno.
//! - [`fuse`]: the thin `fuser::Filesystem` adapter over the core.

pub mod blocks;
pub mod cache;
pub mod core;
pub mod error;
pub mod fuse;

pub use crate::core::{Fs, FsConfig};
pub use error::{FsError, FsResult};
