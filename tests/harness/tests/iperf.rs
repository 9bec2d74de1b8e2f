//! The lab tier for echo's iperf3 server (TCP 5201, `echo::iperf`): Debian's iperf3 client in
//! dom0 against an echo guest on the lab's bridge, at the default 8 MiB of memory: forward,
//! reverse and two parallel streams succeed with a non-zero rate that matches what the guest says
//! it counted; a UDP request is refused with iperf3's own error text; a second client while a test
//! runs is told the server is busy; a client killed mid-test (either direction) leaves the server
//! ready for the next one; and afterwards the guest has as many sockets as before the tests.

use std::sync::OnceLock;
use xen_tests::case;
use xen_tests::lab::{dom0_sh, expect, Guest};

const MAC: &str = "00:16:3e:00:00:38";
const IP: &str = "10.0.0.156";

/// The echo guest, and its socket count at rest (before any test).
fn server_and_sockets() -> Result<&'static (Guest, u64), String> {
    static S: OnceLock<Result<(Guest, u64), String>> = OnceLock::new();
    S.get_or_init(|| {
        let g = Guest::start_with(
            "echo",
            "log=info stats=1",
            &[&format!("vif=['bridge=xenbr0,mac={MAC}']")],
        )?;
        g.until("echo: ready on", 90)?;
        // Two refreshes after ready: the listeners are all up.
        std::thread::sleep(std::time::Duration::from_secs(2));
        let n = sockets(&g)?;
        Ok((g, n))
    })
    .as_ref()
    .map_err(|e| e.clone())
}

fn server() -> Result<&'static Guest, String> {
    Ok(&server_and_sockets()?.0)
}

/// `sockets=` from the guest's xenstore stats line.
fn sockets(g: &Guest) -> Result<u64, String> {
    let line = dom0_sh(
        &format!("xenstore-read /local/domain/{}/data/xenrt/stats", g.domid()),
        30,
    )?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("sockets="))
        .and_then(|v| v.parse().ok())
        .ok_or(format!("no sockets= in {line:?}"))
}

/// The bitrate (Mbit/s) on the client's final line ending in `role` ("sender" / "receiver"),
/// e.g. `[SUM]   0.00-3.00   sec  41.2 MBytes   115 Mbits/sec                  receiver`. `tag`
/// is `[SUM]`, or `[N]` for a stream's line (`[  7]`: the client's socket number).
fn rate(out: &str, tag: &str, role: &str) -> Result<f64, String> {
    let tagged = |l: &str| {
        let t = l.split(']').next().unwrap_or("");
        if tag == "[N]" {
            l.starts_with('[') && t[1..].trim().parse::<u32>().is_ok()
        } else {
            l.starts_with(tag)
        }
    };
    let line = out
        .lines()
        .rfind(|l| tagged(l) && l.trim_end().ends_with(role))
        .ok_or(format!("no {tag} {role} line in:\n{out}"))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let i = w
        .iter()
        .position(|x| x.ends_with("bits/sec"))
        .ok_or(format!("no bitrate in {line:?}"))?;
    let v: f64 = w[i - 1]
        .parse()
        .map_err(|_| format!("bad rate in {line:?}"))?;
    let scale = match w[i] {
        "bits/sec" => 1e-6,
        "Kbits/sec" => 1e-3,
        "Mbits/sec" => 1.0,
        "Gbits/sec" => 1e3,
        u => return Err(format!("unit {u} in {line:?}")),
    };
    Ok(v * scale)
}

/// The guest's console line for the last test it finished (`echo: iperf ... done: ...`).
fn last_report(g: &Guest, want: &str) -> Result<String, String> {
    g.until(want, 30)?;
    let c = g.console()?;
    if c.contains("PANIC") {
        return Err(format!("guest panicked:\n{c}"));
    }
    Ok(c.lines()
        .rfind(|l| l.contains("echo: iperf "))
        .unwrap_or("")
        .to_string())
}

/// Runs a passing iperf3 client and checks its receiver rate is plausible.
fn passing(args: &str, tag: &str, streams: usize) -> Result<String, String> {
    let g = server()?;
    let out = dom0_sh(&format!("iperf3 -c {IP} {args}"), 120)?;
    expect(&out, "iperf Done.")?;
    let rx = rate(&out, tag, "receiver")?;
    let tx = rate(&out, tag, "sender")?;
    // Plausible: data moved, and the receiver did not count more than was sent (10% for the
    // two ends' slightly different clocks).
    if !(rx > 0.1 && tx > 0.1 && rx <= tx * 1.1) {
        return Err(format!("implausible rates {tx} / {rx} Mbit/s:\n{out}"));
    }
    let s = if streams == 1 { "" } else { "s" };
    let report = last_report(g, &format!("done: {streams} stream{s},"))?;
    Ok(format!(
        "sender {tx:.1} Mbit/s, receiver {rx:.1} Mbit/s; guest: {report}"
    ))
}

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![
        case("iperf3_forward_3_s", || passing("-t 3", "[N]", 1)),
        case("iperf3_reverse_3_s", || {
            let r = passing("-R -t 3", "[N]", 1)?;
            expect(&r, "sent ")?;
            Ok(r)
        }),
        case("iperf3_two_parallel_streams", || {
            passing("-P 2 -t 3", "[SUM]", 2)
        }),
        case("iperf3_udp_is_refused_and_the_server_still_works", || {
            let g = server()?;
            let out = dom0_sh(
                &format!(
                    "iperf3 -c {IP} -u -t 1 2>&1; echo \"exit=$?\"
                     iperf3 -c {IP} -t 1 2>&1 | tail -3"
                ),
                120,
            )?;
            expect(
                &out,
                "iperf3: error - unable to start stream listener: Protocol not supported",
            )?;
            expect(&out, "exit=1")?;
            expect(&out, "iperf Done.")?;
            let c = g.console()?;
            expect(&c, "refused: UDP tests are not supported (TCP only)")?;
            Ok(String::new())
        }),
        case("iperf3_second_client_is_told_the_server_is_busy", || {
            server()?;
            let out = dom0_sh(
                &format!(
                    "iperf3 -c {IP} -t 6 > /tmp/iperf-long.log 2>&1 & p=$!
                     sleep 2
                     iperf3 -c {IP} -t 1 2>&1; echo \"exit=$?\"
                     wait $p; echo \"first=$?\"; tail -3 /tmp/iperf-long.log"
                ),
                120,
            )?;
            expect(
                &out,
                "iperf3: error - the server is busy running a test. try again later",
            )?;
            expect(&out, "exit=1")?;
            expect(&out, "first=0")?;
            Ok(String::new())
        }),
        case(
            "iperf3_client_killed_mid_test_leaves_the_server_usable",
            || {
                let g = server()?;
                let mut notes = Vec::new();
                for args in ["-t 30", "-R -P 2 -t 30"] {
                    // Killed 3 s into a 30 s test; one second later a new test must run at once.
                    let out = dom0_sh(
                        &format!(
                            "iperf3 -c {IP} {args} > /tmp/iperf-killed.log 2>&1 & p=$!
                         sleep 3; kill -9 $p; wait $p 2>/dev/null; sleep 1
                         iperf3 -c {IP} -t 2 2>&1"
                        ),
                        120,
                    )
                    .map_err(|e| format!("after killing `iperf3 {args}`: {e}"))?;
                    expect(&out, "iperf Done.")?;
                    notes.push(format!("{:.1}", rate(&out, "[N]", "receiver")?));
                }
                let c = g.console()?;
                expect(&c, "client closed the control connection")?;
                Ok(format!("next tests at {} Mbit/s", notes.join(" and ")))
            },
        ),
        // Last (the cases run in order): every test's sockets were given back. Closed sockets
        // linger up to 10 s (net::stack's CLOSE_LINGER_NS), so wait up to 30 s.
        case("iperf3_tests_leave_no_sockets_behind", || {
            let (g, rest) = server_and_sockets()?;
            let mut now = 0;
            for _ in 0..30 {
                now = sockets(g)?;
                if now == *rest {
                    return Ok(format!("{now} sockets, as before the tests"));
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(format!(
                "{now} sockets 30 s after the tests, {rest} before them"
            ))
        }),
    ];
    let ok = xen_tests::run_cases("iperf", cases, 1);
    xen_tests::lab::finish(ok)
}
