//! Byte-range locks when several metaservers share one store (PostgreSQL): the table lives
//! in the store ([`crate::store::Table::Locks`], one list per inode), so a lock taken
//! through one metaserver holds against every other's clients.
//!
//! Invariants:
//! - Each metaserver instance writes its liveness (`alive.<instance>` in the counters
//!   table, wall-clock milliseconds) when it opens and at every [`Meta::maintain_at`]
//!   (every [`maintain_every`] of the lease from the service). The locks of an instance
//!   silent for the instance lease (`MetaConfig::instance_lease`, by default
//!   [`INSTANCE_LEASE`]) — a metaserver that crashed or lost the database — are removed
//!   there, with its liveness row, by whichever metaserver runs maintenance next. The
//!   locks of a client session that ended on a live metaserver go at once
//!   (`end_session`).
//! - Every lock operation is one store transaction over the one inode's list (a test is a
//!   read, a change a write), so the rules of [`super::locks`] hold across metaservers.

use super::Meta;
use super::locks::{Stored, with_stored};
use crate::records::{Records, Writer};
use crate::store::{Store, Table};
use meridian_proto::{InodeId, Lock, LockOwner, MetaResult};
use std::time::Duration;

/// Silence after which an instance's locks are taken away, by default
/// ([`super::MetaConfig::instance_lease`]); [`Meta::maintain_at`] runs every third of it.
pub const INSTANCE_LEASE: Duration = Duration::from_secs(15);

/// How often a metaserver over a shared store runs [`Meta::maintain_at`] for `lease`: a
/// live instance marks itself alive three times per lease.
pub fn maintain_every(lease: Duration) -> Duration {
    lease / 3
}

const ALIVE: &[u8] = b"alive.";

fn alive_key(instance: u64) -> Vec<u8> {
    [ALIVE, &instance.to_be_bytes()[..]].concat()
}

impl<S: Store> Meta<S> {
    pub(super) fn getlk_shared(
        &self,
        ino: InodeId,
        owner: LockOwner,
        lock: &Lock,
    ) -> MetaResult<Option<Lock>> {
        self.read(|t| {
            t.inode(ino)?;
            let (found, _) = with_stored(ino, t.locks(ino)?, self.instance, owner, |tb, o| {
                tb.test(ino, o, lock)
            });
            Ok(found)
        })
    }

    pub(super) fn setlk_shared(
        &self,
        ino: InodeId,
        owner: LockOwner,
        lock: &Lock,
    ) -> MetaResult<()> {
        self.write(|w| {
            w.inode(ino)?;
            let (done, after) = with_stored(ino, w.locks(ino)?, self.instance, owner, |tb, o| {
                tb.set(ino, o, lock)
            });
            done?;
            w.put_locks(ino, &after)
        })
    }

    /// Drops the locks of this instance's sessions that `gone` says are gone; how many.
    fn drop_locks(w: &mut Writer<'_>, gone: impl Fn(&Stored) -> bool) -> MetaResult<usize> {
        let mut dropped = 0;
        for (ino, list) in w.all_locks()? {
            let before = list.len();
            let kept: Vec<Stored> = list.into_iter().filter(|s| !gone(s)).collect();
            if kept.len() != before {
                dropped += before - kept.len();
                w.put_locks(ino, &kept)?;
            }
        }
        Ok(dropped)
    }

    /// Whether another instance is marked alive (within the instance lease).
    pub(super) fn others_alive(&self, r: &impl Records) -> MetaResult<bool> {
        let lease = self.config.instance_lease;
        let live = alive_instances(r, meridian_proto::Hlc::wall_millis(), lease)?;
        Ok(live.iter().any(|&i| i != self.instance))
    }

    pub(super) fn end_session_shared(&self, session: u64) -> MetaResult<usize> {
        let me = self.instance;
        self.write(|w| Self::drop_locks(w, |s| s.instance == me && s.owner.session == session))
    }

    /// Marks this instance alive at `now_ms`, takes away the locks of instances silent
    /// for the instance lease and answers for this instance's orphans (see
    /// [`super::shared_opens`]); how many locks went.
    pub fn maintain_at(&self, now_ms: u64) -> MetaResult<usize> {
        if !self.store.shared() {
            return Ok(0);
        }
        let lease = self.config.instance_lease.as_millis() as u64;
        self.write(|w| {
            w.set_counter(&alive_key(self.instance), now_ms)?;
            let mut live = Vec::new();
            for (key, instance, stamp) in alive_rows(w)? {
                match stamp + lease < now_ms {
                    true => w.txn.delete(Table::Meta, &key)?,
                    false => live.push(instance),
                }
            }
            let dropped = Self::drop_locks(w, |s| !live.contains(&s.instance))?;
            if dropped > 0 {
                tracing::info!(
                    locks = dropped,
                    "released the locks of metaservers gone silent"
                );
            }
            let purged = self.answer_orphans(w, &live)?;
            if purged > 0 {
                tracing::info!(
                    files = purged,
                    "purged files unlinked while open, now closed everywhere"
                );
            }
            Ok(dropped)
        })
    }
}

/// The instances marked alive within `lease` of `now_ms`.
pub(super) fn alive_instances(
    r: &impl Records,
    now_ms: u64,
    lease: Duration,
) -> MetaResult<Vec<u64>> {
    let rows = alive_rows(r)?.into_iter();
    let fresh = rows.filter(|&(_, _, stamp)| stamp + lease.as_millis() as u64 >= now_ms);
    Ok(fresh.map(|(_, instance, _)| instance).collect())
}

/// Every liveness row: (its key, the instance, when it last marked itself alive).
fn alive_rows(r: &impl Records) -> MetaResult<Vec<(Vec<u8>, u64, u64)>> {
    let mut out = Vec::new();
    for (k, _) in r.txn().scan(Table::Meta, ALIVE, None, usize::MAX)? {
        let instance = u64::from_be_bytes(k[ALIVE.len()..].try_into().unwrap_or_default());
        let stamp = r.counter(&k)?;
        out.push((k, instance, stamp));
    }
    Ok(out)
}
