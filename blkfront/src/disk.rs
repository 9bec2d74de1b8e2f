//! Disks on Xen: find the guest's virtual block devices in xenstore and open them as
//! [`Disk`]s, blocking until the backend answers (the vCPU blocks in Xen; nothing spins).
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
//! blkfront::disk::close(&mut disk)?;
//! # Ok::<(), blkfront::Error>(())
//! ```

use alloc::string::String;
use alloc::vec::Vec;

use xen::platform::{with_xenstore, XenClock, XenHal};
use xen::xenbus::Deadline;

use crate::driver::{Blkfront, Config, Error, Wait};

/// How long [`open`] and [`close`] wait for the backend's xenbus state changes.
pub const HANDSHAKE_TIMEOUT_NS: u64 = 30_000_000_000;

/// Waiting on Xen: run the idle loop once, which blocks the vCPU until an event (the disk's
/// among them) arrives or the deadline passes.
#[derive(Debug, Default, Clone, Copy)]
pub struct XenWait;

impl Wait for XenWait {
    fn wait(&mut self, _port: u32, deadline_ns: u64) {
        xen::sched::poll_once(Some(deadline_ns));
    }
}

/// A connected disk on Xen.
pub type Disk = Blkfront<XenHal, XenWait>;

/// The guest's virtual block devices (`device/vbd/ID` nodes), in the order of their ids (so
/// `xvda` comes before `xvdb`). Empty when the guest has none.
pub fn list() -> Result<Vec<String>, Error> {
    with_xenstore(|xs| xen::xenbus::device_nodes(xs, "vbd"))
        .map_err(|_| Error::NoXenstore)?
        .map_err(|e| Error::Xenbus(e.into()))
}

/// Connects to the disk at `node` (e.g. `device/vbd/51712`) with the default [`Config`].
pub fn open(node: &str) -> Result<Disk, Error> {
    open_with(node, Config::default())
}

/// Connects to the disk at `node` with `config`.
pub fn open_with(node: &str, config: Config) -> Result<Disk, Error> {
    with_xenstore(|xs| {
        let mut timeout = Deadline::after(XenClock, HANDSHAKE_TIMEOUT_NS);
        Blkfront::connect(XenHal, XenWait, xs, node, config, &mut timeout)
    })
    .map_err(|_| Error::NoXenstore)?
}

/// Disconnects `disk` (see [`Blkfront::disconnect`]).
pub fn close(disk: &mut Disk) -> Result<(), Error> {
    with_xenstore(|xs| {
        let mut timeout = Deadline::after(XenClock, HANDSHAKE_TIMEOUT_NS);
        disk.disconnect(xs, &mut timeout)
    })
    .map_err(|_| Error::NoXenstore)?
}
