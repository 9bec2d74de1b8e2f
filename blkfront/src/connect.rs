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

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use xen::hal::{Hal, HalError, SharedPage};
use xen::ring::FrontRing;
use xen::shmem::ShMem;
use xen::xenbus::{Frontend, Timeout, XenbusError, XenbusState};
use xen::xenstore::{Client, Transport, Tx};

use crate::api::Blkfront;
use crate::error::Error;
use crate::io::{descriptor_pages, Engine, Features, Page, Parts};
use crate::wire::{self, MAX_SEGMENTS, PAGE_SIZE, SEGMENTS_PER_INDIRECT_PAGE, WIRE_SECTOR};

/// Largest ring we ask for: 2^4 pages (Linux's `XENBUS_MAX_RING_GRANT_ORDER`).
pub const MAX_RING_PAGE_ORDER: u32 = 4;

/// Largest data pool (pages are numbered with `u16`, descriptor pages after the data pages).
const MAX_DATA_PAGES: usize = 1 << 15;

/// Tunables of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest ring we use, as log2(pages); capped by the backend and [`MAX_RING_PAGE_ORDER`].
    pub max_ring_page_order: u32,
    /// Data pages granted to the backend for the life of the connection (bounce buffers); they
    /// bound the bytes in flight. At least 2. Indirect descriptor pages come on top (see
    /// `descriptor_pages`), so a pool of 256 moves a 1 MiB transfer in one go.
    pub data_pages: usize,
    /// Most segments per indirect request (0: never use indirect requests); also capped by the
    /// backend's `feature-max-indirect-segments` and by the pool.
    pub max_indirect_segments: usize,
    /// How long an operation may wait for the backend.
    pub io_timeout_ns: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_ring_page_order: 2,
            data_pages: 256,
            // Linux's blkback offers 256: a 1 MiB transfer is then one request.
            max_indirect_segments: 256,
            io_timeout_ns: 30_000_000_000,
        }
    }
}

/// Pages, grants and the event channel, while the connection is being set up.
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
        let mut res = Resources {
            ring: None,
            ring_mem: None,
            ring_pages: Vec::new(),
            port: None,
            pages: Vec::new(),
        };
        match Self::setup(&mut hal, xs, &mut fe, &mut res, config, timeout) {
            Ok(mut disk_params) => {
                // `setup` succeeded, so it made the ring.
                let Some(ring) = res.ring.take() else {
                    res.release(&mut hal);
                    return Err(Error::Hal(HalError::OutOfMemory));
                };
                disk_params.features.ring_pages = res.ring_pages.len() as u32;
                let engine = Engine::new(Parts {
                    hal,
                    fe,
                    ring,
                    ring_pages: core::mem::take(&mut res.ring_pages),
                    port: res.port.unwrap_or_default(),
                    pages: core::mem::take(&mut res.pages),
                    data_pages: disk_params.data_pages,
                    handle: disk_params.handle,
                    wire_sectors: disk_params.wire_sectors,
                    sector_size: disk_params.sector_size,
                    info: disk_params.info,
                    features: disk_params.features,
                    timeout_ns: config.io_timeout_ns,
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
        let backend_indirect = match read_number(fe, xs, "feature-max-indirect-segments") {
            Ok(v) => v.unwrap_or(0).min(u32::MAX.into()) as u32,
            Err(e) => {
                log::warn!("blkfront: ignoring feature-max-indirect-segments: {e}");
                0
            }
        };

        // 3. Ring pages (several if we can), event channel, data pool.
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
        let data_pages = config.data_pages.clamp(2, MAX_DATA_PAGES);
        let indirect_max = (backend_indirect as usize)
            .min(config.max_indirect_segments)
            .min(wire::MAX_INDIRECT_PAGES * SEGMENTS_PER_INDIRECT_PAGE);
        let per_request = indirect_max.max(MAX_SEGMENTS).min(data_pages);
        for _ in 0..data_pages + descriptor_pages(data_pages, per_request) {
            let page = hal.alloc_page()?;
            let gref = match hal.grant(backend, page.mfn, false) {
                Ok(g) => g,
                Err(e) => {
                    hal.free_page(page);
                    return Err(e.into());
                }
            };
            res.pages.push(Page {
                mem: page.mem,
                mfn: page.mfn,
                gref,
            });
        }

        // 4. Publish, and wait for the backend to connect.
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
        let key_refs: Vec<(&str, &str)> =
            keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        fe.connect(xs, &key_refs, timeout)?;

        // 5. The disk.
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
            backend_indirect_segments: backend_indirect,
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
        if !e.connected {
            return Err(Error::Disconnected);
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
