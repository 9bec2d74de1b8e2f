//! The accept loop every server needs, once: accept connections on a [`TcpListener`], admit
//! each one or not (a connection cap, or the app's own policy), run each admitted connection as
//! its own task, and give one beyond the cap what the [`Overflow`] policy says.
//!
//! ```ignore
//! let cap = net::listen::Cap::new(256); // shared by every listener it is cloned into
//! sp.spawn(net::listen::serve(sp.clone(), listener, cap, Overflow::Abort, |mut s, _| async move {
//!     /* the connection: its place is given back when this task ends */
//! }));
//! ```
//!
//! [`Cap`] counts connections (across the listeners that share it); an app with a smarter
//! policy implements [`Admission`] (httpd sheds the connection that made the least progress).

use alloc::rc::Rc;
use core::cell::Cell;
use core::future::Future;

use xen::exec::Spawner;

use crate::socket::{TcpListener, TcpStream};

/// Decides whether an accepted connection is served.
pub trait Admission {
    /// What a served connection holds until its task ends; dropping it gives the place back.
    /// The handler gets it as an `Rc` (the task keeps one: the place is held until the task
    /// ends, and longer only if the handler keeps its clone).
    type Ticket: 'static;
    /// A ticket for `stream`, or `None` when there is no room (then the [`Overflow`] policy
    /// applies to it).
    fn admit(&self, stream: &TcpStream) -> Option<Self::Ticket>;
}

/// At most `limit` connections at once, counted across every listener served with a clone of
/// it.
#[derive(Debug, Clone)]
pub struct Cap {
    live: Rc<Cell<usize>>,
    limit: usize,
}

impl Cap {
    /// A cap of `limit` connections.
    pub fn new(limit: usize) -> Cap {
        Cap {
            live: Rc::new(Cell::new(0)),
            limit,
        }
    }

    /// Connections holding a place now.
    pub fn live(&self) -> usize {
        self.live.get()
    }
}

/// A place under a [`Cap`], given back on drop.
#[derive(Debug)]
pub struct CapTicket(Rc<Cell<usize>>);

impl Drop for CapTicket {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl Admission for Cap {
    type Ticket = CapTicket;
    fn admit(&self, stream: &TcpStream) -> Option<CapTicket> {
        if self.live.get() >= self.limit {
            log::warn!(
                "net: {} connections open: refusing {:?}",
                self.limit,
                stream.peer()
            );
            return None;
        }
        self.live.set(self.live.get() + 1);
        Some(CapTicket(self.live.clone()))
    }
}

/// What a connection the admission refused gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Reset at once.
    Abort,
    /// `bytes` (e.g. an HTTP 503), written within `within_ns` by a task of its own; then the
    /// connection closes (gracefully, like any dropped stream).
    Answer {
        /// The answer.
        bytes: &'static [u8],
        /// How long writing it may take.
        within_ns: u64,
    },
}

/// Accepts connections on `listener` for ever: each one `admission` admits runs as
/// `handler(stream, ticket)` in its own task on `spawner`, holding its ticket until the task
/// ends; each it refuses gets `overflow`. Spawn it, or await it as a task's last step.
pub async fn serve<A, F, Fut>(
    spawner: Spawner,
    mut listener: TcpListener,
    admission: A,
    overflow: Overflow,
    handler: F,
) where
    A: Admission,
    F: Fn(TcpStream, Rc<A::Ticket>) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("net: accept on {}: {e}", listener.port());
                continue;
            }
        };
        let Some(ticket) = admission.admit(&stream) else {
            refuse(&spawner, stream, overflow);
            continue;
        };
        let ticket = Rc::new(ticket);
        let fut = handler(stream, ticket.clone());
        spawner.spawn(async move {
            fut.await;
            drop(ticket);
        });
    }
}

fn refuse(spawner: &Spawner, mut stream: TcpStream, overflow: Overflow) {
    match overflow {
        Overflow::Abort => stream.abort(),
        Overflow::Answer { bytes, within_ns } => {
            let sleep = stream.net.sleep(within_ns);
            spawner.spawn(async move {
                let _ = xen::exec::timeout(sleep, stream.write_all(bytes)).await;
            });
        }
    }
}
