//! Event channels: binding (VIRQs, unbound ports for a peer, interdomain), notifying, masking,
//! and dispatch of pending events to whoever waits on them.
//!
//! Events are polled, never taken as interrupts: upcalls stay masked (see `arch::traps`), the idle
//! loop blocks in Xen until something is pending, then [`dispatch`] clears each pending, unmasked
//! port in the main context and fires its [`Channel`]: the channel's flag is set and the one
//! waker waiting on it (a task, or an executor [`Source`](crate::exec::Source)) is woken. Nothing
//! else runs; a port nobody holds a channel for is just cleared.
//!
//! A [`Channel`] is a handle, not a port: [`Channel::rebind`] re-points it at a new port number
//! (save/restore and migration rebind every event channel), and whatever waits on it keeps
//! waiting on the same handle.

extern crate alloc;

use crate::signal::Signal;
use crate::start_info::{layout, SharedInfo};
use alloc::sync::Arc;
use alloc::vec::Vec;
use arch::hypercall::{evtchn, Errno};
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::Waker;

/// An event-channel port.
pub type Port = u32;

/// Number of ports the 2-level ABI supports on 64-bit guests.
pub const NR_PORTS: u32 = 64 * 64;

/// The port of a channel a restore into a new domain made void (no port has this number):
/// notifying it does nothing, no event arrives on it. Its owner rebinds it
/// ([`Channel::rebind`]) or drops it.
pub const VOID: Port = u32::MAX;

/// VIRQ numbers (public/xen.h).
pub mod virq {
    /// The one-shot timer (set_timer_op) expired.
    pub const TIMER: u32 = 0;
    /// Debug key pressed on the Xen console.
    pub const DEBUG: u32 = 1;
}

/// What waits on one port: the port it names now and the [`Signal`] [`dispatch`] fires.
#[derive(Debug)]
struct State {
    port: AtomicU32,
    signal: Signal,
}

/// Ports and the channel bound to each, indexed by port (Xen hands out low port numbers, so the
/// table stays short; a lookup is one index, no hashing, on every event). Pure logic: the
/// global [`TABLE`] is the guest's; tests make their own.
#[derive(Debug, Default)]
pub struct Table {
    slots: Vec<Option<Arc<State>>>,
}

impl Table {
    /// An empty table.
    pub const fn new() -> Table {
        Table { slots: Vec::new() }
    }

    /// The slot of `port`, created when missing; None for a port no event can arrive on.
    fn slot(&mut self, port: Port) -> Option<&mut Option<Arc<State>>> {
        if port >= NR_PORTS {
            return None;
        }
        let i = port as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots.get_mut(i)
    }

    /// A channel on `port` (replacing any channel bound to it before, which then never fires).
    pub fn bind(&mut self, port: Port) -> Channel {
        let st = Arc::new(State {
            port: AtomicU32::new(port),
            signal: Signal::new(false),
        });
        if let Some(s) = self.slot(port) {
            *s = Some(st.clone());
        }
        Channel(st)
    }

    /// Moves `ch` to `port`.
    pub fn rebind(&mut self, ch: &Channel, port: Port) {
        self.unbind(ch);
        ch.0.port.store(port, Ordering::Release);
        if let Some(s) = self.slot(port) {
            *s = Some(ch.0.clone());
        }
    }

    /// Takes `ch` out of the table (if it is still bound where it says).
    fn unbind(&mut self, ch: &Channel) {
        let old = ch.0.port.load(Ordering::Acquire) as usize;
        if let Some(s) = self.slots.get_mut(old) {
            if s.as_ref().is_some_and(|x| Arc::ptr_eq(x, &ch.0)) {
                *s = None;
            }
        }
    }

    /// An event on `port`: fires its channel; returns the waker to wake, if one waits.
    pub fn fire(&self, port: Port) -> Option<Waker> {
        self.slots.get(port as usize)?.as_ref()?.signal.fire_take()
    }

    /// A restore into a new domain: every port number is void (the new domain's ports are
    /// new, and the old numbers may already name someone else's). Empties the table, points
    /// every channel at [`VOID`] and fires it, so its owner looks (and sees the new
    /// generation); returns the wakers to wake.
    pub fn void_all(&mut self) -> Vec<Waker> {
        let mut wake = Vec::new();
        for st in self.slots.drain(..).flatten() {
            st.port.store(VOID, Ordering::Release);
            if let Some(w) = st.signal.fire_take() {
                wake.push(w);
            }
        }
        wake
    }

    /// Whether a channel is bound to `port`.
    pub fn is_bound(&self, port: Port) -> bool {
        self.slots.get(port as usize).is_some_and(Option::is_some)
    }

    /// Ports with a channel bound.
    pub fn bound_count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

/// Ports with a channel bound in the guest's table (a figure of the stats line: it must not
/// grow when nothing new is connected).
pub fn channels_bound() -> usize {
    TABLE.lock().bound_count()
}

/// The guest's channels, fired by [`dispatch`].
static TABLE: spin::Mutex<Table> = spin::Mutex::new(Table::new());

/// A handle on an event-channel port that something waits on: [`dispatch`] sets its flag and
/// wakes its waker when the port fires. Cheap to clone (clones are the same channel). Dropping
/// the last handle does not unbind the port: call [`Channel::unbind`] or [`close`].
#[derive(Debug, Clone)]
pub struct Channel(Arc<State>);

impl Channel {
    /// Binds a channel to `port` in the guest's table and unmasks the port.
    pub fn bind(port: Port) -> Channel {
        let ch = TABLE.lock().bind(port);
        unmask(port);
        ch
    }

    /// The port it is bound to now.
    pub fn port(&self) -> Port {
        self.0.port.load(Ordering::Acquire)
    }

    /// Re-points the channel at `port` (after save/restore rebound the event channel): its
    /// waiters keep waiting, now for events on `port`. The old port is no longer watched.
    pub fn rebind(&self, port: Port) {
        TABLE.lock().rebind(self, port);
        unmask(port);
    }

    /// Stops watching its port (events on it are still cleared by dispatch).
    pub fn unbind(&self) {
        TABLE.lock().unbind(self);
    }

    /// True (once) if the port fired since the last `take`.
    pub fn take(&self) -> bool {
        self.0.signal.take()
    }

    /// Wakes `w` at the next event on the port (the one waker per channel: a newer
    /// registration replaces it). An event that fired before is not lost: check [`take`](Self::take)
    /// after registering.
    pub fn register(&self, w: &Waker) {
        self.0.signal.register(w)
    }

    /// Fires the channel by hand, as an event on its port would (for transports that see the
    /// port pending without dispatch, and for tests).
    pub fn fire(&self) {
        self.0.signal.fire()
    }

    /// Signals the other end.
    pub fn notify(&self) {
        notify_raw(self.port());
    }

    /// A future that completes at the next event on the port (at once if one fired since the
    /// last `take`), consuming it.
    pub fn wait(&self) -> crate::signal::Wait<'_> {
        self.0.signal.wait()
    }
}

fn shared() -> &'static SharedInfo {
    crate::start_info::shared_info().expect("boot maps shared_info before any event use")
}

/// Binds VIRQ `virq` of vCPU 0 to a new port.
pub fn bind_virq(virq: u32) -> Result<Port, Errno> {
    evtchn::bind_virq(virq, 0)
}

/// Allocates a port that domain `remote` may bind to.
pub fn alloc_unbound(remote: u16) -> Result<Port, Errno> {
    evtchn::alloc_unbound(remote)
}

/// Binds to port `remote_port` of domain `remote` (which allocated it unbound for us).
pub fn bind_interdomain(remote: u16, remote_port: Port) -> Result<Port, Errno> {
    evtchn::bind_interdomain(remote, remote_port)
}

/// Signals the other end of `port` ([`VOID`] and other impossible ports: `EINVAL`, no call).
pub fn notify(port: Port) -> Result<(), Errno> {
    if port >= NR_PORTS {
        return Err(Errno::EINVAL);
    }
    evtchn::send(port)
}

/// A restore into a new domain: every channel is moved to [`VOID`] and fired (see
/// [`Table::void_all`]); returns the wakers to wake once the platform rebound its own.
pub(crate) fn void_all() -> Vec<Waker> {
    TABLE.lock().void_all()
}

/// [`notify`] for paths that cannot report an error (the console).
pub fn notify_raw(port: Port) {
    let _ = notify(port);
}

/// Closes `port` and unbinds its channel, if any.
pub fn close(port: Port) -> Result<(), Errno> {
    if port >= NR_PORTS {
        return Err(Errno::EINVAL);
    }
    {
        let mut t = TABLE.lock();
        if let Some(s) = t.slots.get_mut(port as usize) {
            *s = None;
        }
    }
    evtchn::close(port)
}

fn bit(port: Port) -> (usize, u64) {
    ((port / 64) as usize * 8, 1u64 << (port % 64))
}

/// Masks `port`: it stays pending but is not dispatched.
pub fn mask(port: Port) {
    if let Some(s) = crate::start_info::shared_info() {
        set_mask(s, port, true);
    }
}

/// Unmasks `port`, so that an event on it ends the idle loop's block; an event that arrived
/// while masked is dispatched on the next pass. (No-op before shared_info is mapped, and on
/// the host.)
pub fn unmask(port: Port) {
    if let Some(s) = crate::start_info::shared_info() {
        set_mask(s, port, false);
    }
}

fn set_mask(s: &SharedInfo, port: Port, masked: bool) {
    if port >= NR_PORTS {
        return;
    }
    let (off, b) = bit(port);
    let m = s.mem();
    let old = m
        .load_u64(layout::EVTCHN_MASK + off, Ordering::Acquire)
        .unwrap_or(0);
    let new = if masked { old | b } else { old & !b };
    let _ = m.store_u64(layout::EVTCHN_MASK + off, new, Ordering::Release);
    if !masked
        && m.load_u64(layout::EVTCHN_PENDING + off, Ordering::Acquire)
            .unwrap_or(0)
            & b
            != 0
    {
        // Pending while masked: Xen did not flag it in the selector; do it so block() wakes.
        let sel = m
            .load_u64(layout::PENDING_SEL, Ordering::Acquire)
            .unwrap_or(0);
        let _ = m.store_u64(
            layout::PENDING_SEL,
            sel | 1 << (port / 64),
            Ordering::Release,
        );
        let _ = m.store_u8(layout::UPCALL_PENDING, 1, Ordering::Release);
    }
}

/// Clears exactly `bits` of the pending word at byte `off` of the pending array (Xen may set
/// other bits meanwhile: each 32-bit half is compare-exchanged until it sticks).
fn clear_pending(m: &crate::shmem::ShMem, off: usize, bits: u64) {
    let off = layout::EVTCHN_PENDING + off;
    for (half, mask) in [(0, bits as u32), (4, (bits >> 32) as u32)] {
        if mask == 0 {
            continue;
        }
        loop {
            let cur = m.load_u32(off + half, Ordering::Acquire).unwrap_or(0);
            match m.compare_exchange_u32(off + half, cur, cur & !mask, Ordering::AcqRel) {
                Ok(Err(_)) => continue, // changed under us: retry
                _ => break,             // done, or out of bounds (nothing to clear)
            }
        }
    }
}

/// Clears and returns every pending, unmasked port, lowest first, calling `f` for each. Pure
/// logic over the shared_info page (tested on the host).
pub fn take_pending(s: &SharedInfo, mut f: impl FnMut(Port)) -> usize {
    let m = s.mem();
    let mut n = 0;
    // Clear the summary flags first: anything raised after this is seen on the next pass.
    let _ = m.store_u8(layout::UPCALL_PENDING, 0, Ordering::SeqCst);
    let _ = m.store_u64(layout::PENDING_SEL, 0, Ordering::SeqCst);
    for word in 0..64 {
        let p = s.pending(word).unwrap_or(0) & !s.mask(word).unwrap_or(u64::MAX);
        if p == 0 {
            continue;
        }
        clear_pending(m, 8 * word, p);
        let mut bits = p;
        while bits != 0 {
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            f(word as u32 * 64 + b);
            n += 1;
        }
    }
    n
}

/// Masks (true) or unmasks event upcalls on vCPU 0: PV, shared_info's
/// `vcpu_info.evtchn_upcall_mask` (Xen delivers a pending upcall at the next hypercall or
/// iret); PVH, the CPU's interrupt flag (a pending upcall is delivered as soon as it is set).
pub fn set_upcalls_masked(masked: bool) {
    if arch::mode::is_pvh() {
        arch::traps::set_event_interrupts(!masked);
    } else if let Some(s) = crate::start_info::shared_info() {
        let _ = s
            .vcpu0()
            .store_u8(layout::UPCALL_MASK, masked as u8, Ordering::SeqCst);
    }
}

/// True when some unmasked port is pending.
pub fn any_pending() -> bool {
    let s = shared();
    (0..64).any(|w| s.pending(w).unwrap_or(0) & !s.mask(w).unwrap_or(u64::MAX) != 0)
}

/// Events dispatched since boot (for stats).
pub static DISPATCHED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Clears every pending event and fires the channel bound to each port (waking its waiter);
/// returns how many there were.
pub fn dispatch() -> usize {
    let mut wake: Vec<Waker> = Vec::new();
    let n = {
        let t = TABLE.lock();
        take_pending(shared(), |port| {
            if let Some(w) = t.fire(port) {
                wake.push(w);
            }
        })
    };
    DISPATCHED.fetch_add(n as u64, Ordering::Relaxed);
    // Outside the table's lock: a woken waiter may bind or rebind channels.
    for w in wake {
        w.wake();
    }
    n
}

/// Clears `port`'s pending bit and fires its channel if it was pending: for a wait on one port
/// ([`sched::block`](crate::sched::block) with `Until::Port`) that must not dispatch the
/// others. Returns whether it was pending.
pub fn take_port(port: Port) -> bool {
    let Some(s) = crate::start_info::shared_info() else {
        return false;
    };
    let (off, b) = bit(port);
    let m = s.mem();
    let pending = m
        .load_u64(layout::EVTCHN_PENDING + off, Ordering::Acquire)
        .unwrap_or(0)
        & b
        != 0;
    if pending {
        clear_pending(m, off, b);
        let w = TABLE.lock().fire(port);
        if let Some(w) = w {
            w.wake();
        }
    }
    pending
}

/// Clears a stale pending bit of `port` without firing anything, so that only a new event
/// ends a wait on it (the console waiting for its daemon).
pub fn clear_port(port: Port) {
    if let Some(s) = crate::start_info::shared_info() {
        let (off, b) = bit(port);
        clear_pending(s.mem(), off, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shmem::ShMem;
    use core::future::Future;
    use core::task::Context;

    #[test]
    fn table_slots_grow_to_the_port_and_stop_at_the_abi_limit() {
        let mut t = Table::new();
        let a = t.bind(5);
        assert_eq!(t.slots.len(), 6);
        assert!(t.is_bound(5) && (0..5).all(|p| !t.is_bound(p)));
        let _b = t.bind(2);
        assert_eq!(t.slots.len(), 6, "a lower port reuses the table");
        assert_eq!(t.bound_count(), 2);
        t.rebind(&a, 3);
        assert_eq!(t.bound_count(), 2, "a rebound channel is counted once");
        let _c = t.bind(NR_PORTS - 1);
        let d = t.bind(NR_PORTS);
        let _e = t.bind(u32::MAX);
        assert_eq!(t.slots.len(), NR_PORTS as usize, "no table of 4 G entries");
        assert!(t.fire(NR_PORTS).is_none() && !d.take());
    }

    struct Count(core::sync::atomic::AtomicUsize);
    impl alloc::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_event_wakes_exactly_the_waker_on_its_port() {
        let mut t = Table::new();
        let (a, b) = (t.bind(3), t.bind(9));
        let (wa, wb) = (
            Arc::new(Count(Default::default())),
            Arc::new(Count(Default::default())),
        );
        a.register(&Waker::from(wa.clone()));
        b.register(&Waker::from(wb.clone()));
        t.fire(9).unwrap().wake();
        assert_eq!(wa.0.load(Ordering::SeqCst), 0);
        assert_eq!(wb.0.load(Ordering::SeqCst), 1);
        assert!(b.take() && !b.take(), "fired once, taken once");
        assert!(!a.take());
        assert!(
            t.fire(9).is_none(),
            "a waker is woken once per registration"
        );
        assert!(b.take(), "... but the event is still recorded");
        assert!(t.fire(4).is_none(), "an unbound port fires nothing");
    }

    #[test]
    fn a_rebound_channel_keeps_its_waiter_on_the_new_port() {
        let mut t = Table::new();
        let ch = t.bind(7);
        let w = Arc::new(Count(Default::default()));
        ch.register(&Waker::from(w.clone()));
        t.rebind(&ch, 12);
        assert_eq!(ch.port(), 12);
        assert!(!t.is_bound(7), "the old port is no longer watched");
        assert!(t.fire(7).is_none() && !ch.take());
        t.fire(12).unwrap().wake();
        assert_eq!(w.0.load(Ordering::SeqCst), 1);
        assert!(ch.take());
        // Moving a channel off a port another channel took over since leaves that one bound.
        let old = t.bind(30);
        let new = t.bind(30);
        t.rebind(&old, 31);
        let _ = t.fire(30);
        assert!(new.take() && !old.take());
        let _ = t.fire(31);
        assert!(old.take() && !new.take());
    }

    #[test]
    fn void_all_fires_every_channel_once_and_no_old_port_reaches_it() {
        let mut t = Table::new();
        let (a, b) = (t.bind(3), t.bind(9));
        let w = Arc::new(Count(Default::default()));
        a.register(&Waker::from(w.clone()));
        let wake = t.void_all();
        assert_eq!(
            wake.len(),
            1,
            "the one registered waker, to wake after the rebinds"
        );
        for k in wake {
            k.wake();
        }
        assert_eq!(w.0.load(Ordering::SeqCst), 1);
        assert!(a.take() && b.take(), "both fired, so both owners look");
        assert_eq!((a.port(), b.port()), (VOID, VOID));
        // The new domain hands out the old numbers again: they reach the new channels only.
        let c = t.bind(3);
        assert!(t.fire(3).is_none());
        assert!(c.take() && !a.take());
        assert!(!t.is_bound(9) && t.fire(9).is_none() && !b.take());
        assert!(
            notify(VOID).is_err() && close(VOID).is_err(),
            "no call for a void port"
        );
        // A void channel rebinds like any other.
        t.rebind(&a, 12);
        let _ = t.fire(12);
        assert!(a.take() && a.port() == 12);
        assert!(t.void_all().is_empty() && !t.is_bound(12) && !t.is_bound(3));
    }

    #[test]
    fn wait_completes_on_an_event_fired_before_or_after_it_is_polled() {
        let mut t = Table::new();
        let ch = t.bind(1);
        let w = Arc::new(Count(Default::default()));
        let waker = Waker::from(w.clone());
        let mut cx = Context::from_waker(&waker);
        let mut f = core::pin::pin!(ch.wait());
        assert!(f.as_mut().poll(&mut cx).is_pending());
        t.fire(1).unwrap().wake();
        assert_eq!(w.0.load(Ordering::SeqCst), 1);
        assert!(f.as_mut().poll(&mut cx).is_ready());
        let _ = t.fire(1);
        assert!(core::pin::pin!(ch.wait()).poll(&mut cx).is_ready());
    }

    #[test]
    fn take_pending_clears_only_unmasked_ports_in_order() {
        let m = ShMem::new(4096);
        let s = SharedInfo::new(m.clone());
        let set = |base: usize, port: u32| {
            let off = base + (port / 64) as usize * 8;
            let v = m.load_u64(off, Ordering::Relaxed).unwrap();
            m.store_u64(off, v | 1 << (port % 64), Ordering::Relaxed)
                .unwrap();
        };
        for p in [3, 40, 64, 200, 4095] {
            set(layout::EVTCHN_PENDING, p);
        }
        set(layout::EVTCHN_MASK, 40);
        m.store_u8(layout::UPCALL_PENDING, 1, Ordering::Relaxed)
            .unwrap();
        let mut seen = vec![];
        assert_eq!(take_pending(&s, |p| seen.push(p)), 4);
        assert_eq!(seen, [3, 64, 200, 4095]);
        assert_eq!(
            m.load_u8(layout::UPCALL_PENDING, Ordering::Relaxed)
                .unwrap(),
            0
        );
        assert_eq!(
            s.pending(0).unwrap(),
            1 << 40,
            "the masked port stays pending"
        );
        seen.clear();
        set_mask(&s, 40, false);
        assert_eq!(
            m.load_u8(layout::UPCALL_PENDING, Ordering::Relaxed)
                .unwrap(),
            1
        );
        take_pending(&s, |p| seen.push(p));
        assert_eq!(seen, [40]);
    }
}
