//! A simulated blkback: an in-memory disk behind the real blkif ring protocol, for tests,
//! doctests and fuzzing of the frontend on the host.
//!
//! [`SimBlkback::attach`] creates the device in the simulated xenstore (as a toolstack would)
//! and plays the backend's side of the xenbus handshake as a xenstore peer: it publishes its
//! features and goes to InitWait, maps the ring pages the frontend granted (one or several,
//! read page by page, so the frontend's page order is checked too) once the frontend is
//! Initialised, publishes `sectors`, `sector-size` and `info`, and goes to Connected; it unmaps
//! and closes when the frontend closes.
//!
//! Requests are served when the frontend notifies the event channel (and until the backend's
//! final check finds no more), through [`SimHal`] grant mappings: data
//! moves between granted pages and the disk, every segment, grant and range checked as a real
//! backend would; what the frontend gets wrong is counted in [`SimStats::frontend_errors`].
//! [`SimPark`] is how the frontend's executor waits ([`Park`]): each park advances the simulated
//! clock and runs the backend one step.
//!
//! Misbehaviour is injected with [`Fault`]s, applied to the next requests in order, or with
//! [`SimBlkback::set_chaos`], which answers every request with pseudo-random responses.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{fence, Ordering};

use xen::hal::{SimHal, SimState};
use xen::ring::{ring_size, HEADER};
use xen::shmem::ShMem;
use xen::xenstore::sim::{Sim, Store};
use xen::xenstore::Client;

use crate::wire::{
    self, status, Op, Request, Response, Segment, ENTRY_LEN, PAGE_SIZE, REQUEST_LEN,
    SEGMENTS_PER_INDIRECT_PAGE, SEGMENT_LEN, WIRE_SECTOR,
};
use xen::exec::Park;

/// What the simulated disk looks like and offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Size in 512-byte sectors (the `sectors` node).
    pub wire_sectors: u64,
    /// The `sector-size` node.
    pub sector_size: u32,
    /// The `info` node (`VDISK_*` bits).
    pub info: u32,
    /// `feature-flush-cache`.
    pub flush: bool,
    /// `feature-barrier`.
    pub barrier: bool,
    /// `feature-discard`.
    pub discard: bool,
    /// `feature-persistent`.
    pub persistent: bool,
    /// `max-ring-page-order`, if published.
    pub max_ring_page_order: Option<u32>,
    /// `feature-max-indirect-segments`, if published.
    pub max_indirect_segments: Option<u32>,
    /// The backend's domain.
    pub domid: u16,
    /// Raw values to publish instead of the computed ones (key, value), e.g. a bad `sectors`.
    pub overrides: Vec<(String, String)>,
}

impl SimConfig {
    /// A `bytes`-sized disk with 512-byte sectors offering flush, barrier, discard and
    /// persistent grants, single-page ring, no indirect requests, backend in domain 0.
    pub fn disk(bytes: u64) -> Self {
        SimConfig {
            wire_sectors: bytes / WIRE_SECTOR as u64,
            sector_size: 512,
            info: 0,
            flush: true,
            barrier: true,
            discard: true,
            persistent: true,
            max_ring_page_order: None,
            max_indirect_segments: None,
            domid: 0,
            overrides: Vec::new(),
        }
    }
}

/// A misbehaviour, applied to the next request served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer `BLKIF_RSP_ERROR` (without doing the I/O).
    IoError,
    /// Answer `BLKIF_RSP_EOPNOTSUPP` (without doing the I/O).
    NotSupported,
    /// Answer with an id that was never requested (and never answer the real one).
    WrongId,
    /// Answer with another operation.
    WrongOperation,
    /// Answer with this status.
    Status(i16),
    /// Answer, then publish one more response nobody asked for.
    Unsolicited,
    /// Answer, but publish a garbage `rsp_prod` until the next step.
    GarbageRspProd,
    /// Hold the response back for this many steps.
    Delay(u32),
    /// Never answer.
    Drop,
    /// Instead of answering, publish a copy of the previous response (a duplicate answer; this
    /// request is never answered).
    Duplicate,
}

/// What the simulated backend saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimStats {
    /// Requests consumed.
    pub requests: u64,
    /// Read requests (direct or indirect).
    pub reads: u64,
    /// Write requests (direct or indirect).
    pub writes: u64,
    /// Indirect requests.
    pub indirect: u64,
    /// Cache flushes.
    pub flushes: u64,
    /// Write barriers.
    pub barriers: u64,
    /// Discards.
    pub discards: u64,
    /// Most segments seen in one request.
    pub max_segments: usize,
    /// Event-channel notifications received.
    pub notifications: u64,
    /// Things the frontend got wrong (bad request, segment, grant, range, write to a read-only
    /// disk, bad handshake values).
    pub frontend_errors: u64,
}

/// The backend's view of a (possibly multi-page) ring: the pages as mapped, one by one.
struct PagedRing {
    pages: Vec<ShMem>,
    grefs: Vec<u32>,
    size: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
}

const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;

impl PagedRing {
    fn bytes(&self, off: usize, len: usize, mut f: impl FnMut(&ShMem, usize, usize, usize)) {
        let mut done = 0;
        while done < len {
            let at = off + done;
            let (page, in_page) = (at / PAGE_SIZE, at % PAGE_SIZE);
            let n = (PAGE_SIZE - in_page).min(len - done);
            if let Some(p) = self.pages.get(page) {
                f(p, in_page, done, n);
            }
            done += n;
        }
    }

    fn read(&self, off: usize, buf: &mut [u8]) {
        let len = buf.len();
        self.bytes(off, len, |p, at, done, n| {
            let _ = p.read(at, &mut buf[done..done + n]);
        });
    }

    fn write(&self, off: usize, buf: &[u8]) {
        self.bytes(off, buf.len(), |p, at, done, n| {
            let _ = p.write(at, &buf[done..done + n]);
        });
    }

    fn load(&self, off: usize) -> u32 {
        self.pages[0].load_u32(off, Ordering::Acquire).unwrap_or(0)
    }

    fn store(&self, off: usize, v: u32) {
        let _ = self.pages[0].store_u32(off, v, Ordering::Release);
    }

    fn slot(&self, idx: u32) -> usize {
        HEADER + (idx & (self.size - 1)) as usize * ENTRY_LEN
    }

    /// The next request image; `Err` when the frontend's `req_prod` is more than a ring ahead.
    fn take_request(&mut self) -> Result<Option<[u8; REQUEST_LEN]>, ()> {
        let prod = self.load(REQ_PROD);
        let ahead = prod.wrapping_sub(self.req_cons);
        if ahead == 0 {
            return Ok(None);
        }
        // Requests must not overrun responses we have not published.
        if ahead > self.size || prod.wrapping_sub(self.rsp_prod_pvt) > self.size {
            return Err(());
        }
        let mut b = [0u8; REQUEST_LEN];
        self.read(self.slot(self.req_cons), &mut b);
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(b))
    }

    fn queue_response(&mut self, r: &Response) {
        self.write(self.slot(self.rsp_prod_pvt), &r.emit());
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
    }

    fn push_responses(&mut self) {
        fence(Ordering::Release);
        self.store(RSP_PROD, self.rsp_prod_pvt);
        fence(Ordering::SeqCst);
        let _ = self.load(RSP_EVENT);
    }

    /// RING_FINAL_CHECK_FOR_REQUESTS: true when more requests are waiting.
    fn final_check_for_requests(&mut self) -> bool {
        if self.load(REQ_PROD) != self.req_cons {
            return true;
        }
        self.store(REQ_EVENT, self.req_cons.wrapping_add(1));
        fence(Ordering::SeqCst);
        self.load(REQ_PROD) != self.req_cons
    }
}

/// A held-back response.
struct Held {
    steps: u32,
    rsp: Response,
}

struct Inner {
    hal: Arc<spin::Mutex<SimState>>,
    config: SimConfig,
    fe: String,
    be: String,
    disk: Vec<u8>,
    ring: Option<PagedRing>,
    port: Option<u32>,
    seen_notifications: usize,
    awake: bool,
    faults: VecDeque<Fault>,
    held: Vec<Held>,
    restore_rsp_prod: bool,
    chaos: Option<u64>,
    last: Option<Response>,
    stats: SimStats,
    connect_error: Option<String>,
    /// The device number.
    vdev: u32,
    /// The platform's generation when attached: once it changes this backend is gone (its
    /// domain's grants, mappings and event channel died with it) and does nothing more.
    domain: u64,
    /// The backend attached in its place after a restore ([`SimBlkback::reattach`]): this one's
    /// parkers step it.
    successor: Option<SimBlkback>,
    /// Requests served, as (operation byte, sector), while recording.
    served: Option<Vec<(u8, u64)>>,
}

/// The simulated backend; clones share one.
#[derive(Clone)]
pub struct SimBlkback {
    inner: Rc<RefCell<Inner>>,
}

/// How an executor driving the frontend waits on the host ([`Park`]): each park advances the
/// simulated clock by [`tick_ns`](Self::tick_ns) (a millisecond) and runs the backend one step.
#[derive(Clone)]
pub struct SimPark {
    backend: SimBlkback,
    /// Nanoseconds each park advances the clock.
    pub tick_ns: u64,
    /// Parks so far.
    pub parks: u64,
}

impl xen::exec::Clock for SimPark {
    fn now_ns(&self) -> u64 {
        self.backend.inner.borrow().hal.lock().now_ns
    }
}

impl Park for SimPark {
    fn park(&mut self, _deadline: Option<u64>) {
        self.parks += 1;
        self.backend.inner.borrow().hal.lock().now_ns += self.tick_ns;
        self.backend.step();
    }
}

impl SimBlkback {
    /// Creates virtual disk `vdev` of the client's domain in the simulated xenstore (frontend
    /// `device/vbd/<vdev>`), backed by a zeroed in-memory disk, and starts serving it.
    pub fn attach(xs: &mut Client<Sim>, hal: &SimHal, vdev: u32, config: SimConfig) -> Self {
        let store = xs.transport_mut().store();
        let (fe, be) = store.add_device("vbd", vdev, config.domid);
        store.write(
            &format!("{fe}/virtual-device"),
            format!("{vdev}").as_bytes(),
        );
        let bytes = config.wire_sectors.saturating_mul(WIRE_SECTOR as u64);
        let inner = Inner {
            hal: hal.state.clone(),
            disk: vec![0u8; usize::try_from(bytes).unwrap_or(0).min(1 << 30)],
            config,
            fe,
            be,
            ring: None,
            port: None,
            seen_notifications: 0,
            awake: false,
            faults: VecDeque::new(),
            held: Vec::new(),
            restore_rsp_prod: false,
            chaos: None,
            last: None,
            stats: SimStats::default(),
            connect_error: None,
            vdev,
            domain: hal.state.lock().generation,
            successor: None,
            served: None,
        };
        let backend = SimBlkback {
            inner: Rc::new(RefCell::new(inner)),
        };
        let peer = backend.clone();
        xs.transport_mut()
            .add_peer(move |st: &mut Store| peer.inner.borrow_mut().on_store(st));
        backend
    }

    /// The frontend's executor's wait: one step of this backend per park.
    pub fn parker(&self) -> SimPark {
        SimPark {
            backend: self.clone(),
            tick_ns: 1_000_000,
            parks: 0,
        }
    }

    /// Serves the ring once (if notified, or still working); returns whether anything happened.
    /// A backend that a restore left behind steps its successor instead.
    pub fn step(&self) -> bool {
        let successor = {
            let mut inner = self.inner.borrow_mut();
            if !inner.gone() {
                return inner.step();
            }
            inner.ring = None;
            inner.port = None;
            inner.successor.clone()
        };
        successor.is_some_and(|s| s.step())
    }

    /// What the toolstack does after a restore (call it after `SimState::new_domain`): a new
    /// backend for the same device, serving the same disk contents with `config` (the features
    /// may differ; a different size is the test of a disk that changed), the device's xenstore
    /// nodes made again (frontend and backend state Initialising, then InitWait). This backend
    /// is gone: it never touches the old ring again, and its parkers step the new one.
    pub fn reattach(&self, xs: &mut Client<Sim>, hal: &SimHal, config: SimConfig) -> SimBlkback {
        let (vdev, mut disk) = {
            let inner = self.inner.borrow();
            (inner.vdev, inner.disk.clone())
        };
        let bytes = config.wire_sectors.saturating_mul(WIRE_SECTOR as u64);
        disk.resize(usize::try_from(bytes).unwrap_or(0).min(1 << 30), 0);
        // The old backend's nodes go with it (its domain may differ from the new one's).
        let old_be = self.inner.borrow().be.clone();
        xs.transport_mut().store().rm(&old_be);
        let new = SimBlkback::attach(xs, hal, vdev, config);
        new.inner.borrow_mut().disk = disk;
        if self.inner.borrow().served.is_some() {
            new.record();
        }
        self.inner.borrow_mut().successor = Some(new.clone());
        new
    }

    /// Starts recording the requests served, in order (see [`served`](Self::served)); a backend
    /// attached by [`reattach`](Self::reattach) records too.
    pub fn record(&self) {
        self.inner.borrow_mut().served.get_or_insert_with(Vec::new);
    }

    /// The requests served since [`record`](Self::record), in order: (operation byte, the inner
    /// one for an indirect request; first sector, 0 for a flush or barrier).
    pub fn served(&self) -> Vec<(u8, u64)> {
        self.inner.borrow().served.clone().unwrap_or_default()
    }

    /// Changes what the backend offers from now on (e.g. to stop refusing a connection).
    pub fn configure(&self, f: impl FnOnce(&mut SimConfig)) {
        f(&mut self.inner.borrow_mut().config);
    }

    /// Queues a fault for the next request served.
    pub fn inject(&self, fault: Fault) {
        self.inner.borrow_mut().faults.push_back(fault);
    }

    /// Answers every request with pseudo-random responses (from `seed`), or normally (`None`).
    pub fn set_chaos(&self, seed: Option<u64>) {
        self.inner.borrow_mut().chaos = seed.map(|s| s | 1);
    }

    /// What the backend saw.
    pub fn stats(&self) -> SimStats {
        self.inner.borrow().stats
    }

    /// True while the ring is mapped (between Connected and Closed).
    pub fn connected(&self) -> bool {
        self.inner.borrow().ring.is_some()
    }

    /// Pages of the mapped ring.
    pub fn ring_pages(&self) -> usize {
        self.inner
            .borrow()
            .ring
            .as_ref()
            .map_or(0, |r| r.pages.len())
    }

    /// Why the backend refused the frontend's connection, if it did.
    pub fn connect_error(&self) -> Option<String> {
        self.inner.borrow().connect_error.clone()
    }

    /// Runs `f` on the disk contents.
    pub fn with_disk<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        f(&mut self.inner.borrow_mut().disk)
    }
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

impl Inner {
    // ---- xenbus -------------------------------------------------------------------------------

    /// True once a restore moved the frontend into a new domain (this backend is gone).
    fn gone(&self) -> bool {
        self.hal.lock().generation != self.domain
    }

    fn on_store(&mut self, st: &mut Store) {
        if self.gone() {
            // Its mappings died with the old domain: nothing to unmap.
            self.ring = None;
            self.port = None;
            return;
        }
        let fe = st.read_str(&format!("{}/state", self.fe));
        let be = st.read_str(&format!("{}/state", self.be));
        match (fe.as_deref(), be.as_deref()) {
            (_, Some("1")) => self.publish_features(st),
            // Linux's blkback: a frontend back in Initialising after Closed is ready to connect
            // again ("prepare for reconnect").
            (Some("1"), Some("6")) => self.publish_features(st),
            (Some("3"), Some("2")) => match self.connect(st) {
                Ok(()) => st.write(&format!("{}/state", self.be), b"4"),
                Err(e) => {
                    self.stats.frontend_errors += 1;
                    self.connect_error = Some(e);
                    st.write(&format!("{}/state", self.be), b"6");
                }
            },
            (Some("5" | "6"), Some(b)) if b != "6" => {
                self.disconnect();
                st.write(&format!("{}/state", self.be), b"6");
            }
            _ => {}
        }
    }

    fn publish_features(&mut self, st: &mut Store) {
        let be = self.be.clone();
        let c = &self.config;
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut keys: Vec<(String, String)> = vec![
            ("feature-flush-cache".into(), flag(c.flush).into()),
            ("feature-barrier".into(), flag(c.barrier).into()),
            ("feature-discard".into(), flag(c.discard).into()),
            ("feature-persistent".into(), flag(c.persistent).into()),
        ];
        if let Some(o) = c.max_ring_page_order {
            keys.push(("max-ring-page-order".into(), format!("{o}")));
        }
        if let Some(n) = c.max_indirect_segments {
            keys.push(("feature-max-indirect-segments".into(), format!("{n}")));
        }
        for (k, v) in keys {
            st.write(&format!("{be}/{k}"), v.as_bytes());
        }
        st.write(&format!("{be}/state"), b"2");
    }

    fn connect(&mut self, st: &mut Store) -> Result<(), String> {
        let fe = self.fe.clone();
        let read = |k: &str| st.read_str(&format!("{fe}/{k}"));
        let num = |k: &str| -> Result<u32, String> {
            read(k)
                .and_then(|v| v.parse().ok())
                .ok_or(format!("frontend {k} missing or not a number"))
        };
        let order = match read("ring-page-order") {
            Some(v) => v.parse::<u32>().map_err(|_| "bad ring-page-order")?,
            None => 0,
        };
        if order > self.config.max_ring_page_order.unwrap_or(0) {
            return Err(format!("ring-page-order {order} was not offered"));
        }
        let grefs: Vec<u32> = if order == 0 {
            vec![num("ring-ref")?]
        } else {
            if read("ring-ref").is_some() {
                return Err("ring-ref written with a multi-page ring".into());
            }
            (0..1u32 << order)
                .map(|i| num(&format!("ring-ref{i}")))
                .collect::<Result<_, _>>()?
        };
        let port = num("event-channel")?;
        if read("protocol").as_deref() != Some(wire::PROTOCOL) {
            return Err("protocol is not x86_64-abi".into());
        }
        let mut pages = Vec::new();
        {
            let mut hal = self.hal.lock();
            for &g in &grefs {
                match hal.map_grant(g, self.config.domid) {
                    Some((mem, false)) => pages.push(mem),
                    Some((_, true)) => {
                        hal.unmap_grant(g);
                        grefs
                            .iter()
                            .take(pages.len())
                            .for_each(|&g| hal.unmap_grant(g));
                        return Err(format!("ring grant {g} is read-only"));
                    }
                    None => {
                        grefs
                            .iter()
                            .take(pages.len())
                            .for_each(|&g| hal.unmap_grant(g));
                        return Err(format!("ring grant {g} does not map"));
                    }
                }
            }
        }
        self.ring = Some(PagedRing {
            size: ring_size(pages.len() * PAGE_SIZE, ENTRY_LEN),
            pages,
            grefs,
            req_cons: 0,
            rsp_prod_pvt: 0,
        });
        self.port = Some(port);
        self.seen_notifications = self.hal.lock().notifications.len();
        let be = self.be.clone();
        let c = &self.config;
        let mut keys: Vec<(String, String)> = vec![
            ("sectors".into(), format!("{}", c.wire_sectors)),
            ("sector-size".into(), format!("{}", c.sector_size)),
            ("info".into(), format!("{}", c.info)),
        ];
        for (k, v) in &c.overrides {
            keys.retain(|(key, _)| key != k);
            keys.push((k.clone(), v.clone()));
        }
        for (k, v) in keys {
            st.write(&format!("{be}/{k}"), v.as_bytes());
        }
        Ok(())
    }

    fn disconnect(&mut self) {
        if let Some(ring) = self.ring.take() {
            let mut hal = self.hal.lock();
            for g in ring.grefs {
                hal.unmap_grant(g);
            }
        }
        self.port = None;
    }

    // ---- The ring -----------------------------------------------------------------------------

    fn step(&mut self) -> bool {
        let Some(port) = self.port else {
            return false;
        };
        let mut progress = false;
        if self.restore_rsp_prod {
            self.restore_rsp_prod = false;
            if let Some(r) = self.ring.as_mut() {
                r.push_responses();
            }
            progress = true;
        }
        // Held responses age one step.
        let mut due = Vec::new();
        self.held.retain_mut(|h| {
            h.steps = h.steps.saturating_sub(1);
            if h.steps == 0 {
                due.push(h.rsp);
                false
            } else {
                true
            }
        });
        if !due.is_empty() {
            if let Some(r) = self.ring.as_mut() {
                due.iter().for_each(|rsp| r.queue_response(rsp));
                r.push_responses();
            }
            progress = true;
        }
        // Notifications wake us.
        {
            let hal = self.hal.lock();
            let new = &hal.notifications[self.seen_notifications.min(hal.notifications.len())..];
            let n = new.iter().filter(|&&p| p == port).count();
            self.seen_notifications = hal.notifications.len();
            drop(hal);
            if n > 0 {
                self.stats.notifications += n as u64;
                self.awake = true;
            }
        }
        while self.awake {
            let Some(ring) = self.ring.as_mut() else {
                break;
            };
            let req = match ring.take_request() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    if !ring.final_check_for_requests() {
                        self.awake = false;
                    }
                    continue;
                }
                Err(()) => {
                    self.stats.frontend_errors += 1;
                    self.awake = false;
                    break;
                }
            };
            progress = true;
            self.serve(&req);
        }
        progress
    }

    /// Serves one request image, faults and chaos applied.
    fn serve(&mut self, image: &[u8; REQUEST_LEN]) {
        self.stats.requests += 1;
        if let Some(log) = self.served.as_mut() {
            let sector = u64::from_le_bytes(image[16..24].try_into().unwrap_or_default());
            // An indirect request is logged as its inner operation.
            let op = if image[0] == Op::Indirect as u8 {
                image[1]
            } else {
                image[0]
            };
            log.push((op, sector));
        }
        let (id, op_byte, mut status) = match Request::parse(image) {
            // Like Linux's blkback, an indirect request is answered with its inner operation.
            Ok(Request::Indirect(r)) => (r.id, r.op as u8, self.execute(&Request::Indirect(r))),
            Ok(req) => (req.id(), req.operation() as u8, self.execute(&req)),
            Err(_) => {
                self.stats.frontend_errors += 1;
                let id = u64::from_le_bytes(image[8..16].try_into().unwrap_or_default());
                (id, image[0], status::ERROR)
            }
        };
        let fault = self.faults.pop_front();
        if let Some(Fault::IoError) = fault {
            status = status::ERROR;
        }
        if let Some(Fault::NotSupported) = fault {
            status = status::EOPNOTSUPP;
        }
        let mut rsp = Response {
            id,
            operation: op_byte,
            status,
        };
        match fault {
            Some(Fault::WrongId) => rsp.id ^= 0x5a5a_0000_0000_0077,
            Some(Fault::WrongOperation) => rsp.operation = op_byte.wrapping_add(1) % 7,
            Some(Fault::Status(s)) => rsp.status = s,
            _ => {}
        }
        if let Some(seed) = self.chaos.as_mut() {
            let r = xorshift(seed);
            match r % 8 {
                0 => rsp.id = xorshift(seed),
                1 => rsp.operation = xorshift(seed) as u8,
                2 => rsp.status = xorshift(seed) as i16,
                3 => rsp.status = status::ERROR,
                4 => rsp.id ^= 1 << (xorshift(seed) % 64),
                _ => {}
            }
            match (r >> 8) % 16 {
                0 => return, // dropped
                1 => {
                    self.held.push(Held {
                        steps: (r >> 16) as u32 % 5 + 1,
                        rsp,
                    });
                    return;
                }
                2 => {
                    if let Some(ring) = self.ring.as_mut() {
                        ring.queue_response(&rsp);
                        ring.store(RSP_PROD, xorshift(seed) as u32);
                        self.restore_rsp_prod = true;
                    }
                    return;
                }
                3 => {
                    if let Some(ring) = self.ring.as_mut() {
                        ring.queue_response(&rsp);
                        let junk = Response {
                            id: xorshift(seed),
                            operation: xorshift(seed) as u8,
                            status: xorshift(seed) as i16,
                        };
                        ring.queue_response(&junk);
                        ring.push_responses();
                    }
                    return;
                }
                _ => {}
            }
        }
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        match fault {
            Some(Fault::Drop) => {}
            Some(Fault::Duplicate) => {
                if let Some(last) = self.last {
                    ring.queue_response(&last);
                    ring.push_responses();
                }
                return;
            }
            Some(Fault::Delay(n)) => self.held.push(Held { steps: n, rsp }),
            Some(Fault::GarbageRspProd) => {
                ring.queue_response(&rsp);
                ring.store(RSP_PROD, ring.rsp_prod_pvt.wrapping_add(0x8000_0000));
                self.restore_rsp_prod = true;
            }
            Some(Fault::Unsolicited) => {
                ring.queue_response(&rsp);
                ring.queue_response(&rsp);
                ring.push_responses();
            }
            _ => {
                ring.queue_response(&rsp);
                ring.push_responses();
            }
        }
        self.last = Some(rsp);
    }

    /// Does a well-formed request against the disk; returns its status.
    fn execute(&mut self, req: &Request) -> i16 {
        let read_only = self.config.info & wire::VDISK_READONLY != 0;
        match req {
            Request::Rw(r) => match r.op {
                Op::Read | Op::Write => {
                    if r.nr_segments == 0 {
                        self.stats.frontend_errors += 1;
                        return status::ERROR;
                    }
                    let segs = r.segments().to_vec();
                    self.rw(r.op, r.sector, &segs, read_only)
                }
                Op::FlushDiskcache => {
                    self.stats.flushes += 1;
                    if self.config.flush {
                        status::OKAY
                    } else {
                        status::EOPNOTSUPP
                    }
                }
                Op::WriteBarrier => {
                    self.stats.barriers += 1;
                    if !self.config.barrier {
                        return status::EOPNOTSUPP;
                    }
                    if read_only {
                        self.stats.frontend_errors += 1;
                        return status::ERROR;
                    }
                    if r.nr_segments == 0 {
                        status::OKAY
                    } else {
                        let segs = r.segments().to_vec();
                        self.rw(Op::Write, r.sector, &segs, read_only)
                    }
                }
                _ => status::ERROR,
            },
            Request::Discard(d) => {
                self.stats.discards += 1;
                if !self.config.discard {
                    return status::EOPNOTSUPP;
                }
                if read_only {
                    self.stats.frontend_errors += 1;
                    return status::ERROR;
                }
                let Some(range) = self.range(d.sector, d.nr_sectors) else {
                    self.stats.frontend_errors += 1;
                    return status::ERROR;
                };
                self.disk[range].fill(0);
                status::OKAY
            }
            Request::Indirect(i) => {
                self.stats.indirect += 1;
                let max = self.config.max_indirect_segments.unwrap_or(0) as usize;
                let n = i.nr_segments as usize;
                if max == 0 || n == 0 || n > max {
                    self.stats.frontend_errors += 1;
                    return status::ERROR;
                }
                let mut segs = Vec::with_capacity(n);
                let mut hal = self.hal.lock();
                for p in 0..i.pages() {
                    let g = i.indirect_grefs[p];
                    let Some((mem, _)) = hal.map_grant(g, self.config.domid) else {
                        self.stats.frontend_errors += 1;
                        return status::ERROR;
                    };
                    let here = (n - p * SEGMENTS_PER_INDIRECT_PAGE).min(SEGMENTS_PER_INDIRECT_PAGE);
                    for k in 0..here {
                        let mut b = [0u8; SEGMENT_LEN];
                        let _ = mem.read(k * SEGMENT_LEN, &mut b);
                        segs.push(Segment::parse(&b));
                    }
                    hal.unmap_grant(g);
                }
                drop(hal);
                self.rw(i.op, i.sector, &segs, read_only)
            }
        }
    }

    /// The disk bytes of `count` wire sectors at `sector`, if inside the disk.
    fn range(&self, sector: u64, count: u64) -> Option<core::ops::Range<usize>> {
        let start = usize::try_from(sector.checked_mul(WIRE_SECTOR as u64)?).ok()?;
        let len = usize::try_from(count.checked_mul(WIRE_SECTOR as u64)?).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.disk.len()).then_some(start..end)
    }

    /// A read or write of `segs` starting at wire sector `sector`, as blkback checks it: valid
    /// segments, grants that map, aligned to the logical sector size, inside the disk.
    fn rw(&mut self, op: Op, sector: u64, segs: &[Segment], read_only: bool) -> i16 {
        match op {
            Op::Read => self.stats.reads += 1,
            _ => self.stats.writes += 1,
        }
        self.stats.max_segments = self.stats.max_segments.max(segs.len());
        if op == Op::Write && read_only {
            self.stats.frontend_errors += 1;
            return status::ERROR;
        }
        let per = u64::from(self.config.sector_size / WIRE_SECTOR as u32).max(1);
        let total: u64 = segs
            .iter()
            .map(|s| u64::from(s.last_sect) + 1 - u64::from(s.first_sect.min(s.last_sect)))
            .sum();
        let aligned = sector.is_multiple_of(per)
            && segs.iter().all(|s| {
                s.is_valid()
                    && u64::from(s.first_sect) % per == 0
                    && (s.len() as u64 / 512).is_multiple_of(per)
            });
        let Some(range) = self.range(sector, total).filter(|_| aligned) else {
            self.stats.frontend_errors += 1;
            return status::ERROR;
        };
        let mut at = range.start;
        let mut hal = self.hal.lock();
        for s in segs {
            let Some((mem, ro)) = hal.map_grant(s.gref, self.config.domid) else {
                self.stats.frontend_errors += 1;
                return status::ERROR;
            };
            let off = s.first_sect as usize * WIRE_SECTOR;
            let n = s.len();
            let ok = match op {
                Op::Read if ro => false,
                Op::Read => mem.write(off, &self.disk[at..at + n]).is_ok(),
                _ => mem.read(off, &mut self.disk[at..at + n]).is_ok(),
            };
            hal.unmap_grant(s.gref);
            if !ok {
                self.stats.frontend_errors += 1;
                return status::ERROR;
            }
            at += n;
        }
        status::OKAY
    }
}
