//! The session layer of the wire protocol (version 2): one long-lived QUIC stream per
//! client carries many calls at once, each tagged with an id, and the metaserver's pushed
//! cache invalidations, which the client acknowledges once its kernel has dropped them.
//!
//! Owns: the envelopes ([`ClientMsg`], [`ServerMsg`]), what an invalidation names
//! ([`Invalidation`]), which cached items a request changes ([`changes`]) and which inodes a
//! call shows the client ([`mentions`]). No I/O.
//!
//! Invariants: the first frame each way is the bare `Hello` request and response of
//! [`crate::wire`], so a client of another version is refused with both versions named;
//! every later frame is an envelope. Ids are the client's own and only echoed back.

use crate::InodeId;
use crate::wire::{Request, Response};
use serde::{Deserialize, Serialize};

/// From a client, after the handshake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// A namespace call; the reply carries the same `id`. `resent_after_ms` is set when the
    /// client sends the call again on a new connection because the first one was lost
    /// before its answer came: the milliseconds since it first sent it. A change the
    /// first attempt made is then answered as done instead of being tried again (a
    /// `mkdir` would report EEXIST, an `unlink` ENOENT).
    Call {
        id: u64,
        req: Request,
        resent_after_ms: Option<u32>,
    },
    /// The invalidations pushed with `seq` are applied (the kernel dropped them).
    Ack { seq: u64 },
    /// A call whose answer the client does not wait for and the server does not send (a
    /// release): it runs in order with the calls around it on the stream.
    Post { req: Request },
}

/// From the metaserver, after the handshake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    Reply {
        id: u64,
        resp: Response,
    },
    /// Items this client has cached changed through another client; acknowledge with `seq`.
    Invalidate {
        seq: u64,
        items: Vec<Invalidation>,
    },
}

/// What a client does with pushed invalidations (a mount: drop the kernel's cached items).
pub type InvalidationHandler = Box<dyn Fn(&[Invalidation]) + Send + Sync>;

/// A cached item that is no longer true.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Invalidation {
    /// The inode's attributes, and for a file its data, for a directory its listing.
    Inode(InodeId),
    /// The name `name` in directory `parent` (what it resolves to, or that it is absent).
    Entry {
        parent: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
    },
    /// A lock on the inode was released or narrowed: a lock request this client was
    /// refused may now be granted (sent to clients waiting for one, never waited for).
    Locks(InodeId),
}

/// The inodes a request will change besides those it names: the inodes behind the names an
/// unlink, rmdir or rename removes or replaces. The server looks them up before the call.
pub fn victims(req: &Request) -> Vec<(InodeId, &[u8])> {
    match req {
        Request::Unlink { parent, name, .. } | Request::Rmdir { parent, name, .. } => {
            vec![(*parent, name)]
        }
        Request::Rename {
            parent,
            name,
            new_parent,
            new_name,
            ..
        } => vec![(*parent, name), (*new_parent, new_name)],
        _ => Vec::new(),
    }
}

fn entry(parent: InodeId, name: &[u8]) -> Invalidation {
    Invalidation::Entry {
        parent,
        name: name.to_vec(),
    }
}

/// What a successful `req` made stale in other clients' caches; `victims` are the inodes
/// [`victims`] named, as they were before the call.
pub fn changes(req: &Request, victims: &[InodeId]) -> Vec<Invalidation> {
    use Invalidation::Inode;
    use Request as R;
    let mut out: Vec<Invalidation> = victims.iter().map(|&i| Inode(i)).collect();
    match req {
        R::Setattr { ino, .. }
        | R::Commit { ino, .. }
        | R::Setxattr { ino, .. }
        | R::Removexattr { ino, .. } => out.push(Inode(*ino)),
        R::Mknod { parent, name, .. }
        | R::Create { parent, name, .. }
        | R::Mkdir { parent, name, .. }
        | R::Symlink { parent, name, .. }
        | R::Unlink { parent, name, .. }
        | R::Rmdir { parent, name, .. } => out.extend([Inode(*parent), entry(*parent, name)]),
        R::Link {
            ino, parent, name, ..
        } => out.extend([Inode(*ino), Inode(*parent), entry(*parent, name)]),
        R::Rename {
            parent,
            name,
            new_parent,
            new_name,
            ..
        } => out.extend([
            Inode(*parent),
            entry(*parent, name),
            Inode(*new_parent),
            entry(*new_parent, new_name),
        ]),
        R::Hello { .. }
        | R::Lookup { .. }
        | R::Getattr { .. }
        | R::Access { .. }
        | R::Readlink { .. }
        | R::Readdir { .. }
        | R::Parent { .. }
        | R::Open { .. }
        | R::Release { .. }
        | R::Layout { .. }
        | R::Getxattr { .. }
        | R::Listxattr { .. }
        | R::Getlk { .. }
        | R::Setlk { .. }
        | R::Changes { .. }
        | R::Statfs
        | R::Sync => {}
    }
    out.dedup();
    out
}

/// The inodes a call shows the client: it may cache their attributes, or entries of them
/// as directories, from now on.
pub fn mentions(req: &Request, resp: &Response) -> Vec<InodeId> {
    use Request as R;
    let mut out = Vec::new();
    match req {
        R::Lookup { parent: i, .. }
        | R::Getattr { ino: i }
        | R::Setattr { ino: i, .. }
        | R::Mknod { parent: i, .. }
        | R::Create { parent: i, .. }
        | R::Mkdir { parent: i, .. }
        | R::Symlink { parent: i, .. }
        | R::Readlink { ino: i }
        | R::Readdir { dir: i, .. }
        | R::Open { ino: i, .. }
        | R::Layout { ino: i }
        | R::Getxattr { ino: i, .. }
        | R::Listxattr { ino: i, .. } => out.push(*i),
        R::Link { ino, parent, .. } => out.extend([*ino, *parent]),
        R::Rename {
            parent, new_parent, ..
        } => out.extend([*parent, *new_parent]),
        _ => {}
    }
    match resp {
        Response::Attr(a) => out.push(a.ino),
        Response::Made(a, dir) => out.extend([a.ino, dir.ino]),
        Response::Entries(es) => out.extend(es.iter().map(|e| e.ino)),
        _ => {}
    }
    out
}

/// The directories a call works in: the kernel may hold their locks while it is in flight.
pub fn directories(req: &Request) -> Vec<InodeId> {
    use Request as R;
    match req {
        R::Lookup { parent, .. }
        | R::Mknod { parent, .. }
        | R::Create { parent, .. }
        | R::Mkdir { parent, .. }
        | R::Symlink { parent, .. }
        | R::Link { parent, .. }
        | R::Unlink { parent, .. }
        | R::Rmdir { parent, .. } => vec![*parent],
        R::Readdir { dir, .. } => vec![*dir],
        R::Rename {
            parent, new_parent, ..
        } => vec![*parent, *new_parent],
        _ => Vec::new(),
    }
}
