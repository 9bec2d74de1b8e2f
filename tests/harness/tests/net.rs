//! The lab tier for networking: apps/echo (netfront + smoltcp) as real domUs on the lab's bridge
//! (xenbr0, dom0 10.0.0.1 runs udhcpd), driven by real clients in dom0 (ping, socat) and by
//! another of our guests.

use std::sync::OnceLock;
use xen_tests::case;
use xen_tests::checks::net::{
    dhcp_lease, echo_100_mb, garbage_frame_storm, mac, ping_both_ways, start_echo,
};
use xen_tests::lab::{dom0_sh, expect, lab, start_and_connect_when_ready, tool, Guest, Ready};

/// One echo guest (DHCP) shared by the cases that only need a server.
fn server() -> Result<&'static (Guest, String), String> {
    static S: OnceLock<Result<(Guest, String), String>> = OnceLock::new();
    S.get_or_init(|| start_echo(0x30, "log=info ping=10.0.0.1", &[]))
        .as_ref()
        .map_err(|e| e.clone())
}

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![
        case("guest_gets_a_dhcp_lease_from_dom0", || {
            let (g, ip) = server()?;
            dhcp_lease(g, 0x30, ip)
        }),
        case(
            "echo_static_address_ready_node_then_the_first_client_is_served",
            || {
                let ip = "10.0.0.15"; // outside udhcpd's pool
                let (g, node, out) = start_and_connect_when_ready(
                    "echo",
                    &format!("log=info ip={ip}/24 gw=10.0.0.1"),
                    &["memory=16"],
                    &format!("echo first-hello | socat -t 5 - TCP:{ip}:7"),
                )?;
                expect(&out, "first-hello")?;
                g.until("echo: ready on", 30)?;
                let c = g.console()?;
                let line = Ready::from_console(&c, "echo")?;
                let want: Vec<String> = [7, 9, 19, 5201]
                    .iter()
                    .map(|p| format!("{ip}:{p}"))
                    .collect();
                if line != node || node.endpoints != want {
                    return Err(format!("console {line:?} vs node {node:?}"));
                }
                Ok(format!(
                    "entry -> listening {} ms (static address)",
                    line.ms
                ))
            },
        ),
        case("ping_dom0_to_guest_and_guest_to_dom0", || {
            let (g, ip) = server()?;
            ping_both_ways(g, ip)
        }),
        case("ipv6_link_local_ping", || {
            let (_, ip) = server()?;
            let _ = ip;
            // fe80:: + modified EUI-64 of 00:16:3e:00:00:30.
            let out = dom0_sh("ping6 -c 3 -i 0.2 -I xenbr0 fe80::216:3eff:fe00:30", 60)?;
            expect(&out, "3 packets received")?;
            Ok(String::new())
        }),
        case("tcp_echo_of_100_mb_comes_back_byte_for_byte", || {
            echo_100_mb(&server()?.1)
        }),
        case("thousand_sequential_connections", || {
            let (_, ip) = server()?;
            // One client process for all of them (tests/lab-tools/seqconn.c): a shell loop
            // forking socat per connection took ~4 min of the suite in the emulated dom0.
            let seqconn = tool("seqconn")?;
            let out = dom0_sh(&format!("{seqconn} {ip} 7 1000 2>&1 | tail -5"), 900)?;
            expect(&out, "ok=1000")?;
            Ok(String::new())
        }),
        case("hundred_concurrent_connections", || {
            let (_, ip) = server()?;
            // Each client holds its connection for 3 s, so all 100 are open at once.
            let out = dom0_sh(
                &format!(
                    "rm -rf /tmp/cc; mkdir /tmp/cc; i=0
                     while [ $i -lt 100 ]; do
                       (printf \"client-$i\"; sleep 3) | socat -t 10 - TCP:{ip}:7 > /tmp/cc/$i 2>/tmp/cc/err$i &
                       i=$((i+1))
                     done
                     wait
                     ok=0; i=0
                     while [ $i -lt 100 ]; do
                       if [ \"$(cat /tmp/cc/$i)\" = \"client-$i\" ]; then ok=$((ok+1));
                       else echo \"client-$i got '$(cat /tmp/cc/$i)'\"; fi
                       i=$((i+1))
                     done
                     rm -rf /tmp/cc
                     echo \"ok=$ok\""
                ),
                300,
            )?;
            expect(&out, "ok=100")?;
            Ok(String::new())
        }),
        case("udp_echo", || {
            let (_, ip) = server()?;
            let out = dom0_sh(
                &format!(
                    "ok=0; i=0
                     while [ $i -lt 20 ]; do
                       # UDP may lose a datagram: up to 3 tries, each reply must match.
                       for try in 1 2 3; do
                         r=$(echo \"datagram-$i\" | socat -t 1 - UDP:{ip}:7)
                         [ \"$r\" = \"datagram-$i\" ] && {{ ok=$((ok+1)); break; }}
                         echo \"datagram-$i try $try got '$r'\"
                       done
                       i=$((i+1))
                     done
                     echo \"ok=$ok\""
                ),
                120,
            )?;
            expect(&out, "ok=20")?;
            Ok(String::new())
        }),
        case("two_of_our_guests_talk_static_address_and_dhcp", || {
            let (a, _) = start_echo(0x31, "ip=10.0.0.10/24 gw=10.0.0.1", &[])?;
            let (b, _) = start_echo(0x32, "peer=10.0.0.10", &[])?;
            b.until("echo: peer 10.0.0.10", 90)?;
            let c = b.console()?;
            let _ = lab(&["destroy", &a.name]);
            let _ = lab(&["destroy", &b.name]);
            expect(&c, "echo: peer 10.0.0.10 ok 65536 bytes")?;
            Ok(String::new())
        }),
        case("two_vifs_each_serve_and_one_hot_unplugs", || {
            let (m1, ip1) = mac(0x34);
            let (m2, ip2) = mac(0x35);
            let g = Guest::start_with(
                "echo",
                "vifs=all",
                &[
                    &format!("vif=['bridge=xenbr0,mac={m1}', 'bridge=xenbr0,mac={m2}']"),
                    "memory=16",
                ],
            )?;
            g.until(&format!("echo: ready on {ip2}"), 90)?;
            g.until(&format!("echo: ready on {ip1}"), 30)?;
            let out = dom0_sh(
                &format!(
                    "for ip in {ip1} {ip2}; do
                       echo \"$ip $(echo via-$ip | socat -t 5 - TCP:$ip:7)\"
                       ping -c 1 $ip | grep -c 'bytes from'
                     done"
                ),
                60,
            );
            let out = out?;
            expect(&out, &format!("{ip1} via-{ip1}"))?;
            expect(&out, &format!("{ip2} via-{ip2}"))?;
            // Hot-unplug the second vif: the guest notices the backend closing, closes its
            // frontend so the detach completes, and the first vif keeps serving.
            let detach = lab(&[
                "exec",
                "-t",
                "60",
                &format!("xl network-detach {} 1", g.name),
            ])?;
            let after = dom0_sh(
                &format!("echo still-$((1+1)) | socat -t 5 - TCP:{ip1}:7"),
                60,
            );
            let c = g.console()?;
            let _ = lab(&["destroy", &g.name]);
            if detach.code != Some(0) {
                return Err(format!("xl network-detach: {}\n{c}", detach.output));
            }
            expect(&c, "net: device/vif/1 link down")?;
            expect(&c, "net: device/vif/1 closed and released")?;
            expect(&after?, "still-2")?;
            Ok(String::new())
        }),
        case("dns_query_to_a_server_in_dom0", || {
            // Our one-name DNS server (tests/lab-tools/dnsone.c) on dom0's 10.0.0.1:53.
            let dns = tool("dnsone")?;
            lab(&[
                "exec",
                &format!("(setsid {dns} www.xenrt.test 10.9.8.7 60 > /tmp/dnsone.log 2>&1 &)"),
            ])?;
            let (g, _) = start_echo(0x33, "dns=10.0.0.1 resolve=www.xenrt.test", &[])?;
            g.until("echo: resolve www.xenrt.test", 60)?;
            let c = g.console()?;
            let _ = lab(&["destroy", &g.name]);
            // Done with it: port 53 is free again for the tiers after this one (ondemand's
            // activator answers DNS there).
            let _ = lab(&["exec", "kill $(pidof dnsone) 2>/dev/null; true"]);
            expect(&c, "echo: resolve www.xenrt.test -> [10.9.8.7]")?;
            Ok(String::new())
        }),
        case("garbage_frame_storm_leaves_echo_answering", || {
            let (g, ip) = server()?;
            garbage_frame_storm(g, 0x30, ip)
        }),
        case("xl_shutdown_powers_off_a_networked_guest", || {
            server()?.0.shutdown_cleanly()
        }),
    ];
    let ok = xen_tests::run_cases("net", cases, 1);
    xen_tests::lab::finish(ok)
}
