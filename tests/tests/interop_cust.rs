//! A cust program that adds ferrocuda: its context shared (`Device::from_cust`), its stream taken
//! over (`DeviceStream::from_cust`), its own kernels gated on host values, both trampoline
//! kickoffs, ferrocuda's and cust's events and graph capture on its stream, and every handle
//! dropped while a gate is still closed.
//!
//! Runs on a GPU (`gpu-tests`, in the GPU bundle) and against the fake driver (`fake-tests`, in
//! `cargo xtask test`), where cust is linked against the same fake `libcuda.so.1` and a keep-alive
//! hole shows up as a destroyed stream or freed memory in use. Each test has a deadline.
#![cfg(any(feature = "gpu-tests", feature = "fake-tests"))]

use cust::context::legacy::{Context as LegacyContext, ContextFlags, CurrentContext};
use cust::context::{Context, ContextHandle};
use cust::event::{Event, EventFlags, EventStatus};
use cust::function::Function;
use cust::launch;
use cust::memory::{AsyncCopyDestination, CopyDestination, DeviceBuffer};
use cust::module::Module;
use cust::stream::{Stream, StreamFlags};
use ferrocuda_driver::{
    CompletionFlag, Device, DeviceEvent, DeviceStream, Error, KickoffMode, WaitCondition,
};
use ferrocuda_graph::Graph;
use ferrocuda_test_support::{deadline, mark, slack};
use ferrocuda_tests::{pattern, salt, violations};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const TEST_PTX: &str = include_str!("../../crates/driver/tests/kernels/test_kernels.ptx");
const GE: WaitCondition = WaitCondition::GreaterOrEqual;

/// Tests of this file share one process: one test at a time (`--test-threads=1` in both runs).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// cust's context of device 0 (current on the calling thread, as cust makes it) and its module
/// with the `add_u32(u32* x, u32 n, u32 v)` kernel, loaded before any gate exists (loading a
/// module blocks behind a pending host-value wait).
fn cust_program() -> (Context, Module) {
    mark("open device 0 through cust", 0);
    cust::init(cust::CudaFlags::empty()).expect("cust::init");
    let dev = cust::device::Device::get_device(0).expect("cust finds device 0");
    let name = dev.name().expect("device name");
    if cfg!(feature = "fake-tests") && !cfg!(feature = "gpu-tests") {
        assert!(
            name.contains("Fake"),
            "the fake-driver tests must run against xtask/fake/fake_cuda.c, not {name}"
        );
    }
    let ctx = Context::new(dev).expect("cust retains device 0's primary context");
    let module = Module::from_ptx(TEST_PTX, &[]).expect("cust loads the test PTX");
    (ctx, module)
}

/// A new cust stream, taken over by ferrocuda.
fn wrapped_cust_stream() -> DeviceStream {
    let cu = Stream::new(StreamFlags::DEFAULT, None).expect("cust creates a stream");
    DeviceStream::from_cust(cu).expect("ferrocuda wraps cust's stream")
}

/// Enqueues `x[i] += v` on cust's stream, with cust's own `launch!`.
fn add(stream: &Stream, f: &Function<'_>, x: &DeviceBuffer<u32>, v: u32) {
    let n = x.len() as u32;
    let grid = n.div_ceil(256);
    // SAFETY: add_u32(u32* x, u32 n, u32 v) takes exactly these parameters; `x` holds `n`
    // elements and is used on `stream` only after its allocation there.
    unsafe { launch!(f<<<grid, 256, 0, stream>>>(x.as_device_ptr(), n, v)) }.expect("cust launch");
}

/// `data` in a new buffer, allocated and filled on `stream`.
fn upload(data: &[u32], stream: &Stream) -> DeviceBuffer<u32> {
    // SAFETY: the buffer is used only on `stream`, after the allocation and copy enqueued there;
    // the pageable source is staged before the copy call returns.
    unsafe { DeviceBuffer::from_slice_async(data, stream) }.expect("cust uploads")
}

/// `x`'s contents, copied on `stream` (which is synchronised).
fn download(x: &DeviceBuffer<u32>, stream: &Stream) -> Vec<u32> {
    let mut out = vec![0; x.len()];
    // SAFETY: `out` is read only after `stream` synchronised, so after the copy ran.
    unsafe { x.async_copy_to(&mut out, stream) }.expect("cust downloads");
    stream.synchronize().expect("cust synchronises");
    out
}

/// The two libraries share one primary context, and the wrapper owns cust's very stream.
#[test]
fn cust_context_and_stream_are_shared_not_copied() {
    let _s = serial();
    deadline(60 * SEC, || {
        let (ctx, _module) = cust_program();
        let device = Device::from_cust(&ctx).unwrap();
        assert_eq!(
            device.raw_context(),
            ctx.as_raw().cast(),
            "one primary context"
        );
        assert_eq!(device.ordinal(), 0);
        let cu = Stream::new(StreamFlags::DEFAULT, None).unwrap();
        let raw = cu.as_inner();
        let stream = DeviceStream::from_cust(cu).unwrap();
        assert_eq!(stream.cust_stream().unwrap().as_inner(), raw);
        assert_eq!(stream.as_raw(), raw.cast());
        assert_eq!(stream.device().raw_context(), device.raw_context());
        assert_eq!(stream.clone().cust_stream().unwrap().as_inner(), raw);
        assert!(device.new_stream().unwrap().cust_stream().is_none());
    });
}

/// cust's kernel waits behind a host-value gate enqueued on its stream, the async trampoline
/// runs after it without holding the stream, and ferrocuda's timed events and cust's own event
/// bracket it: for both kickoffs.
#[test]
fn cust_kernels_wait_for_a_host_value_and_kick_the_trampoline() {
    let _s = serial();
    deadline(120 * SEC, || {
        let (_ctx, module) = cust_program();
        let f = module.get_function("add_u32").expect("add_u32");
        for (round, mode) in [KickoffMode::GpuWrite, KickoffMode::HostFunc]
            .into_iter()
            .enumerate()
        {
            mark("kickoff mode", round as u64);
            let stream = wrapped_cust_stream();
            stream.set_kickoff_mode(mode);
            let cu = stream.cust_stream().unwrap();
            let device = stream.device().clone();
            let salt = salt();
            let n = 1000 + (salt as usize % 40_000);
            let v = salt | 1;
            let data = pattern(n, salt);
            let x = upload(&data, cu);
            let (go, done) = (
                CompletionFlag::new(&device).unwrap(),
                CompletionFlag::new(&device).unwrap(),
            );
            let (start, end) = (
                DeviceEvent::new(&device, true).unwrap(),
                DeviceEvent::new(&device, true).unwrap(),
            );
            let added = Event::new(EventFlags::DEFAULT).unwrap();
            let ran = Arc::new(AtomicU64::new(0));

            stream.record_event(&start).unwrap();
            stream.wait_for_host_value_ge(&go, 1).unwrap();
            add(cu, &f, &x, v);
            added.record(cu).unwrap();
            let r = ran.clone();
            stream
                .enqueue_async_host_func(&done, 7, move || r.store(7, Ordering::SeqCst))
                .unwrap();
            stream.record_event(&end).unwrap();

            std::thread::sleep(Duration::from_millis(20) * slack());
            assert_eq!(done.load(), 0, "the trampoline ran before the gate opened");
            assert_eq!(ran.load(Ordering::SeqCst), 0);
            assert!(!end.is_ready().unwrap(), "the stream passed a closed gate");
            assert_eq!(
                added.query().unwrap(),
                EventStatus::NotReady,
                "cust's kernel ran before the gate opened"
            );

            go.signal(1);
            done.wait(GE, 7, 30 * SEC).unwrap();
            assert_eq!(ran.load(Ordering::SeqCst), 7);
            end.synchronize_timeout(30 * SEC).unwrap();
            assert!(start.elapsed_time(&end).unwrap() > 0.0);
            added.synchronize().unwrap();
            assert_eq!(added.query().unwrap(), EventStatus::Ready);
            let out = download(&x, cu);
            for (i, (o, d)) in out.iter().zip(&data).enumerate() {
                assert_eq!(*o, d.wrapping_add(v), "element {i} of {n}");
            }
            x.drop_async(cu).unwrap();
            stream.synchronize().unwrap();
        }
    });
}

/// A graph captured on a wrapped cust stream holds ferrocuda's gate and write nodes around cust's
/// kernel, and replays them.
#[test]
fn graph_captured_on_a_cust_stream_replays_the_gate_and_the_cust_kernel() {
    let _s = serial();
    deadline(120 * SEC, || {
        let (_ctx, module) = cust_program();
        let f = module.get_function("add_u32").expect("add_u32");
        let stream = wrapped_cust_stream();
        let cu = stream.cust_stream().unwrap();
        let device = stream.device().clone();
        let salt = salt();
        let n = 512 + (salt as usize % 8_000);
        let v = salt | 1;
        let data = pattern(n, salt);
        let x = upload(&data, cu);
        cu.synchronize().unwrap();
        let (go, done) = (
            CompletionFlag::new(&device).unwrap(),
            CompletionFlag::new(&device).unwrap(),
        );
        let graph = Graph::capture(&stream, |cap| {
            cap.wait_host_value(&go, 1, GE)?;
            add(cu, &f, &x, v);
            cap.write_host_value(&done, 1)
        })
        .unwrap();
        let exec = graph.instantiate().unwrap();
        const REPLAYS: u32 = 3;
        for k in 0..REPLAYS {
            done.reset();
            exec.launch(&stream).unwrap();
            if k == 0 {
                std::thread::sleep(Duration::from_millis(10) * slack());
                assert_eq!(done.load(), 0, "the replay passed a closed gate");
                go.signal(1);
            }
            done.wait(GE, 1, 30 * SEC).unwrap();
            exec.synchronize(&stream).unwrap();
        }
        let out = download(&x, cu);
        for (i, (o, d)) in out.iter().zip(&data).enumerate() {
            assert_eq!(*o, d.wrapping_add(v.wrapping_mul(REPLAYS)), "element {i}");
        }
        x.drop_async(cu).unwrap();
        stream.synchronize().unwrap();
    });
}

/// Every cust and ferrocuda handle that can go without waiting for the GPU dropped while a gate is
/// closed: the wrapper (and with it cust's stream), cust's event and context, cust's buffer (freed
/// stream-ordered, after the kernel). The work behind the gate (cust's kernel, the trampoline's
/// kickoff, a flag write) still runs once the gate opens, nothing touches a destroyed stream or
/// freed memory (the fake counts such uses; the GPU bundle runs this under memcheck), and cust's
/// stream is destroyed once the crate is done with it, as cust would destroy it: a stream
/// destroyed with work queued finishes that work. cust's module stays until the gate opened:
/// unloading one blocks behind the pending wait.
#[test]
fn handles_dropped_while_the_gate_is_closed_keep_the_cust_stream_until_the_work_ran() {
    let _s = serial();
    deadline(120 * SEC, || {
        let (ctx, module) = cust_program();
        let f = module.get_function("add_u32").expect("add_u32");
        let before = violations();
        let stream = wrapped_cust_stream();
        let raw = stream.as_raw();
        let device = stream.device().clone();
        let cu = stream.cust_stream().unwrap();
        let (go, done, ran) = (
            CompletionFlag::new(&device).unwrap(),
            CompletionFlag::new(&device).unwrap(),
            CompletionFlag::new(&device).unwrap(),
        );
        let x = upload(&pattern(4096, 3), cu);
        let added = Event::new(EventFlags::DEFAULT).unwrap();
        let kicked = Arc::new(AtomicUsize::new(0));
        stream.wait_for_host_value_ge(&go, 1).unwrap();
        add(cu, &f, &x, 5);
        added.record(cu).unwrap();
        let k = kicked.clone();
        stream
            .enqueue_async_host_func(&ran, 1, move || {
                k.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        stream.write_host_value(&done, 2).unwrap();

        // cust's buffer frees stream-ordered (after the kernel); its event, the wrapper (the only
        // owner of cust's stream) and cust's context go now.
        x.drop_async(cu).unwrap();
        drop(added);
        assert!(!destroyed(raw), "the wrapper holds cust's stream");
        // The wrapper goes: the crate destroys cust's stream once its fences are recorded there,
        // which may be at once (the queued work still runs, as after any cuStreamDestroy).
        drop(stream);
        drop(ctx);
        std::thread::sleep(Duration::from_millis(10) * slack());
        assert_eq!(done.load(), 0, "the work passed a closed gate");
        assert_eq!(ran.load(), 0, "the kickoff passed a closed gate");

        go.signal(1);
        done.wait(GE, 2, 30 * SEC).unwrap();
        ran.wait(GE, 1, 30 * SEC).unwrap();
        assert_eq!(kicked.load(Ordering::SeqCst), 1);
        ferrocuda_driver::wait_for_releases(30 * SEC).unwrap();
        if cfg!(all(feature = "fake-tests", not(feature = "gpu-tests"))) {
            let deadline = std::time::Instant::now() + 10 * SEC;
            while !destroyed(raw) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "cust's stream was never destroyed: the crate kept its keep-alive"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(
            violations(),
            before,
            "a destroyed stream or freed memory was used"
        );
        // The module outlived the gate: unloading it now waits for nothing.
        drop(module);
    });
}

/// A ferrocuda buffer in a cust kernel: `record_use` on the wrapped stream gives the kernel its
/// address and keeps the memory alive until the stream is past the kernel, also when the buffer is
/// dropped while the kernel still waits behind a gate (the fake counts a use after free; the GPU
/// bundle runs this under memcheck).
#[test]
fn ferrocuda_buffer_in_a_cust_kernel_is_kept_alive_by_record_use() {
    let _s = serial();
    deadline(120 * SEC, || {
        let (_ctx, module) = cust_program();
        let f = module.get_function("add_u32").expect("add_u32");
        let before = violations();
        let stream = wrapped_cust_stream();
        let cu = stream.cust_stream().unwrap();
        let device = stream.device().clone();
        let home = device.new_stream().unwrap();
        let salt = salt();
        let n = 256 + (salt as usize % 10_000);
        let v = salt | 1;
        let data = pattern(n, salt);
        for drop_early in [false, true] {
            let buf = home.clone_htod(&data).unwrap();
            home.synchronize().unwrap();
            let go = CompletionFlag::new(&device).unwrap();
            stream.wait_for_host_value_ge(&go, 1).unwrap();
            let addr = buf.record_use(&stream).unwrap();
            let n32 = n as u32;
            let grid = n32.div_ceil(256);
            // SAFETY: add_u32(u32* x, u32 n, u32 v): `addr` is the device address of `buf`'s `n`
            // u32 values, kept allocated by `record_use` until the stream is past this kernel.
            unsafe { launch!(f<<<grid, 256, 0, cu>>>(addr, n32, v)) }.expect("cust launch");
            if drop_early {
                drop(buf);
                std::thread::sleep(Duration::from_millis(5) * slack());
                go.signal(1);
                stream.synchronize().unwrap();
            } else {
                go.signal(1);
                let mut out = vec![0u32; n];
                stream.copy_dtoh(&buf, &mut out).unwrap();
                for (i, (o, d)) in out.iter().zip(&data).enumerate() {
                    assert_eq!(*o, d.wrapping_add(v), "element {i} of {n}");
                }
            }
        }
        ferrocuda_driver::wait_for_releases(30 * SEC).unwrap();
        assert_eq!(violations(), before, "the kernel used freed memory");
    });
}

/// Whether the fake driver destroyed `stream`; `false` on a GPU (where nothing can tell safely).
fn destroyed(stream: ferrocuda_driver::sys::CUstream) -> bool {
    #[cfg(all(feature = "fake-tests", not(feature = "gpu-tests")))]
    return ferrocuda_tests::fake::stream_destroyed(stream);
    #[cfg(not(all(feature = "fake-tests", not(feature = "gpu-tests"))))]
    {
        let _ = stream;
        false
    }
}

/// cust's own (legacy) contexts are not primary: a stream made while one is current is refused,
/// and destroyed with the refusal. Sharing cust's primary context meanwhile leaves the thread's
/// current context (cust's legacy one) as it was, and ferrocuda goes on working on the thread once
/// cust popped its context.
#[test]
fn stream_of_a_cust_legacy_context_is_refused() {
    let _s = serial();
    deadline(60 * SEC, || {
        let (ctx, _module) = cust_program();
        let dev = cust::device::Device::get_device(0).unwrap();
        let legacy = LegacyContext::create_and_push(ContextFlags::SCHED_AUTO, dev)
            .expect("cust creates a context of its own");
        assert_ne!(legacy.get_inner(), ctx.as_raw());
        let device = Device::from_cust(&ctx).unwrap();
        assert_eq!(
            CurrentContext::get_current().unwrap().get_inner(),
            legacy.get_inner(),
            "Device::from_cust changed the thread's current context"
        );
        let cu = Stream::new(StreamFlags::DEFAULT, None).expect("a stream of the legacy context");
        let raw = cu.as_inner();
        match DeviceStream::from_cust(cu) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("primary"), "{why}"),
            other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
        }
        assert!(
            !cfg!(all(feature = "fake-tests", not(feature = "gpu-tests"))) || destroyed(raw.cast()),
            "a refused stream's keep-alive was kept"
        );
        drop(legacy);
        assert_eq!(
            CurrentContext::get_current().unwrap().get_inner(),
            ctx.as_raw()
        );
        // cust switched this thread's context behind the crate's back.
        ferrocuda_driver::forget_current_context();
        let s = device.new_stream().unwrap();
        let done = CompletionFlag::new(&device).unwrap();
        s.write_host_value(&done, 1).unwrap();
        done.wait(GE, 1, 30 * SEC).unwrap();
    });
}

/// cust makes every stream blocking, so the legacy default stream waits for a gate closed on a cust
/// stream, and with it cust's synchronous copies: one on another thread returns only once the gate
/// opened (what `DeviceStream::from_cust` warns about).
#[test]
#[cfg_attr(
    not(feature = "gpu-tests"),
    ignore = "the fake driver does not emulate the legacy default stream or synchronous copies"
)]
fn cust_synchronous_copy_waits_for_a_gate_on_a_cust_stream() {
    let _s = serial();
    deadline(60 * SEC, || {
        let (ctx, _module) = cust_program();
        let x = DeviceBuffer::from_slice(&[3u32; 1024]).unwrap();
        let stream = wrapped_cust_stream();
        let go = CompletionFlag::new(stream.device()).unwrap();
        stream.wait_for_host_value_ge(&go, 1).unwrap();
        let copied = AtomicBool::new(false);
        let (early, out) = std::thread::scope(|s| {
            let copier = s.spawn(|| {
                mark("cust's synchronous copy", 0);
                cust::context::CurrentContext::set_current(&ctx).unwrap();
                let mut out = vec![0u32; x.len()];
                x.copy_to(&mut out[..]).unwrap();
                copied.store(true, Ordering::SeqCst);
                out
            });
            std::thread::sleep(Duration::from_millis(100) * slack());
            let early = copied.load(Ordering::SeqCst);
            go.signal(1);
            (early, copier.join().unwrap())
        });
        assert!(
            !early,
            "cust's synchronous copy returned while a gate on a cust stream was closed"
        );
        assert_eq!(out, vec![3; 1024]);
        stream.synchronize().unwrap();
    });
}

/// The crate's example `cust_gate`, this very file: a cust program that adds a gate and the
/// trampoline.
#[path = "../../crates/driver/examples/cust_gate.rs"]
mod cust_gate_example;

#[test]
fn the_cust_gate_example_runs() {
    let _s = serial();
    deadline(120 * SEC, || {
        cust_gate_example::main().expect("the example succeeds");
    });
}
