//! Time: the pvclock arithmetic ([`pvclock`]) that turns Xen's per-vCPU time info and the TSC
//! into nanoseconds since boot, and the wall clock into nanoseconds since the Unix epoch.

pub mod pvclock;

mod clock;
pub(crate) use clock::resume;
pub use clock::{now_ns, to_xen_ns, tsc_hz, wallclock_ns};

/// The one clock interface (defined with the protocol logic, which needs it without the PV
/// glue): on Xen it is [`now_ns`] ([`crate::platform::XenClock`]), on the host a simulated one.
pub use crate::proto::xenbus::Clock;
