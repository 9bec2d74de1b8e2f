//! The PVH platform side: what differs from a PV guest before the shared boot takes over
//! ([`boot`]: hvm_start_info instead of start_info, our own page tables, shared_info placed with
//! `XENMEM_add_to_physmap`, console and xenstore from HVM parameters) and [`start`], the
//! hvm_start_info parser. Everything after (memory, events, grants, xenstore, the drivers, the
//! app) is the PV code unchanged: it works in pfns and ports, and the few operations that
//! differ dispatch in arch and the platform layer (`arch::mode`).

#[cfg(any(target_os = "none", target_os = "hermit"))]
pub mod boot;
pub mod start;
