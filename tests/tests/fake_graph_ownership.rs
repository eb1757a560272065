//! How a graph owns what its nodes use, against the fake driver: graphs that ferrocuda-graph
//! builds or captures keep it on the Rust side (the graph and each executable hold it, and a
//! dropped executable hands it to the reclaimer behind a fence), so their executables carry no
//! CUDA user object: with one, the real driver tracks every launch's completion on its event
//! thread, which costs each launch time and, when the launching thread shares its CPU with the
//! GPU's interrupts, tens of µs (docs/benchmarks.md). A capture made through the driver crate
//! alone hands the driver a raw graph, which keeps owning what it uses through a user object.
#![cfg(feature = "fake-tests")]

use ferrocuda_driver::{CompletionFlag, WaitCondition};
use ferrocuda_graph::Graph;
use ferrocuda_test_support::deadline;
use ferrocuda_tests::fake;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// Sets its flag when dropped.
struct Probe(Arc<AtomicBool>);
impl Drop for Probe {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn probe() -> (Probe, Arc<AtomicBool>) {
    let f = Arc::new(AtomicBool::new(false));
    (Probe(f.clone()), f)
}

#[test]
fn executables_of_built_graphs_hold_no_user_object() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let (go, done) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let mut g = Graph::new(&d).unwrap();
        let w = g
            .wait_host_value(&go, 1, WaitCondition::GreaterOrEqual, &[])
            .unwrap();
        let x = g.write_host_value(&done, 1, &[w]).unwrap();
        let (p, _) = probe();
        g.launch_host_func(
            move || {
                let _ = &p;
            },
            &[x],
        )
        .unwrap();
        g.own(d.new_stream().unwrap().alloc_zeroed::<u32>(64).unwrap());
        let exec = g.instantiate().unwrap();
        assert_eq!(fake::graph_user_objects(g.as_raw()), 0, "the graph");
        assert_eq!(fake::exec_user_objects(exec.as_raw()), 0, "the executable");
    });
}

#[test]
fn executables_of_graphs_captured_by_graph_capture_hold_no_user_object() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let s = d.new_stream().unwrap();
        let (go, done) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let mut buf = s.alloc_zeroed::<u32>(64).unwrap();
        s.synchronize().unwrap();
        let g = Graph::capture(&s, |cap| {
            cap.wait_host_value(&go, 1, WaitCondition::GreaterOrEqual)?;
            cap.stream().memset_u32(&mut buf, 7)?;
            cap.write_host_value(&done, 1)
        })
        .unwrap();
        let exec = g.instantiate().unwrap();
        assert_eq!(fake::graph_user_objects(g.as_raw()), 0, "the graph");
        assert_eq!(fake::exec_user_objects(exec.as_raw()), 0, "the executable");
        // What the capture used is the graph's: a replay after the buffer's handle is gone
        // touches no freed memory.
        let before = fake::violations();
        drop(buf);
        go.signal(1);
        exec.launch(&s).unwrap();
        done.wait(WaitCondition::GreaterOrEqual, 1, 5 * SEC)
            .unwrap();
        s.synchronize().unwrap();
        assert_eq!(
            fake::violations(),
            before,
            "the replay touched freed memory"
        );
    });
}

#[test]
fn a_capture_through_the_driver_crate_alone_owns_what_it_uses_by_user_object() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let s = d.new_stream().unwrap();
        let go = CompletionFlag::new(&d).unwrap();
        s.begin_capture().unwrap();
        s.wait_for_host_value_ge(&go, 1).unwrap();
        let g = s.end_capture().unwrap();
        assert!(
            fake::graph_user_objects(g) >= 1,
            "a raw captured graph must own its flag"
        );
        // SAFETY: the graph is live and not used afterwards.
        let rc = unsafe { fake::driver().cuGraphDestroy(g) };
        fake::check("cuGraphDestroy", rc);
    });
}

/// The graph and its executable are dropped while a launch waits: what the graph owns (a value
/// given to `own`, a host node's closure) lives until that launch has finished, then is released.
#[test]
fn what_a_graph_owns_outlives_its_dropped_executable_until_the_last_launch_finished() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let before = fake::violations();
        let s = d.new_stream().unwrap();
        let (go, done) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let (owned, owned_dropped) = probe();
        let (captured, closure_dropped) = probe();
        let ran = Arc::new(AtomicBool::new(false));
        let mut g = Graph::new(&d).unwrap();
        let w = g
            .wait_host_value(&go, 1, WaitCondition::GreaterOrEqual, &[])
            .unwrap();
        let r = ran.clone();
        let h = g
            .launch_host_func(
                move || {
                    let _ = &captured;
                    r.store(true, Ordering::Release);
                },
                &[w],
            )
            .unwrap();
        g.write_host_value(&done, 1, &[h]).unwrap();
        g.own(owned);
        let exec = g.instantiate().unwrap();
        exec.launch(&s).unwrap();
        drop(exec);
        drop(g);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !owned_dropped.load(Ordering::Acquire) && !closure_dropped.load(Ordering::Acquire),
            "released while a launch was pending"
        );
        go.signal(1);
        done.wait(WaitCondition::GreaterOrEqual, 1, 5 * SEC)
            .unwrap();
        assert!(ran.load(Ordering::Acquire), "the host node ran");
        assert!(
            fake::becomes_true(&owned_dropped),
            "the owned value was never released"
        );
        assert!(
            fake::becomes_true(&closure_dropped),
            "the closure was never released"
        );
        s.synchronize().unwrap();
        assert_eq!(fake::violations(), before);
    });
}

/// A capture that the closure of `Graph::capture` ends itself hands the caller a raw graph: what
/// its operations used must stay owned (here: alive after the capture's error, the buffer's handle
/// dropped, while that raw graph is launched), not be released with the failed capture.
#[test]
fn a_capture_ended_inside_graph_capture_keeps_what_its_raw_graph_uses() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let before = fake::violations();
        let s = d.new_stream().unwrap();
        let mut buf = s.alloc_zeroed::<u32>(1024).unwrap();
        s.synchronize().unwrap();
        let mut raw = None;
        let r = Graph::capture(&s, |cap| {
            cap.stream().memset_u32(&mut buf, 7)?;
            raw = Some(cap.stream().end_capture()?);
            Ok(())
        });
        assert!(r.is_err(), "the capture was ended inside the closure");
        let g = raw.expect("the closure ended the capture");
        drop(buf);
        ferrocuda_driver::wait_for_releases(5 * SEC).unwrap();
        let cu = fake::driver();
        let mut exec = std::ptr::null_mut();
        // SAFETY: the graph is live; `exec` is a writable local; the executable and the graph are
        // destroyed after the launch has finished.
        unsafe {
            fake::check(
                "cuGraphInstantiateWithFlags",
                cu.cuGraphInstantiateWithFlags(&mut exec, g, 0),
            );
            fake::check("cuGraphLaunch", cu.cuGraphLaunch(exec, s.as_raw()));
        }
        s.synchronize().unwrap();
        // SAFETY: both are live and not used afterwards.
        unsafe {
            fake::check("cuGraphExecDestroy", cu.cuGraphExecDestroy(exec));
            fake::check("cuGraphDestroy", cu.cuGraphDestroy(g));
        }
        assert_eq!(
            fake::violations(),
            before,
            "the raw graph's memset touched freed memory"
        );
    });
}
