//! A [`Store`] in PostgreSQL: for sites that outgrow one machine, and for several
//! metaserver processes serving one site over one database.
//!
//! Owns: one connection (statements prepared once), the schema — one table
//! `meridian_kv (tbl smallint, k bytea, v bytea, primary key (tbl, k))`, where `bytea`
//! orders bytewise as the store contract's scans need.
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
//! - The SQL is plain (no extensions): it runs on PostgreSQL-compatible distributed engines
//!   (CockroachDB, YugabyteDB) that implement advisory locks or serialize the one lock row
//!   — see docs/operations.md.
//!
//! Locks: `conn` for the whole of one transaction.

use super::{Durability, Pair, ReadTxn, Store, Table, WriteTxn, prefix_end, scan_start};
use meridian_proto::{MetaError, MetaResult};
use parking_lot::Mutex;
use postgres::{Client, IsolationLevel, NoTls, Statement, Transaction};
use std::cell::RefCell;

/// The advisory lock id every writer takes (`meridian` in ASCII, as a number).
pub const WRITE_LOCK: i64 = 0x6d65_7269_6469_616e;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS meridian_kv (
    tbl smallint NOT NULL,
    k bytea NOT NULL,
    v bytea NOT NULL,
    PRIMARY KEY (tbl, k)
)";

struct Stmts {
    get: Statement,
    scan_to: Statement,
    scan_all: Statement,
    put: Statement,
    delete: Statement,
}

struct Conn {
    client: Client,
    stmts: Stmts,
}

/// The store over one PostgreSQL database.
pub struct PgStore {
    conn: Mutex<Conn>,
}

fn pg(e: postgres::Error) -> MetaError {
    MetaError::Store(format!("postgresql: {e}"))
}

impl PgStore {
    /// Connects with a libpq-style URL (`postgresql://user@host:port/db`) and creates the
    /// table if needed.
    pub fn connect(url: &str) -> MetaResult<PgStore> {
        let mut client = Client::connect(url, NoTls)
            .map_err(|e| MetaError::Store(format!("cannot connect to {url}: {e}")))?;
        client.batch_execute(SCHEMA).map_err(pg)?;
        let stmts = Stmts {
            get: client
                .prepare("SELECT v FROM meridian_kv WHERE tbl = $1 AND k = $2")
                .map_err(pg)?,
            scan_to: client
                .prepare(
                    "SELECT k, v FROM meridian_kv WHERE tbl = $1 AND k >= $2 AND k < $3 \
                     ORDER BY k LIMIT $4",
                )
                .map_err(pg)?,
            scan_all: client
                .prepare(
                    "SELECT k, v FROM meridian_kv WHERE tbl = $1 AND k >= $2 ORDER BY k LIMIT $3",
                )
                .map_err(pg)?,
            put: client
                .prepare(
                    "INSERT INTO meridian_kv (tbl, k, v) VALUES ($1, $2, $3) \
                     ON CONFLICT (tbl, k) DO UPDATE SET v = excluded.v",
                )
                .map_err(pg)?,
            delete: client
                .prepare("DELETE FROM meridian_kv WHERE tbl = $1 AND k = $2")
                .map_err(pg)?,
        };
        Ok(PgStore {
            conn: Mutex::new(Conn { client, stmts }),
        })
    }
}

/// One transaction; `RefCell` because reads take `&self` and the driver wants `&mut`.
struct PgTxn<'c> {
    t: RefCell<Transaction<'c>>,
    stmts: &'c Stmts,
}

fn tbl(t: Table) -> i16 {
    t.index() as i16
}

impl ReadTxn for PgTxn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> MetaResult<Option<Vec<u8>>> {
        let row = self
            .t
            .borrow_mut()
            .query_opt(&self.stmts.get, &[&tbl(table), &key])
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<Pair>> {
        let start = scan_start(prefix, after);
        let limit = limit.min(i64::MAX as usize) as i64;
        let mut t = self.t.borrow_mut();
        let rows = match prefix_end(prefix) {
            Some(end) => t.query(&self.stmts.scan_to, &[&tbl(table), &start, &end, &limit]),
            None => t.query(&self.stmts.scan_all, &[&tbl(table), &start, &limit]),
        }
        .map_err(pg)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl WriteTxn for PgTxn<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> MetaResult<()> {
        self.t
            .get_mut()
            .execute(&self.stmts.put, &[&tbl(table), &key, &value])
            .map_err(pg)
            .map(drop)
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> MetaResult<()> {
        self.t
            .get_mut()
            .execute(&self.stmts.delete, &[&tbl(table), &key])
            .map_err(pg)
            .map(drop)
    }
}

impl Store for PgStore {
    fn read<T>(&self, f: impl FnOnce(&dyn ReadTxn) -> MetaResult<T>) -> MetaResult<T> {
        let mut c = self.conn.lock();
        let Conn { client, stmts } = &mut *c;
        let t = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg)?;
        let txn = PgTxn {
            t: RefCell::new(t),
            stmts,
        };
        let out = f(&txn)?;
        txn.t.into_inner().commit().map_err(pg)?;
        Ok(out)
    }

    fn write_with<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut dyn WriteTxn) -> MetaResult<T>,
    ) -> MetaResult<T> {
        let mut c = self.conn.lock();
        let Conn { client, stmts } = &mut *c;
        let mut t = client.transaction().map_err(pg)?;
        t.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .map_err(pg)?;
        if durability == Durability::Deferred {
            t.batch_execute("SET LOCAL synchronous_commit = off")
                .map_err(pg)?;
        }
        let mut txn = PgTxn {
            t: RefCell::new(t),
            stmts,
        };
        match f(&mut txn) {
            Ok(v) => {
                txn.t.into_inner().commit().map_err(pg)?;
                Ok(v)
            }
            Err(e) => {
                let _ = txn.t.into_inner().rollback();
                Err(e)
            }
        }
    }

    fn sync(&self) -> MetaResult<()> {
        let mut c = self.conn.lock();
        let mut t = c.client.transaction().map_err(pg)?;
        t.batch_execute("SET LOCAL synchronous_commit = on; SELECT txid_current()")
            .map_err(pg)?;
        t.commit().map_err(pg)
    }
}

/// A throwaway PostgreSQL cluster on loopback for tests: `initdb` and `postgres` from
/// Debian's packages, run as the `postgres` user, killed with the test process.
#[doc(hidden)]
pub mod testing {
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub struct Cluster {
        _dir: tempfile::TempDir,
        child: Child,
        pub port: u16,
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn bin(name: &str) -> PathBuf {
        let found = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin").join(name))
                .find(|p| p.exists())
        });
        found.unwrap_or_else(|| {
            panic!("{name} not found under /usr/lib/postgresql: apt-get install postgresql")
        })
    }

    fn postgres_user() -> (u32, u32) {
        passwd_entry().unwrap_or_else(|| panic!("no `postgres` user: apt-get install postgresql"))
    }

    fn passwd_entry() -> Option<(u32, u32)> {
        let text = std::fs::read_to_string("/etc/passwd").ok()?;
        let line = text.lines().find(|l| l.starts_with("postgres:"))?;
        let f: Vec<&str> = line.split(':').collect();
        Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
    }

    impl Cluster {
        /// Starts a new cluster; `url()` connects to it.
        pub fn start() -> Cluster {
            let (uid, gid) = postgres_user();
            let dir = tempfile::tempdir().expect("temp dir");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
            let data = dir.path().join("data");
            let out = Command::new(bin("initdb"))
                .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
                .arg(&data)
                .uid(uid)
                .gid(gid)
                .output()
                .expect("initdb");
            assert!(
                out.status.success(),
                "initdb: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut cmd = Command::new(bin("postgres"));
            cmd.arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
                .arg("-k")
                .arg(dir.path())
                .args(["-c", "fsync=off", "-c", "max_connections=50"])
                .uid(uid)
                .gid(gid)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Killed with the test process.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("postgres");
            let c = Cluster {
                _dir: dir,
                child,
                port,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while postgres::Client::connect(&c.url(), postgres::NoTls).is_err() {
                assert!(Instant::now() < deadline, "postgres did not start");
                std::thread::sleep(Duration::from_millis(100));
            }
            c
        }

        pub fn url(&self) -> String {
            format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
        }
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
