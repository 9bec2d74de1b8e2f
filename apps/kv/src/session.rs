//! One client connection: request bytes in, reply bytes out, in order.
//!
//! [`Session::feed`] takes whatever the socket delivered, runs every whole request it now
//! holds (pipelining: any number per call) against the shared [`Engine`], and appends the
//! replies to `out`. After QUIT, or a protocol error (whose error reply is written first),
//! [`Session::closed`] is true: the caller sends what is in `out` and closes; later input is
//! ignored.

use crate::cmd::{Client, Engine, Flow};
use crate::resp::{Limits, Parser};
use alloc::vec::Vec;

/// A connection's protocol state.
#[derive(Debug, Default)]
pub struct Session {
    parser: Parser,
    client: Client,
    closed: bool,
}

impl Session {
    /// A new connection with the given request limits.
    pub fn new(limits: Limits) -> Self {
        Session {
            parser: Parser::new(limits),
            ..Session::default()
        }
    }

    /// True once the connection must be closed (after sending `out`).
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// The connection's client state (its name).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Feeds received bytes at time `now` (ms) and appends the replies to `out`.
    pub fn feed(&mut self, engine: &mut Engine, input: &[u8], now: u64, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.parser.push(input);
        loop {
            match self.parser.next_request() {
                Ok(None) => return,
                Ok(Some(req)) => {
                    if engine.execute(&mut self.client, &req, now, out) == Flow::Close {
                        self.closed = true;
                        return;
                    }
                }
                Err(e) => {
                    out.extend_from_slice(&e.reply());
                    self.closed = true;
                    return;
                }
            }
        }
    }
}
