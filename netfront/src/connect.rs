//! The xenbus handshake of a vif, read as the protocol: attach to the backend, wait for it to
//! publish its features, read our MAC, set up rings, buffers and an event channel, publish them
//! in one transaction, and connect; and the reverse at shutdown.

use alloc::format;
use alloc::string::{String, ToString};

use alloc::vec::Vec;
use xen::hal::Hal;

use xen::xenbus::{Frontend, Never, Timeout, XenbusState};
use xen::xenstore::{self, Client, Transport, Tx, XsErrno};

use crate::driver::{end_grants, Config, Granted, Netfront};
use crate::error::Error;
use crate::wire::parse_mac;

/// Reads a backend feature flag: `"1"` is on; absent, `"0"` or anything else is off.
fn backend_flag<T: Transport>(fe: &Frontend, xs: &mut Client<T>, key: &str) -> Result<bool, Error> {
    match fe.read_backend(xs, key) {
        Ok(v) => Ok(v.trim_end_matches(['\0', '\n']).trim() == "1"),
        Err(xen::xenbus::XenbusError::Store(xenstore::Error::Xs(XsErrno::Enoent))) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Our MAC: `<node>/mac` (written by the toolstack), else `<backend>/mac`.
fn read_mac<T: Transport>(fe: &Frontend, xs: &mut Client<T>) -> Result<[u8; 6], Error> {
    let text = match xs.read_string(Tx::NONE, &format!("{}/mac", fe.node())) {
        Ok(t) => t,
        Err(xenstore::Error::Xs(XsErrno::Enoent)) => fe.read_backend(xs, "mac")?,
        Err(e) => return Err(e.into()),
    };
    parse_mac(&text).ok_or_else(|| Error::BadMac(text.chars().take(32).collect()))
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
        mut config: Config,
        timeout: &mut impl Timeout,
    ) -> Result<Self, Error> {
        let mut fe = Frontend::attach(xs, node)?;
        let prepared = (|| {
            fe.wait_for_backend(xs, XenbusState::InitWait, timeout)?;
            let mac = read_mac(&fe, xs)?;
            if !backend_flag(&fe, xs, "feature-rx-copy")? {
                return Err(Error::NoRxCopy);
            }
            config.sg &= backend_flag(&fe, xs, "feature-sg")?;
            // Transmit GSO: netback accepts TCP/IPv4 GSO from us if it offers it.
            config.tso &= backend_flag(&fe, xs, "feature-gso-tcpv4")?;
            Netfront::new(hal, fe.backend_id(), mac, config)
        })();
        let mut nf = match prepared {
            Ok(nf) => nf,
            Err(e) => {
                let _ = fe.close(xs, timeout);
                return Err(e);
            }
        };
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
        if let Err(e) = fe.connect_first(xs, &keys, timeout) {
            let _ = nf.release();
            return Err(e.into());
        }
        nf.link_up = true;
        nf.xenbus = Some(fe);
        Ok(nf)
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
    /// Moves the close on without waiting: once the backend is Closing or Closed (or gone, or
    /// unreadable), sets our state Closed and closes the event channel; then ends the grants the
    /// backend no longer maps and frees their pages. The platform (or the first error) once
    /// everything is released (the close is then over: later steps return `None`); `None`
    /// while something is left to wait for.
    pub fn step<T: Transport>(&mut self, xs: &mut Client<T>) -> Option<Result<H, Error>> {
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
