//! cudarc's side of `cargo xtask bench`: the loops of `ferrocuda_bench/main.rs` (which are the C
//! baseline's, bench/raw/), in the same order and process states (bench/README.md), written the
//! way a user of cudarc 0.19 would write them.
//!
//! Through cudarc's safe API: the context (`CudaContext::new`, the device's primary context with
//! its default flags), non-blocking streams (`new_stream`), events (`new_event`, `record`,
//! `synchronize`, `try_is_complete`, `elapsed_ms`), module load (`load_module` of the cubin as
//! `Ptx::from_binary`, which is `cuModuleLoadData`; no NVRTC is called), kernel launch
//! (`launch_builder`), stream-ordered allocation (`CudaStream::alloc`, freed by `Drop`) and
//! mapped pinned memory (`alloc_pinned_with_flags(PORTABLE | DEVICEMAP)`). cudarc's default
//! event tracking stays on, as a user gets it.
//!
//! cudarc has no safe wrapper for stream memory operations or host functions, so these go through
//! its lower tiers, as a cudarc user would call them: `sys::cuStreamWaitValue64_v2`,
//! `sys::cuStreamWriteValue64_v2` (the `_v2` entry points that CUDA 13's `cuda.h` maps those names
//! to), `sys::cuMemHostGetDevicePointer_v2`, `sys::cuDriverGetVersion`, and
//! `result::stream::launch_host_function` (`cuLaunchHostFunc`) with `extern "C"` callbacks. The
//! trampoline is hand-written like the C baseline's: the callback publishes the step to a spinning
//! worker thread, which signals the flag.

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DriverError,
    LaunchConfig, PinnedHostSlice, PushKernelArg, result, sys,
};
use cudarc::nvrtc::Ptx;
use ferrocuda_bench::{Args, Gap, Report, collect, die, now_ns, spin_for_ns, wait_geq};
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The same benchmarks as `ferrocuda_bench`.
const KNOWN: &[&str] = &[
    "event_record_sync",
    "event_query",
    "launch_sync",
    "elapsed_time_accuracy",
    "write_value_seen",
    "cross_stream_event_wait",
    "signal_wait_ack",
    "signal_wait_write",
    "alloc_free_device",
    "alloc_free_pinned",
    "host_func_latency",
    "host_func_throughput",
    "trampoline_hostfunc",
];

/// Steps the b2b regime keeps enqueued (as the C baseline).
const QUEUE_AHEAD: u64 = 16;

const SINGLE: LaunchConfig = LaunchConfig {
    grid_dim: (1, 1, 1),
    block_dim: (1, 1, 1),
    shared_mem_bytes: 0,
};

/// Mapped pinned 8-byte slots (the flag the GPU waits on, the ack the host waits on).
struct Slot {
    _mem: PinnedHostSlice<u64>,
    host: *const AtomicU64,
    dev: sys::CUdeviceptr,
}

// SAFETY: the slot is only touched through atomics (host) and the GPU's system-scope stores; the
// pinned allocation is owned and freed once, on drop.
unsafe impl Sync for Slot {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for Slot {}

impl Slot {
    fn new(ctx: &Arc<CudaContext>) -> Slot {
        let flags = sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_DEVICEMAP;
        // SAFETY: the slot is zeroed below before anything reads it.
        let mut mem = ok(unsafe { ctx.alloc_pinned_with_flags::<u64>(1, flags) });
        let host = ok(mem.as_mut_ptr());
        let mut dev: sys::CUdeviceptr = 0;
        // SAFETY: `host` is a live DEVICEMAP allocation of this context; `dev` is written.
        ok(unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dev, host.cast(), 0) }.result());
        let s = Slot {
            _mem: mem,
            host: host.cast(),
            dev,
        };
        s.store(0);
        s
    }

    fn atomic(&self) -> &AtomicU64 {
        // SAFETY: 8 aligned bytes of pinned memory that live as long as `self`; the GPU writes it
        // with system-scope stores, the host only through this atomic.
        unsafe { &*self.host }
    }

    fn load(&self) -> u64 {
        self.atomic().load(Ordering::Acquire)
    }

    fn store(&self, v: u64) {
        self.atomic().store(v, Ordering::Release)
    }
}

struct Env {
    ctx: Arc<CudaContext>,
    s: Arc<CudaStream>,
    s2: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    empty: CudaFunction,
    ack: CudaFunction,
    spin_ns: CudaFunction,
    flag: Slot,
    ack_slot: Slot,
    /// 32 words of device memory the reset zeroes on `s`, as the C baseline's.
    scratch: std::sync::Mutex<CudaSlice<u64>>,
}

fn ok<T>(r: Result<T, DriverError>) -> T {
    r.unwrap_or_else(|e| die(&format!("cudarc: {e}")))
}

impl Env {
    fn new(cubin: &str) -> Env {
        let ctx = ok(CudaContext::new(0));
        let image = std::fs::read(cubin).unwrap_or_else(|e| die(&format!("{cubin}: {e}")));
        let module = ok(ctx.load_module(Ptx::from_binary(image)));
        let s = ok(ctx.new_stream());
        let scratch = std::sync::Mutex::new(ok(s.alloc_zeros::<u64>(32)));
        Env {
            scratch,
            s,
            s2: ok(ctx.new_stream()),
            empty: ok(module.load_function("empty_kernel")),
            ack: ok(module.load_function("ack")),
            spin_ns: ok(module.load_function("spin_ns")),
            _module: module,
            flag: Slot::new(&ctx),
            ack_slot: Slot::new(&ctx),
            ctx,
        }
    }

    /// Idle streams and zeroed slots between benchmarks.
    fn reset(&self) {
        ok(self.s.synchronize());
        ok(self.s2.synchronize());
        self.flag.store(0);
        self.ack_slot.store(0);
        // As the C baseline's reset, which ends with a memset on each stream: the last operation
        // of every stream of the context decides what event calls cost (a kernel last on any of
        // them: ~1.2 us more; docs/benchmarks.md).
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        for s in [&self.s2, &self.s] {
            ok(s.memset_zeros(&mut *scratch));
            ok(s.synchronize());
        }
    }

    fn launch_ack(&self, s: &CudaStream, v: u64) {
        // SAFETY: ack(u64* host_slot, u64 value); the slot outlives the stream's work (reset syncs).
        ok(unsafe {
            s.launch_builder(&self.ack)
                .arg(&self.ack_slot.dev)
                .arg(&v)
                .launch(SINGLE)
        });
    }

    fn launch_empty(&self, s: &CudaStream) {
        // SAFETY: empty_kernel().
        ok(unsafe { s.launch_builder(&self.empty).launch(SINGLE) });
    }

    fn wait_ack(&self, v: u64, what: &str) -> u64 {
        wait_geq(|| self.ack_slot.load(), v, what)
    }

    fn wait_value_geq(&self, s: &CudaStream, slot: &Slot, v: u64) {
        let geq = sys::CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ as u32;
        // SAFETY: live stream; the slot is mapped pinned memory that outlives the wait.
        ok(unsafe { sys::cuStreamWaitValue64_v2(s.cu_stream(), slot.dev, v, geq) }.result());
    }

    fn write_value(&self, s: &CudaStream, slot: &Slot, v: u64) {
        // SAFETY: as in `wait_value_geq`.
        ok(unsafe { sys::cuStreamWriteValue64_v2(s.cu_stream(), slot.dev, v, 0) }.result());
    }

    fn event(&self, timing: bool) -> CudaEvent {
        let flags = if timing {
            Some(sys::CUevent_flags::CU_EVENT_DEFAULT)
        } else {
            None // cudarc's default: CU_EVENT_DISABLE_TIMING
        };
        ok(self.ctx.new_event(flags))
    }
}

fn events(e: &Env, a: &Args, r: &mut Report) {
    if a.wants("event_record_sync") {
        e.reset();
        let ev = e.event(false);
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            ok(ev.record(&e.s));
            ok(ev.synchronize());
            (now_ns() - t0) as f64
        });
        r.row("event_record_sync", "idle_stream", &mut v, "");
    }
    if a.wants("event_query") {
        e.reset();
        let ev = e.event(false);
        ok(ev.record(&e.s));
        ok(ev.synchronize());
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            let ready = ok(ev.try_is_complete());
            let t1 = now_ns();
            if !ready {
                die("event_query: a completed event is not ready");
            }
            (t1 - t0) as f64
        });
        r.row("event_query", "completed", &mut v, "");
    }
}

/// Benchmarks that run no host function (phase 3 of the C baseline's order).
fn no_hostfunc(e: &Env, a: &Args, r: &mut Report) -> usize {
    let mut ran = 0;
    if a.wants("launch_sync") {
        ran += 1;
        e.reset();
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            e.launch_empty(&e.s);
            ok(e.s.synchronize());
            (now_ns() - t0) as f64
        });
        r.row("launch_sync", "empty_kernel", &mut v, "");
    }
    if a.wants("elapsed_time_accuracy") {
        ran += 1;
        e.reset();
        let (start, end) = (e.event(true), e.event(true));
        for (regime, ns) in [("100us", 100_000u64), ("1ms", 1_000_000)] {
            let mut v = collect(a.warmup, a.samples, |_| {
                ok(start.record(&e.s));
                // SAFETY: spin_ns(u64).
                ok(unsafe { e.s.launch_builder(&e.spin_ns).arg(&ns).launch(SINGLE) });
                ok(end.record(&e.s));
                ok(end.synchronize());
                ok(start.elapsed_ms(&end)) as f64 * 1e6
            });
            r.row(
                "elapsed_time_accuracy",
                regime,
                &mut v,
                &format!("\"requested_us\":{:.1}", ns as f64 / 1e3),
            );
        }
    }
    if a.wants("write_value_seen") {
        ran += 1;
        e.reset();
        let mut v = collect(a.warmup, a.samples, |i| {
            let t0 = now_ns();
            e.write_value(&e.s, &e.ack_slot, i);
            (e.wait_ack(i, "write_value_seen") - t0) as f64
        });
        r.row("write_value_seen", "idle_stream", &mut v, "");
    }
    if a.wants("cross_stream_event_wait") {
        ran += 1;
        e.reset();
        let ev = e.event(false);
        let mut v = collect(a.warmup, a.samples, |i| {
            let t0 = now_ns();
            e.launch_empty(&e.s);
            ok(ev.record(&e.s));
            ok(e.s2.wait(&ev));
            e.launch_ack(&e.s2, i);
            (e.wait_ack(i, "cross_stream_event_wait") - t0) as f64
        });
        r.row("cross_stream_event_wait", "kernel_event_ack", &mut v, "");
    }
    for (bench, with_kernel) in [("signal_wait_ack", true), ("signal_wait_write", false)] {
        if !a.wants(bench) {
            continue;
        }
        ran += 1;
        let enqueue = |i: u64| {
            e.wait_value_geq(&e.s, &e.flag, i);
            if with_kernel {
                e.launch_ack(&e.s, i);
            } else {
                e.write_value(&e.s, &e.ack_slot, i);
            }
        };
        gate_rows(e, a, r, bench, &enqueue);
    }
    if a.wants("alloc_free_device") {
        ran += 1;
        e.reset();
        let mut n = 0usize;
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            // SAFETY: never read; u8 has no invalid bit patterns.
            let b = ok(unsafe { e.s.alloc::<u8>(1 << 20) });
            drop(b);
            let t1 = now_ns();
            n += 1;
            if n.is_multiple_of(256) {
                ok(e.s.synchronize());
            }
            (t1 - t0) as f64
        });
        r.row("alloc_free_device", "async_1MiB", &mut v, "");
    }
    if a.wants("alloc_free_pinned") {
        ran += 1;
        e.reset();
        let flags = sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_DEVICEMAP;
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            // SAFETY: never read.
            let p = ok(unsafe { e.ctx.alloc_pinned_with_flags::<u64>(1, flags) });
            drop(p);
            (now_ns() - t0) as f64
        });
        r.row(
            "alloc_free_pinned",
            "flag_8B",
            &mut v,
            "\"note\":\"PinnedHostSlice (cuMemHostAlloc + an event)\"",
        );
    }
    ran
}

/// The C baseline's `run_gate`: idle (30–50 µs before each signal) and b2b (16 steps ahead).
fn gate_rows(e: &Env, a: &Args, r: &mut Report, bench: &str, enqueue: &dyn Fn(u64)) {
    let total = (a.warmup + a.samples) as u64;
    e.reset();
    let mut gap = Gap::default();
    let mut v = collect(a.warmup, a.samples, |i| {
        enqueue(i);
        spin_for_ns(gap.next_ns());
        let t0 = now_ns();
        e.flag.store(i);
        (e.wait_ack(i, bench) - t0) as f64
    });
    r.row(bench, "idle", &mut v, "");
    e.reset();
    for i in 1..=QUEUE_AHEAD.min(total) {
        enqueue(i);
    }
    let mut v = collect(a.warmup, a.samples, |i| {
        let t0 = now_ns();
        e.flag.store(i);
        let t1 = e.wait_ack(i, bench);
        if i + QUEUE_AHEAD <= total {
            enqueue(i + QUEUE_AHEAD);
        }
        (t1 - t0) as f64
    });
    r.row(bench, "b2b", &mut v, "");
}

/// What `hf_mark` writes: callbacks run so far, and the time stamped in the latest one.
#[derive(Default)]
struct Mark {
    count: AtomicU64,
    ran_ns: AtomicU64,
}

/// Runs on the driver's callback thread: stamps the time, then publishes the count.
unsafe extern "C" fn hf_mark(user: *mut c_void) {
    // SAFETY: `user` is the `Mark` that `hostfunc` keeps alive until every callback ran.
    let m = unsafe { &*(user as *const Mark) };
    m.ran_ns.store(now_ns(), Ordering::Relaxed);
    m.count.fetch_add(1, Ordering::Release);
}

/// The trampoline's kickoff: publishes the step (carried in the pointer) to the worker.
static TICKET: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn kick(user: *mut c_void) {
    TICKET.store(user as u64, Ordering::Release);
}

fn launch_host_func(s: &CudaStream, f: unsafe extern "C" fn(*mut c_void), user: *mut c_void) {
    // SAFETY: live stream; every `user` outlives its callback (see the callers).
    ok(unsafe { result::stream::launch_host_function(s.cu_stream(), f, user) });
}

fn hostfunc(e: &Env, a: &Args, r: &mut Report) -> usize {
    let mut ran = 0;
    if a.wants("host_func_latency") {
        ran += 1;
        e.reset();
        r.state = "after_hostfunc";
        let mark = Mark::default();
        let user = &mark as *const Mark as *mut c_void;
        let mut v = collect(a.warmup, a.samples, |i| {
            let t0 = now_ns();
            launch_host_func(&e.s, hf_mark, user);
            wait_geq(
                || mark.count.load(Ordering::Acquire),
                i,
                "host_func_latency",
            );
            (mark.ran_ns.load(Ordering::Relaxed) - t0) as f64
        });
        ok(e.s.synchronize()); // `mark` must outlive the last callback's return
        r.row("host_func_latency", "enqueue_to_run", &mut v, "");
    }
    if a.wants("host_func_throughput") {
        ran += 1;
        e.reset();
        r.state = "after_hostfunc";
        let mark = Mark::default();
        let user = &mark as *const Mark as *mut c_void;
        let mut v = collect(5, 50, |b| {
            let t0 = now_ns();
            for _ in 0..1000 {
                launch_host_func(&e.s, hf_mark, user);
            }
            (wait_geq(
                || mark.count.load(Ordering::Acquire),
                b * 1000,
                "host_func_throughput",
            ) - t0) as f64
                / 1000.0
        });
        ok(e.s.synchronize()); // `mark` must outlive the last callback's return
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        let med = sorted[sorted.len() / 2];
        r.row(
            "host_func_throughput",
            "batch1000",
            &mut v,
            &format!(
                "\"rate\":{:.1},\"rate_unit\":\"callbacks/s\",\"batch\":1000",
                1e9 / med
            ),
        );
    }
    if a.wants("trampoline_hostfunc") {
        ran += 1;
        e.reset();
        r.state = "after_hostfunc";
        TICKET.store(0, Ordering::Release);
        let stop = AtomicBool::new(false);
        let mut v = std::thread::scope(|scope| {
            // The worker spins (never sleeps: GPU.md) and signals the flag with each ticket.
            scope.spawn(|| {
                let mut seen = 0;
                while !stop.load(Ordering::Acquire) {
                    let t = TICKET.load(Ordering::Acquire);
                    if t > seen {
                        seen = t;
                        e.flag.store(t);
                    }
                    std::hint::spin_loop();
                }
            });
            let v = collect(a.warmup, a.samples * 5, |i| {
                let t0 = now_ns();
                launch_host_func(&e.s, kick, i as *mut c_void);
                e.wait_value_geq(&e.s, &e.flag, i);
                e.launch_ack(&e.s, i);
                (e.wait_ack(i, "trampoline_hostfunc") - t0) as f64
            });
            stop.store(true, Ordering::Release);
            v
        });
        r.row("trampoline_hostfunc", "wait", &mut v, "");
    }
    ran
}

fn main() {
    // Names of the other programs' benchmarks (the bundle passes every program the same list) are
    // skipped; with none of ours, there is nothing to run.
    let Some(args) = Args::parse_lenient(KNOWN) else {
        return;
    };
    let e = Env::new(&args.cubin);
    let mut version = 0;
    // SAFETY: writes one int.
    ok(unsafe { sys::cuDriverGetVersion(&mut version) }.result());
    let name = ok(e.ctx.name());
    let mut r = Report::open("cudarc", &args, &name, version);
    events(&e, &args, &mut r);
    if no_hostfunc(&e, &args, &mut r) > 0 {
        r.state = "before_hostfunc";
        events(&e, &args, &mut r);
    }
    if hostfunc(&e, &args, &mut r) > 0 {
        r.state = "after_hostfunc";
        events(&e, &args, &mut r);
    }
    e.reset();
}
