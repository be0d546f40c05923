//! How namespace records are keyed and encoded in a [`Store`](crate::Store).
//!
//! Keys (all integers big-endian, so byte order is numeric order):
//! - `inodes`:   ino → [`InodeRec`]
//! - `dentries`: parent ++ name → [`DentryRec`]
//! - `xattrs`:   ino ++ name → value
//! - `data`:     ino → [`Layout`] (regular files only)
//! - `meta`:     fixed names → counters; the ones most writes change ([`NEXT_INO`],
//!   [`FILES`], [`BYTES`], [`FEED_HLC`], [`GENERATION`]) together in the one row
//!   [`COUNTERS`] (a create rewrites one row, not three), the others (the [`FORMAT`],
//!   liveness stamps, the feed's trim point) in rows of their own
//! - `orphans`:  ino → [`OrphanRec`] (inodes with no name left, kept while open; empty
//!   for a store only one process uses)
//! - `feed`:     HLC stamp → the writing process, the items one transaction changed and
//!   the site call it was made for (the change feed; the last stamp issued is the counter
//!   [`FEED_HLC`]; entries written before the call was recorded lack it)
//!
//! Values are postcard-encoded; a value that does not decode is reported as
//! [`MetaError::Corrupt`] naming the table and key, never a panic.

use crate::store::{ReadTxn, Table, WriteTxn};
use meridian_proto::session::Invalidation;
use meridian_proto::{
    Attr, CallTag, FileKind, Hlc, InlineRef, InodeId, Layout, MetaError, MetaResult,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub const NEXT_INO: &[u8] = b"next_ino";
pub const FILES: &[u8] = b"files";
pub const BYTES: &[u8] = b"bytes";
pub const FEED_HLC: &[u8] = b"feed_hlc";
/// Bumped by every change that can alter placements beyond one file (see `meta::placement`).
pub const GENERATION: &[u8] = b"objectives_generation";
/// The `meta` row that holds the counters named in [`PACKED`], in that order.
pub const COUNTERS: &[u8] = b"counters";
/// The counters kept in the row [`COUNTERS`] (format 1 kept each in a row of its own,
/// under its name).
pub const PACKED: [&[u8]; 5] = [NEXT_INO, FILES, BYTES, FEED_HLC, GENERATION];
/// The on-disk format of the records; bumped whenever an encoding changes.
pub const FORMAT: &[u8] = b"format";
/// 2: the counters in [`PACKED`] share the row [`COUNTERS`], and a regular file's
/// placement record is in its inode ([`InodeRec::placement`]); format 1 is read too
/// (`Meta::open` converts its counters, [`InodeRec`] decodes either).
pub const FORMAT_VERSION: u64 = 2;

/// Where a counter lives: its index in the row [`COUNTERS`], or `None` for a row of its own.
fn packed(name: &[u8]) -> Option<usize> {
    PACKED.iter().position(|p| *p == name)
}

/// One inode as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeRec {
    pub attr: Attr,
    /// For directories, the parent directory (the root is its own parent).
    pub parent: InodeId,
    /// For symlinks, the target.
    pub target: Vec<u8>,
    /// For regular files, the placement objectives want (see `meta::placement`): kept in
    /// the inode's row, so a create writes one row fewer. `None` for other kinds, and in
    /// records written in format 1, which kept it in a hidden extended attribute.
    pub placement: Option<PlacementRec>,
}

/// An inode as format 1 stored it: without the placement.
#[derive(Deserialize)]
struct InodeRecV1 {
    attr: Attr,
    parent: InodeId,
    target: Vec<u8>,
}

/// Where the metaserver wants a regular file, and from which name it decided it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRec {
    /// The directory and name the file was last created or renamed as.
    pub parent: InodeId,
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// The objectives generation it was evaluated at.
    pub generation: u64,
    pub slos: Vec<String>,
}

/// Decodes an inode record of either format (format 1's lacks the placement; one of
/// format 2 never decodes as format 1's, nor the reverse: each would end early).
fn decode_inode(key: &[u8], bytes: &[u8]) -> MetaResult<InodeRec> {
    decode::<InodeRec>(Table::Inodes, key, bytes).or_else(|e| {
        let v1: InodeRecV1 = postcard::from_bytes(bytes).map_err(|_| e)?;
        Ok(InodeRec {
            attr: v1.attr,
            parent: v1.parent,
            target: v1.target,
            placement: None,
        })
    })
}

/// Who may still hold an orphan open, when several metaservers share the store (see
/// `meta::shared_opens`). An empty value decodes as the default: no one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanRec {
    /// Instances alive when it was orphaned that have not yet said whether they hold it.
    pub pending: Vec<u64>,
    /// Instances that hold it open.
    pub holders: Vec<u64>,
}

/// One directory entry as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DentryRec {
    pub ino: InodeId,
    pub kind: FileKind,
}

fn decode<T: DeserializeOwned>(table: Table, key: &[u8], bytes: &[u8]) -> MetaResult<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| MetaError::Corrupt(format!("{} key {}: {e}", table.name(), hex_key(key))))
}

/// Decodes a stored value of `table` as its record type; used to check a store's contents
/// and by the fuzz target (a decoder must never panic on any bytes).
pub fn check_value(table: Table, key: &[u8], bytes: &[u8]) -> MetaResult<()> {
    match table {
        Table::Inodes => decode_inode(key, bytes).map(drop),
        Table::Dentries => decode::<DentryRec>(table, key, bytes).map(drop),
        Table::Data => decode::<Layout>(table, key, bytes).map(drop),
        Table::Meta if key == COUNTERS => {
            decode::<[u64; PACKED.len()]>(table, key, bytes).map(drop)
        }
        Table::Meta => decode::<u64>(table, key, bytes).map(drop),
        Table::Feed => {
            decode::<(u64, Vec<meridian_proto::session::Invalidation>)>(table, key, bytes).map(drop)
        }
        Table::Locks => decode::<Vec<crate::meta::locks::Stored>>(table, key, bytes).map(drop),
        Table::Orphans => decode_orphan(key, bytes).map(drop),
        Table::Xattrs => Ok(()),
    }
}

fn decode_orphan(key: &[u8], bytes: &[u8]) -> MetaResult<OrphanRec> {
    match bytes.is_empty() {
        true => Ok(OrphanRec::default()),
        false => decode(Table::Orphans, key, bytes),
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("encoding to a Vec cannot fail")
}

fn hex_key(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn ino_key(ino: InodeId) -> [u8; 8] {
    ino.0.to_be_bytes()
}

/// The inode a key made by [`ino_key`] names.
pub fn key_ino(table: Table, key: &[u8]) -> MetaResult<InodeId> {
    let b: [u8; 8] = key.try_into().map_err(|_| {
        MetaError::Corrupt(format!(
            "{} key {}: not an inode number",
            table.name(),
            hex_key(key)
        ))
    })?;
    Ok(InodeId(u64::from_be_bytes(b)))
}

pub fn child_key(parent: InodeId, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&ino_key(parent));
    k.extend_from_slice(name);
    k
}

/// Typed reads over any transaction.
pub trait Records {
    fn txn(&self) -> &dyn ReadTxn;

    fn inode(&self, ino: InodeId) -> MetaResult<InodeRec> {
        self.try_inode(ino)?.ok_or(MetaError::NotFound)
    }
    fn try_inode(&self, ino: InodeId) -> MetaResult<Option<InodeRec>> {
        let key = ino_key(ino);
        match self.txn().get(Table::Inodes, &key)? {
            Some(v) => Ok(Some(decode_inode(&key, &v)?)),
            None => Ok(None),
        }
    }
    /// Hints that `parent`'s record and its entry `name` are read next (see
    /// [`ReadTxn::prefetch`]).
    fn prefetch_entries(&self, entries: &[(InodeId, &[u8])]) -> MetaResult<()> {
        let keys: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|&(p, n)| (ino_key(p).to_vec(), child_key(p, n)))
            .collect();
        let mut hint = Vec::with_capacity(keys.len() * 2);
        for (i, c) in &keys {
            hint.push((Table::Inodes, i.as_slice()));
            hint.push((Table::Dentries, c.as_slice()));
        }
        // A store that remembers: the directories' listings too (once; see the hint).
        let listings: Vec<(Table, &[u8], usize)> = match self.txn().listing_hint() {
            Some(most) => keys
                .iter()
                .map(|(i, _)| (Table::Dentries, i.as_slice(), most))
                .collect(),
            None => Vec::new(),
        };
        self.txn().prefetch_with_scans(&hint, &listings)
    }
    /// Before `d`'s name is removed: its inode, its xattr names and, for a directory, its
    /// first entry (is it empty?), together — one round trip where a store pays one per read.
    fn prefetch_removal(&self, d: &DentryRec) -> MetaResult<()> {
        let key = ino_key(d.ino);
        let mut scans = vec![(Table::Xattrs, key.as_slice(), usize::MAX)];
        if d.kind == FileKind::Directory {
            scans.push((Table::Dentries, key.as_slice(), 1));
        }
        let inode = [(Table::Inodes, key.as_slice())];
        self.txn().prefetch_with_scans(&inode, &scans)
    }
    /// Like [`Records::prefetch_entries`], the names only (not their directories).
    fn prefetch_names(&self, entries: &[(InodeId, &[u8])]) -> MetaResult<()> {
        let keys: Vec<Vec<u8>> = entries.iter().map(|&(p, n)| child_key(p, n)).collect();
        let hint: Vec<(Table, &[u8])> = keys
            .iter()
            .map(|k| (Table::Dentries, k.as_slice()))
            .collect();
        self.txn().prefetch(&hint)
    }
    fn dentry(&self, parent: InodeId, name: &[u8]) -> MetaResult<Option<DentryRec>> {
        let key = child_key(parent, name);
        match self.txn().get(Table::Dentries, &key)? {
            Some(v) => Ok(Some(decode(Table::Dentries, &key, &v)?)),
            None => Ok(None),
        }
    }
    fn children(
        &self,
        parent: InodeId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<(Vec<u8>, DentryRec)>> {
        let prefix = ino_key(parent);
        self.txn()
            .scan(Table::Dentries, &prefix, after, limit)?
            .into_iter()
            .map(|(k, v)| Ok((k[8..].to_vec(), decode(Table::Dentries, &k, &v)?)))
            .collect()
    }
    fn is_empty_dir(&self, dir: InodeId) -> MetaResult<bool> {
        Ok(self.children(dir, None, 1)?.is_empty())
    }
    fn layout(&self, ino: InodeId) -> MetaResult<Layout> {
        let key = ino_key(ino);
        match self.txn().get(Table::Data, &key)? {
            Some(v) => decode(Table::Data, &key, &v),
            None => Ok(Layout::default()),
        }
    }
    /// `ino`'s byte-range locks, when a shared store keeps them.
    fn locks(&self, ino: InodeId) -> MetaResult<Vec<crate::meta::locks::Stored>> {
        let key = ino_key(ino);
        match self.txn().get(Table::Locks, &key)? {
            Some(v) => decode(Table::Locks, &key, &v),
            None => Ok(Vec::new()),
        }
    }
    /// Every inode with locks, and its locks.
    fn all_locks(&self) -> MetaResult<Vec<(InodeId, Vec<crate::meta::locks::Stored>)>> {
        self.every_inode(Table::Locks, |k, v| decode(Table::Locks, k, v))
    }
    /// `ino`'s orphan record, if it is an orphan.
    fn orphan(&self, ino: InodeId) -> MetaResult<Option<OrphanRec>> {
        let key = ino_key(ino);
        match self.txn().get(Table::Orphans, &key)? {
            Some(v) => Ok(Some(decode_orphan(&key, &v)?)),
            None => Ok(None),
        }
    }
    /// Every orphan and its record.
    fn orphans(&self) -> MetaResult<Vec<(InodeId, OrphanRec)>> {
        self.every_inode(Table::Orphans, decode_orphan)
    }
    /// Every row of `table`, an inode-keyed table, with its value decoded by `decode`.
    fn every_inode<T>(
        &self,
        table: Table,
        decode: impl Fn(&[u8], &[u8]) -> MetaResult<T>,
    ) -> MetaResult<Vec<(InodeId, T)>> {
        let rows = self.txn().scan(table, b"", None, usize::MAX)?;
        rows.iter()
            .map(|(k, v)| Ok((key_ino(table, k)?, decode(k, v)?)))
            .collect()
    }
    /// A counter (0 until first set).
    fn counter(&self, name: &[u8]) -> MetaResult<u64> {
        match packed(name) {
            Some(i) => Ok(self.counters()?[i]),
            None => self.own_counter(name),
        }
    }
    /// The row [`COUNTERS`].
    fn counters(&self) -> MetaResult<[u64; PACKED.len()]> {
        match self.txn().get(Table::Meta, COUNTERS)? {
            Some(v) => decode(Table::Meta, COUNTERS, &v),
            None => Ok([0; PACKED.len()]),
        }
    }
    /// A counter kept in a row of its own under its name.
    fn own_counter(&self, name: &[u8]) -> MetaResult<u64> {
        match self.txn().get(Table::Meta, name)? {
            Some(v) => decode(Table::Meta, name, &v),
            None => Ok(0),
        }
    }
    fn xattr(&self, ino: InodeId, name: &[u8]) -> MetaResult<Option<Vec<u8>>> {
        self.txn().get(Table::Xattrs, &child_key(ino, name))
    }
    fn xattr_names(&self, ino: InodeId) -> MetaResult<Vec<Vec<u8>>> {
        let prefix = ino_key(ino);
        Ok(self
            .txn()
            .scan(Table::Xattrs, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, _)| k[8..].to_vec())
            .collect())
    }
}

impl Records for &dyn ReadTxn {
    fn txn(&self) -> &dyn ReadTxn {
        *self
    }
}

/// Typed writes inside a write transaction; notes what they change (for the feed).
pub struct Writer<'a> {
    pub txn: &'a mut dyn WriteTxn,
    pub touched: Vec<Invalidation>,
}

impl Records for Writer<'_> {
    fn txn(&self) -> &dyn ReadTxn {
        // A WriteTxn is a ReadTxn; upcast the trait object.
        self.txn as &dyn ReadTxn
    }
}

impl<'a> Writer<'a> {
    pub fn new(txn: &'a mut dyn WriteTxn) -> Self {
        Writer {
            txn,
            touched: Vec::new(),
        }
    }
    fn touch(&mut self, ino: InodeId) {
        if self.touched.last() != Some(&Invalidation::Inode(ino)) {
            self.touched.push(Invalidation::Inode(ino));
        }
    }
    fn touch_entry(&mut self, parent: InodeId, name: &[u8]) {
        self.touched.push(Invalidation::Entry {
            parent,
            name: name.to_vec(),
        });
    }
    /// Appends what this transaction changed to the change feed, stamped after the last
    /// stamp (and at least the wall time `now_ms`), with the writing process's `origin`
    /// and the site `call` it was made for; returns the stamp. Nothing if nothing changed.
    pub fn append_feed(
        &mut self,
        now_ms: u64,
        origin: u64,
        call: Option<CallTag>,
    ) -> MetaResult<Option<Hlc>> {
        if self.touched.is_empty() {
            return Ok(None);
        }
        let mut items = std::mem::take(&mut self.touched);
        let mut seen = std::collections::HashSet::new();
        items.retain(|i| seen.insert(i.clone()));
        let hlc = Hlc(self.counter(FEED_HLC)?).tick(now_ms);
        self.set_counter(FEED_HLC, hlc.0)?;
        self.txn.put(
            Table::Feed,
            &hlc.0.to_be_bytes(),
            &encode(&(origin, items, call)),
        )?;
        Ok(Some(hlc))
    }
    pub fn put_inode(&mut self, rec: &InodeRec) -> MetaResult<()> {
        self.touch(rec.attr.ino);
        self.txn
            .put(Table::Inodes, &ino_key(rec.attr.ino), &encode(rec))
    }
    pub fn put_attr(&mut self, attr: &Attr) -> MetaResult<()> {
        let mut rec = self.inode(attr.ino)?;
        rec.attr = attr.clone();
        self.put_inode(&rec)
    }
    pub fn put_dentry(&mut self, parent: InodeId, name: &[u8], d: DentryRec) -> MetaResult<()> {
        self.touch_entry(parent, name);
        self.txn
            .put(Table::Dentries, &child_key(parent, name), &encode(&d))
    }
    pub fn del_dentry(&mut self, parent: InodeId, name: &[u8]) -> MetaResult<()> {
        self.touch_entry(parent, name);
        self.txn.delete(Table::Dentries, &child_key(parent, name))
    }
    pub fn put_layout(&mut self, ino: InodeId, layout: &Layout) -> MetaResult<()> {
        self.touch(ino);
        self.txn.put(Table::Data, &ino_key(ino), &encode(layout))
    }
    /// [`Self::put_layout`] of `Layout::Inline(bytes)`, without copying `bytes` first.
    pub fn put_inline(&mut self, ino: InodeId, bytes: &[u8]) -> MetaResult<()> {
        self.touch(ino);
        self.txn.put(
            Table::Data,
            &ino_key(ino),
            &encode(&InlineRef::Inline(bytes)),
        )
    }
    pub fn set_counter(&mut self, name: &[u8], v: u64) -> MetaResult<()> {
        match packed(name) {
            Some(i) => {
                let mut all = self.counters()?;
                all[i] = v;
                self.txn.put(Table::Meta, COUNTERS, &encode(&all))
            }
            None => self.txn.put(Table::Meta, name, &encode(&v)),
        }
    }
    /// Moves format 1's counters, each in a row of its own, into the row [`COUNTERS`].
    pub fn pack_counters(&mut self) -> MetaResult<()> {
        let mut all = [0; PACKED.len()];
        for (slot, name) in all.iter_mut().zip(PACKED) {
            *slot = self.own_counter(name)?;
            self.txn.delete(Table::Meta, name)?;
        }
        self.txn.put(Table::Meta, COUNTERS, &encode(&all))
    }
    /// Adds `delta` (which may be negative) to a counter, saturating at zero.
    pub fn add_counter(&mut self, name: &[u8], delta: i64) -> MetaResult<()> {
        let v = self.counter(name)?.saturating_add_signed(delta);
        self.set_counter(name, v)
    }
    pub fn put_xattr(&mut self, ino: InodeId, name: &[u8], value: &[u8]) -> MetaResult<()> {
        self.touch(ino);
        self.txn.put(Table::Xattrs, &child_key(ino, name), value)
    }
    pub fn del_xattr(&mut self, ino: InodeId, name: &[u8]) -> MetaResult<()> {
        self.touch(ino);
        self.txn.delete(Table::Xattrs, &child_key(ino, name))
    }
    /// Stores `ino`'s locks (none: the entry goes). The change feed says the locks there
    /// changed, so metaservers sharing the store wake their clients waiting for one.
    pub fn put_locks(
        &mut self,
        ino: InodeId,
        locks: &[crate::meta::locks::Stored],
    ) -> MetaResult<()> {
        self.touched.push(Invalidation::Locks(ino));
        match locks.is_empty() {
            true => self.txn.delete(Table::Locks, &ino_key(ino)),
            false => self.txn.put(Table::Locks, &ino_key(ino), &encode(&locks)),
        }
    }
    /// Marks `ino` an orphan with `rec` (`None`: no longer an orphan).
    pub fn set_orphan(&mut self, ino: InodeId, rec: Option<&OrphanRec>) -> MetaResult<()> {
        match rec {
            Some(r) if *r == OrphanRec::default() => {
                self.txn.put(Table::Orphans, &ino_key(ino), &[])
            }
            Some(r) => self.txn.put(Table::Orphans, &ino_key(ino), &encode(r)),
            None => self.txn.delete(Table::Orphans, &ino_key(ino)),
        }
    }
    /// Removes an inode and everything hanging off it (data, xattrs, orphan mark).
    pub fn purge_inode(&mut self, ino: InodeId) -> MetaResult<()> {
        let rec = self.inode(ino)?;
        self.touch(ino);
        for name in self.xattr_names(ino)? {
            self.del_xattr(ino, &name)?;
        }
        self.txn.delete(Table::Data, &ino_key(ino))?;
        self.txn.delete(Table::Locks, &ino_key(ino))?;
        self.txn.delete(Table::Inodes, &ino_key(ino))?;
        self.set_orphan(ino, None)?;
        self.add_counter(FILES, -1)?;
        self.add_counter(BYTES, -(rec.attr.size as i64))
    }
}
