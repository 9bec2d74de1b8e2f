//! The console: Xen's own console (the `console_io` hypercall) for dom0 and early boot, and the
//! PV console ring (`struct xencons_interface`, read by xenconsoled in dom0) for domUs, whose
//! `console_io` output a release build of Xen drops.
//!
//! Also the [`log`] backend (`[   0.001234] INFO target: message`) and the `print!`/`println!`
//! macros.

use crate::shmem::{OutOfBounds, ShMem};
use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Offsets in `struct xencons_interface` (io/console.h).
pub mod layout {
    /// `in[1024]`
    pub const IN: usize = 0;
    /// Size of `in`.
    pub const IN_SIZE: usize = 1024;
    /// `out[2048]`
    pub const OUT: usize = 1024;
    /// Size of `out`.
    pub const OUT_SIZE: usize = 2048;
    /// `in_cons`
    pub const IN_CONS: usize = 3072;
    /// `in_prod`
    pub const IN_PROD: usize = 3076;
    /// `out_cons`
    pub const OUT_CONS: usize = 3080;
    /// `out_prod`
    pub const OUT_PROD: usize = 3084;
}

/// The output half of a console ring: we produce, the console daemon consumes.
#[derive(Debug, Clone)]
pub struct ConsRing {
    mem: ShMem,
}

/// The console daemon moved `out_cons` somewhere impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadIndex {
    /// Consumer index found.
    pub cons: u32,
    /// Our producer index.
    pub prod: u32,
}

impl ConsRing {
    /// Wraps the console page.
    pub fn new(mem: ShMem) -> Self {
        ConsRing { mem }
    }

    fn io(e: OutOfBounds) -> BadIndex {
        let _ = e;
        BadIndex {
            cons: u32::MAX,
            prod: u32::MAX,
        }
    }

    /// Writes as much of `bytes` as fits; returns how many were written.
    pub fn write(&self, bytes: &[u8]) -> Result<usize, BadIndex> {
        let cons = self
            .mem
            .load_u32(layout::OUT_CONS, Ordering::Acquire)
            .map_err(Self::io)?;
        let prod = self
            .mem
            .load_u32(layout::OUT_PROD, Ordering::Relaxed)
            .map_err(Self::io)?;
        let used = prod.wrapping_sub(cons) as usize;
        if used > layout::OUT_SIZE {
            return Err(BadIndex { cons, prod });
        }
        let n = bytes.len().min(layout::OUT_SIZE - used);
        for (i, &b) in bytes[..n].iter().enumerate() {
            let idx = (prod as usize + i) % layout::OUT_SIZE;
            self.mem
                .store_u8(layout::OUT + idx, b, Ordering::Relaxed)
                .map_err(Self::io)?;
        }
        // The bytes must be visible before the producer index that publishes them.
        self.mem
            .store_u32(
                layout::OUT_PROD,
                prod.wrapping_add(n as u32),
                Ordering::Release,
            )
            .map_err(Self::io)?;
        Ok(n)
    }

    /// Bytes written but not yet consumed.
    pub fn pending(&self) -> usize {
        let cons = self
            .mem
            .load_u32(layout::OUT_CONS, Ordering::Acquire)
            .unwrap_or(0);
        let prod = self
            .mem
            .load_u32(layout::OUT_PROD, Ordering::Relaxed)
            .unwrap_or(0);
        (prod.wrapping_sub(cons) as usize).min(layout::OUT_SIZE)
    }
}

/// Where console output goes.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Nowhere yet (before boot set one up).
    None,
    /// The console_io hypercall (dom0; debug Xen for domUs).
    Hypervisor,
    /// The PV console ring and its event channel.
    Ring(ConsRing, u32),
}

static SINK: spin::Mutex<Sink> = spin::Mutex::new(Sink::None);

/// Chooses where output goes.
pub fn set_sink(sink: Sink) {
    *SINK.lock() = sink;
}

/// In a new domain: the console ring (the same page) has a new event channel.
pub(crate) fn rebind(port: u32) {
    if let Sink::Ring(_, p) = &mut *SINK.lock() {
        *p = port;
    }
}

/// How a writer waits for the console daemon (Xen: the event channel and `SCHEDOP_poll`; host
/// tests: a simulated daemon).
pub trait Daemon {
    /// Tells the daemon there is output.
    fn notify(&mut self);
    /// Blocks until the daemon signals (it consumed output) or a short while passes.
    fn wait(&mut self);
    /// The clock, in nanoseconds.
    fn now_ns(&self) -> u64;
}

/// A daemon that consumed nothing for this long is taken as stuck: the line waiting is dropped
/// (whole), and so are later ones until the ring has room again.
pub const STALL_NS: u64 = 2_000_000_000;

/// Lines dropped (whole) because the console daemon stopped consuming, not yet reported.
#[derive(Debug, Default)]
pub struct Dropped {
    lines: AtomicU64,
    /// Bytes pending in the ring when the last line was dropped: while the daemon has not
    /// consumed below that, it is still stuck.
    level: AtomicUsize,
}

impl Dropped {
    /// None dropped.
    pub const fn new() -> Dropped {
        Dropped {
            lines: AtomicU64::new(0),
            level: AtomicUsize::new(0),
        }
    }

    /// Lines dropped and not reported yet.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    fn drop_one(&self, pending: usize) -> Result<bool, BadIndex> {
        self.lines.fetch_add(1, Ordering::Relaxed);
        self.level.store(pending, Ordering::Relaxed);
        Ok(false)
    }
}

static DROPPED: Dropped = Dropped::new();

/// Writes `bytes` (one line, normally) to `ring` in one piece: waits for the daemon (without
/// spinning: [`Daemon::wait`]) until there is room for all of it, so a line is never cut, and
/// lines keep their order. Only a daemon that consumes nothing for [`STALL_NS`] makes it give
/// up: then the whole of `bytes` is dropped and counted in `dropped` (and later writes are
/// dropped at once until the daemon consumes again); the first write after the daemon drained the
/// ring is preceded by a `[console: N lines dropped]` line. Pieces longer than the ring are
/// written in ring-sized parts. Returns whether `bytes` was written.
pub fn write_whole(
    ring: &ConsRing,
    bytes: &[u8],
    daemon: &mut impl Daemon,
    dropped: &Dropped,
) -> Result<bool, BadIndex> {
    for part in bytes.chunks(layout::OUT_SIZE) {
        let lost = dropped.lines();
        // A loss is reported before the next line that is written.
        let mut note = LineBuf {
            buf: [0; 512],
            len: 0,
        };
        if lost > 0 {
            let _ = fmt::write(
                &mut note,
                format_args!(
                    "[console: {lost} lines dropped while the console daemon was stuck]\n"
                ),
            );
        }
        let need = (note.len + part.len()).min(layout::OUT_SIZE);
        let mut progress_at = daemon.now_ns();
        let mut seen = ring.pending();
        loop {
            if layout::OUT_SIZE - seen >= need {
                break;
            }
            if lost > 0 && seen >= dropped.level.load(Ordering::Relaxed) {
                // Still stuck since the last drop: drop this one too, without waiting.
                daemon.notify();
                return dropped.drop_one(seen);
            }
            daemon.notify();
            daemon.wait();
            let p = ring.pending();
            if p < seen {
                progress_at = daemon.now_ns();
            }
            seen = p;
            if daemon.now_ns().saturating_sub(progress_at) >= STALL_NS {
                return dropped.drop_one(seen);
            }
        }
        if note.len > 0 && layout::OUT_SIZE - seen >= note.len + part.len() {
            ring.write(&note.buf[..note.len])?;
            dropped.lines.fetch_sub(lost, Ordering::Relaxed);
        }
        let n = ring.write(part)?;
        debug_assert_eq!(n, part.len());
        daemon.notify();
    }
    Ok(true)
}

/// The console daemon of a domU: its event channel.
struct XenDaemon(u32);

impl Daemon for XenDaemon {
    fn notify(&mut self) {
        crate::events::notify_raw(self.0);
    }
    fn wait(&mut self) {
        crate::events::poll_port(self.0, 10_000_000);
    }
    fn now_ns(&self) -> u64 {
        crate::time::now_ns()
    }
}

/// Writes bytes to the console; on the PV ring, in one piece (see [`write_whole`]).
pub fn write_bytes(bytes: &[u8]) {
    let sink = SINK.lock().clone();
    match sink {
        Sink::None => arch::hypercall::console_io_write(bytes),
        Sink::Hypervisor => arch::hypercall::console_io_write(bytes),
        Sink::Ring(ring, port) => {
            let _ = write_whole(&ring, bytes, &mut XenDaemon(port), &DROPPED);
        }
    }
}

/// Waits (up to `timeout_ns`) until the console daemon has consumed everything written: called
/// before shutdown, so the last lines are not lost.
pub fn flush(timeout_ns: u64) {
    let sink = SINK.lock().clone();
    if let Sink::Ring(ring, port) = sink {
        let deadline = crate::time::now_ns() + timeout_ns;
        while ring.pending() > 0 && crate::time::now_ns() < deadline {
            crate::events::notify_raw(port);
            crate::events::poll_port(port, 5_000_000);
        }
    }
}

/// A `fmt::Write` over the console.
pub struct Writer;

impl fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Formats to the console in one piece (lines from different places do not interleave).
pub fn print_fmt(args: fmt::Arguments) {
    // Format into a small buffer first so a line reaches the ring in one write.
    let mut buf = LineBuf {
        buf: [0; 512],
        len: 0,
    };
    let _ = fmt::write(&mut buf, args);
    if buf.len > 0 {
        write_bytes(&buf.buf[..buf.len]);
    }
}

/// A line being formatted. Lines longer than the buffer go out in buffer-sized pieces, each
/// written whole.
struct LineBuf {
    buf: [u8; 512],
    len: usize,
}

impl fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                write_bytes(&self.buf);
                self.len = 0;
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Prints to the guest console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the guest console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print_fmt(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Displays a string in double quotes with the escapes of `{:?}` for ASCII (`\"`, `\\`, `\n`,
/// `\r`, `\t`, `\0`, `\u{1b}` for other control characters), and every non-ASCII character as
/// `\u{...}`: what a guest received (a command line, a request from the toolstack) shows exactly,
/// with no look-alike or invisible characters. For ASCII it prints what `{:?}` does, without the
/// Unicode tables and machinery `{:?}` brings into every image (~7 KiB).
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut plain = 0; // start of the run of characters printed as they are
        for (i, c) in self.0.char_indices() {
            let esc = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\0' => "\\0",
                ' '..='~' => continue,
                _ => "",
            };
            f.write_str(self.0.get(plain..i).unwrap_or(""))?;
            plain = i + c.len_utf8();
            if esc.is_empty() {
                write!(f, "\\u{{{:x}}}", c as u32)?;
            } else {
                f.write_str(esc)?;
            }
        }
        f.write_str(self.0.get(plain..).unwrap_or(""))?;
        f.write_str("\"")
    }
}

/// The `log` backend: timestamped lines on the console.
pub struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let t = crate::time::now_ns();
            print_fmt(format_args!(
                "[{:5}.{:06}] {:5} {}: {}\n",
                t / 1_000_000_000,
                (t % 1_000_000_000) / 1000,
                r.level(),
                r.target(),
                r.args()
            ));
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_is_debug_for_ascii_and_escapes_the_rest() {
        let all: String = (0u8..128).map(char::from).collect();
        for s in ["", "log=info", "a \"b\" \\ c", &all, "x\u{7f}\u{1b}y\n"] {
            assert_eq!(Quoted(s).to_string(), format!("{s:?}"), "{s:?}");
        }
        assert_eq!(Quoted("caf\u{e9}").to_string(), "\"caf\\u{e9}\"");
        assert_eq!(
            Quoted("\u{202e}x\u{1f600}").to_string(),
            "\"\\u{202e}x\\u{1f600}\""
        );
    }

    #[test]
    fn ring_wraps_and_stops_when_full() {
        let m = ShMem::new(4096);
        let ring = ConsRing::new(m.clone());
        m.store_u32(layout::OUT_PROD, 2040, Ordering::Relaxed)
            .unwrap();
        m.store_u32(layout::OUT_CONS, 2040, Ordering::Relaxed)
            .unwrap();
        assert_eq!(ring.write(b"0123456789abcdef").unwrap(), 16);
        let mut out = [0u8; 8];
        m.read(layout::OUT + 2040, &mut out).unwrap();
        assert_eq!(&out, b"01234567");
        m.read(layout::OUT, &mut out).unwrap();
        assert_eq!(&out, b"89abcdef", "wrapped to the start of out[]");
        assert_eq!(ring.pending(), 16);
        let big = [b'x'; 4096];
        assert_eq!(
            ring.write(&big).unwrap(),
            2048 - 16,
            "only the free space is written"
        );
        assert_eq!(ring.write(b"y").unwrap(), 0);
    }

    #[test]
    fn a_daemon_index_beyond_the_ring_is_an_error() {
        let m = ShMem::new(4096);
        m.store_u32(layout::OUT_CONS, 5000, Ordering::Relaxed)
            .unwrap();
        assert!(ConsRing::new(m).write(b"x").is_err());
    }

    /// A console daemon that consumes `per_wait` bytes each time the writer waits (10 ms of
    /// simulated time), appending them to `log`; `stuck` consumes nothing.
    struct SlowDaemon {
        mem: ShMem,
        log: Vec<u8>,
        per_wait: usize,
        now: u64,
        waits: u64,
    }

    impl SlowDaemon {
        fn new(mem: ShMem, per_wait: usize) -> Self {
            SlowDaemon {
                mem,
                log: Vec::new(),
                per_wait,
                now: 0,
                waits: 0,
            }
        }

        fn consume(&mut self, max: usize) {
            let cons = self
                .mem
                .load_u32(layout::OUT_CONS, Ordering::Relaxed)
                .unwrap();
            let prod = self
                .mem
                .load_u32(layout::OUT_PROD, Ordering::Relaxed)
                .unwrap();
            let n = (prod.wrapping_sub(cons) as usize).min(max);
            for i in 0..n {
                let mut b = [0u8];
                let idx = (cons as usize + i) % layout::OUT_SIZE;
                self.mem.read(layout::OUT + idx, &mut b).unwrap();
                self.log.push(b[0]);
            }
            self.mem
                .store_u32(
                    layout::OUT_CONS,
                    cons.wrapping_add(n as u32),
                    Ordering::Release,
                )
                .unwrap();
        }
    }

    impl Daemon for SlowDaemon {
        fn notify(&mut self) {}
        fn wait(&mut self) {
            self.waits += 1;
            self.now += 10_000_000;
            let n = self.per_wait;
            self.consume(n);
        }
        fn now_ns(&self) -> u64 {
            self.now
        }
    }

    fn line(i: usize) -> Vec<u8> {
        // Lengths from 1 to 511 bytes, each line recognisable.
        let mut l = format!("[{i:5}] ").into_bytes();
        l.extend(core::iter::repeat_n(b'a' + (i % 26) as u8, (i * 37) % 490));
        l.push(b'\n');
        l
    }

    #[test]
    fn lines_written_faster_than_a_slow_daemon_drains_arrive_whole_and_in_order() {
        let m = ShMem::new(4096);
        let ring = ConsRing::new(m.clone());
        // 7 bytes per 10 ms: far slower than the writer.
        let mut d = SlowDaemon::new(m, 7);
        let dropped = Dropped::new();
        let mut want = Vec::new();
        for i in 0..400 {
            let l = line(i);
            assert_eq!(write_whole(&ring, &l, &mut d, &dropped), Ok(true));
            want.extend_from_slice(&l);
        }
        d.consume(usize::MAX);
        assert_eq!(dropped.lines(), 0);
        assert!(d.waits > 1000, "the writer had to wait: {}", d.waits);
        assert_eq!(d.log.len(), want.len());
        assert!(d.log == want, "every line whole, in order");
    }

    #[test]
    fn a_stuck_daemon_costs_whole_lines_once_then_none_and_the_loss_is_reported() {
        let m = ShMem::new(4096);
        let ring = ConsRing::new(m.clone());
        let mut d = SlowDaemon::new(m, 0);
        let dropped = Dropped::new();
        let mut written = Vec::new();
        let mut i = 0;
        // 400-byte lines: once the ring is full, none fits in what is left.
        let fixed = |i: usize| {
            let mut l = format!("[{i:5}] ").into_bytes();
            l.resize(399, b'x');
            l.push(b'\n');
            l
        };
        // Fill the ring; the first line that does not fit waits STALL_NS, then is dropped.
        loop {
            let l = fixed(i);
            i += 1;
            if !write_whole(&ring, &l, &mut d, &dropped).unwrap() {
                break;
            }
            written.extend_from_slice(&l);
        }
        assert_eq!(d.now, STALL_NS, "waited for the stall limit once");
        assert_eq!(dropped.lines(), 1);
        // While stuck, later lines are dropped at once (no more waiting).
        let waits = d.waits;
        for _ in 0..50 {
            let l = fixed(i);
            i += 1;
            assert_eq!(write_whole(&ring, &l, &mut d, &dropped), Ok(false));
        }
        assert_eq!(d.waits, waits);
        assert_eq!(dropped.lines(), 51);
        // The daemon comes back: the next line is preceded by the report, and all is whole.
        d.per_wait = 100;
        d.consume(usize::MAX);
        let l = fixed(i);
        assert_eq!(write_whole(&ring, &l, &mut d, &dropped), Ok(true));
        d.consume(usize::MAX);
        let note = b"[console: 51 lines dropped while the console daemon was stuck]\n";
        written.extend_from_slice(note);
        written.extend_from_slice(&l);
        assert!(d.log == written, "{}", String::from_utf8_lossy(&d.log));
        assert_eq!(dropped.lines(), 0);
    }

    #[test]
    fn a_piece_longer_than_the_ring_goes_out_in_ring_sized_parts() {
        let m = ShMem::new(4096);
        let ring = ConsRing::new(m.clone());
        let mut d = SlowDaemon::new(m, 300);
        let big: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        assert_eq!(write_whole(&ring, &big, &mut d, &Dropped::new()), Ok(true));
        d.consume(usize::MAX);
        assert!(d.log == big);
    }
}
