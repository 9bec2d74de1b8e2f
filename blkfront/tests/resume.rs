//! Host tests of blkfront across a restore or live migration, against the simulated blkback:
//! `SimState::new_domain()` voids every grant, port and frame, and a fresh backend
//! (`SimBlkback::reattach`, same disk contents) is attached as the toolstack would. Requests in
//! flight at that moment must all complete, the data verified byte for byte; a flush in flight
//! goes after the writes before it; a new backend with other features (no indirect requests, a
//! smaller ring, no persistent grants) gets the old requests re-split; a disk whose size changed
//! is refused; a backend that answers nonsense during the reconnect is retried while the
//! operations wait (their deadlines still apply); 20 cycles hold no more pages or grants; the
//! blocking calls ride through too.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use blkfront::sim::{SimBlkback, SimConfig, SimPark};
use blkfront::wire::Op;
use blkfront::{Blkfront, Blocking, Config, Error};
use xen::exec::{Executor, Park, Spawner};
use xen::hal::SimHal;
use xen::xenbus::Never;
use xen::xenstore::sim::Sim;
use xen::xenstore::Client;

mod common;
use common::Rng;

type Disk = Blkfront<SimHal>;
type Xs = Rc<RefCell<Client<Sim>>>;

/// A disk connected to a simulated backend, with the restore hook tests share.
struct World {
    xs: Xs,
    hal: SimHal,
    be: Rc<RefCell<SimBlkback>>,
    disk: Disk,
}

fn world(sim: SimConfig, config: Config) -> World {
    let xs: Xs = Rc::new(RefCell::new(Sim::client(1)));
    let hal = SimHal::new();
    let be = SimBlkback::attach(&mut xs.borrow_mut(), &hal, 768, sim);
    let disk = Blkfront::connect(
        hal.clone(),
        &mut xs.borrow_mut(),
        "device/vbd/768",
        config,
        &mut Never,
    )
    .expect("connect");
    let x = xs.clone();
    // Each attempt gives up after 100 looks at a backend that does not move (the simulated
    // xenstore answers at once, so a count stands in for time).
    disk.on_restore(move |run| {
        let mut looks = 0u32;
        let mut timeout = || {
            looks += 1;
            looks > 100
        };
        run(&mut x.borrow_mut(), &mut timeout)
    });
    World {
        xs,
        hal,
        be: Rc::new(RefCell::new(be)),
        disk,
    }
}

impl World {
    /// The toolstack attaches the new backend (after a `new_domain`).
    fn attach(&self, sim: SimConfig) {
        let old = self.be.borrow().clone();
        let new = old.reattach(&mut self.xs.borrow_mut(), &self.hal, sim);
        *self.be.borrow_mut() = new;
    }

    /// A callback that restores with `sim` (for a [`RestorePark`]).
    fn restorer(&self, sim: SimConfig) -> Box<dyn FnOnce()> {
        let (xs, hal, be) = (self.xs.clone(), self.hal.clone(), self.be.clone());
        Box::new(move || {
            hal.state.lock().new_domain();
            let old = be.borrow().clone();
            let new = old.reattach(&mut xs.borrow_mut(), &hal, sim);
            *be.borrow_mut() = new;
        })
    }

    fn backend(&self) -> SimBlkback {
        self.be.borrow().clone()
    }

    fn live(&self) -> (usize, usize) {
        let s = self.hal.state.lock();
        (s.live_pages(), s.live_grants())
    }
}

/// The simulated backend's park, which runs `action` (a restore) in the idle loop at park
/// number `at`, before the backend's step: what was queued since the last park is in flight.
struct RestorePark {
    inner: SimPark,
    at: u64,
    parks: u64,
    action: Option<Box<dyn FnOnce()>>,
}

impl RestorePark {
    fn new(w: &World, at: u64, action: Box<dyn FnOnce()>) -> Self {
        RestorePark {
            inner: w.backend().parker(),
            at,
            parks: 0,
            action: Some(action),
        }
    }

    fn done(&self) -> bool {
        self.action.is_none()
    }
}

impl xen::exec::Clock for RestorePark {
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
}

impl Park for RestorePark {
    fn park(&mut self, deadline: Option<u64>) {
        self.parks += 1;
        if self.parks == self.at {
            if let Some(a) = self.action.take() {
                a();
            }
        }
        self.inner.park(deadline);
    }
}

fn run<T, F: Future<Output = T>>(
    park: &mut impl Park,
    disk: &Disk,
    main: impl FnOnce(Spawner) -> F,
) -> T {
    let mut ex = Executor::new();
    let fut = main(ex.spawner());
    let r = ex.block_on(park, &[disk], fut);
    assert_eq!(ex.live_tasks(), 0, "tasks left behind");
    r
}

fn fill(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

/// `tasks` tasks each writing `writes` random ranges of their own region (and reading each
/// back at once), with a restore at park `at`; returns the model of the disk.
fn concurrent_io(w: &World, at: u64, sim: SimConfig, tasks: usize, writes: usize) -> Vec<u8> {
    let size = w.disk.capacity() as usize;
    let region = size / tasks;
    let model = Rc::new(RefCell::new(w.backend().with_disk(|d| d.clone())));
    let mut park = RestorePark::new(w, at, w.restorer(sim));
    let (d, m) = (w.disk.clone(), model.clone());
    let r: Result<(), Error> = run(&mut park, &w.disk, |sp| async move {
        let mut hs = Vec::new();
        for t in 0..tasks {
            let (d, m) = (d.clone(), m.clone());
            hs.push(sp.spawn(async move {
                let mut rng = Rng::new(t as u64 * 77 + at);
                let base = t * region;
                for _ in 0..writes {
                    // Sector-aligned, from one sector to most of the region.
                    let len = 512 * (1 + rng.below((region / 512 - 1) as u64) as usize);
                    let off = 512 * rng.below(((region - len) / 512 + 1) as u64) as usize;
                    let data = fill(&mut rng, len);
                    d.write((base + off) as u64, &data).await?;
                    m.borrow_mut()[base + off..base + off + len].copy_from_slice(&data);
                    let mut back = vec![0u8; len];
                    d.read((base + off) as u64, &mut back).await?;
                    assert!(back == data, "task {t}: read back differs");
                }
                Ok::<(), Error>(())
            }));
        }
        for h in hs {
            h.await?;
        }
        Ok(())
    });
    if let Err(e) = &r {
        panic!(
            "an operation failed across the restore: {e}; {:?}, {:?}, in flight {}, backend {:?} {:?}",
            w.disk.stats(),
            w.disk.features(),
            w.disk.in_flight(),
            w.backend().stats(),
            w.backend().connect_error()
        );
    }
    assert!(park.done(), "the restore happened");
    let model = model.borrow().clone();
    model
}

/// Reads the whole disk through the frontend and compares it with `model` and with the
/// backend's bytes.
fn verify(w: &World, model: &[u8]) {
    let mut all = vec![0u8; model.len()];
    let d = w.disk.clone();
    let mut park = w.backend().parker();
    run(&mut park, &w.disk, |_| {
        let all = &mut all;
        async move { d.read(0, all).await }
    })
    .expect("read back");
    assert!(
        all == model,
        "disk differs from the model (through the frontend)"
    );
    assert!(
        w.backend().with_disk(|b| b[..] == model[..]),
        "disk differs from the model (the backend's bytes)"
    );
}

fn indirect_sim(bytes: u64) -> SimConfig {
    let mut s = SimConfig::disk(bytes);
    s.max_indirect_segments = Some(64);
    s.max_ring_page_order = Some(2);
    s
}

#[test]
fn concurrent_reads_and_writes_in_flight_all_complete_across_a_restore() {
    let w = world(indirect_sim(4 << 20), Config::default());
    let before = w.live();
    w.backend().record();
    let model = concurrent_io(&w, 3, indirect_sim(4 << 20), 8, 12);
    let s = w.disk.stats();
    assert_eq!(s.reconnects, 1);
    assert!(s.requests_resubmitted > 0, "nothing was in flight: {s:?}");
    assert_eq!(s.reconnect_failures, 0);
    assert_eq!(w.backend().stats().frontend_errors, 0);
    assert_eq!(w.hal.state.lock().generation, 1);
    verify(&w, &model);
    // Same features, so the same pages and grants as before.
    assert_eq!(w.live(), before);
}

#[test]
fn the_old_backend_is_gone_and_its_ring_is_never_read_again() {
    let w = world(SimConfig::disk(1 << 20), Config::default());
    let old = w.backend();
    let mut park = RestorePark::new(&w, 1, w.restorer(SimConfig::disk(1 << 20)));
    let d = w.disk.clone();
    let data = vec![0xa5u8; 64 << 10];
    let r = run(&mut park, &w.disk, |_| {
        let data = &data;
        async move { d.write(0, data).await }
    });
    r.unwrap();
    // The old backend served nothing after the restore: the write reached the disk through
    // the new one, and the old one is no longer connected.
    assert!(!old.connected());
    assert!(w.backend().connected());
    assert_eq!(old.stats().requests, 0);
    assert!(w.backend().stats().writes > 0);
    assert!(w.backend().with_disk(|b| b[..64 << 10] == data[..]));
    assert!(w.disk.stats().requests_resubmitted > 0);
}

#[test]
fn a_flush_in_flight_is_resubmitted_after_the_writes_before_it() {
    let w = world(SimConfig::disk(2 << 20), Config::default());
    w.backend().record();
    let mut park = RestorePark::new(&w, 1, w.restorer(SimConfig::disk(2 << 20)));
    let d = w.disk.clone();
    let a = vec![1u8; 96 << 10];
    let b = vec![2u8; 96 << 10];
    // The two writes and the flush are polled once each before the first park (the restore),
    // so all three are in flight on the old ring.
    let r: Result<(), Error> = run(&mut park, &w.disk, |_| {
        let (a, b) = (&a, &b);
        async move {
            let wa = d.write_blocks(0, a);
            let wb = d.write_blocks(1024, b);
            let f = d.flush();
            let (ra, rb, rf) = join3(wa, wb, f).await;
            ra.and(rb).and(rf)
        }
    });
    r.unwrap();
    let s = w.disk.stats();
    assert!(s.requests_resubmitted >= 3, "{s:?}");
    // The new backend saw every write before the flush.
    let be = w.backend();
    assert_eq!(be.stats().flushes, 1);
    let log = be.served();
    let flush_at = log
        .iter()
        .position(|&(op, _)| op == Op::FlushDiskcache as u8)
        .expect("flush served");
    let writes_after = log[flush_at..]
        .iter()
        .filter(|&&(op, _)| op == Op::Write as u8)
        .count();
    assert_eq!(writes_after, 0, "a write went after the flush: {log:?}");
    assert!(be.with_disk(|d| d[..96 << 10] == a[..] && d[512 << 10..(512 + 96) << 10] == b[..]));
}

#[test]
fn a_flush_goes_as_the_new_backends_barrier_or_not_at_all() {
    // Old backend: cache flush. New one: only a barrier, then one with neither (no cache).
    for (flush, barrier) in [(false, true), (false, false)] {
        let w = world(SimConfig::disk(1 << 20), Config::default());
        let mut new = SimConfig::disk(1 << 20);
        new.flush = flush;
        new.barrier = barrier;
        let mut park = RestorePark::new(&w, 1, w.restorer(new));
        let d = w.disk.clone();
        let r: Result<(), Error> = run(&mut park, &w.disk, |_| async move { d.flush().await });
        r.unwrap_or_else(|e| panic!("flush={flush} barrier={barrier}: {e}"));
        let be = w.backend().stats();
        assert_eq!((be.flushes, be.barriers), (0, u64::from(barrier)));
        assert_eq!(be.frontend_errors, 0);
        assert_eq!(w.disk.features().flush, flush);
    }
}

#[test]
fn a_new_backend_with_other_features_gets_the_old_requests_re_split() {
    // Old: indirect requests of 64 segments, a 4-page ring, persistent grants. New: no
    // indirect requests, one ring page, no persistent grants.
    let w = world(indirect_sim(4 << 20), Config::default());
    assert_eq!(w.disk.features().ring_pages, 4);
    assert_eq!(w.disk.features().segments_per_request, 64);
    let mut plain = SimConfig::disk(4 << 20);
    plain.persistent = false;
    w.backend().record();
    let model = concurrent_io(&w, 2, plain.clone(), 4, 6);
    let f = w.disk.features();
    assert_eq!(f.ring_pages, 1);
    assert_eq!(f.segments_per_request, 11);
    assert_eq!(f.backend_indirect_segments, 0);
    assert!(!f.persistent);
    let be = w.backend().stats();
    assert_eq!(
        be.indirect, 0,
        "an indirect request went to a backend without them"
    );
    assert!(be.max_segments <= 11);
    assert_eq!(be.frontend_errors, 0);
    assert!(w.disk.stats().requests_resubmitted > 0);
    verify(&w, &model);

    // And back: the new limits add descriptor pages again.
    let model = concurrent_io(&w, 2, indirect_sim(4 << 20), 4, 6);
    assert_eq!(w.disk.features().segments_per_request, 64);
    assert_eq!(w.disk.features().ring_pages, 4);
    verify(&w, &model);
    assert_eq!(w.backend().stats().frontend_errors, 0);
}

#[test]
fn a_disk_whose_size_changed_is_refused_with_a_clear_error() {
    for (bytes, sector_size) in [(2u64 << 20, 512u32), (1 << 20, 4096)] {
        let w = world(SimConfig::disk(1 << 20), Config::default());
        let mut other = SimConfig::disk(bytes);
        other.sector_size = sector_size;
        let mut park = RestorePark::new(&w, 1, w.restorer(other));
        let d = w.disk.clone();
        let data = vec![7u8; 8192];
        let r = run(&mut park, &w.disk, |_| {
            let data = &data;
            async move { d.write(0, data).await }
        });
        let want = Error::DiskChanged {
            sectors: 2048,
            sector_size: 512,
            new_sectors: bytes / 512,
            new_sector_size: sector_size,
        };
        assert_eq!(r, Err(want.clone()));
        assert!(want.to_string().contains("another disk"), "{want}");
        // Later operations fail the same way, and nothing of the old data reached the disk.
        let mut park = w.backend().parker();
        let d = w.disk.clone();
        let mut b = [0u8; 512];
        let r = run(&mut park, &w.disk, |_| {
            let b = &mut b;
            async move { d.read(0, b).await }
        });
        assert_eq!(r, Err(want));
        assert!(w.backend().with_disk(|d| d[..8192].iter().all(|&x| x == 0)));
        // Every page and grant given back (the old grants died with the old domain).
        assert_eq!(w.live(), (0, 0));
    }
}

#[test]
fn nonsense_from_the_new_backend_is_retried_while_operations_wait() {
    let w = world(SimConfig::disk(1 << 20), Config::default());
    let mut bad = SimConfig::disk(1 << 20);
    bad.overrides = vec![("sectors".into(), "12x".into())];
    let mut park = RestorePark::new(&w, 1, w.restorer(bad));
    let d = w.disk.clone();
    let be = w.be.clone();
    let hal = w.hal.clone();
    let data = vec![9u8; 20 << 10];
    let r: Result<(), Error> = run(&mut park, &w.disk, |sp| {
        let data = data.clone();
        async move {
            let writer = sp.spawn({
                let d = d.clone();
                async move { d.write(4096, &data).await }
            });
            // Let several attempts fail (they back off 10, 20, 40, ... ms of simulated time).
            sleep_ms(&hal, 400).await;
            assert!(!writer.is_finished(), "the write waits for the reconnect");
            assert!(d.stats().reconnect_failures >= 2, "{:?}", d.stats());
            // The backend comes to its senses.
            be.borrow().configure(|c| c.overrides.clear());
            writer.await
        }
    });
    r.unwrap();
    let s = w.disk.stats();
    assert_eq!(s.reconnects, 1);
    assert!(s.reconnect_failures >= 2);
    assert!(w
        .backend()
        .with_disk(|b| b[4096..4096 + (20 << 10)] == data[..]));
}

#[test]
fn a_backend_still_connected_from_the_old_domain_is_not_trusted() {
    // The restore happens, the toolstack attaches the new backend only later: meanwhile the
    // device nodes still show the old backend as Connected.
    let w = world(SimConfig::disk(1 << 20), Config::default());
    let hal = w.hal.clone();
    let mut park = RestorePark::new(&w, 1, Box::new(move || hal.state.lock().new_domain()));
    let d = w.disk.clone();
    let data = vec![3u8; 4096];
    let r: Result<(), Error> = run(&mut park, &w.disk, |sp| {
        let data = data.clone();
        let w_attach = (w.xs.clone(), w.hal.clone(), w.be.clone());
        async move {
            let writer = sp.spawn({
                let d = d.clone();
                async move { d.write(0, &data).await }
            });
            sleep_ms(&w_attach.1, 100).await;
            assert!(!writer.is_finished());
            assert!(d.stats().reconnect_failures >= 1);
            let (xs, hal, be) = w_attach;
            let old = be.borrow().clone();
            let new = old.reattach(&mut xs.borrow_mut(), &hal, SimConfig::disk(1 << 20));
            *be.borrow_mut() = new;
            writer.await
        }
    });
    r.unwrap();
    assert_eq!(w.disk.stats().reconnects, 1);
    assert!(w.backend().with_disk(|b| b[..4096] == data[..]));
}

#[test]
fn deadlines_and_cancellation_still_work_while_the_reconnect_fails() {
    let config = Config {
        io_timeout_ns: 50_000_000,
        ..Config::default()
    };
    let w = world(SimConfig::disk(1 << 20), config);
    let hal = w.hal.clone();
    let mut park = RestorePark::new(&w, 1, Box::new(move || hal.state.lock().new_domain()));
    let d = w.disk.clone();
    let r = run(&mut park, &w.disk, |_| async move {
        let mut b = [0u8; 512];
        d.read(0, &mut b).await
    });
    assert_eq!(r, Err(Error::TimedOut));
    // A dropped operation is forgotten: it is not resubmitted once the backend is back.
    {
        let d = w.disk.clone();
        let data = [5u8; 512];
        let mut fut = Box::pin(d.write_blocks(8, &data));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!(w.disk.stats().cancelled, 1);
    w.attach(SimConfig::disk(1 << 20));
    let d = w.disk.clone();
    let mut park = w.backend().parker();
    w.backend().record();
    let r = run(&mut park, &w.disk, |_| async move {
        let mut b = [0u8; 512];
        d.read(0, &mut b).await
    });
    r.unwrap();
    assert_eq!(w.disk.stats().reconnects, 1);
    assert!(
        w.backend()
            .served()
            .iter()
            .all(|&(op, _)| op != Op::Write as u8),
        "the dropped write was resubmitted"
    );
}

#[test]
fn twenty_restores_hold_no_more_pages_or_grants() {
    let w = world(indirect_sim(2 << 20), Config::default());
    let mut plain = SimConfig::disk(2 << 20);
    plain.max_ring_page_order = Some(1);
    let configs = [plain, indirect_sim(2 << 20)];
    let mut seen: [Option<(usize, usize)>; 2] = [None, None];
    let mut model = Vec::new();
    for cycle in 0..20 {
        let sim = configs[cycle % 2].clone();
        model = concurrent_io(&w, 2 + (cycle as u64 % 3), sim, 4, 3);
        let live = w.live();
        match seen[cycle % 2] {
            None => seen[cycle % 2] = Some(live),
            Some(before) => assert_eq!(live, before, "cycle {cycle}: pages/grants grew"),
        }
        assert_eq!(w.backend().stats().frontend_errors, 0);
    }
    verify(&w, &model);
    let s = w.disk.stats();
    assert_eq!(s.reconnects, 20);
    assert!(s.requests_resubmitted >= 20, "{s:?}");
    // And a clean disconnect gives everything back.
    w.disk
        .disconnect(&mut w.xs.borrow_mut(), &mut Never)
        .unwrap();
    assert_eq!(w.live(), (0, 0));
}

#[test]
fn blocking_calls_ride_through_a_restore() {
    let w = world(indirect_sim(4 << 20), Config::default());
    let park = RestorePark::new(&w, 2, w.restorer(SimConfig::disk(4 << 20)));
    let mut disk = Blocking::new(w.disk.clone(), park);
    let mut rng = Rng::new(5);
    let data = fill(&mut rng, 3 << 20);
    disk.write(512, &data).unwrap();
    assert!(disk.park_mut().done(), "the restore came during the write");
    disk.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    disk.read(512, &mut back).unwrap();
    assert!(back == data);
    assert!(disk.stats().requests_resubmitted > 0);
    assert_eq!(disk.stats().reconnects, 1);
    assert!(w
        .backend()
        .with_disk(|b| b[512..512 + data.len()] == data[..]));
}

#[test]
fn without_a_way_to_reach_xenstore_a_restored_disk_says_so() {
    let (_xs, be, disk) = common::connect(SimConfig::disk(1 << 20), Config::default());
    disk.with_hal(|h| h.state.lock().new_domain());
    let d = disk.clone();
    let mut park = be.parker();
    let r = run(&mut park, &disk, |_| async move {
        let mut b = [0u8; 512];
        d.read(0, &mut b).await
    });
    assert_eq!(r, Err(Error::NoXenstore));
}

/// Sleeps `ms` of the simulated clock (each park of the backend advances it a millisecond).
async fn sleep_ms(hal: &SimHal, ms: u64) {
    let h = hal.clone();
    let at = hal.state.lock().now_ns + ms * 1_000_000;
    xen::exec::sleep_until_with(move || h.state.lock().now_ns, at).await;
}

/// Polls three futures in order until all are done.
async fn join3<A: Future, B: Future, C: Future>(
    a: A,
    b: B,
    c: C,
) -> (A::Output, B::Output, C::Output) {
    let (mut a, mut b, mut c) = (Box::pin(a), Box::pin(b), Box::pin(c));
    let (mut ra, mut rb, mut rc) = (None, None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if rc.is_none() {
            if let std::task::Poll::Ready(v) = c.as_mut().poll(cx) {
                rc = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() && rc.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap(), rc.unwrap())
}
