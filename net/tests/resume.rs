//! The stack across a restore or live migration, on the host: the guest's [`Net`] over a vif
//! connected through the simulated xenstored, the peer's over the simulated netback. Mid-way
//! through a TCP echo the domain moves (`SimState::new_domain`), the "toolstack" recreates the
//! vif's nodes with a backend in another domain, and a fresh netback attaches to what the
//! driver publishes. The transfer completes byte-identical with no app code involved; the first
//! frames out on the new ring are the announcements (a gratuitous ARP, an unsolicited NA per
//! IPv6 address), then the frames the old backend never took, sent again.

mod common;
use common::{data, stat, Clock, GUEST_IP, GUEST_MAC, PEER_IP, PEER_MAC};

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use net::stack::Link;
use net::{IpConfig, ListenConfig, Net, NetError};
use netfront::sim::{xenstore_backend, BackendConfig, SimNetback};
use netfront::{Config, Netfront, Resume};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv6Address, Ipv6Cidr, Ipv6Packet,
    NdiscNeighborFlags, NdiscRepr,
};
use xen::exec::{Executor, Source};
use xen::hal::SimHal;
use xen::xenbus::Never;
use xen::xenstore::sim::Sim;
use xen::xenstore::Client;

type Slot = Rc<RefCell<Option<SimNetback>>>;

/// The guest's vif with its xenstore, and the toolstack's part of a restore: when `restore`
/// holds a backend domain, the next poll moves the domain there (with `next_config`), and the
/// driver reconnects by itself (as on Xen); the new netback goes to `next` for the peer.
struct GuestVif {
    nf: Netfront<SimHal>,
    xs: Client<Sim>,
    hal: SimHal,
    fe: String,
    be: String,
    restore: Rc<Cell<Option<u16>>>,
    next_config: BackendConfig,
    next: Slot,
    /// What [`Link::entropy`] gives (the wall clock of the restore, on Xen).
    entropy: u64,
    /// Calls of [`Link::after_move`].
    after_moves: Rc<Cell<u32>>,
}

impl GuestVif {
    fn move_domain(&mut self, domid: u16) {
        self.hal.state.lock().new_domain();
        let store = self.xs.transport_mut().store();
        store.rm(&self.be);
        store.rm(&self.fe);
        let (fe, be) = store.add_device("vif", 0, domid);
        self.xs.transport_mut().add_peer(xenstore_backend(
            fe.clone(),
            be.clone(),
            self.next_config.clone(),
            Box::new(|| {}),
        ));
        self.fe = fe;
        self.be = be;
    }
}

impl Link for GuestVif {
    type Device = Netfront<SimHal>;
    fn device(&mut self) -> &mut Netfront<SimHal> {
        &mut self.nf
    }
    fn before_poll(&mut self, _now: Instant) {
        if let Some(domid) = self.restore.take() {
            self.move_domain(domid);
        }
        if let Resume::Reconnected(r) = self.nf.resume(&mut self.xs, &mut Never) {
            let nb = SimNetback::from_store(
                self.xs.transport_mut().store(),
                &self.fe,
                &self.hal,
                r.backend_id,
            )
            .expect("the new backend maps what was published");
            *self.next.borrow_mut() = Some(nb);
        }
    }
    fn stats(&self) -> Option<net::Stats> {
        Some(self.nf.stats())
    }
    fn reconnected(&mut self) -> bool {
        self.nf.take_reconnected()
    }
    fn send_raw(&mut self, frame: &[u8], _now: Instant) -> bool {
        self.nf.send(frame).is_ok()
    }
    fn mac(&self) -> Option<[u8; 6]> {
        Some(self.nf.mac())
    }
    fn entropy(&mut self) -> u64 {
        self.entropy
    }
    fn after_move(&mut self) {
        self.after_moves.set(self.after_moves.get() + 1);
    }
}

/// The peer's device: the netback of the moment (replaced by the new one after a move). While
/// `hold` is set the old backend takes nothing off the ring (what the guest sends then is
/// never acknowledged by it); the first frames the new backend takes are kept in `first`.
struct PeerPhy {
    nb: SimNetback,
    next: Slot,
    hold: Rc<Cell<bool>>,
    capture: bool,
    first: Rc<RefCell<Vec<Vec<u8>>>>,
    /// The sequence numbers of the SYN-ACKs the guest sent.
    syn_acks: Rc<RefCell<Vec<u32>>>,
}

impl PeerPhy {
    fn step(&mut self) {
        if let Some(nb) = self.next.borrow_mut().take() {
            self.nb = nb;
            self.hold.set(false);
            self.capture = true;
        }
        if self.hold.get() {
            return;
        }
        self.nb.step();
        for f in &self.nb.from_guest {
            if let Some(seq) = syn_ack_seq(f) {
                if !self.syn_acks.borrow().contains(&seq) {
                    self.syn_acks.borrow_mut().push(seq);
                }
            }
        }
        if self.capture && !self.nb.from_guest.is_empty() {
            *self.first.borrow_mut() = self.nb.from_guest.iter().cloned().collect();
            self.capture = false;
        }
    }
}

impl Link for PeerPhy {
    type Device = SimNetback;
    fn device(&mut self) -> &mut SimNetback {
        &mut self.nb
    }
    fn before_poll(&mut self, _now: Instant) {
        self.step();
    }
    fn after_poll(&mut self, _now: Instant) {
        self.step();
    }
}

/// The sequence number of `f` if it is a TCP SYN-ACK over IPv4.
fn syn_ack_seq(f: &[u8]) -> Option<u32> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let tcp = smoltcp::wire::TcpPacket::new_checked(ip.payload()).ok()?;
    (tcp.syn() && tcp.ack()).then(|| tcp.seq_number().0 as u32)
}

struct World {
    guest: Net,
    peer: Net,
    hal: SimHal,
    restore: Rc<Cell<Option<u16>>>,
    hold: Rc<Cell<bool>>,
    first: Rc<RefCell<Vec<Vec<u8>>>>,
    syn_acks: Rc<RefCell<Vec<u32>>>,
    after_moves: Rc<Cell<u32>>,
}

fn world(guest_config: &IpConfig, backend: BackendConfig, next_config: BackendConfig) -> World {
    world_with_entropy(guest_config, backend, next_config, 0)
}

fn world_with_entropy(
    guest_config: &IpConfig,
    backend: BackendConfig,
    next_config: BackendConfig,
    entropy: u64,
) -> World {
    let hal = SimHal::new();
    let mut xs = Sim::client(1);
    let (fe, be) = xs.transport_mut().store().add_device("vif", 0, 0);
    let mac = netfront::format_mac(GUEST_MAC);
    let backend = BackendConfig { mac, ..backend };
    xs.transport_mut().add_peer(xenstore_backend(
        fe.clone(),
        be.clone(),
        backend,
        Box::new(|| {}),
    ));
    let nf = Netfront::connect(
        &mut xs,
        hal.clone(),
        "device/vif/0",
        Config::default(),
        &mut Never,
    )
    .unwrap();
    let nb = SimNetback::from_store(xs.transport_mut().store(), &fe, &hal, 0).unwrap();
    let restore = Rc::new(Cell::new(None));
    let next: Slot = Rc::new(RefCell::new(None));
    let vif = GuestVif {
        nf,
        xs,
        hal: hal.clone(),
        fe,
        be,
        restore: restore.clone(),
        next_config: BackendConfig {
            mac: netfront::format_mac(GUEST_MAC),
            ..next_config
        },
        next: next.clone(),
        entropy,
        after_moves: Rc::new(Cell::new(0)),
    };
    let after_moves = vif.after_moves.clone();
    let guest = Net::new(vif, GUEST_MAC, guest_config, 1);
    let hold = Rc::new(Cell::new(false));
    let first = Rc::new(RefCell::new(Vec::new()));
    let syn_acks = Rc::new(RefCell::new(Vec::new()));
    let peer = Net::new(
        PeerPhy {
            nb,
            next,
            hold: hold.clone(),
            capture: false,
            first: first.clone(),
            syn_acks: syn_acks.clone(),
        },
        PEER_MAC,
        &stat(PEER_IP),
        2,
    );
    World {
        guest,
        peer,
        hal,
        restore,
        hold,
        first,
        syn_acks,
        after_moves,
    }
}

async fn echo_server(net: Net, port: u16) {
    let mut l = net.tcp_listen(port, ListenConfig::default()).unwrap();
    let mut s = l.accept().await.unwrap();
    let mut buf = vec![0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Sends `msg` to the guest's echo and reads it back; `got` counts the bytes read so far.
async fn echo_client(peer: Net, msg: Vec<u8>, got_n: Rc<Cell<usize>>) -> Result<Vec<u8>, NetError> {
    let mut c = peer
        .tcp_connect(IpAddress::Ipv4(GUEST_IP), 7, 64 * 1024, 64 * 1024)
        .await?;
    let mut got = Vec::with_capacity(msg.len());
    let mut sent = 0;
    let mut buf = vec![0u8; 16384];
    while got.len() < msg.len() {
        if sent < msg.len() {
            sent += c.write(&msg[sent..(sent + 16384).min(msg.len())]).await?;
        }
        while c.recv_queue() > 0 || (sent == msg.len() && got.len() < msg.len()) {
            let n = c.read(&mut buf).await?;
            if n == 0 {
                return Ok(got);
            }
            got.extend_from_slice(&buf[..n]);
            got_n.set(got.len());
        }
    }
    Ok(got)
}

/// Runs a 1 MiB echo through the guest, moving the domain to backend domain 2 once 256 KiB
/// came back: the old backend stops taking frames, 2 ms of simulated time later the domain
/// moves. Returns the echoed bytes and the guest's counters at the move.
fn echo_across_a_move(w: &World) -> (Vec<u8>, Vec<u8>, net::Stats) {
    let msg = data(1 << 20, 11);
    let got_n = Rc::new(Cell::new(0));
    let at_move = Rc::new(Cell::new(None));
    let clock = Rc::new(Cell::new(0));
    let mut ex = Executor::new();
    let sp = ex.spawner();
    let (guest, peer) = (w.guest.clone(), w.peer.clone());
    sp.spawn(echo_server(guest.clone(), 7));
    {
        let (got_n, hold, restore, at_move, guest) = (
            got_n.clone(),
            w.hold.clone(),
            w.restore.clone(),
            at_move.clone(),
            guest.clone(),
        );
        sp.spawn(async move {
            while got_n.get() < 256 * 1024 {
                guest.sleep(100_000).await;
            }
            hold.set(true);
            guest.sleep(2_000_000).await;
            at_move.set(guest.device_stats());
            restore.set(Some(2));
        });
    }
    let sources: [&dyn Source; 2] = [&w.guest, &w.peer];
    let got = ex
        .block_on(
            &mut Clock(clock),
            &sources,
            echo_client(peer, msg.clone(), got_n),
        )
        .unwrap();
    (msg, got, at_move.get().expect("the domain moved mid-way"))
}

/// Checks that `f` is our ARP Announcement of `ip`.
fn is_arp_announcement(f: &[u8], ip: smoltcp::wire::Ipv4Address) -> bool {
    let eth = EthernetFrame::new_checked(f).unwrap();
    if eth.ethertype() != EthernetProtocol::Arp || eth.dst_addr() != EthernetAddress::BROADCAST {
        return false;
    }
    ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).ok()
        == Some(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(GUEST_MAC),
            source_protocol_addr: ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: ip,
        })
}

/// The target of `f` if it is an unsolicited NA (override, not solicited) with our MAC, from
/// that address to all nodes, hop limit 255, checksum valid.
fn na_target(f: &[u8]) -> Option<Ipv6Address> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    let p = Ipv6Packet::new_checked(eth.payload()).ok()?;
    if p.next_header() != IpProtocol::Icmpv6 || p.hop_limit() != 255 {
        return None;
    }
    let icmp = Icmpv6Packet::new_checked(p.payload()).ok()?;
    let caps = smoltcp::phy::ChecksumCapabilities::default();
    match Icmpv6Repr::parse(&p.src_addr(), &p.dst_addr(), &icmp, &caps).ok()? {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr,
            lladdr: Some(ll),
        }) if flags == NdiscNeighborFlags::OVERRIDE
            && ll.as_bytes() == GUEST_MAC
            && p.src_addr() == target_addr
            && p.dst_addr().to_string() == "ff02::1" =>
        {
            Some(target_addr)
        }
        _ => None,
    }
}

fn is_tcp_from_guest(f: &[u8]) -> bool {
    let eth = EthernetFrame::new_checked(f).unwrap();
    eth.ethertype() == EthernetProtocol::Ipv4
        && Ipv4Packet::new_checked(eth.payload())
            .is_ok_and(|p| p.next_header() == IpProtocol::Tcp && p.src_addr() == GUEST_IP)
}

#[test]
fn a_tcp_echo_survives_a_move_to_a_new_backend_announced_first_then_resent() {
    let w = world(
        &stat(GUEST_IP),
        BackendConfig::default(),
        BackendConfig::default(),
    );
    let (pages, grants) = {
        let st = w.hal.state.lock();
        (st.live_pages(), st.live_grants())
    };
    let (msg, got, at_move) = echo_across_a_move(&w);
    assert_eq!(got.len(), msg.len());
    assert!(got == msg, "echoed bytes differ");

    let s = w.guest.device_stats().unwrap();
    assert_eq!(s.reconnects, 1);
    assert!(s.tx_resent > 0, "frames were in flight at the move: {s:?}");
    // First out: the ARP announcement, then (IPv6 link-local only) one NA; then the resent
    // TCP segments of the echo.
    let first = w.first.borrow().clone();
    assert!(
        is_arp_announcement(&first[0], GUEST_IP),
        "{:02x?}",
        &first[0]
    );
    assert_eq!(
        na_target(&first[1]),
        Some(net::stack::link_local(GUEST_MAC))
    );
    let resent = &first[2..2 + s.tx_resent as usize];
    assert!(resent.iter().all(|f| is_tcp_from_guest(f)));
    // The sockets stayed: one connection, no reset.
    assert!(at_move.tx_packets > 0);
    let st = w.hal.state.lock();
    assert_eq!((st.live_pages(), st.live_grants()), (pages, grants));
}

/// A guest restored from a saved image: the domain moves before any connection, then the peer
/// connects. Returns the sequence number of the guest's SYN-ACK and the calls of `after_move`.
fn first_syn_ack_after_a_move(entropy: u64) -> (u32, u32) {
    let w = world_with_entropy(
        &stat(GUEST_IP),
        BackendConfig::default(),
        BackendConfig::default(),
        entropy,
    );
    let mut ex = Executor::new();
    let sp = ex.spawner();
    sp.spawn(echo_server(w.guest.clone(), 7));
    let (guest, peer, restore) = (w.guest.clone(), w.peer.clone(), w.restore.clone());
    let sources: [&dyn Source; 2] = [&w.guest, &w.peer];
    ex.block_on(&mut Clock(Rc::new(Cell::new(0))), &sources, async move {
        guest.sleep(1_000_000).await;
        restore.set(Some(2));
        while guest.device_stats().unwrap().reconnects == 0 {
            guest.sleep(100_000).await;
        }
        let got = echo_client(peer, b"hello".to_vec(), Rc::new(Cell::new(0))).await;
        assert_eq!(got.unwrap(), b"hello");
    });
    let seqs = w.syn_acks.borrow().clone();
    assert_eq!(seqs.len(), 1, "one connection, one SYN-ACK: {seqs:?}");
    (seqs[0], w.after_moves.get())
}

#[test]
fn copies_restored_from_one_image_choose_their_own_tcp_sequence_numbers() {
    // Everything the same (the saved state, the simulated clock) but what the platform's
    // entropy gives at the move: the same entropy, the same ISN (the test is deterministic);
    // other entropy, another ISN. Without the reseed both copies would answer alike.
    let (a, moves) = first_syn_ack_after_a_move(0x1111_2222_3333_4444);
    let (a2, _) = first_syn_ack_after_a_move(0x1111_2222_3333_4444);
    let (b, _) = first_syn_ack_after_a_move(0x5555_6666_7777_8888);
    assert_eq!(a, a2);
    assert_ne!(
        a, b,
        "two restores with different entropy chose the same ISN"
    );
    assert_eq!(moves, 1, "after_move runs once per move");
}

#[test]
fn a_move_to_a_backend_without_gso_or_sg_with_ipv6_keeps_the_echo_going() {
    let v6 = Ipv6Cidr::new("fd00::2".parse().unwrap(), 64);
    let config = IpConfig {
        v6: Some(v6),
        ..stat(GUEST_IP)
    };
    let w = world(
        &config,
        BackendConfig {
            gso: true,
            ..BackendConfig::default()
        },
        BackendConfig {
            gso: false,
            sg: false,
            ..BackendConfig::default()
        },
    );
    let (msg, got, at_move) = echo_across_a_move(&w);
    assert!(got == msg, "echoed bytes differ");
    let s = w.guest.device_stats().unwrap();
    assert!(at_move.tx_gso > 0, "GSO was in use before the move");
    // After the move smoltcp hands over nothing larger than the MTU (the interface follows
    // the device's capabilities); the GSO segments caught in flight were dropped, not sent.
    assert_eq!(s.tx_gso, at_move.tx_gso);
    assert_eq!(s.reconnects, 1);
    let first = w.first.borrow().clone();
    assert!(is_arp_announcement(&first[0], GUEST_IP));
    let mut targets: Vec<_> = first[1..3].iter().map(|f| na_target(f).unwrap()).collect();
    targets.sort();
    let mut want = vec![net::stack::link_local(GUEST_MAC), v6.address()];
    want.sort();
    assert_eq!(targets, want);
    assert!(first[3..].iter().all(|f| f.len() <= netfront::MTU));
}
