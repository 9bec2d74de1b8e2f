//! The lab (scripts/lab) from tests: one lab boot serves the cases of every lab-tier test file
//! (`LAB_DIR`, default target/lab-test); guests are started from target/images/IMAGE.xl.

use crate::{image, root, run, Run};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// The test lab's state directory.
pub fn lab_dir() -> String {
    std::env::var("LAB_DIR")
        .unwrap_or_else(|_| root().join("target/lab-test").display().to_string())
}

/// Runs `scripts/lab ARGS...` against the test lab.
pub fn lab(args: &[&str]) -> Result<Run, String> {
    run(Command::new(root().join("scripts/lab"))
        .args(args)
        .env("LAB_DIR", lab_dir()))
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A guest started from target/images/IMAGE.xl under a unique name, with `extra`.
pub struct Guest {
    /// Its unique name.
    pub name: String,
    /// Its domid: a restore or a migration gives the guest a new one ([`Guest::domid`]).
    domid: AtomicU32,
}

impl Guest {
    /// Starts IMAGE as a new guest with kernel command line `extra`.
    pub fn start(image_name: &str, extra: &str) -> Result<Guest, String> {
        Self::start_with(image_name, extra, &[])
    }

    /// [`Guest::start`] with more `K=V` lines for the .xl (they win over it).
    pub fn start_with(image_name: &str, extra: &str, more: &[&str]) -> Result<Guest, String> {
        Self::start_as(&Self::unique_name(image_name), image_name, extra, more)
    }

    /// A name for a new guest of IMAGE, unique within a lab boot, even when a kept lab serves
    /// several test runs (for [`Guest::start_as`]).
    pub fn unique_name(image_name: &str) -> String {
        format!(
            "{image_name}-{}-{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// [`Guest::start_with`] under `name` (from [`Guest::unique_name`]: a dom0 script can wait
    /// for the domain by name before it exists).
    pub fn start_as(
        name: &str,
        image_name: &str,
        extra: &str,
        more: &[&str],
    ) -> Result<Guest, String> {
        let xl = image(&format!("{image_name}.xl"))?;
        let name = name.to_string();
        // XENRT_GUEST_TYPE=pvh runs any lab file's guests as PVH (a case's own `type=` wins).
        let guest_type = std::env::var("XENRT_GUEST_TYPE")
            .ok()
            .map(|t| format!("type=\"{t}\""));
        let r = lab(&[
            "create",
            xl.to_str().unwrap(),
            &format!("name=\"{name}\""),
            &format!("extra=\"{extra}\""),
            // Keep the domain after it ends so its end is always observed, even for a guest
            // faster than the toolstack; `lab wait` destroys it after reading the reason.
            "on_poweroff=\"preserve\"",
            "on_crash=\"preserve\"",
        ]
        .into_iter()
        .chain(guest_type.as_deref())
        .chain(more.iter().copied())
        .collect::<Vec<_>>())?;
        if r.code != Some(0) {
            return Err(format!("lab create {name} failed: {}", r.output.trim()));
        }
        let domid = r
            .output
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name} "))
                    .and_then(|d| d.trim().parse().ok())
            })
            .ok_or(format!("no domid in: {}", r.output))?;
        Ok(Guest {
            name,
            domid: AtomicU32::new(domid),
        })
    }

    /// A handle on the running domain NAME with `domid` (e.g. one a test adopted itself).
    pub fn named(name: String, domid: u32) -> Guest {
        Guest {
            name,
            domid: AtomicU32::new(domid),
        }
    }

    /// Its domid now (as of its last start, restore or migration through these methods).
    pub fn domid(&self) -> u32 {
        self.domid.load(Ordering::SeqCst)
    }

    /// Looks the guest's domid up by name and remembers it, here and in scripts/lab's
    /// bookkeeping (`scripts/lab adopt`: `console --follow` and `wait` follow the new domain,
    /// its logs under a migrated domain's `NAME--incoming` names, and a checkpoint's logged
    /// suspend is not taken for its end); after `xl restore` or `xl migrate` the same name has a
    /// new domid.
    pub fn refresh_domid(&self) -> Result<u32, String> {
        let r = lab(&["adopt", &self.name])?;
        let domid: u32 = r
            .output
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{} ", self.name))?
                    .trim()
                    .parse()
                    .ok()
            })
            .ok_or(format!("lab adopt {}: {}", self.name, r.output.trim()))?;
        self.domid.store(domid, Ordering::SeqCst);
        Ok(domid)
    }

    /// `xl save NAME FILE` (a dom0 path): the guest suspends, its memory goes to FILE and the
    /// domain is gone. Returns how long xl took and FILE's size.
    pub fn save(&self, file: &str) -> Result<Saved, String> {
        self.xl_save(false, file)
    }

    /// `xl save NAME FILE`, or with `checkpoint` `xl save -c` (FILE then removed), timed, with
    /// FILE's size.
    fn xl_save(&self, checkpoint: bool, file: &str) -> Result<Saved, String> {
        let (flags, cleanup) = if checkpoint {
            ("-c", format!("; rc=$?; rm -f {file}; exit $rc"))
        } else {
            ("", String::new())
        };
        let start = Instant::now();
        let out = dom0_sh(
            &format!(
                "xl save {flags} {} {file} 2>&1 && stat -c 'SIZE %s' {file}{cleanup}",
                self.name
            ),
            300,
        )?;
        let secs = start.elapsed().as_secs_f64();
        let bytes = out
            .lines()
            .find_map(|l| l.strip_prefix("SIZE ")?.trim().parse().ok())
            .ok_or(format!(
                "xl save {flags} {}: no file size in:\n{out}",
                self.name
            ))?;
        Ok(Saved { secs, bytes })
    }

    /// `xl restore FILE`: the guest runs again, in a new domain (its new domid is looked up).
    /// Returns how long xl took.
    pub fn restore(&self, file: &str) -> Result<f64, String> {
        let start = Instant::now();
        dom0_sh(&format!("xl restore {file} 2>&1"), 300)?;
        let secs = start.elapsed().as_secs_f64();
        self.refresh_domid()?;
        Ok(secs)
    }

    /// [`Guest::save`] then [`Guest::restore`], FILE removed afterwards.
    pub fn save_restore(&self, file: &str) -> Result<(Saved, f64), String> {
        let saved = self.save(file)?;
        let restored = self.restore(file);
        let _ = dom0_sh(&format!("rm -f {file}"), 30);
        Ok((saved, restored?))
    }

    /// `xl save -c NAME FILE`: a checkpoint; the guest goes on in the same domain (its suspend
    /// is cancelled). FILE is removed afterwards. Returns how long xl took and FILE's size.
    pub fn checkpoint(&self, file: &str) -> Result<Saved, String> {
        let saved = self.xl_save(true, file)?;
        let before = self.domid();
        let domid = self.refresh_domid()?;
        if domid != before {
            return Err(format!("xl save -c moved the guest to domid {domid}"));
        }
        Ok(saved)
    }

    /// `xl migrate` to this same dom0 (`xl migrate -s '' NAME 'xl migrate-receive'`: the
    /// stream goes through a pipe instead of ssh); the guest runs on in a new domain of the
    /// same name. Returns how long xl took.
    pub fn migrate_local(&self) -> Result<f64, String> {
        let start = Instant::now();
        dom0_sh(
            &format!("xl migrate -s '' {} 'xl migrate-receive' 2>&1", self.name),
            300,
        )?;
        let secs = start.elapsed().as_secs_f64();
        self.refresh_domid()?;
        Ok(secs)
    }

    /// Follows the console until a line containing `text` (or `secs` pass).
    pub fn until(&self, text: &str, secs: u32) -> Result<(), String> {
        let r = lab(&[
            "console",
            &self.name,
            "--until",
            text,
            "--follow",
            &secs.to_string(),
        ])?;
        expect(&r.output, text)
    }

    /// Waits for the end: ("poweroff" | "crash" | ..., exit code of `lab wait`).
    pub fn wait(&self, secs: u32) -> Result<String, String> {
        let r = lab(&["wait", &self.name, &secs.to_string(), "--destroy"])?;
        Ok(r.output
            .trim()
            .rsplit(": ")
            .next()
            .unwrap_or("")
            .to_string())
    }

    /// Asks the toolstack to shut the guest down (`xl shutdown`) and expects a clean power-off.
    pub fn shutdown_cleanly(&self) -> Result<String, String> {
        let r = lab(&["exec", &format!("xl shutdown {}", self.name)])?;
        if r.code != Some(0) {
            return Err(format!("xl shutdown: {}", r.output));
        }
        let end = self.wait(60)?;
        (end == "poweroff")
            .then_some(String::new())
            .ok_or(format!("ended with {end}"))
    }

    /// The console log so far.
    pub fn console(&self) -> Result<String, String> {
        Ok(lab(&["console", &self.name])?.output)
    }
}

/// What `xl save` took and left.
#[derive(Debug, Clone, Copy)]
pub struct Saved {
    /// Seconds `xl save` took (as seen from the host, so with one `lab exec` round trip).
    pub secs: f64,
    /// The save file's size.
    pub bytes: u64,
}

/// What an app said when it became ready: the console line `APP: listening on ENDPOINT...
/// MS ms after entry (SPLIT)` (see [`Runstate`] for SPLIT) and the xenstore node
/// `data/xenrt/ready` (`MS ENDPOINT...`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    /// Entry -> listening, as printed (one decimal).
    pub ms: String,
    /// `ADDR:PORT` each.
    pub endpoints: Vec<String>,
}

impl Ready {
    /// The app's line in `console`.
    pub fn from_console(console: &str, app: &str) -> Result<Ready, String> {
        let (line, _) = ready_line(console, app)?;
        let mut words: Vec<String> = line.split_whitespace().map(String::from).collect();
        let ms = words.pop().unwrap_or_default();
        ms.parse::<f64>()
            .map_err(|e| format!("{ms:?} in {line:?}: {e}"))?;
        Ok(Ready {
            ms,
            endpoints: words,
        })
    }

    /// The node's value (`MS ENDPOINT...`).
    pub fn from_node(value: &str) -> Result<Ready, String> {
        let mut words = value.split_whitespace().map(String::from);
        let ms = words.next().unwrap_or_default();
        ms.parse::<f64>()
            .map_err(|e| format!("ready node {value:?}: {e}"))?;
        Ok(Ready {
            ms,
            endpoints: words.collect(),
        })
    }
}

/// The app's ready line in `console`, split at ` ms after entry`: (`ENDPOINT... MS`, the rest).
fn ready_line<'a>(console: &'a str, app: &str) -> Result<(&'a str, &'a str), String> {
    let prefix = format!("{app}: listening on ");
    console
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.split_once(" ms after entry"))
        .ok_or(format!(
            "no {prefix:?}... ms after entry line in:\n{console}"
        ))
}

/// Where the time to readiness went, by Xen's runstate accounting of the guest's vCPU, from the
/// ready line's tail `(running R ms, blocked B ms waiting for events, runnable Q ms waiting
/// for a CPU[, offline O ms])`: milliseconds each, with the line's total.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Runstate {
    /// Entry -> listening (the line's MS).
    pub total_ms: f64,
    /// On a physical CPU: the guest's own work.
    pub running_ms: f64,
    /// Blocked, waiting for events (dom0's xenstored and netback, timers).
    pub blocked_ms: f64,
    /// Runnable, waiting for a physical CPU.
    pub runnable_ms: f64,
    /// Offline (paused); 0 when the line leaves it out.
    pub offline_ms: f64,
}

impl Runstate {
    /// The split on the app's ready line in `console`: an error if the line has none.
    pub fn from_console(console: &str, app: &str) -> Result<Runstate, String> {
        let (head, tail) = ready_line(console, app)?;
        let total = head.rsplit(' ').next().unwrap_or_default();
        let mut r = Runstate {
            total_ms: total
                .parse()
                .map_err(|e| format!("{total:?} in {head:?}: {e}"))?,
            ..Runstate::default()
        };
        let inner = tail
            .trim()
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .ok_or(format!("no runstate split after {head:?}: {tail:?}"))?;
        let mut seen = 0;
        for part in inner.split(", ") {
            let mut w = part.split_whitespace();
            let (key, ms) = (w.next().unwrap_or_default(), w.next().unwrap_or_default());
            let ms: f64 = ms.parse().map_err(|e| format!("{part:?}: {e}"))?;
            let slot = match key {
                "running" => &mut r.running_ms,
                "blocked" => &mut r.blocked_ms,
                "runnable" => &mut r.runnable_ms,
                "offline" => &mut r.offline_ms,
                _ => return Err(format!("unknown state in {part:?}")),
            };
            *slot = ms;
            seen += 1;
        }
        if seen < 3 {
            return Err(format!(
                "a split without all of running, blocked, runnable: {tail:?}"
            ));
        }
        Ok(r)
    }

    /// The states' sum.
    pub fn sum_ms(&self) -> f64 {
        self.running_ms + self.blocked_ms + self.runnable_ms + self.offline_ms
    }
}

/// Boots IMAGE (as [`Guest::start_with`]) while a script in dom0 waits for the domain, then for
/// its xenstore node `data/xenrt/ready`, and runs `client` (shell) the moment the node appears:
/// the activator's view of boot on demand. Returns the guest, the node's value and what
/// `client` printed (its exit status must be 0).
pub fn start_and_connect_when_ready(
    image_name: &str,
    extra: &str,
    more: &[&str],
    client: &str,
) -> Result<(Guest, Ready, String), String> {
    let name = Guest::unique_name(image_name);
    let script = format!(
        "n={name}
         i=0
         until d=$(xl domid $n 2>/dev/null); do
           i=$((i+1)); [ $i -gt 3000 ] && {{ echo 'no domain'; exit 3; }}; sleep 0.02
         done
         i=0
         until v=$(xenstore-read /local/domain/$d/data/xenrt/ready 2>/dev/null); do
           i=$((i+1)); [ $i -gt 9000 ] && {{ echo 'no ready node'; exit 4; }}; sleep 0.01
         done
         echo \"ready=$v\"
         {client}"
    );
    let waiter = std::thread::spawn(move || dom0_sh(&script, 180));
    let g = Guest::start_as(&name, image_name, extra, more);
    let out = waiter
        .join()
        .map_err(|_| "the dom0 waiter panicked".to_string())?;
    let g = g?;
    let out = out.map_err(|e| format!("{e}\n{}", g.console().unwrap_or_default()))?;
    let value = out
        .lines()
        .find_map(|l| l.strip_prefix("ready="))
        .ok_or(format!("no ready= in {out}"))?;
    let ready = Ready::from_node(value)?;
    Ok((g, ready, out))
}

/// Ok when `hay` contains `needle`, else an error showing `hay`.
pub fn expect(hay: &str, needle: &str) -> Result<(), String> {
    if hay.contains(needle) {
        Ok(())
    } else {
        Err(format!("expected {needle:?} in:\n{hay}"))
    }
}

/// Starts the lab (or finds it running) and prints how long that took; exits the test binary
/// with a failure summary if it cannot start.
pub fn start_or_exit() {
    let start = std::time::Instant::now();
    match lab(&["start"]) {
        Ok(r) if r.code == Some(0) => println!("lab up in {:.1} s", start.elapsed().as_secs_f64()),
        Ok(r) => {
            println!("lab failed to start:\n{}", r.output);
            println!("lab: 0 passed, 1 failed");
            std::process::exit(1);
        }
        Err(e) => {
            println!("lab failed to start: {e}");
            println!("lab: 0 passed, 1 failed");
            std::process::exit(1);
        }
    }
}

/// Ends a lab-tier test binary: destroys the guests it started that are still there (one a
/// file keeps in a `static` is never dropped), stops the lab unless `LAB_KEEP=1` (scripts/test
/// keeps it up between the lab-tier files and stops it at the end), then exits 0 if `ok`.
pub fn finish(ok: bool) -> ! {
    let tag = format!("-{}-", std::process::id() % 100_000);
    let _ = dom0_sh(
        &format!(
            "xl list | awk 'NR > 1 {{ print $1 }}' | grep -E -- '{tag}[0-9]+(--incoming)?$' |
             while read -r n; do xl destroy \"$n\"; done; true"
        ),
        60,
    );
    if std::env::var("LAB_KEEP").as_deref() != Ok("1") {
        let _ = lab(&["stop"]);
    }
    std::process::exit(if ok { 0 } else { 1 })
}

/// Builds our static lab tool `tests/lab-tools/NAME.c` on the host (gcc -static) and copies it
/// into the lab; returns its path in dom0.
pub fn tool(name: &str) -> Result<String, String> {
    let out = root().join("target/lab-tools").join(name);
    std::fs::create_dir_all(out.parent().unwrap()).map_err(|e| e.to_string())?;
    let cc = run(Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(root().join(format!("tests/lab-tools/{name}.c"))))?;
    if cc.code != Some(0) {
        return Err(format!("building {name} failed: {}", cc.output));
    }
    let put = lab(&["put", out.to_str().unwrap()])?;
    if put.code != Some(0) {
        return Err(format!("lab put {name} failed: {}", put.output));
    }
    Ok(put.output.trim().lines().last().unwrap_or("").to_string())
}

/// Runs `script` with sh in dom0 (through a file in the share, so it may hold any quoting);
/// Ok(output) when it exits 0 within `secs`.
pub fn dom0_sh(script: &str, secs: u32) -> Result<String, String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "script-{}-{}.sh",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let path = std::path::Path::new(&lab_dir()).join("share").join(&name);
    std::fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
    let r = lab(&[
        "exec",
        "-t",
        &secs.to_string(),
        "sh",
        &format!("/mnt/host/{name}"),
    ])?;
    let _ = std::fs::remove_file(&path);
    if r.code == Some(0) {
        Ok(r.output)
    } else {
        Err(format!(
            "dom0 script exited {:?}:\n{script}\n--- output:\n{}",
            r.code, r.output
        ))
    }
}

/// A client-visible downtime prober running in dom0 (`tests/lab-tools/gapprobe.c`): one
/// keep-alive HTTP connection with a `GET /` every few milliseconds, from [`Probe::http`] until
/// [`Probe::stop`], which reports the longest gap between answers and every error.
pub struct Probe {
    stop: String,
    out: String,
}

/// What a [`Probe`] saw.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// Complete answers.
    pub answers: u64,
    /// Answers that were not 200.
    pub non200: u64,
    /// Resets, EOFs and failed connects.
    pub errors: u64,
    /// New connections after the first (after an error or a `Connection: close`).
    pub reconnects: u64,
    /// Answers with `Connection: close` (nginx's keepalive_requests): not errors.
    pub closes: u64,
    /// The longest time between two answers (or from the start to the first), ms.
    pub max_gap_ms: f64,
    /// When that gap began, seconds after the probe started.
    pub gap_from_s: f64,
    /// From the last answer to the stop, ms (long when the guest never came back).
    pub tail_gap_ms: f64,
    /// The first error (`none`).
    pub first_error: String,
    /// The probe's whole line.
    pub line: String,
}

impl ProbeReport {
    /// Parses gapprobe's `gapprobe: key=value ...` line.
    pub fn parse(out: &str) -> Result<ProbeReport, String> {
        let line = out
            .lines()
            .find(|l| l.starts_with("gapprobe: answers="))
            .ok_or(format!("no gapprobe line in:\n{out}"))?;
        let mut r = ProbeReport {
            line: line.to_string(),
            ..Default::default()
        };
        for kv in line.split_whitespace().skip(1) {
            let (k, v) = kv.split_once('=').ok_or(format!("bad field {kv:?}"))?;
            let num = || v.parse::<f64>().map_err(|_| format!("bad {k}={v:?}"));
            match k {
                "answers" => r.answers = num()? as u64,
                "non200" => r.non200 = num()? as u64,
                "errors" => r.errors = num()? as u64,
                "reconnects" => r.reconnects = num()? as u64,
                "closes" => r.closes = num()? as u64,
                "max_gap_ms" => r.max_gap_ms = num()?,
                "gap_from_s" => r.gap_from_s = num()?,
                "tail_gap_ms" => r.tail_gap_ms = num()?,
                "first_error" => r.first_error = v.to_string(),
                _ => {}
            }
        }
        Ok(r)
    }

    /// Ok when every request was answered 200 on the first connection (no error, no close, no
    /// reconnect), one came in the last second before the stop (so after the pause) and there
    /// were at least `min_answers`.
    pub fn clean(&self, min_answers: u64) -> Result<(), String> {
        if self.errors > 0 || self.reconnects > 0 || self.closes > 0 || self.non200 > 0 {
            return Err(format!("the client saw errors: {}", self.line));
        }
        if self.answers < min_answers {
            return Err(format!("only {} answers: {}", self.answers, self.line));
        }
        if self.tail_gap_ms > 1000.0 {
            return Err(format!("no answer in the last second: {}", self.line));
        }
        Ok(())
    }
}

/// The gapprobe tool's dom0 path (built and copied once per test binary).
pub fn gapprobe() -> Result<String, String> {
    static T: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    T.get_or_init(|| tool("gapprobe")).clone()
}

/// The kvcrash tool's dom0 path (`tests/lab-tools/kvcrash.c`, the crash-consistency writer and
/// checker for a Redis-protocol server: `kvcrash write HOST PORT LOG SECONDS [CONNS]`, `kvcrash
/// check HOST PORT LOG`); built and copied once per test binary.
pub fn kvcrash() -> Result<String, String> {
    static T: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    T.get_or_init(|| tool("kvcrash")).clone()
}

/// Runs `redis-cli -h IP -p PORT ARGS...` in dom0 (each of `args` one word, quoted for sh) and
/// returns its stdout: one line per reply, error replies as `ERR ...` (redis-cli exits 0 for
/// those). Err when redis-cli itself fails (e.g. it cannot connect; its stderr in the message) or
/// runs for more than 60 s.
pub fn redis_cli(ip: &str, port: u16, args: &[&str]) -> Result<String, String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let err = format!(
        "/tmp/redis-cli-{}-{}.err",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let words: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    dom0_sh(
        &format!(
            "redis-cli -h {ip} -p {port} {} 2>{err}; rc=$?; [ $rc = 0 ] || cat {err} >&2; rm -f {err}; exit $rc",
            words.join(" ")
        ),
        60,
    )
}

impl Probe {
    /// Starts probing http://IP:PORT/ every `interval_ms` in the background (for at most 10
    /// minutes); returns once the first answer has come.
    pub fn http(ip: &str, port: u16, interval_ms: u32) -> Result<Probe, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let (stop, out) = (
            format!("/tmp/probe-{id}.stop"),
            format!("/tmp/probe-{id}.out"),
        );
        let tool = gapprobe()?;
        // The probe prints its line only at the end; its first answer shows as an established
        // connection to the port.
        dom0_sh(
            &format!(
                "rm -f {stop}; setsid {tool} http {ip} {port} 600 {interval_ms} {stop} </dev/null >{out} 2>&1 &
                 sleep 0.3; curl -s -m 5 -o /dev/null http://{ip}:{port}/"
            ),
            30,
        )?;
        Ok(Probe { stop, out })
    }

    /// Stops the probe and reads its report: the probe ends at its next answer (up to 30 s
    /// later, so a pause still going on is measured to its end).
    pub fn stop(self) -> Result<ProbeReport, String> {
        let out = dom0_sh(
            &format!(
                "touch {s}; i=0; while [ $i -lt 400 ] && ! grep -q '^gapprobe:' {o} 2>/dev/null; do sleep 0.1; i=$((i+1)); done
                 cat {o}; rm -f {s} {o}",
                s = self.stop,
                o = self.out
            ),
            60,
        )?;
        ProbeReport::parse(&out)
    }
}

/// `scripts/run ARGS` started against the running test lab, in its own process group, with its
/// stdout and stderr collected line by line ([`ScriptsRun::start`]).
pub struct ScriptsRun {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Everything it printed so far.
    pub seen: String,
}

impl ScriptsRun {
    /// Starts `scripts/run ARGS` (with `env` added and the lab's LAB_DIR) and waits up to
    /// `secs` for a line containing `until`; Err (after stopping it) if none came.
    pub fn start(
        args: &[&str],
        env: &[(&str, &str)],
        until: &str,
        secs: u64,
    ) -> Result<ScriptsRun, String> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new("setsid")
            .arg(crate::root().join("scripts/run"))
            .args(args)
            .env("LAB_DIR", lab_dir())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("scripts/run: {e}"))?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let out = child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>);
        let err = child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>);
        for pipe in [out, err].into_iter().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut run = ScriptsRun {
            child,
            lines: rx,
            seen: String::new(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            match run.lines.recv_timeout(std::time::Duration::from_secs(1)) {
                Ok(l) => {
                    let hit = l.contains(until);
                    run.seen.push_str(&l);
                    run.seen.push('\n');
                    if hit {
                        return Ok(run);
                    }
                }
                Err(_) if std::time::Instant::now() > deadline => {
                    let (_, seen) = run.stop()?;
                    return Err(format!("no line with {until:?} within {secs} s:\n{seen}"));
                }
                Err(_) => {}
            }
        }
    }

    /// Ctrl-C: SIGINT to the whole process group, as a terminal does (SIGTERM, which
    /// scripts/run handles the same way, when this process ignores SIGINT: a test runner
    /// started in the background does, and its children inherit that). Waits up to 60 s for it
    /// to end; Ok((exit code, everything it printed)).
    pub fn stop(mut self) -> Result<(Option<i32>, String), String> {
        use std::process::Command;
        let pid = self.child.id();
        let signal = if sigint_ignored() { "-TERM" } else { "-INT" };
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{pid}")])
            .status();
        let mut code = None;
        for _ in 0..120 {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                code = Some(st.code());
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push_str(&l);
            self.seen.push('\n');
        }
        let Some(code) = code else {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            return Err(format!(
                "scripts/run still running 60 s after SIG{}:\n{}",
                &signal[1..],
                self.seen
            ));
        };
        Ok((code, self.seen))
    }
}

/// Whether this process ignores SIGINT (then so do the children it starts).
pub fn sigint_ignored() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            let hex = st
                .lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (2 - 1)) != 0)
}

/// GET / from 127.0.0.1:`port` on this host (Connection: close): the whole response,
/// None if it could not be had within 30 s.
pub fn host_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut b = Vec::new();
    s.read_to_end(&mut b).ok()?;
    Some(String::from_utf8_lossy(&b).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_gives_endpoints_total_and_split() {
        let c = "xenrt: boot\nhttpd: listening on 10.0.0.14:80 212.7 ms after entry (running 12.1 ms, \
                 blocked 180.0 ms waiting for events, runnable 20.6 ms waiting for a CPU)\nhttpd: serving";
        let r = Ready::from_console(c, "httpd").unwrap();
        assert_eq!(r.ms, "212.7");
        assert_eq!(r.endpoints, ["10.0.0.14:80"]);
        let s = Runstate::from_console(c, "httpd").unwrap();
        assert_eq!(
            (
                s.total_ms,
                s.running_ms,
                s.blocked_ms,
                s.runnable_ms,
                s.offline_ms
            ),
            (212.7, 12.1, 180.0, 20.6, 0.0)
        );
        let plain = "httpd: listening on 10.0.0.14:80 212.7 ms after entry\n";
        assert_eq!(Ready::from_console(plain, "httpd").unwrap().ms, "212.7");
        assert!(Runstate::from_console(plain, "httpd").is_err());
    }
}
