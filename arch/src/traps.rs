//! The trap table and the event-upcall entry.
//!
//! Xen delivers a PV guest's exceptions on its current stack, with `rcx` and `r11` pushed above
//! the hardware frame (it enters us the way `sysret` would). Each stub here moves those two back
//! into their registers, pushes the vector (and a zero error code where the CPU pushes none),
//! saves the general registers into a [`TrapFrame`] and calls the handler installed with
//! [`set_handler`]: the runtime prints the fault and a backtrace, then crashes the domain. No
//! fault is resumed.
//!
//! Events are delivered by polling, not by interrupt: the runtime keeps event upcalls masked and
//! unmasks them only inside `SCHEDOP_block`, which Xen does atomically. When the upcall then
//! fires, [`event_callback`] returns at once with the saved IF cleared, so the iret hypercall
//! masks upcalls again; the runtime's idle loop scans the pending bits itself.
//!
//! Unless an upcall handler is installed ([`set_upcall_handler`], by the std runtime's thread
//! scheduler for preemption, which then runs app code with upcalls unmasked): then the callback
//! saves every general register and the FPU/SSE state (fxsave) on the current stack, calls the
//! handler (which may switch to another thread and come back much later), restores them and
//! returns with upcalls unmasked if the handler says so, masked otherwise.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Registers saved by the trap stubs, lowest address first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Exception vector (255: Xen's failsafe callback).
    pub vector: u64,
    /// CPU error code (0 where the exception has none).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Vector of Xen's failsafe callback (a fault while Xen restored our segment state).
pub const FAILSAFE: u64 = 255;

/// Name of an exception vector.
pub fn vector_name(v: u64) -> &'static str {
    match v {
        0 => "divide error",
        1 => "debug",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating-point error",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating-point error",
        FAILSAFE => "Xen failsafe callback",
        _ => "unknown exception",
    }
}

/// Page-fault error code bits, decoded.
pub fn page_fault_cause(error_code: u64) -> &'static str {
    match (
        error_code & 1 != 0,
        error_code & 2 != 0,
        error_code & 16 != 0,
    ) {
        (_, _, true) => "instruction fetch from a non-executable page",
        (true, true, _) => "write to a read-only page",
        (true, false, _) => "read protection violation",
        (false, true, _) => "write to an unmapped page",
        (false, false, _) => "read of an unmapped page",
    }
}

/// Called with the saved state of a fault; must not return.
pub type Handler = fn(&TrapFrame) -> !;

static HANDLER: AtomicUsize = AtomicUsize::new(0);

/// What the event callback calls when installed: returns whether to return with upcalls
/// unmasked (true) or masked (false). Runs with upcalls masked, on the interrupted stack.
pub type UpcallHandler = fn() -> bool;

/// The installed upcall handler (0: none; the callback's fast path). Read by the callback's
/// assembly, hence the fixed name.
#[no_mangle]
static XENRT_UPCALL_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Installs the event-upcall handler (see the module doc).
pub fn set_upcall_handler(h: UpcallHandler) {
    XENRT_UPCALL_HANDLER.store(h as usize, Ordering::Release);
}

/// The address of the latest page fault in a PVH guest (CR2, saved by the trap entry); `None`
/// in a PV guest, where Xen puts it in shared_info's `vcpu_info.arch.cr2`.
pub fn fault_address() -> Option<u64> {
    #[cfg(any(target_os = "none", target_os = "hermit"))]
    if crate::mode::is_pvh() {
        return Some(idt::fault_address());
    }
    None
}

/// PVH: delivers event upcalls (the event vector) from now on (`true`: `sti`) or holds them
/// (`cli`). A PV guest masks upcalls in shared_info's `vcpu_info` instead; there this does
/// nothing.
pub fn set_event_interrupts(enabled: bool) {
    #[cfg(any(target_os = "none", target_os = "hermit"))]
    if crate::mode::is_pvh() {
        crate::cpu::ring0::set_interrupts(enabled);
    }
    let _ = enabled;
}

/// After a restore into a new domain: names the event vector to Xen again (PVH; a PV guest's
/// callbacks are part of the state the toolstack restores).
pub fn resume() -> Result<(), crate::hypercall::Errno> {
    #[cfg(any(target_os = "none", target_os = "hermit"))]
    if crate::mode::is_pvh() {
        return idt::resume();
    }
    Ok(())
}

/// Installs the fault handler (the runtime's, which prints and crashes the domain).
pub fn set_handler(h: Handler) {
    HANDLER.store(h as usize, Ordering::Release);
}

/// Walks a frame-pointer chain starting at `rbp`, calling `f` with each return address, staying
/// inside `stack` (so a corrupt chain cannot fault the fault handler). At most `max` frames.
pub fn backtrace(rbp: u64, stack: core::ops::Range<u64>, max: usize, mut f: impl FnMut(u64)) {
    let mut fp = rbp;
    for _ in 0..max {
        if !fp.is_multiple_of(8) || fp < stack.start || fp.saturating_add(16) > stack.end {
            break;
        }
        // SAFETY: `fp..fp+16` lies inside the mapped stack (checked above) and is aligned.
        let (next, ret) = unsafe { (*(fp as *const u64), *((fp + 8) as *const u64)) };
        if ret == 0 {
            break;
        }
        f(ret);
        if next <= fp {
            break;
        }
        fp = next;
    }
}

#[cfg(any(target_os = "none", target_os = "hermit"))]
mod idt;

#[cfg(any(target_os = "none", target_os = "hermit"))]
mod imp {
    use super::*;
    use crate::hypercall;

    #[no_mangle]
    extern "C" fn xenrt_trap(frame: &TrapFrame) -> ! {
        #[cfg(any(target_os = "none", target_os = "hermit"))]
        if crate::mode::is_pvh() {
            idt::note_fault();
        }
        let h = HANDLER.load(Ordering::Acquire);
        if h != 0 {
            // SAFETY: only `set_handler` stores here, always a valid `Handler`.
            let h: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
            h(frame);
        }
        let msg = b"xenrt: fault before the trap handler was installed\n";
        #[cfg(any(target_os = "none", target_os = "hermit"))]
        if crate::mode::is_pvh() {
            crate::pvh::debug_write(msg);
        }
        hypercall::console_io_write(msg);
        hypercall::shutdown(hypercall::ShutdownReason::Crash);
        loop {
            hypercall::yield_cpu();
        }
    }

    /// The event callback's slow path: `rflags` is the saved flags of the interrupted code.
    #[no_mangle]
    extern "C" fn xenrt_upcall(rflags: &mut u64) {
        let h = XENRT_UPCALL_HANDLER.load(Ordering::Acquire);
        let unmask = h != 0 && {
            // SAFETY: only `set_upcall_handler` stores here, always a valid `UpcallHandler`.
            let h: UpcallHandler = unsafe { core::mem::transmute::<usize, UpcallHandler>(h) };
            h()
        };
        if !unmask {
            *rflags &= !0x200;
        }
    }

    macro_rules! stubs {
        ($($name:ident $hw:ident $vec:literal $err:literal;)*) => {
            core::arch::global_asm!(
                ".pushsection .text.xenrt_traps, \"ax\"",
                $(
                    /* PVH entry (through the IDT: the hardware frame, no rcx/r11). */
                    concat!(".global ", stringify!($hw)),
                    concat!(stringify!($hw), ":"),
                    concat!(".if ", $err, " == 0"),
                    "push $0",
                    ".endif",
                    concat!("push $", $vec),
                    "jmp xenrt_trap_common",
                    concat!(".global ", stringify!($name)),
                    concat!(stringify!($name), ":"),
                    "mov (%rsp), %rcx",
                    "mov 8(%rsp), %r11",
                    "add $16, %rsp",
                    concat!(".if ", $err, " == 0"),
                    "push $0",
                    ".endif",
                    concat!("push $", $vec),
                    "jmp xenrt_trap_common",
                )*
                ".popsection",
                options(att_syntax)
            );
            extern "C" {
                $(fn $name(); fn $hw();)*
            }
            /// (vector, PV entry).
            const TRAPS: &[(u8, unsafe extern "C" fn())] = &[$(($vec, $name)),*];
            /// (vector, PVH entry).
            #[cfg_attr(not(any(target_os = "none", target_os = "hermit")), allow(dead_code))]
            const TRAPS_HW: &[(u8, unsafe extern "C" fn())] = &[$(($vec, $hw)),*];
        };
    }

    stubs! {
        trap_divide trap_divide_hw 0 0;
        trap_debug trap_debug_hw 1 0;
        trap_int3 trap_int3_hw 3 0;
        trap_overflow trap_overflow_hw 4 0;
        trap_bounds trap_bounds_hw 5 0;
        trap_invalid_op trap_invalid_op_hw 6 0;
        trap_no_device trap_no_device_hw 7 0;
        trap_double_fault trap_double_fault_hw 8 1;
        trap_invalid_tss trap_invalid_tss_hw 10 1;
        trap_no_segment trap_no_segment_hw 11 1;
        trap_stack trap_stack_hw 12 1;
        trap_gp trap_gp_hw 13 1;
        trap_page_fault trap_page_fault_hw 14 1;
        trap_fpu trap_fpu_hw 16 0;
        trap_alignment trap_alignment_hw 17 1;
        trap_machine_check trap_machine_check_hw 18 0;
        trap_simd trap_simd_hw 19 0;
    }

    core::arch::global_asm!(
        r#"
        .pushsection .text.xenrt_traps, "ax"

        /* The 15 general registers, saved in TrapFrame order (r15 lowest) and restored: the
           trap entry and the event upcall save the same frame. */
        .macro xenrt_push_gprs
        push %rax
        push %rbx
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %rbp
        push %r8
        push %r9
        push %r10
        push %r11
        push %r12
        push %r13
        push %r14
        push %r15
        .endm
        .macro xenrt_pop_gprs
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %r11
        pop %r10
        pop %r9
        pop %r8
        pop %rbp
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rbx
        pop %rax
        .endm

        /* The event handler's call, the same for the PV callback and the PVH vector: on a
           frame of rip, cs, rflags, ... save the 15 registers and the FPU/SSE state, call
           xenrt_upcall(&saved rflags), restore them all. */
        .macro xenrt_call_upcall
        xenrt_push_gprs
        mov %rsp, %rbp
        lea 136(%rsp), %rdi         /* 15 registers, rip, cs: then the saved rflags */
        sub $512, %rsp
        and $-16, %rsp
        fxsave64 (%rsp)
        call xenrt_upcall
        fxrstor64 (%rsp)
        mov %rbp, %rsp
        xenrt_pop_gprs
        .endm

        .global xenrt_trap_common
    xenrt_trap_common:
        xenrt_push_gprs
        mov %rsp, %rdi
        and $-16, %rsp
        call xenrt_trap
        ud2

        /* Event upcall. No handler: return at once, with IF clear in the saved flags so that
           the iret hypercall leaves upcalls masked (the idle loop polls the pending bits).
           With one: save all registers and the FPU/SSE state, call xenrt_upcall(&saved
           rflags), restore, return. */
        .global xenrt_event_callback
    xenrt_event_callback:
        mov (%rsp), %rcx
        mov 8(%rsp), %r11
        add $16, %rsp
        cmpq $0, XENRT_UPCALL_HANDLER(%rip)
        jne 2f
        andq $~0x200, 16(%rsp)
        pushq $0
        jmp hypercall_page + 23 * 32
    2:
        xenrt_call_upcall
        pushq $0
        jmp hypercall_page + 23 * 32

        /* PVH: the event vector (HVM_PARAM_CALLBACK_IRQ), entered through the IDT with the
           hardware frame (rip, cs, rflags, rsp, ss) and IF clear. The same two paths as the
           PV callback above, returning with iretq; no EOI (the vector bypasses the LAPIC). */
        .global xenrt_pvh_event
    xenrt_pvh_event:
        /* Taken at the idle loop's hlt (a virtualized sti;hlt may take a pending interrupt
           with rip still on the hlt)? Return past it: a hlt with IF clear would take the
           vCPU down, and with it the domain. */
        push %rax
        lea xenrt_pvh_hlt(%rip), %rax
        cmp %rax, 8(%rsp)
        jne 1f
        incq 8(%rsp)
    1:
        pop %rax
        cmpq $0, XENRT_UPCALL_HANDLER(%rip)
        jne 2f
        andq $~0x200, 16(%rsp)
        iretq
    2:
        xenrt_call_upcall
        iretq

        /* PVH idle: sti; hlt (1 byte, skipped by the event entry above when it interrupts
           before the hlt ran). */
        .global xenrt_pvh_idle
    xenrt_pvh_idle:
        sti
    xenrt_pvh_hlt:
        hlt
        ret

        /* Failsafe: Xen could not restore our segment registers. Fatal. */
        .global xenrt_failsafe_callback
    xenrt_failsafe_callback:
        mov (%rsp), %rcx
        mov 8(%rsp), %r11
        add $16, %rsp
        push $0
        push $255
        jmp xenrt_trap_common
        .popsection
        "#,
        options(att_syntax)
    );

    extern "C" {
        fn xenrt_event_callback();
        fn xenrt_failsafe_callback();
        #[cfg_attr(not(any(target_os = "none", target_os = "hermit")), allow(dead_code))]
        fn xenrt_pvh_event();
    }

    /// public/arch-x86/xen.h `struct trap_info`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct TrapInfo {
        vector: u8,
        flags: u8,
        cs: u16,
        address: u64,
    }

    const FLAT_KERNEL_CS: u16 = 0xe033;

    /// Installs the fault handlers and the event entry: PV, the trap table and the event and
    /// failsafe callbacks, registered with Xen; PVH, our IDT (and a TSS whose IST stack takes
    /// page and double faults, so a stack overflow still reports) and the event vector, named
    /// to Xen as HVM_PARAM_CALLBACK_IRQ.
    pub fn init() -> Result<(), hypercall::Errno> {
        #[cfg(any(target_os = "none", target_os = "hermit"))]
        if crate::mode::is_pvh() {
            return idt::init(TRAPS_HW, xenrt_pvh_event);
        }
        let mut table = [TrapInfo {
            vector: 0,
            flags: 0,
            cs: 0,
            address: 0,
        }; 20];
        for (slot, &(vector, f)) in table.iter_mut().zip(TRAPS) {
            // DPL 3 for int3/into so they trap as software interrupts; bit 2: mask events.
            let dpl = if vector == 3 || vector == 4 { 3 } else { 0 };
            *slot = TrapInfo {
                vector,
                flags: dpl | 4,
                cs: FLAT_KERNEL_CS,
                address: f as usize as u64,
            };
        }
        // SAFETY: the table is terminated by a zero entry (20 slots > 17 stubs) and lives across
        // the call (Xen copies it).
        hypercall::check(unsafe {
            hypercall::hypercall(
                hypercall::nr::SET_TRAP_TABLE,
                table.as_ptr() as usize,
                0,
                0,
                0,
                0,
            )
        })?;
        // SAFETY: both addresses are our entry stubs above.
        hypercall::check(unsafe {
            hypercall::hypercall(
                hypercall::nr::SET_CALLBACKS,
                xenrt_event_callback as *const () as usize,
                xenrt_failsafe_callback as *const () as usize,
                0,
                0,
                0,
            )
        })?;
        Ok(())
    }
}

#[cfg(any(target_os = "none", target_os = "hermit"))]
pub use imp::init;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_frame_layout_matches_the_stubs() {
        assert_eq!(core::mem::size_of::<TrapFrame>(), 22 * 8);
        assert_eq!(core::mem::offset_of!(TrapFrame, vector), 15 * 8);
        assert_eq!(core::mem::offset_of!(TrapFrame, rip), 17 * 8);
    }

    #[test]
    fn backtrace_follows_the_chain_and_stays_in_the_stack() {
        // Three frames laid out as [saved rbp, return address] pairs in a fake stack.
        let mut stack = [0u64; 16];
        let base = stack.as_ptr() as u64;
        stack[2] = base + 6 * 8;
        stack[3] = 0x1111;
        stack[6] = base + 10 * 8;
        stack[7] = 0x2222;
        stack[10] = 0xdead_0000; // points outside the stack: the walk stops after this frame
        stack[11] = 0x3333;
        let mut seen = vec![];
        std::hint::black_box(&mut stack);
        backtrace(base + 2 * 8, base..base + 16 * 8, 10, |a| seen.push(a));
        assert_eq!(seen, [0x1111, 0x2222, 0x3333]);
        seen.clear();
        backtrace(0x10, base..base + 16 * 8, 10, |a| seen.push(a));
        assert!(seen.is_empty());
    }

    #[test]
    fn page_fault_causes() {
        assert_eq!(page_fault_cause(3), "write to a read-only page");
        assert_eq!(
            page_fault_cause(0x11),
            "instruction fetch from a non-executable page"
        );
        assert_eq!(page_fault_cause(2), "write to an unmapped page");
    }
}
