//! Waiting: the idle loop that blocks in Xen until the next event or deadline (never a busy
//! loop), `sleep`, and `wait_until` for code that waits on a condition that events make true.
//!
//! [`poll_once`] is the one wait primitive of the guest: dispatch pending events (each fires
//! its [`Channel`](crate::events::Channel), waking the task or source waiting on it), and if
//! there were none, block in Xen until an event or the deadline. The executor parks with it
//! ([`crate::exec::XenPark`]); blocking code (`sleep`, `wait_until`, blkfront's waits) calls it
//! in a loop. Timers are deadlines: the executor's sleeps, or the caller's own.

use crate::events;
use crate::time::now_ns;
use core::sync::atomic::{AtomicU64, Ordering};

/// Times the idle loop actually blocked in Xen (for tests and stats).
pub static BLOCKS: AtomicU64 = AtomicU64::new(0);

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
/// an event arrives or `deadline_ns` passes (at once if it has).
pub fn poll_once(deadline_ns: Option<u64>) {
    // after_events also runs when nothing was dispatched: the xenstore transport may have
    // taken the xenstore port's event itself (inside a request) and left its channel fired.
    let n = events::dispatch();
    if after_events() || n > 0 {
        return;
    }
    if let Some(w) = deadline_ns {
        if w <= now_ns() {
            return;
        }
        let _ = arch::hypercall::set_timer(crate::time::to_xen_ns(w));
    }
    // SCHEDOP_block unmasks event delivery and checks for pending events atomically, so an event
    // that arrived since dispatch() ends the block at once.
    BLOCKS.fetch_add(1, Ordering::Relaxed);
    arch::hypercall::block();
    events::dispatch();
    after_events();
}

/// Sleeps until system time `deadline_ns`, handling events meanwhile.
pub fn sleep_until(deadline_ns: u64) {
    while now_ns() < deadline_ns {
        poll_once(Some(deadline_ns));
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
        poll_once(deadline);
    }
}
