//! The last error a `sys_*` call reported, for `sys_get_errno`: kept apart from [`crate::abi`]
//! so that the socket calls ([`crate::sys_net`]) can report errors without importing the
//! boundary module that dispatches to them.

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
