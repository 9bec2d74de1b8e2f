//! The frontend half of an io/ring.h shared ring (used by netfront and blkfront), over
//! [`ShMem`]: the ring keeps indices only, requests and responses are written and read as bytes at
//! slot offsets, and every index the backend publishes is checked before use.
//!
//! Layout (`DEFINE_RING_TYPES`): a 64-byte header `{ req_prod, req_event, rsp_prod, rsp_event,
//! pad[48] }`, then `nr_ents` slots of `max(sizeof(request), sizeof(response))` bytes, `nr_ents`
//! being the largest power of two that fits in the ring's pages.

use crate::shmem::{OutOfBounds, ShMem};
use core::fmt;
use core::sync::atomic::{fence, Ordering};

/// Size of the shared header.
pub const HEADER: usize = 64;
const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;

/// Number of slots for entries of `entry_size` bytes in `bytes` of ring memory (0 when not even
/// the header fits).
pub const fn ring_size(bytes: usize, entry_size: usize) -> u32 {
    let n = bytes.saturating_sub(HEADER) / entry_size;
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// What the backend did wrong (or the ring memory was too small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// The backend published `rsp_prod` more than a ring ahead of our consumer index, or past the
    /// requests we made.
    BadResponseIndex {
        /// Published response producer.
        rsp_prod: u32,
        /// Our consumer index.
        rsp_cons: u32,
        /// Requests we have published.
        req_prod: u32,
    },
    /// No free slot for a request.
    Full,
    /// A slot access fell outside the ring memory (a bug, not the backend's doing).
    Memory(OutOfBounds),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::BadResponseIndex { rsp_prod, rsp_cons, req_prod } => write!(
                f,
                "backend published response index {rsp_prod} (consumed {rsp_cons}, requested {req_prod})"
            ),
            RingError::Full => f.write_str("ring full"),
            RingError::Memory(e) => write!(f, "{e}"),
        }
    }
}

impl From<OutOfBounds> for RingError {
    fn from(e: OutOfBounds) -> Self {
        RingError::Memory(e)
    }
}

/// A frontend ring: we produce requests and consume responses.
#[derive(Debug)]
pub struct FrontRing {
    mem: ShMem,
    entry_size: usize,
    size: u32,
    req_prod_pvt: u32,
    rsp_cons: u32,
}

impl FrontRing {
    /// Initialises the shared header (SHARED_RING_INIT) and the front state (FRONT_RING_INIT).
    pub fn new(mem: ShMem, entry_size: usize) -> Result<Self, RingError> {
        let size = ring_size(mem.len(), entry_size);
        if size == 0 {
            return Err(RingError::Full);
        }
        mem.zero(0, HEADER)?;
        mem.store_u32(REQ_EVENT, 1, Ordering::Relaxed)?;
        mem.store_u32(RSP_EVENT, 1, Ordering::Release)?;
        Ok(FrontRing {
            mem,
            entry_size,
            size,
            req_prod_pvt: 0,
            rsp_cons: 0,
        })
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Slots free for new requests (responses not yet consumed still hold theirs).
    pub fn free_requests(&self) -> u32 {
        self.size - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Requests made but not yet answered and consumed.
    pub fn in_flight(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    fn slot(&self, idx: u32) -> usize {
        HEADER + (idx & (self.size - 1)) as usize * self.entry_size
    }

    /// Writes the next request's bytes with `fill(mem, offset)` and queues it (not yet visible to
    /// the backend: see [`push_requests`](Self::push_requests)).
    pub fn queue_request(
        &mut self,
        fill: impl FnOnce(&ShMem, usize) -> Result<(), OutOfBounds>,
    ) -> Result<u32, RingError> {
        if self.free_requests() == 0 {
            return Err(RingError::Full);
        }
        let idx = self.req_prod_pvt;
        fill(&self.mem, self.slot(idx))?;
        self.req_prod_pvt = idx.wrapping_add(1);
        Ok(idx)
    }

    /// Publishes queued requests; true when the backend asked to be notified
    /// (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY).
    pub fn push_requests(&mut self) -> Result<bool, RingError> {
        let old = self.mem.load_u32(REQ_PROD, Ordering::Relaxed)?;
        let new = self.req_prod_pvt;
        // The backend must see the requests before the index (Release), and we must read
        // req_event only after publishing the index (SeqCst fence).
        self.mem.store_u32(REQ_PROD, new, Ordering::Release)?;
        fence(Ordering::SeqCst);
        let event = self.mem.load_u32(REQ_EVENT, Ordering::Acquire)?;
        Ok(new.wrapping_sub(event) < new.wrapping_sub(old))
    }

    /// The backend's response producer, validated against what we asked for.
    fn rsp_prod(&self) -> Result<u32, RingError> {
        let rsp_prod = self.mem.load_u32(RSP_PROD, Ordering::Acquire)?;
        let ahead = rsp_prod.wrapping_sub(self.rsp_cons);
        if ahead > self.size || ahead > self.in_flight() {
            return Err(RingError::BadResponseIndex {
                rsp_prod,
                rsp_cons: self.rsp_cons,
                req_prod: self.req_prod_pvt,
            });
        }
        Ok(rsp_prod)
    }

    /// Responses ready to consume.
    pub fn unconsumed_responses(&self) -> Result<u32, RingError> {
        Ok(self.rsp_prod()?.wrapping_sub(self.rsp_cons))
    }

    /// Consumes the next response with `read(mem, offset)`, if there is one.
    pub fn take_response<T>(
        &mut self,
        read: impl FnOnce(&ShMem, usize) -> Result<T, OutOfBounds>,
    ) -> Result<Option<T>, RingError> {
        if self.unconsumed_responses()? == 0 {
            return Ok(None);
        }
        let v = read(&self.mem, self.slot(self.rsp_cons))?;
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(v))
    }

    /// Asks to be notified of the next response and re-checks (RING_FINAL_CHECK_FOR_RESPONSES):
    /// true when responses arrived meanwhile, so the caller must not sleep.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        self.mem
            .store_u32(RSP_EVENT, self.rsp_cons.wrapping_add(1), Ordering::Release)?;
        fence(Ordering::SeqCst);
        Ok(self.unconsumed_responses()? > 0)
    }

    /// The ring memory (for the simulated backend in tests, and to grant it).
    pub fn mem(&self) -> &ShMem {
        &self.mem
    }
}

/// A minimal backend side, for tests of frontends: consumes requests and produces responses on
/// the same memory.
#[derive(Debug)]
pub struct BackRing {
    mem: ShMem,
    entry_size: usize,
    size: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
}

impl BackRing {
    /// Attaches to a ring the frontend initialised.
    pub fn new(mem: ShMem, entry_size: usize) -> Self {
        let size = ring_size(mem.len(), entry_size);
        BackRing {
            mem,
            entry_size,
            size,
            req_cons: 0,
            rsp_prod_pvt: 0,
        }
    }

    fn slot(&self, idx: u32) -> usize {
        HEADER + (idx & (self.size - 1)) as usize * self.entry_size
    }

    /// Takes the next request, if any.
    pub fn take_request<T>(
        &mut self,
        read: impl FnOnce(&ShMem, usize) -> Result<T, OutOfBounds>,
    ) -> Result<Option<T>, OutOfBounds> {
        let prod = self.mem.load_u32(REQ_PROD, Ordering::Acquire)?;
        if prod == self.req_cons {
            return Ok(None);
        }
        let v = read(&self.mem, self.slot(self.req_cons))?;
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(v))
    }

    /// Writes a response into the next slot (not yet published).
    pub fn queue_response(
        &mut self,
        fill: impl FnOnce(&ShMem, usize) -> Result<(), OutOfBounds>,
    ) -> Result<(), OutOfBounds> {
        fill(&self.mem, self.slot(self.rsp_prod_pvt))?;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes queued responses; true when the frontend asked to be notified.
    pub fn push_responses(&mut self) -> Result<bool, OutOfBounds> {
        let old = self.mem.load_u32(RSP_PROD, Ordering::Relaxed)?;
        let new = self.rsp_prod_pvt;
        self.mem.store_u32(RSP_PROD, new, Ordering::Release)?;
        fence(Ordering::SeqCst);
        let event = self.mem.load_u32(RSP_EVENT, Ordering::Acquire)?;
        Ok(new.wrapping_sub(event) < new.wrapping_sub(old))
    }

    /// Publishes an arbitrary response producer index (to test frontends against a misbehaving
    /// backend).
    pub fn force_rsp_prod(&mut self, v: u32) -> Result<(), OutOfBounds> {
        self.mem.store_u32(RSP_PROD, v, Ordering::Release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ring_h() {
        // blkif: 112-byte entries in one page -> 32 slots; netif tx (12 bytes) and rx (8) -> 256.
        assert_eq!(ring_size(4096, 112), 32);
        assert_eq!(ring_size(4096, 12), 256);
        assert_eq!(ring_size(4096, 16), 128);
        assert_eq!(ring_size(4096, 8), 256);
        assert_eq!(ring_size(4 * 4096, 112), 128);
    }

    #[test]
    fn memory_too_small_for_a_slot_is_refused() {
        // Found by the `ring` fuzz target: less memory than the header overflowed.
        assert_eq!(ring_size(0, 8), 0);
        assert_eq!(ring_size(9, 8), 0);
        assert_eq!(ring_size(HEADER + 7, 8), 0);
        assert_eq!(ring_size(HEADER + 8, 8), 1);
        for len in [0, 9, HEADER, HEADER + 7] {
            assert_eq!(
                FrontRing::new(ShMem::new(len), 8).map(|r| r.size()),
                Err(RingError::Full),
                "{len} bytes"
            );
        }
        assert_eq!(FrontRing::new(ShMem::new(HEADER + 8), 8).unwrap().size(), 1);
    }

    #[test]
    fn requests_and_responses_round_trip_with_notification_rules() {
        let m = ShMem::new(4096);
        let mut f = FrontRing::new(m.clone(), 16).unwrap();
        let mut b = BackRing::new(m, 16);
        for i in 0..3u32 {
            f.queue_request(|m, o| m.store_u32(o, 100 + i, Ordering::Relaxed))
                .unwrap();
        }
        assert!(
            f.push_requests().unwrap(),
            "req_event = 1: the first push notifies"
        );
        let mut got = vec![];
        while let Some(v) = b
            .take_request(|m, o| m.load_u32(o, Ordering::Relaxed))
            .unwrap()
        {
            got.push(v);
            b.queue_response(|m, o| m.store_u32(o, v + 1000, Ordering::Relaxed))
                .unwrap();
        }
        assert_eq!(got, [100, 101, 102]);
        assert!(!f.final_check_for_responses().unwrap());
        assert!(
            b.push_responses().unwrap(),
            "the front asked for rsp_cons + 1"
        );
        let mut rsps = vec![];
        while let Some(v) = f
            .take_response(|m, o| m.load_u32(o, Ordering::Relaxed))
            .unwrap()
        {
            rsps.push(v);
        }
        assert_eq!(rsps, [1100, 1101, 1102]);
        assert_eq!(f.free_requests(), 128);
    }

    #[test]
    fn ring_fills_up_and_wraps() {
        let m = ShMem::new(4096);
        let mut f = FrontRing::new(m.clone(), 112).unwrap();
        let mut b = BackRing::new(m, 112);
        for round in 0..5u32 {
            for i in 0..32 {
                f.queue_request(|m, o| m.store_u32(o, round * 100 + i, Ordering::Relaxed))
                    .unwrap();
            }
            assert_eq!(f.queue_request(|_, _| Ok(())), Err(RingError::Full));
            f.push_requests().unwrap();
            while let Some(v) = b
                .take_request(|m, o| m.load_u32(o, Ordering::Relaxed))
                .unwrap()
            {
                b.queue_response(|m, o| m.store_u32(o, v, Ordering::Relaxed))
                    .unwrap();
            }
            b.push_responses().unwrap();
            for i in 0..32 {
                let v = f
                    .take_response(|m, o| m.load_u32(o, Ordering::Relaxed))
                    .unwrap();
                assert_eq!(v, Some(round * 100 + i));
            }
        }
    }

    #[test]
    fn a_backend_publishing_responses_never_requested_is_an_error() {
        let m = ShMem::new(4096);
        let mut f = FrontRing::new(m.clone(), 16).unwrap();
        let mut b = BackRing::new(m, 16);
        f.queue_request(|_, _| Ok(())).unwrap();
        f.push_requests().unwrap();
        b.force_rsp_prod(5).unwrap();
        assert!(matches!(
            f.take_response(|_, _| Ok(())),
            Err(RingError::BadResponseIndex { .. })
        ));
        b.force_rsp_prod(u32::MAX).unwrap();
        assert!(f.unconsumed_responses().is_err());
        b.force_rsp_prod(1).unwrap();
        assert_eq!(f.take_response(|_, _| Ok(7)).unwrap(), Some(7));
    }
}
