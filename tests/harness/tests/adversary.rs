//! The lab tier against a valid-checksum adversary on the guests' LAN: tests/lab-tools/adversary.c
//! in dom0 sends frames out of each guest's vif (an AF_PACKET socket: the attacker is on-path)
//! to an echo guest and an httpd guest at once, one class of attack at a time, every frame with
//! correct IPv4/TCP/UDP/ICMP/ICMPv6 checksums (so it reaches the guest's protocol code).
//!
//! Before the classes, dom0 opens one TCP connection to each guest (socat fed from a file, so it
//! stays open across a class). After each class, for both guests: the domain still runs (`xl
//! list`), its console has no PANIC, a new connection is served (echo echoes, httpd answers a
//! GET), and the connection opened before still works. The one class that may reset it is
//! `rst-exact`: an RST carrying exactly the guest's RCV.NXT, which RFC 5961 §3.2 says must reset
//! (an on-path attacker can always do that); the test asserts that it does. The in-window RSTs
//! of `established` (any other sequence number) must not (net::filter).
//!
//! `ADV_FRAMES` (default 100000) frames per class per guest; `ADV_RATE` frames/s per guest
//! (default 0: as fast as dom0 sends). Each case prints the frames sent and the rate.

use std::sync::OnceLock;
use xen_tests::case;
use xen_tests::lab::{dom0_sh, lab, tool, Guest};

struct Target {
    guest: Guest,
    ip: String,
    mac: String,
    /// The guest's port the prior connection goes to.
    port: u16,
    /// "echo" or "http": what the prior connection speaks.
    kind: &'static str,
}

fn mac(nn: u8) -> (String, String) {
    (
        format!("00:16:3e:00:00:{nn:02x}"),
        format!("10.0.0.{}", 100 + u32::from(nn)),
    )
}

fn targets() -> Result<&'static [Target; 2], String> {
    static T: OnceLock<Result<[Target; 2], String>> = OnceLock::new();
    T.get_or_init(|| {
        let (em, eip) = mac(0x60);
        let (hm, hip) = mac(0x61);
        let echo = Guest::start_with(
            "echo",
            "log=info",
            &[&format!("vif=['bridge=xenbr0,mac={em}']"), "memory=16"],
        )?;
        // idle=900: the prior connection sits idle through the classes.
        let httpd = Guest::start_with(
            "httpd",
            "log=warn idle=900",
            &[&format!("vif=['bridge=xenbr0,mac={hm}']")],
        )?;
        echo.until("echo: ready on", 90)?;
        httpd.until("httpd: serving", 90)?;
        Ok([
            Target {
                guest: echo,
                ip: eip,
                mac: em,
                port: 7,
                kind: "echo",
            },
            Target {
                guest: httpd,
                ip: hip,
                mac: hm,
                port: 80,
                kind: "http",
            },
        ])
    })
    .as_ref()
    .map_err(|e| e.clone())
}

fn frames() -> u64 {
    std::env::var("ADV_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn rate() -> u64 {
    std::env::var("ADV_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// dom0's port for a target's prior connection number `gen`.
fn client_port(t: &Target, gen: u32) -> u16 {
    (if t.kind == "echo" { 47000 } else { 48000 }) + gen as u16
}

/// A line to send on the prior connection and what proves it was answered.
fn probe(t: &Target, tag: &str) -> (String, String) {
    if t.kind == "echo" {
        (format!("alive-{tag}\\n"), format!("alive-{tag}"))
    } else {
        (
            format!("GET /style.css?{tag} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"),
            "HTTP/1.1 200".to_string(),
        )
    }
}

/// Opens prior connection `gen` to each target (dom0: `tail -f IN | socat - TCP:... > OUT`) and
/// checks it answers once.
fn open_prior(gen: u32) -> Result<(), String> {
    let mut script = String::from("mkdir -p /tmp/adv\n");
    for t in targets()? {
        let d = format!("/tmp/adv/{}", t.kind);
        script += &format!(
            "pkill -f 'sourceport={old}' 2>/dev/null; rm -f {d}.in {d}.out {d}.err; : > {d}.in
             setsid sh -c 'tail -f {d}.in | {{ socat - TCP:{ip}:{port},sourceport={cp},reuseaddr > {d}.out 2> {d}.err; echo exit=$? >> {d}.err; }}' < /dev/null > /dev/null 2>&1 &
            ",
            old = client_port(t, gen.saturating_sub(1)),
            ip = t.ip,
            port = t.port,
            cp = client_port(t, gen),
        );
    }
    dom0_sh(&script, 30)?;
    for t in targets()? {
        prior_answers(t, &format!("open{gen}"))?;
    }
    Ok(())
}

/// dom0 shell that sends a probe on the target's prior connection and prints "prior KIND
/// answered" once it is answered (within 10 s), else "prior KIND not answered" and socat's end.
fn prior_script(t: &Target, tag: &str) -> String {
    let (send, want) = probe(t, tag);
    let (d, k) = (format!("/tmp/adv/{}", t.kind), t.kind);
    format!(
        "before=$(grep -c '{want}' {d}.out)
         printf '{send}' >> {d}.in
         ok=
         for i in $(seq 1 50); do
           [ $(grep -c '{want}' {d}.out) -gt $before ] && {{ ok=1; break; }}
           sleep 0.2
         done
         if [ -n \"$ok\" ]; then echo 'prior {k} answered'; else
           echo 'prior {k} not answered; socat:'; cat {d}.err; tail -c 300 {d}.out; echo; fi
        "
    )
}

/// Sends a probe on the target's prior connection; Ok when it is answered within 10 s.
fn prior_answers(t: &Target, tag: &str) -> Result<(), String> {
    let out = dom0_sh(&prior_script(t, tag), 30)?;
    if out.contains(&format!("prior {} answered", t.kind)) {
        Ok(())
    } else {
        Err(out)
    }
}

/// The checks after a class, for both guests: running (`xl list`), no PANIC, new connections
/// served (echo echoes, httpd answers a GET), and the prior connection alive.
fn survived(class: &str) -> Result<(), String> {
    let [echo, httpd] = targets()?;
    let mut script = String::new();
    for t in targets()? {
        script += &format!(
            "echo \"state {} $(xl list {} | awk 'NR==2{{print $5}}')\"\n",
            t.kind, t.guest.name
        );
    }
    script += &format!(
        "r=$(echo fresh-{class} | socat -t 5 - TCP:{}:7)
         echo \"echo=$r\"
         echo \"http=$(curl -s -m 10 -o /dev/null -w '%{{http_code}}' http://{}/)\"
        ",
        echo.ip, httpd.ip
    );
    for t in targets()? {
        script += &prior_script(t, class);
    }
    let out = dom0_sh(&script, 90)?;
    for t in targets()? {
        let st = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("state {} ", t.kind)))
            .unwrap_or("")
            .trim();
        if st.is_empty() || st.contains(['c', 's', 'd']) {
            return Err(format!(
                "{} after {class}: xl list state {st:?}",
                t.guest.name
            ));
        }
        let c = t.guest.console()?;
        if c.contains("PANIC") {
            return Err(format!("{} panicked after {class}:\n{c}", t.guest.name));
        }
        if !out.contains(&format!("prior {} answered", t.kind)) {
            return Err(format!("{} prior connection after {class}:\n{out}", t.kind));
        }
    }
    if !out.contains(&format!("echo=fresh-{class}")) || !out.contains("http=200") {
        return Err(format!("new connections after {class}: {out}"));
    }
    Ok(())
}

/// Runs one class against both guests at once (one adversary per vif, told the prior
/// connection so it can aim at it and keeps its own source ports off it); returns the summary.
fn attack(class: &str, count: u64, gen: u32) -> Result<String, String> {
    let adv = tool("adversary")?;
    let mut script = String::new();
    for (i, t) in targets()?.iter().enumerate() {
        let k = format!("-k {}:{}", t.port, client_port(t, gen));
        script += &format!(
            "{adv} -i vif{}.0 -m {} -a {} -c {class} -n {count} -S {} -r {} -p {} {k} > /tmp/adv/run{i}.log 2>&1 &\n",
            t.guest.domid(),
            t.mac,
            t.ip,
            i + 1,
            rate(),
            if t.kind == "echo" { "7,9,19" } else { "80" },
        );
    }
    script += "wait; cat /tmp/adv/run0.log /tmp/adv/run1.log\n";
    // What netback handed to each guest and what it dropped (the guest could not keep up).
    let stats = |tag: &str| -> Result<String, String> {
        let mut s = String::new();
        for t in targets()? {
            let d = format!("/sys/class/net/vif{}.0/statistics", t.guest.domid());
            s += &format!(
                "echo \"{tag} {} $(cat {d}/tx_packets) $(cat {d}/tx_dropped)\"\n",
                t.kind
            );
        }
        Ok(s)
    };
    let script = format!("{}{script}{}", stats("before")?, stats("after")?);
    let start = std::time::Instant::now();
    let out = dom0_sh(&script, 600)?;
    let secs = start.elapsed().as_secs_f64();
    let sent: Vec<&str> = out.lines().filter(|l| l.contains(" sent ")).collect();
    if sent.len() != 2 {
        return Err(format!("adversary {class}:\n{out}"));
    }
    let total: u64 = sent
        .iter()
        .filter_map(|l| {
            l.split(" sent ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    if total < 2 * count {
        return Err(format!(
            "adversary {class} sent {total} of {}:\n{out}",
            2 * count
        ));
    }
    let mut delivered = String::new();
    for t in targets()? {
        let nums = |tag: &str| -> Option<(u64, u64)> {
            let l = out
                .lines()
                .find(|l| l.starts_with(&format!("{tag} {} ", t.kind)))?;
            let mut it = l.split_whitespace().skip(2).map(|v| v.parse::<u64>().ok());
            Some((it.next()??, it.next()??))
        };
        if let (Some(b), Some(a)) = (nums("before"), nums("after")) {
            delivered += &format!(
                " | {}: netback delivered {}, dropped {}",
                t.kind,
                a.0.saturating_sub(b.0),
                a.1.saturating_sub(b.1)
            );
        }
    }
    Ok(format!(
        "[{class}: {total} frames to 2 guests in {secs:.1} s, {:.0} frames/s{delivered} | {}]",
        total as f64 / secs,
        sent.iter()
            .map(|l| l.trim_start_matches("adversary: "))
            .collect::<Vec<_>>()
            .join(" | ")
    ))
}

/// One class: attack, then the checks.
fn class(name: &'static str) -> xen_tests::Case {
    case(name, move || {
        targets()?;
        PRIOR.get_or_init(|| open_prior(0)).clone()?;
        let note = attack(name, frames(), 0)?;
        survived(name)?;
        Ok(note)
    })
}

static PRIOR: OnceLock<Result<(), String>> = OnceLock::new();

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![
        class("tcpflags"),
        class("icmp"),
        class("frag"),
        class("ipv6"),
        class("dhcp"),
        class("established"),
        case("rst-exact", || {
            // The one legitimate reset: seq == RCV.NXT on each prior connection. Each guest's
            // side must be gone: the next probe is answered with a reset (socat exits), and
            // fresh connections are still served.
            targets()?;
            PRIOR.get_or_init(|| open_prior(0)).clone()?;
            let note = attack("rst-exact", 1, 0)?;
            // The guest's side is gone: a probe is answered with a reset, so socat ends (and
            // the probe is not echoed).
            let mut script = String::new();
            for t in targets()? {
                let (send, want) = probe(t, "after-reset");
                let d = format!("/tmp/adv/{}", t.kind);
                script += &format!(
                    "printf '{send}' >> {d}.in
                     for i in $(seq 1 50); do grep -q exit= {d}.err && break; sleep 0.2; done
                     grep -q exit= {d}.err && echo 'reset {k} ended' || echo 'reset {k} still connected'
                     grep -q '{want}' {d}.out && echo 'reset {k} answered'
                     cat {d}.err
                    ",
                    k = t.kind
                );
            }
            let out = dom0_sh(&script, 60)?;
            for t in targets()? {
                if !out.contains(&format!("reset {} ended", t.kind)) {
                    return Err(format!(
                        "{}: the exact RST did not reset it:\n{out}",
                        t.kind
                    ));
                }
                if t.kind == "echo" && out.contains("reset echo answered") {
                    return Err(format!("echo answered after the exact RST:\n{out}"));
                }
            }
            open_prior(1)?;
            survived("rst-exact")?;
            Ok(note)
        }),
    ];
    let start = std::time::Instant::now();
    let ok = xen_tests::run_cases("adversary", cases, 1);
    println!(
        "adversary: file took {:.0} s of lab time",
        start.elapsed().as_secs_f64()
    );
    if let Ok(ts) = targets() {
        for t in ts {
            let _ = lab(&["destroy", &t.guest.name]);
        }
    }
    xen_tests::lab::finish(ok)
}
