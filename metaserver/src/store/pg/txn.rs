//! One PostgreSQL transaction with as few round trips as it can: the opening statements
//! (`BEGIN`, the write lock, an `Immediate` write's `SET LOCAL`) are pipelined with the
//! first query, reads are remembered, reads announced together (`prefetch_with_scans`)
//! go in one round trip, writes are buffered and sent with the `COMMIT` in one round trip.
//!
//! Invariants:
//! - `writes` holds the transaction's own puts (`Some`) and deletes (`None`), newest
//!   state per key; every read consults it first, so the transaction reads its own writes.
//! - `seen` holds values read from the database in this transaction. Remembering them is
//!   exact: a read transaction reads one snapshot, and a write transaction holds the write
//!   lock every writer takes, so no key it read can change before it ends.
//! - Nothing is sent to the database until the first read or the end; a transaction that
//!   neither reads nor writes sends nothing.
//! - A write transaction loads the small [`Table::Meta`] (the counters every write reads)
//!   whole, in its first round trip; `whole` then answers its absent keys and its scans.
//! - A scan merges the database's rows with `writes`: it asks for `limit` plus the number
//!   of buffered deletes in its range, so at least `limit` surviving rows come back when
//!   that many exist.
//! - `scanned` holds the database rows of ranges a prefetch scanned and how many it asked
//!   for (exact as `seen` is); a later scan of the same range uses them when they are
//!   enough for what it would ask now (or are every row there is), else asks again.
//! - `checked`: the opening statements try the sole writer's lock shared
//!   ([`super::sole`]) and the first round trip counts only if they got it; else the
//!   transaction starts again with `waiting` (which waits for the lock, a
//!   [`sole::ASK_EVERY`] at a time) after asking the sole writer to give it up, and asks
//!   again each time a wait runs out, until the store's timeout. No read has been answered
//!   before that.
//! - In sole mode (`conn.known` set) what the connection knows answers reads before the
//!   database; what the transaction read from the database, and the writes of a sent
//!   commit, are added to it at the end.

use super::{Conn, Key, pg, sole};
use crate::store::overlay::merge;
use crate::store::{Pair, ReadTxn, Table, WriteTxn, nowait, prefix_end, scan_start};
use futures_util::future::join_all;
use meridian_proto::{MetaError, MetaResult};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use tokio_postgres::error::SqlState;

type Row = tokio_postgres::Row;
/// Which prepared statement a query runs.
type Pick = fn(&super::Stmts) -> &tokio_postgres::Statement;
type Params<'p> = &'p [&'p (dyn tokio_postgres::types::ToSql + Sync)];
/// A range scanned from the database: table, first key, end (exclusive, `None`: the
/// table's end).
type Range = (i16, Vec<u8>, Option<Vec<u8>>);

struct State<'c> {
    conn: &'c mut Conn,
    /// The opening statements, until they are sent.
    begin: Option<&'static str>,
    seen: BTreeMap<Key, Option<Vec<u8>>>,
    /// The table to load whole with the first query, until it is loaded.
    preload: Option<Table>,
    /// Tables loaded whole: a key not in `seen` is absent.
    whole: Option<i16>,
    /// Database rows of ranges a prefetch scanned, with how many rows it asked for.
    scanned: BTreeMap<Range, (i64, Vec<Pair>)>,
    /// `begin` only tries the sole writer's lock (and must have got it).
    checked: bool,
    /// The opening statements that wait for the sole writer's lock (shared mode).
    waiting: Option<&'static str>,
    /// When the sole writer was first asked to give the lock up.
    asked: Option<std::time::Instant>,
}

pub(super) struct PgTxn<'c> {
    state: RefCell<State<'c>>,
    writes: BTreeMap<Key, Option<Vec<u8>>>,
    /// The instance to name in a `NOTIFY` sent with the COMMIT (see [`super::listen`]).
    announce: Option<u64>,
    /// Prefixes under which nothing existed before this transaction ([`WriteTxn::fresh`]).
    fresh: Vec<Key>,
}

/// The first value of the first row of a simple query's answer, as a boolean.
fn first_bool(answer: &[tokio_postgres::SimpleQueryMessage]) -> Option<bool> {
    answer.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0) == Some("t")),
        _ => None,
    })
}

fn pairs(rows: Vec<Row>) -> Vec<Pair> {
    rows.into_iter().map(|r| (r.get(0), r.get(1))).collect()
}

pub(super) fn tbl(t: Table) -> i16 {
    t.index() as i16
}

/// The keys of table `t` in `[start, end)` (`end` `None`: to the table's end).
pub(super) fn key_range(t: i16, start: &[u8], end: Option<&[u8]>) -> (Bound<Key>, Bound<Key>) {
    let hi = match end {
        Some(e) => Bound::Excluded((t, e.to_vec())),
        None => Bound::Excluded((t + 1, Vec::new())),
    };
    (Bound::Included((t, start.to_vec())), hi)
}

impl State<'_> {
    /// Adds what this transaction read from the database to what the connection knows
    /// (sole mode; see [`super::sole`]).
    fn absorb(&mut self) {
        let Some(known) = self.conn.known.as_mut() else {
            return;
        };
        for (k, v) in std::mem::take(&mut self.seen) {
            known.learn(k, v);
        }
        if let Some(t) = self.whole {
            known.complete(t, Vec::new());
        }
        for ((t, start, end), (asked, rows)) in std::mem::take(&mut self.scanned) {
            let all = rows.len() < asked as usize;
            for (k, v) in rows {
                known.learn((t, k), Some(v));
            }
            let listing = prefix_end(&start) == end;
            if all && listing {
                known.complete(t, start);
            } else if listing && asked as usize >= sole::LISTING {
                known.big(t, start);
            }
        }
        known.bound();
    }
}

impl<'c> PgTxn<'c> {
    /// A transaction opened by `begin`; `waiting`, if given, opens it again waiting for the
    /// sole writer's lock when `begin` did not get it (see the invariants).
    pub(super) fn new(
        conn: &'c mut Conn,
        begin: &'static str,
        preload: Option<Table>,
        waiting: Option<&'static str>,
    ) -> PgTxn<'c> {
        PgTxn {
            state: RefCell::new(State {
                conn,
                begin: Some(begin),
                seen: BTreeMap::new(),
                preload,
                whole: None,
                scanned: BTreeMap::new(),
                checked: waiting.is_some(),
                waiting,
                asked: None,
            }),
            writes: BTreeMap::new(),
            announce: None,
            fresh: Vec::new(),
        }
    }

    /// Ends the transaction with a ROLLBACK, without waiting for the answer: the end of a
    /// read, or of a failed write (which sent no writes).
    pub(super) fn forget(self) {
        let mut state = self.state.into_inner();
        state.absorb();
        let State { conn, begin, .. } = state;
        if begin.is_none() {
            let client = conn.client.clone();
            // The connection reads and drops the answer later.
            let rollback = async move { client.batch_execute("ROLLBACK").await };
            let _ = conn.driver.start(Box::pin(rollback));
        }
    }

    /// Sends the buffered writes and COMMIT in one round trip; waits for the answer if
    /// `wait`, or else leaves it in `inflight` (see the store's invariants).
    /// A call tried in place ([`nowait`]) gives up here rather than wait for the commit.
    pub(super) fn commit(self, wait: bool) -> MetaResult<()> {
        if !self.writes.is_empty() {
            let checked = self.state.borrow().checked;
            // A write that read nothing takes the lock first.
            let ready = (if checked {
                self.query_all(&[]).map(drop)
            } else {
                Ok(())
            })
            .and_then(|()| if wait { nowait::give_up() } else { Ok(()) })
            .and_then(|()| nowait::committing());
            if let Err(e) = ready {
                self.forget();
                return Err(e);
            }
        }
        let PgTxn {
            state,
            writes,
            announce,
            fresh,
        } = self;
        let mut state = state.into_inner();
        state.absorb();
        let State { conn, begin, .. } = state;
        let Conn {
            driver,
            client,
            stmts,
            known,
            notify,
        } = conn;
        if begin.is_some() && writes.is_empty() {
            return Ok(()); // nothing was sent
        }
        // What the database will hold once this commits (sole mode): dropped with the
        // connection if the commit fails.
        let mut learned = known.take();
        if let Some(k) = learned.as_mut() {
            for ((t, key), v) in &writes {
                k.learn((*t, key.clone()), v.clone());
            }
            for (t, prefix) in fresh {
                k.complete(t, prefix);
            }
        }
        let (mut pt, mut pk, mut pv, mut dt, mut dk) = (vec![], vec![], vec![], vec![], vec![]);
        for ((t, k), v) in writes {
            match v {
                Some(v) => {
                    pt.push(t);
                    pk.push(k);
                    pv.push(v);
                }
                None => {
                    dt.push(t);
                    dk.push(k);
                }
            }
        }
        // The statement and which of the five arrays it takes: the upserts' (tbl, k, v),
        // the deletions' (tbl, k), or both.
        let (write, arrays) = match (pt.is_empty(), dt.is_empty()) {
            (false, true) => (Some(stmts.upsert_many.clone()), 0..3),
            (true, false) => (Some(stmts.delete_many.clone()), 3..5),
            (false, false) => (Some(stmts.write_many.clone()), 0..5),
            (true, true) => (None, 0..0),
        };
        let client = client.clone();
        // A database without notifications would fail the transaction (see `probe_notify`).
        let announce = announce.filter(|_| *notify);
        // Nothing sent yet, nothing announced, nothing waited for (sole mode's usual
        // write): the one statement is the whole transaction, committed as it runs.
        let alone = begin.is_some() && announce.is_none() && !wait;
        let end = announce.map(super::listen::notify_then_commit);
        let all = async move {
            let all: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&pt, &pk, &pv, &dt, &dk];
            let params = &all[arrays];
            let run = async {
                match &write {
                    Some(w) => client.execute(w, params).await.map(drop),
                    None => Ok(()),
                }
            };
            if alone {
                return run.await;
            }
            let begin = async {
                match &begin {
                    Some(b) => client.batch_execute(b).await,
                    None => Ok(()),
                }
            };
            let (b, w, c) = tokio::join!(
                begin,
                run,
                client.batch_execute(end.as_deref().unwrap_or("COMMIT"))
            );
            // After a failed statement PostgreSQL answers COMMIT with ROLLBACK, so the
            // first error is the transaction's.
            b.and(w).and(c)
        };
        let out = driver
            .start(Box::pin(all))
            .and_then(|started| match started {
                Some(rest) if wait => driver.run(rest),
                Some(rest) => {
                    driver.inflight.push(rest);
                    Ok(())
                }
                None => Ok(()),
            });
        // A failed commit changed nothing, or the connection goes with what it knew; an
        // empty knowledge is true either way (and keeps the lock's state in `known`).
        *known = match out {
            Ok(()) => learned,
            Err(_) => learned.map(|_| sole::Known::default()),
        };
        out
    }

    /// Runs one query; if the opening statements are unsent, they and the preload go in
    /// the same round trip.
    fn query(&self, stmt: Pick, params: Params<'_>) -> MetaResult<Vec<Row>> {
        let mut answers = self.query_all(&[(stmt, params)])?;
        Ok(answers.pop().expect("one answer per query"))
    }

    /// Runs several queries in one round trip (pipelined on the connection), with the
    /// opening statements and the preload if they are unsent.
    fn query_all(&self, queries: &[(Pick, Params<'_>)]) -> MetaResult<Vec<Vec<Row>>> {
        let mut s = self.state.borrow_mut();
        let State {
            conn,
            begin,
            seen,
            preload,
            whole,
            checked,
            waiting,
            asked,
            ..
        } = &mut *s;
        let Conn {
            driver,
            client,
            stmts,
            ..
        } = &mut **conn;
        let asked_rows = join_all(
            queries
                .iter()
                .map(|(pick, params)| client.query(pick(stmts), params)),
        );
        let Some(b) = begin.take() else {
            let answers = driver.run(async { Ok(asked_rows.await) })?;
            return answers.into_iter().map(|r| r.map_err(pg)).collect();
        };
        let table = preload.take();
        let load = table.map(tbl);
        let everything = i64::MAX;
        let preloaded = async {
            match load {
                Some(t) => {
                    client
                        .query(&stmts.scan_all, &[&t, &b"".as_slice(), &everything])
                        .await
                }
                None => Ok(Vec::new()),
            }
        };
        let tried = std::mem::take(checked);
        let opened = async {
            match tried {
                true => client.simple_query(b).await,
                false => client.batch_execute(b).await.map(|()| Vec::new()),
            }
        };
        let all = async { Ok(tokio::join!(opened, preloaded, asked_rows)) };
        let (opened, loaded, answers) = driver.run(all)?;
        let refused = match &opened {
            Ok(o) => tried && first_bool(o) != Some(true),
            Err(e) => asked.is_some() && e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE),
        };
        if refused {
            // The sole writer holds the lock: ask it to give it up, and wait for it.
            let since = *asked.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > driver.timeout {
                return Err(MetaError::Store(format!(
                    "postgresql: the sole writer did not give its lock up within {:?}",
                    driver.timeout
                )));
            }
            tracing::debug!("postgresql: waiting for the sole writer's lock");
            driver.run(client.batch_execute(&format!("ROLLBACK; {}", sole::request())))?;
            *begin = *waiting;
            *preload = table;
            drop(s);
            return self.query_all(queries);
        }
        opened.map_err(pg)?;
        if let Some(t) = load {
            for r in loaded.map_err(pg)? {
                seen.insert((t, r.get(0)), Some(r.get(1)));
            }
            *whole = Some(t);
        }
        answers.into_iter().map(|r| r.map_err(pg)).collect()
    }

    /// How many database rows a scan of `[start, end)` asks for so that `limit` rows survive
    /// the buffered deletes in the range.
    fn ask(&self, table: Table, start: &[u8], end: Option<&[u8]>, limit: usize) -> i64 {
        let deletes = (self.buffered(table, start, end))
            .filter(|(_, v)| v.is_none())
            .count();
        limit.saturating_add(deletes).min(i64::MAX as usize) as i64
    }

    /// The value of `k` if this transaction already knows it.
    fn known(&self, k: &Key) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.writes.get(k) {
            return Some(v.clone());
        }
        let s = self.state.borrow();
        match s.seen.get(k) {
            Some(v) => Some(v.clone()),
            None if s.whole == Some(k.0) => Some(None),
            None => s.conn.known.as_ref().and_then(|known| known.get(k)),
        }
    }

    /// A scan of `[start, end)` answered without the database, when `table` is loaded
    /// whole: the loaded rows merged with the buffered writes.
    fn scan_whole(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Option<MetaResult<Vec<Pair>>> {
        let t = tbl(table);
        let s = self.state.borrow();
        if s.whole != Some(t) {
            let rows = s.conn.known.as_ref()?.scan(t, start, end)?;
            let rows = rows.into_iter().map(Ok);
            return Some(merge(self.buffered(table, start, end), rows, limit));
        }
        let loaded = s.seen.range(key_range(t, start, end));
        let rows = loaded.filter_map(|((_, k), v)| Some(Ok((k.clone(), v.clone()?))));
        Some(merge(self.buffered(table, start, end), rows, limit))
    }

    /// The buffered writes of `table` with keys in `[start, end)`.
    fn buffered<'a>(
        &'a self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        self.writes
            .range(key_range(tbl(table), start, end))
            .map(|((_, k), v)| (k.as_slice(), v.as_deref()))
    }
}

impl ReadTxn for PgTxn<'_> {
    fn prefetch(&self, keys: &[(Table, &[u8])]) -> MetaResult<()> {
        self.prefetch_with_scans(keys, &[])
    }

    fn prefetch_with_scans(
        &self,
        keys: &[(Table, &[u8])],
        scans: &[(Table, &[u8], usize)],
    ) -> MetaResult<()> {
        let (mut ts, mut ks) = (Vec::new(), Vec::new());
        for &(t, k) in keys {
            let key = (tbl(t), k.to_vec());
            let dup = ts.iter().zip(&ks).any(|(t, k)| (*t, k) == (key.0, &key.1));
            if self.known(&key).is_none() && !dup {
                ts.push(key.0);
                ks.push(key.1);
            }
        }
        let known = |t: i16, prefix: &[u8]| {
            let s = self.state.borrow();
            let end = prefix_end(prefix);
            s.whole == Some(t)
                || (s.conn.known.as_ref())
                    .is_some_and(|k| k.covers(t, prefix, end.as_deref()) || k.is_big(t, prefix))
        };
        let ranges: Vec<(Range, i64)> = scans
            .iter()
            .filter(|(t, prefix, _)| !known(tbl(*t), prefix))
            .map(|&(t, prefix, limit)| {
                let (start, end) = (prefix.to_vec(), prefix_end(prefix));
                let ask = self.ask(t, &start, end.as_deref(), limit);
                ((tbl(t), start, end), ask)
            })
            .collect();
        let mut queries: Vec<(Pick, Params<'_>)> = Vec::new();
        let gets = [&ts as &(dyn tokio_postgres::types::ToSql + Sync), &ks];
        if !ks.is_empty() {
            queries.push((|s| &s.get_many, &gets));
        }
        let params: Vec<Vec<&(dyn tokio_postgres::types::ToSql + Sync)>> = ranges
            .iter()
            .map(|((t, start, end), ask)| {
                let mut p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![t, start];
                if let Some(e) = end {
                    p.push(e);
                }
                p.push(ask);
                p
            })
            .collect();
        for (((_, _, end), _), p) in ranges.iter().zip(&params) {
            let pick: Pick = match end {
                Some(_) => |s| &s.scan_to,
                None => |s| &s.scan_all,
            };
            queries.push((pick, p));
        }
        if queries.is_empty() {
            return Ok(());
        }
        let mut answers = self.query_all(&queries)?.into_iter();
        let mut s = self.state.borrow_mut();
        if !ks.is_empty() {
            for r in answers.next().expect("the gets' answer") {
                s.seen.insert((r.get(0), r.get(1)), r.get(2));
            }
        }
        for ((range, ask), rows) in ranges.into_iter().zip(answers) {
            s.scanned.insert(range, (ask, pairs(rows)));
        }
        Ok(())
    }

    fn listing_hint(&self) -> Option<usize> {
        self.state
            .borrow()
            .conn
            .known
            .as_ref()
            .map(|_| sole::LISTING)
    }

    fn get(&self, table: Table, key: &[u8]) -> MetaResult<Option<Vec<u8>>> {
        let k = (tbl(table), key.to_vec());
        if let Some(v) = self.known(&k) {
            return Ok(v);
        }
        let rows = self.query(|s| &s.get, &[&k.0, &key])?;
        let v: Option<Vec<u8>> = rows.into_iter().next().map(|r| r.get(0));
        self.state.borrow_mut().seen.insert(k, v.clone());
        Ok(v)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<Pair>> {
        let start = scan_start(prefix, after);
        let end = prefix_end(prefix);
        if let Some(rows) = self.scan_whole(table, &start, end.as_deref(), limit) {
            return rows;
        }
        let ask = self.ask(table, &start, end.as_deref(), limit);
        let t = tbl(table);
        let range = (t, start, end);
        let cached = self
            .state
            .borrow()
            .scanned
            .get(&range)
            .and_then(|(got, rows)| {
                // Enough rows, or every row there is.
                let enough = *got >= ask || rows.len() < *got as usize;
                enough.then(|| rows.clone())
            });
        let (t, start, end) = &range;
        let rows = match (cached, end) {
            (Some(rows), _) => rows,
            (None, Some(e)) => pairs(self.query(|s| &s.scan_to, &[t, start, e, &ask])?),
            (None, None) => pairs(self.query(|s| &s.scan_all, &[t, start, &ask])?),
        };
        let rows = rows.into_iter().map(Ok);
        merge(self.buffered(table, start, end.as_deref()), rows, limit)
    }
}

impl WriteTxn for PgTxn<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> MetaResult<()> {
        self.writes
            .insert((tbl(table), key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    fn announce(&mut self, from: u64) {
        self.announce = Some(from);
    }

    fn fresh(&mut self, table: Table, prefix: &[u8]) {
        self.fresh.push((tbl(table), prefix.to_vec()));
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> MetaResult<()> {
        self.writes.insert((tbl(table), key.to_vec()), None);
        Ok(())
    }
}
