//! `hvm_start_info` (public/arch-x86/hvm/start_info.h): what Xen tells a PVH guest at entry,
//! read once from guest memory through a byte-reading closure (host-tested with fixtures) into a
//! validated [`HvmStart`]: the command line and the memory map, bounded.
//!
//! Layout, all little-endian: magic u32 @0 (0x336ec578), version u32 @4, flags u32 @8,
//! nr_modules u32 @12, modlist_paddr u64 @16, cmdline_paddr u64 @24, rsdp_paddr u64 @32;
//! version 1 adds memmap_paddr u64 @40 and memmap_entries u32 @48 (56 bytes). A memory-map
//! entry is addr u64 @0, size u64 @8, type u32 @16, reserved u32 @20 (24 bytes).
//!
//! Without a map of its own (version 0, Xen before 4.11, or no entries) the map comes from
//! `XENMEM_memory_map`, as Linux and Mini-OS do: libxl gives that hypercall the same e820 map.

use arch::hypercall::hvm::E820Entry;
use arch::hypercall::Errno;
use core::fmt;

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const MAGIC: u32 = 0x336e_c578;
/// Memory-map type of usable RAM.
pub const RAM: u32 = 1;
/// Most memory-map entries kept (libxl writes a handful).
pub const MAX_ENTRIES: usize = 32;
/// Longest command line kept (start_info's `cmd_line` holds as much).
pub const CMDLINE_MAX: usize = 1023;

/// Why hvm_start_info is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not the magic value: not a PVH entry, or a corrupt structure.
    BadMagic(u32),
    /// Version 0 (or no entries), and `XENMEM_memory_map` failed or gave nothing: no memory
    /// map to find our RAM in.
    NoMemoryMap(u32, Option<Errno>),
    /// More entries than we keep.
    TooManyEntries(u32),
    /// A structure Xen pointed at could not be read (outside what is mapped this early).
    Unreadable(u64),
    /// No RAM in the memory map.
    NoRam,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadMagic(m) => write!(f, "hvm_start_info magic {m:#x}, not {MAGIC:#x}"),
            Error::NoMemoryMap(v, Some(e)) => write!(
                f,
                "hvm_start_info version {v} has no memory map and XENMEM_memory_map failed: {e}"
            ),
            Error::NoMemoryMap(v, None) => write!(
                f,
                "hvm_start_info version {v} has no memory map and XENMEM_memory_map gave none"
            ),
            Error::TooManyEntries(n) => {
                write!(f, "{n} memory-map entries (at most {MAX_ENTRIES} kept)")
            }
            Error::Unreadable(a) => write!(f, "cannot read guest memory at {a:#x}"),
            Error::NoRam => f.write_str("no RAM in the memory map"),
        }
    }
}

/// One memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Region {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Type (1 RAM, 2 reserved, 3 ACPI, ...).
    pub kind: u32,
}

impl Region {
    /// The whole pages inside a RAM region, as a frame range (empty for other types).
    pub fn ram_pages(&self) -> core::ops::Range<u64> {
        if self.kind != RAM {
            return 0..0;
        }
        let start = self.addr.div_ceil(4096);
        let end = self.addr.saturating_add(self.size) / 4096;
        start..end.max(start)
    }
}

/// Where the memory map came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapSource {
    /// hvm_start_info's own (version 1).
    StartInfo,
    /// `XENMEM_memory_map`.
    Hypercall,
}

/// The e820 entries `XENMEM_memory_map` gave, as regions.
pub fn regions_of_e820(e: &[E820Entry]) -> impl Iterator<Item = Region> + '_ {
    e.iter().map(|e| Region {
        addr: e.addr,
        size: e.size,
        kind: e.kind,
    })
}

/// hvm_start_info, validated.
#[derive(Clone, Copy)]
pub struct HvmStart {
    /// Structure version.
    pub version: u32,
    /// Where [`regions`](Self::regions) came from.
    pub map_source: MapSource,
    /// SIF_* flags.
    pub flags: u32,
    /// Physical address of the ACPI RSDP (0: none).
    pub rsdp: u64,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    regions: [Region; MAX_ENTRIES],
    nr_regions: usize,
}

impl HvmStart {
    /// The command line (no NUL).
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }

    /// The memory map, as Xen gave it.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.nr_regions]
    }

    /// One past the highest RAM frame.
    pub fn ram_end(&self) -> u64 {
        self.regions()
            .iter()
            .map(|r| r.ram_pages().end)
            .max()
            .unwrap_or(0)
    }

    /// The frame ranges below [`ram_end`](Self::ram_end) that are not RAM, in order, into
    /// `out`; returns how many.
    pub fn holes(&self, out: &mut [(u64, u64); MAX_ENTRIES + 1]) -> usize {
        let mut ram: [(u64, u64); MAX_ENTRIES] = [(0, 0); MAX_ENTRIES];
        let mut n = 0;
        for r in self.regions() {
            let p = r.ram_pages();
            if !p.is_empty() {
                ram[n] = (p.start, p.end);
                n += 1;
            }
        }
        ram[..n].sort_unstable();
        let mut k = 0;
        let mut at = 0;
        for &(s, e) in &ram[..n] {
            if s > at {
                out[k] = (at, s);
                k += 1;
            }
            at = at.max(e);
        }
        k
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Reads hvm_start_info at `paddr` through `read(paddr, buf)` (false: not readable); if it
/// has no memory map, asks `memory_map` (`XENMEM_memory_map`) for one.
pub fn parse(
    read: impl Fn(u64, &mut [u8]) -> bool,
    paddr: u64,
    memory_map: impl FnOnce(&mut [E820Entry]) -> Result<usize, Errno>,
) -> Result<HvmStart, Error> {
    let mut h = [0u8; 56];
    if !read(paddr, &mut h[..8]) {
        return Err(Error::Unreadable(paddr));
    }
    let magic = u32_at(&h, 0);
    if magic != MAGIC {
        return Err(Error::BadMagic(magic));
    }
    let version = u32_at(&h, 4);
    // Version 0 is 40 bytes: the rest of `h` stays 0 (no map).
    let len = if version == 0 { 40 } else { 56 };
    if !read(paddr, &mut h[..len]) {
        return Err(Error::Unreadable(paddr));
    }
    let mut s = HvmStart {
        version,
        map_source: MapSource::StartInfo,
        flags: u32_at(&h, 8),
        rsdp: u64_at(&h, 32),
        cmdline: [0; CMDLINE_MAX],
        cmdline_len: 0,
        regions: [Region::default(); MAX_ENTRIES],
        nr_regions: 0,
    };
    let cmdline = u64_at(&h, 24);
    if cmdline != 0 {
        // Byte by byte up to the NUL: the string may end just before unreadable memory.
        for i in 0..CMDLINE_MAX {
            let mut b = [0u8];
            if !read(cmdline + i as u64, &mut b) {
                return Err(Error::Unreadable(cmdline + i as u64));
            }
            if b[0] == 0 {
                break;
            }
            s.cmdline[i] = b[0];
            s.cmdline_len = i + 1;
        }
    }
    let (map, n) = (u64_at(&h, 40), u32_at(&h, 48));
    if map == 0 || n == 0 {
        let mut e = [E820Entry::default(); MAX_ENTRIES];
        let n = match memory_map(&mut e) {
            Ok(0) => return Err(Error::NoMemoryMap(version, None)),
            Ok(n) => n.min(MAX_ENTRIES),
            Err(err) => return Err(Error::NoMemoryMap(version, Some(err))),
        };
        for (slot, r) in s.regions.iter_mut().zip(regions_of_e820(&e[..n])) {
            *slot = r;
        }
        s.nr_regions = n;
        s.map_source = MapSource::Hypercall;
        if s.ram_end() == 0 {
            return Err(Error::NoRam);
        }
        return Ok(s);
    }
    if n as usize > MAX_ENTRIES {
        return Err(Error::TooManyEntries(n));
    }
    for i in 0..n as usize {
        let mut e = [0u8; 24];
        let at = map + 24 * i as u64;
        if !read(at, &mut e) {
            return Err(Error::Unreadable(at));
        }
        s.regions[i] = Region {
            addr: u64_at(&e, 0),
            size: u64_at(&e, 8),
            kind: u32_at(&e, 16),
        };
    }
    s.nr_regions = n as usize;
    if s.ram_end() == 0 {
        return Err(Error::NoRam);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory of `len` bytes at 0 with start_info at 0x1000, the command line at 0x1100,
    /// the memory map at 0x1200.
    fn fixture(version: u32, cmdline: &[u8], map: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut m = vec![0u8; 0x2000];
        let si = 0x1000;
        m[si..si + 4].copy_from_slice(&MAGIC.to_le_bytes());
        m[si + 4..si + 8].copy_from_slice(&version.to_le_bytes());
        m[si + 24..si + 32].copy_from_slice(&0x1100u64.to_le_bytes());
        m[0x1100..0x1100 + cmdline.len()].copy_from_slice(cmdline);
        m[si + 40..si + 48].copy_from_slice(&0x1200u64.to_le_bytes());
        m[si + 48..si + 52].copy_from_slice(&(map.len() as u32).to_le_bytes());
        for (i, &(a, s, t)) in map.iter().enumerate() {
            let e = 0x1200 + 24 * i;
            m[e..e + 8].copy_from_slice(&a.to_le_bytes());
            m[e + 8..e + 16].copy_from_slice(&s.to_le_bytes());
            m[e + 16..e + 20].copy_from_slice(&t.to_le_bytes());
        }
        m
    }

    /// A Xen without XENMEM_memory_map (ENOSYS).
    fn none(_: &mut [E820Entry]) -> Result<usize, Errno> {
        Err(Errno(38))
    }

    /// A Xen whose XENMEM_memory_map gives `map`.
    fn e820(map: &[(u64, u64, u32)]) -> impl FnOnce(&mut [E820Entry]) -> Result<usize, Errno> + '_ {
        move |out| {
            for (o, &(addr, size, kind)) in out.iter_mut().zip(map) {
                *o = E820Entry { addr, size, kind };
            }
            Ok(map.len().min(out.len()))
        }
    }

    fn reader(m: &[u8]) -> impl Fn(u64, &mut [u8]) -> bool + '_ {
        move |a, buf| {
            let a = a as usize;
            match m.get(a..a + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    #[test]
    fn a_libxl_like_map_gives_ram_end_holes_and_the_cmdline() {
        let m = fixture(
            1,
            b"log=debug ip=dhcp",
            &[
                (0, 0x200_0000, RAM),            // 32 MiB
                (0xfc00_0000, 0x1000, 2),        // reserved
                (0x1_0000_0000, 0x10_0000, RAM), // 1 MiB above 4 GiB
            ],
        );
        let s = parse(reader(&m), 0x1000, none).unwrap();
        assert_eq!(s.cmdline(), b"log=debug ip=dhcp");
        assert_eq!(s.regions().len(), 3);
        assert_eq!(s.ram_end(), 0x10_0100);
        let mut holes = [(0, 0); MAX_ENTRIES + 1];
        let n = s.holes(&mut holes);
        assert_eq!(&holes[..n], &[(0x2000, 0x10_0000)]);
    }

    #[test]
    fn partial_pages_of_ram_are_not_ram() {
        let r = Region {
            addr: 0x800,
            size: 0x2000,
            kind: RAM,
        };
        assert_eq!(r.ram_pages(), 1..2);
        let reserved = Region { kind: 2, ..r };
        assert!(reserved.ram_pages().is_empty());
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let mut m = fixture(1, b"", &[(0, 0x10_0000, RAM)]);
        assert!(parse(reader(&m), 0x1000, none).is_ok());
        assert_eq!(
            parse(reader(&fixture(0, b"", &[])), 0x1000, none).err(),
            Some(Error::NoMemoryMap(0, Some(Errno(38))))
        );
        assert_eq!(
            parse(reader(&fixture(1, b"", &[])), 0x1000, none).err(),
            Some(Error::NoMemoryMap(1, Some(Errno(38))))
        );
        assert_eq!(
            parse(reader(&fixture(1, b"", &[(0, 0x10_0000, 2)])), 0x1000, none).err(),
            Some(Error::NoRam)
        );
        assert_eq!(
            parse(reader(&m), 0x1_0000, none).err(),
            Some(Error::Unreadable(0x1_0000))
        );
        // Too many entries.
        m[0x1000 + 48..0x1000 + 52].copy_from_slice(&33u32.to_le_bytes());
        assert_eq!(
            parse(reader(&m), 0x1000, none).err(),
            Some(Error::TooManyEntries(33))
        );
        // The memory map pointing outside readable memory.
        m[0x1000 + 48..0x1000 + 52].copy_from_slice(&1u32.to_le_bytes());
        m[0x1000 + 40..0x1000 + 48].copy_from_slice(&0x1fffu64.to_le_bytes());
        assert_eq!(
            parse(reader(&m), 0x1000, none).err(),
            Some(Error::Unreadable(0x1fff))
        );
        m[0x1000] ^= 1;
        assert!(matches!(
            parse(reader(&m), 0x1000, none),
            Err(Error::BadMagic(_))
        ));
    }

    #[test]
    fn a_command_line_without_nul_is_cut_at_the_limit() {
        let long = vec![b'x'; 2000];
        let mut m = fixture(1, b"", &[(0, 0x10_0000, RAM)]);
        m.resize(0x4000, 0);
        m[0x1100..0x1100 + 2000].copy_from_slice(&long);
        // The map moved out of the command line's way.
        m[0x1000 + 40..0x1000 + 48].copy_from_slice(&0x3000u64.to_le_bytes());
        m[0x3000 + 8..0x3000 + 16].copy_from_slice(&0x10_0000u64.to_le_bytes());
        m[0x3000 + 16..0x3000 + 20].copy_from_slice(&RAM.to_le_bytes());
        let s = parse(reader(&m), 0x1000, none).unwrap();
        assert_eq!(s.cmdline().len(), CMDLINE_MAX);
    }

    #[test]
    fn without_a_map_of_its_own_the_map_comes_from_xenmem_memory_map() {
        let map = [
            (0, 0x9_f000, RAM),
            (0x10_0000, 0x1f0_0000, RAM),
            (0xfc00_0000, 0x1000, 2),
        ];
        // Version 0: 40 bytes; what follows in memory (here a stale v1-like map) is not read.
        let m = fixture(0, b"ip=dhcp", &[(0, 0x1000, RAM)]);
        let s = parse(reader(&m), 0x1000, e820(&map)).unwrap();
        assert_eq!(s.map_source, MapSource::Hypercall);
        assert_eq!(s.cmdline(), b"ip=dhcp");
        assert_eq!(s.regions().len(), 3);
        assert_eq!(s.ram_end(), 0x2000);
        let mut holes = [(0, 0); MAX_ENTRIES + 1];
        let n = s.holes(&mut holes);
        assert_eq!(&holes[..n], &[(0x9f, 0x100)]);
        // Version 1 with no entries: the same.
        let m = fixture(1, b"", &[]);
        let s = parse(reader(&m), 0x1000, e820(&map)).unwrap();
        assert_eq!(s.map_source, MapSource::Hypercall);
        // A map of its own wins.
        let m = fixture(1, b"", &[(0, 0x10_0000, RAM)]);
        let s = parse(
            reader(&m),
            0x1000,
            |_: &mut [E820Entry]| -> Result<usize, Errno> {
                panic!("asked XENMEM_memory_map with a map in hvm_start_info")
            },
        )
        .unwrap();
        assert_eq!(s.map_source, MapSource::StartInfo);
        // The hypercall's answers that give no RAM.
        let m = fixture(0, b"", &[]);
        assert_eq!(
            parse(reader(&m), 0x1000, e820(&[])).err(),
            Some(Error::NoMemoryMap(0, None))
        );
        assert_eq!(
            parse(reader(&m), 0x1000, e820(&[(0, 0x10_0000, 2)])).err(),
            Some(Error::NoRam)
        );
        // More entries than we keep: the first MAX_ENTRIES (Xen truncates to our count too).
        let many: Vec<(u64, u64, u32)> = (0..40).map(|i| (i * 0x10_0000, 0x10_0000, RAM)).collect();
        let s = parse(reader(&m), 0x1000, e820(&many)).unwrap();
        assert_eq!(s.regions().len(), MAX_ENTRIES);
        assert_eq!(s.ram_end(), MAX_ENTRIES as u64 * 0x100);
    }
}
