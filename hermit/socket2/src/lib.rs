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
#![deny(unsafe_code)]

#[cfg(not(target_os = "hermit"))]
compile_error!(
    "this socket2 (hermit/socket2, put in crates.io's place by the workspace's [patch.crates-io]) \
     is for target_os = \"hermit\" only"
);

mod sockaddr;
mod socket;
mod sys;

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::fd::AsFd;

pub use sockaddr::SockAddr;
pub use socket::Socket;

/// A socket's communication domain (`AF_INET`, `AF_INET6`).
#[derive(Copy, Clone, Eq, PartialEq, Hash)]
pub struct Domain(i32);

impl Domain {
    /// IPv4 (`AF_INET`).
    pub const IPV4: Domain = Domain(sys::AF_INET);
    /// IPv6 (`AF_INET6`).
    pub const IPV6: Domain = Domain(sys::AF_INET6);

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
    pub const STREAM: Type = Type(sys::SOCK_STREAM);
    /// Datagrams (`SOCK_DGRAM`: UDP).
    pub const DGRAM: Type = Type(sys::SOCK_DGRAM);

    /// The same type, created non-blocking (`SOCK_NONBLOCK`).
    pub const fn nonblocking(self) -> Type {
        Type(self.0 | sys::SOCK_NONBLOCK)
    }

    /// The same type with close-on-exec (`SOCK_CLOEXEC`; no exec here, accepted).
    pub const fn cloexec(self) -> Type {
        Type(self.0 | sys::SOCK_CLOEXEC)
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
        match Type(self.0 & !(sys::SOCK_NONBLOCK | sys::SOCK_CLOEXEC)) {
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
    pub const TCP: Protocol = Protocol(sys::IPPROTO_TCP);
    /// UDP.
    pub const UDP: Protocol = Protocol(sys::IPPROTO_UDP);
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

/// A [`Socket`] borrowed from anything that has a file descriptor (a std or mio or tokio
/// socket), to set options on it; it never closes the descriptor.
pub struct SockRef<'s> {
    socket: ManuallyDrop<Socket>,
    _borrow: PhantomData<&'s Socket>,
}

impl Deref for SockRef<'_> {
    type Target = Socket;

    fn deref(&self) -> &Socket {
        &self.socket
    }
}

impl<'s, S: AsFd> From<&'s S> for SockRef<'s> {
    fn from(s: &'s S) -> SockRef<'s> {
        SockRef {
            socket: ManuallyDrop::new(sys::borrowed(s.as_fd())),
            _borrow: PhantomData,
        }
    }
}

impl fmt::Debug for SockRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.socket, f)
    }
}
