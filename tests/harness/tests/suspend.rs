//! The lab tier's save/restore/migration cases for the domain itself (`xen::suspend`): a guest
//! is saved and restored (`xl save` + `xl restore`), checkpointed in place (`xl save -c`) and
//! migrated to the same dom0 (`xl migrate`); each time it must say how it came back, keep
//! printing (its console works), keep its monotonic clock going without a step back or a jump
//! by the time it spent saved, and end cleanly with `xl shutdown`. The test kernel's
//! `test=suspend` ticks every 500 ms with its clock readings; httpd (with a vif) is saved and
//! restored too, for the drivers' sake: it must not crash, whatever its network does.

use xen_tests::case;
use xen_tests::lab::{dom0_sh, expect, lab, Guest};

const XL: &str = "/usr/lib/xen-4.17/bin/xl";

/// One `TEST suspend: tick N gen=G mono_ms=M step_ms=S wall_step_ms=W` line.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tick {
    n: u64,
    gen: u64,
    mono_ms: u64,
    step_ms: u64,
    wall_step_ms: u64,
}

fn ticks(console: &str) -> Vec<Tick> {
    console
        .lines()
        .filter_map(|l| {
            let rest = l.split("TEST suspend: tick ").nth(1)?;
            let mut it = rest.split_whitespace();
            let n = it.next()?.parse().ok()?;
            let mut field = |k: &str| -> Option<u64> {
                it.next()?.strip_prefix(k)?.strip_prefix('=')?.parse().ok()
            };
            Some(Tick {
                n,
                gen: field("gen")?,
                mono_ms: field("mono_ms")?,
                step_ms: field("step_ms")?,
                wall_step_ms: field("wall_step_ms")?,
            })
        })
        .collect()
}

/// (ms to suspend, ms to resume, ms away) from the guest's `suspend: ...` line after
/// `marker`.
fn suspend_times(console: &str, marker: &str) -> Option<(u64, u64, u64)> {
    let l = console.lines().find(|l| l.contains(marker))?;
    let num = |after: &str| -> Option<u64> {
        l.split(after)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((num("in the guest: ")?, num("to suspend, ")?, num("away ")?))
}

/// The clock across the ticks in `console`: never backwards, ticks in order, and across the
/// first tick after the guest's `marker` line, the time spent away is not counted: the wall
/// clock's step exceeds the monotonic one by the time the guest was away, less what it spent
/// suspending and resuming itself. Returns that tick.
fn check_clock(console: &str, marker: &str) -> Result<Tick, String> {
    if console.contains("FAIL") {
        return Err(format!("the guest reported a failure:\n{console}"));
    }
    let at = console
        .find(marker)
        .ok_or(format!("no {marker:?} in:\n{console}"))?;
    let all = ticks(console);
    for w in all.windows(2) {
        if w[1].mono_ms < w[0].mono_ms || w[1].n != w[0].n + 1 {
            return Err(format!("ticks out of order: {:?} then {:?}", w[0], w[1]));
        }
    }
    let first = ticks(&console[at..])
        .into_iter()
        .next()
        .ok_or(format!("no tick after {marker:?}:\n{console}"))?;
    let (to_suspend, to_resume, away) =
        suspend_times(console, marker).ok_or(format!("no times in the {marker:?} line"))?;
    let not_counted = first.wall_step_ms.saturating_sub(first.step_ms);
    // 50 ms for the readings' rounding to whole ms and the ticks' own timing.
    if not_counted + to_suspend + to_resume + 50 < away {
        return Err(format!(
            "the monotonic clock counted the time away ({away} ms away, {to_suspend} + \
             {to_resume} ms in the guest, only {not_counted} ms not counted): {first:?}\n{console}"
        ));
    }
    Ok(first)
}

/// `g` after a checkpoint: the same domain, adopted past its suspend (`scripts/lab adopt`).
fn adopt_same(g: &Guest) -> Result<Guest, String> {
    let r = lab(&["adopt", &g.name])?;
    if r.code != Some(0) || !r.output.trim().ends_with(&format!(" {}", g.domid())) {
        return Err(format!("lab adopt {}: {}", g.name, r.output));
    }
    Ok(Guest::named(g.name.clone(), g.domid()))
}

/// `g` in the new domain `xl restore` / `xl migrate` made (`scripts/lab adopt`: its console,
/// end and domid are the new domain's from now on).
fn adopt(g: &Guest) -> Result<Guest, String> {
    let r = lab(&["adopt", &g.name])?;
    let domid = r
        .output
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|d| d.parse().ok())
        .ok_or(format!("lab adopt {}: {}", g.name, r.output))?;
    if domid == g.domid() {
        return Err(format!("{} is still domid {domid}", g.name));
    }
    Ok(Guest::named(g.name.clone(), domid))
}

/// `xl domid NAME` now.
fn domid(name: &str) -> Result<u32, String> {
    let r = lab(&["exec", &format!("{XL} domid {name}")])?;
    r.output
        .trim()
        .parse()
        .map_err(|_| format!("xl domid {name}: {}", r.output))
}

/// Runs an xl command in dom0; returns its output and how long it took (from dom0's uptime).
fn xl_timed(cmd: &str, secs: u32) -> Result<(String, f64), String> {
    let out = dom0_sh(
        &format!(
            "t0=$(cut -d' ' -f1 /proc/uptime)\n{cmd} 2>&1 || exit 1\n\
             echo \"took $t0 $(cut -d' ' -f1 /proc/uptime)\"\n"
        ),
        secs,
    )?;
    let took = out
        .lines()
        .rev()
        .find_map(|l| {
            let mut it = l.strip_prefix("took ")?.split_whitespace();
            let a: f64 = it.next()?.parse().ok()?;
            let b: f64 = it.next()?.parse().ok()?;
            Some(b - a)
        })
        .ok_or(format!("no timing in:\n{out}"))?;
    Ok((out, took))
}

/// The guest's `suspend: ...` line containing `what`.
fn line<'a>(console: &'a str, what: &str) -> &'a str {
    console
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or("")
        .trim()
}

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![
        case(
            "xl_save_then_xl_restore_resumes_the_guest_in_a_new_domain",
            || {
                let g = Guest::start("testkernel", "test=suspend")?;
                g.until("tick 2 ", 60)?;
                let file = format!("/root/{}.save", g.name);
                let (_, save_s) = xl_timed(&format!("{XL} save {} {file}", g.name), 120)?;
                let (_, restore_s) = xl_timed(&format!("{XL} restore {file}; rm -f {file}"), 120)?;
                let g = adopt(&g)?;
                g.until("gen=1 ", 60)?;
                // A few more ticks: the console, the timer and the event loop keep working.
                let first = check_clock(&g.console()?, "suspend: resumed in a new domain")?;
                g.until(&format!("tick {} ", first.n + 3), 30)?;
                let c = g.console()?;
                expect(&c, "suspend: saving")?;
                expect(&c, "suspend: resumed in a new domain (generation 1) after")?;
                if first.gen != 1 {
                    return Err(format!("first tick after the restore: {first:?}"));
                }
                g.shutdown_cleanly()?;
                Ok(format!(
                "[xl save {save_s:.2} s, xl restore {restore_s:.2} s; {}; tick step {} ms, wall {} ms]",
                line(&c, "resumed in a new domain"),
                first.step_ms,
                first.wall_step_ms
            ))
            },
        ),
        case(
            "xl_save_c_checkpoints_and_the_guest_continues_in_place",
            || {
                let g = Guest::start("testkernel", "test=suspend")?;
                g.until("tick 2 ", 60)?;
                let file = format!("/root/{}.save", g.name);
                let (_, save_s) = xl_timed(
                    &format!("{XL} save -c {} {file}; rm -f {file}", g.name),
                    120,
                )?;
                // The same domain: its suspend is in the xl log now, which `lab adopt` skips.
                let g = adopt_same(&g)?;
                g.until("suspend: cancelled, continuing", 30)?;
                let before = ticks(&g.console()?).last().map_or(0, |t| t.n);
                g.until(&format!("tick {} ", before + 3), 30)?;
                let c = g.console()?;
                let first = check_clock(&c, "suspend: cancelled, continuing")?;
                if first.gen != 0 {
                    return Err(format!("a checkpoint is no new domain: {first:?}"));
                }
                if domid(&g.name)? != g.domid() {
                    return Err("the domain changed on a checkpoint".into());
                }
                // No xl process watches the domain after a checkpoint (the one from
                // `xl create` left when the domain suspended), so nothing logs its end:
                // `xl shutdown -w` waits for it, and the console says how it ended.
                dom0_sh(&format!("{XL} shutdown -w {}", g.name), 90)?;
                let end = g.console()?;
                lab(&["destroy", &g.name])?;
                expect(&end, "xenrt: exit poweroff")?;
                Ok(format!(
                    "[xl save -c {save_s:.2} s; {}]",
                    line(&c, "cancelled, continuing")
                ))
            },
        ),
        case(
            "xl_migrate_to_the_same_dom0_resumes_the_guest_there",
            || {
                let g = Guest::start("testkernel", "test=suspend")?;
                g.until("tick 2 ", 60)?;
                let (_, secs) = xl_timed(
                    &format!("{XL} migrate -s '' {} '{XL} migrate-receive'", g.name),
                    300,
                )?;
                let old = g.console()?;
                expect(&old, "suspend: saving")?;
                // The new domain's console log is its own (named NAME--incoming by xenconsoled,
                // which saw it while it arrived).
                let g = adopt(&g)?;
                g.until("gen=1 ", 60)?;
                let c = format!("{old}{}", g.console()?);
                let first = check_clock(&c, "suspend: resumed in a new domain")?;
                g.until(&format!("tick {} ", first.n + 3), 30)?;
                let c = format!("{old}{}", g.console()?);
                expect(&c, "suspend: resumed in a new domain (generation 1) after")?;
                g.shutdown_cleanly()?;
                Ok(format!(
                    "[xl migrate {secs:.2} s; {}]",
                    line(&c, "resumed in a new domain")
                ))
            },
        ),
        case(
            "httpd_survives_xl_save_and_restore_and_shuts_down_cleanly",
            || {
                // The vif's reconnect is netfront's; here the domain must live on, its drivers
                // must not crash on ports and grants a restore made void, and it must still obey
                // the toolstack.
                let g = Guest::start("httpd", "log=info")?;
                g.until("httpd: serving", 90)?;
                let file = format!("/root/{}.save", g.name);
                xl_timed(&format!("{XL} save {} {file}", g.name), 120)?;
                xl_timed(&format!("{XL} restore {file}; rm -f {file}"), 120)?;
                let g = adopt(&g)?;
                g.until("suspend: resumed in a new domain", 60)?;
                // Give the drivers time to look at the new generation.
                std::thread::sleep(std::time::Duration::from_secs(3));
                let c = g.console()?;
                if c.contains("PANIC") || c.contains("xenrt: exit crash") {
                    return Err(format!("httpd crashed after the restore:\n{c}"));
                }
                g.shutdown_cleanly()?;
                let after: Vec<&str> = c
                    .lines()
                    .skip_while(|l| !l.contains("suspend: resumed"))
                    .skip(1)
                    .take(4)
                    .collect();
                Ok(format!("[after: {}]", after.join(" | ")))
            },
        ),
    ];
    let ok = xen_tests::run_cases("suspend", cases, 1);
    xen_tests::lab::finish(ok)
}
