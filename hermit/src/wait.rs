//! Blocking: how a socket call that must wait (accept, recv, connect, poll with a timeout)
//! waits while the network keeps running.
//!
//! [`until`] is the one place a std program's thread waits for the network. It runs the stack
//! and blocks the vCPU in Xen between its events and deadlines, without switching threads:
//! while one thread waits in a socket call, the others do not run (the socket state is borrowed
//! for the whole call, see `sys_net`). It is the seam where the call will instead park the
//! thread ([`crate::park_until`]) once no borrow is held across the wait.

use net::Net;

/// Runs `net` and waits until `ready()` holds or system time `deadline_ns` passes; returns
/// whether it held. Each turn polls the stack (frames in and out, timers), checks `ready`, then
/// blocks in Xen until an event channel fires, the stack's next deadline or the caller's
/// (`xen::sched::poll_once`): never a busy loop.
pub fn until(net: &Net, deadline_ns: Option<u64>, mut ready: impl FnMut() -> bool) -> bool {
    loop {
        let next = pump(net);
        if ready() {
            return true;
        }
        let now = xen::time::now_ns();
        if deadline_ns.is_some_and(|d| now >= d) {
            return false;
        }
        let at = match (next, deadline_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        xen::sched::poll_once(at);
    }
}

/// Polls the stack once (as the executor polls a source: its device's event channel and
/// watch are registered with a no-op waker, which is all blocking in Xen needs); returns when it
/// next needs to run without an event.
pub fn pump(net: &Net) -> Option<u64> {
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    xen::exec::Source::poll(net, &mut cx, xen::time::now_ns())
}
