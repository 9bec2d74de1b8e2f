//! The xenbus frontend handshake, shared by every PV driver (netfront, blkfront, ...).
//!
//! A frontend and its backend each publish a `state` node in xenstore and watch the other's.
//! [`Frontend`] does the frontend's part, step by step:
//!
//! 1. [`Frontend::attach`]: read `<device>/backend` and `<device>/backend-id`, watch
//!    `<backend>/state`.
//! 2. (driver) read the backend's features with [`Frontend::read_backend`], set up rings.
//! 3. [`Frontend::connect`]: in one transaction (retried on `EAGAIN`) write the driver's keys and
//!    `state = Initialised`, wait for the backend to reach `Connected`, then write
//!    `state = Connected`. Any backend state off the connect path (Closing, Closed, a value that
//!    is not a state) is an error, after which the frontend closes cleanly.
//! 4. [`Frontend::close`]: `state = Closing`, wait for the backend to close, `state = Closed`.
//!
//! It is generic over the xenstore [`Transport`] and over a [`Timeout`] supplied by the caller,
//! so host tests drive it against [`crate::xenstore::sim`] with a scripted backend.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::xenstore::{self, Client, Op, Transport, Tx, XsErrno};

/// `enum xenbus_state` (xen/io/xenbus.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum XenbusState {
    /// 0: no state yet.
    Unknown = 0,
    /// 1: setting up.
    Initialising = 1,
    /// 2: waiting for the other side's details (backends, typically).
    InitWait = 2,
    /// 3: details published, waiting to connect.
    Initialised = 3,
    /// 4: connected and running.
    Connected = 4,
    /// 5: shutting down.
    Closing = 5,
    /// 6: closed.
    Closed = 6,
    /// 7: reconfiguring.
    Reconfiguring = 7,
    /// 8: reconfigured.
    Reconfigured = 8,
}

impl XenbusState {
    /// The state for its number.
    pub fn from_u32(v: u32) -> Option<Self> {
        use XenbusState::*;
        [
            Unknown,
            Initialising,
            InitWait,
            Initialised,
            Connected,
            Closing,
            Closed,
            Reconfiguring,
            Reconfigured,
        ]
        .get(v as usize)
        .copied()
    }

    /// Parses a `state` node's value: a decimal number, surrounding whitespace and a trailing
    /// NUL tolerated.
    pub fn parse(value: &[u8]) -> Result<Self, XenbusError> {
        let text = core::str::from_utf8(value.strip_suffix(b"\0").unwrap_or(value))
            .map_err(|_| XenbusError::BadState(lossy(value)))?
            .trim();
        let bad = || XenbusError::BadState(lossy(value));
        if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        text.parse().ok().and_then(Self::from_u32).ok_or_else(bad)
    }

    /// Its value as written to xenstore (`"4"`).
    pub fn as_str(self) -> &'static str {
        ["0", "1", "2", "3", "4", "5", "6", "7", "8"][self as usize]
    }
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(&v[..v.len().min(32)]).into()
}

impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} ({})", *self as u32)
    }
}

/// Everything that can go wrong in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XenbusError {
    /// A xenstore operation failed.
    Store(xenstore::Error),
    /// A `state` node holds something that is not a xenbus state (its first bytes).
    BadState(String),
    /// `backend-id` is not a domain id.
    BadBackendId,
    /// `backend` is not an absolute xenstore path.
    BadBackendPath,
    /// The backend entered a state off the way to the one we were waiting for.
    UnexpectedBackendState {
        /// What the backend did.
        state: XenbusState,
        /// What we were waiting for.
        waiting_for: XenbusState,
    },
    /// The caller's timeout expired while waiting for the backend.
    TimedOut {
        /// What we were waiting for.
        waiting_for: XenbusState,
    },
}

impl From<xenstore::Error> for XenbusError {
    fn from(e: xenstore::Error) -> Self {
        XenbusError::Store(e)
    }
}

impl fmt::Display for XenbusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenbusError::Store(e) => write!(f, "xenstore: {e}"),
            XenbusError::BadState(s) => write!(f, "{s:?} is not a xenbus state"),
            XenbusError::BadBackendId => f.write_str("backend-id is not a domain id"),
            XenbusError::BadBackendPath => f.write_str("backend is not an absolute path"),
            XenbusError::UnexpectedBackendState { state, waiting_for } => {
                write!(
                    f,
                    "backend went to {state} while we waited for {waiting_for}"
                )
            }
            XenbusError::TimedOut { waiting_for } => {
                write!(
                    f,
                    "timed out waiting for the backend to reach {waiting_for}"
                )
            }
        }
    }
}

/// The caller's deadline, checked between waits for the backend.
///
/// On Xen, compare the monotonic clock with a deadline (and make the xenstore [`Transport`]'s
/// `wait` return on timer events too, so it gets checked); on the host, count calls. Closures
/// `FnMut() -> bool` are timeouts.
pub trait Timeout {
    /// True once the caller no longer wants to wait.
    fn expired(&mut self) -> bool;
}

impl<F: FnMut() -> bool> Timeout for F {
    fn expired(&mut self) -> bool {
        self()
    }
}

/// A timeout that never expires.
#[derive(Debug, Clone, Copy, Default)]
pub struct Never;

impl Timeout for Never {
    fn expired(&mut self) -> bool {
        false
    }
}

/// The one clock interface: monotonic nanoseconds. The executor's [`Park`](crate::exec::Park),
/// xenbus [`Deadline`]s and every [`Hal`](crate::hal::Hal) are clocks; `xen::time::Clock` is
/// this trait.
pub trait Clock {
    /// Nanoseconds since some fixed point; never goes backwards.
    fn now_ns(&self) -> u64;
}

/// A [`Timeout`] that expires `ns` nanoseconds after its creation on `clock`.
pub struct Deadline<C: Clock> {
    clock: C,
    at: u64,
}

impl<C: Clock> Deadline<C> {
    /// Expires `ns` from now.
    pub fn after(clock: C, ns: u64) -> Self {
        let at = clock.now_ns().saturating_add(ns);
        Deadline { clock, at }
    }
}

impl<C: Clock> Timeout for Deadline<C> {
    fn expired(&mut self) -> bool {
        self.clock.now_ns() >= self.at
    }
}

/// The guest's devices of one kind (`"vif"`, `"vbd"`): its `device/KIND/ID` nodes in the order
/// of their numeric ids (so xvda comes before xvdb, vif 0 before vif 1). Empty when it has none.
pub fn device_nodes<T: Transport>(
    xs: &mut Client<T>,
    kind: &str,
) -> Result<alloc::vec::Vec<String>, xenstore::Error> {
    let dir = format!("device/{kind}");
    let reply = xs.batch(Tx::NONE, &[Op::Directory(&dir)])?.pop();
    device_nodes_from(kind, reply.unwrap_or(Err(xenstore::Error::Broken)))
}

/// [`device_nodes`] from the reply to `Op::Directory("device/KIND")` (read by the caller in a
/// batch of its own).
pub fn device_nodes_from(
    kind: &str,
    reply: Result<alloc::vec::Vec<u8>, xenstore::Error>,
) -> Result<alloc::vec::Vec<String>, xenstore::Error> {
    let dir = format!("device/{kind}");
    let mut ids: alloc::vec::Vec<(u64, String)> = match reply {
        Ok(v) => xenstore::wire::strings(&v)?
            .into_iter()
            .map(|id| (id.parse().unwrap_or(u64::MAX), String::from(id)))
            .collect(),
        Err(xenstore::Error::Xs(XsErrno::Enoent)) => alloc::vec::Vec::new(),
        Err(e) => return Err(e),
    };
    ids.sort();
    Ok(ids
        .into_iter()
        .map(|(_, id)| format!("{dir}/{id}"))
        .collect())
}

/// The token of the watch a [`Frontend`] at `node` sets on its backend's state (for a
/// [`crate::platform::Watch`] on it).
pub fn watch_token(node: &str) -> String {
    format!("xenbus:{}", node.trim_end_matches('/'))
}

/// A PV device's frontend, from attach to close.
#[derive(Debug, Clone)]
pub struct Frontend {
    node: String,
    backend: String,
    backend_id: u16,
    token: String,
    watching: bool,
}

impl Frontend {
    /// Reads the backend of the device at `node` (e.g. `device/vif/0`) and watches its state.
    pub fn attach<T: Transport>(xs: &mut Client<T>, node: &str) -> Result<Self, XenbusError> {
        let node = node.trim_end_matches('/');
        // Both reads in one round trip.
        let paths = Self::backend_paths(node);
        let mut r = xs
            .batch(Tx::NONE, &[Op::Read(&paths[0]), Op::Read(&paths[1])])?
            .into_iter();
        let mut next = || r.next().unwrap_or(Err(xenstore::Error::Broken));
        let (backend, id) = (next(), next());
        let mut fe = Self::attach_read(node, backend, id)?;
        xs.watch(&fe.state_path(), &fe.token)?;
        fe.watching = true;
        Ok(fe)
    }

    /// The nodes [`attach_read`](Self::attach_read) wants read: `<node>/backend` and
    /// `<node>/backend-id`.
    pub fn backend_paths(node: &str) -> [String; 2] {
        let node = node.trim_end_matches('/');
        [format!("{node}/backend"), format!("{node}/backend-id")]
    }

    /// [`attach`](Self::attach) from the values of [`backend_paths`](Self::backend_paths)
    /// read by the caller (batched with its own reads), without the watch: the caller sets it
    /// ([`watch_op`](Self::watch_op)) before it reads the backend's state.
    pub fn attach_read(
        node: &str,
        backend: Result<Vec<u8>, xenstore::Error>,
        backend_id: Result<Vec<u8>, xenstore::Error>,
    ) -> Result<Self, XenbusError> {
        let node = String::from(node.trim_end_matches('/'));
        let backend = String::from_utf8(backend?)
            .map_err(|_| XenbusError::Store(xenstore::Error::NotUtf8))?;
        let backend = String::from(backend.trim_end_matches('\0').trim_end_matches('/'));
        if !backend.starts_with('/') || backend.len() < 2 {
            return Err(XenbusError::BadBackendPath);
        }
        let backend_id = xenstore::wire::number(&backend_id?)
            .ok()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or(XenbusError::BadBackendId)?;
        let token = watch_token(&node);
        Ok(Frontend {
            node,
            backend,
            backend_id,
            token,
            watching: false,
        })
    }

    /// The watch on the backend's state still to set, if it is not set (after
    /// [`attach_read`](Self::attach_read)): the path and token, to put first in a batch;
    /// [`watched`](Self::watched) once it succeeded.
    pub fn watch_op(&self) -> Option<(String, &str)> {
        (!self.watching).then(|| (self.state_path(), self.token.as_str()))
    }

    /// The watch from [`watch_op`](Self::watch_op) is set.
    pub fn watched(&mut self) {
        self.watching = true;
    }

    /// `<backend>/state`.
    pub fn state_path(&self) -> String {
        format!("{}/state", self.backend)
    }

    /// Our device node, as given to [`attach`](Self::attach).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The backend's node (absolute).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The backend's domain.
    pub fn backend_id(&self) -> u16 {
        self.backend_id
    }

    /// Reads `<backend>/<key>` (a feature, `mac`, `sectors`, ...).
    pub fn read_backend<T: Transport>(
        &self,
        xs: &mut Client<T>,
        key: &str,
    ) -> Result<String, XenbusError> {
        Ok(xs.read_string(Tx::NONE, &format!("{}/{key}", self.backend))?)
    }

    /// The backend's state; a missing node reads as `Unknown`.
    pub fn backend_state<T: Transport>(
        &self,
        xs: &mut Client<T>,
    ) -> Result<XenbusState, XenbusError> {
        match xs.read(Tx::NONE, &format!("{}/state", self.backend)) {
            Ok(v) => XenbusState::parse(&v),
            Err(xenstore::Error::Xs(XsErrno::Enoent)) => Ok(XenbusState::Unknown),
            Err(e) => Err(e.into()),
        }
    }

    /// The backend's state if it changed (its watch fired) since the last call, without
    /// blocking: for a connected device to notice the backend closing (`xl network-detach`,
    /// `xl block-detach`, a backend crash).
    pub fn backend_changed<T: Transport>(
        &self,
        xs: &mut Client<T>,
    ) -> Result<Option<XenbusState>, XenbusError> {
        if xs.poll_event(&self.token)?.is_none() {
            return Ok(None);
        }
        while xs.take_event(&self.token).is_some() {}
        self.backend_state(xs).map(Some)
    }

    /// Writes our state.
    pub fn set_state<T: Transport>(
        &self,
        xs: &mut Client<T>,
        state: XenbusState,
    ) -> Result<(), XenbusError> {
        Ok(xs.write(
            Tx::NONE,
            &format!("{}/state", self.node),
            state.as_str().as_bytes(),
        )?)
    }

    /// Writes `keys` (relative to our node) and `state` in one transaction, retried on EAGAIN.
    pub fn publish<T: Transport>(
        &self,
        xs: &mut Client<T>,
        keys: &[(&str, &str)],
        state: XenbusState,
    ) -> Result<(), XenbusError> {
        // Every write in one round trip; the transaction commits only if all of them worked.
        xs.transaction(|xs, tx| self.write_keys_then_state(xs, tx, keys, state))?;
        Ok(())
    }

    /// Writes `keys` (relative to our node), then `state`, in one round trip (a batch) in `tx`.
    fn write_keys_then_state<T: Transport>(
        &self,
        xs: &mut Client<T>,
        tx: Tx,
        keys: &[(&str, &str)],
        state: XenbusState,
    ) -> Result<(), xenstore::Error> {
        let node = &self.node;
        let paths: Vec<String> = keys.iter().map(|(k, _)| format!("{node}/{k}")).collect();
        let state_path = format!("{node}/state");
        let mut ops: Vec<Op> = paths
            .iter()
            .zip(keys)
            .map(|(p, (_, v))| Op::Write(p, v.as_bytes()))
            .collect();
        ops.push(Op::Write(&state_path, state.as_str().as_bytes()));
        xs.batch(tx, &ops)?
            .into_iter()
            .try_for_each(|r| r.map(drop))
    }

    /// Writes `keys` (relative to our node), then `state`, in one round trip and outside any
    /// transaction: the daemon applies a connection's requests in the order they came, so a
    /// backend woken by the state write finds every key written (what the transaction of
    /// [`publish`](Self::publish) gives, without its two round trips). The first failed write
    /// is returned; the state may have been written after it, so the caller closes the
    /// frontend on error (as [`connect_first`](Self::connect_first) does).
    pub fn publish_in_order<T: Transport>(
        &self,
        xs: &mut Client<T>,
        keys: &[(&str, &str)],
        state: XenbusState,
    ) -> Result<(), XenbusError> {
        self.write_keys_then_state(xs, Tx::NONE, keys, state)?;
        Ok(())
    }

    /// Waits until the backend reaches `target` or a later state on the connect path
    /// (Initialising < InitWait < Initialised < Connected). Closing, Closed and the
    /// reconfiguration states are [`XenbusError::UnexpectedBackendState`].
    pub fn wait_for_backend<T: Transport>(
        &self,
        xs: &mut Client<T>,
        target: XenbusState,
        timeout: &mut impl Timeout,
    ) -> Result<XenbusState, XenbusError> {
        self.wait_until(xs, timeout, target, |s| {
            if s >= XenbusState::Closing {
                Some(Err(XenbusError::UnexpectedBackendState {
                    state: s,
                    waiting_for: target,
                }))
            } else if s >= target {
                Some(Ok(s))
            } else {
                None
            }
        })
    }

    /// The whole connect: [`publish`](Self::publish) `keys` with state Initialised, wait for the
    /// backend to be Connected, then state Connected. On any error the frontend is
    /// [`close`](Self::close)d (with the same timeout, possibly already expired: then without
    /// waiting for the backend) and the first error returned.
    pub fn connect<T: Transport>(
        &mut self,
        xs: &mut Client<T>,
        keys: &[(&str, &str)],
        timeout: &mut impl Timeout,
    ) -> Result<(), XenbusError> {
        let result = self
            .publish(xs, keys, XenbusState::Initialised)
            .and_then(|()| self.wait_for_backend(xs, XenbusState::Connected, timeout))
            .and_then(|_| self.set_state(xs, XenbusState::Connected));
        self.close_on_error(xs, timeout, result)
    }

    /// The connect of a frontend whose backend acts only on Connected (Linux's netback ignores
    /// Initialised): [`publish_in_order`](Self::publish_in_order) `keys` with state Connected
    /// (one round trip), then wait for the
    /// backend to be Connected. Errors close the frontend as in [`connect`](Self::connect).
    pub fn connect_first<T: Transport>(
        &mut self,
        xs: &mut Client<T>,
        keys: &[(&str, &str)],
        timeout: &mut impl Timeout,
    ) -> Result<(), XenbusError> {
        let result = self
            .publish_in_order(xs, keys, XenbusState::Connected)
            .and_then(|()| self.wait_for_backend(xs, XenbusState::Connected, timeout))
            .map(|_| ());
        self.close_on_error(xs, timeout, result)
    }

    /// A failed connect leaves the frontend closed: closes it (best effort) and passes `result`
    /// on.
    fn close_on_error<T: Transport>(
        &mut self,
        xs: &mut Client<T>,
        timeout: &mut impl Timeout,
        result: Result<(), XenbusError>,
    ) -> Result<(), XenbusError> {
        if result.is_err() {
            let _ = self.close(xs, timeout);
        }
        result
    }

    /// Closes: state Closing, wait for the backend to be Closing or Closed (or gone, or
    /// unreadable, or the timeout), state Closed, drop the watch. Returns the first error; our
    /// state is set to Closed whenever xenstore still works.
    pub fn close<T: Transport>(
        &mut self,
        xs: &mut Client<T>,
        timeout: &mut impl Timeout,
    ) -> Result<(), XenbusError> {
        let mut first = self.set_state(xs, XenbusState::Closing).err();
        if first.is_none() {
            let waited = self.wait_until(xs, timeout, XenbusState::Closing, |s| {
                (s == XenbusState::Unknown || s >= XenbusState::Closing).then_some(Ok(s))
            });
            first = waited.err();
        }
        let closed = self.set_state(xs, XenbusState::Closed);
        if self.watching {
            self.watching = false;
            let _ = xs.unwatch(&format!("{}/state", self.backend), &self.token);
        }
        match first {
            Some(e) => Err(e),
            None => closed,
        }
    }

    /// Re-reads the backend state at every watch event (or spurious wake-up) until `decide`
    /// returns a result, checking `timeout` between waits.
    fn wait_until<T: Transport>(
        &self,
        xs: &mut Client<T>,
        timeout: &mut impl Timeout,
        waiting_for: XenbusState,
        mut decide: impl FnMut(XenbusState) -> Option<Result<XenbusState, XenbusError>>,
    ) -> Result<XenbusState, XenbusError> {
        loop {
            // Events only say "look again": drop them, then look.
            while xs.take_event(&self.token).is_some() {}
            if let Some(result) = decide(self.backend_state(xs)?) {
                return result;
            }
            if timeout.expired() {
                return Err(XenbusError::TimedOut { waiting_for });
            }
            xs.wait()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenstore::sim::{Sim, Store};
    use alloc::string::ToString;

    const FE: &str = "/local/domain/1/device/vif/0";
    const BE: &str = "/local/domain/0/backend/vif/1/0";

    fn setup() -> Client<Sim> {
        let mut xs = Sim::client(1);
        let (fe, be) = xs.transport_mut().store().add_device("vif", 0, 0);
        assert_eq!((fe.as_str(), be.as_str()), (FE, BE));
        xs
    }

    #[test]
    fn device_nodes_come_in_id_order() {
        let mut xs = Sim::client(1);
        assert_eq!(
            device_nodes(&mut xs, "vbd").unwrap(),
            alloc::vec::Vec::<String>::new()
        );
        for id in [51728, 51712, 768] {
            xs.transport_mut().store().add_device("vbd", id, 0);
        }
        assert_eq!(
            device_nodes(&mut xs, "vbd").unwrap(),
            ["device/vbd/768", "device/vbd/51712", "device/vbd/51728"]
        );
    }

    fn state(store: &Store, path: &str) -> Option<String> {
        store.read_str(&format!("{path}/state"))
    }

    /// A well-behaved backend: InitWait at once, Connected once the frontend is Initialised,
    /// Closed after the frontend starts Closing.
    fn good_backend(st: &mut Store) {
        match (state(st, FE).as_deref(), state(st, BE).as_deref()) {
            (Some("1"), Some("1")) => st.write(&format!("{BE}/state"), b"2"),
            (Some("3"), Some("2")) => st.write(&format!("{BE}/state"), b"4"),
            (Some("5"), Some("4")) => st.write(&format!("{BE}/state"), b"6"),
            _ => {}
        }
    }

    fn fe_state(xs: &mut Client<Sim>) -> Option<String> {
        state(xs.transport_mut().store(), FE)
    }

    #[test]
    fn parses_states() {
        assert_eq!(XenbusState::parse(b"4"), Ok(XenbusState::Connected));
        assert_eq!(XenbusState::parse(b" 6\n\0"), Ok(XenbusState::Closed));
        assert_eq!(XenbusState::parse(b"8"), Ok(XenbusState::Reconfigured));
        for bad in [
            &b""[..],
            b"9",
            b"-1",
            b"four",
            b"4x",
            b"\xff",
            b"99999999999",
        ] {
            assert!(
                matches!(XenbusState::parse(bad), Err(XenbusError::BadState(_))),
                "{bad:?}"
            );
        }
        assert_eq!(XenbusState::Initialised.as_str(), "3");
    }

    #[test]
    fn happy_path_connect_then_close() {
        let mut xs = setup();
        xs.transport_mut().add_peer(good_backend);
        let mut fe = Frontend::attach(&mut xs, "device/vif/0").unwrap();
        assert_eq!((fe.backend(), fe.backend_id()), (BE, 0));
        assert_eq!(
            fe.wait_for_backend(&mut xs, XenbusState::InitWait, &mut Never),
            Ok(XenbusState::InitWait)
        );
        fe.connect(
            &mut xs,
            &[("tx-ring-ref", "8"), ("event-channel", "5")],
            &mut Never,
        )
        .unwrap();
        let st = xs.transport_mut().store();
        assert_eq!(
            st.read_str(&format!("{FE}/tx-ring-ref")).as_deref(),
            Some("8")
        );
        assert_eq!(
            st.read_str(&format!("{FE}/event-channel")).as_deref(),
            Some("5")
        );
        assert_eq!(fe_state(&mut xs).as_deref(), Some("4"));
        assert_eq!(fe.backend_state(&mut xs), Ok(XenbusState::Connected));
        fe.close(&mut xs, &mut Never).unwrap();
        assert_eq!(fe_state(&mut xs).as_deref(), Some("6"));
        assert_eq!(fe.backend_state(&mut xs), Ok(XenbusState::Closed));
    }

    #[test]
    fn backend_closing_during_connect_is_an_error_and_we_close() {
        let mut xs = setup();
        xs.transport_mut().add_peer(|st: &mut Store| {
            if state(st, FE).as_deref() == Some("3") && state(st, BE).as_deref() == Some("1") {
                st.write(&format!("{BE}/state"), b"6");
            }
        });
        let mut fe = Frontend::attach(&mut xs, "device/vif/0").unwrap();
        let r = fe.connect(&mut xs, &[("k", "v")], &mut Never);
        assert_eq!(
            r,
            Err(XenbusError::UnexpectedBackendState {
                state: XenbusState::Closed,
                waiting_for: XenbusState::Connected
            })
        );
        assert_eq!(fe_state(&mut xs).as_deref(), Some("6"));
    }

    #[test]
    fn garbage_backend_state_is_an_error_and_we_close() {
        let mut xs = setup();
        xs.transport_mut()
            .store()
            .write(&format!("{BE}/state"), b"connected!");
        let mut fe = Frontend::attach(&mut xs, "device/vif/0").unwrap();
        let r = fe.connect(&mut xs, &[], &mut Never);
        assert_eq!(r, Err(XenbusError::BadState("connected!".to_string())));
        assert_eq!(fe_state(&mut xs).as_deref(), Some("6"));
    }

    #[test]
    fn timeout_while_the_backend_never_connects() {
        let mut xs = setup();
        let mut fe = Frontend::attach(&mut xs, "device/vif/0").unwrap();
        let mut polls = 0;
        let mut timeout = move || {
            polls += 1;
            polls > 5
        };
        let r = fe.connect(&mut xs, &[], &mut timeout);
        assert_eq!(
            r,
            Err(XenbusError::TimedOut {
                waiting_for: XenbusState::Connected
            })
        );
        assert_eq!(
            fe_state(&mut xs).as_deref(),
            Some("6"),
            "closed without waiting"
        );
    }

    #[test]
    fn bad_device_nodes() {
        let mut xs = setup();
        let r = Frontend::attach(&mut xs, "device/vif/9");
        assert_eq!(
            r.err(),
            Some(XenbusError::Store(xenstore::Error::Xs(XsErrno::Enoent)))
        );
        xs.transport_mut()
            .store()
            .write(&format!("{FE}/backend-id"), b"70000");
        let r = Frontend::attach(&mut xs, "device/vif/0");
        assert_eq!(r.err(), Some(XenbusError::BadBackendId));
        xs.transport_mut()
            .store()
            .write(&format!("{FE}/backend"), b"relative/path");
        let r = Frontend::attach(&mut xs, "device/vif/0");
        assert_eq!(r.err(), Some(XenbusError::BadBackendPath));
    }

    #[test]
    fn publish_retries_a_conflicting_transaction() {
        let mut xs = setup();
        let fe = Frontend::attach(&mut xs, "device/vif/0").unwrap();
        // A peer that rewrites our node once, right when our transaction is open.
        let mut done = false;
        xs.transport_mut().add_peer(move |st: &mut Store| {
            if !done && st.open_transactions() > 0 {
                done = true;
                st.write(&format!("{FE}/state"), b"1");
            }
        });
        fe.publish(&mut xs, &[("ring-ref", "9")], XenbusState::Initialised)
            .unwrap();
        assert_eq!(fe_state(&mut xs).as_deref(), Some("3"));
    }
}
