//! The xenbus handshake of a vif, read as the protocol: attach to the backend, wait for it to
//! publish its features, read our MAC, set up rings, buffers and an event channel, publish them
//! in one transaction, and connect; and the reverse at shutdown.

use alloc::format;
use alloc::string::{String, ToString};

use alloc::vec::Vec;
use xen::hal::Hal;

use xen::xenbus::{Frontend, Never, Timeout, XenbusState};
use xen::xenstore::{self, Client, Op, Transport, Tx, XsErrno};

use crate::driver::{end_grants, Config, Granted, Netfront, ResumeState};
use crate::error::Error;
use crate::wire::parse_mac;

/// A backend feature flag as read: `"1"` is on; absent, `"0"` or anything else is off.
fn flag(read: Result<Vec<u8>, xenstore::Error>) -> Result<bool, Error> {
    match read {
        Ok(v) => {
            Ok(core::str::from_utf8(&v)
                .is_ok_and(|v| v.trim_end_matches(['\0', '\n']).trim() == "1"))
        }
        Err(xenstore::Error::Xs(XsErrno::Enoent)) => Ok(false),
        Err(e) => Err(xen::xenbus::XenbusError::from(e).into()),
    }
}

/// Our MAC as read from `<node>/mac` (written by the toolstack), else `<backend>/mac`.
fn read_mac<T: Transport>(
    fe: &Frontend,
    xs: &mut Client<T>,
    ours: Result<Vec<u8>, xenstore::Error>,
) -> Result<[u8; 6], Error> {
    let text = match ours {
        Ok(t) => String::from_utf8(t).map_err(|_| Error::from(xenstore::Error::NotUtf8))?,
        Err(xenstore::Error::Xs(XsErrno::Enoent)) => fe.read_backend(xs, "mac")?,
        Err(e) => return Err(e.into()),
    };
    parse_mac(&text).ok_or_else(|| Error::BadMac(text.chars().take(32).collect()))
}

/// Steps 2 and 3 of the handshake (see [`Netfront::connect`]): waits for the backend's
/// InitWait, reads our MAC and the backend's features (in one round trip), and cuts `config`
/// down to them.
fn negotiate<T: Transport>(
    fe: &mut Frontend,
    xs: &mut Client<T>,
    mut config: Config,
    timeout: &mut impl Timeout,
) -> Result<([u8; 6], Config), Error> {
    let be = fe.backend();
    let paths = [
        format!("{be}/state"),
        format!("{}/mac", fe.node()),
        format!("{be}/feature-rx-copy"),
        format!("{be}/feature-sg"),
        format!("{be}/feature-gso-tcpv4"),
    ];
    let reads = paths.each_ref().map(|p| Op::Read(p));
    // The backend writes its features before InitWait and the daemon answers in order: when
    // the state read first says InitWait or later, the rest of the batch is valid. Usually
    // the backend is there already (the toolstack waits for it before starting us): one round
    // trip, with the watch on its state first if it is not set yet; else wait for it and read
    // again.
    let watch = fe.watch_op();
    let mut ops: Vec<Op> = Vec::with_capacity(reads.len() + 1);
    if let Some((path, token)) = &watch {
        ops.push(Op::Watch(path, token));
    }
    ops.extend_from_slice(&reads);
    let mut replies = xs.batch(Tx::NONE, &ops)?;
    if watch.is_some() {
        replies.remove(0)?;
        fe.watched();
    }
    let state = match replies[0].as_deref() {
        Ok(v) => XenbusState::parse(v)?,
        Err(xenstore::Error::Xs(XsErrno::Enoent)) => XenbusState::Unknown,
        Err(e) => return Err(xen::xenbus::XenbusError::from(e.clone()).into()),
    };
    if state < XenbusState::InitWait || state >= XenbusState::Closing {
        fe.wait_for_backend(xs, XenbusState::InitWait, timeout)?;
        replies = xs.batch(Tx::NONE, &reads)?;
    }
    let mut r = replies.into_iter().skip(1);
    let mut next = || r.next().unwrap_or(Err(xenstore::Error::Broken));
    let (mac, rx_copy, sg, gso) = (next(), next(), next(), next());
    let mac = read_mac(fe, xs, mac)?;
    if !flag(rx_copy)? {
        return Err(Error::NoRxCopy);
    }
    config.sg &= flag(sg)?;
    // Transmit GSO: netback accepts TCP/IPv4 GSO from us if it offers it.
    config.tso &= flag(gso)?;
    Ok((mac, config))
}

/// Step 5 of the handshake: what the frontend publishes with state Connected, then waits for
/// the backend to connect (the frontend is closed on failure).
fn publish<H: Hal, T: Transport>(
    nf: &Netfront<H>,
    fe: &mut Frontend,
    xs: &mut Client<T>,
    timeout: &mut impl Timeout,
) -> Result<(), Error> {
    let tx_ref = nf.tx_ring_ref().to_string();
    let rx_ref = nf.rx_ring_ref().to_string();
    let port = nf.event_channel().to_string();
    let gso = if nf.gso() { "1" } else { "0" };
    let keys: [(&str, &str); 10] = [
        ("tx-ring-ref", &tx_ref),
        ("rx-ring-ref", &rx_ref),
        ("event-channel", &port),
        ("request-rx-copy", "1"),
        ("feature-rx-notify", "1"),
        ("feature-sg", "1"),
        // netif.h: absent means offload on; write it either way, to be explicit.
        (
            "feature-no-csum-offload",
            if nf.csum_offload() { "0" } else { "1" },
        ),
        // Receive GSO (netback sends TCP super-frames), only with checksum offload; TSO6
        // needs IPv6 checksum offload too.
        ("feature-gso-tcpv4", gso),
        ("feature-gso-tcpv6", gso),
        ("feature-ipv6-csum-offload", gso),
    ];
    // Linux's netback connects when the frontend says Connected (it ignores Initialised), so
    // publish as Connected and then wait for it. On failure the frontend is closed already.
    fe.connect_first(xs, &keys, timeout)?;
    Ok(())
}

/// The first wait before retrying a reconnect that failed; doubled at each failure up to
/// [`RETRY_MAX_NS`].
pub const RETRY_MIN_NS: u64 = 100_000_000;
/// The longest wait between reconnect attempts.
pub const RETRY_MAX_NS: u64 = 10_000_000_000;

/// A reconnect that succeeded (see [`Netfront::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnected {
    /// The platform's generation it reconnected in.
    pub generation: u64,
    /// The new backend's domain.
    pub backend_id: u16,
    /// From noticing the move to the backend Connected (every attempt, and the waits between).
    pub took_ns: u64,
    /// Attempts it took (1 when the first one worked).
    pub attempts: u32,
    /// Frames kept to be sent again (the old backend had not acknowledged them).
    pub resend: usize,
    /// The MAC before, when the toolstack gave the vif another one (the new one is in use).
    pub old_mac: Option<[u8; 6]>,
}

/// What [`Netfront::resume`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Nothing to do: the domain did not move.
    Live,
    /// Reconnected to the (new) backend: the link is up.
    Reconnected(Reconnected),
    /// An attempt failed with this error (logged); the next one is due at `retry_at` (ns).
    Failed {
        /// Why.
        error: Error,
        /// When to try again.
        retry_at: u64,
    },
    /// Waiting until `retry_at` (ns) before the next attempt.
    Waiting {
        /// When to try again.
        retry_at: u64,
    },
}

impl<H: Hal> Netfront<H> {
    /// Connects the vif at `node` (e.g. `"device/vif/0"`):
    ///
    /// 1. attach: read `backend` and `backend-id`, watch the backend's state;
    /// 2. wait for the backend to reach InitWait (its features are written by then);
    /// 3. read `mac`, `feature-rx-copy` (required), `feature-sg` (else TX frames are kept
    ///    within a page) and `feature-gso-tcpv4` (else no transmit GSO, `Config::tso`);
    /// 4. allocate and grant the rings and buffers, allocate the event channel
    ///    ([`Netfront::new`]);
    /// 5. in one transaction write `tx-ring-ref`, `rx-ring-ref`, `event-channel`,
    ///    `request-rx-copy=1`, `feature-rx-notify=1`, `feature-sg=1`,
    ///    `feature-no-csum-offload` (`0`: IPv4 checksum offload accepted, or `1` when
    ///    `config.csum_offload` is false), `feature-gso-tcpv4`, `feature-gso-tcpv6` and
    ///    `feature-ipv6-csum-offload` (each `1` with `config.gso` and `config.csum_offload`,
    ///    else `0`) and
    ///    `state=Connected` (as Linux's netfront does: netback acts on Connected, not
    ///    Initialised);
    /// 6. wait for the backend to be Connected: the link is up.
    ///
    /// On any error the frontend is closed, everything allocated is released and the first
    /// error returned.
    pub fn connect<T: Transport>(
        xs: &mut Client<T>,
        hal: H,
        node: &str,
        config: Config,
        timeout: &mut impl Timeout,
    ) -> Result<Self, Error> {
        let fe = Frontend::attach(xs, node)?;
        Self::connect_attached(xs, hal, fe, config, timeout)
    }

    /// [`connect`](Self::connect) from step 2, with a frontend attached by the caller (e.g.
    /// [`Frontend::attach_read`] from reads batched with its own; the watch on the backend's
    /// state is then set in the first batch of step 2).
    pub fn connect_attached<T: Transport>(
        xs: &mut Client<T>,
        hal: H,
        mut fe: Frontend,
        config: Config,
        timeout: &mut impl Timeout,
    ) -> Result<Self, Error> {
        let prepared = (|| {
            let (mac, cut) = negotiate(&mut fe, xs, config, timeout)?;
            let mut nf = Netfront::new(hal, fe.backend_id(), mac, cut)?;
            // A reconnect negotiates from what was asked for, not from this backend's cut.
            nf.config = config;
            Ok(nf)
        })();
        let mut nf = match prepared {
            Ok(nf) => nf,
            Err(e) => {
                let _ = fe.close(xs, timeout);
                return Err(e);
            }
        };
        if let Err(e) = publish(&nf, &mut fe, xs, timeout) {
            let _ = nf.release();
            return Err(e);
        }
        nf.link_up = true;
        nf.node = Some(fe.node().into());
        nf.xenbus = Some(fe);
        Ok(nf)
    }

    /// Reconnects after the domain moved (restored or migrated), if it did: forgets the old
    /// grants, port and rings ([`needs_reconnect`](Self::needs_reconnect)), and makes one
    /// attempt at the handshake of [`connect`](Self::connect) on the node's (possibly new)
    /// backend — the toolstack recreated the device's nodes, the backend path and domain may
    /// differ — with the pages the driver has (granted again at their new frames), a new event
    /// channel, features negotiated again (the new backend may offer less), and every RX buffer
    /// posted. Frames the old backend had not acknowledged are sent again first, in order, as
    /// soon as the device transmits. A failed attempt (logged, with the same errors as at boot)
    /// is retried no sooner than 100 ms later, then 200 ms... up to 10 s apart: call this at
    /// every poll. Blocks in the handshake as [`connect`](Self::connect) does (up to
    /// `timeout`).
    pub fn resume<T: Transport>(
        &mut self,
        xs: &mut Client<T>,
        timeout: &mut impl Timeout,
    ) -> Resume {
        if !self.needs_reconnect() {
            return Resume::Live;
        }
        let now = self.hal.now_ns();
        if self.live || self.hal.generation() != self.generation {
            // Noticed now (or moved again while reconnecting): start over.
            self.forget();
            self.resume = ResumeState {
                since_ns: now,
                ..Default::default()
            };
        }
        if now < self.resume.retry_at {
            return Resume::Waiting {
                retry_at: self.resume.retry_at,
            };
        }
        self.resume.attempts += 1;
        let old_mac = self.mac;
        match self.reconnect(xs, timeout) {
            Ok(()) => {
                let r = Reconnected {
                    generation: self.generation,
                    backend_id: self.backend_id,
                    took_ns: self.hal.now_ns().saturating_sub(self.resume.since_ns),
                    attempts: self.resume.attempts,
                    resend: self.tx.resend.len(),
                    old_mac: (old_mac != self.mac).then_some(old_mac),
                };
                self.stats.reconnects += 1;
                self.resume.announce = true;
                if let Some(m) = r.old_mac {
                    log::warn!(
                        "netfront: the MAC changed across the move: {} -> {}",
                        format_mac(m),
                        format_mac(self.mac)
                    );
                }
                log::info!(
                    "netfront: {} reconnected after the move (generation {}, backend domain {}) in {} \
                     ms, {} attempt(s), {} frames to resend",
                    self.node.as_deref().unwrap_or("vif"),
                    r.generation,
                    r.backend_id,
                    r.took_ns / 1_000_000,
                    r.attempts,
                    r.resend
                );
                Resume::Reconnected(r)
            }
            Err(error) => {
                let b = (self.resume.backoff_ns * 2).clamp(RETRY_MIN_NS, RETRY_MAX_NS);
                self.resume.backoff_ns = b;
                self.resume.retry_at = self.hal.now_ns().saturating_add(b);
                log::warn!(
                    "netfront: {}: reconnect attempt {} failed: {error}; retrying in {} ms",
                    self.node.as_deref().unwrap_or("vif"),
                    self.resume.attempts,
                    b / 1_000_000
                );
                Resume::Failed {
                    error,
                    retry_at: self.resume.retry_at,
                }
            }
        }
    }

    /// When the next reconnect attempt is due (ns), while one is needed.
    pub fn retry_at(&self) -> Option<u64> {
        self.needs_reconnect().then_some(self.resume.retry_at)
    }

    /// True once after each reconnect: the caller announces the guest's new location (a
    /// gratuitous ARP, unsolicited neighbour advertisements) through [`send`](Self::send)
    /// before anything else goes out.
    pub fn take_reconnected(&mut self) -> bool {
        core::mem::take(&mut self.resume.announce)
    }

    /// One reconnect attempt (see [`resume`](Self::resume)); the driver is not live on error.
    fn reconnect<T: Transport>(
        &mut self,
        xs: &mut Client<T>,
        timeout: &mut impl Timeout,
    ) -> Result<(), Error> {
        if let Some(old) = self.xenbus.take() {
            // Its watch, if the platform kept it, names the old backend: drop it (best effort).
            let _ = xs.unwatch(
                &format!("{}/state", old.backend()),
                &xen::xenbus::watch_token(old.node()),
            );
            self.node.get_or_insert_with(|| old.node().into());
        }
        let node = self.node.clone().ok_or(Error::BadConfig)?;
        let mut fe = Frontend::attach(xs, &node)?;
        // The toolstack recreated our node as Initialising; after a failed attempt closed it,
        // Initialising again is what asks the backend for another round (as Linux's netback
        // reads it).
        let cut = fe
            .set_state(xs, XenbusState::Initialising)
            .map_err(Error::from)
            .and_then(|()| negotiate(&mut fe, xs, self.config, timeout));
        let cut = match cut {
            Ok((mac, cut)) => {
                self.mac = mac;
                cut
            }
            Err(e) => {
                let _ = fe.close(xs, timeout);
                return Err(e);
            }
        };
        self.tx.sg = cut.sg;
        self.tx.tso_max = if cut.tso && cut.sg {
            crate::driver::tso_max(self.tx.pages.len())
        } else {
            0
        };
        if let Err(e) = self.regrant(fe.backend_id()) {
            let _ = fe.close(xs, timeout);
            return Err(e);
        }
        if let Err(e) = publish(self, &mut fe, xs, timeout) {
            // The backend may have mapped the rings: end what it let go, leak the rest.
            self.hal.close_evtchn(self.port);
            self.end_attempt(usize::MAX);
            self.tx.reset();
            self.rx.reset();
            return Err(e);
        }
        self.live = true;
        self.link_up = true;
        self.xenbus = Some(fe);
        Ok(())
    }

    /// Re-reads the backend state: the link is up while it is Connected.
    pub fn poll_link<T: Transport>(&mut self, xs: &mut Client<T>) -> Result<bool, Error> {
        if let Some(fe) = &self.xenbus {
            self.link_up = fe.backend_state(xs)? == XenbusState::Connected;
        }
        Ok(self.link_up)
    }

    /// Notices a backend state change without blocking (its watch fired): the link is down
    /// once the backend leaves Connected. Returns the new state, if it changed.
    pub fn backend_changed<T: Transport>(
        &mut self,
        xs: &mut Client<T>,
    ) -> Result<Option<XenbusState>, Error> {
        let Some(fe) = &self.xenbus else {
            return Ok(None);
        };
        let changed = fe.backend_changed(xs)?;
        if let Some(s) = changed {
            self.link_up = s == XenbusState::Connected;
        }
        Ok(changed)
    }

    /// The xenstore path of our device node, once connected.
    pub fn node(&self) -> Option<&str> {
        self.xenbus.as_ref().map(|fe| fe.node())
    }

    /// Disconnects and releases everything: state Closing, wait for the backend to close (up to
    /// `timeout`), state Closed; close the event channel; end every grant, retrying (between
    /// xenstore waits) while the backend still maps a page, until `timeout`; free the pages.
    /// Pages still mapped at the deadline are leaked, never freed
    /// ([`Error::GrantsStillMapped`]). Returns the platform, or the first error. Blocks: inside
    /// an event loop, use [`begin_shutdown`](Self::begin_shutdown) and step it instead.
    pub fn shutdown<T: Transport>(
        self,
        xs: &mut Client<T>,
        timeout: &mut impl Timeout,
    ) -> Result<H, Error> {
        let mut c = self.begin_shutdown(xs);
        loop {
            if let Some(r) = c.step(xs) {
                return r;
            }
            if timeout.expired() {
                return c.give_up(xs);
            }
            // Give the backend a chance to move (on Xen `wait` also returns every 100 ms).
            let _ = xs.wait();
        }
    }

    /// Starts a shutdown that never blocks: sets our state Closing and stops the device (the
    /// link is down). Move it on with [`Closing::step`] whenever the backend's state watch
    /// fires, and every few tens of ms while it is not done (the backend unmaps our pages
    /// without telling us); [`Closing::give_up`] at the caller's deadline.
    pub fn begin_shutdown<T: Transport>(mut self, xs: &mut Client<T>) -> Closing<H> {
        if self.needs_reconnect() {
            // Every grant and the port are void (the domain moved), the frontend node is the
            // toolstack's new one: nothing to close, only pages to free.
            self.link_up = false;
            self.xenbus = None;
            return Closing {
                fe: None,
                generation: self.generation,
                hal: Some(self.discard()),
                pages: Vec::new(),
                port: None,
                first: None,
            };
        }
        let fe = self.xenbus.take();
        let mut first: Option<Error> = None;
        if let Some(fe) = &fe {
            if let Err(e) = fe.set_state(xs, XenbusState::Closing) {
                first = Some(e.into());
            }
        }
        self.link_up = false;
        let (hal, pages, port) = self.dismantle();
        Closing {
            fe,
            generation: hal.generation(),
            hal: Some(hal),
            pages,
            port: Some(port),
            first,
        }
    }
}

/// A vif shutting down without blocking (from [`Netfront::begin_shutdown`]).
pub struct Closing<H: Hal> {
    /// Our frontend, until our state is Closed.
    fe: Option<Frontend>,
    /// The generation the grants and port belong to: if the domain moves during the close,
    /// they are void and the close ends at once (the pages freed, nothing ended or closed).
    generation: u64,
    /// The platform, until handed back.
    hal: Option<H>,
    /// Pages whose grant has not ended yet.
    pages: Vec<Granted>,
    /// The event channel, open until our state is Closed.
    port: Option<u32>,
    first: Option<Error>,
}

impl<H: Hal> core::fmt::Debug for Closing<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Closing")
            .field("closed", &self.fe.is_none())
            .field("pages", &self.pages.len())
            .finish()
    }
}

impl<H: Hal> Closing<H> {
    /// The domain moved during the close: forgets the frontend, the port and the grants (all
    /// void) and frees the pages.
    fn if_moved(&mut self) {
        let Some(hal) = self.hal.as_mut() else { return };
        if hal.generation() == self.generation {
            return;
        }
        self.fe = None;
        self.port = None;
        for mut g in core::mem::take(&mut self.pages) {
            g.page.mfn = hal.frame(&g.page.mem);
            hal.free_page(g.page);
        }
    }

    /// Moves the close on without waiting: once the backend is Closing or Closed (or gone, or
    /// unreadable), sets our state Closed and closes the event channel; then ends the grants the
    /// backend no longer maps and frees their pages. The platform (or the first error) once
    /// everything is released (the close is then over: later steps return `None`); `None`
    /// while something is left to wait for.
    pub fn step<T: Transport>(&mut self, xs: &mut Client<T>) -> Option<Result<H, Error>> {
        self.if_moved();
        let hal = self.hal.as_mut()?;
        if let Some(mut fe) = self.fe.take() {
            match fe.backend_state(xs) {
                Ok(s) if s != XenbusState::Unknown && s < XenbusState::Closing => {
                    self.fe = Some(fe);
                    return None;
                }
                _ => {}
            }
            // The backend is closing (or gone): close() does not wait, it only sets our state
            // Closed and drops the watch.
            if let Err(e) = fe.close(xs, &mut Never) {
                self.first.get_or_insert(e.into());
            }
        }
        if let Some(port) = self.port.take() {
            hal.close_evtchn(port);
        }
        self.pages = end_grants(hal, core::mem::take(&mut self.pages));
        if !self.pages.is_empty() {
            return None;
        }
        let hal = self.hal.take()?;
        Some(match self.first.take() {
            Some(e) => Err(e),
            None => Ok(hal),
        })
    }

    /// Ends it at the caller's deadline: our state Closed if it is not yet (the backend never
    /// closed), the grants the backend still maps leaked, never freed
    /// ([`Error::GrantsStillMapped`]). Returns the platform, or the first error.
    /// Giving up a close that is over already (a step returned it) is [`Error::Internal`].
    pub fn give_up<T: Transport>(mut self, xs: &mut Client<T>) -> Result<H, Error> {
        self.if_moved();
        let Some(mut hal) = self.hal.take() else {
            return Err(Error::Internal);
        };
        if let Some(mut fe) = self.fe.take() {
            let mut expired = || true;
            if let Err(e) = fe.close(xs, &mut expired) {
                self.first.get_or_insert(e.into());
            }
        }
        if let Some(port) = self.port.take() {
            hal.close_evtchn(port);
        }
        let kept = end_grants(&mut hal, core::mem::take(&mut self.pages));
        if !kept.is_empty() {
            self.first
                .get_or_insert(Error::GrantsStillMapped { count: kept.len() });
            core::mem::forget(kept);
        }
        match self.first {
            Some(e) => Err(e),
            None => Ok(hal),
        }
    }
}

/// A short description of a MAC for logs: `00:16:3e:12:34:56`.
pub fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}
