//! The `extern "C"` file calls of hermit-abi 0.5 (`sys_open`, `sys_stat`, `sys_getdents64`,
//! ...): std's C strings and buffers are checked and turned into slices here, then
//! [`crate::fs`] does the work. An open file is an object in the one descriptor table it shares
//! with the sockets ([`crate::sockets`]), so `sys_read`, `sys_write`, `sys_close`, `sys_dup`
//! and `sys_poll` reach files through the socket layer's dispatch, and the calls here that take
//! a descriptor (`sys_lseek`, `sys_fstat`, `sys_getdents64`) go through it too.
//!
//! Return convention as everywhere: a negative return is `-errno`, also kept for
//! `sys_get_errno`.
#![allow(unsafe_code)]

use core::cell::RefCell;
use core::ffi::{c_char, CStr};

use crate::fs::{errno::*, Fs, Res, WRITABLE_LIMIT};
use crate::layout::Stat;

mod baked {
    include!(concat!(env!("OUT_DIR"), "/files.rs"));
}

/// The tree, built from the baked table at the first file call; `Err` if that table was bad
/// (reported once on the console, then every path call is `EIO`).
struct Global(RefCell<Option<Result<Fs, ()>>>);

// SAFETY: as for the socket layer's state (sys_net.rs): one vCPU, every call below runs inside
// a runtime section (`preempt::enter`) and none of them waits or switches threads, so the
// cell is never reached from two threads at once.
unsafe impl Sync for Global {}

static FS: Global = Global(RefCell::new(None));

fn with<T>(f: impl FnOnce(&mut Fs) -> Res<T>) -> Res<T> {
    let mut g = FS.0.borrow_mut();
    let fs = g.get_or_insert_with(|| {
        Fs::new(baked::BAKED, WRITABLE_LIMIT).map_err(|e| {
            xen::println!("xenrt: baked files: {} ({})", e.path, e.why);
        })
    });
    match fs {
        Ok(fs) => f(fs),
        Err(()) => Err(EIO),
    }
}

fn ret(r: Res<i32>) -> i32 {
    r.unwrap_or_else(|e| crate::errno::fail(e) as i32)
}

/// The bytes of a C string path, or `EFAULT` for a null pointer.
///
/// # Safety
/// `p` is null or a NUL-terminated string valid for reading.
unsafe fn path<'a>(p: *const c_char) -> Res<&'a [u8]> {
    if p.is_null() {
        return Err(crate::sock::errno::EFAULT);
    }
    // SAFETY: the caller's guarantee.
    Ok(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// Writes `st` to std's `stat` buffer, or `EFAULT` for a null pointer.
///
/// # Safety
/// `out` is null or valid for writing a `stat`.
unsafe fn put_stat(out: *mut Stat, st: Res<Stat>) -> i32 {
    if out.is_null() {
        return ret(Err(crate::sock::errno::EFAULT));
    }
    ret(st.map(|st| {
        // SAFETY: the caller's guarantee; hermit-abi's stat has Stat's layout (layout.rs).
        unsafe { out.write(st) };
        0
    }))
}

/// # Safety
/// `name` is a C string.
#[no_mangle]
pub unsafe extern "C" fn sys_open(name: *const c_char, flags: i32, mode: i32) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let p = unsafe { path(name) };
    ret(p
        .and_then(|p| with(|fs| fs.open(p, flags, mode)))
        .and_then(crate::sys_net::insert_file))
}

/// # Safety
/// `name` is a C string.
#[no_mangle]
pub unsafe extern "C" fn sys_opendir(name: *const c_char) -> i32 {
    // Runtime sections nest: sys_open enters its own too.
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    unsafe { sys_open(name, crate::fs::consts::O_DIRECTORY, 0) }
}

/// # Safety
/// `name` is a C string; `st` is valid for writing a `stat`.
#[no_mangle]
pub unsafe extern "C" fn sys_stat(name: *const c_char, st: *mut Stat) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let r = unsafe { path(name) }.and_then(|p| with(|fs| fs.stat(p)));
    // SAFETY: the caller's guarantee.
    unsafe { put_stat(st, r) }
}

/// `lstat`: as `stat` (there are no symbolic links).
///
/// # Safety
/// `name` is a C string; `st` is valid for writing a `stat`.
#[no_mangle]
pub unsafe extern "C" fn sys_lstat(name: *const c_char, st: *mut Stat) -> i32 {
    // Runtime sections nest: sys_open enters its own too.
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    unsafe { sys_stat(name, st) }
}

/// # Safety
/// `st` is valid for writing a `stat`.
#[no_mangle]
pub unsafe extern "C" fn sys_fstat(fd: i32, st: *mut Stat) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    unsafe { put_stat(st, crate::sys_net::fstat(fd)) }
}

#[no_mangle]
pub extern "C" fn sys_lseek(fd: i32, offset: isize, whence: i32) -> isize {
    let _k = crate::preempt::enter();
    match crate::sys_net::with_file(fd, ESPIPE, |f| f.lseek(offset as i64, whence)) {
        Ok(p) => isize::try_from(p).unwrap_or(isize::MAX),
        Err(e) => crate::errno::fail(e),
    }
}

/// # Safety
/// `dirp` is valid for writing `count` bytes.
#[no_mangle]
pub unsafe extern "C" fn sys_getdents64(fd: i32, dirp: *mut u8, count: usize) -> i64 {
    let _k = crate::preempt::enter();
    if dirp.is_null() && count > 0 {
        return crate::errno::fail(crate::sock::errno::EFAULT) as i64;
    }
    let buf: &mut [u8] = if count == 0 {
        &mut []
    } else {
        // SAFETY: the caller passes a writable buffer of count bytes.
        unsafe { core::slice::from_raw_parts_mut(dirp, count) }
    };
    match crate::sys_net::with_file(fd, ENOTDIR, |f| f.getdents64(buf)) {
        Ok(n) => n as i64,
        Err(e) => crate::errno::fail(e) as i64,
    }
}

/// # Safety
/// `name` is a C string.
#[no_mangle]
pub unsafe extern "C" fn sys_mkdir(name: *const c_char, mode: u32) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let p = unsafe { path(name) };
    ret(p.and_then(|p| with(|fs| fs.mkdir(p, mode))).map(|()| 0))
}

/// # Safety
/// `name` is a C string.
#[no_mangle]
pub unsafe extern "C" fn sys_rmdir(name: *const c_char) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let p = unsafe { path(name) };
    ret(p.and_then(|p| with(|fs| fs.rmdir(p))).map(|()| 0))
}

/// # Safety
/// `name` is a C string.
#[no_mangle]
pub unsafe extern "C" fn sys_unlink(name: *const c_char) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let p = unsafe { path(name) };
    ret(p.and_then(|p| with(|fs| fs.unlink(p))).map(|()| 0))
}
