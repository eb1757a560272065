//! Several GPUs of one host: one portable flag gating every GPU, GPU0 → GPU1 relays (event, peer
//! write + driver wait, peer write + polling gate), drops of either device's flags and buffers while
//! the other waits, and an all-reduce gated by flags through NCCL.
//!
//! Tests whose name ends in `_needs_2_gpus` need two GPUs, and fail on a machine with fewer: a
//! test that did not run must not count as passed. Skip them there with `--skip _needs_2_gpus`
//! (`cargo test ... -- --skip _needs_2_gpus`), as the GPU bundle does on one GPU, counting them as
//! skipped. The other tests run on one GPU: the device flag and relay tests between streams of
//! GPU 0, and the gated all-reduce with one rank.
#![cfg(feature = "gpu-tests")]

use ferrocuda_driver::{
    CompletionFlag, Device, DeviceEvent, DeviceFlag, DeviceStream, Function, GateStrategy,
    LaunchArgs, LaunchConfig, Module, WaitCondition,
};
use ferrocuda_test_support::{deadline, slack};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const TEST_PTX: &str = include_str!("../../crates/driver/tests/kernels/test_kernels.ptx");
const GEQ: WaitCondition = WaitCondition::GreaterOrEqual;
const STRATEGIES: [GateStrategy; 2] = [
    GateStrategy::DriverWait,
    GateStrategy::Polling { timeout: None },
];

/// Every device.
///
/// # Panics
///
/// When there are fewer than two: the test fails, and says how to skip it.
fn gpus() -> Vec<Device> {
    let n = Device::count().expect("a GPU test needs the driver");
    assert!(
        n >= 2,
        "this test needs 2 GPUs and this machine has {n}: on one GPU, skip the two-GPU tests \
         with `--skip _needs_2_gpus` (`cargo test ... -- --skip _needs_2_gpus`; the GPU bundle's \
         `run` does so)"
    );
    let devs: Vec<Device> = (0..n).map(|i| Device::new(i).unwrap()).collect();
    println!(
        "{n} GPUs: {:?}",
        devs.iter().map(Device::name).collect::<Vec<_>>()
    );
    devs
}

/// Peer access both ways between every pair, before any wait is enqueued.
fn enable_all_peers(devs: &[Device]) {
    for a in devs {
        for b in devs {
            if a != b {
                a.enable_peer_access(b).unwrap_or_else(|e| {
                    panic!("peer access {} → {}: {e}", a.ordinal(), b.ordinal())
                });
            }
        }
    }
}

struct Kernels {
    _module: Module,
    ack: Function,
    add_u32: Function,
    gated_ack: Function,
}

fn kernels(d: &Device) -> Kernels {
    let m = Module::from_ptx(d, TEST_PTX).unwrap();
    Kernels {
        ack: m.function("ack").unwrap(),
        add_u32: m.function("add_u32").unwrap(),
        gated_ack: m.function("gated_ack").unwrap(),
        _module: m,
    }
}

/// The fused gate: a 32-thread kernel that waits for `flag >= value` in its prologue and then
/// writes `v` to `out` (or [`CompletionFlag::ABORTED`] if the wait was aborted).
fn gated_ack(
    s: &DeviceStream,
    k: &Kernels,
    flag: &DeviceFlag,
    value: u64,
    out: &CompletionFlag,
    v: u64,
) {
    let (f, o, no_limit, no_counter) = (flag.device_ptr(), out.as_flag_ref(), 0u64, 0u64);
    // SAFETY: gated_ack(const u64* flag, u64 value, u64 timeout_ns, u64* expired, u64* out, u64 v):
    // the device flag is reachable from this device (peer access enabled by the caller) and both
    // slots are pooled, recycled only after a fence past this kernel.
    unsafe {
        s.launch(
            &k.gated_ack,
            LaunchConfig::for_num_elems(32, 32),
            LaunchArgs::new()
                .arg(&f)
                .arg(&value)
                .arg(&no_limit)
                .arg(&no_counter)
                .arg(&o)
                .arg(&v),
        )
    }
    .unwrap();
}

fn ack(s: &DeviceStream, k: &Kernels, flag: &CompletionFlag, v: u64) {
    let a = flag.as_flag_ref();
    // SAFETY: ack(u64*, u64) on a live mapped flag.
    unsafe {
        s.launch(
            &k.ack,
            LaunchConfig::single_thread(),
            LaunchArgs::new().arg(&a).arg(&v),
        )
    }
    .unwrap();
}

/// A device flag on one device: one stream writes it (a host gate + `write_value`, or the polling
/// relay `relay_value`), another waits on it (both strategies); the gated ack never runs before
/// the write and always after. Runs on one GPU.
#[test]
fn device_flag_gates_another_stream_of_its_device() {
    deadline(30 * SEC, || {
        let d = Device::new(0).unwrap();
        let k = kernels(&d);
        let (producer, waiter) = (d.new_stream().unwrap(), d.new_stream().unwrap());
        let host = CompletionFlag::new(&d).unwrap();
        let done = CompletionFlag::new(&d).unwrap();
        let flag = DeviceFlag::new(&d).unwrap();
        assert_eq!(flag.read().unwrap(), 0, "a new device flag is zeroed");
        let mut v = 0;
        for relay in [false, true] {
            for strategy in STRATEGIES {
                for _ in 0..1000 {
                    v += 1;
                    if relay {
                        producer.relay_value(&host, v, GEQ, &flag, v, None).unwrap();
                    } else {
                        producer.wait_for_host_value_ge(&host, v).unwrap();
                        producer.write_value(&flag, v).unwrap();
                    }
                    waiter.wait_value(&flag, v, GEQ, strategy).unwrap();
                    ack(&waiter, &k, &done, v);
                    assert_eq!(
                        done.load(),
                        v - 1,
                        "relay {relay} {strategy:?}: ran before the write"
                    );
                    host.signal(v);
                    assert_eq!(done.wait(WaitCondition::Equal, v, 2 * SEC).unwrap(), v);
                }
            }
        }
        producer.synchronize().unwrap();
        waiter.synchronize().unwrap();
        assert_eq!(flag.read().unwrap(), v);
    });
}

/// The polling relay's edges, on one GPU: an equality relay ignores other values; a device flag
/// can be the source; a host abort is forwarded as ABORTED (the fused gate downstream sees it);
/// an expired time limit is forwarded as ABORTED and reported once by `synchronize`.
#[test]
fn relay_forwards_values_aborts_and_expiries() {
    deadline(30 * SEC, || {
        let d = Device::new(0).unwrap();
        let k = kernels(&d);
        let (s0, s1, s2) = (
            d.new_stream().unwrap(),
            d.new_stream().unwrap(),
            d.new_stream().unwrap(),
        );
        let out = CompletionFlag::new(&d).unwrap();

        // Equality: 6 and 8 do not release a relay waiting for == 7; 7 does.
        let host = CompletionFlag::new(&d).unwrap();
        let (a, b) = (DeviceFlag::new(&d).unwrap(), DeviceFlag::new(&d).unwrap());
        s0.relay_value(&host, 7, WaitCondition::Equal, &a, 70, None)
            .unwrap();
        // A device flag as the source: a (70) → b (700).
        s1.relay_value(&a, 70, GEQ, &b, 700, None).unwrap();
        gated_ack(&s2, &k, &b, 700, &out, 1);
        for wrong in [6, 8] {
            host.signal(wrong);
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(a.read().unwrap(), 0, "an == 7 relay passed on {wrong}");
            assert_eq!(out.load(), 0);
        }
        host.signal(7);
        assert_eq!(out.wait(WaitCondition::Equal, 1, 2 * SEC).unwrap(), 1);
        for s in [&s0, &s1, &s2] {
            s.synchronize().unwrap();
        }
        assert_eq!((a.read().unwrap(), b.read().unwrap()), (70, 700));

        // Abort: forwarded down the chain; the fused gate reports it.
        let host = CompletionFlag::new(&d).unwrap();
        let target = DeviceFlag::new(&d).unwrap();
        out.reset();
        s0.relay_value(&host, 5, GEQ, &target, 5, None).unwrap();
        gated_ack(&s1, &k, &target, 5, &out, 1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(out.load(), 0, "released before the abort");
        host.abort();
        let seen = out
            .wait(WaitCondition::GreaterOrEqual, 1, 2 * SEC)
            .or_else(|e| match e {
                ferrocuda_driver::Error::Aborted => Ok(CompletionFlag::ABORTED),
                e => Err(e),
            })
            .unwrap();
        assert_eq!(seen, CompletionFlag::ABORTED, "the abort was not forwarded");
        s0.synchronize().unwrap();
        s1.synchronize().unwrap();
        assert_eq!(target.read().unwrap(), CompletionFlag::ABORTED);

        // Expiry: nobody signals; after 2 ms of GPU time the relay gives up, releases the driver
        // wait downstream with ABORTED and reports the expiry once.
        let host = CompletionFlag::new(&d).unwrap();
        let target = DeviceFlag::new(&d).unwrap();
        out.reset();
        s0.relay_value(&host, 1, GEQ, &target, 1, Some(Duration::from_millis(2)))
            .unwrap();
        s1.wait_value(&target, 1, GEQ, GateStrategy::DriverWait)
            .unwrap();
        ack(&s1, &k, &out, 3);
        assert_eq!(out.wait(WaitCondition::Equal, 3, 5 * SEC).unwrap(), 3);
        assert_eq!(target.read().unwrap(), CompletionFlag::ABORTED);
        match s0.synchronize() {
            Err(ferrocuda_driver::Error::GateExpired { count: 1 }) => {}
            other => panic!("expected GateExpired {{ count: 1 }}, got {other:?}"),
        }
        s0.synchronize().unwrap();
        s1.synchronize().unwrap();
    });
}

/// MAX's gate test on every GPU at once: one portable flag, a stream on every GPU waiting on it
/// (driver wait, polling gate); no GPU acks 30 ms after enqueueing, every GPU acks after the
/// signal; then 10,000 steps, each checked: before signal i every GPU's ack is i - 1, after it i.
#[test]
fn one_flag_gates_every_gpu_ten_thousand_steps_needs_2_gpus() {
    deadline(120 * SEC, || {
        let devs = gpus();
        let ks: Vec<Kernels> = devs.iter().map(kernels).collect();
        let streams: Vec<DeviceStream> = devs.iter().map(|d| d.new_stream().unwrap()).collect();
        for strategy in STRATEGIES {
            let flag = CompletionFlag::new(&devs[0]).unwrap();
            let acks: Vec<CompletionFlag> = devs
                .iter()
                .map(|d| CompletionFlag::new(d).unwrap())
                .collect();
            let step = |i: u64| {
                for ((s, k), a) in streams.iter().zip(&ks).zip(&acks) {
                    s.wait_value(flag.as_flag_ref(), i, GEQ, strategy).unwrap();
                    ack(s, k, a, i);
                }
            };
            step(1);
            std::thread::sleep(Duration::from_millis(30));
            for (g, a) in acks.iter().enumerate() {
                assert_eq!(a.load(), 0, "{strategy:?}: GPU {g} ran before the signal");
            }
            flag.signal(1);
            for a in &acks {
                a.wait(WaitCondition::Equal, 1, 2 * SEC).unwrap();
            }
            let t = std::time::Instant::now();
            for i in 2..=10_001u64 {
                step(i);
                for (g, a) in acks.iter().enumerate() {
                    assert_eq!(
                        a.load(),
                        i - 1,
                        "{strategy:?}: GPU {g} step {i} before the signal"
                    );
                }
                flag.signal(i);
                for (g, a) in acks.iter().enumerate() {
                    assert_eq!(
                        a.wait(WaitCondition::Equal, i, 2 * SEC).unwrap(),
                        i,
                        "{strategy:?}: GPU {g} step {i}"
                    );
                }
            }
            for s in &streams {
                s.synchronize().unwrap();
            }
            println!(
                "{strategy:?}: 10,000 steps on {} GPUs in {:?}",
                devs.len(),
                t.elapsed()
            );
        }
    });
}

#[derive(Debug, Clone, Copy)]
enum Relay {
    /// GPU0 records an event after its gate; GPU1's stream waits for it (`cuStreamWaitEvent`).
    Event,
    /// GPU0 writes a device flag in GPU1's memory; GPU1 waits on it by `strategy`.
    PeerWrite(GateStrategy),
    /// GPU0's polling relay waits for the host flag and writes GPU1's device flag in one kernel;
    /// GPU1 waits on it with the polling gate.
    Poll,
    /// As `Poll`, but GPU1's ack kernel waits in its own prologue (the fused gate).
    PollFused,
}

/// host → GPU0 gate → relay → GPU1 ack, 10,000 steps per relay: GPU1's ack for step i is absent
/// before the host signals i (and 20 ms after the first step was enqueued) and present after.
#[test]
fn gpu0_to_gpu1_relays_ten_thousand_steps_needs_2_gpus() {
    deadline(180 * SEC, || {
        let devs = gpus();
        enable_all_peers(&devs);
        let (d0, d1) = (&devs[0], &devs[1]);
        let k1 = kernels(d1);
        let (s0, s1) = (d0.new_stream().unwrap(), d1.new_stream().unwrap());
        for relay in [
            Relay::Event,
            Relay::PeerWrite(GateStrategy::DriverWait),
            Relay::PeerWrite(GateStrategy::Polling { timeout: None }),
            Relay::Poll,
            Relay::PollFused,
        ] {
            let host = CompletionFlag::new(d0).unwrap();
            let done = CompletionFlag::new(d1).unwrap();
            let on_gpu1 = DeviceFlag::new(d1).unwrap();
            let event = DeviceEvent::new(d0, false).unwrap();
            let t = std::time::Instant::now();
            for i in 1..=10_000u64 {
                match relay {
                    Relay::Event => {
                        s0.wait_for_host_value_ge(&host, i).unwrap();
                        s0.record_event(&event).unwrap();
                        s1.wait_for_event(&event).unwrap();
                        ack(&s1, &k1, &done, i);
                    }
                    Relay::PeerWrite(strategy) => {
                        s0.wait_for_host_value_ge(&host, i).unwrap();
                        s0.write_value(&on_gpu1, i).unwrap();
                        s1.wait_value(&on_gpu1, i, GEQ, strategy).unwrap();
                        ack(&s1, &k1, &done, i);
                    }
                    Relay::Poll => {
                        s0.relay_value(&host, i, GEQ, &on_gpu1, i, None).unwrap();
                        s1.wait_value(&on_gpu1, i, GEQ, GateStrategy::Polling { timeout: None })
                            .unwrap();
                        ack(&s1, &k1, &done, i);
                    }
                    Relay::PollFused => {
                        s0.relay_value(&host, i, GEQ, &on_gpu1, i, None).unwrap();
                        gated_ack(&s1, &k1, &on_gpu1, i, &done, i);
                    }
                }
                if i == 1 {
                    std::thread::sleep(Duration::from_millis(20));
                }
                assert_eq!(
                    done.load(),
                    i - 1,
                    "{relay:?}: GPU1 ran step {i} before the signal"
                );
                host.signal(i);
                assert_eq!(
                    done.wait(WaitCondition::Equal, i, 2 * SEC).unwrap(),
                    i,
                    "{relay:?}: step {i}"
                );
            }
            s0.synchronize().unwrap();
            s1.synchronize().unwrap();
            if !matches!(relay, Relay::Event) {
                assert_eq!(on_gpu1.read().unwrap(), 10_000);
            }
            println!("{relay:?}: 10,000 relayed steps in {:?}", t.elapsed());
        }
    });
}

/// One device (the signaller) releases a stream of the other (the waiter) through a device flag
/// in either device's memory; while the waiter waits, the test drops the flag, the host flag that
/// gates the signaller and a device buffer of each device, each used by its device's gated work.
/// The gated work still runs, nothing is freed early (live counts), and everything is released
/// afterwards. The signaller (an async host function, then GPU work) is enqueued before the
/// gated kernel and never depends on work enqueued after it (compute-sanitizer friendly).
#[test]
fn dropped_flags_and_buffers_of_either_device_stay_alive_while_the_other_waits_needs_2_gpus() {
    deadline(120 * SEC, || {
        let devs = gpus();
        enable_all_peers(&devs);
        let ks: Vec<Kernels> = devs.iter().map(kernels).collect();
        let n = 4096u32;
        let mut round = 0u64;
        for (a, b) in [(0usize, 1usize), (1, 0)] {
            for flag_home in [a, b] {
                for strategy in STRATEGIES {
                    round += 1;
                    let (sa, sb) = (devs[a].new_stream().unwrap(), devs[b].new_stream().unwrap());
                    let done = CompletionFlag::new(&devs[b]).unwrap();
                    ferrocuda_driver::wait_for_releases(10 * SEC * slack()).unwrap();
                    let (live_dev, live_host) =
                        (DeviceFlag::live_count(), CompletionFlag::live_count());
                    let host = CompletionFlag::new(&devs[a]).unwrap();
                    let relay = DeviceFlag::new(&devs[flag_home]).unwrap();
                    // The signaller first: a host step that signals `host` after 50 ms.
                    sa.enqueue_async_host_func(&host, 1, || {
                        std::thread::sleep(Duration::from_millis(50))
                    })
                    .unwrap();
                    sa.wait_for_host_value_ge(&host, 1).unwrap();
                    let buf_a = sa.alloc_zeroed::<u32>(n as usize).unwrap();
                    // SAFETY: add_u32(u32*, u32, u32) over `n` elements of a live buffer.
                    unsafe {
                        sa.launch(
                            &ks[a].add_u32,
                            LaunchConfig::for_num_elems(n, 256),
                            LaunchArgs::new().arg(&buf_a).arg(&n).arg(&1u32),
                        )
                    }
                    .unwrap();
                    sa.write_value(&relay, round).unwrap();
                    // The waiter.
                    let buf_b = sb.alloc_zeroed::<u32>(n as usize).unwrap();
                    sb.wait_value(&relay, round, GEQ, strategy).unwrap();
                    // SAFETY: as above.
                    unsafe {
                        sb.launch(
                            &ks[b].add_u32,
                            LaunchConfig::for_num_elems(n, 256),
                            LaunchArgs::new().arg(&buf_b).arg(&n).arg(&2u32),
                        )
                    }
                    .unwrap();
                    ack(&sb, &ks[b], &done, round);
                    drop((relay, host, buf_a, buf_b));
                    let what = format!("GPU{a} → GPU{b}, flag on GPU{flag_home}, {strategy:?}");
                    assert_eq!(
                        DeviceFlag::live_count(),
                        live_dev + 1,
                        "{what}: device flag freed while waited on"
                    );
                    assert_eq!(
                        CompletionFlag::live_count(),
                        live_host + 1,
                        "{what}: host flag recycled while waited on"
                    );
                    assert_eq!(
                        done.wait(WaitCondition::Equal, round, 10 * SEC * slack())
                            .unwrap(),
                        round,
                        "{what}"
                    );
                    sa.synchronize().unwrap();
                    sb.synchronize().unwrap();
                    ferrocuda_driver::wait_for_releases(10 * SEC * slack()).unwrap();
                    assert_eq!(DeviceFlag::live_count(), live_dev, "{what}: leaked");
                    assert_eq!(CompletionFlag::live_count(), live_host, "{what}: leaked");
                }
            }
        }
    });
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The pattern of ferrocuda-nccl: every GPU's stream waits for one host flag, copies its input,
/// all-reduces through NCCL (`ncclCommInitAll`, one process), copies the result back and writes
/// its own done flag. 100 steps on random integer-valued f32 data (sums are exact): before the
/// signal no GPU has reported the step (and, for the first, 20 ms after enqueueing); after it every
/// GPU's result equals the CPU's sum of all inputs.
#[test]
fn gated_all_reduce_equals_the_cpu_sum_100_steps_needs_2_gpus() {
    deadline(180 * SEC, || {
        let devs = gpus();
        gated_all_reduce(&devs);
    });
}

/// The same gated all-reduce with one rank (GPU 0 alone): NCCL's loading, `ncclCommInitAll`, the
/// gate, the copies and the done flags on one GPU, where the sum is the GPU's own input. It runs
/// on every GPU machine; it does not stand in for the two-GPU test above.
#[test]
fn gated_all_reduce_with_one_rank() {
    deadline(120 * SEC, || gated_all_reduce(&[Device::new(0).unwrap()]));
}

/// The body of both gated all-reduce tests, on `devs` (one rank each).
fn gated_all_reduce(devs: &[Device]) {
    // The bundle's `run` exports it; set it here for other ways of running the test.
    if std::env::var("NCCL_NVLS_ENABLE").as_deref() != Ok("0") {
        // SAFETY: set before NCCL is loaded; the bundle runs this binary's tests one at a time,
        // and no other thread of this process reads the environment meanwhile.
        unsafe { std::env::set_var("NCCL_NVLS_ENABLE", "0") };
    }
    let version = ferrocuda_nccl::version().expect("NCCL loads (libnccl.so.2 on the library path)");
    println!("NCCL {version}");
    let comms = ferrocuda_nccl::Communicators::init_all(devs).unwrap();
    let streams: Vec<DeviceStream> = devs.iter().map(|d| d.new_stream().unwrap()).collect();
    let n = 1usize << 16;
    let mut send: Vec<_> = streams
        .iter()
        .map(|s| s.alloc_zeroed::<f32>(n).unwrap())
        .collect();
    let mut recv: Vec<_> = streams.iter().map(|s| s.alloc::<f32>(n).unwrap()).collect();
    let mut inp: Vec<_> = devs
        .iter()
        .map(|d| ferrocuda_driver::HostBuffer::<f32>::new(d, n).unwrap())
        .collect();
    let mut out: Vec<_> = devs
        .iter()
        .map(|d| ferrocuda_driver::HostBuffer::<f32>::new(d, n).unwrap())
        .collect();
    // One ungated collective first: NCCL's first use may load code or allocate, which would
    // block behind a waiting stream.
    comms
        .all_reduce(&send, &mut recv, ferrocuda_nccl::ReduceOp::Sum, &streams)
        .unwrap();
    for s in &streams {
        s.synchronize().unwrap();
    }
    let go = CompletionFlag::new(&devs[0]).unwrap();
    let done: Vec<CompletionFlag> = devs
        .iter()
        .map(|d| CompletionFlag::new(d).unwrap())
        .collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(3, |d| d.as_nanos() as u64);
    println!("seed: {seed}");
    for step in 1..=100u64 {
        let mut expected = vec![0f32; n];
        for (g, b) in inp.iter_mut().enumerate() {
            for (j, (x, e)) in b
                .as_mut_slice()
                .unwrap()
                .iter_mut()
                .zip(&mut expected)
                .enumerate()
            {
                *x = (mix(seed ^ (step << 40) ^ ((g as u64) << 32) ^ j as u64) % 1024) as f32;
                *e += *x;
            }
        }
        for g in 0..devs.len() {
            let s = &streams[g];
            s.wait_for_host_value_ge(&go, step).unwrap();
            s.copy_htod_async(&inp[g], &mut send[g]).unwrap();
        }
        comms
            .all_reduce(&send, &mut recv, ferrocuda_nccl::ReduceOp::Sum, &streams)
            .unwrap();
        for g in 0..devs.len() {
            streams[g].copy_dtoh_async(&recv[g], &mut out[g]).unwrap();
            streams[g].write_host_value(&done[g], step).unwrap();
        }
        if step == 1 {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (g, d) in done.iter().enumerate() {
            assert_eq!(
                d.load(),
                step - 1,
                "GPU {g} finished step {step} before the signal"
            );
        }
        go.signal(step);
        for (g, d) in done.iter().enumerate() {
            assert_eq!(
                d.wait(GEQ, step, 5 * SEC).unwrap(),
                step,
                "GPU {g} step {step}"
            );
        }
        for (g, o) in out.iter().enumerate() {
            let got = o.as_slice().unwrap();
            if let Some(j) = (0..n).find(|&j| got[j] != expected[j]) {
                panic!(
                    "step {step}, GPU {g}, element {j}: {} != CPU sum {}",
                    got[j], expected[j]
                );
            }
        }
    }
    for s in &streams {
        s.synchronize().unwrap();
    }
    comms.check_async_errors().unwrap();
}
