//! The crate's only `unsafe` code: ioctls std has no API for (the card admits no libc crate;
//! musl and glibc both export `ioctl`).
//!
//! - `TUNSETIFF` on `/dev/net/tun`: names the activator's TAP device ([`crate::tap`]).
//! - `SIOCGIFFLAGS`/`SIOCSIFFLAGS`, `SIOCGIFINDEX`, `SIOCBRADDIF`/`SIOCBRDELIF` on any socket:
//!   a vif up or down, and in or out of its bridge ([`crate::hotplug`]; what `ip link set` and
//!   `brctl addif`/`delif` do).
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

const SIOCGIFFLAGS: c_ulong = 0x8913;
const SIOCSIFFLAGS: c_ulong = 0x8914;
const SIOCGIFINDEX: c_ulong = 0x8933;
const SIOCBRADDIF: c_ulong = 0x89a2;
const SIOCBRDELIF: c_ulong = 0x89a3;
const IFF_UP: i16 = 0x0001;

/// `struct ifreq` with the union's `int` member (`ifr_ifindex`).
#[repr(C)]
struct IfReqIndex {
    name: [u8; 16],
    index: c_int,
    _pad: [u8; 20],
}

/// `name` as `ifr_name`: refused (not cut) if it does not fit, so no other interface is touched.
fn ifr_name(name: &str) -> io::Result<[u8; 16]> {
    if name.is_empty() || name.len() > 15 || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not an interface name"),
        ));
    }
    let mut n = [0u8; 16];
    n[..name.len()].copy_from_slice(name.as_bytes());
    Ok(n)
}

/// Sets (`up`) or clears interface `name`'s IFF_UP flag, keeping its other flags; `sock` is any
/// socket (the ioctls only need one to reach the network stack).
pub fn set_link_up(sock: &impl AsRawFd, name: &str, up: bool) -> io::Result<()> {
    let mut req = IfReq {
        name: ifr_name(name)?,
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of one `struct ifreq`, which `req`
    // is (40 bytes, C layout, checked below); the fd is open for the call's duration.
    if unsafe { ioctl(sock.as_raw_fd(), SIOCGIFFLAGS, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if up {
        req.flags | IFF_UP
    } else {
        req.flags & !IFF_UP
    };
    if flags == req.flags {
        return Ok(());
    }
    req.flags = flags;
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { ioctl(sock.as_raw_fd(), SIOCSIFFLAGS, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The index of interface `name`.
pub fn if_index(sock: &impl AsRawFd, name: &str) -> io::Result<c_int> {
    let mut req = IfReqIndex {
        name: ifr_name(name)?,
        index: 0,
        _pad: [0; 20],
    };
    // SAFETY: SIOCGIFINDEX reads the name and writes the index of one `struct ifreq`, which `req`
    // is (40 bytes, C layout, index at 16, checked below); the fd is open for the call.
    if unsafe { ioctl(sock.as_raw_fd(), SIOCGIFINDEX, &mut req as *mut IfReqIndex) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req.index)
}

/// Adds (`add`) the interface with index `port` to bridge `bridge`, or removes it.
pub fn bridge_port(sock: &impl AsRawFd, bridge: &str, port: c_int, add: bool) -> io::Result<()> {
    let mut req = IfReqIndex {
        name: ifr_name(bridge)?,
        index: port,
        _pad: [0; 20],
    };
    let op = if add { SIOCBRADDIF } else { SIOCBRDELIF };
    // SAFETY: SIOCBRADDIF/SIOCBRDELIF read one `struct ifreq` (the bridge's name and the port's
    // index), which `req` is (checked below); the fd is open for the call.
    if unsafe { ioctl(sock.as_raw_fd(), op, &mut req as *mut IfReqIndex) } < 0 {
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
        assert_eq!(std::mem::offset_of!(IfReq, flags), 16);
        assert_eq!(std::mem::size_of::<IfReqIndex>(), 40);
        assert_eq!(std::mem::offset_of!(IfReqIndex, index), 16);
        assert_eq!(std::mem::size_of::<PrivcmdHypercall>(), 48);
        assert_eq!(std::mem::size_of::<Domctl>(), 144);
        assert_eq!(std::mem::offset_of!(Domctl, domain), 8);
        assert_eq!(std::mem::offset_of!(Domctl, u), 16);
        assert_eq!(IOCTL_PRIVCMD_HYPERCALL, 0x0030_5000);
    }

    #[test]
    fn interface_names_are_refused_not_cut() {
        assert_eq!(&ifr_name("vif5.0").unwrap()[..7], b"vif5.0\0");
        assert!(ifr_name("").is_err());
        assert!(ifr_name("a-name-of-16-chr").is_err());
        assert!(ifr_name("a\0b").is_err());
        assert!(ifr_name("fifteen-chars-x").is_ok());
    }

    #[test]
    fn a_missing_interface_is_enodev() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = if_index(&s, "xrt-none0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(19)); // ENODEV
        assert!(if_index(&s, "lo").unwrap() > 0);
    }
}
