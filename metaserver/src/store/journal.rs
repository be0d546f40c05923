//! The redo journal that makes a deferred commit survive a crash of the process.
//!
//! Owns: one append-only file beside the database, and while a flush runs the file it
//! replaced (`<journal>.old`, see [`Journal::rotate`]). Each deferred transaction appends one
//! record, `len: u32 LE ++ check: 8 bytes ++ body`, where `body` is the postcard encoding of
//! [`Entry`] (the transaction's sequence number and every put and delete it made, in order)
//! and `check` the first 8 bytes of its BLAKE3 hash. A record is written with one `write`
//! call before the commit is acknowledged, so once `write_with` returns the kernel holds it:
//! a `kill -9` of the process loses nothing; a crash of the machine loses what the kernel had
//! not written back, which is what the store's flush (rotate, an fsync'd database commit,
//! then [`Journal::drop_old`]) bounds.
//!
//! Invariants: sequence numbers grow by one per record; the database stores the sequence
//! of the newest record it holds durably, and replay applies only records after it, so a
//! record replayed twice is harmless. Opening reads the old file's records before the
//! current file's (older sequences first). Decoding stops at the first torn or corrupt record
//! (a write cut short by the crash) and never panics on any input (fuzzed: `journal`).

use meridian_proto::{MetaError, MetaResult};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One change inside a transaction: a put (`value` set) or a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub table: u8,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Shared with the store's memory layer, which holds the same value (not a copy).
    #[serde(with = "shared_bytes")]
    pub value: Option<Arc<[u8]>>,
}

/// `Option<Arc<[u8]>>` encoded as `Option` of one byte string (as `serde_bytes` encodes a
/// `ByteBuf`: the journal's format does not depend on how a value is held in memory).
mod shared_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(v: &Option<Arc<[u8]>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_deref().map(serde_bytes::Bytes::new).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<[u8]>>, D::Error> {
        let v = Option::<serde_bytes::ByteBuf>::deserialize(d)?;
        Ok(v.map(|b| Arc::from(b.into_vec())))
    }
}

/// One committed transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub ops: Vec<Op>,
}

const HEADER: usize = 12;
/// Larger records are refused when decoding (a transaction never writes this much).
const MAX_RECORD: usize = 256 << 20;

fn check(body: &[u8]) -> [u8; 8] {
    let mut c = [0u8; 8];
    c.copy_from_slice(&blake3::hash(body).as_bytes()[..8]);
    c
}

/// Encodes one record (the body is encoded in place, after room for the header).
pub fn encode(entry: &Entry) -> Vec<u8> {
    let values: usize = entry
        .ops
        .iter()
        .map(|o| o.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    let mut out = Vec::with_capacity(HEADER + values + 64 * (entry.ops.len() + 1));
    out.resize(HEADER, 0);
    let mut out = postcard::to_io(entry, out).expect("journal entries always encode");
    let len = (out.len() - HEADER) as u32;
    let sum = check(&out[HEADER..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..HEADER].copy_from_slice(&sum);
    out
}

/// Decodes records from the start of `bytes`, stopping at the first incomplete or corrupt
/// one (the tail a crash cut short).
pub fn decode(bytes: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= HEADER {
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_RECORD || rest.len() - HEADER < len {
            break;
        }
        let body = &rest[HEADER..HEADER + len];
        if rest[4..HEADER] != check(body) {
            break;
        }
        match postcard::take_from_bytes::<Entry>(body) {
            Ok((e, [])) => out.push(e),
            _ => break,
        }
        rest = &rest[HEADER + len..];
    }
    out
}

/// The open journal file.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// The sequence number of the newest record written (or replayed).
    pub seq: u64,
}

/// `path` with `suffix` appended to its file name (`ns.redb` → `ns.redb.journal`).
pub(crate) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Where the file a rotation of the journal at `path` replaced lives.
pub(crate) fn old_path(path: &Path) -> PathBuf {
    suffixed(path, ".old")
}

fn open_append(path: &Path) -> MetaResult<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| io(path, "open", e))
}

fn io(path: &Path, what: &str, e: std::io::Error) -> MetaError {
    MetaError::Store(format!("cannot {what} journal {}: {e}", path.display()))
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and returns it with the records it
    /// holds, those of a replaced file a flush had not finished with first.
    pub fn open(path: &Path) -> MetaResult<(Journal, Vec<Entry>)> {
        let old = old_path(path);
        let mut entries = match std::fs::read(&old) {
            Ok(bytes) => decode(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&old, "read", e)),
        };
        let mut file = open_append(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io(path, "read", e))?;
        entries.extend(decode(&bytes));
        let journal = Journal {
            path: path.to_owned(),
            file,
            seq: 0,
        };
        Ok((journal, entries))
    }

    /// Appends one record in a single write.
    pub fn append(&mut self, entry: &Entry) -> MetaResult<()> {
        self.file
            .write_all(&encode(entry))
            .map_err(|e| io(&self.path, "append to", e))
    }

    /// Empties the journal, and drops the replaced file: every record in them is durable in
    /// the database.
    pub fn reset(&mut self) -> MetaResult<()> {
        self.file
            .set_len(0)
            .map_err(|e| io(&self.path, "truncate", e))?;
        self.drop_old()
    }

    /// Moves the records so far aside (to `<journal>.old`) and starts an empty file, so a
    /// flush can make them durable while new records go on being appended. At most one
    /// replaced file exists: a rotation before the last one was dropped is refused.
    pub fn rotate(&mut self) -> MetaResult<()> {
        let old = old_path(&self.path);
        if old.exists() {
            return Err(MetaError::Store(format!(
                "cannot rotate journal {}: {} is still there",
                self.path.display(),
                old.display()
            )));
        }
        std::fs::rename(&self.path, &old).map_err(|e| io(&self.path, "rotate", e))?;
        self.file = open_append(&self.path)?;
        Ok(())
    }

    /// Removes the replaced file: its records are durable in the database.
    pub fn drop_old(&mut self) -> MetaResult<()> {
        drop_old(&self.path)
    }
}

/// Removes the file a rotation of the journal at `path` replaced, if there is one. It
/// needs no hold on the journal (appends go to the current file), only that no rotation
/// runs meanwhile: unlinking a large file can wait for the disk (a filesystem mounted
/// with `discard` trims its blocks then), and writers must not wait with it.
pub fn drop_old(path: &Path) -> MetaResult<()> {
    match std::fs::remove_file(old_path(path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, "drop", e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(seq: u64, n: usize) -> Entry {
        Entry {
            seq,
            ops: (0..n)
                .map(|i| Op {
                    table: (i % 6) as u8,
                    key: vec![i as u8; i + 1],
                    value: (i % 2 == 0).then(|| Arc::from(vec![7u8; i * 3])),
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let (a, b) = (entry(1, 3), entry(2, 5));
        let mut bytes = encode(&a);
        bytes.extend(encode(&b));
        assert_eq!(decode(&bytes), vec![a.clone(), b.clone()]);
        for cut in 0..bytes.len() {
            let got = decode(&bytes[..cut]);
            assert!(got.len() <= 1, "a cut record is never returned");
            assert!(got.iter().all(|e| *e == a));
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(decode(&flipped), vec![a]);
    }

    /// Records written before values were shared (held as `ByteBuf`) decode the same: a
    /// journal left by an older build replays.
    #[test]
    fn the_record_format_is_that_of_byte_buffers() {
        #[derive(Serialize)]
        struct Old {
            table: u8,
            #[serde(with = "serde_bytes")]
            key: Vec<u8>,
            value: Option<serde_bytes::ByteBuf>,
        }
        let e = entry(9, 4);
        let old: Vec<Old> = (e.ops.iter())
            .map(|o| Old {
                table: o.table,
                key: o.key.clone(),
                value: o
                    .value
                    .as_ref()
                    .map(|v| serde_bytes::ByteBuf::from(v.to_vec())),
            })
            .collect();
        let body = postcard::to_allocvec(&(e.seq, old)).unwrap();
        let record = encode(&e);
        assert_eq!(record[..4], (body.len() as u32).to_le_bytes());
        assert_eq!(record[4..HEADER], check(&body));
        assert_eq!(record[HEADER..], body[..]);
    }

    #[test]
    fn file_round_trip_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, got) = Journal::open(&path).unwrap();
        assert!(got.is_empty());
        j.append(&entry(1, 2)).unwrap();
        j.append(&entry(2, 0)).unwrap();
        drop(j);
        let (mut j, got) = Journal::open(&path).unwrap();
        assert_eq!(got, vec![entry(1, 2), entry(2, 0)]);
        j.reset().unwrap();
        j.append(&entry(3, 1)).unwrap();
        drop(j);
        assert_eq!(Journal::open(&path).unwrap().1, vec![entry(3, 1)]);
    }

    #[test]
    fn a_rotated_file_is_read_first_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&entry(1, 2)).unwrap();
        j.rotate().unwrap();
        assert!(j.rotate().is_err(), "one replaced file at a time");
        j.append(&entry(2, 1)).unwrap();
        // A crash here: both files are read, older records first.
        assert_eq!(
            Journal::open(&path).unwrap().1,
            vec![entry(1, 2), entry(2, 1)]
        );
        j.drop_old().unwrap();
        assert_eq!(Journal::open(&path).unwrap().1, vec![entry(2, 1)]);
        j.rotate().unwrap();
        j.reset().unwrap();
        assert!(Journal::open(&path).unwrap().1.is_empty());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }
    }
}
