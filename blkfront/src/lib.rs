//! Xen block frontend (blkfront): the split driver that talks to a blkback over a shared ring,
//! with a blocking block API for applications.
//!
//! - [`wire`]: the blkif ring ABI as byte images, checked against `<xen/io/blkif.h>`.
//! - [`driver`]: [`Blkfront`], the connection (xenbus handshake, ring, data pool) and the block
//!   API (`read`/`write` at any byte offset, `read_blocks`/`write_blocks`, `flush`, `barrier`,
//!   `discard`), with every backend response checked.
//! - [`disk`]: the disks of a guest on Xen ([`disk::list`], [`disk::open`]): the driver over
//!   [`xen::platform::XenHal`], waiting in Xen's idle loop.
//! - [`sim`]: a simulated blkback over [`xen::hal::SimHal`] and the simulated xenstore, with fault
//!   injection, for tests, doctests and fuzzing.
//!
//! The platform comes in through [`xen::hal::Hal`] (pages, grants, event channel, clock), the
//! xenstore [`Transport`](xen::xenstore::Transport) and [`Wait`] (how to block until the backend
//! answers).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod disk;
pub mod driver;
pub mod sim;
pub mod wire;

pub use driver::{BackendError, Blkfront, Config, Error, Features, Stats, Wait};
