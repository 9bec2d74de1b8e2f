//! The lab tier for PVH guests (issue 16): the PV lab checks, booted with `type="pvh"` on the
//! same images. The cases are the PV files' own checks (`xen_tests::checks`, shared with
//! `lab.rs`, `net.rs`, `http.rs` and `blk.rs`), each given the guest type as an extra .xl line:
//!
//! - the entry: the test kernel, always `type="pvh"`, boots from its 32-bit entry to its test,
//!   which reads its domid and name from xenstore, prints them on the console ring and powers
//!   off; the entry's own failure reports (Xen's HVM debug port 0xe9, `(dN) xenrt pvh: ...` in
//!   `xl dmesg`) must be absent;
//! - what only PVH does itself, with the test kernel: the memory map from `XENMEM_memory_map`
//!   (the fallback for a hvm_start_info without one) equals hvm_start_info's; ring-0 W^X faults
//!   and a stack overflow reported from the IST stack at the guard-page address; the one-shot
//!   timer (PV too); 1000 blocks with an event pending;
//! - hello (console + poweroff), a bad command line (reported, hello runs on), a panic (ends
//!   crashed with its message);
//! - net, one echo guest: DHCP lease, ping both ways, a 100 MB echo compared byte for byte,
//!   hostile frames (rawstorm's garbage and one class of the valid-checksum adversary), then `xl
//!   shutdown` of the networked guest;
//! - http, one httpd guest: GET (by md5), HEAD, 404, 405, ETag 304, a 3 s wrk with no error,
//!   then `xl shutdown`;
//! - blk: read what dom0 wrote, write + flush then `xl destroy` (the bytes are in the file), a
//!   read-only disk refusing writes;
//! - `xl shutdown`, `xl reboot`, `xl destroy` of a running guest.
//!
//! `PVH_SET_TYPE` (default `pvh`) is the guest type of every case but the entry one:
//! `PVH_SET_TYPE=pv` runs the same set as PV guests, which shows the cases themselves are right
//! on today's kernel.
//!
//! Needs a lab whose Xen offers HVM: QEMU 7.2's `qemu64` (the lab's default CPU) includes SVM,
//! so the default lab does (Xen: "HVM: SVM enabled", shadow paging). On a lab without it (a CPU
//! model with neither SVM nor VMX) the file says so and is skipped (exit 0); with
//! `PVH_SET_TYPE=pv` only the entry case is left out there.

use std::sync::OnceLock;
use xen_tests::case;
use xen_tests::checks::{basic, blk, http, net};
use xen_tests::lab::{expect, lab, Guest};

/// The set's guest type: `PVH_SET_TYPE`, default `pvh`.
fn guest_type() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| std::env::var("PVH_SET_TYPE").unwrap_or_else(|_| "pvh".into()))
}

/// The .xl line that makes a guest of the set's type, as the `more` of a check.
fn ty() -> &'static [&'static str] {
    static L: OnceLock<[&'static str; 1]> = OnceLock::new();
    L.get_or_init(|| {
        [Box::leak(
            format!("type=\"{}\"", guest_type()).into_boxed_str(),
        )]
    })
}

/// The echo guest's MAC index (10.0.0.168) and the httpd guest's MAC and address (udhcpd's
/// static leases: 00:16:3e:00:00:NN -> 10.0.0.(100+NN) for NN 0x01..0x63).
const ECHO_NN: u8 = 0x44;
const HTTPD_MAC: &str = "00:16:3e:00:00:45";
const HTTPD_IP: &str = "10.0.0.169";

/// One echo guest (DHCP, pinging dom0) shared by the net cases.
fn echo() -> Result<&'static (Guest, String), String> {
    static S: OnceLock<Result<(Guest, String), String>> = OnceLock::new();
    S.get_or_init(|| net::start_echo(ECHO_NN, "log=info ping=10.0.0.1", ty()))
        .as_ref()
        .map_err(|e| e.clone())
}

/// One httpd guest (DHCP, logging each request) shared by the http cases.
fn httpd() -> Result<&'static Guest, String> {
    static S: OnceLock<Result<Guest, String>> = OnceLock::new();
    S.get_or_init(|| http::start_httpd(HTTPD_MAC, "log=info idle=5", ty()))
        .as_ref()
        .map_err(|e| e.clone())
}

/// Ok(true) when the lab's Xen can run HVM/PVH guests (`hvm` in `xl info`'s xen_caps).
fn lab_has_hvm() -> Result<bool, String> {
    let r = lab(&["exec", "xl info"])?;
    if r.code != Some(0) {
        return Err(format!("xl info failed: {}", r.output));
    }
    Ok(r.output
        .lines()
        .any(|l| l.starts_with("xen_caps") && l.contains("hvm")))
}

fn main() {
    xen_tests::lab::start_or_exit();
    let hvm = match lab_has_hvm() {
        Ok(hvm) => hvm,
        Err(e) => {
            println!("pvh: {e}\npvh: 0 passed, 1 failed");
            xen_tests::lab::finish(false)
        }
    };
    if !hvm && guest_type() != "pv" {
        println!(
            "pvh: skipped: the lab's Xen offers no hvm (its CPU model has neither SVM nor VMX)"
        );
        xen_tests::lab::finish(true)
    }
    println!(
        "pvh: the set's guests are type=\"{}\" (PVH_SET_TYPE)",
        guest_type()
    );
    let mut cases = Vec::new();
    if hvm {
        cases.push(case(
            "pvh_entry_boots_the_test_kernel_to_main_and_xenstore",
            || {
                // Always type="pvh", whatever PVH_SET_TYPE says: the same ELF through its 32-bit
                // entry (hvm_start_info, hypercall page by MSR, our page tables) to the app, whose
                // console and xenstore come from the HVM params; no `(dN) xenrt pvh:` line (the
                // entry's debug-port reports of a failure) may be in `xl dmesg`.
                let g = Guest::start_with(
                    "testkernel",
                    "test=xenstore",
                    &["type=\"pvh\"", "memory=32"],
                )?;
                let domid = g.domid();
                let end = g.wait(60)?;
                let c = g.console()?;
                let dmesg = lab(&["exec", "xl dmesg"])?.output;
                let mine: String = dmesg
                    .lines()
                    .filter(|l| l.starts_with(&format!("(d{domid}) xenrt pvh:")))
                    .map(|l| format!("{l}\n"))
                    .collect();
                if !mine.is_empty() {
                    return Err(format!("the PVH entry reported:\n{mine}\n{c}"));
                }
                expect(&c, &format!("TEST xenstore: domid={domid} name={}", g.name))?;
                if end != "poweroff" {
                    return Err(format!("ended with {end}, not poweroff:\n{c}"));
                }
                Ok(String::new())
            },
        ));
    }
    if hvm {
        cases.push(case(
            "pvh_memory_map_from_xenmem_memory_map_is_hvm_start_info_s",
            || {
                // The boot's fallback for a hvm_start_info without a memory map (version 0:
                // Xen before 4.11) is XENMEM_memory_map; on this Xen both exist, and the test
                // kernel checks they are the same list, in a domain with a memory size that is
                // not a multiple of 2 MiB.
                let g =
                    Guest::start_with("testkernel", "test=memmap", &["type=\"pvh\"", "memory=33"])?;
                let end = g.wait(60)?;
                let c = g.console()?;
                expect(&c, "TEST memmap: PASS")?;
                expect(&c, "boot used StartInfo, version 1")?;
                expect(&c, "TEST memmap: e820 0x0+")?;
                if end != "poweroff" {
                    return Err(format!("ended with {end}, not poweroff:\n{c}"));
                }
                Ok(c.lines()
                    .filter(|l| l.contains("TEST memmap: "))
                    .map(|l| format!("[{}] ", l.trim()))
                    .collect())
            },
        ));
        cases.push(case("pvh_faults_report_w_x_and_the_guard_page", || {
            // W^X and the guard page hold in ring 0 too (CR0.WP, NX), and the fault handler
            // reports from its own IST stack: unlike a PV guest, whose overflow only Xen can
            // report, a PVH guest names the guard-page address itself.
            let tk = |test: &str| -> Result<String, String> {
                let g = Guest::start_with(
                    "testkernel",
                    &format!("test={test}"),
                    &["type=\"pvh\"", "memory=32"],
                )?;
                let end = g.wait(60)?;
                let c = g.console()?;
                if end != "crash" {
                    return Err(format!("test={test} ended with {end}, not crash:\n{c}"));
                }
                Ok(c)
            };
            let c = tk("write-text")?;
            expect(&c, "xenrt: FATAL page fault (vector 14)")?;
            expect(&c, "write to a read-only page")?;
            expect(&c, "xenrt:   #1 ")?;
            let c = tk("exec-data")?;
            expect(&c, "instruction fetch from a non-executable page")?;
            let guard = xen_tests::symbol("testkernel", "boot_stack_guard")?;
            let c = tk("stack-overflow")?;
            let line = c
                .lines()
                .find(|l| l.contains("xenrt: page fault at address "))
                .ok_or(format!("no fault address reported:\n{c}"))?;
            let addr = line
                .split("address ")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                .ok_or(format!("unreadable: {line}"))?;
            if !(guard..guard + 4096).contains(&addr) {
                return Err(format!("fault at {addr:#x}, guard page is {guard:#x}"));
            }
            expect(&c, "write to an unmapped page")?;
            Ok(format!(
                "[overflow reported at {addr:#x} in guard page {guard:#x}]"
            ))
        }));
        cases.push(case("pvh_timer_and_blocking_with_an_event_pending", || {
            // The one-shot timer (VCPUOP_set_singleshot_timer: HVM guests have no
            // set_timer_op) wakes the idle loop at its deadline, in a PVH and (the same clock
            // code) a PV domU: no more than 250 ms late at worst (a clock frozen until Xen's
            // first update made it ~1 s once; the margin is for a loaded 2-core host, where
            // TCG's vCPU thread can wait for a core: tens of ms, not a second); and a block
            // with an event pending returns at once (the idle `sti; hlt` and the event
            // vector), 1000 times.
            let mut out = String::new();
            for (test, ty, pass) in [
                ("timer", "pvh", "TEST timer: PASS"),
                ("timer", "pv", "TEST timer: PASS"),
                ("block-pending", "pvh", "TEST block-pending: PASS"),
            ] {
                let g = Guest::start_with(
                    "testkernel",
                    &format!("test={test}"),
                    &[&format!("type=\"{ty}\""), "memory=32"],
                )?;
                let end = g.wait(60)?;
                let c = g.console()?;
                expect(&c, pass)?;
                if end != "poweroff" {
                    return Err(format!("test={test} ended with {end}:\n{c}"));
                }
                if let Some(l) = c.lines().find(|l| l.contains(pass)) {
                    if let Some(late) = l
                        .split("late_us=")
                        .nth(1)
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        if late > 250_000 {
                            return Err(format!("{ty}: the timer fired {late} us late"));
                        }
                    }
                    out.push_str(&format!("[{ty} {}] ", l.trim()));
                }
            }
            Ok(out)
        }));
    }
    cases.extend([
        case("hello_prints_through_the_console_and_powers_off", || {
            basic::hello_prints_and_powers_off(ty())
        }),
        case("bad_cmdline_is_reported", || {
            basic::bad_extra_is_reported(ty())
        }),
        case("panicking_guest_ends_crashed_with_its_message", || {
            basic::panic_ends_crashed(ty())
        }),
        case("net_dhcp_lease_from_dom0", || {
            let (g, ip) = echo()?;
            net::dhcp_lease(g, ECHO_NN, ip)
        }),
        case("net_ping_dom0_to_guest_and_guest_to_dom0", || {
            let (g, ip) = echo()?;
            net::ping_both_ways(g, ip)
        }),
        case("net_tcp_echo_of_100_mb_byte_for_byte", || {
            net::echo_100_mb(&echo()?.1)
        }),
        case("net_garbage_frame_storm_leaves_echo_answering", || {
            let (g, ip) = echo()?;
            net::garbage_frame_storm(g, ECHO_NN, ip)
        }),
        case("net_adversary_tcpflags_leaves_echo_answering", || {
            let (g, ip) = echo()?;
            net::adversary_class(g, ECHO_NN, ip, "tcpflags", 20_000)
        }),
        case("net_xl_shutdown_powers_off_the_networked_guest", || {
            echo()?.0.shutdown_cleanly()
        }),
        case("http_get_head_404_405_etag", || {
            http::get_head_404_405_and_etag(httpd()?, HTTPD_IP)
        }),
        case("http_wrk_100_clients_without_errors", || {
            httpd()?;
            http::wrk_without_errors(HTTPD_IP, 3)
        }),
        case("http_xl_shutdown_stops_httpd_cleanly", || {
            httpd()?.shutdown_cleanly()
        }),
        case("blk_reads_what_dom0_wrote", || {
            blk::reads_what_dom0_wrote(ty())
        }),
        case("blk_flushed_writes_survive_xl_destroy", || {
            blk::flushed_writes_survive_xl_destroy(ty())
        }),
        case("blk_read_only_disk_refuses_writes", || {
            blk::read_only_disk_refuses_writes(ty())
        }),
        case("xl_shutdown_powers_the_guest_off", || {
            basic::xl_shutdown_powers_the_guest_off(ty())
        }),
        case("xl_reboot_restarts_the_guest", || {
            basic::xl_reboot_restarts_the_guest(ty())
        }),
        case("xl_destroy_stops_a_running_guest", || {
            basic::xl_destroy_stops_a_running_guest(ty())
        }),
    ]);
    let start = std::time::Instant::now();
    let ok = xen_tests::run_cases("pvh", cases, 1);
    println!(
        "pvh: the set took {:.0} s of lab time (guests type=\"{}\")",
        start.elapsed().as_secs_f64(),
        guest_type()
    );
    xen_tests::lab::finish(ok)
}
