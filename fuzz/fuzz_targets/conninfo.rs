//! PostgreSQL connection strings (`store.url`): taking the TLS settings out never panics,
//! what is left has none of them and splits again to itself
//! (the password itself is hidden in `shown`: unit tests in conninfo.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_metaserver::store::pg::conninfo::{TlsParams, split};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let Ok(first) = split(s) else { return };
    let again = split(&first.rest).expect("what is left splits again");
    assert_eq!(again.rest, first.rest);
    assert_eq!(again.tls, TlsParams::default());
});
