//! Threads on the one vCPU: the `sys_*` calls of std's `thread`, `Mutex`, `Condvar`, park and
//! `mpsc` (spawn, join, yield, sleep, futex wait/wake), over the bookkeeping in
//! [`crate::sched`] and the stack switch in [`arch::context`].
//!
//! A thread runs until it blocks (futex wait, join, sleep, [`park_until`]) or yields, or, in app
//! code, until the 10 ms preemption tick ([`crate::preempt`]) makes it yield; then the next
//! ready thread runs (FIFO). When no thread is ready the vCPU blocks in Xen
//! ([`xen::sched::poll_once`]) until the earliest deadline or an event, never spinning, with
//! the tick stopped. All of this runs inside runtime sections, never preempted itself.
//!
//! Each spawned thread has its own stack (the size std asks for, at least [`MIN_STACK`], from
//! the heap, with an unmapped guard page below it: an overflow crashes the domain, Xen naming
//! the address, instead of overwriting memory) and its own TLS block (a copy of the template, see
//! [`crate::tls`]); a switch points FS at the new thread's block (set_segment_base) before
//! switching stacks. A thread's stack and TLS block are freed by the next thread to run after
//! it ends (it cannot free the stack it runs on); its record stays until it is joined.
#![allow(unsafe_code)]

use crate::layout::Timespec;

const EAGAIN: i32 = 11;
const EINVAL: i32 = 22;
const ETIMEDOUT: i32 = 110;
/// hermit-abi's `FUTEX_RELATIVE_TIMEOUT` flag.
const FUTEX_RELATIVE_TIMEOUT: u32 = 1;
use crate::errno::fail;
use crate::sched::{Join, Next, Scheduler, Tid, Wait, Woken};
use crate::tls::{new_block, Block};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use xen::boot::ExitCode;

/// The smallest stack a thread gets, whatever it asks for.
pub const MIN_STACK: usize = 64 * 1024;

/// What the scheduler carries for each thread: the machine side.
#[derive(Debug)]
struct Machine {
    /// The saved stack pointer while the thread is not running (boxed: a stable address that
    /// `switch` writes through after the scheduler's lock is released).
    rsp: Box<u64>,
    /// The thread pointer (FS base).
    tp: u64,
    /// Its stack (below it, an unmapped guard page); `0..0` for the main thread, which runs
    /// on the boot stack.
    stack_range: core::ops::Range<u64>,
    stack: Option<Block>,
    tls: Option<Block>,
    /// What the thread runs: std's start function and its argument.
    start: Option<(extern "C" fn(usize), usize)>,
}

static SCHED: spin::Mutex<Option<Scheduler<Machine>>> = spin::Mutex::new(None);

/// Stacks and TLS blocks of ended threads, freed by the next thread that runs.
static DEAD: spin::Mutex<Vec<Block>> = spin::Mutex::new(Vec::new());

type Guard = spin::MutexGuard<'static, Option<Scheduler<Machine>>>;

/// The scheduler, made at first use with the running code (the main thread: nothing spawns
/// before it) as its only thread.
fn lock() -> Guard {
    let mut g = SCHED.lock();
    if g.is_none() {
        *g = Some(Scheduler::new(Machine {
            rsp: Box::new(0),
            tp: crate::tls::main_tp(),
            stack_range: 0..0,
            stack: None,
            tls: None,
            start: None,
        }));
    }
    g
}

fn free_dead() {
    let dead = core::mem::take(&mut *DEAD.lock());
    dead.into_iter().for_each(Block::free);
}

/// Runs whichever thread the scheduler chooses after the running thread changed its own state
/// (blocked, yielded, ended); returns when the running thread is chosen again. Without a
/// scheduler (never: [`lock`] makes it) it waits for one turn of the idle loop.
fn reschedule(mut g: Guard, deadline: Option<u64>) {
    let Some(me) = g.as_ref().map(|s| s.current()) else {
        drop(g);
        poll(deadline);
        return;
    };
    loop {
        let s = g.as_mut().expect("the scheduler is not removed");
        if s.has_polls() {
            // Threads parked until events: let pending events in (never blocking here); if
            // any came, or a thread changed what they may wait for, they re-check their
            // conditions. Not otherwise: a parked thread woken for nothing would spin.
            drop(g);
            poll(Some(0));
            g = lock();
            if CHANGED.swap(false, Ordering::SeqCst) {
                g.as_mut()
                    .expect("the scheduler is not removed")
                    .wake_polls();
            }
        }
        let s = g.as_mut().expect("the scheduler is not removed");
        let next = s.next(xen::time::now_ns());
        crate::preempt::tick(matches!(next, Next::Run(_)));
        match next {
            Next::Run(tid) if tid == me => return,
            Next::Run(tid) => {
                let from: *mut u64 = match s.data_mut(me) {
                    Some(m) => &mut *m.rsp,
                    None => unreachable!("the running thread has a record"),
                };
                let (to, tp) = match s.data(tid) {
                    Some(m) => {
                        // Fault and panic reports walk the stack the thread runs on.
                        xen::fault::set_thread_stack(m.stack_range.clone());
                        (*m.rsp, m.tp)
                    }
                    None => unreachable!("a chosen thread has a record"),
                };
                drop(g);
                if arch::hypercall::set_fs_base(tp).is_err() {
                    xen::println!("xenrt: set_segment_base failed in a thread switch");
                }
                let errno = crate::errno::last();
                // SAFETY: `from` is the boxed rsp slot of this thread's record, which lives
                // until this thread is joined (after it ended, so after this write); `to` was
                // saved by `switch` when thread `tid` left the vCPU, or made by init_stack,
                // and its stack is freed only after it ends. One vCPU, and this runs in a
                // runtime section (upcalls masked): no one touches the scheduler between the
                // unlock and the switch.
                unsafe { arch::context::switch(from, to) };
                // Back on this thread: its own last error (the errno is per thread).
                crate::errno::set(errno);
                free_dead();
                return;
            }
            Next::Idle(deadline) => {
                drop(g);
                // Woken by an event or a deadline: the parked threads re-check (next turn).
                poll(deadline);
                g = lock();
            }
            Next::Deadlock => {
                drop(g);
                xen::println!("xenrt: deadlock: every thread waits for another, with no timeout");
                xen::boot::exit(ExitCode::Crash);
            }
        }
    }
}

/// Whether something may have made a parked thread's condition true since the parked threads
/// last re-checked: events came (set by [`poll`]) or a thread changed state they may wait for
/// (a socket call: data queued, a descriptor closed, an eventfd written: [`note_change`]).
static CHANGED: AtomicBool = AtomicBool::new(false);

/// Says that the running thread changed state that parked threads may wait for (see
/// [`park_until`]): they re-check at the next switch.
pub fn note_change() {
    CHANGED.store(true, Ordering::SeqCst);
}

/// One turn of the idle loop ([`xen::sched::poll_once`]); events that came wake the parked
/// threads at the next switch.
fn poll(deadline: Option<u64>) {
    if xen::sched::poll_once(deadline) {
        note_change();
    }
}

/// Blocks the running thread on `wait` until it is woken or system time `deadline` passes;
/// returns how it was woken.
fn block(wait: Wait, deadline: Option<u64>) -> Woken {
    let mut g = lock();
    let Some(s) = g.as_mut() else {
        reschedule(g, deadline);
        return Woken::Notified;
    };
    s.block(wait, deadline);
    reschedule(g, deadline);
    lock().as_ref().map_or(Woken::Notified, |s| s.woken())
}

/// Waits until `ready()` holds or system time `deadline_ns` passes, letting the other threads
/// run meanwhile; returns whether `ready()` held (it is checked first, then after every
/// dispatch of events and at the deadline).
///
/// This is the blocking primitive for code that waits on something events make true (a
/// socket's data, a connection): the thread parks until the next dispatch of events (which
/// happens when every thread is blocked, or at any switch while such a thread waits), then
/// re-checks `ready` on its own stack. `ready` runs without the scheduler's lock held, so it
/// may use the network stack, print, or allocate. A thread that makes another's condition
/// true without an event (writes an eventfd, queues data) calls [`note_change`].
pub fn park_until(deadline_ns: Option<u64>, mut ready: impl FnMut() -> bool) -> bool {
    let _k = crate::preempt::enter();
    loop {
        if ready() {
            return true;
        }
        if deadline_ns.is_some_and(|d| xen::time::now_ns() >= d) {
            return false;
        }
        block(Wait::Poll, deadline_ns);
    }
}

/// Where a new thread starts (on its own stack, FS already at its TLS block): frees what the
/// previous thread left, runs std's start function, then ends.
extern "C" fn thread_entry(tid: usize) -> ! {
    free_dead();
    let start = SCHED
        .lock()
        .as_mut()
        .and_then(|s| s.data_mut(tid as Tid))
        .and_then(|m| m.start.take());
    if let Some((func, arg)) = start {
        // The thread arrived inside its creator's (or a preempted thread's) runtime section.
        crate::preempt::leave();
        func(arg);
        crate::preempt::enter_raw();
    }
    let mut g = lock();
    if let Some(s) = g.as_mut() {
        s.exit();
        if let Some(m) = s.data_mut(tid as Tid) {
            let mut dead = DEAD.lock();
            dead.extend(m.stack.take());
            dead.extend(m.tls.take());
        }
    }
    reschedule(g, None);
    unreachable!("an ended thread is never chosen again")
}

/// Makes a thread that will run `func(arg)` on a stack of `stack_size` bytes (at least
/// [`MIN_STACK`]); its id, or 0 when there was no memory for it. The priority and core are
/// ignored (one vCPU, one priority).
#[no_mangle]
pub extern "C" fn sys_spawn2(
    func: extern "C" fn(usize),
    arg: usize,
    _prio: u8,
    stack_size: usize,
    _core_id: isize,
) -> Tid {
    let _k = crate::preempt::enter();
    spawn(func, arg, stack_size).unwrap_or(0)
}

fn spawn(func: extern "C" fn(usize), arg: usize, stack_size: usize) -> Option<Tid> {
    let size = stack_size.max(MIN_STACK).checked_next_multiple_of(4096)?;
    // One more page below the stack, unmapped: an overflow faults there instead of writing
    // over whatever the heap put below.
    let layout = Layout::from_size_align(size.checked_add(4096)?, 4096).ok()?;
    // SAFETY: a non-zero-sized layout.
    let stack = unsafe { xen::mm::HEAP.alloc(layout) };
    if stack.is_null() {
        return None;
    }
    let mut stack = Block {
        addr: stack as usize,
        layout,
        guarded: false,
    };
    match xen::mm::guard(stack.addr as u64) {
        Ok(()) => stack.guarded = true,
        Err(e) => {
            xen::println!("xenrt: cannot unmap a thread stack's guard page: {e}");
            stack.free();
            return None;
        }
    }
    let Ok((tls, tp)) = new_block() else {
        stack.free();
        return None;
    };
    let bottom = (stack.addr + 4096) as u64;
    let top = bottom + size as u64;
    let mut g = lock();
    let Some(s) = g.as_mut() else {
        drop(g);
        stack.free();
        tls.free();
        return None;
    };
    let machine = Machine {
        rsp: Box::new(0),
        tp,
        stack_range: bottom..top,
        stack: Some(stack),
        tls: Some(tls),
        start: Some((func, arg)),
    };
    crate::preempt::start(on_upcall);
    let Some(tid) = s.spawn(machine) else {
        // Ids ran out: the machine went into the scheduler's spawn and was dropped there.
        return None;
    };
    if let Some(m) = s.data_mut(tid) {
        // SAFETY: top is the 4096-aligned end of the thread's own fresh stack of >= 64 KiB.
        *m.rsp = unsafe { arch::context::init_stack(top, thread_entry, tid as usize) };
    }
    Some(tid)
}

/// The older spawn: as [`sys_spawn2`] with std's default stack size (1 MiB); writes the id
/// to `id` if not null. 0, or -ENOMEM.
///
/// # Safety
/// `id` is null or valid for writing a `Tid`.
#[no_mangle]
pub unsafe extern "C" fn sys_spawn(
    id: *mut Tid,
    func: extern "C" fn(usize),
    arg: usize,
    _prio: u8,
    _core_id: isize,
) -> i32 {
    let _k = crate::preempt::enter();
    const ENOMEM: i32 = 12;
    match spawn(func, arg, 1 << 20) {
        Some(tid) => {
            if !id.is_null() {
                // SAFETY: the caller's guarantee.
                unsafe { id.write(tid) };
            }
            0
        }
        None => fail(ENOMEM) as i32,
    }
}

/// Waits for thread `id` to end and forgets it: 0, or -EINVAL for no such thread.
#[no_mangle]
pub extern "C" fn sys_join(id: Tid) -> i32 {
    let _k = crate::preempt::enter();
    loop {
        let mut g = lock();
        let Some(s) = g.as_mut() else {
            return fail(EINVAL) as i32;
        };
        match s.join(id) {
            Join::Done(m) => {
                drop(g);
                m.stack.into_iter().chain(m.tls).for_each(Block::free);
                return 0;
            }
            Join::NoSuchThread => return fail(EINVAL) as i32,
            Join::Wait => reschedule(g, None),
        }
    }
}

/// Lets the other ready threads run first (and pending events in).
#[no_mangle]
pub extern "C" fn sys_yield() {
    let _k = crate::preempt::enter();
    yield_now();
}

fn yield_now() {
    poll(Some(0));
    let mut g = lock();
    if let Some(s) = g.as_mut() {
        s.yield_now();
    }
    reschedule(g, Some(0));
}

/// The preemption upcall (see [`crate::preempt`]): if app code was interrupted, lets pending
/// events in and yields to the next ready thread; returns whether to unmask upcalls again.
fn on_upcall() -> bool {
    if !crate::preempt::in_app() {
        return false;
    }
    crate::preempt::enter_raw();
    yield_now();
    // Back on this thread: the iret that ends the upcall unmasks, so leave without unmasking.
    crate::preempt::leave_masked();
    true
}

fn sleep_ns(ns: u64) {
    let deadline = xen::time::now_ns().saturating_add(ns);
    while xen::time::now_ns() < deadline {
        block(Wait::Sleep, Some(deadline));
    }
}

/// Sleeps for `usecs` microseconds; the other threads run meanwhile.
#[no_mangle]
pub extern "C" fn sys_usleep(usecs: u64) {
    let _k = crate::preempt::enter();
    sleep_ns(usecs.saturating_mul(1000));
}

/// Sleeps for `*req`: 0, or -EINVAL for a bad or null timespec.
///
/// # Safety
/// `req` is null or valid for reading a timespec.
#[no_mangle]
pub unsafe extern "C" fn sys_nanosleep(req: *const Timespec) -> i32 {
    let _k = crate::preempt::enter();
    if req.is_null() {
        return fail(EINVAL) as i32;
    }
    // SAFETY: non-null, so valid (the caller's guarantee).
    let t = unsafe { req.read() };
    match t.as_ns() {
        Some(ns) => {
            sleep_ns(ns);
            0
        }
        None => fail(EINVAL) as i32,
    }
}

/// One vCPU.
#[no_mangle]
pub extern "C" fn sys_available_parallelism() -> usize {
    1
}

/// Futex wait: if the u32 at `address` still holds `expected`, blocks the thread until a
/// `sys_futex_wake` on that address (0) or the timeout (-ETIMEDOUT; relative with
/// FUTEX_RELATIVE_TIMEOUT, else absolute monotonic time); -EAGAIN if the value differs. The
/// check and the block are one step: no other thread runs in between (one vCPU, and a
/// runtime section is not preempted).
///
/// # Safety
/// `address` is valid for reading a u32; `timeout` is null or valid.
#[no_mangle]
pub unsafe extern "C" fn sys_futex_wait(
    address: *mut u32,
    expected: u32,
    timeout: *const Timespec,
    flags: u32,
) -> i32 {
    let _k = crate::preempt::enter();
    if address.is_null() || flags & !FUTEX_RELATIVE_TIMEOUT != 0 {
        return fail(EINVAL) as i32;
    }
    let deadline = if timeout.is_null() {
        None
    } else {
        // SAFETY: non-null, so a valid timespec.
        let Some(ns) = (unsafe { timeout.read() }).as_ns() else {
            return fail(EINVAL) as i32;
        };
        Some(if flags & FUTEX_RELATIVE_TIMEOUT != 0 {
            xen::time::now_ns().saturating_add(ns)
        } else {
            ns
        })
    };
    // SAFETY: the caller passes a valid futex word; std accesses it atomically.
    let word = unsafe { AtomicU32::from_ptr(address) };
    if word.load(Ordering::SeqCst) != expected {
        return fail(EAGAIN) as i32;
    }
    match block(Wait::Futex(address as usize), deadline) {
        Woken::Notified => 0,
        Woken::TimedOut => fail(ETIMEDOUT) as i32,
    }
}

/// Futex wake: wakes up to `count` threads waiting on `address` (all, for i32::MAX); returns
/// how many, or -EINVAL. The caller keeps running.
///
/// # Safety
/// Always safe: the address is only compared, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn sys_futex_wake(address: *mut u32, count: i32) -> i32 {
    let _k = crate::preempt::enter();
    if address.is_null() || count < 0 {
        return fail(EINVAL) as i32;
    }
    futex_wake(address as usize, count as usize) as i32
}

/// Wakes up to `count` threads waiting on the futex word at `addr`; how many.
pub(crate) fn futex_wake(addr: usize, count: usize) -> usize {
    SCHED
        .lock()
        .as_mut()
        .map_or(0, |s| s.wake_futex(addr, count))
}

/// Waits on the futex word `word` (at `addr`) while it holds `expected`, until a wake or
/// `deadline`; false if it did not hold (no wait) or the deadline passed.
pub(crate) fn futex_wait(
    addr: usize,
    expected: u32,
    word: &AtomicU32,
    deadline: Option<u64>,
) -> bool {
    if word.load(Ordering::SeqCst) != expected {
        return false;
    }
    block(Wait::Futex(addr), deadline) == Woken::Notified
}
