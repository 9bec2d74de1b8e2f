//! RFC 5961 §3 end to end on the host: a blind attacker's in-window resets do not kill an
//! established connection (smoltcp alone would close it on the first one), and a reset with the
//! exact next sequence number still does. The guest runs over Netfront, the peer and the
//! attacker over the simulated netback; the attacker learns the numbers by watching the
//! guest's frames (on-path), then sends RSTs at every other point of the window.

mod common;
use common::{stat, Clock, GUEST_IP, GUEST_MAC, PEER_IP, PEER_MAC};

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use net::stack::Link;
use net::{ListenConfig, Net, NetError};
use netfront::sim::{RxCsum, SimNetback};
use netfront::{Config, Netfront};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};
use xen::exec::{Executor, Source};
use xen::hal::SimHal;

type Frames = Rc<RefCell<Vec<Vec<u8>>>>;
/// How each server-side connection ended, in accept order.
type Ends = Rc<RefCell<Vec<Option<Result<usize, NetError>>>>>;

/// The peer's device: the simulated netback, plus a tap on what the guest sends and a way to
/// put the attacker's frames on the wire.
struct TapPhy {
    nb: SimNetback,
    tap: Frames,
    inject: Frames,
}

impl Link for TapPhy {
    type Device = SimNetback;
    fn device(&mut self) -> &mut SimNetback {
        &mut self.nb
    }
    fn before_poll(&mut self, _now: Instant) {
        for f in self.inject.borrow_mut().drain(..) {
            self.nb.send_to_guest(&f);
        }
        self.nb.step();
        self.tap
            .borrow_mut()
            .extend(self.nb.from_guest.iter().cloned());
    }
    fn after_poll(&mut self, _now: Instant) {
        self.nb.step();
    }
}

/// The guest's latest segment to the peer's `port`: (its SEQ + length, its ACK = RCV.NXT, window).
fn guest_numbers(tap: &Frames, port: u16) -> Option<(u32, u32, u16)> {
    tap.borrow().iter().rev().find_map(|f| {
        let e = EthernetFrame::new_checked(&f[..]).ok()?;
        let ip = Ipv4Packet::new_checked(e.payload()).ok()?;
        if ip.next_header() != IpProtocol::Tcp {
            return None;
        }
        let t = TcpPacket::new_checked(ip.payload()).ok()?;
        (t.dst_port() == port && t.ack()).then(|| {
            (
                (t.seq_number() + t.payload().len()).0 as u32,
                t.ack_number().0 as u32,
                t.window_len(),
            )
        })
    })
}

/// The peer's port on the guest's connection from port 7 that echoed `payload`.
fn client_port(tap: &Frames, payload: &[u8]) -> Option<u16> {
    tap.borrow().iter().find_map(|f| {
        let e = EthernetFrame::new_checked(&f[..]).ok()?;
        let ip = Ipv4Packet::new_checked(e.payload()).ok()?;
        let t = TcpPacket::new_checked(ip.payload()).ok()?;
        (ip.next_header() == IpProtocol::Tcp && t.src_port() == 7 && t.payload() == payload)
            .then(|| t.dst_port())
    })
}

/// An RST from PEER_IP:port to GUEST_IP:7 with sequence number `seq`, valid checksums.
fn rst(port: u16, seq: u32) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: port,
        dst_port: 7,
        control: TcpControl::Rst,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: None,
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: PEER_IP,
        dst_addr: GUEST_IP,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; 14 + 20 + tcp.buffer_len()];
    let mut e = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(PEER_MAC),
        dst_addr: EthernetAddress(GUEST_MAC),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut e);
    let mut i = Ipv4Packet::new_unchecked(e.payload_mut());
    ip.emit(&mut i, &ChecksumCapabilities::default());
    let mut t = TcpPacket::new_unchecked(i.payload_mut());
    let caps = ChecksumCapabilities::default();
    tcp.emit(&mut t, &PEER_IP.into(), &GUEST_IP.into(), &caps);
    buf
}

#[test]
fn in_window_resets_are_dropped_and_the_exact_one_resets() {
    resets_with(RxCsum::AsIs);
}

/// As dom0's own packets reach a guest on Xen: blank checksums, flagged (the driver trusts
/// them, smoltcp does not verify them, so the filter must not either or it learns nothing).
#[test]
fn the_same_with_blank_checksums_from_the_backend() {
    resets_with(RxCsum::Blank);
}

fn resets_with(mode: RxCsum) {
    let hal = SimHal::new();
    let mut nf = Netfront::new(hal.clone(), 0, GUEST_MAC, Config::default()).unwrap();
    nf.set_link_up(true);
    let mut nb = SimNetback::attach(&hal, 0, nf.tx_ring_ref(), nf.rx_ring_ref()).unwrap();
    nb.rx_csum = mode;
    let guest = Net::new(nf, GUEST_MAC, &stat(GUEST_IP), 1);
    let (tap, inject): (Frames, Frames) = Default::default();
    let peer = Net::new(
        TapPhy {
            nb,
            tap: tap.clone(),
            inject: inject.clone(),
        },
        PEER_MAC,
        &stat(PEER_IP),
        2,
    );
    let server_end: Ends = Default::default();
    let mut clock = Clock(Rc::new(Cell::new(0)));
    let mut ex = Executor::new();
    let sp = ex.spawner();
    let (g, p, end) = (guest.clone(), peer.clone(), server_end.clone());
    let fut = async move {
        let mut l = g.tcp_listen(7, ListenConfig::default()).unwrap();
        let sp2 = sp.clone();
        sp.spawn(async move {
            // Echo on every connection; each one's end goes into `end` in accept order.
            loop {
                let mut s = l.accept().await.unwrap();
                let end = end.clone();
                let i = {
                    let mut e = end.borrow_mut();
                    e.push(None);
                    e.len() - 1
                };
                sp2.spawn(async move {
                    let mut buf = [0u8; 64];
                    let why = loop {
                        match s.read(&mut buf).await {
                            Ok(0) => break Ok(0),
                            Err(e) => break Err(e),
                            Ok(n) => s.write_all(&buf[..n]).await.unwrap(),
                        }
                    };
                    end.borrow_mut()[i] = Some(why);
                });
            }
        });
        // Another connection first, so the tracked one is not alone (and this one goes away
        // while the other is tracked).
        let mut c0 = p
            .tcp_connect(IpAddress::Ipv4(GUEST_IP), 7, 4096, 4096)
            .await
            .unwrap();
        let mut c = p
            .tcp_connect(IpAddress::Ipv4(GUEST_IP), 7, 4096, 4096)
            .await
            .unwrap();
        let mut b0 = [0u8; 8];
        c0.write_all(b"zero").await.unwrap();
        assert_eq!(c0.read(&mut b0).await.unwrap(), 4);
        drop(c0);
        let mut buf = [0u8; 64];
        c.write_all(b"one").await.unwrap();
        assert_eq!(c.read(&mut buf).await.unwrap(), 3);
        p.sleep(50_000_000).await;
        let port = client_port(&tap, b"one").expect("the client's port");
        let (_, rcv_nxt, win) = guest_numbers(&tap, port).expect("a segment of the guest's");
        // Every other point of the window, spread over it (a blind attacker's best guesses).
        let n = 1000u32;
        for k in 0..n {
            let off = 1 + k * (u32::from(win).max(2) - 1) / n;
            inject
                .borrow_mut()
                .push(rst(port, rcv_nxt.wrapping_add(off)));
        }
        p.sleep(50_000_000).await;
        c.write_all(b"two").await.unwrap();
        let n2 = c.read(&mut buf).await;
        assert_eq!(n2.as_ref().ok(), Some(&3), "echo after the in-window RSTs");
        assert_eq!(&buf[..3], b"two");
        p.sleep(50_000_000).await;
        // The exact reset (the last echo moved RCV.NXT on by 3).
        let (_, rcv_nxt2, _) = guest_numbers(&tap, port).unwrap();
        assert_eq!(rcv_nxt2, rcv_nxt.wrapping_add(3));
        inject.borrow_mut().push(rst(port, rcv_nxt2));
        p.sleep(50_000_000).await;
        // The guest's side is gone: its answer to more data is a reset.
        let _ = c.write_all(b"three").await;
        let after = c.read(&mut buf).await;
        (after, port)
    };
    let sources: [&dyn Source; 2] = [&guest, &peer];
    let (after, _port) = ex.block_on(&mut clock, &sources, fut);
    assert_eq!(guest.dropped_rsts(), 1000);
    let ends = server_end.borrow().clone();
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert_eq!(ends[0], Some(Ok(0)), "the first connection closed normally");
    assert_eq!(
        ends[1],
        Some(Err(NetError::ConnectionReset)),
        "the exact RST reset the guest's connection"
    );
    assert_eq!(after, Err(NetError::ConnectionReset));
}
