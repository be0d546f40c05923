//! Property test: random namespace and data operations through the filesystem core (no
//! kernel), each result compared with a reference model — outcome, errno and bytes.
//!
//! The model is a map from path to node plus the bytes of each file; the core runs over the
//! in-memory store and block store, with a small inline limit so files cross between inline
//! and chunked layouts. After the run, a second core over the same namespace (a "remount")
//! must read every file back exactly.

use meridian_fs::blocks::MemBlockStore;
use meridian_fs::cache::{BlockCache, CacheConfig};
use meridian_fs::core::OpenMode;
use meridian_fs::{Fs, FsConfig, FsError};
use meridian_metaserver::{MemStore, Meta, MetaConfig};
use meridian_proto::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Every path the test uses: depth one and two over NAMES.
fn paths() -> Vec<String> {
    let mut v: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    for a in NAMES {
        for b in NAMES {
            v.push(format!("{a}/{b}"));
        }
    }
    v
}

#[derive(Clone, Debug)]
enum Op {
    Create(usize),
    Mkdir(usize),
    Unlink(usize),
    Rmdir(usize),
    Rename(usize, usize),
    Link(usize, usize),
    Write(usize, u64, usize, u8),
    Truncate(usize, u64),
    Read(usize, u64, u64),
    Close(usize),
}

/// Mostly small; sometimes a chunk's start exactly (where an overwrite leaves the committed
/// bytes past it unmerged), or anywhere in three chunks.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..300,
        2 => 0u64..70_000,
        1 => 0u64..(9 << 20),
        1 => prop::sample::select(vec![0, CHUNK_SIZE, 2 * CHUNK_SIZE]),
    ]
}

/// Mostly short; sometimes up to 1 MiB (as a streaming writer writes), so a chunk's buffer
/// outgrows what a short read or write touches.
fn write_len() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 1usize..5000, 1 => 1usize..(1 << 20)]
}

/// A path index, mostly among the three top-level names so operations meet on one file.
fn path() -> BoxedStrategy<usize> {
    prop_oneof![3 => 0..3usize, 1 => 0..12usize].boxed()
}

fn op() -> impl Strategy<Value = Op> {
    let p = path();
    prop_oneof![
        3 => p.clone().prop_map(Op::Create),
        2 => p.clone().prop_map(Op::Mkdir),
        2 => p.clone().prop_map(Op::Unlink),
        1 => p.clone().prop_map(Op::Rmdir),
        2 => (p.clone(), p.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (p.clone(), p.clone()).prop_map(|(a, b)| Op::Link(a, b)),
        5 => (p.clone(), offset(), write_len(), any::<u8>()).prop_map(|(a, o, l, b)| Op::Write(a, o, l, b)),
        2 => (p.clone(), offset()).prop_map(|(a, l)| Op::Truncate(a, l)),
        3 => (p.clone(), offset(), 1u64..100_000).prop_map(|(a, o, l)| Op::Read(a, o, l)),
        1 => p.prop_map(Op::Close),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Dir,
    File(usize),
}

#[derive(Default)]
struct Model {
    nodes: BTreeMap<String, Node>,
    files: Vec<Vec<u8>>,
}

type R<T> = Result<T, i32>;

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

impl Model {
    /// Resolves a path as the kernel would, component by component.
    fn resolve(&self, p: &str) -> R<Node> {
        if p.is_empty() {
            return Ok(Node::Dir);
        }
        let mut cur = String::new();
        let parts: Vec<&str> = p.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            cur = if cur.is_empty() {
                part.to_string()
            } else {
                format!("{cur}/{part}")
            };
            match self.nodes.get(&cur) {
                None => return Err(libc::ENOENT),
                Some(Node::File(_)) if i + 1 < parts.len() => return Err(libc::ENOTDIR),
                Some(n) => {
                    if i + 1 == parts.len() {
                        return Ok(n.clone());
                    }
                }
            }
        }
        unreachable!()
    }

    fn dir(&self, p: &str) -> R<()> {
        match self.resolve(p)? {
            Node::Dir => Ok(()),
            Node::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn is_empty(&self, p: &str) -> bool {
        !self.nodes.keys().any(|k| parent_of(k) == p && k != p)
    }

    fn create(&mut self, p: &str, dir: bool) -> R<()> {
        self.dir(parent_of(p))?;
        if self.nodes.contains_key(p) {
            return Err(libc::EEXIST);
        }
        let node = if dir {
            Node::Dir
        } else {
            self.files.push(Vec::new());
            Node::File(self.files.len() - 1)
        };
        self.nodes.insert(p.to_string(), node);
        Ok(())
    }

    fn remove(&mut self, p: &str, dir: bool) -> R<()> {
        self.dir(parent_of(p))?;
        match (self.nodes.get(p), dir) {
            (None, _) => Err(libc::ENOENT),
            (Some(Node::Dir), false) => Err(libc::EISDIR),
            (Some(Node::File(_)), true) => Err(libc::ENOTDIR),
            (Some(Node::Dir), true) if !self.is_empty(p) => Err(libc::ENOTEMPTY),
            _ => {
                self.nodes.remove(p);
                Ok(())
            }
        }
    }

    fn rename(&mut self, p: &str, q: &str) -> R<()> {
        self.dir(parent_of(p))?;
        self.dir(parent_of(q))?;
        let src = self.nodes.get(p).cloned().ok_or(libc::ENOENT)?;
        if src == Node::Dir && q.starts_with(&format!("{p}/")) {
            return Err(libc::EINVAL);
        }
        match (self.nodes.get(q), &src) {
            (Some(d), _) if p == q || (matches!(d, Node::File(_)) && *d == src) => return Ok(()),
            (Some(Node::File(_)), Node::Dir) => return Err(libc::ENOTDIR),
            (Some(Node::Dir), Node::File(_)) => return Err(libc::EISDIR),
            (Some(Node::Dir), Node::Dir) if !self.is_empty(q) => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.nodes.remove(q);
        let moved: Vec<(String, Node)> = self
            .nodes
            .iter()
            .filter(|(k, _)| *k == p || k.starts_with(&format!("{p}/")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in moved {
            self.nodes.remove(&k);
            self.nodes.insert(format!("{q}{}", &k[p.len()..]), v);
        }
        Ok(())
    }

    fn link(&mut self, p: &str, q: &str) -> R<()> {
        // As link(2): the new name's parent, then its absence, then the kind of the source.
        let src = self.resolve(p)?;
        self.dir(parent_of(q))?;
        if self.nodes.contains_key(q) {
            return Err(libc::EEXIST);
        }
        let Node::File(id) = src else {
            return Err(libc::EPERM);
        };
        self.nodes.insert(q.to_string(), Node::File(id));
        Ok(())
    }

    fn file(&mut self, p: &str) -> R<&mut Vec<u8>> {
        match self.resolve(p)? {
            Node::File(id) => Ok(&mut self.files[id]),
            Node::Dir => Err(libc::EISDIR),
        }
    }
}

/// The core side: a Fs over the in-memory namespace and blocks, with open handles by inode.
struct Real {
    fs: Fs,
    meta: Arc<dyn Namespace>,
    blocks: Arc<MemBlockStore>,
    handles: HashMap<InodeId, u64>,
}

/// A memory-only block cache over the fake store (each core gets its own, as a new mount).
fn cache(blocks: &Arc<MemBlockStore>) -> Arc<BlockCache> {
    BlockCache::new(
        blocks.clone(),
        &CacheConfig {
            memory_bytes: 64 << 20,
            ..CacheConfig::default()
        },
    )
    .unwrap()
}

fn errno(e: FsError) -> i32 {
    e.errno()
}

impl Real {
    fn new() -> Self {
        Self::with_dirty_limit(6 << 20)
    }

    /// A core that uploads early once a file buffers more than `max_dirty_bytes`.
    fn with_dirty_limit(max_dirty_bytes: u64) -> Self {
        let meta: Arc<dyn Namespace> =
            Arc::new(Meta::open(MemStore::new(), MetaConfig::default()).unwrap());
        let blocks = Arc::new(MemBlockStore::new());
        let cfg = FsConfig {
            inline_max: 100,
            max_dirty_bytes,
            ..FsConfig::default()
        };
        Real {
            fs: Fs::new(meta.clone(), cache(&blocks), cfg),
            meta,
            blocks,
            handles: HashMap::new(),
        }
    }

    fn resolve(&self, p: &str) -> R<Attr> {
        let mut attr = self.fs.getattr(ROOT).map_err(errno)?;
        if p.is_empty() {
            return Ok(attr);
        }
        for part in p.split('/') {
            attr = self
                .fs
                .lookup(&Caller::root(), attr.ino, part.as_bytes())
                .map_err(errno)?;
        }
        Ok(attr)
    }

    fn split<'a>(&self, p: &'a str) -> R<(InodeId, &'a [u8])> {
        // As the kernel's path walk: the parent must resolve to a directory.
        let name = p.rsplit('/').next().unwrap();
        let parent = self.resolve(parent_of(p))?;
        if parent.kind != FileKind::Directory {
            return Err(libc::ENOTDIR);
        }
        Ok((parent.ino, name.as_bytes()))
    }

    fn handle(&mut self, p: &str) -> R<u64> {
        let attr = self.resolve(p)?;
        if attr.kind == FileKind::Directory {
            return Err(libc::EISDIR);
        }
        if let Some(fh) = self.handles.get(&attr.ino) {
            return Ok(*fh);
        }
        let (fh, _) = self
            .fs
            .open(
                &Caller::root(),
                attr.ino,
                OpenMode {
                    read: true,
                    write: true,
                },
            )
            .map_err(errno)?;
        self.handles.insert(attr.ino, fh);
        Ok(fh)
    }

    fn close(&mut self, p: &str) -> R<()> {
        let ino = self.resolve(p)?.ino;
        if let Some(fh) = self.handles.remove(&ino) {
            self.fs.release(fh).map_err(errno)?;
        }
        Ok(())
    }
}

fn run_op(model: &mut Model, real: &mut Real, op: &Op) -> Result<(), TestCaseError> {
    let ps = paths();
    let who = Caller::root();
    let (m, r): (R<()>, R<()>) = match op {
        Op::Create(i) => (
            model.create(&ps[*i], false),
            real.split(&ps[*i]).and_then(|(d, n)| {
                let (_, fh) = real
                    .fs
                    .create(
                        &who,
                        d,
                        n,
                        0o644,
                        OpenMode {
                            read: true,
                            write: true,
                        },
                    )
                    .map_err(errno)?;
                real.fs.release(fh).map_err(errno)
            }),
        ),
        Op::Mkdir(i) => (
            model.create(&ps[*i], true),
            real.split(&ps[*i])
                .and_then(|(d, n)| real.fs.mkdir(&who, d, n, 0o755).map(|_| ()).map_err(errno)),
        ),
        Op::Unlink(i) => (
            model.remove(&ps[*i], false),
            real.split(&ps[*i])
                .and_then(|(d, n)| real.fs.unlink(&who, d, n).map_err(errno)),
        ),
        Op::Rmdir(i) => (
            model.remove(&ps[*i], true),
            real.split(&ps[*i])
                .and_then(|(d, n)| real.fs.rmdir(&who, d, n).map_err(errno)),
        ),
        Op::Rename(a, b) => (
            model.rename(&ps[*a], &ps[*b]),
            real.split(&ps[*a]).and_then(|(d, n)| {
                let (d2, n2) = real.split(&ps[*b])?;
                real.fs
                    .rename(&who, d, n, d2, n2, RenameMode::Replace)
                    .map_err(errno)
            }),
        ),
        Op::Link(a, b) => (
            model.link(&ps[*a], &ps[*b]),
            real.resolve(&ps[*a]).and_then(|src| {
                let (d, n) = real.split(&ps[*b])?;
                real.fs.link(&who, src.ino, d, n).map(|_| ()).map_err(errno)
            }),
        ),
        Op::Write(i, off, len, byte) => {
            let data: Vec<u8> = (0..*len).map(|k| byte.wrapping_add(k as u8)).collect();
            let m = model.file(&ps[*i]).map(|f| {
                let end = *off as usize + data.len();
                if f.len() < end {
                    f.resize(end, 0);
                }
                f[*off as usize..end].copy_from_slice(&data);
            });
            (
                m,
                real.handle(&ps[*i])
                    .and_then(|fh| real.fs.write(fh, *off, &data).map(|_| ()).map_err(errno)),
            )
        }
        Op::Truncate(i, len) => {
            let m = model.file(&ps[*i]).map(|f| f.resize(*len as usize, 0));
            let r = real.resolve(&ps[*i]).and_then(|a| {
                let set = SetAttr {
                    size: Some(*len),
                    ..Default::default()
                };
                real.fs.setattr(&who, a.ino, set).map(|_| ()).map_err(errno)
            });
            (m, r)
        }
        Op::Read(i, off, len) => {
            let want = model.file(&ps[*i]).map(|f| {
                let s = (*off as usize).min(f.len());
                f[s..(s + *len as usize).min(f.len())].to_vec()
            });
            let got = real
                .handle(&ps[*i])
                .and_then(|fh| real.fs.read(fh, *off, *len as u32).map_err(errno));
            prop_assert_eq!(
                want.is_ok(),
                got.is_ok(),
                "read {:?}: model {:?} core {:?}",
                op,
                want.as_ref().err(),
                got.as_ref().err()
            );
            if let (Ok(w), Ok(g)) = (&want, &got) {
                prop_assert!(
                    w == g,
                    "read {:?} returned different bytes ({} vs {} long)",
                    op,
                    w.len(),
                    g.len()
                );
            }
            (Ok(()), Ok(()))
        }
        Op::Close(i) => (model.resolve(&ps[*i]).map(|_| ()), real.close(&ps[*i])),
    };
    prop_assert_eq!(m, r, "{:?}", op);
    Ok(())
}

/// Every file in the model reads back exactly through `fs`, and sizes agree.
fn check_all(model: &mut Model, fs: &Fs, real: &Real) -> Result<(), TestCaseError> {
    let files: Vec<(String, usize)> = model
        .nodes
        .iter()
        .filter_map(|(k, v)| {
            if let Node::File(id) = v {
                Some((k.clone(), *id))
            } else {
                None
            }
        })
        .collect();
    for (path, id) in files {
        let attr = real
            .resolve(&path)
            .map_err(|e| TestCaseError::fail(format!("{path}: errno {e}")))?;
        let attr = fs.getattr(attr.ino).unwrap();
        prop_assert_eq!(attr.size, model.files[id].len() as u64, "size of {}", path);
        let (fh, _) = fs
            .open(
                &Caller::root(),
                attr.ino,
                OpenMode {
                    read: true,
                    write: false,
                },
            )
            .unwrap();
        let got = fs.read(fh, 0, attr.size as u32 + 10).unwrap();
        fs.release(fh).unwrap();
        prop_assert!(got == model.files[id], "contents of {}", path);
    }
    Ok(())
}

/// Runs `ops` on the model and on `real`, then checks every file, and again through a
/// second core over the same namespace and blocks (which sees only what was committed).
fn agree(ops: &[Op], mut real: Real) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for op in ops {
        run_op(&mut model, &mut real, op)?;
    }
    check_all(&mut model, &real.fs, &real)?;
    for (_, fh) in real.handles.drain() {
        real.fs.release(fh).unwrap();
    }
    let again = Fs::new(
        real.meta.clone(),
        cache(&real.blocks),
        real.fs.config().clone(),
    );
    check_all(&mut model, &again, &real)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn core_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        agree(&ops, Real::new())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    /// With a dirty limit of a few writes, open files upload early all the time: chunks
    /// kept as patches are merged and stored between writes and reads.
    #[test]
    fn core_agrees_with_the_model_uploading_early(ops in proptest::collection::vec(op(), 1..60)) {
        agree(&ops, Real::with_dirty_limit(20_000))?;
    }
}

/// Shrinking a chunked file and growing it again reads zeros where the old bytes were.
#[test]
fn truncate_then_extend_reads_zeros() {
    let mut real = Real::new();
    let who = Caller::root();
    let (attr, fh) = real
        .fs
        .create(
            &who,
            ROOT,
            b"f",
            0o644,
            OpenMode {
                read: true,
                write: true,
            },
        )
        .unwrap();
    real.fs.write(fh, 0, &[0xaa; 200]).unwrap();
    real.fs.release(fh).unwrap();
    real.fs
        .setattr(
            &who,
            attr.ino,
            SetAttr {
                size: Some(150),
                ..Default::default()
            },
        )
        .unwrap();
    let fh = real.handle("f").unwrap();
    real.fs.write(fh, 160, b"x").unwrap();
    let data = real.fs.read(fh, 0, 1000).unwrap();
    assert_eq!(data.len(), 161);
    assert!(data[..150].iter().all(|&b| b == 0xaa));
    assert!(
        data[150..160].iter().all(|&b| b == 0),
        "{:?}",
        &data[148..161]
    );
}

/// Sequential writes hand full chunks to background uploads; reads during the upload, a
/// rewrite of an uploading chunk, and a remount all see the right bytes.
#[test]
fn background_uploads_are_read_rewritten_and_committed() {
    let mut real = Real::new();
    let who = Caller::root();
    let rw = OpenMode {
        read: true,
        write: true,
    };
    let (attr, fh) = real.fs.create(&who, ROOT, b"seq", 0o644, rw).unwrap();
    let mib = 1usize << 20;
    let mut want = Vec::new();
    for k in 0..10u8 {
        let piece = vec![k; mib];
        real.fs
            .write(fh, (k as usize * mib) as u64, &piece)
            .unwrap();
        want.extend_from_slice(&piece);
    }
    assert!(
        real.fs.read(fh, 0, (10 * mib) as u32).unwrap() == want,
        "reads see chunks while they upload"
    );
    real.fs.write(fh, 5, b"again").unwrap();
    want[5..10].copy_from_slice(b"again");
    real.fs.release(fh).unwrap();
    let again = Fs::new(
        real.meta.clone(),
        cache(&real.blocks),
        real.fs.config().clone(),
    );
    let (fh, _) = again.open(&who, attr.ino, rw).unwrap();
    assert!(
        again.read(fh, 0, (11 * mib) as u32).unwrap() == want,
        "committed as written"
    );
    real.handles.clear();
}

/// Found by `core_agrees_with_the_model` in CI: a file written through a handle, its
/// directory renamed, the file unlinked and the directory removed; the release commits the
/// write (placement used to look for the file's old directory and fail with ENOENT).
#[test]
fn a_write_to_an_unlinked_file_in_a_removed_directory_commits_at_release() {
    use Op::*;
    let ops = [
        Mkdir(1),
        Create(1),
        Create(6),
        Rename(1, 0),
        Write(3, 0, 1, 0),
        Unlink(3),
        Rmdir(0),
    ];
    let mut model = Model::default();
    let mut real = Real::new();
    for op in &ops {
        run_op(&mut model, &mut real, op).unwrap();
    }
    check_all(&mut model, &real.fs, &real).unwrap();
    for (_, fh) in real.handles.drain() {
        real.fs.release(fh).unwrap();
    }
}

/// Two clients of one namespace: a name made through one after the other's kernel saw it
/// absent (or a create retried after a metaserver restart, which finds the file its first
/// attempt made). `open(O_CREAT)` without `O_EXCL` opens the file that is there, emptied
/// with `O_TRUNC`, as it would have had the kernel seen the name; a plain create (the
/// `O_EXCL` path) still fails with EEXIST.
#[test]
fn create_without_excl_opens_a_file_another_client_made() {
    let a = Real::new();
    let b = Fs::new(a.meta.clone(), cache(&a.blocks), a.fs.config().clone());
    let who = Caller::root();
    let rw = OpenMode {
        read: true,
        write: true,
    };
    let (made, fh) = b.create(&who, ROOT, b"shot.clip", 0o644, rw).unwrap();
    b.write(fh, 0, b"v1").unwrap();
    b.release(fh).unwrap();
    let exclusive = a.fs.create(&who, ROOT, b"shot.clip", 0o644, rw);
    assert!(matches!(exclusive, Err(FsError::Meta(MetaError::Exists))));
    let fs = &a.fs;
    let (attr, fh, created) = fs
        .create_or_open(&who, ROOT, b"shot.clip", 0o644, rw, false)
        .unwrap();
    assert!(!created && attr.ino == made.ino);
    assert_eq!(
        fs.lookup_count(made.ino),
        1,
        "the reply counts as one lookup"
    );
    assert_eq!(&a.fs.read(fh, 0, 10).unwrap()[..], b"v1");
    a.fs.release(fh).unwrap();
    let (attr, fh, _) = fs
        .create_or_open(&who, ROOT, b"shot.clip", 0o644, rw, true)
        .unwrap();
    assert_eq!(attr.size, 0);
    assert!(a.fs.read(fh, 0, 10).unwrap().is_empty());
    a.fs.release(fh).unwrap();
    // A name taken by a directory stays EEXIST.
    let shots = a.fs.mkdir(&who, ROOT, b"shots", 0o755).unwrap();
    let dir = a.fs.create_or_open(&who, ROOT, b"shots", 0o644, rw, false);
    assert!(matches!(dir, Err(FsError::Meta(MetaError::Exists))));
    assert_eq!(
        fs.lookup_count(shots.ino),
        1,
        "a failed call leaves no reference"
    );
}
