//! Per-inode I/O modes for FUSE passthrough.
//!
//! Owns: which open handles of each inode are passthrough (sharing one registered backing
//! file) and which go through this process ("cached" opens, in the kernel's words).
//!
//! Invariants, from the kernel (fs/fuse/iomode.c): while an inode has a passthrough open,
//! every other open of it must be passthrough to the same backing file, or the kernel fails
//! that open with EIO; and an inode with a cached open cannot take a passthrough one. So:
//! - a read-only open joins the inode's backing file if it has one; it gets a new one only
//!   when the inode has no cached open here;
//! - an open for writing while readers are in passthrough is refused with ETXTBSY (the
//!   writes must reach this process, and the kernel cannot switch the readers back);
//! - the backing file is unregistered when its last handle is released.
//!
//! Locks: one mutex over the whole table; it is held across the open (so two opens of one
//! inode cannot both register a backing file) and never while another lock of the adapter
//! is taken.

use std::collections::HashMap;

/// `B` is the kernel's backing-file registration (`fuser::BackingId`; anything in tests).
pub struct Modes<B> {
    /// Backing file and passthrough handle count, by inode.
    backing: HashMap<u64, (B, u32)>,
    /// Handles going through this process, by inode.
    cached: HashMap<u64, u32>,
    /// Each handle's inode and whether it is passthrough.
    handles: HashMap<u64, (u64, bool)>,
}

/// How an open must be answered.
pub enum Mode<'a, B> {
    /// Join the inode's backing file.
    Passthrough(&'a B),
    /// Through this process; `may_passthrough` if a new backing file may be registered.
    Cached { may_passthrough: bool },
    /// Refuse (a writer while readers are in passthrough).
    Busy,
}

impl<B> Default for Modes<B> {
    fn default() -> Self {
        Modes {
            backing: HashMap::new(),
            cached: HashMap::new(),
            handles: HashMap::new(),
        }
    }
}

impl<B> Modes<B> {
    /// What an open of `ino` can be.
    pub fn mode(&self, ino: u64, write: bool) -> Mode<'_, B> {
        match (self.backing.get(&ino), write) {
            (Some(_), true) => Mode::Busy,
            (Some((id, _)), false) => Mode::Passthrough(id),
            (None, _) => Mode::Cached {
                may_passthrough: !write && self.cached.get(&ino).is_none_or(|&n| n == 0),
            },
        }
    }

    /// Records a passthrough handle; `id` registers the inode's backing file (first opener).
    pub fn add_passthrough(&mut self, ino: u64, fh: u64, id: Option<B>) {
        match (self.backing.get_mut(&ino), id) {
            (Some((_, n)), _) => *n += 1,
            (None, Some(id)) => {
                self.backing.insert(ino, (id, 1));
            }
            (None, None) => return,
        }
        self.handles.insert(fh, (ino, true));
    }

    pub fn add_cached(&mut self, ino: u64, fh: u64) {
        *self.cached.entry(ino).or_insert(0) += 1;
        self.handles.insert(fh, (ino, false));
    }

    /// Forgets a released handle; the last passthrough handle unregisters the backing file.
    pub fn release(&mut self, fh: u64) {
        let Some((ino, passthrough)) = self.handles.remove(&fh) else {
            return;
        };
        if passthrough {
            if let Some((_, n)) = self.backing.get_mut(&ino) {
                *n -= 1;
                if *n == 0 {
                    self.backing.remove(&ino);
                }
            }
        } else if let Some(n) = self.cached.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                self.cached.remove(&ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_share_one_backing_file_and_writers_wait_for_them() {
        let mut m: Modes<&str> = Modes::default();
        assert!(matches!(
            m.mode(1, false),
            Mode::Cached {
                may_passthrough: true
            }
        ));
        m.add_passthrough(1, 10, Some("b1"));
        assert!(matches!(m.mode(1, false), Mode::Passthrough(&"b1")));
        m.add_passthrough(1, 11, None);
        assert!(matches!(m.mode(1, true), Mode::Busy));
        m.release(10);
        assert!(matches!(m.mode(1, true), Mode::Busy), "one reader left");
        m.release(11);
        assert!(matches!(
            m.mode(1, true),
            Mode::Cached {
                may_passthrough: false
            }
        ));
        // A cached open (a writer, or a reader from before the copy) keeps new readers cached.
        m.add_cached(1, 12);
        assert!(matches!(
            m.mode(1, false),
            Mode::Cached {
                may_passthrough: false
            }
        ));
        m.release(12);
        assert!(matches!(
            m.mode(1, false),
            Mode::Cached {
                may_passthrough: true
            }
        ));
        // Unknown handles (directories) are ignored.
        m.release(99);
    }
}
