//! The lab (scripts/lab) from tests: one lab boot serves the cases of every lab-tier test file
//! (`LAB_DIR`, default target/lab-test); guests are started from target/images/IMAGE.xl.

use crate::{image, root, run, Run};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

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
    /// Its domid.
    pub domid: u32,
}

impl Guest {
    /// Starts IMAGE as a new guest with kernel command line `extra`.
    pub fn start(image_name: &str, extra: &str) -> Result<Guest, String> {
        Self::start_with(image_name, extra, &[])
    }

    /// [`Guest::start`] with more `K=V` lines for the .xl (they win over it).
    pub fn start_with(image_name: &str, extra: &str, more: &[&str]) -> Result<Guest, String> {
        let xl = image(&format!("{image_name}.xl"))?;
        // Unique within a lab boot, even when a kept lab serves several test runs.
        let name = format!(
            "{image_name}-{}-{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
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
        Ok(Guest { name, domid })
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

/// Ends a lab-tier test binary: stops the lab unless `LAB_KEEP=1` (scripts/test keeps it up
/// between the lab-tier files and stops it at the end), then exits 0 if `ok`.
pub fn finish(ok: bool) -> ! {
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
