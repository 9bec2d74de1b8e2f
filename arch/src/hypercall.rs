//! Hypercalls: the raw entry through the hypercall page (private to arch), and a typed function
//! for each call the runtime makes, here and in [`gnttab`] (grant tables) and [`evtchn`] (event
//! channels, SCHEDOP_poll). No hypercall number or raw call exists outside this crate; each
//! argument structure's layout is tested against xen-sys (or the Xen header where xen-sys has
//! none).
//!
//! 64-bit PV ABI: the call goes to `hypercall_page + 32 * nr`; arguments in rdi, rsi, rdx, r10,
//! r8; the result in rax (negative errno on failure). Xen clobbers rcx and r11 (it returns with
//! sysret-like semantics) and may clobber the argument registers. We write our own entry rather
//! than use xen-sys's: its hypercall_5 passes argument 5 in r9, and it marks a `call` as
//! `nostack`, which is wrong (the call pushes a return address on our stack).

use crate::paging::MmuUpdate;
use core::ffi::c_void;

pub mod evtchn;
pub mod gnttab;
pub mod hvm;

/// Hypercall numbers (public/xen.h). Only arch makes hypercalls: everything above calls the typed
/// functions of this module (and of [`gnttab`], [`evtchn`]).
#[allow(missing_docs, dead_code)]
pub(crate) mod nr {
    pub const SET_TRAP_TABLE: usize = 0;
    pub const MMU_UPDATE: usize = 1;
    pub const SET_CALLBACKS: usize = 4;
    pub const FPU_TASKSWITCH: usize = 5;
    pub const SET_SEGMENT_BASE: usize = 25;
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
    pub const HVM_OP: usize = 34;
}

/// Hypercalls made since boot (all of them go through [`hypercall`]), for the guest's stats.
pub static CALLS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Hypercalls made since boot.
pub fn calls() -> u64 {
    CALLS.load(core::sync::atomic::Ordering::Relaxed)
}

#[cfg(any(target_os = "none", target_os = "hermit"))]
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

#[cfg(not(any(target_os = "none", target_os = "hermit")))]
mod imp {
    /// On the host there is no hypervisor: calling this is a bug in a test.
    ///
    /// # Safety
    /// Always safe; it panics.
    pub unsafe fn hypercall(nr: usize, _: usize, _: usize, _: usize, _: usize, _: usize) -> isize {
        panic!("hypercall {nr} made on the host (no Xen here)")
    }
}

pub(crate) use imp::hypercall;

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
pub(crate) unsafe fn op<T>(nr: usize, cmd: usize, arg: &mut T) -> Result<usize, Errno> {
    // SAFETY: forwarded to the caller.
    check(unsafe { hypercall(nr, cmd, arg as *mut T as usize, 0, 0, 0) })
}

/// Writes bytes to Xen's own console (CONSOLEIO_write). Works for dom0 and on debug builds of Xen
/// for domUs; release Xen drops domU output (domUs use the PV console ring). A PVH guest writes
/// to Xen's HVM debug port instead, which every Xen prints as `(dN) ...` lines.
pub fn console_io_write(bytes: &[u8]) {
    #[cfg(any(target_os = "none", target_os = "hermit"))]
    if crate::mode::is_pvh() {
        crate::pvh::debug_write(bytes);
        return;
    }
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
pub(crate) mod schedop {
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

/// How `SCHEDOP_shutdown(SHUTDOWN_suspend)` came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// In a new domain (`xl restore`, the target of a migration): everything Xen gave is new.
    NewDomain,
    /// In the same domain (`xl save -c`, a checkpoint, a failed migration): the toolstack
    /// cancelled the suspend and nothing Xen gave changed.
    Cancelled,
}

/// SCHEDOP_shutdown(SHUTDOWN_suspend): the domain stops here, the toolstack saves it, and the
/// call returns when it runs again. For a PV guest the toolstack finds start_info through the
/// third argument (rdx), `start_info_mfn`; it returns 0 in a new domain, 1 when the toolstack
/// cancelled the suspend (it writes rax itself), or an error when Xen refused.
///
/// # Safety
/// Whatever maps a frame that is not the domain's own (shared_info, grant-table frames) must
/// be unmapped first (the toolstack refuses to save such page tables), and start_info's
/// xenstore and console frames must be PFNs; in a new domain, every frame, port and grant the
/// guest held is void when this returns.
pub unsafe fn suspend(start_info_mfn: u64) -> Result<Resumed, Errno> {
    let mut arg: u32 = ShutdownReason::Suspend as u32;
    // SAFETY: sched_shutdown is one u32; the third argument is a plain integer.
    let r = unsafe {
        hypercall(
            nr::SCHED_OP,
            schedop::SHUTDOWN,
            &mut arg as *mut u32 as usize,
            start_info_mfn as usize,
            0,
            0,
        )
    };
    match check(r)? {
        0 => Ok(Resumed::NewDomain),
        _ => Ok(Resumed::Cancelled),
    }
}

/// Sleeps until an event is pending (at once if one is), with event delivery enabled only for
/// the wait, atomically: PV, SCHEDOP_block (Xen clears the upcall mask as it blocks); PVH,
/// `sti; hlt` (the event vector's handler returns with interrupts off again).
pub fn block() {
    #[cfg(any(target_os = "none", target_os = "hermit"))]
    if crate::mode::is_pvh() {
        crate::cpu::ring0::wait_for_interrupt();
        return;
    }
    // SAFETY: SCHEDOP_block takes no argument.
    unsafe { hypercall(nr::SCHED_OP, schedop::BLOCK, 0, 0, 0, 0) };
}

/// set_segment_base(SEGBASE_FS, base): the FS base, which thread-local storage is found through
/// (the std runtime's `#[thread_local]`s; no_std images do not use it).
/// In a PVH guest, the FS_BASE MSR.
pub fn set_fs_base(base: u64) -> Result<(), Errno> {
    #[cfg(any(target_os = "none", target_os = "hermit"))]
    if crate::mode::is_pvh() {
        // SAFETY: ring 0; FS is not used by the runtime itself.
        unsafe { crate::cpu::ring0::wrmsr(0xc000_0100, base) };
        return Ok(());
    }
    // SAFETY: takes plain integers; FS is not used by the runtime itself.
    check(unsafe { hypercall(nr::SET_SEGMENT_BASE, 0, base as usize, 0, 0, 0) }).map(|_| ())
}

/// fpu_taskswitch(0): clears the virtual CR0.TS, so that FPU/SSE instructions run instead of
/// raising #NM (code built for a target with SSE, such as the std runtime's).
/// In a PVH guest CR0.TS is ours and the PVH entry leaves it clear: nothing to do.
pub fn fpu_enable() -> Result<(), Errno> {
    #[cfg(any(target_os = "none", target_os = "hermit"))]
    if crate::mode::is_pvh() {
        return Ok(());
    }
    // SAFETY: takes a plain integer.
    check(unsafe { hypercall(nr::FPU_TASKSWITCH, 0, 0, 0, 0, 0) }).map(|_| ())
}

/// SCHEDOP_yield.
pub fn yield_cpu() {
    // SAFETY: SCHEDOP_yield takes no argument.
    unsafe { hypercall(nr::SCHED_OP, schedop::YIELD, 0, 0, 0, 0) };
}

/// set_timer_op: a one-shot timer at absolute system time `deadline_ns` (0 cancels). Its expiry
/// raises VIRQ_TIMER.
///
/// A PVH guest has no set_timer_op (HVM guests are refused it): the same one-shot timer
/// through VCPUOP_set_singleshot_timer (a deadline already past fires at once).
pub fn set_timer(deadline_ns: u64) -> Result<(), Errno> {
    if crate::mode::is_pvh() {
        if deadline_ns == 0 {
            // SAFETY: takes no argument.
            return check(unsafe {
                hypercall(nr::VCPU_OP, vcpuop::STOP_SINGLESHOT_TIMER, 0, 0, 0, 0)
            })
            .map(|_| ());
        }
        // public/vcpu.h `struct vcpu_set_singleshot_timer`: timeout_abs_ns u64, flags u32.
        let arg: [u64; 2] = [deadline_ns, 0];
        // SAFETY: Xen reads one vcpu_set_singleshot_timer that lives across the call.
        return check(unsafe {
            hypercall(
                nr::VCPU_OP,
                vcpuop::SET_SINGLESHOT_TIMER,
                0,
                arg.as_ptr() as usize,
                0,
                0,
            )
        })
        .map(|_| ());
    }
    // SAFETY: takes a plain integer.
    check(unsafe { hypercall(nr::SET_TIMER_OP, deadline_ns as usize, 0, 0, 0, 0) }).map(|_| ())
}

/// vcpu_op(VCPUOP_set_periodic_timer, 0): VIRQ_TIMER every `period_ns` nanoseconds on vCPU 0
/// (the thread scheduler's preemption tick), besides the one-shot timer.
pub fn set_periodic_timer(period_ns: u64) -> Result<(), Errno> {
    let arg: u64 = period_ns;
    // SAFETY: Xen reads one vcpu_set_periodic_timer (a u64) from `arg`, which lives across the
    // call.
    check(unsafe {
        hypercall(
            nr::VCPU_OP,
            vcpuop::SET_PERIODIC_TIMER,
            0,
            &arg as *const u64 as usize,
            0,
            0,
        )
    })
    .map(|_| ())
}

/// vcpu_op(VCPUOP_stop_periodic_timer, 0): no more periodic VIRQ_TIMER on vCPU 0.
pub fn stop_periodic_timer() -> Result<(), Errno> {
    // SAFETY: takes no argument.
    check(unsafe { hypercall(nr::VCPU_OP, vcpuop::STOP_PERIODIC_TIMER, 0, 0, 0, 0) }).map(|_| ())
}

/// xen_version(XENVER_version): (major, minor).
pub fn xen_version() -> (u16, u16) {
    // SAFETY: XENVER_version (0) takes no buffer.
    let v = unsafe { hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0) } as u32;
    ((v >> 16) as u16, v as u16)
}

/// VCPUOP_* sub-commands (public/vcpu.h).
#[allow(missing_docs)]
pub(crate) mod vcpuop {
    pub const GET_RUNSTATE_INFO: usize = 4;
    pub const SET_PERIODIC_TIMER: usize = 6;
    pub const STOP_PERIODIC_TIMER: usize = 7;
    pub const SET_SINGLESHOT_TIMER: usize = 8;
    pub const STOP_SINGLESHOT_TIMER: usize = 9;
}

/// `RUNSTATE_*` (public/vcpu.h): the indices of [`RunstateInfo::time`].
pub mod runstate {
    /// On a physical CPU.
    pub const RUNNING: usize = 0;
    /// Runnable, but no physical CPU free for it.
    pub const RUNNABLE: usize = 1;
    /// Blocked: waiting for an event (SCHEDOP_block, SCHEDOP_poll).
    pub const BLOCKED: usize = 2;
    /// Neither: paused, being built or torn down, hotplugged out.
    pub const OFFLINE: usize = 3;
}

/// `struct vcpu_runstate_info` (public/vcpu.h): which state a vCPU is in, since when, and how
/// long it has spent in each state, in nanoseconds of Xen system time. The four times add up to
/// the vCPU's life so far.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunstateInfo {
    /// The current state (`RUNSTATE_*`; [`runstate::RUNNING`] when a vCPU asks about itself).
    pub state: i32,
    /// System time (ns) the current state was entered at.
    pub state_entry_time: u64,
    /// Nanoseconds in each state, indexed by [`runstate`] (the current state's counted up to
    /// the call).
    pub time: [u64; 4],
}

/// `vcpu_op(VCPUOP_get_runstate_info, vcpu)`: vCPU `vcpu`'s runstate times, up to now.
pub fn vcpu_runstate_info(vcpu: u32) -> Result<RunstateInfo, Errno> {
    let mut info = RunstateInfo::default();
    // SAFETY: Xen writes one vcpu_runstate_info to `info`, which we own.
    check(unsafe {
        hypercall(
            nr::VCPU_OP,
            vcpuop::GET_RUNSTATE_INFO,
            vcpu as usize,
            &mut info as *mut RunstateInfo as usize,
            0,
            0,
        )
    })?;
    Ok(info)
}

/// `update_va_mapping` flag `UVMF_INVLPG`: invalidate the TLB entry of that address.
pub const UVMF_INVLPG: usize = 2;

/// `MMUEXT_TLB_FLUSH_LOCAL` (public/xen.h): flush this vCPU's TLB.
pub const MMUEXT_TLB_FLUSH_LOCAL: u32 = 6;

/// `struct mmuext_op` (public/xen.h): the unions `arg1`/`arg2` are `u64`s here (a machine frame,
/// a linear address or a count, by command).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MmuextOp {
    /// `MMUEXT_*`.
    pub cmd: u32,
    /// First argument.
    pub arg1: u64,
    /// Second argument.
    pub arg2: u64,
}

/// `mmu_update`: applies the page-table writes `updates` (for this domain) in one call; returns
/// how many were done.
///
/// # Safety
/// Each update must leave every mapping the program still relies on in place (the code, the
/// stack, every live reference), and map nothing writable that Xen or the program expects
/// read-only.
pub unsafe fn mmu_update(updates: &[MmuUpdate]) -> Result<u32, Errno> {
    let mut done = 0u32;
    // SAFETY: `updates` is an array of mmu_update Xen reads; `done` receives the count; the
    // mappings' effect is the caller's contract.
    let r = unsafe {
        hypercall(
            nr::MMU_UPDATE,
            updates.as_ptr() as usize,
            updates.len(),
            &mut done as *mut u32 as usize,
            gnttab::DOMID_SELF as usize,
            0,
        )
    };
    check(r).map(|_| done)
}

/// `mmuext_op(MMUEXT_TLB_FLUSH_LOCAL)`: flushes this vCPU's TLB (after page-table updates).
pub fn tlb_flush_local() -> Result<(), Errno> {
    let op = MmuextOp {
        cmd: MMUEXT_TLB_FLUSH_LOCAL,
        ..Default::default()
    };
    let mut done = 0u32;
    // SAFETY: one mmuext_op Xen reads; `done` receives the count; a TLB flush changes no mapping.
    let r = unsafe {
        hypercall(
            nr::MMUEXT_OP,
            &op as *const MmuextOp as usize,
            1,
            &mut done as *mut u32 as usize,
            gnttab::DOMID_SELF as usize,
            0,
        )
    };
    check(r).map(|_| ())
}

/// `update_va_mapping(va, pte, flags)`: points the page-table entry of virtual address `va` at
/// `pte` (flags: [`UVMF_INVLPG`]).
///
/// # Safety
/// `va` must be a page of ours that nothing refers to through its old mapping any more, and
/// `pte` a mapping the program may use there (e.g. a frame Xen handed us for it).
pub unsafe fn update_va_mapping(va: u64, pte: u64, flags: usize) -> Result<(), Errno> {
    // SAFETY: takes plain integers; the mapping's effect is the caller's contract.
    check(unsafe {
        hypercall(
            nr::UPDATE_VA_MAPPING,
            va as usize,
            pte as usize,
            flags,
            0,
            0,
        )
    })
    .map(|_| ())
}

/// Anything passed by pointer to a hypercall.
pub type Arg = *mut c_void;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn numbers_agree_with_xen_sys() {
        let ours = [
            (nr::SET_TRAP_TABLE, xen_sys::__HYPERVISOR_set_trap_table),
            (nr::MMU_UPDATE, xen_sys::__HYPERVISOR_mmu_update),
            (nr::SET_CALLBACKS, xen_sys::__HYPERVISOR_set_callbacks),
            (nr::STACK_SWITCH, xen_sys::__HYPERVISOR_stack_switch),
            (nr::SET_TIMER_OP, xen_sys::__HYPERVISOR_set_timer_op),
            (nr::XEN_VERSION, xen_sys::__HYPERVISOR_xen_version),
            (nr::CONSOLE_IO, xen_sys::__HYPERVISOR_console_io),
            (nr::GRANT_TABLE_OP, xen_sys::__HYPERVISOR_grant_table_op),
            (nr::VM_ASSIST, xen_sys::__HYPERVISOR_vm_assist),
            (
                nr::UPDATE_VA_MAPPING,
                xen_sys::__HYPERVISOR_update_va_mapping,
            ),
            (nr::MEMORY_OP, xen_sys::__HYPERVISOR_memory_op),
            (nr::VCPU_OP, xen_sys::__HYPERVISOR_vcpu_op),
            (nr::MMUEXT_OP, xen_sys::__HYPERVISOR_mmuext_op),
            (nr::SCHED_OP, xen_sys::__HYPERVISOR_sched_op),
            (nr::EVENT_CHANNEL_OP, xen_sys::__HYPERVISOR_event_channel_op),
            (nr::PHYSDEV_OP, xen_sys::__HYPERVISOR_physdev_op),
        ];
        for (a, b) in ours {
            assert_eq!(a, b as usize);
        }
        assert_eq!(MMUEXT_TLB_FLUSH_LOCAL, xen_sys::MMUEXT_TLB_FLUSH_LOCAL);
    }

    /// xen-sys has no vcpu.h: the layout and numbers are public/vcpu.h's (Xen 4.17), where
    /// `int state` is followed by 4 bytes of padding before the `uint64_t`s.
    #[test]
    fn runstate_info_matches_vcpu_h() {
        assert_eq!(size_of::<RunstateInfo>(), 48);
        assert_eq!(offset_of!(RunstateInfo, state), 0);
        assert_eq!(offset_of!(RunstateInfo, state_entry_time), 8);
        assert_eq!(offset_of!(RunstateInfo, time), 16);
        assert_eq!(vcpuop::GET_RUNSTATE_INFO, 4);
        assert_eq!(
            [
                runstate::RUNNING,
                runstate::RUNNABLE,
                runstate::BLOCKED,
                runstate::OFFLINE
            ],
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn mmu_structures_agree_with_xen_sys() {
        assert_eq!(size_of::<MmuUpdate>(), size_of::<xen_sys::mmu_update>());
        assert_eq!(
            offset_of!(MmuUpdate, ptr),
            offset_of!(xen_sys::mmu_update, ptr)
        );
        assert_eq!(
            offset_of!(MmuUpdate, val),
            offset_of!(xen_sys::mmu_update, val)
        );
        assert_eq!(size_of::<MmuextOp>(), size_of::<xen_sys::mmuext_op>());
        assert_eq!(
            offset_of!(MmuextOp, cmd),
            offset_of!(xen_sys::mmuext_op, cmd)
        );
        assert_eq!(
            offset_of!(MmuextOp, arg1),
            offset_of!(xen_sys::mmuext_op, arg1)
        );
        assert_eq!(
            offset_of!(MmuextOp, arg2),
            offset_of!(xen_sys::mmuext_op, arg2)
        );
    }
}
