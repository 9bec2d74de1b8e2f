//! Guest memory management: the page-frame allocator ([`frames`]) that hands out pseudo-physical
//! frames, the global heap ([`heap`]) that `alloc` allocates from, grown with those frames, and
//! the frame maps (pseudo-physical to machine through start_info's P2M list, back through Xen's
//! M2P table).

pub mod frames;
pub mod heap;

use frames::{FrameAllocator, Pfn};

/// Virtual address of Xen's read-only machine-to-physical table in every 64-bit PV guest.
const M2P_BASE: u64 = 0xffff_8000_0000_0000;

static FRAMES: spin::Mutex<Option<FrameAllocator<'static>>> = spin::Mutex::new(None);
static P2M: spin::Once<P2m> = spin::Once::new();

/// The P2M list: start_info's `mfn_list`, `nr_pages` entries in our own memory. Not a `&[u64]`:
/// a restore into a new domain rewrites every entry under us (the toolstack writes the new
/// machine frames while the guest is suspended), so each entry is read volatile, never assumed
/// to stay what it was.
#[derive(Debug, Clone, Copy)]
pub struct P2m {
    base: core::ptr::NonNull<u64>,
    len: usize,
    /// A PVH guest's: gfn = pfn, no list.
    identity: bool,
}

// SAFETY: a read-only view of memory that stays mapped for the life of the domain; entries are
// read with volatile loads, and the only writer is the toolstack while the guest is suspended.
unsafe impl Send for P2m {}
// SAFETY: as above.
unsafe impl Sync for P2m {}

impl P2m {
    /// The list at `base`, `len` entries.
    ///
    /// # Safety
    /// `base` must point at `len` u64s mapped for the life of the domain, which no Rust
    /// reference aliases mutably.
    pub unsafe fn new(base: core::ptr::NonNull<u64>, len: usize) -> P2m {
        P2m {
            base,
            len,
            identity: false,
        }
    }

    /// A PVH guest's map of `len` frames: every frame is its own guest frame number.
    pub fn identity(len: usize) -> P2m {
        P2m {
            base: core::ptr::NonNull::dangling(),
            len,
            identity: true,
        }
    }

    /// True for a PVH guest's identity map (no list in memory; save/restore has none to keep).
    pub fn is_identity(&self) -> bool {
        self.identity
    }

    /// Entries (pseudo-physical frames of the domain).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false for a domain's P2M (it has at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The machine frame of `pfn` now (panics past the end: a bug, as an index would).
    pub fn get(&self, pfn: u64) -> u64 {
        assert!((pfn as usize) < self.len, "pfn {pfn} outside the P2M");
        if self.identity {
            return pfn;
        }
        // SAFETY: inside the list (checked above), mapped for the life of the domain.
        unsafe { core::ptr::read_volatile(self.base.as_ptr().add(pfn as usize)) }
    }

    /// Virtual address of the list's first entry.
    pub fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }
}

/// Hands the frame allocator and the P2M list to this module (boot calls this once).
#[cfg_attr(not(any(target_os = "none", target_os = "hermit")), allow(dead_code))]
pub(crate) fn init_frames(frames: FrameAllocator<'static>, p2m: P2m) {
    P2M.call_once(|| p2m);
    *FRAMES.lock() = Some(frames);
}

/// The P2M list, once boot handed it over.
pub fn p2m() -> Option<P2m> {
    P2M.get().copied()
}

/// Runs `f` with the frame allocator.
pub(crate) fn with_frames<R>(f: impl FnOnce(&mut FrameAllocator<'static>) -> R) -> Option<R> {
    FRAMES.lock().as_mut().map(f)
}

/// Machine frame of a pseudo-physical frame.
pub fn pfn_to_mfn(pfn: u64) -> u64 {
    P2M.get()
        .expect("boot hands over the P2M list before any frame use")
        .get(pfn)
}

/// Pseudo-physical frame of a machine frame (through Xen's M2P table).
pub fn mfn_to_pfn(mfn: u64) -> u64 {
    if arch::mode::is_pvh() {
        return mfn;
    }
    // SAFETY: Xen maps the M2P table read-only at M2P_BASE in every 64-bit PV guest; an mfn
    // of our own memory is inside it.
    unsafe { core::ptr::read_volatile((M2P_BASE + mfn * 8) as *const u64) }
}

/// The global heap (registered as `#[global_allocator]` only on the bare-metal target).
#[cfg_attr(all(target_os = "none", not(test)), global_allocator)]
pub static HEAP: heap::Heap = heap::Heap::new();

/// Smallest step the heap grows by.
const HEAP_GROW_MIN: usize = 256 * 1024;

fn grow(min_len: usize) -> Option<(usize, usize)> {
    let want = min_len.max(HEAP_GROW_MIN).div_ceil(4096);
    let need = min_len.div_ceil(4096);
    with_frames(|f| {
        // Ask for a generous run first, then exactly what is needed; report the length of the
        // run actually taken (the heap owns exactly those frames).
        match f.alloc_contiguous(want, 1) {
            Ok(p) => Some((p.addr() as usize, want * 4096)),
            Err(_) => f
                .alloc_contiguous(need, 1)
                .ok()
                .map(|p| (p.addr() as usize, need * 4096)),
        }
    })
    .flatten()
}

/// Lets the heap grow from the frame allocator (boot calls this once, after the frame allocator
/// exists).
pub fn init_heap() {
    // SAFETY: `grow` returns frames it took from the frame allocator, mapped writable at
    // pfn * 4096 and owned by nobody else; it does not allocate from the heap.
    unsafe { HEAP.set_grow(grow) };
}

/// Unmaps the page of our memory at `va` (page-aligned, mapped at `pfn * 4096` as all of our
/// memory is), so that any access to it faults: a guard page below a thread's stack. The entry
/// is zeroed fully (L1TF). The page must be given back with [`unguard`] before the memory is
/// used again (freed to the heap).
pub fn guard(va: u64) -> Result<(), arch::hypercall::Errno> {
    // SAFETY: the caller owns the page (an allocation of its own) and nothing else refers to
    // its contents; a zero PTE maps nothing.
    unsafe { arch::mapping::set_pte(va, 0) }
}

/// Maps a page unmapped by [`guard`] again, read-write, onto its own frame (looked up now: a
/// restore into a new domain may have moved it).
pub fn unguard(va: u64) -> Result<(), arch::hypercall::Errno> {
    let pte = arch::paging::Perm::ReadWrite.pte(pfn_to_mfn(va >> 12));
    // SAFETY: restores the direct mapping of our own page at `va = pfn * 4096`, as boot made it.
    unsafe { arch::mapping::set_pte(va, pte) }
}

/// Free frames left in the frame allocator (the heap's free space not included).
pub fn free_frames() -> usize {
    with_frames(|f| f.free_count()).unwrap_or(0)
}

/// A zeroed page of guest memory, for rings and granted buffers: mapped at `pfn * 4096`.
#[derive(Debug)]
pub struct Page {
    pfn: Pfn,
}

/// No free frame is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory;

impl core::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("out of guest memory")
    }
}

impl Page {
    /// Takes a frame from the frame allocator and zeroes it.
    pub fn alloc() -> Result<Page, OutOfMemory> {
        let pfn = with_frames(|f| f.alloc())
            .ok_or(OutOfMemory)?
            .map_err(|_| OutOfMemory)?;
        let page = Page { pfn };
        page.mem().zero(0, 4096).map_err(|_| OutOfMemory)?;
        Ok(page)
    }

    /// Pseudo-physical frame number.
    pub fn pfn(&self) -> u64 {
        self.pfn.0
    }

    /// Machine frame number (what grants and backends see).
    pub fn mfn(&self) -> u64 {
        pfn_to_mfn(self.pfn.0)
    }

    /// The page as shared memory.
    pub fn mem(&self) -> crate::shmem::ShMem {
        // SAFETY: the frame is mapped at pfn * 4096, and owned by this Page until drop; all
        // access goes through ShMem.
        unsafe {
            crate::shmem::ShMem::from_raw(
                core::ptr::NonNull::new(self.pfn.addr() as *mut u8).expect("pfn 0 is never free"),
                4096,
            )
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = with_frames(|f| f.free(self.pfn));
    }
}
