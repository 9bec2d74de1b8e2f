//! A simulated xenstored: the daemon's side of the ring page, speaking the real wire format.
//!
//! [`Sim`] owns a [`Store`] (a tree of nodes with permissions, watches and transactions with
//! conflict detection) and serves requests from a [`ShMem`] page shared with a
//! [`Client`](super::Client). It implements [`Transport`]: each `wait` runs one [`Sim::step`], so a
//! client over a `Sim` runs entirely on the host, deterministically.
//!
//! Tests script the other parties through it: *peers* ([`Sim::add_peer`]) are closures run at the
//! start of every step with the store, acting as dom0 (a backend changing its `state`, say), and
//! *faults* ([`Fault`]) corrupt the next reply or the ring indices. Replies can be split into small
//! chunks ([`Sim::set_write_chunk`]) and requests consumed slowly ([`Sim::set_read_chunk`]).

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::wire::{self, layout, Header, MsgType, HEADER_LEN, PAYLOAD_MAX, RING_SIZE};
use super::{ring, Client, Error, Perm, PermKind, Transport, XsErrno};
use crate::shmem::ShMem;

/// A misbehaviour of the simulated daemon, applied to the next reply (not to watch events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Replace the reply's type and payload, keeping its ids.
    Reply {
        /// The wire type to send.
        ty: u32,
        /// The payload to send.
        payload: Vec<u8>,
    },
    /// Send the reply with a request id that matches nothing.
    WrongReqId,
    /// Send these bytes instead of the reply.
    Raw(Vec<u8>),
    /// Declare this payload length in the reply's header (the payload itself is unchanged).
    Len(u32),
    /// Send only the first bytes of the reply, then stop responding altogether.
    Truncate(usize),
    /// Hold the reply (and everything after it) back for this many steps, which count as idle.
    Delay(u32),
    /// Instead of replying, set `rsp_prod` a whole ring and more ahead of `rsp_cons`.
    GarbageRspProd,
    /// Instead of replying, set `req_cons` ahead of `req_prod`.
    GarbageReqCons,
}

#[derive(Debug, Clone)]
struct Node {
    value: Vec<u8>,
    perms: Vec<Perm>,
    /// Changes whenever the node's value, permissions or children change.
    generation: u64,
}

#[derive(Debug)]
struct Watch {
    /// As registered (events report paths in the same form).
    path: String,
    /// Absolute form.
    abs: String,
    token: String,
}

#[derive(Debug, Default)]
struct Transaction {
    /// The transaction's private copy of the tree.
    nodes: BTreeMap<String, Node>,
    /// Every path the transaction read or wrote, with its generation when it started
    /// (`None`: absent). Commit fails with EAGAIN if any has changed since.
    seen: BTreeMap<String, Option<u64>>,
}

/// The tree, watches and transactions of the simulated daemon.
pub struct Store {
    nodes: BTreeMap<String, Node>,
    watches: Vec<Watch>,
    /// Fired events not yet sent: (path, token).
    events: VecDeque<(String, String)>,
    txs: BTreeMap<u32, Transaction>,
    next_tx: u32,
    generation: u64,
    /// The client's domain: relative paths are under `/local/domain/<domid>`.
    domid: u16,
}

/// A mutable view of the tree for one operation: global or a transaction's copy.
struct View<'a> {
    nodes: &'a mut BTreeMap<String, Node>,
    seen: Option<&'a mut BTreeMap<String, Option<u64>>>,
    generation: &'a mut u64,
    dom: u16,
    /// Paths written or removed (absolute), for watches; `true` for removals.
    changed: Vec<(String, bool)>,
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

fn is_below(path: &str, dir: &str) -> bool {
    dir == "/"
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn allowed(perms: &[Perm], dom: u16, write: bool) -> bool {
    let Some(owner) = perms.first() else {
        return true;
    };
    if dom == 0 || owner.domid == dom {
        return true;
    }
    let p = perms
        .get(1..)
        .unwrap_or(&[])
        .iter()
        .find(|p| p.domid == dom)
        .unwrap_or(owner);
    match p.kind {
        PermKind::Both => true,
        PermKind::Read => !write,
        PermKind::Write => write,
        PermKind::None => false,
    }
}

impl View<'_> {
    fn touch(&mut self, path: &str) {
        let generation = self.nodes.get(path).map(|n| n.generation);
        if let Some(seen) = self.seen.as_deref_mut() {
            seen.entry(path.to_string()).or_insert(generation);
        }
    }

    fn bump(&mut self) -> u64 {
        *self.generation += 1;
        *self.generation
    }

    fn node(&mut self, path: &str, write: bool) -> Result<&mut Node, XsErrno> {
        self.touch(path);
        let dom = self.dom;
        let node = self.nodes.get_mut(path).ok_or(XsErrno::Enoent)?;
        if !allowed(&node.perms, dom, write) {
            return Err(XsErrno::Eacces);
        }
        Ok(node)
    }

    /// Creates `path` and missing ancestors (inheriting their parent's permissions).
    fn create(&mut self, path: &str) -> Result<(), XsErrno> {
        if self.nodes.contains_key(path) {
            return Ok(());
        }
        let up = parent(path).ok_or(XsErrno::Einval)?;
        self.create(up)?;
        let perms = self.node(up, true)?.perms.clone();
        let g = self.bump();
        if let Some(p) = self.nodes.get_mut(up) {
            p.generation = g;
        }
        self.touch(path);
        self.nodes.insert(
            path.to_string(),
            Node {
                value: Vec::new(),
                perms,
                generation: g,
            },
        );
        self.changed.push((path.to_string(), false));
        Ok(())
    }

    fn read(&mut self, path: &str) -> Result<Vec<u8>, XsErrno> {
        Ok(self.node(path, false)?.value.clone())
    }

    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), XsErrno> {
        self.create(path)?;
        let g = self.bump();
        let node = self.node(path, true)?;
        node.value = value.to_vec();
        node.generation = g;
        self.changed.push((path.to_string(), false));
        Ok(())
    }

    fn rm(&mut self, path: &str) -> Result<(), XsErrno> {
        let up = parent(path).ok_or(XsErrno::Einval)?;
        if !self.nodes.contains_key(path) {
            // As xenstored: removing a missing node is fine if its parent exists.
            self.touch(path);
            return self.node(up, false).map(drop);
        }
        self.node(path, true)?;
        let doomed: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| *k == path || is_below(k, path))
            .cloned()
            .collect();
        for k in doomed {
            self.touch(&k);
            self.nodes.remove(&k);
        }
        let g = self.bump();
        self.touch(up);
        if let Some(p) = self.nodes.get_mut(up) {
            p.generation = g;
        }
        self.changed.push((path.to_string(), true));
        Ok(())
    }

    fn directory(&mut self, path: &str) -> Result<Vec<u8>, XsErrno> {
        self.node(path, false)?;
        let mut out = Vec::new();
        for k in self.nodes.keys() {
            if k != path && parent(k) == Some(path) {
                let name = k.rsplit('/').next().unwrap_or("");
                out.extend_from_slice(name.as_bytes());
                out.push(0);
            }
        }
        Ok(out)
    }

    fn set_perms(&mut self, path: &str, perms: Vec<Perm>) -> Result<(), XsErrno> {
        let dom = self.dom;
        let g = self.bump();
        let node = self.node(path, true)?;
        if dom != 0 && node.perms.first().is_some_and(|o| o.domid != dom) {
            return Err(XsErrno::Eacces);
        }
        node.perms = perms;
        node.generation = g;
        self.changed.push((path.to_string(), false));
        Ok(())
    }
}

impl Store {
    fn new(domid: u16) -> Self {
        let mut nodes = BTreeMap::new();
        let root = vec![Perm {
            kind: PermKind::None,
            domid: 0,
        }];
        nodes.insert(
            "/".to_string(),
            Node {
                value: Vec::new(),
                perms: root,
                generation: 0,
            },
        );
        let mut store = Store {
            nodes,
            watches: Vec::new(),
            events: VecDeque::new(),
            txs: BTreeMap::new(),
            next_tx: 1,
            generation: 1,
            domid,
        };
        let home = store.home();
        store.write(&home, b"");
        store.set_perms(
            &home,
            &[Perm {
                kind: PermKind::None,
                domid,
            }],
        );
        store.write(&format!("{home}/domid"), domid.to_string().as_bytes());
        store.write(&format!("{home}/name"), b"sim-guest");
        store.events.clear();
        store
    }

    /// `/local/domain/<domid>` of the client.
    pub fn home(&self) -> String {
        format!("/local/domain/{}", self.domid)
    }

    /// The absolute form of a client path, or EINVAL for a malformed one.
    fn absolute(&self, path: &str) -> Result<String, XsErrno> {
        let ok = |c: char| c.is_ascii_alphanumeric() || "-/_@".contains(c);
        if path.is_empty() || !path.chars().all(ok) || path.contains("//") {
            return Err(XsErrno::Einval);
        }
        let abs = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", self.home())
        };
        if (abs.len() > 1 && abs.ends_with('/')) || abs.len() > wire::ABS_PATH_MAX {
            return Err(XsErrno::Einval);
        }
        Ok(abs)
    }

    fn view(&mut self, tx: u32, dom: u16) -> Result<View<'_>, XsErrno> {
        let (nodes, seen) = if tx == 0 {
            (&mut self.nodes, None)
        } else {
            let t = self.txs.get_mut(&tx).ok_or(XsErrno::Enoent)?;
            (&mut t.nodes, Some(&mut t.seen))
        };
        Ok(View {
            nodes,
            seen,
            generation: &mut self.generation,
            dom,
            changed: Vec::new(),
        })
    }

    /// Runs `op` on the tree (or transaction `tx`'s copy) as domain `dom`, then fires watches
    /// for what it changed (outside transactions; a transaction's fire at commit).
    fn apply<R>(
        &mut self,
        tx: u32,
        dom: u16,
        op: impl FnOnce(&mut View<'_>) -> Result<R, XsErrno>,
    ) -> Result<R, XsErrno> {
        let mut view = self.view(tx, dom)?;
        let r = op(&mut view);
        let changed = core::mem::take(&mut view.changed);
        if tx == 0 {
            for (i, (path, removed)) in changed.iter().enumerate() {
                // A write that created its node is one change.
                if !changed[..i].iter().any(|(p, _)| p == path) {
                    self.fire(path, *removed);
                }
            }
        }
        r
    }

    fn fire(&mut self, path: &str, removed: bool) {
        let home = self.home();
        for w in &self.watches {
            let hit = path == w.abs || is_below(path, &w.abs);
            let parent_gone = removed && is_below(&w.abs, path);
            if !(hit || parent_gone) {
                continue;
            }
            let abs = if parent_gone { &w.abs } else { path };
            let shown = if w.path.starts_with('/') {
                abs.to_string()
            } else {
                abs.strip_prefix(&home)
                    .and_then(|r| r.strip_prefix('/'))
                    .unwrap_or(abs)
                    .to_string()
            };
            self.events.push_back((shown, w.token.clone()));
        }
    }

    fn commit(&mut self, tx: u32, commit: bool) -> Result<(), XsErrno> {
        let t = self.txs.remove(&tx).ok_or(XsErrno::Enoent)?;
        if !commit {
            return Ok(());
        }
        let current = |p: &String| self.nodes.get(p).map(|n| n.generation);
        if t.seen.iter().any(|(p, g)| current(p) != *g) {
            return Err(XsErrno::Eagain);
        }
        for (p, g) in &t.seen {
            let new = t.nodes.get(p);
            if new.map(|n| n.generation) == *g {
                continue;
            }
            match new {
                Some(n) => {
                    self.nodes.insert(p.clone(), n.clone());
                    self.fire(p, false);
                }
                None => {
                    self.nodes.remove(p);
                    self.fire(p, true);
                }
            }
        }
        Ok(())
    }

    // ---- For scripted peers (acting as dom0, outside transactions) ----------------------------

    /// Transactions open now.
    pub fn open_transactions(&self) -> usize {
        self.txs.len()
    }

    /// The value at absolute `path`, if present.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.nodes.get(path).map(|n| n.value.clone())
    }

    /// The value at absolute `path` as text, if present and UTF-8.
    pub fn read_str(&self, path: &str) -> Option<String> {
        String::from_utf8(self.read(path)?).ok()
    }

    /// Forgets every watch, as a new domain's connection starts with none (a restore).
    pub fn forget_watches(&mut self) {
        self.watches.clear();
    }

    /// Writes absolute `path` (creating parents), firing watches.
    pub fn write(&mut self, path: &str, value: &[u8]) {
        let _ = self.apply(0, 0, |v| v.write(path, value));
    }

    /// Removes absolute `path` and its subtree, firing watches.
    pub fn rm(&mut self, path: &str) {
        let _ = self.apply(0, 0, |v| v.rm(path));
    }

    /// Sets the permissions of absolute `path`.
    pub fn set_perms(&mut self, path: &str, perms: &[Perm]) {
        let _ = self.apply(0, 0, |v| v.set_perms(path, perms.to_vec()));
    }

    /// Sets up a PV device as a toolstack would: the frontend directory
    /// `<home>/device/<kind>/<id>` (owned by the guest, readable by the backend) with `backend`,
    /// `backend-id` and `state` 1, and the backend directory
    /// `/local/domain/<backend>/backend/<kind>/<guest>/<id>` (owned by the backend, readable by the
    /// guest) with `frontend`, `frontend-id` and `state` 1. Returns (frontend, backend) paths.
    pub fn add_device(&mut self, kind: &str, id: u32, backend_domid: u16) -> (String, String) {
        let fe = format!("{}/device/{kind}/{id}", self.home());
        let be = format!(
            "/local/domain/{backend_domid}/backend/{kind}/{}/{id}",
            self.domid
        );
        let guest = self.domid;
        for (dir, owner, reader) in [(&fe, guest, backend_domid), (&be, backend_domid, guest)] {
            self.write(dir, b"");
            let perms = [
                Perm {
                    kind: PermKind::None,
                    domid: owner,
                },
                Perm {
                    kind: PermKind::Read,
                    domid: reader,
                },
            ];
            self.set_perms(dir, &perms);
        }
        self.write(&format!("{fe}/backend"), be.as_bytes());
        self.write(
            &format!("{fe}/backend-id"),
            backend_domid.to_string().as_bytes(),
        );
        self.write(&format!("{fe}/state"), b"1");
        self.write(&format!("{be}/frontend"), fe.as_bytes());
        self.write(&format!("{be}/frontend-id"), guest.to_string().as_bytes());
        self.write(&format!("{be}/state"), b"1");
        (fe, be)
    }

    // ---- Requests ---------------------------------------------------------------------------

    /// Serves one request from the client; returns the reply's type and payload.
    fn handle(&mut self, ty: u32, tx: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        match self.serve(ty, tx, payload) {
            Ok((ty, p)) => (ty as u32, p),
            Err(e) => (
                MsgType::Error as u32,
                format!("{}\0", e.name()).into_bytes(),
            ),
        }
    }

    fn serve(&mut self, ty: u32, tx: u32, payload: &[u8]) -> Result<(MsgType, Vec<u8>), XsErrno> {
        let ty = MsgType::from_u32(ty).ok_or(XsErrno::Einval)?;
        let dom = self.domid;
        let ok = || b"OK\0".to_vec();
        // Requests are NUL-separated fields; WRITE's value is the bytes after the first NUL.
        let split = payload.iter().position(|&b| b == 0);
        let first = split.map(|i| &payload[..i]).ok_or(XsErrno::Einval)?;
        let rest = split.map(|i| &payload[i + 1..]).unwrap_or(&[]);
        let first = core::str::from_utf8(first).map_err(|_| XsErrno::Einval)?;
        let reply = match ty {
            MsgType::Read => {
                let p = self.absolute(first)?;
                self.apply(tx, dom, |v| v.read(&p))?
            }
            MsgType::Write => {
                let p = self.absolute(first)?;
                self.apply(tx, dom, |v| v.write(&p, rest))?;
                ok()
            }
            MsgType::Mkdir => {
                let p = self.absolute(first)?;
                self.apply(tx, dom, |v| v.create(&p))?;
                ok()
            }
            MsgType::Rm => {
                let p = self.absolute(first)?;
                self.apply(tx, dom, |v| v.rm(&p))?;
                ok()
            }
            MsgType::Directory => {
                let p = self.absolute(first)?;
                self.apply(tx, dom, |v| v.directory(&p))?
            }
            MsgType::GetPerms => {
                let p = self.absolute(first)?;
                let perms = self.apply(tx, dom, |v| Ok(v.node(&p, false)?.perms.clone()))?;
                wire::emit_perms(&perms)
            }
            MsgType::SetPerms => {
                let p = self.absolute(first)?;
                let perms = wire::parse_perms(rest).map_err(|_| XsErrno::Einval)?;
                self.apply(tx, dom, |v| v.set_perms(&p, perms))?;
                ok()
            }
            MsgType::Watch | MsgType::Unwatch => {
                let token = wire::text(rest).map_err(|_| XsErrno::Einval)?.to_string();
                let abs = if first.starts_with('@') {
                    first.to_string()
                } else {
                    self.absolute(first)?
                };
                let at = self
                    .watches
                    .iter()
                    .position(|w| w.path == first && w.token == token);
                match (ty, at) {
                    (MsgType::Watch, Some(_)) => return Err(XsErrno::Eexist),
                    (MsgType::Watch, None) => {
                        self.events.push_back((first.to_string(), token.clone()));
                        self.watches.push(Watch {
                            path: first.to_string(),
                            abs,
                            token,
                        });
                    }
                    (_, Some(i)) => {
                        self.watches.remove(i);
                    }
                    (_, None) => return Err(XsErrno::Enoent),
                }
                ok()
            }
            MsgType::TransactionStart => {
                let id = self.next_tx;
                self.next_tx = self.next_tx.wrapping_add(1).max(1);
                let t = Transaction {
                    nodes: self.nodes.clone(),
                    seen: BTreeMap::new(),
                };
                self.txs.insert(id, t);
                format!("{id}\0").into_bytes()
            }
            MsgType::TransactionEnd => {
                let commit = match first {
                    "T" => true,
                    "F" => false,
                    _ => return Err(XsErrno::Einval),
                };
                self.commit(tx, commit)?;
                ok()
            }
            _ => return Err(XsErrno::Enosys),
        };
        Ok((ty, reply))
    }
}

/// A scripted party acting on the store each step.
type Peer = Box<dyn FnMut(&mut Store)>;

/// The simulated daemon: a [`Store`] served over a ring page.
pub struct Sim {
    mem: ShMem,
    store: Store,
    peers: Vec<Peer>,
    faults: VecDeque<Fault>,
    /// Bytes of the request being received.
    rx: Vec<u8>,
    /// Reply bytes not yet in the ring.
    out: VecDeque<u8>,
    read_chunk: usize,
    write_chunk: usize,
    /// Stopped by a fault or a protocol violation: serves nothing more.
    dead: bool,
    /// Steps left before output resumes ([`Fault::Delay`]).
    hold: u32,
    idle: u32,
    idle_limit: u32,
    requests: u64,
}

impl Sim {
    /// A daemon serving domain `domid` over `mem` (a fresh page: indices zero).
    pub fn new(mem: ShMem, domid: u16) -> Self {
        Sim {
            mem,
            store: Store::new(domid),
            peers: Vec::new(),
            faults: VecDeque::new(),
            rx: Vec::new(),
            out: VecDeque::new(),
            read_chunk: usize::MAX,
            write_chunk: usize::MAX,
            dead: false,
            hold: 0,
            idle: 0,
            idle_limit: 64,
            requests: 0,
        }
    }

    /// A fresh page, a daemon for domain `domid` on it, and a client over both.
    pub fn client(domid: u16) -> Client<Sim> {
        let mem = ShMem::new(4096);
        let sim = Sim::new(mem.clone(), domid);
        match Client::new(mem, sim) {
            Ok(c) => c,
            // A 4096-byte page always holds the interface.
            Err(_) => unreachable!("page too small"),
        }
    }

    /// The store, to set up or inspect nodes directly (as dom0).
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Adds a scripted peer, run with the store at the start of every step.
    pub fn add_peer(&mut self, peer: impl FnMut(&mut Store) + 'static) {
        self.peers.push(Box::new(peer));
    }

    /// Queues a fault for the next reply (faults apply in order, one per reply).
    pub fn inject(&mut self, fault: Fault) {
        self.faults.push_back(fault);
    }

    /// Consumes at most `n` request bytes per step (partial reads by the daemon).
    pub fn set_read_chunk(&mut self, n: usize) {
        self.read_chunk = n.max(1);
    }

    /// Writes at most `n` reply bytes per step (replies arrive in pieces).
    pub fn set_write_chunk(&mut self, n: usize) {
        self.write_chunk = n.max(1);
    }

    /// Consecutive idle `wait`s before [`Transport::wait`] reports [`Error::TimedOut`].
    pub fn set_idle_limit(&mut self, n: u32) {
        self.idle_limit = n;
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Runs the daemon once: peers, then requests in the ring, then replies and events out.
    /// Returns whether anything happened.
    pub fn step(&mut self) -> bool {
        let before = self.store.generation;
        let mut peers = core::mem::take(&mut self.peers);
        for p in &mut peers {
            p(&mut self.store);
        }
        self.peers = peers;
        let mut progress = self.store.generation != before;
        if !self.dead {
            progress |= self.receive();
        }
        self.flush_events();
        progress |= self.transmit();
        progress
    }

    /// Consumes request bytes (up to the read chunk) and serves every complete request.
    fn receive(&mut self) -> bool {
        let mut budget = self.read_chunk;
        let mut progress = false;
        while budget > 0 && !self.dead {
            let want = match Header::parse(&self.rx) {
                Ok(h) => HEADER_LEN + h.len as usize,
                Err(Error::Truncated) => HEADER_LEN,
                Err(_) => return self.die(),
            };
            if self.rx.len() >= HEADER_LEN && self.rx.len() == want {
                let msg = core::mem::take(&mut self.rx);
                self.serve(&msg);
                progress = true;
                continue;
            }
            let mut chunk = [0u8; RING_SIZE as usize];
            let room = (want - self.rx.len()).min(budget).min(chunk.len());
            let n = match ring::consume(&self.mem, ring::REQ, &mut chunk[..room]) {
                Ok(n) => n,
                Err(_) => return self.die(),
            };
            if n == 0 {
                break;
            }
            budget -= n;
            progress = true;
            self.rx.extend_from_slice(&chunk[..n]);
        }
        progress
    }

    /// A protocol violation by the client: flag it in the page, as xenstored does, and stop.
    fn die(&mut self) -> bool {
        let _ = self
            .mem
            .store_u32(layout::ERROR, wire::ERROR_PROTO, Ordering::Release);
        self.dead = true;
        true
    }

    fn serve(&mut self, msg: &[u8]) {
        self.requests += 1;
        let Ok(h) = Header::parse(msg) else { return };
        let payload = msg.get(HEADER_LEN..).unwrap_or(&[]);
        // Events fired by this request go after its reply.
        let pending = core::mem::take(&mut self.store.events);
        let (ty, reply) = self.store.handle(h.ty, h.tx_id, payload);
        let fired = core::mem::replace(&mut self.store.events, pending);
        let len = reply.len() as u32;
        let mut header = Header {
            ty,
            req_id: h.req_id,
            tx_id: h.tx_id,
            len,
        };
        let mut payload = reply;
        let mut cut = None;
        match self.faults.pop_front() {
            None => {}
            Some(Fault::Reply { ty, payload: p }) => {
                header.ty = ty;
                header.len = p.len() as u32;
                payload = p;
            }
            Some(Fault::WrongReqId) => header.req_id = header.req_id.wrapping_add(1000),
            Some(Fault::Len(len)) => header.len = len,
            Some(Fault::Raw(bytes)) => {
                self.out.extend(bytes);
                self.store.events.extend(fired);
                return;
            }
            Some(Fault::Truncate(n)) => cut = Some(n),
            Some(Fault::Delay(steps)) => self.hold = steps,
            Some(Fault::GarbageRspProd) => {
                let cons = self
                    .mem
                    .load_u32(layout::RSP_CONS, Ordering::Relaxed)
                    .unwrap_or(0);
                let _ = self.mem.store_u32(
                    layout::RSP_PROD,
                    cons.wrapping_add(5000),
                    Ordering::Release,
                );
                self.dead = true;
                return;
            }
            Some(Fault::GarbageReqCons) => {
                let prod = self
                    .mem
                    .load_u32(layout::REQ_PROD, Ordering::Relaxed)
                    .unwrap_or(0);
                let _ =
                    self.mem
                        .store_u32(layout::REQ_CONS, prod.wrapping_add(7), Ordering::Release);
                self.dead = true;
                return;
            }
        }
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        if let Some(n) = cut {
            bytes.truncate(n);
            self.dead = true;
        }
        self.out.extend(bytes);
        self.store.events.extend(fired);
    }

    /// Turns fired watches into XS_WATCH_EVENT messages.
    fn flush_events(&mut self) {
        if self.dead {
            self.store.events.clear();
            return;
        }
        while let Some((path, token)) = self.store.events.pop_front() {
            let body = format!("{path}\0{token}\0");
            if body.len() > PAYLOAD_MAX {
                continue;
            }
            let header = Header {
                ty: MsgType::WatchEvent as u32,
                req_id: 0,
                tx_id: 0,
                len: body.len() as u32,
            };
            self.out.extend(header.to_bytes());
            self.out.extend(body.bytes());
        }
    }

    /// Writes pending reply bytes into the ring (up to the write chunk).
    fn transmit(&mut self) -> bool {
        if self.hold > 0 {
            self.hold -= 1;
            return false;
        }
        let n = self.out.len().min(self.write_chunk);
        if n == 0 {
            return false;
        }
        let chunk: Vec<u8> = self.out.iter().take(n).copied().collect();
        match ring::produce(&self.mem, ring::RSP, &chunk) {
            Ok(0) | Err(_) => false,
            Ok(written) => {
                self.out.drain(..written);
                true
            }
        }
    }
}

impl Transport for Sim {
    fn notify(&mut self) {}

    fn wait(&mut self) -> Result<(), Error> {
        if self.step() {
            self.idle = 0;
            return Ok(());
        }
        self.idle += 1;
        if self.idle > self.idle_limit {
            self.idle = 0;
            return Err(Error::TimedOut);
        }
        Ok(())
    }
}
