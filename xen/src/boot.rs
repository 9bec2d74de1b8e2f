//! The boot sequence, from Xen's jump to `_start` to the application's `main`.
#![allow(unsafe_code)]

/// Called by `_start` (arch/src/entry.rs) on the boot stack with start_info's address.
#[no_mangle]
pub extern "C" fn xenrt_boot(_start_info: usize) -> ! {
    arch::hypercall::console_io_write(b"xenrt: boot\n");
    extern "Rust" {
        fn xenrt_app_main();
    }
    // SAFETY: defined by the app through `xen::main!`.
    unsafe { xenrt_app_main() };
    arch::hypercall::shutdown(arch::hypercall::ShutdownReason::Poweroff);
    loop {}
}

/// Declares the application's entry function.
#[macro_export]
macro_rules! main {
    ($f:path) => {
        #[no_mangle]
        fn xenrt_app_main() {
            $f()
        }
    };
}

/// Prints to the console.
#[macro_export]
macro_rules! println {
    ($($t:tt)*) => {
        $crate::boot::print_str(concat!("x", "\n"))
    };
}

/// Temporary print.
pub fn print_str(s: &str) {
    arch::hypercall::console_io_write(s.as_bytes());
}

#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    arch::hypercall::shutdown(arch::hypercall::ShutdownReason::Crash);
    loop {}
}

#[cfg(all(target_os = "none", not(test)))]
struct NoHeap;
#[cfg(all(target_os = "none", not(test)))]
// SAFETY: never hands out memory.
unsafe impl core::alloc::GlobalAlloc for NoHeap {
    unsafe fn alloc(&self, _: core::alloc::Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: core::alloc::Layout) {}
}
#[cfg(all(target_os = "none", not(test)))]
#[global_allocator]
static HEAP: NoHeap = NoHeap;
