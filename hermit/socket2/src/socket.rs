//! [`Socket`]: an owned socket descriptor and the calls on it. Every call is one hermit-abi call
//! (see `sys`); its errno comes back as the `io::Error`.

use std::fmt;
use std::io;
use std::net::{self, Shutdown};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::sys::{self, Linger};
use crate::{Domain, Protocol, SockAddr, Type};

/// An owned socket (closed when dropped).
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// `socket(domain, type, protocol)` (protocol 0 when `None`).
    pub fn new(domain: Domain, ty: Type, protocol: Option<Protocol>) -> io::Result<Socket> {
        Socket::new_raw(domain, ty, protocol)
    }

    /// The same as [`Socket::new`] (there are no flags to add here).
    pub fn new_raw(domain: Domain, ty: Type, protocol: Option<Protocol>) -> io::Result<Socket> {
        let p = protocol.map_or(0, i32::from);
        sys::socket(domain.into(), ty.into(), p).map(Socket::from)
    }

    /// Binds the socket to `address`.
    pub fn bind(&self, address: &SockAddr) -> io::Result<()> {
        sys::bind(self.as_fd(), address)
    }

    /// Connects to `address` (a non-blocking socket returns `EINPROGRESS` while it connects).
    pub fn connect(&self, address: &SockAddr) -> io::Result<()> {
        sys::connect(self.as_fd(), address)
    }

    /// Marks the socket as listening, with room for `backlog` pending connections.
    pub fn listen(&self, backlog: i32) -> io::Result<()> {
        sys::listen(self.as_fd(), backlog)
    }

    /// Takes a connection from a listening socket: the new socket and its peer's address.
    pub fn accept(&self) -> io::Result<(Socket, SockAddr)> {
        sys::accept(self.as_fd()).map(|(fd, a)| (Socket::from(fd), a))
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SockAddr> {
        sys::local_addr(self.as_fd())
    }

    /// The address of the connected peer.
    pub fn peer_addr(&self) -> io::Result<SockAddr> {
        sys::peer_addr(self.as_fd())
    }

    /// A second descriptor for the same socket.
    pub fn try_clone(&self) -> io::Result<Socket> {
        sys::dup(self.as_fd()).map(Socket::from)
    }

    /// Whether calls on the socket return `WouldBlock` instead of waiting.
    pub fn nonblocking(&self) -> io::Result<bool> {
        sys::nonblocking(self.as_fd())
    }

    /// Sets non-blocking mode (`FIONBIO`).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        sys::set_nonblocking(self.as_fd(), nonblocking)
    }

    /// Shuts down reading, writing or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => sys::SHUT_RD,
            Shutdown::Write => sys::SHUT_WR,
            Shutdown::Both => sys::SHUT_RDWR,
        };
        sys::shutdown(self.as_fd(), how)
    }

    /// The pending error (`SO_ERROR`), cleared by reading it.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let e: i32 = self.get(sys::SOL_SOCKET, sys::SO_ERROR)?;
        Ok((e != 0).then(|| io::Error::from_raw_os_error(e)))
    }

    fn get<T: sys::Opt>(&self, level: i32, name: i32) -> io::Result<T> {
        sys::getsockopt(self.as_fd(), level, name)
    }

    fn set<T: sys::Opt>(&self, level: i32, name: i32, v: T) -> io::Result<()> {
        sys::setsockopt(self.as_fd(), level, name, v)
    }

    fn get_bool(&self, level: i32, name: i32) -> io::Result<bool> {
        self.get::<i32>(level, name).map(|v| v != 0)
    }

    /// `SO_KEEPALIVE`.
    pub fn keepalive(&self) -> io::Result<bool> {
        self.get_bool(sys::SOL_SOCKET, sys::SO_KEEPALIVE)
    }

    /// Sets `SO_KEEPALIVE`.
    pub fn set_keepalive(&self, keepalive: bool) -> io::Result<()> {
        self.set(sys::SOL_SOCKET, sys::SO_KEEPALIVE, i32::from(keepalive))
    }

    /// `SO_REUSEADDR`.
    pub fn reuse_address(&self) -> io::Result<bool> {
        self.get_bool(sys::SOL_SOCKET, sys::SO_REUSEADDR)
    }

    /// Sets `SO_REUSEADDR`.
    pub fn set_reuse_address(&self, reuse: bool) -> io::Result<()> {
        self.set(sys::SOL_SOCKET, sys::SO_REUSEADDR, i32::from(reuse))
    }

    /// `SO_BROADCAST`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.get_bool(sys::SOL_SOCKET, sys::SO_BROADCAST)
    }

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, broadcast: bool) -> io::Result<()> {
        self.set(sys::SOL_SOCKET, sys::SO_BROADCAST, i32::from(broadcast))
    }

    /// `SO_SNDBUF`.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        self.get::<i32>(sys::SOL_SOCKET, sys::SO_SNDBUF)
            .map(|v| v as usize)
    }

    /// Sets `SO_SNDBUF`.
    pub fn set_send_buffer_size(&self, size: usize) -> io::Result<()> {
        self.set(sys::SOL_SOCKET, sys::SO_SNDBUF, clamp(size))
    }

    /// `SO_RCVBUF`.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        self.get::<i32>(sys::SOL_SOCKET, sys::SO_RCVBUF)
            .map(|v| v as usize)
    }

    /// Sets `SO_RCVBUF`.
    pub fn set_recv_buffer_size(&self, size: usize) -> io::Result<()> {
        self.set(sys::SOL_SOCKET, sys::SO_RCVBUF, clamp(size))
    }

    /// `SO_LINGER`: `None` when off, else how long a close waits to send what is queued.
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        let l: Linger = self.get(sys::SOL_SOCKET, sys::SO_LINGER)?;
        Ok((l.l_onoff != 0).then(|| Duration::from_secs(l.l_linger.max(0) as u64)))
    }

    /// Sets `SO_LINGER` (whole seconds).
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        let l = match linger {
            Some(d) => Linger {
                l_onoff: 1,
                l_linger: clamp(d.as_secs() as usize),
            },
            None => Linger::default(),
        };
        self.set(sys::SOL_SOCKET, sys::SO_LINGER, l)
    }

    /// `TCP_NODELAY`.
    pub fn tcp_nodelay(&self) -> io::Result<bool> {
        self.get_bool(sys::IPPROTO_TCP, sys::TCP_NODELAY)
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_tcp_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.set(sys::IPPROTO_TCP, sys::TCP_NODELAY, i32::from(nodelay))
    }

    /// `IPV6_V6ONLY`.
    pub fn only_v6(&self) -> io::Result<bool> {
        self.get_bool(sys::IPPROTO_IPV6, sys::IPV6_V6ONLY)
    }

    /// Sets `IPV6_V6ONLY`.
    pub fn set_only_v6(&self, only_v6: bool) -> io::Result<()> {
        self.set(sys::IPPROTO_IPV6, sys::IPV6_V6ONLY, i32::from(only_v6))
    }

    /// `IP_TOS`.
    pub fn tos_v4(&self) -> io::Result<u32> {
        self.get::<i32>(sys::IPPROTO_IP, sys::IP_TOS)
            .map(|v| v as u32)
    }

    /// Sets `IP_TOS`.
    pub fn set_tos_v4(&self, tos: u32) -> io::Result<()> {
        self.set(sys::IPPROTO_IP, sys::IP_TOS, clamp(tos as usize))
    }

    /// The sender of the next datagram, without taking it (waits for one unless the socket
    /// is non-blocking).
    pub fn peek_sender(&self) -> io::Result<SockAddr> {
        sys::peek_sender(self.as_fd())
    }

    /// `IP_TTL`.
    pub fn ttl_v4(&self) -> io::Result<u32> {
        self.get::<i32>(sys::IPPROTO_IP, sys::IP_TTL)
            .map(|v| v as u32)
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.set(sys::IPPROTO_IP, sys::IP_TTL, clamp(ttl as usize))
    }
}

/// A size as the C `int` an option takes.
fn clamp(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Socket");
        d.field("fd", &self.fd.as_raw_fd());
        if let Ok(a) = self.local_addr() {
            d.field("local_addr", &a);
        }
        if let Ok(a) = self.peer_addr() {
            d.field("peer_addr", &a);
        }
        d.finish()
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl IntoRawFd for Socket {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

impl From<OwnedFd> for Socket {
    fn from(fd: OwnedFd) -> Socket {
        Socket { fd }
    }
}

impl From<Socket> for OwnedFd {
    fn from(s: Socket) -> OwnedFd {
        s.fd
    }
}

/// Conversions to and from std's socket types, which own a descriptor the same way.
macro_rules! std_conversions {
    ($($t:ty),*) => {$(
        impl From<Socket> for $t {
            fn from(s: Socket) -> $t {
                <$t>::from(s.fd)
            }
        }

        impl From<$t> for Socket {
            fn from(s: $t) -> Socket {
                Socket { fd: OwnedFd::from(s) }
            }
        }
    )*};
}

std_conversions!(net::TcpStream, net::TcpListener, net::UdpSocket);
