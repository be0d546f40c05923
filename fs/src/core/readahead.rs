//! Read-ahead: adaptive sequential prefetch per open file, and frame-sequence prefetch.
//!
//! Sequential: each read that starts where the previous one ended doubles the window (from
//! one chunk up to `readahead_max_bytes`); any other read resets it. The chunks in the
//! window are handed to the block cache's fetch workers, which fetch them in parallel.
//!
//! Sequence: the first read of `shot.1001.exr` looks up `shot.1002.exr` … (the last run of
//! digits in the name, same width) in the same directory and prefetches the first
//! `readahead_max_bytes` of each of the next `sequence_depth` frames, so playback of an
//! image sequence finds the next frames in memory. Passthrough reads never reach this
//! process, so a passthrough open does the same from the open: the kernel is asked to read
//! the opened copy and the next frame's copy into the page cache the passthrough reads
//! share (an application's `fadvise` on the FUSE file does not reach the copy) — when the
//! open is one of a playback, the frame before having been read (see [`Fs::playing`]). Without it
//! fio's rate-limited EXR playback got 16–19 fps through passthrough against 24 on the raw
//! disk, while unthrottled both did ~35.

use super::Fs;
use meridian_proto::{Attr, CHUNK_SIZE, Caller, InodeId, Layout};

/// Per-file sequential state.
#[derive(Debug, Default)]
pub struct ReadAhead {
    next: u64,
    window: u64,
    reads: u64,
}

/// Chunks to prefetch, `from_chunk..to_chunk`.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub from_chunk: u64,
    pub to_chunk: u64,
    pub first_read: bool,
}

impl ReadAhead {
    /// Updates the state for a read and says what to prefetch.
    pub fn on_read(&mut self, offset: u64, len: u64, max: u64) -> Option<Plan> {
        let first_read = self.reads == 0;
        self.reads += 1;
        let sequential = offset == self.next || (first_read && offset == 0);
        self.next = offset + len;
        if !sequential {
            self.window = 0;
            return None;
        }
        self.window = (self.window * 2).clamp(CHUNK_SIZE, max.max(CHUNK_SIZE));
        let from_chunk = self.next.div_ceil(CHUNK_SIZE).max(offset / CHUNK_SIZE);
        Some(Plan {
            from_chunk,
            to_chunk: (self.next + self.window).div_ceil(CHUNK_SIZE),
            first_read,
        })
    }
}

/// The names of the `depth` frames after `name` (`a.0009.exr` → `a.0010.exr` …), if `name`
/// has a frame number.
pub fn next_frames(name: &[u8], depth: u32) -> Vec<Vec<u8>> {
    (1..=i64::from(depth))
        .map_while(|k| frame(name, k))
        .collect()
}

/// The name of the frame `delta` frames from `name`'s (same width), if `name` has a frame
/// number and that frame is not below 0.
pub fn frame(name: &[u8], delta: i64) -> Option<Vec<u8>> {
    let end = name.iter().rposition(u8::is_ascii_digit)? + 1;
    let start = name[..end]
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &name[start..end];
    if digits.len() > 18 {
        return None;
    }
    let number = std::str::from_utf8(digits).ok()?.parse::<i64>().ok()?;
    let other = u64::try_from(number.checked_add(delta)?).ok()?;
    let mut n = name[..start].to_vec();
    n.extend(format!("{other:0width$}", width = digits.len()).bytes());
    n.extend_from_slice(&name[end..]);
    Some(n)
}

/// Next frames with passthrough copies read into the page cache ahead of the reader. The
/// copies are on local disk, so one frame ahead hides its latency; reading all
/// `sequence_depth` at the first open of a sequence queued ~250 MB of 50 MB frames on the
/// disk at once and stalled the first reads behind it (worst read 70–155 ms at depth 4
/// against 2–5 ms at one frame ahead, fio's rate-limited EXR playback).
const COPY_FRAMES_AHEAD: usize = 1;

impl Fs {
    /// Prefetches the next frames of the sequence `ino` belongs to: a frame with a
    /// passthrough copy is read into the page cache (its reads will not reach this
    /// process; only the first [`COPY_FRAMES_AHEAD`] of them), any other's first blocks
    /// into the block cache. `copies` are copies to read ahead as well (the one an open is
    /// about to pass through).
    pub(super) fn prefetch_sequence(&self, ino: InodeId, mut copies: Vec<std::fs::File>) {
        let chunks = self.cfg.readahead_max_bytes.div_ceil(CHUNK_SIZE);
        let mut local_frames = 0;
        for attr in self.next_frame_attrs(ino) {
            if let Some(copy) = self.ready_copy(&attr) {
                if local_frames < COPY_FRAMES_AHEAD {
                    copies.push(copy);
                }
                local_frames += 1;
            } else if let Ok((Layout::Chunks(map), _)) = self.ns.layout(attr.ino) {
                self.cache.prefetch(map.range(0..chunks).map(|(_, r)| r.id));
            }
        }
        super::passthrough::read_ahead_later(copies, self.cfg.readahead_max_bytes);
    }

    /// Whether `ino` is a frame opened during playback: the frame before it has a
    /// passthrough copy that was read (most of it is in the page cache). Only then does a
    /// passthrough open read ahead — a scan reading the headers of a thousand frames must
    /// not read a thousand frames.
    pub(super) fn playing(&self, ino: InodeId) -> bool {
        let Some((parent, name)) = self.names.lock().get(&ino).cloned() else {
            return false;
        };
        let Some(previous) = frame(&name, -1) else {
            return false;
        };
        let Ok(attr) = self.ns.lookup(&Caller::root(), parent, &previous) else {
            return false;
        };
        self.ready_copy(&attr)
            .is_some_and(|copy| super::passthrough::cached_fraction(&copy) >= 0.5)
    }

    /// The attributes of the `sequence_depth` frames after `ino`'s, as far as they exist.
    fn next_frame_attrs(&self, ino: InodeId) -> Vec<Attr> {
        if self.cfg.sequence_depth == 0 {
            return Vec::new();
        }
        let Some((parent, name)) = self.names.lock().get(&ino).cloned() else {
            return Vec::new();
        };
        next_frames(&name, self.cfg.sequence_depth)
            .into_iter()
            .map_while(|frame| self.ns.lookup(&Caller::root(), parent, &frame).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_names() {
        assert_eq!(
            next_frames(b"shot.1001.exr", 2),
            vec![b"shot.1002.exr".to_vec(), b"shot.1003.exr".to_vec()]
        );
        assert_eq!(
            next_frames(b"a_v002.0099.dpx", 1),
            vec![b"a_v002.0100.dpx".to_vec()]
        );
        assert_eq!(next_frames(b"f9", 1), vec![b"f10".to_vec()]);
        assert!(next_frames(b"notes.txt", 3).is_empty());
        assert_eq!(frame(b"shot.1001.exr", -1), Some(b"shot.1000.exr".to_vec()));
        assert_eq!(frame(b"shot.0000.exr", -1), None);
    }

    #[test]
    fn window_grows_on_sequential_reads_and_resets_on_seeks() {
        let mut ra = ReadAhead::default();
        let max = 16 * CHUNK_SIZE;
        let p = ra.on_read(0, 1 << 20, max).unwrap();
        assert!(p.first_read);
        assert_eq!((p.from_chunk, p.to_chunk), (1, 2));
        let mut last = p;
        for k in 1..8u64 {
            last = ra.on_read(k << 20, 1 << 20, max).unwrap();
        }
        assert!(last.to_chunk - last.from_chunk >= 8, "{last:?}");
        assert!(ra.on_read(100 << 20, 4096, max).is_none(), "a seek resets");
        assert_eq!(ra.window, 0);
    }
}
