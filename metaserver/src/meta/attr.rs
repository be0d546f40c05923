//! Attribute changes (chmod, chown, truncate, utimes) and extended attributes.
//!
//! Rules (Linux): only root changes the owner (an owner may "change" it to itself); the owner
//! may change the group to one it belongs to; only owner or root change the mode, and a
//! non-root caller outside the file's group loses the set-gid bit; explicit times need owner
//! or root, "now" also any writer; truncation needs write permission unless it comes through
//! an open handle. Every successful change sets ctime. Privileges go as on a local file
//! system: a change of owner or group of a non-directory, and a write or truncation by a
//! caller without `CAP_FSETID` (`SetAttr::kill_suidgid`), clear set-user-ID, and set-group-ID
//! where the group may execute or the caller is outside the file's group.
//! Extended attributes: `user.*` need read/write permission on the inode and exist only on
//! regular files and directories; `trusted.*` and `security.*` need root.

use super::{Meta, perm};
use crate::records::{BYTES, Records, Writer};
use crate::store::Store;
use meridian_proto::*;

fn check_chown(who: &Caller, attr: &Attr, set: &SetAttr) -> MetaResult<()> {
    if who.is_root() {
        return Ok(());
    }
    if let Some(uid) = set.uid
        && (uid != attr.uid || who.uid != attr.uid)
    {
        return Err(MetaError::NotPermitted);
    }
    if let Some(gid) = set.gid
        && gid != attr.gid
        && (who.uid != attr.uid || !who.in_group(gid))
    {
        return Err(MetaError::NotPermitted);
    }
    if set.gid.is_some() && who.uid != attr.uid {
        return Err(MetaError::NotPermitted);
    }
    Ok(())
}

fn check_times(who: &Caller, attr: &Attr, set: &SetAttr) -> MetaResult<()> {
    let explicit =
        matches!(set.atime, Some(TimeSet::At(_))) || matches!(set.mtime, Some(TimeSet::At(_)));
    let any = set.atime.is_some() || set.mtime.is_some();
    if !any || who.is_root() || who.uid == attr.uid {
        return Ok(());
    }
    if explicit {
        return Err(MetaError::NotPermitted);
    }
    perm::check(who, attr, perm::W)
}

fn resolve_time(t: TimeSet, now: Timestamp) -> Timestamp {
    match t {
        TimeSet::Now => now,
        TimeSet::At(t) => t,
    }
}

pub(super) fn setattr(
    w: &mut Writer<'_>,
    who: &Caller,
    ino: InodeId,
    set: &SetAttr,
) -> MetaResult<Attr> {
    let mut rec = w.inode(ino)?;
    let old = rec.attr.clone();
    check_chown(who, &old, set)?;
    check_times(who, &old, set)?;
    if set.mode.is_some() {
        perm::check_owner(who, &old)?;
    }
    let now = Timestamp::now();
    let a = &mut rec.attr;
    if let Some(size) = set.size {
        match old.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(MetaError::IsDirectory),
            _ => {
                return Err(MetaError::Invalid(
                    "only regular files can be truncated".into(),
                ));
            }
        }
        if !set.via_handle {
            perm::check(who, &old, perm::W)?;
        }
        if size < old.size {
            let mut layout = w.layout(ino)?;
            layout.truncate(size);
            w.put_layout(ino, &layout)?;
        }
        a.size = size;
        a.mtime = now;
        w.add_counter(BYTES, size as i64 - old.size as i64)?;
    }
    if let Some(uid) = set.uid {
        a.uid = uid;
    }
    if let Some(gid) = set.gid {
        a.gid = gid;
    }
    if let Some(mode) = set.mode {
        let mut mode = mode & 0o7777;
        if !who.is_root() && !who.in_group(a.gid) {
            mode &= !0o2000;
        }
        a.perm = mode;
    }
    let chown = set.uid.is_some() || set.gid.is_some();
    if set.kill_suidgid || (chown && old.kind != FileKind::Directory) {
        let keeps_sgid = who.is_root() || who.in_group(old.gid);
        a.perm = kill_suidgid(a.perm, keeps_sgid);
    }
    if let Some(t) = set.atime {
        a.atime = resolve_time(t, now);
    }
    if let Some(t) = set.mtime {
        a.mtime = resolve_time(t, now);
    }
    a.ctime = set.ctime.unwrap_or(now);
    w.put_inode(&rec)?;
    Ok(rec.attr)
}

/// `perm` without set-user-ID, and without set-group-ID if the group may execute or the
/// caller is neither root nor in the file's group (`in_group` false), as Linux does.
pub(super) fn kill_suidgid(perm: u16, in_group: bool) -> u16 {
    let mut perm = perm & !0o4000;
    if perm & 0o010 != 0 || !in_group {
        perm &= !0o2000;
    }
    perm
}

/// The namespace an attribute name falls in decides who may touch it.
fn check_xattr(who: &Caller, attr: &Attr, name: &[u8], mask: u32) -> MetaResult<()> {
    if name.is_empty() {
        return Err(MetaError::Invalid("empty attribute name".into()));
    }
    if name.len() > XATTR_NAME_MAX {
        return Err(MetaError::NameTooLong);
    }
    if name.starts_with(b"user.") {
        if !matches!(attr.kind, FileKind::Regular | FileKind::Directory) {
            return Err(if mask == perm::W {
                MetaError::NotPermitted
            } else {
                MetaError::NoAttribute
            });
        }
        if attr.kind == FileKind::Directory && attr.perm & 0o1000 != 0 && mask == perm::W {
            perm::check_owner(who, attr)?;
        }
        return perm::check(who, attr, mask);
    }
    if name.starts_with(b"trusted.") || name.starts_with(b"security.") {
        return if who.is_root() || mask == perm::R {
            Ok(())
        } else {
            Err(MetaError::NotPermitted)
        };
    }
    if name.starts_with(b"system.") {
        return Err(MetaError::Unsupported(
            "system.* attributes (POSIX ACLs)".into(),
        ));
    }
    Err(MetaError::Unsupported(format!(
        "attribute namespace of {:?}",
        String::from_utf8_lossy(name)
    )))
}

pub(super) fn getxattr(
    r: &impl Records,
    who: &Caller,
    ino: InodeId,
    name: &[u8],
) -> MetaResult<Vec<u8>> {
    let attr = r.inode(ino)?.attr;
    check_xattr(who, &attr, name, perm::R)?;
    if name.starts_with(b"trusted.") && !who.is_root() {
        return Err(MetaError::NoAttribute);
    }
    r.xattr(ino, name)?.ok_or(MetaError::NoAttribute)
}

pub(super) fn setxattr(
    w: &mut Writer<'_>,
    who: &Caller,
    ino: InodeId,
    name: &[u8],
    value: &[u8],
    mode: XattrMode,
) -> MetaResult<()> {
    let mut rec = w.inode(ino)?;
    check_xattr(who, &rec.attr, name, perm::W)?;
    if value.len() > XATTR_SIZE_MAX {
        return Err(MetaError::AttributeTooLarge);
    }
    let exists = w.xattr(ino, name)?.is_some();
    match (mode, exists) {
        (XattrMode::CreateOnly, true) => return Err(MetaError::Exists),
        (XattrMode::ReplaceOnly, false) => return Err(MetaError::NoAttribute),
        _ => {}
    }
    w.put_xattr(ino, name, value)?;
    rec.attr.ctime = Timestamp::now();
    w.put_inode(&rec)
}

pub(super) fn listxattr(r: &impl Records, who: &Caller, ino: InodeId) -> MetaResult<Vec<Vec<u8>>> {
    r.inode(ino)?;
    let names = r.xattr_names(ino)?;
    Ok(names
        .into_iter()
        .filter(|n| who.is_root() || !n.starts_with(b"trusted."))
        .collect())
}

pub(super) fn removexattr(
    w: &mut Writer<'_>,
    who: &Caller,
    ino: InodeId,
    name: &[u8],
) -> MetaResult<()> {
    let mut rec = w.inode(ino)?;
    check_xattr(who, &rec.attr, name, perm::W)?;
    if w.xattr(ino, name)?.is_none() {
        return Err(MetaError::NoAttribute);
    }
    w.del_xattr(ino, name)?;
    rec.attr.ctime = Timestamp::now();
    w.put_inode(&rec)
}

impl<S: Store> Meta<S> {}
