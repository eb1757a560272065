//! The GPU-write kickoff of graph nodes: a kernel node publishes a new count to a mapped slot on
//! each run; each new count is claimed once ([`GraphKick::claim`]), by the spinning worker, which
//! runs the job itself, or by the notifier, which dispatches it; the job signals the node's flag.
//!
//! The api side's `GpuKickoff` owns the kernel and its device counter; the runtime side keeps
//! what the notifier needs ([`GraphKick`]): the slot and the flag, as [`HostWord`]s.
//!
//! A gated device loop's kick ([`KickSignal::Count`]) is answered by a thread of its own instead
//! (`ferrocuda-loop`): it watches the loop's slot while a launch runs and runs the step's closure
//! itself, then signals, as the raw loop's spinning thread does: handing each step from the
//! notifier to a worker put cache-line transfers between threads on every step's path
//! (`docs/benchmarks.md` has the measurement). The thread serves that one loop, whose progress
//! waits for its closure anyway, so a closure that blocks holds back no other stream; it spins
//! while a launch of the loop runs (and [`GRACE`](super::GRACE) after), parks otherwise, and ends
//! once the loop's handles are gone and its last launch ended. It claims runs as the others do,
//! and runs the closure in place of building a job.

use super::dispatch;
use super::job::{Body, Job, PanicSink, SmallFn, call};
use super::pool::Claims;
use crate::runtime::gates::HostWord;
use crate::runtime::guard::Contained;
use crate::runtime::park::{self, Rank, Ranked, spin_while};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// What a kick's job stores in its flag after the closure ran.
pub(crate) enum KickSignal {
    /// The same value after every run (a graph node that runs once per launch: reset scheme or a
    /// per-launch value).
    Value(u64),
    /// The run's count (the gated device loop: its gate waits for the flag to reach the step's
    /// kick count). The node runs any number of times per launch, so the notifier watches it
    /// until `ended`, which the loop's last node bumps once per launch, catches up with the
    /// launches.
    Count {
        /// Launches of the loop that ended (mapped memory the GPU writes).
        ended: Arc<dyn HostWord>,
    },
}

/// One graph async node kicked off by GPU write: a kernel node bumps a device counter and writes
/// it to `slot`; the notifier runs the body once per new value, then signals the flag.
pub(crate) struct GraphKick {
    slot: Arc<dyn HostWord>,
    /// Launches of graphs containing the node (so the notifier knows to spin).
    expected: AtomicU64,
    /// Runs claimed (by the notifier, a spinning worker or the loop's own thread).
    claims: Claims,
    /// The user's closure: the kick's last handle may drop on a crate thread.
    body: Contained<Arc<Body>>,
    panics: Arc<PanicSink>,
    flag: Arc<dyn HostWord>,
    signal: KickSignal,
    /// A loop's own thread, when it answers the kick (see the module docs).
    answerer: OnceLock<std::thread::Thread>,
    /// No launch will be recorded any more (the loop's handles are gone): its thread ends once the
    /// last launch ended.
    closed: AtomicBool,
}

/// The live kicks, for the notifier: it re-reads the list when `version` changed.
pub(super) struct Kicks {
    pub(super) list: Mutex<Vec<Weak<GraphKick>>>,
    pub(super) version: AtomicUsize,
}

pub(super) static KICKS: Kicks = Kicks {
    list: Mutex::new(Vec::new()),
    version: AtomicUsize::new(0),
};

impl Kicks {
    /// The registered kicks now (weak: the list keeps none alive), read under the list's lock.
    pub(super) fn snapshot(&self) -> Vec<Weak<GraphKick>> {
        Ranked::lock(Rank::Leaf, || {
            self.list.lock().unwrap_or_else(|p| p.into_inner())
        })
        .clone()
    }
}

impl GraphKick {
    /// A kick whose GPU writes land in `slot`, running `body` once per new count and then
    /// signalling `value` on `flag`; registered with the notifier.
    pub(crate) fn register(
        slot: Arc<dyn HostWord>,
        flag: Arc<dyn HostWord>,
        signal: KickSignal,
        body: Box<dyn FnMut(u64) + Send>,
    ) -> Arc<GraphKick> {
        let kick = Arc::new(GraphKick {
            slot,
            expected: AtomicU64::new(0),
            claims: Claims::new(),
            body: Contained::new(Arc::new(Mutex::new(body))),
            panics: Arc::default(),
            flag,
            signal,
            answerer: OnceLock::new(),
            closed: AtomicBool::new(false),
        });
        if let KickSignal::Count { .. } = kick.signal {
            let k = kick.clone();
            match std::thread::Builder::new()
                .name("ferrocuda-loop".into())
                .spawn(move || {
                    crate::runtime::guard::mark_crate_thread();
                    k.answer()
                }) {
                Ok(t) => {
                    let _ = kick.answerer.set(t.thread().clone());
                    return kick;
                }
                // No thread of its own: the notifier and the workers answer it.
                Err(e) => tracing::warn!(%e, "could not start a ferrocuda-loop thread"),
            }
        }
        let mut l = Ranked::lock(Rank::Leaf, || {
            KICKS.list.lock().unwrap_or_else(|p| p.into_inner())
        });
        l.retain(|w| w.strong_count() > 0);
        l.push(Arc::downgrade(&kick));
        KICKS.version.fetch_add(1, Ordering::AcqRel);
        kick
    }

    /// Records one more launch of a graph containing the node: the notifier spins until its run
    /// is seen.
    pub(crate) fn launched(&self) {
        self.expected.fetch_add(1, Ordering::AcqRel);
        // A loop's runs are counted as steps when they are dispatched (`poll`): how many a launch
        // makes is decided on the GPU.
        if let KickSignal::Value(_) = self.signal {
            super::step_enqueued();
        }
        match self.answerer.get() {
            // A token if it spins, a futex call if it parked: once per launch.
            Some(t) => t.unpark(),
            None => super::wake_notifier(),
        }
    }

    /// No more launches will be recorded: the loop's own thread ends once the last one ended.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(t) = self.answerer.get() {
            t.unpark();
        }
    }

    /// The loop's own thread (see the module docs): runs the closure of every new count, then
    /// signals it; spins while a launch runs, parks otherwise; ends once closed and idle.
    fn answer(self: Arc<Self>) {
        loop {
            let mut any = false;
            while let Some(count) = self.claims.claim(self.slot.load()) {
                call(&self.body, &self.panics, count);
                // Never over an abort, as a worker's signal.
                self.flag.signal_unless_aborted(count);
                any = true;
            }
            if any {
                continue;
            }
            let done = || self.closed.load(Ordering::Acquire) && !self.pending();
            if done() && !self.ready() {
                return;
            }
            // Spin while a launch runs, and for the grace window after it.
            if spin_while(
                park::TRAMPOLINE,
                || self.pending(),
                || self.ready() || done(),
            ) {
                continue;
            }
            // `launched` and `close` unpark after their store: a token set since the checks
            // above makes this return at once.
            std::thread::park();
        }
    }

    /// Undoes [`launched`](Self::launched) after a failed launch.
    pub(crate) fn cancel_launch(&self) {
        self.expected.fetch_sub(1, Ordering::AcqRel);
        if let KickSignal::Value(_) = self.signal {
            super::step_done();
        }
    }

    /// Panics of the body since the last call: (count, first message).
    pub(crate) fn take_panics(&self) -> Option<(usize, String)> {
        self.panics.take()
    }

    /// Whether a launch is recorded whose run was not dispatched yet (for a loop: a launch that
    /// has not ended).
    pub(super) fn pending(&self) -> bool {
        let expected = self.expected.load(Ordering::Acquire);
        match &self.signal {
            KickSignal::Value(_) => self.claims.seen() < expected,
            KickSignal::Count { ended } => ended.load() < expected,
        }
    }

    /// Whether the GPU published a count not claimed yet.
    pub(super) fn ready(&self) -> bool {
        self.slot.load() > self.claims.seen()
    }

    /// Claims the next count the GPU published, if any, as the job that runs the closure and
    /// then signals (the notifier dispatches it; a spinning worker runs it itself).
    pub(super) fn claim(&self) -> Option<Box<Job>> {
        let count = self.claims.claim(self.slot.load())?;
        let (body, panics) = (Arc::clone(&self.body), self.panics.clone());
        let value = match self.signal {
            KickSignal::Value(value) => value,
            KickSignal::Count { .. } => {
                super::step_enqueued();
                count
            }
        };
        Some(Job::new(
            SmallFn::new(move || call(&body, &panics, count)),
            // The closure reports its own panics (`call`); the job's sink is never used, so
            // one shared sink spares an allocation per run.
            self.panics.clone(),
            Some(self.flag.clone()),
            value,
        ))
    }

    /// Dispatches one job per new count; returns whether any was dispatched.
    pub(super) fn poll(&self) -> bool {
        let mut any = false;
        while let Some(job) = self.claim() {
            // Always to a worker: the notifier never runs user code (see the module docs).
            dispatch(job);
            any = true;
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{serial_pool, wait_for};
    use super::*;
    use crate::runtime::waiter::WaitHistory;
    use std::time::{Duration, Instant};

    /// A word in ordinary memory standing in for a flag's mapped slot.
    #[derive(Default)]
    struct Word(AtomicU64, WaitHistory);

    impl HostWord for Word {
        fn load(&self) -> u64 {
            self.0.load(Ordering::Acquire)
        }
        fn signal_unless_aborted(&self, value: u64) {
            self.0.store(value, Ordering::Release);
        }
        fn devices(&self) -> u64 {
            0
        }
        fn history(&self) -> &WaitHistory {
            &self.1
        }
    }

    /// A graph kick's run is claimed by the worker that spins while steps are in flight, the
    /// moment it sees the GPU's write, and run there: no hand-off from the notifier to a worker
    /// on the step's path. (Unit tests run no notifier: a run nobody else claims would never be
    /// signalled.)
    #[test]
    fn a_spinning_worker_runs_a_kicked_graph_run_itself() {
        let _serial = serial_pool();
        let (slot, flag) = (Arc::new(Word::default()), Arc::new(Word::default()));
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        let kick = {
            let ran_on = ran_on.clone();
            GraphKick::register(
                slot.clone(),
                flag.clone(),
                KickSignal::Value(7),
                Box::new(move |_| {
                    let name = std::thread::current().name().map(str::to_owned);
                    ran_on.lock().unwrap().push(name);
                }),
            )
        };
        let in_flight = super::super::in_flight();
        let deadline = Instant::now() + Duration::from_secs(20);
        for run in 1..=200 {
            kick.launched();
            // The GPU's kick.
            slot.0.store(run, Ordering::Release);
            wait_for("the run's signal", deadline, || flag.load() == 7);
            flag.0.store(0, Ordering::Release);
        }
        let ran_on = ran_on.lock().unwrap();
        assert_eq!(ran_on.len(), 200);
        for name in ran_on.iter() {
            assert!(
                name.as_deref()
                    .is_some_and(|n| n.starts_with("ferrocuda-worker")),
                "a run ran on {name:?}"
            );
        }
        wait_for("the steps to be done", deadline, || {
            super::super::in_flight() == in_flight
        });
    }

    /// A spinning worker holds the kicks it watches only for a while: a kick whose last handle
    /// the user dropped releases its closure while steps of others keep the worker spinning.
    #[test]
    fn a_dropped_kick_is_released_while_the_worker_keeps_spinning() {
        let _serial = serial_pool();
        let token = Arc::new(());
        let kick = {
            let token = token.clone();
            GraphKick::register(
                Arc::new(Word::default()),
                Arc::new(Word::default()),
                KickSignal::Value(1),
                Box::new(move |_| {
                    let _ = &token;
                }),
            )
        };
        // A step of another stream in flight: a worker spins (and watches the kick).
        super::super::step_enqueued();
        let deadline = Instant::now() + Duration::from_secs(20);
        wait_for("a spinner", deadline, || {
            super::super::POOL
                .get()
                .is_some_and(|p| p.spinner.load(Ordering::SeqCst))
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(kick);
        wait_for("the closure to be released", deadline, || {
            Arc::strong_count(&token) == 1
        });
        super::super::step_done();
    }

    /// Panics when dropped (a closure capture with a hostile `Drop`).
    struct PanicOnDrop;

    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("a capture's Drop panicked");
        }
    }

    /// The last handle of a kick may drop on a crate thread (the notifier's list, a loop's own
    /// thread): the user's closure then drops there, and a panicking `Drop` among its captures
    /// must not unwind that thread.
    #[test]
    fn a_kick_whose_closure_panics_on_drop_drops_without_unwinding() {
        let (slot, flag) = (Arc::new(Word::default()), Arc::new(Word::default()));
        let capture = PanicOnDrop;
        let kick = GraphKick::register(
            slot,
            flag,
            KickSignal::Value(1),
            Box::new(move |_| {
                let _ = &capture;
            }),
        );
        let dropped = std::thread::spawn(move || drop(kick)).join();
        assert!(dropped.is_ok(), "dropping the kick unwound its thread");
    }

    /// A device loop's kick is answered by a thread of its own that runs each step's closure
    /// itself, in order, and signals the step's count (no hand-off to a worker on the step's
    /// path); once the loop's handles are gone and its launch ended, the thread ends and drops
    /// the closure.
    #[test]
    fn a_loop_kick_runs_its_steps_on_its_own_thread_and_ends_with_the_loop() {
        let (slot, flag, ended) = (
            Arc::new(Word::default()),
            Arc::new(Word::default()),
            Arc::new(Word::default()),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let body = {
            let seen = seen.clone();
            move |step: u64| {
                let name = std::thread::current().name().map(str::to_owned);
                seen.lock().unwrap().push((step, name));
            }
        };
        let kick = GraphKick::register(
            slot.clone(),
            flag.clone(),
            KickSignal::Count {
                ended: ended.clone(),
            },
            Box::new(body),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        // Two launches of 300 steps, as the GPU runs them: kick, wait for the flag, next kick.
        let mut step = 0;
        for launch in 1..=2 {
            kick.launched();
            for _ in 0..300 {
                step += 1;
                slot.0.store(step, Ordering::Release);
                wait_for("the step's signal", deadline, || flag.load() == step);
            }
            ended.0.store(launch, Ordering::Release);
        }
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 600);
            for (i, (s, name)) in seen.iter().enumerate() {
                assert_eq!(*s, i as u64 + 1, "steps out of order");
                assert_eq!(
                    name.as_deref(),
                    Some("ferrocuda-loop"),
                    "step {s} ran elsewhere"
                );
            }
        }
        // The loop's handles go: the thread finishes and releases the kick and its closure.
        kick.close();
        drop(kick);
        wait_for("the loop thread to end", deadline, || {
            Arc::strong_count(&seen) == 1 && Arc::strong_count(&flag) == 1
        });
    }
}
