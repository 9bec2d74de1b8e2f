//! PVH boot, steps 1 to 5 (the PV list in [`crate::boot`] says what each is for); steps 6 to
//! 11 are the PV code's own (`boot::on_xen::run`).
//!
//! 0. `pvh_start32` (arch/src/pvh.rs) reached long mode on the entry's 1 GiB identity map,
//!    installed the hypercall page through the CPUID MSR and calls [`xenrt_pvh_boot`] with the
//!    physical address of hvm_start_info. Interrupts are off (and stay off but for idle waits).
//! 1. hvm_start_info, its command line and memory map are copied out first: Xen put them in
//!    what becomes free memory.
//! 2. The console: Xen's debug port until our page tables map the console ring.
//! 3. Traps: the IDT, a TSS for fault stacks, and the event vector (HVM_PARAM_CALLBACK_IRQ).
//! 4. Page tables: every RAM frame at `pfn * 4096` with the same permissions as PV (text R+X,
//!    rodata R, the rest R+W+NX, the boot stack's guard page unmapped), plus the console and
//!    xenstore rings (HVM special pages, outside RAM), written directly into fresh tables; then
//!    `cr3`. The console moves to its ring.
//! 5. shared_info, placed over a page of our bss with `XENMEM_add_to_physmap`.

use crate::boot::on_xen::{fatal, image_perm, page_mem, run, Started, SHARED_PAGE};
use crate::console::{self, ConsRing, Sink};
use crate::pvh::start::{self, HvmStart, MAX_ENTRIES};
use crate::shmem::ShMem;
use crate::start_info::{SharedInfo, StartInfo};
use arch::hypercall::{self, hvm};
use arch::paging::native::{self, Native};
use arch::paging::{Builder, Perm};
use core::ptr::NonNull;

/// What the entry's early map covers (arch/src/pvh.rs).
const EARLY_MAP_END: u64 = 1 << 30;

#[repr(C, align(4096))]
struct Table([u64; 512]);

/// The roots of our page tables (the builder adds the rest from free frames).
#[link_section = ".bss.pvh_root"]
static mut L4: Table = Table([0; 512]);
#[link_section = ".bss.pvh_root"]
static mut L3: Table = Table([0; 512]);

/// The hvm_start_info this guest booted with.
static HVM_START: spin::Once<HvmStart> = spin::Once::new();

/// The hvm_start_info this guest booted with (command line, memory map and where the map came
/// from), validated; `None` in a PV guest.
pub fn hvm_start() -> Option<&'static HvmStart> {
    HVM_START.get()
}

/// Reads guest memory through the early identity map.
fn early_read(paddr: u64, buf: &mut [u8]) -> bool {
    match paddr.checked_add(buf.len() as u64) {
        Some(end) if end <= EARLY_MAP_END && paddr != 0 => {
            // SAFETY: inside the entry's identity map; Xen's structures are plain bytes.
            unsafe {
                core::ptr::copy_nonoverlapping(paddr as *const u8, buf.as_mut_ptr(), buf.len())
            };
            true
        }
        _ => false,
    }
}

fn param(index: u32, what: &str) -> u64 {
    match hvm::get_param(index) {
        Ok(v) => v,
        Err(e) => fatal(what, e),
    }
}

/// A start_info for the app and the shared boot, filled in from hvm_start_info.
fn start_info(hs: &HvmStart, nr_pages: u64) -> StartInfo {
    let mut magic = [0u8; 32];
    magic[..18].copy_from_slice(b"xen-3.0-x86_64-pvh");
    let mut cmd_line = [0u8; 1024];
    cmd_line[..hs.cmdline().len()].copy_from_slice(hs.cmdline());
    StartInfo {
        magic,
        nr_pages,
        shared_info: 0,
        flags: hs.flags & !crate::start_info::SIF_INITDOMAIN,
        store_mfn: 0,
        store_evtchn: 0,
        console_mfn: 0,
        console_evtchn: 0,
        pt_base: 0,
        nr_pt_frames: 0,
        mfn_list: 0,
        mod_start: 0,
        mod_len: 0,
        cmd_line,
        first_p2m_pfn: 0,
        nr_p2m_frames: 0,
    }
}

/// Steps 1 to 5 of a PVH boot (see the module documentation), then the shared rest.
///
/// # Safety
/// Called once, by arch's PVH entry, with hvm_start_info's physical address, on the early
/// identity map, with interrupts off.
#[no_mangle]
pub unsafe extern "C" fn xenrt_pvh_boot(start_paddr: u64, entry_tsc: u64) -> ! {
    let entry_runstate = hypercall::vcpu_runstate_info(0).ok();
    // 2 (first, so that 1 can report). Xen's debug port.
    console::set_sink(Sink::Hypervisor);

    // 1. hvm_start_info.
    let hs = match start::parse(early_read, start_paddr, hvm::memory_map) {
        Ok(h) => h,
        Err(e) => fatal("hvm_start_info", e),
    };
    let hs = *HVM_START.call_once(|| hs);
    let nr_pages = hs.ram_end();
    let mut holes = [(0u64, 0u64); MAX_ENTRIES + 1];
    let nr_holes = hs.holes(&mut holes);
    let si = start_info(&hs, nr_pages);
    let console_pfn = param(hvm::param::CONSOLE_PFN, "HVM_PARAM_CONSOLE_PFN");
    let console_port = param(hvm::param::CONSOLE_EVTCHN, "HVM_PARAM_CONSOLE_EVTCHN") as u32;
    let store_pfn = param(hvm::param::STORE_PFN, "HVM_PARAM_STORE_PFN");
    let store_port = param(hvm::param::STORE_EVTCHN, "HVM_PARAM_STORE_EVTCHN") as u32;

    // 3. Traps and the event vector.
    arch::traps::set_handler(crate::fault::on_fault);
    if let Err(e) = arch::traps::init() {
        fatal("IDT and event vector", e);
    }

    // 4. Page tables.
    let image_end = core::ptr::addr_of!(arch::entry::__image_end) as u64 >> 12;
    let l4 = core::ptr::addr_of!(L4) as u64 >> 12;
    let l3 = core::ptr::addr_of!(L3) as u64 >> 12;
    // SAFETY: our two root tables, not yet live; the builder takes every other table frame
    // from the free memory after the image.
    unsafe { (*core::ptr::addr_of_mut!(L4)).0[0] = (l3 << 12) | arch::paging::pte::TABLE };
    let mut machine = Native;
    let free_end = nr_pages.min(EARLY_MAP_END >> 12);
    let mut b = Builder::new(&mut machine, l4, image_end, free_end);
    let perm = |pfn: u64| image_perm(pfn, 0..0);
    for r in hs.regions() {
        let p = r.ram_pages();
        if !p.is_empty() {
            if let Err(e) = b.map_range(p.start, p.end, perm) {
                fatal("page tables", e);
            }
        }
    }
    for pfn in [console_pfn, store_pfn] {
        if pfn != 0 {
            if let Err(e) = b.map_range(pfn, pfn + 1, |_| Perm::ReadWrite) {
                fatal("page tables (rings)", e);
            }
        }
    }
    let tables_end = b.next_free();
    let (page_table_frames, page_table_hypercalls) = match b.finish() {
        Ok(r) => r,
        Err(e) => fatal("page tables", e),
    };
    // SAFETY: the new tree maps the image, the stack, all RAM and the rings, as the early map
    // did for what runs now.
    unsafe { native::activate(l4) };
    if console_pfn != 0 {
        console::set_sink(Sink::Ring(
            ConsRing::new(page_mem(console_pfn)),
            console_port,
        ));
    }

    // 5. shared_info.
    let shared_va = core::ptr::addr_of!(SHARED_PAGE) as u64;
    // SAFETY: a page of our bss that nothing uses but through the ShMem below; Xen's
    // shared_info replaces its memory.
    if let Err(e) = unsafe { hvm::add_to_physmap(hvm::Space::SharedInfo, 0, shared_va >> 12) } {
        fatal("place shared_info", e);
    }
    // SAFETY: the page is shared_info now, accessed only through this ShMem from here on.
    let shared = unsafe {
        ShMem::from_raw(
            NonNull::new(shared_va as *mut u8).expect("static is non-null"),
            4096,
        )
    };
    crate::start_info::set_shared_info(SharedInfo::new(shared));

    run(Started {
        start_info: si,
        nr_pages,
        first_free: tables_end,
        holes: &holes[..nr_holes],
        p2m: crate::mm::P2m::identity(nr_pages as usize),
        xenstore: (store_pfn != 0).then_some((store_pfn, store_port)),
        entry_tsc,
        entry_runstate,
        page_table_frames,
        page_table_hypercalls,
    })
}
