//! Futures that resolve when the GPU gets somewhere: [`FlagWait`], [`EventWait`], [`StreamSync`].
//!
//! Runtime-agnostic (std [`Future`] and [`Waker`](std::task::Waker) only). Each future checks its
//! condition when first polled and resolves at once if it already holds; otherwise it registers
//! with the crate's waiter thread (`waiter.rs`, docs/async.md), which wakes it once the condition
//! holds. Dropping a future deregisters it: no entry, waker or handle is left behind
//! ([`pending_futures`](crate::pending_futures) counts what is registered).

use crate::error::{Error, Result};
use crate::runtime::waiter::{self, Cond};
use crate::stream::DeviceStream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The state shared by the futures: not yet polled (the condition), registered, or done.
enum Wait {
    Start(Cond),
    Registered(Registration),
    Done,
}

/// A registration with the waiter; dropping it deregisters (the future was dropped while pending).
struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        waiter::cancel(self.0);
    }
}

impl Wait {
    fn poll(&mut self, cx: &mut Context<'_>, what: &'static str) -> Poll<Result<u64>> {
        match std::mem::replace(self, Wait::Done) {
            Wait::Start(cond) => {
                if let Some(r) = cond.check() {
                    return Poll::Ready(r);
                }
                // If the condition became true since the check, the waiter's first look sees it.
                let id = waiter::register(cond, cx.waker().clone());
                *self = Wait::Registered(Registration(id));
                Poll::Pending
            }
            Wait::Registered(reg) => match waiter::poll(reg.0, cx.waker()) {
                Poll::Ready(r) => {
                    // The poll removed the entry: nothing to deregister.
                    std::mem::forget(reg);
                    Poll::Ready(r)
                }
                Poll::Pending => {
                    *self = Wait::Registered(reg);
                    Poll::Pending
                }
            },
            Wait::Done => Poll::Ready(Err(Error::InvalidArgument(format!(
                "{what} polled after it completed"
            )))),
        }
    }
}

/// Resolves when a [`CompletionFlag`](crate::CompletionFlag) satisfies a condition: see
/// [`CompletionFlag::wait_async`](crate::CompletionFlag::wait_async).
///
/// Output: the value seen, [`Error::Aborted`] if the flag was aborted, or the driver's error if a
/// device the flag depends on faulted (the flag's own, or one whose work writes it: see
/// docs/async.md, "Faults"). Cancel-safe: drop it to
/// stop waiting (e.g. under `tokio::time::timeout`).
#[must_use = "futures do nothing unless awaited"]
pub struct FlagWait {
    wait: Wait,
}

impl FlagWait {
    pub(crate) fn new(cond: Cond) -> Self {
        FlagWait {
            wait: Wait::Start(cond),
        }
    }
}

impl Future for FlagWait {
    type Output = Result<u64>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        self.get_mut().wait.poll(cx, "FlagWait")
    }
}

impl std::fmt::Debug for FlagWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagWait").finish_non_exhaustive()
    }
}

/// Resolves when a [`DeviceEvent`](crate::DeviceEvent)'s last record has completed: see
/// [`DeviceEvent::wait_async`](crate::DeviceEvent::wait_async).
///
/// Output: `Ok(())`, or the driver's error if the work before the event failed. Cancel-safe.
#[must_use = "futures do nothing unless awaited"]
pub struct EventWait {
    wait: Wait,
}

impl EventWait {
    pub(crate) fn new(cond: Cond) -> Self {
        EventWait {
            wait: Wait::Start(cond),
        }
    }
}

impl Future for EventWait {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut()
            .wait
            .poll(cx, "EventWait")
            .map(|r| r.map(drop))
    }
}

impl std::fmt::Debug for EventWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWait").finish_non_exhaustive()
    }
}

/// Resolves when everything enqueued on a stream before it was created has completed: see
/// [`DeviceStream::synchronize_async`](crate::DeviceStream::synchronize_async).
///
/// Output: as [`DeviceStream::synchronize`]: the driver's error if that work failed, else
/// [`Error::HostFuncPanicked`] if a host function of the stream panicked since the last report.
/// Cancel-safe.
#[must_use = "futures do nothing unless awaited"]
pub struct StreamSync {
    /// The event's wait, or the error of recording it (reported by the first poll).
    wait: std::result::Result<Wait, Option<Error>>,
    stream: DeviceStream,
}

impl StreamSync {
    pub(crate) fn new(stream: DeviceStream, event: Result<Cond>) -> Self {
        StreamSync {
            wait: event.map(Wait::Start).map_err(Some),
            stream,
        }
    }
}

impl Future for StreamSync {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let me = self.get_mut();
        match &mut me.wait {
            Ok(w) => match w.poll(cx, "StreamSync") {
                Poll::Ready(Ok(_)) => Poll::Ready(me.stream.check_panics()),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            Err(e) => Poll::Ready(Err(e.take().unwrap_or_else(|| {
                Error::InvalidArgument("StreamSync polled after it completed".into())
            }))),
        }
    }
}

impl std::fmt::Debug for StreamSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSync")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    //! The real waiter thread, on host cells (no GPU): futures resolve after, never before, their
    //! condition; dropping leaks nothing; the thread parks when idle.
    use super::*;
    use crate::runtime::waiter::pending_futures;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Wake, Waker};
    use std::time::{Duration, Instant};

    /// The tests share the process-wide waiter; `pending_futures` checks need them one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn cell_wait(cell: &Arc<AtomicU64>, value: u64) -> FlagWait {
        FlagWait::new(Cond::Cell {
            cell: cell.clone(),
            value,
        })
    }

    struct Unpark(std::thread::Thread, AtomicUsize);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.unpark();
        }
    }

    /// A minimal block_on with a deadline.
    fn block_on<F: Future + Unpin>(mut f: F, limit: Duration) -> Option<F::Output> {
        let w = Arc::new(Unpark(std::thread::current(), AtomicUsize::new(0)));
        let waker = Waker::from(w);
        let mut cx = Context::from_waker(&waker);
        let t = Instant::now();
        loop {
            if let Poll::Ready(v) = Pin::new(&mut f).poll(&mut cx) {
                return Some(v);
            }
            if t.elapsed() > limit {
                return None;
            }
            std::thread::park_timeout(limit / 10);
        }
    }

    fn waiter_cpu_ticks() -> u64 {
        ferrocuda_test_support::thread_cpu_ticks("ferrocuda-waite")
    }

    #[test]
    fn cell_future_resolves_after_its_signal_and_not_before() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let cell = Arc::new(AtomicU64::new(0));
        let mut f = cell_wait(&cell, 5);
        let w = Arc::new(Unpark(std::thread::current(), AtomicUsize::new(0)));
        let waker = Waker::from(w.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        cell.store(4, Ordering::Release);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(w.1.load(Ordering::SeqCst), 0, "woken before the value");
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        cell.store(6, Ordering::Release);
        let t = Instant::now();
        while w.1.load(Ordering::SeqCst) == 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(w.1.load(Ordering::SeqCst), 1);
        assert_eq!(
            match Pin::new(&mut f).poll(&mut cx) {
                Poll::Ready(r) => r.unwrap(),
                Poll::Pending => panic!("woken but pending"),
            },
            6
        );
        drop(f);
        assert_eq!(pending_futures(), 0);
    }

    /// The futures can be spawned on a multi-threaded runtime and used with `select!`/`timeout`
    /// by `&mut`: `Send`, `Unpin`, `'static`.
    #[test]
    fn futures_are_send_unpin_and_static() {
        fn check<T: Future + Send + Unpin + 'static>() {}
        check::<FlagWait>();
        check::<EventWait>();
        check::<StreamSync>();
    }

    /// A woken future whose task has not polled yet keeps its result registered, but the waiter
    /// has nothing left to watch: it parks.
    #[test]
    fn woken_but_unpolled_future_lets_the_waiter_park() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let cell = Arc::new(AtomicU64::new(0));
        let mut f = cell_wait(&cell, 1);
        let w = Arc::new(Unpark(std::thread::current(), AtomicUsize::new(0)));
        let waker = Waker::from(w.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        cell.store(1, Ordering::Release);
        let t = Instant::now();
        while w.1.load(Ordering::SeqCst) == 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pending_futures(), 1, "the result waits for the next poll");
        std::thread::sleep(Duration::from_millis(50));
        let c0 = waiter_cpu_ticks();
        std::thread::sleep(Duration::from_millis(300));
        let c1 = waiter_cpu_ticks();
        assert!(
            c1 - c0 <= 1,
            "the waiter used {} ticks with nothing to watch ({:?})",
            c1 - c0,
            crate::runtime::waiter::debug_state()
        );
        assert!(matches!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(Ok(1))));
        assert_eq!(pending_futures(), 0);
    }

    #[test]
    fn aborted_cell_fails_the_future() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let cell = Arc::new(AtomicU64::new(0));
        let f = cell_wait(&cell, 5);
        let c = cell.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            c.store(crate::CompletionFlag::ABORTED, Ordering::Release);
        });
        let r = block_on(f, Duration::from_secs(5)).expect("released by the abort");
        t.join().unwrap();
        assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
        assert_eq!(pending_futures(), 0);
    }

    /// 100,000 futures pending at once (registered one after another while the waiter watches),
    /// then all released by one store: each resolves with its value, registration stays fast, and
    /// nothing is left. Prints the time to register them and the memory of one registration.
    #[test]
    fn hundred_thousand_concurrently_pending_futures_all_resolve() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        const N: u64 = 100_000;
        let cell = Arc::new(AtomicU64::new(0));
        let w = Arc::new(Unpark(std::thread::current(), AtomicUsize::new(0)));
        let waker = Waker::from(w.clone());
        let mut cx = Context::from_waker(&waker);
        let t = Instant::now();
        let mut futs: Vec<FlagWait> = (0..N)
            .map(|i| {
                let mut f = cell_wait(&cell, 1 + i % 7);
                assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
                f
            })
            .collect();
        let registered = t.elapsed();
        assert_eq!(pending_futures(), N as usize);
        let t = Instant::now();
        cell.store(7, Ordering::Release);
        crate::runtime::waiter::kick();
        let mut left = N;
        while left > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{left} still pending after 60 s"
            );
            futs.retain_mut(|f| match Pin::new(f).poll(&mut cx) {
                Poll::Ready(r) => {
                    assert_eq!(r.unwrap(), 7);
                    left -= 1;
                    false
                }
                Poll::Pending => true,
            });
            if left > 0 {
                std::thread::park_timeout(Duration::from_millis(1));
            }
        }
        println!(
            "100,000 pending futures: registered in {:.1} ms ({:.2} µs each), all woken {:.1} ms \
             after the store; one registration holds {} bytes in the registry plus the waker",
            registered.as_secs_f64() * 1e3,
            registered.as_secs_f64() * 1e6 / N as f64,
            t.elapsed().as_secs_f64() * 1e3,
            crate::runtime::waiter::entry_bytes(),
        );
        assert_eq!(pending_futures(), 0);
    }

    /// 100,200 futures: a third resolved at once, a third dropped while registered, a third
    /// awaited to completion in batches; nothing is left, and the idle thread uses no CPU.
    #[test]
    fn hundred_thousand_futures_leave_nothing_behind_and_idle_waiter_parks() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let done = Arc::new(AtomicU64::new(1));
        let never = Arc::new(AtomicU64::new(0));
        let w = Arc::new(Unpark(std::thread::current(), AtomicUsize::new(0)));
        let waker = Waker::from(w);
        let mut cx = Context::from_waker(&waker);
        let mut batch = Vec::new();
        let mut n = 0;
        let batch_cell = Arc::new(AtomicU64::new(0));
        for round in 0..100u64 {
            for _ in 0..334 {
                let mut f = cell_wait(&done, 1);
                assert!(Pin::new(&mut f).poll(&mut cx).is_ready());
                let mut g = cell_wait(&never, 1);
                assert!(Pin::new(&mut g).poll(&mut cx).is_pending());
                drop(g);
                let mut h = cell_wait(&batch_cell, round + 1);
                assert!(Pin::new(&mut h).poll(&mut cx).is_pending());
                batch.push(h);
                n += 3;
            }
            batch_cell.store(round + 1, Ordering::Release);
            for h in batch.drain(..) {
                assert_eq!(
                    block_on(h, Duration::from_secs(5)).unwrap().unwrap(),
                    round + 1
                );
            }
        }
        assert!(n >= 100_000);
        assert_eq!(pending_futures(), 0);
        std::thread::sleep(Duration::from_millis(50));
        let c0 = waiter_cpu_ticks();
        std::thread::sleep(Duration::from_millis(500));
        let c1 = waiter_cpu_ticks();
        assert!(
            c1 - c0 <= 1,
            "the idle waiter used {} ticks in 500 ms",
            c1 - c0
        );
    }
}
