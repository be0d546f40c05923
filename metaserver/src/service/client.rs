//! The client side: a [`Transport`] over QUIC for `meridian mount --meta quic://…`.
//!
//! Owns: a small tokio runtime, the quinn endpoint and the current connection. Each request
//! opens one bidirectional stream. A lost connection is re-established (with the `Hello`
//! handshake) on the next request, so a metaserver restart costs the requests in flight at
//! that moment, not the mount. Every request is bounded by `timeout`: past it the call fails
//! (EIO through the filesystem) instead of hanging, and works again once the server is back.
//!
//! Locks: `conn` is held only to read or replace the connection handle, never across I/O.

use super::{SERVER_NAME, tls};
use meridian_proto::wire::{
    Decoder, MAX_FRAME, PROTOCOL_VERSION, Request, Response, Transport, encode,
};
use meridian_proto::{MetaError, MetaResult};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct QuicClient {
    rt: tokio::runtime::Runtime,
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    name: String,
    token: String,
    timeout: Duration,
    conn: Mutex<Option<quinn::Connection>>,
}

fn store(msg: String) -> MetaError {
    MetaError::Store(msg)
}

impl QuicClient {
    /// Connects to `addr` trusting only the certificate in `cert`, and says hello; a refusal
    /// (bad credential, other protocol version) is returned with the server's reason.
    pub fn connect(
        addr: SocketAddr,
        cert: &Path,
        name: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<QuicClient, String> {
        let roots = tls::pinned(cert)?;
        let mut config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))
            .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
        // Keep-alives, and a dead server noticed within a few seconds rather than QUIC's
        // default half minute.
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(1)));
        transport.max_idle_timeout(Some(Duration::from_secs(5).try_into().expect("fits")));
        config.transport_config(Arc::new(transport));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("meridian-quic")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .expect("address");
        let endpoint = rt
            .block_on(async { quinn::Endpoint::client(bind) })
            .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        let client = QuicClient {
            rt,
            endpoint,
            config,
            addr,
            name: name.to_string(),
            token: token.to_string(),
            timeout,
            conn: Mutex::new(None),
        };
        client.connection().map_err(|e| match e {
            MetaError::Store(m) => m,
            e => e.to_string(),
        })?;
        Ok(client)
    }

    /// The live connection, or a new one after the handshake.
    fn connection(&self) -> MetaResult<quinn::Connection> {
        if let Some(c) = self.conn.lock().clone()
            && c.close_reason().is_none()
        {
            return Ok(c);
        }
        let conn = self.rt.block_on(async {
            tokio::time::timeout(self.timeout, self.handshake())
                .await
                .map_err(|_| {
                    store(format!(
                        "metaserver {} did not answer within {:?}",
                        self.addr, self.timeout
                    ))
                })?
        })?;
        *self.conn.lock() = Some(conn.clone());
        Ok(conn)
    }

    async fn handshake(&self) -> MetaResult<quinn::Connection> {
        let conn = self
            .endpoint
            .connect_with(self.config.clone(), self.addr, SERVER_NAME)
            .map_err(|e| store(format!("cannot connect to metaserver {}: {e}", self.addr)))?
            .await
            .map_err(|e| store(format!("cannot connect to metaserver {}: {e}", self.addr)))?;
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            client: self.name.clone(),
            token: self.token.clone(),
        };
        match round_trip(&conn, &hello).await {
            Ok(Response::Hello { .. }) => Ok(conn),
            Ok(_) => Err(store(
                "the metaserver answered Hello with something else".into(),
            )),
            Err(e) => Err(refusal(&conn).unwrap_or(e)),
        }
    }
}

/// The server's reason if it closed the connection on purpose.
fn refusal(conn: &quinn::Connection) -> Option<MetaError> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c) => Some(store(format!(
            "metaserver refused this client: {}",
            String::from_utf8_lossy(&c.reason)
        ))),
        _ => None,
    }
}

async fn round_trip(conn: &quinn::Connection, req: &Request) -> MetaResult<Response> {
    let io = |e: &dyn std::fmt::Display| store(format!("metaserver connection: {e}"));
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| io(&e))?;
    let frame = encode(req).map_err(|e| io(&e))?;
    send.write_all(&frame).await.map_err(|e| io(&e))?;
    send.finish().map_err(|e| io(&e))?;
    let bytes = recv.read_to_end(MAX_FRAME + 4).await.map_err(|e| io(&e))?;
    let mut d = Decoder::default();
    d.push(&bytes);
    d.decode_next::<Response>()
        .map_err(|e| io(&e))?
        .ok_or_else(|| io(&"incomplete reply"))
}

impl Transport for QuicClient {
    fn call(&self, req: Request) -> MetaResult<Response> {
        // One retry on a fresh connection: a restarted metaserver is reached again.
        for attempt in 0..2 {
            let conn = self.connection()?;
            let r = self.rt.block_on(async {
                tokio::time::timeout(self.timeout, round_trip(&conn, &req)).await
            });
            match r {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(e)) if attempt == 0 && conn.close_reason().is_some() => {
                    tracing::info!(error = %e, "metaserver connection lost; reconnecting");
                    *self.conn.lock() = None;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    *self.conn.lock() = None;
                    return Err(store(format!(
                        "metaserver {} did not answer within {:?}",
                        self.addr, self.timeout
                    )));
                }
            }
        }
        Err(store("metaserver connection lost twice".into()))
    }
}
