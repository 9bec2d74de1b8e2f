//! Xen ABI and services for the xenrt unikernel runtime.
//!
//! This crate is the runtime an application links against: it boots the guest (see [`boot`] for
//! the whole sequence from the PV entry point to the app's `main`), and provides the Xen services
//! every guest needs: start_info and shared_info, memory (the physical-to-machine map, a
//! page-frame allocator, the global heap), the console, the clock and timers, event channels,
//! grant tables, xenstore and the xenbus frontend state machine.
//!
//! It is split by concern:
//! - [`proto`]: the safe protocol logic (shared rings, xenstore, xenbus, grant-table bookkeeping,
//!   the drivers' [`hal::Hal`] trait, the command line), `forbid(unsafe_code)`, written over
//!   [`shmem::ShMem`] and small traits so it builds and is tested on the host against simulated
//!   peers and runs unchanged on Xen;
//! - [`pv`]: the PV platform glue (boot, domain facts and exit, memory, events, start_info,
//!   time, console, faults, the idle loop, and [`platform`], the Xen side of proto's services);
//! - [`shmem`], the shared-memory boundary; [`exec`], the async executor; [`stats`];
//! - `sim` (feature `sim`, and this crate's own tests): the simulators and test helpers.
//!
//! Every module keeps its path from before the split at the crate root (`xen::xenstore`,
//! `xen::events`, ...). Only the shared-page boundary uses `unsafe` here; hypercalls are `arch`'s
//! typed functions (no hypercall number or raw call above `arch`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;
// The host build (tests, simulators) keeps per-thread state (exec's current timer queue).
#[cfg(all(not(test), not(any(target_os = "none", target_os = "hermit"))))]
extern crate std;

pub mod exec;
pub mod proto;
pub mod pv;
pub mod pvh;
pub mod shmem;
pub mod signal;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod stats;

// The crate's paths from before the split (`xen::xenstore`, `xen::events`, ...) stay the public
// ones, and the modules use them among themselves (`crate::events`).
pub use proto::{cmdline, grant, hal, ring, xenbus, xenstore};
pub use pv::{
    boot, console, domain, events, fault, mm, platform, sched, start_info, suspend, time,
};

/// The Xen version we run on, as (major, minor).
pub fn version() -> (u16, u16) {
    arch::hypercall::xen_version()
}
