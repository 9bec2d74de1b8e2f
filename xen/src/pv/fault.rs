//! What happens when the guest goes wrong: the fault handler (installed in the trap table by
//! boot) and the panic handler. Both print what happened — the fault, RIP, error code, CR2 and a
//! frame-pointer backtrace that `scripts/run` turns into function names — then crash the domain
//! (SHUTDOWN_crash), so the toolstack sees it.

use arch::traps::{self, TrapFrame};

/// The running thread's stack, when it is not the boot stack (a runtime with threads sets it
/// at each switch: [`set_thread_stack`]); `(0, 0)`: the boot stack.
static THREAD_STACK: [core::sync::atomic::AtomicU64; 2] = [
    core::sync::atomic::AtomicU64::new(0),
    core::sync::atomic::AtomicU64::new(0),
];

/// Says which stack the running thread is on (`bottom..top`), so that a fault or panic report
/// walks it; `0..0` for the boot stack. Atomics, no lock: a fault may come anywhere.
pub fn set_thread_stack(r: core::ops::Range<u64>) {
    use core::sync::atomic::Ordering::SeqCst;
    THREAD_STACK[0].store(r.start, SeqCst);
    THREAD_STACK[1].store(r.end, SeqCst);
}

fn stack_range() -> core::ops::Range<u64> {
    use core::sync::atomic::Ordering::SeqCst;
    let (lo, hi) = (THREAD_STACK[0].load(SeqCst), THREAD_STACK[1].load(SeqCst));
    if lo < hi {
        return lo..hi;
    }
    boot_stack()
}

fn boot_stack() -> core::ops::Range<u64> {
    #[cfg(any(target_os = "none", target_os = "hermit"))]
    {
        let bottom = core::ptr::addr_of!(arch::entry::boot_stack_bottom) as u64;
        bottom..bottom + arch::entry::BOOT_STACK_SIZE as u64
    }
    #[cfg(not(any(target_os = "none", target_os = "hermit")))]
    {
        0..0
    }
}

/// Prints a frame-pointer backtrace from `rbp` (and `rip` as frame #0 if not 0) on the
/// running thread's stack, as the fault and panic reports do (`scripts/run` names the
/// functions).
pub fn print_backtrace(rip: u64, rbp: u64) {
    crate::println!("xenrt: backtrace:");
    let mut n = 0;
    if rip != 0 {
        crate::println!("xenrt:   #0 {rip:#018x}");
        n = 1;
    }
    traps::backtrace(rbp, stack_range(), 32, |ret| {
        crate::println!("xenrt:   #{n} {ret:#018x}");
        n += 1;
    });
}

/// The trap handler: report and crash.
pub fn on_fault(f: &TrapFrame) -> ! {
    let name = traps::vector_name(f.vector);
    crate::println!(
        "xenrt: FATAL {name} (vector {}) at rip={:#x} error={:#x}",
        f.vector,
        f.rip,
        f.error_code
    );
    if f.vector == 14 {
        let cr2 = traps::fault_address()
            .unwrap_or_else(|| crate::start_info::shared_info().map_or(0, |s| s.cr2()));
        crate::println!(
            "xenrt: page fault at address {cr2:#x}: {}",
            traps::page_fault_cause(f.error_code)
        );
    }
    crate::println!(
        "xenrt: rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}",
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx,
        f.rsi,
        f.rdi
    );
    crate::println!(
        "xenrt: rsp={:#x} rbp={:#x} rflags={:#x}",
        f.rsp,
        f.rbp,
        f.rflags
    );
    print_backtrace(f.rip, f.rbp);
    crate::domain::exit(crate::domain::ExitCode::Crash)
}

#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    static PANICKING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if PANICKING.swap(true, core::sync::atomic::Ordering::SeqCst) {
        // A panic while reporting a panic: crash without printing more.
        arch::hypercall::shutdown(arch::hypercall::ShutdownReason::Crash);
    }
    match info.location() {
        Some(l) => crate::println!(
            "xenrt: PANIC at {}:{}: {}",
            l.file(),
            l.line(),
            info.message()
        ),
        None => crate::println!("xenrt: PANIC: {}", info.message()),
    }
    print_backtrace(0, arch::cpu::frame_pointer());
    crate::domain::exit(crate::domain::ExitCode::Crash)
}
