//! The client side: a [`Transport`] over QUIC for `meridian mount --meta quic://…`.
//!
//! Owns: a small tokio runtime, the quinn endpoint, the current [`Link`] (connection, its
//! one stream, the calls awaiting replies), the invalidation thread and the attribute and
//! entry cache ([`MetaCache`]) the invalidations keep true.
//!
//! A call is written straight from the calling thread onto the link's stream, tagged with
//! an id; the link's reader task hands each reply to its caller, so many FUSE threads have
//! calls in flight at once on one stream. Pushed invalidations go to a thread of their own
//! which applies them (the handler the mount installs: the kernel's caches) and then
//! acknowledges them — never the reader, which must keep delivering replies: the kernel may
//! hold a directory lock while its request waits for one.
//!
//! A release is posted: sent as [`ClientMsg::Post`] (no answer) with the next call's
//! frame, or by the link's ticker within [`POST_DELAY`] if no call comes — one packet and
//! one wake-up fewer per file closed. A post goes before every call sent after it.
//!
//! A lost connection is re-established (with the `Hello` handshake) on the next call, so a
//! metaserver restart costs the calls in flight at that moment, not the mount. Every call
//! is bounded by `timeout`: past it the call fails (EIO through the filesystem) instead of
//! hanging, and works again once the server is back.
//!
//! Locks: `link` is held only to read or replace the handle; a link's `pending` only to
//! add or take one entry, its `posted` only to add or take the frames; its `send` (async)
//! for one write, taken before `posted` (so posts leave in order).

use super::cache::MetaCache;
use super::{SERVER_NAME, next, tls};
use meridian_proto::session::{
    ClientMsg, Invalidation, InvalidationHandler, ServerMsg, directories,
};
use meridian_proto::wire::{Decoder, PROTOCOL_VERSION, Request, Response, Transport, encode};
use meridian_proto::{InodeId, MetaError, MetaResult};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

type Handler = Arc<Mutex<Option<InvalidationHandler>>>;

/// Directories with calls of this client in flight, and how many.
type Busy = Arc<Mutex<HashMap<InodeId, u32>>>;

/// Counts a call's directories busy while it lives.
struct InFlight<'a>(&'a Busy, Vec<InodeId>);

impl<'a> InFlight<'a> {
    fn new(busy: &'a Busy, req: &Request) -> Self {
        let dirs = directories(req);
        if !dirs.is_empty() {
            let mut b = busy.lock();
            for d in &dirs {
                *b.entry(*d).or_insert(0) += 1;
            }
        }
        InFlight(busy, dirs)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.1.is_empty() {
            return;
        }
        let mut b = self.0.lock();
        for d in &self.1 {
            if let Some(n) = b.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    b.remove(d);
                }
            }
        }
    }
}

/// The longest a posted release waits for a call to travel with.
pub const POST_DELAY: Duration = Duration::from_millis(20);

/// One connection and its stream.
struct Link {
    conn: quinn::Connection,
    send: tokio::sync::Mutex<quinn::SendStream>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    /// Frames of posted calls not yet written.
    posted: Mutex<Vec<u8>>,
}

impl Link {
    /// Writes the posted frames, then `frame`.
    async fn write(&self, frame: &[u8]) -> MetaResult<()> {
        let mut send = self.send.lock().await;
        let posted = std::mem::take(&mut *self.posted.lock());
        let fail = |e: quinn::WriteError| store(format!("metaserver connection: {e}"));
        if posted.is_empty() {
            return send.write_all(frame).await.map_err(fail);
        }
        let mut all = posted;
        all.extend_from_slice(frame);
        send.write_all(&all).await.map_err(fail)
    }

    /// Writes the posted frames now, every [`POST_DELAY`], until the connection ends.
    async fn flush_posts(self: Arc<Self>) {
        let mut tick = tokio::time::interval(POST_DELAY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.conn.close_reason().is_none() {
            tick.tick().await;
            if !self.posted.lock().is_empty() && self.write(&[]).await.is_err() {
                break;
            }
        }
    }
}

/// A batch of invalidations to apply and acknowledge.
type Batch = (Arc<Link>, u64, Vec<Invalidation>);

pub struct QuicClient {
    rt: tokio::runtime::Runtime,
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    name: String,
    token: String,
    timeout: Duration,
    link: Mutex<Option<Arc<Link>>>,
    next_id: AtomicU64,
    handler: Handler,
    batches: std::sync::mpsc::Sender<Batch>,
    cache: Arc<MetaCache>,
    /// Answer from the cache (off only to measure round trips).
    caching: bool,
    busy: Busy,
    /// Tests: the next answer is dropped as if the connection had been lost before it came.
    #[cfg(test)]
    pub(crate) lose_next_answer: std::sync::atomic::AtomicBool,
}

fn store(msg: String) -> MetaError {
    MetaError::Store(msg)
}

fn frame(msg: &ClientMsg) -> MetaResult<Vec<u8>> {
    encode(msg).map_err(|e| store(format!("metaserver request: {e}")))
}

/// Call ids start at a random number per client process: with the client's name they tag
/// the changes its calls make (see `replay`), so no two processes' ids may meet.
fn first_call_id() -> u64 {
    crate::random_u64() >> 2 // room to count up without wrapping
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
        config.transport_config(Arc::new(super::transport(super::CLIENT_IDLE)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
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
        let handler: Handler = Default::default();
        let busy: Busy = Default::default();
        let batches = invalidation_thread(rt.handle().clone(), handler.clone(), busy.clone())
            .map_err(|e| format!("cannot start the invalidation thread: {e}"))?;
        let client = QuicClient {
            rt,
            endpoint,
            config,
            addr,
            name: name.to_string(),
            token: token.to_string(),
            timeout,
            link: Mutex::new(None),
            next_id: AtomicU64::new(first_call_id()),
            handler,
            batches,
            cache: Default::default(),
            caching: true,
            busy,
            #[cfg(test)]
            lose_next_answer: Default::default(),
        };
        client.link().map_err(|e| match e {
            MetaError::Store(m) => m,
            e => e.to_string(),
        })?;
        Ok(client)
    }

    /// Turns the attribute and entry cache off (every call goes to the metaserver): for
    /// measuring what a round trip costs.
    pub fn without_cache(mut self) -> Self {
        self.caching = false;
        self
    }

    /// Installs what to do with invalidations the metaserver pushes (until then they are
    /// acknowledged and dropped: nothing is cached that they could concern).
    pub fn on_invalidate(&self, h: InvalidationHandler) {
        *self.handler.lock() = Some(h);
    }

    /// The live link, or a new one after the handshake.
    fn link(&self) -> MetaResult<Arc<Link>> {
        if let Some(l) = self.link.lock().clone()
            && l.conn.close_reason().is_none()
        {
            return Ok(l);
        }
        let link = self.rt.block_on(async {
            tokio::time::timeout(self.timeout, self.handshake())
                .await
                .map_err(|_| self.late())?
        })?;
        // Invalidations meant for the old session are lost: start the cache afresh.
        self.cache.clear();
        *self.link.lock() = Some(link.clone());
        Ok(link)
    }

    fn late(&self) -> MetaError {
        store(format!(
            "metaserver {} did not answer within {:?}",
            self.addr, self.timeout
        ))
    }

    async fn handshake(&self) -> MetaResult<Arc<Link>> {
        let fail = |e: &dyn std::fmt::Display| {
            store(format!("cannot connect to metaserver {}: {e}", self.addr))
        };
        let conn = self
            .endpoint
            .connect_with(self.config.clone(), self.addr, SERVER_NAME)
            .map_err(|e| fail(&e))?
            .await
            .map_err(|e| fail(&e))?;
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            client: self.name.clone(),
            token: self.token.clone(),
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| fail(&e))?;
        let frame = encode(&hello).map_err(|e| fail(&e))?;
        send.write_all(&frame).await.map_err(|e| fail(&e))?;
        let mut dec = Decoder::default();
        match next::<Response>(&mut recv, &mut dec).await {
            Ok(Some(Response::Hello { .. })) => {}
            Ok(Some(_)) => return Err(fail(&"it answered Hello with something else")),
            Ok(None) => return Err(refusal(&conn).unwrap_or_else(|| fail(&"connection closed"))),
            Err(e) => return Err(fail(&e)),
        }
        let link = Arc::new(Link {
            conn,
            send: tokio::sync::Mutex::new(send),
            pending: Default::default(),
            posted: Default::default(),
        });
        let (batches, cache) = (self.batches.clone(), self.cache.clone());
        tokio::spawn(reader(link.clone(), recv, dec, batches, cache));
        tokio::spawn(link.clone().flush_posts());
        Ok(link)
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

/// Delivers replies to their callers and invalidations to the invalidation thread, until
/// the connection ends; then fails every call still waiting (they retry on a new link).
async fn reader(
    link: Arc<Link>,
    mut recv: quinn::RecvStream,
    mut dec: Decoder,
    batches: std::sync::mpsc::Sender<Batch>,
    cache: Arc<MetaCache>,
) {
    loop {
        match next::<ServerMsg>(&mut recv, &mut dec).await {
            Ok(Some(ServerMsg::Reply { id, resp })) => {
                if let Some(tx) = link.pending.lock().remove(&id) {
                    let _ = tx.send(resp);
                }
            }
            Ok(Some(ServerMsg::Invalidate { seq, items })) => {
                // Before any later reply is delivered: see `cache`.
                cache.apply(&items);
                let _ = batches.send((link.clone(), seq, items));
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "malformed message from the metaserver");
                link.conn.close(super::CLOSE_PROTOCOL.into(), e.as_bytes());
                break;
            }
        }
    }
    link.pending.lock().clear();
    // Without the connection no invalidation can arrive: the cache is no longer kept true.
    cache.clear();
}

/// Applies pushed invalidations in order, acknowledging each batch after it is applied —
/// except a batch naming an entry of a directory this client has a call in flight in: the
/// kernel may hold that directory's lock until the call returns, and the call may be
/// waiting for the client whose change this is, which waits for this acknowledgement. Such
/// a batch is acknowledged first (this client's own cache is already updated) and applied
/// to the kernel after.
fn invalidation_thread(
    rt: tokio::runtime::Handle,
    handler: Handler,
    busy: Busy,
) -> std::io::Result<std::sync::mpsc::Sender<Batch>> {
    let (tx, rx) = std::sync::mpsc::channel::<Batch>();
    std::thread::Builder::new()
        .name("meridian-inval".into())
        .spawn(move || {
            for (link, seq, items) in rx {
                let ack = || {
                    if let Ok(frame) = encode(&ClientMsg::Ack { seq }) {
                        let _ = rt.block_on(link.write(&frame));
                    }
                };
                let blocked = {
                    let b = busy.lock();
                    items.iter().any(|i| {
                        matches!(i, Invalidation::Entry { parent, .. } if b.contains_key(parent))
                    })
                };
                if blocked {
                    ack();
                }
                if let Some(h) = &*handler.lock() {
                    h(&items);
                }
                if !blocked {
                    ack();
                }
            }
        })?;
    Ok(tx)
}

impl Transport for QuicClient {
    fn call(&self, req: Request) -> MetaResult<Response> {
        if !self.caching {
            return self.exchange(req);
        }
        if let Some(resp) = self.cache.answer(&req) {
            return Ok(resp);
        }
        if let Request::Release { .. } = req {
            return self.post(req);
        }
        let epoch = self.cache.epoch();
        let plan = self.cache.plan(&req);
        let _busy = InFlight::new(&self.busy, &req);
        let resp = self.exchange(req)?;
        self.cache.learn(epoch, plan, &resp);
        Ok(resp)
    }
}

impl QuicClient {
    /// Posts a release: it leaves with the next call, or within [`POST_DELAY`]. Nothing a
    /// caller does depends on its answer, calls on the stream are served in order, and if
    /// the connection is lost first the metaserver releases the session's opens itself
    /// when it ends.
    fn post(&self, req: Request) -> MetaResult<Response> {
        let frame = frame(&ClientMsg::Post { req })?;
        let link = self.link()?;
        link.posted.lock().extend_from_slice(&frame);
        Ok(Response::Unit)
    }

    /// Sends one call and waits for its reply.
    fn exchange(&self, req: Request) -> MetaResult<Response> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let first = std::time::Instant::now();
        let mut msg = ClientMsg::Call {
            id,
            req,
            resent_after_ms: None,
        };
        let mut frame = frame(&msg)?;
        // One retry on a fresh link: a restarted metaserver is reached again. It says how
        // long ago the call was first sent, so that a change the first attempt made is
        // answered as done rather than tried again (see `replay`).
        for attempt in 0..2 {
            if attempt > 0
                && let ClientMsg::Call {
                    resent_after_ms, ..
                } = &mut msg
            {
                let ms = first.elapsed().as_millis().min(u32::MAX as u128) as u32;
                *resent_after_ms = Some(ms);
                frame = self::frame(&msg)?;
            }
            let link = self.link()?;
            let (tx, rx) = oneshot::channel();
            link.pending.lock().insert(id, tx);
            let exchange = async {
                link.write(&frame).await?;
                rx.await
                    .map_err(|_| store("metaserver connection lost".into()))
            };
            let r = self
                .rt
                .block_on(async { tokio::time::timeout(self.timeout, exchange).await });
            #[cfg(test)]
            let r = match r {
                Ok(Ok(_)) if self.lose_next_answer.swap(false, Ordering::SeqCst) => {
                    Ok(Err(store("answer lost (test)".into())))
                }
                r => r,
            };
            match r {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(e)) if attempt == 0 => {
                    tracing::info!(error = %e, "metaserver connection lost; reconnecting");
                    link.pending.lock().remove(&id);
                    link.conn.close(0u32.into(), b"reconnecting");
                    *self.link.lock() = None;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    link.pending.lock().remove(&id);
                    link.conn.close(0u32.into(), b"timed out");
                    *self.link.lock() = None;
                    return Err(self.late());
                }
            }
        }
        Err(store("metaserver connection lost twice".into()))
    }
}
