//! Directory handles: a listing is read whole at opendir (paged from the namespace) and
//! served by position, so offsets stay valid while the directory changes underneath (POSIX
//! leaves it open whether entries added or removed meanwhile appear).

use super::{Fs, Handle};
use crate::error::{FsError, FsResult};
use meridian_proto::*;
use std::sync::Arc;

const PAGE: usize = 1024;

impl Fs {
    /// Opens directory `ino` for listing; checks read permission.
    pub fn opendir(&self, who: &Caller, ino: InodeId) -> FsResult<u64> {
        let parent = self.ns.parent(ino)?;
        let mut entries = vec![
            DirEntry {
                name: b".".to_vec(),
                ino,
                kind: FileKind::Directory,
            },
            DirEntry {
                name: b"..".to_vec(),
                ino: parent,
                kind: FileKind::Directory,
            },
        ];
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.ns.readdir(who, ino, after.as_deref(), PAGE)?;
            let done = page.len() < PAGE;
            after = page.last().map(|e| e.name.clone());
            entries.extend(page);
            if done {
                break;
            }
        }
        Ok(self.new_handle(Handle::Dir {
            entries: Arc::new(entries),
        }))
    }

    /// The listing of a directory handle; the kernel's offset for entry `k` is `k + 1`.
    pub fn dir_entries(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        match self.handles.lock().get(&fh) {
            Some(Handle::Dir { entries }) => Ok(entries.clone()),
            Some(Handle::File { .. }) => Err(FsError::WrongMode(fh, "listing")),
            None => Err(FsError::BadHandle(fh)),
        }
    }

    /// The attributes of one listed entry (readdirplus); counts a kernel
    /// reference for each entry except `.` and `..`. Entries that vanished meanwhile are
    /// skipped.
    pub fn readdir_attr(&self, entry: &DirEntry) -> Option<Attr> {
        let attr = self.getattr(entry.ino).ok()?;
        if entry.name != b"." && entry.name != b".." {
            return Some(self.remember(attr));
        }
        Some(attr)
    }

    pub fn releasedir(&self, fh: u64) -> FsResult<()> {
        self.handles
            .lock()
            .remove(&fh)
            .map(|_| ())
            .ok_or(FsError::BadHandle(fh))
    }
}
