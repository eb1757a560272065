//! The async trampoline in both kickoff modes (GPU write + notifier, host function): every step's
//! closure runs once and its own value is signalled, in order or not, panics included, with the
//! stream gone, and the crate's threads use no CPU when nothing is in flight.
#![cfg(feature = "gpu-tests")]
// These tests pass raw addresses to kernels on purpose (what a user of raw launches does).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{deadline, device, kernels, mix, seed};
use ferrocuda_driver::{
    CompletionFlag, DeviceStream, Error, HostBuffer, KickoffMode, LaunchArgs, LaunchConfig,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const MODES: [KickoffMode; 2] = [KickoffMode::GpuWrite, KickoffMode::HostFunc];

/// 10,000 steps: each closure writes mix(step ^ seed) into pinned memory, the stream waits for the
/// step's signal and a kernel checks the value. Step 5,000's closure panics after writing: the
/// flag is still signalled, the stream goes on, and the panic is reported once.
fn ten_thousand_steps(mode: KickoffMode) {
    const STEPS: u64 = 10_000;
    const PANIC_AT: u64 = 5_000;
    let seed = seed();
    let d = device();
    let k = kernels(&d);
    let s = d.new_stream().unwrap();
    s.set_kickoff_mode(mode);
    assert_eq!(s.kickoff_mode(), mode);
    let flag = CompletionFlag::new(&d).unwrap();
    let values = Arc::new(HostBuffer::<u64>::new(&d, STEPS as usize + 1).unwrap());
    let counters = s.alloc_zeroed::<u32>(2).unwrap(); // errors, checked
    let ran = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    for step in 1..=STEPS {
        let (vals, ran) = (values.clone(), ran.clone());
        s.enqueue_async_host_func(&flag, step, move || {
            // SAFETY: slot `step` is written only here and read by the GPU after the flag reaches
            // `step`; `vals` keeps the buffer alive.
            let p =
                unsafe { AtomicU64::from_ptr((vals.device_ptr() as *mut u64).add(step as usize)) };
            p.store(mix(step ^ seed), Ordering::Release);
            ran.fetch_add(1, Ordering::AcqRel);
            if step == PANIC_AT {
                panic!("planned panic at step {step}");
            }
        })
        .unwrap();
        s.wait_for_host_value_ge(&flag, step).unwrap();
        let (vp, errs, checked) = (
            values.device_ptr(),
            counters.device_ptr(),
            counters.device_ptr() + 4,
        );
        // SAFETY: check_step(const u64*, u64, u64, u32*, u32*) with pointers in bounds.
        unsafe {
            s.launch(
                &k.check_step,
                LaunchConfig::single_thread(),
                LaunchArgs::new()
                    .arg(&vp)
                    .arg(&step)
                    .arg(&seed)
                    .arg(&errs)
                    .arg(&checked),
            )
        }
        .unwrap();
    }
    match s.synchronize_timeout(60 * SEC) {
        Err(Error::HostFuncPanicked { count: 1, first }) => {
            assert!(first.contains("step 5000"), "{first}")
        }
        other => panic!("expected the planned panic to be reported, got {other:?}"),
    }
    let mut c = [0u32; 2];
    s.copy_dtoh(&counters, &mut c).unwrap();
    let per = t.elapsed() / STEPS as u32;
    println!(
        "{mode:?}: {STEPS} steps in {:?} ({per:?}/step)",
        t.elapsed()
    );
    assert_eq!(
        ran.load(Ordering::Acquire),
        STEPS,
        "each closure ran exactly once"
    );
    assert_eq!(c, [0, STEPS as u32], "[errors, checked]");
    assert_eq!(flag.load(), STEPS);
}

#[test]
fn gpu_write_kickoff_runs_ten_thousand_checked_steps() {
    deadline(120 * SEC, || ten_thousand_steps(KickoffMode::GpuWrite));
}

#[test]
fn host_func_kickoff_runs_ten_thousand_checked_steps() {
    deadline(120 * SEC, || ten_thousand_steps(KickoffMode::HostFunc));
}

/// Four streams, closures of random length on a pool of several workers: closures finish out of
/// order, yet every step signals its own value on its own flag, and the GPU sees each.
#[test]
fn out_of_order_closures_signal_their_own_values() {
    deadline(60 * SEC, || {
        let seed = seed();
        let d = device();
        let k = kernels(&d);
        for mode in MODES {
            let streams: Vec<DeviceStream> = (0..4).map(|_| d.new_stream().unwrap()).collect();
            let flags: Vec<CompletionFlag> =
                (0..4).map(|_| CompletionFlag::new(&d).unwrap()).collect();
            let acks: Vec<CompletionFlag> =
                (0..4).map(|_| CompletionFlag::new(&d).unwrap()).collect();
            const STEPS: u64 = 200;
            for step in 1..=STEPS {
                for (i, ((s, f), a)) in streams.iter().zip(&flags).zip(&acks).enumerate() {
                    s.set_kickoff_mode(mode);
                    let us = mix(seed ^ step ^ (i as u64) << 32) % 300;
                    s.enqueue_async_host_func(f, step, move || {
                        std::thread::sleep(Duration::from_micros(us))
                    })
                    .unwrap();
                    s.wait_for_host_value(f, step).unwrap(); // equality: the exact value of this step
                    k.launch_ack(s, a.as_flag_ref(), step);
                }
            }
            for (s, a) in streams.iter().zip(&acks) {
                s.synchronize_timeout(30 * SEC).unwrap();
                assert_eq!(a.load(), STEPS);
            }
            println!("{mode:?}: 4 streams x {STEPS} out-of-order steps ok");
        }
    });
}

/// A stream dropped while its kickoffs are still queued behind a gate: every closure still runs
/// once and every flag value is signalled.
#[test]
fn stream_dropped_with_kickoffs_pending() {
    deadline(30 * SEC, || {
        let d = device();
        for mode in MODES {
            let gate = CompletionFlag::new(&d).unwrap();
            let flag = CompletionFlag::new(&d).unwrap();
            let ran = Arc::new(AtomicU64::new(0));
            let s = d.new_stream().unwrap();
            s.set_kickoff_mode(mode);
            s.wait_for_host_value_ge(&gate, 1).unwrap();
            for step in 1..=100u64 {
                let r = ran.clone();
                s.enqueue_async_host_func(&flag, step, move || {
                    r.fetch_add(1, Ordering::AcqRel);
                })
                .unwrap();
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(ran.load(Ordering::Acquire), 0, "ran before the gate opened");
            gate.signal(1);
            // The steps are not separated by waits, so their closures run concurrently on the
            // workers and may signal in any order: count the closures, not the flag's last value.
            let t = Instant::now();
            while ran.load(Ordering::Acquire) < 100 && t.elapsed() < 10 * SEC {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(ran.load(Ordering::Acquire), 100, "{mode:?}");
            let v = flag.load();
            assert!((1..=100).contains(&v), "{mode:?}: the flag holds {v}");
        }
    });
}

/// CPU time (user + system, in clock ticks) of this process's threads whose name starts with
/// `ferrocuda-`, from /proc/self/task/*/stat.
fn crate_threads_cpu_ticks() -> (u64, usize) {
    let mut ticks = 0;
    let mut n = 0;
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("ferrocuda-") {
            continue;
        }
        n += 1;
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3; utime and stime are 14 and 15.
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    (ticks, n)
}

/// After the steps are done, the notifier and the workers park: over 1 s idle they use (almost)
/// no CPU. While steps are in flight they spin — measured too, to show the test can tell.
#[test]
fn notifier_and_workers_park_when_idle() {
    deadline(30 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        s.set_kickoff_mode(KickoffMode::GpuWrite);
        let flag = CompletionFlag::new(&d).unwrap();
        let gate = CompletionFlag::new(&d).unwrap();
        // Busy: a step is in flight (held behind a gate) for 300 ms.
        s.wait_for_host_value_ge(&gate, 1).unwrap();
        s.enqueue_async_host_func(&flag, 1, || {}).unwrap();
        let (b0, threads) = crate_threads_cpu_ticks();
        std::thread::sleep(Duration::from_millis(300));
        let (b1, _) = crate_threads_cpu_ticks();
        gate.signal(1);
        flag.wait(ferrocuda_driver::WaitCondition::GreaterOrEqual, 1, 5 * SEC)
            .unwrap();
        s.synchronize().unwrap();
        // Idle: nothing in flight for 1 s.
        std::thread::sleep(Duration::from_millis(50));
        let (i0, _) = crate_threads_cpu_ticks();
        std::thread::sleep(SEC);
        let (i1, _) = crate_threads_cpu_ticks();
        let hz = 100; // USER_HZ on Linux
        println!(
            "{threads} ferrocuda threads: busy 300 ms -> {} ms CPU; idle 1 s -> {} ms CPU",
            (b1 - b0) * 1000 / hz,
            (i1 - i0) * 1000 / hz
        );
        assert!(
            b1 - b0 >= 10,
            "the notifier should spin while a step is in flight"
        );
        assert!(
            i1 - i0 <= 2,
            "the crate's threads used {} ms of CPU while idle",
            (i1 - i0) * 1000 / hz
        );
    });
}
