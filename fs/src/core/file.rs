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
//! - `layout` is the committed layout plus chunks uploaded early (listed in `uncommitted`).
//! - `size` is the size every reader in this mount sees; `changed` is set while anything
//!   differs from the metaserver's copy.
//! - Nothing here does I/O except through the [`ChunkSource`] the caller passes.

use crate::cache::aligned::AlignedVec;
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
fn copy_piece(pieces: &mut Vec<Piece>, buf: &[u8], within: usize, take: usize) -> usize {
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
        self.dirty.values().map(|v| v.len() as u64).sum()
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

    /// Merges the committed bytes of every unmerged chunk (before its buffer is stored).
    fn merge_all(&mut self, src: &dyn ChunkSource) -> FsResult<()> {
        let all: Vec<u64> = self.unmerged.iter().copied().collect();
        all.into_iter().try_for_each(|i| self.merge_base(src, i))
    }

    /// Writes `data` at `offset` into dirty buffers, merging committed bytes on first touch
    /// (but see `unmerged`).
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
            if let Some((buf, _)) = self.uploading.remove(&i) {
                // Written again while uploading: the upload is superseded.
                self.dirty.insert(i, ChunkBuf::from(&buf[..]));
            }
            if self.dirty.get(&i).is_some_and(|b| within > b.len()) {
                self.merge_base(src, i)?; // a gap: the committed bytes in it stay
            }
            if !self.dirty.contains_key(&i) {
                let whole = within == 0 && take == CHUNK_SIZE as usize;
                let from_start = within == 0 && self.has_base(i);
                if from_start && !whole {
                    self.unmerged.insert(i);
                }
                let buf = if whole || from_start || !self.has_base(i) {
                    // A streaming writer fills the chunk: size it once, not by doubling.
                    ChunkBuf::with_capacity(if take >= 64 << 10 {
                        CHUNK_SIZE as usize
                    } else {
                        0
                    })
                } else {
                    ChunkBuf::from(&self.base_chunk(src, i)?[..])
                };
                self.dirty.insert(i, buf);
            }
            let buf = self.dirty.get_mut(&i).expect("inserted above");
            if within == buf.len() {
                buf.extend_from_slice(&rest[..take]); // appending: one pass, no zero fill
            } else {
                if buf.len() < within + take {
                    buf.resize_zeroed(within + take);
                }
                buf[within..within + take].copy_from_slice(&rest[..take]);
            }
            if buf.len() as u64 == CHUNK_SIZE {
                self.unmerged.remove(&i); // written to its end: nothing committed is left
            }
            rest = &rest[take..];
            pos += take as u64;
        }
        self.size = self.size.max(offset + data.len() as u64);
        self.changed = Some(now);
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
        let pick: Vec<u64> = if full.is_empty() {
            self.dirty.keys().copied().collect()
        } else {
            full
        };
        for i in &pick {
            self.merge_base(src, *i)?;
        }
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
        self.uncommitted.clear();
        self.changed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{BlockStore, MemBlockStore, block_id, fetch_verified};

    struct Src(MemBlockStore);
    impl ChunkSource for Src {
        fn block(&self, id: &BlockId) -> FsResult<Bytes> {
            Ok(fetch_verified(&self.0, id)?)
        }
    }

    /// A source that lists the blocks fetched through it.
    struct Counted<'a>(&'a Src, std::sync::Mutex<Vec<BlockId>>);
    impl ChunkSource for Counted<'_> {
        fn block(&self, id: &BlockId) -> FsResult<Bytes> {
            self.1.lock().unwrap().push(*id);
            self.0.block(id)
        }
    }

    /// Stores chunk buffers as blocks; their references.
    fn store<'b>(
        src: &Src,
        bufs: impl IntoIterator<Item = (u64, &'b [u8])>,
    ) -> Vec<(u64, BlockRef)> {
        bufs.into_iter()
            .map(|(i, b)| {
                let id = block_id(b);
                src.0.put(&id, Bytes::copy_from_slice(b)).unwrap();
                (
                    i,
                    BlockRef {
                        id,
                        len: b.len() as u32,
                    },
                )
            })
            .collect()
    }

    fn flush(st: &mut FileState, src: &Src, inline_max: u64) -> Commit {
        let (bufs, inline) = st.prepare_commit(src, inline_max).unwrap().unwrap();
        st.uploaded(store(src, bufs.iter().map(|(i, b)| (*i, &b[..]))));
        let c = st.commit_for(inline.clone());
        st.committed(inline);
        c
    }

    #[test]
    fn sparse_writes_read_back_with_zero_holes() {
        let src = Src(MemBlockStore::new());
        let mut st = FileState::new(InodeId(2), Layout::default(), 0);
        let far = 2 * CHUNK_SIZE + 10;
        st.write(&src, far, b"xyz", Timestamp::now()).unwrap();
        assert_eq!(st.size(), far + 3);
        let got = st.read(&src, far - 2, 10).unwrap();
        assert_eq!(got, b"\0\0xyz");
        let c = flush(&mut st, &src, 64);
        assert_eq!(c.chunks.len(), 1);
        assert_eq!(c.chunks[0].0, 2);
        assert_eq!(st.read(&src, far - 2, 10).unwrap(), b"\0\0xyz");
        assert_eq!(st.read(&src, 0, 4).unwrap(), vec![0; 4]);
    }

    #[test]
    fn small_files_commit_inline_and_grow_into_chunks() {
        let src = Src(MemBlockStore::new());
        let mut st = FileState::new(InodeId(2), Layout::default(), 0);
        st.write(&src, 0, b"hello", Timestamp::now()).unwrap();
        let c = flush(&mut st, &src, 64);
        assert_eq!(c.inline.as_deref(), Some(&b"hello"[..]));
        st.write(&src, 100, b"world", Timestamp::now()).unwrap();
        let c = flush(&mut st, &src, 64);
        assert!(c.inline.is_none());
        assert_eq!(c.chunks.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0]);
        let all = st.read(&src, 0, 200).unwrap();
        assert_eq!(&all[..5], b"hello");
        assert_eq!(&all[100..], b"world");
        assert!(all[5..100].iter().all(|&b| b == 0));
    }

    #[test]
    fn partial_overwrite_merges_committed_bytes() {
        let src = Src(MemBlockStore::new());
        let mut st = FileState::new(InodeId(2), Layout::default(), 0);
        let data: Vec<u8> = (0..CHUNK_SIZE + 100).map(|i| (i % 251) as u8).collect();
        st.write(&src, 0, &data, Timestamp::now()).unwrap();
        flush(&mut st, &src, 64);
        st.write(&src, 10, b"ZZ", Timestamp::now()).unwrap();
        flush(&mut st, &src, 64);
        let mut want = data.clone();
        want[10..12].copy_from_slice(b"ZZ");
        assert_eq!(st.read(&src, 0, want.len() as u64).unwrap(), want);
    }

    /// Overwriting a file in place from a chunk's start fetches none of the bytes it
    /// replaces; what it has not replaced yet still reads as before, and is merged when
    /// the chunk is stored short of its end.
    #[test]
    fn a_sequential_overwrite_fetches_nothing_it_replaces() {
        let src = Src(MemBlockStore::new());
        let mut st = FileState::new(InodeId(2), Layout::default(), 0);
        let old: Vec<u8> = (0..2 * CHUNK_SIZE + 300).map(|i| (i % 251) as u8).collect();
        st.write(&src, 0, &old, Timestamp::now()).unwrap();
        flush(&mut st, &src, 64);
        let ids = st.chunk_ids(0, 3);
        let counted = Counted(&src, Default::default());
        let mib = vec![9u8; 1 << 20];
        let mut want = old.clone();
        for k in 0..5u64 {
            let at = k << 20;
            st.write(&counted, at, &mib, Timestamp::now()).unwrap();
            want[at as usize..(at as usize + mib.len())].copy_from_slice(&mib);
            let filled = st.take_filled(at, mib.len() as u64);
            st.uploaded(store(&src, filled.iter().map(|(i, b)| (*i, &b[..]))));
        }
        assert!(
            counted.1.lock().unwrap().is_empty(),
            "nothing fetched to write"
        );
        // Chunk 1 holds 1 MiB new; the rest of it still reads as committed.
        let got = st.read(&counted, CHUNK_SIZE, CHUNK_SIZE).unwrap();
        assert!(got[..] == want[CHUNK_SIZE as usize..2 * CHUNK_SIZE as usize]);
        assert!(!counted.1.lock().unwrap().contains(&ids[0]));
        // A write past the buffer's end keeps the committed bytes in the gap.
        for (at, b) in [(0, b"aa"), (200, b"zz"), (10, b"bb")] {
            st.write(&counted, 2 * CHUNK_SIZE + at, b, Timestamp::now())
                .unwrap();
            let at = 2 * CHUNK_SIZE as usize + at as usize;
            want[at..at + 2].copy_from_slice(b);
        }
        let (bufs, _) = st.prepare_commit(&counted, 64).unwrap().unwrap();
        assert!(!counted.1.lock().unwrap().contains(&ids[0]));
        st.uploaded(store(&src, bufs.iter().map(|(i, b)| (*i, &b[..]))));
        st.committed(None);
        let fresh = FileState::new(InodeId(2), st.layout.clone(), st.size());
        let got = fresh.read(&src, 0, want.len() as u64).unwrap();
        assert!(
            got == want,
            "the file reads back as written over what it was"
        );
    }

    /// An early upload merges the committed tail of the chunks it takes, and only of those.
    #[test]
    fn an_early_upload_merges_only_what_it_takes() {
        let src = Src(MemBlockStore::new());
        let mut st = FileState::new(InodeId(2), Layout::default(), 0);
        let old: Vec<u8> = (0..3 * CHUNK_SIZE).map(|i| (i % 251) as u8).collect();
        st.write(&src, 0, &old, Timestamp::now()).unwrap();
        flush(&mut st, &src, 64);
        let counted = Counted(&src, Default::default());
        let now = Timestamp::now();
        st.write(&counted, 0, &[1u8; 1 << 20], now).unwrap(); // chunk 0: unmerged
        st.write(&counted, CHUNK_SIZE, &vec![2u8; CHUNK_SIZE as usize], now)
            .unwrap(); // chunk 1: whole
        let first = st.take_for_early_upload(&counted).unwrap();
        assert_eq!(first.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1]);
        assert!(
            counted.1.lock().unwrap().is_empty(),
            "chunk 0 not merged yet"
        );
        let second = st.take_for_early_upload(&counted).unwrap();
        assert_eq!(second.len(), 1);
        let (i, buf) = &second[0];
        assert_eq!(*i, 0);
        assert!(buf[..1 << 20].iter().all(|&b| b == 1));
        assert!(
            buf[1 << 20..] == old[1 << 20..CHUNK_SIZE as usize],
            "the tail merged"
        );
    }

    /// A streaming writer's finished uploads leave the file state at its next write (their
    /// blocks read from the store from then on): it held every chunk of the file until the
    /// close, a file's size in memory. A failed one is dirty again and the next settle says so.
    #[test]
    fn finished_uploads_let_go_of_their_buffers() {
        let src = Src(MemBlockStore::new());
        let mut st = FileState::new(InodeId(2), Layout::default(), 0);
        let now = Timestamp::now();
        let mut inflight = Vec::new();
        for i in 0..3u8 {
            let chunk = vec![i + 1; CHUNK_SIZE as usize];
            let at = u64::from(i) * CHUNK_SIZE;
            st.write(&src, at, &chunk, now).unwrap();
            for (j, buf) in st.take_filled(at, CHUNK_SIZE) {
                let slot = Arc::new(Pending::default());
                st.add_uploading(j, buf.clone(), slot.clone());
                inflight.push((buf, slot));
            }
        }
        for (buf, slot) in &inflight[..2] {
            let id = block_id(buf);
            src.0.put(&id, Bytes::copy_from_slice(buf)).unwrap();
            let len = buf.len() as u32;
            slot.finish(Ok(BlockRef { id, len }));
        }
        st.reap_uploads();
        assert_eq!(st.uploading_len(), 1, "only the unfinished upload is held");
        assert_eq!(
            Arc::strong_count(&inflight[0].0),
            1,
            "the state let go of it"
        );
        assert_eq!(st.read(&src, CHUNK_SIZE - 1, 2).unwrap(), [1, 2]);
        assert_eq!(
            st.read(&src, 2 * CHUNK_SIZE, 1).unwrap(),
            [3],
            "read while in flight"
        );
        inflight[2]
            .1
            .finish(Err(FsError::Upload("the bucket said no".into())));
        st.reap_uploads();
        assert_eq!(st.uploading_len(), 0);
        assert_eq!(
            st.dirty_bytes(),
            CHUNK_SIZE,
            "the failed chunk is dirty again"
        );
        let e = st.settle().unwrap_err();
        assert!(e.to_string().contains("the bucket said no"), "{e}");
        assert!(st.settle().is_ok(), "reported once");
        let c = flush(&mut st, &src, 64);
        assert_eq!(
            c.chunks.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(st.read(&src, 2 * CHUNK_SIZE, 1).unwrap(), [3]);
    }

    #[test]
    fn early_uploads_are_committed_later() {
        let src = Src(MemBlockStore::new());
        let mut st = FileState::new(InodeId(2), Layout::default(), 0);
        st.write(&src, 0, &vec![1u8; CHUNK_SIZE as usize], Timestamp::now())
            .unwrap();
        st.write(&src, CHUNK_SIZE, b"tail", Timestamp::now())
            .unwrap();
        let early = st.take_for_early_upload(&src).unwrap();
        assert_eq!(early.iter().map(|e| e.0).collect::<Vec<_>>(), vec![0]);
        let refs = early
            .into_iter()
            .map(|(i, b)| {
                let id = block_id(&b);
                src.0.put(&id, Bytes::copy_from_slice(&b)).unwrap();
                (
                    i,
                    BlockRef {
                        id,
                        len: b.len() as u32,
                    },
                )
            })
            .collect();
        st.uploaded(refs);
        assert_eq!(st.read(&src, CHUNK_SIZE - 1, 5).unwrap(), b"\x01tail");
        let c = flush(&mut st, &src, 64);
        assert_eq!(c.chunks.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1]);
    }
}
