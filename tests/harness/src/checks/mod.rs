//! Lab-tier checks shared by the PV files (`tests/lab.rs`, `net.rs`, `http.rs`, `blk.rs`) and the
//! PVH set (`tests/pvh.rs`): each check boots its guest with `more` (extra `K=V` lines for the
//! .xl, e.g. `type="pvh"`) or takes a guest the caller started, so the same assertions run for
//! both guest types.

pub mod basic;
pub mod blk;
pub mod http;
pub mod net;
