//! The contract between a Meridian client (`meridian-fs`) and a site's metaserver.
//!
//! This crate owns the vocabulary both sides speak and nothing else: inode ids, attributes,
//! file layouts (inline bytes or chunk-aligned extents over content-addressed blocks), the
//! caller's identity, the metadata error enum and the [`Namespace`] trait. It performs no I/O.
//!
//! Layout:
//! - [`types`]: ids, timestamps, attributes, directory entries, callers.
//! - [`layout`]: how a file's bytes are described (inline or a chunk map of [`BlockRef`]s).
//! - [`error`]: [`MetaError`], the one error type of the metadata layer (no errno here: the
//!   client chooses errno in exactly one place).
//! - [`namespace`]: the [`Namespace`] trait every metadata implementation provides.
//! - [`hlc`]: hybrid logical clock stamps of the change feed.
//! - [`wire`], [`session`]: the client ↔ metaserver protocol (codec, calls, pushed
//!   invalidations).
//!
//! Invariants every implementation keeps:
//! - Inode ids are unique across sites: the site id lives in the top [`SITE_BITS`] bits.
//! - The root directory is [`ROOT`] at every site.
//! - A chunk covers `[index * CHUNK_SIZE, (index + 1) * CHUNK_SIZE)` of the file; a block is
//!   never longer than [`CHUNK_SIZE`].

pub mod caller;
pub mod error;
pub mod hlc;
pub mod layout;
pub mod namespace;
pub mod session;
pub mod types;
pub mod wire;

pub use caller::{CallTag, Caller, Groups};
pub use error::{MetaError, MetaResult};
pub use hlc::Hlc;
pub use layout::{BlockId, BlockRef, CHUNK_SIZE, DEFAULT_INLINE_MAX, InlineRef, Layout};
pub use namespace::{
    Change, Commit, Lock, LockKind, LockOwner, Make, Namespace, RenameMode, SetAttr, StatFs,
    TimeSet, XattrMode,
};
pub use types::{Attr, DirEntry, FileKind, InodeId, ROOT, SITE_BITS, Timestamp};

/// Longest file name accepted, in bytes (as Linux's NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Longest symlink target accepted, in bytes (as Linux's PATH_MAX, less the terminator).
pub const PATH_MAX: usize = 4095;
/// Most hard links one inode may have.
pub const LINK_MAX: u32 = 65_000;
/// Longest extended-attribute name, and largest value, accepted (as Linux's XATTR limits).
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_SIZE_MAX: usize = 65_536;
