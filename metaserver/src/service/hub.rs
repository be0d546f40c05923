//! The table of connected client sessions and the fan-out of cache invalidations.
//!
//! Owns: per session, the channel to its connection's writer, the inodes it has been shown
//! (so an invalidation goes only to clients that may cache the item), its open files (to
//! release when it ends) and the invalidations it has not yet acknowledged.
//!
//! Invariants: a change reaches every other session holding an affected inode before the
//! changing call is answered — the reply waits for their acknowledgements, or for
//! [`ACK_WAIT`] if a client does not answer (it is then logged); a session that ends
//! releases its opens and locks.
//!
//! Locks: `Hub::sessions` → one `SessionState`'s `held`, `acks` or `opens`; never two
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

/// How long a change waits for other clients to drop what it made stale.
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
#[derive(Default)]
pub struct Hub {
    sessions: Mutex<HashMap<u64, Arc<SessionState>>>,
    next_seq: AtomicU64,
    /// The namespace blocks on network I/O (PostgreSQL): calls run on the blocking pool
    /// rather than on the connection's task.
    pub blocking: std::sync::atomic::AtomicBool,
    /// Calls that make or remove names, running or recently started (see [`super::replay`]).
    pub running: super::replay::Running,
}

impl Hub {
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

    /// Sends `items` to each of `targets` and waits (at most [`ACK_WAIT`]) until each has
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
            if tokio::time::timeout(ACK_WAIT, rx).await.is_err() {
                tracing::warn!(
                    client = t.info.name,
                    addr = %t.info.addr,
                    "a client did not acknowledge an invalidation within {ACK_WAIT:?}; going on"
                );
            }
        }
    }
}
