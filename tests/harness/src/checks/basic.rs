//! The basic lifecycle checks (from `tests/lab.rs`): hello's console, a bad command line, a
//! panic, and `xl shutdown` / `xl reboot` / `xl destroy` of a running guest.

use crate::lab::{expect, lab, Guest};

/// hello prints through the console ring and powers off; the note is its entry-to-main line.
pub fn hello_prints_and_powers_off(more: &[&str]) -> Result<String, String> {
    let g = Guest::start_with("hello", "log=info", more)?;
    let end = g.wait(60)?;
    let c = g.console()?;
    expect(&c, "Hello from Xen 4.17")?;
    expect(&c, "memory: 8 MiB")?;
    expect(&c, "xenrt: exit poweroff")?;
    if end != "poweroff" {
        return Err(format!("ended with {end}"));
    }
    Ok(c.lines()
        .find(|l| l.contains("entry to main"))
        .unwrap_or("")
        .to_string())
}

/// An unknown command-line key is reported, the known ones still apply, and hello runs on.
pub fn bad_extra_is_reported(more: &[&str]) -> Result<String, String> {
    let g = Guest::start_with("hello", "log=loud bogus=1", more)?;
    let end = g.wait(60)?;
    let c = g.console()?;
    expect(&c, "xenrt: cmdline: unknown key 'bogus'")?;
    expect(&c, "loud")?;
    expect(&c, "Hello from Xen")?;
    (end == "poweroff")
        .then_some(String::new())
        .ok_or(format!("ended with {end}"))
}

/// A panicking guest prints its message and ends crashed.
pub fn panic_ends_crashed(more: &[&str]) -> Result<String, String> {
    let g = Guest::start_with("testkernel", "test=panic", more)?;
    let end = g.wait(60)?;
    let c = g.console()?;
    expect(&c, "xenrt: PANIC at tests/kernel/src/main.rs")?;
    expect(&c, "test panic 42")?;
    (end == "crash")
        .then_some(String::new())
        .ok_or(format!("ended with {end}"))
}

/// `xl destroy` stops a running (idle, ticking) guest and it is gone from `xl list`.
pub fn xl_destroy_stops_a_running_guest(more: &[&str]) -> Result<String, String> {
    let g = Guest::start_with("testkernel", "test=idle", more)?;
    let r = lab(&["console", &g.name, "--until", "tick 2", "--follow", "60"])?;
    expect(&r.output, "TEST idle: tick 2")?;
    let d = lab(&["destroy", &g.name])?;
    if d.code != Some(0) {
        return Err(format!("destroy failed: {}", d.output));
    }
    let l = lab(&["exec", "xl list"])?;
    if l.output.contains(&g.name) {
        return Err(format!(
            "{} still listed after destroy:\n{}",
            g.name, l.output
        ));
    }
    Ok(String::new())
}

/// `xl shutdown -w` makes a running guest power off cleanly.
pub fn xl_shutdown_powers_the_guest_off(more: &[&str]) -> Result<String, String> {
    let g = Guest::start_with("testkernel", "test=idle", more)?;
    g.until("TEST idle: tick 1", 60)?;
    let t = std::time::Instant::now();
    let r = lab(&["exec", "-t", "30", &format!("xl shutdown -w {}", g.name)])?;
    let secs = t.elapsed().as_secs_f64();
    if r.code != Some(0) {
        return Err(format!("xl shutdown -w failed: {}", r.output));
    }
    let end = g.wait(30)?;
    expect(&g.console()?, "xenrt: exit poweroff")?;
    if end != "poweroff" {
        return Err(format!("ended with {end}"));
    }
    Ok(format!("[xl shutdown -w took {secs:.1} s]"))
}

/// `xl reboot` ends the guest with reboot and the toolstack restarts it (same name, new domid).
pub fn xl_reboot_restarts_the_guest(more: &[&str]) -> Result<String, String> {
    let mut lines = vec!["on_reboot=\"restart\""];
    lines.extend_from_slice(more);
    let g = Guest::start_with("testkernel", "test=idle", &lines)?;
    g.until("TEST idle: tick 1", 60)?;
    let r = lab(&["exec", "-t", "30", &format!("xl reboot {}", g.name)])?;
    if r.code != Some(0) {
        return Err(format!("xl reboot failed: {}", r.output));
    }
    // The restarted domain has the same name and a new domid.
    let mut new_domid = None;
    for _ in 0..60 {
        let d = lab(&["exec", &format!("xl domid {}", g.name)])?;
        match d.output.trim().parse::<u32>() {
            Ok(id) if id != g.domid() => {
                new_domid = Some(id);
                break;
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
    let _ = lab(&["exec", &format!("xl destroy {}", g.name)]);
    let new_domid = new_domid.ok_or("no restarted domain")?;
    expect(&g.console()?, "xenrt: exit reboot")?;
    Ok(format!("[domid {} -> {new_domid}]", g.domid()))
}
