//! The rest of hermit-abi 0.5: the calls std itself does not make but a program or crate
//! written against the `hermit-abi` crate may (the older allocator names, semaphores,
//! `mmap`, the process id, ...). Each either does what the ABI says, or fails in a way the
//! caller sees: an errno, or — for the few that return nothing and so cannot report an error
//! (`sys_block_current_task`, `sys_wakeup_taskt`, ...) — a console line and a crash of the
//! domain, never a hang or a silent success.
#![allow(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::errno::fail;
use crate::layout::Timespec;

const EAGAIN: i32 = 11;
const ENOMEM: i32 = 12;
const EACCES: i32 = 13;
const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;
const ETIMEDOUT: i32 = 110;

/// hermit-abi's protection bits for `mmap`/`mprotect`.
const PROT_READ: u32 = 1 << 0;
const PROT_WRITE: u32 = 1 << 1;
const PROT_EXEC: u32 = 1 << 2;

const PAGE: usize = 4096;

/// Says once on the console that `what` is not supported; returns `-errno`.
fn unsupported(what: &'static str, errno: i32) -> i32 {
    static SAID: spin::Mutex<alloc::vec::Vec<&'static str>> =
        spin::Mutex::new(alloc::vec::Vec::new());
    let mut said = SAID.lock();
    if !said.contains(&what) {
        said.push(what);
        xen::println!("xenrt: {what} is not supported (errno {errno})");
    }
    fail(errno) as i32
}

/// A call that returns nothing cannot report that it is unsupported: it stops the program.
fn fatal(what: &str) -> ! {
    xen::println!("xenrt: {what} is not supported by xenrt: stopping");
    xen::boot::exit(xen::boot::ExitCode::Crash)
}

/// # Safety
/// As `sys_malloc`.
#[no_mangle]
pub unsafe extern "C" fn sys_alloc(size: usize, align: usize) -> *mut u8 {
    // SAFETY: the same contract.
    unsafe { crate::abi::sys_malloc(size, align) }
}

/// # Safety
/// As `sys_malloc`.
#[no_mangle]
pub unsafe extern "C" fn sys_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    let _k = crate::preempt::enter();
    match Layout::from_size_align(size.max(1), align) {
        // SAFETY: a valid, non-zero-sized layout.
        Ok(l) => unsafe { xen::mm::HEAP.alloc_zeroed(l) },
        Err(_) => core::ptr::null_mut(),
    }
}

/// # Safety
/// As `sys_free`.
#[no_mangle]
pub unsafe extern "C" fn sys_dealloc(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: the same contract.
    unsafe { crate::abi::sys_free(ptr, size, align) }
}

/// The last error (the older name of `sys_get_errno`).
#[no_mangle]
pub extern "C" fn sys_errno() -> i32 {
    crate::errno::last()
}

#[no_mangle]
pub extern "C" fn sys_getpagesize() -> i32 {
    PAGE as i32
}

/// One process: its id is 1 (no `fork`, no other process to tell apart).
#[no_mangle]
pub extern "C" fn sys_getpid() -> i32 {
    1
}

/// One vCPU.
#[no_mangle]
pub extern "C" fn sys_get_processor_count() -> usize {
    1
}

/// Brings the network up now rather than at the first socket call: 0, or `-ENETDOWN`.
#[no_mangle]
pub extern "C" fn sys_network_init() -> i32 {
    let _k = crate::preempt::enter();
    crate::sys_net::network_init()
}

/// The older name of `sys_shutdown`.
#[no_mangle]
pub extern "C" fn sys_shutdown_socket(fd: i32, how: i32) -> i32 {
    crate::sys_net::sys_shutdown(fd, how)
}

/// Anonymous mappings made by [`sys_mmap`]: address -> layout (for `munmap`).
static MAPPINGS: spin::Mutex<BTreeMap<usize, Layout>> = spin::Mutex::new(BTreeMap::new());

/// `mmap(size, prot)`: zeroed, page-aligned memory from the heap (all of the guest's memory is
/// already mapped read-write). Executable mappings are refused (`-EACCES`: W^X, there is no
/// way to make heap memory executable), as is a zero size (`-EINVAL`).
///
/// # Safety
/// `ret` is valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn sys_mmap(size: usize, prot_flags: u32, ret: &mut *mut u8) -> i32 {
    let _k = crate::preempt::enter();
    if prot_flags & PROT_EXEC != 0 {
        return unsupported("mmap with PROT_EXEC (W^X)", EACCES);
    }
    let Some(size) = size.checked_next_multiple_of(PAGE).filter(|&s| s > 0) else {
        return fail(EINVAL) as i32;
    };
    let Ok(layout) = Layout::from_size_align(size, PAGE) else {
        return fail(EINVAL) as i32;
    };
    // SAFETY: a valid, non-zero-sized layout.
    let p = unsafe { xen::mm::HEAP.alloc_zeroed(layout) };
    if p.is_null() {
        return fail(ENOMEM) as i32;
    }
    MAPPINGS.lock().insert(p as usize, layout);
    *ret = p;
    0
}

/// `munmap(ptr, size)` of a whole mapping made by `sys_mmap` (`-EINVAL` otherwise: partial
/// unmaps are not supported).
///
/// # Safety
/// Nothing uses the mapping afterwards.
#[no_mangle]
pub unsafe extern "C" fn sys_munmap(ptr: *mut u8, size: usize) -> i32 {
    let _k = crate::preempt::enter();
    let mut maps = MAPPINGS.lock();
    match maps.get(&(ptr as usize)) {
        Some(l) if size.checked_next_multiple_of(PAGE) == Some(l.size()) => {
            let l = *l;
            maps.remove(&(ptr as usize));
            drop(maps);
            // SAFETY: allocated by sys_mmap with this layout, removed from the map once.
            unsafe { xen::mm::HEAP.dealloc(ptr, l) };
            0
        }
        _ => {
            drop(maps);
            unsupported("munmap of anything but a whole mmap mapping", EINVAL)
        }
    }
}

/// `mprotect`: read-write is what every mapping already is (0); read-only or executable
/// cannot be given to heap memory (`-EACCES`).
///
/// # Safety
/// Always safe: nothing is changed.
#[no_mangle]
pub unsafe extern "C" fn sys_mprotect(_ptr: *mut u8, _size: usize, prot_flags: u32) -> i32 {
    let _k = crate::preempt::enter();
    if prot_flags & !(PROT_READ | PROT_WRITE) == 0 && prot_flags & PROT_WRITE != 0 {
        0
    } else {
        unsupported("mprotect to other than read-write", EACCES)
    }
}

/// A semaphore: its count, also the futex word its waiters sleep on.
struct Sem {
    count: AtomicU32,
}

/// # Safety
/// `sem` is null or valid for reading a semaphore handle `sys_sem_init` wrote.
unsafe fn sem_of<'a>(sem: *mut *const c_void) -> Option<&'a Sem> {
    if sem.is_null() {
        return None;
    }
    // SAFETY: the caller's guarantee; the handle is a Box<Sem> leaked by sys_sem_init.
    unsafe { (*sem).cast::<Sem>().as_ref() }
}

/// `sem_init(sem, pshared, value)`: a semaphore for this program's threads (`pshared`: there
/// is one process, so it is the same thing).
///
/// # Safety
/// `sem` is valid for writing a handle.
#[no_mangle]
pub unsafe extern "C" fn sys_sem_init(sem: *mut *const c_void, _pshared: i32, value: u32) -> i32 {
    let _k = crate::preempt::enter();
    if sem.is_null() {
        return fail(EINVAL) as i32;
    }
    let s = Box::new(Sem {
        count: AtomicU32::new(value),
    });
    // SAFETY: the caller's guarantee.
    unsafe { sem.write(Box::into_raw(s).cast()) };
    0
}

/// # Safety
/// `sem` holds a handle from `sys_sem_init` that no thread uses any more.
#[no_mangle]
pub unsafe extern "C" fn sys_sem_destroy(sem: *mut *const c_void) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: a non-null `sem` is valid for reading (the caller's guarantee).
    if sem.is_null() || unsafe { (*sem).is_null() } {
        return fail(EINVAL) as i32;
    }
    // SAFETY: the caller's guarantee: a Box<Sem> leaked by sys_sem_init, freed once.
    unsafe {
        drop(Box::from_raw((*sem).cast_mut().cast::<Sem>()));
        sem.write(core::ptr::null());
    }
    0
}

/// # Safety
/// `sem` holds a handle from `sys_sem_init`.
#[no_mangle]
pub unsafe extern "C" fn sys_sem_post(sem: *mut *const c_void) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let Some(s) = (unsafe { sem_of(sem) }) else {
        return fail(EINVAL) as i32;
    };
    s.count.fetch_add(1, Ordering::SeqCst);
    crate::abi_thread::futex_wake(s.count.as_ptr() as usize, 1);
    0
}

fn sem_try(s: &Sem) -> bool {
    s.count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
        .is_ok()
}

/// # Safety
/// `sem` holds a handle from `sys_sem_init`.
#[no_mangle]
pub unsafe extern "C" fn sys_sem_trywait(sem: *mut *const c_void) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let Some(s) = (unsafe { sem_of(sem) }) else {
        return fail(EINVAL) as i32;
    };
    if sem_try(s) {
        0
    } else {
        fail(EAGAIN) as i32
    }
}

/// `sem_timedwait(sem, abs_timeout)`: waits until the count can be decremented, or the
/// absolute wall-clock time `abs_timeout` passes (`-ETIMEDOUT`; null: no limit).
///
/// # Safety
/// `sem` holds a handle from `sys_sem_init`; `abs_timeout` is null or valid.
#[no_mangle]
pub unsafe extern "C" fn sys_sem_timedwait(
    sem: *mut *const c_void,
    abs_timeout: *const Timespec,
) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let Some(s) = (unsafe { sem_of(sem) }) else {
        return fail(EINVAL) as i32;
    };
    let deadline = if abs_timeout.is_null() {
        None
    } else {
        // SAFETY: non-null, so valid (the caller's guarantee).
        let Some(wall) = (unsafe { abs_timeout.read() }).as_ns() else {
            return fail(EINVAL) as i32;
        };
        let now = xen::time::now_ns();
        Some(now.saturating_add(wall.saturating_sub(xen::time::wallclock_ns())))
    };
    loop {
        if sem_try(s) {
            return 0;
        }
        if deadline.is_some_and(|d| xen::time::now_ns() >= d) {
            return fail(ETIMEDOUT) as i32;
        }
        crate::abi_thread::futex_wait(s.count.as_ptr() as usize, 0, &s.count, deadline);
    }
}

// The task-queue calls of older hermit-abi users: not supported (an errno where there is a
// return value, a stop where there is none).

#[no_mangle]
pub extern "C" fn sys_init_queue(_id: usize) -> i32 {
    unsupported("sys_init_queue", ENOSYS)
}

#[no_mangle]
pub extern "C" fn sys_destroy_queue(_id: usize) -> i32 {
    unsupported("sys_destroy_queue", ENOSYS)
}

#[no_mangle]
pub extern "C" fn sys_add_queue(_id: usize, _timeout_ns: i64) -> i32 {
    unsupported("sys_add_queue", ENOSYS)
}

#[no_mangle]
pub extern "C" fn sys_wait(_id: usize) -> i32 {
    unsupported("sys_wait", ENOSYS)
}

#[no_mangle]
pub extern "C" fn sys_notify(_id: usize, _count: i32) -> i32 {
    unsupported("sys_notify", ENOSYS)
}

#[no_mangle]
pub extern "C" fn sys_block_current_task() {
    fatal("sys_block_current_task")
}

#[no_mangle]
pub extern "C" fn sys_block_current_task_with_timeout(_timeout: u64) {
    fatal("sys_block_current_task_with_timeout")
}

#[no_mangle]
pub extern "C" fn sys_wakeup_taskt(_tid: u32) {
    fatal("sys_wakeup_taskt")
}
