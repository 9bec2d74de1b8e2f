//! Preemption: which code may be interrupted by the timer and switched away from.
//!
//! App code (std and the program) may be preempted; the runtime's own code may not (it holds
//! spin locks: the heap, the console, the scheduler, event and xenstore state, none of which
//! another thread could then take on our one vCPU). So every `sys_*` call runs inside a
//! [`Kernel`] section: entering masks event upcalls and counts; leaving the outermost one
//! unmasks them again, once preemption is on, and takes any event that came meanwhile (a
//! hypercall delivers it). The count is global, not per thread: every thread that is not
//! running stopped inside a section (a blocking call, or the preemption upcall), so a switch
//! always goes from one section to another and the count stays 1 across it.
//!
//! Preemption is off until [`start`] (the first spawn: a program with one thread never needs
//! it). From then on, Xen's periodic timer raises an event every [`TICK_NS`]; the event upcall
//! ([`arch::traps::set_upcall_handler`]) finds the count at 0 (app code was interrupted) and
//! calls the scheduler's handler, which yields; anywhere else upcalls are masked, so it does not
//! fire. The tick is stopped while the vCPU idles ([`tick`]).

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use xen::start_info::layout;

/// The preemption tick: a thread that does not block runs at most this long while others wait.
pub const TICK_NS: u64 = 10_000_000;

/// Nesting depth of [`Kernel`] sections (0: app code).
static DEPTH: AtomicU32 = AtomicU32::new(0);

/// Whether preemption is on (upcalls unmasked in app code).
static ON: AtomicBool = AtomicBool::new(false);

/// Whether the periodic timer runs (off while the vCPU idles: nothing to preempt).
static TICKING: AtomicBool = AtomicBool::new(false);

fn set_upcall_mask(masked: bool) {
    xen::events::set_upcalls_masked(masked);
}

fn upcall_pending() -> bool {
    xen::start_info::shared_info().is_some_and(|s| {
        s.vcpu0()
            .load_u8(layout::UPCALL_PENDING, Ordering::SeqCst)
            .unwrap_or(0)
            != 0
    })
}

/// A section of runtime code: not preemptible while it lives (see the module doc).
#[must_use]
pub(crate) struct Kernel(());

/// Enters a [`Kernel`] section.
pub(crate) fn enter() -> Kernel {
    enter_raw();
    Kernel(())
}

/// Enters a section without a guard (the end of a thread, which never leaves it).
pub(crate) fn enter_raw() {
    set_upcall_mask(true);
    DEPTH.fetch_add(1, Ordering::SeqCst);
}

/// Leaves a section entered elsewhere (a new thread starts inside its creator's switch).
pub(crate) fn leave() {
    if DEPTH.fetch_sub(1, Ordering::SeqCst) == 1 && ON.load(Ordering::SeqCst) {
        set_upcall_mask(false);
        if upcall_pending() {
            // Any hypercall returns through Xen's event check: the upcall runs now.
            let _ = arch::hypercall::xen_version();
        }
    }
}

/// Leaves a section without unmasking (the preemption upcall, whose iret unmasks).
pub(crate) fn leave_masked() {
    DEPTH.fetch_sub(1, Ordering::SeqCst);
}

impl Drop for Kernel {
    fn drop(&mut self) {
        leave();
    }
}

/// Whether the running code is app code (no section open): where the upcall may switch.
pub(crate) fn in_app() -> bool {
    DEPTH.load(Ordering::SeqCst) == 0
}

/// Turns preemption on (once): `handler` runs on each event upcall (see the module doc).
/// Called inside a section; upcalls open when it is left.
pub(crate) fn start(handler: arch::traps::UpcallHandler) {
    if ON.swap(true, Ordering::SeqCst) {
        return;
    }
    arch::traps::set_upcall_handler(handler);
    tick(true);
}

/// Starts (`true`) or stops the preemption tick, once preemption is on: the scheduler stops it
/// while every thread is blocked, so an idle guest is not woken 100 times a second.
pub(crate) fn tick(on: bool) {
    if !ON.load(Ordering::SeqCst) || TICKING.swap(on, Ordering::SeqCst) == on {
        return;
    }
    let r = if on {
        arch::hypercall::set_periodic_timer(TICK_NS)
    } else {
        arch::hypercall::stop_periodic_timer()
    };
    if let Err(e) = r {
        xen::println!("xenrt: periodic timer: {e}");
    }
}
