//! Async TCP and UDP sockets over [`Net`], in the shape of `std::net` / tokio:
//! [`TcpListener::accept`], [`TcpStream::read`] / [`write_all`](TcpStream::write_all) /
//! [`close`](TcpStream::close), [`UdpSocket::recv_from`] / [`send_to`](UdpSocket::send_to).
//! They run as tasks on [`xen::exec`]'s executor, woken by smoltcp's socket wakers.
//!
//! ```ignore
//! let mut l = net.tcp_listen(7, ListenConfig::default())?;
//! loop {
//!     let mut s = l.accept().await?;
//!     spawner.spawn(async move {
//!         let mut buf = [0u8; 4096];
//!         while let Ok(n @ 1..) = s.read(&mut buf).await {
//!             if s.write_all(&buf[..n]).await.is_err() { break; }
//!         }
//!         s.close().await;
//!     });
//! }
//! ```
//!
//! A listener keeps `backlog` listening sockets on its port (smoltcp has no accept queue:
//! a listening socket *becomes* the connection); `accept` hands out one that connected and puts
//! a fresh listening socket in its place. Dropping a stream closes it gracefully in the
//! background (FIN, then the socket is reaped; aborted if the peer lingers).

use alloc::vec;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::task::Poll;

use smoltcp::iface::SocketHandle;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{dns, icmp, tcp, udp};
use smoltcp::wire::{
    DnsQueryType, Icmpv4Packet, Icmpv4Repr, IpAddress, IpEndpoint, IpListenEndpoint, Ipv4Address,
};

use crate::stack::{Net, NetError};

/// Buffer sizes and backlog of a listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ListenConfig {
    /// Listening sockets kept ready (connections that can complete their handshake at once).
    pub backlog: usize,
    /// Receive buffer per connection (the TCP window).
    pub rx_buffer: usize,
    /// Send buffer per connection.
    pub tx_buffer: usize,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            backlog: 8,
            rx_buffer: 64 * 1024,
            tx_buffer: 64 * 1024,
        }
    }
}

/// A zeroed buffer, or `NoMemory` (never the allocator's abort): a guest out of memory refuses
/// new sockets and keeps serving the ones it has.
fn buffer(n: usize) -> Result<Vec<u8>, NetError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| NetError::NoMemory)?;
    v.resize(n, 0);
    Ok(v)
}

/// How long a connection may go without hearing from its peer (while we have data or
/// keep-alive probes outstanding) before it is aborted.
pub const TCP_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(90);
/// How long a connection stays idle before we probe its peer.
pub const KEEP_ALIVE: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(30);

fn tcp_socket(rx: usize, tx: usize) -> Result<tcp::Socket<'static>, NetError> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(buffer(rx)?),
        tcp::SocketBuffer::new(buffer(tx)?),
    );
    s.set_nagle_enabled(false);
    // No connection outlives its peer: a silent peer is probed, and one that answers nothing
    // for TCP_TIMEOUT (data or probes unacknowledged) is aborted.
    s.set_keep_alive(Some(KEEP_ALIVE));
    s.set_timeout(Some(TCP_TIMEOUT));
    Ok(s)
}

/// A TCP port accepting connections. Its sockets are kept by the stack's [`SynGate`], which
/// keeps the port serving under a SYN flood (see [`crate::gate`]).
///
/// [`SynGate`]: crate::gate::SynGate
pub struct TcpListener {
    net: Net,
    port: u16,
    config: ListenConfig,
}

impl core::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TcpListener(:{})", self.port)
    }
}

impl Net {
    /// Listens on TCP `port` (all addresses).
    pub fn tcp_listen(&self, port: u16, config: ListenConfig) -> Result<TcpListener, NetError> {
        {
            let mut g = self.0.borrow_mut();
            g.bind(port, true)?;
            g.gate.add_listener(port);
        }
        let mut l = TcpListener {
            net: self.clone(),
            port,
            config: ListenConfig {
                backlog: config.backlog.max(1),
                ..config
            },
        };
        for _ in 0..l.config.backlog {
            l.add_listening()?;
        }
        Ok(l)
    }

    /// Connects to `addr:port`; completes once established.
    pub async fn tcp_connect(
        &self,
        addr: IpAddress,
        port: u16,
        rx_buffer: usize,
        tx_buffer: usize,
    ) -> Result<TcpStream, NetError> {
        let stream = self.tcp_connect_start(addr, port, rx_buffer, tx_buffer)?;
        poll_fn(|cx| match stream.connect_state() {
            Some(r) => Poll::Ready(r),
            None => {
                stream.with(|s| s.register_send_waker(cx.waker()));
                Poll::Pending
            }
        })
        .await?;
        Ok(stream)
    }

    /// Starts connecting to `addr:port` (sends the SYN at the next poll) without waiting: for
    /// callers that are not async (a BSD socket's non-blocking `connect`). Ask
    /// [`TcpStream::connect_state`] how it went.
    pub fn tcp_connect_start(
        &self,
        addr: IpAddress,
        port: u16,
        rx_buffer: usize,
        tx_buffer: usize,
    ) -> Result<TcpStream, NetError> {
        let h = {
            let mut g = self.0.borrow_mut();
            let i = &mut *g;
            let local = i.ephemeral_port();
            let mut s = tcp_socket(rx_buffer, tx_buffer)?;
            s.connect(i.iface.context(), (addr, port), local)
                .map_err(|_| NetError::Unaddressable)?;
            i.sockets.add(s)
        };
        Ok(TcpStream {
            net: self.clone(),
            handle: h,
        })
    }
}

impl TcpListener {
    fn add_listening(&mut self) -> Result<(), NetError> {
        let mut s = tcp_socket(self.config.rx_buffer, self.config.tx_buffer)?;
        s.listen(IpListenEndpoint {
            addr: None,
            port: self.port,
        })
        .map_err(|_| NetError::PortInUse(self.port))?;
        let mut g = self.net.0.borrow_mut();
        let h = g.sockets.add(s);
        g.gate.add_slot(self.port, h);
        Ok(())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Refills the listening sockets up to the backlog, as memory allows (short of memory, the
    /// listener works with fewer and tries again at the next accept).
    fn top_up(&mut self) {
        loop {
            let have = self.net.0.borrow().gate.slots(self.port);
            if have >= self.config.backlog {
                break;
            }
            if let Err(e) = self.add_listening() {
                log::debug!("net: listener :{}: {e}: {have} ready", self.port);
                break;
            }
        }
    }

    /// The next connection if one has completed its handshake, without waiting: for callers
    /// that are not async (a BSD socket's `accept`, which polls the stack itself).
    pub fn try_accept(&mut self) -> Option<TcpStream> {
        self.top_up();
        let h = {
            let mut g = self.net.0.borrow_mut();
            let i = &mut *g;
            i.gate
                .take_accepted(self.port, &mut i.sockets, core::task::Waker::noop())?
        };
        self.top_up();
        Some(TcpStream {
            net: self.net.clone(),
            handle: h,
        })
    }

    /// Waits for the next connection.
    pub async fn accept(&mut self) -> Result<TcpStream, NetError> {
        // Short of memory for even one listening socket: wait for connections to close.
        loop {
            self.top_up();
            if self.net.0.borrow().gate.slots(self.port) > 0 {
                break;
            }
            self.net.sleep(50_000_000).await;
        }
        let h = poll_fn(|cx| {
            let mut g = self.net.0.borrow_mut();
            let i = &mut *g;
            match i.gate.take_accepted(self.port, &mut i.sockets, cx.waker()) {
                Some(h) => Poll::Ready(h),
                None => Poll::Pending,
            }
        })
        .await;
        self.top_up();
        Ok(TcpStream {
            net: self.net.clone(),
            handle: h,
        })
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let mut g = self.net.0.borrow_mut();
        for h in g.gate.remove_listener(self.port) {
            g.sockets.get_mut::<tcp::Socket>(h).abort();
            g.sockets.remove(h);
        }
        g.unbind(self.port, true);
    }
}

/// A TCP connection.
pub struct TcpStream {
    pub(crate) net: Net,
    handle: SocketHandle,
}

impl core::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TcpStream({:?})", self.peer())
    }
}

impl TcpStream {
    fn with<R>(&self, f: impl FnOnce(&mut tcp::Socket<'static>) -> R) -> R {
        let mut g = self.net.0.borrow_mut();
        f(g.sockets.get_mut::<tcp::Socket>(self.handle))
    }

    /// The peer's address and port.
    pub fn peer(&self) -> Option<IpEndpoint> {
        self.with(|s| s.remote_endpoint())
    }

    /// Our address and port (once connected).
    pub fn local(&self) -> Option<IpEndpoint> {
        self.with(|s| s.local_endpoint())
    }

    /// How a connection started with [`Net::tcp_connect_start`] stands: `None` while the
    /// handshake runs, then established (`Ok`) or refused, reset or timed out.
    pub fn connect_state(&self) -> Option<Result<(), NetError>> {
        self.with(|s| match s.state() {
            tcp::State::SynSent | tcp::State::SynReceived => None,
            tcp::State::Closed => Some(Err(NetError::ConnectionReset)),
            _ => Some(Ok(())),
        })
    }

    /// Reads into `buf` without waiting: `Ok(None)` when nothing is there yet, `Ok(Some(0))` at
    /// the end of the stream; as [`read`](Self::read) otherwise.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        if buf.is_empty() {
            return Ok(Some(0));
        }
        self.with(|s| match s.recv_slice(buf) {
            Ok(0) if !s.may_recv() => {
                if s.state() == tcp::State::Closed {
                    Err(NetError::ConnectionReset)
                } else {
                    Ok(Some(0))
                }
            }
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(tcp::RecvError::Finished) => Ok(Some(0)),
            Err(tcp::RecvError::InvalidState) => Err(NetError::ConnectionReset),
        })
    }

    /// Writes some of `data` without waiting: `Ok(None)` when the send buffer is full; as
    /// [`write`](Self::write) otherwise.
    pub fn try_write(&mut self, data: &[u8]) -> Result<Option<usize>, NetError> {
        if data.is_empty() {
            return Ok(Some(0));
        }
        self.with(|s| {
            if !s.may_send() {
                return Err(if s.state() == tcp::State::Closed {
                    NetError::ConnectionReset
                } else {
                    NetError::Closed
                });
            }
            match s.send_slice(data) {
                Ok(0) => Ok(None),
                Ok(n) => Ok(Some(n)),
                Err(_) => Err(NetError::Closed),
            }
        })
    }

    /// Whether a read would not wait: data is queued, or the stream has ended (either way).
    pub fn readable(&self) -> bool {
        self.with(|s| s.can_recv() || !s.may_recv())
    }

    /// Whether a write would not wait: room in the send buffer, or the stream is closed for
    /// sending (the write fails at once).
    pub fn writable(&self) -> bool {
        self.with(|s| !s.may_send() || s.send_queue() < s.send_capacity())
    }

    /// Whether the connection is gone entirely (reset, timed out or fully closed).
    pub fn is_closed(&self) -> bool {
        self.with(|s| s.state() == tcp::State::Closed)
    }

    /// Reads into `buf`; `Ok(0)` at the end of the stream (the peer closed its side).
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            self.with(|s| match s.recv_slice(buf) {
                Ok(0) => {
                    if !s.may_recv() {
                        return Poll::Ready(if s.state() == tcp::State::Closed {
                            Err(NetError::ConnectionReset)
                        } else {
                            Ok(0)
                        });
                    }
                    s.register_recv_waker(cx.waker());
                    Poll::Pending
                }
                Ok(n) => Poll::Ready(Ok(n)),
                Err(tcp::RecvError::Finished) => Poll::Ready(Ok(0)),
                Err(tcp::RecvError::InvalidState) => Poll::Ready(Err(NetError::ConnectionReset)),
            })
        })
        .await
    }

    /// Writes some of `data` (waits for room); returns how much.
    pub async fn write(&mut self, data: &[u8]) -> Result<usize, NetError> {
        if data.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            self.with(|s| {
                if !s.may_send() {
                    return Poll::Ready(Err(if s.state() == tcp::State::Closed {
                        NetError::ConnectionReset
                    } else {
                        NetError::Closed
                    }));
                }
                match s.send_slice(data) {
                    Ok(0) => {
                        s.register_send_waker(cx.waker());
                        Poll::Pending
                    }
                    Ok(n) => Poll::Ready(Ok(n)),
                    Err(_) => Poll::Ready(Err(NetError::Closed)),
                }
            })
        })
        .await
    }

    /// Writes all of `data`.
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<(), NetError> {
        while !data.is_empty() {
            let n = self.write(data).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Waits until everything written was acknowledged by the peer.
    pub async fn flush(&mut self) -> Result<(), NetError> {
        poll_fn(|cx| {
            self.with(|s| {
                if s.send_queue() == 0 {
                    Poll::Ready(Ok(()))
                } else if s.state() == tcp::State::Closed {
                    Poll::Ready(Err(NetError::ConnectionReset))
                } else {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
            })
        })
        .await
    }

    /// Bytes waiting to be read.
    pub fn recv_queue(&self) -> usize {
        self.with(|s| s.recv_queue())
    }

    /// Room in the send buffer.
    pub fn send_room(&self) -> usize {
        self.with(|s| s.send_capacity() - s.send_queue())
    }

    /// Closes our side (FIN after the queued data); reading still works until the peer closes.
    pub fn shutdown_write(&mut self) {
        self.with(|s| s.close());
    }

    /// Closes gracefully: sends what is queued, then FIN. The socket is released in the
    /// background (also what dropping the stream does).
    pub async fn close(self) {
        drop(self)
    }

    /// Resets the connection (RST) at once.
    pub fn abort(self) {
        self.with(|s| s.abort());
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.net.0.borrow_mut().release_tcp(self.handle);
    }
}

/// A UDP socket bound to a port.
pub struct UdpSocket {
    net: Net,
    handle: SocketHandle,
    port: u16,
}

impl core::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "UdpSocket(:{})", self.port)
    }
}

impl Net {
    /// Binds UDP `port` with room for `packets` datagrams of up to `max_len` bytes each way.
    pub fn udp_bind(
        &self,
        port: u16,
        packets: usize,
        max_len: usize,
    ) -> Result<UdpSocket, NetError> {
        let mut g = self.0.borrow_mut();
        g.bind(port, false)?;
        let buf = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; packets.max(1)],
                vec![0u8; packets.max(1) * max_len],
            )
        };
        let mut s = udp::Socket::new(buf(), buf());
        if s.bind(port).is_err() {
            g.unbind(port, false);
            return Err(NetError::PortInUse(port));
        }
        let handle = g.sockets.add(s);
        Ok(UdpSocket {
            net: self.clone(),
            handle,
            port,
        })
    }
}

impl UdpSocket {
    /// Receives one datagram into `buf` (truncated to its length); returns its length and
    /// sender.
    pub async fn recv_from(&mut self, buf: &mut [u8]) -> Result<(usize, IpEndpoint), NetError> {
        poll_fn(|cx| {
            let mut g = self.net.0.borrow_mut();
            let s = g.sockets.get_mut::<udp::Socket>(self.handle);
            match s.recv_slice(buf) {
                Ok((n, meta)) => Poll::Ready(Ok((n, meta.endpoint))),
                Err(udp::RecvError::Truncated) => Poll::Ready(Err(NetError::TooLarge)),
                Err(udp::RecvError::Exhausted) => {
                    s.register_recv_waker(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Sends one datagram to `to` (waits for buffer room).
    pub async fn send_to(&mut self, data: &[u8], to: IpEndpoint) -> Result<(), NetError> {
        poll_fn(|cx| {
            let mut g = self.net.0.borrow_mut();
            let s = g.sockets.get_mut::<udp::Socket>(self.handle);
            if data.len() > s.payload_send_capacity() {
                return Poll::Ready(Err(NetError::TooLarge));
            }
            match s.send_slice(data, to) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(udp::SendError::BufferFull) => {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
                Err(udp::SendError::Unaddressable) => Poll::Ready(Err(NetError::Unaddressable)),
            }
        })
        .await
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let mut g = self.net.0.borrow_mut();
        g.sockets.remove(self.handle);
        g.unbind(self.port, false);
    }
}

/// A socket owned by one async operation (a ping, a DNS query): removed from the stack when
/// the operation ends, or when its future is dropped half-way (a caller's timeout).
struct Scoped {
    net: Net,
    handle: SocketHandle,
}

impl Net {
    fn scoped<S: smoltcp::socket::AnySocket<'static>>(&self, socket: S) -> Scoped {
        Scoped {
            net: self.clone(),
            handle: self.0.borrow_mut().sockets.add(socket),
        }
    }
}

impl Drop for Scoped {
    fn drop(&mut self) {
        self.net.0.borrow_mut().sockets.remove(self.handle);
    }
}

impl Net {
    /// Sends one ICMP echo request to `addr` (IPv4) with sequence number `seq` and waits up to
    /// `timeout_ns` for the reply; returns the round-trip time in nanoseconds.
    pub async fn ping(
        &self,
        addr: Ipv4Address,
        seq: u16,
        timeout_ns: u64,
    ) -> Result<u64, NetError> {
        const PAYLOAD: &[u8] = b"xenrt ping payload 0123456789abcdef";
        let ident = {
            let mut g = self.0.borrow_mut();
            g.ephemeral_port()
        };
        let mut s = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 2], vec![0; 256]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 2], vec![0; 256]),
        );
        s.bind(icmp::Endpoint::Ident(ident))
            .map_err(|_| NetError::Unaddressable)?;
        let scoped = self.scoped(s);
        let h = scoped.handle;
        let start = self.now_ns();
        let sent = {
            let mut g = self.0.borrow_mut();
            let s = g.sockets.get_mut::<icmp::Socket>(h);
            let repr = Icmpv4Repr::EchoRequest {
                ident,
                seq_no: seq,
                data: PAYLOAD,
            };
            match s.send(repr.buffer_len(), IpAddress::Ipv4(addr)) {
                Ok(buf) => {
                    repr.emit(
                        &mut Icmpv4Packet::new_unchecked(buf),
                        &ChecksumCapabilities::default(),
                    );
                    Ok(())
                }
                Err(_) => Err(NetError::Unaddressable),
            }
        };
        let reply = async {
            poll_fn(|cx| {
                let mut g = self.0.borrow_mut();
                let now = g.now_ns;
                let s = g.sockets.get_mut::<icmp::Socket>(h);
                while let Ok((data, _from)) = s.recv() {
                    let Ok(p) = Icmpv4Packet::new_checked(data) else {
                        continue;
                    };
                    if let Ok(Icmpv4Repr::EchoReply {
                        ident: i, seq_no, ..
                    }) = Icmpv4Repr::parse(&p, &ChecksumCapabilities::default())
                    {
                        if i == ident && seq_no == seq {
                            return Poll::Ready(now.saturating_sub(start));
                        }
                    }
                }
                s.register_recv_waker(cx.waker());
                Poll::Pending
            })
            .await
        };
        sent?;
        xen::exec::timeout(self.sleep(timeout_ns), reply)
            .await
            .ok_or(NetError::TimedOut)
    }
}

impl Net {
    /// Resolves `name` to its IPv4 addresses through the first DNS server known (`dns=` on the
    /// command line, or DHCP's), waiting up to `timeout_ns`.
    pub async fn resolve(&self, name: &str, timeout_ns: u64) -> Result<Vec<IpAddress>, NetError> {
        let servers = self.dns_servers();
        if servers.is_empty() {
            return Err(NetError::Dns("no DNS server (set dns=ADDR)".into()));
        }
        let scoped = self.scoped(dns::Socket::new(&servers, vec![None]));
        let h = scoped.handle;
        let q = {
            let mut g = self.0.borrow_mut();
            let i = &mut *g;
            i.sockets.get_mut::<dns::Socket>(h).start_query(
                i.iface.context(),
                name,
                DnsQueryType::A,
            )
        }
        .map_err(|e| NetError::Dns(alloc::format!("{name:?}: {e:?}")))?;
        let answer = poll_fn(|cx| {
            let mut g = self.0.borrow_mut();
            let s = g.sockets.get_mut::<dns::Socket>(h);
            match s.get_query_result(q) {
                Ok(addrs) => Poll::Ready(Ok(addrs.to_vec())),
                Err(dns::GetQueryResultError::Pending) => {
                    s.register_query_waker(q, cx.waker());
                    Poll::Pending
                }
                Err(dns::GetQueryResultError::Failed) => {
                    Poll::Ready(Err(NetError::Dns(alloc::format!("{name:?}: no answer"))))
                }
            }
        });
        xen::exec::timeout(self.sleep(timeout_ns), answer)
            .await
            .unwrap_or(Err(NetError::TimedOut))
    }
}
