//! xenrt's TCP/IP stack: a smoltcp interface over a network device (netfront on Xen), the
//! address configuration, the async sockets apps use, and the rules that keep listeners serving
//! on a hostile network. The driver under it is the `netfront` crate (a smoltcp
//! [`phy::Device`](smoltcp::phy::Device)); nothing here touches rings or grants.
//!
//! - [`stack`]: the smoltcp interface apps use ([`Net`]): DHCPv4 or static addresses, IPv6
//!   link-local + SLAAC, driven by [`xen::exec`]'s executor as a source.
//! - [`gate`]: the stack's listeners and the rules that keep them serving under a SYN flood
//!   (half-open connections expire and are shed, SYNs beyond the backlog wait).
//! - [`filter`]: RFC 5961 §3 reset checks in front of smoltcp (only the exact RST resets).
//! - [`announce`]: the gratuitous ARP and unsolicited neighbour advertisements sent after the
//!   vif reconnected to a new backend (restore, live migration).
//! - [`dhcp`]: the DHCPv4 client (exponential, randomised backoff; one xid per acquisition).
//! - [`socket`]: async [`TcpListener`], [`TcpStream`] and [`UdpSocket`] over [`Net`].
//! - [`listen`]: the accept loop servers share: a connection cap (or the app's admission
//!   policy), one task per connection, and what a connection over the cap gets.
//! - `xen` (on Xen): bring the first vif up under a stack ([`xen::up`](crate::xen)) and
//!   publish the stack's figures.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod announce;
pub mod dhcp;
pub mod filter;
pub mod gate;
pub mod listen;
pub mod socket;
pub mod stack;
#[cfg(any(target_os = "none", target_os = "hermit"))]
pub mod xen;

pub use netfront::{format_mac, Stats};
/// The smoltcp version the stack is built on (its address types appear in the API).
pub use smoltcp;
pub use socket::{DnsQuery, ListenConfig, Received, TcpListener, TcpStream, UdpSocket};
pub use stack::{IpConfig, Ipv4Mode, Net, NetError};
