//! Whole-file reads and writes through io_uring, for the disk cache.
//!
//! Each thread keeps its own ring (no lock, no sharing). A file is moved in segments of
//! [`SEGMENT`] bytes, all submitted at once, so a 4 MiB block is one system call with up to
//! four reads in flight at the device. Buffers live on the caller's stack frame until every
//! completion has been reaped, which is what makes the raw pointers sound.

use super::aligned::{ALIGN, AlignedBuf, AlignedVec, direct_ready};
use io_uring::{IoUring, opcode, types};
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

const SEGMENT: usize = 1 << 20;
const RING_DEPTH: u32 = 16;

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

fn with_ring<T>(f: impl FnOnce(&mut IoUring) -> io::Result<T>) -> io::Result<T> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(IoUring::new(RING_DEPTH)?);
        }
        f(slot.as_mut().expect("ring created above"))
    })
}

/// Submits one operation per segment of `len` bytes and waits for all; `make(offset, len)`
/// builds the entry for a segment. Returns the byte count each segment completed with.
fn run_segments(
    ring: &mut IoUring,
    len: usize,
    make: impl Fn(usize, usize) -> io_uring::squeue::Entry,
) -> io::Result<Vec<usize>> {
    let count = len.div_ceil(SEGMENT).max(1);
    let mut done = vec![0usize; count];
    for batch_start in (0..count).step_by(RING_DEPTH as usize) {
        let batch_end = (batch_start + RING_DEPTH as usize).min(count);
        for i in batch_start..batch_end {
            let off = i * SEGMENT;
            let entry = make(off, SEGMENT.min(len - off.min(len))).user_data(i as u64);
            // SAFETY: the buffer behind `entry` outlives the wait below.
            unsafe {
                ring.submission()
                    .push(&entry)
                    .map_err(|_| io::Error::other("io_uring queue full"))?
            };
        }
        let want = batch_end - batch_start;
        ring.submit_and_wait(want)?;
        let mut reaped = 0;
        while reaped < want {
            let cqes: Vec<(u64, i32)> = ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            if cqes.is_empty() {
                ring.submit_and_wait(1)?;
                continue;
            }
            for (i, res) in cqes {
                if res < 0 {
                    return Err(io::Error::from_raw_os_error(-res));
                }
                done[i as usize] = res as usize;
                reaped += 1;
            }
        }
    }
    Ok(done)
}

/// Reads `len` bytes at `offset` of `fd` into `ptr`, one read per segment, all in
/// flight at once; returns the byte count each segment read.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes until this function returns.
unsafe fn read_segments(
    fd: types::Fd,
    ptr: *mut u8,
    offset: u64,
    len: usize,
) -> io::Result<Vec<usize>> {
    with_ring(|ring| {
        run_segments(ring, len, |off, n| {
            // SAFETY: off + n <= len, inside the caller's buffer.
            opcode::Read::new(fd, unsafe { ptr.add(off) }, n as u32)
                .offset(offset + off as u64)
                .build()
        })
    })
}

/// Reads the whole of `path`, expected to be `len` bytes long, into aligned memory (a
/// chunk-sized read takes a pooled buffer whose pages are mapped). By direct I/O where the
/// filesystem takes it: the device writes into the buffer, with no copy out of the page
/// cache and no second copy of the block kept there (the mount's own page cache keeps what
/// its readers read); through the page cache where it does not (tmpfs).
pub fn read_file(path: &Path, len: usize) -> io::Result<AlignedVec> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .or_else(|_| File::open(path))?;
    let fd = types::Fd(file.as_raw_fd());
    // Direct reads move whole pages: the last one may run past the end of the file.
    let padded = len.next_multiple_of(ALIGN).max(ALIGN);
    let mut buf = AlignedVec::with_capacity(padded);
    // SAFETY: `spare_mut_ptr` gives `padded` writable bytes, and `buf` lives until the
    // reads are reaped.
    let done = unsafe { read_segments(fd, buf.spare_mut_ptr(padded), 0, padded) }?;
    let whole = done
        .iter()
        .enumerate()
        .all(|(i, &n)| n == SEGMENT.min(len.saturating_sub(i * SEGMENT)));
    if !whole {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} is not {len} bytes long", path.display()),
        ));
    }
    // SAFETY: every segment read exactly its share of the first `len` bytes.
    unsafe { buf.set_len(len) };
    Ok(buf)
}

/// Reads `len` bytes at `offset` of `file` (a range wholly inside it).
pub fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let fd = types::Fd(file.as_raw_fd());
    let mut buf = vec![0u8; len];
    // SAFETY: `buf` holds `len` bytes and lives until the reads are reaped.
    let done = unsafe { read_segments(fd, buf.as_mut_ptr(), offset, len) }?;
    if done.iter().sum::<usize>() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short read: {len} bytes at {offset}"),
        ));
    }
    Ok(buf)
}

thread_local! {
    /// This thread's aligned copy buffer for direct writes.
    static BOUNCE: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

/// Writes `data` as the whole content of a new file at `path`. Whole pages go with direct
/// I/O (from `data` itself if it is aligned, else from an aligned copy), so a cache fill
/// neither copies into the page cache nor leaves dirty pages for writeback; other sizes,
/// or a filesystem without direct I/O, are written through the page cache.
pub fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    if !data.is_empty() && data.len().is_multiple_of(ALIGN) {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        if let Ok(file) = direct {
            if direct_ready(data) {
                return write_all(&file, path, data);
            }
            return BOUNCE.with(|b| write_all(&file, path, b.borrow_mut().padded_copy(data)));
        }
    }
    write_all(&File::create(path)?, path, data)
}

fn write_all(file: &File, path: &Path, data: &[u8]) -> io::Result<()> {
    let fd = types::Fd(file.as_raw_fd());
    let ptr = data.as_ptr();
    let done = with_ring(|ring| {
        run_segments(ring, data.len(), |off, n| {
            // SAFETY: off + n <= data.len(); `data` outlives the call.
            opcode::Write::new(fd, unsafe { ptr.add(off) }, n as u32)
                .offset(off as u64)
                .build()
        })
    })?;
    if done.iter().sum::<usize>() != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write to {}", path.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_sizes_around_segments() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            4 * SEGMENT,
            17 * SEGMENT + 3,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let p = dir.path().join(format!("f{len}"));
            write_file(&p, &data).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), data);
            let read = read_file(&p, len).unwrap();
            assert_eq!(&read[..], &data[..]);
            assert!(len == 0 || (read.as_ptr() as usize).is_multiple_of(ALIGN));
            // The same from aligned memory (written directly, no bounce copy).
            let mut aligned = super::super::aligned::AlignedVec::with_capacity(len);
            aligned.extend_from_slice(&data);
            let aligned = aligned.into_bytes();
            write_file(&p, &aligned).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), data);
        }
        let p = dir.path().join("short");
        write_file(&p, b"abc").unwrap();
        for expected in [2, 10] {
            assert_eq!(
                read_file(&p, expected).unwrap_err().kind(),
                io::ErrorKind::UnexpectedEof,
                "a 3-byte file read as {expected} bytes"
            );
        }
    }
}
