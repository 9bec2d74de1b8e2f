//! The block tier of the lab: apps/blktest (blkfront) against Linux's xen-blkback in the lab's
//! dom0, with disk images dom0 creates under /mnt/lab/blk (= $LAB_DIR/dom0/blk on the host,
//! sparse), plus grant copy with dom0 (testkernel `test=grant-copy`). Each case checks the
//! guest's `BLK ...` / `TEST ...` lines against what dom0 (or the host) finds in the backing
//! files.

use std::process::Command;
use xen_tests::checks::blk::{
    blktest, disks, dom0_disk, dom0_sha, field, flushed_writes_survive_xl_destroy, host_path,
    read_only_disk_refuses_writes, reads_what_dom0_wrote, sh,
};
use xen_tests::lab::{expect, lab, Guest};
use xen_tests::{case, run};

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
            reads_what_dom0_wrote(&[])
        }),
        case(
            "flushed_writes_are_in_the_backing_file_after_xl_destroy",
            || flushed_writes_survive_xl_destroy(&[]),
        ),
        case("sequential_128_mib_write_and_read_back_by_checksum", || {
            let img = dom0_disk("seq", 144)?;
            let c = blktest(
                "blk=seq mib=128 seed=11",
                &disks(&[("xvda", "rw", &img)]),
                1500,
                &[],
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
                &[],
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
                &[],
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
            read_only_disk_refuses_writes(&[])
        }),
        case("failing_device_gives_the_app_errors_not_a_crash", || {
            // A device-mapper target whose every I/O fails.
            let _ = sh("dmsetup remove blkerr 2>/dev/null; true");
            sh("dmsetup create blkerr --table '0 32768 error'")?;
            let r = blktest(
                "blk=errors",
                &disks(&[("xvda", "rw", "/dev/mapper/blkerr")]),
                180,
                &[],
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
                &[],
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
