//! Disks on Xen: find the guest's virtual block devices in xenstore and connect them, as an
//! async [`AsyncDisk`] (run it on `xen::exec` with the disk among the sources) or as a blocking
//! [`Disk`] (the vCPU blocks in Xen until the disk's event channel fires; nothing spins).
//!
//! ```no_run
//! let nodes = blkfront::disk::list()?;              // ["device/vbd/51712", ...]
//! let mut disk = blkfront::disk::open(&nodes[0])?;
//! let mut buf = [0u8; 512];
//! disk.read(0, &mut buf)?;
//! if !disk.read_only() {
//!     disk.write(4096, b"hello")?;
//!     disk.flush()?;
//! }
//! blkfront::disk::close(&disk)?;
//!
//! // Async: many operations in flight from many tasks.
//! let disk = blkfront::disk::connect(&nodes[0])?;
//! let d = disk.clone();
//! // A restore or migration needs nothing from the app: the disk reconnects to its new backend
//! // at its next poll and resubmits what was in flight (see `blkfront::io`).
//! xen::exec::run(&[&disk], |sp| async move {
//!     let t = sp.spawn({ let d = d.clone(); async move { d.flush().await } });
//!     let mut buf = [0u8; 4096];
//!     d.read(0, &mut buf).await?;
//!     t.await
//! })?;
//! # Ok::<(), blkfront::Error>(())
//! ```

use alloc::string::String;
use alloc::vec::Vec;

use xen::exec::XenPark;
use xen::platform::{with_xenstore, XenClock, XenHal, XenTransport};
use xen::xenbus::{Deadline, Timeout};
use xen::xenstore::Client;

use crate::{Blkfront, Blocking, Config, Error};

/// How long [`open`] and [`close`] wait for the backend's xenbus state changes.
pub const HANDSHAKE_TIMEOUT_NS: u64 = 30_000_000_000;

/// How long one reconnect attempt after a restore waits for the new backend (a failed attempt
/// is retried with a backoff; operations wait meanwhile).
pub const RECONNECT_TIMEOUT_NS: u64 = 10_000_000_000;

/// A connected disk on Xen: the async API.
pub type AsyncDisk = Blkfront<XenHal>;

/// A connected disk on Xen: blocking calls.
pub type Disk = Blocking<XenHal, XenPark>;

/// The guest's virtual block devices (`device/vbd/ID` nodes), in the order of their ids (so
/// `xvda` comes before `xvdb`). Empty when the guest has none.
pub fn list() -> Result<Vec<String>, Error> {
    with_xenstore(|xs| xen::xenbus::device_nodes(xs, "vbd"))
        .map_err(|_| Error::NoXenstore)?
        .map_err(|e| Error::Xenbus(e.into()))
}

/// Connects to the disk at `node` (e.g. `device/vbd/51712`) with the default [`Config`], for
/// blocking calls.
pub fn open(node: &str) -> Result<Disk, Error> {
    open_with(node, Config::default())
}

/// Connects to the disk at `node` with `config`, for blocking calls.
pub fn open_with(node: &str, config: Config) -> Result<Disk, Error> {
    Ok(Blocking::new(connect_with(node, config)?, XenPark))
}

/// Connects to the disk at `node` with the default [`Config`], for async calls.
pub fn connect(node: &str) -> Result<AsyncDisk, Error> {
    connect_with(node, Config::default())
}

/// Connects to the disk at `node` with `config`, for async calls.
pub fn connect_with(node: &str, config: Config) -> Result<AsyncDisk, Error> {
    let disk = with_xenstore(|xs| {
        let mut timeout = Deadline::after(XenClock, HANDSHAKE_TIMEOUT_NS);
        Blkfront::connect(XenHal, xs, node, config, &mut timeout)
    })
    .map_err(|_| Error::NoXenstore)??;
    // The executor polls the disk when its event channel fires (or at a deadline).
    disk.bind_channel(xen::events::Channel::bind(disk.port()));
    // After a restore or migration the disk reconnects by itself at its next poll.
    disk.on_restore(
        |run: &mut dyn FnMut(&mut Client<XenTransport>, &mut dyn Timeout)| {
            let _ = with_xenstore(|xs| {
                run(xs, &mut Deadline::after(XenClock, RECONNECT_TIMEOUT_NS));
            });
        },
    );
    Ok(disk)
}

/// Disconnects a disk, blocking or async (see [`Blkfront::disconnect`]).
pub fn close(disk: &impl AsRef<AsyncDisk>) -> Result<(), Error> {
    with_xenstore(|xs| {
        let mut timeout = Deadline::after(XenClock, HANDSHAKE_TIMEOUT_NS);
        disk.as_ref().disconnect(xs, &mut timeout)
    })
    .map_err(|_| Error::NoXenstore)?
}
