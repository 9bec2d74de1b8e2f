//! Networking on Xen: find the guest's vifs in xenstore, connect them, and bring up the stack.
//!
//! ```ignore
//! xen::main!(main, netfront::stack::KEYS);
//! fn main() -> Result<(), netfront::xen::UpError> {
//!     let net = netfront::xen::up()?; // first vif, ip=/gw=/dns= from the command line
//!     xen::exec::run(&[&net], |sp| async move { /* listeners, streams... */ })
//! }
//! ```

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use xen::events::Channel;
use xen::platform::{with_xenstore, Watch, XenClock, XenHal};
use xen::xenbus::Deadline;
use xen::xenstore;

use crate::stack::{IpConfig, Net};
use crate::{Closing, Config, Error, Netfront};

/// How long connecting a vif waits for the backend's xenbus state changes.
pub const HANDSHAKE_TIMEOUT_NS: u64 = 30_000_000_000;

/// A connected vif on Xen.
pub type Vif = Netfront<XenHal>;

/// The guest's vifs (`device/vif/ID` nodes) in id order; empty when it has none.
pub fn list() -> Result<Vec<String>, Error> {
    with_xenstore(|xs| xen::xenbus::device_nodes(xs, "vif"))
        .map_err(|_| Error::from(xenstore::Error::Broken))?
        .map_err(Error::from)
}

/// Connects the vif at `node` (e.g. `device/vif/0`).
pub fn open(node: &str) -> Result<Vif, Error> {
    with_xenstore(|xs| {
        let mut t = Deadline::after(XenClock, HANDSHAKE_TIMEOUT_NS);
        Netfront::connect(xs, XenHal, node, Config::default(), &mut t)
    })
    .map_err(|_| Error::from(xenstore::Error::Broken))?
}

/// Why the network could not come up.
#[derive(Debug)]
pub enum UpError {
    /// A bad `ip=`/`gw=`/`dns=`/`ip6=` value.
    Config(String),
    /// The guest has no vif (add `vif = ['bridge=xenbr0']` to its xl config).
    NoVif,
    /// Connecting the vif failed.
    Vif(String, Error),
}

impl fmt::Display for UpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpError::Config(e) => write!(f, "network config: {e}"),
            UpError::NoVif => {
                f.write_str("no network device: add vif = ['bridge=...'] to the xl config")
            }
            UpError::Vif(n, e) => write!(f, "{n}: {e}"),
        }
    }
}

/// Connects vif `node` and starts a stack on it configured by `config`.
pub fn up_on(node: &str, config: &IpConfig) -> Result<Net, UpError> {
    let vif = open(node).map_err(|e| UpError::Vif(node.into(), e))?;
    let mac = vif.mac();
    log::info!(
        "net: {node} up, mac {}, backend domain {}, sg {}",
        crate::format_mac(mac),
        vif.backend_id(),
        vif.scatter_gather()
    );
    let phy = XenVif {
        chan: Channel::bind(vif.event_channel()),
        watch: Watch::new(&xen::xenbus::watch_token(node)),
        vif: Some(vif),
        node: node.into(),
        closing: None,
    };
    Ok(Net::new(Box::new(phy), mac, config, xen::time::now_ns()))
}

/// A vif under a stack, watching its backend: when the backend leaves Connected (`xl
/// network-detach`, the backend going away) the link is down, the frontend closes as the
/// protocol asks (so the toolstack's detach completes), and everything it granted is released.
///
/// The stack is woken by the vif's event channel (frames, TX room) and by its backend's state
/// watch; the backend's state is read only when that watch fired, and the close never blocks
/// a poll: it is stepped on the watch's events and every [`CLOSE_RETRY_NS`] until released or
/// [`CLOSE_TIMEOUT_NS`] passed.
struct XenVif {
    vif: Option<Vif>,
    node: String,
    /// The vif's event channel (re-pointed with `rebind` if the port changes).
    chan: Channel,
    /// The backend state watch's readiness.
    watch: Watch,
    /// A close under way, and when to give up on it.
    closing: Option<(Closing<XenHal>, u64)>,
}

/// How long a closing vif waits for the backend to close and unmap its pages.
const CLOSE_TIMEOUT_NS: u64 = 10_000_000_000;
/// How often a closing vif looks whether the backend unmapped its pages.
const CLOSE_RETRY_NS: u64 = 20_000_000;

impl XenVif {
    fn check_backend(&mut self) {
        let Some(vif) = &mut self.vif else { return };
        let changed = match with_xenstore(|xs| vif.backend_changed(xs)) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                log::warn!("net: {}: reading the backend state: {e}", self.node);
                return;
            }
            Err(_) => return,
        };
        match changed {
            None | Some(xen::xenbus::XenbusState::Connected) => {}
            Some(state) => {
                log::warn!("net: {} link down (backend {state:?}): closing", self.node);
                let Some(vif) = self.vif.take() else { return };
                let Ok(c) = with_xenstore(|xs| vif.begin_shutdown(xs)) else {
                    return;
                };
                self.closing = Some((c, xen::time::now_ns().saturating_add(CLOSE_TIMEOUT_NS)));
            }
        }
    }

    /// Moves a close on (never waits).
    fn step_close(&mut self) {
        let Some((mut c, give_up_at)) = self.closing.take() else {
            return;
        };
        let Ok(step) = with_xenstore(|xs| c.step(xs)) else {
            return;
        };
        let done = match step {
            Some(r) => r,
            None if xen::time::now_ns() >= give_up_at => {
                let Ok(r) = with_xenstore(|xs| c.give_up(xs)) else {
                    return;
                };
                r
            }
            None => {
                self.closing = Some((c, give_up_at));
                return;
            }
        };
        match done {
            Ok(_) => log::info!("net: {} closed and released", self.node),
            Err(e) => log::warn!("net: {} closed: {e}", self.node),
        }
    }
}

impl crate::stack::Phy for XenVif {
    fn poll(
        &mut self,
        iface: &mut smoltcp::iface::Interface,
        sockets: &mut smoltcp::iface::SocketSet<'static>,
        now: smoltcp::time::Instant,
        gate: &mut crate::stack::SynGate,
    ) {
        let _ = self.chan.take();
        if let Some(vif) = &mut self.vif {
            gate.poll(iface, vif, sockets, now);
        }
        if self.watch.take() {
            self.check_backend();
        }
        self.step_close();
    }

    fn register(&mut self, waker: &core::task::Waker) -> bool {
        self.chan.register(waker);
        self.watch.register(waker);
        true
    }

    fn poll_at(&self) -> Option<u64> {
        self.closing
            .as_ref()
            .map(|_| xen::time::now_ns().saturating_add(CLOSE_RETRY_NS))
    }

    fn stats(&self) -> Option<crate::Stats> {
        self.vif.as_ref().map(|v| v.stats())
    }

    fn make_iface(
        &mut self,
        config: smoltcp::iface::Config,
        now: smoltcp::time::Instant,
    ) -> smoltcp::iface::Interface {
        match &mut self.vif {
            Some(vif) => smoltcp::iface::Interface::new(config, vif, now),
            // Only called by Net::new, right after up_on connected the vif.
            None => unreachable!("XenVif without a vif"),
        }
    }
}

/// The first vif, configured from the command line (`ip=`, `gw=`, `dns=`, `ip6=`, `gw6=`; DHCP
/// by default).
pub fn up() -> Result<Net, UpError> {
    let cmd = xen::boot::cmdline();
    let config = IpConfig::from_args(|k| cmd.get(k)).map_err(UpError::Config)?;
    let vifs = list().map_err(|e| UpError::Vif("device/vif".into(), e))?;
    let first = vifs.first().ok_or(UpError::NoVif)?;
    up_on(first, &config)
}

/// Publishes the guest's figures to dom0 every `every_ns` (see [`xen::stats`]): memory, then
/// `sockets` (in the stack), `tx_full` (the driver's full-ring count), `held_syns` (connection
/// attempts the SYN gate held back), `half_open_shed` and `half_open_expired` (half-open
/// connections given back under pressure or after 8 s, see [`crate::gate`]), `rst_dropped`
/// (resets refused by [`crate::filter`]), the event loop's counters
/// ([`xen::stats::Line::add_loop`]), then what `extra` adds. Spawn it on the executor; the
/// first write is at once. A failed write is reported once and publishing goes on.
pub async fn publish_stats(net: Net, every_ns: u64, extra: impl Fn(&mut xen::stats::Line)) {
    let mut reported = false;
    loop {
        let mut line = xen::stats::Line::new(xen::time::now_ns(), xen::stats::memory());
        line.add("sockets", net.socket_count() as u64);
        line.add("tx_full", net.device_stats().map_or(0, |s| s.tx_full));
        let syn = net.listen_stats();
        line.add("held_syns", syn.held);
        line.add("half_open_shed", syn.shed);
        line.add("half_open_expired", syn.expired);
        line.add("rst_dropped", net.dropped_rsts());
        line.add_loop();
        extra(&mut line);
        if let Err(e) = xen::stats::publish(&line) {
            if !reported {
                log::warn!("stats: {e}");
                reported = true;
            }
        }
        net.sleep(every_ns).await;
    }
}
