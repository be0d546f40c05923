//! The table of connected client sessions and the fan-out of cache invalidations.
//!
//! Owns: per session, the channel to its connection's writer, the inodes it has been shown
//! (so an invalidation goes only to clients that may cache the item), its open files (to
//! release when it ends) and the invalidations it has not yet acknowledged.
//!
//! Invariants: a change reaches every other session holding an affected inode before the
//! changing call is answered — the reply waits for their acknowledgements, or for
//! the hub's acknowledgement wait (by default [`ACK_WAIT`]) if a client does not answer
//! (it is then logged); a session that ends
//! releases its opens and locks.
//!
//! Locks: `Hub::sessions` → one `SessionState`'s `held`, `acks`, `opens` or `locks`; never two
//! sessions' inner locks at once.

use meridian_proto::session::{Invalidation, ServerMsg};
use meridian_proto::wire::{Request, Response, encode};
use meridian_proto::{InodeId, Namespace};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a change waits for other clients to drop what it made stale, by default.
pub const ACK_WAIT: Duration = Duration::from_secs(2);

/// Inodes remembered per session before it is treated as holding everything.
const HELD_MAX: usize = 1 << 20;

/// A connected, authenticated client (what `meridian metaserver status` lists).
#[derive(Clone, Debug)]
pub struct Session {
    pub name: String,
    pub addr: SocketAddr,
    pub since: std::time::SystemTime,
}

#[derive(Default)]
struct Held {
    inodes: HashSet<InodeId>,
    all: bool,
}

impl Held {
    fn add(&mut self, ids: impl IntoIterator<Item = InodeId>) {
        if self.all {
            return;
        }
        self.inodes.extend(ids);
        if self.inodes.len() > HELD_MAX {
            self.inodes = HashSet::new();
            self.all = true;
        }
    }

    fn any(&self, items: &[Invalidation]) -> bool {
        self.all
            || items.iter().any(|i| match i {
                Invalidation::Inode(ino) => self.inodes.contains(ino),
                Invalidation::Entry { parent, .. } => self.inodes.contains(parent),
                Invalidation::Locks(_) => false, // sent to waiters only: see `Hub::wake`
            })
    }
}

/// One session's state.
pub struct SessionState {
    pub id: u64,
    pub info: Session,
    out: mpsc::UnboundedSender<Vec<u8>>,
    held: Mutex<Held>,
    acks: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    opens: Mutex<HashMap<InodeId, u32>>,
    /// Inodes this client was refused a lock on (woken once when a lock there goes), and
    /// inodes it took locks on (their waiters are woken when the session ends).
    locks: Mutex<LockInterest>,
}

#[derive(Default)]
struct LockInterest {
    waiting: HashSet<InodeId>,
    taken: HashSet<InodeId>,
}

impl SessionState {
    /// Queues a frame for the connection's writer.
    pub fn send(&self, msg: &ServerMsg) {
        match encode(msg) {
            Ok(f) => {
                let _ = self.out.send(f);
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a message for a client"),
        }
    }

    /// Notes what a successful call showed or opened.
    pub fn record(&self, req: &Request, resp: &Response) {
        if matches!(resp, Response::Err(_)) {
            return;
        }
        self.held
            .lock()
            .add(meridian_proto::session::mentions(req, resp));
        let opened = match (req, resp) {
            (Request::Open { ino, .. }, _) => Some(*ino),
            (Request::Create { .. }, Response::Attr(a) | Response::Made(a, _)) => Some(a.ino),
            _ => None,
        };
        let mut opens = self.opens.lock();
        if let Some(ino) = opened {
            *opens.entry(ino).or_insert(0) += 1;
        }
        if let Request::Release { ino } = req
            && let Some(n) = opens.get_mut(ino)
        {
            *n -= 1;
            if *n == 0 {
                opens.remove(ino);
            }
        }
    }

    /// The client acknowledged invalidation `seq`.
    pub fn acked(&self, seq: u64) {
        if let Some(tx) = self.acks.lock().remove(&seq) {
            let _ = tx.send(());
        }
    }
}

/// Every session of one metaserver.
pub struct Hub {
    sessions: Mutex<HashMap<u64, Arc<SessionState>>>,
    next_seq: AtomicU64,
    /// The namespace blocks on network I/O (PostgreSQL): calls run on the blocking pool
    /// rather than on the connection's task.
    pub blocking: std::sync::atomic::AtomicBool,
    /// Of the calls tried in place over such a namespace (see [`super::server`]): how
    /// many were answered there, and how many gave up and ran on the blocking pool.
    pub in_place: [AtomicU64; 2],
    /// Calls that make or remove names, running or recently started (see [`super::replay`]).
    pub running: super::replay::Running,
    /// How long a change waits for other clients' acknowledgements.
    ack_wait: Duration,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(ACK_WAIT)
    }
}

impl Hub {
    /// A hub whose changes wait at most `ack_wait` for other clients' acknowledgements.
    pub fn new(ack_wait: Duration) -> Hub {
        Hub {
            sessions: Default::default(),
            next_seq: Default::default(),
            blocking: Default::default(),
            in_place: Default::default(),
            running: Default::default(),
            ack_wait,
        }
    }

    /// Registers a session; frames for it go to `out`.
    pub fn join(
        &self,
        id: u64,
        info: Session,
        out: mpsc::UnboundedSender<Vec<u8>>,
    ) -> Arc<SessionState> {
        let s = Arc::new(SessionState {
            id,
            info,
            out,
            held: Default::default(),
            acks: Default::default(),
            opens: Default::default(),
            locks: Default::default(),
        });
        self.sessions.lock().insert(id, s.clone());
        s
    }

    /// Ends a session: forgets it, answers its pending acknowledgements, and releases its
    /// open files and locks in the namespace.
    pub fn leave(&self, s: &SessionState, ns: &dyn Namespace) {
        self.sessions.lock().remove(&s.id);
        s.acks.lock().clear();
        let opens: Vec<(InodeId, u32)> = s.opens.lock().drain().collect();
        for (ino, n) in opens {
            for _ in 0..n {
                if let Err(e) = ns.release(ino) {
                    tracing::warn!(ino = ino.0, error = %e, "releasing an ended session's open file");
                }
            }
        }
        if let Err(e) = ns.end_session(s.id) {
            tracing::warn!(error = %e, "releasing an ended session's locks");
        }
        let taken: Vec<InodeId> = s.locks.lock().taken.drain().collect();
        for ino in taken {
            self.wake(ino);
        }
    }

    /// Notes the outcome of a lock request of session `s` on `ino`: refused, it waits for
    /// a wake-up; granted (or a release), other waiters there are woken at once.
    pub fn lock_outcome(&self, s: &SessionState, ino: InodeId, unlock: bool, resp: &Response) {
        match resp {
            Response::Err(meridian_proto::MetaError::WouldBlock) => {
                s.locks.lock().waiting.insert(ino);
            }
            Response::Err(_) => {}
            _ => {
                if !unlock {
                    s.locks.lock().taken.insert(ino);
                }
                // A release, or a lock changed in place (a write lock made a read lock, a
                // range narrowed), may let a waiter in.
                self.wake(ino);
            }
        }
    }

    /// Tells every session waiting for a lock on `ino` to try again (once; not waited for:
    /// a waiter that never hears it polls anyway).
    pub fn wake(&self, ino: InodeId) {
        let waiters: Vec<Arc<SessionState>> = self
            .sessions
            .lock()
            .values()
            .filter(|s| s.locks.lock().waiting.remove(&ino))
            .cloned()
            .collect();
        for s in waiters {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            s.send(&ServerMsg::Invalidate {
                seq,
                items: vec![Invalidation::Locks(ino)],
            });
        }
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.sessions
            .lock()
            .values()
            .map(|s| s.info.clone())
            .collect()
    }

    /// The sessions other than `from` that may cache one of `items`.
    pub fn holders(&self, from: u64, items: &[Invalidation]) -> Vec<Arc<SessionState>> {
        self.sessions
            .lock()
            .values()
            .filter(|s| s.id != from && s.held.lock().any(items))
            .cloned()
            .collect()
    }

    /// Sends `items` to each of `targets` and waits (at most the acknowledgement wait) until each has
    /// acknowledged.
    pub async fn invalidate(&self, targets: Vec<Arc<SessionState>>, items: Vec<Invalidation>) {
        let mut waits = Vec::with_capacity(targets.len());
        for t in targets {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            t.acks.lock().insert(seq, tx);
            t.send(&ServerMsg::Invalidate {
                seq,
                items: items.clone(),
            });
            waits.push((t, rx));
        }
        for (t, rx) in waits {
            if tokio::time::timeout(self.ack_wait, rx).await.is_err() {
                tracing::warn!(
                    client = t.info.name,
                    addr = %t.info.addr,
                    "a client did not acknowledge an invalidation within {:?}; going on",
                    self.ack_wait
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::MetaError;
    use meridian_proto::wire::Decoder;

    fn session(hub: &Hub, id: u64) -> (Arc<SessionState>, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let info = Session {
            name: format!("ws{id}"),
            addr: "127.0.0.1:1".parse().unwrap(),
            since: std::time::SystemTime::now(),
        };
        (hub.join(id, info, tx), rx)
    }

    /// The lock wake-ups a session was sent.
    fn wakes(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<InodeId> {
        let mut dec = Decoder::default();
        while let Ok(frame) = rx.try_recv() {
            dec.push(&frame);
        }
        let mut out = Vec::new();
        while let Some(ServerMsg::Invalidate { items, .. }) = dec.decode_next().unwrap() {
            out.extend(items.iter().filter_map(|i| match i {
                Invalidation::Locks(ino) => Some(*ino),
                _ => None,
            }));
        }
        out
    }

    #[test]
    fn a_refused_session_is_woken_once_when_a_lock_goes() {
        let hub = Hub::default();
        let (a, mut ra) = session(&hub, 1);
        let (b, mut rb) = session(&hub, 2);
        let (c, mut rc) = session(&hub, 3);
        let (f, g) = (InodeId(10), InodeId(11));
        hub.lock_outcome(&a, f, false, &Response::Unit);
        hub.lock_outcome(&b, f, false, &Response::Err(MetaError::WouldBlock));
        hub.lock_outcome(&c, g, false, &Response::Err(MetaError::WouldBlock));
        assert!(
            wakes(&mut rb).is_empty(),
            "not woken before anything changed"
        );
        hub.lock_outcome(&a, f, true, &Response::Unit);
        assert_eq!(wakes(&mut rb), vec![f], "the waiter on f is woken");
        assert!(
            wakes(&mut rc).is_empty(),
            "a waiter on another inode is not"
        );
        hub.lock_outcome(&a, f, true, &Response::Unit);
        assert!(
            wakes(&mut rb).is_empty(),
            "a wake-up is sent once per refusal"
        );
        assert!(wakes(&mut ra).is_empty());

        // A session that ends wakes the waiters on what it had locked.
        hub.lock_outcome(&a, g, false, &Response::Unit);
        assert_eq!(wakes(&mut rc), vec![g]);
        hub.lock_outcome(&c, g, false, &Response::Err(MetaError::WouldBlock));
        let ns = crate::Meta::open(crate::MemStore::new(), crate::MetaConfig::default()).unwrap();
        hub.leave(&a, &ns);
        assert_eq!(
            wakes(&mut rc),
            vec![g],
            "woken when the holder's session ended"
        );
    }
}
