//! Links the image with the runtime's linker script (see arch/image_build.rs).
include!("../../arch/image_build.rs");

fn main() {
    // The test kernel also boots as a PVH guest (issue 16 prototype: arch/src/pvh.rs).
    link_image_pvh();
}
