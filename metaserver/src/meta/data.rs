//! Open files and file data: open counts, layouts and commits.
//!
//! Rules: opening checks read/write permission (directories may not be opened for writing);
//! a commit replaces the chunks it names (or makes the file inline), sets size, mtime and
//! ctime, and cuts the layout at the new size. The open count keeps an unlinked inode alive;
//! its last release purges it.

use super::{Meta, perm};
use crate::records::{BYTES, InodeRec, Records, Writer};
use crate::store::Store;
use meridian_proto::*;

impl<S: Store> Meta<S> {
    pub(super) fn is_open(&self, ino: InodeId) -> bool {
        self.opens.lock().get(&ino).is_some_and(|&n| n > 0)
    }

    pub(super) fn open_file(
        &self,
        who: &Caller,
        ino: InodeId,
        read: bool,
        write: bool,
    ) -> MetaResult<Attr> {
        let attr = self.read(|t| Ok(t.inode(ino)?.attr))?;
        if write && attr.kind == FileKind::Directory {
            return Err(MetaError::IsDirectory);
        }
        let mask = if read { perm::R } else { 0 } | if write { perm::W } else { 0 };
        perm::check(who, &attr, mask)?;
        *self.opens.lock().entry(ino).or_insert(0) += 1;
        let orphan = attr.nlink == 0 && attr.kind == FileKind::Regular;
        if orphan
            && self.store.shared()
            && let Err(e) = self.hold_orphan(ino)
        {
            self.release_file(ino)?;
            return Err(e);
        }
        Ok(attr)
    }

    pub(super) fn release_file(&self, ino: InodeId) -> MetaResult<()> {
        let last = {
            let mut opens = self.opens.lock();
            let n = opens.entry(ino).or_insert(1);
            *n = n.saturating_sub(1);
            let last = *n == 0;
            if last {
                opens.remove(&ino);
            }
            last
        };
        // Only an orphan this process holds can need purging (see `shared_opens`).
        if !last || !self.orphaned.lock().remove(&ino) {
            return Ok(());
        }
        self.release_orphan(ino)
    }
}

pub(super) fn commit(w: &mut Writer<'_>, ino: InodeId, c: &Commit) -> MetaResult<Attr> {
    let rec = w.inode(ino)?;
    if rec.attr.kind != FileKind::Regular {
        return Err(MetaError::Invalid("not a regular file".into()));
    }
    if let Some(bytes) = &c.inline {
        if !c.chunks.is_empty() {
            return Err(MetaError::Invalid(
                "a commit is either inline or chunks".into(),
            ));
        }
        // The layout is cut at the new size, as below; the bytes are not copied first.
        let kept = bytes
            .len()
            .min(usize::try_from(c.size).unwrap_or(usize::MAX));
        w.put_inline(ino, &bytes[..kept])?;
        return set_size(w, rec, c);
    }
    let mut layout = match w.layout(ino)? {
        Layout::Inline(old) if c.chunks.is_empty() => Layout::Inline(old),
        old => {
            let mut map = match old {
                Layout::Chunks(m) => m,
                Layout::Inline(bytes) if bytes.is_empty() => Default::default(),
                Layout::Inline(_) => {
                    if !c.chunks.iter().any(|(i, _)| *i == 0) {
                        return Err(MetaError::Invalid(
                            "converting an inline file needs chunk 0".into(),
                        ));
                    }
                    Default::default()
                }
            };
            for (i, r) in &c.chunks {
                if r.is_some_and(|r| r.len as u64 > CHUNK_SIZE) {
                    return Err(MetaError::Invalid("a block is at most CHUNK_SIZE".into()));
                }
                match r {
                    Some(r) => map.insert(*i, *r),
                    None => map.remove(i),
                };
            }
            Layout::Chunks(map)
        }
    };
    layout.truncate(c.size);
    w.put_layout(ino, &layout)?;
    set_size(w, rec, c)
}

/// The attributes a commit sets: size, mtime and ctime (and the namespace's byte count).
fn set_size(w: &mut Writer<'_>, mut rec: InodeRec, c: &Commit) -> MetaResult<Attr> {
    w.add_counter(BYTES, c.size as i64 - rec.attr.size as i64)?;
    rec.attr.size = c.size;
    rec.attr.mtime = c.mtime;
    rec.attr.ctime = c.mtime.max(rec.attr.ctime);
    w.put_inode(&rec)?;
    Ok(rec.attr)
}
