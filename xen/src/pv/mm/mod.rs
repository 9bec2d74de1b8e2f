//! Guest memory management: the page-frame allocator ([`frames`]) that hands out pseudo-physical
//! frames, and the global heap ([`heap`]) that `alloc` allocates from, grown with those frames.

pub mod frames;
pub mod heap;

use frames::Pfn;

/// The global heap (registered as `#[global_allocator]` only on the bare-metal target).
#[cfg_attr(all(target_os = "none", not(test)), global_allocator)]
pub static HEAP: heap::Heap = heap::Heap::new();

/// Smallest step the heap grows by.
const HEAP_GROW_MIN: usize = 256 * 1024;

fn grow(min_len: usize) -> Option<(usize, usize)> {
    let want = min_len.max(HEAP_GROW_MIN).div_ceil(4096);
    let need = min_len.div_ceil(4096);
    crate::boot::with_frames(|f| {
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

/// Free frames left in the frame allocator (the heap's free space not included).
pub fn free_frames() -> usize {
    crate::boot::with_frames(|f| f.free_count()).unwrap_or(0)
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
        let pfn = crate::boot::with_frames(|f| f.alloc())
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
        crate::boot::pfn_to_mfn(self.pfn.0)
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
        let _ = crate::boot::with_frames(|f| f.free(self.pfn));
    }
}
