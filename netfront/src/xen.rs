//! netfront on Xen: find the guest's vifs in xenstore and connect them (the stack on top is
//! `net::xen::up`).

use alloc::string::String;
use alloc::vec::Vec;

use xen::platform::{with_xenstore, XenClock, XenHal};
use xen::xenbus::Deadline;
use xen::xenstore;

use crate::{Config, Error, Netfront};

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
