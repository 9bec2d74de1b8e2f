//! Hypercalls: the raw entry through the hypercall page, and typed wrappers for the calls the
//! runtime makes.
//!
//! 64-bit PV ABI: the call goes to `hypercall_page + 32 * nr`; arguments in rdi, rsi, rdx, r10,
//! r8; the result in rax (negative errno on failure). Xen clobbers rcx and r11 (it returns with
//! sysret-like semantics) and may clobber the argument registers. We write our own entry rather
//! than use xen-sys's: its hypercall_5 passes argument 5 in r9, and it marks a `call` as
//! `nostack`, which is wrong (the call pushes a return address on our stack).

use core::ffi::c_void;

/// Hypercall numbers (public/xen.h).
#[allow(missing_docs)]
pub mod nr {
    pub const SET_TRAP_TABLE: usize = 0;
    pub const MMU_UPDATE: usize = 1;
    pub const SET_CALLBACKS: usize = 4;
    pub const STACK_SWITCH: usize = 3;
    pub const SET_TIMER_OP: usize = 15;
    pub const XEN_VERSION: usize = 17;
    pub const CONSOLE_IO: usize = 18;
    pub const GRANT_TABLE_OP: usize = 20;
    pub const VM_ASSIST: usize = 21;
    pub const UPDATE_VA_MAPPING: usize = 14;
    pub const MEMORY_OP: usize = 12;
    pub const VCPU_OP: usize = 24;
    pub const MMUEXT_OP: usize = 26;
    pub const SCHED_OP: usize = 29;
    pub const EVENT_CHANNEL_OP: usize = 32;
    pub const PHYSDEV_OP: usize = 33;
}

/// Hypercalls made since boot (all of them go through [`hypercall`]), for the guest's stats.
pub static CALLS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Hypercalls made since boot.
pub fn calls() -> u64 {
    CALLS.load(core::sync::atomic::Ordering::Relaxed)
}

#[cfg(target_os = "none")]
mod imp {
    use core::arch::asm;

    extern "C" {
        /// The page Xen fills with hypercall stubs (HYPERCALL_PAGE note), defined in entry.rs.
        static hypercall_page: [u8; 4096];
    }

    /// Raw 5-argument hypercall.
    ///
    /// # Safety
    /// The arguments must be what hypercall `nr` expects: pointers valid for what Xen reads and
    /// writes through them.
    #[inline(always)]
    pub unsafe fn hypercall(
        nr: usize,
        a1: usize,
        a2: usize,
        a3: usize,
        a4: usize,
        a5: usize,
    ) -> isize {
        let ret: isize;
        super::CALLS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        // SAFETY: the entry is inside the hypercall page Xen filled in before entry.
        let entry = unsafe {
            core::ptr::addr_of!(hypercall_page)
                .cast::<u8>()
                .add(nr * 32)
        };
        // SAFETY: caller guarantees the arguments; the clobbers list everything Xen may change.
        unsafe {
            asm!(
                "call {entry}",
                entry = in(reg) entry,
                inlateout("rdi") a1 => _,
                inlateout("rsi") a2 => _,
                inlateout("rdx") a3 => _,
                inlateout("r10") a4 => _,
                inlateout("r8") a5 => _,
                lateout("rax") ret,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        ret
    }
}

#[cfg(not(target_os = "none"))]
mod imp {
    /// On the host there is no hypervisor: calling this is a bug in a test.
    ///
    /// # Safety
    /// Always safe; it panics.
    pub unsafe fn hypercall(nr: usize, _: usize, _: usize, _: usize, _: usize, _: usize) -> isize {
        panic!("hypercall {nr} made on the host (no Xen here)")
    }
}

pub use imp::hypercall;

/// A Xen error code (the positive errno value of a failed hypercall).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// EPERM
    pub const EPERM: Errno = Errno(1);
    /// ENOENT
    pub const ENOENT: Errno = Errno(2);
    /// EAGAIN
    pub const EAGAIN: Errno = Errno(11);
    /// ENOMEM
    pub const ENOMEM: Errno = Errno(12);
    /// EBUSY
    pub const EBUSY: Errno = Errno(16);
    /// EINVAL
    pub const EINVAL: Errno = Errno(22);
    /// ENOSYS
    pub const ENOSYS: Errno = Errno(38);
}

impl core::fmt::Display for Errno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            22 => "EINVAL",
            28 => "ENOSPC",
            38 => "ENOSYS",
            _ => return write!(f, "errno {}", self.0),
        };
        f.write_str(name)
    }
}

/// Turns a hypercall's return value into a result.
pub fn check(ret: isize) -> Result<usize, Errno> {
    if ret < 0 {
        Err(Errno(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// A hypercall whose sub-command takes one argument structure: `op(cmd, &mut arg)`.
///
/// # Safety
/// `T` must be the argument structure Xen expects for `cmd` of hypercall `nr`, and any pointers or
/// guest handles inside it must be valid for what Xen does with them.
pub unsafe fn op<T>(nr: usize, cmd: usize, arg: &mut T) -> Result<usize, Errno> {
    // SAFETY: forwarded to the caller.
    check(unsafe { hypercall(nr, cmd, arg as *mut T as usize, 0, 0, 0) })
}

/// Writes bytes to Xen's own console (CONSOLEIO_write). Works for dom0 and on debug builds of Xen
/// for domUs; release Xen drops domU output (domUs use the PV console ring).
pub fn console_io_write(bytes: &[u8]) {
    // SAFETY: Xen reads `len` bytes from a buffer we own.
    unsafe {
        hypercall(
            nr::CONSOLE_IO,
            0,
            bytes.len(),
            bytes.as_ptr() as usize,
            0,
            0,
        )
    };
}

/// SCHEDOP_* sub-commands (public/sched.h).
#[allow(missing_docs)]
pub mod schedop {
    pub const YIELD: usize = 0;
    pub const BLOCK: usize = 1;
    pub const SHUTDOWN: usize = 2;
    pub const POLL: usize = 3;
}

/// SHUTDOWN_* reasons (public/sched.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    /// Domain exited normally.
    Poweroff = 0,
    /// Restart the domain.
    Reboot = 1,
    /// Suspend (checkpoint).
    Suspend = 2,
    /// Domain crashed.
    Crash = 3,
}

/// SCHEDOP_shutdown. Returns only if Xen refused.
pub fn shutdown(reason: ShutdownReason) -> Errno {
    let mut arg: u32 = reason as u32;
    // SAFETY: sched_shutdown is one u32.
    match unsafe { op(nr::SCHED_OP, schedop::SHUTDOWN, &mut arg) } {
        Err(e) => e,
        Ok(_) => Errno(0),
    }
}

/// SCHEDOP_block: sleep until an event is pending. Events must be unmasked by the caller in the
/// same breath (Xen clears the upcall mask atomically with blocking).
pub fn block() {
    // SAFETY: SCHEDOP_block takes no argument.
    unsafe { hypercall(nr::SCHED_OP, schedop::BLOCK, 0, 0, 0, 0) };
}

/// SCHEDOP_yield.
pub fn yield_cpu() {
    // SAFETY: SCHEDOP_yield takes no argument.
    unsafe { hypercall(nr::SCHED_OP, schedop::YIELD, 0, 0, 0, 0) };
}

/// set_timer_op: a one-shot timer at absolute system time `deadline_ns` (0 cancels). Its expiry
/// raises VIRQ_TIMER.
pub fn set_timer(deadline_ns: u64) -> Result<(), Errno> {
    // SAFETY: takes a plain integer.
    check(unsafe { hypercall(nr::SET_TIMER_OP, deadline_ns as usize, 0, 0, 0, 0) }).map(|_| ())
}

/// xen_version(XENVER_version): (major, minor).
pub fn xen_version() -> (u16, u16) {
    // SAFETY: XENVER_version (0) takes no buffer.
    let v = unsafe { hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0) } as u32;
    ((v >> 16) as u16, v as u16)
}

/// Anything passed by pointer to a hypercall.
pub type Arg = *mut c_void;
