//! Shared helpers of the driver's GPU tests.
#![allow(dead_code)]

use ferrocuda_driver::{
    CompletionFlagRef, Device, DeviceStream, Function, LaunchArgs, LaunchConfig, Module,
};
// Not every test file uses each of them.
#[allow(unused_imports)]
pub use ferrocuda_test_support::{deadline, mark, slack};

/// The test kernels (crates/driver/tests/kernels/test_kernels.cu, compiled by `cargo xtask ptx`).
pub const TEST_PTX: &str = include_str!("../kernels/test_kernels.ptx");

pub struct Kernels {
    pub module: Module,
    pub ack: Function,
    pub spin_ns: Function,
    pub log_tag: Function,
    pub check_step: Function,
    pub add_u32: Function,
}

impl Kernels {
    /// Enqueues `ack(flag, value)` on `stream`: one thread stores `value` into the flag (a release
    /// store at system scope, so the host sees it with everything the stream did before).
    pub fn launch_ack(&self, stream: &DeviceStream, flag: CompletionFlagRef<'_>, value: u64) {
        // SAFETY: ack(u64* flag, u64 value) takes exactly these two parameters; the flag's slot is
        // mapped pinned memory the launch keeps alive until the kernel ran.
        unsafe {
            stream.launch(
                &self.ack,
                LaunchConfig::single_thread(),
                LaunchArgs::new().arg(&flag).arg(&value),
            )
        }
        .expect("launch ack");
    }
}

pub fn kernels(device: &Device) -> Kernels {
    mark("load the test kernels", 0);
    let module = Module::from_ptx(device, TEST_PTX).expect("test PTX loads");
    let f = |n| module.function(n).expect("kernel present");
    Kernels {
        ack: f("ack"),
        spin_ns: f("spin_ns"),
        log_tag: f("log_tag"),
        check_step: f("check_step"),
        add_u32: f("add_u32"),
        module,
    }
}

pub fn device() -> Device {
    mark("open device 0", 0);
    Device::new(0).expect("a GPU test needs device 0")
}

/// splitmix64, as the `check_step` kernel computes it.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A seed that differs per run (printed, so a failure can be replayed with FERROCUDA_SEED).
pub fn seed() -> u64 {
    let s = std::env::var("FERROCUDA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("seed: {s}");
    s
}
