//! The dom0 tier: each case boots real Xen 4.17 in QEMU with one of our kernels as dom0 (about
//! 2 s; 8 s for a crash, which Xen answers with a 5 s reboot delay) and checks what it printed
//! on the serial console and how it ended.

use xen_tests::{boot_dom0, case, symbol, symbolized, Run};

/// The clean-exit marker our runtime prints before SCHEDOP_shutdown.
const POWEROFF: &str = "xenrt: exit poweroff";
/// Xen's message when dom0 crashes.
const DOM0_CRASHED: &str = "Hardware Dom0 crashed";

fn powered_off(r: &Run) -> Result<(), String> {
    r.expect(POWEROFF)?;
    r.reject(DOM0_CRASHED)?;
    r.expect("Hardware Dom0 shutdown")
}

fn crashed(r: &Run) -> Result<(), String> {
    r.reject(POWEROFF)?;
    r.expect(DOM0_CRASHED)
}

fn test_kernel(name: &str) -> Result<Run, String> {
    boot_dom0("testkernel", &format!("test={name}"))
}

/// The most bytes the stripped hello image may take: the runtime's fixed cost. 64 KiB from
/// issue 11 until every image carried two boot paths (PV and PVH, issue 16: 76,272 bytes).
const HELLO_MAX_BYTES: u64 = 80 * 1024;

fn main() {
    let cases = vec![
        case("hello_image_is_at_most_80_kib", || {
            let img = xen_tests::image("hello")?;
            let size = std::fs::metadata(&img)
                .map_err(|e| format!("{}: {e}", img.display()))?
                .len();
            if size > HELLO_MAX_BYTES {
                return Err(format!(
                    "{} is {size} bytes, over {HELLO_MAX_BYTES}: `scripts/size hello` shows where they go",
                    img.display()
                ));
            }
            Ok(format!("[{size} bytes]"))
        }),
        // A plain std program (x86_64-unknown-hermit std over the hermit crate): console, args
        // after `--`, heap, clocks, and its exit status and panics ending the domain.
        case("std_hello_runs_and_powers_off", || {
            let r = boot_dom0(
                "std-hello",
                "log=info -- GREETING=hi RUST_MIN_STACK=131072 one a=b",
            )?;
            r.expect("Hello from std on xenrt")?;
            r.expect(r#"args: ["xenrt", "one", "a=b"]"#)?;
            r.expect(r#"env: [("GREETING", "hi"), ("RUST_MIN_STACK", "131072")]"#)?;
            r.expect("sum 1..=1000 = 500500")?;
            r.expect("unix time: ")?;
            r.expect("threads joined: [10, 20, 30, 40]")?;
            r.expect("mutex counter: 4000")?;
            r.expect("condvar handshake: 2")?;
            r.expect("mpsc received 300 messages, sum 314850")?;
            r.expect(", ok")?;
            r.expect("condvar wait_timeout timed out: true")?;
            r.expect("spinner stopped (it spun)")?;
            r.reject("TOO SHORT")?;
            // std::fs: the baked files (apps/std-hello/files) and the writable tree.
            r.expect(r#"baked file: "baked into the image""#)?;
            r.expect("baked numbers sum: 32")?;
            r.expect("baked metadata: 21 bytes, file true, read-only true")?;
            r.expect(r#"root: ["data", "greeting.txt"]"#)?;
            r.expect("write to baked file: Read-only file system (os error 30)")?;
            r.expect("remove baked file: Read-only file system (os error 30)")?;
            r.expect(r#"read back: "one\ntwo\n""#)?;
            r.expect(r#"after seek: "two\n""#)?;
            r.expect("metadata: 8 bytes, file true, dir true")?;
            r.expect("read_dir: notes.txt (file) sub (dir)")?;
            // std's hermit port has no rename (library/std/src/sys/fs/hermit.rs).
            r.expect("rename: operation not supported")?;
            r.expect("create_dir again: AlreadyExists")?;
            r.expect("remove_dir of a full directory: Directory not empty (os error 39)")?;
            r.expect(r#"unlinked but open: "one\ntwo\n", name gone: true"#)?;
            r.expect("removed: NotFound")?;
            r.reject("(wrong)")?;
            r.reject("STILL THERE")?;
            r.reject("files: FAILED")?;
            r.expect("took ")?;
            powered_off(&r)?;
            Ok(format!("[wall {:.2} s]", r.elapsed.as_secs_f64()))
        }),
        case("std_hello_exit_status_and_panic_crash_the_domain", || {
            let r = boot_dom0("std-hello", "-- exit 3")?;
            r.expect("xenrt: exit status 3")?;
            crashed(&r)?;
            let r = boot_dom0("std-hello", "-- panic")?;
            r.expect("panicked at")?;
            r.expect("xenrt: abort")?;
            // A backtrace through std's panic machinery down to the program's main, which
            // scripts/symbolize names from the image's debug file.
            r.expect("xenrt: backtrace:")?;
            let named = symbolized("std-hello", &r.output)?;
            if !named
                .lines()
                .any(|l| l.contains("xenrt:   #") && l.contains("std_hello::main"))
            {
                return Err(format!(
                    "no std_hello::main frame in the backtrace:\n{named}"
                ));
            }
            crashed(&r)?;
            // A thread overflowing its 64 KiB stack hits the guard page below it: Xen cannot
            // push the fault frame and crashes the domain, naming an address just below the
            // thread's stack; nothing else was overwritten (no FAIL line).
            let r = boot_dom0("std-hello", "-- overflow")?;
            r.expect("overflow: depth 32")?;
            let near = r
                .line("overflow: thread stack near ")
                .and_then(|l| l.rsplit("0x").next().map(str::to_string))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
                .ok_or("no stack address printed")?;
            let walk = r
                .line("Pagetable walk from ")
                .ok_or("no page-table walk from Xen")?;
            let addr = walk.rsplit(' ').next().unwrap_or("").trim_end_matches(':');
            let addr = u64::from_str_radix(addr, 16).map_err(|e| format!("{walk}: {e}"))?;
            if !(near.saturating_sub(64 * 1024 + 4096)..near).contains(&addr) {
                return Err(format!("fault at {addr:#x}, thread stack near {near:#x}"));
            }
            r.reject("overflow: FAIL returned")?;
            crashed(&r)?;
            // The hermit-abi calls std does not make: done, or refused with an errno.
            let r = boot_dom0("std-hello", "-- abi")?;
            r.expect("abi: pagesize 4096 pid 1 cpus 1")?;
            r.expect(
                "abi: mmap 0 zeroed true aligned true exec -13 mprotect-rw 0 mprotect-ro -13 \
                 munmap-part -22 munmap 0",
            )?;
            r.expect(
                "abi: sem init 0 trywait-empty -11 timedwait-past -110 posted-and-taken 3 destroy 0",
            )?;
            r.expect("abi: queue -38 errno 38")?;
            r.expect(
                "abi: getaddrbyname localhost 0 [127, 0, 0, 1], fd00::7 0 last byte 7, len 5 -22",
            )?;
            powered_off(&r)?;
            Ok(String::new())
        }),
        // tokio (crates.io, unchanged): rt, rt-multi-thread, time, macros, sync.
        case("std_tokio_runtime_checks_pass", || {
            let r = boot_dom0("std-tokio", "log=info -- check")?;
            r.expect("sleep 50 ms: ok")?;
            r.expect("spawned tasks joined: sum of squares 385")?;
            r.expect("wake order: [10, 20, 30]")?;
            r.expect("join!: 3 (concurrent: true)")?;
            r.expect("select!: fast")?;
            r.expect("timeout: expired true, in time Some(7)")?;
            r.expect("interval: 5 ticks, ok")?;
            r.expect("mpsc: 400 messages, sum 619800")?;
            r.expect("oneshot: pong")?;
            r.expect("watch: saw 3")?;
            r.expect("tokio mutex: 1000")?;
            r.expect("notify: notified")?;
            r.expect("spawn_blocking on another thread: true")?;
            r.expect("abort: cancelled true")?;
            r.expect("current_thread runtime: ok")?;
            r.expect("multi_thread: 100 tasks, sum 4950")?;
            r.expect("multi_thread timeout: expired true")?;
            r.expect("multi_thread runtime: ok (100 done")?;
            r.reject("WRONG")?;
            r.expect("std-tokio: checks done in ")?;
            powered_off(&r)?;
            Ok(format!("[wall {:.2} s]", r.elapsed.as_secs_f64()))
        }),
        case("hello_boots_and_prints", || {
            let r = boot_dom0("hello", "log=info")?;
            r.expect("Hello from Xen 4.17")?;
            r.expect("memory: ")?;
            r.expect("command line: \"log=info\"")?;
            let l = r
                .line("entry to main:")
                .ok_or("no entry-to-main line")?
                .to_string();
            powered_off(&r)?;
            Ok(format!("[{l}; wall {:.2} s]", r.elapsed.as_secs_f64()))
        }),
        case("bad_command_line_is_reported", || {
            let r = boot_dom0("hello", "log=loud bogus=1 =x")?;
            r.expect("xenrt: cmdline: ")?;
            r.expect("bogus")?;
            r.expect("loud")?;
            r.expect("Hello from Xen")?;
            powered_off(&r).map(|_| String::new())
        }),
        case("allocating_most_memory_succeeds_and_frees", || {
            let r = test_kernel("alloc")?;
            r.expect("TEST alloc: round 1 allocated")?;
            r.expect("TEST alloc: PASS")?;
            powered_off(&r)?;
            Ok(r.line("round 1").unwrap_or("").to_string())
        }),
        case("writing_to_text_faults", || {
            let r = test_kernel("write-text")?;
            r.expect("xenrt: FATAL page fault (vector 14)")?;
            r.expect("write to a read-only page")?;
            r.expect("xenrt:   #1 ")?; // a backtrace
            r.reject("FAIL the write went through")?;
            crashed(&r).map(|_| String::new())
        }),
        case("executing_data_faults", || {
            let r = test_kernel("exec-data")?;
            r.expect("instruction fetch from a non-executable page")?;
            crashed(&r).map(|_| String::new())
        }),
        case("stack_overflow_hits_the_guard_page_and_crashes", || {
            let guard = symbol("testkernel", "boot_stack_guard")?;
            let r = test_kernel("stack-overflow")?;
            r.expect("TEST stack-overflow: depth 64")?;
            // Xen cannot push the fault frame on our stack: it reports a walk from an address in
            // the guard page and crashes the domain. Nothing else may have been overwritten.
            let walk = r
                .line("Pagetable walk from ")
                .ok_or("no page-table walk from Xen")?;
            let addr = walk.rsplit(' ').next().unwrap_or("").trim_end_matches(':');
            let addr = u64::from_str_radix(addr, 16).map_err(|e| format!("{walk}: {e}"))?;
            if !(guard..guard + 4096).contains(&addr) {
                return Err(format!("fault at {addr:#x}, guard page is {guard:#x}"));
            }
            r.reject("FAIL returned")?;
            crashed(&r).map(|_| format!("[fault at {addr:#x} in guard page {guard:#x}]"))
        }),
        case("timer_fires_close_to_its_deadline", || {
            let r = test_kernel("timer")?;
            let l = r
                .line("TEST timer: PASS")
                .ok_or("timer test did not pass")?;
            let late: u64 = l
                .rsplit('=')
                .next()
                .and_then(|v| v.trim().parse().ok())
                .ok_or("no late_us")?;
            // Correctness, not performance: the timer must not be wildly late (TCG is slow).
            if late > 50_000 {
                return Err(format!("timer fired {late} us late"));
            }
            powered_off(&r)?;
            Ok(format!("[worst lateness {late} us]"))
        }),
        case("blocking_wakes_on_an_event", || {
            let r = test_kernel("block")?;
            r.expect("TEST block: PASS")?;
            powered_off(&r).map(|_| r.line("woke after").unwrap_or("").to_string())
        }),
        case("event_channel_loopback_runs_its_handler", || {
            let r = test_kernel("evtchn-loopback")?;
            r.expect("TEST evtchn-loopback: PASS")?;
            powered_off(&r).map(|_| String::new())
        }),
        case("panic_reports_message_and_crashes", || {
            let r = test_kernel("panic")?;
            r.expect("xenrt: PANIC at tests/kernel/src/main.rs")?;
            r.expect("test panic 42")?;
            r.expect("xenrt: exit crash")?;
            crashed(&r).map(|_| String::new())
        }),
        case("invalid_opcode_reports_and_crashes", || {
            let r = test_kernel("invalid-opcode")?;
            r.expect("xenrt: FATAL invalid opcode (vector 6)")?;
            crashed(&r).map(|_| String::new())
        }),
    ];
    xen_tests::main("dom0", cases, 2)
}
