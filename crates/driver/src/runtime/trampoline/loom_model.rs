//! Loom model of the GPU-write kickoff ring ([`Ring`]): two enqueuing threads against the
//! notifier's scan, on a ring of two slots so that slots are reused within the model.
//!
//! Covered: the real [`reserve`], [`Ticket::cancel`] and [`Ring::scan`] (the ticket counter, the
//! full check against `low`, publishing a job with its lane, the notifier taking tickets into
//! lanes, the swap that makes its taker the only owner, the done marks and the advance of `low`).
//! The two threads enqueue on two lanes (streams). The GPU's write of a ticket into its slot is a release
//! store by the enqueuing thread after its enqueue (the real write has a system-wide fence before
//! it). Not covered: the notifier's and the workers' spinning and parking (`awake`, `Sleepers`:
//! the notifier here is awake throughout), the graph kickoffs polled in the same loop, and the
//! ring's allocation.

use super::{Ring, Slot, Ticket, Watch, reserve};
use loom::sync::atomic::{AtomicU64, Ordering::SeqCst};
use loom::thread;

/// Slots of the model's ring: three tickets reuse one.
const SLOTS: usize = 2;

/// A job, by its number.
struct Job(usize);

type TestRing = Ring<Job, SLOTS>;

/// What became of a job on the enqueuing side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Its ticket's write was enqueued: the notifier owes it a dispatch.
    Enqueued,
    /// The ring was full: handed back at once (the step falls back to a host function).
    Full,
    /// The enqueue of its write failed: `cancel` handed it back.
    Cancelled,
}

/// A ring of its own for one execution (leaked: tickets borrow it for `'static`).
fn ring() -> &'static TestRing {
    let slots: &'static [Slot] = Box::leak((0..SLOTS).map(|_| Slot::new()).collect::<Box<[_]>>());
    Box::leak(Box::new(Ring::new(slots, 0)))
}

/// The GPU reaches the enqueued write of `t`.
fn gpu_writes(r: &TestRing, t: &Ticket<Job, SLOTS>) {
    r.slot(t.slot).store(t.ticket, SeqCst);
}

/// Checks after a scan: no ticket below `low` still has its job in the ring (`low` never passes a
/// ticket that is neither dispatched nor cancelled).
fn assert_low_passes_only_done_tickets(r: &TestRing) {
    let low = r.low.load(SeqCst);
    for t in low.saturating_sub(SLOTS as u64).max(1)..low {
        let i = TestRing::index(t);
        // The job first: a reserve that reused the slot stored its ticket before its job.
        let job = r.jobs[i].load(SeqCst);
        if !job.is_null() && r.tickets[i].load(SeqCst) == t {
            panic!("low passed ticket {t}, whose job is still in the ring");
        }
    }
}

/// Thread one enqueues two steps whose writes succeed (each written by the GPU after its enqueue);
/// thread two enqueues one step whose write fails to enqueue, and cancels its ticket; the
/// notifier (the model's main thread) scans until both are finished and nothing is pending.
///
/// Checked: every job is dispatched exactly once or handed back exactly once (by `reserve` when
/// the ring is full, or by `cancel`), never both and never lost; a cancelled or refused job is
/// never dispatched; `low` never passes a ticket whose job is still in the ring; a slot is never
/// reused while its ticket is pending (its job would be overwritten, and lost). The loom step of
/// `cargo xtask test` builds with overflow checks, so the ticket arithmetic is checked too.
#[test]
fn loom_ring_dispatches_each_job_once_or_hands_it_back() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let r = ring();
        let finished = loom::sync::Arc::new(AtomicU64::new(0));

        let one = {
            let finished = finished.clone();
            thread::spawn(move || {
                let mut fates = Vec::new();
                for n in 0..2 {
                    match reserve(r, 1, Box::new(Job(n))) {
                        Ok(t) => {
                            gpu_writes(r, &t);
                            fates.push((n, Fate::Enqueued));
                        }
                        Err(job) => fates.push((job.0, Fate::Full)),
                    }
                }
                finished.fetch_add(1, SeqCst);
                fates
            })
        };
        let two = {
            let finished = finished.clone();
            thread::spawn(move || {
                let fate = match reserve(r, 2, Box::new(Job(2))) {
                    Ok(t) => {
                        let job = t.cancel().expect("an unwritten ticket's job comes back");
                        (job.0, Fate::Cancelled)
                    }
                    Err(job) => (job.0, Fate::Full),
                };
                finished.fetch_add(1, SeqCst);
                fate
            })
        };

        let mut dispatched = Vec::new();
        let mut watch = Watch::new();
        loop {
            let done = finished.load(SeqCst) == 2;
            r.scan(&mut watch, |job| dispatched.push(job.0));
            assert_low_passes_only_done_tickets(r);
            if done && !r.pending() {
                break;
            }
            thread::yield_now();
        }

        let mut fates = one.join().expect("thread one");
        fates.push(two.join().expect("thread two"));
        for n in 0..3 {
            let sent = dispatched.iter().filter(|&&d| d == n).count();
            let fate = fates.iter().find(|f| f.0 == n).map(|f| f.1);
            match fate {
                Some(Fate::Enqueued) => assert_eq!(sent, 1, "job {n} dispatched {sent} times"),
                Some(Fate::Full | Fate::Cancelled) => {
                    assert_eq!(sent, 0, "job {n} was handed back and dispatched")
                }
                None => panic!("job {n} has no fate"),
            }
        }
        assert_eq!(r.low.load(SeqCst), r.next.load(SeqCst));
        for i in 0..SLOTS {
            assert!(
                r.jobs[i].load(SeqCst).is_null(),
                "a job was left in slot {i}"
            );
        }
    });
}
