//! Fuzzes the async API: up to six tasks at once against a backend answering with pseudo-random
//! responses (seeded by the input), the input picking each task's operations and when to cancel
//! one by dropping its future (after 0 to 15 polls). Nothing may panic or hang, every task must
//! finish, and after disconnecting every grant and page is released. Run with
//! `cargo fuzz run concurrent` from `blkfront/`.
#![no_main]

use core::future::Future;
use core::pin::Pin;
use core::task::Poll;

use blkfront::sim::{SimBlkback, SimConfig};
use blkfront::{Blkfront, Config, Error};
use libfuzzer_sys::fuzz_target;
use xen::exec::{yield_now, Executor};
use xen::hal::SimHal;
use xen::xenbus::Never;
use xen::xenstore::sim::Sim;

type Op<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + 'a>>;

fuzz_target!(|data: &[u8]| {
    let Some((seed, ops)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mut xs = Sim::client(1);
    let hal = SimHal::new();
    let mut sim = SimConfig::disk(256 * 1024);
    sim.max_indirect_segments = Some(32);
    sim.max_ring_page_order = Some(1);
    let be = SimBlkback::attach(&mut xs, &hal, 768, sim);
    let config = Config {
        io_timeout_ns: 5_000_000,
        data_pages: 48,
        ..Config::default()
    };
    let Ok(disk) =
        Blkfront::<SimHal>::connect(hal.clone(), &mut xs, "device/vbd/768", config, &mut Never)
    else {
        return;
    };
    be.set_chaos(Some(u64::from_le_bytes(*seed)));
    let mut ex = Executor::new();
    let sp = ex.spawner();
    let d = disk.clone();
    let ops = ops.to_vec();
    ex.block_on(&mut be.parker(), &[&disk], async move {
        let mut hs = Vec::new();
        for chunk in ops.chunks(16).take(6) {
            let d = d.clone();
            let chunk = chunk.to_vec();
            hs.push(sp.spawn(async move {
                for op in chunk.chunks(4) {
                    let b = |i: usize| usize::from(*op.get(i).unwrap_or(&0));
                    let off = ((b(0) << 8 | b(1)) * 3) as u64;
                    let len = b(2) * 700 + 1;
                    let mut buf = vec![op[0]; len];
                    let mut fut: Op<'_> = match b(3) % 4 {
                        0 => Box::pin(d.write(off, &buf)),
                        1 => Box::pin(d.flush()),
                        2 => Box::pin(d.discard(off / 512 * 512, 512)),
                        _ => Box::pin(d.read(off, &mut buf)),
                    };
                    let cancel_after = b(3) >> 4;
                    if cancel_after == 0 {
                        let _ = fut.await;
                        continue;
                    }
                    for _ in 0..cancel_after {
                        let done = core::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx)))
                            .await
                            .is_ready();
                        if done {
                            break;
                        }
                        yield_now().await;
                    }
                }
            }));
        }
        for h in hs {
            h.await;
        }
    });
    assert_eq!(ex.live_tasks(), 0);
    assert_eq!(disk.operations(), 0, "an operation outlived its future");
    disk.disconnect(&mut xs, &mut Never).unwrap();
    let st = hal.state.lock();
    assert_eq!((st.live_grants(), st.live_pages()), (0, 0), "leaked");
});
