//! The blkif ring ABI (xen/io/blkif.h, x86_64 layout) as byte images.
//!
//! A ring slot is copied out of (or into) shared memory once, as a fixed-size byte array; this
//! module turns such arrays into validated values and back, so no field is ever read twice from
//! memory the backend can change. Offsets live in [`field`]; the layout tests at the bottom check
//! them against what gcc makes of `<xen/io/blkif.h>`.
//!
//! Units: `sector_number`, `first_sect`/`last_sect` and `nr_sectors` count 512-byte sectors
//! ([`WIRE_SECTOR`]), whatever the disk's logical `sector-size` (we do not advertise
//! `feature-large-sector-size`, so that is the unit every backend uses with us).

use core::fmt;

/// Size of `struct blkif_request` (and of the ring slot: the request/response union).
pub const REQUEST_LEN: usize = 112;
/// Size of `struct blkif_response`.
pub const RESPONSE_LEN: usize = 16;
/// Size of one ring slot, `union blkif_sring_entry`.
pub const ENTRY_LEN: usize = REQUEST_LEN;
/// Size of `struct blkif_request_segment`.
pub const SEGMENT_LEN: usize = 8;
/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`: segments in a direct request.
pub const MAX_SEGMENTS: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`: descriptor pages in an indirect request.
pub const MAX_INDIRECT_PAGES: usize = 8;
/// Segment descriptors held by one indirect page.
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = PAGE_SIZE / SEGMENT_LEN;
/// The ring's unit for sector quantities.
pub const WIRE_SECTOR: usize = 512;
/// A granted page.
pub const PAGE_SIZE: usize = 4096;
/// Wire sectors in a page: `last_sect` is at most this minus one.
pub const SECTORS_PER_PAGE: u8 = (PAGE_SIZE / WIRE_SECTOR) as u8;
/// `XEN_IO_PROTO_ABI_X86_64`, written to the frontend's `protocol` node.
pub const PROTOCOL: &str = "x86_64-abi";

/// `VDISK_CDROM` bit of the backend's `info` node.
pub const VDISK_CDROM: u32 = 0x1;
/// `VDISK_REMOVABLE` bit of the backend's `info` node.
pub const VDISK_REMOVABLE: u32 = 0x2;
/// `VDISK_READONLY` bit of the backend's `info` node.
pub const VDISK_READONLY: u32 = 0x4;

/// `BLKIF_DISCARD_SECURE`, the discard request's flag.
pub const DISCARD_SECURE: u8 = 1;

/// Byte offsets of the fields (x86_64).
pub mod field {
    use core::ops::Range;

    /// Common to every request: the operation.
    pub const OPERATION: usize = 0;
    /// Read/write: segment count; discard: flags; indirect: the wrapped operation.
    pub const BYTE1: usize = 1;
    /// Read/write and discard: `handle` (u16).
    pub const HANDLE: Range<usize> = 2..4;
    /// Indirect: `nr_segments` (u16).
    pub const INDIRECT_NR_SEGMENTS: Range<usize> = 2..4;
    /// Every request: `id` (u64).
    pub const ID: Range<usize> = 8..16;
    /// Every request: `sector_number` (u64).
    pub const SECTOR: Range<usize> = 16..24;
    /// Read/write: `seg[11]`, 8 bytes each.
    pub const SEGMENTS: usize = 24;
    /// Discard: `nr_sectors` (u64).
    pub const NR_SECTORS: Range<usize> = 24..32;
    /// Indirect: `handle` (u16).
    pub const INDIRECT_HANDLE: Range<usize> = 24..26;
    /// Indirect: `indirect_grefs[8]` (u32 each).
    pub const INDIRECT_GREFS: usize = 28;

    /// Segment: `gref` (u32).
    pub const SEG_GREF: Range<usize> = 0..4;
    /// Segment: `first_sect`.
    pub const SEG_FIRST: usize = 4;
    /// Segment: `last_sect`.
    pub const SEG_LAST: usize = 5;

    /// Response: `id` (u64).
    pub const RSP_ID: Range<usize> = 0..8;
    /// Response: `operation`.
    pub const RSP_OPERATION: usize = 8;
    /// Response: `status` (i16).
    pub const RSP_STATUS: Range<usize> = 10..12;
}

/// Response status codes (`BLKIF_RSP_*`).
pub mod status {
    /// `BLKIF_RSP_OKAY`.
    pub const OKAY: i16 = 0;
    /// `BLKIF_RSP_ERROR`: the I/O failed.
    pub const ERROR: i16 = -1;
    /// `BLKIF_RSP_EOPNOTSUPP`: the backend does not do this operation.
    pub const EOPNOTSUPP: i16 = -2;
}

/// Request operations (`BLKIF_OP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// 0: read sectors into the segments.
    Read = 0,
    /// 1: write the segments' sectors.
    Write = 1,
    /// 2: write, ordered after every earlier write and before every later one.
    WriteBarrier = 2,
    /// 3: commit the backend's volatile cache to stable storage.
    FlushDiskcache = 3,
    /// 5: the range is no longer in use.
    Discard = 5,
    /// 6: a read or write whose segments live in granted indirect pages.
    Indirect = 6,
}

impl Op {
    /// The operation for its wire value.
    pub fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            0 => Op::Read,
            1 => Op::Write,
            2 => Op::WriteBarrier,
            3 => Op::FlushDiskcache,
            5 => Op::Discard,
            6 => Op::Indirect,
            _ => return None,
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::WriteBarrier => "write barrier",
            Op::FlushDiskcache => "cache flush",
            Op::Discard => "discard",
            Op::Indirect => "indirect",
        })
    }
}

/// A request image that is not a valid blkif request (what a backend would refuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The operation byte is no `BLKIF_OP_*` we know.
    UnknownOperation(u8),
    /// More segments than the request form allows.
    TooManySegments(u16),
    /// An indirect request wrapping something other than a read or a write.
    BadIndirectOperation(u8),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::UnknownOperation(op) => write!(f, "unknown blkif operation {op}"),
            WireError::TooManySegments(n) => write!(f, "{n} segments is too many"),
            WireError::BadIndirectOperation(op) => {
                write!(f, "indirect request wrapping operation {op}")
            }
        }
    }
}

/// `struct blkif_request_segment`: sectors `first_sect..=last_sect` of granted page `gref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// Grant of the data page.
    pub gref: u32,
    /// First wire sector in the page (inclusive).
    pub first_sect: u8,
    /// Last wire sector in the page (inclusive).
    pub last_sect: u8,
}

impl Segment {
    /// Writes the 8-byte image (padding zeroed).
    pub fn emit(&self) -> [u8; SEGMENT_LEN] {
        let mut b = [0u8; SEGMENT_LEN];
        b[field::SEG_GREF].copy_from_slice(&self.gref.to_le_bytes());
        b[field::SEG_FIRST] = self.first_sect;
        b[field::SEG_LAST] = self.last_sect;
        b
    }

    /// Reads an 8-byte image.
    pub fn parse(b: &[u8; SEGMENT_LEN]) -> Segment {
        Segment {
            gref: u32::from_le_bytes(arr(&b[field::SEG_GREF])),
            first_sect: b[field::SEG_FIRST],
            last_sect: b[field::SEG_LAST],
        }
    }

    /// True when `first_sect <= last_sect < 8`, i.e. the range lies in one page.
    pub fn is_valid(&self) -> bool {
        self.first_sect <= self.last_sect && self.last_sect < SECTORS_PER_PAGE
    }

    /// Bytes transferred (0 when invalid).
    pub fn len(&self) -> usize {
        if self.is_valid() {
            (self.last_sect - self.first_sect + 1) as usize * WIRE_SECTOR
        } else {
            0
        }
    }

    /// True when [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Read, write, barrier or flush: up to 11 segments inline (`struct blkif_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RwRequest {
    /// Read, Write, WriteBarrier or FlushDiskcache.
    pub op: Op,
    /// The virtual device.
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// First wire sector.
    pub sector: u64,
    /// Segments in use (at most [`MAX_SEGMENTS`]).
    pub nr_segments: u8,
    /// The segments; entries past `nr_segments` are ignored.
    pub segments: [Segment; MAX_SEGMENTS],
}

impl RwRequest {
    /// The segments in use.
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..(self.nr_segments as usize).min(MAX_SEGMENTS)]
    }
}

/// `struct blkif_request_discard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscardRequest {
    /// `BLKIF_DISCARD_SECURE` requested.
    pub secure: bool,
    /// The virtual device.
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// First wire sector.
    pub sector: u64,
    /// Wire sectors to discard.
    pub nr_sectors: u64,
}

/// `struct blkif_request_indirect`: a read or write whose segment descriptors fill
/// `ceil(nr_segments / 512)` granted pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndirectRequest {
    /// Read or Write.
    pub op: Op,
    /// Segments described in the indirect pages.
    pub nr_segments: u16,
    /// Echoed in the response (whose operation is [`Op::Indirect`]).
    pub id: u64,
    /// First wire sector.
    pub sector: u64,
    /// The virtual device.
    pub handle: u16,
    /// Grants of the descriptor pages; entries past [`pages`](Self::pages) are zero.
    pub indirect_grefs: [u32; MAX_INDIRECT_PAGES],
}

impl IndirectRequest {
    /// Descriptor pages in use.
    pub fn pages(&self) -> usize {
        (self.nr_segments as usize)
            .div_ceil(SEGMENTS_PER_INDIRECT_PAGE)
            .min(MAX_INDIRECT_PAGES)
    }
}

/// A request slot, by form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Read, write, barrier, flush.
    Rw(RwRequest),
    /// Discard.
    Discard(DiscardRequest),
    /// Indirect read or write.
    Indirect(IndirectRequest),
}

impl Request {
    /// The request's id.
    pub fn id(&self) -> u64 {
        match self {
            Request::Rw(r) => r.id,
            Request::Discard(r) => r.id,
            Request::Indirect(r) => r.id,
        }
    }

    /// The operation byte, as the response must echo it.
    pub fn operation(&self) -> Op {
        match self {
            Request::Rw(r) => r.op,
            Request::Discard(_) => Op::Discard,
            Request::Indirect(_) => Op::Indirect,
        }
    }

    /// The slot image (unused bytes zeroed).
    pub fn emit(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[field::OPERATION] = self.operation() as u8;
        b[field::ID].copy_from_slice(&self.id().to_le_bytes());
        match self {
            Request::Rw(r) => {
                let segs = r.segments();
                b[field::BYTE1] = segs.len() as u8;
                b[field::HANDLE].copy_from_slice(&r.handle.to_le_bytes());
                b[field::SECTOR].copy_from_slice(&r.sector.to_le_bytes());
                for (i, s) in segs.iter().enumerate() {
                    let at = field::SEGMENTS + i * SEGMENT_LEN;
                    b[at..at + SEGMENT_LEN].copy_from_slice(&s.emit());
                }
            }
            Request::Discard(r) => {
                b[field::BYTE1] = if r.secure { DISCARD_SECURE } else { 0 };
                b[field::HANDLE].copy_from_slice(&r.handle.to_le_bytes());
                b[field::SECTOR].copy_from_slice(&r.sector.to_le_bytes());
                b[field::NR_SECTORS].copy_from_slice(&r.nr_sectors.to_le_bytes());
            }
            Request::Indirect(r) => {
                b[field::BYTE1] = r.op as u8;
                b[field::INDIRECT_NR_SEGMENTS].copy_from_slice(&r.nr_segments.to_le_bytes());
                b[field::SECTOR].copy_from_slice(&r.sector.to_le_bytes());
                b[field::INDIRECT_HANDLE].copy_from_slice(&r.handle.to_le_bytes());
                for (i, g) in r.indirect_grefs.iter().enumerate() {
                    let at = field::INDIRECT_GREFS + i * 4;
                    b[at..at + 4].copy_from_slice(&g.to_le_bytes());
                }
            }
        }
        b
    }

    /// Reads a slot image (what a backend does).
    pub fn parse(b: &[u8; REQUEST_LEN]) -> Result<Request, WireError> {
        let raw_op = b[field::OPERATION];
        let op = Op::from_u8(raw_op).ok_or(WireError::UnknownOperation(raw_op))?;
        let id = u64::from_le_bytes(arr(&b[field::ID]));
        let sector = u64::from_le_bytes(arr(&b[field::SECTOR]));
        let handle = u16::from_le_bytes(arr(&b[field::HANDLE]));
        Ok(match op {
            Op::Read | Op::Write | Op::WriteBarrier | Op::FlushDiskcache => {
                let nr_segments = b[field::BYTE1];
                if nr_segments as usize > MAX_SEGMENTS {
                    return Err(WireError::TooManySegments(nr_segments.into()));
                }
                // Segments past `nr_segments` are not part of the request: left zero.
                let mut segments = [Segment::default(); MAX_SEGMENTS];
                for (i, s) in segments.iter_mut().take(nr_segments.into()).enumerate() {
                    let at = field::SEGMENTS + i * SEGMENT_LEN;
                    *s = Segment::parse(&arr(&b[at..at + SEGMENT_LEN]));
                }
                Request::Rw(RwRequest {
                    op,
                    handle,
                    id,
                    sector,
                    nr_segments,
                    segments,
                })
            }
            Op::Discard => Request::Discard(DiscardRequest {
                secure: b[field::BYTE1] & DISCARD_SECURE != 0,
                handle,
                id,
                sector,
                nr_sectors: u64::from_le_bytes(arr(&b[field::NR_SECTORS])),
            }),
            Op::Indirect => {
                let inner = b[field::BYTE1];
                let op = match Op::from_u8(inner) {
                    Some(op @ (Op::Read | Op::Write)) => op,
                    _ => return Err(WireError::BadIndirectOperation(inner)),
                };
                let nr_segments = u16::from_le_bytes(arr(&b[field::INDIRECT_NR_SEGMENTS]));
                if nr_segments as usize > MAX_INDIRECT_PAGES * SEGMENTS_PER_INDIRECT_PAGE {
                    return Err(WireError::TooManySegments(nr_segments));
                }
                let mut indirect_grefs = [0u32; MAX_INDIRECT_PAGES];
                for (i, g) in indirect_grefs.iter_mut().enumerate() {
                    let at = field::INDIRECT_GREFS + i * 4;
                    *g = u32::from_le_bytes(arr(&b[at..at + 4]));
                }
                Request::Indirect(IndirectRequest {
                    op,
                    nr_segments,
                    id,
                    sector,
                    handle: u16::from_le_bytes(arr(&b[field::INDIRECT_HANDLE])),
                    indirect_grefs,
                })
            }
        })
    }
}

/// `struct blkif_response`, fields as the backend wrote them (the driver judges them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Should be the id of a request in flight.
    pub id: u64,
    /// Should be the request's operation byte.
    pub operation: u8,
    /// Should be one of [`status`].
    pub status: i16,
}

impl Response {
    /// The slot image (padding zeroed).
    pub fn emit(&self) -> [u8; RESPONSE_LEN] {
        let mut b = [0u8; RESPONSE_LEN];
        b[field::RSP_ID].copy_from_slice(&self.id.to_le_bytes());
        b[field::RSP_OPERATION] = self.operation;
        b[field::RSP_STATUS].copy_from_slice(&self.status.to_le_bytes());
        b
    }

    /// Reads a slot image; any bytes are a response (validation is the driver's).
    pub fn parse(b: &[u8; RESPONSE_LEN]) -> Response {
        Response {
            id: u64::from_le_bytes(arr(&b[field::RSP_ID])),
            operation: b[field::RSP_OPERATION],
            status: i16::from_le_bytes(arr(&b[field::RSP_STATUS])),
        }
    }
}

/// A fixed-size array from a slice whose length the caller's constant ranges guarantee.
fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let n = s.len().min(N);
    a[..n].copy_from_slice(&s[..n]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets and sizes from `offsetof`/`sizeof` on <xen/io/blkif.h> (Xen 4.17 headers, gcc,
    /// x86_64): blkif_request {operation 0, nr_segments 1, handle 2, id 8, sector_number 16,
    /// seg 24 (8 x 11)} = 112; segment {gref 0, first_sect 4, last_sect 5} = 8; discard
    /// {operation 0, flag 1, handle 2, id 8, sector_number 16, nr_sectors 24} = 32; indirect
    /// {operation 0, indirect_op 1, nr_segments 2, id 8, sector_number 16, handle 24,
    /// indirect_grefs 28} = 64; response {id 0, operation 8, status 10} = 16; ring entry 112,
    /// 32 entries in one page, 128 in four; header 64.
    #[test]
    fn layout_matches_blkif_h() {
        assert_eq!(
            (REQUEST_LEN, RESPONSE_LEN, SEGMENT_LEN, ENTRY_LEN),
            (112, 16, 8, 112)
        );
        assert_eq!(field::SEGMENTS + MAX_SEGMENTS * SEGMENT_LEN, 112);
        assert_eq!(
            (field::HANDLE.start, field::ID.start, field::SECTOR.start),
            (2, 8, 16)
        );
        assert_eq!(field::NR_SECTORS, 24..32);
        assert_eq!(
            (
                field::INDIRECT_NR_SEGMENTS.start,
                field::INDIRECT_HANDLE.start
            ),
            (2, 24)
        );
        assert_eq!(
            field::INDIRECT_GREFS + MAX_INDIRECT_PAGES * 4,
            60,
            "64 with padding"
        );
        assert_eq!(
            (
                field::RSP_ID.start,
                field::RSP_OPERATION,
                field::RSP_STATUS.start
            ),
            (0, 8, 10)
        );
        assert_eq!(xen::ring::ring_size(4096, ENTRY_LEN), 32);
        assert_eq!(xen::ring::ring_size(4 * 4096, ENTRY_LEN), 128);
        assert_eq!(SEGMENTS_PER_INDIRECT_PAGE, 512);
        assert_eq!(VDISK_READONLY, 4);
    }

    #[test]
    fn read_request_fixture() {
        let mut segments = [Segment::default(); MAX_SEGMENTS];
        segments[0] = Segment {
            gref: 0x0102_0304,
            first_sect: 1,
            last_sect: 7,
        };
        segments[1] = Segment {
            gref: 9,
            first_sect: 0,
            last_sect: 3,
        };
        let r = Request::Rw(RwRequest {
            op: Op::Write,
            handle: 0x5100,
            id: 0x1122_3344_5566_7788,
            sector: 0x10,
            nr_segments: 2,
            segments,
        });
        let b = r.emit();
        let mut want = [0u8; REQUEST_LEN];
        want[..40].copy_from_slice(&[
            1, 2, 0x00, 0x51, 0, 0, 0, 0, // op, nr, handle, pad
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // id
            0x10, 0, 0, 0, 0, 0, 0, 0, // sector
            4, 3, 2, 1, 1, 7, 0, 0, // seg 0
            9, 0, 0, 0, 0, 3, 0, 0, // seg 1
        ]);
        assert_eq!(b, want);
        assert_eq!(Request::parse(&b), Ok(r));
        assert_eq!(segments[0].len(), 7 * 512);
    }

    #[test]
    fn discard_and_indirect_round_trip() {
        let d = Request::Discard(DiscardRequest {
            secure: true,
            handle: 3,
            id: 77,
            sector: 1 << 40,
            nr_sectors: 12345,
        });
        let b = d.emit();
        assert_eq!((b[0], b[1]), (5, 1));
        assert_eq!(&b[24..32], &12345u64.to_le_bytes());
        assert_eq!(Request::parse(&b), Ok(d));

        let mut grefs = [0; MAX_INDIRECT_PAGES];
        grefs[0] = 0xaabb;
        grefs[1] = 0xccdd;
        let i = Request::Indirect(IndirectRequest {
            op: Op::Read,
            nr_segments: 600,
            id: 5,
            sector: 8,
            handle: 0x1234,
            indirect_grefs: grefs,
        });
        let b = i.emit();
        assert_eq!((b[0], b[1]), (6, 0));
        assert_eq!(&b[2..4], &600u16.to_le_bytes());
        assert_eq!(&b[24..26], &0x1234u16.to_le_bytes());
        assert_eq!(&b[28..32], &0xaabbu32.to_le_bytes());
        assert_eq!(Request::parse(&b), Ok(i));
        if let Request::Indirect(i) = i {
            assert_eq!(i.pages(), 2);
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut b = [0u8; REQUEST_LEN];
        b[0] = 4;
        assert_eq!(Request::parse(&b), Err(WireError::UnknownOperation(4)));
        b[0] = 0;
        b[1] = 12;
        assert_eq!(Request::parse(&b), Err(WireError::TooManySegments(12)));
        b[0] = 6;
        b[1] = 3;
        assert_eq!(Request::parse(&b), Err(WireError::BadIndirectOperation(3)));
        b[1] = 1;
        b[2..4].copy_from_slice(&4097u16.to_le_bytes());
        assert_eq!(Request::parse(&b), Err(WireError::TooManySegments(4097)));
    }

    #[test]
    fn segments_past_the_count_are_not_part_of_the_request() {
        // Found by the request_parse fuzz target: a read with no segments and junk in seg[0].
        let mut b = [0u8; REQUEST_LEN];
        b[28] = 10;
        let r = Request::parse(&b).unwrap();
        assert_eq!(Request::parse(&r.emit()), Ok(r));
    }

    #[test]
    fn response_fixture() {
        let r = Response {
            id: 0x0102,
            operation: 3,
            status: status::EOPNOTSUPP,
        };
        let b = r.emit();
        assert_eq!(b, [2, 1, 0, 0, 0, 0, 0, 0, 3, 0, 0xfe, 0xff, 0, 0, 0, 0]);
        assert_eq!(Response::parse(&b), r);
    }

    #[test]
    fn segment_validity() {
        let s = |f, l| Segment {
            gref: 1,
            first_sect: f,
            last_sect: l,
        };
        assert!(s(0, 7).is_valid());
        assert!(!s(0, 8).is_valid());
        assert!(!s(3, 2).is_valid());
        assert_eq!(s(3, 2).len(), 0);
    }
}
