//! Time: the pvclock arithmetic ([`pvclock`]) that turns Xen's per-vCPU time info and the TSC
//! into nanoseconds since boot, and the wall clock into nanoseconds since the Unix epoch.

pub mod pvclock;

mod clock;
pub use clock::{now_ns, tsc_hz, wallclock_ns};

/// The one clock interface: monotonic nanoseconds. The executor's [`Park`](crate::exec::Park),
/// xenbus [`Deadline`](crate::xenbus::Deadline)s and every [`Hal`](crate::hal::Hal) are clocks;
/// on Xen it is [`now_ns`] ([`crate::platform::XenClock`]), on the host a simulated one.
pub trait Clock {
    /// Nanoseconds since some fixed point; never goes backwards.
    fn now_ns(&self) -> u64;
}
