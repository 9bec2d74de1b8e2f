//! The global heap: a first-fit free-list allocator with coalescing, behind a `spin::Mutex`.
//!
//! Free memory is a singly linked list of blocks sorted by address, each block's header
//! (`size`, `next`) stored in the free memory itself. Every block address and size is a multiple
//! of [`UNIT`] (16 bytes, the header size), so any split leaves pieces that can hold a header.
//! Allocated memory carries no header: `dealloc` gets the size back from the `Layout`, as
//! `GlobalAlloc` guarantees, so an allocation of `n` bytes uses `n` rounded up to [`UNIT`].
//!
//! - **alloc**: walk the list, take the first block that holds `size` bytes at an address aligned
//!   to `align` (any power of two); the bytes before the aligned address (if any) stay a free
//!   block, the bytes after the allocation (if any) become one.
//! - **dealloc**: insert the block at its address, merging with the free neighbours it touches,
//!   so freeing everything leaves one block per contiguous region.
//! - **growth**: memory comes from [`Heap::add_region`]. The boot code may also install a grow
//!   callback ([`Heap::set_grow`]); when no block fits, the heap calls it once with the number of
//!   bytes that would certainly satisfy the request, adds the region it returns and retries. The
//!   callback runs with the heap lock held, so it must not allocate (it uses the frame allocator
//!   and maps the new frames). Without a callback, or when it returns `None`, `alloc` returns
//!   null and the caller may `add_region` and try again.
//!
//! Corruption the heap can see (a `dealloc` overlapping a free block: a double free, or
//! `add_region` of memory already in the heap) panics: carrying on would hand the same memory out
//! twice.
//!
//! This module is not registered as `#[global_allocator]`; the bare-metal boot code does that.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::ptr;

use spin::Mutex;

/// Granularity of block sizes and addresses: the size of a free-block header.
pub const UNIT: usize = core::mem::size_of::<FreeBlock>();

/// The grow callback: given a byte count, returns a new region `(start, len)` of at least that many
/// bytes for the heap to own, or `None` if there is no more memory. See [`Heap::set_grow`].
pub type GrowFn = fn(min_len: usize) -> Option<(usize, usize)>;

/// The header of a free block, written at the block's first byte.
#[repr(C, align(16))]
struct FreeBlock {
    /// Size of the block in bytes (a multiple of `UNIT`, ≥ `UNIT`).
    size: usize,
    /// The next free block, at a higher address; null at the end.
    next: *mut FreeBlock,
}

/// Heap usage, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Bytes handed out (each allocation rounded up to [`UNIT`]).
    pub used: usize,
    /// Bytes in free blocks.
    pub free: usize,
    /// The largest free block: the largest allocation (of alignment ≤ [`UNIT`]) that would
    /// succeed without growing.
    pub largest_free: usize,
    /// Number of free blocks (1 when all memory is free and contiguous).
    pub free_blocks: usize,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "heap: {} bytes used, {} free in {} blocks (largest {})",
            self.used, self.free, self.free_blocks, self.largest_free
        )
    }
}

/// The free list and counters; only touched with the heap's lock held.
struct FreeList {
    head: *mut FreeBlock,
    used: usize,
    free: usize,
    grow: Option<GrowFn>,
}

// SAFETY: the raw pointers point into memory the heap owns (given by `add_region` / the grow
// callback); they are only followed with the `Mutex` held, so moving the list between threads is
// sound.
unsafe impl Send for FreeList {}

/// A first-fit, coalescing heap usable as the global allocator.
pub struct Heap {
    list: Mutex<FreeList>,
}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Heap").field(&self.stats()).finish()
    }
}

impl Heap {
    /// An empty heap (every allocation fails until a region is added); usable in a `static`.
    pub const fn new() -> Heap {
        Heap {
            list: Mutex::new(FreeList {
                head: ptr::null_mut(),
                used: 0,
                free: 0,
                grow: None,
            }),
        }
    }

    /// Gives the heap the memory `start .. start + len`. The start is rounded up and the end down
    /// to [`UNIT`]; a region smaller than that after rounding is ignored. A region adjacent to free
    /// heap memory merges with it.
    ///
    /// # Safety
    /// The memory must be valid for reads and writes, unused by anything else, and stay so for
    /// as long as the heap (and any allocation from it) is used: the heap becomes its owner. It
    /// must not overlap memory already in the heap (that is detected only against free blocks,
    /// and panics).
    pub unsafe fn add_region(&self, start: usize, len: usize) {
        let mut list = self.list.lock();
        // SAFETY: the caller's contract, passed on.
        unsafe { list.add_region(start, len) }
    }

    /// Installs the callback called when no free block fits (see the module doc).
    ///
    /// # Safety
    /// Every region `grow` returns must satisfy [`add_region`](Self::add_region)'s contract, and
    /// `grow` must not allocate from this heap (it is called with the heap locked).
    pub unsafe fn set_grow(&self, grow: GrowFn) {
        self.list.lock().grow = Some(grow);
    }

    /// Current usage.
    pub fn stats(&self) -> Stats {
        let list = self.list.lock();
        let mut stats = Stats {
            used: list.used,
            free: list.free,
            ..Stats::default()
        };
        let mut cur = list.head;
        while !cur.is_null() {
            // SAFETY: `cur` is a block of the list (lock held, invariants of `FreeList`).
            let block = unsafe { &*cur };
            stats.largest_free = stats.largest_free.max(block.size);
            stats.free_blocks += 1;
            cur = block.next;
        }
        stats
    }
}

// SAFETY: `alloc` returns blocks inside regions the heap owns, aligned as asked, of at least the
// asked size, and never hands out a byte twice until it is deallocated (the free list holds only
// bytes not handed out; `alloc` removes exactly what it returns and `dealloc` adds exactly it back).
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = block_layout(layout);
        let mut list = self.list.lock();
        if let Some(p) = list.take(size, align) {
            return p;
        }
        let Some(grow) = list.grow else {
            return ptr::null_mut();
        };
        let Some((start, len)) = size.checked_add(align).and_then(grow) else {
            return ptr::null_mut();
        };
        // SAFETY: `set_grow`'s contract makes every region `grow` returns valid to add.
        unsafe { list.add_region(start, len) };
        list.take(size, align).unwrap_or(ptr::null_mut())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let (size, _) = block_layout(layout);
        let mut list = self.list.lock();
        // SAFETY: `GlobalAlloc::dealloc`'s contract: `ptr` came from `alloc` with this layout, so
        // `ptr .. ptr + size` is heap memory no longer in use.
        unsafe { list.insert(ptr, size) };
        list.used -= size;
    }
}

/// The block size and alignment used for `layout`: both at least [`UNIT`], size a multiple of it.
fn block_layout(layout: Layout) -> (usize, usize) {
    let size = layout.size().max(1).next_multiple_of(UNIT);
    (size, layout.align().max(UNIT))
}

impl FreeList {
    /// See [`Heap::add_region`]; same contract.
    unsafe fn add_region(&mut self, start: usize, len: usize) {
        let Some(aligned) = start.checked_next_multiple_of(UNIT) else {
            return;
        };
        let Some(end) = start.checked_add(len) else {
            return;
        };
        let end = end / UNIT * UNIT;
        if end <= aligned {
            return;
        }
        // SAFETY: the region is the caller's to give and now ours; free blocks are heap memory
        // not in use.
        unsafe { self.insert(ptr::with_exposed_provenance_mut(aligned), end - aligned) };
    }

    /// Removes and returns the first `size` bytes aligned to `align` that are free.
    fn take(&mut self, size: usize, align: usize) -> Option<*mut u8> {
        let mut prev: *mut FreeBlock = ptr::null_mut();
        let mut cur = self.head;
        while !cur.is_null() {
            let start = cur as usize;
            // SAFETY: `cur` is a block of the list, whose headers are valid and ours.
            let FreeBlock { size: bsize, next } = unsafe { cur.read() };
            let end = start + bsize;
            let fits = start
                .checked_next_multiple_of(align)
                .and_then(|a| Some((a, a.checked_add(size)?)))
                .filter(|&(_, alloc_end)| alloc_end <= end);
            let Some((aligned, alloc_end)) = fits else {
                prev = cur;
                cur = next;
                continue;
            };
            // The bytes after the allocation stay free (sizes are multiples of UNIT, so the
            // remainder is 0 or ≥ UNIT and can hold a header).
            let mut after = next;
            if alloc_end < end {
                after = cur.cast::<u8>().wrapping_add(alloc_end - start).cast();
                // SAFETY: `alloc_end .. end` is inside this free block, UNIT-aligned.
                unsafe {
                    after.write(FreeBlock {
                        size: end - alloc_end,
                        next,
                    })
                };
            }
            if aligned > start {
                // The bytes before the aligned address stay the free block at `cur`.
                // SAFETY: `cur` is a free block header.
                unsafe {
                    (*cur).size = aligned - start;
                    (*cur).next = after;
                }
            } else if prev.is_null() {
                self.head = after;
            } else {
                // SAFETY: `prev` is a free block header.
                unsafe { (*prev).next = after };
            }
            self.free -= size;
            self.used += size;
            return Some(cur.cast::<u8>().wrapping_add(aligned - start));
        }
        None
    }

    /// Adds the free block `start .. start + size` to the list, merging with touching neighbours.
    ///
    /// # Safety
    /// The bytes are heap memory (or a region being added), UNIT-aligned, not in use.
    unsafe fn insert(&mut self, block: *mut u8, size: usize) {
        let start = block as usize;
        let end = start + size;
        // Find the neighbours: `prev` the last block below `start`, `next` the first above.
        let mut prev: *mut FreeBlock = ptr::null_mut();
        let mut next = self.head;
        while !next.is_null() && (next as usize) < start {
            prev = next;
            // SAFETY: list block.
            next = unsafe { (*next).next };
        }
        let prev_end = if prev.is_null() {
            None
        } else {
            // SAFETY: `prev` is a list block.
            Some(prev as usize + unsafe { (*prev).size })
        };
        if prev_end.is_some_and(|e| e > start) || (!next.is_null() && (next as usize) < end) {
            panic!("heap: free of {start:#x}+{size:#x} overlaps a free block (double free?)");
        }
        self.free += size;
        let node = if prev_end == Some(start) {
            // SAFETY: `prev` is a list block, and `start .. end` directly follows it.
            unsafe { (*prev).size += size };
            prev
        } else {
            let node = block.cast::<FreeBlock>();
            // SAFETY: `start .. end` is ours and free, UNIT-aligned, ≥ UNIT long.
            unsafe { node.write(FreeBlock { size, next }) };
            if prev.is_null() {
                self.head = node;
            } else {
                // SAFETY: list block.
                unsafe { (*prev).next = node };
            }
            node
        };
        if next as usize == end {
            // SAFETY: `node` and `next` are list blocks; `next` directly follows `node`.
            unsafe {
                (*node).size += (*next).size;
                (*node).next = (*next).next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Host memory for a test heap, 4096-aligned.
    struct Arena {
        ptr: *mut u8,
        layout: Layout,
    }

    impl Arena {
        fn new(len: usize) -> Arena {
            let layout = Layout::from_size_align(len, 4096).unwrap();
            // SAFETY: non-zero size.
            let ptr = unsafe { std::alloc::alloc(layout) };
            assert!(!ptr.is_null());
            Arena { ptr, layout }
        }

        fn addr(&self) -> usize {
            self.ptr as usize
        }

        /// A heap owning `self.addr() + off .. + len`.
        fn heap(&self, off: usize, len: usize) -> Heap {
            assert!(off + len <= self.layout.size());
            let h = Heap::new();
            // SAFETY: the arena outlives the heap in every test and is used by nothing else.
            unsafe { h.add_region(self.addr() + off, len) };
            h
        }
    }

    impl Drop for Arena {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.ptr, self.layout) };
        }
    }

    fn alloc(h: &Heap, size: usize, align: usize) -> *mut u8 {
        // SAFETY: non-zero size in every test.
        unsafe { h.alloc(Layout::from_size_align(size, align).unwrap()) }
    }

    fn free(h: &Heap, p: *mut u8, size: usize, align: usize) {
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { h.dealloc(p, Layout::from_size_align(size, align).unwrap()) }
    }

    #[test]
    fn layout_of_header() {
        assert_eq!(UNIT, 16);
        assert_eq!(core::mem::align_of::<FreeBlock>(), UNIT);
    }

    #[test]
    fn empty_heap_fails() {
        let h = Heap::new();
        assert!(alloc(&h, 8, 8).is_null());
        assert_eq!(h.stats(), Stats::default());
    }

    #[test]
    fn region_is_rounded_and_tiny_regions_ignored() {
        let a = Arena::new(4096);
        let h = a.heap(3, 100); // usable: 16 .. 96
        assert_eq!(h.stats().free, 80);
        // SAFETY: arena memory not yet in the heap.
        unsafe { h.add_region(a.addr() + 200, 20) }; // 208 .. 220 → less than a unit
        assert_eq!(h.stats().free, 80);
        // SAFETY: as above.
        unsafe { h.add_region(usize::MAX - 8, 100) }; // overflows: ignored, never touched
        assert_eq!(h.stats().free_blocks, 1);
    }

    #[test]
    fn sizes_round_to_units() {
        let a = Arena::new(4096);
        let h = a.heap(0, 4096);
        let p = alloc(&h, 1, 1);
        assert_eq!(p as usize, a.addr());
        assert_eq!(h.stats().used, 16);
        let q = alloc(&h, 17, 1);
        assert_eq!(q as usize, a.addr() + 16);
        assert_eq!(h.stats().used, 48);
        free(&h, p, 1, 1);
        free(&h, q, 17, 1);
        assert_eq!(
            h.stats(),
            Stats {
                used: 0,
                free: 4096,
                largest_free: 4096,
                free_blocks: 1
            }
        );
    }

    #[test]
    fn aligned_allocation_keeps_front_padding_free() {
        let a = Arena::new(3 * 4096);
        let h = a.heap(16, 3 * 4096 - 16);
        let p = alloc(&h, 100, 4096);
        assert_eq!(p as usize % 4096, 0);
        assert_eq!(p as usize, a.addr() + 4096);
        let s = h.stats();
        assert_eq!(s.free_blocks, 2, "padding before and the rest after");
        assert_eq!(s.free + s.used, 3 * 4096 - 16);
        // The padding is reused by a small allocation.
        let q = alloc(&h, 64, 16);
        assert_eq!(q as usize, a.addr() + 16);
        free(&h, p, 100, 4096);
        free(&h, q, 64, 16);
        assert_eq!(h.stats().free_blocks, 1);
        assert_eq!(h.stats().largest_free, 3 * 4096 - 16);
    }

    #[test]
    fn every_alignment_up_to_64k() {
        let a = Arena::new(1 << 20);
        let h = a.heap(48, (1 << 20) - 48);
        let mut live = vec![];
        for shift in 0..=16 {
            let align = 1usize << shift;
            let p = alloc(&h, 24, align);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "align {align}");
            live.push((p, align));
        }
        for (p, align) in live {
            free(&h, p, 24, align);
        }
        assert_eq!(h.stats().free_blocks, 1);
    }

    #[test]
    fn large_aligned_allocations() {
        let a = Arena::new(4 << 20);
        let h = a.heap(4096 + 16, (4 << 20) - 4096 - 16);
        // Two 1 MiB blocks aligned to 1 MiB: the first at 1 MiB (the arena is only 4 KiB aligned,
        // so its start may or may not be), wasting the front as a free block.
        let p = alloc(&h, 1 << 20, 1 << 20);
        let q = alloc(&h, 1 << 20, 1 << 20);
        assert!(!p.is_null() && !q.is_null());
        assert_eq!(p as usize % (1 << 20), 0);
        assert_eq!(q as usize % (1 << 20), 0);
        assert!(alloc(&h, 3 << 20, 8).is_null(), "not enough left");
        free(&h, q, 1 << 20, 1 << 20);
        free(&h, p, 1 << 20, 1 << 20);
        let s = h.stats();
        assert_eq!((s.used, s.free_blocks), (0, 1));
        assert_eq!(s.free, (4 << 20) - 4096 - 16);
    }

    #[test]
    fn exhaustion_returns_null_then_recovers() {
        let a = Arena::new(4096);
        let h = a.heap(0, 4096);
        let ps: Vec<_> = (0..64).map(|_| alloc(&h, 64, 8)).collect();
        assert!(ps.iter().all(|p| !p.is_null()));
        assert!(alloc(&h, 1, 1).is_null());
        assert_eq!(h.stats().free, 0);
        free(&h, ps[10], 64, 8);
        assert_eq!(alloc(&h, 64, 8), ps[10]);
    }

    #[test]
    fn coalesces_in_any_free_order() {
        let a = Arena::new(1 << 16);
        let h = a.heap(0, 1 << 16);
        let ps: Vec<_> = (0..100).map(|i| (alloc(&h, 16 + i * 8, 16), i)).collect();
        // Free the odd ones (no merging possible), then the even ones (each merges with both).
        for &(p, i) in ps.iter().filter(|(_, i)| i % 2 == 1) {
            free(&h, p, 16 + i * 8, 16);
        }
        assert_eq!(
            h.stats().free_blocks,
            50,
            "50 holes, the last one merged with the tail"
        );
        for &(p, i) in ps.iter().filter(|(_, i)| i % 2 == 0) {
            free(&h, p, 16 + i * 8, 16);
        }
        assert_eq!(
            h.stats(),
            Stats {
                used: 0,
                free: 1 << 16,
                largest_free: 1 << 16,
                free_blocks: 1
            }
        );
    }

    #[test]
    fn adjacent_regions_merge_separate_ones_do_not() {
        let a = Arena::new(3 * 4096);
        let h = a.heap(0, 4096);
        // SAFETY: arena memory not yet in the heap.
        unsafe { h.add_region(a.addr() + 4096, 4096) };
        assert_eq!(h.stats().free_blocks, 1);
        // SAFETY: as above.
        unsafe { h.add_region(a.addr() + 2 * 4096 + 64, 1024) };
        assert_eq!(h.stats().free_blocks, 2);
        assert_eq!(h.stats().free, 2 * 4096 + 1024);
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_panics() {
        let a = Arena::new(4096);
        let h = a.heap(0, 4096);
        let p = alloc(&h, 32, 16);
        let _q = alloc(&h, 32, 16);
        free(&h, p, 32, 16);
        free(&h, p, 32, 16);
    }

    #[test]
    fn grow_callback_adds_memory() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static POOL: AtomicUsize = AtomicUsize::new(0);
        static ASKED: AtomicUsize = AtomicUsize::new(0);
        fn grow(min: usize) -> Option<(usize, usize)> {
            ASKED.store(min, Ordering::Relaxed);
            let start = POOL.swap(0, Ordering::Relaxed);
            (start != 0).then_some((start, 64 * 1024))
        }
        let a = Arena::new(4096 + 64 * 1024);
        POOL.store(a.addr() + 4096, Ordering::Relaxed);
        let h = a.heap(0, 4096);
        // SAFETY: `grow` hands out the arena's last 64 KiB once, and does not allocate.
        unsafe { h.set_grow(grow) };
        let p = alloc(&h, 8192, 4096);
        assert!(!p.is_null());
        assert_eq!(ASKED.load(Ordering::Relaxed), 8192 + 4096);
        assert_eq!(h.stats().free + h.stats().used, 4096 + 64 * 1024);
        // The pool is used up: the next failing allocation returns null.
        assert!(alloc(&h, 1 << 20, 16).is_null());
        free(&h, p, 8192, 4096);
        assert_eq!(
            h.stats().free_blocks,
            1,
            "the grown region touches the first one"
        );
    }

    /// Random alloc/free sequences: no two live allocations overlap, every one is aligned and
    /// inside the arena, contents survive (each allocation is filled with its own byte), and the
    /// counters agree; at the end everything coalesces back into one block.
    #[test]
    fn random_alloc_free() {
        const LEN: usize = 1 << 20;
        let a = Arena::new(LEN);
        let h = a.heap(0, LEN);
        let mut rng = crate::sim::Rng(0x2545_f491_4f6c_dd1d);
        // start → (size, align, fill byte)
        let mut live: BTreeMap<usize, (usize, usize, u8)> = BTreeMap::new();
        for step in 0..50_000u32 {
            let r = rng.next();
            if r % 5 < 2 && !live.is_empty() {
                let key = *live.keys().nth((r >> 8) as usize % live.len()).unwrap();
                let (size, align, fill) = live.remove(&key).unwrap();
                // SAFETY: live allocation of `size` bytes.
                let bytes = unsafe { core::slice::from_raw_parts(key as *const u8, size) };
                assert!(bytes.iter().all(|&b| b == fill), "allocation clobbered");
                free(&h, key as *mut u8, size, align);
            } else {
                let size = match r % 7 {
                    0 => 1 + (r >> 12) as usize % 8192,
                    _ => 1 + (r >> 12) as usize % 200,
                };
                let align = 1 << ((r >> 32) % 13); // 1 .. 4096
                let p = alloc(&h, size, align);
                if p.is_null() {
                    continue;
                }
                let start = p as usize;
                assert_eq!(start % align, 0);
                assert!(start >= a.addr() && start + size <= a.addr() + LEN);
                if let Some((&s, &(len, _, _))) = live.range(..start).next_back() {
                    assert!(s + len <= start, "overlaps the allocation below");
                }
                if let Some((&s, _)) = live.range(start..).next() {
                    assert!(start + size <= s, "overlaps the allocation above");
                }
                let fill = step as u8;
                // SAFETY: fresh allocation of `size` bytes.
                unsafe { ptr::write_bytes(p, fill, size) };
                live.insert(start, (size, align, fill));
            }
            let s = h.stats();
            let used: usize = live
                .values()
                .map(|&(n, _, _)| n.next_multiple_of(UNIT))
                .sum();
            assert_eq!(s.used, used);
            assert_eq!(s.used + s.free, LEN);
        }
        for (start, (size, align, _)) in std::mem::take(&mut live) {
            free(&h, start as *mut u8, size, align);
        }
        assert_eq!(
            h.stats(),
            Stats {
                used: 0,
                free: LEN,
                largest_free: LEN,
                free_blocks: 1
            }
        );
    }

    #[test]
    fn usable_through_a_static_from_threads() {
        static HEAP: Heap = Heap::new();
        let a = Arena::new(1 << 20);
        // SAFETY: the arena outlives the threads below; nothing else uses it.
        unsafe { HEAP.add_region(a.addr(), 1 << 20) };
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for i in 0..2000 {
                        let size = 8 + (i * 7 + t) % 300;
                        let p = alloc(&HEAP, size, 8);
                        assert!(!p.is_null());
                        // SAFETY: fresh allocation.
                        unsafe { ptr::write_bytes(p, t as u8, size) };
                        free(&HEAP, p, size, 8);
                    }
                });
            }
        });
        assert_eq!(HEAP.stats().free_blocks, 1);
        assert_eq!(HEAP.stats().used, 0);
    }
}
