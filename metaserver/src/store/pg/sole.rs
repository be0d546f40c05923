//! Sole mode: a metaserver alone on its PostgreSQL database writes from what it knows.
//!
//! Every write transaction normally reads the rows it decides on from the database first
//! (one waited round trip, a third of a create's time on a site with one metaserver). But
//! while one process is the database's only writer, every row it has read or written since
//! is still what the database holds, so it can decide from memory and send only the writes
//! (with the COMMIT, not waited for: see [`super`]).
//!
//! Who may write is decided by PostgreSQL's lock manager, never by time:
//! - The sole writer's session holds the advisory lock [`SOLE_LOCK`] exclusively
//!   (session-level: it outlives transactions and ends with the connection).
//! - Every other write transaction first takes [`SOLE_LOCK`] shared, for the transaction.
//!   It tries without waiting; if the lock is held it rolls back, sends a `NOTIFY` on
//!   [`CHANNEL`] and waits for the lock. The sole writer listens on [`CHANNEL`] (a
//!   connection of its own) and gives the lock up at once: after its unanswered commits,
//!   on the same connection, so the waiter sees them.
//! - A store takes the lock (`pg_try_advisory_lock`, before a write) only while its
//!   listening connection is up, and not within [`QUIET`] of a request. A waiting writer
//!   asks again every [`ASK_EVERY`] (a request sent while the holder's listening connection
//!   was being made again is lost). Its listening
//!   connection failing gives the lock up; its database connection failing ends its
//!   session and with it the lock.
//!
//! Invariants of [`Known`] (held in the connection, dropped with it or with the lock):
//! - Every row in `rows` has the value the database holds (`None`: absent), and every key
//!   under a prefix in `complete` that `rows` does not name is absent.
//! - It is updated only from what a transaction of this session read from the database,
//!   and, when a write transaction's commit is sent, from its writes.
//! - It is bounded: past [`MAX_ROWS`] rows it is emptied (a later miss reads the database).
//!
//! Locks: the store's connection lock is taken by [`Listener`]'s thread to give the lock
//! up; it takes no other lock inside it.

use super::Key;
use super::tls::Target;
use super::txn::key_range;
use crate::store::{Pair, prefix_end};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio_postgres::AsyncMessage;

/// The advisory lock the sole writer holds exclusively (`meridiao` in ASCII: the write
/// lock's neighbour).
pub const SOLE_LOCK: i64 = super::WRITE_LOCK + 1;
/// The channel on which a writer asks the sole writer to give its lock up.
pub const CHANNEL: &str = "meridian_sole";
/// After a request, the store does not take the lock again for this long.
pub const QUIET: Duration = Duration::from_secs(5);
/// A failed attempt to take the lock is not repeated for this long.
pub const RETRY: Duration = Duration::from_secs(1);
/// A writer waiting for the lock asks the holder again after this long (a request can be
/// lost while the holder's listening connection is made again).
pub const ASK_EVERY: Duration = Duration::from_millis(500);
/// A directory with up to this many entries is read whole at its first lookup in sole mode
/// (bigger ones are remembered as such and read name by name).
pub const LISTING: usize = 4096;
/// The most rows and complete prefixes [`Known`] holds.
pub const MAX_ROWS: usize = 500_000;

/// What the database holds, as far as the sole writer knows (see the module's invariants).
#[derive(Default)]
pub(super) struct Known {
    rows: BTreeMap<Key, Option<Vec<u8>>>,
    complete: BTreeSet<Key>,
    /// Prefixes with more than [`LISTING`] rows when last listed (not listed again).
    big: BTreeSet<Key>,
}

impl Known {
    /// The value of `k`, if known.
    pub(super) fn get(&self, k: &Key) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.rows.get(k) {
            return Some(v.clone());
        }
        self.covered(k).then_some(None)
    }

    /// Whether every row of table `t` is known.
    pub(super) fn whole(&self, t: i16) -> bool {
        self.complete.contains(&(t, Vec::new()))
    }

    /// The complete prefix of table `t` that `key` starts with, if any (the greatest one
    /// not above it: complete prefixes of one table do not nest but for the whole table's).
    fn complete_prefix(&self, t: i16, key: &[u8]) -> Option<&[u8]> {
        let (pt, prefix) = self.complete.range(..=(t, key.to_vec())).next_back()?;
        (*pt == t && key.starts_with(prefix)).then_some(prefix.as_slice())
    }

    /// Whether `k` lies under a complete prefix.
    fn covered(&self, k: &Key) -> bool {
        self.complete_prefix(k.0, &k.1).is_some()
    }

    /// Whether every row of table `t` in `[start, end)` is known.
    pub(super) fn covers(&self, t: i16, start: &[u8], end: Option<&[u8]>) -> bool {
        let Some(prefix) = self.complete_prefix(t, start) else {
            return false;
        };
        match (end, prefix_end(prefix)) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(e), Some(l)) => e <= l.as_slice(),
        }
    }

    /// The rows in `[start, end)` of table `t`, if every row there is known.
    pub(super) fn scan(&self, t: i16, start: &[u8], end: Option<&[u8]>) -> Option<Vec<Pair>> {
        if !self.covers(t, start, end) {
            return None;
        }
        let rows = self.rows.range(key_range(t, start, end));
        Some(
            rows.filter_map(|((_, k), v)| Some((k.clone(), v.clone()?)))
                .collect(),
        )
    }

    /// Records a value read from the database or committed.
    pub(super) fn learn(&mut self, k: Key, v: Option<Vec<u8>>) {
        self.rows.insert(k, v);
    }

    /// Records that table `t` has more than [`LISTING`] rows under `prefix`.
    pub(super) fn big(&mut self, t: i16, prefix: Vec<u8>) {
        self.big.insert((t, prefix));
    }

    /// Whether a listing of `prefix` came back with more than [`LISTING`] rows.
    pub(super) fn is_big(&self, t: i16, prefix: &[u8]) -> bool {
        self.big.contains(&(t, prefix.to_vec()))
    }

    /// Records that every row of table `t` under `prefix` is known.
    pub(super) fn complete(&mut self, t: i16, prefix: Vec<u8>) {
        self.complete.insert((t, prefix));
    }

    /// Empties it if it grew past [`MAX_ROWS`].
    pub(super) fn bound(&mut self) {
        if self.rows.len() + self.complete.len() + self.big.len() > MAX_ROWS {
            *self = Known::default();
        }
    }
}

/// Whether the store may take the lock now, shared between the store and its listener.
pub(super) struct Policy {
    /// The listening connection is up.
    pub listening: AtomicBool,
    /// No attempt before this instant.
    pub next_try: Mutex<Instant>,
    /// Sole mode is wanted at all.
    pub enabled: bool,
    /// [`QUIET`] and [`RETRY`] in milliseconds (tests shorten them).
    pub quiet_ms: AtomicU64,
    pub retry_ms: AtomicU64,
    /// Requests to ignore (tests: a request lost on its way).
    pub deaf: AtomicU64,
}

impl Policy {
    pub(super) fn new(enabled: bool) -> Policy {
        Policy {
            listening: AtomicBool::new(false),
            next_try: Mutex::new(Instant::now()),
            enabled,
            quiet_ms: AtomicU64::new(QUIET.as_millis() as u64),
            retry_ms: AtomicU64::new(RETRY.as_millis() as u64),
            deaf: AtomicU64::new(0),
        }
    }

    /// No attempt for [`QUIET`] (after a request).
    pub(super) fn quiet(&self) {
        self.hold_off(Duration::from_millis(self.quiet_ms.load(Ordering::Relaxed)));
    }

    /// No attempt for [`RETRY`] (after a failed one).
    pub(super) fn retry(&self) {
        self.hold_off(Duration::from_millis(self.retry_ms.load(Ordering::Relaxed)));
    }

    /// Whether to try taking the lock now.
    pub(super) fn may_try(&self) -> bool {
        self.enabled
            && self.listening.load(Ordering::Acquire)
            && Instant::now() >= *self.next_try.lock()
    }

    /// No attempt for `wait`.
    pub(super) fn hold_off(&self, wait: Duration) {
        let mut n = self.next_try.lock();
        *n = (*n).max(Instant::now() + wait);
    }
}

/// The statement that asks the sole writer to give its lock up (in a transaction of its
/// own: a `NOTIFY` is delivered when its transaction commits).
pub(super) fn request() -> String {
    format!("SELECT pg_notify('{CHANNEL}', '')")
}

/// A thread listening on [`CHANNEL`] for the store's connection: on a request (or when it
/// cannot listen) it calls `give_up`. It ends when `alive` can no longer be upgraded.
pub(super) struct Listener;

impl Listener {
    pub(super) fn start<T: Send + Sync + 'static>(
        url: String,
        policy: Arc<Policy>,
        alive: Weak<T>,
        give_up: fn(&T),
    ) {
        let spawned = std::thread::Builder::new()
            .name("meridian-pg-sole".into())
            .spawn(move || listen_loop(&url, &policy, &alive, give_up));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "postgresql: no listener thread; sole mode off");
        }
    }
}

fn listen_loop<T>(url: &str, policy: &Policy, alive: &Weak<T>, give_up: fn(&T)) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    while alive.strong_count() > 0 {
        let connected = rt.block_on(async {
            let target = Target::parse(url).ok()?;
            let (client, conn) = target.connect().await.ok()?;
            Some((client, conn))
        });
        let Some((client, mut conn)) = connected else {
            std::thread::sleep(RETRY);
            continue;
        };
        let subscribed = rt.block_on(async {
            let sql = format!("LISTEN {CHANNEL}");
            let listen = client.batch_execute(&sql);
            let drive = async {
                while let Some(Ok(_)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {}
            };
            tokio::select! {
                r = listen => r.is_ok(),
                _ = drive => false,
            }
        });
        if subscribed {
            policy.listening.store(true, Ordering::Release);
            tracing::debug!("postgresql: listening for requests of the sole-writer lock");
        }
        while policy.listening.load(Ordering::Acquire) {
            let next = rt.block_on(async {
                let msg = std::future::poll_fn(|cx| conn.poll_message(cx));
                tokio::time::timeout(Duration::from_secs(1), msg).await
            });
            let Some(t) = alive.upgrade() else { return };
            match next {
                Err(_) => continue, // a second passed: check the store is still alive
                Ok(Some(Ok(AsyncMessage::Notification(_))))
                    if policy.deaf.load(Ordering::Relaxed) > 0 =>
                {
                    policy.deaf.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(Some(Ok(AsyncMessage::Notification(_)))) => {
                    policy.quiet();
                    give_up(&t);
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => break, // the connection failed or closed
            }
        }
        // Unable to hear requests: the lock must not be held.
        policy.listening.store(false, Ordering::Release);
        if let Some(t) = alive.upgrade() {
            give_up(&t);
        }
        drop(client);
        std::thread::sleep(RETRY);
    }
}
