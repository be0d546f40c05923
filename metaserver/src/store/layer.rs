//! [`Layer`]: committed changes held in memory above a database file, per table — a put
//! (`Some`) or a delete (`None`) per key, the newest only.
//!
//! A layer is a set of persistent maps (`imbl`): cloning one is a few reference-count
//! increments and the clone shares structure until either side changes, so a reader can
//! keep the layer as it was when its transaction began while a writer changes its own copy.
//!
//! Invariant: `bytes` is at least the size of the keys and values held (overwrites are not
//! subtracted), so it bounds the memory the layer uses from above — a trigger, not a count.

use super::Table;
use imbl::OrdMap;
use std::ops::Bound;
use std::sync::Arc;

type Map = OrdMap<Arc<[u8]>, Option<Arc<[u8]>>>;

/// Changes over a database, by table.
#[derive(Clone, Default)]
pub(super) struct Layer {
    maps: [Map; Table::ALL.len()],
    bytes: usize,
}

impl Layer {
    pub(super) fn is_empty(&self) -> bool {
        self.maps.iter().all(Map::is_empty)
    }

    /// An upper bound of the bytes of keys and values held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// `None`: the layer does not know `key`; `Some(None)`: deleted.
    pub(super) fn get(&self, table: Table, key: &[u8]) -> Option<Option<&[u8]>> {
        self.maps[table.index()].get(key).map(|v| v.as_deref())
    }

    /// Records a put (`Some`) or a delete of `key`.
    pub(super) fn set(&mut self, table: Table, key: &[u8], value: Option<Arc<[u8]>>) {
        self.bytes += key.len() + value.as_ref().map_or(0, |v| v.len());
        self.maps[table.index()].insert(Arc::from(key), value);
    }

    /// The changes to keys in `[start, end)` (`end` `None`: to the table's end), in order.
    pub(super) fn range<'a>(
        &'a self,
        table: Table,
        start: &'a [u8],
        end: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        let hi = end.map_or(Bound::Unbounded, Bound::Excluded);
        self.maps[table.index()]
            .range::<_, [u8]>((Bound::Included(start), hi))
            .map(|(k, v)| (&**k, v.as_deref()))
    }

    /// Every change of `table`, in key order.
    pub(super) fn changes(&self, table: Table) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.maps[table.index()]
            .iter()
            .map(|(k, v)| (&**k, v.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_keeps_what_it_saw() {
        let mut a = Layer::default();
        a.set(Table::Inodes, b"k", Some(Arc::from(&b"1"[..])));
        let seen = a.clone();
        a.set(Table::Inodes, b"k", None);
        a.set(Table::Inodes, b"l", Some(Arc::from(&b"2"[..])));
        assert_eq!(seen.get(Table::Inodes, b"k"), Some(Some(&b"1"[..])));
        assert_eq!(seen.get(Table::Inodes, b"l"), None);
        assert_eq!(a.get(Table::Inodes, b"k"), Some(None));
        assert_eq!(a.get(Table::Dentries, b"k"), None);
        let r: Vec<_> = a.range(Table::Inodes, b"k", Some(b"l")).collect();
        assert_eq!(r, vec![(&b"k"[..], None)]);
        assert_eq!(a.changes(Table::Inodes).count(), 2);
        assert!(a.bytes() >= 4 && !a.is_empty() && Layer::default().is_empty());
    }
}
