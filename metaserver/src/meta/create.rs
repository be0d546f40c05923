//! Creating names: new inodes (files, FIFOs, sockets, devices, directories, symlinks) and
//! hard links to existing ones.
//!
//! Rules: the parent must be a directory the caller may write and search; the name must be
//! free; a new inode in a set-gid directory takes the directory's group, and a new directory
//! there inherits the set-gid bit. Parent mtime and ctime become now.

use super::{Meta, check_name, dir_rec, perm};
use crate::records::{DentryRec, FILES, InodeRec, Records, Writer};
use crate::store::Store;
use meridian_proto::*;

/// What to create.
pub struct New {
    pub kind: FileKind,
    pub mode: u16,
    pub rdev: u32,
    pub target: Vec<u8>,
}

/// The parent directory record, checked for creating or removing `name` in it.
pub(super) fn writable_parent(
    w: &Writer<'_>,
    who: &Caller,
    parent: InodeId,
    name: &[u8],
) -> MetaResult<InodeRec> {
    w.prefetch_entries(&[(parent, name)])?;
    let dir = dir_rec(w, parent)?;
    if dir.attr.nlink == 0 {
        return Err(MetaError::NotFound); // a removed directory takes no new entries
    }
    check_name(name)?;
    perm::check(who, &dir.attr, perm::W | perm::X)?;
    Ok(dir)
}

/// Stamps the parent's mtime and ctime, adjusts its nlink by `nlink_delta`, and stores it.
pub(super) fn touch_dir(
    w: &mut Writer<'_>,
    mut dir: Attr,
    nlink_delta: i32,
    now: Timestamp,
) -> MetaResult<()> {
    dir.mtime = now;
    dir.ctime = now;
    dir.nlink = dir.nlink.saturating_add_signed(nlink_delta);
    w.put_attr(&dir)
}

impl New {
    /// What to create for `what`, checked.
    pub(super) fn of(what: Make<'_>) -> MetaResult<New> {
        let (kind, mode, rdev, target) = match what {
            Make::Node {
                kind: FileKind::Directory | FileKind::Symlink,
                ..
            } => {
                return Err(MetaError::Invalid(
                    "mknod makes files, FIFOs, sockets and devices".into(),
                ));
            }
            Make::Node { kind, mode, rdev } => (kind, mode, rdev, Vec::new()),
            Make::File { mode } => (FileKind::Regular, mode, 0, Vec::new()),
            Make::Dir { mode } => (FileKind::Directory, mode, 0, Vec::new()),
            Make::Symlink { target } if target.len() > PATH_MAX => {
                return Err(MetaError::NameTooLong);
            }
            Make::Symlink { target } => (FileKind::Symlink, 0o777, 0, target.to_vec()),
        };
        Ok(New {
            kind,
            mode,
            rdev,
            target,
        })
    }
}

impl<S: Store> Meta<S> {
    pub(super) fn create(
        &self,
        w: &mut Writer<'_>,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        new: New,
    ) -> MetaResult<Attr> {
        let dir = writable_parent(w, who, parent, name)?;
        if w.dentry(parent, name)?.is_some() {
            return Err(MetaError::Exists);
        }
        let is_dir = new.kind == FileKind::Directory;
        let mut perm_bits = new.mode & 0o7777;
        let gid = if dir.attr.perm & 0o2000 != 0 {
            if is_dir {
                perm_bits |= 0o2000;
            }
            dir.attr.gid
        } else {
            who.gid
        };
        if !is_dir && perm_bits & 0o2000 != 0 && !who.is_root() && !who.in_group(gid) {
            perm_bits &= !0o2000;
        }
        let now = Timestamp::now();
        let ino = self.alloc_ino(w)?;
        let attr = Attr {
            ino,
            kind: new.kind,
            perm: perm_bits,
            nlink: if is_dir { 2 } else { 1 },
            uid: who.uid,
            gid,
            rdev: new.rdev,
            size: if new.kind == FileKind::Symlink {
                new.target.len() as u64
            } else {
                0
            },
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
        };
        w.put_inode(&InodeRec {
            attr: attr.clone(),
            parent,
            target: new.target,
            placement: None, // evaluated by the caller, in the same transaction
        })?;
        w.put_dentry(
            parent,
            name,
            DentryRec {
                ino,
                kind: new.kind,
            },
        )?;
        w.add_counter(FILES, 1)?;
        touch_dir(w, dir.attr, if is_dir { 1 } else { 0 }, now)?;
        Ok(attr)
    }
}

/// Adds the name `parent/name` for the existing inode `ino`.
pub(super) fn link(
    w: &mut Writer<'_>,
    who: &Caller,
    ino: InodeId,
    parent: InodeId,
    name: &[u8],
) -> MetaResult<Attr> {
    let mut rec = w.inode(ino)?;
    let dir = writable_parent(w, who, parent, name)?;
    if w.dentry(parent, name)?.is_some() {
        return Err(MetaError::Exists);
    }
    if rec.attr.kind == FileKind::Directory {
        return Err(MetaError::NotPermitted);
    }
    if rec.attr.nlink >= LINK_MAX {
        return Err(MetaError::TooManyLinks);
    }
    let now = Timestamp::now();
    if rec.attr.nlink == 0 {
        w.set_orphan(ino, None)?; // linkat of an O_TMPFILE-style orphan brings it back
    }
    rec.attr.nlink += 1;
    rec.attr.ctime = now;
    w.put_inode(&rec)?;
    w.put_dentry(
        parent,
        name,
        DentryRec {
            ino,
            kind: rec.attr.kind,
        },
    )?;
    touch_dir(w, dir.attr, 0, now)?;
    Ok(rec.attr)
}
