//! Fuzzes the driver against a backend writing arbitrary bytes: each 10-byte chunk of input is one
//! backend move (an RX response, a TX response, or a response index) or a frame sent (plain or
//! GSO, whose extra slot is answered `NETIF_RSP_NULL`), and the driver must never panic nor
//! leak a buffer. Run with `cargo fuzz run rx_responses` from `netfront/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netfront::wire::{RxRequest, TxRequest, RX_ENTRY_SIZE, TX_ENTRY_SIZE};
use netfront::{Config, Netfront};
use xen::hal::SimHal;
use xen::ring::BackRing;

fuzz_target!(|data: &[u8]| {
    let hal = SimHal::new();
    let config = Config {
        rx_buffers: 16,
        tx_pages: 2,
        sg: true,
        // Offload on: unflagged frames go through the driver's checksum check.
        csum_offload: true,
        gso: true,
        // Transmit GSO on: a GSO extra is outstanding whenever a large frame is sent.
        tso: true,
    };
    let Ok(mut nf) = Netfront::new(hal.clone(), 0, [0, 0x16, 0x3e, 0, 0, 1], config) else {
        return;
    };
    let (rx_mem, tx_mem) = {
        let mut s = hal.state.lock();
        (
            s.map_grant(nf.rx_ring_ref(), 0).unwrap().0,
            s.map_grant(nf.tx_ring_ref(), 0).unwrap().0,
        )
    };
    let mut rx = BackRing::new(rx_mem, RX_ENTRY_SIZE);
    let mut tx = BackRing::new(tx_mem, TX_ENTRY_SIZE);
    let (mut rx_pending, mut tx_pending) = (0usize, 0usize);
    for op in data.chunks_exact(10) {
        while let Ok(Some(_)) = rx.take_request(RxRequest::read) {
            rx_pending += 1;
        }
        while let Ok(Some(_)) = tx.take_request(TxRequest::read) {
            tx_pending += 1;
        }
        let bytes: [u8; 8] = op[2..10].try_into().unwrap();
        match op[0] % 6 {
            0 | 1 if rx_pending > 0 => {
                rx_pending -= 1;
                let _ = rx.queue_response(|m, o| m.write(o, &bytes));
                let _ = rx.push_responses();
            }
            2 if tx_pending > 0 => {
                tx_pending -= 1;
                let _ = tx.queue_response(|m, o| m.write(o, &bytes[..4]));
                let _ = tx.push_responses();
            }
            3 => {
                let _ = rx.force_rsp_prod(u32::from_le_bytes(bytes[..4].try_into().unwrap()));
            }
            4 => {
                let _ = tx.force_rsp_prod(u32::from_le_bytes(bytes[..4].try_into().unwrap()));
            }
            _ => {
                if op[1] & 1 == 0 {
                    let len = 14 + usize::from(op[1]) * 8;
                    let _ = nf.send(&vec![op[1]; len]);
                } else {
                    // A GSO frame: one more ring slot (the extra), answered NETIF_RSP_NULL.
                    let len = 1515 + usize::from(op[1]) * 10;
                    let _ = nf.send_gso(&vec![op[1]; len], Some(1448));
                }
                let _ = rx.push_responses();
                let _ = tx.push_responses();
            }
        }
        for _ in 0..64 {
            match nf.receive() {
                Ok(None) => break,
                Ok(Some(f)) => assert!(f.len() >= netfront::MIN_FRAME),
                Err(e) => assert!(
                    e.is_backend_fault() || e == netfront::Error::RxBadChecksum,
                    "{e}"
                ),
            }
        }
        let _ = nf.reclaim_tx();
        assert!(nf.rx_posted() <= 16);
    }
});
