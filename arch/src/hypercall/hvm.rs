//! The hypercalls only a PVH (HVM) guest makes: HVM parameters (`HVMOP_get_param` /
//! `HVMOP_set_param`, public/hvm/hvm_op.h, public/hvm/params.h) and placing Xen's pages in our
//! physical address space (`XENMEM_add_to_physmap`, public/memory.h), and the domain's e820
//! memory map (`XENMEM_memory_map`, for a hvm_start_info without one). Layouts from the Xen
//! headers (xen-sys has no x86 HVM structures); sizes and offsets are tested below.

use super::gnttab::DOMID_SELF;
use super::{check, hypercall, nr, Errno};

/// `HVMOP_set_param`.
const HVMOP_SET_PARAM: usize = 0;
/// `HVMOP_get_param`.
const HVMOP_GET_PARAM: usize = 1;
/// `XENMEM_add_to_physmap`.
const XENMEM_ADD_TO_PHYSMAP: usize = 7;
/// `XENMEM_memory_map`.
const XENMEM_MEMORY_MAP: usize = 9;

/// HVM parameter indexes (public/hvm/params.h).
pub mod param {
    /// How event upcalls are delivered: `(2 << 56) | vector` for a vector callback.
    pub const CALLBACK_IRQ: u32 = 0;
    /// The xenstore ring's frame.
    pub const STORE_PFN: u32 = 1;
    /// The xenstore event channel.
    pub const STORE_EVTCHN: u32 = 2;
    /// The PV console ring's frame.
    pub const CONSOLE_PFN: u32 = 17;
    /// The PV console's event channel.
    pub const CONSOLE_EVTCHN: u32 = 18;
}

/// `HVM_PARAM_CALLBACK_IRQ` value type 2: deliver upcalls as this vector (no LAPIC, no EOI).
pub fn callback_vector(vector: u8) -> u64 {
    2u64 << 56 | vector as u64
}

/// `struct xen_hvm_param`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct HvmParam {
    domid: u16,
    _pad: u16,
    index: u32,
    value: u64,
}

/// `HVMOP_get_param(DOMID_SELF, index)`.
pub fn get_param(index: u32) -> Result<u64, Errno> {
    let mut p = HvmParam {
        domid: DOMID_SELF,
        index,
        ..Default::default()
    };
    // SAFETY: Xen reads and writes one xen_hvm_param that lives across the call.
    check(unsafe {
        hypercall(
            nr::HVM_OP,
            HVMOP_GET_PARAM,
            &mut p as *mut HvmParam as usize,
            0,
            0,
            0,
        )
    })?;
    Ok(p.value)
}

/// `HVMOP_set_param(DOMID_SELF, index, value)`.
pub fn set_param(index: u32, value: u64) -> Result<(), Errno> {
    let mut p = HvmParam {
        domid: DOMID_SELF,
        index,
        value,
        ..Default::default()
    };
    // SAFETY: Xen reads one xen_hvm_param that lives across the call.
    check(unsafe {
        hypercall(
            nr::HVM_OP,
            HVMOP_SET_PARAM,
            &mut p as *mut HvmParam as usize,
            0,
            0,
            0,
        )
    })
    .map(|_| ())
}

/// `XENMAPSPACE_*`: what [`add_to_physmap`] places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// The shared_info page (index 0).
    SharedInfo,
    /// Grant-table frame `index`.
    GrantTable,
}

/// `struct xen_add_to_physmap`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct AddToPhysmap {
    domid: u16,
    size: u16,
    space: u32,
    idx: u64,
    gpfn: u64,
}

/// `XENMEM_add_to_physmap`: puts Xen's page (`space`, `index`) at our frame `gpfn`; whatever
/// memory was there is given back to Xen.
///
/// # Safety
/// Nothing may rely on the old contents of `gpfn`; from now on it is Xen's page.
pub unsafe fn add_to_physmap(space: Space, index: u64, gpfn: u64) -> Result<(), Errno> {
    let mut a = AddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: match space {
            Space::SharedInfo => 0,
            Space::GrantTable => 1,
        },
        idx: index,
        gpfn,
    };
    // SAFETY: Xen reads one xen_add_to_physmap; the frame's fate is the caller's contract.
    check(unsafe {
        hypercall(
            nr::MEMORY_OP,
            XENMEM_ADD_TO_PHYSMAP,
            &mut a as *mut AddToPhysmap as usize,
            0,
            0,
            0,
        )
    })
    .map(|_| ())
}

/// An e820 entry as `XENMEM_memory_map` writes it (Xen's `struct e820entry`, packed: 20 bytes).
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Type (1 RAM, 2 reserved, ...).
    pub kind: u32,
}

/// `struct xen_memory_map`.
#[repr(C)]
struct MemoryMap {
    nr_entries: u32,
    buffer: u64,
}

/// `XENMEM_memory_map`: the domain's e820 map as the toolstack set it (libxl: the same map as
/// hvm_start_info's), at most `out.len()` entries; returns how many Xen wrote.
pub fn memory_map(out: &mut [E820Entry]) -> Result<usize, Errno> {
    let mut m = MemoryMap {
        nr_entries: u32::try_from(out.len()).unwrap_or(u32::MAX),
        buffer: out.as_mut_ptr() as u64,
    };
    // SAFETY: Xen reads and writes one xen_memory_map and writes at most `nr_entries` packed
    // entries into `out`, which is ours alone across the call.
    check(unsafe {
        hypercall(
            nr::MEMORY_OP,
            XENMEM_MEMORY_MAP,
            &mut m as *mut MemoryMap as usize,
            0,
            0,
            0,
        )
    })?;
    Ok((m.nr_entries as usize).min(out.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_the_xen_headers() {
        // public/hvm/hvm_op.h: domid_t domid; uint32_t index; uint64_t value.
        assert_eq!(size_of::<HvmParam>(), 16);
        assert_eq!(offset_of!(HvmParam, index), 4);
        assert_eq!(offset_of!(HvmParam, value), 8);
        // public/memory.h: domid_t domid; uint16_t size; unsigned int space;
        // xen_ulong_t idx; xen_pfn_t gpfn.
        assert_eq!(size_of::<AddToPhysmap>(), 24);
        assert_eq!(offset_of!(AddToPhysmap, size), 2);
        assert_eq!(offset_of!(AddToPhysmap, space), 4);
        assert_eq!(offset_of!(AddToPhysmap, idx), 8);
        assert_eq!(offset_of!(AddToPhysmap, gpfn), 16);
        // public/memory.h: unsigned int nr_entries; XEN_GUEST_HANDLE(void) buffer; the
        // entries are xen/arch/x86/include/asm/e820.h's packed struct e820entry {addr, size, type}.
        assert_eq!(size_of::<MemoryMap>(), 16);
        assert_eq!(offset_of!(MemoryMap, buffer), 8);
        assert_eq!(size_of::<E820Entry>(), 20);
        assert_eq!(offset_of!(E820Entry, size), 8);
        assert_eq!(offset_of!(E820Entry, kind), 16);
    }

    #[test]
    fn callback_vector_value() {
        assert_eq!(callback_vector(0xf3), 0x0200_0000_0000_00f3);
    }
}
