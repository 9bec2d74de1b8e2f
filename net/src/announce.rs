//! Announcing the guest's location after it moved (`xl restore`, `xl migrate`): the frames a
//! host sends so that switches learn its MAC's new port and neighbours refresh their caches, as
//! Linux's netfront does on resume (`netdev_notify_peers`). smoltcp has no API for either, so
//! they are built here with smoltcp's wire types (checksums filled) and sent raw by the stack
//! ([`crate::stack::Link::send_raw`]) right after the vif reconnected, before anything else.
//!
//! - IPv4: an ARP Announcement (RFC 5227 §3, the "gratuitous ARP" request): broadcast, an ARP
//!   request with the sender and the target protocol address both ours, target hardware
//!   address zero.
//! - IPv6: an unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) per address, to the
//!   all-nodes group `ff02::1` from that address, hop limit 255, the Override flag set and
//!   Solicited clear, with our link-layer address in a Target Link-Layer Address option.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpCidr, IpProtocol, Ipv4Address, Ipv6Address,
    Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

/// The ARP Announcement of `ip` by `mac` (RFC 5227 §3), as an Ethernet frame.
pub fn arp_announcement(mac: [u8; 6], ip: Ipv4Address) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

/// The unsolicited Neighbor Advertisement of `ip` by `mac` (RFC 4861 §7.2.6), as an Ethernet
/// frame to the all-nodes group.
pub fn unsolicited_na(mac: [u8; 6], ip: Ipv6Address) -> Vec<u8> {
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::OVERRIDE,
        target_addr: ip,
        lladdr: Some(RawHardwareAddress::from(EthernetAddress(mac))),
    });
    let all_nodes = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let ip6 = Ipv6Repr {
        src_addr: ip,
        dst_addr: all_nodes,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac),
        // 33:33 and the group's last 32 bits (RFC 2464 §7).
        dst_addr: EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
        ethertype: EthernetProtocol::Ipv6,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip6.buffer_len() + icmp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv6Packet::new_unchecked(f.payload_mut());
    ip6.emit(&mut p);
    icmp.emit(
        &ip,
        &all_nodes,
        &mut Icmpv6Packet::new_unchecked(p.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// The announcements of every address in `addrs` (IPv4 first, then IPv6, in their order).
pub fn frames(mac: [u8; 6], addrs: &[IpCidr]) -> Vec<Vec<u8>> {
    let v4 = addrs.iter().filter_map(|a| match a {
        IpCidr::Ipv4(c) => Some(arp_announcement(mac, c.address())),
        _ => None,
    });
    let v6 = addrs.iter().filter_map(|a| match a {
        IpCidr::Ipv6(c) => Some(unsolicited_na(mac, c.address())),
        _ => None,
    });
    v4.chain(v6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{Icmpv6Message, Ipv4Cidr, Ipv6Cidr};

    const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 1, 2, 3];

    #[test]
    fn arp_announcement_is_a_broadcast_request_for_our_own_address() {
        let ip = Ipv4Address::new(10, 0, 0, 7);
        let f = arp_announcement(MAC, ip);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(eth.src_addr(), EthernetAddress(MAC));
        assert_eq!(eth.ethertype(), EthernetProtocol::Arp);
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        assert_eq!(
            arp,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: EthernetAddress(MAC),
                source_protocol_addr: ip,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: ip,
            }
        );
    }

    #[test]
    fn unsolicited_na_overrides_with_our_link_layer_address_and_a_valid_checksum() {
        let ip: Ipv6Address = "fd00::7".parse().unwrap();
        let f = unsolicited_na(MAC, ip);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress([0x33, 0x33, 0, 0, 0, 1]));
        let p = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(p.hop_limit(), 255);
        assert_eq!(p.src_addr(), ip);
        assert_eq!(p.dst_addr().to_string(), "ff02::1");
        let icmp = Icmpv6Packet::new_checked(p.payload()).unwrap();
        assert_eq!(icmp.msg_type(), Icmpv6Message::NeighborAdvert);
        assert!(icmp.verify_checksum(&p.src_addr(), &p.dst_addr()));
        let repr = Icmpv6Repr::parse(
            &p.src_addr(),
            &p.dst_addr(),
            &icmp,
            &ChecksumCapabilities::default(),
        )
        .unwrap();
        assert_eq!(
            repr,
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::OVERRIDE,
                target_addr: ip,
                lladdr: Some(RawHardwareAddress::from(EthernetAddress(MAC))),
            })
        );
        // A flipped bit fails the checksum: the check above can fail.
        let mut bad = f.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let eth = EthernetFrame::new_checked(&bad[..]).unwrap();
        let p = Ipv6Packet::new_checked(eth.payload()).unwrap();
        let icmp = Icmpv6Packet::new_checked(p.payload()).unwrap();
        assert!(!icmp.verify_checksum(&p.src_addr(), &p.dst_addr()));
    }

    #[test]
    fn one_frame_per_address_ipv4_first() {
        let addrs = [
            IpCidr::Ipv6(Ipv6Cidr::new("fe80::1".parse().unwrap(), 64)),
            IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 7), 24)),
            IpCidr::Ipv6(Ipv6Cidr::new("fd00::7".parse().unwrap(), 64)),
        ];
        let f = frames(MAC, &addrs);
        let kinds: Vec<_> = f
            .iter()
            .map(|f| EthernetFrame::new_checked(&f[..]).unwrap().ethertype())
            .collect();
        assert_eq!(
            kinds,
            [
                EthernetProtocol::Arp,
                EthernetProtocol::Ipv6,
                EthernetProtocol::Ipv6
            ]
        );
        assert!(frames(MAC, &[]).is_empty());
    }
}
