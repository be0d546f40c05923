//! A page-aligned, growable byte buffer for direct I/O (O_DIRECT wants memory, offsets
//! and lengths aligned to the device's block; [`ALIGN`] covers every device here).
//!
//! Owns: one allocation of `cap` bytes aligned to [`ALIGN`] — reused for every copy
//! ([`AlignedBuf`]), or filled once and handed out as [`Bytes`] ([`AlignedVec`]: a block
//! received into one goes to the disk tier by direct I/O without a bounce copy).

use bytes::Bytes;

/// Direct I/O alignment of lengths, offsets and memory.
pub const ALIGN: usize = 4096;

pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    cap: usize,
}

// SAFETY: the buffer is plain owned memory.
unsafe impl Send for AlignedBuf {}

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

    /// A buffer of at least `cap` bytes (a multiple of [`ALIGN`]; contents uninitialised).
    fn with_capacity(cap: usize) -> AlignedBuf {
        let cap = cap.next_multiple_of(ALIGN).max(ALIGN);
        // SAFETY: a non-zero size.
        let p = unsafe { std::alloc::alloc(Self::layout(cap)) };
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
        if self.cap > 0 {
            // SAFETY: allocated in `padded_copy` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) };
            self.cap = 0;
        }
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

impl AlignedVec {
    pub fn with_capacity(cap: usize) -> AlignedVec {
        AlignedVec {
            buf: AlignedBuf::with_capacity(cap),
            len: 0,
        }
    }

    /// Appends `data`, growing (by at least doubling) when it does not fit.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        if end > self.buf.cap {
            let mut bigger = AlignedBuf::with_capacity(end.max(self.buf.cap * 2));
            bigger.prefix_mut(self.len).copy_from_slice(self.as_ref());
            self.buf = bigger;
        }
        self.buf.prefix_mut(end)[self.len..].copy_from_slice(data);
        self.len = end;
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
