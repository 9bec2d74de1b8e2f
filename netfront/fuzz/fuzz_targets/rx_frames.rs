//! Fuzzes the receive checks on packet contents: each input is a frame the simulated netback
//! delivers (first byte: the first slot's checksum flags, whether offload is on, whether a GSO
//! extra follows the first slot and of which type; second: the slot size, or with GSO the
//! segment size; the rest: the frame), so the driver's TCP/UDP checksum and GSO frame checks
//! parse arbitrary bytes. It must never panic; a frame handed up is the one sent. Run with
//! `cargo fuzz run rx_frames` from `netfront/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netfront::sim::{Fault, SimNetback};
use netfront::wire::{ExtraInfo, EXTRA_TYPE_GSO, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED};
use netfront::{Config, Netfront};
use xen::hal::SimHal;

fuzz_target!(|data: &[u8]| {
    let [mode, split, frame @ ..] = data else {
        return;
    };
    let config = Config {
        rx_buffers: 8,
        tx_pages: 1,
        csum_offload: mode & 4 != 0,
        ..Config::default()
    };
    let hal = SimHal::new();
    let mut nf = Netfront::new(hal.clone(), 0, [0, 0x16, 0x3e, 0, 0, 1], config).unwrap();
    let mut nb = SimNetback::attach(&hal, 0, nf.tx_ring_ref(), nf.rx_ring_ref()).unwrap();
    nb.step();
    let flags = u16::from(mode & 3) & (NETRXF_DATA_VALIDATED | NETRXF_CSUM_BLANK);
    nb.inject(Fault::RxFlags(flags));
    nb.inject(Fault::RxSplit(usize::from(*split).max(1) * 16));
    if mode & 8 != 0 {
        // A GSO extra as netback writes it: type TCPV4/TCPV6 (or another, from bits 4-5).
        let kind = (mode >> 4) & 3;
        nb.inject(Fault::RxExtra(ExtraInfo {
            kind: EXTRA_TYPE_GSO,
            flags: 0,
            data: [*split, 0, kind, 0, 0, 0],
        }));
    }
    nb.send_to_guest(frame);
    nb.step();
    match nf.receive() {
        Ok(Some(got)) => assert_eq!(got, frame),
        // Not enough buffers posted for that many slots: the backend waits.
        Ok(None) => {}
        Err(e) => assert!(
            e.is_backend_fault() || e == netfront::Error::RxBadChecksum,
            "{e}"
        ),
    }
});
