//! The first GPU test: the driver, seen through ferrocuda-sys alone.
#![cfg(feature = "gpu-tests")]

use ferrocuda_sys::{CUdevice_attribute, CUresult, driver};
use std::ffi::CStr;

fn check(rc: CUresult, call: &str) {
    assert_eq!(
        rc,
        CUresult::CUDA_SUCCESS,
        "{call} failed: {:?} {:?}",
        ferrocuda_sys::error_name(rc),
        ferrocuda_sys::error_string(rc)
    );
}

#[test]
fn driver_reports_devices_names_and_compute_capability() {
    let cu = driver().expect("libcuda.so.1 must load on a GPU machine");
    // SAFETY: each out-pointer below is a valid local for the duration of its call.
    unsafe {
        check(cu.cuInit(0), "cuInit");
        let mut version = 0;
        check(cu.cuDriverGetVersion(&mut version), "cuDriverGetVersion");
        println!("driver version: {version}");
        assert!(version >= 13000, "driver {version} is older than CUDA 13.0");

        let mut count = 0;
        check(cu.cuDeviceGetCount(&mut count), "cuDeviceGetCount");
        assert!(count >= 1, "no CUDA device");
        for ordinal in 0..count {
            let mut dev = 0;
            check(cu.cuDeviceGet(&mut dev, ordinal), "cuDeviceGet");
            let mut name = [0 as std::os::raw::c_char; 256];
            check(
                cu.cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, dev),
                "cuDeviceGetName",
            );
            let name = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
            let (mut major, mut minor) = (0, 0);
            check(
                cu.cuDeviceGetAttribute(
                    &mut major,
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    dev,
                ),
                "cuDeviceGetAttribute",
            );
            check(
                cu.cuDeviceGetAttribute(
                    &mut minor,
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    dev,
                ),
                "cuDeviceGetAttribute",
            );
            let mut mem = 0usize;
            check(cu.cuDeviceTotalMem_v2(&mut mem, dev), "cuDeviceTotalMem_v2");
            println!(
                "device {ordinal}: {name}, compute capability {major}.{minor}, {} MiB",
                mem >> 20
            );
            assert!(!name.is_empty());
            assert!(
                major >= 5,
                "compute capability {major}.{minor} is below what CUDA 13 supports"
            );
            assert!(mem > 0);
        }
        // An invalid ordinal is an error the driver names, not a crash.
        let mut dev = 0;
        let rc = cu.cuDeviceGet(&mut dev, count);
        assert_eq!(rc, CUresult::CUDA_ERROR_INVALID_DEVICE);
        assert_eq!(
            ferrocuda_sys::error_name(rc),
            Some("CUDA_ERROR_INVALID_DEVICE")
        );
    }
}
