//! echo's host-testable parts: the iperf3-protocol server's state machine ([`iperf`]) and the
//! small JSON reader/writer it needs ([`json`]). No sockets here; `main.rs` wires them to
//! net's TCP sockets in the image.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod iperf;
pub mod json;
