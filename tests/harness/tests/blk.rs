//! The block tier of the lab: apps/blktest (blkfront) against Linux's xen-blkback in the lab's
//! dom0, with disk images dom0 creates under /mnt/lab/blk (= $LAB_DIR/dom0/blk on the host,
//! sparse), plus grant copy with dom0 (testkernel `test=grant-copy`). Each case checks the
//! guest's `BLK ...` / `TEST ...` lines against what dom0 (or the host) finds in the backing
//! files.

use std::path::PathBuf;
use std::process::Command;
use xen_tests::lab::{expect, lab, lab_dir, Guest};
use xen_tests::{case, run};

/// A sparse disk image of `mib` MiB made by dom0; returns its dom0 path.
fn dom0_disk(name: &str, mib: u64) -> Result<String, String> {
    let path = format!("/mnt/lab/blk/{name}.img");
    sh(&format!(
        "mkdir -p /mnt/lab/blk && rm -f {path} && truncate -s {mib}M {path}"
    ))?;
    Ok(path)
}

/// The host path of a dom0 path under /mnt/lab.
fn host_path(dom0_path: &str) -> PathBuf {
    PathBuf::from(lab_dir())
        .join("dom0")
        .join(dom0_path.strip_prefix("/mnt/lab/").unwrap_or(dom0_path))
}

/// Runs `cmd` in dom0; its output, or an error with it.
fn sh(cmd: &str) -> Result<String, String> {
    let r = lab(&["exec", "-t", "300", cmd])?;
    if r.code != Some(0) {
        return Err(format!("dom0 `{cmd}` failed ({:?}): {}", r.code, r.output));
    }
    Ok(r.output)
}

/// SHA-256 of `len` bytes at `off` of a dom0 file, computed in dom0.
fn dom0_sha(path: &str, off: u64, len: u64) -> Result<String, String> {
    let out = sh(&format!(
        "tail -c +{} {path} | head -c {len} | sha256sum",
        off + 1
    ))?;
    Ok(out.split_whitespace().next().unwrap_or("").to_string())
}

/// An xl `disk=` line.
fn disks(specs: &[(&str, &str, &str)]) -> String {
    let items: Vec<String> = specs
        .iter()
        .map(|(vdev, access, target)| {
            format!("'format=raw,vdev={vdev},access={access},target={target}'")
        })
        .collect();
    format!("disk=[{}]", items.join(","))
}

/// The value of `key=` on the first console line containing `prefix`.
fn field(console: &str, prefix: &str, key: &str) -> Result<String, String> {
    let line = console
        .lines()
        .find(|l| l.contains(prefix))
        .ok_or(format!("no {prefix:?} line in:\n{console}"))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .ok_or(format!("no {key}= in {line:?}"))
}

/// Starts blktest with `extra` and `disk`, waits for its end (`secs`), and checks it powered
/// off with `BLK ok MODE`; returns the console.
fn blktest(extra: &str, disk: &str, secs: u32) -> Result<String, String> {
    let g = Guest::start_with("blktest", extra, &[disk])?;
    let end = g.wait(secs)?;
    let c = g.console()?;
    let mode = extra
        .split_whitespace()
        .find_map(|w| w.strip_prefix("blk="))
        .unwrap_or("info");
    expect(&c, &format!("BLK ok {mode}"))?;
    if end != "poweroff" {
        return Err(format!("ended with {end}:\n{c}"));
    }
    Ok(c)
}

/// The line saying what blkback and we negotiated, for the case's note.
fn negotiated(console: &str) -> String {
    console
        .lines()
        .find(|l| l.starts_with("BLK disk"))
        .map(|l| format!("[{l}]"))
        .unwrap_or_default()
}

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![
        case("grant_copy_in_and_out_of_a_page_dom0_granted", || {
            // tests/lab-tools/gntshare.c, built static on the host, grants two pages through
            // Linux's gntalloc in dom0 and checks what the guest copied into the writable one.
            let dom0_tool = xen_tests::lab::tool("gntshare")?;
            let g = Guest::start("testkernel", "test=grant-copy")?;
            g.until("TEST grant-copy: ready", 60)?;
            let share = lab(&["exec", "-t", "90", &format!("{dom0_tool} {} 60", g.domid())])?;
            let end = g.wait(60)?;
            let c = g.console()?;
            expect(&share.output, "gntshare: PASS")
                .map_err(|e| format!("{e}\nguest console:\n{c}"))?;
            expect(&c, "TEST grant-copy: PASS")?;
            (end == "poweroff")
                .then_some(String::new())
                .ok_or(format!("ended with {end}"))
        }),
        case("guest_reads_what_dom0_wrote_into_the_backing_file", || {
            let img = dom0_disk("read", 16)?;
            // Random bytes from dom0 over the first 4 MiB; the guest reads an unaligned range.
            sh(&format!(
                "dd if=/dev/urandom of={img} bs=1M count=4 conv=notrunc 2>/dev/null"
            ))?;
            let (off, len) = (1_234_567u64, 2_000_000u64);
            let want = dom0_sha(&img, off, len)?;
            let c = blktest(
                &format!("blk=read off={off} len={len}"),
                &disks(&[("xvda", "rw", &img)]),
                120,
            )?;
            let got = field(&c, "BLK sha=", "sha")?;
            sh(&format!("rm -f {img}"))?;
            if got != want {
                return Err(format!("guest read sha {got}, dom0 wrote {want}"));
            }
            Ok(negotiated(&c))
        }),
        case(
            "flushed_writes_are_in_the_backing_file_after_xl_destroy",
            || {
                let img = dom0_disk("flush", 16)?;
                let (off, len) = (3 * 4096 + 17u64, 3 * 1024 * 1024u64);
                let g = Guest::start_with(
                    "blktest",
                    &format!("blk=write-flush off={off} len={len} seed=7"),
                    &[&disks(&[("xvda", "rw", &img)])],
                )?;
                if let Err(e) = g.until("BLK flushed", 120) {
                    let _ = g.wait(5);
                    return Err(e);
                }
                let c = g.console()?;
                let written = field(&c, "BLK flushed", "sha")?;
                // What each side offered and chose, while the device is connected.
                let be = format!("/local/domain/0/backend/vbd/{}/51712", g.domid());
                let fe = format!("/local/domain/{}/device/vbd/51712", g.domid());
                let offer = sh(&format!(
                "for k in max-ring-page-order feature-max-indirect-segments feature-persistent \
                 feature-flush-cache feature-barrier feature-discard; do \
                 echo \"$k=$(xenstore-read {be}/$k 2>/dev/null)\"; done; \
                 echo \"front ring-page-order=$(xenstore-read {fe}/ring-page-order 2>/dev/null)\""
            ))?;
                let d = lab(&["destroy", &g.name])?;
                if d.code != Some(0) {
                    return Err(format!("xl destroy failed: {}", d.output));
                }
                let _ = g.wait(30);
                let found = dom0_sha(&img, off, len)?;
                sh(&format!("rm -f {img}"))?;
                if found != written {
                    return Err(format!(
                        "guest flushed sha {written}, dom0 finds {found} in the backing file"
                    ));
                }
                Ok(format!(
                    "[backend offered: {}] {}",
                    offer.split_whitespace().collect::<Vec<_>>().join(" "),
                    negotiated(&c)
                ))
            },
        ),
        case("sequential_128_mib_write_and_read_back_by_checksum", || {
            let img = dom0_disk("seq", 144)?;
            let c = blktest(
                "blk=seq mib=128 seed=11",
                &disks(&[("xvda", "rw", &img)]),
                1500,
            )?;
            let w = field(&c, "BLK seq", "write_sha")?;
            let r = field(&c, "BLK seq", "read_sha")?;
            if w != r {
                return Err(format!("wrote sha {w}, read back {r}"));
            }
            // The bytes are in the backing file too (hashed on the host, through the share).
            let on_host = run(Command::new("sh").arg("-c").arg(format!(
                "head -c {} {} | sha256sum",
                128u64 << 20,
                host_path(&img).display()
            )))?;
            let file_sha = on_host
                .output
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            sh(&format!("rm -f {img}"))?;
            if file_sha != w {
                return Err(format!(
                    "guest wrote sha {w}, the backing file has {file_sha}"
                ));
            }
            Ok(format!(
                "[write {} s, read {} s]",
                field(&c, "BLK seq", "write_s")?,
                field(&c, "BLK seq", "read_s")?
            ))
        }),
        case("random_4k_writes_then_reads_verified", || {
            let img = dom0_disk("random", 64)?;
            let c = blktest(
                "blk=random n=2000 seed=5",
                &disks(&[("xvda", "rw", &img)]),
                600,
            )?;
            expect(&c, "bad=0")?;
            sh(&format!("rm -f {img}"))?;
            Ok(c.lines()
                .find(|l| l.starts_with("BLK random"))
                .unwrap_or("")
                .to_string())
        }),
        case("async_tasks_write_and_read_at_once_verified", || {
            // blktest's async mode: 8 tasks write the pattern over 16 MiB in pieces of mixed
            // sizes at once, flush, read 800 random ranges back verified, cancel a read on the
            // ring; dom0 finds the pattern's SHA-256 in the backing file.
            let img = dom0_disk("async", 64)?;
            let c = blktest(
                "blk=async mib=16 tasks=8 n=800 seed=21",
                &disks(&[("xvda", "rw", &img)]),
                900,
            )?;
            expect(&c, "bad=0")?;
            let want = field(&c, "BLK async ", "sha")?;
            let found = dom0_sha(&img, 0, 16 << 20)?;
            sh(&format!("rm -f {img}"))?;
            if found != want {
                return Err(format!(
                    "the guest wrote pattern sha {want}, dom0 finds {found} in the backing file"
                ));
            }
            let line = |p: &str| {
                c.lines()
                    .find(|l| l.starts_with(p))
                    .unwrap_or("")
                    .to_string()
            };
            Ok(format!(
                "[{}] [{}]",
                line("BLK async "),
                line("BLK async-rate")
            ))
        }),
        case("read_only_disk_refuses_writes_with_an_error", || {
            let img = dom0_disk("ro", 8)?;
            sh(&format!(
                "dd if=/dev/urandom of={img} bs=64k count=1 conv=notrunc 2>/dev/null"
            ))?;
            let before = dom0_sha(&img, 0, 8 << 20)?;
            let c = blktest("blk=readonly", &disks(&[("xvda", "ro", &img)]), 120)?;
            expect(&c, "ro=true")?;
            expect(&c, "write=Err(ReadOnly)")?;
            let after = dom0_sha(&img, 0, 8 << 20)?;
            sh(&format!("rm -f {img}"))?;
            if before != after {
                return Err("the read-only backing file changed".into());
            }
            Ok(String::new())
        }),
        case("failing_device_gives_the_app_errors_not_a_crash", || {
            // A device-mapper target whose every I/O fails.
            let _ = sh("dmsetup remove blkerr 2>/dev/null; true");
            sh("dmsetup create blkerr --table '0 32768 error'")?;
            let r = blktest(
                "blk=errors",
                &disks(&[("xvda", "rw", "/dev/mapper/blkerr")]),
                180,
            );
            let _ = sh("dmsetup remove blkerr");
            let c = r?;
            expect(&c, "read=error(read I/O error")?;
            expect(&c, "write=error(write I/O error")?;
            Ok(c.lines()
                .find(|l| l.starts_with("BLK errors round=0"))
                .map(|l| format!("[{l}]"))
                .unwrap_or_default())
        }),
        case("two_disks_at_once", || {
            let a = dom0_disk("two-a", 16)?;
            let b = dom0_disk("two-b", 32)?;
            let c = blktest(
                "blk=two-disks seed=3",
                &disks(&[("xvda", "rw", &a), ("xvdb", "rw", &b)]),
                180,
            )?;
            expect(&c, "capacity=16777216")?;
            expect(&c, "capacity=33554432")?;
            for (i, img) in [&a, &b].into_iter().enumerate() {
                let want = field(&c, &format!("BLK disk{i} sha="), "sha")?;
                let got = dom0_sha(img, 0, 4 << 20)?;
                if got != want {
                    return Err(format!(
                        "disk {i}: guest wrote sha {want}, dom0 finds {got} in {img}"
                    ));
                }
            }
            sh(&format!("rm -f {a} {b}"))?;
            Ok(String::new())
        }),
    ];
    let ok = xen_tests::run_cases("blk", cases, 1);
    xen_tests::lab::finish(ok)
}
