//! Fuzzes kv's [`kv::session::Session`] with arbitrary request bytes, cut into chunks at
//! input-chosen points, with the clock moving between chunks and an active-expiry sweep.
//! Invariants: nothing panics; the replies are the same as when the whole input is fed in one
//! chunk (splitting never changes the answer); a closed session writes nothing more; and the
//! effects recorded, replayed on an empty store, rebuild the same live keyspace. Run with
//! `scripts/fuzz 60 session`.
#![no_main]

use kv::cmd::Engine;
use kv::resp::Limits;
use kv::session::Session;
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_bulk: 512,
    max_multibulk: 64,
    max_request: 4096,
};

/// Feeds `data` in chunks of the given sizes (cycled), draining pending input after each.
fn run(data: &[u8], cuts: &[u8]) -> (Vec<u8>, Engine, Vec<kv::store::Effect>) {
    let mut e = Engine::new();
    let mut s = Session::new(LIMITS);
    let mut out = Vec::new();
    let mut log = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = if cuts.is_empty() {
            rest.len()
        } else {
            (cuts[i % cuts.len()] as usize + 1).min(rest.len())
        };
        i += 1;
        let mut chunk = &rest[..n];
        // As a server would: send what was replied, feed again while that made progress (the
        // session holds requests back once its reply buffer is full).
        loop {
            let was_closed = s.closed();
            let mut reply = Vec::new();
            s.feed(&mut e, chunk, 1000, &mut reply);
            assert!(!was_closed || reply.is_empty(), "a closed session wrote");
            chunk = &[];
            let progressed = !reply.is_empty();
            out.extend(reply);
            if s.closed() || s.pending() == 0 || !progressed {
                break;
            }
        }
        log.extend(e.take_effects());
        rest = &rest[n..];
    }
    (out, e, log)
}

fuzz_target!(|input: &[u8]| {
    let Some((&ncuts, rest)) = input.split_first() else {
        return;
    };
    let (cuts, data) = rest.split_at((ncuts as usize % 16).min(rest.len()));
    let (whole, e1, _) = run(data, &[]);
    let (split, e2, log) = run(data, cuts);
    assert_eq!(whole, split, "splitting changed the replies");
    assert_eq!(e1.store().snapshot(1000), e2.store().snapshot(1000));
    let mut replayed = Engine::from_effects(&log);
    assert_eq!(
        replayed.store().snapshot(1000),
        e2.store().snapshot(1000),
        "replay differs"
    );
    // An active sweep far in the future leaves nothing with an expiry.
    replayed.expire_some(u64::MAX / 2, usize::MAX);
    assert_eq!(replayed.store().expires(), 0);
});
