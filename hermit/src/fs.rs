//! The file tree behind std's `std::fs` on xenrt: the image's baked read-only files plus a
//! writable tree in memory. Plain safe code, tested on the host; [`crate::sys_fs`] turns std's
//! pointers into the slices and values used here.
//!
//! - **Baked files** come from a static table of (path, bytes) that `hermit/build.rs` generates
//!   from the app's `files = "DIR"` (see the crate doc). Their bytes are referenced in place
//!   (never copied to the heap); they are read-only (`EROFS` for opening one to write, for
//!   truncating or unlinking it). Their parent directories are implied; such a directory is an
//!   ordinary directory otherwise: new files and directories may be made in it, and it cannot be
//!   removed while it holds baked files (`ENOTEMPTY`).
//! - **Writable** files and directories can be made anywhere else. Their contents live on the
//!   heap, within a budget ([`WRITABLE_LIMIT`] by default: file contents, plus
//!   [`ENTRY_COST`] + the name's length per file or directory made): going over it is `ENOSPC`,
//!   and an allocation the heap refuses is `ENOMEM` (never an abort).
//! - An [`OpenFile`] keeps its file alive: after `unlink` it can still be read and written, and
//!   its bytes stay charged to the budget until the last descriptor is closed (as POSIX).
//! - Paths are bytes; relative paths resolve from `/` (there is no `chdir`), `.` and `..` work,
//!   empty components are skipped. There are no links, permissions or times (all zero).
//!
//! Flag, mode and record values are hermit-abi 0.5.2's (`src/lib.rs`), which std's
//! `library/std/src/sys/fs/hermit.rs` uses.
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use crate::layout::{Stat, DIRENT64_NAME_OFFSET};

/// hermit-abi's errno values used here (the Linux numbers).
#[allow(missing_docs)]
pub mod errno {
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EBADF: i32 = 9;
    pub const ENOMEM: i32 = 12;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const ESPIPE: i32 = 29;
    pub const EROFS: i32 = 30;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOTEMPTY: i32 = 39;
}

/// hermit-abi's `open` flags and other constants.
#[allow(missing_docs)]
pub mod consts {
    pub const O_RDONLY: i32 = 0o0;
    pub const O_WRONLY: i32 = 0o1;
    pub const O_RDWR: i32 = 0o2;
    pub const O_ACCMODE: i32 = 0o3;
    pub const O_CREAT: i32 = 0o100;
    pub const O_EXCL: i32 = 0o200;
    pub const O_TRUNC: i32 = 0o1000;
    pub const O_APPEND: i32 = 0o2000;
    pub const O_NONBLOCK: i32 = 0o4000;
    pub const O_DIRECTORY: i32 = 0o200000;
    pub const SEEK_SET: i32 = 0;
    pub const SEEK_CUR: i32 = 1;
    pub const SEEK_END: i32 = 2;
    pub const S_IFDIR: u32 = 0o4_0000;
    pub const S_IFREG: u32 = 0o10_0000;
    pub const DT_DIR: u8 = 4;
    pub const DT_REG: u8 = 8;
}

use consts::*;
use errno::*;

/// Result of a call: a value, or the errno.
pub type Res<T> = Result<T, i32>;

/// The default budget of the writable tree: 8 MiB.
pub const WRITABLE_LIMIT: usize = 8 << 20;
/// What each file or directory made costs the budget besides its name and contents.
pub const ENTRY_COST: usize = 64;
/// The longest name of one path component (as `NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// The longest path (as `PATH_MAX`, counting no NUL).
pub const PATH_MAX: usize = 4096;

/// The writable tree's budget, shared by the tree and every file in it.
#[derive(Debug)]
struct Budget {
    used: Cell<usize>,
    limit: usize,
}

impl Budget {
    fn charge(&self, n: usize) -> Res<()> {
        let used = self.used.get().checked_add(n).ok_or(ENOSPC)?;
        if used > self.limit {
            return Err(ENOSPC);
        }
        self.used.set(used);
        Ok(())
    }

    fn refund(&self, n: usize) {
        self.used.set(self.used.get().saturating_sub(n));
    }
}

/// A file's bytes: baked into the image, or on the heap (charged to the budget).
enum Data {
    Baked(&'static [u8]),
    Mem { bytes: Vec<u8>, budget: Rc<Budget> },
}

impl Drop for Data {
    fn drop(&mut self) {
        if let Data::Mem { bytes, budget } = self {
            budget.refund(bytes.len());
        }
    }
}

struct FileNode {
    ino: u64,
    data: Data,
}

impl FileNode {
    fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Baked(b) => b,
            Data::Mem { bytes, .. } => bytes,
        }
    }

    fn stat(&self) -> Stat {
        let len = self.bytes().len() as i64;
        let perm = match self.data {
            Data::Baked(_) => 0o444,
            Data::Mem { .. } => 0o644,
        };
        Stat {
            st_ino: self.ino,
            st_nlink: 1,
            st_mode: S_IFREG | perm,
            st_size: len,
            st_blksize: 512,
            st_blocks: (len + 511) / 512,
            ..Stat::default()
        }
    }

    /// Sets the length to `len` (zero-filling growth), charging or refunding the budget.
    fn set_len(&mut self, len: usize) -> Res<()> {
        let Data::Mem { bytes, budget } = &mut self.data else {
            return Err(EROFS);
        };
        let old = bytes.len();
        if len > old {
            budget.charge(len - old)?;
            if bytes.try_reserve(len - old).is_err() {
                budget.refund(len - old);
                return Err(ENOMEM);
            }
            bytes.resize(len, 0);
        } else {
            bytes.truncate(len);
            bytes.shrink_to(len.max(64));
            budget.refund(old - len);
        }
        Ok(())
    }
}

/// A directory: its entries sorted by name.
struct DirNode {
    ino: u64,
    entries: Vec<(Box<[u8]>, Node)>,
}

impl DirNode {
    fn find(&self, name: &[u8]) -> Result<usize, usize> {
        self.entries.binary_search_by(|(n, _)| (**n).cmp(name))
    }

    fn get(&self, name: &[u8]) -> Option<&Node> {
        self.find(name).ok().map(|i| &self.entries[i].1)
    }

    fn stat(&self) -> Stat {
        Stat {
            st_ino: self.ino,
            st_nlink: 2,
            st_mode: S_IFDIR | 0o755,
            st_blksize: 512,
            ..Stat::default()
        }
    }
}

type FileRef = Rc<RefCell<FileNode>>;
type DirRef = Rc<RefCell<DirNode>>;

/// A file or a directory.
#[derive(Clone)]
enum Node {
    File(FileRef),
    Dir(DirRef),
}

impl Node {
    fn stat(&self) -> Stat {
        match self {
            Node::File(f) => f.borrow().stat(),
            Node::Dir(d) => d.borrow().stat(),
        }
    }

    fn is_baked(&self) -> bool {
        matches!(self, Node::File(f) if matches!(f.borrow().data, Data::Baked(_)))
    }
}

/// Where a path leads.
enum Place<'p> {
    /// A directory named through `/`, `.` or `..`: no entry of a parent to change.
    Dir(DirRef),
    /// The last component `name` in directory `parent` (which may or may not hold it).
    Entry { parent: DirRef, name: &'p [u8] },
}

/// A baked table that does not form a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakeError {
    /// The offending path.
    pub path: &'static str,
    /// Why: `"empty"`, `"duplicate"` or `"a file is also a directory"`.
    pub why: &'static str,
}

/// The tree: the root directory and the writable budget.
pub struct Fs {
    root: DirRef,
    budget: Rc<Budget>,
    next_ino: u64,
}

impl Fs {
    /// A tree of `baked` files (paths relative to `/`, `/`-separated) with a writable budget of
    /// `limit` bytes.
    pub fn new(
        baked: &'static [(&'static str, &'static [u8])],
        limit: usize,
    ) -> Result<Fs, BakeError> {
        let mut fs = Fs {
            root: Rc::new(RefCell::new(DirNode {
                ino: 1,
                entries: Vec::new(),
            })),
            budget: Rc::new(Budget {
                used: Cell::new(0),
                limit,
            }),
            next_ino: 2,
        };
        for &(path, bytes) in baked {
            fs.bake(path, bytes)?;
        }
        Ok(fs)
    }

    fn ino(&mut self) -> u64 {
        self.next_ino += 1;
        self.next_ino - 1
    }

    fn bake(&mut self, path: &'static str, bytes: &'static [u8]) -> Result<(), BakeError> {
        let err = |why| BakeError { path, why };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((file, dirs)) = parts.split_last() else {
            return Err(err("empty"));
        };
        if parts
            .iter()
            .any(|p| *p == "." || *p == ".." || p.len() > NAME_MAX)
        {
            return Err(err("a component is `.`, `..` or too long"));
        }
        let mut cur = self.root.clone();
        for d in dirs {
            let next = {
                let mut c = cur.borrow_mut();
                match c.find(d.as_bytes()) {
                    Ok(i) => match &c.entries[i].1 {
                        Node::Dir(d) => d.clone(),
                        Node::File(_) => return Err(err("a file is also a directory")),
                    },
                    Err(i) => {
                        let ino = self.ino();
                        let n = Rc::new(RefCell::new(DirNode {
                            ino,
                            entries: Vec::new(),
                        }));
                        c.entries
                            .insert(i, (d.as_bytes().into(), Node::Dir(n.clone())));
                        n
                    }
                }
            };
            cur = next;
        }
        let mut c = cur.borrow_mut();
        match c.find(file.as_bytes()) {
            Ok(_) => Err(err("duplicate")),
            Err(i) => {
                let ino = self.ino();
                let f = FileNode {
                    ino,
                    data: Data::Baked(bytes),
                };
                c.entries.insert(
                    i,
                    (file.as_bytes().into(), Node::File(Rc::new(RefCell::new(f)))),
                );
                Ok(())
            }
        }
    }

    /// Bytes of the writable budget in use.
    pub fn used(&self) -> usize {
        self.budget.used.get()
    }

    /// Walks `path` to its last component. A missing or non-directory intermediate component is
    /// `ENOENT` / `ENOTDIR`; an empty path `ENOENT`.
    fn place<'p>(&self, path: &'p [u8]) -> Res<Place<'p>> {
        if path.is_empty() {
            return Err(ENOENT);
        }
        if path.len() > PATH_MAX {
            return Err(ENAMETOOLONG);
        }
        let parts: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty())
            .collect();
        if parts.iter().any(|p| p.len() > NAME_MAX) {
            return Err(ENAMETOOLONG);
        }
        // The directories walked through, for `..` (the root's parent is the root).
        let mut stack: Vec<DirRef> = Vec::new();
        let mut cur = self.root.clone();
        let Some((last, dirs)) = parts.split_last() else {
            return Ok(Place::Dir(cur));
        };
        for &p in dirs {
            match p {
                b"." => {}
                b".." => cur = stack.pop().unwrap_or_else(|| self.root.clone()),
                _ => {
                    let next = match cur.borrow().get(p) {
                        Some(Node::Dir(d)) => d.clone(),
                        Some(Node::File(_)) => return Err(ENOTDIR),
                        None => return Err(ENOENT),
                    };
                    stack.push(core::mem::replace(&mut cur, next));
                }
            }
        }
        Ok(match *last {
            b"." => Place::Dir(cur),
            b".." => Place::Dir(stack.pop().unwrap_or_else(|| self.root.clone())),
            name => Place::Entry { parent: cur, name },
        })
    }

    /// The node `path` names, if any, and whether the path ends in `/` (it must then be a
    /// directory).
    fn lookup(&self, path: &[u8]) -> Res<Node> {
        let node = match self.place(path)? {
            Place::Dir(d) => Node::Dir(d),
            Place::Entry { parent, name } => parent.borrow().get(name).cloned().ok_or(ENOENT)?,
        };
        if path.ends_with(b"/") && matches!(node, Node::File(_)) {
            return Err(ENOTDIR);
        }
        Ok(node)
    }

    /// Adds `node` as `name` in `parent`, charging the budget.
    fn link(&self, parent: &DirRef, name: &[u8], node: Node) -> Res<()> {
        let cost = ENTRY_COST + name.len();
        self.budget.charge(cost)?;
        let mut p = parent.borrow_mut();
        let mut n = Vec::new();
        let ok = n.try_reserve_exact(name.len()).is_ok() && p.entries.try_reserve(1).is_ok();
        if !ok {
            self.budget.refund(cost);
            return Err(ENOMEM);
        }
        n.extend_from_slice(name);
        match p.find(name) {
            Ok(_) => {
                self.budget.refund(cost);
                Err(EEXIST)
            }
            Err(i) => {
                p.entries.insert(i, (n.into_boxed_slice(), node));
                Ok(())
            }
        }
    }

    /// `open(path, flags, mode)`: the open file, or the errno. `mode` is ignored (there are no
    /// permissions). `O_NONBLOCK` is accepted (files never block); other flags than
    /// hermit-abi's `O_*` above are `EINVAL`.
    pub fn open(&mut self, path: &[u8], flags: i32, _mode: i32) -> Res<OpenFile> {
        const KNOWN: i32 =
            O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_NONBLOCK | O_DIRECTORY;
        if flags & !KNOWN != 0 {
            return Err(EINVAL);
        }
        let (read, write) = match flags & O_ACCMODE {
            O_RDONLY => (true, false),
            O_WRONLY => (false, true),
            O_RDWR => (true, true),
            _ => return Err(EINVAL),
        };
        let node = match self.place(path)? {
            Place::Dir(d) => Some(Node::Dir(d)),
            Place::Entry { parent, name } => {
                let found = parent.borrow().get(name).cloned();
                match found {
                    Some(n) => Some(n),
                    None if flags & O_CREAT == 0 => return Err(ENOENT),
                    None if flags & O_DIRECTORY != 0 => return Err(EINVAL),
                    None if path.ends_with(b"/") => return Err(EISDIR),
                    None => {
                        let f = Node::File(Rc::new(RefCell::new(FileNode {
                            ino: self.next_ino,
                            data: Data::Mem {
                                bytes: Vec::new(),
                                budget: self.budget.clone(),
                            },
                        })));
                        self.link(&parent, name, f.clone())?;
                        self.next_ino += 1;
                        return Ok(OpenFile::new(f, read, write, flags & O_APPEND != 0));
                    }
                }
            }
        };
        let node = node.ok_or(ENOENT)?;
        if flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL {
            return Err(EEXIST);
        }
        match &node {
            Node::Dir(_) if write || flags & O_TRUNC != 0 => return Err(EISDIR),
            Node::Dir(_) => {}
            Node::File(_) if flags & O_DIRECTORY != 0 || path.ends_with(b"/") => {
                return Err(ENOTDIR)
            }
            Node::File(_) if node.is_baked() && (write || flags & O_TRUNC != 0) => {
                return Err(EROFS)
            }
            Node::File(f) => {
                if flags & O_TRUNC != 0 {
                    f.borrow_mut().set_len(0)?;
                }
            }
        }
        Ok(OpenFile::new(node, read, write, flags & O_APPEND != 0))
    }

    /// `stat(path)` (and `lstat`: there are no links).
    pub fn stat(&self, path: &[u8]) -> Res<Stat> {
        Ok(self.lookup(path)?.stat())
    }

    /// `mkdir(path, mode)` (`mode` ignored).
    pub fn mkdir(&mut self, path: &[u8], _mode: u32) -> Res<()> {
        match self.place(path)? {
            Place::Dir(_) => Err(EEXIST),
            Place::Entry { parent, name } => {
                let d = Node::Dir(Rc::new(RefCell::new(DirNode {
                    ino: self.next_ino,
                    entries: Vec::new(),
                })));
                self.link(&parent, name, d)?;
                self.next_ino += 1;
                Ok(())
            }
        }
    }

    /// `rmdir(path)`: only an empty directory (`ENOTEMPTY`); `/` is `EBUSY`, a path ending in
    /// `.` `EINVAL`.
    pub fn rmdir(&mut self, path: &[u8]) -> Res<()> {
        let (parent, name) = match self.place(path)? {
            Place::Dir(d) if Rc::ptr_eq(&d, &self.root) => return Err(EBUSY),
            Place::Dir(_) if path.ends_with(b".") && !path.ends_with(b"..") => return Err(EINVAL),
            Place::Dir(_) => return Err(ENOTEMPTY),
            Place::Entry { parent, name } => (parent, name),
        };
        let mut p = parent.borrow_mut();
        let i = p.find(name).map_err(|_| ENOENT)?;
        match &p.entries[i].1 {
            Node::File(_) => return Err(ENOTDIR),
            Node::Dir(d) if !d.borrow().entries.is_empty() => return Err(ENOTEMPTY),
            Node::Dir(_) => {}
        }
        p.entries.remove(i);
        self.budget.refund(ENTRY_COST + name.len());
        Ok(())
    }

    /// `unlink(path)`: a file (a directory is `EISDIR`, a baked file `EROFS`). Open
    /// descriptors of it keep working.
    pub fn unlink(&mut self, path: &[u8]) -> Res<()> {
        let (parent, name) = match self.place(path)? {
            Place::Dir(_) => return Err(EISDIR),
            Place::Entry { parent, name } => (parent, name),
        };
        let mut p = parent.borrow_mut();
        let i = p.find(name).map_err(|_| ENOENT)?;
        let node = &p.entries[i].1;
        match node {
            Node::Dir(_) => return Err(EISDIR),
            _ if path.ends_with(b"/") => return Err(ENOTDIR),
            _ if node.is_baked() => return Err(EROFS),
            Node::File(_) => {}
        }
        p.entries.remove(i);
        self.budget.refund(ENTRY_COST + name.len());
        Ok(())
    }
}

/// An open file description: the node, the offset and the access mode. `dup`ed descriptors
/// share one (the caller keeps it behind an `Rc`).
pub struct OpenFile {
    node: Node,
    pos: u64,
    read: bool,
    write: bool,
    append: bool,
    /// For a directory: whether `getdents64` has returned its entries.
    listed: bool,
}

impl OpenFile {
    fn new(node: Node, read: bool, write: bool, append: bool) -> Self {
        OpenFile {
            node,
            pos: 0,
            read,
            write,
            append,
            listed: false,
        }
    }

    fn file(&self) -> Res<&FileRef> {
        match &self.node {
            Node::File(f) => Ok(f),
            Node::Dir(_) => Err(EISDIR),
        }
    }

    /// `read`: from the offset, advancing it; 0 at the end. A directory is `EISDIR`, a file not
    /// opened for reading `EBADF`.
    pub fn read(&mut self, buf: &mut [u8]) -> Res<usize> {
        let f = self.file()?.clone();
        if !self.read {
            return Err(EBADF);
        }
        let f = f.borrow();
        let bytes = f.bytes();
        let start = usize::try_from(self.pos)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }

    /// `write`: at the offset (at the end with `O_APPEND`), growing the file (zero-filling a
    /// gap left by a seek past the end), advancing the offset. Not opened for writing: `EBADF`;
    /// over the budget: `ENOSPC`; the heap refusing: `ENOMEM`.
    pub fn write(&mut self, buf: &[u8]) -> Res<usize> {
        let f = self.file()?.clone();
        if !self.write {
            return Err(EBADF);
        }
        let mut f = f.borrow_mut();
        let len = f.bytes().len();
        let start = if self.append {
            len
        } else {
            usize::try_from(self.pos).map_err(|_| EFBIG)?
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let end = start.checked_add(buf.len()).ok_or(EFBIG)?;
        if end > len {
            f.set_len(end)?;
        }
        let Data::Mem { bytes, .. } = &mut f.data else {
            return Err(EROFS);
        };
        bytes[start..end].copy_from_slice(buf);
        self.pos = end as u64;
        Ok(buf.len())
    }

    /// `lseek(offset, whence)`: the new offset. A negative result or an unknown `whence` is
    /// `EINVAL`; past the end is allowed (a later write fills the gap with zeros). On a
    /// directory only `SEEK_SET` to 0 (rewinding its listing) is accepted.
    pub fn lseek(&mut self, offset: i64, whence: i32) -> Res<u64> {
        if let Node::Dir(_) = self.node {
            if whence == SEEK_SET && offset == 0 {
                self.listed = false;
                self.pos = 0;
                return Ok(0);
            }
            return Err(EINVAL);
        }
        let base = match whence {
            SEEK_SET => 0,
            SEEK_CUR => self.pos as i64,
            SEEK_END => self.file()?.borrow().bytes().len() as i64,
            _ => return Err(EINVAL),
        };
        let pos = base.checked_add(offset).ok_or(EINVAL)?;
        self.pos = u64::try_from(pos).map_err(|_| EINVAL)?;
        Ok(self.pos)
    }

    /// `fstat`.
    pub fn stat(&self) -> Stat {
        self.node.stat()
    }

    /// The `fcntl(F_GETFL)` flags: the access mode and `O_APPEND`.
    pub fn status_flags(&self) -> i32 {
        let mode = match (self.read, self.write) {
            (true, true) => O_RDWR,
            (false, true) => O_WRONLY,
            _ => O_RDONLY,
        };
        mode | if self.append { O_APPEND } else { 0 }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.node, Node::Dir(_))
    }

    /// `getdents64`: the directory's entries as hermit-abi `dirent64` records (no `.` and `..`,
    /// as std's hermit `read_dir` does not skip them), all at once, then 0 at the end (until a
    /// rewinding `lseek`). If they do not all fit in `buf`, `EINVAL` (std's hermit `read_dir`
    /// reads with one call and retries with a doubled buffer on `EINVAL`, so a partial listing
    /// would silently lose entries). Not a directory: `ENOTDIR`.
    pub fn getdents64(&mut self, buf: &mut [u8]) -> Res<usize> {
        let Node::Dir(d) = &self.node else {
            return Err(ENOTDIR);
        };
        if self.listed {
            return Ok(0);
        }
        let d = d.borrow();
        let mut at = 0usize;
        for (i, (name, node)) in d.entries.iter().enumerate() {
            let reclen = dirent_len(name.len());
            let rec = buf.get_mut(at..at + reclen).ok_or(EINVAL)?;
            let (ino, ty) = match node {
                Node::File(f) => (f.borrow().ino, DT_REG),
                Node::Dir(d) => (d.borrow().ino, DT_DIR),
            };
            rec.fill(0);
            rec[0..8].copy_from_slice(&ino.to_ne_bytes());
            rec[8..16].copy_from_slice(&(i as i64 + 1).to_ne_bytes());
            rec[16..18].copy_from_slice(&(reclen as u16).to_ne_bytes());
            rec[18] = ty;
            rec[DIRENT64_NAME_OFFSET..DIRENT64_NAME_OFFSET + name.len()].copy_from_slice(name);
            at += reclen;
        }
        self.listed = true;
        Ok(at)
    }
}

/// The length of a `dirent64` record for a name of `n` bytes: the header, the name, its NUL,
/// rounded up to 8 (the record's alignment).
pub fn dirent_len(n: usize) -> usize {
    (DIRENT64_NAME_OFFSET + n + 1).next_multiple_of(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    static BAKED: &[(&str, &[u8])] = &[
        ("hello.txt", b"hello, baked\n"),
        ("etc/motd", b"welcome"),
        ("etc/deep/x", b"x"),
    ];

    fn fs() -> Fs {
        Fs::new(BAKED, 4096).unwrap()
    }

    fn read_all(f: &mut OpenFile) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 5];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// The names and types in a getdents64 buffer, parsed as std's hermit `ReadDir` does.
    fn names(buf: &[u8]) -> Vec<(String, u8)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            assert_eq!(reclen % 8, 0);
            let name = &buf[at + DIRENT64_NAME_OFFSET..at + reclen];
            let end = name.iter().position(|&b| b == 0).unwrap();
            out.push((
                String::from_utf8(name[..end].to_vec()).unwrap(),
                buf[at + 18],
            ));
            at += reclen;
        }
        out
    }

    fn list(fs: &mut Fs, path: &str) -> Vec<(String, u8)> {
        let mut d = fs.open(path.as_bytes(), O_RDONLY | O_DIRECTORY, 0).unwrap();
        let mut buf = [0u8; 1024];
        let n = d.getdents64(&mut buf).unwrap();
        assert_eq!(d.getdents64(&mut buf), Ok(0));
        names(&buf[..n])
    }

    #[test]
    fn baked_files_read_and_their_directories_are_implied() {
        let mut fs = fs();
        let mut f = fs.open(b"/hello.txt", O_RDONLY, 0).unwrap();
        assert_eq!(read_all(&mut f), b"hello, baked\n");
        let mut f = fs.open(b"etc/./deep/../motd", O_RDONLY, 0).unwrap();
        assert_eq!(read_all(&mut f), b"welcome");
        let st = fs.stat(b"/etc/motd").unwrap();
        assert_eq!((st.st_mode, st.st_size), (S_IFREG | 0o444, 7));
        assert_eq!(fs.stat(b"/etc").unwrap().st_mode, S_IFDIR | 0o755);
        assert_eq!(fs.stat(b"/").unwrap().st_ino, 1);
        assert_eq!(
            fs.stat(b"/../etc/deep/").unwrap().st_mode & S_IFDIR,
            S_IFDIR
        );
        assert_eq!(
            list(&mut fs, "/"),
            [("etc".into(), DT_DIR), ("hello.txt".into(), DT_REG)]
        );
        assert_eq!(fs.used(), 0);
    }

    #[test]
    fn baked_files_are_read_only() {
        let mut fs = fs();
        for flags in [
            O_WRONLY,
            O_RDWR,
            O_RDONLY | O_TRUNC,
            O_WRONLY | O_APPEND,
            O_RDWR | O_CREAT,
        ] {
            assert_eq!(
                fs.open(b"/hello.txt", flags, 0).err(),
                Some(EROFS),
                "{flags:o}"
            );
        }
        assert_eq!(fs.unlink(b"/etc/motd"), Err(EROFS));
        assert_eq!(fs.rmdir(b"/etc/deep"), Err(ENOTEMPTY));
        let mut f = fs.open(b"/hello.txt", O_RDONLY, 0).unwrap();
        assert_eq!(f.write(b"x"), Err(EBADF));
        // New entries in a baked directory are fine.
        fs.open(b"/etc/new", O_WRONLY | O_CREAT, 0o644).unwrap();
        assert_eq!(fs.stat(b"/etc/new").unwrap().st_size, 0);
    }

    #[test]
    fn bad_baked_tables_are_refused() {
        static DUP: &[(&str, &[u8])] = &[("a", b""), ("/a", b"")];
        static FILE_DIR: &[(&str, &[u8])] = &[("a", b""), ("a/b", b"")];
        static EMPTY: &[(&str, &[u8])] = &[("//", b"")];
        assert_eq!(Fs::new(DUP, 0).err().unwrap().why, "duplicate");
        assert_eq!(Fs::new(FILE_DIR, 0).err().unwrap().path, "a/b");
        assert_eq!(Fs::new(EMPTY, 0).err().unwrap().why, "empty");
    }

    #[test]
    fn create_write_append_seek_and_read_back() {
        let mut fs = fs();
        fs.mkdir(b"/tmp", 0o777).unwrap();
        let mut f = fs
            .open(b"/tmp/a", O_RDWR | O_CREAT | O_EXCL, 0o644)
            .unwrap();
        assert_eq!(f.write(b"hello"), Ok(5));
        assert_eq!(f.lseek(0, SEEK_SET), Ok(0));
        assert_eq!(read_all(&mut f), b"hello");
        assert_eq!(f.lseek(-2, SEEK_END), Ok(3));
        assert_eq!(f.write(b"LO!"), Ok(3));
        assert_eq!(f.lseek(-1, SEEK_CUR), Ok(5));
        assert_eq!(read_all(&mut f), b"!");
        // Seeking past the end and writing leaves zeros.
        assert_eq!(f.lseek(8, SEEK_SET), Ok(8));
        assert_eq!(f.write(b"z"), Ok(1));
        assert_eq!(fs.stat(b"tmp/a").unwrap().st_size, 9);
        assert_eq!(f.status_flags(), O_RDWR);
        let mut g = fs.open(b"/tmp/a", O_WRONLY | O_APPEND, 0).unwrap();
        assert_eq!(g.status_flags(), O_WRONLY | O_APPEND);
        assert_eq!(g.write(b"++"), Ok(2));
        let mut r = fs.open(b"/tmp/a", O_RDONLY, 0).unwrap();
        assert_eq!(read_all(&mut r), b"helLO!\0\0z++");
        assert_eq!(r.write(b"x"), Err(EBADF));
        let mut w = fs.open(b"/tmp/a", O_WRONLY, 0).unwrap();
        assert_eq!(w.read(&mut [0; 4]), Err(EBADF));
        // O_TRUNC empties it.
        fs.open(b"/tmp/a", O_WRONLY | O_TRUNC, 0).unwrap();
        assert_eq!(fs.stat(b"/tmp/a").unwrap().st_size, 0);
        assert_eq!(fs.stat(b"/tmp/a").unwrap().st_mode, S_IFREG | 0o644);
    }

    #[test]
    fn open_errors() {
        let mut fs = fs();
        assert_eq!(fs.open(b"/nope", O_RDONLY, 0).err(), Some(ENOENT));
        assert_eq!(fs.open(b"/nope/x", O_RDWR | O_CREAT, 0).err(), Some(ENOENT));
        assert_eq!(fs.open(b"/hello.txt/x", O_RDONLY, 0).err(), Some(ENOTDIR));
        assert_eq!(fs.open(b"/hello.txt/", O_RDONLY, 0).err(), Some(ENOTDIR));
        assert_eq!(
            fs.open(b"/hello.txt", O_RDONLY | O_DIRECTORY, 0).err(),
            Some(ENOTDIR)
        );
        assert_eq!(
            fs.open(b"/hello.txt", O_RDONLY | O_CREAT | O_EXCL, 0).err(),
            Some(EEXIST)
        );
        assert_eq!(fs.open(b"/etc", O_WRONLY, 0).err(), Some(EISDIR));
        assert_eq!(fs.open(b"/", O_RDWR, 0).err(), Some(EISDIR));
        assert_eq!(fs.open(b"/new/", O_RDWR | O_CREAT, 0).err(), Some(EISDIR));
        assert_eq!(
            fs.open(b"/x", O_RDWR | O_CREAT | O_DIRECTORY, 0).err(),
            Some(EINVAL)
        );
        assert_eq!(fs.open(b"/hello.txt", O_ACCMODE, 0).err(), Some(EINVAL));
        assert_eq!(fs.open(b"/hello.txt", 0o10000000, 0).err(), Some(EINVAL));
        assert_eq!(fs.open(b"", O_RDONLY, 0).err(), Some(ENOENT));
        let long = [b'a'; 256];
        assert_eq!(fs.open(&long, O_RDONLY, 0).err(), Some(ENAMETOOLONG));
        let mut d = fs.open(b"/etc", O_RDONLY, 0).unwrap();
        assert_eq!(d.read(&mut [0; 4]), Err(EISDIR));
        assert_eq!(d.write(b"x"), Err(EISDIR));
        assert_eq!(d.lseek(3, SEEK_SET), Err(EINVAL));
        let mut f = fs.open(b"/hello.txt", O_RDONLY, 0).unwrap();
        assert_eq!(f.getdents64(&mut [0; 512]), Err(ENOTDIR));
        assert_eq!(f.lseek(-1, SEEK_SET), Err(EINVAL));
        assert_eq!(f.lseek(0, 3), Err(EINVAL));
        assert_eq!(f.lseek(i64::MAX, SEEK_SET), Ok(i64::MAX as u64));
        assert_eq!(f.lseek(1, SEEK_CUR), Err(EINVAL));
        assert_eq!(f.read(&mut [0; 4]), Ok(0));
    }

    #[test]
    fn directories_list_make_and_remove() {
        let mut fs = fs();
        fs.mkdir(b"/d", 0).unwrap();
        assert_eq!(fs.mkdir(b"/d", 0), Err(EEXIST));
        assert_eq!(fs.mkdir(b"/etc", 0), Err(EEXIST));
        assert_eq!(fs.mkdir(b"/", 0), Err(EEXIST));
        assert_eq!(fs.mkdir(b"/x/y", 0), Err(ENOENT));
        fs.mkdir(b"/d/sub", 0).unwrap();
        fs.open(b"/d/b", O_WRONLY | O_CREAT, 0).unwrap();
        fs.open(b"/d/a", O_WRONLY | O_CREAT, 0).unwrap();
        assert_eq!(
            list(&mut fs, "/d"),
            [
                ("a".into(), DT_REG),
                ("b".into(), DT_REG),
                ("sub".into(), DT_DIR)
            ]
        );
        assert_eq!(list(&mut fs, "/d/sub"), []);
        assert_eq!(fs.rmdir(b"/d"), Err(ENOTEMPTY));
        assert_eq!(fs.rmdir(b"/d/a"), Err(ENOTDIR));
        assert_eq!(fs.rmdir(b"/"), Err(EBUSY));
        assert_eq!(fs.rmdir(b"/d/sub/."), Err(EINVAL));
        assert_eq!(fs.rmdir(b"/nope"), Err(ENOENT));
        assert_eq!(fs.unlink(b"/d/sub"), Err(EISDIR));
        assert_eq!(fs.unlink(b"/d/nope"), Err(ENOENT));
        fs.rmdir(b"/d/sub").unwrap();
        fs.unlink(b"/d/a").unwrap();
        fs.unlink(b"/d/b").unwrap();
        fs.rmdir(b"/d").unwrap();
        assert_eq!(fs.stat(b"/d").err(), Some(ENOENT));
        assert_eq!(fs.used(), 0);
    }

    #[test]
    fn getdents_needs_room_for_every_entry_and_rewinds() {
        let mut fs = fs();
        let mut d = fs.open(b"/", O_RDONLY | O_DIRECTORY, 0).unwrap();
        // "etc" takes 24 bytes, "hello.txt" 32: 40 bytes hold only the first.
        assert_eq!((dirent_len(3), dirent_len(9)), (24, 32));
        assert_eq!(d.getdents64(&mut [0; 40]), Err(EINVAL));
        let mut buf = [0u8; 56];
        assert_eq!(d.getdents64(&mut buf), Ok(56));
        assert_eq!(d.getdents64(&mut buf), Ok(0));
        assert_eq!(d.lseek(0, SEEK_SET), Ok(0));
        assert_eq!(d.getdents64(&mut buf), Ok(56));
        assert_eq!(names(&buf).len(), 2);
    }

    #[test]
    fn an_unlinked_open_file_lives_until_closed() {
        let mut fs = fs();
        let mut f = fs.open(b"/f", O_RDWR | O_CREAT, 0).unwrap();
        f.write(b"still here").unwrap();
        let with_file = fs.used();
        fs.unlink(b"/f").unwrap();
        assert_eq!(fs.stat(b"/f").err(), Some(ENOENT));
        assert_eq!(f.lseek(0, SEEK_SET), Ok(0));
        assert_eq!(read_all(&mut f), b"still here");
        assert_eq!(f.write(b"!"), Ok(1));
        assert_eq!(f.stat().st_size, 11);
        assert_eq!(fs.used(), with_file - ENTRY_COST - 1 + 1);
        drop(f);
        assert_eq!(fs.used(), 0);
        // A new file of that name is a different file.
        let g = fs.open(b"/f", O_RDWR | O_CREAT | O_EXCL, 0).unwrap();
        assert_eq!(g.stat().st_size, 0);
    }

    #[test]
    fn the_budget_is_enforced_with_enospc() {
        let mut fs = Fs::new(BAKED, 1000).unwrap();
        let mut f = fs.open(b"/big", O_WRONLY | O_CREAT, 0).unwrap();
        let room = 1000 - ENTRY_COST - 3;
        assert_eq!(f.write(&alloc::vec![7u8; room + 1]), Err(ENOSPC));
        assert_eq!(f.stat().st_size, 0);
        assert_eq!(f.write(&alloc::vec![7u8; room]), Ok(room));
        assert_eq!(f.write(b"x"), Err(ENOSPC));
        assert_eq!(fs.mkdir(b"/d", 0), Err(ENOSPC));
        assert_eq!(fs.open(b"/g", O_WRONLY | O_CREAT, 0).err(), Some(ENOSPC));
        assert_eq!(f.lseek(i64::MAX, SEEK_SET), Ok(i64::MAX as u64));
        assert!(matches!(f.write(b"x"), Err(ENOSPC | EFBIG)));
        // Truncating gives the room back.
        fs.open(b"/big", O_WRONLY | O_TRUNC, 0).unwrap();
        assert_eq!(fs.used(), ENTRY_COST + 3);
        fs.mkdir(b"/d", 0).unwrap();
    }

    #[test]
    fn a_write_the_heap_cannot_hold_is_enomem_not_an_abort() {
        let mut fs = Fs::new(BAKED, usize::MAX).unwrap();
        let mut f = fs.open(b"/huge", O_WRONLY | O_CREAT, 0).unwrap();
        f.lseek(i64::MAX - 10, SEEK_SET).unwrap();
        // isize::MAX-ish bytes: the allocator refuses, try_reserve reports it.
        assert_eq!(f.write(b"x"), Err(ENOMEM));
        assert_eq!(f.stat().st_size, 0);
        assert_eq!(fs.used(), ENTRY_COST + 4);
    }
}
