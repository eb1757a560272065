//! A GPU fault fails the futures that depend on it instead of leaving them pending for ever: a
//! kernel traps, and a flag future whose producer work was behind it, a future of a flag of the
//! same device that nothing writes, an event future and a stream future all resolve with the
//! driver's error.
//!
//! A binary of its own with one test: the fault leaves the context broken for the rest of the
//! process. Runs on a GPU (`gpu-tests`, in the GPU bundle) and against the fake driver
//! (`fake-tests`), whose `trap_now` kernel gives the context the same kind of sticky error.
#![cfg(any(feature = "gpu-tests", feature = "fake-tests"))]

use ferrocuda_driver::{
    CompletionFlag, Device, DeviceEvent, Error, LaunchArgs, LaunchConfig, Module, WaitCondition,
};
use ferrocuda_test_support::{deadline, mark, slack};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const TEST_PTX: &str = include_str!("../../crates/driver/tests/kernels/test_kernels.ptx");
const GE: WaitCondition = WaitCondition::GreaterOrEqual;

struct Unpark(std::thread::Thread);
impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

type Boxed = Pin<Box<dyn Future<Output = ferrocuda_driver::Result<()>>>>;

#[test]
fn a_gpu_fault_fails_the_futures_that_depend_on_it() {
    deadline(60 * SEC, || {
        mark("open device 0", 0);
        let d = Device::new(0).expect("device 0");
        if cfg!(feature = "fake-tests") && !cfg!(feature = "gpu-tests") {
            assert!(
                d.name().contains("Fake"),
                "not the fake driver: {}",
                d.name()
            );
        }
        let module = Module::from_ptx(&d, TEST_PTX).unwrap();
        let trap = module.function("trap_now").unwrap();
        let s = d.new_stream().unwrap();
        let (gate, done, untouched) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let ev = DeviceEvent::new(&d, false).unwrap();
        s.wait_for_host_value_ge(&gate, 1).unwrap();
        // SAFETY: trap_now() takes no parameters.
        unsafe { s.launch(&trap, LaunchConfig::single_thread(), &mut LaunchArgs::new()) }.unwrap();
        s.write_host_value(&done, 1).unwrap();
        s.record_event(&ev).unwrap();

        let mut futures: Vec<(&str, Boxed)> = vec![
            ("flag written behind the fault", {
                let f = done.wait_async(GE, 1);
                Box::pin(async move { f.await.map(drop) })
            }),
            ("flag of the device nothing writes", {
                let f = untouched.wait_async(GE, 1);
                Box::pin(async move { f.await.map(drop) })
            }),
            ("event", Box::pin(ev.wait_async())),
            ("stream", Box::pin(s.synchronize_async())),
        ];
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        for (what, f) in &mut futures {
            assert!(
                f.as_mut().poll(&mut cx).is_pending(),
                "{what}: ready before the gate opened"
            );
        }
        std::thread::sleep(Duration::from_millis(5) * slack());
        for (what, f) in &mut futures {
            assert!(
                f.as_mut().poll(&mut cx).is_pending(),
                "{what}: ready before the gate opened"
            );
        }

        mark("open the gate: the kernel traps", 1);
        gate.signal(1);
        let until = Instant::now() + 10 * SEC * slack();
        let mut results: Vec<Option<ferrocuda_driver::Result<()>>> =
            futures.iter().map(|_| None).collect();
        while results.iter().any(Option::is_none) {
            for ((_, f), r) in futures.iter_mut().zip(&mut results) {
                if r.is_none()
                    && let Poll::Ready(v) = f.as_mut().poll(&mut cx)
                {
                    *r = Some(v);
                }
            }
            let pending: Vec<&str> = futures
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_none())
                .map(|((w, _), _)| *w)
                .collect();
            assert!(
                Instant::now() < until,
                "still pending 10 s after the fault: {pending:?}"
            );
            std::thread::park_timeout(Duration::from_millis(1));
        }
        for ((what, _), r) in futures.iter().zip(results) {
            match r {
                Some(Err(Error::Driver(e))) => eprintln!("{what}: {e}"),
                other => panic!("{what}: expected the driver's error, got {other:?}"),
            }
        }
        drop(futures);
        assert_eq!(ferrocuda_driver::pending_futures(), 0);
        // The module stays: unloading it in a broken context is pointless, and the process ends.
        std::mem::forget(module);
    });
}
