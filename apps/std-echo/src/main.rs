//! std-echo: an event-driven echo server on mio (crates.io, used unchanged), TCP and UDP on
//! the same port as the echo protocol has it (port 7, or the first argument): one
//! `mio::Poll`, a TCP listener and any number of connections at once, non-blocking reads and
//! writes (a connection whose write would block waits for `WRITABLE` with what it still has to
//! send), and a UDP socket that sends every datagram back to its sender (those it could not
//! send yet wait, in order, for `WRITABLE`). An ordinary std program: the same source runs on
//! Linux (`cargo run -p std-echo -- 7007`).
//!
//! `std-echo --resolve NAME...` instead looks each name up (`ToSocketAddrs`: getaddrinfo),
//! prints what it got, and exits; a thread counting 10 ms ticks meanwhile shows the look-up
//! waits without holding up the other threads.
//!
//! `std-echo --udp-check IP:PORT` instead runs std's blocking `UdpSocket` against a UDP echo
//! server there (ephemeral bind, a read timeout, peek, truncation, connect, the options std
//! offers) and prints each result, then `udp-check: all ok` (exit status 0) or the failures.
//!
//! `std-echo --tcp-check IP:PORT` does the same with std's blocking `TcpStream` as a client of
//! a TCP echo server there: a refused connection (the port after it is closed),
//! `connect_timeout`, the addresses, `TCP_NODELAY`, a read timeout, 256 KiB there and back,
//! `peek`, one thread blocked in `read` while another writes through a `try_clone`, and the end
//! of the stream after `shutdown(Write)`; then `tcp-check: all ok`.
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);
const UDP: Token = Token(1);

/// A connection and the bytes it read but could not echo yet.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// The UDP socket and the datagrams it could not send back yet.
struct Datagrams {
    socket: UdpSocket,
    pending: VecDeque<(Vec<u8>, SocketAddr)>,
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--resolve") {
        resolve(&args[1..]);
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("--udp-check") {
        let to: SocketAddr = args
            .get(1)
            .and_then(|a| a.parse().ok())
            .expect("--udp-check IP:PORT");
        let failed = udp_check(to);
        if failed > 0 {
            println!("udp-check: {failed} failed");
            std::process::exit(1);
        }
        println!("udp-check: all ok");
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("--tcp-check") {
        let to: SocketAddr = args
            .get(1)
            .and_then(|a| a.parse().ok())
            .expect("--tcp-check IP:PORT");
        let failed = tcp_check(to);
        if failed > 0 {
            println!("tcp-check: {failed} failed");
            std::process::exit(1);
        }
        println!("tcp-check: all ok");
        return Ok(());
    }
    let port: u16 = args.first().and_then(|a| a.parse().ok()).unwrap_or(7);
    let addr: SocketAddr = ([0, 0, 0, 0], port).into();
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut udp = Datagrams {
        socket: UdpSocket::bind(addr)?,
        pending: VecDeque::new(),
    };
    poll.registry()
        .register(&mut udp.socket, UDP, Interest::READABLE)?;
    println!(
        "std-echo: listening on {} (tcp) and {} (udp)",
        listener.local_addr()?,
        udp.socket.local_addr()?
    );
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next = 2;
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
            if ev.token() == UDP {
                let want = echo_datagrams(&mut udp, &mut buf);
                poll.registry().reregister(&mut udp.socket, UDP, want)?;
                continue;
            }
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let t = Token(next);
                            next += 1;
                            poll.registry()
                                .register(&mut stream, t, Interest::READABLE)?;
                            conns.insert(
                                t,
                                Conn {
                                    stream,
                                    pending: Vec::new(),
                                },
                            );
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("std-echo: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let t = ev.token();
            let Some(c) = conns.get_mut(&t) else { continue };
            let done = serve(c, &mut buf);
            let c = conns.get_mut(&t).expect("still there");
            if done {
                let _ = poll.registry().deregister(&mut c.stream);
                conns.remove(&t);
            } else {
                let want = if c.pending.is_empty() {
                    Interest::READABLE
                } else {
                    Interest::READABLE | Interest::WRITABLE
                };
                poll.registry().reregister(&mut c.stream, t, want)?;
            }
        }
    }
}

/// Sends back what waits, then every datagram queued, until receiving would block; returns
/// what to wait for next.
fn echo_datagrams(u: &mut Datagrams, buf: &mut [u8]) -> Interest {
    loop {
        while let Some((data, to)) = u.pending.front() {
            match u.socket.send_to(data, *to) {
                Ok(_) => {
                    u.pending.pop_front();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return Interest::READABLE | Interest::WRITABLE;
                }
                Err(e) => {
                    eprintln!("std-echo: udp send to {to}: {e}");
                    u.pending.pop_front();
                }
            }
        }
        match u.socket.recv_from(buf) {
            Ok((n, from)) => u.pending.push_back((buf[..n].to_vec(), from)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Interest::READABLE,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("std-echo: udp receive: {e}");
                return Interest::READABLE;
            }
        }
    }
}

/// Looks each name up and prints the addresses or the error, with the ticks another thread
/// counted meanwhile.
fn resolve(names: &[String]) {
    let stop = Arc::new(AtomicBool::new(false));
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = {
        let (stop, ticks) = (stop.clone(), ticks.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for name in names {
        let t0 = Instant::now();
        let before = ticks.load(Ordering::Relaxed);
        let r = (name.as_str(), 0).to_socket_addrs();
        let ms = t0.elapsed().as_millis();
        let during = ticks.load(Ordering::Relaxed) - before;
        match r {
            Ok(addrs) => {
                let ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                println!("std-echo: resolve {name} -> {ips:?} in {ms} ms ({during} ticks)");
            }
            Err(e) => println!("std-echo: resolve {name} failed in {ms} ms ({during} ticks): {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    ticker.join().expect("ticker");
}

/// std's blocking `TcpStream` as a client of the TCP echo server at `to`; returns how many
/// checks failed.
fn tcp_check(to: SocketAddr) -> usize {
    use std::net::{Shutdown, TcpStream};
    let mut failed = 0;
    let mut check = |what: &str, ok: bool, detail: String| {
        println!(
            "tcp-check: {what}: {} ({detail})",
            if ok { "ok" } else { "FAILED" }
        );
        failed += usize::from(!ok);
    };
    let closed = SocketAddr::new(to.ip(), to.port() + 1);
    let r = TcpStream::connect(closed);
    check(
        "a closed port refuses",
        matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
        format!("{:?}", r.map(|_| ())),
    );
    let s = match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            check("connect_timeout", false, format!("{e}"));
            return failed;
        }
    };
    let (peer, local) = (s.peer_addr().ok(), s.local_addr().ok());
    check(
        "addresses",
        peer == Some(to) && local.is_some_and(|l| l.port() != 0),
        format!("peer {peer:?} local {local:?}"),
    );
    let nd = s.set_nodelay(true).and_then(|_| s.nodelay());
    check("TCP_NODELAY", matches!(nd, Ok(true)), format!("{nd:?}"));
    let mut s = s;
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("set_read_timeout");
    let mut buf = [0u8; 64];
    let t0 = Instant::now();
    let r = s.read(&mut buf);
    let ms = t0.elapsed().as_millis();
    check(
        "read timeout",
        matches!(&r, Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut)
            && (250..5000).contains(&ms),
        format!("{r:?} after {ms} ms"),
    );
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set_read_timeout");
    let data: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    // Written by another thread while this one reads: neither may hold up the other.
    let mut w = s.try_clone().expect("try_clone");
    let out = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&out).map(|_| w));
    let mut back = vec![0u8; data.len()];
    let r = s.read_exact(&mut back);
    let w = writer.join().expect("writer");
    check(
        "256 KiB there and back (a thread writing, another reading)",
        r.is_ok() && w.is_ok() && back == data,
        format!("read {r:?}, write {:?}", w.as_ref().map(|_| ())),
    );
    let r = s
        .write_all(b"peek")
        .and_then(|_| s.peek(&mut buf[..4]))
        .and_then(|n| {
            let mut again = [0u8; 4];
            s.read_exact(&mut again).map(|_| (n, again))
        });
    check(
        "peek, then read the same bytes",
        matches!(&r, Ok((4, a)) if a == b"peek") && &buf[..4] == b"peek",
        format!("{r:?}"),
    );
    let r = s.shutdown(Shutdown::Write).and_then(|_| s.read(&mut buf));
    check(
        "end of stream after shutdown(Write)",
        matches!(r, Ok(0)),
        format!("{r:?}"),
    );
    failed
}

/// std's blocking `UdpSocket` against the echo server at `to`; returns how many checks failed.
fn udp_check(to: SocketAddr) -> usize {
    use std::net::UdpSocket;
    let mut failed = 0;
    let mut check = |what: &str, ok: bool, detail: String| {
        println!(
            "udp-check: {what}: {} ({detail})",
            if ok { "ok" } else { "FAILED" }
        );
        failed += usize::from(!ok);
    };
    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
    let local = s.local_addr().expect("local_addr");
    check("ephemeral port", local.port() >= 49152, format!("{local}"));
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("set_read_timeout");
    let mut buf = [0u8; 2048];
    let t0 = Instant::now();
    let r = s.recv_from(&mut buf);
    let ms = t0.elapsed().as_millis();
    check(
        "read timeout",
        matches!(&r, Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut)
            && (250..5000).contains(&ms),
        format!("{:?} after {ms} ms", r.map(|x| x.0)),
    );
    let msg: Vec<u8> = (0..100u8).collect();
    let sent = s.send_to(&msg, to);
    check("send_to", matches!(sent, Ok(100)), format!("{sent:?}"));
    let p = s.peek_from(&mut buf);
    check(
        "peek_from",
        matches!(&p, Ok((100, from)) if *from == to) && buf[..100] == msg[..],
        format!("{p:?}"),
    );
    let mut small = [0u8; 10];
    let r = s.recv_from(&mut small);
    check(
        "recv_from into 10 bytes",
        matches!(&r, Ok((10, _))) && small[..] == msg[..10],
        format!("{r:?}"),
    );
    s.set_nonblocking(true).expect("set_nonblocking");
    let r = s.recv_from(&mut buf);
    check(
        "the rest was discarded",
        matches!(&r, Err(e) if e.kind() == ErrorKind::WouldBlock),
        format!("{:?}", r.map(|x| x.0)),
    );
    s.set_nonblocking(false).expect("set_nonblocking");
    let c = s.connect(to);
    check(
        "connect",
        c.is_ok() && s.peer_addr().ok() == Some(to),
        format!("{c:?}"),
    );
    let r = s.send(b"connected").and_then(|_| s.recv(&mut buf));
    check(
        "send/recv connected",
        matches!(r, Ok(9)) && &buf[..9] == b"connected",
        format!("{r:?}"),
    );
    let r = s.send(&[0u8; 1473]);
    check(
        "a datagram larger than a frame is refused",
        r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(90),
        format!("{r:?}"),
    );
    let b = s.set_broadcast(true).and_then(|()| s.broadcast());
    check("SO_BROADCAST", matches!(b, Ok(true)), format!("{b:?}"));
    let t = s.set_ttl(5).and_then(|()| s.ttl());
    check("IP_TTL", matches!(t, Ok(5)), format!("{t:?}"));
    let m = s.join_multicast_v4(&"239.1.2.3".parse().unwrap(), &"0.0.0.0".parse().unwrap());
    check(
        "multicast is refused",
        m.as_ref().err().and_then(|e| e.raw_os_error()) == Some(92),
        format!("{m:?}"),
    );
    failed
}

/// Moves bytes for one ready connection: flushes what is pending, then reads and echoes until
/// it would block. True when the connection is over.
fn serve(c: &mut Conn, buf: &mut [u8]) -> bool {
    if !flush(c) {
        return true;
    }
    loop {
        if !c.pending.is_empty() {
            // Reading more before the peer takes what we owe it would only grow `pending`.
            return false;
        }
        match c.stream.read(buf) {
            Ok(0) => return true,
            Ok(n) => {
                c.pending.extend_from_slice(&buf[..n]);
                if !flush(c) {
                    return true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Writes what is pending until done or it would block; false if the connection failed.
fn flush(c: &mut Conn) -> bool {
    while !c.pending.is_empty() {
        match c.stream.write(&c.pending) {
            Ok(0) => return false,
            Ok(n) => {
                c.pending.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
