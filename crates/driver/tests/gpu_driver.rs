//! GPU tests of ferrocuda-driver: devices, streams, events, flags, host functions, the trampoline.
//! Each test has a deadline that fails it instead of hanging.
#![cfg(feature = "gpu-tests")]
// These tests pass raw addresses to kernels on purpose (what a user of raw launches does).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{deadline, device, kernels, mix, seed};
use ferrocuda_driver::{
    CompletionFlag, Device, DeviceEvent, Error, GateStrategy, HostBuffer, LaunchArgs, LaunchConfig,
    Module, WaitCondition,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

#[test]
fn device_reports_its_properties_and_rejects_bad_ordinals() {
    deadline(10 * SEC, || {
        let n = Device::count().unwrap();
        assert!(n >= 1);
        assert!(Device::driver_version().unwrap() >= 13000);
        let d = device();
        println!("{d:?}, {} MiB", d.total_memory() >> 20);
        assert!(!d.name().is_empty());
        assert!(d.compute_capability() >= (7, 5));
        assert!(d.total_memory() > (1 << 30));
        assert_eq!(d, Device::new(0).unwrap(), "one shared state per ordinal");
        match Device::new(n) {
            Err(Error::NoSuchDevice { ordinal, count }) => assert_eq!((ordinal, count), (n, n)),
            other => panic!("expected NoSuchDevice, got {other:?}"),
        }
        let (free, total) = d.memory_info().unwrap();
        assert!(free > 0 && free <= total);
    });
}

/// Host signal → `wait_for_host_value` → kernel writes an ack the host sees; before the signal the
/// ack is not written (the gate holds), for both the equality and the greater-or-equal wait.
#[test]
fn host_signal_releases_a_waiting_stream_whose_kernel_acks() {
    deadline(20 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let ack = CompletionFlag::new(&d).unwrap();
        assert_eq!(flag.load(), 0);
        for (round, cond) in [
            (1u64, WaitCondition::Equal),
            (2, WaitCondition::GreaterOrEqual),
            (5, WaitCondition::Equal),
        ] {
            s.wait_value(&flag, round, cond, GateStrategy::DriverWait)
                .unwrap();
            k.launch_ack(&s, ack.as_flag_ref(), round * 10);
            std::thread::sleep(Duration::from_millis(20));
            assert_ne!(ack.load(), round * 10, "the kernel ran before the signal");
            assert!(!s.is_idle().unwrap());
            if cond == WaitCondition::Equal && round > 1 {
                flag.signal(round + 1); // not equal: must not release
                std::thread::sleep(Duration::from_millis(20));
                assert_ne!(
                    ack.load(),
                    round * 10,
                    "an equality wait passed on another value"
                );
            }
            flag.signal(round);
            assert_eq!(
                ack.wait(WaitCondition::Equal, round * 10, 2 * SEC).unwrap(),
                round * 10
            );
        }
        s.synchronize().unwrap();
    });
}

#[test]
fn gpu_write_host_value_is_seen_by_the_host_wait() {
    deadline(20 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        for v in [3u64, 9, 1 << 40] {
            // SAFETY: spin_ns(u64).
            unsafe {
                s.launch(
                    &k.spin_ns,
                    LaunchConfig::single_thread(),
                    LaunchArgs::new().arg(&2_000_000u64),
                )
            }
            .unwrap();
            s.write_host_value(&flag, v).unwrap();
            assert_ne!(
                flag.load(),
                v,
                "written before the kernel before it finished"
            );
            let t = Instant::now();
            assert_eq!(flag.wait(WaitCondition::Equal, v, 2 * SEC).unwrap(), v);
            assert!(
                t.elapsed() >= Duration::from_millis(1),
                "the write did not wait for the kernel"
            );
        }
        // A host wait that nothing satisfies times out.
        match flag.wait(WaitCondition::Equal, 12345, Duration::from_millis(30)) {
            Err(Error::Timeout { .. }) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
    });
}

/// `elapsed_time` of a kernel that spins a known time is within 10% + 10 µs.
#[test]
fn events_time_a_spinning_kernel_and_report_misuse() {
    deadline(30 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let s = d.new_stream().unwrap();
        let start = DeviceEvent::new(&d, true).unwrap();
        let end = DeviceEvent::new(&d, true).unwrap();
        assert!(matches!(
            start.elapsed_time(&end),
            Err(Error::EventNotRecorded { which: "start" })
        ));
        // Warm-up: the first launches of a kernel on a stream carry one-time costs.
        for _ in 0..3 {
            s.record_event(&start).unwrap();
            // SAFETY: spin_ns(u64).
            unsafe {
                s.launch(
                    &k.spin_ns,
                    LaunchConfig::single_thread(),
                    LaunchArgs::new().arg(&50_000u64),
                )
            }
            .unwrap();
            s.record_event(&end).unwrap();
        }
        end.synchronize().unwrap();
        for ns in [200_000u64, 1_000_000, 5_000_000] {
            s.record_event(&start).unwrap();
            // SAFETY: spin_ns(u64).
            unsafe {
                s.launch(
                    &k.spin_ns,
                    LaunchConfig::single_thread(),
                    LaunchArgs::new().arg(&ns),
                )
            }
            .unwrap();
            s.record_event(&end).unwrap();
            end.synchronize().unwrap();
            assert!(end.is_ready().unwrap());
            let ms = start.elapsed_time(&end).unwrap() as f64;
            let want = ns as f64 / 1e6;
            println!("spin {want} ms -> elapsed {ms:.4} ms");
            assert!(
                (ms - want).abs() <= want * 0.10 + 0.010,
                "elapsed {ms} ms for a {want} ms spin"
            );
        }
        // Timing disabled on either side.
        let untimed = DeviceEvent::new(&d, false).unwrap();
        s.record_event(&untimed).unwrap();
        assert!(matches!(
            untimed.elapsed_time(&end),
            Err(Error::TimingDisabled { which: "start" })
        ));
        assert!(matches!(
            start.elapsed_time(&untimed),
            Err(Error::TimingDisabled { which: "end" })
        ));
        // End not complete yet: NotReady, never a panic.
        let gate = CompletionFlag::new(&d).unwrap();
        s.record_event(&start).unwrap();
        s.wait_for_host_value_ge(&gate, 1).unwrap();
        s.record_event(&end).unwrap();
        assert!(!end.is_ready().unwrap());
        assert!(matches!(start.elapsed_time(&end), Err(Error::NotReady)));
        assert!(matches!(
            end.synchronize_timeout(Duration::from_millis(20)),
            Err(Error::Timeout { .. })
        ));
        gate.signal(1);
        end.synchronize_timeout(2 * SEC).unwrap();
        assert!(start.elapsed_time(&end).unwrap() >= 0.0);
        // An event of another device would be a DeviceMismatch; with one device, check the happy path only.
        s.synchronize().unwrap();
    });
}

/// Stream B waits for an event of stream A, which waits on a flag: nothing of B runs before A's
/// work, and the order log proves it.
#[test]
fn cross_stream_event_wait_orders_work() {
    deadline(20 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let (a, b) = (d.new_stream().unwrap(), d.new_stream().unwrap());
        let flag = CompletionFlag::new(&d).unwrap();
        let log = HostBuffer::<u32>::new(&d, 8).unwrap();
        let count = HostBuffer::<u32>::new(&d, 1).unwrap();
        let ev = DeviceEvent::new(&d, false).unwrap();
        let (lp, cp) = (log.device_ptr(), count.device_ptr());
        let tag = |s: &ferrocuda_driver::DeviceStream, t: u32| {
            // SAFETY: log_tag(u32*, u32*, u32) on mapped pinned memory of 8 + 1 words.
            unsafe {
                s.launch(
                    &k.log_tag,
                    LaunchConfig::single_thread(),
                    LaunchArgs::new().arg(&lp).arg(&cp).arg(&t),
                )
            }
            .unwrap();
        };
        a.wait_for_host_value_ge(&flag, 1).unwrap();
        tag(&a, 1);
        a.record_event(&ev).unwrap();
        b.wait_for_event(&ev).unwrap();
        tag(&b, 2);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!b.is_idle().unwrap(), "B ran before A's event");
        flag.signal(1);
        b.synchronize_timeout(2 * SEC).unwrap();
        a.synchronize_timeout(2 * SEC).unwrap();
        assert_eq!(count.as_slice().unwrap()[0], 2);
        assert_eq!(&log.as_slice().unwrap()[..2], &[1, 2]);
    });
}

/// MAX's gate test: a stream held by an unsignalled flag has not run its copies, and
/// `synchronize_timeout` says so; after the signal, the copies are exact.
#[test]
fn gate_holds_copies_and_synchronize_until_signalled() {
    deadline(20 * SEC, || {
        let seed = seed();
        let d = device();
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let done = CompletionFlag::new(&d).unwrap();
        let data: Vec<u32> = (0..4096u64).map(|i| mix(i ^ seed) as u32 | 1).collect();
        let src = HostBuffer::from_slice(&d, &data).unwrap();
        let mut dev = s.alloc::<u32>(data.len()).unwrap();
        let mut dev2 = s.alloc::<u32>(data.len()).unwrap();
        let mut dst = HostBuffer::<u32>::new(&d, data.len()).unwrap();
        s.wait_for_host_value(&flag, 7).unwrap();
        s.copy_htod_async(&src, &mut dev).unwrap();
        s.copy_dtod(&dev, &mut dev2).unwrap();
        s.copy_dtoh_async(&dev2, &mut dst).unwrap();
        s.write_host_value(&done, 1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(done.load(), 0, "copies ran before the signal");
        assert!(!s.is_idle().unwrap());
        assert!(matches!(
            s.synchronize_timeout(Duration::from_millis(30)),
            Err(Error::Timeout { .. })
        ));
        assert!(matches!(
            dst.synchronize_timeout(Duration::from_millis(10)),
            Err(Error::Timeout { .. })
        ));
        flag.signal(7);
        s.synchronize_timeout(2 * SEC).unwrap();
        assert_eq!(done.load(), 1);
        assert_eq!(dst.as_slice().unwrap(), &data[..]);
        // Pageable round trip too.
        let dev3 = s.clone_htod(&data).unwrap();
        let mut back = vec![0u32; data.len()];
        s.copy_dtoh(&dev3, &mut back).unwrap();
        assert_eq!(back, data);
        // Length mismatches are errors.
        assert!(matches!(
            s.copy_dtoh(&dev3, &mut back[..3]),
            Err(Error::LengthMismatch { .. })
        ));
    });
}

/// The flag a stream waits on is dropped (every handle) before the wait passes; the trampoline
/// that will signal it keeps it alive; the wait passes and the slot is recycled only afterwards.
/// Run under compute-sanitizer memcheck by the bundle.
#[test]
fn dropped_flag_stays_alive_until_wait_passes() {
    deadline(20 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let (waiter, producer) = (d.new_stream().unwrap(), d.new_stream().unwrap());
        let ack = CompletionFlag::new(&d).unwrap();
        // Earlier tests' releases (their streams' flags among them) settle first: the count below
        // is process-wide.
        ferrocuda_driver::wait_for_releases(5 * SEC * common::slack()).unwrap();
        let live_before = CompletionFlag::live_count();
        let flag = CompletionFlag::new(&d).unwrap();
        // The producer is enqueued first, so that no tool that serialises streams in submission
        // order (compute-sanitizer) can make it wait behind the gated kernel.
        producer
            .enqueue_async_host_func(&flag, 1, || std::thread::sleep(Duration::from_millis(50)))
            .unwrap();
        waiter.wait_for_host_value_ge(&flag, 1).unwrap();
        k.launch_ack(&waiter, ack.as_flag_ref(), 99);
        drop(flag);
        assert_eq!(
            CompletionFlag::live_count(),
            live_before + 1,
            "slot recycled while the GPU waits on it"
        );
        assert_eq!(
            ack.wait(WaitCondition::Equal, 99, 5 * SEC * common::slack())
                .unwrap(),
            99
        );
        waiter.synchronize().unwrap();
        producer.synchronize().unwrap();
        ferrocuda_driver::wait_for_releases(5 * SEC * common::slack()).unwrap();
        assert_eq!(CompletionFlag::live_count(), live_before);
    });
}

#[test]
fn panicking_host_func_is_reported_and_the_stream_goes_on() {
    deadline(20 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let s = d.new_stream().unwrap();
        let ack = CompletionFlag::new(&d).unwrap();
        s.enqueue_host_func(|| panic!("host func exploded"))
            .unwrap();
        k.launch_ack(&s, ack.as_flag_ref(), 5);
        match s.synchronize() {
            Err(Error::HostFuncPanicked { count: 1, first }) => {
                assert!(first.contains("host func exploded"), "{first}")
            }
            other => panic!("expected HostFuncPanicked, got {other:?}"),
        }
        assert_eq!(ack.load(), 5, "the stream went on after the panic");
        s.synchronize().unwrap(); // reported once
        // A host function that does not panic runs exactly once.
        let n = Arc::new(AtomicU64::new(0));
        for _ in 0..100 {
            let n = n.clone();
            s.enqueue_host_func(move || {
                n.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        s.synchronize().unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 100);
    });
}

#[test]
fn async_host_func_that_panics_still_releases_its_waiters() {
    deadline(20 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let ack = CompletionFlag::new(&d).unwrap();
        s.enqueue_async_host_func(&flag, 3, || panic!("worker exploded"))
            .unwrap();
        s.wait_for_host_value_ge(&flag, 3).unwrap();
        k.launch_ack(&s, ack.as_flag_ref(), 1);
        assert_eq!(
            ack.wait(WaitCondition::Equal, 1, 5 * SEC).unwrap(),
            1,
            "the waiters were released"
        );
        assert!(matches!(
            s.synchronize(),
            Err(Error::HostFuncPanicked { count: 1, .. })
        ));
    });
}

#[test]
fn driver_call_inside_a_host_function_returns_an_error() {
    deadline(20 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let (tx, rx) = mpsc::channel();
        let (d2, s2) = (d.clone(), s.clone());
        s.enqueue_host_func(move || {
            let r1 = s2.is_idle().map(|_| ());
            let r2 = DeviceEvent::new(&d2, false).map(|_| ());
            let r3 = Module::from_ptx(&d2, common::TEST_PTX).map(|_| ());
            tx.send((r1, r2, r3)).unwrap();
        })
        .unwrap();
        s.synchronize().unwrap();
        let (r1, r2, r3) = rx.recv_timeout(SEC).unwrap();
        for r in [r1, r2, r3] {
            assert!(matches!(r, Err(Error::CalledFromHostFunc { .. })), "{r:?}");
        }
    });
}

/// Streams, events and launches work from threads that never touched the device before.
#[test]
fn hot_path_calls_work_from_fresh_threads() {
    deadline(20 * SEC, || {
        let d = device();
        let k = Arc::new(kernels(&d));
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let ack = CompletionFlag::new(&d).unwrap();
        let ev = DeviceEvent::new(&d, true).unwrap();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                s.wait_for_host_value_ge(&flag, 1).unwrap();
                k.launch_ack(&s, ack.as_flag_ref(), 4);
                s.record_event(&ev).unwrap();
            });
        });
        std::thread::scope(|sc| {
            sc.spawn(|| flag.signal(1));
        });
        ev.synchronize_timeout(2 * SEC).unwrap();
        assert_eq!(ack.load(), 4);
    });
}

#[test]
fn launches_with_clusters_and_module_errors() {
    deadline(20 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let s = d.new_stream().unwrap();
        let x = s.alloc_zeroed::<u32>(1000).unwrap();
        let n = 1000u32;
        let cfg = LaunchConfig {
            grid: (8, 1, 1),
            block: (128, 1, 1),
            shared_mem_bytes: 0,
            cluster: Some((2, 1, 1)),
        };
        // SAFETY: add_u32(u32*, u32, u32) covers 1000 elements with 1024 threads, bounds-checked.
        unsafe {
            s.launch(
                &k.add_u32,
                cfg,
                LaunchArgs::new().arg(&x).arg(&n).arg(&3u32),
            )
        }
        .unwrap();
        // SAFETY: as above.
        unsafe {
            s.launch(
                &k.add_u32,
                LaunchConfig::for_num_elems(n, 256),
                LaunchArgs::new().arg(&x).arg(&n).arg(&4u32),
            )
        }
        .unwrap();
        let mut h = vec![0u32; 1000];
        s.copy_dtoh(&x, &mut h).unwrap();
        assert!(h.iter().all(|&v| v == 7));
        let bad = LaunchConfig {
            cluster: Some((3, 1, 1)),
            ..cfg
        };
        assert!(matches!(
            // SAFETY: rejected before launching.
            unsafe {
                s.launch(
                    &k.add_u32,
                    bad,
                    LaunchArgs::new().arg(&x).arg(&n).arg(&3u32),
                )
            },
            Err(Error::InvalidArgument(_))
        ));
        match k.module.function("no_such_kernel") {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("add_u32"), "{m}"),
            other => panic!("{:?}", other.err()),
        }
        assert!(matches!(
            Module::from_ptx(&d, ".version 9.0\n.target sm_75\nthis is not ptx"),
            Err(Error::Driver(_))
        ));
    });
}

/// A buffer allocated on stream A, used by a kernel on stream B that waits behind a gate, and
/// dropped before the gate opens: its memory must not be reused until B is past the kernel. A new
/// buffer allocated on A meanwhile keeps its contents. Run under memcheck by the bundle.
#[test]
fn dropped_buffer_used_on_another_stream_stays_alive() {
    deadline(20 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let (a, b) = (d.new_stream().unwrap(), d.new_stream().unwrap());
        let gate = CompletionFlag::new(&d).unwrap();
        const N: u32 = 1 << 20;
        let old = a.alloc_zeroed::<u32>(N as usize).unwrap();
        a.synchronize().unwrap();
        b.wait_for_host_value_ge(&gate, 1).unwrap();
        // SAFETY: add_u32(u32*, u32, u32) over N elements of `old`.
        unsafe {
            b.launch(
                &k.add_u32,
                LaunchConfig::for_num_elems(N, 256),
                LaunchArgs::new().arg(&old).arg(&N).arg(&1u32),
            )
        }
        .unwrap();
        drop(old);
        let mut fresh = a.alloc::<u32>(N as usize).unwrap();
        a.memset_u32(&mut fresh, 7).unwrap();
        // Signal without synchronizing A first: under compute-sanitizer, which serialises work,
        // A's memset may queue behind B's gated kernel. If `fresh` aliased `old`, B's kernel would
        // turn its 7s into 8s either way.
        gate.signal(1);
        b.synchronize_timeout(5 * SEC * common::slack()).unwrap();
        let mut h = vec![0u32; N as usize];
        a.copy_dtoh(&fresh, &mut h).unwrap();
        assert!(
            h.iter().all(|&v| v == 7),
            "a kernel wrote into memory that was freed and reused"
        );
        ferrocuda_driver::wait_for_releases(5 * SEC * common::slack()).unwrap();
    });
}
