//! The DHCP client ([`net::dhcp`]) in the stack against a simulated DHCP server on a
//! simulated bridge, in simulated time: a fast server, lost DISCOVERs (the backoff schedule),
//! slow OFFERs and ACKs (answers that arrive after the client retransmitted), NAK, renewal and
//! rebinding, and a hundred guests booting against a server that, like busybox udhcpd, blocks
//! for a 2 s ARP probe before offering each new address.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use net::dhcp::{retransmit_delay, REQUEST_SENDS};
use net::stack::DevPhy;
use net::{IpConfig, Net};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
    EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, Ipv4Address, Ipv4Packet,
    Ipv4Repr, UdpPacket, UdpRepr,
};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const SERVER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);

/// A guest's end of the bridge: frames to it, frames from it.
#[derive(Default)]
struct Port {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct PortDev(Rc<RefCell<Port>>);
struct Rx(Vec<u8>);
struct Tx(Rc<RefCell<Port>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}
impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.borrow_mut().tx.push(b);
        r
    }
}
impl Device for PortDev {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;
    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
        let f = self.0.borrow_mut().rx.pop_front()?;
        Some((Rx(f), Tx(self.0.clone())))
    }
    fn transmit(&mut self, _: Instant) -> Option<Tx> {
        Some(Tx(self.0.clone()))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// How the simulated server behaves.
#[derive(Clone)]
struct Policy {
    /// Latency before an OFFER / ACK goes out (the server is not blocked meanwhile).
    offer_delay: u64,
    ack_delay: u64,
    /// Time the server is blocked before offering an address to a MAC it has no lease for
    /// (busybox udhcpd ARP-probes a free address for 2 s, serially).
    probe: u64,
    /// Ignore everything before this time.
    deaf_until: u64,
    /// NAK this many REQUESTs first.
    naks: u32,
    /// Lease time in seconds.
    lease_secs: u32,
    /// Answer renewals and rebinds.
    renew: bool,
    /// Send OFFER/ACK to the offered address and the client's MAC (as dnsmasq does), not to
    /// the broadcast address (as udhcpd does).
    unicast: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            offer_delay: MS,
            ack_delay: MS,
            probe: 0,
            deaf_until: 0,
            naks: 0,
            lease_secs: 86400,
            renew: true,
            unicast: false,
        }
    }
}

/// A message a guest sent, as the server saw it.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: u64,
    mac: EthernetAddress,
    kind: DhcpMessageType,
    xid: u32,
    dst: Ipv4Address,
    ciaddr: Ipv4Address,
}

struct Server {
    policy: Policy,
    leases: HashMap<EthernetAddress, Ipv4Address>,
    next_host: u8,
    busy_until: u64,
    /// Replies and when they go out: (time, frame, to one MAC or to every port).
    out: Vec<(u64, Vec<u8>, Option<EthernetAddress>)>,
    log: Vec<Sent>,
}

impl Server {
    fn new(policy: Policy) -> Server {
        Server {
            policy,
            leases: HashMap::new(),
            next_host: 100,
            busy_until: 0,
            out: Vec::new(),
            log: Vec::new(),
        }
    }

    /// A frame from a guest at `now`.
    fn input(&mut self, now: u64, frame: &[u8]) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => self.arp(now, eth.payload()),
            EthernetProtocol::Ipv4 => self.ipv4(now, eth.src_addr(), eth.payload()),
            _ => {}
        }
    }

    fn arp(&mut self, now: u64, p: &[u8]) {
        let Ok(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = ArpPacket::new_checked(p).and_then(|a| ArpRepr::parse(&a))
        else {
            return;
        };
        if target_protocol_addr != SERVER_IP {
            return;
        }
        let r = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: SERVER_MAC,
            source_protocol_addr: SERVER_IP,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let mut f = vec![0; 14 + r.buffer_len()];
        let mut e = EthernetFrame::new_unchecked(&mut f[..]);
        EthernetRepr {
            src_addr: SERVER_MAC,
            dst_addr: source_hardware_addr,
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut e);
        r.emit(&mut ArpPacket::new_unchecked(e.payload_mut()));
        self.out.push((now, f, Some(source_hardware_addr)));
    }

    fn ipv4(&mut self, now: u64, src_mac: EthernetAddress, p: &[u8]) {
        let Ok(ip) = Ipv4Packet::new_checked(p) else {
            return;
        };
        if ip.next_header() != IpProtocol::Udp {
            return;
        }
        let Ok(u) = UdpPacket::new_checked(ip.payload()) else {
            return;
        };
        assert!(
            u.verify_checksum(
                &IpAddress::Ipv4(ip.src_addr()),
                &IpAddress::Ipv4(ip.dst_addr())
            ),
            "bad UDP checksum from the guest"
        );
        if u.dst_port() != 67 {
            return;
        }
        let pkt = DhcpPacket::new_checked(u.payload()).expect("DHCP packet");
        let d = DhcpRepr::parse(&pkt).expect("DHCP repr");
        assert_eq!(d.client_hardware_address, src_mac);
        assert_eq!(u.src_port(), 68);
        self.log.push(Sent {
            at: now,
            mac: d.client_hardware_address,
            kind: d.message_type,
            xid: d.transaction_id,
            dst: ip.dst_addr(),
            ciaddr: d.client_ip,
        });
        if now < self.policy.deaf_until {
            return;
        }
        let mac = d.client_hardware_address;
        let start = now.max(self.busy_until);
        match d.message_type {
            DhcpMessageType::Discover => {
                let mut at = start;
                if !self.leases.contains_key(&mac) {
                    at += self.policy.probe;
                    self.busy_until = at;
                    let ip = Ipv4Address::new(10, 0, 0, self.next_host);
                    self.next_host = self.next_host.checked_add(1).expect("pool");
                    self.leases.insert(mac, ip);
                }
                self.reply(at + self.policy.offer_delay, &d, DhcpMessageType::Offer);
            }
            DhcpMessageType::Request => {
                let renewing = d.client_ip != Ipv4Address::UNSPECIFIED;
                if renewing && !self.policy.renew {
                    return;
                }
                let want = d.requested_ip.unwrap_or(d.client_ip);
                if self.policy.naks > 0 && !renewing {
                    self.policy.naks -= 1;
                    self.leases.remove(&mac);
                    self.reply(start + self.policy.ack_delay, &d, DhcpMessageType::Nak);
                } else if self.leases.get(&mac) == Some(&want) {
                    self.reply(start + self.policy.ack_delay, &d, DhcpMessageType::Ack);
                }
            }
            _ => {}
        }
    }

    fn reply(&mut self, at: u64, req: &DhcpRepr, kind: DhcpMessageType) {
        let mac = req.client_hardware_address;
        let yiaddr = match kind {
            DhcpMessageType::Nak => Ipv4Address::UNSPECIFIED,
            _ => self.leases[&mac],
        };
        let d = DhcpRepr {
            message_type: kind,
            transaction_id: req.transaction_id,
            secs: 0,
            client_hardware_address: mac,
            client_ip: req.client_ip,
            your_ip: yiaddr,
            server_ip: Ipv4Address::UNSPECIFIED,
            router: Some(SERVER_IP),
            subnet_mask: Some(Ipv4Address::new(255, 255, 255, 0)),
            relay_agent_ip: Ipv4Address::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(SERVER_IP),
            parameter_request_list: None,
            max_size: None,
            lease_duration: Some(self.policy.lease_secs),
            renew_duration: None,
            rebind_duration: None,
            dns_servers: None,
            additional_options: &[],
        };
        let unicast = kind != DhcpMessageType::Nak
            && (self.policy.unicast || req.client_ip != Ipv4Address::UNSPECIFIED);
        let (dst_ip, dst_mac) = if unicast {
            (yiaddr, mac)
        } else {
            (Ipv4Address::BROADCAST, EthernetAddress::BROADCAST)
        };
        let dlen = d.buffer_len();
        let mut f = vec![0; 14 + 20 + 8 + dlen];
        let mut e = EthernetFrame::new_unchecked(&mut f[..]);
        EthernetRepr {
            src_addr: SERVER_MAC,
            dst_addr: dst_mac,
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut e);
        let caps = smoltcp::phy::ChecksumCapabilities::default();
        Ipv4Repr {
            src_addr: SERVER_IP,
            dst_addr: dst_ip,
            next_header: IpProtocol::Udp,
            payload_len: 8 + dlen,
            hop_limit: 64,
        }
        .emit(
            &mut Ipv4Packet::new_unchecked(&mut e.payload_mut()[..20]),
            &caps,
        );
        UdpRepr {
            src_port: 67,
            dst_port: 68,
        }
        .emit(
            &mut UdpPacket::new_unchecked(&mut e.payload_mut()[20..]),
            &IpAddress::Ipv4(SERVER_IP),
            &IpAddress::Ipv4(dst_ip),
            dlen,
            |b| d.emit(&mut DhcpPacket::new_unchecked(b)).unwrap(),
            &caps,
        );
        self.out.push((
            at,
            f,
            (dst_mac != EthernetAddress::BROADCAST).then_some(mac),
        ));
    }
}

struct Guest {
    net: Net,
    port: Rc<RefCell<Port>>,
    mac: EthernetAddress,
    next: u64,
    /// When it got its (current) lease.
    leased_at: Option<u64>,
}

/// Guests on one bridge with the server, in simulated nanoseconds.
struct Lab {
    now: u64,
    guests: Vec<Guest>,
    server: Server,
}

impl Lab {
    fn new(policy: Policy) -> Lab {
        Lab {
            now: 0,
            guests: Vec::new(),
            server: Server::new(policy),
        }
    }

    /// Boots a guest now (its MAC and clock seed its randomness, as on Xen).
    fn boot(&mut self, n: u16) -> usize {
        let mac = [0x00, 0x16, 0x3e, 0x5a, (n >> 8) as u8, n as u8];
        let port = Rc::new(RefCell::new(Port::default()));
        let net = Net::new(
            DevPhy(PortDev(port.clone())),
            mac,
            &IpConfig::default(),
            self.now,
        );
        self.guests.push(Guest {
            net,
            port,
            mac: EthernetAddress(mac),
            next: self.now,
            leased_at: None,
        });
        self.guests.len() - 1
    }

    /// Runs until `until` (simulated ns).
    fn run(&mut self, until: u64) {
        while self.now <= until {
            // Deliver the server's replies that are due.
            let now = self.now;
            let mut k = 0;
            while k < self.server.out.len() {
                if self.server.out[k].0 <= now {
                    let (_, f, to) = self.server.out.swap_remove(k);
                    for g in &mut self.guests {
                        if to.is_none_or(|m| m == g.mac) {
                            g.port.borrow_mut().rx.push_back(f.clone());
                            g.next = now;
                        }
                    }
                } else {
                    k += 1;
                }
            }
            for g in &mut self.guests {
                if g.next <= now {
                    let had = g.net.ipv4();
                    g.next = g.net.poll(now).unwrap_or(u64::MAX);
                    if g.net.ipv4().is_some() && had != g.net.ipv4() {
                        g.leased_at = Some(now);
                    }
                    if g.net.ipv4().is_none() {
                        g.leased_at = None;
                    }
                    let sent: Vec<_> = g.port.borrow_mut().tx.drain(..).collect();
                    for f in sent {
                        self.server.input(now, &f);
                    }
                }
            }
            let next_out = self.server.out.iter().map(|o| o.0).min();
            let next_guest = self.guests.iter().map(|g| g.next).min();
            let next = next_out
                .into_iter()
                .chain(next_guest)
                .min()
                .unwrap_or(u64::MAX)
                .max(now + 1);
            if next == u64::MAX {
                break;
            }
            self.now = next;
        }
        self.now = self.now.max(until);
    }

    fn sent_by(&self, g: usize, kind: DhcpMessageType) -> Vec<Sent> {
        let mac = self.guests[g].mac;
        self.server
            .log
            .iter()
            .filter(|s| s.mac == mac && s.kind == kind)
            .copied()
            .collect()
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / SEC as f64
}

#[test]
fn fast_server_gives_a_lease_in_one_exchange() {
    let mut lab = Lab::new(Policy::default());
    let g = lab.boot(1);
    lab.run(SEC);
    let net = &lab.guests[g].net;
    assert_eq!(net.ipv4().unwrap().to_string(), "10.0.0.100/24");
    let st = net.dhcp_stats().unwrap();
    assert_eq!(
        (st.discovers, st.offers, st.requests, st.acks),
        (1, 1, 1, 1)
    );
    assert!(lab.guests[g].leased_at.unwrap() < 10 * MS);
    // The REQUEST that answers an OFFER is broadcast (RFC 2131 §4.4.1).
    assert_eq!(
        lab.sent_by(g, DhcpMessageType::Request)[0].dst,
        Ipv4Address::BROADCAST
    );
}

#[test]
fn unicast_offers_reach_a_client_without_an_address() {
    let mut lab = Lab::new(Policy {
        unicast: true,
        ..Policy::default()
    });
    let g = lab.boot(1);
    lab.run(SEC);
    assert_eq!(
        lab.guests[g].net.ipv4().unwrap().to_string(),
        "10.0.0.100/24"
    );
}

#[test]
fn lost_discovers_back_off_exponentially_with_jitter() {
    // The server hears nothing for 200 s: the DISCOVERs show the schedule.
    let mut lab = Lab::new(Policy {
        deaf_until: 200 * SEC,
        ..Policy::default()
    });
    let a = lab.boot(1);
    let b = lab.boot(2);
    lab.run(199 * SEC);
    let mut gaps = Vec::new();
    for g in [a, b] {
        let d = lab.sent_by(g, DhcpMessageType::Discover);
        assert!(d.iter().all(|s| s.xid == d[0].xid), "one xid: {d:?}");
        let gap: Vec<u64> = d.windows(2).map(|w| w[1].at - w[0].at).collect();
        // 1, 2, 4, 8, 16, 32, 64, 64 s, each within ±min(half, 1 s).
        let base = [1, 2, 4, 8, 16, 32, 64, 64];
        assert!(gap.len() >= base.len(), "{:?}", gap);
        for (k, (&g, &b)) in gap.iter().zip(base.iter()).enumerate() {
            let j = (b * SEC / 2).min(SEC);
            assert!(
                g + j >= b * SEC && g <= b * SEC + j + MS,
                "retransmission {k}: {} s, want {b} s ±{} s",
                secs(g),
                secs(j)
            );
        }
        gaps.push(gap);
    }
    // Two guests booted together do not retransmit in step.
    assert_ne!(gaps[0][..6], gaps[1][..6]);
    // Once the server listens, both get a lease at their next DISCOVER.
    lab.run(270 * SEC);
    assert!(lab.guests[a].net.ipv4().is_some() && lab.guests[b].net.ipv4().is_some());
}

#[test]
fn an_offer_slower_than_the_retransmission_is_taken() {
    // Each OFFER comes 2.5 s after its DISCOVER: after the client's first retransmission.
    let mut lab = Lab::new(Policy {
        offer_delay: 2500 * MS,
        ..Policy::default()
    });
    let g = lab.boot(1);
    lab.run(10 * SEC);
    let d = lab.sent_by(g, DhcpMessageType::Discover);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(lab.guests[g].net.ipv4().is_some());
    // The lease came from the OFFER to the first DISCOVER (2.5 s), before the second's answer.
    let at = lab.guests[g].leased_at.unwrap();
    assert!(at >= 2500 * MS && at < d[1].at + 2500 * MS, "{}", secs(at));
}

#[test]
fn a_slow_ack_still_completes() {
    // ACKs take 40 s: smoltcp's socket (5 REQUESTs over 10 s) would have started over.
    let mut lab = Lab::new(Policy {
        ack_delay: 40 * SEC,
        ..Policy::default()
    });
    let g = lab.boot(1);
    lab.run(60 * SEC);
    let net = &lab.guests[g].net;
    assert!(net.ipv4().is_some());
    let st = net.dhcp_stats().unwrap();
    assert_eq!((st.discovers, st.restarts), (1, 0), "{st:?}");
    let r = lab.sent_by(g, DhcpMessageType::Request);
    assert!(r.len() >= 5 && r.iter().all(|s| s.xid == r[0].xid), "{r:?}");
    // The REQUESTs back off like the DISCOVERs.
    let gap: Vec<u64> = r.windows(2).map(|w| (w[1].at - w[0].at) / SEC).collect();
    assert!(gap.windows(2).all(|w| w[1] >= w[0]), "{gap:?}");
}

#[test]
fn an_ack_after_the_client_gave_up_requesting_is_still_taken() {
    // The ACK comes after every REQUEST retransmission (about 127 s): the client discovers
    // again, but takes the late ACK for the address it asked for.
    let mut lab = Lab::new(Policy {
        ack_delay: 135 * SEC,
        ..Policy::default()
    });
    let g = lab.boot(1);
    lab.run(300 * SEC);
    let net = &lab.guests[g].net;
    let st = net.dhcp_stats().unwrap();
    assert!(net.ipv4().is_some(), "{st:?}");
    assert!(st.restarts >= 1, "{st:?}");
    assert_eq!(
        lab.sent_by(g, DhcpMessageType::Request).len() as u32,
        st.requests
    );
    assert!(st.requests >= REQUEST_SENDS);
    let at = lab.guests[g].leased_at.unwrap();
    assert!((135 * SEC..140 * SEC).contains(&at), "{}", secs(at));
}

#[test]
fn nak_starts_over_with_a_new_xid() {
    let mut lab = Lab::new(Policy {
        naks: 1,
        ..Policy::default()
    });
    let g = lab.boot(1);
    lab.run(5 * SEC);
    let d = lab.sent_by(g, DhcpMessageType::Discover);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_ne!(d[0].xid, d[1].xid);
    let net = &lab.guests[g].net;
    assert!(net.ipv4().is_some());
    assert_eq!(net.dhcp_stats().unwrap().naks, 1);
}

#[test]
fn renews_at_t1_rebinds_at_t2_and_drops_the_lease_at_expiry() {
    // Lease 1000 s; the server does not answer renewals.
    let mut lab = Lab::new(Policy {
        lease_secs: 1000,
        renew: false,
        ..Policy::default()
    });
    let g = lab.boot(1);
    lab.run(999 * SEC);
    assert!(lab.guests[g].net.ipv4().is_some());
    let r = lab.sent_by(g, DhcpMessageType::Request);
    let renew: Vec<_> = r
        .iter()
        .filter(|s| s.ciaddr == Ipv4Address::new(10, 0, 0, 100))
        .collect();
    // Unicast to the server from T1 (500 s), broadcast from T2 (875 s), at least 60 s apart
    // except the last before each deadline.
    assert!(
        renew[0].at >= 500 * SEC && renew[0].at < 501 * SEC,
        "{renew:?}"
    );
    assert_eq!(renew[0].dst, SERVER_IP);
    let rebind: Vec<_> = renew
        .iter()
        .filter(|s| s.dst == Ipv4Address::BROADCAST)
        .collect();
    assert!(!rebind.is_empty() && rebind[0].at >= 875 * SEC, "{renew:?}");
    assert!(renew
        .iter()
        .filter(|s| s.dst == SERVER_IP)
        .all(|s| s.at < 875 * SEC));
    // At expiry the address goes and the client starts over at once (the server, which
    // still has its lease, gives it back).
    lab.run(1005 * SEC);
    let d = lab.sent_by(g, DhcpMessageType::Discover);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(
        d[1].at >= 1000 * SEC && d[1].at < 1000 * SEC + 10 * MS,
        "{d:?}"
    );
    assert_ne!(d[0].xid, d[1].xid);
    let at = lab.guests[g].leased_at.unwrap();
    assert!(
        at > d[1].at,
        "not deconfigured at expiry: lease from {} s",
        secs(at)
    );
    assert!(lab.guests[g].net.ipv4().is_some());
}

#[test]
fn renewal_keeps_the_lease() {
    let mut lab = Lab::new(Policy {
        lease_secs: 600,
        ..Policy::default()
    });
    let g = lab.boot(1);
    lab.run(3000 * SEC);
    let net = &lab.guests[g].net;
    assert!(net.ipv4().is_some());
    let st = net.dhcp_stats().unwrap();
    // One acquisition, then one renewal (unicast, answered) every 300 s.
    assert_eq!(st.discovers, 1);
    assert!((10..=11).contains(&st.acks), "{st:?}");
    // Never deconfigured in between.
    assert!(lab.guests[g].leased_at.unwrap() < SEC);
}

#[test]
fn a_hundred_guests_booting_together_against_a_serial_arp_probing_server() {
    // Like busybox udhcpd: each new client's OFFER waits for a 2 s ARP probe during which the
    // server answers nobody. 100 guests boot 0.5 s apart; all must get a lease.
    let mut lab = Lab::new(Policy {
        probe: 2 * SEC,
        ..Policy::default()
    });
    for n in 0..100 {
        lab.boot(n);
        let t = lab.now + SEC / 2;
        lab.run(t);
    }
    lab.run(400 * SEC);
    let without: Vec<usize> = (0..100)
        .filter(|&g| lab.guests[g].net.ipv4().is_none())
        .collect();
    assert!(without.is_empty(), "no lease: {without:?}");
    let last = lab.guests.iter().filter_map(|g| g.leased_at).max().unwrap();
    let msgs = lab.server.log.len();
    // The probes alone take 200 s; retransmissions stay few (no storm).
    assert!(last < 320 * SEC, "last lease at {} s", secs(last));
    assert!(msgs < 100 * 20, "{msgs} messages");
    println!(
        "100 guests: last lease at {:.0} s, {msgs} client messages",
        secs(last)
    );
}

#[test]
fn retransmit_delay_is_the_documented_schedule() {
    assert_eq!(retransmit_delay(0, 500), SEC);
    assert_eq!(retransmit_delay(3, 1000), 8 * SEC);
    assert_eq!(retransmit_delay(9, 1000), 64 * SEC);
}
