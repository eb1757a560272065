//! The one mechanism behind the crate's futures: the *waiter* thread, which polls what pending
//! futures wait for and wakes their wakers.
//!
//! Why a polling thread (`docs/async.md` and `docs/hardware-facts.md` have the numbers): the GPU
//! tells the host it got somewhere through a mapped-memory write (`cuStreamWriteValue64`, seen by
//! a spinning host within microseconds) or an event (`cuEventQuery`, a fraction of a microsecond a
//! call, never blocks, even behind a stream that waits on a host value). A host function per
//! wake-up (`cuLaunchHostFunc`) would cost several times more, with long tails, and it slows every
//! event call of the process for the rest of its life.
//! So the crate watches: a flag check is one load from pinned memory, an event check one
//! `cuEventQuery` on this thread.
//!
//! Back-off: after anything happens (a future registered, a condition fired, a host-side kick) the
//! thread spins for [`waiter_spin`] (100 µs by default), then sleeps with a pause that grows from
//! 20 µs to 200 µs (500 µs after 5 ms with nothing happening), and parks (no CPU at all) once no
//! future has been pending for the spin window (at most 200 µs). Registering a future, or a
//! host-side signal of a flag, restarts the spin at once (an `unpark`, made only when the thread
//! is not already spinning). Past the spin window it also spins inside each pending wait's
//! predicted window ([`WaitHistory`]: around the end of the last wait of the same flag, event or
//! stream), and sleeps no longer than until the next such window opens.
//!
//! Faults: now and then (at most once a millisecond) the thread asks the devices that pending flag
//! waits depend on for a sticky error, and fails those waits with it (`docs/async.md`, "Faults").
//!
//! The bookkeeping ([`Registry`]) is separate from the thread and generic over the condition, so
//! that it is tested without a GPU: an entry is pending (holding the waker of its latest poll) or
//! done (holding the result for the future's next poll); the future removes it when it takes the
//! result or when it is dropped. Every waker is woken at most once; wakers are woken outside the
//! lock. [`Shared`] is the protocol around it, also generic: the registry behind its lock, the
//! counters mirrored from it for lock-free reads, the futures' side (`register`, `poll`,
//! `cancel`) and the thread's ([`Shared::sweep`]: copy what is pending, check it outside the lock,
//! fire what was reached, wake outside the lock). The loom model in `waiter/loom_model.rs` runs
//! those against each other.

use crate::error::{Error, Result};
use crate::runtime::gates::{HostWord, WaitCondition, flag_outcome};
use crate::runtime::handles::RawEvent;
use crate::runtime::park::{self, Backoff, Rank, Ranked};
use crate::runtime::raw;
use crate::runtime::sync;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The longest the thread spins with nothing pending before it parks (at most the spin window).
const IDLE_GRACE_MAX: Duration = Duration::from_micros(200);

/// What a registered future waits for.
#[derive(Clone)]
pub(crate) enum Cond {
    /// A flag reaching a value (the `Arc` keeps the slot allocated while the future lives).
    Flag {
        flag: Arc<dyn HostWord>,
        cond: WaitCondition,
        value: u64,
    },
    /// An event completing (the `Arc` keeps the handle alive while the waiter may query it); the
    /// history of the waits of its kind (the event's, or the stream's for a stream future).
    Event {
        event: Arc<RawEvent>,
        history: Arc<WaitHistory>,
    },
    /// A plain host cell, for the CPU tests of the thread.
    #[cfg(test)]
    Cell { cell: Arc<AtomicU64>, value: u64 },
}

impl Cond {
    /// `None` while the awaited point is not reached; the future's result once it is.
    pub(crate) fn check(&self) -> Option<Result<u64>> {
        match self {
            Cond::Flag { flag, cond, value } => flag_outcome(flag.load(), *cond, *value),
            // SAFETY: the event is live (the Arc owns it). cuEventQuery never blocks.
            Cond::Event { event, .. } => match unsafe { raw::event_query(event.0) } {
                Ok(true) => Some(Ok(0)),
                Ok(false) => None,
                Err(err) => Some(Err(err)),
            },
            #[cfg(test)]
            Cond::Cell { cell, value } => flag_outcome(
                cell.load(Ordering::Acquire),
                WaitCondition::GreaterOrEqual,
                *value,
            ),
        }
    }

    /// The history of waits like this one, if it has one.
    fn history(&self) -> Option<&WaitHistory> {
        match self {
            Cond::Flag { flag, .. } => Some(flag.history()),
            Cond::Event { history, .. } => Some(history),
            #[cfg(test)]
            Cond::Cell { .. } => None,
        }
    }

    /// The devices whose fault fails this wait (bit `d`: ordinal `d`). An event's own query
    /// reports a fault of its context, so only flags name devices here.
    fn devices(&self) -> u64 {
        match self {
            Cond::Flag { flag, .. } => flag.devices(),
            _ => 0,
        }
    }

    /// The check, or the error of a faulted device this wait depends on (`faults`: device mask
    /// and the device's sticky error).
    fn check_or_fault(&self, faults: &[(u64, Error)]) -> Option<Result<u64>> {
        self.check().or_else(|| {
            let mine = self.devices();
            faults
                .iter()
                .find(|(mask, _)| mine & mask != 0)
                .map(|(_, e)| Err(e.clone()))
        })
    }
}

/// How long the last wait of one kind took (a flag's, an event's, a stream's): the waiter spins
/// around the time the next one is due, so that a service whose waits repeat (jobs of a few ms)
/// is woken at the spinning latency without a core spinning through the whole wait.
#[derive(Default)]
pub(crate) struct WaitHistory {
    /// Nanoseconds from registration to the condition being seen; 0: none yet.
    last_ns: AtomicU64,
}

impl WaitHistory {
    fn record(&self, took: Duration) {
        self.last_ns.store(
            took.as_nanos().clamp(1, u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// The window around the predicted end of a wait registered at `since` in which the thread
    /// spins: from a little before the last wait's length to a little after.
    fn window(&self, since: Instant) -> Option<(Instant, Instant)> {
        let last = Duration::from_nanos(self.last_ns.load(Ordering::Relaxed));
        if last.is_zero() {
            return None;
        }
        let lead = PREDICT_LEAD + last / 64;
        let tail = PREDICT_TAIL + last / 16;
        Some((since + last.saturating_sub(lead), since + last + tail))
    }
}

/// How early before a wait's predicted end the thread starts spinning (plus 1/64 of the wait).
const PREDICT_LEAD: Duration = Duration::from_micros(50);
/// How long after the predicted end it keeps spinning (plus 1/16 of the wait).
const PREDICT_TAIL: Duration = Duration::from_micros(100);

/// How often, at most, the thread asks the devices its pending flag waits depend on whether they
/// faulted (one `cuStreamQuery` per device).
const FAULT_CHECK_EVERY: Duration = Duration::from_millis(1);

/// The sticky errors of the devices in `mask` (each with its bit).
fn device_faults(mask: u64) -> Vec<(u64, Error)> {
    (0..64)
        .filter(|d| mask & (1 << d) != 0)
        .filter_map(|d| {
            let ctx = crate::runtime::context::Context::retained(d)?;
            ctx.sticky_error().map(|e| (1 << d, e))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping

enum State {
    /// Not reached yet; the waker of the future's latest poll.
    Pending(Waker),
    /// Reached (or failed): the result, until the future takes it or is dropped.
    Done(Result<u64>),
}

struct Entry<C> {
    cond: C,
    state: State,
    /// When it registered.
    since: Instant,
}

/// Registered futures by id.
pub(crate) struct Registry<C> {
    entries: sync::HashMap<u64, Entry<C>>,
    next: u64,
    /// Entries still pending (what the thread has to watch).
    pending: usize,
}

impl<C: Clone> Registry<C> {
    pub(crate) fn new() -> Self {
        Registry {
            entries: sync::HashMap::default(),
            next: 0,
            pending: 0,
        }
    }

    /// Registers a pending wait; returns its id.
    pub(crate) fn register(&mut self, cond: C, waker: Waker) -> u64 {
        let id = self.next;
        self.next += 1;
        self.pending += 1;
        self.entries.insert(
            id,
            Entry {
                cond,
                state: State::Pending(waker),
                since: Instant::now(),
            },
        );
        id
    }

    /// The future `id` polls: its result if done (the entry is removed), else `Pending` with the
    /// waker replaced by `waker` unless it would wake the same task. The replaced waker is
    /// returned so that the caller drops it outside the lock.
    pub(crate) fn poll(&mut self, id: u64, waker: &Waker) -> (Poll<Result<u64>>, Option<Waker>) {
        let Some(e) = self.entries.get_mut(&id) else {
            // Only the future removes its entry, so this is unreachable for a live future; answer
            // rather than panic.
            return (
                Poll::Ready(Err(Error::InvalidArgument(
                    "a future's waiter entry vanished (polled after completion?)".into(),
                ))),
                None,
            );
        };
        match &mut e.state {
            State::Pending(w) => {
                if w.will_wake(waker) {
                    (Poll::Pending, None)
                } else {
                    (Poll::Pending, Some(std::mem::replace(w, waker.clone())))
                }
            }
            State::Done(_) => match self.entries.remove(&id).map(|e| e.state) {
                Some(State::Done(r)) => (Poll::Ready(r), None),
                // Just matched as Done above, under the same `&mut self`.
                _ => unreachable!("entry changed under &mut"),
            },
        }
    }

    /// The future `id` was dropped: removes its entry (returned, to be dropped outside the lock).
    pub(crate) fn cancel(&mut self, id: u64) -> Option<(C, Option<Waker>)> {
        self.entries.remove(&id).map(|e| match e.state {
            State::Pending(w) => {
                self.pending -= 1;
                (e.cond, Some(w))
            }
            State::Done(_) => (e.cond, None),
        })
    }

    /// Copies the pending entries' ids, conditions and registration times into `out` (checked
    /// outside the lock).
    pub(crate) fn snapshot(&self, out: &mut Vec<(u64, C, Instant)>) {
        out.extend(
            self.entries
                .iter()
                .filter(|(_, e)| matches!(e.state, State::Pending(_)))
                .map(|(&id, e)| (id, e.cond.clone(), e.since)),
        );
    }

    /// `id`'s condition was reached with `result`: the entry becomes done and its waker is
    /// returned, to be woken outside the lock. `None` if the future is gone or already done.
    pub(crate) fn fire(&mut self, id: u64, result: Result<u64>) -> Option<Waker> {
        let e = self.entries.get_mut(&id)?;
        if !matches!(e.state, State::Pending(_)) {
            return None;
        }
        self.pending -= 1;
        match std::mem::replace(&mut e.state, State::Done(result)) {
            State::Pending(w) => Some(w),
            State::Done(_) => None,
        }
    }

    /// Entries (pending or done and not yet taken).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries still pending.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }
}

// ---------------------------------------------------------------------------------------------
// The protocol around it

/// The registry behind its lock, with the counters mirrored from it that the thread and
/// [`kick`] read without the lock. Every change of the registry is published (the mirrors
/// stored, the generation bumped) before the lock is released.
pub(crate) struct Shared<C> {
    registry: sync::Mutex<Registry<C>>,
    /// Registered entries (mirrors `Registry::len`).
    count: sync::atomic::AtomicUsize,
    /// Pending entries (mirrors `Registry::pending`): the thread parks when there are none, even
    /// if done entries wait for their futures' next poll.
    pending: sync::atomic::AtomicUsize,
    /// Bumped by every change of the registry (under its lock): the thread re-reads its snapshot
    /// of pending conditions only when this moved, so its checks take no lock while nothing
    /// changes.
    generation: sync::atomic::AtomicU64,
}

/// The thread's copy of the pending conditions, checked without the lock.
pub(crate) struct Watch<C> {
    /// Id, condition, registration time.
    conds: Vec<(u64, C, Instant)>,
    /// The registry generation `conds` was copied at (`u64::MAX`: not copied yet).
    generation: u64,
    fired: Vec<(u64, Result<u64>)>,
}

impl<C> Watch<C> {
    pub(crate) fn new() -> Self {
        Watch {
            conds: Vec::new(),
            generation: u64::MAX,
            fired: Vec::new(),
        }
    }

    /// Forgets the copy (no handle is held while the thread is parked).
    pub(crate) fn clear(&mut self) {
        self.conds.clear();
        self.generation = u64::MAX;
    }
}

impl Watch<Cond> {
    /// The devices the copied waits depend on.
    fn devices(&self) -> u64 {
        self.conds.iter().fold(0, |m, (_, c, _)| m | c.devices())
    }

    /// Whether `now` is inside the predicted window of a copied wait (spin), else the start of
    /// the next such window (sleep no longer than until then).
    fn predicted(&self, now: Instant) -> (bool, Option<Instant>) {
        let mut next: Option<Instant> = None;
        for (_, c, since) in &self.conds {
            if let Some((from, until)) = c.history().and_then(|h| h.window(*since)) {
                if from <= now && now < until {
                    return (true, None);
                }
                if from > now {
                    next = Some(next.map_or(from, |n| n.min(from)));
                }
            }
        }
        (false, next)
    }
}

impl<C: Clone> Shared<C> {
    pub(crate) fn new() -> Self {
        Shared {
            registry: sync::Mutex::new(Registry::new()),
            count: sync::atomic::AtomicUsize::new(0),
            pending: sync::atomic::AtomicUsize::new(0),
            generation: sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> Ranked<sync::MutexGuard<'_, Registry<C>>> {
        // A panic while holding the lock cannot leave the map inconsistent (each critical section
        // is one insert, remove or replace), so a poisoned lock is used as is.
        Ranked::lock(Rank::Leaf, || {
            self.registry.lock().unwrap_or_else(|p| p.into_inner())
        })
    }

    fn publish(&self, r: &Registry<C>) {
        self.count.store(r.len(), Ordering::SeqCst);
        self.pending.store(r.pending(), Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Registers a pending wait; returns its id.
    pub(crate) fn register(&self, cond: C, waker: Waker) -> u64 {
        let mut r = self.lock();
        let id = r.register(cond, waker);
        self.publish(&r);
        id
    }

    /// Polls the entry of a registered future (a replaced waker is dropped outside the lock).
    pub(crate) fn poll(&self, id: u64, waker: &Waker) -> Poll<Result<u64>> {
        let (p, old) = {
            let mut r = self.lock();
            let p = r.poll(id, waker);
            self.publish(&r);
            p
        };
        drop(old);
        p
    }

    /// Deregisters a dropped future.
    pub(crate) fn cancel(&self, id: u64) {
        let removed = {
            let mut r = self.lock();
            let e = r.cancel(id);
            self.publish(&r);
            e
        };
        // The condition (maybe the last handle of an event) and the waker drop outside the lock.
        drop(removed);
    }

    /// The thread's look at what is pending: copies the pending conditions into `w` if the
    /// registry changed since the last copy, checks each with `check` outside the lock, fires the
    /// reached ones and wakes their wakers outside the lock; `reached` hears of each condition
    /// reached (not failed) and how long after its registration. Returns whether any fired.
    pub(crate) fn sweep(
        &self,
        w: &mut Watch<C>,
        check: impl Fn(&C) -> Option<Result<u64>>,
        reached: impl Fn(&C, Duration),
    ) -> bool {
        if self.generation.load(Ordering::SeqCst) != w.generation {
            w.conds.clear();
            let r = self.lock();
            r.snapshot(&mut w.conds);
            // Read under the lock: the snapshot is of exactly this generation.
            w.generation = self.generation.load(Ordering::SeqCst);
        }
        for (id, cond, since) in &w.conds {
            if let Some(r) = check(cond) {
                if r.is_ok() {
                    reached(cond, since.elapsed());
                }
                w.fired.push((*id, r));
            }
        }
        if w.fired.is_empty() {
            return false;
        }
        let wakers: Vec<Waker> = {
            let mut r = self.lock();
            let wakers = w
                .fired
                .drain(..)
                .filter_map(|(id, res)| r.fire(id, res))
                .collect();
            self.publish(&r);
            wakers
        };
        // A waker is user code: one that panics (or whose panic payload panics when dropped)
        // must not take this thread, and every future of the process, with it.
        for w in wakers {
            if let Err(msg) = crate::runtime::guard::contain(|| w.wake()) {
                tracing::debug!(%msg, "a future's waker panicked");
            }
        }
        true
    }

    /// Entries registered (pending, or done and not yet taken), read without the lock.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Entries pending, read without the lock.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// The thread

const SPINNING: u8 = 0;
const SLEEPING: u8 = 1;
const PARKED: u8 = 2;

/// What the thread is doing.
static STATE: AtomicU8 = AtomicU8::new(PARKED);
/// Bumped by every registration and kick: the thread restarts its spin when it changes.
static ACTIVITY: AtomicU64 = AtomicU64::new(0);
/// The spin window in nanoseconds.
static SPIN_NS: AtomicU64 = AtomicU64::new(100_000);

/// The process's registry and its counters.
fn shared() -> &'static Shared<Cond> {
    static S: OnceLock<Shared<Cond>> = OnceLock::new();
    S.get_or_init(Shared::new)
}

/// The waiter thread, started on first use.
fn thread() -> Option<&'static Thread> {
    static T: OnceLock<Option<Thread>> = OnceLock::new();
    T.get_or_init(|| {
        match std::thread::Builder::new()
            .name("ferrocuda-waiter".into())
            .spawn(|| {
                crate::runtime::guard::mark_crate_thread();
                run()
            })
        {
            Ok(h) => Some(h.thread().clone()),
            Err(e) => {
                tracing::warn!(%e, "could not start the ferrocuda waiter thread; futures will not wake");
                None
            }
        }
    })
    .as_ref()
}

/// (pending entries, thread state) for tests.
#[cfg(test)]
pub(crate) fn debug_state() -> (usize, u8) {
    (shared().pending(), STATE.load(Ordering::SeqCst))
}

/// Registers a pending wait and makes sure the thread watches it.
pub(crate) fn register(cond: Cond, waker: Waker) -> u64 {
    let id = shared().register(cond, waker);
    wake_thread();
    id
}

/// Polls the entry of a registered future.
pub(crate) fn poll(id: u64, waker: &Waker) -> Poll<Result<u64>> {
    shared().poll(id, waker)
}

/// Deregisters a dropped future.
pub(crate) fn cancel(id: u64) {
    shared().cancel(id);
}

/// A host-side signal that a future may be waiting for (a flag stored by the host, an abort, a
/// trampoline step's signal): restart the thread's spin if it sleeps. One atomic load when no
/// future is registered.
#[inline]
pub(crate) fn kick() {
    if shared().pending() > 0 && STATE.load(Ordering::SeqCst) != SPINNING {
        wake_thread();
    }
}

fn wake_thread() {
    ACTIVITY.fetch_add(1, Ordering::SeqCst);
    if STATE.load(Ordering::SeqCst) != SPINNING
        && let Some(t) = thread()
    {
        t.unpark();
    }
}

/// The registry's memory for one registered future: the map's key, entry and control byte (its
/// table grows by doubling, so up to twice that per entry), and the thread's copy of it while it
/// is pending. The waker and what the condition holds (a flag's or event's `Arc`) are shared.
#[cfg(test)]
pub(crate) fn entry_bytes() -> usize {
    size_of::<u64>() + size_of::<Entry<Cond>>() + 1 + size_of::<(u64, Cond, Instant)>()
}

/// Futures of this crate that are registered with the waiter and not yet taken or dropped: pending
/// ones, and done ones whose result was not yet taken by a poll. 0 once every future was awaited or
/// dropped (a leak check for tests).
pub fn pending_futures() -> usize {
    shared().count()
}

/// How long the waiter thread keeps spinning after anything happened (a future registered or woken,
/// a host-side signal), before it sleeps between checks. The default is 100 µs.
pub fn waiter_spin() -> Duration {
    Duration::from_nanos(SPIN_NS.load(Ordering::Relaxed))
}

/// Sets [`waiter_spin`] for the process. A longer window keeps the wake-up latency of longer GPU
/// waits at the spinning level (one pass over the pending checks after the GPU's write) at the
/// price of one busy core while futures are pending; `Duration::ZERO` sleeps at once (wake-ups of
/// waits whose length does not repeat then take 20–500 µs more; the predicted spin around waits
/// whose length repeats stays). With no future pending the thread parks after at most 200 µs,
/// whatever this says.
pub fn set_waiter_spin(window: Duration) {
    SPIN_NS.store(
        window.as_nanos().min(u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
    kick();
}

fn run() {
    let shared = shared();
    let mut watch = Watch::new();
    let mut seen = ACTIVITY.load(Ordering::SeqCst);
    let mut backoff = Backoff::new(park::WAITER);
    let mut faults_checked = std::time::Instant::now();
    loop {
        if shared.pending() == 0 {
            // Linger a little first: a service that awaits back to back registers its next
            // future within microseconds, and a parked thread takes tens of µs to wake.
            backoff.set_spin(waiter_spin().min(IDLE_GRACE_MAX));
            if backoff.spinning() {
                std::hint::spin_loop();
                continue;
            }
            // Hold no handle while parked.
            watch.clear();
            STATE.store(PARKED, Ordering::SeqCst);
            // A registration after this check unparks (its token survives until `park`).
            if shared.pending() == 0 {
                std::thread::park();
            }
            STATE.store(SPINNING, Ordering::SeqCst);
            seen = ACTIVITY.load(Ordering::SeqCst);
            backoff.progress();
            continue;
        }
        backoff.set_spin(waiter_spin());
        // A flag a faulted device was to write never changes: now and then, ask the devices the
        // pending flag waits depend on for a sticky error, and fail those waits with it.
        let faults = if faults_checked.elapsed() >= FAULT_CHECK_EVERY {
            faults_checked = std::time::Instant::now();
            device_faults(watch.devices())
        } else {
            Vec::new()
        };
        let reached = |c: &Cond, took: Duration| {
            if let Some(h) = c.history() {
                h.record(took);
            }
        };
        if shared.sweep(&mut watch, |c| c.check_or_fault(&faults), reached) {
            backoff.progress();
            continue;
        }
        let now = ACTIVITY.load(Ordering::SeqCst);
        if now != seen {
            seen = now;
            backoff.progress();
        }
        if backoff.spinning() {
            std::hint::spin_loop();
            continue;
        }
        // Past the spin window: spin anyway inside a wait's predicted window, and sleep no
        // longer than until the next one opens.
        let (inside, next) = watch.predicted(std::time::Instant::now());
        if inside {
            std::hint::spin_loop();
            continue;
        }
        STATE.store(SLEEPING, Ordering::SeqCst);
        let mut pause = backoff.next_pause();
        if backoff.idle_for() >= park::WAITER_LONG_IDLE {
            pause = pause.max(park::WAITER_LONG_PAUSE);
        }
        if let Some(next) = next {
            pause = pause.min(next.saturating_duration_since(std::time::Instant::now()));
        }
        if ACTIVITY.load(Ordering::SeqCst) == seen {
            std::thread::park_timeout(pause);
        }
        STATE.store(SPINNING, Ordering::SeqCst);
    }
}

#[cfg(all(test, loom))]
mod loom_model;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// A waker that counts its wakes; its `Arc` count tells whether it was dropped.
    #[derive(Default)]
    struct Counting {
        wakes: AtomicUsize,
    }

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A new future registers (its first poll found the condition unmet).
        Register,
        /// The condition of the k-th future (mod count) is reached (maybe twice, maybe after done).
        Fire(usize),
        /// The k-th future is polled again, with its own waker or with a fresh one.
        Poll(usize, bool),
        /// The k-th future is dropped.
        Cancel(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Register),
            any::<usize>().prop_map(Op::Fire),
            (any::<usize>(), any::<bool>()).prop_map(|(k, b)| Op::Poll(k, b)),
            any::<usize>().prop_map(Op::Cancel),
        ]
    }

    struct Fut {
        id: u64,
        /// Every waker this future handed to the registry.
        wakers: Vec<Arc<Counting>>,
        live: bool,
        fired: bool,
        /// Index of the latest waker when the condition fired.
        woken: usize,
        result: Option<u64>,
    }

    proptest! {
        /// Register, fire, poll and cancel in any order: every waker is woken at most once, only
        /// the latest waker of a future is ever woken, a fired future's next poll yields its
        /// result exactly once, and once every future is taken or dropped no entry is left and
        /// every waker has been dropped by the registry.
        #[test]
        fn waker_bookkeeping_wakes_once_or_drops(ops in proptest::collection::vec(op(), 1..120)) {
            let mut reg: Registry<()> = Registry::new();
            let mut futs: Vec<Fut> = Vec::new();
            for o in ops {
                match o {
                    Op::Register => {
                        let w = Arc::new(Counting::default());
                        let id = reg.register((), Waker::from(w.clone()));
                        futs.push(Fut { id, wakers: vec![w], live: true, fired: false, woken: 0, result: None });
                    }
                    Op::Fire(k) if !futs.is_empty() => {
                        let k = k % futs.len();
                        let f = &mut futs[k];
                        let value = k as u64 + 1;
                        let w = reg.fire(f.id, Ok(value));
                        if f.live && !f.fired && f.result.is_none() {
                            let w = w.expect("a pending entry hands out its waker");
                            prop_assert!(w.will_wake(&Waker::from(f.wakers.last().unwrap().clone())));
                            w.wake();
                            f.fired = true;
                            f.woken = f.wakers.len() - 1;
                        } else {
                            prop_assert!(w.is_none(), "fired twice or after cancel");
                        }
                    }
                    Op::Poll(k, fresh) if !futs.is_empty() => {
                        let k = k % futs.len();
                        let f = &mut futs[k];
                        if !f.live || f.result.is_some() {
                            continue; // a finished or dropped future is never polled again
                        }
                        let w = if fresh {
                            f.wakers.push(Arc::new(Counting::default()));
                            Waker::from(f.wakers.last().unwrap().clone())
                        } else {
                            Waker::from(f.wakers.last().unwrap().clone())
                        };
                        let (p, old) = reg.poll(f.id, &w);
                        drop(old);
                        match p {
                            Poll::Ready(r) => {
                                prop_assert!(f.fired);
                                f.result = Some(r.unwrap());
                                prop_assert_eq!(f.result, Some(k as u64 + 1));
                            }
                            Poll::Pending => prop_assert!(!f.fired),
                        }
                    }
                    Op::Cancel(k) if !futs.is_empty() => {
                        let k = k % futs.len();
                        let f = &mut futs[k];
                        if f.live && f.result.is_none() {
                            prop_assert!(reg.cancel(f.id).is_some());
                        } else {
                            prop_assert!(reg.cancel(f.id).is_none());
                        }
                        f.live = false;
                    }
                    _ => {}
                }
                let waiting = futs.iter().filter(|f| f.live && !f.fired).count();
                prop_assert_eq!(reg.pending(), waiting, "pending count drifted");
            }
            // Drop every future still holding an entry.
            for f in &mut futs {
                if f.live && f.result.is_none() {
                    prop_assert!(reg.cancel(f.id).is_some());
                }
            }
            prop_assert_eq!(reg.len(), 0);
            prop_assert_eq!(reg.pending(), 0);
            for f in &futs {
                let total: usize = f.wakers.iter().map(|w| w.wakes.load(Ordering::SeqCst)).sum();
                prop_assert!(total <= 1, "a future was woken {} times", total);
                prop_assert_eq!(total == 1, f.fired);
                if f.fired {
                    // Only the waker of the latest poll before the fire is woken.
                    prop_assert_eq!(f.wakers[f.woken].wakes.load(Ordering::SeqCst), 1);
                }
                for w in &f.wakers {
                    prop_assert_eq!(Arc::strong_count(w), 1, "the registry kept a waker");
                }
            }
        }
    }
}

#[cfg(test)]
mod predict_tests {
    use super::*;

    #[test]
    fn no_history_no_window_then_a_window_around_the_last_wait() {
        let h = WaitHistory::default();
        let t0 = Instant::now();
        assert_eq!(h.window(t0), None);
        h.record(Duration::from_millis(2));
        let (from, until) = h.window(t0).unwrap();
        // 2 ms - (50 µs + 2 ms / 64) and 2 ms + (100 µs + 2 ms / 16).
        assert_eq!(from - t0, Duration::from_nanos(2_000_000 - 81_250));
        assert_eq!(until - t0, Duration::from_nanos(2_000_000 + 225_000));
        h.record(Duration::from_micros(10));
        let (from, until) = h.window(t0).unwrap();
        assert_eq!(from, t0, "a short wait spins from its registration");
        assert_eq!(until - t0, Duration::from_nanos(10_000 + 100_000 + 625));
    }

    #[test]
    fn the_thread_spins_inside_a_predicted_window_and_sleeps_until_the_next() {
        let (a, b) = (
            Arc::new(WaitHistory::default()),
            Arc::new(WaitHistory::default()),
        );
        a.record(Duration::from_millis(10));
        b.record(Duration::from_millis(4));
        let t0 = Instant::now();
        let event_wait = |h: &Arc<WaitHistory>| Cond::Event {
            event: Arc::new(RawEvent(std::ptr::null_mut())),
            history: h.clone(),
        };
        let mut w: Watch<Cond> = Watch::new();
        w.conds.push((1, event_wait(&a), t0));
        w.conds.push((2, event_wait(&b), t0));
        // Before both windows: sleep until b's opens.
        let (inside, next) = w.predicted(t0 + Duration::from_millis(1));
        assert!(!inside);
        assert_eq!(next, b.window(t0).map(|(f, _)| f));
        // Inside b's.
        assert!(w.predicted(t0 + Duration::from_millis(4)).0);
        // Between b's end and a's start: sleep until a's.
        let (inside, next) = w.predicted(t0 + Duration::from_millis(6));
        assert!(!inside);
        assert_eq!(next, a.window(t0).map(|(f, _)| f));
        // After both: no spinning, no wake-up planned.
        assert_eq!(w.predicted(t0 + Duration::from_millis(20)), (false, None));
        // The null events must not be destroyed by the driver (there is none here).
        for (_, c, _) in w.conds.drain(..) {
            if let Cond::Event { event, .. } = c {
                std::mem::forget(Arc::try_unwrap(event).ok());
            }
        }
    }
}
