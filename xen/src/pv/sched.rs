//! Waiting: the idle loop that blocks in Xen until the next event or deadline (never a busy
//! loop), `sleep`, and `wait_until` for code that waits on a condition that events make true.
//!
//! [`block`] is the one wait primitive of the guest, the only place that gives the vCPU to
//! Xen: until any event (SCHEDOP_block, with the one-shot timer at the deadline) or until one
//! port's event (SCHEDOP_poll). [`poll_once`], the idle loop's turn, is built on it: dispatch
//! pending events (each fires its [`Channel`](crate::events::Channel), waking the task or
//! source waiting on it), and if there were none, block until an event or the deadline. The
//! executor parks with it ([`crate::exec::XenPark`]); blocking code (`sleep`, `wait_until`,
//! blkfront's waits) calls it in a loop. The two waits that must not run the idle loop — the
//! xenstore transport (the idle loop reads xenstore) and the console (anything may print) —
//! block on their own port. Timers are deadlines: the executor's sleeps, or the caller's own.

use crate::events::{self, Port};
use crate::time::now_ns;
use core::sync::atomic::{AtomicU64, Ordering};

/// Times the guest gave its vCPU to Xen in [`block`] (for tests and stats).
pub static BLOCKS: AtomicU64 = AtomicU64::new(0);

/// What ends a [`block`] (besides its deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// An event on any unmasked port (the idle loop).
    AnyEvent,
    /// An event on this port; the others stay pending for the idle loop's dispatch.
    Port(Port),
}

/// Gives the vCPU to Xen until `until` happens or system time `deadline_ns` passes (at once if
/// it has). For [`Until::Port`], the port's event is then taken ([`events::take_port`]: its
/// channel fires) and the result says whether it came; for [`Until::AnyEvent`], the caller
/// dispatches, and the result is true.
pub fn block(until: Until, deadline_ns: Option<u64>) -> bool {
    if deadline_ns.is_some_and(|d| d <= now_ns()) {
        return match until {
            Until::AnyEvent => true,
            Until::Port(p) => events::take_port(p),
        };
    }
    match until {
        Until::AnyEvent => {
            BLOCKS.fetch_add(1, Ordering::Relaxed);
            if let Some(d) = deadline_ns {
                // Xen's timers count Xen's system time, which a restore moves under ours.
                let _ = arch::hypercall::set_timer(crate::time::to_xen_ns(d));
            }
            // SCHEDOP_block unmasks event delivery and checks for pending events atomically,
            // so an event that arrived since the last dispatch ends the block at once.
            arch::hypercall::block();
            true
        }
        Until::Port(p) => {
            if crate::start_info::shared_info().is_none() || p >= events::NR_PORTS {
                return false;
            }
            BLOCKS.fetch_add(1, Ordering::Relaxed);
            // SCHEDOP_poll returns at once if the port is pending already.
            let xen_deadline = deadline_ns.map_or(0, crate::time::to_xen_ns);
            let _ = arch::hypercall::evtchn::poll(&[p], xen_deadline);
            events::take_port(p)
        }
    }
}

/// What the idle loop runs after dispatching events (the platform's xenstore watches:
/// lifecycle control, watch wakers), set by [`set_after_events`].
static AFTER_EVENTS: spin::Mutex<Option<fn() -> bool>> = spin::Mutex::new(None);

/// Makes the idle loop run `f` after each dispatch of events; `f` says whether it did anything
/// (woke a waiter), in which case the loop does not block. Set once by
/// [`crate::platform::init_lifecycle`]: the idle loop knows nothing of xenstore (no import
/// circle), and `f` never runs inside a xenstore call (the xenstore transport waits on its own
/// port, not in the idle loop).
pub fn set_after_events(f: fn() -> bool) {
    *AFTER_EVENTS.lock() = Some(f);
}

fn after_events() -> bool {
    let f = *AFTER_EVENTS.lock();
    f.is_some_and(|f| f())
}

/// One turn of the idle loop: dispatch pending events; if there were none, block in Xen until
/// an event arrives or `deadline_ns` passes (at once if it has). Returns whether it did
/// anything: dispatched events (or ran the watches), or blocked (woken by an event or the
/// deadline); `false` only for a turn that found nothing pending and did not block.
pub fn poll_once(deadline_ns: Option<u64>) -> bool {
    // after_events also runs when nothing was dispatched: the xenstore transport may have
    // taken the xenstore port's event itself (inside a request) and left its channel fired.
    let n = events::dispatch();
    if after_events() || n > 0 {
        return true;
    }
    if deadline_ns.is_some_and(|d| d <= now_ns()) {
        return false;
    }
    block(Until::AnyEvent, deadline_ns);
    events::dispatch();
    after_events();
    true
}

/// Sleeps until system time `deadline_ns`, handling events meanwhile.
pub fn sleep_until(deadline_ns: u64) {
    while now_ns() < deadline_ns {
        let _ = poll_once(Some(deadline_ns));
    }
}

/// Sleeps for `ns` nanoseconds.
pub fn sleep(ns: u64) {
    sleep_until(now_ns().saturating_add(ns));
}

/// Runs the idle loop until `cond()` holds (checked after every event) or `timeout_ns` passes;
/// returns whether it held.
pub fn wait_until(timeout_ns: Option<u64>, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = timeout_ns.map(|t| now_ns().saturating_add(t));
    loop {
        if cond() {
            return true;
        }
        if deadline.is_some_and(|d| now_ns() >= d) {
            return false;
        }
        let _ = poll_once(deadline);
    }
}
