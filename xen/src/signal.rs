//! [`Signal`]: the one readiness cell of the runtime — a "fired" flag and the one waker waiting
//! for it. An event channel ([`Channel`](crate::events::Channel)) and a xenstore watch
//! ([`Watch`](crate::platform::Watch)) are each a signal plus what names it (a port, a token);
//! whoever sees the event fires the signal, and the waiter wakes and takes it.
//!
//! Ordering rule for waiters (no event lost): register, then take; a fire in between leaves the
//! flag set, so the take sees it. [`Signal::wait`] does exactly that.

use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};

/// Keeps `w` in `slot` unless the waker already there wakes the same task (the one idiom of
/// "remember the newest waker", shared by every waiter in the tree).
pub fn remember(slot: &mut Option<Waker>, w: &Waker) {
    match slot {
        Some(old) if old.will_wake(w) => {}
        _ => *slot = Some(w.clone()),
    }
}

/// A fired flag and the waker to wake when it fires.
#[derive(Debug, Default)]
pub struct Signal {
    fired: AtomicBool,
    waker: spin::Mutex<Option<Waker>>,
}

impl Signal {
    /// A signal, already fired if `fired` (so its owner looks once at the start).
    pub const fn new(fired: bool) -> Signal {
        Signal {
            fired: AtomicBool::new(fired),
            waker: spin::Mutex::new(None),
        }
    }

    /// Sets the flag and takes the waker, for the caller to wake outside its own locks.
    #[must_use = "wake the returned waker"]
    pub fn fire_take(&self) -> Option<Waker> {
        self.fired.store(true, Ordering::Release);
        self.waker.lock().take()
    }

    /// Sets the flag and wakes the waiter.
    pub fn fire(&self) {
        if let Some(w) = self.fire_take() {
            w.wake();
        }
    }

    /// True (once) if it fired since the last `take`.
    pub fn take(&self) -> bool {
        self.fired.swap(false, Ordering::AcqRel)
    }

    /// Wakes `w` at the next fire (one waker: a newer registration replaces it). A fire before
    /// is not lost: check [`take`](Self::take) after registering.
    pub fn register(&self, w: &Waker) {
        remember(&mut self.waker.lock(), w);
    }

    /// A future that completes at the next fire (at once if it fired since the last `take`),
    /// consuming it.
    pub fn wait(&self) -> Wait<'_> {
        Wait(self)
    }
}

/// The future of [`Signal::wait`].
#[derive(Debug)]
pub struct Wait<'a>(&'a Signal);

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.take() {
            return Poll::Ready(());
        }
        self.0.register(cx.waker());
        if self.0.take() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use core::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);
    impl alloc::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_fire_wakes_the_newest_waker_once_and_is_taken_once() {
        let s = Signal::new(false);
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        s.register(&Waker::from(a.clone()));
        s.register(&Waker::from(b.clone()));
        assert!(!s.take());
        s.fire();
        s.fire();
        assert_eq!(a.0.load(Ordering::SeqCst), 0, "replaced by the newer waker");
        assert_eq!(
            b.0.load(Ordering::SeqCst),
            1,
            "woken once: the second fire finds no waker"
        );
        assert!(s.take());
        assert!(!s.take());
    }

    #[test]
    fn a_fire_between_register_and_take_is_not_lost() {
        let s = Signal::new(false);
        let c = Arc::new(Count(AtomicUsize::new(0)));
        let w = Waker::from(c.clone());
        let mut cx = Context::from_waker(&w);
        let mut f = core::pin::pin!(s.wait());
        assert!(f.as_mut().poll(&mut cx).is_pending());
        s.fire();
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert!(f.as_mut().poll(&mut cx).is_ready());
        assert!(Signal::new(true).take(), "a signal born fired is seen once");
    }

    #[test]
    fn remember_keeps_a_waker_of_the_same_task() {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        let w = Waker::from(c.clone());
        let mut slot = None;
        remember(&mut slot, &w);
        remember(&mut slot, &w.clone());
        assert!(slot.as_ref().unwrap().will_wake(&w));
        let d = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        remember(&mut slot, &d);
        assert!(slot.unwrap().will_wake(&d));
    }
}
