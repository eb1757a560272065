//! Loom model of the waiter's protocol ([`Shared`]): futures registering, polling, taking their
//! result or dropping, against the thread's sweeps, in every interleaving loom explores.
//!
//! Covered: the real `register`, `poll`, `cancel` and `sweep` (the registry's lock, the
//! generation that decides when the thread copies the pending conditions again, firing under the
//! lock, waking outside it, the lock-free mirrors of the counts). Not covered: the thread's
//! timing and parking (spin window, back-off, `park`/`unpark` against `kick` and registrations),
//! which depend on clocks; the future types of `future.rs` above `Shared` (their first check and
//! the `Registration` that cancels on drop); the condition checks themselves (a host cell here,
//! a flag load or `cuEventQuery` in the crate).

use super::{Shared, State, Watch};
use crate::error::Result;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::thread;
use std::task::{Poll, Wake, Waker};

/// A host cell standing for what a future waits on (a flag, an event).
type Cell = loom::sync::Arc<AtomicBool>;

/// What a reached cell resolves to.
const VALUE: u64 = 7;

fn check(c: &Cell) -> Option<Result<u64>> {
    c.load(SeqCst).then_some(Ok(VALUE))
}

/// A task's waker: counts its wakes and unparks the task's thread, if it has one.
struct Task {
    wakes: AtomicUsize,
    thread: Option<thread::Thread>,
}

impl Task {
    /// A waker of a task that polls when it likes (`None`) or parks until woken (`Some`).
    fn new(thread: Option<thread::Thread>) -> std::sync::Arc<Task> {
        std::sync::Arc::new(Task {
            wakes: AtomicUsize::new(0),
            thread,
        })
    }

    fn wakes(&self) -> usize {
        self.wakes.load(SeqCst)
    }
}

impl Wake for Task {
    fn wake(self: std::sync::Arc<Self>) {
        self.wakes.fetch_add(1, SeqCst);
        if let Some(t) = &self.thread {
            t.unpark();
        }
    }
}

/// The registry's counts agree with its entries, and the lock-free mirrors with the registry
/// (they are published under the lock, so whoever holds it sees them equal).
fn assert_counts_agree(s: &Shared<Cell>) {
    let r = s.lock();
    let pending = r
        .entries
        .values()
        .filter(|e| matches!(e.state, State::Pending(_)))
        .count();
    assert_eq!(r.pending(), pending, "the pending count drifted");
    assert_eq!(s.pending(), r.pending(), "the pending mirror drifted");
    assert_eq!(s.count(), r.len(), "the entry count mirror drifted");
}

/// Two futures against the thread. The first waits on a cell that holds from the start: it
/// registers, polls again with another waker (its task moved), then takes the result if the poll
/// found it, else is dropped (cancels). The second waits on a cell it sets itself after
/// registering (the GPU's write), and parks until woken, then polls. The thread (the model's main
/// thread) sweeps until both are finished.
///
/// Checked: each waker is woken at most once, and only the one the future handed in last before
/// its condition fired; a fired future's result is taken exactly once, with its value; the counts
/// never drift; at the end nothing is registered, nothing pending, and the registry holds no
/// waker. A lost wake-up (the thread never seeing the second future) leaves the model spinning
/// until loom gives up on it, which fails the test too.
#[test]
fn loom_waiter_wakes_each_waker_at_most_once_and_leaves_nothing_registered() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let shared = loom::sync::Arc::new(Shared::<Cell>::new());
        let finished = loom::sync::Arc::new(AtomicUsize::new(0));

        let first = {
            let (s, finished) = (shared.clone(), finished.clone());
            thread::spawn(move || {
                let cell: Cell = loom::sync::Arc::new(AtomicBool::new(true));
                let (a, b) = (Task::new(None), Task::new(None));
                let id = s.register(cell, Waker::from(a.clone()));
                let taken = match s.poll(id, &Waker::from(b.clone())) {
                    Poll::Ready(r) => Some(r.expect("the cell's value")),
                    Poll::Pending => {
                        s.cancel(id);
                        None
                    }
                };
                finished.fetch_add(1, SeqCst);
                (taken, a, b)
            })
        };
        let second = {
            let (s, finished) = (shared.clone(), finished.clone());
            thread::spawn(move || {
                let cell: Cell = loom::sync::Arc::new(AtomicBool::new(false));
                let task = Task::new(Some(thread::current()));
                let id = s.register(cell.clone(), Waker::from(task.clone()));
                cell.store(true, SeqCst);
                let taken = loop {
                    match s.poll(id, &Waker::from(task.clone())) {
                        Poll::Ready(r) => break r.expect("the cell's value"),
                        Poll::Pending => thread::park(),
                    }
                };
                finished.fetch_add(1, SeqCst);
                (taken, task)
            })
        };

        let mut watch = Watch::new();
        while finished.load(SeqCst) < 2 {
            shared.sweep(&mut watch, check, |_, _| {});
            assert_counts_agree(&shared);
            thread::yield_now();
        }

        let (taken, a, b) = first.join().expect("first future");
        assert!(a.wakes() + b.wakes() <= 1, "a future was woken twice");
        // Fired before the second poll: that poll took the result, and the first waker was the
        // one woken. Fired after it: the second waker was woken, and the drop found no result.
        assert_eq!(taken.is_some(), a.wakes() == 1);
        assert!(b.wakes() == 0 || taken.is_none());
        if let Some(v) = taken {
            assert_eq!(v, VALUE);
        }
        let (taken, task) = second.join().expect("second future");
        assert_eq!(taken, VALUE);
        assert_eq!(
            task.wakes(),
            1,
            "the second future was not woken exactly once"
        );

        assert_counts_agree(&shared);
        let r = shared.lock();
        assert_eq!(r.len(), 0, "an entry was left registered");
        assert_eq!(r.pending(), 0);
        drop(r);
        for w in [&a, &b, &task] {
            assert_eq!(
                std::sync::Arc::strong_count(w),
                1,
                "the registry kept a waker"
            );
        }
    });
}

/// A device fault racing a future's condition: the thread's check fails a pending wait once the
/// fault is seen (the fault path of the waiter), while the future's cell may be reached at the same
/// time. The future resolves exactly once, to the value or to the fault; its waker is woken exactly
/// once; the thread hears of a reached condition (the predicted spin's history) only when the
/// check reached it; nothing is left registered.
#[test]
fn loom_a_fault_racing_the_condition_resolves_the_future_once() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let shared = loom::sync::Arc::new(Shared::<Cell>::new());
        let faulted: Cell = loom::sync::Arc::new(AtomicBool::new(false));
        let finished = loom::sync::Arc::new(AtomicUsize::new(0));
        let future = {
            let (s, finished) = (shared.clone(), finished.clone());
            thread::spawn(move || {
                let cell: Cell = loom::sync::Arc::new(AtomicBool::new(false));
                let task = Task::new(Some(thread::current()));
                let id = s.register(cell.clone(), Waker::from(task.clone()));
                cell.store(true, SeqCst);
                let r = loop {
                    match s.poll(id, &Waker::from(task.clone())) {
                        Poll::Ready(r) => break r,
                        Poll::Pending => thread::park(),
                    }
                };
                finished.fetch_add(1, SeqCst);
                (r, task)
            })
        };
        let fault = {
            let faulted = faulted.clone();
            thread::spawn(move || faulted.store(true, SeqCst))
        };

        let reached = AtomicUsize::new(0);
        let check_or_fault = |c: &Cell| {
            check(c).or_else(|| {
                faulted
                    .load(SeqCst)
                    .then(|| Err(crate::error::Error::Aborted))
            })
        };
        let mut watch = Watch::new();
        while finished.load(SeqCst) < 1 {
            shared.sweep(&mut watch, check_or_fault, |_, _| {
                reached.fetch_add(1, SeqCst);
            });
            assert_counts_agree(&shared);
            thread::yield_now();
        }
        fault.join().expect("fault");
        let (r, task) = future.join().expect("future");
        assert_eq!(task.wakes(), 1, "the future was not woken exactly once");
        match r {
            Ok(v) => {
                assert_eq!(v, VALUE);
                assert_eq!(
                    reached.load(SeqCst),
                    1,
                    "a reached condition was not reported"
                );
            }
            Err(crate::error::Error::Aborted) => {
                assert_eq!(
                    reached.load(SeqCst),
                    0,
                    "a failed wait was reported as reached"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        assert_counts_agree(&shared);
        let reg = shared.lock();
        assert_eq!(reg.len(), 0, "an entry was left registered");
        drop(reg);
        assert_eq!(
            std::sync::Arc::strong_count(&task),
            1,
            "the registry kept a waker"
        );
    });
}
