//! The app-facing stack end to end on the host: two [`Net`]s on one executor, the guest over
//! Netfront and the peer over the simulated netback (the same ring protocol as on Xen), talking
//! through the async socket API: TCP echo of a megabyte, many concurrent connections, UDP echo,
//! and connections refused or reset.

mod common;
use common::{data, stat, Clock, GUEST_IP, GUEST_MAC, PEER_IP, PEER_MAC};

use std::cell::Cell;
use std::rc::Rc;

use net::listen::{self, Admission, Cap, Overflow};
use net::stack::Link;
use net::{IpConfig, ListenConfig, Net, NetError};
use netfront::sim::SimNetback;
use netfront::{Config, Netfront};
use smoltcp::time::Instant;
use smoltcp::wire::{DnsQueryType, IpAddress, IpEndpoint, Ipv4Address};
use xen::exec::{Executor, Source, Spawner};
use xen::hal::SimHal;

/// The simulated netback as the peer's device: the backend runs before and after each poll.
/// It also plays an attacker on the wire: it sends the guest `flood.0` spoofed SYNs per
/// millisecond of simulated time, and a burst of `flood.1` once (valid checksums, on-link
/// source addresses nobody has, so their SYN-ACKs go nowhere).
struct PeerPhy {
    nb: SimNetback,
    flood: Rc<Cell<(u32, u32)>>,
    sent: u32,
    last_ms: i64,
}

impl Link for PeerPhy {
    type Device = SimNetback;
    fn device(&mut self) -> &mut SimNetback {
        &mut self.nb
    }
    fn before_poll(&mut self, now: Instant) {
        let (per_ms, burst) = self.flood.get();
        let ms = now.total_millis();
        let n = burst + per_ms * (ms - self.last_ms).clamp(0, 1000) as u32;
        self.last_ms = ms;
        self.flood.set((per_ms, 0));
        for _ in 0..n {
            self.sent = self.sent.wrapping_add(1);
            self.nb.send_to_guest(&spoofed_syn(self.sent, 7));
        }
        self.nb.step();
    }
    fn after_poll(&mut self, _now: Instant) {
        self.nb.step();
    }
}

/// SYN number `n` of a flood at the guest's `port`: from 10.0.0.(20 + n % 200), port
/// 1024 + n, with a valid checksum.
fn spoofed_syn(n: u32, port: u16) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
        Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    };
    let src = Ipv4Address::new(10, 0, 0, 20 + (n % 200) as u8);
    let tcp = TcpRepr {
        src_port: 1024 + (n % 60000) as u16,
        dst_port: port,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(n.wrapping_mul(2_654_435_761) as i32),
        ack_number: None,
        window_len: 64240,
        window_scale: Some(7),
        max_seg_size: Some(1460),
        sack_permitted: true,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: GUEST_IP,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress([0x02, 0xee, 0, 0, (n >> 8) as u8, n as u8]),
        dst_addr: EthernetAddress(GUEST_MAC),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; 14 + ip.buffer_len() + tcp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut p, &caps);
    let mut t = TcpPacket::new_unchecked(p.payload_mut());
    tcp.emit(
        &mut t,
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(GUEST_IP),
        &caps,
    );
    buf
}

struct Pair {
    guest: Net,
    peer: Net,
    clock: Clock,
    ex: Executor,
    /// Spoofed SYNs the peer sends the guest: per ms, and a burst once.
    flood: Rc<Cell<(u32, u32)>>,
}

fn pair() -> Pair {
    pair_with(stat(GUEST_IP))
}

fn pair_with(guest_config: IpConfig) -> Pair {
    let hal = SimHal::new();
    let mut nf = Netfront::new(hal.clone(), 0, GUEST_MAC, Config::default()).unwrap();
    nf.set_link_up(true);
    let nb = SimNetback::attach(&hal, 0, nf.tx_ring_ref(), nf.rx_ring_ref()).unwrap();
    let guest = Net::new(nf, GUEST_MAC, &guest_config, 1);
    let flood = Rc::new(Cell::new((0, 0)));
    let peer_phy = PeerPhy {
        nb,
        flood: flood.clone(),
        sent: 0,
        last_ms: 0,
    };
    let peer = Net::new(peer_phy, PEER_MAC, &stat(PEER_IP), 2);
    Pair {
        guest,
        peer,
        clock: Clock(Rc::new(Cell::new(0))),
        ex: Executor::new(),
        flood,
    }
}

impl Pair {
    fn run<T>(
        &mut self,
        f: impl FnOnce(Spawner, Net, Net) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>,
    ) -> T {
        let fut = f(self.ex.spawner(), self.guest.clone(), self.peer.clone());
        let sources: [&dyn Source; 2] = [&self.guest, &self.peer];
        self.ex.block_on(&mut self.clock, &sources, fut)
    }
}

async fn echo_server(sp: Spawner, net: Net, port: u16) {
    let mut l = net.tcp_listen(port, ListenConfig::default()).unwrap();
    loop {
        let mut s = l.accept().await.unwrap();
        sp.spawn(async move {
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
        });
    }
}

/// Sends `msg` on a new connection, reads the echo, closes.
async fn echo_client(peer: Net, port: u16, msg: Vec<u8>) -> Result<Vec<u8>, NetError> {
    let mut c = peer
        .tcp_connect(IpAddress::Ipv4(GUEST_IP), port, 64 * 1024, 64 * 1024)
        .await?;
    let mut got = Vec::with_capacity(msg.len());
    let mut sent = 0;
    let mut buf = vec![0u8; 16384];
    while got.len() < msg.len() {
        if sent < msg.len() {
            let n = c.write(&msg[sent..(sent + 16384).min(msg.len())]).await?;
            sent += n;
        }
        while c.recv_queue() > 0 || (sent == msg.len() && got.len() < msg.len()) {
            let n = c.read(&mut buf).await?;
            if n == 0 {
                return Ok(got);
            }
            got.extend_from_slice(&buf[..n]);
        }
    }
    Ok(got)
}

#[test]
fn tcp_echo_of_a_megabyte_through_the_async_api() {
    let mut p = pair();
    let msg = data(1 << 20, 7);
    let want = msg.clone();
    let got = p.run(move |sp, guest, peer| {
        Box::pin(async move {
            sp.spawn(echo_server(sp.clone(), guest, 7));
            echo_client(peer, 7, msg).await
        })
    });
    let got = got.unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "echoed bytes differ");
}

#[test]
fn fifty_concurrent_connections_beyond_the_backlog_each_get_their_own_echo() {
    let mut p = pair();
    let results = p.run(move |sp, guest, peer| {
        Box::pin(async move {
            sp.spawn(echo_server(sp.clone(), guest, 7));
            let hs: Vec<_> = (0..50u64)
                .map(|i| {
                    sp.spawn(echo_client(
                        peer.clone(),
                        7,
                        data(3000 + i as usize * 7, i + 1),
                    ))
                })
                .collect();
            let mut out = Vec::new();
            for h in hs {
                out.push(h.await);
            }
            out
        })
    });
    for (i, r) in results.into_iter().enumerate() {
        let want = data(3000 + i * 7, i as u64 + 1);
        assert_eq!(r.unwrap(), want, "connection {i}");
    }
    assert!(
        p.guest.listen_stats().held > 0,
        "the burst exceeded the backlog"
    );
    assert!(
        p.guest.listen_stats().replayed > 0,
        "held SYNs were replayed"
    );
    // Replayed, not retransmitted: smoltcp's first SYN retransmission would come after 1 s.
    assert!(
        p.clock.0.get() < 1_000_000_000,
        "took {} ms of simulated time",
        p.clock.0.get() / 1_000_000
    );
}

#[test]
fn sequential_connections_free_their_sockets() {
    let mut p = pair();
    let guest = p.guest.clone();
    p.run(move |sp, guest, peer| {
        Box::pin(async move {
            sp.spawn(echo_server(sp.clone(), guest, 7));
            for i in 0..200u64 {
                let m = data(100, i + 1);
                assert_eq!(echo_client(peer.clone(), 7, m.clone()).await.unwrap(), m);
            }
        })
    });
    // Let the closes finish (FIN handshakes, then reaping): only the listener's backlog stays.
    let (g2, clock) = (guest.clone(), p.clock.0.clone());
    p.run(move |_, _, _| {
        Box::pin(async move {
            for _ in 0..20_000 {
                if g2.socket_count() <= ListenConfig::default().backlog {
                    break;
                }
                let c = clock.clone();
                let at = clock.get() + 1_000_000;
                xen::exec::sleep_until_with(move || c.get(), at).await;
            }
        })
    });
    assert_eq!(guest.socket_count(), ListenConfig::default().backlog);
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    let mut p = pair();
    p.guest.serving();
    let clock = p.clock.0.clone();
    let (r, took) = p.run(move |_, _, peer| {
        Box::pin(async move {
            let t = clock.get();
            let r = peer
                .tcp_connect(IpAddress::Ipv4(GUEST_IP), 9999, 4096, 4096)
                .await
                .map(|_| ());
            (r, clock.get() - t)
        })
    });
    assert_eq!(r.unwrap_err(), NetError::ConnectionReset);
    assert!(
        took < 100_000_000,
        "refused at once, not after a retransmission: {took} ns"
    );
}

#[test]
fn a_syn_that_arrives_before_the_app_listens_is_answered_once_it_does() {
    // A guest started on demand: the client's SYN is there before the listener.
    let mut p = pair();
    let clock = p.clock.0.clone();
    let (guest, c2) = (p.guest.clone(), clock.clone());
    let (echo, took) = p.run(move |sp, g, peer| {
        Box::pin(async move {
            let sp2 = sp.clone();
            sp.spawn(async move {
                pause(c2, 200_000_000).await; // the app opens its listener 200 ms in
                g.serving();
                echo_server(sp2, g, 7).await
            });
            let t = clock.get();
            let m = data(100, 3);
            let got = echo_client(peer, 7, m.clone()).await.unwrap();
            (got == m, clock.get() - t)
        })
    });
    assert!(echo, "served, not refused");
    assert!(
        took < 900_000_000,
        "answered when the listener opened, not after a SYN retransmission: {took} ns"
    );
    assert!(guest.listen_stats().held > 0);
}

#[test]
fn udp_echo_both_ways() {
    let mut p = pair();
    let got = p.run(|sp, guest, peer| {
        Box::pin(async move {
            let mut srv = guest.udp_bind(7, 8, 2048).unwrap();
            sp.spawn(async move {
                let mut buf = [0u8; 2048];
                loop {
                    let (n, from) = srv.recv_from(&mut buf).await.unwrap();
                    srv.send_to(&buf[..n], from).await.unwrap();
                }
            });
            let mut c = peer.udp_bind(40000, 8, 2048).unwrap();
            let to = IpEndpoint::new(IpAddress::Ipv4(GUEST_IP), 7);
            let mut out = Vec::new();
            for i in 0..20u8 {
                let msg = vec![i; 100 + i as usize * 50];
                c.send_to(&msg, to).await.unwrap();
                let mut buf = [0u8; 2048];
                let (n, from) = c.recv_from(&mut buf).await.unwrap();
                assert_eq!(from, to);
                out.push(buf[..n].to_vec() == msg);
            }
            out
        })
    });
    assert!(got.iter().all(|ok| *ok), "{got:?}");
}

/// Waits (1 ms at a time, up to 5 s of simulated time) until `f` gives something.
async fn poll_until<T>(clock: Rc<Cell<u64>>, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..5000 {
        if let Some(v) = f() {
            return Some(v);
        }
        pause(clock.clone(), 1_000_000).await;
    }
    None
}

#[test]
fn udp_sync_calls_bind_ephemeral_ports_truncate_peek_and_filter_by_peer() {
    let mut p = pair();
    let clock = p.clock.0.clone();
    p.run(move |_, guest, peer| {
        Box::pin(async move {
            // Port 0: an ephemeral port, a different one each time.
            let mut g = guest.udp_bind_to(None, 0, 8, 2048).unwrap();
            let g2 = guest.udp_bind_to(None, 0, 8, 2048).unwrap();
            assert!(g.port() >= 49152 && g2.port() >= 49152 && g.port() != g2.port());
            assert_eq!(g.local().port, g.port());
            let mut a = peer.udp_bind(5000, 8, 2048).unwrap();
            let mut b = peer.udp_bind(5001, 8, 2048).unwrap();
            let to_g = IpEndpoint::new(IpAddress::Ipv4(GUEST_IP), g.port());
            let from_a = IpEndpoint::new(IpAddress::Ipv4(PEER_IP), 5000);
            let mut buf = [0u8; 64];
            assert_eq!(g.try_recv_from(&mut buf, false), None, "nothing queued yet");
            assert!(!g.readable());
            assert!(g.writable());

            // Truncation: 100 bytes into 10; the rest is gone, the next datagram is whole.
            let big: Vec<u8> = (0..100u8).collect();
            a.try_send_to(&big, to_g).unwrap().unwrap();
            a.try_send_to(b"second", to_g).unwrap().unwrap();
            let r = poll_until(clock.clone(), || g.try_recv_from(&mut buf[..10], false))
                .await
                .unwrap();
            assert_eq!((r.len, r.size, r.from), (10, 100, from_a));
            assert_eq!(&buf[..10], &big[..10]);
            // A peek copies it and leaves it queued.
            let r = poll_until(clock.clone(), || g.try_recv_from(&mut buf, true))
                .await
                .unwrap();
            assert_eq!((r.len, r.size), (6, 6));
            assert!(g.readable());
            let r = g.try_recv_from(&mut buf, false).unwrap();
            assert_eq!(&buf[..r.len], b"second");
            assert_eq!(g.try_recv_from(&mut buf, false), None);

            // Connected to a: b's datagrams are dropped, a's come through; send goes to a.
            assert_eq!(g.try_send(b"x").unwrap_err(), NetError::NotConnected);
            g.connect(Some(from_a));
            assert_eq!(g.peer(), Some(from_a));
            b.try_send_to(b"from b", to_g).unwrap().unwrap();
            pause(clock.clone(), 5_000_000).await;
            a.try_send_to(b"from a", to_g).unwrap().unwrap();
            let r = poll_until(clock.clone(), || g.try_recv_from(&mut buf, false))
                .await
                .unwrap();
            assert_eq!((&buf[..r.len], r.from), (&b"from a"[..], from_a));
            g.try_send(b"reply").unwrap().unwrap();
            let r = poll_until(clock.clone(), || a.try_recv_from(&mut buf, false))
                .await
                .unwrap();
            assert_eq!(&buf[..r.len], b"reply");
            assert_eq!(r.from, to_g);
            assert_eq!(b.try_recv_from(&mut buf, false), None);

            // What one frame cannot carry is refused, not sent and lost.
            let max = net::socket::udp_max_payload(1514, false);
            assert_eq!(max, 1472);
            let mut g3 = guest.udp_bind(6000, 4, 4096).unwrap();
            let to_a = from_a;
            assert_eq!(
                g3.try_send_to(&vec![0; max + 1], to_a).unwrap_err(),
                NetError::TooLarge
            );
            g3.try_send_to(&vec![7; max], to_a).unwrap().unwrap();
            let mut big = [0u8; 2048];
            let r = poll_until(clock.clone(), || a.try_recv_from(&mut big, false))
                .await
                .unwrap();
            assert_eq!(r.size, max);
            assert!(big[..max].iter().all(|b| *b == 7));
            // Port 0 as a destination is unaddressable; TTL 0 is refused.
            assert_eq!(
                g3.try_send_to(b"x", IpEndpoint::new(IpAddress::Ipv4(PEER_IP), 0))
                    .unwrap_err(),
                NetError::Unaddressable
            );
            assert!(g3.set_hop_limit(Some(0)).is_err());
            g3.set_hop_limit(Some(5)).unwrap();
            assert_eq!(g3.hop_limit(), Some(5));
        })
    });
}

#[test]
fn udp_send_buffer_full_is_none_not_an_error() {
    let mut p = pair();
    p.run(move |_, guest, _| {
        Box::pin(async move {
            let mut g = guest.udp_bind(7000, 2, 100).unwrap();
            let to = IpEndpoint::new(IpAddress::Ipv4(PEER_IP), 9);
            let mut queued = 0;
            while let Ok(Some(())) = g.try_send_to(&[1; 100], to) {
                queued += 1;
                assert!(queued <= 2);
            }
            assert_eq!(queued, 2);
            assert!(!g.writable());
        })
    });
}

#[test]
fn tcp_peek_leaves_the_bytes_for_the_next_read() {
    let mut p = pair();
    let clock = p.clock.0.clone();
    let (peeked, read) = p.run(move |_, guest, peer| {
        Box::pin(async move {
            let mut l = guest.tcp_listen(7, ListenConfig::default()).unwrap();
            let mut c = peer
                .tcp_connect(IpAddress::Ipv4(GUEST_IP), 7, 4096, 4096)
                .await
                .unwrap();
            let mut s = l.accept().await.unwrap();
            let mut buf = [0u8; 16];
            assert_eq!(s.try_peek(&mut buf).unwrap(), None);
            c.write_all(b"hello").await.unwrap();
            let n = poll_until(clock.clone(), || s.try_peek(&mut buf).unwrap())
                .await
                .unwrap();
            let peeked = buf[..n].to_vec();
            let n = s.try_read(&mut buf).unwrap().unwrap();
            (peeked, buf[..n].to_vec())
        })
    });
    assert_eq!(peeked, b"hello");
    assert_eq!(read, b"hello");
}

#[test]
fn binding_a_port_twice_fails_and_dropping_frees_it() {
    let p = pair();
    let l = p.guest.tcp_listen(80, ListenConfig::default()).unwrap();
    assert_eq!(
        p.guest.tcp_listen(80, ListenConfig::default()).unwrap_err(),
        NetError::PortInUse(80)
    );
    drop(l);
    p.guest.tcp_listen(80, ListenConfig::default()).unwrap();
    let _u = p.guest.udp_bind(80, 4, 1500).unwrap();
    assert_eq!(
        p.guest.udp_bind(80, 4, 1500).unwrap_err(),
        NetError::PortInUse(80)
    );
}

#[test]
fn ping_gets_the_peers_echo_reply_and_times_out_without_one() {
    let mut p = pair();
    let (rtt, lost) = p.run(|_, _, peer| {
        Box::pin(async move {
            let rtt = peer.ping(GUEST_IP, 1, 1_000_000_000).await;
            let lost = peer
                .ping(Ipv4Address::new(10, 0, 0, 99), 2, 500_000_000)
                .await;
            (rtt, lost)
        })
    });
    assert!(rtt.unwrap() < 1_000_000_000);
    assert_eq!(lost.unwrap_err(), NetError::TimedOut);
}

#[test]
fn a_ping_abandoned_by_its_caller_leaves_no_socket_behind() {
    let mut p = pair();
    let before = p.peer.socket_count();
    let abandoned = p.run(|_, _, peer| {
        Box::pin(async move {
            // The caller gives up (after 10 ms) long before the ping's own 5 s timeout.
            let lost = peer.ping(Ipv4Address::new(10, 0, 0, 99), 1, 5_000_000_000);
            xen::exec::timeout(peer.sleep(10_000_000), lost).await
        })
    });
    assert!(abandoned.is_none());
    assert_eq!(p.peer.socket_count(), before);
}

/// A DNS server for one name: answers A queries for `name` with `addr`, NXDOMAIN otherwise.
fn dns_answer(query: &[u8], name: &str, addr: [u8; 4]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels from byte 12 up to the zero label, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    while *query.get(at)? != 0 {
        let n = query[at] as usize;
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + n)?).to_string());
        at += 1 + n;
    }
    let qend = at + 5;
    let question = query.get(12..qend)?;
    let found = labels.join(".") == name;
    let mut r = Vec::new();
    r.extend_from_slice(&query[0..2]); // id
    r.extend_from_slice(&[0x81, if found { 0x80 } else { 0x83 }]); // response, RA, rcode
    r.extend_from_slice(&[0, 1, 0, found as u8, 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if found {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&addr);
    }
    Some(r)
}

#[test]
fn resolve_asks_the_configured_dns_server() {
    // The guest is configured with dns= pointing at the peer, which answers one name.
    let mut config = stat(GUEST_IP);
    config.dns = vec![IpAddress::Ipv4(PEER_IP)];
    let mut p = pair_with(config);
    let (ok, missing, none) = p.run(|sp, guest, peer| {
        Box::pin(async move {
            let mut srv = peer.udp_bind(53, 4, 512).unwrap();
            sp.spawn(async move {
                let mut buf = [0u8; 512];
                loop {
                    let (n, from) = srv.recv_from(&mut buf).await.unwrap();
                    if let Some(r) = dns_answer(&buf[..n], "www.example.test", [10, 9, 8, 7]) {
                        srv.send_to(&r, from).await.unwrap();
                    }
                }
            });
            let ok = guest.resolve("www.example.test", 2_000_000_000).await;
            let missing = guest.resolve("nope.example.test", 2_000_000_000).await;
            let none = peer.resolve("x.test", 1_000_000_000).await;
            (ok, missing, none)
        })
    });
    assert_eq!(
        ok.unwrap(),
        vec![IpAddress::Ipv4(Ipv4Address::new(10, 9, 8, 7))]
    );
    assert!(matches!(missing, Err(NetError::Dns(_))), "{missing:?}");
    assert!(matches!(none, Err(NetError::Dns(e)) if e.contains("no DNS server")));
}

#[test]
fn dns_query_without_waiting_answers_or_fails_by_name() {
    let mut config = stat(GUEST_IP);
    config.dns = vec![IpAddress::Ipv4(PEER_IP)];
    let mut p = pair_with(config);
    let clock = p.clock.0.clone();
    let (ok, missing, none) = p.run(move |sp, guest, peer| {
        Box::pin(async move {
            let mut srv = peer.udp_bind(53, 4, 512).unwrap();
            sp.spawn(async move {
                let mut buf = [0u8; 512];
                loop {
                    let (n, from) = srv.recv_from(&mut buf).await.unwrap();
                    if let Some(r) = dns_answer(&buf[..n], "www.example.test", [10, 9, 8, 7]) {
                        srv.send_to(&r, from).await.unwrap();
                    }
                }
            });
            // A query dropped half-way gives its slot back.
            drop(
                guest
                    .dns_query("gone.example.test", DnsQueryType::A)
                    .unwrap(),
            );
            // Two at once on the stack's one DNS socket: each gets its own answer.
            let a = guest
                .dns_query("www.example.test", DnsQueryType::A)
                .unwrap();
            let b = guest
                .dns_query("nope.example.test", DnsQueryType::A)
                .unwrap();
            assert!(a.result().is_none(), "pending until the stack ran");
            let ok = poll_until(clock.clone(), || a.result()).await.unwrap();
            let missing = poll_until(clock.clone(), || b.result()).await.unwrap();
            let none = peer.dns_query("x.test", DnsQueryType::A).map(drop);
            (ok, missing, none)
        })
    });
    assert_eq!(
        ok.unwrap(),
        vec![IpAddress::Ipv4(Ipv4Address::new(10, 9, 8, 7))]
    );
    assert!(matches!(missing, Err(NetError::Dns(_))), "{missing:?}");
    assert!(matches!(none, Err(NetError::Dns(e)) if e.contains("no DNS server")));
}

/// Waits `ns` of simulated time.
async fn pause(clock: Rc<Cell<u64>>, ns: u64) {
    let at = clock.get() + ns;
    let c = clock.clone();
    xen::exec::sleep_until_with(move || c.get(), at).await;
}

#[test]
fn spoofed_syns_beyond_the_backlog_do_not_take_the_listener_off_the_air() {
    // The report: ~40 spoofed SYNs filled httpd's backlog of 32 for good.
    let mut p = pair();
    let (guest, clock, flood) = (p.guest.clone(), p.clock.0.clone(), p.flood.clone());
    let ok = p.run(move |sp, g, peer| {
        Box::pin(async move {
            sp.spawn(echo_server(sp.clone(), g, 7));
            pause(clock.clone(), 5_000_000).await;
            flood.set((0, 50)); // one burst of 50 spoofed SYNs (backlog is 8)
            pause(clock.clone(), 5_000_000).await;
            let m = data(500, 9);
            echo_client(peer.clone(), 7, m.clone()).await.unwrap() == m
        })
    });
    assert!(ok, "echo after the burst");
    let st = guest.listen_stats();
    assert!(st.shed > 0, "stale half-open slots were shed: {st:?}");
    assert!(st.held > 0, "SYNs waited for stale slots: {st:?}");
}

#[test]
fn half_open_connections_expire_and_give_their_sockets_back() {
    let mut p = pair();
    let (guest, clock, flood) = (p.guest.clone(), p.clock.0.clone(), p.flood.clone());
    let backlog = ListenConfig::default().backlog;
    p.run(move |sp, g, _| {
        Box::pin(async move {
            sp.spawn(echo_server(sp.clone(), g, 7));
            pause(clock.clone(), 2_000_000).await;
            // All slots but one half-open: no pressure, so only expiry gives them back.
            flood.set((0, backlog as u32 - 1));
            pause(clock.clone(), net::gate::HALF_OPEN_NS + 100_000_000).await;
        })
    });
    let st = guest.listen_stats();
    assert_eq!(st.expired, backlog as u64 - 1, "{st:?}");
    assert_eq!(st.shed, 0, "{st:?}");
    assert_eq!(
        guest.socket_count(),
        backlog,
        "no socket beyond the backlog"
    );
}

#[test]
fn legitimate_clients_are_served_through_a_sustained_flood() {
    // 1 spoofed SYN per ms: 1,000 SYN/s of simulated time, 125 times the backlog per second,
    // while 100 clients connect one after another.
    let mut p = pair();
    let (guest, clock, flood) = (p.guest.clone(), p.clock.0.clone(), p.flood.clone());
    let served = p.run(move |sp, g, peer| {
        Box::pin(async move {
            sp.spawn(echo_server(sp.clone(), g, 7));
            pause(clock.clone(), 2_000_000).await;
            // A handshake before the flood gives the gate a measure of a real round trip.
            let m = data(100, 1);
            assert_eq!(echo_client(peer.clone(), 7, m.clone()).await.unwrap(), m);
            flood.set((1, 0));
            let mut served = 0;
            for i in 0..100u64 {
                let m = data(200, i + 2);
                if let Some(Ok(got)) = xen::exec::timeout(
                    peer.sleep(5_000_000_000),
                    echo_client(peer.clone(), 7, m.clone()),
                )
                .await
                {
                    served += usize::from(got == m);
                }
            }
            flood.set((0, 0));
            served
        })
    });
    let st = guest.listen_stats();
    assert_eq!(served, 100, "clients served during the flood ({st:?})");
    assert!(st.shed > 50, "{st:?}");
}

#[test]
fn a_connection_reset_before_accept_gives_its_slot_back() {
    let mut p = pair();
    let (guest, clock) = (p.guest.clone(), p.clock.0.clone());
    let listener = guest.tcp_listen(7, ListenConfig::default()).unwrap();
    p.run(move |_, _, peer| {
        Box::pin(async move {
            // Nobody accepts: the connection waits in its slot, then the client resets it.
            let c = peer
                .tcp_connect(IpAddress::Ipv4(GUEST_IP), 7, 4096, 4096)
                .await
                .unwrap();
            pause(clock.clone(), 5_000_000).await;
            c.abort();
            pause(clock.clone(), 50_000_000).await;
        })
    });
    let st = guest.listen_stats();
    assert_eq!(st.died, 1, "{st:?}");
    assert_eq!(guest.socket_count(), ListenConfig::default().backlog);
    drop(listener);
    assert_eq!(
        guest.socket_count(),
        0,
        "dropping the listener removes its slots"
    );
}

#[test]
fn a_slot_given_back_by_a_spoofed_syn_answers_the_next_client_at_once() {
    // Every slot's SYN-ACK went to an on-link address nobody answers, so smoltcp marked each
    // socket as waiting for that neighbour (silent for 1 s). Slots shed for a newcomer must not
    // inherit that silence: the client's handshake takes a few ms, not a second.
    let mut p = pair();
    let (clock, flood) = (p.clock.0.clone(), p.flood.clone());
    let took = p.run(move |sp, g, peer| {
        Box::pin(async move {
            sp.spawn(echo_server(sp.clone(), g, 7));
            pause(clock.clone(), 2_000_000).await;
            flood.set((0, ListenConfig::default().backlog as u32));
            pause(clock.clone(), 100_000_000).await; // all slots half-open and stale
            let t0 = clock.get();
            let m = data(100, 3);
            assert_eq!(echo_client(peer.clone(), 7, m.clone()).await.unwrap(), m);
            clock.get() - t0
        })
    });
    let st = p.guest.listen_stats();
    assert!(st.shed > 0, "{st:?}");
    assert!(took < 100_000_000, "served after {} ms", took / 1_000_000);
}

// ---- net::listen: the accept loop with a connection cap. ------------------------------------

/// Echoes until the peer closes (the listener helper's handler).
async fn echo_conn(mut s: net::TcpStream) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut buf).await {
        if s.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Connects to `port`, sends `msg` and reads until `msg.len()` bytes came back or the
/// connection ended; returns the connection (still open) and what it read, or how it ended.
async fn hello(
    peer: &Net,
    port: u16,
    msg: &[u8],
) -> (Option<net::TcpStream>, Result<Vec<u8>, NetError>) {
    let mut c = match peer
        .tcp_connect(IpAddress::Ipv4(GUEST_IP), port, 4096, 4096)
        .await
    {
        Ok(c) => c,
        Err(e) => return (None, Err(e)),
    };
    if let Err(e) = c.write_all(msg).await {
        return (None, Err(e));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < msg.len() {
        match c.read(&mut buf).await {
            Ok(0) => return (None, Ok(got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (None, Err(e)),
        }
    }
    (Some(c), Ok(got))
}

#[test]
fn listener_cap_aborts_the_connection_over_it_and_frees_the_place_when_one_ends() {
    let mut p = pair();
    let out = p.run(move |sp, guest, peer| {
        Box::pin(async move {
            let cap = Cap::new(2);
            let l = guest.tcp_listen(7, ListenConfig::default()).unwrap();
            let sp2 = sp.clone();
            sp.spawn(listen::serve(
                sp2,
                l,
                cap.clone(),
                Overflow::Abort,
                |s, _| echo_conn(s),
            ));
            let (a, ra) = hello(&peer, 7, b"one").await;
            let (b, rb) = hello(&peer, 7, b"two").await;
            let live_at_cap = cap.live();
            // The third is accepted by the stack, then reset by the helper.
            let (_, rc) = hello(&peer, 7, b"three").await;
            // One of the first two ends: its task ends, its place is free again.
            a.unwrap().close().await;
            peer.sleep(500_000_000).await;
            let live_after = cap.live();
            let (d, rd) = hello(&peer, 7, b"four").await;
            drop((b, d));
            (ra, rb, live_at_cap, rc, live_after, rd)
        })
    });
    let (ra, rb, live_at_cap, rc, live_after, rd) = out;
    assert_eq!(ra.unwrap(), b"one");
    assert_eq!(rb.unwrap(), b"two");
    assert_eq!(live_at_cap, 2);
    assert_eq!(rc, Err(NetError::ConnectionReset));
    assert_eq!(live_after, 1);
    assert_eq!(rd.unwrap(), b"four");
}

#[test]
fn listener_overflow_answer_goes_to_the_connection_over_the_cap_then_it_closes() {
    let mut p = pair();
    let out = p.run(move |sp, guest, peer| {
        Box::pin(async move {
            let busy = Overflow::Answer {
                bytes: b"busy\n",
                within_ns: 1_000_000_000,
            };
            let l = guest.tcp_listen(80, ListenConfig::default()).unwrap();
            sp.spawn(listen::serve(sp.clone(), l, Cap::new(1), busy, |s, _| {
                echo_conn(s)
            }));
            let (a, ra) = hello(&peer, 80, b"first").await;
            // Over the cap: the answer, then the end of the stream (not a reset).
            let (b, rb) = hello(&peer, 80, b"12345").await;
            let mut c = b.unwrap();
            let mut rest = [0u8; 16];
            let end = c.read(&mut rest).await;
            drop(a);
            (ra, rb, end)
        })
    });
    let (ra, rb, end) = out;
    assert_eq!(ra.unwrap(), b"first");
    assert_eq!(rb.unwrap(), b"busy\n");
    assert_eq!(end, Ok(0));
}

#[test]
fn one_cap_counts_the_connections_of_every_listener_it_serves() {
    let mut p = pair();
    let out = p.run(move |sp, guest, peer| {
        Box::pin(async move {
            let cap = Cap::new(1);
            for port in [7, 9] {
                let l = guest.tcp_listen(port, ListenConfig::default()).unwrap();
                sp.spawn(listen::serve(
                    sp.clone(),
                    l,
                    cap.clone(),
                    Overflow::Abort,
                    |s, _| echo_conn(s),
                ));
            }
            let (a, ra) = hello(&peer, 7, b"seven").await;
            let (_, rb) = hello(&peer, 9, b"nine").await;
            drop(a);
            (ra, rb)
        })
    });
    assert_eq!(out.0.unwrap(), b"seven");
    assert_eq!(out.1, Err(NetError::ConnectionReset));
}

/// An app's own admission policy: admits only even-numbered connections and records its
/// tickets' ends.
struct EveryOther {
    n: Cell<u32>,
    ended: Rc<Cell<u32>>,
}

struct Ticket(Rc<Cell<u32>>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

impl Admission for EveryOther {
    type Ticket = Ticket;
    fn admit(&self, _: &net::TcpStream) -> Option<Ticket> {
        self.n.set(self.n.get() + 1);
        (self.n.get() % 2 == 1).then(|| Ticket(self.ended.clone()))
    }
}

#[test]
fn a_custom_admission_decides_and_its_ticket_lives_as_long_as_the_connection_task() {
    let mut p = pair();
    let ended = Rc::new(Cell::new(0));
    let e2 = ended.clone();
    let out = p.run(move |sp, guest, peer| {
        Box::pin(async move {
            let adm = EveryOther {
                n: Cell::new(0),
                ended: e2.clone(),
            };
            let l = guest.tcp_listen(7, ListenConfig::default()).unwrap();
            sp.spawn(listen::serve(
                sp.clone(),
                l,
                adm,
                Overflow::Abort,
                |s, _t| echo_conn(s),
            ));
            let (a, ra) = hello(&peer, 7, b"a").await;
            let (_, rb) = hello(&peer, 7, b"b").await;
            let (c, rc) = hello(&peer, 7, b"c").await;
            let open_tickets_ended = e2.get();
            a.unwrap().close().await;
            c.unwrap().close().await;
            peer.sleep(500_000_000).await;
            (ra, rb, rc, open_tickets_ended)
        })
    });
    let (ra, rb, rc, open_tickets_ended) = out;
    assert_eq!(ra.unwrap(), b"a");
    assert_eq!(rb, Err(NetError::ConnectionReset));
    assert_eq!(rc.unwrap(), b"c");
    assert_eq!(
        open_tickets_ended, 0,
        "a ticket ended while its connection was open"
    );
    assert_eq!(ended.get(), 2);
}
