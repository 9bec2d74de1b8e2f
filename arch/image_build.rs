// Shared by every image's build.rs (`include!("../../arch/image_build.rs")`): link with the
// runtime's linker script (virtual base 0, W^X segments, Xen notes) when building for the
// bare-metal target; host builds (tests) link normally.

/// Emits the linker-script argument for an image crate two levels below the workspace root.
#[allow(dead_code)]
fn link_image() {
    link_image_with(false);
}

/// As [`link_image`], and the image also boots as a PVH guest (`type="pvh"`): it keeps the
/// XEN_ELFNOTE_PHYS32_ENTRY note and the 32-bit entry (arch/src/pvh.rs), which link.ld
/// otherwise discards (they cost the PV-only images nothing). Prototype of issue 16.
#[allow(dead_code)]
fn link_image_pvh() {
    link_image_with(true);
}

fn link_image_with(pvh: bool) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // A std app (built for x86_64-unknown-hermit) needs thread-local storage: hermit/link.ld is
    // this layout plus the TLS template.
    let script = match std::env::var("CARGO_CFG_TARGET_OS").as_deref() {
        Ok("hermit") => dir.join("../../hermit/link.ld"),
        _ => dir.join("../../arch/link.ld"),
    };
    println!("cargo:rerun-if-changed={}", script.display());
    // A PVH image links with a copy of link.ld that keeps the PHYS32_ENTRY note.
    let script = if pvh && !script.ends_with("hermit/link.ld") {
        let text = std::fs::read_to_string(&script).expect("read arch/link.ld");
        let keep = text
            .replace(" *(.note.Xen.pvh) }", " }")
            .replace("KEEP(*(.note.Xen))", "KEEP(*(.note.Xen)) KEEP(*(.note.Xen.pvh))");
        assert!(keep != text, "arch/link.ld no longer discards .note.Xen.pvh");
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
        let path = out.join("link-pvh.ld");
        std::fs::write(&path, keep).expect("write link-pvh.ld");
        path
    } else {
        script
    };
    if matches!(std::env::var("CARGO_CFG_TARGET_OS").as_deref(), Ok("none" | "hermit")) {
        println!("cargo:rustc-link-arg=-T{}", script.display());
        // No page alignment of file offsets: the segments are packed in the file (their
        // addresses stay page-aligned; see link.ld).
        println!("cargo:rustc-link-arg=-n");
    }
}
