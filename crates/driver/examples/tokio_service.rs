//! A tokio service whose jobs each take about a millisecond of GPU time: 10,000 jobs, 8 in flight
//! (one per stream), each awaiting a flag its stream writes when the job's work is done. It prints
//! the per-job latency (submit → the task woken with the result) for each way the crate's waiter
//! thread can be set to wake futures, and what the waiter's thread cost in CPU.
//!
//! ```sh
//! cargo run --release -p ferrocuda-driver --example tokio_service [-- JOBS]
//! ```
//!
//! The wake-up modes (docs/async.md has the mechanism and the measurements):
//!
//! * `default`: the waiter spins for `waiter_spin()` (100 µs) after anything happens, then sleeps
//!   between checks, and spins around the predicted end of a wait whose length repeats;
//! * `no spin window`: `set_waiter_spin(Duration::ZERO)`: only the predicted spin;
//! * `always spinning`: `set_waiter_spin(Duration::MAX)`: a core spins while a future is pending.
//!
//! Each mode runs the jobs twice: every job 1 ms of GPU time, then jobs of 0.5–1.5 ms (a wait whose
//! length does not repeat). Per-job latency minus the job's own GPU time is the price of the wake.
//! The GPU test `tests/gpu_async.rs` runs [`run`] with fewer jobs and checks its results.

use ferrocuda_driver::{
    CompletionFlag, Device, DeviceStream, Error, Function, LaunchArgs, LaunchConfig, Module,
    Result, WaitCondition,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The test kernels: `spin_ns(u64 ns)` keeps one thread busy for `ns` nanoseconds.
const PTX: &str = include_str!("../tests/kernels/test_kernels.ptx");
/// Jobs in flight: one per stream.
const STREAMS: usize = 8;

/// Per-job latency percentiles of one mode and job-length pattern.
#[derive(Debug)]
pub struct Row {
    /// The wake-up mode.
    pub mode: &'static str,
    /// Whether job lengths varied (0.5–1.5 ms) or were all 1 ms.
    pub jittered: bool,
    /// Latency minus GPU time, in µs: p50, p90, p99, max.
    pub wake_us: [f64; 4],
    /// The waiter thread's CPU time over the run, in % of one core.
    pub waiter_cpu_pct: f64,
}

/// The GPU time of job `id`, in ns.
fn gpu_ns(id: u64, jittered: bool) -> u64 {
    if !jittered {
        return 1_000_000;
    }
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    500_000 + x % 1_000_000
}

/// CPU time (ns, from 10 ms clock ticks) of the crate's waiter thread.
fn waiter_cpu_ns() -> u64 {
    ferrocuda_test_support::thread_cpu_ticks("ferrocuda-waite") * 10_000_000
}

/// One job: `ns` of GPU time on `stream`, then the stream writes `value` into `done`; the task
/// awaits it. Returns the latency from submit to the task woken.
async fn job(
    stream: &DeviceStream,
    spin: &Function,
    done: &CompletionFlag,
    value: u64,
    ns: u64,
) -> Result<Duration> {
    let t0 = Instant::now();
    // SAFETY: spin_ns(u64 ns) takes exactly this parameter and touches no memory.
    unsafe {
        stream.launch(
            spin,
            LaunchConfig::single_thread(),
            LaunchArgs::new().arg(&ns),
        )
    }?;
    stream.write_host_value(done, value)?;
    let seen = done
        .wait_async(WaitCondition::GreaterOrEqual, value)
        .await?;
    if seen != value {
        return Err(Error::InvalidArgument(format!(
            "job {value}: the flag holds {seen}"
        )));
    }
    Ok(t0.elapsed())
}

/// Runs `jobs` jobs in each mode and pattern on the current tokio runtime; every job's flag value
/// is checked. Restores the waiter's spin window afterwards.
///
/// # Errors
///
/// The first job's error.
pub async fn run(device: &Device, jobs: usize) -> Result<Vec<Row>> {
    // Load the module before anything can wait on the GPU (docs/deadlocks.md).
    let module = Module::from_ptx(device, PTX)?;
    let spin = Arc::new(module.function("spin_ns")?);
    let streams: Vec<DeviceStream> = (0..STREAMS)
        .map(|_| device.new_stream())
        .collect::<Result<_>>()?;
    let default_spin = ferrocuda_driver::waiter_spin();
    let modes = [
        ("default", default_spin),
        ("no spin window", Duration::ZERO),
        ("always spinning", Duration::MAX),
    ];
    let mut rows = Vec::new();
    for (mode, window) in modes {
        ferrocuda_driver::set_waiter_spin(window);
        for jittered in [false, true] {
            let (c0, t0) = (waiter_cpu_ns(), Instant::now());
            // One task per stream, each running its share of the jobs one after another.
            let tasks: Vec<_> = streams
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    let (s, spin) = (s.clone(), spin.clone());
                    let done = CompletionFlag::new(device);
                    tokio::spawn(async move {
                        let done = done?;
                        let mut lat = Vec::new();
                        for i in (k..jobs).step_by(STREAMS) {
                            let ns = gpu_ns(i as u64, jittered);
                            let l = job(&s, &spin, &done, i as u64 + 1, ns).await?;
                            lat.push(l.as_secs_f64() * 1e6 - ns as f64 / 1e3);
                        }
                        Ok::<_, Error>(lat)
                    })
                })
                .collect();
            let mut wake = Vec::with_capacity(jobs);
            for t in tasks {
                wake.extend(
                    t.await
                        .map_err(|e| Error::InvalidArgument(format!("a task failed: {e}")))??,
                );
            }
            let cpu = (waiter_cpu_ns() - c0) as f64 * 100.0 / t0.elapsed().as_nanos() as f64;
            wake.sort_by(f64::total_cmp);
            let p = |q: f64| wake[((wake.len() - 1) as f64 * q).round() as usize];
            rows.push(Row {
                mode,
                jittered,
                wake_us: [p(0.5), p(0.9), p(0.99), p(1.0)],
                waiter_cpu_pct: cpu,
            });
        }
    }
    ferrocuda_driver::set_waiter_spin(default_spin);
    for s in &streams {
        s.synchronize()?;
    }
    Ok(rows)
}

#[allow(dead_code)] // also compiled into tests/gpu_async.rs, which calls `run` only
fn main() -> Result<()> {
    let jobs = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidArgument(format!("tokio runtime: {e}")))?;
    let device = Device::new(0)?;
    let rows = rt.block_on(run(&device, jobs))?;
    println!("{jobs} jobs, {STREAMS} in flight; latency beyond the job's GPU time (µs):");
    println!(
        "{:<16} {:<12} {:>8} {:>8} {:>8} {:>9} {:>11}",
        "mode", "job length", "p50", "p90", "p99", "max", "waiter CPU"
    );
    for r in rows {
        println!(
            "{:<16} {:<12} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>10.1}%",
            r.mode,
            if r.jittered { "0.5-1.5 ms" } else { "1 ms" },
            r.wake_us[0],
            r.wake_us[1],
            r.wake_us[2],
            r.wake_us[3],
            r.waiter_cpu_pct
        );
    }
    Ok(())
}
