//! The console: Xen's own console (the `console_io` hypercall) for dom0 and early boot, and the
//! PV console ring (`struct xencons_interface`, read by xenconsoled in dom0) for domUs, whose
//! `console_io` output a release build of Xen drops.
//!
//! Also the [`log`] backend (`[   0.001234] INFO target: message`) and the `print!`/`println!`
//! macros.

use crate::shmem::{OutOfBounds, ShMem};
use core::fmt;
use core::sync::atomic::Ordering;

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

/// Writes bytes to the console, waiting for the console daemon when the ring is full (at most
/// about a second in all, then the rest is dropped rather than hanging the guest).
pub fn write_bytes(bytes: &[u8]) {
    let sink = SINK.lock().clone();
    match sink {
        Sink::None => arch::hypercall::console_io_write(bytes),
        Sink::Hypervisor => arch::hypercall::console_io_write(bytes),
        Sink::Ring(ring, port) => {
            let mut rest = bytes;
            let mut waits = 0;
            while !rest.is_empty() {
                match ring.write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(_) => return,
                }
                crate::events::notify_raw(port);
                if !rest.is_empty() {
                    waits += 1;
                    if waits > 100 {
                        return;
                    }
                    crate::events::poll_port(port, 10_000_000);
                }
            }
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
}
