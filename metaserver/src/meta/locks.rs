//! Byte-range locks of every client: POSIX record locks (fcntl) and flock, kept apart as
//! Linux keeps them (a flock never conflicts with a record lock).
//!
//! Owns: the lock table's rules. The table lives in memory (locks do not survive a
//! metaserver restart, as they do not survive a reboot of a local filesystem; clients
//! re-take them), or, when several metaservers share the store, in the store as one
//! [`Stored`] list per inode, each lock with the metaserver instance whose session holds it
//! (see [`with_stored`]).
//!
//! Invariants: the ranges one owner holds on one inode in one flavour never overlap (a new
//! lock replaces the owner's overlap, splitting what it cuts); two owners never hold
//! overlapping ranges in one flavour where either is a write lock; an inode with no locks
//! has no entry.

use meridian_proto::{InodeId, Lock, LockKind, LockOwner, MetaError, MetaResult};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A lock as a shared store keeps it: sessions are numbered by each metaserver, so the
/// holder is its metaserver instance, session and lock owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub instance: u64,
    pub owner: LockOwner,
    pub lock: Lock,
}

/// Runs `f` on a table holding `ino`'s stored locks, `owner` being `instance`'s; returns its
/// result and the inode's locks afterwards. Each distinct (instance, session) is given a
/// number of its own for the table, so sessions of different metaservers never match.
pub fn with_stored<T>(
    ino: InodeId,
    stored: Vec<Stored>,
    instance: u64,
    owner: LockOwner,
    f: impl FnOnce(&mut LockTable, LockOwner) -> T,
) -> (T, Vec<Stored>) {
    let mut sessions: Vec<(u64, u64)> = Vec::new();
    let mut local = |instance: u64, o: LockOwner| -> LockOwner {
        let key = (instance, o.session);
        let n = sessions.iter().position(|s| *s == key).unwrap_or_else(|| {
            sessions.push(key);
            sessions.len() - 1
        });
        LockOwner {
            session: n as u64,
            owner: o.owner,
        }
    };
    let held: Vec<Held> = stored
        .iter()
        .map(|s| Held {
            owner: local(s.instance, s.owner),
            lock: s.lock,
        })
        .collect();
    let me = local(instance, owner);
    let mut table = LockTable::default();
    if !held.is_empty() {
        table.by_inode.insert(ino, held);
    }
    let out = f(&mut table, me);
    let after = table
        .by_inode
        .remove(&ino)
        .unwrap_or_default()
        .into_iter()
        .map(|h| {
            let (instance, session) = sessions[h.owner.session as usize];
            Stored {
                instance,
                owner: LockOwner {
                    session,
                    owner: h.owner.owner,
                },
                lock: h.lock,
            }
        })
        .collect();
    (out, after)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    owner: LockOwner,
    lock: Lock,
}

fn overlaps(a: &Lock, b: &Lock) -> bool {
    a.flock == b.flock && a.start <= b.end && b.start <= a.end
}

fn conflicts(held: &Held, owner: LockOwner, want: &Lock) -> bool {
    held.owner != owner
        && overlaps(&held.lock, want)
        && (held.lock.kind == LockKind::Write || want.kind == LockKind::Write)
}

/// Every lock held, by inode.
#[derive(Default, Debug)]
pub struct LockTable {
    by_inode: HashMap<InodeId, Vec<Held>>,
}

impl LockTable {
    /// The first conflicting lock of another owner (F_GETLK).
    pub fn test(&self, ino: InodeId, owner: LockOwner, want: &Lock) -> Option<Lock> {
        self.by_inode
            .get(&ino)?
            .iter()
            .find(|h| conflicts(h, owner, want))
            .map(|h| h.lock)
    }

    /// Takes, converts or releases (F_SETLK); a conflict leaves the table unchanged.
    pub fn set(&mut self, ino: InodeId, owner: LockOwner, want: &Lock) -> MetaResult<()> {
        if want.start > want.end {
            return Err(MetaError::Invalid(format!(
                "lock range {}..={} ends before it starts",
                want.start, want.end
            )));
        }
        if want.kind != LockKind::Unlock && self.test(ino, owner, want).is_some() {
            return Err(MetaError::WouldBlock);
        }
        let list = self.by_inode.entry(ino).or_default();
        // Cut the owner's overlapping ranges around the new one.
        let mut kept = Vec::with_capacity(list.len() + 2);
        for h in list.drain(..) {
            if h.owner != owner || !overlaps(&h.lock, want) {
                kept.push(h);
                continue;
            }
            if h.lock.start < want.start {
                let mut left = h;
                left.lock.end = want.start - 1;
                kept.push(left);
            }
            if h.lock.end > want.end {
                let mut right = h;
                right.lock.start = want.end + 1;
                kept.push(right);
            }
        }
        if want.kind != LockKind::Unlock {
            kept.push(Held { owner, lock: *want });
        }
        if kept.is_empty() {
            self.by_inode.remove(&ino);
        } else {
            *list = kept;
        }
        Ok(())
    }

    /// Drops every lock of a session (its client is gone).
    pub fn end_session(&mut self, session: u64) -> usize {
        let mut dropped = 0;
        self.by_inode.retain(|_, list| {
            let before = list.len();
            list.retain(|h| h.owner.session != session);
            dropped += before - list.len();
            !list.is_empty()
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INO: InodeId = InodeId(7);

    fn lk(kind: LockKind, start: u64, end: u64) -> Lock {
        Lock {
            kind,
            start,
            end,
            pid: 1,
            flock: false,
        }
    }

    fn who(session: u64, owner: u64) -> LockOwner {
        LockOwner { session, owner }
    }

    #[test]
    fn readers_share_writers_exclude_across_sessions() {
        let mut t = LockTable::default();
        let (a, b) = (who(1, 10), who(2, 10));
        t.set(INO, a, &lk(LockKind::Read, 0, 99)).unwrap();
        t.set(INO, b, &lk(LockKind::Read, 50, 150)).unwrap();
        assert_eq!(
            t.set(INO, b, &lk(LockKind::Write, 0, 9)),
            Err(MetaError::WouldBlock)
        );
        assert_eq!(
            t.test(INO, b, &lk(LockKind::Write, 0, 9)),
            Some(lk(LockKind::Read, 0, 99))
        );
        // Unlocking the middle of a's range frees it for b's write.
        t.set(INO, a, &lk(LockKind::Unlock, 0, 49)).unwrap();
        t.set(INO, b, &lk(LockKind::Write, 0, 9)).unwrap();
        assert_eq!(t.end_session(2), 2);
        assert!(t.test(INO, a, &lk(LockKind::Write, 0, u64::MAX)).is_none());
    }

    #[test]
    fn flock_and_record_locks_do_not_meet() {
        let mut t = LockTable::default();
        t.set(INO, who(1, 1), &lk(LockKind::Write, 0, u64::MAX))
            .unwrap();
        let mut f = lk(LockKind::Write, 0, u64::MAX);
        f.flock = true;
        t.set(INO, who(2, 2), &f).unwrap();
        assert_eq!(t.set(INO, who(3, 3), &f), Err(MetaError::WouldBlock));
    }

    /// A reference model: one lock state per byte of a small file, per owner.
    fn model_conflict(bytes: &[Vec<(u8, LockKind)>], owner: u8, want: &Lock) -> bool {
        (want.start..=want.end.min(31)).any(|b| {
            bytes[b as usize]
                .iter()
                .any(|&(o, k)| o != owner && (k == LockKind::Write || want.kind == LockKind::Write))
        })
    }

    proptest! {
        /// Any sequence of set calls from a few owners agrees with a per-byte model.
        #[test]
        fn agrees_with_a_per_byte_model(ops in prop::collection::vec(
            (0u8..3, 0u8..3, 0u64..32, 0u64..32), 1..60)) {
            let mut t = LockTable::default();
            let mut bytes: Vec<Vec<(u8, LockKind)>> = vec![Vec::new(); 32];
            for (owner, kind, a, b) in ops {
                let kind = [LockKind::Read, LockKind::Write, LockKind::Unlock][kind as usize];
                let want = lk(kind, a.min(b), a.max(b));
                let o = who(u64::from(owner), 0);
                let expect_conflict = kind != LockKind::Unlock && model_conflict(&bytes, owner, &want);
                let got = t.set(INO, o, &want);
                prop_assert_eq!(got.is_err(), expect_conflict);
                if !expect_conflict {
                    for byte in want.start..=want.end {
                        let cell = &mut bytes[byte as usize];
                        cell.retain(|&(x, _)| x != owner);
                        if kind != LockKind::Unlock {
                            cell.push((owner, kind));
                        }
                    }
                }
                // Every byte's holders, as the table reports them to a prober.
                for byte in 0..32u64 {
                    for probe in 0..3u8 {
                        let w = lk(LockKind::Write, byte, byte);
                        prop_assert_eq!(
                            t.test(INO, who(u64::from(probe), 0), &w).is_some(),
                            model_conflict(&bytes, probe, &w)
                        );
                    }
                }
            }
        }
    }
}
