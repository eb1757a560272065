//! A tokio service on the GPU: 1,000 concurrent jobs over 4 streams, each awaiting its own event.
//!
//! Each job copies its input (4,096 `u32`) to the GPU, adds `id + 1` to every element with a
//! kernel, copies the result back into pinned memory, records an event and awaits it with
//! [`DeviceEvent::wait_async`]: the task sleeps, no runtime thread is blocked, and the crate's
//! waiter thread wakes it. Every result is checked; the throughput is printed.
//!
//! ```sh
//! cargo run --release -p ferrocuda-driver --example async_jobs [-- JOBS STREAMS]
//! ```
//!
//! The GPU test `tests/gpu_async.rs` runs [`serve`] and checks its results too.

use ferrocuda_driver::{
    Device, DeviceEvent, DeviceStream, Error, Function, HostBuffer, LaunchArgs, LaunchConfig,
    Module, Result,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The test kernels; `add_u32(u32* x, u32 n, u32 v)` adds `v` to the first `n` elements.
const PTX: &str = include_str!("../tests/kernels/test_kernels.ptx");
/// Elements per job.
const N: usize = 4096;

/// What a run did.
#[derive(Debug)]
pub struct Stats {
    /// Jobs served, each with its result checked.
    pub jobs: usize,
    /// First enqueue to last result checked.
    pub elapsed: Duration,
}

struct Server {
    device: Device,
    streams: Vec<DeviceStream>,
    add: Function,
    _module: Module,
}

/// The input of job `id` (different for every job and element).
fn input(id: u32) -> Vec<u32> {
    (0..N as u32)
        .map(|i| i.wrapping_mul(0x9E37_79B9) ^ id.rotate_left(7))
        .collect()
}

impl Server {
    async fn job(&self, id: u32) -> Result<()> {
        let s = &self.streams[id as usize % self.streams.len()];
        let data = input(id);
        let buf = s.clone_htod(&data)?;
        let (n, v) = (N as u32, id + 1);
        // SAFETY: add_u32(u32* x, u32 n, u32 v) touches x[0..n]; `buf` holds n elements and the
        // crate keeps it alive until the GPU is past the launch.
        unsafe {
            s.launch(
                &self.add,
                LaunchConfig::for_num_elems(n, 256),
                LaunchArgs::new().arg(&buf).arg(&n).arg(&v),
            )
        }?;
        let mut out = HostBuffer::<u32>::new(&self.device, N)?;
        s.copy_dtoh_async(&buf, &mut out)?;
        let done = DeviceEvent::new(&self.device, false)?;
        s.record_event(&done)?;
        done.wait_async().await?;
        let got = out.as_slice()?;
        for (i, (&g, &x)) in got.iter().zip(&data).enumerate() {
            if g != x.wrapping_add(v) {
                return Err(Error::InvalidArgument(format!(
                    "job {id}: element {i} is {g}, expected {}",
                    x.wrapping_add(v)
                )));
            }
        }
        Ok(())
    }
}

/// Serves `jobs` jobs over `streams` streams of `device`, all spawned at once on the current tokio
/// runtime, and checks every result.
///
/// # Errors
///
/// The first job's error (a driver failure or a wrong result).
pub async fn serve(device: &Device, jobs: usize, streams: usize) -> Result<Stats> {
    // Load the module before anything can wait on the GPU (docs/deadlocks.md).
    let module = Module::from_ptx(device, PTX)?;
    let server = Arc::new(Server {
        device: device.clone(),
        streams: (0..streams.max(1))
            .map(|_| device.new_stream())
            .collect::<Result<_>>()?,
        add: module.function("add_u32")?,
        _module: module,
    });
    let t = Instant::now();
    let handles: Vec<_> = (0..jobs as u32)
        .map(|id| {
            let server = server.clone();
            tokio::spawn(async move { server.job(id).await })
        })
        .collect();
    for h in handles {
        h.await
            .map_err(|e| Error::InvalidArgument(format!("a job task failed: {e}")))??;
    }
    Ok(Stats {
        jobs,
        elapsed: t.elapsed(),
    })
}

#[allow(dead_code)] // also compiled into tests/gpu_async.rs, which calls `serve` only
fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let jobs = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let streams = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidArgument(format!("tokio runtime: {e}")))?;
    let device = Device::new(0)?;
    // A first run warms up the driver, the stream-ordered pool and the threads; the second is timed.
    rt.block_on(serve(&device, jobs, streams))?;
    let s = rt.block_on(serve(&device, jobs, streams))?;
    println!(
        "{} jobs over {streams} streams: all results correct; {:.1} ms, {:.0} jobs/s, {:.1} µs per job",
        s.jobs,
        s.elapsed.as_secs_f64() * 1e3,
        s.jobs as f64 / s.elapsed.as_secs_f64(),
        s.elapsed.as_secs_f64() * 1e6 / s.jobs as f64
    );
    Ok(())
}
