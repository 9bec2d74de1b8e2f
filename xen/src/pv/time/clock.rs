//! The clock: monotonic nanoseconds since boot from vCPU 0's pvclock and the TSC, and the time of
//! day from the shared_info wall clock.

use super::pvclock::{self, TimeInfo};
use crate::start_info::{layout, shared_info};
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};

static LAST: AtomicU64 = AtomicU64::new(0);
/// [`pvclock::Continuity`]'s offset (0 until the first suspend).
static OFFSET: AtomicI64 = AtomicI64::new(0);

fn continuity() -> pvclock::Continuity {
    pvclock::Continuity {
        offset: OFFSET.load(Ordering::Acquire),
    }
}

/// Xen's own system time now (what its timers and the wall clock count in).
fn xen_now_ns() -> Option<u64> {
    let info = time_info()?;
    Some(pvclock::system_time_ns(&info, arch::cpu::rdtsc()))
}

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

/// The guest's monotonic clock in nanoseconds: Xen system time (since the host booted) until
/// the first save/restore, then continued from where it stopped ([`pvclock::Continuity`]);
/// never goes backwards. 0 before boot mapped shared_info.
pub fn now_ns() -> u64 {
    let Some(xen) = xen_now_ns() else {
        return LAST.load(Ordering::Acquire);
    };
    let t = continuity().guest_ns(xen);
    // Updates to the time info can step back by a few ns: keep the clock monotonic.
    let prev = LAST.fetch_max(t, Ordering::AcqRel);
    prev.max(t)
}

/// Xen system time of guest time `guest_ns` (see [`now_ns`]): what `set_timer_op` and
/// `SCHEDOP_poll` deadlines are given in.
pub fn to_xen_ns(guest_ns: u64) -> u64 {
    continuity().xen_ns(guest_ns)
}

/// After a suspend (in a new domain, or cancelled): the guest's clock continues from the last
/// reading, `stopped_at`, whatever Xen's system time did meanwhile. Call once the (new)
/// shared_info is mapped.
pub(crate) fn resume(stopped_at: u64) {
    if let Some(xen) = xen_now_ns() {
        OFFSET.store(
            pvclock::Continuity::resumed(stopped_at, xen).offset,
            Ordering::Release,
        );
    }
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
    pvclock::wallclock_ns(&wc, xen_now_ns().unwrap_or(0))
}
