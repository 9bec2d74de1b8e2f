//! Xen ABI and services for the xenrt unikernel runtime.
//!
//! This crate is the runtime an application links against: it boots the guest (see [`boot`] for
//! the whole sequence from the PV entry point to the app's `main`), and provides the Xen services
//! every guest needs: start_info and shared_info, memory (the physical-to-machine map, a
//! page-frame allocator, the global heap), the console, the clock and timers, event channels,
//! grant tables, xenstore and the xenbus frontend state machine.
//!
//! Only the hypercall / shared-page boundary uses `unsafe` (with `arch` below it). Ring, xenstore
//! and driver logic is safe Rust over [`shmem::ShMem`], so it builds and is tested on the host
//! against simulated peers and runs unchanged on Xen.
#![cfg_attr(not(test), no_std)]

extern crate alloc;
// The host build (tests, simulators) keeps per-thread state (exec's current timer queue).
#[cfg(all(not(test), not(target_os = "none")))]
extern crate std;

pub mod exec;
pub mod proto;
pub mod pv;
pub mod shmem;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod stats;

// The crate's paths from before the split (`xen::xenstore`, `xen::events`, ...) stay the public
// ones, and the modules use them among themselves (`crate::events`).
pub use proto::{cmdline, grant, hal, ring, xenbus, xenstore};
pub use pv::{boot, console, domain, events, fault, mm, platform, sched, start_info, time};

/// The Xen version we run on, as (major, minor).
pub fn version() -> (u16, u16) {
    arch::hypercall::xen_version()
}
