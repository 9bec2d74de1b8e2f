//! The arithmetic of Xen's paravirtualised clock (pvclock), apart from the shared page.
//!
//! Xen publishes, per vCPU, a [`VcpuTimeInfo`] (`struct vcpu_time_info` in xen.h, inside
//! `shared_info.vcpu_info[n].time`): the TSC and the system time (ns since boot) at its last
//! update, and a multiplier and shift converting TSC ticks to ns. The current system time is
//!
//! ```text
//! system_time + ((((tsc - tsc_timestamp) << tsc_shift) * tsc_to_system_mul) >> 32)
//! ```
//!
//! (a negative shift shifts right), computed here by [`system_time_ns`] in 128-bit arithmetic so
//! large deltas cannot overflow. The wall clock ([`WallClock`], `shared_info.wc_*`) is the Unix
//! time at system time 0, so the time of day is wall clock + system time ([`wallclock_ns`]).
//!
//! Both structures are updated with a version counter, like a seqlock: odd while an update is in
//! progress, bumped before and after. [`read_consistent`] runs that retry loop over closures that
//! read the version and the fields, so the shared-page code supplies the loads and the loop is
//! tested on the host.

use core::fmt;
use core::sync::atomic::{fence, Ordering};

/// `XEN_PVCLOCK_TSC_STABLE_BIT`: the TSC is stable across vCPUs.
pub const TSC_STABLE: u8 = 1 << 0;
/// `XEN_PVCLOCK_GUEST_STOPPED`: the guest was paused (for the guest's watchdogs).
pub const GUEST_STOPPED: u8 = 1 << 1;

/// `struct vcpu_time_info` from xen.h, byte for byte (32 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuTimeInfo {
    /// Update counter: odd while Xen is updating the fields.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// TSC at the last update.
    pub tsc_timestamp: u64,
    /// System time (ns since boot) at the last update.
    pub system_time: u64,
    /// TSC-to-ns multiplier, a 32.32 fixed-point fraction.
    pub tsc_to_system_mul: u32,
    /// Shift applied to the TSC delta before the multiply; negative shifts right.
    pub tsc_shift: i8,
    /// [`TSC_STABLE`], [`GUEST_STOPPED`].
    pub flags: u8,
    /// Padding.
    pub pad1: [u8; 2],
}

/// The fields of a [`VcpuTimeInfo`] that give the time, read consistently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeInfo {
    /// TSC at the last update.
    pub tsc_timestamp: u64,
    /// System time (ns since boot) at the last update.
    pub system_time: u64,
    /// TSC-to-ns multiplier (32.32 fixed point).
    pub tsc_to_system_mul: u32,
    /// Pre-multiply shift; negative shifts right.
    pub tsc_shift: i8,
    /// [`TSC_STABLE`], [`GUEST_STOPPED`].
    pub flags: u8,
}

impl From<VcpuTimeInfo> for TimeInfo {
    fn from(v: VcpuTimeInfo) -> TimeInfo {
        TimeInfo {
            tsc_timestamp: v.tsc_timestamp,
            system_time: v.system_time,
            tsc_to_system_mul: v.tsc_to_system_mul,
            tsc_shift: v.tsc_shift,
            flags: v.flags,
        }
    }
}

impl TimeInfo {
    /// The TSC frequency these parameters describe, in Hz: `((10^9 << 32) / mul) >> shift`
    /// (`<<` for a negative shift). 0 if `mul` is 0.
    pub fn tsc_hz(&self) -> u64 {
        if self.tsc_to_system_mul == 0 {
            return 0;
        }
        let hz = (1_000_000_000u128 << 32) / u128::from(self.tsc_to_system_mul);
        let hz = match self.tsc_shift {
            s if s >= 0 => hz >> s.unsigned_abs().min(127),
            s if hz.leading_zeros() >= u32::from(s.unsigned_abs()) => hz << s.unsigned_abs(),
            _ => u128::MAX,
        };
        u64::try_from(hz).unwrap_or(u64::MAX)
    }
}

/// Converts a TSC delta to ns: `((delta << shift) * mul) >> 32`, shifting right for a negative
/// shift. Exact for every input (the intermediate product can need 127 bits, done in `u128`);
/// the result saturates at `u64::MAX` (only reachable with a nonsensical shift).
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 {
        // ≤ 64 + 127 bits would overflow; shifts this large are not real pvclock values.
        if shift > 63 && delta != 0 {
            return u64::MAX;
        }
        u128::from(delta) << shift
    } else {
        u128::from(
            delta
                .checked_shr(u32::from(shift.unsigned_abs()))
                .unwrap_or(0),
        )
    };
    // (d * mul) >> 32 without overflowing u128: split d at bit 32.
    let mul = u128::from(mul);
    let hi = (d >> 32) * mul; // < 2^95 * 2^32
    let lo = ((d & 0xffff_ffff) * mul) >> 32;
    u64::try_from(hi + lo).unwrap_or(u64::MAX)
}

/// System time in ns since boot at TSC value `tsc`. The TSC distance is taken modulo 2^64, as
/// Linux's pvclock does: Xen may stamp the first time info before the domain's TSC epoch, so
/// `tsc_timestamp` is "negative" (near 2^64) while the guest's TSC counts from 0 (seen in the
/// lab: an unsigned comparison froze the clock for a second, until Xen's next update). A
/// `tsc` truly before `tsc_timestamp` (read before Xen's update) counts as no time elapsed;
/// the sum saturates.
pub fn system_time_ns(info: &TimeInfo, tsc: u64) -> u64 {
    let delta = tsc.wrapping_sub(info.tsc_timestamp);
    let delta = if (delta as i64) < 0 { 0 } else { delta };
    info.system_time
        .saturating_add(scale_delta(delta, info.tsc_to_system_mul, info.tsc_shift))
}

/// The wall clock published in `shared_info`: the Unix time at system time 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WallClock {
    /// Seconds since the Unix epoch (`wc_sec_hi << 32 | wc_sec`).
    pub sec: u64,
    /// Nanoseconds (`wc_nsec`), < 10^9 from a well-behaved Xen.
    pub nsec: u32,
}

impl WallClock {
    /// From `shared_info`'s `wc_sec`, `wc_nsec` and `wc_sec_hi` (the high half of the seconds;
    /// on x86_64 a field right after `wc_nsec`, on 32-bit x86 in `arch`, 0 if unknown).
    pub fn new(wc_sec: u32, wc_nsec: u32, wc_sec_hi: u32) -> WallClock {
        WallClock {
            sec: u64::from(wc_sec_hi) << 32 | u64::from(wc_sec),
            nsec: wc_nsec,
        }
    }
}

/// Nanoseconds since the Unix epoch when the system time is `system_time_ns`: wall clock + system
/// time. Saturates (in the year 2554).
pub fn wallclock_ns(wc: &WallClock, system_time_ns: u64) -> u64 {
    wc.sec
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(wc.nsec))
        .saturating_add(system_time_ns)
}

/// A version-protected read that did not settle within the allowed tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornRead {
    /// Tries made.
    pub tries: u32,
    /// The last version seen.
    pub version: u32,
}

impl fmt::Display for TornRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no consistent read after {} tries (version {}): the hypervisor keeps updating",
            self.tries, self.version
        )
    }
}

/// Reads version-protected data: reads the version, then the fields, then the version again, and
/// retries while the first version is odd (update in progress) or the two differ (updated
/// meanwhile). `version` and `fields` do the loads (e.g. relaxed atomics on the shared page);
/// this function orders them with acquire fences. Gives up with [`TornRead`] after `max_tries`.
pub fn try_read_consistent<T>(
    max_tries: u32,
    mut version: impl FnMut() -> u32,
    mut fields: impl FnMut() -> T,
) -> Result<T, TornRead> {
    let mut last = 0;
    for _ in 0..max_tries {
        let before = version();
        // The field loads below must not be satisfied before the version load.
        fence(Ordering::Acquire);
        let data = fields();
        // The second version load must not be satisfied before the field loads.
        fence(Ordering::Acquire);
        let after = version();
        if before & 1 == 0 && before == after {
            return Ok(data);
        }
        last = after;
        core::hint::spin_loop();
    }
    Err(TornRead {
        tries: max_tries,
        version: last,
    })
}

/// [`try_read_consistent`] without a limit: spins until a read is consistent (Xen's updates take
/// microseconds, so a guest sees at most a retry or two).
pub fn read_consistent<T>(mut version: impl FnMut() -> u32, mut fields: impl FnMut() -> T) -> T {
    loop {
        if let Ok(data) = try_read_consistent(u32::MAX, &mut version, &mut fields) {
            return data;
        }
    }
}

/// The guest's monotonic clock across save/restore: Xen's system time plus an offset, so
/// that after a restore (where Xen's system time is another host's, or this host's later) the
/// guest's clock continues from where it stopped: no step back, and no jump forward by the time
/// spent saved (which would fire every TCP and keep-alive timer at once). 0 until a suspend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Continuity {
    /// Guest time minus Xen system time, in ns.
    pub offset: i64,
}

impl Continuity {
    /// Guest time at Xen system time `xen_ns` (saturating at 0 and `u64::MAX`).
    pub fn guest_ns(&self, xen_ns: u64) -> u64 {
        clamp_u64(i128::from(xen_ns) + i128::from(self.offset))
    }

    /// Xen system time at guest time `guest_ns`, for Xen's timers (`set_timer_op`,
    /// `SCHEDOP_poll`); never 0 (which means "no timeout" to Xen).
    pub fn xen_ns(&self, guest_ns: u64) -> u64 {
        clamp_u64(i128::from(guest_ns) - i128::from(self.offset)).max(1)
    }

    /// The continuity after a resume: guest time `stopped_at` (the last reading before the
    /// suspend) is now Xen system time `xen_now`.
    pub fn resumed(stopped_at: u64, xen_now: u64) -> Continuity {
        let d = i128::from(stopped_at) - i128::from(xen_now);
        Continuity {
            offset: d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
        }
    }
}

fn clamp_u64(v: i128) -> u64 {
    v.clamp(0, i128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use core::mem::{offset_of, size_of};

    #[test]
    fn continuity_resumes_where_the_clock_stopped_whatever_xen_time_did() {
        let c = Continuity::default();
        assert_eq!(
            (c.guest_ns(5), c.xen_ns(5)),
            (5, 5),
            "no offset before a suspend"
        );
        // Stopped at guest 100 s; the new host's Xen time is 3 s (a younger host) or 5000 s.
        for xen_now in [3_000_000_000u64, 5_000_000_000_000] {
            let c = Continuity::resumed(100_000_000_000, xen_now);
            assert_eq!(c.guest_ns(xen_now), 100_000_000_000);
            assert_eq!(
                c.guest_ns(xen_now + 7),
                100_000_000_007,
                "and runs at Xen's rate"
            );
            // A deadline 1 s ahead of the guest is 1 s ahead of Xen too.
            assert_eq!(c.xen_ns(101_000_000_000), xen_now + 1_000_000_000);
            // A second resume composes: stop at guest 150 s, come back at Xen 10 s.
            let c2 = Continuity::resumed(c.guest_ns(xen_now + 50_000_000_000), 10_000_000_000);
            assert_eq!(c2.guest_ns(10_000_000_000), 150_000_000_000);
        }
        let c = Continuity::resumed(10, 1_000);
        assert_eq!(c.guest_ns(0), 0, "saturates instead of wrapping below 0");
        assert_eq!(c.xen_ns(0), 990);
        let c = Continuity::resumed(1_000, 10);
        assert_eq!(
            c.xen_ns(0),
            1,
            "a past deadline is never Xen's 0 (no timeout)"
        );
        assert_eq!(c.guest_ns(u64::MAX), u64::MAX, "saturates at the top");
        let c = Continuity::resumed(u64::MAX, 0);
        assert_eq!(c.offset, i64::MAX);
    }

    /// Offsets from `struct vcpu_time_info` in /usr/include/xen/xen.h (interface > 0x040600).
    #[test]
    fn layout_matches_xen_h() {
        assert_eq!(size_of::<VcpuTimeInfo>(), 32);
        assert_eq!(offset_of!(VcpuTimeInfo, version), 0);
        assert_eq!(offset_of!(VcpuTimeInfo, pad0), 4);
        assert_eq!(offset_of!(VcpuTimeInfo, tsc_timestamp), 8);
        assert_eq!(offset_of!(VcpuTimeInfo, system_time), 16);
        assert_eq!(offset_of!(VcpuTimeInfo, tsc_to_system_mul), 24);
        assert_eq!(offset_of!(VcpuTimeInfo, tsc_shift), 28);
        assert_eq!(offset_of!(VcpuTimeInfo, flags), 29);
        assert_eq!(offset_of!(VcpuTimeInfo, pad1), 30);
    }

    /// xen-sys's bindgen of the same struct (older interface: `pad1: [i8; 3]` where we have
    /// `flags` + `pad1[2]`) agrees on every offset.
    #[test]
    fn layout_matches_xen_sys() {
        use xen_sys::vcpu_time_info as X;
        assert_eq!(size_of::<X>(), size_of::<VcpuTimeInfo>());
        assert_eq!(offset_of!(X, version), offset_of!(VcpuTimeInfo, version));
        assert_eq!(offset_of!(X, pad0), offset_of!(VcpuTimeInfo, pad0));
        assert_eq!(
            offset_of!(X, tsc_timestamp),
            offset_of!(VcpuTimeInfo, tsc_timestamp)
        );
        assert_eq!(
            offset_of!(X, system_time),
            offset_of!(VcpuTimeInfo, system_time)
        );
        assert_eq!(
            offset_of!(X, tsc_to_system_mul),
            offset_of!(VcpuTimeInfo, tsc_to_system_mul)
        );
        assert_eq!(
            offset_of!(X, tsc_shift),
            offset_of!(VcpuTimeInfo, tsc_shift)
        );
        assert_eq!(offset_of!(X, pad1), offset_of!(VcpuTimeInfo, flags));
        // The wall-clock fields: wc_sec_hi follows wc_nsec on x86_64.
        use xen_sys::shared_info as S;
        assert_eq!(offset_of!(S, wc_sec), offset_of!(S, wc_version) + 4);
        assert_eq!(offset_of!(S, wc_nsec), offset_of!(S, wc_version) + 8);
        assert_eq!(offset_of!(S, wc_sec_hi), offset_of!(S, wc_version) + 12);
    }

    fn info(tsc_timestamp: u64, system_time: u64, mul: u32, shift: i8) -> TimeInfo {
        TimeInfo {
            tsc_timestamp,
            system_time,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            flags: 0,
        }
    }

    #[test]
    fn one_ns_per_tick() {
        // mul = 0.5, shift 1: (delta * 2) * 0.5 = delta.
        let i = info(1000, 5_000, 0x8000_0000, 1);
        assert_eq!(system_time_ns(&i, 1000), 5_000);
        assert_eq!(system_time_ns(&i, 1001), 5_001);
        assert_eq!(system_time_ns(&i, 10_000_001_000), 5_000 + 10_000_000_000);
        assert_eq!(i.tsc_hz(), 1_000_000_000);
    }

    #[test]
    fn a_timestamp_before_the_domains_tsc_epoch_still_counts() {
        // Read in a lab domU right after boot: Xen's first stamp is 1,219,758,730 ticks
        // "before" the guest's TSC 0, and 2,351,435,458 ticks have passed since it.
        let i = info(
            18_446_744_072_489_792_886,
            3_396_703_293_995,
            0x8000_0000,
            1,
        );
        assert_eq!(
            system_time_ns(&i, 1_131_676_728),
            3_396_703_293_995 + 2_351_435_458
        );
        // A TSC read just before a fresh stamp is no time, not 2^64 ticks.
        let j = info(1_000_000, 7, 0x8000_0000, 1);
        assert_eq!(system_time_ns(&j, 999_000), 7);
    }

    #[test]
    fn negative_shifts() {
        // 4 GHz TSC: shift -1 halves, mul 0.5 halves again: 1 ns per 4 ticks.
        let i = info(0, 0, 0x8000_0000, -1);
        assert_eq!(system_time_ns(&i, 4_000_000_000), 1_000_000_000);
        assert_eq!(system_time_ns(&i, 3), 0, "fractions are truncated");
        assert_eq!(i.tsc_hz(), 4_000_000_000);
        assert_eq!(scale_delta(u64::MAX, u32::MAX, -64), 0);
        assert_eq!(scale_delta(u64::MAX, u32::MAX, -128), 0);
        assert_eq!(scale_delta(1 << 40, 1 << 31, -8), 1 << 31);
    }

    #[test]
    fn realistic_frequency() {
        // A 2.5 GHz TSC as Xen encodes it: shift -1, mul 0.8 (Xen keeps mul ≥ 2^31).
        // 2.5e9 ticks >> 1 = 1.25e9, × 0.8 = 1e9 ns.
        let mul = ((1u128 << 32) * 4 / 5) as u32;
        let i = info(0, 0, mul, -1);
        let one_second = system_time_ns(&i, 2_500_000_000);
        assert!(one_second.abs_diff(1_000_000_000) <= 1, "{one_second}");
        assert!(i.tsc_hz().abs_diff(2_500_000_000) <= 1, "{}", i.tsc_hz());
    }

    #[test]
    fn big_deltas_need_128_bits() {
        // delta = 2^62 ticks at 1 ns/tick: delta << 1 is 2^63, times mul 2^31 is 2^94 — far past
        // 64 bits in the intermediate, but the result is exactly 2^62.
        assert_eq!(scale_delta(1 << 62, 0x8000_0000, 1), 1 << 62);
        assert_eq!(scale_delta(u64::MAX, 0x8000_0000, 1), u64::MAX);
        // A days-long delta with a 3 GHz clock: 10^15 ticks.
        let mul = ((1u128 << 32) * 2 / 3) as u32; // shift -1 → ×1/2 ×2/3 = 1/3 ns per tick
        let ns = scale_delta(1_000_000_000_000_000, mul, -1);
        assert!(ns.abs_diff(333_333_333_333_333) <= 1_000_000, "{ns}");
        // Shift 63 with the largest values: 127-bit intermediate, result saturates.
        assert_eq!(scale_delta(u64::MAX, u32::MAX, 63), u64::MAX);
        assert_eq!(scale_delta(1, 1, 127), u64::MAX);
        assert_eq!(scale_delta(0, u32::MAX, 127), 0);
        // Compare with a wide reference computation on pseudo-random inputs.
        let mut s = 0x1234_5678u64;
        for _ in 0..10_000 {
            let delta = xorshift(&mut s) >> (xorshift(&mut s) % 64);
            let mul = xorshift(&mut s) as u32;
            let shift = (xorshift(&mut s) % 9) as i8 - 4;
            let want = if shift >= 0 {
                ((u128::from(delta) << shift) * u128::from(mul)) >> 32
            } else {
                (u128::from(delta >> -shift) * u128::from(mul)) >> 32
            };
            let want = u64::try_from(want).unwrap_or(u64::MAX);
            assert_eq!(scale_delta(delta, mul, shift), want);
        }
    }

    #[test]
    fn tsc_behind_timestamp_is_no_time() {
        let i = info(1_000_000, 42, 0x8000_0000, 1);
        assert_eq!(system_time_ns(&i, 999_999), 42);
        assert_eq!(system_time_ns(&i, 0), 42);
        let i = info(0, u64::MAX - 1, 0x8000_0000, 1);
        assert_eq!(system_time_ns(&i, 100), u64::MAX);
    }

    #[test]
    fn from_vcpu_time_info() {
        let v = VcpuTimeInfo {
            version: 2,
            tsc_timestamp: 1,
            system_time: 2,
            tsc_to_system_mul: 3,
            tsc_shift: -4,
            flags: TSC_STABLE,
            ..VcpuTimeInfo::default()
        };
        assert_eq!(TimeInfo::from(v), {
            let mut i = info(1, 2, 3, -4);
            i.flags = TSC_STABLE;
            i
        });
        assert_eq!(info(0, 0, 0, 0).tsc_hz(), 0);
    }

    #[test]
    fn wallclock() {
        let wc = WallClock::new(1_700_000_000, 500, 0);
        assert_eq!(wc.sec, 1_700_000_000);
        assert_eq!(wallclock_ns(&wc, 2_000_000_000), 1_700_000_002_000_000_500);
        let wc = WallClock::new(5, 0, 1);
        assert_eq!(wc.sec, (1 << 32) + 5);
        assert_eq!(wallclock_ns(&wc, 0), ((1u64 << 32) + 5) * 1_000_000_000);
        assert_eq!(wallclock_ns(&WallClock::new(0, 0, 5), 0), u64::MAX);
        // Together: boot at a known wall time, 1.5 s of 1 ns ticks later.
        let i = info(10, 0, 0x8000_0000, 1);
        let wc = WallClock::new(1_000, 250_000_000, 0);
        assert_eq!(
            wallclock_ns(&wc, system_time_ns(&i, 1_500_000_010)),
            1_001_750_000_000
        );
    }

    /// A simulated shared page: each load of the version pops the next scripted value; the
    /// fields are whatever the "hypervisor" last wrote.
    struct Script {
        versions: Vec<u32>,
        at: Cell<usize>,
        field_reads: Cell<u32>,
    }

    impl Script {
        fn new(versions: &[u32]) -> Script {
            Script {
                versions: versions.to_vec(),
                at: Cell::new(0),
                field_reads: Cell::new(0),
            }
        }
        fn version(&self) -> u32 {
            let i = self.at.get();
            self.at.set(i + 1);
            self.versions[i.min(self.versions.len() - 1)]
        }
        fn fields(&self) -> u32 {
            self.field_reads.set(self.field_reads.get() + 1);
            self.field_reads.get()
        }
    }

    #[test]
    fn consistent_read_first_try() {
        let s = Script::new(&[4, 4]);
        assert_eq!(read_consistent(|| s.version(), || s.fields()), 1);
        assert_eq!(s.at.get(), 2);
    }

    #[test]
    fn odd_version_retries() {
        // Update in progress (5, 5), then done (6, 6): the second read is used.
        let s = Script::new(&[5, 5, 6, 6]);
        assert_eq!(read_consistent(|| s.version(), || s.fields()), 2);
    }

    #[test]
    fn changed_version_retries() {
        // 6 → 8 across the read (a whole update happened meanwhile), then stable at 8.
        let s = Script::new(&[6, 8, 8, 8]);
        assert_eq!(read_consistent(|| s.version(), || s.fields()), 2);
        // Updates keep landing: 2→3, 3→4, 4→6, then 6,6.
        let s = Script::new(&[2, 3, 3, 4, 4, 6, 6, 6]);
        assert_eq!(read_consistent(|| s.version(), || s.fields()), 4);
    }

    #[test]
    fn bounded_read_gives_up() {
        let s = Script::new(&[7]); // stuck mid-update
        assert_eq!(
            try_read_consistent(3, || s.version(), || s.fields()),
            Err(TornRead {
                tries: 3,
                version: 7
            })
        );
        assert_eq!(s.field_reads.get(), 3);
        assert_eq!(
            TornRead {
                tries: 3,
                version: 7
            }
            .to_string(),
            "no consistent read after 3 tries (version 7): the hypervisor keeps updating"
        );
        let s = Script::new(&[0, 0]);
        assert_eq!(try_read_consistent(1, || s.version(), || s.fields()), Ok(1));
    }

    #[test]
    fn reads_a_whole_struct() {
        let page = Cell::new(VcpuTimeInfo {
            version: 10,
            tsc_timestamp: 100,
            system_time: 1_000,
            tsc_to_system_mul: 0x8000_0000,
            tsc_shift: 1,
            ..VcpuTimeInfo::default()
        });
        let t: TimeInfo = read_consistent(|| page.get().version, || page.get().into());
        assert_eq!(system_time_ns(&t, 150), 1_050);
    }

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }
}
