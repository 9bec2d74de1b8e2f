//! Slow and idle clients, sans-IO: the request-head deadline of one connection ([`Watch`]) and
//! which connection to shed when the server is at its connection cap ([`Registry`]).
//!
//! # The header deadline
//!
//! A request's head (request line, header fields, the empty line) must arrive whole within
//! [`Timeouts::header_ns`] (nginx's `client_header_timeout`, default 60 s there; httpd's
//! `header=SECS`, default 20 s). The clock runs from the connection's accept for its first
//! request and from the first byte of each later request on a keep-alive connection (between
//! requests the idle timeout applies instead, as nginx's `keepalive_timeout` does). A client
//! dribbling one byte every few seconds (slowloris) therefore holds a connection at most that
//! long, however regularly it sends; the server then answers `408 Request Timeout` and closes.
//! Reading a request body and writing a response are bounded by the idle timeout alone (each
//! wait for the peer, as before).
//!
//! # Shedding at the cap
//!
//! At the cap a newcomer is served and an open connection that has made the least progress is
//! shed instead (closed with a reset):
//!
//! 1. idle keep-alive connections (at least one response sent, nothing of the next request
//!    received) idle for at least [`IDLE_GRACE_NS`], longest idle first: closing one loses
//!    nothing (RFC 9112 §9.3.1: a client retries an idempotent request on a closed keep-alive
//!    connection). One idle for less is a client between two requests (wrk, a browser loading
//!    a page) and is not shed;
//! 2. then connections whose request head is still incomplete (including fresh ones that sent
//!    nothing yet), the one whose head clock started first (the nearest to its deadline), and
//!    among those the one with the fewest bytes received;
//! 3. connections with a request in progress (a body being read, a response being written) are
//!    never shed: when every connection is busy the newcomer gets `503` as before.

use alloc::vec::Vec;

use crate::conn::{Conn, Phase};

/// A keep-alive connection idle for less than this is between two requests of a live client:
/// it is not shed.
pub const IDLE_GRACE_NS: u64 = 1_000_000_000;

/// The two timeouts of a connection, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request head must arrive within this (see the module doc).
    pub header_ns: u64,
    /// Any single wait for the peer (to send, or to take what we send) ends the connection
    /// after this.
    pub idle_ns: u64,
}

/// Why a wait for the peer ends without the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The request head's deadline: answer 408 and close.
    Header,
    /// The idle timeout: close.
    Idle,
}

/// What a connection is doing, as the shedding policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A request in progress (body being read, response being written): never shed.
    Busy,
    /// Between keep-alive requests since `since`, nothing of the next one received.
    Idle {
        /// When it became idle.
        since: u64,
    },
    /// Waiting for a request head: its clock started at `since`, `bytes` of it received.
    Head {
        /// When the head's clock started (accept, or the head's first byte).
        since: u64,
        /// Bytes of the head received so far.
        bytes: usize,
    },
}

/// The deadlines of one connection. Call [`Watch::update`] after every `feed` (and after
/// writing), then wait for the peer at most [`Watch::wait`].
#[derive(Debug, Clone)]
pub struct Watch {
    t: Timeouts,
    /// When the current request head's clock started, and the request number it belongs to.
    head_since: Option<(u64, u32)>,
    idle_since: Option<u64>,
    standing: Standing,
}

impl Watch {
    /// The watch of a connection accepted at `now`: the first request's head clock runs.
    pub fn new(t: Timeouts, now: u64) -> Watch {
        Watch {
            t,
            head_since: Some((now, 0)),
            idle_since: None,
            standing: Standing::Head {
                since: now,
                bytes: 0,
            },
        }
    }

    /// Takes note of where `conn` stands at `now`; `output_pending` when responses are still
    /// queued for the socket.
    pub fn update(&mut self, conn: &Conn, output_pending: bool, now: u64) {
        let requests = conn.requests();
        let phase = conn.phase();
        match phase {
            Phase::Closed | Phase::Body => {
                self.head_since = None;
                self.idle_since = None;
            }
            Phase::Idle if requests > 0 => {
                self.head_since = None;
                self.idle_since.get_or_insert(now);
            }
            Phase::Idle | Phase::Head { .. } => {
                self.idle_since = None;
                match self.head_since {
                    Some((_, r)) if r == requests => {}
                    // A new request's first bytes (or the first request): its clock starts.
                    _ => self.head_since = Some((now, requests)),
                }
            }
        }
        self.standing = if output_pending {
            Standing::Busy
        } else {
            match (phase, self.head_since, self.idle_since) {
                (Phase::Head { bytes }, Some((since, _)), _) => Standing::Head { since, bytes },
                (Phase::Idle, Some((since, _)), _) => Standing::Head { since, bytes: 0 },
                (Phase::Idle, None, Some(since)) => Standing::Idle { since },
                _ => Standing::Busy,
            }
        };
    }

    /// How long the next wait for the peer may last from `now`, and what ends it.
    pub fn wait(&self, now: u64) -> (u64, Expiry) {
        match self.head_since {
            Some((since, _)) => {
                let left = since.saturating_add(self.t.header_ns).saturating_sub(now);
                if left <= self.t.idle_ns {
                    (left, Expiry::Header)
                } else {
                    (self.t.idle_ns, Expiry::Idle)
                }
            }
            None => (self.t.idle_ns, Expiry::Idle),
        }
    }

    /// What the shedding policy sees.
    pub fn standing(&self) -> Standing {
        self.standing
    }
}

/// The response to a request head that missed its deadline.
pub const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nServer: xenrt-httpd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// The response to a newcomer when every open connection is busy.
pub const UNAVAILABLE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nServer: xenrt-httpd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// A connection in a [`Registry`] (stale once removed or shed: using it then does nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id {
    index: usize,
    generation: u64,
}

#[derive(Debug)]
struct Entry<T> {
    generation: u64,
    standing: Standing,
    value: T,
}

/// The open connections, at most `cap`, each with the caller's `T` (e.g. a handle to tell its
/// task to stop) and its [`Standing`].
#[derive(Debug)]
pub struct Registry<T> {
    cap: usize,
    slots: Vec<Option<Entry<T>>>,
    live: usize,
    generation: u64,
}

/// What [`Registry::admit`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// Admitted under the cap.
    Open(Id),
    /// Admitted in place of a connection shed to make room: its value is returned (stop it).
    Shed(Id, T),
    /// At the cap and every connection is busy: not admitted (answer 503); the value is
    /// returned.
    Full(T),
}

impl<T> Registry<T> {
    /// An empty registry for at most `cap` connections.
    pub fn new(cap: usize) -> Registry<T> {
        Registry {
            cap,
            slots: Vec::new(),
            live: 0,
            generation: 0,
        }
    }

    /// Connections open.
    pub fn len(&self) -> usize {
        self.live
    }

    /// No connection is open.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Admits a connection accepted at `now` (its head clock starts), shedding one if at the
    /// cap (see the module doc).
    pub fn admit(&mut self, value: T, now: u64) -> Admit<T> {
        let shed = if self.live >= self.cap {
            match self.victim(now) {
                Some(v) => self.remove(v),
                None => return Admit::Full(value),
            }
        } else {
            None
        };
        self.generation += 1;
        let entry = Entry {
            generation: self.generation,
            standing: Standing::Head {
                since: now,
                bytes: 0,
            },
            value,
        };
        let index = match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(entry);
                i
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        };
        self.live += 1;
        let id = Id {
            index,
            generation: self.generation,
        };
        match shed {
            Some(v) => Admit::Shed(id, v),
            None => Admit::Open(id),
        }
    }

    fn entry(&mut self, id: Id) -> Option<&mut Entry<T>> {
        self.slots
            .get_mut(id.index)?
            .as_mut()
            .filter(|e| e.generation == id.generation)
    }

    /// Records what connection `id` is doing.
    pub fn set(&mut self, id: Id, standing: Standing) {
        if let Some(e) = self.entry(id) {
            e.standing = standing;
        }
    }

    /// Removes connection `id` (closed); returns its value unless it was already gone (shed).
    pub fn remove(&mut self, id: Id) -> Option<T> {
        self.entry(id)?;
        let e = self.slots.get_mut(id.index)?.take()?;
        self.live -= 1;
        Some(e.value)
    }

    /// Whether `id` is still registered (not removed, not shed).
    pub fn contains(&mut self, id: Id) -> bool {
        self.entry(id).is_some()
    }

    /// The connection the policy would shed at `now`, if any.
    pub fn victim(&self, now: u64) -> Option<Id> {
        // Sort key: idle ones first (longest idle), then heads (oldest clock, fewest bytes).
        let key = |s: &Standing| match *s {
            Standing::Busy => None,
            Standing::Idle { since } if now.saturating_sub(since) < IDLE_GRACE_NS => None,
            Standing::Idle { since } => Some((0u8, since, 0usize)),
            Standing::Head { since, bytes } => Some((1, since, bytes)),
        };
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, e)| {
                let e = e.as_ref()?;
                let k = key(&e.standing)?;
                Some((
                    k,
                    Id {
                        index,
                        generation: e.generation,
                    },
                ))
            })
            .min_by_key(|(k, _)| *k)
            .map(|(_, id)| id)
    }
}
