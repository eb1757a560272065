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
//! * [`Pool::wake_spinner`] (a step was enqueued) wakes a parked worker only when no worker is
//!   awake, spinning or running a job: one that runs a job spins again when the job ends. Waking
//!   another then would make the workers trade the role on every step, and a step kicked off
//!   while the woken one is still being scheduled would wait for it.
//! * A worker parks only after it has registered as parked and seen no queued job (and, while
//!   steps are in flight, seen the spinning role taken): a dispatch between its check and its
//!   park leaves its park token set, so no job waits in the queue while every worker sleeps.
//!
//! * The spinner watches more than the queue: a [`Source`] of runs that the GPU published where
//!   the notifier watches too (graph kicks). A run is [claimed](Claims::claim) by exactly one
//!   thread; the spinner runs the runs it claims itself, so a step kicked off while a worker spins
//!   reaches its closure with no hand-off between threads, as the raw loop's spinning thread does.
//!
//! The pool is generic over its job so that the loom model (`pool_loom_model.rs`) runs the real
//! protocol with loom's atomics, queue and parking.

use crate::runtime::park::{Policy, Sleepers, spin_while};
use crate::runtime::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};
use std::sync::atomic::Ordering;

/// What a worker runs.
pub(crate) trait Work: Send {
    /// Runs the job (containing the user's panics) and disposes of it.
    fn run(self: Box<Self>);
}

/// Jobs the spinning worker claims besides the queue's (see the module docs).
pub(crate) trait Source<J> {
    /// A job claimed now, if one is ready.
    fn claim(&self) -> Option<Box<J>>;
    /// The worker gives the spinning role up: it lets go of what it watched.
    fn release(&self) {}
}

/// No jobs besides the queue's.
#[cfg_attr(not(all(test, loom)), allow(dead_code))]
pub(crate) struct QueueOnly;

impl<J> Source<J> for QueueOnly {
    fn claim(&self) -> Option<Box<J>> {
        None
    }
}

/// The runs of one GPU-written count (a graph kick's slot) that crate threads have claimed: each
/// count up to the published one is claimed by exactly one thread, in order.
pub(crate) struct Claims {
    seen: AtomicU64,
}

impl Claims {
    /// Nothing claimed.
    pub(crate) fn new() -> Self {
        Claims {
            seen: AtomicU64::new(0),
        }
    }

    /// Claims the next count if it is at most `published`; returns it.
    pub(crate) fn claim(&self, published: u64) -> Option<u64> {
        let mut seen = self.seen.load(Ordering::Acquire);
        while seen < published {
            match self.seen.compare_exchange_weak(
                seen,
                seen + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(seen + 1),
                Err(now) => seen = now,
            }
        }
        None
    }

    /// Counts claimed so far.
    pub(crate) fn seen(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }
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
    /// Workers running a job now.
    running: AtomicUsize,
    /// Jobs dispatched so far (a statistic, not part of the protocol).
    dispatched: std::sync::atomic::AtomicU64,
}

impl<J: Work> Pool<J> {
    /// No job, no worker parked, nobody spinning.
    pub(crate) fn new() -> Self {
        Pool {
            queue: Queue::new(),
            sleepers: Sleepers::new(),
            spinner: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            dispatched: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Jobs dispatched so far.
    pub(crate) fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Relaxed)
    }

    /// Gives `job` to a worker. Never blocks; makes no driver call.
    pub(crate) fn dispatch(&self, job: Box<J>) {
        self.dispatched.fetch_add(1, Ordering::Relaxed);
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

    /// Wakes a worker to spin, if none is awake (steps were enqueued).
    pub(crate) fn wake_spinner(&self) {
        // The caller's step count before the loads of the role and of the running count (as in
        // `dispatch`); a worker ending a job stores the count, then loads the steps in flight
        // (`work`): one of the two sees the other, so the step finds a spinner either way.
        fence(Ordering::SeqCst);
        if !self.spinner.load(Ordering::SeqCst) && self.running.load(Ordering::SeqCst) == 0 {
            self.sleepers.wake_one();
        }
    }

    /// Runs `job`, counted as running while it runs.
    fn run(&self, job: Box<J>) {
        self.running.fetch_add(1, Ordering::SeqCst);
        job.run();
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    /// A worker's loop: runs jobs, spins (by `policy`) while `busy()` says steps are in flight
    /// and nobody else spins, watching the queue and `source`, parks otherwise; returns once
    /// `stop()` (the process's workers never stop; the model's do).
    pub(crate) fn work(
        &self,
        policy: Policy,
        busy: impl Fn() -> bool,
        stop: impl Fn() -> bool,
        source: &impl Source<J>,
    ) {
        while !stop() {
            if let Some(job) = self.queue.pop() {
                self.run(job);
                continue;
            }
            if self
                .spinner
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                // The spinner takes the job before it gives up the role: `dispatch` then never
                // sees "no spinner" while the job it pushed waits in the queue, and wakes nobody.
                // It counts itself running before it gives the role up, so that `wake_spinner`
                // never sees it neither spinning nor running.
                let taken = std::cell::Cell::new(None);
                let got = spin_while(
                    policy,
                    || busy() && !stop(),
                    || {
                        let job = self.queue.pop().or_else(|| source.claim());
                        let some = job.is_some();
                        if some {
                            self.running.fetch_add(1, Ordering::SeqCst);
                            taken.set(job);
                        }
                        some
                    },
                );
                self.spinner.store(false, Ordering::SeqCst);
                // Let go of what it watched before the job runs, not after: a job that blocks
                // must not keep the closures of kicks whose graphs were dropped alive.
                source.release();
                if let Some(job) = taken.into_inner() {
                    // Run the job at once. While this worker runs it nobody spins, so a job
                    // dispatched meanwhile wakes a parked worker (`dispatch`), off this step's
                    // path; back-to-back short jobs wake nobody.
                    job.run();
                    self.running.fetch_sub(1, Ordering::SeqCst);
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::tests::wait_for;
    use super::*;
    use crate::runtime::park::TRAMPOLINE;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    /// A job that marks itself started, then runs until it is released.
    struct Hold {
        started: Arc<AtomicUsize>,
        release: Arc<AtomicBool>,
    }

    impl Work for Hold {
        fn run(self: Box<Self>) {
            self.started.fetch_add(1, Ordering::SeqCst);
            while !self.release.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
        }
    }

    /// A step enqueued while the only awake worker runs a job wakes no parked worker: the worker
    /// takes the spinning role again when its job ends. (Waking one made the workers trade the
    /// role on every step, each step then waiting for a woken thread to be scheduled.) A job
    /// dispatched while that worker is still busy does wake one, so it never waits behind it.
    #[test]
    fn a_step_enqueued_while_a_worker_runs_a_job_wakes_nobody() {
        let pool = Arc::new(Pool::<Hold>::new());
        let stop = Arc::new(AtomicBool::new(false));
        // Steps in flight for the whole test: an awake worker spins.
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (pool, stop) = (pool.clone(), stop.clone());
                std::thread::spawn(move || {
                    pool.work(
                        TRAMPOLINE,
                        || true,
                        || stop.load(Ordering::SeqCst),
                        &QueueOnly,
                    )
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        wait_for("one spinner and one parked worker", deadline, || {
            pool.spinner.load(Ordering::SeqCst) && pool.sleepers.parked() == 1
        });
        let (started, release) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let hold = || {
            Box::new(Hold {
                started: started.clone(),
                release: release.clone(),
            })
        };
        pool.dispatch(hold());
        wait_for("the job to start", deadline, || {
            started.load(Ordering::SeqCst) == 1
        });
        let woken = pool.sleepers.woken();
        // The next step is enqueued while the job runs.
        pool.wake_spinner();
        assert_eq!(
            pool.sleepers.woken(),
            woken,
            "a worker was woken while the awake one runs a job"
        );
        // A job dispatched now must not wait for the running one: a parked worker is woken.
        pool.dispatch(hold());
        wait_for("the second job to start", deadline, || {
            started.load(Ordering::SeqCst) == 2
        });
        assert_eq!(pool.sleepers.woken(), woken + 1);
        release.store(true, Ordering::SeqCst);
        // Both jobs done, a worker takes the spinning role again, with no wake-up.
        wait_for("a spinner again", deadline, || {
            pool.spinner.load(Ordering::SeqCst)
        });
        assert_eq!(pool.sleepers.woken(), woken + 1);
        stop.store(true, Ordering::SeqCst);
        for _ in 0..2 {
            pool.sleepers.wake_one();
        }
        for w in workers {
            w.join().expect("a worker panicked");
        }
    }
}
