//! The lab tier: one boot of the lab (real Xen 4.17 + a Linux dom0 with xl, in QEMU; see
//! scripts/lab) serves every case; each case starts our images as real domUs with `xl create`
//! and checks their consoles (the PV console ring, via xenconsoled) and how they ended.

use std::process::Command;
use xen_tests::checks::basic::{
    bad_extra_is_reported, hello_prints_and_powers_off, panic_ends_crashed,
    xl_destroy_stops_a_running_guest, xl_reboot_restarts_the_guest,
    xl_shutdown_powers_the_guest_off,
};
use xen_tests::lab::{expect, lab, lab_dir, Guest};
use xen_tests::{case, root, run};

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![
        case("hello_as_domu_prints_through_the_console_ring", || {
            hello_prints_and_powers_off(&[])
        }),
        case("std_hello_as_domu_runs_and_powers_off", || {
            let g = Guest::start("std-hello", "log=info -- one two")?;
            let end = g.wait(60)?;
            let c = g.console()?;
            expect(&c, "Hello from std on xenrt")?;
            expect(&c, r#"args: ["xenrt", "one", "two"]"#)?;
            expect(&c, "threads joined: [10, 20, 30, 40]")?;
            expect(&c, "mutex counter: 4000")?;
            expect(&c, "condvar handshake: 2")?;
            expect(&c, "mpsc received 300 messages, sum 314850")?;
            expect(&c, ", ok")?;
            expect(&c, "condvar wait_timeout timed out: true")?;
            expect(&c, "spinner stopped (it spun)")?;
            // std::fs as a domU too (the dom0 case checks each line).
            expect(&c, r#"baked file: "baked into the image""#)?;
            expect(
                &c,
                "write to baked file: Read-only file system (os error 30)",
            )?;
            expect(&c, r#"unlinked but open: "one\ntwo\n", name gone: true"#)?;
            expect(&c, "removed: NotFound")?;
            if c.contains("TOO SHORT") {
                return Err("a thread's sleep ended early".into());
            }
            expect(&c, "xenrt: exit poweroff")?;
            (end == "poweroff")
                .then_some(String::new())
                .ok_or(format!("ended with {end}"))
        }),
        case("std_echo_on_mio_echoes_50_parallel_clients", || {
            // A std program on mio (crates.io, unchanged) over the hermit-abi sockets.
            let g = Guest::start("std-echo", "ip=10.0.0.60/24 log=info --")?;
            g.until("std-echo: listening on 0.0.0.0:7", 60)?;
            let one = xen_tests::lab::dom0_sh("echo hi | nc -w 3 10.0.0.60 7", 60)?;
            expect(&one, "hi")?;
            // 50 clients at once, each a different payload, every echo byte-exact.
            let out = fifty_parallel_echoes("10.0.0.60", 97, 180)?;
            expect(&out, "parallel echo: 50/50 ok")?;
            let end = g.shutdown_cleanly();
            let c = g.console()?;
            end.map_err(|e| format!("{e}\n{c}"))?;
            Ok(out.lines().last().unwrap_or("").to_string())
        }),
        case("std_echo_on_mio_echoes_udp_datagrams_byte_exact", || {
            // The same program's UDP side: a mio UdpSocket in the same Poll, on the same port.
            let g = Guest::start("std-echo", "ip=10.0.0.61/24 log=info --")?;
            // (`until` takes a regular expression: no parentheses in it.)
            g.until("std-echo: listening on 0.0.0.0:7 ", 60)?;
            expect(
                &g.console()?,
                "std-echo: listening on 0.0.0.0:7 (tcp) and 0.0.0.0:7 (udp)",
            )?;
            let udpecho = xen_tests::lab::tool("udpecho")?;
            let out = xen_tests::lab::dom0_sh(
                &format!(
                    "echo hi-udp | socat -t 1 - UDP:10.0.0.61:7
                     echo hi-tcp | socat -t 1 - TCP:10.0.0.61:7
                     {udpecho} 10.0.0.61 7 2000"
                ),
                300,
            );
            let end = g.shutdown_cleanly();
            let c = g.console()?;
            let out = out.map_err(|e| format!("{e}\n{c}"))?;
            expect(&out, "hi-udp")?;
            expect(&out, "hi-tcp")?;
            expect(&out, "udpecho: 2000/2000 exact")?;
            end.map_err(|e| format!("{e}\n{c}"))?;
            Ok(out.lines().last().unwrap_or("").to_string())
        }),
        case(
            "std_udpsocket_blocking_calls_against_an_echo_server_in_dom0",
            || {
                // std's blocking UdpSocket (not mio): ephemeral bind, read timeout, peek_from,
                // truncation, connect, EMSGSIZE, SO_BROADCAST, IP_TTL, multicast refused.
                let udpecho = xen_tests::lab::tool("udpecho")?;
                lab(&[
                    "exec",
                    &format!("(setsid {udpecho} -s 7010 60 > /tmp/udpecho-s.log 2>&1 &)"),
                ])?;
                let g = Guest::start(
                    "std-echo",
                    "ip=10.0.0.67/24 log=info -- --udp-check 10.0.0.1:7010",
                )?;
                let end = g.wait(60);
                let c = g.console()?;
                let _ = lab(&["exec", "kill $(pidof udpecho) 2>/dev/null; true"]);
                expect(&c, "udp-check: all ok").map_err(|e| format!("{e}\n{c}"))?;
                let end = end?;
                (end == "poweroff")
                    .then(|| {
                        c.lines()
                            .find(|l| l.contains("udp-check: read timeout"))
                            .unwrap_or("")
                            .to_string()
                    })
                    .ok_or(format!("ended with {end}\n{c}"))
            },
        ),
        case(
            "std_tcpstream_client_against_an_echo_server_in_dom0",
            || {
                // std's blocking TcpStream as a client: refused, connect_timeout, options, a read
                // timeout, 256 KiB both ways with a writer thread beside a blocked reader, peek,
                // shutdown(Write) and the end of the stream. socat in dom0 echoes (cat).
                lab(&[
                "exec",
                "(setsid socat TCP-LISTEN:7012,reuseaddr,fork EXEC:cat > /tmp/socat-echo.log 2>&1 &)",
            ])?;
                let g = Guest::start(
                    "std-echo",
                    "ip=10.0.0.68/24 log=info -- --tcp-check 10.0.0.1:7012",
                )?;
                let end = g.wait(90);
                let c = g.console()?;
                let _ = lab(&["exec", "pkill -f 'TCP-LISTEN:7012' 2>/dev/null; true"]);
                expect(&c, "tcp-check: all ok").map_err(|e| format!("{e}\n{c}"))?;
                let end = end?;
                (end == "poweroff")
                    .then(|| {
                        c.lines()
                            .find(|l| l.contains("tcp-check: 256 KiB"))
                            .unwrap_or("")
                            .to_string()
                    })
                    .ok_or(format!("ended with {end}\n{c}"))
            },
        ),
        case("std_getaddrinfo_asks_the_dns_server_in_dom0", || {
            // Our one-name DNS server (tests/lab-tools/dnsone.c) on dom0's 10.0.0.1:53: A
            // queries for www.xenrt.test get 10.9.8.7, anything else NXDOMAIN.
            let dns = xen_tests::lab::tool("dnsone")?;
            lab(&[
                "exec",
                &format!("(setsid {dns} www.xenrt.test 10.9.8.7 60 > /tmp/dnsone.log 2>&1 &)"),
            ])?;
            let g = Guest::start(
                "std-echo",
                "ip=10.0.0.64/24 dns=10.0.0.1 log=info -- --resolve www.xenrt.test nope.xenrt.test 10.1.2.3 localhost",
            )?;
            let end = g.wait(60);
            let c = g.console()?;
            // Port 53 is free again for the tiers after this one.
            let _ = lab(&["exec", "kill $(pidof dnsone) 2>/dev/null; true"]);
            expect(&c, r#"std-echo: resolve www.xenrt.test -> ["10.9.8.7"]"#)?;
            expect(&c, "std-echo: resolve nope.xenrt.test failed")?;
            expect(
                &c,
                "xenrt: getaddrinfo nope.xenrt.test: no such name (or no address of that family) (EAI_NONAME)",
            )?;
            expect(&c, r#"std-echo: resolve 10.1.2.3 -> ["10.1.2.3"]"#)?;
            expect(&c, r#"std-echo: resolve localhost -> ["127.0.0.1"]"#)?;
            let end = end?;
            (end == "poweroff")
                .then(|| {
                    c.lines()
                        .find(|l| l.contains("resolve www.xenrt.test"))
                        .unwrap_or("")
                        .to_string()
                })
                .ok_or(format!("ended with {end}\n{c}"))
        }),
        case(
            "std_getaddrinfo_without_an_answer_is_eai_again_and_other_threads_run",
            || {
                // Nobody at 10.0.0.9: the look-up waits its 5 s, parked, while a thread ticks.
                let g = Guest::start(
                    "std-echo",
                    "ip=10.0.0.65/24 dns=10.0.0.9 log=info -- --resolve www.xenrt.test",
                )?;
                let end = g.wait(60);
                let c = g.console()?;
                expect(
                    &c,
                    "xenrt: getaddrinfo www.xenrt.test: no answer in time (EAI_AGAIN)",
                )?;
                let line = c
                    .lines()
                    .find(|l| l.contains("std-echo: resolve www.xenrt.test failed in"))
                    .ok_or(format!("no failure line:\n{c}"))?;
                let num = |after: &str, before: &str| -> Option<u64> {
                    line.split(after)
                        .nth(1)?
                        .split(before)
                        .next()?
                        .trim()
                        .parse()
                        .ok()
                };
                let ms = num("failed in ", " ms").ok_or(format!("no time in {line}"))?;
                let ticks = num("ms (", " ticks").ok_or(format!("no ticks in {line}"))?;
                if !(4500..8000).contains(&ms) {
                    return Err(format!("waited {ms} ms, not the 5 s timeout: {line}"));
                }
                if ticks < 100 {
                    return Err(format!(
                        "the ticker hardly ran while the look-up waited: {line}"
                    ));
                }
                let end = end?;
                (end == "poweroff")
                    .then(|| line.to_string())
                    .ok_or(format!("ended with {end}\n{c}"))
            },
        ),
        case("std_tokio_echoes_50_parallel_clients", || {
            // tokio (crates.io, unchanged): #[tokio::main], a task per connection, over the
            // app's mio reactor (tokio's own net does not build for hermit) and socket2's API.
            let g = Guest::start("std-tokio", "ip=10.0.0.17/24 log=info --")?;
            g.until("std-tokio: listening on 0.0.0.0:7", 60)?;
            let one = xen_tests::lab::dom0_sh("echo hi | nc -w 3 10.0.0.17 7", 60)?;
            expect(&one, "hi")?;
            // 50 clients at once, payloads of 2-50 KB (past the stack's TCP buffers, so
            // writes wait for the peer), each different; every echo must come back
            // byte-exact.
            let out = fifty_parallel_echoes("10.0.0.17", 997, 240)?;
            expect(&out, "parallel echo: 50/50 ok")?;
            let end = g.shutdown_cleanly();
            let c = g.console()?;
            end.map_err(|e| format!("{e}\n{c}"))?;
            expect(&c, "(51 served)")?;
            Ok(out.lines().last().unwrap_or("").to_string())
        }),
        case("std_http_on_tiny_http_serves_files_to_curl_and_wrk", || {
            // tiny_http (crates.io, unchanged) on xenrt's hermit-abi: an acceptor thread, a
            // thread per connection blocked in read, 4 workers; the files are httpd's site
            // baked into the image, read with std::fs. 50 wrk connections at once only work
            // if a thread waiting in a socket call lets the others run.
            let page = std::fs::read(root().join("apps/httpd/www/index.html"))
                .map_err(|e| format!("index.html: {e}"))?;
            let md5 = run(Command::new("md5sum").arg(root().join("apps/httpd/www/index.html")))?;
            let md5 = md5
                .output
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            let g = Guest::start("std-http", "ip=10.0.0.62/24 -- RUST_MIN_STACK=131072")?;
            g.until("std-http: serving / on port 80 with 4 threads", 60)?;
            let out = xen_tests::lab::dom0_sh(
                r#"u=http://10.0.0.62
curl -s -o /tmp/sh.html -w 'get %{http_code} %{content_type} %{size_download}\n' $u/
echo "md5 $(md5sum < /tmp/sh.html | cut -d' ' -f1)"
curl -sI $u/style.css | head -1 | tr -d '\r' | sed 's/^/head /'
curl -s -o /dev/null -w 'missing %{http_code}\n' $u/nope.html
curl -s -o /dev/null -w 'dotdot %{http_code}\n' --path-as-is $u/../etc/passwd
curl -s -o /dev/null -w 'delete %{http_code}\n' -X DELETE $u/
wrk -t2 -c50 -d5s $u/ 2>&1 | sed 's/^/wrk /'"#,
                120,
            )?;
            expect(
                &out,
                &format!("get 200 text/html; charset=utf-8 {}", page.len()),
            )?;
            expect(&out, &format!("md5 {md5}"))?;
            expect(&out, "head HTTP/1.1 200 OK")?;
            expect(&out, "missing 404")?;
            expect(&out, "dotdot 400")?;
            expect(&out, "delete 405")?;
            expect(&out, "wrk Requests/sec:")?;
            if out.contains("Socket errors") || out.contains("Non-2xx") {
                return Err(format!("wrk saw errors:\n{out}"));
            }
            let end = g.shutdown_cleanly();
            let c = g.console()?;
            end.map_err(|e| format!("{e}\n{c}"))?;
            // Announced ready as a no_std server is (the xenstore node the activator waits
            // for, and the console line), once it listened.
            expect(&c, "xenrt: listening on 10.0.0.62:80 ")?;
            Ok(out
                .lines()
                .find(|l| l.contains("Requests/sec"))
                .unwrap_or("")
                .trim_start_matches("wrk ")
                .to_string())
        }),
        case("bad_extra_is_reported", || bad_extra_is_reported(&[])),
        case("panicking_guest_ends_crashed_with_its_message", || {
            panic_ends_crashed(&[])
        }),
        case("faulting_guest_ends_crashed_with_a_report", || {
            let g = Guest::start("testkernel", "test=write-text")?;
            let end = g.wait(60)?;
            let c = g.console()?;
            expect(&c, "write to a read-only page")?;
            (end == "crash")
                .then_some(String::new())
                .ok_or(format!("ended with {end}"))
        }),
        case("xl_destroy_stops_a_running_guest", || {
            xl_destroy_stops_a_running_guest(&[])
        }),
        case("guest_reads_its_domid_and_name_from_xenstore", || {
            let g = Guest::start("testkernel", "test=xenstore")?;
            let end = g.wait(60)?;
            expect(
                &g.console()?,
                &format!("TEST xenstore: domid={} name={}", g.domid(), g.name),
            )?;
            (end == "poweroff")
                .then_some(String::new())
                .ok_or(format!("ended with {end}"))
        }),
        case("watch_fires_when_dom0_writes", || {
            let g = Guest::start("testkernel", "test=watch")?;
            g.until("TEST watch: ready", 60)?;
            let w = lab(&[
                "exec",
                &format!(
                    "xenstore-write /local/domain/{}/data/test-key hello-from-dom0",
                    g.domid()
                ),
            ])?;
            if w.code != Some(0) {
                return Err(format!("xenstore-write failed: {}", w.output));
            }
            let end = g.wait(60)?;
            expect(&g.console()?, "TEST watch: PASS")?;
            expect(&g.console()?, "data/test-key = hello-from-dom0")?;
            (end == "poweroff")
                .then_some(String::new())
                .ok_or(format!("ended with {end}"))
        }),
        case(
            "transaction_conflicting_with_dom0_retries_and_commits",
            || {
                let g = Guest::start("testkernel", "test=transaction")?;
                g.until("TEST transaction: in transaction", 60)?;
                lab(&[
                    "exec",
                    &format!("xenstore-write /local/domain/{}/data/counter 5", g.domid()),
                ])?;
                let end = g.wait(60)?;
                let c = g.console()?;
                expect(&c, "TEST transaction: PASS attempts=2 counter=6")?;
                (end == "poweroff")
                    .then_some(String::new())
                    .ok_or(format!("ended with {end}"))
            },
        ),
        case("page_granted_to_dom0_is_readable_there", || {
            // Our own tool (tests/lab-tools/gntread.c), built static on the host, maps the grant
            // through Linux's gntdev in dom0.
            let dom0_tool = xen_tests::lab::tool("gntread")?;
            let g = Guest::start("testkernel", "test=grant")?;
            g.until("TEST grant: granted gref=", 60)?;
            let c = g.console()?;
            let gref = c
                .lines()
                .find_map(|l| l.split("gref=").nth(1))
                .ok_or("no gref")?
                .trim()
                .to_string();
            let read = lab(&["exec", &format!("{dom0_tool} {} {gref} 28", g.domid())])?;
            if read.code != Some(0) {
                return Err(format!("gntread failed: {}", read.output));
            }
            let text = read.output.trim().to_string();
            lab(&[
                "exec",
                &format!(
                    "xenstore-write /local/domain/{}/data/read '{text}'",
                    g.domid()
                ),
            ])?;
            let end = g.wait(60)?;
            expect(&g.console()?, "TEST grant: PASS")?;
            (end == "poweroff")
                .then_some(format!("[dom0 read {text:?}]"))
                .ok_or(format!("ended with {end}"))
        }),
        case("xl_shutdown_powers_the_guest_off", || {
            xl_shutdown_powers_the_guest_off(&[])
        }),
        case("xl_reboot_restarts_the_guest", || {
            xl_reboot_restarts_the_guest(&[])
        }),
        case("ten_guests_in_one_lab_boot", || {
            let guests: Vec<Guest> = (0..10)
                .map(|_| Guest::start("hello", ""))
                .collect::<Result<_, _>>()?;
            for g in &guests {
                let end = g.wait(120)?;
                expect(&g.console()?, "Hello from Xen 4.17")?;
                if end != "poweroff" {
                    return Err(format!("{} ended with {end}", g.name));
                }
            }
            Ok(String::new())
        }),
        case("scripts_run_exits_with_the_guest_outcome", || {
            let ok = run(Command::new(root().join("scripts/run"))
                .args(["hello"])
                .env("LAB_DIR", lab_dir()))?;
            if ok.code != Some(0) {
                return Err(format!(
                    "scripts/run hello exited {:?}:\n{}",
                    ok.code, ok.output
                ));
            }
            expect(&ok.output, "Hello from Xen 4.17")?;
            let bad = run(Command::new(root().join("scripts/run"))
                .args(["testkernel", "test=panic"])
                .env("LAB_DIR", lab_dir()))?;
            if bad.code == Some(0) {
                return Err(format!(
                    "scripts/run of a panicking guest exited 0:\n{}",
                    bad.output
                ));
            }
            expect(&bad.output, "test panic 42")?;
            Ok(format!("[panic -> exit {:?}]", bad.code))
        }),
    ];
    let jobs = 1;
    // Case failures are results, not panics (run_cases catches nothing): stop the lab either way.
    let ok = xen_tests::run_cases("lab", cases, jobs);
    xen_tests::lab::finish(ok)
}

/// 50 clients at once from dom0 to the echo server at `ip` port 7, client `i` sending
/// `1000 + i * step` bytes of its own payload; every echo must come back byte-exact. The
/// payloads come from awk, not `yes | head`: the lab agent runs commands with SIGPIPE ignored (a
/// shell cannot un-ignore it), and busybox `yes` then spins on EPIPE forever once head has its
/// bytes, so the loop never started its clients. (That, not nc, was the hang: nc ends on a
/// regular-file stdin too.) The output ends `parallel echo: N/50 ok`.
fn fifty_parallel_echoes(ip: &str, step: u32, secs: u32) -> Result<String, String> {
    xen_tests::lab::dom0_sh(
        &format!(
            r#"d=$(mktemp -d)
for i in $(seq 1 50); do
  awk -v i=$i 'BEGIN {{ n = 1000 + i * {step}; s = ""; while (length(s) < n) s = s "client " i " payload\n"; printf "%s", substr(s, 1, n) }}' > $d/in$i
  (cat $d/in$i | nc -w 5 {ip} 7 > $d/out$i) &
done
wait
bad=0
for i in $(seq 1 50); do cmp -s $d/in$i $d/out$i || {{ bad=$((bad+1)); echo "client $i differs: $(wc -c < $d/out$i) bytes"; }}; done
rm -rf $d
echo "parallel echo: $((50 - bad))/50 ok"
[ $bad -eq 0 ]"#
        ),
        secs,
    )
}
