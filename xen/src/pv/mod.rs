//! The PV platform glue: what only makes sense inside a Xen PV guest. The boot sequence
//! ([`boot`]), start_info and shared_info, guest memory ([`mm`]: the P2M map, frame allocator,
//! heap), event channels, the clock and timers ([`time`], [`sched`]), the console, fault and
//! panic reports, how the domain ends ([`domain`]), and [`platform`]: the Xen side of the
//! services whose logic is in [`crate::proto`] (the xenstore transport, grant-table frames,
//! `XenHal`, lifecycle control).
//!
//! `unsafe` here is limited to the shared-page boundary (mapping pages as
//! [`ShMem`](crate::shmem::ShMem), the P2M/M2P tables, the heap); hypercalls are arch's typed
//! wrappers.

pub mod boot;
pub mod console;
pub mod domain;
pub mod events;
pub mod fault;
pub mod mm;
pub mod platform;
pub mod sched;
pub mod start_info;
pub mod suspend;
pub mod time;
