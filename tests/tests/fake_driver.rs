//! The fake driver itself (`xtask/fake/fake_cuda.c`): the behaviours of the real driver that the
//! soundness tests rely on — pageable and pinned copies, pointer attributes, stream destruction,
//! the rules of stream capture, graph nodes — so that a change to the fake cannot quietly make
//! those tests meaningless.
#![cfg(feature = "fake-tests")]

use ferrocuda_driver::sys::{self, CUgraph, CUgraphNodeType, CUresult, CUstream};
use ferrocuda_driver::{CompletionFlag, DeviceEvent, Error, WaitCondition};
use ferrocuda_test_support::deadline;
use ferrocuda_tests::fake;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> CUresult {
    match r {
        Err(Error::Driver(e)) => e.code,
        other => panic!("expected a driver error, got {other:?}"),
    }
}

/// Pinned host memory from the driver, `n` bytes, never freed (the test process ends soon).
fn pinned(n: usize) -> *mut u8 {
    let mut p = std::ptr::null_mut();
    // SAFETY: `p` is a writable local.
    fake::check("cuMemHostAlloc", unsafe {
        fake::driver().cuMemHostAlloc(&mut p, n, 0)
    });
    p.cast()
}

#[test]
fn pageable_sources_are_staged_pinned_ones_read_when_the_copy_runs() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let s = d.new_stream().unwrap();
        let gate = CompletionFlag::new(&d).unwrap();
        let (a, b) = (
            s.alloc_zeroed::<u8>(64).unwrap(),
            s.alloc_zeroed::<u8>(64).unwrap(),
        );
        let cu = fake::driver();
        let mut pageable = [1u8; 64];
        let pin = pinned(64);
        s.wait_for_host_value_ge(&gate, 1).unwrap();
        // SAFETY: both buffers hold 64 bytes; `pin` is 64 bytes of pinned memory written below
        // only before the gate opens (the copy reads it after).
        unsafe {
            pin.write_bytes(1, 64);
            fake::check(
                "cuMemcpyHtoDAsync_v2",
                cu.cuMemcpyHtoDAsync_v2(a.device_ptr(), pageable.as_ptr().cast(), 64, s.as_raw()),
            );
            fake::check(
                "cuMemcpyHtoDAsync_v2",
                cu.cuMemcpyHtoDAsync_v2(b.device_ptr(), pin.cast_const().cast(), 64, s.as_raw()),
            );
            pageable.fill(2); // staged: the copy keeps the 1s
            pin.write_bytes(2, 64); // pinned: the copy sees the 2s
        }
        gate.signal(1);
        let mut back = vec![0u8; 64];
        // SAFETY: `back` is 64 writable bytes of pageable memory: the call returns once the copy ran.
        fake::check("cuMemcpyDtoHAsync_v2", unsafe {
            cu.cuMemcpyDtoHAsync_v2(back.as_mut_ptr().cast(), a.device_ptr(), 64, s.as_raw())
        });
        assert_eq!(
            back, [1u8; 64],
            "a pageable source was not staged, or DtoH did not block"
        );
        // SAFETY: as above.
        fake::check("cuMemcpyDtoHAsync_v2", unsafe {
            cu.cuMemcpyDtoHAsync_v2(back.as_mut_ptr().cast(), b.device_ptr(), 64, s.as_raw())
        });
        assert_eq!(
            back, [2u8; 64],
            "a pinned source was read before the copy ran"
        );
        s.synchronize().unwrap();
    });
}

#[test]
fn pointer_attributes_tell_pinned_from_device_memory() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let s = d.new_stream().unwrap();
        let buf = s.alloc::<u32>(16).unwrap();
        let memory_type = |p: u64| {
            let mut t = 0u32;
            // SAFETY: MEMORY_TYPE writes one `unsigned int`.
            let rc = unsafe {
                fake::driver().cuPointerGetAttribute(
                    (&raw mut t).cast(),
                    sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                    p,
                )
            };
            (rc, t)
        };
        let host = sys::CUmemorytype::CU_MEMORYTYPE_HOST.0;
        let device = sys::CUmemorytype::CU_MEMORYTYPE_DEVICE.0;
        assert_eq!(
            memory_type(pinned(8) as u64 + 4),
            (CUresult::CUDA_SUCCESS, host)
        );
        assert_eq!(
            memory_type(buf.device_ptr() + 8),
            (CUresult::CUDA_SUCCESS, device)
        );
        let pageable = [0u8; 8];
        assert_eq!(
            memory_type(pageable.as_ptr() as u64).0,
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
    });
}

#[test]
fn destroyed_streams_finish_their_work_and_free_their_slot() {
    deadline(60 * SEC, || {
        let d = fake::device();
        let (gate, done) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        let cu = fake::driver();
        // The raw wait below is one the crate does not know of: let the crate's background
        // releases (a module unload would block behind the wait on a real driver) finish first.
        ferrocuda_driver::wait_for_releases(10 * SEC).unwrap();
        let mut s: CUstream = std::ptr::null_mut();
        // SAFETY: `s` is a writable local; the stream is destroyed once, with work still queued
        // behind the gate, and not used afterwards; the flags outlive the work.
        unsafe {
            fake::check("cuStreamCreate", cu.cuStreamCreate(&mut s, 1));
            fake::check(
                "cuStreamWaitValue64_v2",
                cu.cuStreamWaitValue64_v2(s, gate.device_ptr(), 1, 0),
            );
            fake::check(
                "cuStreamWriteValue64_v2",
                cu.cuStreamWriteValue64_v2(s, done.device_ptr(), 1, 0),
            );
            fake::check("cuStreamDestroy_v2", cu.cuStreamDestroy_v2(s)); // returns at once
        }
        gate.signal(1);
        done.wait(WaitCondition::Equal, 1, 5 * SEC).unwrap();
        // More streams than the fake has slots (4096), one at a time: destroying frees the slot.
        for _ in 0..4200 {
            // SAFETY: as above.
            unsafe {
                fake::check("cuStreamCreate", cu.cuStreamCreate(&mut s, 1));
                fake::check("cuStreamDestroy_v2", cu.cuStreamDestroy_v2(s));
            }
        }
        // The legacy default stream is refused, not run.
        // SAFETY: the legacy stream handle is a constant the driver must recognise.
        let rc = unsafe { cu.cuStreamSynchronize(1usize as CUstream) };
        assert_eq!(rc, CUresult::CUDA_ERROR_NOT_SUPPORTED);
    });
}

#[test]
fn capture_rules_match_the_real_driver() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let (a, b) = (d.new_stream().unwrap(), d.new_stream().unwrap());
        let flag = CompletionFlag::new(&d).unwrap();
        let outside = DeviceEvent::new(&d, false).unwrap();
        b.record_event(&outside).unwrap();

        // Synchronising a capturing stream fails and invalidates the capture.
        a.begin_capture().unwrap();
        assert_eq!(
            code(a.synchronize()),
            CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
        );
        assert_eq!(
            code(a.write_host_value(&flag, 1)),
            CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        );
        assert_eq!(
            code(a.end_capture()),
            CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        );

        // Waiting on an event recorded outside the capture crosses its boundary.
        a.begin_capture().unwrap();
        assert_eq!(
            code(a.wait_for_event(&outside)),
            CUresult::CUDA_ERROR_STREAM_CAPTURE_ISOLATION
        );
        assert_eq!(
            code(a.end_capture()),
            CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        );

        // A joined stream's work must be joined back into the origin stream.
        let fork = DeviceEvent::new(&d, false).unwrap();
        a.begin_capture().unwrap();
        a.record_event(&fork).unwrap();
        assert_eq!(code(fork.is_ready()), CUresult::CUDA_ERROR_CAPTURED_EVENT);
        b.wait_for_event(&fork).unwrap();
        b.write_host_value(&flag, 1).unwrap();
        assert_eq!(
            code(a.end_capture()),
            CUresult::CUDA_ERROR_STREAM_CAPTURE_UNJOINED
        );
        b.write_host_value(&flag, 2).unwrap(); // `b` left the capture: this runs
        b.synchronize().unwrap();
        assert_eq!(flag.load(), 2);

        // A record outside a capture makes the event usable again.
        a.record_event(&fork).unwrap();
        fork.synchronize().unwrap();
        a.synchronize().unwrap();
    });
}

static HOST_RUNS: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn count_run(_: *mut c_void) {
    HOST_RUNS.fetch_add(1, Ordering::AcqRel);
}

fn node_types(g: CUgraph) -> Vec<CUgraphNodeType> {
    let cu = fake::driver();
    let mut n = 0usize;
    // SAFETY: the graph is live; the array holds `n` nodes.
    unsafe {
        fake::check(
            "cuGraphGetNodes",
            cu.cuGraphGetNodes(g, std::ptr::null_mut(), &mut n),
        );
        let mut nodes = vec![std::ptr::null_mut(); n];
        fake::check(
            "cuGraphGetNodes",
            cu.cuGraphGetNodes(g, nodes.as_mut_ptr(), &mut n),
        );
        nodes
            .into_iter()
            .map(|node| {
                let mut t = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
                fake::check("cuGraphNodeGetType", cu.cuGraphNodeGetType(node, &mut t));
                t
            })
            .collect()
    }
}

#[test]
fn graph_nodes_run_in_insertion_order_and_a_launch_under_capture_is_a_child_graph() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let s = d.new_stream().unwrap();
        let (x, y) = (
            s.alloc_zeroed::<u32>(64).unwrap(),
            s.alloc_zeroed::<u32>(64).unwrap(),
        );
        let (f1, f2) = (
            CompletionFlag::new(&d).unwrap(),
            CompletionFlag::new(&d).unwrap(),
        );
        s.synchronize().unwrap();
        let cu = fake::driver();
        let ctx = d.raw_context();
        let mut g: CUgraph = std::ptr::null_mut();
        let mut ops = [sys::CUstreamBatchMemOpParams::default(); 2];
        for (op, (flag, v)) in ops.iter_mut().zip([(&f1, 5u64), (&f2, 6)]) {
            op.writeValue.operation = sys::CUstreamBatchMemOpType::CU_STREAM_MEM_OP_WRITE_VALUE_64;
            op.writeValue.address = flag.device_ptr();
            op.writeValue.__bindgen_anon_1.value64 = v;
        }
        let batch = sys::CUDA_BATCH_MEM_OP_NODE_PARAMS {
            ctx,
            count: 2,
            paramArray: ops.as_mut_ptr(),
            flags: 0,
        };
        let memset = sys::CUDA_MEMSET_NODE_PARAMS {
            dst: x.device_ptr(),
            pitch: 0,
            value: 0x0102_0304,
            elementSize: 4,
            width: 64,
            height: 1,
        };
        let memcpy = sys::CUDA_MEMCPY3D {
            srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcDevice: x.device_ptr(),
            dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            dstDevice: y.device_ptr(),
            WidthInBytes: 256,
            Height: 1,
            Depth: 1,
            ..Default::default()
        };
        let host = sys::CUDA_HOST_NODE_PARAMS {
            fn_: Some(count_run),
            userData: std::ptr::null_mut(),
        };
        let mut exec = std::ptr::null_mut();
        let mut n = [std::ptr::null_mut(); 5];
        // SAFETY: every parameter block is valid for its call (the driver copies them); each node
        // depends on the one before; the buffers and flags outlive every launch (synchronised below).
        unsafe {
            fake::check("cuGraphCreate", cu.cuGraphCreate(&mut g, 0));
            fake::check(
                "cuGraphAddMemsetNode",
                cu.cuGraphAddMemsetNode(&mut n[0], g, std::ptr::null(), 0, &memset, ctx),
            );
            fake::check(
                "cuGraphAddMemcpyNode",
                cu.cuGraphAddMemcpyNode(&mut n[1], g, &n[0], 1, &memcpy, ctx),
            );
            fake::check(
                "cuGraphAddBatchMemOpNode",
                cu.cuGraphAddBatchMemOpNode(&mut n[2], g, &n[1], 1, &batch),
            );
            fake::check(
                "cuGraphAddHostNode",
                cu.cuGraphAddHostNode(&mut n[3], g, &n[2], 1, &host),
            );
            fake::check(
                "cuGraphAddEmptyNode",
                cu.cuGraphAddEmptyNode(&mut n[4], g, &n[3], 1),
            );
            fake::check(
                "cuGraphInstantiateWithFlags",
                cu.cuGraphInstantiateWithFlags(&mut exec, g, 0),
            );
            fake::check("cuGraphLaunch", cu.cuGraphLaunch(exec, s.as_raw()));
        }
        use CUgraphNodeType as T;
        assert_eq!(
            node_types(g),
            [
                T::CU_GRAPH_NODE_TYPE_MEMSET,
                T::CU_GRAPH_NODE_TYPE_MEMCPY,
                T::CU_GRAPH_NODE_TYPE_BATCH_MEM_OP,
                T::CU_GRAPH_NODE_TYPE_HOST,
                T::CU_GRAPH_NODE_TYPE_EMPTY
            ]
        );
        s.synchronize().unwrap();
        let mut back = vec![0u32; 64];
        s.copy_dtoh(&y, &mut back).unwrap();
        assert_eq!(back, [0x0102_0304u32; 64]);
        assert_eq!(
            (f1.load(), f2.load(), HOST_RUNS.load(Ordering::Acquire)),
            (5, 6, 1)
        );

        // Launched on a capturing stream, the executable becomes one child-graph node.
        let c = d.new_stream().unwrap();
        c.begin_capture().unwrap();
        // SAFETY: the executable and the stream are live.
        fake::check("cuGraphLaunch", unsafe {
            cu.cuGraphLaunch(exec, c.as_raw())
        });
        let outer = c.end_capture().unwrap();
        assert_eq!(node_types(outer), [T::CU_GRAPH_NODE_TYPE_GRAPH]);
        assert_eq!(HOST_RUNS.load(Ordering::Acquire), 1, "captured work ran");
        let mut outer_exec = std::ptr::null_mut();
        // SAFETY: the graphs and executables are live and each is destroyed once, after use.
        unsafe {
            fake::check(
                "cuGraphInstantiateWithFlags",
                cu.cuGraphInstantiateWithFlags(&mut outer_exec, outer, 0),
            );
            fake::check("cuGraphLaunch", cu.cuGraphLaunch(outer_exec, s.as_raw()));
            s.synchronize().unwrap();
            fake::check("cuGraphExecDestroy", cu.cuGraphExecDestroy(outer_exec));
            fake::check("cuGraphExecDestroy", cu.cuGraphExecDestroy(exec));
            fake::check("cuGraphDestroy", cu.cuGraphDestroy(outer));
            fake::check("cuGraphDestroy", cu.cuGraphDestroy(g));
        }
        assert_eq!(HOST_RUNS.load(Ordering::Acquire), 2);
    });
}
