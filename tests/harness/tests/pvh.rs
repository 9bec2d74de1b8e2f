//! The lab tier for PVH guests (issue 16, prototype): the test kernel booted with `type="pvh"`
//! must get from its 32-bit entry to long mode, find a valid hvm_start_info, install the
//! hypercall page through the CPUID-advertised MSR and power off through it. Until the PVH boot
//! has a console, the guest reports through Xen's HVM debug port (0xe9), which Xen prints on its
//! own console as `(dN) ...` lines: the case reads them with `xl dmesg`.
//!
//! Needs a lab whose Xen offers HVM: QEMU 7.2's `qemu64` (the lab's default CPU) includes SVM,
//! so the default lab does (Xen: "HVM: SVM enabled", shadow paging). On a lab without it (a CPU
//! model with neither SVM nor VMX) the file says so and is skipped (exit 0).

use xen_tests::case;
use xen_tests::lab::{expect, lab, Guest};

/// Ok(true) when the lab's Xen can run HVM/PVH guests (`hvm` in `xl info`'s xen_caps).
fn lab_has_hvm() -> Result<bool, String> {
    let r = lab(&["exec", "xl info"])?;
    if r.code != Some(0) {
        return Err(format!("xl info failed: {}", r.output));
    }
    Ok(r.output
        .lines()
        .any(|l| l.starts_with("xen_caps") && l.contains("hvm")))
}

fn main() {
    xen_tests::lab::start_or_exit();
    match lab_has_hvm() {
        Ok(true) => {}
        Ok(false) => {
            println!(
                "pvh: skipped: the lab's Xen offers no hvm (its CPU model has neither SVM nor VMX)"
            );
            xen_tests::lab::finish(true)
        }
        Err(e) => {
            println!("pvh: {e}\npvh: 0 passed, 1 failed");
            xen_tests::lab::finish(false)
        }
    }
    let cases = vec![case("pvh_entry_reaches_long_mode_and_powers_off", || {
        let g = Guest::start_with("testkernel", "test=hello", &["type=\"pvh\"", "memory=32"])?;
        let domid = g.domid();
        let end = g.wait(60)?;
        let dmesg = lab(&["exec", "xl dmesg"])?.output;
        let mine: String = dmesg
            .lines()
            .filter(|l| l.starts_with(&format!("(d{domid}) ")))
            .map(|l| format!("{l}\n"))
            .collect();
        expect(&mine, "xenrt pvh: long mode, start_info ok")?;
        expect(&mine, "xenrt pvh: hypercall page set")?;
        if end != "poweroff" {
            return Err(format!("ended with {end}, not poweroff:\n{mine}"));
        }
        Ok(String::new())
    })];
    let ok = xen_tests::run_cases("pvh", cases, 1);
    xen_tests::lab::finish(ok)
}
