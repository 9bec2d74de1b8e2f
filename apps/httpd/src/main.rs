//! httpd: the static web server image. Serves the site baked in at build time (see the crate
//! doc: `HTTPD_WWW`) on TCP port 80 of the first vif (DHCP by default, or `ip=`/`gw=`), one task
//! per connection on xenrt's executor, until the toolstack shuts it down.
//!
//! Command line: `port=N` (default 80), `conns=N` most concurrent connections (default 256;
//! more get `503` and are closed), `idle=SECS` closes a connection that sends nothing (or takes
//! nothing) for that long (default 30), `log=warn` turns the per-request access log off (it is
//! at level info).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use core::cell::Cell;

use httpd::{Conn, Limits, Output, Site};
use netfront::{ListenConfig, Net, NetError, TcpStream};
use xen::cmdline::{validate, KeySpec};
use xen::exec::{timeout, Spawner};

const KEYS: &[KeySpec] = &[
    KeySpec {
        name: "port",
        help: "TCP port to serve on (default 80)",
        validate: validate::port,
    },
    KeySpec {
        name: "conns",
        help: "most concurrent connections (default 256)",
        validate: validate::port,
    },
    KeySpec {
        name: "idle",
        help: "seconds a connection may stay idle (default 30)",
        validate: validate::port,
    },
];

xen::main!(main, KEYS, netfront::stack::KEYS);

/// The site, built into the image.
static SITE: Site = Site::baked();

struct Settings {
    port: u16,
    conns: usize,
    idle_ns: u64,
}

fn main() -> Result<(), String> {
    let cmd = xen::boot::cmdline();
    let settings = Settings {
        port: cmd.parsed("port").unwrap_or(80),
        conns: cmd.parsed("conns").unwrap_or(256),
        idle_ns: cmd.parsed::<u64>("idle").unwrap_or(30) * 1_000_000_000,
    };
    let net = netfront::xen::up().map_err(|e| format!("httpd: {e}"))?;
    xen::exec::run(&[&net], |sp| serve(sp, net.clone(), settings))
}

async fn serve(sp: Spawner, net: Net, s: Settings) -> Result<(), String> {
    // Requests are small (the core buffers a header section up to its limit itself); responses
    // stream from the image. Many small sockets: a burst of clients finds a listening socket
    // ready (see netfront::gate) within a few MiB of memory.
    let config = ListenConfig {
        backlog: 64,
        rx_buffer: 2 * 1024,
        tx_buffer: 8 * 1024,
    };
    let mut listener = net
        .tcp_listen(s.port, config)
        .map_err(|e| format!("httpd: port {}: {e}", s.port))?;
    let addr = net.configured().await;
    xen::println!(
        "httpd: serving {} files ({} bytes) on http://{}:{}/",
        SITE.files().len(),
        SITE.total_bytes(),
        addr.address(),
        s.port
    );
    let live = Rc::new(Cell::new(0usize));
    loop {
        let mut stream = match listener.accept().await {
            Ok(st) => st,
            Err(e) => {
                log::warn!("httpd: accept: {e}");
                continue;
            }
        };
        if live.get() >= s.conns {
            log::warn!(
                "httpd: {} connections open: 503 to {:?}",
                s.conns,
                stream.peer()
            );
            sp.spawn(async move {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            });
            continue;
        }
        live.set(live.get() + 1);
        let (live, net, idle) = (live.clone(), net.clone(), s.idle_ns);
        sp.spawn(async move {
            if let Err(e) = connection(&mut stream, &net, idle).await {
                log::debug!("httpd: {:?}: {e}", stream.peer());
            }
            live.set(live.get() - 1);
        });
    }
}

/// Why a connection ended early.
enum End {
    Net(NetError),
    Idle,
}

impl core::fmt::Display for End {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            End::Net(e) => write!(f, "{e}"),
            End::Idle => f.write_str("idle timeout"),
        }
    }
}

/// Serves one connection: read, feed the protocol core, write what it queued (each wait bounded
/// by the idle timeout, so neither a silent nor a non-reading client holds a task forever).
async fn connection(s: &mut TcpStream, net: &Net, idle_ns: u64) -> Result<(), End> {
    let peer = s.peer();
    let mut conn = Conn::new(Limits::default());
    let mut out = Output::new();
    out.set_logging(log::log_enabled!(log::Level::Info));
    let mut buf = vec![0u8; 2048];
    let (mut start, mut end) = (0usize, 0usize);
    let mut eof = false;
    loop {
        // Offer what we hold (or nothing: resumes requests held back by a full output queue).
        let st = if start < end {
            conn.feed(&SITE, &buf[start..end], &mut out)
        } else if eof {
            conn.eof(&SITE, &mut out)
        } else {
            conn.feed(&SITE, &[], &mut out)
        };
        start += st.consumed;
        for r in out.drain_log() {
            match peer {
                Some(p) => log::info!("{} {r}", p.addr),
                None => log::info!("- {r}"),
            }
        }
        let mut wrote = false;
        while let Some(chunk) = out.front() {
            wrote = true;
            let n = timeout(net.sleep(idle_ns), s.write(chunk))
                .await
                .ok_or(End::Idle)?
                .map_err(End::Net)?;
            out.consume(n);
        }
        if st.close || conn.is_closed() {
            // Graceful close: queued data, then FIN (the drop of the stream).
            let _ = timeout(net.sleep(idle_ns), s.flush()).await;
            return Ok(());
        }
        if start < end {
            if st.consumed > 0 || wrote {
                continue; // more pipelined input to offer, now that there is room
            }
            // The core took nothing and had nothing to send: it cannot progress.
            return Ok(());
        }
        if eof {
            return Ok(());
        }
        let n = timeout(net.sleep(idle_ns), s.read(&mut buf))
            .await
            .ok_or(End::Idle)?
            .map_err(End::Net)?;
        (start, end) = (0, n);
        eof = n == 0;
    }
}
