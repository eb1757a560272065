//! ferrocuda's side of `cargo xtask bench`: the same loops as the C baseline (bench/raw/), through
//! ferrocuda-driver, in the same order and process states (bench/README.md).

use ferrocuda_bench::{Args, Gap, Report, collect, die, now_ns, spin_for_ns, wait_geq};
use ferrocuda_driver::{
    CompletionFlag, Device, DeviceBuffer, DeviceEvent, DeviceStream, Function, GateStrategy,
    KickoffMode, LaunchArgs, LaunchConfig, Module, Result, WaitCondition,
};
use ferrocuda_graph::Graph;
use std::sync::atomic::{AtomicU64, Ordering};

mod future_wake;
use future_wake::future_wake;

const KNOWN: &[&str] = &[
    "event_record_sync",
    "event_query",
    "launch_sync",
    "elapsed_time_accuracy",
    "write_value_seen",
    "cross_stream_event_wait",
    "signal_wait_ack",
    "signal_wait_write",
    "poll_gate_stream",
    "graph_wait_gate",
    "graph_poll_gate",
    "canonical_loop",
    "fused_gate_stream",
    "alloc_free_device",
    "alloc_free_pinned",
    "host_func_latency",
    "host_func_throughput",
    "trampoline_hostfunc",
    "trampoline_gpuwrite",
    "future_wake",
];

/// Steps the b2b regime keeps enqueued (as the C baseline).
const QUEUE_AHEAD: u64 = 16;

struct Env {
    dev: Device,
    s: DeviceStream,
    s2: DeviceStream,
    _module: Module,
    empty: Function,
    ack: Function,
    spin_ns: Function,
    /// For the graph rows (absent from the fake driver of `cargo xtask bench --smoke`).
    ack_inc: Option<Function>,
    /// `ferrocuda_fused_gate_ack`: the ack behind ferrocuda::wait_flag (ferrocuda/gate.cuh).
    fused_ack: Function,
    flag: CompletionFlag,
    ack_slot: CompletionFlag,
    /// Fused gates that gave up (their 1 s limit) add 1 here; the program fails if one did.
    expired: CompletionFlag,
    /// 32 words of device memory the reset zeroes on `s`, as the C baseline's.
    scratch: std::sync::Mutex<DeviceBuffer<u64>>,
}

impl Env {
    fn new(cubin: &str) -> Result<Env> {
        let dev = Device::new(0)?;
        let image = std::fs::read(cubin).unwrap_or_else(|e| die(&format!("{cubin}: {e}")));
        let module = Module::from_cubin(&dev, &image)?;
        let s = dev.new_stream()?;
        let scratch = std::sync::Mutex::new(s.alloc_zeroed::<u64>(32)?);
        Ok(Env {
            scratch,
            s,
            s2: dev.new_stream()?,
            empty: module.function("empty_kernel")?,
            ack: module.function("ack")?,
            spin_ns: module.function("spin_ns")?,
            ack_inc: module.function("ack_inc").ok(),
            fused_ack: module.function("ferrocuda_fused_gate_ack")?,
            _module: module,
            flag: CompletionFlag::new(&dev)?,
            ack_slot: CompletionFlag::new(&dev)?,
            expired: CompletionFlag::new(&dev)?,
            dev,
        })
    }

    /// Idle streams and zeroed slots between benchmarks.
    fn reset(&self) {
        self.s.synchronize().unwrap_or_else(|e| die(&e.to_string()));
        self.s2
            .synchronize()
            .unwrap_or_else(|e| die(&e.to_string()));
        if self.expired.load() != 0 {
            die("a fused gate gave up after its 1 s limit (a lost signal)");
        }
        self.flag.reset();
        self.ack_slot.reset();
        // As the C baseline's reset, which ends with a memset on each stream: the last operation
        // of every stream of the context decides what event calls cost (a kernel last on any of
        // them: ~1.2 us more; docs/benchmarks.md).
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        for s in [&self.s2, &self.s] {
            ok(s.memset_zero(&mut scratch));
            ok(s.synchronize());
        }
    }

    fn launch_ack(&self, s: &DeviceStream, v: u64) {
        let slot = self.ack_slot.as_flag_ref();
        // SAFETY: ack(u64* host_slot, u64 value).
        unsafe {
            s.launch(
                &self.ack,
                LaunchConfig::single_thread(),
                LaunchArgs::new().arg(&slot).arg(&v),
            )
        }
        .unwrap_or_else(|e| die(&e.to_string()));
    }

    fn wait_ack(&self, v: u64, what: &str) -> u64 {
        wait_geq(|| self.ack_slot.load(), v, what)
    }
}

fn ok<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| die(&e.to_string()))
}

fn events(e: &Env, a: &Args, r: &mut Report) {
    if a.wants("event_record_sync") {
        e.reset();
        let ev = ok(DeviceEvent::new(&e.dev, false));
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            ok(e.s.record_event(&ev));
            ok(ev.synchronize());
            (now_ns() - t0) as f64
        });
        r.row("event_record_sync", "idle_stream", &mut v, "");
    }
    if a.wants("event_query") {
        e.reset();
        let ev = ok(DeviceEvent::new(&e.dev, false));
        ok(e.s.record_event(&ev));
        ok(ev.synchronize());
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            let ready = ok(ev.is_ready());
            let t1 = now_ns();
            if !ready {
                die("event_query: a completed event is not ready");
            }
            (t1 - t0) as f64
        });
        r.row("event_query", "completed", &mut v, "");
    }
}

/// Benchmarks that run no host function (phase 3 of the C baseline's order).
fn no_hostfunc(e: &Env, a: &Args, r: &mut Report) -> usize {
    let mut ran = 0;
    if a.wants("launch_sync") {
        ran += 1;
        e.reset();
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            // SAFETY: empty_kernel().
            ok(unsafe {
                e.s.launch(
                    &e.empty,
                    LaunchConfig::single_thread(),
                    &mut LaunchArgs::new(),
                )
            });
            ok(e.s.synchronize());
            (now_ns() - t0) as f64
        });
        r.row("launch_sync", "empty_kernel", &mut v, "");
    }
    if a.wants("elapsed_time_accuracy") {
        ran += 1;
        e.reset();
        let (start, end) = (
            ok(DeviceEvent::new(&e.dev, true)),
            ok(DeviceEvent::new(&e.dev, true)),
        );
        for (regime, ns) in [("100us", 100_000u64), ("1ms", 1_000_000)] {
            let mut v = collect(a.warmup, a.samples, |_| {
                ok(e.s.record_event(&start));
                // SAFETY: spin_ns(u64).
                ok(unsafe {
                    e.s.launch(
                        &e.spin_ns,
                        LaunchConfig::single_thread(),
                        LaunchArgs::new().arg(&ns),
                    )
                });
                ok(e.s.record_event(&end));
                ok(end.synchronize());
                ok(start.elapsed_time(&end)) as f64 * 1e6
            });
            r.row(
                "elapsed_time_accuracy",
                regime,
                &mut v,
                &format!("\"requested_us\":{:.1}", ns as f64 / 1e3),
            );
        }
    }
    if a.wants("write_value_seen") {
        ran += 1;
        e.reset();
        let mut v = collect(a.warmup, a.samples, |i| {
            let t0 = now_ns();
            ok(e.s.write_host_value(&e.ack_slot, i));
            (e.wait_ack(i, "write_value_seen") - t0) as f64
        });
        r.row("write_value_seen", "idle_stream", &mut v, "");
    }
    if a.wants("cross_stream_event_wait") {
        ran += 1;
        e.reset();
        let ev = ok(DeviceEvent::new(&e.dev, false));
        let mut v = collect(a.warmup, a.samples, |i| {
            let t0 = now_ns();
            // SAFETY: empty_kernel().
            ok(unsafe {
                e.s.launch(
                    &e.empty,
                    LaunchConfig::single_thread(),
                    &mut LaunchArgs::new(),
                )
            });
            ok(e.s.record_event(&ev));
            ok(e.s2.wait_for_event(&ev));
            e.launch_ack(&e.s2, i);
            (e.wait_ack(i, "cross_stream_event_wait") - t0) as f64
        });
        r.row("cross_stream_event_wait", "kernel_event_ack", &mut v, "");
    }
    for (bench, with_kernel) in [("signal_wait_ack", true), ("signal_wait_write", false)] {
        if !a.wants(bench) {
            continue;
        }
        ran += 1;
        let enqueue = |i: u64| {
            ok(e.s.wait_for_host_value_ge(&e.flag, i));
            if with_kernel {
                e.launch_ack(&e.s, i);
            } else {
                ok(e.s.write_host_value(&e.ack_slot, i));
            }
        };
        gate_rows(e, a, r, bench, &enqueue);
    }
    if a.wants("poll_gate_stream") {
        ran += 1;
        let enqueue = |i: u64| {
            ok(e.s.wait_value(
                &e.flag,
                i,
                WaitCondition::GreaterOrEqual,
                GateStrategy::Polling {
                    timeout: Some(std::time::Duration::from_secs(1)),
                },
            ));
            e.launch_ack(&e.s, i);
        };
        gate_rows(e, a, r, "poll_gate_stream", &enqueue);
    }
    if a.wants("fused_gate_stream") {
        ran += 1;
        // As the C baseline's step_fused: one block of 32 threads, thread 0 polls (with a 1 s
        // limit), the block syncs, thread 0 acks; here the gate is ferrocuda::wait_flag.
        let enqueue = |i: u64| {
            let (flag, slot, expired) = (
                e.flag.device_ptr(),
                e.ack_slot.device_ptr(),
                e.expired.device_ptr(),
            );
            // SAFETY: `fused_ack` is ferrocuda_fused_gate_ack; the three slots are flags of `e`,
            // which outlives every launch (`reset` synchronizes the stream).
            unsafe {
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
            }
            .unwrap_or_else(|err| die(&err.to_string()));
        };
        gate_rows(e, a, r, "fused_gate_stream", &enqueue);
        e.reset();
    }
    let graphs = std::env::var_os("FERROCUDA_BENCH_NO_GRAPHS").is_none();
    if graphs && a.wants("graph_wait_gate") {
        ran += 1;
        graph_gate(e, a, r, "graph_wait_gate", false);
    }
    if graphs && a.wants("graph_poll_gate") {
        ran += 1;
        graph_gate(e, a, r, "graph_poll_gate", true);
    }
    if a.wants("alloc_free_device") {
        ran += 1;
        e.reset();
        let mut n = 0usize;
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            let b = ok(e.s.alloc::<u8>(1 << 20));
            drop(b);
            let t1 = now_ns();
            n += 1;
            if n.is_multiple_of(256) {
                ok(e.s.synchronize());
            }
            (t1 - t0) as f64
        });
        r.row("alloc_free_device", "async_1MiB", &mut v, "");
    }
    if a.wants("alloc_free_pinned") {
        ran += 1;
        e.reset();
        // A flag is pooled pinned memory: new + drop reuses a slot after the reclaimer's fence.
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            let f = ok(CompletionFlag::new(&e.dev));
            drop(f);
            (now_ns() - t0) as f64
        });
        r.row(
            "alloc_free_pinned",
            "flag_8B",
            &mut v,
            "\"note\":\"pooled CompletionFlag\"",
        );
    }
    ran
}

/// The C baseline's `run_gate`: idle (30–50 µs before each signal) and b2b (16 steps ahead).
fn gate_rows(e: &Env, a: &Args, r: &mut Report, bench: &str, enqueue: &dyn Fn(u64)) {
    let total = (a.warmup + a.samples) as u64;
    e.reset();
    let mut gap = Gap::default();
    let mut v = collect(a.warmup, a.samples, |i| {
        enqueue(i);
        spin_for_ns(gap.next_ns());
        let t0 = now_ns();
        e.flag.signal(i);
        (e.wait_ack(i, bench) - t0) as f64
    });
    r.row(bench, "idle", &mut v, "");
    e.reset();
    for i in 1..=QUEUE_AHEAD.min(total) {
        enqueue(i);
    }
    let mut v = collect(a.warmup, a.samples, |i| {
        let t0 = now_ns();
        e.flag.signal(i);
        let t1 = e.wait_ack(i, bench);
        if i + QUEUE_AHEAD <= total {
            enqueue(i + QUEUE_AHEAD);
        }
        (t1 - t0) as f64
    });
    r.row(bench, "b2b", &mut v, "");
}

/// The graph gates, as the C baseline's: [gate: flag >= i] -> [ack_inc kernel], the gate's value
/// updated before each launch (`GraphExec::set_wait_value`); a fresh graph per regime, so the
/// device-side replay count starts at 0.
fn graph_gate(e: &Env, a: &Args, r: &mut Report, bench: &str, poll: bool) {
    let total = (a.warmup + a.samples) as u64;
    for regime in ["idle", "b2b"] {
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
        let enqueue = |i: u64| {
            ok_g(exec.set_wait_value(gate, i));
            ok_g(exec.launch(&e.s));
        };
        let mut gap = Gap::default();
        let mut v = if regime == "idle" {
            collect(a.warmup, a.samples, |i| {
                enqueue(i);
                spin_for_ns(gap.next_ns());
                let t0 = now_ns();
                e.flag.signal(i);
                (e.wait_ack(i, bench) - t0) as f64
            })
        } else {
            for i in 1..=QUEUE_AHEAD.min(total) {
                enqueue(i);
            }
            collect(a.warmup, a.samples, |i| {
                let t0 = now_ns();
                e.flag.signal(i);
                let t1 = e.wait_ack(i, bench);
                if i + QUEUE_AHEAD <= total {
                    enqueue(i + QUEUE_AHEAD);
                }
                (t1 - t0) as f64
            })
        };
        r.row(bench, regime, &mut v, "");
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
        ok(e.s.synchronize());
        ready
            .wait(WaitCondition::Equal, 1, std::time::Duration::from_secs(5))
            .unwrap_or_else(|e| die(&e.to_string()));
        if round > 0 {
            v.push((now_ns() - t0) as f64 / n as f64);
        }
    }
    let rate = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        1e9 / s[s.len() / 2]
    };
    let extra = format!("\"rate\":{:.1},\"rate_unit\":\"steps/s\"", rate(&v));
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
        for round in 0..5 {
            let t0 = now_ns();
            for _ in 0..n {
                ok_g(exec.launch(&e.s));
            }
            ok_g(exec.synchronize(&e.s));
            ready
                .wait(WaitCondition::Equal, 1, std::time::Duration::from_secs(5))
                .unwrap_or_else(|e| die(&e.to_string()));
            if round > 0 {
                v.push((now_ns() - t0) as f64 / n as f64);
            }
        }
        let extra = format!("\"rate\":{:.1},\"rate_unit\":\"steps/s\"", rate(&v));
        r.row("canonical_loop", regime, &mut v, &extra);
    }
}

fn ok_g<T>(r: ferrocuda_graph::Result<T>) -> T {
    r.unwrap_or_else(|e| die(&e.to_string()))
}

fn hostfunc(e: &Env, a: &Args, r: &mut Report) -> usize {
    let mut ran = 0;
    if a.wants("host_func_latency") {
        ran += 1;
        e.reset();
        r.state = "after_hostfunc";
        // (count, ran_ns), leaked: the closure captures a plain reference, as the C callback
        // gets a pointer (an Arc clone per enqueue would add two contended atomics).
        let mark: &'static (AtomicU64, AtomicU64) =
            Box::leak(Box::new((AtomicU64::new(0), AtomicU64::new(0))));
        let mut v = collect(a.warmup, a.samples, |i| {
            let m = mark;
            let t0 = now_ns();
            ok(e.s.enqueue_host_func(move || {
                m.1.store(now_ns(), Ordering::Relaxed);
                m.0.fetch_add(1, Ordering::Release);
            }));
            wait_geq(|| mark.0.load(Ordering::Acquire), i, "host_func_latency");
            (mark.1.load(Ordering::Relaxed) - t0) as f64
        });
        r.row("host_func_latency", "enqueue_to_run", &mut v, "");
    }
    if a.wants("host_func_throughput") {
        ran += 1;
        e.reset();
        r.state = "after_hostfunc";
        let count: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let mut v = collect(5, 50, |b| {
            let t0 = now_ns();
            for _ in 0..1000 {
                let c = count;
                ok(e.s.enqueue_host_func(move || {
                    c.fetch_add(1, Ordering::Release);
                }));
            }
            (wait_geq(
                || count.load(Ordering::Acquire),
                b * 1000,
                "host_func_throughput",
            ) - t0) as f64
                / 1000.0
        });
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        let med = sorted[sorted.len() / 2];
        r.row(
            "host_func_throughput",
            "batch1000",
            &mut v,
            &format!(
                "\"rate\":{:.1},\"rate_unit\":\"callbacks/s\",\"batch\":1000",
                1e9 / med
            ),
        );
    }
    if a.wants("trampoline_hostfunc") {
        ran += 1;
        r.state = "after_hostfunc";
        trampoline(e, a, r, "trampoline_hostfunc", KickoffMode::HostFunc);
    }
    if a.wants("canonical_loop") && std::env::var_os("FERROCUDA_BENCH_NO_GRAPHS").is_none() {
        ran += 1;
        r.state = "after_hostfunc";
        canonical_loop(e, a, r);
    }
    ran
}

/// One step: [kickoff i] [wait flag >= i] [ack kernel]; enqueue -> ack seen (as the C baseline's
/// `run_trampoline`, regime `wait`).
fn trampoline(e: &Env, a: &Args, r: &mut Report, bench: &str, mode: KickoffMode) {
    e.s.set_kickoff_mode(mode);
    // Regimes as the C baseline's: the gate is the driver's wait, or the polling gate.
    for regime in ["wait", "poll"] {
        e.reset();
        let mut v = collect(a.warmup, a.samples * 5, |i| {
            let t0 = now_ns();
            ok(e.s.enqueue_async_host_func(&e.flag, i, || {}));
            if regime == "wait" {
                ok(e.s.wait_for_host_value_ge(&e.flag, i));
            } else {
                ok(e.s.wait_value(
                    &e.flag,
                    i,
                    WaitCondition::GreaterOrEqual,
                    GateStrategy::Polling {
                        timeout: Some(std::time::Duration::from_secs(1)),
                    },
                ));
            }
            e.launch_ack(&e.s, i);
            (e.wait_ack(i, bench) - t0) as f64
        });
        r.row(bench, regime, &mut v, "");
    }
}

/// `--diag`: what makes event calls slower in a process (GPU.md's trap), step by step: p50 of
/// event record + synchronize on the main stream after 2,000 steps of each pattern, each pattern
/// started from the state that 2,000 `write_host_value` steps leave (fresh-process level).
fn diag(e: &Env) {
    let probe_on = |s: &DeviceStream, label: &str| {
        let ev = ok(DeviceEvent::new(&e.dev, false));
        let mut v = collect(200, 1000, |_| {
            let t0 = now_ns();
            ok(s.record_event(&ev));
            ok(ev.synchronize());
            (now_ns() - t0) as f64
        });
        v.sort_by(f64::total_cmp);
        let mut q = collect(200, 1000, |_| {
            let t0 = now_ns();
            ok(ev.is_ready());
            (now_ns() - t0) as f64
        });
        q.sort_by(f64::total_cmp);
        println!(
            "diag: event record+sync p50 {:>6.3} us  p90 {:>6.3} us  query p50 {:>6.3} us  after {label}",
            v[v.len() / 2] / 1e3,
            v[v.len() * 9 / 10] / 1e3,
            q[q.len() / 2] / 1e3
        );
    };
    let probe = |label: &str| probe_on(&e.s, label);
    const N: u64 = 2000;
    let restore = || {
        e.reset();
        for i in 1..=N {
            ok(e.s.write_host_value(&e.ack_slot, i));
            e.wait_ack(i, "diag");
        }
        e.reset();
        probe("  (restored: 2000 write_host_value + host spin-wait, then the reset)");
    };
    // 2,000 ack kernels with ack values from `from`, the host spin-waiting on each.
    let kernels = |from: u64| {
        for i in from..from + N {
            e.launch_ack(&e.s, i);
            e.wait_ack(i, "diag");
        }
    };
    probe("start");
    std::thread::scope(|sc| {
        sc.spawn(|| spin_for_ns(100_000_000));
    });
    probe("a second thread spun 100 ms (no driver calls)");

    restore();
    kernels(1);
    probe("A: 2000 ack kernels, host spin-wait");
    // Which single operation after kernels brings event calls back (the C baseline's reset ends
    // with a 256-byte memset on its stream), on memory from the stream-ordered pool (ferrocuda's
    // and cudarc's) and from cuMemAlloc (the C baseline's scratch).
    let d = ferrocuda_driver::sys::driver().unwrap_or_else(|e| die(&e.to_string()));
    let check = |r: ferrocuda_driver::sys::CUresult, what: &str| {
        if r != ferrocuda_driver::sys::CUresult::CUDA_SUCCESS {
            die(&format!("diag: {what} failed: {r:?}"));
        }
    };
    let mut plain: ferrocuda_driver::sys::CUdeviceptr = 0;
    // SAFETY: the device's context is current on this thread (the bench made driver calls on it).
    check(unsafe { (d.cuMemAlloc_v2)(&mut plain, 256) }, "cuMemAlloc");
    let pool = std::sync::Mutex::new(ok(e.s.alloc_zeroed::<u64>(32)));
    let memset_pool = || {
        let mut b = pool.lock().unwrap_or_else(|p| p.into_inner());
        ok(e.s.memset_zero(&mut b));
        ok(e.s.synchronize());
    };
    let memset_plain = || {
        // SAFETY: 256 bytes at `plain` stay allocated until the end of this block; the stream is
        // live.
        check(
            unsafe { (d.cuMemsetD8Async)(plain, 0, 256, e.s.as_raw()) },
            "cuMemsetD8Async",
        );
        ok(e.s.synchronize());
    };
    ok(e.s.synchronize());
    kernels(N + 1);
    memset_pool();
    probe("A1: 2000 ack kernels, then one 256-byte memset (pool memory) + synchronize");
    kernels(2 * N + 1);
    ok(e.s.write_host_value(&e.ack_slot, 3 * N + 1));
    ok(e.s.synchronize());
    probe("A2: 2000 ack kernels, then one write_host_value + synchronize");
    kernels(3 * N + 2);
    e.launch_ack(&e.s, 4 * N + 2);
    ok(e.s.synchronize());
    probe("A3: 2000 ack kernels, then one more kernel + synchronize (control)");
    kernels(4 * N + 3);
    memset_plain();
    probe("A4: 2000 ack kernels, then one memset of cuMemAlloc memory + synchronize");
    for (label, memset) in [
        (
            "A5: then one memset of pool memory + synchronize",
            &memset_pool as &dyn Fn(),
        ),
        (
            "A6: then one memset of cuMemAlloc memory + synchronize",
            &memset_plain,
        ),
    ] {
        memset();
        probe(label);
    }
    drop(pool);
    // SAFETY: nothing uses `plain` any more (the stream was synchronized).
    check(unsafe { (d.cuMemFree_v2)(plain) }, "cuMemFree");

    restore();
    e.flag.signal(u64::MAX / 4);
    for i in 1..=N {
        ok(e.s.wait_for_host_value_ge(&e.flag, i));
        e.launch_ack(&e.s, i);
        e.wait_ack(i, "diag");
    }
    probe("B: 2000 driver waits already satisfied + ack");

    restore();
    for i in 1..=N {
        ok(e.s.wait_for_host_value_ge(&e.flag, i));
        e.launch_ack(&e.s, i);
        e.flag.signal(i);
        e.wait_ack(i, "diag");
    }
    probe("C: 2000 driver waits signalled by this thread after the enqueue + ack");

    restore();
    for i in 1..=N {
        ok(e.s.wait_value(
            &e.flag,
            i,
            WaitCondition::GreaterOrEqual,
            GateStrategy::Polling { timeout: None },
        ));
        e.launch_ack(&e.s, i);
        e.flag.signal(i);
        e.wait_ack(i, "diag");
    }
    probe("D: 2000 polling gates signalled by this thread + ack");

    restore();
    let kick = ok(CompletionFlag::new(&e.dev));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut seen = 0;
            while !stop.load(Ordering::Acquire) {
                let k = kick.load();
                if k != seen {
                    seen = k;
                    e.flag.signal(k);
                }
                std::hint::spin_loop();
            }
        });
        for i in 1..=N {
            ok(e.s.write_host_value(&kick, i));
            ok(e.s.wait_for_host_value_ge(&e.flag, i));
            e.launch_ack(&e.s, i);
            e.wait_ack(i, "diag");
        }
        stop.store(true, Ordering::Release);
    });
    probe(
        "E: 2000 raw-like trampoline steps (write kick, a plain spinning thread signals, driver wait, ack)",
    );

    restore();
    e.s.set_kickoff_mode(KickoffMode::GpuWrite);
    for i in 1..=N {
        ok(e.s.enqueue_async_host_func(&e.flag, i, || {}));
        ok(e.s.wait_value(
            &e.flag,
            i,
            WaitCondition::GreaterOrEqual,
            GateStrategy::Polling { timeout: None },
        ));
        e.launch_ack(&e.s, i);
        e.wait_ack(i, "diag");
    }
    probe("F: 2000 GPU-write trampoline steps, polling gate");

    restore();
    for i in 1..=N {
        ok(e.s.enqueue_async_host_func(&e.flag, i, || {}));
        ok(e.s.wait_for_host_value_ge(&e.flag, i));
        e.launch_ack(&e.s, i);
        e.wait_ack(i, "diag");
    }
    probe("G: 2000 GPU-write trampoline steps, driver wait");
    let s3 = ok(e.dev.new_stream());
    probe_on(&s3, "G, then on a new stream");
    probe_on(&e.s2, "G, then on the second stream (idle throughout)");
    std::thread::sleep(std::time::Duration::from_millis(200));
    probe("G, then 200 ms later (notifier parked)");

    restore();
    for _ in 0..100 {
        drop(ok(e.s.alloc::<u8>(1 << 20)));
    }
    ok(e.s.synchronize());
    probe("H: 100 device alloc/free");

    restore();
    for _ in 0..100 {
        drop(ok(CompletionFlag::new(&e.dev)));
    }
    ok(ferrocuda_driver::wait_for_releases(
        std::time::Duration::from_secs(5),
    ));
    probe("I: 100 flag new/drop (reclaimer fences)");

    restore();
    ok(e.s.enqueue_host_func(|| {}));
    ok(e.s.synchronize());
    probe("J: one host function");
    restore();
}

fn main() {
    if std::env::args().any(|a| a == "--diag") {
        let cubin = std::env::args()
            .skip_while(|a| a != "--cubin")
            .nth(1)
            .unwrap_or_else(|| die("--cubin"));
        diag(&ok(Env::new(&cubin)));
        return;
    }
    // Names of the other programs' benchmarks (the bundle passes every program the same list) are
    // skipped; with none of ours, there is nothing to run.
    let Some(args) = Args::parse_lenient(KNOWN) else {
        return;
    };
    let e = ok(Env::new(&args.cubin));
    let mut r = Report::open(
        "ferrocuda",
        &args,
        e.dev.name(),
        ok(Device::driver_version()),
    );
    events(&e, &args, &mut r);
    if args.wants("trampoline_gpuwrite") {
        trampoline(
            &e,
            &args,
            &mut r,
            "trampoline_gpuwrite",
            KickoffMode::GpuWrite,
        );
        r.state = "after_gpuwrite";
        events(&e, &args, &mut r);
        r.state = "fresh";
    }
    if no_hostfunc(&e, &args, &mut r) > 0 {
        r.state = "before_hostfunc";
        events(&e, &args, &mut r);
    }
    if hostfunc(&e, &args, &mut r) > 0 {
        r.state = "after_hostfunc";
        events(&e, &args, &mut r);
    }
    // Last, so that its threads' driver calls cannot change the state of the rows above; its
    // event rows are taken in whatever state the process has reached (the row says which).
    if args.wants("future_wake") {
        future_wake(&e, &args, &mut r);
    }
    e.reset();
}
