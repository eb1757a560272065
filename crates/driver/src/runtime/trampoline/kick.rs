//! The GPU-write kickoff of graph nodes: a kernel node publishes a new count to a mapped slot on
//! each run; the notifier dispatches one job per new count, and the job signals the node's flag.
//!
//! The api side's `GpuKickoff` owns the kernel and its device counter; the runtime side keeps
//! what the notifier needs ([`GraphKick`]): the slot and the flag, as [`HostWord`]s.

use super::dispatch;
use super::job::{Body, Job, PanicSink, SmallFn, call};
use crate::runtime::gates::HostWord;
use crate::runtime::park::{Rank, Ranked};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

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
    /// Runs dispatched.
    seen: AtomicU64,
    body: Arc<Body>,
    panics: Arc<PanicSink>,
    flag: Arc<dyn HostWord>,
    signal: KickSignal,
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
            seen: AtomicU64::new(0),
            body: Arc::new(Mutex::new(body)),
            panics: Arc::default(),
            flag,
            signal,
        });
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
        super::wake_notifier();
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
            KickSignal::Value(_) => self.seen.load(Ordering::Acquire) < expected,
            KickSignal::Count { ended } => ended.load() < expected,
        }
    }

    /// Whether the GPU published a count not dispatched yet.
    pub(super) fn ready(&self) -> bool {
        self.slot.load() > self.seen.load(Ordering::Acquire)
    }

    /// Dispatches one job per new count; returns whether any was dispatched.
    pub(super) fn poll(&self) -> bool {
        let v = self.slot.load();
        let mut any = false;
        while self.seen.load(Ordering::Acquire) < v {
            let count = self.seen.fetch_add(1, Ordering::AcqRel) + 1;
            let (body, panics) = (self.body.clone(), self.panics.clone());
            let value = match self.signal {
                KickSignal::Value(value) => value,
                KickSignal::Count { .. } => {
                    super::step_enqueued();
                    count
                }
            };
            let job = Job::new(
                SmallFn::new(move || call(&body, &panics, count)),
                // The closure reports its own panics (`call`); the job's sink is never used, so
                // one shared sink spares an allocation per run.
                self.panics.clone(),
                Some(self.flag.clone()),
                value,
            );
            // Always to a worker: the notifier never runs user code (see the module docs).
            dispatch(job);
            any = true;
        }
        any
    }
}
