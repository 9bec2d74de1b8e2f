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
    /// `shared_info.arch.max_pfn` (u64): entries in the P2M, for the toolstack's save.
    pub const MAX_PFN: usize = WC_VERSION + 16;
    /// `shared_info.arch.pfn_to_mfn_frame_list_list` (u64): the machine frame of the page
    /// listing the frames that list the P2M's frames.
    pub const FRAME_LIST_LIST: usize = MAX_PFN + 8;
    /// `shared_info.arch.p2m_cr3` (u64): 0 says "find the P2M through the frame list list".
    pub const P2M_CR3: usize = MAX_PFN + 24;
}

/// Offsets of the fields of `struct start_info` a save or restore rewrites.
pub mod fields {
    use super::StartInfo;
    use core::mem::offset_of;
    /// `store_mfn`.
    pub const STORE_MFN: usize = offset_of!(StartInfo, store_mfn);
    /// `console.domU.mfn`.
    pub const CONSOLE_MFN: usize = offset_of!(StartInfo, console_mfn);
}

/// Before a suspend: the xenstore and console frames in the start_info page (`page`) become
/// PFNs, as the toolstack's save requires of a PV guest (it checks them against the P2M and
/// makes them the new domain's MFNs on restore). Mini-OS' `arch_pre_suspend`.
pub fn canonicalise(page: &ShMem, mfn_to_pfn: impl Fn(u64) -> u64) -> Result<(), OutOfBounds> {
    for off in [fields::STORE_MFN, fields::CONSOLE_MFN] {
        let mfn = page.load_u64(off, Ordering::Acquire)?;
        page.store_u64(off, mfn_to_pfn(mfn), Ordering::Release)?;
    }
    Ok(())
}

/// After a cancelled suspend (the same domain): the PFNs [`canonicalise`] wrote become MFNs
/// again. (In a new domain the toolstack wrote new MFNs itself.)
pub fn uncanonicalise(page: &ShMem, pfn_to_mfn: impl Fn(u64) -> u64) -> Result<(), OutOfBounds> {
    for off in [fields::STORE_MFN, fields::CONSOLE_MFN] {
        let pfn = page.load_u64(off, Ordering::Acquire)?;
        page.store_u64(off, pfn_to_mfn(pfn), Ordering::Release)?;
    }
    Ok(())
}

/// start_info as it is in `page` now (after a restore the toolstack rewrote it).
pub fn read(page: &ShMem) -> Result<StartInfo, OutOfBounds> {
    let mut buf = [0u8; core::mem::size_of::<StartInfo>()];
    page.read(0, &mut buf)?;
    // SAFETY: StartInfo is plain old data (integers and byte arrays): any bytes are a value.
    Ok(unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<StartInfo>()) })
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

    /// Publishes where the P2M is for the toolstack: `max_pfn` entries, listed through the
    /// frame list list at machine frame `fll_mfn` (Linux's and Mini-OS' three-level tree;
    /// `p2m_cr3` stays 0, so libxc walks the tree). A restore zeroes `fll_mfn`: publish again.
    pub fn set_p2m_frame_list(&self, max_pfn: u64, fll_mfn: u64) {
        let m = &self.mem;
        let _ = m.store_u64(layout::MAX_PFN, max_pfn, Ordering::Release);
        let _ = m.store_u64(layout::P2M_CR3, 0, Ordering::Release);
        let _ = m.store_u64(layout::FRAME_LIST_LIST, fll_mfn, Ordering::Release);
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

/// The start_info page itself (where Xen wrote it; a restore rewrites it in place).
static PAGE: spin::Once<ShMem> = spin::Once::new();
/// start_info as of the last boot or restore.
static CURRENT: spin::Mutex<Option<StartInfo>> = spin::Mutex::new(None);

/// Records the start_info page and its contents (boot, once).
pub fn set_page(page: ShMem, si: StartInfo) {
    PAGE.call_once(|| page);
    *CURRENT.lock() = Some(si);
}

/// The start_info page, once boot recorded it.
pub fn page() -> Option<&'static ShMem> {
    PAGE.get()
}

/// start_info as of the last boot or restore into a new domain (the store and console
/// frames and ports, shared_info's address, `nr_pages` change with the domain).
pub fn current() -> Option<StartInfo> {
    *CURRENT.lock()
}

/// Records start_info after a restore.
pub(crate) fn set_current(si: StartInfo) {
    *CURRENT.lock() = Some(si);
}

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
        use xen_sys::arch_shared_info as A;
        let arch = offset_of!(shared_info, arch);
        assert_eq!(arch + offset_of!(A, max_pfn), layout::MAX_PFN);
        assert_eq!(
            arch + offset_of!(A, pfn_to_mfn_frame_list_list),
            layout::FRAME_LIST_LIST
        );
        assert_eq!(arch + offset_of!(A, p2m_cr3), layout::P2M_CR3);
        assert_eq!(
            fields::STORE_MFN,
            offset_of!(xen_sys::start_info, store_mfn)
        );
        assert_eq!(
            fields::CONSOLE_MFN,
            offset_of!(xen_sys::start_info, console)
        );
    }

    #[test]
    fn canonicalise_turns_store_and_console_frames_into_pfns_and_back() {
        let page = ShMem::new(4096);
        // SAFETY: StartInfo is plain old data; all-zero is a valid value.
        let mut si: StartInfo = unsafe { core::mem::zeroed() };
        si.nr_pages = 2048;
        si.store_mfn = 0x9_1234;
        si.console_mfn = 0x9_1235;
        si.store_evtchn = 1;
        si.console_evtchn = 2;
        si.cmd_line[..5].copy_from_slice(b"log=x");
        // SAFETY: a StartInfo is plain bytes.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (&si as *const StartInfo).cast::<u8>(),
                core::mem::size_of::<StartInfo>(),
            )
        };
        page.write(0, bytes).unwrap();
        // A made-up M2P: mfn 0x9_0000 + pfn.
        canonicalise(&page, |mfn| mfn - 0x9_0000).unwrap();
        let c = read(&page).unwrap();
        assert_eq!((c.store_mfn, c.console_mfn), (0x1234, 0x1235));
        assert_eq!(
            (c.nr_pages, c.store_evtchn, c.console_evtchn, c.cmdline()),
            (2048, 1, 2, &b"log=x"[..]),
            "nothing else changes"
        );
        uncanonicalise(&page, |pfn| pfn + 0x9_0000).unwrap();
        let u = read(&page).unwrap();
        assert_eq!((u.store_mfn, u.console_mfn), (si.store_mfn, si.console_mfn));
        assert!(
            canonicalise(&ShMem::new(64), |m| m).is_err(),
            "a short page is an error"
        );
    }

    #[test]
    fn the_p2m_frame_list_is_published_where_libxc_reads_it() {
        let m = ShMem::new(4096);
        m.store_u64(layout::P2M_CR3, 7, Ordering::Relaxed).unwrap();
        SharedInfo::new(m.clone()).set_p2m_frame_list(2048, 0x4242);
        let get = |o| m.load_u64(o, Ordering::Relaxed).unwrap();
        assert_eq!(
            (
                get(layout::MAX_PFN),
                get(layout::FRAME_LIST_LIST),
                get(layout::P2M_CR3)
            ),
            (2048, 0x4242, 0)
        );
        assert_eq!(get(layout::WC_VERSION), 0, "the wall clock is untouched");
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
