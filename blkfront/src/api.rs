//! The block API: [`Blkfront`], a cheap handle to a connected disk whose operations are
//! futures (`disk.read(offset, buf).await`), and [`Blocking`], the same calls run to completion
//! for simple apps.
//!
//! Many operations may be in flight at once, from many tasks (each holding a clone of the
//! handle): they share the ring slots and pool pages in turn (see [`crate::io`]). The handle is
//! an [`exec::Source`](xen::exec::Source): the executor running the tasks must drive it
//! (`xen::exec::run(&[&disk], ...)`), and its [`poll`](Blkfront::poll) harvests the backend's
//! responses and wakes the operations answered. The backend signals responses on the event
//! channel [`Blkfront::port`]; the disk needs a turn when that port fires or its deadline (the
//! earliest operation timeout) passes, never otherwise.
//!
//! Dropping an operation's future cancels it safely: its requests already on the ring keep
//! their slots, pool pages and grants until the backend answers them, and nothing is copied
//! into or out of the caller's buffer after the drop.
//!
//! Byte-granular [`read`](Blkfront::read) and [`write`](Blkfront::write) move partial sectors
//! through a bounce buffer (a write reads, patches and writes such a sector back): two tasks
//! writing different bytes of one sector at once can undo each other's write, so concurrent
//! writers should use sector-aligned ranges (or [`write_blocks`](Blkfront::write_blocks)).

use alloc::rc::Rc;
use core::cell::{RefCell, RefMut};
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use xen::events::Channel;
use xen::exec::{Executor, Park, Source};
use xen::hal::Hal;
use xen::xenbus::Timeout;
use xen::xenstore::{Client, Transport};

use crate::error::Error;
use crate::io::{Buf, Engine, Features, Stats, Transfer};
use crate::wire::{self, Op, WIRE_SECTOR};

/// A connected block device: its async API. Clones share the connection.
///
/// ```
/// use blkfront::{Blkfront, Blocking, Config};
/// use blkfront::sim::{SimBlkback, SimConfig};
/// use xen::exec::Executor;
/// use xen::hal::SimHal;
/// use xen::xenbus::Never;
/// use xen::xenstore::sim::Sim;
///
/// // A simulated xenstore and a simulated 1 MiB disk behind vbd 768.
/// let mut xs = Sim::client(1);
/// let hal = SimHal::new();
/// let backend = SimBlkback::attach(&mut xs, &hal, 768, SimConfig::disk(1 << 20));
/// let disk = Blkfront::connect(hal, &mut xs, "device/vbd/768", Config::default(), &mut Never)?;
/// assert_eq!((disk.capacity(), disk.sector_size()), (1 << 20, 512));
///
/// // Two tasks at once, on an executor that drives the disk.
/// let mut ex = Executor::new();
/// let sp = ex.spawner();
/// let (d, d2) = (disk.clone(), disk.clone());
/// ex.block_on(&mut backend.parker(), &[&disk], async move {
///     let other = sp.spawn(async move { d2.write(8192, b"from a task").await });
///     d.write(1000, b"hello, disk").await?;   // any byte range
///     other.await?;
///     let mut back = [0u8; 11];
///     d.read(1000, &mut back).await?;
///     assert_eq!(&back, b"hello, disk");
///     d.flush().await
/// })?;
///
/// // The same calls, blocking.
/// let mut disk = Blocking::new(disk, backend.parker());
/// let mut back = [0u8; 11];
/// disk.read(8192, &mut back)?;
/// assert_eq!(&back, b"from a task");
/// disk.disconnect(&mut xs, &mut Never)?;
/// # Ok::<(), blkfront::Error>(())
/// ```
pub struct Blkfront<H: Hal> {
    engine: Rc<RefCell<Engine<H>>>,
}

impl<H: Hal> Clone for Blkfront<H> {
    fn clone(&self) -> Self {
        Blkfront {
            engine: self.engine.clone(),
        }
    }
}

impl<H: Hal> core::fmt::Debug for Blkfront<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Blkfront")
            .field("port", &self.port())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<H: Hal> Blkfront<H> {
    pub(crate) fn new(engine: Engine<H>) -> Self {
        Blkfront {
            engine: Rc::new(RefCell::new(engine)),
        }
    }

    pub(crate) fn engine(&self) -> RefMut<'_, Engine<H>> {
        self.engine.borrow_mut()
    }

    /// Consumes the backend's responses, waking the operations answered and those whose
    /// deadline passed at `now_ns`; returns the next deadline (the earliest operation timeout),
    /// if any. Needed after [`port`](Self::port) fired or that deadline passed; the
    /// [`Source`] impl calls it.
    pub fn poll(&self, now_ns: u64) -> Option<u64> {
        self.engine().harvest(now_ns)
    }

    /// Lets `channel` (bound to [`port`](Self::port)) wake the executor that drives the disk, so
    /// it is polled only when responses arrived or an operation's deadline passed
    /// (`disk::connect` does this on Xen). Without one (a simulated backend) the disk is polled
    /// on every executor turn. After a restore the disk rebinds it to its new port itself.
    pub fn bind_channel(&self, channel: Channel) {
        self.engine().channel = Some(channel);
    }

    // ---- What the connection is ---------------------------------------------------------------

    /// The disk's size in bytes.
    pub fn capacity(&self) -> u64 {
        self.engine.borrow().wire_sectors * WIRE_SECTOR as u64
    }

    /// The logical sector size in bytes (512 to 4096, a power of two): the alignment of
    /// [`read_blocks`](Self::read_blocks) and [`write_blocks`](Self::write_blocks).
    pub fn sector_size(&self) -> u32 {
        self.engine.borrow().sector_size
    }

    /// The disk's size in logical sectors.
    pub fn sectors(&self) -> u64 {
        self.capacity() / self.sector_size() as u64
    }

    /// True when the backend marked the disk read-only (`info & VDISK_READONLY`).
    pub fn read_only(&self) -> bool {
        self.info() & wire::VDISK_READONLY != 0
    }

    /// The backend's `info` bits (`VDISK_*`).
    pub fn info(&self) -> u32 {
        self.engine.borrow().info
    }

    /// What the connection supports.
    pub fn features(&self) -> Features {
        self.engine.borrow().features
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.engine.borrow().stats
    }

    /// The event channel shared with the backend: it fires when responses arrive.
    pub fn port(&self) -> u32 {
        self.engine.borrow().port
    }

    /// Requests on the ring and not yet answered (including those of operations that gave up).
    pub fn in_flight(&self) -> usize {
        self.engine.borrow().in_flight()
    }

    /// Operations started and not finished.
    pub fn operations(&self) -> usize {
        self.engine.borrow().operations()
    }

    /// Runs `f` on the platform (for tests and diagnostics).
    pub fn with_hal<R>(&self, f: impl FnOnce(&H) -> R) -> R {
        f(&self.engine.borrow().hal)
    }

    // ---- The block API ------------------------------------------------------------------------

    /// Reads `buf.len()` bytes at byte `offset` (any alignment).
    pub async fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.check_range(offset, buf.len() as u64)?;
        let ss = self.sector_size() as u64;
        let mut bounce = alloc::vec::Vec::new();
        for p in Pieces::new(offset, buf.len(), ss) {
            match p.in_sector {
                None => self.read_blocks(p.lba, &mut buf[p.range]).await?,
                Some(at) => {
                    bounce.resize(ss as usize, 0);
                    self.read_blocks(p.lba, &mut bounce).await?;
                    let n = p.range.len();
                    buf[p.range].copy_from_slice(&bounce[at..at + n]);
                }
            }
        }
        Ok(())
    }

    /// Writes `data` at byte `offset` (any alignment: partial sectors are read, patched and
    /// written back; see the module documentation on concurrent writers).
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check_writable()?;
        self.check_range(offset, data.len() as u64)?;
        let ss = self.sector_size() as u64;
        let mut bounce = alloc::vec::Vec::new();
        for p in Pieces::new(offset, data.len(), ss) {
            match p.in_sector {
                None => self.write_blocks(p.lba, &data[p.range]).await?,
                Some(at) => {
                    bounce.resize(ss as usize, 0);
                    self.read_blocks(p.lba, &mut bounce).await?;
                    let n = p.range.len();
                    bounce[at..at + n].copy_from_slice(&data[p.range]);
                    self.write_blocks(p.lba, &bounce).await?;
                }
            }
        }
        Ok(())
    }

    /// Reads whole sectors starting at logical sector `lba`; `buf.len()` must be a multiple of
    /// [`sector_size`](Self::sector_size).
    pub fn read_blocks<'a>(&'a self, lba: u64, buf: &'a mut [u8]) -> Io<'a, H> {
        match self.check_blocks(lba, buf.len()) {
            Ok(sector) => self.io(Transfer::new(Op::Read, sector, Buf::Read(buf), 0)),
            Err(e) => Io::failed(self, e),
        }
    }

    /// Writes whole sectors starting at logical sector `lba`; `data.len()` must be a multiple
    /// of [`sector_size`](Self::sector_size).
    pub fn write_blocks<'a>(&'a self, lba: u64, data: &'a [u8]) -> Io<'a, H> {
        let checked = self
            .check_writable()
            .and_then(|()| self.check_blocks(lba, data.len()));
        match checked {
            Ok(sector) => self.io(Transfer::new(Op::Write, sector, Buf::Write(data), 0)),
            Err(e) => Io::failed(self, e),
        }
    }

    /// Makes completed writes durable: a cache flush if the backend offers it, else a write
    /// barrier if offered; a backend offering neither has no volatile cache, so this is then a
    /// no-op. Writes still in flight when the flush is issued are not covered.
    pub fn flush(&self) -> Io<'_, H> {
        if let Err(e) = self.check_connected() {
            return Io::failed(self, e);
        }
        let f = self.features();
        if f.flush {
            self.io(Transfer::flush(Op::FlushDiskcache))
        } else if f.barrier {
            self.io(Transfer::flush(Op::WriteBarrier))
        } else {
            Io::done(self, Ok(()))
        }
    }

    /// Orders writes: everything written before completes before anything written after
    /// (`BLKIF_OP_WRITE_BARRIER` with no data). [`Error::Unsupported`] if not offered.
    pub fn barrier(&self) -> Io<'_, H> {
        if let Err(e) = self.check_writable() {
            return Io::failed(self, e);
        }
        if !self.features().barrier {
            return Io::failed(self, Error::Unsupported(Op::WriteBarrier));
        }
        self.io(Transfer::new(Op::WriteBarrier, 0, Buf::None, 0))
    }

    /// Tells the backend that `len` bytes at `offset` (both sector-aligned) are no longer in
    /// use. [`Error::Unsupported`] if not offered.
    pub fn discard(&self, offset: u64, len: u64) -> Io<'_, H> {
        let checked = self.check_writable().and_then(|()| {
            self.check_range(offset, len)?;
            let ss = self.sector_size() as u64;
            if !offset.is_multiple_of(ss) || !len.is_multiple_of(ss) {
                return Err(Error::Unaligned {
                    offset,
                    len,
                    sector_size: ss as u32,
                });
            }
            if !self.features().discard {
                return Err(Error::Unsupported(Op::Discard));
            }
            Ok(())
        });
        match checked {
            Err(e) => Io::failed(self, e),
            Ok(()) if len == 0 => Io::done(self, Ok(())),
            Ok(()) => {
                let sector = offset / WIRE_SECTOR as u64;
                let count = len / WIRE_SECTOR as u64;
                self.io(Transfer::new(Op::Discard, sector, Buf::None, count))
            }
        }
    }

    fn io<'a>(&'a self, t: Transfer<'a>) -> Io<'a, H> {
        Io {
            disk: self,
            state: State::Run(t),
        }
    }

    // ---- Checks -------------------------------------------------------------------------------

    fn check_connected(&self) -> Result<(), Error> {
        let e = self.engine.borrow();
        if e.connected {
            Ok(())
        } else {
            Err(e.failed.clone().unwrap_or(Error::Disconnected))
        }
    }

    fn check_writable(&self) -> Result<(), Error> {
        self.check_connected()?;
        if self.read_only() {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), Error> {
        self.check_connected()?;
        let capacity = self.capacity();
        match offset.checked_add(len) {
            Some(end) if end <= capacity => Ok(()),
            _ => Err(Error::OutOfRange {
                offset,
                len,
                capacity,
            }),
        }
    }

    /// Checks a block range; returns its first wire sector.
    fn check_blocks(&self, lba: u64, len: usize) -> Result<u64, Error> {
        let ss = self.sector_size() as u64;
        let offset = lba.saturating_mul(ss);
        if !(len as u64).is_multiple_of(ss) {
            return Err(Error::Unaligned {
                offset,
                len: len as u64,
                sector_size: ss as u32,
            });
        }
        if lba.checked_mul(ss).is_none() {
            return Err(Error::OutOfRange {
                offset,
                len: len as u64,
                capacity: self.capacity(),
            });
        }
        self.check_range(offset, len as u64)?;
        Ok(offset / WIRE_SECTOR as u64)
    }
}

/// The disk as an executor source: polled when its event channel fired (responses), or at the
/// earliest operation deadline. Operations put their requests on the ring themselves.
impl<H: Hal> Source for Blkfront<H> {
    fn poll(&self, cx: &mut Context<'_>, now_ns: u64) -> Option<u64> {
        // Take the event and register before reading the ring: an event after this wakes us.
        let mut e = self.engine();
        let signalled = match &e.channel {
            Some(ch) => {
                let _ = ch.take();
                ch.register(cx.waker());
                true
            }
            None => false,
        };
        let next = e.harvest(now_ns);
        drop(e);
        if !signalled {
            // Nothing can signal us: poll every turn.
            cx.waker().wake_by_ref();
        }
        next
    }
}

impl<H: Hal> AsRef<Blkfront<H>> for Blkfront<H> {
    fn as_ref(&self) -> &Blkfront<H> {
        self
    }
}

enum State<'a> {
    Done(Option<Result<(), Error>>),
    Run(Transfer<'a>),
}

/// One block operation in progress, as a future. Dropping it cancels the operation (see the
/// module documentation).
#[must_use = "a block operation does nothing unless awaited"]
pub struct Io<'a, H: Hal> {
    disk: &'a Blkfront<H>,
    state: State<'a>,
}

impl<'a, H: Hal> Io<'a, H> {
    fn done(disk: &'a Blkfront<H>, r: Result<(), Error>) -> Self {
        Io {
            disk,
            state: State::Done(Some(r)),
        }
    }

    fn failed(disk: &'a Blkfront<H>, e: Error) -> Self {
        Self::done(disk, Err(e))
    }
}

impl<H: Hal> Future for Io<'_, H> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            State::Done(r) => Poll::Ready(r.take().unwrap_or(Err(Error::Disconnected))),
            State::Run(t) => this.disk.engine().poll_transfer(t, cx),
        }
    }
}

impl<H: Hal> Drop for Io<'_, H> {
    fn drop(&mut self) {
        if let State::Run(t) = &self.state {
            if t.live() {
                self.disk.engine().cancelled(t.id());
            }
        }
    }
}

// ---- Blocking ---------------------------------------------------------------------------------

/// The block API as blocking calls: each runs its operation to completion on a small executor
/// that drives the disk and waits with `park` (on Xen, [`XenPark`](xen::exec) blocks the vCPU
/// until the disk's event channel fires).
pub struct Blocking<H: Hal, P: Park> {
    disk: Blkfront<H>,
    park: P,
    ex: Executor,
}

impl<H: Hal, P: Park> core::fmt::Debug for Blocking<H, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Blocking").field(&self.disk).finish()
    }
}

impl<H: Hal, P: Park> AsRef<Blkfront<H>> for Blocking<H, P> {
    fn as_ref(&self) -> &Blkfront<H> {
        &self.disk
    }
}

impl<H: Hal, P: Park> Blocking<H, P> {
    /// Blocking calls on `disk`, waiting with `park`.
    pub fn new(disk: Blkfront<H>, park: P) -> Self {
        Blocking {
            disk,
            park,
            ex: Executor::new(),
        }
    }

    /// The async handle (clone it for tasks).
    pub fn disk(&self) -> &Blkfront<H> {
        &self.disk
    }

    /// Back to the async handle.
    pub fn into_inner(self) -> Blkfront<H> {
        self.disk
    }

    fn run<'a, F: Future<Output = Result<(), Error>>>(
        ex: &mut Executor,
        park: &mut P,
        disk: &'a Blkfront<H>,
        op: impl FnOnce(&'a Blkfront<H>) -> F,
    ) -> Result<(), Error> {
        ex.block_on(park, &[disk], op(disk))
    }

    /// [`Blkfront::read`], blocking.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        Self::run(&mut self.ex, &mut self.park, &self.disk, |d| {
            d.read(offset, buf)
        })
    }

    /// [`Blkfront::write`], blocking.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        Self::run(&mut self.ex, &mut self.park, &self.disk, |d| {
            d.write(offset, data)
        })
    }

    /// [`Blkfront::read_blocks`], blocking.
    pub fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Error> {
        Self::run(&mut self.ex, &mut self.park, &self.disk, |d| {
            d.read_blocks(lba, buf)
        })
    }

    /// [`Blkfront::write_blocks`], blocking.
    pub fn write_blocks(&mut self, lba: u64, data: &[u8]) -> Result<(), Error> {
        Self::run(&mut self.ex, &mut self.park, &self.disk, |d| {
            d.write_blocks(lba, data)
        })
    }

    /// [`Blkfront::flush`], blocking.
    pub fn flush(&mut self) -> Result<(), Error> {
        Self::run(&mut self.ex, &mut self.park, &self.disk, |d| d.flush())
    }

    /// [`Blkfront::barrier`], blocking.
    pub fn barrier(&mut self) -> Result<(), Error> {
        Self::run(&mut self.ex, &mut self.park, &self.disk, |d| d.barrier())
    }

    /// [`Blkfront::discard`], blocking.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        Self::run(&mut self.ex, &mut self.park, &self.disk, |d| {
            d.discard(offset, len)
        })
    }

    /// [`Blkfront::disconnect`].
    pub fn disconnect<T: Transport>(
        &mut self,
        xs: &mut Client<T>,
        timeout: &mut impl Timeout,
    ) -> Result<(), Error> {
        self.disk.disconnect(xs, timeout)
    }

    /// [`Blkfront::capacity`].
    pub fn capacity(&self) -> u64 {
        self.disk.capacity()
    }

    /// [`Blkfront::sector_size`].
    pub fn sector_size(&self) -> u32 {
        self.disk.sector_size()
    }

    /// [`Blkfront::sectors`].
    pub fn sectors(&self) -> u64 {
        self.disk.sectors()
    }

    /// [`Blkfront::read_only`].
    pub fn read_only(&self) -> bool {
        self.disk.read_only()
    }

    /// [`Blkfront::info`].
    pub fn info(&self) -> u32 {
        self.disk.info()
    }

    /// [`Blkfront::features`].
    pub fn features(&self) -> Features {
        self.disk.features()
    }

    /// [`Blkfront::stats`].
    pub fn stats(&self) -> Stats {
        self.disk.stats()
    }

    /// [`Blkfront::port`].
    pub fn port(&self) -> u32 {
        self.disk.port()
    }

    /// [`Blkfront::in_flight`].
    pub fn in_flight(&self) -> usize {
        self.disk.in_flight()
    }

    /// The waiting strategy (for tests).
    pub fn park_mut(&mut self) -> &mut P {
        &mut self.park
    }
}

/// One run of a byte range split at sector boundaries: whole sectors from `lba`, or part of
/// sector `lba` starting `in_sector` bytes into it; `range` is where the run sits in the
/// caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    lba: u64,
    range: core::ops::Range<usize>,
    in_sector: Option<usize>,
}

/// The runs of `len` bytes at byte `offset` on a disk of `ss`-byte sectors, in order: a partial
/// head, whole sectors, a partial tail (what [`Blkfront::read`] and [`Blkfront::write`] do).
struct Pieces {
    pos: u64,
    done: usize,
    len: usize,
    ss: u64,
}

impl Pieces {
    fn new(offset: u64, len: usize, ss: u64) -> Pieces {
        Pieces {
            pos: offset,
            done: 0,
            len,
            ss,
        }
    }
}

impl Iterator for Pieces {
    type Item = Piece;
    fn next(&mut self) -> Option<Piece> {
        if self.done >= self.len {
            return None;
        }
        let ss = self.ss as usize;
        let in_sector = (self.pos % self.ss) as usize;
        let left = self.len - self.done;
        let (n, in_sector) = if in_sector == 0 && left >= ss {
            (left - left % ss, None)
        } else {
            ((ss - in_sector).min(left), Some(in_sector))
        };
        let p = Piece {
            lba: self.pos / self.ss,
            range: self.done..self.done + n,
            in_sector,
        };
        self.done += n;
        self.pos += n as u64;
        Some(p)
    }
}

#[cfg(test)]
mod pieces_tests {
    use super::{Piece, Pieces};

    #[test]
    fn a_range_splits_into_head_whole_sectors_and_tail() {
        let p: Vec<Piece> = Pieces::new(1000, 2000, 512).collect();
        let want = [
            (1, 0..24, Some(488)),
            (2, 24..1560, None),
            (5, 1560..2000, Some(0)),
        ];
        assert_eq!(p.len(), want.len());
        for (p, (lba, range, at)) in p.iter().zip(want) {
            assert_eq!((p.lba, p.range.clone(), p.in_sector), (lba, range, at));
        }
        let inside: Vec<Piece> = Pieces::new(10, 5, 512).collect();
        assert_eq!(inside.len(), 1);
        assert_eq!((inside[0].lba, inside[0].in_sector), (0, Some(10)));
        assert_eq!(Pieces::new(4096, 0, 512).count(), 0);
    }
}
