//! The last error a `sys_*` call reported, for `sys_get_errno`: kept apart from [`crate::abi`]
//! so that the socket calls ([`crate::sys_net`]) can report errors without importing the
//! boundary module that dispatches to them. Per thread: the scheduler saves it when a thread
//! leaves the vCPU and puts it back when the thread returns ([`set`]).

use core::sync::atomic::{AtomicI32, Ordering};

/// The last error a call reported.
static ERRNO: AtomicI32 = AtomicI32::new(0);

/// Records `errno` as the last error and returns it as hermit-abi does: `-errno`.
pub fn fail(errno: i32) -> isize {
    ERRNO.store(errno, Ordering::Relaxed);
    -(errno as isize)
}

/// The last error recorded by [`fail`].
pub fn last() -> i32 {
    ERRNO.load(Ordering::Relaxed)
}

/// Puts back a thread's last error (after a switch back to it).
pub fn set(errno: i32) {
    ERRNO.store(errno, Ordering::Relaxed);
}
