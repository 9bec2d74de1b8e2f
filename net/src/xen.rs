//! Networking on Xen: bring up the stack on the guest's vifs (found and connected by
//! `netfront::xen`).
//!
//! ```ignore
//! xen::main!(main, net::stack::KEYS);
//! fn main() -> Result<(), net::xen::UpError> {
//!     let net = net::xen::up()?; // first vif, ip=/gw=/dns= from the command line
//!     xen::exec::run(&[&net], |sp| async move { /* listeners, streams... */ })
//! }
//! ```

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

use xen::platform::{with_xenstore, XenClock};
use xen::xenbus::Deadline;

use crate::stack::{IpConfig, Net};
use netfront::xen::{list, open, Vif};
use netfront::Error;

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
        vif: Some(vif),
        node: node.into(),
    };
    Ok(Net::new(Box::new(phy), mac, config, xen::time::now_ns()))
}

/// A vif under a stack, watching its backend: when the backend leaves Connected (`xl
/// network-detach`, the backend going away) the link is down, the frontend closes as the
/// protocol asks (so the toolstack's detach completes), and everything it granted is released.
struct XenVif {
    vif: Option<Vif>,
    node: String,
}

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
                let closed = with_xenstore(|xs| {
                    let mut t = Deadline::after(XenClock, 10_000_000_000);
                    vif.shutdown(xs, &mut t)
                });
                match closed {
                    Ok(Ok(_)) => log::info!("net: {} closed and released", self.node),
                    Ok(Err(e)) => log::warn!("net: {} closed: {e}", self.node),
                    Err(_) => {}
                }
            }
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
        if let Some(vif) = &mut self.vif {
            gate.poll(iface, vif, sockets, now);
        }
        self.check_backend();
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
/// (resets refused by [`crate::filter`]), then what `extra` adds. Spawn it on the executor; the
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
