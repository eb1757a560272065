//! The fused gate (`ferrocuda/gate.cuh`, [`FusedGate`]) on a GPU, through
//! `Kernels::gated_scale_f32`: the gated kernel never runs before the signal (MAX's gate test:
//! 30 ms after launch its output is still poisoned and the stream has not moved past it) and always
//! runs after it with the right output; 10,000 gated steps; abort releases it without its work; an
//! expired time limit skips the work and is counted, one per block.
#![cfg(feature = "gpu-tests")]

use ferrocuda_driver::{CompletionFlag, Device, DeviceBuffer, DeviceStream, WaitCondition};
use ferrocuda_kernels::{Error, FusedGate, Kernels};
use ferrocuda_test_support::{deadline, mark, slack};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

/// The longest a wait for work that is not gated (or whose gate was opened) may take, times
/// [`slack`].
fn sync_limit() -> Duration {
    5 * SEC * slack()
}

/// A NaN with a payload the kernel never produces.
const POISON: f32 = f32::from_bits(0x7fc0_dead);
/// More elements than one wave of 256-thread blocks on every SM covers: the grid-stride loop runs.
const N: usize = 300_001;

struct Gpu {
    device: Device,
    stream: DeviceStream,
    /// For reading the output while the gated kernel still waits on `stream`.
    side: DeviceStream,
    kernels: Kernels,
}

fn gpu() -> Gpu {
    mark("open device 0 and its streams", 0);
    let device = Device::new(0).expect("a CUDA device");
    let stream = device.new_stream().expect("a stream");
    let side = device.new_stream().expect("a second stream");
    // Before any gate exists: module loads wait behind streams that wait on host values.
    mark("load the kernels", 0);
    let kernels = Kernels::load(&device).expect("the kernels load");
    Gpu {
        device,
        stream,
        side,
        kernels,
    }
}

impl Gpu {
    /// Distinct non-zero inputs, `1 + i / 1024` (exact in f32, and so is twice each).
    fn source(&self, n: usize) -> (Vec<f32>, DeviceBuffer<f32>) {
        let host: Vec<f32> = (0..n).map(|i| 1.0 + i as f32 / 1024.0).collect();
        let mut buf = self.stream.alloc::<f32>(n).expect("alloc");
        self.stream.copy_htod(&host, &mut buf).expect("upload");
        (host, buf)
    }

    /// A destination full of poison (written and finished before any gate is enqueued).
    fn poisoned(&self, n: usize) -> DeviceBuffer<f32> {
        mark("poison a destination", n as u64);
        let mut buf = self.stream.alloc::<f32>(n).expect("alloc");
        self.stream
            .copy_htod(&vec![POISON; n], &mut buf)
            .expect("poison");
        self.stream
            .synchronize_timeout(sync_limit())
            .expect("the poison is written");
        buf
    }

    /// `buf` read on the side stream, so it does not wait for the gated kernel.
    fn peek(&self, buf: &DeviceBuffer<f32>) -> Vec<f32> {
        // Bounded: the side stream holds no gate, so its earlier work finishes in time, and the
        // copy below then waits for nothing but itself.
        mark("peek: wait for the side stream", buf.len() as u64);
        self.side
            .synchronize_timeout(sync_limit())
            .expect("the side stream's earlier work completes");
        mark("peek: copy to host", buf.len() as u64);
        let mut host = vec![0.0f32; buf.len()];
        self.side.copy_dtoh(buf, &mut host).expect("peek");
        host
    }
}

fn all_poisoned(v: &[f32]) -> bool {
    v.iter().all(|x| x.to_bits() == POISON.to_bits())
}

fn assert_scaled(src: &[f32], dst: &[f32], a: f32, what: &str) {
    assert_eq!(src.len(), dst.len());
    for (i, (s, d)) in src.iter().zip(dst).enumerate() {
        assert_eq!(
            d.to_bits(),
            (a * s).to_bits(),
            "{what}: element {i} is {d}, expected {}",
            a * s
        );
    }
}

/// MAX's gate test, for both conditions: 30 ms after launch the gated kernel has not run (its
/// output, read from another stream, is still poisoned, and a host write queued behind it has not
/// happened), nor after a value below the awaited one; after the signal it runs over every element.
#[test]
fn fused_gate_runs_the_kernel_after_and_never_before_the_signal() {
    deadline(30 * SEC, || {
        let g = gpu();
        let (src, src_buf) = g.source(N);
        let ack = CompletionFlag::new(&g.device).unwrap();
        let mut round = 0u64;
        for cond in [WaitCondition::Equal, WaitCondition::GreaterOrEqual] {
            round += 10;
            let flag = CompletionFlag::new(&g.device).unwrap();
            let mut dst = g.poisoned(N);
            let gate = FusedGate::new(&flag, round, cond);
            mark("launch the gated kernel", round);
            g.kernels
                .gated_scale_f32(&g.stream, gate, &src_buf, &mut dst, 2.0)
                .unwrap();
            g.stream.write_host_value(&ack, round).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            assert_ne!(ack.load(), round, "{cond:?}: the stream passed the gate");
            assert!(
                all_poisoned(&g.peek(&dst)),
                "{cond:?}: the kernel wrote before the signal"
            );
            flag.signal(round - 1); // below: releases neither condition
            std::thread::sleep(Duration::from_millis(10));
            assert_ne!(ack.load(), round, "{cond:?}: ran on a smaller value");
            assert!(
                all_poisoned(&g.peek(&dst)),
                "{cond:?}: wrote on a smaller value"
            );
            flag.signal(round);
            mark("wait for the ack after the signal", round);
            ack.wait(WaitCondition::Equal, round, 2 * SEC).unwrap();
            g.stream.synchronize_timeout(sync_limit()).unwrap();
            assert_scaled(&src, &g.peek(&dst), 2.0, &format!("{cond:?}"));
        }
    });
}

/// 10,000 gated steps: step i's kernel waits for flag >= i and scales by i; the host signals i
/// and waits for the ack queued behind it. Every 1,000th step's output is checked in full.
#[test]
fn ten_thousand_fused_gated_steps() {
    deadline(60 * SEC, || {
        let g = gpu();
        let n = 4096;
        let (src, src_buf) = g.source(n);
        let mut dst = g.poisoned(n);
        let flag = CompletionFlag::new(&g.device).unwrap();
        let ack = CompletionFlag::new(&g.device).unwrap();
        let t = Instant::now();
        for i in 1..=10_000u64 {
            let gate = FusedGate::new(&flag, i, WaitCondition::GreaterOrEqual);
            mark("launch the gated kernel", i);
            g.kernels
                .gated_scale_f32(&g.stream, gate, &src_buf, &mut dst, i as f32)
                .unwrap();
            g.stream.write_host_value(&ack, i).unwrap();
            flag.signal(i);
            mark("wait for the ack", i);
            assert_eq!(ack.wait(WaitCondition::Equal, i, 2 * SEC).unwrap(), i);
            if i % 1000 == 0 {
                assert_scaled(&src, &g.peek(&dst), i as f32, &format!("step {i}"));
            }
        }
        mark("synchronize after the last step", 10_000);
        g.stream.synchronize_timeout(sync_limit()).unwrap();
        println!("fused gate: 10,000 gated steps in {:?}", t.elapsed());
    });
}

/// `abort()` releases a waiting fused gate of either condition: the stream goes on, and the
/// kernel skipped its work (its output is still poisoned).
#[test]
fn abort_releases_a_fused_gate_without_its_work() {
    deadline(30 * SEC, || {
        let g = gpu();
        let (_, src_buf) = g.source(N);
        for cond in [WaitCondition::GreaterOrEqual, WaitCondition::Equal] {
            let flag = CompletionFlag::new(&g.device).unwrap();
            let ack = CompletionFlag::new(&g.device).unwrap();
            let mut dst = g.poisoned(N);
            mark("launch the gated kernel", 5);
            g.kernels
                .gated_scale_f32(
                    &g.stream,
                    FusedGate::new(&flag, 5, cond),
                    &src_buf,
                    &mut dst,
                    2.0,
                )
                .unwrap();
            g.stream.write_host_value(&ack, 1).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(ack.load(), 0, "{cond:?}: passed before the abort");
            flag.abort();
            mark("wait for the ack after the abort", 5);
            ack.wait(WaitCondition::Equal, 1, 2 * SEC).unwrap();
            g.stream.synchronize_timeout(sync_limit()).unwrap();
            assert!(
                all_poisoned(&g.peek(&dst)),
                "{cond:?}: an aborted gate ran its work"
            );
        }
    });
}

/// A 2 ms time limit on a flag nobody signals: the stream goes on, no block wrote, and the counter
/// holds one expiry per block (1024 elements: 4 blocks of 256). A gate signalled within its limit
/// runs and counts nothing.
#[test]
fn expired_fused_gate_skips_its_work_and_is_counted() {
    deadline(30 * SEC, || {
        let g = gpu();
        let n = 1024;
        let (src, src_buf) = g.source(n);
        let mut dst = g.poisoned(n);
        let flag = CompletionFlag::new(&g.device).unwrap();
        let expired = CompletionFlag::new(&g.device).unwrap();
        let t = Instant::now();
        let gate = FusedGate::new(&flag, 1, WaitCondition::GreaterOrEqual)
            .with_time_limit(Duration::from_millis(2), &expired);
        mark("launch the gate that expires", 1);
        g.kernels
            .gated_scale_f32(&g.stream, gate, &src_buf, &mut dst, 2.0)
            .unwrap();
        g.stream.synchronize_timeout(5 * SEC).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(2),
            "the gate gave up too early"
        );
        assert_eq!(expired.load(), 4, "one expiry per block");
        assert!(all_poisoned(&g.peek(&dst)), "an expired gate ran its work");

        let gate = FusedGate::new(&flag, 1, WaitCondition::GreaterOrEqual)
            .with_time_limit(Duration::from_secs(5), &expired);
        mark("launch the gate signalled in time", 1);
        g.kernels
            .gated_scale_f32(&g.stream, gate, &src_buf, &mut dst, 2.0)
            .unwrap();
        flag.signal(1);
        g.stream.synchronize_timeout(5 * SEC).unwrap();
        assert_eq!(expired.load(), 4, "a gate opened in time counted an expiry");
        assert_scaled(&src, &g.peek(&dst), 2.0, "signalled in time");

        // Refused before anything is enqueued.
        let mut short = g.poisoned(n - 1);
        let e = g
            .kernels
            .gated_scale_f32(
                &g.stream,
                FusedGate::new(&flag, 1, WaitCondition::GreaterOrEqual),
                &src_buf,
                &mut short,
                2.0,
            )
            .unwrap_err();
        assert!(matches!(e, Error::BufferTooSmall { .. }), "{e}");
    });
}
