//! Blocking: how a call that must wait (accept, recv, connect, poll with a timeout, a blocking
//! eventfd read) waits while the network keeps running and the other threads run.
//!
//! [`until`] is the one place a std program's thread waits for the network. It runs the stack
//! (frames in and out) and checks the caller's condition; if it does not hold, the thread parks
//! ([`crate::park_until`]): the scheduler runs the other threads meanwhile (or, when every
//! thread waits, blocks the vCPU in Xen until an event or the stack's next timer: never a busy
//! loop), and after events it runs the stack once and checks each parked thread's condition,
//! waking only those whose condition holds. The caller holds no borrow of
//! the socket layer's state across the wait (see `sockets`), so a parked thread does not hold
//! up another thread's socket calls.

use net::Net;

/// Waits until `ready()` holds or system time `deadline_ns` passes, running `net` (if the stack
/// is up) meanwhile; returns whether it held.
pub fn until(net: Option<&Net>, deadline_ns: Option<u64>, mut ready: impl FnMut() -> bool) -> bool {
    if let Some(n) = net {
        pump(n);
    }
    // The scheduler runs the stack (once per dispatch of events, and for its timers) and
    // checks `ready` while this thread is parked.
    crate::park_until(deadline_ns, &mut ready)
}

/// Polls the stack once (as the executor polls a source: its device's event channel and
/// watch are registered with a no-op waker, which is all blocking in Xen needs); returns when it
/// next needs to run without an event.
pub fn pump(net: &Net) -> Option<u64> {
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    let next = xen::exec::Source::poll(net, &mut cx, xen::time::now_ns());
    // The scheduler wakes the vCPU for the stack's timers.
    crate::abi_thread::net_next(next);
    next
}
