//! Moving bytes through the two rings of the xenstore page.
//!
//! Each ring is a 1 KiB byte array with free-running `u32` producer and consumer indices
//! (`MASK_XENSTORE_IDX`). The same two functions serve both sides: the guest produces on
//! [`REQ`] and consumes [`RSP`], xenstored (or `super::sim::Sim`) the reverse. Indices are read
//! once per call and rejected if they are more than a ring apart.

use core::sync::atomic::Ordering;

use super::wire::{layout, RING_SIZE};
use super::Error;
use crate::shmem::ShMem;

/// Where one ring's data and indices live in the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    data: usize,
    cons: usize,
    prod: usize,
}

/// The request ring (guest → xenstored).
pub const REQ: Ring = Ring {
    data: layout::REQ,
    cons: layout::REQ_CONS,
    prod: layout::REQ_PROD,
};
/// The reply ring (xenstored → guest).
pub const RSP: Ring = Ring {
    data: layout::RSP,
    cons: layout::RSP_CONS,
    prod: layout::RSP_PROD,
};

fn indices(
    mem: &ShMem,
    ring: Ring,
    prod_order: Ordering,
    cons_order: Ordering,
) -> Result<(u32, u32), Error> {
    let prod = mem.load_u32(ring.prod, prod_order)?;
    let cons = mem.load_u32(ring.cons, cons_order)?;
    if prod.wrapping_sub(cons) > RING_SIZE {
        return Err(Error::BadRingIndex { prod, cons });
    }
    Ok((prod, cons))
}

/// Copies as much of `src` as fits into `ring`; returns the bytes written (0 when full).
pub fn produce(mem: &ShMem, ring: Ring, src: &[u8]) -> Result<usize, Error> {
    // Acquire on `cons`: the peer has finished reading the bytes we are about to overwrite.
    let (prod, cons) = indices(mem, ring, Ordering::Relaxed, Ordering::Acquire)?;
    let free = (RING_SIZE - prod.wrapping_sub(cons)) as usize;
    let n = free.min(src.len());
    copy_ring(ring, prod, n, |off, range| mem.write(off, &src[range]))?;
    // Release on `prod`: the data above is visible before the peer sees the new index.
    mem.store_u32(ring.prod, prod.wrapping_add(n as u32), Ordering::Release)?;
    Ok(n)
}

/// Copies up to `dst.len()` available bytes out of `ring`; returns the bytes read.
pub fn consume(mem: &ShMem, ring: Ring, dst: &mut [u8]) -> Result<usize, Error> {
    // Acquire on `prod`: the data up to it is visible once we see the index.
    let (prod, cons) = indices(mem, ring, Ordering::Acquire, Ordering::Relaxed)?;
    let n = (prod.wrapping_sub(cons) as usize).min(dst.len());
    copy_ring(ring, cons, n, |off, range| mem.read(off, &mut dst[range]))?;
    // Release on `cons`: our reads complete before the peer may reuse the space.
    mem.store_u32(ring.cons, cons.wrapping_add(n as u32), Ordering::Release)?;
    Ok(n)
}

/// Calls `op(offset_in_page, range_in_buffer)` for the (at most two) pieces of `n` bytes
/// starting at free-running index `idx`.
fn copy_ring(
    ring: Ring,
    idx: u32,
    n: usize,
    mut op: impl FnMut(usize, core::ops::Range<usize>) -> Result<(), crate::shmem::OutOfBounds>,
) -> Result<(), Error> {
    let start = (idx & (RING_SIZE - 1)) as usize;
    let first = n.min(RING_SIZE as usize - start);
    op(ring.data + start, 0..first)?;
    if n > first {
        op(ring.data, first..n)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn bytes_wrap_around_the_ring() {
        let mem = ShMem::new(layout::SIZE);
        mem.store_u32(REQ.prod, 1000, Ordering::Relaxed).unwrap();
        mem.store_u32(REQ.cons, 1000, Ordering::Relaxed).unwrap();
        let data: alloc::vec::Vec<u8> = (0..100).collect();
        assert_eq!(produce(&mem, REQ, &data).unwrap(), 100);
        let mut out = vec![0u8; 100];
        assert_eq!(consume(&mem, REQ, &mut out).unwrap(), 100);
        assert_eq!(out, data);
        assert_eq!(mem.load_u32(REQ.cons, Ordering::Relaxed).unwrap(), 1100);
    }

    #[test]
    fn full_ring_takes_only_what_fits_and_indices_wrap_u32() {
        let mem = ShMem::new(layout::SIZE);
        for r in [RSP.prod, RSP.cons] {
            mem.store_u32(r, u32::MAX - 10, Ordering::Relaxed).unwrap();
        }
        assert_eq!(produce(&mem, RSP, &[7; 2000]).unwrap(), 1024);
        assert_eq!(produce(&mem, RSP, &[7; 10]).unwrap(), 0);
        let mut out = [0u8; 2000];
        assert_eq!(consume(&mem, RSP, &mut out).unwrap(), 1024);
        assert_eq!(consume(&mem, RSP, &mut out).unwrap(), 0);
    }

    #[test]
    fn garbage_indices_are_rejected() {
        let mem = ShMem::new(layout::SIZE);
        mem.store_u32(RSP.prod, 5000, Ordering::Relaxed).unwrap();
        assert_eq!(
            consume(&mem, RSP, &mut [0; 8]),
            Err(Error::BadRingIndex {
                prod: 5000,
                cons: 0
            })
        );
        mem.store_u32(REQ.cons, 3, Ordering::Relaxed).unwrap();
        assert!(matches!(
            produce(&mem, REQ, &[1]),
            Err(Error::BadRingIndex { .. })
        ));
        let small = ShMem::new(64);
        assert!(matches!(produce(&small, REQ, &[1]), Err(Error::Shmem(_))));
    }
}
