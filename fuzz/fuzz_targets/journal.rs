//! The namespace journal decoder: any bytes (a torn or corrupted journal file) decode to a
//! list of whole records without panicking, and those records re-encode to a prefix of the
//! input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_metaserver::store::journal::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let entries = decode(data);
    let mut again = Vec::new();
    for e in &entries {
        again.extend(encode(e));
    }
    assert!(data.starts_with(&again), "decoded records re-encode to the input's prefix");
});
