//! Blocking: how a call that must wait (accept, recv, connect, poll with a timeout, a blocking
//! eventfd read) waits while the network keeps running and the other threads run.
//!
//! [`until`] is the one place a std program's thread waits for the network. Each turn runs the
//! stack (frames in and out, timers) and checks the caller's condition; if it does not hold,
//! the thread parks ([`crate::park_until`]) until the next dispatch of events, the stack's
//! next deadline or the caller's, and the scheduler runs the other threads meanwhile (or, when
//! every thread waits, blocks the vCPU in Xen: never a busy loop). The caller holds no borrow of
//! the socket layer's state across the wait (see `sockets`), so a parked thread does not hold
//! up another thread's socket calls.

use net::Net;

/// Waits until `ready()` holds or system time `deadline_ns` passes, running `net` (if the stack
/// is up) meanwhile; returns whether it held.
pub fn until(net: Option<&Net>, deadline_ns: Option<u64>, mut ready: impl FnMut() -> bool) -> bool {
    loop {
        let next = net.and_then(pump);
        if ready() {
            return true;
        }
        if deadline_ns.is_some_and(|d| xen::time::now_ns() >= d) {
            return false;
        }
        let at = earliest(next, deadline_ns);
        let mut held = false;
        // At each dispatch of events: run the stack, check; go round (and park again with a
        // new deadline) when the stack now needs to run before `at`.
        crate::park_until(at, || {
            let next = net.and_then(pump);
            if ready() {
                held = true;
                return true;
            }
            next.is_some_and(|n| at.is_none_or(|a| n < a))
        });
        if held {
            return true;
        }
    }
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Polls the stack once (as the executor polls a source: its device's event channel and
/// watch are registered with a no-op waker, which is all blocking in Xen needs); returns when it
/// next needs to run without an event.
pub fn pump(net: &Net) -> Option<u64> {
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    xen::exec::Source::poll(net, &mut cx, xen::time::now_ns())
}
