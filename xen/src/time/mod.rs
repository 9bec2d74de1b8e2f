//! Time: the pvclock arithmetic ([`pvclock`]) that turns Xen's per-vCPU time info and the TSC
//! into nanoseconds since boot, and the wall clock into nanoseconds since the Unix epoch.

pub mod pvclock;
