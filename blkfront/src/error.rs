//! The driver's one error enum, and its policy towards a misbehaving backend.
//!
//! Policy: nothing the backend writes can panic the driver or make it touch memory outside its
//! own pages, and one bad answer costs only the request it answers. Every response is copied out
//! of its slot once and checked: its id must name a request in flight (slot and generation) that
//! has no answer yet, its operation must be that request's, its status one of the three blkif
//! codes.
//!
//! - An error status completes its request with [`Error::Io`] or [`Error::Unsupported`] (an
//!   EOPNOTSUPP for flush, barrier or discard also turns that feature off, as Linux does).
//! - A wrong operation or an unknown status completes its request with [`Error::Backend`]: the
//!   backend did answer that request, so its slot and pages are free again.
//! - A response whose id names no request waiting for an answer (never made, already answered:
//!   a duplicate) cannot be pinned on any request: it is counted in
//!   [`Stats::bad_responses`](crate::Stats), logged and dropped, and everything else goes on. A
//!   request whose answer it garbled ends with [`Error::TimedOut`] at its deadline.
//! - A response producer index out of range means no response can be consumed: every operation
//!   with requests in flight then fails with [`Error::Backend`]
//!   ([`BackendError::BadResponseIndex`]); the ring is read again once the index is sane.
//!
//! A request abandoned by its operation (timed out, or its future dropped) keeps its ring slot,
//! its pool pages and their grants until the backend answers it (if ever): those pages are never
//! handed to another request while the backend may still write them. Its answer, when it comes,
//! is counted in [`Stats::late_responses`](crate::Stats).

use alloc::string::String;
use core::fmt;

use xen::hal::HalError;
use xen::ring::RingError;
use xen::shmem::OutOfBounds;
use xen::xenbus::XenbusError;

use crate::wire::Op;

/// A protocol violation by the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// The response producer index is ahead of what we requested (or more than a ring ahead).
    BadResponseIndex {
        /// Published index.
        rsp_prod: u32,
        /// Our consumer index.
        rsp_cons: u32,
    },
    /// A response whose id names no request in flight.
    UnknownId(u64),
    /// A response whose operation is not its request's.
    WrongOperation {
        /// The request's operation byte.
        expected: u8,
        /// The response's.
        got: u8,
    },
    /// A status that is no `BLKIF_RSP_*` code.
    BadStatus(i16),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::BadResponseIndex { rsp_prod, rsp_cons } => write!(
                f,
                "response index {rsp_prod} out of range (consumed up to {rsp_cons})"
            ),
            BackendError::UnknownId(id) => write!(f, "response for unknown request id {id:#x}"),
            BackendError::WrongOperation { expected, got } => {
                write!(
                    f,
                    "response operation {got} for a request of operation {expected}"
                )
            }
            BackendError::BadStatus(s) => write!(f, "response status {s} is no blkif status"),
        }
    }
}

/// Everything a block operation or the connection can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The byte range is not inside the disk.
    OutOfRange {
        /// Start of the range, in bytes.
        offset: u64,
        /// Its length, in bytes.
        len: u64,
        /// The disk's size, in bytes.
        capacity: u64,
    },
    /// A block operation on a range not aligned to the sector size.
    Unaligned {
        /// Start of the range, in bytes.
        offset: u64,
        /// Its length, in bytes.
        len: u64,
        /// The disk's logical sector size.
        sector_size: u32,
    },
    /// The disk is read-only (refused before touching the ring).
    ReadOnly,
    /// The backend reported an I/O error (`BLKIF_RSP_ERROR`).
    Io {
        /// The failed operation.
        op: Op,
        /// The first wire (512-byte) sector of the failed request.
        sector: u64,
    },
    /// The backend does not support this operation (not offered, or `BLKIF_RSP_EOPNOTSUPP`).
    Unsupported(Op),
    /// The backend broke the protocol.
    Backend(BackendError),
    /// The backend did not answer within [`Config::io_timeout_ns`](crate::Config::io_timeout_ns).
    TimedOut,
    /// The device was disconnected.
    Disconnected,
    /// A backend node holds a value we cannot use.
    BadBackendNode {
        /// The node, relative to the backend directory.
        key: &'static str,
        /// Its value (first bytes).
        value: String,
    },
    /// The xenbus handshake failed.
    Xenbus(XenbusError),
    /// There is no xenstore to find or connect the disk through (dom0 without xenstored).
    NoXenstore,
    /// The platform refused a page, grant or event channel.
    Hal(HalError),
    /// A ring access outside the ring memory (a driver bug).
    Memory(OutOfBounds),
    /// After a restore or migration the backend offers another disk than before (its size or
    /// sector size changed): the disk is not reconnected and every operation fails, rather than
    /// resubmit requests to a disk they were not made for.
    DiskChanged {
        /// Size before, in wire (512-byte) sectors.
        sectors: u64,
        /// Sector size before.
        sector_size: u32,
        /// What the new backend offers: size in wire sectors.
        new_sectors: u64,
        /// And sector size.
        new_sector_size: u32,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutOfRange {
                offset,
                len,
                capacity,
            } => write!(
                f,
                "{len} bytes at offset {offset} are outside the {capacity}-byte disk"
            ),
            Error::Unaligned {
                offset,
                len,
                sector_size,
            } => write!(
                f,
                "{len} bytes at offset {offset} are not aligned to {sector_size}-byte sectors"
            ),
            Error::ReadOnly => f.write_str("the disk is read-only"),
            Error::Io { op, sector } => write!(f, "{op} I/O error at sector {sector}"),
            Error::Unsupported(op) => write!(f, "the backend does not support {op}"),
            Error::Backend(e) => write!(f, "backend protocol error: {e}"),
            Error::TimedOut => f.write_str("timed out waiting for the backend"),
            Error::Disconnected => f.write_str("the disk is disconnected"),
            Error::BadBackendNode { key, value } => {
                write!(f, "backend node {key} holds an unusable value {value:?}")
            }
            Error::Xenbus(e) => write!(f, "xenbus: {e}"),
            Error::NoXenstore => f.write_str("no xenstore to find the disk through"),
            Error::Hal(e) => write!(f, "platform: {e}"),
            Error::Memory(e) => write!(f, "ring memory: {e}"),
            Error::DiskChanged {
                sectors,
                sector_size,
                new_sectors,
                new_sector_size,
            } => write!(
                f,
                "after the restore the backend offers another disk ({new_sectors} sectors of \
                 {new_sector_size} bytes, was {sectors} of {sector_size}): not reconnected"
            ),
        }
    }
}

impl From<XenbusError> for Error {
    fn from(e: XenbusError) -> Self {
        Error::Xenbus(e)
    }
}

impl From<HalError> for Error {
    fn from(e: HalError) -> Self {
        Error::Hal(e)
    }
}

impl From<OutOfBounds> for Error {
    fn from(e: OutOfBounds) -> Self {
        Error::Memory(e)
    }
}

impl From<RingError> for Error {
    fn from(e: RingError) -> Self {
        match e {
            RingError::BadResponseIndex {
                rsp_prod, rsp_cons, ..
            } => Error::Backend(BackendError::BadResponseIndex { rsp_prod, rsp_cons }),
            RingError::Memory(m) => Error::Memory(m),
            // We never queue without checking for room first.
            RingError::Full => Error::Memory(OutOfBounds {
                offset: 0,
                len: 0,
                size: 0,
            }),
        }
    }
}
