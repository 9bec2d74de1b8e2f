//! Host tests of blkfront against the simulated blkback and xenstored: the handshake, I/O at
//! sector and byte granularity, splitting, flush/barrier/discard, read-only disks, one test per
//! backend misbehaviour, a randomized workload against a model, and pseudo-random responses.

use blkfront::sim::{Fault, SimBlkback, SimConfig, SimPark};
use blkfront::wire::Op;
use blkfront::{BackendError, Blkfront, Blocking, Config, Error};
use xen::hal::{Hal, HalError, SharedPage, SimHal};
use xen::xenbus::Never;
use xen::xenstore::sim::Sim;
use xen::xenstore::{Client, Tx};

mod common;
use common::{Rng, BE, FE};

type Disk = Blocking<SimHal, SimPark>;

fn setup_with(sim: SimConfig, config: Config) -> (Client<Sim>, SimBlkback, Disk) {
    let (xs, be, disk) = common::connect(sim, config);
    let park = be.parker();
    (xs, be, Blocking::new(disk, park))
}

fn setup(sim: SimConfig) -> (Client<Sim>, SimBlkback, Disk) {
    setup_with(sim, Config::default())
}

fn node(xs: &mut Client<Sim>, path: &str) -> Option<String> {
    xs.transport_mut().store().read_str(path)
}

// ---- Handshake ------------------------------------------------------------------------------

#[test]
fn connects_with_a_single_page_ring() {
    let (mut xs, be, disk) = setup(SimConfig::disk(1 << 20));
    assert_eq!(node(&mut xs, &format!("{FE}/state")).as_deref(), Some("4"));
    assert_eq!(node(&mut xs, &format!("{BE}/state")).as_deref(), Some("4"));
    assert!(node(&mut xs, &format!("{FE}/ring-ref")).is_some());
    assert!(node(&mut xs, &format!("{FE}/ring-ref0")).is_none());
    assert!(node(&mut xs, &format!("{FE}/ring-page-order")).is_none());
    assert_eq!(
        node(&mut xs, &format!("{FE}/protocol")).as_deref(),
        Some("x86_64-abi")
    );
    assert_eq!(
        node(&mut xs, &format!("{FE}/event-channel")),
        Some(disk.port().to_string())
    );
    assert_eq!(
        node(&mut xs, &format!("{FE}/feature-persistent")).as_deref(),
        Some("1")
    );
    assert!(be.connected());
    assert_eq!(be.ring_pages(), 1);
    assert_eq!(disk.capacity(), 1 << 20);
    assert_eq!(disk.sector_size(), 512);
    assert_eq!(disk.sectors(), 2048);
    assert!(!disk.read_only());
    let f = disk.features();
    assert!(f.flush && f.barrier && f.discard && f.persistent);
    assert_eq!((f.ring_pages, f.segments_per_request), (1, 11));
}

#[test]
fn connects_with_a_multi_page_ring_and_uses_all_of_it() {
    let mut sim = SimConfig::disk(8 << 20);
    sim.max_ring_page_order = Some(3);
    // A pool big enough to fill the ring: 6 MiB in 11-page requests is 140 requests.
    let config = Config {
        data_pages: 2048,
        ..Config::default()
    };
    let (mut xs, be, mut disk) = setup_with(sim, config);
    // Capped by Config::max_ring_page_order (2).
    assert_eq!(
        node(&mut xs, &format!("{FE}/ring-page-order")).as_deref(),
        Some("2")
    );
    assert_eq!(
        node(&mut xs, &format!("{FE}/num-ring-pages")).as_deref(),
        Some("4")
    );
    for i in 0..4 {
        assert!(node(&mut xs, &format!("{FE}/ring-ref{i}")).is_some());
    }
    assert!(node(&mut xs, &format!("{FE}/ring-ref")).is_none());
    assert_eq!(be.ring_pages(), 4);
    assert_eq!(disk.features().ring_pages, 4);
    // 128 slots: fill the ring, and go round it (slots straddle page boundaries in the
    // backend's page-by-page view).
    let mut rng = Rng(7);
    let data = rng.bytes(6 << 20);
    disk.write(4096, &data).unwrap();
    let mut back = vec![0; data.len()];
    disk.read(4096, &mut back).unwrap();
    assert!(back == data);
    assert!(disk.stats().requests > 128 * 2);
    assert_eq!(be.stats().frontend_errors, 0);
}

/// A platform that cannot map contiguous pages (the trait's default `alloc_pages`).
struct NoContiguous(SimHal);

impl Hal for NoContiguous {
    fn alloc_page(&mut self) -> Result<SharedPage, HalError> {
        self.0.alloc_page()
    }
    fn free_page(&mut self, page: SharedPage) {
        self.0.free_page(page)
    }
    fn grant(&mut self, domid: u16, mfn: u64, readonly: bool) -> Result<u32, HalError> {
        self.0.grant(domid, mfn, readonly)
    }
    fn end_grant(&mut self, gref: u32) -> Result<(), HalError> {
        self.0.end_grant(gref)
    }
    fn alloc_evtchn(&mut self, remote: u16) -> Result<u32, HalError> {
        self.0.alloc_evtchn(remote)
    }
    fn close_evtchn(&mut self, port: u32) {
        self.0.close_evtchn(port)
    }
    fn notify(&mut self, port: u32) {
        self.0.notify(port)
    }
    fn now_ns(&self) -> u64 {
        self.0.now_ns()
    }
    fn frame(&self, mem: &xen::shmem::ShMem) -> u64 {
        self.0.frame(mem)
    }
}

#[test]
fn falls_back_to_one_ring_page_when_the_platform_cannot_map_several() {
    let mut xs = Sim::client(1);
    let hal = SimHal::new();
    let mut sim = SimConfig::disk(1 << 20);
    sim.max_ring_page_order = Some(2);
    let be = SimBlkback::attach(&mut xs, &hal, 768, sim);
    let disk = Blkfront::connect(
        NoContiguous(hal),
        &mut xs,
        "device/vbd/768",
        Config::default(),
        &mut Never,
    )
    .unwrap();
    let mut disk = Blocking::new(disk, be.parker());
    assert_eq!(be.ring_pages(), 1);
    assert!(node(&mut xs, &format!("{FE}/ring-ref")).is_some());
    disk.write(0, b"fallback").unwrap();
    let mut b = [0; 8];
    disk.read(0, &mut b).unwrap();
    assert_eq!(&b, b"fallback");
}

#[test]
fn bad_disk_nodes_fail_the_connection_and_release_everything() {
    for (key, value) in [
        ("sectors", "lots"),
        ("sectors", "0"),
        ("sectors", "99999999999999999999"),
        ("sector-size", "1000"),
        ("sector-size", "256"),
        ("sector-size", "8192"),
        ("sectors", "7"), // not a whole number of 4096-byte sectors below
        ("info", "4294967296"),
    ] {
        let mut xs = Sim::client(1);
        let hal = SimHal::new();
        let mut sim = SimConfig::disk(1 << 20);
        if value == "7" {
            sim.sector_size = 4096;
        }
        sim.overrides.push((key.into(), value.into()));
        let be = SimBlkback::attach(&mut xs, &hal, 768, sim);
        let r = Blkfront::connect(
            hal.clone(),
            &mut xs,
            "device/vbd/768",
            Config::default(),
            &mut Never,
        );
        match r {
            Err(Error::BadBackendNode { key: k, .. }) => assert_eq!(k, key, "{key}={value}"),
            Err(e) => panic!("{key}={value}: {e}"),
            Ok(_) => panic!("{key}={value} accepted"),
        }
        assert_eq!(node(&mut xs, &format!("{FE}/state")).as_deref(), Some("6"));
        assert!(!be.connected(), "the backend unmapped the ring");
        let st = hal.state.lock();
        assert_eq!((st.live_grants(), st.live_pages()), (0, 0), "{key}={value}");
    }
}

#[test]
fn disconnect_closes_and_releases_everything() {
    let (mut xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    disk.write(0, &[1; 4096]).unwrap();
    disk.disconnect(&mut xs, &mut Never).unwrap();
    assert_eq!(node(&mut xs, &format!("{FE}/state")).as_deref(), Some("6"));
    assert_eq!(node(&mut xs, &format!("{BE}/state")).as_deref(), Some("6"));
    assert!(!be.connected());
    disk.disk().with_hal(|h| {
        let st = h.state.lock();
        assert_eq!((st.live_grants(), st.live_pages()), (0, 0));
    });
    assert_eq!(disk.read(0, &mut [0; 1]), Err(Error::Disconnected));
    assert_eq!(disk.flush(), Err(Error::Disconnected));
    assert_eq!(
        disk.disconnect(&mut xs, &mut Never),
        Err(Error::Disconnected)
    );
}

#[test]
fn handle_is_the_virtual_device() {
    let (mut xs, _be, _disk) = setup(SimConfig::disk(1 << 20));
    assert_eq!(
        xs.read_string(Tx::NONE, &format!("{FE}/virtual-device"))
            .unwrap(),
        "768"
    );
}

// ---- Data ------------------------------------------------------------------------------------

#[test]
fn sectors_written_read_back() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    let mut rng = Rng(1);
    let data = rng.bytes(3 * 512);
    disk.write_blocks(5, &data).unwrap();
    let mut back = vec![0; data.len()];
    disk.read_blocks(5, &mut back).unwrap();
    assert_eq!(back, data);
    be.with_disk(|d| assert_eq!(&d[5 * 512..8 * 512], &data[..]));
    assert_eq!(
        disk.read_blocks(0, &mut [0; 100]),
        Err(Error::Unaligned {
            offset: 0,
            len: 100,
            sector_size: 512
        })
    );
    assert_eq!(disk.read_blocks(0, &mut []), Ok(()));
}

#[test]
fn unaligned_byte_ranges_read_modify_write() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(64 * 1024));
    be.with_disk(|d| d.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8));
    let mut model: Vec<u8> = (0..64 * 1024).map(|i| i as u8).collect();
    let mut rng = Rng(3);
    for (off, len) in [
        (1, 1),
        (511, 2),
        (700, 5000),
        (4095, 4098),
        (0, 513),
        (65535, 1),
    ] {
        let data = rng.bytes(len);
        disk.write(off, &data).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&data);
        let mut back = vec![0; len + 2];
        let start = off.saturating_sub(1);
        let end = (off as usize + len + 1).min(model.len());
        let back = &mut back[..end - start as usize];
        disk.read(start, back).unwrap();
        assert_eq!(back, &model[start as usize..end], "{off}+{len}");
    }
    be.with_disk(|d| assert_eq!(d, &model));
}

#[test]
fn ranges_outside_the_disk_are_refused_before_the_ring() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    let before = be.stats().requests;
    let cap = 1 << 20;
    for (off, len) in [(cap, 1u64), (cap - 1, 2), (u64::MAX, 2), (0, cap + 1)] {
        let r = disk.read(off, &mut vec![0; len as usize]);
        assert_eq!(
            r,
            Err(Error::OutOfRange {
                offset: off,
                len,
                capacity: cap
            })
        );
    }
    assert!(matches!(
        disk.write_blocks(u64::MAX / 2, &[0; 512]),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        disk.discard(cap - 512, 1024),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(disk.read(cap - 1, &mut [0; 1]), Ok(()));
    assert_eq!(be.stats().requests, before + 1);
}

#[test]
fn large_io_is_split_into_eleven_segment_requests() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(4 << 20));
    let mut rng = Rng(5);
    let data = rng.bytes(1 << 20);
    disk.write(8192, &data).unwrap();
    let s = be.stats();
    assert_eq!(s.max_segments, 11);
    assert_eq!(s.indirect, 0);
    assert_eq!(s.writes, (256u64).div_ceil(11));
    let mut back = vec![0; data.len()];
    disk.read(8192, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(be.stats().frontend_errors, 0);
}

#[test]
fn large_io_uses_indirect_requests_when_offered() {
    let mut sim = SimConfig::disk(4 << 20);
    sim.max_indirect_segments = Some(512);
    let (_xs, be, mut disk) = setup(sim);
    // Capped by Config::max_indirect_segments (256).
    assert_eq!(disk.features().segments_per_request, 256);
    assert_eq!(disk.features().backend_indirect_segments, 512);
    let mut rng = Rng(6);
    let data = rng.bytes((1 << 20) + 1536);
    disk.write(512, &data).unwrap();
    let mut back = vec![0; data.len()];
    disk.read(512, &mut back).unwrap();
    assert_eq!(back, data);
    let s = be.stats();
    assert_eq!(s.max_segments, 256);
    // 257 pages each way: a 256-segment request, then one page.
    assert!(s.indirect >= 2, "{s:?}");
    assert_eq!(s.frontend_errors, 0);
    assert_eq!(disk.stats().indirect_requests, s.indirect);
    // Small I/O stays direct.
    let before = be.stats().indirect;
    disk.write(0, &[9; 4096]).unwrap();
    assert_eq!(be.stats().indirect, before);
}

#[test]
fn a_mib_fits_the_default_pool_in_full_size_requests() {
    // Descriptor pages come on top of the 256 data pages, so 1 MiB never leaves a tail waiting
    // for pages (it used to: 3 x 65 pages + 60 + 1 of 256, then 4 pages after a response).
    for (segs, requests) in [(256, 1), (64, 4), (32, 8)] {
        let mut sim = SimConfig::disk(4 << 20);
        sim.max_indirect_segments = Some(256);
        let config = Config {
            max_indirect_segments: segs,
            ..Config::default()
        };
        let (_xs, be, mut disk) = setup_with(sim, config);
        let data = Rng(9).bytes(1 << 20);
        disk.write(1 << 20, &data).unwrap();
        let mut back = vec![0; data.len()];
        disk.read(1 << 20, &mut back).unwrap();
        assert_eq!(back, data);
        let s = be.stats();
        assert_eq!(
            (s.writes, s.indirect),
            (requests, 2 * requests),
            "{segs}: {s:?}"
        );
        assert_eq!(s.max_segments, segs);
        assert_eq!(disk.stats().requests, 2 * requests);
    }
}

#[test]
fn indirect_requests_spanning_several_descriptor_pages() {
    let mut sim = SimConfig::disk(8 << 20);
    sim.max_indirect_segments = Some(1024);
    let config = Config {
        max_indirect_segments: 600,
        data_pages: 700,
        ..Config::default()
    };
    let (_xs, be, mut disk) = setup_with(sim, config);
    assert_eq!(disk.features().segments_per_request, 600);
    let mut rng = Rng(8);
    let data = rng.bytes(600 * 4096);
    disk.write(0, &data).unwrap();
    let mut back = vec![0; data.len()];
    disk.read(0, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(be.stats().max_segments, 600);
    assert_eq!(be.stats().frontend_errors, 0);
}

#[test]
fn large_sectors_are_aligned_and_rmw_works() {
    let mut sim = SimConfig::disk(1 << 20);
    sim.sector_size = 4096;
    let (_xs, be, mut disk) = setup(sim);
    assert_eq!((disk.sector_size(), disk.sectors()), (4096, 256));
    assert!(matches!(
        disk.read_blocks(0, &mut [0; 512]),
        Err(Error::Unaligned { .. })
    ));
    disk.write(5000, b"four k sectors").unwrap();
    let mut b = [0; 14];
    disk.read(5000, &mut b).unwrap();
    assert_eq!(&b, b"four k sectors");
    assert!(matches!(
        disk.discard(512, 4096),
        Err(Error::Unaligned { .. })
    ));
    disk.discard(4096, 4096).unwrap();
    assert_eq!(be.stats().frontend_errors, 0, "every request 4 KiB-aligned");
}

// ---- Flush, barrier, discard, read-only ------------------------------------------------------

#[test]
fn flush_barrier_and_discard_reach_the_backend() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    disk.write(0, &[7; 8192]).unwrap();
    disk.flush().unwrap();
    assert_eq!(be.stats().flushes, 1);
    disk.barrier().unwrap();
    assert_eq!(be.stats().barriers, 1);
    disk.discard(512, 1024).unwrap();
    assert_eq!(be.stats().discards, 1);
    be.with_disk(|d| {
        assert_eq!(&d[..512], &[7; 512][..]);
        assert_eq!(&d[512..1536], &[0; 1024][..]);
        assert_eq!(&d[1536..8192], &[7; 6656][..]);
    });
}

#[test]
fn features_not_offered_are_not_sent() {
    let mut sim = SimConfig::disk(1 << 20);
    sim.flush = false;
    sim.discard = false;
    sim.barrier = false;
    let (_xs, be, mut disk) = setup(sim);
    assert_eq!(disk.flush(), Ok(()), "no volatile cache: nothing to flush");
    assert_eq!(disk.barrier(), Err(Error::Unsupported(Op::WriteBarrier)));
    assert_eq!(disk.discard(0, 512), Err(Error::Unsupported(Op::Discard)));
    assert_eq!(be.stats().requests, 0);
}

#[test]
fn flush_falls_back_to_a_barrier() {
    let mut sim = SimConfig::disk(1 << 20);
    sim.flush = false;
    let (_xs, be, mut disk) = setup(sim);
    disk.flush().unwrap();
    assert_eq!((be.stats().flushes, be.stats().barriers), (0, 1));
}

#[test]
fn read_only_disks_refuse_writes_before_touching_the_ring() {
    let mut sim = SimConfig::disk(1 << 20);
    sim.info = blkfront::wire::VDISK_READONLY;
    let (_xs, be, mut disk) = setup(sim);
    assert!(disk.read_only());
    be.with_disk(|d| d[..4].copy_from_slice(b"ro!!"));
    assert_eq!(disk.write(0, b"x"), Err(Error::ReadOnly));
    assert_eq!(disk.write_blocks(0, &[0; 512]), Err(Error::ReadOnly));
    assert_eq!(disk.discard(0, 512), Err(Error::ReadOnly));
    assert_eq!(disk.barrier(), Err(Error::ReadOnly));
    assert_eq!(be.stats().requests, 0);
    let mut b = [0; 4];
    disk.read(0, &mut b).unwrap();
    assert_eq!(&b, b"ro!!");
    disk.flush().unwrap();
    assert_eq!(be.stats().frontend_errors, 0);
}

// ---- Backend misbehaviour --------------------------------------------------------------------

/// After a fault, the driver keeps working.
fn still_works(disk: &mut Disk) {
    disk.write(100_000, b"still alive").unwrap();
    let mut b = [0; 11];
    disk.read(100_000, &mut b).unwrap();
    assert_eq!(&b, b"still alive");
}

#[test]
fn io_error_response() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    be.inject(Fault::IoError);
    assert_eq!(
        disk.read_blocks(3, &mut [0; 512]),
        Err(Error::Io {
            op: Op::Read,
            sector: 3
        })
    );
    be.inject(Fault::IoError);
    assert!(matches!(
        disk.write(0, &[1; 512]),
        Err(Error::Io { op: Op::Write, .. })
    ));
    assert_eq!(disk.stats().io_errors, 2);
    still_works(&mut disk);
}

#[test]
fn io_error_in_the_middle_of_a_split_transfer_waits_for_the_rest() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    be.inject(Fault::Delay(1)); // (no effect on status)
    be.inject(Fault::IoError);
    let r = disk.read(0, &mut vec![0; 200 * 1024]);
    assert_eq!(
        r,
        Err(Error::Io {
            op: Op::Read,
            sector: 88
        })
    );
    assert_eq!(disk.in_flight(), 0, "the other requests were reaped");
    still_works(&mut disk);
}

#[test]
fn eopnotsupp_for_flush_and_discard_turns_them_off() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    be.inject(Fault::NotSupported);
    assert_eq!(disk.flush(), Err(Error::Unsupported(Op::FlushDiskcache)));
    assert!(!disk.features().flush);
    disk.flush().unwrap();
    assert_eq!(
        (be.stats().flushes, be.stats().barriers),
        (1, 1),
        "the second flush is a barrier"
    );
    be.inject(Fault::NotSupported);
    assert_eq!(disk.discard(0, 512), Err(Error::Unsupported(Op::Discard)));
    assert_eq!(disk.discard(0, 512), Err(Error::Unsupported(Op::Discard)));
    assert_eq!(be.stats().discards, 1);
    assert_eq!(disk.stats().unsupported, 2);
    still_works(&mut disk);
}

#[test]
fn response_with_an_unknown_id() {
    // An answer no request is waiting for cannot be pinned on any: it is dropped and counted,
    // and the request whose answer it garbled ends at its deadline.
    let config = Config {
        io_timeout_ns: 10_000_000,
        ..Config::default()
    };
    let (_xs, be, mut disk) = setup_with(SimConfig::disk(1 << 20), config);
    be.inject(Fault::WrongId);
    assert_eq!(disk.read(0, &mut [0; 10]), Err(Error::TimedOut));
    assert_eq!(disk.stats().bad_responses, 1);
    assert_eq!(disk.in_flight(), 1, "the unanswered request keeps its slot");
    still_works(&mut disk);
}

#[test]
fn response_with_the_wrong_operation() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    be.inject(Fault::WrongOperation);
    assert_eq!(
        disk.read(0, &mut [0; 10]),
        Err(Error::Backend(BackendError::WrongOperation {
            expected: 0,
            got: 1
        }))
    );
    assert_eq!(disk.in_flight(), 0);
    still_works(&mut disk);
}

#[test]
fn response_with_a_status_that_is_no_status() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    be.inject(Fault::Status(-77));
    assert_eq!(
        disk.flush(),
        Err(Error::Backend(BackendError::BadStatus(-77)))
    );
    assert_eq!(disk.stats().bad_responses, 1);
    still_works(&mut disk);
}

#[test]
fn garbage_rsp_prod_then_recovery() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    be.inject(Fault::GarbageRspProd);
    assert!(matches!(
        disk.read(0, &mut [0; 10]),
        Err(Error::Backend(BackendError::BadResponseIndex { .. }))
    ));
    assert_eq!(disk.stats().bad_responses, 1);
    // The backend puts the index right; the abandoned read's response is reaped late.
    be.step();
    still_works(&mut disk);
    assert_eq!(disk.stats().late_responses, 1);
    assert_eq!(disk.in_flight(), 0);
}

#[test]
fn responses_never_requested_are_errors_not_panics() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    be.inject(Fault::Unsolicited);
    let r = disk.read(0, &mut [0; 10]);
    // The first response completes the read; the extra one is beyond what we requested.
    assert!(matches!(r, Ok(()) | Err(Error::Backend(_))), "{r:?}");
    let r = disk.read(0, &mut [0; 10]);
    assert!(matches!(r, Err(Error::Backend(_))), "{r:?}");
    assert!(disk.stats().bad_responses >= 1);
    // The ring is now skewed by one response: documented as needing a reconnect; nothing
    // panics meanwhile.
    for _ in 0..10 {
        let _ = disk.read(0, &mut [0; 10]);
    }
}

#[test]
fn delayed_responses_are_waited_for() {
    let (_xs, be, mut disk) = setup(SimConfig::disk(1 << 20));
    be.inject(Fault::Delay(20));
    disk.write(0, b"slow").unwrap();
    assert_eq!(disk.stats().timeouts, 0);
    still_works(&mut disk);
}

#[test]
fn responses_later_than_the_timeout_are_reaped_afterwards() {
    let config = Config {
        io_timeout_ns: 10_000_000, // ten simulated waits
        ..Config::default()
    };
    let (_xs, be, mut disk) = setup_with(SimConfig::disk(1 << 20), config);
    be.inject(Fault::Delay(30));
    assert_eq!(disk.read(0, &mut [0; 10]), Err(Error::TimedOut));
    assert_eq!(disk.in_flight(), 1);
    for _ in 0..30 {
        be.step();
    }
    still_works(&mut disk);
    assert_eq!(disk.stats().late_responses, 1);
    assert_eq!(disk.in_flight(), 0);
}

#[test]
fn a_request_never_answered_times_out_and_the_rest_goes_on() {
    let config = Config {
        io_timeout_ns: 10_000_000,
        data_pages: 4,
        ..Config::default()
    };
    let (_xs, be, mut disk) = setup_with(SimConfig::disk(1 << 20), config);
    be.inject(Fault::Drop);
    assert_eq!(disk.flush(), Err(Error::TimedOut));
    be.inject(Fault::Drop);
    assert_eq!(disk.write(0, &[1; 4096]), Err(Error::TimedOut));
    assert_eq!(disk.stats().timeouts, 2);
    // One of four pages is held by the dropped write: I/O goes on with three.
    let data = vec![5u8; 64 * 1024];
    disk.write(4096, &data).unwrap();
    let mut back = vec![0; data.len()];
    disk.read(4096, &mut back).unwrap();
    assert_eq!(back, data);
}

// ---- Workloads ---------------------------------------------------------------------------------

fn random_workload(sim: SimConfig, config: Config, seed: u64, ops: usize) {
    let size = (sim.wire_sectors * 512) as usize;
    let (_xs, be, mut disk) = setup_with(sim, config);
    let ss = disk.sector_size() as u64;
    let mut model = vec![0u8; size];
    let mut rng = Rng(seed);
    for i in 0..ops {
        let len = match rng.below(4) {
            0 => rng.below(16) + 1,
            1 => rng.below(8192) + 1,
            2 => rng.below(64 * 1024) + 1,
            _ => rng.below(300 * 1024) + 1,
        }
        .min(size as u64);
        let off = rng.below(size as u64 - len + 1);
        match rng.below(10) {
            0..=3 => {
                let data = rng.bytes(len as usize);
                disk.write(off, &data).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            4..=7 => {
                let mut back = vec![0; len as usize];
                disk.read(off, &mut back).unwrap();
                assert!(
                    back == model[off as usize..(off + len) as usize],
                    "op {i}: read {len} at {off}"
                );
            }
            8 => {
                let lba = off / ss;
                let n = (len / ss).max(1).min(size as u64 / ss - lba);
                let data = rng.bytes((n * ss) as usize);
                disk.write_blocks(lba, &data).unwrap();
                model[(lba * ss) as usize..((lba + n) * ss) as usize].copy_from_slice(&data);
            }
            _ => {
                let lba = off / ss;
                let n = (len / ss).max(1).min(size as u64 / ss - lba);
                disk.discard(lba * ss, n * ss).unwrap();
                model[(lba * ss) as usize..((lba + n) * ss) as usize].fill(0);
                disk.flush().unwrap();
            }
        }
    }
    be.with_disk(|d| assert!(*d == model, "final disk differs from the model"));
    assert_eq!(be.stats().frontend_errors, 0);
    assert_eq!(disk.stats().bad_responses, 0);
    assert_eq!(disk.in_flight(), 0);
}

#[test]
fn randomized_workload_matches_a_model() {
    random_workload(SimConfig::disk(2 << 20), Config::default(), 11, 300);
}

#[test]
fn randomized_workload_with_indirect_multi_page_and_4k_sectors() {
    let mut sim = SimConfig::disk(2 << 20);
    sim.sector_size = 4096;
    sim.max_ring_page_order = Some(1);
    sim.max_indirect_segments = Some(32);
    let config = Config {
        data_pages: 40,
        ..Config::default()
    };
    random_workload(sim, config, 12, 300);
}

#[test]
fn randomized_workload_with_a_tiny_pool() {
    let config = Config {
        data_pages: 2,
        ..Config::default()
    };
    random_workload(SimConfig::disk(1 << 20), config, 13, 150);
}

#[test]
fn pseudo_random_responses_never_panic() {
    for seed in 1..=20u64 {
        let mut sim = SimConfig::disk(1 << 20);
        sim.max_indirect_segments = Some(64);
        sim.max_ring_page_order = Some(1);
        let config = Config {
            io_timeout_ns: 20_000_000,
            ..Config::default()
        };
        let (mut xs, be, mut disk) = setup_with(sim, config);
        be.set_chaos(Some(seed));
        let mut rng = Rng(seed * 7919);
        for _ in 0..60 {
            let len = rng.below(100 * 1024) + 1;
            let off = rng.below((1 << 20) - len);
            let r = match rng.below(5) {
                0 => disk.write(off, &rng.bytes(len as usize)),
                1 => disk.flush(),
                2 => disk.discard(off / 512 * 512, 512),
                _ => disk.read(off, &mut vec![0; len as usize]),
            };
            if let Err(e) = r {
                // Every error is typed and prints.
                assert!(!e.to_string().is_empty());
            }
            be.step();
        }
        assert!(disk.stats().bad_responses + disk.stats().io_errors > 0);
        // Whatever state it is in, closing works and nothing leaks that the backend does
        // not hold.
        disk.disconnect(&mut xs, &mut Never).unwrap();
        assert!(!be.connected());
    }
}
