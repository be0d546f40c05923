//! Serving a namespace over QUIC.
//!
//! Owns: the quinn endpoint, one task per connection, one task per request stream, and the
//! table of connected clients (`meridian metaserver status`).
//!
//! Invariants: a connection serves nothing before its `Hello` passes the version and
//! credential checks; a refused client gets the reason as the connection's close reason and
//! the server logs one line naming it. A malformed or oversized frame closes that
//! connection only. Namespace calls run inline on the connection's task (the store
//! journals rather than fsyncs); `sync`, which fsyncs, runs on tokio's blocking pool.

use super::{CLOSE_PROTOCOL, CLOSE_REFUSED, clients, tls};
use meridian_proto::Namespace;
use meridian_proto::wire::{Decoder, MAX_FRAME, Request, Response, dispatch, encode, hello_reply};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// How a metaserver is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Credentials file (see [`clients`]).
    pub clients: PathBuf,
    /// Names put in a generated certificate besides the fixed server name.
    pub names: Vec<String>,
}

/// A connected, authenticated client.
#[derive(Clone, Debug)]
pub struct Session {
    pub name: String,
    pub addr: SocketAddr,
    pub since: std::time::SystemTime,
}

/// A running server.
pub struct Server {
    endpoint: quinn::Endpoint,
    pub sessions: Arc<Mutex<HashMap<usize, Session>>>,
}

impl Server {
    /// Binds the endpoint (generating the certificate on first start).
    pub fn bind(cfg: &ServerConfig) -> Result<Server, String> {
        let (certs, key) = tls::load_or_create(&cfg.cert, &cfg.key, &cfg.names)?;
        // Stateless resets keyed by the server's private key, so a restarted metaserver
        // tells clients at once that their old connections are gone.
        let secret = blake3::derive_key("meridian metaserver stateless reset", key.secret_der());
        let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let server = quinn::ServerConfig::with_single_cert(certs, key)
            .map_err(|e| format!("certificate {}: {e}", cfg.cert.display()))?;
        let socket = std::net::UdpSocket::bind(cfg.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::new(Arc::new(reset)),
            Some(server),
            socket,
            quinn::default_runtime().ok_or("no async runtime")?,
        )
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        Ok(Server {
            endpoint,
            sessions: Default::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("bound")
    }

    /// Serves until the endpoint is closed.
    pub async fn serve(&self, ns: Arc<dyn Namespace>, clients_file: PathBuf) {
        while let Some(incoming) = self.endpoint.accept().await {
            let (ns, file, sessions) = (ns.clone(), clients_file.clone(), self.sessions.clone());
            tokio::spawn(async move {
                let addr = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => connection(conn, ns, file, sessions).await,
                    Err(e) => tracing::info!(%addr, error = %e, "handshake failed"),
                }
            });
        }
    }

    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"metaserver stopping");
    }
}

async fn read_request(recv: &mut quinn::RecvStream) -> Result<Request, String> {
    let bytes = recv
        .read_to_end(MAX_FRAME + 4)
        .await
        .map_err(|e| e.to_string())?;
    let mut d = Decoder::default();
    d.push(&bytes);
    match d.decode_next::<Request>() {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err("incomplete frame".into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn reply(mut send: quinn::SendStream, resp: &Response) {
    if let Ok(frame) = encode(resp) {
        let _ = send.write_all(&frame).await;
        let _ = send.finish();
    }
}

async fn connection(
    conn: quinn::Connection,
    ns: Arc<dyn Namespace>,
    clients_file: PathBuf,
    sessions: Arc<Mutex<HashMap<usize, Session>>>,
) {
    let addr = conn.remote_address();
    // The handshake: the first stream carries Hello.
    let Ok((send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let name = match read_request(&mut recv).await {
        Ok(Request::Hello {
            version,
            client,
            token,
        }) => {
            if let Err(e) = hello_reply(version, "meridian") {
                tracing::warn!(%addr, client, "refused: {e}");
                conn.close(CLOSE_REFUSED.into(), e.to_string().as_bytes());
                return;
            }
            match clients::check(&clients_file, &token) {
                Some(name) => {
                    reply(send, &hello_reply(version, "meridian").expect("checked")).await;
                    name
                }
                None => {
                    tracing::warn!(%addr, client, "refused a client without a valid credential");
                    let why = "unknown client credential: ask the site's administrator for one \
                               (meridian metaserver add-client NAME)";
                    conn.close(CLOSE_REFUSED.into(), why.as_bytes());
                    return;
                }
            }
        }
        Ok(_) => {
            conn.close(CLOSE_PROTOCOL.into(), b"expected Hello first");
            return;
        }
        Err(e) => {
            tracing::info!(%addr, error = %e, "malformed first message; connection closed");
            conn.close(CLOSE_PROTOCOL.into(), e.as_bytes());
            return;
        }
    };
    tracing::info!(%addr, client = name, "client connected");
    let id = conn.stable_id();
    sessions.lock().insert(
        id,
        Session {
            name: name.clone(),
            addr,
            since: std::time::SystemTime::now(),
        },
    );
    while let Ok((send, mut recv)) = conn.accept_bi().await {
        let (ns, conn2) = (ns.clone(), conn.clone());
        tokio::spawn(async move {
            match read_request(&mut recv).await {
                // Namespace calls are short (the store journals instead of fsyncing):
                // they run inline; only `sync`, which fsyncs, goes to the blocking pool.
                Ok(req @ Request::Sync) => {
                    let resp = tokio::task::spawn_blocking(move || dispatch(&*ns, req))
                        .await
                        .unwrap_or_else(|e| {
                            Response::Err(meridian_proto::MetaError::Store(e.to_string()))
                        });
                    reply(send, &resp).await;
                }
                Ok(req) => reply(send, &dispatch(&*ns, req)).await,
                Err(e) => {
                    tracing::warn!(addr = %conn2.remote_address(), error = %e, "malformed request; connection closed");
                    conn2.close(CLOSE_PROTOCOL.into(), e.as_bytes());
                }
            }
        });
    }
    sessions.lock().remove(&id);
    tracing::info!(%addr, client = name, "client disconnected");
}
