//! echo: the network services a test lab wants from a guest, on the first vif (DHCP by default;
//! `ip=ADDR/PREFIX gw=ADDR` for a static address):
//!
//! - TCP and UDP **echo** on port 7 (RFC 862);
//! - TCP **discard** on port 9 (RFC 863): reads and drops everything (throughput into the guest);
//! - TCP **source** on port 19: reads a decimal byte count ending in a newline, sends that many
//!   bytes, closes (throughput out of the guest);
//! - an **iperf3** server on TCP port 5201 (`iperf3 -c GUEST`, `-R`, `-P N`, `--bidir`; TCP
//!   only, one test at a time): the protocol is `echo::iperf`'s state machine, host-tested; here
//!   its connections are tasks: each new connection's cookie is read and handed to it, the control
//!   connection's bytes go through it, and each data stream reads (and counts) or writes from a
//!   fixed buffer for as long as it says. One console line per test (`echo: iperf ...`).
//!
//! With `vifs=all` it serves on every vif (the first takes `ip=`..., the others DHCP).
//!
//! It prints `echo: ready on ADDR` once it has an address, then serves until the toolstack shuts
//! it down (`xl shutdown`). `conns=N` caps concurrent TCP connections (default 256). The first
//! vif's figures (`sockets=` ...) are in xenstore `data/xenrt/stats`, refreshed every
//! `stats=SECS` (default 5, 0: off; see `xen::stats`).
//!
//! For tests it can also be a client: `ping=ADDR` pings ADDR three times (`echo: ping ...`
//! lines), `peer=ADDR` sends 64 KiB through ADDR's TCP echo and checks what comes back
//! (`echo: peer ADDR ok` or `... failed: why`), `resolve=NAME` looks NAME up in DNS
//! (`echo: resolve NAME -> [addresses]`).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use echo::iperf::{self, Admit, Dir, End, Out, Server, StreamCmd, TestId, COOKIE_SIZE};

use net::listen::{self, Cap, Overflow::Abort};
use net::smoltcp::wire::{IpAddress, Ipv4Address};
use net::{ListenConfig, Net, NetError, TcpStream};
use xen::cmdline::{validate, KeySpec};
use xen::exec::Spawner;

const KEYS: &[KeySpec] = &[
    KeySpec {
        name: "vifs",
        help: "all: serve on every vif (default: the first)",
        validate: |v| (v == "all").then_some(()).ok_or("expected all"),
    },
    KeySpec {
        name: "conns",
        help: "most concurrent TCP connections (default 256)",
        validate: validate::port,
    },
    KeySpec {
        name: "stats",
        help: "seconds between updates of xenstore data/xenrt/stats (default 5, 0: off)",
        validate: validate::number,
    },
    KeySpec {
        name: "ping",
        help: "IPv4 address to ping three times once up",
        validate: validate::ipv4,
    },
    KeySpec {
        name: "resolve",
        help: "a name to look up (DNS, A record) once up",
        validate: validate::non_empty,
    },
    KeySpec {
        name: "peer",
        help: "IPv4 address of another echo server to exchange 64 KiB with once up",
        validate: validate::ipv4,
    },
];

xen::main!(main, KEYS, net::stack::KEYS);

fn main() -> Result<(), String> {
    let cmd = xen::boot::cmdline();
    let limit = cmd.parsed::<usize>("conns").unwrap_or(256);
    // The first vif takes the command line's addresses; with vifs=all every other vif is
    // brought up too, with DHCP, and serves the same services.
    let mut nets = vec![net::xen::up().map_err(|e| format!("echo: {e}"))?];
    if cmd.get("vifs") == Some("all") {
        let vifs = netfront::xen::list().map_err(|e| format!("echo: {e}"))?;
        for node in vifs.iter().skip(1) {
            let net = net::xen::up_on(node, &net::IpConfig::default())
                .map_err(|e| format!("echo: {e}"))?;
            nets.push(net);
        }
    }
    let sources: alloc::vec::Vec<&dyn xen::exec::Source> =
        nets.iter().map(|n| n as &dyn xen::exec::Source).collect();
    let served = nets.clone();
    let stats_ns = cmd.parsed::<u64>("stats").unwrap_or(5) * 1_000_000_000;
    xen::exec::run(&sources, |sp| async move {
        if stats_ns > 0 {
            // The first vif's figures (sockets alive, ...) in xenstore data/xenrt/stats.
            sp.spawn(net::xen::publish_stats(served[0].clone(), stats_ns, |_| {}));
        }
        let tasks: alloc::vec::Vec<_> = served
            .iter()
            .map(|n| sp.spawn(serve(sp.clone(), n.clone(), limit)))
            .collect();
        for t in tasks {
            t.await?;
        }
        Ok(())
    })
}

/// Socket buffer (each way) of an iperf3 stream.
const PERF_BUFFER: usize = 256 * 1024;

async fn serve(sp: Spawner, net: Net, limit: usize) -> Result<(), String> {
    let small = ListenConfig {
        backlog: 16,
        rx_buffer: 16 * 1024,
        tx_buffer: 16 * 1024,
    };
    let bulk = ListenConfig {
        backlog: 4,
        rx_buffer: 64 * 1024,
        tx_buffer: 64 * 1024,
    };
    let listen = |port, cfg| {
        net.tcp_listen(port, cfg)
            .map_err(|e| format!("echo: tcp port {port}: {e}"))
    };
    let (echo, discard, source) = (listen(7, small)?, listen(9, bulk)?, listen(19, bulk)?);
    // The control connection and the data streams of iperf3 share the port. A stream can have
    // no more in flight than its socket's buffer: 256 KiB each way (64 KiB capped one stream
    // near 130 Mbit/s at the lab's RTT; 256 KiB measured 400-535 Mbit/s dom0 -> guest).
    let perf_cfg = ListenConfig {
        backlog: 2,
        rx_buffer: PERF_BUFFER,
        tx_buffer: PERF_BUFFER,
    };
    let perf = listen(iperf::PORT, perf_cfg)?;
    let mut udp = net
        .udp_bind(7, 64, 1500)
        .map_err(|e| format!("echo: udp port 7: {e}"))?;
    let addr = net::xen::ready("echo", &net, &[7, 9, 19, iperf::PORT]).await;
    xen::println!(
        "echo: ready on {addr}: tcp+udp 7 echo, tcp 9 discard, tcp 19 source, tcp {} iperf3",
        iperf::PORT
    );
    // At most `limit` TCP connections over all the ports; more are reset at once.
    let cap = Cap::new(limit);
    let spc = || sp.clone();
    sp.spawn(listen::serve(spc(), echo, cap.clone(), Abort, |s, _| {
        tcp_echo(s)
    }));
    sp.spawn(listen::serve(spc(), discard, cap.clone(), Abort, |s, _| {
        tcp_discard(s)
    }));
    sp.spawn(listen::serve(spc(), source, cap.clone(), Abort, |s, _| {
        tcp_source(s)
    }));
    // As many parallel streams as memory allows once everything above is allocated: each
    // accepted stream costs its buffers and the listening socket that replaces it; 1 MiB stays
    // for everything else. More asked for gets iperf3's "No buffer space available".
    let mem = xen::stats::memory();
    let avail = mem.heap_free + mem.frames_free * 4096;
    let per_stream = 2 * 2 * PERF_BUFFER + 16 * 1024;
    let max_streams = (avail.saturating_sub(1 << 20) / per_stream).clamp(1, 16);
    xen::println!("echo: iperf3 takes up to {max_streams} parallel streams in this memory");
    let perf_server = Rc::new(Iperf::new(net.clone(), max_streams));
    sp.spawn(listen::serve(spc(), perf, cap, Abort, move |s, _| {
        iperf_conn(perf_server.clone(), s)
    }));
    let cmd = xen::boot::cmdline();
    if let Some(a) = cmd.parsed::<Ipv4Address>("ping") {
        sp.spawn(ping(net.clone(), a));
    }
    if let Some(name) = cmd.get("resolve") {
        match net.resolve(name, 5_000_000_000).await {
            Ok(addrs) => {
                let list: alloc::vec::Vec<String> = addrs.iter().map(|a| format!("{a}")).collect();
                xen::println!("echo: resolve {name} -> [{}]", list.join(", "))
            }
            Err(e) => xen::println!("echo: resolve {name} failed: {e}"),
        }
    }
    if let Some(a) = cmd.parsed::<Ipv4Address>("peer") {
        sp.spawn(peer(net.clone(), a));
    }
    let mut buf = vec![0u8; 1500];
    loop {
        match udp.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if let Err(e) = udp.send_to(&buf[..n], from).await {
                    log::debug!("echo: udp reply to {from}: {e}");
                }
            }
            Err(e) => log::debug!("echo: udp: {e}"),
        }
    }
}

async fn tcp_echo(mut s: TcpStream) {
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

async fn tcp_discard(mut s: TcpStream) {
    let mut buf = vec![0u8; 16384];
    while let Ok(1..) = s.read(&mut buf).await {}
}

async fn tcp_source(mut s: TcpStream) {
    // The request: up to 20 digits and a newline.
    let mut line = [0u8; 24];
    let mut len = 0;
    let count = loop {
        match s.read(&mut line[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        if let Some(end) = line[..len].iter().position(|&b| b == b'\n') {
            match core::str::from_utf8(&line[..end])
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
            {
                Some(c) => break c,
                None => {
                    let _ = s.write_all(b"expected a byte count and a newline\n").await;
                    return;
                }
            }
        }
        if len == line.len() {
            let _ = s.write_all(b"expected a byte count and a newline\n").await;
            return;
        }
    };
    let chunk: alloc::vec::Vec<u8> = (0..16384u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut left = count;
    while left > 0 {
        let n = (left as usize).min(chunk.len());
        if s.write_all(&chunk[..n]).await.is_err() {
            return;
        }
        left -= n as u64;
    }
    let _ = s.flush().await;
}

async fn ping(net: Net, addr: Ipv4Address) {
    for seq in 1..=3 {
        match net.ping(addr, seq, 2_000_000_000).await {
            Ok(rtt) => xen::println!("echo: ping {addr} seq={seq} rtt={} us", rtt / 1000),
            Err(e) => xen::println!("echo: ping {addr} seq={seq} failed: {e}"),
        }
        net.sleep(200_000_000).await;
    }
}

/// Exchanges 64 KiB with the echo server at `addr` (retrying the connection for 60 s while the
/// peer boots).
async fn peer(net: Net, addr: Ipv4Address) {
    let msg: alloc::vec::Vec<u8> = (0..65536u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut tries = 0;
    let mut s = loop {
        match net
            .tcp_connect(IpAddress::Ipv4(addr), 7, 16384, 16384)
            .await
        {
            Ok(s) => break s,
            Err(e) if tries < 60 => {
                log::debug!("echo: peer {addr}: {e}, retrying");
                tries += 1;
                net.sleep(1_000_000_000).await;
            }
            Err(e) => {
                xen::println!("echo: peer {addr} failed: {e}");
                return;
            }
        }
    };
    let mut got = alloc::vec::Vec::with_capacity(msg.len());
    let mut buf = vec![0u8; 8192];
    let mut sent = 0;
    while got.len() < msg.len() {
        if sent < msg.len() {
            match s.write(&msg[sent..]).await {
                Ok(n) => sent += n,
                Err(e) => return xen::println!("echo: peer {addr} failed: {e}"),
            }
        }
        while s.recv_queue() > 0 || (sent == msg.len() && got.len() < msg.len()) {
            match s.read(&mut buf).await {
                Ok(0) => return xen::println!("echo: peer {addr} failed: closed early"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return xen::println!("echo: peer {addr} failed: {e}"),
            }
        }
    }
    if got == msg {
        xen::println!("echo: peer {addr} ok {} bytes", got.len());
    } else {
        xen::println!("echo: peer {addr} failed: echoed bytes differ");
    }
}

/// How long a new iperf3 connection may take to send its cookie.
const COOKIE_NS: u64 = 10_000_000_000;
/// How long a write to an iperf3 control connection may wait for room.
const CONTROL_WRITE_NS: u64 = 10_000_000_000;

/// The iperf3 server shared by the tasks of its connections, with a change counter they wait on
/// (a stream arrived, a test started or ended).
struct Iperf {
    net: Net,
    sm: RefCell<Server>,
    generation: Cell<u64>,
    waiting: RefCell<Vec<Waker>>,
    /// What sending streams send.
    chunk: Vec<u8>,
}

impl Iperf {
    fn new(net: Net, max_streams: usize) -> Self {
        Iperf {
            net,
            sm: RefCell::new(Server::new(iperf::Limits {
                max_streams,
                ..iperf::Limits::default()
            })),
            generation: Cell::new(0),
            waiting: RefCell::new(Vec::new()),
            chunk: (0..iperf::SEND_CHUNK as u32)
                .map(|i| b'0' + (i % 10) as u8)
                .collect(),
        }
    }

    /// Wakes every task waiting for a change.
    fn changed(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiting = core::mem::take(&mut *self.waiting.borrow_mut());
        for w in waiting {
            w.wake();
        }
    }

    /// Completes at the first change after generation `since`.
    fn poll_changed(&self, since: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.generation.get() != since {
            return Poll::Ready(());
        }
        let mut w = self.waiting.borrow_mut();
        if !w.iter().any(|x| x.will_wake(cx.waker())) {
            w.push(cx.waker().clone());
        }
        Poll::Pending
    }

    async fn changed_since(&self, since: u64) {
        poll_fn(|cx| self.poll_changed(since, cx)).await
    }
}

enum Either<A, B> {
    A(A),
    B(B),
}

/// Runs `a` and `b` until one completes (`a` first).
async fn either<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::A(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::B(v));
        }
        Poll::Pending
    })
    .await
}

async fn read_exact(s: &mut TcpStream, mut buf: &mut [u8]) -> Result<(), NetError> {
    while !buf.is_empty() {
        match s.read(buf).await? {
            0 => return Err(NetError::Closed),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

/// A new connection to the iperf3 port: its cookie decides what it is.
async fn iperf_conn(ip: Rc<Iperf>, mut s: TcpStream) {
    let wants = ip.sm.borrow().wants_cookie();
    let admit = if wants {
        let mut cookie = [0u8; COOKIE_SIZE];
        match xen::exec::timeout(ip.net.sleep(COOKIE_NS), read_exact(&mut s, &mut cookie)).await {
            Some(Ok(())) => {}
            _ => return, // silent or gone: closed
        }
        let now = ip.net.now_ns();
        let a = ip.sm.borrow_mut().admit(&cookie, now);
        ip.changed();
        a
    } else {
        // Busy: refused at once, nothing read (as iperf3 does).
        Admit::Deny
    };
    match admit {
        Admit::Deny => {
            log::info!("echo: iperf: {:?} denied (a test is running)", s.peer());
            // Closing sends the queued byte, then FIN.
            let _ = xen::exec::timeout(
                ip.net.sleep(CONTROL_WRITE_NS),
                s.write_all(&iperf::denial()),
            )
            .await;
        }
        Admit::Control(id) => iperf_control(&ip, s, id).await,
        Admit::Stream { test, index, dir } => iperf_stream(&ip, s, test, index, dir).await,
    }
}

/// Drives the control connection of test `id` until the test ends.
async fn iperf_control(ip: &Iperf, mut s: TcpStream, id: TestId) {
    let peer = s.peer();
    let mut buf = vec![0u8; 4096];
    let mut out = Out {
        send: ip.sm.borrow().greeting().to_vec(),
        end: None,
    };
    loop {
        if !out.send.is_empty() {
            let wrote =
                xen::exec::timeout(ip.net.sleep(CONTROL_WRITE_NS), s.write_all(&out.send)).await;
            if !matches!(wrote, Some(Ok(()))) && out.end.is_none() {
                out = ip.sm.borrow_mut().control_closed(id, ip.net.now_ns());
                out.send.clear();
                ip.changed();
            }
        }
        if let Some(end) = out.end {
            report(peer, id, &end);
            // Dropping `s` sends what is queued, then FIN.
            return;
        }
        let since = ip.generation.get();
        let now = ip.net.now_ns();
        let wait = ip
            .sm
            .borrow()
            .next_deadline(id)
            .map_or(0, |d| d.saturating_sub(now));
        let ev = either(
            s.read(&mut buf),
            either(ip.changed_since(since), ip.net.sleep(wait)),
        )
        .await;
        let now = ip.net.now_ns();
        out = {
            let mut sm = ip.sm.borrow_mut();
            match ev {
                Either::A(Ok(0)) | Either::A(Err(_)) => sm.control_closed(id, now),
                Either::A(Ok(n)) => sm.control_input(id, &buf[..n], now),
                Either::B(_) => sm.poll_control(id, now),
            }
        };
        ip.changed();
    }
}

/// Runs data stream `index` of test `id`: waits for the test to start, then reads and counts
/// (or writes) until the test says stop or the connection ends.
async fn iperf_stream(ip: &Iperf, mut s: TcpStream, id: TestId, index: usize, dir: Dir) {
    loop {
        let since = ip.generation.get();
        match ip.sm.borrow().stream_cmd(id, index) {
            StreamCmd::Run => break,
            StreamCmd::Stop => return,
            StreamCmd::Wait => {}
        }
        ip.changed_since(since).await;
    }
    let len = ip
        .sm
        .borrow()
        .params(id)
        .map_or(iperf::SEND_CHUNK, |p| p.len);
    let mut buf = match dir {
        Dir::Receive => vec![0u8; 16384],
        Dir::Send => Vec::new(),
    };
    loop {
        let since = ip.generation.get();
        let moved = match dir {
            Dir::Receive => either(s.read(&mut buf), ip.changed_since(since)).await,
            Dir::Send => either(s.write(&ip.chunk[..len]), ip.changed_since(since)).await,
        };
        let cmd = match moved {
            Either::A(Ok(n @ 1..)) => {
                ip.sm
                    .borrow_mut()
                    .stream_bytes(id, index, n, ip.net.now_ns())
            }
            // The client closed or reset this stream: it is over; the test goes on.
            Either::A(_) => return,
            Either::B(()) => ip.sm.borrow().stream_cmd(id, index),
        };
        if cmd != StreamCmd::Run {
            // Dropping `s` closes it (FIN after what is queued), as iperf3 closes its streams.
            return;
        }
    }
}

/// The console line for a test that ended.
fn report(peer: Option<net::smoltcp::wire::IpEndpoint>, id: TestId, end: &End) {
    let who = match peer {
        Some(p) => format!("{p}"),
        None => String::from("?"),
    };
    match end {
        End::Done(s) => {
            let mut parts = Vec::new();
            if s.received > 0 || s.sent == 0 {
                parts.push(format!(
                    "received {} bytes ({})",
                    s.received,
                    iperf::rate(s.received, s.ns)
                ));
            }
            if s.sent > 0 {
                parts.push(format!(
                    "sent {} bytes ({})",
                    s.sent,
                    iperf::rate(s.sent, s.ns)
                ));
            }
            xen::println!(
                "echo: iperf {who} test {id} done: {} stream{}, {} in {} s",
                s.streams,
                if s.streams == 1 { "" } else { "s" },
                parts.join(", "),
                iperf::secs2(s.ns)
            );
        }
        End::ClientGone(why) => xen::println!("echo: iperf {who} test {id}: client {why}"),
        End::Refused(why) => xen::println!("echo: iperf {who} test {id} refused: {why}"),
        End::Protocol(why) => xen::println!("echo: iperf {who} test {id}: protocol error: {why}"),
        End::TimedOut(what) => xen::println!("echo: iperf {who} test {id}: timed out {what}"),
    }
}
