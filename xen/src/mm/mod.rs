//! Guest memory management: the page-frame allocator ([`frames`]) that hands out pseudo-physical
//! frames, and the global heap ([`heap`]) that `alloc` allocates from, grown with those frames.

pub mod frames;
pub mod heap;
