//! The async trampoline's machinery: how a step is kicked off, and the threads that run it.
//!
//! A trampoline step ([`DeviceStream::enqueue_async_host_func`](crate::DeviceStream::enqueue_async_host_func))
//! is kicked off in one of two ways ([`KickoffMode`]):
//!
//! * **`GpuWrite`** (default): the stream writes the step's ticket into a slot of a ring in mapped
//!   pinned memory (`cuStreamWriteValue64`); the crate's *notifier* thread sees it and hands the
//!   job to a worker. The notifier never runs a user closure itself: a closure that blocks would
//!   stall every other stream's kickoff behind it. No host function is involved, so the process keeps its fast event calls
//!   (GPU.md: once a host function ran between kernels, every event record/synchronize/query costs
//!   about 1.1 µs more for the rest of the process).
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

use crate::device::DeviceInner;
use crate::error::Result;
use crate::host_func::Job;
use crate::raw::{self, CUdeviceptr};
use crate::sync;
use crossbeam_queue::SegQueue;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How an async host-function step is kicked off when its stream reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KickoffMode {
    /// The stream writes a ticket to mapped memory that a crate thread watches: ≈ 4× faster than
    /// `HostFunc` on an H100, keeps event calls fast, and costs one spinning core (the notifier)
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
pub const GRACE: Duration = Duration::from_micros(200);

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
// Parking

/// Threads of one kind that park when idle; `wake` unparks one (a syscall only if one sleeps).
struct Sleepers {
    list: Mutex<Vec<Thread>>,
    count: AtomicUsize,
}

impl Sleepers {
    const fn new() -> Self {
        Sleepers {
            list: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Thread>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks the current thread unless `has_work()` after registering (no lost wake-ups: a wake
    /// between the check and the park leaves the thread's park token set).
    fn park_unless(&self, has_work: impl Fn() -> bool) {
        {
            let mut l = self.lock();
            l.push(std::thread::current());
            self.count.store(l.len(), Ordering::SeqCst);
        }
        if !has_work() {
            std::thread::park();
        }
        let me = std::thread::current().id();
        let mut l = self.lock();
        l.retain(|t| t.id() != me);
        self.count.store(l.len(), Ordering::SeqCst);
    }

    fn wake_one(&self) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(t) = self.lock().pop() {
            t.unpark();
        }
    }
}

/// Spins while `busy()`, then for [`GRACE`] more; returns when `ready()` or when it is time to park.
fn spin(busy: impl Fn() -> bool, ready: impl Fn() -> bool) -> bool {
    let mut idle_since: Option<Instant> = None;
    loop {
        if ready() {
            return true;
        }
        if busy() {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= GRACE {
            return false;
        }
        std::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------------------------
// Workers

struct Pool {
    queue: SegQueue<Box<Job>>,
    sleepers: Sleepers,
    /// One worker at a time spins for jobs; the others park.
    spinner: AtomicBool,
    started: OnceLock<()>,
}

fn pool() -> &'static Pool {
    static P: Pool = Pool {
        queue: SegQueue::new(),
        sleepers: Sleepers::new(),
        spinner: AtomicBool::new(false),
        started: OnceLock::new(),
    };
    P.started.get_or_init(|| {
        for i in 0..worker_count() {
            let spawned = std::thread::Builder::new()
                .name(format!("ferrocuda-worker-{i}"))
                .spawn(|| {
                    crate::guard::mark_crate_thread();
                    worker(&P)
                });
            if let Err(e) = spawned {
                tracing::warn!(%e, "could not start a ferrocuda worker thread");
            }
        }
    });
    &P
}

/// Number of trampoline workers: closures run concurrently up to this many
/// (`FERROCUDA_WORKERS` overrides; default 2 to 4 by available cores).
fn worker_count() -> usize {
    std::env::var("FERROCUDA_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)))
}

impl Pool {
    fn wake_spinner(&self) {
        if !self.spinner.load(Ordering::SeqCst) {
            self.sleepers.wake_one();
        }
    }
}

fn worker(p: &'static Pool) {
    loop {
        if let Some(job) = p.queue.pop() {
            job.run_and_recycle();
            continue;
        }
        if p.spinner
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let got = spin(|| in_flight() > 0, || !p.queue.is_empty());
            p.spinner.store(false, Ordering::SeqCst);
            if got {
                // Another worker takes over spinning while this one runs the job.
                if in_flight() > 1 {
                    p.sleepers.wake_one();
                }
                continue;
            }
        }
        p.sleepers.park_unless(|| {
            !p.queue.is_empty() || (in_flight() > 0 && !p.spinner.load(Ordering::SeqCst))
        });
    }
}

/// Starts the worker pool now, so that the first kickoff does not pay for thread creation.
pub(crate) fn start_workers() {
    let _ = pool();
}

/// Gives `job` to a worker. Never blocks; makes no driver call.
pub(crate) fn dispatch(job: Box<Job>) {
    let p = pool();
    p.queue.push(job);
    if !p.spinner.load(Ordering::SeqCst) {
        p.sleepers.wake_one();
    }
}

// ---------------------------------------------------------------------------------------------
// GPU-write kickoff: the ring and the notifier

/// Slots of the kickoff ring (one cache line each): at most this many GPU-write steps in flight;
/// beyond that a step falls back to a host-function kickoff.
pub const RING_SLOTS: usize = 4096;
const SLOT_STRIDE: usize = 64;

/// One slot of the ring's mapped memory: the last ticket the GPU wrote there, alone on its cache
/// line.
#[repr(C)]
pub(crate) struct Slot {
    ticket: sync::atomic::AtomicU64,
    _line: [u8; SLOT_STRIDE - size_of::<u64>()],
}

// The GPU writes ticket t at byte (t % RING_SLOTS) * SLOT_STRIDE of the mapping, which needs no
// more alignment than a u64.
#[cfg(not(all(test, loom)))]
const _: () = assert!(size_of::<Slot>() == SLOT_STRIDE && align_of::<Slot>() == align_of::<u64>());

impl Slot {
    /// A slot holding no ticket yet.
    #[cfg(all(test, loom))]
    fn new() -> Slot {
        Slot {
            ticket: sync::atomic::AtomicU64::new(0),
            _line: [0; SLOT_STRIDE - size_of::<u64>()],
        }
    }
}

/// The kickoff ring: `N` slots, each with the job waiting for its ticket.
///
/// A step reserves ticket t (tickets count up from 1) and slot t % N, publishes its job there,
/// and enqueues the GPU's write of t into the slot. The notifier dispatches the job once it sees
/// t in the slot, and advances `low` past every ticket that is done (dispatched, or cancelled
/// because its write was never enqueued). A slot is reused only when its previous ticket is below
/// `low`, so a pending ticket's job is never overwritten.
pub(crate) struct Ring<J, const N: usize> {
    /// Mapped pinned memory: the GPU writes ticket t into slot t % N.
    host: &'static [Slot],
    dev: CUdeviceptr,
    /// The job waiting for slot i's ticket, and that ticket.
    jobs: Box<[sync::atomic::AtomicPtr<J>]>,
    tickets: Box<[sync::atomic::AtomicU64]>,
    /// The last ticket of slot i that was dispatched.
    done: Box<[sync::atomic::AtomicU64]>,
    /// Next ticket to hand out (tickets start at 1; 0 is what fresh slots hold).
    next: sync::atomic::AtomicU64,
    /// Every ticket below this was dispatched (the notifier advances it).
    low: sync::atomic::AtomicU64,
    sleepers: Sleepers,
    /// Whether the notifier is spinning (not parked).
    awake: sync::atomic::AtomicBool,
}

/// The process's ring.
pub(crate) type KickRing = Ring<Job, RING_SLOTS>;

impl<J: Send, const N: usize> Ring<J, N> {
    /// A ring over `host` (N slots, zero: no ticket yet) that the GPU reaches at `dev`.
    fn new(host: &'static [Slot], dev: CUdeviceptr) -> Self {
        let atomics = |v: u64| {
            (0..N)
                .map(|_| sync::atomic::AtomicU64::new(v))
                .collect::<Box<[_]>>()
        };
        Ring {
            host,
            dev,
            jobs: (0..N)
                .map(|_| sync::atomic::AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            tickets: atomics(0),
            done: atomics(0),
            next: sync::atomic::AtomicU64::new(1),
            low: sync::atomic::AtomicU64::new(1),
            sleepers: Sleepers::new(),
            awake: sync::atomic::AtomicBool::new(true),
        }
    }

    fn index(t: u64) -> usize {
        (t % N as u64) as usize
    }

    fn slot(&self, i: usize) -> &sync::atomic::AtomicU64 {
        &self.host[i].ticket
    }

    /// The notifier's pass over the tickets handed out and not yet known to be done: hands the
    /// job of every ticket the GPU wrote to `dispatch` (exactly once: the swap makes the caller
    /// its only owner), then advances `low` past the done prefix. Returns whether it dispatched.
    pub(crate) fn scan(&self, mut dispatch: impl FnMut(Box<J>)) -> bool {
        let hi = self.next.load(Ordering::Acquire);
        let start = self.low.load(Ordering::Relaxed);
        let mut low = start;
        let mut prefix = true;
        let mut dispatched = false;
        for t in start..hi {
            let i = Self::index(t);
            if self.done[i].load(Ordering::Acquire) != t
                && self.tickets[i].load(Ordering::Acquire) == t
                && self.slot(i).load(Ordering::Acquire) == t
            {
                let p = self.jobs[i].swap(std::ptr::null_mut(), Ordering::AcqRel);
                self.done[i].store(t, Ordering::Release);
                if !p.is_null() {
                    // SAFETY: the pointer is the Box `reserve` published for ticket t; the swap
                    // made this the only owner.
                    dispatch(unsafe { Box::from_raw(p) });
                    dispatched = true;
                }
            }
            if prefix && self.done[i].load(Ordering::Acquire) == t {
                low = t + 1;
            } else {
                prefix = false;
            }
        }
        self.low.store(low, Ordering::Release);
        dispatched
    }

    /// Whether a ticket was handed out that is not known to be done.
    fn pending(&self) -> bool {
        self.low.load(Ordering::Acquire) < self.next.load(Ordering::SeqCst)
    }

    /// Whether the GPU wrote a ticket whose job is not dispatched yet.
    fn ready(&self) -> bool {
        let (lo, hi) = (
            self.low.load(Ordering::Acquire),
            self.next.load(Ordering::Acquire),
        );
        (lo..hi).any(|t| {
            let i = Self::index(t);
            self.slot(i).load(Ordering::Acquire) == t && self.done[i].load(Ordering::Acquire) != t
        })
    }
}

static RING: OnceLock<Result<&'static KickRing>> = OnceLock::new();

/// The ring, allocated on first use under `device`'s context (`cuMemHostAlloc` returns at once
/// even while streams wait; it is never freed).
fn ring(device: &DeviceInner) -> Result<&'static KickRing> {
    RING.get_or_init(|| {
        if cfg!(all(test, loom)) {
            // A slot holds loom's atomic then: only the models' own rings may exist.
            panic!("no mapped kickoff ring under loom");
        }
        device.bind_checked()?;
        let flags =
            ferrocuda_sys::CU_MEMHOSTALLOC_PORTABLE | ferrocuda_sys::CU_MEMHOSTALLOC_DEVICEMAP;
        let bytes = RING_SLOTS * SLOT_STRIDE;
        // SAFETY: the device's context is current.
        let host = unsafe { raw::mem_host_alloc(bytes, flags) }?;
        // SAFETY: fresh pinned memory of `bytes` bytes; zero is "no ticket yet".
        unsafe { std::ptr::write_bytes(host.cast::<u8>(), 0, bytes) };
        // SAFETY: `host` is mapped pinned memory of the current context.
        let dev = unsafe { raw::mem_host_get_device_pointer(host) }?;
        crate::memory::PINNED_BYTES.fetch_add(bytes, Ordering::AcqRel);
        // SAFETY: the allocation holds RING_SLOTS slots of SLOT_STRIDE bytes (a `Slot` is one
        // atomic u64 padded to exactly that), aligned at least for a u64 (the driver's pinned
        // allocations are page-aligned), zeroed (a valid `Slot`), and kept for the life of the
        // process; it is accessed only through the atomics.
        let slots: &'static [Slot] =
            unsafe { std::slice::from_raw_parts(host.cast_const().cast::<Slot>(), RING_SLOTS) };
        let r: &'static KickRing = Box::leak(Box::new(Ring::new(slots, dev)));
        let spawned = std::thread::Builder::new()
            .name("ferrocuda-notifier".into())
            .spawn(move || {
                crate::guard::mark_crate_thread();
                notifier(r)
            });
        if let Err(e) = spawned {
            tracing::warn!(%e, "could not start the ferrocuda notifier thread");
        }
        Ok(r)
    })
    .clone()
}

/// A GPU-write kickoff prepared for a step: enqueue `cuStreamWriteValue64(addr, ticket)`.
pub(crate) struct Ticket<J: 'static, const N: usize> {
    pub(crate) addr: CUdeviceptr,
    pub(crate) ticket: u64,
    slot: usize,
    ring: &'static Ring<J, N>,
}

/// The kickoff ring (allocated on first use).
pub(crate) fn ring_for(device: &DeviceInner) -> Result<&'static KickRing> {
    ring(device)
}

/// Reserves a ring slot for `job` and publishes it to the notifier; `Err(job)` when the ring is
/// full (the caller falls back to a host-function kickoff).
pub(crate) fn reserve<J: Send, const N: usize>(
    r: &'static Ring<J, N>,
    job: Box<J>,
) -> std::result::Result<Ticket<J, N>, Box<J>> {
    let mut t = r.next.load(Ordering::SeqCst);
    loop {
        // `low` lags behind, so this is conservative: a slot is never reused while its last
        // ticket may still be pending. `t` may be stale and below `low` (others took and finished
        // tickets since it was read): then the exchange below fails and `t` is read again.
        if t.saturating_sub(r.low.load(Ordering::Acquire)) >= N as u64 {
            return Err(job);
        }
        match r
            .next
            .compare_exchange_weak(t, t + 1, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => break,
            Err(cur) => t = cur,
        }
    }
    let slot = Ring::<J, N>::index(t);
    r.tickets[slot].store(t, Ordering::Relaxed);
    r.jobs[slot].store(Box::into_raw(job), Ordering::Release);
    if !r.awake.load(Ordering::SeqCst) {
        r.sleepers.wake_one();
    }
    Ok(Ticket {
        addr: r.dev + (slot * SLOT_STRIDE) as u64,
        ticket: t,
        slot,
        ring: r,
    })
}

impl<J, const N: usize> Ticket<J, N> {
    /// The enqueue of the GPU write failed: take the job back (nothing will write the ticket).
    pub(crate) fn cancel(self) -> Option<Box<J>> {
        let p = self.ring.jobs[self.slot].swap(std::ptr::null_mut(), Ordering::AcqRel);
        self.ring.done[self.slot].store(self.ticket, Ordering::Release);
        // SAFETY: a non-null pointer here is the Box this ticket published and nobody took.
        (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
    }
}

// ---------------------------------------------------------------------------------------------
// GPU-write kickoff of graph nodes

/// One graph async node kicked off by GPU write: a kernel node bumps a device counter and writes
/// it to `slot`; the notifier runs the body once per new value, then signals the flag.
pub(crate) struct GraphKick {
    slot: crate::flag::CompletionFlag,
    counter: crate::memory::DeviceBuffer<u64>,
    /// Launches of graphs containing the node (so the notifier knows to spin).
    expected: AtomicU64,
    /// Runs dispatched.
    seen: AtomicU64,
    body: std::sync::Arc<crate::callback::Body>,
    panics: std::sync::Arc<crate::host_func::PanicSink>,
    flag: std::sync::Arc<crate::flag::FlagInner>,
    value: u64,
}

struct Kicks {
    list: Mutex<Vec<std::sync::Weak<GraphKick>>>,
    version: AtomicUsize,
}

static KICKS: Kicks = Kicks {
    list: Mutex::new(Vec::new()),
    version: AtomicUsize::new(0),
};

impl GraphKick {
    fn pending(&self) -> bool {
        self.seen.load(Ordering::Acquire) < self.expected.load(Ordering::Acquire)
    }

    fn ready(&self) -> bool {
        self.slot.load() > self.seen.load(Ordering::Acquire)
    }

    /// Dispatches one job per new count; returns whether any was dispatched.
    fn poll(&self) -> bool {
        let v = self.slot.load();
        let mut any = false;
        while self.seen.load(Ordering::Acquire) < v {
            self.seen.fetch_add(1, Ordering::AcqRel);
            let (body, panics) = (self.body.clone(), self.panics.clone());
            let job = Job::new(
                crate::host_func::SmallFn::new(move || crate::callback::call(&body, &panics)),
                std::sync::Arc::default(),
                Some(self.flag.clone()),
                self.value,
            );
            // Always to a worker: the notifier never runs user code (see the module docs).
            dispatch(job);
            any = true;
        }
        any
    }
}

/// The trampoline's GPU-write kickoff as a CUDA graph kernel node (used by ferrocuda-graph).
///
/// Add a kernel node running [`kernel`](Self::kernel) with its two arguments; call
/// [`launched`](Self::launched) once per launch of a graph containing the node. Each run of the
/// node publishes a new count to a mapped slot; the crate's notifier thread sees it, runs the
/// closure (on itself or a worker) and then stores `value` in the flag — no host function runs,
/// so event calls keep their fresh-process cost, and the node costs one tiny kernel.
#[derive(Clone)]
pub struct GpuKickoff {
    inner: std::sync::Arc<GraphKick>,
    kernel: crate::module::Function,
}

impl GpuKickoff {
    /// A kickoff for `f`, signalling `value` on `flag` after each run.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`](crate::Error::Unsupported) without the kickoff kernel;
    /// [`Error::Driver`](crate::Error::Driver) if its counter or slot cannot be allocated.
    pub fn new(
        device: &crate::Device,
        flag: &crate::CompletionFlag,
        value: u64,
        f: impl FnMut() + Send + 'static,
    ) -> Result<Self> {
        let kernel = device.inner.gate_kernels(device)?.kick.clone();
        start_workers();
        let _ = ring(&device.inner)?; // starts the notifier
        let s = device.new_stream()?;
        let counter = s.alloc_zeroed::<u64>(1)?;
        s.synchronize_timeout(Duration::from_secs(10))?;
        let inner = std::sync::Arc::new(GraphKick {
            slot: crate::CompletionFlag::new(device)?,
            counter,
            expected: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            body: std::sync::Arc::new(Mutex::new(Box::new(f))),
            panics: std::sync::Arc::default(),
            flag: flag.inner().clone(),
            value,
        });
        let mut l = KICKS.list.lock().unwrap_or_else(|p| p.into_inner());
        l.retain(|w| w.strong_count() > 0);
        l.push(std::sync::Arc::downgrade(&inner));
        KICKS.version.fetch_add(1, Ordering::AcqRel);
        Ok(GpuKickoff { inner, kernel })
    }

    /// The kernel (`ferrocuda_kick(u64* counter, u64* slot)`, one thread) and its two arguments,
    /// to pass as resources (`LaunchArgs::arg`) so that the use path resolves and keeps them.
    pub fn kernel(
        &self,
    ) -> (
        crate::module::Function,
        &crate::memory::DeviceBuffer<u64>,
        &crate::flag::CompletionFlag,
    ) {
        (self.kernel.clone(), &self.inner.counter, &self.inner.slot)
    }

    /// Records one more launch of a graph containing the node (so the crate's threads spin until
    /// its run is seen). Call it just before the launch; [`cancel_launch`](Self::cancel_launch)
    /// if the launch failed.
    pub fn launched(&self) {
        self.inner.expected.fetch_add(1, Ordering::AcqRel);
        step_enqueued();
        if let Some(Ok(r)) = RING.get()
            && !r.awake.load(Ordering::SeqCst)
        {
            r.sleepers.wake_one();
        }
    }

    /// Undoes [`launched`](Self::launched) after a failed launch.
    pub fn cancel_launch(&self) {
        self.inner.expected.fetch_sub(1, Ordering::AcqRel);
        step_done();
    }

    /// Panics of the closure since the last call: (count, first message).
    pub fn take_panics(&self) -> Option<(usize, String)> {
        self.inner.panics.take()
    }
}

fn notifier(r: &'static KickRing) {
    let mut kicks: Vec<std::sync::Arc<GraphKick>> = Vec::new();
    let mut version = usize::MAX;
    loop {
        let v = KICKS.version.load(Ordering::Acquire);
        if v != version {
            version = v;
            kicks = KICKS
                .list
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .collect();
        }
        kicks.retain(|k| std::sync::Arc::strong_count(k) > 1 || k.pending());
        // Every kick is polled (no short-circuit): each may have runs to dispatch.
        let mut dispatched = false;
        for k in &kicks {
            dispatched |= k.poll();
        }
        // Always to a worker: the notifier never runs user code, so a closure that blocks cannot
        // hold back another stream's kickoff (see the module docs).
        dispatched |= r.scan(dispatch);
        if dispatched {
            continue;
        }
        let pending = || {
            r.pending()
                || kicks.iter().any(|k| k.pending())
                || KICKS.version.load(Ordering::Acquire) != version
        };
        if spin(pending, || {
            kicks.iter().any(|k| k.ready())
                || KICKS.version.load(Ordering::Acquire) != version
                || r.ready()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_func::{PanicSink, SmallFn};
    use std::sync::Arc;

    fn worker_cpu_ticks() -> u64 {
        let mut ticks = 0;
        for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.starts_with("ferrocuda-worke") {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let f: Vec<&str> = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                ticks += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
            }
        }
        ticks
    }

    /// Jobs dispatched from several threads each run exactly once on the pool; once nothing is in
    /// flight the workers park and use no CPU.
    #[test]
    fn pool_runs_every_job_once_then_parks() {
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
