//! The lab tier for the Linux PV domU baseline that `scripts/bench` measures xenrt against: the
//! servers a user would pick, from Debian's packages (scripts/lab.d/build-linux-domu), must start
//! in the guest and answer dom0's clients, so a broken baseline fails the suite rather than the
//! next benchmark. nginx serves httpd's own pages on :80 (keep-alive on, sendfile on, one worker),
//! iperf3 -s measures both directions, redis-server answers redis-cli and redis-benchmark, and
//! the guest reports when its servers listen (`LAB-DOMU-SERVING uptime_ms=`). The durable
//! redis-server (`lab.svc=redis-aof`: appendfsync always, the AOF on an ext4 on xvda) keeps every
//! acknowledged write across an `xl destroy` under load (tests/lab-tools/kvcrash.c), as
//! scripts/bench's kv section assumes.

use xen_tests::case;
use xen_tests::lab::{dom0_sh, expect, kvcrash, lab, lab_dir, redis_cli};

const NAME: &str = "baseline-linux";
const MAC: &str = "00:16:3e:00:00:62";
const IP: &str = "10.0.0.198";
const AOF_NAME: &str = "baseline-redis-aof";
const AOF_MAC: &str = "00:16:3e:00:00:5e";
const AOF_IP: &str = "10.0.0.194";

/// Boots the Linux guest with the durable redis-server on `img` (a dom0 path) and waits until it
/// answers PING.
fn boot_redis_aof(dir: &str, img: &str) -> Result<(), String> {
    let r = lab(&[
        "create",
        &format!("{dir}/linux.xl"),
        &format!("name=\"{AOF_NAME}\""),
        &format!("disk=['format=raw,vdev=xvda,access=rw,target={img}']"),
        &format!("vif=['bridge=xenbr0,mac={AOF_MAC}']"),
        "extra=\"console=hvc0 quiet lab.svc=redis-aof lab.after=stay\"",
    ])?;
    if r.code != Some(0) {
        return Err(format!("lab create: {}", r.output));
    }
    let c = lab(&[
        "console",
        AOF_NAME,
        "--until",
        "LAB-DOMU-SERVING",
        "--follow",
        "240",
    ])?;
    if c.code != Some(0) || c.output.contains("LAB-DOMU: redis") {
        return Err(format!("the durable redis did not come up:\n{}", c.output));
    }
    // redis-server listens while it still replays its AOF, answering "LOADING" until it is
    // done (after an `xl destroy` the AOF is long): ask again until it says PONG.
    let mut pong = String::new();
    for _ in 0..120 {
        pong = redis_cli(AOF_IP, 6379, &["ping"])?;
        if !pong.contains("LOADING") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    expect(&pong, "PONG")
}

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![
        case("the_linux_baseline_starts_nginx_iperf3_and_redis", || {
            let built = lab(&["build-linux"])?;
            // It prints the directory (its default) last; stderr's progress lines come with it.
            let dir = xen_tests::root().join("target/lab-images/linux-domu");
            if built.code != Some(0) || !dir.join("linux.xl").exists() {
                return Err(format!("lab build-linux: {}", built.output));
            }
            let dir = dir.to_string_lossy().into_owned();
            // The same pages as httpd's (/srv/www), served from /www as scripts/bench does:
            // lab.cmd is base64 of `cp /srv/www/* /www/`.
            let extra = "extra=\"console=hvc0 quiet lab.svc=nginx,iperf3,redis lab.after=stay \
                         lab.cmd=Y3AgL3Nydi93d3cvKiAvd3d3Lw==\"";
            let r = lab(&[
                "create",
                &format!("{dir}/linux.xl"),
                &format!("name=\"{NAME}\""),
                "disk=[]",
                &format!("vif=['bridge=xenbr0,mac={MAC}']"),
                extra,
            ])?;
            if r.code != Some(0) {
                return Err(format!("lab create: {}", r.output));
            }
            let c = lab(&[
                "console",
                NAME,
                "--until",
                "LAB-DOMU-CMD-RC",
                "--follow",
                "240",
            ])?;
            if c.code != Some(0) {
                return Err(format!("the guest did not come up:\n{}", c.output));
            }
            if c.output.contains("failed") {
                return Err(format!("a server did not start:\n{}", c.output));
            }
            let ms: u64 = c
                .output
                .lines()
                .find_map(|l| l.split("LAB-DOMU-SERVING uptime_ms=").nth(1))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .ok_or(format!("no LAB-DOMU-SERVING line:\n{}", c.output))?;
            Ok(format!(
                "[servers listening {ms} ms after the kernel started]"
            ))
        }),
        case("nginx_serves_httpds_pages_with_keep_alive", || {
            let page = std::fs::read(xen_tests::root().join("apps/httpd/www/index.html"))
                .map_err(|e| format!("apps/httpd/www/index.html: {e}"))?;
            // Two requests on one connection: both 200, the page's size, nginx named.
            let out = dom0_sh(
                &format!(
                    "curl -s -o /dev/null -o /dev/null -w '%{{http_code}} %{{size_download}} %{{num_connects}}\\n' \
                     -D /tmp/baseline.h http://{IP}/ http://{IP}/; grep -i '^server:' /tmp/baseline.h | head -1"
                ),
                60,
            )?;
            expect(&out, &format!("200 {} 1", page.len()))?;
            expect(&out, &format!("200 {} 0", page.len()))?;
            expect(&out.to_lowercase(), "server: nginx")?;
            Ok(String::new())
        }),
        case("iperf3_measures_both_directions", || {
            let out = dom0_sh(
                &format!("iperf3 -c {IP} -t 2 | tail -4; iperf3 -c {IP} -t 2 -R | tail -4"),
                90,
            )?;
            let rates: Vec<&str> = out.lines().filter(|l| l.contains("receiver")).collect();
            if rates.len() != 2 || rates.iter().any(|l| !l.contains("bits/sec")) {
                return Err(format!("want a receiver rate each way:\n{out}"));
            }
            Ok(format!(
                "[{}]",
                rates
                    .join(" | ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        }),
        case("redis_server_answers_redis_cli_and_redis_benchmark", || {
            let out = dom0_sh(
                &format!(
                    "redis-cli -h {IP} ping; redis-cli -h {IP} set k v; redis-cli -h {IP} get k; \
                     redis-benchmark -h {IP} -n 200 -c 10 -t set,get --csv"
                ),
                120,
            )?;
            expect(&out, "PONG")?;
            expect(&out, "OK")?;
            let lines: Vec<&str> = out.lines().collect();
            if !lines.contains(&"v") {
                return Err(format!("GET k did not answer v:\n{out}"));
            }
            expect(&out, "\"SET\"")?;
            expect(&out, "\"GET\"")?;
            lab(&["destroy", NAME])?;
            Ok(String::new())
        }),
        case(
            "durable_redis_keeps_every_acknowledged_write_across_xl_destroy",
            || {
                let dir = xen_tests::root().join("target/lab-images/linux-domu");
                let dir = dir.to_string_lossy().into_owned();
                // An ext4 made on the host (busybox in the guest makes only ext2, whose crash
                // leaves garbage after the AOF's end that redis refuses to load).
                let host = std::path::Path::new(&lab_dir()).join("dom0/blk/baseline-redis-aof.img");
                std::fs::create_dir_all(host.parent().unwrap()).map_err(|e| e.to_string())?;
                let _ = std::fs::remove_file(&host);
                std::fs::File::create(&host)
                    .and_then(|f| f.set_len(64 << 20))
                    .map_err(|e| format!("{}: {e}", host.display()))?;
                let mkfs = xen_tests::run(
                    std::process::Command::new("mkfs.ext4")
                        .args(["-q", "-F"])
                        .arg(&host),
                )?;
                if mkfs.code != Some(0) {
                    return Err(format!("mkfs.ext4 (e2fsprogs): {}", mkfs.output));
                }
                let img = "/mnt/lab/blk/baseline-redis-aof.img";
                let tool = kvcrash()?;
                let log = "/tmp/baseline-kvcrash.log";
                boot_redis_aof(&dir, img)?;
                // Writes under load, the guest destroyed 8 s in: kvcrash ends when the server stops
                // answering (5 s without a reply).
                let w = dom0_sh(
                &format!(
                    "rm -f {log}; {tool} write {AOF_IP} 6379 {log} 60 & sleep 8; xl destroy {AOF_NAME}; wait"
                ),
                120,
            )?;
                let acked: u64 = w
                    .split("acked=")
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    .ok_or(format!("no kvcrash write line:\n{w}"))?;
                if acked == 0 {
                    return Err(format!(
                        "no write was acknowledged before the destroy:\n{w}"
                    ));
                }
                boot_redis_aof(&dir, img)?;
                let c = dom0_sh(&format!("{tool} check {AOF_IP} 6379 {log}"), 200);
                lab(&["destroy", AOF_NAME])?;
                let _ = std::fs::remove_file(&host);
                let c = c?;
                expect(&c, " 0 lost, 0 invalid")?;
                Ok(format!(
                    "[{}]",
                    c.lines()
                        .last()
                        .unwrap_or("")
                        .trim_start_matches("kvcrash: ")
                ))
            },
        ),
    ];
    let ok = xen_tests::run_cases("baseline", cases, 1);
    xen_tests::lab::finish(ok)
}
