//! The C structures std and mio hand to the socket calls, as hermit-abi 0.5.2 defines them
//! (`src/lib.rs`: `pollfd`, `linger`, `timeval`, `addrinfo`; the libc crate's `src/hermit.rs`
//! agrees). `sockaddr_in`/`sockaddr_in6` are read and written as bytes ([`crate::sock`]).
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
}
