//! The network checks (from `tests/net.rs`): apps/echo on the lab's bridge (xenbr0, dom0
//! 10.0.0.1 runs udhcpd) against real clients in dom0, and hostile frames sent out of its vif.

use crate::lab::{dom0_sh, expect, tool, Guest};

/// A guest's MAC for index NN (scripts/lab gives 00:16:3e:00:00:NN the address 10.0.0.(100+NN)
/// for NN 0x01..=0x63; any other NN would get a pool address, so it is refused here).
pub fn mac(nn: u8) -> (String, String) {
    assert!(
        (0x01..=0x63).contains(&nn),
        "MAC index {nn:#x} has no static lease (0x01..=0x63)"
    );
    (
        format!("00:16:3e:00:00:{nn:02x}"),
        format!("10.0.0.{}", 100 + u32::from(nn)),
    )
}

/// Starts echo with MAC index `nn`, `extra` and `more`; waits for "echo: ready"; returns it and
/// its (DHCP) address.
pub fn start_echo(nn: u8, extra: &str, more: &[&str]) -> Result<(Guest, String), String> {
    let (m, ip) = mac(nn);
    let vif = format!("vif=['bridge=xenbr0,mac={m}']");
    let mut lines = vec![vif.as_str(), "memory=16"];
    lines.extend_from_slice(more);
    let g = Guest::start_with("echo", extra, &lines)?;
    g.until("echo: ready on", 90)?;
    Ok((g, ip))
}

/// The echo guest `g` (MAC index `nn`, address `ip`) got its lease from dom0's udhcpd: its
/// console says so and udhcpd's lease file lists its MAC.
pub fn dhcp_lease(g: &Guest, nn: u8, ip: &str) -> Result<String, String> {
    let c = g.console()?;
    expect(&c, &format!("net: DHCP lease {ip}/24 router 10.0.0.1"))?;
    expect(&c, &format!("echo: ready on {ip}/24"))?;
    // udhcpd writes its lease file every 2 s (auto_time): give it a few rounds.
    let leases = dom0_sh(
        &format!(
            "for i in 1 2 3 4 5 6 7 8 9 10; do
               dumpleases -f /run/udhcpd.leases | grep -qi {m} && break; sleep 1
             done
             dumpleases -f /run/udhcpd.leases",
            m = mac(nn).0
        ),
        60,
    )?;
    expect(&leases.to_lowercase(), &mac(nn).0)?;
    Ok(ip.to_string())
}

/// dom0 pings the echo guest `g` at `ip`, and the guest (started with `ping=10.0.0.1`) pings
/// dom0.
pub fn ping_both_ways(g: &Guest, ip: &str) -> Result<String, String> {
    let out = dom0_sh(&format!("ping -c 5 -i 0.2 {ip}"), 60)?;
    expect(&out, "5 packets received")?;
    g.until("echo: ping 10.0.0.1 seq=3 rtt=", 30)?;
    let c = g.console()?;
    if c.contains("echo: ping 10.0.0.1 seq=") && c.contains("failed") {
        return Err(format!("a guest ping failed:\n{c}"));
    }
    Ok(out.lines().last().unwrap_or("").to_string())
}

/// 100 MB of random bytes through the echo server at `ip` port 7, compared as they come back.
pub fn echo_100_mb(ip: &str) -> Result<String, String> {
    // The stream is compared as it comes back, byte for byte, by streamdiff
    // (tests/lab-tools/streamdiff.c): on a mismatch it prints where the bytes differ and
    // where else in the sent stream the received ones were.
    let streamdiff = tool("streamdiff")?;
    let out = dom0_sh(
        &format!(
            "head -c 100000000 /dev/urandom > /tmp/in.bin
             a=$(cut -d' ' -f1 /proc/uptime)
             socat -t 60 - TCP:{ip}:7 < /tmp/in.bin | {streamdiff} /tmp/in.bin
             b=$(cut -d' ' -f1 /proc/uptime)
             rm -f /tmp/in.bin
             echo \"secs $a $b\""
        ),
        600,
    )?;
    expect(&out, "streamdiff: identical")?;
    let secs = out
        .lines()
        .find_map(|l| l.strip_prefix("secs "))
        .and_then(|t| {
            let v: Vec<f64> = t.split(' ').filter_map(|x| x.parse().ok()).collect();
            (v.len() == 2).then(|| v[1] - v[0])
        })
        .unwrap_or(0.0);
    Ok(format!("[100 MB each way in {secs:.1} s]"))
}

/// 20000 garbage frames (tests/lab-tools/rawstorm.c) out of the guest's vif; echo still
/// echoes, answers pings and has not panicked.
pub fn garbage_frame_storm(g: &Guest, nn: u8, ip: &str) -> Result<String, String> {
    let storm = tool("rawstorm")?;
    let out = dom0_sh(
        &format!(
            "{storm} vif{}.0 {} 20000 1
             r=$(echo after-storm | socat -t 5 - TCP:{ip}:7)
             echo \"tcp=$r\"
             ping -c 2 -i 0.2 {ip} | tail -2",
            g.domid(),
            mac(nn).0
        ),
        600,
    )?;
    expect(&out, "rawstorm: sent 20000 frames")?;
    expect(&out, "tcp=after-storm")?;
    expect(&out, "2 packets received")?;
    let c = g.console()?;
    if c.contains("PANIC") {
        return Err(format!("guest panicked:\n{c}"));
    }
    Ok(String::new())
}

/// `n` frames of the valid-checksum adversary's CLASS (tests/lab-tools/adversary.c, as
/// `tests/adversary.rs` sends them, here at one guest) out of the echo guest's vif; then the
/// domain still runs, has not panicked, and a new connection is echoed.
pub fn adversary_class(g: &Guest, nn: u8, ip: &str, class: &str, n: u64) -> Result<String, String> {
    let adv = tool("adversary")?;
    let out = dom0_sh(
        &format!(
            "{adv} -i vif{d}.0 -m {m} -a {ip} -c {class} -n {n} -S 1 -p 7,9,19 2>&1
             echo \"state $(xl list {name} | awk 'NR==2{{print $5}}')\"
             echo \"echo=$(echo after-{class} | socat -t 5 - TCP:{ip}:7)\"",
            d = g.domid(),
            m = mac(nn).0,
            name = g.name
        ),
        600,
    )?;
    let sent = out
        .lines()
        .find(|l| l.contains(" sent "))
        .ok_or(format!("adversary {class}:\n{out}"))?
        .to_string();
    let st = out
        .lines()
        .find_map(|l| l.strip_prefix("state "))
        .unwrap_or("")
        .trim();
    if st.is_empty() || st.contains(['c', 's', 'd']) {
        return Err(format!("{} after {class}: xl list state {st:?}", g.name));
    }
    expect(&out, &format!("echo=after-{class}"))?;
    let c = g.console()?;
    if c.contains("PANIC") {
        return Err(format!("guest panicked after {class}:\n{c}"));
    }
    Ok(format!("[{}]", sent.trim_start_matches("adversary: ")))
}
