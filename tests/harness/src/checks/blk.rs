//! The block checks (from `tests/blk.rs`): apps/blktest (blkfront) against Linux's xen-blkback
//! in the lab's dom0, with disk images dom0 creates under /mnt/lab/blk (= $LAB_DIR/dom0/blk on
//! the host, sparse); each check compares the guest's `BLK ...` lines with what dom0 finds in
//! the backing file.

use crate::lab::{expect, lab, lab_dir, Guest};
use std::path::PathBuf;

/// A sparse disk image of `mib` MiB made by dom0; returns its dom0 path.
pub fn dom0_disk(name: &str, mib: u64) -> Result<String, String> {
    let path = format!("/mnt/lab/blk/{name}.img");
    sh(&format!(
        "mkdir -p /mnt/lab/blk && rm -f {path} && truncate -s {mib}M {path}"
    ))?;
    Ok(path)
}

/// The host path of a dom0 path under /mnt/lab.
pub fn host_path(dom0_path: &str) -> PathBuf {
    PathBuf::from(lab_dir())
        .join("dom0")
        .join(dom0_path.strip_prefix("/mnt/lab/").unwrap_or(dom0_path))
}

/// Runs `cmd` in dom0; its output, or an error with it.
pub fn sh(cmd: &str) -> Result<String, String> {
    let r = lab(&["exec", "-t", "300", cmd])?;
    if r.code != Some(0) {
        return Err(format!("dom0 `{cmd}` failed ({:?}): {}", r.code, r.output));
    }
    Ok(r.output)
}

/// SHA-256 of `len` bytes at `off` of a dom0 file, computed in dom0.
pub fn dom0_sha(path: &str, off: u64, len: u64) -> Result<String, String> {
    let out = sh(&format!(
        "tail -c +{} {path} | head -c {len} | sha256sum",
        off + 1
    ))?;
    Ok(out.split_whitespace().next().unwrap_or("").to_string())
}

/// An xl `disk=` line.
pub fn disks(specs: &[(&str, &str, &str)]) -> String {
    let items: Vec<String> = specs
        .iter()
        .map(|(vdev, access, target)| {
            format!("'format=raw,vdev={vdev},access={access},target={target}'")
        })
        .collect();
    format!("disk=[{}]", items.join(","))
}

/// The value of `key=` on the first console line containing `prefix`.
pub fn field(console: &str, prefix: &str, key: &str) -> Result<String, String> {
    let line = console
        .lines()
        .find(|l| l.contains(prefix))
        .ok_or(format!("no {prefix:?} line in:\n{console}"))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .ok_or(format!("no {key}= in {line:?}"))
}

/// Starts blktest with `extra`, `disk` and `more`, waits for its end (`secs`), and checks it powered
/// off with `BLK ok MODE`; returns the console.
pub fn blktest(extra: &str, disk: &str, secs: u32, more: &[&str]) -> Result<String, String> {
    let mut lines = vec![disk];
    lines.extend_from_slice(more);
    let g = Guest::start_with("blktest", extra, &lines)?;
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
pub fn negotiated(console: &str) -> String {
    console
        .lines()
        .find(|l| l.starts_with("BLK disk"))
        .map(|l| format!("[{l}]"))
        .unwrap_or_default()
}

/// The guest reads an unaligned range of what dom0 wrote into the backing file (by SHA-256).
pub fn reads_what_dom0_wrote(more: &[&str]) -> Result<String, String> {
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
        more,
    )?;
    let got = field(&c, "BLK sha=", "sha")?;
    sh(&format!("rm -f {img}"))?;
    if got != want {
        return Err(format!("guest read sha {got}, dom0 wrote {want}"));
    }
    Ok(negotiated(&c))
}

/// Written and flushed by the guest, the bytes are in the backing file after `xl destroy`.
pub fn flushed_writes_survive_xl_destroy(more: &[&str]) -> Result<String, String> {
    let img = dom0_disk("flush", 16)?;
    let (off, len) = (3 * 4096 + 17u64, 3 * 1024 * 1024u64);
    let disk = disks(&[("xvda", "rw", &img)]);
    let mut lines = vec![disk.as_str()];
    lines.extend_from_slice(more);
    let g = Guest::start_with(
        "blktest",
        &format!("blk=write-flush off={off} len={len} seed=7"),
        &lines,
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
}

/// A read-only disk: the guest sees ro, its write fails with ReadOnly, and the file is unchanged.
pub fn read_only_disk_refuses_writes(more: &[&str]) -> Result<String, String> {
    let img = dom0_disk("ro", 8)?;
    sh(&format!(
        "dd if=/dev/urandom of={img} bs=64k count=1 conv=notrunc 2>/dev/null"
    ))?;
    let before = dom0_sha(&img, 0, 8 << 20)?;
    let c = blktest("blk=readonly", &disks(&[("xvda", "ro", &img)]), 120, more)?;
    expect(&c, "ro=true")?;
    expect(&c, "write=Err(ReadOnly)")?;
    let after = dom0_sha(&img, 0, 8 << 20)?;
    sh(&format!("rm -f {img}"))?;
    if before != after {
        return Err("the read-only backing file changed".into());
    }
    Ok(String::new())
}
