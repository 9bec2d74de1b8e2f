//! echo: the network services a test lab wants from a guest, on the first vif (DHCP by default;
//! `ip=ADDR/PREFIX gw=ADDR` for a static address):
//!
//! - TCP and UDP **echo** on port 7 (RFC 862);
//! - TCP **discard** on port 9 (RFC 863): reads and drops everything (throughput into the guest);
//! - TCP **source** on port 19: reads a decimal byte count ending in a newline, sends that many
//!   bytes, closes (throughput out of the guest).
//!
//! With `vifs=all` it serves on every vif (the first takes `ip=`..., the others DHCP).
//!
//! It prints `echo: ready on ADDR` once it has an address, then serves until the toolstack shuts
//! it down (`xl shutdown`). `conns=N` caps concurrent TCP connections (default 256).
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
use core::cell::Cell;
use core::future::Future;

use netfront::smoltcp::wire::{IpAddress, Ipv4Address};
use netfront::{ListenConfig, Net, TcpListener, TcpStream};
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

xen::main!(main, KEYS, netfront::stack::KEYS);

fn main() -> Result<(), String> {
    let cmd = xen::boot::cmdline();
    let limit = cmd.parsed::<usize>("conns").unwrap_or(256);
    // The first vif takes the command line's addresses; with vifs=all every other vif is
    // brought up too, with DHCP, and serves the same services.
    let mut nets = vec![netfront::xen::up().map_err(|e| format!("echo: {e}"))?];
    if cmd.get("vifs") == Some("all") {
        let vifs = netfront::xen::list().map_err(|e| format!("echo: {e}"))?;
        for node in vifs.iter().skip(1) {
            let net = netfront::xen::up_on(node, &netfront::IpConfig::default())
                .map_err(|e| format!("echo: {e}"))?;
            nets.push(net);
        }
    }
    let sources: alloc::vec::Vec<&dyn xen::exec::Source> =
        nets.iter().map(|n| n as &dyn xen::exec::Source).collect();
    let served = nets.clone();
    xen::exec::run(&sources, |sp| async move {
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
    let mut udp = net
        .udp_bind(7, 64, 1500)
        .map_err(|e| format!("echo: udp port 7: {e}"))?;
    let addr = net.configured().await;
    xen::boot::report_listening();
    xen::println!("echo: ready on {addr}: tcp+udp 7 echo, tcp 9 discard, tcp 19 source");
    let live = Rc::new(Cell::new(0usize));
    sp.spawn(accept_loop(sp.clone(), echo, live.clone(), limit, tcp_echo));
    sp.spawn(accept_loop(
        sp.clone(),
        discard,
        live.clone(),
        limit,
        tcp_discard,
    ));
    sp.spawn(accept_loop(sp.clone(), source, live, limit, tcp_source));
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

/// Accepts connections on `l` and runs `handler` on each as its own task, at most `limit` at
/// once (more are closed at once).
async fn accept_loop<F, Fut>(
    sp: Spawner,
    mut l: TcpListener,
    live: Rc<Cell<usize>>,
    limit: usize,
    handler: F,
) where
    F: Fn(TcpStream) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    loop {
        let s = match l.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("echo: accept on {}: {e}", l.port());
                continue;
            }
        };
        if live.get() >= limit {
            log::warn!("echo: {limit} connections open: refusing {:?}", s.peer());
            s.abort();
            continue;
        }
        live.set(live.get() + 1);
        let (live, fut) = (live.clone(), handler(s));
        sp.spawn(async move {
            fut.await;
            live.set(live.get() - 1);
        });
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
        xen::exec::timeout(net.sleep(200_000_000), core::future::pending::<()>()).await;
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
                xen::exec::timeout(net.sleep(1_000_000_000), core::future::pending::<()>()).await;
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
