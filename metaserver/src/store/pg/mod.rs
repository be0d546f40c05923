//! A [`Store`] in PostgreSQL: for sites that outgrow one machine, and for several
//! metaserver processes serving one site over one database.
//!
//! Owns: one connection (statements prepared once, re-made after the connection is lost),
//! the schema — one table `meridian_kv (tbl smallint, k bytea, v bytea, primary key
//! (tbl, k))`, where `bytea` orders bytewise as the store contract's scans need.
//!
//! Invariants:
//! - Write transactions are serialized across every process using the database: each
//!   takes the transaction-scoped advisory lock [`WRITE_LOCK`] first (so the namespace's
//!   read-modify-write transactions, inode allocation included, never interleave), then
//!   reads the latest committed state.
//! - Read transactions are REPEATABLE READ snapshots.
//! - `Deferred` writes commit with `synchronous_commit = off`, the session's setting
//!   (PostgreSQL's own deferred
//!   durability: a crash of the database server loses at most the last few hundred
//!   milliseconds of them, whole transactions only); `sync` commits a transaction with
//!   `synchronous_commit = on`, which flushes the WAL up to it and so every earlier one.
//! - Round trips are few (see [`txn`]): a transaction's opening statements travel with its
//!   first query, its writes are buffered and sent with the COMMIT in one round trip, and
//!   the COMMIT of a read (or the ROLLBACK of a failed write) is sent without waiting.
//! - A `Deferred` write returns once its COMMIT is written to the socket (all of it: a
//!   write the socket's buffer cannot take at once waits until it can), not answered.
//!   Everything later on this store is sent after it on the same connection, which
//!   the database serves in order, so it sees the change without waiting for its answer
//!   (the next write is sent while earlier ones are still being applied: writers keep
//!   the database busy instead of taking turns with it); other processes see it one round
//!   trip later. Every drive of the connection takes the answers that have come
//!   (`Driver::drive`); a call waits for them all only past `MAX_UNANSWERED`
//!   (`Driver::reap`). Only a failure of the
//!   connection or the server makes a sent COMMIT fail (one advisory lock, no
//!   constraints a buffered write can break): that is the database crash deferred
//!   durability allows, and it is handled as one — the change is lost, logged, the next
//!   call fails and the connection is made afresh.
//! - The SQL is plain (no extensions): it runs on PostgreSQL-compatible distributed engines
//!   that implement advisory locks — see docs/operations.md. Notifications are optional:
//!   a connection to a database that refuses `pg_notify` ([`probe_notify`]) announces
//!   nothing and the store never enters sole mode.
//!
//! - While the store is the database's only writer it works in sole mode ([`sole`]): it
//!   holds the session-level advisory lock [`sole::SOLE_LOCK`], reads what it already knows
//!   from memory, and its write transactions take no lock; every other write transaction
//!   takes that lock shared first (and asks the sole writer to give it up).
//!
//! - A call tried in place ([`nowait`]) takes `conn` only if it is free, never connects,
//!   and gives up rather than wait past its deadline or for its commit; it gives up before
//!   it sends a change, so the call can run again elsewhere. A transaction that read
//!   nothing (sole mode's usual create) sends its writes as one statement, committed as it
//!   runs, with no BEGIN or COMMIT.
//!
//! Locks: `conn` for the whole of one transaction.

#[doc(hidden)]
pub mod conninfo;
mod driver;
#[doc(hidden)]
pub mod listen;
pub mod sole;
pub mod testing;
#[cfg(test)]
mod tests_nowait;
#[cfg(test)]
mod tests_sole;
#[cfg(test)]
mod tests_tls;
pub mod tls;
mod txn;

use super::{Durability, ReadTxn, Store, Table, WriteTxn, nowait};
use driver::Driver;
use meridian_proto::{MetaError, MetaResult};
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_postgres::{Client, Statement};
use txn::PgTxn;

/// The default longest wait for an answer of the database ([`PgStore::connect_with`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock id every writer takes (`meridian` in ASCII, as a number).
pub const WRITE_LOCK: i64 = 0x6d65_7269_6469_616e;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS meridian_kv (
    tbl smallint NOT NULL,
    k bytea NOT NULL,
    v bytea NOT NULL,
    PRIMARY KEY (tbl, k)
)";

/// The opening statements of a write transaction, for `Deferred` and `Immediate` writes.
struct Begin {
    /// In sole mode.
    sole: String,
    /// Otherwise: trying the sole writer's lock shared, then the write lock.
    tried: String,
    /// Otherwise, once the sole writer was asked for its lock: waiting for it a while at a
    /// time, asking again in between (see `txn`).
    waiting: String,
}

static BEGINS: std::sync::LazyLock<[Begin; 2]> = std::sync::LazyLock::new(|| {
    // The session's synchronous_commit is off.
    ["", "; SET LOCAL synchronous_commit = on"].map(|sync| {
        let (s, w) = (sole::SOLE_LOCK, WRITE_LOCK);
        let lock = format!("SELECT pg_advisory_xact_lock({w}){sync}");
        let ask = sole::ASK_EVERY.as_millis();
        Begin {
            sole: format!("BEGIN{sync}"),
            tried: format!("BEGIN; SELECT pg_try_advisory_xact_lock_shared({s}); {lock}"),
            waiting: format!(
                "BEGIN; SET LOCAL lock_timeout = {ask}; \
                 SELECT pg_advisory_xact_lock_shared({s}); SET LOCAL lock_timeout = 0; {lock}"
            ),
        }
    })
});

/// A key: table and key bytes.
type Key = (i16, Vec<u8>);

/// The statements every transaction uses, prepared once per connection.
struct Stmts {
    get: Statement,
    /// Arrays of (tbl, k) → (tbl, k, v or NULL) for each.
    get_many: Statement,
    scan_to: Statement,
    scan_all: Statement,
    /// Upserts arrays of (tbl, k, v) and deletes arrays of (tbl, k), in one statement (the
    /// keys are distinct: a transaction's writes hold one value or deletion per key).
    write_many: Statement,
    /// `write_many`'s halves, for a transaction that only upserts (a create) or only
    /// deletes: the empty half costs the database about as much as two rows.
    upsert_many: Statement,
    delete_many: Statement,
}

type PgFuture<T> = Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send>>;

struct Conn {
    driver: Driver,
    client: Arc<Client>,
    stmts: Stmts,
    /// What the database holds, while this session holds [`sole::SOLE_LOCK`].
    known: Option<sole::Known>,
    /// The database delivers notifications (`pg_notify` works: [`probe_notify`]).
    notify: bool,
}

/// The store over one PostgreSQL database.
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    conn: Mutex<Option<Conn>>,
    timeout: Duration,
    policy: Arc<sole::Policy>,
}

fn pg(e: tokio_postgres::Error) -> MetaError {
    MetaError::Store(format!("postgresql: {}", describe(&e)))
}

/// What went wrong, in full: the database's own message (tokio-postgres shows only
/// "db error"), or the error with its causes (a TLS handshake's reason, say).
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        for (what, said) in [("detail", db.detail()), ("hint", db.hint())] {
            if let Some(said) = said {
                text += &format!("; {what}: {said}");
            }
        }
        return text;
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    text
}

impl Conn {
    fn open(url: &str, timeout: Duration) -> MetaResult<Conn> {
        let (client, mut driver) = driver::connect(&tls::Target::parse(url)?, timeout)?;
        driver.run(client.batch_execute(SCHEMA))?;
        // `Deferred` is the common case; `Immediate` writes and `sync` turn it on locally.
        driver.run(client.batch_execute("SET synchronous_commit = off"))?;
        // Every statement here is a key lookup or a key-range scan on the primary key, the
        // same plan whatever the values: a generic plan saves planning each execution
        // (PostgreSQL re-plans `unnest` arrays for every call otherwise, measured at a
        // quarter of the database's CPU per create).
        // An engine without the setting (PostgreSQL-compatible, not PostgreSQL) plans as it
        // does.
        // A generic plan is made once, from the statistics of the moment: made while the
        // table was small it joined the keys of a write to a whole-table scan, and kept
        // doing so as the table grew (a removal took milliseconds until the connection was
        // made again). Turning the other strategies off leaves the primary key's index to
        // every plan, whatever the statistics.
        for setting in [
            "plan_cache_mode = force_generic_plan",
            "enable_seqscan = off",
            "enable_hashjoin = off",
            "enable_mergejoin = off",
        ] {
            if let Err(e) = driver.run(client.batch_execute(&format!("SET {setting}"))) {
                tracing::info!(error = %e, "postgresql: {setting} not set");
            }
        }
        let notify = probe_notify(&mut driver, &client)?;
        let prepare = |d: &mut Driver, sql: &str| d.run(client.prepare(sql));
        let stmts = Stmts {
            get: prepare(
                &mut driver,
                "SELECT v FROM meridian_kv WHERE tbl = $1 AND k = $2",
            )?,
            get_many: prepare(
                &mut driver,
                "SELECT w.tbl, w.k, (SELECT m.v FROM meridian_kv m WHERE m.tbl = w.tbl AND m.k = w.k) \
                 FROM unnest($1::smallint[], $2::bytea[]) AS w(tbl, k)",
            )?,
            scan_to: prepare(
                &mut driver,
                "SELECT k, v FROM meridian_kv WHERE tbl = $1 AND k >= $2 AND k < $3 \
                 ORDER BY k LIMIT $4",
            )?,
            scan_all: prepare(
                &mut driver,
                "SELECT k, v FROM meridian_kv WHERE tbl = $1 AND k >= $2 ORDER BY k LIMIT $3",
            )?,
            write_many: prepare(
                &mut driver,
                "WITH gone AS (DELETE FROM meridian_kv \
                   USING unnest($4::smallint[], $5::bytea[]) AS d(tbl, k) \
                   WHERE meridian_kv.tbl = d.tbl AND meridian_kv.k = d.k) \
                 INSERT INTO meridian_kv (tbl, k, v) \
                 SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bytea[]) \
                 ON CONFLICT (tbl, k) DO UPDATE SET v = excluded.v",
            )?,
            upsert_many: prepare(
                &mut driver,
                "INSERT INTO meridian_kv (tbl, k, v) \
                 SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bytea[]) \
                 ON CONFLICT (tbl, k) DO UPDATE SET v = excluded.v",
            )?,
            delete_many: prepare(
                &mut driver,
                "DELETE FROM meridian_kv USING unnest($1::smallint[], $2::bytea[]) AS d(tbl, k) \
                 WHERE meridian_kv.tbl = d.tbl AND meridian_kv.k = d.k",
            )?,
        };
        Ok(Conn {
            driver,
            client: Arc::new(client),
            stmts,
            known: None,
            notify,
        })
    }
}

/// Whether the database takes `pg_notify` (a notification on a channel no one listens
/// to). Some PostgreSQL-compatible engines lack LISTEN/NOTIFY, or have it switched off:
/// there a metaserver announces nothing (the others poll the change feed) and never
/// enters sole mode, whose lock is handed over by notification. A notification that
/// failed inside a write's transaction would roll the write back after it was
/// acknowledged.
fn probe_notify(driver: &mut Driver, client: &Client) -> MetaResult<bool> {
    let probe = format!("SELECT pg_notify('{}', '')", listen::PROBE);
    let mut probe = std::pin::pin!(client.batch_execute(&probe));
    match driver.drive(|cx| probe.as_mut().poll(cx))? {
        Ok(()) => Ok(true),
        Err(e) if e.as_db_error().is_some() => {
            tracing::warn!(
                error = %describe(&e),
                "postgresql: the database does not deliver notifications; other \
                 metaservers' changes are seen at the change feed's next poll \
                 (feed_poll_ms), and sole mode is off"
            );
            Ok(false)
        }
        Err(e) => Err(pg(e)),
    }
}

/// Runs one statement batch on a fresh connection (tests and administration).
pub fn execute(url: &str, sql: &str) -> MetaResult<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| MetaError::Store(format!("postgresql runtime: {e}")))?;
    rt.block_on(async {
        let target = tls::Target::parse(url)?;
        let (client, connection) = target.connect().await.map_err(MetaError::Store)?;
        let conn = tokio::spawn(connection);
        let out = client.batch_execute(sql).await.map_err(pg);
        drop(client);
        let _ = conn.await;
        out
    })
}

impl PgStore {
    /// Connects with a libpq-style URL (`postgresql://user@host:port/db`) and creates the
    /// table if needed.
    pub fn connect(url: &str) -> MetaResult<PgStore> {
        PgStore::connect_with(url, DEFAULT_TIMEOUT)
    }

    /// As [`PgStore::connect`], with `timeout` the longest wait for any answer of the
    /// database (connecting included): past it the call fails and the connection is made
    /// again at the next one.
    pub fn connect_with(url: &str, timeout: Duration) -> MetaResult<PgStore> {
        PgStore::connect_opts(url, timeout, true)
    }

    /// As [`PgStore::connect_with`]; `sole` allows sole mode ([`sole`]) when this store is
    /// the database's only writer.
    pub fn connect_opts(url: &str, timeout: Duration, sole: bool) -> MetaResult<PgStore> {
        let conn = Conn::open(url, timeout)?;
        // The sole writer's lock is asked for by notification.
        let sole = sole && conn.notify;
        let inner = Arc::new(Inner {
            url: url.to_string(),
            conn: Mutex::new(Some(conn)),
            timeout,
            policy: Arc::new(sole::Policy::new(sole)),
        });
        if sole {
            let (policy, weak) = (inner.policy.clone(), Arc::downgrade(&inner));
            sole::Listener::start(url.to_string(), policy, weak, Inner::give_up);
        }
        Ok(PgStore { inner })
    }

    /// Whether the store is in sole mode now (tests).
    #[cfg(test)]
    pub(crate) fn is_sole(&self) -> bool {
        self.inner
            .conn
            .lock()
            .as_ref()
            .is_some_and(|c| c.known.is_some())
    }

    /// Shortens sole mode's waits (tests): no new attempt for `quiet` after a request, and
    /// for `retry` after a failed one.
    #[cfg(test)]
    pub(crate) fn sole_timing(&self, quiet: Duration, retry: Duration) {
        let p = &self.inner.policy;
        p.quiet_ms
            .store(quiet.as_millis() as u64, Ordering::Relaxed);
        p.retry_ms
            .store(retry.as_millis() as u64, Ordering::Relaxed);
    }

    /// Makes the store's listener ignore the next `n` requests to give the lock up (tests).
    #[cfg(test)]
    pub(crate) fn ignore_requests(&self, n: u64) {
        self.inner.policy.deaf.store(n, Ordering::Relaxed);
    }

    /// Waits up to `wait` for the store's listener to listen (tests: sole mode is taken
    /// only then).
    #[cfg(test)]
    pub(crate) fn wait_listening(&self, wait: Duration) -> bool {
        let end = std::time::Instant::now() + wait;
        while !self.inner.policy.listening.load(Ordering::Acquire) {
            if std::time::Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl Inner {
    /// Runs `f` on the connection, first connecting again if the last one was lost, and
    /// first reporting a deferred commit that failed.
    /// A call tried in place ([`nowait`]) gives up rather than wait for the connection's
    /// lock or connect.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> MetaResult<T>) -> MetaResult<T> {
        let mut guard = match nowait::trying() {
            true => match self.conn.try_lock() {
                Some(g) if g.as_ref().is_some_and(|c| !c.driver.closed) => g,
                _ => return nowait::give_up().map(|()| unreachable!("trying")),
            },
            false => self.conn.lock(),
        };
        if let Some(c) = guard.as_mut() {
            c.driver.reap()?;
        }
        if guard.as_ref().is_none_or(|c| c.driver.closed) {
            *guard = None;
            *guard = Some(Conn::open(&self.url, self.timeout)?);
            tracing::info!("postgresql: connected again");
        }
        f(guard.as_mut().expect("connected above"))
    }

    /// Tries to take the sole writer's lock (between transactions).
    fn try_sole(&self, conn: &mut Conn) -> MetaResult<()> {
        let row = conn.driver.run(
            conn.client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&sole::SOLE_LOCK]),
        )?;
        if row.get::<_, bool>(0) {
            conn.known = Some(sole::Known::default());
            tracing::info!("postgresql: the only writer; working from what it knows (sole mode)");
        } else {
            self.policy.retry();
        }
        Ok(())
    }

    /// Gives the sole writer's lock up, if held: another process wants to write, or this
    /// one can no longer hear such requests. The unlock follows the unanswered commits on
    /// the connection, so whoever takes the lock next sees them.
    fn give_up(&self) {
        let mut guard = self.conn.lock();
        let Some(conn) = guard.as_mut().filter(|c| c.known.is_some()) else {
            return;
        };
        conn.known = None;
        let unlock = conn
            .client
            .query_one("SELECT pg_advisory_unlock($1)", &[&sole::SOLE_LOCK]);
        match conn.driver.run(unlock) {
            Ok(_) => tracing::info!("postgresql: gave the sole writer's lock up"),
            Err(e) => {
                // The connection goes, and the session's lock with it.
                tracing::warn!(error = %e, "postgresql: giving the sole writer's lock up");
                conn.driver.closed = true;
            }
        }
    }
}

impl Store for PgStore {
    fn read<T>(&self, f: impl FnOnce(&dyn ReadTxn) -> MetaResult<T>) -> MetaResult<T> {
        self.inner.with_conn(|conn| {
            let txn = PgTxn::new(
                conn,
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                None,
                None,
            );
            let out = f(&txn);
            txn.forget();
            out
        })
    }

    fn write_with<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut dyn WriteTxn) -> MetaResult<T>,
    ) -> MetaResult<T> {
        let inner = &self.inner;
        inner.with_conn(|conn| {
            if conn.known.is_none() && inner.policy.may_try() {
                inner.try_sole(conn)?;
            }
            let b = &BEGINS[(durability == Durability::Immediate) as usize];
            let mut txn = match &conn.known {
                Some(k) => {
                    let preload = (!k.whole(txn::tbl(Table::Meta))).then_some(Table::Meta);
                    PgTxn::new(conn, &b.sole, preload, None)
                }
                None => PgTxn::new(conn, &b.tried, Some(Table::Meta), Some(&b.waiting)),
            };
            match f(&mut txn) {
                Ok(v) => txn.commit(durability == Durability::Immediate).map(|()| v),
                Err(e) => {
                    txn.forget();
                    Err(e)
                }
            }
        })
    }

    fn shared(&self) -> bool {
        true
    }

    /// In sole mode, with the connection free and open: most calls then send their
    /// writes and wait for nothing.
    fn answers_at_once(&self) -> bool {
        self.inner.conn.try_lock().is_some_and(|c| {
            c.as_ref()
                .is_some_and(|c| c.known.is_some() && !c.driver.closed)
        })
    }

    fn sync(&self) -> MetaResult<()> {
        self.inner.with_conn(|conn| {
            conn.driver.run(conn.client.batch_execute(
                "BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); COMMIT",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_contract_on_postgresql() {
        let c = testing::Cluster::start();
        let shared = PgStore::connect_opts(&c.url(), DEFAULT_TIMEOUT, false).unwrap();
        super::super::suite::run_all(&shared);
        assert!(!shared.is_sole());
    }

    /// Every statement finds its rows through the primary key whatever the statistics: a
    /// store that connected while the table was empty (its generic plans made then) does
    /// not scan the whole table once it has grown — it did, for the keys a write deletes.
    #[test]
    fn a_store_made_on_an_empty_table_never_scans_the_whole_table() {
        let c = testing::Cluster::start();
        let store = PgStore::connect_opts(&c.url(), DEFAULT_TIMEOUT, false).unwrap();
        let key = |i: u32| format!("d/{i:05}").into_bytes();
        for chunk in 0..20 {
            store
                .write(|t| {
                    (0..100).try_for_each(|i| t.put(Table::Xattrs, &key(chunk * 100 + i), b"v"))
                })
                .unwrap();
        }
        for i in (0..2000).step_by(7) {
            store
                .write(|t| {
                    t.get(Table::Xattrs, &key(i))?;
                    t.scan(Table::Xattrs, b"d/", Some(&key(i)), 3)?;
                    t.delete(Table::Xattrs, &key(i))?;
                    t.put(Table::Xattrs, &key(i + 1), b"w")
                })
                .unwrap();
        }
        drop(store); // its backend's statistics are written as it ends
        let stat = |col: &str| {
            c.number(&format!(
                "SELECT {col} FROM pg_stat_user_tables WHERE relname = 'meridian_kv'"
            ))
        };
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while stat("n_tup_ins") < 2000 {
            assert!(std::time::Instant::now() < end, "the statistics never came");
            std::thread::sleep(Duration::from_millis(100));
        }
        // One: the index build when the store made the table.
        assert_eq!(stat("seq_scan"), 1, "a statement scanned the whole table");
    }

    /// A database that stops answering (not closing its connections) fails the calls after
    /// the timeout instead of hanging them, and they work again once it answers.
    #[test]
    fn a_hung_database_fails_calls_and_they_work_again_after() {
        let c = testing::Cluster::start();
        let store = Arc::new(PgStore::connect_with(&c.url(), Duration::from_secs(1)).unwrap());
        store.write(|t| t.put(Table::Meta, b"k", b"1")).unwrap();
        c.pause(true);
        let s2 = store.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(s2.read(|t| t.get(Table::Meta, b"k"))));
        let answer = rx.recv_timeout(Duration::from_secs(30));
        c.pause(false);
        let err = answer.expect("the call hung").unwrap_err();
        assert!(err.to_string().contains("no answer within"), "{err}");
        let v = store.read(|t| t.get(Table::Meta, b"k")).unwrap();
        assert_eq!(v.as_deref(), Some(&b"1"[..]));
    }
}
