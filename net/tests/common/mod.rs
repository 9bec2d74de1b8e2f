//! Helpers shared by the integration tests (each test file uses some of them).
#![allow(dead_code)]

use std::cell::Cell;
use std::rc::Rc;

use net::{IpConfig, Ipv4Mode};
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use xen::exec::Park;

#[allow(unused_imports)]
pub use netfront::sim::data;

/// The guest's and the peer's addresses in the two-stack tests (stack, filter).
pub const GUEST_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 2];
/// See [`GUEST_MAC`].
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
/// See [`GUEST_MAC`].
pub const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
/// See [`GUEST_MAC`].
pub const PEER_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);

/// A static address /24 without a gateway.
pub fn stat(ip: Ipv4Address) -> IpConfig {
    IpConfig {
        v4: Ipv4Mode::Static {
            addr: Ipv4Cidr::new(ip, 24),
            gw: None,
        },
        ..IpConfig::default()
    }
}

/// A simulated clock: parking jumps to the deadline (at most 1 ms ahead: the backend is polled).
pub struct Clock(pub Rc<Cell<u64>>);

impl xen::exec::Clock for Clock {
    fn now_ns(&self) -> u64 {
        self.0.get()
    }
}

impl Park for Clock {
    fn park(&mut self, deadline: Option<u64>) {
        let now = self.0.get();
        let d = deadline.unwrap_or(u64::MAX).min(now + 1_000_000);
        self.0.set(d.max(now + 1));
    }
}
