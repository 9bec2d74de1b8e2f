//! The xenstore client: one blocking request at a time over the ring page, with watch events
//! queued by token as they arrive between and during requests.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use super::wire::{self, layout, Body, Header, MsgType, HEADER_LEN, RING_SIZE};
use super::{ring, Error, Perm, Transport, Tx, WatchEvent, XsErrno};
use crate::shmem::{OutOfBounds, ShMem};

/// Attempts [`Client::transaction`] makes before giving up with `EAGAIN`.
pub const MAX_TRANSACTION_ATTEMPTS: usize = 64;

/// Requests whose late replies are dropped (given up on, or sent without waiting) at most;
/// beyond that the oldest is forgotten (its reply would then be an error).
pub const ABANDONED_MAX: usize = 16;

/// Watch events kept before the oldest are dropped (a peer flooding events cannot exhaust memory).
pub const EVENT_QUEUE_MAX: usize = 1024;

/// A xenstore connection: the ring page, the [`Transport`] and the client's state.
pub struct Client<T: Transport> {
    mem: ShMem,
    transport: T,
    next_id: u32,
    /// Requests given up on (timeout or error): their late replies are dropped, not errors.
    abandoned: [u32; ABANDONED_MAX],
    /// The slot of `abandoned` the next one takes when all are in use (the oldest).
    abandoned_next: usize,
    /// Replies to requests nobody waited for ([`Client::send_later`], or given up on) that
    /// were refusals, until [`Client::take_unawaited_refusals`].
    unawaited_refusals: u32,
    /// Bytes of the message being received.
    rx: Vec<u8>,
    events: VecDeque<WatchEvent>,
    dropped_events: u64,
    broken: bool,
    /// The watches set (path, token), to set again in a new domain ([`Client::rewatch`]).
    watches: Vec<(String, String)>,
}

/// What one received message turned out to be.
enum Got {
    /// Nothing complete in the ring.
    Nothing,
    /// The reply to the outstanding request: its payload or its typed error.
    Reply(Result<Vec<u8>, Error>),
}

impl<T: Transport> Client<T> {
    /// A client on the page `mem` (at least `struct xenstore_domain_interface`), reaching the
    /// daemon through `transport`.
    pub fn new(mem: ShMem, transport: T) -> Result<Self, Error> {
        if mem.len() < layout::SIZE {
            return Err(Error::Shmem(OutOfBounds {
                offset: 0,
                len: layout::SIZE,
                size: mem.len(),
            }));
        }
        Ok(Client {
            mem,
            transport,
            next_id: 1,
            abandoned: [0; ABANDONED_MAX],
            abandoned_next: 0,
            unawaited_refusals: 0,
            rx: Vec::new(),
            events: VecDeque::new(),
            dropped_events: 0,
            broken: false,
            watches: Vec::new(),
        })
    }

    /// The transport (on the host: the simulated daemon).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably (tests script the simulated daemon through it).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Watch events dropped because the queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// True once a framing violation made the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    // ---- Operations -------------------------------------------------------------------------

    /// Reads the value of `path`.
    pub fn read(&mut self, tx: Tx, path: &str) -> Result<Vec<u8>, Error> {
        self.request(MsgType::Read, tx, &[arg(path)?, b"\0"])
    }

    /// Reads the value of `path` as UTF-8 text.
    pub fn read_string(&mut self, tx: Tx, path: &str) -> Result<String, Error> {
        String::from_utf8(self.read(tx, path)?).map_err(|_| Error::NotUtf8)
    }

    /// Writes `value` to `path`, creating it and missing parents.
    pub fn write(&mut self, tx: Tx, path: &str, value: &[u8]) -> Result<(), Error> {
        self.request(MsgType::Write, tx, &[arg(path)?, b"\0", value])
            .map(drop)
    }

    /// Creates `path` (and parents) with an empty value; an existing node is left as it is.
    pub fn mkdir(&mut self, tx: Tx, path: &str) -> Result<(), Error> {
        self.request(MsgType::Mkdir, tx, &[arg(path)?, b"\0"])
            .map(drop)
    }

    /// Removes `path` and everything below it.
    pub fn rm(&mut self, tx: Tx, path: &str) -> Result<(), Error> {
        self.request(MsgType::Rm, tx, &[arg(path)?, b"\0"])
            .map(drop)
    }

    /// Names of the children of `path`.
    pub fn directory(&mut self, tx: Tx, path: &str) -> Result<Vec<String>, Error> {
        let payload = self.request(MsgType::Directory, tx, &[arg(path)?, b"\0"])?;
        Ok(wire::strings(&payload)?
            .into_iter()
            .map(String::from)
            .collect())
    }

    /// The permission list of `path`.
    pub fn get_perms(&mut self, tx: Tx, path: &str) -> Result<Vec<Perm>, Error> {
        let payload = self.request(MsgType::GetPerms, tx, &[arg(path)?, b"\0"])?;
        wire::parse_perms(&payload)
    }

    /// Replaces the permission list of `path` (the first entry names the owner).
    pub fn set_perms(&mut self, tx: Tx, path: &str, perms: &[Perm]) -> Result<(), Error> {
        if perms.is_empty() {
            return Err(Error::InvalidArgument);
        }
        let list = wire::emit_perms(perms);
        self.request(MsgType::SetPerms, tx, &[arg(path)?, b"\0", &list])
            .map(drop)
    }

    /// Watches `path` and everything below it; events carry `token`. xenstored fires the watch
    /// once right away.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), Error> {
        let parts: [&[u8]; 4] = [arg(path)?, b"\0", arg(token)?, b"\0"];
        self.request(MsgType::Watch, Tx::NONE, &parts)?;
        self.remember_watch(path, token);
        Ok(())
    }

    /// Removes a watch, and drops its queued events.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), Error> {
        let parts: [&[u8]; 4] = [arg(path)?, b"\0", arg(token)?, b"\0"];
        // Forgotten whatever the daemon says: a watch it does not know is no watch either.
        self.watches.retain(|(p, t)| !(p == path && t == token));
        self.request(MsgType::Unwatch, Tx::NONE, &parts)?;
        self.events.retain(|e| e.token != token);
        Ok(())
    }

    /// The watches set, as (path, token), in the order they were set.
    pub fn watches(&self) -> &[(String, String)] {
        &self.watches
    }

    /// Sets every watch again, after a restore into a new domain (the toolstack built the new
    /// domain's xenstore connection afresh, without our watches). Each fires once, as a new
    /// watch does, so whoever waits on it looks. Returns how many were set; the first error
    /// stops it (the connection is then unusable anyway).
    pub fn rewatch(&mut self) -> Result<usize, Error> {
        let watches = self.watches.clone();
        for (path, token) in &watches {
            let parts: [&[u8]; 4] = [arg(path)?, b"\0", arg(token)?, b"\0"];
            self.request(MsgType::Watch, Tx::NONE, &parts)?;
        }
        Ok(watches.len())
    }

    /// Starts a transaction.
    pub fn transaction_start(&mut self) -> Result<Tx, Error> {
        let payload = self.request(MsgType::TransactionStart, Tx::NONE, &[b"\0"])?;
        match wire::number(&payload)? {
            0 => Err(Error::BadNumber),
            id => Ok(Tx(id)),
        }
    }

    /// Commits (`commit`) or aborts a transaction; a conflicting commit fails with `EAGAIN`.
    pub fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<(), Error> {
        let flag: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.request(MsgType::TransactionEnd, tx, &[flag]).map(drop)
    }

    /// Runs `body` in a transaction and commits it, starting over while the commit (or an
    /// operation inside) fails with `EAGAIN`, up to [`MAX_TRANSACTION_ATTEMPTS`] times. Any other
    /// error from `body` aborts the transaction and is returned.
    pub fn transaction<R>(
        &mut self,
        mut body: impl FnMut(&mut Self, Tx) -> Result<R, Error>,
    ) -> Result<R, Error> {
        for _ in 0..MAX_TRANSACTION_ATTEMPTS {
            let tx = self.transaction_start()?;
            match body(self, tx) {
                Ok(value) => match self.transaction_end(tx, true) {
                    Ok(()) => return Ok(value),
                    Err(Error::Xs(XsErrno::Eagain)) => continue,
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    // Best effort: the error that matters is `e`.
                    let _ = self.transaction_end(tx, false);
                    if e != Error::Xs(XsErrno::Eagain) {
                        return Err(e);
                    }
                }
            }
        }
        Err(Error::Xs(XsErrno::Eagain))
    }

    /// This domain's id (the relative path `domid`).
    pub fn domid(&mut self) -> Result<u16, Error> {
        let s = self.read(Tx::NONE, "domid")?;
        wire::number(&s)?.try_into().map_err(|_| Error::BadNumber)
    }

    /// This domain's name (the relative path `name`).
    pub fn name(&mut self) -> Result<String, Error> {
        self.read_string(Tx::NONE, "name")
    }

    // ---- Watch events -----------------------------------------------------------------------

    /// Reads whatever the daemon has sent without blocking, queueing watch events.
    pub fn poll(&mut self) -> Result<(), Error> {
        self.check()?;
        match self.pump(None) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Waits once on the transport, then [`poll`](Self::poll)s: for callers that check their
    /// own deadline between waits.
    pub fn wait(&mut self) -> Result<(), Error> {
        self.check()?;
        if let Err(e) = self.transport.wait() {
            return Err(self.fail_wait(e));
        }
        self.poll()
    }

    /// Takes the oldest queued event for `token`, without reading the ring.
    pub fn take_event(&mut self, token: &str) -> Option<WatchEvent> {
        let i = self.events.iter().position(|e| e.token == token)?;
        self.events.remove(i)
    }

    /// Whether an event for `token` is queued (without reading the ring or taking it).
    pub fn has_event(&self, token: &str) -> bool {
        self.events.iter().any(|e| e.token == token)
    }

    /// Takes the oldest queued event for any token, without reading the ring.
    pub fn next_event(&mut self) -> Option<WatchEvent> {
        self.events.pop_front()
    }

    /// [`poll`](Self::poll)s, then takes the oldest event for `token`.
    pub fn poll_event(&mut self, token: &str) -> Result<Option<WatchEvent>, Error> {
        self.poll()?;
        Ok(self.take_event(token))
    }

    /// Blocks until an event for `token` arrives; events for other tokens stay queued.
    pub fn wait_event(&mut self, token: &str) -> Result<WatchEvent, Error> {
        loop {
            if let Some(e) = self.poll_event(token)? {
                return Ok(e);
            }
            self.wait()?;
        }
    }

    // ---- Requests and replies ---------------------------------------------------------------

    fn check(&self) -> Result<(), Error> {
        if self.broken {
            Err(Error::Broken)
        } else {
            Ok(())
        }
    }

    /// Records an error's effect on the connection and hands it back.
    fn fail(&mut self, e: Error) -> Error {
        if e.breaks_stream() {
            self.broken = true;
        }
        e
    }

    /// A transport wait failed: fatal only if it left a message half received.
    fn fail_wait(&mut self, e: Error) -> Error {
        if !self.rx.is_empty() {
            self.broken = true;
        }
        e
    }

    /// Sends one request and waits for its reply's payload.
    fn request(&mut self, ty: MsgType, tx: Tx, parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
        let id = self.start(ty, tx, parts)?;
        self.reply(id, ty, &[])
    }

    /// Sends one request (without waiting for its reply); its id.
    fn start(&mut self, ty: MsgType, tx: Tx, parts: &[&[u8]]) -> Result<u32, Error> {
        self.check()?;
        let id = self.next_id;
        let msg = wire::request(ty, id, tx.0, parts)?;
        self.next_id = id.wrapping_add(1).max(1);
        if let Err(e) = self.send(&msg) {
            // A request cut off halfway cannot be taken back.
            self.broken = true;
            return Err(e);
        }
        Ok(id)
    }

    /// Waits for the reply to request `id` (of type `ty`); on a failure, `id` and `later`
    /// (requests sent after it) are given up on.
    fn reply(&mut self, id: u32, ty: MsgType, later: &[u32]) -> Result<Vec<u8>, Error> {
        loop {
            let e = match self.pump(Some((id, ty))) {
                Ok(Got::Reply(r)) => return r,
                Ok(Got::Nothing) => match self.transport.wait() {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                },
                Err(e) => Ok(e),
            };
            self.abandon(id);
            for &l in later {
                self.abandon(l);
            }
            return Err(match e {
                Ok(e) => self.fail(e),
                Err(e) => self.fail_wait(e),
            });
        }
    }

    /// Remembers that request `id`'s reply is no longer awaited (the last
    /// [`ABANDONED_MAX`] only; ids are never 0, a free slot is).
    fn abandon(&mut self, id: u32) {
        let slot = match self.abandoned.iter().position(|&a| a == 0) {
            Some(i) => i,
            None => {
                let i = self.abandoned_next;
                self.abandoned_next = (i + 1) % ABANDONED_MAX;
                i
            }
        };
        self.abandoned[slot] = id;
    }

    /// True (and forgotten) if `id` was given up on.
    fn forget_abandoned(&mut self, id: u32) -> bool {
        match self.abandoned.iter().position(|&a| a == id && id != 0) {
            Some(i) => {
                self.abandoned[i] = 0;
                true
            }
            None => false,
        }
    }

    /// Sends `ops` (as [`batch`](Self::batch) would) without waiting for their replies: they
    /// are read (and dropped) along with whatever comes next, so requests nothing waits on
    /// (advertising a feature, setting a watch) cost no round trip of their own and go out
    /// while the caller gets on with its work. A refusal is only counted
    /// ([`take_unawaited_refusals`](Self::take_unawaited_refusals)); a watch is counted as set
    /// at once (set again by [`rewatch`](Self::rewatch)).
    pub fn send_later(&mut self, tx: Tx, ops: &[Op<'_>]) -> Result<(), Error> {
        for op in ops {
            let (ty, tx, parts) = op.parts(tx)?;
            let id = self.start(ty, tx, &parts)?;
            self.abandon(id);
            if let Op::Watch(path, token) = *op {
                self.remember_watch(path, token);
            }
        }
        Ok(())
    }

    /// How many requests nobody waited for ([`send_later`](Self::send_later), or given up on)
    /// were refused since the last call.
    pub fn take_unawaited_refusals(&mut self) -> u32 {
        core::mem::take(&mut self.unawaited_refusals)
    }

    /// Records a watch set (for [`rewatch`](Self::rewatch)).
    fn remember_watch(&mut self, path: &str, token: &str) {
        if !self.watches.iter().any(|(p, t)| p == path && t == token) {
            self.watches.push((path.into(), token.into()));
        }
    }

    /// Sends every request in `ops` (in transaction `tx`; watches outside any) before waiting
    /// for the first reply, and returns each one's result in order: one round trip to the
    /// daemon instead of one per request (it answers a connection's requests in the order they
    /// came). Requests go out as many at a time as fit in the ring. The outer error is the
    /// connection's (nothing more can be said about the requests then); a request the daemon
    /// refused has its own error inside. Ops that depend on an earlier one's success (a write in
    /// a transaction that must commit whole) are the caller's to check before going on.
    pub fn batch(&mut self, tx: Tx, ops: &[Op<'_>]) -> Result<Vec<Result<Vec<u8>, Error>>, Error> {
        // A bad argument sends nothing.
        for op in ops {
            op.parts(tx)?;
        }
        let mut results = Vec::with_capacity(ops.len());
        let mut first = 0;
        while first < ops.len() {
            // A run of requests that fits in the ring at once (at least one).
            let mut sent: Vec<(u32, MsgType)> = Vec::new();
            let mut bytes = 0;
            for op in &ops[first..] {
                let (ty, tx, parts) = op.parts(tx)?;
                let len = HEADER_LEN + parts.iter().map(|p| p.len()).sum::<usize>();
                if !sent.is_empty() && bytes + len > RING_SIZE as usize {
                    break;
                }
                bytes += len;
                match self.start(ty, tx, &parts) {
                    Ok(id) => sent.push((id, ty)),
                    Err(e) => {
                        for &(id, _) in &sent {
                            self.abandon(id);
                        }
                        return Err(e);
                    }
                }
            }
            let ids: Vec<u32> = sent.iter().map(|s| s.0).collect();
            for (k, &(id, ty)) in sent.iter().enumerate() {
                let later = &ids[k + 1..];
                let r = match self.reply(id, ty, later) {
                    Err(e) if !matches!(e, Error::Xs(_) | Error::UnexpectedType { .. }) => {
                        // reply() gave up on the later ones unless the reply itself was bad.
                        for &l in later {
                            if !self.abandoned.contains(&l) {
                                self.abandon(l);
                            }
                        }
                        return Err(e);
                    }
                    r => r,
                };
                if let (Ok(_), Op::Watch(path, token)) = (&r, ops[first + k]) {
                    self.remember_watch(path, token);
                }
                results.push(r);
            }
            first += sent.len();
        }
        Ok(results)
    }

    /// Writes `msg` into the request ring, piece by piece as the daemon makes room.
    fn send(&mut self, msg: &[u8]) -> Result<(), Error> {
        let mut done = 0;
        while done < msg.len() {
            let n = ring::produce(&self.mem, ring::REQ, &msg[done..])?;
            done += n;
            if n > 0 {
                self.transport.notify();
            } else {
                self.transport.wait()?;
            }
        }
        Ok(())
    }

    /// Handles every complete message in the reply ring: queues watch events, drops the late
    /// reply of an abandoned request, and returns the reply to `want` (id and type) if seen.
    /// An error is a message that is neither, or a framing violation.
    fn pump(&mut self, want: Option<(u32, MsgType)>) -> Result<Got, Error> {
        while let Some(bytes) = self.receive()? {
            // `receive` checked the header, so this only fails on a bug; treat it as framing.
            let header = Header::parse(&bytes)?;
            let ours = want.filter(|(id, _)| *id == header.req_id);
            let msg = match wire::parse(&bytes) {
                Ok(msg) => msg,
                Err(e) if ours.is_some() => return Ok(Got::Reply(Err(e))),
                Err(_) if self.forget_abandoned(header.req_id) => continue,
                Err(e) => return Err(e),
            };
            if let Body::WatchEvent { path, token } = msg.body {
                if self.events.len() >= EVENT_QUEUE_MAX {
                    self.events.pop_front();
                    self.dropped_events += 1;
                }
                self.events.push_back(WatchEvent {
                    path: path.into(),
                    token: token.into(),
                });
                continue;
            }
            if let Some((_, ty)) = ours {
                return Ok(Got::Reply(match msg.body {
                    Body::Error(errno) => Err(Error::Xs(errno)),
                    Body::Payload(_) if msg.ty != ty => Err(Error::UnexpectedType {
                        expected: ty as u32,
                        got: msg.ty as u32,
                    }),
                    Body::Payload(p) => Ok(p.to_vec()),
                    Body::WatchEvent { .. } => Err(Error::BadWatchEvent),
                }));
            }
            if self.forget_abandoned(header.req_id) {
                if let Body::Error(_) = msg.body {
                    self.unawaited_refusals = self.unawaited_refusals.saturating_add(1);
                }
                continue;
            }
            return Err(Error::UnexpectedReqId {
                expected: want.map(|w| w.0),
                got: header.req_id,
            });
        }
        Ok(Got::Nothing)
    }

    /// Reads reply-ring bytes into the message being received; returns it once complete.
    fn receive(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let mut consumed = false;
        let result = loop {
            let want = if self.rx.len() >= HEADER_LEN {
                HEADER_LEN + Header::parse(&self.rx)?.len as usize
            } else {
                HEADER_LEN
            };
            if self.rx.len() == want && want >= HEADER_LEN && self.rx.len() >= HEADER_LEN {
                break Some(core::mem::take(&mut self.rx));
            }
            let mut chunk = [0u8; RING_SIZE as usize];
            let room = (want - self.rx.len()).min(chunk.len());
            let n = ring::consume(&self.mem, ring::RSP, &mut chunk[..room])?;
            if n == 0 {
                break None;
            }
            consumed = true;
            self.rx.extend_from_slice(&chunk[..n]);
        };
        if consumed {
            // The daemon may be waiting for room to write the rest of a long reply.
            self.transport.notify();
        }
        Ok(result)
    }
}

/// One request of a [`Client::batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Read a node (the reply is its value).
    Read(&'a str),
    /// Write a node (the reply is empty).
    Write(&'a str, &'a [u8]),
    /// Watch a path with a token (outside any transaction; see [`Client::watch`]).
    Watch(&'a str, &'a str),
    /// List a node's children (the reply is their names, each NUL-terminated: see
    /// [`wire::strings`]).
    Directory(&'a str),
}

impl<'a> Op<'a> {
    /// Its request type, transaction (`tx`, none for a watch) and payload parts.
    fn parts(&self, tx: Tx) -> Result<(MsgType, Tx, [&'a [u8]; 4]), Error> {
        const NUL: &[u8] = b"\0";
        Ok(match *self {
            Op::Read(path) => (MsgType::Read, tx, [arg(path)?, NUL, &[], &[]]),
            Op::Directory(path) => (MsgType::Directory, tx, [arg(path)?, NUL, &[], &[]]),
            Op::Write(path, value) => (MsgType::Write, tx, [arg(path)?, NUL, value, &[]]),
            Op::Watch(path, token) => (
                MsgType::Watch,
                Tx::NONE,
                [arg(path)?, NUL, arg(token)?, NUL],
            ),
        })
    }
}

/// A path or token as request bytes: non-empty, without NUL.
fn arg(s: &str) -> Result<&[u8], Error> {
    if s.is_empty() || s.contains('\0') {
        return Err(Error::InvalidArgument);
    }
    Ok(s.as_bytes())
}
