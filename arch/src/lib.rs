//! x86_64 paravirtualized (PV) entry and CPU support for the xenrt runtime: the ELF notes Xen reads
//! to build the domain, the entry point and boot stack, the hypercall page and hypercalls, page
//! tables, and the trap table.
//!
//! This is the bottom of the runtime and the main home of `unsafe`. Everything above it is
//! architecture-neutral: no other crate mentions the architecture.
#![cfg_attr(not(test), no_std)]

#[cfg(any(target_os = "none", target_os = "hermit"))]
pub mod context;
pub mod cpu;
#[cfg(any(target_os = "none", target_os = "hermit"))]
pub mod entry;
pub mod hypercall;
pub mod mapping;
pub mod mode;
pub mod paging;
#[cfg(any(target_os = "none", target_os = "hermit"))]
pub mod pvh;
pub mod traps;
