//! The client ↔ metaserver wire protocol: versioned, postcard-encoded, with no I/O (the
//! transport — QUIC streams — lives elsewhere and only moves frames).
//!
//! Owns: the messages ([`Request`] mirrors every [`Namespace`] method, [`Response`] every
//! result shape), the frame codec (`u32` little-endian length ++ postcard body) with its
//! size limit, the version handshake, the server-side [`dispatch`] onto any `Namespace`,
//! and the client-side [`Remote`], a `Namespace` over any [`Transport`].
//!
//! Invariants: decoding never panics on any bytes (fuzzed: `wire`); a frame longer than
//! [`MAX_FRAME`] or a body that does not decode is a [`WireError`] for that connection only;
//! a `Hello` with another [`PROTOCOL_VERSION`] is refused with both versions named.

use crate::namespace::{
    Change, Commit, Lock, LockOwner, Make, Namespace, RenameMode, SetAttr, StatFs, XattrMode,
};
use crate::{Attr, Caller, DirEntry, FileKind, Hlc, InodeId, Layout, MetaError, MetaResult};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bumped on any incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 5;

/// Largest frame either side accepts (a commit of a multi-terabyte file's chunk list fits).
pub const MAX_FRAME: usize = 64 << 20;

/// One call of a [`Namespace`] method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// First message on a connection: the protocol version, the client's name and the
    /// credential `meridian metaserver add-client` issued to it.
    Hello {
        version: u32,
        client: String,
        token: String,
    },
    Lookup {
        who: Caller,
        parent: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
    },
    Getattr {
        ino: InodeId,
    },
    Setattr {
        who: Caller,
        ino: InodeId,
        set: SetAttr,
    },
    Access {
        who: Caller,
        ino: InodeId,
        mask: u32,
    },
    Mknod {
        who: Caller,
        parent: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        kind: FileKind,
        mode: u16,
        rdev: u32,
    },
    Create {
        who: Caller,
        parent: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        mode: u16,
    },
    Mkdir {
        who: Caller,
        parent: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        mode: u16,
    },
    Symlink {
        who: Caller,
        parent: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    Readlink {
        ino: InodeId,
    },
    Link {
        who: Caller,
        ino: InodeId,
        parent: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
    },
    Unlink {
        who: Caller,
        parent: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
    },
    Rmdir {
        who: Caller,
        parent: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
    },
    Rename {
        who: Caller,
        parent: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        new_parent: InodeId,
        #[serde(with = "serde_bytes")]
        new_name: Vec<u8>,
        mode: RenameMode,
    },
    Readdir {
        who: Caller,
        dir: InodeId,
        after: Option<serde_bytes::ByteBuf>,
        limit: u32,
    },
    Parent {
        dir: InodeId,
    },
    Open {
        who: Caller,
        ino: InodeId,
        read: bool,
        write: bool,
    },
    Release {
        ino: InodeId,
    },
    Layout {
        ino: InodeId,
    },
    Commit {
        ino: InodeId,
        commit: Commit,
    },
    Getxattr {
        who: Caller,
        ino: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
    },
    Setxattr {
        who: Caller,
        ino: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        mode: XattrMode,
    },
    Listxattr {
        who: Caller,
        ino: InodeId,
    },
    Removexattr {
        who: Caller,
        ino: InodeId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
    },
    /// `owner` is the kernel's lock owner; the metaserver adds the session.
    Getlk {
        ino: InodeId,
        owner: u64,
        lock: Lock,
    },
    Setlk {
        ino: InodeId,
        owner: u64,
        lock: Lock,
    },
    /// The change feed after a cursor.
    Changes {
        after: Hlc,
        limit: u32,
    },
    Statfs,
    Sync,
}

/// The result of one call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Hello {
        version: u32,
        server: String,
    },
    Attr(Attr),
    /// A new name's attributes and its directory's after the change (a client caching
    /// the directory need not ask again).
    Made(Attr, Attr),
    Unit,
    Bytes(serde_bytes::ByteBuf),
    Entries(Vec<DirEntry>),
    Ino(InodeId),
    Layout(Layout, u64),
    Names(Vec<serde_bytes::ByteBuf>),
    StatFs(StatFs),
    Lock(Option<Lock>),
    Changes(Vec<Change>),
    Err(MetaError),
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error(
        "protocol version mismatch: this side speaks {ours}, the other side {theirs}; run the same Meridian release on clients and metaserver"
    )]
    Version { ours: u32, theirs: u32 },
    #[error("unexpected {0} in reply")]
    Unexpected(&'static str),
}

/// One frame: length ++ postcard body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let body = postcard::to_allocvec(msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Splits complete frames off a byte stream; incomplete tails wait for more bytes.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed. After an error the
    /// stream is unusable (the connection closes).
    pub fn decode_next<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, WireError> {
        let Some(len) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = match postcard::take_from_bytes::<T>(&self.buf[4..4 + len]) {
            Ok((m, [])) => m,
            Ok(_) => return Err(WireError::Malformed("trailing bytes in frame".into())),
            Err(e) => return Err(WireError::Malformed(e.to_string())),
        };
        self.buf.drain(..4 + len);
        Ok(Some(msg))
    }
}

/// The server's answer to a `Hello`.
pub fn hello_reply(version: u32, server: &str) -> Result<Response, WireError> {
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    Ok(Response::Hello {
        version: PROTOCOL_VERSION,
        server: server.to_string(),
    })
}

fn unit(r: MetaResult<()>) -> Response {
    r.map_or_else(Response::Err, |_| Response::Unit)
}

fn attr(r: MetaResult<Attr>) -> Response {
    r.map_or_else(Response::Err, Response::Attr)
}

/// A new name's attributes with its directory's.
fn made(r: MetaResult<(Attr, Attr)>) -> Response {
    r.map_or_else(Response::Err, |(a, dir)| Response::Made(a, dir))
}

/// Runs one request on the server's namespace for client session `session` (its locks).
pub fn dispatch(ns: &dyn Namespace, session: u64, req: Request) -> Response {
    use Request as R;
    let owner = |owner| LockOwner { session, owner };
    match req {
        R::Hello { version, .. } => hello_reply(version, "meridian")
            .unwrap_or_else(|e| Response::Err(MetaError::Invalid(e.to_string()))),
        R::Lookup { who, parent, name } => attr(ns.lookup(&who, parent, &name)),
        R::Getattr { ino } => attr(ns.getattr(ino)),
        R::Setattr { who, ino, set } => attr(ns.setattr(&who, ino, &set)),
        R::Access { who, ino, mask } => unit(ns.access(&who, ino, mask)),
        R::Mknod {
            who,
            parent,
            name,
            kind,
            mode,
            rdev,
        } => made(ns.make(&who, parent, &name, Make::Node { kind, mode, rdev })),
        R::Create {
            who,
            parent,
            name,
            mode,
        } => made(ns.make(&who, parent, &name, Make::File { mode })),
        R::Mkdir {
            who,
            parent,
            name,
            mode,
        } => made(ns.make(&who, parent, &name, Make::Dir { mode })),
        R::Symlink {
            who,
            parent,
            name,
            target,
        } => made(ns.make(&who, parent, &name, Make::Symlink { target: &target })),
        R::Readlink { ino } => ns
            .readlink(ino)
            .map_or_else(Response::Err, |b| Response::Bytes(b.into())),
        R::Link {
            who,
            ino,
            parent,
            name,
        } => attr(ns.link(&who, ino, parent, &name)),
        R::Unlink { who, parent, name } => unit(ns.unlink(&who, parent, &name)),
        R::Rmdir { who, parent, name } => unit(ns.rmdir(&who, parent, &name)),
        R::Rename {
            who,
            parent,
            name,
            new_parent,
            new_name,
            mode,
        } => unit(ns.rename(&who, parent, &name, new_parent, &new_name, mode)),
        R::Readdir {
            who,
            dir,
            after,
            limit,
        } => ns
            .readdir(&who, dir, after.as_deref().map(|v| &v[..]), limit as usize)
            .map_or_else(Response::Err, Response::Entries),
        R::Parent { dir } => ns.parent(dir).map_or_else(Response::Err, Response::Ino),
        R::Open {
            who,
            ino,
            read,
            write,
        } => attr(ns.open(&who, ino, read, write)),
        R::Release { ino } => unit(ns.release(ino)),
        R::Layout { ino } => ns
            .layout(ino)
            .map_or_else(Response::Err, |(l, s)| Response::Layout(l, s)),
        R::Commit { ino, commit } => attr(ns.commit(ino, &commit)),
        R::Getxattr { who, ino, name } => ns
            .getxattr(&who, ino, &name)
            .map_or_else(Response::Err, |b| Response::Bytes(b.into())),
        R::Setxattr {
            who,
            ino,
            name,
            value,
            mode,
        } => unit(ns.setxattr(&who, ino, &name, &value, mode)),
        R::Listxattr { who, ino } => ns.listxattr(&who, ino).map_or_else(Response::Err, |v| {
            Response::Names(v.into_iter().map(Into::into).collect())
        }),
        R::Removexattr { who, ino, name } => unit(ns.removexattr(&who, ino, &name)),
        R::Getlk {
            ino,
            owner: o,
            lock,
        } => ns
            .getlk(ino, owner(o), &lock)
            .map_or_else(Response::Err, Response::Lock),
        R::Setlk {
            ino,
            owner: o,
            lock,
        } => unit(ns.setlk(ino, owner(o), &lock)),
        R::Changes { after, limit } => ns
            .changes(after, limit as usize)
            .map_or_else(Response::Err, Response::Changes),
        R::Statfs => ns.statfs().map_or_else(Response::Err, Response::StatFs),
        R::Sync => unit(ns.sync()),
    }
}

/// Moves one request to the metaserver and its response back.
pub trait Transport: Send + Sync {
    /// Transport failures map to [`MetaError::Store`] (the client reports EIO).
    fn call(&self, req: Request) -> MetaResult<Response>;
}

impl<T: Transport> Transport for std::sync::Arc<T> {
    fn call(&self, req: Request) -> MetaResult<Response> {
        (**self).call(req)
    }
}

/// A [`Namespace`] served by a remote metaserver.
pub struct Remote<T: Transport>(pub T);

fn unexpected<X>(what: &'static str) -> MetaResult<X> {
    Err(MetaError::Store(WireError::Unexpected(what).to_string()))
}

impl<T: Transport> Remote<T> {
    fn call(&self, req: Request) -> MetaResult<Response> {
        match self.0.call(req)? {
            Response::Err(e) => Err(e),
            r => Ok(r),
        }
    }
    fn attr(&self, req: Request) -> MetaResult<Attr> {
        match self.call(req)? {
            Response::Attr(a) | Response::Made(a, _) => Ok(a),
            _ => unexpected("reply (wanted attributes)"),
        }
    }
    fn unit(&self, req: Request) -> MetaResult<()> {
        match self.call(req)? {
            Response::Unit => Ok(()),
            _ => unexpected("reply (wanted an acknowledgement)"),
        }
    }
    fn bytes(&self, req: Request) -> MetaResult<Vec<u8>> {
        match self.call(req)? {
            Response::Bytes(b) => Ok(b.into_vec()),
            _ => unexpected("reply (wanted bytes)"),
        }
    }
}

impl<T: Transport> Namespace for Remote<T> {
    fn lookup(&self, who: &Caller, parent: InodeId, name: &[u8]) -> MetaResult<Attr> {
        self.attr(Request::Lookup {
            who: who.clone(),
            parent,
            name: name.to_vec(),
        })
    }
    fn getattr(&self, ino: InodeId) -> MetaResult<Attr> {
        self.attr(Request::Getattr { ino })
    }
    fn setattr(&self, who: &Caller, ino: InodeId, set: &SetAttr) -> MetaResult<Attr> {
        self.attr(Request::Setattr {
            who: who.clone(),
            ino,
            set: set.clone(),
        })
    }
    fn access(&self, who: &Caller, ino: InodeId, mask: u32) -> MetaResult<()> {
        self.unit(Request::Access {
            who: who.clone(),
            ino,
            mask,
        })
    }
    fn mknod(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        kind: FileKind,
        mode: u16,
        rdev: u32,
    ) -> MetaResult<Attr> {
        self.attr(Request::Mknod {
            who: who.clone(),
            parent,
            name: name.to_vec(),
            kind,
            mode,
            rdev,
        })
    }
    fn create(&self, who: &Caller, parent: InodeId, name: &[u8], mode: u16) -> MetaResult<Attr> {
        self.attr(Request::Create {
            who: who.clone(),
            parent,
            name: name.to_vec(),
            mode,
        })
    }
    fn mkdir(&self, who: &Caller, parent: InodeId, name: &[u8], mode: u16) -> MetaResult<Attr> {
        self.attr(Request::Mkdir {
            who: who.clone(),
            parent,
            name: name.to_vec(),
            mode,
        })
    }
    fn symlink(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        target: &[u8],
    ) -> MetaResult<Attr> {
        self.attr(Request::Symlink {
            who: who.clone(),
            parent,
            name: name.to_vec(),
            target: target.to_vec(),
        })
    }
    fn readlink(&self, ino: InodeId) -> MetaResult<Vec<u8>> {
        self.bytes(Request::Readlink { ino })
    }
    fn link(&self, who: &Caller, ino: InodeId, parent: InodeId, name: &[u8]) -> MetaResult<Attr> {
        self.attr(Request::Link {
            who: who.clone(),
            ino,
            parent,
            name: name.to_vec(),
        })
    }
    fn unlink(&self, who: &Caller, parent: InodeId, name: &[u8]) -> MetaResult<()> {
        self.unit(Request::Unlink {
            who: who.clone(),
            parent,
            name: name.to_vec(),
        })
    }
    fn rmdir(&self, who: &Caller, parent: InodeId, name: &[u8]) -> MetaResult<()> {
        self.unit(Request::Rmdir {
            who: who.clone(),
            parent,
            name: name.to_vec(),
        })
    }
    fn rename(
        &self,
        who: &Caller,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        mode: RenameMode,
    ) -> MetaResult<()> {
        self.unit(Request::Rename {
            who: who.clone(),
            parent,
            name: name.to_vec(),
            new_parent,
            new_name: new_name.to_vec(),
            mode,
        })
    }
    fn readdir(
        &self,
        who: &Caller,
        dir: InodeId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<DirEntry>> {
        let req = Request::Readdir {
            who: who.clone(),
            dir,
            after: after.map(|a| serde_bytes::ByteBuf::from(a.to_vec())),
            limit: limit.min(u32::MAX as usize) as u32,
        };
        match self.call(req)? {
            Response::Entries(e) => Ok(e),
            _ => unexpected("reply (wanted entries)"),
        }
    }
    fn parent(&self, dir: InodeId) -> MetaResult<InodeId> {
        match self.call(Request::Parent { dir })? {
            Response::Ino(i) => Ok(i),
            _ => unexpected("reply (wanted an inode)"),
        }
    }
    fn open(&self, who: &Caller, ino: InodeId, read: bool, write: bool) -> MetaResult<Attr> {
        self.attr(Request::Open {
            who: who.clone(),
            ino,
            read,
            write,
        })
    }
    fn release(&self, ino: InodeId) -> MetaResult<()> {
        self.unit(Request::Release { ino })
    }
    fn layout(&self, ino: InodeId) -> MetaResult<(Layout, u64)> {
        match self.call(Request::Layout { ino })? {
            Response::Layout(l, s) => Ok((l, s)),
            _ => unexpected("reply (wanted a layout)"),
        }
    }
    fn commit(&self, ino: InodeId, commit: &Commit) -> MetaResult<Attr> {
        self.attr(Request::Commit {
            ino,
            commit: commit.clone(),
        })
    }
    fn getxattr(&self, who: &Caller, ino: InodeId, name: &[u8]) -> MetaResult<Vec<u8>> {
        self.bytes(Request::Getxattr {
            who: who.clone(),
            ino,
            name: name.to_vec(),
        })
    }
    fn setxattr(
        &self,
        who: &Caller,
        ino: InodeId,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
    ) -> MetaResult<()> {
        self.unit(Request::Setxattr {
            who: who.clone(),
            ino,
            name: name.to_vec(),
            value: value.to_vec(),
            mode,
        })
    }
    fn listxattr(&self, who: &Caller, ino: InodeId) -> MetaResult<Vec<Vec<u8>>> {
        match self.call(Request::Listxattr {
            who: who.clone(),
            ino,
        })? {
            Response::Names(n) => Ok(n.into_iter().map(|b| b.into_vec()).collect()),
            _ => unexpected("reply (wanted names)"),
        }
    }
    fn removexattr(&self, who: &Caller, ino: InodeId, name: &[u8]) -> MetaResult<()> {
        self.unit(Request::Removexattr {
            who: who.clone(),
            ino,
            name: name.to_vec(),
        })
    }
    fn statfs(&self) -> MetaResult<StatFs> {
        match self.call(Request::Statfs)? {
            Response::StatFs(s) => Ok(s),
            _ => unexpected("reply (wanted filesystem figures)"),
        }
    }
    fn sync(&self) -> MetaResult<()> {
        self.unit(Request::Sync)
    }
    fn getlk(&self, ino: InodeId, owner: LockOwner, lock: &Lock) -> MetaResult<Option<Lock>> {
        let req = Request::Getlk {
            ino,
            owner: owner.owner,
            lock: *lock,
        };
        match self.call(req)? {
            Response::Lock(l) => Ok(l),
            _ => unexpected("reply (wanted a lock)"),
        }
    }
    fn setlk(&self, ino: InodeId, owner: LockOwner, lock: &Lock) -> MetaResult<()> {
        self.unit(Request::Setlk {
            ino,
            owner: owner.owner,
            lock: *lock,
        })
    }
    fn changes(&self, after: Hlc, limit: usize) -> MetaResult<Vec<Change>> {
        let limit = limit.min(u32::MAX as usize) as u32;
        match self.call(Request::Changes { after, limit })? {
            Response::Changes(c) => Ok(c),
            _ => unexpected("reply (wanted changes)"),
        }
    }
    /// A client's session ends when its connection closes; the metaserver releases its
    /// locks then. A client cannot end it by a call.
    fn end_session(&self, _session: u64) -> MetaResult<()> {
        Err(MetaError::Unsupported(
            "ending a session from a client (close the connection)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_pushes_and_limits_hold() {
        let a = encode(&Request::Getattr { ino: InodeId(7) }).unwrap();
        let b = encode(&Request::Statfs).unwrap();
        let mut d = Decoder::default();
        let mut all = a.clone();
        all.extend(&b);
        d.push(&all[..3]);
        assert_eq!(d.decode_next::<Request>().unwrap(), None);
        d.push(&all[3..a.len() + 1]);
        assert_eq!(
            d.decode_next::<Request>().unwrap(),
            Some(Request::Getattr { ino: InodeId(7) })
        );
        assert_eq!(d.decode_next::<Request>().unwrap(), None);
        d.push(&all[a.len() + 1..]);
        assert_eq!(d.decode_next::<Request>().unwrap(), Some(Request::Statfs));
        let mut d = Decoder::default();
        d.push(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert_eq!(
            d.decode_next::<Request>(),
            Err(WireError::TooLarge(MAX_FRAME + 1))
        );
        let mut d = Decoder::default();
        d.push(&[2, 0, 0, 0, 0xff, 0xff]);
        assert!(matches!(
            d.decode_next::<Request>(),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn another_version_is_refused_naming_both() {
        let e = hello_reply(PROTOCOL_VERSION + 1, "m").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("speaks {PROTOCOL_VERSION}")), "{msg}");
        assert!(
            msg.contains(&format!("other side {}", PROTOCOL_VERSION + 1)),
            "{msg}"
        );
    }
}
