//! Files unlinked while open, when several metaservers share one store: a file open
//! through one metaserver survives an unlink through another until its last close.
//!
//! Open counts stay in each process's memory (an open is never a store write). What is
//! shared is the orphan record ([`OrphanRec`]) of each inode whose last name went:
//! - `pending`: the other instances alive at that moment that have not yet said whether
//!   they hold it open;
//! - `holders`: the instances that hold it open.
//!
//! Invariants:
//! - A regular file whose last name goes is purged at once only when it is not open here
//!   and no other instance is alive; otherwise it becomes an orphan, this instance a
//!   holder if it has it open.
//! - Each instance answers for itself at every [`Meta::maintain_at`]: it leaves `pending`,
//!   and joins or leaves `holders` by its own open count. An open of an orphan joins
//!   `holders` in a transaction of its own before it returns.
//! - An orphan is purged when neither list names a live instance (one marked alive within
//!   [`super::MetaConfig::instance_lease`]): by its last holder's last release or by any instance's
//!   maintenance. A metaserver that crashed holding it stops counting after its lease.
//! - `Meta::orphaned` holds the orphans this instance holds (a superset: a release checks
//!   the record again), so a release of any other inode needs no store access.
//!
//! Locks: `opens` and `orphaned` are taken inside store transactions, never the reverse.

use super::Meta;
use super::shared_locks::alive_instances;
use crate::records::{OrphanRec, Records, Writer};
use crate::store::Store;
use meridian_proto::{Hlc, InodeId, MetaError, MetaResult};

impl<S: Store> Meta<S> {
    /// The last name of `ino` (a regular file when `file`) is gone and its record written:
    /// purges it, or keeps it as an orphan while anyone may hold it open.
    pub(super) fn orphan_or_purge(
        &self,
        w: &mut Writer<'_>,
        ino: InodeId,
        file: bool,
    ) -> MetaResult<()> {
        let here = self.is_open(ino);
        let shared = self.store.shared();
        let mut rec = OrphanRec::default();
        if shared && file {
            let live = alive_instances(w, Hlc::wall_millis(), self.config.instance_lease)?;
            rec.pending = live.into_iter().filter(|&i| i != self.instance).collect();
        }
        if !here && rec.pending.is_empty() {
            return w.purge_inode(ino);
        }
        if here {
            // A superset if this transaction fails: the last release checks again.
            self.orphaned.lock().insert(ino);
            if shared {
                rec.holders.push(self.instance);
            }
        }
        w.set_orphan(ino, Some(&rec))
    }

    /// An open of `ino`, an orphan, through this instance: joins its holders, or fails
    /// with `NotFound` if it was purged meanwhile. The open is already counted.
    pub(super) fn hold_orphan(&self, ino: InodeId) -> MetaResult<()> {
        self.write(|w| {
            let mut rec = w.orphan(ino)?.ok_or(MetaError::NotFound)?;
            if !rec.holders.contains(&self.instance) {
                rec.holders.push(self.instance);
                w.set_orphan(ino, Some(&rec))?;
            }
            self.orphaned.lock().insert(ino);
            Ok(())
        })
    }

    /// The last release here of `ino`, an orphan this instance held: purges it if no one
    /// else may hold it.
    pub(super) fn release_orphan(&self, ino: InodeId) -> MetaResult<()> {
        self.write(|w| {
            if self.is_open(ino) {
                self.orphaned.lock().insert(ino); // opened again meanwhile
                return Ok(());
            }
            let Some(mut rec) = w.orphan(ino)? else {
                return Ok(()); // purged or linked again
            };
            rec.holders.retain(|&i| i != self.instance);
            if self.store.shared() {
                let live = alive_instances(w, Hlc::wall_millis(), self.config.instance_lease)?;
                rec.pending.retain(|i| live.contains(i));
                rec.holders.retain(|i| live.contains(i));
            }
            self.settle(w, ino, &rec)
        })
    }

    /// This instance's answer for every orphan, given the `live` instances (see the
    /// module invariants); how many were purged.
    pub(super) fn answer_orphans(&self, w: &mut Writer<'_>, live: &[u64]) -> MetaResult<usize> {
        let mut purged = 0;
        for (ino, before) in w.orphans()? {
            let mut rec = before.clone();
            let me = self.instance;
            rec.pending.retain(|&i| i != me && live.contains(&i));
            rec.holders.retain(|&i| i != me && live.contains(&i));
            if self.is_open(ino) {
                rec.holders.push(me);
                self.orphaned.lock().insert(ino);
            }
            if rec == before {
                continue;
            }
            purged += usize::from(rec == OrphanRec::default());
            self.settle(w, ino, &rec)?;
        }
        Ok(purged)
    }

    /// Writes `rec` for `ino`, or purges it when the record names no one.
    fn settle(&self, w: &mut Writer<'_>, ino: InodeId, rec: &OrphanRec) -> MetaResult<()> {
        if *rec != OrphanRec::default() {
            return w.set_orphan(ino, Some(rec));
        }
        match w.try_inode(ino)? {
            Some(r) if r.attr.nlink == 0 => w.purge_inode(ino),
            _ => w.set_orphan(ino, None),
        }
    }
}
