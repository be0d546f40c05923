//! The site service: a metaserver serving its namespace to many clients over QUIC (TLS 1.3).
//!
//! Layout: [`tls`] (the server's certificate, generated on first start, that clients pin),
//! [`clients`] (credentials issued per client), [`server`] (connections, the handshake,
//! dispatch onto the namespace), [`hub`] (sessions, pushed invalidations, what a client
//! that goes away leaves behind, lock wake-ups), [`replay`] (calls retried after a lost
//! answer), [`cache`] (a client's attributes and entries, kept true by invalidations),
//! [`client`] (the `Transport` a mount uses: many calls on one stream, reconnects, times
//! out instead of hanging, applies invalidations).
//!
//! Protocol (`meridian_proto::wire` and `meridian_proto::session`): one long-lived
//! bidirectional QUIC stream per client; a bare `Hello` each way first (version and
//! credential; anything else closes the connection with a reason the client shows), then
//! id-tagged calls one way and replies plus invalidations the other.

pub mod cache;
pub mod client;
pub mod clients;
pub mod hub;
pub mod replay;
pub mod server;
pub mod tls;

#[cfg(test)]
mod tests;

use std::time::Duration;

/// The name in the server certificate; clients verify it against the pinned certificate,
/// whatever address they dial.
pub const SERVER_NAME: &str = "meridian-metaserver";

/// QUIC application close codes.
pub const CLOSE_REFUSED: u32 = 1;
pub const CLOSE_PROTOCOL: u32 = 2;

/// A client that sends nothing for this long (not even keep-alives, every second) is gone:
/// its session ends and its locks and open files are released. This is the lease, by
/// default (a site sets it: [`server::ServerConfig::lease`]).
pub const LEASE: Duration = Duration::from_secs(5);

/// The shortest lease a site may set: three keep-alives.
pub const MIN_LEASE: Duration = Duration::from_secs(3);

/// A client's own idle limit: longer than any lease, so the server's lease decides (QUIC
/// takes the smaller of the two sides' limits).
pub const CLIENT_IDLE: Duration = Duration::from_secs(600);

/// The QUIC transport: keep-alives every second, `idle` as idle timeout.
pub fn transport(idle: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    t.max_idle_timeout(Some(idle.try_into().expect("fits")));
    t
}

/// The next whole message on `recv`; `Ok(None)` when the stream or connection ended, an
/// error (for this connection only) when the bytes are not a message.
pub(crate) async fn next<T: for<'de> serde::Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
    dec: &mut meridian_proto::wire::Decoder,
) -> Result<Option<T>, String> {
    loop {
        if let Some(m) = dec.decode_next::<T>().map_err(|e| e.to_string())? {
            return Ok(Some(m));
        }
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(c)) => dec.push(&c.bytes),
            Ok(None) | Err(_) => return Ok(None),
        }
    }
}
