//! Fuzzes the driver against a backend answering with pseudo-random responses (ids, operations,
//! statuses, dropped, delayed, extra, garbage indices), seeded by the input, while the input
//! picks the operations: nothing may panic. Run with `cargo fuzz run responses` from `blkfront/`.
#![no_main]

use blkfront::sim::{SimBlkback, SimConfig};
use blkfront::{Blkfront, Blocking, Config};
use libfuzzer_sys::fuzz_target;
use xen::hal::SimHal;
use xen::xenbus::Never;
use xen::xenstore::sim::Sim;

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
    let Ok(disk) = Blkfront::connect(hal, &mut xs, "device/vbd/768", config, &mut Never) else {
        return;
    };
    let mut disk = Blocking::new(disk, be.parker());
    be.set_chaos(Some(u64::from_le_bytes(*seed)));
    for op in ops.chunks(4) {
        let off = u64::from(u16::from_le_bytes([op[0], *op.get(1).unwrap_or(&0)])) * 3;
        let len = usize::from(*op.get(2).unwrap_or(&1)) * 700 + 1;
        let _ = match op.get(3).copied().unwrap_or(0) % 4 {
            0 => disk.write(off, &vec![op[0]; len]),
            1 => disk.flush(),
            2 => disk.discard(off / 512 * 512, 512),
            _ => disk.read(off, &mut vec![0; len]),
        };
        be.step();
    }
    let _ = disk.disconnect(&mut xs, &mut Never);
});
