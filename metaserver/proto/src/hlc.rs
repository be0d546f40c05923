//! Hybrid logical clocks: every change of a namespace is stamped with one, so changes made
//! at several sites can be ordered consistently with causality and close to wall time.
//!
//! Owns: the stamp format — milliseconds since the Unix epoch in the high 48 bits, a
//! logical counter in the low 16 — and the two rules (Kulkarni et al., 2014): a local
//! event takes `max(last + 1, now)`; a received stamp is folded in by `observe`.
//!
//! Invariants: stamps a clock issues strictly increase, whatever the wall clock does;
//! a stamp issued after observing `r` is greater than `r`. Pure: the caller supplies the
//! wall time.

use serde::{Deserialize, Serialize};

/// One stamp. Ordered as its `u64`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc(pub u64);

const LOGICAL_BITS: u32 = 16;

impl Hlc {
    /// The smallest stamp at wall time `ms`.
    pub fn at_millis(ms: u64) -> Hlc {
        Hlc(ms << LOGICAL_BITS)
    }

    /// Wall time part, in milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical part.
    pub fn logical(self) -> u16 {
        self.0 as u16
    }

    /// The stamp for a local event after `self`, at wall time `now_ms`.
    pub fn tick(self, now_ms: u64) -> Hlc {
        Hlc(Hlc::at_millis(now_ms).0.max(self.0 + 1))
    }

    /// The clock after receiving a message stamped `remote`, at wall time `now_ms`.
    pub fn observe(self, remote: Hlc, now_ms: u64) -> Hlc {
        Hlc(Hlc::at_millis(now_ms).0.max(self.0 + 1).max(remote.0 + 1))
    }

    /// The wall time now, in milliseconds.
    pub fn wall_millis() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

impl std::fmt::Display for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:05}", self.millis(), self.logical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_when_the_wall_clock_stalls_or_steps_back() {
        let a = Hlc::default().tick(1000);
        assert_eq!((a.millis(), a.logical()), (1000, 0));
        let b = a.tick(1000);
        assert_eq!((b.millis(), b.logical()), (1000, 1));
        let c = b.tick(400); // the clock stepped back
        assert!(c > b);
        assert_eq!(c.millis(), 1000);
        let d = c.tick(2000);
        assert_eq!((d.millis(), d.logical()), (2000, 0));
    }

    #[test]
    fn a_stamp_after_observing_is_greater_than_what_was_observed() {
        let remote = Hlc::at_millis(5000).tick(5000).tick(5000);
        let local = Hlc::at_millis(1000).observe(remote, 1200);
        assert!(local > remote);
        assert_eq!(local.millis(), 5000);
        assert!(local.tick(1300) > local);
    }
}
