//! The lab tier for the main job: apps/httpd as a real domU, driven by curl and wrk in dom0 and
//! by a plain TCP client on the host through the lab's port forward.

use std::io::{Read, Write};
use std::sync::OnceLock;
use xen_tests::case;
use xen_tests::checks::http::{
    get_head_404_405_and_etag, md5_of, start_httpd, wrk_without_errors, www,
};
use xen_tests::lab::{
    dom0_sh, expect, host_get, lab, start_and_connect_when_ready, Guest, Ready, Runstate,
    ScriptsRun,
};

const MAC: &str = "00:16:3e:00:00:41";
const IP: &str = "10.0.0.165";

fn server() -> Result<&'static Guest, String> {
    static S: OnceLock<Result<Guest, String>> = OnceLock::new();
    S.get_or_init(|| start_httpd(MAC, "log=info idle=5", &[]))
        .as_ref()
        .map_err(|e| e.clone())
}

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![
        case("get_head_404_405_and_etag_from_dom0", || {
            get_head_404_405_and_etag(server()?, IP)
        }),
        case(
            "static_address_ready_node_then_the_first_client_is_served",
            || {
                // What the on-demand activator relies on: data/xenrt/ready appears only once the
                // listener is up, so a client connecting the moment it appears is answered (a
                // SYN before the listener would get a RST: curl would say 000).
                let ip = "10.0.0.14"; // outside udhcpd's pool (10.0.0.20-254)
                let (g, node, out) = start_and_connect_when_ready(
                    "httpd",
                    &format!("log=info ip={ip}/24 gw=10.0.0.1"),
                    &[],
                    &format!(
                    "curl -s -o /dev/null -w 'first %{{http_code}}\\n' --max-time 20 http://{ip}/"
                ),
                )?;
                expect(&out, "first 200")?;
                g.until("httpd: serving", 30)?;
                let c = g.console()?;
                let line = Ready::from_console(&c, "httpd")?;
                if line != node || node.endpoints != [format!("{ip}:80")] {
                    return Err(format!("console {line:?} vs node {node:?}"));
                }
                expect(&c, "GET / 200")?;
                // Xen's split of that time must be on the line, and the states cannot add up
                // to more than the whole (both are the same span by two clocks: 1 ms slack
                // for the rounding of four figures and the two readings' order).
                let split = Runstate::from_console(&c, "httpd")?;
                if split.sum_ms() > split.total_ms + 1.0 {
                    return Err(format!("the runstate split exceeds the total: {split:?}"));
                }
                Ok(format!(
                    "entry -> listening {} ms (static address): running {} ms, blocked {} ms, runnable {} ms",
                    line.ms, split.running_ms, split.blocked_ms, split.runnable_ms
                ))
            },
        ),
        case("dhcp_ready_node_names_the_leased_address", || {
            let g = server()?;
            let c = g.console()?;
            let line = Ready::from_console(&c, "httpd")?;
            let v = dom0_sh(
                &format!("xenstore-read /local/domain/{}/data/xenrt/ready", g.domid()),
                30,
            )?;
            let node = Ready::from_node(v.trim())?;
            if line != node || node.endpoints != [format!("{IP}:80")] {
                return Err(format!("console {line:?} vs node {node:?}"));
            }
            Ok(format!("entry -> listening {} ms (DHCP)", line.ms))
        }),
        case("big_file_is_byte_exact", || {
            server()?;
            let out = dom0_sh(&format!("curl -s http://{IP}/big.txt | md5sum"), 60)?;
            expect(&out, &format!("{:x}", md5_of(&www("big.txt"))))?;
            Ok(String::new())
        }),
        case("keep_alive_serves_many_requests_on_one_connection", || {
            server()?;
            let urls: Vec<String> = (0..50).map(|_| format!("http://{IP}/style.css")).collect();
            let out = dom0_sh(
                &format!(
                    "curl -s -o /dev/null -w '%{{http_code}} %{{num_connects}}\\n' {}",
                    urls.join(" ")
                ),
                120,
            )?;
            let lines: Vec<&str> = out.lines().collect();
            let ok = lines.iter().filter(|l| l.starts_with("200 ")).count();
            let connects: u32 = lines
                .iter()
                .filter_map(|l| l.split(' ').nth(1)?.parse::<u32>().ok())
                .sum();
            if ok != 50 || connects != 1 {
                return Err(format!("{ok} of 50 ok over {connects} connections:\n{out}"));
            }
            Ok("[50 requests, 1 connection]".into())
        }),
        case("pipelined_requests_are_answered_in_order", || {
            server()?;
            let out = dom0_sh(
                &format!(
                    "printf 'GET /style.css HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nHEAD / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /nope HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' \
                     | socat -t 5 - TCP:{IP}:80 | grep -a '^HTTP/1.1'"
                ),
                60,
            )?;
            let status: Vec<&str> = out.lines().map(|l| l.trim()).collect();
            if status
                != [
                    "HTTP/1.1 200 OK",
                    "HTTP/1.1 200 OK",
                    "HTTP/1.1 404 Not Found",
                ]
            {
                return Err(format!("responses: {status:?}"));
            }
            Ok(String::new())
        }),
        case("malformed_requests_get_4xx_and_serving_goes_on", || {
            server()?;
            let out = dom0_sh(
                &format!(
                    "printf 'garbage\\r\\n\\r\\n' | socat -t 3 - TCP:{IP}:80 | head -1
                     printf 'GET / HTTP/9.9\\r\\nHost: x\\r\\n\\r\\n' | socat -t 3 - TCP:{IP}:80 | head -1
                     printf 'GET / HTTP/1.1\\r\\n\\r\\n' | socat -t 3 - TCP:{IP}:80 | head -1
                     (printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\nX: '; head -c 20000 /dev/zero | tr '\\0' a; printf '\\r\\n\\r\\n') | socat -t 3 - TCP:{IP}:80 | head -1
                     head -c 3000 /dev/urandom | socat -t 3 - TCP:{IP}:80 | head -c 12; echo
                     curl -s -o /dev/null -w 'after %{{http_code}}\\n' http://{IP}/"
                ),
                120,
            )?;
            for want in ["HTTP/1.1 400", "HTTP/1.1 505", "HTTP/1.1 431", "after 200"] {
                expect(&out, want)?;
            }
            if out.matches("HTTP/1.1 400").count() < 2 {
                return Err(format!("missing Host should be 400 too:\n{out}"));
            }
            Ok(String::new())
        }),
        case("hundred_concurrent_clients_with_wrk", || {
            server()?;
            wrk_without_errors(IP, 5)
        }),
        case("sustained_load_in_4_mib_without_errors", || {
            // 30 s of wrk -c 100 against a second httpd with memory=4: memory must not grow
            // (timers, heap) and no packet may be refused by netback (TX slot layout).
            let g = Guest::start_with(
                "httpd",
                "log=warn",
                &["vif=['bridge=xenbr0,mac=00:16:3e:00:00:42']", "memory=4"],
            )?;
            g.until("httpd: serving", 90)?;
            let out = dom0_sh(
                "wrk -t 2 -c 100 -d 30 --timeout 10s http://10.0.0.166/ 2>&1
                 curl -s -o /dev/null -w 'after %{http_code}\n' http://10.0.0.166/",
                180,
            );
            let c = g.console()?;
            let _ = lab(&["destroy", &g.name]);
            let out = out?;
            if out.contains("Non-2xx") || out.contains("Socket errors") {
                return Err(format!("errors under load:\n{out}"));
            }
            expect(&out, "after 200")?;
            if c.contains("PANIC") || c.contains("backend failed tx") {
                return Err(format!("guest console:\n{c}"));
            }
            Ok(out
                .lines()
                .find(|l| l.contains("requests in"))
                .map(|l| format!("[{}]", l.trim()))
                .unwrap_or_default())
        }),
        case("a_slow_client_does_not_block_others", || {
            server()?;
            // A client that sends half a request and then nothing, for 8 s; meanwhile 20 other
            // requests must all be served (each with a 4 s cap).
            let out = dom0_sh(
                &format!(
                    "(printf 'GET / HTTP/1.1\\r\\nHo'; sleep 8) | socat -t 10 - TCP:{IP}:80 > /tmp/slow.out &
                     ok=0; i=0
                     while [ $i -lt 20 ]; do
                       c=$(curl -s -o /dev/null -m 4 -w '%{{http_code}}' http://{IP}/)
                       [ \"$c\" = 200 ] && ok=$((ok+1))
                       i=$((i+1))
                     done
                     echo \"ok=$ok\"
                     wait"
                ),
                60,
            )?;
            expect(&out, "ok=20")?;
            Ok(String::new())
        }),
        case("host_reaches_httpd_through_the_port_forward", || {
            server()?;
            let port = 18080 + (std::process::id() % 1000) as u16;
            let f = lab(&["forward", &port.to_string(), &format!("{IP}:80")])?;
            if f.code != Some(0) {
                return Err(format!("forward failed: {}", f.output));
            }
            let r = (|| {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
                    .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
                s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                    .map_err(|e| e.to_string())?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .map_err(|e| e.to_string())?;
                let mut body = Vec::new();
                s.read_to_end(&mut body).map_err(|e| e.to_string())?;
                Ok::<_, String>(String::from_utf8_lossy(&body).to_string())
            })();
            let _ = lab(&["unforward", &port.to_string()]);
            let body = r?;
            expect(&body, "HTTP/1.1 200 OK")?;
            expect(&body, &String::from_utf8_lossy(&www("index.html")))?;
            Ok(format!("[127.0.0.1:{port}]"))
        }),
        case("scripts_run_httpd_serves_the_host_until_ctrl_c", || {
            // The README's first command, against the running test lab: it must print a URL
            // that works from this host, and Ctrl-C must shut the guest down (exit 130).
            let port = 19080 + (std::process::id() % 1000) as u16;
            let url = format!("http://127.0.0.1:{port}/");
            let port_s = port.to_string();
            let run = ScriptsRun::start(
                &["httpd"],
                &[("RUN_PORT", &port_s)],
                &format!("is at {url}"),
                180,
            )?;
            let body = host_get(port);
            let (code, seen) = run.stop()?;
            let body = body.ok_or(format!("GET {url} failed:\n{seen}"))?;
            expect(&body, "HTTP/1.1 200 OK")?;
            if code != Some(130) {
                return Err(format!("exit {code:?} after Ctrl-C:\n{seen}"));
            }
            let l = lab(&["exec", "xl list"])?;
            if l.output.lines().any(|x| x.starts_with("httpd ")) {
                return Err(format!("httpd still running after Ctrl-C:\n{}", l.output));
            }
            Ok(format!("[{url}, exit 130 after Ctrl-C]"))
        }),
        case("xl_shutdown_stops_httpd_cleanly", || {
            server()?.shutdown_cleanly()
        }),
    ];
    let ok = xen_tests::run_cases("http", cases, 1);
    xen_tests::lab::finish(ok)
}
