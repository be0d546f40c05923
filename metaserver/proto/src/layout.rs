//! How a regular file's bytes are described.
//!
//! A file is either inline (its bytes stored in the metadata, for small files such as Open
//! Clip `.clip` files) or a sparse map from chunk index to an immutable, content-addressed
//! block. Invariants:
//! - chunk `i` covers file bytes `[i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE)`;
//! - a [`BlockRef`] uses the first `len` bytes of its block (`len <= CHUNK_SIZE`); bytes of a
//!   chunk past `len`, and chunks absent from the map, read as zeros (holes);
//! - inline bytes past their length, up to the file size, read as zeros;
//! - the file size, not the layout, bounds what a read returns.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Bytes of file covered by one chunk, and the largest block.
pub const CHUNK_SIZE: u64 = 4 * 1024 * 1024;
/// Files up to this size are kept inline by default.
pub const DEFAULT_INLINE_MAX: u64 = 64 * 1024;

/// A block's name: the BLAKE3 hash of its contents.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockId(pub [u8; 32]);

impl BlockId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses a 64-character lowercase hex name.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(BlockId(out))
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockId({})", &self.to_hex()[..16])
    }
}

/// A view of the first `len` bytes of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    pub id: BlockId,
    pub len: u32,
}

/// A regular file's data description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Encoded as one byte string, not a sequence of numbers (64 KiB in one copy).
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    Chunks(BTreeMap<u64, BlockRef>),
}

/// A [`Layout::Inline`] that borrows its bytes: encodes exactly as the owned one does (the
/// same variant index, the same byte string), so a commit of a small file is encoded
/// without first copying its data into a `Layout`.
#[derive(Serialize)]
#[serde(rename = "Layout")]
pub enum InlineRef<'a> {
    Inline(#[serde(with = "serde_bytes")] &'a [u8]),
}

impl Default for Layout {
    fn default() -> Self {
        Layout::Inline(Vec::new())
    }
}

impl Layout {
    /// Cuts the layout so nothing past `size` survives (used when a file shrinks, so that a
    /// later extension reads zeros, not the old bytes).
    pub fn truncate(&mut self, size: u64) {
        match self {
            Layout::Inline(bytes) => bytes.truncate(size.min(bytes.len() as u64) as usize),
            Layout::Chunks(map) => {
                let keep = size.div_ceil(CHUNK_SIZE);
                map.retain(|&i, _| i < keep);
                if !size.is_multiple_of(CHUNK_SIZE) {
                    let last = size / CHUNK_SIZE;
                    if let Some(r) = map.get_mut(&last) {
                        r.len = r.len.min((size % CHUNK_SIZE) as u32);
                    }
                }
            }
        }
    }

    /// Every block this layout references.
    pub fn blocks(&self) -> impl Iterator<Item = &BlockId> {
        let map = match self {
            Layout::Inline(_) => None,
            Layout::Chunks(m) => Some(m),
        };
        map.into_iter().flat_map(|m| m.values().map(|r| &r.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u8, len: u32) -> BlockRef {
        BlockRef {
            id: BlockId([n; 32]),
            len,
        }
    }

    #[test]
    fn truncate_cuts_chunks_and_narrows_the_last() {
        let mut l = Layout::Chunks(BTreeMap::from([
            (0, r(1, CHUNK_SIZE as u32)),
            (1, r(2, 100)),
            (3, r(3, 10)),
        ]));
        l.truncate(CHUNK_SIZE + 50);
        assert_eq!(
            l,
            Layout::Chunks(BTreeMap::from([
                (0, r(1, CHUNK_SIZE as u32)),
                (1, r(2, 50))
            ]))
        );
        l.truncate(CHUNK_SIZE);
        assert_eq!(
            l,
            Layout::Chunks(BTreeMap::from([(0, r(1, CHUNK_SIZE as u32))]))
        );
        l.truncate(0);
        assert_eq!(l, Layout::Chunks(BTreeMap::new()));
    }

    #[test]
    fn a_borrowed_inline_layout_encodes_as_the_owned_one() {
        for bytes in [&b""[..], b"hello", &[7u8; 70_000][..]] {
            assert_eq!(
                postcard::to_allocvec(&InlineRef::Inline(bytes)).unwrap(),
                postcard::to_allocvec(&Layout::Inline(bytes.to_vec())).unwrap()
            );
        }
    }

    #[test]
    fn truncate_inline() {
        let mut l = Layout::Inline(b"hello".to_vec());
        l.truncate(2);
        assert_eq!(l, Layout::Inline(b"he".to_vec()));
        l.truncate(10);
        assert_eq!(l, Layout::Inline(b"he".to_vec()));
    }

    #[test]
    fn block_ids_hex_round_trip() {
        let id = BlockId([0xab; 32]);
        assert_eq!(BlockId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(BlockId::from_hex("zz"), None);
    }
}
