//! Block keys listed from a bucket: parsing any string never panics, and whatever parses
//! is exactly the key `block_key` produces for that block.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_fs::blocks::{block_key, parse_block_key};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(id) = parse_block_key(s) {
        assert_eq!(block_key(&id), s);
    }
});
