//! One client connection: request bytes in, reply bytes out, in order.
//!
//! [`Session::feed`] takes whatever the socket delivered, runs every whole request it now
//! holds (pipelining: any number per call) against the shared [`Engine`], and appends the
//! replies to `out`. After QUIT, or a protocol error (whose error reply is written first),
//! [`Session::closed`] is true: the caller sends what is in `out` and closes; later input is
//! ignored.
//!
//! A request that reads a value held only on disk is not run: `feed` returns where that value
//! is ([`OnDisk`]); the caller reads it, hands it to [`Engine::load`], and calls `feed` again
//! (the request is kept and run then).
//!
//! Back-pressure: a request is started only while `out` holds less than
//! [`OUTPUT_HIGH_WATER`] bytes, so a pipeline of big GETs cannot fill memory with replies. What
//! was not run stays buffered ([`Session::pending`]); once the caller has written `out` to the
//! socket it calls `feed` again (with no new bytes, or with more) to resume. A caller should stop
//! reading the socket while `pending` is large.

use crate::cmd::{Client, Engine, Flow};
use crate::resp::{Limits, Parser};
use crate::store::OnDisk;
use alloc::vec::Vec;

/// `feed` starts no new request while `out` holds this many bytes or more.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;

/// A connection's protocol state.
#[derive(Debug, Default)]
pub struct Session {
    parser: Parser,
    client: Client,
    closed: bool,
    /// A request waiting for a value to be loaded.
    held: Option<Vec<Vec<u8>>>,
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

    /// Received bytes not yet run (an incomplete request, or requests held back by
    /// [`OUTPUT_HIGH_WATER`]).
    pub fn pending(&self) -> usize {
        self.parser.buffered() + self.held.is_some() as usize
    }

    /// Drops the request `feed` held for a value that cannot be read (the disk gave back
    /// something else), answering it with the error `msg` instead.
    pub fn fail_held(&mut self, msg: &[u8], out: &mut Vec<u8>) {
        if self.held.take().is_some() {
            crate::resp::error(out, msg);
        }
    }

    /// Feeds received bytes at time `now` (ms) and appends the replies to `out`. Returns the
    /// value to load first if a request needs one from disk (see the module documentation).
    pub fn feed(
        &mut self,
        engine: &mut Engine,
        input: &[u8],
        now: u64,
        out: &mut Vec<u8>,
    ) -> Option<OnDisk> {
        if self.closed {
            return None;
        }
        self.parser.push(input);
        while out.len() < OUTPUT_HIGH_WATER {
            let req = match self.held.take() {
                Some(req) => req,
                None => match self.parser.next_request() {
                    Ok(None) => return None,
                    Ok(Some(req)) => req,
                    Err(e) => {
                        out.extend_from_slice(&e.reply());
                        self.closed = true;
                        return None;
                    }
                },
            };
            match engine.execute(&mut self.client, &req, now, out) {
                Flow::Continue => {}
                Flow::Close => {
                    self.closed = true;
                    return None;
                }
                Flow::Fetch(at) => {
                    self.held = Some(req);
                    return Some(at);
                }
            }
        }
        None
    }
}
