//! socket2's API, the part that tokio's `net` uses, for `target_os = "hermit"`: written here for
//! xenrt (not a copy of socket2's code), over the hermit-abi socket calls (`sys_socket`,
//! `sys_setsockopt`, ...) that the `hermit` crate implements. crates.io's socket2 has no
//! support for this target; the workspace's `[patch.crates-io]` puts this crate in its place, so
//! tokio (crates.io, unchanged) builds with `net` for x86_64-unknown-hermit.
//!
//! What is here: [`Domain`] (IPv4, IPv6), [`Type`] (stream, datagram), [`Protocol`] (TCP, UDP),
//! [`SockAddr`] (IPv4/IPv6 socket addresses in hermit's `sockaddr_in`/`sockaddr_in6` layout),
//! [`Socket`] (create, bind, listen, accept, connect, addresses, non-blocking mode, the common
//! options, shutdown, file-descriptor traits and conversions to and from std's sockets) and
//! [`SockRef`] (a [`Socket`] view of anything with a file descriptor). What the runtime does not
//! support comes back as the errno it returns (e.g. `ENOPROTOOPT` for an unknown option), never
//! as a silent success from this crate.
//!
//! Only `target_os = "hermit"` is supported: on any other target the crate is a compile error
//! naming that (a host build of a workspace crate that wants tokio's `net` must leave it off).
//! The host builds it only for its unit tests (`cargo test -p socket2`), which check the
//! constants and the address layout against the `hermit` crate's, the side that decodes them.
#![deny(unsafe_code)]

#[cfg(not(any(target_os = "hermit", test)))]
compile_error!(
    "this socket2 (hermit/socket2, put in crates.io's place by the workspace's [patch.crates-io]) \
     is for target_os = \"hermit\" only"
);

mod consts;
mod sockaddr;
#[cfg(target_os = "hermit")]
mod socket;
#[cfg(target_os = "hermit")]
mod sockref;
#[cfg(target_os = "hermit")]
mod sys;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;

pub use sockaddr::SockAddr;
#[cfg(target_os = "hermit")]
pub use socket::Socket;
#[cfg(target_os = "hermit")]
pub use sockref::SockRef;

/// A socket's communication domain (`AF_INET`, `AF_INET6`).
#[derive(Copy, Clone, Eq, PartialEq, Hash)]
pub struct Domain(i32);

impl Domain {
    /// IPv4 (`AF_INET`).
    pub const IPV4: Domain = Domain(consts::AF_INET);
    /// IPv6 (`AF_INET6`).
    pub const IPV6: Domain = Domain(consts::AF_INET6);

    /// The domain of `address`.
    pub const fn for_address(address: SocketAddr) -> Domain {
        match address {
            SocketAddr::V4(_) => Domain::IPV4,
            SocketAddr::V6(_) => Domain::IPV6,
        }
    }
}

impl From<i32> for Domain {
    fn from(d: i32) -> Domain {
        Domain(d)
    }
}

impl From<Domain> for i32 {
    fn from(d: Domain) -> i32 {
        d.0
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Domain::IPV4 => f.write_str("AF_INET"),
            Domain::IPV6 => f.write_str("AF_INET6"),
            Domain(d) => write!(f, "Domain({d})"),
        }
    }
}

/// A socket's type (`SOCK_STREAM`, `SOCK_DGRAM`).
#[derive(Copy, Clone, Eq, PartialEq, Hash)]
pub struct Type(i32);

impl Type {
    /// A byte stream (`SOCK_STREAM`: TCP).
    pub const STREAM: Type = Type(consts::SOCK_STREAM);
    /// Datagrams (`SOCK_DGRAM`: UDP).
    pub const DGRAM: Type = Type(consts::SOCK_DGRAM);

    /// The same type, created non-blocking (`SOCK_NONBLOCK`).
    pub const fn nonblocking(self) -> Type {
        Type(self.0 | consts::SOCK_NONBLOCK)
    }

    /// The same type with close-on-exec (`SOCK_CLOEXEC`; no exec here, accepted).
    pub const fn cloexec(self) -> Type {
        Type(self.0 | consts::SOCK_CLOEXEC)
    }
}

impl From<i32> for Type {
    fn from(t: i32) -> Type {
        Type(t)
    }
}

impl From<Type> for i32 {
    fn from(t: Type) -> i32 {
        t.0
    }
}

impl fmt::Debug for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Type(self.0 & !(consts::SOCK_NONBLOCK | consts::SOCK_CLOEXEC)) {
            Type::STREAM => f.write_str("SOCK_STREAM"),
            Type::DGRAM => f.write_str("SOCK_DGRAM"),
            Type(t) => write!(f, "Type({t})"),
        }
    }
}

/// A socket's protocol (`IPPROTO_TCP`, `IPPROTO_UDP`).
#[derive(Copy, Clone, Eq, PartialEq, Hash)]
pub struct Protocol(i32);

impl Protocol {
    /// TCP.
    pub const TCP: Protocol = Protocol(consts::IPPROTO_TCP);
    /// UDP.
    pub const UDP: Protocol = Protocol(consts::IPPROTO_UDP);
}

impl From<i32> for Protocol {
    fn from(p: i32) -> Protocol {
        Protocol(p)
    }
}

impl From<Protocol> for i32 {
    fn from(p: Protocol) -> i32 {
        p.0
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Protocol::TCP => f.write_str("IPPROTO_TCP"),
            Protocol::UDP => f.write_str("IPPROTO_UDP"),
            Protocol(p) => write!(f, "Protocol({p})"),
        }
    }
}
