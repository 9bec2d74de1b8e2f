//! The durable engine's shared state, between the connections, the committer and the
//! compactor (tasks of one executor, so `Rc` and `RefCell`; no lock is held across an await).
//!
//! Connections run commands on the [`Engine`], whose [`Journal`] ([`DbJournal`]) appends each
//! effect to the [`Log`] and wakes the committer. A connection then waits for the batch of
//! the last record appended ([`Db::wait_durable`]) before it sends its replies, so no reply —
//! not even a read of a value another client just wrote — goes out before what it shows is
//! on disk (with `fsync=always`). The committer writes one frame at a time; what is appended
//! meanwhile is the next group commit.

use crate::cmd::{Class, Journal};
use crate::log::{Log, Room, Write};
use crate::store::{Effect, OnDisk};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::poll_fn;
use core::task::{Poll, Waker};

/// When a reply is sent, against the disk (`fsync=` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After its records were written and the disk flushed (Redis's `appendfsync always`).
    Always,
    /// After its records were written to the backend; the disk is flushed every second (a guest
    /// crash loses nothing; a host crash up to a second: Redis's `everysec`, roughly).
    Batch,
    /// At once; records are written in the background, flushed at shutdown (`appendfsync no`).
    None,
}

impl Fsync {
    /// Parses `always`, `batch` or `none`.
    pub fn parse(s: &str) -> Option<Fsync> {
        match s {
            "always" => Some(Fsync::Always),
            "batch" => Some(Fsync::Batch),
            "none" => Some(Fsync::None),
            _ => None,
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Batch => "batch",
            Fsync::None => "none",
        }
    }
}

/// The log and who waits on it.
pub struct Db {
    /// The log's state.
    pub log: RefCell<Log>,
    /// The durability policy.
    pub fsync: Fsync,
    committer: Cell<Option<Waker>>,
    waiters: RefCell<Vec<Waker>>,
    broken: Cell<bool>,
    closed: Cell<bool>,
}

impl core::fmt::Debug for Db {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Db")
            .field("fsync", &self.fsync)
            .field("broken", &self.broken.get())
            .finish()
    }
}

/// The [`Journal`] the durable engine writes to.
#[derive(Debug, Clone)]
pub struct DbJournal(pub Rc<Db>);

const BROKEN: &str =
    "ERR the log cannot be written (disk error): writes are refused, reads still work";

impl Journal for DbJournal {
    fn admit(&mut self, class: Class, bytes: usize) -> Result<(), &'static str> {
        if self.0.broken.get() {
            return Err(BROKEN);
        }
        let room = match class {
            Class::Delete => Room::Delete,
            _ => Room::Write,
        };
        self.0.log.borrow_mut().admit(room, bytes)
    }

    fn append(&mut self, effect: &Effect) -> u64 {
        let loc = self.0.log.borrow_mut().append(effect);
        self.0.wake_committer();
        loc
    }

    fn release(&mut self, at: OnDisk) {
        self.0.log.borrow_mut().release(at);
    }
}

impl Db {
    /// Shared state over a recovered `log`.
    pub fn new(log: Log, fsync: Fsync) -> Rc<Db> {
        Rc::new(Db {
            log: RefCell::new(log),
            fsync,
            committer: Cell::new(None),
            waiters: RefCell::new(Vec::new()),
            broken: Cell::new(false),
            closed: Cell::new(false),
        })
    }

    /// Wakes the committer (something was appended).
    pub fn wake_committer(&self) {
        if let Some(w) = self.committer.take() {
            w.wake();
        }
    }

    /// Waits until something was appended and not yet written.
    pub async fn wait_for_appends(&self) {
        poll_fn(|cx| {
            if self.log.borrow().idle() {
                self.committer.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// The committer's next frame, waiting until there is one.
    pub async fn next_write(&self) -> Write {
        poll_fn(|cx| match self.log.borrow_mut().take_write() {
            Some(w) => Poll::Ready(w),
            None => {
                self.committer.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// The committer wrote (and, with `always`, flushed) `w`: replies waiting for it go.
    pub fn committed(&self, w: &Write) {
        self.log.borrow_mut().done(w);
        self.wake_waiters();
    }

    /// The committer could not write `w`: the log is broken (writes refused from now on),
    /// and every waiting reply is told.
    pub fn write_failed(&self, w: Write) {
        self.log.borrow_mut().failed(w);
        self.broken.set(true);
        self.wake_waiters();
    }

    /// Shutting down: no more commands are taken ([`Db::closed`]).
    pub fn close(&self) {
        self.closed.set(true);
    }

    /// True after [`Db::close`].
    pub fn closed(&self) -> bool {
        self.closed.get()
    }

    /// True once a write of the log failed.
    pub fn broken(&self) -> bool {
        self.broken.get()
    }

    fn wake_waiters(&self) {
        let ws = core::mem::take(&mut *self.waiters.borrow_mut());
        for w in ws {
            w.wake();
        }
    }

    /// Waits until batch `batch` is on disk (as the policy says): `Err` if the log broke.
    pub async fn wait_durable(&self, batch: u64) -> Result<(), ()> {
        if self.fsync == Fsync::None {
            return Ok(());
        }
        self.wait_batch(batch).await
    }

    /// Waits until everything appended so far is on disk (the compactor before it retires a
    /// segment, shutdown before it powers off), whatever the policy.
    pub async fn wait_all_written(&self) -> Result<(), ()> {
        let batch = self.log.borrow().last_batch();
        self.wait_batch(batch).await
    }

    /// Waits for the next commit (or the log breaking): what the compactor waits on, since
    /// only commits change what there is to compact.
    pub async fn next_commit(&self) {
        let next = self.log.borrow().durable() + 1;
        let _ = self.wait_batch(next).await;
    }

    async fn wait_batch(&self, batch: u64) -> Result<(), ()> {
        poll_fn(|cx| {
            if self.log.borrow().durable() >= batch {
                Poll::Ready(Ok(()))
            } else if self.broken.get() {
                Poll::Ready(Err(()))
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}
