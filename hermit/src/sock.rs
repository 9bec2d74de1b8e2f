//! The BSD socket surface's plain data, kept apart from the stack so the host can test it:
//! hermit-abi's constants, the socket address encoding (`sockaddr_in` / `sockaddr_in6` as bytes),
//! how a [`NetError`] becomes an errno, and the file-descriptor table.
//!
//! Every value here is hermit-abi 0.5.2's (`src/lib.rs`, `src/errno.rs`), which std's
//! `x86_64-unknown-hermit` port uses; the libc crate's `src/hermit.rs` (0.2.191, which mio uses)
//! has the same values. Note that hermit's address families are not Linux's: `AF_INET` is 3 and
//! `AF_INET6` is 1.

use alloc::vec::Vec;
use net::smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv6Address};
use net::NetError;

/// hermit-abi's errno values (the Linux numbers).
#[allow(missing_docs)]
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EACCES: i32 = 13;
    pub const EBADF: i32 = 9;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EFAULT: i32 = 14;
    pub const EINVAL: i32 = 22;
    pub const EMFILE: i32 = 24;
    pub const ENOSYS: i32 = 38;
    pub const EDEADLK: i32 = 35;
    pub const ENOTSOCK: i32 = 88;
    pub const EDESTADDRREQ: i32 = 89;
    pub const EMSGSIZE: i32 = 90;
    pub const EPROTOTYPE: i32 = 91;
    pub const ENOPROTOOPT: i32 = 92;
    pub const EPROTONOSUPPORT: i32 = 93;
    pub const EOPNOTSUPP: i32 = 95;
    pub const EAFNOSUPPORT: i32 = 97;
    pub const EADDRINUSE: i32 = 98;
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const ENETDOWN: i32 = 100;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNRESET: i32 = 104;
    pub const ENOBUFS: i32 = 105;
    pub const EISCONN: i32 = 106;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EALREADY: i32 = 114;
    pub const EINPROGRESS: i32 = 115;
    pub const EPIPE: i32 = 32;
}

/// hermit-abi's other socket constants.
#[allow(missing_docs)]
pub mod consts {
    pub const AF_UNSPEC: i32 = 0;
    pub const AF_INET6: i32 = 1;
    pub const AF_INET: i32 = 3;
    pub const SOCK_STREAM: i32 = 1;
    pub const SOCK_DGRAM: i32 = 2;
    pub const SOCK_NONBLOCK: i32 = 0o4000;
    pub const SOCK_CLOEXEC: i32 = 0o40000;
    pub const O_NONBLOCK: i32 = 0o4000;
    pub const F_DUPFD: i32 = 0;
    pub const F_GETFD: i32 = 1;
    pub const F_SETFD: i32 = 2;
    pub const F_GETFL: i32 = 3;
    pub const F_SETFL: i32 = 4;
    pub const FIONBIO: i32 = 0x8008667eu32 as i32;
    pub const EFD_NONBLOCK: i16 = 0o4000;
    pub const SOL_SOCKET: i32 = 4095;
    pub const SO_REUSEADDR: i32 = 0x0004;
    pub const SO_KEEPALIVE: i32 = 0x0008;
    pub const SO_BROADCAST: i32 = 0x0020;
    pub const SO_LINGER: i32 = 0x0080;
    pub const SO_SNDBUF: i32 = 0x1001;
    pub const SO_RCVBUF: i32 = 0x1002;
    pub const SO_SNDTIMEO: i32 = 0x1005;
    pub const SO_RCVTIMEO: i32 = 0x1006;
    pub const SO_ERROR: i32 = 0x1007;
    pub const IPPROTO_IP: i32 = 0;
    pub const IPPROTO_TCP: i32 = 6;
    pub const IPPROTO_UDP: i32 = 17;
    pub const IPPROTO_IPV6: i32 = 41;
    pub const TCP_NODELAY: i32 = 1;
    pub const IP_TOS: i32 = 1;
    pub const IP_TTL: i32 = 2;
    pub const IP_ADD_MEMBERSHIP: i32 = 3;
    pub const IP_DROP_MEMBERSHIP: i32 = 4;
    pub const IP_MULTICAST_TTL: i32 = 5;
    pub const IP_MULTICAST_LOOP: i32 = 7;
    pub const IPV6_ADD_MEMBERSHIP: i32 = 12;
    pub const IPV6_DROP_MEMBERSHIP: i32 = 13;
    pub const IPV6_MULTICAST_LOOP: i32 = 19;
    pub const IPV6_V6ONLY: i32 = 27;
    pub const MSG_PEEK: i32 = 1;
    pub const SHUT_RD: i32 = 0;
    pub const SHUT_WR: i32 = 1;
    pub const SHUT_RDWR: i32 = 2;
    pub const POLLIN: i16 = 0x1;
    pub const POLLPRI: i16 = 0x2;
    pub const POLLOUT: i16 = 0x4;
    pub const POLLERR: i16 = 0x8;
    pub const POLLHUP: i16 = 0x10;
    pub const POLLNVAL: i16 = 0x20;
    pub const POLLRDNORM: i16 = 0x40;
    pub const POLLWRNORM: i16 = 0x100;
    pub const POLLRDHUP: i16 = 0x2000;
    pub const EAI_AGAIN: i32 = 2;
    pub const EAI_FAIL: i32 = 4;
    pub const EAI_FAMILY: i32 = 5;
    pub const EAI_NONAME: i32 = 8;
    pub const EAI_SERVICE: i32 = 9;
    pub const EAI_SOCKTYPE: i32 = 10;
    pub const EAI_MEMORY: i32 = 6;
}

use consts::*;
use errno::*;

/// Size of hermit's `sockaddr_in` (len, family, port, addr, zero[8]).
pub const SOCKADDR_IN_LEN: usize = 16;
/// Size of hermit's `sockaddr_in6` (len, family, port, flowinfo, addr[16], scope_id).
pub const SOCKADDR_IN6_LEN: usize = 28;

/// The errno a stack error stands for.
pub fn errno_of(e: &NetError) -> i32 {
    match e {
        NetError::NotConfigured => ENETDOWN,
        NetError::PortInUse(_) => EADDRINUSE,
        NetError::ConnectionReset => ECONNRESET,
        NetError::Closed => EPIPE,
        NetError::Unaddressable => ENETUNREACH,
        NetError::TooLarge => EMSGSIZE,
        NetError::TimedOut => ETIMEDOUT,
        NetError::Dns(_) => EADDRNOTAVAIL,
        NetError::NoMemory => ENOMEM,
        NetError::NotConnected => EDESTADDRREQ,
        NetError::Busy => EAGAIN,
    }
}

/// Decodes a socket address from the bytes of a `sockaddr_in` / `sockaddr_in6` (the port and
/// addresses in network byte order; the length byte is ignored, as Hermit does).
pub fn decode_addr(b: &[u8]) -> Result<IpEndpoint, i32> {
    let family = *b.get(1).ok_or(EINVAL)? as i32;
    match family {
        AF_INET if b.len() >= SOCKADDR_IN_LEN => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let a = Ipv4Address::new(b[4], b[5], b[6], b[7]);
            Ok(IpEndpoint::new(IpAddress::Ipv4(a), port))
        }
        AF_INET6 if b.len() >= SOCKADDR_IN6_LEN => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            Ok(IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::from(a)), port))
        }
        AF_INET | AF_INET6 => Err(EINVAL),
        _ => Err(EAFNOSUPPORT),
    }
}

/// Encodes a socket address as the bytes of a `sockaddr_in` / `sockaddr_in6`.
pub fn encode_addr(e: &IpEndpoint) -> Vec<u8> {
    let port = e.port.to_be_bytes();
    match e.addr {
        IpAddress::Ipv4(a) => {
            let mut v = alloc::vec![0u8; SOCKADDR_IN_LEN];
            v[0] = SOCKADDR_IN_LEN as u8;
            v[1] = AF_INET as u8;
            v[2..4].copy_from_slice(&port);
            v[4..8].copy_from_slice(&a.octets());
            v
        }
        IpAddress::Ipv6(a) => {
            let mut v = alloc::vec![0u8; SOCKADDR_IN6_LEN];
            v[0] = SOCKADDR_IN6_LEN as u8;
            v[1] = AF_INET6 as u8;
            v[2..4].copy_from_slice(&port);
            v[8..24].copy_from_slice(&a.octets());
            v
        }
    }
}

/// Parses a numeric host for `getaddrinfo` (`NULL` / empty is the unspecified address; the
/// name `localhost` is 127.0.0.1). Other names need DNS: `None`.
pub fn numeric_host(host: Option<&str>) -> Option<IpAddress> {
    match host {
        None | Some("") => Some(IpAddress::Ipv4(Ipv4Address::UNSPECIFIED)),
        Some("localhost") => Some(IpAddress::Ipv4(Ipv4Address::new(127, 0, 0, 1))),
        Some(h) => h
            .parse::<Ipv4Address>()
            .map(IpAddress::Ipv4)
            .or_else(|_| h.parse::<Ipv6Address>().map(IpAddress::Ipv6))
            .ok(),
    }
}

/// A file-descriptor table: descriptors 0, 1 and 2 are the console and never handed out; new
/// ones take the lowest free number (as POSIX says), up to a limit.
#[derive(Debug)]
pub struct FdTable<T> {
    slots: Vec<Option<T>>,
    limit: usize,
}

/// The first descriptor a socket can get.
pub const FIRST_FD: i32 = 3;

impl<T> FdTable<T> {
    /// A table of at most `limit` open descriptors (besides the console's).
    pub const fn new(limit: usize) -> Self {
        FdTable {
            slots: Vec::new(),
            limit,
        }
    }

    /// Installs `v` under the lowest free descriptor, or `EMFILE`.
    pub fn insert(&mut self, v: T) -> Result<i32, i32> {
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            self.slots[i] = Some(v);
            return Ok(i as i32 + FIRST_FD);
        }
        if self.slots.len() >= self.limit {
            return Err(EMFILE);
        }
        self.slots.push(Some(v));
        Ok(self.slots.len() as i32 - 1 + FIRST_FD)
    }

    fn index(fd: i32) -> Option<usize> {
        fd.checked_sub(FIRST_FD)
            .and_then(|i| usize::try_from(i).ok())
    }

    /// The object under `fd`, or `EBADF`.
    pub fn get(&self, fd: i32) -> Result<&T, i32> {
        Self::index(fd)
            .and_then(|i| self.slots.get(i)?.as_ref())
            .ok_or(EBADF)
    }

    /// The object under `fd`, or `EBADF`.
    pub fn get_mut(&mut self, fd: i32) -> Result<&mut T, i32> {
        Self::index(fd)
            .and_then(|i| self.slots.get_mut(i)?.as_mut())
            .ok_or(EBADF)
    }

    /// Removes `fd` and returns its object (dropping it closes it), or `EBADF`.
    pub fn remove(&mut self, fd: i32) -> Result<T, i32> {
        let v = Self::index(fd)
            .and_then(|i| self.slots.get_mut(i)?.take())
            .ok_or(EBADF)?;
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        Ok(v)
    }

    /// The open descriptors.
    pub fn fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as i32 + FIRST_FD)
    }
}

/// What `poll` reports for an object: the events asked for that hold, plus `POLLERR`/`POLLHUP`
/// (always reported, whether asked for or not).
pub fn revents(asked: i16, readable: bool, writable: bool, hup: bool, err: bool) -> i16 {
    let mut r = 0;
    if readable {
        r |= asked & (POLLIN | POLLRDNORM | POLLRDHUP);
    }
    if writable {
        r |= asked & (POLLOUT | POLLWRNORM);
    }
    if hup {
        r |= POLLHUP;
    }
    if err {
        r |= POLLERR;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_start_at_three_and_reuse_the_lowest() {
        let mut t = FdTable::new(3);
        assert_eq!(t.insert('a'), Ok(3));
        assert_eq!(t.insert('b'), Ok(4));
        assert_eq!(t.insert('c'), Ok(5));
        assert_eq!(t.insert('d'), Err(EMFILE));
        assert_eq!(t.remove(4), Ok('b'));
        assert_eq!(t.get(4), Err(EBADF));
        assert_eq!(t.insert('e'), Ok(4));
        assert_eq!(t.fds().collect::<Vec<_>>(), [3, 4, 5]);
    }

    #[test]
    fn console_and_bad_descriptors_are_ebadf() {
        let mut t: FdTable<u8> = FdTable::new(8);
        for fd in [-1, 0, 1, 2, 3, 1000, i32::MIN, i32::MAX] {
            assert_eq!(t.get(fd), Err(EBADF));
            assert_eq!(t.remove(fd), Err(EBADF));
        }
        assert_eq!(t.insert(1), Ok(3));
        assert_eq!(t.remove(3), Ok(1));
        assert_eq!(t.remove(3), Err(EBADF));
    }

    #[test]
    fn stack_errors_map_to_their_errno() {
        assert_eq!(errno_of(&NetError::PortInUse(7)), EADDRINUSE);
        assert_eq!(errno_of(&NetError::ConnectionReset), ECONNRESET);
        assert_eq!(errno_of(&NetError::Closed), EPIPE);
        assert_eq!(errno_of(&NetError::TimedOut), ETIMEDOUT);
        assert_eq!(errno_of(&NetError::NoMemory), ENOMEM);
        assert_eq!(errno_of(&NetError::NotConfigured), ENETDOWN);
        assert_eq!(errno_of(&NetError::TooLarge), EMSGSIZE);
        assert_eq!(errno_of(&NetError::NotConnected), EDESTADDRREQ);
        assert_eq!(errno_of(&NetError::Busy), EAGAIN);
    }

    /// The bytes of a `sockaddr_in` for 10.0.0.60:7 as std builds it on hermit
    /// (library/std/src/sys/net/connection/socket.rs `socket_addr_to_c`: sin_len unset (0),
    /// sin_family AF_INET = 3, port and address in network order).
    #[test]
    fn sockaddr_in_round_trips() {
        let b = [0, 3, 0, 7, 10, 0, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0];
        let e = decode_addr(&b).unwrap();
        assert_eq!(e, IpEndpoint::new(Ipv4Address::new(10, 0, 0, 60).into(), 7));
        let mut back = encode_addr(&e);
        assert_eq!(back[0], 16);
        back[0] = 0;
        assert_eq!(back, b);
    }

    #[test]
    fn sockaddr_in6_round_trips() {
        let mut b = [0u8; 28];
        b[1] = 1;
        b[2..4].copy_from_slice(&8080u16.to_be_bytes());
        b[23] = 1; // ::1
        let e = decode_addr(&b).unwrap();
        assert_eq!(e.port, 8080);
        assert_eq!(e.addr, IpAddress::Ipv6(Ipv6Address::LOCALHOST));
        assert_eq!(&encode_addr(&e)[1..], &b[1..]);
    }

    #[test]
    fn short_or_foreign_addresses_are_refused() {
        assert_eq!(decode_addr(&[]), Err(EINVAL));
        assert_eq!(decode_addr(&[16, 3, 0, 7]), Err(EINVAL));
        assert_eq!(decode_addr(&[0u8; 16]), Err(EAFNOSUPPORT));
        assert_eq!(
            decode_addr(&[16, 2, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(EAFNOSUPPORT)
        );
    }

    #[test]
    fn numeric_hosts_parse_and_names_do_not() {
        assert_eq!(
            numeric_host(Some("10.1.2.3")),
            Some(IpAddress::Ipv4(Ipv4Address::new(10, 1, 2, 3)))
        );
        assert_eq!(
            numeric_host(Some("::1")),
            Some(IpAddress::Ipv6(Ipv6Address::LOCALHOST))
        );
        assert!(numeric_host(None).is_some());
        assert_eq!(numeric_host(Some("example.com")), None);
    }

    #[test]
    fn poll_reports_what_was_asked_and_always_errors() {
        assert_eq!(revents(POLLIN, true, true, false, false), POLLIN);
        assert_eq!(
            revents(POLLIN | POLLOUT, false, true, false, false),
            POLLOUT
        );
        assert_eq!(revents(0, true, true, true, false), POLLHUP);
        assert_eq!(revents(POLLOUT, false, false, false, true), POLLERR);
    }
}
