//! How fast, and at what CPU cost, can a host thread learn that the GPU got somewhere after a long
//! wait? A probe run by hand (the benchmark bundle ships it), not part of the benchmark rows: it
//! compares the wake-up mechanisms a future could use.
//!
//! Each sample: [gate: flag ≥ n] [spin kernel D] [write n to a mapped slot] [record events]. An
//! observer thread busy-polls the slot and stamps when it sees n ("reached"); the mechanism under
//! test stamps when it learns of it. Sample = learned − reached. Mechanisms:
//!
//! * `blocking_sync`: a thread in `cuEventSynchronize` on an event created with
//!   `CU_EVENT_BLOCKING_SYNC` (the driver sleeps the thread until the GPU's interrupt).
//! * `spin_sync`: the same on a default event (the driver's default scheduling: it spins or yields).
//! * `host_func`: a `cuLaunchHostFunc` after the write whose callback stamps.
//! * `flag_future`: ferrocuda's `CompletionFlag::wait_async`, woken by the crate's waiter thread.
//!
//! For each it prints p50 / p99 and the CPU time the learning thread(s) used per second of wall time
//! (`CLOCK_THREAD_CPUTIME_ID` for a probe thread; `/proc` ticks of the waiter for the future).
//!
//! ```sh
//! DIR/bin/wake_probe --cubin DIR/cubin/bench_kernels.cubin [--samples N]
//! ```

use ferrocuda_bench::ferrocuda::{Env, ok};
use ferrocuda_bench::{die, now_ns};
use ferrocuda_driver::sys::{self, CUevent_flags, CUresult};
use ferrocuda_driver::{CompletionFlag, LaunchArgs, LaunchConfig, WaitCondition};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn check(rc: CUresult, what: &str) {
    if rc != CUresult::CUDA_SUCCESS {
        die(&format!("{what}: {:?}", sys::error_name(rc)));
    }
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time (ns, from 10 ms clock ticks) of the crate's waiter thread.
fn waiter_cpu_ns() -> u64 {
    ferrocuda_bench::thread_cpu_ticks("ferrocuda-waite") * 10_000_000
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mech {
    BlockingSync,
    SpinSync,
    HostFunc,
    FlagFuture,
}

static HF_STAMP: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn host_func(_: *mut c_void) {
    HF_STAMP.store(now_ns(), Ordering::Release);
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mut cubin = None;
    let mut samples = 40usize;
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        match a.as_str() {
            "--cubin" => cubin = argv.next(),
            "--samples" => samples = argv.next().and_then(|s| s.parse().ok()).unwrap_or(40),
            _ => die("usage: wake_probe --cubin FILE [--samples N]"),
        }
    }
    let e = ok(Env::new(
        &cubin.unwrap_or_else(|| die("--cubin FILE is required")),
    ));
    let d = sys::driver().unwrap_or_else(|err| die(&err.to_string()));
    ok(e.dev.make_current());
    let mk = |flags: u32| {
        let mut ev = std::ptr::null_mut();
        // SAFETY: the device's context is current; `ev` is a valid out-pointer.
        check(unsafe { d.cuEventCreate(&mut ev, flags) }, "cuEventCreate");
        ev as usize
    };
    let ev_block =
        mk(CUevent_flags::CU_EVENT_BLOCKING_SYNC.0 | CUevent_flags::CU_EVENT_DISABLE_TIMING.0);
    let ev_plain = mk(CUevent_flags::CU_EVENT_DISABLE_TIMING.0);
    let gate = ok(CompletionFlag::new(&e.dev));
    let slot = ok(CompletionFlag::new(&e.dev));
    let raw_stream = e.s.as_raw() as usize;

    let armed = AtomicU64::new(0);
    let seen_at = AtomicU64::new(0);
    let seen_idx = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let n = AtomicU64::new(0);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut last = 0;
            while !stop.load(Ordering::Acquire) {
                let i = armed.load(Ordering::Acquire);
                if i == last {
                    std::hint::spin_loop();
                    continue;
                }
                while slot.load() < i {
                    std::hint::spin_loop();
                }
                seen_at.store(now_ns(), Ordering::Release);
                seen_idx.store(i, Ordering::Release);
                last = i;
            }
        });
        for spin in [20_000u64, 2_000_000, 50_000_000] {
            let count = if spin >= 50_000_000 {
                samples.min(20)
            } else {
                samples
            };
            for mech in [
                Mech::BlockingSync,
                Mech::SpinSync,
                Mech::HostFunc,
                Mech::FlagFuture,
            ] {
                let mut lat = Vec::new();
                let mut cpu_ns = 0u64;
                let mut wall_ns = 0u64;
                for k in 0..count + 2 {
                    let i = n.fetch_add(1, Ordering::SeqCst) + 1;
                    ok(e.s.wait_for_host_value_ge(&gate, i));
                    // SAFETY: spin_ns(u64).
                    ok(unsafe {
                        e.s.launch(
                            &e.spin_ns,
                            LaunchConfig::single_thread(),
                            LaunchArgs::new().arg(&spin),
                        )
                    });
                    ok(e.s.write_host_value(&slot, i));
                    HF_STAMP.store(0, Ordering::Release);
                    // SAFETY: live events and stream of the current context; the host function
                    // only stores to a static.
                    unsafe {
                        check(
                            d.cuEventRecord(ev_block as _, raw_stream as _),
                            "cuEventRecord",
                        );
                        check(
                            d.cuEventRecord(ev_plain as _, raw_stream as _),
                            "cuEventRecord",
                        );
                        if mech == Mech::HostFunc {
                            check(
                                d.cuLaunchHostFunc(
                                    raw_stream as _,
                                    Some(host_func),
                                    std::ptr::null_mut(),
                                ),
                                "cuLaunchHostFunc",
                            );
                        }
                    }
                    armed.store(i, Ordering::Release);
                    let learned = match mech {
                        Mech::BlockingSync | Mech::SpinSync => {
                            let ev = if mech == Mech::BlockingSync {
                                ev_block
                            } else {
                                ev_plain
                            };
                            let gate = &gate;
                            let (t, c, w) = std::thread::scope(|s2| {
                                s2.spawn(move || {
                                    let (c0, w0) = (thread_cpu_ns(), now_ns());
                                    gate.signal(i);
                                    // SAFETY: a live event.
                                    check(unsafe { d.cuEventSynchronize(ev as _) }, "sync");
                                    let t = now_ns();
                                    (t, thread_cpu_ns() - c0, t - w0)
                                })
                                .join()
                                .unwrap()
                            });
                            cpu_ns += c;
                            wall_ns += w;
                            t
                        }
                        Mech::HostFunc => {
                            let w0 = now_ns();
                            gate.signal(i);
                            loop {
                                let t = HF_STAMP.load(Ordering::Acquire);
                                if t != 0 {
                                    wall_ns += t - w0;
                                    break t;
                                }
                                std::thread::sleep(Duration::from_micros(50));
                            }
                        }
                        Mech::FlagFuture => {
                            let (c0, w0) = (waiter_cpu_ns(), now_ns());
                            let t = wake_time(
                                slot.wait_async(WaitCondition::GreaterOrEqual, i),
                                || gate.signal(i),
                            );
                            cpu_ns += waiter_cpu_ns() - c0;
                            wall_ns += now_ns() - w0;
                            t
                        }
                    };
                    while seen_idx.load(Ordering::Acquire) < i {
                        std::hint::spin_loop();
                    }
                    if k >= 2 {
                        lat.push(
                            learned as f64 / 1e3 - seen_at.load(Ordering::Acquire) as f64 / 1e3,
                        );
                    }
                    ok(e.s.synchronize());
                }
                let cpu_pct = cpu_ns as f64 * 100.0 / wall_ns.max(1) as f64;
                println!(
                    "wait {:>8.0} us  {:<13} p50 {:>8.1} us  p99 {:>8.1} us  cpu {:>5.1}%",
                    spin as f64 / 1e3,
                    format!("{mech:?}"),
                    pct(&mut lat, 0.5),
                    pct(&mut lat, 0.99),
                    cpu_pct
                );
            }
        }
        stop.store(true, Ordering::Release);
    });
}

/// Polls `fut` once (it must be pending), calls `go`, and returns when its waker was first called.
fn wake_time<F: std::future::Future>(fut: F, go: impl FnOnce()) -> u64 {
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};
    struct Stamp(std::thread::Thread, AtomicU64);
    impl Wake for Stamp {
        fn wake(self: Arc<Self>) {
            let _ = self
                .1
                .compare_exchange(0, now_ns(), Ordering::AcqRel, Ordering::Relaxed);
            self.0.unpark();
        }
    }
    let stamp = Arc::new(Stamp(std::thread::current(), AtomicU64::new(0)));
    let waker = Waker::from(stamp.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    if fut.as_mut().poll(&mut cx).is_ready() {
        die("the future resolved before its gate opened");
    }
    go();
    loop {
        if stamp.1.load(Ordering::Acquire) != 0 && fut.as_mut().poll(&mut cx).is_ready() {
            return stamp.1.load(Ordering::Acquire);
        }
        std::thread::park_timeout(Duration::from_millis(1));
    }
}
