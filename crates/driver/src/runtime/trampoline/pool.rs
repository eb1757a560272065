//! The worker pool: the threads that run trampoline jobs, and how a job reaches one.
//!
//! One worker at a time holds the *spinning* role: while steps are in flight it spins on the job
//! queue, so that a job dispatched then runs without a futex call anywhere on its path. The
//! others park. The protocol, in three rules:
//!
//! * A spinner that finds a job takes it off the queue *before* it gives up the role, and runs it
//!   at once (waking another worker first would put a futex call between the GPU's kickoff and
//!   the closure of every step).
//! * [`Pool::dispatch`] pushes the job, then wakes a parked worker only when nobody spins and the
//!   job is still queued: a job a spinner already took needs nobody woken.
//! * A worker parks only after it has registered as parked and seen no queued job (and, while
//!   steps are in flight, seen the spinning role taken): a dispatch between its check and its
//!   park leaves its park token set, so no job waits in the queue while every worker sleeps.
//!
//! The pool is generic over its job so that the loom model (`pool_loom_model.rs`) runs the real
//! protocol with loom's atomics, queue and parking.

use crate::runtime::park::{Policy, Sleepers, spin_while};
use crate::runtime::sync::atomic::{AtomicBool, fence};
use std::sync::atomic::Ordering;

/// What a worker runs.
pub(crate) trait Work: Send {
    /// Runs the job (containing the user's panics) and disposes of it.
    fn run(self: Box<Self>);
}

/// The job queue: crossbeam's lock-free queue; under loom, which cannot see into crossbeam's
/// atomics, a locked deque whose emptiness is read without the lock, as crossbeam's is (a
/// worker between registering as parked and parking only loads atomics).
#[cfg(not(all(test, loom)))]
type Queue<J> = crossbeam_queue::SegQueue<Box<J>>;

#[cfg(all(test, loom))]
pub(crate) struct Queue<J> {
    jobs: crate::runtime::sync::Mutex<std::collections::VecDeque<Box<J>>>,
    len: crate::runtime::sync::atomic::AtomicUsize,
}

#[cfg(all(test, loom))]
impl<J> Queue<J> {
    fn new() -> Self {
        Queue {
            jobs: crate::runtime::sync::Mutex::new(std::collections::VecDeque::new()),
            len: crate::runtime::sync::atomic::AtomicUsize::new(0),
        }
    }
    fn push(&self, j: Box<J>) {
        let mut q = self.jobs.lock().expect("queue lock");
        q.push_back(j);
        self.len.store(q.len(), Ordering::SeqCst);
    }
    fn pop(&self) -> Option<Box<J>> {
        let mut q = self.jobs.lock().expect("queue lock");
        let j = q.pop_front();
        self.len.store(q.len(), Ordering::SeqCst);
        j
    }
    fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }
}

/// Workers and the queue of jobs they take from.
pub(crate) struct Pool<J> {
    queue: Queue<J>,
    pub(super) sleepers: Sleepers,
    /// One worker at a time spins for jobs; the others park.
    pub(super) spinner: AtomicBool,
}

impl<J: Work> Pool<J> {
    /// No job, no worker parked, nobody spinning.
    pub(crate) fn new() -> Self {
        Pool {
            queue: Queue::new(),
            sleepers: Sleepers::new(),
            spinner: AtomicBool::new(false),
        }
    }

    /// Gives `job` to a worker. Never blocks; makes no driver call.
    pub(crate) fn dispatch(&self, job: Box<J>) {
        self.queue.push(job);
        // The push before the load of the role; a spinner that gives the role up stores it, then
        // (registering to park) loads the queue: fences on both sides (here and in
        // `Sleepers::park_unless`) make one of them see the other.
        fence(Ordering::SeqCst);
        // No spinner, and the job still queued (a spinner that just took it cleared the flag):
        // wake a worker. A job already taken needs nobody woken.
        if !self.spinner.load(Ordering::SeqCst) && !self.queue.is_empty() {
            self.sleepers.wake_one();
        }
    }

    /// Wakes a worker to spin, if nobody does (steps were enqueued).
    pub(crate) fn wake_spinner(&self) {
        // The caller's step count before the load of the role (as in `dispatch`).
        fence(Ordering::SeqCst);
        if !self.spinner.load(Ordering::SeqCst) {
            self.sleepers.wake_one();
        }
    }

    /// A worker's loop: runs jobs, spins (by `policy`) while `busy()` says steps are in flight
    /// and nobody else spins, parks otherwise; returns once `stop()` (the process's workers never
    /// stop; the model's do).
    pub(crate) fn work(&self, policy: Policy, busy: impl Fn() -> bool, stop: impl Fn() -> bool) {
        while !stop() {
            if let Some(job) = self.queue.pop() {
                job.run();
                continue;
            }
            if self
                .spinner
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                // The spinner takes the job before it gives up the role: `dispatch` then never
                // sees "no spinner" while the job it pushed waits in the queue, and wakes nobody.
                let taken = std::cell::Cell::new(None);
                let got = spin_while(
                    policy,
                    || busy() && !stop(),
                    || {
                        let job = self.queue.pop();
                        let some = job.is_some();
                        if some {
                            taken.set(job);
                        }
                        some
                    },
                );
                self.spinner.store(false, Ordering::SeqCst);
                if let Some(job) = taken.into_inner() {
                    // Run the job at once. While this worker runs it nobody spins, so a job
                    // dispatched meanwhile wakes a parked worker (`dispatch`), off this step's
                    // path; back-to-back short jobs wake nobody.
                    job.run();
                    continue;
                }
                debug_assert!(!got);
            }
            self.sleepers.park_unless(|| {
                stop() || !self.queue.is_empty() || (busy() && !self.spinner.load(Ordering::SeqCst))
            });
        }
    }

    /// Wakes every parked worker (the model's end).
    #[cfg(all(test, loom))]
    pub(crate) fn wake_all(&self, workers: usize) {
        for _ in 0..workers {
            self.sleepers.wake_one();
        }
    }
}
