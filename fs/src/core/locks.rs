//! Byte-range locks (fcntl record locks and flock) through the namespace, so every client
//! of a site sees them.
//!
//! Owns: which (inode, lock owner) pairs this mount has taken locks for, so closing a file
//! costs a metaserver call only when its owner locked something.
//!
//! Invariants: a blocking request (F_SETLKW, flock without LOCK_NB) polls the namespace
//! with a growing pause (1 ms up to 50 ms) until granted: the metaserver queues no
//! waiters, so a lock freed by a client that went away is taken by the next poll.

use super::Fs;
use crate::error::FsResult;
use meridian_proto::{InodeId, Lock, LockKind, LockOwner, MetaError};
use std::time::Duration;

fn owner(owner: u64) -> LockOwner {
    // The session is the metaserver's to fill in (0 in embedded mode).
    LockOwner { session: 0, owner }
}

impl Fs {
    /// The first lock of another owner that conflicts with `lock` (F_GETLK).
    pub fn getlk(&self, ino: InodeId, lock_owner: u64, lock: &Lock) -> FsResult<Option<Lock>> {
        Ok(self.ns.getlk(ino, owner(lock_owner), lock)?)
    }

    /// Takes, changes or releases a lock (F_SETLK, or F_SETLKW with `wait`).
    pub fn setlk(&self, ino: InodeId, lock_owner: u64, lock: &Lock, wait: bool) -> FsResult<()> {
        if lock.kind != LockKind::Unlock {
            self.locked.lock().insert((ino, lock_owner));
        }
        let mut pause = Duration::from_millis(1);
        loop {
            match self.ns.setlk(ino, owner(lock_owner), lock) {
                Err(MetaError::WouldBlock) if wait => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                r => return Ok(r?),
            }
        }
    }

    /// Releases every lock `lock_owner` holds on `ino` (a close by the owning process, or
    /// the last close of a flock'ed file); free when it never locked anything here.
    pub fn unlock_owner(&self, ino: InodeId, lock_owner: u64) -> FsResult<()> {
        if !self.locked.lock().remove(&(ino, lock_owner)) {
            return Ok(());
        }
        let all = Lock {
            kind: LockKind::Unlock,
            start: 0,
            end: u64::MAX,
            pid: 0,
            flock: false,
        };
        Ok(self.ns.setlk(ino, owner(lock_owner), &all)?)
    }
}
