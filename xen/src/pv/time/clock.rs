//! The clock: monotonic nanoseconds since boot from vCPU 0's pvclock and the TSC, and the time of
//! day from the shared_info wall clock.

use super::pvclock::{self, TimeInfo};
use crate::start_info::{layout, shared_info};
use core::sync::atomic::{AtomicU64, Ordering};

static LAST: AtomicU64 = AtomicU64::new(0);

fn time_info() -> Option<TimeInfo> {
    let s = shared_info()?;
    let m = s.mem();
    let t = layout::TIME;
    Some(pvclock::read_consistent(
        || m.load_u32(t, Ordering::Relaxed).unwrap_or(0),
        || TimeInfo {
            tsc_timestamp: m.load_u64(t + 8, Ordering::Relaxed).unwrap_or(0),
            system_time: m.load_u64(t + 16, Ordering::Relaxed).unwrap_or(0),
            tsc_to_system_mul: m.load_u32(t + 24, Ordering::Relaxed).unwrap_or(0),
            tsc_shift: m.load_u8(t + 28, Ordering::Relaxed).unwrap_or(0) as i8,
            flags: m.load_u8(t + 29, Ordering::Relaxed).unwrap_or(0),
        },
    ))
}

/// Nanoseconds of Xen system time (since the host booted, shared with Xen's timers); never goes
/// backwards. 0 before boot mapped shared_info.
pub fn now_ns() -> u64 {
    let Some(info) = time_info() else { return 0 };
    let t = pvclock::system_time_ns(&info, arch::cpu::rdtsc());
    // Updates to the time info can step back by a few ns: keep the clock monotonic.
    let prev = LAST.fetch_max(t, Ordering::AcqRel);
    prev.max(t)
}

/// TSC frequency Xen reports, in Hz (0 before boot mapped shared_info).
pub fn tsc_hz() -> u64 {
    time_info().map_or(0, |i| i.tsc_hz())
}

/// Nanoseconds since the Unix epoch.
pub fn wallclock_ns() -> u64 {
    let Some(s) = shared_info() else { return 0 };
    let (sec, nsec) = s.wallclock_base();
    let wc = pvclock::WallClock::new(sec as u32, nsec, (sec >> 32) as u32);
    pvclock::wallclock_ns(&wc, now_ns())
}
