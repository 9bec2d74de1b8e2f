//! The stack's DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK, then renewing at T1,
//! rebinding at T2 and starting over when the lease expires or a server NAKs.
//!
//! smoltcp has a DHCP socket, but it cannot survive a busy or slow server: it picks a new
//! transaction id (xid) for every DISCOVER it retransmits, so an OFFER that arrives after the
//! next retransmission no longer matches and is dropped; and after five REQUESTs (10 s with
//! short timeouts) it goes back to DISCOVER with a new xid, so a slow server's ACK is dropped
//! too. Its retry timers are fixed, without randomisation, so guests booted together stay in
//! step. Neither can be changed through its API (its state and xid are private), so this module
//! replaces it:
//!
//! - Retransmissions back off exponentially with randomisation ([`retransmit_delay`]): 1 s,
//!   2 s, 4 s ... up to 64 s, each moved by a uniform random amount of up to ±1 s (±half the
//!   delay below 2 s). RFC 2131 §4.1 starts at 4 s; we start at 1 s because the first DISCOVER
//!   of a freshly booted guest is often lost while its backend's bridge port comes up, and a
//!   guest booted on demand should not wait 4 s for its address. The random source is seeded
//!   from the MAC and the clock, so guests booted together spread out.
//! - One xid for the whole acquisition: every DISCOVER and REQUEST of it carries the same xid
//!   (RFC 2131 §4.1 allows reusing it), so a late OFFER or ACK still matches.
//! - A REQUEST is retransmitted [`REQUEST_SENDS`] times (about a minute of backoff) before the
//!   client starts over with DISCOVER, and even then an ACK for that REQUEST (same xid, same
//!   server and address) is still taken.
//!
//! It speaks through a raw IPv4/UDP socket while it has no address (smoltcp drops unicast
//! frames to an address it does not have before UDP sockets see them, and a UDP socket cannot
//! send from 0.0.0.0), and through a UDP socket on port 68 once bound, so the raw socket does
//! not see the guest's other UDP traffic.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{raw, udp};
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, IpAddress, IpEndpoint, IpProtocol,
    IpVersion, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;

const SEC: u64 = 1_000_000_000;

/// The first retransmission timeout (before randomisation).
pub const FIRST_TIMEOUT_NS: u64 = SEC;
/// The longest retransmission timeout (before randomisation), as in RFC 2131 §4.1.
pub const MAX_TIMEOUT_NS: u64 = 64 * SEC;
/// REQUESTs sent for one offer before starting over with DISCOVER: with the backoff, the
/// server has about a minute (1+2+4+8+16+32 s) to answer.
pub const REQUEST_SENDS: u32 = 7;
/// The shortest wait between renewal (or rebinding) REQUESTs (RFC 2131 §4.4.5).
const MIN_RENEW_NS: u64 = 60 * SEC;
/// Lease time assumed when an ACK has none.
const DEFAULT_LEASE_SECS: u32 = 3600;
/// How long without a lease before saying so on the console.
pub const WARN_NS: u64 = 10 * SEC;

/// Options asked for: subnet mask, router, DNS servers.
const PARAMS: &[u8] = &[1, 3, 6];

/// The wait after send number `n` (0 = the first send) of one message:
/// [`FIRST_TIMEOUT_NS`]·2ⁿ, at most [`MAX_TIMEOUT_NS`], moved by a uniform random amount of
/// up to ±1 s (at most half the delay), taken from `rand`.
pub fn retransmit_delay(n: u32, rand: u32) -> u64 {
    let base = FIRST_TIMEOUT_NS
        .saturating_mul(1u64 << n.min(16))
        .min(MAX_TIMEOUT_NS);
    let j = (base / 2).min(SEC);
    // Uniform in [base - j, base + j] at 1 ms granularity.
    let steps = 2 * (j / 1_000_000) + 1;
    base - j + (u64::from(rand) % steps) * 1_000_000
}

/// A lease: what the interface is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Address and prefix.
    pub address: Ipv4Cidr,
    /// Default gateway.
    pub router: Option<Ipv4Address>,
    /// DNS servers.
    pub dns: Vec<Ipv4Address>,
    /// The server's identifier (where renewals go).
    pub server: Ipv4Address,
    /// Lease time in seconds (`u32::MAX`: infinite).
    pub secs: u32,
}

/// What [`Client::poll`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A lease was obtained (or changed): configure it.
    Configured(Lease),
    /// The lease is gone (expired or refused): remove the address.
    Deconfigured,
}

/// Messages counted since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// DISCOVERs sent.
    pub discovers: u32,
    /// OFFERs taken (matching our xid while selecting).
    pub offers: u32,
    /// REQUESTs sent (selecting, renewing and rebinding).
    pub requests: u32,
    /// ACKs taken.
    pub acks: u32,
    /// NAKs taken.
    pub naks: u32,
    /// Times REQUEST went unanswered and the client started over with DISCOVER.
    pub restarts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Sending DISCOVERs. `asked` is the (server, address) of a REQUEST given up on: its ACK
    /// is still taken.
    Selecting {
        asked: Option<(Ipv4Address, Ipv4Address)>,
    },
    /// Sending REQUESTs for `addr` offered by `server`.
    Requesting {
        server: Ipv4Address,
        addr: Ipv4Address,
    },
    /// Holding a lease; renewing (unicast) from `renew_ns`, rebinding (broadcast) from
    /// `rebind_ns`, gone at `expire_ns`.
    Bound {
        lease: Lease,
        renew_ns: u64,
        rebind_ns: u64,
        expire_ns: u64,
    },
}

/// The DHCP client. It owns one socket in the stack's [`SocketSet`].
#[derive(Debug)]
pub struct Client {
    mac: EthernetAddress,
    rng: u64,
    xid: u32,
    state: State,
    /// When the current message is (re)sent next.
    next_ns: u64,
    /// Sends of the current message so far.
    sent: u32,
    /// When the current exchange began (the `secs` field).
    began_ns: u64,
    /// The raw socket while unconfigured, the UDP socket once bound.
    sock: Sock,
    /// When to warn that no lease came (cleared once warned or bound).
    warn_ns: Option<u64>,
    /// Something was queued to send in the last poll.
    queued: bool,
    /// Counters.
    pub stats: Stats,
}

#[derive(Debug, Clone, Copy)]
enum Sock {
    Raw(SocketHandle),
    Udp(SocketHandle),
}

fn raw_socket() -> raw::Socket<'static> {
    raw::Socket::new(
        Some(IpVersion::Ipv4),
        Some(IpProtocol::Udp),
        raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; 8], vec![0; 6144]),
        raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; 2], vec![0; 1536]),
    )
}

fn udp_socket() -> udp::Socket<'static> {
    let mut s = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 3072]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 2], vec![0; 1536]),
    );
    // Cannot fail: the port is not 0 and the socket is new.
    let _ = s.bind(CLIENT_PORT);
    s
}

/// A DHCP message as received, with what the client checks.
struct Reply {
    kind: DhcpMessageType,
    xid: u32,
    your_ip: Ipv4Address,
    server: Option<Ipv4Address>,
    mask: Option<Ipv4Address>,
    router: Option<Ipv4Address>,
    dns: Vec<Ipv4Address>,
    lease: Option<u32>,
    t1: Option<u32>,
    t2: Option<u32>,
}

impl Client {
    /// A client for `mac` that sends its first DISCOVER at the next poll; `seed` (e.g. the
    /// clock) makes its xids and timers differ from other guests'.
    pub fn new(sockets: &mut SocketSet<'static>, mac: [u8; 6], now_ns: u64, seed: u64) -> Client {
        let mut rng = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
            .rotate_left(29)
            ^ seed
            ^ 0x9e37_79b9_7f4a_7c15;
        if rng == 0 {
            rng = 1;
        }
        let mut c = Client {
            mac: EthernetAddress(mac),
            rng,
            xid: 0,
            state: State::Selecting { asked: None },
            next_ns: now_ns,
            sent: 0,
            began_ns: now_ns,
            sock: Sock::Raw(sockets.add(raw_socket())),
            warn_ns: Some(now_ns.saturating_add(WARN_NS)),
            queued: false,
            stats: Stats::default(),
        };
        c.xid = c.rand();
        c
    }

    fn rand(&mut self) -> u32 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// The current lease, if bound.
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// When the client next needs a poll without a frame arriving.
    pub fn poll_at(&self) -> u64 {
        self.warn_ns.map_or(self.next_ns, |w| w.min(self.next_ns))
    }

    /// Whether the last poll queued a message (the stack then runs the interface again).
    pub fn queued(&self) -> bool {
        self.queued
    }

    /// Takes the replies that arrived, then (re)sends what is due at `now_ns`. The stack calls
    /// it after each interface poll and applies the event.
    pub fn poll(&mut self, sockets: &mut SocketSet<'static>, now_ns: u64) -> Option<Event> {
        self.queued = false;
        let mut event = None;
        while let Some(r) = self.recv(sockets) {
            if let Some(e) = self.input(r, now_ns) {
                event = Some(e);
            }
        }
        if now_ns >= self.next_ns {
            if let Some(e) = self.timer(now_ns) {
                event = Some(e);
            }
        }
        match &event {
            Some(Event::Configured(_)) => self.use_socket(sockets, true),
            Some(Event::Deconfigured) => self.use_socket(sockets, false),
            None => {}
        }
        // Send after the socket swap, so a message queued by `timer` goes out on the right one.
        if now_ns >= self.next_ns {
            self.transmit(sockets, now_ns);
        }
        if let Some(w) = self.warn_ns {
            if self.lease().is_some() {
                self.warn_ns = None;
            } else if now_ns >= w {
                log::warn!(
                    "net: no DHCP lease after {} s ({} DISCOVER, {} REQUEST sent, {} OFFER \
                     taken): is a DHCP server on this vif's bridge (or give ip=ADDR/PREFIX \
                     gw=ADDR)? Still asking.",
                    WARN_NS / SEC,
                    self.stats.discovers,
                    self.stats.requests,
                    self.stats.offers,
                );
                self.warn_ns = None;
            }
        }
        event
    }

    /// Switches to the UDP socket once bound, back to the raw one when the lease is gone.
    fn use_socket(&mut self, sockets: &mut SocketSet<'static>, bound: bool) {
        self.sock = match (self.sock, bound) {
            (Sock::Raw(h), true) => {
                sockets.remove(h);
                Sock::Udp(sockets.add(udp_socket()))
            }
            (Sock::Udp(h), false) => {
                sockets.remove(h);
                Sock::Raw(sockets.add(raw_socket()))
            }
            (s, _) => s,
        };
    }

    /// The next DHCP reply for our MAC from the socket (others are skipped).
    fn recv(&mut self, sockets: &mut SocketSet<'static>) -> Option<Reply> {
        loop {
            let r = match self.sock {
                Sock::Raw(h) => {
                    let s = sockets.get_mut::<raw::Socket>(h);
                    let pkt = s.recv().ok()?;
                    udp_payload(pkt).and_then(|p| self.parse(p))
                }
                Sock::Udp(h) => {
                    let s = sockets.get_mut::<udp::Socket>(h);
                    let (p, meta) = s.recv().ok()?;
                    if meta.endpoint.port != SERVER_PORT {
                        continue;
                    }
                    self.parse(p)
                }
            };
            if r.is_some() {
                return r;
            }
        }
    }

    fn parse(&self, payload: &[u8]) -> Option<Reply> {
        let pkt = DhcpPacket::new_checked(payload).ok()?;
        let d = DhcpRepr::parse(&pkt).ok()?;
        if d.client_hardware_address != self.mac
            || !matches!(
                d.message_type,
                DhcpMessageType::Offer | DhcpMessageType::Ack | DhcpMessageType::Nak
            )
        {
            return None;
        }
        Some(Reply {
            kind: d.message_type,
            xid: d.transaction_id,
            your_ip: d.your_ip,
            server: d.server_identifier,
            mask: d.subnet_mask,
            router: d.router,
            dns: d.dns_servers.iter().flatten().copied().collect(),
            lease: d.lease_duration,
            t1: d.renew_duration,
            t2: d.rebind_duration,
        })
    }

    /// Handles one reply.
    fn input(&mut self, r: Reply, now_ns: u64) -> Option<Event> {
        if r.xid != self.xid {
            return None;
        }
        let server = r.server?;
        // The (server, address) a REQUEST went to, whose ACK or NAK we take.
        let asked = match &self.state {
            State::Requesting { server, addr } => Some((*server, *addr)),
            State::Selecting { asked } => *asked,
            State::Bound { .. } => None,
        };
        let renewing = now_ns >= self.renew_ns();
        let ours = self.lease().map(|l| l.address.address());
        match (&self.state, r.kind) {
            (State::Selecting { .. }, DhcpMessageType::Offer) => {
                if !unicast(r.your_ip) {
                    return None;
                }
                self.stats.offers += 1;
                log::debug!(
                    "net: DHCP OFFER {} from {server} after {} ms",
                    r.your_ip,
                    now_ns.saturating_sub(self.began_ns) / 1_000_000
                );
                self.state = State::Requesting {
                    server,
                    addr: r.your_ip,
                };
                self.sent = 0;
                self.next_ns = now_ns;
                None
            }
            (State::Requesting { .. } | State::Selecting { .. }, DhcpMessageType::Ack)
                if asked == Some((server, r.your_ip)) =>
            {
                self.bind(r, server, now_ns)
            }
            (State::Bound { .. }, DhcpMessageType::Ack) if renewing && ours == Some(r.your_ip) => {
                self.bind(r, server, now_ns)
            }
            (State::Requesting { .. } | State::Selecting { .. }, DhcpMessageType::Nak)
                if asked.is_some_and(|(s, _)| s == server) =>
            {
                self.stats.naks += 1;
                log::info!("net: DHCP server {server} refused the address (NAK); asking again");
                self.restart(now_ns);
                None
            }
            (State::Bound { .. }, DhcpMessageType::Nak) if renewing => {
                self.stats.naks += 1;
                log::warn!("net: DHCP server {server} refused to renew the lease (NAK)");
                self.restart(now_ns);
                Some(Event::Deconfigured)
            }
            _ => None,
        }
    }

    fn renew_ns(&self) -> u64 {
        match &self.state {
            State::Bound { renew_ns, .. } => *renew_ns,
            _ => u64::MAX,
        }
    }

    /// Takes an ACK: the lease and its timers.
    fn bind(&mut self, r: Reply, server: Ipv4Address, now_ns: u64) -> Option<Event> {
        if !unicast(r.your_ip) {
            return None;
        }
        let prefix = IpAddress::Ipv4(r.mask?).prefix_len()?;
        let secs = r.lease.unwrap_or(DEFAULT_LEASE_SECS);
        let (t1, t2) = match (r.t1, r.t2) {
            (Some(t1), Some(t2)) if t1 <= t2 && t2 <= secs => (t1, t2),
            _ => (secs / 2, (u64::from(secs) * 7 / 8) as u32),
        };
        let at = |s: u32| {
            if secs == u32::MAX {
                u64::MAX
            } else {
                now_ns.saturating_add(u64::from(s) * SEC)
            }
        };
        let lease = Lease {
            address: Ipv4Cidr::new(r.your_ip, prefix),
            router: r.router,
            dns: r.dns,
            server,
            secs,
        };
        self.stats.acks += 1;
        let changed = self.lease() != Some(&lease);
        self.state = State::Bound {
            lease: lease.clone(),
            renew_ns: at(t1),
            rebind_ns: at(t2),
            expire_ns: at(secs),
        };
        self.next_ns = at(t1);
        self.sent = 0;
        changed.then_some(Event::Configured(lease))
    }

    /// Starts over with DISCOVER under a new xid.
    fn restart(&mut self, now_ns: u64) {
        self.state = State::Selecting { asked: None };
        self.xid = self.rand();
        self.sent = 0;
        self.began_ns = now_ns;
        self.next_ns = now_ns;
    }

    /// Timer work at `now_ns` before sending: REQUEST given up, renewal begun, lease expired.
    fn timer(&mut self, now_ns: u64) -> Option<Event> {
        match &self.state {
            State::Requesting { server, addr } if self.sent >= REQUEST_SENDS => {
                log::info!(
                    "net: DHCP server {server} did not answer {} REQUESTs for {addr}; \
                     discovering again",
                    self.sent
                );
                self.stats.restarts += 1;
                self.state = State::Selecting {
                    asked: Some((*server, *addr)),
                };
                self.sent = 0;
                None
            }
            State::Bound { expire_ns, .. } if now_ns >= *expire_ns => {
                log::warn!("net: DHCP lease expired");
                self.restart(now_ns);
                Some(Event::Deconfigured)
            }
            State::Bound { .. } if self.sent == 0 => {
                // Renewal begins: a new exchange.
                self.xid = self.rand();
                self.began_ns = now_ns;
                None
            }
            _ => None,
        }
    }

    /// Sends the message the state calls for and sets the retransmission timer.
    fn transmit(&mut self, sockets: &mut SocketSet<'static>, now_ns: u64) {
        let secs = (now_ns.saturating_sub(self.began_ns) / SEC).min(u64::from(u16::MAX)) as u16;
        let mut d = DhcpRepr {
            message_type: DhcpMessageType::Discover,
            transaction_id: self.xid,
            secs,
            client_hardware_address: self.mac,
            client_ip: Ipv4Address::UNSPECIFIED,
            your_ip: Ipv4Address::UNSPECIFIED,
            server_ip: Ipv4Address::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Address::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: Some(self.mac),
            server_identifier: None,
            parameter_request_list: Some(PARAMS),
            max_size: Some(1432),
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            dns_servers: None,
            additional_options: &[],
        };
        let mut dst = Ipv4Address::BROADCAST;
        let wait = match &self.state {
            State::Selecting { .. } => {
                self.stats.discovers += 1;
                retransmit_delay(self.sent, self.rand())
            }
            State::Requesting { server, addr } => {
                d.message_type = DhcpMessageType::Request;
                d.requested_ip = Some(*addr);
                d.server_identifier = Some(*server);
                self.stats.requests += 1;
                retransmit_delay(self.sent, self.rand())
            }
            State::Bound {
                lease,
                rebind_ns,
                expire_ns,
                ..
            } => {
                d.message_type = DhcpMessageType::Request;
                d.client_ip = lease.address.address();
                self.stats.requests += 1;
                // RFC 2131 §4.4.5: half the time left until T2 (renewing, unicast) or until
                // the lease ends (rebinding, broadcast), at least 60 s.
                let (until, wait) = if now_ns < *rebind_ns {
                    dst = lease.server;
                    (*rebind_ns, (*rebind_ns - now_ns) / 2)
                } else {
                    (*expire_ns, expire_ns.saturating_sub(now_ns) / 2)
                };
                wait.max(MIN_RENEW_NS)
                    .min(until.saturating_sub(now_ns))
                    .max(1_000_000)
            }
        };
        log::debug!(
            "net: DHCP {:?} #{} xid {:08x} to {dst}; next in {} ms",
            d.message_type,
            self.sent + 1,
            self.xid,
            wait / 1_000_000
        );
        let sent = match self.sock {
            Sock::Raw(h) => {
                let s = sockets.get_mut::<raw::Socket>(h);
                let len = 20 + 8 + d.buffer_len();
                match s.send(len) {
                    Ok(buf) => {
                        emit_ipv4_udp(buf, Ipv4Address::UNSPECIFIED, dst, &d);
                        true
                    }
                    Err(_) => false,
                }
            }
            Sock::Udp(h) => {
                let s = sockets.get_mut::<udp::Socket>(h);
                let to = IpEndpoint::new(IpAddress::Ipv4(dst), SERVER_PORT);
                match s.send(d.buffer_len(), to) {
                    Ok(buf) => d.emit(&mut DhcpPacket::new_unchecked(buf)).is_ok(),
                    Err(_) => false,
                }
            }
        };
        if sent {
            self.queued = true;
        }
        self.sent += 1;
        self.next_ns = now_ns.saturating_add(wait);
    }
}

fn unicast(a: Ipv4Address) -> bool {
    !(a.is_broadcast() || a.is_multicast() || a.is_unspecified())
}

/// The UDP payload of an IPv4 packet from port 67 to port 68.
fn udp_payload(pkt: &[u8]) -> Option<&[u8]> {
    let ip = Ipv4Packet::new_checked(pkt).ok()?;
    if ip.next_header() != IpProtocol::Udp || ip.frag_offset() != 0 || ip.more_frags() {
        return None;
    }
    let hl = usize::from(ip.header_len());
    let u = UdpPacket::new_checked(pkt.get(hl..usize::from(ip.total_len()))?).ok()?;
    if u.src_port() != SERVER_PORT || u.dst_port() != CLIENT_PORT {
        return None;
    }
    Some(u.payload())
}

/// Writes IPv4 + UDP (68 → 67) + `d` into `buf` (exactly their length).
fn emit_ipv4_udp(buf: &mut [u8], src: Ipv4Address, dst: Ipv4Address, d: &DhcpRepr) {
    let caps = ChecksumCapabilities::default();
    let dlen = d.buffer_len();
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: 8 + dlen,
        hop_limit: 64,
    };
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..20]), &caps);
    let udp = UdpRepr {
        src_port: CLIENT_PORT,
        dst_port: SERVER_PORT,
    };
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut buf[20..]),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        dlen,
        |p| {
            let _ = d.emit(&mut DhcpPacket::new_unchecked(p));
        },
        &caps,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_1s_to_64s_with_jitter() {
        let ms = |n, r| retransmit_delay(n, r) / 1_000_000;
        // Lowest and highest draw for each step.
        let lo: Vec<u64> = (0..9).map(|n| ms(n, 0)).collect();
        let hi: Vec<u64> = (0..9)
            .map(|n| (0..5000).map(|r| ms(n, r)).max().unwrap())
            .collect();
        assert_eq!(
            lo,
            [500, 1000, 3000, 7000, 15000, 31000, 63000, 63000, 63000]
        );
        assert_eq!(
            hi,
            [1500, 3000, 5000, 9000, 17000, 33000, 65000, 65000, 65000]
        );
        assert_eq!(ms(40, 7), ms(6, 7), "capped, no overflow");
    }

    #[test]
    fn delays_spread_over_the_whole_window() {
        // 0.5-1.5 s in ten 100 ms buckets: each gets about a tenth of the draws.
        let mut seen = [0u32; 10];
        for r in 0..10_000u32 {
            let d = retransmit_delay(0, r.wrapping_mul(2_654_435_761));
            seen[((d - 500_000_000) / 100_000_001) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (850..1150).contains(&n)), "{seen:?}");
    }
}
