//! A cust program (its own context, stream, kernel and buffer) adds ferrocuda: a host-value gate
//! in front of its kernel and the async trampoline behind it, on cust's own stream.
//!
//! ```text
//! cargo run --release -p ferrocuda-driver --features cust --example cust_gate
//! ```
//!
//! (cust links libcuda when it is built; see the crate docs, `# Features`.) The host produces each
//! step's input while the GPU already has the step queued: the kernel of step `s` waits until the
//! host signals `s`, and after it a host job runs on a crate thread without holding the stream.
//! (`main` is `pub` so that the interop tests run this very file, on the fake driver in `cargo
//! xtask test` and on the GPU in the GPU bundle.)

use cust::launch;
use cust::memory::{AsyncCopyDestination, DeviceBuffer};
use cust::module::Module;
use cust::stream::{Stream, StreamFlags};
use ferrocuda_driver::{CompletionFlag, DeviceStream, WaitCondition};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `add_u32(u32* x, u32 n, u32 v)`: `x[i] += v` (the driver's test kernels, as PTX).
const PTX: &str = include_str!("../tests/kernels/test_kernels.ptx");
const STEPS: u64 = 10;

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The cust program as it was.
    let _ctx = cust::quick_init()?;
    let module = Module::from_ptx(PTX, &[])?;
    let add = module.get_function("add_u32")?;
    let cu = Stream::new(StreamFlags::DEFAULT, None)?;
    let n = 1u32 << 20;
    // SAFETY: the buffer is used only on `cu`, after its allocation and zeroing enqueued there.
    let x = unsafe { DeviceBuffer::<u32>::zeroed_async(n as usize, &cu) }?;

    // ferrocuda takes the stream over and lends it back to cust: every step's kernel waits for
    // the host's value `step`, and a host job runs after it on the trampoline.
    let stream = DeviceStream::from_cust(cu)?;
    let cu = stream.cust_stream().expect("made by from_cust");
    let (input, done) = (
        CompletionFlag::new(stream.device())?,
        CompletionFlag::new(stream.device())?,
    );
    let finished = Arc::new(AtomicU64::new(0));
    for step in 1..=STEPS {
        stream.wait_for_host_value_ge(&input, step)?;
        // SAFETY: add_u32(u32* x, u32 n, u32 v) takes these three parameters; `x` holds `n` values.
        unsafe { launch!(add<<<n.div_ceil(256), 256, 0, cu>>>(x.as_device_ptr(), n, 1u32)) }?;
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

    let mut out = vec![0u32; n as usize];
    // SAFETY: `out` is read only after `cu` synchronised, so after the copy ran.
    unsafe { x.async_copy_to(&mut out, cu) }?;
    cu.synchronize()?;
    // Freed stream-ordered; cust's `Drop` would call `cuMemFree`, which blocks behind any gate
    // still closed.
    x.drop_async(cu)?;
    assert!(
        out.iter().all(|&v| v == STEPS as u32),
        "every step added 1 to every element"
    );
    assert_eq!(finished.load(Ordering::SeqCst), STEPS);
    println!("{STEPS} gated steps of a cust kernel on {n} elements: ok");
    Ok(())
}
