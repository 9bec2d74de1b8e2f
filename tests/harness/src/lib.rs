//! Support for the tests that boot real Xen (`tests/dom0.rs`, `tests/lab.rs`): running cases in
//! parallel with a summary line the CI reads, finding images and their symbols, and running
//! scripts with deadlines.
//!
//! These tests need the images built first (`scripts/build`, which `scripts/test` runs); when an
//! image is missing they fail with that instruction rather than pass silently.

pub mod checks;
pub mod lab;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Path of a built image (`target/images/NAME`), or a clear error.
pub fn image(name: &str) -> Result<PathBuf, String> {
    let p = root().join("target/images").join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: run `scripts/build {name}` (scripts/test does)",
            p.display()
        ))
    }
}

/// Address of symbol `sym` in `image.debug`.
pub fn symbol(image_name: &str, sym: &str) -> Result<u64, String> {
    let dbg = image(&format!("{image_name}.debug"))?;
    let out = Command::new("nm")
        .arg(&dbg)
        .output()
        .map_err(|e| format!("nm: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            let (a, _, n) = (it.next()?, it.next()?, it.next()?);
            (n == sym)
                .then(|| u64::from_str_radix(a, 16).ok())
                .flatten()
        })
        .ok_or_else(|| format!("no symbol {sym} in {}", dbg.display()))
}

/// `text` (a console log) with its backtrace addresses named by `scripts/symbolize` from
/// `image_name`'s debug file.
pub fn symbolized(image_name: &str, text: &str) -> Result<String, String> {
    use std::io::Write;
    let dbg = image(&format!("{image_name}.debug"))?;
    let mut child = Command::new(root().join("scripts/symbolize"))
        .arg(&dbg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("scripts/symbolize: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let text = text.to_string();
    let feed = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("scripts/symbolize: {e}"))?;
    let _ = feed.join();
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Output and status of a finished command.
#[derive(Debug)]
pub struct Run {
    /// stdout and stderr, interleaved as lines arrived (with `\r` removed).
    pub output: String,
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Run {
    /// Fails unless the output contains `needle`.
    pub fn expect(&self, needle: &str) -> Result<(), String> {
        if self.output.contains(needle) {
            Ok(())
        } else {
            Err(format!("expected {needle:?} in the output"))
        }
    }

    /// Fails if the output contains `needle`.
    pub fn reject(&self, needle: &str) -> Result<(), String> {
        if self.output.contains(needle) {
            Err(format!("unexpected {needle:?} in the output"))
        } else {
            Ok(())
        }
    }

    /// The first line containing `needle`.
    pub fn line(&self, needle: &str) -> Option<&str> {
        self.output.lines().find(|l| l.contains(needle))
    }
}

/// Runs `cmd` to completion, capturing its output.
pub fn run(cmd: &mut Command) -> Result<Run, String> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run {cmd:?}: {e}"))?;
    let mut output = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    output.push_str(&String::from_utf8_lossy(&out.stderr).replace('\r', ""));
    Ok(Run {
        output,
        code: out.status.code(),
        elapsed: start.elapsed(),
    })
}

/// Boots `image` as dom0 of a real Xen in QEMU with `cmdline` (scripts/dom0-boot).
pub fn boot_dom0(image_name: &str, cmdline: &str) -> Result<Run, String> {
    let img = image(image_name)?;
    run(Command::new(root().join("scripts/dom0-boot"))
        .arg(img)
        .arg(cmdline))
}

/// A named test case.
pub struct Case {
    /// Name printed in the report.
    pub name: &'static str,
    /// The test: Ok, or why it failed.
    pub run: Box<dyn Fn() -> Result<String, String> + Send + Sync>,
}

/// Builds a [`Case`].
pub fn case(
    name: &'static str,
    f: impl Fn() -> Result<String, String> + Send + Sync + 'static,
) -> Case {
    Case {
        name,
        run: Box::new(f),
    }
}

/// [`run_cases`], then exits non-zero if any failed.
pub fn main(tier: &'static str, cases: Vec<Case>, jobs: usize) -> ! {
    let ok = run_cases(tier, cases, jobs);
    std::process::exit(if ok { 0 } else { 1 })
}

/// Runs the cases on `jobs` threads, prints one line per case and the summary line
/// `N passed, M failed`; true when none failed. Arguments filter cases by substring.
pub fn run_cases(tier: &'static str, cases: Vec<Case>, jobs: usize) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())))
        .collect();
    println!(
        "running {} {tier}-tier tests on {jobs} threads",
        cases.len()
    );
    let queue = Arc::new(Mutex::new(
        cases.into_iter().collect::<std::collections::VecDeque<_>>(),
    ));
    let results = Arc::new(Mutex::new((0usize, Vec::<String>::new())));
    let threads: Vec<_> = (0..jobs)
        .map(|_| {
            let (queue, results) = (queue.clone(), results.clone());
            std::thread::spawn(move || loop {
                let Some(c) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let start = Instant::now();
                let r = (c.run)();
                let secs = start.elapsed().as_secs_f64();
                let mut res = results.lock().unwrap();
                match r {
                    Ok(note) => {
                        println!("test {tier}::{} ... ok ({secs:.1} s) {note}", c.name);
                        res.0 += 1;
                    }
                    Err(e) => {
                        println!("test {tier}::{} ... FAILED ({secs:.1} s)\n    {e}", c.name);
                        res.1.push(c.name.to_string());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let (passed, failed) = std::mem::take(&mut *results.lock().unwrap());
    if !failed.is_empty() {
        println!("failures: {}", failed.join(", "));
    }
    println!("{tier}: {passed} passed, {} failed", failed.len());
    failed.is_empty()
}
