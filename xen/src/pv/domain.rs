//! The domain's own facts and its end: what boot learned ([`info`], [`cmdline`]), and how the
//! guest stops ([`exit`] with an [`ExitCode`], what an app's `main` returns through [`Exit`]).
//!
//! Boot sets the facts once (`set_info`, `set_cmdline`); everything else only reads them,
//! so the modules that end the domain (faults, lifecycle control) need nothing from boot.

use crate::cmdline::Cmdline;
use crate::console;
use crate::start_info::StartInfo;
use arch::hypercall::{self, ShutdownReason};
use core::fmt;

/// What boot learned, for the app.
#[derive(Clone, Copy)]
pub struct BootInfo {
    /// start_info as Xen wrote it at boot (after a restore, see `xen::start_info::current`).
    pub start_info: StartInfo,
    /// Nanoseconds from the entry point to the call of `main` (from the TSC).
    pub entry_to_main_ns: u64,
    /// The TSC at the entry point (see [`since_entry_ns`]).
    pub entry_tsc: u64,
    /// Xen's runstate times of our vCPU at the entry point (see [`runstate_since_entry`]);
    /// `None` if Xen refused `VCPUOP_get_runstate_info`.
    pub entry_runstate: Option<hypercall::RunstateInfo>,
    /// Frames used for our own page tables.
    pub page_table_frames: usize,
    /// Hypercalls the page-table build took.
    pub page_table_hypercalls: usize,
}

static BOOT: spin::Once<BootInfo> = spin::Once::new();
static GENERATION: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// The TSC when the latest restore into a new domain was taken in (see [`since_resume_ns`]).
static RESUMED_TSC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Restores into a new domain so far (`xen::suspend::generation`, kept here with the domain's
/// other facts so that the platform can read it without the suspend path).
pub fn generation() -> u64 {
    GENERATION.load(core::sync::atomic::Ordering::Acquire)
}

/// A restore into a new domain happened: returns the new generation.
pub(crate) fn next_generation() -> u64 {
    RESUMED_TSC.store(arch::cpu::rdtsc(), core::sync::atomic::Ordering::Release);
    GENERATION.fetch_add(1, core::sync::atomic::Ordering::AcqRel) + 1
}

/// Nanoseconds since the guest was taken into its latest new domain (a restore or a migration;
/// since entry if it never moved), by the TSC.
pub fn since_resume_ns() -> u64 {
    let at = RESUMED_TSC.load(core::sync::atomic::Ordering::Acquire);
    if at == 0 {
        return since_entry_ns();
    }
    let hz = crate::time::tsc_hz().max(1);
    (arch::cpu::rdtsc().wrapping_sub(at) as u128 * 1_000_000_000 / hz as u128) as u64
}
static CMDLINE: spin::Once<Cmdline> = spin::Once::new();

/// Facts from boot (available once `main` runs).
pub fn info() -> &'static BootInfo {
    BOOT.get().expect("boot info is set before main")
}

/// Nanoseconds since the guest's entry point, by the TSC (the guest's own clock: it excludes the
/// toolstack's domain build before the first instruction).
pub fn since_entry_ns() -> u64 {
    let hz = crate::time::tsc_hz().max(1);
    let ticks = arch::cpu::rdtsc().wrapping_sub(info().entry_tsc);
    (ticks as u128 * 1_000_000_000 / hz as u128) as u64
}

/// Where the vCPU's time went between two runstate readings, by Xen's own accounting: on a
/// physical CPU (the guest's own work, hypercalls included), blocked (waiting for an event: a
/// reply from dom0's xenstored or netback, a timer), runnable (ready, but waiting for a
/// physical CPU: steal), offline (paused). Nanoseconds of Xen system time each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Runstate {
    /// On a physical CPU.
    pub running_ns: u64,
    /// Blocked waiting for an event.
    pub blocked_ns: u64,
    /// Runnable but not running.
    pub runnable_ns: u64,
    /// Neither (paused by the toolstack, for instance).
    pub offline_ns: u64,
}

impl Runstate {
    /// The time spent in each state from `then` to `now`, or `None` if a counter went
    /// backwards (readings from two different domains, across a restore).
    pub fn between(then: &hypercall::RunstateInfo, now: &hypercall::RunstateInfo) -> Option<Self> {
        use hypercall::runstate::*;
        let d = |i: usize| now.time[i].checked_sub(then.time[i]);
        Some(Runstate {
            running_ns: d(RUNNING)?,
            blocked_ns: d(BLOCKED)?,
            runnable_ns: d(RUNNABLE)?,
            offline_ns: d(OFFLINE)?,
        })
    }
}

/// Our vCPU's runstate times from the entry point to now, by Xen ([`Runstate`]); `None` if Xen
/// refuses `VCPUOP_get_runstate_info` or the domain was restored since entry (a new domain's
/// vCPU counts from its own start).
pub fn runstate_since_entry() -> Option<Runstate> {
    let then = info().entry_runstate?;
    if generation() != 0 {
        return None;
    }
    let now = hypercall::vcpu_runstate_info(0).ok()?;
    Runstate::between(&then, &now)
}

/// The parsed command line.
pub fn cmdline() -> &'static Cmdline {
    CMDLINE
        .get()
        .expect("the command line is parsed before main")
}

/// Records what boot learned (boot calls this once, just before `main`).
#[cfg_attr(not(any(target_os = "none", target_os = "hermit")), allow(dead_code))]
pub(crate) fn set_info(b: BootInfo) {
    BOOT.call_once(|| b);
}

/// Records the parsed command line (boot calls this once).
#[cfg_attr(not(any(target_os = "none", target_os = "hermit")), allow(dead_code))]
pub(crate) fn set_cmdline(c: Cmdline) -> &'static Cmdline {
    CMDLINE.call_once(|| c)
}

/// How the guest ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Clean power-off (exit status 0 for `scripts/run`).
    Poweroff,
    /// Reboot (xl restarts the domain, or follows `on_reboot`).
    Reboot,
    /// The domain crashed (non-zero for `scripts/run`).
    Crash,
}

/// What `main` may return.
pub trait Exit {
    /// Reports anything worth saying and gives the exit code.
    fn exit_code(self) -> ExitCode;
}

impl Exit for () {
    fn exit_code(self) -> ExitCode {
        ExitCode::Poweroff
    }
}

impl Exit for ExitCode {
    fn exit_code(self) -> ExitCode {
        self
    }
}

impl<E: fmt::Display> Exit for Result<(), E> {
    fn exit_code(self) -> ExitCode {
        match self {
            Ok(()) => ExitCode::Poweroff,
            Err(e) => {
                crate::println!("xenrt: main failed: {e}");
                ExitCode::Crash
            }
        }
    }
}

/// `Ok(code)` ends the domain as `code` says (an app that was asked to reboot, say).
impl<E: fmt::Display> Exit for Result<ExitCode, E> {
    fn exit_code(self) -> ExitCode {
        match self {
            Ok(code) => code,
            Err(e) => {
                crate::println!("xenrt: main failed: {e}");
                ExitCode::Crash
            }
        }
    }
}

/// Ends the domain: flushes the console, then SCHEDOP_shutdown. As dom0 (the fast test tier) a
/// poweroff is turned into a reboot so that QEMU (`-no-reboot`) exits.
pub fn exit(code: ExitCode) -> ! {
    let what = match code {
        ExitCode::Poweroff => "poweroff",
        ExitCode::Reboot => "reboot",
        ExitCode::Crash => "crash",
    };
    crate::println!("xenrt: exit {what}");
    console::flush(1_000_000_000);
    let dom0 = BOOT.get().is_some_and(|b| b.start_info.is_dom0());
    let reason = match code {
        ExitCode::Poweroff if dom0 => ShutdownReason::Reboot,
        ExitCode::Poweroff => ShutdownReason::Poweroff,
        ExitCode::Reboot => ShutdownReason::Reboot,
        ExitCode::Crash => ShutdownReason::Crash,
    };
    loop {
        hypercall::shutdown(reason);
        hypercall::yield_cpu();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arch::hypercall::RunstateInfo;

    fn reading(time: [u64; 4]) -> RunstateInfo {
        RunstateInfo {
            state: 0,
            state_entry_time: 0,
            time,
        }
    }

    #[test]
    fn the_split_is_each_states_change_shown_in_milliseconds() {
        let then = reading([1_000_000, 0, 5_000_000, 0]);
        let now = reading([13_100_000, 20_600_000, 185_000_000, 0]);
        let r = Runstate::between(&then, &now).unwrap();
        assert_eq!(
            r,
            Runstate {
                running_ns: 12_100_000,
                blocked_ns: 180_000_000,
                runnable_ns: 20_600_000,
                offline_ns: 0
            }
        );
    }

    #[test]
    fn a_counter_going_backwards_gives_no_split() {
        let then = reading([5, 0, 5, 0]);
        assert_eq!(Runstate::between(&then, &reading([4, 0, 9, 0])), None);
    }
}
