//! PVH entry (prototype, issue 16): the 32-bit entry Xen jumps to when the image is booted with
//! `type="pvh"` (the `XEN_ELFNOTE_PHYS32_ENTRY` note below names it; only images whose build.rs
//! calls `link_image_pvh()` carry it), the switch to long mode on our own page tables and GDT,
//! and the first hypercall through a hypercall page set up via the CPUID-advertised MSR. See
//! docs/pvh.md for the ABI and the plan.
//!
//! Entry state (xen docs/misc/pvh.pandoc): 32-bit flat protected mode, paging off, CR4 = 0,
//! IF = 0, `%ebx` = physical address of `hvm_start_info`; no usable stack, GDT or IDT.
//!
//! `pvh_start32`, in pseudo-code:
//! ```text
//! edi = ebx                                  // hvm_start_info paddr, the 64-bit code's argument
//! PD[i] = i * 2 MiB | P|RW|PS  (i < 512)     // identity map of the first 1 GiB (gfn = pfn)
//! PDPT[0] = PD; PML4[0] = PDPT; cr3 = PML4
//! cr4.PAE = 1; EFER.LME = EFER.NXE = 1; cr0.PG = 1   // long mode (compatibility)
//! lgdt; ljmp 64-bit code selector             // long mode proper
//! ss/ds/es = data selector; rsp = boot stack top
//! xenrt_pvh_start(hvm_start_info)             // never returns
//! ```
//! Until an IDT is loaded any exception triple-faults (Xen reports the domain crashed).

/// Xen's HVM debug console port: bytes written here reach Xen's console as `(dN) line`.
pub const DEBUG_PORT: u16 = 0xe9;

/// `hvm_start_info.magic` (public/arch-x86/hvm/start_info.h).
pub const HVM_START_MAGIC: u32 = 0x336e_c578;

core::arch::global_asm!(
    r#"
    /* XEN_ELFNOTE_PHYS32_ENTRY (18): a 32-bit physical entry address. In a section of its own
       (progbits, not note: lld keeps every SHT_NOTE section and what it references alive):
       arch/link.ld discards it (and with it, through --gc-sections, all of this file) unless the
       image opts in with link_image_pvh() in its build.rs (arch/image_build.rs). */
    .pushsection .note.Xen.pvh, "a", @progbits
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .p2align 2
    .long pvh_start32
    .p2align 2
    .popsection

    .pushsection .text.pvh32, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cld
    mov %ebx, %edi
    /* PD: 512 2 MiB pages, 0 .. 1 GiB */
    mov $pvh_pd, %edx
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%edx,%ecx,8)
    movl $0, 4(%edx,%ecx,8)
    inc %ecx
    cmp $512, %ecx
    jb 1b
    mov $pvh_pdpt, %eax
    lea 3(%edx), %ecx
    mov %ecx, (%eax)
    mov $pvh_pml4, %edx
    lea 3(%eax), %ecx
    mov %ecx, (%edx)
    mov %edx, %cr3
    mov %cr4, %eax
    or $0x620, %eax             /* PAE | OSFXSR | OSXMMEXCPT (SSE for std programs) */
    mov %eax, %cr4
    mov $0xc0000080, %ecx       /* EFER */
    rdmsr
    or $0x900, %eax             /* LME | NXE */
    wrmsr
    mov %cr0, %eax
    and $~0xc, %eax             /* no EM, no TS: the FPU is ours */
    or $0x80010023, %eax        /* PG | WP (read-only pages bind ring 0) | NE | MP | PE */
    mov %eax, %cr0
    lgdt pvh_gdt_ptr
    ljmp $8, $pvh_start64

    .code64
pvh_start64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    lea boot_stack_top(%rip), %rsp
    xor %ebp, %ebp
    /* edi (zero-extended by the 32-bit mov) = hvm_start_info paddr */
    call xenrt_pvh_start
    ud2
    .popsection

    .pushsection .data.pvh_gdt, "aw"
    .p2align 3
    .global pvh_gdt
pvh_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, ring 0 */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
    .quad 0, 0                  /* 0x18: the TSS (filled by traps::idt) */
pvh_gdt_end:
pvh_gdt_ptr:
    .word pvh_gdt_end - pvh_gdt - 1
    .quad pvh_gdt
    .popsection

    .pushsection .bss.pvh_tables, "aw", @nobits
    .p2align 12
pvh_pml4:
    .skip 4096
pvh_pdpt:
    .skip 4096
pvh_pd:
    .skip 4096
    .popsection
    "#,
    options(att_syntax)
);

/// Writes bytes to Xen's HVM debug console port.
pub fn debug_write(bytes: &[u8]) {
    for &b in bytes {
        // SAFETY: port 0xe9 is Xen's debug console in an HVM/PVH domain; the write has no
        // effect on memory.
        unsafe {
            core::arch::asm!("out dx, al", in("dx") DEBUG_PORT, in("al") b, options(nomem, nostack))
        };
    }
}

/// Finds Xen's CPUID leaves (base 0x4000_0000, or shifted by 0x100 steps when Viridian is
/// offered first) and returns the base.
fn xen_cpuid_base() -> Option<u32> {
    let mut base = 0x4000_0000u32;
    while base < 0x4001_0000 {
        let r = core::arch::x86_64::__cpuid(base);
        if r.ebx == 0x566e_6558
            && r.ecx == 0x6558_4d4d
            && r.edx == 0x4d4d_566e
            && r.eax.checked_sub(base).is_some_and(|n| n >= 2)
        {
            return Some(base);
        }
        base += 0x100;
    }
    None
}

extern "C" {
    static hypercall_page: [u8; 4096];
    /// The platform's PVH boot (xen/src/pvh/boot.rs).
    fn xenrt_pvh_boot(start_info: u64, entry_tsc: u64) -> !;
}

fn stop() -> ! {
    loop {
        // SAFETY: hlt with IF = 0 stops this vCPU for good.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

/// Long-mode PVH start: checks the start_info magic, sets up the hypercall page through the MSR
/// in CPUID leaf base+2, marks the guest PVH ([`crate::mode`]) and hands over to the platform's
/// boot. Reports through the debug port until the platform has a console.
///
/// # Safety
/// Called once, by `pvh_start64`, with the physical address Xen passed in `%ebx`, while the
/// 1 GiB identity map is live.
#[no_mangle]
unsafe extern "C" fn xenrt_pvh_start(start_info: u64) -> ! {
    let entry_tsc = crate::cpu::rdtsc();
    // SAFETY: Xen placed hvm_start_info at this physical address, inside our 1 GiB identity map.
    let magic = unsafe { core::ptr::read_volatile(start_info as *const u32) };
    if magic != HVM_START_MAGIC {
        debug_write(b"xenrt pvh: bad start_info magic\n");
        stop();
    }
    let Some(base) = xen_cpuid_base() else {
        debug_write(b"xenrt pvh: no Xen CPUID leaves\n");
        stop();
    };
    let r = core::arch::x86_64::__cpuid(base + 2);
    let page = core::ptr::addr_of!(hypercall_page) as u64;
    // SAFETY: the MSR Xen named in leaf base+2; Xen writes the hypercall stubs into our
    // (identity-mapped, gfn = pfn) hypercall page.
    unsafe { crate::cpu::ring0::wrmsr(r.ebx, page) };
    crate::mode::set_pvh();
    // SAFETY: once, with start_info's physical address, on the identity map, IF = 0.
    unsafe { xenrt_pvh_boot(start_info, entry_tsc) }
}
