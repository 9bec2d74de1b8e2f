//! BSD sockets over xenrt's stack (`net`): the objects behind std's and mio's socket
//! descriptors and what each call does to them. Safe code; the raw pointers are turned into
//! slices by [`crate::sys_net`] before anything here runs.
//!
//! The stack is one [`net::Net`] on the first vif, brought up at the first socket call from the
//! command line's xenrt keys (`ip=`/`gw=`/`dns=`, DHCP by default). The stack's sockets are
//! async, but they also have synchronous accessors (`try_accept`, `try_read`/`try_peek`,
//! `try_write`, `tcp_connect_start` + `connect_state`, `try_recv_from`/`try_send_to`,
//! `dns_query` + `result`, `readable`/`writable`), which is what a BSD call needs: try once; if
//! it would block and the descriptor is non-blocking, `EAGAIN`; else wait in
//! [`crate::wait::until`] (which runs the stack meanwhile) and try again.
//!
//! Supported: TCP and UDP over IPv4 and IPv6 (blocking and non-blocking: `O_NONBLOCK`,
//! `SOCK_NONBLOCK`, `FIONBIO`; `SO_RCVTIMEO`/`SO_SNDTIMEO`), `poll`, `eventfd` (mio's waker),
//! `dup`, `MSG_PEEK` on both, `getaddrinfo` for numeric hosts and DNS names ([`Sockets::lookup`]).
//!
//! UDP as POSIX has it: unbound until `bind` (port 0: an ephemeral one), `connect` or the first
//! `sendto` (which bind it to an ephemeral port); `connect` sets the default destination and
//! drops datagrams from anyone else; `recv`/`recvfrom` take one datagram, cut to the buffer
//! (the rest discarded); `sendto` a broadcast address needs `SO_BROADCAST` (`EACCES`);
//! `IP_TTL` applies. Limits: a datagram must fit one frame (1472 bytes over IPv4, 1452 over
//! IPv6: `EMSGSIZE`, the stack does not fragment); 32 datagrams queue each way; an `AF_INET`
//! socket bound to every address also receives IPv6 datagrams to its port; no multicast
//! (its options are `ENOPROTOOPT`); ICMP errors (port unreachable) are not reported.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use net::smoltcp::wire::{DnsQueryType, IpAddress, IpEndpoint, Ipv4Address, Ipv6Address};
use net::{DnsQuery, ListenConfig, Net, NetError, TcpListener, TcpStream, UdpSocket};

use crate::fs::OpenFile;
use crate::layout::{Linger, Pollfd, Stat, Timeval};
use crate::sock::{consts::*, errno::*, errno_of, revents, FdTable};

/// Buffer (each way) of a TCP connection.
const TCP_BUFFER: usize = 32 * 1024;
/// Most listening sockets kept ready per listener (smoltcp has no accept queue).
const MAX_BACKLOG: usize = 16;
/// Most open descriptors.
const MAX_FDS: usize = 1024;
/// Datagrams a UDP socket queues each way.
const UDP_PACKETS: usize = 32;
/// Room per queued datagram (a frame's payload is at most 1472 bytes: the stack does not
/// fragment).
const UDP_ROOM: usize = 2048;
/// How long `getaddrinfo` waits for the DNS server's answers.
const DNS_TIMEOUT_NS: u64 = 5_000_000_000;
/// The TTL of what a socket sends unless `IP_TTL` says otherwise (smoltcp's).
const DEFAULT_TTL: u8 = 64;

/// Result of a call: a value, or the errno.
pub type Res<T> = Result<T, i32>;

/// What a TCP descriptor is at the moment.
enum Tcp {
    /// Created (maybe bound to a port), neither listening nor connected.
    Fresh { port: u16 },
    /// Listening; `pending` are connections taken from the stack by `poll` and not yet
    /// accepted.
    Listening {
        l: TcpListener,
        pending: VecDeque<TcpStream>,
    },
    /// Connected, or connecting (`connecting`: the handshake has not finished).
    Stream { s: TcpStream, connecting: bool },
    /// A connection attempt that failed: its error, reported once by `SO_ERROR` or the next
    /// call.
    Failed(i32),
}

/// A UDP descriptor: unbound until `bind`, `connect` or the first `sendto` (which bind it to an
/// ephemeral port, as POSIX does).
struct Udp {
    s: Option<UdpSocket>,
    /// `AF_INET6` (its unbound address is `::`).
    v6: bool,
    /// `SO_BROADCAST`: sending to a broadcast address is allowed.
    broadcast: bool,
    /// `IP_TTL`, kept for a socket not bound yet.
    ttl: Option<u8>,
}

impl Udp {
    fn any(&self, port: u16) -> IpEndpoint {
        if self.v6 {
            IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::UNSPECIFIED), port)
        } else {
            IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::UNSPECIFIED), port)
        }
    }

    /// Binds it (`port` 0: an ephemeral port) on `addr` (`None`: every address).
    fn bind(&mut self, net: &Net, addr: Option<IpAddress>, port: u16) -> Res<()> {
        let mut s = net
            .udp_bind_to(addr, port, UDP_PACKETS, UDP_ROOM)
            .map_err(|e| errno_of(&e))?;
        s.set_hop_limit(self.ttl).map_err(|_| EINVAL)?;
        self.s = Some(s);
        Ok(())
    }

    /// The stack's socket, bound to an ephemeral port first if it is not yet.
    fn bound(&mut self, net: &Net) -> Res<&mut UdpSocket> {
        if self.s.is_none() {
            self.bind(net, None, 0)?;
        }
        self.s.as_mut().ok_or(EINVAL)
    }
}

/// An eventfd: a counter (mio's waker).
struct EventFd {
    count: u64,
}

enum Kind {
    Tcp(Tcp),
    Udp(Udp),
    Event(EventFd),
    /// An open file or directory ([`crate::fs`]): always ready for `poll`, as POSIX says.
    File(OpenFile),
}

/// An open file description (shared by `dup`ed descriptors).
struct Obj {
    kind: Kind,
    nonblock: bool,
    rcv_timeout: Option<u64>,
    snd_timeout: Option<u64>,
}

type Shared = Rc<RefCell<Obj>>;

/// The socket layer's state: the stack (once up) and the descriptor table.
///
/// Each part is its own cell, borrowed only for a moment and never across a wait: a call that
/// waits holds clones (the stack's handle, the descriptor's object), so while it is parked the
/// other threads make socket calls of their own.
pub struct Sockets {
    net: RefCell<Option<Net>>,
    fds: RefCell<FdTable<Shared>>,
    warned: RefCell<Vec<&'static str>>,
    /// Listening ports not yet announced as ready (waiting for the IPv4 address, see
    /// [`Sockets::announce`]).
    unannounced: RefCell<Vec<u16>>,
}

impl Default for Sockets {
    fn default() -> Self {
        Self::new()
    }
}

impl Sockets {
    /// No stack yet, no descriptors.
    pub const fn new() -> Self {
        Sockets {
            net: RefCell::new(None),
            fds: RefCell::new(FdTable::new(MAX_FDS)),
            warned: RefCell::new(Vec::new()),
            unannounced: RefCell::new(Vec::new()),
        }
    }

    /// Prints one console line the first time an unsupported `what` is asked for; returns
    /// `errno`.
    pub fn unsupported(&self, what: &'static str, errno: i32) -> i32 {
        let mut warned = self.warned.borrow_mut();
        if !warned.contains(&what) {
            warned.push(what);
            xen::println!("xenrt: {what} is not supported (errno {errno})");
        }
        errno
    }

    /// The stack, brought up on first use.
    fn net(&self) -> Res<Net> {
        if let Some(n) = self.net.borrow().as_ref() {
            return Ok(n.clone());
        }
        match net::xen::up() {
            Ok(n) => {
                if let Some(a) = n.ipv4() {
                    xen::println!("xenrt: network up, {a}");
                } else {
                    xen::println!("xenrt: network up, waiting for DHCP");
                }
                *self.net.borrow_mut() = Some(n.clone());
                Ok(n)
            }
            Err(e) => {
                xen::println!("xenrt: network: {e}");
                Err(ENETDOWN)
            }
        }
    }

    /// Runs the stack once if it is up; when it next needs to run without an event.
    pub fn pump(&self) -> Option<u64> {
        let net = self.current_net()?;
        let next = crate::wait::pump(&net);
        if !self.unannounced.borrow().is_empty() {
            self.announce(&net);
        }
        next
    }

    /// Brings the stack up now (`sys_network_init`).
    pub fn bring_up(&self) -> Res<i32> {
        self.net().map(|_| 0)
    }

    /// The stack if it is up (never brings it up).
    fn current_net(&self) -> Option<Net> {
        self.net.borrow().clone()
    }

    fn obj(&self, fd: i32) -> Res<Shared> {
        self.fds.borrow().get(fd).cloned()
    }

    /// Whether `fd` is one of ours (a socket or eventfd; not the console).
    pub fn is_open(&self, fd: i32) -> bool {
        self.fds.borrow().get(fd).is_ok()
    }

    fn insert(&self, kind: Kind, nonblock: bool) -> Res<i32> {
        self.fds.borrow_mut().insert(Rc::new(RefCell::new(Obj {
            kind,
            nonblock,
            rcv_timeout: None,
            snd_timeout: None,
        })))
    }

    /// `socket(domain, type, protocol)`.
    pub fn socket(&self, domain: i32, ty: i32, protocol: i32) -> Res<i32> {
        if domain != AF_INET && domain != AF_INET6 {
            return Err(self.unsupported("socket family other than AF_INET/AF_INET6", EAFNOSUPPORT));
        }
        let nonblock = ty & SOCK_NONBLOCK != 0;
        let kind = match ty & !(SOCK_NONBLOCK | SOCK_CLOEXEC) {
            SOCK_STREAM if protocol == 0 || protocol == IPPROTO_TCP => {
                Kind::Tcp(Tcp::Fresh { port: 0 })
            }
            SOCK_DGRAM if protocol == 0 || protocol == IPPROTO_UDP => Kind::Udp(Udp {
                s: None,
                v6: domain == AF_INET6,
                broadcast: false,
                ttl: None,
            }),
            SOCK_STREAM | SOCK_DGRAM => {
                return Err(self.unsupported("socket protocol other than TCP/UDP", EPROTONOSUPPORT))
            }
            _ => {
                return Err(self.unsupported(
                    "socket type other than SOCK_STREAM/SOCK_DGRAM",
                    EPROTONOSUPPORT,
                ))
            }
        };
        self.net()?;
        self.insert(kind, nonblock)
    }

    /// `bind(fd, addr)`: remembers the port (a listener takes every address of the interface).
    pub fn bind(&self, fd: i32, addr: IpEndpoint) -> Res<i32> {
        let net = self.net()?;
        if !addr.addr.is_unspecified() && !net.addresses().iter().any(|c| c.address() == addr.addr)
        {
            return Err(EADDRNOTAVAIL);
        }
        let o = self.obj(fd)?;
        let mut o = o.borrow_mut();
        match &mut o.kind {
            Kind::Tcp(Tcp::Fresh { port }) => {
                *port = addr.port;
                Ok(0)
            }
            Kind::Tcp(_) => Err(EINVAL),
            Kind::Udp(u) if u.s.is_none() => {
                let on = (!addr.addr.is_unspecified()).then_some(addr.addr);
                u.bind(&net, on, addr.port)?;
                Ok(0)
            }
            Kind::Udp(_) => Err(EINVAL),
            Kind::Event(_) | Kind::File(_) => Err(ENOTSOCK),
        }
    }

    /// `listen(fd, backlog)`.
    pub fn listen(&self, fd: i32, backlog: i32) -> Res<i32> {
        let net = self.net()?;
        let o = self.obj(fd)?;
        let mut o = o.borrow_mut();
        let port = match &o.kind {
            Kind::Tcp(Tcp::Fresh { port }) => *port,
            Kind::Tcp(Tcp::Listening { .. }) => return Ok(0),
            Kind::Tcp(_) => return Err(EINVAL),
            Kind::Udp(_) => return Err(EOPNOTSUPP),
            Kind::Event(_) | Kind::File(_) => return Err(ENOTSOCK),
        };
        if port == 0 {
            return Err(self.unsupported("listen without bind (an ephemeral port)", EOPNOTSUPP));
        }
        let cfg = ListenConfig {
            backlog: (backlog.max(1) as usize).min(MAX_BACKLOG),
            rx_buffer: TCP_BUFFER,
            tx_buffer: TCP_BUFFER,
        };
        let l = net.tcp_listen(port, cfg).map_err(|e| errno_of(&e))?;
        // From now on a SYN to a port nobody listens on is refused (see net::gate).
        net.serving();
        o.kind = Kind::Tcp(Tcp::Listening {
            l,
            pending: VecDeque::new(),
        });
        drop(o);
        self.unannounced.borrow_mut().push(port);
        self.announce(&net);
        Ok(0)
    }

    /// Says the program is ready on its listening ports once the stack has its IPv4 address
    /// (at once with `ip=`, else when DHCP binds: the scheduler's pump calls this), as a
    /// no_std server does ([`xen::boot::ready`]: the xenstore node `data/xenrt/ready`, which the
    /// on-demand activator waits for, and the console line `xenrt: listening on ADDR:PORT N.N
    /// ms after entry`).
    fn announce(&self, net: &Net) {
        let Some(addr) = net.ipv4() else {
            return;
        };
        let ports = core::mem::take(&mut *self.unannounced.borrow_mut());
        if ports.is_empty() {
            return;
        }
        let endpoints: Vec<alloc::string::String> = ports
            .iter()
            .map(|p| alloc::format!("{}:{p}", addr.address()))
            .collect();
        xen::boot::ready("xenrt", &endpoints);
    }

    /// `accept(fd)`: the new descriptor and the peer's address.
    pub fn accept(&self, fd: i32) -> Res<(i32, Option<IpEndpoint>)> {
        let net = self.net()?;
        let o = self.obj(fd)?;
        let (nonblock, timeout) = {
            let o = o.borrow();
            (o.nonblock, o.rcv_timeout)
        };
        let take = || -> Res<Option<TcpStream>> {
            let mut o = o.borrow_mut();
            match &mut o.kind {
                Kind::Tcp(Tcp::Listening { l, pending }) => {
                    Ok(pending.pop_front().or_else(|| l.try_accept()))
                }
                Kind::Tcp(_) => Err(EINVAL),
                Kind::Udp(_) => Err(EOPNOTSUPP),
                Kind::Event(_) | Kind::File(_) => Err(ENOTSOCK),
            }
        };
        crate::wait::pump(&net);
        let mut got = take()?;
        if got.is_none() && !nonblock {
            let deadline = timeout.map(|t| xen::time::now_ns().saturating_add(t));
            let mut err = None;
            crate::wait::until(Some(&net), deadline, || match take() {
                Ok(Some(s)) => {
                    got = Some(s);
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    err = Some(e);
                    true
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
        }
        let s = got.ok_or(EAGAIN)?;
        let peer = s.peer();
        let fd = self.insert(
            Kind::Tcp(Tcp::Stream {
                s,
                connecting: false,
            }),
            false,
        )?;
        Ok((fd, peer))
    }

    /// `connect(fd, addr)`: blocking waits for the handshake; non-blocking returns
    /// `EINPROGRESS` (then `poll` for `POLLOUT` and `SO_ERROR`).
    pub fn connect(&self, fd: i32, addr: IpEndpoint) -> Res<i32> {
        let net = self.net()?;
        let o = self.obj(fd)?;
        let (nonblock, timeout) = {
            let mut ob = o.borrow_mut();
            match &mut ob.kind {
                Kind::Tcp(Tcp::Fresh { .. }) => {}
                Kind::Tcp(Tcp::Stream {
                    connecting: true, ..
                }) => return Err(EALREADY),
                Kind::Tcp(Tcp::Stream { .. }) => return Err(EISCONN),
                Kind::Tcp(Tcp::Failed(e)) => return Err(*e),
                Kind::Tcp(Tcp::Listening { .. }) => return Err(EINVAL),
                Kind::Udp(u) => {
                    // A default destination and a filter: nothing goes on the wire.
                    if addr.addr.is_unspecified() || addr.port == 0 {
                        return Err(EINVAL);
                    }
                    u.bound(&net)?.connect(Some(addr));
                    return Ok(0);
                }
                Kind::Event(_) | Kind::File(_) => return Err(ENOTSOCK),
            }
            let addr = if addr.addr.is_unspecified() {
                IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(127, 0, 0, 1)), addr.port)
            } else {
                addr
            };
            let s = net
                .tcp_connect_start(addr.addr, addr.port, TCP_BUFFER, TCP_BUFFER)
                .map_err(|e| errno_of(&e))?;
            ob.kind = Kind::Tcp(Tcp::Stream {
                s,
                connecting: true,
            });
            (ob.nonblock, ob.snd_timeout)
        };
        crate::wait::pump(&net);
        if nonblock {
            return Err(EINPROGRESS);
        }
        let deadline = timeout.map(|t| xen::time::now_ns().saturating_add(t));
        crate::wait::until(Some(&net), deadline, || {
            connect_done(&mut o.borrow_mut()).is_some()
        });
        let r = connect_done(&mut o.borrow_mut());
        match r {
            Some(Ok(())) => Ok(0),
            Some(Err(e)) => Err(e),
            None => Err(ETIMEDOUT),
        }
    }

    /// An open file under a new descriptor (`open`).
    pub fn insert_file(&self, f: OpenFile) -> Res<i32> {
        self.insert(Kind::File(f), false)
    }

    /// `f` on the open file under `fd`; `not_file` if `fd` is a socket or eventfd.
    pub fn with_file<T>(
        &self,
        fd: i32,
        not_file: i32,
        f: impl FnOnce(&mut OpenFile) -> Res<T>,
    ) -> Res<T> {
        let o = self.obj(fd)?;
        let mut o = o.borrow_mut();
        match &mut o.kind {
            Kind::File(file) => f(file),
            _ => Err(not_file),
        }
    }

    /// `fstat(fd)`: a file's status; a socket is `S_IFSOCK`, an eventfd has no type.
    pub fn fstat(&self, fd: i32) -> Res<Stat> {
        const S_IFSOCK: u32 = 0o14_0000;
        let o = self.obj(fd)?;
        let o = o.borrow();
        Ok(match &o.kind {
            Kind::File(f) => f.stat(),
            Kind::Tcp(_) | Kind::Udp(_) => Stat {
                st_mode: S_IFSOCK | 0o777,
                ..Stat::default()
            },
            Kind::Event(_) => Stat {
                st_mode: 0o600,
                ..Stat::default()
            },
        })
    }

    /// `read(fd, buf)`: a file's, else `recv` with no flags.
    pub fn read(&self, fd: i32, buf: &mut [u8]) -> Res<usize> {
        match self.with_file(fd, ENOTSOCK, |f| f.read(buf)) {
            Err(ENOTSOCK) => self.recv(fd, buf, 0),
            r => r,
        }
    }

    /// `write(fd, data)`: a file's, else `send`.
    pub fn write(&self, fd: i32, data: &[u8]) -> Res<usize> {
        match self.with_file(fd, ENOTSOCK, |f| f.write(data)) {
            Err(ENOTSOCK) => self.send(fd, data),
            r => r,
        }
    }

    /// `recv(fd, buf, flags)` (a file is `ENOTSOCK`).
    pub fn recv(&self, fd: i32, buf: &mut [u8], flags: i32) -> Res<usize> {
        self.recv_from(fd, buf, flags).map(|(n, _)| n)
    }

    /// `recvfrom(fd, buf, flags)`: what arrived and, for a datagram, who sent it. `MSG_PEEK`
    /// leaves it to be read again. A datagram larger than `buf` is cut to it, the rest
    /// discarded (POSIX; the length returned is what was copied).
    pub fn recv_from(
        &self,
        fd: i32,
        buf: &mut [u8],
        flags: i32,
    ) -> Res<(usize, Option<IpEndpoint>)> {
        if flags & !MSG_PEEK != 0 {
            return Err(self.unsupported("recv flags other than MSG_PEEK", EOPNOTSUPP));
        }
        let peek = flags & MSG_PEEK != 0;
        let o = self.obj(fd)?;
        if matches!(o.borrow().kind, Kind::File(_)) {
            return Err(ENOTSOCK);
        }
        let is_event = matches!(o.borrow().kind, Kind::Event(_));
        let (nonblock, timeout) = {
            let o = o.borrow();
            (o.nonblock, o.rcv_timeout)
        };
        if is_event {
            if peek {
                return Err(EINVAL);
            }
            // An eventfd does not bring the stack up; it runs meanwhile if it is up.
            let r = try_or_wait(
                self.current_net().as_ref(),
                nonblock,
                timeout,
                || event_read(&o, buf),
                || readable(&o),
            )?;
            return r.map(|n| (n, None)).ok_or(EAGAIN);
        }
        let net = self.net()?;
        crate::wait::pump(&net);
        let r = try_or_wait(
            Some(&net),
            nonblock,
            timeout,
            || try_recv(&o, buf, peek),
            || readable(&o),
        )?;
        r.ok_or(EAGAIN)
    }

    /// `send(fd, data, flags)` and `write(fd, data)`; on a UDP socket, one datagram to its
    /// peer (`EDESTADDRREQ` without one); a file is `ENOTSOCK`.
    pub fn send(&self, fd: i32, data: &[u8]) -> Res<usize> {
        self.send_to(fd, data, None)
    }

    /// `sendto(fd, data, flags, to)`: on a UDP socket one datagram to `to` (or, without it,
    /// to the peer), bound to an ephemeral port first if it is not yet; `EMSGSIZE` for more
    /// than one frame carries (1472 bytes over IPv4: the stack does not fragment), `EACCES`
    /// for a broadcast address without `SO_BROADCAST`. On a TCP socket `to` is ignored.
    pub fn send_to(&self, fd: i32, data: &[u8], to: Option<IpEndpoint>) -> Res<usize> {
        let o = self.obj(fd)?;
        if matches!(o.borrow().kind, Kind::File(_)) {
            return Err(ENOTSOCK);
        }
        let is_event = matches!(o.borrow().kind, Kind::Event(_));
        if is_event {
            return event_write(&o, data);
        }
        let net = self.net()?;
        let (nonblock, timeout) = {
            let o = o.borrow();
            (o.nonblock, o.snd_timeout)
        };
        if let Some(to) = to {
            let mut ob = o.borrow_mut();
            if let Kind::Udp(u) = &mut ob.kind {
                if !u.broadcast && is_broadcast(&net, to.addr) {
                    return Err(EACCES);
                }
                u.bound(&net)?;
            }
        }
        let r = try_or_wait(
            Some(&net),
            nonblock,
            timeout,
            || try_send(&o, data, to),
            || writable(&o),
        )?;
        // Send now rather than at the next wait.
        crate::wait::pump(&net);
        r.ok_or(EAGAIN)
    }

    /// `close(fd)`: the socket closes (gracefully: FIN after what is queued) once its last
    /// descriptor is closed.
    pub fn close(&self, fd: i32) -> Res<i32> {
        let o = self.fds.borrow_mut().remove(fd)?;
        drop(o);
        if let Some(n) = self.current_net() {
            crate::wait::pump(&n);
        }
        Ok(0)
    }

    /// `dup(fd)`.
    pub fn dup(&self, fd: i32) -> Res<i32> {
        let o = self.obj(fd)?;
        self.fds.borrow_mut().insert(o)
    }

    /// `shutdown(fd, how)`: closes our sending side for `SHUT_WR`/`SHUT_RDWR`; `SHUT_RD` is
    /// accepted and does nothing (what arrives is still readable).
    pub fn shutdown(&self, fd: i32, how: i32) -> Res<i32> {
        let o = self.obj(fd)?;
        let mut o = o.borrow_mut();
        match (&mut o.kind, how) {
            (Kind::Tcp(Tcp::Stream { s, .. }), SHUT_WR | SHUT_RDWR) => s.shutdown_write(),
            (Kind::Tcp(Tcp::Stream { .. }), SHUT_RD) => {}
            (Kind::Tcp(_), SHUT_RD | SHUT_WR | SHUT_RDWR) => return Err(ENOTCONN),
            (Kind::Udp(_), _) => {
                drop(o);
                return Err(self.unsupported("shutdown of a UDP socket", EOPNOTSUPP));
            }
            (Kind::Event(_) | Kind::File(_), _) => return Err(ENOTSOCK),
            _ => return Err(EINVAL),
        }
        if let Some(n) = self.current_net() {
            crate::wait::pump(&n);
        }
        Ok(0)
    }

    /// The peer's address (`getpeername`).
    pub fn peer(&self, fd: i32) -> Res<IpEndpoint> {
        let o = self.obj(fd)?;
        let o = o.borrow();
        match &o.kind {
            Kind::Tcp(Tcp::Stream { s, .. }) => s.peer().ok_or(ENOTCONN),
            Kind::Tcp(_) => Err(ENOTCONN),
            Kind::Udp(u) => u.s.as_ref().and_then(|s| s.peer()).ok_or(ENOTCONN),
            Kind::Event(_) | Kind::File(_) => Err(ENOTSOCK),
        }
    }

    /// Our address (`getsockname`).
    pub fn local(&self, fd: i32) -> Res<IpEndpoint> {
        let any = |port| IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::UNSPECIFIED), port);
        let o = self.obj(fd)?;
        let o = o.borrow();
        match &o.kind {
            Kind::Tcp(Tcp::Stream { s, .. }) => Ok(s.local().unwrap_or(any(0))),
            Kind::Tcp(Tcp::Listening { l, .. }) => Ok(any(l.port())),
            Kind::Tcp(Tcp::Fresh { port }) => Ok(any(*port)),
            Kind::Tcp(Tcp::Failed(_)) => Ok(any(0)),
            Kind::Udp(u) => Ok(match &u.s {
                Some(s) => {
                    let l = s.local();
                    l.addr.map_or(u.any(l.port), |a| IpEndpoint::new(a, l.port))
                }
                None => u.any(0),
            }),
            Kind::Event(_) | Kind::File(_) => Err(ENOTSOCK),
        }
    }

    /// `setsockopt`: the options std and mio set. Accepted and applied: `SO_RCVTIMEO`,
    /// `SO_SNDTIMEO`; on UDP `SO_BROADCAST` (sending to a broadcast address) and `IP_TTL`;
    /// accepted with no effect (the stack's behaviour already, or harmless): `SO_REUSEADDR`,
    /// `SO_KEEPALIVE` (the stack probes idle connections), `TCP_NODELAY` (Nagle is off),
    /// `SO_LINGER`, `IPV6_V6ONLY`, `SO_SNDBUF`/`SO_RCVBUF`, `SO_BROADCAST` on TCP. Multicast
    /// (groups, TTL, loop), `IP_TOS`, `IP_TTL` on TCP and the rest: `ENOPROTOOPT`, each named
    /// once on the console.
    pub fn setsockopt(&self, fd: i32, level: i32, name: i32, val: &[u8]) -> Res<i32> {
        let o = self.obj(fd)?;
        let mut o = o.borrow_mut();
        match (level, name, &mut o.kind) {
            (SOL_SOCKET, SO_RCVTIMEO | SO_SNDTIMEO, _) => {
                let t = timeval_of(val)?;
                if name == SO_RCVTIMEO {
                    o.rcv_timeout = t;
                } else {
                    o.snd_timeout = t;
                }
                Ok(0)
            }
            (SOL_SOCKET, SO_BROADCAST, Kind::Udp(u)) => {
                u.broadcast = int_of(val)? != 0;
                Ok(0)
            }
            (IPPROTO_IP, IP_TTL, Kind::Udp(u)) => {
                let ttl = match int_of(val)? {
                    -1 => None,
                    t @ 1..=255 => Some(t as u8),
                    _ => return Err(EINVAL),
                };
                u.ttl = ttl;
                if let Some(s) = &mut u.s {
                    s.set_hop_limit(ttl).map_err(|_| EINVAL)?;
                }
                Ok(0)
            }
            (
                SOL_SOCKET,
                SO_REUSEADDR | SO_KEEPALIVE | SO_LINGER | SO_SNDBUF | SO_RCVBUF | SO_BROADCAST,
                _,
            )
            | (IPPROTO_TCP, TCP_NODELAY, Kind::Tcp(_))
            | (IPPROTO_IPV6, IPV6_V6ONLY, _) => Ok(0),
            _ => {
                drop(o);
                Err(self.unsupported(option_name(level, name), ENOPROTOOPT))
            }
        }
    }

    /// `getsockopt`: the option's value as bytes.
    pub fn getsockopt(&self, fd: i32, level: i32, name: i32) -> Res<Vec<u8>> {
        let o = self.obj(fd)?;
        let mut ob = o.borrow_mut();
        let int = |v: i32| Ok(v.to_ne_bytes().to_vec());
        match (level, name) {
            (SOL_SOCKET, SO_ERROR) => match &mut ob.kind {
                Kind::Tcp(t @ Tcp::Failed(_)) => {
                    let Tcp::Failed(e) = *t else { unreachable!() };
                    *t = Tcp::Fresh { port: 0 };
                    int(e)
                }
                _ => match connect_done(&mut ob) {
                    Some(Err(e)) => int(e),
                    _ => int(0),
                },
            },
            (SOL_SOCKET, SO_RCVTIMEO | SO_SNDTIMEO) => {
                let t = if name == SO_RCVTIMEO {
                    ob.rcv_timeout
                } else {
                    ob.snd_timeout
                }
                .unwrap_or(0);
                let tv = Timeval {
                    tv_sec: (t / 1_000_000_000) as i64,
                    tv_usec: ((t % 1_000_000_000) / 1000) as i32,
                };
                let mut v = tv.tv_sec.to_ne_bytes().to_vec();
                v.extend_from_slice(&tv.tv_usec.to_ne_bytes());
                v.extend_from_slice(&[0; 4]);
                Ok(v)
            }
            (SOL_SOCKET, SO_LINGER) => {
                let l = Linger::default();
                let mut v = l.l_onoff.to_ne_bytes().to_vec();
                v.extend_from_slice(&l.l_linger.to_ne_bytes());
                Ok(v)
            }
            (SOL_SOCKET, SO_BROADCAST) => match &ob.kind {
                Kind::Udp(u) => int(u.broadcast as i32),
                _ => int(0),
            },
            (IPPROTO_IP, IP_TTL) if matches!(ob.kind, Kind::Udp(_)) => {
                let Kind::Udp(u) = &ob.kind else {
                    unreachable!()
                };
                int(u.ttl.unwrap_or(DEFAULT_TTL) as i32)
            }
            (SOL_SOCKET, SO_SNDBUF | SO_RCVBUF) if matches!(ob.kind, Kind::Udp(_)) => {
                int((UDP_PACKETS * UDP_ROOM) as i32)
            }
            (SOL_SOCKET, SO_REUSEADDR) | (IPPROTO_TCP, TCP_NODELAY) => int(1),
            (SOL_SOCKET, SO_KEEPALIVE) => int(matches!(ob.kind, Kind::Tcp(_)) as i32),
            (SOL_SOCKET, SO_SNDBUF | SO_RCVBUF) => int(TCP_BUFFER as i32),
            (IPPROTO_IPV6, IPV6_V6ONLY) => int(0),
            _ => {
                drop(ob);
                Err(self.unsupported(option_name(level, name), ENOPROTOOPT))
            }
        }
    }

    /// `getaddrinfo`'s look-up of a DNS name through the stack's DNS server (`dns=` or
    /// DHCP's): its addresses of `family` (`AF_INET`: A records, `AF_INET6`: AAAA, `AF_UNSPEC`:
    /// both, IPv4 first), waiting at most [`DNS_TIMEOUT_NS`] (the thread parks, the others
    /// run). Errors are `EAI_*` codes: `EAI_NONAME` when the server says there is no such name
    /// (or no address of that family), `EAI_AGAIN` when it did not answer in time or there is
    /// no server (or no address to ask from) yet. Each failure is logged (`log=info`), since
    /// std's error carries no code.
    pub fn lookup(&self, name: &str, family: i32) -> Result<Vec<IpAddress>, i32> {
        let types: &[DnsQueryType] = match family {
            AF_INET => &[DnsQueryType::A],
            AF_INET6 => &[DnsQueryType::Aaaa],
            AF_UNSPEC => &[DnsQueryType::A, DnsQueryType::Aaaa],
            _ => return Err(EAI_FAMILY),
        };
        let net = self.net().map_err(|_| EAI_AGAIN)?;
        let deadline = xen::time::now_ns().saturating_add(DNS_TIMEOUT_NS);
        let fail = |why: &dyn core::fmt::Display, code: i32| {
            log::info!("xenrt: getaddrinfo {name}: {why} ({})", eai_name(code));
            code
        };
        // A server to ask (DHCP's comes with the lease) and an address to ask from.
        let can_ask = || {
            let servers = net.dns_servers();
            !servers.is_empty()
                && (net.ipv4().is_some() || servers.iter().all(|s| matches!(s, IpAddress::Ipv6(_))))
        };
        if !crate::wait::until(Some(&net), Some(deadline), can_ask) {
            return Err(fail(&"no DNS server or no address yet", EAI_AGAIN));
        }
        let queries: Vec<DnsQuery> = types
            .iter()
            .map(|t| net.dns_query(name, *t))
            .collect::<Result<_, _>>()
            .map_err(|e| fail(&e, eai_of(&e)))?;
        let mut results: Vec<Option<Result<Vec<IpAddress>, NetError>>> =
            queries.iter().map(|_| None).collect();
        crate::wait::until(Some(&net), Some(deadline), || {
            for (q, r) in queries.iter().zip(results.iter_mut()) {
                if r.is_none() {
                    *r = q.result();
                }
            }
            results.iter().all(Option::is_some)
        });
        let mut addrs = Vec::new();
        // A temporary failure anywhere outranks "no such name": the answer may yet come.
        let mut code = EAI_NONAME;
        for r in results {
            match r {
                Some(Ok(a)) => addrs.extend(a),
                Some(Err(e)) if code != EAI_AGAIN => code = eai_of(&e),
                Some(Err(_)) => {}
                None => code = EAI_AGAIN,
            }
        }
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        let why: &dyn core::fmt::Display = match code {
            EAI_AGAIN => &"no answer in time",
            EAI_NONAME => &"no such name (or no address of that family)",
            _ => &"the look-up failed",
        };
        Err(fail(why, code))
    }

    /// `fcntl(fd, cmd, arg)`: `F_GETFL` (`O_NONBLOCK`, and a file's access mode and
    /// `O_APPEND`)/`F_SETFL` (`O_NONBLOCK`), `F_GETFD`/`F_SETFD`
    /// (close-on-exec means nothing here: accepted), `F_DUPFD`.
    pub fn fcntl(&self, fd: i32, cmd: i32, arg: i32) -> Res<i32> {
        let o = self.obj(fd)?;
        match cmd {
            F_GETFL => {
                let o = o.borrow();
                // A file's access mode and O_APPEND; a socket reports none (as before).
                let mode = match &o.kind {
                    Kind::File(f) => f.status_flags(),
                    _ => 0,
                };
                Ok(mode | if o.nonblock { O_NONBLOCK } else { 0 })
            }
            F_SETFL => {
                o.borrow_mut().nonblock = arg & O_NONBLOCK != 0;
                Ok(0)
            }
            F_GETFD => Ok(0),
            F_SETFD => Ok(0),
            F_DUPFD => self.fds.borrow_mut().insert(o),
            _ => Err(self.unsupported("fcntl command", EINVAL)),
        }
    }

    /// `ioctl(fd, FIONBIO, &on)`.
    pub fn set_nonblocking(&self, fd: i32, on: bool) -> Res<i32> {
        self.obj(fd)?.borrow_mut().nonblock = on;
        Ok(0)
    }

    /// `eventfd(initval, flags)`.
    pub fn eventfd(&self, init: u64, flags: i16) -> Res<i32> {
        self.insert(
            Kind::Event(EventFd { count: init }),
            flags & EFD_NONBLOCK != 0,
        )
    }

    /// `poll(fds, timeout)`: fills each entry's `revents`; returns how many have any. Waits (the
    /// stack running) until one has, or `timeout_ms` passes (negative: no limit; 0: at once).
    pub fn poll(&self, fds: &mut [Pollfd], timeout_ms: i32) -> Res<i32> {
        let net = self.current_net();
        let objs: Vec<Option<Shared>> = fds.iter().map(|p| self.obj(p.fd).ok()).collect();
        let scan = |fds: &mut [Pollfd]| {
            let mut n = 0;
            for (p, o) in fds.iter_mut().zip(&objs) {
                p.revents = match (p.fd, o) {
                    (fd, _) if fd < 0 => 0,
                    (_, Some(o)) => ready(o, p.events),
                    (0, None) => revents(p.events, true, false, false, false),
                    (1 | 2, None) => revents(p.events, false, true, false, false),
                    (_, None) => POLLNVAL,
                };
                n += (p.revents != 0) as i32;
            }
            n
        };
        let deadline = match timeout_ms {
            t if t < 0 => None,
            t => Some(xen::time::now_ns().saturating_add(t as u64 * 1_000_000)),
        };
        let mut n = 0;
        crate::wait::until(net.as_ref(), deadline, || {
            n = scan(fds);
            n > 0
        });
        Ok(n)
    }
}

/// Where a connection attempt stands; moves a finished one on (established: a plain stream;
/// failed: `Failed`, its error kept for `SO_ERROR`). `None` while it runs, or for a TCP
/// socket that is not one; `Some(Ok)` for a UDP socket or an eventfd (nothing to wait for).
fn connect_done(o: &mut Obj) -> Option<Res<()>> {
    let Kind::Tcp(t) = &mut o.kind else {
        return Some(Ok(()));
    };
    let Tcp::Stream { s, connecting } = t else {
        return match t {
            Tcp::Failed(e) => Some(Err(*e)),
            _ => None,
        };
    };
    if !*connecting {
        return Some(Ok(()));
    }
    match s.connect_state()? {
        Ok(()) => {
            *connecting = false;
            Some(Ok(()))
        }
        Err(_) => {
            *t = Tcp::Failed(ECONNREFUSED);
            Some(Err(ECONNREFUSED))
        }
    }
}

/// Tries `attempt`; if it would block (None) on a blocking descriptor, waits while the stack
/// runs until `ready()` or `timeout_ns` passes, then tries once more. None: it would still
/// block (the caller's `EAGAIN`).
fn try_or_wait<T>(
    net: Option<&Net>,
    nonblock: bool,
    timeout_ns: Option<u64>,
    mut attempt: impl FnMut() -> Res<Option<T>>,
    ready: impl FnMut() -> bool,
) -> Res<Option<T>> {
    let r = attempt()?;
    if r.is_some() || nonblock {
        return Ok(r);
    }
    let deadline = timeout_ns.map(|t| xen::time::now_ns().saturating_add(t));
    crate::wait::until(net, deadline, ready);
    attempt()
}

fn try_recv(o: &Shared, buf: &mut [u8], peek: bool) -> Res<Option<(usize, Option<IpEndpoint>)>> {
    let mut o = o.borrow_mut();
    match connect_done(&mut o) {
        None => return Ok(None),
        Some(Err(e)) => return Err(e),
        Some(Ok(())) => {}
    }
    match &mut o.kind {
        Kind::Tcp(Tcp::Stream { s, .. }) => {
            let r = if peek {
                s.try_peek(buf)
            } else {
                s.try_read(buf)
            };
            r.map(|n| n.map(|n| (n, None))).map_err(|e| errno_of(&e))
        }
        // Not bound: nothing can arrive (POSIX has it wait).
        Kind::Udp(Udp { s: None, .. }) => Ok(None),
        Kind::Udp(Udp { s: Some(s), .. }) => {
            Ok(s.try_recv_from(buf, peek).map(|r| (r.len, Some(r.from))))
        }
        _ => Err(ENOTCONN),
    }
}

fn try_send(o: &Shared, data: &[u8], to: Option<IpEndpoint>) -> Res<Option<usize>> {
    let mut o = o.borrow_mut();
    match connect_done(&mut o) {
        None => return Ok(None),
        Some(Err(e)) => return Err(e),
        Some(Ok(())) => {}
    }
    match &mut o.kind {
        Kind::Tcp(Tcp::Stream { s, .. }) => s.try_write(data).map_err(|e| errno_of(&e)),
        Kind::Udp(Udp { s: None, .. }) => Err(EDESTADDRREQ),
        Kind::Udp(Udp { s: Some(s), .. }) => {
            let r = match to {
                Some(to) => s.try_send_to(data, to),
                None => s.try_send(data),
            };
            r.map(|sent| sent.map(|()| data.len()))
                .map_err(|e| errno_of(&e))
        }
        _ => Err(ENOTCONN),
    }
}

fn readable(o: &Shared) -> bool {
    ready(o, POLLIN) != 0
}

fn writable(o: &Shared) -> bool {
    ready(o, POLLOUT) != 0
}

/// The `poll` events of `o` among `asked` (plus errors and hang-up).
fn ready(o: &Shared, asked: i16) -> i16 {
    let mut o = o.borrow_mut();
    if let Some(Err(_)) = connect_done(&mut o) {
        return revents(asked, false, true, true, true);
    }
    match &mut o.kind {
        Kind::Event(e) => revents(asked, e.count > 0, true, false, false),
        Kind::File(_) => revents(asked, true, true, false, false),
        Kind::Udp(Udp { s: None, .. }) => revents(asked, false, true, false, false),
        Kind::Udp(Udp { s: Some(s), .. }) => {
            revents(asked, s.readable(), s.writable(), false, false)
        }
        Kind::Tcp(Tcp::Fresh { .. }) => revents(asked, false, false, true, false),
        Kind::Tcp(Tcp::Failed(_)) => revents(asked, false, true, true, true),
        Kind::Tcp(Tcp::Listening { l, pending }) => {
            if pending.is_empty() {
                if let Some(s) = l.try_accept() {
                    pending.push_back(s);
                }
            }
            revents(asked, !pending.is_empty(), false, false, false)
        }
        Kind::Tcp(Tcp::Stream {
            connecting: true, ..
        }) => 0,
        Kind::Tcp(Tcp::Stream { s, .. }) => {
            let closed = s.is_closed();
            revents(asked, s.readable(), s.writable(), closed, false)
        }
    }
}

/// Reads an eventfd: its 8-byte counter, which is reset; None while it is 0 (a blocking read
/// waits for another thread's write).
fn event_read(o: &Shared, buf: &mut [u8]) -> Res<Option<usize>> {
    if buf.len() < 8 {
        return Err(EINVAL);
    }
    let mut o = o.borrow_mut();
    let Kind::Event(e) = &mut o.kind else {
        return Err(EINVAL);
    };
    if e.count == 0 {
        return Ok(None);
    }
    buf[..8].copy_from_slice(&e.count.to_ne_bytes());
    e.count = 0;
    Ok(Some(8))
}

/// Writes an eventfd: adds the 8-byte value to its counter.
fn event_write(o: &Shared, data: &[u8]) -> Res<usize> {
    let v = u64::from_ne_bytes(
        data.get(..8)
            .ok_or(EINVAL)?
            .try_into()
            .map_err(|_| EINVAL)?,
    );
    if v == u64::MAX {
        return Err(EINVAL);
    }
    let mut o = o.borrow_mut();
    let Kind::Event(e) = &mut o.kind else {
        return Err(EINVAL);
    };
    e.count = e.count.checked_add(v).ok_or(EAGAIN)?;
    Ok(8)
}

/// A `timeval` option value as nanoseconds (zero: no timeout).
fn timeval_of(val: &[u8]) -> Res<Option<u64>> {
    if val.len() < 12 {
        return Err(EINVAL);
    }
    let sec = i64::from_ne_bytes(val[..8].try_into().map_err(|_| EINVAL)?);
    let usec = i32::from_ne_bytes(val[8..12].try_into().map_err(|_| EINVAL)?);
    if sec < 0 || !(0..1_000_000).contains(&usec) {
        return Err(EINVAL);
    }
    let ns = (sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(usec as u64 * 1000);
    Ok((ns > 0).then_some(ns))
}

/// An `int` option value.
fn int_of(val: &[u8]) -> Res<i32> {
    Ok(i32::from_ne_bytes(
        val.get(..4).ok_or(EINVAL)?.try_into().map_err(|_| EINVAL)?,
    ))
}

/// Whether `addr` is a broadcast address: the limited one, or our IPv4 subnet's.
fn is_broadcast(net: &Net, addr: IpAddress) -> bool {
    match addr {
        IpAddress::Ipv4(a) => {
            a == Ipv4Address::BROADCAST || net.ipv4().and_then(|c| c.broadcast()) == Some(a)
        }
        IpAddress::Ipv6(_) => false,
    }
}

/// The console's name for a socket option we do not support.
fn option_name(level: i32, name: i32) -> &'static str {
    match (level, name) {
        (IPPROTO_IP, IP_ADD_MEMBERSHIP | IP_DROP_MEMBERSHIP)
        | (IPPROTO_IPV6, IPV6_ADD_MEMBERSHIP | IPV6_DROP_MEMBERSHIP) => {
            "multicast groups (IP_ADD_MEMBERSHIP/IPV6_ADD_MEMBERSHIP)"
        }
        (IPPROTO_IP, IP_MULTICAST_TTL | IP_MULTICAST_LOOP)
        | (IPPROTO_IPV6, IPV6_MULTICAST_LOOP) => {
            "multicast options (IP_MULTICAST_TTL/IP_MULTICAST_LOOP)"
        }
        (IPPROTO_IP, IP_TOS) => "the IP_TOS socket option",
        (IPPROTO_IP, IP_TTL) => "IP_TTL on a TCP socket",
        _ => "this socket option",
    }
}

/// The `EAI_*` code for a failed look-up of one record type.
fn eai_of(e: &NetError) -> i32 {
    match e {
        // No such name, no address of that type, or every server silent for 10 s.
        NetError::Dns(_) => EAI_NONAME,
        NetError::TimedOut | NetError::Busy | NetError::NotConfigured => EAI_AGAIN,
        NetError::NoMemory => EAI_MEMORY,
        _ => EAI_FAIL,
    }
}

/// An `EAI_*` code's name, for the console.
fn eai_name(code: i32) -> &'static str {
    match code {
        EAI_AGAIN => "EAI_AGAIN",
        EAI_NONAME => "EAI_NONAME",
        EAI_FAMILY => "EAI_FAMILY",
        EAI_MEMORY => "EAI_MEMORY",
        _ => "EAI_FAIL",
    }
}
