//! Grant-table operations (`GNTTABOP_*`, public/grant_table.h): the argument structures and the
//! typed calls the runtime makes. The grant table's own logic (entries, references) is
//! `xen::grant`'s.

use super::{check, hypercall, nr, Errno};

/// A grant reference: an index into the grant table, handed to the peer (`grant_ref_t`).
pub type GrantRef = u32;
/// A domain id (`domid_t`).
pub type DomId = u16;
/// A guest frame number (`xen_pfn_t` on x86_64).
pub type XenPfn = u64;

/// `DOMID_SELF`.
pub const DOMID_SELF: DomId = 0x7ff0;
/// `GNTTABOP_map_grant_ref`.
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
/// `GNTTABOP_unmap_grant_ref`.
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
/// `GNTTABOP_setup_table`: takes [`GnttabSetupTable`].
pub const GNTTABOP_SETUP_TABLE: u32 = 2;
/// `GNTTABOP_dump_table`.
pub const GNTTABOP_DUMP_TABLE: u32 = 3;
/// `GNTTABOP_transfer`.
pub const GNTTABOP_TRANSFER: u32 = 4;
/// `GNTTABOP_copy`: takes an array of [`GnttabCopy`].
pub const GNTTABOP_COPY: u32 = 5;
/// `GNTTABOP_query_size`: takes [`GnttabQuerySize`].
pub const GNTTABOP_QUERY_SIZE: u32 = 6;
/// `GNTTABOP_unmap_and_replace`.
pub const GNTTABOP_UNMAP_AND_REPLACE: u32 = 7;
/// `GNTTABOP_set_version`.
pub const GNTTABOP_SET_VERSION: u32 = 8;
/// `GNTTABOP_get_status_frames`.
pub const GNTTABOP_GET_STATUS_FRAMES: u32 = 9;
/// `GNTTABOP_get_version`.
pub const GNTTABOP_GET_VERSION: u32 = 10;

/// `GNTCOPY_source_gref`: the copy's source is a grant reference, not a frame.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: the copy's destination is a grant reference, not a frame.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// `struct gnttab_setup_table` (`GNTTABOP_setup_table`): Xen fills `frame_list` with the
/// `nr_frames` frames of `dom`'s grant table.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GnttabSetupTable {
    /// IN: the domain, normally [`DOMID_SELF`].
    pub dom: DomId,
    /// IN: frames wanted.
    pub nr_frames: u32,
    /// OUT: a `GNTST_*` status.
    pub status: i16,
    /// IN: guest address of an array of `nr_frames` [`XenPfn`]s (`XEN_GUEST_HANDLE(xen_pfn_t)`).
    pub frame_list: u64,
}

/// `struct gnttab_query_size` (`GNTTABOP_query_size`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GnttabQuerySize {
    /// IN: the domain, normally [`DOMID_SELF`].
    pub dom: DomId,
    /// OUT: frames in the table now.
    pub nr_frames: u32,
    /// OUT: the most frames the table may have.
    pub max_nr_frames: u32,
    /// OUT: a `GNTST_*` status.
    pub status: i16,
}

/// `struct gnttab_copy_ptr`: one end of a copy. The C union `{ grant_ref_t ref; xen_pfn_t gmfn; }`
/// is a `u64` here (a reference occupies its low 32 bits, little-endian), so building one needs
/// no `unsafe`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GnttabCopyPtr {
    /// A grant reference (with `GNTCOPY_*_gref`) or a frame number.
    pub u: u64,
    /// The domain owning the page.
    pub domid: DomId,
    /// Byte offset in the page.
    pub offset: u16,
}

impl GnttabCopyPtr {
    /// The page granted to us by `domid` as `gref`.
    pub fn gref(gref: GrantRef, domid: DomId, offset: u16) -> Self {
        GnttabCopyPtr {
            u: u64::from(gref),
            domid,
            offset,
        }
    }

    /// Frame `gmfn` of `domid` (normally [`DOMID_SELF`]).
    pub fn frame(gmfn: XenPfn, domid: DomId, offset: u16) -> Self {
        GnttabCopyPtr {
            u: gmfn,
            domid,
            offset,
        }
    }
}

/// `struct gnttab_copy` (`GNTTABOP_copy`): copy `len` bytes from `source` to `dest`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GnttabCopy {
    /// IN: where from.
    pub source: GnttabCopyPtr,
    /// IN: where to.
    pub dest: GnttabCopyPtr,
    /// IN: bytes (neither end may cross its page).
    pub len: u16,
    /// IN: `GNTCOPY_*`.
    pub flags: u16,
    /// OUT: a `GNTST_*` status.
    pub status: i16,
}

/// `GNTTABOP_query_size` for domain `dom` (normally [`DOMID_SELF`]); the caller checks the
/// returned `status`.
pub fn query_size(dom: DomId) -> Result<GnttabQuerySize, Errno> {
    let mut q = GnttabQuerySize {
        dom,
        ..Default::default()
    };
    // SAFETY: `q` is a gnttab_query_size Xen fills in; count 1.
    check(unsafe {
        hypercall(
            nr::GRANT_TABLE_OP,
            GNTTABOP_QUERY_SIZE as usize,
            &mut q as *mut _ as usize,
            1,
            0,
            0,
        )
    })?;
    Ok(q)
}

/// `GNTTABOP_setup_table`: `frames.len()` frames of `dom`'s grant table, their machine frame
/// numbers written into `frames`. Returns the operation's `GNTST_*` status.
pub fn setup_table(dom: DomId, frames: &mut [XenPfn]) -> Result<i16, Errno> {
    let mut s = GnttabSetupTable {
        dom,
        nr_frames: u32::try_from(frames.len()).map_err(|_| Errno::EINVAL)?,
        status: 0,
        frame_list: frames.as_mut_ptr() as u64,
    };
    // SAFETY: `s` is a gnttab_setup_table whose frame_list has room for nr_frames entries, which
    // is all Xen writes there; count 1.
    check(unsafe {
        hypercall(
            nr::GRANT_TABLE_OP,
            GNTTABOP_SETUP_TABLE as usize,
            &mut s as *mut _ as usize,
            1,
            0,
            0,
        )
    })?;
    Ok(s.status)
}

/// `GNTTABOP_copy` of every operation in `ops` (Xen writes each one's `status`; it continues the
/// call itself when preempted).
///
/// # Safety
/// Every local end of every copy (a frame of ours, not a grant reference) must be memory this
/// guest may have overwritten (or read) behind the compiler's back: no Rust reference may be live
/// on the bytes a copy writes.
pub unsafe fn copy(ops: &mut [GnttabCopy]) -> Result<(), Errno> {
    // SAFETY: `ops` is an array of ops.len() gnttab_copy Xen reads and writes for the call; the
    // frames they name are the caller's to hand over.
    check(unsafe {
        hypercall(
            nr::GRANT_TABLE_OP,
            GNTTABOP_COPY as usize,
            ops.as_mut_ptr() as usize,
            ops.len(),
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
    fn abi_layout_matches_grant_table_h() {
        assert_eq!(size_of::<GnttabSetupTable>(), 24);
        assert_eq!(offset_of!(GnttabSetupTable, nr_frames), 4);
        assert_eq!(offset_of!(GnttabSetupTable, status), 8);
        assert_eq!(offset_of!(GnttabSetupTable, frame_list), 16);
        assert_eq!(size_of::<GnttabQuerySize>(), 16);
        assert_eq!(offset_of!(GnttabQuerySize, nr_frames), 4);
        assert_eq!(offset_of!(GnttabQuerySize, max_nr_frames), 8);
        assert_eq!(offset_of!(GnttabQuerySize, status), 12);
        assert_eq!(size_of::<GnttabCopyPtr>(), 16);
        assert_eq!(offset_of!(GnttabCopyPtr, domid), 8);
        assert_eq!(offset_of!(GnttabCopyPtr, offset), 10);
        assert_eq!(size_of::<GnttabCopy>(), 40);
        assert_eq!(offset_of!(GnttabCopy, dest), 16);
        assert_eq!(offset_of!(GnttabCopy, len), 32);
        assert_eq!(offset_of!(GnttabCopy, flags), 34);
        assert_eq!(offset_of!(GnttabCopy, status), 36);
        assert_eq!(
            GnttabCopyPtr::gref(7, 0, 0).u.to_le_bytes()[..4],
            7u32.to_le_bytes()
        );
    }
}
