//! Xen network frontend (netfront): the split driver that talks to a netback over shared rings,
//! exposed as a smoltcp [`phy::Device`](smoltcp::phy::Device).
//!
//! - [`wire`]: the netif ring ABI (xen/io/netif.h) as values copied out of ring slots.
//! - [`txbuf`]: where outgoing frames go in the TX buffer, cut so that no slot crosses a page.
//! - [`Netfront`] (`driver`): rings, buffers, request ids, and the checks on every response.
//! - `connect`: the xenbus handshake ([`Netfront::connect`], [`Netfront::shutdown`]).
//! - `device`: the smoltcp `Device` implementation.
//! - `sim` (feature `sim`, for tests): a simulated netback speaking the ring protocol over
//!   [`SimHal`](xen::hal::SimHal)'s granted pages, with fault injection, that also plays the
//!   peer host for smoltcp end-to-end tests.
//! - [`Error`]: every failure, and the policy towards a misbehaving backend.
//! - `xen` (on Xen): find and connect the guest's vifs.
//!
//! The TCP/IP stack, its sockets and its address configuration are the `net` crate, over any
//! smoltcp device; this crate is the driver only.
//!
//! Checksum offload is accepted on receive, per packet (`NETRXF_csum_blank` /
//! `NETRXF_data_validated` trusted, unflagged packets verified by the driver), so neither dom0
//! nor we checksum packets that never crossed a wire; we send complete checksums.
//! `Config::csum_offload: false` refuses it (`feature-no-csum-offload=1`). With it, receive GSO
//! (`feature-gso-tcpv4`/`-tcpv6`, `Config::gso`): TCP segments of up to 64 KiB arrive as one
//! packet. See `driver`.
//!
//! On Xen, the platform provides a [`Hal`](xen::hal::Hal) (pages, grants, event channels,
//! notify) and a xenstore [`Transport`](xen::xenstore::Transport); then
//! `Netfront::connect(&mut xs, hal, "device/vif/0", Config::default(), &mut timeout)` gives a
//! device to hand to a smoltcp `Interface`. Poll the interface when the driver's
//! [`event_channel`](Netfront::event_channel) fires (or on a timer).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

mod connect;
mod device;
mod driver;
mod error;
#[cfg(feature = "sim")]
pub mod sim;
pub mod txbuf;
pub mod wire;
#[cfg(any(target_os = "none", target_os = "hermit"))]
pub mod xen;

pub use connect::{format_mac, Closing, Reconnected, Resume, RETRY_MAX_NS, RETRY_MIN_NS};
pub use device::{NfRxToken, NfTxToken};
pub use driver::{
    fill_tcp_checksum, Config, Netfront, Stats, MAX_RX_FRAME, MAX_RX_SLOTS, MIN_FRAME,
    MIN_GSO_RX_BUFFERS, MTU,
};
pub use error::Error;
/// The smoltcp version the driver is built on (its `Device` trait is the driver's API).
pub use smoltcp;
