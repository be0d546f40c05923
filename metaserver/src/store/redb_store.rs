//! The embedded default [`Store`]: one redb database file, its redo journal, and layers
//! of committed changes held in memory above the file.
//!
//! A deferred write appends its changes to the [`journal`](super::journal) and then adds
//! them to the active [`Layer`], and returns: it survives a crash of the process at once
//! (the journal is replayed at the next open) and a crash of the machine after the next
//! flush. A flush freezes the active layer (an empty one takes its place) and rotates the
//! journal, then — writers going on meanwhile — writes the frozen layer into the database
//! in one redb transaction committed with fsync and stamped with the journal sequence it
//! covers, then drops the frozen layer and the rotated journal. The syncer flushes every
//! [`SYNC_INTERVAL`], and at once when a writer finds the active layer past [`FLUSH_BYTES`]
//! (a writer flushes itself past four times that); an immediate write and `sync` flush
//! until everything committed before them is durable. Without a syncer every write is
//! immediate. Opening replays the journal records after the durable stamp, so
//! acknowledged deferred writes are never lost to a `kill -9`. redb locks the file, so a
//! second process opening the same namespace is refused ([`RedbStore::open`] says which
//! file).
//!
//! Reads: a transaction reads one snapshot — both layers as they were and the database
//! view beside them, taken together under the layers' lock — through the active layer,
//! then the frozen one, then the view. The view is one redb read transaction shared by
//! every snapshot until the next flush has committed (the database changes only then): a
//! flush begins the next view after its commit, outside every lock, and installs it as it
//! drops the frozen layer. So no namespace call begins a redb transaction of its own,
//! and none waits for a flush's commit (beginning one waits on redb's commit state: 2–25 ms
//! stalls of creates here while a flush of inline file data was being committed). A
//! write transaction changes its own copy of the active layer, installed only if it
//! commits.
//!
//! Invariants: writers and freezing hold the journal lock, so a write transaction sees
//! every commit before it and no layer changes under it. The database only changes in a
//! flush, which drops the frozen layer after its commit: a snapshot pairs the layers and
//! the database as they were at one moment (before the commit, or after it, when the
//! frozen layer it holds repeats what the database now holds; the view changes with the
//! frozen layer, so a snapshot never pairs the new view with an old layer it lacks). A
//! failed flush keeps its
//! frozen layer (and rotated journal) and the next flush writes it again first; an
//! immediate write whose flush fails returns the error with its change applied (in the
//! journal and the layer, durable at the next successful flush).
//!
//! Locks: flushing → journal → layers; the layers' lock is held only to copy or replace
//! them, and a flush holds no other lock while it writes the database, begins the next
//! view or removes the rotated journal.

use super::journal::{Entry, Journal, Op};
use super::layer::Layer;
use super::overlay::{Merged, merge};
use super::{Pair, ReadTxn, Store, Table, WriteTxn, prefix_end, scan_start};
use meridian_proto::{MetaError, MetaResult};
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;
type RTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

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

/// An active layer larger than this wakes the syncer; one four times larger (the syncer
/// cannot keep up) is flushed by the writer that grew it, which bounds the memory used.
pub const FLUSH_BYTES: usize = 64 << 20;

struct Inner {
    db: Database,
    journal: Mutex<Journal>,
    journal_path: PathBuf,
    /// Committed changes the database file does not hold yet.
    layers: Mutex<Layers>,
    /// Held through a flush: one at a time.
    flushing: Mutex<()>,
    /// The active layer's size that wakes the syncer ([`FLUSH_BYTES`]; tests lower it).
    flush_bytes: std::sync::atomic::AtomicUsize,
    /// Wakes the syncer early (a large active layer).
    nudge: std::sync::OnceLock<std::sync::mpsc::SyncSender<()>>,
}

/// The changes above the database: the newest in `active`, those a flush is writing in
/// `frozen`, and the database as it was when `frozen` was last emptied.
#[derive(Clone)]
struct Layers {
    active: Layer,
    frozen: Layer,
    /// The journal sequence `frozen` reaches.
    frozen_seq: u64,
    /// The journal sequence the database holds durably.
    durable: u64,
    view: Arc<DbView>,
}

/// One database read transaction and its tables (opened on first use), shared by every
/// snapshot taken until a flush commits.
struct DbView {
    txn: redb::ReadTransaction,
    tables: [OnceLock<RTable>; Table::ALL.len()],
}

impl DbView {
    fn begin(db: &Database) -> MetaResult<Arc<DbView>> {
        Ok(Arc::new(DbView {
            txn: db.begin_read().map_err(err)?,
            tables: Default::default(),
        }))
    }

    fn table(&self, t: Table) -> MetaResult<&RTable> {
        let cell = &self.tables[t.index()];
        if let Some(table) = cell.get() {
            return Ok(table);
        }
        let table = self.txn.open_table(def(t)).map_err(err)?;
        Ok(cell.get_or_init(|| table))
    }
}

/// A namespace kept in one redb database file.
pub struct RedbStore {
    inner: Arc<Inner>,
    /// A background syncer runs; without one every write is immediate.
    syncer: bool,
    /// Opening found the file not closed cleanly and checked it.
    repaired: bool,
}

/// Where the journal of the database at `path` lives.
pub fn journal_path(path: &Path) -> PathBuf {
    super::journal::suffixed(path, ".journal")
}

impl RedbStore {
    /// Opens (creating if needed) the database at `path`, replaying its journal.
    pub fn open(path: &Path) -> MetaResult<Self> {
        let repaired = Arc::new(AtomicBool::new(false));
        let db = Database::builder()
            .set_repair_callback(repair_callback(path, repaired.clone()))
            .create(path)
            .map_err(|e| match e {
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
        let view = DbView::begin(&db)?; // after the replay's commit
        let mut store = RedbStore {
            inner: Arc::new(Inner {
                db,
                layers: Mutex::new(Layers {
                    active: Layer::default(),
                    frozen: Layer::default(),
                    frozen_seq: 0,
                    durable: journal.seq,
                    view,
                }),
                journal: Mutex::new(journal),
                journal_path: journal_path(path),
                flushing: Mutex::new(()),
                nudge: Default::default(),
                flush_bytes: FLUSH_BYTES.into(),
            }),
            syncer: false,
            repaired: repaired.load(Ordering::Relaxed),
        };
        store.syncer = start_syncer(Arc::downgrade(&store.inner));
        Ok(store)
    }

    /// Whether opening had to check the file (it was not closed cleanly: a crash, a
    /// `kill -9`, or a process that ended without dropping its store).
    pub fn was_repaired(&self) -> bool {
        self.repaired
    }
}

/// Logs a check of a file left open (it reads the whole file: long for a big namespace)
/// and its progress, and notes that it happened.
fn repair_callback(
    path: &Path,
    repaired: Arc<AtomicBool>,
) -> impl Fn(&mut redb::RepairSession) + use<> {
    let path = path.display().to_string();
    let last = std::sync::atomic::AtomicU32::new(0);
    move |session| {
        if !repaired.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                file = %path,
                "the namespace was not closed cleanly (a crash?): checking every page of it"
            );
        }
        let tenth = (session.progress() * 10.0) as u32;
        if tenth > last.swap(tenth, Ordering::Relaxed) {
            tracing::info!(file = %path, "namespace check {}% done", tenth * 10);
        }
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
                Some(v) => table.insert(op.key.as_slice(), &*v).map(|_| ()),
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

/// A thread that makes deferred commits durable every [`SYNC_INTERVAL`], or at once when a
/// writer nudges it; it ends with the store.
fn start_syncer(inner: Weak<Inner>) -> bool {
    let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
    if let Some(i) = inner.upgrade() {
        let _ = i.nudge.set(nudge);
    }
    let spawned = std::thread::Builder::new()
        .name("meridian-redb-sync".into())
        .spawn(move || loop {
            let _ = nudged.recv_timeout(SYNC_INTERVAL);
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
    /// Flushes until everything committed before the call is durable in the database.
    fn sync(&self) -> MetaResult<()> {
        let _one = self.flushing.lock();
        let target = self.journal.lock().seq;
        while self.layers.lock().durable < target {
            let (frozen, seq) = self.freeze()?;
            self.write_db(&frozen, seq)?;
            let view = DbView::begin(&self.db)?; // holds what `frozen` held
            let mut layers = self.layers.lock();
            layers.frozen = Layer::default();
            layers.durable = seq;
            layers.view = view;
            drop(layers);
            // Outside the journal's lock (see `journal::drop_old`); only a flush rotates,
            // and this one holds `flushing`.
            super::journal::drop_old(&self.journal_path)?;
        }
        Ok(())
    }

    /// The layer to write, and the sequence it reaches: the frozen one a failed flush
    /// left, or else the active one, frozen now with the journal rotated.
    fn freeze(&self) -> MetaResult<(Layer, u64)> {
        let mut journal = self.journal.lock();
        let mut layers = self.layers.lock();
        if layers.frozen.is_empty() {
            journal.drop_old()?; // durable, if a flush could not drop it
            journal.rotate()?;
            layers.frozen = std::mem::take(&mut layers.active);
            layers.frozen_seq = journal.seq;
        }
        Ok((layers.frozen.clone(), layers.frozen_seq))
    }

    /// Writes `layer` into the database in one durable commit stamped with `seq`.
    fn write_db(&self, layer: &Layer, seq: u64) -> MetaResult<()> {
        let txn = self.db.begin_write().map_err(err)?;
        for t in Table::ALL {
            let mut table = txn.open_table(def(t)).map_err(err)?;
            for (k, v) in layer.changes(t) {
                match v {
                    Some(v) => table.insert(k, v).map(drop),
                    None => table.remove(k).map(drop),
                }
                .map_err(err)?;
            }
        }
        stamp(&txn, seq)?;
        txn.commit().map_err(err)
    }

    /// The layers and the database view as they are now (see the invariants).
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            layers: self.layers.lock().clone(),
        }
    }
}

/// What a transaction reads: the layers over a database view.
struct Snapshot {
    layers: Layers,
}

impl Snapshot {
    fn table(&self, t: Table) -> MetaResult<&RTable> {
        self.layers.view.table(t)
    }
}

impl ReadTxn for Snapshot {
    fn get(&self, table: Table, key: &[u8]) -> MetaResult<Option<Vec<u8>>> {
        let Layers { active, frozen, .. } = &self.layers;
        if let Some(v) = active.get(table, key).or_else(|| frozen.get(table, key)) {
            return Ok(v.map(<[u8]>::to_vec));
        }
        let t = self.table(table)?;
        Ok(t.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<Pair>> {
        let start = scan_start(prefix, after);
        let end = prefix_end(prefix);
        let t = self.table(table)?;
        let rows = match &end {
            Some(end) => t.range::<&[u8]>(start.as_slice()..end.as_slice()),
            None => t.range::<&[u8]>(start.as_slice()..),
        }
        .map_err(err)?
        .map(|row| {
            row.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .map_err(err)
        });
        let Layers { active, frozen, .. } = &self.layers;
        let below = Merged::new(frozen.range(table, &start, end.as_deref()), rows);
        merge(active.range(table, &start, end.as_deref()), below, limit)
    }
}

/// A write transaction: its own copy of the active layer, and its changes for the journal.
struct LayerWrite {
    snap: Snapshot,
    ops: Vec<Op>,
}

impl ReadTxn for LayerWrite {
    fn get(&self, table: Table, key: &[u8]) -> MetaResult<Option<Vec<u8>>> {
        self.snap.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<Pair>> {
        self.snap.scan(table, prefix, after, limit)
    }
}

impl LayerWrite {
    /// The value is copied once, shared by the layer and the journal record.
    fn set(&mut self, table: Table, key: &[u8], value: Option<&[u8]>) {
        let value: Option<Arc<[u8]>> = value.map(Arc::from);
        self.snap.layers.active.set(table, key, value.clone());
        self.ops.push(Op {
            table: table.index() as u8,
            key: key.to_vec(),
            value,
        });
    }
}

impl WriteTxn for LayerWrite {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> MetaResult<()> {
        self.set(table, key, Some(value));
        Ok(())
    }
    fn delete(&mut self, table: Table, key: &[u8]) -> MetaResult<()> {
        self.set(table, key, None);
        Ok(())
    }
}

impl Store for RedbStore {
    fn sync(&self) -> MetaResult<()> {
        self.inner.sync()
    }

    fn read<T>(&self, f: impl FnOnce(&dyn ReadTxn) -> MetaResult<T>) -> MetaResult<T> {
        f(&self.inner.snapshot())
    }

    fn write_with<T>(
        &self,
        durability: super::Durability,
        f: impl FnOnce(&mut dyn WriteTxn) -> MetaResult<T>,
    ) -> MetaResult<T> {
        let inner = &*self.inner;
        let mut journal = inner.journal.lock();
        let mut txn = LayerWrite {
            snap: inner.snapshot(),
            ops: Vec::new(),
        };
        let v = f(&mut txn)?; // a failed transaction's copy is dropped
        let immediate = durability == super::Durability::Immediate || !self.syncer;
        let LayerWrite { snap, ops } = txn;
        let mut flush = immediate;
        if !ops.is_empty() {
            let seq = journal.seq + 1;
            let appended = journal.append(&Entry { seq, ops });
            journal.seq = seq;
            let mut layers = inner.layers.lock();
            layers.active = snap.layers.active;
            let bytes = layers.active.bytes();
            let limit = inner.flush_bytes.load(std::sync::atomic::Ordering::Relaxed);
            flush |= bytes > 4 * limit;
            if bytes > limit
                && let Some(n) = inner.nudge.get()
            {
                let _ = n.try_send(());
            }
            if let Err(e) = appended {
                tracing::warn!(error = %e, "journal append failed; committing durably instead");
                flush = true;
            }
        }
        drop(journal);
        if flush {
            inner.sync()?;
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
                s.inner.layers.lock().active.is_empty(),
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
            let _flush = s.inner.flushing.lock(); // no flush while copying
            let _held = s.inner.journal.lock();
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
    fn a_reader_keeps_its_snapshot_across_a_flush_and_later_writes() {
        use crate::store::Durability::Deferred;
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("ns.redb")).unwrap();
        for k in [b"a", b"b", b"c"] {
            s.write(|t| t.put(Table::Meta, k, b"db")).unwrap(); // in the file
        }
        s.write_with(Deferred, |t| {
            t.delete(Table::Meta, b"b")?;
            t.put(Table::Meta, b"d", b"layer")
        })
        .unwrap();
        let keys = |rows: Vec<Pair>| rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let abcd = vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec()];
        s.read(|r| {
            assert!(!s.inner.layers.lock().active.is_empty());
            s.sync()?; // flushes while this snapshot is open
            s.write_with(Deferred, |t| t.put(Table::Meta, b"a", b"new"))?;
            assert_eq!(keys(r.scan(Table::Meta, b"", None, 10)?), abcd);
            assert_eq!(r.get(Table::Meta, b"a")?, Some(b"db".to_vec()));
            assert_eq!(r.get(Table::Meta, b"b")?, None);
            Ok(())
        })
        .unwrap();
        s.read(|r| {
            assert_eq!(
                keys(r.scan(Table::Meta, b"", Some(b"a"), 1)?),
                vec![b"c".to_vec()]
            );
            assert_eq!(r.get(Table::Meta, b"a")?, Some(b"new".to_vec()));
            Ok(())
        })
        .unwrap();
    }

    /// Readers share one database view between flushes; while flushes commit and replace
    /// it, every read still sees a gap-free prefix of the writes, each write that
    /// completed before the read began included.
    #[test]
    fn readers_see_every_completed_write_while_flushes_run() {
        use std::sync::atomic::AtomicU32;
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("ns.redb")).unwrap();
        s.inner.flush_bytes.store(4 << 10, Ordering::Relaxed);
        let done = AtomicU32::new(0); // keys 0..done are written
        let n = 3_000u32;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..n {
                    s.write_with(crate::store::Durability::Deferred, |t| {
                        t.put(Table::Inodes, &i.to_be_bytes(), &[1u8; 64])
                    })
                    .unwrap();
                    done.store(i + 1, Ordering::SeqCst);
                }
            });
            scope.spawn(|| {
                while done.load(Ordering::SeqCst) < n {
                    s.sync().unwrap();
                }
            });
            let mut checked = 0;
            while done.load(Ordering::SeqCst) < n || checked == 0 {
                let before = done.load(Ordering::SeqCst);
                let rows = s
                    .read(|t| t.scan(Table::Inodes, b"", None, n as usize + 1))
                    .unwrap();
                let keys: Vec<u32> = rows
                    .iter()
                    .map(|(k, _)| u32::from_be_bytes(k[..].try_into().unwrap()))
                    .collect();
                assert!(
                    keys.len() as u32 >= before,
                    "{} rows, {before} written",
                    keys.len()
                );
                assert!(
                    keys.iter().copied().eq(0..keys.len() as u32),
                    "a gap in {keys:?}"
                );
                checked += 1;
            }
        });
        assert_eq!(
            s.read(|t| t.scan(Table::Inodes, b"", None, 10_000))
                .unwrap()
                .len(),
            3_000
        );
    }

    #[test]
    fn the_active_layer_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("ns.redb")).unwrap();
        let limit = 1 << 20;
        s.inner
            .flush_bytes
            .store(limit, std::sync::atomic::Ordering::Relaxed);
        let value = vec![7u8; 256 << 10];
        for i in 0..64u32 {
            s.write_with(crate::store::Durability::Deferred, |t| {
                t.put(Table::Data, &i.to_be_bytes(), &value)
            })
            .unwrap();
            let held = s.inner.layers.lock().active.bytes();
            assert!(held <= 4 * limit + value.len() + 4, "{held} bytes held");
        }
        let rows = s.read(|t| t.scan(Table::Data, b"", None, 1000)).unwrap();
        assert_eq!(rows.len(), 64);
    }

    /// A flush that froze its layer and rotated the journal, then stopped (a crash while it
    /// writes the database, or a failed commit): reopening replays both journal files, and
    /// the next flush finishes the frozen layer before the active one.
    #[test]
    fn a_flush_cut_short_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.redb");
        let s = RedbStore::open(&path).unwrap();
        let put = |i: u32| {
            s.write_with(crate::store::Durability::Deferred, |t| {
                t.put(Table::Inodes, &i.to_be_bytes(), b"x")
            })
            .unwrap()
        };
        let _no_syncer = s.inner.flushing.lock();
        (0..50).for_each(put);
        s.inner.freeze().unwrap();
        (50..100).for_each(put);
        let copy = dir.path().join("copy.redb");
        let old = |p: &Path| super::super::journal::old_path(&journal_path(p));
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(journal_path(&path), journal_path(&copy)).unwrap();
        std::fs::copy(old(&path), old(&copy)).unwrap();
        let c = RedbStore::open(&copy).unwrap();
        let rows = c.read(|t| t.scan(Table::Inodes, b"", None, 1000)).unwrap();
        assert_eq!(rows.len(), 100);
        assert!(!old(&copy).exists(), "replayed, then dropped");
        drop(_no_syncer);
        s.sync().unwrap();
        let layers = s.inner.layers.lock().clone();
        assert!(layers.active.is_empty() && layers.frozen.is_empty());
        assert_eq!(layers.durable, s.inner.journal.lock().seq);
        assert!(!old(&path).exists());
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
        assert!(
            !s.was_repaired(),
            "closed cleanly, its read view held to the end"
        );
        assert_eq!(
            s.read(|t| t.get(Table::Meta, b"k")).unwrap(),
            Some(b"v".to_vec())
        );
    }
}
