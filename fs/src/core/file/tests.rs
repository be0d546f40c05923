//! Unit tests of [`FileState`](super::FileState): reads and writes over dirty, patched,
//! uploading and committed chunks, checked byte for byte and by what they fetch.

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
fn store<'b>(src: &Src, bufs: impl IntoIterator<Item = (u64, &'b [u8])>) -> Vec<(u64, BlockRef)> {
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

/// Small writes at scattered places into a committed file fetch nothing and hold only
/// what they wrote; storing the chunks merges each once, and every byte reads back.
#[test]
fn scattered_writes_are_kept_apart_until_their_chunks_are_stored() {
    let src = Src(MemBlockStore::new());
    let mut st = FileState::new(InodeId(2), Layout::default(), 0);
    let mut want: Vec<u8> = (0..3 * CHUNK_SIZE).map(|i| (i % 253) as u8).collect();
    st.write(&src, 0, &want, Timestamp::now()).unwrap();
    flush(&mut st, &src, 64);
    let counted = Counted(&src, Default::default());
    let mut at = 4097u64;
    for k in 0..300u64 {
        at = (at * 7919 + 4096 * k) % (3 * CHUNK_SIZE - 4096);
        let data = vec![k as u8; 4096];
        st.write(&counted, at, &data, Timestamp::now()).unwrap();
        want[at as usize..at as usize + 4096].copy_from_slice(&data);
    }
    assert!(
        counted.1.lock().unwrap().is_empty(),
        "nothing fetched to write"
    );
    assert!(st.dirty_bytes() < 2 * 300 * 4096, "{}", st.dirty_bytes());
    assert!(st.read(&counted, 0, 3 * CHUNK_SIZE).unwrap() == want);
    counted.1.lock().unwrap().clear();
    let bufs = st.take_for_early_upload(&counted).unwrap();
    assert_eq!(
        bufs.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(
        counted.1.lock().unwrap().len(),
        3,
        "each chunk fetched once to merge"
    );
    st.uploaded(store(&src, bufs.iter().map(|(i, b)| (*i, &b[..]))));
    assert_eq!(st.dirty_bytes(), 0);
    assert!(st.read(&src, 0, 3 * CHUNK_SIZE).unwrap() == want);
    flush(&mut st, &src, 64);
    assert!(st.read(&src, 0, 3 * CHUNK_SIZE).unwrap() == want);
}
