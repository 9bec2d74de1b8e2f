//! The hypercalls only a PVH (HVM) guest makes: HVM parameters (`HVMOP_get_param` /
//! `HVMOP_set_param`, public/hvm/hvm_op.h, public/hvm/params.h) and placing Xen's pages in our
//! physical address space (`XENMEM_add_to_physmap`, public/memory.h). Layouts from the Xen
//! headers (xen-sys has no x86 HVM structures); sizes and offsets are tested below.

use super::gnttab::DOMID_SELF;
use super::{check, hypercall, nr, Errno};

/// `HVMOP_set_param`.
const HVMOP_SET_PARAM: usize = 0;
/// `HVMOP_get_param`.
const HVMOP_GET_PARAM: usize = 1;
/// `XENMEM_add_to_physmap`.
const XENMEM_ADD_TO_PHYSMAP: usize = 7;

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
    }

    #[test]
    fn callback_vector_value() {
        assert_eq!(callback_vector(0xf3), 0x0200_0000_0000_00f3);
    }
}
