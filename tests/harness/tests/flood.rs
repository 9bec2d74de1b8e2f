//! The lab tier under a SYN flood: spoofed, valid-checksum SYNs from many source addresses
//! (our synflood tool on the guest's vif in dom0) at httpd and at echo, while legitimate clients
//! in dom0 keep going (curl making a new connection each time, wrk with a 5 s timeout on kept
//! connections, socat for echo). Each case prints the flood's rate and the legitimate success
//! rate during it, and asserts that service is back within 5 s of the flood's end (the rules are
//! in net::gate).

use std::sync::OnceLock;
use xen_tests::case;
use xen_tests::lab::{dom0_sh, expect, tool, Guest};

const HTTPD_MAC: &str = "00:16:3e:00:00:5c";
const HTTPD_IP: &str = "10.0.0.192";
const ECHO_MAC: &str = "00:16:3e:00:00:5d";
const ECHO_IP: &str = "10.0.0.193";
/// How long each flood lasts.
const FLOOD_SECS: u32 = 15;

fn start(image: &str, mac: &str, ready: &str) -> Result<Guest, String> {
    let g = Guest::start_with(
        image,
        "log=warn",
        &[&format!("vif=['bridge=xenbr0,mac={mac}']"), "memory=8"],
    )?;
    g.until(ready, 90)?;
    Ok(g)
}

fn httpd() -> Result<&'static Guest, String> {
    static S: OnceLock<Result<Guest, String>> = OnceLock::new();
    S.get_or_init(|| start("httpd", HTTPD_MAC, "httpd: serving"))
        .as_ref()
        .map_err(|e| e.clone())
}

fn echo() -> Result<&'static Guest, String> {
    static S: OnceLock<Result<Guest, String>> = OnceLock::new();
    S.get_or_init(|| start("echo", ECHO_MAC, "echo: ready on"))
        .as_ref()
        .map_err(|e| e.clone())
}

/// A shell function `ms` printing dom0's uptime in milliseconds (busybox date has no %N).
const MS: &str = "ms() { awk '{ printf \"%d\\n\", $1 * 1000 }' /proc/uptime; }";

/// The dom0 script of one flood at `port` of `guest` (`rate` SYN/s, 0 = as fast as dom0 can)
/// while `probe` (a shell command that succeeds when the service answered) runs in a loop, and
/// `extra` (a background client, or nothing) runs beside it. A probe starts every 0.5 s (each
/// in the background, so a slow one does not hold the next) until 6 s before the flood ends.
/// Prints the flood's line, `probe ok=N of M`, then `back after MS ms` (how long after the
/// flood the first probe succeeded).
#[allow(clippy::too_many_arguments)] // each is one shell variable of the script
fn flood_script(
    flood: &str,
    guest: &Guest,
    mac: &str,
    ip: &str,
    port: u16,
    rate: u32,
    probe: &str,
    extra: &str,
) -> String {
    format!(
        "{MS}
         probe() {{ {probe}; }}
         n=0; probe || echo 'warning: no answer before the flood'
         {flood} vif{domid}.0 {mac} {ip} {port} {rate} {FLOOD_SECS} {domid} > /tmp/flood.out &
         fp=$!
         {extra}
         n=0; end=$(( $(ms) + {FLOOD_SECS} * 1000 - 6000 ))
         rm -f /tmp/probe.ok
         while [ $(ms) -lt $end ]; do
           n=$((n+1)); (probe && echo >> /tmp/probe.ok) &
           sleep 0.5
         done
         wait $fp
         ok=$(cat /tmp/probe.ok 2>/dev/null | wc -l)
         t0=$(ms); back=none
         for i in $(seq 1 100); do
           if probe; then back=$(( $(ms) - t0 )); break; fi
           sleep 0.05
         done
         wait
         cat /tmp/flood.out
         echo \"probe ok=$ok of $n\"
         echo \"back after $back ms\"
         echo \"guest stats: $(xenstore-read /local/domain/{domid}/data/xenrt/stats 2>/dev/null)\"",
        domid = guest.domid(),
    )
}

/// Reads `probe ok=N of M` and `back after MS ms` from a flood script's output; fails unless
/// the service came back within 5 s; returns a summary line.
fn judge(out: &str, guest: &Guest) -> Result<(u32, u32, String), String> {
    expect(out, "synflood: sent")?;
    let ok_of = out
        .lines()
        .find_map(|l| l.strip_prefix("probe ok="))
        .ok_or(format!("no probe count in:\n{out}"))?;
    let (ok, n) = ok_of
        .split_once(" of ")
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)))
        .ok_or(format!("bad probe count in:\n{out}"))?;
    let back = out
        .lines()
        .find_map(|l| l.strip_prefix("back after "))
        .and_then(|l| l.strip_suffix(" ms"))
        .ok_or(format!("no recovery line in:\n{out}"))?;
    let back_ms: u32 = back
        .parse()
        .map_err(|_| format!("service not back within 5 s of the flood's end:\n{out}"))?;
    if back_ms > 5000 {
        return Err(format!("service back only after {back_ms} ms:\n{out}"));
    }
    let c = guest.console()?;
    if c.contains("PANIC") {
        return Err(format!("guest panicked:\n{c}"));
    }
    let flood = out
        .lines()
        .find(|l| l.starts_with("synflood: sent"))
        .unwrap_or("");
    let pct = if n == 0 {
        0.0
    } else {
        100.0 * f64::from(ok) / f64::from(n)
    };
    Ok((
        ok,
        n,
        format!(
            "{flood}; legitimate {ok}/{n} ({pct:.1}%); back after {back_ms} ms; {}",
            out.lines()
                .find(|l| l.starts_with("guest stats:"))
                .unwrap_or("")
        ),
    ))
}

/// curl's probe of httpd: a new connection, 5 s to answer 200.
fn curl_probe() -> String {
    format!("[ \"$(curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{HTTPD_IP}/)\" = 200 ]")
}

/// wrk on kept connections beside the probe, its summary printed at the end.
fn wrk_beside() -> String {
    format!(
        "wrk -t1 -c10 -d{}s --timeout 5s http://{HTTPD_IP}/ > /tmp/wrk.out 2>&1 &",
        FLOOD_SECS - 2
    )
}

const WRK_SUMMARY: &str = "grep -E 'requests in|Socket errors|Non-2xx' /tmp/wrk.out || true";

fn httpd_case(rate: u32) -> Result<String, String> {
    let g = httpd()?;
    let flood = tool("synflood")?;
    let script = flood_script(
        &flood,
        g,
        HTTPD_MAC,
        HTTPD_IP,
        80,
        rate,
        &curl_probe(),
        &wrk_beside(),
    );
    let out = dom0_sh(&format!("{script}\n{WRK_SUMMARY}"), 180)?;
    let (_, _, summary) = judge(&out, g)?;
    let wrk: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("requests in") || l.contains("errors") || l.contains("Non-2xx"))
        .map(str::trim)
        .collect();
    Ok(format!("{summary}; wrk: {}", wrk.join(", ")))
}

fn main() {
    xen_tests::lab::start_or_exit();
    // scripts/bench-flood: the legitimate success rate at each of FLOOD_SWEEP's rates.
    if let Ok(rates) = std::env::var("FLOOD_SWEEP") {
        let cases = vec![case("httpd_sweep", move || {
            let mut rows = Vec::new();
            for r in rates.split(',') {
                let rate: u32 = r.trim().parse().map_err(|_| format!("bad rate {r}"))?;
                let row = httpd_case(rate)?;
                println!("flood sweep: rate {rate}: {row}");
                rows.push(row);
            }
            Ok(rows.join("\n"))
        })];
        let ok = xen_tests::run_cases("flood", cases, 1);
        xen_tests::lab::finish(ok)
    }
    let cases = vec![
        case("httpd_serves_through_1000_spoofed_syns_a_second", || {
            httpd_case(1000)
        }),
        case(
            "httpd_comes_back_within_5_s_of_a_flood_at_full_rate",
            || httpd_case(0),
        ),
        case("echo_comes_back_within_5_s_of_a_flood_at_full_rate", || {
            let g = echo()?;
            let flood = tool("synflood")?;
            let probe = format!(
                "[ \"$(echo ping-$n | socat -T 5 - TCP:{ECHO_IP}:7,connect-timeout=5 2>/dev/null)\" = ping-$n ]"
            );
            let out = dom0_sh(
                &flood_script(&flood, g, ECHO_MAC, ECHO_IP, 7, 0, &probe, ""),
                180,
            )?;
            Ok(judge(&out, g)?.2)
        }),
        case("flooded_guests_shut_down_cleanly", || {
            httpd()?.shutdown_cleanly()?;
            echo()?.shutdown_cleanly()
        }),
    ];
    let ok = xen_tests::run_cases("flood", cases, 1);
    xen_tests::lab::finish(ok)
}
