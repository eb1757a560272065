//! What makes event calls slower in a process, step by step: a probe run by hand, not part of the
//! benchmark rows.
//!
//! Once a process has run certain work, `cuEventRecord` + `cuEventSynchronize` and `cuEventQuery`
//! cost more (`docs/hardware-facts.md`, "Event calls"), until some other operation runs; the
//! benchmark programs' reset between benchmarks is shaped by what this probe found (bench/README.md, "Process states"). It prints,
//! after each pattern of work, the p50 and p90 of event record + synchronize and the p50 of the
//! query of a completed event (1,000 samples after 200 warm-up each), on the main stream unless
//! the line says otherwise. Each pattern is 2,000 steps of one kind of work (ack kernels, driver
//! waits, polling gates, either trampoline, allocations, a host function) and starts from the
//! state that 2,000 `write_host_value` steps and the reset leave, which is the fresh process's
//! level; the `A*` lines try which single operation after kernels brings the cost back down.
//!
//! Run it on a GPU machine from the benchmark bundle (`cargo xtask bench --bundle DIR` ships it,
//! though `DIR/run` does not run it):
//!
//! ```sh
//! DIR/bin/event_cost_probe --cubin DIR/cubin/bench_kernels.cubin
//! ```
//!
//! or, where a GPU and the cubin are, `cargo run --release -p ferrocuda-bench --bin
//! event_cost_probe -- --cubin FILE`.

use ferrocuda_bench::backend::Backend;
use ferrocuda_bench::ferrocuda::{Env, ok};
use ferrocuda_bench::{collect, die, now_ns, spin_for_ns};
use ferrocuda_driver::{
    CompletionFlag, DeviceEvent, DeviceStream, GateStrategy, KickoffMode, WaitCondition,
};
use std::sync::atomic::Ordering;

/// Every pattern of the module docs, each followed by its probe line.
fn run(e: &Env) {
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
        // A line per pattern, printed as soon as it is measured, not a table at the end: this is
        // the probe's only output (it writes no JSON), and a failing driver call exits the
        // program (`die`), which would lose a table that was still being built.
        println!(
            "event record+sync p50 {:>6.3} us  p90 {:>6.3} us  query p50 {:>6.3} us  after {label}",
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
            e.wait_ack(i, "event_cost_probe");
        }
        e.reset();
        probe("  (restored: 2000 write_host_value + host spin-wait, then the reset)");
    };
    // 2,000 ack kernels with ack values from `from`, the host spin-waiting on each.
    let kernels = |from: u64| {
        for i in from..from + N {
            e.launch_ack(&e.s, i);
            e.wait_ack(i, "event_cost_probe");
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
            die(&format!("{what} failed: {r:?}"));
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
        e.wait_ack(i, "event_cost_probe");
    }
    probe("B: 2000 driver waits already satisfied + ack");

    restore();
    for i in 1..=N {
        ok(e.s.wait_for_host_value_ge(&e.flag, i));
        e.launch_ack(&e.s, i);
        e.flag.signal(i);
        e.wait_ack(i, "event_cost_probe");
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
        e.wait_ack(i, "event_cost_probe");
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
            e.wait_ack(i, "event_cost_probe");
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
        e.wait_ack(i, "event_cost_probe");
    }
    probe("F: 2000 GPU-write trampoline steps, polling gate");

    restore();
    for i in 1..=N {
        ok(e.s.enqueue_async_host_func(&e.flag, i, || {}));
        ok(e.s.wait_for_host_value_ge(&e.flag, i));
        e.launch_ack(&e.s, i);
        e.wait_ack(i, "event_cost_probe");
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
    let mut argv = std::env::args().skip(1);
    let cubin = match (argv.next().as_deref(), argv.next(), argv.next()) {
        (Some("--cubin"), Some(cubin), None) => cubin,
        _ => die("usage: event_cost_probe --cubin FILE (the bundle's cubin/bench_kernels.cubin)"),
    };
    run(&ok(Env::new(&cubin)));
}
