//! Changing one mapping of the running guest: [`set_pte`], the same call for PV (through Xen)
//! and PVH (our own tables). Apart from `paging` (which plans whole trees) so that neither
//! `paging` nor `hypercall` needs the other's callers.

/// Points the L1 entry of `va` at `pte` and drops its TLB entry: PV through Xen
/// (`update_va_mapping`), PVH by writing our own table (every table frame is mapped at
/// `pfn * 4096`).
///
/// # Safety
/// `va` must be a page of ours that nothing refers to through its old mapping any more, and
/// `pte` a mapping the program may use there.
pub unsafe fn set_pte(va: u64, pte: u64) -> Result<(), crate::hypercall::Errno> {
    #[cfg(any(target_os = "none", target_os = "hermit"))]
    if crate::mode::is_pvh() {
        let entry = crate::paging::native::l1_entry(va).ok_or(crate::hypercall::Errno::EINVAL)?;
        // SAFETY: the entry of `va` in our own tables (mapped read-write at pfn * 4096); what
        // it maps is the caller's contract.
        unsafe { core::ptr::write_volatile(entry, pte) };
        crate::cpu::ring0::invlpg(va);
        return Ok(());
    }
    // SAFETY: forwarded to the caller.
    unsafe { crate::hypercall::update_va_mapping(va, pte, crate::hypercall::UVMF_INVLPG) }
}
