//! The state machine against the real iperf3 client, on the host's loopback: a throwaway driver
//! over `std::net` (a thread per connection, polling with short socket timeouts) stands in for
//! the image's tasks. Ignored by default, since it needs the client:
//!
//! ```sh
//! IPERF3=/usr/bin/iperf3 cargo test -p echo --lib real_client -- --ignored --test-threads 1
//! ```
//!
//! (`IPERF3` may also be a directory holding a Debian package tree extracted with `dpkg -x`.)

use super::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::string::ToString;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

struct Host {
    sm: Mutex<Server>,
    t0: Instant,
    ends: Mutex<Vec<End>>,
}

impl Host {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

fn serve() -> (u16, Arc<Host>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = Arc::new(Host {
        sm: Mutex::new(Server::new(Limits::default())),
        t0: Instant::now(),
        ends: Mutex::new(Vec::new()),
    });
    let hh = h.clone();
    thread::spawn(move || {
        for c in l.incoming() {
            let h = hh.clone();
            thread::spawn(move || conn(&h, c.unwrap()));
        }
    });
    (port, h)
}

fn conn(h: &Host, mut s: TcpStream) {
    s.set_nodelay(true).unwrap();
    if !h.sm.lock().unwrap().wants_cookie() {
        let _ = s.write_all(&denial());
        return;
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut cookie = [0u8; COOKIE_SIZE];
    if s.read_exact(&mut cookie).is_err() {
        return;
    }
    let a = h.sm.lock().unwrap().admit(&cookie, h.now());
    match a {
        Admit::Deny => {
            let _ = s.write_all(&denial());
        }
        Admit::Control(id) => control(h, s, id),
        Admit::Stream { test, index, dir } => stream(h, s, test, index, dir),
    }
}

fn control(h: &Host, mut s: TcpStream, id: TestId) {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut out = Out {
        send: h.sm.lock().unwrap().greeting().to_vec(),
        end: None,
    };
    let mut buf = [0u8; 4096];
    loop {
        if s.write_all(&out.send).is_err() && out.end.is_none() {
            out = h.sm.lock().unwrap().control_closed(id, h.now());
        }
        if let Some(e) = out.end {
            h.ends.lock().unwrap().push(e);
            let _ = s.shutdown(Shutdown::Write);
            return;
        }
        let r = s.read(&mut buf);
        let mut sm = h.sm.lock().unwrap();
        out = match r {
            Ok(0) => sm.control_closed(id, h.now()),
            Ok(n) => sm.control_input(id, &buf[..n], h.now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                sm.poll_control(id, h.now())
            }
            Err(_) => sm.control_closed(id, h.now()),
        };
    }
}

fn stream(h: &Host, mut s: TcpStream, id: TestId, index: usize, dir: Dir) {
    loop {
        match h.sm.lock().unwrap().stream_cmd(id, index) {
            StreamCmd::Run => break,
            StreamCmd::Stop => return,
            StreamCmd::Wait => thread::sleep(Duration::from_millis(2)),
        }
    }
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let chunk = vec![b'x'; SEND_CHUNK];
    let mut buf = vec![0u8; 16384];
    loop {
        let r = match dir {
            Dir::Receive => s.read(&mut buf),
            Dir::Send => s.write(&chunk),
        };
        let cmd = match r {
            Ok(0) => return,
            Ok(n) => h.sm.lock().unwrap().stream_bytes(id, index, n, h.now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                h.sm.lock().unwrap().stream_cmd(id, index)
            }
            Err(_) => return,
        };
        if cmd != StreamCmd::Run {
            return;
        }
    }
}

fn client() -> (PathBuf, Option<PathBuf>) {
    let p = PathBuf::from(std::env::var("IPERF3").expect("IPERF3=path of the iperf3 client"));
    if p.is_dir() {
        (
            p.join("usr/bin/iperf3"),
            Some(p.join("usr/lib/x86_64-linux-gnu")),
        )
    } else {
        (p, None)
    }
}

fn iperf3(port: u16, args: &[&str]) -> Command {
    let (bin, lib) = client();
    let mut c = Command::new(bin);
    if let Some(l) = lib {
        c.env("LD_LIBRARY_PATH", l);
    }
    c.args(["-c", "127.0.0.1", "-p", &port.to_string()]);
    c.args(args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run(port: u16, args: &[&str]) -> Output {
    let o = iperf3(port, args).output().unwrap();
    std::eprintln!(
        "iperf3 {args:?}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `--json` output's end section: (bytes the sender reports, bytes the receiver reports).
fn sums(o: &Output) -> (i128, i128, Value) {
    assert!(o.status.success());
    let v = json::parse(&o.stdout).unwrap();
    let end = v.get("end").unwrap().clone();
    let b = |k: &str| match end.get(k).and_then(|s| s.get("bytes")) {
        Some(Value::Num(n)) => n.int,
        other => panic!("{k}: {other:?}"),
    };
    (b("sum_sent"), b("sum_received"), end)
}

fn last_end(h: &Host) -> End {
    // The server's side finishes right after the client's.
    for _ in 0..200 {
        if let Some(e) = h.ends.lock().unwrap().last() {
            return e.clone();
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("the server did not finish the test")
}

#[test]
#[ignore = "needs the iperf3 client: IPERF3=... -- --ignored"]
fn real_client_forward_reverse_parallel_bidir() {
    let (port, h) = serve();
    // Forward: what the client's receiver line says is what the server counted.
    let o = run(port, &["-t", "1", "--json"]);
    let (sent, received, _) = sums(&o);
    let End::Done(sum) = last_end(&h) else {
        panic!("{:?}", last_end(&h))
    };
    assert!(received > 0 && received <= sent, "{sent} {received}");
    assert_eq!(sum.received as i128, received);
    h.ends.lock().unwrap().clear();
    // Reverse with two streams, an omit second, server output.
    let o = run(
        port,
        &[
            "-R",
            "-P",
            "2",
            "-t",
            "1",
            "-O",
            "1",
            "--get-server-output",
            "--json",
        ],
    );
    let (sent, received, end) = sums(&o);
    let End::Done(sum) = last_end(&h) else {
        panic!()
    };
    assert_eq!(sum.sent as i128, sent);
    assert!(received > 0 && received <= sent);
    assert_eq!(
        end.get("streams")
            .map(|s| matches!(s, Value::Arr(a) if a.len() == 2)),
        Some(true)
    );
    let out = std::str::from_utf8(&o.stdout).unwrap();
    assert!(out.contains("[SUM] sent"), "no server output");
    h.ends.lock().unwrap().clear();
    // Both ways.
    let o = run(port, &["--bidir", "-t", "1", "--json"]);
    assert!(o.status.success());
    let End::Done(sum) = last_end(&h) else {
        panic!()
    };
    assert!(sum.sent > 0 && sum.received > 0 && sum.streams == 2);
    h.ends.lock().unwrap().clear();
    // Bytes and blocks instead of time (text output, as people run it).
    let o = run(port, &["-n", "20M"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("receiver"));
    let o = run(port, &["-R", "-k", "100", "-l", "8K"]);
    assert!(o.status.success());
}

#[test]
#[ignore = "needs the iperf3 client: IPERF3=... -- --ignored"]
fn real_client_refusals_and_a_killed_client() {
    let (port, h) = serve();
    let o = run(port, &["-u", "-t", "1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(
        err.contains("unable to start stream listener: Protocol not supported"),
        "{err}"
    );
    let o = run(port, &["-P", "17", "-t", "1"]);
    assert!(!o.status.success());
    let o = run(port, &["-R", "-b", "10M", "-t", "1"]);
    let err = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not implemented yet"), "{err}");
    // Busy: a second client while a test runs.
    let mut long = iperf3(port, &["-t", "5"]).spawn().unwrap();
    wait_running(&h);
    let o = run(port, &["-t", "1"]);
    let err = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the server is busy"), "{err}");
    // Killed mid-test: the server is free again at once.
    kill(&mut long);
    let o = run(port, &["-R", "-t", "1"]);
    assert!(o.status.success());
    let mut long = iperf3(port, &["-R", "-P", "3", "-t", "5"]).spawn().unwrap();
    wait_running(&h);
    kill(&mut long);
    let o = run(port, &["-t", "1"]);
    assert!(o.status.success());
}

fn wait_running(h: &Host) {
    for _ in 0..500 {
        {
            let sm = h.sm.lock().unwrap();
            if let Some(t) = &sm.test {
                if t.phase == Phase::Running {
                    return;
                }
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("no test started");
}

fn kill(c: &mut Child) {
    thread::sleep(Duration::from_millis(300));
    c.kill().unwrap();
    c.wait().unwrap();
}
