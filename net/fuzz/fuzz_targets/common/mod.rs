//! A simulated NIC for the fuzz targets that drive a whole [`net::stack::Net`]: frames
//! queued for the guest are received in order, frames the guest sends are collected. Checksums
//! of received frames are not verified (every frame counts as correct, the worst case: an
//! adversary computing valid checksums); sent ones are computed, so the tests can parse them.

use net::smoltcp;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

/// The wire: what the guest will receive and what it sent (shared with the test).
#[derive(Default)]
pub struct Wire {
    pub to_guest: VecDeque<Vec<u8>>,
    pub from_guest: Vec<Vec<u8>>,
    /// Frames the guest may still send before the device reports a full TX ring (None: no limit).
    pub tx_room: Option<usize>,
}

/// The device half of [`Wire`].
pub struct SimNic(pub Rc<RefCell<Wire>>);

pub struct Rx(Vec<u8>);
pub struct Tx(Rc<RefCell<Wire>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        let mut w = self.0.borrow_mut();
        if let Some(n) = w.tx_room.as_mut() {
            *n = n.saturating_sub(1);
        }
        w.from_guest.push(buf);
        r
    }
}

impl Device for SimNic {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
        let tx = self.transmit(Instant::ZERO)?;
        let frame = self.0.borrow_mut().to_guest.pop_front()?;
        Some((Rx(frame), tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx> {
        (self.0.borrow().tx_room != Some(0)).then(|| Tx(self.0.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.checksum.ipv4 = Checksum::Tx;
        caps.checksum.tcp = Checksum::Tx;
        caps.checksum.udp = Checksum::Tx;
        caps.checksum.icmpv4 = Checksum::Tx;
        caps.checksum.icmpv6 = Checksum::Tx;
        caps
    }
}
