//! kv: the sans-IO core of a Redis-protocol key-value server.
//!
//! No sockets, no disk here: [`resp`] reads RESP2 requests from byte chunks and encodes
//! replies, [`store`] is the keyspace (changed only through [`store::Effect`]s, which a durable
//! layer can log and replay), [`cmd`] executes Redis commands against it, and [`session`] ties
//! them into a per-connection state machine: bytes in, reply bytes out, a close flag.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod cmd;
pub mod crc;
pub mod db;
pub mod glob;
pub mod log;
pub mod resp;
pub mod session;
pub mod store;

#[cfg(test)]
mod log_tests;
#[cfg(test)]
mod tests;
