//! Memory shared with another domain (Xen, a backend, xenstored), read and written only through
//! bounds-checked, explicitly ordered accesses.
//!
//! Every ring in the runtime (io/ring.h rings, the xenstore and console rings) is logic over a
//! [`ShMem`]: it keeps offsets and indices, never references into the shared page, so the peer
//! writing concurrently can never break Rust's aliasing rules, and every access checks its bounds.
//! On Xen a `ShMem` views a mapped page ([`ShMem::from_raw`], the only `unsafe` here); on the host
//! [`ShMem::new`] allocates zeroed memory so the same ring code runs against a simulated peer in
//! tests.

extern crate alloc;

use alloc::sync::Arc;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// An access outside the shared region, or misaligned for its width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds {
    /// Offset of the access.
    pub offset: usize,
    /// Width of the access in bytes.
    pub len: usize,
    /// Size of the region.
    pub size: usize,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shared-memory access of {} bytes at offset {} outside a {}-byte region (or misaligned)",
            self.len, self.offset, self.size
        )
    }
}

/// Host-allocated backing store, 8-byte aligned and zeroed.
struct Owned(#[allow(dead_code)] alloc::boxed::Box<[AtomicU64]>);

/// A view of shared memory: a base pointer and a length, plus (on the host) the allocation that
/// keeps it alive. Clones view the same bytes, so a frontend and a simulated backend can share one.
#[derive(Clone)]
pub struct ShMem {
    base: NonNull<u8>,
    len: usize,
    _owner: Option<Arc<Owned>>,
}

// SAFETY: every access through `ShMem` is an atomic or a byte copy with no references handed out,
// so concurrent use from several contexts is sound (the bytes themselves are the peer's to race on).
unsafe impl Send for ShMem {}
// SAFETY: as above.
unsafe impl Sync for ShMem {}

impl fmt::Debug for ShMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShMem({:p}, {} bytes)", self.base, self.len)
    }
}

macro_rules! access {
    ($load:ident, $store:ident, $t:ty, $atomic:ty) => {
        #[doc = concat!("Atomically loads a `", stringify!($t), "` at `offset` (little-endian, naturally aligned).")]
        pub fn $load(&self, offset: usize, order: Ordering) -> Result<$t, OutOfBounds> {
            let p = self.check(offset, core::mem::size_of::<$t>())?;
            // SAFETY: `check` proved the access in bounds and aligned; the memory is valid for the
            // life of `self` (see `from_raw`/`new`), and is only ever accessed atomically or by copy.
            Ok(unsafe { <$atomic>::from_ptr(p.cast()) }.load(order))
        }

        #[doc = concat!("Atomically stores a `", stringify!($t), "` at `offset` (little-endian, naturally aligned).")]
        pub fn $store(&self, offset: usize, value: $t, order: Ordering) -> Result<(), OutOfBounds> {
            let p = self.check(offset, core::mem::size_of::<$t>())?;
            // SAFETY: as in the load above.
            unsafe { <$atomic>::from_ptr(p.cast()) }.store(value, order);
            Ok(())
        }
    };
}

impl ShMem {
    /// Zeroed host memory of `len` bytes (rounded up to 8), for tests and simulated peers.
    pub fn new(len: usize) -> Self {
        let words = len.div_ceil(8).max(1);
        let store: alloc::boxed::Box<[AtomicU64]> = (0..words).map(|_| AtomicU64::new(0)).collect();
        let owner = Arc::new(Owned(store));
        let base = NonNull::from(&owner.0[0]).cast::<u8>();
        ShMem {
            base,
            len,
            _owner: Some(owner),
        }
    }

    /// A view of `len` bytes at `base`, typically a page shared with Xen or another domain.
    ///
    /// # Safety
    /// `base` must be valid for reads and writes of `len` bytes, 8-byte aligned, for as long as any
    /// clone of the returned value lives, and must not be accessed through Rust references
    /// meanwhile.
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize) -> Self {
        ShMem {
            base,
            len,
            _owner: None,
        }
    }

    /// Size of the region in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length region.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Base address (to grant or hand to a hypercall).
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// A sub-view of `len` bytes at `offset`.
    pub fn slice(&self, offset: usize, len: usize) -> Result<ShMem, OutOfBounds> {
        let end = offset.checked_add(len);
        if end.is_none_or(|e| e > self.len) || !offset.is_multiple_of(8) {
            return Err(OutOfBounds {
                offset,
                len,
                size: self.len,
            });
        }
        // SAFETY: in bounds of a valid region (checked above); alignment of 8 is kept.
        let base = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(offset)) };
        Ok(ShMem {
            base,
            len,
            _owner: self._owner.clone(),
        })
    }

    fn check(&self, offset: usize, width: usize) -> Result<*mut u8, OutOfBounds> {
        let end = offset.checked_add(width);
        if end.is_none_or(|e| e > self.len) || !offset.is_multiple_of(width) {
            return Err(OutOfBounds {
                offset,
                len: width,
                size: self.len,
            });
        }
        // SAFETY: offset + width <= len, so the pointer stays inside the region.
        Ok(unsafe { self.base.as_ptr().add(offset) })
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<*mut u8, OutOfBounds> {
        let end = offset.checked_add(len);
        if end.is_none_or(|e| e > self.len) {
            return Err(OutOfBounds {
                offset,
                len,
                size: self.len,
            });
        }
        // SAFETY: offset + len <= self.len.
        Ok(unsafe { self.base.as_ptr().add(offset) })
    }

    /// Atomically replaces the `u16` at `offset` with `new` if it equals `current`; returns the
    /// value found (`Ok` when the swap happened).
    pub fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
        order: Ordering,
    ) -> Result<Result<u16, u16>, OutOfBounds> {
        let p = self.check(offset, 2)?;
        // SAFETY: in bounds and aligned (checked); only ever accessed atomically or by copy.
        let a = unsafe { AtomicU16::from_ptr(p.cast()) };
        Ok(a.compare_exchange(current, new, order, Ordering::Acquire))
    }

    /// Atomically replaces the `u32` at `offset` with `new` if it equals `current`; returns the
    /// value found (`Ok` when the swap happened).
    pub fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
        order: Ordering,
    ) -> Result<Result<u32, u32>, OutOfBounds> {
        let p = self.check(offset, 4)?;
        // SAFETY: in bounds and aligned (checked); only ever accessed atomically or by copy.
        let a = unsafe { AtomicU32::from_ptr(p.cast()) };
        Ok(a.compare_exchange(current, new, order, Ordering::Acquire))
    }

    access!(load_u8, store_u8, u8, AtomicU8);
    access!(load_u16, store_u16, u16, AtomicU16);
    access!(load_u32, store_u32, u32, AtomicU32);
    access!(load_u64, store_u64, u64, AtomicU64);

    /// Copies `buf.len()` bytes at `offset` out of shared memory. The peer may be writing
    /// meanwhile: the bytes copied are then just values, to be validated by the caller.
    ///
    /// The copy moves aligned 8-byte words (relaxed atomic loads: plain moves, no data race in
    /// Rust's model) with single bytes only at the unaligned ends.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let p = self.check_range(offset, buf.len())?;
        let head = p.align_offset(8).min(buf.len());
        let (bytes, rest) = buf.split_at_mut(head);
        for (i, b) in bytes.iter_mut().enumerate() {
            // SAFETY: in bounds (checked); byte atomics cannot be misaligned.
            *b = unsafe { AtomicU8::from_ptr(p.add(i)) }.load(Ordering::Relaxed);
        }
        let mut words = rest.chunks_exact_mut(8);
        let mut at = head;
        for w in &mut words {
            // SAFETY: in bounds (checked); `p + at` is 8-aligned (`head` aligned it).
            let v = unsafe { AtomicU64::from_ptr(p.add(at).cast()) }.load(Ordering::Relaxed);
            w.copy_from_slice(&v.to_ne_bytes());
            at += 8;
        }
        for (i, b) in words.into_remainder().iter_mut().enumerate() {
            // SAFETY: in bounds (checked).
            *b = unsafe { AtomicU8::from_ptr(p.add(at + i)) }.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies `buf` into shared memory at `offset` (aligned 8-byte words, as [`read`](Self::read)).
    pub fn write(&self, offset: usize, buf: &[u8]) -> Result<(), OutOfBounds> {
        let p = self.check_range(offset, buf.len())?;
        let head = p.align_offset(8).min(buf.len());
        let (bytes, rest) = buf.split_at(head);
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: in bounds (checked); byte atomics cannot be misaligned.
            unsafe { AtomicU8::from_ptr(p.add(i)) }.store(*b, Ordering::Relaxed);
        }
        let mut words = rest.chunks_exact(8);
        let mut at = head;
        for w in &mut words {
            let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            // SAFETY: in bounds (checked); `p + at` is 8-aligned (`head` aligned it).
            unsafe { AtomicU64::from_ptr(p.add(at).cast()) }.store(v, Ordering::Relaxed);
            at += 8;
        }
        for (i, b) in words.remainder().iter().enumerate() {
            // SAFETY: in bounds (checked).
            unsafe { AtomicU8::from_ptr(p.add(at + i)) }.store(*b, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sets `len` bytes at `offset` to zero.
    pub fn zero(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        self.check_range(offset, len)?;
        const ZEROS: [u8; 256] = [0; 256];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(ZEROS.len());
            self.write(offset + at, &ZEROS[..n])?;
            at += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_stores_round_trip_and_clones_share() {
        let a = ShMem::new(64);
        let b = a.clone();
        a.store_u32(4, 0xdead_beef, Ordering::Release).unwrap();
        assert_eq!(b.load_u32(4, Ordering::Acquire).unwrap(), 0xdead_beef);
        assert_eq!(
            b.load_u8(4, Ordering::Relaxed).unwrap(),
            0xef,
            "little-endian"
        );
        b.write(10, b"hello").unwrap();
        let mut out = [0u8; 5];
        a.read(10, &mut out).unwrap();
        assert_eq!(&out, b"hello");
    }

    #[test]
    fn copies_round_trip_at_every_alignment_and_length() {
        let m = ShMem::new(256);
        let data: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for off in 0..16 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 100] {
                m.zero(0, 256).unwrap();
                m.write(off, &data[..len]).unwrap();
                let mut all = vec![0u8; 256];
                m.read(0, &mut all).unwrap();
                assert!(
                    all[..off].iter().all(|b| *b == 0),
                    "before, off {off} len {len}"
                );
                assert_eq!(&all[off..off + len], &data[..len], "off {off} len {len}");
                assert!(
                    all[off + len..].iter().all(|b| *b == 0),
                    "after, off {off} len {len}"
                );
                let mut back = vec![0u8; len];
                m.read(off, &mut back).unwrap();
                assert_eq!(back, &data[..len]);
            }
        }
    }

    #[test]
    fn out_of_bounds_and_misaligned_accesses_are_errors() {
        let m = ShMem::new(16);
        assert!(m.load_u64(8, Ordering::Relaxed).is_ok());
        assert!(m.load_u64(16, Ordering::Relaxed).is_err());
        assert!(m.load_u32(2, Ordering::Relaxed).is_err(), "misaligned");
        assert!(m.read(12, &mut [0; 5]).is_err());
        assert!(m.write(usize::MAX, &[1]).is_err(), "overflowing offset");
        assert!(m.slice(8, 16).is_err());
        let s = m.slice(8, 8).unwrap();
        s.store_u64(0, 7, Ordering::Relaxed).unwrap();
        assert_eq!(m.load_u64(8, Ordering::Relaxed).unwrap(), 7);
    }
}
