//! A small single-threaded async executor: the event loop that apps' network and timer code runs
//! on.
//!
//! One [`Executor`] runs the app's main future and the tasks it [`spawn`](Spawner::spawn)s. Each
//! turn it polls the tasks that were woken, then the [`Source`]s (a network stack, a disk) that
//! were woken (their event channel fired, or a task handed them work) or whose deadline passed;
//! when no task is ready it *parks*: on Xen it blocks in the hypervisor until an event channel
//! fires or the earliest deadline (a source's or a [`sleep`]'s) passes. Nothing busy-polls, and
//! nothing is polled that has nothing to do. [`Stats`] counts turns, source polls and parks.
//!
//! Wakers are plain `Arc`s (`alloc::task::Wake`) pushing a task id onto a ready queue, so the
//! executor is safe Rust and runs the same on the host (tests park on a simulated clock).
//!
//! ```
//! use xen::exec::{Clock, Executor, Park};
//! struct NoPark;
//! impl Clock for NoPark {
//!     fn now_ns(&self) -> u64 { 0 }
//! }
//! impl Park for NoPark {
//!     fn park(&mut self, _deadline: Option<u64>) {}
//! }
//! let mut ex = Executor::new();
//! let sp = ex.spawner();
//! let n = ex.block_on(&mut NoPark, &[], async move {
//!     let h = sp.spawn(async { 20 });
//!     h.await + 22
//! });
//! assert_eq!(n, 42);
//! ```

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll, Waker};

pub use crate::time::Clock;

/// Something the executor drives between task polls (a network stack, a disk): it does the
/// work that arrived (frames, responses, timers) waking the tasks concerned, and says when it
/// next needs to run.
///
/// The executor polls a source once when it starts, then only when the source's waker (the
/// one in `cx`) was woken or the deadline it returned passed. So a source must, in `poll`:
/// - register `cx.waker()` with whatever signals it new work: its event channel
///   ([`crate::events::Channel::register`]), its xenstore [`Watch`](crate::platform::Watch);
/// - wake that waker itself when a task hands it work outside `poll` (a socket write, a queued
///   request), so it runs at the end of the turn;
/// - return the next time it must run without an event (`None`: only on events).
///
/// A source that cannot be signalled (a simulated device on the host) wakes `cx.waker()` from
/// `poll`: it is then polled on every turn (after each park), as before this model.
pub trait Source {
    /// Makes progress at `now_ns`; returns the next time it must run without an event, if any.
    fn poll(&self, cx: &mut Context<'_>, now_ns: u64) -> Option<u64>;
}

/// The executor's counters (for the before/after measurement, published by `xen::stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Turns of the loop: each polls the ready tasks, then the due sources.
    pub turns: u64,
    /// Source polls.
    pub source_polls: u64,
    /// Times it parked (on Xen: ran the idle loop, which blocks unless an event is pending).
    pub parks: u64,
    /// Task polls.
    pub task_polls: u64,
}

/// The counters of every executor since boot (on the host: of this process).
static TOTAL: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// The executors' counters since boot.
pub fn stats() -> Stats {
    let g = |i: usize| TOTAL[i].load(Ordering::Relaxed);
    Stats {
        turns: g(0),
        source_polls: g(1),
        parks: g(2),
        task_polls: g(3),
    }
}

impl Stats {
    fn count(&mut self, i: usize) {
        TOTAL[i].fetch_add(1, Ordering::Relaxed);
        match i {
            0 => self.turns += 1,
            1 => self.source_polls += 1,
            2 => self.parks += 1,
            _ => self.task_polls += 1,
        }
    }
}

/// Bumped by [`wake_all`]; each executor compares it with the value it last saw every turn.
#[cfg(any(target_os = "none", target_os = "hermit"))]
static WAKE_ALL: AtomicU64 = AtomicU64::new(0);

#[cfg(any(target_os = "none", target_os = "hermit"))]
fn wake_all_count() -> u64 {
    WAKE_ALL.load(Ordering::Acquire)
}

/// Wakes every task and source of every executor at its next turn (after a restore into a new
/// domain: each driver must see the new generation, whatever it was waiting for). On the host,
/// the executors of this thread (tests run side by side).
pub fn wake_all() {
    #[cfg(any(target_os = "none", target_os = "hermit"))]
    WAKE_ALL.fetch_add(1, Ordering::AcqRel);
    #[cfg(not(any(target_os = "none", target_os = "hermit")))]
    WAKE_ALL.with(|w| w.set(w.get() + 1));
}

#[cfg(not(any(target_os = "none", target_os = "hermit")))]
std::thread_local! {
    static WAKE_ALL: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

#[cfg(not(any(target_os = "none", target_os = "hermit")))]
fn wake_all_count() -> u64 {
    WAKE_ALL.with(|w| w.get())
}

/// How the executor waits when no task is ready: a [`Clock`] that can wait for its next event.
pub trait Park: Clock {
    /// Waits until an event arrives or `deadline` (ns) passes (at once if it has).
    fn park(&mut self, deadline: Option<u64>);
}

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// The ready queue: ids of woken tasks (`usize::MAX` is the main future).
type Ready = Arc<spin::Mutex<VecDeque<usize>>>;

const MAIN: usize = usize::MAX;

/// Which sources were woken (by index in `block_on`'s slice).
type SourceFlags = Arc<spin::Mutex<Vec<bool>>>;

struct SourceWaker {
    index: usize,
    flags: SourceFlags,
}

impl Wake for SourceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(f) = self.flags.lock().get_mut(self.index) {
            *f = true;
        }
    }
}

struct TaskWaker {
    id: usize,
    ready: Ready,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let mut q = self.ready.lock();
        if !q.contains(&self.id) {
            q.push_back(self.id);
        }
    }
}

struct Shared {
    /// Spawned, not yet polled.
    new: Vec<Task>,
}

/// Spawns tasks onto the executor it came from (cheap to clone; not `Send`).
#[derive(Clone)]
pub struct Spawner {
    shared: Rc<RefCell<Shared>>,
}

impl core::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Spawner")
    }
}

impl Spawner {
    /// Runs `fut` as a task; its output comes back through the [`JoinHandle`] (which can be
    /// dropped: the task runs to completion anyway).
    pub fn spawn<T: 'static>(&self, fut: impl Future<Output = T> + 'static) -> JoinHandle<T> {
        let slot: Rc<RefCell<JoinSlot<T>>> = Rc::new(RefCell::new(JoinSlot {
            value: None,
            waker: None,
        }));
        let s = slot.clone();
        self.shared.borrow_mut().new.push(Box::pin(async move {
            let v = fut.await;
            let mut s = s.borrow_mut();
            s.value = Some(v);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }));
        JoinHandle { slot }
    }
}

struct JoinSlot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// The output of a spawned task, as a future.
pub struct JoinHandle<T> {
    slot: Rc<RefCell<JoinSlot<T>>>,
}

impl<T> JoinHandle<T> {
    /// True once the task finished.
    pub fn is_finished(&self) -> bool {
        self.slot.borrow().value.is_some()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.slot.borrow_mut();
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The executor. Create one, [`spawner`](Self::spawner) for tasks, then
/// [`block_on`](Self::block_on) the app's main future.
pub struct Executor {
    shared: Rc<RefCell<Shared>>,
    ready: Ready,
    tasks: Vec<Option<(Task, Waker)>>,
    free: Vec<usize>,
    timers: TimerQueue,
    stats: Stats,
}

impl core::fmt::Debug for Executor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Executor")
            .field("tasks", &self.live_tasks())
            .finish()
    }
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// An executor with no tasks.
    pub fn new() -> Self {
        Executor {
            shared: Rc::new(RefCell::new(Shared { new: Vec::new() })),
            ready: Arc::new(spin::Mutex::new(VecDeque::new())),
            tasks: Vec::new(),
            free: Vec::new(),
            timers: TimerQueue::default(),
            stats: Stats::default(),
        }
    }

    /// A handle to spawn tasks (from inside tasks too).
    pub fn spawner(&self) -> Spawner {
        Spawner {
            shared: self.shared.clone(),
        }
    }

    /// Sleeps queued in this executor's timers (for tests and stats).
    pub fn pending_timers(&self) -> usize {
        self.timers.lock().map.len()
    }

    /// This executor's counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Tasks spawned and not finished.
    pub fn live_tasks(&self) -> usize {
        self.tasks.iter().filter(|t| t.is_some()).count() + self.shared.borrow().new.len()
    }

    fn waker(&self, id: usize) -> Waker {
        Waker::from(Arc::new(TaskWaker {
            id,
            ready: self.ready.clone(),
        }))
    }

    /// Moves newly spawned tasks into slots and marks them ready.
    fn admit(&mut self) {
        let new = core::mem::take(&mut self.shared.borrow_mut().new);
        for t in new {
            let id = match self.free.pop() {
                Some(id) => id,
                None => {
                    self.tasks.push(None);
                    self.tasks.len() - 1
                }
            };
            let w = self.waker(id);
            self.tasks[id] = Some((t, w));
            self.ready.lock().push_back(id);
        }
    }

    fn poll_task(&mut self, id: usize) {
        let Some(Some((task, waker))) = self.tasks.get_mut(id) else {
            return;
        };
        let waker = waker.clone();
        let mut cx = Context::from_waker(&waker);
        if task.as_mut().poll(&mut cx).is_ready() {
            self.tasks[id] = None;
            self.free.push(id);
        }
    }

    /// After a [`wake_all`] since `seen`: every task and `main` ready, every source woken.
    fn wake_all_if_asked(&mut self, seen: &mut u64, flags: &SourceFlags) {
        let w = wake_all_count();
        if w == *seen {
            return;
        }
        *seen = w;
        let mut q = self.ready.lock();
        for id in (0..self.tasks.len())
            .filter(|&i| self.tasks[i].is_some())
            .chain([MAIN])
        {
            if !q.contains(&id) {
                q.push_back(id);
            }
        }
        drop(q);
        flags.lock().iter_mut().for_each(|f| *f = true);
    }

    /// Runs `main` (and every spawned task) until `main` completes; returns its output. Tasks
    /// still running then stay in the executor (a later `block_on` continues them).
    pub fn block_on<T>(
        &mut self,
        park: &mut dyn Park,
        sources: &[&dyn Source],
        main: impl Future<Output = T>,
    ) -> T {
        let mut main = core::pin::pin!(main);
        let _restore = Restore(set_current(Some(self.timers.clone())));
        let main_waker = self.waker(MAIN);
        self.ready.lock().push_back(MAIN);
        // Every source runs once at the start (woken), then on its waker or its deadline.
        let flags: SourceFlags = Arc::new(spin::Mutex::new(alloc::vec![true; sources.len()]));
        let source_wakers: Vec<Waker> = (0..sources.len())
            .map(|index| {
                Waker::from(Arc::new(SourceWaker {
                    index,
                    flags: flags.clone(),
                }))
            })
            .collect();
        let mut due: Vec<Option<u64>> = alloc::vec![None; sources.len()];
        let mut wake_all_seen = wake_all_count();
        loop {
            self.stats.count(0);
            self.timers.lock().now = park.now_ns();
            // Poll everything that is ready, main first when it was woken.
            loop {
                self.admit();
                self.wake_all_if_asked(&mut wake_all_seen, &flags);
                let next = self.ready.lock().pop_front();
                let Some(id) = next else { break };
                self.stats.count(3);
                if id == MAIN {
                    let mut cx = Context::from_waker(&main_waker);
                    if let Poll::Ready(v) = main.as_mut().poll(&mut cx) {
                        return v;
                    }
                } else {
                    self.poll_task(id);
                }
            }
            let now = park.now_ns();
            self.timers.lock().now = now;
            let mut deadline = timers_due(&self.timers, now);
            for (i, s) in sources.iter().enumerate() {
                let woken = core::mem::take(&mut flags.lock()[i]);
                if woken || due[i].is_some_and(|d| d <= now) {
                    self.stats.count(1);
                    let mut cx = Context::from_waker(&source_wakers[i]);
                    due[i] = s.poll(&mut cx, now);
                }
                deadline = earliest(deadline, due[i]);
            }
            deadline = earliest(deadline, timers_due(&self.timers, park.now_ns()));
            if self.ready.lock().is_empty() && self.shared.borrow().new.is_empty() {
                self.stats.count(2);
                park.park(deadline);
            }
        }
    }
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Pending sleeps by (deadline, sequence): each [`Sleep`] owns at most one entry and removes it
/// when dropped, so timeouts that never fire (the common case: `timeout(idle, read)`) do not
/// pile up until their deadlines.
#[derive(Default)]
struct Timers {
    map: BTreeMap<(u64, u64), Waker>,
    seq: u64,
    /// The executor's clock as of its current turn.
    now: u64,
}

/// An executor's timer queue. Each [`Executor`] owns one; a [`Sleep`] queues itself in the queue
/// of the executor polling it (see [`current`]), so executors with different clocks (tests run
/// many at once, each on its own simulated clock) never see each other's deadlines.
type TimerQueue = Arc<spin::Mutex<Timers>>;

/// The timer queue of the executor running on this CPU (on the host: on this thread), set by
/// [`Executor::block_on`] for as long as it runs.
#[cfg(any(target_os = "none", target_os = "hermit"))]
static CURRENT: spin::Mutex<Option<TimerQueue>> = spin::Mutex::new(None);

#[cfg(any(target_os = "none", target_os = "hermit"))]
fn current() -> Option<TimerQueue> {
    CURRENT.lock().clone()
}

#[cfg(any(target_os = "none", target_os = "hermit"))]
fn set_current(q: Option<TimerQueue>) -> Option<TimerQueue> {
    core::mem::replace(&mut *CURRENT.lock(), q)
}

#[cfg(not(any(target_os = "none", target_os = "hermit")))]
std::thread_local! {
    static CURRENT: RefCell<Option<TimerQueue>> = const { RefCell::new(None) };
}

#[cfg(not(any(target_os = "none", target_os = "hermit")))]
fn current() -> Option<TimerQueue> {
    CURRENT.with(|c| c.borrow().clone())
}

#[cfg(not(any(target_os = "none", target_os = "hermit")))]
fn set_current(q: Option<TimerQueue>) -> Option<TimerQueue> {
    CURRENT.with(|c| core::mem::replace(&mut *c.borrow_mut(), q))
}

/// The clock of the executor running on this CPU (thread), as of its current turn: the one
/// clock tasks should read (a task's deadlines then agree with its executor's timers). None
/// outside [`Executor::block_on`].
pub fn now_ns() -> Option<u64> {
    current().map(|q| q.lock().now)
}

/// Puts the previous executor's timer queue back when `block_on` returns (or unwinds).
struct Restore(Option<TimerQueue>);

impl Drop for Restore {
    fn drop(&mut self) {
        set_current(self.0.take());
    }
}

/// Wakes the timers of `q` due at `now` (their entries leave the map); returns the next
/// deadline.
fn timers_due(q: &TimerQueue, now: u64) -> Option<u64> {
    let mut due = Vec::new();
    let next = {
        let mut t = q.lock();
        while let Some(e) = t.map.first_entry() {
            if e.key().0 > now {
                break;
            }
            due.push(e.remove());
        }
        t.map.keys().next().map(|k| k.0)
    };
    for w in due {
        w.wake();
    }
    next
}

/// A future that completes once the clock (as given by `now`) reaches `at`. It must be polled
/// by an [`Executor`] (it queues itself in that executor's timers).
pub struct Sleep<C: Fn() -> u64> {
    at: u64,
    now: C,
    /// Our entry in an executor's timer queue, while it may be there.
    key: Option<(TimerQueue, (u64, u64))>,
}

impl<C: Fn() -> u64> Sleep<C> {
    fn dequeue(&mut self) {
        if let Some((q, k)) = self.key.take() {
            q.lock().map.remove(&k);
        }
    }
}

impl<C: Fn() -> u64 + Unpin> Future for Sleep<C> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if (this.now)() >= this.at {
            this.dequeue();
            return Poll::Ready(());
        }
        if let Some((q, k)) = &this.key {
            // Still queued: keep the newest waker.
            if let Some(w) = q.lock().map.get_mut(k) {
                if !w.will_wake(cx.waker()) {
                    *w = cx.waker().clone();
                }
                return Poll::Pending;
            }
        }
        // Not queued yet, or woken (its deadline passed on the executor's clock but not on
        // ours, which may run behind): queue again.
        let q = current().expect("a Sleep was polled outside xen::exec::Executor::block_on");
        let k = {
            let mut t = q.lock();
            t.seq += 1;
            let k = (this.at, t.seq);
            t.map.insert(k, cx.waker().clone());
            k
        };
        this.key = Some((q, k));
        Poll::Pending
    }
}

impl<C: Fn() -> u64> Drop for Sleep<C> {
    fn drop(&mut self) {
        self.dequeue();
    }
}

/// Completes at time `at` of the clock `now` (ns). On Xen use [`sleep`] / [`sleep_until`].
pub fn sleep_until_with<C: Fn() -> u64 + Unpin>(now: C, at: u64) -> Sleep<C> {
    Sleep { at, now, key: None }
}

/// Completes at system time `at` (ns since boot).
#[cfg(any(target_os = "none", target_os = "hermit"))]
pub fn sleep_until(at: u64) -> Sleep<fn() -> u64> {
    sleep_until_with(crate::time::now_ns as fn() -> u64, at)
}

/// Completes `ns` nanoseconds from now.
#[cfg(any(target_os = "none", target_os = "hermit"))]
pub fn sleep(ns: u64) -> Sleep<fn() -> u64> {
    sleep_until(crate::time::now_ns().saturating_add(ns))
}

/// Parks in Xen: the idle loop (events, timers, lifecycle), blocking until an event or the
/// deadline.
#[cfg(any(target_os = "none", target_os = "hermit"))]
#[derive(Debug, Default, Clone, Copy)]
pub struct XenPark;

#[cfg(any(target_os = "none", target_os = "hermit"))]
impl Clock for XenPark {
    fn now_ns(&self) -> u64 {
        crate::time::now_ns()
    }
}

#[cfg(any(target_os = "none", target_os = "hermit"))]
impl Park for XenPark {
    fn park(&mut self, deadline: Option<u64>) {
        crate::sched::poll_once(deadline);
    }
}

/// Runs `main` on a new executor parked in Xen, with `sources` driven each turn. For apps:
/// `xen::exec::run(&[&net], |sp| async move { ... })`.
#[cfg(any(target_os = "none", target_os = "hermit"))]
pub fn run<T, F: Future<Output = T>>(
    sources: &[&dyn Source],
    main: impl FnOnce(Spawner) -> F,
) -> T {
    let mut ex = Executor::new();
    let fut = main(ex.spawner());
    ex.block_on(&mut XenPark, sources, fut)
}

/// Runs `fut` until it completes or `sleep` does: `Some(output)`, or `None` on timeout.
pub async fn timeout<C: Fn() -> u64 + Unpin, F: Future>(
    sleep: Sleep<C>,
    fut: F,
) -> Option<F::Output> {
    let mut fut = core::pin::pin!(fut);
    let mut sleep = sleep;
    core::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        match Pin::new(&mut sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Yields once to the other tasks.
pub async fn yield_now() {
    let mut yielded = false;
    core::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    struct Clock {
        now: Rc<Cell<u64>>,
        parks: usize,
    }
    impl super::Clock for Clock {
        fn now_ns(&self) -> u64 {
            self.now.get()
        }
    }
    impl Park for Clock {
        fn park(&mut self, deadline: Option<u64>) {
            self.parks += 1;
            // Jump to the deadline (a simulated idle wait).
            if let Some(d) = deadline {
                self.now.set(self.now.get().max(d));
            } else {
                panic!("parked with no deadline: would sleep forever");
            }
        }
    }

    #[test]
    fn spawned_tasks_run_and_join() {
        let mut ex = Executor::new();
        let sp = ex.spawner();
        let mut clock = Clock {
            now: Rc::new(Cell::new(0)),
            parks: 0,
        };
        let out = ex.block_on(&mut clock, &[], async move {
            let hs: Vec<_> = (0..10u32).map(|i| sp.spawn(async move { i * 2 })).collect();
            let mut sum = 0;
            for h in hs {
                sum += h.await;
            }
            sum
        });
        assert_eq!(out, 90);
        assert_eq!(clock.parks, 0, "nothing waited, nothing parked");
        assert_eq!(ex.live_tasks(), 0);
    }

    #[test]
    fn sleep_parks_until_its_deadline_in_order() {
        let now = Rc::new(Cell::new(0u64));
        let mut clock = Clock {
            now: now.clone(),
            parks: 0,
        };
        let mut ex = Executor::new();
        let sp = ex.spawner();
        let order = Rc::new(RefCell::new(Vec::new()));
        let (o, n) = (order.clone(), now.clone());
        ex.block_on(&mut clock, &[], async move {
            let mut hs = Vec::new();
            for (i, at) in [(1, 300u64), (2, 100), (3, 200)] {
                let (o, n) = (o.clone(), n.clone());
                hs.push(sp.spawn(async move {
                    let n2 = n.clone();
                    sleep_until_with(move || n2.get(), at).await;
                    o.borrow_mut().push((i, n.get()));
                }));
            }
            for h in hs {
                h.await;
            }
        });
        assert_eq!(*order.borrow(), vec![(2, 100), (3, 200), (1, 300)]);
        assert_eq!(clock.parks, 3);
    }

    struct Countdown {
        left: Cell<u32>,
        waker: RefCell<Option<Waker>>,
    }
    impl Source for Countdown {
        fn poll(&self, _cx: &mut Context<'_>, now: u64) -> Option<u64> {
            let l = self.left.get();
            if l > 0 {
                self.left.set(l - 1);
                if l == 1 {
                    if let Some(w) = self.waker.borrow_mut().take() {
                        w.wake();
                    }
                }
            }
            Some(now + 10)
        }
    }

    #[test]
    fn sources_run_between_turns_and_wake_tasks() {
        let src = Rc::new(Countdown {
            left: Cell::new(5),
            waker: RefCell::new(None),
        });
        let mut clock = Clock {
            now: Rc::new(Cell::new(0)),
            parks: 0,
        };
        let mut ex = Executor::new();
        let s2 = src.clone();
        ex.block_on(&mut clock, &[&*src], async move {
            core::future::poll_fn(|cx| {
                if s2.left.get() == 0 {
                    Poll::Ready(())
                } else {
                    *s2.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await
        });
        assert_eq!(src.left.get(), 0);
        assert_eq!(clock.parks, 4, "parked between source polls, not spun");
    }

    /// A source that counts its polls, keeps its waker, and asks for a deadline of its own.
    struct Counted {
        polls: Cell<u32>,
        waker: RefCell<Option<Waker>>,
        next: Cell<Option<u64>>,
    }
    impl Source for Counted {
        fn poll(&self, cx: &mut Context<'_>, now: u64) -> Option<u64> {
            self.polls.set(self.polls.get() + 1);
            if self.next.get().is_some_and(|d| now >= d) {
                self.next.set(None);
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            self.next.get()
        }
    }

    #[test]
    fn a_source_is_polled_only_when_woken_or_due() {
        let now = Rc::new(Cell::new(0u64));
        let mut clock = Clock {
            now: now.clone(),
            parks: 0,
        };
        let a = Rc::new(Counted {
            polls: Cell::new(0),
            waker: RefCell::new(None),
            next: Cell::new(None),
        });
        let b = Rc::new(Counted {
            polls: Cell::new(0),
            waker: RefCell::new(None),
            next: Cell::new(Some(5_000)),
        });
        let mut ex = Executor::new();
        let (a2, n) = (a.clone(), now.clone());
        ex.block_on(&mut clock, &[&*a, &*b], async move {
            // 100 turns of timers: neither source has anything to do.
            for i in 1..=100u64 {
                let n2 = n.clone();
                sleep_until_with(move || n2.get(), i * 10).await;
            }
            assert_eq!(a2.polls.get(), 1, "a: only its first poll");
            // A task hands `a` work: it runs once at the end of the turn.
            a2.waker.borrow().as_ref().unwrap().wake_by_ref();
            let n2 = n.clone();
            sleep_until_with(move || n2.get(), 2_000).await;
            assert_eq!(a2.polls.get(), 2);
            let n2 = n.clone();
            sleep_until_with(move || n2.get(), 6_000).await;
        });
        assert_eq!(a.polls.get(), 2);
        // b: its first poll, then at its deadline (5000), after which it asks for nothing.
        assert_eq!(b.polls.get(), 2);
    }

    #[test]
    fn dropped_sleeps_leave_no_timers_behind() {
        let now = Rc::new(Cell::new(0u64));
        let mut clock = Clock {
            now: now.clone(),
            parks: 0,
        };
        let mut ex = Executor::new();
        let n = now.clone();
        ex.block_on(&mut clock, &[], async move {
            for i in 0..10_000u64 {
                let n2 = n.clone();
                // A long timeout around something that completes at once, as a read that has
                // data: the timeout never fires and must not stay queued.
                let r = timeout(
                    sleep_until_with(move || n2.get(), 1_000_000_000 + i),
                    async {
                        yield_now().await;
                        i
                    },
                )
                .await;
                assert_eq!(r, Some(i));
            }
        });
        assert_eq!(ex.pending_timers(), 0, "never-fired timeouts still queued");
    }

    #[test]
    fn an_executor_parks_on_its_own_timers_only() {
        // The suite's flake (netfront stack tests): with one global timer queue, a test's
        // executor parked until another test's (simulated-clock) deadline, so its clock crept
        // forward in ns steps and a 100-client run finished in under a simulated ms.
        let mut ex1 = Executor::new();
        let sp1 = ex1.spawner();
        let now1 = Rc::new(Cell::new(0u64));
        let mut clock1 = Clock {
            now: now1.clone(),
            parks: 0,
        };
        ex1.block_on(&mut clock1, &[], async move {
            let n = now1.clone();
            sp1.spawn(async move { sleep_until_with(move || n.get(), 5).await });
            // A few turns, so the task runs and queues its sleep.
            for _ in 0..3 {
                yield_now().await;
            }
        });
        assert_eq!(ex1.pending_timers(), 1, "the task sleeps on in ex1");

        let now2 = Rc::new(Cell::new(0u64));
        let mut clock2 = Clock {
            now: now2.clone(),
            parks: 0,
        };
        let mut ex2 = Executor::new();
        let n = now2.clone();
        ex2.block_on(&mut clock2, &[], async move {
            sleep_until_with(move || n.get(), 1000).await
        });
        assert_eq!(now2.get(), 1000);
        assert_eq!(
            clock2.parks, 1,
            "ex2 parked once, straight to its own deadline"
        );
        assert_eq!(ex1.pending_timers(), 1);
    }

    #[test]
    fn wake_all_polls_every_waiting_task_and_source_again() {
        use core::sync::atomic::AtomicUsize;
        // Two tasks that wait forever (nothing wakes them) count their polls, a source its.
        let polls = Rc::new([const { AtomicUsize::new(0) }; 2]);
        let source = Counted {
            polls: Cell::new(0),
            waker: RefCell::new(None),
            next: Cell::new(None),
        };
        let mut ex = Executor::new();
        let sp = ex.spawner();
        let mut clock = Clock {
            now: Rc::new(Cell::new(0)),
            parks: 0,
        };
        let p = polls.clone();
        let src = &source;
        let now = clock.now.clone();
        let n = ex.block_on(&mut clock, &[&source], async move {
            for i in 0..2 {
                let p = p.clone();
                sp.spawn(core::future::poll_fn(move |_| {
                    p[i].fetch_add(1, Ordering::SeqCst);
                    Poll::<()>::Pending
                }));
            }
            // Let both run once and the source go quiet, then wake everything.
            yield_now().await;
            yield_now().await;
            let before = [0, 1].map(|i| p[i].load(Ordering::SeqCst));
            let source_before = src.polls.get();
            wake_all();
            // Wait for a turn to end (the sources run at its end), on the simulated clock.
            sleep_until_with(move || now.get(), 1).await;
            (
                [0, 1].map(|i| p[i].load(Ordering::SeqCst) - before[i]),
                src.polls.get() - source_before,
            )
        });
        assert_eq!(n.0, [1, 1], "each waiting task polled exactly once more");
        assert_eq!(n.1, 1, "the source was polled again too, once");
    }

    #[test]
    fn yield_now_lets_others_run() {
        let mut ex = Executor::new();
        let sp = ex.spawner();
        let mut clock = Clock {
            now: Rc::new(Cell::new(0)),
            parks: 0,
        };
        let flag = Rc::new(Cell::new(false));
        let f = flag.clone();
        ex.block_on(&mut clock, &[], async move {
            let _h = sp.spawn(async move { f.set(true) });
            while !flag.get() {
                yield_now().await;
            }
        });
    }
}
