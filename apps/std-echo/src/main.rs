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
