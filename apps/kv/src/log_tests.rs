//! The durable layer against a simulated disk: random commands, group commits, compaction,
//! eviction and crashes that tear the write in flight; after each crash the recovered keyspace
//! must be exactly the state after the last acknowledged batch, or after the one in flight
//! (batches are atomic), never anything else.

use crate::cmd::{Client, Engine, Flow, Journal};
use crate::db::{Db, DbJournal, Fsync};
use crate::log::{self, Layout, Log, Recovery, Write, BASE, FRAME_HDR};
use crate::store::{Effect, OnDisk};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A journal that also keeps every effect with its batch number (the test's oracle).
struct Recording {
    inner: DbJournal,
    history: Rc<RefCell<Vec<(u64, Effect)>>>,
}

impl Journal for Recording {
    fn admit(&mut self, class: crate::cmd::Class, bytes: usize) -> Result<(), &'static str> {
        self.inner.admit(class, bytes)
    }
    fn append(&mut self, effect: &Effect) -> u64 {
        let loc = self.inner.append(effect);
        let batch = self.inner.0.log.borrow().last_batch();
        self.history.borrow_mut().push((batch, effect.clone()));
        loc
    }
    fn release(&mut self, at: OnDisk) {
        self.inner.release(at)
    }
}

const SEG: u64 = 64 * 1024;

struct Rig {
    disk: Vec<u8>,
    layout: Layout,
    db: Rc<Db>,
    engine: Engine,
    history: Rc<RefCell<Vec<(u64, Effect)>>>,
    /// Effects replayed at the last recovery (the state the history continues from).
    base: Vec<Effect>,
    retire: Option<(u32, u64)>,
    fetches: u64,
    compactions: u64,
    steps: u64,
}

impl Rig {
    fn new(segments: u64) -> Rig {
        let cap = BASE + segments * SEG;
        let layout = Layout::with_segment(cap, 512, 0x5eed, SEG).unwrap();
        let mut disk = vec![0u8; cap as usize];
        disk[..512].copy_from_slice(&layout.encode());
        let mut rig = Rig {
            disk,
            layout,
            db: Db::new(Log::new(layout), Fsync::Always),
            engine: Engine::new(),
            history: Rc::default(),
            base: Vec::new(),
            retire: None,
            fetches: 0,
            compactions: 0,
            steps: 0,
        };
        rig.reboot();
        rig
    }

    /// Recovers from the disk as a new boot would, and continues from there.
    fn reboot(&mut self) -> log::Recovered {
        let (log, store, found) = Recovery::image(self.layout, &self.disk);
        for (k, loc) in store.locs() {
            let (sg, off) = self.layout.seg_of(loc);
            if !(log.seq_of(sg) != 0 && off < log.used_of(sg)) {
                let mut scans = Vec::new();
                for s in 0..self.layout.segments {
                    let at = self.layout.seg_start(s) as usize;
                    let sc = log::scan(&self.layout, &self.disk[at..at + SEG as usize], 0);
                    scans.push(sc.map(|sc| {
                        (
                            sc.seq,
                            sc.end,
                            sc.torn,
                            sc.frames
                                .iter()
                                .map(|f| (f.off, f.batch))
                                .collect::<Vec<_>>(),
                        )
                    }));
                }
                panic!(
                    "after recovery key {:?} seg {sg} off {off}: {log:?} {found:?} scans {scans:?}",
                    core::str::from_utf8(k)
                );
            }
        }
        self.base = store
            .snapshot(0)
            .into_iter()
            .map(|(key, value, expire_at_ms)| Effect::Set {
                key,
                value,
                expire_at_ms,
            })
            .collect();
        self.db = Db::new(log, Fsync::Always);
        self.history = Rc::default();
        self.engine = Engine::durable(
            store,
            alloc::boxed::Box::new(Recording {
                inner: DbJournal(self.db.clone()),
                history: self.history.clone(),
            }),
        );
        self.retire = None;
        found
    }

    fn run(&mut self, argv: &[&[u8]]) -> Vec<u8> {
        let argv: Vec<Vec<u8>> = argv.iter().map(|a| a.to_vec()).collect();
        let mut out = Vec::new();
        loop {
            match self
                .engine
                .execute(&mut Client::default(), &argv, 0, &mut out)
            {
                Flow::Fetch(at) => {
                    let n = log::record_size(at.key_len, at.value_len);
                    let bytes = &self.disk[at.loc as usize..at.loc as usize + n];
                    let key = &argv[1..]
                        .iter()
                        .find(|k| {
                            k.len() == at.key_len && self.engine.store().missing(k, 0) == Some(at)
                        })
                        .expect("the fetched key is an argument")
                        .clone();
                    let Some(value) = log::value_of(bytes, key) else {
                        let l = self.db.log.borrow();
                        let (sg, off) = self.layout.seg_of(at.loc);
                        panic!(
                            "the record is not the key's: {at:?} seg {sg} off {off} seq {} used {} head {:?} dur {} {:?} decode {:?}",
                            l.seq_of(sg), l.used_of(sg), l.head(), l.durable(), l, log::decode_record(bytes).map(|(r, n)| (r.kind, r.key.len(), n))
                        );
                    };
                    assert!(self.engine.load(key, at.loc, value));
                    self.fetches += 1;
                }
                _ => return out,
            }
        }
    }

    fn write(&mut self, w: &Write) {
        let at = w.pos as usize;
        self.disk[at..at + w.bytes.len()].copy_from_slice(&w.bytes);
    }

    /// Writes every pending frame; retires a compacted segment once its copies are on disk.
    fn commit_all(&mut self) {
        loop {
            let w = self.db.log.borrow_mut().take_write();
            let Some(w) = w else { break };
            self.write(&w);
            self.db.committed(&w);
        }
        self.maybe_retire();
    }

    fn maybe_retire(&mut self) {
        if let Some((s, batch)) = self.retire {
            if self.db.log.borrow().durable() >= batch {
                self.db.log.borrow_mut().retire(s, self.engine.store_mut());
                // No key reads from the freed segment.
                for (k, loc) in self.engine.store().locs() {
                    let (sg, off) = self.layout.seg_of(loc);
                    assert!(
                        sg != s,
                        "retiring {s} with key {:?} at off {off}: {:?}",
                        core::str::from_utf8(k),
                        self.db.log.borrow()
                    );
                }
                self.retire = None;
                self.compactions += 1;
            }
        }
    }

    fn compact(&mut self) {
        if self.retire.is_some() {
            return;
        }
        let cand = self.db.log.borrow().compaction_candidate();
        if let Some(s) = cand {
            let start = self.layout.seg_start(s) as usize;
            let used = self.db.log.borrow().used_of(s) as usize;
            let bytes = self.disk[start..start + used].to_vec();
            // In steps of about 4 KiB of copies, each written before the next, as the image
            // does (whole, every other time).
            self.steps += 1;
            let budget = if self.steps % 2 == 0 {
                4096
            } else {
                usize::MAX
            };
            let mut from = 0;
            let ok = loop {
                let step = self.db.log.borrow_mut().compact_some(
                    s,
                    &bytes,
                    self.engine.store_mut(),
                    from,
                    budget,
                );
                match step {
                    log::Compacted::Done => break true,
                    log::Compacted::NoRoom => break false,
                    log::Compacted::More(next) => {
                        from = next;
                        self.commit_all();
                    }
                }
            };
            if ok {
                let batch = self.db.log.borrow().last_batch();
                self.retire = Some((s, batch));
            }
        }
    }

    /// The keyspace after the base and every effect of batches up to `batch`.
    fn expected(&self, batch: u64) -> Vec<(Vec<u8>, Vec<u8>, Option<u64>)> {
        let h = self.history.borrow();
        let effects = self
            .base
            .iter()
            .chain(h.iter().filter(|(b, _)| *b <= batch).map(|(_, e)| e));
        Engine::from_effects(effects).store().snapshot(0)
    }
}

type Snap = Vec<(Vec<u8>, Vec<u8>, Option<u64>)>;

/// The keys two snapshots disagree on: key, and (value length, first byte, expiry) each side.
#[allow(clippy::type_complexity)]
fn diff(
    a: &Snap,
    b: &Snap,
) -> Vec<(
    String,
    Option<(usize, u8, Option<u64>)>,
    Option<(usize, u8, Option<u64>)>,
)> {
    let mut keys: Vec<&Vec<u8>> = a.iter().chain(b.iter()).map(|(k, _, _)| k).collect();
    keys.sort();
    keys.dedup();
    let find = |s: &Snap, k: &Vec<u8>| {
        s.iter()
            .find(|(x, _, _)| x == k)
            .map(|(_, v, e)| (v.len(), v.first().copied().unwrap_or(0), *e))
    };
    keys.into_iter()
        .filter(|k| find(a, k) != find(b, k))
        .map(|k| {
            (
                String::from_utf8_lossy(k).into_owned(),
                find(a, k),
                find(b, k),
            )
        })
        .collect()
}

fn random_command(rng: &mut Rng, keys: u64) -> Vec<Vec<u8>> {
    let k = format!("key:{}", rng.below(keys)).into_bytes();
    let value = |rng: &mut Rng| {
        let n = [1, 10, 100, 700, 3000][rng.below(5) as usize] + rng.below(50) as usize;
        let b = b'a' + rng.below(26) as u8;
        vec![b; n]
    };
    match rng.below(20) {
        0..=8 => vec![b"set".to_vec(), k, value(rng)],
        9 => vec![b"del".to_vec(), k],
        10 => vec![b"incr".to_vec(), b"counter".to_vec()],
        11 => vec![b"append".to_vec(), k, value(rng)],
        12 => vec![b"pexpire".to_vec(), k, b"100000000".to_vec()],
        13 => vec![b"persist".to_vec(), k],
        14 => {
            let k2 = format!("key:{}", rng.below(keys)).into_bytes();
            vec![b"mset".to_vec(), k, value(rng), k2, value(rng)]
        }
        15 => vec![b"getdel".to_vec(), k],
        16 => vec![
            b"set".to_vec(),
            k,
            value(rng),
            b"px".to_vec(),
            b"900000000".to_vec(),
        ],
        17 if rng.below(60) == 0 => vec![b"flushall".to_vec()],
        _ => vec![b"get".to_vec(), k],
    }
}

#[test]
fn every_crash_recovers_the_last_acknowledged_batch_or_the_one_in_flight() {
    // KV_SEEDS=N runs more (scripts/fuzz's long campaign does).
    let seeds: u64 = std::env::var("KV_SEEDS").map_or(6, |s| s.parse().expect("KV_SEEDS=N"));
    let (mut crashes, mut torn_seen, mut full, mut compactions, mut fetches) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for seed in 1..=seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut rig = Rig::new(8);
        for step in 0..6000 {
            let argv = random_command(&mut rng, 60);
            let refs: Vec<&[u8]> = argv.iter().map(|a| &a[..]).collect();
            let out = rig.run(&refs);
            if out.starts_with(b"-ERR disk full") {
                full += 1;
            }
            match rng.below(10) {
                0..=3 => rig.commit_all(),
                4 => rig.compact(),
                5 => {
                    let db = rig.db.clone();
                    let log = db.log.borrow();
                    rig.engine
                        .store_mut()
                        .evict_some(2000, 64, |l| log.is_durable(l));
                }
                _ => {}
            }
            rig.maybe_retire();
            {
                let l = rig.db.log.borrow();
                let n = rig.layout.segments;
                let (t, (h, _)) = (l.tail(), l.head());
                for sg in 0..n {
                    let in_run = (sg + n - t) % n <= (h + n - t) % n;
                    assert_eq!(
                        l.seq_of(sg) != 0,
                        in_run,
                        "seed {seed} step {step} {:?} seg {sg}: {l:?}",
                        String::from_utf8_lossy(&argv[0])
                    );
                }
                for (k, loc) in rig.engine.store().locs() {
                    let (sg, off) = rig.layout.seg_of(loc);
                    let (hs, _) = l.head();
                    let ok = l.seq_of(sg) != 0
                        && (off < l.used_of(sg) || sg == hs && loc < l.frontier());
                    assert!(
                        ok,
                        "seed {seed} step {step} {argv:?} key {:?} loc seg {sg} off {off}: {l:?}",
                        core::str::from_utf8(k)
                    );
                }
            }
            if step % 97 == 96 {
                // Crash with one frame in flight, torn at a random sector.
                let acked = rig.db.log.borrow().durable();
                let w = rig.db.log.borrow_mut().take_write();
                let mut landed = false;
                let mut info = String::from("nothing in flight");
                if let Some(w) = w {
                    let sectors = w.bytes.len() / 512;
                    let keep = rng.below(sectors as u64 + 1) as usize;
                    let at = w.pos as usize;
                    // Sectors land in any order: a random subset of them, `keep` of them.
                    let mut which: Vec<usize> = (0..sectors).collect();
                    for i in (1..which.len()).rev() {
                        which.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                    for &s in &which[..keep] {
                        rig.disk[at + s * 512..at + (s + 1) * 512]
                            .copy_from_slice(&w.bytes[s * 512..(s + 1) * 512]);
                    }
                    // The frame is whole if its header and records are (the padding after them
                    // is not checked); sectors that did not land may hold those bytes already.
                    let len = FRAME_HDR
                        + u32::from_le_bytes(w.bytes[24..28].try_into().unwrap()) as usize;
                    landed = rig.disk[at..at + len] == w.bytes[..len];
                    info = format!(
                        "frame {} at {} ({sectors} sectors, {keep} written: {:?})",
                        w.batch,
                        w.pos,
                        &which[..keep]
                    );
                    assert_eq!(w.batch, acked + 1);
                }
                let ok_states = [rig.expected(acked), rig.expected(acked + 1)];
                let found = rig.reboot();
                torn_seen += (found.torn > 0) as u64;
                let got = rig.engine.store().snapshot(0);
                let want = &ok_states[landed as usize];
                if &got != want {
                    panic!(
                        "seed {seed} step {step} ({info}, landed: {landed}): recovered {} keys, \
                         equal to the other state: {}; differences: {:?}; {found:?}",
                        got.len(),
                        got == ok_states[!landed as usize],
                        diff(&got, want)
                    );
                }
                crashes += 1;
            }
        }
        compactions += rig.compactions;
        fetches += rig.fetches;
    }
    // The run went through what it is for: crashes that tore frames, a full ring, compaction,
    // values read back from disk.
    assert!(crashes >= 60 * seeds, "{crashes} crashes");
    assert!(torn_seen >= seeds, "{torn_seen} torn frames seen");
    assert!(
        compactions > 0 && fetches > 0,
        "{compactions} compactions, {fetches} fetches"
    );
    assert!(
        full > 0 || compactions > 10 * seeds,
        "{full} writes refused"
    );
}

#[test]
fn a_full_disk_refuses_writes_with_an_error_and_deletes_make_room_again() {
    let mut rig = Rig::new(6);
    let big = vec![b'x'; 3000];
    let mut n = 0;
    loop {
        let k = format!("k{n}");
        let out = rig.run(&[b"set", k.as_bytes(), &big]);
        rig.commit_all();
        if out.starts_with(b"-ERR disk full") {
            break;
        }
        assert_eq!(out, b"+OK\r\n");
        n += 1;
        assert!(n < 1000, "never full");
        rig.compact();
        rig.commit_all();
    }
    // Everything written before the refusal is there, after a reboot too.
    rig.reboot();
    assert_eq!(rig.engine.store().len(), n);
    for i in 0..n {
        let out = rig.run(&[b"get", format!("k{i}").as_bytes()]);
        assert_eq!(out, [&b"$3000\r\n"[..], &big, b"\r\n"].concat());
    }
    // Deleting half makes room once compaction ran.
    for i in (0..n).step_by(2) {
        assert_eq!(rig.run(&[b"del", format!("k{i}").as_bytes()]), b":1\r\n");
        rig.commit_all();
    }
    for _ in 0..20 {
        rig.compact();
        rig.commit_all();
    }
    let out = rig.run(&[b"set", b"after", &big]);
    assert_eq!(out, b"+OK\r\n", "{}", core::str::from_utf8(&out).unwrap());
    rig.commit_all();
    rig.reboot();
    assert_eq!(rig.engine.store().len(), n - n.div_ceil(2) + 1);
}

#[test]
fn recovery_rejects_frames_of_another_volume_stale_generations_and_forged_values() {
    let mut rig = Rig::new(6);
    // A value that holds a valid frame header of this volume for batch 1000 cannot pass for one:
    // frames start on sector boundaries only after a valid frame, and batches must follow.
    let mut forged = vec![0u8; 1500];
    let mut f = Log::new(rig.layout);
    f.append(&Effect::Set {
        key: b"evil".to_vec(),
        value: b"1".to_vec(),
        expire_at_ms: None,
    });
    let w = f.take_write().unwrap();
    forged[..w.bytes.len().min(1500)].copy_from_slice(&w.bytes[..w.bytes.len().min(1500)]);
    rig.run(&[b"set", b"good", &forged]);
    rig.commit_all();
    rig.reboot();
    assert_eq!(rig.engine.store().len(), 1);
    assert!(rig.engine.store().get_raw(b"evil").is_none());
    // Another volume's frames are not ours.
    let other = Layout::with_segment(rig.disk.len() as u64, 512, 0xbad, SEG).unwrap();
    let mut r = Recovery::new(other);
    r.first_header(0, &rig.disk[BASE as usize..BASE as usize + FRAME_HDR]);
    assert!(r.order().is_empty());
}

#[test]
fn superblock_round_trip_and_foreign_disks() {
    let l = Layout::new(256 << 20, 512, 42).unwrap();
    assert_eq!(l.segments, 63);
    assert_eq!(Layout::decode(&l.encode(), 256 << 20), Ok(Some(l)));
    assert_eq!(Layout::decode(&[0; 512], 256 << 20), Ok(None));
    assert_eq!(
        Layout::decode(&l.encode(), 128 << 20),
        Err(log::DiskError::Damaged)
    );
    let mut ext = vec![0u8; 512];
    ext[56] = 0x53;
    ext[57] = 0xef;
    assert_eq!(
        Layout::decode(&ext, 256 << 20),
        Err(log::DiskError::Foreign)
    );
    let mut bad = l.encode();
    bad[20] ^= 1;
    assert_eq!(
        Layout::decode(&bad, 256 << 20),
        Err(log::DiskError::Damaged)
    );
    assert_eq!(Layout::new(20 << 20, 512, 1), Err(log::DiskError::TooSmall));
}
