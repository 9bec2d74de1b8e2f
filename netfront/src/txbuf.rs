//! Placement of outgoing frames in the TX buffer: a byte ring over `pages` granted pages, with the
//! arithmetic only (the driver holds the pages).
//!
//! Frames are placed one after the other at increasing positions (a position modulo the buffer
//! size is an offset in the buffer) and released oldest first, when the backend has completed
//! every slot of the frame and of all frames before it. A frame never wraps around the end of the
//! buffer. It may straddle a 4 KiB page boundary: [`chunks`] then cuts it into one slot per page,
//! so that no slot ever crosses a page (netback rejects such a slot, and Linux netback disables
//! the whole interface). Where the backend cannot take multi-slot packets (no `feature-sg`), a
//! frame that would straddle a boundary is placed at the start of the next page instead.

use crate::wire::PAGE_SIZE;

/// The fewest bytes the first slot of a multi-slot frame holds (netback's header copy length,
/// `XEN_NETBACK_TX_COPY_LEN`; more than an Ethernet + IPv4 + TCP header).
pub const MIN_FIRST_SLOT: u64 = 128;

/// One slot's worth of a frame: `len` bytes at `offset` in buffer page `page`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Index of the page in the buffer.
    pub page: usize,
    /// Offset in the page.
    pub offset: usize,
    /// Bytes.
    pub len: usize,
}

/// The page-sized pieces of `len` bytes at buffer offset `start`.
pub fn chunks(start: usize, len: usize) -> impl Iterator<Item = Chunk> {
    let end = start + len;
    let mut pos = start;
    core::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let offset = pos % PAGE_SIZE;
        let n = (PAGE_SIZE - offset).min(end - pos);
        let c = Chunk {
            page: pos / PAGE_SIZE,
            offset,
            len: n,
        };
        pos += n;
        Some(c)
    })
}

/// Positions of the byte ring: `tail <= head`, `head - tail <= size`.
#[derive(Debug, Clone)]
pub struct TxBuffer {
    size: u64,
    head: u64,
    tail: u64,
}

impl TxBuffer {
    /// A ring over `pages` pages.
    pub fn new(pages: usize) -> Self {
        TxBuffer {
            size: (pages * PAGE_SIZE) as u64,
            head: 0,
            tail: 0,
        }
    }

    /// Buffer size in bytes.
    pub fn size(&self) -> usize {
        self.size as usize
    }

    /// Bytes in use (including padding skipped at page or buffer ends).
    pub fn used(&self) -> usize {
        (self.head - self.tail) as usize
    }

    /// Where a frame of `len` bytes would go: its position, or `None` when the buffer lacks room.
    /// With `split == false` the frame is kept inside one page (`len <= PAGE_SIZE` then).
    pub fn place(&self, len: usize, split: bool) -> Option<u64> {
        let len = len as u64;
        if len == 0 || len > self.size || (!split && len > PAGE_SIZE as u64) {
            return None;
        }
        let mut start = self.head;
        let off = start % self.size;
        if off + len > self.size {
            start += self.size - off;
        }
        let in_page = start % PAGE_SIZE as u64;
        let room = PAGE_SIZE as u64 - in_page;
        // A frame that straddles a page keeps at least MIN_FIRST_SLOT bytes in its first slot:
        // Linux's netback takes the first slot's own length as the packet's header length and
        // fails a packet whose first slot is shorter than an Ethernet header (found on real Xen:
        // ~1% of packets failed with NETIF_RSP_ERROR, each lost until TCP retransmitted it).
        if len > room && (!split || room < MIN_FIRST_SLOT.min(len)) {
            start += room;
            // That page may leave too little before the buffer's end: then the frame goes at
            // the start of the buffer (a page boundary too).
            let off = start % self.size;
            if off + len > self.size {
                start += self.size - off;
            }
        }
        (start + len - self.tail <= self.size).then_some(start)
    }

    /// Claims the `len` bytes at `start` (from [`place`](Self::place)); returns their end
    /// position, to [`release`](Self::release) later.
    pub fn claim(&mut self, start: u64, len: usize) -> u64 {
        self.head = start + len as u64;
        self.head
    }

    /// Buffer offset of position `pos`.
    pub fn offset(&self, pos: u64) -> usize {
        (pos % self.size) as usize
    }

    /// Releases everything before position `end` (the end of the oldest frames completed).
    pub fn release(&mut self, end: u64) {
        self.tail = end.clamp(self.tail, self.head);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_never_cross_a_page() {
        let c: Vec<_> = chunks(4096 - 100, 1514).collect();
        assert_eq!(
            c,
            [
                Chunk {
                    page: 0,
                    offset: 3996,
                    len: 100
                },
                Chunk {
                    page: 1,
                    offset: 0,
                    len: 1414
                }
            ]
        );
        assert_eq!(chunks(8192, 4096).count(), 1);
        assert_eq!(chunks(1, 3 * 4096).count(), 4);
        for start in (0..3 * 4096).step_by(37) {
            for len in [1, 60, 1514, 4096, 9000] {
                let c: Vec<_> = chunks(start, len).collect();
                assert_eq!(c.iter().map(|c| c.len).sum::<usize>(), len);
                assert!(c.iter().all(|c| c.offset + c.len <= PAGE_SIZE && c.len > 0));
            }
        }
    }

    #[test]
    fn frames_fill_the_ring_and_never_wrap() {
        let mut b = TxBuffer::new(2);
        let s = b.place(5000, true).unwrap();
        assert_eq!(s, 0);
        let e1 = b.claim(s, 5000);
        // 3192 bytes left at the end: a 3200-byte frame must wait for the start.
        assert_eq!(b.place(3200, true), None);
        b.release(e1);
        let s = b.place(3200, true).unwrap();
        assert_eq!(b.offset(s), 0, "skipped the end of the buffer");
        b.claim(s, 3200);
        assert_eq!(b.used(), 3192 + 3200);
    }

    #[test]
    fn a_split_frame_keeps_a_header_sized_first_slot() {
        for used in [4096 - 10, 4096 - 13, 4096 - 127] {
            let mut b = TxBuffer::new(4);
            let s = b.place(used, true).unwrap();
            b.claim(s, used);
            let s = b.place(1514, true).unwrap();
            assert_eq!(s, 4096, "{used}: skipped to the next page");
            let first = chunks(b.offset(s), 1514).next().unwrap();
            assert!(first.len as u64 >= MIN_FIRST_SLOT);
        }
        // 128 bytes of room is enough: the frame is split there.
        let mut b = TxBuffer::new(4);
        let s = b.place(4096 - 128, true).unwrap();
        b.claim(s, 4096 - 128);
        let s = b.place(1514, true).unwrap();
        assert_eq!(s, 4096 - 128);
        // A small frame that fits is never moved.
        let mut b = TxBuffer::new(4);
        let s = b.place(4096 - 60, true).unwrap();
        b.claim(s, 4096 - 60);
        assert_eq!(b.place(60, true), Some(4096 - 60));
    }

    #[test]
    fn without_sg_frames_stay_in_one_page() {
        let mut b = TxBuffer::new(2);
        let s = b.place(3000, false).unwrap();
        b.claim(s, 3000);
        let s = b.place(1514, false).unwrap();
        assert_eq!(s, 4096);
        assert_eq!(b.place(5000, false), None);
        assert_eq!(b.place(0, true), None);
    }

    /// Every placement, over many frames of every size and releases in order: inside the
    /// buffer without crossing its end, clear of the bytes in use, and a first slot of at least
    /// MIN_FIRST_SLOT bytes when split. (A frame that skipped to the next page used to be able
    /// to end past the buffer's end: a GSO frame just over a multiple of 4 KiB, starting under
    /// 128 bytes before a page boundary some pages before the end.)
    #[test]
    fn placements_stay_inside_the_buffer_and_clear_of_frames_in_flight() {
        let mut rng = xen::sim::Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next();
        for pages in [2usize, 3, 16] {
            let size = pages * PAGE_SIZE;
            let mut b = TxBuffer::new(pages);
            let mut flight = std::collections::VecDeque::new();
            for _ in 0..200_000 {
                // Sizes near multiples of a page are where the edge cases are.
                let len = match next() % 3 {
                    0 => 60 + (next() % 1455) as usize,
                    1 => ((1 + next() % 15) as usize * PAGE_SIZE + (next() % 300) as usize)
                        .saturating_sub(150)
                        .clamp(60, size / 2),
                    _ => 60 + (next() as usize % (size / 2 - 60)),
                };
                let placed = b.place(len, true);
                if placed.is_none() || next() % 4 == 0 {
                    if let Some(end) = flight.pop_front() {
                        b.release(end);
                    }
                }
                let Some(start) = placed else { continue };
                let off = b.offset(start);
                assert!(
                    off + len <= size,
                    "{pages} pages: {len} bytes at {off} cross the end"
                );
                assert!(start >= b.head, "placed before the head");
                let first = chunks(off, len).next().unwrap();
                assert!(
                    first.len == len || first.len as u64 >= MIN_FIRST_SLOT,
                    "first slot of {} bytes",
                    first.len
                );
                assert!(chunks(off, len).all(|c| c.page < pages));
                flight.push_back(b.claim(start, len));
                assert!(b.used() <= size);
            }
        }
    }
}
