//! The lab tier for the network across `xl save` + `xl restore` (issue 13, the driver's side):
//! the restored guest's vif reconnects to its new backend by itself, announces itself, and a
//! TCP connection opened before the save goes on after the restore. Real clients in dom0:
//! socat on a keep-alive HTTP connection to httpd, and a stream through echo's TCP echo.

use xen_tests::case;
use xen_tests::lab::{dom0_sh, expect, Guest};

/// Saves the guest to a file in dom0 and restores it (a new domain, same name); returns the
/// shell lines that do it (with the seconds each took in the output).
fn save_restore(name: &str) -> String {
    format!(
        "t0=$(cut -d' ' -f1 /proc/uptime); xl save {name} /tmp/{name}.save || echo SAVE-FAILED
         t1=$(cut -d' ' -f1 /proc/uptime); xl restore /tmp/{name}.save || echo RESTORE-FAILED
         t2=$(cut -d' ' -f1 /proc/uptime); rm -f /tmp/{name}.save
         awk \"BEGIN {{ printf \\\"save %.1f s, restore %.1f s\\\\n\\\", $t1 - $t0, $t2 - $t1 }}\""
    )
}

/// The guest's own count of the move from its console: "... reconnected after the move
/// (generation G, backend domain D) in N ms, A attempt(s), K frames to resend".
fn reconnect_line(g: &Guest) -> Result<String, String> {
    g.until("reconnected after the move", 60)?;
    let c = g.console()?;
    let line = c
        .lines()
        .find(|l| l.contains("reconnected after the move"))
        .unwrap_or("")
        .trim()
        .to_string();
    expect(&c, "net: announced")?;
    Ok(line)
}

/// The last 40 lines of the guest's console.
fn tail(g: &Guest) -> String {
    let c = g.console().unwrap_or_default();
    let lines: Vec<&str> = c.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![
        case(
            "httpd_keep_alive_connection_survives_save_and_restore",
            || {
                let (mac, ip) = ("00:16:3e:00:00:4a", "10.0.0.174");
                let g = Guest::start_with(
                    "httpd",
                    "log=info idle=120",
                    &[&format!("vif=['bridge=xenbr0,mac={mac}']")],
                )?;
                g.until("httpd: serving", 90)?;
                let req = "printf 'GET /style.css HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3";
                let out = dom0_sh(
                    &format!(
                        "rm -f /tmp/ka.in /tmp/ka.out; mkfifo /tmp/ka.in
                     socat -t 5 - TCP:{ip}:80 < /tmp/ka.in > /tmp/ka.out 2>/tmp/ka.err &
                     exec 3>/tmp/ka.in
                     {req}
                     sleep 2; echo before $(grep -ac '^HTTP/1.1 200' /tmp/ka.out)
                     {sr}
                     {req}
                     for i in $(seq 1 60); do
                       [ $(grep -ac '^HTTP/1.1 200' /tmp/ka.out) -ge 2 ] && break; sleep 0.5
                     done
                     echo after $(grep -ac '^HTTP/1.1 200' /tmp/ka.out)
                     exec 3>&-; wait; cat /tmp/ka.err",
                        sr = save_restore(&g.name)
                    ),
                    240,
                )?;
                expect(&out, "before 1")?;
                if out.contains("FAILED") {
                    return Err(format!("xl save/restore failed:\n{out}"));
                }
                expect(&out, "after 2")?;
                let line = reconnect_line(&g)?;
                g.shutdown_cleanly()?;
                let times = out.lines().find(|l| l.starts_with("save ")).unwrap_or("");
                Ok(format!("[{times}; {line}]"))
            },
        ),
        case("echo_carries_a_tcp_stream_across_save_and_restore", || {
            let (mac, ip) = ("00:16:3e:00:00:4b", "10.0.0.175");
            let g = Guest::start_with(
                "echo",
                "log=info",
                &[&format!("vif=['bridge=xenbr0,mac={mac}']"), "memory=16"],
            )?;
            g.until("echo: ready on", 90)?;
            let out = dom0_sh(
                &format!(
                    "head -c 2000000 /dev/urandom > /tmp/chunk
                     for i in 1 2 3 4 5 6 7 8 9 10; do cat /tmp/chunk; done > /tmp/stream
                     echo want $(md5sum < /tmp/stream)
                     (socat -t 30 - TCP:{ip}:7 < /tmp/stream | md5sum > /tmp/stream.md5) &
                     sleep 2
                     {sr}
                     wait
                     echo got $(cat /tmp/stream.md5)
                     rm -f /tmp/chunk /tmp/stream /tmp/stream.md5",
                    sr = save_restore(&g.name)
                ),
                300,
            )?;
            if out.contains("FAILED") {
                return Err(format!("xl save/restore failed:\n{out}"));
            }
            let sum = |p: &str| {
                out.lines()
                    .find_map(|l| l.strip_prefix(p))
                    .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
            };
            let (want, got) = (sum("want "), sum("got "));
            if want.is_none() || want != got {
                return Err(format!(
                    "stream differs: {want:?} vs {got:?}:\n{out}\n--- console:\n{}",
                    tail(&g)
                ));
            }
            let line = reconnect_line(&g)?;
            g.shutdown_cleanly()?;
            let times = out.lines().find(|l| l.starts_with("save ")).unwrap_or("");
            Ok(format!("[20 MB echoed, md5 equal; {times}; {line}]"))
        }),
    ];
    let ok = xen_tests::run_cases("lab", cases, 1);
    xen_tests::lab::finish(ok);
}
