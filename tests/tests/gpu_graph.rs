//! ferrocuda-graph on the GPU: the canonical replay loop, captured node types, ownership while
//! replays are in flight, host-node panics, per-launch wait values, the polling-gate node.
#![cfg(feature = "gpu-tests")]

use ferrocuda_driver::{
    CompletionFlag, Device, Error as DriverError, HostBuffer, KickoffMode, LaunchArgs,
    LaunchConfig, Module, WaitCondition,
};
use ferrocuda_graph::{Error, Graph, NodeType};
use ferrocuda_test_support::deadline;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const TEST_PTX: &str = include_str!("../../crates/driver/tests/kernels/test_kernels.ptx");

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn seed() -> u64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    eprintln!("seed: {s}");
    s
}

/// The canonical loop, `replays` times: each replay waits for the host result of the previous
/// one (`ready == 1`), resets the flag, lets the GPU check the host's value and produce the next
/// input, and kicks the async host node that computes the next result and signals. The host
/// checks every GPU output against its own chain; the GPU checks every host value.
fn canonical_loop(replays: u64, poll: bool, mode: KickoffMode) {
    let d = Device::new(0).unwrap();
    let m = Module::from_ptx(&d, TEST_PTX).unwrap();
    let step = m.function("canon_step").unwrap();
    let s = d.new_stream().unwrap();
    let seed = seed();
    let ready = CompletionFlag::new(&d).unwrap();
    let hv = Arc::new(HostBuffer::<u64>::new(&d, 1).unwrap()); // host value (mapped)
    let gv = Arc::new(HostBuffer::<u64>::new(&d, 1).unwrap()); // GPU output (mapped)
    let st = s.clone_htod(&[seed, 0u64, 0]).unwrap(); // prev output, step, errors
    let slot = |b: &HostBuffer<u64>| {
        // SAFETY: the 8-byte slot of a live pinned buffer, accessed only atomically; the kernel
        // and the closure write it in turn (ordered by the flag).
        unsafe { AtomicU64::from_ptr(b.device_ptr() as *mut u64) }
    };
    slot(&hv).store(mix(seed), Ordering::Release);
    ready.signal(1); // priming
    s.synchronize().unwrap();

    let runs = Arc::new(AtomicU64::new(0));
    let host_errors = Arc::new(AtomicU64::new(0));
    let mut g = Graph::new(&d).unwrap();
    let wait = if poll {
        g.poll_host_value(&ready, 1, WaitCondition::Equal, &[])
            .unwrap()
    } else {
        g.wait_host_value(&ready, 1, WaitCondition::Equal, &[])
            .unwrap()
    };
    let reset = g.write_host_value(&ready, 0, &[wait]).unwrap();
    let (hp, gp, sp) = (hv.device_ptr(), gv.device_ptr(), st.device_ptr());
    // SAFETY: canon_step(const u64*, u64*, u64*) on a 1-slot, a 1-slot and a 3-slot buffer, all
    // owned by the graph below.
    let k = unsafe {
        g.kernel(
            &step,
            LaunchConfig::single_thread(),
            LaunchArgs::new().arg(&hp).arg(&gp).arg(&sp),
            &[reset],
        )
    }
    .unwrap();
    let (h2, g2, r2, e2) = (hv.clone(), gv.clone(), runs.clone(), host_errors.clone());
    let mut n = 0u64;
    g.launch_async_host_func_with(
        mode,
        &ready,
        1,
        move || {
            n += 1;
            let h = slot(&h2).load(Ordering::Acquire);
            let out = slot(&g2).load(Ordering::Acquire);
            if out != mix(h.wrapping_add(n)) {
                e2.fetch_add(1, Ordering::AcqRel);
            }
            slot(&h2).store(mix(out), Ordering::Release);
            r2.fetch_add(1, Ordering::AcqRel);
        },
        &[k],
    )
    .unwrap();
    g.own((hv, gv, st));
    let hosts = g
        .node_types()
        .unwrap()
        .iter()
        .filter(|t| matches!(t, NodeType::Host))
        .count();
    assert_eq!(
        hosts,
        usize::from(mode == KickoffMode::HostFunc),
        "host nodes for a {mode:?} kickoff"
    );
    let exec = g.instantiate().unwrap();
    let t = Instant::now();
    for _ in 0..replays {
        exec.launch(&s).unwrap();
    }
    s.synchronize_timeout(60 * SEC).unwrap();
    exec.take_panics().unwrap();
    let el = t.elapsed();
    // The last closure may still be finishing after the stream drained: wait for its signal.
    ready.wait(WaitCondition::Equal, 1, 5 * SEC).unwrap();
    println!(
        "{} replays ({}, {mode:?} kickoff) in {el:?}: {:.0} replays/s",
        replays,
        if poll { "polling node" } else { "mem-op wait" },
        replays as f64 / el.as_secs_f64()
    );
    assert_eq!(
        runs.load(Ordering::Acquire),
        replays,
        "the async node ran once per replay"
    );
    assert_eq!(
        host_errors.load(Ordering::Acquire),
        0,
        "GPU outputs the host did not expect"
    );
}

#[test]
fn canonical_loop_ten_thousand_replays_checked_every_step() {
    deadline(120 * SEC, || {
        canonical_loop(10_000, false, KickoffMode::HostFunc)
    });
}

#[test]
fn canonical_loop_with_a_polling_gate_node() {
    deadline(120 * SEC, || {
        canonical_loop(2_000, true, KickoffMode::HostFunc)
    });
}

/// The canonical loop with the trampoline kicked off by GPU write (a kernel node and the driver
/// crate's notifier) instead of a host node: 10,000 replays, every step checked.
#[test]
fn canonical_loop_with_gpu_write_kickoff() {
    deadline(120 * SEC, || {
        canonical_loop(10_000, false, KickoffMode::GpuWrite)
    });
}

/// Captured operations become the expected node kinds, and the captured graph replays.
#[test]
fn captured_nodes_have_the_expected_types() {
    deadline(30 * SEC, || {
        let d = Device::new(0).unwrap();
        let m = Module::from_ptx(&d, TEST_PTX).unwrap();
        let ack = m.function("ack").unwrap();
        let s = d.new_stream().unwrap();
        let (go, done) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let out = CompletionFlag::new(&d).unwrap();
        let g = Graph::capture(&s, |cap| {
            cap.wait_host_value(&go, 1, WaitCondition::GreaterOrEqual)?;
            let o = out.as_flag_ref();
            // SAFETY: ack(u64*, u64).
            unsafe {
                cap.stream().launch(
                    &ack,
                    LaunchConfig::single_thread(),
                    LaunchArgs::new().arg(&o).arg(&9u64),
                )
            }?;
            cap.write_host_value(&done, 1)
        })
        .unwrap();
        let mut types = g.node_types().unwrap();
        types.sort_by_key(|t| format!("{t:?}"));
        assert_eq!(
            types,
            vec![NodeType::BatchMemOp, NodeType::BatchMemOp, NodeType::Kernel]
        );
        // One-shot host closures are refused under capture.
        let r = Graph::capture(&s, |cap| {
            cap.stream().enqueue_host_func(|| {})?;
            Ok(())
        });
        assert!(
            matches!(
                r,
                Err(Error::Driver(DriverError::NotAllowedUnderCapture { .. }))
            ),
            "{:?}",
            r.err()
        );
        let exec = g.instantiate().unwrap();
        exec.launch(&s).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(done.load(), 0, "the captured wait did not hold");
        go.signal(1);
        done.wait(WaitCondition::Equal, 1, 5 * SEC).unwrap();
        assert_eq!(out.load(), 9);
        exec.synchronize(&s).unwrap();
    });
}

/// 8 replays queued behind a gate; the graph, the executable and the user's handles to the
/// closure's state and the flags are dropped before the gate opens. Everything the graph owns
/// stays alive until the last replay: every closure runs, every signal lands. (memcheck in the
/// bundle.) Only a few replays are queued: a stream's queue is finite, and 100 launches of this
/// graph behind a closed gate blocked `cuGraphLaunch` on an H100 (docs/deadlocks.md).
#[test]
fn graph_and_closures_dropped_while_replays_in_flight_stay_alive() {
    const REPLAYS: u64 = 8;
    deadline(30 * SEC, || {
        let d = Device::new(0).unwrap();
        let s = d.new_stream().unwrap();
        let gate = CompletionFlag::new(&d).unwrap();
        let runs = Arc::new(AtomicU64::new(0));
        let done = CompletionFlag::new(&d).unwrap();
        {
            let tick = CompletionFlag::new(&d).unwrap();
            let mut g = Graph::new(&d).unwrap();
            let w = g
                .wait_host_value(&gate, 1, WaitCondition::GreaterOrEqual, &[])
                .unwrap();
            let r = runs.clone();
            let big = vec![7u8; 1 << 16]; // state the closure owns
            let h = g
                .launch_host_func(
                    move || {
                        assert_eq!(big.len(), 1 << 16);
                        r.fetch_add(1, Ordering::AcqRel);
                    },
                    &[w],
                )
                .unwrap();
            let a = g.launch_async_host_func(&tick, 1, || {}, &[h]).unwrap();
            g.write_host_value(&done, 1, &[a]).unwrap();
            let exec = g.instantiate().unwrap();
            for _ in 0..REPLAYS {
                exec.launch(&s).unwrap();
            }
            eprintln!("{REPLAYS} replays enqueued behind the gate");
            drop(exec);
            drop(g);
            drop(tick);
            eprintln!("graph, executable and flag handles dropped");
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(runs.load(Ordering::Acquire), 0);
        gate.signal(1);
        s.synchronize_timeout(10 * SEC).unwrap();
        assert_eq!(runs.load(Ordering::Acquire), REPLAYS);
        assert_eq!(done.load(), 1);
        ferrocuda_driver::wait_for_releases(10 * SEC).unwrap();
    });
}

/// A panicking host node is reported by the executable, and the replays go on.
#[test]
fn panicking_host_node_is_reported_not_fatal() {
    deadline(30 * SEC, || {
        let d = Device::new(0).unwrap();
        let s = d.new_stream().unwrap();
        let done = CompletionFlag::new(&d).unwrap();
        let mut g = Graph::new(&d).unwrap();
        let mut k = 0u64;
        let h = g
            .launch_host_func(
                move || {
                    k += 1;
                    if k == 2 {
                        panic!("host node exploded at replay {k}");
                    }
                },
                &[],
            )
            .unwrap();
        let c = Arc::new(AtomicU64::new(0));
        let c2 = c.clone();
        let h2 = g
            .launch_host_func(
                move || {
                    c2.fetch_add(1, Ordering::AcqRel);
                },
                &[h],
            )
            .unwrap();
        g.write_host_value(&done, 1, &[h2]).unwrap();
        let exec = g.instantiate().unwrap();
        for _ in 0..3 {
            exec.launch(&s).unwrap();
        }
        match exec.synchronize(&s) {
            Err(Error::HostFuncPanicked { count: 1, first }) => {
                assert!(first.contains("replay 2"), "{first}")
            }
            other => panic!("expected the panic to be reported, got {other:?}"),
        }
        assert_eq!(c.load(Ordering::Acquire), 3, "later nodes ran every replay");
        exec.synchronize(&s).unwrap();
    });
}

/// A wait node's value changed between launches: epochs without a reset node. Each replay bumps
/// a counter in mapped memory with a kernel node; replays past the signalled epoch do not run.
#[test]
fn wait_value_changes_between_launches() {
    deadline(30 * SEC, || {
        let d = Device::new(0).unwrap();
        let m = Module::from_ptx(&d, TEST_PTX).unwrap();
        let log_tag = m.function("log_tag").unwrap();
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let log = HostBuffer::<u32>::new(&d, 64).unwrap();
        let count = HostBuffer::<u32>::new(&d, 1).unwrap();
        let (lp, cp, tag) = (log.device_ptr(), count.device_ptr(), 7u32);
        let mut g = Graph::new(&d).unwrap();
        let w = g
            .wait_host_value(&flag, 1, WaitCondition::GreaterOrEqual, &[])
            .unwrap();
        // SAFETY: log_tag(u32*, u32*, u32) on a 64-slot log and a 1-slot counter the graph owns.
        let k = unsafe {
            g.kernel(
                &log_tag,
                LaunchConfig::single_thread(),
                LaunchArgs::new().arg(&lp).arg(&cp).arg(&tag),
                &[w],
            )
        }
        .unwrap();
        g.own((log, count));
        let exec = g.instantiate().unwrap();
        // SAFETY: the counter slot of a live pinned buffer, read atomically.
        let ran =
            || unsafe { AtomicU64::from_ptr(cp as *mut u64) }.load(Ordering::Acquire) & 0xffff_ffff;
        // A few launches only: a stream's queue behind a closed wait is finite (docs/deadlocks.md).
        for epoch in 1..=12u64 {
            exec.set_wait_value(w, epoch).unwrap();
            exec.launch(&s).unwrap();
        }
        flag.signal(6);
        let t = Instant::now();
        while ran() < 6 && t.elapsed() < 5 * SEC {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(ran(), 6, "replays past epoch 6 ran early");
        flag.signal(12);
        exec.synchronize(&s).unwrap();
        assert_eq!(ran(), 12);
        // A node of the wrong kind is refused.
        assert!(matches!(
            exec.set_wait_value(k, 3),
            Err(Error::WrongNodeKind { .. })
        ));
    });
}

/// With a host node in the graph, per-launch wait updates are refused instead of risking the
/// hang seen on the H100 (driver 580.159).
#[test]
fn wait_value_updates_are_refused_with_host_nodes() {
    deadline(30 * SEC, || {
        let d = Device::new(0).unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let mut g = Graph::new(&d).unwrap();
        let w = g
            .wait_host_value(&flag, 1, WaitCondition::GreaterOrEqual, &[])
            .unwrap();
        g.launch_host_func(|| {}, &[w]).unwrap();
        let exec = g.instantiate().unwrap();
        assert!(matches!(
            exec.set_wait_value(w, 2),
            Err(Error::Unsupported { .. })
        ));
    });
}

/// No hidden deadlocks with the wait inside a graph replay (docs/deadlocks.md): while a replay
/// waits on a flag, the same thread drops a device buffer, a host buffer, another flag, a module,
/// an event, a stream, the executable and the graph, and loads a module through the crate; then it
/// signals. Everything returns at once and the replay finishes, all within 1 s.
#[test]
fn drops_everything_while_a_graph_replay_waits() {
    deadline(20 * SEC, || {
        let d = Device::new(0).unwrap();
        let s = d.new_stream().unwrap();
        let other = d.new_stream().unwrap();
        let (flag, ack) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let module = Module::from_ptx(&d, TEST_PTX).unwrap();
        let buf = other.alloc_zeroed::<u32>(1 << 20).unwrap();
        let host = HostBuffer::<u64>::new(&d, 1 << 16).unwrap();
        let spare = CompletionFlag::new(&d).unwrap();
        let event = ferrocuda_driver::DeviceEvent::new(&d, true).unwrap();
        other.record_event(&event).unwrap();
        let mut g = Graph::new(&d).unwrap();
        let w = g
            .wait_host_value(&flag, 1, WaitCondition::GreaterOrEqual, &[])
            .unwrap();
        g.write_host_value(&ack, 1, &[w]).unwrap();
        let exec = g.instantiate().unwrap();
        let t = Instant::now();
        exec.launch(&s).unwrap();
        drop((buf, host, spare, module, event, other, exec, g));
        let load = Module::from_ptx_timeout(&d, TEST_PTX, Duration::from_millis(100));
        assert!(
            matches!(load, Ok(_) | Err(DriverError::Timeout { .. })),
            "{:?}",
            load.err()
        );
        let before = t.elapsed();
        flag.signal(1);
        ack.wait(WaitCondition::Equal, 1, SEC).unwrap();
        s.synchronize_timeout(SEC).unwrap();
        let total = t.elapsed();
        println!("graph replay waiting: drops and load {before:?}, all done {total:?}");
        assert!(before < Duration::from_millis(500), "drops took {before:?}");
        assert!(total < SEC, "took {total:?}");
        ferrocuda_driver::wait_for_releases(5 * SEC).unwrap();
    });
}
