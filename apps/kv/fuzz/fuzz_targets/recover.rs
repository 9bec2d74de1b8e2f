//! Fuzzes kv's log recovery with a disk whose bytes the input chooses: a log written by kv
//! (records from the input) and then overwritten in input-chosen places with input bytes, as a
//! broken or hostile backend could answer. Invariants: recovery never panics; every key it
//! rebuilds points at a record inside a replayed frame whose bytes decode as that key's `Set`;
//! and the log accepts appends afterwards (the head continues where recovery stopped). Run with
//! `scripts/fuzz 60 recover`.
#![no_main]

use kv::log::{self, Layout, Log, Recovery};
use kv::store::Effect;
use libfuzzer_sys::fuzz_target;

const SEG: u64 = 64 * 1024;
const SEGS: u64 = 5;

fuzz_target!(|data: &[u8]| {
    let cap = log::BASE + SEGS * SEG;
    let layout = Layout::with_segment(cap, 512, 7, SEG).unwrap();
    let mut disk = vec![0u8; cap as usize];
    let (writes, damage) = data.split_at(data.len() / 2);
    // A log written by kv: each chunk of the first half is a SET of a key and value from it.
    let mut l = Log::new(layout);
    for (i, chunk) in writes.chunks(37).enumerate() {
        let e = match chunk.first().map(|b| b % 4) {
            Some(0) => Effect::Del {
                key: chunk[..chunk.len().min(3)].to_vec(),
            },
            Some(1) if i % 5 == 0 => Effect::Flush,
            _ => Effect::Set {
                key: chunk[..chunk.len().min(3)].to_vec(),
                value: chunk.to_vec(),
                expire_at_ms: None,
            },
        };
        if l.admit(log::Room::Write, log::record_len(&e)).is_err() {
            break;
        }
        l.append(&e);
        if i % 3 == 0 {
            while let Some(w) = l.take_write() {
                disk[w.pos as usize..w.pos as usize + w.bytes.len()].copy_from_slice(&w.bytes);
                l.done(&w);
            }
        }
    }
    while let Some(w) = l.take_write() {
        disk[w.pos as usize..w.pos as usize + w.bytes.len()].copy_from_slice(&w.bytes);
        l.done(&w);
    }
    // Damage: (offset, length) pairs then bytes, from the second half.
    let mut d = damage;
    while d.len() >= 4 {
        let off = (u32::from_le_bytes([d[0], d[1], d[2], 0]) as u64 % cap) as usize;
        let n = (d[3] as usize).min(d.len() - 4).min(disk.len() - off);
        disk[off..off + n].copy_from_slice(&d[4..4 + n]);
        d = &d[4 + n..];
    }
    let (mut log, store, _) = Recovery::image(layout, &disk);
    for (key, loc) in store.locs() {
        let at = loc as usize;
        let bytes = &disk[at..(at + 4096 * 16).min(disk.len())];
        assert!(
            log::value_of(bytes, key).is_some(),
            "a recovered key points at something that is not its record"
        );
    }
    let e = Effect::Set {
        key: b"after".to_vec(),
        value: vec![1; 100],
        expire_at_ms: None,
    };
    if log.admit(log::Room::Write, log::record_len(&e)).is_ok() {
        log.append(&e);
        assert!(log.take_write().is_some());
    }
});
