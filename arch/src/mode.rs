//! Which kind of guest this is: classic PV (`type="pv"`, entered at `_start` in ring 3, page
//! tables through Xen) or PVH (`type="pvh"`, entered at `pvh_start32`, an HVM container with our
//! own page tables, GDT and IDT in ring 0). Set once by the entry path, before anything else
//! runs; the few arch operations that differ (blocking, the FS base, the FPU switch, a PTE
//! write, the trap table) dispatch on it here, so nothing above arch and the platform layer
//! asks.

use core::sync::atomic::{AtomicU8, Ordering};

/// The guest type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Paravirtualized: Xen owns the page tables and the trap table.
    Pv,
    /// PVH: hardware virtualization without emulated devices; gfn = pfn.
    Pvh,
}

static MODE: AtomicU8 = AtomicU8::new(0);

/// This guest's type (PV until a PVH entry says otherwise).
#[inline]
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Pvh,
        _ => Mode::Pv,
    }
}

/// True in a PVH guest.
#[inline]
pub fn is_pvh() -> bool {
    mode() == Mode::Pvh
}

/// Called once by the PVH entry, before anything else.
#[cfg_attr(not(any(target_os = "none", target_os = "hermit")), allow(dead_code))]
pub(crate) fn set_pvh() {
    MODE.store(1, Ordering::Relaxed);
}

impl Mode {
    /// The `type=` an xl config names it by.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pv => "pv",
            Mode::Pvh => "pvh",
        }
    }
}
