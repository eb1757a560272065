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
        "crates/driver/src/runtime/gates/gate.cu",
        "crates/driver/src/runtime/gates/gate.ptx",
    ),
    (
        "demo/kernels/gated_pipeline.cu",
        "demo/kernels/gated_pipeline.ptx",
    ),
];

/// (CUDA source, checked-in fatbin, SASS architectures): kernels that set a graph's conditional
/// handles (`cudaGraphSetConditional`). The driver resolves that call when it loads a cubin, not
/// when it JIT-compiles PTX, so these ship as SASS: the crate's for every architecture CUDA 13
/// compiles for, the GPU tests' for the Hopper GPUs they run on.
pub const FATBINS: &[(&str, &str, &[u32])] = &[
    (
        "crates/driver/src/runtime/gates/loop.cu",
        "crates/driver/src/runtime/gates/loop.fatbin",
        &[75, 80, 86, 89, 90, 100, 120],
    ),
    (
        "crates/driver/tests/kernels/loop_test_kernels.cu",
        "crates/driver/tests/kernels/loop_test_kernels.fatbin",
        &[90],
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

fn compile_fatbin(nvcc: &Path, src: &Path, archs: &[u32]) -> Result<Vec<u8>, String> {
    let out = std::env::temp_dir().join(format!("ferrocuda-fatbin-{}.fatbin", std::process::id()));
    let mut cmd = Command::new(nvcc);
    cmd.args(["-fatbin", "-O3"]);
    for a in archs {
        cmd.arg("-gencode")
            .arg(format!("arch=compute_{a},code=sm_{a}"));
    }
    util::run(
        cmd.arg("-I")
            .arg(util::root().join(INCLUDE))
            .arg("-o")
            .arg(&out)
            .arg(src),
    )?;
    let bytes = std::fs::read(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    Ok(bytes)
}

/// Fails on a system-scope atomic (`atom.*.sys.*` / `red.*.sys.*`): the kernels' atomics target
/// counters that may be mapped host memory, where CUDA makes a GPU's atomics atomic among its own
/// threads only (a system-scope one needs host-native atomics, which PCIe hosts lack;
/// compute-sanitizer rejects it there). docs/gates.md says more.
fn no_system_atomics(name: &str, ptx: &str) -> Result<(), String> {
    let bad: Vec<&str> = ptx
        .lines()
        .map(str::trim)
        .filter(|l| {
            let op = l.split_whitespace().next().unwrap_or("");
            (op.starts_with("atom.") || op.starts_with("red.")) && op.split('.').any(|p| p == "sys")
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{name}: system-scope atomics on what may be mapped host memory (use a device-scope \
             atomicAdd; docs/gates.md, time limit): {bad:?}"
        ))
    }
}

pub fn run(check: bool) -> Result<(), String> {
    let tk = setup::run()?;
    let root = util::root();
    for (src, ptx) in SOURCES {
        let text = compile(&tk.nvcc, &root.join(src))?;
        no_system_atomics(ptx, &text)?;
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
    for (src, fatbin, archs) in FATBINS {
        let bytes = compile_fatbin(&tk.nvcc, &root.join(src), archs)?;
        let path = root.join(fatbin);
        if check {
            if std::fs::read(&path).unwrap_or_default() != bytes {
                return Err(format!(
                    "{fatbin} is stale: run `cargo xtask ptx` and commit the result"
                ));
            }
        } else {
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("wrote {fatbin}");
        }
    }
    if check {
        println!("PTX and fatbins are fresh");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::no_system_atomics;

    #[test]
    fn system_scope_atomics_are_refused_device_scope_ones_pass() {
        let device = "\tatom.global.add.u64 \t%rd19, [%rd4], 1;\n\tred.global.add.u32 [%rd1], 1;\n";
        no_system_atomics("ok.ptx", device).unwrap();
        for bad in [
            "\tatom.global.sys.add.u64 \t%rd19, [%rd4], 1;",
            "\tred.relaxed.sys.global.add.u64 [%rd1], 1;",
        ] {
            let e = no_system_atomics("bad.ptx", bad).unwrap_err();
            assert!(e.contains("bad.ptx") && e.contains("sys"), "{e}");
        }
        // A system-scope load or store is no atomic.
        no_system_atomics("ok.ptx", "\tld.acquire.sys.global.u64 %rd1, [%rd2];").unwrap();
    }
}
