//! Calls tried in place: a server over a store that waits on the network (PostgreSQL)
//! runs a call on its own thread when the store expects to answer without waiting, rather
//! than handing it to another thread (two thread wake-ups per call, a sizeable share of a
//! create's time). If the store would wait after all, the call gives up before it sent
//! anything that changes the store, and the server runs it again elsewhere.
//!
//! Owns: the calling thread's state of the attempt (a thread-local), nothing else.
//!
//! Invariants:
//! - While an attempt is [`Trying`](State::Trying), a store may wait for the network only
//!   until the attempt's deadline ([`until`]); past it, or at anything it cannot do without
//!   a longer wait (connecting, a lock another thread holds), it gives up ([`give_up`]):
//!   from then on every store call in the attempt fails at once, and the attempt's result
//!   is dropped.
//! - A store marks the attempt [`committing`] before it sends a change: from then on the
//!   attempt cannot give up (the change would be made twice) and waits as any call does.
//! - Outside an attempt nothing here changes what a store does.

use meridian_proto::{MetaError, MetaResult};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Where the calling thread's attempt stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No attempt: waits as long as the store's own timeout.
    Off,
    /// An attempt that may still give up, with its deadline for waits.
    Trying(Instant),
    /// An attempt that sent a change: it runs to the end.
    Committing,
    /// An attempt that gave up.
    GaveUp,
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State::Off) };
}

/// Resets the thread's state when an attempt ends, panicking or not.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        STATE.with(|s| s.set(State::Off));
    }
}

/// Runs `f` as an attempt in place whose waits for the network may last `budget` in all:
/// its result, or `None` if it gave up (and changed nothing in the store). Attempts do not
/// nest: inside one, `f` runs as part of it.
pub fn attempt<T>(budget: Duration, f: impl FnOnce() -> T) -> Option<T> {
    if STATE.with(Cell::get) != State::Off {
        let out = f();
        return (!gave_up()).then_some(out);
    }
    let _reset = Reset;
    STATE.with(|s| s.set(State::Trying(Instant::now() + budget)));
    let out = f();
    (!gave_up()).then_some(out)
}

/// Whether the calling thread is in an attempt that may still give up.
pub fn trying() -> bool {
    matches!(STATE.with(Cell::get), State::Trying(_) | State::GaveUp)
}

/// Whether the calling thread's attempt gave up.
pub fn gave_up() -> bool {
    STATE.with(Cell::get) == State::GaveUp
}

/// The end of the waits a store may make now: `Ok(None)` outside an attempt (or once it
/// sent a change), the attempt's deadline while it may give up, or the error of an
/// attempt that gave up.
pub fn until() -> MetaResult<Option<Instant>> {
    match STATE.with(Cell::get) {
        State::Off | State::Committing => Ok(None),
        State::Trying(end) => Ok(Some(end)),
        State::GaveUp => Err(gave_up_error()),
    }
}

/// Gives the calling thread's attempt up (a store that would wait too long): the error
/// the store returns. Outside an attempt, or once it sent a change, `Ok`: the caller waits.
pub fn give_up() -> MetaResult<()> {
    STATE.with(|s| match s.get() {
        State::Off | State::Committing => Ok(()),
        State::Trying(_) | State::GaveUp => {
            s.set(State::GaveUp);
            Err(gave_up_error())
        }
    })
}

/// Marks the calling thread's attempt as having sent a change (it can no longer give up);
/// the error of one that already gave up (nothing may be sent then).
pub fn committing() -> MetaResult<()> {
    STATE.with(|s| match s.get() {
        State::Off | State::Committing => Ok(()),
        State::Trying(_) => {
            s.set(State::Committing);
            Ok(())
        }
        State::GaveUp => Err(gave_up_error()),
    })
}

fn gave_up_error() -> MetaError {
    MetaError::Store("tried in place and would wait; run again on a thread of its own".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_that_gives_up_has_no_result_and_fails_every_later_step() {
        let out = attempt(Duration::from_millis(5), || {
            assert!(trying());
            assert!(until().unwrap().is_some());
            assert!(give_up().is_err());
            assert!(until().is_err(), "every later wait fails");
            assert!(committing().is_err(), "nothing is sent once given up");
            7
        });
        assert_eq!(out, None);
        assert!(!trying() && !gave_up(), "the state ends with the attempt");
        assert_eq!(until().unwrap(), None);
        assert!(give_up().is_ok(), "outside an attempt a store just waits");
    }

    #[test]
    fn an_attempt_that_sent_a_change_runs_to_its_end() {
        let out = attempt(Duration::from_millis(5), || {
            committing().unwrap();
            assert!(!trying());
            assert!(give_up().is_ok(), "it waits instead");
            assert_eq!(until().unwrap(), None, "as long as any call");
            7
        });
        assert_eq!(out, Some(7));
    }

    #[test]
    fn a_panicking_attempt_leaves_the_thread_outside_any_attempt() {
        let r = std::panic::catch_unwind(|| {
            attempt(Duration::from_millis(5), || {
                let _ = give_up();
                panic!("boom")
            })
        });
        assert!(r.is_err());
        assert!(!gave_up() && !trying());
    }

    #[test]
    fn attempts_do_not_nest() {
        let out = attempt(Duration::from_millis(5), || {
            let inner = attempt(Duration::from_secs(5), || until().unwrap());
            let end = inner.flatten().expect("the outer deadline");
            assert!(end <= Instant::now() + Duration::from_millis(5));
            let _ = give_up();
            attempt(Duration::from_secs(5), || 1)
        });
        assert_eq!(out, None);
    }
}
