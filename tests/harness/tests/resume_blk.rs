//! blkfront across `xl save` + `xl restore` in the lab: apps/blktest `blk=soak` keeps rewriting
//! and verifying chunks of a disk served by dom0's xen-blkback while the guest is saved and
//! restored mid-write; afterwards the guest checks every byte it wrote, and dom0 checks the
//! backing file against the SHA-256 the guest says the range must have. (The full list
//! of save/restore/migrate tests lives in other files.)

use xen_tests::case;
use xen_tests::lab::{expect, lab, Guest};

/// Runs `cmd` in dom0; its output, or an error with it.
fn sh(cmd: &str, secs: u32) -> Result<String, String> {
    let r = lab(&["exec", "-t", &secs.to_string(), cmd])?;
    if r.code != Some(0) {
        return Err(format!("dom0 `{cmd}` failed ({:?}): {}", r.code, r.output));
    }
    Ok(r.output)
}

/// The value of `key=` on the last console line containing `prefix`.
fn field(console: &str, prefix: &str, key: &str) -> Result<String, String> {
    let line = console
        .lines()
        .rev()
        .find(|l| l.contains(prefix))
        .ok_or(format!("no {prefix:?} line in:\n{console}"))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .ok_or(format!("no {key}= in {line:?}"))
}

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![case(
        "blktest_writing_across_xl_save_and_restore_loses_no_byte",
        || {
            let mib = 8u64;
            let img = "/mnt/lab/blk/resume.img";
            sh(
                &format!("mkdir -p /mnt/lab/blk && rm -f {img} && truncate -s 16M {img}"),
                60,
            )?;
            let disk = format!("disk=['format=raw,vdev=xvda,access=rw,target={img}']");
            let g = Guest::start_with(
                "blktest",
                &format!("blk=soak mib={mib} tasks=4 secs=25 seed=7"),
                &[&disk],
            )?;
            g.until("BLK soak writing", 60)?;
            // Let it write for a while, then save and restore it mid-write.
            std::thread::sleep(std::time::Duration::from_secs(3));
            let save = format!("/tmp/{}.save", g.name);
            let t0 = std::time::Instant::now();
            sh(&format!("xl save {} {save}", g.name), 120)?;
            let saved = t0.elapsed();
            let t1 = std::time::Instant::now();
            sh(&format!("xl restore {save} && rm -f {save}"), 120)?;
            let restored = t1.elapsed();
            // The restored domain has a new domid (`lab wait` follows the old one): follow the
            // console by name, then take the domain down by name.
            let done = g.until("BLK ok soak", 240);
            let c = g.console()?;
            let _ = sh(&format!("xl destroy {} || true", g.name), 60);
            done.map_err(|e| format!("{e}\n{c}"))?;
            expect(&c, "suspend: resumed in a new domain")?;
            let reconnects = field(&c, "BLK soak secs=", "reconnects")?;
            if reconnects != "1" {
                return Err(format!("reconnects={reconnects}, want 1:\n{c}"));
            }
            let want = field(&c, "BLK soak secs=", "sha")?;
            let got = sh(&format!("head -c {} {img} | sha256sum", mib << 20), 60)?;
            let got = got.split_whitespace().next().unwrap_or("").to_string();
            sh(&format!("rm -f {img}"), 60)?;
            if got != want {
                return Err(format!(
                    "the guest wrote sha {want}, dom0 finds {got} in the backing file"
                ));
            }
            let resumed = c
                .lines()
                .find(|l| l.contains("suspend: resumed"))
                .unwrap_or("");
            let reconnected = c
                .lines()
                .find(|l| l.contains("reconnected after a restore"))
                .unwrap_or("");
            let failed: Vec<&str> = c
                .lines()
                .filter(|l| l.contains("reconnect after a restore failed"))
                .collect();
            Ok(format!(
                "[xl save {:.1} s, xl restore {:.1} s; resubmitted={} reconnect_ms={} \
                 reconnect_failures={} bad={}] [{resumed}] [{reconnected}] {failed:?}",
                saved.as_secs_f64(),
                restored.as_secs_f64(),
                field(&c, "BLK soak secs=", "resubmitted")?,
                field(&c, "BLK soak secs=", "reconnect_ms")?,
                field(&c, "BLK soak secs=", "reconnect_failures")?,
                field(&c, "BLK soak secs=", "bad")?
            ))
        },
    )];
    let ok = xen_tests::run_cases("resume_blk", cases, 1);
    xen_tests::lab::finish(ok)
}
