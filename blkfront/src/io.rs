//! The transfer engine: requests on the shared ring, the granted pool pages they carry, indirect
//! descriptors, and the responses, checked one by one and handed to the operation that made the
//! request.
//!
//! An operation (a read, write, flush, barrier or discard of the block API) is a `Transfer`:
//! it is split into requests of at most 11 pages, or of up to the negotiated number of segments
//! with indirect descriptor pages when the backend offers them, and as many requests as free
//! ring slots and pool pages allow are kept in flight. Each request is made visible to the
//! backend as soon as it is queued, so the backend starts on the first while the next is being
//! filled. I/O copies between the caller's buffers and the granted pool pages (no caller memory
//! is ever granted), a word at a time, while the operation's future is polled: a write's data is
//! copied in when its request is queued, a read's copied out when its future collects the
//! answer.
//!
//! Many operations run at once, from many tasks. `Engine::harvest` (the disk's
//! [`Source::poll`](xen::exec::Source::poll)) consumes the responses and wakes exactly the
//! operations whose requests were answered; each operation collects its answers the next time
//! it is polled. Ring slots and pool pages are shared in arrival order: an operation that finds
//! none free (or finds others already waiting) joins a queue, and the first in the queue is
//! woken whenever a slot or page frees; after it queued what it could it goes to the back if it
//! needs more, so one large transfer cannot hold the others off.
//!
//! An operation whose future is dropped, or that times out, is *abandoned*: the answers it
//! already has are released, and its requests still in flight keep their slots and pages until
//! the backend answers them (see [`crate::error`]).
//!
//! ## Restore and migration
//!
//! When [`Hal::generation`] changes (the domain was restored or migrated into a new domain), the
//! engine notices it at its next poll (`harvest`, or an operation's poll) and reconnects before it
//! touches the ring again: every grant reference, the event channel and every frame number are
//! forgotten (never ended or closed: they may be someone else's now), the old ring's pages freed,
//! and the handshake run again through the hook the platform registered
//! ([`Blkfront::on_restore`](crate::Blkfront::on_restore)): new ring, new event channel, the pool
//! re-granted on its pages' new frames, the features read again. Every request that was on the
//! old ring without an answer is then resubmitted on the new one in the order it was first
//! made, its data still in its pool pages (a write is idempotent at the block level), re-split for
//! the new backend's limits; a flush or barrier waits until the resubmitted requests before it are
//! answered. Responses the old backend left on the old ring are never read. Until the reconnect
//! succeeds operations wait (their deadlines and cancellation still apply); a failed attempt is
//! logged and retried with a doubling backoff; a backend offering another disk (size or sector
//! size) is refused for good ([`Error::DiskChanged`]).

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use core::task::{Context, Poll, Waker};

use xen::events::Channel;
use xen::hal::{Hal, SharedPage};
use xen::ring::{FrontRing, RingError};
use xen::shmem::{OutOfBounds, ShMem};
use xen::xenbus::Frontend;

use crate::error::{BackendError, Error};
use crate::wire::{
    self, status, DiscardRequest, IndirectRequest, Op, Request, Response, RwRequest, Segment,
    MAX_SEGMENTS, PAGE_SIZE, SEGMENTS_PER_INDIRECT_PAGE, SEGMENT_LEN, WIRE_SECTOR,
};

/// Tunables of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest ring we use, as log2(pages); capped by the backend and
    /// [`MAX_RING_PAGE_ORDER`](crate::MAX_RING_PAGE_ORDER).
    pub max_ring_page_order: u32,
    /// Data pages granted to the backend for the life of the connection (bounce buffers); they
    /// bound the bytes in flight. At least 2. Indirect descriptor pages come on top (see
    /// `descriptor_pages`), so a pool of 256 moves a 1 MiB transfer in one go.
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

/// First wait before a failed reconnect is tried again (it doubles up to [`RESUME_BACKOFF_MAX_NS`]).
pub(crate) const RESUME_BACKOFF_NS: u64 = 10_000_000;
/// Longest wait between reconnect attempts.
pub(crate) const RESUME_BACKOFF_MAX_NS: u64 = 2_000_000_000;

/// How the engine runs the handshake again after a restore (it reaches xenstore through it).
pub(crate) type ResumeHook<H> = Box<dyn FnMut(&mut Engine<H>) -> Result<(), Error>>;

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
    /// Responses to requests whose operation had already given up (timed out or dropped).
    pub late_responses: u64,
    /// Operations dropped before they completed.
    pub cancelled: u64,
    /// Most requests in flight at once.
    pub max_in_flight: u32,
    /// Reconnects after a restore or migration.
    pub reconnects: u64,
    /// Reconnect attempts that failed (retried).
    pub reconnect_failures: u64,
    /// Requests that were in flight on the old ring at a restore and were resubmitted on the
    /// new one (counted as they were first made, before any re-split).
    pub requests_resubmitted: u64,
    /// How long the last reconnect took, from noticing the restore to the new ring being ready
    /// (nanoseconds, the platform clock).
    pub last_reconnect_ns: u64,
}

/// A granted page of the data pool.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) mem: ShMem,
    pub(crate) mfn: u64,
    pub(crate) gref: u32,
}

/// What a transfer moves.
pub(crate) enum Buf<'a> {
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
    /// The transfer it belongs to.
    owner: u64,
    /// Bytes of the transfer's buffer it covers.
    buf_off: usize,
    len: usize,
    /// For a discard: how many wire sectors.
    discard_sectors: u64,
    pages: Vec<u16>,
    indirect: Vec<u16>,
    /// The backend's answer, judged, waiting for the transfer to collect it.
    answer: Option<Result<(), Error>>,
    /// Order of the operation's requests as first made (kept across a resubmission).
    seq: u64,
    /// It was made by [`flush`](crate::Blkfront::flush) (a flush or a barrier standing in for
    /// one): after a restore it may go as whichever of the two the new backend offers.
    flush: bool,
    /// Resubmitted after a restore.
    resubmitted: bool,
}

/// The engine's side of a live transfer.
struct Live {
    /// Woken when a request of it is answered, it reaches the head of the queue, it times out
    /// or the ring breaks.
    waker: Option<Waker>,
    /// Slots answered and not yet collected.
    answered: Vec<u32>,
    /// Requests on the ring and not answered.
    in_flight: usize,
    deadline: u64,
    /// Set when the transfer must end at once (the response index broke).
    failed: Option<Error>,
    /// Requests added by re-splitting a resubmitted one (the transfer counts them as its own).
    extra: usize,
    /// Answers settled without the backend (a resubmitted flush the new backend has no cache
    /// for), waiting for the transfer to collect them.
    settled: Vec<Result<(), Error>>,
}

/// An operation of the block API in progress: the state its future keeps between polls.
pub(crate) struct Transfer<'a> {
    op: Op,
    /// First wire sector.
    sector: u64,
    buf: Buf<'a>,
    /// For discards: how many wire sectors.
    discard_sectors: u64,
    /// Made by `flush` (see [`Pending::flush`]).
    flush: bool,
    /// 0 until first polled.
    id: u64,
    submitted: usize,
    started: bool,
    outstanding: usize,
    error: Option<Error>,
    finished: bool,
}

impl<'a> Transfer<'a> {
    pub(crate) fn new(op: Op, sector: u64, buf: Buf<'a>, discard_sectors: u64) -> Self {
        Transfer {
            op,
            sector,
            buf,
            discard_sectors,
            flush: false,
            id: 0,
            submitted: 0,
            started: false,
            outstanding: 0,
            error: None,
            finished: false,
        }
    }

    /// The flush of [`flush`](crate::Blkfront::flush), as `op` (a cache flush or a barrier).
    pub(crate) fn flush(op: Op) -> Self {
        let mut t = Transfer::new(op, 0, Buf::None, 0);
        t.flush = true;
        t
    }

    fn data(&self) -> bool {
        matches!(self.op, Op::Read | Op::Write)
    }

    /// True while requests remain to be queued.
    fn needs_more(&self) -> bool {
        if self.data() {
            self.submitted < self.buf.len()
        } else {
            !self.started
        }
    }

    /// Its id (0 until first polled).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// True once it started and has not finished (its drop must abandon it).
    pub(crate) fn live(&self) -> bool {
        self.id != 0 && !self.finished
    }
}

/// The connection's state behind a [`Blkfront`](crate::Blkfront) handle.
pub(crate) struct Engine<H: Hal> {
    pub(crate) hal: H,
    pub(crate) fe: Frontend,
    pub(crate) connected: bool,
    pub(crate) ring: FrontRing,
    pub(crate) ring_pages: Vec<(u64, u32)>,
    pub(crate) port: u32,
    /// The data pool, then the indirect descriptor pages.
    pub(crate) pages: Vec<Page>,
    /// How many of `pages` are data pages.
    pub(crate) ndata: usize,
    free_pages: Vec<u16>,
    free_desc: Vec<u16>,
    slots: Vec<Option<Pending>>,
    free_slots: Vec<u32>,
    generation: u32,
    pub(crate) handle: u16,
    /// Capacity in wire sectors.
    pub(crate) wire_sectors: u64,
    pub(crate) sector_size: u32,
    pub(crate) info: u32,
    pub(crate) features: Features,
    pub(crate) stats: Stats,
    next_transfer: u64,
    timeout_ns: u64,
    transfers: BTreeMap<u64, Live>,
    /// Transfers waiting for ring slots or pool pages, first come first served.
    queue: VecDeque<u64>,
    /// The response index was out of range at the last look (counted once per episode).
    ring_broken: bool,
    /// Requests made so far (orders them for a resubmission).
    seq: u64,
    /// The tunables the connection was made with (a reconnect uses them again).
    pub(crate) config: Config,
    /// The device node (`device/vbd/768`), to attach to again after a restore.
    pub(crate) node: alloc::string::String,
    /// The event channel that wakes the disk's executor source, rebound after a reconnect.
    pub(crate) channel: Option<Channel>,
    /// [`Hal::generation`] when the ring was set up.
    domain_generation: u64,
    /// The domain moved: the ring, grants and port are gone, and the handshake must be run
    /// again before any I/O.
    pub(crate) resuming: bool,
    /// When the next reconnect attempt may run, and the wait after the next failure.
    resume_at: u64,
    backoff_ns: u64,
    /// When the restore was noticed.
    restored_at: u64,
    /// Runs the handshake again (see [`Blkfront::on_restore`](crate::Blkfront::on_restore)).
    pub(crate) resume: Option<ResumeHook<H>>,
    /// The disk cannot be used any more (the backend offers another disk after a restore).
    pub(crate) failed: Option<Error>,
    /// Requests of the old ring waiting to be resubmitted on the new one, in their first order.
    resubmit: VecDeque<Pending>,
}

/// What the first handshake hands the engine: the disk, and the connection to its backend.
pub(crate) struct Parts<H: Hal> {
    pub(crate) hal: H,
    pub(crate) fe: Frontend,
    pub(crate) conn: Connection,
    pub(crate) wire_sectors: u64,
    pub(crate) sector_size: u32,
    pub(crate) config: Config,
    pub(crate) node: alloc::string::String,
}

/// What each handshake hands the engine (at boot in [`Parts`], after a restore to
/// `Engine::adopt`): the ring, its port and the page pool, and what the backend offers.
pub(crate) struct Connection {
    pub(crate) ring: FrontRing,
    pub(crate) ring_pages: Vec<(u64, u32)>,
    pub(crate) port: u32,
    pub(crate) pages: Vec<Page>,
    pub(crate) data_pages: usize,
    pub(crate) features: Features,
    pub(crate) info: u32,
    pub(crate) handle: u16,
}

impl<H: Hal> Engine<H> {
    pub(crate) fn new(p: Parts<H>) -> Self {
        let c = p.conn;
        let slots = c.ring.size() as usize;
        let npages = c.pages.len();
        let ndata = c.data_pages.min(npages);
        let domain_generation = p.hal.generation();
        Engine {
            hal: p.hal,
            fe: p.fe,
            connected: true,
            ring: c.ring,
            ring_pages: c.ring_pages,
            port: c.port,
            pages: c.pages,
            ndata,
            free_pages: (0..ndata as u16).rev().collect(),
            free_desc: (ndata as u16..npages as u16).rev().collect(),
            slots: (0..slots).map(|_| None).collect(),
            free_slots: (0..slots as u32).rev().collect(),
            generation: 1,
            handle: c.handle,
            wire_sectors: p.wire_sectors,
            sector_size: p.sector_size,
            info: c.info,
            features: c.features,
            stats: Stats::default(),
            next_transfer: 1,
            timeout_ns: p.config.io_timeout_ns,
            transfers: BTreeMap::new(),
            queue: VecDeque::new(),
            ring_broken: false,
            seq: 0,
            config: p.config,
            node: p.node,
            channel: None,
            domain_generation,
            resuming: false,
            resume_at: 0,
            backoff_ns: RESUME_BACKOFF_NS,
            restored_at: 0,
            resume: None,
            failed: None,
            resubmit: VecDeque::new(),
        }
    }

    /// Requests on the ring and not yet answered (including those of abandoned operations),
    /// and those waiting to be resubmitted after a restore.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.as_ref().is_some_and(|p| p.answer.is_none()))
            .count()
            + self.resubmit.len()
    }

    /// Operations in progress (started and not finished).
    pub(crate) fn operations(&self) -> usize {
        self.transfers.len()
    }

    /// Forgets every request and wakes every operation (they then fail with
    /// [`Error::Disconnected`]); the caller released the pages.
    pub(crate) fn drop_everything(&mut self) {
        self.connected = false;
        self.free_pages.clear();
        self.free_desc.clear();
        self.slots.iter_mut().for_each(|s| *s = None);
        self.free_slots.clear();
        self.queue.clear();
        self.resubmit.clear();
        for t in self.transfers.values_mut() {
            if let Some(w) = t.waker.take() {
                w.wake();
            }
        }
    }

    // ---- Operations ---------------------------------------------------------------------------

    /// Moves transfer `t` along: collects its answers, queues what it can, and completes it
    /// once every request it made was answered (or it must give up).
    pub(crate) fn poll_transfer(
        &mut self,
        t: &mut Transfer<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        if t.finished {
            return Poll::Ready(Err(Error::Disconnected));
        }
        let now = self.hal.now_ns();
        self.check_generation(now);
        if !self.connected {
            let e = self.failed.clone().unwrap_or(Error::Disconnected);
            return self.finish(t, Err(e));
        }
        if t.id == 0 {
            t.id = self.next_transfer;
            self.next_transfer += 1;
            self.transfers.insert(
                t.id,
                Live {
                    waker: None,
                    answered: Vec::new(),
                    in_flight: 0,
                    deadline: now.saturating_add(self.timeout_ns),
                    failed: None,
                    extra: 0,
                    settled: Vec::new(),
                },
            );
        }
        self.collect(t);
        self.drain_resubmit();
        if let Some(e) = self.transfers.get_mut(&t.id).and_then(|l| l.failed.take()) {
            // The ring broke: give up on what is in flight.
            return self.finish(t, Err(e));
        }
        if t.error.is_none() {
            if let Err(e) = self.submit(t) {
                t.error = Some(e);
            }
        }
        if t.error.is_some() {
            // It queues nothing more: the next in line need not wait for its last answers.
            self.leave_queue(t.id);
        }
        if t.outstanding == 0 && (t.error.is_some() || !t.needs_more()) {
            let r = t.error.take().map_or(Ok(()), Err);
            return self.finish(t, r);
        }
        let Some(live) = self.transfers.get_mut(&t.id) else {
            return self.finish(t, Err(Error::Disconnected));
        };
        if now >= live.deadline {
            self.stats.timeouts += 1;
            return self.finish(t, Err(Error::TimedOut));
        }
        xen::signal::remember(&mut live.waker, cx.waker());
        Poll::Pending
    }

    /// Ends transfer `t` with `r`, abandoning what it still has in flight.
    fn finish(&mut self, t: &mut Transfer<'_>, r: Result<(), Error>) -> Poll<Result<(), Error>> {
        self.abandon(t.id);
        t.finished = true;
        Poll::Ready(r)
    }

    /// Forgets transfer `id` (done, timed out, failed or dropped): its collected-but-unread
    /// answers free their slots; requests still in flight stay until the backend answers them.
    pub(crate) fn abandon(&mut self, id: u64) {
        let Some(live) = self.transfers.remove(&id) else {
            return;
        };
        for slot in live.answered {
            self.release_slot(slot, id);
        }
        self.leave_queue(id);
        self.wake_head();
    }

    /// Takes transfer `id` out of the queue for room (waking the next if it was first).
    fn leave_queue(&mut self, id: u64) {
        if let Some(pos) = self.queue.iter().position(|&q| q == id) {
            self.queue.remove(pos);
            if pos == 0 {
                self.wake_head();
            }
        }
    }

    /// Counts a transfer dropped before it finished.
    pub(crate) fn cancelled(&mut self, id: u64) {
        self.stats.cancelled += 1;
        self.abandon(id);
    }

    /// Frees answered slot `slot` if transfer `owner` owns it.
    fn release_slot(&mut self, slot: u32, owner: u64) -> Option<Pending> {
        let s = self.slots.get_mut(slot as usize)?;
        if s.as_ref().is_none_or(|p| p.owner != owner) {
            return None;
        }
        let p = s.take()?;
        self.free_slots.push(slot);
        self.free_pages.extend(p.pages.iter().rev());
        self.free_desc.extend(p.indirect.iter().rev());
        Some(p)
    }

    /// Wakes the first transfer waiting for room.
    fn wake_head(&mut self) {
        if let Some(&h) = self.queue.front() {
            if let Some(w) = self.transfers.get_mut(&h).and_then(|l| l.waker.take()) {
                w.wake();
            }
        }
    }

    /// Takes the answers to transfer `t`'s requests: reads are copied out, errors kept (the
    /// first one is the transfer's), slots and pages freed.
    fn collect(&mut self, t: &mut Transfer<'_>) {
        let answered = match self.transfers.get_mut(&t.id) {
            Some(l) => {
                t.outstanding += core::mem::take(&mut l.extra);
                for r in l.settled.drain(..) {
                    t.outstanding = t.outstanding.saturating_sub(1);
                    if let Err(e) = r {
                        t.error.get_or_insert(e);
                    }
                }
                if l.answered.is_empty() {
                    return;
                }
                core::mem::take(&mut l.answered)
            }
            None => return,
        };
        for slot in answered {
            let Some(p) = self.release_slot(slot, t.id) else {
                continue;
            };
            t.outstanding = t.outstanding.saturating_sub(1);
            match p.answer {
                Some(Ok(())) => {
                    if let Buf::Read(b) = &mut t.buf {
                        if let Err(e) = self.copy_out(&p, b) {
                            t.error.get_or_insert(e);
                        }
                    }
                }
                Some(Err(e)) => {
                    t.error.get_or_insert(e);
                }
                None => {}
            }
        }
        if self.queue.front() != Some(&t.id) {
            self.wake_head();
        }
    }

    /// Queues as many of `t`'s requests as room allows, in turn with the other transfers.
    fn submit(&mut self, t: &mut Transfer<'_>) -> Result<(), Error> {
        if !t.needs_more() {
            return Ok(());
        }
        let id = t.id;
        if self.resuming || !self.resubmit.is_empty() {
            // The old ring's requests go first (and there is no ring while reconnecting).
            if !self.queue.contains(&id) {
                self.queue.push_back(id);
            }
            return Ok(());
        }
        if let Some(&head) = self.queue.front() {
            if head != id {
                if !self.queue.contains(&id) {
                    self.queue.push_back(id);
                }
                return Ok(());
            }
        }
        let mut queued = 0;
        while t.needs_more() {
            let Some(n) = self.queue_request(t)? else {
                break;
            };
            t.submitted += n;
            t.started = true;
            t.outstanding += 1;
            queued += 1;
            if let Some(l) = self.transfers.get_mut(&id) {
                l.in_flight += 1;
            }
            // Publish at once: the backend can start on this request while we fill the next
            // (it asks for a notification only when it has gone idle).
            if self.ring.push_requests()? {
                self.hal.notify(self.port);
            }
        }
        let in_flight = self.ring.in_flight();
        self.stats.max_in_flight = self.stats.max_in_flight.max(in_flight);
        let head = self.queue.front() == Some(&id);
        if t.needs_more() {
            if !head {
                self.queue.push_back(id);
            } else if queued > 0 && self.queue.len() > 1 {
                // Our turn is over: the next one goes first when room frees.
                self.queue.pop_front();
                self.queue.push_back(id);
                self.wake_head();
            }
        } else if head {
            self.queue.pop_front();
            self.wake_head();
        }
        Ok(())
    }

    /// Queues the next request of `t`, covering its buffer from `t.submitted`; returns the
    /// bytes it covers, or `None` when there is no free slot or page for it now.
    fn queue_request(&mut self, t: &Transfer<'_>) -> Result<Option<usize>, Error> {
        if self.ring.free_requests() == 0 {
            return Ok(None);
        }
        let Some(&slot) = self.free_slots.last() else {
            return Ok(None);
        };
        let id = (u64::from(self.generation) << 32) | u64::from(slot);
        let op = t.op;
        let off = t.submitted;
        let mut pending = Pending {
            id,
            wire_op: op as u8,
            op,
            sector: t.sector,
            owner: t.id,
            buf_off: off,
            len: 0,
            discard_sectors: t.discard_sectors,
            pages: Vec::new(),
            indirect: Vec::new(),
            answer: None,
            seq: self.seq,
            flush: t.flush,
            resubmitted: false,
        };
        let req = match op {
            Op::Read | Op::Write => {
                let left = t.buf.len().saturating_sub(off);
                let (segs, desc) = request_shape(
                    left.div_ceil(PAGE_SIZE),
                    self.features.segments_per_request,
                    self.free_pages.len(),
                    self.free_desc.len(),
                );
                if segs == 0 {
                    return Ok(None);
                }
                let len = (segs * PAGE_SIZE).min(left);
                pending.len = len;
                pending.sector = t.sector + (off / WIRE_SECTOR) as u64;
                pending.pages = (0..segs).filter_map(|_| self.free_pages.pop()).collect();
                pending.indirect = (0..desc).filter_map(|_| self.free_desc.pop()).collect();
                match self.fill(&pending, &t.buf, segs) {
                    Ok(r) => r,
                    Err(e) => {
                        self.free_pages.extend(pending.pages.iter().rev());
                        self.free_desc.extend(pending.indirect.iter().rev());
                        return Err(e);
                    }
                }
            }
            Op::Discard => Request::Discard(DiscardRequest {
                secure: false,
                handle: self.handle,
                id,
                sector: t.sector,
                nr_sectors: t.discard_sectors,
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
        if let Request::Indirect(_) = req {
            pending.wire_op = Op::Indirect as u8;
        }
        let image = req.emit();
        if let Err(e) = self.ring.queue_request(|m, o| m.write(o, &image)) {
            self.free_pages.extend(pending.pages.iter().rev());
            self.free_desc.extend(pending.indirect.iter().rev());
            return Err(e.into());
        }
        self.free_slots.pop();
        self.generation = self.generation.wrapping_add(1).max(1);
        self.seq += 1;
        self.stats.requests += 1;
        if matches!(req, Request::Indirect(_)) {
            self.stats.indirect_requests += 1;
        }
        let covered = pending.len;
        self.slots[slot as usize] = Some(pending);
        Ok(Some(covered))
    }

    /// The request image of a read or write of `segs` pages (data copied in for a write,
    /// descriptor pages filled for an indirect request).
    fn fill(&self, p: &Pending, buf: &Buf<'_>, segs: usize) -> Result<Request, Error> {
        let mut segments = Vec::with_capacity(segs);
        for (k, &pg) in p.pages.iter().enumerate() {
            let start = k * PAGE_SIZE;
            let n = (p.len - start).min(PAGE_SIZE);
            let page = &self.pages[pg as usize];
            if let Buf::Write(data) = buf {
                if let Some(chunk) = data.get(p.buf_off + start..p.buf_off + start + n) {
                    copy_to_shared(&page.mem, chunk)?;
                }
            }
            segments.push(Segment {
                gref: page.gref,
                first_sect: 0,
                last_sect: (n / WIRE_SECTOR).saturating_sub(1) as u8,
            });
        }
        if !p.indirect.is_empty() {
            let mut indirect_grefs = [0u32; wire::MAX_INDIRECT_PAGES];
            for (j, &d) in p.indirect.iter().enumerate() {
                let page = &self.pages[d as usize];
                indirect_grefs[j] = page.gref;
                let from = j * SEGMENTS_PER_INDIRECT_PAGE;
                let to = (from + SEGMENTS_PER_INDIRECT_PAGE).min(segs);
                for (i, s) in segments[from..to].iter().enumerate() {
                    page.mem.write(i * SEGMENT_LEN, &s.emit())?;
                }
            }
            Ok(Request::Indirect(IndirectRequest {
                op: p.op,
                nr_segments: segs as u16,
                id: p.id,
                sector: p.sector,
                handle: self.handle,
                indirect_grefs,
            }))
        } else {
            let mut inline = [Segment::default(); MAX_SEGMENTS];
            inline[..segs].copy_from_slice(&segments);
            Ok(Request::Rw(RwRequest {
                op: p.op,
                handle: self.handle,
                id: p.id,
                sector: p.sector,
                nr_segments: segs as u8,
                segments: inline,
            }))
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

    // ---- Responses ----------------------------------------------------------------------------

    /// Consumes every published response, checking each and waking the transfers answered,
    /// and wakes the transfers whose deadline passed; returns the next deadline. This is the
    /// disk's [`Source::poll`](xen::exec::Source::poll).
    pub(crate) fn harvest(&mut self, now: u64) -> Option<u64> {
        self.check_generation(now);
        if !self.connected {
            return None;
        }
        if self.resuming {
            // No ring to read: wake at the next attempt, or an operation's deadline.
            return self
                .deadlines(now)
                .map(|d| d.min(self.resume_at))
                .or(Some(self.resume_at));
        }
        loop {
            let rsp = match self.ring.take_response(|m, o| {
                let mut b = [0u8; wire::RESPONSE_LEN];
                m.read(o, &mut b)?;
                Ok(Response::parse(&b))
            }) {
                Ok(Some(r)) => r,
                Ok(None) => match self.ring.final_check_for_responses() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        self.ring_fault(e);
                        break;
                    }
                },
                Err(e) => {
                    self.ring_fault(e);
                    break;
                }
            };
            self.ring_broken = false;
            self.answer(rsp);
        }
        self.drain_resubmit();
        self.deadlines(now)
    }

    /// Wakes the transfers whose deadline passed at `now`; returns the earliest one to come.
    fn deadlines(&mut self, now: u64) -> Option<u64> {
        let mut next: Option<u64> = None;
        for live in self.transfers.values_mut() {
            if now >= live.deadline {
                if let Some(w) = live.waker.take() {
                    w.wake();
                }
            } else {
                next = Some(next.map_or(live.deadline, |n| n.min(live.deadline)));
            }
        }
        next
    }

    /// The ring cannot be read: every transfer with requests in flight fails.
    fn ring_fault(&mut self, e: RingError) {
        if !self.ring_broken {
            self.stats.bad_responses += 1;
            log::warn!("blkfront: {e}");
        }
        self.ring_broken = matches!(e, RingError::BadResponseIndex { .. });
        let err = Error::from(e);
        for live in self.transfers.values_mut() {
            if live.in_flight > 0 && live.failed.is_none() {
                live.failed = Some(err.clone());
                if let Some(w) = live.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Hands one response to the request it answers.
    fn answer(&mut self, rsp: Response) {
        self.stats.responses += 1;
        // The low half of an id is the slot, the high half its generation.
        let slot = (rsp.id & 0xffff_ffff) as usize;
        let valid = self
            .slots
            .get(slot)
            .and_then(|s| s.as_ref())
            .is_some_and(|p| p.id == rsp.id && p.answer.is_none());
        if !valid {
            self.stats.bad_responses += 1;
            log::warn!("blkfront: {}: dropped", BackendError::UnknownId(rsp.id));
            return;
        }
        let Some(p) = self.slots[slot].as_ref() else {
            return;
        };
        let (owner, wire_op, op, sector) = (p.owner, p.wire_op, p.op, p.sector);
        let result = self.judge(wire_op, op, sector, &rsp);
        match self.transfers.get_mut(&owner) {
            Some(live) => {
                if let Some(p) = self.slots[slot].as_mut() {
                    p.answer = Some(result);
                }
                live.answered.push(slot as u32);
                live.in_flight = live.in_flight.saturating_sub(1);
                if let Some(w) = live.waker.take() {
                    w.wake();
                }
            }
            None => {
                // Its transfer gave up: the backend is done with the pages now.
                self.stats.late_responses += 1;
                self.release_slot(slot as u32, owner);
                self.wake_head();
            }
        }
    }

    // ---- Restore and migration -----------------------------------------------------------

    /// Notices a move into a new domain (forgetting the old ring) and, while one is pending,
    /// tries to reconnect when the backoff allows.
    pub(crate) fn check_generation(&mut self, now: u64) {
        self.note_generation(now);
        if self.resuming && self.connected && now >= self.resume_at {
            self.try_resume(now);
        }
    }

    /// Notices a move into a new domain: forgets the old ring and schedules a reconnect.
    pub(crate) fn note_generation(&mut self, now: u64) {
        let g = self.hal.generation();
        if g != self.domain_generation {
            self.domain_generation = g;
            if self.connected {
                self.forget_domain();
                self.resuming = true;
                self.restored_at = now;
                self.resume_at = now;
                self.backoff_ns = RESUME_BACKOFF_NS;
            }
        }
    }

    /// The domain moved: every grant, the port and every frame number are void. Frees the old
    /// ring's pages (no grant is ended: the numbers may be someone else's now), and moves every
    /// request that had no answer to the resubmission queue, in the order it was first made;
    /// those of abandoned operations just give their pages back.
    fn forget_domain(&mut self) {
        let ring_mem = self.ring.mem().clone();
        for (i, _) in core::mem::take(&mut self.ring_pages)
            .into_iter()
            .enumerate()
        {
            if let Ok(mem) = ring_mem.slice(i * PAGE_SIZE, PAGE_SIZE) {
                let mfn = self.hal.frame(&mem);
                self.hal.free_page(SharedPage { mem, mfn });
            }
        }
        let mut redo: Vec<Pending> = core::mem::take(&mut self.resubmit).into();
        for slot in 0..self.slots.len() {
            let Some(p) = self.slots[slot].as_mut() else {
                continue;
            };
            // Descriptor pages are chosen again for the new backend's limits.
            p.indirect.clear();
            if p.answer.is_some() {
                continue;
            }
            let Some(mut p) = self.slots[slot].take() else {
                continue;
            };
            if self.transfers.contains_key(&p.owner) {
                p.resubmitted = true;
                self.stats.requests_resubmitted += 1;
                redo.push(p);
            } else {
                self.free_pages.extend(p.pages.iter().rev());
            }
        }
        redo.sort_by_key(|p| p.seq);
        self.resubmit = redo.into();
        self.free_desc.clear();
        self.free_slots.clear();
        self.ring_broken = false;
    }

    /// One reconnect attempt through the platform's hook; on failure the next one is due after
    /// the backoff (or never, for another disk).
    fn try_resume(&mut self, _now: u64) {
        let Some(mut hook) = self.resume.take() else {
            log::error!(
                "blkfront: {}: restored into a new domain, but nothing can reach xenstore to reconnect (Blkfront::on_restore)",
                self.node
            );
            self.fail_for_good(Error::NoXenstore);
            return;
        };
        let r = hook(self);
        if self.resume.is_none() {
            self.resume = Some(hook);
        }
        let done = self.hal.now_ns();
        match r {
            Ok(()) => {
                self.resuming = false;
                self.stats.reconnects += 1;
                self.stats.last_reconnect_ns = done.saturating_sub(self.restored_at);
                log::info!(
                    "blkfront: {}: reconnected after a restore in {} us ({} requests to resubmit, {} ring pages, {} segments per request)",
                    self.node,
                    self.stats.last_reconnect_ns / 1000,
                    self.resubmit.len(),
                    self.features.ring_pages,
                    self.features.segments_per_request
                );
                self.drain_resubmit();
                self.wake_all();
                if let Some(ch) = &self.channel {
                    // Polled at once: a response may have come before the rebind.
                    ch.fire();
                }
            }
            Err(e @ Error::DiskChanged { .. }) => {
                log::error!("blkfront: {}: {e}", self.node);
                self.fail_for_good(e);
            }
            Err(e) => {
                self.stats.reconnect_failures += 1;
                log::warn!(
                    "blkfront: {}: reconnect after a restore failed: {e}; retrying in {} ms",
                    self.node,
                    self.backoff_ns / 1_000_000
                );
                self.resume_at = done.saturating_add(self.backoff_ns);
                self.backoff_ns = (self.backoff_ns * 2).min(RESUME_BACKOFF_MAX_NS);
            }
        }
    }

    /// The disk cannot be reconnected: every operation fails with `e` (the pool's memory is
    /// given back; its grants are void already).
    fn fail_for_good(&mut self, e: Error) {
        self.failed = Some(e);
        self.resuming = false;
        for p in core::mem::take(&mut self.pages) {
            let mfn = self.hal.frame(&p.mem);
            self.hal.free_page(SharedPage { mem: p.mem, mfn });
        }
        self.drop_everything();
    }

    /// Wakes every operation in progress.
    fn wake_all(&mut self) {
        for live in self.transfers.values_mut() {
            if let Some(w) = live.waker.take() {
                w.wake();
            }
        }
    }

    /// A reconnect succeeded: the new ring, port, grants and features replace the old ones.
    /// `pages` is the new pool (the data pages first, in their old order, then the descriptor
    /// pages for the new limits).
    pub(crate) fn adopt(&mut self, new: Connection) {
        self.ring = new.ring;
        self.ring_pages = new.ring_pages;
        self.port = new.port;
        let ndata = new.data_pages;
        self.ndata = ndata;
        self.pages = new.pages;
        self.features = new.features;
        self.info = new.info;
        self.handle = new.handle;
        self.free_desc = (ndata as u16..self.pages.len() as u16).rev().collect();
        let size = self.ring.size() as usize;
        if self.slots.len() < size {
            self.slots.resize_with(size, || None);
        }
        self.free_slots = (0..self.slots.len() as u32)
            .rev()
            .filter(|&s| self.slots[s as usize].is_none())
            .collect();
        if let Some(ch) = &self.channel {
            ch.rebind(self.port);
        }
    }

    /// Puts the old ring's requests on the new one, in order, as far as room allows: each is
    /// re-split for the new backend's limits (its data is still in its pool pages); a flush or
    /// barrier waits for the resubmitted requests made before it, and goes as whichever of the
    /// two the new backend offers (or is done at once if it offers neither: it has no cache).
    fn drain_resubmit(&mut self) {
        if self.resuming || !self.connected || self.resubmit.is_empty() {
            return;
        }
        let mut pushed = false;
        while let Some(front) = self.resubmit.front() {
            if !self.transfers.contains_key(&front.owner) {
                // Its operation gave up (timed out or dropped) meanwhile.
                if let Some(p) = self.resubmit.pop_front() {
                    self.free_pages.extend(p.pages.iter().rev());
                }
                continue;
            }
            let ordering = matches!(front.op, Op::FlushDiskcache | Op::WriteBarrier);
            if ordering && self.earlier_unanswered(front.seq) {
                break;
            }
            if self.ring.free_requests() == 0 || self.free_slots.is_empty() {
                break;
            }
            let Some(mut p) = self.resubmit.pop_front() else {
                break;
            };
            match self.resubmit_one(&mut p) {
                Ok(true) => pushed = true,
                Ok(false) => {}
                Err(e) => {
                    log::warn!("blkfront: resubmitting a request: {e}");
                    self.settle(p.owner, Err(e));
                    self.free_pages.extend(p.pages.iter().rev());
                }
            }
        }
        if pushed {
            match self.ring.push_requests() {
                Ok(true) => self.hal.notify(self.port),
                Ok(false) => {}
                Err(e) => self.ring_fault(e),
            }
            let in_flight = self.ring.in_flight();
            self.stats.max_in_flight = self.stats.max_in_flight.max(in_flight);
        }
        if self.resubmit.is_empty() {
            self.wake_head();
        }
    }

    /// True while a resubmitted request made before `seq` has no answer.
    fn earlier_unanswered(&self, seq: u64) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|p| p.resubmitted && p.answer.is_none() && p.seq < seq)
    }

    /// Ends one request of transfer `owner` without the backend.
    fn settle(&mut self, owner: u64, r: Result<(), Error>) {
        if let Some(live) = self.transfers.get_mut(&owner) {
            live.settled.push(r);
            live.in_flight = live.in_flight.saturating_sub(1);
            if let Some(w) = live.waker.take() {
                w.wake();
            }
        }
    }

    /// Queues resubmitted request `p` (or its first part, the rest going back to the front of
    /// the queue); false when it was settled without the ring.
    fn resubmit_one(&mut self, p: &mut Pending) -> Result<bool, Error> {
        let Some(&slot) = self.free_slots.last() else {
            return Ok(false);
        };
        let id = (u64::from(self.generation) << 32) | u64::from(slot);
        p.id = id;
        let req = match p.op {
            Op::Read | Op::Write => {
                let n = p.pages.len();
                let (segs, desc) = request_shape(
                    n,
                    self.features.segments_per_request,
                    n,
                    self.free_desc.len(),
                );
                if segs == 0 {
                    self.settle(p.owner, Err(Error::Disconnected));
                    return Ok(false);
                }
                if segs < n {
                    // Re-split: the rest goes next.
                    let done = segs * PAGE_SIZE;
                    let rest = Pending {
                        id: 0,
                        wire_op: p.op as u8,
                        op: p.op,
                        sector: p.sector + (done / WIRE_SECTOR) as u64,
                        owner: p.owner,
                        buf_off: p.buf_off + done,
                        len: p.len - done,
                        discard_sectors: 0,
                        pages: p.pages.split_off(segs),
                        indirect: Vec::new(),
                        answer: None,
                        seq: p.seq,
                        flush: false,
                        resubmitted: true,
                    };
                    p.len = done;
                    if let Some(l) = self.transfers.get_mut(&p.owner) {
                        l.extra += 1;
                        l.in_flight += 1;
                    }
                    self.resubmit.push_front(rest);
                }
                p.indirect = (0..desc).filter_map(|_| self.free_desc.pop()).collect();
                p.wire_op = if desc > 0 {
                    Op::Indirect as u8
                } else {
                    p.op as u8
                };
                match self.fill(p, &Buf::None, segs) {
                    Ok(r) => r,
                    Err(e) => {
                        self.free_desc.extend(p.indirect.iter().rev());
                        p.indirect.clear();
                        return Err(e);
                    }
                }
            }
            Op::Discard => {
                if !self.features.discard {
                    self.settle(p.owner, Err(Error::Unsupported(Op::Discard)));
                    return Ok(false);
                }
                p.wire_op = Op::Discard as u8;
                Request::Discard(DiscardRequest {
                    secure: false,
                    handle: self.handle,
                    id,
                    sector: p.sector,
                    nr_sectors: p.discard_sectors,
                })
            }
            op => {
                let f = self.features;
                let op = match op {
                    _ if p.flush && f.flush => Op::FlushDiskcache,
                    _ if p.flush && f.barrier => Op::WriteBarrier,
                    // No cache to flush: every write before it was answered.
                    _ if p.flush => {
                        self.settle(p.owner, Ok(()));
                        return Ok(false);
                    }
                    Op::WriteBarrier if !f.barrier => {
                        self.settle(p.owner, Err(Error::Unsupported(Op::WriteBarrier)));
                        return Ok(false);
                    }
                    op => op,
                };
                p.op = op;
                p.wire_op = op as u8;
                Request::Rw(RwRequest {
                    op,
                    handle: self.handle,
                    id,
                    sector: 0,
                    nr_segments: 0,
                    segments: [Segment::default(); MAX_SEGMENTS],
                })
            }
        };
        let image = req.emit();
        if let Err(e) = self.ring.queue_request(|m, o| m.write(o, &image)) {
            self.free_desc.extend(p.indirect.iter().rev());
            p.indirect.clear();
            return Err(e.into());
        }
        self.free_slots.pop();
        self.generation = self.generation.wrapping_add(1).max(1);
        self.stats.requests += 1;
        if matches!(req, Request::Indirect(_)) {
            self.stats.indirect_requests += 1;
        }
        let taken = core::mem::replace(
            p,
            Pending {
                id: 0,
                wire_op: 0,
                op: Op::Read,
                sector: 0,
                owner: 0,
                buf_off: 0,
                len: 0,
                discard_sectors: 0,
                pages: Vec::new(),
                indirect: Vec::new(),
                answer: None,
                seq: 0,
                flush: false,
                resubmitted: false,
            },
        );
        self.slots[slot as usize] = Some(taken);
        Ok(true)
    }

    /// The outcome a response reports for its request.
    fn judge(&mut self, wire_op: u8, op: Op, sector: u64, rsp: &Response) -> Result<(), Error> {
        // Linux's blkback answers an indirect request with its inner operation (read or write);
        // the protocol header does not say, so accept the indirect operation too.
        let indirect_inner = wire_op == Op::Indirect as u8 && rsp.operation == op as u8;
        if rsp.operation != wire_op && !indirect_inner {
            self.stats.bad_responses += 1;
            return Err(Error::Backend(BackendError::WrongOperation {
                expected: wire_op,
                got: rsp.operation,
            }));
        }
        match rsp.status {
            status::OKAY => Ok(()),
            status::ERROR => {
                self.stats.io_errors += 1;
                Err(Error::Io { op, sector })
            }
            status::EOPNOTSUPP => {
                self.stats.unsupported += 1;
                match op {
                    Op::FlushDiskcache => self.features.flush = false,
                    Op::WriteBarrier => self.features.barrier = false,
                    Op::Discard => self.features.discard = false,
                    _ => {}
                }
                Err(Error::Unsupported(op))
            }
            s => {
                self.stats.bad_responses += 1;
                Err(Error::Backend(BackendError::BadStatus(s)))
            }
        }
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
