//! Fuzzes the shared ring consumer ([`xen::ring::FrontRing`]) against a hostile backend: the
//! input picks the ring's memory size and entry size, then a sequence of moves, ours (queue,
//! push, take, final check) and the backend's (any response producer index, any event index,
//! any bytes anywhere in the shared page). Checked after every move: the ring never reads or
//! writes a slot outside its memory or other than the next one in order, never hands out more
//! responses than requests were made, and its free/in-flight counts stay within the ring.
//! Run with `scripts/fuzz 60 ring`.
#![no_main]

use core::sync::atomic::Ordering;
use libfuzzer_sys::fuzz_target;
use xen::ring::{FrontRing, RingError, HEADER};
use xen::shmem::ShMem;

/// Reads the input byte by byte (zeros once it runs out).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

const RSP_PROD: usize = 8;
const REQ_EVENT: usize = 4;
const RSP_EVENT: usize = 12;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let len = match input.u8() {
        b if b & 0x80 != 0 => usize::from(b & 0x7f) * 3,
        b => 4096 << (b & 3),
    };
    let entry_size = match input.u8() {
        0 => 8,
        1 => 12,
        2 => 16,
        3 => 112,
        b => usize::from(b),
    };
    let mem = ShMem::new(len);
    let Ok(mut front) = FrontRing::new(mem.clone(), entry_size) else {
        assert!(
            len < HEADER + entry_size,
            "{len} bytes fit a slot of {entry_size}"
        );
        return;
    };
    let size = front.size();
    assert!(size.is_power_of_two());
    assert!(HEADER + size as usize * entry_size <= len);
    let slot = |idx: u32| HEADER + (idx & (size - 1)) as usize * entry_size;
    // Our model of the consumer: requests queued, responses taken.
    let (mut queued, mut taken) = (0u32, 0u32);
    while !input.0.is_empty() {
        match input.u8() % 9 {
            0 => {
                let r = front.queue_request(|m, off| {
                    assert_eq!(off, slot(queued), "request written out of order");
                    assert!(off + entry_size <= m.len());
                    m.write(off, &queued.to_le_bytes()[..entry_size.min(4)])
                });
                match r {
                    Ok(idx) => {
                        assert_eq!(idx, queued);
                        queued = queued.wrapping_add(1);
                    }
                    Err(RingError::Full) => assert_eq!(queued.wrapping_sub(taken), size),
                    Err(e) => panic!("queue: {e}"),
                }
            }
            1 => {
                front.push_requests().unwrap();
            }
            2 => {
                let rsp = front.take_response(|m, off| {
                    assert_eq!(off, slot(taken), "response read out of order");
                    assert!(
                        off >= HEADER && off + entry_size <= m.len(),
                        "slot outside ring"
                    );
                    let mut b = vec![0; entry_size];
                    m.read(off, &mut b)?;
                    Ok(b)
                });
                match rsp {
                    Ok(Some(_)) => {
                        taken = taken.wrapping_add(1);
                        assert!(
                            queued.wrapping_sub(taken) <= size,
                            "more responses than requests"
                        );
                    }
                    Ok(None) | Err(RingError::BadResponseIndex { .. }) => {}
                    Err(e) => panic!("take: {e}"),
                }
            }
            // The backend: any response index, or one near ours, or any event index.
            3 => mem
                .store_u32(RSP_PROD, input.u32(), Ordering::Release)
                .unwrap(),
            4 => {
                let v = taken.wrapping_add(u32::from(input.u8()) % (size + 2));
                mem.store_u32(RSP_PROD, v, Ordering::Release).unwrap();
            }
            5 => mem
                .store_u32(REQ_EVENT, input.u32(), Ordering::Release)
                .unwrap(),
            // Any bytes anywhere (header and slots).
            6 => {
                let off = input.u32() as usize % len;
                let n = usize::from(input.u8() % 16).min(len - off);
                let bytes: Vec<u8> = (0..n).map(|_| input.u8()).collect();
                mem.write(off, &bytes).unwrap();
            }
            7 => {
                if let Ok(false) = front.final_check_for_responses() {
                    let ev = mem.load_u32(RSP_EVENT, Ordering::Acquire).unwrap();
                    assert_eq!(
                        ev,
                        taken.wrapping_add(1),
                        "rsp_event is not the next response"
                    );
                }
            }
            _ => {
                if let Ok(n) = front.unconsumed_responses() {
                    assert!(n <= queued.wrapping_sub(taken), "{n} responses ready");
                }
            }
        }
        assert_eq!(front.in_flight(), queued.wrapping_sub(taken));
        assert!(front.in_flight() <= size);
        assert_eq!(front.free_requests() + front.in_flight(), size);
    }
});
