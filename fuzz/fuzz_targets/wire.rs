//! The metaserver wire decoder (handshake messages and the session envelopes): any byte stream, cut anywhere, yields whole requests and
//! responses or an error for that connection, never a panic; what decodes re-encodes to a
//! frame that decodes the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_proto::session::{ClientMsg, ServerMsg};
use meridian_proto::wire::{Decoder, Request, Response, encode};

fn run<T>(data: &[u8], cut: usize)
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let mut d = Decoder::default();
    let cut = cut.min(data.len());
    d.push(&data[..cut]);
    let mut seen = Vec::new();
    loop {
        match d.decode_next::<T>() {
            Ok(Some(m)) => seen.push(m),
            Ok(None) if cut < data.len() => {
                d.push(&data[cut..]);
                while let Ok(Some(m)) = d.decode_next::<T>() {
                    seen.push(m);
                }
                break;
            }
            _ => break,
        }
    }
    for m in seen {
        let mut again = Decoder::default();
        again.push(&encode(&m).expect("a decoded message encodes"));
        assert_eq!(again.decode_next::<T>().unwrap(), Some(m));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    run::<Request>(rest, cut as usize);
    run::<Response>(rest, cut as usize);
    run::<ClientMsg>(rest, cut as usize);
    run::<ServerMsg>(rest, cut as usize);
});
