//! Save, restore and live migration (`xl save`, `xl restore`, `xl save -c`, `xl migrate`): the
//! PV suspend path, and what the rest of the runtime sees of it.
//!
//! Drivers see one number, [`generation`]: how many times the domain has moved into a new
//! domain. When it changes, every grant, event-channel port and machine frame they hold is void
//! (see [`Hal::generation`](crate::hal::Hal::generation)).
//!
//! What the toolstack (libxc's `xg_sr_save_x86_pv.c` / `xg_sr_restore_x86_pv.c`) needs of a PV
//! guest, and what this module does for it:
//! - at all times (a live migration reads it while we run): the P2M list, found through
//!   `shared_info.arch`: `max_pfn` entries, and `pfn_to_mfn_frame_list_list`, the machine frame
//!   of a page listing the frames of pages listing the P2M's own frames (a three-level tree, as
//!   Linux's `xen_build_mfn_list_list` and Mini-OS' `arch_init_p2m` build it);
//! - on `control/shutdown = suspend` (acknowledged by clearing it, in
//!   [`platform`](crate::platform)'s lifecycle, from the idle loop: no task is running):
//!   start_info's xenstore and console frames as PFNs, nothing mapped that is not ours (the
//!   shared_info page and the grant-table frames point back at their own pages), then
//!   `SCHEDOP_shutdown(SHUTDOWN_suspend)` with start_info's machine frame in rdx;
//! - when that returns 1 (`xl save -c`, a checkpoint, a failed migration: the same domain),
//!   everything is put back as it was;
//! - when it returns 0, in a new domain: the toolstack rewrote the P2M, start_info (new
//!   xenstore and console frames and ports, a new shared_info with every event channel
//!   masked) and zeroed the frame list list. We map the new shared_info, void every event
//!   channel (old port numbers reach no old channel) and bind the timer VIRQ, console and
//!   xenstore ones anew, set up a new grant table (every old reference void), publish the
//!   frame lists again, set every xenstore watch again and rewrite the control features; the
//!   monotonic clock continues from where it stopped
//!   ([`Continuity`](crate::time::pvclock::Continuity)); then the generation goes up and every
//!   task and channel is woken, so each driver sees it at its next poll and reconnects.

use crate::mm::{self, Page};
use crate::shmem::{OutOfBounds, ShMem};
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

static SUPPORTED: AtomicBool = AtomicBool::new(false);

/// Restores into a new domain so far (0 until the first `xl restore` or migration).
pub fn generation() -> u64 {
    crate::domain::generation()
}

/// Whether this guest can be suspended (a domU whose P2M tree is published): then it writes
/// `control/feature-suspend`.
pub fn supported() -> bool {
    SUPPORTED.load(Ordering::Acquire)
}

/// Frame numbers per page (64-bit guest).
pub const PER_PAGE: usize = 512;

/// Why the P2M tree cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameListError {
    /// More P2M entries than one frame list list can reach (512 * 512 * 512 pages).
    TooLarge(usize),
    /// The frame list pages handed in are not as many as the P2M needs.
    WrongCount {
        /// Pages needed.
        need: usize,
        /// Pages given.
        got: usize,
    },
    /// A page is smaller than 4 KiB.
    Shmem(OutOfBounds),
}

impl fmt::Display for FrameListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameListError::TooLarge(n) => write!(f, "{n} P2M entries are too many for a tree"),
            FrameListError::WrongCount { need, got } => {
                write!(f, "{got} frame list pages for a P2M needing {need}")
            }
            FrameListError::Shmem(e) => write!(f, "{e}"),
        }
    }
}

impl From<OutOfBounds> for FrameListError {
    fn from(e: OutOfBounds) -> Self {
        FrameListError::Shmem(e)
    }
}

/// Pages of the P2M list itself for `nr_pages` entries (its leaves).
pub fn leaves(nr_pages: usize) -> usize {
    nr_pages.div_ceil(PER_PAGE)
}

/// Frame list pages (the middle level) a P2M of `nr_pages` entries needs.
pub fn frame_list_pages(nr_pages: usize) -> Result<usize, FrameListError> {
    let n = leaves(nr_pages).div_ceil(PER_PAGE);
    if n > PER_PAGE {
        return Err(FrameListError::TooLarge(nr_pages));
    }
    Ok(n.max(1))
}

/// Fills the P2M tree for `nr_pages` entries: frame list page `i` (`fls[i]`, machine frame
/// `fl_mfns[i]`) lists the machine frames of leaves `512 i ..`, `leaf_mfn(leaf)`; the frame
/// list list `fll` lists `fl_mfns`. Unused entries are 0.
pub fn fill_frame_lists(
    nr_pages: usize,
    leaf_mfn: impl Fn(usize) -> u64,
    fll: &ShMem,
    fls: &[ShMem],
    fl_mfns: &[u64],
) -> Result<(), FrameListError> {
    let need = frame_list_pages(nr_pages)?;
    if fls.len() != need || fl_mfns.len() != need {
        return Err(FrameListError::WrongCount {
            need,
            got: fls.len().min(fl_mfns.len()),
        });
    }
    let n_leaves = leaves(nr_pages);
    fll.zero(0, PER_PAGE * 8)?;
    for (i, (fl, &mfn)) in fls.iter().zip(fl_mfns).enumerate() {
        fll.store_u64(8 * i, mfn, Ordering::Release)?;
        fl.zero(0, PER_PAGE * 8)?;
        for j in 0..PER_PAGE {
            let leaf = i * PER_PAGE + j;
            if leaf >= n_leaves {
                break;
            }
            fl.store_u64(8 * j, leaf_mfn(leaf), Ordering::Release)?;
        }
    }
    Ok(())
}

/// The pages of the P2M tree (kept for the life of the domain; refilled after each restore).
struct Tree {
    fll: Page,
    fls: alloc::vec::Vec<Page>,
}

static TREE: spin::Mutex<Option<Tree>> = spin::Mutex::new(None);

/// (Re)fills the tree from the P2M as it is now and publishes it in shared_info.
fn publish(tree: &Tree) -> Result<(), FrameListError> {
    let p2m = mm::p2m().ok_or(FrameListError::TooLarge(0))?;
    let first_leaf = p2m.addr() >> 12;
    let fls: alloc::vec::Vec<ShMem> = tree.fls.iter().map(Page::mem).collect();
    let fl_mfns: alloc::vec::Vec<u64> = tree.fls.iter().map(Page::mfn).collect();
    fill_frame_lists(
        p2m.len(),
        |leaf| mm::pfn_to_mfn(first_leaf + leaf as u64),
        &tree.fll.mem(),
        &fls,
        &fl_mfns,
    )?;
    if let Some(s) = crate::start_info::shared_info() {
        s.set_p2m_frame_list(p2m.len() as u64, tree.fll.mfn());
    }
    Ok(())
}

/// Why suspend support could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// No P2M, start_info page or shared_info recorded (boot order).
    NotBooted,
    /// The P2M list does not start on a page boundary (its pages cannot be listed).
    Unaligned(u64),
    /// No free frame for the tree.
    OutOfMemory,
    /// The tree does not fit.
    Tree(FrameListError),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::NotBooted => f.write_str("boot has not mapped what suspend needs"),
            InitError::Unaligned(a) => write!(f, "the P2M list at {a:#x} is not page-aligned"),
            InitError::OutOfMemory => f.write_str("no free frame for the P2M frame lists"),
            InitError::Tree(e) => write!(f, "{e}"),
        }
    }
}

/// Builds and publishes the P2M tree, so the toolstack can save this domain, and turns
/// suspend support on (boot calls this for a domU, before lifecycle control).
pub fn init() -> Result<(), InitError> {
    let p2m = mm::p2m().ok_or(InitError::NotBooted)?;
    if p2m.is_identity() {
        // PVH: the toolstack saves guest memory as it is (gfn = pfn): no tree to publish.
        if crate::start_info::shared_info().is_none() {
            return Err(InitError::NotBooted);
        }
        SUPPORTED.store(true, Ordering::Release);
        crate::platform::set_suspend_handler(suspend);
        return Ok(());
    }
    if crate::start_info::page().is_none() || crate::start_info::shared_info().is_none() {
        return Err(InitError::NotBooted);
    }
    if !p2m.addr().is_multiple_of(4096) {
        return Err(InitError::Unaligned(p2m.addr()));
    }
    let n = frame_list_pages(p2m.len()).map_err(InitError::Tree)?;
    let fll = Page::alloc().map_err(|_| InitError::OutOfMemory)?;
    let fls = (0..n)
        .map(|_| Page::alloc().map_err(|_| InitError::OutOfMemory))
        .collect::<Result<alloc::vec::Vec<_>, _>>()?;
    let tree = Tree { fll, fls };
    publish(&tree).map_err(InitError::Tree)?;
    *TREE.lock() = Some(tree);
    SUPPORTED.store(true, Ordering::Release);
    crate::platform::set_suspend_handler(suspend);
    Ok(())
}

/// Points the shared_info page's virtual address at machine frame `mfn` (Xen's shared_info,
/// or the page's own frame while suspended).
fn map_shared_info(mfn: u64) -> Result<(), arch::hypercall::Errno> {
    let Some(s) = crate::start_info::shared_info() else {
        return Ok(());
    };
    let va = s.mem().as_ptr() as u64;
    let pte = arch::paging::Perm::ReadWrite.pte(mfn);
    // SAFETY: the shared_info page of our bss is accessed only through its ShMem, and only
    // between a suspend's start and end does it map the page's own frame (nothing runs then).
    unsafe { arch::hypercall::update_va_mapping(va, pte, arch::hypercall::UVMF_INVLPG) }
}

/// The shared_info page's own frame (what it maps while suspended).
fn shared_info_own_mfn() -> Option<u64> {
    let s = crate::start_info::shared_info()?;
    Some(mm::pfn_to_mfn(s.mem().as_ptr() as u64 >> 12))
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// Suspends the domain for the toolstack (`control/shutdown = suspend`, already acknowledged)
/// and returns once it runs again: in place (cancelled) or in a new domain. Run from the idle
/// loop, so no task is running. Prints `suspend: saving`, then `suspend: cancelled,
/// continuing` or `suspend: resumed in a new domain (generation N)`, with how long each side
/// took inside the guest.
pub fn suspend() {
    if arch::mode::is_pvh() {
        return suspend_pvh();
    }
    let Some(page) = crate::start_info::page() else {
        return;
    };
    let (t0, wall0) = (crate::time::now_ns(), crate::time::wallclock_ns());
    crate::println!("suspend: saving");
    crate::console::flush(1_000_000_000);

    // Pre-suspend: PFNs in start_info, nothing mapped that is not ours.
    if let Err(e) = crate::start_info::canonicalise(page, mm::mfn_to_pfn) {
        crate::println!("suspend: failed, continuing: start_info: {e}");
        return;
    }
    let undo_start_info = || {
        let _ = crate::start_info::uncanonicalise(page, mm::pfn_to_mfn);
    };
    if let Err(e) = crate::platform::unmap_grant_table() {
        let _ = crate::platform::remap_grant_table();
        undo_start_info();
        crate::println!("suspend: failed, continuing: grant table: {e}");
        return;
    }
    let old_shared = crate::start_info::current().map(|si| si.shared_info >> 12);
    let Some(own) = shared_info_own_mfn() else {
        return;
    };
    // The last reading of the clock before it stops: the guest's time continues from here.
    let stopped_at = crate::time::now_ns();
    if let Err(e) = map_shared_info(own) {
        let _ = crate::platform::remap_grant_table();
        undo_start_info();
        crate::println!("suspend: failed, continuing: unmap shared_info: {e}");
        return;
    }
    let start_info_mfn = mm::pfn_to_mfn(page.as_ptr() as u64 >> 12);

    // SAFETY: shared_info and the grant table map our own frames now, start_info holds PFNs;
    // on return every path below rebuilds what the new domain voided.
    let r = unsafe { arch::hypercall::suspend(start_info_mfn) };

    match r {
        Ok(arch::hypercall::Resumed::NewDomain) => new_domain(page, stopped_at, t0, wall0),
        Ok(arch::hypercall::Resumed::Cancelled) => {
            cancelled(page, old_shared, stopped_at, t0, wall0, None)
        }
        Err(e) => cancelled(page, old_shared, stopped_at, t0, wall0, Some(e)),
    }
}

/// The same domain again: everything back as it was.
fn cancelled(
    page: &ShMem,
    old_shared: Option<u64>,
    stopped_at: u64,
    t0: u64,
    wall0: u64,
    refused: Option<arch::hypercall::Errno>,
) {
    let _ = crate::start_info::uncanonicalise(page, mm::pfn_to_mfn);
    let mapped = old_shared.map(map_shared_info);
    crate::time::resume(stopped_at);
    let t2 = crate::time::now_ns();
    let grants = crate::platform::remap_grant_table();
    if let Some(Err(e)) = mapped {
        crate::println!("suspend: cannot map shared_info again: {e}");
        crate::domain::exit(crate::domain::ExitCode::Crash);
    }
    if let Err(e) = grants {
        crate::println!("suspend: cannot map the grant table again: {e}");
    }
    if let Some(e) = refused {
        crate::println!("suspend: Xen refused to suspend ({e}), continuing");
    }
    let t3 = crate::time::now_ns();
    let away = crate::time::wallclock_ns().saturating_sub(wall0);
    crate::println!(
        "suspend: cancelled, continuing (in the guest: {} ms to suspend, {} ms to resume; away {} ms)",
        ms(stopped_at - t0),
        ms(t3 - t2),
        ms(away)
    );
}

/// PVH: the toolstack saves our memory and vCPU state as they are, so there is nothing to
/// prepare: `SCHEDOP_shutdown(SHUTDOWN_suspend)` (no start_info), then in a new domain
/// shared_info and the grant-table frames are placed again (`XENMEM_add_to_physmap` at the
/// same pages), the event vector named again, and the console and xenstore ports read from the
/// HVM params; the rest is the PV path's ([`new_domain_common`]).
fn suspend_pvh() {
    use arch::hypercall::hvm;
    let (t0, wall0) = (crate::time::now_ns(), crate::time::wallclock_ns());
    crate::println!("suspend: saving");
    crate::console::flush(1_000_000_000);
    let stopped_at = crate::time::now_ns();
    // SAFETY: nothing of another domain is mapped; on return every path below rebuilds what a
    // new domain voided.
    match unsafe { arch::hypercall::suspend(0) } {
        Ok(arch::hypercall::Resumed::NewDomain) => {
            let shared = crate::start_info::shared_info().map_or(Ok(()), |s| {
                let pfn = s.mem().as_ptr() as u64 >> 12;
                // SAFETY: the page shared_info was placed at by boot, used only through its
                // ShMem.
                unsafe { hvm::add_to_physmap(hvm::Space::SharedInfo, 0, pfn) }
            });
            let vector = arch::traps::resume();
            let port = |i, what| match hvm::get_param(i) {
                Ok(p) => p as u32,
                Err(e) => {
                    crate::println!("suspend: {what}: {e}");
                    crate::domain::exit(crate::domain::ExitCode::Crash)
                }
            };
            let console = port(hvm::param::CONSOLE_EVTCHN, "HVM_PARAM_CONSOLE_EVTCHN");
            let store = port(hvm::param::STORE_EVTCHN, "HVM_PARAM_STORE_EVTCHN");
            new_domain_common(console, store, shared.and(vector), stopped_at, t0, wall0)
        }
        Ok(arch::hypercall::Resumed::Cancelled) => {
            // The same domain: shared_info, grants, ports and the vector are as they were.
            crate::time::resume(stopped_at);
            let away = crate::time::wallclock_ns().saturating_sub(wall0);
            crate::println!(
                "suspend: cancelled, continuing (in the guest: {} ms to suspend, 0 ms to resume; away {} ms)",
                ms(stopped_at - t0),
                ms(away)
            );
        }
        Err(e) => {
            crate::time::resume(stopped_at);
            crate::println!("suspend: Xen refused to suspend ({e}), continuing");
        }
    }
}

/// A new domain: rebuild everything Xen gives (see the module doc).
fn new_domain(page: &ShMem, stopped_at: u64, t0: u64, wall0: u64) {
    let si = match crate::start_info::read(page) {
        Ok(si) => si,
        Err(_) => crate::domain::exit(crate::domain::ExitCode::Crash),
    };
    crate::start_info::set_current(si);
    let shared = map_shared_info(si.shared_info >> 12);
    new_domain_common(
        si.console_evtchn,
        si.store_evtchn,
        shared,
        stopped_at,
        t0,
        wall0,
    )
}

/// The new domain's rest, PV and PVH alike: `shared` says whether shared_info (and, PVH, the
/// event vector) is in place again.
fn new_domain_common(
    console_port: u32,
    store_port: u32,
    shared: Result<(), arch::hypercall::Errno>,
    stopped_at: u64,
    t0: u64,
    wall0: u64,
) {
    // Nothing can be reported before the console's new port is known: collect, then print.
    crate::time::resume(stopped_at);
    let t2 = crate::time::now_ns();
    // Old port numbers are void: no event on them may reach the old channels.
    let wakers = crate::events::void_all();
    crate::console::rebind(console_port);
    crate::events::unmask(console_port);
    if let Err(e) = shared {
        crate::println!("suspend: cannot map the new shared_info: {e}");
        crate::domain::exit(crate::domain::ExitCode::Crash);
    }
    match crate::events::bind_virq(crate::events::virq::TIMER) {
        Ok(port) => crate::events::unmask(port),
        Err(e) => crate::println!("suspend: bind VIRQ_TIMER: {e}"),
    }
    if let Err(e) = crate::platform::new_grant_table() {
        crate::println!("suspend: new grant table: {e}");
    }
    if let Some(tree) = TREE.lock().as_ref() {
        if let Err(e) = publish(tree) {
            crate::println!("suspend: P2M frame lists: {e} (this domain cannot be saved again)");
        }
    }
    let generation = crate::domain::next_generation();
    if let Err(e) = crate::platform::xenstore_new_domain(store_port) {
        crate::println!("suspend: xenstore: {e}");
    }
    crate::exec::wake_all();
    for w in wakers {
        w.wake();
    }
    let t3 = crate::time::now_ns();
    let away = crate::time::wallclock_ns().saturating_sub(wall0);
    crate::println!(
        "suspend: resumed in a new domain (generation {generation}) after {} ms (in the guest: {} ms to suspend, {} ms to resume; away {} ms)",
        ms((stopped_at - t0) + (t3 - t2)),
        ms(stopped_at - t0),
        ms(t3 - t2),
        ms(away)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_sizes_follow_the_p2m() {
        assert_eq!((leaves(1), leaves(512), leaves(513)), (1, 1, 2));
        assert_eq!(
            frame_list_pages(2048),
            Ok(1),
            "8 MiB: 4 leaves, one frame list"
        );
        assert_eq!(frame_list_pages(512 * 512), Ok(1));
        assert_eq!(frame_list_pages(512 * 512 + 1), Ok(2));
        assert_eq!(frame_list_pages(512 * 512 * 512), Ok(512));
        assert_eq!(
            frame_list_pages(512 * 512 * 512 + 1),
            Err(FrameListError::TooLarge(512 * 512 * 512 + 1))
        );
    }

    /// What libxc's `map_p2m_tree` does with the tree: fll entries, then fl entries, down to
    /// every leaf's frame.
    fn walk(nr_pages: usize, fll: &ShMem, frames: &dyn Fn(u64) -> ShMem) -> alloc::vec::Vec<u64> {
        let max_pfn = nr_pages - 1;
        let fll_entries = max_pfn / (PER_PAGE * PER_PAGE) + 1;
        let fl_entries = max_pfn / PER_PAGE + 1;
        let mut leaves = alloc::vec::Vec::new();
        for i in 0..fll_entries {
            let fl = frames(fll.load_u64(8 * i, Ordering::Relaxed).unwrap());
            for j in 0..PER_PAGE {
                if leaves.len() == fl_entries {
                    break;
                }
                leaves.push(fl.load_u64(8 * j, Ordering::Relaxed).unwrap());
            }
        }
        leaves
    }

    #[test]
    fn the_tree_lists_every_leaf_as_libxc_walks_it_and_refills_after_a_restore() {
        for nr_pages in [1, 2048, 512 * 512, 512 * 512 + 513] {
            let n = frame_list_pages(nr_pages).unwrap();
            let fll = ShMem::new(4096);
            let fls: alloc::vec::Vec<ShMem> = (0..n).map(|_| ShMem::new(4096)).collect();
            // Machine frames of the frame list pages: 0x7000 + i; leaves: 0x10_0000 + 3 * leaf.
            let fl_mfns: alloc::vec::Vec<u64> = (0..n as u64).map(|i| 0x7000 + i).collect();
            let by_mfn = |m: u64| fls[(m - 0x7000) as usize].clone();
            for base in [0x10_0000u64, 0x55_0000] {
                // A restore: new leaf frames; the same pages are refilled in place.
                fill_frame_lists(nr_pages, |l| base + 3 * l as u64, &fll, &fls, &fl_mfns).unwrap();
                let got = walk(nr_pages, &fll, &by_mfn);
                let want: alloc::vec::Vec<u64> =
                    (0..leaves(nr_pages) as u64).map(|l| base + 3 * l).collect();
                assert_eq!(got, want, "{nr_pages} entries");
                assert_eq!(
                    fll.load_u64(8 * n, Ordering::Relaxed).unwrap(),
                    0,
                    "unused entries are 0"
                );
            }
        }
        let (fll, fl) = (ShMem::new(4096), ShMem::new(4096));
        assert_eq!(
            fill_frame_lists(512 * 512 + 1, |_| 1, &fll, core::slice::from_ref(&fl), &[1]),
            Err(FrameListError::WrongCount { need: 2, got: 1 })
        );
        assert!(matches!(
            fill_frame_lists(8, |_| 1, &ShMem::new(64), &[fl], &[1]),
            Err(FrameListError::Shmem(_))
        ));
    }
}
