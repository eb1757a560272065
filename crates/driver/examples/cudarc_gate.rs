//! A cudarc program (its own context, stream, kernel and buffer) adds ferrocuda: a host-value gate
//! in front of its kernel and the async trampoline behind it, on cudarc's own stream.
//!
//! ```text
//! cargo run --release -p ferrocuda-driver --features cudarc --example cudarc_gate
//! ```
//!
//! The host produces each step's input while the GPU already has the step queued: the kernel of
//! step `s` waits until the host signals `s`, and after it a host job runs on a crate thread
//! without holding the stream. (`main` is `pub` so that the interop tests run this very file, on
//! the fake driver in `cargo xtask test` and on the GPU in the GPU bundle.)

use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use ferrocuda_driver::{CompletionFlag, DeviceStream, WaitCondition};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `add_u32(u32* x, u32 n, u32 v)`: `x[i] += v` (the driver's test kernels, as PTX).
const PTX: &str = include_str!("../tests/kernels/test_kernels.ptx");
const STEPS: u64 = 10;

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The cudarc program as it was.
    let ctx = CudaContext::new(0)?;
    let cu = ctx.new_stream()?;
    let add = ctx
        .load_module(Ptx::from_src(PTX))?
        .load_function("add_u32")?;
    let n = 1u32 << 20;
    let mut x = cu.alloc_zeros::<u32>(n as usize)?;

    // ferrocuda on the same stream: every step's kernel waits for the host's value `step`, and a
    // host job runs after it on the trampoline.
    let stream = DeviceStream::from_cudarc(&cu)?;
    let (input, done) = (
        CompletionFlag::new(stream.device())?,
        CompletionFlag::new(stream.device())?,
    );
    let finished = Arc::new(AtomicU64::new(0));
    for step in 1..=STEPS {
        stream.wait_for_host_value_ge(&input, step)?;
        let mut launch = cu.launch_builder(&add);
        launch.arg(&mut x).arg(&n).arg(&1u32);
        // SAFETY: add_u32(u32* x, u32 n, u32 v) takes these three parameters; `x` holds `n` values.
        unsafe { launch.launch(LaunchConfig::for_num_elems(n)) }?;
        let finished = finished.clone();
        stream.enqueue_async_host_func(&done, step, move || {
            finished.fetch_max(step, Ordering::SeqCst); // e.g. hand the step's result on
        })?;
    }
    // Every step is queued; the host now produces the inputs, one at a time.
    for step in 1..=STEPS {
        std::thread::sleep(Duration::from_millis(2)); // the host's work for `step`
        input.signal(step);
    }
    done.wait(
        WaitCondition::GreaterOrEqual,
        STEPS,
        Duration::from_secs(30),
    )?;

    let out = cu.clone_dtoh(&x)?;
    cu.synchronize()?;
    assert!(
        out.iter().all(|&v| v == STEPS as u32),
        "every step added 1 to every element"
    );
    assert_eq!(finished.load(Ordering::SeqCst), STEPS);
    println!("{STEPS} gated steps of a cudarc kernel on {n} elements: ok");
    Ok(())
}
