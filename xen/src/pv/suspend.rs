//! Save, restore and live migration (`xl save`, `xl restore`, `xl migrate`): the PV suspend
//! path, and what the rest of the runtime sees of it.
//!
//! Drivers see one number, [`generation`]: how many times the domain has moved into a new
//! domain. When it changes, every grant, event-channel port and machine frame they hold is void
//! (see [`Hal::generation`](crate::hal::Hal::generation)).

use core::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Restores into a new domain so far (0 until the first `xl restore` or migration).
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}
