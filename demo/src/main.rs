//! `gated_pipeline`: the GPU produces data, the host computes a value from it, the GPU consumes
//! the value — four ways, in one run, checked equal (`cargo xtask demo`, docs/benchmarks.md).
//!
//! ```text
//! gated_pipeline [--steps N] [--gpu-us U] [--sweep F,F,...] [--host-us H,H,...] [--depth D]
//!                [--len N] [--gate driver|fused] [--svg FILE] [--json FILE]
//! ```
//!
//! Step `s` launches one kernel (`produce`, demo/kernels/gated_pipeline.cu) that writes a small
//! vector derived from `s` and the host's value of step `s - D` into mapped pinned memory, then
//! spins for `--gpu-us` of GPU time (the stand-in for real work of a known length). The host reads
//! the vector and computes its value (`ferrocuda_demo::host_value`: a hash loop calibrated to the
//! host-work length). The strategies:
//!
//! * `sync`: launch step `s`, `synchronize`, compute the value on the calling thread. The usual
//!   first version of such a loop; the GPU waits while the host computes and vice versa.
//! * `hostfunc`: everything enqueued; the value is computed inside the stream by a blocking host
//!   callback (`enqueue_host_func`), which holds the stream while it runs.
//! * `flag`: the value of step `s` is computed on a trampoline worker
//!   (`enqueue_async_host_func`), which signals a `CompletionFlag`; step `s + D` waits for it with
//!   `wait_for_host_value_ge`. The stream is never held by host work, so the host computes step
//!   `s`'s value while the GPU runs steps `s+1 .. s+D-1`.
//! * `flag+fused` (with `--gate fused`): as `flag`, but step `s + D` waits for the flag inside its
//!   own kernel (`produce_gated`, which calls `ferrocuda::wait_flag` of
//!   `crates/kernels/cuda/include/ferrocuda/gate.cuh`): no driver wait in the stream, and the
//!   kernel starts its work sooner after the signal than behind a driver wait (docs/gates.md;
//!   measured figures in docs/hardware-facts.md). The GPU idle column then counts the wait as
//!   busy (it is inside the kernel, between its timing events).
//! * `gpuwrite`: as `flag`, but with no host function in the stream at all: after step `s`'s
//!   kernel the stream writes `s` to a `ready` flag (`write_host_value`), and `D` host threads of
//!   the demo, each owning the steps of one residue mod `D`, spin on it, compute, and signal the
//!   step's flag. A host function holds the stream from the moment it is reached until the
//!   callback returns (docs/hardware-facts.md has what that costs), once per step; a stream write
//!   does not.
//!
//! For each host-work length it prints steps/s, the GPU idle fraction (`1 - busy/total` from
//! timing events around every kernel: busy is the sum of the kernels' durations, total the time
//! from the first kernel's start to the last one's end), the speed-up over `sync` and the host
//! work per step as measured (it may drift from the calibrated length with clocks), then writes
//! an SVG plot of steps/s against host-work length. On a machine without a GPU it says so in one
//! line and exits with status 2; a mismatch between strategies exits with status 1.

use ferrocuda_demo::{HostWork, Series, host_value, idle_fraction, reference_chain, svg_plot};
use ferrocuda_driver::{
    CompletionFlag, Device, DeviceEvent, DeviceStream, Function, HostBuffer, LaunchArgs,
    LaunchConfig, Module,
};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const PTX: &str = include_str!("../kernels/gated_pipeline.ptx");

/// Steps enqueued ahead of the slowest completed one (hostfunc and flag strategies): plenty to
/// keep the GPU fed, and a bound on what is in flight.
const WINDOW: u64 = 64;

/// No step may take this long: a stuck pipeline is reported, never waited on forever.
const DEADLINE: Duration = Duration::from_secs(60);

/// Which gates run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Gate {
    /// The four strategies.
    Driver,
    /// Also `flag+fused`, whose kernel waits for the flag itself (ferrocuda/gate.cuh).
    Fused,
}

/// The gated-pipeline demo: host work gating GPU work, compared across strategies.
#[derive(Debug, clap::Parser)]
#[command(name = "gated_pipeline", version, about)]
struct Cli {
    /// Steps per strategy and host-work length.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// GPU work per step, µs.
    #[arg(
        long = "gpu-us",
        default_value_t = 500.0,
        allow_negative_numbers = true
    )]
    gpu_us: f64,
    /// Host-work lengths as multiples of the GPU step.
    #[arg(long, value_delimiter = ',', default_values_t = [0.25, 0.5, 1.0, 2.0])]
    sweep: Vec<f64>,
    /// Host-work lengths in µs (instead of --sweep).
    #[arg(long = "host-us", value_delimiter = ',', allow_negative_numbers = true)]
    host_us: Vec<f64>,
    /// Step s consumes the host value of step s - D (overlap needs D >= 2).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    depth: u64,
    /// Words the kernel writes per step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    len: u32,
    /// Which gates run.
    #[arg(long, value_enum, default_value_t = Gate::Driver)]
    gate: Gate,
    /// The plot of steps/s against host-work length.
    #[arg(long, default_value = "gated_pipeline.svg")]
    svg: PathBuf,
    /// One JSON line per strategy and host-work length.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone)]
struct Opts {
    steps: u64,
    gpu_us: f64,
    /// Host-work lengths in µs.
    host_us: Vec<f64>,
    depth: u64,
    len: u32,
    /// Also run `flag+fused` (`--gate fused`).
    fused: bool,
    svg: PathBuf,
    json: Option<PathBuf>,
    /// Also run `device-loop` (where the device and driver have the gated device loop).
    device_loop: bool,
}

impl Cli {
    /// The options, with the checks clap cannot express.
    fn into_opts(self) -> Result<Opts> {
        if !(self.gpu_us.is_finite() && self.gpu_us >= 0.0) {
            return Err("--gpu-us must be >= 0".into());
        }
        let host_us = if self.host_us.is_empty() {
            self.sweep.iter().map(|f| f * self.gpu_us).collect()
        } else {
            self.host_us
        };
        if host_us.iter().any(|h| !(h.is_finite() && *h >= 0.0)) {
            return Err("host-work lengths must be >= 0".into());
        }
        Ok(Opts {
            steps: self.steps,
            gpu_us: self.gpu_us,
            host_us,
            depth: self.depth,
            len: self.len,
            fused: self.gate == Gate::Fused,
            svg: self.svg,
            json: self.json,
            device_loop: true,
        })
    }
}

/// Mapped pinned memory the kernels write their vectors to and read the host's values from:
/// `vectors[s]` (`len` words each) and `values[s]` for every step `s` of a run, so no slot is ever
/// reused within a run (no write-after-read hazards to reason about).
struct Shared {
    _vectors: HostBuffer<u64>,
    _values: HostBuffer<u64>,
    vec_ptr: *mut u64,
    val_ptr: *mut u64,
    vec_dev: u64,
    val_dev: u64,
    len: usize,
    steps: u64,
    /// Host values computed so far in the current run (progress and throttling).
    done: AtomicU64,
    /// Nanoseconds spent in `host_value` in the current run (the host work actually done).
    host_ns: AtomicU64,
}

// SAFETY: the pointers address pinned memory owned by the buffers in the same struct. Each
// `values[s]` is written by exactly one host job (step `s`'s) before the event that lets the GPU
// read it (the end of `synchronize`, the stream order after a blocking host function, or the
// release-ordered flag signal after a trampoline closure); each `vectors[s]` is read by that job
// only after the kernel that wrote it completed (same orderings).
unsafe impl Send for Shared {}
// SAFETY: as above; concurrent jobs touch disjoint slots.
unsafe impl Sync for Shared {}

impl Shared {
    fn new(dev: &Device, steps: u64, len: u32) -> Result<Shared> {
        let len = len as usize;
        let mut vectors = HostBuffer::<u64>::new(dev, (steps as usize + 1) * len)?;
        let mut values = HostBuffer::<u64>::new(dev, steps as usize + 1)?;
        Ok(Shared {
            vec_ptr: vectors.as_mut_slice()?.as_mut_ptr(),
            val_ptr: values.as_mut_slice()?.as_mut_ptr(),
            vec_dev: vectors.device_ptr(),
            val_dev: values.device_ptr(),
            _vectors: vectors,
            _values: values,
            len,
            steps,
            done: AtomicU64::new(0),
            host_ns: AtomicU64::new(0),
        })
    }

    /// Zeroes the values before a run (no GPU work may be in flight).
    fn clear(&self) {
        for s in 0..=self.steps as usize {
            // SAFETY: in bounds; nothing else touches the memory between runs.
            unsafe { self.val_ptr.add(s).write_volatile(0) };
        }
        self.done.store(0, Ordering::Relaxed);
        self.host_ns.store(0, Ordering::Relaxed);
    }

    /// The host's job for step `s`: read the GPU's vector, compute the value, publish it.
    fn host_step(&self, s: u64, iterations: u64) {
        // SAFETY: the kernel of step `s` completed before this job started (see `impl Send`);
        // nothing writes this slot again during the run.
        let v = unsafe {
            std::slice::from_raw_parts(self.vec_ptr.add(s as usize * self.len), self.len)
        };
        let t = Instant::now();
        let h = host_value(v, iterations);
        self.host_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        // SAFETY: in bounds (s <= steps); only this job writes the slot.
        unsafe { self.val_ptr.add(s as usize).write_volatile(h) };
        self.done.fetch_add(1, Ordering::Release);
    }

    fn values(&self) -> Vec<u64> {
        (0..=self.steps as usize)
            // SAFETY: in bounds; the run is over (the stream was synchronized).
            .map(|s| unsafe { self.val_ptr.add(s).read_volatile() })
            .collect()
    }
}

struct Gpu {
    dev: Device,
    stream: DeviceStream,
    _module: Module,
    produce: Function,
    /// `produce` behind a fused gate (`flag+fused`).
    produce_gated: Function,
    /// `None` where the module lacks it (the fake driver of `cargo xtask demo --smoke`).
    produce_loop: Option<Function>,
    /// Fused gates that gave up after [`DEADLINE`] add 1 here.
    expired: CompletionFlag,
    shared: Arc<Shared>,
    /// (start, end) timing events around each step's kernel.
    events: Vec<(DeviceEvent, DeviceEvent)>,
    gpu_ns: u64,
    depth: u64,
    len: u32,
}

/// What one strategy did at one host-work length.
struct Outcome {
    steps_per_s: f64,
    idle: f64,
    /// Mean host work per step as measured (the calibration's target may drift with clocks).
    host_us: f64,
    values: Vec<u64>,
}

#[derive(Clone, Copy, PartialEq)]
enum Strategy {
    Sync,
    HostFunc,
    Flag,
    GpuWrite,
    /// `flag` with the wait fused into the kernel (`--gate fused`).
    FlagFused,
    /// One launch of a gated device loop runs every step.
    DeviceLoop,
}

impl Strategy {
    const ALL: [Strategy; 5] = [
        Strategy::Sync,
        Strategy::HostFunc,
        Strategy::Flag,
        Strategy::GpuWrite,
        Strategy::DeviceLoop,
    ];

    /// The strategies a run with these options compares.
    fn chosen(o: &Opts) -> Vec<Strategy> {
        let mut v = Strategy::ALL.to_vec();
        if !o.device_loop {
            v.retain(|&s| s != Strategy::DeviceLoop);
        }
        if o.fused {
            v.push(Strategy::FlagFused);
        }
        v
    }

    fn name(self) -> &'static str {
        match self {
            Strategy::Sync => "sync",
            Strategy::HostFunc => "hostfunc",
            Strategy::Flag => "flag",
            Strategy::GpuWrite => "gpuwrite",
            Strategy::FlagFused => "flag+fused",
            Strategy::DeviceLoop => "device-loop",
        }
    }

    fn color(self) -> &'static str {
        match self {
            Strategy::Sync => "#d62728",
            Strategy::HostFunc => "#ff7f0e",
            Strategy::Flag => "#2ca02c",
            Strategy::GpuWrite => "#1f77b4",
            Strategy::FlagFused => "#9467bd",
            Strategy::DeviceLoop => "#8c564b",
        }
    }
}

impl Gpu {
    fn new(o: &Opts) -> Result<Gpu> {
        let dev = Device::new(0)?;
        // Modules load before any stream waits on a host value: the driver blocks a load behind one
        // (docs/hardware-facts.md).
        let module = Module::from_ptx(&dev, PTX)?;
        let events = (0..o.steps)
            .map(|_| Ok((DeviceEvent::new(&dev, true)?, DeviceEvent::new(&dev, true)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Gpu {
            stream: dev.new_stream()?,
            produce: module.function("produce")?,
            produce_gated: module.function("produce_gated")?,
            produce_loop: module.function("produce_loop").ok(),
            expired: CompletionFlag::new(&dev)?,
            _module: module,
            shared: Arc::new(Shared::new(&dev, o.steps, o.len)?),
            events,
            gpu_ns: (o.gpu_us * 1e3).round() as u64,
            depth: o.depth,
            len: o.len,
            dev,
        })
    }

    /// Enqueues step `s`'s kernel between its timing events; with `gate = Some((flag, k))` the
    /// kernel is `produce_gated`, which waits for `flag >= k` in its prologue.
    fn launch(&self, s: u64, gate: Option<(&CompletionFlag, u64)>) -> Result<()> {
        let sh = &self.shared;
        let out = sh.vec_dev + s * self.len as u64 * 8;
        let prev = sh.val_dev + s.saturating_sub(self.depth) * 8;
        let (start, end) = &self.events[s as usize - 1];
        let cfg = LaunchConfig {
            grid: (1, 1, 1),
            block: (self.len.min(256), 1, 1),
            shared_mem_bytes: 0,
            cluster: None,
        };
        self.stream.record_event(start)?;
        let mut args = LaunchArgs::new();
        args.arg(&out)
            .arg(&self.len)
            .arg(&s)
            .arg(&prev)
            .arg(&self.gpu_ns);
        match gate {
            None => {
                // SAFETY: produce(u64* out, u32 n, u64 step, const volatile u64* prev,
                // u64 work_ns); `out` has `len` words and `prev` one, both in mapped pinned memory
                // alive for the whole run.
                unsafe { self.stream.launch(&self.produce, cfg, &mut args)? };
            }
            Some((flag, k)) => {
                let (flag, expired) = (flag.as_flag_ref(), self.expired.as_flag_ref());
                let timeout_ns = DEADLINE.as_nanos() as u64;
                args.arg(&flag).arg(&k).arg(&timeout_ns).arg(&expired);
                // SAFETY: produce_gated(u64* out, u32 n, u64 step, const volatile u64* prev,
                // u64 work_ns, const u64* flag, u64 wait_value, u64 timeout_ns, u64* expired):
                // the first five as for `produce`; the flag and the counter are mapped pinned
                // slots of live CompletionFlags (a dropped flag's slot is recycled only after the
                // GPU is past the work enqueued so far).
                unsafe { self.stream.launch(&self.produce_gated, cfg, &mut args)? };
            }
        }
        self.stream.record_event(end)?;
        Ok(())
    }

    /// Waits until at most `ahead` steps are enqueued past the last completed host job.
    fn throttle(&self, s: u64, ahead: u64, progress: &mut Progress) -> Result<()> {
        let t = Instant::now();
        loop {
            let done = self.shared.done.load(Ordering::Acquire);
            progress.show(done);
            if s <= done + ahead {
                return Ok(());
            }
            if t.elapsed() > DEADLINE {
                return Err(format!("step {s}: no progress in {DEADLINE:?}").into());
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Runs `steps` steps as one launch of a gated device loop.
    fn run_device_loop(&self, steps: u64, iterations: u64) -> Result<Outcome> {
        let Some(produce_loop) = &self.produce_loop else {
            return Err("device-loop: the module has no produce_loop kernel".into());
        };
        self.shared.clear();
        let sh = self.shared.clone();
        let mut g = ferrocuda_graph::Graph::new(&self.dev)?;
        let (vec_dev, val_dev) = (self.shared.vec_dev, self.shared.val_dev);
        let (len, depth, last, gpu_ns) = (self.len, self.depth, steps, self.gpu_ns);
        let cfg = LaunchConfig {
            grid: (1, 1, 1),
            block: (self.len.min(256), 1, 1),
            shared_mem_bytes: 0,
            cluster: None,
        };
        // Iteration i computes the value of step i - 1, then produces step i: steps + 1 of them.
        let limits = ferrocuda_graph::LoopLimits::steps(steps + 1).with_time_limit(DEADLINE);
        let (_, lp) = g.gated_loop(
            limits,
            &[],
            move |i| {
                if i >= 2 {
                    sh.host_step(i - 1, iterations);
                }
            },
            |b, gate, lp| {
                let mut args = LaunchArgs::new();
                args.arg(&vec_dev)
                    .arg(&len)
                    .arg(lp.state())
                    .arg(&val_dev)
                    .arg(&depth)
                    .arg(&last)
                    .arg(&gpu_ns);
                // SAFETY: produce_loop(u64* vectors, u32 n, const u64* state, const volatile u64*
                // values, u64 depth, u64 last, u64 work_ns): the step read from the loop's state
                // is at most `last`, so `vectors` (steps + 1 vectors of `len` words) and `values`
                // (steps + 1 words) are in bounds; both are mapped pinned memory owned by `Shared`,
                // which the graph owns below.
                unsafe { b.kernel(produce_loop, cfg, &mut args, &[gate]) }?;
                b.own(self.shared.clone());
                Ok(())
            },
        )?;
        let exec = g.instantiate()?;
        let (start, end) = &self.events[0];
        let t0 = Instant::now();
        self.stream.record_event(start)?;
        exec.launch(&self.stream)?;
        self.stream.record_event(end)?;
        let out = lp.wait(DEADLINE)?;
        exec.synchronize(&self.stream)?;
        let wall = t0.elapsed().as_secs_f64();
        if out.end != ferrocuda_driver::LoopEnd::Completed || out.steps != steps + 1 {
            return Err(format!("device-loop: the launch ended {out:?}").into());
        }
        let total_ms = f64::from(start.elapsed_time(end)?);
        let busy_ms = steps as f64 * self.gpu_ns as f64 / 1e6;
        let mut values = self.shared.values();
        values.truncate(steps as usize + 1);
        Ok(Outcome {
            steps_per_s: steps as f64 / wall,
            idle: idle_fraction(busy_ms, total_ms),
            host_us: self.shared.host_ns.load(Ordering::Relaxed) as f64 / 1e3 / steps as f64,
            values,
        })
    }

    /// Runs `steps` steps of `strategy`; `show` draws a progress counter.
    fn run(&self, strategy: Strategy, steps: u64, iterations: u64, show: bool) -> Result<Outcome> {
        if strategy == Strategy::DeviceLoop {
            return self.run_device_loop(steps, iterations);
        }
        self.shared.clear();
        let mut progress = Progress::new(strategy.name(), steps, show);
        // flags[r]: the host values of the steps s = r (mod D) are ready up to flags[r].
        let flags = (0..self.depth)
            .map(|_| CompletionFlag::new(&self.dev))
            .collect::<Result<Vec<_>, _>>()?;
        // gpuwrite: the GPU's vectors are ready up to `ready`.
        let ready = CompletionFlag::new(&self.dev)?;
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        let enqueued = std::thread::scope(|scope| {
            if strategy == Strategy::GpuWrite {
                for r in 0..self.depth {
                    let (flags, ready, stop, sh) = (&flags, &ready, &stop, &self.shared);
                    let depth = self.depth;
                    scope.spawn(move || {
                        // Worker r computes the values of the steps s = r (mod D), in order.
                        let first = if r == 0 { depth } else { r };
                        for s in (first..=steps).step_by(depth as usize) {
                            let mut spins = 0u32;
                            while ready.load() < s {
                                if stop.load(Ordering::Acquire) {
                                    return;
                                }
                                spins = spins.wrapping_add(1);
                                if spins.is_multiple_of(1024) {
                                    std::thread::yield_now(); // shared machines, small CI boxes
                                }
                                std::hint::spin_loop();
                            }
                            sh.host_step(s, iterations);
                            flags[(s % depth) as usize].signal(s);
                        }
                    });
                }
            }
            let r = self.enqueue(strategy, steps, iterations, &flags, &ready, &mut progress);
            if r.is_err() {
                // Release the workers and every GPU wait, so nothing is left hanging.
                stop.store(true, Ordering::Release);
                flags.iter().for_each(CompletionFlag::abort);
            }
            r
        });
        enqueued?;
        let wall = t0.elapsed().as_secs_f64();
        if self.expired.load() != 0 {
            return Err(format!(
                "{}: a fused gate waited {DEADLINE:?} in vain",
                strategy.name()
            )
            .into());
        }
        progress.finish();

        let mut busy_ms = 0.0;
        for (start, end) in &self.events[..steps as usize] {
            busy_ms += f64::from(start.elapsed_time(end)?);
        }
        let total_ms = f64::from(
            self.events[0]
                .0
                .elapsed_time(&self.events[steps as usize - 1].1)?,
        );
        let mut values = self.shared.values();
        values.truncate(steps as usize + 1);
        Ok(Outcome {
            steps_per_s: steps as f64 / wall,
            idle: idle_fraction(busy_ms, total_ms),
            host_us: self.shared.host_ns.load(Ordering::Relaxed) as f64 / 1e3 / steps as f64,
            values,
        })
    }

    /// Enqueues every step of `strategy` and returns once the last host value was computed and
    /// the stream is idle.
    fn enqueue(
        &self,
        strategy: Strategy,
        steps: u64,
        iterations: u64,
        flags: &[CompletionFlag],
        ready: &CompletionFlag,
        progress: &mut Progress,
    ) -> Result<()> {
        let d = self.depth;
        for s in 1..=steps {
            match strategy {
                Strategy::Sync => {
                    self.launch(s, None)?;
                    self.stream.synchronize_timeout(DEADLINE)?;
                    self.shared.host_step(s, iterations);
                    progress.show(s);
                }
                Strategy::HostFunc => {
                    self.throttle(s, WINDOW, progress)?;
                    self.launch(s, None)?;
                    let sh = self.shared.clone();
                    self.stream
                        .enqueue_host_func(move || sh.host_step(s, iterations))?;
                }
                Strategy::DeviceLoop => {
                    return Err("the device loop is not enqueued per step".into());
                }
                Strategy::Flag | Strategy::GpuWrite | Strategy::FlagFused => {
                    self.throttle(s, WINDOW, progress)?;
                    // Step s consumes value s - D: wait for the job that computes it. One flag
                    // per residue mod D keeps each flag's values increasing although jobs run
                    // concurrently: job k + D starts only after the kernel that waited for job
                    // k's signal.
                    let gate = (s > d).then(|| (&flags[((s - d) % d) as usize], s - d));
                    match gate {
                        Some((flag, k)) if strategy != Strategy::FlagFused => {
                            self.stream.wait_for_host_value_ge(flag, k)?;
                            self.launch(s, None)?;
                        }
                        gate => self.launch(s, gate)?,
                    }
                    if strategy != Strategy::GpuWrite {
                        let sh = self.shared.clone();
                        self.stream.enqueue_async_host_func(
                            &flags[(s % d) as usize],
                            s,
                            move || sh.host_step(s, iterations),
                        )?;
                    } else {
                        self.stream.write_host_value(ready, s)?;
                    }
                }
            }
        }
        // The last host jobs run after the stream passed their kickoff.
        self.throttle(steps, 0, progress)?;
        self.stream.synchronize_timeout(DEADLINE)?;
        Ok(())
    }
}

/// A per-strategy progress bar on stderr: drawn only where stderr is a terminal (indicatif hides
/// it otherwise), so logs of runs get no carriage-return lines.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(name: &'static str, total: u64, on: bool) -> Progress {
        Progress(on.then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "  {prefix:<9} {pos:>6}/{len} steps {bar:30}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_prefix(name);
            bar
        }))
    }

    fn show(&mut self, done: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(done);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

fn main() {
    let o = match <Cli as clap::Parser>::parse().into_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gated_pipeline: {e}");
            std::process::exit(2);
        }
    };
    match Device::count() {
        Ok(n) if n > 0 => {}
        Ok(_) => no_gpu("the driver reports no device"),
        Err(e) => no_gpu(&e.to_string()),
    }
    match run(&o) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("gated_pipeline: {e}");
            std::process::exit(1);
        }
    }
}

fn no_gpu(why: &str) -> ! {
    eprintln!(
        "gated_pipeline: no CUDA GPU on this machine ({why}); run the bundle on a GPU machine"
    );
    std::process::exit(2)
}

/// Runs every strategy at every host-work length; `Ok(false)` if some results differ.
fn run(o: &Opts) -> Result<bool> {
    let gpu = Gpu::new(o)?;
    // The gated device loop needs conditional graph nodes and the crate's loop kernels (the fake
    // driver of the smoke run has neither): the strategy runs where they are.
    let probe = match &gpu.produce_loop {
        Some(_) => ferrocuda_driver::LoopKickoff::new(&gpu.dev, |_| {}).map(drop),
        None => Err(ferrocuda_driver::Error::InvalidArgument(
            "the demo's module has no produce_loop kernel".into(),
        )),
    };
    if let Err(e) = &probe {
        println!("device-loop: not run here ({e})");
    }
    let o = &Opts {
        device_loop: probe.is_ok(),
        ..o.clone()
    };
    let hw = HostWork::calibrate();
    println!(
        "gated pipeline on {} (driver {}): {} steps, GPU step {} µs, depth {}, {} words a step; host hash {:.0} rounds/µs",
        gpu.dev.name(),
        Device::driver_version()?,
        o.steps,
        o.gpu_us,
        o.depth,
        o.len,
        hw.per_us
    );
    // Warm-up: JIT, trampoline workers, first-use costs; its results are checked but not reported.
    let warm = o.steps.min(100);
    let it0 = hw.iterations(o.host_us[0]);
    let reference = reference_chain(warm, o.depth, o.len, it0);
    for st in Strategy::chosen(o) {
        if gpu.run(st, warm, it0, false)?.values != reference {
            eprintln!(
                "gated_pipeline: warm-up: {} computed other values than the CPU",
                st.name()
            );
            return Ok(false);
        }
    }

    let mut json = match &o.json {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let mut all_equal = true;
    let mut series: Vec<Series> = Strategy::chosen(o)
        .iter()
        .map(|s| Series {
            name: s.name().into(),
            color: s.color(),
            points: vec![],
        })
        .collect();
    // (speed-up of flag over sync, flag's idle) at host work == GPU step, for the target line.
    let mut at_equal = None;
    for &host_us in &o.host_us {
        let iterations = hw.iterations(host_us);
        println!(
            "\nhost work {host_us:.0} µs ({:.2}× the GPU step)",
            host_us / o.gpu_us.max(1e-9)
        );
        println!(
            "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9}  check",
            "strategy", "steps/s", "µs/step", "GPU idle", "speed-up", "host µs"
        );
        let reference = reference_chain(o.steps, o.depth, o.len, iterations);
        let mut sync_rate = f64::NAN;
        for (i, st) in Strategy::chosen(o).into_iter().enumerate() {
            let out = gpu.run(st, o.steps, iterations, true)?;
            if st == Strategy::Sync {
                sync_rate = out.steps_per_s;
            }
            let ok = out.values == reference;
            all_equal &= ok;
            let speedup = out.steps_per_s / sync_rate;
            println!(
                "  {:<10} {:>9.0} {:>9.1} {:>8.1}% {:>8.2}× {:>9.1}  {}",
                st.name(),
                out.steps_per_s,
                1e6 / out.steps_per_s,
                out.idle * 100.0,
                speedup,
                out.host_us,
                if ok { "ok" } else { "MISMATCH" }
            );
            series[i].points.push((host_us, out.steps_per_s));
            if st == Strategy::Flag && (host_us - o.gpu_us).abs() < 1e-9 {
                at_equal = Some((speedup, out.idle));
            }
            if let Some(f) = &mut json {
                writeln!(
                    f,
                    "{{\"strategy\":\"{}\",\"host_us\":{host_us},\"gpu_us\":{},\"steps\":{},\"depth\":{},\"steps_per_s\":{:.1},\"gpu_idle\":{:.4},\"host_us_measured\":{:.2},\"speedup_vs_sync\":{speedup:.3},\"equal\":{ok},\"gpu\":\"{}\"}}",
                    st.name(),
                    o.gpu_us,
                    o.steps,
                    o.depth,
                    out.steps_per_s,
                    out.idle,
                    out.host_us,
                    gpu.dev.name()
                )?;
            }
        }
    }

    let title = format!(
        "gated pipeline on {}: GPU step {} µs, depth {}",
        gpu.dev.name(),
        o.gpu_us,
        o.depth
    );
    std::fs::write(
        &o.svg,
        svg_plot(&title, "host work per step (µs)", "steps/s", &series),
    )
    .map_err(|e| format!("{}: {e}", o.svg.display()))?;
    println!("\nplot: {}", o.svg.display());
    if let Some((speedup, idle)) = at_equal {
        println!(
            "targets at host work = GPU step: flag/sync {speedup:.2}× (≥ 1.5×: {}), flag GPU idle {:.1}% (≤ 10%: {})",
            if speedup >= 1.5 { "met" } else { "NOT met" },
            idle * 100.0,
            if idle <= 0.10 { "met" } else { "NOT met" }
        );
    }
    println!(
        "results: {}",
        if all_equal {
            "every strategy computed the CPU's values"
        } else {
            "MISMATCH (see the check column)"
        }
    );
    Ok(all_equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn opts(args: &[&str]) -> std::result::Result<Opts, String> {
        let argv = std::iter::once("gated_pipeline").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())
            .and_then(|c| c.into_opts().map_err(|e| e.to_string()))
    }

    #[test]
    fn defaults_sweep_multiples_of_the_gpu_step() {
        let o = opts(&[]).unwrap();
        assert_eq!((o.steps, o.depth, o.len, o.fused), (1000, 3, 64, false));
        assert_eq!(o.host_us, [125.0, 250.0, 500.0, 1000.0]);
        let o = opts(&["--gpu-us", "100", "--sweep", "1,3"]).unwrap();
        assert_eq!(o.host_us, [100.0, 300.0]);
        let o = opts(&["--host-us", "7,8", "--gate", "fused", "--json", "x.json"]).unwrap();
        assert_eq!(o.host_us, [7.0, 8.0]);
        assert!(o.fused);
        assert_eq!(o.json.as_deref(), Some(std::path::Path::new("x.json")));
    }

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        for (args, says) in [
            (&["--steps", "0"][..], "--steps"),
            (&["--depth", "0"][..], "--depth"),
            (&["--len", "1025"][..], "--len"),
            (&["--gate", "bogus"][..], "bogus"),
            (&["--gpu-us", "-1"][..], "--gpu-us"),
            (&["--host-us", "1,-2"][..], "host-work"),
            (&["--frobnicate"][..], "frobnicate"),
        ] {
            match opts(args) {
                Ok(_) => panic!("{args:?} was accepted"),
                Err(e) => assert!(e.contains(says), "{args:?}: {e}"),
            }
        }
    }
}
