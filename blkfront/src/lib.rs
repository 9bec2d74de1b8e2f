//! Xen block frontend (blkfront): the split driver that talks to a blkback over a shared ring,
//! with an async block API and blocking wrappers for applications.
//!
//! - [`wire`]: the blkif ring ABI as byte images, checked against `<xen/io/blkif.h>`.
//! - `connect`: the xenbus handshake ([`Blkfront::connect`], [`Blkfront::disconnect`]) and
//!   what it negotiates ([`Config`], [`Features`]).
//! - [`io`]: the transfer engine: requests, grants, indirect descriptors, responses, and how
//!   the ring is shared between operations in flight.
//! - `api`: the block API: [`Blkfront`], whose operations are futures
//!   (`disk.read(offset, buf).await`, `write`, `flush`, ...) and which is an
//!   [`exec::Source`](xen::exec::Source) for the executor that runs them; [`Blocking`], the
//!   same calls run to completion.
//! - [`error`]: every failure ([`Error`]) and the policy towards a misbehaving backend.
//! - `disk` (on Xen): the disks of a guest (`disk::list`, `disk::open`, `disk::connect`).
//! - `sim` (feature `sim`, for tests, doctests and fuzzing): a simulated blkback over
//!   [`xen::hal::SimHal`] and the simulated xenstore, with fault injection.
//!
//! The platform comes in through [`xen::hal::Hal`] (pages, grants, event channel, clock) and
//! the xenstore [`Transport`](xen::xenstore::Transport); the blocking calls wait with
//! [`xen::exec::Park`].
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

mod api;
mod connect;
#[cfg(target_os = "none")]
pub mod disk;
pub mod error;
pub mod io;
#[cfg(feature = "sim")]
pub mod sim;
pub mod wire;

pub use api::{Blkfront, Blocking, Io};
pub use connect::MAX_RING_PAGE_ORDER;
pub use error::{BackendError, Error};
pub use io::Config;
pub use io::Features;
pub use io::Stats;
