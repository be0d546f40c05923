//! Permission checks, as POSIX and Linux define them.
//!
//! Owns: the read/write/execute test against mode bits, the sticky-directory rule and who
//! may change ownership, mode and times. A caller with uid 0 passes every check except
//! execute on a non-directory with no execute bit at all.

use meridian_proto::{Attr, Caller, FileKind, MetaError, MetaResult};

pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;

/// Checks that `who` has every right in `mask` on `attr`.
pub fn check(who: &Caller, attr: &Attr, mask: u32) -> MetaResult<()> {
    let mask = mask & 7;
    if who.is_root() {
        if mask & X != 0 && attr.kind != FileKind::Directory && attr.perm & 0o111 == 0 {
            return Err(MetaError::AccessDenied);
        }
        return Ok(());
    }
    let (group, other) = ((attr.perm as u32 >> 3) & mask, attr.perm as u32 & mask);
    let granted = if who.uid == attr.uid {
        (attr.perm as u32 >> 6) & mask
    } else if group == other {
        other // the same answer in the group or not: its members need no lookup
    } else if who.in_group(attr.gid) {
        group
    } else {
        other
    };
    if granted == mask {
        Ok(())
    } else {
        Err(MetaError::AccessDenied)
    }
}

/// In a sticky directory only the owner of the entry, the owner of the directory or root may
/// remove or rename the entry.
pub fn check_sticky(who: &Caller, dir: &Attr, victim: &Attr) -> MetaResult<()> {
    if dir.perm & 0o1000 == 0 || who.is_root() || who.uid == dir.uid || who.uid == victim.uid {
        Ok(())
    } else {
        Err(MetaError::NotPermitted)
    }
}

/// Only the owner or root may change mode, explicit times or flags.
pub fn check_owner(who: &Caller, attr: &Attr) -> MetaResult<()> {
    if who.is_root() || who.uid == attr.uid {
        Ok(())
    } else {
        Err(MetaError::NotPermitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::{InodeId, Timestamp};

    fn attr(perm: u16, uid: u32, gid: u32, kind: FileKind) -> Attr {
        let t = Timestamp::default();
        Attr {
            ino: InodeId(9),
            kind,
            perm,
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
        }
    }
    fn user(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller::new(uid, gid, groups.to_vec())
    }

    #[test]
    fn owner_group_other_classes() {
        let a = attr(0o640, 10, 20, FileKind::Regular);
        assert!(check(&user(10, 99, &[]), &a, R | W).is_ok());
        assert!(check(&user(11, 20, &[]), &a, R).is_ok());
        assert_eq!(
            check(&user(11, 20, &[]), &a, W),
            Err(MetaError::AccessDenied)
        );
        assert!(
            check(&user(11, 5, &[20]), &a, R).is_ok(),
            "supplementary group counts"
        );
        assert_eq!(
            check(&user(12, 5, &[]), &a, R),
            Err(MetaError::AccessDenied)
        );
        // the owner class decides even when group would allow
        let b = attr(0o070, 10, 20, FileKind::Regular);
        assert_eq!(
            check(&user(10, 20, &[]), &b, R),
            Err(MetaError::AccessDenied)
        );
    }

    /// A mount's callers carry their supplementary groups unread (they cost a /proc read):
    /// a check reads them only when the answer depends on them, and then the group class
    /// still excludes the others' bits.
    #[test]
    fn supplementary_groups_are_read_only_when_the_answer_depends_on_them() {
        use meridian_proto::Groups;
        use std::sync::atomic::{AtomicU32, Ordering};
        static READS: AtomicU32 = AtomicU32::new(0);
        fn groups(_pid: u32) -> Vec<u32> {
            READS.fetch_add(1, Ordering::SeqCst);
            vec![20]
        }
        let lazy = || Caller::with_groups(11, 5, Groups::lazy(groups, 1));
        let reads = || READS.load(Ordering::SeqCst);
        let n = reads();
        // group and others agree on what is asked: no read
        assert!(check(&lazy(), &attr(0o644, 10, 20, FileKind::Regular), R).is_ok());
        assert!(check(&lazy(), &attr(0o640, 10, 5, FileKind::Regular), R).is_ok());
        assert!(check(&lazy(), &attr(0o755, 10, 20, FileKind::Directory), X).is_ok());
        assert!(check(&lazy(), &attr(0o600, 10, 20, FileKind::Regular), R).is_err());
        assert_eq!(reads(), n, "no check above needed the supplementary groups");
        // they differ: read, and the group class decides either way
        assert!(check(&lazy(), &attr(0o640, 10, 20, FileKind::Regular), R).is_ok());
        assert_eq!(
            check(&lazy(), &attr(0o604, 10, 20, FileKind::Regular), R),
            Err(MetaError::AccessDenied),
            "a member gets the group's bits, not the others'"
        );
        assert!(check(&lazy(), &attr(0o604, 10, 21, FileKind::Regular), R).is_ok());
        assert_eq!(reads(), n + 3);
    }

    #[test]
    fn root_needs_an_execute_bit_on_files_only() {
        assert!(
            check(
                &Caller::root(),
                &attr(0o000, 1, 1, FileKind::Regular),
                R | W
            )
            .is_ok()
        );
        assert_eq!(
            check(&Caller::root(), &attr(0o600, 1, 1, FileKind::Regular), X),
            Err(MetaError::AccessDenied)
        );
        assert!(check(&Caller::root(), &attr(0o001, 1, 1, FileKind::Regular), X).is_ok());
        assert!(check(&Caller::root(), &attr(0o000, 1, 1, FileKind::Directory), X).is_ok());
    }

    #[test]
    fn sticky_directories() {
        let dir = attr(0o1777, 1, 1, FileKind::Directory);
        let file = attr(0o644, 2, 2, FileKind::Regular);
        assert!(check_sticky(&user(2, 2, &[]), &dir, &file).is_ok());
        assert!(check_sticky(&user(1, 9, &[]), &dir, &file).is_ok());
        assert_eq!(
            check_sticky(&user(3, 3, &[]), &dir, &file),
            Err(MetaError::NotPermitted)
        );
        assert!(
            check_sticky(
                &user(3, 3, &[]),
                &attr(0o777, 1, 1, FileKind::Directory),
                &file
            )
            .is_ok()
        );
    }
}
