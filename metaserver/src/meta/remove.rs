//! Removing names: unlink, rmdir, and dropping the link a rename replaces.
//!
//! Rules: the parent must be writable and searchable; the sticky bit limits who may remove;
//! rmdir needs an empty directory; an inode whose last link goes is purged at once unless it
//! is open, in which case it is marked orphan and purged on its last release (with a
//! shared store: its last release on every metaserver, see `shared_opens`).

use super::create::{touch_dir, writable_parent};
use super::{Meta, perm};
use crate::records::{InodeRec, Records, Writer};
use crate::store::Store;
use meridian_proto::*;

impl<S: Store> Meta<S> {
    pub(super) fn remove(
        &self,
        w: &mut Writer<'_>,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        dir_wanted: bool,
    ) -> MetaResult<()> {
        let dir = writable_parent(w, who, parent, name).map_err(|e| match (e, name) {
            (MetaError::Invalid(_), b".") => MetaError::Invalid("cannot remove '.'".into()),
            (MetaError::Invalid(_), b"..") => MetaError::NotEmpty,
            (e, _) => e,
        })?;
        let d = w.dentry(parent, name)?.ok_or(MetaError::NotFound)?;
        w.prefetch_removal(&d)?;
        let victim = w.inode(d.ino)?;
        let is_dir = victim.attr.kind == FileKind::Directory;
        match (dir_wanted, is_dir) {
            (true, false) => return Err(MetaError::NotDirectory),
            (false, true) => return Err(MetaError::IsDirectory),
            _ => {}
        }
        perm::check_sticky(who, &dir.attr, &victim.attr)?;
        if is_dir && !w.is_empty_dir(d.ino)? {
            return Err(MetaError::NotEmpty);
        }
        let now = Timestamp::now();
        w.del_dentry(parent, name)?;
        touch_dir(w, dir.attr, if is_dir { -1 } else { 0 }, now)?;
        self.drop_link(w, victim, now)
    }

    /// Takes one link away from `rec` (its name is already gone); purges or orphans it when
    /// none is left.
    pub(super) fn drop_link(
        &self,
        w: &mut Writer<'_>,
        mut rec: InodeRec,
        now: Timestamp,
    ) -> MetaResult<()> {
        let ino = rec.attr.ino;
        rec.attr.nlink = if rec.attr.kind == FileKind::Directory {
            0
        } else {
            rec.attr.nlink.saturating_sub(1)
        };
        rec.attr.ctime = now;
        if rec.attr.nlink > 0 {
            return w.put_inode(&rec);
        }
        let file = rec.attr.kind == FileKind::Regular;
        w.put_inode(&rec)?;
        self.orphan_or_purge(w, ino, file)
    }
}
