//! Guest memory management: the page-frame allocator ([`frames`]) that hands out pseudo-physical
//! frames.

pub mod frames;
