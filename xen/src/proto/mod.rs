//! The safe protocol logic: shared rings, the xenstore wire format, ring and client (with a
//! simulated xenstored behind the `sim` feature), the xenbus frontend state machine, grant-table
//! bookkeeping, the platform trait split drivers are written against ([`hal::Hal`]) and the guest
//! command line.
//!
//! Nothing here touches Xen directly or uses `unsafe`: it works over [`ShMem`](crate::shmem::ShMem)
//! and traits ([`xenstore::Transport`], [`hal::Hal`], [`xenbus::Clock`]), so it builds and is
//! tested on the host against simulated peers and runs unchanged on Xen, where [`crate::pv`]
//! supplies the real transport, grant frames and event channels.
#![forbid(unsafe_code)]

pub mod cmdline;
pub mod grant;
pub mod hal;
pub mod ring;
pub mod xenbus;
pub mod xenstore;
