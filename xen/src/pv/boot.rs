//! The boot sequence, from Xen's jump to `_start` to the application's `main` and back out.
//!
//! 1. `_start` (arch/src/entry.rs) switches to our boot stack and calls [`xenrt_boot`] with the
//!    address of start_info. Event upcalls are masked; Xen's boot page tables map the image,
//!    start_info, the P2M list, the tables themselves and a little more.
//! 2. The console comes first so everything after can report: `console_io` as dom0, the PV
//!    console ring (found through the M2P map) as a domU.
//! 3. The trap table and the event/failsafe callbacks, so a fault prints instead of killing us
//!    silently.
//! 4. Page tables: every page of guest memory mapped at `pfn * 4096`, text R+X, rodata R,
//!    everything else R+W+NX, Xen's and our page-table frames read-only, and the page under the
//!    stack unmapped (a guard page). Built in batches of `mmu_update`s.
//! 5. shared_info mapped (the clock, event bitmaps, CR2 for the fault handler).
//! 6. Memory: a page-frame allocator over all free frames; the heap grows from it on demand.
//! 7. The command line (`extra=` in the xl config): unknown or malformed keys are reported.
//! 8. Logging at the level from `log=`.
//! 9. Events: VIRQ_TIMER bound, the console ring's event channel, so the idle loop can block.
//! 10. Grant table frames; for a domU, xenstore (ring page and event channel from start_info),
//!     the P2M frame lists save/restore needs ([`crate::suspend`]) and lifecycle control
//!     (`xl shutdown` / `xl reboot` / `xl save` through `control/shutdown`).
//! 11. The app's `main`; its result becomes the domain's shutdown reason.

use crate::cmdline::KeySpec;
// What boot learns and how the domain ends live in `domain`; their `xen::boot::` paths stay.
pub use crate::domain::{cmdline, exit, info, since_entry_ns, BootInfo, Exit, ExitCode};

/// An app's readiness report (kept with the stats it writes beside).
pub use crate::stats::ready;

/// Grant-table frames to set up (512 grants each), if Xen allows that many.
#[cfg_attr(not(any(target_os = "none", target_os = "hermit")), allow(dead_code))]
const GRANT_FRAMES: u32 = 8;

/// Command-line keys the app accepts besides the runtime's (`log=`), as one or more lists (the
/// app's own, a library's such as the network's `ip=`...); set by [`main!`](crate::main).
pub struct AppKeys(pub &'static [&'static [KeySpec]]);

/// Declares the application's entry function: `xen::main!(main)`, or with extra command-line
/// keys `xen::main!(main, KEYS)` where `KEYS: &[xen::cmdline::KeySpec]` (several lists:
/// `xen::main!(main, KEYS, net::stack::KEYS)`). `main` takes no
/// arguments and returns `()`, `Result<(), E: Display>` or [`ExitCode`].
#[macro_export]
macro_rules! main {
    ($f:path) => {
        $crate::main!($f, &[]);
    };
    ($f:path, $($keys:expr),+ $(,)?) => {
        #[no_mangle]
        fn xenrt_app_main() -> $crate::boot::ExitCode {
            $crate::boot::Exit::exit_code($f())
        }
        #[no_mangle]
        static XENRT_APP_KEYS: $crate::boot::AppKeys = $crate::boot::AppKeys(&[$($keys),+]);
    };
}

/// The steps that only exist on Xen (the host build of this crate is for tests).
#[cfg(any(target_os = "none", target_os = "hermit"))]
pub(crate) mod on_xen {
    use super::*;
    use crate::cmdline::Cmdline;
    use crate::console::{self, ConsRing, Sink};
    use crate::mm::frames::{FrameAllocator, Pfn};
    use crate::shmem::ShMem;
    use crate::start_info::SharedInfo;
    use crate::start_info::StartInfo;
    use arch::hypercall;
    use arch::paging::{Builder, Machine, MmuUpdate, Perm, ENTRIES};
    use core::fmt;
    use core::ptr::NonNull;

    /// Guest memory as boot sees it: P2M list from start_info, M2P from Xen's fixed mapping.
    struct PvMachine {
        p2m: crate::mm::P2m,
    }

    impl Machine for PvMachine {
        type Error = hypercall::Errno;

        fn pfn_to_mfn(&self, pfn: u64) -> u64 {
            self.p2m.get(pfn)
        }

        fn mfn_to_pfn(&self, mfn: u64) -> u64 {
            crate::mm::mfn_to_pfn(mfn)
        }

        fn read_entry(&self, pfn: u64, index: usize) -> u64 {
            // SAFETY: page-table frames are mapped (read-only) at pfn * 4096; index < 512.
            unsafe { core::ptr::read_volatile(((pfn << 12) as *const u64).add(index)) }
        }

        fn write_page(&mut self, pfn: u64, entries: &[u64; ENTRIES]) {
            // SAFETY: the builder only writes free frames it took, which are mapped writable.
            unsafe {
                core::ptr::copy_nonoverlapping(entries.as_ptr(), (pfn << 12) as *mut u64, ENTRIES)
            };
        }

        fn mmu_update(&mut self, updates: &[MmuUpdate]) -> Result<(), hypercall::Errno> {
            // SAFETY: the builder's updates map every frame of the domain at pfn * 4096 with the
            // permissions boot chose (the image, stack and tables stay mapped).
            unsafe { hypercall::mmu_update(updates) }.map(|_| ())
        }

        fn flush_tlb(&mut self) -> Result<(), hypercall::Errno> {
            hypercall::tlb_flush_local()
        }
    }

    /// A page in the guest's memory (mapped at `pfn * 4096`).
    pub(crate) fn page_mem(pfn: u64) -> ShMem {
        // SAFETY: every guest frame is mapped at pfn * 4096 for the life of the domain, and pages
        // handed to ShMem (console, xenstore, shared_info) are only accessed through it.
        unsafe {
            ShMem::from_raw(
                NonNull::new((pfn << 12) as *mut u8).expect("pfn 0 is text"),
                4096,
            )
        }
    }

    // Display, not Debug: no derived Debug code in the image for errors boot never expects.
    pub(crate) fn fatal(what: &str, e: impl fmt::Display) -> ! {
        crate::println!("xenrt: boot failed: {what}: {e}");
        exit(ExitCode::Crash)
    }

    /// The permission of frame `pfn` in our page tables: the boot stack's guard page unmapped,
    /// text R+X, rodata (and `read_only`: Xen's boot page tables in a PV guest) R, the rest
    /// R+W+NX.
    pub(crate) fn image_perm(pfn: u64, read_only: core::ops::Range<u64>) -> Perm {
        let (text_end, rodata_end, guard) = {
            use arch::entry::*;
            // Linker-script symbols: only their addresses are taken.
            (
                core::ptr::addr_of!(__text_end) as u64 >> 12,
                core::ptr::addr_of!(__rodata_end) as u64 >> 12,
                core::ptr::addr_of!(boot_stack_guard) as u64 >> 12,
            )
        };
        if pfn == guard {
            Perm::Unmapped
        } else if pfn < text_end {
            Perm::Text
        } else if pfn < rodata_end || read_only.contains(&pfn) {
            Perm::ReadOnly
        } else {
            Perm::ReadWrite
        }
    }

    /// Step 1 onwards: see the module documentation.
    ///
    /// # Safety
    /// Called once, by `_start`, with start_info's virtual address.
    #[no_mangle]
    pub unsafe extern "C" fn xenrt_boot(start_info: *const StartInfo) -> ! {
        let entry_tsc = arch::cpu::rdtsc();
        // Xen's account of our vCPU so far, to split the time to readiness by runstate.
        let entry_runstate = hypercall::vcpu_runstate_info(0).ok();
        // SAFETY: Xen passes a mapped start_info; we copy it once.
        let si: StartInfo = unsafe { core::ptr::read(start_info) };
        // SAFETY: the start_info page is ours (inside the domain's memory, mapped at its
        // pfn * 4096 for good once step 4 is done); only a suspend and the toolstack's restore
        // write it afterwards, through this ShMem.
        let si_page = unsafe {
            ShMem::from_raw(
                NonNull::new(start_info as *mut u8).expect("Xen passes start_info"),
                4096,
            )
        };
        crate::start_info::set_page(si_page, si);
        let nr_pages = si.nr_pages;
        // SAFETY: the P2M list is mapped at mfn_list with nr_pages entries for the life of the
        // domain, and nothing in the guest writes it.
        let p2m = unsafe {
            crate::mm::P2m::new(
                NonNull::new(si.mfn_list as *mut u64).expect("Xen maps the P2M list"),
                nr_pages as usize,
            )
        };
        let mut machine = PvMachine { p2m };

        // 2. Console.
        if si.is_dom0() {
            console::set_sink(Sink::Hypervisor);
        } else {
            let pfn = machine.mfn_to_pfn(si.console_mfn);
            console::set_sink(Sink::Ring(ConsRing::new(page_mem(pfn)), si.console_evtchn));
        }

        // 3. Traps.
        arch::traps::set_handler(crate::fault::on_fault);
        if let Err(e) = arch::traps::init() {
            fatal("set_trap_table", e);
        }

        // 4. Page tables.
        let pt_first = si.pt_base >> 12;
        let pt_end = pt_first + si.nr_pt_frames;
        let free_start = pt_end;
        let perm = |pfn: u64| image_perm(pfn, pt_first..pt_end);
        let mut b = Builder::new(&mut machine, pt_first, free_start, nr_pages);
        if let Err(e) = b.map_range(0, nr_pages, perm) {
            fatal("page tables", e);
        }
        let tables_end = b.next_free();
        let (page_table_frames, page_table_hypercalls) = match b.finish() {
            Ok(r) => r,
            Err(e) => fatal("page tables", e),
        };

        // 5. shared_info, mapped over a page of our bss.
        let shared_va = core::ptr::addr_of!(SHARED_PAGE) as u64;
        let pte = Perm::ReadWrite.pte(si.shared_info >> 12);
        // SAFETY: a page of our bss that nothing uses but through the ShMem below.
        let r = unsafe { hypercall::update_va_mapping(shared_va, pte, hypercall::UVMF_INVLPG) };
        if let Err(e) = r {
            fatal("map shared_info", e);
        }
        // SAFETY: the page now maps shared_info, accessed only through this ShMem from here on.
        let shared = unsafe {
            ShMem::from_raw(
                NonNull::new(shared_va as *mut u8).expect("static is non-null"),
                4096,
            )
        };
        crate::start_info::set_shared_info(SharedInfo::new(shared));

        let xenstore = (!si.is_dom0()).then(|| (machine.mfn_to_pfn(si.store_mfn), si.store_evtchn));
        run(Started {
            start_info: si,
            nr_pages,
            first_free: tables_end,
            holes: &[],
            p2m,
            xenstore,
            entry_tsc,
            entry_runstate,
            page_table_frames,
            page_table_hypercalls,
        })
    }

    /// What the platform's own steps (1 to 5) hand to the shared rest of the boot.
    pub(crate) struct Started<'a> {
        /// start_info: Xen's (PV), or one filled in from hvm_start_info (PVH: nr_pages, flags,
        /// the command line) so the app sees the same facts either way.
        pub start_info: StartInfo,
        /// Frames `0..nr_pages` are the domain's memory (minus `holes`).
        pub nr_pages: u64,
        /// Frames below this are in use (image, boot data, page tables).
        pub first_free: u64,
        /// Frame ranges below `nr_pages` that are not RAM.
        pub holes: &'a [(u64, u64)],
        /// pfn -> guest frame number (PVH: the identity).
        pub p2m: crate::mm::P2m,
        /// The xenstore ring's frame and event channel (none for dom0).
        pub xenstore: Option<(u64, u32)>,
        /// The TSC at entry.
        pub entry_tsc: u64,
        /// Xen's runstate of our vCPU at entry.
        pub entry_runstate: Option<hypercall::RunstateInfo>,
        /// Frames and hypercalls the page tables took.
        pub page_table_frames: usize,
        /// See `page_table_frames`.
        pub page_table_hypercalls: usize,
    }

    /// Steps 6 to 11, the same for PV and PVH: memory, command line, logging, events, grant
    /// table, xenstore and lifecycle, then the app.
    pub(crate) fn run(s: Started<'_>) -> ! {
        let Started {
            start_info: si,
            nr_pages,
            first_free: tables_end,
            holes,
            p2m,
            xenstore,
            entry_tsc,
            entry_runstate,
            page_table_frames,
            page_table_hypercalls,
        } = s;

        // 6. Memory: the bitmap lives in the first free frames; everything below them is in use.
        let words = FrameAllocator::words_needed(nr_pages as usize);
        let bitmap_frames = (words * 8).div_ceil(4096) as u64;
        // SAFETY: those frames are free, mapped writable, and become the bitmap's alone.
        let storage: &'static mut [u64] =
            unsafe { core::slice::from_raw_parts_mut((tables_end << 12) as *mut u64, words) };
        let mut frames = match FrameAllocator::new(Pfn(0), nr_pages as usize, storage) {
            Ok(f) => f,
            Err(e) => fatal("frame allocator", e),
        };
        if let Err(e) = frames.reserve(Pfn(0), (tables_end + bitmap_frames) as usize) {
            fatal("frame allocator", e);
        }
        for &(start, end) in holes {
            if let Err(e) = frames.reserve(Pfn(start), (end - start) as usize) {
                fatal("frame allocator", e);
            }
        }
        // The guard page and the shared_info page have no memory behind them any more.
        crate::mm::init_frames(frames, p2m);
        crate::mm::init_heap();

        // 7. Command line.
        extern "Rust" {
            static XENRT_APP_KEYS: AppKeys;
        }
        // SAFETY: defined by the app through `xen::main!`.
        let key_lists = unsafe { XENRT_APP_KEYS.0 };
        let app_keys: alloc::vec::Vec<KeySpec> =
            key_lists.iter().flat_map(|l| l.iter().copied()).collect();
        let cmd = crate::domain::set_cmdline(Cmdline::parse(si.cmdline(), &app_keys));

        // 8. Logging.
        static LOGGER: console::Logger = console::Logger;
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(cmd.log_level().unwrap_or(log::LevelFilter::Info));
        for p in cmd.problems() {
            crate::println!("xenrt: cmdline: {p}");
        }

        // 9. Events. The timer VIRQ only ends the idle loop's block (whoever set the deadline
        // checks the clock), so it needs no channel, only to be unmasked; the console waits on
        // its own port with SCHEDOP_poll.
        match crate::events::bind_virq(crate::events::virq::TIMER) {
            Ok(port) => crate::events::unmask(port),
            Err(e) => fatal("bind VIRQ_TIMER", e),
        }

        // 10. Grant table, xenstore, lifecycle.
        if let Err(e) = crate::platform::init_grant_table(GRANT_FRAMES) {
            fatal("grant table", e);
        }
        if let Some((pfn, port)) = xenstore {
            if let Err(e) = crate::platform::init_xenstore(page_mem(pfn), port) {
                fatal("xenstore", e);
            }
            if let Err(e) = crate::suspend::init() {
                log::warn!("save/restore unavailable: {e}");
            }
            if let Err(e) = crate::platform::init_lifecycle() {
                log::warn!("lifecycle control unavailable: {e}");
            }
        }

        let hz = crate::time::tsc_hz().max(1);
        let entry_to_main_ns =
            ((arch::cpu::rdtsc() - entry_tsc) as u128 * 1_000_000_000 / hz as u128) as u64;
        crate::domain::set_info(BootInfo {
            start_info: si,
            entry_to_main_ns,
            entry_tsc,
            entry_runstate,
            page_table_frames,
            page_table_hypercalls,
        });
        log::debug!(
            "boot: {} pages, {} page-table frames in {} hypercalls, {} free frames, entry->main {} us",
            nr_pages,
            page_table_frames,
            page_table_hypercalls,
            crate::mm::free_frames(),
            entry_to_main_ns / 1000
        );

        // 11. The app.
        extern "Rust" {
            fn xenrt_app_main() -> ExitCode;
        }
        // SAFETY: defined by the app through `xen::main!`.
        let code = unsafe { xenrt_app_main() };
        exit(code)
    }

    #[repr(C, align(4096))]
    pub(crate) struct Page(pub(crate) [u8; 4096]);

    /// The page shared_info is mapped over (PV) or placed at (PVH).
    #[link_section = ".bss.shared_info"]
    pub(crate) static SHARED_PAGE: Page = Page([0; 4096]);
}
