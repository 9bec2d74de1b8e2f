//! The FFI boundary: hermit-abi's `extern "C"` socket calls (implemented
//! by xenrt's `hermit` crate, `hermit/src/sys_net.rs`), wrapped as safe functions over file
//! descriptors. hermit-abi's return convention: a negative return is `-errno`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{SockAddr, Socket};

pub(crate) use crate::consts::*;

/// hermit-abi's `struct linger`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Linger {
    pub(crate) l_onoff: i32,
    pub(crate) l_linger: i32,
}

extern "C" {
    fn sys_socket(domain: i32, ty: i32, protocol: i32) -> i32;
    fn sys_bind(fd: i32, name: *const u8, namelen: u32) -> i32;
    fn sys_listen(fd: i32, backlog: i32) -> i32;
    fn sys_accept(fd: i32, addr: *mut u8, addrlen: *mut u32) -> i32;
    fn sys_connect(fd: i32, name: *const u8, namelen: u32) -> i32;
    fn sys_getsockname(fd: i32, name: *mut u8, namelen: *mut u32) -> i32;
    fn sys_getpeername(fd: i32, name: *mut u8, namelen: *mut u32) -> i32;
    fn sys_setsockopt(fd: i32, level: i32, name: i32, val: *const u8, len: u32) -> i32;
    fn sys_getsockopt(fd: i32, level: i32, name: i32, val: *mut u8, len: *mut u32) -> i32;
    fn sys_fcntl(fd: i32, cmd: i32, arg: i32) -> i32;
    fn sys_ioctl(fd: i32, cmd: i32, argp: *mut u8) -> i32;
    fn sys_shutdown(fd: i32, how: i32) -> i32;
    fn sys_dup(fd: i32) -> i32;
    fn sys_recvfrom(
        fd: i32,
        buf: *mut u8,
        len: usize,
        flags: i32,
        addr: *mut u8,
        addrlen: *mut u32,
    ) -> isize;
}

/// A hermit-abi return value as a result.
fn cvt(r: i32) -> io::Result<i32> {
    if r < 0 {
        Err(io::Error::from_raw_os_error(-r))
    } else {
        Ok(r)
    }
}

/// Takes ownership of a descriptor a call just returned.
fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned open by the runtime and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub(crate) fn socket(domain: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain integers.
    cvt(unsafe { sys_socket(domain, ty, protocol) }).map(owned)
}

pub(crate) fn bind(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    let b = addr.bytes();
    // SAFETY: `b` is valid for its length.
    cvt(unsafe { sys_bind(fd.as_raw_fd(), b.as_ptr(), b.len() as u32) }).map(drop)
}

pub(crate) fn connect(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    let b = addr.bytes();
    // SAFETY: `b` is valid for its length.
    cvt(unsafe { sys_connect(fd.as_raw_fd(), b.as_ptr(), b.len() as u32) }).map(drop)
}

pub(crate) fn listen(fd: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    // SAFETY: plain integers.
    cvt(unsafe { sys_listen(fd.as_raw_fd(), backlog) }).map(drop)
}

/// Runs a call that fills an address buffer, and decodes what it wrote.
fn with_addr<T>(
    f: impl FnOnce(*mut u8, *mut u32) -> i32,
    then: impl FnOnce(i32) -> T,
) -> io::Result<(T, SockAddr)> {
    let mut buf = [0u8; SockAddr::MAX_LEN];
    let mut len = buf.len() as u32;
    let r = cvt(f(buf.as_mut_ptr(), &mut len))?;
    let v = then(r);
    Ok((
        v,
        SockAddr::from_bytes(&buf[..(len as usize).min(buf.len())]),
    ))
}

pub(crate) fn accept(fd: BorrowedFd<'_>) -> io::Result<(OwnedFd, SockAddr)> {
    // SAFETY: the buffer and length are valid and the length says how big the buffer is.
    with_addr(|a, l| unsafe { sys_accept(fd.as_raw_fd(), a, l) }, owned)
}

pub(crate) fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    // SAFETY: as in `accept`.
    with_addr(
        |a, l| unsafe { sys_getsockname(fd.as_raw_fd(), a, l) },
        drop,
    )
    .map(|x| x.1)
}

/// The sender of the next datagram, left queued (`recvfrom` with `MSG_PEEK` into no buffer).
pub(crate) fn peek_sender(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    const MSG_PEEK: i32 = 1;
    // SAFETY: as in `accept`; an empty buffer (null, length 0) is allowed.
    with_addr(
        |a, l| unsafe {
            sys_recvfrom(fd.as_raw_fd(), core::ptr::null_mut(), 0, MSG_PEEK, a, l)
                .clamp(i32::MIN as isize, i32::MAX as isize) as i32
        },
        drop,
    )
    .map(|x| x.1)
}

pub(crate) fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    // SAFETY: as in `accept`.
    with_addr(
        |a, l| unsafe { sys_getpeername(fd.as_raw_fd(), a, l) },
        drop,
    )
    .map(|x| x.1)
}

/// An option value this crate sets or reads: plain integers and `linger`, as bytes.
pub(crate) trait Opt: Copy + Default {
    /// The value's bytes, as the C struct.
    fn to_bytes(self) -> Vec<u8>;
    /// The value from the bytes `getsockopt` wrote (missing bytes are zero).
    fn from_bytes(b: &[u8]) -> Self;
}

impl Opt for i32 {
    fn to_bytes(self) -> Vec<u8> {
        self.to_ne_bytes().to_vec()
    }
    fn from_bytes(b: &[u8]) -> i32 {
        let mut a = [0u8; 4];
        let n = b.len().min(4);
        a[..n].copy_from_slice(&b[..n]);
        i32::from_ne_bytes(a)
    }
}

impl Opt for Linger {
    fn to_bytes(self) -> Vec<u8> {
        let mut v = self.l_onoff.to_bytes();
        v.extend_from_slice(&self.l_linger.to_ne_bytes());
        v
    }
    fn from_bytes(b: &[u8]) -> Linger {
        Linger {
            l_onoff: i32::from_bytes(b),
            l_linger: i32::from_bytes(b.get(4..).unwrap_or(&[])),
        }
    }
}

pub(crate) fn setsockopt<T: Opt>(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    v: T,
) -> io::Result<()> {
    let b = v.to_bytes();
    // SAFETY: `b` is valid for its length.
    cvt(unsafe { sys_setsockopt(fd.as_raw_fd(), level, name, b.as_ptr(), b.len() as u32) })
        .map(drop)
}

pub(crate) fn getsockopt<T: Opt>(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<T> {
    let mut b = [0u8; 16];
    let mut len = b.len() as u32;
    // SAFETY: the buffer and length are valid and the length says how big the buffer is.
    cvt(unsafe { sys_getsockopt(fd.as_raw_fd(), level, name, b.as_mut_ptr(), &mut len) })?;
    Ok(T::from_bytes(&b[..(len as usize).min(b.len())]))
}

pub(crate) fn nonblocking(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: plain integers.
    let fl = cvt(unsafe { sys_fcntl(fd.as_raw_fd(), F_GETFL, 0) })?;
    Ok(fl & O_NONBLOCK != 0)
}

pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let mut v = i32::from(on).to_ne_bytes();
    // SAFETY: FIONBIO's argument is a valid int.
    cvt(unsafe { sys_ioctl(fd.as_raw_fd(), FIONBIO, v.as_mut_ptr()) }).map(drop)
}

pub(crate) fn shutdown(fd: BorrowedFd<'_>, how: i32) -> io::Result<()> {
    // SAFETY: plain integers.
    cvt(unsafe { sys_shutdown(fd.as_raw_fd(), how) }).map(drop)
}

pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: plain integers.
    cvt(unsafe { sys_dup(fd.as_raw_fd()) }).map(owned)
}

/// A [`Socket`] over a borrowed descriptor, for [`crate::SockRef`], which never drops it.
pub(crate) fn borrowed(fd: BorrowedFd<'_>) -> Socket {
    // SAFETY: SockRef keeps the Socket in a ManuallyDrop for no longer than the borrow, so the
    // descriptor is neither closed nor used after its owner closes it.
    Socket::from(unsafe { OwnedFd::from_raw_fd(fd.as_raw_fd()) })
}

impl FromRawFd for Socket {
    /// # Safety
    /// `fd` is an open socket descriptor that the new `Socket` owns (it closes it).
    unsafe fn from_raw_fd(fd: RawFd) -> Socket {
        // SAFETY: the caller's guarantee.
        Socket::from(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}
