//! start_info: what Xen tells a PV guest at boot (public/xen.h `struct start_info`), and the
//! shared_info page (`struct shared_info`: per-vCPU event and time state, the event-channel
//! bitmaps and the wall clock), read through [`ShMem`] at fixed, layout-tested offsets.

use crate::shmem::{OutOfBounds, ShMem};
use core::sync::atomic::Ordering;

/// `struct start_info` (64-bit). Copied out of the page Xen wrote once, at boot.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StartInfo {
    /// "xen-<version>-<platform>".
    pub magic: [u8; 32],
    /// Total pages allocated to this domain.
    pub nr_pages: u64,
    /// Machine address of the shared_info page.
    pub shared_info: u64,
    /// SIF_* flags.
    pub flags: u32,
    /// Machine frame of the xenstore ring page.
    pub store_mfn: u64,
    /// Event channel of the xenstore ring.
    pub store_evtchn: u32,
    /// domU: console page machine frame; dom0: offset and size of console_info.
    pub console_mfn: u64,
    /// domU: console event channel.
    pub console_evtchn: u32,
    /// Virtual address of the L4 page table.
    pub pt_base: u64,
    /// Number of bootstrap page-table frames.
    pub nr_pt_frames: u64,
    /// Virtual address of the P2M list (pfn -> mfn).
    pub mfn_list: u64,
    /// Virtual address (or PFN) of a pre-loaded module.
    pub mod_start: u64,
    /// Size of that module.
    pub mod_len: u64,
    /// Guest command line (NUL-terminated).
    pub cmd_line: [u8; 1024],
    /// First PFN of the initial P2M table frames.
    pub first_p2m_pfn: u64,
    /// Number of those frames.
    pub nr_p2m_frames: u64,
}

/// This domain is privileged.
pub const SIF_PRIVILEGED: u32 = 1;
/// This domain is the initial control domain (dom0).
pub const SIF_INITDOMAIN: u32 = 2;

impl StartInfo {
    /// The command line bytes up to the first NUL.
    pub fn cmdline(&self) -> &[u8] {
        let end = self
            .cmd_line
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.cmd_line.len());
        &self.cmd_line[..end]
    }

    /// True when we are dom0 (the fast test tier boots us so).
    pub fn is_dom0(&self) -> bool {
        self.flags & SIF_INITDOMAIN != 0
    }

    /// The magic string ("xen-3.0-x86_64").
    pub fn magic(&self) -> &str {
        let end = self.magic.iter().position(|&b| b == 0).unwrap_or(32);
        core::str::from_utf8(&self.magic[..end]).unwrap_or("?")
    }
}

/// Offsets in `struct shared_info` / `struct vcpu_info` (64-bit).
pub mod layout {
    /// Size of one `vcpu_info`.
    pub const VCPU_INFO_SIZE: usize = 64;
    /// `vcpu_info.evtchn_upcall_pending` (u8).
    pub const UPCALL_PENDING: usize = 0;
    /// `vcpu_info.evtchn_upcall_mask` (u8).
    pub const UPCALL_MASK: usize = 1;
    /// `vcpu_info.evtchn_pending_sel` (u64).
    pub const PENDING_SEL: usize = 8;
    /// `vcpu_info.arch.cr2` (u64).
    pub const CR2: usize = 16;
    /// `vcpu_info.time` (`vcpu_time_info`, 32 bytes).
    pub const TIME: usize = 32;
    /// `shared_info.evtchn_pending` (64 x u64).
    pub const EVTCHN_PENDING: usize = 32 * VCPU_INFO_SIZE;
    /// `shared_info.evtchn_mask` (64 x u64).
    pub const EVTCHN_MASK: usize = EVTCHN_PENDING + 64 * 8;
    /// `shared_info.wc_version` (u32).
    pub const WC_VERSION: usize = EVTCHN_MASK + 64 * 8;
    /// `shared_info.wc_sec` (u32).
    pub const WC_SEC: usize = WC_VERSION + 4;
    /// `shared_info.wc_nsec` (u32).
    pub const WC_NSEC: usize = WC_VERSION + 8;
    /// `shared_info.wc_sec_hi` (u32).
    pub const WC_SEC_HI: usize = WC_VERSION + 12;
}

/// The shared_info page, as mapped at boot.
#[derive(Clone, Debug)]
pub struct SharedInfo {
    mem: ShMem,
}

impl SharedInfo {
    /// Wraps the mapped page (or a host buffer in tests).
    pub fn new(mem: ShMem) -> Self {
        SharedInfo { mem }
    }

    /// The page.
    pub fn mem(&self) -> &ShMem {
        &self.mem
    }

    /// vCPU 0's `vcpu_info`.
    pub fn vcpu0(&self) -> ShMem {
        self.mem
            .slice(0, layout::VCPU_INFO_SIZE)
            .expect("vcpu_info 0 is inside the page")
    }

    /// vCPU 0's faulting address of the last page fault (`arch.cr2`).
    pub fn cr2(&self) -> u64 {
        self.mem
            .load_u64(layout::CR2, Ordering::Acquire)
            .unwrap_or(0)
    }

    /// Word `i` of the pending bitmap.
    pub fn pending(&self, i: usize) -> Result<u64, OutOfBounds> {
        self.mem
            .load_u64(layout::EVTCHN_PENDING + 8 * i, Ordering::Acquire)
    }

    /// Word `i` of the mask bitmap.
    pub fn mask(&self, i: usize) -> Result<u64, OutOfBounds> {
        self.mem
            .load_u64(layout::EVTCHN_MASK + 8 * i, Ordering::Acquire)
    }

    /// Wall clock at system time 0: (seconds, nanoseconds) since the epoch, read consistently.
    pub fn wallclock_base(&self) -> (u64, u32) {
        loop {
            let v1 = self
                .mem
                .load_u32(layout::WC_VERSION, Ordering::Acquire)
                .unwrap_or(0);
            let sec = self
                .mem
                .load_u32(layout::WC_SEC, Ordering::Acquire)
                .unwrap_or(0) as u64;
            let hi = self
                .mem
                .load_u32(layout::WC_SEC_HI, Ordering::Acquire)
                .unwrap_or(0) as u64;
            let nsec = self
                .mem
                .load_u32(layout::WC_NSEC, Ordering::Acquire)
                .unwrap_or(0);
            let v2 = self
                .mem
                .load_u32(layout::WC_VERSION, Ordering::Acquire)
                .unwrap_or(0);
            if v1 == v2 && v1.is_multiple_of(2) {
                return ((hi << 32) | sec, nsec);
            }
        }
    }
}

static SHARED: spin::Once<SharedInfo> = spin::Once::new();

/// Publishes the mapped shared_info page (once, at boot).
pub fn set_shared_info(s: SharedInfo) {
    SHARED.call_once(|| s);
}

/// The shared_info page, once boot mapped it.
pub fn shared_info() -> Option<&'static SharedInfo> {
    SHARED.get()
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    /// Offsets as gcc lays out `struct start_info` from /usr/include/xen/xen.h.
    fn start_info_layout_matches_xen_h() {
        assert_eq!(offset_of!(StartInfo, nr_pages), 32);
        assert_eq!(offset_of!(StartInfo, shared_info), 40);
        assert_eq!(offset_of!(StartInfo, flags), 48);
        assert_eq!(offset_of!(StartInfo, store_mfn), 56);
        assert_eq!(offset_of!(StartInfo, store_evtchn), 64);
        assert_eq!(offset_of!(StartInfo, console_mfn), 72);
        assert_eq!(offset_of!(StartInfo, console_evtchn), 80);
        assert_eq!(offset_of!(StartInfo, pt_base), 88);
        assert_eq!(offset_of!(StartInfo, mfn_list), 104);
        assert_eq!(offset_of!(StartInfo, cmd_line), 128);
        assert_eq!(offset_of!(StartInfo, first_p2m_pfn), 1152);
        assert_eq!(size_of::<StartInfo>(), 1168);
    }

    #[test]
    fn shared_info_offsets_agree_with_xen_sys() {
        use xen_sys::{shared_info, vcpu_info};
        assert_eq!(size_of::<vcpu_info>(), layout::VCPU_INFO_SIZE);
        assert_eq!(
            offset_of!(vcpu_info, evtchn_upcall_mask),
            layout::UPCALL_MASK
        );
        assert_eq!(
            offset_of!(vcpu_info, evtchn_pending_sel),
            layout::PENDING_SEL
        );
        assert_eq!(offset_of!(vcpu_info, arch), layout::CR2);
        assert_eq!(offset_of!(vcpu_info, time), layout::TIME);
        assert_eq!(
            offset_of!(shared_info, evtchn_pending),
            layout::EVTCHN_PENDING
        );
        assert_eq!(offset_of!(shared_info, evtchn_mask), layout::EVTCHN_MASK);
        assert_eq!(offset_of!(shared_info, wc_version), layout::WC_VERSION);
        assert_eq!(offset_of!(shared_info, wc_sec_hi), layout::WC_SEC_HI);
    }

    #[test]
    fn cmdline_stops_at_nul_and_wallclock_reads_consistently() {
        // SAFETY: StartInfo is plain old data; all-zero is a valid value.
        let mut si: StartInfo = unsafe { core::mem::zeroed() };
        si.cmd_line[..9].copy_from_slice(b"log=debug");
        assert_eq!(si.cmdline(), b"log=debug");
        let m = ShMem::new(4096);
        m.store_u32(layout::WC_VERSION, 2, Ordering::Relaxed)
            .unwrap();
        m.store_u32(layout::WC_SEC, 7, Ordering::Relaxed).unwrap();
        m.store_u32(layout::WC_SEC_HI, 1, Ordering::Relaxed)
            .unwrap();
        m.store_u32(layout::WC_NSEC, 5, Ordering::Relaxed).unwrap();
        assert_eq!(SharedInfo::new(m).wallclock_base(), ((1 << 32) + 7, 5));
    }
}
