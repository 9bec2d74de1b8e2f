//! kv: a Redis-protocol key-value server on TCP 6379 that keeps its data on the guest's first
//! disk (raw, no filesystem) and never loses a write it has acknowledged.
//!
//! Boot: the network comes up (DHCP or `ip=`), the disk is connected, its log recovered (see
//! `kv::log`: a torn last frame is dropped), then the server listens and prints
//! `kv: serving redis://ADDR:PORT/ ...`. Tasks on the one executor:
//!
//! - one per connection (`kv::session` over a socket): runs the commands of each chunk it
//!   reads against the shared engine, loads any value a command needs from disk first, then
//!   waits for the group commit that holds its effects before it writes the replies;
//! - the committer: writes the log's frames one at a time (then flushes, with
//!   `fsync=always`), and after each commit drops values from memory beyond the cache;
//! - the compactor: when few segments are free, copies the tail's live records to the head
//!   and frees the tail once the copies are on disk;
//! - active expiry (a few keys every 100 ms), the flusher (`fsync=batch`: every second), and the
//!   xenstore stats line.
//!
//! `xl shutdown` is deferred to the app (`xen::platform::defer_shutdown`): kv stops taking
//! commands, writes and flushes what is pending, prints `kv: clean shutdown ...` and powers
//! off. A second `xl shutdown`, or `xl destroy`, ends it at once; recovery makes that safe.
//!
//! Command line: `port=` (6379), `fsync=always|batch|none` (always), `cache=MiB` (memory for
//! values, default 25% of what is free at boot), `conns=` (256, fewer if the memory holds fewer), `format=yes` (erase a disk
//! that holds something else), `stats=SECS` (5), and the network's keys.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use blkfront::disk::{self, AsyncDisk};
use kv::cmd::Engine;
use kv::db::{Db, DbJournal, Fsync};
use kv::log::{self as klog, Compacted, DiskError, Layout, Recovery, FRAME_HDR};
use kv::resp::Limits;
use kv::session::Session;
use kv::store::{HashKey, OnDisk, Store};
use net::listen::{self, Cap, Overflow};
use net::{ListenConfig, Net, TcpStream};
use xen::cmdline::{validate, KeySpec};
use xen::domain::ExitCode;
use xen::exec::Spawner;

const KEYS: &[KeySpec] = &[
    KeySpec {
        name: "port",
        help: "TCP port to serve on (default 6379)",
        validate: validate::port,
    },
    KeySpec {
        name: "fsync",
        help: "always (reply after write + flush, default), batch (after write; flush every second), none (reply at once)",
        validate: |v| Fsync::parse(v).map(|_| ()).ok_or("expected always, batch or none"),
    },
    KeySpec {
        name: "cache",
        help: "MiB of memory for values (default a quarter of the memory free at boot); the rest stay on disk",
        validate: validate::number,
    },
    KeySpec {
        name: "conns",
        help: "most concurrent connections (default 256)",
        validate: validate::port,
    },
    KeySpec {
        name: "format",
        help: "yes: erase a disk that holds something other than a kv log",
        validate: |v| (v == "yes").then_some(()).ok_or("expected yes"),
    },
    KeySpec {
        name: "stats",
        help: "seconds between updates of xenstore data/xenrt/stats (default 5, 0: off)",
        validate: validate::number,
    },
];

xen::main!(main, KEYS, net::stack::KEYS);

const MIB: u64 = 1 << 20;

/// Socket buffer, each way, of a connection.
const SOCKET_BUFFER: usize = 16 * 1024;
/// What a connection takes: its socket buffers, its read buffer, room for replies.
const CONN_BYTES: usize = 2 * SOCKET_BUFFER + READ_BUFFER + 16 * 1024;
/// A connection's read buffer.
const READ_BUFFER: usize = 8 * 1024;

fn now_ms() -> u64 {
    xen::time::wallclock_ns() / 1_000_000
}

fn since_ms(t0: u64) -> u64 {
    (xen::time::now_ns() - t0) / 1_000_000
}

/// What the engine and the tasks share.
struct Shared {
    engine: RefCell<Engine>,
    db: Rc<Db>,
    disk: AsyncDisk,
    layout: Layout,
    cache: usize,
    /// One segment's worth of bytes, allocated at boot (recovery reads segments into it, then
    /// the compactor takes it): compaction never needs memory the values may have taken.
    segment: RefCell<Vec<u8>>,
}

fn main() -> Result<ExitCode, String> {
    let t0 = xen::time::now_ns();
    let cmd = xen::boot::cmdline();
    let port = cmd.parsed::<u16>("port").unwrap_or(6379);
    let fsync = cmd
        .get("fsync")
        .and_then(Fsync::parse)
        .unwrap_or(Fsync::Always);
    let conns = cmd.parsed::<usize>("conns").unwrap_or(256);
    let format_ok = cmd.get("format") == Some("yes");
    let stats_ns = cmd.parsed::<u64>("stats").unwrap_or(5) * 1_000_000_000;
    xen::platform::defer_shutdown();
    let net = net::xen::up().map_err(|e| format!("kv: {e}"))?;
    let nodes = disk::list().map_err(|e| format!("kv: listing disks: {e}"))?;
    let Some(node) = nodes.first() else {
        return Err("kv: no disk: give the guest one, e.g. disk = [ \
                    'format=raw,vdev=xvda,access=rw,target=/var/lib/xenrt/kv.img' ] \
                    (a zero-filled file of 24 MiB or more)"
            .to_string());
    };
    let d = disk::connect(node).map_err(|e| format!("kv: disk {node}: {e}"))?;
    if d.read_only() {
        return Err(format!(
            "kv: disk {node} is read-only: kv needs it writable (access=rw)"
        ));
    }
    let mut segment = Vec::new();
    segment
        .try_reserve_exact(klog::SEGMENT as usize)
        .map_err(|_| "kv: no memory for a 4 MiB segment buffer: give the guest more (memory=16)")?;
    segment.resize(klog::SEGMENT as usize, 0);
    let m = xen::stats::memory();
    let free = m.heap_free + m.frames_free * 4096;
    let cache = match cmd.parsed::<u64>("cache") {
        Some(mib) => (mib * MIB) as usize,
        None => (free / 4).max(MIB as usize),
    };
    // As many connections as the memory left holds (each takes its socket buffers, a read
    // buffer and some reply room, CONN_BYTES), with 1 MiB to spare: more are reset, instead of
    // the guest running out of memory under a crowd.
    let fit = free.saturating_sub(cache + MIB as usize) / CONN_BYTES;
    let conns = conns.min(fit.max(4));
    let (src, served) = (d.clone(), net.clone());
    xen::exec::run(&[&served, &src], |sp| async move {
        let shared = open(d, fsync, cache, format_ok, segment, t0).await?;
        serve(sp, net, shared, port, conns, stats_ns, t0).await
    })
}

/// A 64-bit seed from what differs between boots (there is no hardware RNG the guest can rely
/// on): the wall clock and the monotonic clock in ns, mixed by SipHash.
fn seed(salt: u64) -> u64 {
    use core::hash::{BuildHasher, Hasher};
    let mut h = HashKey(0x6b76_2d73_6565_6421, salt).build_hasher();
    h.write_u64(xen::time::wallclock_ns());
    h.write_u64(xen::time::now_ns());
    h.finish()
}

/// Connects the log: formats a new disk, recovers an old one.
async fn open(
    d: AsyncDisk,
    fsync: Fsync,
    cache: usize,
    format_ok: bool,
    mut bytes: Vec<u8>,
    t0: u64,
) -> Result<Rc<Shared>, String> {
    let io = |what: &'static str| move |e: blkfront::Error| format!("kv: disk: {what}: {e}");
    let cap = d.capacity();
    let sector = d.sector_size() as u64;
    let mut sb = vec![0u8; klog::BASE as usize];
    d.read(0, &mut sb)
        .await
        .map_err(io("reading the superblock"))?;
    let layout = match Layout::decode(&sb, cap) {
        Ok(Some(l)) => l,
        Ok(None) | Err(DiskError::Foreign) if format_ok || sb.iter().all(|&b| b == 0) => {
            let l = Layout::new(cap, sector, seed(1)).map_err(|e| format!("kv: {e}"))?;
            // A new log: the superblock, and every segment's first sector zeroed (so nothing on
            // a reused disk passes for a frame of this volume; the volume id sees to the rest).
            let zero = vec![0u8; l.align as usize];
            for s in 0..l.segments {
                d.write(l.seg_start(s), &zero)
                    .await
                    .map_err(io("formatting"))?;
            }
            d.write(0, &l.encode()).await.map_err(io("formatting"))?;
            d.flush().await.map_err(io("flushing"))?;
            xen::println!(
                "kv: formatted the disk: {} segments of {} MiB ({} MiB)",
                l.segments,
                l.segment / MIB,
                cap / MIB
            );
            l
        }
        Ok(None) => unreachable!("an all-zero block is formatted above"),
        Err(e) => return Err(format!("kv: {e}")),
    };
    // Recovery: every segment's first frame header, then the segments in order.
    let mut r = Recovery::new(layout);
    let mut head = vec![0u8; layout.align as usize];
    for s in 0..layout.segments {
        d.read(layout.seg_start(s), &mut head)
            .await
            .map_err(io("recovery"))?;
        r.first_header(s, &head[..FRAME_HDR]);
    }
    let mut store = Store::with_hash_key(HashKey(seed(2), seed(3)));
    if bytes.len() as u64 != layout.segment {
        return Err(format!(
            "kv: the log's segments are {} bytes; this kv reads {}",
            layout.segment,
            bytes.len()
        ));
    }
    for s in r.order() {
        d.read(layout.seg_start(s), &mut bytes)
            .await
            .map_err(io("recovery"))?;
        r.replay(s, &bytes, &mut store);
        // Everything replayed is on disk: values beyond the cache leave memory at once.
        store.evict_some(cache, usize::MAX, |_| true);
    }
    let (log, found) = r.finish();
    let (hs, hoff) = log.head();
    xen::println!(
        "kv: recovered {} keys from {} records in {} frames, {} segments, in {} ms{}; head at segment {hs} byte {hoff}",
        store.len(),
        found.records,
        found.frames,
        found.segments,
        since_ms(t0),
        if found.torn > 0 {
            format!(" (a torn last frame of {} bytes dropped)", found.torn)
        } else {
            String::new()
        }
    );
    let db = Db::new(log, fsync);
    let mut engine = Engine::durable(store, Box::new(DbJournal(db.clone())));
    engine.set_persistence_info(vec![
        ("aof_enabled", "1".to_string()),
        ("kv_fsync", fsync.name().to_string()),
        ("kv_segments", layout.segments.to_string()),
        ("kv_segment_bytes", layout.segment.to_string()),
    ]);
    Ok(Rc::new(Shared {
        engine: RefCell::new(engine),
        db,
        disk: d,
        layout,
        cache,
        segment: RefCell::new(bytes),
    }))
}

async fn serve(
    sp: Spawner,
    net: Net,
    sh: Rc<Shared>,
    port: u16,
    conns: usize,
    stats_ns: u64,
    t0: u64,
) -> Result<ExitCode, String> {
    sp.spawn(committer(sh.clone()));
    let segment = core::mem::take(&mut *sh.segment.borrow_mut());
    sp.spawn(compactor(sh.clone(), segment));
    sp.spawn(expirer(sh.clone()));
    if sh.db.fsync == Fsync::Batch {
        sp.spawn(flusher(sh.clone()));
    }
    if stats_ns > 0 {
        let s = sh.clone();
        sp.spawn(net::xen::publish_stats(
            net.clone(),
            stats_ns,
            move |line| {
                let e = s.engine.borrow();
                let l = s.db.log.borrow();
                line.add("keys", e.store().len() as u64)
                    .add("values_in_memory", e.store().resident_bytes() as u64)
                    .add("log_live", l.live_bytes())
                    .add("log_used", l.used_bytes())
                    .add("segments_free", l.free_segments() as u64)
                    .add("commits", l.stats.frames)
                    .add("records", l.stats.records)
                    .add("compactions", l.stats.compactions)
                    .add("disk_full", l.stats.full);
            },
        ));
    }
    let cfg = ListenConfig {
        backlog: 64,
        rx_buffer: SOCKET_BUFFER,
        tx_buffer: SOCKET_BUFFER,
    };
    let listener = net
        .tcp_listen(port, cfg)
        .map_err(|e| format!("kv: tcp port {port}: {e}"))?;
    let addr = net::xen::ready("kv", &net, &[port]).await;
    {
        let l = sh.db.log.borrow();
        xen::println!(
            "kv: serving redis://{}:{port}/ (fsync={}, up to {conns} connections, {} keys, {} segments of {} MiB, {} free; values cached up to {} MiB) {} ms after boot",
            addr.address(),
            sh.db.fsync.name(),
            sh.engine.borrow().store().len(),
            sh.layout.segments,
            sh.layout.segment / MIB,
            l.free_segments(),
            sh.cache as u64 / MIB,
            since_ms(t0)
        );
    }
    let s = sh.clone();
    let server = sp.spawn(listen::serve(
        sp.clone(),
        listener,
        Cap::new(conns),
        Overflow::Abort,
        move |stream, _| connection(stream, s.clone()),
    ));
    let code = xen::platform::shutdown_requested().await;
    // Stop taking commands: a connection's next chunk is refused (see `connection`).
    sh.db.close();
    drop(server);
    let r = sh.db.wait_all_written().await;
    let flushed = sh.disk.flush().await;
    let l = sh.db.log.borrow();
    let (hs, hoff) = l.head();
    match (r, flushed) {
        (Ok(()), Ok(())) => xen::println!(
            "kv: clean shutdown: {} keys, log written and flushed (batch={} head={} in segment {hs})",
            sh.engine.borrow().store().len(),
            l.durable(),
            sh.layout.seg_start(hs) + hoff
        ),
        _ => xen::println!("kv: shutdown: the log could not be written and flushed (disk error); unacknowledged writes may be lost"),
    }
    Ok(code)
}

/// One client connection.
async fn connection(mut s: TcpStream, sh: Rc<Shared>) {
    let mut sess = Session::new(Limits::default());
    let mut buf = vec![0u8; READ_BUFFER];
    let mut out: Vec<u8> = Vec::new();
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if sh.db.closed() {
            kv::resp::error(&mut out, b"ERR kv is shutting down");
            let _ = s.write_all(&out).await;
            break;
        }
        let mut input = &buf[..n];
        // Run what arrived (and what back-pressure held), writing the replies as they are
        // durable, until the session waits for more bytes.
        loop {
            let need = sess.feed(&mut sh.engine.borrow_mut(), input, now_ms(), &mut out);
            input = &[];
            if let Some(at) = need {
                if let Err(msg) = fetch(&sh, at).await {
                    sess.fail_held(msg.as_bytes(), &mut out);
                }
                continue;
            }
            // Values read back for these requests may have taken the cache over its size: drop
            // others (not before the request ran: it needs what it loaded).
            {
                let l = sh.db.log.borrow();
                sh.engine
                    .borrow_mut()
                    .store_mut()
                    .evict_some(sh.cache, 1024, |loc| l.is_durable(loc));
            }
            if out.is_empty() {
                break;
            }
            let batch = sh.db.log.borrow().last_batch();
            if sh.db.wait_durable(batch).await.is_err() {
                // The replies may claim writes the log does not hold: none is sent.
                out.clear();
                kv::resp::error(
                    &mut out,
                    b"ERR the log could not be written (disk error): the last commands may be lost",
                );
                let _ = s.write_all(&out).await;
                s.close().await;
                return;
            }
            if s.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
            if sess.closed() {
                break;
            }
        }
        if sess.closed() {
            break;
        }
    }
    s.close().await;
}

/// Reads a value the session needs back from its log record.
async fn fetch(sh: &Shared, at: OnDisk) -> Result<(), String> {
    let mut bytes = vec![0u8; klog::record_size(at.key_len, at.value_len)];
    for _ in 0..2 {
        sh.disk
            .read(at.loc, &mut bytes)
            .await
            .map_err(|e| format!("ERR reading the value from disk: {e}"))?;
        if let Some((r, _)) = klog::decode_record(&bytes) {
            // `load` checks the key's value is still the one at `at.loc`; if it moved meanwhile
            // the command asks again.
            sh.engine.borrow_mut().load(r.key, at.loc, r.value);
            return Ok(());
        }
    }
    Err(format!(
        "ERR the value's record at disk byte {} does not check out (checksum mismatch)",
        at.loc
    ))
}

/// Writes the log's frames, one at a time.
async fn committer(sh: Rc<Shared>) {
    loop {
        sh.db.wait_for_appends().await;
        // Let every connection that is ready run first, so that what they append joins this
        // group commit instead of waiting for the next one.
        xen::exec::yield_now().await;
        let w = sh.db.next_write().await;
        let mut r = sh.disk.write(w.pos, &w.bytes).await;
        if r.is_ok() && sh.db.fsync == Fsync::Always {
            r = sh.disk.flush().await;
        }
        match r {
            Ok(()) => sh.db.committed(&w),
            Err(e) => {
                xen::println!(
                    "kv: writing the log at disk byte {} failed: {e}; refusing writes from now on",
                    w.pos
                );
                sh.db.write_failed(w);
                return;
            }
        }
        let l = sh.db.log.borrow();
        sh.engine
            .borrow_mut()
            .store_mut()
            .evict_some(sh.cache, 1024, |loc| l.is_durable(loc));
    }
}

/// Flushes the disk every second while there were commits (`fsync=batch`).
async fn flusher(sh: Rc<Shared>) {
    let mut flushed = 0;
    loop {
        xen::exec::sleep(1_000_000_000).await;
        let done = sh.db.log.borrow().durable();
        if done != flushed {
            if let Err(e) = sh.disk.flush().await {
                xen::println!("kv: flushing the disk failed: {e}");
            }
            flushed = done;
        }
    }
}

/// Deletes a few expired keys every 100 ms (Redis's active expiry, roughly).
async fn expirer(sh: Rc<Shared>) {
    loop {
        xen::exec::sleep(100_000_000).await;
        if sh.db.closed() || sh.db.broken() {
            continue;
        }
        // Deletions need room in the log (they are logged): skip a round when there is none.
        if sh
            .db
            .log
            .borrow_mut()
            .admit(klog::Room::Delete, 64 * 1024)
            .is_ok()
        {
            sh.engine.borrow_mut().expire_some(now_ms(), 64);
        }
    }
}

/// Compacts the tail segment when few are free.
async fn compactor(sh: Rc<Shared>, mut buf: Vec<u8>) {
    loop {
        let Some(s) = sh.db.log.borrow().compaction_candidate() else {
            if sh.db.broken() {
                return;
            }
            // Only a commit changes what there is to compact: no timer while idle.
            sh.db.next_commit().await;
            continue;
        };
        let (seq, used) = {
            let l = sh.db.log.borrow();
            (l.seq_of(s), l.used_of(s) as usize)
        };
        let bytes = &mut buf[..used];
        if let Err(e) = sh.disk.read(sh.layout.seg_start(s), bytes).await {
            xen::println!("kv: compaction: reading segment {s} failed: {e}");
            xen::exec::sleep(1_000_000_000).await;
            continue;
        }
        // A step at a time: copies of at most 256 KiB, written before the next step, so the
        // copies in memory stay small and the connections' commits are not held up.
        let mut from = 0;
        let done = loop {
            let step = {
                let mut e = sh.engine.borrow_mut();
                sh.db
                    .log
                    .borrow_mut()
                    .compact_some(s, bytes, e.store_mut(), from, klog::MAX_FRAME)
            };
            sh.db.wake_committer();
            if sh.db.wait_all_written().await.is_err() {
                return;
            }
            match step {
                Compacted::Done => break true,
                Compacted::More(next) => from = next,
                Compacted::NoRoom => break false,
            }
        };
        if !done {
            // No room for the copies: nothing to gain until deletions make some.
            xen::exec::sleep(1_000_000_000).await;
            continue;
        }
        let mut l = sh.db.log.borrow_mut();
        if l.seq_of(s) == seq {
            l.retire(s, sh.engine.borrow_mut().store_mut());
        }
    }
}
