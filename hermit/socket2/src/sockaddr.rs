//! [`SockAddr`]: a socket address as the bytes of hermit's `sockaddr_in` (16 bytes: length,
//! family, port, address, 8 zero bytes) or `sockaddr_in6` (28 bytes: length, family, port,
//! flow info, address, scope id); port and addresses in network byte order, flow info and
//! scope id in the machine's.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::{consts, Domain};

const SOCKADDR_IN_LEN: usize = 16;
const SOCKADDR_IN6_LEN: usize = 28;

/// A socket address in the runtime's C layout.
#[derive(Clone)]
pub struct SockAddr {
    storage: [u8; SockAddr::MAX_LEN],
    len: u32,
}

impl SockAddr {
    /// The largest address kept (a `sockaddr_in6`).
    pub(crate) const MAX_LEN: usize = SOCKADDR_IN6_LEN;

    /// The address the runtime wrote into a buffer (at most [`SockAddr::MAX_LEN`] bytes kept).
    pub(crate) fn from_bytes(b: &[u8]) -> SockAddr {
        let mut storage = [0u8; SockAddr::MAX_LEN];
        let n = b.len().min(SockAddr::MAX_LEN);
        storage[..n].copy_from_slice(&b[..n]);
        SockAddr {
            storage,
            len: n as u32,
        }
    }

    /// The address's bytes, as the runtime takes them.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.storage[..self.len as usize]
    }

    /// The address family (`AF_INET`, `AF_INET6`; 0 for an empty address).
    pub const fn family(&self) -> u8 {
        if self.len >= 2 {
            self.storage[1]
        } else {
            0
        }
    }

    /// The address's domain.
    pub const fn domain(&self) -> Domain {
        Domain(self.family() as i32)
    }

    /// The address's length in bytes.
    pub const fn len(&self) -> u32 {
        self.len
    }

    /// Whether the address is empty (has no family).
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this is an IPv4 address.
    pub const fn is_ipv4(&self) -> bool {
        self.family() as i32 == consts::AF_INET
    }

    /// Whether this is an IPv6 address.
    pub const fn is_ipv6(&self) -> bool {
        self.family() as i32 == consts::AF_INET6
    }

    /// Always false: there are no Unix sockets here.
    pub const fn is_unix(&self) -> bool {
        false
    }

    /// The address as std's, if it is IPv4 or IPv6 (and long enough).
    pub fn as_socket(&self) -> Option<SocketAddr> {
        self.as_socket_ipv4()
            .map(SocketAddr::V4)
            .or_else(|| self.as_socket_ipv6().map(SocketAddr::V6))
    }

    /// The address as std's IPv4 address, if it is one.
    pub fn as_socket_ipv4(&self) -> Option<SocketAddrV4> {
        if !self.is_ipv4() || (self.len as usize) < SOCKADDR_IN_LEN {
            return None;
        }
        let b = &self.storage;
        let port = u16::from_be_bytes([b[2], b[3]]);
        Some(SocketAddrV4::new(
            Ipv4Addr::new(b[4], b[5], b[6], b[7]),
            port,
        ))
    }

    /// The address as std's IPv6 address, if it is one.
    pub fn as_socket_ipv6(&self) -> Option<SocketAddrV6> {
        if !self.is_ipv6() || (self.len as usize) < SOCKADDR_IN6_LEN {
            return None;
        }
        let b = &self.storage;
        let port = u16::from_be_bytes([b[2], b[3]]);
        let flow = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[8..24]);
        let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
        Some(SocketAddrV6::new(Ipv6Addr::from(a), port, flow, scope))
    }
}

impl From<SocketAddrV4> for SockAddr {
    fn from(a: SocketAddrV4) -> SockAddr {
        let mut b = [0u8; SOCKADDR_IN_LEN];
        b[0] = SOCKADDR_IN_LEN as u8;
        b[1] = consts::AF_INET as u8;
        b[2..4].copy_from_slice(&a.port().to_be_bytes());
        b[4..8].copy_from_slice(&a.ip().octets());
        SockAddr::from_bytes(&b)
    }
}

impl From<SocketAddrV6> for SockAddr {
    fn from(a: SocketAddrV6) -> SockAddr {
        let mut b = [0u8; SOCKADDR_IN6_LEN];
        b[0] = SOCKADDR_IN6_LEN as u8;
        b[1] = consts::AF_INET6 as u8;
        b[2..4].copy_from_slice(&a.port().to_be_bytes());
        b[4..8].copy_from_slice(&a.flowinfo().to_ne_bytes());
        b[8..24].copy_from_slice(&a.ip().octets());
        b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
        SockAddr::from_bytes(&b)
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> SockAddr {
        match a {
            SocketAddr::V4(a) => a.into(),
            SocketAddr::V6(a) => a.into(),
        }
    }
}

impl PartialEq for SockAddr {
    fn eq(&self, other: &SockAddr) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for SockAddr {}

impl Hash for SockAddr {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.bytes().hash(h)
    }
}

impl fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_socket() {
            Some(a) => write!(f, "SockAddr({a})"),
            None => write!(f, "SockAddr(family {}, {} bytes)", self.family(), self.len),
        }
    }
}
