//! The C structures std and mio hand to the socket and file calls, as hermit-abi 0.5.2 defines
//! them (`src/lib.rs`: `pollfd`, `linger`, `timeval`, `addrinfo`, `stat`, `dirent64`; the libc
//! crate's `src/hermit.rs` agrees for the socket ones). `sockaddr_in`/`sockaddr_in6` are read and
//! written as bytes ([`crate::sock`]), and so are `dirent64` records ([`crate::fs`]).
#![allow(missing_docs)]

use core::ffi::c_char;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Pollfd {
    pub fd: i32,
    pub events: i16,
    pub revents: i16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Linger {
    pub l_onoff: i32,
    pub l_linger: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeval {
    pub tv_sec: i64,
    pub tv_usec: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Addrinfo {
    pub ai_flags: i32,
    pub ai_family: i32,
    pub ai_socktype: i32,
    pub ai_protocol: i32,
    pub ai_addrlen: u32,
    pub ai_canonname: *mut c_char,
    pub ai_addr: *mut u8,
    pub ai_next: *mut Addrinfo,
}

/// A `sockaddr_storage` (128 bytes, 8-aligned): room for either address.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct SockaddrStorage(pub [u8; 128]);

/// hermit-abi's `timespec` inside a `stat` (`tv_sec: time_t = i64`, `tv_nsec: i32`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatTime {
    pub tv_sec: i64,
    pub tv_nsec: i32,
}

/// hermit-abi's `stat` (what `sys_stat`, `sys_lstat` and `sys_fstat` fill in).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub st_dev: u64,
    pub st_ino: u64,
    pub st_nlink: u64,
    pub st_mode: u32,
    pub st_uid: u32,
    pub st_gid: u32,
    pub st_rdev: u64,
    pub st_size: i64,
    pub st_blksize: i64,
    pub st_blocks: i64,
    pub st_atim: StatTime,
    pub st_mtim: StatTime,
    pub st_ctim: StatTime,
}

/// hermit-abi's `dirent64`, for its layout only: `sys_getdents64` writes variable-length records
/// (the header, the name and its NUL, rounded up to 8 bytes) as bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Dirent64 {
    pub d_ino: u64,
    pub d_off: i64,
    pub d_reclen: u16,
    pub d_type: u8,
    pub d_name: [c_char; 256],
}

/// Where a `dirent64`'s name starts (after `d_ino`, `d_off`, `d_reclen`, `d_type`).
pub const DIRENT64_NAME_OFFSET: usize = 19;

/// hermit-abi's `timespec`.
#[repr(C)]
pub struct Timespec {
    pub(crate) sec: i64,
    pub(crate) nsec: i32,
}

impl Timespec {
    /// The duration in nanoseconds (saturating); `None` if a field is negative.
    pub fn as_ns(&self) -> Option<u64> {
        if self.sec < 0 || self.nsec < 0 {
            return None;
        }
        Some(
            (self.sec as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(self.nsec as u64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    /// Sizes and offsets as the x86_64 C layout of hermit-abi 0.5.2's definitions gives them.
    #[test]
    fn layouts_match_hermit_abi() {
        assert_eq!(
            (
                size_of::<Pollfd>(),
                offset_of!(Pollfd, events),
                offset_of!(Pollfd, revents)
            ),
            (8, 4, 6)
        );
        assert_eq!(size_of::<Linger>(), 8);
        // hermit-abi's timespec: tv_sec i64, tv_nsec i32, padded to 16.
        assert_eq!((size_of::<Timespec>(), offset_of!(Timespec, nsec)), (16, 8));
        // timeval { tv_sec: time_t = i64, tv_usec: suseconds_t = i32 }: 16 with padding.
        assert_eq!(
            (size_of::<Timeval>(), offset_of!(Timeval, tv_usec)),
            (16, 8)
        );
        assert_eq!(offset_of!(Addrinfo, ai_addrlen), 16);
        assert_eq!(offset_of!(Addrinfo, ai_canonname), 24);
        assert_eq!(offset_of!(Addrinfo, ai_addr), 32);
        assert_eq!(offset_of!(Addrinfo, ai_next), 40);
        assert_eq!(size_of::<Addrinfo>(), 48);
        // sockaddr_storage { s2_len: u8, ss_family: u8, pad1: [u8; 6], align: i64, pad2: [u8; 112] }
        assert_eq!(
            (size_of::<SockaddrStorage>(), align_of::<SockaddrStorage>()),
            (128, 8)
        );
        // sockaddr_in / sockaddr_in6 (sizes the encoder uses).
        assert_eq!(crate::sock::SOCKADDR_IN_LEN, 1 + 1 + 2 + 4 + 8);
        assert_eq!(crate::sock::SOCKADDR_IN6_LEN, 1 + 1 + 2 + 4 + 16 + 4);
    }

    /// `stat` and `dirent64` as the x86_64 C layout of hermit-abi 0.5.2's definitions gives
    /// them (three u64, three u32 then padding to 8, u64, three i64, three 16-byte timespecs).
    #[test]
    fn file_layouts_match_hermit_abi() {
        assert_eq!((size_of::<StatTime>(), align_of::<StatTime>()), (16, 8));
        assert_eq!(offset_of!(Stat, st_ino), 8);
        assert_eq!(offset_of!(Stat, st_nlink), 16);
        assert_eq!(offset_of!(Stat, st_mode), 24);
        assert_eq!(offset_of!(Stat, st_uid), 28);
        assert_eq!(offset_of!(Stat, st_gid), 32);
        assert_eq!(offset_of!(Stat, st_rdev), 40);
        assert_eq!(offset_of!(Stat, st_size), 48);
        assert_eq!(offset_of!(Stat, st_blksize), 56);
        assert_eq!(offset_of!(Stat, st_blocks), 64);
        assert_eq!(offset_of!(Stat, st_atim), 72);
        assert_eq!(offset_of!(Stat, st_mtim), 88);
        assert_eq!(offset_of!(Stat, st_ctim), 104);
        assert_eq!((size_of::<Stat>(), align_of::<Stat>()), (120, 8));
        assert_eq!(offset_of!(Dirent64, d_off), 8);
        assert_eq!(offset_of!(Dirent64, d_reclen), 16);
        assert_eq!(offset_of!(Dirent64, d_type), 18);
        assert_eq!(offset_of!(Dirent64, d_name), DIRENT64_NAME_OFFSET);
        assert_eq!((size_of::<Dirent64>(), align_of::<Dirent64>()), (280, 8));
    }
}
