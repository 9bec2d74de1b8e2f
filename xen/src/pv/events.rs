//! Event channels: binding (VIRQs, unbound ports for a peer, interdomain), notifying, masking,
//! and dispatch of pending events to handlers.
//!
//! Events are polled, never taken as interrupts: upcalls stay masked (see `arch::traps`), the idle
//! loop blocks in Xen until something is pending, then [`dispatch`] clears and handles each pending,
//! unmasked port in the main context. Handlers therefore need no locking against the code they
//! interrupt: nothing is ever interrupted.

extern crate alloc;

use crate::start_info::{layout, SharedInfo};
use alloc::boxed::Box;
use alloc::vec::Vec;
use arch::hypercall::{evtchn, Errno};
use core::sync::atomic::Ordering;

/// An event-channel port.
pub type Port = u32;

/// Number of ports the 2-level ABI supports on 64-bit guests.
pub const NR_PORTS: u32 = 64 * 64;

/// VIRQ numbers (public/xen.h).
pub mod virq {
    /// The one-shot timer (set_timer_op) expired.
    pub const TIMER: u32 = 0;
    /// Debug key pressed on the Xen console.
    pub const DEBUG: u32 = 1;
}

type Handler = Box<dyn FnMut(Port) + Send>;

/// Handlers indexed by port (Xen hands out low port numbers, so the table stays short; a lookup
/// is one index, no hashing, on every event).
static HANDLERS: spin::Mutex<Vec<Option<Handler>>> = spin::Mutex::new(Vec::new());

/// The handler slot of `port`, created when missing; None for a port no event can arrive on.
fn slot(table: &mut Vec<Option<Handler>>, port: Port) -> Option<&mut Option<Handler>> {
    if port >= NR_PORTS {
        return None;
    }
    let i = port as usize;
    if table.len() <= i {
        table.resize_with(i + 1, || None);
    }
    table.get_mut(i)
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

/// Signals the other end of `port`.
pub fn notify(port: Port) -> Result<(), Errno> {
    evtchn::send(port)
}

/// [`notify`] for paths that cannot report an error (the console).
pub fn notify_raw(port: Port) {
    let _ = notify(port);
}

/// Closes `port` and drops its handler.
pub fn close(port: Port) -> Result<(), Errno> {
    remove_handler(port);
    evtchn::close(port)
}

/// Runs `handler` (in the main context, from [`dispatch`]) whenever `port` fires, and unmasks it.
/// A port beyond the 2-level ABI's [`NR_PORTS`] never fires: its handler is dropped.
pub fn set_handler(port: Port, handler: impl FnMut(Port) + Send + 'static) {
    if let Some(s) = slot(&mut HANDLERS.lock(), port) {
        *s = Some(Box::new(handler));
    }
    unmask(port);
}

/// Stops handling `port` (events on it are still cleared by dispatch).
pub fn remove_handler(port: Port) {
    if let Some(h) = HANDLERS.lock().get_mut(port as usize) {
        *h = None;
    }
}

fn bit(port: Port) -> (usize, u64) {
    ((port / 64) as usize * 8, 1u64 << (port % 64))
}

/// Masks `port`: it stays pending but is not dispatched.
pub fn mask(port: Port) {
    set_mask(shared(), port, true);
}

/// Unmasks `port`; an event that arrived while masked is dispatched on the next pass.
pub fn unmask(port: Port) {
    set_mask(shared(), port, false);
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

/// True when some unmasked port is pending.
pub fn any_pending() -> bool {
    let s = shared();
    (0..64).any(|w| s.pending(w).unwrap_or(0) & !s.mask(w).unwrap_or(u64::MAX) != 0)
}

/// Handles every pending event; returns how many there were.
pub fn dispatch() -> usize {
    take_pending(shared(), |port| {
        // Take the handler out while it runs, so it may (un)register handlers itself.
        let h = HANDLERS
            .lock()
            .get_mut(port as usize)
            .and_then(Option::take);
        if let Some(mut h) = h {
            h(port);
            // Back in its slot, unless it registered a new handler for its port meanwhile.
            if let Some(s @ None) = slot(&mut HANDLERS.lock(), port) {
                *s = Some(h);
            }
        }
    })
}

/// Waits until `port` is pending or `timeout_ns` passed (SCHEDOP_poll), then clears it. Used where
/// the main loop cannot run (the console waiting for its daemon).
pub fn poll_port(port: Port, timeout_ns: u64) {
    let Some(s) = crate::start_info::shared_info() else {
        return;
    };
    let (off, b) = bit(port);
    let m = s.mem();
    // Clear a stale pending bit so that only a new event ends the poll.
    clear_pending(m, off, b);
    let _ = evtchn::poll(&[port], crate::time::now_ns() + timeout_ns);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shmem::ShMem;

    #[test]
    fn handler_slots_grow_to_the_port_and_stop_at_the_abi_limit() {
        let mut t: Vec<Option<Handler>> = Vec::new();
        *slot(&mut t, 5).unwrap() = Some(Box::new(|_| {}));
        assert_eq!(t.len(), 6);
        assert!(t[5].is_some() && t[..5].iter().all(Option::is_none));
        assert!(
            slot(&mut t, 2).unwrap().is_none(),
            "a lower port reuses the table"
        );
        assert_eq!(t.len(), 6);
        assert!(slot(&mut t, NR_PORTS - 1).is_some());
        assert!(slot(&mut t, NR_PORTS).is_none());
        assert!(slot(&mut t, u32::MAX).is_none(), "no table of 4 G entries");
        assert_eq!(t.len(), NR_PORTS as usize);
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
