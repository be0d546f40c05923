//! Objectives in the namespace: validation of the `user.meridian.*` attributes, and the
//! placement the metaserver wants for each file — the record the multi-site capability
//! moves data from.
//!
//! Storage (xattrs, so they persist with the namespace):
//! - on the root: `user.meridian.objective.<NAME>` (source text) and `user.meridian.places`;
//! - on any inode: `user.meridian.objectives` (attached names, one per line),
//!   `user.meridian.keywords`, `user.meridian.labels`;
//! - per regular file, in its inode record, a [`PlacementRec`] (the name the file was last
//!   created or renamed as, the objectives generation it was evaluated at, and its SLOs);
//!   format 1 kept it in the hidden xattr `system.meridian.placement`, still read for a
//!   file whose inode has none, and moved into the inode when the file is next placed.
//!   Users read it as `user.meridian.placement` (read-only, virtual: not listed, so copy
//!   tools do not carry it).
//!
//! Invariants: an objective that does not parse, an attachment of an unknown objective, or a
//! place with a bad name is refused (EINVAL) when written. A file is re-evaluated in the
//! transaction that creates it, renames it, commits new data to it, or changes its keywords,
//! labels or attachments. A change of the catalogue, of a directory's attachments or a
//! directory rename bumps the objectives generation instead (one counter, not a walk of the
//! tree); a record older than the generation is re-evaluated when read.
//!
//! Cache: [`DirCache`] keeps directory names and attachments for one generation. Every
//! change that could make an entry wrong bumps the generation in the store, so an entry
//! is exact while the generation read in the transaction matches, whichever metaserver
//! made the change; a failed transaction empties it (it may have read its own rolled-back
//! writes).

use super::Meta;
use crate::records::{GENERATION, Records, Writer};
use crate::store::Store;
use meridian_objectives::{Catalogue, Engine, Facts, Level, Objective, valid_name};
use meridian_proto::*;
use std::collections::HashMap;
use std::sync::Arc;

pub const OBJECTIVE_PREFIX: &[u8] = b"user.meridian.objective.";
pub const PLACES: &[u8] = b"user.meridian.places";
pub const ATTACHED: &[u8] = b"user.meridian.objectives";
pub const KEYWORDS: &[u8] = b"user.meridian.keywords";
pub const LABELS: &[u8] = b"user.meridian.labels";
/// What users read: the file's SLOs, one per line.
pub const PLACEMENT: &[u8] = b"user.meridian.placement";
pub use crate::records::PlacementRec;
/// Where format 1 kept the record (not listed, not writable through the filesystem).
const RECORD: &[u8] = b"system.meridian.placement";

/// Directory names (parent, name) and attachments, valid at one objectives generation.
#[derive(Default)]
pub(super) struct DirCache {
    generation: Option<u64>,
    names: HashMap<InodeId, (InodeId, Vec<u8>)>,
    attached: HashMap<InodeId, Vec<String>>,
}

impl DirCache {
    /// Empties the cache unless it holds `generation`'s entries.
    fn at(&mut self, generation: u64) -> &mut DirCache {
        if self.generation != Some(generation) || self.names.len() > 100_000 {
            *self = DirCache {
                generation: Some(generation),
                ..DirCache::default()
            };
        }
        self
    }

    pub(super) fn clear(&mut self) {
        *self = DirCache::default();
    }
}

fn lines(v: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(v)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn invalid(msg: String) -> MetaError {
    MetaError::Invalid(msg)
}

/// Whether an xattr name is internal (hidden from listings, refused to users).
pub fn is_internal(name: &[u8]) -> bool {
    name.starts_with(b"system.meridian.")
}

fn catalogue(r: &impl Records) -> MetaResult<Catalogue> {
    Ok(Catalogue::new(lines(
        &r.xattr(ROOT, PLACES)?.unwrap_or_default(),
    )))
}

/// Checks a `user.meridian.*` value before it is stored.
pub fn validate(r: &impl Records, ino: InodeId, name: &[u8], value: &[u8]) -> MetaResult<()> {
    if name == PLACEMENT {
        return Err(MetaError::NotPermitted);
    }
    if let Some(obj) = name.strip_prefix(OBJECTIVE_PREFIX) {
        if ino != ROOT {
            return Err(invalid("objectives are added on the share root".into()));
        }
        let (obj, src) = (String::from_utf8_lossy(obj), String::from_utf8_lossy(value));
        Objective::parse(&obj, &src, &catalogue(r)?)
            .map_err(|e| invalid(format!("objective {obj}: {e}")))?;
    } else if name == PLACES {
        if ino != ROOT {
            return Err(invalid("places are declared on the share root".into()));
        }
        if let Some(bad) = lines(value).into_iter().find(|p| !valid_name(p)) {
            return Err(invalid(format!("invalid place name {bad:?}")));
        }
    } else if name == ATTACHED {
        for o in lines(value) {
            let mut key = OBJECTIVE_PREFIX.to_vec();
            key.extend_from_slice(o.as_bytes());
            if r.xattr(ROOT, &key)?.is_none() {
                return Err(invalid(format!("no objective named {o}")));
            }
        }
    }
    Ok(())
}

fn age(now: Timestamp, t: Timestamp) -> f64 {
    (now.secs - t.secs) as f64 + (now.nanos as f64 - t.nanos as f64) / 1e9
}

impl<S: Store> Meta<S> {
    /// `dir` and its ancestors up to the root, nearest first, each with its mount-relative
    /// path (the root's is ""). Names come from the cache or, once per directory and
    /// generation, from a scan of its parent's entries.
    fn dir_chain(
        &self,
        r: &impl Records,
        generation: u64,
        dir: InodeId,
    ) -> MetaResult<Vec<(InodeId, String)>> {
        let mut up = Vec::new(); // (inode, its name), nearest first
        let mut d = dir;
        while d != ROOT {
            let cached = self.dirs.lock().at(generation).names.get(&d).cloned();
            let (parent, name) = match cached {
                Some(c) => c,
                None => {
                    let parent = r.inode(d)?.parent;
                    let name = name_in(r, parent, d)?;
                    let mut cache = self.dirs.lock();
                    cache.at(generation).names.insert(d, (parent, name.clone()));
                    (parent, name)
                }
            };
            up.push((d, String::from_utf8_lossy(&name).into_owned()));
            d = parent;
        }
        // Paths from the root down, then handed out nearest first.
        let mut chain = vec![(ROOT, String::new())];
        for (ino, name) in up.into_iter().rev() {
            let prefix = &chain.last().expect("root").1;
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            chain.push((ino, path));
        }
        chain.reverse();
        Ok(chain)
    }

    /// After a rename: files are re-evaluated at their new name; a directory's move changes
    /// the paths below it, so every record goes stale.
    pub(super) fn after_rename(
        &self,
        w: &mut Writer<'_>,
        names: [(InodeId, &[u8]); 2],
    ) -> MetaResult<()> {
        for (parent, name) in names {
            match w.dentry(parent, name)? {
                Some(d) if d.kind == FileKind::Regular => {
                    self.place(w, d.ino, parent, name, false)?
                }
                Some(d) if d.kind == FileKind::Directory => bump(w)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The engine for the current catalogue (rebuilt when the generation moved).
    fn engine(&self, r: &impl Records, generation: u64) -> MetaResult<Arc<Engine>> {
        if let Some((g, e)) = &*self.engine.lock()
            && *g == generation
        {
            return Ok(e.clone());
        }
        let cat = catalogue(r)?;
        let mut objs = Vec::new();
        for name in r.xattr_names(ROOT)? {
            let Some(obj) = name.strip_prefix(OBJECTIVE_PREFIX) else {
                continue;
            };
            let src = r.xattr(ROOT, &name)?.unwrap_or_default();
            let obj = String::from_utf8_lossy(obj);
            match Objective::parse(&obj, &String::from_utf8_lossy(&src), &cat) {
                Ok(o) => objs.push(o),
                Err(e) => tracing::warn!(objective = %obj, error = %e, "objective skipped"),
            }
        }
        let engine = Arc::new(
            Engine::new(&objs, &["hs-mount".to_string()]).map_err(|e| invalid(e.to_string()))?,
        );
        *self.engine.lock() = Some((generation, engine.clone()));
        Ok(engine)
    }

    /// A directory's attachments, from the cache when it holds them.
    fn dir_attached(
        &self,
        r: &impl Records,
        generation: u64,
        dir: InodeId,
    ) -> MetaResult<Vec<String>> {
        if let Some(a) = self.dirs.lock().at(generation).attached.get(&dir) {
            return Ok(a.clone());
        }
        let a = lines(&r.xattr(dir, ATTACHED)?.unwrap_or_default());
        let mut cache = self.dirs.lock();
        cache.at(generation).attached.insert(dir, a.clone());
        Ok(a)
    }

    /// The SLOs `ino` should have, reached as `name` in `parent`. A `fresh` inode (made in
    /// this transaction) has no attributes of its own yet, so none are read.
    fn evaluate(
        &self,
        r: &impl Records,
        ino: InodeId,
        parent: InodeId,
        name: &[u8],
        fresh: bool,
    ) -> MetaResult<PlacementRec> {
        let generation = r.counter(GENERATION)?;
        let engine = self.engine(r, generation)?;
        let rec = r.inode(ino)?;
        let chain = self.dir_chain(r, generation, parent)?;
        let dir = &chain[0].1;
        let name_s = String::from_utf8_lossy(name);
        let path = if dir.is_empty() {
            name_s.into_owned()
        } else {
            format!("{dir}/{name_s}")
        };
        let own = |key: &[u8]| -> MetaResult<Vec<String>> {
            match fresh {
                true => Ok(Vec::new()),
                false => Ok(lines(&r.xattr(ino, key)?.unwrap_or_default())),
            }
        };
        let mut levels = vec![(Level::File, own(ATTACHED)?)];
        for (d, dpath) in chain {
            levels.push((
                Level::Directory(dpath),
                self.dir_attached(r, generation, d)?,
            ));
        }
        let keywords = own(KEYWORDS)?;
        let labels = own(LABELS)?;
        let now = Timestamp::now();
        let facts = Facts {
            path: &path,
            size: rec.attr.size,
            last_use_age: age(now, rec.attr.atime.max(rec.attr.mtime)),
            last_modified_age: age(now, rec.attr.mtime),
            keywords: &keywords,
            labels: &labels,
            is_live: true,
            is_directory: false,
        };
        let slos = engine.slos(&facts, &engine.in_force(&levels));
        Ok(PlacementRec {
            parent,
            name: name.to_vec(),
            generation,
            slos: slos.iter().map(ToString::to_string).collect(),
        })
    }

    /// Re-evaluates a regular file reached as `name` in `parent` and stores its record
    /// if it changed (`fresh`: see [`Meta::evaluate`]; a fresh file has none yet).
    pub(super) fn place(
        &self,
        w: &mut Writer<'_>,
        ino: InodeId,
        parent: InodeId,
        name: &[u8],
        fresh: bool,
    ) -> MetaResult<()> {
        let mut inode = w.inode(ino)?;
        if inode.attr.kind != FileKind::Regular {
            return Ok(());
        }
        let rec = self.evaluate(w, ino, parent, name, fresh)?;
        if !fresh && inode.placement.is_none() && w.xattr(ino, RECORD)?.is_some() {
            w.del_xattr(ino, RECORD)?; // format 1's record moves into the inode
        } else if inode.placement.as_ref() == Some(&rec) {
            return Ok(()); // most commits: the inode's row is not written again
        }
        inode.placement = Some(rec);
        w.put_inode(&inode)
    }

    /// Re-evaluates a file at the name its record holds (after new data or new tags). A
    /// file unlinked while open has no name left (its directory may be gone too): it keeps
    /// its record as it was.
    pub(super) fn replace(&self, w: &mut Writer<'_>, ino: InodeId) -> MetaResult<()> {
        if w.inode(ino)?.attr.nlink == 0 {
            return Ok(());
        }
        match record(w, ino)? {
            Some(r) => self.place(w, ino, r.parent, &r.name, false),
            None => Ok(()),
        }
    }

    /// After an xattr change: what it invalidates.
    pub(super) fn after_xattr(
        &self,
        w: &mut Writer<'_>,
        ino: InodeId,
        name: &[u8],
    ) -> MetaResult<()> {
        let file = w.inode(ino)?.attr.kind == FileKind::Regular;
        let ours = name.starts_with(OBJECTIVE_PREFIX) || name == PLACES || name == ATTACHED;
        if file && (name == ATTACHED || name == KEYWORDS || name == LABELS) {
            self.replace(w, ino)
        } else if ours {
            bump(w)
        } else {
            Ok(())
        }
    }

    /// What `user.meridian.placement` shows: the record, re-evaluated if stale.
    pub(super) fn placement_text(&self, r: &impl Records, ino: InodeId) -> MetaResult<Vec<u8>> {
        let Some(mut rec) = record(r, ino)? else {
            return Err(MetaError::NoAttribute);
        };
        if rec.generation != r.counter(GENERATION)? {
            rec = self
                .evaluate(r, ino, rec.parent, &rec.name, false)
                .unwrap_or(rec);
        }
        Ok(rec.slos.join("\n").into_bytes())
    }
}

/// The name of `child` in directory `parent`.
fn name_in(r: &impl Records, parent: InodeId, child: InodeId) -> MetaResult<Vec<u8>> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = r.children(parent, after.as_deref(), 1024)?;
        let Some((last, _)) = page.last() else {
            return Err(MetaError::NotFound);
        };
        if let Some((n, _)) = page.iter().find(|(_, e)| e.ino == child) {
            return Ok(n.clone());
        }
        after = Some(last.clone());
    }
}

/// Marks every record stale (a catalogue, directory attachment or directory name changed).
pub fn bump(w: &mut Writer<'_>) -> MetaResult<()> {
    w.add_counter(GENERATION, 1)
}

/// `ino`'s placement record: in its inode, or where format 1 kept it.
pub fn record(r: &impl Records, ino: InodeId) -> MetaResult<Option<PlacementRec>> {
    if let Some(rec) = r.inode(ino)?.placement {
        return Ok(Some(rec));
    }
    Ok(r.xattr(ino, RECORD)?
        .and_then(|v| postcard::from_bytes(&v).ok()))
}
