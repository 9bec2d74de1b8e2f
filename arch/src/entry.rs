//! The PV entry point, the boot stack and the ELF notes Xen reads to build the domain.
//!
//! Xen loads the image at virtual address 0 (VIRT_BASE 0), fills the hypercall page, builds
//! initial page tables covering the image, start_info, the P2M list and a boot stack, and jumps to
//! `_start` in 64-bit mode, ring 3, with `%rsi` = the virtual address of start_info and event
//! delivery masked.
//!
//! `_start`, in pseudo-code:
//! ```text
//! rsp = top of BOOT_STACK (ours, in .bss, with an unmapped guard page below it once paging runs)
//! rbp = 0                      // ends the frame-pointer chain for backtraces
//! xenrt_boot(start_info)       // xen::boot: never returns
//! ```

/// Size of the boot (and main) stack.
pub const BOOT_STACK_SIZE: usize = 256 * 1024;

extern "C" {
    /// Lowest address of the boot stack's guard page (one page, unmapped by paging setup).
    pub static boot_stack_guard: [u8; 4096];
    /// Lowest address of the boot stack proper.
    pub static boot_stack_bottom: [u8; BOOT_STACK_SIZE];
    /// First byte of the image (address 0).
    pub static __image_start: u8;
    /// End of text (page aligned).
    pub static __text_end: u8;
    /// End of rodata (page aligned).
    pub static __rodata_end: u8;
    /// End of the image including bss (page aligned).
    pub static __image_end: u8;
}

core::arch::global_asm!(
    r#"
    .pushsection .text.entry, "ax"
    .global _start
_start:
    cld
    lea boot_stack_top(%rip), %rsp
    xor %ebp, %ebp
    mov %rsi, %rdi
    call xenrt_boot
    ud2
    .popsection

    /* No bytes in the file (nobits): Xen fills the whole page before entry. link.ld puts it on
       a page of its own; aligning it here too would page-align the text segment in the file. */
    .pushsection .hypercall_page, "ax", @nobits
    .global hypercall_page
hypercall_page:
    .skip 4096
    .popsection

    .pushsection .bss.boot_stack, "aw", @nobits
    .p2align 12
    .global boot_stack_guard
boot_stack_guard:
    .skip 4096
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
    .global boot_stack_top
boot_stack_top:
    .popsection

    /* Xen ELF notes (public/elfnote.h): name "Xen", type, descriptor. */
    .pushsection .note.Xen, "a", @note
    .macro xen_note type, desc_start, desc_end
    .p2align 2
    .long 4
    .long \desc_end - \desc_start
    .long \type
    .asciz "Xen"
    .p2align 2
    .endm

    xen_note 6, 1f, 2f          /* GUEST_OS */
1:  .asciz "xenrt"
2:  xen_note 5, 1f, 2f          /* XEN_VERSION */
1:  .asciz "xen-3.0"
2:  xen_note 8, 1f, 2f          /* LOADER */
1:  .asciz "generic"
2:  xen_note 3, 1f, 2f          /* VIRT_BASE */
1:  .quad 0
2:  xen_note 4, 1f, 2f          /* PADDR_OFFSET */
1:  .quad 0
2:  xen_note 1, 1f, 2f          /* ENTRY */
1:  .quad _start
2:  xen_note 2, 1f, 2f          /* HYPERCALL_PAGE */
1:  .quad hypercall_page
2:  xen_note 10, 1f, 2f         /* FEATURES */
1:  .asciz "!writable_page_tables"
2:  xen_note 14, 1f, 2f         /* SUSPEND_CANCEL: a cancelled suspend returns 1 */
1:  .long 1
2:  .p2align 2
    .popsection
    "#,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);
