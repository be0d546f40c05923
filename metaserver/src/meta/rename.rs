//! Rename, with POSIX replacement, RENAME_NOREPLACE and RENAME_EXCHANGE.
//!
//! Rules: both parents writable and searchable; the sticky bit guards source and replaced
//! target; moving a directory to another parent needs write permission on it (its `..`
//! changes) and may not put it inside itself (EINVAL); a directory may replace only an empty
//! directory, a non-directory only a non-directory. Renaming a name onto another name of the
//! same inode does nothing. The moved inode's ctime and both parents' mtime and ctime become
//! now; directory nlinks follow their subdirectories.

use super::create::{touch_dir, writable_parent};
use super::{Meta, perm};
use crate::records::{DentryRec, InodeRec, Records, Writer};
use crate::store::Store;
use meridian_proto::*;

/// One rename request.
pub struct Move<'a> {
    pub parent: InodeId,
    pub name: &'a [u8],
    pub new_parent: InodeId,
    pub new_name: &'a [u8],
    pub mode: RenameMode,
}

/// Whether `ancestor` is `ino` or one of its ancestors.
fn is_ancestor(w: &Writer<'_>, ancestor: InodeId, mut ino: InodeId) -> MetaResult<bool> {
    loop {
        if ino == ancestor {
            return Ok(true);
        }
        if ino == ROOT {
            return Ok(false);
        }
        ino = w.inode(ino)?.parent;
    }
}

fn check_mover(
    w: &Writer<'_>,
    who: &Caller,
    m: &Move<'_>,
    src: &InodeRec,
    dst_dir: InodeId,
) -> MetaResult<()> {
    if src.attr.kind == FileKind::Directory && m.parent != dst_dir {
        perm::check(who, &src.attr, perm::W)?;
        if is_ancestor(w, src.attr.ino, dst_dir)? {
            return Err(MetaError::Invalid(
                "cannot move a directory into itself".into(),
            ));
        }
    }
    Ok(())
}

impl<S: Store> Meta<S> {
    pub(super) fn rename_in(
        &self,
        w: &mut Writer<'_>,
        who: &Caller,
        m: Move<'_>,
    ) -> MetaResult<()> {
        w.prefetch_entries(&[(m.parent, m.name), (m.new_parent, m.new_name)])?;
        let src_dir = writable_parent(w, who, m.parent, m.name)?;
        let dst_dir = writable_parent(w, who, m.new_parent, m.new_name)?;
        let sd = w.dentry(m.parent, m.name)?.ok_or(MetaError::NotFound)?;
        let src = w.inode(sd.ino)?;
        perm::check_sticky(who, &src_dir.attr, &src.attr)?;
        let dd = w.dentry(m.new_parent, m.new_name)?;
        let dst = match dd {
            Some(d) => Some(w.inode(d.ino)?),
            None => None,
        };
        if let Some(dst) = &dst {
            perm::check_sticky(who, &dst_dir.attr, &dst.attr)?;
        }
        check_mover(w, who, &m, &src, m.new_parent)?;
        match (m.mode, dst) {
            (RenameMode::Exchange, None) => Err(MetaError::NotFound),
            (RenameMode::Exchange, Some(dst)) => {
                check_mover(
                    w,
                    who,
                    &Move {
                        parent: m.new_parent,
                        new_parent: m.parent,
                        ..m
                    },
                    &dst,
                    m.parent,
                )?;
                self.exchange(w, &m, src, dst)
            }
            (RenameMode::NoReplace, Some(_)) => Err(MetaError::Exists),
            (_, Some(dst)) if dst.attr.ino == src.attr.ino => Ok(()),
            (_, dst) => self.move_over(w, &m, src, dst),
        }
    }

    fn move_over(
        &self,
        w: &mut Writer<'_>,
        m: &Move<'_>,
        mut src: InodeRec,
        dst: Option<InodeRec>,
    ) -> MetaResult<()> {
        let src_is_dir = src.attr.kind == FileKind::Directory;
        if let Some(dst) = &dst {
            match (src_is_dir, dst.attr.kind == FileKind::Directory) {
                (true, false) => return Err(MetaError::NotDirectory),
                (false, true) => return Err(MetaError::IsDirectory),
                (true, true) if !w.is_empty_dir(dst.attr.ino)? => return Err(MetaError::NotEmpty),
                _ => {}
            }
        }
        let now = Timestamp::now();
        let dst_is_dir = dst
            .as_ref()
            .is_some_and(|d| d.attr.kind == FileKind::Directory);
        w.del_dentry(m.parent, m.name)?;
        w.put_dentry(
            m.new_parent,
            m.new_name,
            DentryRec {
                ino: src.attr.ino,
                kind: src.attr.kind,
            },
        )?;
        if let Some(dst) = dst {
            self.drop_link(w, dst, now)?;
        }
        src.attr.ctime = now;
        if src_is_dir {
            src.parent = m.new_parent;
        }
        w.put_inode(&src)?;
        // nlink of the parents: the source parent loses a subdirectory, the target parent
        // gains one unless it replaced one.
        let sub = |moved: bool| if moved { 1 } else { 0 };
        let src_parent = w.inode(m.parent)?.attr;
        if m.parent == m.new_parent {
            touch_dir(w, src_parent, -sub(dst_is_dir), now)
        } else {
            touch_dir(w, src_parent, -sub(src_is_dir), now)?;
            let dst_parent = w.inode(m.new_parent)?.attr;
            touch_dir(w, dst_parent, sub(src_is_dir) - sub(dst_is_dir), now)
        }
    }

    fn exchange(
        &self,
        w: &mut Writer<'_>,
        m: &Move<'_>,
        mut a: InodeRec,
        mut b: InodeRec,
    ) -> MetaResult<()> {
        if a.attr.ino == b.attr.ino {
            return Ok(());
        }
        let now = Timestamp::now();
        w.put_dentry(
            m.new_parent,
            m.new_name,
            DentryRec {
                ino: a.attr.ino,
                kind: a.attr.kind,
            },
        )?;
        w.put_dentry(
            m.parent,
            m.name,
            DentryRec {
                ino: b.attr.ino,
                kind: b.attr.kind,
            },
        )?;
        let a_dir = a.attr.kind == FileKind::Directory;
        let b_dir = b.attr.kind == FileKind::Directory;
        if a_dir {
            a.parent = m.new_parent;
        }
        if b_dir {
            b.parent = m.parent;
        }
        a.attr.ctime = now;
        b.attr.ctime = now;
        w.put_inode(&a)?;
        w.put_inode(&b)?;
        let delta = (b_dir as i32) - (a_dir as i32);
        let p = w.inode(m.parent)?.attr;
        if m.parent == m.new_parent {
            return touch_dir(w, p, 0, now);
        }
        touch_dir(w, p, delta, now)?;
        let q = w.inode(m.new_parent)?.attr;
        touch_dir(w, q, -delta, now)
    }
}
