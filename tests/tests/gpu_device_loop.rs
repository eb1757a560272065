//! Loops that stay on the GPU: ferrocuda-graph's conditional nodes (IF, WHILE, SWITCH) and the
//! gated device loop (`Graph::gated_loop`), on a real GPU, each test under a deadline.
#![cfg(feature = "gpu-tests")]

use ferrocuda_driver::{Device, DeviceBuffer, HostBuffer, LaunchArgs, LaunchConfig, Module};
use ferrocuda_graph::{Error, Graph, LoopEnd, LoopLimits, NodeType};
use ferrocuda_test_support::deadline;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

/// The tests of this file run one at a time: the driver-call count of the first one is the
/// process's, which other tests' calls would inflate.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
const TEST_PTX: &str = include_str!("../../crates/driver/tests/kernels/test_kernels.ptx");
const LOOP_FATBIN: &[u8] =
    include_bytes!("../../crates/driver/tests/kernels/loop_test_kernels.fatbin");

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The 8-byte slot of a mapped pinned buffer, as an atomic the host and the GPU take turns on.
fn slot(b: &HostBuffer<u64>) -> &AtomicU64 {
    // SAFETY: the first 8 bytes of a live pinned buffer (mapped at the same address on host and
    // device), accessed by the host only through this atomic.
    unsafe { AtomicU64::from_ptr(b.device_ptr() as *mut u64) }
}

/// What one gated loop of the tests needs: the host value and the GPU's ack (mapped), the GPU's
/// error count, and the host's.
struct Checked {
    hv: Arc<HostBuffer<u64>>,
    ack: Arc<HostBuffer<u64>>,
    gpu_errors: DeviceBuffer<u64>,
    host_errors: Arc<AtomicU64>,
    produced: Arc<AtomicU64>,
}

impl Checked {
    fn new(d: &Device) -> Checked {
        let s = d.new_stream().unwrap();
        let c = Checked {
            hv: Arc::new(HostBuffer::<u64>::new(d, 1).unwrap()),
            ack: Arc::new(HostBuffer::<u64>::new(d, 1).unwrap()),
            gpu_errors: s.alloc_zeroed::<u64>(1).unwrap(),
            host_errors: Arc::default(),
            produced: Arc::default(),
        };
        s.synchronize().unwrap();
        c
    }

    /// The host's side of a step: checks the GPU's ack of the previous step (both ways), then
    /// produces this step's value.
    fn producer(&self, hook: impl Fn(u64) + Send + 'static) -> impl FnMut(u64) + Send + 'static {
        let (hv, ack) = (self.hv.clone(), self.ack.clone());
        let (errors, produced) = (self.host_errors.clone(), self.produced.clone());
        let mut last: Option<u64> = None;
        move |step| {
            if let Some(prev) = last
                && slot(&ack).load(Ordering::Acquire) != mix(mix(prev) ^ prev)
            {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            if last.is_some_and(|p| step != p + 1) {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            hook(step);
            slot(&hv).store(mix(step), Ordering::Release);
            last = Some(step);
            produced.fetch_add(1, Ordering::Release);
        }
    }
}

/// A gated device loop with the test's consume kernel in its body; returns the graph, the loop
/// and the checks.
fn checked_loop(
    d: &Device,
    limits: LoopLimits,
    hook: impl Fn(u64) + Send + 'static,
) -> (
    Graph,
    ferrocuda_graph::DeviceLoop,
    Checked,
    ferrocuda_graph::Node,
) {
    let m = Module::from_ptx(d, TEST_PTX).unwrap();
    let consume = m.function("loop_consume").unwrap();
    let c = Checked::new(d);
    let mut g = Graph::new(d).unwrap();
    let (end, lp) = g
        .gated_loop(limits, &[], c.producer(hook), |b, gate, lp| {
            let (hv, ack) = (c.hv.device_ptr(), c.ack.device_ptr());
            let mut args = LaunchArgs::new();
            args.arg(lp.state()).arg(&hv).arg(&ack).arg(&c.gpu_errors);
            // SAFETY: `loop_consume(const u64* state, const u64* hv, u64* ack, u64* errors)`:
            // one thread, in bounds; the pinned buffers passed by address are owned by the graph
            // (below), the others are passed as resources, which the graph keeps.
            unsafe { b.kernel(&consume, LaunchConfig::single_thread(), &mut args, &[gate]) }?;
            b.own((c.hv.clone(), c.ack.clone()));
            Ok(())
        })
        .unwrap();
    (g, lp, c, end)
}

fn gpu_errors(d: &Device, c: &Checked) -> u64 {
    let s = d.new_stream().unwrap();
    let mut v = [0u64];
    s.copy_dtoh(&c.gpu_errors, &mut v).unwrap();
    v[0]
}

/// 10,000 steps in one launch: each step's value is produced by the host closure and checked by
/// the GPU, each step's answer is checked by the host when it produces the next; the launch makes
/// a handful of driver calls, whatever the number of steps.
#[test]
fn ten_thousand_steps_in_one_launch_checked_both_ways() {
    let _serial = serial();
    deadline(120 * SEC, || {
        let d = Device::new(0).unwrap();
        let (g, lp, c, _) = checked_loop(&d, LoopLimits::steps(10_000), |_| {});
        assert_eq!(
            g.node_types().unwrap(),
            [NodeType::Kernel, NodeType::Conditional, NodeType::Kernel]
        );
        let exec = g.instantiate().unwrap();
        let s = d.new_stream().unwrap();
        // The setup's releases done: the reclaimer makes no calls while the loop runs.
        ferrocuda_driver::wait_for_releases(10 * SEC).unwrap();
        let calls = ferrocuda_driver::guard::driver_calls();
        let t = Instant::now();
        exec.launch(&s).unwrap();
        let out = lp.wait(60 * SEC).unwrap();
        let elapsed = t.elapsed();
        let calls = ferrocuda_driver::guard::driver_calls() - calls;
        exec.synchronize(&s).unwrap();
        eprintln!(
            "10,000 steps in {elapsed:?} ({:.2} us per step), {calls} driver calls",
            elapsed.as_secs_f64() * 1e6 / 10_000.0
        );
        assert_eq!(out.steps, 10_000);
        assert_eq!(out.end, LoopEnd::Completed);
        assert_eq!(c.produced.load(Ordering::Acquire), 10_000);
        assert_eq!(c.host_errors.load(Ordering::Relaxed), 0, "host-side checks");
        assert_eq!(gpu_errors(&d, &c), 0, "GPU-side checks");
        // The last step's answer.
        assert_eq!(
            slot(&c.ack).load(Ordering::Acquire),
            mix(mix(10_000) ^ 10_000)
        );
        // No driver call per step: one per step would be 10,000. The count is the process's, on
        // every thread: the launch's own calls and the crate threads' background polling, which
        // follows the time the loop takes, not its steps (hundreds in a run of this test on an
        // H200; 2 to 8 per 20,000-step launch in the benchmark).
        assert!(
            calls < 10_000 / 10,
            "{calls} driver calls for one launch of 10,000 steps"
        );
        // A second launch continues the step count and completes too.
        exec.launch(&s).unwrap();
        let out = lp.wait(60 * SEC).unwrap();
        assert_eq!((out.steps, out.end), (10_000, LoopEnd::Completed));
        assert_eq!(c.produced.load(Ordering::Acquire), 20_000);
        assert_eq!(c.host_errors.load(Ordering::Relaxed), 0);
        assert_eq!(gpu_errors(&d, &c), 0);
        exec.synchronize(&s).unwrap();
    });
}

/// Aborting the loop in the middle ends the launch at the gate that waits, reports it, and a
/// worker finishing its step afterwards does not undo the abort.
#[test]
fn abort_in_the_middle_ends_the_loop_and_is_reported() {
    let _serial = serial();
    deadline(60 * SEC, || {
        let d = Device::new(0).unwrap();
        let handle: Arc<OnceLock<ferrocuda_graph::DeviceLoop>> = Arc::default();
        let h = handle.clone();
        let (g, lp, c, _) = checked_loop(&d, LoopLimits::steps(1_000_000), move |step| {
            if step == 500 {
                h.get().expect("the loop's handle").abort();
            }
        });
        handle.set(lp.clone()).unwrap();
        let exec = g.instantiate().unwrap();
        let s = d.new_stream().unwrap();
        exec.launch(&s).unwrap();
        let out = lp.wait(30 * SEC).unwrap();
        exec.synchronize(&s).unwrap();
        assert_eq!(out.end, LoopEnd::Aborted);
        assert_eq!(out.steps, 499, "the aborted step is not counted");
        assert_eq!(c.host_errors.load(Ordering::Relaxed), 0);
        assert_eq!(gpu_errors(&d, &c), 0);
        // Later launches end at once, aborted.
        exec.launch(&s).unwrap();
        let out = lp.wait(30 * SEC).unwrap();
        assert_eq!((out.steps, out.end), (0, LoopEnd::Aborted));
        exec.synchronize(&s).unwrap();
    });
}

/// `stop` from another thread ends a loop with no step limit; `resume` lets the next launch run.
#[test]
fn stop_from_the_host_ends_the_loop_and_resume_lets_it_run_again() {
    let _serial = serial();
    deadline(60 * SEC, || {
        let d = Device::new(0).unwrap();
        let (g, lp, c, _) = checked_loop(&d, LoopLimits::default(), |_| {});
        let exec = g.instantiate().unwrap();
        let s = d.new_stream().unwrap();
        exec.launch(&s).unwrap();
        let t = Instant::now();
        while c.produced.load(Ordering::Acquire) < 2_000 && t.elapsed() < 20 * SEC {
            std::hint::spin_loop();
        }
        assert!(lp.outcome().is_none(), "the loop ended by itself");
        lp.stop();
        let out = lp.wait(30 * SEC).unwrap();
        exec.synchronize(&s).unwrap();
        assert_eq!(out.end, LoopEnd::Stopped);
        // The 2,000th closure ran; its gate may have seen the stop first.
        assert!(out.steps >= 1_999, "{} steps", out.steps);
        assert_eq!(c.host_errors.load(Ordering::Relaxed), 0);
        assert_eq!(gpu_errors(&d, &c), 0);
        // Still stopped: the next launch ends at once.
        exec.launch(&s).unwrap();
        assert_eq!(lp.wait(30 * SEC).unwrap().end, LoopEnd::Stopped);
        lp.resume();
        let before = c.produced.load(Ordering::Acquire);
        exec.launch(&s).unwrap();
        while c.produced.load(Ordering::Acquire) < before + 100 && t.elapsed() < 40 * SEC {
            std::hint::spin_loop();
        }
        lp.stop();
        let out = lp.wait(30 * SEC).unwrap();
        assert_eq!(out.end, LoopEnd::Stopped);
        assert!(out.steps >= 99, "{} steps", out.steps);
        exec.synchronize(&s).unwrap();
    });
}

/// The time limit ends a launch whose producer stalls: the gate gives up waiting.
#[test]
fn the_time_limit_ends_a_loop_whose_producer_stalls() {
    let _serial = serial();
    deadline(60 * SEC, || {
        let d = Device::new(0).unwrap();
        let limits = LoopLimits::steps(1_000).with_time_limit(Duration::from_millis(50));
        let (g, lp, c, _) = checked_loop(&d, limits, |step| {
            if step == 10 {
                std::thread::sleep(Duration::from_millis(400));
            }
        });
        let exec = g.instantiate().unwrap();
        let s = d.new_stream().unwrap();
        let t = Instant::now();
        exec.launch(&s).unwrap();
        let out = lp.wait(30 * SEC).unwrap();
        let took = t.elapsed();
        exec.synchronize(&s).unwrap();
        assert_eq!(out.end, LoopEnd::TimedOut);
        assert_eq!(out.steps, 9);
        assert!(took < Duration::from_millis(390), "ended after {took:?}");
        assert_eq!(gpu_errors(&d, &c), 0);
    });
}

/// A kernel of the body ends the loop on the device (`ferrocuda::end_loop`).
#[test]
fn a_kernel_of_the_body_ends_the_loop_on_the_device() {
    let _serial = serial();
    deadline(60 * SEC, || {
        let d = Device::new(0).unwrap();
        let m = Module::from_cubin(&d, LOOP_FATBIN).unwrap();
        let end_at = m.function("end_loop_at").unwrap();
        let mut g = Graph::new(&d).unwrap();
        let steps = Arc::new(AtomicU64::new(0));
        let st = steps.clone();
        let at = 77u64;
        let (_, lp) = g
            .gated_loop(
                LoopLimits::steps(1_000),
                &[],
                move |_| {
                    st.fetch_add(1, Ordering::Relaxed);
                },
                |b, gate, lp| {
                    let cond = *lp.condition();
                    let mut args = LaunchArgs::new();
                    args.arg(&cond).arg(lp.state()).arg(&at);
                    // SAFETY: `end_loop_at(u64 condition, const u64* state, u64 at)`, one thread.
                    unsafe {
                        b.kernel(&end_at, LaunchConfig::single_thread(), &mut args, &[gate])
                    }?;
                    Ok(())
                },
            )
            .unwrap();
        let exec = g.instantiate().unwrap();
        let s = d.new_stream().unwrap();
        exec.launch(&s).unwrap();
        let out = lp.wait(30 * SEC).unwrap();
        exec.synchronize(&s).unwrap();
        assert_eq!((out.steps, out.end), (at, LoopEnd::EndedOnDevice));
        assert_eq!(steps.load(Ordering::Relaxed), at);
    });
}

/// Dropping the executable, the graph and the loop's handle while a launch runs: the launch still
/// runs to its end, and what it uses stays alive until then.
#[test]
fn dropping_everything_while_the_loop_runs_is_safe() {
    let _serial = serial();
    deadline(60 * SEC, || {
        let d = Device::new(0).unwrap();
        let (g, lp, c, _) = checked_loop(&d, LoopLimits::steps(3_000), |_| {});
        let exec = g.instantiate().unwrap();
        let s = d.new_stream().unwrap();
        exec.launch(&s).unwrap();
        let produced = c.produced.clone();
        let host_errors = c.host_errors.clone();
        let ack = c.ack.clone();
        drop((exec, g, lp, c));
        s.synchronize_timeout(30 * SEC).unwrap();
        assert_eq!(produced.load(Ordering::Acquire), 3_000);
        assert_eq!(host_errors.load(Ordering::Relaxed), 0);
        assert_eq!(slot(&ack).load(Ordering::Acquire), mix(mix(3_000) ^ 3_000));
        ferrocuda_driver::wait_for_releases(10 * SEC).unwrap();
    });
}

/// Nodes CUDA forbids in a conditional body are refused when they are added, with a typed error.
#[test]
fn a_body_refuses_host_and_mem_op_nodes() {
    let _serial = serial();
    deadline(30 * SEC, || {
        let d = Device::new(0).unwrap();
        let flag = ferrocuda_driver::CompletionFlag::new(&d).unwrap();
        let mut g = Graph::new(&d).unwrap();
        let cond = g.condition(Some(0)).unwrap();
        let mut seen = Vec::new();
        g.while_loop(&cond, &[], |b| {
            let cw = ferrocuda_driver::WaitCondition::GreaterOrEqual;
            seen.push(b.launch_host_func(|| {}, &[]).unwrap_err());
            seen.push(b.wait_host_value(&flag, 1, cw, &[]).unwrap_err());
            seen.push(b.write_host_value(&flag, 1, &[]).unwrap_err());
            seen.push(b.launch_async_host_func(&flag, 1, || {}, &[]).unwrap_err());
            // Allowed: a polling gate (a kernel node).
            b.poll_host_value(&flag, 1, cw, &[])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 4);
        for e in &seen {
            assert!(matches!(e, Error::NotAllowedInBody { .. }), "{e}");
        }
        assert!(seen[0].to_string().contains("host node"), "{}", seen[0]);
        // The condition is 0 at each launch: the body never runs, the graph completes.
        let exec = g.instantiate().unwrap();
        let s = d.new_stream().unwrap();
        exec.launch(&s).unwrap();
        s.synchronize_timeout(10 * SEC).unwrap();
    });
}

/// IF runs its body when the condition is non-zero; SWITCH runs the body the condition names; a
/// WHILE body counts until its kernel ends the loop; each set by a kernel before the node.
#[test]
fn if_switch_and_while_run_the_bodies_their_conditions_name() {
    let _serial = serial();
    deadline(30 * SEC, || {
        let d = Device::new(0).unwrap();
        let m = Module::from_cubin(&d, LOOP_FATBIN).unwrap();
        let (set, add, count_to) = (
            m.function("set_condition_to").unwrap(),
            m.function("add_u64").unwrap(),
            m.function("count_to").unwrap(),
        );
        let s = d.new_stream().unwrap();
        for (if_value, case) in [(0u32, 0u32), (1, 2), (5, 3), (1, 7)] {
            let marks = s.alloc_zeroed::<u64>(1).unwrap();
            let counter = s.alloc_zeroed::<u64>(1).unwrap();
            s.synchronize().unwrap();
            let one = LaunchConfig::single_thread();
            let mut g = Graph::new(&d).unwrap();
            let (ci, cs, cw) = (
                g.condition(None).unwrap(),
                g.condition(None).unwrap(),
                g.condition(Some(1)).unwrap(),
            );
            let mut args = LaunchArgs::new();
            args.arg(&ci).arg(&if_value);
            // SAFETY: `set_condition_to(u64 condition, unsigned value)`.
            let a = unsafe { g.kernel(&set, one, &mut args, &[]) }.unwrap();
            let ifn = g
                .if_then(&ci, &[a], |b| {
                    let v = 1u64;
                    // SAFETY: `add_u64(u64* x, u64 v)`, one element.
                    unsafe { b.kernel(&add, one, LaunchArgs::new().arg(&marks).arg(&v), &[]) }?;
                    Ok(())
                })
                .unwrap();
            let mut args = LaunchArgs::new();
            args.arg(&cs).arg(&case);
            // SAFETY: as above.
            let b2 = unsafe { g.kernel(&set, one, &mut args, &[ifn]) }.unwrap();
            let sw = g
                .switch(&cs, 4, &[b2], |i, b| {
                    let v = 10u64 << (4 * i);
                    // SAFETY: as above.
                    unsafe { b.kernel(&add, one, LaunchArgs::new().arg(&marks).arg(&v), &[]) }?;
                    Ok(())
                })
                .unwrap();
            let limit = 37u64;
            g.while_loop(&cw, &[sw], |b| {
                // SAFETY: `count_to(u64 condition, u64* x, u64 limit)`, one element.
                unsafe {
                    b.kernel(
                        &count_to,
                        one,
                        LaunchArgs::new().arg(&cw).arg(&counter).arg(&limit),
                        &[],
                    )
                }?;
                Ok(())
            })
            .unwrap();
            let exec = g.instantiate().unwrap();
            exec.launch(&s).unwrap();
            s.synchronize_timeout(10 * SEC).unwrap();
            let (mut got, mut n) = ([0u64], [0u64]);
            s.copy_dtoh(&marks, &mut got).unwrap();
            s.copy_dtoh(&counter, &mut n).unwrap();
            let want = u64::from(if_value != 0) + if case < 4 { 10u64 << (4 * case) } else { 0 };
            assert_eq!(got[0], want, "if {if_value}, switch {case}");
            assert_eq!(n[0], limit, "the WHILE body ran until its kernel ended it");
        }
    });
}
