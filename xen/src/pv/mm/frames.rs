//! The page-frame allocator: which guest pseudo-physical frames (PFNs) are free.
//!
//! A bitmap over one contiguous range of PFNs, one bit per frame (set = in use). It allocates no
//! memory itself — the bitmap is a slice the caller provides (a `static` array at boot, sized with
//! [`FrameAllocator::words_needed`]) — so it works before the heap exists, and the heap grows by
//! asking it for frames.
//!
//! At boot every frame starts free and the boot code [`reserve`](FrameAllocator::reserve)s what
//! Xen already placed in the guest's memory (kernel image, start_info, the initial page tables,
//! the p2m list, the xenstore and console pages, the boot stack). Misuse — freeing a frame that is
//! not allocated, or one outside the range — is a typed [`FrameError`] and changes nothing.

use core::fmt;

/// Size of a page frame in bytes.
pub const PAGE_SIZE: usize = 4096;

/// A guest pseudo-physical frame number (not a machine frame number: see the p2m map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Pfn(pub u64);

impl Pfn {
    /// The frame containing pseudo-physical address `addr`.
    pub const fn containing(addr: u64) -> Pfn {
        Pfn(addr / PAGE_SIZE as u64)
    }

    /// The pseudo-physical address of the frame's first byte.
    pub const fn addr(self) -> u64 {
        self.0 * PAGE_SIZE as u64
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pfn {:#x}", self.0)
    }
}

/// What went wrong in a frame-allocator call. The allocator is unchanged when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// no run of {count} free frames (aligned to {align})
    OutOfFrames {
        /// Frames requested.
        count: usize,
        /// Alignment requested, in frames.
        align: usize,
    },
    /// frames {start}+{count} are outside the allocator's range
    OutOfRange {
        /// First frame of the request.
        start: Pfn,
        /// Number of frames in the request.
        count: usize,
    },
    /// {pfn} freed but not allocated
    DoubleFree {
        /// The first frame in the request that was already free.
        pfn: Pfn,
    },
    /// zero frames requested
    ZeroCount,
    /// alignment {align} is not a power of two
    BadAlignment {
        /// The alignment given, in frames.
        align: usize,
    },
    /// bitmap of {given} words is too small for {frames} frames (needs {needed})
    StorageTooSmall {
        /// Frames to manage.
        frames: usize,
        /// Words needed.
        needed: usize,
        /// Words given.
        given: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::OutOfFrames { count, align } => {
                write!(f, "no run of {count} free frames (aligned to {align})")
            }
            FrameError::OutOfRange { start, count } => {
                write!(
                    f,
                    "frames {start}+{count} are outside the allocator's range"
                )
            }
            FrameError::DoubleFree { pfn } => write!(f, "{pfn} freed but not allocated"),
            FrameError::ZeroCount => write!(f, "zero frames requested"),
            FrameError::BadAlignment { align } => {
                write!(f, "alignment {align} is not a power of two")
            }
            FrameError::StorageTooSmall {
                frames,
                needed,
                given,
            } => write!(
                f,
                "bitmap of {given} words is too small for {frames} frames (needs {needed})"
            ),
        }
    }
}

/// A bitmap allocator over the PFNs `base .. base + frames`.
#[derive(Debug)]
pub struct FrameAllocator<'a> {
    /// Bit `i` set = frame `base + i` in use. Bits past `frames` are always set.
    bits: &'a mut [u64],
    base: u64,
    frames: usize,
    free: usize,
    /// Where single-frame searches start (a frame before it was recently in use).
    hint: usize,
}

impl<'a> FrameAllocator<'a> {
    /// Bitmap words needed to manage `frames` frames.
    pub const fn words_needed(frames: usize) -> usize {
        frames.div_ceil(64)
    }

    /// An allocator over `base .. base + frames`, all free, keeping its bitmap in `storage`
    /// (which must have at least [`words_needed(frames)`](Self::words_needed) words; its contents
    /// are overwritten).
    pub fn new(base: Pfn, frames: usize, storage: &'a mut [u64]) -> Result<Self, FrameError> {
        let needed = Self::words_needed(frames);
        if storage.len() < needed || base.0.checked_add(frames as u64).is_none() {
            return Err(FrameError::StorageTooSmall {
                frames,
                needed,
                given: storage.len(),
            });
        }
        let bits = &mut storage[..needed];
        bits.fill(0);
        if !frames.is_multiple_of(64) {
            bits[needed - 1] = !0u64 << (frames % 64);
        }
        Ok(FrameAllocator {
            bits,
            base: base.0,
            frames,
            free: frames,
            hint: 0,
        })
    }

    /// The first frame managed.
    pub fn base(&self) -> Pfn {
        Pfn(self.base)
    }

    /// Number of frames managed.
    pub fn total(&self) -> usize {
        self.frames
    }

    /// Number of free frames.
    pub fn free_count(&self) -> usize {
        self.free
    }

    /// Whether `pfn` is free.
    pub fn is_free(&self, pfn: Pfn) -> Result<bool, FrameError> {
        let i = self.index(pfn, 1)?;
        Ok(!self.bit(i))
    }

    /// Allocates one frame.
    pub fn alloc(&mut self) -> Result<Pfn, FrameError> {
        let found = self
            .find_free_bit(self.hint)
            .or_else(|| self.find_free_bit(0))
            .ok_or(FrameError::OutOfFrames { count: 1, align: 1 })?;
        self.set_range(found, 1, true);
        self.free -= 1;
        self.hint = found + 1;
        Ok(self.pfn(found))
    }

    /// Allocates `count` contiguous frames whose first PFN is a multiple of `align` (a power of
    /// two, in frames; 1 for no alignment). First fit from the bottom of the range.
    pub fn alloc_contiguous(&mut self, count: usize, align: usize) -> Result<Pfn, FrameError> {
        if count == 0 {
            return Err(FrameError::ZeroCount);
        }
        if !align.is_power_of_two() {
            return Err(FrameError::BadAlignment { align });
        }
        let out = FrameError::OutOfFrames { count, align };
        if count > self.free {
            return Err(out);
        }
        let mut i = 0;
        loop {
            i = self.find_free_bit(i).ok_or(out)?;
            i = self.align_index(i, align).ok_or(out)?;
            if i.checked_add(count).is_none_or(|end| end > self.frames) {
                return Err(out);
            }
            match self.find_used_bit(i, count) {
                None => break,
                Some(used) => i = used + 1,
            }
        }
        self.set_range(i, count, true);
        self.free -= count;
        Ok(self.pfn(i))
    }

    /// Frees one frame.
    pub fn free(&mut self, pfn: Pfn) -> Result<(), FrameError> {
        self.free_contiguous(pfn, 1)
    }

    /// Frees `count` frames from `start`; all of them must be in use (else nothing is freed).
    pub fn free_contiguous(&mut self, start: Pfn, count: usize) -> Result<(), FrameError> {
        if count == 0 {
            return Err(FrameError::ZeroCount);
        }
        let i = self.index(start, count)?;
        if let Some(f) = self.find_free_bit_in(i, count) {
            return Err(FrameError::DoubleFree { pfn: self.pfn(f) });
        }
        self.set_range(i, count, false);
        self.free += count;
        self.hint = self.hint.min(i);
        Ok(())
    }

    /// Marks `count` frames from `start` in use, whether or not some already are (reservations
    /// may overlap, e.g. start_info inside the boot page-table area). Returns how many were free.
    pub fn reserve(&mut self, start: Pfn, count: usize) -> Result<usize, FrameError> {
        if count == 0 {
            return Ok(0);
        }
        let i = self.index(start, count)?;
        let newly = count - self.count_used(i, count);
        self.set_range(i, count, true);
        self.free -= newly;
        Ok(newly)
    }

    fn pfn(&self, index: usize) -> Pfn {
        Pfn(self.base + index as u64)
    }

    /// Index of `start`, if `start .. start + count` is inside the range.
    fn index(&self, start: Pfn, count: usize) -> Result<usize, FrameError> {
        let err = FrameError::OutOfRange { start, count };
        let off = start.0.checked_sub(self.base).ok_or(err)?;
        let end = off.checked_add(count as u64).ok_or(err)?;
        if end > self.frames as u64 {
            return Err(err);
        }
        Ok(off as usize)
    }

    /// The smallest index ≥ `i` whose PFN is a multiple of `align`.
    fn align_index(&self, i: usize, align: usize) -> Option<usize> {
        let pfn = self.base.checked_add(i as u64)?;
        let aligned = pfn.checked_next_multiple_of(align as u64)?;
        usize::try_from(aligned - self.base).ok()
    }

    fn bit(&self, i: usize) -> bool {
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// The first free frame at or after `from`.
    fn find_free_bit(&self, from: usize) -> Option<usize> {
        self.find_free_bit_in(from, self.frames.checked_sub(from)?)
    }

    /// The first free frame in `from .. from + len`.
    fn find_free_bit_in(&self, from: usize, len: usize) -> Option<usize> {
        self.find_bit(from, len, true)
    }

    /// The first used frame in `from .. from + len`.
    fn find_used_bit(&self, from: usize, len: usize) -> Option<usize> {
        self.find_bit(from, len, false)
    }

    /// The first index in `from .. from + len` whose bit is clear (`want_free`) or set.
    fn find_bit(&self, from: usize, len: usize, want_free: bool) -> Option<usize> {
        let end = from + len;
        let mut i = from;
        while i < end {
            let w = i / 64;
            let word = if want_free {
                !self.bits[w]
            } else {
                self.bits[w]
            };
            let word = word & (!0u64 << (i % 64));
            if word != 0 {
                let found = w * 64 + word.trailing_zeros() as usize;
                return (found < end).then_some(found);
            }
            i = (w + 1) * 64;
        }
        None
    }

    fn count_used(&self, from: usize, len: usize) -> usize {
        let mut n = 0;
        self.for_words(from, len, |word, mask| {
            n += (*word & mask).count_ones() as usize
        });
        n
    }

    fn set_range(&mut self, from: usize, len: usize, used: bool) {
        Self::words_of(self.bits, from, len, |word, mask| {
            if used {
                *word |= mask
            } else {
                *word &= !mask
            }
        });
    }

    fn for_words(&self, from: usize, len: usize, mut f: impl FnMut(&u64, u64)) {
        let mut i = from;
        let end = from + len;
        while i < end {
            let (w, mask, next) = word_mask(i, end);
            f(&self.bits[w], mask);
            i = next;
        }
    }

    fn words_of(bits: &mut [u64], from: usize, len: usize, mut f: impl FnMut(&mut u64, u64)) {
        let mut i = from;
        let end = from + len;
        while i < end {
            let (w, mask, next) = word_mask(i, end);
            f(&mut bits[w], mask);
            i = next;
        }
    }
}

/// For bit index `i < end`: its word, the mask of bits `i .. min(end, word end)`, and the next
/// index after them.
fn word_mask(i: usize, end: usize) -> (usize, u64, usize) {
    let w = i / 64;
    let lo = i % 64;
    let hi = (end - w * 64).min(64);
    let mask = (!0u64 << lo) & (!0u64 >> (64 - hi));
    (w, mask, w * 64 + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<R>(base: u64, frames: usize, f: impl FnOnce(&mut FrameAllocator<'_>) -> R) -> R {
        let mut storage = vec![0xdead_beefu64; FrameAllocator::words_needed(frames) + 1];
        let mut a = FrameAllocator::new(Pfn(base), frames, &mut storage).unwrap();
        f(&mut a)
    }

    /// Recounts free frames from the bitmap, checking the bookkeeping.
    fn recount(a: &FrameAllocator<'_>) -> usize {
        (0..a.total()).filter(|&i| !a.bit(i)).count()
    }

    #[test]
    fn storage_size_checked() {
        let mut s = [0u64; 2];
        assert_eq!(
            FrameAllocator::new(Pfn(0), 129, &mut s).unwrap_err(),
            FrameError::StorageTooSmall {
                frames: 129,
                needed: 3,
                given: 2
            }
        );
        assert!(FrameAllocator::new(Pfn(0), 128, &mut s).is_ok());
        assert!(FrameAllocator::new(Pfn(u64::MAX), 2, &mut s).is_err());
    }

    #[test]
    fn alloc_all_then_exhausted() {
        with(0x100, 70, |a| {
            let mut got = vec![];
            for _ in 0..70 {
                got.push(a.alloc().unwrap());
            }
            got.sort();
            got.dedup();
            assert_eq!(got.len(), 70);
            assert_eq!(got.first(), Some(&Pfn(0x100)));
            assert_eq!(got.last(), Some(&Pfn(0x100 + 69)));
            assert_eq!(a.free_count(), 0);
            assert_eq!(
                a.alloc(),
                Err(FrameError::OutOfFrames { count: 1, align: 1 })
            );
            a.free(Pfn(0x120)).unwrap();
            assert_eq!(a.alloc(), Ok(Pfn(0x120)), "a freed frame is found again");
        });
    }

    #[test]
    fn double_free_and_out_of_range() {
        with(1000, 100, |a| {
            let p = a.alloc().unwrap();
            a.free(p).unwrap();
            assert_eq!(a.free(p), Err(FrameError::DoubleFree { pfn: p }));
            assert_eq!(
                a.free(Pfn(999)),
                Err(FrameError::OutOfRange {
                    start: Pfn(999),
                    count: 1
                })
            );
            assert!(matches!(
                a.free(Pfn(1100)),
                Err(FrameError::OutOfRange { .. })
            ));
            assert!(matches!(
                a.free_contiguous(Pfn(1099), 2),
                Err(FrameError::OutOfRange { .. })
            ));
            assert!(matches!(
                a.free_contiguous(Pfn(u64::MAX), usize::MAX),
                Err(FrameError::OutOfRange { .. })
            ));
            assert_eq!(a.free_count(), 100);
            assert_eq!(
                FrameError::DoubleFree { pfn: Pfn(0x10) }.to_string(),
                "pfn 0x10 freed but not allocated"
            );
        });
    }

    #[test]
    fn partial_double_free_frees_nothing() {
        with(0, 64, |a| {
            let p = a.alloc_contiguous(4, 1).unwrap();
            a.free(Pfn(p.0 + 2)).unwrap();
            assert_eq!(
                a.free_contiguous(p, 4),
                Err(FrameError::DoubleFree { pfn: Pfn(p.0 + 2) })
            );
            assert_eq!(a.free_count(), 61);
            assert_eq!(recount(a), 61);
        });
    }

    #[test]
    fn contiguous_aligned() {
        // Base not aligned: alignment is of the PFN, not of the index.
        with(3, 200, |a| {
            a.alloc().unwrap(); // pfn 3
            let p = a.alloc_contiguous(16, 16).unwrap();
            assert_eq!(p, Pfn(16));
            let q = a.alloc_contiguous(5, 1).unwrap();
            assert_eq!(q, Pfn(4), "unaligned run fits in the gap below");
            let r = a.alloc_contiguous(64, 64).unwrap();
            assert_eq!(r, Pfn(64));
            assert_eq!(a.free_count(), 200 - 1 - 16 - 5 - 64);
            assert_eq!(recount(a), a.free_count());
            assert_eq!(recount(a), a.free_count());
            assert_eq!(a.alloc_contiguous(64, 64), Ok(Pfn(128)));
            assert_eq!(
                a.alloc_contiguous(64, 64),
                Err(FrameError::OutOfFrames {
                    count: 64,
                    align: 64
                }),
                "the range ends at pfn 203, so 192..256 does not fit"
            );
            assert_eq!(
                a.alloc_contiguous(11, 1),
                Ok(Pfn(32)),
                "first fit: 9..16 is too short"
            );
            assert_eq!(a.alloc_contiguous(0, 1), Err(FrameError::ZeroCount));
            assert_eq!(
                a.alloc_contiguous(1, 3),
                Err(FrameError::BadAlignment { align: 3 })
            );
        });
    }

    #[test]
    fn contiguous_skips_holes_that_are_too_small() {
        with(0, 300, |a| {
            // Used at 10, 75, 140: free runs 0..10, 11..75, 76..140, 141..300.
            for p in [10, 75, 140] {
                a.reserve(Pfn(p), 1).unwrap();
            }
            assert_eq!(a.alloc_contiguous(64, 1), Ok(Pfn(11)));
            assert_eq!(a.alloc_contiguous(65, 1), Ok(Pfn(141)));
            assert_eq!(a.alloc_contiguous(64, 1), Ok(Pfn(76)));
            assert!(a.alloc_contiguous(95, 1).is_err());
            assert_eq!(a.alloc_contiguous(94, 1), Ok(Pfn(206)));
            assert!(a.alloc_contiguous(11, 1).is_err());
            assert_eq!(a.alloc_contiguous(10, 1), Ok(Pfn(0)));
            assert_eq!(a.free_count(), 0);
        });
    }

    #[test]
    fn reserve_ranges() {
        with(0x1000, 1024, |a| {
            // Kernel image, then page tables overlapping start_info.
            assert_eq!(a.reserve(Pfn(0x1000), 300), Ok(300));
            assert_eq!(a.reserve(Pfn(0x1200), 20), Ok(20));
            assert_eq!(
                a.reserve(Pfn(0x1210), 10),
                Ok(6),
                "4 of 10 already reserved"
            );
            assert_eq!(a.reserve(Pfn(0x1000), 0), Ok(0));
            assert_eq!(a.free_count(), 1024 - 326);
            assert_eq!(recount(a), a.free_count());
            assert_eq!(a.is_free(Pfn(0x1000 + 299)), Ok(false));
            assert_eq!(a.is_free(Pfn(0x1000 + 300)), Ok(true));
            assert!(a.reserve(Pfn(0x1000 + 1000), 25).is_err());
            assert!(a.reserve(Pfn(0xfff), 1).is_err());
            // Allocation never returns a reserved frame.
            while let Ok(p) = a.alloc() {
                assert!(!(0x1000..0x1000 + 300).contains(&p.0));
                assert!(!(0x1200..0x121a).contains(&p.0));
            }
            assert_eq!(a.free_count(), 0);
        });
    }

    #[test]
    fn most_of_memory_allocates_and_frees() {
        // 1 GiB of 4 KiB frames, the first 2 MiB reserved for the boot image.
        let frames = 1 << 18;
        with(0, frames, |a| {
            a.reserve(Pfn(0), 512).unwrap();
            let mut got = Vec::with_capacity(frames);
            while let Ok(p) = a.alloc() {
                got.push(p);
            }
            assert_eq!(got.len(), frames - 512);
            assert_eq!(a.free_count(), 0);
            for p in got.iter().rev() {
                a.free(*p).unwrap();
            }
            assert_eq!(a.free_count(), frames - 512);
            // Then the same memory as one contiguous run.
            let big = a.alloc_contiguous(frames - 512, 512).unwrap();
            assert_eq!(big, Pfn(512));
            a.free_contiguous(big, frames - 512).unwrap();
            assert_eq!(recount(a), frames - 512);
        });
    }

    #[test]
    fn random_ops_match_a_model() {
        let mut rng = crate::sim::Rng(0x9e37_79b9_7f4a_7c15);
        with(77, 1000, |a| {
            let mut model = vec![false; 1000]; // true = used
            let mut live: Vec<(Pfn, usize)> = vec![];
            for _ in 0..20_000 {
                let r = rng.next();
                if r.is_multiple_of(3) && !live.is_empty() {
                    let (p, n) = live.swap_remove((r as usize / 3) % live.len());
                    a.free_contiguous(p, n).unwrap();
                    for m in &mut model[(p.0 - 77) as usize..][..n] {
                        *m = false;
                    }
                } else {
                    let n = 1 + (r >> 8) as usize % 12;
                    let align = 1 << ((r >> 16) % 4);
                    match a.alloc_contiguous(n, align) {
                        Ok(p) => {
                            assert_eq!(p.0 % align as u64, 0);
                            let i = (p.0 - 77) as usize;
                            for m in &mut model[i..i + n] {
                                assert!(!*m, "overlap at {p}");
                                *m = true;
                            }
                            live.push((p, n));
                        }
                        Err(FrameError::OutOfFrames { .. }) => {
                            // First fit must not have missed a fitting aligned run.
                            let fits = (0..1000 - n + 1).any(|i| {
                                (77 + i) % align == 0 && model[i..i + n].iter().all(|u| !u)
                            });
                            assert!(!fits, "missed a run of {n} aligned {align}");
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                assert_eq!(a.free_count(), model.iter().filter(|u| !**u).count());
            }
            assert_eq!(recount(a), a.free_count());
        });
    }
}
