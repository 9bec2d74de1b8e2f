//! The `extern "C"` boundary: std's `sys_*` calls arrive here with raw pointers, are checked and
//! turned into slices, and go to the safe code in the rest of the crate and in `xen`. The start-up
//! code (TLS block, `argv`, the call into std's `runtime_entry`) lives here too. Signatures and
//! return conventions are hermit-abi 0.5's: a negative return is `-errno`.
#![allow(unsafe_code)]

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_char;
use xen::boot::ExitCode;

use crate::errno::fail;
use crate::layout::Timespec;

const EBADF: i32 = 9;
pub(crate) const EINVAL: i32 = 22;

/// hermit-abi's clock ids.
const CLOCK_REALTIME: i32 = 1;
const CLOCK_MONOTONIC: i32 = 4;

xen::main!(start, net::stack::KEYS);

extern "C" {
    fn runtime_entry(argc: i32, argv: *const *const c_char, env: *const *const c_char) -> !;
}

/// The app's `main` as xenrt's boot sees it: prepares what std expects, then runs the program.
fn start() -> ExitCode {
    if let Err(e) = arch::hypercall::fpu_enable() {
        xen::println!("xenrt: fpu_taskswitch failed: {e}");
        return ExitCode::Crash;
    }
    crate::entropy::seed(arch::cpu::rdtsc() ^ xen::time::wallclock_ns());
    if let Err(e) = crate::tls::setup_main() {
        xen::println!("xenrt: thread-local storage: {e}");
        return ExitCode::Crash;
    }
    let words = xen::cmdline::args(xen::boot::info().start_info.cmdline());
    let (env, args) = crate::split_env(&words);
    let strings = crate::argv_strings(args);
    let env_strings = crate::c_strings(env.iter().map(|s| s.as_str()));
    let pointers = |v: &[Vec<u8>]| -> &'static [*const c_char] {
        let mut p: Vec<*const c_char> = v.iter().map(|s| s.as_ptr().cast()).collect();
        p.push(core::ptr::null());
        p.leak()
    };
    let argv = pointers(&strings);
    let envp = pointers(&env_strings);
    let argc = strings.len() as i32;
    // The strings and pointer arrays must outlive the program: std keeps argv.
    core::mem::forget(strings);
    core::mem::forget(env_strings);
    // SAFETY: argv is argc NUL-terminated strings plus a null, envp NUL-terminated strings
    // plus a null, all leaked (valid forever); runtime_entry is std's entry and never returns.
    unsafe { runtime_entry(argc, argv.as_ptr(), envp.as_ptr()) }
}

fn console(fd: i32, bytes: &[u8]) -> isize {
    match fd {
        1 | 2 => {
            xen::console::write_bytes(bytes);
            bytes.len() as isize
        }
        // Files, sockets and eventfds share one descriptor table (sys_net).
        _ if crate::sys_net::is_socket(fd) => crate::sys_net::write(fd, bytes),
        _ => fail(EBADF),
    }
}

/// # Safety
/// `buf` is valid for `len` bytes (std's contract).
#[no_mangle]
pub unsafe extern "C" fn sys_write(fd: i32, buf: *const u8, len: usize) -> isize {
    let _k = crate::preempt::enter();
    if buf.is_null() && len > 0 {
        return fail(EINVAL);
    }
    // SAFETY: the caller passes a buffer of len bytes.
    let bytes = unsafe { slice(buf, len) };
    console(fd, bytes)
}

/// hermit-abi's `iovec`.
#[repr(C)]
pub struct IoVec {
    base: *const u8,
    len: usize,
}

/// # Safety
/// `iov` is valid for `iovcnt` entries, each valid for its length.
#[no_mangle]
pub unsafe extern "C" fn sys_writev(fd: i32, iov: *const IoVec, iovcnt: usize) -> isize {
    let _k = crate::preempt::enter();
    if iov.is_null() && iovcnt > 0 {
        return fail(EINVAL);
    }
    // SAFETY: the caller passes iovcnt entries.
    let iovs = unsafe { slice(iov, iovcnt) };
    let mut all = Vec::new();
    for v in iovs {
        // SAFETY: each entry describes a valid buffer.
        all.extend_from_slice(unsafe { slice(v.base, v.len) });
    }
    console(fd, &all)
}

/// # Safety
/// `buf` is valid for writing `len` bytes (stdin is empty: end of file).
#[no_mangle]
pub unsafe extern "C" fn sys_read(fd: i32, buf: *mut u8, len: usize) -> isize {
    let _k = crate::preempt::enter();
    match fd {
        0 => 0,
        _ if crate::sys_net::is_socket(fd) && !buf.is_null() => {
            // SAFETY: the caller passes a writable buffer of len bytes.
            crate::sys_net::read(fd, unsafe { core::slice::from_raw_parts_mut(buf, len) })
        }
        _ => fail(EBADF),
    }
}

/// `readv`: for a file, fills the buffers in turn, stopping at a short read (end of file); for a
/// socket or eventfd, reads into the first non-empty buffer only (a second read could block
/// with bytes already in hand). An error after some bytes were read returns those bytes.
///
/// # Safety
/// `iov` is valid for `iovcnt` entries, each valid for writing its length.
#[no_mangle]
pub unsafe extern "C" fn sys_readv(fd: i32, iov: *const IoVec, iovcnt: usize) -> isize {
    let _k = crate::preempt::enter();
    if iov.is_null() && iovcnt > 0 {
        return fail(EINVAL);
    }
    if fd == 0 {
        return 0;
    }
    if !crate::sys_net::is_socket(fd) {
        return fail(EBADF);
    }
    // SAFETY: the caller passes iovcnt entries.
    let iovs = unsafe { slice(iov, iovcnt) };
    let is_file = crate::sys_net::with_file(fd, EBADF, |_| Ok(())).is_ok();
    let mut total = 0isize;
    for v in iovs {
        if v.len == 0 {
            continue;
        }
        if v.base.is_null() {
            return if total > 0 { total } else { fail(EINVAL) };
        }
        // SAFETY: each entry describes a writable buffer (the caller's guarantee).
        let buf = unsafe { core::slice::from_raw_parts_mut(v.base.cast_mut(), v.len) };
        let n = crate::sys_net::read(fd, buf);
        if n < 0 {
            return if total > 0 { total } else { n };
        }
        total += n;
        if !is_file || (n as usize) < v.len {
            break;
        }
    }
    total
}

/// A slice from std's pointer and length (empty for a null or dangling zero-length pointer).
///
/// # Safety
/// `ptr` is valid for `len` elements when `len > 0`.
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: the caller's guarantee.
        unsafe { core::slice::from_raw_parts(ptr, len) }
    }
}

#[no_mangle]
pub extern "C" fn sys_exit(status: i32) -> ! {
    let _k = crate::preempt::enter();
    if status != 0 {
        xen::println!("xenrt: exit status {status}");
    }
    xen::boot::exit(crate::exit_code(status))
}

#[no_mangle]
pub extern "C" fn sys_abort() -> ! {
    let _k = crate::preempt::enter();
    xen::println!("xenrt: abort");
    // std calls this after printing a panic's message (panic=abort): the frames from here
    // down are the panic machinery, then the program's.
    xen::fault::print_backtrace(0, arch::cpu::frame_pointer());
    xen::boot::exit(ExitCode::Crash)
}

#[no_mangle]
pub extern "C" fn sys_get_errno() -> i32 {
    crate::errno::last()
}

/// # Safety
/// std's allocator contract: `align` is a power of two.
#[no_mangle]
pub unsafe extern "C" fn sys_malloc(size: usize, align: usize) -> *mut u8 {
    let _k = crate::preempt::enter();
    match Layout::from_size_align(size.max(1), align) {
        // SAFETY: a valid, non-zero-sized layout.
        Ok(l) => unsafe { xen::mm::HEAP.alloc(l) },
        Err(_) => core::ptr::null_mut(),
    }
}

/// # Safety
/// `ptr` came from `sys_malloc`/`sys_realloc` with this size and alignment.
#[no_mangle]
pub unsafe extern "C" fn sys_free(ptr: *mut u8, size: usize, align: usize) {
    let _k = crate::preempt::enter();
    if let Ok(l) = Layout::from_size_align(size.max(1), align) {
        // SAFETY: the caller's guarantee.
        unsafe { xen::mm::HEAP.dealloc(ptr, l) }
    }
}

/// # Safety
/// `ptr` came from `sys_malloc`/`sys_realloc` with this size and alignment.
#[no_mangle]
pub unsafe extern "C" fn sys_realloc(
    ptr: *mut u8,
    size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    let _k = crate::preempt::enter();
    match Layout::from_size_align(size.max(1), align) {
        // SAFETY: the caller's guarantee; new_size is at least 1.
        Ok(l) => unsafe { xen::mm::HEAP.realloc(ptr, l, new_size.max(1)) },
        Err(_) => core::ptr::null_mut(),
    }
}

/// # Safety
/// `buf` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sys_read_entropy(buf: *mut u8, len: usize, _flags: u32) -> isize {
    let _k = crate::preempt::enter();
    if buf.is_null() && len > 0 {
        return fail(EINVAL);
    }
    if len > 0 {
        // SAFETY: the caller passes a writable buffer of len bytes.
        crate::entropy::fill(unsafe { core::slice::from_raw_parts_mut(buf, len) });
    }
    len as isize
}

/// # Safety
/// `tp` is valid for writing a `timespec`.
#[no_mangle]
pub unsafe extern "C" fn sys_clock_gettime(clock: i32, tp: *mut Timespec) -> i32 {
    let _k = crate::preempt::enter();
    let ns = match clock {
        CLOCK_MONOTONIC => xen::time::now_ns(),
        CLOCK_REALTIME => xen::time::wallclock_ns(),
        _ => return fail(EINVAL) as i32,
    };
    if tp.is_null() {
        return fail(EINVAL) as i32;
    }
    let t = Timespec {
        sec: (ns / 1_000_000_000) as i64,
        nsec: (ns % 1_000_000_000) as i32,
    };
    // SAFETY: the caller passes a writable timespec.
    unsafe { tp.write(t) };
    0
}
