//! httpd: the static web server image. Placeholder until the network loop lands: prints what the
//! baked site holds and powers off.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

xen::main!(main);

fn main() {
    let site = httpd::Site::baked();
    xen::println!(
        "httpd: site has {} files, {} bytes",
        site.files().len(),
        site.total_bytes()
    );
    for f in site.files() {
        xen::println!("  {} ({} bytes, {})", f.path, f.body.len(), f.content_type);
    }
}
