//! std-echo: an event-driven TCP echo server on mio (crates.io, used unchanged): one
//! `mio::Poll`, a listener on port 7 (or the first argument), any number of connections at
//! once, non-blocking reads and writes; a connection whose write would block waits for
//! `WRITABLE` with what it still has to send. An ordinary std program: the same source runs on
//! Linux (`cargo run -p std-echo -- 7007`).
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);

/// A connection and the bytes it read but could not echo yet.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(7);
    let addr: SocketAddr = ([0, 0, 0, 0], port).into();
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("std-echo: listening on {}", listener.local_addr()?);
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next = 1;
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
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
