//! The `extern "C"` socket calls of hermit-abi 0.5 (`sys_socket`, `sys_accept`, `sys_poll`,
//! ...): raw pointers from std and mio are checked and turned into slices and values here, then
//! [`crate::sockets`] does the work. Return convention (hermit-abi's, what std's `cvt` and
//! mio's `syscall!` expect): a negative return is `-errno`, and the errno is also kept for
//! `sys_get_errno`.
#![allow(unsafe_code)]

use core::ffi::{c_char, c_void, CStr};

use crate::layout::{Addrinfo, Pollfd};
use net::smoltcp::wire::{IpAddress, IpEndpoint};

use crate::sock::{consts::*, decode_addr, encode_addr, errno::*, numeric_host};
use crate::sockets::{Res, Sockets};

/// The socket layer's state.
struct Global(Sockets);

// SAFETY: xenrt runs std programs on one vCPU, and every socket call below runs inside a
// runtime section (`preempt::enter`: the scheduler does not preempt it); no socket call runs
// from an event handler. A call switches threads only where it waits (`wait::until` parks the
// thread), and it holds no borrow of `Sockets`' cells there (each is borrowed for a moment:
// see `Sockets`). So no cell is ever borrowed by two threads at once.
unsafe impl Sync for Global {}

static STATE: Global = Global(Sockets::new());

/// Runs a socket call. Any call may make another thread's wait end without an event (data
/// queued to a loopback peer, an eventfd written, a descriptor closed), so each tells the
/// scheduler that parked threads should re-check.
fn with<T>(f: impl FnOnce(&Sockets) -> Res<T>) -> Res<T> {
    crate::abi_thread::set_pump(pump);
    let r = f(&STATE.0);
    crate::abi_thread::note_change();
    r
}

/// A result as hermit-abi returns it (setting the errno on failure).
fn ret(r: Res<i32>) -> i32 {
    r.unwrap_or_else(|e| crate::errno::fail(e) as i32)
}

fn ret_size(r: Res<usize>) -> isize {
    match r {
        Ok(n) => n as isize,
        Err(e) => crate::errno::fail(e),
    }
}

/// Whether `fd` is a socket or eventfd (for `sys_read`/`sys_write`, which also serve the
/// console).
pub fn is_socket(fd: i32) -> bool {
    STATE.0.is_open(fd)
}

/// Runs the stack once if it is up (the scheduler's network pump, see `abi_thread::set_pump`);
/// when it next needs to run without an event.
fn pump() -> Option<u64> {
    STATE.0.pump()
}

/// Brings the stack up (`sys_network_init`): 0 or `-errno`.
pub fn network_init() -> i32 {
    ret(with(|s| s.bring_up()))
}

/// `read` on a file, socket or eventfd.
pub fn read(fd: i32, buf: &mut [u8]) -> isize {
    ret_size(with(|s| s.read(fd, buf)))
}

/// An open file under a new descriptor of the one table (for `sys_open`).
pub fn insert_file(f: crate::fs::OpenFile) -> Res<i32> {
    with(|s| s.insert_file(f))
}

/// `f` on the open file under `fd`; `not_file` for the console, a socket or an eventfd (`f`
/// is not called on them).
pub fn with_file<T>(
    fd: i32,
    not_file: i32,
    f: impl FnOnce(&mut crate::fs::OpenFile) -> Res<T>,
) -> Res<T> {
    if (0..=2).contains(&fd) {
        return Err(not_file);
    }
    with(|s| s.with_file(fd, not_file, f))
}

/// `fstat(fd)`: the console's descriptors are character devices.
pub fn fstat(fd: i32) -> Res<crate::layout::Stat> {
    if (0..=2).contains(&fd) {
        return Ok(crate::layout::Stat {
            st_mode: 0o2_0000 | 0o620,
            ..Default::default()
        });
    }
    with(|s| s.fstat(fd))
}

/// `write` on a socket or eventfd.
pub fn write(fd: i32, data: &[u8]) -> isize {
    ret_size(with(|s| s.write(fd, data)))
}

/// The bytes of a socket address from std.
///
/// # Safety
/// `addr` is valid for `len` bytes.
unsafe fn addr_bytes<'a>(addr: *const u8, len: u32) -> Res<&'a [u8]> {
    if addr.is_null() {
        return Err(EFAULT);
    }
    // SAFETY: the caller's guarantee.
    Ok(unsafe { core::slice::from_raw_parts(addr, len as usize) })
}

/// Writes `bytes` to a caller's address buffer of `*len` bytes (truncated to it), and the full
/// length into `*len`, as POSIX says.
///
/// # Safety
/// `addr` is null or valid for `*len` bytes; `len` is null or valid.
unsafe fn put_addr(bytes: &[u8], addr: *mut u8, len: *mut u32) {
    if addr.is_null() || len.is_null() {
        return;
    }
    // SAFETY: the caller's guarantee.
    unsafe {
        let room = (*len as usize).min(bytes.len());
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr, room);
        *len = bytes.len() as u32;
    }
}

#[no_mangle]
pub extern "C" fn sys_socket(domain: i32, ty: i32, protocol: i32) -> i32 {
    let _k = crate::preempt::enter();
    ret(with(|s| s.socket(domain, ty, protocol)))
}

/// # Safety
/// `name` is valid for `namelen` bytes.
#[no_mangle]
pub unsafe extern "C" fn sys_bind(fd: i32, name: *const u8, namelen: u32) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let b = unsafe { addr_bytes(name, namelen) };
    ret(b
        .and_then(decode_addr)
        .and_then(|a| with(|s| s.bind(fd, a))))
}

#[no_mangle]
pub extern "C" fn sys_listen(fd: i32, backlog: i32) -> i32 {
    let _k = crate::preempt::enter();
    ret(with(|s| s.listen(fd, backlog)))
}

/// # Safety
/// `addr` is null or valid for `*addrlen` bytes; `addrlen` is null or valid.
#[no_mangle]
pub unsafe extern "C" fn sys_accept(fd: i32, addr: *mut u8, addrlen: *mut u32) -> i32 {
    let _k = crate::preempt::enter();
    ret(with(|s| s.accept(fd)).map(|(new, peer)| {
        if let Some(p) = peer {
            // SAFETY: the caller's guarantee.
            unsafe { put_addr(&encode_addr(&p), addr, addrlen) };
        }
        new
    }))
}

/// # Safety
/// `name` is valid for `namelen` bytes.
#[no_mangle]
pub unsafe extern "C" fn sys_connect(fd: i32, name: *const u8, namelen: u32) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let b = unsafe { addr_bytes(name, namelen) };
    ret(b
        .and_then(decode_addr)
        .and_then(|a| with(|s| s.connect(fd, a))))
}

/// # Safety
/// `buf` is valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sys_recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize {
    let _k = crate::preempt::enter();
    if buf.is_null() && len > 0 {
        return crate::errno::fail(EFAULT);
    }
    let b: &mut [u8] = if len == 0 {
        &mut []
    } else {
        // SAFETY: the caller passes a writable buffer of len bytes.
        unsafe { core::slice::from_raw_parts_mut(buf, len) }
    };
    ret_size(with(|s| s.recv(fd, b, flags)))
}

/// # Safety
/// `buf` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sys_send(fd: i32, buf: *const c_void, len: usize, flags: i32) -> isize {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let b = unsafe { data_bytes(buf, len) };
    ret_size(b.and_then(|b| with(|s| no_send_flags(s, flags).and_then(|()| s.send(fd, b)))))
}

/// # Safety
/// `buf` is valid for writing `len` bytes; `addr` is null or valid for `*addrlen` bytes;
/// `addrlen` is null or valid.
#[no_mangle]
pub unsafe extern "C" fn sys_recvfrom(
    fd: i32,
    buf: *mut u8,
    len: usize,
    flags: i32,
    addr: *mut u8,
    addrlen: *mut u32,
) -> isize {
    let _k = crate::preempt::enter();
    if buf.is_null() && len > 0 {
        return crate::errno::fail(EFAULT);
    }
    let b: &mut [u8] = if len == 0 {
        &mut []
    } else {
        // SAFETY: the caller passes a writable buffer of len bytes.
        unsafe { core::slice::from_raw_parts_mut(buf, len) }
    };
    ret_size(with(|s| s.recv_from(fd, b, flags)).map(|(n, from)| {
        match from {
            // SAFETY: the caller's guarantee.
            Some(f) => unsafe { put_addr(&encode_addr(&f), addr, addrlen) },
            // No address (a stream): an empty one, as Linux gives.
            None if !addrlen.is_null() => {
                // SAFETY: the caller's guarantee.
                unsafe { addrlen.write(0) }
            }
            None => {}
        }
        n
    }))
}

/// # Safety
/// `buf` is valid for `len` bytes; `to` is valid for `tolen` bytes.
#[no_mangle]
pub unsafe extern "C" fn sys_sendto(
    fd: i32,
    buf: *const c_void,
    len: usize,
    flags: i32,
    to: *const u8,
    tolen: u32,
) -> isize {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let b = unsafe { data_bytes(buf, len) };
    // A null destination is send's (POSIX: ignored on a connected socket).
    let dest = if to.is_null() {
        Ok(None)
    } else {
        // SAFETY: the caller's guarantee.
        unsafe { addr_bytes(to, tolen) }
            .and_then(decode_addr)
            .map(Some)
    };
    ret_size(b.and_then(|b| {
        dest.and_then(|d| with(|s| no_send_flags(s, flags).and_then(|()| s.send_to(fd, b, d))))
    }))
}

/// The bytes to send.
///
/// # Safety
/// `buf` is valid for `len` bytes.
unsafe fn data_bytes<'a>(buf: *const c_void, len: usize) -> Res<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(EFAULT);
    }
    // SAFETY: the caller passes a buffer of len bytes.
    Ok(unsafe { core::slice::from_raw_parts(buf.cast(), len) })
}

/// std and mio pass no send flags on hermit (`MSG_NOSIGNAL` is 0 there); any other is refused.
fn no_send_flags(s: &Sockets, flags: i32) -> Res<()> {
    if flags == 0 {
        Ok(())
    } else {
        Err(s.unsupported("send flags", EOPNOTSUPP))
    }
}

#[no_mangle]
pub extern "C" fn sys_close(fd: i32) -> i32 {
    let _k = crate::preempt::enter();
    if (0..=2).contains(&fd) {
        return 0;
    }
    ret(with(|s| s.close(fd)))
}

#[no_mangle]
pub extern "C" fn sys_dup(fd: i32) -> i32 {
    let _k = crate::preempt::enter();
    ret(with(|s| s.dup(fd)))
}

#[no_mangle]
pub extern "C" fn sys_shutdown(fd: i32, how: i32) -> i32 {
    let _k = crate::preempt::enter();
    ret(with(|s| s.shutdown(fd, how)))
}

/// # Safety
/// `optval` is valid for `optlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn sys_setsockopt(
    fd: i32,
    level: i32,
    name: i32,
    optval: *const c_void,
    optlen: u32,
) -> i32 {
    let _k = crate::preempt::enter();
    // SAFETY: the caller's guarantee.
    let v = unsafe { addr_bytes(optval.cast(), optlen) };
    ret(v.and_then(|v| with(|s| s.setsockopt(fd, level, name, v))))
}

/// # Safety
/// `optval` is valid for `*optlen` bytes; `optlen` is valid.
#[no_mangle]
pub unsafe extern "C" fn sys_getsockopt(
    fd: i32,
    level: i32,
    name: i32,
    optval: *mut c_void,
    optlen: *mut u32,
) -> i32 {
    let _k = crate::preempt::enter();
    if optval.is_null() || optlen.is_null() {
        return crate::errno::fail(EFAULT) as i32;
    }
    ret(with(|s| s.getsockopt(fd, level, name)).map(|v| {
        // SAFETY: the caller's guarantee.
        unsafe { put_addr(&v, optval.cast(), optlen) };
        0
    }))
}

/// # Safety
/// `name` is null or valid for `*namelen` bytes; `namelen` is null or valid.
#[no_mangle]
pub unsafe extern "C" fn sys_getpeername(fd: i32, name: *mut u8, namelen: *mut u32) -> i32 {
    let _k = crate::preempt::enter();
    ret(with(|s| s.peer(fd)).map(|a| {
        // SAFETY: the caller's guarantee.
        unsafe { put_addr(&encode_addr(&a), name, namelen) };
        0
    }))
}

/// # Safety
/// `name` is null or valid for `*namelen` bytes; `namelen` is null or valid.
#[no_mangle]
pub unsafe extern "C" fn sys_getsockname(fd: i32, name: *mut u8, namelen: *mut u32) -> i32 {
    let _k = crate::preempt::enter();
    ret(with(|s| s.local(fd)).map(|a| {
        // SAFETY: the caller's guarantee.
        unsafe { put_addr(&encode_addr(&a), name, namelen) };
        0
    }))
}

#[no_mangle]
pub extern "C" fn sys_fcntl(fd: i32, cmd: i32, arg: i32) -> i32 {
    let _k = crate::preempt::enter();
    ret(with(|s| s.fcntl(fd, cmd, arg)))
}

/// # Safety
/// For `FIONBIO`, `argp` points at an `int`.
#[no_mangle]
pub unsafe extern "C" fn sys_ioctl(fd: i32, cmd: i32, argp: *mut c_void) -> i32 {
    let _k = crate::preempt::enter();
    if cmd != FIONBIO {
        return ret(Err(with(|s| {
            Err::<(), _>(s.unsupported("ioctl other than FIONBIO", EINVAL))
        })
        .unwrap_err()));
    }
    if argp.is_null() {
        return crate::errno::fail(EFAULT) as i32;
    }
    // SAFETY: FIONBIO's argument is an int.
    let on = unsafe { argp.cast::<i32>().read() } != 0;
    ret(with(|s| s.set_nonblocking(fd, on)))
}

#[no_mangle]
pub extern "C" fn sys_eventfd(initval: u64, flags: i16) -> i32 {
    let _k = crate::preempt::enter();
    ret(with(|s| s.eventfd(initval, flags)))
}

/// # Safety
/// `fds` is valid for `nfds` entries.
#[no_mangle]
pub unsafe extern "C" fn sys_poll(fds: *mut Pollfd, nfds: usize, timeout: i32) -> i32 {
    let _k = crate::preempt::enter();
    if fds.is_null() && nfds > 0 {
        return crate::errno::fail(EFAULT) as i32;
    }
    let f: &mut [Pollfd] = if nfds == 0 {
        &mut []
    } else {
        // SAFETY: the caller passes nfds entries.
        unsafe { core::slice::from_raw_parts_mut(fds, nfds) }
    };
    ret(with(|s| s.poll(f, timeout)))
}

/// `getaddrinfo`: numeric hosts and `localhost` at once; other names through our DNS client
/// ([`Sockets::lookup`]: the thread parks while the stack asks the server). One `addrinfo` per
/// address, with the numeric service's port, the hints' socket type and protocol. `EAI_FAMILY`
/// for a numeric host of another family than the hints ask.
///
/// # Safety
/// `nodename`/`servname` are null or C strings; `hints` is null or valid; `res` is valid.
#[no_mangle]
pub unsafe extern "C" fn sys_getaddrinfo(
    nodename: *const c_char,
    servname: *const c_char,
    hints: *const Addrinfo,
    res: *mut *mut Addrinfo,
) -> i32 {
    let _k = crate::preempt::enter();
    if res.is_null() {
        return EAI_FAMILY;
    }
    // SAFETY: null or C strings (the caller's guarantee).
    let node = (!nodename.is_null()).then(|| unsafe { CStr::from_ptr(nodename) });
    // SAFETY: as above.
    let serv = (!servname.is_null()).then(|| unsafe { CStr::from_ptr(servname) });
    let Ok(node) = node.map(CStr::to_str).transpose() else {
        return EAI_NONAME;
    };
    let port = match serv.map(CStr::to_str) {
        None => 0,
        Some(Ok(p)) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => return EAI_SERVICE,
        },
        Some(Err(_)) => return EAI_SERVICE,
    };
    // SAFETY: null or valid (the caller's guarantee).
    let hints = (!hints.is_null()).then(|| unsafe { hints.read() });
    let want = hints.map_or(AF_UNSPEC, |h| h.ai_family);
    let family_of = |a: &IpAddress| match a {
        IpAddress::Ipv4(_) => AF_INET,
        IpAddress::Ipv6(_) => AF_INET6,
    };
    let addrs = match numeric_host(node) {
        Some(a) if want != AF_UNSPEC && want != family_of(&a) => return EAI_FAMILY,
        Some(a) => alloc::vec![a],
        None => match with(|s| Ok(s.lookup(node.unwrap_or(""), want))) {
            Ok(Ok(a)) => a,
            Ok(Err(code)) | Err(code) => return code,
        },
    };
    // Built from the last, so each node points at the next.
    let mut list: *mut Addrinfo = core::ptr::null_mut();
    for a in addrs.iter().rev() {
        let bytes = encode_addr(&IpEndpoint::new(*a, port));
        let sa = alloc::boxed::Box::into_raw(bytes.into_boxed_slice());
        let ai = Addrinfo {
            ai_flags: 0,
            ai_family: family_of(a),
            ai_socktype: hints.map_or(SOCK_STREAM, |h| h.ai_socktype),
            ai_protocol: hints.map_or(0, |h| h.ai_protocol),
            ai_addrlen: sa.len() as u32,
            ai_canonname: core::ptr::null_mut(),
            ai_addr: sa.cast(),
            ai_next: list,
        };
        list = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(ai));
    }
    // SAFETY: res is valid for writing (the caller's guarantee).
    unsafe { res.write(list) };
    0
}

/// # Safety
/// `ai` is null or a list from `sys_getaddrinfo`, freed once.
#[no_mangle]
pub unsafe extern "C" fn sys_freeaddrinfo(ai: *mut Addrinfo) {
    let _k = crate::preempt::enter();
    let mut p = ai;
    while !p.is_null() {
        // SAFETY: p came from Box::into_raw in sys_getaddrinfo, and its address from a boxed
        // slice of ai_addrlen bytes.
        unsafe {
            let a = alloc::boxed::Box::from_raw(p);
            let sa = core::ptr::slice_from_raw_parts_mut(a.ai_addr, a.ai_addrlen as usize);
            drop(alloc::boxed::Box::from_raw(sa));
            p = a.ai_next;
        }
    }
}

/// `getaddrbyname(name, inaddr, len)`, hermit-abi's older lookup: the first address of `name`
/// (numeric, `localhost`, or through our DNS client) into `inaddr`, an `in_addr` (`len` 4:
/// IPv4) or `in6_addr` (16: IPv6) in network byte order. 0, or `-EINVAL` (bad pointer or
/// length), `-ENOENT` (no such name or no address of that family), `-EAGAIN` (no answer in
/// time, or no DNS server yet).
///
/// # Safety
/// `name` is a C string; `inaddr` is valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sys_getaddrbyname(
    name: *const c_char,
    inaddr: *mut u8,
    len: usize,
) -> i32 {
    let _k = crate::preempt::enter();
    if name.is_null() || inaddr.is_null() {
        return crate::errno::fail(EINVAL) as i32;
    }
    let family = match len {
        4 => AF_INET,
        16 => AF_INET6,
        _ => return crate::errno::fail(EINVAL) as i32,
    };
    // SAFETY: a C string (the caller's guarantee).
    let Ok(node) = unsafe { CStr::from_ptr(name) }.to_str() else {
        return crate::errno::fail(EINVAL) as i32;
    };
    let found = match numeric_host(Some(node)) {
        Some(a) => Ok(alloc::vec![a]),
        None => with(|s| Ok(s.lookup(node, family))).and_then(|r| r),
    };
    let addrs = match found {
        Ok(a) => a,
        Err(EAI_NONAME) => return crate::errno::fail(ENOENT) as i32,
        Err(_) => return crate::errno::fail(EAGAIN) as i32,
    };
    let bytes: alloc::vec::Vec<u8> = match addrs.iter().find_map(|a| match (a, family) {
        (IpAddress::Ipv4(v4), AF_INET) => Some(v4.octets().to_vec()),
        (IpAddress::Ipv6(v6), AF_INET6) => Some(v6.octets().to_vec()),
        _ => None,
    }) {
        Some(b) => b,
        None => return crate::errno::fail(ENOENT) as i32,
    };
    // SAFETY: inaddr is valid for len bytes, and bytes.len() == len.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), inaddr, len) };
    0
}
