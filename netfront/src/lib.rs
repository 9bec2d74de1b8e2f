//! Xen network frontend (netfront): the split driver that talks to a netback over shared rings,
//! exposed as a smoltcp `phy::Device`.
//!
//! - [`wire`]: the netif ring ABI (xen/io/netif.h) as values copied out of ring slots.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod wire;
