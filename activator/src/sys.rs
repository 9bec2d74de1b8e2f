//! The crate's only `unsafe` code: two ioctls std has no API for (the card admits no libc crate;
//! musl and glibc both export `ioctl`).
//!
//! - `TUNSETIFF` on `/dev/net/tun`: names the activator's TAP device ([`crate::tap`]).
//! - `IOCTL_PRIVCMD_HYPERCALL` on `/dev/xen/privcmd`: `XEN_DOMCTL_pausedomain` and
//!   `XEN_DOMCTL_unpausedomain`, what `xl pause`/`xl unpause` end in, without starting an `xl`
//!   process (hundreds of ms in the lab's emulated dom0: the whole latency of a pre-booted start).
//!   A Xen whose domctl interface is not the one below refuses the call (`EACCES`); the caller
//!   then falls back to `xl`.

use std::ffi::{c_int, c_ulong};
use std::io;
use std::os::fd::AsRawFd;

extern "C" {
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
}

const TUNSETIFF: c_ulong = 0x4004_54ca;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (the union's first member).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Makes the TUN fd a TAP device named `name` (no packet-information header).
pub fn tunsetiff_tap(fd: c_int, name: &str) -> io::Result<()> {
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    let n = name.len().min(15);
    req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is (40 bytes, C
    // layout, checked below), and the fd is open for the call's duration.
    let rc = unsafe { ioctl(fd, TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `_IOC(_IOC_NONE, 'P', 0, sizeof(struct privcmd_hypercall))` (Linux's xen/privcmd.h).
const IOCTL_PRIVCMD_HYPERCALL: c_ulong = (48 << 16) | (0x50 << 8);
const HYPERVISOR_DOMCTL: u64 = 36;
/// Xen 4.17's `XEN_DOMCTL_INTERFACE_VERSION`.
const DOMCTL_VERSION: u32 = 0x15;
const DOMCTL_PAUSEDOMAIN: u32 = 3;
const DOMCTL_UNPAUSEDOMAIN: u32 = 4;

/// `struct privcmd_hypercall`.
#[repr(C)]
struct PrivcmdHypercall {
    op: u64,
    arg: [u64; 5],
}

/// `struct xen_domctl`: the header, then the 128-byte union (8-byte aligned) pause and unpause
/// leave empty.
#[repr(C, align(8))]
struct Domctl {
    cmd: u32,
    interface_version: u32,
    domain: u16,
    _pad: [u16; 3],
    u: [u8; 128],
}

/// Pauses (`pause`) or unpauses domain `domid` through `privcmd` (an open `/dev/xen/privcmd`).
pub fn pause_domain(privcmd: &std::fs::File, domid: u32, pause: bool) -> io::Result<()> {
    let domain = u16::try_from(domid).map_err(|_| io::Error::other("domid out of range"))?;
    let mut d = Box::new(Domctl {
        cmd: if pause {
            DOMCTL_PAUSEDOMAIN
        } else {
            DOMCTL_UNPAUSEDOMAIN
        },
        interface_version: DOMCTL_VERSION,
        domain,
        _pad: [0; 3],
        u: [0; 128],
    });
    let mut h = PrivcmdHypercall {
        op: HYPERVISOR_DOMCTL,
        arg: [&mut *d as *mut Domctl as u64, 0, 0, 0, 0],
    };
    // SAFETY: the hypercall reads and writes the one `xen_domctl` that `d` points to (144 bytes,
    // C layout, checked below; written by us just now, so resident for Xen's copy), and
    // IOCTL_PRIVCMD_HYPERCALL reads the `privcmd_hypercall` `h`; both outlive the call.
    let rc = unsafe {
        ioctl(
            privcmd.as_raw_fd(),
            IOCTL_PRIVCMD_HYPERCALL,
            &mut h as *mut PrivcmdHypercall,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structs_have_the_abis_layouts() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<PrivcmdHypercall>(), 48);
        assert_eq!(std::mem::size_of::<Domctl>(), 144);
        assert_eq!(std::mem::offset_of!(Domctl, domain), 8);
        assert_eq!(std::mem::offset_of!(Domctl, u), 16);
        assert_eq!(IOCTL_PRIVCMD_HYPERCALL, 0x0030_5000);
    }
}
