//! The crates' five promises, tried the way a careful user and a reviewer would: safe code cannot
//! cause undefined behaviour; whatever an enqueued operation touches stays alive until the GPU is
//! past it; nothing on the user's thread blocks behind a pending host-value wait; host-closure
//! panics are contained; misuse is a typed error.
//!
//! Every test here runs against a real GPU (`gpu-tests`, in the GPU bundle) and against the fake
//! driver (`fake-tests`, in `cargo xtask test`): the fake runs streams on host threads and turns
//! any touch of freed memory into a sticky `CUDA_ERROR_ILLEGAL_ADDRESS`, so a keep-alive hole
//! fails the test there even where a real GPU would only read stale data. Each test has a
//! deadline.
#![cfg(any(feature = "gpu-tests", feature = "fake-tests"))]

use ferrocuda_driver::{
    CompletionFlag, Device, DeviceEvent, DeviceStream, Error, HostBuffer, KickoffMode, LaunchArgs,
    LaunchConfig, Module, WaitCondition,
};
use ferrocuda_graph::Graph;
use ferrocuda_test_support::{deadline, mark, slack};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const TEST_PTX: &str = include_str!("../../crates/driver/tests/kernels/test_kernels.ptx");

fn device() -> Device {
    mark("open device 0", 0);
    let d = Device::new(0).expect("device 0");
    if cfg!(feature = "fake-tests") && !cfg!(feature = "gpu-tests") {
        assert!(
            d.name().contains("Fake"),
            "the fake-driver tests must run against xtask/fake/fake_cuda.c, not {}",
            d.name()
        );
    }
    d
}

/// A pattern that differs per element and per run.
fn pattern(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761).wrapping_add(salt) | 1)
        .collect()
}

fn salt() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.subsec_nanos())
}

fn is_refused_under_capture(r: &ferrocuda_driver::Result<()>, op: &str) -> bool {
    matches!(r, Err(Error::NotAllowedUnderCapture { op: o, .. }) if *o == op)
}

// ---------------------------------------------------------------------------------------------
// Capture

/// A stream that joined a capture through an event captures too: its one-shot closures (both
/// forms, both kickoff modes) are refused, not recorded into a graph that would replay them; the
/// refused closures are dropped unrun; after the capture both streams run closures again.
#[test]
fn one_shot_closures_are_refused_on_every_stream_of_a_capture() {
    deadline(30 * SEC, || {
        let d = device();
        let (origin, joined) = (d.new_stream().unwrap(), d.new_stream().unwrap());
        let flag = CompletionFlag::new(&d).unwrap();
        let token = Arc::new(());
        let ran = Arc::new(AtomicUsize::new(0));
        let g = Graph::capture(&origin, |_| {
            let fork = DeviceEvent::new(&d, false)?;
            origin.record_event(&fork)?;
            joined.wait_for_event(&fork)?;
            assert!(
                joined.is_capturing()?,
                "the driver says the joined stream captures"
            );
            for s in [&origin, &joined] {
                let t = token.clone();
                let r = ran.clone();
                assert!(is_refused_under_capture(
                    &s.enqueue_host_func(move || {
                        drop(t);
                        r.fetch_add(1, Ordering::SeqCst);
                    }),
                    "DeviceStream::enqueue_host_func"
                ));
                for mode in [KickoffMode::GpuWrite, KickoffMode::HostFunc] {
                    s.set_kickoff_mode(mode);
                    let t = token.clone();
                    let r = ran.clone();
                    assert!(is_refused_under_capture(
                        &s.enqueue_async_host_func(&flag, 1, move || {
                            drop(t);
                            r.fetch_add(1, Ordering::SeqCst);
                        }),
                        "DeviceStream::enqueue_async_host_func"
                    ));
                }
            }
            let join = DeviceEvent::new(&d, false)?;
            joined.record_event(&join)?;
            origin.wait_for_event(&join)?;
            Ok(())
        })
        .unwrap();
        drop(g);
        assert_eq!(Arc::strong_count(&token), 1, "refused closures are dropped");
        assert!(!joined.is_capturing().unwrap() && !origin.is_capturing().unwrap());
        for s in [&origin, &joined] {
            let r = ran.clone();
            s.enqueue_host_func(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
            s.synchronize_timeout(10 * SEC * slack()).unwrap();
        }
        assert_eq!(
            ran.load(Ordering::SeqCst),
            2,
            "only the two after the capture ran"
        );
    });
}

/// Buffers that captured copies and memsets touch are owned by the graph: the user drops them
/// before the first launch, new allocations take their memory if it was freed, and the replays
/// still read and write the originals.
#[test]
fn captured_copies_and_memsets_own_their_buffers() {
    deadline(60 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let n = 1 << 16;
        let data = pattern(n, salt());
        let src = s.clone_htod(&data).unwrap();
        let mut filled = s.alloc::<u32>(n).unwrap();
        let mut copy_of_src = s.alloc::<u32>(n).unwrap();
        let mut copy_of_filled = s.alloc::<u32>(n).unwrap();
        let done = CompletionFlag::new(&d).unwrap();
        s.synchronize_timeout(10 * SEC * slack()).unwrap();
        let g = Graph::capture(&s, |cap| {
            let st = cap.stream();
            st.memset_u32(&mut filled, 0x5eed_0001)?;
            st.copy_dtod(&src, &mut copy_of_src)?;
            st.copy_dtod(&filled, &mut copy_of_filled)?;
            st.write_host_value(&done, 1)?;
            Ok(())
        })
        .unwrap();
        // Only the outputs are kept by the test; everything else is the graph's.
        drop((src, filled));
        let exec = g.instantiate().unwrap();
        drop(g);
        ferrocuda_driver::wait_for_releases(10 * SEC * slack()).unwrap();
        // Fresh allocations of the same sizes, filled with junk: they get the dropped buffers'
        // memory if it was (wrongly) freed.
        let mut junk: Vec<_> = (0..4).map(|_| s.alloc::<u32>(n).unwrap()).collect();
        for j in &mut junk {
            s.memset_u32(j, 0xdead_beef).unwrap();
        }
        let runner = d.new_stream().unwrap();
        for replay in 1..=3u64 {
            mark("launch the captured graph", replay);
            done.reset();
            exec.launch(&runner).unwrap();
            done.wait(WaitCondition::GreaterOrEqual, 1, 10 * SEC * slack())
                .unwrap();
            runner.synchronize_timeout(10 * SEC * slack()).unwrap();
            let mut host = vec![0u32; n];
            runner.copy_dtoh(&copy_of_src, &mut host).unwrap();
            assert!(host == data, "replay {replay} copied from freed memory");
            runner.copy_dtoh(&copy_of_filled, &mut host).unwrap();
            assert!(
                host.iter().all(|&v| v == 0x5eed_0001),
                "replay {replay}: memset lost"
            );
        }
        for j in &junk {
            let mut host = vec![0u32; n];
            s.copy_dtoh(j, &mut host).unwrap();
            assert!(
                host.iter().all(|&v| v == 0xdead_beef),
                "a replay wrote a junk buffer"
            );
        }
    });
}

/// Dropping a buffer whose home stream captures never puts its free into the graph: the graph
/// has no node for it, and the memory is released once the capture is over.
#[test]
fn a_buffer_dropped_while_its_home_stream_captures_is_freed_outside_the_graph() {
    deadline(30 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        // Used on its home stream only: its drop would free it in that stream's order.
        let mut buf = s.alloc::<u64>(4096).unwrap();
        s.memset_zero(&mut buf).unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let g = Graph::capture(&s, |cap| {
            cap.stream().write_host_value(&flag, 1)?;
            drop(buf);
            Ok(())
        })
        .unwrap();
        let kinds = g.node_types().unwrap();
        assert_eq!(kinds.len(), 1, "the graph holds only the write: {kinds:?}");
        drop(g);
        ferrocuda_driver::wait_for_releases(10 * SEC * slack()).unwrap();
        s.synchronize_timeout(10 * SEC * slack()).unwrap();
    });
}

/// Operations that cannot be replayed are refused under capture with a typed error, and the
/// capture is still usable afterwards (it was not invalidated).
#[test]
fn borrowed_host_copies_and_allocations_are_refused_under_capture() {
    deadline(30 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let mut dev = s.alloc::<u32>(16).unwrap();
        let mut host = HostBuffer::<u32>::new(&d, 16).unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        s.synchronize_timeout(10 * SEC * slack()).unwrap();
        let g = Graph::capture(&s, |cap| {
            let st = cap.stream();
            let mut v = vec![0u32; 16];
            assert!(is_refused_under_capture(
                &st.copy_htod(&v, &mut dev),
                "DeviceStream::copy_htod"
            ));
            assert!(is_refused_under_capture(
                &st.copy_dtoh(&dev, &mut v),
                "DeviceStream::copy_dtoh"
            ));
            assert!(is_refused_under_capture(
                &st.copy_dtoh_async(&dev, &mut host),
                "DeviceStream::copy_dtoh_async"
            ));
            assert!(matches!(
                st.alloc::<u32>(4),
                Err(Error::NotAllowedUnderCapture {
                    op: "DeviceStream::alloc",
                    ..
                })
            ));
            st.write_host_value(&flag, 1)?;
            Ok(())
        })
        .unwrap();
        assert_eq!(g.node_types().unwrap().len(), 1);
    });
}

/// A graph's closure panicking inside `Graph::capture` ends the capture: the stream works after.
#[test]
fn a_panic_inside_capture_ends_the_capture() {
    deadline(30 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = Graph::capture(&s, |_| panic!("inside the capture"));
        }));
        assert!(r.is_err());
        assert!(
            !s.is_capturing().unwrap(),
            "the panic left the stream capturing"
        );
        let ran = Arc::new(AtomicBool::new(false));
        let r2 = ran.clone();
        s.enqueue_host_func(move || r2.store(true, Ordering::SeqCst))
            .unwrap();
        s.synchronize_timeout(10 * SEC * slack()).unwrap();
        assert!(ran.load(Ordering::SeqCst));
    });
}

// ---------------------------------------------------------------------------------------------
// Keep-alive of copies off the home stream

/// Copies on a stream other than the buffers' home, queued behind a wait, then the buffers
/// dropped at once: the memory stays allocated until the copies ran (a fresh allocation on the
/// home stream does not get it), and the copies see the right data.
#[test]
fn copies_on_another_stream_keep_their_buffers_until_they_ran() {
    deadline(60 * SEC, || {
        let d = device();
        let home = d.new_stream().unwrap();
        let other = d.new_stream().unwrap();
        let n = 1 << 16;
        let data = pattern(n, salt());
        for (step, which) in ["copy_htod", "copy_dtoh_async", "copy_htod_async"]
            .into_iter()
            .enumerate()
        {
            mark(which, step as u64);
            let gate = CompletionFlag::new(&d).unwrap();
            let mut dev = home.alloc::<u32>(n).unwrap();
            let staged = HostBuffer::from_slice(&d, &data).unwrap();
            let src = home.clone_htod(&data).unwrap();
            let mut back = HostBuffer::<u32>::new(&d, n).unwrap();
            home.synchronize_timeout(10 * SEC * slack()).unwrap();
            other.wait_for_host_value_ge(&gate, 1).unwrap();
            match which {
                "copy_htod" => {
                    other.copy_htod(&data, &mut dev).unwrap();
                    drop(dev);
                }
                "copy_dtoh_async" => {
                    other.copy_dtoh_async(&src, &mut back).unwrap();
                    drop(src);
                }
                _ => {
                    other.copy_htod_async(&staged, &mut dev).unwrap();
                    drop((dev, staged));
                }
            }
            // What the home stream allocates now must not be the dropped memory.
            let mut fresh = home.alloc::<u32>(n).unwrap();
            home.memset_u32(&mut fresh, 0xdead_beef).unwrap();
            home.synchronize_timeout(10 * SEC * slack()).unwrap();
            gate.signal(1);
            other.synchronize_timeout(10 * SEC * slack()).unwrap();
            let mut host = vec![0u32; n];
            home.copy_dtoh(&fresh, &mut host).unwrap();
            assert!(
                host.iter().all(|&v| v == 0xdead_beef),
                "{which}: the queued copy wrote memory the home stream reallocated"
            );
            if which == "copy_dtoh_async" {
                assert!(back.as_slice().unwrap() == &data[..], "{which}: wrong data");
            }
        }
        ferrocuda_driver::wait_for_releases(10 * SEC * slack()).unwrap();
    });
}

/// A host buffer copied on several streams: host access waits for the copy into it on whichever
/// stream, also when that stream was dropped and a new one created (stream identities are never
/// reused), and never blocks in the non-blocking forms.
#[test]
fn host_buffer_waits_for_copies_of_dropped_streams() {
    deadline(60 * SEC, || {
        let d = device();
        let n = 4096;
        let data = pattern(n, salt());
        let maker = d.new_stream().unwrap();
        let src = maker.clone_htod(&data).unwrap();
        maker.synchronize_timeout(10 * SEC * slack()).unwrap();
        let mut ids = Vec::new();
        let gate = CompletionFlag::new(&d).unwrap();
        let mut host = HostBuffer::<u32>::new(&d, n).unwrap();
        {
            let first = d.new_stream().unwrap();
            ids.push(first.id());
            first.wait_for_host_value_ge(&gate, 1).unwrap();
            first.copy_dtoh_async(&src, &mut host).unwrap();
        }
        // New streams (one may reuse the dropped one's memory) copy out of the buffer.
        let mut sinks = Vec::new();
        for _ in 0..4 {
            let s = d.new_stream().unwrap();
            ids.push(s.id());
            let mut sink = s.alloc::<u32>(n).unwrap();
            s.copy_htod_async(&host, &mut sink).unwrap();
            s.synchronize_timeout(10 * SEC * slack()).unwrap();
            sinks.push((s, sink));
        }
        let mut sorted = ids.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "stream ids reused: {ids:?}");
        assert!(
            host.try_as_slice().unwrap().is_none(),
            "the first copy is still queued"
        );
        assert!(!host.is_ready().unwrap());
        assert!(matches!(
            host.synchronize_timeout(Duration::from_millis(100)),
            Err(Error::Timeout { .. })
        ));
        gate.signal(1);
        assert!(host.as_slice().unwrap() == &data[..]);
        // The sinks copied before the first copy into the buffer ran: what it held then.
        for (s, sink) in &sinks {
            let mut back = vec![1u32; n];
            s.copy_dtoh(sink, &mut back).unwrap();
            assert!(
                back.iter().all(|&v| v == 0),
                "a sink saw the queued copy's data"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------------
// No blocking behind a pending wait

/// `synchronize_timeout` of a host buffer returns in time while another thread waits on the same
/// buffer behind an unsignalled wait; a third thread enqueues a copy out of it meanwhile; and a
/// host function that touches the buffer gets a typed error instead of blocking.
#[test]
fn host_buffer_waits_hold_no_lock() {
    deadline(60 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let n = 1024;
        let data = pattern(n, salt());
        let src = s.clone_htod(&data).unwrap();
        s.synchronize_timeout(10 * SEC * slack()).unwrap();
        let gate = CompletionFlag::new(&d).unwrap();
        let mut host = HostBuffer::<u32>::new(&d, n).unwrap();
        s.wait_for_host_value_ge(&gate, 1).unwrap();
        s.copy_dtoh_async(&src, &mut host).unwrap();
        let host = Arc::new(host);
        let reader = {
            let h = host.clone();
            std::thread::spawn(move || h.as_slice().map(<[u32]>::to_vec))
        };
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        let r = host.synchronize_timeout(Duration::from_millis(100));
        let took = t.elapsed();
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        assert!(
            took < Duration::from_millis(1000) * slack(),
            "took {took:?}"
        );
        // Another stream copies out of the buffer while the reader waits: returns at once.
        let other = d.new_stream().unwrap();
        let mut sink = other.alloc::<u32>(n).unwrap();
        let t = Instant::now();
        other.copy_htod_async(&host, &mut sink).unwrap();
        assert!(t.elapsed() < Duration::from_millis(500) * slack());
        // A host function touching the buffer is refused, naming the operation.
        let seen = Arc::new(std::sync::Mutex::new(None));
        let (h, sn) = (host.clone(), seen.clone());
        other
            .enqueue_host_func(move || *sn.lock().unwrap() = Some(h.as_slice().map(|_| ())))
            .unwrap();
        gate.signal(1);
        assert!(reader.join().unwrap().unwrap() == data);
        other.synchronize_timeout(10 * SEC * slack()).unwrap();
        let r = seen.lock().unwrap().take().expect("the host function ran");
        assert!(
            matches!(
                r,
                Err(Error::CalledFromHostFunc {
                    op: "HostBuffer::as_slice"
                })
            ),
            "{r:?}"
        );
    });
}

/// A timed device-to-host copy behind an unsignalled wait gives up in time and leaves the
/// destination untouched; once signalled it copies.
#[test]
fn copy_dtoh_timeout_gives_up_and_leaves_the_destination_alone() {
    deadline(30 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let n = 1024;
        let data = pattern(n, salt());
        let src = s.clone_htod(&data).unwrap();
        let gate = CompletionFlag::new(&d).unwrap();
        s.wait_for_host_value_ge(&gate, 1).unwrap();
        let mut dst = vec![7u32; n];
        let t = Instant::now();
        let r = s.copy_dtoh_timeout(&src, &mut dst, Duration::from_millis(100));
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_millis(1000) * slack());
        assert!(dst.iter().all(|&v| v == 7), "written after giving up");
        gate.signal(1);
        s.copy_dtoh_timeout(&src, &mut dst, 10 * SEC * slack())
            .unwrap();
        assert!(dst == data);
        // The abandoned copy's staging memory is released once the GPU is past it.
        ferrocuda_driver::wait_for_releases(10 * SEC * slack()).unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Crate threads survive user code

/// A closure that blocks holds its own worker only: with GPU-write kickoff, another stream's step
/// starts while the first closure still runs (the notifier never runs a closure itself).
#[test]
fn a_blocking_closure_does_not_hold_back_another_streams_kickoff() {
    deadline(30 * SEC, || {
        let d = device();
        let (a, b) = (d.new_stream().unwrap(), d.new_stream().unwrap());
        a.set_kickoff_mode(KickoffMode::GpuWrite);
        b.set_kickoff_mode(KickoffMode::GpuWrite);
        let (fa, fb) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let a_started = Arc::new(AtomicBool::new(false));
        let release_a = Arc::new(AtomicBool::new(false));
        let (st, rel) = (a_started.clone(), release_a.clone());
        a.enqueue_async_host_func(&fa, 1, move || {
            st.store(true, Ordering::SeqCst);
            let t = Instant::now();
            while !rel.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
        let t = Instant::now();
        while !a_started.load(Ordering::SeqCst) {
            assert!(
                t.elapsed() < 10 * SEC * slack(),
                "A's closure never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Only now is B's step enqueued: A's closure is running and holds whatever runs it.
        let t = Instant::now();
        b.enqueue_async_host_func(&fb, 1, || {}).unwrap();
        let r = fb.wait(WaitCondition::GreaterOrEqual, 1, 5 * SEC * slack());
        let took = t.elapsed();
        release_a.store(true, Ordering::SeqCst);
        fa.wait(WaitCondition::GreaterOrEqual, 1, 10 * SEC * slack())
            .unwrap();
        r.unwrap();
        println!("B's step ran {took:?} after its enqueue while A's closure blocked");
        assert!(took < Duration::from_millis(500) * slack(), "took {took:?}");
        a.synchronize_timeout(10 * SEC * slack()).unwrap();
        b.synchronize_timeout(10 * SEC * slack()).unwrap();
    });
}

/// A panic payload whose own `Drop` panics, from a host function and from trampoline closures:
/// contained (the process lives on), reported by `synchronize`, and the crate's threads keep
/// working.
#[test]
fn panic_payloads_that_panic_on_drop_are_contained() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("the payload's drop panics");
        }
    }
    deadline(30 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        s.enqueue_host_func(|| std::panic::panic_any(Bomb)).unwrap();
        let mut v = 0;
        for mode in [KickoffMode::GpuWrite, KickoffMode::HostFunc] {
            s.set_kickoff_mode(mode);
            v += 1;
            s.enqueue_async_host_func(&flag, v, || std::panic::panic_any(Bomb))
                .unwrap();
            s.wait_for_host_value_ge(&flag, v).unwrap();
        }
        let r = s.synchronize_timeout(10 * SEC * slack());
        assert!(
            matches!(r, Err(Error::HostFuncPanicked { count: 3, .. })),
            "{r:?}"
        );
        // Everything still works.
        for mode in [KickoffMode::GpuWrite, KickoffMode::HostFunc] {
            s.set_kickoff_mode(mode);
            v += 1;
            s.enqueue_async_host_func(&flag, v, || {}).unwrap();
            s.wait_for_host_value_ge(&flag, v).unwrap(); // the steps signal in stream order
        }
        flag.wait(WaitCondition::GreaterOrEqual, v, 10 * SEC * slack())
            .unwrap();
        s.synchronize_timeout(10 * SEC * slack()).unwrap();
    });
}

struct PanickingWaker;
impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("a waker that panics");
    }
}

struct Unpark(std::thread::Thread);
impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that panics does not take the waiter thread down: futures registered afterwards still
/// resolve.
#[test]
fn a_panicking_waker_does_not_stop_other_futures() {
    deadline(30 * SEC, || {
        let d = device();
        let (bad, good) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let mut f = bad.wait_async(WaitCondition::GreaterOrEqual, 1);
        let w = Waker::from(Arc::new(PanickingWaker));
        assert!(
            std::pin::Pin::new(&mut f)
                .poll(&mut Context::from_waker(&w))
                .is_pending()
        );
        bad.signal(1); // the waiter wakes `w`, which panics
        std::thread::sleep(Duration::from_millis(50));
        let mut g = good.wait_async(WaitCondition::GreaterOrEqual, 1);
        let w = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&w);
        assert!(std::pin::Pin::new(&mut g).poll(&mut cx).is_pending());
        let s = d.new_stream().unwrap();
        s.write_host_value(&good, 1).unwrap(); // the GPU's write: only the waiter sees it
        let t = Instant::now();
        loop {
            if let Poll::Ready(r) = std::pin::Pin::new(&mut g).poll(&mut cx) {
                assert_eq!(r.unwrap(), 1);
                break;
            }
            assert!(t.elapsed() < 5 * SEC * slack(), "the waiter thread died");
            std::thread::park_timeout(Duration::from_millis(10));
        }
        drop(f);
        assert_eq!(ferrocuda_driver::pending_futures(), 0);
    });
}

// ---------------------------------------------------------------------------------------------
// Typed errors

/// Inside a host function every operation that needs the driver is refused, naming the public
/// operation the user called.
#[test]
fn host_function_refusals_name_the_public_operation() {
    deadline(30 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (dd, ss, out) = (d.clone(), s.clone(), seen.clone());
        s.enqueue_host_func(move || {
            let mut o = out.lock().unwrap();
            o.push(HostBuffer::<u8>::new(&dd, 8).map(drop));
            o.push(dd.new_stream().map(drop));
            o.push(CompletionFlag::new(&dd).map(drop));
            o.push(DeviceEvent::new(&dd, false).map(drop));
            o.push(ss.synchronize());
            o.push(ss.alloc::<u8>(8).map(drop));
            o.push(Module::from_ptx(&dd, TEST_PTX).map(drop));
            o.push(Device::new(0).map(drop));
        })
        .unwrap();
        s.synchronize_timeout(10 * SEC * slack()).unwrap();
        let ops: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| match r {
                Err(Error::CalledFromHostFunc { op }) => *op,
                other => panic!("not refused: {other:?}"),
            })
            .collect();
        assert_eq!(
            ops,
            [
                "HostBuffer::new",
                "Device::new_stream",
                "CompletionFlag::new",
                "DeviceEvent::new",
                "DeviceStream::synchronize",
                "DeviceStream::alloc",
                "Module::from_ptx",
                "Device::new",
            ]
        );
    });
}

/// A graph executable cannot be launched into a capture (its bookkeeping would not follow).
#[test]
fn graph_launch_is_refused_under_capture() {
    deadline(30 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let mut g = Graph::new(&d).unwrap();
        g.write_host_value(&flag, 1, &[]).unwrap();
        let exec = g.instantiate().unwrap();
        let other = d.new_stream().unwrap();
        let _ = Graph::capture(&other, |cap| {
            let r = exec.launch(cap.stream());
            assert!(
                matches!(
                    r,
                    Err(ferrocuda_graph::Error::Driver(
                        Error::NotAllowedUnderCapture {
                            op: "GraphExec::launch",
                            ..
                        }
                    ))
                ),
                "{r:?}"
            );
            Ok(())
        })
        .unwrap();
        exec.launch(&s).unwrap();
        flag.wait(WaitCondition::Equal, 1, 10 * SEC * slack())
            .unwrap();
    });
}

/// Kernel arguments of another device's buffer are refused before anything is enqueued (only
/// with two devices: the fake driver's `FAKE_CUDA_DEVICES=2`, or a machine with two GPUs).
#[test]
fn buffers_of_another_device_are_refused() {
    deadline(30 * SEC, || {
        if Device::count().unwrap() < 2 {
            let fake_only = cfg!(feature = "fake-tests") && !cfg!(feature = "gpu-tests");
            if fake_only {
                panic!("the fake-driver run gives this test two devices (FAKE_CUDA_DEVICES=2)");
            }
            println!("one device: nothing to mismatch");
            return;
        }
        let (d0, d1) = (device(), Device::new(1).unwrap());
        let (s0, s1) = (d0.new_stream().unwrap(), d1.new_stream().unwrap());
        let mut on0 = s0.alloc::<u32>(16).unwrap();
        let mut on1 = s1.alloc::<u32>(16).unwrap();
        let mismatch = |r: ferrocuda_driver::Result<()>| {
            assert!(
                matches!(
                    r,
                    Err(Error::DeviceMismatch {
                        expected: 0,
                        found: 1,
                        ..
                    })
                ),
                "{r:?}"
            )
        };
        mismatch(s0.copy_dtod(&on1, &mut on0));
        mismatch(s0.copy_dtod(&on0, &mut on1));
        mismatch(s0.memset_zero(&mut on1));
        mismatch(s0.memset_u32(&mut on1, 1));
        mismatch(on1.record_use(&s0).map(drop));
        let m = Module::from_ptx(&d0, TEST_PTX).unwrap();
        let add = m.function("add_u32").unwrap();
        let (n, one) = (16u32, 1u32);
        // SAFETY: add_u32(u32*, u32, u32); refused before the launch.
        mismatch(unsafe {
            s0.launch(
                &add,
                LaunchConfig::for_num_elems(n, 16),
                LaunchArgs::new().arg(&on1).arg(&n).arg(&one),
            )
        });
        s0.synchronize_timeout(10 * SEC * slack()).unwrap();
        s1.synchronize_timeout(10 * SEC * slack()).unwrap();
    });
}

/// Streams dropped with work queued while buffers used on them are dropped on other threads:
/// the fences that release the buffers always see the dropped streams (their tails), so no
/// queued copy touches freed memory.
#[test]
fn fences_see_streams_that_are_being_dropped() {
    deadline(120 * SEC, || {
        let d = device();
        let home = d.new_stream().unwrap();
        let n = 1 << 12;
        let rounds = if slack() > 1 { 10 } else { 200u64 };
        let gate = CompletionFlag::new(&d).unwrap();
        let used = AtomicU64::new(0);
        std::thread::scope(|sc| {
            for t in 0..2u64 {
                let (d, home, gate, used) = (&d, &home, &gate, &used);
                sc.spawn(move || {
                    for i in 0..rounds {
                        mark("drop a stream with queued work", t * rounds + i);
                        let src = home.clone_htod(&vec![i as u32; n]).unwrap();
                        let s: DeviceStream = d.new_stream().unwrap();
                        let mut dst = s.alloc::<u32>(n).unwrap();
                        s.wait_for_host_value_ge(gate, i + 1).unwrap();
                        s.copy_dtod(&src, &mut dst).unwrap();
                        drop(s); // the stream (held by `dst`) ...
                        drop(src); // ... and the source, used off its home stream
                        drop(dst);
                        used.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            for i in 1..=rounds {
                gate.signal(i);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        gate.signal(u64::MAX >> 2);
        ferrocuda_driver::wait_for_releases(30 * SEC * slack()).unwrap();
        home.synchronize_timeout(10 * SEC * slack()).unwrap();
        assert_eq!(used.load(Ordering::Relaxed), 2 * rounds);
    });
}

/// The same hole, aimed at: one round at a time with the reclaimer idle when the source drops (so
/// its fence follows the drop after one wake-up), and the stream's last handle dropped after a
/// delay swept over 0–50 µs, so that in some round the stream's drop lands on that fence. A fence
/// that missed the stream frees the source before the queued copy ran (the fake driver reports
/// it; on code whose fences held streams weakly this failed most runs within 50 rounds).
#[test]
fn fences_see_streams_dropped_at_any_moment() {
    deadline(120 * SEC, || {
        let d = device();
        let home = d.new_stream().unwrap();
        let n = 1 << 12;
        let gate = CompletionFlag::new(&d).unwrap();
        let rounds = if slack() > 1 { 20 } else { 400u64 };
        for i in 0..rounds {
            mark("drop a stream with queued work", i);
            let src = home.clone_htod(&vec![i as u32; n]).unwrap();
            home.synchronize_timeout(10 * SEC * slack()).unwrap();
            let s: DeviceStream = d.new_stream().unwrap();
            let mut dst = s.alloc::<u32>(n).unwrap();
            s.wait_for_host_value_ge(&gate, i + 1).unwrap();
            s.copy_dtod(&src, &mut dst).unwrap();
            drop(s); // `dst` still holds the stream
            drop(src); // deferred: wakes the reclaimer, which fences
            let delay = Duration::from_nanos((i % 100) * 500);
            let t = Instant::now();
            while t.elapsed() < delay {
                std::hint::spin_loop();
            }
            drop(dst); // the stream's last handle
            // Time for a fence that missed the stream to pass and free the source.
            std::thread::sleep(Duration::from_millis(1));
            gate.signal(i + 1);
            ferrocuda_driver::wait_for_releases(10 * SEC * slack())
                .unwrap_or_else(|e| panic!("round {i} (delay {delay:?}): {e}"));
            home.synchronize_timeout(10 * SEC * slack())
                .unwrap_or_else(|e| panic!("round {i} (delay {delay:?}): {e}"));
        }
    });
}

/// An abort made while the trampoline's closure still runs survives the signal the worker stores
/// after the closure: every waiter of the flag learns that the producer gave up (the worker's
/// store used to overwrite the abort with the step's value).
#[test]
fn an_abort_during_the_closure_is_not_overwritten_by_the_trampolines_signal() {
    deadline(30 * SEC, || {
        let d = device();
        for mode in [KickoffMode::GpuWrite, KickoffMode::HostFunc] {
            let s = d.new_stream().unwrap();
            s.set_kickoff_mode(mode);
            let flag = CompletionFlag::new(&d).unwrap();
            let f = flag.clone();
            s.enqueue_async_host_func(&flag, 5, move || f.abort())
                .unwrap();
            s.synchronize().unwrap();
            // The worker stores (or not) right after the closure: give it time to.
            let t = Instant::now();
            while flag.load() == 0 && t.elapsed() < 10 * SEC {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(flag.load(), CompletionFlag::ABORTED, "{mode:?}");
            assert!(matches!(
                flag.wait(WaitCondition::GreaterOrEqual, 5, SEC),
                Err(Error::Aborted)
            ));
        }
    });
}
