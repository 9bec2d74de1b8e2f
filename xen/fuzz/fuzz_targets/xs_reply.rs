//! Fuzzes the xenstore reply parser and the payload decoders: bytes from xenstored must never
//! panic. Run with `cargo fuzz run xs_reply` from `xen/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xen::xenstore::wire;

fuzz_target!(|data: &[u8]| {
    let _ = wire::parse(data);
    let _ = wire::strings(data);
    let _ = wire::number(data);
    let _ = wire::parse_perms(data);
    let _ = wire::parse_errno(data);
});
