//! An in-memory [`Store`] for fast tests.
//!
//! Invariant: a write transaction holds the one lock for its whole life and keeps an undo
//! log; on `Err` the log is replayed backwards, so a failed transaction leaves no trace.

use super::{Pair, ReadTxn, Store, Table, WriteTxn, prefix_end, scan_start};
use meridian_proto::MetaResult;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::ops::Bound;

type Tables = [BTreeMap<Vec<u8>, Vec<u8>>; Table::ALL.len()];

/// A store that lives and dies with the process.
#[derive(Default)]
pub struct MemStore {
    tables: RwLock<Tables>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

struct MemRead<'a>(&'a Tables);

struct MemWrite<'a> {
    tables: &'a mut Tables,
    undo: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

fn get(tables: &Tables, table: Table, key: &[u8]) -> Option<Vec<u8>> {
    tables[table.index()].get(key).cloned()
}

fn scan(
    tables: &Tables,
    table: Table,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Vec<Pair> {
    let start = Bound::Included(scan_start(prefix, after));
    let end = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
    tables[table.index()]
        .range((start, end))
        .take(limit)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Both transaction kinds read the same tables the same way.
trait View {
    fn tables(&self) -> &Tables;
}

impl View for MemRead<'_> {
    fn tables(&self) -> &Tables {
        self.0
    }
}

impl View for MemWrite<'_> {
    fn tables(&self) -> &Tables {
        self.tables
    }
}

impl<V: View> ReadTxn for V {
    fn get(&self, table: Table, key: &[u8]) -> MetaResult<Option<Vec<u8>>> {
        Ok(get(self.tables(), table, key))
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<Pair>> {
        Ok(scan(self.tables(), table, prefix, after, limit))
    }
}

impl WriteTxn for MemWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> MetaResult<()> {
        let old = self.tables[table.index()].insert(key.to_vec(), value.to_vec());
        self.undo.push((table, key.to_vec(), old));
        Ok(())
    }
    fn delete(&mut self, table: Table, key: &[u8]) -> MetaResult<()> {
        let old = self.tables[table.index()].remove(key);
        self.undo.push((table, key.to_vec(), old));
        Ok(())
    }
}

impl Store for MemStore {
    fn read<T>(&self, f: impl FnOnce(&dyn ReadTxn) -> MetaResult<T>) -> MetaResult<T> {
        let tables = self.tables.read();
        f(&MemRead(&tables))
    }

    fn sync(&self) -> MetaResult<()> {
        Ok(()) // nothing outlives the process
    }

    fn write_with<T>(
        &self,
        _durability: super::Durability,
        f: impl FnOnce(&mut dyn WriteTxn) -> MetaResult<T>,
    ) -> MetaResult<T> {
        let mut tables = self.tables.write();
        let mut txn = MemWrite {
            tables: &mut tables,
            undo: Vec::new(),
        };
        let result = f(&mut txn);
        if result.is_err() {
            let MemWrite { tables, undo } = txn;
            for (table, key, old) in undo.into_iter().rev() {
                match old {
                    Some(v) => tables[table.index()].insert(key, v),
                    None => tables[table.index()].remove(&key),
                };
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_suite() {
        super::super::suite::run_all(&super::MemStore::new());
    }
}
