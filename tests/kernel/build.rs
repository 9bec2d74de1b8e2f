//! Links the image with the runtime's linker script (see arch/image_build.rs).
include!("../../arch/image_build.rs");

fn main() {
    link_image();
}
