//! Serving a namespace over QUIC.
//!
//! Owns: the quinn endpoint, one task per connection (its reader) plus one writer task,
//! and the [`Hub`] of connected sessions.
//!
//! Protocol: a client opens one bidirectional stream and keeps it. The first frame each way
//! is the bare `Hello` (version and credential); a refused client gets the reason as the
//! connection's close reason and the server logs one line naming it. Then the client sends
//! [`ClientMsg`] envelopes — many calls in flight at once, each with its id — and the
//! server sends replies and pushed invalidations ([`ServerMsg`]) in one ordered stream. A
//! malformed or oversized frame closes that connection only.
//!
//! Invariants: namespace calls run inline on the connection's reader (the store journals
//! rather than fsyncs; `sync`, which fsyncs, runs on tokio's blocking pool). Over a store
//! that waits on the network (PostgreSQL) a call runs inline only while the store expects
//! to answer at once, as an attempt that gives up rather than wait more than
//! [`IN_PLACE_WAIT`] ([`nowait`]), and otherwise on the blocking pool; a call that
//! changed something other clients cache is answered only after they acknowledged the
//! invalidation (see [`hub`](super::hub)).

use super::hub::{Hub, Session, SessionState};
use super::replay;
use super::{CLOSE_PROTOCOL, CLOSE_REFUSED, clients, next, tls};
use crate::store::nowait;
use meridian_proto::session::{ClientMsg, Invalidation, ServerMsg, changes, victims};
use meridian_proto::wire::{Decoder, Request, Response, dispatch, encode, hello_reply};
use meridian_proto::{CallTag, MetaError, Namespace};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

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
    /// How long a silent client keeps its session, locks and open files (at least
    /// [`super::MIN_LEASE`]; clients send keep-alives every second).
    pub lease: std::time::Duration,
    /// How long a change waits for the other clients holding what it changed to
    /// acknowledge the invalidation before it is answered anyway.
    pub ack_wait: std::time::Duration,
}

/// The runtime a metaserver runs on: one thread for every connection (wake-ups between
/// tasks stay on it, which is what a call's latency is made of), tokio's blocking pool for
/// fsyncs.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("meridian-metaserver")
        .build()
}

/// How often a metaserver sharing its store reads the change feed when no change was
/// announced (the default of `feed_poll_ms`).
pub const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A running server.
pub struct Server {
    endpoint: quinn::Endpoint,
    pub hub: Arc<Hub>,
}

impl Server {
    /// Binds the endpoint (generating the certificate on first start).
    pub fn bind(cfg: &ServerConfig) -> Result<Server, String> {
        let (certs, key) = tls::load_or_create(&cfg.cert, &cfg.key, &cfg.names)?;
        // Stateless resets keyed by the server's private key, so a restarted metaserver
        // tells clients at once that their old connections are gone. It answers only
        // packets whose connection id it recognises as its own: the ids are signed with a
        // key from the same private key, or the restarted process would drop the old
        // connections' packets silently and clients would wait out the lease (5 s).
        let secret = blake3::derive_key("meridian metaserver stateless reset", key.secret_der());
        let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let ids = blake3::derive_key("meridian metaserver connection ids", key.secret_der());
        let ids = u64::from_le_bytes(ids[..8].try_into().expect("8 bytes"));
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset));
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(ids))
        });
        let mut server = quinn::ServerConfig::with_single_cert(certs, key)
            .map_err(|e| format!("certificate {}: {e}", cfg.cert.display()))?;
        server.transport_config(Arc::new(super::transport(cfg.lease.max(super::MIN_LEASE))));
        let socket = std::net::UdpSocket::bind(cfg.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server),
            socket,
            quinn::default_runtime().ok_or("no async runtime")?,
        )
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        Ok(Server {
            endpoint,
            hub: Arc::new(Hub::new(cfg.ack_wait)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("bound")
    }

    /// The connected clients.
    pub fn sessions(&self) -> Vec<Session> {
        self.hub.sessions()
    }

    /// Serves until the endpoint is closed.
    pub async fn serve(&self, ns: Arc<dyn Namespace>, clients_file: PathBuf) {
        while let Some(incoming) = self.endpoint.accept().await {
            let (ns, file, hub) = (ns.clone(), clients_file.clone(), self.hub.clone());
            tokio::spawn(async move {
                let addr = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => connection(conn, ns, file, hub).await,
                    Err(e) => tracing::info!(%addr, error = %e, "handshake failed"),
                }
            });
        }
    }

    /// For a metaserver sharing its store with others (PostgreSQL): follows the change feed
    /// and pushes the changes the other metaservers made to this one's clients, as if made
    /// here — read when `wake` is notified (another metaserver announced a change, see
    /// [`crate::store::pg::listen`]) and at least every `poll`; and runs the namespace's
    /// upkeep (`Namespace::maintain`) every `upkeep_every`. Runs until the task is dropped.
    pub async fn follow(
        &self,
        ns: Arc<dyn Namespace>,
        origin: u64,
        wake: Arc<tokio::sync::Notify>,
        poll: std::time::Duration,
        upkeep_every: std::time::Duration,
    ) {
        let upkeep = ns.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(upkeep_every).await;
                let ns = upkeep.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || ns.maintain()).await {
                    tracing::warn!(error = %e, "shared store upkeep");
                }
            }
        });
        const PAGE: usize = 1000;
        let mut cursor = meridian_proto::Hlc::at_millis(meridian_proto::Hlc::wall_millis());
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            let ns2 = ns.clone();
            let read = tokio::task::spawn_blocking(move || ns2.changes(cursor, PAGE)).await;
            let changes = match read {
                Ok(Ok(c)) if c.len() == PAGE => {
                    wake.notify_one(); // more to read at once
                    c
                }
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading the change feed");
                    continue;
                }
                Err(_) => continue,
            };
            for c in changes {
                cursor = c.hlc;
                if c.origin == origin {
                    continue; // pushed when it was made
                }
                let (locks, items): (Vec<_>, Vec<_>) = c
                    .items
                    .into_iter()
                    .partition(|i| matches!(i, Invalidation::Locks(_)));
                for l in locks {
                    if let Invalidation::Locks(ino) = l {
                        self.hub.wake(ino);
                    }
                }
                let targets = self.hub.holders(u64::MAX, &items);
                if !targets.is_empty() {
                    self.hub.invalidate(targets, items).await;
                }
            }
        }
    }

    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"metaserver stopping");
    }
}

/// Reads the Hello and answers it; the client's name if it may go on.
async fn handshake(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    dec: &mut Decoder,
    clients_file: &std::path::Path,
) -> Option<String> {
    let addr = conn.remote_address();
    match next::<Request>(recv, dec).await {
        Ok(Some(Request::Hello {
            version,
            client,
            token,
        })) => {
            let reply = match hello_reply(version, "meridian") {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%addr, client, "refused: {e}");
                    conn.close(CLOSE_REFUSED.into(), e.to_string().as_bytes());
                    return None;
                }
            };
            let Some(name) = clients::check(clients_file, &token) else {
                tracing::warn!(%addr, client, "refused a client without a valid credential");
                let why = "unknown client credential: ask the site's administrator for one \
                           (meridian metaserver add-client NAME)";
                conn.close(CLOSE_REFUSED.into(), why.as_bytes());
                return None;
            };
            let frame = encode(&reply).ok()?;
            send.write_all(&frame).await.ok()?;
            Some(name)
        }
        Ok(Some(_)) => {
            conn.close(CLOSE_PROTOCOL.into(), b"expected Hello first");
            None
        }
        Ok(None) => None,
        Err(e) => {
            tracing::info!(%addr, error = %e, "malformed first message; connection closed");
            conn.close(CLOSE_PROTOCOL.into(), e.as_bytes());
            None
        }
    }
}

async fn connection(
    conn: quinn::Connection,
    ns: Arc<dyn Namespace>,
    clients_file: PathBuf,
    hub: Arc<Hub>,
) {
    let addr = conn.remote_address();
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let mut dec = Decoder::default();
    let Some(name) = handshake(&conn, &mut send, &mut recv, &mut dec, &clients_file).await else {
        return;
    };
    tracing::info!(%addr, client = name, "client connected");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if send.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let info = Session {
        name: name.clone(),
        addr,
        since: std::time::SystemTime::now(),
    };
    let me = hub.join(conn.stable_id() as u64, info, tx);
    loop {
        match next::<ClientMsg>(&mut recv, &mut dec).await {
            Ok(Some(ClientMsg::Call {
                id,
                req,
                resent_after_ms,
            })) => call(
                &hub,
                &me,
                &ns,
                Call {
                    id,
                    req,
                    resent_after_ms,
                },
                true,
            ),
            Ok(Some(ClientMsg::Post { req })) => {
                let c = Call {
                    id: 0,
                    req,
                    resent_after_ms: None,
                };
                call(&hub, &me, &ns, c, false)
            }
            Ok(Some(ClientMsg::Ack { seq })) => me.acked(seq),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "malformed request; connection closed");
                conn.close(CLOSE_PROTOCOL.into(), e.as_bytes());
                break;
            }
        }
    }
    let ns2 = ns.clone();
    let hub2 = hub.clone();
    let me2 = me.clone();
    let _ = tokio::task::spawn_blocking(move || hub2.leave(&me2, &*ns2)).await;
    tracing::info!(%addr, client = name, "client disconnected");
}

/// One call as it came in.
struct Call {
    id: u64,
    req: Request,
    resent_after_ms: Option<u32>,
}

/// Runs one call and answers it if `reply` (after other clients dropped what it made
/// stale).
fn call(hub: &Arc<Hub>, me: &Arc<SessionState>, ns: &Arc<dyn Namespace>, c: Call, reply: bool) {
    let id = reply.then_some(c.id);
    tracing::trace!(session = me.id, id, req = ?c.req, "call");
    match c.req {
        Request::Sync => {
            let (ns, me, session) = (ns.clone(), me.clone(), me.id);
            tokio::task::spawn_blocking(move || {
                let resp = unwound(|| dispatch(&*ns, session, c.req)).unwrap_or_else(Response::Err);
                if let Some(id) = id {
                    me.send(&ServerMsg::Reply { id, resp });
                }
            });
        }
        Request::Hello { .. } => answer(
            hub,
            me,
            id,
            Response::Err(MetaError::Invalid("Hello sent twice".into())),
            Vec::new(),
        ),
        Request::Release { ino } if ns.release_in_memory(ino) => {
            let (resp, items) = run(&**ns, hub, me, c);
            answer(hub, me, id, resp, items);
        }
        _ if hub.blocking.load(Relaxed) => {
            // A store that blocks on the network (PostgreSQL): tried on the connection's
            // task when the store expects to answer at once (no thread hop); otherwise, or
            // if it would wait after all, on a blocking thread, answered from there (no hop
            // back through a task). A retry is never tried in place: it may wait for its
            // first attempt.
            let c = match c.resent_after_ms.is_none() && ns.answers_at_once() {
                true => match unwound(|| run_as(&**ns, hub, me, c, Some(IN_PLACE_WAIT))) {
                    Ok(Ok((resp, items))) => {
                        hub.in_place[0].fetch_add(1, Relaxed);
                        return answer(hub, me, id, resp, items);
                    }
                    Err(e) => return answer(hub, me, id, Response::Err(e), Vec::new()),
                    Ok(Err(c)) => {
                        hub.in_place[1].fetch_add(1, Relaxed);
                        tracing::debug!(session = me.id, req = ?c.req, "a call in place would wait; run apart");
                        *c
                    }
                },
                false => c,
            };
            let (hub, me, ns) = (hub.clone(), me.clone(), ns.clone());
            tokio::task::spawn_blocking(move || {
                let (resp, items) = unwound(|| run(&*ns, &hub, &me, c))
                    .unwrap_or_else(|e| (Response::Err(e), Vec::new()));
                answer(&hub, &me, id, resp, items);
            });
        }
        _ => {
            let (resp, items) = run(&**ns, hub, me, c);
            answer(hub, me, id, resp, items);
        }
    }
}

/// `f`'s result, or a panic in it as the error its caller is answered with (rather than
/// left waiting).
fn unwound<T>(f: impl FnOnce() -> T) -> Result<T, MetaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        MetaError::Store(format!("the call failed: {what}"))
    })
}

/// Runs one namespace call for a session: its reply and what it made stale elsewhere. A
/// call that makes or removes a name is tagged, and if it is a retry whose first attempt
/// took effect, answered as done (see [`replay`]).
fn run(ns: &dyn Namespace, hub: &Hub, me: &SessionState, c: Call) -> (Response, Vec<Invalidation>) {
    run_as(ns, hub, me, c, None).unwrap_or_else(|_| unreachable!("only a call in place gives up"))
}

/// The longest a call tried in place waits for the network in all before it gives up
/// (the answers to earlier commits, due by then): also the longest the metaserver's
/// thread, which serves every connection, is held by one call. Measured against 1 ms:
/// the same create rates, one writer or four.
const IN_PLACE_WAIT: Duration = Duration::from_micros(300);

/// [`run`], tried in place ([`nowait`]) if `in_place` gives its wait: the call back if it
/// gave up (having changed nothing), to be run elsewhere.
fn run_as(
    ns: &dyn Namespace,
    hub: &Hub,
    me: &SessionState,
    c: Call,
    in_place: Option<Duration>,
) -> Result<(Response, Vec<Invalidation>), Box<Call>> {
    let Call {
        id,
        mut req,
        resent_after_ms,
    } = c;
    let tag = CallTag {
        session: replay::client_key(&me.info.name),
        id,
    };
    let running = if replay::tag(&mut req, tag) {
        let Some(s) = hub.running.start(tag, resent_after_ms.is_some()) else {
            // Its retry ran first and answered the client; the connection it came on is gone.
            return Ok((
                Response::Err(MetaError::Invalid("superseded by its retry".into())),
                Vec::new(),
            ));
        };
        Some(s)
    } else {
        None
    };
    let attempt = || {
        // The inodes a removal or rename will take away, while their names still resolve.
        let gone: Vec<_> = ns.resolve(&victims(&req)).into_iter().flatten().collect();
        let replayed = resent_after_ms
            .filter(|_| running.is_some())
            .and_then(|ms| replay::answer(ns, &req, tag, Duration::from_millis(ms.into())));
        if replayed.is_some() {
            tracing::info!(
                client = me.info.name,
                id,
                "a retried call had taken effect; answered as done"
            );
        }
        (
            gone,
            replayed.unwrap_or_else(|| dispatch(ns, me.id, req.clone())),
        )
    };
    let (gone, resp) = match in_place {
        None => attempt(),
        Some(wait) => match nowait::attempt(wait, attempt) {
            Some(done) => done,
            None => {
                if let Some(s) = running {
                    s.abandon();
                }
                // Tagged already; tagging it again there gives the same tag.
                return Err(Box::new(Call {
                    id,
                    req,
                    resent_after_ms,
                }));
            }
        },
    };
    if let Request::Setlk { ino, lock, .. } = &req {
        hub.lock_outcome(
            me,
            *ino,
            lock.kind == meridian_proto::LockKind::Unlock,
            &resp,
        );
    }
    me.record(&req, &resp);
    let items = match resp {
        Response::Err(_) => Vec::new(),
        _ => changes(&req, &gone),
    };
    Ok((resp, items))
}

/// Sends the reply (`id` `None`: a post, none), after the other clients holding what it
/// changed acknowledged.
fn answer(
    hub: &Arc<Hub>,
    me: &Arc<SessionState>,
    id: Option<u64>,
    resp: Response,
    items: Vec<Invalidation>,
) {
    let reply = id.map(|id| ServerMsg::Reply { id, resp });
    let send = move |me: &SessionState| {
        if let Some(r) = &reply {
            me.send(r);
        }
    };
    let targets = if items.is_empty() {
        Vec::new()
    } else {
        hub.holders(me.id, &items)
    };
    if targets.is_empty() {
        send(me);
        return;
    }
    let (hub, me) = (hub.clone(), me.clone());
    tokio::spawn(async move {
        hub.invalidate(targets, items).await;
        send(&me);
    });
}
