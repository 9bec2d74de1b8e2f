//! httpd: the static web server image. Serves the site baked in at build time (see the crate
//! doc: `HTTPD_WWW`) on TCP port 80 of the first vif (DHCP by default, or `ip=`/`gw=`), one task
//! per connection on xenrt's executor, until the toolstack shuts it down.
//!
//! Command line: `port=N` (default 80), `conns=N` most concurrent connections (default 256; at the
//! cap a newcomer is admitted on probation: once its first request head arrives, within 1 s, the
//! open connection that has made the least progress is reset in its favour, keep-alive ones idle
//! for over a second first, then the oldest unfinished request head), `header=SECS` the time a
//! request head may take to arrive whole (default 20; nginx's `client_header_timeout`, from the
//! accept for the first request, from the first byte for later ones; then `408` and close),
//! `idle=SECS` closes a connection that sends nothing (or takes nothing) for that long (default
//! 30), `stats=SECS` how often the figures in xenstore `data/xenrt/stats` are refreshed (default 5,
//! 0 turns them off; see `xen::stats`), `log=warn` turns the per-request access log off (it is at
//! level info). The policy is `httpd::guard`, host-tested.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::pin::pin;
use core::task::{Poll, Waker};

use httpd::guard::{
    Admit, Expiry, Id, Registry, Timeouts, Watch, PROBATION_NS, REQUEST_TIMEOUT, UNAVAILABLE,
};
use httpd::{Conn, Limits, Output, Site};
use net::listen::{self, Overflow};
use net::{ListenConfig, Net, NetError, TcpStream};
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
    KeySpec {
        name: "header",
        help: "seconds a request head may take to arrive whole (default 20)",
        validate: validate::port,
    },
    KeySpec {
        name: "stats",
        help: "seconds between updates of xenstore data/xenrt/stats (default 5, 0: off)",
        validate: validate::number,
    },
];

xen::main!(main, KEYS, net::stack::KEYS);

const SEC: u64 = 1_000_000_000;

/// The site, built into the image.
static SITE: Site = Site::baked();

struct Settings {
    port: u16,
    conns: usize,
    timeouts: Timeouts,
    stats_ns: u64,
}

fn main() -> Result<(), String> {
    let cmd = xen::boot::cmdline();
    let settings = Settings {
        port: cmd.parsed("port").unwrap_or(80),
        conns: cmd.parsed("conns").unwrap_or(256),
        timeouts: Timeouts {
            header_ns: cmd.parsed::<u64>("header").unwrap_or(20) * SEC,
            idle_ns: cmd.parsed::<u64>("idle").unwrap_or(30) * SEC,
        },
        stats_ns: cmd.parsed::<u64>("stats").unwrap_or(5) * SEC,
    };
    let net = net::xen::up().map_err(|e| format!("httpd: {e}"))?;
    xen::exec::run(&[&net], |sp| serve(sp, net.clone(), settings))
}

/// Tells a connection's task to stop (it was shed to make room for a newcomer).
#[derive(Default)]
struct Stop {
    stopped: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Stop {
    fn stop(&self) {
        self.stopped.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// What the server counts, for the stats node.
#[derive(Default)]
struct Counters {
    shed: Cell<u64>,
    refused: Cell<u64>,
    header_timeouts: Cell<u64>,
}

type Conns = Rc<RefCell<Registry<Rc<Stop>>>>;

async fn serve(sp: Spawner, net: Net, s: Settings) -> Result<(), String> {
    // Requests are small (the core buffers a header section up to its limit itself); responses
    // stream from the image. Many small sockets: a burst of clients finds a listening socket
    // ready (see net::gate) within a few MiB of memory.
    let config = ListenConfig {
        backlog: 64,
        rx_buffer: 2 * 1024,
        tx_buffer: 8 * 1024,
    };
    let listener = net
        .tcp_listen(s.port, config)
        .map_err(|e| format!("httpd: port {}: {e}", s.port))?;
    let addr = net::xen::ready("httpd", &net, &[s.port]).await;
    xen::println!(
        "httpd: serving {} files ({} bytes) on http://{}:{}/",
        SITE.files().len(),
        SITE.total_bytes(),
        addr.address(),
        s.port
    );
    // 32 probation places: room for a burst of newcomers at the cap.
    let conns: Conns = Rc::new(RefCell::new(Registry::new(s.conns, 32)));
    let counters = Rc::new(Counters::default());
    if s.stats_ns > 0 {
        let (conns, counters) = (conns.clone(), counters.clone());
        sp.spawn(net::xen::publish_stats(net.clone(), s.stats_ns, move |l| {
            l.add("conns", conns.borrow().len() as u64);
            l.add("shed", counters.shed.get());
            l.add("refused", counters.refused.get());
            l.add("header_timeouts", counters.header_timeouts.get());
        }));
    }
    let admission = Admission {
        conns: conns.clone(),
        counters: counters.clone(),
        cap: s.conns,
        net: net.clone(),
    };
    let busy = Overflow::Answer {
        bytes: UNAVAILABLE,
        within_ns: SEC,
    };
    let t = s.timeouts;
    listen::serve(sp, listener, admission, busy, move |mut stream, ticket| {
        let (conns, counters, net) = (conns.clone(), counters.clone(), net.clone());
        async move {
            let c = Ctx {
                net: &net,
                conns: &conns,
                counters: &counters,
                id: ticket.id,
                stop: &ticket.stop,
            };
            match connection(&mut stream, &c, t, ticket.probation).await {
                Ok(()) => {}
                // Already out of the registry.
                Err(End::Shed) => stream.abort(),
                Err(End::Header) => {
                    counters
                        .header_timeouts
                        .set(counters.header_timeouts.get() + 1);
                    match stream.peer() {
                        Some(p) => log::info!("{} - 408 request head not complete in time", p.addr),
                        None => log::info!("- - 408 request head not complete in time"),
                    }
                    let _ = timeout(net.sleep(SEC), stream.write_all(REQUEST_TIMEOUT)).await;
                }
                Err(e) => log::debug!("httpd: {:?}: {e}", stream.peer()),
            }
        }
    })
    .await;
    Ok(())
}

/// httpd's admission at the connection cap (see the module doc): a newcomer over the cap is
/// admitted on probation, shedding the oldest probationer when every probation place is taken;
/// with none to shed it gets a 503 (`listen::Overflow`).
struct Admission {
    conns: Conns,
    counters: Rc<Counters>,
    cap: usize,
    net: Net,
}

/// An admitted connection's place in the registry, removed when its task ends.
struct Ticket {
    conns: Conns,
    id: Id,
    probation: bool,
    stop: Rc<Stop>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // A shed connection is gone already (then this removes nothing).
        self.conns.borrow_mut().remove(self.id);
    }
}

impl listen::Admission for Admission {
    type Ticket = Ticket;
    fn admit(&self, stream: &TcpStream) -> Option<Ticket> {
        let stop = Rc::new(Stop::default());
        let admitted = self
            .conns
            .borrow_mut()
            .admit(stop.clone(), self.net.now_ns());
        let (id, probation) = match admitted {
            Admit::Open(id) => (id, false),
            Admit::Probation(id) => (id, true),
            Admit::Shed(id, victim) => {
                // Every probation place was taken: the oldest probationer makes room.
                self.counters.shed.set(self.counters.shed.get() + 1);
                victim.stop();
                (id, true)
            }
            Admit::Full(_) => {
                self.counters.refused.set(self.counters.refused.get() + 1);
                log::warn!(
                    "httpd: {} connections open: 503 to {:?}",
                    self.cap,
                    stream.peer()
                );
                return None;
            }
        };
        Some(Ticket {
            conns: self.conns.clone(),
            id,
            probation,
            stop,
        })
    }
}

/// What a connection's task needs besides its stream.
struct Ctx<'a> {
    net: &'a Net,
    conns: &'a Conns,
    counters: &'a Counters,
    id: Id,
    stop: &'a Stop,
}

/// Why a connection ended early.
enum End {
    Net(NetError),
    Idle,
    Header,
    Shed,
}

impl core::fmt::Display for End {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            End::Net(e) => write!(f, "{e}"),
            End::Idle => f.write_str("idle timeout"),
            End::Header => f.write_str("request head timeout"),
            End::Shed => f.write_str("shed at the connection cap"),
        }
    }
}

impl Ctx<'_> {
    /// Runs `fut` for at most `ns` (then `expiry`), or until the connection is shed.
    async fn bounded<F: Future>(&self, ns: u64, expiry: End, fut: F) -> Result<F::Output, End> {
        let mut fut = pin!(fut);
        let stoppable = core::future::poll_fn(|cx| {
            if self.stop.stopped.get() {
                return Poll::Ready(None);
            }
            match fut.as_mut().poll(cx) {
                Poll::Ready(v) => Poll::Ready(Some(v)),
                Poll::Pending => {
                    *self.stop.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        });
        match timeout(self.net.sleep(ns), stoppable).await {
            None => Err(expiry),
            Some(None) => Err(End::Shed),
            Some(Some(v)) => Ok(v),
        }
    }

    /// Tells the registry what the connection does; stops the one it sheds in our favour.
    fn note(&self, w: &Watch) {
        let shed = self
            .conns
            .borrow_mut()
            .set(self.id, w.standing(), self.net.now_ns());
        if let Some(victim) = shed {
            self.counters.shed.set(self.counters.shed.get() + 1);
            victim.stop();
        }
    }
}

/// Serves one connection: read, feed the protocol core, write what it queued. Each wait is
/// bounded by the idle timeout, and waits for a request head by its deadline too (see
/// `httpd::guard`), so neither a silent, a dribbling nor a non-reading client holds a task
/// forever; a shed connection ends at its next wait. A connection admitted on `probation` (at
/// the cap) has `httpd::guard::PROBATION_NS` for its first request head.
async fn connection(
    s: &mut TcpStream,
    c: &Ctx<'_>,
    t: Timeouts,
    mut probation: bool,
) -> Result<(), End> {
    let peer = s.peer();
    let mut conn = Conn::new(Limits::default());
    let mut out = Output::new();
    out.set_logging(log::log_enabled!(log::Level::Info));
    let first = Timeouts {
        header_ns: if probation {
            t.header_ns.min(PROBATION_NS)
        } else {
            t.header_ns
        },
        ..t
    };
    let mut watch = Watch::new(first, c.net.now_ns());
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
        watch.update(&conn, !out.is_empty(), c.net.now_ns());
        c.note(&watch);
        if probation && conn.requests() > 0 {
            probation = false;
            watch.set_timeouts(t);
        }
        let mut wrote = false;
        while let Some(chunk) = out.front() {
            wrote = true;
            let n = c
                .bounded(t.idle_ns, End::Idle, s.write(chunk))
                .await?
                .map_err(End::Net)?;
            out.consume(n);
        }
        if wrote {
            watch.update(&conn, false, c.net.now_ns());
            c.note(&watch);
        }
        if st.close || conn.is_closed() {
            // Graceful close: queued data, then FIN (the drop of the stream).
            let _ = c.bounded(t.idle_ns, End::Idle, s.flush()).await;
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
        let (ns, expiry) = watch.wait(c.net.now_ns());
        let expiry = match expiry {
            Expiry::Header => End::Header,
            Expiry::Idle => End::Idle,
        };
        let n = c
            .bounded(ns, expiry, s.read(&mut buf))
            .await?
            .map_err(End::Net)?;
        (start, end) = (0, n);
        eof = n == 0;
    }
}
