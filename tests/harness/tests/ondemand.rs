//! The lab tier for boot on demand: one xenrt-activator in dom0 (built for
//! x86_64-unknown-linux-musl, static) with eight services, driven by curl, nc and nslookup in
//! dom0. Each case's first request meets no guest: the activator starts it and the request is
//! served without an error or a reset. Cases: cold, 50 clients at once, a guest that crashes at
//! boot (clients refused fast, the activator says why and backs off), the idle timeout (stopped,
//! then started again by the next request), parked and pre-booted starts, a second kind of
//! service (echo), and the DNS trigger.

use std::sync::OnceLock;
use xen_tests::lab::{dom0_sh, expect, host_get, lab, ScriptsRun};
use xen_tests::{case, root};

const ACT: &str = "/tmp/ondemand";

fn put(path: &std::path::Path) -> Result<String, String> {
    let r = lab(&["put", path.to_str().unwrap()])?;
    if r.code != Some(0) {
        return Err(format!("lab put {}: {}", path.display(), r.output));
    }
    Ok(r.output.trim().lines().last().unwrap_or("").to_string())
}

/// Builds the activator and copies it, the images and a config into the lab; starts it.
fn activator() -> Result<(), String> {
    static S: OnceLock<Result<(), String>> = OnceLock::new();
    S.get_or_init(|| {
        let b = xen_tests::run(
            std::process::Command::new("cargo")
                .current_dir(root())
                .args(["build", "-q", "--release", "-p", "activator"])
                .args(["--target", "x86_64-unknown-linux-musl"]),
        )?;
        if b.code != Some(0) {
            return Err(format!("building the activator failed: {}", b.output));
        }
        let bin = put(&root().join("target/x86_64-unknown-linux-musl/release/xenrt-activator"))?;
        let dir = root().join("target/ondemand");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut kernels = std::collections::HashMap::new();
        for app in ["httpd", "echo", "testkernel"] {
            kernels.insert(app, put(&root().join("target/images").join(app))?);
        }
        let mut xls = std::collections::HashMap::new();
        for (name, app, extra) in [
            ("httpd", "httpd", "log=info"),
            ("echo", "echo", ""),
            ("crash", "testkernel", "test=panic"),
        ] {
            let f = dir.join(format!("{name}.xl"));
            std::fs::write(
                &f,
                format!(
                    "type = \"pv\"\nkernel = \"{}\"\nmemory = 8\nvcpus = 1\nextra = \"{extra}\"\n",
                    kernels[app]
                ),
            )
            .map_err(|e| e.to_string())?;
            xls.insert(name, put(&f)?);
        }
        let svc = |name: &str, xl: &str, ip: &str, more: &str| {
            format!(
                "[{name}]\nconfig = {}\naddress = {ip}/24\ngateway = 10.0.0.1\n{more}\n",
                xls[xl]
            )
        };
        let conf = [
            format!("bridge = xenbr0\ndns = 10.0.0.1:53\nsave_dir = {ACT}/saves\n"),
            svc(
                "web",
                "httpd",
                "10.0.0.240",
                "port = 80\nvif_script = builtin",
            ),
            // 50 curls forked at once in dom0's one emulated vCPU slow its xl create down: the
            // case is about every client served, not about how fast (boot_timeout 30 s).
            svc(
                "burst",
                "httpd",
                "10.0.0.241",
                "port = 80\nboot_timeout = 30",
            ),
            svc(
                "crash",
                "crash",
                "10.0.0.242",
                "port = 80\nboot_timeout = 10",
            ),
            svc("idle", "httpd", "10.0.0.243", "port = 80\nidle = 3"),
            svc(
                "parked",
                "httpd",
                "10.0.0.244",
                "port = 80\nmode = parked\nspares = 2",
            ),
            svc("pre", "httpd", "10.0.0.245", "port = 80\nmode = preboot"),
            svc("echo", "echo", "10.0.0.246", "port = 7"),
            svc("dns", "httpd", "10.0.0.247", "port = 80\nname = www.lab"),
            svc(
                "saved",
                "httpd",
                "10.0.0.239",
                "port = 80\nmode = restore\nidle = 3",
            ),
        ]
        .concat();
        let cf = dir.join("activator.conf");
        std::fs::write(&cf, conf).map_err(|e| e.to_string())?;
        let conf = put(&cf)?;
        dom0_sh(
            &format!(
                "mkdir -p {ACT}; rm -f /var/log/xen/console/guest-saved-saved.log
                 {bin} --check {conf} >/dev/null || exit 1
                 ( {bin} {conf} > {ACT}/log 2>&1 & echo $! > {ACT}/pid )
                 i=0; until grep -q 'ready on' {ACT}/log; do
                   i=$((i+1)); [ $i -lt 100 ] || {{ cat {ACT}/log; exit 1; }}; sleep 0.1; done"
            ),
            60,
        )?;
        // The spares are prepared before any case runs, so that no cold start competes with
        // their boots (and its time depends on which case runs first).
        for spare in [
            "parked: spare parked-1",
            "pre: spare pre-1",
            "saved: image saved",
        ] {
            wait_log(spare, 120)?;
        }
        Ok(())
    })
    .clone()
}

fn log() -> String {
    dom0_sh(&format!("cat {ACT}/log"), 30).unwrap_or_default()
}

/// Waits (up to `secs`) until the activator's log holds `text`.
fn wait_log(text: &str, secs: u32) -> Result<String, String> {
    dom0_sh(
        &format!(
            "i=0; until grep -qF -- '{text}' {ACT}/log; do
               i=$((i+1)); [ $i -lt {} ] || {{ echo \"no '{text}' in the activator's log:\"; cat {ACT}/log; exit 1; }}
               sleep 0.1; done",
            secs * 10
        ),
        secs + 30,
    )
}

/// One curl: "CODE TTFB TOTAL" (code 000 and curl's exit status on failure).
fn curl(ip: &str) -> Result<String, String> {
    dom0_sh(
        &format!(
            "curl -s -o /dev/null --max-time 20 -w '%{{http_code}} %{{time_starttransfer}} %{{time_total}}' http://{ip}/; echo \" rc=$?\""
        ),
        60,
    )
}

fn ok_200(ip: &str) -> Result<String, String> {
    let r = curl(ip)?;
    if !r.starts_with("200 ") {
        return Err(format!("curl http://{ip}/: {r}\n{}", log()));
    }
    Ok(r)
}

fn ready_line(svc: &str) -> String {
    log()
        .lines()
        .rfind(|l| l.contains(&format!("{svc}: ready after")))
        .map(|l| l.split("] ").nth(1).unwrap_or(l).to_string())
        .unwrap_or_default()
}

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![
        case("the_first_request_to_a_cold_service_is_served", || {
            activator()?;
            let r = ok_200("10.0.0.240")?;
            // and the next goes straight to the guest
            let again = ok_200("10.0.0.240")?;
            // web's vif was attached by the activator's own hotplug (`vif_script = builtin`),
            // and once the guest is destroyed it is off the bridge.
            let ports = dom0_sh(
                "d=$(xl domid web-1) || exit 1
                 ls /sys/class/net/xenbr0/brif | grep -x vif$d.0 || { echo no vif$d.0 in xenbr0; exit 1; }
                 xl destroy web-1; i=0
                 while [ -e /sys/class/net/xenbr0/brif/vif$d.0 ]; do
                   i=$((i+1)); [ $i -lt 50 ] || { echo vif$d.0 still in xenbr0; exit 1; }; sleep 0.1; done
                 echo gone",
                60,
            )?;
            expect(&ports, "gone")?;
            Ok(format!(
                "curl (code ttfb total): first {r}, then {again}; {}",
                ready_line("web")
            ))
        }),
        case(
            "fifty_clients_at_once_at_a_cold_service_are_all_served",
            || {
                activator()?;
                let out = dom0_sh(
                "for i in $(seq 50); do
                   curl -s -o /dev/null --max-time 60 -w '%{http_code}\\n' http://10.0.0.241/ > /tmp/ondemand/burst.$i &
                 done; wait; cat /tmp/ondemand/burst.* | sort | uniq -c",
                120,
            )?;
                if out.trim() != "50 200" {
                    return Err(format!("50 clients got: {out}\n{}", log()));
                }
                Ok(format!("50 x 200; {}", ready_line("burst")))
            },
        ),
        case(
            "a_guest_that_crashes_at_boot_gets_clients_refused_fast_and_backs_off",
            || {
                activator()?;
                // Two clients: the first meets the failing start, the second comes right after
                // the refusal, within the 1 s backoff.
                let out = dom0_sh(
                    "w='%{http_code} %{time_total}'
                     curl -s -o /dev/null --max-time 20 -w \"$w\" http://10.0.0.242/; echo \" rc=$?\"
                     curl -s -o /dev/null --max-time 20 -w \"$w\" http://10.0.0.242/; echo \" rc=$?\"",
                    60,
                )?;
                let lines: Vec<&str> = out.lines().collect();
                let secs = |l: &str| -> f64 {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(99.0)
                };
                // curl exit 7: connection refused (a RST), not a timeout (28)
                if lines.len() != 2 || !lines.iter().all(|l| l.ends_with("rc=7")) {
                    return Err(format!("want two refusals, got:\n{out}\n{}", log()));
                }
                let (first, second) = (secs(lines[0]), secs(lines[1]));
                let l = wait_log("crash: start failed", 30)?;
                let l = if l.is_empty() { log() } else { l };
                expect(&l, "ended before it was ready")?;
                expect(&l, "test panic 42")?;
                expect(&l, "refusing for 1 s")?;
                let starts = l.matches("crash: request waiting: starting").count();
                // Refused because the guest ended (not after boot_timeout), the second client
                // by the backoff (no second start). How fast is the note's: the lab's xl create
                // alone takes 1-4 s, depending on its load.
                let timed_out = l.lines().any(|x| {
                    x.contains("crash: start failed") && x.contains("was not ready after")
                });
                if starts != 1 || timed_out {
                    return Err(format!(
                        "refused after {first} s and {second} s, {starts} start(s):\n{l}"
                    ));
                }
                Ok(format!(
                    "refused after {first} s (the start failing), then after {second} s (backoff)"
                ))
            },
        ),
        case(
            "the_idle_timeout_stops_the_guest_and_the_next_request_starts_it_again",
            || {
                activator()?;
                let first = ok_200("10.0.0.243")?;
                wait_log("idle: stopped", 60)?;
                let gone = dom0_sh("xl list | grep -c '^idle-' || true", 30)?;
                if gone.trim() != "0" {
                    return Err(format!("an idle guest is still there: {gone}"));
                }
                let second = ok_200("10.0.0.243")?;
                let l = log();
                expect(&l, "idle: idle for 3 s: stopping idle-1")?;
                expect(&l, "idle: request waiting: starting (xl create, idle-2)")?;
                Ok(format!("first {first}, after the stop {second}"))
            },
        ),
        case("a_parked_domain_is_unpaused_for_the_first_request", || {
            activator()?;
            // spares = 2: two domains kept created and paused (prepared at once, ready in
            // either order); the request takes one, and a third is created to keep two.
            wait_log("parked: spare parked-2", 60)?;
            wait_log("parked: spare parked-1", 60)?;
            let r = ok_200("10.0.0.244")?;
            let l = log();
            let taken = l
                .lines()
                .find_map(|x| {
                    x.split("starting (unpausing the parked domain, ")
                        .nth(1)
                        .map(|t| t.trim_end_matches(')').to_string())
                })
                .ok_or(format!("no unpause of a parked domain:\n{l}"))?;
            if taken != "parked-1" && taken != "parked-2" {
                return Err(format!("took {taken}, not one of the two spares:\n{l}"));
            }
            wait_log("parked: spare parked-3", 60)?;
            let listed = dom0_sh("xl list | awk '$1 ~ /^parked-/ {print $1, $5}' | sort", 30)?;
            // xl list's state column: p = paused.
            let paused: Vec<&str> = listed
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|st| st.contains('p'))
                })
                .collect();
            if paused.len() != 2 || paused.iter().any(|l| l.starts_with(&format!("{taken} "))) {
                return Err(format!(
                    "want {taken} serving and two paused spares: {listed}"
                ));
            }
            Ok(format!("{r}; {}", ready_line("parked")))
        }),
        case(
            "a_pre_booted_guest_is_unpaused_for_the_first_request",
            || {
                activator()?;
                wait_log("pre: spare pre-1", 90)?;
                let r = ok_200("10.0.0.245")?;
                expect(
                    &log(),
                    "pre: request waiting: starting (unpausing the pre-booted guest, pre-1)",
                )?;
                Ok(format!("{r}; {}", ready_line("pre")))
            },
        ),
        case("a_second_kind_of_service_echo_starts_on_its_port", || {
            activator()?;
            let out = dom0_sh("echo on-demand-echo | nc -w 5 10.0.0.246 7", 60)?;
            expect(&out, "on-demand-echo")?;
            Ok(ready_line("echo"))
        }),
        case(
            "a_dns_query_starts_the_service_and_is_answered_when_it_serves",
            || {
                activator()?;
                let out = dom0_sh("nslookup www.lab 10.0.0.1 2>&1", 60)?;
                expect(&out, "10.0.0.247")?;
                let r = ok_200("10.0.0.247")?;
                let l = log();
                expect(&l, "dns: DNS query for www.lab")?;
                expect(&l, "dns: ready after")?;
                let other = dom0_sh("nslookup other.example 10.0.0.1 2>&1; true", 60)?;
                if other.contains("10.0.0.247") {
                    return Err(format!("a name not ours was answered: {other}"));
                }
                Ok(format!("{r}; {}", ready_line("dns")))
            },
        ),
        case(
            "a_saved_image_is_restored_for_each_request_after_the_idle_stop",
            || {
                activator()?;
                wait_log("saved: image saved", 90)?;
                let first = ok_200("10.0.0.239")?;
                wait_log("saved: stopped", 60)?;
                let second = ok_200("10.0.0.239")?;
                let l = log();
                let restores = l
                    .matches("saved: request waiting: starting (xl restore of the saved image, saved-saved)")
                    .count();
                if restores != 2 || l.matches("saved: ready after").count() != 2 {
                    return Err(format!("want two restores, each ready:\n{l}"));
                }
                // Each restored copy said it serves again once its network reconnected (the
                // node the activator waited for), and took a new TCP random seed.
                let console = dom0_sh("cat /var/log/xen/console/guest-saved-saved.log", 30)?;
                if console.matches("ready again on 10.0.0.239:80").count() < 2 {
                    return Err(format!(
                        "the restored guests did not say they serve again:\n{console}"
                    ));
                }
                Ok(format!(
                    "restored twice from one image: {first}, then {second}; {}",
                    ready_line("saved")
                ))
            },
        ),
        case(
            "scripts_run_on_demand_serves_the_host_and_stops_on_ctrl_c",
            || {
                // The README's `scripts/run --on-demand httpd` against the running test lab: a URL
                // on this host whose first request boots the guest; Ctrl-C stops the activator and
                // the guest (exit 130). Its own service address and tap.
                let port = 18080 + (std::process::id() % 1000) as u16;
                let url = format!("http://127.0.0.1:{port}/");
                let port_s = port.to_string();
                let run = ScriptsRun::start(
                    &["--on-demand", "httpd"],
                    &[("RUN_PORT", &port_s), ("ONDEMAND_ADDR", "10.0.0.248/24")],
                    &format!("on demand at {url}"),
                    180,
                )?;
                let t = std::time::Instant::now();
                let body = host_get(port);
                let took = t.elapsed().as_secs_f64();
                let (code, seen) = run.stop()?;
                let body = body.ok_or(format!("GET {url} failed:\n{seen}"))?;
                expect(&body, "HTTP/1.1 200 OK")?;
                // Nothing ran before that GET: the activator started the guest for it.
                let alog = dom0_sh("cat /mnt/lab/run-ondemand.log", 30)?;
                expect(
                    &alog,
                    "httpd: request waiting: starting (xl create, httpd-1)",
                )?;
                expect(&alog, "httpd: ready after")?;
                if code != Some(130) {
                    return Err(format!("exit {code:?} after Ctrl-C:\n{seen}"));
                }
                let left = dom0_sh("xl list | grep -cE '^httpd-[0-9]+ ' || true", 30)?;
                if left.trim() != "0" {
                    return Err(format!("guests left after Ctrl-C: {left}"));
                }
                Ok(format!("first GET through the host port in {took:.2} s"))
            },
        ),
    ];
    let ok = xen_tests::run_cases("ondemand", cases, 1);
    let _ = dom0_sh(&format!("[ -f {ACT}/pid ] && kill $(cat {ACT}/pid); sleep 0.5; for d in $(xl list | awk 'NR>1 {{print $1}}' | grep -E '^((web|burst|crash|idle|parked|pre|echo|dns)-[0-9]+|saved-saved)$'); do xl destroy $d; done; true"), 60);
    xen_tests::lab::finish(ok)
}
