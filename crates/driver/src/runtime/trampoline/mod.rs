//! The async trampoline, in one place: how a step is kicked off, and the threads that run it.
//!
//! | file | what |
//! | --- | --- |
//! | `job.rs` | [`Job`] (a closure stored inline, its panic sink, the flag it signals), the host-function entry points, a graph host node's [`Body`] |
//! | `mod.rs` | [`KickoffMode`], the process's worker pool ([`dispatch`]), the notifier thread |
//! | `pool.rs` | the worker pool's protocol ([`Pool`]: one spinning worker, the others parked) |
//! | `ring.rs` | the GPU-write kickoff's ring of mapped slots ([`reserve`], [`Ticket`]) |
//! | `kick.rs` | graph kernel nodes that kick off by GPU write ([`GraphKick`]) |
//!
//! The api side enters through one door per user: [`enqueue`] for a stream step (`DeviceStream`
//! calls it with the kickoff the stream chose), [`GraphKick`] for a graph node kicked off by GPU
//! write, and [`Job`] through a host node's entry for one kicked off by a host function.
//!
//! A trampoline step ([`DeviceStream::enqueue_async_host_func`](crate::DeviceStream::enqueue_async_host_func))
//! is kicked off in one of two ways ([`KickoffMode`]):
//!
//! * **`GpuWrite`** (default): the stream writes the step's ticket into a slot of a ring in mapped
//!   pinned memory (`cuStreamWriteValue64`); the crate's *notifier* thread sees it and hands the
//!   job to a worker. (A graph node kicked off by GPU write is watched by the spinning worker too,
//!   which runs a run it claims itself: [`GraphKick`], `pool.rs`.) The notifier never runs a
//!   user closure itself: a closure that blocks would stall every other stream's kickoff behind
//!   it. No host function is involved, so the process keeps its fast event calls (once a host
//!   function has run between kernels, every event record, synchronize and query costs more for
//!   the rest of the process: `docs/hardware-facts.md` in the repository, "Event calls").
//! * **`HostFunc`** (MAX's way): `cuLaunchHostFunc` of a tiny callback that hands the job to a worker.
//!
//! Both thread kinds spend CPU only while work is in flight: while a step is enqueued and not yet
//! done, the notifier spins on the ring (with `spin_loop` hints) and one worker spins on the job
//! queue; [`GRACE`] after the last step they park and use no CPU. The crate knows when work is in
//! flight because it enqueued it. Waking a parked thread is a futex call made on the enqueuing
//! thread only when the thread is parked (the first step after an idle period).
//!
//! The ring's protocol ([`Ring`]: [`reserve`], [`Ticket::cancel`] and the notifier's
//! [`Ring::scan`]) is generic over the job and the slot count, so that the loom model in
//! `trampoline/loom_model.rs` runs it on a ring of two slots: every job is dispatched exactly once
//! or handed back, and a slot is reused only once its last ticket is done.

use super::context::Context;
use super::park::{self, spin_while};
use super::raw::CUdeviceptr;
use crate::error::Result;
use kick::KICKS;
use std::ffi::c_void;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub(crate) mod job;
mod kick;
mod pool;
mod ring;

pub(crate) use job::Job;
pub(crate) use kick::{GraphKick, KickSignal};
use pool::{Pool, Source, Work};
pub use ring::RING_SLOTS;
use ring::{KickRing, Watch, reserve};
#[cfg(all(test, loom))]
use ring::{Ring, Slot, Ticket};

/// How an async host-function step is kicked off when its stream reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KickoffMode {
    /// The stream writes a ticket to mapped memory that a crate thread watches: several times
    /// faster than `HostFunc` (`docs/hardware-facts.md` in the repository, "Trampoline kickoffs"), keeps event calls fast, and costs one spinning core (the notifier)
    /// while steps are in flight.
    #[default]
    GpuWrite,
    /// `cuLaunchHostFunc` of a callback that hands the step to a worker (MAX's trampoline): no
    /// notifier thread, but the driver's host-function latency (tens of µs, long tails) and slower
    /// event calls for the rest of the process.
    HostFunc,
}

impl KickoffMode {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            KickoffMode::GpuWrite => 0,
            KickoffMode::HostFunc => 1,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        if v == 1 {
            KickoffMode::HostFunc
        } else {
            KickoffMode::GpuWrite
        }
    }

    /// The process default: `FERROCUDA_KICKOFF=hostfunc` selects `HostFunc`, anything else `GpuWrite`.
    pub fn process_default() -> KickoffMode {
        static D: OnceLock<KickoffMode> = OnceLock::new();
        *D.get_or_init(|| match std::env::var("FERROCUDA_KICKOFF").as_deref() {
            Ok("hostfunc" | "host_func" | "HostFunc") => KickoffMode::HostFunc,
            _ => KickoffMode::GpuWrite,
        })
    }
}

/// How long the notifier and a worker keep spinning after the last step before they park.
pub const GRACE: Duration = park::TRAMPOLINE.spin;

/// The async trampoline's counters since the process started, over every stream and graph: how
/// many steps went through the worker pool, and how often its threads had to be woken from park
/// (each wake-up is a futex call on the waking thread, and the woken thread runs only once the
/// operating system schedules it: tens of microseconds on some machines).
///
/// While steps run back to back, a worker spins and the notifier spins, so neither count grows
/// per step: read them before and after some work to see whether that work paid for wake-ups.
///
/// ```
/// let before = ferrocuda_driver::trampoline_stats();
/// // ... enqueue async host functions, launch graphs with GPU-write kickoffs ...
/// let after = ferrocuda_driver::trampoline_stats();
/// assert!(after.dispatched >= before.dispatched);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrampolineStats {
    /// Steps handed to the worker pool (by the notifier, or by a host-function kickoff).
    pub dispatched: u64,
    /// Runs of graph nodes kicked off by GPU write that the spinning worker saw and ran itself,
    /// with no hand-off from the notifier.
    pub claimed_by_spinner: u64,
    /// Parked workers woken so far.
    pub worker_wakeups: u64,
    /// Times the parked notifier was woken so far.
    pub notifier_wakeups: u64,
}

/// The trampoline's counters now (see [`TrampolineStats`]). Reads a few relaxed counters; starts
/// no thread.
pub fn trampoline_stats() -> TrampolineStats {
    let (dispatched, worker_wakeups) = POOL
        .get()
        .map_or((0, 0), |p| (p.dispatched(), p.sleepers.woken() as u64));
    let notifier_wakeups = match ring::RING.get() {
        Some(Ok(r)) => r.sleepers.woken() as u64,
        _ => 0,
    };
    TrampolineStats {
        dispatched,
        claimed_by_spinner: SPINNER_CLAIMS.load(Ordering::Relaxed),
        worker_wakeups,
        notifier_wakeups,
    }
}

/// Trampoline steps enqueued and not yet done (closure run, flag signalled).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A step was enqueued: the crate's threads should be awake.
pub(crate) fn step_enqueued() {
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    pool().wake_spinner();
}

/// A step finished (or its enqueue failed).
pub(crate) fn step_done() {
    IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
}

/// Steps in flight right now.
pub(crate) fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Acquire)
}

// ---------------------------------------------------------------------------------------------
// Workers

/// The process's worker pool (`pool.rs`), its threads started on first use.
static POOL: OnceLock<Pool<Job>> = OnceLock::new();

fn pool() -> &'static Pool<Job> {
    static STARTED: OnceLock<()> = OnceLock::new();
    let p = POOL.get_or_init(Pool::new);
    STARTED.get_or_init(|| {
        for i in 0..worker_count() {
            let spawned = std::thread::Builder::new()
                .name(format!("ferrocuda-worker-{i}"))
                .spawn(move || {
                    crate::runtime::guard::mark_crate_thread();
                    p.work(
                        park::TRAMPOLINE,
                        || in_flight() > 0,
                        || false,
                        &KickWatch::default(),
                    )
                });
            if let Err(e) = spawned {
                tracing::warn!(%e, "could not start a ferrocuda worker thread");
            }
        }
    });
    p
}

/// What a spinning worker watches besides the job queue: the registered graph kicks, whose runs
/// it claims and runs itself (`pool.rs`, "Source"). It holds the kicks only while it spins
/// (`release`), and lets them go every [`KickWatch::HOLD_LOOKS`] looks even while it spins, so
/// a kick whose handles the user dropped releases its closure soon; the list of them it
/// refreshes when a kick was registered.
#[derive(Default)]
struct KickWatch {
    /// Looks since the kicks were taken.
    looks: std::cell::Cell<u32>,
    /// The [`KICKS`] version `known` was read at (0: never read; a kick's registration makes it
    /// at least 1).
    version: std::cell::Cell<usize>,
    known: std::cell::RefCell<Vec<std::sync::Weak<GraphKick>>>,
    /// The live kicks of `known`, while the worker spins.
    held: std::cell::RefCell<Option<Vec<std::sync::Arc<GraphKick>>>>,
}

impl KickWatch {
    /// How many looks a spinning worker holds the kicks for before it takes them anew (a look
    /// takes up to a few hundred nanoseconds: the kicks are let go within milliseconds).
    const HOLD_LOOKS: u32 = 1 << 14;
}

impl Source<Job> for KickWatch {
    fn claim(&self) -> Option<Box<Job>> {
        let looks = self.looks.get() + 1;
        self.looks.set(looks);
        if looks >= Self::HOLD_LOOKS {
            self.release();
        }
        let v = KICKS.version.load(Ordering::Acquire);
        if v != self.version.get() {
            self.version.set(v);
            *self.known.borrow_mut() = KICKS.snapshot();
            // The kicks held from the old list drop here, after the lock is released.
            self.release();
        }
        let mut held = self.held.borrow_mut();
        let kicks = held.get_or_insert_with(|| {
            self.known
                .borrow()
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .collect()
        });
        let job = kicks.iter().find_map(|k| k.claim());
        if job.is_some() {
            SPINNER_CLAIMS.fetch_add(1, Ordering::Relaxed);
        }
        job
    }

    fn release(&self) {
        self.looks.set(0);
        // A kick's last handle may drop here: its closure drops under containment.
        let held = self.held.borrow_mut().take();
        drop(held);
    }
}

/// Graph-kick runs a spinning worker claimed and ran itself (a statistic).
static SPINNER_CLAIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Number of trampoline workers: closures run concurrently up to this many
/// (`FERROCUDA_WORKERS` overrides; default 2 to 4 by available cores).
fn worker_count() -> usize {
    std::env::var("FERROCUDA_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)))
}

impl Work for Job {
    fn run(self: Box<Self>) {
        self.run_and_recycle();
    }
}

/// Starts the worker pool now, so that the first kickoff does not pay for thread creation.
pub(crate) fn start_workers() {
    let _ = pool();
}

/// Gives `job` to a worker. Never blocks; makes no driver call.
pub(crate) fn dispatch(job: Box<Job>) {
    pool().dispatch(job);
}

// ---------------------------------------------------------------------------------------------
// The notifier

/// What the api side enqueues on the stream to kick a step off.
pub(crate) enum Enqueue {
    /// `cuLaunchHostFunc(entry, data)`; `entry` reclaims `data` when the driver runs it.
    HostFunc(unsafe extern "C" fn(*mut c_void), *mut c_void),
    /// `cuStreamWriteValue64(address, value)` with the default (fencing) flags: a ticket into
    /// the kickoff ring.
    WriteValue(CUdeviceptr, u64),
}

/// How a stream step runs.
pub(crate) enum Kickoff<'c> {
    /// On the driver's callback thread, holding the stream (`cuLaunchHostFunc`).
    Blocking,
    /// On a worker, the stream moving on at once, kicked off as `mode` says; `ctx` is the
    /// stream's (the ring is allocated under it on first use), `stream` its identity (the ring's
    /// lane: a stream's GPU writes land in the order it enqueued them).
    Async {
        mode: KickoffMode,
        ctx: &'c Context,
        stream: u64,
    },
}

/// The trampoline's one entry point for a stream step: `enqueue` puts `job`'s kickoff on the
/// stream (as part of the api side's stream operation); if it fails, the job is dropped unrun and
/// its flag is not signalled.
pub(crate) fn enqueue(
    job: Box<Job>,
    how: Kickoff<'_>,
    enqueue: impl FnOnce(Enqueue) -> Result<()>,
) -> Result<()> {
    let (mode, ctx, stream) = match how {
        Kickoff::Blocking => return host_func(job, job::host_func_entry, enqueue),
        Kickoff::Async { mode, ctx, stream } => (mode, ctx, stream),
    };
    start_workers();
    step_enqueued();
    if mode == KickoffMode::HostFunc {
        return host_func(job, job::kickoff_entry, enqueue);
    }
    let ring = match ring::ring(ctx) {
        Ok(r) => r,
        Err(e) => {
            job.disarm_and_recycle();
            return Err(e);
        }
    };
    let ticket = match reserve(ring, stream, job) {
        Ok(t) => t,
        // More than RING_SLOTS steps in flight: this one is kicked off by a host function.
        Err(job) => return host_func(job, job::kickoff_entry, enqueue),
    };
    if let Err(e) = enqueue(Enqueue::WriteValue(ticket.addr, ticket.ticket)) {
        if let Some(job) = ticket.cancel() {
            job.disarm_and_recycle();
        }
        return Err(e);
    }
    Ok(())
}

/// Enqueues `job` as a host function calling `entry`.
fn host_func(
    job: Box<Job>,
    entry: unsafe extern "C" fn(*mut c_void),
    enqueue: impl FnOnce(Enqueue) -> Result<()>,
) -> Result<()> {
    let data = Box::into_raw(job);
    match enqueue(Enqueue::HostFunc(entry, data.cast())) {
        Ok(()) => Ok(()),
        Err(e) => {
            // SAFETY: the driver did not take `data`; reclaim it here (dropping the closure).
            unsafe { Box::from_raw(data) }.disarm_and_recycle();
            Err(e)
        }
    }
}

/// Starts the notifier (allocating the kickoff ring under `ctx`) if it is not running yet.
pub(crate) fn start_notifier(ctx: &Context) -> Result<()> {
    ring::ring(ctx).map(|_| ())
}

/// Unparks the notifier if it parked (work it must watch was enqueued).
fn wake_notifier() {
    if let Some(Ok(r)) = ring::RING.get()
        && !r.awake.load(Ordering::SeqCst)
    {
        r.sleepers.wake_one();
    }
}

/// How long the notifier leaves a graph kick's run to the spinning worker before it dispatches
/// the run itself: a spinning worker claims a run well within a microsecond of the GPU's write,
/// so a run still unclaimed after this long has a spinner that is not running (descheduled, or
/// giving the role up), and waiting longer only delays the step.
const LEAVE_TO_SPINNER: Duration = Duration::from_micros(2);

fn notifier(r: &'static KickRing) {
    let mut kicks: Vec<std::sync::Arc<GraphKick>> = Vec::new();
    let mut watch = Watch::new();
    let mut version = usize::MAX;
    let mut left_since: Option<std::time::Instant> = None;
    loop {
        let v = KICKS.version.load(Ordering::Acquire);
        if v != version {
            version = v;
            let fresh: Vec<_> = KICKS
                .snapshot()
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .collect();
            // The old list drops after the lock is released: a kick's last handle can drop
            // here, and with it the user's closure (under containment).
            kicks = fresh;
        }
        kicks.retain(|k| std::sync::Arc::strong_count(k) > 1 || k.pending());
        // While a worker spins, it claims the kicks' runs itself (`KickWatch`): the notifier
        // leaves them to it, unless a run has waited for it longer than `LEAVE_TO_SPINNER` (it
        // may be giving the role up, or not yet know a kick registered since it looked).
        let spinner = POOL.get().is_some_and(|p| p.spinner.load(Ordering::SeqCst));
        let leave = spinner && left_since.is_none_or(|t| t.elapsed() < LEAVE_TO_SPINNER);
        let mut dispatched = false;
        if leave {
            if kicks.iter().any(|k| k.ready()) {
                left_since.get_or_insert_with(std::time::Instant::now);
            } else {
                left_since = None;
            }
        } else {
            left_since = None;
            // Every kick is polled (no short-circuit): each may have runs to dispatch.
            for k in &kicks {
                dispatched |= k.poll();
            }
        }
        // Always to a worker: the notifier never runs user code, so a closure that blocks cannot
        // hold back another stream's kickoff (see the module docs).
        dispatched |= r.scan(&mut watch, dispatch);
        if dispatched {
            continue;
        }
        let pending = || {
            r.pending()
                || kicks.iter().any(|k| k.pending())
                || KICKS.version.load(Ordering::Acquire) != version
        };
        if spin_while(park::TRAMPOLINE, pending, || {
            kicks.iter().any(|k| k.ready())
                || KICKS.version.load(Ordering::Acquire) != version
                || r.ready(&watch)
        }) {
            continue;
        }
        r.awake.store(false, Ordering::SeqCst);
        r.sleepers.park_unless(pending);
        r.awake.store(true, Ordering::SeqCst);
    }
}

#[cfg(all(test, loom))]
mod loom_model;
#[cfg(all(test, loom))]
mod pool_loom_model;

#[cfg(test)]
mod tests {
    use super::job::{PanicSink, SmallFn};
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    fn worker_cpu_ticks() -> u64 {
        ferrocuda_test_support::thread_cpu_ticks("ferrocuda-worke")
    }

    /// The pool is the process's: its tests must not overlap (one counts the workers' CPU while
    /// idle, another keeps steps in flight).
    static POOL_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Takes the process pool for one test (see `POOL_TESTS`), its workers started.
    pub(super) fn serial_pool() -> std::sync::MutexGuard<'static, ()> {
        let serial = POOL_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        start_workers();
        serial
    }

    /// Waits (yielding) until `cond`, failing the test at `deadline`.
    pub(super) fn wait_for(what: &str, deadline: Instant, cond: impl Fn() -> bool) {
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    fn run_one(runs: &Arc<AtomicUsize>, sink: &Arc<PanicSink>) {
        let r = runs.clone();
        dispatch(Job::new(
            SmallFn::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
            sink.clone(),
            None,
            0,
        ));
    }

    /// While steps are in flight back to back, the spinning worker runs each job it finds at once:
    /// no futex call (waking another worker) on the path between the dispatch and the closure.
    /// A second worker is woken by `dispatch` only when a job arrives while none spins.
    #[test]
    fn back_to_back_jobs_run_without_waking_another_worker() {
        let _serial = POOL_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(PanicSink::default());
        let runs = Arc::new(AtomicUsize::new(0));
        // Several steps in flight, as when graph launches are queued ahead.
        for _ in 0..4 {
            step_enqueued();
        }
        // Let a worker take the spinning role.
        run_one(&runs, &sink);
        let t = Instant::now();
        while runs.load(Ordering::SeqCst) < 1 && t.elapsed() < Duration::from_secs(5) {
            std::hint::spin_loop();
        }
        // A thread that is always parked among the workers, so that every wake-up the pool makes
        // is counted, however the scheduler placed the workers (on a two-core machine a woken
        // worker often finds the spinning role taken and parks again unseen).
        let stop = Arc::new(AtomicBool::new(false));
        let parked = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    pool().sleepers.park_unless(|| stop.load(Ordering::SeqCst));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let woken0 = pool().sleepers.woken();
        const JOBS: usize = 400;
        for i in 0..JOBS {
            // One job at a time, as a notifier dispatches steps that the GPU kicks off one by one,
            // each while one worker spins and the others (and the extra thread) are parked.
            while !(pool().spinner.load(Ordering::SeqCst)
                && pool().sleepers.parked() >= worker_count())
                && t.elapsed() < Duration::from_secs(20)
            {
                std::hint::spin_loop();
            }
            run_one(&runs, &sink);
            while runs.load(Ordering::SeqCst) < i + 2 && t.elapsed() < Duration::from_secs(20) {
                std::hint::spin_loop();
            }
        }
        let woken = pool().sleepers.woken() - woken0;
        stop.store(true, Ordering::SeqCst);
        parked.thread().unpark();
        parked.join().expect("the parked thread panicked");
        for _ in 0..4 {
            step_done();
        }
        assert_eq!(runs.load(Ordering::SeqCst), JOBS + 1, "jobs lost");
        assert!(
            woken <= JOBS / 20,
            "{woken} worker wake-ups (futex calls) for {JOBS} back-to-back jobs"
        );
    }

    /// Jobs dispatched from several threads each run exactly once on the pool; once nothing is in
    /// flight the workers park and use no CPU.
    #[test]
    fn pool_runs_every_job_once_then_parks() {
        let _serial = POOL_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(PanicSink::default());
        let runs = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..500 {
                        let r = runs.clone();
                        dispatch(Job::new(
                            SmallFn::new(move || {
                                r.fetch_add(1, Ordering::SeqCst);
                            }),
                            sink.clone(),
                            None,
                            0,
                        ));
                    }
                });
            }
        });
        let t = Instant::now();
        while runs.load(Ordering::SeqCst) < 2000 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2000);
        std::thread::sleep(GRACE * 5 + Duration::from_millis(20));
        let c0 = worker_cpu_ticks();
        std::thread::sleep(Duration::from_millis(500));
        let c1 = worker_cpu_ticks();
        assert!(
            c1 - c0 <= 1,
            "idle workers used {} ticks of CPU in 500 ms",
            c1 - c0
        );
        // Still alive after parking: one more job runs.
        let r = runs.clone();
        dispatch(Job::new(
            SmallFn::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
            sink,
            None,
            0,
        ));
        let t = Instant::now();
        while runs.load(Ordering::SeqCst) < 2001 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2001);
    }

    #[test]
    fn kickoff_mode_round_trips() {
        for m in [KickoffMode::GpuWrite, KickoffMode::HostFunc] {
            assert_eq!(KickoffMode::from_u8(m.to_u8()), m);
        }
        assert_eq!(KickoffMode::default(), KickoffMode::GpuWrite);
    }
}
