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
//! - `Deferred` writes commit with `synchronous_commit = off` (PostgreSQL's own deferred
//!   durability: a crash of the database server loses at most the last few hundred
//!   milliseconds of them, whole transactions only); `sync` commits a transaction with
//!   `synchronous_commit = on`, which flushes the WAL up to it and so every earlier one.
//! - Round trips are few (see [`txn`]): a transaction's opening statements travel with its
//!   first query, its writes are buffered and sent with the COMMIT in one round trip, and
//!   the COMMIT of a read (or the ROLLBACK of a failed write) is sent without waiting.
//! - The SQL is plain (no extensions): it runs on PostgreSQL-compatible distributed engines
//!   (CockroachDB, YugabyteDB) that implement advisory locks or serialize the one lock row
//!   — see docs/operations.md.
//!
//! Locks: `conn` for the whole of one transaction.

#[doc(hidden)]
pub mod testing;
mod txn;

use super::{Durability, ReadTxn, Store, Table, WriteTxn};
use meridian_proto::{MetaError, MetaResult};
use parking_lot::Mutex;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use tokio_postgres::{Client, NoTls, Statement};
use txn::PgTxn;

/// The advisory lock id every writer takes (`meridian` in ASCII, as a number).
pub const WRITE_LOCK: i64 = 0x6d65_7269_6469_616e;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS meridian_kv (
    tbl smallint NOT NULL,
    k bytea NOT NULL,
    v bytea NOT NULL,
    PRIMARY KEY (tbl, k)
)";

/// The statements every transaction uses, prepared once per connection.
struct Stmts {
    get: Statement,
    scan_to: Statement,
    scan_all: Statement,
    /// Upserts arrays of (tbl, k, v).
    put_many: Statement,
    /// Deletes arrays of (tbl, k).
    delete_many: Statement,
}

/// Drives one connection's socket on a runtime of its own, on the calling thread.
struct Driver {
    rt: tokio::runtime::Runtime,
    connection: Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>,
    closed: bool,
}

impl Driver {
    /// Runs `fut` to completion, driving the connection meanwhile.
    fn run<T>(
        &mut self,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> MetaResult<T> {
        let Driver {
            rt,
            connection,
            closed,
        } = self;
        let mut fut = pin!(fut);
        rt.block_on(poll_fn(|cx| {
            let out = fut.as_mut().poll(cx);
            if !*closed && connection.as_mut().poll(cx).is_ready() {
                *closed = true;
            }
            out
        }))
        .map_err(pg)
    }

    /// Sends what `fut` sends on its first poll and returns without waiting for the answer
    /// (the connection reads and drops it later).
    fn send(&mut self, fut: impl Future<Output = Result<(), tokio_postgres::Error>>) {
        let Driver {
            rt,
            connection,
            closed,
        } = self;
        let mut fut = pin!(fut);
        rt.block_on(poll_fn(|cx| {
            let _ = fut.as_mut().poll(cx);
            if !*closed && connection.as_mut().poll(cx).is_ready() {
                *closed = true;
            }
            Poll::Ready(())
        }))
    }
}

struct Conn {
    driver: Driver,
    client: Client,
    stmts: Stmts,
}

/// The store over one PostgreSQL database.
pub struct PgStore {
    url: String,
    conn: Mutex<Option<Conn>>,
}

fn pg(e: tokio_postgres::Error) -> MetaError {
    MetaError::Store(format!("postgresql: {e}"))
}

impl Conn {
    fn open(url: &str) -> MetaResult<Conn> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| MetaError::Store(format!("postgresql runtime: {e}")))?;
        let (client, connection) = rt
            .block_on(tokio_postgres::connect(url, NoTls))
            .map_err(|e| MetaError::Store(format!("cannot connect to {url}: {e}")))?;
        let mut driver = Driver {
            rt,
            connection: Box::pin(connection),
            closed: false,
        };
        driver.run(client.batch_execute(SCHEMA))?;
        let prepare = |d: &mut Driver, sql: &str| d.run(client.prepare(sql));
        let stmts = Stmts {
            get: prepare(
                &mut driver,
                "SELECT v FROM meridian_kv WHERE tbl = $1 AND k = $2",
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
            put_many: prepare(
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
            client,
            stmts,
        })
    }
}

/// Runs one statement batch on a fresh connection (tests and administration).
pub fn execute(url: &str, sql: &str) -> MetaResult<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| MetaError::Store(format!("postgresql runtime: {e}")))?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(pg)?;
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
        let conn = Conn::open(url)?;
        Ok(PgStore {
            url: url.to_string(),
            conn: Mutex::new(Some(conn)),
        })
    }

    /// Runs `f` on the connection, first connecting again if the last one was lost.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> MetaResult<T>) -> MetaResult<T> {
        let mut guard = self.conn.lock();
        if guard.as_ref().is_none_or(|c| c.driver.closed) {
            *guard = None;
            *guard = Some(Conn::open(&self.url)?);
            tracing::info!("postgresql: connected again");
        }
        f(guard.as_mut().expect("connected above"))
    }
}

impl Store for PgStore {
    fn read<T>(&self, f: impl FnOnce(&dyn ReadTxn) -> MetaResult<T>) -> MetaResult<T> {
        self.with_conn(|conn| {
            let txn = PgTxn::new(
                conn,
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".to_string(),
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
        self.with_conn(|conn| {
            let mut begin = format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})");
            if durability == Durability::Deferred {
                begin.push_str("; SET LOCAL synchronous_commit = off");
            }
            let mut txn = PgTxn::new(conn, begin, Some(Table::Meta));
            match f(&mut txn) {
                Ok(v) => txn.commit().map(|()| v),
                Err(e) => {
                    txn.forget();
                    Err(e)
                }
            }
        })
    }

    fn sync(&self) -> MetaResult<()> {
        self.with_conn(|conn| {
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
        super::super::suite::run_all(&PgStore::connect(&c.url()).unwrap());
    }
}
