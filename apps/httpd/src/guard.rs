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
//! At the cap a newcomer is admitted on probation: if its request head arrives whole within
//! [`PROBATION_NS`] it is served, and an open connection that has made the least progress is
//! shed in its favour (closed with a reset); if not, it gets 408 like any late head. (Shedding
//! at accept instead lets slow clients that reconnect at once shed each other hundreds of times
//! a second: measured in the lab with 270 of them against 256 places.) The one shed is:
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
//!    never shed: when every connection is busy a newcomer whose head arrived is served over
//!    the cap (by at most the probation places).
//!
//! At most `probation` connections are on probation at once; beyond that, the oldest
//! probationer makes room for a newcomer. `503` only with no probation places at all.

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
    /// When the connection became idle after its last response, and that response's number.
    idle_since: Option<(u64, u32)>,
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
                match self.idle_since {
                    // Idle since the same response: still the same idle period.
                    Some((_, r)) if r == requests && !output_pending => {}
                    // Idle from the moment its last response is written.
                    _ if output_pending => self.idle_since = None,
                    _ => self.idle_since = Some((now, requests)),
                }
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
                (Phase::Idle, None, Some((since, _))) => Standing::Idle { since },
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

    /// Changes the timeouts (the clocks already running keep their start).
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.t = t;
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
    /// Admitted over the cap: must send a whole request head within [`PROBATION_NS`] to stay.
    probation: bool,
    value: T,
}

/// How long a connection admitted over the cap has to send a whole request head (then it
/// takes the place of the connection with the least progress); a legitimate client sends its
/// head in its first segment.
pub const PROBATION_NS: u64 = 1_000_000_000;

/// The open connections, each with the caller's `T` (e.g. a handle to tell its task to stop)
/// and its [`Standing`]: at most `cap` regular ones, plus up to `probation` admitted over the
/// cap on probation (see [`Admit::Probation`]).
#[derive(Debug)]
pub struct Registry<T> {
    cap: usize,
    max_probation: usize,
    slots: Vec<Option<Entry<T>>>,
    regular: usize,
    on_probation: usize,
    generation: u64,
}

/// What [`Registry::admit`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// Admitted under the cap.
    Open(Id),
    /// At the cap: admitted on probation. Its first request head must arrive whole within
    /// [`PROBATION_NS`] (else 408 and close); once it does, [`Registry::set`] sheds the
    /// connection with the least progress in its favour. So slow clients crowding the cap
    /// cannot lock a newcomer out, and cannot shed each other faster than one per probation
    /// period each (a newcomer that sends nothing sheds nobody).
    Probation(Id),
    /// At the cap with every probation place taken: admitted on probation in place of the
    /// oldest probationer, whose value is returned (stop it).
    Shed(Id, T),
    /// At the cap with no probation place (a registry made with `probation` 0): not admitted
    /// (answer 503); the value is returned.
    Full(T),
}

impl<T> Registry<T> {
    /// An empty registry for `cap` connections and `probation` more on probation.
    pub fn new(cap: usize, probation: usize) -> Registry<T> {
        Registry {
            cap,
            max_probation: probation,
            slots: Vec::new(),
            regular: 0,
            on_probation: 0,
            generation: 0,
        }
    }

    /// Connections open (on probation included).
    pub fn len(&self) -> usize {
        self.regular + self.on_probation
    }

    /// No connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connections on probation.
    pub fn on_probation(&self) -> usize {
        self.on_probation
    }

    /// Admits a connection accepted at `now` (its head clock starts); see [`Admit`].
    pub fn admit(&mut self, value: T, now: u64) -> Admit<T> {
        let mut shed = None;
        let probation = self.regular >= self.cap;
        if probation && self.on_probation >= self.max_probation {
            let oldest = self.pick(now, true);
            match oldest {
                Some(v) => shed = self.remove(v),
                None => return Admit::Full(value),
            }
        }
        self.generation += 1;
        let entry = Entry {
            generation: self.generation,
            standing: Standing::Head {
                since: now,
                bytes: 0,
            },
            probation,
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
        if probation {
            self.on_probation += 1;
        } else {
            self.regular += 1;
        }
        let id = Id {
            index,
            generation: self.generation,
        };
        match (shed, probation) {
            (Some(v), _) => Admit::Shed(id, v),
            (None, true) => Admit::Probation(id),
            (None, false) => Admit::Open(id),
        }
    }

    fn entry(&mut self, id: Id) -> Option<&mut Entry<T>> {
        self.slots
            .get_mut(id.index)?
            .as_mut()
            .filter(|e| e.generation == id.generation)
    }

    /// Records what connection `id` is doing at `now`. A connection on probation whose head
    /// arrived (no longer [`Standing::Head`]) becomes a regular one: the connection the policy
    /// picks is removed to make room and its value returned (stop it); when every regular one
    /// is busy it becomes regular anyway (the regular count then exceeds the cap, by at most
    /// the probation places).
    pub fn set(&mut self, id: Id, standing: Standing, now: u64) -> Option<T> {
        let e = self.entry(id)?;
        e.standing = standing;
        if !e.probation || matches!(standing, Standing::Head { .. }) {
            return None;
        }
        e.probation = false;
        self.on_probation -= 1;
        self.regular += 1;
        if self.regular <= self.cap {
            return None;
        }
        let victim = self.pick(now, false)?;
        self.remove(victim)
    }

    /// Whether `id` is still on probation.
    pub fn is_on_probation(&mut self, id: Id) -> bool {
        self.entry(id).is_some_and(|e| e.probation)
    }

    /// Removes connection `id` (closed); returns its value unless it was already gone (shed).
    pub fn remove(&mut self, id: Id) -> Option<T> {
        self.entry(id)?;
        let e = self.slots.get_mut(id.index)?.take()?;
        if e.probation {
            self.on_probation -= 1;
        } else {
            self.regular -= 1;
        }
        Some(e.value)
    }

    /// Whether `id` is still registered (not removed, not shed).
    pub fn contains(&mut self, id: Id) -> bool {
        self.entry(id).is_some()
    }

    /// The regular connection the policy would shed at `now`, if any.
    pub fn victim(&self, now: u64) -> Option<Id> {
        self.pick(now, false)
    }

    /// Among regular connections (`probation` false) or those on probation (true), the one with
    /// the least progress.
    fn pick(&self, now: u64, probation: bool) -> Option<Id> {
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
                let e = e.as_ref().filter(|e| e.probation == probation)?;
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
