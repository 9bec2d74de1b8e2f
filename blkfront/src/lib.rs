//! Xen block frontend (blkfront): the split driver that talks to a blkback over a shared ring.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
