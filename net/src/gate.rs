//! Listeners as the stack keeps them, and the gate in front of smoltcp's receive path that
//! admits connection attempts: the rules that keep a listener serving under a SYN flood.
//!
//! smoltcp has no accept queue and no SYN cookies: a listening socket *becomes* the
//! connection, so each listener keeps `backlog` listening sockets (its *slots*). A SYN takes a
//! slot into SYN-RECEIVED; a spoofed SYN's SYN-ACK goes nowhere, so without these rules the
//! slot would stay half-open forever and a few dozen spoofed SYNs would take the port off the
//! air. The rules, for every app's listener:
//!
//! - **Half-open slots expire.** A slot still in SYN-RECEIVED [`HALF_OPEN_NS`] after the SYN
//!   (smoltcp has retransmitted its SYN-ACK at 1, 3 and 7 s) is given back: it listens again.
//! - **A full backlog sheds stale half-open slots.** A legitimate client completes its
//!   handshake within a round trip; the gate measures how long handshakes take (a moving
//!   average that one slow handshake moves by at most 1/8) and calls a half-open slot *stale*
//!   once it is [`SHED_FACTOR`] times older than that (between [`MIN_SHED_NS`] and
//!   [`MAX_SHED_NS`]). Before each poll, a port that has no listening slot left, or SYNs
//!   waiting, resets its stale slots to listening (no RST: their peers are probably spoofed;
//!   each socket re-enters smoltcp's set, see `relisten`). A SYN that finds no listening slot is held (below) and gets
//!   the next slot that goes stale, a poll later. So a flood can take a slot from a legitimate
//!   client only if that client's handshake takes over four times as long as the others'.
//! - **SYNs beyond a backlog of established connections wait.** When every slot holds a
//!   connection the app has not accepted yet, a SYN is held back (unseen by smoltcp, which
//!   would answer with a reset) and replayed as soon as `accept` makes room: a burst of
//!   clients waits for turns of the event loop, not for their SYN retransmission timers.
//!   SYNs held longer than [`HOLD_NS`], or beyond [`MAX_HELD`], are dropped, as Linux does
//!   when its accept queue is full (the client retransmits).
//! - **A SYN for a connection that already exists is dropped** (a retransmission that crossed
//!   our SYN-ACK, or one the activator replays after the guest got the original): smoltcp would
//!   give it to a listening slot, whose half-open twin of the connection ends in an RST that
//!   resets the real one.
//! - **A slot whose connection died before `accept`** (reset, timed out) listens again; the
//!   app never sees it.
//!
//! SYN cookies were considered and not chosen: they need the stack to open a connection in
//! ESTABLISHED with a sequence number the gate picked, which smoltcp's socket API cannot do
//! (it would mean forking its TCP state machine). Shedding stale half-open slots serves
//! `backlog` connection attempts per stale age (httpd: 32 per ~10 ms), and gives the same
//! guarantee as cookies to clients whose handshake is not many times slower than the others'.
//!
//! - **While the app is still starting, SYNs to a port nobody listens on yet are held**, not
//!   refused: a guest started on demand (activator/) gets its vif up a few ms before the app
//!   opens its listener, and a client's SYN (or its retransmission) landing in between must
//!   not get a RST. Held as above and replayed once the listener is there. Starting ends when
//!   the app says it serves ([`SynGate::serving`], called by `net::xen`'s ready report) or
//!   [`STARTING_NS`] after the first poll, whichever comes first.
//!
//! Once serving, ports nobody listens on are not touched (smoltcp refuses those, as it should). Every frame
//! also passes [`crate::filter`]'s reset check (RFC 5961) on its way to smoltcp.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::task::Waker;

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::IpListenEndpoint;

/// How long a slot may stay half-open (SYN-RECEIVED) before it listens again.
pub const HALF_OPEN_NS: u64 = 8_000_000_000;
/// A half-open slot is stale (may be shed) once this many times older than the average
/// handshake.
pub const SHED_FACTOR: u64 = 4;
/// Bounds of the age at which a half-open slot may be shed.
pub const MIN_SHED_NS: u64 = 2_000_000;
/// See [`MIN_SHED_NS`].
pub const MAX_SHED_NS: u64 = 1_000_000_000;
/// The handshake average assumed before any was measured.
const FIRST_HANDSHAKE_NS: u64 = 5_000_000;
/// How long after the first poll SYNs to ports without a listener are held at most, for an app
/// that never says it serves.
pub const STARTING_NS: u64 = 3_000_000_000;
/// The most SYNs held at once.
pub const MAX_HELD: usize = 256;
/// How long a SYN is held before it is dropped.
pub const HOLD_NS: u64 = 1_000_000_000;

/// What the gate did so far (see the module doc).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ListenStats {
    /// SYNs held back because every slot held an unaccepted connection.
    pub held: u64,
    /// SYNs dropped for belonging to a connection already there (see
    /// `filter::RstFilter::is_duplicate_syn`).
    pub duplicate_syns: u64,
    /// Held SYNs later handed to a listener.
    pub replayed: u64,
    /// Half-open slots reset to make room for a newer SYN.
    pub shed: u64,
    /// Half-open slots given back after [`HALF_OPEN_NS`].
    pub expired: u64,
    /// Slots whose connection died before it was accepted.
    pub died: u64,
    /// The average handshake (SYN to ACK) of the connections seen, in microseconds.
    pub handshake_us: u64,
}

/// A slot: a listener's socket, listening or handshaking or waiting for `accept`.
#[derive(Debug)]
struct Slot {
    handle: SocketHandle,
    /// When the slot was first seen half-open (the poll that delivered its SYN).
    half_open_since: Option<Instant>,
}

/// A listening port's slots and the task waiting in its `accept`.
#[derive(Debug)]
struct Listener {
    port: u16,
    slots: Vec<Slot>,
    waker: Option<Waker>,
}

/// Per listening port, before a poll: free (listening) slots and half-open ones.
#[derive(Debug, Clone, Copy)]
struct Room {
    port: u16,
    free: usize,
    /// When the oldest half-open slot got its SYN.
    oldest: Option<Instant>,
}

/// The stack's listeners and the gate in front of smoltcp's receive path (see the module doc).
#[derive(Debug, Default)]
pub struct SynGate {
    listeners: Vec<Listener>,
    rooms: Vec<Room>,
    held: VecDeque<(u16, Instant, Vec<u8>)>,
    now: Option<Instant>,
    stats: ListenStats,
    /// Moving average of completed handshakes' durations (SYN to ACK), in ns.
    handshake_ns: Option<u64>,
    /// Resets that fail RFC 5961's exact sequence number check never reach smoltcp.
    pub(crate) rst: crate::filter::RstFilter,
    /// Serving: the app said so, or [`STARTING_NS`] passed since `started`.
    serving: bool,
    started: Option<Instant>,
}

/// How the gate judged one received frame.
enum Verdict {
    /// Let smoltcp see it.
    Admit,
    /// A SYN for a port whose slots all wait for `accept`.
    Hold(u16),
    /// Not for smoltcp (a reset that fails RFC 5961's check, see [`crate::filter`]).
    Drop,
}

fn state_is_acceptable(s: tcp::State) -> bool {
    !matches!(
        s,
        tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed | tcp::State::TimeWait
    )
}

impl SynGate {
    /// What the gate did so far.
    pub fn stats(&self) -> ListenStats {
        ListenStats {
            handshake_us: self.handshake_ns.unwrap_or(0) / 1000,
            ..self.stats
        }
    }

    /// The app serves: from now on a SYN to a port nobody listens on goes to smoltcp, which
    /// refuses it (until then it is held; see the module doc).
    pub fn serving(&mut self) {
        self.serving = true;
    }

    /// Whether the app serves (see [`SynGate::serving`]).
    pub fn is_serving(&self) -> bool {
        self.serving
    }

    /// Registers a listener on `port` (its slots come with [`SynGate::add_slot`]).
    pub(crate) fn add_listener(&mut self, port: u16) {
        self.listeners.push(Listener {
            port,
            slots: Vec::new(),
            waker: None,
        });
    }

    /// Removes the listener on `port`; returns its slots' sockets (for the caller to abort).
    pub(crate) fn remove_listener(&mut self, port: u16) -> Vec<SocketHandle> {
        self.held.retain(|(p, _, _)| *p != port);
        match self.listeners.iter().position(|l| l.port == port) {
            Some(k) => self
                .listeners
                .swap_remove(k)
                .slots
                .into_iter()
                .map(|s| s.handle)
                .collect(),
            None => Vec::new(),
        }
    }

    fn listener(&mut self, port: u16) -> Option<&mut Listener> {
        self.listeners.iter_mut().find(|l| l.port == port)
    }

    /// Adds a listening socket to `port`'s listener.
    pub(crate) fn add_slot(&mut self, port: u16, handle: SocketHandle) {
        if let Some(l) = self.listener(port) {
            l.slots.push(Slot {
                handle,
                half_open_since: None,
            });
        }
    }

    /// The slots `port` has (listening, handshaking or waiting for `accept`).
    pub(crate) fn slots(&self, port: u16) -> usize {
        self.listeners
            .iter()
            .find(|l| l.port == port)
            .map_or(0, |l| l.slots.len())
    }

    /// Takes a connection of `port`'s that is ready for the app, if any; else registers `waker`
    /// to be woken when one is.
    pub(crate) fn take_accepted(
        &mut self,
        port: u16,
        sockets: &mut SocketSet<'static>,
        waker: &Waker,
    ) -> Option<SocketHandle> {
        let l = self.listener(port)?;
        let ready = l
            .slots
            .iter()
            .position(|s| state_is_acceptable(sockets.get::<tcp::Socket>(s.handle).state()));
        match ready {
            Some(k) => Some(l.slots.swap_remove(k).handle),
            None => {
                l.waker = Some(waker.clone());
                None
            }
        }
    }

    /// Ages the slots at `now`: expires long half-open ones, makes slots whose connection died
    /// listen again, wakes an `accept` that has a connection. Fills `rooms`.
    fn maintain(&mut self, sockets: &mut SocketSet<'static>, now: Instant) {
        self.rooms.clear();
        for l in &mut self.listeners {
            let mut room = Room {
                port: l.port,
                free: 0,
                oldest: None,
            };
            let mut ready = false;
            for slot in &mut l.slots {
                match sockets.get::<tcp::Socket>(slot.handle).state() {
                    tcp::State::Listen => {
                        slot.half_open_since = None;
                        room.free += 1;
                    }
                    tcp::State::SynReceived => {
                        let since = *slot.half_open_since.get_or_insert(now);
                        if (now - since).total_micros() >= HALF_OPEN_NS / 1000 {
                            relisten(sockets, slot, l.port);
                            self.stats.expired += 1;
                            room.free += 1;
                        } else {
                            room.oldest = Some(room.oldest.map_or(since, |o| o.min(since)));
                        }
                    }
                    tcp::State::Closed | tcp::State::TimeWait => {
                        relisten(sockets, slot, l.port);
                        self.stats.died += 1;
                        room.free += 1;
                    }
                    _ => {
                        if let Some(since) = slot.half_open_since.take() {
                            let took = (now - since).total_micros() * 1000;
                            self.handshake_ns = Some(average(self.handshake_ns, took));
                        }
                        ready = true;
                    }
                }
            }
            if ready {
                if let Some(w) = l.waker.take() {
                    w.wake();
                }
            }
            self.rooms.push(room);
        }
    }

    /// The age at which a half-open slot is stale.
    fn shed_age(&self) -> smoltcp::time::Duration {
        let ns = self
            .handshake_ns
            .unwrap_or(FIRST_HANDSHAKE_NS)
            .saturating_mul(SHED_FACTOR)
            .clamp(MIN_SHED_NS, MAX_SHED_NS);
        smoltcp::time::Duration::from_micros(ns / 1000)
    }

    /// Resets the stale half-open slots of every port that has no listening slot left or SYNs
    /// waiting (see the module doc); counts them as free in `rooms`.
    fn shed_stale(&mut self, sockets: &mut SocketSet<'static>, now: Instant) {
        let stale_before = now - self.shed_age();
        for (l, room) in self.listeners.iter_mut().zip(self.rooms.iter_mut()) {
            let waiting = self.held.iter().any(|h| h.0 == l.port);
            if room.free > 0 && !waiting {
                continue;
            }
            if room.oldest.is_none_or(|t| t > stale_before) {
                continue;
            }
            for slot in &mut l.slots {
                if slot.half_open_since.is_some_and(|t| t <= stale_before) {
                    let s = sockets.get::<tcp::Socket>(slot.handle);
                    if s.state() == tcp::State::SynReceived {
                        relisten(sockets, slot, l.port);
                        room.free += 1;
                        self.stats.shed += 1;
                    }
                }
            }
        }
    }

    /// The next time the gate needs a poll without an event (a half-open slot's expiry, or
    /// its going stale while SYNs wait; a held SYN's drop).
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        let wait = if self.held.is_empty() {
            smoltcp::time::Duration::from_micros(HALF_OPEN_NS / 1000)
        } else {
            self.shed_age()
        };
        let expiry = self
            .listeners
            .iter()
            .flat_map(|l| l.slots.iter())
            .filter_map(|s| s.half_open_since)
            .min()
            .map(|t| t + wait);
        let drop = self
            .held
            .front()
            .map(|(_, at, _)| *at + smoltcp::time::Duration::from_micros(HOLD_NS / 1000));
        match (expiry, drop) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Polls `iface` over `dev` with the gate in front of its receive path, applying the rules
    /// of the module doc.
    pub fn poll<D: Device>(
        &mut self,
        iface: &mut Interface,
        dev: &mut D,
        sockets: &mut SocketSet<'static>,
        now: Instant,
    ) {
        self.now = Some(now);
        let started = *self.started.get_or_insert(now);
        if !self.serving && (now - started).total_micros() >= STARTING_NS / 1000 {
            self.serving = true;
        }
        self.held
            .retain(|(_, at, _)| (now - *at).total_micros() < HOLD_NS / 1000);
        self.maintain(sockets, now);
        self.shed_stale(sockets, now);
        self.rst
            .refresh(sockets, dev.capabilities().checksum.tcp.rx());
        // Held SYNs for ports that have room go to smoltcp first, in the same poll.
        let mut replay = VecDeque::new();
        let mut k = 0;
        while k < self.held.len() {
            let port = self.held[k].0;
            match self.rooms.iter_mut().find(|r| r.port == port && r.free > 0) {
                Some(r) => {
                    r.free -= 1;
                    replay.extend(self.held.remove(k));
                }
                None => k += 1,
            }
        }
        let mut gated = Gated {
            dev,
            gate: self,
            replay,
        };
        iface.poll(now, &mut gated, sockets);
        // Not delivered (no room to answer): held again, oldest first.
        let Gated { replay, .. } = gated;
        for h in replay.into_iter().rev() {
            self.held.push_front(h);
        }
        // Slots that connected in this poll wake their accept now.
        self.maintain(sockets, now);
    }

    fn hold(&mut self, port: u16, frame: Vec<u8>) {
        self.stats.held += 1;
        if let Some(now) = self.now {
            if self.held.len() >= MAX_HELD {
                self.held.pop_front();
            }
            self.held.push_back((port, now, frame));
        }
    }

    /// How a received frame may pass: the reset filter's and the SYN rules' verdict, from one
    /// parse of its headers (smoltcp parses them again; the driver, before either, only for the
    /// checksum of a packet the backend did not vouch for).
    fn judge(&mut self, frame: &[u8]) -> Verdict {
        let Some((src, dst, t)) = crate::filter::tcp_in(frame) else {
            return Verdict::Admit;
        };
        if !self.rst.admit_tcp(src, dst, &t) {
            return Verdict::Drop;
        }
        if !t.syn() || t.ack() || t.rst() {
            return Verdict::Admit;
        }
        if self.rst.is_duplicate_syn(src, dst, &t) {
            self.stats.duplicate_syns += 1;
            return Verdict::Drop;
        }
        let port = t.dst_port();
        match self.rooms.iter_mut().find(|r| r.port == port) {
            None if !self.serving => Verdict::Hold(port),
            None => Verdict::Admit,
            Some(r) if r.free > 0 => {
                r.free -= 1;
                Verdict::Admit
            }
            Some(_) => Verdict::Hold(port),
        }
    }
}

/// The handshake average after a handshake that took `took_ns`: a moving average (1/8) of
/// samples first clamped to half and twice the average, so one slow handshake (the first
/// one waits for ARP; one client may be far away) moves it by at most 1/8.
fn average(avg: Option<u64>, took_ns: u64) -> u64 {
    let avg = avg.unwrap_or(FIRST_HANDSHAKE_NS);
    let sample = took_ns.clamp(avg / 2, avg.saturating_mul(2));
    (avg * 7 + sample) / 8
}

/// Makes `slot`'s socket listen on `port` again, as a new item of the socket set.
///
/// abort() then listen() resets the socket without sending anything (no RST to a spoofed
/// peer). The socket leaves the set and comes back because smoltcp keeps, beside each socket,
/// whether it is waiting for a neighbour's address: a slot whose SYN-ACK went to a spoofed
/// on-link address nobody answers would otherwise stay silent for a second (smoltcp's
/// discovery silence), and a legitimate client's SYN landing in it got no SYN-ACK in time.
fn relisten(sockets: &mut SocketSet<'static>, slot: &mut Slot, port: u16) {
    slot.handle = match sockets.remove(slot.handle) {
        smoltcp::socket::Socket::Tcp(mut s) => {
            s.abort();
            let _ = s.listen(IpListenEndpoint { addr: None, port });
            sockets.add(s)
        }
        other => sockets.add(other),
    };
    slot.half_open_since = None;
}

/// The device as smoltcp sees it behind the gate: replayed SYNs come first, then the device's
/// own frames, each judged by the gate.
struct Gated<'a, D> {
    dev: &'a mut D,
    gate: &'a mut SynGate,
    /// Held SYNs whose port has room.
    replay: VecDeque<(u16, Instant, Vec<u8>)>,
}

/// A received frame: a replayed SYN (already admitted), or one of the device's that passes
/// through the gate when consumed.
enum GatedRx<'a, R> {
    Replayed(Vec<u8>),
    Device { rx: R, gate: &'a mut SynGate },
}

impl<R: smoltcp::phy::RxToken> smoltcp::phy::RxToken for GatedRx<'_, R> {
    fn consume<T, F: FnOnce(&[u8]) -> T>(self, f: F) -> T {
        match self {
            GatedRx::Replayed(frame) => f(&frame),
            // A frame held back reaches smoltcp empty, which it discards as malformed.
            GatedRx::Device { rx, gate } => rx.consume(|buf| match gate.judge(buf) {
                Verdict::Admit => f(buf),
                Verdict::Hold(port) => {
                    gate.hold(port, buf.to_vec());
                    f(&[])
                }
                Verdict::Drop => f(&[]),
            }),
        }
    }
}

impl<D: Device> Device for Gated<'_, D> {
    type RxToken<'b>
        = GatedRx<'b, D::RxToken<'b>>
    where
        Self: 'b;
    type TxToken<'b>
        = D::TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, t: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // A replayed SYN needs room for its SYN-ACK; without it, it waits for the next poll and
        // the device's frames go on.
        if !self.replay.is_empty() && self.dev.transmit(t).is_some() {
            let tx = self.dev.transmit(t)?;
            let (_, _, frame) = self.replay.pop_front()?;
            self.gate.stats.replayed += 1;
            return Some((GatedRx::Replayed(frame), tx));
        }
        let (rx, tx) = self.dev.receive(t)?;
        Some((
            GatedRx::Device {
                rx,
                gate: self.gate,
            },
            tx,
        ))
    }
    fn transmit(&mut self, t: Instant) -> Option<Self::TxToken<'_>> {
        self.dev.transmit(t)
    }
    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        self.dev.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slow_handshake_moves_the_average_by_at_most_an_eighth() {
        let a = average(None, 130_000_000); // the first handshake waited for ARP
        assert_eq!(a, (FIRST_HANDSHAKE_NS * 7 + FIRST_HANDSHAKE_NS * 2) / 8);
        let mut a = a;
        for _ in 0..40 {
            a = average(Some(a), 20_000_000);
        }
        assert!((19_000_000..=20_000_000).contains(&a), "converges: {a}");
        assert!(average(Some(a), 0) >= a * 7 / 8 + a / 16, "fast ones too");
    }
}
