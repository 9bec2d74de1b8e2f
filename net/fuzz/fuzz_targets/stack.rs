//! Fuzzes the network stack's receive path and the SYN gate as a hostile LAN sees them: a
//! [`net::Net`] (static 10.0.0.2/24 and fd00::2/64) over a simulated NIC that takes every
//! checksum as valid, with a TCP listener on port 80 (input-chosen backlog), fed input-chosen
//! moves: TCP segments over IPv4 or IPv6 from many (spoofed) addresses with any flags, options,
//! payload and sequence numbers (absolute, or relative to what the guest sent, so handshakes
//! and established connections happen), raw frames, ARP replies, a full TX ring, time jumps, and
//! the app's side (accept, read, write, shutdown, drop, abort, closing and reopening the
//! listener).
//!
//! Checked: nothing panics; the stack's socket count stays within what the app holds plus
//! sockets closing for at most a minute; and once the app drops everything and two minutes
//! pass, only the listener's own sockets are left (none leaked); and that a new client can then
//! connect and be accepted (the listener was not starved by half-open connections: issue 18,
//! net::gate; `STACK_LIVENESS=0` skips this check). Run with `scripts/fuzz 60 stack`.
#![no_main]

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use common::{SimNic, Wire};
use libfuzzer_sys::fuzz_target;
use net::smoltcp::wire::{Ipv4Cidr, Ipv6Cidr};
use net::stack::DevPhy;
use net::{IpConfig, Ipv4Mode, ListenConfig, Net, TcpListener, TcpStream};

const GUEST_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 2];
const GUEST_V4: [u8; 4] = [10, 0, 0, 2];
const GW_V4: [u8; 4] = [10, 0, 0, 1];
const PORT: u16 = 80;
const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

fn guest_v6() -> [u8; 16] {
    let mut a = [0; 16];
    a[..2].copy_from_slice(&[0xfd, 0]);
    a[15] = 2;
    a
}

/// Reads the input byte by byte (zeros once it runs out).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b.to_vec()
    }
}

/// A remote host: index 0-15 on the LAN (10.0.0.10+i, fd00::10+i), 16-31 beyond the gateway.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Peer(u8);

impl Peer {
    fn mac(self) -> [u8; 6] {
        if self.0 < 16 {
            [0x02, 0, 0, 0, 0, 0x10 + self.0]
        } else {
            [0x02, 0, 0, 0, 0, 1]
        }
    }
    fn v4(self) -> [u8; 4] {
        if self.0 < 16 {
            [10, 0, 0, 10 + self.0]
        } else {
            [198, 51, 100, self.0]
        }
    }
    fn v6(self) -> [u8; 16] {
        let mut a = guest_v6();
        a[15] = 0x10 + self.0;
        a
    }
}

fn ethernet(src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn arp_reply(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 2];
    a.extend_from_slice(&mac);
    a.extend_from_slice(&ip);
    a.extend_from_slice(&GUEST_MAC);
    a.extend_from_slice(&GUEST_V4);
    ethernet(mac, 0x0806, &a)
}

/// A TCP segment (header and payload, checksum left 0: the NIC does not check).
struct Segment {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: Vec<u8>,
    payload: Vec<u8>,
}

impl Segment {
    fn bytes(&self) -> Vec<u8> {
        let mut opts = self.options.clone();
        opts.truncate(40);
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let mut t = Vec::new();
        t.extend_from_slice(&self.src_port.to_be_bytes());
        t.extend_from_slice(&self.dst_port.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&self.ack.to_be_bytes());
        t.push(((5 + opts.len() / 4) as u8) << 4);
        t.push(self.flags);
        t.extend_from_slice(&self.window.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(&opts);
        t.extend_from_slice(&self.payload);
        t
    }

    fn v4(&self, peer: Peer) -> Vec<u8> {
        let tcp = self.bytes();
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
        ip.extend_from_slice(&peer.v4());
        ip.extend_from_slice(&GUEST_V4);
        ip.extend_from_slice(&tcp);
        ethernet(peer.mac(), 0x0800, &ip)
    }

    fn v6(&self, peer: Peer) -> Vec<u8> {
        let tcp = self.bytes();
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[6, 64]);
        ip.extend_from_slice(&peer.v6());
        ip.extend_from_slice(&guest_v6());
        ip.extend_from_slice(&tcp);
        ethernet(peer.mac(), 0x86dd, &ip)
    }
}

/// What the guest last said on a connection: (its next sequence number, what it acknowledged).
type Seen = HashMap<(bool, Vec<u8>, u16, u16), (u32, u32)>;

/// Records the TCP segments the guest sent (for sequence numbers relative to them).
fn watch(frames: &[Vec<u8>], seen: &mut Seen) {
    for f in frames {
        let Some(eth) = f.get(14..) else { continue };
        let (v6, remote, tcp) = match u16::from_be_bytes([f[12], f[13]]) {
            0x0800 if eth.len() >= 20 && eth[9] == 6 => {
                let hl = usize::from(eth[0] & 15) * 4;
                (false, eth[16..20].to_vec(), eth.get(hl..))
            }
            0x86dd if eth.len() >= 40 && eth[6] == 6 => (true, eth[24..40].to_vec(), eth.get(40..)),
            _ => continue,
        };
        let Some(t) = tcp.filter(|t| t.len() >= 20) else {
            continue;
        };
        let (local, rport) = (
            u16::from_be_bytes([t[0], t[1]]),
            u16::from_be_bytes([t[2], t[3]]),
        );
        let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
        let data = t.len().saturating_sub(usize::from(t[12] >> 4) * 4) as u32;
        let (syn, fin) = (t[13] & 2 != 0, t[13] & 1 != 0);
        let next = seq.wrapping_add(data + u32::from(syn) + u32::from(fin));
        seen.insert((v6, remote, rport, local), (next, ack));
    }
}

/// Polls `fut` once (the stack is polled by the test, so nothing needs waking).
fn poll_once<T>(fut: impl Future<Output = T>) -> Option<T> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn env_flag(name: &str, cell: &'static OnceLock<bool>) -> bool {
    *cell.get_or_init(|| std::env::var_os(name).is_some_and(|v| v == "1"))
}

/// Check that a newcomer is accepted at the end (`STACK_LIVENESS=0` turns it off).
fn liveness() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("STACK_LIVENESS").is_none_or(|v| v != "0"))
}

/// `STACK_DEBUG=1`: print the frames each way (to replay a crash).
fn debug() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    env_flag("STACK_DEBUG", &ON)
}

struct World {
    net: Net,
    wire: Rc<RefCell<Wire>>,
    now: u64,
    seen: Seen,
    sent: usize,
}

impl World {
    fn inject(&mut self, frame: Vec<u8>) {
        if debug() {
            use net::smoltcp::wire::{EthernetFrame, PrettyPrinter};
            eprintln!(
                "to guest {}",
                PrettyPrinter::<EthernetFrame<&[u8]>>::new("", &frame)
            );
        }
        self.wire.borrow_mut().to_guest.push_back(frame);
    }

    fn poll(&mut self) {
        let _ = self.net.poll(self.now);
        let frames = std::mem::take(&mut self.wire.borrow_mut().from_guest);
        self.sent += frames.len();
        if debug() {
            for f in &frames {
                eprintln!("guest sent {:02x?}", f);
            }
        }
        watch(&frames, &mut self.seen);
    }

    fn advance(&mut self, ns: u64) {
        self.now += ns;
        self.poll();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let backlog = 1 + usize::from(input.u8() % 4);
    let listen = ListenConfig {
        backlog,
        rx_buffer: 2048,
        tx_buffer: 2048,
    };
    let wire = Rc::new(RefCell::new(Wire::default()));
    let config = IpConfig {
        v4: Ipv4Mode::Static {
            addr: Ipv4Cidr::new(GUEST_V4.into(), 24),
            gw: Some(GW_V4.into()),
        },
        v6: Some(Ipv6Cidr::new(guest_v6().into(), 64)),
        ..IpConfig::default()
    };
    let net = Net::new(DevPhy(SimNic(wire.clone())), GUEST_MAC, &config, S);
    let mut w = World {
        net: net.clone(),
        wire,
        now: S,
        seen: HashMap::new(),
        sent: 0,
    };
    let mut listener: Option<TcpListener> = Some(net.tcp_listen(PORT, listen).unwrap());
    let mut streams: Vec<TcpStream> = Vec::new();
    // When the app dropped streams: their sockets may linger while closing.
    let mut dropped: Vec<u64> = Vec::new();
    w.inject(arp_reply(Peer(16).mac(), GW_V4));
    w.poll();
    let mut ops = 0;
    while !input.0.is_empty() && ops < 400 {
        ops += 1;
        match input.u8() % 12 {
            0..=3 => {
                let sel = input.u8();
                let v6 = sel & 0x80 != 0;
                let peer = Peer(sel & 31);
                let ports = input.u8();
                let src_port = 40000 + u16::from(ports & 7);
                let dst_port = match ports >> 3 & 7 {
                    0..=5 => PORT,
                    6 => 22,
                    _ => input.u16(),
                };
                let remote = if v6 {
                    peer.v6().to_vec()
                } else {
                    peer.v4().to_vec()
                };
                let (guest_next, guest_ack) = w
                    .seen
                    .get(&(v6, remote, src_port, dst_port))
                    .copied()
                    .unwrap_or((0, 1000));
                let rel = |base: u32, input: &mut Input| match input.u8() {
                    m @ 0..=127 => base.wrapping_add(u32::from(m)).wrapping_sub(64),
                    m @ 128..=191 => base.wrapping_add(u32::from(m - 128) * 1024),
                    _ => input.u32(),
                };
                let seq = rel(guest_ack, &mut input);
                let ack = rel(guest_next, &mut input);
                let flags = input.u8();
                let window = input.u16();
                let opt_len = usize::from(input.u8() % 44);
                let options = input.bytes(opt_len);
                let len = match input.u8() {
                    n @ 0..=200 => usize::from(n),
                    n => usize::from(n - 200) * 64,
                };
                let payload = vec![b'x'; len];
                let seg = Segment {
                    src_port,
                    dst_port,
                    seq,
                    ack,
                    flags,
                    window,
                    options,
                    payload,
                };
                let frame = if v6 { seg.v6(peer) } else { seg.v4(peer) };
                w.inject(frame);
            }
            4 => {
                let n = usize::from(input.u8());
                let frame = input.bytes(n);
                w.inject(frame);
            }
            5 => {
                let p = Peer(input.u8() % 16);
                w.inject(arp_reply(p.mac(), p.v4()));
            }
            6 => {
                let t = u64::from(input.u8());
                w.now += t * t * MS;
            }
            7 => {
                if let (Some(l), true) = (listener.as_mut(), streams.len() < 8) {
                    if let Some(Ok(s)) = poll_once(l.accept()) {
                        streams.push(s);
                    }
                }
            }
            8 | 9 if !streams.is_empty() => {
                let k = usize::from(input.u8()) % streams.len();
                match input.u8() % 6 {
                    0 => {
                        let mut buf = [0; 700];
                        let _ = poll_once(streams[k].read(&mut buf));
                    }
                    1 => {
                        let n = usize::from(input.u8()) * 16;
                        let _ = poll_once(streams[k].write(&vec![b'y'; n]));
                    }
                    2 => streams[k].shutdown_write(),
                    3 => {
                        let _ = (
                            streams[k].recv_queue(),
                            streams[k].send_room(),
                            streams[k].peer(),
                        );
                    }
                    4 => {
                        drop(streams.swap_remove(k));
                        dropped.push(w.now);
                    }
                    _ => {
                        streams.swap_remove(k).abort();
                        dropped.push(w.now);
                    }
                }
            }
            10 => {
                let room = input.u8();
                w.wire.borrow_mut().tx_room = (room < 128).then_some(usize::from(room % 4));
            }
            _ => {
                if listener.take().is_none() {
                    listener = Some(net.tcp_listen(PORT, listen).unwrap());
                }
            }
        }
        w.advance(100_000);
        let recent = dropped.iter().filter(|&&t| w.now < t + 60 * S).count();
        let own = if listener.is_some() { 2 * backlog } else { 0 };
        let count = net.socket_count();
        assert!(
            count <= own + streams.len() + recent,
            "{count} sockets: listener {own}, streams {}, closing {recent}",
            streams.len()
        );
    }

    // The app lets go of every connection; two minutes later only the listener's sockets are
    // left.
    streams.clear();
    w.wire.borrow_mut().tx_room = None;
    for _ in 0..24 {
        w.advance(5 * S);
    }
    let own = if listener.is_some() { backlog } else { 0 };
    assert_eq!(net.socket_count(), own, "sockets leaked");
    assert!(w.sent <= 100_000);
    if !liveness() {
        return;
    }
    // A newcomer connects and is accepted.
    let Some(l) = listener.as_mut() else { return };
    let peer = Peer(15);
    w.inject(arp_reply(peer.mac(), peer.v4()));
    let syn = Segment {
        src_port: 50000,
        dst_port: PORT,
        seq: 7000,
        ack: 0,
        flags: 0x02,
        window: 8192,
        options: vec![],
        payload: vec![],
    };
    w.inject(syn.v4(peer));
    w.advance(MS);
    let key = (false, peer.v4().to_vec(), 50000, PORT);
    let &(next, ack) = w.seen.get(&key).expect("no SYN-ACK to a newcomer");
    assert_eq!(ack, 7001);
    let ack_seg = Segment {
        seq: 7001,
        ack: next,
        flags: 0x10,
        ..syn
    };
    w.inject(ack_seg.v4(peer));
    w.advance(MS);
    let s = poll_once(l.accept())
        .expect("newcomer not accepted")
        .unwrap();
    assert_eq!(s.peer().map(|p| p.port), Some(50000));
});
