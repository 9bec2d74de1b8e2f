//! Fuzzes the blkif request/response images: any 112 bytes parse or are refused, and what parses
//! emits back to an image that parses the same. Run with `cargo fuzz run request_parse` from
//! `blkfront/`.
#![no_main]

use blkfront::wire::{Request, Response, REQUEST_LEN, RESPONSE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut image = [0u8; REQUEST_LEN];
    let n = data.len().min(REQUEST_LEN);
    image[..n].copy_from_slice(&data[..n]);
    if let Ok(req) = Request::parse(&image) {
        assert_eq!(Request::parse(&req.emit()), Ok(req));
    }
    let mut rsp = [0u8; RESPONSE_LEN];
    rsp.copy_from_slice(&image[..RESPONSE_LEN]);
    let r = Response::parse(&rsp);
    assert_eq!(Response::parse(&r.emit()), r);
});
