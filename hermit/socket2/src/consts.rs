//! hermit-abi's socket constants (the values xenrt's `hermit` crate takes, checked against
//! `hermit::sock::consts` by this crate's tests).
// The host build (tests only) has no socket calls, which use some of these.
#![cfg_attr(not(target_os = "hermit"), allow(dead_code))]

// hermit-abi 0.5's values (its `src/lib.rs`; also the libc crate's `src/hermit.rs`). Hermit's
// address families are not Linux's.
pub(crate) const AF_INET: i32 = 3;
pub(crate) const AF_INET6: i32 = 1;
pub(crate) const SOCK_STREAM: i32 = 1;
pub(crate) const SOCK_DGRAM: i32 = 2;
pub(crate) const SOCK_NONBLOCK: i32 = 0o4000;
pub(crate) const SOCK_CLOEXEC: i32 = 0o40000;
pub(crate) const IPPROTO_IP: i32 = 0;
pub(crate) const IPPROTO_TCP: i32 = 6;
pub(crate) const IPPROTO_UDP: i32 = 17;
pub(crate) const IPPROTO_IPV6: i32 = 41;
pub(crate) const SOL_SOCKET: i32 = 4095;
pub(crate) const SO_REUSEADDR: i32 = 0x0004;
pub(crate) const SO_KEEPALIVE: i32 = 0x0008;
pub(crate) const SO_BROADCAST: i32 = 0x0020;
pub(crate) const SO_LINGER: i32 = 0x0080;
pub(crate) const SO_SNDBUF: i32 = 0x1001;
pub(crate) const SO_RCVBUF: i32 = 0x1002;
pub(crate) const SO_ERROR: i32 = 0x1007;
pub(crate) const TCP_NODELAY: i32 = 1;
pub(crate) const IP_TOS: i32 = 1;
pub(crate) const IP_TTL: i32 = 2;
pub(crate) const IPV6_V6ONLY: i32 = 27;
pub(crate) const SHUT_RD: i32 = 0;
pub(crate) const SHUT_WR: i32 = 1;
pub(crate) const SHUT_RDWR: i32 = 2;
/// (Checked against hermit's in the tests; nothing here returns it now.)
#[cfg(test)]
pub(crate) const EOPNOTSUPP: i32 = 95;
pub(crate) const F_GETFL: i32 = 3;
pub(crate) const O_NONBLOCK: i32 = 0o4000;
pub(crate) const FIONBIO: i32 = 0x8008667eu32 as i32;
