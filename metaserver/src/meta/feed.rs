//! The change feed: every transaction that changes the namespace appends, in the same
//! transaction, one entry — its hybrid-logical-clock stamp and the inodes and names it
//! changed — so a subscriber (the next site) can follow from a cursor and fetch the
//! current state of what changed.
//!
//! Owns: reading the feed after a cursor, and trimming it.
//!
//! Invariants: stamps strictly increase in commit order (each is stamped after the last
//! one, read and written inside the serialized write transaction); an entry exists iff its
//! transaction committed; entries older than [`RETAIN`] are removed by every
//! [`TRIM_EVERY`]th later write, up to [`TRIM_BATCH`] at a time (four per write: more
//! than the one each write adds), and a cursor from before the oldest kept entry is refused (the subscriber
//! must resynchronise) rather than silently skipping changes.

use crate::records::Writer;
use crate::store::{ReadTxn, Table};
use meridian_proto::session::Invalidation;
use meridian_proto::{CallTag, Change, Hlc, MetaError, MetaResult};

/// How long feed entries are kept.
pub const RETAIN: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Writes between two trims: the scan of the feed's start stays off most writes' path
/// (on PostgreSQL it is a round trip).
pub const TRIM_EVERY: u64 = 32;

/// Entries removed per trim, at most (4 × [`TRIM_EVERY`]: trimming keeps up with any
/// write rate).
const TRIM_BATCH: usize = 128;

/// The marker of where the trimmed feed begins (the stamp of the last entry removed).
const TRIMMED_TO: &[u8] = b"feed_trimmed_to";

fn decode(key: &[u8], value: &[u8]) -> MetaResult<Change> {
    let stamp: [u8; 8] = key
        .try_into()
        .map_err(|_| MetaError::Corrupt(format!("feed key of {} bytes", key.len())))?;
    let hlc = Hlc(u64::from_be_bytes(stamp));
    type Entry = (u64, Vec<Invalidation>, Option<CallTag>);
    // Entries written before calls were recorded end after the items.
    let (origin, items, call) = postcard::from_bytes::<Entry>(value)
        .or_else(|_| {
            postcard::from_bytes::<(u64, Vec<Invalidation>)>(value).map(|(o, i)| (o, i, None))
        })
        .map_err(|e| MetaError::Corrupt(format!("feed entry {hlc}: {e}")))?;
    Ok(Change {
        hlc,
        origin,
        items,
        call,
    })
}

fn trimmed_to(t: &dyn ReadTxn) -> MetaResult<Hlc> {
    Ok(match t.get(Table::Meta, TRIMMED_TO)? {
        Some(v) => Hlc(postcard::from_bytes(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?),
        None => Hlc(0),
    })
}

/// Up to `limit` entries after `after`, oldest first.
pub fn read(t: &dyn ReadTxn, after: Hlc, limit: usize) -> MetaResult<Vec<Change>> {
    let trimmed = trimmed_to(t)?;
    if after < trimmed {
        return Err(MetaError::Invalid(format!(
            "feed cursor {after} is older than the oldest change kept ({trimmed}): resynchronise"
        )));
    }
    let cursor = after.0.to_be_bytes();
    let from = (after.0 > 0).then_some(&cursor[..]);
    t.scan(Table::Feed, &[], from, limit)?
        .iter()
        .map(|(k, v)| decode(k, v))
        .collect()
}

/// Removes a few entries older than [`RETAIN`] before `now`.
pub fn trim(w: &mut Writer<'_>, now: Hlc) -> MetaResult<()> {
    let horizon = Hlc::at_millis(now.millis().saturating_sub(RETAIN.as_millis() as u64));
    let old = w.txn.scan(Table::Feed, &[], None, TRIM_BATCH)?;
    let mut last = None;
    for (k, _) in old {
        let stamp = Hlc(u64::from_be_bytes(
            k.as_slice().try_into().unwrap_or([0; 8]),
        ));
        if stamp >= horizon {
            break;
        }
        w.txn.delete(Table::Feed, &k)?;
        last = Some(stamp);
    }
    if let Some(l) = last {
        w.txn.put(
            Table::Meta,
            TRIMMED_TO,
            &postcard::to_allocvec(&l.0).expect("a u64 encodes"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemStore, Store};

    #[test]
    fn old_entries_are_trimmed_and_a_cursor_before_them_is_refused() {
        let s = MemStore::new();
        let now = Hlc::wall_millis();
        let old = now - RETAIN.as_millis() as u64 - 60_000;
        for (i, at) in [old, old + 1, now].into_iter().enumerate() {
            s.write(|txn| {
                let mut w = Writer::new(txn);
                w.set_orphan(meridian_proto::InodeId(i as u64 + 10), None)?;
                w.put_xattr(meridian_proto::InodeId(i as u64 + 10), b"user.x", b"1")?;
                let hlc = w.append_feed(at, 1, None)?.expect("a change");
                trim(&mut w, hlc)
            })
            .unwrap();
        }
        let feed = s.read(|t| read(t, Hlc(0), 10));
        assert!(matches!(feed, Err(MetaError::Invalid(m)) if m.contains("resynchronise")));
        let kept = s.read(|t| read(t, trimmed_to(t)?, 10)).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].hlc.millis(), now);
    }
}
