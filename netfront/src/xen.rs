//! netfront on Xen: find the guest's vifs in xenstore and connect them (the stack on top is
//! `net::xen::up`).

use alloc::string::String;
use alloc::vec::Vec;

use xen::events::Channel;
use xen::platform::{with_xenstore, Watch, XenClock, XenHal};
use xen::xenbus::{Deadline, Frontend};
use xen::xenstore::{self, Op};

use smoltcp::phy::{Device, DeviceCapabilities};
use smoltcp::time::Instant;

use crate::{Closing, Config, Error, Netfront, NfRxToken, NfTxToken, Stats};

/// How long connecting a vif waits for the backend's xenbus state changes.
pub const HANDSHAKE_TIMEOUT_NS: u64 = 30_000_000_000;

/// A connected vif on Xen.
pub type Vif = Netfront<XenHal>;

/// The guest's vifs (`device/vif/ID` nodes) in id order; empty when it has none.
pub fn list() -> Result<Vec<String>, Error> {
    with_xenstore(|xs| xen::xenbus::device_nodes(xs, "vif"))
        .map_err(|_| Error::from(xenstore::Error::Broken))?
        .map_err(Error::from)
}

/// Connects the vif at `node` (e.g. `device/vif/0`).
pub fn open(node: &str) -> Result<Vif, Error> {
    with_xenstore(|xs| {
        let mut t = Deadline::after(XenClock, HANDSHAKE_TIMEOUT_NS);
        Netfront::connect(xs, XenHal, node, Config::default(), &mut t)
    })
    .map_err(|_| Error::from(xenstore::Error::Broken))?
}

/// Connects the guest's first vif (lowest id), if it has one: its node and the vif. Listing the
/// vifs and reading `device/vif/0`'s backend (the first vif, but for an odd toolstack) take one
/// round trip together, and the watch on the backend's state goes with the first reads of the
/// handshake (see [`Netfront::connect_attached`]).
pub fn open_first() -> Result<Option<(String, Vif)>, Error> {
    with_xenstore(|xs| {
        const GUESS: &str = "device/vif/0";
        let [be, id] = Frontend::backend_paths(GUESS);
        let ops = [Op::Directory("device/vif"), Op::Read(&be), Op::Read(&id)];
        let mut r = xs.batch(xenstore::Tx::NONE, &ops)?.into_iter();
        let mut next = || r.next().unwrap_or(Err(xenstore::Error::Broken));
        let (dir, be, id) = (next(), next(), next());
        let nodes = xen::xenbus::device_nodes_from("vif", dir)?;
        let Some(first) = nodes.into_iter().next() else {
            return Ok(None);
        };
        let fe = if first == GUESS {
            Frontend::attach_read(&first, be, id)?
        } else {
            Frontend::attach(xs, &first)?
        };
        let mut t = Deadline::after(XenClock, HANDSHAKE_TIMEOUT_NS);
        let vif = Netfront::connect_attached(xs, XenHal, fe, Config::default(), &mut t)?;
        Ok(Some((first, vif)))
    })
    .map_err(|_| Error::from(xenstore::Error::Broken))?
}

/// A vif under a stack, watching its backend: when the backend leaves Connected (`xl
/// network-detach`, the backend going away) the link is down, the frontend closes as the
/// protocol asks (so the toolstack's detach completes), and everything it granted is released.
///
/// It is a smoltcp [`Device`]: the vif's, until the link goes down; then it receives and
/// sends nothing (with the capabilities the vif had).
///
/// The stack is woken by the vif's event channel (frames, TX room) and by its backend's state
/// watch ([`register`](Self::register)); the backend's state is read only when that watch fired,
/// and the close never blocks a poll: it is stepped on the watch's events and every
/// [`CLOSE_RETRY_NS`] until released or [`CLOSE_TIMEOUT_NS`] passed.
///
/// After the domain moved (`xl restore`, `xl migrate`: [`xen::suspend::generation`] went up;
/// the platform wakes every task then), the next poll reconnects the vif
/// ([`Netfront::resume`]: the xenbus handshake as at boot, blocking up to
/// [`HANDSHAKE_TIMEOUT_NS`]), re-points the event channel and watches the new backend; a failed
/// attempt is retried with backoff. [`take_reconnected`](Self::take_reconnected) then tells the
/// stack to announce the guest's new location.
pub struct XenVif {
    vif: Option<Vif>,
    node: String,
    caps: DeviceCapabilities,
    /// The vif's event channel (re-pointed with `rebind` if the port changes).
    chan: Channel,
    /// The backend state watch's readiness.
    watch: Watch,
    /// A close under way, and when to give up on it.
    closing: Option<(Closing<XenHal>, u64)>,
}

/// How long a closing vif waits for the backend to close and unmap its pages.
pub const CLOSE_TIMEOUT_NS: u64 = 10_000_000_000;
/// How often a closing vif looks whether the backend unmapped its pages.
pub const CLOSE_RETRY_NS: u64 = 20_000_000;

impl XenVif {
    /// The connected `vif` at xenstore node `node`.
    pub fn new(vif: Vif, node: &str) -> XenVif {
        XenVif {
            caps: vif.capabilities(),
            chan: Channel::bind(vif.event_channel()),
            watch: Watch::new(&xen::xenbus::watch_token(node)),
            vif: Some(vif),
            node: node.into(),
            closing: None,
        }
    }

    /// The vif's counters, while it is up.
    pub fn stats(&self) -> Option<Stats> {
        self.vif.as_ref().map(|v| v.stats())
    }

    /// Asks for `waker` to be woken by the vif's event channel and its backend's state watch.
    pub fn register(&mut self, waker: &core::task::Waker) -> bool {
        self.chan.register(waker);
        self.watch.register(waker);
        true
    }

    /// Run before each poll of the stack: consumes the event that woke it (the frames and
    /// responses themselves are read by the poll); after a move, reconnects (or retries).
    pub fn before_poll(&mut self) {
        let _ = self.chan.take();
        let Some(vif) = &mut self.vif else { return };
        if !vif.needs_reconnect() {
            return;
        }
        let r = with_xenstore(|xs| {
            let mut t = Deadline::after(XenClock, HANDSHAKE_TIMEOUT_NS);
            vif.resume(xs, &mut t)
        });
        if let Ok(crate::Resume::Reconnected(_)) = r {
            self.chan.rebind(vif.event_channel());
            self.watch = Watch::new(&xen::xenbus::watch_token(&self.node));
            self.caps = vif.capabilities();
        }
    }

    /// True once after each reconnect (see [`Netfront::take_reconnected`]).
    pub fn take_reconnected(&mut self) -> bool {
        self.vif.as_mut().is_some_and(|v| v.take_reconnected())
    }

    /// Sends one complete frame, ahead of anything queued to resend (the announcements after
    /// a reconnect). False if it could not be sent now.
    pub fn send_raw(&mut self, frame: &[u8]) -> bool {
        self.vif.as_mut().is_some_and(|v| v.send(frame).is_ok())
    }

    /// Our MAC (it may change across a move), while the vif is up.
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.vif.as_ref().map(|v| v.mac())
    }

    /// Run after each poll of the stack: reads the backend's state if its watch fired, and
    /// moves a close along.
    pub fn after_poll(&mut self) {
        if self.watch.take() {
            self.check_backend();
        }
        self.step_close();
    }

    /// When the vif must be polled without an event: at the next reconnect attempt after a
    /// failed one; while it closes, every [`CLOSE_RETRY_NS`].
    pub fn poll_at(&self) -> Option<u64> {
        if let Some(at) = self.vif.as_ref().and_then(|v| v.retry_at()) {
            return Some(at);
        }
        self.closing
            .as_ref()
            .map(|_| xen::time::now_ns().saturating_add(CLOSE_RETRY_NS))
    }

    /// Checks the backend's state: when it has left Connected, starts closing the frontend
    /// (without waiting; [`after_poll`](Self::after_poll) moves the close along).
    pub fn check_backend(&mut self) {
        let Some(vif) = &mut self.vif else { return };
        // After a move the old backend's nodes are gone: that is no link down.
        if vif.needs_reconnect() {
            return;
        }
        let changed = match with_xenstore(|xs| vif.backend_changed(xs)) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                log::warn!("net: {}: reading the backend state: {e}", self.node);
                return;
            }
            Err(_) => return,
        };
        match changed {
            None | Some(xen::xenbus::XenbusState::Connected) => {}
            Some(state) => {
                log::warn!("net: {} link down (backend {state:?}): closing", self.node);
                let Some(vif) = self.vif.take() else { return };
                let Ok(c) = with_xenstore(|xs| vif.begin_shutdown(xs)) else {
                    return;
                };
                self.closing = Some((c, xen::time::now_ns().saturating_add(CLOSE_TIMEOUT_NS)));
            }
        }
    }

    /// Moves a close on (never waits).
    fn step_close(&mut self) {
        let Some((mut c, give_up_at)) = self.closing.take() else {
            return;
        };
        let Ok(step) = with_xenstore(|xs| c.step(xs)) else {
            return;
        };
        let done = match step {
            Some(r) => r,
            None if xen::time::now_ns() >= give_up_at => {
                let Ok(r) = with_xenstore(|xs| c.give_up(xs)) else {
                    return;
                };
                r
            }
            None => {
                self.closing = Some((c, give_up_at));
                return;
            }
        };
        match done {
            Ok(_) => log::info!("net: {} closed and released", self.node),
            Err(e) => log::warn!("net: {} closed: {e}", self.node),
        }
    }
}

impl Device for XenVif {
    type RxToken<'a>
        = NfRxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = NfTxToken<'a, XenHal>
    where
        Self: 'a;

    fn receive(&mut self, t: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        Device::receive(self.vif.as_mut()?, t)
    }
    fn transmit(&mut self, t: Instant) -> Option<Self::TxToken<'_>> {
        Device::transmit(self.vif.as_mut()?, t)
    }
    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}
