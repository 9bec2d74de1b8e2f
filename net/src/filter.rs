//! RFC 5961 §3 in front of smoltcp: a reset must carry exactly the next expected sequence number.
//!
//! smoltcp 0.14 closes a synchronized connection on any RST whose sequence number lies inside
//! the receive window, so a blind attacker who knows the 4-tuple (a server's port, a client's
//! address, a guessable port) needs only `2^32 / window` tries to kill a connection; with our
//! 64 KiB windows that is 65536 frames, seconds on a LAN. RFC 5961 §3.2 narrows that to one
//! sequence number: an RST is honoured only when `SEG.SEQ == RCV.NXT`; an in-window RST with
//! any other sequence number "MUST" get a challenge ACK instead (a legitimate peer answers it
//! with the exact RST), and an out-of-window one is dropped (smoltcp already does that).
//!
//! smoltcp does not expose `RCV.NXT`, so [`RstFilter`] tracks it per connection from what the
//! peer sends: it learns the peer's next sequence number from the first segment of a
//! connection, and moves it on with every checksum-valid segment that extends it contiguously
//! (data and FIN count), so for an in-order stream it equals smoltcp's `RCV.NXT`. An RST on a
//! tracked connection passes only with that number; others are dropped and counted in
//! [`RstFilter::dropped`]. Connections are tracked exactly while smoltcp has a socket for them
//! ([`RstFilter::refresh`] before each poll), so the table is bounded by the socket set and
//! costs no memory under a flood.
//!
//! What this gives up: the challenge ACK. The filter only sees received frames, so a dropped
//! RST gets no reply. A legitimate peer's RST carries its `SND.NXT`, which is our `RCV.NXT`
//! unless its last segments were lost or reordered; such a reset is dropped, and the connection
//! lingers until our side sends again (the peer, having no connection, then answers with the
//! exact RST) or the app's idle timeout. Out-of-order data does not move the number: believing
//! it would let a blind attacker choose the number with one data segment anywhere ahead. An
//! RST before the filter knows the connection's numbers (in the poll where its socket appeared)
//! passes. An on-path attacker sees the numbers and can always reset: RFC 5961 does not try to
//! stop that either.

use alloc::vec::Vec;
use smoltcp::iface::SocketSet;
use smoltcp::socket::{tcp, Socket};
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpEndpoint, IpProtocol, Ipv4Packet, Ipv6Packet,
    TcpPacket,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tuple {
    local: IpEndpoint,
    remote: IpEndpoint,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    tuple: Tuple,
    /// The peer's next sequence number as far as it has arrived in order (our `RCV.NXT`).
    nxt: Option<u32>,
}

/// Drops in-window resets that do not carry the exact next sequence number (see the module).
#[derive(Debug, Default)]
pub struct RstFilter {
    tracks: Vec<Track>,
    /// The previous poll's list, kept for its allocation.
    spare: Vec<Track>,
    /// Whether TCP checksums are still to be verified (smoltcp will): then a segment with a bad
    /// one teaches nothing. False when the device has verified or trusted them (netfront with
    /// checksum offload: dom0's own packets arrive with blank checksums).
    verify: bool,
    /// Resets dropped so far.
    pub dropped: u64,
}

/// `a < b` in sequence space.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// What the filter needs from a TCP segment addressed to us.
struct Seg {
    tuple: Tuple,
    seq: u32,
    /// Sequence space it occupies (SYN + data + FIN).
    len: u32,
    syn: bool,
    rst: bool,
}

impl RstFilter {
    /// Tracks exactly the connections smoltcp has a socket for (any state with a remote end,
    /// so from SYN-RECEIVED / SYN-SENT on), keeping what it learnt about those already known.
    /// `verify`: whether received TCP checksums are still unchecked (the device's
    /// `capabilities().checksum.tcp.rx()`, which is what smoltcp goes by).
    pub fn refresh(&mut self, sockets: &SocketSet<'_>, verify: bool) {
        self.verify = verify;
        // Rebuilt in the socket set's order, which is stable, so the track of each socket is
        // usually the next one in the old list: linear per poll, plus a scan per new socket.
        let old = core::mem::take(&mut self.tracks);
        self.tracks = core::mem::take(&mut self.spare);
        self.tracks.clear();
        let mut next = 0;
        for (_, s) in sockets.iter() {
            let Socket::Tcp(t) = s else { continue };
            if matches!(t.state(), tcp::State::Closed | tcp::State::Listen) {
                continue;
            }
            let (Some(local), Some(remote)) = (t.local_endpoint(), t.remote_endpoint()) else {
                continue;
            };
            let tuple = Tuple { local, remote };
            match old[next..].iter().position(|k| k.tuple == tuple) {
                Some(i) => {
                    self.tracks.push(old[next + i]);
                    next += i + 1;
                }
                None => self.tracks.push(Track { tuple, nxt: None }),
            }
        }
        self.spare = old;
    }

    /// Whether smoltcp may see `frame` (false: an RST on a tracked connection with a sequence
    /// number other than the expected one). Learns the expected number from other segments.
    pub fn admit(&mut self, frame: &[u8]) -> bool {
        match tcp_in(frame) {
            Some((src, dst, t)) => self.admit_tcp(src, dst, &t),
            None => true,
        }
    }

    /// [`admit`](Self::admit) for a TCP segment already found in its frame (by [`tcp_in`]):
    /// the gate parses each frame once for this and its own SYN check.
    pub(crate) fn admit_tcp(
        &mut self,
        src: IpAddress,
        dst: IpAddress,
        t: &TcpPacket<&[u8]>,
    ) -> bool {
        if self.tracks.is_empty() {
            return true;
        }
        let Some(seg) = segment(src, dst, t, self.verify) else {
            return true;
        };
        let Some(k) = self.tracks.iter_mut().find(|k| k.tuple == seg.tuple) else {
            return true;
        };
        let end = seg.seq.wrapping_add(seg.len);
        if seg.rst {
            let exact = k.nxt.is_none() || k.nxt == Some(seg.seq);
            if !exact {
                self.dropped += 1;
            }
            return exact;
        }
        match k.nxt {
            // The connection's first segment: the SYN (its number + 1 follows), or the first
            // ACK of a handshake that completed in the poll that created the socket.
            None => k.nxt = Some(end),
            // In order (possibly overlapping what came before): the stream moves on.
            Some(nxt) if !seg.syn && !before(nxt, seg.seq) && before(nxt, end) => {
                k.nxt = Some(end);
            }
            Some(_) => {}
        }
        true
    }

    /// Whether a SYN (no ACK) from `src` to `dst` belongs to a connection smoltcp already has:
    /// a duplicate (a retransmission that crossed our SYN-ACK, or a SYN replayed by the
    /// activator after the guest had the original). smoltcp hands a SYN to the first socket
    /// that accepts it, and a listening slot earlier in the set accepts any SYN for its port:
    /// it would open a second half-open connection on the same 4-tuple, whose SYN-ACK the
    /// client answers with an ACK for the real one, which that slot refuses with an RST that
    /// the client takes as a reset of its real connection. The gate drops such SYNs.
    pub(crate) fn is_duplicate_syn(
        &self,
        src: IpAddress,
        dst: IpAddress,
        t: &TcpPacket<&[u8]>,
    ) -> bool {
        if !t.syn() || t.ack() || t.rst() || self.tracks.is_empty() {
            return false;
        }
        let tuple = Tuple {
            local: IpEndpoint::new(dst, t.dst_port()),
            remote: IpEndpoint::new(src, t.src_port()),
        };
        self.tracks.iter().any(|k| k.tuple == tuple)
    }

    /// Connections tracked now.
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }
}

/// The TCP segment in an Ethernet frame (IPv4 unfragmented, or IPv6 after hop-by-hop,
/// destination-options and routing headers), with its source and destination addresses.
pub(crate) fn tcp_in(frame: &[u8]) -> Option<(IpAddress, IpAddress, TcpPacket<&[u8]>)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (src, dst, bytes): (IpAddress, IpAddress, &[u8]) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 || ip.more_frags() {
                return None;
            }
            let hl = usize::from(ip.header_len());
            let body = eth.payload().get(hl..usize::from(ip.total_len()))?;
            (ip.src_addr().into(), ip.dst_addr().into(), body)
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            let mut nh = ip.next_header();
            let mut rest = ip.payload();
            // smoltcp follows these (fragments it drops: no reassembly is built in).
            while matches!(
                nh,
                IpProtocol::HopByHop | IpProtocol::Ipv6Opts | IpProtocol::Ipv6Route
            ) {
                let hdr = rest.get(..2)?;
                let len = 8 + 8 * usize::from(hdr[1]);
                nh = IpProtocol::from(hdr[0]);
                rest = rest.get(len..)?;
            }
            if nh != IpProtocol::Tcp {
                return None;
            }
            (ip.src_addr().into(), ip.dst_addr().into(), rest)
        }
        _ => return None,
    };
    Some((src, dst, TcpPacket::new_checked(bytes).ok()?))
}

/// What the filter needs from a TCP segment, if its checksum is valid or not to be checked.
fn segment(src: IpAddress, dst: IpAddress, t: &TcpPacket<&[u8]>, verify: bool) -> Option<Seg> {
    if verify && !t.verify_checksum(&src, &dst) {
        return None;
    }
    let len = t.payload().len() as u32 + u32::from(t.syn()) + u32::from(t.fin());
    Some(Seg {
        tuple: Tuple {
            local: IpEndpoint::new(dst, t.dst_port()),
            remote: IpEndpoint::new(src, t.src_port()),
        },
        seq: t.seq_number().0 as u32,
        len,
        syn: t.syn(),
        rst: t.rst(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetRepr, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber,
    };

    const US: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
    const PEER: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);

    fn tuple() -> Tuple {
        Tuple {
            local: IpEndpoint::new(US.into(), 7),
            remote: IpEndpoint::new(PEER.into(), 40000),
        }
    }

    /// A frame from PEER:40000 to US:7.
    fn frame(control: TcpControl, seq: u32, payload: &[u8]) -> Vec<u8> {
        frame_from(40000, control, seq, payload)
    }

    fn frame_from(port: u16, control: TcpControl, seq: u32, payload: &[u8]) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: port,
            dst_port: 7,
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: (control != TcpControl::Rst).then_some(TcpSeqNumber(1)),
            window_len: 1024,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: PEER,
            dst_addr: US,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf = vec![0u8; 14 + 20 + tcp.buffer_len()];
        let mut e = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut e);
        let mut i = Ipv4Packet::new_unchecked(e.payload_mut());
        ip.emit(&mut i, &ChecksumCapabilities::default());
        let mut t = TcpPacket::new_unchecked(i.payload_mut());
        tcp.emit(
            &mut t,
            &PEER.into(),
            &US.into(),
            &ChecksumCapabilities::default(),
        );
        buf
    }

    fn tracking() -> RstFilter {
        let mut f = RstFilter {
            verify: true,
            ..Default::default()
        };
        f.tracks.push(Track {
            tuple: tuple(),
            nxt: None,
        });
        f
    }

    /// A SYN (no ACK) from PEER:`port` to US:7.
    fn syn_from(port: u16) -> Vec<u8> {
        let mut f = frame_from(port, TcpControl::Syn, 5, b"");
        let mut t = TcpPacket::new_unchecked(&mut f[34..]);
        t.set_ack(false);
        t.fill_checksum(&PEER.into(), &US.into());
        f
    }

    #[test]
    fn a_syn_for_a_connection_already_there_is_a_duplicate() {
        let f = tracking();
        let dup = syn_from(40000);
        let (src, dst, t) = tcp_in(&dup).unwrap();
        assert!(f.is_duplicate_syn(src, dst, &t));
        let new = syn_from(40001);
        let (src, dst, t) = tcp_in(&new).unwrap();
        assert!(
            !f.is_duplicate_syn(src, dst, &t),
            "another port: a new connection"
        );
        let synack = frame(TcpControl::Syn, 5, b"");
        let (src, dst, t) = tcp_in(&synack).unwrap();
        assert!(!f.is_duplicate_syn(src, dst, &t), "a SYN|ACK is not a SYN");
        let none = RstFilter::default();
        let (src, dst, t) = tcp_in(&dup).unwrap();
        assert!(!none.is_duplicate_syn(src, dst, &t), "nothing tracked");
    }

    #[test]
    fn only_the_exact_reset_passes_once_the_stream_is_known() {
        let mut f = tracking();
        assert!(f.admit(&frame(TcpControl::None, 1000, b"")));
        assert!(f.admit(&frame(TcpControl::Psh, 1000, b"hello")));
        for off in [1u32, 2, 100, 65535, 0xffff_ffff] {
            assert!(!f.admit(&frame(TcpControl::Rst, 1005u32.wrapping_add(off), b"")));
        }
        assert_eq!(f.dropped, 5);
        assert!(f.admit(&frame(TcpControl::Rst, 1005, b"")));
    }

    #[test]
    fn the_syn_and_a_fin_take_one_sequence_number_each() {
        let mut f = tracking();
        assert!(f.admit(&frame(TcpControl::Syn, 499, b"")));
        assert!(f.admit(&frame(TcpControl::None, 500, b"")));
        assert!(f.admit(&frame(TcpControl::Fin, 500, b"ab")));
        assert!(!f.admit(&frame(TcpControl::Rst, 502, b"")));
        assert!(f.admit(&frame(TcpControl::Rst, 503, b"")));
    }

    #[test]
    fn retransmissions_overlaps_and_losses_keep_the_right_number() {
        let mut f = tracking();
        f.admit(&frame(TcpControl::None, 0, b""));
        f.admit(&frame(TcpControl::Psh, 0, b"0123456789"));
        f.admit(&frame(TcpControl::Psh, 0, b"0123456789")); // retransmitted
        f.admit(&frame(TcpControl::Psh, 5, b"56789abcde")); // overlapping, extends to 15
        f.admit(&frame(TcpControl::Psh, 20, b"klmno")); // after a loss: 15..20 missing
        assert_eq!(f.tracks[0].nxt, Some(15));
        assert!(!f.admit(&frame(TcpControl::Rst, 25, b"")));
        assert!(!f.admit(&frame(TcpControl::Rst, 20, b"")));
        // The hole is filled by a retransmission covering both.
        f.admit(&frame(TcpControl::Psh, 15, b"fghijklmno"));
        assert_eq!(f.tracks[0].nxt, Some(25));
        assert!(f.admit(&frame(TcpControl::Rst, 25, b"")));
    }

    #[test]
    fn in_window_syns_and_far_segments_do_not_move_the_numbers() {
        let mut f = tracking();
        f.admit(&frame(TcpControl::None, 1 << 31, b""));
        f.admit(&frame(TcpControl::Syn, (1 << 31) + 5, b""));
        f.admit(&frame(
            TcpControl::Psh,
            (1 << 31) + (1 << 25),
            b"far beyond",
        ));
        f.admit(&frame(TcpControl::Psh, (1 << 31) - 100, b"old"));
        assert_eq!(f.tracks[0].nxt, Some(1 << 31));
    }

    #[test]
    fn bad_checksums_teach_nothing_and_other_connections_pass() {
        let mut f = tracking();
        f.admit(&frame(TcpControl::None, 7, b""));
        let mut bad = frame(TcpControl::Psh, 7, b"xyz");
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(f.admit(&bad));
        assert_eq!(f.tracks[0].nxt, Some(7));
        // A device that verified (or trusts) checksums itself: blank ones count.
        f.verify = false;
        assert!(f.admit(&bad));
        assert_eq!(f.tracks[0].nxt, Some(10));
        f.verify = true;
        // Not tracked: another client port.
        assert!(f.admit(&frame_from(40001, TcpControl::Rst, 99, b"")));
        assert_eq!(f.dropped, 0);
        // Not TCP at all, or not even a frame.
        assert!(f.admit(&[]));
        assert!(f.admit(&[0u8; 60]));
    }

    #[test]
    fn before_connections_are_known_resets_pass() {
        let mut f = tracking();
        assert!(f.admit(&frame(TcpControl::Rst, 12345, b"")));
        let mut none = RstFilter::default();
        assert!(none.admit(&frame(TcpControl::Rst, 12345, b"")));
    }
}
