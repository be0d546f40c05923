//! Calls retried after their answer was lost: a client whose connection drops (the
//! metaserver restarted, or the network) sends the calls it was waiting for again on a new
//! connection. A call that makes or removes a name — of a file or of an extended
//! attribute — may have taken effect the first time; run again it would fail (`mkdir` and
//! `setxattr(XATTR_CREATE)` with EEXIST, `unlink` and `rename` with ENOENT,
//! `removexattr` with ENODATA) and the application would be told the opposite of what
//! happened.
//!
//! Owns: tagging those calls with their [`CallTag`] (the namespace records the tag with the
//! change in the change feed, in the same transaction), the set of tagged calls running in
//! this process, and answering a retry from the feed.
//!
//! Invariants: a retry is answered as done only when the feed holds a change made for
//! exactly its tag (the client's name and the call's id, which a client process starts at
//! a random number), and — for a call that made a name — the name still leads to the inode
//! that change made; otherwise it runs again and answers as it would. A retry waits while
//! its first attempt is still running here (a dropped connection does not stop it).
//!
//! Locks: `Running::set`, alone.

use meridian_proto::session::Invalidation;
use meridian_proto::wire::{Request, Response};
use meridian_proto::{CallTag, Caller, Hlc, Namespace};
use parking_lot::{Condvar, Mutex};
use std::collections::HashSet;
use std::time::Duration;

/// Feed read before the first attempt's time, for clock steps between its commit and now.
const MARGIN: Duration = Duration::from_secs(5);

/// Feed entries read per page while looking for a retried call.
const PAGE: usize = 1024;

/// The longest a retry waits for its first attempt still running here.
const WAIT: Duration = Duration::from_secs(60);

/// The part of a call tag naming the client: its credential's name, hashed.
pub fn client_key(name: &str) -> u64 {
    let h = blake3::hash(name.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Tags `req` with `tag` if it makes or removes a name (of a file or an extended
/// attribute); whether it did.
pub fn tag(req: &mut Request, tag: CallTag) -> bool {
    use Request as R;
    let who: &mut Caller = match req {
        R::Mknod { who, .. }
        | R::Create { who, .. }
        | R::Mkdir { who, .. }
        | R::Symlink { who, .. }
        | R::Link { who, .. }
        | R::Unlink { who, .. }
        | R::Rmdir { who, .. }
        | R::Rename { who, .. }
        | R::Setxattr { who, .. }
        | R::Removexattr { who, .. } => who,
        _ => return false,
    };
    who.call = Some(tag);
    true
}

/// The answer to a retried `req` (tagged `tag`) whose first attempt, sent `resent_after`
/// ago, took effect; `None` if it did not (or it cannot be told), and the call must run
/// again.
pub fn answer(
    ns: &dyn Namespace,
    req: &Request,
    tag: CallTag,
    resent_after: Duration,
) -> Option<Response> {
    let since = Hlc::wall_millis().saturating_sub((resent_after + MARGIN).as_millis() as u64);
    let items = made_for(ns, tag, Hlc::at_millis(since))?;
    let root = Caller::root();
    use Request as R;
    match req {
        R::Mknod { parent, name, .. }
        | R::Create { parent, name, .. }
        | R::Mkdir { parent, name, .. }
        | R::Symlink { parent, name, .. } => {
            let attr = ns.lookup(&root, *parent, name).ok()?;
            if !items.contains(&Invalidation::Inode(attr.ino)) {
                return None; // the name now leads elsewhere: not what the call made
            }
            if let R::Create { .. } = req {
                // A create leaves the file open for its caller, who will release it; the
                // first attempt's open went with its session (or its process).
                ns.open(&root, attr.ino, true, false).ok()?;
            }
            Some(Response::Made(attr, ns.getattr(*parent).ok()?))
        }
        R::Link { ino, .. } => ns.getattr(*ino).ok().map(Response::Attr),
        R::Unlink { .. }
        | R::Rmdir { .. }
        | R::Rename { .. }
        | R::Setxattr { .. }
        | R::Removexattr { .. } => Some(Response::Unit),
        _ => None,
    }
}

/// The items of the feed entry made for `tag` at or after `since`, if any.
fn made_for(ns: &dyn Namespace, tag: CallTag, since: Hlc) -> Option<Vec<Invalidation>> {
    let mut after = Hlc(since.0.saturating_sub(1));
    loop {
        let page = ns.changes(after, PAGE).ok()?;
        if let Some(c) = page.iter().find(|c| c.call == Some(tag)) {
            return Some(c.items.clone());
        }
        if page.len() < PAGE {
            return None;
        }
        after = page.last()?.hlc;
    }
}

/// Tags of calls started here that are remembered, so a first attempt that reaches the
/// namespace after its retry (both queued for the blocking pool) is not run a second time.
const RECENT: usize = 65_536;

/// The tagged calls running in this process, and the last [`RECENT`] started.
#[derive(Default)]
pub struct Running {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    running: HashSet<CallTag>,
    recent: HashSet<CallTag>,
    order: std::collections::VecDeque<CallTag>,
}

/// A tagged call while it runs; finished on drop.
pub struct Started<'a>(&'a Running, CallTag);

impl Started<'_> {
    /// Ends the call as if it had never started: a call tried in place that gave up (and
    /// changed nothing) is started again elsewhere as the same attempt.
    pub fn abandon(self) {
        let mut st = self.0.state.lock();
        st.recent.remove(&self.1);
        if let Some(i) = st.order.iter().rposition(|t| *t == self.1) {
            st.order.remove(i);
        }
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        self.0.state.lock().running.remove(&self.1);
        self.0.done.notify_all();
    }
}

impl Running {
    /// Marks `tag` running, after waiting (up to a minute) for an attempt of it still
    /// running here. `None` for a first attempt (`resent` false) whose retry already
    /// started here: the retry answers for it.
    pub fn start(&self, tag: CallTag, resent: bool) -> Option<Started<'_>> {
        let mut st = self.state.lock();
        if !resent && st.recent.contains(&tag) {
            return None;
        }
        let deadline = std::time::Instant::now() + WAIT;
        while st.running.contains(&tag) {
            if self.done.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        st.running.insert(tag);
        if st.recent.insert(tag) {
            st.order.push_back(tag);
            if st.order.len() > RECENT
                && let Some(old) = st.order.pop_front()
            {
                st.recent.remove(&old);
            }
        }
        Some(Started(self, tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_waits_for_its_first_attempt_and_a_late_first_attempt_does_not_run() {
        let r = std::sync::Arc::new(Running::default());
        let t = CallTag { session: 1, id: 7 };
        let first = r.start(t, false).expect("runs");
        let (r2, waited) = (
            r.clone(),
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
        let w2 = waited.clone();
        let retry = std::thread::spawn(move || {
            let _s = r2.start(t, true).expect("a retry runs");
            w2.load(std::sync::atomic::Ordering::SeqCst)
        });
        std::thread::sleep(Duration::from_millis(50));
        waited.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(first);
        assert!(
            retry.join().unwrap(),
            "the retry ran only after the first attempt ended"
        );
        assert!(
            r.start(t, false).is_none(),
            "a first attempt after its retry"
        );
        assert!(
            r.start(CallTag { session: 2, id: 7 }, false).is_some(),
            "another client's"
        );
    }
}
