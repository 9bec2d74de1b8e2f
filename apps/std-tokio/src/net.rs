//! TCP for tokio tasks, over mio: [`TcpListener`] and [`TcpStream`] (tokio's `AsyncRead` and
//! `AsyncWrite`), driven by one reactor thread that waits in `mio::Poll` and wakes the tasks
//! whose sockets became ready.
//!
//! Why not `tokio::net`: tokio 1.54.1's `net` does not build for `x86_64-unknown-hermit`, even
//! with a socket2 for the target (xenrt's `hermit/socket2`): its net code guards code that needs
//! a Unix-only item with `cfg(not(windows))` where the item is `cfg(unix)`, 7 errors:
//! `TcpSocket::connect` uses `libc::EINPROGRESS` (tokio depends on `libc` for unix and wasi only),
//! `TcpStream::into_std` and `TcpListener::into_std` have bodies for unix, windows and wasi
//! only, `TcpSocket::from_std_stream` calls a `FromRawFd` impl that is `cfg(unix or wasi)`, and
//! `TcpStream::{linger, set_linger, set_zero_linger}` need an `AsFd` impl that is `cfg(unix)`.
//! The `tokio-net` feature of this crate builds tokio with `net` to show them. The fix belongs in
//! tokio (cfg(not(windows)) consistently, and `libc` for hermit, as mio does).
//!
//! This layer is the same design as tokio's own I/O driver, cut down: each socket has a
//! readiness record (readable, writable, the task to wake for each); the reactor thread sets
//! the flags from mio's events and wakes; a task tries the operation while its flag is set and
//! clears it on `WouldBlock` (under the record's lock, so no event between the two is lost).
//! On hermit the listener is made with socket2's API.
use std::collections::HashMap;
use std::future::poll_fn;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use mio::event::Source;
use mio::{Events, Interest, Registry, Token};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The reactor: mio's registry (to register sockets from any thread) and the readiness records
/// by token.
struct Reactor {
    registry: Registry,
    records: Mutex<HashMap<Token, Arc<Readiness>>>,
    next: AtomicUsize,
}

/// The reactor, started with the first socket.
fn reactor() -> io::Result<&'static Reactor> {
    static REACTOR: OnceLock<Reactor> = OnceLock::new();
    if let Some(r) = REACTOR.get() {
        return Ok(r);
    }
    let poll = mio::Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let mut started = false;
    let r = REACTOR.get_or_init(|| {
        started = true;
        Reactor {
            registry,
            records: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        }
    });
    if started {
        std::thread::Builder::new()
            .name("reactor".into())
            .spawn(move || run(poll, r))?;
    }
    Ok(r)
}

/// The reactor thread: waits for events and wakes the tasks they are for.
fn run(mut poll: mio::Poll, r: &'static Reactor) {
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            eprintln!("std-tokio: reactor: poll: {e}");
            return;
        }
        let records = r.records.lock().unwrap();
        for ev in events.iter() {
            if let Some(rec) = records.get(&ev.token()) {
                let err = ev.is_error();
                rec.set(
                    ev.is_readable() || ev.is_read_closed() || err,
                    ev.is_writable() || ev.is_write_closed() || err,
                );
            }
        }
    }
}

/// Which way a task waits.
#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

/// One socket's readiness.
#[derive(Default)]
struct Readiness {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    readable: bool,
    writable: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Readiness {
    /// Marks the socket ready (from an event) and wakes who waits for it.
    fn set(&self, readable: bool, writable: bool) {
        let mut s = self.state.lock().unwrap();
        let mut wake = Vec::new();
        if readable {
            s.readable = true;
            wake.extend(s.reader.take());
        }
        if writable {
            s.writable = true;
            wake.extend(s.writer.take());
        }
        drop(s);
        wake.into_iter().for_each(Waker::wake);
    }

    /// Runs `op` while the socket is ready that way; on `WouldBlock` clears the flag and waits
    /// for the next event.
    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        dir: Dir,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        let mut guard = self.state.lock().unwrap();
        let s = &mut *guard;
        loop {
            let (ready, waker) = match dir {
                Dir::Read => (&mut s.readable, &mut s.reader),
                Dir::Write => (&mut s.writable, &mut s.writer),
            };
            if !*ready {
                *waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            match op() {
                Err(e) if e.kind() == ErrorKind::WouldBlock => *ready = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                r => return Poll::Ready(r),
            }
        }
    }
}

/// A mio socket registered with the reactor (deregistered when dropped).
struct Registered<S: Source> {
    io: S,
    token: Token,
    ready: Arc<Readiness>,
}

impl<S: Source> Registered<S> {
    fn new(mut io: S) -> io::Result<Registered<S>> {
        let r = reactor()?;
        let token = Token(r.next.fetch_add(1, Ordering::Relaxed));
        let ready = Arc::new(Readiness::default());
        // Ready until an operation says otherwise: the first try finds out.
        ready.set(true, true);
        r.records.lock().unwrap().insert(token, Arc::clone(&ready));
        if let Err(e) = r
            .registry
            .register(&mut io, token, Interest::READABLE | Interest::WRITABLE)
        {
            r.records.lock().unwrap().remove(&token);
            return Err(e);
        }
        Ok(Registered { io, token, ready })
    }
}

impl<S: Source> Drop for Registered<S> {
    fn drop(&mut self) {
        if let Ok(r) = reactor() {
            let _ = r.registry.deregister(&mut self.io);
            r.records.lock().unwrap().remove(&self.token);
        }
    }
}

/// A listening TCP socket.
pub struct TcpListener {
    inner: Registered<mio::net::TcpListener>,
}

impl TcpListener {
    /// Binds to `addr` and listens.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let l = listen_socket(addr)?;
        Ok(TcpListener {
            inner: Registered::new(mio::net::TcpListener::from_std(l))?,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.local_addr()
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, peer) = poll_fn(|cx| {
            self.inner
                .ready
                .poll_io(cx, Dir::Read, || self.inner.io.accept())
        })
        .await?;
        configure(&s)?;
        Ok((
            TcpStream {
                inner: Registered::new(s)?,
            },
            peer,
        ))
    }
}

/// The listening socket, made with socket2's API (xenrt's hermit/socket2).
#[cfg(target_os = "hermit")]
fn listen_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    if !s.nonblocking()? {
        return Err(io::Error::other("socket2: set_nonblocking did not hold"));
    }
    let bound = s.local_addr()?.as_socket();
    if bound.map(|b| b.port()) != Some(addr.port()) {
        return Err(io::Error::other(format!(
            "socket2: bound to {bound:?}, asked for {addr}"
        )));
    }
    Ok(s.into())
}

/// The listening socket, from std (hosts: socket2 here is xenrt's, for hermit only).
#[cfg(not(target_os = "hermit"))]
fn listen_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// An accepted connection's options: no Nagle delay (socket2's `SockRef` on hermit).
fn configure(s: &mio::net::TcpStream) -> io::Result<()> {
    #[cfg(target_os = "hermit")]
    socket2::SockRef::from(s).set_tcp_nodelay(true)?;
    #[cfg(not(target_os = "hermit"))]
    s.set_nodelay(true)?;
    Ok(())
}

/// A TCP connection.
pub struct TcpStream {
    inner: Registered<mio::net::TcpStream>,
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &self.inner;
        let dst = buf.initialize_unfilled();
        match me.ready.poll_io(cx, Dir::Read, || (&me.io).read(dst)) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &self.inner;
        me.ready.poll_io(cx, Dir::Write, || (&me.io).write(data))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.inner.io.shutdown(std::net::Shutdown::Write))
    }
}
