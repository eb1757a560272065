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

/// CPU time (clock ticks of 10 ms) of the crate's waiter thread.
fn waiter_cpu_ticks() -> u64 {
    ferrocuda_bench::thread_cpu_ticks("ferrocuda-waite")
}

#[derive(Clone, Copy, PartialEq)]
enum Point {
    /// The stream writes the sample's index into `ack_slot` (`write_host_value`).
    Flag,
    /// The stream records `ev` (and `ev_blocking`).
    Event,
    /// The stream writes the flag and then has nothing more: the point of `synchronize_async`.
    Stream,
}

#[derive(Clone, Copy, PartialEq)]
enum Waiter {
    /// A future (`flag.wait_async` / `ev.wait_async` / `stream.synchronize_async`) polled by a
    /// minimal block_on.
    Future,
    /// `cuEventSynchronize` on the measuring thread (a default event: the driver spins).
    Sync,
    /// `cuEventSynchronize` on an event created with `CU_EVENT_BLOCKING_SYNC` (the driver sleeps
    /// the thread until the GPU's interrupt): the raw driver's way to wait without a core.
    BlockingSync,
}

/// The GPU's wait before the point, in ns: `spin_ns` fixed, or uniform in [spin_ns / 2,
/// 3 spin_ns / 2) per sample when jittered (a wait whose length does not repeat).
fn gpu_wait(spin_ns: u64, jitter: bool, i: u64) -> u64 {
    if !jitter {
        return spin_ns;
    }
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    spin_ns / 2 + x % spin_ns
}

/// CPU time of the waiter, in % of one core, while a future is pending and nothing happens.
fn pending_idle_cpu_pct(e: &Env) -> f64 {
    let never = ok(CompletionFlag::new(&e.dev));
    let fut = never.wait_async(WaitCondition::GreaterOrEqual, 1);
    let waker = Waker::from(Arc::new(Stamp {
        thread: std::thread::current(),
        woken_ns: AtomicU64::new(0),
    }));
    let mut fut = Box::pin(fut);
    if fut
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_ready()
    {
        die("future_wake: a flag nobody writes was ready");
    }
    std::thread::sleep(Duration::from_millis(50));
    let (c0, t0) = (waiter_cpu_ticks(), now_ns());
    std::thread::sleep(Duration::from_secs(2));
    let pct = ((waiter_cpu_ticks() - c0) * 10_000_000) as f64 / (now_ns() - t0) as f64 * 100.0;
    drop(fut);
    pct
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
    let d = ferrocuda_driver::sys::driver().unwrap_or_else(|err| die(&err.to_string()));
    ok(e.dev.make_current());
    let mut ev_blocking = std::ptr::null_mut();
    // SAFETY: the device's context is current; `ev_blocking` is a valid out-pointer. The event is
    // destroyed at the end of this function.
    let rc = unsafe {
        d.cuEventCreate(
            &mut ev_blocking,
            ferrocuda_driver::sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC.0
                | ferrocuda_driver::sys::CUevent_flags::CU_EVENT_DISABLE_TIMING.0,
        )
    };
    if rc != ferrocuda_driver::sys::CUresult::CUDA_SUCCESS {
        die(&format!(
            "future_wake: cuEventCreate(BLOCKING_SYNC): {rc:?}"
        ));
    }
    let ev_blocking = ev_blocking as usize;
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
            let spin_ns = gpu_wait(spin_ns & !1, spin_ns & 1 == 1, n);
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
                Point::Flag | Point::Stream => ok(e.s.write_host_value(&e.ack_slot, n)),
                Point::Event => {
                    ok(e.s.record_event(&ev));
                    // SAFETY: a live event and stream of the current context.
                    let rc = unsafe { d.cuEventRecord(ev_blocking as _, e.s.as_raw()) };
                    if rc != ferrocuda_driver::sys::CUresult::CUDA_SUCCESS {
                        die(&format!("future_wake: cuEventRecord: {rc:?}"));
                    }
                }
            }
            event_kind.store(point == Point::Event, Ordering::Release);
            armed.store(n, Ordering::Release);
            let woken = match how {
                Waiter::Sync => {
                    gate.signal(n);
                    ok(ev.synchronize());
                    now_ns()
                }
                Waiter::BlockingSync => {
                    gate.signal(n);
                    // SAFETY: a live event.
                    let rc = unsafe { d.cuEventSynchronize(ev_blocking as _) };
                    if rc != ferrocuda_driver::sys::CUresult::CUDA_SUCCESS {
                        die(&format!("future_wake: cuEventSynchronize: {rc:?}"));
                    }
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
                            Point::Stream => {
                                let f = e.s.synchronize_async();
                                Box::pin(async { f.await.map(|()| 0) })
                            }
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
        let pending_idle_pct = pending_idle_cpu_pct(e);
        let long = (a.samples / 10).max(10);
        let long_warmup = (a.warmup / 10).max(2);
        let longest = (a.samples / 50).max(10);
        // An odd `spin_ns` asks for a jittered wait around it (`gpu_wait`).
        const JITTER: u64 = 1;
        let mut rows: Vec<(String, Point, u64, Waiter, Option<Duration>)> = Vec::new();
        for (label, spin_ns) in [
            ("20us", 20_000u64),
            ("2ms", 2_000_000),
            ("50ms", 50_000_000),
        ] {
            for (kind, point) in [
                ("flag", Point::Flag),
                ("event", Point::Event),
                ("stream", Point::Stream),
            ] {
                rows.push((
                    format!("{kind}_{label}"),
                    point,
                    spin_ns,
                    Waiter::Future,
                    None,
                ));
            }
            rows.push((
                format!("event_sync_{label}"),
                Point::Event,
                spin_ns,
                Waiter::Sync,
                None,
            ));
            rows.push((
                format!("event_blocking_sync_{label}"),
                Point::Event,
                spin_ns,
                Waiter::BlockingSync,
                None,
            ));
        }
        rows.push((
            "flag_2ms_jittered".into(),
            Point::Flag,
            2_000_000 | JITTER,
            Waiter::Future,
            None,
        ));
        rows.push((
            "flag_50ms_jittered".into(),
            Point::Flag,
            50_000_000 | JITTER,
            Waiter::Future,
            None,
        ));
        rows.push((
            "flag_2ms_spinning".into(),
            Point::Flag,
            2_000_000,
            Waiter::Future,
            Some(Duration::from_millis(10)),
        ));
        for (regime, point, spin_ns, how, spin) in rows {
            ferrocuda_driver::set_waiter_spin(spin.unwrap_or(default_spin));
            let (w, s) = if spin_ns > 10_000_000 {
                (long_warmup, longest)
            } else if spin_ns > 100_000 {
                (long_warmup, long)
            } else {
                (a.warmup, a.samples)
            };
            let (c0, t0) = (waiter_cpu_ticks(), now_ns());
            let mut v = collect(w, s, |_| step(point, spin_ns, how));
            let cpu_pct = ((waiter_cpu_ticks() - c0) * 10_000_000) as f64 / (now_ns() - t0) as f64;
            r.row(
                "future_wake",
                &regime,
                &mut v,
                &format!(
                    "\"gpu_spin_us\":{:.0},\"waiter_spin_us\":{:.0},\"waiter_cpu_pct\":{cpu_pct:.1},\"waiter_idle_cpu_ms_per_s\":{idle_ms},\"waiter_pending_idle_cpu_pct\":{pending_idle_pct:.2}",
                    spin_ns as f64 / 1e3,
                    ferrocuda_driver::waiter_spin().as_secs_f64() * 1e6
                ),
            );
        }
        ferrocuda_driver::set_waiter_spin(default_spin);
        stop.store(true, Ordering::Release);
    });
    ok(e.s.synchronize());
    // SAFETY: the event is live and no longer recorded or waited on (the stream drained).
    unsafe { d.cuEventDestroy_v2(ev_blocking as _) };
    e.reset();
}
