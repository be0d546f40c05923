//! The data of one open regular file: committed layout, uploaded-but-uncommitted chunks and
//! dirty chunk buffers, and the reads and writes over them.
//!
//! Invariants:
//! - A dirty chunk buffer holds the chunk's bytes from its start, with the committed bytes
//!   merged in, so it can be uploaded as a whole block; bytes past its end, up to the file
//!   size, read as zeros. The merge happens on first touch, except for a chunk whose first
//!   write starts at the chunk's start (a sequential overwrite): its buffer starts empty and
//!   the chunk is listed in `unmerged` — the committed bytes past the buffer's end still
//!   apply (reads take them from the committed block) and are merged only if the chunk is
//!   stored before being written to its end, or a write leaves a gap past the buffer. A
//!   writer that overwrites whole chunks in order so never fetches the bytes it replaces.
//! - A chunk with committed bytes first written elsewhere than at its start is not merged:
//!   its writes are kept as a [`Patch`] (in `patches`, never also in `dirty`) that reads
//!   lay over the committed bytes, merged into a buffer only when the chunk is stored or
//!   the patch weighs half a chunk — so writes at random places cost what they write, not
//!   a chunk each.
//! - `layout` is the committed layout plus chunks uploaded early (listed in `uncommitted`).
//! - `size` is the size every reader in this mount sees; `changed` is set while anything
//!   differs from the metaserver's copy.
//! - Nothing here does I/O except through the [`ChunkSource`] the caller passes.

use crate::cache::aligned::AlignedVec;
use crate::core::patch::Patch;
use crate::core::upload::Pending;
use crate::error::{FsError, FsResult};
use bytes::Bytes;
use meridian_proto::{BlockId, BlockRef, CHUNK_SIZE, Commit, InodeId, Layout, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Fetches block bytes (verified) for reads and merges.
pub trait ChunkSource {
    fn block(&self, id: &BlockId) -> FsResult<Bytes>;
    /// `len` bytes at `start` of a block (a cache may serve this without the whole block).
    fn block_range(&self, id: &BlockId, start: usize, len: usize) -> FsResult<Bytes> {
        let b = self.block(id)?;
        let end = (start + len).min(b.len());
        Ok(b.slice(start.min(end)..end))
    }
}

/// A chunk's buffer: page-aligned (written to the disk tier and the passthrough mirror
/// by direct I/O as it is) and pooled (see [`AlignedVec`]).
pub type ChunkBuf = AlignedVec;

/// Chunk buffers to upload (chunk index, bytes).
pub type ChunkBufs = Vec<(u64, ChunkBuf)>;

/// What a commit needs first: chunk buffers to upload, or the whole file's inline bytes.
pub type Prepared = (ChunkBufs, Option<Vec<u8>>);

/// One part of a planned read.
#[derive(Clone, Debug)]
pub enum Piece {
    /// Bytes copied from buffers or inline data.
    Copied(Bytes),
    /// `len` bytes at `start` of a stored block.
    Block {
        id: BlockId,
        start: usize,
        len: usize,
    },
    /// A hole.
    Zeros(usize),
}

/// Fetches the blocks a plan names and joins the pieces; a read within one piece costs no
/// copy.
pub fn assemble(src: &dyn ChunkSource, pieces: Vec<Piece>) -> FsResult<Bytes> {
    let fetch = |p: Piece| -> FsResult<Bytes> {
        Ok(match p {
            Piece::Copied(b) => b,
            Piece::Block { id, start, len } => src.block_range(&id, start, len)?,
            Piece::Zeros(n) => Bytes::from(vec![0u8; n]),
        })
    };
    if pieces.len() == 1 {
        return fetch(pieces.into_iter().next().expect("one piece"));
    }
    let mut out = Vec::with_capacity(pieces.iter().map(Piece::len).sum());
    for p in pieces {
        match p {
            Piece::Zeros(n) => out.resize(out.len() + n, 0),
            other => out.extend_from_slice(&fetch(other)?),
        }
    }
    Ok(Bytes::from(out))
}

/// Copies up to `take` bytes at `within` of `buf` into a piece; returns how many there were.
pub(super) fn copy_piece(pieces: &mut Vec<Piece>, buf: &[u8], within: usize, take: usize) -> usize {
    let have = buf.len().saturating_sub(within).min(take);
    if have > 0 {
        pieces.push(Piece::Copied(Bytes::copy_from_slice(
            &buf[within..within + have],
        )));
    }
    have
}

impl Piece {
    pub fn len(&self) -> usize {
        match self {
            Piece::Copied(b) => b.len(),
            Piece::Block { len, .. } | Piece::Zeros(len) => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct FileState {
    pub ino: InodeId,
    layout: Layout,
    uncommitted: BTreeSet<u64>,
    dirty: BTreeMap<u64, ChunkBuf>,
    /// Dirty chunks whose committed bytes past the buffer's end are not merged yet (see the
    /// module's invariants); every one is a key of `dirty` whose buffer is shorter than a
    /// chunk (a write that fills one takes it off).
    unmerged: BTreeSet<u64>,
    /// Dirty chunks kept as written extents over their committed bytes (see the module's
    /// invariants).
    patches: BTreeMap<u64, Patch>,
    /// Full chunks handed to the background uploader and not yet finished (readable from
    /// here meanwhile): a finished one moves to the layout, and its buffer goes, at the
    /// next write ([`FileState::reap_uploads`]) — so a long streaming write holds only what
    /// is in flight, not every chunk it wrote.
    uploading: BTreeMap<u64, (Arc<ChunkBuf>, Arc<Pending>)>,
    /// The first upload that failed, reaped before a flush: its chunk is dirty again, and
    /// the next [`FileState::settle`] reports it.
    upload_error: Option<FsError>,
    size: u64,
    changed: Option<Timestamp>,
}

fn chunk_start(i: u64) -> u64 {
    i * CHUNK_SIZE
}

impl FileState {
    pub fn new(ino: InodeId, layout: Layout, size: u64) -> Self {
        FileState {
            ino,
            layout,
            uncommitted: BTreeSet::new(),
            dirty: BTreeMap::new(),
            unmerged: BTreeSet::new(),
            patches: BTreeMap::new(),
            uploading: BTreeMap::new(),
            upload_error: None,
            size,
            changed: None,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The mtime of the newest change not yet committed.
    pub fn pending_mtime(&self) -> Option<Timestamp> {
        self.changed
    }

    pub fn dirty_bytes(&self) -> u64 {
        let patched: usize = self.patches.values().map(Patch::weight).sum();
        self.dirty.values().map(|v| v.len() as u64).sum::<u64>() + patched as u64
    }

    /// Replaces the committed view (after a reload from the metaserver). Only valid when
    /// nothing is pending.
    pub fn reset(&mut self, layout: Layout, size: u64) {
        debug_assert!(self.changed.is_none());
        *self = FileState::new(self.ino, layout, size);
    }

    /// The committed (or early-uploaded) bytes of chunk `i`, without dirty buffers.
    fn base_chunk(&self, src: &dyn ChunkSource, i: u64) -> FsResult<Bytes> {
        match &self.layout {
            Layout::Inline(bytes) if i == 0 => Ok(Bytes::copy_from_slice(bytes)),
            Layout::Inline(_) => Ok(Bytes::new()),
            Layout::Chunks(map) => match map.get(&i) {
                Some(r) => Ok(src
                    .block(&r.id)?
                    .slice(..(r.len as usize).min(CHUNK_SIZE as usize))),
                None => Ok(Bytes::new()),
            },
        }
    }

    /// Whether chunk `i` has committed bytes (so a partial write must merge them).
    fn has_base(&self, i: u64) -> bool {
        match &self.layout {
            Layout::Inline(bytes) => i == 0 && !bytes.is_empty(),
            Layout::Chunks(map) => map.contains_key(&i),
        }
    }

    /// Reads up to `len` bytes at `offset`, stopping at the end of file.
    pub fn read(&self, src: &dyn ChunkSource, offset: u64, len: u64) -> FsResult<Vec<u8>> {
        Ok(assemble(src, self.plan_read(offset, len))?.to_vec())
    }

    /// What a read of `len` bytes at `offset` consists of, decided under the file's lock:
    /// buffered bytes are copied out, committed bytes are named by block (immutable, so they
    /// can be fetched after the lock is released), holes are counted.
    pub fn plan_read(&self, offset: u64, len: u64) -> Vec<Piece> {
        let end = offset.saturating_add(len).min(self.size);
        let mut pieces = Vec::new();
        let mut pos = offset;
        while pos < end {
            let i = pos / CHUNK_SIZE;
            let within = (pos - chunk_start(i)) as usize;
            let take = (end.min(chunk_start(i + 1)) - pos) as usize;
            if let Some(p) = self.patches.get(&i) {
                p.plan(&mut pieces, within, take, |pc, w, t| {
                    self.base_piece(pc, i, w, t)
                });
                pos += take as u64;
                continue;
            }
            let have = match (self.dirty.get(&i), self.uploading.get(&i)) {
                (Some(buf), _) if self.unmerged.contains(&i) => {
                    let have = copy_piece(&mut pieces, buf, within, take);
                    have + self.base_piece(&mut pieces, i, within + have, take - have)
                }
                (Some(buf), _) => copy_piece(&mut pieces, buf, within, take),
                (None, Some((buf, _))) => copy_piece(&mut pieces, buf, within, take),
                (None, None) => self.base_piece(&mut pieces, i, within, take),
            };
            if take > have {
                pieces.push(Piece::Zeros(take - have));
            }
            pos += take as u64;
        }
        pieces
    }

    /// Adds up to `take` committed bytes of chunk `i` from `within` (not buffered ones) to a
    /// read plan; returns how many there were.
    fn base_piece(&self, pieces: &mut Vec<Piece>, i: u64, within: usize, take: usize) -> usize {
        match &self.layout {
            Layout::Inline(bytes) if i == 0 => copy_piece(pieces, bytes, within, take),
            Layout::Inline(_) => 0,
            Layout::Chunks(map) => match map.get(&i) {
                Some(r) => {
                    let have = (r.len as usize).saturating_sub(within).min(take);
                    if have > 0 {
                        pieces.push(Piece::Block {
                            id: r.id,
                            start: within,
                            len: have,
                        });
                    }
                    have
                }
                None => 0,
            },
        }
    }

    /// Merges the committed bytes past the end of chunk `i`'s buffer, if still unmerged (a
    /// failed fetch leaves it unmerged).
    fn merge_base(&mut self, src: &dyn ChunkSource, i: u64) -> FsResult<()> {
        if !self.unmerged.contains(&i) {
            return Ok(());
        }
        let base = self.base_chunk(src, i)?;
        let buf = self.dirty.get_mut(&i).expect("unmerged chunks are dirty");
        if base.len() > buf.len() {
            let from = buf.len();
            buf.extend_from_slice(&base[from..]);
        }
        self.unmerged.remove(&i);
        Ok(())
    }

    /// Merges the committed bytes of every unmerged or patched chunk (before its buffer
    /// is stored).
    fn merge_all(&mut self, src: &dyn ChunkSource) -> FsResult<()> {
        let all: Vec<u64> = self.unmerged.iter().copied().collect();
        all.into_iter().try_for_each(|i| self.merge_base(src, i))?;
        let patched: Vec<u64> = self.patches.keys().copied().collect();
        patched
            .into_iter()
            .try_for_each(|i| self.apply_patch(src, i))
    }

    /// Turns chunk `i`'s patch into a dirty buffer: its committed bytes with the patch
    /// laid over them (a failed fetch keeps the patch).
    fn apply_patch(&mut self, src: &dyn ChunkSource, i: u64) -> FsResult<()> {
        if !self.patches.contains_key(&i) {
            return Ok(());
        }
        let mut buf = ChunkBuf::from(&self.base_chunk(src, i)?[..]);
        self.patches
            .remove(&i)
            .expect("checked above")
            .apply(&mut buf);
        self.dirty.insert(i, buf);
        Ok(())
    }

    /// Writes `data` at `offset` into dirty buffers, merging committed bytes on first touch
    /// (but see `unmerged` and `patches`).
    pub fn write(
        &mut self,
        src: &dyn ChunkSource,
        offset: u64,
        data: &[u8],
        now: Timestamp,
    ) -> FsResult<()> {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let i = pos / CHUNK_SIZE;
            let within = (pos - chunk_start(i)) as usize;
            let take = rest.len().min(CHUNK_SIZE as usize - within);
            self.write_chunk(src, i, within, &rest[..take])?;
            rest = &rest[take..];
            pos += take as u64;
        }
        self.size = self.size.max(offset + data.len() as u64);
        self.changed = Some(now);
        Ok(())
    }

    /// Writes `data` at `within` of chunk `i` (it fits in the chunk).
    fn write_chunk(
        &mut self,
        src: &dyn ChunkSource,
        i: u64,
        within: usize,
        data: &[u8],
    ) -> FsResult<()> {
        if let Some((buf, _)) = self.uploading.remove(&i) {
            // Written again while uploading: the upload is superseded.
            self.dirty.insert(i, ChunkBuf::from(&buf[..]));
        }
        if data.len() == CHUNK_SIZE as usize {
            self.patches.remove(&i); // replaced whole: nothing of it is left to merge
        }
        if let Some(p) = self.patches.get_mut(&i) {
            p.write(within, data);
            if p.weight() >= CHUNK_SIZE as usize / 2 {
                self.apply_patch(src, i)?; // as much as a buffer: merge it now
            }
            return Ok(());
        }
        if self.dirty.get(&i).is_some_and(|b| within > b.len()) {
            self.merge_base(src, i)?; // a gap: the committed bytes in it stay
        }
        if !self.dirty.contains_key(&i) {
            let whole = within == 0 && data.len() == CHUNK_SIZE as usize;
            let from_start = within == 0 && self.has_base(i);
            if !whole && !from_start && self.has_base(i) {
                // Written elsewhere than at its start: keep the write apart.
                self.patches.entry(i).or_default().write(within, data);
                return Ok(());
            }
            if from_start && !whole {
                self.unmerged.insert(i);
            }
            // A streaming writer fills the chunk: size it once, not by doubling.
            let cap = if data.len() >= 64 << 10 {
                CHUNK_SIZE
            } else {
                0
            };
            self.dirty.insert(i, ChunkBuf::with_capacity(cap as usize));
        }
        let buf = self.dirty.get_mut(&i).expect("inserted above");
        if within == buf.len() {
            buf.extend_from_slice(data); // appending: one pass, no zero fill
        } else {
            if buf.len() < within + data.len() {
                buf.resize_zeroed(within + data.len());
            }
            buf[within..within + data.len()].copy_from_slice(data);
        }
        if buf.len() as u64 == CHUNK_SIZE {
            self.unmerged.remove(&i); // written to its end: nothing committed is left
        }
        Ok(())
    }

    /// Takes out the chunks that the write at `offset` of `len` bytes completed (full and
    /// written up to their end), for uploading while the writer goes on.
    pub fn take_filled(&mut self, offset: u64, len: u64) -> Vec<(u64, Arc<ChunkBuf>)> {
        let end = offset + len;
        let (first, last) = (offset / CHUNK_SIZE, end / CHUNK_SIZE);
        let full: Vec<u64> = (first..=last)
            .filter(|&i| chunk_start(i + 1) <= end)
            .filter(|i| {
                self.dirty
                    .get(i)
                    .is_some_and(|b| b.len() as u64 == CHUNK_SIZE)
            })
            .collect();
        full.into_iter()
            .map(|i| (i, Arc::new(self.dirty.remove(&i).expect("checked above"))))
            .collect()
    }

    /// Records a chunk now uploading in the background.
    pub fn add_uploading(&mut self, i: u64, data: Arc<ChunkBuf>, slot: Arc<Pending>) {
        self.uploading.insert(i, (data, slot));
    }

    /// Waits for background uploads and moves them into the layout; a failed one goes back
    /// to the dirty buffers (so a later flush retries it) and its error is returned (or
    /// the error of one that failed before, see [`FileState::reap_uploads`]).
    pub fn settle(&mut self) -> FsResult<()> {
        let mut first_err = self.upload_error.take();
        for (i, (data, slot)) in std::mem::take(&mut self.uploading) {
            if let Err(e) = self.upload_done(i, &data, slot.wait()) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Moves the uploads that have finished into the layout (their buffers go) without
    /// waiting for the others; a failed one is dirty again and its error kept for the
    /// next [`FileState::settle`].
    pub fn reap_uploads(&mut self) {
        let done: Vec<(u64, FsResult<BlockRef>)> = (self.uploading.iter())
            .filter_map(|(i, (_, slot))| slot.finished().map(|r| (*i, r)))
            .collect();
        for (i, r) in done {
            let (data, _) = self.uploading.remove(&i).expect("listed above");
            if let Err(e) = self.upload_done(i, &data, r) {
                self.upload_error.get_or_insert(e);
            }
        }
    }

    /// Records how chunk `i`'s upload of `data` ended.
    fn upload_done(&mut self, i: u64, data: &ChunkBuf, r: FsResult<BlockRef>) -> FsResult<()> {
        match r {
            Ok(r) => {
                self.uploaded(vec![(i, r)]);
                Ok(())
            }
            Err(e) => {
                self.dirty
                    .entry(i)
                    .or_insert_with(|| ChunkBuf::from(&data[..]));
                Err(e)
            }
        }
    }

    /// How many chunks are uploading (tests).
    #[cfg(test)]
    pub(crate) fn uploading_len(&self) -> usize {
        self.uploading.len()
    }

    /// Block ids of committed or uploaded chunks `from..to` (for read-ahead).
    pub fn chunk_ids(&self, from: u64, to: u64) -> Vec<BlockId> {
        match &self.layout {
            Layout::Chunks(map) => map.range(from..to).map(|(_, r)| r.id).collect(),
            Layout::Inline(_) => Vec::new(),
        }
    }

    /// Extends the file to at least `size` (fallocate): the new bytes read as zeros.
    pub fn extend(&mut self, size: u64, now: Timestamp) {
        if size > self.size {
            self.size = size;
            self.changed = Some(now);
        }
    }

    /// Buffers to upload now to bound memory: every full chunk, or every chunk if none is
    /// full. They become part of the layout once `uploaded` is called.
    pub fn take_for_early_upload(&mut self, src: &dyn ChunkSource) -> FsResult<ChunkBufs> {
        let full: Vec<u64> = self
            .dirty
            .iter()
            .filter(|(_, b)| b.len() as u64 == CHUNK_SIZE)
            .map(|(i, _)| *i)
            .collect();
        // A full chunk has nothing left to merge (see `unmerged`).
        let pick: Vec<u64> = if full.is_empty() {
            self.merge_all(src)?;
            self.dirty.keys().copied().collect()
        } else {
            full
        };
        Ok(pick
            .into_iter()
            .map(|i| (i, self.dirty.remove(&i).expect("picked from dirty")))
            .collect())
    }

    /// Records chunks whose blocks are now stored.
    pub fn uploaded(&mut self, refs: Vec<(u64, BlockRef)>) {
        let map = match &mut self.layout {
            Layout::Chunks(map) => map,
            layout @ Layout::Inline(_) => {
                *layout = Layout::Chunks(BTreeMap::new());
                match layout {
                    Layout::Chunks(map) => map,
                    Layout::Inline(_) => unreachable!(),
                }
            }
        };
        for (i, r) in refs {
            map.insert(i, r);
            self.uncommitted.insert(i);
        }
    }

    /// Prepares the commit of everything pending: the blocks to upload first and the
    /// commit to send after. `None` when nothing is pending.
    pub fn prepare_commit(
        &mut self,
        src: &dyn ChunkSource,
        inline_max: u64,
    ) -> FsResult<Option<Prepared>> {
        let Some(_) = self.changed else {
            return Ok(None);
        };
        if self.size <= inline_max {
            let bytes = self.read(src, 0, self.size)?;
            return Ok(Some((Vec::new(), Some(bytes))));
        }
        self.merge_all(src)?;
        if matches!(&self.layout, Layout::Inline(b) if !b.is_empty())
            && !self.dirty.contains_key(&0)
        {
            let base = ChunkBuf::from(&self.base_chunk(src, 0)?[..]);
            self.dirty.insert(0, base);
        }
        let size = self.size;
        let mut bufs: ChunkBufs = std::mem::take(&mut self.dirty).into_iter().collect();
        for (i, buf) in &mut bufs {
            buf.truncate((size - chunk_start(*i).min(size)).min(CHUNK_SIZE) as usize);
        }
        Ok(Some((bufs, None)))
    }

    /// The commit that publishes every uploaded chunk (their references are in the layout,
    /// see [`FileState::uploaded`]), or the whole file inline.
    pub fn commit_for(&mut self, inline: Option<Vec<u8>>) -> Commit {
        let mtime = self.changed.unwrap_or_else(Timestamp::now);
        if let Some(bytes) = inline {
            return Commit {
                chunks: Vec::new(),
                inline: Some(bytes),
                size: self.size,
                mtime,
            };
        }
        let map = match &self.layout {
            Layout::Chunks(m) => m,
            // Still inline (only grown by fallocate): nothing uploaded, the size says it all.
            Layout::Inline(_) => {
                return Commit {
                    chunks: Vec::new(),
                    inline: None,
                    size: self.size,
                    mtime,
                };
            }
        };
        let chunks = self
            .uncommitted
            .iter()
            .map(|i| (*i, map.get(i).copied()))
            .collect();
        Commit {
            chunks,
            inline: None,
            size: self.size,
            mtime,
        }
    }

    /// Marks everything committed: the layout now equals the metaserver's.
    pub fn committed(&mut self, inline: Option<Vec<u8>>) {
        if let Some(bytes) = inline {
            self.layout = Layout::Inline(bytes);
        }
        self.layout.truncate(self.size);
        self.dirty.clear();
        self.unmerged.clear();
        self.patches.clear();
        self.uncommitted.clear();
        self.changed = None;
    }
}

#[cfg(test)]
mod tests;
