//! Xenstore: the guest's client for the xenstore daemon, over the shared ring page.
//!
//! - [`wire`]: the message format and ring-page layout (pure parsing, fuzzed).
//! - [`ring`]: moving bytes through the two 1 KiB rings of the page, validating the peer's indices.
//! - [`Client`]: requests and replies (read, write, mkdir, rm, directory, permissions, watches,
//!   transactions with retry), watch events queued by token.
//! - `sim` (feature `sim`): a simulated xenstored speaking the real wire format from the other side of a
//!   [`ShMem`](crate::shmem::ShMem) page, with scripted peers and fault injection, for tests here
//!   and in the drivers.
//!
//! The only platform-specific part is the [`Transport`]: how to poke the peer and how to wait for
//! it. The client is blocking and single-threaded (one request outstanding at a time).
//!
//! Policy towards a misbehaving xenstored: nothing it sends can panic the guest. A malformed but
//! well-framed message fails the request it answers (or the poll that read it) with a typed
//! [`Error`]; a framing violation (bad ring indices, oversized length, a message cut off by a
//! timeout) leaves the byte stream out of step, so the client then refuses every later call with
//! [`Error::Broken`].

use core::fmt;

use crate::shmem::OutOfBounds;

pub mod client;
pub mod ring;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod wire;

#[cfg(test)]
mod tests;

pub use client::{Client, Op};

/// How the client reaches xenstored; the only thing that differs between Xen and the host.
///
/// On Xen, `notify` sends an event on the xenstore event channel (`start_info.store_evtchn`,
/// `EVTCHNOP_send`), and `wait` blocks the vCPU until an event arrives on that channel (or a
/// timer fires, so callers with deadlines get to check them), clears its pending bit and returns
/// `Ok`. Spurious returns are fine: the client re-checks the ring after every `wait`. `wait` may
/// return [`Error::TimedOut`] if the peer looks dead; the client then gives up the request.
///
/// On the host, `sim::Sim` (feature `sim`) implements it by running the simulated daemon one step per `wait`.
pub trait Transport {
    /// Tells the peer that the ring has new requests or free space for replies.
    fn notify(&mut self);
    /// Waits until the peer may have made progress.
    fn wait(&mut self) -> Result<(), Error>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn notify(&mut self) {
        (**self).notify()
    }
    fn wait(&mut self) -> Result<(), Error> {
        (**self).wait()
    }
}

/// A transaction id; [`Tx::NONE`] for operations outside any transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tx(pub u32);

impl Tx {
    /// No transaction.
    pub const NONE: Tx = Tx(0);
}

/// A watch firing: `path` changed, for the watch registered with `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed (relative if the watch was registered relative).
    pub path: alloc::string::String,
    /// The token given to [`Client::watch`].
    pub token: alloc::string::String,
}

/// What a domain may do with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermKind {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

/// One entry of a node's permission list. The first entry names the owner (who may do anything)
/// and the access of every domain not listed; later entries grant access to specific domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    /// The access granted.
    pub kind: PermKind,
    /// The domain it applies to.
    pub domid: u16,
}

/// An error string xenstored answers with (`xsd_errors` in xs_wire.h, plus `EQUOTA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XsErrno {
    /// `EINVAL`: invalid argument.
    Einval,
    /// `EACCES`: permission denied.
    Eacces,
    /// `EEXIST`: already exists.
    Eexist,
    /// `EISDIR`: is a directory.
    Eisdir,
    /// `ENOENT`: no such node.
    Enoent,
    /// `ENOMEM`: out of memory.
    Enomem,
    /// `ENOSPC`: no space.
    Enospc,
    /// `EIO`: I/O error.
    Eio,
    /// `ENOTEMPTY`: directory not empty.
    Enotempty,
    /// `ENOSYS`: operation not supported.
    Enosys,
    /// `EROFS`: read-only.
    Erofs,
    /// `EBUSY`: busy.
    Ebusy,
    /// `EAGAIN`: try again (a transaction conflicted).
    Eagain,
    /// `EISCONN`: already connected.
    Eisconn,
    /// `E2BIG`: too big.
    E2big,
    /// `EPERM`: operation not permitted.
    Eperm,
    /// `EQUOTA`: quota exceeded.
    Equota,
}

const ERRNO_NAMES: [(XsErrno, &str); 17] = [
    (XsErrno::Einval, "EINVAL"),
    (XsErrno::Eacces, "EACCES"),
    (XsErrno::Eexist, "EEXIST"),
    (XsErrno::Eisdir, "EISDIR"),
    (XsErrno::Enoent, "ENOENT"),
    (XsErrno::Enomem, "ENOMEM"),
    (XsErrno::Enospc, "ENOSPC"),
    (XsErrno::Eio, "EIO"),
    (XsErrno::Enotempty, "ENOTEMPTY"),
    (XsErrno::Enosys, "ENOSYS"),
    (XsErrno::Erofs, "EROFS"),
    (XsErrno::Ebusy, "EBUSY"),
    (XsErrno::Eagain, "EAGAIN"),
    (XsErrno::Eisconn, "EISCONN"),
    (XsErrno::E2big, "E2BIG"),
    (XsErrno::Eperm, "EPERM"),
    (XsErrno::Equota, "EQUOTA"),
];

impl XsErrno {
    /// The error for its wire name (`"ENOENT"`).
    pub fn from_name(s: &str) -> Option<Self> {
        ERRNO_NAMES.iter().find(|(_, n)| *n == s).map(|(e, _)| *e)
    }

    /// Its wire name.
    pub fn name(self) -> &'static str {
        ERRNO_NAMES
            .iter()
            .find(|(e, _)| *e == self)
            .map_or("EINVAL", |(_, n)| n)
    }
}

impl fmt::Display for XsErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong talking to xenstored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// xenstored refused the request.
    Xs(XsErrno),
    /// A message shorter than its header or its declared length.
    Truncated,
    /// A message declares a payload longer than XENSTORE_PAYLOAD_MAX.
    PayloadTooLarge(u32),
    /// Bytes after a message's declared payload.
    TrailingBytes(usize),
    /// A message type that xs_wire.h does not define.
    UnknownType(u32),
    /// A reply whose type is neither the request's nor XS_ERROR.
    UnexpectedType {
        /// The request's type.
        expected: u32,
        /// The reply's type.
        got: u32,
    },
    /// A reply to no outstanding request.
    UnexpectedReqId {
        /// The outstanding request's id (`None` when none was).
        expected: Option<u32>,
        /// The reply's id.
        got: u32,
    },
    /// A string in a payload without its terminating NUL.
    MissingNul,
    /// Text that is not UTF-8.
    NotUtf8,
    /// A NUL inside a single-string payload.
    Malformed,
    /// A number field that is not a decimal in range.
    BadNumber,
    /// A watch event payload that is not `path\0token\0`.
    BadWatchEvent,
    /// An XS_ERROR reply with an error string xs_wire.h does not define.
    UnknownErrno,
    /// A permission list that is empty or not `[nrwb]<domid>` strings.
    BadPerms,
    /// The peer's ring indices are more than a ring apart.
    BadRingIndex {
        /// The producer index read.
        prod: u32,
        /// The consumer index read.
        cons: u32,
    },
    /// A request payload longer than XENSTORE_PAYLOAD_MAX (the caller's mistake).
    RequestTooLarge(usize),
    /// A path or token containing a NUL, or empty (the caller's mistake).
    InvalidArgument,
    /// The shared page is smaller than `struct xenstore_domain_interface`.
    Shmem(OutOfBounds),
    /// The transport gave up waiting for the peer.
    TimedOut,
    /// An earlier framing violation left the ring out of step; the connection is unusable.
    Broken,
}

impl Error {
    /// True for errors after which the byte stream can no longer be trusted.
    pub fn breaks_stream(&self) -> bool {
        matches!(
            self,
            Error::PayloadTooLarge(_)
                | Error::BadRingIndex { .. }
                | Error::Shmem(_)
                | Error::Broken
        )
    }
}

impl From<OutOfBounds> for Error {
    fn from(e: OutOfBounds) -> Self {
        Error::Shmem(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Xs(e) => write!(f, "xenstored refused the request: {e}"),
            Error::Truncated => f.write_str("message shorter than its header or declared length"),
            Error::PayloadTooLarge(n) => {
                write!(
                    f,
                    "message declares a {n}-byte payload, over XENSTORE_PAYLOAD_MAX"
                )
            }
            Error::TrailingBytes(n) => write!(f, "{n} bytes after the message's payload"),
            Error::UnknownType(t) => write!(f, "unknown message type {t}"),
            Error::UnexpectedType { expected, got } => {
                write!(f, "reply of type {got} to a request of type {expected}")
            }
            Error::UnexpectedReqId {
                expected: Some(e),
                got,
            } => {
                write!(f, "reply id {got} while waiting for {e}")
            }
            Error::UnexpectedReqId {
                expected: None,
                got,
            } => {
                write!(f, "reply id {got} with no request outstanding")
            }
            Error::MissingNul => f.write_str("string without its terminating NUL"),
            Error::NotUtf8 => f.write_str("text is not UTF-8"),
            Error::Malformed => f.write_str("NUL inside a single-string payload"),
            Error::BadNumber => f.write_str("number field is not a decimal in range"),
            Error::BadWatchEvent => f.write_str("watch event is not path\\0token\\0"),
            Error::UnknownErrno => f.write_str("unknown xenstore error string"),
            Error::BadPerms => f.write_str("malformed permission list"),
            Error::BadRingIndex { prod, cons } => {
                write!(
                    f,
                    "peer ring indices prod {prod} cons {cons} are more than a ring apart"
                )
            }
            Error::RequestTooLarge(n) => {
                write!(f, "request payload of {n} bytes over XENSTORE_PAYLOAD_MAX")
            }
            Error::InvalidArgument => f.write_str("empty path or token, or one containing NUL"),
            Error::Shmem(e) => write!(f, "xenstore page: {e}"),
            Error::TimedOut => f.write_str("timed out waiting for xenstored"),
            Error::Broken => f.write_str("xenstore connection broken by an earlier protocol error"),
        }
    }
}
