//! The driver's one error enum, and its policy towards a misbehaving backend.
//!
//! Policy: nothing the backend writes can panic the guest or make the driver touch memory outside
//! its own pages. Every response is copied out of its slot once and checked against the driver's
//! own state (id, status, offset + size within the page, packet size and slot count). A malformed
//! response is consumed, its slot and buffer recycled, the packet it belonged to dropped, the
//! event counted in [`Stats::malformed`](crate::Stats), and reported as one of the `Tx*`/`Rx*`
//! variants below; the driver keeps working. A response index the backend publishes out of range
//! ([`Error::TxRing`] / [`Error::RxRing`]) cannot be consumed at all: it is reported on every poll
//! until the backend publishes a sane index again.

use alloc::string::String;
use core::fmt;

use xen::hal::HalError;
use xen::ring::RingError;
use xen::xenbus::XenbusError;

/// Everything that can go wrong in the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The platform refused a page, grant or event channel.
    Hal(HalError),
    /// The xenbus handshake or a xenstore access failed.
    Xenbus(XenbusError),
    /// The `mac` node is not a unicast MAC address `xx:xx:xx:xx:xx:xx` (its first bytes).
    BadMac(String),
    /// The backend does not offer `feature-rx-copy`, the only receive mode we implement.
    NoRxCopy,
    /// The configuration asks for no RX buffers, more than the ring holds, or no TX buffer page.
    BadConfig,
    /// The frame to send is shorter than an Ethernet header or longer than the driver can send.
    TxBadLength {
        /// Its length.
        len: usize,
    },
    /// No room to send now (ring slots, request ids or TX buffer space): retry after the backend
    /// completes earlier packets.
    TxFull,
    /// The backend published a TX response index out of range.
    TxRing(RingError),
    /// A TX response names an id out of range or not in flight (a response for a request never
    /// made, or a duplicate).
    TxBadId {
        /// The id in the response.
        id: u16,
    },
    /// The backend failed a TX request (`NETIF_RSP_ERROR` or `NETIF_RSP_DROPPED`): the packet was
    /// not sent.
    TxFailed {
        /// The id in the response.
        id: u16,
        /// The status.
        status: i16,
    },
    /// A TX response status that is not a `NETIF_RSP_*` value for a data slot.
    TxBadStatus {
        /// The id in the response.
        id: u16,
        /// The status.
        status: i16,
    },
    /// The backend published an RX response index out of range.
    RxRing(RingError),
    /// An RX response's id is not the id of the request in its slot.
    RxBadId {
        /// The id in the response.
        id: u16,
        /// The id of the request the slot held.
        expected: u16,
    },
    /// An RX response with a negative status (`NETIF_RSP_*`): the backend failed the slot.
    RxStatus {
        /// The id in the response.
        id: u16,
        /// The status.
        status: i16,
    },
    /// An RX response whose data runs past the end of its page (offset + size > 4096).
    RxBadOffset {
        /// The id in the response.
        id: u16,
        /// Offset of the data.
        offset: u16,
        /// Size of the data.
        size: u16,
    },
    /// A received packet longer than the driver accepts.
    RxTooLong {
        /// Its length so far.
        len: usize,
    },
    /// A received packet spread over more slots than any backend may use.
    RxTooManySlots,
    /// A received packet too short to hold an Ethernet header.
    RxRunt {
        /// Its length.
        len: usize,
    },
    /// A received packet flagged `NETRXF_csum_blank` although we refused checksum offload
    /// (`feature-no-csum-offload`): its checksum cannot be trusted, so it is dropped.
    RxChecksumBlank,
    /// A received TCP/UDP packet not flagged trusted (`NETRXF_csum_blank` or
    /// `NETRXF_data_validated`) whose checksum does not verify (or that is too short to hold
    /// one): corrupted, or forged by a peer on the network. Dropped. Not a backend fault.
    RxBadChecksum,
    /// An RX extra-info slot of type `XEN_NETIF_EXTRA_TYPE_NONE`, a second one of a type the
    /// packet already carries, or one more than a packet may carry (a chain that never ends).
    /// Unknown types are skipped, not errors.
    RxBadExtra {
        /// Its type.
        kind: u8,
    },
    /// A received GSO packet (`XEN_NETIF_EXTRA_TYPE_GSO`) that is not what its extra says: a
    /// zero segment size, an unknown GSO type, or a frame that is not one whole TCP packet of
    /// that IP version (its IP length disagreeing with the bytes received).
    RxBadGso {
        /// What is wrong.
        reason: &'static str,
    },
    /// Teardown: the backend still maps some of our pages; they were leaked, not freed.
    GrantsStillMapped {
        /// How many grants could not be ended.
        count: usize,
    },
    /// The domain moved (restored or migrated) and the vif has not reconnected yet: nothing
    /// can be sent or received until [`Netfront::resume`](crate::Netfront::resume) succeeded.
    Moved,
    /// A slot access fell outside our own ring or buffer memory: a driver bug, never the
    /// backend's doing.
    Internal,
}

impl Error {
    /// True for the backend's protocol violations (the `Tx*`/`Rx*` variants other than
    /// [`Error::TxFull`], [`Error::TxBadLength`] and [`Error::RxBadChecksum`]).
    pub fn is_backend_fault(&self) -> bool {
        !matches!(
            self,
            Error::Hal(_)
                | Error::Xenbus(_)
                | Error::BadMac(_)
                | Error::NoRxCopy
                | Error::BadConfig
                | Error::TxBadLength { .. }
                | Error::TxFull
                | Error::RxBadChecksum
                | Error::GrantsStillMapped { .. }
                | Error::Moved
                | Error::Internal
        )
    }
}

impl From<HalError> for Error {
    fn from(e: HalError) -> Self {
        Error::Hal(e)
    }
}

impl From<XenbusError> for Error {
    fn from(e: XenbusError) -> Self {
        Error::Xenbus(e)
    }
}

impl From<xen::xenstore::Error> for Error {
    fn from(e: xen::xenstore::Error) -> Self {
        Error::Xenbus(XenbusError::Store(e))
    }
}

impl From<xen::shmem::OutOfBounds> for Error {
    fn from(_: xen::shmem::OutOfBounds) -> Self {
        Error::Internal
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Hal(e) => write!(f, "platform: {e}"),
            Error::Xenbus(e) => write!(f, "xenbus: {e}"),
            Error::BadMac(s) => write!(f, "{s:?} is not a unicast MAC address"),
            Error::NoRxCopy => f.write_str("backend does not offer feature-rx-copy"),
            Error::BadConfig => f.write_str("bad netfront configuration"),
            Error::TxBadLength { len } => write!(f, "cannot send a {len}-byte frame"),
            Error::TxFull => f.write_str("no room to send now"),
            Error::TxRing(e) => write!(f, "tx ring: {e}"),
            Error::TxBadId { id } => write!(f, "tx response for id {id}, not in flight"),
            Error::TxFailed { id, status } => {
                write!(f, "backend failed tx request {id} (status {status})")
            }
            Error::TxBadStatus { id, status } => {
                write!(f, "tx response {id} with invalid status {status}")
            }
            Error::RxRing(e) => write!(f, "rx ring: {e}"),
            Error::RxBadId { id, expected } => {
                write!(f, "rx response id {id} in the slot of request {expected}")
            }
            Error::RxStatus { id, status } => {
                write!(f, "backend failed rx request {id} (status {status})")
            }
            Error::RxBadOffset { id, offset, size } => write!(
                f,
                "rx response {id}: {size} bytes at offset {offset} run past the page"
            ),
            Error::RxTooLong { len } => write!(f, "received packet too long ({len}+ bytes)"),
            Error::RxTooManySlots => f.write_str("received packet spread over too many slots"),
            Error::RxRunt { len } => write!(f, "received {len}-byte runt frame"),
            Error::RxChecksumBlank => {
                f.write_str("received packet with a blank checksum (offload was refused)")
            }
            Error::RxBadChecksum => f.write_str("received packet with a bad TCP/UDP checksum"),
            Error::RxBadExtra { kind } => {
                write!(
                    f,
                    "rx extra info of type {kind}: invalid, duplicate or too many"
                )
            }
            Error::RxBadGso { reason } => write!(f, "received bad GSO packet: {reason}"),
            Error::GrantsStillMapped { count } => {
                write!(
                    f,
                    "{count} grants still mapped by the backend; pages leaked"
                )
            }
            Error::Moved => f.write_str("the domain moved; the vif is not reconnected yet"),
            Error::Internal => f.write_str("internal error: access outside our own memory"),
        }
    }
}
