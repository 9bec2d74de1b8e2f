//! The xenbus handshake of a disk, read as the protocol ([`Blkfront::connect`]):
//!
//! 1. attach to the device node (its `backend`, `backend-id`) and wait for the backend to reach
//!    InitWait, when it has published its transport parameters;
//! 2. read `max-ring-page-order` (or the older `max-ring-pages`) and
//!    `feature-max-indirect-segments`;
//! 3. allocate and grant the ring pages (several when offered and the platform can map them
//!    contiguously, one otherwise), an event channel, and a pool of data pages (plus the indirect
//!    descriptor pages their requests need) granted once for the life of the connection (so we
//!    are a persistent-grants frontend);
//! 4. in one transaction write `ring-ref` (or `ring-page-order`, `num-ring-pages`,
//!    `ring-ref0..N`), `event-channel`, `protocol = x86_64-abi`, `feature-persistent = 1` and
//!    state Initialised; wait for Connected; state Connected;
//! 5. read and validate the disk: `sectors`, `info`, `sector-size`, and the optional features
//!    `feature-flush-cache`, `feature-barrier`, `feature-discard`.
//!
//! And the reverse ([`Blkfront::disconnect`]).
//!
//! After a restore or migration the same steps run again ([`Blkfront::on_restore`] registers how
//! the disk reaches xenstore then; the engine decides when, see [`crate::io`]): attach anew (the
//! backend path and domain may have changed), our state back to Initialising, a backend that is
//! not in InitWait refused, a new ring and event channel, the pool's pages granted again on their
//! new frames (descriptor pages added or freed for the new limits), and the disk must be the
//! same one (`sectors`, `sector-size`).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use alloc::boxed::Box;
use xen::hal::{Hal, HalError, SharedPage};
use xen::ring::FrontRing;
use xen::shmem::ShMem;
use xen::xenbus::{watch_token, Frontend, Timeout, XenbusError, XenbusState};
use xen::xenstore::{Client, Transport, Tx};

use crate::api::Blkfront;
use crate::error::Error;
use crate::io::{descriptor_pages, Config, Connection, Engine, Features, Page, Parts};
use crate::wire::{self, MAX_SEGMENTS, PAGE_SIZE, SEGMENTS_PER_INDIRECT_PAGE, WIRE_SECTOR};

/// Largest ring we ask for: 2^4 pages (Linux's `XENBUS_MAX_RING_GRANT_ORDER`).
pub const MAX_RING_PAGE_ORDER: u32 = 4;

/// Largest data pool (pages are numbered with `u16`, descriptor pages after the data pages).
const MAX_DATA_PAGES: usize = 1 << 15;

/// What the backend offers before we connect (step 2).
struct Offer {
    /// The ring's page order we use.
    order: u32,
    /// The backend's `feature-max-indirect-segments`.
    indirect: u32,
}

impl Offer {
    /// Reads step 2's nodes; unusable values count as not offered.
    fn read<T: Transport>(fe: &Frontend, xs: &mut Client<T>, config: &Config) -> Offer {
        let max_order = match read_number(fe, xs, "max-ring-page-order") {
            Ok(Some(o)) => o.min(u32::MAX.into()) as u32,
            Ok(None) => match read_number(fe, xs, "max-ring-pages") {
                Ok(Some(n)) if n.is_power_of_two() => n.trailing_zeros(),
                _ => 0,
            },
            Err(e) => {
                log::warn!("blkfront: ignoring max-ring-page-order: {e}");
                0
            }
        };
        let order = max_order
            .min(config.max_ring_page_order)
            .min(MAX_RING_PAGE_ORDER);
        let indirect = match read_number(fe, xs, "feature-max-indirect-segments") {
            Ok(v) => v.unwrap_or(0).min(u32::MAX.into()) as u32,
            Err(e) => {
                log::warn!("blkfront: ignoring feature-max-indirect-segments: {e}");
                0
            }
        };
        Offer { order, indirect }
    }

    /// Most segments per request for a pool of `data_pages`.
    fn per_request(&self, config: &Config, data_pages: usize) -> usize {
        let indirect_max = (self.indirect as usize)
            .min(config.max_indirect_segments)
            .min(wire::MAX_INDIRECT_PAGES * SEGMENTS_PER_INDIRECT_PAGE);
        indirect_max.max(MAX_SEGMENTS).min(data_pages)
    }
}

/// Pages, grants and the event channel, while the connection is being set up.
#[derive(Default)]
struct Resources {
    ring: Option<FrontRing>,
    ring_mem: Option<ShMem>,
    ring_pages: Vec<(u64, u32)>,
    port: Option<u32>,
    pages: Vec<Page>,
}

impl Resources {
    /// Ends the grants and frees what the backend no longer maps; a page whose grant the backend
    /// still holds is leaked rather than reused.
    fn release<H: Hal>(self, hal: &mut H) {
        if let Some(port) = self.port {
            hal.close_evtchn(port);
        }
        let ring_mem = self
            .ring
            .as_ref()
            .map(|r| r.mem().clone())
            .or(self.ring_mem);
        for (i, (mfn, gref)) in self.ring_pages.into_iter().enumerate() {
            if hal.end_grant(gref).is_ok() {
                if let Some(mem) = ring_mem
                    .as_ref()
                    .and_then(|m| m.slice(i * PAGE_SIZE, PAGE_SIZE).ok())
                {
                    hal.free_page(SharedPage { mem, mfn });
                }
            }
        }
        for p in self.pages {
            if hal.end_grant(p.gref).is_ok() {
                hal.free_page(SharedPage {
                    mem: p.mem,
                    mfn: p.mfn,
                });
            }
        }
    }
}

/// A backend node as an unsigned number, if present; `Err` when present but not a number.
fn read_number<T: Transport>(
    fe: &Frontend,
    xs: &mut Client<T>,
    key: &'static str,
) -> Result<Option<u64>, Error> {
    let v = match fe.read_backend(xs, key) {
        Ok(v) => v,
        Err(XenbusError::Store(xen::xenstore::Error::Xs(xen::xenstore::XsErrno::Enoent))) => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    let t = v.trim_end_matches('\0').trim();
    if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_node(key, &v));
    }
    t.parse().map(Some).map_err(|_| bad_node(key, &v))
}

fn bad_node(key: &'static str, value: &str) -> Error {
    Error::BadBackendNode {
        key,
        value: value.chars().take(32).collect(),
    }
}

/// An optional boolean feature: absent or unreadable means not offered.
fn read_feature<T: Transport>(fe: &Frontend, xs: &mut Client<T>, key: &'static str) -> bool {
    match read_number(fe, xs, key) {
        Ok(v) => v == Some(1),
        Err(e) => {
            log::warn!("blkfront: ignoring {key}: {e}");
            false
        }
    }
}

impl<H: Hal> Blkfront<H> {
    /// Connects to the disk at `node` (e.g. `device/vbd/768`), waiting for the backend with
    /// `timeout`. On failure everything allocated is released and the frontend closed.
    ///
    /// The handle is the disk's async API; for blocking calls wrap it in
    /// [`Blocking`](crate::Blocking).
    pub fn connect<T: Transport>(
        mut hal: H,
        xs: &mut Client<T>,
        node: &str,
        config: Config,
        timeout: &mut impl Timeout,
    ) -> Result<Self, Error> {
        // 1. The backend, and its transport parameters.
        let mut fe = Frontend::attach(xs, node)?;
        let mut res = Resources::default();
        match Self::setup(&mut hal, xs, &mut fe, &mut res, config, timeout) {
            Ok(mut disk_params) => {
                // `setup` succeeded, so it made the ring.
                let Some(ring) = res.ring.take() else {
                    res.release(&mut hal);
                    return Err(Error::Hal(HalError::OutOfMemory));
                };
                disk_params.features.ring_pages = res.ring_pages.len() as u32;
                let node = String::from(fe.node());
                let engine = Engine::new(Parts {
                    hal,
                    fe,
                    conn: Connection {
                        ring,
                        ring_pages: core::mem::take(&mut res.ring_pages),
                        port: res.port.unwrap_or_default(),
                        pages: core::mem::take(&mut res.pages),
                        data_pages: disk_params.data_pages,
                        handle: disk_params.handle,
                        info: disk_params.info,
                        features: disk_params.features,
                    },
                    wire_sectors: disk_params.wire_sectors,
                    sector_size: disk_params.sector_size,
                    config,
                    node,
                });
                Ok(Blkfront::new(engine))
            }
            Err(e) => {
                let _ = fe.close(xs, timeout);
                res.release(&mut hal);
                Err(e)
            }
        }
    }

    /// Steps 1-5 of the handshake (see the module documentation).
    fn setup<T: Transport>(
        hal: &mut H,
        xs: &mut Client<T>,
        fe: &mut Frontend,
        res: &mut Resources,
        config: Config,
        timeout: &mut impl Timeout,
    ) -> Result<DiskParams, Error> {
        let backend = fe.backend_id();
        fe.wait_for_backend(xs, XenbusState::InitWait, timeout)?;

        // 2. Transport parameters the backend offers.
        let offer = Offer::read(fe, xs, &config);

        // 3. Ring pages (several if we can), event channel, data pool.
        make_ring(hal, backend, offer.order, res)?;
        let data_pages = config.data_pages.clamp(2, MAX_DATA_PAGES);
        let per_request = offer.per_request(&config, data_pages);
        for _ in 0..data_pages + descriptor_pages(data_pages, per_request) {
            res.pages.push(new_page(hal, backend)?);
        }

        // 4. Publish, and wait for the backend to connect.
        publish(fe, xs, res, timeout)?;

        // 5. The disk.
        read_disk(fe, xs, &offer, per_request, data_pages)
    }

    /// Closes the connection (state Closing, wait for the backend to close, state Closed) and
    /// releases the ring and the pool. Requests still in flight are dropped (their operations
    /// fail with [`Error::Disconnected`]); pages the backend
    /// still maps are leaked rather than reused. Later operations fail with
    /// [`Error::Disconnected`].
    pub fn disconnect<T: Transport>(
        &self,
        xs: &mut Client<T>,
        timeout: &mut impl Timeout,
    ) -> Result<(), Error> {
        let mut g = self.engine();
        let e = &mut *g;
        let now = e.hal.now_ns();
        e.note_generation(now);
        if !e.connected {
            return Err(Error::Disconnected);
        }
        if e.resuming {
            // The ring, grants and port died with the old domain: give the memory back.
            for p in core::mem::take(&mut e.pages) {
                let mfn = e.hal.frame(&p.mem);
                e.hal.free_page(SharedPage { mem: p.mem, mfn });
            }
            e.drop_everything();
            e.resuming = false;
            let _ = e.fe.close(xs, timeout);
            return Ok(());
        }
        e.connected = false;
        let closed = e.fe.close(xs, timeout);
        let res = Resources {
            ring: None,
            ring_mem: Some(e.ring.mem().clone()),
            ring_pages: core::mem::take(&mut e.ring_pages),
            port: Some(e.port),
            pages: core::mem::take(&mut e.pages),
        };
        res.release(&mut e.hal);
        e.drop_everything();
        Ok(closed?)
    }
}

/// What step 5 of the handshake learnt.
struct DiskParams {
    /// Data pages in the pool (descriptor pages follow them).
    data_pages: usize,
    wire_sectors: u64,
    sector_size: u32,
    info: u32,
    handle: u16,
    features: Features,
}

/// Allocates and grants the ring pages (`2^order` if the platform can map them contiguously, one
/// otherwise) and the event channel, into `res`.
fn make_ring<H: Hal>(
    hal: &mut H,
    backend: u16,
    order: u32,
    res: &mut Resources,
) -> Result<(), Error> {
    let (ring_mem, mfns) = match hal.alloc_pages(1 << order) {
        Ok(r) => r,
        Err(_) if order > 0 => hal.alloc_pages(1)?,
        Err(e) => return Err(e.into()),
    };
    res.ring_mem = Some(ring_mem.clone());
    for mfn in mfns {
        let gref = match hal.grant(backend, mfn, false) {
            Ok(g) => g,
            Err(e) => {
                // Free this page here; `release` frees the granted ones.
                let i = res.ring_pages.len();
                if let Ok(mem) = ring_mem.slice(i * PAGE_SIZE, PAGE_SIZE) {
                    hal.free_page(SharedPage { mem, mfn });
                }
                return Err(e.into());
            }
        };
        res.ring_pages.push((mfn, gref));
    }
    let ring = FrontRing::new(ring_mem, wire::ENTRY_LEN)?;
    res.ring = Some(ring);
    res.port = Some(hal.alloc_evtchn(backend)?);
    Ok(())
}

/// A new pool page, granted to `backend`.
fn new_page<H: Hal>(hal: &mut H, backend: u16) -> Result<Page, Error> {
    let page = hal.alloc_page()?;
    match hal.grant(backend, page.mfn, false) {
        Ok(gref) => Ok(Page {
            mem: page.mem,
            mfn: page.mfn,
            gref,
        }),
        Err(e) => {
            hal.free_page(page);
            Err(e.into())
        }
    }
}

/// Step 4: writes the ring's grants, the event channel, our protocol and features with state
/// Initialised, and waits for the backend to be Connected.
fn publish<T: Transport>(
    fe: &mut Frontend,
    xs: &mut Client<T>,
    res: &Resources,
    timeout: &mut impl Timeout,
) -> Result<(), Error> {
    let mut keys: Vec<(String, String)> = Vec::new();
    if res.ring_pages.len() == 1 {
        keys.push(("ring-ref".into(), format!("{}", res.ring_pages[0].1)));
    } else {
        let n = res.ring_pages.len();
        keys.push(("ring-page-order".into(), format!("{}", n.trailing_zeros())));
        keys.push(("num-ring-pages".into(), format!("{n}")));
        for (i, (_, gref)) in res.ring_pages.iter().enumerate() {
            keys.push((format!("ring-ref{i}"), format!("{gref}")));
        }
    }
    keys.push((
        "event-channel".into(),
        format!("{}", res.port.unwrap_or_default()),
    ));
    keys.push(("protocol".into(), wire::PROTOCOL.into()));
    keys.push(("feature-persistent".into(), "1".into()));
    let key_refs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    fe.connect(xs, &key_refs, timeout)?;
    Ok(())
}

/// Step 5: reads and validates the disk and its optional features.
fn read_disk<T: Transport>(
    fe: &Frontend,
    xs: &mut Client<T>,
    offer: &Offer,
    per_request: usize,
    data_pages: usize,
) -> Result<DiskParams, Error> {
    let wire_sectors =
        read_number(fe, xs, "sectors")?.ok_or_else(|| bad_node("sectors", "(missing)"))?;
    let sector_size = read_number(fe, xs, "sector-size")?.unwrap_or(512);
    if !sector_size.is_power_of_two() || !(512..=PAGE_SIZE as u64).contains(&sector_size) {
        return Err(bad_node("sector-size", &format!("{sector_size}")));
    }
    let per_sector = sector_size / WIRE_SECTOR as u64;
    if wire_sectors == 0
        || wire_sectors.checked_mul(WIRE_SECTOR as u64).is_none()
        || wire_sectors % per_sector != 0
    {
        return Err(bad_node("sectors", &format!("{wire_sectors}")));
    }
    let info = read_number(fe, xs, "info")?.unwrap_or(0);
    let info = u32::try_from(info).map_err(|_| bad_node("info", &format!("{info}")))?;
    let handle = xs
        .read_string(Tx::NONE, &format!("{}/virtual-device", fe.node()))
        .ok()
        .and_then(|v| v.trim_end_matches('\0').trim().parse::<u16>().ok())
        .unwrap_or(0);

    let features = Features {
        flush: read_feature(fe, xs, "feature-flush-cache"),
        barrier: read_feature(fe, xs, "feature-barrier"),
        discard: read_feature(fe, xs, "feature-discard"),
        persistent: read_feature(fe, xs, "feature-persistent"),
        backend_indirect_segments: offer.indirect,
        ring_pages: 0,
        segments_per_request: per_request,
    };
    Ok(DiskParams {
        data_pages,
        wire_sectors,
        sector_size: sector_size as u32,
        info,
        handle,
        features,
    })
}

// ---- After a restore ----------------------------------------------------------------------------

impl<H: Hal + 'static> Blkfront<H> {
    /// How the disk reaches xenstore to reconnect after a restore or migration: `access` is
    /// called with a function to run on a xenstore client and a timeout for the handshake
    /// (`disk::connect` registers this on Xen, so apps need nothing). The engine calls it at its
    /// first poll in the new domain, and again with a doubling backoff while it fails; without
    /// it a restored disk fails its operations with [`Error::NoXenstore`].
    ///
    /// ```ignore
    /// disk.on_restore(|run| {
    ///     let _ = with_xenstore(|xs| run(xs, &mut Deadline::after(XenClock, 10_000_000_000)));
    /// });
    /// ```
    pub fn on_restore<T: Transport + 'static>(
        &self,
        mut access: impl FnMut(&mut dyn FnMut(&mut Client<T>, &mut dyn Timeout)) + 'static,
    ) {
        let hook = move |e: &mut Engine<H>| -> Result<(), Error> {
            let mut r = Err(Error::NoXenstore);
            access(&mut |xs, t| {
                let mut timeout = || t.expired();
                r = reconnect(e, xs, &mut timeout);
            });
            r
        };
        self.engine().resume = Some(Box::new(hook));
    }
}

/// The handshake again, in a new domain (see the module documentation); on success the engine
/// has its new ring, port, grants and features. On failure everything this attempt made is
/// released and the frontend closed; the old pool's memory is kept (its pages hold the data of
/// the requests to resubmit).
fn reconnect<H: Hal, T: Transport>(
    e: &mut Engine<H>,
    xs: &mut Client<T>,
    timeout: &mut impl Timeout,
) -> Result<(), Error> {
    // The old watch (whatever the platform kept of it) goes; attach sets it again.
    let _ = xs.unwatch(
        &format!("{}/state", e.fe.backend()),
        &watch_token(e.fe.node()),
    );
    let mut fe = Frontend::attach(xs, &e.node)?;
    let mut res = Resources::default();
    let mut regranted: Vec<(u64, u32)> = Vec::new();
    match resume_setup(e, xs, &mut fe, &mut res, &mut regranted, timeout) {
        Ok((params, offer_pages)) => {
            let Some(ring) = res.ring.take() else {
                return Err(Error::Hal(HalError::OutOfMemory));
            };
            let mut features = params.features;
            features.ring_pages = res.ring_pages.len() as u32;
            // The pool: data pages, the kept descriptor pages, then the new ones.
            let old = core::mem::take(&mut e.pages);
            let mut pages = Vec::with_capacity(regranted.len() + res.pages.len());
            let mut spare = Vec::new();
            for (i, p) in old.into_iter().enumerate() {
                match regranted.get(i) {
                    Some(&(mfn, gref)) => pages.push(Page {
                        mem: p.mem,
                        mfn,
                        gref,
                    }),
                    None => spare.push(p),
                }
            }
            pages.append(&mut res.pages);
            debug_assert_eq!(pages.len(), offer_pages);
            for p in spare {
                // A descriptor page the new limits do not need (its old grant is void).
                let mfn = e.hal.frame(&p.mem);
                e.hal.free_page(SharedPage { mem: p.mem, mfn });
            }
            e.adopt(Connection {
                ring,
                ring_pages: core::mem::take(&mut res.ring_pages),
                port: res.port.unwrap_or_default(),
                pages,
                data_pages: e.ndata,
                features,
                info: params.info,
                handle: params.handle,
            });
            e.fe = fe;
            Ok(())
        }
        Err(err) => {
            let _ = fe.close(xs, timeout);
            for (_, gref) in regranted {
                let _ = e.hal.end_grant(gref);
            }
            res.release(&mut e.hal);
            Err(err)
        }
    }
}

/// Removes the ring nodes of the other form than the one a ring of `pages` pages is published
/// in (a toolstack makes the device nodes anew after a restore, but an earlier attempt or a
/// kept directory may have left `ring-page-order` and `ring-refN` behind, which a backend would
/// read first).
fn forget_ring_keys<T: Transport>(fe: &Frontend, xs: &mut Client<T>, pages: usize) {
    let node = fe.node();
    let order = xs
        .read_string(Tx::NONE, &format!("{node}/ring-page-order"))
        .ok()
        .and_then(|v| v.trim_end_matches('\0').trim().parse::<u32>().ok());
    if pages == 1 {
        if let Some(order) = order {
            let _ = xs.rm(Tx::NONE, &format!("{node}/ring-page-order"));
            let _ = xs.rm(Tx::NONE, &format!("{node}/num-ring-pages"));
            for i in 0..1u32 << order.min(MAX_RING_PAGE_ORDER) {
                let _ = xs.rm(Tx::NONE, &format!("{node}/ring-ref{i}"));
            }
        }
    } else if order.is_none() || xs.read(Tx::NONE, &format!("{node}/ring-ref")).is_ok() {
        let _ = xs.rm(Tx::NONE, &format!("{node}/ring-ref"));
    }
}

/// Steps 1-5 in a new domain; returns the disk and how many pool pages the new limits take.
fn resume_setup<H: Hal, T: Transport>(
    e: &mut Engine<H>,
    xs: &mut Client<T>,
    fe: &mut Frontend,
    res: &mut Resources,
    regranted: &mut Vec<(u64, u32)>,
    timeout: &mut impl Timeout,
) -> Result<(DiskParams, usize), Error> {
    let backend = fe.backend_id();
    // A new backend waits in InitWait for a frontend in Initialising; one already past it is
    // what the old domain left behind.
    fe.set_state(xs, XenbusState::Initialising)?;
    let state = fe.wait_for_backend(xs, XenbusState::InitWait, timeout)?;
    if state != XenbusState::InitWait {
        return Err(Error::Xenbus(XenbusError::UnexpectedBackendState {
            state,
            waiting_for: XenbusState::InitWait,
        }));
    }
    let offer = Offer::read(fe, xs, &e.config);
    make_ring(&mut e.hal, backend, offer.order, res)?;
    // The pool on its pages' new frames: the data pages, then as many descriptor pages as the
    // new limits need (kept ones first).
    let ndata = e.ndata;
    let per_request = offer.per_request(&e.config, ndata);
    let want = ndata + descriptor_pages(ndata, per_request);
    for p in e.pages.iter().take(want) {
        let mfn = e.hal.frame(&p.mem);
        let gref = e.hal.grant(backend, mfn, false)?;
        regranted.push((mfn, gref));
    }
    while regranted.len() + res.pages.len() < want {
        res.pages.push(new_page(&mut e.hal, backend)?);
    }
    forget_ring_keys(fe, xs, res.ring_pages.len());
    publish(fe, xs, res, timeout)?;
    let params = read_disk(fe, xs, &offer, per_request, ndata)?;
    if params.wire_sectors != e.wire_sectors || params.sector_size != e.sector_size {
        return Err(Error::DiskChanged {
            sectors: e.wire_sectors,
            sector_size: e.sector_size,
            new_sectors: params.wire_sectors,
            new_sector_size: params.sector_size,
        });
    }
    Ok((params, want))
}
