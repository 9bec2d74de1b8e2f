//! Switching between threads' stacks: the one piece of the thread scheduler (hermit's
//! `sched`) that is machine code.
//!
//! A switch happens only inside a call (a thread blocks, yields or ends), so by the System V
//! ABI only the callee-saved registers (`rbx`, `rbp`, `r12`-`r15`) and `rsp` must survive it:
//! the caller-saved ones, the flags and the SSE registers are the compiler's to have saved
//! around the call. `xenrt_switch(from, to)`, in pseudo-code:
//! ```text
//! push rbp, rbx, r12, r13, r14, r15     // on the old thread's stack
//! *from = rsp
//! rsp = to
//! pop r15, r14, r13, r12, rbx, rbp      // from the new thread's stack
//! ret                                   // into where that thread called switch, or start
//! ```
//! A new thread's stack is prepared by [`init_stack`] so that its first switch "returns" into
//! `xenrt_thread_start`, which calls `entry(arg)` with the frame-pointer chain ended.

/// Prepares the stack whose highest address is `top` so that the first [`switch`] to the
/// returned stack pointer runs `entry(arg)` on it (`entry` must never return).
///
/// # Safety
/// `top` is 16-byte aligned and the 72 bytes below it are writable memory owned by the new
/// thread's stack.
pub unsafe fn init_stack(top: u64, entry: extern "C" fn(usize) -> !, arg: usize) -> u64 {
    // Layout, from the returned rsp up: r15, r14, r13, r12 (= arg), rbx (= entry), rbp (= 0),
    // the return address (xenrt_thread_start), then 16 bytes of zeros so that rsp is 16-byte
    // aligned at xenrt_thread_start's call, as the ABI wants.
    let words: [u64; 9] = [
        0,
        0,
        0,
        arg as u64,
        entry as usize as u64,
        0,
        xenrt_thread_start as *const () as u64,
        0,
        0,
    ];
    let rsp = top - 8 * words.len() as u64;
    // SAFETY: the caller's guarantee: the 72 bytes below top are the new stack's.
    unsafe { core::ptr::copy_nonoverlapping(words.as_ptr(), rsp as *mut u64, words.len()) };
    rsp
}

/// Saves the running thread's registers on its stack and its stack pointer in `*from`, then
/// resumes the thread whose saved stack pointer is `to`. Returns when some thread switches
/// back to this one.
///
/// # Safety
/// `from` is valid for writing a `u64`; `to` is a stack pointer saved by `switch` (of a thread
/// that is not running) or made by [`init_stack`], on a stack that is still allocated.
pub unsafe fn switch(from: *mut u64, to: u64) {
    // SAFETY: the caller's guarantee; xenrt_switch keeps the System V callee-saved registers.
    unsafe { xenrt_switch(from, to) }
}

extern "C" {
    fn xenrt_switch(from: *mut u64, to: u64);
    fn xenrt_thread_start() -> !;
}

core::arch::global_asm!(
    r#"
    .pushsection .text.xenrt_switch, "ax"
    .global xenrt_switch
xenrt_switch:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, (%rdi)
    mov %rsi, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret

    .global xenrt_thread_start
xenrt_thread_start:
    mov %r12, %rdi
    xor %ebp, %ebp
    call *%rbx
    ud2
    .popsection
    "#,
    options(att_syntax)
);
