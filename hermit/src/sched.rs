//! The thread scheduler's bookkeeping: which threads exist, which is running, which are ready
//! (a FIFO run queue), and what each blocked thread waits for (a futex word, another thread's
//! end, a deadline, or "an event came": [`Wait::Poll`]). No `unsafe` and no machine state: the
//! context switch, stacks and TLS blocks live in the `T` each thread carries and are handled by
//! the caller (`abi_thread`), so this file is tested on the host.
//!
//! The protocol, for the one vCPU: the running thread changes its own state ([`Scheduler::block`],
//! [`Scheduler::yield_now`], [`Scheduler::exit`]), then asks [`Scheduler::next`] whom to run;
//! `next` first moves the blocked threads whose deadline has passed to the run queue, then
//! either names a thread (the caller switches to it), or says the vCPU is idle until a deadline
//! (the caller blocks in Xen, then checks the [`Wait::Poll`] threads' conditions and wakes
//! those that hold, and asks again), or that no thread can ever run again (a deadlock). Wakers
//! ([`Scheduler::wake_futex`], [`Scheduler::wake_poll`], a thread's exit waking its joiner) only
//! move threads to the run queue; the running thread keeps the vCPU until it blocks or yields.
#![deny(unsafe_code)]

use alloc::collections::{BTreeMap, VecDeque};

/// A thread id (hermit-abi's `Tid`). The main thread is [`MAIN`]; spawned threads count up
/// from 1 (0 would be spawn's "failed").
pub type Tid = u32;

/// The main thread's id.
pub const MAIN: Tid = 0;

/// What a blocked thread waits for (besides its deadline, if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A `futex_wake` on this address.
    Futex(usize),
    /// This thread's end.
    Join(Tid),
    /// Only the deadline (`sleep`).
    Sleep,
    /// Any dispatch of events: the thread re-checks its own condition ([`park_until`] style).
    ///
    /// [`park_until`]: crate::park_until
    Poll,
}

/// How a blocked thread came back to the run queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// Its wait ended (a futex wake, the joined thread's end, an event).
    Notified,
    /// Its deadline passed first.
    TimedOut,
}

/// What [`Scheduler::next`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run this thread (it may be the one that asked).
    Run(Tid),
    /// Nothing is ready: block the vCPU until this deadline (or forever, for `None`) or an
    /// event, wake the [`Wait::Poll`] threads whose condition holds, and ask again.
    Idle(Option<u64>),
    /// Every thread is blocked with no deadline on something only another thread could end.
    Deadlock,
}

/// What [`Scheduler::join`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Join<T> {
    /// The thread had ended; its record is gone and here is what it carried.
    Done(T),
    /// It still runs: the caller was blocked on [`Wait::Join`]; switch away, then join again.
    Wait,
    /// No such thread (never spawned, already joined, or the caller itself).
    NoSuchThread,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Ready,
    Blocked { wait: Wait, deadline: Option<u64> },
    Finished,
}

#[derive(Debug)]
struct Thread<T> {
    state: State,
    woken: Woken,
    data: T,
}

/// The threads of the program and their states; `T` is what the caller keeps per thread.
#[derive(Debug)]
pub struct Scheduler<T> {
    threads: BTreeMap<Tid, Thread<T>>,
    ready: VecDeque<Tid>,
    current: Tid,
    next_tid: Tid,
}

impl<T> Scheduler<T> {
    /// A scheduler whose only thread is the running main thread.
    pub fn new(main: T) -> Self {
        let mut threads = BTreeMap::new();
        threads.insert(
            MAIN,
            Thread {
                state: State::Running,
                woken: Woken::Notified,
                data: main,
            },
        );
        Scheduler {
            threads,
            ready: VecDeque::new(),
            current: MAIN,
            next_tid: MAIN + 1,
        }
    }

    /// The running thread.
    pub fn current(&self) -> Tid {
        self.current
    }

    /// Number of threads not yet joined (finished ones included).
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether there are no threads (never: the main thread is never joined).
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// A thread's data.
    pub fn data(&self, tid: Tid) -> Option<&T> {
        self.threads.get(&tid).map(|t| &t.data)
    }

    /// A thread's data, mutably.
    pub fn data_mut(&mut self, tid: Tid) -> Option<&mut T> {
        self.threads.get_mut(&tid).map(|t| &mut t.data)
    }

    /// Adds a new thread at the end of the run queue; `None` when the ids ran out.
    pub fn spawn(&mut self, data: T) -> Option<Tid> {
        let tid = self.next_tid;
        self.next_tid = tid.checked_add(1)?;
        self.threads.insert(
            tid,
            Thread {
                state: State::Ready,
                woken: Woken::Notified,
                data,
            },
        );
        self.ready.push_back(tid);
        Some(tid)
    }

    fn set_current(&mut self, state: State) {
        if let Some(t) = self.threads.get_mut(&self.current) {
            t.state = state;
        }
    }

    /// Blocks the running thread on `wait` until it is woken or system time `deadline` passes.
    pub fn block(&mut self, wait: Wait, deadline: Option<u64>) {
        self.set_current(State::Blocked { wait, deadline });
    }

    /// Puts the running thread at the end of the run queue.
    pub fn yield_now(&mut self) {
        self.set_current(State::Ready);
        self.ready.push_back(self.current);
    }

    /// Ends the running thread: it will not run again; its joiner, if blocked, is woken.
    pub fn exit(&mut self) {
        self.set_current(State::Finished);
        let me = self.current;
        self.wake_where(usize::MAX, |w| w == Wait::Join(me));
    }

    /// How the running thread was last woken.
    pub fn woken(&self) -> Woken {
        self.threads
            .get(&self.current)
            .map_or(Woken::Notified, |t| t.woken)
    }

    fn wake_where(&mut self, count: usize, mut f: impl FnMut(Wait) -> bool) -> usize {
        let mut n = 0;
        for (&tid, t) in self.threads.iter_mut() {
            if n == count {
                break;
            }
            if let State::Blocked { wait, .. } = t.state {
                if f(wait) {
                    t.state = State::Ready;
                    t.woken = Woken::Notified;
                    self.ready.push_back(tid);
                    n += 1;
                }
            }
        }
        n
    }

    /// Wakes up to `count` threads blocked on the futex at `addr`; returns how many.
    pub fn wake_futex(&mut self, addr: usize, count: usize) -> usize {
        self.wake_where(count, |w| w == Wait::Futex(addr))
    }

    /// The threads blocked on [`Wait::Poll`], in id order.
    pub fn polling(&self) -> impl Iterator<Item = Tid> + '_ {
        self.threads.iter().filter_map(|(&tid, t)| {
            matches!(
                t.state,
                State::Blocked {
                    wait: Wait::Poll,
                    ..
                }
            )
            .then_some(tid)
        })
    }

    /// Wakes `tid` if it is blocked on [`Wait::Poll`] (its condition was found to hold);
    /// whether it was.
    pub fn wake_poll(&mut self, tid: Tid) -> bool {
        match self.threads.get_mut(&tid) {
            Some(t)
                if matches!(
                    t.state,
                    State::Blocked {
                        wait: Wait::Poll,
                        ..
                    }
                ) =>
            {
                t.state = State::Ready;
                t.woken = Woken::Notified;
                self.ready.push_back(tid);
                true
            }
            _ => false,
        }
    }

    /// Whether some thread waits on [`Wait::Poll`].
    pub fn has_polls(&self) -> bool {
        self.threads.values().any(|t| {
            matches!(
                t.state,
                State::Blocked {
                    wait: Wait::Poll,
                    ..
                }
            )
        })
    }

    /// Joins `tid` for the running thread: its data if it has ended, else blocks the caller.
    pub fn join(&mut self, tid: Tid) -> Join<T> {
        match self.threads.get(&tid).map(|t| t.state) {
            None => Join::NoSuchThread,
            Some(_) if tid == self.current => Join::NoSuchThread,
            Some(State::Finished) => match self.threads.remove(&tid) {
                Some(t) => Join::Done(t.data),
                None => Join::NoSuchThread,
            },
            Some(_) => {
                self.block(Wait::Join(tid), None);
                Join::Wait
            }
        }
    }

    /// Chooses the thread to run at system time `now` (the running thread must have blocked,
    /// yielded or exited, or be running still: then it goes on if nothing else is ready).
    pub fn next(&mut self, now: u64) -> Next {
        // Deadlines that passed: those threads are ready, timed out, and run before a thread
        // that just yielded (a preempted spinner must not take another turn first).
        let yielded = self.ready.back() == Some(&self.current)
            && self
                .threads
                .get(&self.current)
                .is_some_and(|t| t.state == State::Ready);
        if yielded {
            self.ready.pop_back();
        }
        for (&tid, t) in self.threads.iter_mut() {
            if let State::Blocked {
                deadline: Some(d), ..
            } = t.state
            {
                if d <= now {
                    t.state = State::Ready;
                    t.woken = Woken::TimedOut;
                    self.ready.push_back(tid);
                }
            }
        }
        if yielded {
            self.ready.push_back(self.current);
        }
        let still_running = self
            .threads
            .get(&self.current)
            .is_some_and(|t| t.state == State::Running);
        if still_running {
            return Next::Run(self.current);
        }
        while let Some(tid) = self.ready.pop_front() {
            if let Some(t) = self.threads.get_mut(&tid) {
                if t.state == State::Ready {
                    t.state = State::Running;
                    self.current = tid;
                    return Next::Run(tid);
                }
            }
        }
        let mut earliest: Option<u64> = None;
        let mut polls = false;
        for t in self.threads.values() {
            if let State::Blocked { wait, deadline } = t.state {
                polls |= wait == Wait::Poll;
                if let Some(d) = deadline {
                    earliest = Some(earliest.map_or(d, |e| e.min(d)));
                }
            }
        }
        if earliest.is_none() && !polls {
            Next::Deadlock
        } else {
            Next::Idle(earliest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawned_threads_run_in_order_after_the_runner_yields() {
        let mut s = Scheduler::new(());
        let a = s.spawn(()).unwrap();
        let b = s.spawn(()).unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(s.next(0), Next::Run(MAIN), "the runner keeps the vCPU");
        s.yield_now();
        assert_eq!(s.next(0), Next::Run(a));
        s.yield_now();
        assert_eq!(s.next(0), Next::Run(b));
        s.yield_now();
        assert_eq!(s.next(0), Next::Run(MAIN));
    }

    #[test]
    fn only_the_poll_waiter_named_is_woken() {
        let mut s = Scheduler::new(());
        let a = s.spawn(()).unwrap();
        let b = s.spawn(()).unwrap();
        s.block(Wait::Poll, None);
        assert_eq!(s.next(0), Next::Run(a));
        s.block(Wait::Poll, Some(50));
        assert_eq!(s.next(0), Next::Run(b));
        s.block(Wait::Futex(8), None);
        assert_eq!(s.next(0), Next::Idle(Some(50)));
        assert_eq!(s.polling().collect::<alloc::vec::Vec<_>>(), [MAIN, a]);
        assert!(!s.wake_poll(b), "a futex waiter is not a poll waiter");
        assert!(s.wake_poll(a));
        assert!(!s.wake_poll(a), "already woken");
        assert_eq!(s.polling().collect::<alloc::vec::Vec<_>>(), [MAIN]);
        assert_eq!(s.next(0), Next::Run(a));
        assert_eq!(s.woken(), Woken::Notified);
    }

    #[test]
    fn futex_wake_wakes_only_that_address_and_at_most_count() {
        let mut s = Scheduler::new(());
        let a = s.spawn(()).unwrap();
        let b = s.spawn(()).unwrap();
        let c = s.spawn(()).unwrap();
        s.block(Wait::Futex(0x100), None);
        for _ in [a, b] {
            let Next::Run(_) = s.next(0) else { panic!() };
            s.block(Wait::Futex(0x100), None);
        }
        assert_eq!(s.next(0), Next::Run(c));
        s.block(Wait::Futex(0x200), None);
        assert_eq!(s.next(0), Next::Deadlock);
        assert_eq!(s.wake_futex(0x300, 5), 0);
        assert_eq!(s.wake_futex(0x100, 2), 2);
        assert_eq!(s.next(0), Next::Run(MAIN));
        assert_eq!(s.woken(), Woken::Notified);
        s.block(Wait::Sleep, Some(10));
        assert_eq!(s.next(0), Next::Run(a));
        assert_eq!(
            s.wake_futex(0x100, usize::MAX),
            1,
            "only b is left on 0x100"
        );
    }

    #[test]
    fn timeouts_wake_at_the_deadline_and_idle_until_the_earliest() {
        let mut s = Scheduler::new(());
        let a = s.spawn(()).unwrap();
        s.block(Wait::Futex(0x10), Some(500));
        assert_eq!(s.next(100), Next::Run(a));
        s.block(Wait::Sleep, Some(300));
        assert_eq!(s.next(100), Next::Idle(Some(300)));
        assert_eq!(s.next(299), Next::Idle(Some(300)));
        assert_eq!(s.next(300), Next::Run(a));
        assert_eq!(s.woken(), Woken::TimedOut);
        s.block(Wait::Sleep, Some(1000));
        assert_eq!(s.next(600), Next::Run(MAIN));
        assert_eq!(s.woken(), Woken::TimedOut);
        assert_eq!(
            s.wake_futex(0x10, 1),
            0,
            "a timed-out waiter is no longer queued"
        );
    }

    #[test]
    fn a_timed_out_thread_runs_before_the_one_that_just_yielded() {
        let mut s = Scheduler::new(());
        let a = s.spawn(()).unwrap();
        s.block(Wait::Sleep, Some(50));
        assert_eq!(s.next(0), Next::Run(a));
        s.yield_now();
        assert_eq!(s.next(10), Next::Run(a), "nobody else is ready");
        s.yield_now();
        assert_eq!(s.next(60), Next::Run(MAIN), "the sleeper's deadline passed");
        s.yield_now();
        assert_eq!(s.next(60), Next::Run(a));
    }

    #[test]
    fn join_waits_for_the_end_and_returns_the_data_once() {
        let mut s = Scheduler::new("main");
        let a = s.spawn("a").unwrap();
        assert_eq!(s.join(a), Join::Wait);
        assert_eq!(s.next(0), Next::Run(a));
        assert_eq!(s.join(a), Join::NoSuchThread, "a thread cannot join itself");
        s.exit();
        assert_eq!(s.next(0), Next::Run(MAIN));
        assert_eq!(s.join(a), Join::Done("a"));
        assert_eq!(s.join(a), Join::NoSuchThread);
        assert_eq!(s.join(42), Join::NoSuchThread);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn joining_an_ended_thread_does_not_block() {
        let mut s = Scheduler::new(0);
        let a = s.spawn(1).unwrap();
        s.yield_now();
        assert_eq!(s.next(0), Next::Run(a));
        *s.data_mut(a).unwrap() = 7;
        s.exit();
        assert_eq!(s.next(0), Next::Run(MAIN));
        assert_eq!(s.join(a), Join::Done(7));
        assert_eq!(s.next(0), Next::Run(MAIN));
    }

    #[test]
    fn poll_waiters_keep_the_vcpu_idle_not_deadlocked_and_wake_on_events() {
        let mut s = Scheduler::new(());
        let a = s.spawn(()).unwrap();
        s.block(Wait::Poll, None);
        assert_eq!(s.next(0), Next::Run(a));
        s.block(Wait::Futex(1), None);
        assert!(s.has_polls());
        assert_eq!(s.next(0), Next::Idle(None));
        assert!(s.wake_poll(MAIN));
        assert!(!s.has_polls());
        assert_eq!(s.next(0), Next::Run(MAIN));
    }
}
