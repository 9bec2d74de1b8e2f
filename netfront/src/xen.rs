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
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use xen::platform::{with_xenstore, XenHal};
use xen::xenbus::{Clock, Deadline};
use xen::xenstore::{self, Tx, XsErrno};

use crate::stack::{DevPhy, IpConfig, Net};
use crate::{Config, Error, Netfront};

/// How long connecting a vif waits for the backend's xenbus state changes.
pub const HANDSHAKE_TIMEOUT_NS: u64 = 30_000_000_000;

#[derive(Debug, Default, Clone, Copy)]
struct XenClock;

impl Clock for XenClock {
    fn now_ns(&self) -> u64 {
        xen::time::now_ns()
    }
}

/// A connected vif on Xen.
pub type Vif = Netfront<XenHal>;

/// The guest's vifs (`device/vif/ID` nodes) in id order; empty when it has none.
pub fn list() -> Result<Vec<String>, Error> {
    let ids = with_xenstore(|xs| xs.directory(Tx::NONE, "device/vif"))
        .map_err(|_| Error::from(xenstore::Error::Broken))?;
    let mut ids: Vec<(u64, String)> = match ids {
        Ok(v) => v
            .into_iter()
            .map(|id| (id.parse().unwrap_or(u64::MAX), id))
            .collect(),
        Err(xenstore::Error::Xs(XsErrno::Enoent)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    ids.sort();
    Ok(ids
        .into_iter()
        .map(|(_, id)| format!("device/vif/{id}"))
        .collect())
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
    Ok(Net::new(
        Box::new(DevPhy(vif)),
        mac,
        config,
        xen::time::now_ns(),
    ))
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
