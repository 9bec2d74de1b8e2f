//! Thread-local storage blocks: each thread's copy of the image's TLS template (`.tdata` then
//! zeroed `.tbss`, see hermit/link.ld), laid out for x86_64 TLS variant II: the block ends at
//! the thread pointer (FS base), whose first word points at itself.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU64, Ordering};

extern "C" {
    static __tdata_start: u8;
    static __tdata_end: u8;
    /// Absolute symbols (link.ld): their address is the value.
    static __tls_memsz: u8;
    static __tls_align: u8;
}

/// A heap allocation owned by a thread (its stack or TLS block), freed explicitly.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) addr: usize,
    pub(crate) layout: Layout,
    /// Its first page is unmapped (a stack's guard page, [`xen::mm::guard`]).
    pub(crate) guarded: bool,
}

impl Block {
    /// Returns the memory to the heap (mapping a guard page again first; if that fails the
    /// block is kept rather than handed out with a hole in it).
    pub(crate) fn free(self) {
        if self.guarded && xen::mm::unguard(self.addr as u64).is_err() {
            xen::println!("xenrt: cannot map a stack's guard page again: stack kept");
            return;
        }
        // SAFETY: addr came from HEAP.alloc with this layout and is freed once (moved in).
        unsafe { xen::mm::HEAP.dealloc(self.addr as *mut u8, self.layout) }
    }
}

/// The main thread's thread pointer, once [`setup_main`] ran.
static MAIN_TP: AtomicU64 = AtomicU64::new(0);

/// Sets up the main thread's TLS block (never freed) and points FS at it.
pub(crate) fn setup_main() -> Result<(), &'static str> {
    let (_block, tp) = new_block()?;
    arch::hypercall::set_fs_base(tp).map_err(|_| "set_segment_base failed")?;
    MAIN_TP.store(tp, Ordering::Relaxed);
    Ok(())
}

/// The main thread's thread pointer (0 before [`setup_main`]).
pub(crate) fn main_tp() -> u64 {
    MAIN_TP.load(Ordering::Relaxed)
}

/// Copies the TLS template into a new block from the heap; returns the block and its thread
/// pointer, the block's end.
pub(crate) fn new_block() -> Result<(Block, u64), &'static str> {
    let start = core::ptr::addr_of!(__tdata_start);
    let filesz = core::ptr::addr_of!(__tdata_end) as usize - start as usize;
    let memsz = core::ptr::addr_of!(__tls_memsz) as usize;
    let align = (core::ptr::addr_of!(__tls_align) as usize).max(16);
    let image = memsz.next_multiple_of(align);
    let layout = Layout::from_size_align(image + 64, align).map_err(|_| "bad TLS layout")?;
    // SAFETY: a non-zero-sized layout.
    let block = unsafe { xen::mm::HEAP.alloc_zeroed(layout) };
    if block.is_null() {
        return Err("out of memory");
    }
    // SAFETY: the template is filesz bytes of our image; the block has image + 64 zeroed bytes
    // and image >= memsz >= filesz.
    let tp = unsafe {
        core::ptr::copy_nonoverlapping(start, block.add(image - memsz), filesz);
        let tp = block.add(image);
        (tp as *mut u64).write(tp as u64);
        tp as u64
    };
    let block = Block {
        guarded: false,
        addr: block as usize,
        layout,
    };
    Ok((block, tp))
}
