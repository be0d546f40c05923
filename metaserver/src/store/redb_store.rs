//! The embedded default [`Store`]: one redb database file and its redo journal.
//!
//! Invariants: every table exists from `open` on. An immediate write is one redb write
//! transaction committed with fsync before `write` returns. A deferred write is committed
//! without fsync and its changes appended to the [`journal`](super::journal) before it
//! returns, so it survives a crash of the process at once and a crash of the machine after
//! the next sync (at most [`SYNC_INTERVAL`] later, or at the next immediate write or
//! `sync`). Each transaction stamps the journal sequence it reached in a private table;
//! opening replays the journal records after the durable stamp, so acknowledged deferred
//! writes are never lost to a `kill -9`. redb locks the file, so a second process opening
//! the same namespace is refused ([`RedbStore::open`] says which file).
//!
//! Locks: the journal mutex is taken before redb's write transaction, by writers and by the
//! syncer alike.

use super::journal::{Entry, Journal, Op};
use super::{Pair, ReadTxn, Store, Table, WriteTxn, prefix_end, scan_start};
use meridian_proto::{MetaError, MetaResult};
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

const DEFS: [Def; Table::ALL.len()] = [
    TableDefinition::new("inodes"),
    TableDefinition::new("dentries"),
    TableDefinition::new("xattrs"),
    TableDefinition::new("data"),
    TableDefinition::new("meta"),
    TableDefinition::new("orphans"),
    TableDefinition::new("feed"),
    TableDefinition::new("locks"),
];

/// Private: the journal sequence the database holds (key `SEQ_KEY`).
const JOURNAL_TABLE: Def = TableDefinition::new("journal");
const SEQ_KEY: &[u8] = b"seq";

fn def(t: Table) -> Def {
    DEFS[t.index()]
}

fn err(e: impl std::fmt::Display) -> MetaError {
    MetaError::Store(e.to_string())
}

/// Deferred writes reach the disk at least this often.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

struct Inner {
    db: Database,
    journal: Mutex<Journal>,
    /// Deferred commits not yet followed by an immediate one.
    unsynced: AtomicBool,
}

/// A namespace kept in one redb database file.
pub struct RedbStore {
    inner: Arc<Inner>,
    /// A background syncer runs; without one every write is immediate.
    syncer: bool,
}

/// Where the journal of the database at `path` lives.
pub fn journal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

impl RedbStore {
    /// Opens (creating if needed) the database at `path`, replaying its journal.
    pub fn open(path: &Path) -> MetaResult<Self> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => MetaError::Store(format!(
                "{} is already open in another process (is a mount or metaserver using it? unmount it first)",
                path.display()
            )),
            other => MetaError::Store(format!("cannot open {}: {other}", path.display())),
        })?;
        let txn = db.begin_write().map_err(err)?;
        for t in Table::ALL {
            txn.open_table(def(t)).map_err(err)?;
        }
        txn.open_table(JOURNAL_TABLE).map_err(err)?;
        txn.commit().map_err(err)?;
        let (mut journal, entries) = Journal::open(&journal_path(path))?;
        journal.seq = replay(&db, entries)?;
        journal.reset()?;
        let mut store = RedbStore {
            inner: Arc::new(Inner {
                db,
                journal: Mutex::new(journal),
                unsynced: AtomicBool::new(false),
            }),
            syncer: false,
        };
        store.syncer = start_syncer(Arc::downgrade(&store.inner));
        Ok(store)
    }
}

/// Applies the journal records the database does not hold yet, durably; returns the
/// sequence reached.
fn replay(db: &Database, entries: Vec<Entry>) -> MetaResult<u64> {
    let txn = db.begin_write().map_err(err)?;
    let durable = stamped_seq(&txn)?;
    let mut seq = durable;
    for e in entries.into_iter().filter(|e| e.seq > durable) {
        if e.seq != seq + 1 {
            tracing::warn!(
                expected = seq + 1,
                found = e.seq,
                "gap in the namespace journal"
            );
        }
        for op in e.ops {
            let t = *Table::ALL
                .get(op.table as usize)
                .ok_or_else(|| err(format!("journal names unknown table {}", op.table)))?;
            let mut table = txn.open_table(def(t)).map_err(err)?;
            match op.value {
                Some(v) => table.insert(op.key.as_slice(), v.as_slice()).map(|_| ()),
                None => table.remove(op.key.as_slice()).map(|_| ()),
            }
            .map_err(err)?;
        }
        seq = e.seq;
    }
    if seq > durable {
        tracing::info!(records = seq - durable, "replayed the namespace journal");
    }
    stamp(&txn, seq)?;
    txn.commit().map_err(err)?;
    Ok(seq)
}

fn stamped_seq(txn: &redb::WriteTransaction) -> MetaResult<u64> {
    let t = txn.open_table(JOURNAL_TABLE).map_err(err)?;
    let v = t.get(SEQ_KEY).map_err(err)?;
    Ok(
        v.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0),
    )
}

fn stamp(txn: &redb::WriteTransaction, seq: u64) -> MetaResult<()> {
    let mut t = txn.open_table(JOURNAL_TABLE).map_err(err)?;
    t.insert(SEQ_KEY, seq.to_le_bytes().as_slice())
        .map_err(err)?;
    Ok(())
}

/// A thread that makes deferred commits durable every [`SYNC_INTERVAL`]; it ends with the
/// store.
fn start_syncer(inner: Weak<Inner>) -> bool {
    let spawned = std::thread::Builder::new()
        .name("meridian-redb-sync".into())
        .spawn(move || loop {
            std::thread::sleep(SYNC_INTERVAL);
            let Some(inner) = inner.upgrade() else { return };
            if let Err(e) = inner.sync() {
                tracing::error!(error = %e, "could not make namespace changes durable; retrying");
            }
        });
    match spawned {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "no background sync thread: every write will be immediate");
            false
        }
    }
}

impl Inner {
    fn sync(&self) -> MetaResult<()> {
        let mut journal = self.journal.lock();
        if self.unsynced.load(Ordering::Acquire) {
            self.sync_locked(&mut journal)?;
        }
        Ok(())
    }

    /// An empty immediate commit (durable: every deferred commit before it, and the stamp
    /// they left), then an empty journal.
    fn sync_locked(&self, journal: &mut Journal) -> MetaResult<()> {
        self.db.begin_write().map_err(err)?.commit().map_err(err)?;
        self.unsynced.store(false, Ordering::Release);
        journal.reset()
    }
}

fn scan_table<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> MetaResult<Vec<Pair>> {
    let start = scan_start(prefix, after);
    let end = prefix_end(prefix);
    let iter = match &end {
        Some(end) => table.range::<&[u8]>(start.as_slice()..end.as_slice()),
        None => table.range::<&[u8]>(start.as_slice()..),
    }
    .map_err(err)?;
    let mut out = Vec::new();
    for item in iter.take(limit) {
        let (k, v) = item.map_err(err)?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

struct RRead(redb::ReadTransaction);
/// A write transaction; `.1` records its changes when they go to the journal.
struct RWrite(redb::WriteTransaction, Option<Vec<Op>>);

/// Both transaction kinds read alike; only the table type behind `open_table` differs.
macro_rules! impl_read_txn {
    ($txn:ty) => {
        impl ReadTxn for $txn {
            fn get(&self, table: Table, key: &[u8]) -> MetaResult<Option<Vec<u8>>> {
                let t = self.0.open_table(def(table)).map_err(err)?;
                Ok(t.get(key).map_err(err)?.map(|v| v.value().to_vec()))
            }
            fn scan(
                &self,
                table: Table,
                prefix: &[u8],
                after: Option<&[u8]>,
                limit: usize,
            ) -> MetaResult<Vec<Pair>> {
                let t = self.0.open_table(def(table)).map_err(err)?;
                scan_table(&t, prefix, after, limit)
            }
        }
    };
}

impl_read_txn!(RRead);
impl_read_txn!(RWrite);

impl WriteTxn for RWrite {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> MetaResult<()> {
        let mut t = self.0.open_table(def(table)).map_err(err)?;
        t.insert(key, value).map_err(err)?;
        if let Some(ops) = &mut self.1 {
            ops.push(Op {
                table: table.index() as u8,
                key: key.to_vec(),
                value: Some(serde_bytes::ByteBuf::from(value)),
            });
        }
        Ok(())
    }
    fn delete(&mut self, table: Table, key: &[u8]) -> MetaResult<()> {
        let mut t = self.0.open_table(def(table)).map_err(err)?;
        t.remove(key).map_err(err)?;
        if let Some(ops) = &mut self.1 {
            ops.push(Op {
                table: table.index() as u8,
                key: key.to_vec(),
                value: None,
            });
        }
        Ok(())
    }
}

impl Store for RedbStore {
    fn sync(&self) -> MetaResult<()> {
        self.inner.sync()
    }

    fn read<T>(&self, f: impl FnOnce(&dyn ReadTxn) -> MetaResult<T>) -> MetaResult<T> {
        let txn = self.inner.db.begin_read().map_err(err)?;
        f(&RRead(txn))
    }

    fn write_with<T>(
        &self,
        durability: super::Durability,
        f: impl FnOnce(&mut dyn WriteTxn) -> MetaResult<T>,
    ) -> MetaResult<T> {
        let inner = &*self.inner;
        let mut journal = inner.journal.lock();
        let deferred = durability == super::Durability::Deferred && self.syncer;
        let mut txn = RWrite(
            inner.db.begin_write().map_err(err)?,
            deferred.then(Vec::new),
        );
        let v = match f(&mut txn) {
            Ok(v) => v,
            Err(e) => {
                txn.0.abort().map_err(err)?;
                return Err(e);
            }
        };
        let RWrite(txn, ops) = txn;
        match ops {
            Some(ops) if ops.is_empty() => txn.abort().map_err(err)?,
            Some(ops) => {
                let seq = journal.seq + 1;
                stamp(&txn, seq)?;
                let mut txn = txn;
                txn.set_durability(redb::Durability::None).map_err(err)?;
                txn.commit().map_err(err)?;
                journal.seq = seq;
                inner.unsynced.store(true, Ordering::Release);
                if let Err(e) = journal.append(&Entry { seq, ops }) {
                    tracing::warn!(error = %e, "journal append failed; committing durably instead");
                    inner.sync_locked(&mut journal)?;
                }
            }
            None => {
                stamp(&txn, journal.seq)?;
                txn.commit().map_err(err)?;
                inner.unsynced.store(false, Ordering::Release);
                journal.reset()?;
            }
        }
        Ok(v)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Err(e) = self.inner.sync() {
            tracing::error!(error = %e, "could not make the last namespace changes durable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_suite() {
        let dir = tempfile::tempdir().unwrap();
        super::super::suite::run_all(&RedbStore::open(&dir.path().join("ns.redb")).unwrap());
    }

    #[test]
    fn deferred_writes_are_durable_after_sync_and_after_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            s.write_with(crate::store::Durability::Deferred, |t| {
                t.put(Table::Meta, b"a", b"1")
            })
            .unwrap();
            s.sync().unwrap();
            s.write_with(crate::store::Durability::Deferred, |t| {
                t.put(Table::Meta, b"b", b"2")
            })
            .unwrap();
            std::thread::sleep(SYNC_INTERVAL * 3);
            assert!(
                !s.inner.unsynced.load(Ordering::Acquire),
                "the syncer made it durable"
            );
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(
            s.read(|t| t.get(Table::Meta, b"a")).unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            s.read(|t| t.get(Table::Meta, b"b")).unwrap(),
            Some(b"2".to_vec())
        );
    }

    /// What a `kill -9` leaves: the files as they are while the store is live, with deferred
    /// commits not yet synced. Opening that copy replays the journal and loses nothing.
    #[test]
    fn deferred_writes_survive_a_crash_of_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.redb");
        let s = RedbStore::open(&path).unwrap();
        s.write(|t| t.put(Table::Meta, b"old", b"0")).unwrap();
        for i in 0..200u32 {
            s.write_with(crate::store::Durability::Deferred, |t| {
                t.put(Table::Inodes, &i.to_be_bytes(), b"x")?;
                t.delete(Table::Meta, b"old")
            })
            .unwrap();
        }
        let copy = dir.path().join("copy.redb");
        {
            let _held = s.inner.journal.lock(); // no sync while copying
            std::fs::copy(&path, &copy).unwrap();
            std::fs::copy(journal_path(&path), journal_path(&copy)).unwrap();
        }
        let c = RedbStore::open(&copy).unwrap();
        let rows = c.read(|t| t.scan(Table::Inodes, b"", None, 1000)).unwrap();
        assert_eq!(rows.len(), 200);
        assert_eq!(c.read(|t| t.get(Table::Meta, b"old")).unwrap(), None);
        drop(c);
        // Replayed records are durable and not applied twice.
        let c = RedbStore::open(&copy).unwrap();
        assert_eq!(
            c.read(|t| t.scan(Table::Inodes, b"", None, 1000))
                .unwrap()
                .len(),
            200
        );
        assert_eq!(std::fs::metadata(journal_path(&copy)).unwrap().len(), 0);
    }

    #[test]
    fn survives_reopen_and_refuses_a_second_opener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            s.write(|t| t.put(Table::Meta, b"k", b"v")).unwrap();
            let second = RedbStore::open(&path);
            assert!(matches!(second, Err(MetaError::Store(m)) if m.contains("already open")));
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(
            s.read(|t| t.get(Table::Meta, b"k")).unwrap(),
            Some(b"v".to_vec())
        );
    }
}
