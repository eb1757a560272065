//! `future_wake`: GPU point reached → future woken, against a busy-polling thread and
//! `cuEventSynchronize` (bench/README.md, "Futures").

use ferrocuda_bench::backend::Backend;
use ferrocuda_bench::ferrocuda::{Env, ok};
use ferrocuda_bench::{Args, Report, collect, die, now_ns, wait_geq};
use ferrocuda_driver::{
    CompletionFlag, DeviceEvent, LaunchArgs, LaunchConfig, Result, WaitCondition,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// A waker that stamps the time of its (first) wake and unparks the thread that polls.
struct Stamp {
    thread: std::thread::Thread,
    woken_ns: AtomicU64,
}

impl Wake for Stamp {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self
            .woken_ns
            .compare_exchange(0, now_ns(), Ordering::AcqRel, Ordering::Relaxed);
        self.thread.unpark();
    }
}

/// CPU time (user + system, clock ticks of 10 ms) of the crate's waiter thread.
fn waiter_cpu_ticks() -> u64 {
    let mut ticks = 0;
    for e in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("ferrocuda-waite") {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    ticks
}

#[derive(Clone, Copy, PartialEq)]
enum Point {
    /// The stream writes the sample's index into `ack_slot` (`write_host_value`).
    Flag,
    /// The stream records `ev`.
    Event,
}

#[derive(Clone, Copy, PartialEq)]
enum Waiter {
    /// A future (`flag.wait_async` / `ev.wait_async`) polled by a minimal block_on.
    Future,
    /// `cuEventSynchronize` on the measuring thread.
    Sync,
}

/// `future_wake` (ferrocuda only): GPU point reached → future woken. Step n =
/// [gate: flag ≥ n] [spin kernel D] [GPU point: write n to a flag, or record an event]. An observer
/// thread busy-polls the GPU point (a load of the flag, or `cuEventQuery`) and stamps when it first
/// sees it: that is "reached". The measuring thread polls the future once (it must be pending: the
/// gate is closed), opens the gate, and waits; the future's waker stamps the time it is called.
/// Sample = woken − seen: how far the future lags a busy-polling thread. `event_sync_*` rows time
/// `cuEventSynchronize`'s return the same way.
pub fn future_wake(e: &Env, a: &Args, r: &mut Report) {
    e.reset();
    let gate = ok(CompletionFlag::new(&e.dev));
    let ev = ok(DeviceEvent::new(&e.dev, false));
    let armed = AtomicU64::new(0);
    let event_kind = AtomicBool::new(false);
    let seen_at = AtomicU64::new(0);
    let seen_idx = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let default_spin = ferrocuda_driver::waiter_spin();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut last = 0;
            while !stop.load(Ordering::Acquire) {
                let i = armed.load(Ordering::Acquire);
                if i == last {
                    std::hint::spin_loop();
                    continue;
                }
                let ev_kind = event_kind.load(Ordering::Acquire);
                let start = now_ns();
                loop {
                    let reached = if ev_kind {
                        ok(ev.is_ready())
                    } else {
                        e.ack_slot.load() >= i
                    };
                    if reached {
                        seen_at.store(now_ns(), Ordering::Release);
                        seen_idx.store(i, Ordering::Release);
                        break;
                    }
                    if now_ns() - start > 2_000_000_000 {
                        die(&format!("future_wake: observer waited 2 s for point {i}"));
                    }
                }
                last = i;
            }
        });
        let mut n = 0u64;
        let mut step = |point: Point, spin_ns: u64, how: Waiter| -> f64 {
            n += 1;
            ok(e.s.wait_for_host_value_ge(&gate, n));
            // SAFETY: spin_ns(u64).
            ok(unsafe {
                e.s.launch(
                    &e.spin_ns,
                    LaunchConfig::single_thread(),
                    LaunchArgs::new().arg(&spin_ns),
                )
            });
            match point {
                Point::Flag => ok(e.s.write_host_value(&e.ack_slot, n)),
                Point::Event => ok(e.s.record_event(&ev)),
            }
            event_kind.store(point == Point::Event, Ordering::Release);
            armed.store(n, Ordering::Release);
            let woken = match how {
                Waiter::Sync => {
                    gate.signal(n);
                    ok(ev.synchronize());
                    now_ns()
                }
                Waiter::Future => {
                    let stamp = Arc::new(Stamp {
                        thread: std::thread::current(),
                        woken_ns: AtomicU64::new(0),
                    });
                    let waker = Waker::from(stamp.clone());
                    let mut cx = Context::from_waker(&waker);
                    let mut fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64>>>> =
                        match point {
                            Point::Flag => {
                                Box::pin(e.ack_slot.wait_async(WaitCondition::GreaterOrEqual, n))
                            }
                            Point::Event => Box::pin(async { ev.wait_async().await.map(|()| 0) }),
                        };
                    if fut.as_mut().poll(&mut cx).is_ready() {
                        die("future_wake: the future resolved before its gate opened");
                    }
                    gate.signal(n);
                    let start = now_ns();
                    loop {
                        // Poll only once the waker ran: a spurious unpark must not turn into a
                        // sample without a wake (the waker is what is measured).
                        if stamp.woken_ns.load(Ordering::Acquire) != 0
                            && let Poll::Ready(res) = fut.as_mut().poll(&mut cx)
                        {
                            ok(res);
                            break;
                        }
                        if now_ns() - start > 2_000_000_000 {
                            die("future_wake: the future was not woken within 2 s");
                        }
                        std::thread::park_timeout(Duration::from_millis(1));
                    }
                    match stamp.woken_ns.load(Ordering::Acquire) {
                        0 => die("future_wake: the future resolved without a wake"),
                        t => t,
                    }
                }
            };
            wait_geq(
                || seen_idx.load(Ordering::Acquire),
                n,
                "future_wake observer",
            );
            woken as f64 - seen_at.load(Ordering::Acquire) as f64
        };
        // Idle CPU of the waiter: after a few wake-ups, nothing pending for 1 s.
        for _ in 0..10 {
            step(Point::Flag, 20_000, Waiter::Future);
        }
        std::thread::sleep(Duration::from_millis(50));
        let t0 = waiter_cpu_ticks();
        std::thread::sleep(Duration::from_secs(1));
        let idle_ms = (waiter_cpu_ticks() - t0) * 10;
        let long = (a.samples / 10).max(10);
        let long_warmup = (a.warmup / 10).max(2);
        let rows: [(&str, Point, u64, Waiter, Option<Duration>); 7] = [
            ("flag_20us", Point::Flag, 20_000, Waiter::Future, None),
            ("flag_2ms", Point::Flag, 2_000_000, Waiter::Future, None),
            (
                "flag_2ms_spinning",
                Point::Flag,
                2_000_000,
                Waiter::Future,
                Some(Duration::from_millis(10)),
            ),
            ("event_20us", Point::Event, 20_000, Waiter::Future, None),
            ("event_2ms", Point::Event, 2_000_000, Waiter::Future, None),
            ("event_sync_20us", Point::Event, 20_000, Waiter::Sync, None),
            (
                "event_sync_2ms",
                Point::Event,
                2_000_000,
                Waiter::Sync,
                None,
            ),
        ];
        for (regime, point, spin_ns, how, spin) in rows {
            ferrocuda_driver::set_waiter_spin(spin.unwrap_or(default_spin));
            let (w, s) = if spin_ns > 100_000 {
                (long_warmup, long)
            } else {
                (a.warmup, a.samples)
            };
            let (c0, t0) = (waiter_cpu_ticks(), now_ns());
            let mut v = collect(w, s, |_| step(point, spin_ns, how));
            let cpu_pct = ((waiter_cpu_ticks() - c0) * 10_000_000) as f64 / (now_ns() - t0) as f64;
            r.row(
                "future_wake",
                regime,
                &mut v,
                &format!(
                    "\"gpu_spin_us\":{:.0},\"waiter_spin_us\":{:.0},\"waiter_cpu_pct\":{cpu_pct:.1},\"waiter_idle_cpu_ms_per_s\":{idle_ms}",
                    spin_ns as f64 / 1e3,
                    ferrocuda_driver::waiter_spin().as_secs_f64() * 1e6
                ),
            );
        }
        ferrocuda_driver::set_waiter_spin(default_spin);
        stop.store(true, Ordering::Release);
    });
    e.reset();
}
