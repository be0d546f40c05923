//! Who asks: the ids every permission check is made against, with the supplementary
//! groups looked up only if a check needs them.
//!
//! Owns: [`Caller`], [`Groups`], [`CallTag`].
//!
//! Invariants: a caller's groups are looked up at most once, and only when a check cannot
//! be decided without them (the caller is not the owner, the group is not its primary
//! group, and the group's bits and the others' bits differ for what is asked) or when the
//! caller is sent over the wire. On the wire, [`Groups`] is the plain list `Vec<u32>`
//! always was. Looking up is the caller's business (a mount reads /proc: this crate does
//! no I/O), passed in as a function.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::OnceLock;

/// Who asks: used for every permission check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (may include `gid`).
    pub groups: Groups,
    /// The site call this change is made for, set by the metaserver from the client's
    /// session (never sent: a client cannot claim another's calls). The change feed
    /// records it, so a call retried after its answer was lost is recognised as done.
    #[serde(skip)]
    pub call: Option<CallTag>,
}

/// One call of one client process: the session nonce its mount chose at start and the
/// call's id on it (kept across reconnections).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallTag {
    pub session: u64,
    pub id: u64,
}

impl Caller {
    /// A caller with these ids, not on behalf of a site call.
    pub fn new(uid: u32, gid: u32, groups: Vec<u32>) -> Self {
        Caller::with_groups(uid, gid, Groups::known(groups))
    }
    /// As [`Caller::new`], with groups known or to be looked up.
    pub fn with_groups(uid: u32, gid: u32, groups: Groups) -> Self {
        Caller {
            uid,
            gid,
            groups,
            call: None,
        }
    }
    pub fn root() -> Self {
        Caller::new(0, 0, vec![])
    }
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
    /// Whether the caller belongs to group `gid`, as primary or supplementary group (the
    /// supplementary groups are looked up only if `gid` is not the primary one).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.get().contains(&gid)
    }
}

/// Looks up the supplementary groups of a process (by its id).
pub type GroupLookup = fn(u32) -> Vec<u32>;

/// Supplementary groups: given, or looked up on first need.
#[derive(Clone, Default)]
pub struct Groups {
    known: OnceLock<Vec<u32>>,
    /// How to look them up: a function and its argument (a process id).
    lookup: Option<(GroupLookup, u32)>,
}

impl Groups {
    pub fn known(groups: Vec<u32>) -> Groups {
        Groups {
            known: OnceLock::from(groups),
            lookup: None,
        }
    }

    /// Groups `lookup(arg)` gives, asked for only when first needed.
    pub fn lazy(lookup: GroupLookup, arg: u32) -> Groups {
        Groups {
            known: OnceLock::new(),
            lookup: Some((lookup, arg)),
        }
    }

    /// The groups, looked up now if they were not yet.
    pub fn get(&self) -> &[u32] {
        self.known
            .get_or_init(|| self.lookup.map_or_else(Vec::new, |(f, arg)| f(arg)))
    }

    /// Whether they have been looked up (or were given).
    pub fn is_known(&self) -> bool {
        self.known.get().is_some()
    }
}

impl PartialEq for Groups {
    fn eq(&self, other: &Groups) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Groups {}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.known.get(), self.lookup) {
            (Some(g), _) => g.fmt(f),
            (None, Some((_, arg))) => write!(f, "(not looked up: {arg})"),
            (None, None) => write!(f, "[]"),
        }
    }
}

impl Serialize for Groups {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Groups {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Groups, D::Error> {
        Vec::<u32>::deserialize(d).map(Groups::known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Lookups of process 7 (the one test that counts them uses it alone: tests run at
    /// once, and another's lookups must not count).
    static LOOKUPS: AtomicU32 = AtomicU32::new(0);
    fn lookup(pid: u32) -> Vec<u32> {
        if pid == 7 {
            LOOKUPS.fetch_add(1, Ordering::SeqCst);
        }
        vec![pid, 500]
    }

    #[test]
    fn groups_are_looked_up_once_and_only_when_the_primary_group_does_not_answer() {
        let c = Caller::with_groups(1000, 100, Groups::lazy(lookup, 7));
        let before = LOOKUPS.load(Ordering::SeqCst);
        assert!(c.in_group(100));
        assert!(!c.groups.is_known(), "the primary group needs no lookup");
        assert!(c.in_group(500) && c.in_group(7) && !c.in_group(501));
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), before + 1);
    }

    #[test]
    fn on_the_wire_groups_are_the_list_they_always_were() {
        #[derive(Serialize, Deserialize)]
        struct Old {
            uid: u32,
            gid: u32,
            groups: Vec<u32>,
        }
        let lazy = Caller::with_groups(1000, 100, Groups::lazy(lookup, 8));
        let bytes = postcard::to_allocvec(&lazy).unwrap();
        let old: Old = postcard::from_bytes(&bytes).unwrap();
        assert_eq!((old.uid, old.gid, old.groups), (1000, 100, vec![8, 500]));
        let back: Caller = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, lazy);
        assert!(back.groups.is_known());
    }
}
