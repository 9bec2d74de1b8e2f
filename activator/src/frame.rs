//! The few Ethernet frames the activator reads and writes on its bridge port: ARP requests for a
//! service address (answered with the service's MAC while no guest answers), TCP SYNs to a service
//! port (the trigger, kept and replayed to the guest once it serves), and the TCP RST that refuses
//! a client when a start failed. Everything else is ignored. Parsing never trusts a length field
//! beyond the bytes that arrived.

use std::net::Ipv4Addr;

pub const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;

/// What a frame from the bridge is, as far as the activator cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// "Who has `target`? Tell `sender_ip`" from `sender_mac`.
    ArpRequest {
        sender_mac: [u8; 6],
        sender_ip: Ipv4Addr,
        target: Ipv4Addr,
    },
    /// A TCP segment with SYN set and ACK clear.
    Syn(Syn),
    Other,
}

/// A connection request, with what a RST for it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Syn {
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
    pub seq: u32,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

/// Classifies one Ethernet frame (no 802.1Q tags: the bridge port sees untagged frames).
pub fn classify(f: &[u8]) -> Seen {
    if f.len() < ETH_HEADER {
        return Seen::Other;
    }
    let p = &f[ETH_HEADER..];
    match be16(f, 12) {
        ETHERTYPE_ARP => {
            // htype 1, ptype IPv4, hlen 6, plen 4, op 1 (request)
            if p.len() < 28 || be16(p, 0) != 1 || be16(p, 2) != 0x0800 || p[4] != 6 || p[5] != 4 {
                return Seen::Other;
            }
            if be16(p, 6) != 1 {
                return Seen::Other;
            }
            Seen::ArpRequest {
                sender_mac: mac_at(p, 8),
                sender_ip: ip_at(p, 14),
                target: ip_at(p, 24),
            }
        }
        ETHERTYPE_IPV4 => {
            if p.len() < 20 || p[0] >> 4 != 4 {
                return Seen::Other;
            }
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(be16(p, 2));
            // protocol TCP, not a fragment (offset 0, MF clear)
            if ihl < 20
                || total < ihl + 20
                || total > p.len()
                || p[9] != 6
                || be16(p, 6) & 0x3fff != 0
            {
                return Seen::Other;
            }
            let t = &p[ihl..total];
            let flags = t[13];
            if flags & 0x02 == 0 || flags & 0x10 != 0 || flags & 0x04 != 0 {
                return Seen::Other;
            }
            Seen::Syn(Syn {
                src_mac: mac_at(f, 6),
                src: ip_at(p, 12),
                dst: ip_at(p, 16),
                src_port: be16(t, 0),
                dst_port: be16(t, 2),
                seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            })
        }
        _ => Seen::Other,
    }
}

/// The ARP reply "`ip` is at `mac`" to a request from `to_mac`/`to_ip`.
pub fn arp_reply(mac: [u8; 6], ip: Ipv4Addr, to_mac: [u8; 6], to_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&to_mac);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&to_mac);
    f.extend_from_slice(&to_ip.octets());
    f.resize(60, 0);
    f
}

/// The Internet checksum of `data` folded onto `sum`.
fn checksum(mut sum: u32, data: &[u8]) -> u16 {
    let mut i = 0;
    while i + 1 < data.len() {
        sum += u32::from(be16(data, i));
        i += 2;
    }
    if i < data.len() {
        sum += u32::from(data[i]) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The RST|ACK that refuses `syn`, from the service (`mac`) back to the client: what a host with
/// nothing listening on the port answers, so the client reports "connection refused" at once.
pub fn rst_for(syn: &Syn, mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&syn.src_mac);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&syn.dst.octets());
    ip[16..20].copy_from_slice(&syn.src.octets());
    let c = checksum(0, &ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&syn.dst_port.to_be_bytes());
    t[2..4].copy_from_slice(&syn.src_port.to_be_bytes());
    t[8..12].copy_from_slice(&syn.seq.wrapping_add(1).to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x14; // RST | ACK
    let mut pseudo = 0u32;
    for o in [syn.dst.octets(), syn.src.octets()] {
        pseudo += u32::from(u16::from_be_bytes([o[0], o[1]]));
        pseudo += u32::from(u16::from_be_bytes([o[2], o[3]]));
    }
    pseudo += 6 + 20;
    let c = checksum(pseudo, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&t);
    f.resize(60, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const SVC: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 50];

    /// A SYN as Linux sends it (with options), checksums filled.
    fn syn_frame() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&SVC);
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![
            0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 50,
        ];
        let c = checksum(0, &ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut t = vec![0u8; 40];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[4..8].copy_from_slice(&0xfffffff0u32.to_be_bytes());
        t[12] = 10 << 4;
        t[13] = 0x02;
        f.extend_from_slice(&t);
        f
    }

    #[test]
    fn a_syn_is_recognised_with_what_a_rst_needs() {
        let Seen::Syn(s) = classify(&syn_frame()) else {
            panic!("not a SYN")
        };
        assert_eq!(s.src, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!((s.src_port, s.dst_port, s.seq), (40000, 80, 0xfffffff0));
        assert_eq!(s.dst, Ipv4Addr::new(10, 0, 0, 50));
        assert_eq!(s.src_mac, CLIENT);
    }

    #[test]
    fn acks_fragments_truncations_and_junk_are_not_syns() {
        let mut f = syn_frame();
        f[14 + 20 + 13] = 0x12; // SYN|ACK
        assert_eq!(classify(&f), Seen::Other);
        let mut f = syn_frame();
        f[14 + 6] = 0x20; // MF
        assert_eq!(classify(&f), Seen::Other);
        let f = syn_frame();
        for n in 0..f.len() - 20 {
            assert_eq!(classify(&f[..n]), Seen::Other, "cut at {n}");
        }
        let mut f = syn_frame();
        f[14] = 0x4f; // IHL 60 > total
        assert_eq!(classify(&f), Seen::Other);
        assert_eq!(classify(&[0xff; 100]), Seen::Other);
    }

    #[test]
    fn the_rst_has_valid_checksums_and_acknowledges_the_syn() {
        let Seen::Syn(s) = classify(&syn_frame()) else {
            panic!()
        };
        let r = rst_for(&s, SVC);
        assert_eq!(&r[0..6], &CLIENT);
        assert_eq!(&r[6..12], &SVC);
        let ip = &r[14..34];
        assert_eq!(checksum(0, ip), 0);
        let t = &r[34..54];
        let mut pseudo = 0u32;
        for o in [[10u8, 0, 0, 50], [10, 0, 0, 1]] {
            pseudo += u32::from(u16::from_be_bytes([o[0], o[1]]))
                + u32::from(u16::from_be_bytes([o[2], o[3]]));
        }
        assert_eq!(checksum(pseudo + 6 + 20, t), 0);
        assert_eq!(be16(t, 0), 80);
        assert_eq!(be16(t, 2), 40000);
        assert_eq!(u32::from_be_bytes([t[8], t[9], t[10], t[11]]), 0xfffffff1);
        assert_eq!(t[13], 0x14);
    }

    #[test]
    fn an_arp_request_is_recognised_and_answered() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&[10, 0, 0, 1]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 0, 0, 50]);
        let seen = classify(&f);
        assert_eq!(
            seen,
            Seen::ArpRequest {
                sender_mac: CLIENT,
                sender_ip: Ipv4Addr::new(10, 0, 0, 1),
                target: Ipv4Addr::new(10, 0, 0, 50)
            }
        );
        let r = arp_reply(
            SVC,
            Ipv4Addr::new(10, 0, 0, 50),
            CLIENT,
            Ipv4Addr::new(10, 0, 0, 1),
        );
        assert_eq!(r.len(), 60);
        assert_eq!(&r[0..6], &CLIENT);
        assert_eq!(be16(&r, 20), 2, "a reply");
        assert_eq!(&r[22..28], &SVC);
        assert_eq!(&r[28..32], &[10, 0, 0, 50]);
        // a reply is not a request
        assert_eq!(classify(&r), Seen::Other);
    }
}
