//! hello: prints `Hello from Xen X.Y`, the guest's memory, its command line and the time from
//! entry to `main`, then powers off.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

xen::main!(main);

fn main() {
    let (major, minor) = xen::version();
    let boot = xen::boot::info();
    xen::println!("Hello from Xen {major}.{minor}");
    xen::println!(
        "memory: {} MiB",
        boot.start_info.nr_pages * 4096 / (1024 * 1024)
    );
    let cmdline = core::str::from_utf8(boot.start_info.cmdline()).unwrap_or("(not UTF-8)");
    xen::println!("command line: {}", xen::console::Quoted(cmdline));
    xen::println!("entry to main: {} us", boot.entry_to_main_ns / 1000);
}
