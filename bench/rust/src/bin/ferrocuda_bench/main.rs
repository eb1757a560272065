//! ferrocuda's side of `cargo xtask bench`: the C baseline's loops (bench/raw/) through
//! ferrocuda-driver, in the same order and process states (bench/README.md). The loops cudarc's
//! program has too are `ferrocuda_bench::loops`, run on [`Env`]; this file holds the benchmarks of
//! ferrocuda's own mechanisms (polling and fused gates, graph gates, the async trampoline, the
//! canonical loop) and `future_wake.rs` the futures'.

use ferrocuda_bench::backend::Backend;
use ferrocuda_bench::ferrocuda::{Env, ok};
use ferrocuda_bench::loops::{self, Bench, Regime};
use ferrocuda_bench::threads::Threads;
use ferrocuda_bench::{Args, Report, die, now_ns};
use ferrocuda_driver::{
    CompletionFlag, Device, GateStrategy, KickoffMode, LaunchArgs, LaunchConfig, WaitCondition,
};
use ferrocuda_graph::{Graph, LoopEnd, LoopLimits};

mod future_wake;

/// The polling gate: a 1-thread kernel polls the flag (1 s limit), then the ack kernel.
fn poll_gate_stream(e: &Env, a: &Args, r: &mut Report) {
    loops::gate_rows(e, a, r, "poll_gate_stream", |i| {
        ok(e.s.wait_value(
            &e.flag,
            i,
            WaitCondition::GreaterOrEqual,
            GateStrategy::Polling {
                timeout: Some(std::time::Duration::from_secs(1)),
            },
        ));
        e.launch_ack(&e.s, i);
    });
}

/// As the C baseline's step_fused: one block of 32 threads, thread 0 polls (with a 1 s limit), the
/// block syncs, thread 0 acks; here the gate is ferrocuda::wait_flag.
fn fused_gate_stream(e: &Env, a: &Args, r: &mut Report) {
    loops::gate_rows(e, a, r, "fused_gate_stream", |i| {
        let (flag, slot, expired) = (
            e.flag.device_ptr(),
            e.ack_slot.device_ptr(),
            e.expired.device_ptr(),
        );
        // SAFETY: `fused_ack` is ferrocuda_fused_gate_ack; the three slots are flags of `e`,
        // which outlives every launch (`reset` synchronizes the stream).
        ok(unsafe {
            ferrocuda_bench::launch_fused_ack(
                &e.s,
                &e.fused_ack,
                flag,
                i,
                slot,
                i,
                1_000_000_000,
                expired,
            )
        });
    });
    e.reset();
}

fn graph_wait_gate(e: &Env, a: &Args, r: &mut Report) {
    graph_gate(e, a, r, "graph_wait_gate", false);
}

fn graph_poll_gate(e: &Env, a: &Args, r: &mut Report) {
    graph_gate(e, a, r, "graph_poll_gate", true);
}

/// The graph gates, as the C baseline's: [gate: flag >= i] -> [ack_inc kernel], the gate's value
/// updated before each launch (`GraphExec::set_wait_value`); a fresh graph per regime, so the
/// device-side replay count starts at 0.
fn graph_gate(e: &Env, a: &Args, r: &mut Report, bench: &str, poll: bool) {
    for regime in [Regime::Idle, Regime::B2b] {
        e.reset();
        let count = ok(e.s.alloc_zeroed::<u64>(1));
        ok(e.s.synchronize());
        let mut g = ok_g(Graph::new(&e.dev));
        let gate = if poll {
            ok_g(g.poll_host_value(&e.flag, 1, WaitCondition::GreaterOrEqual, &[]))
        } else {
            ok_g(g.wait_host_value(&e.flag, 1, WaitCondition::GreaterOrEqual, &[]))
        };
        let (cp, ap) = (count.device_ptr(), e.ack_slot.device_ptr());
        let ack_inc = e
            .ack_inc
            .as_ref()
            .unwrap_or_else(|| die("the cubin has no ack_inc kernel"));
        // SAFETY: ack_inc(u64* dev_count, u64* host_slot); the counter is owned by the graph.
        ok_g(unsafe {
            g.kernel(
                ack_inc,
                LaunchConfig::single_thread(),
                LaunchArgs::new().arg(&cp).arg(&ap),
                &[gate],
            )
        });
        g.own(count);
        let exec = ok_g(g.instantiate());
        let t0 = Threads::snapshot();
        let mut v = loops::gate_regime(e, a, bench, regime, |i| {
            ok_g(exec.set_wait_value(gate, i));
            ok_g(exec.launch(&e.s));
        });
        r.row(
            bench,
            regime.name(),
            &mut v,
            &Threads::snapshot().since(&t0),
        );
        ok(e.s.synchronize());
    }
}

/// The canonical loop (docs/graph-replay.md) — [wait ready == 1] [reset ready = 0] [kernel]
/// [async host func: ready = 1] — per step, as a graph replay and as the same operations
/// enqueued on a stream. Rows in µs per step; `rate` = steps/s.
fn canonical_loop(e: &Env, a: &Args, r: &mut Report) {
    let n = a.samples as u64;
    let ready = ok(CompletionFlag::new(&e.dev));
    // Stream: the same four operations per step.
    e.reset();
    ready.signal(1);
    let mut v = Vec::new();
    let mut enq = Vec::new();
    let s0 = ferrocuda_driver::trampoline_stats();
    let c0 = ferrocuda_driver::guard::driver_calls();
    let t0 = Threads::snapshot();
    for round in 0..5 {
        let t0 = now_ns();
        for _ in 0..n {
            ok(e.s.wait_for_host_value(&ready, 1));
            ok(e.s.write_host_value(&ready, 0));
            // SAFETY: empty_kernel().
            ok(unsafe {
                e.s.launch(
                    &e.empty,
                    LaunchConfig::single_thread(),
                    &mut LaunchArgs::new(),
                )
            });
            ok(e.s.enqueue_async_host_func(&ready, 1, || {}));
        }
        let t_enq = now_ns();
        ok(e.s.synchronize());
        ready
            .wait(WaitCondition::Equal, 1, std::time::Duration::from_secs(5))
            .unwrap_or_else(|e| die(&e.to_string()));
        if round > 0 {
            v.push((now_ns() - t0) as f64 / n as f64);
            enq.push((t_enq - t0) as f64 / n as f64);
        }
    }
    let rate = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        1e9 / s[s.len() / 2]
    };
    // How long the host took to enqueue a step: when it is close to the time per step, the loop is
    // bound by the host's enqueue path, not by the round trip.
    let median_us = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2] / 1e3
    };
    let extra = format!(
        "\"rate\":{:.1},\"rate_unit\":\"steps/s\",\"enqueue_us_per_step\":{:.2},{},{}",
        rate(&v),
        median_us(&enq),
        wakeups(s0, c0, 5 * n),
        Threads::snapshot().since(&t0)
    );
    // One more round, not in the samples: what each of the four enqueues costs the host (mean µs
    // per call, a clock read around each), as the C baseline reports it.
    let mut by_op = [0f64; 4];
    for _ in 0..n {
        let mut t = [0u64; 5];
        t[0] = now_ns();
        ok(e.s.wait_for_host_value(&ready, 1));
        t[1] = now_ns();
        ok(e.s.write_host_value(&ready, 0));
        t[2] = now_ns();
        // SAFETY: empty_kernel().
        ok(unsafe {
            e.s.launch(
                &e.empty,
                LaunchConfig::single_thread(),
                &mut LaunchArgs::new(),
            )
        });
        t[3] = now_ns();
        ok(e.s.enqueue_async_host_func(&ready, 1, || {}));
        t[4] = now_ns();
        for (k, b) in by_op.iter_mut().enumerate() {
            *b += (t[k + 1] - t[k]) as f64 / 1e3 / n as f64;
        }
    }
    ok(e.s.synchronize());
    ready
        .wait(WaitCondition::Equal, 1, std::time::Duration::from_secs(5))
        .unwrap_or_else(|e| die(&e.to_string()));
    let extra = format!(
        "{extra},\"enqueue_us_by_op\":[{:.3},{:.3},{:.3},{:.3}]",
        by_op[0], by_op[1], by_op[2], by_op[3]
    );
    r.row("canonical_loop", "stream", &mut v, &extra);
    // Graph: one launch per step, with either kickoff.
    for (regime, mode) in [
        ("graph", KickoffMode::HostFunc),
        ("graph_gpuwrite", KickoffMode::GpuWrite),
    ] {
        let mut g = ok_g(Graph::new(&e.dev));
        let w = ok_g(g.wait_host_value(&ready, 1, WaitCondition::Equal, &[]));
        let z = ok_g(g.write_host_value(&ready, 0, &[w]));
        // SAFETY: empty_kernel().
        let k = ok_g(unsafe {
            g.kernel(
                &e.empty,
                LaunchConfig::single_thread(),
                &mut LaunchArgs::new(),
                &[z],
            )
        });
        ok_g(g.launch_async_host_func_with(mode, &ready, 1, || {}, &[k]));
        let exec = ok_g(g.instantiate());
        let mut v = Vec::new();
        let mut enq = Vec::new();
        let s0 = ferrocuda_driver::trampoline_stats();
        let c0 = ferrocuda_driver::guard::driver_calls();
        let t0 = Threads::snapshot();
        for round in 0..5 {
            let t0 = now_ns();
            for _ in 0..n {
                ok_g(exec.launch(&e.s));
            }
            let t_enq = now_ns();
            ok_g(exec.synchronize(&e.s));
            ready
                .wait(WaitCondition::Equal, 1, std::time::Duration::from_secs(5))
                .unwrap_or_else(|e| die(&e.to_string()));
            if round > 0 {
                v.push((now_ns() - t0) as f64 / n as f64);
                enq.push((t_enq - t0) as f64 / n as f64);
            }
        }
        let extra = format!(
            "\"rate\":{:.1},\"rate_unit\":\"steps/s\",\"enqueue_us_per_step\":{:.2},{},{}",
            rate(&v),
            median_us(&enq),
            wakeups(s0, c0, 5 * n),
            Threads::snapshot().since(&t0)
        );
        r.row("canonical_loop", regime, &mut v, &extra);
        // The C baseline destroys each row's graph before the next row: so does this one (the
        // crate releases an executable once the GPU is past its launches, on its own thread).
        drop(exec);
        drop(g);
        ok(ferrocuda_driver::wait_for_releases(
            std::time::Duration::from_secs(10),
        ));
    }
}

/// The driver calls (since `c0`) and the trampoline's counters (since `s0`) per step, over
/// `steps` steps, as JSON fields: the calls made from every thread of the crate, jobs handed
/// to the worker pool, graph kickoff runs the spinning worker ran itself, and wake-ups of parked workers and of the notifier (each one a futex call,
/// and a thread that runs only once scheduled: on a step's path, tens of µs).
fn wakeups(s0: ferrocuda_driver::TrampolineStats, c0: u64, steps: u64) -> String {
    let s1 = ferrocuda_driver::trampoline_stats();
    let c1 = ferrocuda_driver::guard::driver_calls();
    let per = |a: u64, b: u64| (b - a) as f64 / steps as f64;
    format!(
        "\"driver_calls_per_step\":{:.4},\"dispatched_per_step\":{:.4},\"claimed_by_spinner_per_step\":{:.4},\"worker_wakeups_per_step\":{:.4},\"notifier_wakeups_per_step\":{:.4}",
        per(c0, c1),
        per(s0.dispatched, s1.dispatched),
        per(s0.claimed_by_spinner, s1.claimed_by_spinner),
        per(s0.worker_wakeups, s1.worker_wakeups),
        per(s0.notifier_wakeups, s1.notifier_wakeups)
    )
}

/// Steps per launch of the device loop (the C baseline's DEVICE_LOOP_STEPS).
const DEVICE_LOOP_STEPS: u64 = 20_000;

/// The gated device loop (`Graph::gated_loop`): one launch runs DEVICE_LOOP_STEPS steps of
/// [kick] [gate] [empty kernel] [ack kernel] in a WHILE conditional node, each step's value
/// produced by an (empty) host closure on a crate worker. Rows in µs per step (five launches, the
/// first untimed); `driver_calls_per_step` counts ferrocuda's driver calls from the launch until
/// the loop's end was seen.
fn device_loop(e: &Env, _a: &Args, r: &mut Report) {
    e.reset();
    let one = 1u64;
    let mut g = ok_g(Graph::new(&e.dev));
    let built = g.gated_loop(
        LoopLimits::steps(DEVICE_LOOP_STEPS),
        &[],
        |_| {},
        |b, gate, _| {
            // SAFETY: empty_kernel().
            let k = unsafe {
                b.kernel(
                    &e.empty,
                    LaunchConfig::single_thread(),
                    &mut LaunchArgs::new(),
                    &[gate],
                )
            }?;
            let mut args = LaunchArgs::new();
            args.arg(&e.ack_slot).arg(&one);
            // SAFETY: ack(u64* host_slot, u64 value), one thread; the slot is a flag (resource).
            unsafe { b.kernel(&e.ack, LaunchConfig::single_thread(), &mut args, &[k]) }?;
            Ok(())
        },
    );
    let lp = match built {
        Ok((_, lp)) => lp,
        Err(ferrocuda_graph::Error::Driver(ferrocuda_driver::Error::Unsupported { .. })) => {
            println!("device_loop: skipped, no gated device loop on this device or driver");
            return;
        }
        Err(err) => die(&err.to_string()),
    };
    let exec = ok_g(g.instantiate());
    // The setup's releases done, so that the count below holds the launches' calls alone.
    ok(ferrocuda_driver::wait_for_releases(
        std::time::Duration::from_secs(10),
    ));
    let mut v = Vec::new();
    let mut calls = Vec::new();
    for round in 0..5 {
        let c0 = ferrocuda_driver::guard::driver_calls();
        let t0 = now_ns();
        ok_g(exec.launch(&e.s));
        let out = lp
            .wait(std::time::Duration::from_secs(30))
            .unwrap_or_else(|err| die(&err.to_string()));
        let c1 = ferrocuda_driver::guard::driver_calls();
        ok_g(exec.synchronize(&e.s));
        if out.end != LoopEnd::Completed || out.steps != DEVICE_LOOP_STEPS {
            die(&format!("device_loop: the launch ended {out:?}"));
        }
        if round > 0 {
            v.push((now_ns() - t0) as f64 / DEVICE_LOOP_STEPS as f64);
            calls.push((c1 - c0) as f64 / DEVICE_LOOP_STEPS as f64);
        }
    }
    let mut sorted = v.clone();
    sorted.sort_by(f64::total_cmp);
    calls.sort_by(f64::total_cmp);
    let extra = format!(
        "\"rate\":{:.1},\"rate_unit\":\"steps/s\",\"steps_per_launch\":{DEVICE_LOOP_STEPS},\"driver_calls_per_step\":{:.5}",
        1e9 / sorted[sorted.len() / 2],
        calls[calls.len() - 1]
    );
    r.row("device_loop", "while_4_kernels", &mut v, &extra);
}

fn ok_g<T>(r: ferrocuda_graph::Result<T>) -> T {
    r.unwrap_or_else(|e| die(&e.to_string()))
}

fn trampoline_hostfunc(e: &Env, a: &Args, r: &mut Report) {
    trampoline(e, a, r, "trampoline_hostfunc", KickoffMode::HostFunc);
}

fn trampoline_gpuwrite(e: &Env, a: &Args, r: &mut Report) {
    trampoline(e, a, r, "trampoline_gpuwrite", KickoffMode::GpuWrite);
}

/// One step: [kickoff i] [wait flag >= i] [ack kernel]; enqueue -> ack seen (as the C baseline's
/// `run_trampoline`). Regimes as the C baseline's: the gate is the driver's wait, or the polling
/// gate.
fn trampoline(e: &Env, a: &Args, r: &mut Report, bench: &str, mode: KickoffMode) {
    e.s.set_kickoff_mode(mode);
    e.reset();
    loops::trampoline(e, a, r, bench, "wait", |i| {
        ok(e.s.enqueue_async_host_func(&e.flag, i, || {}));
        ok(e.s.wait_for_host_value_ge(&e.flag, i));
    });
    e.reset();
    loops::trampoline(e, a, r, bench, "poll", |i| {
        ok(e.s.enqueue_async_host_func(&e.flag, i, || {}));
        ok(e.s.wait_value(
            &e.flag,
            i,
            WaitCondition::GreaterOrEqual,
            GateStrategy::Polling {
                timeout: Some(std::time::Duration::from_secs(1)),
            },
        ));
    });
}

fn main() {
    let mut benches = loops::shared::<Env>();
    benches.extend([
        Bench::new("trampoline_gpuwrite", trampoline_gpuwrite),
        Bench::new("poll_gate_stream", poll_gate_stream),
        Bench::new("fused_gate_stream", fused_gate_stream),
        Bench::new("trampoline_hostfunc", trampoline_hostfunc),
        Bench::new("future_wake", future_wake::future_wake),
    ]);
    benches.extend([
        Bench::new("graph_wait_gate", graph_wait_gate),
        Bench::new("graph_poll_gate", graph_poll_gate),
        Bench::new("canonical_loop", canonical_loop),
        Bench::new("device_loop", device_loop),
    ]);
    // Names of the other programs' benchmarks (the bundle passes every program the same list) are
    // skipped; with none of ours, there is nothing to run.
    let Some(args) = Args::parse_lenient(&loops::names(&benches)) else {
        return;
    };
    let e = ok(Env::new(&args.cubin));
    ferrocuda_bench::threads::pin_from_env();
    let mut r = Report::open(
        "ferrocuda",
        &args,
        e.dev.name(),
        ok(Device::driver_version()),
    );
    loops::run(&e, &args, &mut r, &benches);
}
