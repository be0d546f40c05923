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

/// A namespace kept in one redb database file.
pub struct RedbStore {
    db: Database,
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
        Ok(RedbStore { db })
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

impl Store for RedbStore {
    fn read<T>(&self, f: impl FnOnce(&dyn ReadTxn) -> MetaResult<T>) -> MetaResult<T> {
        let txn = self.db.begin_read().map_err(err)?;
        f(&RRead(txn))
    }

    fn write<T>(&self, f: impl FnOnce(&mut dyn WriteTxn) -> MetaResult<T>) -> MetaResult<T> {
        let mut txn = RWrite(self.db.begin_write().map_err(err)?);
        match f(&mut txn) {
            Ok(v) => {
                txn.0.commit().map_err(err)?;
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
