//! A cudarc program that adds ferrocuda: its context and stream wrapped (`Device::from_cudarc`,
//! `DeviceStream::from_cudarc`), its own kernels gated on host values, both trampoline kickoffs,
//! events and graph capture on its stream, and every handle dropped while a gate is still closed.
//!
//! Runs on a GPU (`gpu-tests`, in the GPU bundle) and against the fake driver (`fake-tests`, in
//! `cargo xtask test`), where cudarc loads the same fake `libcuda.so.1` and a keep-alive hole shows
//! up as a destroyed stream or freed memory in use. Each test has a deadline.
#![cfg(any(feature = "gpu-tests", feature = "fake-tests"))]

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use ferrocuda_driver::{
    CompletionFlag, Device, DeviceEvent, DeviceStream, Error, KickoffMode, WaitCondition,
};
use ferrocuda_graph::Graph;
use ferrocuda_test_support::{deadline, mark, slack};
use ferrocuda_tests::{pattern, salt, violations};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const TEST_PTX: &str = include_str!("../../crates/driver/tests/kernels/test_kernels.ptx");
const GE: WaitCondition = WaitCondition::GreaterOrEqual;

/// Tests of this file share one process: one test at a time (`--test-threads=1` in both runs), and
/// the cudarc state below is made once.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// cudarc's context of device 0 and its `add_u32(u32* x, u32 n, u32 v)` kernel, loaded before any
/// gate exists (loading a module blocks behind a pending host-value wait).
fn cudarc_program() -> (Arc<CudaContext>, CudaFunction) {
    mark("open device 0 through cudarc", 0);
    let ctx = CudaContext::new(0).expect("cudarc opens device 0");
    let name = ctx.name().expect("device name");
    if cfg!(feature = "fake-tests") && !cfg!(feature = "gpu-tests") {
        assert!(
            name.contains("Fake"),
            "the fake-driver tests must run against xtask/fake/fake_cuda.c, not {name}"
        );
    }
    let module = ctx
        .load_module(Ptx::from_src(TEST_PTX))
        .expect("cudarc loads the test PTX");
    let add = module.load_function("add_u32").expect("add_u32");
    (ctx, add)
}

/// Enqueues `x[i] += v` on cudarc's stream, with cudarc's own launch builder.
fn add(stream: &Arc<CudaStream>, f: &CudaFunction, x: &mut cudarc::driver::CudaSlice<u32>, v: u32) {
    let n = x.len() as u32;
    let mut b = stream.launch_builder(f);
    b.arg(x).arg(&n).arg(&v);
    // SAFETY: add_u32(u32* x, u32 n, u32 v) takes exactly these parameters; `x` holds `n` elements.
    unsafe { b.launch(LaunchConfig::for_num_elems(n)) }.expect("cudarc launch");
}

/// The two libraries share one primary context, and the wrapper is cudarc's stream.
#[test]
fn cudarc_context_and_stream_are_shared_not_copied() {
    let _s = serial();
    deadline(60 * SEC, || {
        let (ctx, _add) = cudarc_program();
        let device = Device::from_cudarc(&ctx).unwrap();
        assert_eq!(
            device.raw_context(),
            ctx.cu_ctx().cast(),
            "one primary context"
        );
        assert_eq!(device.ordinal(), ctx.ordinal());
        let cu = ctx.new_stream().unwrap();
        let stream = DeviceStream::from_cudarc(&cu).unwrap();
        assert!(Arc::ptr_eq(stream.cudarc_stream().unwrap(), &cu));
        assert_eq!(stream.as_raw(), cu.cu_stream().cast());
        assert_eq!(stream.device().raw_context(), device.raw_context());
        assert!(device.new_stream().unwrap().cudarc_stream().is_none());
    });
}

/// cudarc's kernel waits behind a host-value gate enqueued on its stream, the async trampoline
/// runs after it without holding the stream, and timed events bracket it: for both kickoffs.
#[test]
fn cudarc_kernels_wait_for_a_host_value_and_kick_the_trampoline() {
    let _s = serial();
    deadline(120 * SEC, || {
        let (ctx, f) = cudarc_program();
        for (round, mode) in [KickoffMode::GpuWrite, KickoffMode::HostFunc]
            .into_iter()
            .enumerate()
        {
            mark("kickoff mode", round as u64);
            let cu = ctx.new_stream().unwrap();
            let stream = DeviceStream::from_cudarc(&cu).unwrap();
            stream.set_kickoff_mode(mode);
            let device = stream.device().clone();
            let salt = salt();
            let n = 1000 + (salt as usize % 40_000);
            let v = salt | 1;
            let data = pattern(n, salt);
            let mut x = cu.clone_htod(&data).unwrap();
            let (go, done) = (
                CompletionFlag::new(&device).unwrap(),
                CompletionFlag::new(&device).unwrap(),
            );
            let (start, end) = (
                DeviceEvent::new(&device, true).unwrap(),
                DeviceEvent::new(&device, true).unwrap(),
            );
            let ran = Arc::new(AtomicU64::new(0));

            stream.record_event(&start).unwrap();
            stream.wait_for_host_value_ge(&go, 1).unwrap();
            add(&cu, &f, &mut x, v);
            let r = ran.clone();
            stream
                .enqueue_async_host_func(&done, 7, move || r.store(7, Ordering::SeqCst))
                .unwrap();
            stream.record_event(&end).unwrap();

            std::thread::sleep(Duration::from_millis(20) * slack());
            assert_eq!(done.load(), 0, "the trampoline ran before the gate opened");
            assert_eq!(ran.load(Ordering::SeqCst), 0);
            assert!(!end.is_ready().unwrap(), "the stream passed a closed gate");

            go.signal(1);
            done.wait(GE, 7, 30 * SEC).unwrap();
            assert_eq!(ran.load(Ordering::SeqCst), 7);
            end.synchronize_timeout(30 * SEC).unwrap();
            assert!(start.elapsed_time(&end).unwrap() > 0.0);
            let out = cu.clone_dtoh(&x).unwrap();
            cu.synchronize().unwrap();
            for (i, (o, d)) in out.iter().zip(&data).enumerate() {
                assert_eq!(*o, d.wrapping_add(v), "element {i} of {n}");
            }
            stream.synchronize().unwrap();
        }
    });
}

/// A graph captured on a wrapped cudarc stream holds ferrocuda's gate and write nodes around
/// cudarc's kernel, and replays them.
#[test]
fn graph_captured_on_a_cudarc_stream_replays_the_gate_and_the_cudarc_kernel() {
    let _s = serial();
    deadline(120 * SEC, || {
        let (ctx, f) = cudarc_program();
        // cudarc's read/write events of its slices would join events recorded outside the
        // capture; cudarc's own graph support asks for them to be off while capturing.
        // SAFETY: no cudarc slice of this context is in use on another stream.
        unsafe { ctx.disable_event_tracking() };
        let cu = ctx.new_stream().unwrap();
        let stream = DeviceStream::from_cudarc(&cu).unwrap();
        let device = stream.device().clone();
        let salt = salt();
        let n = 512 + (salt as usize % 8_000);
        let v = salt | 1;
        let data = pattern(n, salt);
        let mut x = cu.clone_htod(&data).unwrap();
        cu.synchronize().unwrap();
        let (go, done) = (
            CompletionFlag::new(&device).unwrap(),
            CompletionFlag::new(&device).unwrap(),
        );
        let graph = Graph::capture(&stream, |cap| {
            cap.wait_host_value(&go, 1, GE)?;
            add(&cu, &f, &mut x, v);
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
        let out = cu.clone_dtoh(&x).unwrap();
        cu.synchronize().unwrap();
        for (i, (o, d)) in out.iter().zip(&data).enumerate() {
            assert_eq!(*o, d.wrapping_add(v.wrapping_mul(REPLAYS)), "element {i}");
        }
        // SAFETY: as above; back to cudarc's default for the other tests.
        unsafe { ctx.enable_event_tracking() };
    });
}

/// Every cudarc and ferrocuda handle dropped while a gate is closed: the work behind the gate (a
/// cudarc kernel on a slice whose free is queued after it, the trampoline's kickoff, a flag write)
/// still runs once the gate opens, nothing touches a destroyed stream or freed memory (the fake
/// counts such uses; the GPU bundle runs this under memcheck), and cudarc's stream is released
/// once the crate is done with it, as cudarc would release it: a stream destroyed with work
/// queued finishes that work.
#[test]
fn handles_dropped_while_the_gate_is_closed_keep_the_cudarc_stream_until_the_work_ran() {
    let _s = serial();
    deadline(120 * SEC, || {
        let (ctx, f) = cudarc_program();
        let before = violations();
        let cu = ctx.new_stream().unwrap();
        let weak = Arc::downgrade(&cu);
        let stream = DeviceStream::from_cudarc(&cu).unwrap();
        let device = stream.device().clone();
        let (go, done, ran) = (
            CompletionFlag::new(&device).unwrap(),
            CompletionFlag::new(&device).unwrap(),
            CompletionFlag::new(&device).unwrap(),
        );
        let mut x = cu.clone_htod(&pattern(4096, 3)).unwrap();
        let kicked = Arc::new(AtomicUsize::new(0));
        stream.wait_for_host_value_ge(&go, 1).unwrap();
        add(&cu, &f, &mut x, 5);
        let k = kicked.clone();
        stream
            .enqueue_async_host_func(&ran, 1, move || {
                k.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        stream.write_host_value(&done, 2).unwrap();

        // cudarc's slice frees stream-ordered (after the kernel); the wrapper, cudarc's stream and
        // context go now. The kernel's module stays: unloading one blocks behind the pending wait.
        drop(x);
        drop(cu);
        assert!(
            weak.upgrade().is_some(),
            "the wrapper holds cudarc's stream"
        );
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
        let deadline = std::time::Instant::now() + 10 * SEC;
        while weak.upgrade().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the keep-alive of cudarc's stream was never released"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            violations(),
            before,
            "a destroyed stream or freed memory was used"
        );
        drop(f);
    });
}

/// A ferrocuda buffer in a cudarc kernel: `record_use` on the wrapped stream gives the kernel its
/// address and keeps the memory alive until the stream is past the kernel, also when the buffer is
/// dropped while the kernel still waits behind a gate (the fake counts a use after free; the GPU
/// bundle runs this under memcheck).
#[test]
fn ferrocuda_buffer_in_a_cudarc_kernel_is_kept_alive_by_record_use() {
    let _s = serial();
    deadline(120 * SEC, || {
        let (ctx, f) = cudarc_program();
        let before = violations();
        let cu = ctx.new_stream().unwrap();
        let stream = DeviceStream::from_cudarc(&cu).unwrap();
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
            let mut b = cu.launch_builder(&f);
            b.arg(&addr).arg(&n32).arg(&v);
            // SAFETY: add_u32(u32* x, u32 n, u32 v): `addr` is the device address of `buf`'s `n`
            // u32 values, kept allocated by `record_use` until the stream is past this kernel.
            unsafe { b.launch(LaunchConfig::for_num_elems(n32)) }.unwrap();
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

/// The per-thread default stream names another stream on every thread: refused, with the reason.
#[test]
fn cudarc_per_thread_stream_is_refused() {
    let _s = serial();
    deadline(60 * SEC, || {
        let (ctx, _add) = cudarc_program();
        let per_thread = ctx.per_thread_stream();
        let weak = Arc::downgrade(&per_thread);
        match DeviceStream::from_cudarc(&per_thread) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("per-thread"), "{why}"),
            other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
        }
        drop(per_thread);
        assert!(
            weak.upgrade().is_none(),
            "a refused stream's keep-alive was kept"
        );
    });
}

/// A cudarc context that is not the device's primary one cannot be shared.
#[test]
fn non_primary_cudarc_context_is_refused() {
    let _s = serial();
    deadline(60 * SEC, || {
        let ctx = CudaContext::new_non_primary(0, 0).expect("cudarc creates a context");
        match Device::from_cudarc(&ctx) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("primary"), "{why}"),
            other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
        }
        drop(ctx);
        // The crate's record of the current context is stale after cudarc's context switches.
        ferrocuda_driver::forget_current_context();
    });
}

/// cudarc's default stream (the legacy NULL stream) is accepted and gated like any other.
#[test]
#[cfg_attr(
    not(feature = "gpu-tests"),
    ignore = "the fake driver does not emulate the legacy NULL stream"
)]
fn cudarc_default_stream_is_gated_too() {
    let _s = serial();
    deadline(60 * SEC, || {
        let (ctx, f) = cudarc_program();
        let cu = ctx.default_stream();
        let stream = DeviceStream::from_cudarc(&cu).unwrap();
        let go = CompletionFlag::new(stream.device()).unwrap();
        let mut x = cu.clone_htod(&pattern(1000, 9)).unwrap();
        cu.synchronize().unwrap();
        stream.wait_for_host_value_ge(&go, 1).unwrap();
        add(&cu, &f, &mut x, 1);
        let done = CompletionFlag::new(stream.device()).unwrap();
        stream.write_host_value(&done, 1).unwrap();
        std::thread::sleep(Duration::from_millis(10) * slack());
        assert_eq!(done.load(), 0);
        go.signal(1);
        done.wait(GE, 1, 30 * SEC).unwrap();
        let out = cu.clone_dtoh(&x).unwrap();
        cu.synchronize().unwrap();
        let want: Vec<u32> = pattern(1000, 9).iter().map(|v| v.wrapping_add(1)).collect();
        assert_eq!(out, want);
    });
}

/// The generic door: a keep-alive of any type is held while any clone of the wrapper lives, is
/// dropped exactly once after the crate is done with the stream (also when the wrap is refused),
/// and a keep-alive whose `Drop` panics does not take down the crate thread that drops it.
#[test]
fn raw_borrowed_keep_alive_is_dropped_once_after_the_work_and_its_panic_is_contained() {
    let _s = serial();
    deadline(60 * SEC, || {
        struct Keep {
            drops: Arc<AtomicUsize>,
            panic: bool,
            _owner: DeviceStream,
        }
        impl Drop for Keep {
            fn drop(&mut self) {
                self.drops.fetch_add(1, Ordering::SeqCst);
                if self.panic {
                    panic!("a keep-alive that panics when dropped");
                }
            }
        }
        let (ctx, _add) = cudarc_program();
        let device = Device::from_cudarc(&ctx).unwrap();
        for panic in [false, true] {
            let owner = device.new_stream().unwrap();
            let drops = Arc::new(AtomicUsize::new(0));
            let keep = Keep {
                drops: drops.clone(),
                panic,
                _owner: owner.clone(),
            };
            // SAFETY: `keep` holds `owner`, whose handle is `raw`, a stream of device 0's primary
            // context.
            let stream =
                unsafe { DeviceStream::from_raw_borrowed(&device, owner.as_raw(), keep) }.unwrap();
            drop(owner);
            let (go, done) = (
                CompletionFlag::new(&device).unwrap(),
                CompletionFlag::new(&device).unwrap(),
            );
            stream.wait_for_host_value_ge(&go, 1).unwrap();
            stream.write_host_value(&done, 1).unwrap();
            let clone = stream.clone();
            drop(stream);
            std::thread::sleep(Duration::from_millis(10) * slack());
            assert_eq!(
                drops.load(Ordering::SeqCst),
                0,
                "dropped while a clone lives"
            );
            drop(clone);
            go.signal(1);
            done.wait(GE, 1, 30 * SEC).unwrap();
            ferrocuda_driver::wait_for_releases(30 * SEC).unwrap();
            let deadline = std::time::Instant::now() + 10 * SEC;
            while drops.load(Ordering::SeqCst) == 0 {
                assert!(std::time::Instant::now() < deadline, "never dropped");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        }
        // The crate's threads survived the panicking drop: more work still completes.
        let s = device.new_stream().unwrap();
        let done = CompletionFlag::new(&device).unwrap();
        s.write_host_value(&done, 3).unwrap();
        done.wait(GE, 3, 30 * SEC).unwrap();
        ferrocuda_driver::wait_for_releases(30 * SEC).unwrap();

        // Refused (the per-thread stream): the keep-alive is dropped at once, exactly once.
        let drops = Arc::new(AtomicUsize::new(0));
        let keep = Keep {
            drops: drops.clone(),
            panic: false,
            _owner: device.new_stream().unwrap(),
        };
        // SAFETY: CU_STREAM_PER_THREAD is a valid handle in every context (and refused).
        let r = unsafe { DeviceStream::from_raw_borrowed(&device, 0x2 as _, keep) };
        assert!(matches!(r, Err(Error::InvalidArgument(_))));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

/// The crate's example `cudarc_gate`, this very file: a cudarc program that adds a gate and the
/// trampoline.
#[path = "../../crates/driver/examples/cudarc_gate.rs"]
mod cudarc_gate_example;

#[test]
fn the_cudarc_gate_example_runs() {
    let _s = serial();
    deadline(120 * SEC, || {
        cudarc_gate_example::main().expect("the example succeeds");
    });
}
