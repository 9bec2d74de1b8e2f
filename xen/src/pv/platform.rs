//! The Xen side of the services whose logic lives elsewhere: the xenstore transport (event
//! channel + idle loop), the grant table's frames (GNTTABOP_query_size / setup_table), [`XenHal`]
//! for split drivers, lifecycle control (`control/shutdown`: `xl shutdown`, `xl reboot`) and
//! [`Watch`]es that wake a waker when their xenstore watch fires.
//!
//! Xenstore and the idle loop: the transport waits on the xenstore port alone
//! ([`crate::sched::block`] with `Until::Port`), never in the idle loop, so no xenstore call runs the idle loop.
//! The idle loop, after dispatching events, runs [`after_events`]: if the xenstore port fired,
//! it reads the ring, acts on lifecycle requests and wakes the [`Watch`]es whose tokens have
//! events queued. Nothing reads xenstore on a turn where its port did not fire.

extern crate alloc;

use crate::events::{self, Channel, Port};
use crate::grant::{CopyError, GrantCopy, GrantTable, DOMID_SELF};
use crate::hal::{Hal, HalError, SharedPage};
use crate::shmem::ShMem;
use crate::signal::Signal;
use crate::xenstore::{self, Client, Op, Transport, Tx};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use arch::hypercall::{self, gnttab};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Waker;

/// The xenstore ring's transport on Xen: notify through the event channel; wait on that port
/// alone (SCHEDOP_poll, at most 100 ms, so callers' deadlines get checked), leaving every other
/// event pending for the idle loop.
#[derive(Debug)]
pub struct XenTransport {
    chan: Channel,
}

impl Transport for XenTransport {
    fn notify(&mut self) {
        self.chan.notify();
    }

    fn wait(&mut self) -> Result<(), xenstore::Error> {
        let deadline = crate::time::now_ns().saturating_add(100_000_000);
        crate::sched::block(crate::sched::Until::Port(self.chan.port()), Some(deadline));
        Ok(())
    }
}

/// The monotonic clock on Xen, for xenbus timeouts (`Deadline::after(XenClock, ns)`).
#[derive(Debug, Default, Clone, Copy)]
pub struct XenClock;

impl crate::time::Clock for XenClock {
    fn now_ns(&self) -> u64 {
        crate::time::now_ns()
    }
}

static XS: spin::Mutex<Option<Client<XenTransport>>> = spin::Mutex::new(None);

/// Why the xenstore client is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoXenstore;

impl core::fmt::Display for NoXenstore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("no xenstore (dom0 without xenstored, or not connected)")
    }
}

/// Runs `f` with the xenstore client (domUs; dom0 in the fast tier has none).
pub fn with_xenstore<R>(f: impl FnOnce(&mut Client<XenTransport>) -> R) -> Result<R, NoXenstore> {
    let mut g = XS.lock();
    let xs = g.as_mut().ok_or(NoXenstore)?;
    let r = f(xs);
    let refused = xs.take_unawaited_refusals();
    if refused > 0 {
        report_refusals(refused);
    }
    Ok(r)
}

/// Logs requests sent without waiting that xenstored refused (out of line: `with_xenstore` is
/// inlined at every call). At boot those are the lifecycle control's (`init_lifecycle`).
#[inline(never)]
fn report_refusals(n: u32) {
    log::warn!("xenstore: {n} request(s) sent without waiting refused (lifecycle control may be unavailable)");
}

/// Connects the xenstore client to the ring page (pfn) and port from start_info.
pub fn init_xenstore(page: ShMem, port: Port) -> Result<(), xenstore::Error> {
    let chan = Channel::bind(port);
    let c = Client::new(page, XenTransport { chan: chan.clone() })?;
    *XS.lock() = Some(c);
    *XS_CHAN.lock() = Some(chan);
    Ok(())
}

/// The xenstore port's channel, fired by dispatch (and by the transport's own waits).
static XS_CHAN: spin::Mutex<Option<Channel>> = spin::Mutex::new(None);

/// What a [`Watch`] shares with the idle loop: its token and its [`Signal`].
#[derive(Debug)]
struct WatchState {
    token: String,
    signal: Signal,
}

/// The watches the idle loop wakes (by token).
static WATCHES: spin::Mutex<Vec<Arc<WatchState>>> = spin::Mutex::new(Vec::new());

/// The readiness of one xenstore watch token (the watch itself is set with
/// [`Client::watch`]): [`after_events`] fires it, waking its waker, when an event for the token
/// is queued in the client. Its owner then takes the events (`take_event`, `backend_changed`)
/// under [`with_xenstore`]. Dropping it stops the wake-ups.
#[derive(Debug)]
pub struct Watch(Arc<WatchState>);

impl Watch {
    /// Readiness for watch events carrying `token`. It starts fired, so the owner looks once.
    pub fn new(token: &str) -> Watch {
        let st = Arc::new(WatchState {
            token: token.into(),
            signal: Signal::new(true),
        });
        WATCHES.lock().push(st.clone());
        Watch(st)
    }

    /// Wakes `w` at the next event for the token (one waker: a newer one replaces it).
    pub fn register(&self, w: &Waker) {
        self.0.signal.register(w)
    }

    /// True (once) if an event for the token was queued since the last `take`.
    pub fn take(&self) -> bool {
        self.0.signal.take()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        WATCHES.lock().retain(|w| !Arc::ptr_eq(w, &self.0));
    }
}

/// Run by the idle loop after it dispatched events (see the module doc): when the xenstore
/// port fired, reads the ring, handles lifecycle requests and wakes the watches with events.
/// The transport never runs the idle loop, so this never runs inside a xenstore call unless
/// the app sleeps inside `with_xenstore` (then it is put off). Returns whether it woke a watch.
fn after_events() -> bool {
    let fired = XS_CHAN.lock().as_ref().is_some_and(Channel::take);
    if !fired {
        return false;
    }
    let mut wake = Vec::new();
    let request = {
        // Held only if the app blocks in the idle loop inside `with_xenstore` (a
        // `sched::sleep` in the closure; `xs.wait()` is the wait to use there): look again at
        // the next turn, outside.
        let Some(mut g) = XS.try_lock() else {
            if let Some(c) = XS_CHAN.lock().as_ref() {
                c.fire();
            }
            return false;
        };
        let Some(xs) = g.as_mut() else {
            return false;
        };
        let _ = xs.poll();
        for w in WATCHES.lock().iter() {
            if xs.has_event(&w.token) {
                if let Some(k) = w.signal.fire_take() {
                    wake.push(k);
                }
            }
        }
        lifecycle_request(xs)
    };
    let woke = !wake.is_empty();
    for w in wake {
        w.wake();
    }
    if let Some(req) = request {
        lifecycle(&req);
    }
    woke
}

static GNTTAB: spin::Mutex<Option<GrantTable>> = spin::Mutex::new(None);

/// Grant references granted now (a figure of the stats line: it must not grow when nothing new
/// is connected); 0 before the grant table is set up.
pub fn grants_in_use() -> usize {
    GNTTAB.lock().as_ref().map_or(0, GrantTable::granted_count)
}

/// Where the grant table is mapped: a virtual range of pages we gave up, and the machine
/// frames Xen gave for it (kept for a suspend: unmapped before, mapped again after).
#[derive(Debug)]
struct GrantFrames {
    base: u64,
    mfns: Vec<u64>,
}

static GNT_FRAMES: spin::Mutex<Option<GrantFrames>> = spin::Mutex::new(None);

/// GNTTABOP_setup_table for `n` frames (capped by what Xen allows): their machine frames, and
/// the most Xen allows.
fn setup_grant_frames(max_frames: u32) -> Result<(Vec<u64>, u32), HalError> {
    let q = gnttab::query_size(DOMID_SELF).map_err(|e| HalError::Hypercall(e.0))?;
    if q.status != 0 {
        return Err(HalError::Hypercall(q.status as i32));
    }
    let n = q.max_nr_frames.clamp(1, max_frames);
    let mut frames: Vec<u64> = alloc::vec![0; n as usize];
    let status =
        gnttab::setup_table(DOMID_SELF, &mut frames).map_err(|e| HalError::Hypercall(e.0))?;
    if status != 0 {
        return Err(HalError::Hypercall(status as i32));
    }
    Ok((frames, q.max_nr_frames))
}

/// Points page `i` of the range at `base` at machine frame `mfn`.
fn map_frame(base: u64, i: usize, mfn: u64) -> Result<(), HalError> {
    let va = base + i as u64 * 4096;
    let pte = arch::paging::Perm::ReadWrite.pte(mfn);
    // SAFETY: remaps a page of the range we gave up for the grant table (nothing refers to its
    // old contents) onto a grant-table frame Xen gave us, or back onto its own frame.
    unsafe { hypercall::update_va_mapping(va, pte, hypercall::UVMF_INVLPG) }
        .map_err(|e| HalError::Hypercall(e.0))
}

/// Sets up the grant table: as many frames as Xen allows (capped at `max_frames`), mapped over
/// pages taken from the frame allocator. Returns (frames, max frames Xen allows).
///
/// PV: GNTTABOP_setup_table names the frames and we map them over those pages. PVH: the
/// pages' own frames become the grant table (`XENMEM_add_to_physmap`, grant-table frame `i` at
/// page `i`), so the pages already map it.
pub fn init_grant_table(max_frames: u32) -> Result<(u32, u32), HalError> {
    let (frames, max) = if arch::mode::is_pvh() {
        let q = gnttab::query_size(DOMID_SELF).map_err(|e| HalError::Hypercall(e.0))?;
        if q.status != 0 {
            return Err(HalError::Hypercall(q.status as i32));
        }
        (
            alloc::vec![0; q.max_nr_frames.clamp(1, max_frames) as usize],
            q.max_nr_frames,
        )
    } else {
        setup_grant_frames(max_frames)?
    };
    let n = frames.len();
    // A virtual range for the table: contiguous frames whose own memory we give up.
    let base = crate::mm::with_frames(|f| f.alloc_contiguous(n, 1))
        .ok_or(HalError::OutOfMemory)?
        .map_err(|_| HalError::OutOfMemory)?;
    if arch::mode::is_pvh() {
        for i in 0..n as u64 {
            // SAFETY: a page we just took from the frame allocator and give up for the table.
            unsafe {
                hypercall::hvm::add_to_physmap(hypercall::hvm::Space::GrantTable, i, base.0 + i)
            }
            .map_err(|e| HalError::Hypercall(e.0))?;
        }
    } else {
        for (i, &mfn) in frames.iter().enumerate() {
            map_frame(base.addr(), i, mfn)?;
        }
    }
    // SAFETY: n pages at `base` now map the grant table, accessed only through this ShMem.
    let mem = unsafe {
        ShMem::from_raw(
            NonNull::new(base.addr() as *mut u8).ok_or(HalError::OutOfMemory)?,
            n * 4096,
        )
    };
    let t = GrantTable::new(mem).map_err(|_| HalError::OutOfMemory)?;
    *GNTTAB.lock() = Some(t);
    *GNT_FRAMES.lock() = Some(GrantFrames {
        base: base.addr(),
        mfns: frames,
    });
    Ok((n as u32, max))
}

/// Before a suspend: the grant table's pages point back at their own frames (the toolstack
/// refuses to save page tables that map frames not the domain's own).
pub(crate) fn unmap_grant_table() -> Result<(), HalError> {
    let g = GNT_FRAMES.lock();
    let Some(f) = g.as_ref() else { return Ok(()) };
    for i in 0..f.mfns.len() {
        let own = crate::mm::pfn_to_mfn((f.base >> 12) + i as u64);
        map_frame(f.base, i, own)?;
    }
    Ok(())
}

/// After a cancelled suspend: the same grant-table frames again, every grant as it was.
pub(crate) fn remap_grant_table() -> Result<(), HalError> {
    let g = GNT_FRAMES.lock();
    let Some(f) = g.as_ref() else { return Ok(()) };
    for (i, &mfn) in f.mfns.iter().enumerate() {
        map_frame(f.base, i, mfn)?;
    }
    Ok(())
}

/// In a new domain: a new grant table (new frames from Xen, mapped where the old ones were)
/// and fresh bookkeeping: every old grant reference is void.
pub(crate) fn new_grant_table() -> Result<(), HalError> {
    let mut g = GNT_FRAMES.lock();
    let Some(f) = g.as_mut() else { return Ok(()) };
    let frames = if arch::mode::is_pvh() {
        // The same pages become the new domain's grant-table frames.
        for i in 0..f.mfns.len() as u64 {
            // SAFETY: the pages we gave up for the grant table at boot.
            unsafe {
                hypercall::hvm::add_to_physmap(
                    hypercall::hvm::Space::GrantTable,
                    i,
                    (f.base >> 12) + i,
                )
            }
            .map_err(|e| HalError::Hypercall(e.0))?;
        }
        f.mfns.clone()
    } else {
        let (frames, _) = setup_grant_frames(f.mfns.len() as u32)?;
        // Xen allows at least as many as before on a sane host; map what it gave, the rest of
        // the range stays on its own frames.
        for (i, &mfn) in frames.iter().enumerate() {
            map_frame(f.base, i, mfn)?;
        }
        frames
    };
    // SAFETY: frames.len() pages at f.base map the new grant table, accessed only through
    // this ShMem (the old table's ShMem goes with the old GrantTable below).
    let mem = unsafe {
        ShMem::from_raw(
            NonNull::new(f.base as *mut u8).ok_or(HalError::OutOfMemory)?,
            frames.len() * 4096,
        )
    };
    let t = GrantTable::new(mem).map_err(|_| HalError::OutOfMemory)?;
    *GNTTAB.lock() = Some(t);
    f.mfns = frames;
    Ok(())
}

/// Copies with `GNTTABOP_copy`: each [`GrantCopy`] moves bytes between a page another domain
/// granted us and one of our own frames (or between two such pages), without mapping anything.
/// Every copy's status is checked: the first failure comes back as [`CopyError::Failed`] (the
/// batch's other copies were still done). Copies that would cross a page are refused before
/// the hypercall.
pub fn grant_copy(copies: &[GrantCopy]) -> Result<(), CopyError> {
    let mut ops = crate::grant::copy_ops(copies)?;
    // Xen takes the whole array at once and continues the hypercall itself when preempted.
    for chunk in ops.chunks_mut(COPY_BATCH) {
        // SAFETY: the local ends are frames the caller handed over for the copy (its drivers'
        // granted buffers, accessed only through ShMem); the rest Xen checks.
        unsafe { gnttab::copy(chunk) }.map_err(|e| CopyError::Hypercall(e.0))?;
    }
    crate::grant::copy_result(&ops)
}

/// Most copies passed in one hypercall.
const COPY_BATCH: usize = 256;

/// Grants `domid` access to machine frame `mfn`.
pub fn grant_access(domid: u16, mfn: u64, readonly: bool) -> Result<u32, HalError> {
    let mut g = GNTTAB.lock();
    let t = g.as_mut().ok_or(HalError::GrantsExhausted)?;
    t.grant_access(domid, mfn, readonly).map_err(|e| match e {
        crate::grant::GrantError::Exhausted => HalError::GrantsExhausted,
        _ => HalError::BadGrant,
    })
}

/// Ends a grant (fails while the peer has it mapped).
pub fn end_access(gref: u32) -> Result<(), HalError> {
    let mut g = GNTTAB.lock();
    let t = g.as_mut().ok_or(HalError::BadGrant)?;
    t.end_access(gref).map_err(|e| match e {
        crate::grant::GrantError::InUse(_) => HalError::GrantInUse,
        _ => HalError::BadGrant,
    })
}

/// [`Hal`] on Xen: frames from the frame allocator, the real grant table and event channels.
#[derive(Debug, Default, Clone, Copy)]
pub struct XenHal;

impl Hal for XenHal {
    fn alloc_page(&mut self) -> Result<SharedPage, HalError> {
        let page = crate::mm::Page::alloc().map_err(|_| HalError::OutOfMemory)?;
        let p = SharedPage {
            mem: page.mem(),
            mfn: page.mfn(),
        };
        core::mem::forget(page); // owned by the SharedPage until free_page
        Ok(p)
    }

    /// `n` frames contiguous in pseudo-physical memory, hence in our address space (every frame
    /// is mapped at `pfn * 4096`), zeroed; their machine frames need not be contiguous.
    fn alloc_pages(&mut self, n: usize) -> Result<(ShMem, Vec<u64>), HalError> {
        if n == 0 {
            return Err(HalError::OutOfMemory);
        }
        let first = crate::mm::with_frames(|f| f.alloc_contiguous(n, 1))
            .ok_or(HalError::OutOfMemory)?
            .map_err(|_| HalError::OutOfMemory)?;
        let base = NonNull::new(first.addr() as *mut u8).ok_or(HalError::OutOfMemory)?;
        // SAFETY: the n frames from `first` were just taken from the frame allocator, are mapped
        // writable at pfn * 4096, and are accessed only through this ShMem (and its page slices)
        // until freed page by page with free_page.
        let mem = unsafe { ShMem::from_raw(base, n * 4096) };
        mem.zero(0, n * 4096).map_err(|_| HalError::OutOfMemory)?;
        let mfns = (0..n as u64)
            .map(|i| crate::mm::pfn_to_mfn(first.0 + i))
            .collect();
        Ok((mem, mfns))
    }

    /// By the page's address (every frame is mapped at `pfn * 4096`), not its frame number,
    /// which a restore changes.
    fn free_page(&mut self, page: SharedPage) {
        let pfn = page.mem.as_ptr() as u64 >> 12;
        let _ = crate::mm::with_frames(|f| f.free(crate::mm::frames::Pfn(pfn)));
    }

    fn frame(&self, mem: &ShMem) -> u64 {
        crate::mm::pfn_to_mfn(mem.as_ptr() as u64 >> 12)
    }

    fn generation(&self) -> u64 {
        crate::domain::generation()
    }

    fn grant(&mut self, domid: u16, mfn: u64, readonly: bool) -> Result<u32, HalError> {
        grant_access(domid, mfn, readonly)
    }

    fn end_grant(&mut self, gref: u32) -> Result<(), HalError> {
        end_access(gref)
    }

    fn alloc_evtchn(&mut self, remote: u16) -> Result<u32, HalError> {
        let p = events::alloc_unbound(remote).map_err(|e| HalError::Hypercall(e.0))?;
        // Unmasked, so that its events end the idle loop's block; the driver's glue binds a
        // Channel to it to be woken.
        events::unmask(p);
        Ok(p)
    }

    fn close_evtchn(&mut self, port: u32) {
        let _ = events::close(port);
    }

    fn notify(&mut self, port: u32) {
        events::notify_raw(port);
    }

    fn now_ns(&self) -> u64 {
        crate::time::now_ns()
    }
}

const CONTROL_TOKEN: &str = "xenrt-control";
static CONTROL_READY: AtomicBool = AtomicBool::new(false);

/// What handles `control/shutdown = suspend` (`xen::suspend`, once it set up what the
/// toolstack needs); set with [`set_suspend_handler`]. The platform does not know the suspend
/// path (which uses the platform), only that there is one.
static SUSPEND: spin::Mutex<Option<fn()>> = spin::Mutex::new(None);

/// Set by [`defer_shutdown`]: a poweroff or reboot request is handed to the app
/// ([`shutdown_requested`]) instead of ending the domain at once.
static DEFER: AtomicBool = AtomicBool::new(false);
/// The deferred request: 0 none, 1 poweroff, 2 reboot.
static REQUESTED: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
static SHUTDOWN: crate::signal::Signal = crate::signal::Signal::new(false);

/// Lets the app finish before the domain ends on `xl shutdown` / `xl reboot`: the first such
/// request completes [`shutdown_requested`] (the app then flushes what it must and returns
/// from `main`, or calls `domain::exit`); a second request ends the domain at once, so a stuck
/// app cannot hold a shutdown forever (`xl shutdown` twice, or `xl destroy`).
pub fn defer_shutdown() {
    DEFER.store(true, Ordering::Release);
}

/// Completes when the toolstack asked for a poweroff or reboot (after [`defer_shutdown`]):
/// which one, as the exit code the domain should end with.
pub async fn shutdown_requested() -> crate::domain::ExitCode {
    loop {
        match REQUESTED.load(Ordering::Acquire) {
            1 => return crate::domain::ExitCode::Poweroff,
            2 => return crate::domain::ExitCode::Reboot,
            _ => SHUTDOWN.wait().await,
        }
    }
}

/// Hands a poweroff (1) or reboot (2) to the app if it deferred shutdown and has not had one.
fn deferred(code: u8) -> bool {
    if !DEFER.load(Ordering::Acquire) {
        return false;
    }
    if REQUESTED
        .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        log::warn!("lifecycle: second shutdown request: ending the domain now");
        return false;
    }
    SHUTDOWN.fire();
    true
}

/// The handler, copied out: the lock is not held while it runs (it writes the features).
fn suspend_handler() -> Option<fn()> {
    *SUSPEND.lock()
}

/// Makes `f` the handler of suspend requests, and `control/feature-suspend` advertised (by
/// [`init_lifecycle`], and again after each restore).
pub fn set_suspend_handler(f: fn()) {
    *SUSPEND.lock() = Some(f);
}

/// The control features we support: poweroff, reboot, and suspend (save, restore, migration)
/// when a suspend handler is set.
fn write_features(xs: &mut Client<XenTransport>) -> Result<(), xenstore::Error> {
    for op in control_ops(false) {
        if let Op::Write(path, value) = op {
            xs.write(Tx::NONE, path, value)?;
        }
    }
    Ok(())
}

/// Writing the control features (suspend only with a handler), and with `watch` setting the
/// `control/shutdown` watch.
fn control_ops(watch: bool) -> &'static [Op<'static>] {
    const OPS: [Op<'static>; 4] = [
        Op::Watch("control/shutdown", CONTROL_TOKEN),
        Op::Write("control/feature-poweroff", b"1"),
        Op::Write("control/feature-reboot", b"1"),
        Op::Write("control/feature-suspend", b"1"),
    ];
    let end = if suspend_handler().is_some() { 4 } else { 3 };
    &OPS[usize::from(!watch)..end]
}

/// Advertises poweroff, reboot (and suspend) support and watches `control/shutdown`. The
/// requests go out at once and their replies are read with the next request's (no round trip
/// of their own at boot: [`Client::send_later`]); a refusal is logged then.
pub fn init_lifecycle() -> Result<(), xenstore::Error> {
    with_xenstore(|xs| xs.send_later(Tx::NONE, control_ops(true)))
        .map_err(|_| xenstore::Error::Broken)??;
    CONTROL_READY.store(true, Ordering::Release);
    crate::sched::set_after_events(after_events);
    Ok(())
}

/// A shutdown request from the toolstack, if the control watch fired with one (acknowledged
/// by clearing it, as Linux does).
fn lifecycle_request(xs: &mut Client<XenTransport>) -> Option<String> {
    if !CONTROL_READY.load(Ordering::Acquire) {
        return None;
    }
    xs.take_event(CONTROL_TOKEN)?;
    while xs.take_event(CONTROL_TOKEN).is_some() {}
    let req = xs.read_string(Tx::NONE, "control/shutdown").ok()?;
    if req.is_empty() {
        return None;
    }
    let _ = xs.write(Tx::NONE, "control/shutdown", b"");
    Some(req)
}

/// Acts on a `control/shutdown` request: `poweroff` and `reboot` end the domain; `suspend`
/// runs the suspend handler (`xen::suspend::suspend`: it returns in place or in a new domain).
fn lifecycle(req: &str) {
    match req {
        "poweroff" | "halt" => {
            log::info!("lifecycle: shutdown requested by the toolstack");
            if !deferred(1) {
                crate::domain::exit(crate::domain::ExitCode::Poweroff)
            }
        }
        "reboot" => {
            log::info!("lifecycle: reboot requested by the toolstack");
            if !deferred(2) {
                crate::domain::exit(crate::domain::ExitCode::Reboot)
            }
        }
        "suspend" => match suspend_handler() {
            Some(f) => f(),
            None => log::warn!("lifecycle: suspend requested, but this guest cannot suspend"),
        },
        other => log::warn!(
            "lifecycle: unknown control/shutdown request {} ignored",
            crate::console::Quoted(other)
        ),
    }
}

/// In a new domain: the xenstore channel moves to the new port from start_info (the ring page
/// is the same), every watch is set again, the control features written again (the toolstack
/// built the new domain's tree afresh), and every [`Watch`] fires so its owner looks.
pub(crate) fn xenstore_new_domain(port: Port) -> Result<(), xenstore::Error> {
    if let Some(c) = XS_CHAN.lock().as_ref() {
        c.rebind(port);
    }
    let r = with_xenstore(|xs| {
        xs.rewatch()?;
        write_features(xs)
    })
    .map_err(|_| xenstore::Error::Broken)?;
    let mut wake = Vec::new();
    for w in WATCHES.lock().iter() {
        if let Some(k) = w.signal.fire_take() {
            wake.push(k);
        }
    }
    for k in wake {
        k.wake();
    }
    // The idle loop reads what the new watches queued.
    if let Some(c) = XS_CHAN.lock().as_ref() {
        c.fire();
    }
    r
}
