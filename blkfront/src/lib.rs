//! Xen block frontend (blkfront): the split driver that talks to a blkback over a shared ring.
//!
//! - [`wire`]: the blkif ring ABI as byte images, checked against `<xen/io/blkif.h>`.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod wire;
