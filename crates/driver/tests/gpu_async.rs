//! The futures on a GPU: each resolves after, never before, the GPU point it waits for; 10,000
//! awaits in a row; the 1,000-job example with its results checked; timeouts, aborts and 100,000
//! dropped futures leave nothing registered; the waiter thread uses no CPU when idle.
#![cfg(feature = "gpu-tests")]

mod common;

#[path = "../examples/async_jobs.rs"]
mod async_jobs;
#[path = "../examples/tokio_service.rs"]
mod tokio_service;

use common::{deadline, device, seed};
use ferrocuda_driver::{
    CompletionFlag, DeviceEvent, Error, WaitCondition::GreaterOrEqual, pending_futures,
};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `f` once with a no-op waker: whether it is still pending.
fn still_pending<F: Future + Unpin>(f: &mut F) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    std::pin::Pin::new(f).poll(&mut cx).is_pending()
}

/// Rounds of: [gate ≥ k] [event] [write done = k] [async host func → tflag = k], with futures for
/// the event, the GPU's write, the trampoline and the stream. Each stays pending while the gate is
/// closed (checked for a random 1–5 ms), and each resolves only after the host opened the gate,
/// with its GPU point reached (event ready, value written, closure ran, stream idle).
#[test]
fn every_future_resolves_after_its_gpu_point_never_before() {
    deadline(60 * SEC, || {
        let seed = seed();
        let d = device();
        let s = d.new_stream().unwrap();
        let (gate, done, tflag) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let rt = runtime();
        for k in 1..=50u64 {
            let closed_ms = 1 + common::mix(seed ^ k) % 5;
            let ev = DeviceEvent::new(&d, false).unwrap();
            let ran = Arc::new(AtomicBool::new(false));
            s.wait_for_host_value_ge(&gate, k).unwrap();
            s.record_event(&ev).unwrap();
            s.write_host_value(&done, k).unwrap();
            let r = ran.clone();
            s.enqueue_async_host_func(&tflag, k, move || r.store(true, Ordering::SeqCst))
                .unwrap();
            let mut fe = ev.wait_async();
            let mut fd = done.wait_async(GreaterOrEqual, k);
            let mut ft = tflag.wait_async(GreaterOrEqual, k);
            let mut fs = s.synchronize_async();
            assert!(still_pending(&mut fe) && still_pending(&mut fd));
            assert!(still_pending(&mut ft) && still_pending(&mut fs));
            assert!(pending_futures() >= 4);
            let opened = rt.block_on(async {
                // Awaited concurrently; none may finish while the gate is closed.
                let closed = tokio::time::sleep(Duration::from_millis(closed_ms));
                tokio::pin!(closed);
                tokio::select! {
                    _ = &mut fe => panic!("event future resolved before the gate opened"),
                    _ = &mut fd => panic!("flag future resolved before the GPU wrote it"),
                    _ = &mut ft => panic!("trampoline future resolved before its closure ran"),
                    _ = &mut fs => panic!("stream future resolved before the stream drained"),
                    _ = &mut closed => {}
                }
                assert_eq!(done.load(), k - 1);
                assert!(!ran.load(Ordering::SeqCst));
                let opened = Instant::now();
                gate.signal(k);
                let (e, v, t, z) = tokio::time::timeout(5 * SEC, async {
                    tokio::join!(
                        async {
                            fe.await.unwrap();
                            assert!(ev.is_ready().unwrap());
                            Instant::now()
                        },
                        async {
                            assert!(fd.await.unwrap() >= k);
                            Instant::now()
                        },
                        async {
                            assert!(ft.await.unwrap() >= k);
                            assert!(ran.load(Ordering::SeqCst), "woken before the closure ran");
                            Instant::now()
                        },
                        async {
                            fs.await.unwrap();
                            assert!(s.is_idle().unwrap());
                            Instant::now()
                        },
                    )
                })
                .await
                .expect("futures resolve within 5 s of the gate opening");
                assert!(e > opened && v > opened && t > opened && z > opened);
                opened
            });
            let _ = opened;
        }
        assert_eq!(pending_futures(), 0, "futures left registered");
    });
}

/// 10,000 GPU → host awaits in a row (a flag written by the stream), with an event future every
/// 10th step and a stream future every 100th.
#[test]
fn ten_thousand_awaits_in_a_row() {
    deadline(60 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let ev = DeviceEvent::new(&d, false).unwrap();
        let rt = runtime();
        let t = rt.block_on(async {
            let t = Instant::now();
            for i in 1..=10_000u64 {
                s.write_host_value(&flag, i).unwrap();
                if i % 10 == 0 {
                    s.record_event(&ev).unwrap();
                    ev.wait_async().await.unwrap();
                }
                assert!(flag.wait_async(GreaterOrEqual, i).await.unwrap() >= i);
                if i % 100 == 0 {
                    s.synchronize_async().await.unwrap();
                }
            }
            t.elapsed()
        });
        println!(
            "10,000 awaits: {:.2} µs per step",
            t.as_secs_f64() * 1e6 / 1e4
        );
        assert_eq!(pending_futures(), 0);
    });
}

/// The example's service: 1,000 concurrent jobs over 4 streams, every result checked (twice: the
/// first run warms up).
#[test]
fn thousand_jobs_over_four_streams_return_checked_results() {
    deadline(120 * SEC, || {
        let d = device();
        let rt = runtime();
        for _ in 0..2 {
            let s = rt.block_on(async_jobs::serve(&d, 1000, 4)).unwrap();
            assert_eq!(s.jobs, 1000);
            println!(
                "1,000 jobs: {:.1} ms, {:.0} jobs/s",
                s.elapsed.as_secs_f64() * 1e3,
                1000.0 / s.elapsed.as_secs_f64()
            );
        }
        assert_eq!(pending_futures(), 0);
    });
}

/// The example's tokio service in every wake-up mode: 10,000 jobs of the GPU time the example
/// sets (fixed and varied lengths), every job's flag value checked; its latency table is printed
/// for the test log.
#[test]
fn tokio_service_serves_ten_thousand_jobs_in_every_wake_mode() {
    deadline(300 * SEC, || {
        let d = device();
        let rt = runtime();
        let rows = rt.block_on(tokio_service::run(&d, 10_000)).unwrap();
        assert_eq!(rows.len(), 6);
        for r in &rows {
            assert!(r.wake_us.iter().all(|v| v.is_finite()), "{r:?}");
            println!("{r:?}");
        }
        assert_eq!(pending_futures(), 0);
    });
}

/// A wait that is never satisfied is bounded by `tokio::time::timeout` and leaves nothing behind;
/// `abort` releases flag futures with `Error::Aborted` (and the GPU's wait); 100,000 futures
/// created and dropped (half of them registered) or awaited leave nothing registered.
#[test]
fn timeout_abort_and_dropped_futures_leave_nothing_behind() {
    deadline(60 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let (gate, done, other) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let rt = runtime();
        s.wait_for_host_value_ge(&gate, 1).unwrap();
        s.write_host_value(&done, 1).unwrap();
        rt.block_on(async {
            let r = tokio::time::timeout(
                Duration::from_millis(20),
                done.wait_async(GreaterOrEqual, 1),
            )
            .await;
            assert!(r.is_err(), "the GPU never got there: the timeout must fire");
            let r = tokio::time::timeout(Duration::from_millis(20), s.synchronize_async()).await;
            assert!(r.is_err());
            assert_eq!(pending_futures(), 0, "a timed-out future stayed registered");

            // 100,000 futures: dropped unpolled, dropped after one poll, or awaited.
            other.signal(5);
            for i in 0..100_000u64 {
                match i % 3 {
                    0 => drop(done.wait_async(GreaterOrEqual, 1)),
                    1 => {
                        let mut f = done.wait_async(GreaterOrEqual, 1);
                        assert!(still_pending(&mut f));
                    }
                    _ => assert_eq!(other.wait_async(GreaterOrEqual, 5).await.unwrap(), 5),
                }
            }
            assert_eq!(pending_futures(), 0, "dropped futures stayed registered");

            // Abort: a pending future on a flag nobody will write resolves to Aborted.
            let waiting = tokio::spawn({
                let other = other.clone();
                async move { other.wait_async(GreaterOrEqual, 7).await }
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(!waiting.is_finished());
            other.abort();
            let r = tokio::time::timeout(SEC, waiting).await.unwrap().unwrap();
            assert!(matches!(r, Err(Error::Aborted)), "{r:?}");

            // Aborting the gate releases the GPU's wait; the stream writes `done`.
            let f = done.wait_async(GreaterOrEqual, 1);
            gate.abort();
            assert_eq!(tokio::time::timeout(5 * SEC, f).await.unwrap().unwrap(), 1);
            tokio::time::timeout(5 * SEC, s.synchronize_async())
                .await
                .unwrap()
                .unwrap();
        });
        assert_eq!(pending_futures(), 0);
    });
}

/// CPU time (user + system, in clock ticks) of the waiter thread.
fn waiter_cpu_ticks() -> u64 {
    ferrocuda_test_support::thread_cpu_ticks("ferrocuda-waite")
}

/// With nothing pending the waiter parks: over 1 s idle it uses (almost) no CPU. While a future
/// waits 300 ms on a flag nobody writes, it spins 100 µs, then sleeps with back-off (printed: what
/// a long pending wait costs).
#[test]
fn idle_waiter_uses_no_cpu() {
    deadline(30 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let rt = runtime();
        rt.block_on(async {
            for i in 1..=100 {
                s.write_host_value(&flag, i).unwrap();
                flag.wait_async(GreaterOrEqual, i).await.unwrap();
            }
        });
        let never = CompletionFlag::new(&d).unwrap();
        let b0 = waiter_cpu_ticks();
        rt.block_on(async {
            let r = tokio::time::timeout(
                Duration::from_millis(300),
                never.wait_async(GreaterOrEqual, 1),
            )
            .await;
            assert!(r.is_err());
        });
        let b1 = waiter_cpu_ticks();
        assert_eq!(pending_futures(), 0);
        std::thread::sleep(Duration::from_millis(50));
        let i0 = waiter_cpu_ticks();
        std::thread::sleep(SEC);
        let i1 = waiter_cpu_ticks();
        let hz = 100; // USER_HZ on Linux
        println!(
            "waiter: one future pending 300 ms -> {} ms CPU; idle 1 s -> {} ms CPU",
            (b1 - b0) * 1000 / hz,
            (i1 - i0) * 1000 / hz
        );
        assert!(
            i1 - i0 <= 1,
            "the idle waiter used {} ms of CPU in 1 s",
            (i1 - i0) * 1000 / hz
        );
    });
}
