//! Host tests of blkfront's async API on `xen::exec` against the simulated blkback: many tasks
//! with many requests in flight, out-of-order completion, fair sharing of the ring and pool, a
//! hostile backend (each bad answer costs only its request), wakeups only for what completed,
//! and cancellation by dropping futures (pages stay with the backend until it answers).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use blkfront::sim::{Fault, SimBlkback, SimConfig};
use blkfront::wire::Op;
use blkfront::{Blkfront, Config, Error};
use xen::exec::{yield_now, Executor, Spawner};
use xen::hal::SimHal;
use xen::xenbus::Never;

mod common;
use common::Rng;

type Disk = Blkfront<SimHal>;

/// Runs `main` on an executor that drives `disk` and parks in the simulated backend.
fn run<T, F: Future<Output = T>>(
    be: &SimBlkback,
    disk: &Disk,
    main: impl FnOnce(Spawner) -> F,
) -> T {
    let mut ex = Executor::new();
    let fut = main(ex.spawner());
    let r = ex.block_on(&mut be.parker(), &[disk], fut);
    assert_eq!(ex.live_tasks(), 0, "tasks left behind");
    r
}

/// Polls `fut` once (with a waker that does nothing), outside any executor.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Pin::new(fut).poll(&mut cx)
}

/// Counts the polls of the future it wraps.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Rc<Cell<u32>>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.set(self.polls.get() + 1);
        self.inner.as_mut().poll(cx)
    }
}

#[test]
fn many_tasks_with_many_requests_in_flight_match_a_model() {
    let size = 4usize << 20;
    let mut sim = SimConfig::disk(size as u64);
    sim.max_indirect_segments = Some(32);
    let config = Config {
        data_pages: 64,
        ..Config::default()
    };
    let (_xs, be, disk) = common::connect(sim, config);
    let tasks = 8usize;
    let region = size / tasks;
    let model = Rc::new(RefCell::new(vec![0u8; size]));
    let d = disk.clone();
    let m = model.clone();
    run(&be, &disk, |sp| async move {
        let mut hs = Vec::new();
        for t in 0..tasks {
            let (d, m) = (d.clone(), m.clone());
            hs.push(sp.spawn(async move {
                let mut rng = Rng(t as u64 + 1);
                let base = t * region;
                for i in 0..40 {
                    let len = match rng.below(3) {
                        0 => rng.below(600) + 1,
                        1 => (rng.below(16) + 1) * 4096,
                        _ => rng.below(200 * 1024) + 1,
                    } as usize;
                    let off = base + rng.below((region - len) as u64 + 1) as usize;
                    if rng.below(2) == 0 {
                        let data = rng.bytes(len);
                        d.write(off as u64, &data).await.unwrap();
                        m.borrow_mut()[off..off + len].copy_from_slice(&data);
                    } else {
                        let mut back = vec![0; len];
                        d.read(off as u64, &mut back).await.unwrap();
                        assert!(
                            back == m.borrow()[off..off + len],
                            "task {t} op {i}: read {len} at {off}"
                        );
                    }
                }
                d.flush().await.unwrap();
            }));
        }
        for h in hs {
            h.await;
        }
    });
    be.with_disk(|dk| assert!(*dk == *model.borrow(), "disk differs from the model"));
    let st = disk.stats();
    assert!(
        st.max_in_flight >= tasks as u32,
        "requests of several tasks in flight at once: at most {}",
        st.max_in_flight
    );
    assert_eq!(st.bad_responses + st.io_errors + st.timeouts, 0);
    assert_eq!(be.stats().frontend_errors, 0);
    assert_eq!((disk.in_flight(), disk.operations()), (0, 0));
}

#[test]
fn later_requests_complete_first_when_the_backend_answers_out_of_order() {
    let (_xs, be, disk) = common::connect(SimConfig::disk(1 << 20), Config::default());
    be.with_disk(|dk| {
        dk[..4096].fill(0xaa);
        dk[8192..12288].fill(0xbb);
    });
    let order = Rc::new(RefCell::new(Vec::new()));
    let (d, o) = (disk.clone(), order.clone());
    // The first request served is answered 5 steps late.
    be.inject(Fault::Delay(5));
    run(&be, &disk, |sp| async move {
        let slow = {
            let (d, o) = (d.clone(), o.clone());
            sp.spawn(async move {
                let mut b = vec![0; 4096];
                d.read(0, &mut b).await.unwrap();
                o.borrow_mut().push(("slow", b[0], b[4095]));
            })
        };
        let fast = {
            let (d, o) = (d.clone(), o.clone());
            sp.spawn(async move {
                let mut b = vec![0; 4096];
                d.read(8192, &mut b).await.unwrap();
                o.borrow_mut().push(("fast", b[0], b[4095]));
            })
        };
        slow.await;
        fast.await;
    });
    assert_eq!(
        *order.borrow(),
        vec![("fast", 0xbb, 0xbb), ("slow", 0xaa, 0xaa)]
    );
}

#[test]
fn a_waiting_operation_is_polled_only_when_answered() {
    let (_xs, be, disk) = common::connect(SimConfig::disk(1 << 20), Config::default());
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    let d = disk.clone();
    be.inject(Fault::Delay(30));
    run(&be, &disk, |sp| async move {
        let d2 = d.clone();
        let slow = sp.spawn(Counted {
            inner: Box::pin(async move {
                let mut b = [0u8; 512];
                d2.read(0, &mut b).await
            }),
            polls: p,
        });
        // Meanwhile another task does 20 operations, each woken by its own answer.
        for i in 0..20u64 {
            d.write(4096 + i * 512, &[i as u8; 512]).await.unwrap();
        }
        slow.await.unwrap();
    });
    assert_eq!(
        polls.get(),
        2,
        "polled to start and once answered, not at every other completion"
    );
}

#[test]
fn a_small_request_gets_through_while_a_big_one_waits_for_room() {
    // 24 pool pages in direct requests of at most 11: a 1 MiB write needs many turns.
    let config = Config {
        data_pages: 24,
        max_indirect_segments: 0,
        ..Config::default()
    };
    let (_xs, be, disk) = common::connect(SimConfig::disk(4 << 20), config);
    let order = Rc::new(RefCell::new(Vec::new()));
    let (d, o) = (disk.clone(), order.clone());
    run(&be, &disk, |sp| async move {
        let big = {
            let (d, o) = (d.clone(), o.clone());
            sp.spawn(async move {
                d.write(0, &vec![7u8; 1 << 20]).await.unwrap();
                o.borrow_mut().push("big");
            })
        };
        // Let the big write take the whole pool first.
        yield_now().await;
        yield_now().await;
        let small = {
            let (d, o) = (d.clone(), o.clone());
            sp.spawn(async move {
                for k in 0..3u64 {
                    let mut b = [0u8; 4096];
                    d.read((2 << 20) + k * 4096, &mut b).await.unwrap();
                }
                o.borrow_mut().push("small");
            })
        };
        big.await;
        small.await;
    });
    assert_eq!(
        *order.borrow(),
        vec!["small", "big"],
        "three small reads waited their turn, not for the whole 1 MiB"
    );
    be.with_disk(|dk| assert!(dk[..1 << 20].iter().all(|&b| b == 7)));
}

#[test]
fn a_hostile_backend_costs_each_bad_answer_only_its_request() {
    let config = Config {
        io_timeout_ns: 50_000_000,
        ..Config::default()
    };
    let (_xs, be, disk) = common::connect(SimConfig::disk(1 << 20), config);
    be.with_disk(|dk| {
        for (i, b) in dk.iter_mut().enumerate() {
            *b = (i / 4096) as u8;
        }
    });
    // Served in the order the tasks queue them: task k's read is the k-th request.
    for f in [
        Fault::IoError,
        Fault::WrongOperation,
        Fault::Status(-77),
        Fault::WrongId,
        Fault::Duplicate,
        Fault::NotSupported,
    ] {
        be.inject(f);
    }
    let d = disk.clone();
    let results = run(&be, &disk, |sp| async move {
        let hs: Vec<_> = (0..8u64)
            .map(|k| {
                let d = d.clone();
                sp.spawn(async move {
                    let mut b = vec![0u8; 4096];
                    let r = d.read(k * 4096 * 2, &mut b).await;
                    (r, b.iter().all(|&x| x == (k * 2) as u8))
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in hs {
            out.push(h.await);
        }
        out
    });
    let rs: Vec<_> = results.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(
        rs[0],
        Err(Error::Io {
            op: Op::Read,
            sector: 0
        })
    );
    assert!(matches!(
        rs[1],
        Err(Error::Backend(
            blkfront::BackendError::WrongOperation { .. }
        ))
    ));
    assert_eq!(
        rs[2],
        Err(Error::Backend(blkfront::BackendError::BadStatus(-77)))
    );
    // An answer with an id nobody asked for, and a duplicate answer: the requests they
    // garbled wait to their deadline; nothing else is lost.
    assert_eq!(rs[3], Err(Error::TimedOut));
    assert_eq!(rs[4], Err(Error::TimedOut));
    assert_eq!(rs[5], Err(Error::Unsupported(Op::Read)));
    for (k, (r, same)) in results.iter().enumerate().skip(6) {
        assert_eq!(*r, Ok(()), "read {k}");
        assert!(same, "read {k} data");
    }
    let st = disk.stats();
    assert_eq!(st.bad_responses, 4, "{st:?}");
    assert_eq!(
        disk.in_flight(),
        2,
        "the two never answered keep their slots"
    );
    // And the disk goes on.
    let d = disk.clone();
    run(&be, &disk, |_| async move {
        d.write(100_000, b"still alive").await.unwrap();
        let mut b = [0u8; 11];
        d.read(100_000, &mut b).await.unwrap();
        assert_eq!(&b, b"still alive");
    });
}

#[test]
fn a_garbage_response_index_fails_what_is_in_flight_and_the_ring_recovers() {
    let (_xs, be, disk) = common::connect(SimConfig::disk(1 << 20), Config::default());
    // The backend answers all three in one step, the last with a garbage index.
    be.inject(Fault::Status(0));
    be.inject(Fault::Status(0));
    be.inject(Fault::GarbageRspProd);
    let d = disk.clone();
    let rs = run(&be, &disk, |sp| async move {
        let hs: Vec<_> = (0..3u64)
            .map(|k| {
                let d = d.clone();
                sp.spawn(async move { d.read(k * 4096, &mut [0u8; 4096]).await })
            })
            .collect();
        let mut out = Vec::new();
        for h in hs {
            out.push(h.await);
        }
        out
    });
    assert!(
        rs.iter().all(|r| matches!(
            r,
            Err(Error::Backend(
                blkfront::BackendError::BadResponseIndex { .. }
            ))
        )),
        "{rs:?}"
    );
    assert_eq!(disk.stats().bad_responses, 1, "one episode");
    // The backend puts the index right: the abandoned answers are reaped late, and I/O goes on.
    be.step();
    let d = disk.clone();
    run(&be, &disk, |_| async move {
        d.write(0, &[9u8; 4096]).await.unwrap();
    });
    assert_eq!(disk.stats().late_responses, 3);
    assert_eq!(disk.in_flight(), 0);
}

#[test]
fn a_dropped_read_keeps_its_pages_until_the_backend_answers() {
    // Two pool pages: a 2-page read holds all of them.
    let config = Config {
        data_pages: 2,
        ..Config::default()
    };
    let (mut xs, be, disk) = common::connect(SimConfig::disk(1 << 20), config);
    be.with_disk(|dk| dk[..8192].fill(0xaa));
    let grants = disk.with_hal(|h| h.state.lock().live_grants());
    be.inject(Fault::Delay(3));
    let mut buf = vec![0u8; 8192];
    let mut read = Box::pin(disk.read_blocks(0, &mut buf));
    assert!(
        poll_once(&mut read).is_pending(),
        "the request is on the ring"
    );
    assert_eq!(disk.in_flight(), 1);
    drop(read);
    assert_eq!(disk.stats().cancelled, 1);
    assert_eq!(disk.in_flight(), 1, "still the backend's until it answers");
    assert_eq!(disk.operations(), 0);
    assert!(buf.iter().all(|&b| b == 0), "nothing copied after the drop");
    // A write now has to wait for those pages; the backend's late answer (its disk data into
    // the read's pages) cannot land in the write's data.
    let d = disk.clone();
    run(&be, &disk, |_| async move {
        d.write(65536, &[0x55u8; 4096]).await.unwrap();
        let mut b = [0u8; 4096];
        d.read(65536, &mut b).await.unwrap();
        assert!(b.iter().all(|&x| x == 0x55));
    });
    be.with_disk(|dk| assert!(dk[65536..65536 + 4096].iter().all(|&x| x == 0x55)));
    let st = disk.stats();
    assert_eq!((st.late_responses, disk.in_flight()), (1, 0));
    assert_eq!(disk.with_hal(|h| h.state.lock().live_grants()), grants);
    disk.disconnect(&mut xs, &mut Never).unwrap();
    assert_eq!(
        disk.with_hal(|h| {
            let st = h.state.lock();
            (st.live_grants(), st.live_pages())
        }),
        (0, 0),
        "nothing leaked"
    );
}

#[test]
fn dropping_operations_in_every_state_loses_nothing() {
    let config = Config {
        data_pages: 16,
        max_indirect_segments: 0,
        ..Config::default()
    };
    let (_xs, be, disk) = common::connect(SimConfig::disk(1 << 20), config);
    let mut rng = Rng(99);
    let data = rng.bytes(256 * 1024);
    for round in 0..20u64 {
        let mut bufs = vec![vec![0u8; 64 * 1024]; 4];
        {
            // Four reads: the first ones take the pool, the later ones queue for room.
            let mut futs: Vec<_> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, b)| Box::pin(disk.read(i as u64 * 65536, b)))
                .collect();
            for f in futs.iter_mut() {
                let _ = poll_once(f);
            }
            // Some answers arrive (collected by nobody), then everything is dropped.
            for _ in 0..round % 4 {
                be.step();
            }
            disk.poll(0);
        }
        assert_eq!(disk.operations(), 0, "round {round}");
        // Whatever was left in flight is reaped as it comes; then the disk works in full.
        let d = disk.clone();
        let data = data.clone();
        run(&be, &disk, |_| async move {
            d.write(0, &data).await.unwrap();
            let mut back = vec![0u8; data.len()];
            d.read(0, &mut back).await.unwrap();
            assert!(back == data, "round {round}");
        });
        assert_eq!(disk.in_flight(), 0, "round {round}");
    }
    assert!(disk.stats().cancelled >= 20 * 4);
    assert_eq!(be.stats().frontend_errors, 0);
}

#[test]
fn an_operation_times_out_alone() {
    let config = Config {
        io_timeout_ns: 20_000_000,
        ..Config::default()
    };
    let (_xs, be, disk) = common::connect(SimConfig::disk(1 << 20), config);
    be.inject(Fault::Drop);
    let d = disk.clone();
    let (lost, others) = run(&be, &disk, |sp| async move {
        let lost = {
            let d = d.clone();
            sp.spawn(async move { d.flush().await })
        };
        let others = {
            let d = d.clone();
            sp.spawn(async move {
                for i in 0..10u64 {
                    d.write(i * 512, &[1; 512]).await?;
                }
                Ok::<(), Error>(())
            })
        };
        (lost.await, others.await)
    });
    assert_eq!(lost, Err(Error::TimedOut));
    assert_eq!(others, Ok(()));
    assert_eq!(disk.stats().timeouts, 1);
}

#[test]
fn disconnect_fails_the_operations_in_progress() {
    let (mut xs, be, disk) = common::connect(SimConfig::disk(1 << 20), Config::default());
    be.inject(Fault::Delay(10));
    let mut buf = [0u8; 512];
    let mut read = Box::pin(disk.read_blocks(0, &mut buf));
    assert!(poll_once(&mut read).is_pending());
    disk.disconnect(&mut xs, &mut Never).unwrap();
    assert_eq!(poll_once(&mut read), Poll::Ready(Err(Error::Disconnected)));
    drop(read);
    assert_eq!(disk.operations(), 0);
}

#[test]
fn many_tasks_against_pseudo_random_responses_all_finish_and_nothing_leaks() {
    for seed in 1..=10u64 {
        let mut sim = SimConfig::disk(1 << 20);
        sim.max_indirect_segments = Some(32);
        sim.max_ring_page_order = Some(1);
        let config = Config {
            io_timeout_ns: 20_000_000,
            data_pages: 48,
            ..Config::default()
        };
        let (mut xs, be, disk) = common::connect(sim, config);
        be.set_chaos(Some(seed));
        let d = disk.clone();
        let done = run(&be, &disk, |sp| async move {
            let hs: Vec<_> = (0..6u64)
                .map(|t| {
                    let d = d.clone();
                    sp.spawn(async move {
                        let mut rng = Rng(seed * 7919 + t);
                        for _ in 0..15 {
                            let len = rng.below(100 * 1024) + 1;
                            let off = rng.below((1 << 20) - len);
                            let r = match rng.below(5) {
                                0 => d.write(off, &rng.bytes(len as usize)).await,
                                1 => d.flush().await,
                                2 => d.discard(off / 512 * 512, 512).await,
                                _ => d.read(off, &mut vec![0; len as usize]).await,
                            };
                            if let Err(e) = r {
                                assert!(!e.to_string().is_empty());
                            }
                        }
                    })
                })
                .collect();
            let n = hs.len();
            for h in hs {
                h.await;
            }
            n
        });
        assert_eq!(done, 6);
        assert_eq!(disk.operations(), 0);
        assert!(disk.stats().bad_responses + disk.stats().io_errors > 0);
        disk.disconnect(&mut xs, &mut Never).unwrap();
        assert!(!be.connected());
        assert_eq!(
            disk.with_hal(|h| {
                let st = h.state.lock();
                (st.live_grants(), st.live_pages())
            }),
            (0, 0),
            "seed {seed}: everything released"
        );
    }
}
