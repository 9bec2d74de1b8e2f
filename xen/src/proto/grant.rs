//! Grant tables, version 1: letting another domain (a backend) map or copy this guest's pages.
//!
//! [`GrantTable`] is safe logic over a [`ShMem`] covering the grant frames (`nr_frames * 4096`
//! bytes of `grant_entry_v1`): it allocates grant references from a free list (the first
//! [`GNTTAB_NR_RESERVED_ENTRIES`] are reserved, as in Linux and Mini-OS), fills entries in the
//! order Xen requires (frame and domid, a release fence, then flags), and revokes them only when
//! the peer holds no mapping. The hypercalls (`GNTTABOP_query_size`, `setup_table`, `copy`) and
//! their ABI structures ([`GnttabSetupTable`], [`GnttabQuerySize`], [`GnttabCopy`], with layout
//! tests against `xen/grant_table.h`) are arch's (`arch::hypercall::gnttab`, re-exported here);
//! the platform code calls them.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{fence, Ordering};

use crate::shmem::{OutOfBounds, ShMem};

// The ABI structures and numbers of GNTTABOP_* live with the hypercalls in arch.
pub use arch::hypercall::gnttab::{
    DomId, GnttabCopy, GnttabCopyPtr, GnttabQuerySize, GnttabSetupTable, GrantRef, XenPfn,
    DOMID_SELF, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTTABOP_COPY, GNTTABOP_DUMP_TABLE,
    GNTTABOP_GET_STATUS_FRAMES, GNTTABOP_GET_VERSION, GNTTABOP_MAP_GRANT_REF, GNTTABOP_QUERY_SIZE,
    GNTTABOP_SETUP_TABLE, GNTTABOP_SET_VERSION, GNTTABOP_TRANSFER, GNTTABOP_UNMAP_AND_REPLACE,
    GNTTABOP_UNMAP_GRANT_REF,
};

/// References reserved for the toolstack (console, xenstore), never handed out.
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// Size of one `grant_entry_v1`.
pub const ENTRY_SIZE: usize = 8;
/// Grant-table frame size.
pub const FRAME_SIZE: usize = 4096;

/// `GTF_permit_access`: `domid` may map and access `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_readonly`: read-only access only.
pub const GTF_READONLY: u16 = 1 << 2;
/// `GTF_reading`: set by Xen while the peer has the frame mapped for reading.
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing`: set by Xen while the peer has the frame mapped for writing.
pub const GTF_WRITING: u16 = 1 << 4;

/// `GNTST_okay`.
pub const GNTST_OKAY: i16 = 0;
/// `GNTST_general_error`.
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// `GNTST_bad_domain`.
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// `GNTST_bad_gntref`.
pub const GNTST_BAD_GNTREF: i16 = -3;
/// `GNTST_permission_denied`.
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// `GNTST_bad_page`.
pub const GNTST_BAD_PAGE: i16 = -9;
/// `GNTST_bad_copy_arg`.
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// `GNTST_eagain`.
pub const GNTST_EAGAIN: i16 = -12;

/// A `GNTST_*` failure status of one grant operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GntStatus {
    /// `GNTST_general_error`.
    GeneralError,
    /// `GNTST_bad_domain`: no such domain.
    BadDomain,
    /// `GNTST_bad_gntref`: the reference is not granted to us (or out of range).
    BadGntref,
    /// `GNTST_bad_handle`.
    BadHandle,
    /// `GNTST_bad_virt_addr`.
    BadVirtAddr,
    /// `GNTST_bad_dev_addr`.
    BadDevAddr,
    /// `GNTST_no_device_space`.
    NoDeviceSpace,
    /// `GNTST_permission_denied`: e.g. writing through a read-only grant.
    PermissionDenied,
    /// `GNTST_bad_page`: the frame is not the domain's (or not a valid page).
    BadPage,
    /// `GNTST_bad_copy_arg`: the copy crosses a page boundary.
    BadCopyArg,
    /// `GNTST_address_too_big`.
    AddressTooBig,
    /// `GNTST_eagain`: the page is paged out; retry later.
    Eagain,
    /// A status this code does not know.
    Other(i16),
}

impl GntStatus {
    /// `Ok` for `GNTST_okay`, else the failure.
    pub fn check(code: i16) -> Result<(), GntStatus> {
        Err(match code {
            GNTST_OKAY => return Ok(()),
            GNTST_GENERAL_ERROR => GntStatus::GeneralError,
            GNTST_BAD_DOMAIN => GntStatus::BadDomain,
            GNTST_BAD_GNTREF => GntStatus::BadGntref,
            -4 => GntStatus::BadHandle,
            -5 => GntStatus::BadVirtAddr,
            -6 => GntStatus::BadDevAddr,
            -7 => GntStatus::NoDeviceSpace,
            GNTST_PERMISSION_DENIED => GntStatus::PermissionDenied,
            GNTST_BAD_PAGE => GntStatus::BadPage,
            GNTST_BAD_COPY_ARG => GntStatus::BadCopyArg,
            -11 => GntStatus::AddressTooBig,
            GNTST_EAGAIN => GntStatus::Eagain,
            other => GntStatus::Other(other),
        })
    }
}

impl fmt::Display for GntStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            GntStatus::GeneralError => "general error",
            GntStatus::BadDomain => "bad domain",
            GntStatus::BadGntref => "bad grant reference",
            GntStatus::BadHandle => "bad handle",
            GntStatus::BadVirtAddr => "bad virtual address",
            GntStatus::BadDevAddr => "bad device address",
            GntStatus::NoDeviceSpace => "no device space",
            GntStatus::PermissionDenied => "permission denied",
            GntStatus::BadPage => "bad page",
            GntStatus::BadCopyArg => "copy crosses a page boundary",
            GntStatus::AddressTooBig => "address too big",
            GntStatus::Eagain => "page unavailable, try again",
            GntStatus::Other(c) => return write!(f, "grant status {c}"),
        };
        f.write_str(s)
    }
}

/// One end of a [`GrantCopy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyEnd {
    /// Bytes at `offset` in the page domain `domid` granted us as `gref`.
    Granted {
        /// The granting domain.
        domid: DomId,
        /// Its grant reference.
        gref: GrantRef,
        /// Byte offset in the page.
        offset: u16,
    },
    /// Bytes at `offset` in one of our own frames (a PV guest names it by machine frame).
    Local {
        /// The frame (`gmfn`).
        frame: XenPfn,
        /// Byte offset in the page.
        offset: u16,
    },
}

impl CopyEnd {
    fn offset(&self) -> u16 {
        match *self {
            CopyEnd::Granted { offset, .. } | CopyEnd::Local { offset, .. } => offset,
        }
    }

    /// The ABI form, and whether it names a grant reference.
    fn abi(&self) -> (GnttabCopyPtr, bool) {
        match *self {
            CopyEnd::Granted {
                domid,
                gref,
                offset,
            } => (GnttabCopyPtr::gref(gref, domid, offset), true),
            CopyEnd::Local { frame, offset } => {
                (GnttabCopyPtr::frame(frame, DOMID_SELF, offset), false)
            }
        }
    }
}

/// One copy of a `GNTTABOP_copy` batch: `len` bytes from `source` to `dest`, neither crossing
/// the end of its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantCopy {
    /// Where from.
    pub source: CopyEnd,
    /// Where to.
    pub dest: CopyEnd,
    /// Bytes (1 to 4096).
    pub len: u16,
}

/// Why a grant copy batch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyError {
    /// Copy `index` is empty or runs past the end of a page (refused before the hypercall).
    BadRange {
        /// Its position in the batch.
        index: usize,
    },
    /// Xen refused copy `index` (the first failed one; `failed` copies failed in all). The other
    /// copies of the batch were done.
    Failed {
        /// Position of the first failed copy in the batch.
        index: usize,
        /// Its status.
        status: GntStatus,
        /// How many copies of the batch failed.
        failed: usize,
    },
    /// The hypercall itself failed (errno); no status was written.
    Hypercall(i32),
}

impl fmt::Display for CopyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyError::BadRange { index } => {
                write!(f, "grant copy {index} is empty or crosses a page boundary")
            }
            CopyError::Failed {
                index,
                status,
                failed,
            } => write!(
                f,
                "grant copy {index} failed: {status} ({failed} of the batch failed)"
            ),
            CopyError::Hypercall(e) => write!(f, "GNTTABOP_copy failed: errno {e}"),
        }
    }
}

/// The `GNTTABOP_copy` argument array for `copies`, each checked to stay inside its pages.
pub fn copy_ops(copies: &[GrantCopy]) -> Result<Vec<GnttabCopy>, CopyError> {
    copies
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let fits = |e: &CopyEnd| usize::from(e.offset()) + usize::from(c.len) <= FRAME_SIZE;
            if c.len == 0 || !fits(&c.source) || !fits(&c.dest) {
                return Err(CopyError::BadRange { index });
            }
            let (source, sg) = c.source.abi();
            let (dest, dg) = c.dest.abi();
            let flags =
                if sg { GNTCOPY_SOURCE_GREF } else { 0 } | if dg { GNTCOPY_DEST_GREF } else { 0 };
            Ok(GnttabCopy {
                source,
                dest,
                len: c.len,
                flags,
                // Xen overwrites it; a failure value guards against a copy it never reached.
                status: GNTST_GENERAL_ERROR,
            })
        })
        .collect()
}

/// Checks the statuses Xen wrote into a batch: `Ok` when every copy succeeded.
pub fn copy_result(ops: &[GnttabCopy]) -> Result<(), CopyError> {
    let mut first = None;
    let mut failed = 0;
    for (index, op) in ops.iter().enumerate() {
        if let Err(status) = GntStatus::check(op.status) {
            failed += 1;
            first.get_or_insert((index, status));
        }
    }
    match first {
        None => Ok(()),
        Some((index, status)) => Err(CopyError::Failed {
            index,
            status,
            failed,
        }),
    }
}

/// Everything that can go wrong granting access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// Every grant reference is in use.
    Exhausted,
    /// The peer still has the page mapped; the grant cannot be revoked yet.
    InUse(GrantRef),
    /// The reference is reserved, out of range or not currently granted by us.
    BadRef(GrantRef),
    /// The frame number does not fit a version-1 entry (32 bits).
    FrameTooLarge(u64),
    /// The grant frames' memory is missing or too small.
    Shmem(OutOfBounds),
}

impl From<OutOfBounds> for GrantError {
    fn from(e: OutOfBounds) -> Self {
        GrantError::Shmem(e)
    }
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantError::Exhausted => f.write_str("every grant reference is in use"),
            GrantError::InUse(r) => write!(f, "grant {r} is still mapped by the peer"),
            GrantError::BadRef(r) => {
                write!(f, "grant {r} is reserved, out of range or not granted")
            }
            GrantError::FrameTooLarge(fr) => write!(f, "frame {fr:#x} does not fit a v1 grant"),
            GrantError::Shmem(e) => write!(f, "grant table memory: {e}"),
        }
    }
}

/// A version-1 grant table: entries in shared memory plus the allocator of references.
pub struct GrantTable {
    mem: ShMem,
    /// Free references, handed out from the end (most recently freed first).
    free: Vec<GrantRef>,
    /// Which references are currently granted by us.
    granted: Vec<bool>,
}

impl GrantTable {
    /// A table over `mem` (the mapped grant frames; its length decides the number of entries).
    /// Entries past the reserved ones are cleared.
    pub fn new(mem: ShMem) -> Result<Self, GrantError> {
        let entries = (mem.len() / ENTRY_SIZE) as u32;
        if entries <= GNTTAB_NR_RESERVED_ENTRIES {
            return Err(GrantError::Shmem(OutOfBounds {
                offset: 0,
                len: (GNTTAB_NR_RESERVED_ENTRIES as usize + 1) * ENTRY_SIZE,
                size: mem.len(),
            }));
        }
        let start = GNTTAB_NR_RESERVED_ENTRIES as usize * ENTRY_SIZE;
        mem.zero(start, entries as usize * ENTRY_SIZE - start)?;
        let free = (GNTTAB_NR_RESERVED_ENTRIES..entries).rev().collect();
        Ok(GrantTable {
            mem,
            free,
            granted: alloc::vec![false; entries as usize],
        })
    }

    /// Entries in the table, reserved ones included.
    pub fn capacity(&self) -> u32 {
        self.granted.len() as u32
    }

    /// References free to grant.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// References granted now (not ended yet).
    pub fn granted_count(&self) -> usize {
        self.granted.iter().filter(|&&g| g).count()
    }

    /// Grants `domid` access to `frame` (read-only if `readonly`); returns the reference to
    /// hand to the peer.
    pub fn grant_access(
        &mut self,
        domid: DomId,
        frame: u64,
        readonly: bool,
    ) -> Result<GrantRef, GrantError> {
        let frame32 = u32::try_from(frame).map_err(|_| GrantError::FrameTooLarge(frame))?;
        let gref = self.free.pop().ok_or(GrantError::Exhausted)?;
        let at = gref as usize * ENTRY_SIZE;
        let filled = (|| {
            self.mem.store_u32(at + 4, frame32, Ordering::Relaxed)?;
            self.mem.store_u16(at + 2, domid, Ordering::Relaxed)?;
            // Xen may use the entry as soon as it sees the flags: frame and domid first.
            fence(Ordering::Release);
            let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
            self.mem.store_u16(at, flags, Ordering::Relaxed)
        })();
        if let Err(e) = filled {
            self.free.push(gref);
            return Err(e.into());
        }
        self.granted[gref as usize] = true;
        Ok(gref)
    }

    /// Revokes a grant and frees its reference, unless the peer still has the page mapped
    /// (then [`GrantError::InUse`]: unmap on the peer's side first, and try again).
    pub fn end_access(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        self.check(gref)?;
        let at = gref as usize * ENTRY_SIZE;
        let mut flags = self.mem.load_u16(at, Ordering::Acquire)?;
        loop {
            if flags & (GTF_READING | GTF_WRITING) != 0 {
                return Err(GrantError::InUse(gref));
            }
            // Only clear the flags if Xen did not start a mapping meanwhile.
            match self
                .mem
                .compare_exchange_u16(at, flags, 0, Ordering::AcqRel)?
            {
                Ok(_) => break,
                Err(now) => flags = now,
            }
        }
        self.granted[gref as usize] = false;
        self.free.push(gref);
        Ok(())
    }

    /// True while the peer has `gref` mapped (reading or writing).
    pub fn in_use(&self, gref: GrantRef) -> Result<bool, GrantError> {
        self.check(gref)?;
        let flags = self
            .mem
            .load_u16(gref as usize * ENTRY_SIZE, Ordering::Acquire)?;
        Ok(flags & (GTF_READING | GTF_WRITING) != 0)
    }

    fn check(&self, gref: GrantRef) -> Result<(), GrantError> {
        if self.granted.get(gref as usize) == Some(&true) {
            Ok(())
        } else {
            Err(GrantError::BadRef(gref))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(frames: usize) -> (GrantTable, ShMem) {
        let mem = ShMem::new(frames * FRAME_SIZE);
        (GrantTable::new(mem.clone()).unwrap(), mem)
    }

    #[test]
    fn entry_is_written_as_grant_entry_v1() {
        let (mut gt, mem) = table(1);
        let r = gt.grant_access(5, 0x1234_5678, true).unwrap();
        assert!(r >= GNTTAB_NR_RESERVED_ENTRIES);
        let at = r as usize * 8;
        assert_eq!(
            mem.load_u16(at, Ordering::Relaxed).unwrap(),
            GTF_PERMIT_ACCESS | GTF_READONLY
        );
        assert_eq!(mem.load_u16(at + 2, Ordering::Relaxed).unwrap(), 5);
        assert_eq!(
            mem.load_u32(at + 4, Ordering::Relaxed).unwrap(),
            0x1234_5678
        );
        let w = gt.grant_access(0, 7, false).unwrap();
        assert_eq!(
            mem.load_u16(w as usize * 8, Ordering::Relaxed).unwrap(),
            GTF_PERMIT_ACCESS
        );
        assert_eq!(
            gt.grant_access(0, 1 << 32, false),
            Err(GrantError::FrameTooLarge(1 << 32))
        );
    }

    #[test]
    fn allocating_every_reference_then_exhausted() {
        let (mut gt, _) = table(1);
        assert_eq!(gt.capacity(), 512);
        let refs: Vec<_> = (0..504)
            .map(|i| gt.grant_access(1, i, false).unwrap())
            .collect();
        let mut sorted = refs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 504);
        assert_eq!(sorted[0], 8, "reserved refs never handed out");
        assert_eq!(gt.grant_access(1, 0, false), Err(GrantError::Exhausted));
        assert_eq!(gt.granted_count(), 504);
        gt.end_access(refs[17]).unwrap();
        assert_eq!(gt.granted_count(), 503);
        assert_eq!(gt.grant_access(1, 0, false), Ok(refs[17]));
    }

    #[test]
    fn end_access_refuses_while_the_peer_has_it_mapped() {
        let (mut gt, mem) = table(1);
        let r = gt.grant_access(1, 99, false).unwrap();
        let at = r as usize * 8;
        // The hypervisor marks the entry mapped on the peer's behalf.
        mem.store_u16(at, GTF_PERMIT_ACCESS | GTF_READING, Ordering::Release)
            .unwrap();
        assert_eq!(gt.in_use(r), Ok(true));
        assert_eq!(gt.end_access(r), Err(GrantError::InUse(r)));
        mem.store_u16(at, GTF_PERMIT_ACCESS | GTF_WRITING, Ordering::Release)
            .unwrap();
        assert_eq!(gt.end_access(r), Err(GrantError::InUse(r)));
        mem.store_u16(at, GTF_PERMIT_ACCESS, Ordering::Release)
            .unwrap();
        assert_eq!(gt.end_access(r), Ok(()));
        assert_eq!(mem.load_u16(at, Ordering::Relaxed).unwrap(), 0);
        assert_eq!(gt.end_access(r), Err(GrantError::BadRef(r)), "double end");
        assert_eq!(gt.grant_access(2, 5, true), Ok(r), "reference reused");
    }

    #[test]
    fn bad_references() {
        let (mut gt, _) = table(1);
        assert_eq!(gt.end_access(3), Err(GrantError::BadRef(3)), "reserved");
        assert_eq!(
            gt.end_access(100),
            Err(GrantError::BadRef(100)),
            "never granted"
        );
        assert_eq!(gt.end_access(u32::MAX), Err(GrantError::BadRef(u32::MAX)));
        assert!(matches!(
            GrantTable::new(ShMem::new(64)),
            Err(GrantError::Shmem(_))
        ));
    }

    #[test]
    fn copy_ops_carry_both_ends_and_their_flags() {
        let from_dom0 = GrantCopy {
            source: CopyEnd::Granted {
                domid: 0,
                gref: 42,
                offset: 16,
            },
            dest: CopyEnd::Local {
                frame: 0x1_2345,
                offset: 0,
            },
            len: 4080,
        };
        let to_dom0 = GrantCopy {
            source: CopyEnd::Local {
                frame: 7,
                offset: 100,
            },
            dest: CopyEnd::Granted {
                domid: 3,
                gref: 9,
                offset: 200,
            },
            len: 8,
        };
        let ops = copy_ops(&[from_dom0, to_dom0]).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].flags, GNTCOPY_SOURCE_GREF);
        assert_eq!(
            (ops[0].source.u, ops[0].source.domid, ops[0].source.offset),
            (42, 0, 16)
        );
        assert_eq!(
            (ops[0].dest.u, ops[0].dest.domid, ops[0].dest.offset),
            (0x1_2345, DOMID_SELF, 0)
        );
        assert_eq!(ops[0].len, 4080);
        assert_eq!(ops[1].flags, GNTCOPY_DEST_GREF);
        assert_eq!(
            (ops[1].dest.u, ops[1].dest.domid, ops[1].dest.offset),
            (9, 3, 200)
        );
        assert_eq!(ops[1].source.domid, DOMID_SELF);
        // Never reached by Xen = failed.
        assert!(ops.iter().all(|o| o.status == GNTST_GENERAL_ERROR));
        let both = GrantCopy {
            dest: CopyEnd::Granted {
                domid: 1,
                gref: 8,
                offset: 0,
            },
            ..from_dom0
        };
        assert_eq!(
            copy_ops(&[both]).unwrap()[0].flags,
            GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF
        );
    }

    #[test]
    fn copies_crossing_a_page_or_empty_are_refused() {
        let ok = GrantCopy {
            source: CopyEnd::Local {
                frame: 1,
                offset: 0,
            },
            dest: CopyEnd::Granted {
                domid: 0,
                gref: 8,
                offset: 0,
            },
            len: 4096,
        };
        assert!(copy_ops(&[ok]).is_ok());
        let src_past = GrantCopy {
            source: CopyEnd::Local {
                frame: 1,
                offset: 1,
            },
            ..ok
        };
        let dst_past = GrantCopy {
            dest: CopyEnd::Granted {
                domid: 0,
                gref: 8,
                offset: 4095,
            },
            len: 2,
            ..ok
        };
        let empty = GrantCopy { len: 0, ..ok };
        let huge = GrantCopy {
            len: u16::MAX,
            ..ok
        };
        assert_eq!(
            copy_ops(&[ok, src_past]),
            Err(CopyError::BadRange { index: 1 })
        );
        assert_eq!(copy_ops(&[dst_past]), Err(CopyError::BadRange { index: 0 }));
        assert_eq!(
            copy_ops(&[ok, ok, empty]),
            Err(CopyError::BadRange { index: 2 })
        );
        assert_eq!(copy_ops(&[huge]), Err(CopyError::BadRange { index: 0 }));
    }

    #[test]
    fn statuses_become_typed_errors() {
        let c = GrantCopy {
            source: CopyEnd::Local {
                frame: 1,
                offset: 0,
            },
            dest: CopyEnd::Local {
                frame: 2,
                offset: 0,
            },
            len: 1,
        };
        let mut ops = copy_ops(&[c, c, c]).unwrap();
        assert_eq!(
            copy_result(&ops),
            Err(CopyError::Failed {
                index: 0,
                status: GntStatus::GeneralError,
                failed: 3
            })
        );
        ops.iter_mut().for_each(|o| o.status = GNTST_OKAY);
        assert_eq!(copy_result(&ops), Ok(()));
        ops[1].status = GNTST_PERMISSION_DENIED;
        ops[2].status = GNTST_BAD_GNTREF;
        let e = copy_result(&ops).unwrap_err();
        assert_eq!(
            e,
            CopyError::Failed {
                index: 1,
                status: GntStatus::PermissionDenied,
                failed: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "grant copy 1 failed: permission denied (2 of the batch failed)"
        );
        for (code, st) in [
            (-2, GntStatus::BadDomain),
            (-3, GntStatus::BadGntref),
            (-9, GntStatus::BadPage),
            (-10, GntStatus::BadCopyArg),
            (-12, GntStatus::Eagain),
            (-99, GntStatus::Other(-99)),
            (5, GntStatus::Other(5)),
        ] {
            assert_eq!(GntStatus::check(code), Err(st));
        }
        assert_eq!(copy_result(&[]), Ok(()));
    }
}
