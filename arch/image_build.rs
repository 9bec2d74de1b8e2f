// Shared by every image's build.rs (`include!("../../arch/image_build.rs")`): link with the
// runtime's linker script (virtual base 0, W^X segments, Xen notes) when building for the
// bare-metal target; host builds (tests) link normally.

/// Emits the linker-script argument for an image crate two levels below the workspace root.
/// The image boots as a PV and as a PVH guest (arch/src/entry.rs, arch/src/pvh.rs).
#[allow(dead_code)]
fn link_image() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // A std app (built for x86_64-unknown-hermit) needs thread-local storage: hermit/link.ld is
    // this layout plus the TLS template.
    let script = match std::env::var("CARGO_CFG_TARGET_OS").as_deref() {
        Ok("hermit") => dir.join("../../hermit/link.ld"),
        _ => dir.join("../../arch/link.ld"),
    };
    println!("cargo:rerun-if-changed={}", script.display());
    if matches!(std::env::var("CARGO_CFG_TARGET_OS").as_deref(), Ok("none" | "hermit")) {
        println!("cargo:rustc-link-arg=-T{}", script.display());
        // No page alignment of file offsets: the segments are packed in the file (their
        // addresses stay page-aligned; see link.ld).
        println!("cargo:rustc-link-arg=-n");
    }
}
