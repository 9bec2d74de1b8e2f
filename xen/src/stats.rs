//! The guest's own figures, published for dom0 while it runs: one `key=value ...` line in the
//! xenstore node [`NODE`] (`data/xenrt/stats`, under the domain's home, which the toolstack
//! makes writable by the guest). dom0 reads it with
//! `xenstore-read /local/domain/DOMID/data/xenrt/stats`.
//!
//! [`memory`] gives the fields every guest has (heap and frames); drivers and apps add theirs
//! (netfront: sockets, TX-full count, held SYNs; httpd: connections, shed, 408s). Each write
//! is one xenstore round trip (a few milliseconds), so publishers write every few seconds.

use alloc::string::String;
use core::fmt::Write;

/// The node, relative to the domain's home (`/local/domain/DOMID/`).
pub const NODE: &str = "data/xenrt/stats";

/// The readiness node, relative to the domain's home: written once the app's listeners are
/// open (see [`ready`]), with [`ready_value`]'s `MS ADDR:PORT...`.
pub const READY_NODE: &str = "data/xenrt/ready";

/// Nanoseconds shown as milliseconds with one decimal (`12.4`).
#[derive(Debug, Clone, Copy)]
pub struct Millis(pub u64);

impl core::fmt::Display for Millis {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let tenths = (self.0 + 50_000) / 100_000;
        write!(f, "{}.{}", tenths / 10, tenths % 10)
    }
}

/// The readiness node's value: `MS ENDPOINT ENDPOINT...` (MS from `ns`, one decimal).
pub fn ready_value(ns: u64, endpoints: &[String]) -> String {
    let mut v = alloc::format!("{}", Millis(ns));
    for e in endpoints {
        v.push(' ');
        v.push_str(e);
    }
    v
}

/// Writes `value` to [`READY_NODE`].
pub fn publish_ready(value: &str) -> Result<(), String> {
    crate::platform::with_xenstore(|xs| {
        xs.write(crate::xenstore::Tx::NONE, READY_NODE, value.as_bytes())
    })
    .map_err(|_| String::from("no xenstore"))?
    .map_err(|e| alloc::format!("{READY_NODE}: {e}"))
}

/// The memory figures, in bytes and frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// Heap bytes allocated.
    pub heap_used: usize,
    /// Heap bytes free (without growing).
    pub heap_free: usize,
    /// Frames (4 KiB pages) left in the frame allocator, beyond the heap.
    pub frames_free: usize,
}

/// The memory figures now.
pub fn memory() -> Memory {
    let h = crate::mm::HEAP.stats();
    Memory {
        heap_used: h.used,
        heap_free: h.free,
        frames_free: crate::mm::free_frames(),
    }
}

/// A stats line under construction: `uptime_s=.. heap_used=.. ...`.
#[derive(Debug, Clone, Default)]
pub struct Line(String);

impl Line {
    /// A line starting with the uptime (whole seconds since boot, `now_ns`) and `mem`.
    pub fn new(now_ns: u64, mem: Memory) -> Line {
        let mut l = Line(String::new());
        l.add("uptime_s", now_ns / 1_000_000_000);
        l.add("heap_used", mem.heap_used as u64);
        l.add("heap_free", mem.heap_free as u64);
        l.add("frames_free", mem.frames_free as u64);
        l
    }

    /// Appends the event loop's counters since boot: `hypercalls` (every hypercall made),
    /// `turns` (executor turns), `source_polls` (sources polled: a network stack, a disk),
    /// `parks` (times the executor had nothing ready and ran the idle loop), `blocks` (times the
    /// idle loop blocked in Xen) and `events` (event-channel events dispatched). Per request:
    /// divide their change by the requests served meanwhile.
    pub fn add_loop(&mut self) -> &mut Line {
        let e = crate::exec::stats();
        self.add("hypercalls", arch::hypercall::calls());
        self.add("turns", e.turns);
        self.add("source_polls", e.source_polls);
        self.add("parks", e.parks);
        self.add(
            "blocks",
            crate::sched::BLOCKS.load(core::sync::atomic::Ordering::Relaxed),
        );
        self.add(
            "events",
            crate::events::DISPATCHED.load(core::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Appends what the guest holds from Xen: `grants` (grant references granted now) and
    /// `channels` (event-channel ports with a channel bound). Neither may grow while nothing
    /// new is connected, e.g. across save/restore cycles.
    pub fn add_xen(&mut self) -> &mut Line {
        self.add("grants", crate::platform::grants_in_use() as u64);
        self.add("channels", crate::events::channels_bound() as u64)
    }

    /// Appends `key=value` (keys are `[a-z0-9_]`, by convention).
    pub fn add(&mut self, key: &str, value: u64) -> &mut Line {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{key}={value}");
        self
    }

    /// The line.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Writes `line` to [`NODE`]. An error (no xenstore, a refused write) is returned for the
/// caller to report once; publishing is best effort.
pub fn publish(line: &Line) -> Result<(), String> {
    crate::platform::with_xenstore(|xs| {
        xs.write(crate::xenstore::Tx::NONE, NODE, line.as_str().as_bytes())
    })
    .map_err(|_| String::from("no xenstore"))?
    .map_err(|e| alloc::format!("{NODE}: {e}"))
}

/// The endpoints reported ready so far (see [`ready`]).
static READY: spin::Mutex<alloc::vec::Vec<String>> = spin::Mutex::new(alloc::vec::Vec::new());

/// Writes [`READY_NODE`] again after the domain moved (`xl restore`, `xl migrate`: the new
/// domain's xenstore directory starts empty), once the network reconnected: `MS ENDPOINT...`
/// with MS from the resume, and prints `ready again on ENDPOINT... N.N ms after the resume`.
/// dom0 waits for this node before it sends a restored guest its clients (the on-demand
/// activator's `restore` mode). Nothing to do if the app never said it was ready.
pub fn ready_again() {
    let endpoints = READY.lock().clone();
    if endpoints.is_empty() {
        return;
    }
    let ns = crate::domain::since_resume_ns();
    let written = publish_ready(&ready_value(ns, &endpoints));
    crate::println!(
        "ready again on {} {} ms after the resume",
        endpoints.join(" "),
        Millis(ns)
    );
    if let Err(e) = written {
        crate::println!("ready again: {e}");
    }
}

/// Says that the app is ready for clients, once its listening sockets are open at
/// `endpoints` (`ADDR:PORT` each): writes `MS ENDPOINT...` to the xenstore node
/// [`READY_NODE`] (`data/xenrt/ready`; MS is entry -> now by the guest's clock, one
/// decimal) and prints `APP: listening on ENDPOINT... N.N ms after entry (running R ms,
/// blocked B ms waiting for events, runnable Q ms waiting for a CPU)`: where that time went by
/// Xen's runstate accounting ([`crate::domain::Runstate`]: the guest's own CPU time, waits for
/// dom0 or timers, waits for a physical CPU; `, offline O ms` if it was paused; all left out if
/// Xen gives no runstate information). dom0 (the on-demand activator) treats the node as "a
/// SYN to these endpoints is answered now", so call it only after the listeners exist. Called again (another vif), the node lists every endpoint so
/// far. Returns the milliseconds. A failed write is reported on the console; the app goes on.
pub fn ready(app: &str, endpoints: &[alloc::string::String]) -> f64 {
    let ns = crate::domain::since_entry_ns();
    let split = crate::domain::runstate_since_entry();
    let value = {
        let mut all = READY.lock();
        all.extend(endpoints.iter().cloned());
        ready_value(ns, &all)
    };
    let written = publish_ready(&value);
    let split = match split {
        Some(r) => alloc::format!(
            " (running {} ms, blocked {} ms waiting for events, runnable {} ms waiting for a CPU{})",
            Millis(r.running_ns),
            Millis(r.blocked_ns),
            Millis(r.runnable_ns),
            match r.offline_ns {
                0 => String::new(),
                o => alloc::format!(", offline {} ms", Millis(o)),
            }
        ),
        None => String::new(),
    };
    crate::println!(
        "{app}: listening on {} {} ms after entry{split}",
        endpoints.join(" "),
        Millis(ns)
    );
    if let Err(e) = written {
        crate::println!("{app}: {e}");
    }
    ns as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_value_is_milliseconds_with_one_decimal_then_the_endpoints() {
        let eps = [String::from("10.0.0.50:80"), String::from("10.0.0.50:7")];
        assert_eq!(
            ready_value(12_449_999, &eps),
            "12.4 10.0.0.50:80 10.0.0.50:7"
        );
        assert_eq!(ready_value(12_450_000, &eps[..1]), "12.5 10.0.0.50:80");
        assert_eq!(ready_value(999_999_999, &[]), "1000.0");
        assert_eq!(alloc::format!("{}", Millis(40_000)), "0.0");
    }

    #[test]
    fn a_line_is_space_separated_key_values_starting_with_uptime_and_memory() {
        let mut l = Line::new(
            12_900_000_000,
            Memory {
                heap_used: 1000,
                heap_free: 24,
                frames_free: 7,
            },
        );
        l.add("sockets", 33).add("tx_full", 0);
        assert_eq!(
            l.as_str(),
            "uptime_s=12 heap_used=1000 heap_free=24 frames_free=7 sockets=33 tx_full=0"
        );
    }
}
