//! A simulated netback, for host tests of the driver (and of anything built on it).
//!
//! [`SimNetback`] attaches to the rings a frontend granted on a [`SimHal`] (mapping the grants
//! through [`SimState::map_grant`](xen::hal::SimState::map_grant), as domain `domid`) and speaks
//! the real ring protocol from the backend's side, one [`step`](SimNetback::step) at a time:
//! it consumes TX requests (reassembling multi-slot packets and checking that no slot crosses a
//! page), answers them, and copies queued frames into posted RX pages, splitting them over
//! several slots when asked. Frontend mistakes it notices are recorded in
//! [`violations`](SimNetback::violations).
//!
//! Faults ([`Fault`]) make it misbehave on purpose: wrong ids and statuses, data past the end of
//! a page, garbage response indices, extra-info slots, split packets.
//!
//! [`rx_gso`](SimNetback::rx_gso) makes it deliver TCP packets longer than the MTU as Linux's
//! netback delivers a GSO skb to a frontend that offered `feature-gso-tcpv4`/`-tcpv6`
//! (`xenvif_rx_skb` in drivers/net/xen-netback/rx.c): the data packed into whole pages from
//! offset 0, the first slot flagged `NETRXF_extra_info` (and `NETRXF_more_data`), the next slot
//! a GSO extra (`gso.size` = the MSS, `gso.type` by IP version), then the other data slots.
//!
//! [`rx_csum`](SimNetback::rx_csum) chooses how TCP/UDP checksums reach the guest ([`RxCsum`]):
//! complete and unflagged, blank (a partial checksum flagged `NETRXF_csum_blank`, as Linux's
//! netback passes on dom0's own packets), flagged `NETRXF_data_validated`, or wrong and
//! unflagged.
//!
//! It also plays the peer host's NIC: it implements smoltcp's [`Device`], receiving what the guest
//! sent and transmitting to the guest, so a second smoltcp `Interface` on top of it can talk ARP,
//! ICMP, TCP end to end with an interface over the driver.
//!
//! [`xenstore_backend`] is the xenstore half: a scripted peer for
//! [`xen::xenstore::sim::Sim`] that walks the backend's states and publishes its features.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{
    checksum, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6ExtHeader,
    Ipv6Packet,
};
use xen::hal::SimHal;
use xen::ring::BackRing;
use xen::shmem::ShMem;
use xen::xenstore::sim::Store;

use crate::driver::MTU;
use crate::wire::*;

/// `len` pseudo-random bytes from `seed` (xorshift), the same for the same seed: test payloads.
pub fn data(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Deterministic pseudo-random numbers (xorshift64*) for randomized tests: the same seed gives
/// the same sequence.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A misbehaviour to inject. Faults apply in the order injected: TX faults to the next TX
/// responses (one each); RX faults to the next packet to the guest (`RxSplit` and `RxExtra`
/// modify it together with the one first-slot fault that follows them); index faults at the
/// next publish of their ring once they reach the front of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next TX response carries this id.
    TxId(u16),
    /// The next TX response carries this status.
    TxStatus(i16),
    /// Publish this TX response producer at the end of the next step (healed the step after).
    TxRspProd(u32),
    /// The first slot of the next packet to the guest carries this id.
    RxId(u16),
    /// The first slot of the next packet carries this status (its data is not written).
    RxStatus(i16),
    /// The first slot of the next packet claims its data at this offset (not written there).
    RxOffset(u16),
    /// Publish this RX response producer at the end of the next step (healed the step after).
    RxRspProd(u32),
    /// Split the next packet into slots of at most this many bytes.
    RxSplit(usize),
    /// Add these flags to the first slot of the next packet.
    RxFlags(u16),
    /// Add these flags to the last slot of the next packet (`NETRXF_more_data`: the packet
    /// claims to go on into the next one).
    RxLastFlags(u16),
    /// Follow the first slot of the next packet with this extra-info slot (after its GSO extra,
    /// if it has one). Several accumulate, in order; every one but the last gets
    /// `XEN_NETIF_EXTRA_FLAG_MORE`, the last keeps its own flags.
    RxExtra(ExtraInfo),
}

/// How the simulated backend delivers the TCP/UDP checksums of packets to the guest (IPv4, and
/// IPv6 with at most a hop-by-hop header; other frames always go as they are, unflagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxCsum {
    /// As queued (complete, from the peer's stack), no checksum flags.
    #[default]
    AsIs,
    /// The checksum field holds only the pseudo-header sum (Linux's `CHECKSUM_PARTIAL`), flagged
    /// `NETRXF_csum_blank | NETRXF_data_validated` as Linux's netback does.
    Blank,
    /// As queued, flagged `NETRXF_data_validated`.
    Validated,
    /// The checksum field made wrong (one bit flipped), no checksum flags.
    Corrupt,
}

/// Where the L4 checksum field of a TCP/UDP `frame` is (as an offset into the frame), its
/// pseudo-header sum (folded, not complemented), and the flags `RxCsum::Blank` uses. `None` for
/// anything else.
fn l4_checksum_field(frame: &[u8]) -> Option<(usize, u16)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (src, dst, proto, ip_hdr, l4_len): (IpAddress, IpAddress, _, usize, usize) =
        match eth.ethertype() {
            EthernetProtocol::Ipv4 => {
                let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
                let hl = usize::from(ip.header_len());
                let l4 = usize::from(ip.total_len()).checked_sub(hl)?;
                (
                    ip.src_addr().into(),
                    ip.dst_addr().into(),
                    ip.next_header(),
                    hl,
                    l4,
                )
            }
            EthernetProtocol::Ipv6 => {
                let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
                let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
                let l4 = usize::from(ip.payload_len());
                if ip.next_header() == IpProtocol::HopByHop {
                    let ext = Ipv6ExtHeader::new_checked(ip.payload()).ok()?;
                    let len = 8 + 8 * usize::from(ext.header_len());
                    (src, dst, ext.next_header(), 40 + len, l4.checked_sub(len)?)
                } else {
                    (src, dst, ip.next_header(), 40, l4)
                }
            }
            _ => return None,
        };
    let field = match proto {
        IpProtocol::Tcp if l4_len >= 20 => 16,
        IpProtocol::Udp if l4_len >= 8 => 6,
        _ => return None,
    };
    let pseudo = checksum::pseudo_header(&src, &dst, proto, l4_len as u32);
    Some((14 + ip_hdr + field, pseudo))
}

/// Rewrites `frame` as `mode` says; the flags for its first RX slot.
fn apply_rx_csum(mode: RxCsum, frame: &mut [u8]) -> u16 {
    let Some((at, pseudo)) = l4_checksum_field(frame) else {
        return 0;
    };
    let Some(field) = frame.get_mut(at..at + 2) else {
        return 0;
    };
    match mode {
        RxCsum::AsIs => 0,
        RxCsum::Blank => {
            field.copy_from_slice(&pseudo.to_be_bytes());
            NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
        }
        RxCsum::Validated => NETRXF_DATA_VALIDATED,
        RxCsum::Corrupt => {
            // Never to 0 (an absent UDP checksum, which passes): flip a bit of the low byte.
            field[1] ^= 0x10;
            if field == [0, 0] {
                field[1] = 0x01;
            }
            0
        }
    }
}

/// The `XEN_NETIF_GSO_TYPE_*` of a TCP `frame` longer than the MTU (one netback would send as
/// a GSO skb), else `None`.
fn gso_type(frame: &[u8]) -> Option<u8> {
    // From the headers' bytes alone (as netback knows it from the skb), so that a frame cut
    // short by a test still goes as GSO.
    if frame.len() <= MTU {
        return None;
    }
    match (frame.get(12..14)?, frame.get(14)? >> 4) {
        ([0x08, 0x00], 4) => (*frame.get(14 + 9)? == 6).then_some(GSO_TYPE_TCPV4),
        ([0x86, 0xdd], 6) => (*frame.get(14 + 6)? == 6).then_some(GSO_TYPE_TCPV6),
        _ => None,
    }
}

/// A frontend mistake the simulated backend noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A TX slot whose bytes cross the end of its page.
    TxSlotCrossesPage(TxRequest),
    /// A packet's first-slot size is smaller than the sum of its other slots.
    TxBadTotal(u16),
    /// A grant we could not map (or mapped with the wrong access).
    BadGrant(u32),
    /// A TX request with checksum-offload flags but no GSO extra (only GSO segments are sent
    /// with a partial checksum), or with `NETTXF_extra_info` on a slot other than a packet's
    /// first.
    UnexpectedTxFlags(u16),
    /// A TX extra-info slot that is not a valid TCPV4 GSO one.
    BadTxExtra(ExtraInfo),
    /// A GSO packet whose TCP checksum field does not hold the pseudo-header sum, or that is
    /// not TCP/IPv4.
    BadPartialChecksum,
}

/// The simulated backend of one vif.
pub struct SimNetback {
    hal: SimHal,
    domid: u16,
    ring_refs: [u32; 2],
    attached: bool,
    tx: BackRing,
    rx: BackRing,
    rx_reqs: VecDeque<RxRequest>,
    tx_pending: Vec<TxRequest>,
    held_tx: VecDeque<TxResponse>,
    tx_faults: VecDeque<Fault>,
    rx_faults: VecDeque<Fault>,
    force: [Option<u32>; 2],
    /// Frames the guest sent, oldest first.
    pub from_guest: VecDeque<Vec<u8>>,
    /// Frames waiting to go to the guest (delivered when it has posted enough buffers).
    pub to_guest: VecDeque<Vec<u8>>,
    /// Every TX slot seen, in order (extra-info slots not included).
    pub tx_slots: Vec<TxRequest>,
    /// GSO packets the guest sent: (frame length, MSS). Their checksums are completed (as
    /// dom0's stack would treat them) before they reach `from_guest`.
    pub tx_gso: Vec<(usize, u16)>,
    /// Extra-info slots still to read for the TX packet being received.
    tx_extras: usize,
    /// GSO extras of the TX packet being received.
    tx_extra: Option<ExtraInfo>,
    /// Frontend mistakes seen.
    pub violations: Vec<Violation>,
    /// Most data bytes per RX slot (default 4096: one slot per packet up to a page).
    pub rx_slot_size: usize,
    /// Offset of the data in the first RX slot's page (default 0).
    pub rx_offset: u16,
    /// Answer TX requests (default); when false, responses are held until it is set again.
    pub answer_tx: bool,
    /// Times the frontend asked to be notified of our responses.
    pub guest_notifications: u64,
    /// How TCP/UDP checksums go to the guest (default: as they are, unflagged).
    pub rx_csum: RxCsum,
    /// Deliver TCP frames longer than the MTU as GSO super-frames with this segment size (MSS)
    /// in their GSO extra, as Linux's netback does (default `None`: no GSO extra; the slot
    /// layout still follows `rx_slot_size`).
    pub rx_gso: Option<u16>,
    /// Packets delivered with a GSO extra.
    pub gso_sent: u64,
}

impl core::fmt::Debug for SimNetback {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimNetback")
            .field("ring_refs", &self.ring_refs)
            .field("rx_reqs", &self.rx_reqs.len())
            .field("from_guest", &self.from_guest.len())
            .field("to_guest", &self.to_guest.len())
            .field("violations", &self.violations)
            .finish()
    }
}

impl SimNetback {
    /// Attaches, as domain `domid`, to the TX and RX rings granted as `tx_ref` and `rx_ref` on
    /// `hal`. `None` when a grant does not map.
    pub fn attach(hal: &SimHal, domid: u16, tx_ref: u32, rx_ref: u32) -> Option<Self> {
        let (tx_mem, rx_mem) = {
            let mut s = hal.state.lock();
            let tx = s.map_grant(tx_ref, domid);
            let rx = s.map_grant(rx_ref, domid);
            match (tx, rx) {
                (Some((t, false)), Some((r, false))) => (t, r),
                (t, r) => {
                    if t.is_some() {
                        s.unmap_grant(tx_ref);
                    }
                    if r.is_some() {
                        s.unmap_grant(rx_ref);
                    }
                    return None;
                }
            }
        };
        Some(SimNetback {
            hal: hal.clone(),
            domid,
            ring_refs: [tx_ref, rx_ref],
            attached: true,
            tx: BackRing::new(tx_mem, TX_ENTRY_SIZE),
            rx: BackRing::new(rx_mem, RX_ENTRY_SIZE),
            rx_reqs: VecDeque::new(),
            tx_pending: Vec::new(),
            held_tx: VecDeque::new(),
            tx_faults: VecDeque::new(),
            rx_faults: VecDeque::new(),
            force: [None, None],
            from_guest: VecDeque::new(),
            to_guest: VecDeque::new(),
            tx_slots: Vec::new(),
            tx_gso: Vec::new(),
            tx_extras: 0,
            tx_extra: None,
            violations: Vec::new(),
            rx_slot_size: PAGE_SIZE,
            rx_offset: 0,
            answer_tx: true,
            guest_notifications: 0,
            rx_csum: RxCsum::AsIs,
            rx_gso: None,
            gso_sent: 0,
        })
    }

    /// Attaches to the rings the frontend at `fe` (absolute path) published in `store`.
    pub fn from_store(store: &Store, fe: &str, hal: &SimHal, domid: u16) -> Option<Self> {
        let num = |k: &str| -> Option<u32> {
            store
                .read_str(&format!("{fe}/{k}"))?
                .trim_end_matches('\0')
                .parse()
                .ok()
        };
        Self::attach(hal, domid, num("tx-ring-ref")?, num("rx-ring-ref")?)
    }

    /// Unmaps the rings (as a backend does when the frontend closes); the frontend can then end
    /// its grants.
    pub fn detach(&mut self) {
        if self.attached {
            self.attached = false;
            let mut s = self.hal.state.lock();
            s.unmap_grant(self.ring_refs[0]);
            s.unmap_grant(self.ring_refs[1]);
        }
    }

    /// Whether the rings are still mapped.
    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// Queues a fault.
    pub fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::TxId(_) | Fault::TxStatus(_) | Fault::TxRspProd(_) => {
                self.tx_faults.push_back(fault)
            }
            _ => self.rx_faults.push_back(fault),
        }
    }

    /// Queues a frame for the guest.
    pub fn send_to_guest(&mut self, frame: &[u8]) {
        self.to_guest.push_back(frame.to_vec());
    }

    /// RX requests (posted guest buffers) not yet used.
    pub fn rx_available(&self) -> usize {
        self.rx_reqs.len()
    }

    /// Runs the backend once: TX requests in, TX responses out, RX requests in, queued frames
    /// out. Returns whether anything moved.
    pub fn step(&mut self) -> bool {
        if !self.attached {
            return false;
        }
        let mut progress = self.step_tx();
        progress |= self.step_rx();
        progress
    }

    /// Maps `gref` for a copy: the page, or a recorded violation.
    fn with_grant<R>(
        &mut self,
        gref: u32,
        writable: bool,
        f: impl FnOnce(&ShMem) -> R,
    ) -> Option<R> {
        let mapped = self.hal.state.lock().map_grant(gref, self.domid);
        match mapped {
            Some((mem, ro)) => {
                let r = (!writable || !ro).then(|| f(&mem));
                self.hal.state.lock().unmap_grant(gref);
                if r.is_none() {
                    self.violations.push(Violation::BadGrant(gref));
                }
                r
            }
            None => {
                self.violations.push(Violation::BadGrant(gref));
                None
            }
        }
    }

    fn step_tx(&mut self) -> bool {
        let mut progress = false;
        while let Ok(Some(req)) = self.tx.take_request(TxRequest::read) {
            progress = true;
            if self.tx_extras > 0 {
                // An extra-info slot (after a packet's first slot), as netback reads it.
                let raw = req.emit();
                let mut b = [0u8; 8];
                b.copy_from_slice(&raw[..8]);
                let e = ExtraInfo::parse(&b);
                self.tx_extras -= 1;
                if e.more() {
                    self.tx_extras += 1;
                }
                match e.gso() {
                    Some((size, GSO_TYPE_TCPV4, 0)) if size > 0 && self.tx_extra.is_none() => {
                        self.tx_extra = Some(e);
                    }
                    _ => self.violations.push(Violation::BadTxExtra(e)),
                }
                // A one-slot packet ends with its extras.
                if self.tx_extras == 0
                    && self
                        .tx_pending
                        .last()
                        .is_some_and(|r| r.flags & NETTXF_MORE_DATA == 0)
                {
                    self.finish_tx_packet();
                }
                continue;
            }
            self.tx_slots.push(req);
            let first = self.tx_pending.is_empty();
            if req.flags & NETTXF_EXTRA_INFO != 0 {
                if first {
                    self.tx_extras = 1;
                } else {
                    self.violations
                        .push(Violation::UnexpectedTxFlags(req.flags));
                }
            }
            self.tx_pending.push(req);
            if req.flags & NETTXF_MORE_DATA == 0 && self.tx_extras == 0 {
                self.finish_tx_packet();
            }
        }
        if self.answer_tx {
            while let Some(mut rsp) = self.held_tx.pop_front() {
                match self.tx_faults.front() {
                    Some(Fault::TxId(id)) => rsp.id = *id,
                    Some(Fault::TxStatus(st)) => rsp.status = *st,
                    _ => {}
                }
                if matches!(
                    self.tx_faults.front(),
                    Some(Fault::TxId(_) | Fault::TxStatus(_))
                ) {
                    self.tx_faults.pop_front();
                }
                let _ = self.tx.queue_response(|m, o| rsp.write(m, o));
                progress = true;
            }
        }
        if self.publish(0) {
            self.guest_notifications += 1;
        }
        progress
    }

    /// The TX packet in `tx_pending` is complete: takes it and queues its responses.
    fn finish_tx_packet(&mut self) {
        let slots = core::mem::take(&mut self.tx_pending);
        let Some(first) = slots.first().copied() else {
            return;
        };
        let extra = self.tx_extra.take();
        if first.flags & NETTXF_CSUM_BLANK != 0 && extra.is_none() {
            self.violations
                .push(Violation::UnexpectedTxFlags(first.flags));
        }
        let status = self.take_packet(&slots, extra);
        for (i, s) in slots.iter().enumerate() {
            self.held_tx.push_back(TxResponse { id: s.id, status });
            if i == 0 && first.flags & NETTXF_EXTRA_INFO != 0 {
                // netback's make_tx_response: NULL for the extra, its id left stale.
                self.held_tx.push_back(TxResponse {
                    id: s.id,
                    status: NETIF_RSP_NULL,
                });
            }
        }
    }

    /// Publishes a ring's responses (healing a forced index), then applies a pending index fault.
    fn publish(&mut self, ring: usize) -> bool {
        let notify = if ring == 0 {
            self.tx.push_responses()
        } else {
            self.rx.push_responses()
        };
        let queue = if ring == 0 {
            &mut self.tx_faults
        } else {
            &mut self.rx_faults
        };
        if let Some(Fault::TxRspProd(v) | Fault::RxRspProd(v)) = queue.front().copied() {
            queue.pop_front();
            self.force[ring] = Some(v);
        }
        if let Some(v) = self.force[ring].take() {
            let _ = if ring == 0 {
                self.tx.force_rsp_prod(v)
            } else {
                self.rx.force_rsp_prod(v)
            };
        }
        notify.unwrap_or(false)
    }

    /// Copies a complete TX packet out of the guest's pages (a GSO one checked and its
    /// checksum completed); its status.
    fn take_packet(&mut self, slots: &[TxRequest], gso: Option<ExtraInfo>) -> i16 {
        let Some(first) = slots.first() else {
            return NETIF_RSP_ERROR;
        };
        let rest: usize = slots[1..].iter().map(|s| s.size as usize).sum();
        let Some(first_len) = (first.size as usize).checked_sub(rest) else {
            self.violations.push(Violation::TxBadTotal(first.size));
            return NETIF_RSP_ERROR;
        };
        let mut frame = Vec::with_capacity(first.size as usize);
        for (i, s) in slots.iter().enumerate() {
            let len = if i == 0 { first_len } else { s.size as usize };
            if s.offset as usize + len > PAGE_SIZE {
                self.violations.push(Violation::TxSlotCrossesPage(*s));
                return NETIF_RSP_ERROR;
            }
            let mut bytes = vec![0u8; len];
            let ok = self.with_grant(s.gref, false, |m| m.read(s.offset as usize, &mut bytes));
            if !matches!(ok, Some(Ok(()))) {
                return NETIF_RSP_ERROR;
            }
            frame.extend_from_slice(&bytes);
        }
        if let Some((mss, _, _)) = gso.and_then(|e| e.gso()) {
            let mut check = frame.clone();
            let partial_ok = crate::driver::fill_tcp_checksum(&mut check, true)
                && gso_type(&frame) == Some(GSO_TYPE_TCPV4)
                && check == frame;
            if !partial_ok {
                self.violations.push(Violation::BadPartialChecksum);
            }
            crate::driver::fill_tcp_checksum(&mut frame, false);
            self.tx_gso.push((frame.len(), mss));
        }
        self.from_guest.push_back(frame);
        NETIF_RSP_OKAY
    }

    fn step_rx(&mut self) -> bool {
        let mut progress = false;
        while let Ok(Some(req)) = self.rx.take_request(RxRequest::read) {
            self.rx_reqs.push_back(req);
            progress = true;
        }
        while let Some(frame) = self.to_guest.front() {
            // This packet's faults: modifiers from the front of the queue, up to and including
            // one fault of its first slot (an index fault waits for the next publish).
            let mut split = self.rx_slot_size.clamp(1, PAGE_SIZE);
            let mut extras = Vec::new();
            let mut offset = self.rx_offset as usize % PAGE_SIZE;
            if let Some(mss) = self.rx_gso {
                if let Some(kind) = gso_type(frame) {
                    extras.push(ExtraInfo {
                        kind: EXTRA_TYPE_GSO,
                        flags: 0,
                        data: [mss as u8, (mss >> 8) as u8, kind, 0, 0, 0],
                    });
                    // netback fills whole pages from offset 0.
                    split = PAGE_SIZE;
                    offset = 0;
                }
            }
            let gso = !extras.is_empty();
            let mut first_fault = None;
            let mut last_flags = 0;
            let mut faults = 0;
            for f in &self.rx_faults {
                match f {
                    Fault::RxSplit(n) => split = (*n).clamp(1, PAGE_SIZE),
                    Fault::RxExtra(e) => extras.push(*e),
                    Fault::RxLastFlags(fl) => last_flags |= *fl,
                    Fault::RxRspProd(_) => break,
                    f => first_fault = Some(*f),
                }
                faults += 1;
                if first_fault.is_some() {
                    break;
                }
            }
            let n_extras = extras.len();
            for (i, e) in extras.iter_mut().enumerate() {
                if i + 1 < n_extras {
                    e.flags |= EXTRA_FLAG_MORE;
                }
            }
            // Slots: (offset, len).
            let mut layout = Vec::new();
            let mut pos = 0;
            loop {
                let n = split.min(PAGE_SIZE - offset).min(frame.len() - pos);
                layout.push((offset, n));
                pos += n;
                offset = 0;
                if pos >= frame.len() {
                    break;
                }
            }
            if self.rx_reqs.len() < layout.len() + extras.len() {
                break;
            }
            self.gso_sent += u64::from(gso);
            let mut frame = self.to_guest.pop_front().unwrap_or_default();
            let csum_flags = apply_rx_csum(self.rx_csum, &mut frame);
            self.rx_faults.drain(..faults);
            let last = layout.len() - 1;
            let mut pos = 0;
            for (i, &(offset, len)) in layout.iter().enumerate() {
                let Some(req) = self.rx_reqs.pop_front() else {
                    break;
                };
                let mut rsp = RxResponse {
                    id: req.id,
                    offset: offset as u16,
                    flags: if i < last {
                        NETRXF_MORE_DATA
                    } else {
                        last_flags
                    },
                    status: len as i16,
                };
                let mut write = true;
                if i == 0 {
                    rsp.flags |= csum_flags;
                    if !extras.is_empty() {
                        rsp.flags |= NETRXF_EXTRA_INFO;
                    }
                    match first_fault {
                        Some(Fault::RxId(id)) => rsp.id = id,
                        Some(Fault::RxStatus(st)) => {
                            rsp.status = st;
                            write = false;
                        }
                        Some(Fault::RxOffset(o)) => {
                            rsp.offset = o;
                            write = false;
                        }
                        Some(Fault::RxFlags(fl)) => rsp.flags |= fl,
                        _ => {}
                    }
                }
                if write {
                    let data = &frame[pos..pos + len];
                    self.with_grant(req.gref, true, |m| m.write(offset, data));
                }
                pos += len;
                let _ = self.rx.queue_response(|m, o| rsp.write(m, o));
                if i == 0 {
                    // Extras go right after the first data slot (netback: "Extras must go
                    // after the first data slot"), each in a slot of its own.
                    for e in &extras {
                        if self.rx_reqs.pop_front().is_some() {
                            let _ = self.rx.queue_response(|m, o| m.write(o, &e.emit()));
                        }
                    }
                }
            }
            progress = true;
        }
        if self.publish(1) {
            self.guest_notifications += 1;
        }
        progress
    }
}

impl Drop for SimNetback {
    fn drop(&mut self) {
        self.detach();
    }
}

/// A frame the guest sent, lent to the peer host's stack.
#[derive(Debug)]
pub struct PeerRxToken(Vec<u8>);

impl phy::RxToken for PeerRxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

/// Room for the peer host to send a frame to the guest.
#[derive(Debug)]
pub struct PeerTxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::TxToken for PeerTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

/// The peer host's NIC: receives what the guest sent, transmits to the guest.
impl Device for SimNetback {
    type RxToken<'a> = PeerRxToken;
    type TxToken<'a> = PeerTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.from_guest.pop_front()?;
        Some((PeerRxToken(frame), PeerTxToken(&mut self.to_guest)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        Some(PeerTxToken(&mut self.to_guest))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps
    }
}

/// What the simulated backend publishes in xenstore.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// The vif's MAC, written to both the frontend and backend directories (as the toolstack
    /// does).
    pub mac: String,
    /// `feature-sg`.
    pub sg: bool,
    /// `feature-rx-copy`.
    pub rx_copy: bool,
    /// `feature-gso-tcpv4` (transmit GSO accepted from the guest).
    pub gso: bool,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            mac: String::from("00:16:3e:00:00:01"),
            sg: true,
            rx_copy: true,
            gso: false,
        }
    }
}

/// The backend's xenstore half, as a [`Sim`](xen::xenstore::sim::Sim) peer for the device at
/// `fe`/`be` (from [`Store::add_device`]): publishes `mac` and features and goes InitWait; goes
/// Connected once the frontend is Connected (as Linux's netback, which ignores Initialised) with `tx-ring-ref`, `rx-ring-ref`,
/// `event-channel` and `request-rx-copy` written (Closing if any is missing); when the frontend
/// starts Closing, calls `on_close` (unmap the rings there) and goes Closed.
pub fn xenstore_backend(
    fe: String,
    be: String,
    config: BackendConfig,
    mut on_close: Box<dyn FnMut()>,
) -> impl FnMut(&mut Store) {
    move |st: &mut Store| {
        let state = |st: &Store, p: &str| st.read_str(&format!("{p}/state"));
        match (state(st, &fe).as_deref(), state(st, &be).as_deref()) {
            (_, Some("1")) => {
                st.write(&format!("{fe}/mac"), config.mac.as_bytes());
                st.write(&format!("{be}/mac"), config.mac.as_bytes());
                let flag = |b: bool| if b { &b"1"[..] } else { &b"0"[..] };
                st.write(&format!("{be}/feature-sg"), flag(config.sg));
                st.write(&format!("{be}/feature-rx-copy"), flag(config.rx_copy));
                st.write(&format!("{be}/feature-gso-tcpv4"), flag(config.gso));
                st.write(&format!("{be}/feature-rx-flip"), b"0");
                st.write(&format!("{be}/state"), b"2");
            }
            // Like Linux's netback: connect once the frontend is Connected (Initialised is
            // ignored).
            (Some("4"), Some("2")) => {
                let ok = [
                    "tx-ring-ref",
                    "rx-ring-ref",
                    "event-channel",
                    "request-rx-copy",
                ]
                .iter()
                .all(|k| st.read(&format!("{fe}/{k}")).is_some());
                st.write(&format!("{be}/state"), if ok { b"4" } else { b"5" });
            }
            (Some("5"), Some("2" | "4")) => {
                on_close();
                st.write(&format!("{be}/state"), b"6");
            }
            _ => {}
        }
    }
}
