//! Helpers shared by the host test files: a simulated disk connected to the frontend, and a
//! deterministic generator for data and workloads.
#![allow(dead_code)]

use blkfront::sim::{SimBlkback, SimConfig};
use blkfront::{Blkfront, Config};
use xen::hal::SimHal;
use xen::xenbus::Never;
use xen::xenstore::sim::Sim;
use xen::xenstore::Client;

/// The frontend node of the simulated disk.
pub const FE: &str = "/local/domain/1/device/vbd/768";
/// Its backend node.
pub const BE: &str = "/local/domain/0/backend/vbd/1/768";

/// A simulated xenstore and blkback, and the frontend connected to them (the async handle).
pub fn connect(sim: SimConfig, config: Config) -> (Client<Sim>, SimBlkback, Blkfront<SimHal>) {
    let mut xs = Sim::client(1);
    let hal = SimHal::new();
    let be = SimBlkback::attach(&mut xs, &hal, 768, sim);
    let disk =
        Blkfront::connect(hal, &mut xs, "device/vbd/768", config, &mut Never).expect("connect");
    (xs, be, disk)
}

/// xorshift64: deterministic test data and workloads (the one the tests share).
pub use xen::sim::Rng;
