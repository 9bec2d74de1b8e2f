//! Waiting: the idle loop that blocks in Xen until the next event or deadline (never a busy
//! loop), `sleep`, one-shot timers, and `wait_until` for code that waits on a condition that
//! event handlers make true.

extern crate alloc;

use crate::events;
use crate::time::now_ns;
use alloc::boxed::Box;
use alloc::collections::BinaryHeap;
use core::cmp::Reverse;
use core::sync::atomic::{AtomicU64, Ordering};

type Callback = Box<dyn FnOnce() + Send>;

struct Timer {
    deadline: u64,
    id: u64,
    f: Callback,
}

impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        (self.deadline, self.id) == (o.deadline, o.id)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    fn cmp(&self, o: &Self) -> core::cmp::Ordering {
        (self.deadline, self.id).cmp(&(o.deadline, o.id))
    }
}

static TIMERS: spin::Mutex<BinaryHeap<Reverse<Timer>>> = spin::Mutex::new(BinaryHeap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Times the idle loop actually blocked in Xen (for tests and stats).
pub static BLOCKS: AtomicU64 = AtomicU64::new(0);

/// Runs `f` once, from the main loop, at system time `deadline_ns` or soon after.
pub fn at(deadline_ns: u64, f: impl FnOnce() + Send + 'static) -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    TIMERS.lock().push(Reverse(Timer {
        deadline: deadline_ns,
        id,
        f: Box::new(f),
    }));
    id
}

/// Runs `f` once after `ns` nanoseconds.
pub fn after(ns: u64, f: impl FnOnce() + Send + 'static) -> u64 {
    at(now_ns().saturating_add(ns), f)
}

fn run_expired() -> Option<u64> {
    loop {
        let now = now_ns();
        let due = {
            let mut t = TIMERS.lock();
            match t.peek() {
                Some(Reverse(x)) if x.deadline <= now => t.pop(),
                Some(Reverse(x)) => return Some(x.deadline),
                None => return None,
            }
        };
        if let Some(Reverse(timer)) = due {
            (timer.f)();
        }
    }
}

/// One turn of the idle loop: run due timers and pending events; if there was nothing to do,
/// block in Xen until an event arrives or `deadline_ns` (or the next timer) passes.
pub fn poll_once(deadline_ns: Option<u64>) {
    let next_timer = run_expired();
    if events::dispatch() > 0 {
        crate::platform::poll_lifecycle();
        return;
    }
    let wake = match (deadline_ns, next_timer) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(w) = wake {
        if w <= now_ns() {
            return;
        }
        let _ = arch::hypercall::set_timer(w);
    }
    // SCHEDOP_block unmasks event delivery and checks for pending events atomically, so an event
    // that arrived since dispatch() ends the block at once.
    BLOCKS.fetch_add(1, Ordering::Relaxed);
    arch::hypercall::block();
    events::dispatch();
    crate::platform::poll_lifecycle();
    run_expired();
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
