//! Driver tests against the simulated netback: TX splitting, RX reassembly, one test per backend
//! misbehaviour, backpressure, and a fuzz-style stream of random responses.

use netfront::sim::{Fault, Rng, RxCsum, SimNetback};
use netfront::wire::*;
use netfront::{Config, Error, Netfront, MTU};
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Address, Ipv6Packet, Ipv6Repr,
    TcpPacket, UdpPacket,
};
use xen::hal::SimHal;
use xen::ring::{BackRing, RingError};

const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 2];

fn setup(config: Config) -> (Netfront<SimHal>, SimNetback, SimHal) {
    let hal = SimHal::new();
    let nf = Netfront::new(hal.clone(), 0, MAC, config).unwrap();
    let mut nb = SimNetback::attach(&hal, 0, nf.tx_ring_ref(), nf.rx_ring_ref()).unwrap();
    nb.step();
    (nf, nb, hal)
}

/// An Ethernet-looking frame of `len` bytes, contents derived from `seed`.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn deliver(nf: &mut Netfront<SimHal>, nb: &mut SimNetback, f: &[u8]) -> Result<Vec<u8>, Error> {
    nb.send_to_guest(f);
    nb.step();
    let got = nf.receive()?.map(|b| b.to_vec());
    got.ok_or(Error::Internal)
}

fn assert_rx_works(nf: &mut Netfront<SimHal>, nb: &mut SimNetback, seed: u8) {
    let f = frame(MTU, seed);
    assert_eq!(deliver(nf, nb, &f).unwrap(), f, "the driver still receives");
    nb.step();
}

fn assert_tx_works(nf: &mut Netfront<SimHal>, nb: &mut SimNetback, seed: u8) {
    let f = frame(600, seed);
    nf.send(&f).unwrap();
    nb.step();
    assert_eq!(
        nb.from_guest.pop_back().unwrap(),
        f,
        "the driver still sends"
    );
    nf.reclaim_tx().unwrap();
}

#[test]
fn tx_frame_straddling_a_page_is_split_into_slots_within_pages() {
    let (mut nf, mut nb, _) = setup(Config::default());
    let a = frame(4096 - 200, 1);
    let b = frame(1514, 2);
    nf.send(&a).unwrap();
    nf.send(&b).unwrap();
    nb.step();
    assert_eq!(nb.violations, []);
    assert_eq!(nb.from_guest.len(), 2);
    assert_eq!(nb.from_guest[0], a);
    assert_eq!(nb.from_guest[1], b, "reassembled byte for byte");
    let s = &nb.tx_slots;
    assert_eq!(s.len(), 3);
    assert_eq!((s[0].offset, s[0].size, s[0].flags), (0, 3896, 0));
    assert_eq!(
        (s[1].offset, s[1].size, s[1].flags),
        (3896, 1514, NETTXF_MORE_DATA),
        "first slot: total size"
    );
    assert_eq!((s[2].offset, s[2].size, s[2].flags), (0, 1314, 0));
    assert_ne!(s[1].gref, s[2].gref);
    assert_eq!(nf.reclaim_tx().unwrap(), 3);
    assert_eq!(nf.tx_in_flight(), 0);
    assert_eq!(nf.stats().tx_packets, 2);
}

#[test]
fn no_tx_slot_ever_crosses_a_page() {
    let (mut nf, mut nb, _) = setup(Config {
        tx_pages: 3,
        ..Config::default()
    });
    let mut sent = vec![];
    let mut seed = 0u32;
    for i in 0..2000 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let len = 14 + (seed >> 8) as usize % (MTU - 13);
        let f = frame(len, i as u8);
        nf.send(&f).unwrap();
        sent.push(f);
        nb.step();
        nf.reclaim_tx().unwrap();
    }
    assert_eq!(nb.violations, []);
    assert!(nb
        .tx_slots
        .iter()
        .all(|s| s.flags & NETTXF_MORE_DATA != 0 || s.offset as usize + s.size as usize <= 4096));
    assert!(nb.tx_slots.len() > 2000, "some frames were split");
    assert_eq!(Vec::from(nb.from_guest.clone()), sent);
}

#[test]
fn without_backend_sg_frames_stay_within_one_page() {
    let (mut nf, mut nb, _) = setup(Config {
        sg: false,
        ..Config::default()
    });
    nf.send(&frame(4000, 1)).unwrap();
    nf.send(&frame(1514, 2)).unwrap();
    nb.step();
    assert_eq!(nb.tx_slots.len(), 2);
    assert_eq!((nb.tx_slots[1].offset, nb.tx_slots[1].flags), (0, 0));
    assert_eq!(nb.from_guest[1], frame(1514, 2));
    assert_eq!(
        nf.send(&frame(5000, 3)),
        Err(Error::TxBadLength { len: 5000 })
    );
}

#[test]
fn bad_tx_lengths_are_refused() {
    let (mut nf, _nb, _) = setup(Config::default());
    assert_eq!(nf.send(&[0; 13]), Err(Error::TxBadLength { len: 13 }));
    assert_eq!(
        nf.send(&vec![0; 70_000]),
        Err(Error::TxBadLength { len: 70_000 })
    );
}

#[test]
fn rx_multi_slot_packets_are_reassembled() {
    let (mut nf, mut nb, _) = setup(Config::default());
    nb.inject(Fault::RxSplit(100));
    let f = frame(MTU, 7);
    assert_eq!(deliver(&mut nf, &mut nb, &f).unwrap(), f);
    assert_eq!(nf.stats().rx_slots, 16);
    // Data at an offset near the end of the first page: two slots.
    nb.rx_offset = 4000;
    let f = frame(MTU, 8);
    assert_eq!(deliver(&mut nf, &mut nb, &f).unwrap(), f);
    assert_eq!(nf.stats().rx_slots, 18);
    // A jumbo frame over many pages.
    nb.rx_offset = 0;
    let f = frame(9000, 9);
    assert_eq!(deliver(&mut nf, &mut nb, &f).unwrap(), f);
    assert_eq!(nf.stats().rx_packets, 3);
    assert_eq!(nf.stats().malformed, 0);
}

#[test]
fn rx_packets_split_across_polls_are_kept() {
    let (mut nf, mut nb, _) = setup(Config {
        rx_buffers: 4,
        ..Config::default()
    });
    // 3 slots, only 4 buffers: then a 6-slot packet must wait for reposted buffers.
    nb.inject(Fault::RxSplit(600));
    let f = frame(MTU, 1);
    assert_eq!(deliver(&mut nf, &mut nb, &f).unwrap(), f);
    nb.step();
    nb.inject(Fault::RxSplit(300));
    nb.send_to_guest(&frame(MTU, 2));
    nb.step();
    assert_eq!(
        nb.to_guest.len(),
        1,
        "not enough buffers posted: the backend waits"
    );
    assert_eq!(nf.receive().unwrap(), None);
}

#[test]
fn rx_extra_info_slots_of_unknown_types_are_skipped() {
    let (mut nf, mut nb, _) = setup(Config::default());
    // A hash extra, an XDP one (type 5, newer than our netif.h) and one no header defines.
    for kind in [EXTRA_TYPE_HASH, 5, 200] {
        nb.inject(Fault::RxExtra(ExtraInfo {
            kind,
            flags: 0,
            data: [kind; 6],
        }));
    }
    nb.inject(Fault::RxSplit(1000));
    let f = frame(MTU, 3);
    assert_eq!(deliver(&mut nf, &mut nb, &f).unwrap(), f);
    assert_eq!(nf.stats().rx_slots, 2 + 3, "two data slots, three extras");
    assert_eq!(nf.stats().rx_gso, 0);
    nb.step();
    assert_rx_works(&mut nf, &mut nb, 4);
}

// ---- One test per backend misbehaviour: its error, then the driver goes on. ----------------

fn tx_fault(fault: Fault) -> (Result<usize, Error>, Netfront<SimHal>, SimNetback) {
    let (mut nf, mut nb, _) = setup(Config::default());
    nb.inject(fault);
    nf.send(&frame(100, 1)).unwrap();
    nb.step();
    let r = nf.reclaim_tx();
    (r, nf, nb)
}

#[test]
fn tx_response_with_an_id_never_requested() {
    let (r, mut nf, mut nb) = tx_fault(Fault::TxId(200));
    assert_eq!(r, Err(Error::TxBadId { id: 200 }));
    assert_eq!(nf.stats().malformed, 1);
    assert_tx_works(&mut nf, &mut nb, 2);
}

#[test]
fn tx_response_with_an_id_out_of_range() {
    let (r, mut nf, mut nb) = tx_fault(Fault::TxId(0xffff));
    assert_eq!(r, Err(Error::TxBadId { id: 0xffff }));
    assert_tx_works(&mut nf, &mut nb, 2);
}

#[test]
fn tx_failed_by_the_backend() {
    let (r, mut nf, mut nb) = tx_fault(Fault::TxStatus(NETIF_RSP_DROPPED));
    assert!(matches!(r, Err(Error::TxFailed { status: -2, .. })));
    assert_eq!(nf.stats().tx_failed, 1);
    assert_eq!(nf.tx_in_flight(), 0, "the id came back all the same");
    assert_tx_works(&mut nf, &mut nb, 2);
}

#[test]
fn tx_response_with_a_bad_status() {
    let (r, mut nf, mut nb) = tx_fault(Fault::TxStatus(NETIF_RSP_NULL));
    assert!(matches!(r, Err(Error::TxBadStatus { status: 1, .. })));
    let (r, _, _) = tx_fault(Fault::TxStatus(1234));
    assert!(matches!(r, Err(Error::TxBadStatus { status: 1234, .. })));
    assert_tx_works(&mut nf, &mut nb, 2);
}

#[test]
fn tx_garbage_response_index() {
    let (r, mut nf, mut nb) = tx_fault(Fault::TxRspProd(0x8000_0000));
    assert!(matches!(
        r,
        Err(Error::TxRing(RingError::BadResponseIndex { .. }))
    ));
    // The backend publishes a sane index again: the completion goes through.
    nb.step();
    assert_eq!(nf.reclaim_tx(), Ok(1));
    assert_tx_works(&mut nf, &mut nb, 2);
}

fn rx_fault(fault: Fault, f: &[u8]) -> (Result<Vec<u8>, Error>, Netfront<SimHal>, SimNetback) {
    let (mut nf, mut nb, _) = setup(Config::default());
    nb.inject(fault);
    let r = deliver(&mut nf, &mut nb, f);
    nb.step();
    (r, nf, nb)
}

#[test]
fn rx_response_with_the_wrong_id() {
    let (r, mut nf, mut nb) = rx_fault(Fault::RxId(77), &frame(MTU, 1));
    assert_eq!(
        r,
        Err(Error::RxBadId {
            id: 77,
            expected: 0
        })
    );
    assert_eq!(nf.stats().rx_dropped, 1);
    assert_rx_works(&mut nf, &mut nb, 2);
    assert_eq!(nf.rx_posted(), 64, "every buffer reposted");
}

#[test]
fn rx_bad_first_slot_of_a_multi_slot_packet_drops_the_whole_packet() {
    let (mut nf, mut nb, _) = setup(Config::default());
    nb.inject(Fault::RxId(77));
    nb.inject(Fault::RxSplit(200));
    assert!(matches!(
        deliver(&mut nf, &mut nb, &frame(MTU, 1)),
        Err(Error::RxBadId { .. })
    ));
    // The rest of that packet is discarded, not glued to the next one.
    assert_rx_works(&mut nf, &mut nb, 2);
    assert_eq!(nf.stats().rx_packets, 1);
}

#[test]
fn rx_response_with_an_error_status() {
    let (r, mut nf, mut nb) = rx_fault(Fault::RxStatus(NETIF_RSP_ERROR), &frame(MTU, 1));
    assert_eq!(r, Err(Error::RxStatus { id: 0, status: -1 }));
    assert_rx_works(&mut nf, &mut nb, 2);
}

#[test]
fn rx_data_past_the_end_of_the_page() {
    let (r, mut nf, mut nb) = rx_fault(Fault::RxOffset(4000), &frame(MTU, 1));
    assert_eq!(
        r,
        Err(Error::RxBadOffset {
            id: 0,
            offset: 4000,
            size: MTU as u16
        })
    );
    assert_rx_works(&mut nf, &mut nb, 2);
}

#[test]
fn rx_garbage_response_index() {
    let (r, mut nf, mut nb) = rx_fault(Fault::RxRspProd(0xdead_beef), &frame(MTU, 1));
    assert!(matches!(
        r,
        Err(Error::RxRing(RingError::BadResponseIndex { .. }))
    ));
    // Healed by the backend's next publish: the frame that was there arrives.
    assert_eq!(
        nf.receive().unwrap().map(|b| b.to_vec()),
        Some(frame(MTU, 1))
    );
    assert_rx_works(&mut nf, &mut nb, 2);
}

#[test]
fn rx_checksum_blank_is_dropped_when_offload_is_refused() {
    let (mut nf, mut nb, _) = setup(Config {
        csum_offload: false,
        ..Config::default()
    });
    nb.inject(Fault::RxFlags(NETRXF_CSUM_BLANK));
    let r = deliver(&mut nf, &mut nb, &frame(MTU, 1));
    assert_eq!(r, Err(Error::RxChecksumBlank));
    assert_eq!((nf.stats().rx_dropped, nf.stats().malformed), (1, 1));
    nb.step();
    // A blank TCP packet too: offload refused, nothing with a blank checksum gets in.
    nb.inject(Fault::RxFlags(NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED));
    let (t, _) = l4_frame(Ip::V4, IpProtocol::Tcp, b"blank");
    assert_eq!(deliver(&mut nf, &mut nb, &t), Err(Error::RxChecksumBlank));
    nb.step();
    // data_validated alone is harmless: smoltcp verifies the checksums anyway.
    nb.inject(Fault::RxFlags(NETRXF_DATA_VALIDATED));
    assert_rx_works(&mut nf, &mut nb, 2);
    // And the driver verifies nothing: an unflagged bad checksum goes up, for smoltcp to drop.
    let (mut bad, at) = l4_frame(Ip::V4, IpProtocol::Udp, b"bad");
    bad[at] ^= 0x40;
    assert_eq!(deliver(&mut nf, &mut nb, &bad).unwrap(), bad);
    assert_eq!(nf.stats().rx_bad_checksum, 0);
}

// ---- RX checksum offload (Config::csum_offload, the default). -------------------------------

#[derive(Debug, Clone, Copy)]
enum Ip {
    V4,
    V6,
    /// IPv6 with a hop-by-hop header before the TCP/UDP header.
    V6Hbh,
}

/// An Ethernet frame carrying a TCP or UDP packet with `payload` and a correct checksum, and
/// the offset of its checksum field.
fn l4_frame(ip: Ip, proto: IpProtocol, payload: &[u8]) -> (Vec<u8>, usize) {
    let (src, dst): (IpAddress, IpAddress) = match ip {
        Ip::V4 => (
            Ipv4Address::new(10, 0, 0, 1).into(),
            Ipv4Address::new(10, 0, 0, 2).into(),
        ),
        Ip::V6 | Ip::V6Hbh => (
            Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 1).into(),
            Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 2).into(),
        ),
    };
    let mut l4 = match proto {
        IpProtocol::Tcp => {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&7u16.to_be_bytes());
            h[2..4].copy_from_slice(&49152u16.to_be_bytes());
            h[4..8].copy_from_slice(&1000u32.to_be_bytes());
            h[8..12].copy_from_slice(&2000u32.to_be_bytes());
            h[12] = 5 << 4;
            h[13] = 0x18; // PSH|ACK
            h[14..16].copy_from_slice(&8192u16.to_be_bytes());
            h
        }
        _ => {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&7u16.to_be_bytes());
            h[2..4].copy_from_slice(&49152u16.to_be_bytes());
            h[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            h
        }
    };
    l4.extend_from_slice(payload);
    let field = if proto == IpProtocol::Tcp { 16 } else { 6 };
    if proto == IpProtocol::Tcp {
        TcpPacket::new_unchecked(&mut l4).fill_checksum(&src, &dst);
    } else {
        UdpPacket::new_unchecked(&mut l4).fill_checksum(&src, &dst);
    }
    let mut f = vec![0u8; 14];
    f[0..6].copy_from_slice(&MAC);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    let (ip_hdr, ext) = match (ip, src, dst) {
        (Ip::V4, IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut h = vec![0u8; 20];
            Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len: l4.len(),
                hop_limit: 64,
            }
            .emit(&mut Ipv4Packet::new_unchecked(&mut h), &Default::default());
            (h, vec![])
        }
        (_, IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            // Hop-by-hop: next header, length 0 (8 bytes), one PadN option of 4 bytes.
            let ext = match ip {
                Ip::V6Hbh => vec![u8::from(proto), 0, 1, 4, 0, 0, 0, 0],
                _ => vec![],
            };
            let mut h = vec![0u8; 40];
            Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: if ext.is_empty() {
                    proto
                } else {
                    IpProtocol::HopByHop
                },
                payload_len: ext.len() + l4.len(),
                hop_limit: 64,
            }
            .emit(&mut Ipv6Packet::new_unchecked(&mut h));
            (h, ext)
        }
        _ => unreachable!(),
    };
    let at = 14 + ip_hdr.len() + ext.len() + field;
    f.extend_from_slice(&ip_hdr);
    f.extend_from_slice(&ext);
    f.extend_from_slice(&l4);
    (f, at)
}

const ALL: [(Ip, IpProtocol); 6] = [
    (Ip::V4, IpProtocol::Tcp),
    (Ip::V4, IpProtocol::Udp),
    (Ip::V6, IpProtocol::Tcp),
    (Ip::V6, IpProtocol::Udp),
    (Ip::V6Hbh, IpProtocol::Tcp),
    (Ip::V6Hbh, IpProtocol::Udp),
];

#[test]
fn rx_unflagged_packets_with_good_checksums_pass() {
    let (mut nf, mut nb, _) = setup(Config::default());
    assert!(nf.csum_offload());
    for (ip, proto) in ALL {
        let (f, _) = l4_frame(ip, proto, b"good checksum");
        assert_eq!(deliver(&mut nf, &mut nb, &f).unwrap(), f, "{ip:?} {proto}");
        nb.step();
    }
    // Frames that are not TCP/UDP are not the driver's to judge.
    assert_rx_works(&mut nf, &mut nb, 1);
    let st = nf.stats();
    assert_eq!(
        (st.rx_packets, st.rx_dropped, st.rx_bad_checksum),
        (7, 0, 0)
    );
}

#[test]
fn rx_unflagged_packets_with_bad_checksums_are_dropped_and_counted() {
    let (mut nf, mut nb, _) = setup(Config::default());
    for (i, (ip, proto)) in ALL.into_iter().enumerate() {
        let (mut f, at) = l4_frame(ip, proto, b"bad checksum");
        f[at + 1] ^= 0x01;
        assert_eq!(
            deliver(&mut nf, &mut nb, &f),
            Err(Error::RxBadChecksum),
            "{ip:?} {proto}"
        );
        nb.step();
        // A corrupted payload byte is caught the same way.
        let (mut f, _) = l4_frame(ip, proto, b"bad payload");
        *f.last_mut().unwrap() ^= 0x80;
        assert_eq!(deliver(&mut nf, &mut nb, &f), Err(Error::RxBadChecksum));
        nb.step();
        assert_eq!(nf.stats().rx_bad_checksum, 2 * (i as u64 + 1));
    }
    // A TCP/UDP packet too short for its header cannot be verified: dropped too.
    let (f, _) = l4_frame(Ip::V4, IpProtocol::Tcp, b"");
    let mut short = f[..14 + 20 + 10].to_vec();
    short[14 + 3] = 30; // IPv4 total length: 20 + 10
    short[14 + 10..14 + 12].fill(0);
    let sum = !smoltcp::wire::checksum::data(&short[14..34]);
    short[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(deliver(&mut nf, &mut nb, &short), Err(Error::RxBadChecksum));
    nb.step();
    let st = nf.stats();
    assert_eq!(st.rx_bad_checksum, 13);
    assert_eq!(st.rx_dropped, 13);
    assert_eq!(st.malformed, 0, "not the backend's fault");
    assert!(!Error::RxBadChecksum.is_backend_fault());
    assert_rx_works(&mut nf, &mut nb, 3);
}

#[test]
fn rx_blank_and_validated_packets_are_trusted() {
    let (mut nf, mut nb, _) = setup(Config::default());
    for flags in [
        NETRXF_CSUM_BLANK,
        NETRXF_DATA_VALIDATED,
        NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED,
    ] {
        for (ip, proto) in ALL {
            // The checksum field holds anything (blank: a partial sum): handed up untouched.
            let (mut f, at) = l4_frame(ip, proto, b"trusted");
            f[at..at + 2].copy_from_slice(&[0x12, 0x34]);
            nb.inject(Fault::RxFlags(flags));
            nb.inject(Fault::RxSplit(30));
            assert_eq!(deliver(&mut nf, &mut nb, &f).unwrap(), f, "{flags} {ip:?}");
            nb.step();
        }
    }
    // The simulated netback's modes: blank (partial sum) and validated go in, corrupt does not.
    for (mode, ok) in [
        (RxCsum::Blank, true),
        (RxCsum::Validated, true),
        (RxCsum::AsIs, true),
        (RxCsum::Corrupt, false),
    ] {
        nb.rx_csum = mode;
        for (ip, proto) in ALL {
            let (f, at) = l4_frame(ip, proto, b"mode");
            let r = deliver(&mut nf, &mut nb, &f);
            nb.step();
            if ok {
                let got = r.unwrap();
                assert_eq!(got[..at], f[..at], "{mode:?}");
                assert_eq!(got[at + 2..], f[at + 2..], "{mode:?}");
                if mode == RxCsum::Blank {
                    assert_ne!(got, f, "the checksum field holds the partial sum");
                }
            } else {
                assert_eq!(r, Err(Error::RxBadChecksum), "{mode:?} {ip:?} {proto}");
            }
        }
    }
    assert_eq!(nf.stats().rx_bad_checksum, 6);
}

#[test]
fn device_capabilities_follow_the_offload() {
    use smoltcp::phy::{Checksum, Device};
    let (nf, _, _) = setup(Config {
        tso: false,
        ..Config::default()
    });
    let c = nf.capabilities().checksum;
    assert!(matches!(c.tcp, Checksum::Tx) && matches!(c.udp, Checksum::Tx));
    assert_eq!(nf.capabilities().segmentation.tcpv4, None);
    // Transmit GSO (the default): smoltcp leaves TCP checksums to the driver.
    let (nf, _, _) = setup(Config::default());
    let caps = nf.capabilities();
    assert!(matches!(caps.checksum.tcp, Checksum::None));
    assert!(matches!(caps.checksum.udp, Checksum::Tx));
    assert_eq!(caps.segmentation.tcpv4.map(|n| n.get()), Some(32 * 1024));
    assert_eq!(nf.tso_max(), 32 * 1024, "half of the 16-page TX buffer");
    assert!(matches!(c.ipv4, Checksum::Both) && matches!(c.icmpv4, Checksum::Both));
    assert!(matches!(c.icmpv6, Checksum::Both));
    let (nf, _, _) = setup(Config {
        csum_offload: false,
        ..Config::default()
    });
    let c = nf.capabilities().checksum;
    assert!(matches!(c.tcp, Checksum::Rx) && matches!(c.udp, Checksum::Both));
}

#[test]
fn rx_truncated_frame_is_a_runt() {
    let (r, mut nf, mut nb) = rx_fault(Fault::RxSplit(4096), &frame(10, 1));
    assert_eq!(r, Err(Error::RxRunt { len: 10 }));
    let (r, _, _) = rx_fault(Fault::RxSplit(4096), &[]);
    assert_eq!(r, Err(Error::RxRunt { len: 0 }));
    assert_rx_works(&mut nf, &mut nb, 2);
}

#[test]
fn rx_packet_over_too_many_slots() {
    let (r, mut nf, mut nb) = rx_fault(Fault::RxSplit(1), &frame(40, 1));
    assert_eq!(r, Err(Error::RxTooManySlots));
    assert_rx_works(&mut nf, &mut nb, 2);
}

#[test]
fn rx_packet_too_long() {
    let (r, mut nf, mut nb) = rx_fault(Fault::RxSplit(4096), &frame(70_000, 1));
    assert_eq!(r, Err(Error::RxTooLong { len: 17 * 4096 }));
    const { assert!(netfront::MAX_RX_FRAME < 17 * 4096) };
    assert_rx_works(&mut nf, &mut nb, 2);
}

#[test]
fn rx_bad_extra_info() {
    let bad = ExtraInfo {
        kind: EXTRA_TYPE_NONE,
        ..ExtraInfo::default()
    };
    let (r, mut nf, mut nb) = rx_fault(Fault::RxExtra(bad), &frame(MTU, 1));
    assert_eq!(r, Err(Error::RxBadExtra { kind: 0 }));
    assert_rx_works(&mut nf, &mut nb, 2);
}

// ---- Receive GSO (feature-gso-tcpv4): super-frames as Linux's netback sends them. ----------

/// The largest TCP super-frame of `ip` (IP length 65,535 for IPv4, payload 65,535 for IPv6).
fn super_frame(ip: Ip) -> Vec<u8> {
    let payload = match ip {
        Ip::V4 => 0xFFFF - 20 - 20,
        _ => 0xFFFF - 20,
    };
    let data: Vec<u8> = (0..payload).map(|i| (i * 7 % 251) as u8).collect();
    l4_frame(ip, IpProtocol::Tcp, &data).0
}

/// A driver and a netback delivering TCP frames over the MTU as GSO (MSS 1448).
fn gso_setup() -> (Netfront<SimHal>, SimNetback) {
    let (nf, mut nb, _) = setup(Config::default());
    nb.rx_gso = Some(1448);
    (nf, nb)
}

fn gso_extra(size: u16, kind: u8) -> ExtraInfo {
    ExtraInfo {
        kind: EXTRA_TYPE_GSO,
        flags: 0,
        data: [size as u8, (size >> 8) as u8, kind, 0, 0, 0],
    }
}

/// After a bad packet: counted, every buffer reposted, and the ring in step (GSO and plain
/// frames arrive whole).
fn assert_gso_recovers(nf: &mut Netfront<SimHal>, nb: &mut SimNetback, malformed: u64) {
    nb.step();
    assert_eq!(nf.stats().malformed, malformed, "{:?}", nf.stats());
    assert_eq!(nf.stats().rx_dropped, malformed);
    assert_eq!(nf.rx_posted(), 64, "every buffer reposted");
    nb.rx_csum = RxCsum::Validated;
    nb.rx_gso = Some(1448);
    let big = super_frame(Ip::V4);
    let gso = nf.stats().rx_gso;
    assert_eq!(
        deliver(nf, nb, &big).unwrap(),
        big,
        "a super-frame still arrives"
    );
    assert_eq!(nf.stats().rx_gso, gso + 1);
    nb.step();
    assert_rx_works(nf, nb, 9);
    assert_eq!(nf.rx_posted(), 64);
}

#[test]
fn rx_gso_super_frames_are_reassembled_whole() {
    let (mut nf, mut nb) = gso_setup();
    for (ip, csum) in [
        (Ip::V4, RxCsum::Validated),
        (Ip::V6, RxCsum::Validated),
        (Ip::V4, RxCsum::AsIs),
        (Ip::V6, RxCsum::AsIs),
    ] {
        nb.rx_csum = csum;
        let f = super_frame(ip);
        let slots = nf.stats().rx_slots;
        assert_eq!(deliver(&mut nf, &mut nb, &f).unwrap(), f, "{ip:?} {csum:?}");
        // Packed into pages: 17 data slots and the GSO extra.
        assert_eq!(nf.stats().rx_slots - slots, 17 + 1);
        nb.step();
    }
    assert_eq!(nb.gso_sent, 4);
    let st = nf.stats();
    assert_eq!((st.rx_packets, st.rx_gso), (4, 4));
    assert_eq!(st.rx_max_frame, 14 + 40 + 0xFFFF);
    assert_eq!(st.malformed + st.rx_dropped, 0);
    // A plain frame after them: no GSO extra, counted as such.
    assert_rx_works(&mut nf, &mut nb, 1);
    assert_eq!(nf.stats().rx_gso, 4);
}

#[test]
fn rx_gso_with_a_blank_checksum_is_trusted_and_a_bad_unflagged_one_dropped() {
    let (mut nf, mut nb) = gso_setup();
    let f = super_frame(Ip::V4);
    // Blank (CHECKSUM_PARTIAL, what dom0's own TCP sends): the field holds the pseudo-header
    // sum only; handed up as is.
    nb.rx_csum = RxCsum::Blank;
    let got = deliver(&mut nf, &mut nb, &f).unwrap();
    assert_eq!(got.len(), f.len());
    let field = 14 + 20 + 16;
    assert_eq!(got[..field], f[..field]);
    assert_eq!(got[field + 2..], f[field + 2..]);
    nb.step();
    // Unflagged and wrong: the driver verifies the whole super-frame and drops it.
    nb.rx_csum = RxCsum::Corrupt;
    assert_eq!(deliver(&mut nf, &mut nb, &f), Err(Error::RxBadChecksum));
    assert_eq!(nf.stats().rx_bad_checksum, 1);
    nb.step();
    nb.rx_csum = RxCsum::AsIs;
    assert_eq!(deliver(&mut nf, &mut nb, &f).unwrap(), f);
}

#[test]
fn rx_gso_stream_wraps_the_ring_in_order() {
    // 40 super-frames through 64 buffers (18 slots each): the ring wraps many times and each
    // packet waits for enough posted buffers, as netback waits.
    let (mut nf, mut nb) = gso_setup();
    nb.rx_csum = RxCsum::Validated;
    let mut sent = vec![];
    for i in 0..40u8 {
        let mut f = super_frame(if i % 3 == 0 { Ip::V6 } else { Ip::V4 });
        let n = f.len();
        f[n - 1] = i;
        nb.send_to_guest(&f);
        sent.push(f);
    }
    let mut got = vec![];
    for _ in 0..1000 {
        nb.step();
        while let Some(f) = nf.receive().unwrap() {
            got.push(f.to_vec());
        }
        if got.len() == sent.len() {
            break;
        }
    }
    assert_eq!(got, sent);
    assert_eq!(nf.stats().rx_gso, 40);
    assert_eq!(nf.rx_posted(), 64);
}

#[test]
fn rx_gso_followed_by_a_hash_extra() {
    let (mut nf, mut nb) = gso_setup();
    nb.rx_csum = RxCsum::Validated;
    nb.inject(Fault::RxExtra(ExtraInfo {
        kind: EXTRA_TYPE_HASH,
        flags: 0,
        data: [1, 2, 3, 4, 5, 6],
    }));
    let f = super_frame(Ip::V4);
    assert_eq!(deliver(&mut nf, &mut nb, &f).unwrap(), f);
    assert_eq!(nf.stats().rx_slots, 17 + 2);
    assert_eq!(nf.stats().rx_gso, 1);
}

#[test]
fn rx_gso_extra_with_segment_size_zero() {
    let (mut nf, mut nb, _) = setup(Config::default());
    nb.inject(Fault::RxExtra(gso_extra(0, GSO_TYPE_TCPV4)));
    nb.rx_csum = RxCsum::Validated;
    let r = deliver(&mut nf, &mut nb, &super_frame(Ip::V4));
    assert_eq!(
        r,
        Err(Error::RxBadGso {
            reason: "segment size 0"
        })
    );
    assert_gso_recovers(&mut nf, &mut nb, 1);
}

#[test]
fn rx_gso_extra_of_an_unknown_gso_type() {
    let (mut nf, mut nb, _) = setup(Config::default());
    nb.inject(Fault::RxExtra(gso_extra(1448, 3)));
    let r = deliver(&mut nf, &mut nb, &super_frame(Ip::V4));
    assert_eq!(
        r,
        Err(Error::RxBadGso {
            reason: "unknown GSO type"
        })
    );
    assert_gso_recovers(&mut nf, &mut nb, 1);
}

#[test]
fn rx_gso_extra_that_does_not_match_the_frame() {
    let (mut nf, mut nb, _) = setup(Config::default());
    nb.rx_csum = RxCsum::Validated;
    let mut malformed = 0;
    let udp = l4_frame(Ip::V4, IpProtocol::Udp, &[1; 3000]).0;
    for (f, kind, reason) in [
        (
            super_frame(Ip::V4),
            GSO_TYPE_TCPV6,
            "GSO type does not match the frame's IP version",
        ),
        (
            super_frame(Ip::V6),
            GSO_TYPE_TCPV4,
            "GSO type does not match the frame's IP version",
        ),
        (
            frame(3000, 1),
            GSO_TYPE_TCPV4,
            "GSO type does not match the frame's IP version",
        ),
        (udp, GSO_TYPE_TCPV4, "not TCP"),
    ] {
        nb.inject(Fault::RxExtra(gso_extra(1448, kind)));
        assert_eq!(
            deliver(&mut nf, &mut nb, &f),
            Err(Error::RxBadGso { reason }),
            "{reason}"
        );
        malformed += 1;
        nb.step();
    }
    assert_gso_recovers(&mut nf, &mut nb, malformed);
}

#[test]
fn rx_gso_frame_shorter_or_longer_than_its_ip_length() {
    let (mut nf, mut nb) = gso_setup();
    nb.rx_csum = RxCsum::Validated;
    let f = super_frame(Ip::V4);
    let reason = "IP length disagrees with the bytes received";
    // Fewer bytes than the IP header says (a backend that lost a slot's worth).
    let short = &f[..f.len() - 4096];
    assert_eq!(
        deliver(&mut nf, &mut nb, short),
        Err(Error::RxBadGso { reason })
    );
    nb.step();
    // More: a smaller TCP packet with trailing bytes.
    let mut long = l4_frame(Ip::V4, IpProtocol::Tcp, &[5; 3000]).0;
    long.extend_from_slice(&[0; 100]);
    assert_eq!(
        deliver(&mut nf, &mut nb, &long),
        Err(Error::RxBadGso { reason })
    );
    assert_gso_recovers(&mut nf, &mut nb, 2);
}

#[test]
fn rx_gso_extra_twice_in_one_packet() {
    let (mut nf, mut nb) = gso_setup();
    nb.inject(Fault::RxExtra(gso_extra(1448, GSO_TYPE_TCPV4)));
    let r = deliver(&mut nf, &mut nb, &super_frame(Ip::V4));
    assert_eq!(
        r,
        Err(Error::RxBadExtra {
            kind: EXTRA_TYPE_GSO
        })
    );
    assert_gso_recovers(&mut nf, &mut nb, 1);
}

#[test]
fn rx_extra_chain_that_never_ends() {
    let (mut nf, mut nb) = gso_setup();
    // Nine extras after the GSO one, the last still saying another follows.
    for _ in 0..9 {
        nb.inject(Fault::RxExtra(ExtraInfo {
            kind: 200,
            flags: EXTRA_FLAG_MORE,
            data: [0; 6],
        }));
    }
    nb.rx_csum = RxCsum::Validated;
    let r = deliver(&mut nf, &mut nb, &super_frame(Ip::V4));
    assert_eq!(r, Err(Error::RxBadExtra { kind: 200 }));
    // The rest of that packet is dropped as data, up to its last slot.
    assert_eq!(nf.receive(), Ok(None));
    assert_gso_recovers(&mut nf, &mut nb, 1);
}

#[test]
fn rx_gso_packet_larger_than_the_buffer() {
    let (mut nf, mut nb) = gso_setup();
    nb.rx_csum = RxCsum::Validated;
    // Its last slot says more follows: the next super-frame is glued on, past 64 KiB.
    nb.inject(Fault::RxLastFlags(NETRXF_MORE_DATA));
    let f = super_frame(Ip::V4);
    nb.send_to_guest(&f);
    nb.send_to_guest(&f);
    for _ in 0..4 {
        nb.step();
    }
    let r = nf.receive();
    assert_eq!(
        r,
        Err(Error::RxTooLong {
            len: f.len() + 4096
        })
    );
    // The glued packet's remaining slots are dropped, up to its true end.
    assert_eq!(nf.receive(), Ok(None));
    assert_gso_recovers(&mut nf, &mut nb, 1);
    // A GSO extra on a frame over the limit: too long, whatever the extra says.
    nb.inject(Fault::RxExtra(gso_extra(1448, GSO_TYPE_TCPV4)));
    nb.inject(Fault::RxSplit(4096));
    let r = deliver(&mut nf, &mut nb, &frame(70_000, 2));
    assert_eq!(r, Err(Error::RxTooLong { len: 17 * 4096 }));
    assert_gso_recovers(&mut nf, &mut nb, 2);
}

#[test]
fn rx_gso_over_too_many_slots() {
    let (mut nf, mut nb) = gso_setup();
    nb.rx_csum = RxCsum::Validated;
    // 22 data slots of 3000 bytes: more than any backend may use.
    nb.inject(Fault::RxSplit(3000));
    let r = deliver(&mut nf, &mut nb, &super_frame(Ip::V4));
    assert_eq!(r, Err(Error::RxTooManySlots));
    assert_eq!(nf.receive(), Ok(None));
    assert_gso_recovers(&mut nf, &mut nb, 1);
}

#[test]
fn rx_gso_that_claims_to_go_on_into_the_next_packet() {
    let (mut nf, mut nb) = gso_setup();
    nb.rx_csum = RxCsum::Validated;
    nb.inject(Fault::RxLastFlags(NETRXF_MORE_DATA));
    let f = super_frame(Ip::V4);
    nb.send_to_guest(&f[..30_000]);
    nb.send_to_guest(&frame(600, 1));
    nb.step();
    // Not the length of the IP header's: the glued packet is refused, not handed up.
    assert_eq!(
        nf.receive(),
        Err(Error::RxBadGso {
            reason: "IP length disagrees with the bytes received"
        })
    );
    assert_gso_recovers(&mut nf, &mut nb, 1);
}

#[test]
fn rx_slot_chain_that_never_ends() {
    let (mut nf, mut nb) = gso_setup();
    // 30 packets, every slot saying more follows.
    let mut errors = vec![];
    for i in 0..30 {
        nb.inject(Fault::RxLastFlags(NETRXF_MORE_DATA));
        nb.send_to_guest(&frame(MTU, i));
        nb.step();
        loop {
            match nf.receive() {
                Ok(Some(_)) => panic!("a glued packet was handed up"),
                Ok(None) => break,
                Err(e) => errors.push(e),
            }
        }
    }
    assert_eq!(errors, [Error::RxTooManySlots]);
    // The chain ends with the next packet's last slot (that packet is lost with it).
    nb.send_to_guest(&frame(MTU, 99));
    nb.step();
    assert_eq!(nf.receive(), Ok(None));
    assert_gso_recovers(&mut nf, &mut nb, 1);
}

#[test]
fn rx_failed_first_slot_skips_its_extras_and_data_in_step() {
    // The first slot fails (bad id) but announces extras and more data: the extras are
    // followed as extras (not read as data slots) and the data dropped to the packet's end.
    let (mut nf, mut nb) = gso_setup();
    nb.rx_csum = RxCsum::Validated;
    nb.inject(Fault::RxExtra(ExtraInfo {
        kind: EXTRA_TYPE_HASH,
        flags: 0,
        data: [0; 6],
    }));
    nb.inject(Fault::RxId(77));
    let r = deliver(&mut nf, &mut nb, &super_frame(Ip::V4));
    assert!(matches!(r, Err(Error::RxBadId { id: 77, .. })), "{r:?}");
    assert_eq!(nf.receive(), Ok(None));
    assert_gso_recovers(&mut nf, &mut nb, 1);
}

// ---- Transmit GSO (TSO): segments over the MTU for netback to cut. --------------------------

/// A TCP/IPv4 frame of `payload` bytes whose checksum field holds the pseudo-header sum.
fn tso_frame(payload: usize) -> Vec<u8> {
    let (mut f, _) = l4_frame(Ip::V4, IpProtocol::Tcp, &vec![7; payload]);
    assert!(netfront::fill_tcp_checksum(&mut f, true));
    f
}

#[test]
fn tx_gso_frame_goes_with_an_extra_slot_and_a_partial_checksum() {
    let (mut nf, mut nb, _) = setup(Config::default());
    let f = tso_frame(20_000);
    nf.send_gso(&f, Some(1448)).unwrap();
    nb.step();
    assert_eq!(nb.violations, []);
    assert_eq!(nb.tx_gso, [(f.len(), 1448)]);
    let first = nb.tx_slots[0];
    assert_eq!(
        first.flags & !NETTXF_MORE_DATA,
        NETTXF_EXTRA_INFO | NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED
    );
    // The sim completed the checksum, as dom0 would: the frame is the one with a full checksum.
    let mut full = f.clone();
    assert!(netfront::fill_tcp_checksum(&mut full, false));
    assert_eq!(nb.from_guest.pop_back().unwrap(), full);
    // The extra's NULL answer (with a stale id) completes nothing; the data slots do.
    let slots = nb.tx_slots.len();
    assert_eq!(nf.reclaim_tx().unwrap(), slots + 1);
    assert_eq!(nf.tx_in_flight(), 0);
    assert_eq!(nf.stats().tx_gso, 1);
    assert_eq!(nf.stats().malformed, 0);
    assert_tx_works(&mut nf, &mut nb, 3);
}

#[test]
fn tx_gso_frame_over_tso_max_is_refused() {
    let (mut nf, _, _) = setup(Config::default());
    let f = tso_frame(nf.tso_max());
    assert_eq!(
        nf.send_gso(&f, Some(1448)),
        Err(Error::TxBadLength { len: f.len() })
    );
    let (mut nf, _, _) = setup(Config {
        tso: false,
        ..Config::default()
    });
    assert_eq!(nf.tso_max(), 0);
    let f = tso_frame(5000);
    assert_eq!(
        nf.send_gso(&f, Some(1448)),
        Err(Error::TxBadLength { len: f.len() })
    );
}

#[test]
fn tx_null_response_beyond_the_gso_extras_is_a_bad_status() {
    // One GSO packet: one NULL is expected; a second, for a data slot, is not.
    let (mut nf, mut nb, _) = setup(Config::default());
    nb.inject(Fault::TxStatus(NETIF_RSP_NULL));
    nf.send_gso(&tso_frame(8000), Some(1448)).unwrap();
    nb.step();
    let r = nf.reclaim_tx();
    assert!(
        matches!(r, Err(Error::TxBadStatus { status: 1, .. })),
        "{r:?}"
    );
    assert_eq!(nf.tx_in_flight(), 0);
    assert_tx_works(&mut nf, &mut nb, 4);
}

// ---- Backpressure. ----------------------------------------------------------------------------

#[test]
fn tx_ring_exhaustion_then_recovery() {
    let (mut nf, mut nb, _) = setup(Config {
        tx_pages: 64,
        ..Config::default()
    });
    nb.answer_tx = false;
    let mut sent = 0;
    loop {
        match nf.send(&frame(64, sent as u8)) {
            Ok(()) => sent += 1,
            Err(Error::TxFull) => break,
            Err(e) => panic!("{e}"),
        }
        nb.step();
        nf.reclaim_tx().unwrap();
    }
    assert_eq!(
        sent, 256,
        "request ids and ring slots run out first (64-byte frames never straddle a page)"
    );
    assert!(!nf.can_send(64));
    assert_eq!(nf.stats().tx_full, 1);
    nb.answer_tx = true;
    nb.step();
    assert_eq!(nf.reclaim_tx(), Ok(256));
    assert_eq!(nb.from_guest.len(), 256);
    assert_tx_works(&mut nf, &mut nb, 1);
}

#[test]
fn tx_buffer_exhaustion_then_recovery() {
    let (mut nf, mut nb, _) = setup(Config {
        tx_pages: 1,
        ..Config::default()
    });
    nb.answer_tx = false;
    nf.send(&frame(2000, 1)).unwrap();
    nf.send(&frame(2000, 2)).unwrap();
    assert_eq!(nf.send(&frame(1000, 3)), Err(Error::TxFull));
    nb.step();
    nf.reclaim_tx().unwrap();
    assert_eq!(nf.send(&frame(1000, 3)), Err(Error::TxFull));
    nb.answer_tx = true;
    nb.step();
    nf.reclaim_tx().unwrap();
    nf.send(&frame(1000, 3)).unwrap();
    nb.step();
    assert_eq!(nb.from_guest.len(), 3);
    assert_eq!(nb.violations, []);
}

#[test]
fn rx_backpressure_frames_wait_for_posted_buffers() {
    let (mut nf, mut nb, _) = setup(Config {
        rx_buffers: 4,
        ..Config::default()
    });
    for i in 0..10 {
        nb.send_to_guest(&frame(100, i));
    }
    nb.step();
    assert_eq!(
        nb.to_guest.len(),
        6,
        "four buffers posted: four frames delivered"
    );
    let mut got = vec![];
    for _ in 0..10 {
        while let Some(f) = nf.receive().unwrap() {
            got.push(f.to_vec());
        }
        nb.step();
    }
    assert_eq!(got, (0..10).map(|i| frame(100, i)).collect::<Vec<_>>());
}

#[test]
fn release_ends_every_grant_and_frees_every_page() {
    let (nf, mut nb, hal) = setup(Config::default());
    assert_eq!(hal.state.lock().live_grants(), 2 + 16 + 64);
    assert!(matches!(
        Netfront::new(
            hal.clone(),
            0,
            MAC,
            Config {
                rx_buffers: 0,
                ..Config::default()
            }
        ),
        Err(Error::BadConfig)
    ));
    nb.detach();
    nf.release().unwrap();
    assert_eq!(hal.state.lock().live_grants(), 0);
    assert_eq!(hal.state.lock().live_pages(), 0);
}

#[test]
fn grant_exhaustion_during_setup_releases_everything() {
    let hal = SimHal::new();
    hal.state.lock().max_grants = 10;
    let r = Netfront::new(hal.clone(), 0, MAC, Config::default());
    assert_eq!(
        r.err(),
        Some(Error::Hal(xen::hal::HalError::GrantsExhausted))
    );
    assert_eq!(hal.state.lock().live_grants(), 0);
    assert_eq!(hal.state.lock().live_pages(), 0);
}

#[test]
fn release_while_the_backend_maps_the_rings_leaks_instead_of_freeing() {
    let (nf, nb, hal) = setup(Config::default());
    assert_eq!(
        nf.release().err(),
        Some(Error::GrantsStillMapped { count: 2 })
    );
    assert_eq!(hal.state.lock().live_pages(), 2);
    drop(nb);
}

// ---- Fuzz-style: thousands of random responses. -----------------------------------------------

#[test]
fn random_rx_and_tx_responses_never_panic_and_never_leak_buffers() {
    let hal = SimHal::new();
    let mut nf = Netfront::new(hal.clone(), 0, MAC, Config::default()).unwrap();
    let (rx_mem, tx_mem) = {
        let mut s = hal.state.lock();
        (
            s.map_grant(nf.rx_ring_ref(), 0).unwrap().0,
            s.map_grant(nf.tx_ring_ref(), 0).unwrap().0,
        )
    };
    let mut rx = BackRing::new(rx_mem, RX_ENTRY_SIZE);
    let mut tx = BackRing::new(tx_mem, TX_ENTRY_SIZE);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rx_reqs: Vec<RxRequest> = vec![];
    let mut tx_reqs: Vec<TxRequest> = vec![];
    let mut errors = 0u64;
    let mut frames = 0u64;
    for round in 0..3000 {
        // RX: answer some posted requests with random (often nearly valid) responses.
        while let Ok(Some(r)) = rx.take_request(RxRequest::read) {
            rx_reqs.push(r);
        }
        let n = rng.below(rx_reqs.len() as u64 + 1) as usize;
        for r in rx_reqs.drain(..n) {
            let mut rsp = RxResponse {
                id: r.id,
                offset: rng.below(64) as u16,
                flags: (rng.next() as u16) & 0x1f,
                status: 14 + rng.below(2000) as i16,
            };
            match rng.below(8) {
                0 => rsp.id = rng.next() as u16,
                1 => rsp.offset = rng.next() as u16,
                2 => rsp.status = rng.next() as i16,
                3 => rsp.flags = rng.next() as u16,
                _ => {}
            }
            if rng.below(3) == 0 {
                rsp.flags &= !(NETRXF_MORE_DATA | NETRXF_EXTRA_INFO);
            }
            let raw = if rng.below(20) == 0 {
                rng.next().to_le_bytes()
            } else {
                rsp.emit()
            };
            rx.queue_response(|m, o| m.write(o, &raw)).unwrap();
        }
        rx.push_responses().unwrap();
        if rng.below(50) == 0 {
            rx.force_rsp_prod(rng.next() as u32).unwrap();
        }
        // TX: send a little, answer with random ids and statuses.
        if nf.can_send(MTU) && rng.below(2) == 0 {
            let len = 14 + rng.below(MTU as u64 - 13) as usize;
            nf.send(&frame(len, round as u8)).unwrap();
        }
        while let Ok(Some(r)) = tx.take_request(TxRequest::read) {
            tx_reqs.push(r);
        }
        let n = rng.below(tx_reqs.len() as u64 + 1) as usize;
        for r in tx_reqs.drain(..n) {
            let mut rsp = TxResponse {
                id: r.id,
                status: NETIF_RSP_OKAY,
            };
            match rng.below(10) {
                0 => rsp.id = rng.next() as u16,
                1 => rsp.status = rng.next() as i16,
                _ => {}
            }
            tx.queue_response(|m, o| rsp.write(m, o)).unwrap();
        }
        tx.push_responses().unwrap();
        if rng.below(50) == 0 {
            tx.force_rsp_prod(rng.next() as u32).unwrap();
        }
        // The driver consumes whatever is there.
        for _ in 0..300 {
            match nf.receive() {
                Ok(Some(f)) => {
                    assert!(f.len() >= 14 && f.len() <= netfront::MAX_RX_FRAME);
                    frames += 1;
                }
                Ok(None) | Err(Error::RxRing(_)) => break,
                Err(e) => {
                    assert!(e.is_backend_fault(), "{e}");
                    errors += 1;
                }
            }
        }
        if nf.reclaim_tx().is_err() {
            errors += 1;
        }
        assert!(nf.rx_posted() <= 64);
        // Heal the indices for the next round.
        rx.push_responses().unwrap();
        tx.push_responses().unwrap();
    }
    assert!(frames > 100, "{frames} frames");
    assert!(errors > 100, "{errors} errors");
    // Every RX buffer is either posted or free: drain and check they all come back.
    while let Ok(Some(r)) = rx.take_request(RxRequest::read) {
        rx_reqs.push(r);
    }
    for r in rx_reqs.drain(..) {
        let rsp = RxResponse {
            id: r.id,
            offset: 0,
            flags: 0,
            status: 60,
        };
        rx.queue_response(|m, o| rsp.write(m, o)).unwrap();
    }
    rx.push_responses().unwrap();
    for _ in 0..1000 {
        match nf.receive() {
            Ok(None) => break,
            Ok(Some(_)) => {}
            Err(e) => assert!(e.is_backend_fault(), "{e}"),
        }
    }
    assert_eq!(nf.rx_posted(), 64, "no RX buffer leaked");
}

#[test]
fn tx_slot_lost_to_a_bad_id_is_reclaimed_once_every_request_is_answered() {
    let (mut nf, mut nb, _) = setup(Config {
        tx_pages: 1,
        ..Config::default()
    });
    nb.inject(Fault::TxId(200));
    nf.send(&frame(3000, 1)).unwrap();
    nb.step();
    assert_eq!(nf.reclaim_tx(), Err(Error::TxBadId { id: 200 }));
    // The real id was answered in no response, but the ring is idle: it cannot be pending.
    assert_eq!(nf.tx_in_flight(), 0);
    assert_eq!(nf.stats().tx_failed, 1);
    // Its buffer space came back too: a frame that needs it fits.
    nf.send(&frame(3000, 2)).unwrap();
    nb.step();
    assert_eq!(nb.from_guest.pop_back(), Some(frame(3000, 2)));
}

#[test]
fn tx_gso_frames_of_every_size_arrive_whole_through_a_backend_that_lags() {
    // Frames just over a multiple of 4 KiB, starting just before a page boundary some pages
    // before the buffer's end, once ran past the end of the TX buffer (the driver failed them
    // half queued; netback glued their slots to the next frame's). The backend here answers
    // only when the buffer is full, so frames land at every position.
    let (mut nf, mut nb, _) = setup(Config::default());
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let max = nf.tso_max() - 54;
    let mut sent = std::collections::VecDeque::new();
    let check = |nb: &mut SimNetback, sent: &mut std::collections::VecDeque<Vec<u8>>| {
        for g in nb.from_guest.drain(..) {
            let s = sent.pop_front().expect("a frame nobody sent");
            assert!(g == s, "a frame of {} bytes differs", s.len());
        }
    };
    for n in 0..20_000u32 {
        let payload = match rng.below(3) {
            0 => 1 + rng.below(1460) as usize,
            1 => ((1 + rng.below(14)) as usize * 4096 + rng.below(300) as usize)
                .saturating_sub(200)
                .clamp(1461, max),
            _ => 1461 + rng.below((max - 1461) as u64) as usize,
        };
        let data: Vec<u8> = (0..payload).map(|i| (i as u32 ^ n) as u8).collect();
        let (mut f, _) = l4_frame(Ip::V4, IpProtocol::Tcp, &data);
        let gso = (f.len() > MTU).then_some(1448);
        assert!(netfront::fill_tcp_checksum(&mut f, gso.is_some()));
        loop {
            match nf.send_gso(&f, gso) {
                Ok(()) => break,
                Err(Error::TxFull) => {
                    nb.step();
                    nf.reclaim_tx().unwrap();
                    check(&mut nb, &mut sent);
                }
                Err(e) => panic!("frame {n} of {} bytes: {e:?}", f.len()),
            }
        }
        assert!(netfront::fill_tcp_checksum(&mut f, false));
        sent.push_back(f);
    }
    nb.step();
    nf.reclaim_tx().unwrap();
    check(&mut nb, &mut sent);
    assert_eq!(nb.violations, []);
    assert_eq!(nf.tx_in_flight(), 0);
    assert!(sent.is_empty(), "{} frames never arrived", sent.len());
}
