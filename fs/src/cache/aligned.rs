//! A page-aligned, growable byte buffer for direct I/O (O_DIRECT wants memory, offsets
//! and lengths aligned to the device's block; [`ALIGN`] covers every device here).
//!
//! Owns: one allocation of `cap` bytes aligned to [`ALIGN`] (from the allocator; or, from
//! [`HUGE`] bytes up, a mapping of its own aligned to a huge page) — reused for every copy
//! ([`AlignedBuf`]), or filled once and handed out as [`Bytes`] ([`AlignedVec`]: a block
//! received or written into one goes to the disk tier, and to a passthrough mirror, by
//! direct I/O without a bounce copy) — and a small pool of chunk-sized allocations.
//!
//! The pool: an [`AlignedVec`] of [`POOLED`] bytes goes back to the pool when dropped
//! (up to [`POOL_MAX`] of them) and a new one of that size is taken from it, so a
//! streaming writer or reader reuses memory whose pages are already mapped rather than
//! faulting in (and zeroing) 4 MiB of fresh pages per chunk. Lock: the pool's mutex, held
//! only to push or pop one allocation. Chunk-sized buffers are backed by huge pages (see
//! [`HUGE`]): the pool only holds 16, and a stream's reads and writes keep dozens in flight
//! (read-ahead, uploads, the disk writer's queue) before any comes back (a cold 1 GiB read
//! took 78k page faults, now 3k).

use bytes::Bytes;
use parking_lot::Mutex;

/// The one size the pool keeps: a chunk (a block of a file).
pub const POOLED: usize = meridian_proto::CHUNK_SIZE as usize;
/// The most allocations the pool keeps (64 MiB).
pub const POOL_MAX: usize = 16;

static POOL: Pool = Pool(Mutex::new(Vec::new()));

/// Allocations of [`POOLED`] bytes kept for reuse, at most [`POOL_MAX`].
struct Pool(Mutex<Vec<AlignedBuf>>);

impl Pool {
    fn take(&self) -> Option<AlignedBuf> {
        self.0.lock().pop()
    }

    /// Keeps `buf` if it is of the pooled size and there is room; else it is freed.
    fn give(&self, buf: AlignedBuf) {
        if buf.cap == POOLED {
            let mut bufs = self.0.lock();
            if bufs.len() < POOL_MAX {
                bufs.push(buf);
            }
        }
    }
}

/// Direct I/O alignment of lengths, offsets and memory.
pub const ALIGN: usize = 4096;

/// Buffers this large or larger (every chunk) are mappings aligned to it and backed by
/// transparent huge pages where the kernel offers them (`madvise` mode is enough): a fresh
/// 4 MiB buffer then costs two page faults instead of 1,024, and pinning it for direct I/O
/// or a FUSE reply walks two pages instead of 1,024.
pub const HUGE: usize = 2 << 20;

/// Whether `data` can go to direct I/O as it is: aligned memory, whole pages.
pub fn direct_ready(data: &[u8]) -> bool {
    (data.as_ptr() as usize).is_multiple_of(ALIGN) && data.len().is_multiple_of(ALIGN)
}

pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    cap: usize,
}

// SAFETY: the buffer is plain owned memory; shared access only reads it.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl Default for AlignedBuf {
    fn default() -> Self {
        AlignedBuf {
            ptr: std::ptr::NonNull::dangling(),
            cap: 0,
        }
    }
}

impl AlignedBuf {
    fn layout(cap: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(cap, ALIGN).expect("a valid layout")
    }

    /// `cap` bytes of their own mapping, aligned to [`HUGE`] and advised to be backed by
    /// huge pages. A mapping of their own, not the allocator's: advice given to heap
    /// memory outlives the buffer and makes every later small allocation there fault in
    /// (and zero) 2 MiB.
    fn map_huge(cap: usize) -> *mut u8 {
        let len = cap + HUGE;
        // SAFETY: a new private anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let start = p as usize;
        let aligned = start.next_multiple_of(HUGE);
        let (head, tail) = (aligned - start, start + len - (aligned + cap));
        // SAFETY: the unmapped ranges are the slack of the mapping just made, outside the
        // `cap` bytes kept; the advice concerns only those bytes.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap((aligned + cap) as *mut libc::c_void, tail);
            }
            // Refused by a kernel without transparent huge pages: small pages serve then.
            libc::madvise(aligned as *mut libc::c_void, cap, libc::MADV_HUGEPAGE);
        }
        aligned as *mut u8
    }

    /// A buffer of at least `cap` bytes (a multiple of [`ALIGN`]; contents uninitialised),
    /// from the pool if it keeps that size.
    fn with_capacity(cap: usize) -> AlignedBuf {
        let cap = cap.next_multiple_of(ALIGN).max(ALIGN);
        if cap == POOLED
            && let Some(b) = POOL.take()
        {
            return b;
        }
        let p = if cap >= HUGE {
            Self::map_huge(cap)
        } else {
            // SAFETY: a non-zero size.
            unsafe { std::alloc::alloc(Self::layout(cap)) }
        };
        let ptr = std::ptr::NonNull::new(p)
            .unwrap_or_else(|| std::alloc::handle_alloc_error(Self::layout(cap)));
        AlignedBuf { ptr, cap }
    }

    /// The first `len` bytes, which the caller has written.
    fn prefix_mut(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.cap);
        // SAFETY: `ptr` holds `cap >= len` bytes owned by this value.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), len) }
    }

    /// `data` copied to the start of the buffer and zero-padded to a multiple of
    /// [`ALIGN`]; the buffer grows as needed.
    pub fn padded_copy(&mut self, data: &[u8]) -> &[u8] {
        let padded = data.len().next_multiple_of(ALIGN).max(ALIGN);
        if padded > self.cap {
            *self = AlignedBuf::with_capacity(padded);
        }
        let buf = self.prefix_mut(padded);
        buf[..data.len()].copy_from_slice(data);
        buf[data.len()..].fill(0);
        buf
    }

    fn release(&mut self) {
        if self.cap >= HUGE {
            // SAFETY: mapped by `map_huge` with exactly this start and length.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.cap) };
        } else if self.cap > 0 {
            // SAFETY: allocated in `with_capacity` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) };
        }
        self.cap = 0;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        self.release();
    }
}

/// A growable byte vector in aligned memory, made into [`Bytes`] without a copy.
/// Invariant: the first `len` bytes of `buf` are written.
#[derive(Default)]
pub struct AlignedVec {
    buf: AlignedBuf,
    len: usize,
}

impl Drop for AlignedVec {
    fn drop(&mut self) {
        POOL.give(std::mem::take(&mut self.buf));
    }
}

impl std::fmt::Debug for AlignedVec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedVec({} bytes)", self.len)
    }
}

impl From<&[u8]> for AlignedVec {
    fn from(data: &[u8]) -> AlignedVec {
        let mut v = AlignedVec::with_capacity(data.len());
        v.extend_from_slice(data);
        v
    }
}

impl std::ops::Deref for AlignedVec {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_ref()
    }
}

impl std::ops::DerefMut for AlignedVec {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        self.buf.prefix_mut(len)
    }
}

impl AlignedVec {
    pub fn with_capacity(cap: usize) -> AlignedVec {
        AlignedVec {
            buf: AlignedBuf::with_capacity(cap),
            len: 0,
        }
    }

    /// Grows or shrinks to `len` bytes; new bytes are zero.
    pub fn resize_zeroed(&mut self, len: usize) {
        if len > self.len {
            self.reserve_total(len);
            self.buf.prefix_mut(len)[self.len..].fill(0);
        }
        self.len = len;
    }

    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Makes room for `total` bytes in all (by at least doubling), keeping the bytes.
    fn reserve_total(&mut self, total: usize) {
        if total > self.buf.cap {
            let mut bigger = AlignedBuf::with_capacity(total.max(self.buf.cap * 2));
            bigger.prefix_mut(self.len).copy_from_slice(self.as_ref());
            self.buf = bigger;
        }
    }

    /// Appends `data`, growing (by at least doubling) when it does not fit.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        self.reserve_total(end);
        self.buf.prefix_mut(end)[self.len..].copy_from_slice(data);
        self.len = end;
    }

    /// Room for `total` bytes in all, as a pointer to the start, for a writer outside Rust
    /// (the kernel, by direct I/O); [`Self::set_len`] then says how many it wrote.
    pub fn spare_mut_ptr(&mut self, total: usize) -> *mut u8 {
        self.reserve_total(total);
        self.buf.ptr.as_ptr()
    }

    /// # Safety
    /// The first `len` bytes (within the room asked of [`Self::spare_mut_ptr`]) are written.
    pub unsafe fn set_len(&mut self, len: usize) {
        assert!(len <= self.buf.cap);
        self.len = len;
    }

    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for AlignedVec {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the first `len` bytes are written (the invariant), within `cap`.
        unsafe { std::slice::from_raw_parts(self.buf.ptr.as_ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_chunk_sized_buffers_up_to_its_bound() {
        let pool = Pool(Mutex::new(Vec::new()));
        pool.give(AlignedBuf::with_capacity(ALIGN)); // not chunk-sized: freed
        assert!(pool.take().is_none());
        let given: Vec<usize> = (0..POOL_MAX + 4)
            .map(|_| {
                let b = AlignedBuf::with_capacity(POOLED);
                let p = b.ptr.as_ptr() as usize;
                pool.give(b);
                p
            })
            .collect();
        assert_eq!(pool.0.lock().len(), POOL_MAX);
        let back = pool.take().expect("pooled");
        assert_eq!(back.cap, POOLED);
        assert!(given.contains(&(back.ptr.as_ptr() as usize)));
    }

    #[test]
    fn aligned_vecs_grow_keep_their_bytes_and_stay_aligned() {
        let data: Vec<u8> = (0..3 * ALIGN + 17).map(|i| (i % 251) as u8).collect();
        for cap in [0, 10, ALIGN, 4 * ALIGN] {
            let mut v = AlignedVec::with_capacity(cap);
            for piece in data.chunks(1000) {
                v.extend_from_slice(piece);
            }
            let b = v.into_bytes();
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert_eq!(&b[..], &data[..]);
        }
        assert!(AlignedVec::default().into_bytes().is_empty());
        let mut v = AlignedVec::from(&b"abc"[..]);
        v.resize_zeroed(ALIGN + 2);
        assert_eq!(&v[..5], b"abc\0\0");
        assert!(v[3..].iter().all(|&x| x == 0));
        v[1] = b'x';
        v.truncate(2);
        assert_eq!(&v[..], b"ax");
        v.resize_zeroed(4);
        assert_eq!(
            &v[..],
            b"ax\0\0",
            "bytes past a truncation read as zeros again"
        );
    }

    /// Buffers of a huge page or more are mappings of their own aligned to it (so the kernel
    /// can back them with huge pages); they hold their bytes, and grow and free like others.
    #[test]
    fn large_buffers_are_huge_page_aligned_mappings() {
        for cap in [HUGE, POOLED, 3 * HUGE / 2 + ALIGN] {
            let mut v = AlignedVec::with_capacity(cap);
            assert_eq!(v.buf.ptr.as_ptr() as usize % HUGE, 0, "capacity {cap}");
            let data: Vec<u8> = (0..cap).map(|i| (i % 253) as u8).collect();
            v.extend_from_slice(&data);
            v.extend_from_slice(b"one more"); // grows into a new mapping
            let b = v.into_bytes();
            assert_eq!(&b[..cap], &data[..]);
            assert_eq!(&b[cap..], b"one more");
        }
    }

    #[test]
    fn copies_are_aligned_padded_and_grow() {
        let mut b = AlignedBuf::default();
        for len in [0, 1, ALIGN, ALIGN + 1, 3 * ALIGN] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            let out = b.padded_copy(&data);
            assert_eq!(out.as_ptr() as usize % ALIGN, 0);
            assert_eq!(out.len() % ALIGN, 0);
            assert_eq!(&out[..len], &data[..]);
            assert!(out[len..].iter().all(|&x| x == 0));
        }
    }
}
