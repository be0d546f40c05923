//! A page-aligned, growable byte buffer for direct I/O (O_DIRECT wants memory, offsets
//! and lengths aligned to the device's block; [`ALIGN`] covers every device here).
//!
//! Owns: one allocation of `cap` bytes aligned to [`ALIGN`], reused for every copy.

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

    /// `data` copied to the start of the buffer and zero-padded to a multiple of
    /// [`ALIGN`]; the buffer grows as needed.
    pub fn padded_copy(&mut self, data: &[u8]) -> &[u8] {
        let padded = data.len().next_multiple_of(ALIGN).max(ALIGN);
        if padded > self.cap {
            self.release();
            // SAFETY: a non-zero size.
            let p = unsafe { std::alloc::alloc(Self::layout(padded)) };
            self.ptr = std::ptr::NonNull::new(p)
                .unwrap_or_else(|| std::alloc::handle_alloc_error(Self::layout(padded)));
            self.cap = padded;
        }
        // SAFETY: `ptr` holds `cap >= padded` bytes owned by this value.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), padded) };
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

#[cfg(test)]
mod tests {
    use super::*;

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
