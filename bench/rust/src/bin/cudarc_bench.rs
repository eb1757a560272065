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
use ferrocuda_bench::backend::{Backend, Mark};
use ferrocuda_bench::loops::{self, Bench};
use ferrocuda_bench::{Args, Report, die};
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

    #[inline]
    fn load(&self) -> u64 {
        self.atomic().load(Ordering::Acquire)
    }

    #[inline]
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
    /// 32 words of device memory the reset zeroes on each stream, as the C baseline's.
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
}

impl Backend for Env {
    type Stream = Arc<CudaStream>;
    type Event = CudaEvent;

    const PINNED_NOTE: &'static str = "PinnedHostSlice (cuMemHostAlloc + an event)";

    #[inline]
    fn stream(&self) -> &Arc<CudaStream> {
        &self.s
    }

    #[inline]
    fn second_stream(&self) -> &Arc<CudaStream> {
        &self.s2
    }

    fn reset(&self) {
        ok(self.s.synchronize());
        ok(self.s2.synchronize());
        self.flag.store(0);
        self.ack_slot.store(0);
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        for s in [&self.s2, &self.s] {
            ok(s.memset_zeros(&mut *scratch));
            ok(s.synchronize());
        }
    }

    #[inline]
    fn synchronize(&self, s: &Arc<CudaStream>) {
        ok(s.synchronize());
    }

    #[inline]
    fn launch_empty(&self, s: &Arc<CudaStream>) {
        // SAFETY: empty_kernel().
        ok(unsafe { s.launch_builder(&self.empty).launch(SINGLE) });
    }

    #[inline]
    fn launch_spin(&self, s: &Arc<CudaStream>, ns: u64) {
        // SAFETY: spin_ns(u64).
        ok(unsafe { s.launch_builder(&self.spin_ns).arg(&ns).launch(SINGLE) });
    }

    #[inline]
    fn launch_ack(&self, s: &Arc<CudaStream>, v: u64) {
        // SAFETY: ack(u64* host_slot, u64 value); the slot outlives the stream's work (reset syncs).
        ok(unsafe {
            s.launch_builder(&self.ack)
                .arg(&self.ack_slot.dev)
                .arg(&v)
                .launch(SINGLE)
        });
    }

    #[inline]
    fn wait_for_flag(&self, s: &Arc<CudaStream>, v: u64) {
        let geq = sys::CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ as u32;
        // SAFETY: live stream; the flag is mapped pinned memory that outlives the wait.
        ok(unsafe { sys::cuStreamWaitValue64_v2(s.cu_stream(), self.flag.dev, v, geq) }.result());
    }

    #[inline]
    fn write_ack(&self, s: &Arc<CudaStream>, v: u64) {
        // SAFETY: live stream; the ack slot is mapped pinned memory that outlives the write.
        ok(
            unsafe { sys::cuStreamWriteValue64_v2(s.cu_stream(), self.ack_slot.dev, v, 0) }
                .result(),
        );
    }

    #[inline]
    fn signal(&self, v: u64) {
        self.flag.store(v);
    }

    #[inline]
    fn ack(&self) -> u64 {
        self.ack_slot.load()
    }

    fn new_event(&self, timing: bool) -> CudaEvent {
        let flags = if timing {
            Some(sys::CUevent_flags::CU_EVENT_DEFAULT)
        } else {
            None // cudarc's default: CU_EVENT_DISABLE_TIMING
        };
        ok(self.ctx.new_event(flags))
    }

    #[inline]
    fn record_event(&self, s: &Arc<CudaStream>, ev: &CudaEvent) {
        ok(ev.record(s));
    }

    #[inline]
    fn synchronize_event(&self, ev: &CudaEvent) {
        ok(ev.synchronize());
    }

    #[inline]
    fn is_ready(&self, ev: &CudaEvent) -> bool {
        ok(ev.try_is_complete())
    }

    #[inline]
    fn elapsed_time(&self, start: &CudaEvent, end: &CudaEvent) -> f32 {
        ok(start.elapsed_ms(end))
    }

    #[inline]
    fn wait_for_event(&self, s: &Arc<CudaStream>, ev: &CudaEvent) {
        ok(s.wait(ev));
    }

    #[inline]
    fn alloc_free_device(&self, s: &Arc<CudaStream>, bytes: usize) {
        // SAFETY: never read; u8 has no invalid bit patterns.
        drop(ok(unsafe { s.alloc::<u8>(bytes) }));
    }

    #[inline]
    fn alloc_free_pinned(&self) {
        let flags = sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_DEVICEMAP;
        // SAFETY: never read.
        drop(ok(unsafe {
            self.ctx.alloc_pinned_with_flags::<u64>(1, flags)
        }));
    }

    #[inline]
    fn enqueue_stamp(&self, s: &Arc<CudaStream>, mark: &'static Mark) {
        launch_host_func(s, hf_mark, mark as *const Mark as *mut c_void);
    }

    /// `hf_mark` too: it also stamps the time, one clock read per callback more than the C
    /// baseline's `hf_count` (kept so that this program's rows stay comparable with its earlier
    /// ones).
    #[inline]
    fn enqueue_count(&self, s: &Arc<CudaStream>, mark: &'static Mark) {
        launch_host_func(s, hf_mark, mark as *const Mark as *mut c_void);
    }
}

/// Runs on the driver's callback thread: stamps the time, then publishes the count.
unsafe extern "C" fn hf_mark(user: *mut c_void) {
    // SAFETY: `user` is a `&'static Mark` (see the callers).
    let m = unsafe { &*(user as *const Mark) };
    m.stamp();
}

/// The trampoline's kickoff: publishes the step (carried in the pointer) to the worker.
static TICKET: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn kick(user: *mut c_void) {
    TICKET.store(user as u64, Ordering::Release);
}

#[inline]
fn launch_host_func(s: &CudaStream, f: unsafe extern "C" fn(*mut c_void), user: *mut c_void) {
    // SAFETY: live stream; every `user` outlives its callback (see the callers).
    ok(unsafe { result::stream::launch_host_function(s.cu_stream(), f, user) });
}

/// The trampoline, hand-written like the C baseline's: the kickoff is a host function that
/// publishes step i to a spinning worker thread, which signals the flag; the gate is the driver's
/// wait.
fn trampoline_hostfunc(e: &Env, a: &Args, r: &mut Report) {
    e.reset();
    TICKET.store(0, Ordering::Release);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // The worker spins (never sleeps: a sleeping thread wakes tens of µs late) and signals
        // the flag with each ticket.
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
        loops::trampoline(e, a, r, "trampoline_hostfunc", "wait", |i| {
            launch_host_func(&e.s, kick, i as *mut c_void);
            e.wait_for_flag(&e.s, i);
        });
        stop.store(true, Ordering::Release);
    });
}

fn main() {
    let mut benches = loops::shared::<Env>();
    benches.push(Bench::new("trampoline_hostfunc", trampoline_hostfunc));
    // Names of the other programs' benchmarks (the bundle passes every program the same list) are
    // skipped; with none of ours, there is nothing to run.
    let Some(args) = Args::parse_lenient(&loops::names(&benches)) else {
        return;
    };
    let e = Env::new(&args.cubin);
    let mut version = 0;
    // SAFETY: writes one int.
    ok(unsafe { sys::cuDriverGetVersion(&mut version) }.result());
    let name = ok(e.ctx.name());
    let mut r = Report::open("cudarc", &args, &name, version);
    loops::run(&e, &args, &mut r, &benches);
}
