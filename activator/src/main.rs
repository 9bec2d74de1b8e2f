//! xenrt-activator: boot on demand for Xen dom0. A service's guest is started when the first
//! request for it arrives — a TCP SYN to the service address, or a DNS query for its name — and
//! stopped (or parked again) when it has been idle for its timeout: scale to zero.
//!
//! How a request reaches a guest that does not exist yet, without a proxy: the activator owns a
//! TAP port on the guests' bridge ([`tap`]) with MAC learning off. While no guest serves an
//! address, the activator answers ARP for it with the service's MAC; frames to that MAC are then
//! flooded by the bridge and reach the TAP. The first SYN starts the guest (`xl create`, or
//! `xl unpause` of a parked or pre-booted one); the SYNs that arrive meanwhile are kept, and
//! written back onto the bridge the moment the guest says it listens (the xenstore node
//! `data/xenrt/ready`, or a console line for other guests), so the client's first SYN is answered
//! without waiting for its retransmit. From then on the bridge has learned the guest's MAC and
//! forwards straight to its vif. A start that fails (the guest ends or does not get ready in
//! `boot_timeout`) refuses the waiting clients with a RST, logs why (the guest's last console
//! lines) and backs off (1 s, doubling to 60 s), refusing at once until then.
//!
//! ```text
//! xenrt-activator CONFIG          serve (see config.rs for the file)
//! xenrt-activator --check CONFIG  parse CONFIG, print the services, exit 0 (2 on an error)
//! xenrt-activator online|offline  with XENBUS_PATH=backend/vif/..: a vif hotplug script (hotplug.rs)
//! ```
//!
//! Runs as root in dom0: it needs `/dev/net/tun`, the bridge, xenstored and `xl`. Built as a static
//! Linux binary (`x86_64-unknown-linux-musl`) so it runs in any dom0, a busybox one included.

mod config;
mod dns;
mod frame;
mod hotplug;
mod sys;
mod tap;
mod xl;
mod xs;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use config::{Config, Mode, Ready, Service};
use frame::{Seen, Syn};

/// Messages to the loop.
enum Msg {
    Frame(Vec<u8>),
    Dns(Vec<u8>, SocketAddr),
    Watch(xs::Event),
    /// A start worker finished: the domain exists (created or unpaused) as `domid`.
    Running {
        svc: usize,
        gen: u64,
        domid: u32,
    },
    /// A start worker failed.
    StartFailed {
        svc: usize,
        gen: u64,
        why: String,
    },
    /// The console of `gen`'s domain showed the ready text.
    ConsoleReady {
        svc: usize,
        gen: u64,
    },
    /// A spare (parked or pre-booted) domain is ready to be taken.
    SpareReady {
        svc: usize,
        domid: u32,
        domain: String,
    },
    SpareFailed {
        svc: usize,
        why: String,
    },
    /// A service's image is saved (`mode = restore`): `domain` is the name it restores as.
    SpareSaved {
        svc: usize,
        file: String,
        domain: String,
    },
    /// A stop's `xl destroy` (after the shutdown took too long) finished.
    Stopped {
        svc: usize,
    },
}

/// How a start brings the guest up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Create,
    UnpauseParked,
    UnpausePreboot,
    Restore,
}

impl How {
    fn describe(self) -> &'static str {
        match self {
            How::Create => "xl create",
            How::UnpauseParked => "unpausing the parked domain",
            How::UnpausePreboot => "unpausing the pre-booted guest",
            How::Restore => "xl restore of the saved image",
        }
    }
}

/// The xenstore node where a xenrt guest says it serves ([`xen::stats::READY_NODE`]).
fn ready_path(domid: u32) -> String {
    format!("/local/domain/{domid}/{}", xen::stats::READY_NODE)
}

enum State {
    Down,
    Starting {
        gen: u64,
        since: Instant,
        domain: String,
        domid: Option<u32>,
        how: How,
        /// The length of the domain's console log when the start began.
        console_from: u64,
    },
    Up {
        domid: u32,
        domain: String,
        /// The vif's received-packet count at the last look, when nothing had come since
        /// `quiet_since`; the next look is at `look_at`.
        rx: u64,
        quiet_since: Instant,
        look_at: Instant,
    },
    /// Asked to shut down (`xl shutdown`); destroyed if still there at `until`.
    Stopping {
        domid: u32,
        domain: String,
        until: Instant,
    },
    Backoff {
        until: Instant,
    },
}

struct Svc {
    cfg: Service,
    state: State,
    /// Parked or pre-booted domains ready to be taken (`spares` of them while it is down).
    spares: std::collections::VecDeque<(u32, String)>,
    /// Spares (or the saved image) being prepared now.
    preparing: usize,
    /// `mode = restore`: the image every start restores, and the domain name it restores as.
    saved: Option<(String, String)>,
    /// SYNs waiting for the guest, one per client (src, port): the frame as it arrived.
    pending: HashMap<(std::net::Ipv4Addr, u16), (Syn, Vec<u8>)>,
    dns_waiting: Vec<(dns::Query, SocketAddr)>,
    gen: u64,
    seq: u64,
    backoff: Duration,
    /// The xenstore watch that says the starting guest is ready: (path, token).
    watching: Option<(String, String)>,
}

struct Activator {
    cfg: Config,
    svcs: Vec<Svc>,
    tap: tap::Tap,
    tx: Sender<Msg>,
    xs: xs::Xs,
    watcher: xs::Watcher,
    dns: Option<UdpSocket>,
    /// `/dev/xen/privcmd`, for pausing and unpausing without `xl` (None: use `xl`).
    privcmd: Option<std::fs::File>,
    t0: Instant,
}

macro_rules! log {
    ($a:expr, $($arg:tt)*) => {
        eprintln!("activator: [{:>9.3}] {}", $a.t0.elapsed().as_secs_f64(), format!($($arg)*))
    };
}

/// How often an up guest's vif is looked at for its idle timeout of `idle_s` s: a quarter of
/// it (at least 250 ms), so a guest is stopped between `idle` and 1.25 `idle` after its last
/// frame.
fn idle_look(idle_s: u64) -> Duration {
    (Duration::from_secs(idle_s) / 4).max(Duration::from_millis(250))
}

fn vif_rx_packets(domid: u32) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/vif{domid}.0/statistics/rx_packets"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Activator {
    fn next_domain(&mut self, i: usize) -> String {
        let s = &mut self.svcs[i];
        s.seq += 1;
        format!("{}-{}", s.cfg.name, s.seq)
    }

    /// Starts `i`'s guest for the requests now waiting: take the spare if there is one, else
    /// create one.
    fn start(&mut self, i: usize) {
        let domain;
        let how;
        let mut unpaused = None;
        let gen = {
            let s = &mut self.svcs[i];
            s.gen += 1;
            s.gen
        };
        let bin = self.cfg.xl.clone();
        let tx = self.tx.clone();
        let spare = match &self.svcs[i].saved {
            // The image stays for the next start.
            Some(saved) => Some(Err(saved.clone())),
            None => self.svcs[i].spares.pop_front().map(Ok),
        };
        match spare {
            Some(Err((file, d))) => {
                domain = d;
                how = How::Restore;
                let dname = domain.clone();
                std::thread::spawn(move || {
                    let r = xl::xl(&bin, &["restore", &file]).and_then(|_| domid_after(&dname));
                    report_start(&tx, i, gen, r);
                });
            }
            Some(Ok((domid, d))) => {
                domain = d;
                how = if self.svcs[i].cfg.mode == Mode::Preboot {
                    How::UnpausePreboot
                } else {
                    How::UnpauseParked
                };
                match self.unpause_direct(domid) {
                    true => unpaused = Some(domid),
                    false => {
                        let dname = domain.clone();
                        std::thread::spawn(move || {
                            let r = xl::xl(&bin, &["unpause", &dname]).map(|_| domid);
                            report_start(&tx, i, gen, r);
                        });
                    }
                }
            }
            None => {
                domain = self.next_domain(i);
                how = How::Create;
                let cfg = self.svcs[i].cfg.clone();
                let bridge = self.cfg.bridge.clone();
                let dname = domain.clone();
                std::thread::spawn(move || {
                    let r = xl::create(&bin, &cfg, &bridge, &dname, false)
                        .and_then(|_| domid_after(&dname));
                    report_start(&tx, i, gen, r);
                });
            }
        }
        log!(
            self,
            "{}: request waiting: starting ({}, {domain})",
            self.svcs[i].cfg.name,
            how.describe()
        );
        self.svcs[i].state = State::Starting {
            gen,
            since: Instant::now(),
            console_from: console_len(&domain),
            domain,
            domid: None,
            how,
        };
        if let Some(domid) = unpaused {
            self.on_running(i, gen, domid);
        }
    }

    /// Pauses or unpauses `domid` with the domctl itself (no `xl` process: see [`sys`]); false
    /// if that is not possible here (then `xl` does it).
    fn pause_direct(&mut self, domid: u32, pause: bool) -> bool {
        let Some(p) = &self.privcmd else {
            return false;
        };
        match sys::pause_domain(p, domid, pause) {
            Ok(()) => true,
            Err(e) => {
                log!(
                    self,
                    "the {} domctl failed ({e}); using xl from now on",
                    if pause { "pause" } else { "unpause" }
                );
                self.privcmd = None;
                false
            }
        }
    }

    fn unpause_direct(&mut self, domid: u32) -> bool {
        self.pause_direct(domid, false)
    }

    /// Tops up `i`'s spares in the background, to `spares` of them (parked: `xl create -p`;
    /// preboot: boot it, wait until ready, pause it, make the bridge forget its MAC), or for
    /// `mode = restore` makes its image (boot it, wait until ready, `xl save` it).
    fn prepare_spare(&mut self, i: usize) {
        let s = &self.svcs[i];
        let wanted = match s.cfg.mode {
            Mode::Cold => 0,
            Mode::Restore => usize::from(s.saved.is_none()),
            Mode::Parked | Mode::Preboot => s.cfg.spares,
        };
        let have = s.spares.len() + s.preparing;
        for _ in have..wanted {
            self.prepare_one(i);
        }
    }

    fn prepare_one(&mut self, i: usize) {
        let mode = self.svcs[i].cfg.mode;
        let domain = if mode == Mode::Restore {
            format!("{}-saved", self.svcs[i].cfg.name)
        } else {
            self.next_domain(i)
        };
        self.svcs[i].preparing += 1;
        let cfg = self.svcs[i].cfg.clone();
        let bin = self.cfg.xl.clone();
        let bridge = self.cfg.bridge.clone();
        let file = format!("{}/{}.save", self.cfg.save_dir, cfg.name);
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let r = (|| -> Result<u32, String> {
                let from = console_len(&domain);
                xl::create(&bin, &cfg, &bridge, &domain, mode == Mode::Parked)?;
                let mut xs = xs::Xs::open().map_err(|e| e.to_string())?;
                let domid = xs
                    .domid_of(&domain)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{domain} is gone right after xl create"))?;
                if mode == Mode::Parked {
                    return Ok(domid);
                }
                wait_ready(&mut xs, &cfg, &bin, &domain, domid, from)?;
                if mode == Mode::Restore {
                    let dir = std::path::Path::new(&file).parent().unwrap();
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
                    if let Err(e) = xl::xl(&bin, &["save", &domain, &file]) {
                        let _ = xl::xl(&bin, &["destroy", &domain]);
                        return Err(e);
                    }
                } else {
                    xl::xl(&bin, &["pause", &domain])?;
                }
                tap::flush_bridge(&bridge).map_err(|e| format!("flushing {bridge}: {e}"))?;
                Ok(domid)
            })();
            let _ = tx.send(match r {
                Ok(_) if mode == Mode::Restore => Msg::SpareSaved {
                    svc: i,
                    file,
                    domain,
                },
                Ok(domid) => Msg::SpareReady {
                    svc: i,
                    domid,
                    domain,
                },
                Err(why) => Msg::SpareFailed { svc: i, why },
            });
        });
    }

    fn ready(&mut self, i: usize) {
        let State::Starting {
            since,
            domain,
            domid: Some(domid),
            how,
            ..
        } = std::mem::replace(&mut self.svcs[i].state, State::Down)
        else {
            return;
        };
        let pending: Vec<(Syn, Vec<u8>)> = self.svcs[i].pending.drain().map(|(_, v)| v).collect();
        for (_, f) in &pending {
            if let Err(e) = self.tap.send(f) {
                log!(self, "replaying a SYN: {e}");
            }
        }
        let waiting = std::mem::take(&mut self.svcs[i].dns_waiting);
        for (q, from) in &waiting {
            self.dns_reply(&dns::answer(q, self.svcs[i].cfg.address, 0), *from);
        }
        self.svcs[i].backoff = Duration::ZERO;
        let note = self.ready_note(domid);
        log!(
            self,
            "{}: ready after {:.1} ms ({}, {domain} domid {domid}{note}); replayed {} SYN(s), answered {} DNS quer(ies)",
            self.svcs[i].cfg.name,
            since.elapsed().as_secs_f64() * 1000.0,
            how.describe(),
            pending.len(),
            waiting.len()
        );
        self.unwatch_ready(i);
        self.svcs[i].state = State::Up {
            domid,
            domain,
            rx: vif_rx_packets(domid),
            quiet_since: Instant::now(),
            look_at: Instant::now() + idle_look(self.svcs[i].cfg.idle_s),
        };
        if self.svcs[i].cfg.mode == Mode::Parked {
            self.prepare_spare(i);
        }
    }

    fn ready_note(&mut self, domid: u32) -> String {
        match self.xs.read(&ready_path(domid)) {
            Ok(Some(v)) => format!(", guest: {v}"),
            _ => String::new(),
        }
    }

    fn unwatch_ready(&mut self, i: usize) {
        if let Some((path, token)) = self.svcs[i].watching.take() {
            let _ = self.watcher.unwatch(&path, &token);
        }
    }

    /// Watches what says that `i`'s starting guest `domid` is ready: its `data/xenrt/ready`
    /// node, or its first vif's state ([`vif_connected`]).
    fn watch_ready(&mut self, i: usize, domid: u32, vif: bool) {
        self.unwatch_ready(i);
        let (path, token) = if vif {
            (vif_state_path(&mut self.xs, domid), format!("vif:{i}"))
        } else {
            (ready_path(domid), format!("ready:{i}"))
        };
        if let Err(e) = self.watcher.watch(&path, &token) {
            log!(self, "{}: watching {path}: {e}", self.svcs[i].cfg.name);
        }
        self.svcs[i].watching = Some((path, token));
    }

    /// The start failed: refuse who waits, log why, back off.
    fn fail(&mut self, i: usize, why: String) {
        let prev = std::mem::replace(&mut self.svcs[i].state, State::Down);
        if let State::Starting {
            domid: Some(_),
            domain,
            ..
        } = &prev
        {
            destroy_later(&self.cfg.xl, domain);
        }
        self.unwatch_ready(i);
        if let State::Starting {
            how: How::Restore, ..
        } = &prev
        {
            // The image may be what fails: make a new one.
            self.svcs[i].saved = None;
        }
        // A spare that could not be unpaused (destroyed behind our back) is replaced.
        self.prepare_spare(i);
        let s = &mut self.svcs[i];
        s.backoff = (s.backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let backoff = s.backoff;
        let pending: Vec<(Syn, Vec<u8>)> = s.pending.drain().map(|(_, v)| v).collect();
        let waiting = std::mem::take(&mut s.dns_waiting);
        let mac = s.cfg.mac;
        for (syn, _) in &pending {
            let _ = self.tap.send(&frame::rst_for(syn, mac));
        }
        for (q, from) in &waiting {
            self.dns_reply(&dns::servfail(q), *from);
        }
        log!(
            self,
            "{}: start failed: {why}; refused {} connection(s); refusing for {} s before trying again",
            self.svcs[i].cfg.name,
            pending.len(),
            backoff.as_secs()
        );
        self.svcs[i].state = State::Backoff {
            until: Instant::now() + backoff,
        };
    }

    fn dns_reply(&self, msg: &[u8], to: SocketAddr) {
        if let Some(sock) = &self.dns {
            let _ = sock.send_to(msg, to);
        }
    }

    fn service_for(&self, addr: std::net::Ipv4Addr) -> Option<usize> {
        self.svcs.iter().position(|s| s.cfg.address == addr)
    }

    fn on_frame(&mut self, f: &[u8]) {
        match frame::classify(f) {
            Seen::ArpRequest {
                sender_mac,
                sender_ip,
                target,
            } => {
                let Some(i) = self.service_for(target) else {
                    return;
                };
                if matches!(self.svcs[i].state, State::Up { .. }) {
                    return; // the guest answers
                }
                let r = frame::arp_reply(self.svcs[i].cfg.mac, target, sender_mac, sender_ip);
                let _ = self.tap.send(&r);
            }
            Seen::Syn(syn) => {
                let Some(i) = self.service_for(syn.dst) else {
                    return;
                };
                if !self.svcs[i].cfg.ports.contains(&syn.dst_port) {
                    return;
                }
                match self.svcs[i].state {
                    State::Up { .. } => {} // flooded before the bridge learned the guest: it has it too
                    State::Backoff { until } if Instant::now() < until => {
                        let _ = self.tap.send(&frame::rst_for(&syn, self.svcs[i].cfg.mac));
                    }
                    State::Starting { .. } | State::Stopping { .. } => {
                        self.svcs[i]
                            .pending
                            .insert((syn.src, syn.src_port), (syn, f.to_vec()));
                    }
                    State::Down | State::Backoff { .. } => {
                        self.svcs[i]
                            .pending
                            .insert((syn.src, syn.src_port), (syn, f.to_vec()));
                        self.start(i);
                    }
                }
            }
            Seen::Other => {}
        }
    }

    fn on_dns(&mut self, m: &[u8], from: SocketAddr) {
        let q = match dns::parse(m) {
            Ok(q) => q,
            Err(dns::Bad::Drop) => return,
            Err(dns::Bad::Reply(r)) => return self.dns_reply(&r, from),
        };
        let Some(i) = self
            .svcs
            .iter()
            .position(|s| s.cfg.dns_name.as_deref() == Some(q.name.as_str()))
        else {
            return self.dns_reply(&dns::refused(&q), from);
        };
        match self.svcs[i].state {
            State::Up { .. } => self.dns_reply(&dns::answer(&q, self.svcs[i].cfg.address, 0), from),
            State::Backoff { until } if Instant::now() < until => {
                self.dns_reply(&dns::servfail(&q), from)
            }
            State::Starting { .. } | State::Stopping { .. } => {
                self.svcs[i].dns_waiting.push((q, from))
            }
            State::Down | State::Backoff { .. } => {
                self.svcs[i].dns_waiting.push((q, from));
                log!(
                    self,
                    "{}: DNS query for {} from {from}",
                    self.svcs[i].cfg.name,
                    self.svcs[i].cfg.dns_name.clone().unwrap_or_default()
                );
                self.start(i);
            }
        }
    }

    fn on_running(&mut self, i: usize, gen: u64, domid: u32) {
        let State::Starting {
            gen: g,
            domid: d,
            domain,
            how,
            console_from,
            ..
        } = &mut self.svcs[i].state
        else {
            return;
        };
        if *g != gen {
            return;
        }
        *d = Some(domid);
        let domain = domain.clone();
        let from = *console_from;
        let how = *how;
        if how == How::UnpausePreboot {
            return self.ready(i);
        }
        match self.svcs[i].cfg.ready.clone() {
            Ready::Xenstore => self.watch_ready(i, domid, false),
            // A restored guest does not print its ready text again.
            Ready::Vif | Ready::Console(_) if how == How::Restore => {
                self.watch_ready(i, domid, true)
            }
            Ready::Vif => self.watch_ready(i, domid, true),
            Ready::Console(text) => {
                let tx = self.tx.clone();
                let limit = Duration::from_secs(self.svcs[i].cfg.boot_timeout_s + 1);
                std::thread::spawn(move || {
                    let t = Instant::now();
                    while t.elapsed() < limit {
                        if console_has(&domain, &text, from) {
                            let _ = tx.send(Msg::ConsoleReady { svc: i, gen });
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                });
            }
        }
    }

    fn on_watch(&mut self, e: xs::Event) {
        if let Some(i) = e
            .token
            .strip_prefix("ready:")
            .and_then(|s| s.parse::<usize>().ok())
        {
            let Some(State::Starting {
                domid: Some(domid), ..
            }) = self.svcs.get(i).map(|s| &s.state)
            else {
                return;
            };
            let domid = *domid;
            if e.path != ready_path(domid) {
                return;
            }
            if let Ok(Some(_)) = self.xs.read(&e.path) {
                self.ready(i);
            }
        } else if let Some(i) = e
            .token
            .strip_prefix("vif:")
            .and_then(|s| s.parse::<usize>().ok())
        {
            if !matches!(
                self.svcs.get(i).map(|s| &s.state),
                Some(State::Starting { .. })
            ) || self.svcs[i].watching.as_ref().map(|w| &w.0) != Some(&e.path)
            {
                return;
            }
            let State::Starting {
                domid: Some(domid), ..
            } = self.svcs[i].state
            else {
                return;
            };
            if vif_connected(&mut self.xs, domid) {
                self.ready(i);
            }
        } else if e.token == "release" {
            self.check_alive();
        }
    }

    /// Notices guests that ended (crashed or shut down) while starting or serving.
    fn check_alive(&mut self) {
        for i in 0..self.svcs.len() {
            let (domid, domain, starting) = match &self.svcs[i].state {
                State::Starting {
                    domid: Some(d),
                    domain,
                    ..
                } => (*d, domain.clone(), true),
                State::Up { domid, domain, .. } | State::Stopping { domid, domain, .. } => {
                    (*domid, domain.clone(), false)
                }
                _ => continue,
            };
            // Gone: no such node, or another domain's (the domid was reused). A failed read says
            // nothing about the guest: it is looked at again at the next @releaseDomain.
            let alive = match self.xs.read(&format!("/local/domain/{domid}/name")) {
                Ok(Some(n)) => n == domain,
                Ok(None) => false,
                Err(e) => {
                    log!(
                        self,
                        "{}: reading {domain}'s name: {e}",
                        self.svcs[i].cfg.name
                    );
                    true
                }
            };
            if alive {
                continue;
            }
            if matches!(self.svcs[i].state, State::Stopping { .. }) {
                self.stopped(i);
            } else if starting {
                self.fail(
                    i,
                    format!(
                        "{domain} (domid {domid}) ended before it was ready{}",
                        said(&domain)
                    ),
                );
            } else {
                log!(
                    self,
                    "{}: {domain} (domid {domid}) ended{}",
                    self.svcs[i].cfg.name,
                    said(&domain)
                );
                self.svcs[i].state = State::Down;
                self.prepare_spare(i);
            }
        }
    }

    /// The earliest instant at which [`on_deadlines`](Self::on_deadlines) has something to
    /// do (None: only a message can change anything).
    fn next_deadline(&self) -> Option<Instant> {
        self.svcs
            .iter()
            .filter_map(|s| match &s.state {
                State::Starting { since, .. } => {
                    Some(*since + Duration::from_secs(s.cfg.boot_timeout_s))
                }
                State::Backoff { until } | State::Stopping { until, .. } => Some(*until),
                State::Up { look_at, .. } if s.cfg.idle_s > 0 => Some(*look_at),
                _ => None,
            })
            .min()
    }

    /// Does what is due: fails a start past its `boot_timeout`, ends a backoff, destroys a
    /// guest still there 10 s after its shutdown, and looks at an idle guest's vif (stopped
    /// once nothing came from it for `idle` s).
    fn on_deadlines(&mut self) {
        let now = Instant::now();
        for i in 0..self.svcs.len() {
            let limit = Duration::from_secs(self.svcs[i].cfg.boot_timeout_s);
            let idle = self.svcs[i].cfg.idle_s;
            let nothing_waits = self.svcs[i].pending.is_empty();
            match &mut self.svcs[i].state {
                State::Starting { since, domain, .. } if now - *since >= limit => {
                    let domain = domain.clone();
                    self.fail(
                        i,
                        format!(
                            "{domain} was not ready after {} s{}",
                            limit.as_secs(),
                            said(&domain)
                        ),
                    );
                }
                State::Backoff { until } if now >= *until && nothing_waits => {
                    self.svcs[i].state = State::Down;
                }
                State::Stopping { domain, until, .. } if now >= *until => {
                    // Still there 10 s after `xl shutdown`: destroy it (Stopped follows).
                    *until = now + Duration::from_secs(3600);
                    let (bin, d, tx) = (self.cfg.xl.clone(), domain.clone(), self.tx.clone());
                    std::thread::spawn(move || {
                        let _ = xl::xl(&bin, &["destroy", &d]);
                        let _ = tx.send(Msg::Stopped { svc: i });
                    });
                }
                State::Up {
                    domid,
                    rx,
                    quiet_since,
                    look_at,
                    ..
                } if idle > 0 && now >= *look_at => {
                    let r = vif_rx_packets(*domid);
                    if r != *rx {
                        *rx = r;
                        *quiet_since = now;
                    }
                    let idle = Duration::from_secs(idle);
                    if now - *quiet_since >= idle {
                        self.stop(i);
                    } else {
                        *look_at = (now + idle_look(idle.as_secs())).min(*quiet_since + idle);
                    }
                }
                _ => {}
            }
        }
    }

    /// Idle: stop the guest (cold, parked) or pause it again (preboot).
    fn stop(&mut self, i: usize) {
        let State::Up { domid, domain, .. } =
            std::mem::replace(&mut self.svcs[i].state, State::Down)
        else {
            return;
        };
        let s = &self.svcs[i];
        // A pre-booted guest is paused again and becomes a spare, unless there are enough.
        let pause = s.cfg.mode == Mode::Preboot && s.spares.len() + s.preparing < s.cfg.spares;
        log!(
            self,
            "{}: idle for {} s: {} {domain}",
            s.cfg.name,
            s.cfg.idle_s,
            if pause { "pausing" } else { "stopping" }
        );
        let bin = self.cfg.xl.clone();
        if pause {
            let r = if self.pause_direct(domid, true) {
                Ok(String::new())
            } else {
                xl::xl(&bin, &["pause", &domain])
            };
            let _ = tap::flush_bridge(&self.cfg.bridge);
            match r {
                Ok(_) => self.svcs[i].spares.push_back((domid, domain)),
                Err(e) => {
                    log!(self, "{}: {e}; destroying it", self.svcs[i].cfg.name);
                    destroy_later(&bin, &domain);
                    self.prepare_spare(i);
                }
            }
            return;
        }
        // A clean shutdown first (kv flushes its log); the domain's end comes back as
        // @releaseDomain (check_alive), and on_deadlines destroys it if it is still there in 10 s.
        let d = domain.clone();
        std::thread::spawn(move || {
            let _ = xl::xl(&bin, &["shutdown", &d]);
        });
        self.svcs[i].state = State::Stopping {
            domid,
            domain,
            until: Instant::now() + Duration::from_secs(10),
        };
    }

    /// The guest of a stop is gone: what comes next.
    fn stopped(&mut self, i: usize) {
        log!(self, "{}: stopped", self.svcs[i].cfg.name);
        self.svcs[i].state = State::Down;
        self.prepare_spare(i);
        if !self.svcs[i].pending.is_empty() || !self.svcs[i].dns_waiting.is_empty() {
            self.start(i);
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Frame(f) => self.on_frame(&f),
            Msg::Dns(b, from) => self.on_dns(&b, from),
            Msg::Watch(e) => self.on_watch(e),
            Msg::Running { svc, gen, domid } => self.on_running(svc, gen, domid),
            Msg::StartFailed { svc, gen, why } => {
                if matches!(self.svcs[svc].state, State::Starting { gen: g, .. } if g == gen) {
                    self.fail(svc, why);
                }
            }
            Msg::ConsoleReady { svc, gen } => {
                if matches!(self.svcs[svc].state, State::Starting { gen: g, .. } if g == gen) {
                    self.ready(svc);
                }
            }
            Msg::SpareReady { svc, domid, domain } => {
                log!(
                    self,
                    "{}: spare {domain} (domid {domid}) ready ({})",
                    self.svcs[svc].cfg.name,
                    if self.svcs[svc].cfg.mode == Mode::Preboot {
                        "booted, paused"
                    } else {
                        "created paused"
                    }
                );
                self.svcs[svc].preparing -= 1;
                self.svcs[svc].spares.push_back((domid, domain));
            }
            Msg::SpareSaved { svc, file, domain } => {
                let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                log!(
                    self,
                    "{}: image saved: {file} ({:.1} MiB; restores as {domain})",
                    self.svcs[svc].cfg.name,
                    size as f64 / 1048576.0
                );
                self.svcs[svc].preparing -= 1;
                self.svcs[svc].saved = Some((file, domain));
            }
            Msg::SpareFailed { svc, why } => {
                log!(
                    self,
                    "{}: preparing a spare failed: {why}; requests will start a guest cold",
                    self.svcs[svc].cfg.name
                );
                self.svcs[svc].preparing -= 1;
            }
            Msg::Stopped { svc } => {
                if matches!(self.svcs[svc].state, State::Stopping { .. }) {
                    self.stopped(svc);
                }
            }
        }
    }
}

/// The xenstore node of the state of `domid`'s first vif, its backend's side (watched for
/// [`vif_connected`]: with Linux's netback the backend is the last of the two to say
/// Connected, after the frontend published its rings as Connected).
fn vif_state_path(xs: &mut xs::Xs, domid: u32) -> String {
    let backend = xs
        .read(&format!("/local/domain/{domid}/device/vif/0/backend"))
        .ok()
        .flatten()
        .unwrap_or_else(|| format!("/local/domain/0/backend/vif/{domid}/0"));
    format!("{backend}/state")
}

/// Whether both ends of `domid`'s first vif say Connected (XenbusState 4): the backend has
/// mapped the rings and the frontend has its receive buffers posted, so a frame sent to the
/// vif now reaches the guest.
fn vif_connected(xs: &mut xs::Xs, domid: u32) -> bool {
    let connected = |xs: &mut xs::Xs, p: &str| matches!(xs.read(p), Ok(Some(v)) if v.trim() == "4");
    let backend = vif_state_path(xs, domid);
    connected(xs, &format!("/local/domain/{domid}/device/vif/0/state")) && connected(xs, &backend)
}

/// Waits in a start worker until `domain` (`domid`, booted from its console log's byte `from`)
/// is ready by `cfg.ready` — its `data/xenrt/ready` node or its vif's backend state, both by
/// xenstore watch; a console text by reading the log every 20 ms — or fails: it ended, or
/// `boot_timeout` passed (then it is destroyed).
fn wait_ready(
    xs: &mut xs::Xs,
    cfg: &Service,
    bin: &str,
    domain: &str,
    domid: u32,
    from: u64,
) -> Result<(), String> {
    let limit = Duration::from_secs(cfg.boot_timeout_s);
    let t = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut w = xs::Watcher::start(tx, |e| e).map_err(|e| e.to_string())?;
    let path = match &cfg.ready {
        Ready::Xenstore => Some(ready_path(domid)),
        Ready::Vif => Some(vif_state_path(xs, domid)),
        Ready::Console(_) => None,
    };
    if let Some(p) = &path {
        w.watch(p, "ready").map_err(|e| e.to_string())?;
    }
    w.watch("@releaseDomain", "release")
        .map_err(|e| e.to_string())?;
    loop {
        let ready = match (&cfg.ready, &path) {
            (Ready::Console(text), _) => console_has(domain, text, from),
            (Ready::Vif, _) => vif_connected(xs, domid),
            (_, Some(p)) => xs.read(p).map_err(|e| e.to_string())?.is_some(),
            (_, None) => false,
        };
        if ready {
            return Ok(());
        }
        let alive = xs
            .read(&format!("/local/domain/{domid}/name"))
            .ok()
            .flatten()
            .is_some_and(|n| n == domain);
        if !alive {
            return Err(format!(
                "{domain} ended before it was ready{}",
                said(domain)
            ));
        }
        let Some(left) = limit.checked_sub(t.elapsed()) else {
            let _ = xl::xl(bin, &["destroy", domain]);
            return Err(format!(
                "{domain} was not ready after {limit:?}{}",
                said(domain)
            ));
        };
        let wait = match cfg.ready {
            Ready::Console(_) => left.min(Duration::from_millis(20)),
            _ => left,
        };
        let _ = rx.recv_timeout(wait);
    }
}

/// The domid of `domain` right after `xl create`/`restore` made it (an error if it is gone
/// already: it ended before it was ready).
fn domid_after(domain: &str) -> Result<u32, String> {
    let mut xs = xs::Xs::open().map_err(|e| e.to_string())?;
    xs.domid_of(domain)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{domain} ended before it was ready{}", said(domain)))
}

/// A start worker's outcome, to the loop.
fn report_start(tx: &Sender<Msg>, svc: usize, gen: u64, r: Result<u32, String>) {
    let _ = tx.send(match r {
        Ok(domid) => Msg::Running { svc, gen, domid },
        Err(why) => Msg::StartFailed { svc, gen, why },
    });
}

/// `xl destroy DOMAIN` in a thread of its own (the loop does not wait for xl).
fn destroy_later(bin: &str, domain: &str) {
    let (bin, d) = (bin.to_string(), domain.to_string());
    std::thread::spawn(move || {
        let _ = xl::xl(&bin, &["destroy", &d]);
    });
}

fn console_log(domain: &str) -> String {
    format!("/var/log/xen/console/guest-{domain}.log")
}

/// How long `domain`'s console log is now (a log from an earlier domain of that name may exist:
/// only what comes after this counts).
fn console_len(domain: &str) -> u64 {
    std::fs::metadata(console_log(domain))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Whether `domain`'s console showed `text` after byte `from` of its log.
fn console_has(domain: &str, text: &str, from: u64) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(console_log(domain)) else {
        return false;
    };
    let mut s = String::new();
    f.seek(SeekFrom::Start(from)).is_ok() && f.read_to_string(&mut s).is_ok() && s.contains(text)
}

/// "; its console said: ..." when xenconsoled keeps a log of `domain`.
fn said(domain: &str) -> String {
    match xl::console_tail(domain, 3) {
        Some(t) => format!("; its console said: {t}"),
        None => String::new(),
    }
}

fn spawn_readers(tap: &tap::Tap, dns: Option<&UdpSocket>, tx: &Sender<Msg>) -> std::io::Result<()> {
    let mut t = tap.try_clone()?;
    let txf = tx.clone();
    std::thread::Builder::new()
        .name("tap".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match t.recv(&mut buf) {
                    Ok(n) => {
                        if txf.send(Msg::Frame(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!("activator: reading the tap: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    if let Some(sock) = dns {
        let s = sock.try_clone()?;
        let txd = tx.clone();
        std::thread::Builder::new()
            .name("dns".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                loop {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        if txd.send(Msg::Dns(buf[..n].to_vec(), from)).is_err() {
                            return;
                        }
                    }
                }
            })?;
    }
    Ok(())
}

fn run(cfg: Config) -> Result<(), String> {
    let t0 = Instant::now();
    let (tx, rx): (Sender<Msg>, Receiver<Msg>) = mpsc::channel();
    let tap_name = format!("xrtact{}", std::process::id() % 100_000);
    let tap = tap::Tap::open(&tap_name, &cfg.bridge).map_err(|e| format!("tap: {e}"))?;
    let dns = match cfg.dns {
        Some(a) => Some(UdpSocket::bind(a).map_err(|e| format!("DNS on {a}: {e}"))?),
        None => None,
    };
    let xs = xs::Xs::open().map_err(|e| e.to_string())?;
    let mut watcher = xs::Watcher::start(tx.clone(), Msg::Watch).map_err(|e| e.to_string())?;
    watcher
        .watch("@releaseDomain", "release")
        .map_err(|e| e.to_string())?;
    spawn_readers(&tap, dns.as_ref(), &tx).map_err(|e| e.to_string())?;
    for s in &cfg.services {
        let text = std::fs::read_to_string(&s.config)
            .map_err(|e| format!("[{}] config {}: {e}", s.name, s.config))?;
        if let (Mode::Restore, Some(n)) = (s.mode, xl::disk_line(&text)) {
            return Err(format!(
                "[{}] mode = restore, but {} line {n} gives it a disk: a restored image would not see what later instances wrote there (use cold, parked or preboot)",
                s.name, s.config
            ));
        }
    }
    let svcs = cfg
        .services
        .iter()
        .map(|s| Svc {
            cfg: s.clone(),
            state: State::Down,
            spares: std::collections::VecDeque::new(),
            preparing: 0,
            saved: None,
            pending: HashMap::new(),
            dns_waiting: Vec::new(),
            gen: 0,
            seq: 0,
            backoff: Duration::ZERO,
            watching: None,
        })
        .collect();
    let mut a = Activator {
        cfg,
        svcs,
        tap,
        tx,
        xs,
        watcher,
        dns,
        privcmd: std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/xen/privcmd")
            .ok(),
        t0,
    };
    for i in 0..a.svcs.len() {
        let s = &a.svcs[i].cfg;
        log!(
            a,
            "{}: {}:{} ({}{}) -> {} in {:?} mode, idle {} s",
            s.name,
            s.address,
            s.ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
            config::mac_string(&s.mac),
            s.dns_name
                .as_ref()
                .map(|n| format!(", DNS {n}"))
                .unwrap_or_default(),
            s.config,
            s.mode,
            s.idle_s
        );
        a.prepare_spare(i);
    }
    log!(a, "ready on {} (port {})", a.cfg.bridge, a.tap.name);
    // No tick: the loop sleeps until a message or the next deadline of a service (a boot
    // timeout, the end of a backoff, a stop's destroy, the next look at an idle guest's vif).
    loop {
        let m = match a.next_deadline() {
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        if let Some(m) = m {
            a.handle(m);
        }
        a.on_deadlines();
    }
    Ok(())
}

fn main() {
    if let Some(code) = hotplug::run_if_invoked() {
        std::process::exit(code);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (check, path) = match args.as_slice() {
        [p] if !p.starts_with('-') => (false, p.clone()),
        [c, p] if c == "--check" => (true, p.clone()),
        _ => {
            eprintln!("usage: xenrt-activator [--check] CONFIG");
            std::process::exit(2);
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("xenrt-activator: {path}: {e}");
            std::process::exit(2);
        }
    };
    let cfg = match config::parse(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xenrt-activator: {path}: {e}");
            std::process::exit(2);
        }
    };
    if check {
        for s in &cfg.services {
            println!(
                "{}: {}/{} ports {:?} mode {:?}{} idle {} s ready {:?} config {}",
                s.name,
                s.address,
                s.prefix,
                s.ports,
                s.mode,
                if matches!(s.mode, Mode::Parked | Mode::Preboot) {
                    format!(" spares {}", s.spares)
                } else {
                    String::new()
                },
                s.idle_s,
                s.ready,
                s.config
            );
        }
        return;
    }
    if let Err(e) = run(cfg) {
        eprintln!("xenrt-activator: {e}");
        std::process::exit(1);
    }
}
