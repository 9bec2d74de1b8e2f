//! What a split-driver frontend needs from the platform, as one small trait: pages to share,
//! grants on them, an event channel, notification, and the clock. Netfront and blkfront are
//! written against [`Hal`], so the same driver code runs on Xen ([`XenHal`]) and in host tests
//! against a simulated backend (`SimHal`, feature `sim`, which lets the backend "map" what was
//! granted).

extern crate alloc;

use crate::shmem::ShMem;
#[cfg(any(test, feature = "sim"))]
use alloc::collections::BTreeMap;
#[cfg(any(test, feature = "sim"))]
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

/// A page of guest memory that can be granted to a backend.
#[derive(Debug, Clone)]
pub struct SharedPage {
    /// Its contents.
    pub mem: ShMem,
    /// Its machine frame number (what a grant names).
    pub mfn: u64,
}

/// Platform errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalError {
    /// No memory left for a page.
    OutOfMemory,
    /// No grant reference left.
    GrantsExhausted,
    /// The backend still has the grant mapped.
    GrantInUse,
    /// A grant reference we never handed out.
    BadGrant,
    /// Xen refused a hypercall (errno).
    Hypercall(i32),
}

impl fmt::Display for HalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HalError::OutOfMemory => f.write_str("out of memory"),
            HalError::GrantsExhausted => f.write_str("no grant reference left"),
            HalError::GrantInUse => f.write_str("grant still mapped by the backend"),
            HalError::BadGrant => f.write_str("unknown grant reference"),
            HalError::Hypercall(e) => write!(f, "hypercall failed: errno {e}"),
        }
    }
}

/// The platform services of a frontend.
pub trait Hal {
    /// A zeroed page.
    fn alloc_page(&mut self) -> Result<SharedPage, HalError>;
    /// Returns a page from [`alloc_page`](Self::alloc_page) (after its grants ended).
    fn free_page(&mut self, page: SharedPage);
    /// `n` zeroed pages contiguous in our address space (a multi-page ring), viewed as one region
    /// of `n * 4096` bytes, with each page's machine frame in order. They are freed page by page
    /// with [`free_page`](Self::free_page) (`mem` a 4096-byte slice of the region). The default
    /// does only `n == 1`; platforms that can map contiguous pages override it.
    fn alloc_pages(&mut self, n: usize) -> Result<(ShMem, Vec<u64>), HalError> {
        if n != 1 {
            return Err(HalError::OutOfMemory);
        }
        let page = self.alloc_page()?;
        Ok((page.mem, alloc::vec![page.mfn]))
    }
    /// Grants domain `domid` access to machine frame `mfn`.
    fn grant(&mut self, domid: u16, mfn: u64, readonly: bool) -> Result<u32, HalError>;
    /// Revokes a grant; fails with [`HalError::GrantInUse`] while the backend maps it.
    fn end_grant(&mut self, gref: u32) -> Result<(), HalError>;
    /// A new event channel for domain `remote` to bind.
    fn alloc_evtchn(&mut self, remote: u16) -> Result<u32, HalError>;
    /// Closes an event channel.
    fn close_evtchn(&mut self, port: u32);
    /// Signals the backend on `port`.
    fn notify(&mut self, port: u32);
    /// Monotonic nanoseconds.
    fn now_ns(&self) -> u64;
    /// The machine frame now behind the page that starts `mem` (a page from
    /// [`alloc_page`](Self::alloc_page) or [`alloc_pages`](Self::alloc_pages)). A page's frame
    /// changes when the [`generation`](Self::generation) does, so a driver that grants a page
    /// again after a restore asks here rather than reusing the frame it was given.
    fn frame(&self, mem: &ShMem) -> u64;
    /// How many times the domain has moved into a new domain so far (restored from `xl save`,
    /// or live-migrated; a cancelled suspend such as `xl save -c` does not count). When it
    /// changes, every grant reference, event-channel port and machine frame number a driver
    /// holds is void: it forgets them (it must not end or close them: the numbers may belong to
    /// someone else now), reconnects to its backend as at boot, and asks [`frame`](Self::frame)
    /// for its pages' new frames. The platform wakes every task after a restore, so a driver
    /// sees the change at its next poll.
    fn generation(&self) -> u64 {
        0
    }
}

/// Every platform is a clock (its [`Hal::now_ns`]), for xenbus deadlines and the like.
impl<H: Hal> crate::proto::xenbus::Clock for H {
    fn now_ns(&self) -> u64 {
        Hal::now_ns(self)
    }
}

// Feature `sim` (and this crate's tests) only.
#[cfg(any(test, feature = "sim"))]
/// Shared state of the simulated platform: what the frontend granted, so a simulated backend
/// can reach it, and the notifications sent.
#[derive(Debug, Default)]
pub struct SimState {
    pages: BTreeMap<u64, ShMem>,
    grants: BTreeMap<u32, (u16, u64, bool)>,
    mapped: BTreeMap<u32, u32>,
    next_mfn: u64,
    next_gref: u32,
    next_port: u32,
    /// Ports notified, in order.
    pub notifications: Vec<u32>,
    /// Fake clock, advanced by tests.
    pub now_ns: u64,
    /// Grant limit (to test exhaustion).
    pub max_grants: usize,
    /// Restores so far ([`Hal::generation`]), counted by [`new_domain`](Self::new_domain).
    pub generation: u64,
}

#[cfg(any(test, feature = "sim"))]
impl SimState {
    /// The memory behind grant `gref` as the backend `domid` would map it: `(page, readonly)`.
    pub fn map_grant(&mut self, gref: u32, domid: u16) -> Option<(ShMem, bool)> {
        let &(d, mfn, ro) = self.grants.get(&gref)?;
        if d != domid {
            return None;
        }
        *self.mapped.entry(gref).or_default() += 1;
        Some((self.pages.get(&mfn)?.clone(), ro))
    }

    /// Unmaps a grant mapped with [`map_grant`](Self::map_grant).
    pub fn unmap_grant(&mut self, gref: u32) {
        if let Some(n) = self.mapped.get_mut(&gref) {
            *n -= 1;
            if *n == 0 {
                self.mapped.remove(&gref);
            }
        }
    }

    /// Grants currently live.
    pub fn live_grants(&self) -> usize {
        self.grants.len()
    }

    /// Pages currently allocated.
    pub fn live_pages(&self) -> usize {
        self.pages.len()
    }

    /// What a restore (or a live migration) does to the frontend's world: the domain is a new
    /// one, so every grant is gone (with the backend's mappings of them), every allocated page
    /// sits on a new machine frame (its contents kept), event-channel ports start over and the
    /// [`generation`](Hal::generation) goes up. A simulated backend that lived through it
    /// reattaches as a new one would.
    pub fn new_domain(&mut self) {
        self.generation += 1;
        self.grants.clear();
        self.mapped.clear();
        let pages = core::mem::take(&mut self.pages);
        // New frames far from the old ones, so a stale frame number is caught.
        self.next_mfn += 0x10_0000;
        for (_, mem) in pages {
            let mfn = self.next_mfn;
            self.next_mfn += 1;
            self.pages.insert(mfn, mem);
        }
        self.next_port = 10;
        self.notifications.clear();
    }

    /// The frame now behind the page starting at `mem` (see [`Hal::frame`]).
    pub fn frame_of(&self, mem: &ShMem) -> Option<u64> {
        self.pages
            .iter()
            .find(|(_, m)| m.as_ptr() == mem.as_ptr())
            .map(|(&mfn, _)| mfn)
    }
}

#[cfg(any(test, feature = "sim"))]
/// The simulated platform for host tests; clones share one [`SimState`].
#[derive(Debug, Clone, Default)]
pub struct SimHal {
    /// The shared state (the simulated backend holds a clone).
    pub state: Arc<spin::Mutex<SimState>>,
}

#[cfg(any(test, feature = "sim"))]
impl SimHal {
    /// A fresh simulated platform (no grant limit).
    pub fn new() -> Self {
        let s = SimState {
            next_mfn: 0x1000,
            next_gref: 8,
            next_port: 10,
            max_grants: usize::MAX,
            ..Default::default()
        };
        SimHal {
            state: Arc::new(spin::Mutex::new(s)),
        }
    }
}

#[cfg(any(test, feature = "sim"))]
impl Hal for SimHal {
    fn alloc_page(&mut self) -> Result<SharedPage, HalError> {
        let mut s = self.state.lock();
        let mfn = s.next_mfn;
        s.next_mfn += 1;
        let mem = ShMem::new(4096);
        s.pages.insert(mfn, mem.clone());
        Ok(SharedPage { mem, mfn })
    }

    fn free_page(&mut self, page: SharedPage) {
        self.state.lock().pages.remove(&page.mfn);
    }

    fn alloc_pages(&mut self, n: usize) -> Result<(ShMem, Vec<u64>), HalError> {
        let mut s = self.state.lock();
        let mem = ShMem::new(n * 4096);
        let mut mfns = Vec::with_capacity(n);
        for i in 0..n {
            let page = mem
                .slice(i * 4096, 4096)
                .map_err(|_| HalError::OutOfMemory)?;
            let mfn = s.next_mfn;
            s.next_mfn += 1;
            s.pages.insert(mfn, page);
            mfns.push(mfn);
        }
        Ok((mem, mfns))
    }

    fn grant(&mut self, domid: u16, mfn: u64, readonly: bool) -> Result<u32, HalError> {
        let mut s = self.state.lock();
        if s.grants.len() >= s.max_grants {
            return Err(HalError::GrantsExhausted);
        }
        let g = s.next_gref;
        s.next_gref += 1;
        s.grants.insert(g, (domid, mfn, readonly));
        Ok(g)
    }

    fn end_grant(&mut self, gref: u32) -> Result<(), HalError> {
        let mut s = self.state.lock();
        if s.mapped.contains_key(&gref) {
            return Err(HalError::GrantInUse);
        }
        s.grants.remove(&gref).map(|_| ()).ok_or(HalError::BadGrant)
    }

    fn alloc_evtchn(&mut self, _remote: u16) -> Result<u32, HalError> {
        let mut s = self.state.lock();
        s.next_port += 1;
        Ok(s.next_port)
    }

    fn close_evtchn(&mut self, _port: u32) {}

    fn notify(&mut self, port: u32) {
        self.state.lock().notifications.push(port);
    }

    fn now_ns(&self) -> u64 {
        self.state.lock().now_ns
    }

    /// Panics for memory this platform never handed out (a driver bug).
    fn frame(&self, mem: &ShMem) -> u64 {
        self.state
            .lock()
            .frame_of(mem)
            .expect("frame() of a page the simulated platform did not allocate")
    }

    fn generation(&self) -> u64 {
        self.state.lock().generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_domain_voids_grants_and_moves_every_page_to_a_new_frame() {
        let mut hal = SimHal::new();
        let page = hal.alloc_page().unwrap();
        page.mem.write(0, b"kept").unwrap();
        let gref = hal.grant(0, page.mfn, false).unwrap();
        assert!(hal.state.lock().map_grant(gref, 0).is_some());
        assert_eq!(hal.frame(&page.mem), page.mfn);
        assert_eq!(hal.generation(), 0);

        hal.state.lock().new_domain();

        assert_eq!(hal.generation(), 1);
        assert_eq!(hal.state.lock().live_grants(), 0);
        assert!(hal.state.lock().map_grant(gref, 0).is_none());
        assert_eq!(hal.end_grant(gref), Err(HalError::BadGrant));
        let new = hal.frame(&page.mem);
        assert_ne!(new, page.mfn);
        let mut b = [0; 4];
        page.mem.read(0, &mut b).unwrap();
        assert_eq!(&b, b"kept");
        // Granting the page again names its new frame, which the backend can map.
        let g2 = hal.grant(0, new, false).unwrap();
        let (m, ro) = hal.state.lock().map_grant(g2, 0).unwrap();
        assert!(!ro);
        assert_eq!(m.as_ptr(), page.mem.as_ptr());
    }
}
