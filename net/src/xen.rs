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

use alloc::string::String;
use core::fmt;

use crate::stack::{IpConfig, Net};
use netfront::xen::{open, open_first, XenVif};
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
    Ok(stack_on(node, vif, config))
}

/// A stack on the connected `vif` at `node`.
fn stack_on(node: &str, vif: netfront::xen::Vif, config: &IpConfig) -> Net {
    let mac = vif.mac();
    log::info!(
        "net: {node} up, mac {}, backend domain {}, sg {}",
        crate::format_mac(mac),
        vif.backend_id(),
        vif.scatter_gather()
    );
    Net::new(XenVif::new(vif, node), mac, config, xen::time::now_ns())
}

/// The vif wakes the stack by its event channel and backend watch, and watches its backend
/// after each poll of the stack (see [`XenVif`]).
impl crate::stack::Link for XenVif {
    type Device = XenVif;
    fn device(&mut self) -> &mut XenVif {
        self
    }
    fn before_poll(&mut self, _now: smoltcp::time::Instant) {
        XenVif::before_poll(self);
    }
    fn after_poll(&mut self, _now: smoltcp::time::Instant) {
        XenVif::after_poll(self);
    }
    fn stats(&self) -> Option<crate::Stats> {
        XenVif::stats(self)
    }
    fn register(&mut self, waker: &core::task::Waker) -> bool {
        XenVif::register(self, waker)
    }
    fn poll_at(&self) -> Option<u64> {
        XenVif::poll_at(self)
    }
    fn reconnected(&mut self) -> bool {
        XenVif::take_reconnected(self)
    }
    fn send_raw(&mut self, frame: &[u8], _now: smoltcp::time::Instant) -> bool {
        XenVif::send_raw(self, frame)
    }
    fn mac(&self) -> Option<[u8; 6]> {
        XenVif::mac(self)
    }
    /// The wall clock and the TSC: two restores of one saved image happen at different times.
    fn entropy(&mut self) -> u64 {
        xen::time::wallclock_ns() ^ xen::domain::since_entry_ns().rotate_left(32)
    }
    fn after_move(&mut self) {
        xen::stats::ready_again();
    }
}

/// The first vif, configured from the command line (`ip=`, `gw=`, `dns=`, `ip6=`, `gw6=`; DHCP
/// by default).
pub fn up() -> Result<Net, UpError> {
    let cmd = xen::boot::cmdline();
    let config = IpConfig::from_args(|k| cmd.get(k)).map_err(UpError::Config)?;
    let (node, vif) = open_first()
        .map_err(|e| UpError::Vif("device/vif".into(), e))?
        .ok_or(UpError::NoVif)?;
    Ok(stack_on(&node, vif, &config))
}

/// Waits until `net` has its IPv4 address (at once with a static `ip=`), then reports the app
/// ready at that address on `tcp_ports` ([`xen::boot::ready`]: the xenstore node
/// `data/xenrt/ready` and the console line `APP: listening on ADDR:PORT... N.N ms after
/// entry`). Call it once the listeners on those ports exist. Returns the address.
pub async fn ready(app: &str, net: &Net, tcp_ports: &[u16]) -> smoltcp::wire::Ipv4Cidr {
    let addr = net.configured().await;
    let endpoints: alloc::vec::Vec<String> = tcp_ports
        .iter()
        .map(|p| alloc::format!("{}:{p}", addr.address()))
        .collect();
    // From now on a SYN to a port nobody listens on is refused (until now it was held for the
    // listener about to open: see crate::gate).
    net.serving();
    xen::boot::ready(app, &endpoints);
    addr
}

/// Publishes the guest's figures to dom0 every `every_ns` (see [`xen::stats`]): memory, then
/// the event loop's counters (`hypercalls`, `turns`, `blocks`..., see [`xen::stats::Line::add_loop`]), `sockets` (in the stack), `tx_full` (the driver's full-ring count), `reconnects` and `tx_resent` (the vif's
/// reconnections after the domain moved, and the frames it sent again then), `held_syns` (connection
/// attempts the SYN gate held back), `half_open_shed` and `half_open_expired` (half-open
/// connections given back under pressure or after 8 s, see [`crate::gate`]), `rst_dropped`
/// (resets refused by [`crate::filter`]), then what `extra` adds. Spawn it on the executor; the
/// first write is at once. A failed write is reported once and publishing goes on.
pub async fn publish_stats(net: Net, every_ns: u64, extra: impl Fn(&mut xen::stats::Line)) {
    let mut reported = false;
    loop {
        let mut line = xen::stats::Line::new(xen::time::now_ns(), xen::stats::memory());
        line.add_loop().add_xen();
        line.add("sockets", net.socket_count() as u64);
        let dev = net.device_stats().unwrap_or_default();
        line.add("tx_full", dev.tx_full);
        line.add("reconnects", dev.reconnects);
        line.add("tx_resent", dev.tx_resent);
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
