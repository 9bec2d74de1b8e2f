//! The driver: a TX and an RX ring on granted pages, the buffers behind them, and the checks every
//! backend response goes through.
//!
//! **Transmit.** A frame is copied into the TX buffer (a byte ring over `Config::tx_pages`
//! pages granted read-only to the backend once, at setup: see [`crate::txbuf`]) and described by
//! one request per page it touches, so no slot crosses a page: the first slot's `size` is the
//! whole frame, every slot but the last has `NETTXF_more_data`. Request ids come from a free list;
//! a response returns its id, and the frame's bytes are released once all its slots (and those
//! of every older frame) are done. Requests are published per frame, but the backend is
//! notified only when it asked (`req_event`), so a burst sent while it works costs no
//! notification.
//!
//! **Transmit GSO** (`Config::tso`, when the backend offers `feature-gso-tcpv4`). smoltcp 0.14
//! (feature `segmentation-offload`) hands us TCP/IPv4 segments of up to [`Netfront::tso_max`]
//! bytes (32 KiB with the default 16-page buffer) with the MSS in their `PacketMeta`. Such a
//! segment goes as one packet: its first slot flagged `NETTXF_extra_info | NETTXF_csum_blank |
//! NETTXF_data_validated`, then a `XEN_NETIF_EXTRA_TYPE_GSO` slot (`gso.size` = MSS, type
//! TCPV4; a ring slot without an id, which netback answers `NETIF_RSP_NULL` with a stale id:
//! counted against the extras in flight, it completes nothing), then its other slots; netback
//! cuts it into MSS-sized segments (or dom0 takes it whole). smoltcp then computes no TCP
//! checksum (it must not, for a segment to be cut): the TX token fills them
//! ([`fill_tcp_checksum`]): the pseudo-header sum for a GSO segment (Linux's
//! `CHECKSUM_PARTIAL`), the complete checksum for every other TCP frame.
//!
//! **Receive** (request-rx-copy: the backend copies into our pages). `Config::rx_buffers` pages
//! are granted writable once, at setup, and posted as requests whose id is their ring slot, as
//! netif.h requires (responses come back in the slot of their request). Each response is copied
//! out of its slot once, validated, its data copied out of the page into the driver's frame
//! buffer, and the page reposted. A packet may span several slots (`NETRXF_more_data`, we offer
//! `feature-sg`) and carry extra-info slots after its first slot (`NETRXF_extra_info`).
//!
//! **Receive GSO** (`Config::gso`, on by default with checksum offload): we offer
//! `feature-gso-tcpv4` and `feature-gso-tcpv6`, so Linux's netback hands us a TCP segment of up
//! to 64 KiB as one packet (what dom0's TCP stack or another guest's TSO produced, never cut to the MTU): its
//! bytes packed into up to 17 pages, the first slot flagged `NETRXF_extra_info` and followed by
//! a `XEN_NETIF_EXTRA_TYPE_GSO` slot (segment size and type). It is reassembled into the frame
//! buffer ([`MAX_RX_FRAME`] bytes) and handed to smoltcp as one IP packet larger than the MTU,
//! which smoltcp accepts (it checks no received length against the MTU; the TCP receive window
//! bounds what is kept). A GSO extra must have a non-zero size and type TCPV4 or TCPV6, and the
//! frame must be one whole TCP packet of that IP version whose IP length is exactly the bytes
//! received, else [`Error::RxBadGso`]. Other extra types (hash, XDP, unknown) are skipped; type
//! 0, a duplicate, or a ninth extra is [`Error::RxBadExtra`]. A packet that fails is dropped to
//! its last slot, its extras followed as extras, so the next packet starts in step. A GSO packet
//! is checksummed like any other (below): dom0's come `NETRXF_csum_blank`. Linux's netback
//! enables TSO6 to a vif only with IPv6 checksum offload, so with GSO we offer that too
//! (`feature-ipv6-csum-offload=1`).
//!
//! **Checksums** (`Config::csum_offload`, on by default). We accept the backend's IPv4 checksum
//! offload (`feature-no-csum-offload=0`), and IPv6's with GSO (`feature-ipv6-csum-offload=1`;
//! without it IPv6 packets come with complete checksums), per packet, by the flags of its first
//! slot:
//!
//! - `NETRXF_csum_blank`: the TCP/UDP checksum field is not filled in (a partial checksum: the
//!   packet comes from dom0's own stack, or from another guest through dom0, and never crossed a
//!   wire). Trusted, handed up unverified.
//! - `NETRXF_data_validated`: the backend (or the NIC behind it) verified the checksum. Trusted.
//! - neither: the driver verifies the TCP/UDP checksum itself (IPv4 and IPv6, the payload smoltcp
//!   would parse, through smoltcp's checked views) and drops a packet that fails
//!   ([`Error::RxBadChecksum`], counted in [`Stats::rx_bad_checksum`]).
//!
//! smoltcp is told not to verify TCP/UDP checksums on receive (`Checksum::Tx`): every packet it
//! sees was trusted or verified above. It still verifies IPv4 header and ICMP checksums, and
//! every checksum we send is complete (smoltcp's, or the driver's for TCP with transmit GSO),
//! except a GSO segment's (`NETTXF_csum_blank`, above). Why accept offload: refusing
//! offload made dom0's Linux compute a checksum in software for every packet it sent us (its vif
//! lacked `NETIF_F_IP_CSUM`) and smoltcp verify it again; with offload, a packet from dom0 is
//! checksummed by nobody, as between two Linux guests.
//!
//! With `csum_offload: false` we refuse offload (`feature-no-csum-offload=1`): the backend hands
//! us complete checksums, smoltcp verifies every one, and a packet flagged `NETRXF_csum_blank`
//! anyway is dropped ([`Error::RxChecksumBlank`]): its checksum field cannot be trusted.
//!
//! **A misbehaving backend**: see [`crate::error`] for the policy.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use xen::hal::{Hal, SharedPage};
use xen::ring::FrontRing;
use xen::xenbus::Frontend;

use crate::error::Error;
use crate::txbuf::{chunks, TxBuffer};
use crate::wire::*;

/// Largest Ethernet frame we send (header included, FCS excluded): a 1500-byte IP MTU.
pub const MTU: usize = 1514;
/// Shortest frame we accept or send: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// Largest packet we accept from the backend: an Ethernet header and the largest IP packet (an
/// IPv6 header and 65,535 bytes of payload), the most a GSO super-frame can be (Linux's TCP
/// keeps them under 64 KiB).
pub const MAX_RX_FRAME: usize = 14 + 40 + 0xFFFF;
/// Most data slots one received packet may use (extra-info slots not counted): a
/// `MAX_RX_FRAME` packet packed into pages, as netback copies it, takes 17.
pub const MAX_RX_SLOTS: usize = NR_SLOTS_MIN;
/// Fewest receive buffers with which receive GSO is offered: the slots of the largest packet
/// (17 of data, a GSO and a hash extra), rounded up.
pub const MIN_GSO_RX_BUFFERS: usize = 20;
/// Most extra-info slots one received packet may carry: netif.h defines five types (GSO,
/// multicast add and delete, hash, XDP), each at most once; Linux's netback sends at most three.
const MAX_EXTRAS: u8 = 8;

/// Sizes and options of a [`Netfront`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Receive pages posted to the backend (1 to 256, the ring size): 4 KiB each.
    pub rx_buffers: usize,
    /// Pages of the transmit buffer (at least 1).
    pub tx_pages: usize,
    /// Send a frame that straddles a page boundary as several slots. Cleared by
    /// [`Netfront::connect`] when the backend lacks `feature-sg`: frames are then kept within
    /// one page.
    pub sg: bool,
    /// Accept the backend's IPv4 TCP/UDP checksum offload on receive (`feature-no-csum-offload=0`):
    /// packets flagged `NETRXF_csum_blank` or `NETRXF_data_validated` are trusted, others are
    /// verified by the driver. When false, offload is refused (`feature-no-csum-offload=1`) and
    /// smoltcp verifies every checksum. See the module doc.
    pub csum_offload: bool,
    /// Accept TCP GSO super-frames on receive (`feature-gso-tcpv4=1`, `feature-gso-tcpv6=1`, and
    /// `feature-ipv6-csum-offload=1` which TSO6 needs): the backend may hand us one TCP segment
    /// of up to 64 KiB (several slots and a GSO extra-info slot) where the wire carried many.
    /// Only with `csum_offload` (Linux's netback cannot do TSO to a vif without checksum
    /// offload) and at least [`MIN_GSO_RX_BUFFERS`] `rx_buffers` (netback waits until the ring
    /// holds a whole packet's slots, and calls a vif that never has them stalled), else not
    /// offered.
    pub gso: bool,
    /// Transmit GSO (TSO): let smoltcp hand us TCP/IPv4 segments of up to
    /// [`Netfront::tso_max`] bytes, sent as one packet with a GSO extra-info slot (netback
    /// cuts them to the MSS) and a partial checksum (`NETTXF_csum_blank`). Needs `sg`; cleared
    /// by [`Netfront::connect`] when the backend lacks `feature-gso-tcpv4`.
    pub tso: bool,
}

impl Default for Config {
    /// 64 receive pages (256 KiB) and 16 transmit pages (64 KiB), scatter-gather, checksum
    /// offload and receive GSO on.
    fn default() -> Self {
        Config {
            rx_buffers: 64,
            tx_pages: 16,
            sg: true,
            csum_offload: true,
            gso: true,
            tso: true,
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to the backend.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// TX slots completed by the backend.
    pub tx_completions: u64,
    /// Of `tx_packets`, those sent as GSO (one TCP segment over the MTU that netback cuts).
    pub tx_gso: u64,
    /// TX slots the backend failed (`NETIF_RSP_ERROR`/`DROPPED`).
    pub tx_failed: u64,
    /// Frames not sent for lack of room (ring, ids or buffer), and polls that found no room:
    /// back-pressure, counted and not logged per frame.
    pub tx_full: u64,
    /// Frames received whole and valid.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// RX responses consumed.
    pub rx_slots: u64,
    /// Of `rx_packets`, those that came as GSO super-frames (with a GSO extra-info slot).
    pub rx_gso: u64,
    /// Largest frame received whole and valid.
    pub rx_max_frame: u64,
    /// Received packets dropped (any reason).
    pub rx_dropped: u64,
    /// Received packets dropped because their TCP/UDP checksum did not verify (not flagged
    /// trusted by the backend; also counted in `rx_dropped`).
    pub rx_bad_checksum: u64,
    /// Backend protocol violations seen (malformed responses, bad ring indices).
    pub malformed: u64,
    /// Reconnections to a new backend after the domain moved (restore, live migration).
    pub reconnects: u64,
    /// Frames the old backend had not acknowledged when the domain moved, sent again on the
    /// new ring (in their order, before any new frame).
    pub tx_resent: u64,
}

/// A reconnect's bookkeeping: when the move was noticed, attempts, the backoff.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ResumeState {
    pub(crate) since_ns: u64,
    pub(crate) attempts: u32,
    pub(crate) retry_at: u64,
    pub(crate) backoff_ns: u64,
    /// A reconnect succeeded and nobody asked yet (`Netfront::take_reconnected`).
    pub(crate) announce: bool,
}

/// A page granted to the backend.
#[derive(Debug)]
pub(crate) struct Granted {
    pub(crate) page: SharedPage,
    pub(crate) gref: u32,
}

/// A frame kept to be sent again after a move, with its MSS (transmit GSO).
pub(crate) type Kept = (Vec<u8>, Option<u16>);

/// A frame in the TX buffer whose slots are not all completed.
#[derive(Debug)]
struct TxPacket {
    seq: u64,
    end: u64,
    outstanding: u16,
    /// Its length and MSS (transmit GSO): what resending it after a move takes.
    len: usize,
    gso: Option<u16>,
}

/// The transmit side.
pub(crate) struct TxQueue {
    ring: FrontRing,
    pub(crate) ring_page: Granted,
    pub(crate) pages: Vec<Granted>,
    buf: TxBuffer,
    free_ids: Vec<u16>,
    /// Request id -> sequence number of its packet.
    inflight: Vec<Option<u64>>,
    packets: VecDeque<TxPacket>,
    next_seq: u64,
    pub(crate) sg: bool,
    /// Largest TCP segment smoltcp may hand us for transmit GSO; 0 when off.
    pub(crate) tso_max: usize,
    /// GSO extra-info slots sent and not answered yet (netback answers each `NETIF_RSP_NULL`).
    extras_in_flight: u32,
    /// Where a smoltcp TX token builds its frame.
    pub(crate) scratch: Vec<u8>,
    /// Frames (and their MSS) to send again on a new ring before any new one: those the old
    /// backend had not acknowledged when the domain moved.
    pub(crate) resend: VecDeque<Kept>,
}

/// Where the RX state machine is within a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxState {
    /// Between packets.
    Idle,
    /// After a fragment with `NETRXF_more_data`.
    Frags,
    /// Reading extra-info slots (`count` read so far); `more_data` from the first fragment;
    /// `discard` once the packet failed (the extras are followed, not checked, to stay in step).
    Extras {
        count: u8,
        more_data: bool,
        discard: bool,
    },
    /// Dropping the rest of a bad packet, up to a fragment without `NETRXF_more_data`.
    Discard,
}

/// The receive side.
pub(crate) struct RxQueue {
    ring: FrontRing,
    pub(crate) ring_page: Granted,
    pub(crate) bufs: Vec<Granted>,
    free: Vec<u16>,
    /// Ring slot -> buffer posted there.
    posted: Vec<Option<u16>>,
    req_prod: u32,
    rsp_cons: u32,
    state: RxState,
    len: usize,
    slots: usize,
    first_flags: u16,
    /// The GSO type of the packet being received (from its GSO extra), if any.
    gso: Option<u8>,
    /// Extra-info types (below 16) the packet being received carried, as bits.
    extras_seen: u16,
    /// Whether the frame `poll` last completed was a GSO one.
    completed_gso: bool,
    /// `Config::csum_offload`.
    csum_offload: bool,
}

/// The frame being received, or received and not yet taken.
pub(crate) struct RxFrame {
    pub(crate) buf: Vec<u8>,
    pub(crate) len: usize,
    pub(crate) ready: bool,
}

/// A network frontend on one vif.
pub struct Netfront<H: Hal> {
    pub(crate) hal: H,
    pub(crate) backend_id: u16,
    pub(crate) port: u32,
    pub(crate) mac: [u8; 6],
    pub(crate) link_up: bool,
    pub(crate) tx: TxQueue,
    pub(crate) rx: RxQueue,
    pub(crate) frame: RxFrame,
    pub(crate) stats: Stats,
    pub(crate) xenbus: Option<Frontend>,
    /// Receive GSO offered (`Config::gso` and `Config::csum_offload`).
    pub(crate) gso: bool,
    /// The configuration asked for (before the backend's features cut it down): what a
    /// reconnect negotiates again.
    pub(crate) config: Config,
    /// Our device node (`device/vif/N`), once connected through xenstore.
    pub(crate) node: Option<alloc::string::String>,
    /// The platform's [`generation`](Hal::generation) our grants, port and rings belong to.
    pub(crate) generation: u64,
    /// Whether the grants, the port and the rings are valid (false from the moment the domain
    /// moved until a reconnect succeeded).
    pub(crate) live: bool,
    /// Reconnect bookkeeping (see `Netfront::resume`).
    pub(crate) resume: ResumeState,
}

impl<H: Hal> core::fmt::Debug for Netfront<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Netfront")
            .field("backend_id", &self.backend_id)
            .field("port", &self.port)
            .field("mac", &self.mac)
            .field("link_up", &self.link_up)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Allocates a page, grants it to `domid` and appends it to `list`.
fn grant_page<H: Hal>(
    hal: &mut H,
    domid: u16,
    readonly: bool,
    list: &mut Vec<Granted>,
) -> Result<(), Error> {
    let page = hal.alloc_page()?;
    match hal.grant(domid, page.mfn, readonly) {
        Ok(gref) => {
            list.push(Granted { page, gref });
            Ok(())
        }
        Err(e) => {
            hal.free_page(page);
            Err(e.into())
        }
    }
}

/// Ends the grants of `pages` and frees them; returns those the backend still maps (not freed).
pub(crate) fn end_grants<H: Hal>(hal: &mut H, pages: Vec<Granted>) -> Vec<Granted> {
    let mut kept = Vec::new();
    for g in pages {
        match hal.end_grant(g.gref) {
            Ok(()) => hal.free_page(g.page),
            // Never free a page the backend may still write: keep it for a retry, or leak it.
            Err(_) => kept.push(g),
        }
    }
    kept
}

impl TxQueue {
    /// Whether a frame of `len` bytes fits now (one more ring slot for a GSO extra when it is
    /// over the MTU).
    fn room(&self, len: usize) -> bool {
        match self.buf.place(len, self.sg) {
            None => false,
            Some(start) => {
                let n = chunks(self.buf.offset(start), len).count();
                let extra = usize::from(len > MTU);
                n <= self.free_ids.len() && (n + extra) as u32 <= self.ring.free_requests()
            }
        }
    }

    /// Copies `frame` into the buffer and queues its slots. With `gso` (the MSS), a TCP/IPv4
    /// segment over the MTU whose checksum field holds the pseudo-header sum: sent flagged
    /// `NETTXF_csum_blank | NETTXF_data_validated | NETTXF_extra_info`, a GSO extra-info slot
    /// after its first slot.
    pub(crate) fn send<H: Hal>(
        &mut self,
        hal: &mut H,
        port: u32,
        stats: &mut Stats,
        frame: &[u8],
        gso: Option<u16>,
    ) -> Result<(), Error> {
        let len = frame.len();
        let gso = match gso {
            Some(mss) if len > MTU => {
                if self.tso_max == 0 || len > self.tso_max || mss == 0 {
                    return Err(Error::TxBadLength { len });
                }
                Some(mss)
            }
            _ => None,
        };
        if !(MIN_FRAME..=MAX_TX_SIZE).contains(&len)
            || len > self.buf.size()
            || (!self.sg && len > PAGE_SIZE)
        {
            return Err(Error::TxBadLength { len });
        }
        let start = self.buf.place(len, self.sg).ok_or(Error::TxFull)?;
        let off = self.buf.offset(start);
        let n = chunks(off, len).count();
        let slots = n + usize::from(gso.is_some());
        if n > self.free_ids.len() || slots as u32 > self.ring.free_requests() {
            return Err(Error::TxFull);
        }
        // Every byte is in the pages before anything is claimed or queued: a frame that fails
        // here leaves no slot behind (a slot queued and never completed would be published
        // with the next frame's, netback would take both for one packet).
        let mut copied = 0;
        for c in chunks(off, len) {
            let page = self.pages.get(c.page).ok_or(Error::Internal)?;
            page.page
                .mem
                .write(c.offset, &frame[copied..copied + c.len])?;
            copied += c.len;
        }
        let end = self.buf.claim(start, len);
        let seq = self.next_seq;
        self.next_seq += 1;
        for (i, c) in chunks(off, len).enumerate() {
            let page = self.pages.get(c.page).ok_or(Error::Internal)?;
            let id = self.free_ids.pop().ok_or(Error::Internal)?;
            *self.inflight.get_mut(id as usize).ok_or(Error::Internal)? = Some(seq);
            let mut flags = if i + 1 < n { NETTXF_MORE_DATA } else { 0 };
            if i == 0 && gso.is_some() {
                flags |= NETTXF_EXTRA_INFO | NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
            }
            let req = TxRequest {
                gref: page.gref,
                offset: c.offset as u16,
                flags,
                id,
                size: if i == 0 { len as u16 } else { c.len as u16 },
            };
            self.ring
                .queue_request(|m, o| req.write(m, o))
                .map_err(|_| Error::Internal)?;
            if let (0, Some(mss)) = (i, gso) {
                // The extra takes a ring slot and no id; netback answers it NETIF_RSP_NULL.
                let e = ExtraInfo {
                    kind: EXTRA_TYPE_GSO,
                    flags: 0,
                    data: [mss as u8, (mss >> 8) as u8, GSO_TYPE_TCPV4, 0, 0, 0],
                };
                let mut slot = [0u8; TX_ENTRY_SIZE];
                slot[..8].copy_from_slice(&e.emit());
                self.ring
                    .queue_request(|m, o| m.write(o, &slot))
                    .map_err(|_| Error::Internal)?;
                self.extras_in_flight += 1;
            }
        }
        self.packets.push_back(TxPacket {
            seq,
            end,
            outstanding: n as u16,
            len,
            gso,
        });
        if self.ring.push_requests().map_err(|_| Error::Internal)? {
            hal.notify(port);
        }
        stats.tx_packets += 1;
        stats.tx_bytes += len as u64;
        stats.tx_gso += u64::from(gso.is_some());
        Ok(())
    }

    /// The frames the backend has not acknowledged (every slot answered), oldest first, copied
    /// out of the buffer with their MSS.
    fn unacknowledged(&self) -> Result<Vec<Kept>, Error> {
        let mut out = Vec::new();
        for p in self.packets.iter().filter(|p| p.outstanding > 0) {
            let start = p.end - p.len as u64;
            let mut frame = vec![0u8; p.len];
            let mut at = 0;
            for c in chunks(self.buf.offset(start), p.len) {
                let page = self.pages.get(c.page).ok_or(Error::Internal)?;
                page.page.mem.read(c.offset, &mut frame[at..at + c.len])?;
                at += c.len;
            }
            out.push((frame, p.gso));
        }
        Ok(out)
    }

    /// Forgets everything in flight (the ring is void): every id free, the buffer empty.
    pub(crate) fn reset(&mut self) {
        self.free_ids = (0..self.inflight.len() as u16).rev().collect();
        self.inflight.iter_mut().for_each(|s| *s = None);
        self.packets.clear();
        self.buf = TxBuffer::new(self.pages.len());
        self.extras_in_flight = 0;
    }

    /// Once the backend has answered every request we made, ids still in flight were lost to
    /// malformed responses (a wrong id answered in their place) and will never complete: frees
    /// them and their packets' buffer space. Returns how many.
    fn sweep_lost(&mut self) -> usize {
        if self.ring.in_flight() == 0 {
            self.extras_in_flight = 0;
        }
        if self.ring.in_flight() != 0 || self.free_ids.len() == self.inflight.len() {
            return 0;
        }
        let mut lost = 0;
        for (id, slot) in self.inflight.iter_mut().enumerate() {
            if slot.take().is_some() {
                self.free_ids.push(id as u16);
                lost += 1;
            }
        }
        if let Some(last) = self.packets.back() {
            self.buf.release(last.end);
        }
        self.packets.clear();
        lost
    }

    /// Consumes one response: `Ok(None)` when there is none.
    fn complete_one(&mut self, stats: &mut Stats) -> Result<Option<()>, Error> {
        let rsp = match self.ring.take_response(TxResponse::read) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) => return Err(Error::TxRing(e)),
        };
        // The answer to a GSO extra-info slot: no id of ours (netback leaves a stale one). A
        // NULL beyond those answers nothing we sent: a bad status for the id it names.
        if rsp.status == NETIF_RSP_NULL && self.extras_in_flight > 0 {
            self.extras_in_flight -= 1;
            return Ok(Some(()));
        }
        let seq = self
            .inflight
            .get_mut(rsp.id as usize)
            .and_then(Option::take)
            .ok_or(Error::TxBadId { id: rsp.id })?;
        self.free_ids.push(rsp.id);
        stats.tx_completions += 1;
        let front = self.packets.front().map(|p| p.seq).ok_or(Error::Internal)?;
        let idx = seq.checked_sub(front).ok_or(Error::Internal)?;
        let p = self.packets.get_mut(idx as usize).ok_or(Error::Internal)?;
        p.outstanding = p.outstanding.saturating_sub(1);
        while let Some(p) = self.packets.front() {
            if p.outstanding > 0 {
                break;
            }
            self.buf.release(p.end);
            self.packets.pop_front();
        }
        match rsp.status {
            NETIF_RSP_OKAY => Ok(Some(())),
            NETIF_RSP_ERROR | NETIF_RSP_DROPPED => Err(Error::TxFailed {
                id: rsp.id,
                status: rsp.status,
            }),
            status => Err(Error::TxBadStatus { id: rsp.id, status }),
        }
    }
}

impl RxQueue {
    fn mask(&self) -> u32 {
        self.ring.size() - 1
    }

    /// Forgets every posted buffer and the packet being received (the ring is void): every
    /// buffer free, to be posted again on a new ring.
    pub(crate) fn reset(&mut self) {
        self.free = (0..self.bufs.len() as u16).rev().collect();
        self.posted.iter_mut().for_each(|s| *s = None);
        self.req_prod = 0;
        self.rsp_cons = 0;
        self.state = RxState::Idle;
        self.len = 0;
        self.slots = 0;
    }

    /// Posts every free buffer the ring has room for.
    fn refill<H: Hal>(&mut self, hal: &mut H, port: u32) -> Result<(), Error> {
        let mut queued = false;
        while self.ring.free_requests() > 0 {
            let Some(b) = self.free.pop() else { break };
            let slot = (self.req_prod & self.mask()) as u16;
            let gref = self.bufs.get(b as usize).ok_or(Error::Internal)?.gref;
            let req = RxRequest { id: slot, gref };
            self.ring
                .queue_request(|m, o| req.write(m, o))
                .map_err(|_| Error::Internal)?;
            *self.posted.get_mut(slot as usize).ok_or(Error::Internal)? = Some(b);
            self.req_prod = self.req_prod.wrapping_add(1);
            queued = true;
        }
        if queued && self.ring.push_requests().map_err(|_| Error::Internal)? {
            hal.notify(port);
        }
        Ok(())
    }

    /// Consumes responses until a frame is complete (`Ok(true)`), none is left (`Ok(false)`), or
    /// a response is bad (the error; its slot is recycled and the next call goes on).
    fn poll(&mut self, frame: &mut RxFrame, stats: &mut Stats) -> Result<bool, Error> {
        loop {
            let slot = (self.rsp_cons & self.mask()) as u16;
            let raw = self
                .ring
                .take_response(read_slot::<8>)
                .map_err(Error::RxRing)?;
            let Some(raw) = raw else {
                if self
                    .ring
                    .final_check_for_responses()
                    .map_err(Error::RxRing)?
                {
                    continue;
                }
                return Ok(false);
            };
            self.rsp_cons = self.rsp_cons.wrapping_add(1);
            stats.rx_slots += 1;
            // The ring never lets us consume past our requests, so the slot holds a buffer.
            let buf = self
                .posted
                .get_mut(slot as usize)
                .and_then(Option::take)
                .ok_or(Error::Internal)?;
            // Free again at once: nothing reposts it before we copied its data out below.
            self.free.push(buf);
            if self.step(&raw, slot, buf, frame)? {
                stats.rx_packets += 1;
                stats.rx_bytes += frame.len as u64;
                stats.rx_gso += u64::from(self.completed_gso);
                stats.rx_max_frame = stats.rx_max_frame.max(frame.len as u64);
                return Ok(true);
            }
        }
    }

    /// Fails the current packet with `e`: its remaining slots are dropped. `extras` and `more`:
    /// whether extra-info slots and data slots follow the one that failed.
    fn fail(&mut self, e: Error, extras: bool, more: bool) -> Result<bool, Error> {
        self.state = match (extras, more) {
            (true, _) => RxState::Extras {
                count: 0,
                more_data: more,
                discard: true,
            },
            (false, true) => RxState::Discard,
            (false, false) => RxState::Idle,
        };
        Err(e)
    }

    /// Checks one extra-info slot of a packet not failed yet (unknown types are skipped).
    fn extra(&mut self, e: &ExtraInfo) -> Result<(), Error> {
        if e.kind == EXTRA_TYPE_NONE {
            return Err(Error::RxBadExtra { kind: e.kind });
        }
        if let Some(bit) = 1u16.checked_shl(u32::from(e.kind)) {
            if self.extras_seen & bit != 0 {
                return Err(Error::RxBadExtra { kind: e.kind });
            }
            self.extras_seen |= bit;
        }
        if let Some((size, kind, _features)) = e.gso() {
            if size == 0 {
                return Err(Error::RxBadGso {
                    reason: "segment size 0",
                });
            }
            if kind != GSO_TYPE_TCPV4 && kind != GSO_TYPE_TCPV6 {
                return Err(Error::RxBadGso {
                    reason: "unknown GSO type",
                });
            }
            self.gso = Some(kind);
        }
        Ok(())
    }

    /// Handles one response; `Ok(true)` when it completed a frame.
    fn step(
        &mut self,
        raw: &[u8; 8],
        slot: u16,
        buf: u16,
        frame: &mut RxFrame,
    ) -> Result<bool, Error> {
        match self.state {
            RxState::Discard => {
                if RxResponse::parse(raw).flags & NETRXF_MORE_DATA == 0 {
                    self.state = RxState::Idle;
                }
                Ok(false)
            }
            RxState::Extras {
                count,
                more_data,
                discard,
            } => {
                let e = ExtraInfo::parse(raw);
                let count = count.saturating_add(1);
                let checked = if discard {
                    // Followed without a bound: each slot is consumed as the backend
                    // produces it, and a chain that never ends keeps the packet failed.
                    Ok(())
                } else if count > MAX_EXTRAS {
                    Err(Error::RxBadExtra { kind: e.kind })
                } else {
                    self.extra(&e)
                };
                if let Err(err) = checked {
                    self.state = if e.more() {
                        RxState::Extras {
                            count,
                            more_data,
                            discard: true,
                        }
                    } else if more_data {
                        RxState::Discard
                    } else {
                        RxState::Idle
                    };
                    return Err(err);
                }
                self.state = match (e.more(), more_data, discard) {
                    (true, _, _) => RxState::Extras {
                        count,
                        more_data,
                        discard,
                    },
                    (false, true, false) => RxState::Frags,
                    (false, true, true) => RxState::Discard,
                    (false, false, true) => RxState::Idle,
                    (false, false, false) => return self.finish(frame),
                };
                Ok(false)
            }
            RxState::Idle | RxState::Frags => {
                let r = RxResponse::parse(raw);
                let first = self.state == RxState::Idle;
                let more = r.flags & NETRXF_MORE_DATA != 0;
                // Extras follow a packet's first slot only (netback never flags another; like
                // Linux's netfront we ignore the flag there). But a slot that fails with the
                // flag may be the first of a packet glued onto ours: its extras are followed
                // as extras while dropping it, to stay in step.
                let extra = first && r.flags & NETRXF_EXTRA_INFO != 0;
                let extras_follow = r.flags & NETRXF_EXTRA_INFO != 0;
                if first {
                    self.len = 0;
                    self.slots = 0;
                    self.first_flags = r.flags;
                    self.gso = None;
                    self.extras_seen = 0;
                }
                self.slots += 1;
                if r.id != slot {
                    let e = Error::RxBadId {
                        id: r.id,
                        expected: slot,
                    };
                    return self.fail(e, extras_follow, more);
                }
                if r.status < 0 {
                    let e = Error::RxStatus {
                        id: r.id,
                        status: r.status,
                    };
                    return self.fail(e, extras_follow, more);
                }
                let size = r.status as usize;
                if r.offset as usize + size > PAGE_SIZE {
                    let e = Error::RxBadOffset {
                        id: r.id,
                        offset: r.offset,
                        size: size as u16,
                    };
                    return self.fail(e, extras_follow, more);
                }
                if self.slots > MAX_RX_SLOTS {
                    return self.fail(Error::RxTooManySlots, extras_follow, more);
                }
                let end = self.len + size;
                if end > MAX_RX_FRAME || end > frame.buf.len() {
                    return self.fail(Error::RxTooLong { len: end }, extras_follow, more);
                }
                let page = self.bufs.get(buf as usize).ok_or(Error::Internal)?;
                page.page
                    .mem
                    .read(r.offset as usize, &mut frame.buf[self.len..end])?;
                self.len = end;
                if extra {
                    self.state = RxState::Extras {
                        count: 0,
                        more_data: more,
                        discard: false,
                    };
                    return Ok(false);
                }
                if more {
                    self.state = RxState::Frags;
                    return Ok(false);
                }
                self.finish(frame)
            }
        }
    }

    /// The last slot of a packet is in: check the whole and hand it out.
    fn finish(&mut self, frame: &mut RxFrame) -> Result<bool, Error> {
        self.state = RxState::Idle;
        let flags = self.first_flags;
        if !self.csum_offload && flags & NETRXF_CSUM_BLANK != 0 {
            return Err(Error::RxChecksumBlank);
        }
        if self.len < MIN_FRAME {
            return Err(Error::RxRunt { len: self.len });
        }
        if let Some(kind) = self.gso {
            let bytes = frame.buf.get(..self.len).ok_or(Error::Internal)?;
            gso_frame_ok(bytes, kind).map_err(|reason| Error::RxBadGso { reason })?;
        }
        let trusted = flags & (NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED) != 0;
        if self.csum_offload && !trusted {
            let bytes = frame.buf.get(..self.len).ok_or(Error::Internal)?;
            if !l4_checksum_ok(bytes) {
                return Err(Error::RxBadChecksum);
            }
        }
        frame.len = self.len;
        frame.ready = true;
        self.completed_gso = self.gso.is_some();
        Ok(true)
    }
}

impl<H: Hal> Netfront<H> {
    /// Sets up the rings and buffers for a backend in domain `backend_id`: allocates and grants
    /// the two ring pages (writable), `config.tx_pages` TX pages (read-only) and
    /// `config.rx_buffers` RX pages (writable), allocates an event channel, and posts every RX
    /// buffer. Nothing is written to xenstore: [`connect`](Self::connect) does the whole
    /// handshake; this is its first step, and what host tests use directly with a simulated
    /// backend. On error everything allocated is released.
    pub fn new(mut hal: H, backend_id: u16, mac: [u8; 6], config: Config) -> Result<Self, Error> {
        let ring_slots = xen::ring::ring_size(PAGE_SIZE, RX_ENTRY_SIZE) as usize;
        if config.rx_buffers == 0 || config.rx_buffers > ring_slots || config.tx_pages == 0 {
            return Err(Error::BadConfig);
        }
        let mut pages = Vec::new();
        let setup = (|| {
            grant_page(&mut hal, backend_id, false, &mut pages)?;
            grant_page(&mut hal, backend_id, false, &mut pages)?;
            for _ in 0..config.tx_pages {
                grant_page(&mut hal, backend_id, true, &mut pages)?;
            }
            for _ in 0..config.rx_buffers {
                grant_page(&mut hal, backend_id, false, &mut pages)?;
            }
            Ok::<u32, Error>(hal.alloc_evtchn(backend_id)?)
        })();
        let port = match setup {
            Ok(p) => p,
            Err(e) => {
                // Nothing is shared with the backend yet: every grant ends.
                let _ = end_grants(&mut hal, pages);
                return Err(e);
            }
        };
        let mut it = pages.into_iter();
        let (Some(tx_ring_page), Some(rx_ring_page)) = (it.next(), it.next()) else {
            return Err(Error::Internal);
        };
        let tx_pages: Vec<Granted> = it.by_ref().take(config.tx_pages).collect();
        let rx_bufs: Vec<Granted> = it.collect();
        let tx_ring = FrontRing::new(tx_ring_page.page.mem.clone(), TX_ENTRY_SIZE)
            .map_err(|_| Error::Internal)?;
        let rx_ring = FrontRing::new(rx_ring_page.page.mem.clone(), RX_ENTRY_SIZE)
            .map_err(|_| Error::Internal)?;
        let tx_slots = tx_ring.size() as usize;
        let rx_slots = rx_ring.size() as usize;
        let mut nf = Netfront {
            hal,
            backend_id,
            port,
            mac,
            link_up: false,
            tx: TxQueue {
                ring: tx_ring,
                ring_page: tx_ring_page,
                buf: TxBuffer::new(tx_pages.len()),
                pages: tx_pages,
                free_ids: (0..tx_slots as u16).rev().collect(),
                inflight: vec![None; tx_slots],
                packets: VecDeque::new(),
                next_seq: 0,
                sg: config.sg,
                extras_in_flight: 0,
                tso_max: if config.tso && config.sg {
                    tso_max(config.tx_pages)
                } else {
                    0
                },
                scratch: Vec::with_capacity(MTU),
                resend: VecDeque::new(),
            },
            rx: RxQueue {
                ring: rx_ring,
                ring_page: rx_ring_page,
                free: (0..rx_bufs.len() as u16).rev().collect(),
                bufs: rx_bufs,
                posted: vec![None; rx_slots],
                req_prod: 0,
                rsp_cons: 0,
                state: RxState::Idle,
                len: 0,
                slots: 0,
                first_flags: 0,
                gso: None,
                extras_seen: 0,
                completed_gso: false,
                csum_offload: config.csum_offload,
            },
            frame: RxFrame {
                buf: vec![0; MAX_RX_FRAME],
                len: 0,
                ready: false,
            },
            stats: Stats::default(),
            xenbus: None,
            gso: config.gso && config.csum_offload && config.rx_buffers >= MIN_GSO_RX_BUFFERS,
            config,
            node: None,
            generation: 0,
            live: true,
            resume: Default::default(),
        };
        nf.generation = nf.hal.generation();
        nf.rx.refill(&mut nf.hal, nf.port)?;
        Ok(nf)
    }

    /// Our MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether the domain moved (restored, migrated) since the rings were set up, or a
    /// reconnect has not succeeded yet: every grant, the port and the rings are void, the
    /// device sends and receives nothing, and [`resume`](Self::resume) must reconnect it.
    pub fn needs_reconnect(&self) -> bool {
        !self.live || self.hal.generation() != self.generation
    }

    /// The domain moved: forgets every grant reference, the event channel and the rings (never
    /// ending or closing them: the numbers may belong to someone else now). Frames the old
    /// backend had not acknowledged are kept to be sent again first; every RX buffer is free
    /// to be posted again. A frame received whole and not yet taken is kept. Idempotent within
    /// a generation.
    pub(crate) fn forget(&mut self) {
        let generation = self.hal.generation();
        if !self.live && generation == self.generation {
            return;
        }
        self.generation = generation;
        if self.live {
            self.live = false;
            // What the old backend answered before the move (its responses are in our own
            // ring page) is not sent again.
            let _ = self.take_tx_responses();
            // Older frames first: those on the ring now were sent after any still queued.
            let mut frames: VecDeque<_> = self.tx.unacknowledged().unwrap_or_default().into();
            frames.extend(self.tx.resend.drain(..));
            self.tx.resend = frames;
            self.tx.reset();
            self.rx.reset();
        }
        self.link_up = false;
    }

    /// Grants every page again (at the frame it is on now, [`Hal::frame`]) to `backend_id`,
    /// allocates a new event channel and sets up empty rings on the same pages, then posts
    /// every RX buffer: what [`new`](Self::new) does, on the pages the driver already has.
    /// On error, what this call granted is ended and the port closed (they are of this
    /// generation), and the driver stays not live.
    pub(crate) fn regrant(&mut self, backend_id: u16) -> Result<(), Error> {
        let hal = &mut self.hal;
        let mut granted = 0usize;
        let pages = core::iter::once((&mut self.tx.ring_page, false))
            .chain(core::iter::once((&mut self.rx.ring_page, false)))
            .chain(self.tx.pages.iter_mut().map(|g| (g, true)))
            .chain(self.rx.bufs.iter_mut().map(|g| (g, false)));
        let mut failed = None;
        for (g, readonly) in pages {
            g.page.mfn = hal.frame(&g.page.mem);
            match hal.grant(backend_id, g.page.mfn, readonly) {
                Ok(r) => {
                    g.gref = r;
                    granted += 1;
                }
                Err(e) => {
                    failed = Some(Error::from(e));
                    break;
                }
            }
        }
        let port = match failed {
            None => hal.alloc_evtchn(backend_id).map_err(Error::from),
            Some(e) => Err(e),
        };
        let port = match port {
            Ok(p) => p,
            Err(e) => {
                self.end_attempt(granted);
                return Err(e);
            }
        };
        let rings =
            FrontRing::new(self.tx.ring_page.page.mem.clone(), TX_ENTRY_SIZE).and_then(|t| {
                FrontRing::new(self.rx.ring_page.page.mem.clone(), RX_ENTRY_SIZE).map(|r| (t, r))
            });
        let Ok((tx_ring, rx_ring)) = rings else {
            self.hal.close_evtchn(port);
            self.end_attempt(granted);
            return Err(Error::Internal);
        };
        self.tx.ring = tx_ring;
        self.rx.ring = rx_ring;
        self.port = port;
        self.backend_id = backend_id;
        self.rx.refill(&mut self.hal, self.port)
    }

    /// Ends the grants of the first `n` pages (in [`regrant`](Self::regrant)'s order), granted
    /// in this generation by an attempt that failed. A page the backend still maps (it was
    /// told the refs, then the handshake failed) is never freed or granted again: it is
    /// swapped for a fresh page and leaked, as at teardown.
    pub(crate) fn end_attempt(&mut self, n: usize) {
        let hal = &mut self.hal;
        let pages = core::iter::once(&mut self.tx.ring_page)
            .chain(core::iter::once(&mut self.rx.ring_page))
            .chain(self.tx.pages.iter_mut())
            .chain(self.rx.bufs.iter_mut())
            .take(n);
        let mut leaked = 0;
        for g in pages {
            if hal.end_grant(g.gref) == Err(xen::hal::HalError::GrantInUse) {
                match hal.alloc_page() {
                    Ok(fresh) => {
                        core::mem::forget(core::mem::replace(&mut g.page, fresh));
                        leaked += 1;
                    }
                    Err(_) => log::warn!("netfront: no page to replace one still mapped"),
                }
            }
        }
        if leaked > 0 {
            log::warn!("netfront: {leaked} pages still mapped by a failed backend; leaked");
        }
    }

    /// Sends the frames kept from before the move ([`forget`](Self::forget)), oldest first,
    /// while there is room; returns whether none is left. A transmit GSO frame the new backend
    /// cannot take (no `feature-gso-tcpv4`) is dropped and counted in `tx_failed` (TCP sends
    /// its bytes again, cut to the MTU).
    pub fn flush_resend(&mut self) -> bool {
        if self.needs_reconnect() {
            return false;
        }
        while let Some((frame, gso)) = self.tx.resend.pop_front() {
            let r = self
                .tx
                .send(&mut self.hal, self.port, &mut self.stats, &frame, gso);
            match r {
                Err(Error::TxFull) => {
                    self.tx.resend.push_front((frame, gso));
                    return false;
                }
                Ok(()) => self.stats.tx_resent += 1,
                Err(e) => {
                    log::warn!("netfront: not resending a frame after the move: {e}");
                    self.stats.tx_failed += 1;
                }
            }
        }
        true
    }

    /// Frames still to be sent again after a move.
    pub fn resend_pending(&self) -> usize {
        self.tx.resend.len()
    }

    /// Whether the link is up: the backend was Connected when last looked at
    /// ([`connect`](Self::connect), [`poll_link`](Self::poll_link)).
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Sets the link state (for frontends set up without xenstore).
    pub fn set_link_up(&mut self, up: bool) {
        self.link_up = up;
    }

    /// The event channel the backend signals (bind it and poll the driver when it fires).
    pub fn event_channel(&self) -> u32 {
        self.port
    }

    /// The backend's domain.
    pub fn backend_id(&self) -> u16 {
        self.backend_id
    }

    /// Grant reference of the TX ring page (`tx-ring-ref`).
    pub fn tx_ring_ref(&self) -> u32 {
        self.tx.ring_page.gref
    }

    /// Grant reference of the RX ring page (`rx-ring-ref`).
    pub fn rx_ring_ref(&self) -> u32 {
        self.rx.ring_page.gref
    }

    /// Whether TX frames straddling a page are split into slots (else kept within a page).
    pub fn scatter_gather(&self) -> bool {
        self.tx.sg
    }

    /// Largest frame smoltcp may build for transmit GSO (`Config::tso`; 0 when off): half the TX
    /// buffer, at most 60 KiB (so a frame never takes more than 16 slots, under netback's 18).
    pub fn tso_max(&self) -> usize {
        self.tx.tso_max
    }

    /// Whether checksum offload is accepted on receive (`Config::csum_offload`).
    pub fn csum_offload(&self) -> bool {
        self.rx.csum_offload
    }

    /// Whether receive GSO is offered (`feature-gso-tcpv4`): `Config::gso` and
    /// `Config::csum_offload`.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The platform.
    pub fn hal(&self) -> &H {
        &self.hal
    }

    /// Counts and logs an error.
    pub(crate) fn note(stats: &mut Stats, e: &Error) {
        match e {
            // Back-pressure, not a fault: a full ring under load is normal (TCP retransmits
            // what was not sent). Counted; logged only at 1, 2, 4, 8... so a storm of them
            // costs a few lines, not one per frame.
            Error::TxFull => {
                stats.tx_full += 1;
                let n = stats.tx_full;
                if n.is_power_of_two() {
                    log::info!("netfront: TX ring full {n} times so far (back-pressure)");
                }
                return;
            }
            Error::TxFailed { .. } => stats.tx_failed += 1,
            // A peer on the network (or a corrupted packet), not the backend: counted, and
            // logged quietly (a storm of them must not flood the console).
            Error::RxBadChecksum => {
                stats.rx_bad_checksum += 1;
                stats.rx_dropped += 1;
                log::debug!("netfront: {e}");
                return;
            }
            e if e.is_backend_fault() => {
                stats.malformed += 1;
                if matches!(
                    e,
                    Error::RxBadId { .. }
                        | Error::RxStatus { .. }
                        | Error::RxBadOffset { .. }
                        | Error::RxTooLong { .. }
                        | Error::RxTooManySlots
                        | Error::RxRunt { .. }
                        | Error::RxChecksumBlank
                        | Error::RxBadExtra { .. }
                        | Error::RxBadGso { .. }
                ) {
                    stats.rx_dropped += 1;
                }
            }
            _ => {}
        }
        log::warn!("netfront: {e}");
    }

    /// Whether a frame of `len` bytes can be sent now (after [`reclaim_tx`](Self::reclaim_tx)).
    pub fn can_send(&self, len: usize) -> bool {
        self.tx.room(len)
    }

    /// Sends one Ethernet frame (its checksums complete). [`Error::TxFull`] when there is no
    /// room now: call [`reclaim_tx`](Self::reclaim_tx) (or wait for the event channel) and retry.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), Error> {
        self.send_gso(frame, None)
    }

    /// Sends one Ethernet frame; with `gso` (the MSS) and over the MTU, a TCP/IPv4 segment for
    /// netback to cut, whose checksum field holds the pseudo-header sum (see [`fill_tcp_checksum`]).
    /// [`Error::TxBadLength`] for a GSO frame over [`tso_max`](Self::tso_max).
    pub fn send_gso(&mut self, frame: &[u8], gso: Option<u16>) -> Result<(), Error> {
        if self.needs_reconnect() {
            return Err(Error::Moved);
        }
        let r = self
            .tx
            .send(&mut self.hal, self.port, &mut self.stats, frame, gso);
        if let Err(e) = &r {
            Self::note(&mut self.stats, e);
        }
        r
    }

    /// Consumes every TX response the backend published, releasing ids and buffer space.
    /// Returns the number of responses consumed, or the first error among them (all are
    /// consumed and counted, see [`crate::error`]).
    pub fn reclaim_tx(&mut self) -> Result<usize, Error> {
        if self.needs_reconnect() {
            return Err(Error::Moved);
        }
        self.take_tx_responses()
    }

    /// [`reclaim_tx`](Self::reclaim_tx)'s work: reads the TX ring (our own page) and notifies
    /// nobody, so it is also what tells, after a move, which frames the old backend answered.
    fn take_tx_responses(&mut self) -> Result<usize, Error> {
        let mut n = 0;
        let mut first = None;
        loop {
            match self.tx.complete_one(&mut self.stats) {
                Ok(Some(())) => n += 1,
                Ok(None) => match self.tx.ring.final_check_for_responses() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        first.get_or_insert(Error::TxRing(e));
                        break;
                    }
                },
                Err(e) => {
                    Self::note(&mut self.stats, &e);
                    let stop = matches!(e, Error::TxRing(_) | Error::Internal);
                    first.get_or_insert(e);
                    if stop {
                        break;
                    }
                    n += 1;
                }
            }
        }
        let lost = self.tx.sweep_lost();
        if lost > 0 {
            log::warn!("netfront: {lost} tx slots never answered; reclaimed");
            self.stats.tx_failed += lost as u64;
        }
        match first {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Processes RX responses until a frame is ready; reposts buffers.
    pub(crate) fn poll_rx(&mut self) -> Result<bool, Error> {
        if self.frame.ready {
            return Ok(true);
        }
        if self.needs_reconnect() {
            return Err(Error::Moved);
        }
        let r = self.rx.poll(&mut self.frame, &mut self.stats);
        let refill = self.rx.refill(&mut self.hal, self.port);
        match r {
            Err(e) => {
                Self::note(&mut self.stats, &e);
                Err(e)
            }
            Ok(ready) => refill.map(|()| ready),
        }
    }

    /// The next received frame, if any. A malformed response gives its error (the slot is
    /// recycled, the packet dropped): call again to go on.
    pub fn receive(&mut self) -> Result<Option<&[u8]>, Error> {
        if !self.poll_rx()? {
            return Ok(None);
        }
        self.frame.ready = false;
        Ok(Some(&self.frame.buf[..self.frame.len]))
    }

    /// RX buffers currently posted to the backend.
    pub fn rx_posted(&self) -> usize {
        self.rx.bufs.len() - self.rx.free.len()
    }

    /// TX request ids in flight.
    pub fn tx_in_flight(&self) -> usize {
        self.tx.inflight.len() - self.tx.free_ids.len()
    }

    /// Frees every page without ending a grant or closing the port: for a driver whose
    /// grants and port are void (the domain moved).
    pub(crate) fn discard(self) -> H {
        let (mut hal, pages, _) = self.dismantle();
        for mut g in pages {
            g.page.mfn = hal.frame(&g.page.mem);
            hal.free_page(g.page);
        }
        hal
    }

    /// Takes the driver apart: the platform, every granted page, the event channel.
    pub(crate) fn dismantle(self) -> (H, Vec<Granted>, u32) {
        let Netfront {
            hal, tx, rx, port, ..
        } = self;
        let mut pages = Vec::with_capacity(2 + tx.pages.len() + rx.bufs.len());
        pages.push(tx.ring_page);
        pages.push(rx.ring_page);
        pages.extend(tx.pages);
        pages.extend(rx.bufs);
        (hal, pages, port)
    }

    /// Releases everything without a xenstore handshake (for a frontend never connected, or
    /// after [`shutdown`](Self::shutdown) failed): closes the event channel, ends the grants and
    /// frees the pages. Pages the backend still maps are leaked, not freed
    /// ([`Error::GrantsStillMapped`]).
    pub fn release(self) -> Result<H, Error> {
        if self.needs_reconnect() {
            return Ok(self.discard());
        }
        let (mut hal, pages, port) = self.dismantle();
        hal.close_evtchn(port);
        let kept = end_grants(&mut hal, pages);
        if kept.is_empty() {
            Ok(hal)
        } else {
            Err(Error::GrantsStillMapped { count: kept.len() })
        }
    }
}

/// Largest transmit GSO frame for a TX buffer of `pages`: half the buffer, at most 60 KiB (so a
/// frame never spans more than 16 pages: netback drops packets of more than 18 slots and
/// disconnects at 20); 0 (off) when that is not above the MTU.
pub(crate) fn tso_max(pages: usize) -> usize {
    let n = (pages * PAGE_SIZE / 2).min(60 * 1024);
    if n > MTU {
        n
    } else {
        0
    }
}

/// Fills the TCP checksum of an Ethernet `frame` (IPv4, or IPv6 with TCP right after its
/// header, as smoltcp builds them): the complete checksum, or with `partial` the pseudo-header
/// sum alone (folded, not complemented: what Linux's `CHECKSUM_PARTIAL` expects, for netback
/// to finish after cutting a GSO segment). Anything else is left alone. Returns whether it was
/// a TCP frame.
pub fn fill_tcp_checksum(frame: &mut [u8], partial: bool) -> bool {
    use smoltcp::wire::{
        checksum, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet,
        TcpPacket,
    };
    let Ok(mut eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    let (src, dst, hdr, l4_len): (IpAddress, IpAddress, usize, usize) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload_mut()) else {
                return false;
            };
            if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
                return false;
            }
            let hl = usize::from(ip.header_len());
            let len = usize::from(ip.total_len()).saturating_sub(hl);
            (ip.src_addr().into(), ip.dst_addr().into(), hl, len)
        }
        EthernetProtocol::Ipv6 => {
            let Ok(ip) = Ipv6Packet::new_checked(eth.payload_mut()) else {
                return false;
            };
            if ip.next_header() != IpProtocol::Tcp {
                return false;
            }
            let len = usize::from(ip.payload_len());
            (ip.src_addr().into(), ip.dst_addr().into(), 40, len)
        }
        _ => return false,
    };
    let Some(l4) = eth.payload_mut().get_mut(hdr..hdr + l4_len) else {
        return false;
    };
    let Ok(mut tcp) = TcpPacket::new_checked(l4) else {
        return false;
    };
    if partial {
        let sum = checksum::pseudo_header(&src, &dst, IpProtocol::Tcp, l4_len as u32);
        tcp.set_checksum(sum);
    } else {
        tcp.fill_checksum(&src, &dst);
    }
    true
}

/// Whether a frame received with a GSO extra of type `kind` is what the extra says: one whole,
/// unfragmented TCP packet of that IP version, its IP length exactly the bytes received (so
/// a super-frame's length cannot disagree with itself). The reason when not.
fn gso_frame_ok(frame: &[u8], kind: u8) -> Result<(), &'static str> {
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet};
    let eth = EthernetFrame::new_checked(frame).map_err(|_| "not an Ethernet frame")?;
    let ip_len = frame.len() - 14;
    // The fixed headers only (read unchecked past that: a length that disagrees is the error
    // reported, not a truncated packet).
    let payload = eth.payload();
    let (proto, len) = match (eth.ethertype(), kind) {
        (EthernetProtocol::Ipv4, GSO_TYPE_TCPV4) => {
            if payload.len() < 20 {
                return Err("bad IPv4 header");
            }
            let ip = Ipv4Packet::new_unchecked(payload);
            if ip.version() != 4 || ip.header_len() < 20 {
                return Err("bad IPv4 header");
            }
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err("an IPv4 fragment");
            }
            (ip.next_header(), usize::from(ip.total_len()))
        }
        (EthernetProtocol::Ipv6, GSO_TYPE_TCPV6) => {
            if payload.len() < 40 {
                return Err("bad IPv6 header");
            }
            let ip = Ipv6Packet::new_unchecked(payload);
            if ip.version() != 6 {
                return Err("bad IPv6 header");
            }
            (ip.next_header(), 40 + usize::from(ip.payload_len()))
        }
        _ => return Err("GSO type does not match the frame's IP version"),
    };
    if proto != IpProtocol::Tcp {
        return Err("not TCP");
    }
    if len != ip_len {
        return Err("IP length disagrees with the bytes received");
    }
    Ok(())
}

/// Whether the TCP or UDP checksum of an Ethernet `frame` verifies, checked as smoltcp would
/// check it: over the IPv4 payload (up to the total length) or the IPv6 payload (after a
/// hop-by-hop header, the only extension header smoltcp passes to TCP/UDP), with the pseudo
/// header. Anything else is not ours to judge and passes: non-IP frames, other protocols, IP
/// headers smoltcp will reject, and IPv4 fragments (smoltcp is built without reassembly, so it
/// drops them). A TCP/UDP packet too short for its header fails: it cannot be verified.
/// Read through smoltcp's checked views only: no input panics.
fn l4_checksum_ok(frame: &[u8]) -> bool {
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6ExtHeader,
        Ipv6Packet, TcpPacket, UdpPacket,
    };
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return true;
    };
    let (src, dst, proto, payload): (IpAddress, IpAddress, IpProtocol, &[u8]) =
        match eth.ethertype() {
            EthernetProtocol::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    return true;
                };
                if ip.more_frags() || ip.frag_offset() != 0 {
                    return true;
                }
                let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
                (src, dst, ip.next_header(), ip.payload())
            }
            EthernetProtocol::Ipv6 => {
                let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                    return true;
                };
                let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
                let (mut proto, mut payload) = (ip.next_header(), ip.payload());
                if proto == IpProtocol::HopByHop {
                    let Ok(ext) = Ipv6ExtHeader::new_checked(payload) else {
                        return true;
                    };
                    // As smoltcp: the header is 8 bytes per length unit beyond the first 8.
                    let skip = 8 + 8 * usize::from(ext.header_len());
                    proto = ext.next_header();
                    payload = payload.get(skip..).unwrap_or(&[]);
                }
                (src, dst, proto, payload)
            }
            _ => return true,
        };
    match proto {
        IpProtocol::Tcp => TcpPacket::new_checked(payload)
            .map(|p| p.verify_checksum(&src, &dst))
            .unwrap_or(false),
        IpProtocol::Udp => UdpPacket::new_checked(payload)
            .map(|p| p.verify_checksum(&src, &dst))
            .unwrap_or(false),
        _ => true,
    }
}
