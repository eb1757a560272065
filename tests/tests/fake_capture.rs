//! Stream capture through ferrocuda against the fake driver: what the driver reports while a
//! capture is active, a second stream joining it through an event, the captured graph, and the
//! lifetime of user objects held by the graph and its executable.
#![cfg(feature = "fake-tests")]

use ferrocuda_driver::sys::{self, CUgraph, CUstreamCaptureStatus};
use ferrocuda_driver::{CompletionFlag, DeviceEvent, DeviceStream, WaitCondition};
use ferrocuda_test_support::deadline;
use ferrocuda_tests::fake;
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// `cuStreamGetCaptureInfo_v3`: the status, the capture id and the graph being built.
fn capture_info(s: &DeviceStream) -> (CUstreamCaptureStatus, u64, CUgraph) {
    let (mut status, mut id, mut graph) = (
        CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE,
        0u64,
        std::ptr::null_mut(),
    );
    let (mut deps, mut edges, mut ndeps) = (std::ptr::null(), std::ptr::null(), 0usize);
    // SAFETY: the stream is live and every out-pointer is a writable local.
    let rc = unsafe {
        fake::driver().cuStreamGetCaptureInfo_v3(
            s.as_raw(),
            &mut status,
            &mut id,
            &mut graph,
            &mut deps,
            &mut edges,
            &mut ndeps,
        )
    };
    fake::check("cuStreamGetCaptureInfo_v3", rc);
    (status, id, graph)
}

fn node_count(g: CUgraph) -> usize {
    let mut n = 0usize;
    // SAFETY: the graph is live; a null array asks for the count only.
    let rc = unsafe { fake::driver().cuGraphGetNodes(g, std::ptr::null_mut(), &mut n) };
    fake::check("cuGraphGetNodes", rc);
    n
}

/// The user object's destructor: `p` is an `Arc<AtomicBool>` leaked by [`user_object`].
unsafe extern "C" fn set_flag(p: *mut c_void) {
    // SAFETY: `p` came from `Arc::into_raw` in `user_object`; the driver calls this once.
    let destroyed = unsafe { Arc::from_raw(p.cast::<AtomicBool>().cast_const()) };
    destroyed.store(true, Ordering::Release);
}

/// A user object (one reference) moved into `g`; the flag it returns is set by its destructor.
fn user_object(g: CUgraph) -> Arc<AtomicBool> {
    let destroyed = Arc::new(AtomicBool::new(false));
    let ptr = Arc::into_raw(destroyed.clone()).cast_mut().cast::<c_void>();
    let cu = fake::driver();
    let mut obj = std::ptr::null_mut();
    // SAFETY: `set_flag` reclaims `ptr` once; `g` is live; the reference moves into the graph.
    unsafe {
        fake::check(
            "cuUserObjectCreate",
            cu.cuUserObjectCreate(
                &mut obj,
                ptr,
                Some(set_flag),
                1,
                sys::CUuserObject_flags::CU_USER_OBJECT_NO_DESTRUCTOR_SYNC.0,
            ),
        );
        fake::check(
            "cuGraphRetainUserObject",
            cu.cuGraphRetainUserObject(
                g,
                obj,
                1,
                sys::CUuserObjectRetain_flags::CU_GRAPH_USER_OBJECT_MOVE.0,
            ),
        );
    }
    destroyed
}

fn destroy_graph(g: CUgraph) {
    // SAFETY: the graph is live and not used afterwards.
    fake::check("cuGraphDestroy", unsafe {
        fake::driver().cuGraphDestroy(g)
    });
}

#[test]
fn fake_capture_basics() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let before = fake::violations();
        let (a, b) = (d.new_stream().unwrap(), d.new_stream().unwrap());
        let (go, done) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let (fork, join) = (
            DeviceEvent::new(&d, false).unwrap(),
            DeviceEvent::new(&d, false).unwrap(),
        );
        assert_eq!(
            capture_info(&a).0,
            CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE
        );

        a.begin_capture().unwrap();
        let (status, id, graph) = capture_info(&a);
        assert_eq!(
            status,
            CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE
        );
        assert!(!graph.is_null());
        a.wait_for_host_value_ge(&go, 1).unwrap(); // node 1
        a.record_event(&fork).unwrap(); // no node: a point `b` can wait for
        b.wait_for_event(&fork).unwrap(); // `b` joins the capture
        assert_eq!(
            capture_info(&b),
            (
                CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE,
                id,
                graph
            )
        );
        b.write_host_value(&done, 1).unwrap(); // node 2
        b.record_event(&join).unwrap();
        a.wait_for_event(&join).unwrap(); // `a` waits for `b`'s work: joined back
        a.write_host_value(&done, 2).unwrap(); // node 3
        let destroyed = user_object(graph);

        let g = a.end_capture().unwrap();
        assert_eq!(g, graph);
        assert_eq!(node_count(g), 3);
        for s in [&a, &b] {
            assert_eq!(
                capture_info(s).0,
                CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE
            );
        }
        assert_eq!(done.load(), 0, "captured work ran");
        assert!(!destroyed.load(Ordering::Acquire));
        destroy_graph(g);
        assert!(
            fake::becomes_true(&destroyed),
            "the user object outlived its graph"
        );
        a.synchronize().unwrap();
        b.synchronize().unwrap();
        assert_eq!(fake::violations(), before);
    });
}

/// The executable holds its own references to the graph's user objects, and releases them only
/// once its launches have finished, even if it was destroyed first.
#[test]
fn fake_user_objects_outlive_pending_launches() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let before = fake::violations();
        let s = d.new_stream().unwrap();
        let (go, done) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        s.begin_capture().unwrap();
        s.wait_for_host_value_ge(&go, 1).unwrap();
        s.write_host_value(&done, 1).unwrap();
        let g = s.end_capture().unwrap();
        let destroyed = user_object(g);

        let cu = fake::driver();
        let mut exec = std::ptr::null_mut();
        // SAFETY: the graph is live; `exec` is a writable local.
        let rc = unsafe { cu.cuGraphInstantiateWithFlags(&mut exec, g, 0) };
        fake::check("cuGraphInstantiateWithFlags", rc);
        destroy_graph(g);
        // SAFETY: the executable and the stream are live; the executable is not used after its
        // destroy, which returns at once (the launch still waits for `go`).
        unsafe {
            fake::check("cuGraphLaunch", cu.cuGraphLaunch(exec, s.as_raw()));
            fake::check("cuGraphExecDestroy", cu.cuGraphExecDestroy(exec));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !destroyed.load(Ordering::Acquire),
            "the user object was destroyed while a launch was pending"
        );
        go.signal(1);
        done.wait(WaitCondition::GreaterOrEqual, 1, 5 * SEC)
            .unwrap();
        assert!(
            fake::becomes_true(&destroyed),
            "the user object outlived the last launch"
        );
        s.synchronize().unwrap();
        assert_eq!(fake::violations(), before);
    });
}
