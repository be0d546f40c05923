//! Drives one PostgreSQL connection on the calling thread, with no async runtime: the
//! socket is nonblocking, the connection's futures are polled in a loop, and the thread
//! waits for the socket in `ppoll(2)` between polls. No thread hop per round trip, and a
//! call may run on any thread, a server's own runtime thread included (see
//! [`crate::store::nowait`]).
//!
//! Owns: the connection (the future that reads and writes the socket), a second handle on
//! the socket to wait on, the deferred commits not yet answered.
//!
//! Invariants:
//! - Every `Pending` of the futures polled here comes from the socket (a read or write that
//!   would block: then the loop waits for it) or from the channels between the client and
//!   its connection (whose wakes the loop notices and polls again at once). Nothing else
//!   wakes a future, so none is left waiting on a wake that never comes.
//! - A wait lasts at most the driver's timeout (then the connection is closed: made again
//!   at the next call) and, inside an attempt in place, at most the attempt's deadline
//!   (then the attempt gives up; the connection stays).

use super::tls::Target;
use super::{PgFuture, pg};
use crate::store::nowait;
use meridian_proto::{MetaError, MetaResult};
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::io::ReadBuf;
use tokio_postgres::config::Host;
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Deferred commits a connection may have sent and not seen answered before the next call
/// waits for them (each holds a few hundred bytes until its answer comes).
pub(super) const MAX_UNANSWERED: usize = 256;

/// One connection, driven by whoever calls.
pub(super) struct Driver {
    connection: PgFuture<()>,
    pub(super) closed: bool,
    /// Deferred commits sent and not yet answered, oldest first. Every drive of the
    /// connection polls them, so their answers never pile up in front of a later one's.
    pub(super) inflight: Vec<PgFuture<()>>,
    /// The first deferred commit that failed since the last call reported it.
    failed: Option<String>,
    /// How long one wait for the database may last (see `PgStore::connect_with`).
    pub(super) timeout: Duration,
    io: Io,
}

/// What the loop waits on.
struct Io {
    /// The socket (a second handle on it).
    fd: OwnedFd,
    /// A write would have blocked: wait until the socket takes more.
    blocked: Arc<AtomicBool>,
    /// A future was woken (a channel between client and connection): poll again now.
    woken: Arc<Woken>,
}

#[derive(Default)]
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// Why a wait ended without an answer.
enum Stop {
    /// The driver's timeout passed.
    TimedOut,
    /// The calling attempt in place gave up.
    GaveUp(MetaError),
}

impl Io {
    /// Waits until the socket is ready (or a future was woken), at most until `end` and
    /// the calling attempt's deadline.
    fn wait(&self, end: Instant) -> Result<(), Stop> {
        if self.woken.0.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let now = Instant::now();
        let attempt = nowait::until().map_err(Stop::GaveUp)?;
        if attempt.is_some_and(|a| a <= now && a < end) {
            return Err(Stop::GaveUp(nowait::give_up().expect_err("trying")));
        }
        if end <= now {
            return Err(Stop::TimedOut);
        }
        let left = attempt.map_or(end, |a| a.min(end)) - now;
        let write = self.blocked.swap(false, Ordering::AcqRel);
        let events = libc::POLLIN | if write { libc::POLLOUT } else { 0 };
        let mut fds = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        let n = unsafe { libc::ppoll(&mut fds, 1, &ts, std::ptr::null()) };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // Not expected with a valid descriptor; do not spin on it.
            std::thread::sleep(Duration::from_millis(1));
        }
        if write && fds.revents & libc::POLLOUT == 0 {
            self.blocked.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Polls `poll` until it is ready, waiting in between; `dead` tells that nothing more
    /// can come (the connection ended).
    fn run<T>(
        &self,
        end: Instant,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
        dead: impl Fn() -> bool,
    ) -> Result<Option<T>, Stop> {
        let waker = Waker::from(self.woken.clone());
        let mut cx = Context::from_waker(&waker);
        loop {
            self.woken.0.store(false, Ordering::Release);
            if let Poll::Ready(v) = poll(&mut cx) {
                return Ok(Some(v));
            }
            if dead() && !self.woken.0.load(Ordering::Acquire) {
                return Ok(None);
            }
            self.wait(end)?;
        }
    }
}

/// Opens a connection to `target`, waiting at most `timeout` in all: to the first of its
/// hosts that answers (and, with `target_session_attrs`, has the session asked for), as
/// libpq and tokio-postgres do; `hostaddr`, the `keepalives` settings and TLS
/// ([`super::tls`]) are honoured.
pub(super) fn connect(target: &Target, timeout: Duration) -> MetaResult<(Client, Driver)> {
    let shown = &target.shown;
    let cannot =
        |e: &dyn std::fmt::Display| MetaError::Store(format!("cannot connect to {shown}: {e}"));
    let config = &target.config;
    let end = Instant::now() + timeout;
    let mut last = "no host in the URL".to_string();
    for i in 0..config.get_hosts().len() {
        match connect_to(target, i, end, timeout) {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::debug!(url = shown, host = i, error = %e, "postgresql: host passed over");
                last = e;
            }
        }
    }
    Err(cannot(&last))
}

/// A connection to host `i` of `config`, or why not.
fn connect_to(
    target: &Target,
    i: usize,
    end: Instant,
    timeout: Duration,
) -> Result<(Client, Driver), String> {
    let config = &target.config;
    let sock = Sock::open(config, i, end).map_err(|e| e.to_string())?;
    let io = Io {
        fd: sock.handle().map_err(|e| e.to_string())?,
        blocked: Arc::default(),
        woken: Arc::default(),
    };
    let stream = Socket {
        sock,
        blocked: io.blocked.clone(),
    };
    let (client, connection) = match &config.get_hosts()[i] {
        Host::Tcp(name) => {
            let tls = MakeTlsConnect::<Socket>::make_tls_connect(&mut target.tls.clone(), name);
            handshake(
                config,
                stream,
                tls.map_err(|e| e.to_string())?,
                &io,
                end,
                timeout,
            )?
        }
        Host::Unix(_) => handshake(config, stream, NoTls, &io, end, timeout)?,
    };
    let mut driver = Driver {
        connection,
        closed: false,
        inflight: Vec::new(),
        failed: None,
        timeout,
        io,
    };
    let wanted = config.get_target_session_attrs();
    if wanted != TargetSessionAttrs::Any {
        let answer = (driver.run(client.simple_query("SHOW transaction_read_only")))
            .map_err(|e| e.to_string())?;
        let read_only = answer.iter().any(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0) == Some("on"),
            _ => false,
        });
        if read_only != (wanted == TargetSessionAttrs::ReadOnly) {
            return Err(format!("not a {wanted:?} session (target_session_attrs)"));
        }
    }
    Ok((client, driver))
}

/// The start-up exchange (TLS first if `config` asks for it) on `stream`.
fn handshake<T>(
    config: &tokio_postgres::Config,
    stream: Socket,
    tls: T,
    io: &Io,
    end: Instant,
    timeout: Duration,
) -> Result<(Client, PgFuture<()>), String>
where
    T: TlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let mut handshake = pin!(config.connect_raw(stream, tls));
    match io.run(end, |cx| handshake.as_mut().poll(cx), || false) {
        Ok(Some(c)) => {
            let (client, connection) = c.map_err(|e| super::describe(&e))?;
            Ok((client, Box::pin(connection)))
        }
        Ok(None) | Err(Stop::TimedOut) => Err(format!("no answer within {timeout:?}")),
        Err(Stop::GaveUp(e)) => Err(e.to_string()),
    }
}

impl Driver {
    /// Calls `poll` (then polls the connection) until `poll` is ready. A database that
    /// does not answer within `timeout` fails the call, and the connection is dropped (it
    /// is made again at the next call): a hung server or a lost network never hangs one.
    pub(super) fn drive<T>(
        &mut self,
        poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> MetaResult<T> {
        self.drive_inner(false, poll)
    }

    /// [`drive`](Driver::drive), and with `settle` until every deferred commit is answered.
    fn drive_inner<T>(
        &mut self,
        settle: bool,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> MetaResult<T> {
        let end = Instant::now() + self.timeout;
        let Driver {
            connection,
            closed,
            io,
            inflight,
            failed,
            ..
        } = self;
        let ended = std::cell::Cell::new(*closed);
        let out = io.run(
            end,
            |cx| {
                answered(inflight, failed, cx);
                let out = match settle && !inflight.is_empty() {
                    true => Poll::Pending,
                    false => poll(cx),
                };
                if !ended.get() && connection.as_mut().poll(cx).is_ready() {
                    ended.set(true);
                }
                out
            },
            || ended.get(),
        );
        self.closed = ended.get();
        match out {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(MetaError::Store(
                "postgresql: the connection was closed; connecting again at the next call".into(),
            )),
            Err(stop) => Err(self.stopped(stop)),
        }
    }

    /// Runs `fut` to completion.
    pub(super) fn run<T>(
        &mut self,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> MetaResult<T> {
        let mut fut = pin!(fut);
        self.drive(|cx| fut.as_mut().poll(cx))?.map_err(pg)
    }

    /// Sends what `fut` sends on its first poll and writes all of it to the socket (waiting
    /// only if the socket cannot take it at once), without waiting for the answer; what is
    /// left of `fut` (if it did not end at once) is returned, to be polled later.
    pub(super) fn start(&mut self, mut fut: PgFuture<()>) -> MetaResult<Option<PgFuture<()>>> {
        let first = self.drive(|cx| Poll::Ready(fut.as_mut().poll(cx)))?;
        self.flush()?;
        match first {
            Poll::Ready(out) => out.map(|()| None).map_err(pg),
            Poll::Pending => Ok(Some(fut)),
        }
    }

    /// Waits until the connection has written everything it was given: a write that would
    /// have blocked left the rest in the connection's buffer, where nothing would send it
    /// before the next call.
    fn flush(&mut self) -> MetaResult<()> {
        let end = Instant::now() + self.timeout;
        while self.io.blocked.load(Ordering::Acquire) && !self.closed {
            if let Err(stop) = self.io.wait(end) {
                return Err(self.stopped(stop));
            }
            // Polls the connection once more: it writes what the socket takes now.
            self.drive(|_| Poll::Ready(()))?;
        }
        Ok(())
    }

    /// The call's error for a wait that ended without an answer: a timeout closes the
    /// connection.
    fn stopped(&mut self, stop: Stop) -> MetaError {
        match stop {
            Stop::GaveUp(e) => e,
            Stop::TimedOut => {
                self.closed = true;
                tracing::error!(timeout = ?self.timeout, "postgresql: no answer; connecting again at the next call");
                MetaError::Store(format!(
                    "postgresql: no answer within {:?} (the database is down, hung or unreachable)",
                    self.timeout
                ))
            }
        }
    }

    /// Waits for the answers to the deferred commits: the first failure, as after a crash
    /// of the database, loses the change, is logged, and is this call's error. An attempt
    /// in place that gives up waiting leaves the unanswered ones for the next call.
    fn settle(&mut self) -> MetaResult<()> {
        if !self.inflight.is_empty() {
            let out = self.drive_inner(true, |_| Poll::Ready(()));
            if out.is_err() && self.closed && !self.inflight.is_empty() {
                tracing::error!(
                    "postgresql: deferred commits unanswered; their changes may be lost"
                );
            }
            out?;
        }
        self.report()
    }

    /// Reports a deferred commit that failed, without waiting for those not yet answered
    /// — what is sent next follows them on the connection, so the database applies it
    /// after them all the same — unless more than [`MAX_UNANSWERED`] are left.
    pub(super) fn reap(&mut self) -> MetaResult<()> {
        if self.inflight.len() > MAX_UNANSWERED {
            return self.settle();
        }
        self.report()
    }

    fn report(&mut self) -> MetaResult<()> {
        let Some(e) = self.failed.take() else {
            return Ok(());
        };
        tracing::error!(error = %e, "postgresql: a deferred commit failed; its change is lost");
        self.closed = true;
        Err(MetaError::Store(format!(
            "postgresql: an earlier change could not be committed and is lost: {e}"
        )))
    }
}

/// Polls the deferred commits, dropping those answered; the first failure goes to `failed`.
fn answered(inflight: &mut Vec<PgFuture<()>>, failed: &mut Option<String>, cx: &mut Context<'_>) {
    inflight.retain_mut(|f| match f.as_mut().poll(cx) {
        Poll::Ready(Ok(())) => false,
        Poll::Ready(Err(e)) => {
            failed.get_or_insert(super::describe(&e));
            false
        }
        Poll::Pending => true,
    });
}

/// The connection's socket.
enum Sock {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Sock {
    /// Connects to host `i` of `config` (its `hostaddr` if given), nonblocking once
    /// connected, with the URL's keep-alives.
    fn open(config: &tokio_postgres::Config, i: usize, end: Instant) -> io::Result<Sock> {
        use tokio_postgres::config::Host;
        let ports = config.get_ports();
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let sock = match &config.get_hosts()[i] {
            Host::Tcp(name) => {
                let addr = config.get_hostaddrs().get(i).map(|a| (*a, port).into());
                let s = tcp(name, port, addr, end)?;
                if config.get_keepalives() {
                    let idle = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
                    socket2::SockRef::from(&s).set_tcp_keepalive(&idle)?;
                }
                Sock::Tcp(s)
            }
            Host::Unix(dir) => Sock::Unix(std::os::unix::net::UnixStream::connect(
                dir.join(format!(".s.PGSQL.{port}")),
            )?),
        };
        sock.set_nonblocking()?;
        Ok(sock)
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_nonblocking(true),
            Sock::Unix(s) => s.set_nonblocking(true),
        }
    }

    /// A second handle on the socket (to wait on).
    fn handle(&self) -> io::Result<OwnedFd> {
        Ok(match self {
            Sock::Tcp(s) => s.try_clone()?.into(),
            Sock::Unix(s) => s.try_clone()?.into(),
        })
    }
}

/// A TCP connection to `addr` if given, or else to `name:port` (each of its addresses in
/// turn), with Nagle off.
fn tcp(
    name: &str,
    port: u16,
    addr: Option<std::net::SocketAddr>,
    end: Instant,
) -> io::Result<std::net::TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{name}: no address"));
    let addrs: Vec<_> = match addr {
        Some(a) => vec![a],
        None => (name, port).to_socket_addrs()?.collect(),
    };
    for addr in addrs {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        match std::net::TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The socket as the connection reads and writes it: an operation that would block is
/// `Pending` without keeping the waker (the driver waits on the socket itself).
struct Socket {
    sock: Sock,
    blocked: Arc<AtomicBool>,
}

/// An I/O result as a poll: would-block is `Pending` (a blocked write noted for the wait).
fn ready<T>(r: io::Result<T>, blocked: Option<&AtomicBool>) -> Poll<io::Result<T>> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if let Some(b) = blocked {
                b.store(true, Ordering::Release);
            }
            Poll::Pending
        }
        r => Poll::Ready(r),
    }
}

/// `op`, again while a signal interrupts it.
fn uninterrupted<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

impl Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        uninterrupted(|| match &mut self.sock {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        uninterrupted(|| match &mut self.sock {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        })
    }
}

impl tokio::io::AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = self.read(buf.initialize_unfilled());
        ready(r, None).map_ok(|n| buf.advance(n))
    }
}

impl tokio::io::AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = self.write(buf);
        ready(r, Some(&self.blocked))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // nothing is buffered here
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = match &self.sock {
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
        Poll::Ready(r.or_else(|e| match e.kind() {
            io::ErrorKind::NotConnected => Ok(()),
            _ => Err(e),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Cluster;
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn open(url: &str) -> MetaResult<(Client, Driver)> {
        connect(&Target::parse(url)?, WAIT)
    }

    fn works(url: &str) {
        let (client, mut driver) = open(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        driver.run(client.simple_query("SELECT 1")).unwrap();
    }

    #[test]
    fn connects_to_the_first_host_that_answers_by_tcp_hostaddr_or_unix_socket() {
        let c = Cluster::start();
        let refused = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port(); // free again once the listener is dropped
        works(&format!(
            "postgresql://postgres@127.0.0.1:{refused},127.0.0.1:{}/postgres",
            c.port
        ));
        works(&format!(
            "host=db.invalid hostaddr=127.0.0.1 port={} user=postgres dbname=postgres",
            c.port
        ));
        works(&format!(
            "host={} port={} user=postgres dbname=postgres",
            c.socket_dir().display(),
            c.port
        ));
        let err = open(&format!(
            "postgresql://postgres@127.0.0.1:{refused}/postgres"
        ))
        .err()
        .expect("nobody listens there")
        .to_string();
        assert!(
            err.contains("cannot connect to") && err.contains(&refused.to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_server_of_the_wrong_kind_for_target_session_attrs_is_passed_over() {
        let c = Cluster::start();
        let url = |attrs: &str| {
            format!(
                "postgresql://postgres@127.0.0.1:{}/postgres?target_session_attrs={attrs}",
                c.port
            )
        };
        works(&url("read-write"));
        let err = open(&url("read-only"))
            .err()
            .expect("a primary is not read-only");
        assert!(err.to_string().contains("target_session_attrs"), "{err}");
    }
}
