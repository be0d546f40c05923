//! Byte-range locks (fcntl record locks and flock) through the namespace, so every client
//! of a site sees them.
//!
//! Owns: which (inode, lock owner) pairs this mount has taken locks for, so closing a file
//! costs a metaserver call only when its owner locked something.
//!
//! Invariants: a blocking request (F_SETLKW, flock without LOCK_NB) asks again whenever a
//! lock may have come free — a release through this mount, or a wake-up its site
//! metaserver pushes to clients it refused ([`Fs::locks_changed`]) — and otherwise every
//! pause (1 ms doubling up to [`MAX_PAUSE`]): the metaserver queues no waiters, so a
//! wake-up lost, or a release on another metaserver of a PostgreSQL site (which pushes
//! none), is made up by the next poll. The wake-up generation is read before each try, so
//! a release between a refusal and the wait is not missed. A wait
//! belongs to the owner's current use of the file: once the owner's locks on it are
//! released (its process closed the file, or died — the kernel closes its files), the
//! wait stops, and a lock it was granted meanwhile is given back at once. Otherwise a
//! waiter killed while waiting would leave this mount polling on its behalf and, when
//! the lock came free, holding it for no one, for ever. A wait also stops, with EINTR,
//! when its caller has a signal to take (the mount checks; the kernel does not say): a
//! waiting render job killed by its scheduler dies at once instead of hanging in the
//! kernel until the lock comes free.

use super::Fs;
use crate::error::{FsError, FsResult};
use meridian_proto::{InodeId, Lock, LockKind, LockOwner, MetaError};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::time::Duration;

/// The longest pause between two tries of a blocking lock request with no wake-up.
pub const MAX_PAUSE: Duration = Duration::from_millis(500);

/// A generation bumped whenever a lock may have come free, with waiters on it.
#[derive(Debug, Default)]
pub struct Wake {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Wake {
    fn generation(&self) -> u64 {
        *self.generation.lock()
    }
    fn bump(&self) {
        *self.generation.lock() += 1;
        self.changed.notify_all();
    }
    /// Waits until the generation moves past `seen`, at most `pause`.
    fn wait(&self, seen: u64, pause: Duration) {
        let mut g = self.generation.lock();
        if *g == seen {
            let _ = self.changed.wait_for(&mut g, pause);
        }
    }
}

/// The (inode, lock owner) pairs this mount took locks for, each with the generation at
/// which the owner started using locks on the inode (a new one after each release).
#[derive(Debug, Default)]
pub struct Locked {
    pairs: HashMap<(InodeId, u64), u64>,
    next: u64,
}

impl Locked {
    /// The pair's current generation, starting one if there is none.
    fn enter(&mut self, key: (InodeId, u64)) -> u64 {
        let next = &mut self.next;
        *self.pairs.entry(key).or_insert_with(|| {
            *next += 1;
            *next
        })
    }
    fn current(&self, key: (InodeId, u64), generation: u64) -> bool {
        self.pairs.get(&key) == Some(&generation)
    }
    /// Ends the pair's generation; whether it had one.
    fn leave(&mut self, key: (InodeId, u64)) -> bool {
        self.pairs.remove(&key).is_some()
    }
}

fn owner(owner: u64) -> LockOwner {
    // The session is the metaserver's to fill in (0 in embedded mode).
    LockOwner { session: 0, owner }
}

impl Fs {
    /// The first lock of another owner that conflicts with `lock` (F_GETLK).
    pub fn getlk(&self, ino: InodeId, lock_owner: u64, lock: &Lock) -> FsResult<Option<Lock>> {
        Ok(self.ns.getlk(ino, owner(lock_owner), lock)?)
    }

    /// Takes, changes or releases a lock: F_SETLK, or F_SETLKW with `wait`, which says
    /// whether the caller was interrupted (a signal): then the wait stops with EINTR, as
    /// F_SETLKW does (the kernel restarts it after an `SA_RESTART` handler).
    pub fn setlk(
        &self,
        ino: InodeId,
        lock_owner: u64,
        lock: &Lock,
        wait: Option<&dyn Fn() -> bool>,
    ) -> FsResult<()> {
        let key = (ino, lock_owner);
        let generation = (lock.kind != LockKind::Unlock).then(|| self.locked.lock().enter(key));
        let abandoned = || generation.is_some_and(|g| !self.locked.lock().current(key, g));
        let mut pause = Duration::from_millis(1);
        loop {
            let seen = self.lock_wake.generation();
            match self.ns.setlk(ino, owner(lock_owner), lock) {
                Err(MetaError::WouldBlock) if let Some(interrupted) = wait => {
                    if abandoned() {
                        return Err(FsError::LockAbandoned(ino.0));
                    }
                    if interrupted() {
                        return Err(FsError::Interrupted(ino.0));
                    }
                    self.lock_wake.wait(seen, pause);
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Ok(()) if wait.is_some() && abandoned() => {
                    // Granted after its owner let go of the file: give it back.
                    self.ns.setlk(ino, owner(lock_owner), &unlock_all())?;
                    self.lock_wake.bump();
                    return Err(FsError::LockAbandoned(ino.0));
                }
                Ok(()) => {
                    // A release, or a lock narrowed in place, may let a waiter here in.
                    self.lock_wake.bump();
                    return Ok(());
                }
                r => return Ok(r?),
            }
        }
    }

    /// A lock may have come free elsewhere (the site metaserver said so): blocking
    /// requests try again now.
    pub fn locks_changed(&self) {
        self.lock_wake.bump();
    }

    /// Releases every lock `lock_owner` holds on `ino` (a close by the owning process, or
    /// the last close of a flock'ed file); free when it never locked anything here.
    pub fn unlock_owner(&self, ino: InodeId, lock_owner: u64) -> FsResult<()> {
        if !self.locked.lock().leave((ino, lock_owner)) {
            return Ok(());
        }
        self.ns.setlk(ino, owner(lock_owner), &unlock_all())?;
        self.lock_wake.bump();
        Ok(())
    }
}

/// Every lock of an owner on an inode, released.
fn unlock_all() -> Lock {
    Lock {
        kind: LockKind::Unlock,
        start: 0,
        end: u64::MAX,
        pid: 0,
        flock: false,
    }
}
