//! blktest: exercises and measures blkfront against Linux's blkback. The command line picks a
//! mode (`blk=`); results are printed as `BLK ...` lines the lab tests check:
//!
//! - every disk opened: `BLK disk NODE capacity=... ring_pages=... persistent=...` (what was
//!   negotiated with the backend);
//! - `blk=read`: reads `len` bytes at `off` of the first disk: `BLK sha=HEX`;
//! - `blk=write-flush`: writes the pattern (`seed`) there, flushes, prints
//!   `BLK flushed sha=HEX` and stays up (the test destroys the domain);
//! - `blk=seq`: writes `mib` MiB of pattern, flushes, reads it back: both SHA-256s;
//! - `blk=random`: `n` random 4 KiB writes, then reads every block back in random order;
//! - `blk=readonly`: reads, and expects writes to be refused;
//! - `blk=errors`: expects reads, writes and flushes to fail with errors (a failing device);
//! - `blk=two-disks`: a different pattern on each of two disks, read back from both;
//! - `blk=bench`: sequential MB/s and random 4 KiB IOPS (`BLK MB/s ...`, `BLK IOPS ...`);
//! - `blk=async`: the async API on `xen::exec`, `tasks` tasks at once: the pattern written
//!   over `mib` MiB in pieces of mixed sizes, flushed, `n` random reads verified, a read
//!   cancelled by dropping its future, then queue-depth `tasks` random 4 KiB reads and 1 MiB
//!   sequential reads timed: `BLK async ... bad=0 sha=HEX` (the SHA-256 of the pattern written)
//!   and `BLK async-rate ...`.
//! - `blk=soak`: `tasks` tasks keep rewriting their 256 KiB chunks of the first `mib` MiB (8 by
//!   default) with a new pattern each pass, each chunk read back and checked at once, for
//!   `secs` seconds of guest time (so an `xl save` + `xl restore` or `xl migrate` lands in the
//!   middle of writes); then a flush and the whole range read back against the last pattern of
//!   each chunk: `BLK soak ... bad=0 reconnects=N resubmitted=N reconnect_ms=X sha=HEX` (the
//!   SHA-256 the range must now have, for the host to check the backing file).
//!
//! Success ends with `BLK ok MODE` and a power-off; a failure prints `BLK FAIL MODE: why` and
//! the domain crashes.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;

use blkfront::disk::{self, AsyncDisk, Disk};
use sha2::{Digest, Sha256};
use xen::cmdline::{validate, KeySpec};
use xen::println;
use xen::time::now_ns;

const KEYS: &[KeySpec] = &[
    KeySpec {
        name: "blk",
        help: "mode: info|read|write-flush|seq|random|readonly|errors|two-disks|bench|async|soak",
        validate: validate::non_empty,
    },
    KeySpec {
        name: "off",
        help: "byte offset for read and write-flush (default 0)",
        validate: validate::number,
    },
    KeySpec {
        name: "len",
        help: "bytes for read and write-flush (default 1048576)",
        validate: validate::number,
    },
    KeySpec {
        name: "mib",
        help: "MiB streamed by seq (default 256), bench (default 64), async (default 16), soak (8)",
        validate: validate::number,
    },
    KeySpec {
        name: "n",
        help: "random operations (random: default 1000; bench: 2000 of each; async: 800)",
        validate: validate::number,
    },
    KeySpec {
        name: "pool",
        help: "data pages granted to each backend (default: blkfront's Config)",
        validate: validate::number,
    },
    KeySpec {
        name: "segs",
        help: "most segments per indirect request (default: blkfront's Config)",
        validate: validate::number,
    },
    KeySpec {
        name: "ring-order",
        help: "largest ring, log2 pages (default: blkfront's Config)",
        validate: validate::number,
    },
    KeySpec {
        name: "tasks",
        help: "tasks doing I/O at once in async mode (default 8) and soak (default 4)",
        validate: validate::number,
    },
    KeySpec {
        name: "secs",
        help: "seconds of guest time soak keeps writing (default 20)",
        validate: validate::number,
    },
    KeySpec {
        name: "seed",
        help: "pattern seed (default 1)",
        validate: validate::number,
    },
];

xen::main!(main, KEYS);

const MIB: usize = 1 << 20;
const BLOCK: usize = 4096;

/// Why a mode failed.
enum Fail {
    /// A disk operation that should have worked did not.
    Disk(&'static str, blkfront::Error),
    /// A check on the data or the outcome failed.
    Check(String),
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Disk(what, e) => write!(f, "{what}: {e}"),
            Fail::Check(s) => f.write_str(s),
        }
    }
}

fn disk_err(what: &'static str) -> impl Fn(blkfront::Error) -> Fail {
    move |e| Fail::Disk(what, e)
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(Fail::Check(alloc::format!($($fmt)*)));
        }
    };
}

fn main() -> Result<(), Fail> {
    let c = xen::boot::cmdline();
    let mode = c.get("blk").unwrap_or("info");
    let num = |k: &str, d: u64| c.parsed::<u64>(k).unwrap_or(d);
    let seed = num("seed", 1);
    let r = match mode {
        "info" => info(),
        "read" => read(num("off", 0), num("len", MIB as u64)),
        "write-flush" => write_flush(num("off", 0), num("len", MIB as u64), seed),
        "seq" => seq(num("mib", 256), seed),
        "random" => random(num("n", 1000), seed),
        "readonly" => readonly(),
        "errors" => errors(),
        "two-disks" => two_disks(seed),
        "bench" => bench(num("mib", 64), num("n", 2000), seed),
        "async" => async_io(num("mib", 16), num("tasks", 8), num("n", 800), seed),
        "soak" => soak(num("mib", 8), num("tasks", 4), num("secs", 20), seed),
        other => Err(Fail::Check(alloc::format!("unknown mode {other:?}"))),
    };
    match &r {
        Ok(()) => println!("BLK ok {mode}"),
        Err(e) => println!("BLK FAIL {mode}: {e}"),
    }
    r
}

// ---- Disks ------------------------------------------------------------------------------------

/// Opens every disk, printing what was negotiated for each.
fn open_all() -> Result<Vec<Disk>, Fail> {
    let nodes = disk::list().map_err(disk_err("list disks"))?;
    check!(
        !nodes.is_empty(),
        "the guest has no disk (device/vbd/* is empty)"
    );
    let mut disks = Vec::new();
    for node in &nodes {
        let d = disk::open_with(node, config()).map_err(disk_err("open"))?;
        let f = d.features();
        println!(
            "BLK disk {node} capacity={} sector={} ro={} ring_pages={} backend_indirect={} \
             segs_per_request={} persistent={} flush={} barrier={} discard={}",
            d.capacity(),
            d.sector_size(),
            d.read_only(),
            f.ring_pages,
            f.backend_indirect_segments,
            f.segments_per_request,
            f.persistent,
            f.flush,
            f.barrier,
            f.discard
        );
        disks.push(d);
    }
    Ok(disks)
}

/// blkfront's configuration, with what the command line overrides.
fn config() -> blkfront::Config {
    let c = xen::boot::cmdline();
    let d = blkfront::Config::default();
    blkfront::Config {
        data_pages: c.parsed("pool").unwrap_or(d.data_pages),
        max_indirect_segments: c.parsed("segs").unwrap_or(d.max_indirect_segments),
        max_ring_page_order: c.parsed("ring-order").unwrap_or(d.max_ring_page_order),
        ..d
    }
}

fn open_first() -> Result<Disk, Fail> {
    let mut d = open_all()?;
    Ok(d.swap_remove(0))
}

fn close(d: Disk) -> Result<(), Fail> {
    let s = d.stats();
    println!(
        "BLK stats requests={} indirect={} responses={} io_errors={} bad={} timeouts={}",
        s.requests, s.indirect_requests, s.responses, s.io_errors, s.bad_responses, s.timeouts
    );
    disk::close(&d).map_err(disk_err("close"))
}

// ---- Data -------------------------------------------------------------------------------------

/// The test pattern: the bytes at disk offset `pos` (a multiple of 8) onwards for `seed`. Every
/// 8-byte word is a hash of its position, so any range can be regenerated on its own.
fn fill(buf: &mut [u8], seed: u64, pos: u64) {
    for (word, chunk) in (pos / 8..).zip(buf.chunks_mut(8)) {
        let v = splitmix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ word);
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic generator for random positions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Hex([u8; 32]);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn digest(h: Sha256) -> Hex {
    Hex(h.finalize().into())
}

/// Writes `len` bytes of pattern `seed` at `off`, in 1 MiB chunks; returns their SHA-256.
fn write_pattern(d: &mut Disk, off: u64, len: u64, seed: u64) -> Result<Hex, Fail> {
    let mut h = Sha256::new();
    let mut buf = alloc::vec![0u8; MIB];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(MIB as u64) as usize;
        // Patterns are generated from 8-aligned positions; `off` may be anything.
        let pos = off + done;
        let skew = (pos % 8) as usize;
        let mut tmp = alloc::vec![0u8; n + skew];
        fill(&mut tmp, seed, pos - skew as u64);
        buf[..n].copy_from_slice(&tmp[skew..]);
        d.write(pos, &buf[..n]).map_err(disk_err("write"))?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(digest(h))
}

/// Reads `len` bytes at `off` in 1 MiB chunks; returns their SHA-256 and, if `seed` is given,
/// whether they equal pattern `seed`.
fn read_hash(d: &mut Disk, off: u64, len: u64, seed: Option<u64>) -> Result<(Hex, bool), Fail> {
    let mut h = Sha256::new();
    let mut buf = alloc::vec![0u8; MIB];
    let mut want = alloc::vec![0u8; MIB + 8];
    let mut same = true;
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(MIB as u64) as usize;
        let pos = off + done;
        d.read(pos, &mut buf[..n]).map_err(disk_err("read"))?;
        h.update(&buf[..n]);
        if let Some(s) = seed {
            let skew = (pos % 8) as usize;
            fill(&mut want[..n + skew], s, pos - skew as u64);
            same &= buf[..n] == want[skew..skew + n];
        }
        done += n as u64;
    }
    Ok((digest(h), same))
}

fn secs_since(t0: u64) -> f64 {
    (now_ns() - t0) as f64 / 1e9
}

// ---- Modes ------------------------------------------------------------------------------------

fn info() -> Result<(), Fail> {
    for d in open_all()? {
        close(d)?;
    }
    Ok(())
}

fn read(off: u64, len: u64) -> Result<(), Fail> {
    let mut d = open_first()?;
    let (sha, _) = read_hash(&mut d, off, len, None)?;
    println!("BLK sha={sha} off={off} len={len}");
    close(d)
}

fn write_flush(off: u64, len: u64, seed: u64) -> Result<(), Fail> {
    let mut d = open_first()?;
    let sha = write_pattern(&mut d, off, len, seed)?;
    d.flush().map_err(disk_err("flush"))?;
    println!("BLK flushed sha={sha} off={off} len={len}");
    // Stay up with the data flushed but the disk still open: the test destroys the domain.
    loop {
        xen::sched::sleep(1_000_000_000);
    }
}

fn seq(mib: u64, seed: u64) -> Result<(), Fail> {
    let mut d = open_first()?;
    let len = mib * MIB as u64;
    check!(
        len <= d.capacity(),
        "{mib} MiB do not fit the {}-byte disk",
        d.capacity()
    );
    let t0 = now_ns();
    let wsha = write_pattern(&mut d, 0, len, seed)?;
    d.flush().map_err(disk_err("flush"))?;
    let tw = secs_since(t0);
    let t1 = now_ns();
    let (rsha, same) = read_hash(&mut d, 0, len, Some(seed))?;
    let tr = secs_since(t1);
    println!("BLK seq mib={mib} write_sha={wsha} read_sha={rsha} write_s={tw:.1} read_s={tr:.1}");
    check!(same, "data read back differs from the pattern written");
    close(d)
}

/// Random 4 KiB writes over the disk (the last write to a block wins), then every written block
/// read back in random order and compared, plus as many never-written blocks (must be zero on
/// a fresh sparse disk).
fn random(n: u64, seed: u64) -> Result<(), Fail> {
    let mut d = open_first()?;
    let blocks = d.capacity() / BLOCK as u64;
    let mut rng = Rng(seed);
    let mut written: BTreeMap<u64, u64> = BTreeMap::new();
    let mut buf = [0u8; BLOCK];
    for gen in 0..n {
        let b = rng.below(blocks);
        fill(&mut buf, seed ^ (gen << 20), b * BLOCK as u64);
        d.write(b * BLOCK as u64, &buf)
            .map_err(disk_err("random write"))?;
        written.insert(b, gen);
    }
    let mut order: Vec<(u64, u64)> = written.iter().map(|(&b, &g)| (b, g)).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut want = [0u8; BLOCK];
    let mut bad = 0usize;
    for &(b, gen) in &order {
        d.read(b * BLOCK as u64, &mut buf)
            .map_err(disk_err("random read"))?;
        fill(&mut want, seed ^ (gen << 20), b * BLOCK as u64);
        bad += usize::from(buf != want);
    }
    let mut zeros = 0usize;
    let mut unwritten = 0usize;
    while unwritten < order.len() && (written.len() as u64) < blocks {
        let b = rng.below(blocks);
        if written.contains_key(&b) {
            continue;
        }
        unwritten += 1;
        d.read(b * BLOCK as u64, &mut buf)
            .map_err(disk_err("random read"))?;
        zeros += usize::from(buf.iter().all(|&x| x == 0));
    }
    println!(
        "BLK random writes={n} blocks={} verified={} bad={bad} unwritten_zero={zeros}/{unwritten}",
        order.len(),
        order.len() - bad
    );
    check!(bad == 0, "{bad} blocks did not read back as written");
    check!(zeros == unwritten, "never-written blocks are not zero");
    close(d)
}

fn readonly() -> Result<(), Fail> {
    let mut d = open_first()?;
    check!(d.read_only(), "the disk is not marked read-only");
    let mut buf = [0u8; BLOCK];
    d.read(0, &mut buf).map_err(disk_err("read"))?;
    let w = d.write(0, &buf);
    let wb = d.write_blocks(1, &buf);
    println!("BLK readonly read=ok write={w:?} write_blocks={wb:?}");
    check!(
        w == Err(blkfront::Error::ReadOnly) && wb == Err(blkfront::Error::ReadOnly),
        "writes to a read-only disk were not refused"
    );
    close(d)
}

/// Every operation on a disk whose device fails must come back as an error, several times over.
fn errors() -> Result<(), Fail> {
    let mut d = open_first()?;
    let mut buf = alloc::vec![0u8; 64 * 1024];
    for round in 0..3 {
        let r = d.read(round * 4096, &mut buf);
        let w = d.write(round * 4096, &buf);
        let f = d.flush();
        println!(
            "BLK errors round={round} read={} write={} flush={}",
            show(&r),
            show(&w),
            show(&f)
        );
        check!(
            matches!(r, Err(blkfront::Error::Io { .. })),
            "a read from the failing disk did not fail with an I/O error"
        );
        check!(
            matches!(w, Err(blkfront::Error::Io { .. })),
            "a write to the failing disk did not fail with an I/O error"
        );
    }
    close(d)
}

fn show(r: &Result<(), blkfront::Error>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => alloc::format!("error({e})"),
    }
}

fn two_disks(seed: u64) -> Result<(), Fail> {
    let mut disks = open_all()?;
    check!(disks.len() == 2, "expected 2 disks, found {}", disks.len());
    let len = 4 * MIB as u64;
    let mut shas = Vec::new();
    for (i, d) in disks.iter_mut().enumerate() {
        shas.push(write_pattern(d, 0, len, seed + i as u64)?);
    }
    for (i, d) in disks.iter_mut().enumerate() {
        d.flush().map_err(disk_err("flush"))?;
        let (_, same) = read_hash(d, 0, len, Some(seed + i as u64))?;
        check!(same, "disk {i} did not read back its own pattern");
        println!("BLK disk{i} sha={}", shas[i]);
    }
    for d in disks {
        close(d)?;
    }
    Ok(())
}

/// What blkbench (tests/lab-tools/blkbench.c) does on Linux: 1 MiB sequential writes + flush,
/// 1 MiB sequential reads, then random 4 KiB reads, and random 4 KiB writes + flush, over the
/// first `mib` MiB. The buffer is filled once, so only the I/O is timed.
fn bench(mib: u64, n: u64, seed: u64) -> Result<(), Fail> {
    let mut d = open_first()?;
    let len = (mib * MIB as u64).min(d.capacity() - d.capacity() % MIB as u64);
    let mut buf = alloc::vec![0u8; MIB];
    fill(&mut buf, seed, 0);
    let t0 = now_ns();
    for pos in (0..len).step_by(MIB) {
        d.write(pos, &buf).map_err(disk_err("write"))?;
    }
    d.flush().map_err(disk_err("flush"))?;
    let tw = secs_since(t0);
    let t1 = now_ns();
    for pos in (0..len).step_by(MIB) {
        d.read(pos, &mut buf).map_err(disk_err("read"))?;
    }
    let tr = secs_since(t1);
    let mb = len as f64 / 1e6;
    println!(
        "BLK MB/s write={:.1} read={:.1} bytes={len}",
        mb / tw,
        mb / tr
    );
    let blocks = len / BLOCK as u64;
    let mut rng = Rng(seed);
    let mut block = [0u8; BLOCK];
    let t2 = now_ns();
    for _ in 0..n {
        d.read(rng.below(blocks) * BLOCK as u64, &mut block)
            .map_err(disk_err("random read"))?;
    }
    let trr = secs_since(t2);
    let t3 = now_ns();
    for _ in 0..n {
        d.write(rng.below(blocks) * BLOCK as u64, &block)
            .map_err(disk_err("random write"))?;
    }
    d.flush().map_err(disk_err("flush"))?;
    let trw = secs_since(t3);
    println!(
        "BLK IOPS randread={:.0} randwrite={:.0} n={n}",
        n as f64 / trr,
        n as f64 / trw
    );
    close(d)
}

// ---- Async ------------------------------------------------------------------------------------

/// Reads `len` bytes at `pos` asynchronously and compares them with pattern `seed`.
async fn read_check(d: &AsyncDisk, pos: u64, len: usize, seed: u64) -> Result<bool, Fail> {
    let mut buf = alloc::vec![0u8; len];
    d.read(pos, &mut buf)
        .await
        .map_err(disk_err("async read"))?;
    let skew = (pos % 8) as usize;
    let mut want = alloc::vec![0u8; len + skew];
    fill(&mut want, seed, pos - skew as u64);
    Ok(buf[..] == want[skew..])
}

/// The async API from `tasks` tasks at once (see the crate documentation).
fn async_io(mib: u64, tasks: u64, n: u64, seed: u64) -> Result<(), Fail> {
    let d: AsyncDisk = open_first()?.into_inner();
    let len = mib * MIB as u64;
    check!(
        len <= d.capacity(),
        "{mib} MiB do not fit the {}-byte disk",
        d.capacity()
    );
    check!(tasks >= 1, "tasks=0");
    let chunks = len / MIB as u64;
    let disk = d.clone();
    let r = xen::exec::run(&[&disk], |sp| async move {
        // 1. Task t writes the pattern over chunks t, t + tasks, ... in pieces of 4 KiB to
        //    256 KiB (some at byte offsets), all tasks at once.
        let t0 = now_ns();
        let mut hs = Vec::new();
        for t in 0..tasks {
            let d = d.clone();
            hs.push(sp.spawn(async move {
                let mut rng = Rng(seed ^ (t << 40));
                let mut pieces = 0u64;
                let mut buf = Vec::new();
                for c in (t..chunks).step_by(tasks as usize) {
                    let end = (c + 1) * MIB as u64;
                    let mut pos = c * MIB as u64;
                    while pos < end {
                        let n = if rng.below(8) == 0 {
                            rng.below(5000) + 1
                        } else {
                            (rng.below(64) + 1) * 4096
                        }
                        .min(end - pos) as usize;
                        let skew = (pos % 8) as usize;
                        buf.resize(n + skew, 0);
                        fill(&mut buf, seed, pos - skew as u64);
                        d.write(pos, &buf[skew..])
                            .await
                            .map_err(disk_err("async write"))?;
                        pos += n as u64;
                        pieces += 1;
                    }
                }
                Ok::<u64, Fail>(pieces)
            }));
        }
        let mut writes = 0;
        for h in hs {
            writes += h.await?;
        }
        d.flush().await.map_err(disk_err("async flush"))?;
        let tw = secs_since(t0);

        // 2. `n` random reads of 1 byte to 64 KiB, verified, from all tasks at once.
        let mut hs = Vec::new();
        for t in 0..tasks {
            let d = d.clone();
            let per = n / tasks + u64::from(t < n % tasks);
            hs.push(sp.spawn(async move {
                let mut rng = Rng(seed ^ (t << 32) ^ 0x5eed);
                let mut bad = 0u64;
                for _ in 0..per {
                    let l = rng.below(64 * 1024) + 1;
                    let pos = rng.below(len - l + 1);
                    bad += u64::from(!read_check(&d, pos, l as usize, seed).await?);
                }
                Ok::<u64, Fail>(bad)
            }));
        }
        let mut bad = 0;
        for h in hs {
            bad += h.await?;
        }

        // 3. A 1 MiB read cancelled once on the ring; then a read of the same range.
        {
            let mut big = alloc::vec![0u8; MIB];
            let mut f = core::pin::pin!(d.read(0, &mut big));
            core::future::poll_fn(|cx| {
                let _ = f.as_mut().poll(cx);
                core::task::Poll::Ready(())
            })
            .await;
        }
        bad += u64::from(!read_check(&d, 0, MIB, seed).await?);

        // 4. Rates: queue depth `tasks`.
        let t1 = now_ns();
        let blocks = len / BLOCK as u64;
        let mut hs = Vec::new();
        for t in 0..tasks {
            let d = d.clone();
            hs.push(sp.spawn(async move {
                let mut rng = Rng(seed ^ (t << 24) ^ 0xabc);
                let mut b = alloc::vec![0u8; BLOCK];
                for _ in 0..n / tasks {
                    d.read(rng.below(blocks) * BLOCK as u64, &mut b)
                        .await
                        .map_err(disk_err("async random read"))?;
                }
                Ok::<(), Fail>(())
            }));
        }
        for h in hs {
            h.await?;
        }
        let iops = (n / tasks * tasks) as f64 / secs_since(t1);
        let t2 = now_ns();
        let mut hs = Vec::new();
        for t in 0..tasks {
            let d = d.clone();
            hs.push(sp.spawn(async move {
                let mut b = alloc::vec![0u8; MIB];
                for c in (t..chunks).step_by(tasks as usize) {
                    d.read(c * MIB as u64, &mut b)
                        .await
                        .map_err(disk_err("async sequential read"))?;
                }
                Ok::<(), Fail>(())
            }));
        }
        for h in hs {
            h.await?;
        }
        let mbs = len as f64 / 1e6 / secs_since(t2);
        d.flush().await.map_err(disk_err("async flush"))?;
        Ok::<_, Fail>((writes, bad, tw, iops, mbs))
    });
    let (writes, bad, tw, iops, mbs) = r?;
    // What the disk should now hold: the pattern over `len` bytes.
    let mut h = Sha256::new();
    let mut buf = alloc::vec![0u8; MIB];
    for c in 0..chunks {
        fill(&mut buf, seed, c * MIB as u64);
        h.update(&buf);
    }
    let s = disk.stats();
    println!(
        "BLK async tasks={tasks} writes={writes} reads={} bad={bad} max_in_flight={} \
         cancelled={} late={} in_flight={} write_s={tw:.1} sha={}",
        n + 1,
        s.max_in_flight,
        s.cancelled,
        s.late_responses,
        disk.in_flight(),
        digest(h)
    );
    println!("BLK async-rate qd={tasks} randread_iops={iops:.0} seqread_mbs={mbs:.1}");
    check!(bad == 0, "{bad} async reads did not match the pattern");
    check!(
        tasks == 1 || s.max_in_flight > 1,
        "never more than one request in flight"
    );
    check!(s.cancelled >= 1, "the cancelled read was not counted");
    check!(
        disk.in_flight() == 0,
        "{} requests never answered",
        disk.in_flight()
    );
    disk::close(&disk).map_err(disk_err("close"))
}

// ---- Soak: writing across a save/restore or migration ---------------------------------------------

/// Bytes each soak write covers.
const SOAK_CHUNK: usize = 256 << 10;

/// The pattern seed of chunk `c` in pass `pass`.
fn soak_seed(seed: u64, pass: u64, c: u64) -> u64 {
    seed ^ ((pass + 1) << 32) ^ c
}

/// Keeps writing and verifying for `secs` seconds (see the crate documentation).
fn soak(mib: u64, tasks: u64, secs: u64, seed: u64) -> Result<(), Fail> {
    let d: AsyncDisk = open_first()?.into_inner();
    let len = mib * MIB as u64;
    check!(
        len <= d.capacity() && len >= SOAK_CHUNK as u64,
        "{mib} MiB do not fit the {}-byte disk",
        d.capacity()
    );
    check!(tasks >= 1, "tasks=0");
    let chunks = len / SOAK_CHUNK as u64;
    // The seed each chunk was last written with.
    let last = alloc::rc::Rc::new(core::cell::RefCell::new(alloc::vec![0u64; chunks as usize]));
    let disk = d.clone();
    let t0 = now_ns();
    let end = t0 + secs * 1_000_000_000;
    println!("BLK soak writing mib={mib} tasks={tasks} secs={secs}");
    let l = last.clone();
    let r = xen::exec::run(&[&disk], |sp| async move {
        let mut hs = Vec::new();
        for t in 0..tasks {
            let (d, l) = (d.clone(), l.clone());
            hs.push(sp.spawn(async move {
                let mut buf = alloc::vec![0u8; SOAK_CHUNK];
                let mut back = alloc::vec![0u8; SOAK_CHUNK];
                let (mut writes, mut bad, mut pass) = (0u64, 0u64, 0u64);
                let mut report = t0 + 2_000_000_000;
                while pass == 0 || now_ns() < end {
                    for c in (t..chunks).step_by(tasks as usize) {
                        let pos = c * SOAK_CHUNK as u64;
                        let s = soak_seed(seed, pass, c);
                        fill(&mut buf, s, pos);
                        d.write(pos, &buf).await.map_err(disk_err("soak write"))?;
                        l.borrow_mut()[c as usize] = s;
                        writes += 1;
                        d.read(pos, &mut back)
                            .await
                            .map_err(disk_err("soak read"))?;
                        bad += u64::from(back != buf);
                    }
                    pass += 1;
                    if t == 0 && now_ns() >= report {
                        report += 2_000_000_000;
                        let st = d.stats();
                        println!(
                            "BLK soak t={:.1}s passes={pass} reconnects={} resubmitted={}",
                            secs_since(t0),
                            st.reconnects,
                            st.requests_resubmitted
                        );
                    }
                }
                Ok::<_, Fail>((writes, bad))
            }));
        }
        let (mut writes, mut bad) = (0, 0);
        for h in hs {
            let (w, b) = h.await?;
            writes += w;
            bad += b;
        }
        d.flush().await.map_err(disk_err("soak flush"))?;
        // The whole range against each chunk's last pattern.
        let mut h = Sha256::new();
        let mut want = alloc::vec![0u8; SOAK_CHUNK];
        let mut back = alloc::vec![0u8; SOAK_CHUNK];
        for c in 0..chunks {
            let pos = c * SOAK_CHUNK as u64;
            fill(&mut want, l.borrow()[c as usize], pos);
            d.read(pos, &mut back)
                .await
                .map_err(disk_err("soak final read"))?;
            bad += u64::from(back != want);
            h.update(&want);
        }
        Ok::<_, Fail>((writes, bad, digest(h)))
    });
    let (writes, bad, sha) = r?;
    let s = disk.stats();
    println!(
        "BLK soak secs={:.1} writes={writes} bad={bad} reconnects={} reconnect_failures={} \
         resubmitted={} reconnect_ms={:.1} requests={} in_flight={} sha={sha}",
        secs_since(t0),
        s.reconnects,
        s.reconnect_failures,
        s.requests_resubmitted,
        s.last_reconnect_ns as f64 / 1e6,
        s.requests,
        disk.in_flight()
    );
    check!(bad == 0, "{bad} soak chunks did not read back as written");
    check!(
        disk.in_flight() == 0,
        "{} requests never answered",
        disk.in_flight()
    );
    disk::close(&disk).map_err(disk_err("close"))
}
