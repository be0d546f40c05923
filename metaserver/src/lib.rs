//! A Meridian site's metadata authority.
//!
//! Layout:
//! - [`store`]: the transactional key-value [`store::Store`] trait at the seam, with an
//!   in-memory backend ([`store::MemStore`], for fast tests) and the embedded default
//!   ([`store::RedbStore`], one file on local disk) and PostgreSQL ([`store::PgStore`], for
//!   sites whose metaservers share a database). One test suite runs against all three.
//! - [`records`]: how inodes, entries, xattrs and layouts are keyed and encoded in a store.
//! - [`meta`]: [`Meta`], the POSIX rules written once over any store, implementing
//!   [`meridian_proto::Namespace`].
//! - [`service`]: the site metaserver over QUIC and its client.
//!
//! Invariant: every mutation is one store transaction, so a crash at any instant leaves the
//! namespace as it was before or after that mutation, never between.

pub mod meta;
pub mod records;
pub mod service;
pub mod store;

pub use meta::{Meta, MetaConfig};

/// Fills `buf` from the kernel's random generator (credentials, process ids).
pub(crate) fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, buf))
}

/// A random id (from the kernel's generator; the clock and process id if it cannot be read).
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    match random_bytes(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => meridian_proto::Hlc::wall_millis() ^ u64::from(std::process::id()) << 32,
    }
}
pub use store::{MemStore, PgStore, RedbStore, Store};
