//! The block frontend: connect to a blkback through xenbus, then move sectors over the shared
//! ring, checking every response.
//!
//! [`Blkfront::connect`] reads as the protocol:
//!
//! 1. attach to the device node (its `backend`, `backend-id`) and wait for the backend to reach
//!    InitWait, when it has published its transport parameters;
//! 2. read `max-ring-page-order` (or the older `max-ring-pages`) and
//!    `feature-max-indirect-segments`;
//! 3. allocate and grant the ring pages (several when offered and the platform can map them
//!    contiguously, one otherwise), an event channel, and a pool of data pages (plus the indirect
//!    descriptor pages their requests need) granted once for the life of the connection (so we
//!    are a persistent-grants frontend);
//! 4. in one transaction write `ring-ref` (or `ring-page-order`, `num-ring-pages`,
//!    `ring-ref0..N`), `event-channel`, `protocol = x86_64-abi`, `feature-persistent = 1` and
//!    state Initialised; wait for Connected; state Connected;
//! 5. read and validate the disk: `sectors`, `info`, `sector-size`, and the optional features
//!    `feature-flush-cache`, `feature-barrier`, `feature-discard`.
//!
//! I/O copies between the caller's buffers and the granted pool pages (no caller memory is ever
//! granted), a word at a time. A transfer is split into requests of at most 11 pages, or of up to
//! the negotiated number of segments with indirect descriptor pages when the backend offers them,
//! and as many requests as free ring slots and pool pages allow are kept in flight. Each request
//! is made visible to the backend as soon as it is queued, so the backend starts on the first
//! while the next is being filled.
//!
//! # Policy towards the backend
//!
//! Nothing the backend writes can panic the driver. Every response is copied out once and
//! checked: its id must name a request in flight (slot and generation), its operation must be
//! that request's, its status one of the three blkif codes. Error statuses become [`Error::Io`]
//! and [`Error::Unsupported`] (and an EOPNOTSUPP for flush, barrier or discard turns that feature
//! off, as Linux does). Protocol violations are [`Error::Backend`] and are counted in
//! [`Stats::bad_responses`]:
//!
//! - a response with an unknown id, or a response producer index out of range, ends the current
//!   operation at once; its requests still in flight keep their slots and pages until the
//!   backend answers them (if ever), so later operations run with what is left;
//! - a response with the wrong operation or an unknown status completes its request as failed.
//!
//! A backend that never answers makes operations fail with [`Error::TimedOut`] after
//! [`Config::io_timeout_ns`], with the same rule for what was in flight. A response index that
//! stays skewed (the backend answered requests we never made) cannot be recovered without
//! reconnecting: operations then keep failing with [`Error::Backend`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;

use xen::hal::{Hal, HalError, SharedPage};
use xen::ring::{FrontRing, RingError};
use xen::shmem::{OutOfBounds, ShMem};
use xen::xenbus::{Frontend, Timeout, XenbusError, XenbusState};
use xen::xenstore::{Client, Transport, Tx};

use crate::wire::{
    self, status, DiscardRequest, IndirectRequest, Op, Request, Response, RwRequest, Segment,
    MAX_SEGMENTS, PAGE_SIZE, SEGMENTS_PER_INDIRECT_PAGE, SEGMENT_LEN, WIRE_SECTOR,
};

/// Largest ring we ask for: 2^4 pages (Linux's `XENBUS_MAX_RING_GRANT_ORDER`).
pub const MAX_RING_PAGE_ORDER: u32 = 4;

/// Largest data pool (pages are numbered with `u16`, descriptor pages after the data pages).
const MAX_DATA_PAGES: usize = 1 << 15;

/// Indirect descriptor pages granted next to a pool of `data_pages` used in requests of at most
/// `per_request` segments: enough for every request the pool can have in flight at full size,
/// plus one more for a transfer's partial head or tail. None when requests stay direct. Should
/// they run out (many small indirect requests), requests fall back to direct ones.
pub(crate) fn descriptor_pages(data_pages: usize, per_request: usize) -> usize {
    if per_request <= MAX_SEGMENTS {
        return 0;
    }
    let per = per_request.div_ceil(SEGMENTS_PER_INDIRECT_PAGE);
    (data_pages.div_ceil(per_request) + 1) * per
}

/// The next request of a transfer with `pages` pages left: `(segments, descriptor pages)`, at
/// most `per_request` segments, within the free data pages and descriptor pages. Indirect
/// (descriptor pages > 0) only when more than [`MAX_SEGMENTS`] segments go and their descriptor
/// pages are free; otherwise a direct request of up to [`MAX_SEGMENTS`]. `(0, 0)`: wait.
pub(crate) fn request_shape(
    pages: usize,
    per_request: usize,
    free_data: usize,
    free_desc: usize,
) -> (usize, usize) {
    let segs = pages.min(per_request).min(free_data);
    if segs <= MAX_SEGMENTS {
        return (segs, 0);
    }
    let desc = segs.div_ceil(SEGMENTS_PER_INDIRECT_PAGE);
    if desc <= free_desc {
        (segs, desc)
    } else {
        (MAX_SEGMENTS, 0)
    }
}

/// Copies `src` into shared memory from offset 0, eight bytes per access (`ShMem::write` moves
/// one byte per access, which costs several times as much on a 1 MiB transfer).
fn copy_to_shared(mem: &ShMem, src: &[u8]) -> Result<(), OutOfBounds> {
    let mut words = src.chunks_exact(8);
    let mut off = 0;
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        mem.store_u64(off, u64::from_le_bytes(b), Ordering::Relaxed)?;
        off += 8;
    }
    mem.write(off, words.remainder())
}

/// Copies shared memory from offset 0 into `dst`, eight bytes per access.
fn copy_from_shared(mem: &ShMem, dst: &mut [u8]) -> Result<(), OutOfBounds> {
    let mut words = dst.chunks_exact_mut(8);
    let mut off = 0;
    for w in &mut words {
        w.copy_from_slice(&mem.load_u64(off, Ordering::Relaxed)?.to_le_bytes());
        off += 8;
    }
    mem.read(off, words.into_remainder())
}

/// Tunables of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest ring we use, as log2(pages); capped by the backend and [`MAX_RING_PAGE_ORDER`].
    pub max_ring_page_order: u32,
    /// Data pages granted to the backend for the life of the connection (bounce buffers); they
    /// bound the bytes in flight. At least 2. Indirect descriptor pages come on top (see
    /// [`descriptor_pages`]), so a pool of 256 moves a 1 MiB transfer in one go.
    pub data_pages: usize,
    /// Most segments per indirect request (0: never use indirect requests); also capped by the
    /// backend's `feature-max-indirect-segments` and by the pool.
    pub max_indirect_segments: usize,
    /// How long an operation may wait for the backend.
    pub io_timeout_ns: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_ring_page_order: 2,
            data_pages: 256,
            // Linux's blkback offers 256: a 1 MiB transfer is then one request.
            max_indirect_segments: 256,
            io_timeout_ns: 30_000_000_000,
        }
    }
}

/// What the connection supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// `BLKIF_OP_FLUSH_DISKCACHE` offered (and not refused since).
    pub flush: bool,
    /// `BLKIF_OP_WRITE_BARRIER` offered (and not refused since).
    pub barrier: bool,
    /// `BLKIF_OP_DISCARD` offered (and not refused since).
    pub discard: bool,
    /// The backend keeps our (always persistent) grants mapped.
    pub persistent: bool,
    /// The backend's `feature-max-indirect-segments` (0: no indirect requests).
    pub backend_indirect_segments: u32,
    /// Ring pages in use.
    pub ring_pages: u32,
    /// Most pages one request of ours carries.
    pub segments_per_request: usize,
}

/// Counters, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Requests put on the ring.
    pub requests: u64,
    /// Requests sent in indirect form.
    pub indirect_requests: u64,
    /// Responses consumed.
    pub responses: u64,
    /// Responses (or ring indices) that broke the protocol.
    pub bad_responses: u64,
    /// `BLKIF_RSP_ERROR` responses.
    pub io_errors: u64,
    /// `BLKIF_RSP_EOPNOTSUPP` responses.
    pub unsupported: u64,
    /// Operations that gave up waiting.
    pub timeouts: u64,
    /// Responses to requests whose operation had already given up.
    pub late_responses: u64,
}

/// How the driver waits for the backend.
///
/// On Xen: block the vCPU until an event arrives on `port` or the monotonic clock reaches
/// `deadline_ns` (spurious returns are fine: the driver re-checks the ring and the clock). On the
/// host, [`crate::sim::SimWait`] runs the simulated backend instead. Closures `FnMut(u32, u64)`
/// are waits.
pub trait Wait {
    /// Waits until the backend may have responded, or `deadline_ns` passed.
    fn wait(&mut self, port: u32, deadline_ns: u64);
}

impl<F: FnMut(u32, u64)> Wait for F {
    fn wait(&mut self, port: u32, deadline_ns: u64) {
        self(port, deadline_ns)
    }
}

/// A protocol violation by the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// The response producer index is ahead of what we requested (or more than a ring ahead).
    BadResponseIndex {
        /// Published index.
        rsp_prod: u32,
        /// Our consumer index.
        rsp_cons: u32,
    },
    /// A response whose id names no request in flight.
    UnknownId(u64),
    /// A response whose operation is not its request's.
    WrongOperation {
        /// The request's operation byte.
        expected: u8,
        /// The response's.
        got: u8,
    },
    /// A status that is no `BLKIF_RSP_*` code.
    BadStatus(i16),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::BadResponseIndex { rsp_prod, rsp_cons } => write!(
                f,
                "response index {rsp_prod} out of range (consumed up to {rsp_cons})"
            ),
            BackendError::UnknownId(id) => write!(f, "response for unknown request id {id:#x}"),
            BackendError::WrongOperation { expected, got } => {
                write!(
                    f,
                    "response operation {got} for a request of operation {expected}"
                )
            }
            BackendError::BadStatus(s) => write!(f, "response status {s} is no blkif status"),
        }
    }
}

/// Everything a block operation or the connection can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The byte range is not inside the disk.
    OutOfRange {
        /// Start of the range, in bytes.
        offset: u64,
        /// Its length, in bytes.
        len: u64,
        /// The disk's size, in bytes.
        capacity: u64,
    },
    /// A block operation on a range not aligned to the sector size.
    Unaligned {
        /// Start of the range, in bytes.
        offset: u64,
        /// Its length, in bytes.
        len: u64,
        /// The disk's logical sector size.
        sector_size: u32,
    },
    /// The disk is read-only (refused before touching the ring).
    ReadOnly,
    /// The backend reported an I/O error (`BLKIF_RSP_ERROR`).
    Io {
        /// The failed operation.
        op: Op,
        /// The first wire (512-byte) sector of the failed request.
        sector: u64,
    },
    /// The backend does not support this operation (not offered, or `BLKIF_RSP_EOPNOTSUPP`).
    Unsupported(Op),
    /// The backend broke the protocol.
    Backend(BackendError),
    /// The backend did not answer within [`Config::io_timeout_ns`].
    TimedOut,
    /// The device was disconnected.
    Disconnected,
    /// A backend node holds a value we cannot use.
    BadBackendNode {
        /// The node, relative to the backend directory.
        key: &'static str,
        /// Its value (first bytes).
        value: String,
    },
    /// The xenbus handshake failed.
    Xenbus(XenbusError),
    /// There is no xenstore to find or connect the disk through (dom0 without xenstored).
    NoXenstore,
    /// The platform refused a page, grant or event channel.
    Hal(HalError),
    /// A ring access outside the ring memory (a driver bug).
    Memory(OutOfBounds),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutOfRange {
                offset,
                len,
                capacity,
            } => write!(
                f,
                "{len} bytes at offset {offset} are outside the {capacity}-byte disk"
            ),
            Error::Unaligned {
                offset,
                len,
                sector_size,
            } => write!(
                f,
                "{len} bytes at offset {offset} are not aligned to {sector_size}-byte sectors"
            ),
            Error::ReadOnly => f.write_str("the disk is read-only"),
            Error::Io { op, sector } => write!(f, "{op} I/O error at sector {sector}"),
            Error::Unsupported(op) => write!(f, "the backend does not support {op}"),
            Error::Backend(e) => write!(f, "backend protocol error: {e}"),
            Error::TimedOut => f.write_str("timed out waiting for the backend"),
            Error::Disconnected => f.write_str("the disk is disconnected"),
            Error::BadBackendNode { key, value } => {
                write!(f, "backend node {key} holds an unusable value {value:?}")
            }
            Error::Xenbus(e) => write!(f, "xenbus: {e}"),
            Error::NoXenstore => f.write_str("no xenstore to find the disk through"),
            Error::Hal(e) => write!(f, "platform: {e}"),
            Error::Memory(e) => write!(f, "ring memory: {e}"),
        }
    }
}

impl From<XenbusError> for Error {
    fn from(e: XenbusError) -> Self {
        Error::Xenbus(e)
    }
}

impl From<HalError> for Error {
    fn from(e: HalError) -> Self {
        Error::Hal(e)
    }
}

impl From<OutOfBounds> for Error {
    fn from(e: OutOfBounds) -> Self {
        Error::Memory(e)
    }
}

impl From<RingError> for Error {
    fn from(e: RingError) -> Self {
        match e {
            RingError::BadResponseIndex {
                rsp_prod, rsp_cons, ..
            } => Error::Backend(BackendError::BadResponseIndex { rsp_prod, rsp_cons }),
            RingError::Memory(m) => Error::Memory(m),
            // We never queue without checking for room first.
            RingError::Full => Error::Memory(OutOfBounds {
                offset: 0,
                len: 0,
                size: 0,
            }),
        }
    }
}

/// A granted page of the data pool.
#[derive(Debug)]
struct Page {
    mem: ShMem,
    mfn: u64,
    gref: u32,
}

/// What a transfer moves.
enum Buf<'a> {
    None,
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Buf<'_> {
    fn len(&self) -> usize {
        match self {
            Buf::None => 0,
            Buf::Read(b) => b.len(),
            Buf::Write(b) => b.len(),
        }
    }
}

/// A request on the ring.
#[derive(Debug)]
struct Pending {
    id: u64,
    /// The operation byte sent (the response must echo it).
    wire_op: u8,
    /// What it does, for errors.
    op: Op,
    sector: u64,
    transfer: u64,
    /// Bytes of the transfer's buffer it covers.
    buf_off: usize,
    len: usize,
    pages: Vec<u16>,
    indirect: Vec<u16>,
}

/// Progress of the current transfer.
#[derive(Default)]
struct Progress {
    outstanding: usize,
    error: Option<Error>,
}

/// A connected block device.
///
/// ```
/// use blkfront::{Blkfront, Config};
/// use blkfront::sim::{SimBlkback, SimConfig};
/// use xen::hal::SimHal;
/// use xen::xenbus::Never;
/// use xen::xenstore::sim::Sim;
///
/// // A simulated xenstore and a simulated 1 MiB disk behind vbd 768.
/// let mut xs = Sim::client(1);
/// let hal = SimHal::new();
/// let backend = SimBlkback::attach(&mut xs, &hal, 768, SimConfig::disk(1 << 20));
///
/// let mut disk = Blkfront::connect(hal, backend.waiter(), &mut xs, "device/vbd/768",
///                                  Config::default(), &mut Never)?;
/// assert_eq!((disk.capacity(), disk.sector_size()), (1 << 20, 512));
/// disk.write(1000, b"hello, disk")?;            // any byte range
/// let mut back = [0u8; 11];
/// disk.read(1000, &mut back)?;
/// assert_eq!(&back, b"hello, disk");
/// disk.flush()?;
/// disk.disconnect(&mut xs, &mut Never)?;
/// # Ok::<(), blkfront::Error>(())
/// ```
pub struct Blkfront<H: Hal, W: Wait> {
    hal: H,
    wait: W,
    fe: Frontend,
    connected: bool,
    ring: FrontRing,
    ring_pages: Vec<(u64, u32)>,
    port: u32,
    /// The data pool, then the indirect descriptor pages.
    pages: Vec<Page>,
    free_pages: Vec<u16>,
    free_desc: Vec<u16>,
    slots: Vec<Option<Pending>>,
    free_slots: Vec<u32>,
    generation: u32,
    handle: u16,
    /// Capacity in wire sectors.
    wire_sectors: u64,
    sector_size: u32,
    info: u32,
    features: Features,
    stats: Stats,
    next_transfer: u64,
    timeout_ns: u64,
}

/// Pages, grants and the event channel, while the connection is being set up.
struct Resources {
    ring: Option<FrontRing>,
    ring_mem: Option<ShMem>,
    ring_pages: Vec<(u64, u32)>,
    port: Option<u32>,
    pages: Vec<Page>,
}

impl Resources {
    /// Ends the grants and frees what the backend no longer maps; a page whose grant the backend
    /// still holds is leaked rather than reused.
    fn release<H: Hal>(self, hal: &mut H) {
        if let Some(port) = self.port {
            hal.close_evtchn(port);
        }
        let ring_mem = self
            .ring
            .as_ref()
            .map(|r| r.mem().clone())
            .or(self.ring_mem);
        for (i, (mfn, gref)) in self.ring_pages.into_iter().enumerate() {
            if hal.end_grant(gref).is_ok() {
                if let Some(mem) = ring_mem
                    .as_ref()
                    .and_then(|m| m.slice(i * PAGE_SIZE, PAGE_SIZE).ok())
                {
                    hal.free_page(SharedPage { mem, mfn });
                }
            }
        }
        for p in self.pages {
            if hal.end_grant(p.gref).is_ok() {
                hal.free_page(SharedPage {
                    mem: p.mem,
                    mfn: p.mfn,
                });
            }
        }
    }
}

/// A backend node as an unsigned number, if present; `Err` when present but not a number.
fn read_number<T: Transport>(
    fe: &Frontend,
    xs: &mut Client<T>,
    key: &'static str,
) -> Result<Option<u64>, Error> {
    let v = match fe.read_backend(xs, key) {
        Ok(v) => v,
        Err(XenbusError::Store(xen::xenstore::Error::Xs(xen::xenstore::XsErrno::Enoent))) => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    let t = v.trim_end_matches('\0').trim();
    if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_node(key, &v));
    }
    t.parse().map(Some).map_err(|_| bad_node(key, &v))
}

fn bad_node(key: &'static str, value: &str) -> Error {
    Error::BadBackendNode {
        key,
        value: value.chars().take(32).collect(),
    }
}

/// An optional boolean feature: absent or unreadable means not offered.
fn read_feature<T: Transport>(fe: &Frontend, xs: &mut Client<T>, key: &'static str) -> bool {
    match read_number(fe, xs, key) {
        Ok(v) => v == Some(1),
        Err(e) => {
            log::warn!("blkfront: ignoring {key}: {e}");
            false
        }
    }
}

impl<H: Hal, W: Wait> Blkfront<H, W> {
    /// Connects to the disk at `node` (e.g. `device/vbd/768`), waiting for the backend with
    /// `timeout`. On failure everything allocated is released and the frontend closed.
    pub fn connect<T: Transport>(
        mut hal: H,
        wait: W,
        xs: &mut Client<T>,
        node: &str,
        config: Config,
        timeout: &mut impl Timeout,
    ) -> Result<Self, Error> {
        // 1. The backend, and its transport parameters.
        let mut fe = Frontend::attach(xs, node)?;
        let mut res = Resources {
            ring: None,
            ring_mem: None,
            ring_pages: Vec::new(),
            port: None,
            pages: Vec::new(),
        };
        match Self::setup(&mut hal, xs, &mut fe, &mut res, config, timeout) {
            Ok(mut disk_params) => {
                // `setup` succeeded, so it made the ring.
                let Some(ring) = res.ring.take() else {
                    res.release(&mut hal);
                    return Err(Error::Hal(HalError::OutOfMemory));
                };
                let slots = ring.size() as usize;
                disk_params.features.ring_pages = res.ring_pages.len() as u32;
                let npages = res.pages.len();
                let ndata = disk_params.data_pages.min(npages);
                Ok(Blkfront {
                    hal,
                    wait,
                    fe,
                    connected: true,
                    ring,
                    ring_pages: core::mem::take(&mut res.ring_pages),
                    port: res.port.unwrap_or_default(),
                    pages: core::mem::take(&mut res.pages),
                    free_pages: (0..ndata as u16).rev().collect(),
                    free_desc: (ndata as u16..npages as u16).rev().collect(),
                    slots: (0..slots).map(|_| None).collect(),
                    free_slots: (0..slots as u32).rev().collect(),
                    generation: 1,
                    handle: disk_params.handle,
                    wire_sectors: disk_params.wire_sectors,
                    sector_size: disk_params.sector_size,
                    info: disk_params.info,
                    features: disk_params.features,
                    stats: Stats::default(),
                    next_transfer: 1,
                    timeout_ns: config.io_timeout_ns,
                })
            }
            Err(e) => {
                let _ = fe.close(xs, timeout);
                res.release(&mut hal);
                Err(e)
            }
        }
    }

    /// Steps 1-5 of the handshake (see the module documentation).
    fn setup<T: Transport>(
        hal: &mut H,
        xs: &mut Client<T>,
        fe: &mut Frontend,
        res: &mut Resources,
        config: Config,
        timeout: &mut impl Timeout,
    ) -> Result<DiskParams, Error> {
        let backend = fe.backend_id();
        fe.wait_for_backend(xs, XenbusState::InitWait, timeout)?;

        // 2. Transport parameters the backend offers.
        let max_order = match read_number(fe, xs, "max-ring-page-order") {
            Ok(Some(o)) => o.min(u32::MAX.into()) as u32,
            Ok(None) => match read_number(fe, xs, "max-ring-pages") {
                Ok(Some(n)) if n.is_power_of_two() => n.trailing_zeros(),
                _ => 0,
            },
            Err(e) => {
                log::warn!("blkfront: ignoring max-ring-page-order: {e}");
                0
            }
        };
        let order = max_order
            .min(config.max_ring_page_order)
            .min(MAX_RING_PAGE_ORDER);
        let backend_indirect = match read_number(fe, xs, "feature-max-indirect-segments") {
            Ok(v) => v.unwrap_or(0).min(u32::MAX.into()) as u32,
            Err(e) => {
                log::warn!("blkfront: ignoring feature-max-indirect-segments: {e}");
                0
            }
        };

        // 3. Ring pages (several if we can), event channel, data pool.
        let (ring_mem, mfns) = match hal.alloc_pages(1 << order) {
            Ok(r) => r,
            Err(_) if order > 0 => hal.alloc_pages(1)?,
            Err(e) => return Err(e.into()),
        };
        res.ring_mem = Some(ring_mem.clone());
        for mfn in mfns {
            let gref = match hal.grant(backend, mfn, false) {
                Ok(g) => g,
                Err(e) => {
                    // Free this page here; `release` frees the granted ones.
                    let i = res.ring_pages.len();
                    if let Ok(mem) = ring_mem.slice(i * PAGE_SIZE, PAGE_SIZE) {
                        hal.free_page(SharedPage { mem, mfn });
                    }
                    return Err(e.into());
                }
            };
            res.ring_pages.push((mfn, gref));
        }
        let ring = FrontRing::new(ring_mem, wire::ENTRY_LEN)?;
        res.ring = Some(ring);
        res.port = Some(hal.alloc_evtchn(backend)?);
        let data_pages = config.data_pages.clamp(2, MAX_DATA_PAGES);
        let indirect_max = (backend_indirect as usize)
            .min(config.max_indirect_segments)
            .min(wire::MAX_INDIRECT_PAGES * SEGMENTS_PER_INDIRECT_PAGE);
        let per_request = indirect_max.max(MAX_SEGMENTS).min(data_pages);
        for _ in 0..data_pages + descriptor_pages(data_pages, per_request) {
            let page = hal.alloc_page()?;
            let gref = match hal.grant(backend, page.mfn, false) {
                Ok(g) => g,
                Err(e) => {
                    hal.free_page(page);
                    return Err(e.into());
                }
            };
            res.pages.push(Page {
                mem: page.mem,
                mfn: page.mfn,
                gref,
            });
        }

        // 4. Publish, and wait for the backend to connect.
        let mut keys: Vec<(String, String)> = Vec::new();
        if res.ring_pages.len() == 1 {
            keys.push(("ring-ref".into(), format!("{}", res.ring_pages[0].1)));
        } else {
            let n = res.ring_pages.len();
            keys.push(("ring-page-order".into(), format!("{}", n.trailing_zeros())));
            keys.push(("num-ring-pages".into(), format!("{n}")));
            for (i, (_, gref)) in res.ring_pages.iter().enumerate() {
                keys.push((format!("ring-ref{i}"), format!("{gref}")));
            }
        }
        keys.push((
            "event-channel".into(),
            format!("{}", res.port.unwrap_or_default()),
        ));
        keys.push(("protocol".into(), wire::PROTOCOL.into()));
        keys.push(("feature-persistent".into(), "1".into()));
        let key_refs: Vec<(&str, &str)> =
            keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        fe.connect(xs, &key_refs, timeout)?;

        // 5. The disk.
        let wire_sectors =
            read_number(fe, xs, "sectors")?.ok_or_else(|| bad_node("sectors", "(missing)"))?;
        let sector_size = read_number(fe, xs, "sector-size")?.unwrap_or(512);
        if !sector_size.is_power_of_two() || !(512..=PAGE_SIZE as u64).contains(&sector_size) {
            return Err(bad_node("sector-size", &format!("{sector_size}")));
        }
        let per_sector = sector_size / WIRE_SECTOR as u64;
        if wire_sectors == 0
            || wire_sectors.checked_mul(WIRE_SECTOR as u64).is_none()
            || wire_sectors % per_sector != 0
        {
            return Err(bad_node("sectors", &format!("{wire_sectors}")));
        }
        let info = read_number(fe, xs, "info")?.unwrap_or(0);
        let info = u32::try_from(info).map_err(|_| bad_node("info", &format!("{info}")))?;
        let handle = xs
            .read_string(Tx::NONE, &format!("{}/virtual-device", fe.node()))
            .ok()
            .and_then(|v| v.trim_end_matches('\0').trim().parse::<u16>().ok())
            .unwrap_or(0);

        let features = Features {
            flush: read_feature(fe, xs, "feature-flush-cache"),
            barrier: read_feature(fe, xs, "feature-barrier"),
            discard: read_feature(fe, xs, "feature-discard"),
            persistent: read_feature(fe, xs, "feature-persistent"),
            backend_indirect_segments: backend_indirect,
            ring_pages: 0,
            segments_per_request: per_request,
        };
        Ok(DiskParams {
            data_pages,
            wire_sectors,
            sector_size: sector_size as u32,
            info,
            handle,
            features,
        })
    }

    /// Closes the connection (state Closing, wait for the backend to close, state Closed) and
    /// releases the ring and the pool. Requests still in flight are dropped; pages the backend
    /// still maps are leaked rather than reused. Later operations fail with
    /// [`Error::Disconnected`].
    pub fn disconnect<T: Transport>(
        &mut self,
        xs: &mut Client<T>,
        timeout: &mut impl Timeout,
    ) -> Result<(), Error> {
        if !self.connected {
            return Err(Error::Disconnected);
        }
        self.connected = false;
        let closed = self.fe.close(xs, timeout);
        let res = Resources {
            ring: None,
            ring_mem: Some(self.ring.mem().clone()),
            ring_pages: core::mem::take(&mut self.ring_pages),
            port: Some(self.port),
            pages: core::mem::take(&mut self.pages),
        };
        res.release(&mut self.hal);
        self.free_pages.clear();
        self.free_desc.clear();
        self.slots.iter_mut().for_each(|s| *s = None);
        self.free_slots.clear();
        Ok(closed?)
    }

    /// The disk's size in bytes.
    pub fn capacity(&self) -> u64 {
        self.wire_sectors * WIRE_SECTOR as u64
    }

    /// The logical sector size in bytes (512 to 4096, a power of two): the alignment of
    /// [`read_blocks`](Self::read_blocks) and [`write_blocks`](Self::write_blocks).
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// The disk's size in logical sectors.
    pub fn sectors(&self) -> u64 {
        self.capacity() / self.sector_size as u64
    }

    /// True when the backend marked the disk read-only (`info & VDISK_READONLY`).
    pub fn read_only(&self) -> bool {
        self.info & wire::VDISK_READONLY != 0
    }

    /// The backend's `info` bits (`VDISK_*`).
    pub fn info(&self) -> u32 {
        self.info
    }

    /// What the connection supports.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The event channel shared with the backend.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// The platform (for tests and diagnostics).
    pub fn hal(&self) -> &H {
        &self.hal
    }

    /// Requests on the ring and not yet answered (including those of operations that gave up).
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    // ---- The block API ------------------------------------------------------------------------

    /// Reads `buf.len()` bytes at byte `offset` (any alignment).
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.check_range(offset, buf.len() as u64)?;
        let ss = self.sector_size as u64;
        let mut pos = offset;
        let mut done = 0usize;
        let mut bounce = alloc::vec![0u8; ss as usize];
        while done < buf.len() {
            let in_sector = (pos % ss) as usize;
            let left = buf.len() - done;
            if in_sector == 0 && left as u64 >= ss {
                let whole = left - left % ss as usize;
                self.read_blocks(pos / ss, &mut buf[done..done + whole])?;
                done += whole;
                pos += whole as u64;
            } else {
                let n = (ss as usize - in_sector).min(left);
                self.read_blocks(pos / ss, &mut bounce)?;
                buf[done..done + n].copy_from_slice(&bounce[in_sector..in_sector + n]);
                done += n;
                pos += n as u64;
            }
        }
        Ok(())
    }

    /// Writes `data` at byte `offset` (any alignment: partial sectors are read, patched and
    /// written back).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check_writable()?;
        self.check_range(offset, data.len() as u64)?;
        let ss = self.sector_size as u64;
        let mut pos = offset;
        let mut done = 0usize;
        let mut bounce = alloc::vec![0u8; ss as usize];
        while done < data.len() {
            let in_sector = (pos % ss) as usize;
            let left = data.len() - done;
            if in_sector == 0 && left as u64 >= ss {
                let whole = left - left % ss as usize;
                self.write_blocks(pos / ss, &data[done..done + whole])?;
                done += whole;
                pos += whole as u64;
            } else {
                let n = (ss as usize - in_sector).min(left);
                self.read_blocks(pos / ss, &mut bounce)?;
                bounce[in_sector..in_sector + n].copy_from_slice(&data[done..done + n]);
                self.write_blocks(pos / ss, &bounce)?;
                done += n;
                pos += n as u64;
            }
        }
        Ok(())
    }

    /// Reads whole sectors starting at logical sector `lba`; `buf.len()` must be a multiple of
    /// [`sector_size`](Self::sector_size).
    pub fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Error> {
        let wire_sector = self.check_blocks(lba, buf.len())?;
        self.transfer(Op::Read, wire_sector, Buf::Read(buf), 0)
    }

    /// Writes whole sectors starting at logical sector `lba`; `data.len()` must be a multiple of
    /// [`sector_size`](Self::sector_size).
    pub fn write_blocks(&mut self, lba: u64, data: &[u8]) -> Result<(), Error> {
        self.check_writable()?;
        let wire_sector = self.check_blocks(lba, data.len())?;
        self.transfer(Op::Write, wire_sector, Buf::Write(data), 0)
    }

    /// Makes completed writes durable: a cache flush if the backend offers it, else a write
    /// barrier if offered; a backend offering neither has no volatile cache, so this is then a
    /// no-op.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.check_connected()?;
        if self.features.flush {
            self.transfer(Op::FlushDiskcache, 0, Buf::None, 0)
        } else if self.features.barrier {
            self.transfer(Op::WriteBarrier, 0, Buf::None, 0)
        } else {
            Ok(())
        }
    }

    /// Orders writes: everything written before completes before anything written after
    /// (`BLKIF_OP_WRITE_BARRIER` with no data). [`Error::Unsupported`] if not offered.
    pub fn barrier(&mut self) -> Result<(), Error> {
        self.check_writable()?;
        if !self.features.barrier {
            return Err(Error::Unsupported(Op::WriteBarrier));
        }
        self.transfer(Op::WriteBarrier, 0, Buf::None, 0)
    }

    /// Tells the backend that `len` bytes at `offset` (both sector-aligned) are no longer in use.
    /// [`Error::Unsupported`] if not offered.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        let ss = self.sector_size as u64;
        if !offset.is_multiple_of(ss) || !len.is_multiple_of(ss) {
            return Err(Error::Unaligned {
                offset,
                len,
                sector_size: self.sector_size,
            });
        }
        if !self.features.discard {
            return Err(Error::Unsupported(Op::Discard));
        }
        if len == 0 {
            return Ok(());
        }
        let sector = offset / WIRE_SECTOR as u64;
        let count = len / WIRE_SECTOR as u64;
        self.transfer(Op::Discard, sector, Buf::None, count)
    }

    // ---- Checks -------------------------------------------------------------------------------

    fn check_connected(&self) -> Result<(), Error> {
        if self.connected {
            Ok(())
        } else {
            Err(Error::Disconnected)
        }
    }

    fn check_writable(&self) -> Result<(), Error> {
        self.check_connected()?;
        if self.read_only() {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), Error> {
        self.check_connected()?;
        let capacity = self.capacity();
        match offset.checked_add(len) {
            Some(end) if end <= capacity => Ok(()),
            _ => Err(Error::OutOfRange {
                offset,
                len,
                capacity,
            }),
        }
    }

    /// Checks a block range; returns its first wire sector.
    fn check_blocks(&self, lba: u64, len: usize) -> Result<u64, Error> {
        let ss = self.sector_size as u64;
        let offset = lba.saturating_mul(ss);
        if !(len as u64).is_multiple_of(ss) {
            return Err(Error::Unaligned {
                offset,
                len: len as u64,
                sector_size: self.sector_size,
            });
        }
        if lba.checked_mul(ss).is_none() {
            return Err(Error::OutOfRange {
                offset,
                len: len as u64,
                capacity: self.capacity(),
            });
        }
        self.check_range(offset, len as u64)?;
        Ok(offset / WIRE_SECTOR as u64)
    }
}

/// What step 5 of the handshake learnt.
struct DiskParams {
    /// Data pages in the pool (descriptor pages follow them).
    data_pages: usize,
    wire_sectors: u64,
    sector_size: u32,
    info: u32,
    handle: u16,
    features: Features,
}

// ---- The request engine -----------------------------------------------------------------------

impl<H: Hal, W: Wait> Blkfront<H, W> {
    /// Runs one operation to completion: queues as many requests as slots and pool pages allow,
    /// notifies the backend when it asks for it, reaps and checks responses, waits when there is
    /// nothing to do. `sector` is in wire sectors; `discard_sectors` is used by discards only.
    fn transfer(
        &mut self,
        op: Op,
        sector: u64,
        mut buf: Buf<'_>,
        discard_sectors: u64,
    ) -> Result<(), Error> {
        self.check_connected()?;
        let xfer = self.next_transfer;
        self.next_transfer += 1;
        let deadline = self.hal.now_ns().saturating_add(self.timeout_ns);
        let data = matches!(op, Op::Read | Op::Write);
        let total = buf.len();
        let mut submitted = 0usize;
        let mut started = false;
        let mut prog = Progress::default();
        loop {
            while prog.error.is_none() && if data { submitted < total } else { !started } {
                match self.queue(op, sector, &buf, submitted, xfer, discard_sectors)? {
                    Some(n) => {
                        submitted += n;
                        started = true;
                        prog.outstanding += 1;
                        // Publish at once: the backend can start on this request while we fill
                        // the next (it asks for a notification only when it has gone idle).
                        if self.ring.push_requests()? {
                            self.hal.notify(self.port);
                        }
                    }
                    None => break,
                }
            }
            let progressed = self.reap(xfer, &mut buf, &mut prog)?;
            let all_sent = if data { submitted == total } else { started };
            if prog.outstanding == 0 && (all_sent || prog.error.is_some()) {
                return prog.error.map_or(Ok(()), Err);
            }
            if progressed || self.ring.final_check_for_responses()? {
                continue;
            }
            if self.hal.now_ns() >= deadline {
                self.stats.timeouts += 1;
                return Err(Error::TimedOut);
            }
            self.wait.wait(self.port, deadline);
        }
    }

    /// Queues the next request of a transfer, covering its buffer from byte `off`; returns the
    /// bytes it covers, or `None` when there is no free slot or page for it now.
    fn queue(
        &mut self,
        op: Op,
        sector: u64,
        buf: &Buf<'_>,
        off: usize,
        xfer: u64,
        discard_sectors: u64,
    ) -> Result<Option<usize>, Error> {
        if self.ring.free_requests() == 0 {
            return Ok(None);
        }
        let Some(&slot) = self.free_slots.last() else {
            return Ok(None);
        };
        let id = (u64::from(self.generation) << 32) | u64::from(slot);
        let mut pending = Pending {
            id,
            wire_op: op as u8,
            op,
            sector,
            transfer: xfer,
            buf_off: off,
            len: 0,
            pages: Vec::new(),
            indirect: Vec::new(),
        };
        let req = match op {
            Op::Read | Op::Write => {
                let left = buf.len().saturating_sub(off);
                let (segs, desc) = request_shape(
                    left.div_ceil(PAGE_SIZE),
                    self.features.segments_per_request,
                    self.free_pages.len(),
                    self.free_desc.len(),
                );
                if segs == 0 {
                    return Ok(None);
                }
                let indirect = desc > 0;
                let len = (segs * PAGE_SIZE).min(left);
                pending.len = len;
                pending.sector = sector + (off / WIRE_SECTOR) as u64;
                pending.pages = (0..segs).filter_map(|_| self.free_pages.pop()).collect();
                pending.indirect = (0..desc).filter_map(|_| self.free_desc.pop()).collect();
                let mut segments = Vec::with_capacity(segs);
                for (k, &p) in pending.pages.iter().enumerate() {
                    let start = k * PAGE_SIZE;
                    let n = (len - start).min(PAGE_SIZE);
                    let page = &self.pages[p as usize];
                    if let Buf::Write(data) = buf {
                        if let Some(chunk) = data.get(off + start..off + start + n) {
                            copy_to_shared(&page.mem, chunk)?;
                        }
                    }
                    segments.push(Segment {
                        gref: page.gref,
                        first_sect: 0,
                        last_sect: (n / WIRE_SECTOR).saturating_sub(1) as u8,
                    });
                }
                if indirect {
                    let mut indirect_grefs = [0u32; wire::MAX_INDIRECT_PAGES];
                    for (j, &d) in pending.indirect.iter().enumerate() {
                        let page = &self.pages[d as usize];
                        indirect_grefs[j] = page.gref;
                        let from = j * SEGMENTS_PER_INDIRECT_PAGE;
                        let to = (from + SEGMENTS_PER_INDIRECT_PAGE).min(segs);
                        for (i, s) in segments[from..to].iter().enumerate() {
                            page.mem.write(i * SEGMENT_LEN, &s.emit())?;
                        }
                    }
                    pending.wire_op = Op::Indirect as u8;
                    Request::Indirect(IndirectRequest {
                        op,
                        nr_segments: segs as u16,
                        id,
                        sector: pending.sector,
                        handle: self.handle,
                        indirect_grefs,
                    })
                } else {
                    let mut inline = [Segment::default(); MAX_SEGMENTS];
                    inline[..segs].copy_from_slice(&segments);
                    Request::Rw(RwRequest {
                        op,
                        handle: self.handle,
                        id,
                        sector: pending.sector,
                        nr_segments: segs as u8,
                        segments: inline,
                    })
                }
            }
            Op::Discard => Request::Discard(DiscardRequest {
                secure: false,
                handle: self.handle,
                id,
                sector,
                nr_sectors: discard_sectors,
            }),
            _ => Request::Rw(RwRequest {
                op,
                handle: self.handle,
                id,
                sector: 0,
                nr_segments: 0,
                segments: [Segment::default(); MAX_SEGMENTS],
            }),
        };
        let image = req.emit();
        self.ring.queue_request(|m, o| m.write(o, &image))?;
        self.free_slots.pop();
        self.generation = self.generation.wrapping_add(1).max(1);
        self.stats.requests += 1;
        if matches!(req, Request::Indirect(_)) {
            self.stats.indirect_requests += 1;
        }
        let covered = pending.len;
        self.slots[slot as usize] = Some(pending);
        Ok(Some(covered))
    }

    /// Consumes every published response, checking each; returns whether there was any.
    /// Protocol errors that leave us unable to tell which request finished end the operation.
    fn reap(&mut self, xfer: u64, buf: &mut Buf<'_>, prog: &mut Progress) -> Result<bool, Error> {
        let mut any = false;
        loop {
            let rsp = match self.ring.take_response(|m, o| {
                let mut b = [0u8; wire::RESPONSE_LEN];
                m.read(o, &mut b)?;
                Ok(Response::parse(&b))
            }) {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(any),
                Err(e) => {
                    if matches!(e, RingError::BadResponseIndex { .. }) {
                        self.stats.bad_responses += 1;
                    }
                    return Err(e.into());
                }
            };
            any = true;
            self.stats.responses += 1;
            // The low half of an id is the slot, the high half its generation.
            let slot = (rsp.id & 0xffff_ffff) as usize;
            let p = match self.slots.get_mut(slot) {
                Some(s) if s.as_ref().is_some_and(|p| p.id == rsp.id) => s.take(),
                _ => None,
            };
            let Some(p) = p else {
                self.stats.bad_responses += 1;
                return Err(Error::Backend(BackendError::UnknownId(rsp.id)));
            };
            self.free_slots.push(slot as u32);
            let result = self.judge(&p, &rsp);
            if p.transfer == xfer {
                prog.outstanding = prog.outstanding.saturating_sub(1);
                match result {
                    Ok(()) => {
                        if let Buf::Read(b) = buf {
                            self.copy_out(&p, b)?;
                        }
                    }
                    Err(e) => {
                        prog.error.get_or_insert(e);
                    }
                }
            } else {
                self.stats.late_responses += 1;
            }
            self.free_pages.extend(p.pages.iter().rev());
            self.free_desc.extend(p.indirect.iter().rev());
        }
    }

    /// The outcome a response reports for its request.
    fn judge(&mut self, p: &Pending, rsp: &Response) -> Result<(), Error> {
        // Linux's blkback answers an indirect request with its inner operation (read or write);
        // the protocol header does not say, so accept the indirect operation too.
        let indirect_inner = p.wire_op == Op::Indirect as u8 && rsp.operation == p.op as u8;
        if rsp.operation != p.wire_op && !indirect_inner {
            self.stats.bad_responses += 1;
            return Err(Error::Backend(BackendError::WrongOperation {
                expected: p.wire_op,
                got: rsp.operation,
            }));
        }
        match rsp.status {
            status::OKAY => Ok(()),
            status::ERROR => {
                self.stats.io_errors += 1;
                Err(Error::Io {
                    op: p.op,
                    sector: p.sector,
                })
            }
            status::EOPNOTSUPP => {
                self.stats.unsupported += 1;
                match p.op {
                    Op::FlushDiskcache => self.features.flush = false,
                    Op::WriteBarrier => self.features.barrier = false,
                    Op::Discard => self.features.discard = false,
                    _ => {}
                }
                Err(Error::Unsupported(p.op))
            }
            s => {
                self.stats.bad_responses += 1;
                Err(Error::Backend(BackendError::BadStatus(s)))
            }
        }
    }

    /// Copies a completed read from its pages into the caller's buffer.
    fn copy_out(&self, p: &Pending, b: &mut [u8]) -> Result<(), Error> {
        for (k, &pg) in p.pages.iter().enumerate() {
            let start = k * PAGE_SIZE;
            let n = p.len.saturating_sub(start).min(PAGE_SIZE);
            if let Some(dst) = b.get_mut(p.buf_off + start..p.buf_off + start + n) {
                copy_from_shared(&self.pages[pg as usize].mem, dst)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_pages_cover_a_full_pool_of_requests_plus_one() {
        assert_eq!(descriptor_pages(256, 11), 0);
        assert_eq!(descriptor_pages(256, 8), 0);
        // 4 requests of 64 segments fill the pool; one more for a partial request.
        assert_eq!(descriptor_pages(256, 64), 5);
        assert_eq!(descriptor_pages(256, 256), 2);
        assert_eq!(descriptor_pages(260, 256), 3);
        // 600 segments need two descriptor pages each.
        assert_eq!(descriptor_pages(700, 600), 6);
    }

    #[test]
    fn request_shape_takes_what_is_free() {
        // 1 MiB in 64-segment requests.
        assert_eq!(request_shape(256, 64, 256, 5), (64, 1));
        assert_eq!(request_shape(256, 256, 256, 2), (256, 1));
        assert_eq!(request_shape(600, 600, 700, 6), (600, 2));
        // A short tail, or few free pages, goes direct.
        assert_eq!(request_shape(3, 64, 256, 5), (3, 0));
        assert_eq!(request_shape(256, 64, 11, 5), (11, 0));
        // More than 11 free pages but no free descriptor page: a direct request.
        assert_eq!(request_shape(256, 64, 100, 0), (MAX_SEGMENTS, 0));
        assert_eq!(request_shape(600, 600, 700, 1), (MAX_SEGMENTS, 0));
        // Nothing free: wait.
        assert_eq!(request_shape(256, 64, 0, 5), (0, 0));
        assert_eq!(request_shape(0, 64, 256, 5), (0, 0));
    }

    #[test]
    fn word_copies_round_trip_any_length() {
        let mem = ShMem::new(PAGE_SIZE);
        for len in [0, 1, 7, 8, 9, 512, 4095, 4096] {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            copy_to_shared(&mem, &src).unwrap();
            let mut back = vec![0u8; len];
            copy_from_shared(&mem, &mut back).unwrap();
            assert_eq!(back, src, "len {len}");
            // Byte order matches the byte copies.
            let mut bytes = vec![0u8; len];
            mem.read(0, &mut bytes).unwrap();
            assert_eq!(bytes, src, "len {len}");
        }
        assert!(copy_to_shared(&mem, &[0; PAGE_SIZE + 1]).is_err());
        assert!(copy_from_shared(&mem, &mut [0; PAGE_SIZE + 9]).is_err());
    }
}
