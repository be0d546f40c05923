//! The embedded default [`Store`]: one redb file on local disk.
//!
//! Invariants: every table exists from `open` on; each `write` is one redb write transaction
//! committed with immediate durability (fsync) before `write` returns, so an acknowledged
//! change survives a crash of the process or the machine. redb locks the file, so a second
//! process opening the same namespace is refused ([`RedbStore::open`] says which file).

use super::{Pair, ReadTxn, Store, Table, WriteTxn, prefix_end, scan_start};
use meridian_proto::{MetaError, MetaResult};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

const DEFS: [Def; Table::ALL.len()] = [
    TableDefinition::new("inodes"),
    TableDefinition::new("dentries"),
    TableDefinition::new("xattrs"),
    TableDefinition::new("data"),
    TableDefinition::new("meta"),
    TableDefinition::new("orphans"),
];

fn def(t: Table) -> Def {
    DEFS[t.index()]
}

fn err(e: impl std::fmt::Display) -> MetaError {
    MetaError::Store(e.to_string())
}

/// Deferred writes reach the disk at least this often.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// A namespace kept in one redb database file.
pub struct RedbStore {
    db: Arc<Database>,
    /// Deferred commits not yet followed by an immediate one.
    unsynced: Arc<AtomicBool>,
    /// A background syncer runs; without one every write is immediate.
    syncer: bool,
}

impl RedbStore {
    /// Opens (creating if needed) the database at `path`.
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
        txn.commit().map_err(err)?;
        let mut store = RedbStore {
            db: Arc::new(db),
            unsynced: Arc::new(AtomicBool::new(false)),
            syncer: false,
        };
        store.syncer = store.start_syncer();
        Ok(store)
    }

    /// A thread that makes deferred commits durable every [`SYNC_INTERVAL`]; it ends with
    /// the store.
    fn start_syncer(&self) -> bool {
        let (db, unsynced) = (Arc::downgrade(&self.db), self.unsynced.clone());
        let spawned = std::thread::Builder::new().name("meridian-redb-sync".into()).spawn(move || loop {
            std::thread::sleep(SYNC_INTERVAL);
            let Some(db) = db.upgrade() else { return };
            if unsynced.swap(false, Ordering::AcqRel)
                && let Err(e) = sync_db(&db)
            {
                unsynced.store(true, Ordering::Release);
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
struct RWrite(redb::WriteTransaction);

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
        Ok(())
    }
    fn delete(&mut self, table: Table, key: &[u8]) -> MetaResult<()> {
        let mut t = self.0.open_table(def(table)).map_err(err)?;
        t.remove(key).map_err(err)?;
        Ok(())
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "could not make the last namespace changes durable");
        }
    }
}

/// An empty immediate commit: makes every deferred commit before it durable.
fn sync_db(db: &Database) -> MetaResult<()> {
    db.begin_write().map_err(err)?.commit().map_err(err)
}

impl Store for RedbStore {
    fn sync(&self) -> MetaResult<()> {
        if self.unsynced.swap(false, Ordering::AcqRel) {
            sync_db(&self.db).inspect_err(|_| self.unsynced.store(true, Ordering::Release))?;
        }
        Ok(())
    }

    fn read<T>(&self, f: impl FnOnce(&dyn ReadTxn) -> MetaResult<T>) -> MetaResult<T> {
        let txn = self.db.begin_read().map_err(err)?;
        f(&RRead(txn))
    }

    fn write_with<T>(
        &self,
        durability: super::Durability,
        f: impl FnOnce(&mut dyn WriteTxn) -> MetaResult<T>,
    ) -> MetaResult<T> {
        let mut txn = RWrite(self.db.begin_write().map_err(err)?);
        let deferred = durability == super::Durability::Deferred && self.syncer;
        if deferred {
            txn.0.set_durability(redb::Durability::None).map_err(err)?;
        }
        match f(&mut txn) {
            Ok(v) => {
                txn.0.commit().map_err(err)?;
                if deferred {
                    self.unsynced.store(true, Ordering::Release);
                }
                Ok(v)
            }
            Err(e) => {
                txn.0.abort().map_err(err)?;
                Err(e)
            }
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
                !s.unsynced.load(Ordering::Acquire),
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
