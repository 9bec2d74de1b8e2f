//! The log: how the keyspace is kept on the raw disk, and how it is read back at boot.
//!
//! # On disk
//!
//! Block 0 (4 KiB) is the superblock ([`Layout`]): a magic, the sector size, the segment size
//! and count, and a random volume id. The rest is a ring of equal **segments** (4 MiB). A
//! segment holds **frames** back to back, each starting on a sector boundary: a 32-byte header
//! (magic, header CRC, the segment's sequence number, the frame's batch number, payload length,
//! record count) and then **records**, each with its own CRC-32C: `Set` (key, value, expiry),
//! `Del`, `Expire`, `Persist`, `Flush` — the keyspace's [`Effect`]s. A frame is one group
//! commit: every record appended while the previous frame was being written. The header CRC
//! also covers the volume id, so bytes a client stored as a value cannot pass for a frame.
//!
//! # Writing
//!
//! [`Log::append`] encodes an effect into the open frame and says where its record is (the
//! index keeps that, so a value may leave memory and be read back). [`Log::take_write`] seals
//! the open frame and hands it to the committer, one frame at a time; [`Log::done`] marks it
//! on disk, and replies waiting for that batch go out ([`Log::last_batch`]). A frame never
//! spans segments: when the head segment is full the next free one in the ring is opened with
//! the next sequence number. A write that could not find room is refused before it runs
//! ([`Log::admit`]: `-ERR` with the disk full); deletions may use one more segment than writes,
//! and compaction one more again, so that a full disk can still be emptied.
//!
//! # Compaction
//!
//! The oldest segment (the tail) is compacted when few segments are free: its `Set` records
//! whose key still points at them are appended again at the head, with the key's current
//! expiry; everything else (overwritten values, tombstones, flushes, and `Expire`/`Persist`
//! records, whose effect is in the key's newer `Set` record or in that copy) is dropped, and
//! once the copies are on disk the segment is free ([`Log::retire`]). Tombstones can be dropped because the tail is the
//! oldest segment: no older record of the key is left to resurrect — a retired segment keeps
//! its bytes until it is reused, but segments are reused in ring order, so whatever of it is
//! still on disk is replayed before (and overridden by) everything newer.
//!
//! # Recovery
//!
//! At boot every segment's first frame header gives its sequence number (an invalid one: the
//! segment is free); the newest segment and the run of older ones before it in the ring are
//! replayed, oldest first ([`Recovery::order`]), each frame's records applied to
//! an empty keyspace. A segment's frames are read until the first that is not valid: a bad
//! header, a sequence number not the segment's, a batch number not above the last one, or a
//! record whose CRC fails. That frame is a torn tail (the write in flight when the guest
//! stopped, never acknowledged) and the head continues there, overwriting it.

use crate::crc;
use crate::store::{Effect, OnDisk, Store};
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

/// Bytes before the first segment (the superblock's block).
pub const BASE: u64 = 4096;
/// Frame header bytes.
pub const FRAME_HDR: usize = 32;
/// Record header bytes.
pub const REC_HDR: usize = 24;
/// The segment size.
pub const SEGMENT: u64 = 4 << 20;
/// The fewest segments a disk must hold (24 MiB disk).
pub const MIN_SEGMENTS: u64 = 5;

const SB_MAGIC: &[u8; 8] = b"XENRTKV1";
const SB_VERSION: u32 = 1;
const FRAME_MAGIC: u32 = 0x314b_5658;
const NEVER: u64 = u64::MAX;

/// A frame is sealed once it holds this many bytes (one record may make it bigger), so that a
/// group commit, and what compaction appends before it waits, stay small in memory.
pub const MAX_FRAME: usize = 256 * 1024;

/// Free segments a write must leave (compaction and deletions need them).
const RESERVE_WRITE: usize = 2;
/// Free segments a deletion must leave (compaction needs it).
const RESERVE_DELETE: usize = 1;

/// The disk's geometry, from the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Frames start on multiples of this (the sector size, at least 512).
    pub align: u64,
    /// Bytes per segment.
    pub segment: u64,
    /// Number of segments.
    pub segments: u32,
    /// The random id written at format time, mixed into every frame header's CRC.
    pub volume: u64,
}

/// Why the disk cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskError {
    /// Smaller than [`MIN_SEGMENTS`] segments.
    TooSmall,
    /// Block 0 holds something that is not our superblock.
    Foreign,
    /// Our magic, but a bad CRC or impossible geometry.
    Damaged,
    /// Written by a newer version.
    Version,
}

impl core::fmt::Display for DiskError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DiskError::TooSmall => "the disk is too small (kv needs at least 24 MiB)",
            DiskError::Foreign => {
                "the disk holds something else (not a kv log); give kv an empty (zero-filled) \
                 disk, or start it with format=yes to erase this one"
            }
            DiskError::Damaged => "the kv superblock is damaged (bad checksum or geometry)",
            DiskError::Version => "the kv log was written by a newer version of kv",
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Layout {
    /// The layout for a new log on a disk of `capacity` bytes with `sector`-byte sectors.
    pub fn new(capacity: u64, sector: u64, volume: u64) -> Result<Layout, DiskError> {
        Self::with_segment(capacity, sector, volume, SEGMENT)
    }

    /// [`Layout::new`] with another segment size (tests use small ones to wrap the ring).
    pub fn with_segment(
        capacity: u64,
        sector: u64,
        volume: u64,
        segment: u64,
    ) -> Result<Layout, DiskError> {
        let segments = capacity.saturating_sub(BASE) / segment;
        if segments < MIN_SEGMENTS {
            return Err(DiskError::TooSmall);
        }
        Ok(Layout {
            align: sector.max(512),
            segment,
            segments: segments.min(u32::MAX as u64) as u32,
            volume,
        })
    }

    /// Byte offset of segment `i`.
    pub fn seg_start(&self, i: u32) -> u64 {
        BASE + i as u64 * self.segment
    }

    /// The segment and offset in it of disk byte `loc`.
    pub fn seg_of(&self, loc: u64) -> (u32, u64) {
        let rel = loc - BASE;
        ((rel / self.segment) as u32, rel % self.segment)
    }

    /// The superblock (one `align`-sized block).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.align as usize];
        b[0..8].copy_from_slice(SB_MAGIC);
        b[8..12].copy_from_slice(&SB_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.align as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.segment.to_le_bytes());
        b[24..28].copy_from_slice(&self.segments.to_le_bytes());
        b[32..40].copy_from_slice(&self.volume.to_le_bytes());
        let c = crc::crc32c(&b[0..40]);
        b[40..44].copy_from_slice(&c.to_le_bytes());
        b
    }

    /// Reads a superblock: `Ok(None)` if the block is all zeros (a new disk).
    pub fn decode(b: &[u8], capacity: u64) -> Result<Option<Layout>, DiskError> {
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if b.len() < 44 || &b[0..8] != SB_MAGIC {
            return Err(DiskError::Foreign);
        }
        if crc::crc32c(&b[0..40]) != u32_at(b, 40) {
            return Err(DiskError::Damaged);
        }
        if u32_at(b, 8) != SB_VERSION {
            return Err(DiskError::Version);
        }
        let l = Layout {
            align: u32_at(b, 12) as u64,
            segment: u64_at(b, 16),
            segments: u32_at(b, 24),
            volume: u64_at(b, 32),
        };
        let fits = BASE.checked_add(l.segment.saturating_mul(l.segments as u64));
        if !l.align.is_power_of_two()
            || l.align < 512
            || !l.segment.is_multiple_of(l.align)
            || l.segment < 1 << 20
            || (l.segments as u64) < MIN_SEGMENTS
            || fits.is_none_or(|end| end > capacity)
        {
            return Err(DiskError::Damaged);
        }
        Ok(Some(l))
    }
}

// ---- Records ----------------------------------------------------------------------------------

/// A record's kind (its byte on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// `Effect::Set`.
    Set = 1,
    /// `Effect::Del`.
    Del = 2,
    /// `Effect::Expire`.
    Expire = 3,
    /// `Effect::Persist`.
    Persist = 4,
    /// `Effect::Flush`.
    Flush = 5,
}

/// One record, borrowed from the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its kind.
    pub kind: Kind,
    /// The key (empty for `Flush`).
    pub key: &'a [u8],
    /// The value (`Set` only).
    pub value: &'a [u8],
    /// `Set`: the expiry; `Expire`: the time.
    pub expire: Option<u64>,
}

impl Record<'_> {
    /// The effect it records.
    pub fn effect(&self) -> Effect {
        match self.kind {
            Kind::Set => Effect::Set {
                key: self.key.to_vec(),
                value: self.value.to_vec(),
                expire_at_ms: self.expire,
            },
            Kind::Del => Effect::Del {
                key: self.key.to_vec(),
            },
            Kind::Expire => Effect::Expire {
                key: self.key.to_vec(),
                at: self.expire.unwrap_or(NEVER),
            },
            Kind::Persist => Effect::Persist {
                key: self.key.to_vec(),
            },
            Kind::Flush => Effect::Flush,
        }
    }
}

fn parts(e: &Effect) -> (Kind, &[u8], &[u8], u64) {
    match e {
        Effect::Set {
            key,
            value,
            expire_at_ms,
        } => (Kind::Set, key, value, expire_at_ms.unwrap_or(NEVER)),
        Effect::Del { key } => (Kind::Del, key, &[], NEVER),
        Effect::Expire { key, at } => (Kind::Expire, key, &[], *at),
        Effect::Persist { key } => (Kind::Persist, key, &[], NEVER),
        Effect::Flush => (Kind::Flush, &[], &[], NEVER),
    }
}

/// Bytes a record of `key_len` and `value_len` takes.
pub fn record_size(key_len: usize, value_len: usize) -> usize {
    REC_HDR + key_len + value_len
}

/// Bytes `e`'s record takes.
pub fn record_len(e: &Effect) -> usize {
    let (_, k, v, _) = parts(e);
    record_size(k.len(), v.len())
}

/// Appends `e`'s record to `out`.
pub fn encode_record(out: &mut Vec<u8>, e: &Effect) {
    let (kind, key, value, expire) = parts(e);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&[kind as u8, 0, 0, 0]);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&expire.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let c = crc::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&c.to_le_bytes());
}

/// Reads the record at the start of `b`: it and its length, or `None` if it is not a whole,
/// valid record.
pub fn decode_record(b: &[u8]) -> Option<(Record<'_>, usize)> {
    if b.len() < REC_HDR {
        return None;
    }
    let kind = match b[4] {
        1 => Kind::Set,
        2 => Kind::Del,
        3 => Kind::Expire,
        4 => Kind::Persist,
        5 => Kind::Flush,
        _ => return None,
    };
    let (kl, vl) = (u32_at(b, 8) as usize, u32_at(b, 12) as usize);
    let len = REC_HDR.checked_add(kl)?.checked_add(vl)?;
    if len > b.len() || b[5..8] != [0, 0, 0] || crc::crc32c(&b[4..len]) != u32_at(b, 0) {
        return None;
    }
    let expire = u64_at(b, 16);
    let rec = Record {
        kind,
        key: &b[REC_HDR..REC_HDR + kl],
        value: &b[REC_HDR + kl..len],
        expire: (expire != NEVER).then_some(expire),
    };
    Some((rec, len))
}

// ---- Frames -----------------------------------------------------------------------------------

fn header_crc(volume: u64, h: &[u8]) -> u32 {
    crc::update(crc::crc32c(&volume.to_le_bytes()), &h[8..FRAME_HDR])
}

/// A frame header's fields, if `h` is a valid one for this volume.
fn frame_header(layout: &Layout, h: &[u8]) -> Option<(u64, u64, usize, u32)> {
    if h.len() < FRAME_HDR
        || u32_at(h, 0) != FRAME_MAGIC
        || header_crc(layout.volume, h) != u32_at(h, 4)
    {
        return None;
    }
    Some((
        u64_at(h, 8),
        u64_at(h, 16),
        u32_at(h, 24) as usize,
        u32_at(h, 28),
    ))
}

/// The sequence number of the segment whose first bytes are `head`, or `None` if its first
/// frame header is not valid (a free segment).
pub fn first_seq(layout: &Layout, head: &[u8]) -> Option<u64> {
    frame_header(layout, head).map(|(seq, ..)| seq)
}

/// One valid frame found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Offset in the segment.
    pub off: usize,
    /// Its batch number.
    pub batch: u64,
    /// Number of records.
    pub records: u32,
    /// Payload length (records only).
    pub payload: usize,
}

/// What [`scan`] found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The segment's sequence number.
    pub seq: u64,
    /// Its valid frames, in order.
    pub frames: Vec<Frame>,
    /// Offset just past the last valid frame (where the head would continue).
    pub end: usize,
    /// Bytes of a frame with a valid header whose records did not check out (a torn write),
    /// 0 if the segment ended cleanly.
    pub torn: usize,
}

/// Reads a segment's frames (see the module documentation), accepting only batch numbers
/// above `after_batch`. `None` if its first frame is not valid.
pub fn scan(layout: &Layout, bytes: &[u8], after_batch: u64) -> Option<SegmentScan> {
    let seq = first_seq(layout, bytes)?;
    let mut s = SegmentScan {
        seq,
        frames: Vec::new(),
        end: 0,
        torn: 0,
    };
    let mut last = after_batch;
    let mut pos = 0usize;
    while pos + FRAME_HDR <= bytes.len() {
        let Some((fseq, batch, payload, nrec)) = frame_header(layout, &bytes[pos..]) else {
            break;
        };
        let body = pos + FRAME_HDR;
        let fits = body
            .checked_add(payload)
            .is_some_and(|end| end <= bytes.len());
        if fseq != seq || batch <= last || !fits {
            if fseq == seq && batch > last {
                s.torn = bytes.len() - pos;
            }
            break;
        }
        // Every record whole and valid, and exactly filling the payload.
        let mut at = body;
        let mut ok = true;
        for _ in 0..nrec {
            match decode_record(&bytes[at..body + payload]) {
                Some((_, n)) => at += n,
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok || at != body + payload {
            s.torn = FRAME_HDR + payload;
            break;
        }
        s.frames.push(Frame {
            off: pos,
            batch,
            records: nrec,
            payload,
        });
        last = batch;
        pos = round_up(body + payload, layout.align as usize);
        s.end = pos;
    }
    Some(s)
}

fn round_up(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

/// The records of a frame found by [`scan`] in `bytes` (the segment's), each with its offset in
/// the segment.
pub fn records<'a>(bytes: &'a [u8], f: &Frame) -> impl Iterator<Item = (usize, Record<'a>)> + 'a {
    let mut at = f.off + FRAME_HDR;
    let end = at + f.payload;
    core::iter::from_fn(move || {
        let (r, n) = decode_record(&bytes[at..end])?;
        let here = at;
        at += n;
        Some((here, r))
    })
}

/// Reads the `Set` record of `key` from bytes read at its `loc` (what [`Store::missing`] said
/// to read: [`record_size`] bytes): its value, or `None` if they are not that record.
pub fn value_of<'a>(bytes: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let (r, _) = decode_record(bytes)?;
    (r.kind == Kind::Set && r.key == key).then_some(r.value)
}

// ---- The writer -------------------------------------------------------------------------------

/// Who asks for room in the log (see [`Log::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// A client write.
    Write,
    /// A client deletion.
    Delete,
    /// Compaction's copies.
    Compaction,
}

/// A sealed frame for the committer to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Its batch number (pass it to [`Log::done`]).
    pub batch: u64,
    /// Disk byte offset.
    pub pos: u64,
    /// The frame, padded to the sector size.
    pub bytes: Vec<u8>,
    end: (u32, u64),
}

/// How far [`Log::compact_some`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compacted {
    /// Every live record is copied: retire the segment once the copies are on disk.
    Done,
    /// Go on from this frame offset (after the copies so far are written).
    More(usize),
    /// The log had no room for a copy.
    NoRoom,
}

/// Figures for INFO and the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Frames written (group commits).
    pub frames: u64,
    /// Records appended.
    pub records: u64,
    /// Bytes of frames written.
    pub bytes: u64,
    /// Segments compacted.
    pub compactions: u64,
    /// Bytes compaction copied.
    pub compacted_bytes: u64,
    /// Writes refused for want of room.
    pub full: u64,
}

/// The log's state in memory: which segments are used, the open frame, the frames waiting to
/// be written, what is on disk. Sans-IO: the caller does the reads and writes.
#[derive(Debug)]
pub struct Log {
    /// The geometry.
    pub layout: Layout,
    seq: Vec<u64>,
    used: Vec<u64>,
    live: Vec<u64>,
    head: u32,
    tail: u32,
    next_seq: u64,
    next_batch: u64,
    open: Vec<u8>,
    open_at: u64,
    open_batch: u64,
    open_records: u32,
    sealed: VecDeque<Write>,
    in_flight: bool,
    durable: u64,
    durable_end: (u32, u64),
    last: u64,
    /// Values only on disk whose record compaction copied: (key, old, new), applied at retire.
    moves: Vec<(Vec<u8>, u64, u64)>,
    /// Counters.
    pub stats: LogStats,
}

impl Log {
    /// An empty log (a new disk, or every segment free).
    pub fn new(layout: Layout) -> Log {
        let n = layout.segments as usize;
        let mut seq = vec![0; n];
        // The head segment always has a sequence number (here the first).
        seq[0] = 1;
        Log {
            layout,
            seq,
            used: vec![0; n],
            live: vec![0; n],
            head: 0,
            tail: 0,
            next_seq: 2,
            next_batch: 1,
            open: Vec::new(),
            open_at: 0,
            open_batch: 0,
            open_records: 0,
            sealed: VecDeque::new(),
            in_flight: false,
            durable: 0,
            durable_end: (0, 0),
            last: 0,
            moves: Vec::new(),
            stats: LogStats::default(),
        }
    }

    /// Segments not in use.
    pub fn free_segments(&self) -> usize {
        self.seq.iter().filter(|&&s| s == 0).count()
    }

    /// Bytes of live value records.
    pub fn live_bytes(&self) -> u64 {
        self.live.iter().sum()
    }

    /// Bytes of segments in use (frames written or sealed).
    pub fn used_bytes(&self) -> u64 {
        self.used.iter().sum()
    }

    /// The head segment and the offset where its next frame goes.
    pub fn head(&self) -> (u32, u64) {
        (self.head, self.used[self.head as usize])
    }

    /// The disk offset just past the last record appended (for consistency checks).
    pub fn frontier(&self) -> u64 {
        if self.open.is_empty() {
            self.layout.seg_start(self.head) + self.used[self.head as usize]
        } else {
            self.open_at + self.open.len() as u64
        }
    }

    /// The oldest segment in use.
    pub fn tail(&self) -> u32 {
        self.tail
    }

    /// The highest batch number on disk.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// The batch number of the latest record appended: a reply produced after that append is
    /// sent once [`Log::durable`] reaches it.
    pub fn last_batch(&self) -> u64 {
        self.last
    }

    /// True if there is nothing to write.
    pub fn idle(&self) -> bool {
        self.open.is_empty() && self.sealed.is_empty() && !self.in_flight
    }

    fn next_of(&self, s: u32) -> u32 {
        (s + 1) % self.layout.segments
    }

    fn rank(&self, s: u32) -> u32 {
        (s + self.layout.segments - self.tail) % self.layout.segments
    }

    /// True if the record at `loc` is on disk (so its value may leave memory).
    pub fn is_durable(&self, loc: u64) -> bool {
        let (s, off) = self.layout.seg_of(loc);
        let (ds, doff) = self.durable_end;
        let (r, dr) = (self.rank(s), self.rank(ds));
        r < dr || (r == dr && off < doff)
    }

    /// Whether a command of this kind that may log `bytes` fits: `Err` with the error reply if
    /// not.
    pub fn admit(&mut self, room: Room, bytes: usize) -> Result<(), &'static str> {
        if FRAME_HDR + bytes > self.layout.segment as usize {
            self.stats.full += 1;
            return Err("ERR the request is too large for a log segment");
        }
        if self.fits_head(bytes) {
            return Ok(());
        }
        let need = match room {
            Room::Write => RESERVE_WRITE + 1,
            Room::Delete => RESERVE_DELETE + 1,
            Room::Compaction => 1,
        };
        if self.free_segments() >= need {
            Ok(())
        } else {
            self.stats.full += 1;
            Err(
                "ERR disk full: no room left in the log for this write (delete keys to make room, \
                 or give the guest a bigger disk)",
            )
        }
    }

    fn fits_head(&self, bytes: usize) -> bool {
        let at = if self.open.is_empty() {
            self.used[self.head as usize] as usize + FRAME_HDR
        } else {
            (self.open_at - self.layout.seg_start(self.head)) as usize + self.open.len()
        };
        at + bytes <= self.layout.segment as usize
    }

    /// Appends `e`'s record to the open frame; returns its disk offset. Call [`Log::admit`]
    /// first: with no room this panics (it would lose the effect).
    pub fn append(&mut self, e: &Effect) -> u64 {
        let len = record_len(e);
        if !self.open.is_empty() && (!self.fits_head(len) || self.open.len() + len > MAX_FRAME) {
            self.seal();
        }
        if self.open.is_empty() {
            if !self.fits_head(len) {
                let next = self.next_of(self.head);
                assert!(
                    self.seq[next as usize] == 0,
                    "kv: log append without room (admit was not asked)"
                );
                self.head = next;
                self.seq[next as usize] = self.next_seq;
                self.next_seq += 1;
                self.used[next as usize] = 0;
                self.live[next as usize] = 0;
            }
            self.open_at = self.layout.seg_start(self.head) + self.used[self.head as usize];
            self.open.resize(FRAME_HDR, 0);
            self.open_batch = self.next_batch;
            self.next_batch += 1;
            self.open_records = 0;
        }
        let loc = self.open_at + self.open.len() as u64;
        // Exactly: a big value must not double the frame's buffer.
        self.open.reserve_exact(len);
        encode_record(&mut self.open, e);
        self.open_records += 1;
        self.stats.records += 1;
        if matches!(e, Effect::Set { .. }) {
            self.live[self.head as usize] += len as u64;
        }
        self.last = self.open_batch;
        loc
    }

    /// The value record at `at` is dead (see [`crate::cmd::Journal::release`]).
    pub fn release(&mut self, at: OnDisk) {
        let (s, _) = self.layout.seg_of(at.loc);
        let l = &mut self.live[s as usize];
        *l = l.saturating_sub(record_size(at.key_len, at.value_len) as u64);
    }

    fn seal(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let mut f = core::mem::take(&mut self.open);
        let payload = (f.len() - FRAME_HDR) as u32;
        f[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        f[8..16].copy_from_slice(&self.seq[self.head as usize].to_le_bytes());
        f[16..24].copy_from_slice(&self.open_batch.to_le_bytes());
        f[24..28].copy_from_slice(&payload.to_le_bytes());
        f[28..32].copy_from_slice(&self.open_records.to_le_bytes());
        let c = header_crc(self.layout.volume, &f);
        f[4..8].copy_from_slice(&c.to_le_bytes());
        let padded = round_up(f.len(), self.layout.align as usize);
        f.reserve_exact(padded - f.len());
        f.resize(padded, 0);
        let h = self.head as usize;
        self.used[h] = self.open_at - self.layout.seg_start(self.head) + f.len() as u64;
        self.sealed.push_back(Write {
            batch: self.open_batch,
            pos: self.open_at,
            bytes: f,
            end: (self.head, self.used[h]),
        });
    }

    /// The next frame to write (sealing the open one), or `None` if one is being written or
    /// there is nothing to write.
    pub fn take_write(&mut self) -> Option<Write> {
        if self.in_flight {
            return None;
        }
        if self.sealed.is_empty() {
            self.seal();
        }
        let w = self.sealed.pop_front()?;
        self.in_flight = true;
        Some(w)
    }

    /// The frame `w` (from [`Log::take_write`]) is on disk.
    pub fn done(&mut self, w: &Write) {
        self.in_flight = false;
        self.durable = w.batch;
        self.durable_end = w.end;
        self.stats.frames += 1;
        self.stats.bytes += w.bytes.len() as u64;
    }

    /// The frame `w` could not be written: it is given back, to be written first next time.
    pub fn failed(&mut self, w: Write) {
        self.in_flight = false;
        self.sealed.push_front(w);
    }

    /// The segment to compact now, if any: when few segments are free or the log is over twice
    /// the live data, the tail, once it is wholly on disk and if the log holds garbage worth a
    /// quarter segment outside the head.
    pub fn compaction_candidate(&self) -> Option<u32> {
        let n = self.layout.segments as usize;
        // When few segments are free, or when the log is more than twice what is live (plus
        // two segments): recovery reads the whole log at boot, so it must not grow unbounded
        // with overwritten values on a big disk.
        let few_free = self.free_segments() <= RESERVE_WRITE + 1 + n / 16;
        let bloated = self.used_bytes() > 2 * self.live_bytes() + 2 * self.layout.segment;
        if !(few_free || bloated) || self.tail == self.head {
            return None;
        }
        if self.seq[self.tail as usize] == 0
            || self.rank(self.tail) >= self.rank(self.durable_end.0)
        {
            return None;
        }
        let garbage: u64 = (0..n)
            .filter(|&i| i != self.head as usize && self.seq[i] != 0)
            .map(|i| self.used[i].saturating_sub(self.live[i]))
            .sum();
        (garbage >= self.layout.segment / 4).then_some(self.tail)
    }

    /// Bytes of segment `s` holding frames (what compaction reads).
    pub fn used_of(&self, s: u32) -> u64 {
        self.used[s as usize]
    }

    /// The sequence number of segment `s` (0: free).
    pub fn seq_of(&self, s: u32) -> u64 {
        self.seq[s as usize]
    }

    /// Compacts segment `s`, whose frames are `bytes` (read from disk): appends the copies
    /// of what is still live in it (see the module documentation), updating `store`. Returns
    /// false if the log had no room for every copy (then `s` must not be retired). Once the
    /// copies are on disk ([`Log::last_batch`] durable), call [`Log::retire`].
    pub fn compact(&mut self, s: u32, bytes: &[u8], store: &mut Store) -> bool {
        let mut from = 0;
        loop {
            match self.compact_some(s, bytes, store, from, usize::MAX) {
                Compacted::Done => return true,
                Compacted::More(next) => from = next,
                Compacted::NoRoom => return false,
            }
        }
    }

    /// [`Log::compact`] a step at a time: the frames of `s` from offset `from` on, stopping
    /// after the frame where the copies passed `budget` bytes (so the caller can let them be
    /// written before it goes on, and memory holds one step's copies at most).
    pub fn compact_some(
        &mut self,
        s: u32,
        bytes: &[u8],
        store: &mut Store,
        from: usize,
        budget: usize,
    ) -> Compacted {
        let Some(found) = scan(&self.layout, bytes, 0) else {
            return Compacted::Done;
        };
        if found.seq != self.seq[s as usize] {
            return Compacted::Done;
        }
        let base = self.layout.seg_start(s);
        let mut copied = 0usize;
        for f in found.frames.iter().filter(|f| f.off >= from) {
            if copied >= budget {
                self.stats.compacted_bytes += copied as u64;
                return Compacted::More(f.off);
            }
            for (off, r) in records(bytes, f) {
                let loc = base + off as u64;
                let Some(view) = store.get_raw(r.key) else {
                    continue;
                };
                if r.kind != Kind::Set || store.loc(r.key) != Some(loc) {
                    continue;
                }
                let copy = Effect::Set {
                    key: r.key.to_vec(),
                    value: r.value.to_vec(),
                    expire_at_ms: view.expire_at_ms,
                };
                let len = record_len(&copy);
                if self.admit(Room::Compaction, len).is_err() {
                    self.stats.full -= 1;
                    return Compacted::NoRoom;
                }
                let at = self.append(&copy);
                copied += len;
                if !store.moved(r.key, loc, at) {
                    self.moves.push((r.key.to_vec(), loc, at));
                }
            }
        }
        self.stats.compacted_bytes += copied as u64;
        Compacted::Done
    }

    /// Frees segment `s` (compacted, its copies on disk); the values only on disk that still
    /// read from it read their copies from now on.
    pub fn retire(&mut self, s: u32, store: &mut Store) {
        for (key, from, to) in self.moves.drain(..) {
            store.relocate(&key, from, to);
        }
        let i = s as usize;
        self.seq[i] = 0;
        self.used[i] = 0;
        self.live[i] = 0;
        self.stats.compactions += 1;
        if s == self.tail {
            while self.tail != self.head && self.seq[self.tail as usize] == 0 {
                self.tail = self.next_of(self.tail);
            }
        }
    }
}

// ---- Recovery ---------------------------------------------------------------------------------

/// What recovery found, for the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Segments replayed.
    pub segments: u32,
    /// Frames replayed.
    pub frames: u64,
    /// Records replayed.
    pub records: u64,
    /// Bytes of a torn last frame dropped (0: the log ended cleanly).
    pub torn: u64,
}

/// Rebuilds the keyspace from the log: [`Recovery::order`] from each segment's first frame
/// header, then [`Recovery::replay`] each segment's bytes in that order, then
/// [`Recovery::finish`].
#[derive(Debug)]
pub struct Recovery {
    log: Log,
    order: Vec<(u64, u32)>,
    last_batch: u64,
    /// Figures so far.
    pub found: Recovered,
}

impl Recovery {
    /// Starts recovering a log of this layout.
    pub fn new(layout: Layout) -> Recovery {
        let mut log = Log::new(layout);
        // Nothing is in use until replayed (`Log::new` gives the first segment to the head).
        log.seq[0] = 0;
        Recovery {
            log,
            order: Vec::new(),
            last_batch: 0,
            found: Recovered::default(),
        }
    }

    /// Segment `s` begins with `head` (at least [`FRAME_HDR`] bytes).
    pub fn first_header(&mut self, s: u32, head: &[u8]) {
        if let Some(seq) = first_seq(&self.log.layout, head) {
            self.order.push((seq, s));
        }
    }

    /// The segments to replay, oldest first: the newest segment and, walking back around the
    /// ring from it, every segment with a lower sequence number than the one after it. A valid
    /// first header outside that run is a reused segment's old generation whose new first frame
    /// never landed (or a retired segment's, already copied): free.
    pub fn order(&mut self) -> Vec<u32> {
        let n = self.log.layout.segments;
        let mut seq = vec![0u64; n as usize];
        for &(q, s) in &self.order {
            seq[s as usize] = q;
        }
        let Some(&(_, head)) = self.order.iter().max() else {
            return Vec::new();
        };
        let mut run = vec![head];
        let mut cur = head;
        loop {
            let prev = (cur + n - 1) % n;
            if prev == head || seq[prev as usize] == 0 || seq[prev as usize] >= seq[cur as usize] {
                break;
            }
            run.push(prev);
            cur = prev;
        }
        run.reverse();
        run
    }

    /// Replays segment `s` (its whole bytes) into `store`.
    pub fn replay(&mut self, s: u32, bytes: &[u8], store: &mut Store) {
        let log = &mut self.log;
        let Some(found) = scan(&log.layout, bytes, self.last_batch) else {
            return;
        };
        if found.frames.is_empty() {
            // Its first frame was torn: the segment is free.
            self.found.torn += found.torn as u64;
            return;
        }
        let i = s as usize;
        let base = log.layout.seg_start(s);
        log.seq[i] = found.seq;
        log.used[i] = found.end as u64;
        for f in &found.frames {
            for (off, r) in records(bytes, f) {
                let e = r.effect();
                let loc = base + off as u64;
                let live = &mut log.live;
                let layout = log.layout;
                store.apply_at(&e, loc, |at| {
                    let (s, _) = layout.seg_of(at.loc);
                    let l = &mut live[s as usize];
                    *l = l.saturating_sub(record_size(at.key_len, at.value_len) as u64);
                });
                if r.kind == Kind::Set {
                    live[i] += record_size(r.key.len(), r.value.len()) as u64;
                }
                self.found.records += 1;
            }
            self.last_batch = f.batch;
            self.found.frames += 1;
        }
        self.found.segments += 1;
        self.found.torn += found.torn as u64;
        log.next_seq = log.next_seq.max(found.seq + 1);
        if self.found.segments == 1 {
            log.tail = s;
        }
        log.head = s;
    }

    /// Recovers a whole disk image held in memory (`disk`: the bytes from offset 0), as the
    /// image does from the disk: for tests and fuzzing.
    pub fn image(layout: Layout, disk: &[u8]) -> (Log, Store, Recovered) {
        let mut r = Recovery::new(layout);
        for s in 0..layout.segments {
            let at = layout.seg_start(s) as usize;
            r.first_header(s, &disk[at..at + FRAME_HDR]);
        }
        let mut store = Store::new();
        for s in r.order() {
            let at = layout.seg_start(s) as usize;
            r.replay(s, &disk[at..at + layout.segment as usize], &mut store);
        }
        let (log, found) = r.finish();
        (log, store, found)
    }

    /// The log, ready to append after what was replayed (a torn tail is overwritten).
    pub fn finish(mut self) -> (Log, Recovered) {
        if self.found.segments == 0 {
            self.log = Log::new(self.log.layout);
        }
        let log = &mut self.log;
        log.next_batch = self.last_batch + 1;
        log.durable = self.last_batch;
        log.last = self.last_batch;
        log.durable_end = (log.head, log.used[log.head as usize]);
        (self.log, self.found)
    }
}
