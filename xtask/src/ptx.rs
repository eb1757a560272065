//! `cargo xtask ptx [--check]`: PTX that ferrocuda embeds or its tests load, compiled from CUDA C++
//! and checked in, so building the driver crate never needs nvcc.

use crate::{setup, util};
use std::path::Path;
use std::process::Command;

/// (CUDA source, checked-in PTX), relative to the workspace root.
pub const SOURCES: &[(&str, &str)] = &[
    (
        "crates/driver/tests/kernels/test_kernels.cu",
        "crates/driver/tests/kernels/test_kernels.ptx",
    ),
    (
        "crates/driver/src/kernels/gate.cu",
        "crates/driver/src/kernels/gate.ptx",
    ),
    (
        "demo/kernels/gated_pipeline.cu",
        "demo/kernels/gated_pipeline.ptx",
    ),
];

/// The oldest architecture CUDA 13 supports: the driver JIT-compiles the PTX for the device at hand.
const ARCH: &str = "compute_75";

/// Headers the sources may include (`ferrocuda/gate.cuh`: the demo's fused gate).
const INCLUDE: &str = "crates/kernels/cuda/include";

fn compile(nvcc: &Path, src: &Path) -> Result<String, String> {
    let out = std::env::temp_dir().join(format!("ferrocuda-ptx-{}.ptx", std::process::id()));
    util::run(
        Command::new(nvcc)
            .args(["-ptx", "-O3", &format!("-arch={ARCH}")])
            .arg("-I")
            .arg(util::root().join(INCLUDE))
            .arg("-o")
            .arg(&out)
            .arg(src),
    )?;
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    Ok(text)
}

pub fn run(check: bool) -> Result<(), String> {
    let tk = setup::run()?;
    let root = util::root();
    for (src, ptx) in SOURCES {
        let text = compile(&tk.nvcc, &root.join(src))?;
        let path = root.join(ptx);
        if check {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != text {
                return Err(format!(
                    "{ptx} is stale: run `cargo xtask ptx` and commit the result"
                ));
            }
        } else {
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("wrote {ptx}");
        }
    }
    if check {
        println!("PTX is fresh");
    }
    Ok(())
}
