//! Stored namespace records: decoding any bytes as any table's record never panics, and a
//! value that decodes re-encodes to something that decodes the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_metaserver::records::check_value;
use meridian_metaserver::store::Table;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let table = Table::ALL[which as usize % Table::ALL.len()];
    let _ = check_value(table, b"fuzz", bytes);
});
