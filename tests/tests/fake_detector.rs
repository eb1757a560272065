//! The fake driver's use-after-free detector, through ferrocuda: stream work that touches freed
//! device memory leaves the context with the sticky `CUDA_ERROR_ILLEGAL_ADDRESS` and is counted,
//! and so is a double free. This proves the detector the other `fake_*` tests rely on. A test
//! binary of its own: the sticky error poisons the process's context.
#![cfg(feature = "fake-tests")]

use ferrocuda_driver::sys::CUresult;
use ferrocuda_driver::{DeviceEvent, Error};
use ferrocuda_test_support::deadline;
use ferrocuda_tests::fake;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn fake_driver_detects_use_after_free() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let s = d.new_stream().unwrap();
        let before = fake::violations();
        let src = s.alloc_zeroed::<u8>(4096).unwrap();
        let freed = s.alloc::<u8>(4096).unwrap();
        let dst = freed.device_ptr();
        drop(freed); // freed in `s`'s order: only `s` used it
        s.synchronize().unwrap();

        let cu = fake::driver();
        // SAFETY: the stream is live and `src` holds 4096 bytes; `dst` is freed memory, which is
        // the point: the fake skips the copy and reports it instead of writing there.
        let rc = unsafe { cu.cuMemcpyDtoDAsync_v2(dst, src.device_ptr(), 4096, s.as_raw()) };
        fake::check("cuMemcpyDtoDAsync_v2", rc);
        match s.synchronize() {
            Err(Error::Driver(e)) => {
                assert_eq!(e.code, CUresult::CUDA_ERROR_ILLEGAL_ADDRESS, "{e}")
            }
            other => panic!("expected CUDA_ERROR_ILLEGAL_ADDRESS, got {other:?}"),
        }
        assert!(
            fake::violations() > before,
            "the use after free was not counted"
        );
        // Sticky, as on a GPU: every later synchronisation reports it.
        let e = DeviceEvent::new(&d, false).unwrap();
        s.record_event(&e).unwrap();
        assert!(e.synchronize().is_err());
        assert!(s.synchronize().is_err());
    });
}

#[test]
fn fake_driver_counts_a_double_free() {
    deadline(30 * SEC, || {
        fake::device();
        let cu = fake::driver();
        let before = fake::violations();
        let mut p = 0;
        // SAFETY: `p` is a writable local; the fake driver is current-context agnostic.
        unsafe {
            fake::check("cuMemAlloc_v2", cu.cuMemAlloc_v2(&mut p, 256));
            fake::check("cuMemFree_v2", cu.cuMemFree_v2(p));
            assert_eq!(cu.cuMemFree_v2(p), CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        assert!(
            fake::violations() > before,
            "the double free was not counted"
        );
    });
}
