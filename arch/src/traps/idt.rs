//! The PVH side of traps: a ring-0 IDT whose gates enter the same trap stubs as PV (each
//! vector's `_hw` entry, which skips PV's rcx/r11 words), the event vector that Xen raises for
//! event upcalls (`HVM_PARAM_CALLBACK_IRQ` = vector type), and a 64-bit TSS whose first IST
//! stack takes page faults and double faults: a fault on the guard page under a stack cannot
//! push its frame there, so it must switch stacks to be reported at all.
//!
//! IDT gate (Intel SDM 6.14.1), 16 bytes: offset[15:0], selector, IST, type/attributes
//! (0x8e: present, DPL 0, 64-bit interrupt gate: IF cleared on entry), offset[31:16],
//! offset[63:32], zero.

use crate::hypercall::{self, hvm};
use core::sync::atomic::{AtomicU64, Ordering};

/// The vector Xen raises for event upcalls.
pub const EVENT_VECTOR: u8 = 0xf3;
/// Kernel code selector (arch/src/pvh.rs's GDT).
const CODE_SELECTOR: u16 = 0x08;
/// TSS selector (GDT slots 3 and 4).
const TSS_SELECTOR: u16 = 0x18;
/// Size of the IST stack.
const IST_STACK: usize = 16 * 1024;

#[repr(C, align(16))]
struct Idt([u64; 512]);

static mut IDT: Idt = Idt([0; 512]);

/// 64-bit TSS (SDM 8.7): only IST1 is used.
#[repr(C, packed(4))]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

static mut TSS: Tss = Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: 104,
};

#[repr(C, align(16))]
struct Stack([u8; IST_STACK]);

static mut FAULT_STACK: Stack = Stack([0; IST_STACK]);

extern "C" {
    /// The GDT of arch/src/pvh.rs (5 quads: null, code, data, TSS low, TSS high).
    static mut pvh_gdt: [u64; 5];
}

/// The fault address of the latest page fault (CR2, read before anything can fault again).
static CR2: AtomicU64 = AtomicU64::new(0);

/// Called first by the trap entry in a PVH guest.
pub(super) fn note_fault() {
    CR2.store(crate::cpu::ring0::cr2(), Ordering::Relaxed);
}

/// CR2 as the last fault left it.
pub(super) fn fault_address() -> u64 {
    CR2.load(Ordering::Relaxed)
}

fn gate(handler: u64, ist: u8) -> [u64; 2] {
    let lo = (handler & 0xffff)
        | (CODE_SELECTOR as u64) << 16
        | (ist as u64) << 32
        | 0x8e << 40
        | ((handler >> 16) & 0xffff) << 48;
    [lo, handler >> 32]
}

/// Loads the IDT (every vector in `traps`, and the event entry at [`EVENT_VECTOR`]) and the
/// TSS, then asks Xen to deliver event upcalls as that vector.
pub(super) fn init(
    traps: &[(u8, unsafe extern "C" fn())],
    event: unsafe extern "C" fn(),
) -> Result<(), hypercall::Errno> {
    // SAFETY: boot runs this once, on one vCPU, with interrupts off; the statics are only
    // touched here (and read by the CPU).
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for &(vector, f) in traps {
            let ist = if vector == 8 || vector == 14 { 1 } else { 0 };
            let g = gate(f as usize as u64, ist);
            idt.0[2 * vector as usize] = g[0];
            idt.0[2 * vector as usize + 1] = g[1];
        }
        let g = gate(event as usize as u64, 0);
        idt.0[2 * EVENT_VECTOR as usize] = g[0];
        idt.0[2 * EVENT_VECTOR as usize + 1] = g[1];

        let stack_top = core::ptr::addr_of!(FAULT_STACK) as u64 + IST_STACK as u64;
        let tss = &mut *core::ptr::addr_of_mut!(TSS);
        tss.ist[0] = stack_top;
        let base = core::ptr::addr_of!(TSS) as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        let gdt = &mut *core::ptr::addr_of_mut!(pvh_gdt);
        gdt[3] = (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | 0x89 << 40
            | ((limit >> 16) & 0xf) << 48
            | ((base >> 24) & 0xff) << 56;
        gdt[4] = base >> 32;

        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let p = Pointer {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: core::ptr::addr_of!(IDT) as u64,
        };
        core::arch::asm!("lidt [{}]", in(reg) &p, options(readonly, nostack, preserves_flags));
        core::arch::asm!("ltr {0:x}", in(reg) TSS_SELECTOR, options(nostack, preserves_flags));
    }
    resume()
}

/// Asks Xen to deliver event upcalls as [`EVENT_VECTOR`] (at boot, and again in a new domain).
pub(super) fn resume() -> Result<(), hypercall::Errno> {
    hvm::set_param(hvm::param::CALLBACK_IRQ, hvm::callback_vector(EVENT_VECTOR))
}
