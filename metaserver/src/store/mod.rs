//! The store seam: a transactional, ordered key-value store with a few fixed tables.
//!
//! Contract for implementations (checked by [`suite`], run against every backend):
//! - `write` runs its closure in one transaction: if the closure returns `Err`, nothing it
//!   wrote is visible afterwards; if it returns `Ok`, everything is, durably, once `write`
//!   returns. `write_with(Deferred, …)` is the same except that durability may come later
//!   (see [`Durability`]); a crash then rolls back whole transactions, newest first. A
//!   `write` whose closure returned `Ok` but that cannot make the change durable returns
//!   the error; whether the change stays depends on the store (PostgreSQL rolls it back;
//!   the redb store keeps it in its journal and memory layer and makes it durable at its
//!   next successful flush).
//! - Transactions are serializable: a `write` sees no interleaving writes of another.
//! - `scan` returns keys that start with the prefix, in byte order, strictly after
//!   `prefix ++ after` when `after` is given.

pub mod journal;
mod layer;
mod mem;
pub mod nowait;
mod overlay;
pub mod pg;
mod redb_store;
#[cfg(test)]
pub(crate) mod suite;

pub use mem::MemStore;
pub use pg::PgStore;
pub use redb_store::{RedbStore, journal_path};

use meridian_proto::MetaResult;

/// The tables every store holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    Inodes,
    Dentries,
    Xattrs,
    Data,
    /// A few small counters, read by most writes (a store may load it whole).
    Meta,
    Orphans,
    /// The change feed: HLC (big-endian) → what one transaction changed.
    Feed,
    /// Byte-range locks by inode, when the store is shared by several metaservers.
    Locks,
}

impl Table {
    pub const ALL: [Table; 8] = [
        Table::Inodes,
        Table::Dentries,
        Table::Xattrs,
        Table::Data,
        Table::Meta,
        Table::Orphans,
        Table::Feed,
        Table::Locks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Inodes => "inodes",
            Table::Dentries => "dentries",
            Table::Xattrs => "xattrs",
            Table::Data => "data",
            Table::Meta => "meta",
            Table::Orphans => "orphans",
            Table::Feed => "feed",
            Table::Locks => "locks",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A key and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Reads inside a transaction.
pub trait ReadTxn {
    fn get(&self, table: Table, key: &[u8]) -> MetaResult<Option<Vec<u8>>>;
    /// Up to `limit` pairs whose key starts with `prefix`, after `prefix ++ after` if given.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<Pair>>;
    /// A hint that the transaction is about to `get` these keys. A store that pays a round
    /// trip per read fetches them together; the others ignore it. Reads stay exact either
    /// way.
    fn prefetch(&self, _keys: &[(Table, &[u8])]) -> MetaResult<()> {
        Ok(())
    }
    /// Like [`ReadTxn::prefetch`], and also the scans `(table, prefix, limit)` (from the
    /// prefix's start) the transaction is about to make, fetched in the same round trip.
    fn prefetch_with_scans(
        &self,
        keys: &[(Table, &[u8])],
        _scans: &[(Table, &[u8], usize)],
    ) -> MetaResult<()> {
        self.prefetch(keys)
    }
    /// Whether the store remembers what it reads across transactions, and up to how many
    /// rows a listing may have for reading it whole to pay (PostgreSQL in sole mode: a
    /// directory read whole answers every later lookup in it, absent names too). None:
    /// read only what is asked.
    fn listing_hint(&self) -> Option<usize> {
        None
    }
}

/// Reads and writes inside a transaction.
pub trait WriteTxn: ReadTxn {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> MetaResult<()>;
    fn delete(&mut self, table: Table, key: &[u8]) -> MetaResult<()>;
    /// Asks that the other processes sharing the store be woken when this transaction
    /// commits, told that instance `from` wrote (PostgreSQL: `NOTIFY`). A hint: stores
    /// only one process uses ignore it.
    fn announce(&mut self, _from: u64) {}
    /// A hint that no key of `table` starting with `prefix` existed before this
    /// transaction (the keys of an inode it allocated): a store that remembers what it
    /// read may answer those keys' absence without asking. Stores that do not ignore it.
    fn fresh(&mut self, _table: Table, _prefix: &[u8]) {}
}

/// How soon a committed write must be on stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Before `write` returns.
    Immediate,
    /// Within the store's sync interval, or at the next `Immediate` write or `sync`,
    /// whichever comes first. A crash loses at most the deferred writes since then, whole
    /// transactions only: the store stays consistent.
    Deferred,
}

/// A transactional store.
pub trait Store: Send + Sync + 'static {
    fn read<T>(&self, f: impl FnOnce(&dyn ReadTxn) -> MetaResult<T>) -> MetaResult<T>;
    fn write_with<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut dyn WriteTxn) -> MetaResult<T>,
    ) -> MetaResult<T>;
    /// Makes every deferred write durable.
    fn sync(&self) -> MetaResult<()>;

    /// Other processes may use this store at the same time, so what one process keeps in
    /// memory (locks, for one) is not seen by the others and must be kept in the store.
    fn shared(&self) -> bool {
        false
    }

    /// Whether a call now would likely be answered without waiting for the network, so
    /// that a server may try it on its own thread ([`nowait`]). Stores that never wait on
    /// the network: always.
    fn answers_at_once(&self) -> bool {
        true
    }

    /// A write that is durable when this returns.
    fn write<T>(&self, f: impl FnOnce(&mut dyn WriteTxn) -> MetaResult<T>) -> MetaResult<T> {
        self.write_with(Durability::Immediate, f)
    }
}

/// The exclusive upper bound of keys starting with `prefix` (None if unbounded).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The first key a scan may return (inclusive) given its prefix and cursor.
pub(crate) fn scan_start(prefix: &[u8], after: Option<&[u8]>) -> Vec<u8> {
    let mut start = prefix.to_vec();
    if let Some(a) = after {
        start.extend_from_slice(a);
        start.push(0); // smallest key strictly greater than prefix ++ after
    }
    start
}
