//! Our own page tables: every page of guest memory mapped at `va = pfn * 4096`, with W^X
//! permissions and unmapped guard pages.
//!
//! A PV guest's page tables hold *machine* frame numbers and may only be changed through Xen
//! (`mmu_update`), which checks every change: a frame used as a page table must have no writable
//! mapping, so a new table is filled while it is still an ordinary page, then remapped read-only,
//! then linked into its parent. [`Builder`] plans those steps and submits them in batches (one
//! hypercall per [`BATCH`] updates, not one per page) through the [`Machine`] trait, which
//! `xen::boot` implements with hypercalls and the host tests implement with a simulated Xen that
//! enforces the same rules.

/// Page size.
pub const PAGE_SIZE: usize = 4096;
/// Entries per table.
pub const ENTRIES: usize = 512;
/// Page-table updates submitted per hypercall.
pub const BATCH: usize = 128;

/// PTE bits.
#[allow(missing_docs)]
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    pub const NX: u64 = 1 << 63;
    /// Machine address bits of an entry.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Flags of an intermediate (L2-L4) entry: Xen requires USER on 64-bit PV kernels.
    pub const TABLE: u64 = PRESENT | RW | USER | ACCESSED | DIRTY;
}

/// What a page of the guest's pseudo-physical memory may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Code: read + execute.
    Text,
    /// Read-only data (and page-table frames, which Xen requires read-only).
    ReadOnly,
    /// Read + write, never execute.
    ReadWrite,
    /// Not mapped at all (stack guard pages). The entry is zeroed fully (L1TF).
    Unmapped,
}

impl Perm {
    /// The L1 entry for machine frame `mfn` with this permission.
    pub fn pte(self, mfn: u64) -> u64 {
        let base = (mfn << 12) | pte::PRESENT | pte::USER | pte::ACCESSED;
        match self {
            Perm::Text => base,
            Perm::ReadOnly => base | pte::NX,
            Perm::ReadWrite => base | pte::RW | pte::DIRTY | pte::NX,
            Perm::Unmapped => 0,
        }
    }
}

/// One `mmu_update` request (public/xen.h `struct mmu_update`): `*ptr = val` where `ptr` is the
/// machine address of the entry (low bits 0 = MMU_NORMAL_PT_UPDATE).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MmuUpdate {
    /// Machine address of the entry.
    pub ptr: u64,
    /// New contents.
    pub val: u64,
}

/// The memory and page-table operations the builder needs; Xen on the guest, a simulation in
/// tests.
pub trait Machine {
    /// Error from the hypervisor.
    type Error: core::fmt::Debug + core::fmt::Display;
    /// Whether a frame in use as a page table must have no writable mapping (Xen's rule for PV
    /// guests; a PVH guest's own tables are ordinary memory).
    const TABLES_READ_ONLY: bool = true;
    /// Machine frame of pseudo-physical frame `pfn` (the P2M map).
    fn pfn_to_mfn(&self, pfn: u64) -> u64;
    /// Pseudo-physical frame of machine frame `mfn` (the M2P map).
    fn mfn_to_pfn(&self, mfn: u64) -> u64;
    /// Reads entry `index` of the page table in pseudo-physical frame `pfn` (mapped, read-only).
    fn read_entry(&self, pfn: u64, index: usize) -> u64;
    /// Fills the ordinary (not yet page-table) page `pfn` with `entries`.
    fn write_page(&mut self, pfn: u64, entries: &[u64; ENTRIES]);
    /// Applies page-table updates in order.
    fn mmu_update(&mut self, updates: &[MmuUpdate]) -> Result<(), Self::Error>;
    /// Flushes this vCPU's TLB.
    fn flush_tlb(&mut self) -> Result<(), Self::Error>;
}

/// Why building the page tables failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// Xen refused an update.
    Hypervisor(E),
    /// No free frame left for a page table.
    OutOfFrames,
    /// The address is beyond what one L4 slot (512 GiB) covers.
    TooLarge,
    /// A table the walk needed is missing where Xen's boot tables should have had it.
    MissingTable,
}

impl<E: core::fmt::Display> core::fmt::Display for Error<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Hypervisor(e) => write!(f, "Xen refused a page-table update: {e}"),
            Error::OutOfFrames => f.write_str("no free frame left for a page table"),
            Error::TooLarge => f.write_str("address beyond the 512 GiB of one L4 slot"),
            Error::MissingTable => f.write_str("a table missing from Xen's boot page tables"),
        }
    }
}

/// Plans and submits page-table changes in batches.
pub struct Builder<'m, M: Machine> {
    m: &'m mut M,
    /// Pseudo-physical frame of the L4 table.
    l4_pfn: u64,
    /// First frame this builder may take for tables, the next one it will take, and the end.
    free_start: u64,
    next_free: u64,
    free_end: u64,
    batch: [MmuUpdate; BATCH],
    len: usize,
    /// Number of new page-table frames used.
    pub tables_added: usize,
    /// Number of hypercalls made.
    pub hypercalls: usize,
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

impl<'m, M: Machine> Builder<'m, M> {
    /// A builder for the tree rooted at `l4_pfn`, taking new table frames from
    /// `free_start..free_end` (which must already be mapped writable).
    pub fn new(m: &'m mut M, l4_pfn: u64, free_start: u64, free_end: u64) -> Self {
        Builder {
            m,
            l4_pfn,
            free_start,
            next_free: free_start,
            free_end,
            batch: [MmuUpdate::default(); BATCH],
            len: 0,
            tables_added: 0,
            hypercalls: 0,
        }
    }

    /// First frame not used for tables.
    pub fn next_free(&self) -> u64 {
        self.next_free
    }

    fn push(&mut self, u: MmuUpdate) -> Result<(), Error<M::Error>> {
        if self.len == BATCH {
            self.flush()?;
        }
        self.batch[self.len] = u;
        self.len += 1;
        Ok(())
    }

    /// Submits queued updates.
    pub fn flush(&mut self) -> Result<(), Error<M::Error>> {
        if self.len > 0 {
            self.m
                .mmu_update(&self.batch[..self.len])
                .map_err(Error::Hypervisor)?;
            self.hypercalls += 1;
            self.len = 0;
        }
        Ok(())
    }

    /// Machine address of the L1 entry mapping `va`, if its L1 table exists.
    fn l1_entry_maddr(&self, va: u64) -> Option<u64> {
        let mut pfn = self.l4_pfn;
        for level in (2..=4).rev() {
            let e = self.m.read_entry(pfn, index(va, level));
            if e & pte::PRESENT == 0 {
                return None;
            }
            pfn = self.m.mfn_to_pfn((e & pte::ADDR_MASK) >> 12);
        }
        Some((self.m.pfn_to_mfn(pfn) << 12) + index(va, 1) as u64 * 8)
    }

    /// `perm`, unless `pfn` is (or is about to become) one of our table frames: those stay
    /// read-only whatever the caller asks.
    fn effective(&self, pfn: u64, perm: Perm) -> Perm {
        if M::TABLES_READ_ONLY && (self.free_start..self.next_free).contains(&pfn) {
            Perm::ReadOnly
        } else {
            perm
        }
    }

    /// Sets the permission of the already-mapped page `pfn` (at `va = pfn * 4096`).
    pub fn set_perm(&mut self, pfn: u64, perm: Perm) -> Result<(), Error<M::Error>> {
        let perm = self.effective(pfn, perm);
        let va = pfn << 12;
        let ptr = self.l1_entry_maddr(va).ok_or(Error::MissingTable)?;
        let val = perm.pte(self.m.pfn_to_mfn(pfn));
        self.push(MmuUpdate { ptr, val })
    }

    /// Takes a free frame for a new table of `level` covering `va`, fills it, makes it read-only
    /// and links it into `parent_pfn`. Returns the new table's frame.
    fn add_table(
        &mut self,
        parent_pfn: u64,
        va: u64,
        level: u32,
        fill: impl Fn(usize) -> u64,
    ) -> Result<u64, Error<M::Error>> {
        if self.next_free >= self.free_end {
            return Err(Error::OutOfFrames);
        }
        let pfn = self.next_free;
        self.next_free += 1;
        let mut entries = [0u64; ENTRIES];
        let base = (va >> 12) & !(ENTRIES as u64 - 1);
        for (i, e) in entries.iter_mut().enumerate() {
            *e = fill(i);
            // An L1 that maps one of our table frames (maybe itself) maps it read-only.
            if M::TABLES_READ_ONLY
                && level == 1
                && (self.free_start..self.next_free).contains(&(base + i as u64))
            {
                *e &= !(pte::RW | pte::DIRTY);
            }
        }
        self.m.write_page(pfn, &entries);
        if M::TABLES_READ_ONLY {
            // The frame is about to become a page table: drop its writable mapping first.
            self.set_perm(pfn, Perm::ReadOnly)?;
        }
        let mfn = self.m.pfn_to_mfn(pfn);
        let parent = (self.m.pfn_to_mfn(parent_pfn) << 12) + index(va, level + 1) as u64 * 8;
        self.push(MmuUpdate {
            ptr: parent,
            val: (mfn << 12) | pte::TABLE,
        })?;
        // Later walks read the parent: make sure the link is in place.
        self.flush()?;
        self.tables_added += 1;
        Ok(pfn)
    }

    /// Maps pseudo-physical frames `start..end` at `va = pfn * 4096` with `perm_of(pfn)`, adding
    /// the L1 (and L2) tables that are missing. Frames that already have an entry get theirs
    /// rewritten.
    pub fn map_range(
        &mut self,
        start: u64,
        end: u64,
        perm_of: impl Fn(u64) -> Perm,
    ) -> Result<(), Error<M::Error>> {
        if end > (1u64 << 39) >> 12 {
            return Err(Error::TooLarge);
        }
        let mut pfn = start;
        while pfn < end {
            let va = pfn << 12;
            let l3_pfn = {
                let e = self.m.read_entry(self.l4_pfn, index(va, 4));
                if e & pte::PRESENT == 0 {
                    return Err(Error::MissingTable);
                }
                self.m.mfn_to_pfn((e & pte::ADDR_MASK) >> 12)
            };
            let e3 = self.m.read_entry(l3_pfn, index(va, 3));
            let l2_pfn = if e3 & pte::PRESENT == 0 {
                self.add_table(l3_pfn, va, 2, |_| 0)?
            } else {
                self.m.mfn_to_pfn((e3 & pte::ADDR_MASK) >> 12)
            };
            let e2 = self.m.read_entry(l2_pfn, index(va, 2));
            let chunk_end = ((pfn / ENTRIES as u64) + 1) * ENTRIES as u64;
            let stop = chunk_end.min(end);
            if e2 & pte::PRESENT == 0 {
                // A whole new L1: fill it with the final entries in one go.
                let base = pfn - pfn % ENTRIES as u64;
                let mfns: [u64; ENTRIES] = core::array::from_fn(|i| {
                    let p = base + i as u64;
                    if p >= pfn && p < stop {
                        self.m.pfn_to_mfn(p)
                    } else {
                        u64::MAX
                    }
                });
                let perms: [Perm; ENTRIES] = core::array::from_fn(|i| {
                    self.effective(base + i as u64, perm_of(base + i as u64))
                });
                self.add_table(l2_pfn, va, 1, |i| {
                    if mfns[i] == u64::MAX {
                        0
                    } else {
                        perms[i].pte(mfns[i])
                    }
                })?;
            } else {
                for p in pfn..stop {
                    self.set_perm(p, perm_of(p))?;
                }
            }
            pfn = stop;
        }
        Ok(())
    }

    /// Submits what is queued and flushes the TLB.
    pub fn finish(mut self) -> Result<(usize, usize), Error<M::Error>> {
        self.flush()?;
        self.m.flush_tlb().map_err(Error::Hypervisor)?;
        self.hypercalls += 1;
        Ok((self.tables_added, self.hypercalls))
    }
}

/// A PVH guest's own page tables: gfn = pfn, entries written directly, `mov cr3` to flush.
#[cfg(any(target_os = "none", target_os = "hermit"))]
pub mod native {
    use super::*;

    /// [`Machine`] for a PVH guest, while every frame the builder touches is identity-mapped
    /// (the entry's early map, then our own).
    pub struct Native;

    impl Machine for Native {
        /// Writing our own tables cannot be refused.
        type Error = core::convert::Infallible;
        const TABLES_READ_ONLY: bool = false;

        fn pfn_to_mfn(&self, pfn: u64) -> u64 {
            pfn
        }

        fn mfn_to_pfn(&self, mfn: u64) -> u64 {
            mfn
        }

        fn read_entry(&self, pfn: u64, index: usize) -> u64 {
            // SAFETY: table frames are identity-mapped; index < 512.
            unsafe { core::ptr::read_volatile(((pfn << 12) as *const u64).add(index)) }
        }

        fn write_page(&mut self, pfn: u64, entries: &[u64; ENTRIES]) {
            // SAFETY: the builder only writes free frames it took (identity-mapped, writable).
            unsafe {
                core::ptr::copy_nonoverlapping(entries.as_ptr(), (pfn << 12) as *mut u64, ENTRIES)
            };
        }

        fn mmu_update(&mut self, updates: &[MmuUpdate]) -> Result<(), Self::Error> {
            for u in updates {
                // SAFETY: `ptr` is the physical (= virtual) address of an entry of a table of
                // the tree being built, which is not live yet or only gains mappings.
                unsafe { core::ptr::write_volatile(u.ptr as *mut u64, u.val) };
            }
            Ok(())
        }

        fn flush_tlb(&mut self) -> Result<(), Self::Error> {
            let root = crate::cpu::ring0::cr3();
            // SAFETY: reloads the live root: only drops cached translations.
            unsafe { crate::cpu::ring0::set_cr3(root) };
            Ok(())
        }
    }

    /// The L1 entry mapping `va` in the live tables, if its tables exist.
    pub(crate) fn l1_entry(va: u64) -> Option<*mut u64> {
        let mut table = crate::cpu::ring0::cr3() & pte::ADDR_MASK;
        for level in (2..=4).rev() {
            // SAFETY: table frames are mapped at their physical address; index < 512.
            let e =
                unsafe { core::ptr::read_volatile((table as *const u64).add(index(va, level))) };
            if e & pte::PRESENT == 0 || e & (1 << 7) != 0 {
                return None; // missing, or a large page (the entry's early map)
            }
            table = e & pte::ADDR_MASK;
        }
        Some((table as *mut u64).wrapping_add(index(va, 1)))
    }

    /// Makes `l4_pfn` the live root.
    ///
    /// # Safety
    /// The tree must map everything in use (code, stack, data), as the builder's does.
    pub unsafe fn activate(l4_pfn: u64) {
        // SAFETY: forwarded to the caller.
        unsafe { crate::cpu::ring0::set_cr3(l4_pfn << 12) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A simulated PV machine: frames of 512 entries, P2M/M2P maps (machine frames scrambled so
    /// pfn != mfn), and Xen's rule that a frame linked as a page table has no writable mapping.
    struct Sim {
        mem: HashMap<u64, [u64; ENTRIES]>, // by mfn
        p2m: Vec<u64>,
        tables: HashMap<u64, u32>, // mfns in use as page tables, with their level
        l4: u64,                   // pfn
        calls: usize,
    }

    impl Sim {
        /// `nr` pages; Xen's boot tables map pfns 0..mapped with L4/L3/L2 at pfns 1,2,3 and L1s
        /// from pfn 4.
        fn new(nr: u64, mapped: u64) -> Sim {
            let p2m: Vec<u64> = (0..nr).map(|p| p * 7 % 100_003 + 1000).collect();
            let mut s = Sim {
                mem: HashMap::new(),
                p2m,
                tables: HashMap::new(),
                l4: 1,
                calls: 0,
            };
            let (l4, l3, l2) = (s.p2m[1], s.p2m[2], s.p2m[3]);
            let mut t4 = [0; ENTRIES];
            t4[0] = (l3 << 12) | pte::TABLE;
            let mut t3 = [0; ENTRIES];
            t3[0] = (l2 << 12) | pte::TABLE;
            let mut t2 = [0; ENTRIES];
            let nl1 = mapped.div_ceil(512);
            for i in 0..nl1 {
                let l1 = s.p2m[(4 + i) as usize];
                t2[i as usize] = (l1 << 12) | pte::TABLE;
                let mut t1 = [0; ENTRIES];
                for (j, e) in t1.iter_mut().enumerate() {
                    let pfn = i * 512 + j as u64;
                    if pfn < mapped {
                        let ro = (1..4 + nl1).contains(&pfn);
                        *e = if ro { Perm::ReadOnly } else { Perm::ReadWrite }
                            .pte(s.p2m[pfn as usize]);
                    }
                }
                s.mem.insert(l1, t1);
                s.tables.insert(l1, 1);
            }
            s.mem.insert(l4, t4);
            s.mem.insert(l3, t3);
            s.mem.insert(l2, t2);
            s.tables.extend([(l4, 4), (l3, 3), (l2, 2)]);
            s
        }

        fn m2p(&self, mfn: u64) -> u64 {
            self.p2m
                .iter()
                .position(|&m| m == mfn)
                .expect("unknown mfn") as u64
        }

        /// Walks the tree for `va`: the final L1 entry, if mapped.
        fn lookup(&self, va: u64) -> Option<u64> {
            let mut mfn = self.p2m[self.l4 as usize];
            for level in (1..=4).rev() {
                let e = self.mem.get(&mfn)?[index(va, level)];
                if e & pte::PRESENT == 0 {
                    return None;
                }
                if level == 1 {
                    return Some(e);
                }
                mfn = (e & pte::ADDR_MASK) >> 12;
            }
            None
        }
    }

    impl Machine for Sim {
        type Error = &'static str;
        fn pfn_to_mfn(&self, pfn: u64) -> u64 {
            self.p2m[pfn as usize]
        }
        fn mfn_to_pfn(&self, mfn: u64) -> u64 {
            self.m2p(mfn)
        }
        fn read_entry(&self, pfn: u64, index: usize) -> u64 {
            self.mem
                .get(&self.p2m[pfn as usize])
                .map_or(0, |t| t[index])
        }
        fn write_page(&mut self, pfn: u64, entries: &[u64; ENTRIES]) {
            let mfn = self.p2m[pfn as usize];
            assert!(
                !self.tables.contains_key(&mfn),
                "guest wrote a live page table"
            );
            let e = self.lookup(pfn << 12).expect("write to unmapped page");
            assert!(e & pte::RW != 0, "write to read-only page");
            self.mem.insert(mfn, *entries);
        }
        fn mmu_update(&mut self, updates: &[MmuUpdate]) -> Result<(), &'static str> {
            self.calls += 1;
            for u in updates {
                let (mfn, idx) = (u.ptr >> 12, ((u.ptr & 0xfff) / 8) as usize);
                let level = *self
                    .tables
                    .get(&mfn)
                    .ok_or("update of a frame that is not a table")?;
                let target = (u.val & pte::ADDR_MASK) >> 12;
                if u.val & pte::PRESENT != 0 {
                    if level == 1 && u.val & pte::RW != 0 && self.tables.contains_key(&target) {
                        return Err("writable mapping of a page table");
                    }
                    if level > 1 && !self.tables.contains_key(&target) {
                        // Xen validates and types the new table: no writable mapping may exist.
                        let writable = self.tables.iter().filter(|(_, &l)| l == 1).any(|(t, _)| {
                            self.mem[t].iter().any(|&e| {
                                e & pte::PRESENT != 0
                                    && e & pte::RW != 0
                                    && (e & pte::ADDR_MASK) >> 12 == target
                            })
                        });
                        if writable {
                            return Err("linked a table that still has a writable mapping");
                        }
                        self.tables.insert(target, level - 1);
                    }
                }
                self.mem.get_mut(&mfn).unwrap()[idx] = u.val;
            }
            Ok(())
        }
        fn flush_tlb(&mut self) -> Result<(), &'static str> {
            Ok(())
        }
    }

    #[test]
    fn maps_all_memory_with_w_x_and_guard_pages_in_few_hypercalls() {
        let nr = 40_000u64; // ~156 MiB: crosses no L2 boundary but needs many L1s
        let mapped = 1024;
        let mut sim = Sim::new(nr, mapped);
        let first_free = 4 + 2;
        let guard = 300;
        let perm = |pfn: u64| match pfn {
            0 => Perm::Text,
            p if p == guard => Perm::Unmapped,
            1..=5 => Perm::ReadOnly,
            _ => Perm::ReadWrite,
        };
        let mut b = Builder::new(&mut sim, 1, first_free, nr);
        b.map_range(0, nr, perm).unwrap();
        let next = b.next_free();
        let (added, calls) = b.finish().unwrap();
        assert_eq!(added as u64, nr.div_ceil(512) - 2);
        assert_eq!(next, first_free + added as u64);
        assert!(calls < 200, "batched: {calls} hypercalls for {nr} pages");
        for pfn in 0..nr {
            let e = sim.lookup(pfn << 12);
            let table = (first_free..next).contains(&pfn);
            match perm(pfn) {
                Perm::Unmapped => assert_eq!(e, None),
                p => {
                    let e = e.unwrap_or_else(|| panic!("pfn {pfn} unmapped"));
                    assert_eq!(e & pte::ADDR_MASK, sim.p2m[pfn as usize] << 12);
                    let want = if table { Perm::ReadOnly } else { p };
                    assert_eq!(e & pte::RW != 0, want == Perm::ReadWrite, "pfn {pfn}");
                    assert_eq!(e & pte::NX == 0, want == Perm::Text, "pfn {pfn}");
                }
            }
        }
    }
}
