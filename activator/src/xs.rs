//! A xenstore client for dom0 over xenstored's Unix socket (or `/dev/xen/xenbus`), speaking the
//! wire format of `xen::proto::xenstore::wire` (the same code the guests use). Two kinds of
//! connection: [`Xs`] for requests and replies, and [`Watcher`], whose thread turns watch events
//! into messages for the activator's loop.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;

use xen::proto::xenstore::wire::{self, Body, MsgType, HEADER_LEN};
use xen::proto::xenstore::XsErrno;

const SOCKETS: [&str; 2] = ["/run/xenstored/socket", "/var/run/xenstored/socket"];

enum Conn {
    Sock(UnixStream),
    Dev(std::fs::File),
}

impl Conn {
    fn open() -> io::Result<Conn> {
        for s in SOCKETS {
            if let Ok(c) = UnixStream::connect(s) {
                return Ok(Conn::Sock(c));
            }
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/xen/xenbus")
            .map(Conn::Dev)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot reach xenstored ({} or /dev/xen/xenbus): {e}",
                        SOCKETS[0]
                    ),
                )
            })
    }

    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Sock(s) => Conn::Sock(s.try_clone()?),
            Conn::Dev(f) => Conn::Dev(f.try_clone()?),
        })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match self {
            Conn::Sock(s) => s.write_all(msg),
            Conn::Dev(f) => f.write_all(msg),
        }
    }

    /// One whole message: header, then its payload.
    fn recv(&mut self) -> io::Result<Vec<u8>> {
        let mut msg = vec![0u8; HEADER_LEN];
        match self {
            Conn::Sock(s) => s.read_exact(&mut msg)?,
            Conn::Dev(f) => f.read_exact(&mut msg)?,
        }
        let h = wire::Header::parse(&msg)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("xenstore: {e:?}")))?;
        let len = h.len as usize;
        if len > wire::PAYLOAD_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "xenstore: oversized reply",
            ));
        }
        msg.resize(HEADER_LEN + len, 0);
        match self {
            Conn::Sock(s) => s.read_exact(&mut msg[HEADER_LEN..])?,
            Conn::Dev(f) => f.read_exact(&mut msg[HEADER_LEN..])?,
        }
        Ok(msg)
    }
}

fn bad(e: impl std::fmt::Debug) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("xenstore: {e:?}"))
}

fn with_nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Requests and replies, one at a time.
pub struct Xs {
    conn: Conn,
    req: u32,
}

impl Xs {
    pub fn open() -> io::Result<Xs> {
        Ok(Xs {
            conn: Conn::open()?,
            req: 0,
        })
    }

    fn call(&mut self, ty: MsgType, parts: &[&[u8]]) -> io::Result<Option<Vec<u8>>> {
        self.req = self.req.wrapping_add(1);
        let msg = wire::request(ty, self.req, 0, parts).map_err(bad)?;
        self.conn.send(&msg)?;
        loop {
            let m = self.conn.recv()?;
            let p = wire::parse(&m).map_err(bad)?;
            if p.header.req_id != self.req || p.ty == MsgType::WatchEvent {
                continue;
            }
            return match p.body {
                Body::Error(XsErrno::Enoent) => Ok(None),
                Body::Error(e) => Err(io::Error::other(format!("xenstore {ty:?}: {e:?}"))),
                Body::Payload(b) => Ok(Some(b.to_vec())),
                Body::WatchEvent { .. } => continue,
            };
        }
    }

    /// The value at `path`, None if there is no such node.
    pub fn read(&mut self, path: &str) -> io::Result<Option<String>> {
        Ok(self.call(MsgType::Read, &[&with_nul(path)])?.map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .to_string()
        }))
    }

    /// Writes `value` at `path` (creating the node).
    pub fn write(&mut self, path: &str, value: &str) -> io::Result<()> {
        self.call(MsgType::Write, &[&with_nul(path), value.as_bytes()])
            .map(|_| ())
    }

    /// Removes `path` and its children; no such node is no error.
    pub fn rm(&mut self, path: &str) -> io::Result<()> {
        self.call(MsgType::Rm, &[&with_nul(path)]).map(|_| ())
    }

    /// The children of `path` (empty if there is no such node).
    pub fn directory(&mut self, path: &str) -> io::Result<Vec<String>> {
        let Some(b) = self.call(MsgType::Directory, &[&with_nul(path)])? else {
            return Ok(Vec::new());
        };
        Ok(wire::strings(&b)
            .map_err(bad)?
            .into_iter()
            .map(str::to_string)
            .collect())
    }

    /// The domid of the domain named `name`, if one exists.
    pub fn domid_of(&mut self, name: &str) -> io::Result<Option<u32>> {
        for d in self.directory("/local/domain")? {
            if self.read(&format!("/local/domain/{d}/name"))?.as_deref() == Some(name) {
                return Ok(d.parse().ok());
            }
        }
        Ok(None)
    }
}

/// A watch event: the path that fired and the token it was registered with.
#[derive(Debug)]
pub struct Event {
    pub path: String,
    pub token: String,
}

/// A connection that only registers watches; a thread forwards their events. Dropping it
/// closes the connection (xenstored drops its watches) and ends the thread.
pub struct Watcher {
    conn: Conn,
    req: u32,
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        if let Conn::Sock(s) = &self.conn {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Watcher {
    /// Opens the connection and starts the thread that sends every event through `wrap` to `tx`.
    pub fn start<T: Send + 'static>(tx: Sender<T>, wrap: fn(Event) -> T) -> io::Result<Watcher> {
        let conn = Conn::open()?;
        let mut rx = conn.try_clone()?;
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ours = closed.clone();
        std::thread::Builder::new()
            .name("xenstore-watch".into())
            .spawn(move || loop {
                let Ok(m) = rx.recv() else {
                    if !ours.load(std::sync::atomic::Ordering::Acquire) {
                        eprintln!("activator: the xenstore watch connection closed");
                    }
                    return;
                };
                if let Ok(p) = wire::parse(&m) {
                    if let Body::WatchEvent { path, token } = p.body {
                        let e = Event {
                            path: path.to_string(),
                            token: token.to_string(),
                        };
                        if tx.send(wrap(e)).is_err() {
                            return;
                        }
                    }
                }
            })?;
        Ok(Watcher {
            conn,
            req: 0,
            closed,
        })
    }

    fn send(&mut self, ty: MsgType, path: &str, token: &str) -> io::Result<()> {
        self.req = self.req.wrapping_add(1);
        let msg =
            wire::request(ty, self.req, 0, &[&with_nul(path), &with_nul(token)]).map_err(bad)?;
        self.conn.send(&msg)
    }

    /// Watches `path` (an event fires at once, then on every change below it).
    pub fn watch(&mut self, path: &str, token: &str) -> io::Result<()> {
        self.send(MsgType::Watch, path, token)
    }

    pub fn unwatch(&mut self, path: &str, token: &str) -> io::Result<()> {
        self.send(MsgType::Unwatch, path, token)
    }
}
