//! The client against the simulated daemon: every operation, watches, transactions, long values,
//! pieces, and one test per misbehaviour of the daemon.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::sim::{Fault, Sim};
use super::wire::{Header, MsgType, PAYLOAD_MAX};
use super::*;

fn client() -> Client<Sim> {
    Sim::client(1)
}

#[test]
fn read_write_mkdir_rm_directory() {
    let mut xs = client();
    assert_eq!(xs.domid(), Ok(1));
    assert_eq!(xs.name().as_deref(), Ok("sim-guest"));
    xs.write(Tx::NONE, "data/a", b"hello").unwrap();
    assert_eq!(xs.read(Tx::NONE, "data/a").unwrap(), b"hello");
    assert_eq!(
        xs.read_string(Tx::NONE, "/local/domain/1/data/a").unwrap(),
        "hello"
    );
    xs.mkdir(Tx::NONE, "data/dir/sub").unwrap();
    xs.mkdir(Tx::NONE, "data/dir/sub").unwrap();
    assert_eq!(xs.directory(Tx::NONE, "data").unwrap(), ["a", "dir"]);
    assert_eq!(xs.read(Tx::NONE, "data/dir/sub").unwrap(), b"");
    xs.rm(Tx::NONE, "data/dir").unwrap();
    assert_eq!(xs.directory(Tx::NONE, "data").unwrap(), ["a"]);
    assert_eq!(
        xs.read(Tx::NONE, "data/dir/sub"),
        Err(Error::Xs(XsErrno::Enoent))
    );
    assert_eq!(
        xs.rm(Tx::NONE, "data/missing"),
        Ok(()),
        "missing node, parent present"
    );
    assert_eq!(
        xs.rm(Tx::NONE, "nope/missing"),
        Err(Error::Xs(XsErrno::Enoent))
    );
    assert_eq!(
        xs.read(Tx::NONE, "bad//path"),
        Err(Error::Xs(XsErrno::Einval))
    );
    assert_eq!(xs.read(Tx::NONE, ""), Err(Error::InvalidArgument));
    assert_eq!(xs.write(Tx::NONE, "a\0b", b""), Err(Error::InvalidArgument));
}

#[test]
fn permissions() {
    let mut xs = client();
    let own = [Perm {
        kind: PermKind::None,
        domid: 1,
    }];
    assert_eq!(
        xs.get_perms(Tx::NONE, "").err(),
        Some(Error::InvalidArgument)
    );
    assert_eq!(xs.get_perms(Tx::NONE, "/local/domain/1").unwrap(), own);
    xs.write(Tx::NONE, "p", b"x").unwrap();
    let perms = [
        Perm {
            kind: PermKind::None,
            domid: 1,
        },
        Perm {
            kind: PermKind::Read,
            domid: 0,
        },
    ];
    xs.set_perms(Tx::NONE, "p", &perms).unwrap();
    assert_eq!(xs.get_perms(Tx::NONE, "p").unwrap(), perms);
    xs.transport_mut().store().write("/secret", b"s");
    assert_eq!(
        xs.read(Tx::NONE, "/secret"),
        Err(Error::Xs(XsErrno::Eacces))
    );
    assert_eq!(
        xs.write(Tx::NONE, "/secret", b""),
        Err(Error::Xs(XsErrno::Eacces))
    );
    assert_eq!(
        xs.set_perms(Tx::NONE, "p", &[]),
        Err(Error::InvalidArgument)
    );
}

#[test]
fn watches_fire_on_registration_writes_children_and_removal() {
    let mut xs = client();
    xs.watch("dev", "t1").unwrap();
    let first = xs.wait_event("t1").unwrap();
    assert_eq!(
        first,
        WatchEvent {
            path: "dev".into(),
            token: "t1".into()
        }
    );
    assert_eq!(xs.watch("dev", "t1"), Err(Error::Xs(XsErrno::Eexist)));
    xs.write(Tx::NONE, "dev/x", b"1").unwrap();
    let mut paths = Vec::new();
    while let Some(e) = xs.poll_event("t1").unwrap() {
        paths.push(e.path);
    }
    assert_eq!(paths, ["dev", "dev/x"], "creating dev/x creates dev too");
    // A peer's write fires too, and events for other tokens stay queued.
    xs.watch("/other", "t2").unwrap();
    xs.transport_mut().store().write("/other/k", b"v");
    xs.transport_mut()
        .store()
        .write("/local/domain/1/dev/y", b"v");
    assert_eq!(xs.wait_event("t1").unwrap().path, "dev/y");
    assert_eq!(xs.wait_event("t2").unwrap().path, "/other", "initial fire");
    assert_eq!(
        xs.wait_event("t2").unwrap().path,
        "/other",
        "created with its child"
    );
    assert_eq!(xs.wait_event("t2").unwrap().path, "/other/k");
    xs.rm(Tx::NONE, "dev").unwrap();
    assert_eq!(xs.wait_event("t1").unwrap().path, "dev");
    xs.unwatch("dev", "t1").unwrap();
    xs.write(Tx::NONE, "dev/z", b"1").unwrap();
    xs.poll().unwrap();
    assert_eq!(xs.take_event("t1"), None);
    assert_eq!(xs.unwatch("dev", "t1"), Err(Error::Xs(XsErrno::Enoent)));
}

#[test]
fn rewatch_sets_every_watch_again_after_the_daemon_forgot_them() {
    let mut xs = client();
    xs.watch("control/shutdown", "ctl").unwrap();
    xs.watch("/backend/vif", "be").unwrap();
    xs.watch("gone", "g").unwrap();
    xs.unwatch("gone", "g").unwrap();
    while xs.poll_event("ctl").unwrap().is_some() || xs.poll_event("be").unwrap().is_some() {}
    assert_eq!(
        xs.watches(),
        [
            ("control/shutdown".into(), "ctl".into()),
            ("/backend/vif".into(), "be".into())
        ]
    );
    // A restore: the new domain's connection has no watches.
    xs.transport_mut().store().forget_watches();
    xs.write(Tx::NONE, "control/shutdown", b"poweroff").unwrap();
    xs.poll().unwrap();
    assert_eq!(xs.take_event("ctl"), None, "the daemon forgot it");
    assert_eq!(xs.rewatch(), Ok(2));
    // Each fires once at once, as a new watch does, then on changes again.
    assert_eq!(xs.wait_event("ctl").unwrap().path, "control/shutdown");
    assert_eq!(xs.wait_event("be").unwrap().path, "/backend/vif");
    xs.write(Tx::NONE, "control/shutdown", b"").unwrap();
    assert_eq!(xs.wait_event("ctl").unwrap().path, "control/shutdown");
    assert_eq!(
        xs.take_event("g"),
        None,
        "an unwatched path stays unwatched"
    );
    assert_eq!(xs.watches().len(), 2, "rewatch records nothing twice");
}

#[test]
fn watch_on_a_child_fires_when_its_parent_is_removed() {
    let mut xs = client();
    xs.write(Tx::NONE, "a/b/c", b"1").unwrap();
    xs.watch("a/b/c", "t").unwrap();
    xs.wait_event("t").unwrap();
    xs.rm(Tx::NONE, "a").unwrap();
    assert_eq!(xs.wait_event("t").unwrap().path, "a/b/c");
}

#[test]
fn transactions_commit_abort_and_conflict() {
    let mut xs = client();
    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "t/a", b"1").unwrap();
    assert_eq!(xs.read(tx, "t/a").unwrap(), b"1");
    assert_eq!(
        xs.read(Tx::NONE, "t/a"),
        Err(Error::Xs(XsErrno::Enoent)),
        "isolated"
    );
    xs.transaction_end(tx, true).unwrap();
    assert_eq!(xs.read(Tx::NONE, "t/a").unwrap(), b"1");

    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "t/a", b"2").unwrap();
    xs.transaction_end(tx, false).unwrap();
    assert_eq!(xs.read(Tx::NONE, "t/a").unwrap(), b"1");

    let tx = xs.transaction_start().unwrap();
    assert_eq!(xs.read(tx, "t/a").unwrap(), b"1");
    xs.write(Tx::NONE, "t/a", b"other").unwrap();
    xs.write(tx, "t/b", b"mine").unwrap();
    assert_eq!(
        xs.transaction_end(tx, true),
        Err(Error::Xs(XsErrno::Eagain))
    );
    assert_eq!(xs.read(Tx::NONE, "t/b"), Err(Error::Xs(XsErrno::Enoent)));
    assert_eq!(
        xs.transaction_end(Tx(999), true),
        Err(Error::Xs(XsErrno::Enoent))
    );
}

#[test]
fn transaction_helper_retries_on_conflict() {
    let mut xs = client();
    xs.write(Tx::NONE, "counter", b"0").unwrap();
    let mut attempts = 0;
    let value = xs
        .transaction(|xs, tx| {
            attempts += 1;
            let n: u32 = xs
                .read_string(tx, "counter")?
                .parse()
                .map_err(|_| Error::BadNumber)?;
            if attempts == 1 {
                // Someone else bumps the counter under our feet.
                xs.transport_mut()
                    .store()
                    .write("/local/domain/1/counter", b"10");
            }
            xs.write(tx, "counter", alloc::format!("{}", n + 1).as_bytes())?;
            Ok(n + 1)
        })
        .unwrap();
    assert_eq!((attempts, value), (2, 11));
    assert_eq!(xs.read(Tx::NONE, "counter").unwrap(), b"11");
    // Other errors abort without retrying.
    let r: Result<(), _> = xs.transaction(|xs, tx| xs.read(tx, "missing").map(drop));
    assert_eq!(r, Err(Error::Xs(XsErrno::Enoent)));
}

#[test]
fn transaction_helper_gives_up_after_bounded_retries() {
    let mut xs = client();
    xs.write(Tx::NONE, "hot", b"0").unwrap();
    let r = xs.transaction(|xs, tx| {
        xs.read(tx, "hot")?;
        xs.transport_mut()
            .store()
            .write("/local/domain/1/hot", b"changed");
        Ok(())
    });
    assert_eq!(r, Err(Error::Xs(XsErrno::Eagain)));
}

#[test]
fn largest_values_go_through_the_small_rings_in_pieces() {
    let mut xs = client();
    let path = "big";
    let max = PAYLOAD_MAX - path.len() - 1;
    let value: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    xs.transport_mut().set_read_chunk(100);
    xs.transport_mut().set_write_chunk(7);
    xs.write(Tx::NONE, path, &value).unwrap();
    assert_eq!(xs.read(Tx::NONE, path).unwrap(), value);
    let too_big = vec![0u8; max + 1];
    assert_eq!(
        xs.write(Tx::NONE, path, &too_big),
        Err(Error::RequestTooLarge(PAYLOAD_MAX + 1))
    );
    // A whole payload of reply: a value written by a peer (no path in the reply).
    let full = vec![b'x'; PAYLOAD_MAX];
    xs.transport_mut()
        .store()
        .write("/local/domain/1/full", &full);
    assert_eq!(xs.read(Tx::NONE, "full").unwrap(), full);
    assert!(!xs.is_broken());
}

#[test]
fn many_requests_wrap_the_ring_indices() {
    let mut xs = client();
    for i in 0..300u32 {
        let v = alloc::format!("value-{i}");
        xs.write(Tx::NONE, "k", v.as_bytes()).unwrap();
        assert_eq!(xs.read_string(Tx::NONE, "k").unwrap(), v);
    }
}

// ---- One test per daemon misbehaviour -----------------------------------------------------

fn faulty(fault: Fault) -> Client<Sim> {
    let mut xs = client();
    xs.write(Tx::NONE, "k", b"v").unwrap();
    xs.transport_mut().inject(fault);
    xs
}

#[test]
fn error_reply_with_unknown_string() {
    let mut xs = faulty(Fault::Reply {
        ty: MsgType::Error as u32,
        payload: b"EWEIRD\0".to_vec(),
    });
    assert_eq!(xs.read(Tx::NONE, "k"), Err(Error::UnknownErrno));
    assert_eq!(
        xs.read(Tx::NONE, "k").unwrap(),
        b"v",
        "connection still usable"
    );
}

#[test]
fn reply_of_the_wrong_type() {
    let mut xs = faulty(Fault::Reply {
        ty: MsgType::Mkdir as u32,
        payload: b"OK\0".to_vec(),
    });
    assert_eq!(
        xs.read(Tx::NONE, "k"),
        Err(Error::UnexpectedType {
            expected: 2,
            got: 12
        })
    );
    assert_eq!(xs.read(Tx::NONE, "k").unwrap(), b"v");
}

#[test]
fn reply_of_an_unknown_type() {
    let mut xs = faulty(Fault::Reply {
        ty: 77,
        payload: Vec::new(),
    });
    assert_eq!(xs.read(Tx::NONE, "k"), Err(Error::UnknownType(77)));
    assert_eq!(xs.read(Tx::NONE, "k").unwrap(), b"v");
}

#[test]
fn reply_with_a_wrong_request_id() {
    let mut xs = faulty(Fault::WrongReqId);
    assert!(matches!(
        xs.read(Tx::NONE, "k"),
        Err(Error::UnexpectedReqId { .. })
    ));
    assert_eq!(xs.read(Tx::NONE, "k").unwrap(), b"v");
}

#[test]
fn malformed_text_replies() {
    let mut xs = faulty(Fault::Reply {
        ty: MsgType::Read as u32,
        payload: vec![0xff, 0xfe],
    });
    assert_eq!(xs.read_string(Tx::NONE, "k"), Err(Error::NotUtf8));
    xs.transport_mut().inject(Fault::Reply {
        ty: MsgType::Directory as u32,
        payload: b"a".into(),
    });
    assert_eq!(xs.directory(Tx::NONE, "k"), Err(Error::MissingNul));
    xs.transport_mut().inject(Fault::Reply {
        ty: MsgType::GetPerms as u32,
        payload: b"q\0".into(),
    });
    assert_eq!(xs.get_perms(Tx::NONE, "k"), Err(Error::BadPerms));
    let ty = MsgType::TransactionStart as u32;
    xs.transport_mut().inject(Fault::Reply {
        ty,
        payload: b"12x\0".into(),
    });
    assert_eq!(xs.transaction_start(), Err(Error::BadNumber));
    xs.transport_mut().inject(Fault::Reply {
        ty,
        payload: b"0\0".into(),
    });
    assert_eq!(xs.transaction_start(), Err(Error::BadNumber));
    xs.transport_mut().inject(Fault::Reply {
        ty: MsgType::Read as u32,
        payload: b"x".into(),
    });
    assert_eq!(xs.domid(), Err(Error::BadNumber));
    assert_eq!(xs.read(Tx::NONE, "k").unwrap(), b"v");
}

#[test]
fn malformed_watch_event_then_the_real_reply() {
    let mut event = Header {
        ty: MsgType::WatchEvent as u32,
        req_id: 0,
        tx_id: 0,
        len: 4,
    }
    .to_bytes()
    .to_vec();
    event.extend_from_slice(b"only");
    let mut xs = faulty(Fault::Raw(event));
    assert_eq!(xs.read(Tx::NONE, "k"), Err(Error::MissingNul));
    // The request was abandoned: its late reply (never sent here) would be dropped.
    assert_eq!(xs.read(Tx::NONE, "k").unwrap(), b"v");
}

#[test]
fn oversized_length_breaks_the_connection() {
    let mut xs = faulty(Fault::Len(PAYLOAD_MAX as u32 + 1));
    assert_eq!(
        xs.read(Tx::NONE, "k"),
        Err(Error::PayloadTooLarge(PAYLOAD_MAX as u32 + 1))
    );
    assert!(xs.is_broken());
    assert_eq!(xs.read(Tx::NONE, "k"), Err(Error::Broken));
}

#[test]
fn truncated_reply_times_out_then_breaks() {
    let mut xs = faulty(Fault::Truncate(10));
    assert_eq!(xs.read(Tx::NONE, "k"), Err(Error::TimedOut));
    assert_eq!(xs.read(Tx::NONE, "k"), Err(Error::Broken));
}

#[test]
fn no_reply_at_all_times_out_and_the_late_reply_is_dropped() {
    let mut xs = faulty(Fault::Raw(Vec::new()));
    assert_eq!(xs.read(Tx::NONE, "k"), Err(Error::TimedOut));
    assert!(!xs.is_broken());
    assert_eq!(xs.read(Tx::NONE, "k").unwrap(), b"v");
}

#[test]
fn late_reply_for_a_timed_out_request_is_dropped() {
    let mut xs = faulty(Fault::Delay(100));
    assert_eq!(xs.read(Tx::NONE, "k"), Err(Error::TimedOut));
    assert!(!xs.is_broken());
    xs.write(Tx::NONE, "k", b"new").unwrap();
    assert_eq!(xs.read(Tx::NONE, "k").unwrap(), b"new");
}

#[test]
fn garbage_reply_ring_indices() {
    let mut xs = faulty(Fault::GarbageRspProd);
    assert!(matches!(
        xs.read(Tx::NONE, "k"),
        Err(Error::BadRingIndex { .. })
    ));
    assert_eq!(xs.read(Tx::NONE, "k"), Err(Error::Broken));
}

#[test]
fn garbage_request_ring_indices() {
    let mut xs = faulty(Fault::GarbageReqCons);
    // The first request goes out (and is answered by nobody); the next finds the index wrong.
    assert_eq!(xs.read(Tx::NONE, "k"), Err(Error::TimedOut));
    assert!(matches!(
        xs.read(Tx::NONE, "k"),
        Err(Error::BadRingIndex { .. })
    ));
    assert_eq!(xs.read(Tx::NONE, "k"), Err(Error::Broken));
}

#[test]
fn unsolicited_reply_while_polling_for_events() {
    let mut xs = client();
    // The first request has id 1: answer it, then send a reply nobody asked for.
    let mut ok = Header {
        ty: MsgType::Write as u32,
        req_id: 1,
        tx_id: 0,
        len: 3,
    }
    .to_bytes()
    .to_vec();
    ok.extend_from_slice(b"OK\0");
    let stray = Header {
        ty: MsgType::Read as u32,
        req_id: 4242,
        tx_id: 0,
        len: 0,
    }
    .to_bytes();
    xs.transport_mut()
        .inject(Fault::Raw([&ok[..], &stray[..]].concat()));
    xs.write(Tx::NONE, "k", b"v").unwrap();
    assert_eq!(
        xs.poll(),
        Err(Error::UnexpectedReqId {
            expected: None,
            got: 4242
        })
    );
    assert_eq!(xs.read(Tx::NONE, "k").unwrap(), b"v");
}

#[test]
fn random_daemon_garbage_never_panics() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let mut xs = client();
        xs.transport_mut().set_idle_limit(2);
        let len = (next() % 48) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && bytes.len() >= 16 {
            // Plausible header, random rest.
            let h = Header {
                ty: (next() % 24) as u32,
                req_id: (next() % 3) as u32,
                tx_id: 0,
                len: (len - 16) as u32,
            };
            bytes[..16].copy_from_slice(&h.to_bytes());
        }
        xs.transport_mut().inject(Fault::Raw(bytes));
        let _ = xs.read(Tx::NONE, "domid");
        let _ = xs.poll();
        let _ = xs.directory(Tx::NONE, "/local");
        let _: Result<String, _> = xs.name();
    }
}

#[test]
fn a_batch_sends_every_request_then_returns_each_reply_in_order() {
    let mut xs = client();
    xs.write(Tx::NONE, "data/a", b"1").unwrap();
    let r = xs
        .batch(
            Tx::NONE,
            &[
                Op::Read("data/a"),
                Op::Write("data/b", b"2"),
                Op::Read("data/missing"),
                Op::Watch("data/b", "tok"),
                Op::Read("data/b"),
            ],
        )
        .unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(r[0].as_deref(), Ok(&b"1"[..]));
    assert!(r[1].is_ok());
    assert_eq!(r[2], Err(Error::Xs(XsErrno::Enoent)));
    assert!(r[3].is_ok());
    assert_eq!(r[4].as_deref(), Ok(&b"2"[..]));
    assert_eq!(
        xs.watches(),
        [(String::from("data/b"), String::from("tok"))]
    );
    // The watch fires once when set; the client goes on with ordinary requests afterwards.
    assert_eq!(xs.read(Tx::NONE, "data/a").unwrap(), b"1");
    assert!(xs.take_event("tok").is_some());
    // A bad argument sends nothing.
    assert_eq!(
        xs.batch(Tx::NONE, &[Op::Write("data/c", b"3"), Op::Read("")]),
        Err(Error::InvalidArgument)
    );
    assert_eq!(xs.read(Tx::NONE, "data/c"), Err(Error::Xs(XsErrno::Enoent)));
}

#[test]
fn a_batch_larger_than_the_ring_goes_out_in_runs_and_works_in_a_transaction() {
    let mut xs = client();
    let value = [b'x'; 100];
    let paths: Vec<String> = (0..40).map(|i| alloc::format!("data/k{i}")).collect();
    let ops: Vec<Op> = paths.iter().map(|p| Op::Write(p, &value)).collect();
    let tx = xs.transaction_start().unwrap();
    let r = xs.batch(tx, &ops).unwrap();
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    assert_eq!(
        xs.read(Tx::NONE, "data/k39"),
        Err(Error::Xs(XsErrno::Enoent))
    );
    xs.transaction_end(tx, true).unwrap();
    let reads: Vec<Op> = paths.iter().map(|p| Op::Read(p)).collect();
    let r = xs.batch(Tx::NONE, &reads).unwrap();
    assert!(r.iter().all(|r| r.as_deref() == Ok(&value[..])));
}

#[test]
fn requests_sent_for_later_are_answered_along_with_the_next_and_their_refusals_counted() {
    let mut xs = client();
    xs.send_later(
        Tx::NONE,
        &[
            Op::Write("data/f", b"1"),
            Op::Write("bad//path", b"1"),
            Op::Watch("data/f", "later"),
        ],
    )
    .unwrap();
    assert_eq!(
        xs.watches(),
        [(String::from("data/f"), String::from("later"))]
    );
    // The next request reads their replies on the way to its own.
    assert_eq!(xs.read(Tx::NONE, "data/f").unwrap(), b"1");
    assert_eq!(xs.take_unawaited_refusals(), 1);
    assert_eq!(xs.take_unawaited_refusals(), 0);
    // The watch is set: it fires (once when set, and for the write).
    xs.write(Tx::NONE, "data/f", b"2").unwrap();
    xs.read(Tx::NONE, "data/f").unwrap();
    assert!(xs.take_event("later").is_some());
}
