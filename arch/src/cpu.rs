//! Small CPU primitives the runtime needs.

/// Reads the time-stamp counter (serialized after earlier loads with `lfence`).
#[inline]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: lfence and rdtsc have no memory effects; rdtsc is allowed in ring 3 under Xen.
        unsafe {
            core::arch::x86_64::_mm_lfence();
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Current frame pointer (for backtraces from the panic handler).
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let rbp: u64;
    // SAFETY: reads a register.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags))
    };
    rbp
}

/// Ring-0 instructions a PVH guest uses (its own page tables, MSRs, interrupts). Calling any of
/// them in a PV guest (ring 3) raises #GP: only the PVH side of arch calls them.
#[cfg(any(target_os = "none", target_os = "hermit"))]
pub(crate) mod ring0 {
    use core::arch::asm;

    /// `wrmsr`.
    ///
    /// # Safety
    /// Ring 0; `msr` must exist and `value` be what it means to the caller.
    pub unsafe fn wrmsr(msr: u32, value: u64) {
        // SAFETY: forwarded to the caller.
        unsafe {
            asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
                options(nostack))
        };
    }

    /// The page-fault address.
    pub fn cr2() -> u64 {
        let v: u64;
        // SAFETY: reads a control register (ring 0).
        unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    /// The page-table root.
    pub fn cr3() -> u64 {
        let v: u64;
        // SAFETY: reads a control register (ring 0).
        unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    /// Loads a page-table root (flushing the TLB).
    ///
    /// # Safety
    /// `root` must be the physical address of an L4 table that maps everything in use.
    pub unsafe fn set_cr3(root: u64) {
        // SAFETY: forwarded to the caller.
        unsafe { asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) };
    }

    /// Invalidates the TLB entry of `va`.
    pub fn invlpg(va: u64) {
        // SAFETY: only drops a cached translation.
        unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
    }

    /// `sti` (true) or `cli` (false).
    pub fn set_interrupts(enabled: bool) {
        // SAFETY: ring 0; the handlers the IDT names may run from here on.
        unsafe {
            if enabled {
                asm!("sti", options(nomem, nostack));
            } else {
                asm!("cli", options(nomem, nostack));
            }
        }
    }

    /// `sti; hlt`: waits for an interrupt with interrupts enabled for exactly the wait (the
    /// interrupt shadow of `sti` covers `hlt`, so one that is already pending ends it at once).
    /// The event vector's handler returns with IF clear, so interrupts are off again after;
    /// and past the `hlt` if it came before the `hlt` ran (arch/src/traps.rs).
    pub fn wait_for_interrupt() {
        extern "C" {
            fn xenrt_pvh_idle();
        }
        // SAFETY: ring 0; the only handler that runs is the event vector's, which preserves
        // every register.
        unsafe { xenrt_pvh_idle() };
    }
}
