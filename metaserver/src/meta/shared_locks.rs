//! Byte-range locks when several metaservers share one store (PostgreSQL): the table lives
//! in the store ([`crate::store::Table::Locks`], one list per inode), so a lock taken
//! through one metaserver holds against every other's clients.
//!
//! Invariants:
//! - Each metaserver instance writes its liveness (`alive.<instance>` in the counters
//!   table, wall-clock milliseconds) when it opens and at every [`Meta::maintain_at`]
//!   (every [`MAINTAIN_EVERY`] from the service). The locks of an instance silent for
//!   [`INSTANCE_LEASE`] — a metaserver that crashed or lost the database — are removed
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

/// How often a metaserver over a shared store runs [`Meta::maintain_at`].
pub const MAINTAIN_EVERY: Duration = Duration::from_secs(5);
/// Silence after which an instance's locks are taken away.
pub const INSTANCE_LEASE: Duration = Duration::from_secs(15);

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

    pub(super) fn end_session_shared(&self, session: u64) -> MetaResult<usize> {
        let me = self.instance;
        self.write(|w| Self::drop_locks(w, |s| s.instance == me && s.owner.session == session))
    }

    /// Marks this instance alive at `now_ms` and takes away the locks of instances silent
    /// for [`INSTANCE_LEASE`]; how many locks went.
    pub fn maintain_at(&self, now_ms: u64) -> MetaResult<usize> {
        if !self.store.shared() {
            return Ok(0);
        }
        let lease = INSTANCE_LEASE.as_millis() as u64;
        self.write(|w| {
            w.set_counter(&alive_key(self.instance), now_ms)?;
            let mut live = Vec::new();
            for (k, _) in w.txn().scan(Table::Meta, ALIVE, None, usize::MAX)? {
                let instance = u64::from_be_bytes(k[ALIVE.len()..].try_into().unwrap_or_default());
                match w.counter(&k)? + lease < now_ms {
                    true => w.txn.delete(Table::Meta, &k)?,
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
            Ok(dropped)
        })
    }
}
