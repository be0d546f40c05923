//! The site service: a metaserver serving its namespace to many clients over QUIC (TLS 1.3).
//!
//! Layout: [`tls`] (the server's certificate, generated on first start, that clients pin),
//! [`clients`] (credentials issued per client), [`server`] (connections, the handshake, one
//! bidirectional stream per request, dispatch onto the namespace), [`client`] (the
//! `Transport` a mount uses: reconnects, times out instead of hanging).
//!
//! Protocol: every request is one QUIC bidirectional stream carrying one frame each way
//! (`meridian_proto::wire`). The first stream of a connection must be `Hello` with the
//! protocol version and a valid credential; anything else closes the connection with a
//! reason the client shows.

pub mod client;
pub mod clients;
pub mod server;
pub mod tls;

/// The name in the server certificate; clients verify it against the pinned certificate,
/// whatever address they dial.
pub const SERVER_NAME: &str = "meridian-metaserver";

/// QUIC application close codes.
pub const CLOSE_REFUSED: u32 = 1;
pub const CLOSE_PROTOCOL: u32 = 2;
