//! Time: the pvclock arithmetic ([`pvclock`]) that turns Xen's per-vCPU time info and the TSC
//! into nanoseconds since boot, and the wall clock into nanoseconds since the Unix epoch.

pub mod pvclock;

mod clock;
pub use clock::{now_ns, tsc_hz, wallclock_ns};
