//! netfront on Xen: find the guest's vifs in xenstore and connect them (the stack on top is
//! `net::xen::up`).

use alloc::string::String;
use alloc::vec::Vec;

use xen::platform::{with_xenstore, XenClock, XenHal};
use xen::xenbus::Deadline;
use xen::xenstore;

use smoltcp::phy::{Device, DeviceCapabilities};
use smoltcp::time::Instant;

use crate::{Config, Error, Netfront, NfRxToken, NfTxToken, Stats};

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

/// A vif under a stack, watching its backend: when the backend leaves Connected (`xl
/// network-detach`, the backend going away) the link is down, the frontend closes as the
/// protocol asks (so the toolstack's detach completes), and everything it granted is released.
///
/// It is a smoltcp [`Device`]: the vif's, until the link goes down; then it receives and
/// sends nothing (with the capabilities the vif had).
pub struct XenVif {
    vif: Option<Vif>,
    node: String,
    caps: DeviceCapabilities,
}

impl XenVif {
    /// The connected `vif` at xenstore node `node`.
    pub fn new(vif: Vif, node: &str) -> XenVif {
        XenVif {
            caps: vif.capabilities(),
            vif: Some(vif),
            node: node.into(),
        }
    }

    /// The vif's counters, while it is up.
    pub fn stats(&self) -> Option<Stats> {
        self.vif.as_ref().map(|v| v.stats())
    }

    /// Checks the backend's state (run it after each poll): when it has left Connected, closes
    /// the frontend and releases the vif.
    pub fn check_backend(&mut self) {
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

impl Device for XenVif {
    type RxToken<'a>
        = NfRxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = NfTxToken<'a, XenHal>
    where
        Self: 'a;

    fn receive(&mut self, t: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        Device::receive(self.vif.as_mut()?, t)
    }
    fn transmit(&mut self, t: Instant) -> Option<Self::TxToken<'_>> {
        Device::transmit(self.vif.as_mut()?, t)
    }
    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}
