//! Loom model of the worker pool ([`Pool`]): the real [`Pool::dispatch`], [`Pool::wake_spinner`]
//! and [`Pool::work`] (the spinning role, the spinner taking a job before it gives the role up,
//! the wake rule of `dispatch`, parking through the real `Sleepers`), with loom's atomics, a
//! locked queue in place of crossbeam's, and loom's park and unpark.
//!
//! The spinner spins while steps are in flight for at most [`SPINS`] looks (a loom model cannot
//! spin without bound), then as if the window after the last step had passed: the shortest
//! window is the one where a lost wake-up would show. Not covered: the window's length, and the
//! notifier's own loop, which dispatches like any other thread.
//!
//! A third model kicks its steps off as the GPU does a graph kick's: it publishes a count, and
//! the spinning worker (through a [`Source`] over the real [`Claims`]) and the publishing thread,
//! standing in for the notifier, race to claim each run; the notifier dispatches what it claims.
//! The notifier's leaving the runs to a spinner for a while is not modelled: it only delays its
//! claim, and the model lets it claim at once.

use super::pool::{Claims, Pool, QueueOnly, Source, Work};
use crate::runtime::park::Policy;
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Notify};
use loom::thread;
use std::time::Duration;

/// No spin window after the last step.
const NO_WINDOW: Policy = Policy {
    spin: Duration::ZERO,
    sleep_min: Duration::ZERO,
    sleep_max: Duration::ZERO,
};

/// How many times a worker sees steps in flight before it behaves as if none were.
const SPINS: usize = 2;

/// A job that counts its runs and, like a trampoline step, ends a step in flight; the last one
/// tells the model's main thread.
struct Step {
    runs: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    all_ran: Arc<Notify>,
    jobs: usize,
}

impl Work for Step {
    fn run(self: Box<Self>) {
        if self.runs.fetch_add(1, SeqCst) + 1 == self.jobs {
            self.all_ran.notify();
        }
        self.in_flight.fetch_sub(1, SeqCst);
    }
}

/// A graph kick's runs as the spinning worker claims them: the count the "GPU" published and the
/// real claim protocol.
struct Kicked {
    published: Arc<AtomicU64>,
    claims: Arc<Claims>,
    step: Step,
}

impl Step {
    fn again(&self) -> Box<Step> {
        Box::new(Step {
            runs: self.runs.clone(),
            in_flight: self.in_flight.clone(),
            all_ran: self.all_ran.clone(),
            jobs: self.jobs,
        })
    }
}

impl Source<Step> for Kicked {
    fn claim(&self) -> Option<Box<Step>> {
        self.claims
            .claim(self.published.load(SeqCst))
            .map(|_| self.step.again())
    }
}

/// How the model's steps reach the workers.
#[derive(Clone, Copy)]
enum Kick {
    /// Dispatched, from the main thread.
    Dispatch,
    /// Dispatched, one of them from a second thread.
    DispatchFromTwoThreads,
    /// Published as a graph kick's count, claimed by the spinner or by the main thread.
    Published,
}

fn model(jobs: usize, kick: Kick) {
    let from_two_threads = matches!(kick, Kick::DispatchFromTwoThreads);
    let pool = Arc::new(Pool::<Step>::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let all_ran = Arc::new(Notify::new());
    let published = Arc::new(AtomicU64::new(0));
    let claims = Arc::new(Claims::new());
    const WORKERS: usize = 2;
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (pool, in_flight, stop) = (pool.clone(), in_flight.clone(), stop.clone());
            let kicked = Kicked {
                published: published.clone(),
                claims: claims.clone(),
                step: Step {
                    runs: runs.clone(),
                    in_flight: in_flight.clone(),
                    all_ran: all_ran.clone(),
                    jobs,
                },
            };
            thread::spawn(move || {
                let spins = std::cell::Cell::new(SPINS);
                let busy = || {
                    let left = spins.get();
                    spins.set(left.saturating_sub(1));
                    left > 0 && in_flight.load(SeqCst) > 0
                };
                let stop = || stop.load(SeqCst);
                match kick {
                    Kick::Published => pool.work(NO_WINDOW, busy, stop, &kicked),
                    _ => pool.work(NO_WINDOW, busy, stop, &QueueOnly),
                }
            })
        })
        .collect();
    let enqueue = {
        let (pool, runs, in_flight, all_ran) = (
            pool.clone(),
            runs.clone(),
            in_flight.clone(),
            all_ran.clone(),
        );
        let (published, claims) = (published.clone(), claims.clone());
        move || {
            // As `step_enqueued`: counted in flight, a spinner woken, then the job dispatched
            // (by the notifier when the GPU kicks it off).
            in_flight.fetch_add(1, SeqCst);
            pool.wake_spinner();
            let step = Step {
                runs: runs.clone(),
                in_flight: in_flight.clone(),
                all_ran: all_ran.clone(),
                jobs,
            };
            match kick {
                Kick::Published => {
                    // The GPU's write, then the notifier's pass: it dispatches a run it claims.
                    let now = published.fetch_add(1, SeqCst) + 1;
                    if claims.claim(now).is_some() {
                        pool.dispatch(Box::new(step));
                    }
                }
                _ => pool.dispatch(Box::new(step)),
            }
        }
    };
    let other = from_two_threads.then(|| {
        let enqueue = enqueue.clone();
        thread::spawn(move || enqueue())
    });
    for _ in 0..jobs - usize::from(from_two_threads) {
        enqueue();
    }
    if let Some(t) = other {
        t.join().expect("the enqueuing thread");
    }
    // Every job runs without this thread's help: a job left queued while both workers park would
    // leave every thread blocked, which loom reports as a deadlock. (loom's `Notify` may wake
    // spuriously.)
    while runs.load(SeqCst) < jobs {
        all_ran.wait();
    }
    stop.store(true, SeqCst);
    pool.wake_all(WORKERS);
    for w in workers {
        w.join().expect("a worker");
    }
    assert_eq!(runs.load(SeqCst), jobs, "a job ran twice");
    assert_eq!(in_flight.load(SeqCst), 0);
    if let Kick::Published = kick {
        assert_eq!(
            claims.seen(),
            jobs as u64,
            "a run was claimed twice or never"
        );
    }
}

/// Two steps dispatched back to back against two workers: each runs exactly once, and none waits
/// in the queue while every worker is parked (the spinner's hand-over of its role, `dispatch`'s
/// wake rule and the park check are what the schedules race).
#[test]
fn loom_pool_runs_every_job_once_and_loses_no_wake_up() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| model(2, Kick::Dispatch));
}

/// The same with the two steps dispatched from two threads at once.
#[test]
fn loom_pool_runs_jobs_dispatched_from_two_threads() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| model(2, Kick::DispatchFromTwoThreads));
}

/// Two steps kicked off as a graph kick's runs: each run is claimed once, by the spinning worker
/// (which runs it itself) or by the notifier (which dispatches it), and runs exactly once; none is
/// left unclaimed while every worker parks.
#[test]
fn loom_pool_runs_each_published_run_once_whoever_claims_it() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| model(2, Kick::Published));
}
