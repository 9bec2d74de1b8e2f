//! Async TCP and UDP sockets over [`Net`], in the shape of `std::net` / tokio:
//! [`TcpListener::accept`], [`TcpStream::read`] / [`write_all`](TcpStream::write_all) /
//! [`close`](TcpStream::close), [`UdpSocket::recv_from`] / [`send_to`](UdpSocket::send_to).
//! They run as tasks on [`xen::exec`]'s executor, woken by smoltcp's socket wakers. Callers
//! that are not async (the BSD sockets of `hermit`, which run the stack themselves while they
//! wait) use the synchronous accessors: [`TcpListener::try_accept`], [`TcpStream::try_read`] /
//! [`try_peek`](TcpStream::try_peek) / [`try_write`](TcpStream::try_write),
//! [`UdpSocket::try_recv_from`] / [`try_send_to`](UdpSocket::try_send_to), readiness
//! (`readable`/`writable`) and [`Net::dns_query`] + [`DnsQuery::result`].
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
        self.with(|s| {
            let r = s.recv_slice(buf);
            taken(s, r)
        })
    }

    /// Copies what is queued into `buf` without taking it (the next read returns it again):
    /// as [`try_read`](Self::try_read) otherwise.
    pub fn try_peek(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        if buf.is_empty() {
            return Ok(Some(0));
        }
        self.with(|s| {
            let r = s.peek_slice(buf);
            taken(s, r)
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

/// A UDP socket bound to a port (and maybe one local address), optionally connected to one
/// peer: then it sends there by default ([`try_send`](Self::try_send)) and takes datagrams only
/// from there (others are dropped as they come up), as a connected BSD datagram socket does.
pub struct UdpSocket {
    net: Net,
    handle: SocketHandle,
    port: u16,
    peer: Option<IpEndpoint>,
}

impl core::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "UdpSocket(:{})", self.port)
    }
}

/// A datagram taken (or peeked at) by [`UdpSocket::try_recv_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes copied into the caller's buffer.
    pub len: usize,
    /// The datagram's whole size (larger than `len` when the buffer was too small: the rest
    /// is discarded, unless it was a peek).
    pub size: usize,
    /// Who sent it.
    pub from: IpEndpoint,
}

/// The most payload one UDP datagram can carry on a device with this MTU (the Ethernet frame
/// size, as smoltcp counts it) without IP fragmentation, which the stack does not do.
pub fn udp_max_payload(mtu: usize, ipv6: bool) -> usize {
    let ip = if ipv6 { 40 } else { 20 };
    mtu.saturating_sub(14 + ip + 8)
}

/// Attempts at an ephemeral port before giving up (each is the next port of the range).
const EPHEMERAL_TRIES: usize = 64;

impl Net {
    /// Binds UDP `port` with room for `packets` datagrams of up to `max_len` bytes each way.
    pub fn udp_bind(
        &self,
        port: u16,
        packets: usize,
        max_len: usize,
    ) -> Result<UdpSocket, NetError> {
        if port == 0 {
            return Err(NetError::PortInUse(0));
        }
        self.udp_bind_to(None, port, packets, max_len)
    }

    /// Binds UDP `port` on `addr` (`None`: every address of the interface; `port` 0: an
    /// ephemeral port) with room for `packets` datagrams of up to `max_len` bytes each way.
    pub fn udp_bind_to(
        &self,
        addr: Option<IpAddress>,
        port: u16,
        packets: usize,
        max_len: usize,
    ) -> Result<UdpSocket, NetError> {
        let packets = packets.max(1);
        let bytes = packets.saturating_mul(max_len.max(1));
        let buf = || -> Result<udp::PacketBuffer<'static>, NetError> {
            let mut meta = Vec::new();
            meta.try_reserve_exact(packets)
                .map_err(|_| NetError::NoMemory)?;
            meta.resize(packets, udp::PacketMetadata::EMPTY);
            Ok(udp::PacketBuffer::new(meta, buffer(bytes)?))
        };
        let (rx, tx) = (buf()?, buf()?);
        let mut g = self.0.borrow_mut();
        let port = if port == 0 {
            let mut tries = 0;
            loop {
                let p = g.ephemeral_port();
                if g.bind(p, false).is_ok() {
                    break p;
                }
                tries += 1;
                if tries >= EPHEMERAL_TRIES {
                    return Err(NetError::PortInUse(0));
                }
            }
        } else {
            g.bind(port, false)?;
            port
        };
        let mut s = udp::Socket::new(rx, tx);
        if s.bind(IpListenEndpoint { addr, port }).is_err() {
            g.unbind(port, false);
            return Err(NetError::PortInUse(port));
        }
        let handle = g.sockets.add(s);
        Ok(UdpSocket {
            net: self.clone(),
            handle,
            port,
            peer: None,
        })
    }
}

impl UdpSocket {
    fn with<R>(&self, f: impl FnOnce(&mut udp::Socket<'static>) -> R) -> R {
        let mut g = self.net.0.borrow_mut();
        f(g.sockets.get_mut::<udp::Socket>(self.handle))
    }

    /// Drops the datagrams at the head of the queue that are not from the connected peer.
    fn drop_foreign(&self, s: &mut udp::Socket<'static>) {
        let Some(peer) = self.peer else { return };
        while let Ok((_, meta)) = s.peek() {
            if meta.endpoint == peer {
                break;
            }
            let _ = s.recv();
        }
    }

    /// Receives one datagram into `buf` (truncated to its length); returns its length and
    /// sender.
    pub async fn recv_from(&mut self, buf: &mut [u8]) -> Result<(usize, IpEndpoint), NetError> {
        poll_fn(|cx| {
            let mut g = self.net.0.borrow_mut();
            let s = g.sockets.get_mut::<udp::Socket>(self.handle);
            self.drop_foreign(s);
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
        poll_fn(|cx| match self.try_send_to(data, to) {
            Ok(Some(())) => Poll::Ready(Ok(())),
            Ok(None) => {
                self.with(|s| s.register_send_waker(cx.waker()));
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        })
        .await
    }

    /// Takes the next datagram without waiting (or with `peek`, copies it and leaves it
    /// queued): as much of it as fits in `buf`, the rest of a taken datagram discarded (as
    /// POSIX `recvfrom` does). `None` when nothing is queued.
    pub fn try_recv_from(&mut self, buf: &mut [u8], peek: bool) -> Option<Received> {
        let mut g = self.net.0.borrow_mut();
        let s = g.sockets.get_mut::<udp::Socket>(self.handle);
        self.drop_foreign(s);
        let copy = |data: &[u8], from: IpEndpoint, buf: &mut [u8]| {
            let len = data.len().min(buf.len());
            buf[..len].copy_from_slice(&data[..len]);
            Received {
                len,
                size: data.len(),
                from,
            }
        };
        if peek {
            let (data, meta) = s.peek().ok()?;
            Some(copy(data, meta.endpoint, buf))
        } else {
            let (data, meta) = s.recv().ok()?;
            Some(copy(data, meta.endpoint, buf))
        }
    }

    /// Queues one datagram to `to` without waiting: `Ok(None)` when the send buffer has no
    /// room now; [`NetError::TooLarge`] for a datagram larger than one frame can carry (the
    /// stack does not fragment) or than the buffer; [`NetError::Unaddressable`] for an
    /// unspecified address or port 0.
    pub fn try_send_to(&mut self, data: &[u8], to: IpEndpoint) -> Result<Option<()>, NetError> {
        let mtu = self.net.0.borrow().mtu();
        let max = udp_max_payload(mtu, matches!(to.addr, IpAddress::Ipv6(_)));
        self.with(|s| {
            if data.len() > max || data.len() > s.payload_send_capacity() {
                return Err(NetError::TooLarge);
            }
            match s.send_slice(data, to) {
                Ok(()) => Ok(Some(())),
                Err(udp::SendError::BufferFull) => Ok(None),
                Err(udp::SendError::Unaddressable) => Err(NetError::Unaddressable),
            }
        })
    }

    /// Queues one datagram to the connected peer without waiting (as
    /// [`try_send_to`](Self::try_send_to)); [`NetError::NotConnected`] without one.
    pub fn try_send(&mut self, data: &[u8]) -> Result<Option<()>, NetError> {
        let to = self.peer.ok_or(NetError::NotConnected)?;
        self.try_send_to(data, to)
    }

    /// Connects to `peer` (its default destination; datagrams from anyone else are dropped
    /// from now on), or with `None` takes datagrams from anyone again.
    pub fn connect(&mut self, peer: Option<IpEndpoint>) {
        self.peer = peer;
    }

    /// The connected peer.
    pub fn peer(&self) -> Option<IpEndpoint> {
        self.peer
    }

    /// Whether a datagram (from the peer, when connected) is queued.
    pub fn readable(&self) -> bool {
        self.with(|s| {
            self.drop_foreign(s);
            s.can_recv()
        })
    }

    /// Whether the send buffer has room for another datagram.
    pub fn writable(&self) -> bool {
        self.with(|s| s.can_send())
    }

    /// Room for received datagrams, in bytes.
    pub fn recv_capacity(&self) -> usize {
        self.with(|s| s.payload_recv_capacity())
    }

    /// Room for datagrams to send, in bytes.
    pub fn send_capacity(&self) -> usize {
        self.with(|s| s.payload_send_capacity())
    }

    /// The TTL / hop limit of what it sends (`None`: the stack's default, 64).
    pub fn hop_limit(&self) -> Option<u8> {
        self.with(|s| s.hop_limit())
    }

    /// Sets the TTL / hop limit of what it sends (`None`: the default); 0 is refused
    /// ([`NetError::Unaddressable`]: nothing could ever arrive).
    pub fn set_hop_limit(&mut self, ttl: Option<u8>) -> Result<(), NetError> {
        if ttl == Some(0) {
            return Err(NetError::Unaddressable);
        }
        self.with(|s| s.set_hop_limit(ttl));
        Ok(())
    }

    /// The address it is bound to (`None`: every address) and its port.
    pub fn local(&self) -> IpListenEndpoint {
        self.with(|s| s.endpoint())
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

/// Queries one stack can have under way at once (smoltcp's DNS socket has a slot per query).
pub const DNS_QUERIES: usize = 8;

/// A DNS query under way, for callers that are not async (a BSD `getaddrinfo`, which polls
/// the stack itself): started by [`Net::dns_query`], asked with [`result`](Self::result). The
/// stack sends it and retransmits it (after 1, 2, 4 s...); it fails when the server says the
/// name does not exist (NXDOMAIN) or has no address of that type, or after 10 s without an
/// answer (smoltcp's per-server timeout). Dropping it cancels it.
pub struct DnsQuery {
    net: Net,
    socket: SocketHandle,
    query: dns::QueryHandle,
    done: core::cell::Cell<bool>,
    name: alloc::string::String,
}

impl core::fmt::Debug for DnsQuery {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DnsQuery({})", self.name)
    }
}

impl Net {
    /// Starts resolving `name` (its `A` or `AAAA` records, as `ty` says) through the DNS
    /// servers known (`dns=` on the command line, then DHCP's; the first of them). At most
    /// [`DNS_QUERIES`] run at once (then [`NetError::Busy`]); a name that is not one
    /// (too long, empty labels) is [`NetError::Dns`].
    pub fn dns_query(&self, name: &str, ty: DnsQueryType) -> Result<DnsQuery, NetError> {
        let servers = self.dns_servers();
        if servers.is_empty() {
            return Err(NetError::Dns("no DNS server (set dns=ADDR)".into()));
        }
        let mut g = self.0.borrow_mut();
        let i = &mut *g;
        let socket = match i.dns_socket {
            Some(h) => h,
            None => {
                let h = i.sockets.add(dns::Socket::new(
                    &servers,
                    (0..DNS_QUERIES).map(|_| None).collect::<Vec<_>>(),
                ));
                i.dns_socket = Some(h);
                h
            }
        };
        let s = i.sockets.get_mut::<dns::Socket>(socket);
        // The servers may have changed since (a DHCP lease).
        s.update_servers(&servers);
        let query = s
            .start_query(i.iface.context(), name, ty)
            .map_err(|e| match e {
                dns::StartQueryError::NoFreeSlot => NetError::Busy,
                e => NetError::Dns(alloc::format!("{name:?}: {e:?}")),
            })?;
        Ok(DnsQuery {
            net: self.clone(),
            socket,
            query,
            done: core::cell::Cell::new(false),
            name: name.into(),
        })
    }
}

impl DnsQuery {
    /// `None` while the query runs; then (once) its addresses, or [`NetError::Dns`] when it
    /// failed (no such name, no address of that type, or no answer in time).
    pub fn result(&self) -> Option<Result<Vec<IpAddress>, NetError>> {
        self.poll(None)
    }

    fn poll(&self, waker: Option<&core::task::Waker>) -> Option<Result<Vec<IpAddress>, NetError>> {
        if self.done.get() {
            return Some(Err(NetError::Dns(alloc::format!(
                "{:?}: result already taken",
                self.name
            ))));
        }
        let mut g = self.net.0.borrow_mut();
        let s = g.sockets.get_mut::<dns::Socket>(self.socket);
        // A finished query's slot is freed when its result is read.
        let r = match s.get_query_result(self.query) {
            Ok(addrs) => Ok(addrs.to_vec()),
            Err(dns::GetQueryResultError::Pending) => {
                if let Some(w) = waker {
                    s.register_query_waker(self.query, w);
                }
                return None;
            }
            Err(dns::GetQueryResultError::Failed) => {
                Err(NetError::Dns(alloc::format!("{:?}: no answer", self.name)))
            }
        };
        self.done.set(true);
        Some(r)
    }
}

impl Drop for DnsQuery {
    fn drop(&mut self) {
        if !self.done.get() {
            let mut g = self.net.0.borrow_mut();
            g.sockets
                .get_mut::<dns::Socket>(self.socket)
                .cancel_query(self.query);
        }
    }
}

impl Net {
    /// Resolves `name` to its IPv4 addresses through the first DNS server known (`dns=` on the
    /// command line, or DHCP's), waiting up to `timeout_ns`.
    pub async fn resolve(&self, name: &str, timeout_ns: u64) -> Result<Vec<IpAddress>, NetError> {
        let q = self.dns_query(name, DnsQueryType::A)?;
        let answer = poll_fn(|cx| match q.poll(Some(cx.waker())) {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        });
        xen::exec::timeout(self.sleep(timeout_ns), answer)
            .await
            .unwrap_or(Err(NetError::TimedOut))
    }
}

/// What a non-waiting read or peek of `s` that returned `r` means: `Ok(None)` when nothing is
/// there yet, `Ok(Some(0))` at the end of the stream, a reset once the connection is gone.
fn taken(s: &tcp::Socket, r: Result<usize, tcp::RecvError>) -> Result<Option<usize>, NetError> {
    match r {
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
    }
}
