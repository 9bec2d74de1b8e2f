//! Host tests: the constants and address bytes this crate hands the runtime are the ones the
//! runtime (`hermit::sock`) decodes, and what the runtime encodes reads back here.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use hermit::sock::{self, consts as rt};

use crate::{consts, Domain, Protocol, SockAddr, Type};

#[test]
fn constants_are_the_runtimes() {
    let pairs = [
        (consts::AF_INET, rt::AF_INET),
        (consts::AF_INET6, rt::AF_INET6),
        (consts::SOCK_STREAM, rt::SOCK_STREAM),
        (consts::SOCK_DGRAM, rt::SOCK_DGRAM),
        (consts::SOCK_NONBLOCK, rt::SOCK_NONBLOCK),
        (consts::SOCK_CLOEXEC, rt::SOCK_CLOEXEC),
        (consts::IPPROTO_IP, rt::IPPROTO_IP),
        (consts::IPPROTO_TCP, rt::IPPROTO_TCP),
        (consts::IPPROTO_IPV6, rt::IPPROTO_IPV6),
        (consts::SOL_SOCKET, rt::SOL_SOCKET),
        (consts::SO_REUSEADDR, rt::SO_REUSEADDR),
        (consts::SO_KEEPALIVE, rt::SO_KEEPALIVE),
        (consts::SO_BROADCAST, rt::SO_BROADCAST),
        (consts::SO_LINGER, rt::SO_LINGER),
        (consts::SO_SNDBUF, rt::SO_SNDBUF),
        (consts::SO_RCVBUF, rt::SO_RCVBUF),
        (consts::SO_ERROR, rt::SO_ERROR),
        (consts::TCP_NODELAY, rt::TCP_NODELAY),
        (consts::IPV6_V6ONLY, rt::IPV6_V6ONLY),
        (consts::SHUT_RD, rt::SHUT_RD),
        (consts::SHUT_WR, rt::SHUT_WR),
        (consts::SHUT_RDWR, rt::SHUT_RDWR),
        (consts::F_GETFL, rt::F_GETFL),
        (consts::O_NONBLOCK, rt::O_NONBLOCK),
        (consts::FIONBIO, rt::FIONBIO),
        (consts::EOPNOTSUPP, sock::errno::EOPNOTSUPP),
    ];
    for (i, (ours, theirs)) in pairs.iter().enumerate() {
        assert_eq!(ours, theirs, "pair {i}");
    }
}

#[test]
fn ipv4_addresses_decode_in_the_runtime() {
    let a: SocketAddr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 17), 7).into();
    let s = SockAddr::from(a);
    assert_eq!(s.len(), 16);
    assert!(s.is_ipv4() && !s.is_ipv6());
    assert_eq!(s.domain(), Domain::IPV4);
    let e = sock::decode_addr(s.bytes()).expect("the runtime decodes it");
    assert_eq!((e.addr.to_string(), e.port), ("10.0.0.17".into(), 7));
    assert_eq!(s.as_socket(), Some(a));
}

#[test]
fn ipv6_addresses_decode_in_the_runtime() {
    let ip: Ipv6Addr = "fd00::1:2".parse().unwrap();
    let a: SocketAddr = SocketAddrV6::new(ip, 8080, 5, 9).into();
    let s = SockAddr::from(a);
    assert_eq!(s.len(), 28);
    assert_eq!(s.domain(), Domain::IPV6);
    let e = sock::decode_addr(s.bytes()).expect("the runtime decodes it");
    assert_eq!((e.addr.to_string(), e.port), ("fd00::1:2".into(), 8080));
    // Flow info and scope id stay as given.
    assert_eq!(s.as_socket(), Some(a));
}

#[test]
fn what_the_runtime_encodes_reads_back() {
    for a in ["10.1.2.3:65535", "0.0.0.0:0", "[::1]:7", "[fd00::9]:443"] {
        let want: SocketAddr = a.parse().unwrap();
        let e = sock::decode_addr(SockAddr::from(want).bytes()).unwrap();
        let back = SockAddr::from_bytes(&sock::encode_addr(&e));
        assert_eq!(back.as_socket(), Some(want), "{a}");
    }
}

#[test]
fn short_empty_or_foreign_addresses_are_not_socket_addresses() {
    let empty = SockAddr::from_bytes(&[]);
    assert!(empty.is_empty());
    assert_eq!(empty.family(), 0);
    assert_eq!(empty.as_socket(), None);
    // IPv4 family, too short for a sockaddr_in.
    assert_eq!(SockAddr::from_bytes(&[16, 3, 0, 7]).as_socket(), None);
    // IPv6 family with only a sockaddr_in's length.
    assert_eq!(
        SockAddr::from_bytes(&[0, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).as_socket(),
        None
    );
    // Linux's AF_INET (2) is not hermit's.
    let linux = SockAddr::from_bytes(&[2, 0, 0, 7, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(linux.as_socket(), None);
    // Longer than a sockaddr_in6: cut to it.
    assert_eq!(SockAddr::from_bytes(&[0; 200]).len(), 28);
}

#[test]
fn kinds_name_themselves() {
    let v6: SocketAddr = "[::1]:1".parse().unwrap();
    assert_eq!(Domain::for_address(v6), Domain::IPV6);
    assert_eq!(format!("{:?}", Domain::IPV4), "AF_INET");
    assert_eq!(format!("{:?}", Type::STREAM.nonblocking()), "SOCK_STREAM");
    assert_eq!(
        i32::from(Type::STREAM.nonblocking()),
        rt::SOCK_STREAM | rt::SOCK_NONBLOCK
    );
    assert_eq!(format!("{:?}", Protocol::TCP), "IPPROTO_TCP");
    assert_eq!(format!("{:?}", Domain::from(99)), "Domain(99)");
}
