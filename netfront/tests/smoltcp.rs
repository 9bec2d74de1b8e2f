//! End to end: a smoltcp interface over Netfront (the guest) and one over the simulated netback
//! (the peer host), talking ARP, ICMP and TCP through the real ring protocol.

use netfront::sim::data;

use netfront::sim::{Fault, RxCsum, SimNetback};
use netfront::{Config, Netfront};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address,
};
use xen::hal::SimHal;

const GUEST_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 2];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const HOST_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);

struct Net {
    nf: Netfront<SimHal>,
    nb: SimNetback,
    guest: Interface,
    host: Interface,
    gs: SocketSet<'static>,
    hs: SocketSet<'static>,
    now: i64,
}

fn iface(mac: [u8; 6], ip: Ipv4Address, dev: &mut impl smoltcp::phy::Device) -> Interface {
    let mut c = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    c.random_seed = u64::from(mac[5]) + 1;
    let mut i = Interface::new(c, dev, Instant::from_millis(0));
    i.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap());
    i
}

impl Net {
    fn new(config: Config) -> Net {
        let hal = SimHal::new();
        let mut nf = Netfront::new(hal.clone(), 0, GUEST_MAC, config).unwrap();
        nf.set_link_up(true);
        let mut nb = SimNetback::attach(&hal, 0, nf.tx_ring_ref(), nf.rx_ring_ref()).unwrap();
        let guest = iface(GUEST_MAC, GUEST_IP, &mut nf);
        let host = iface(HOST_MAC, HOST_IP, &mut nb);
        Net {
            nf,
            nb,
            guest,
            host,
            gs: SocketSet::new(vec![]),
            hs: SocketSet::new(vec![]),
            now: 0,
        }
    }

    fn step(&mut self) {
        self.now += 1;
        let t = Instant::from_millis(self.now);
        self.guest.poll(t, &mut self.nf, &mut self.gs);
        self.nb.step();
        self.host.poll(t, &mut self.nb, &mut self.hs);
        self.nb.step();
    }
}

fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 64 * 1024]),
        tcp::SocketBuffer::new(vec![0; 64 * 1024]),
    )
}

/// Moves `a` from guest to host and `b` from host to guest over one TCP connection; returns
/// what each side received.
fn transfer(net: &mut Net, a: &[u8], b: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let g = net.gs.add(tcp_socket());
    let h = net.hs.add(tcp_socket());
    net.hs.get_mut::<tcp::Socket>(h).listen(5000).unwrap();
    net.gs
        .get_mut::<tcp::Socket>(g)
        .connect(net.guest.context(), (IpAddress::Ipv4(HOST_IP), 5000), 49152)
        .unwrap();
    let (mut sent_a, mut sent_b) = (0, 0);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..200_000 {
        net.step();
        for (set, handle, out, sent, got) in [
            (&mut net.gs, g, a, &mut sent_a, &mut got_b),
            (&mut net.hs, h, b, &mut sent_b, &mut got_a),
        ] {
            let s = set.get_mut::<tcp::Socket>(handle);
            if s.can_send() && *sent < out.len() {
                *sent += s.send_slice(&out[*sent..]).unwrap();
            }
            while s.can_recv() {
                let n = s.recv_slice(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
        }
        if got_a.len() == a.len() && got_b.len() == b.len() {
            break;
        }
    }
    (got_a, got_b)
}

#[test]
fn tcp_transfer_of_megabytes_both_ways_is_byte_exact() {
    let mut net = Net::new(Config {
        tso: false,
        ..Config::default()
    });
    let a = data(4 << 20, 1);
    let b = data(2 << 20, 2);
    let (got_a, got_b) = transfer(&mut net, &a, &b);
    assert_eq!(got_a.len(), a.len());
    assert!(got_a == a, "guest -> host bytes differ");
    assert_eq!(got_b.len(), b.len());
    assert!(got_b == b, "host -> guest bytes differ");
    let st = net.nf.stats();
    assert_eq!(st.malformed, 0);
    assert!(st.tx_packets > 2000 && st.rx_packets > 1000, "{st:?}");
    assert_eq!((st.tx_gso, net.nb.tx_gso.len()), (0, 0));
    assert_eq!(net.nb.violations, []);
    // Full-size frames went out in pieces where they straddled a page, and none crossed one.
    assert!(net
        .nb
        .tx_slots
        .iter()
        .any(|s| s.flags & netfront::wire::NETTXF_MORE_DATA != 0));
}

#[test]
fn tcp_with_transmit_gso_sends_segments_over_the_mtu_for_netback_to_cut() {
    let mut net = Net::new(Config::default());
    assert_eq!(net.nf.tso_max(), 32 * 1024);
    let a = data(4 << 20, 5);
    let b = data(1 << 20, 6);
    let (got_a, got_b) = transfer(&mut net, &a, &b);
    assert!(got_a == a, "guest -> host bytes differ");
    assert!(got_b == b, "host -> guest bytes differ");
    let st = net.nf.stats();
    assert_eq!(st.malformed, 0);
    // Every GSO packet was TCP/IPv4 with a correct partial checksum, a valid GSO extra, and
    // within the size smoltcp was told; the NULL answers to the extras completed nothing.
    assert_eq!(net.nb.violations, []);
    assert!(st.tx_gso > 50, "{st:?}");
    assert_eq!(net.nb.tx_gso.len() as u64, st.tx_gso);
    assert!(net
        .nb
        .tx_gso
        .iter()
        .all(|&(len, mss)| len > netfront::MTU && len <= 32 * 1024 && mss == 1460));
    assert!(st.tx_packets < 1000, "fewer, bigger packets: {st:?}");
    net.step();
    net.nf.reclaim_tx().unwrap();
    assert_eq!(net.nf.tx_in_flight(), 0, "every id came back");
}

#[test]
fn tcp_over_split_rx_slots_and_a_small_tx_buffer() {
    let mut net = Net::new(Config {
        rx_buffers: 32,
        tx_pages: 2,
        ..Config::default()
    });
    net.nb.rx_slot_size = 700;
    net.nb.rx_offset = 3000;
    let a = data(1 << 20, 3);
    let b = data(1 << 20, 4);
    let (got_a, got_b) = transfer(&mut net, &a, &b);
    assert!(got_a == a && got_b == b);
    assert_eq!(net.nf.stats().malformed, 0);
}

#[test]
fn tcp_survives_a_misbehaving_backend() {
    let mut net = Net::new(Config::default());
    let a = data(512 << 10, 5);
    let b = data(512 << 10, 6);
    // Sprinkle faults: bad ids, bad statuses, garbage indices, bad offsets. Each costs a packet
    // (TCP retransmits) and is counted; the transfer completes.
    for f in [
        Fault::RxId(99),
        Fault::RxStatus(-1),
        Fault::RxOffset(4090),
        Fault::RxRspProd(0x7777_7777),
        Fault::TxStatus(-2),
        Fault::TxRspProd(12345),
        Fault::TxId(250),
    ] {
        net.nb.inject(f);
    }
    let (got_a, got_b) = transfer(&mut net, &a, &b);
    assert!(got_a == a && got_b == b);
    assert!(net.nf.stats().malformed >= 5, "{:?}", net.nf.stats());
}

#[test]
fn tcp_with_blank_or_validated_checksums_from_the_host() {
    for mode in [RxCsum::Blank, RxCsum::Validated] {
        let mut net = Net::new(Config::default());
        // Every TCP segment to the guest: blank (a partial sum, flagged csum_blank) or flagged
        // data_validated. Trusted by the driver, not verified again by smoltcp.
        net.nb.rx_csum = mode;
        let a = data(1 << 20, 7);
        let b = data(1 << 20, 8);
        let (got_a, got_b) = transfer(&mut net, &a, &b);
        assert!(got_a == a && got_b == b, "{mode:?}");
        let st = net.nf.stats();
        assert_eq!((st.rx_dropped, st.rx_bad_checksum, st.malformed), (0, 0, 0));
        assert!(st.rx_packets > 700, "{st:?}");
        assert_eq!(net.nb.violations, []);
    }
}

/// Opens a TCP connection guest -> host; whether it is established within `steps`.
fn connects(net: &mut Net, port: u16, steps: usize) -> bool {
    let g = net.gs.add(tcp_socket());
    let h = net.hs.add(tcp_socket());
    net.hs.get_mut::<tcp::Socket>(h).listen(port).unwrap();
    net.gs
        .get_mut::<tcp::Socket>(g)
        .connect(
            net.guest.context(),
            (IpAddress::Ipv4(HOST_IP), port),
            port + 1,
        )
        .unwrap();
    for _ in 0..steps {
        net.step();
        if net.gs.get::<tcp::Socket>(g).state() == tcp::State::Established {
            return true;
        }
        // Let retransmission timers fire within few steps.
        net.now += 50;
    }
    false
}

#[test]
fn unflagged_bad_checksums_are_dropped_and_tcp_recovers_once_they_stop() {
    let mut net = Net::new(Config::default());
    net.nb.rx_csum = RxCsum::Corrupt;
    assert!(!connects(&mut net, 6000, 200), "no SYN-ACK gets through");
    let st = net.nf.stats();
    assert!(st.rx_bad_checksum >= 2, "{st:?}");
    assert_eq!(st.rx_dropped, st.rx_bad_checksum);
    assert_eq!(st.malformed, 0);
    // Good checksums again (still unflagged, verified by the driver): a new connection opens.
    net.nb.rx_csum = RxCsum::AsIs;
    assert!(connects(&mut net, 6002, 200));
}

#[test]
fn with_offload_refused_blank_checksums_are_dropped_as_before() {
    let mut net = Net::new(Config {
        csum_offload: false,
        ..Config::default()
    });
    net.nb.rx_csum = RxCsum::Blank;
    assert!(!connects(&mut net, 6000, 200));
    let st = net.nf.stats();
    assert!(st.rx_dropped >= 2 && st.rx_bad_checksum == 0, "{st:?}");
    // Validated but complete checksums pass (smoltcp verifies them).
    net.nb.rx_csum = RxCsum::Validated;
    assert!(connects(&mut net, 6002, 200));
}

fn ping(net: &mut Net, from_host: bool, payload: &[u8]) -> bool {
    let (set, target) = if from_host {
        (&mut net.hs, GUEST_IP)
    } else {
        (&mut net.gs, HOST_IP)
    };
    let sock = icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY], vec![0; 2048]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY], vec![0; 2048]),
    );
    let handle: SocketHandle = set.add(sock);
    set.get_mut::<icmp::Socket>(handle)
        .bind(icmp::Endpoint::Ident(0x1234))
        .unwrap();
    let mut sent = false;
    for _ in 0..3000 {
        let set = if from_host { &mut net.hs } else { &mut net.gs };
        let s = set.get_mut::<icmp::Socket>(handle);
        if !sent && s.can_send() {
            let repr = Icmpv4Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1,
                data: payload,
            };
            let buf = s.send(repr.buffer_len(), IpAddress::Ipv4(target)).unwrap();
            let mut pkt = Icmpv4Packet::new_unchecked(buf);
            repr.emit(&mut pkt, &smoltcp::phy::ChecksumCapabilities::default());
            sent = true;
        }
        if s.can_recv() {
            let (bytes, _) = s.recv().unwrap();
            let pkt = Icmpv4Packet::new_checked(bytes).unwrap();
            return matches!(
                Icmpv4Repr::parse(&pkt, &smoltcp::phy::ChecksumCapabilities::default()),
                Ok(Icmpv4Repr::EchoReply { data, .. }) if data == payload
            );
        }
        net.step();
    }
    false
}

#[test]
fn arp_and_ping_both_ways() {
    let mut net = Net::new(Config::default());
    assert!(ping(&mut net, true, b"hello guest"), "host pings guest");
    assert!(ping(&mut net, false, &[0xa5; 1000]), "guest pings host");
}

/// An echo service in the guest (16 KiB buffers, as apps/echo's port 7) with transmit GSO: what
/// the host sends comes back whole and in order, the guest's segments going out as GSO.
#[test]
fn tcp_echo_through_small_buffers_with_transmit_gso() {
    let mut net = Net::new(Config::default());
    let small = || {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
        )
    };
    let g = net.gs.add(small());
    let h = net.hs.add(tcp_socket());
    net.gs.get_mut::<tcp::Socket>(g).listen(7).unwrap();
    net.hs
        .get_mut::<tcp::Socket>(h)
        .connect(net.host.context(), (IpAddress::Ipv4(GUEST_IP), 7), 49153)
        .unwrap();
    let a = data(8 << 20, 7);
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..400_000 {
        net.step();
        let s = net.gs.get_mut::<tcp::Socket>(g);
        // Echo: read only what can be written back.
        let room = s.send_capacity() - s.send_queue();
        if s.can_recv() && room > 0 {
            let n = s.recv_slice(&mut buf[..room.min(16 * 1024)]).unwrap();
            assert_eq!(s.send_slice(&buf[..n]).unwrap(), n);
        }
        let s = net.hs.get_mut::<tcp::Socket>(h);
        if s.can_send() && sent < a.len() {
            sent += s.send_slice(&a[sent..]).unwrap();
        }
        while s.can_recv() {
            let n = s.recv_slice(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() == a.len() {
            break;
        }
    }
    assert_eq!(got.len(), a.len(), "{:?}", net.nf.stats());
    assert!(got == a, "echoed bytes differ");
    assert_eq!(net.nb.violations, []);
    assert!(net.nf.stats().tx_gso > 100, "{:?}", net.nf.stats());
}
