//! Xen network frontend (netfront): the split driver that talks to a netback over shared rings, exposed as a smoltcp `phy::Device`.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
