//! A dirty chunk's changes kept as written extents, apart from the chunk's committed
//! bytes, until the chunk is stored.
//!
//! A write into a chunk that has committed bytes would otherwise merge the whole chunk
//! (fetch up to 4 MiB and copy it) on first touch, so that a file written at random
//! places, with more chunks than `max_dirty_bytes` holds, would fetch, hash and store a
//! whole chunk for every few KiB written. A [`Patch`] holds only what was written; a read
//! lays it over the committed bytes; the merge happens once, when the chunk is stored
//! (or when the patch has grown to be worth a whole buffer, see [`Patch::weight`]).
//!
//! Invariants: extents are non-empty, sorted by start, and neither overlap nor touch (a
//! write that overlaps or abuts one joins it); a later write replaces the bytes it covers;
//! `bytes` is the sum of the extents' lengths. Nothing here does I/O.

use super::file::{Piece, copy_piece};
use std::collections::BTreeMap;

/// What one extent costs beyond its bytes (map node, allocation), counted in
/// [`Patch::weight`] so that many tiny writes are not mistaken for little memory.
const EXTENT_COST: usize = 64;

#[derive(Debug, Default)]
pub struct Patch {
    extents: BTreeMap<usize, Vec<u8>>,
    bytes: usize,
}

impl Patch {
    /// The memory the patch holds, roughly: its bytes plus a cost per extent.
    pub fn weight(&self) -> usize {
        self.bytes + EXTENT_COST * self.extents.len()
    }

    /// Writes `data` at `at` (an offset within the chunk).
    pub fn write(&mut self, at: usize, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = at + data.len();
        // The extents the write overlaps or touches: one starting before it that reaches
        // `at`, and every one starting in `at..=end`.
        let before = (self.extents.range(..at).next_back())
            .filter(|(s, v)| *s + v.len() >= at)
            .map(|(s, _)| *s);
        let joined: Vec<usize> = before
            .into_iter()
            .chain(self.extents.range(at..=end).map(|(s, _)| *s))
            .collect();
        let start = joined.first().map_or(at, |s| (*s).min(at));
        // An extent that starts where the joined one does keeps its buffer (an appending
        // writer extends one buffer in place).
        let mut buf = match joined.first() {
            Some(s) if *s == start => self.take(*s),
            _ => Vec::new(),
        };
        let last_end = (joined.last())
            .map(|s| s + self.extents.get(s).map_or(buf.len(), Vec::len))
            .unwrap_or(end);
        buf.resize(end.max(last_end).max(start + buf.len()) - start, 0);
        for s in joined.iter().filter(|s| **s != start) {
            let v = self.take(*s);
            buf[s - start..s - start + v.len()].copy_from_slice(&v);
        }
        buf[at - start..end - start].copy_from_slice(data);
        self.bytes += buf.len();
        self.extents.insert(start, buf);
    }

    fn take(&mut self, start: usize) -> Vec<u8> {
        let v = self.extents.remove(&start).expect("listed above");
        self.bytes -= v.len();
        v
    }

    /// Adds the `take` bytes at `within` to a read plan: written bytes copied, the gaps
    /// from `base` (which adds the committed bytes it has there and says how many), zeros
    /// past those. Always accounts for all `take` bytes.
    pub fn plan(
        &self,
        pieces: &mut Vec<Piece>,
        within: usize,
        take: usize,
        base: impl Fn(&mut Vec<Piece>, usize, usize) -> usize,
    ) {
        let end = within + take;
        let gap = |pieces: &mut Vec<Piece>, from: usize, to: usize| {
            let have = base(pieces, from, to - from);
            if have < to - from {
                pieces.push(Piece::Zeros(to - from - have));
            }
        };
        let first = (self.extents.range(..=within).next_back()).map_or(within, |(s, _)| *s);
        let mut pos = within;
        for (&s, v) in self.extents.range(first..end) {
            let e = (s + v.len()).min(end);
            if e <= pos {
                continue;
            }
            if s > pos {
                gap(pieces, pos, s);
            }
            let from = pos.max(s);
            copy_piece(pieces, v, from - s, e - from);
            pos = e;
        }
        if pos < end {
            gap(pieces, pos, end);
        }
    }

    /// Lays the extents over `buf` (the chunk's committed bytes), growing it with zeros
    /// where an extent reaches past its end.
    pub fn apply(self, buf: &mut super::file::ChunkBuf) {
        for (s, v) in self.extents {
            if buf.len() < s + v.len() {
                buf.resize_zeroed(s + v.len());
            }
            buf[s..s + v.len()].copy_from_slice(&v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::file::ChunkBuf;
    use proptest::prelude::*;

    /// The bytes a plan of the whole range `0..len` reads, with `base` as committed bytes.
    fn read(p: &Patch, base: &[u8], len: usize) -> Vec<u8> {
        let mut pieces = Vec::new();
        p.plan(&mut pieces, 0, len, |pc, w, t| copy_piece(pc, base, w, t));
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Copied(b) => out.extend_from_slice(&b),
                Piece::Zeros(n) => out.resize(out.len() + n, 0),
                Piece::Block { .. } => unreachable!("the base here is copied"),
            }
        }
        out
    }

    #[test]
    fn touching_and_overlapping_writes_join_and_the_newest_wins() {
        let mut p = Patch::default();
        p.write(10, b"aaaa");
        p.write(20, b"bb");
        assert_eq!(p.extents.len(), 2);
        p.write(14, b"cccccc"); // touches both: one extent 10..22
        assert_eq!(p.extents.len(), 1);
        assert_eq!(p.bytes, 12);
        p.write(8, b"dd"); // touches the start
        assert_eq!(p.extents.keys().copied().collect::<Vec<_>>(), vec![8]);
        assert_eq!(&p.extents[&8], b"ddaaaaccccccbb");
        p.write(12, b"e");
        assert_eq!(&p.extents[&8], b"ddaaeaccccccbb");
        assert_eq!(p.weight(), 14 + EXTENT_COST);
    }

    #[test]
    fn a_read_lays_the_writes_over_the_base_and_zeros_past_it() {
        let mut p = Patch::default();
        p.write(2, b"xy");
        p.write(9, b"z");
        assert_eq!(read(&p, b"abcdef", 12), b"abxyef\0\0\0z\0\0");
        let mut buf = ChunkBuf::from(&b"abcdef"[..]);
        p.apply(&mut buf);
        assert_eq!(&buf[..], b"abxyef\0\0\0z");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        /// Any writes read back as the same writes applied to a plain buffer, and the
        /// extents keep their invariants.
        #[test]
        fn patches_agree_with_a_plain_buffer(
            base_len in 0usize..300,
            writes in proptest::collection::vec((0usize..400, 1usize..60, any::<u8>()), 1..40),
        ) {
            let base: Vec<u8> = (0..base_len).map(|i| i as u8).collect();
            let mut model = base.clone();
            let mut p = Patch::default();
            for (at, len, byte) in writes {
                let data = vec![byte; len];
                p.write(at, &data);
                if model.len() < at + len {
                    model.resize(at + len, 0);
                }
                model[at..at + len].copy_from_slice(&data);
                let mut prev_end = None;
                for (s, v) in &p.extents {
                    prop_assert!(!v.is_empty());
                    prop_assert!(prev_end.is_none_or(|e| e < *s), "extents touch or overlap");
                    prev_end = Some(s + v.len());
                }
                prop_assert_eq!(p.bytes, p.extents.values().map(Vec::len).sum::<usize>());
            }
            prop_assert_eq!(read(&p, &base, model.len() + 5)[..model.len()].to_vec(), model.clone());
            let mut buf = ChunkBuf::from(&base[..]);
            p.apply(&mut buf);
            prop_assert_eq!(buf[..].to_vec(), model);
        }
    }
}
