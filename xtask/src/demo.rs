//! `cargo xtask demo [--bundle DIR] [ARGS...]`: the gated-pipeline demo (`demo/`).
//!
//! Without `--bundle`, builds `gated_pipeline` in release mode and runs it here with `ARGS` (on a
//! machine without a GPU it says so in one line and exits non-zero). With `--bundle DIR`, writes a
//! folder that runs on a GPU machine with no Rust toolchain and no CUDA toolkit (the kernel is
//! PTX embedded in the binary, JIT-compiled by the driver):
//!
//! ```text
//! DIR/run                    runs the demo; arguments go to it; the plot lands in DIR/out/ unless --svg is given
//! DIR/bin/gated_pipeline     the stripped binary
//! DIR/COMMIT                 the commit the bundle was built from
//! ```
//!
//! `cargo xtask demo --smoke` (a step of `cargo xtask test`) runs the demo against
//! `xtask/fake/fake_cuda.c`, a fake `libcuda.so.1` that runs streams on host threads: every
//! strategy must terminate and compute the CPU's values, and the plot must be written. Where no
//! GPU is present it also checks that the demo says so in one line and exits non-zero.

use crate::{fake, setup, util};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn run(args: &[String]) -> Result<(), String> {
    let mut bundle: Option<PathBuf> = None;
    let mut rest: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bundle" => bundle = Some(it.next().ok_or("--bundle needs a directory")?.into()),
            "--smoke" => return smoke(),
            _ => rest.push(a.clone()),
        }
    }
    let exe = util::build_release("ferrocuda-demo", "gated_pipeline")?;
    match bundle {
        Some(dir) => {
            if !rest.is_empty() {
                return Err(format!(
                    "demo: with --bundle, give the demo's arguments to the bundle's `run` instead of {rest:?}"
                ));
            }
            write_bundle(&dir, &exe)?;
            println!("wrote demo bundle {}", dir.display());
            println!(
                "on a GPU machine: {}/run [--steps N] [--gpu-us U] [--sweep F,F,...] [--svg FILE] [--json FILE]",
                dir.display()
            );
            Ok(())
        }
        None => {
            let svg = util::root().join("target/gated_pipeline.svg");
            let mut cmd = Command::new(&exe);
            if !rest.iter().any(|a| a == "--svg") {
                cmd.arg("--svg").arg(&svg);
            }
            let status = cmd
                .args(&rest)
                .status()
                .map_err(|e| format!("{}: {e}", exe.display()))?;
            match status.code() {
                Some(0) => Ok(()),
                // The demo already said in one line why it did not run (no GPU, bad arguments).
                Some(2) => std::process::exit(2),
                _ => Err(format!("gated_pipeline failed ({status})")),
            }
        }
    }
}

/// See the module docs.
pub fn smoke() -> Result<(), String> {
    let tk = setup::run()?;
    let root = util::root();
    let dir = root.join("target/demo-smoke");
    let fake = fake::build(&tk, &dir)?;

    util::run(util::cargo().args(["build", "-p", "ferrocuda-demo", "--bin", "gated_pipeline"]))?;
    let exe = root.join("target/debug/gated_pipeline");
    let svg = dir.join("gated_pipeline.svg");
    let _ = std::fs::remove_file(&svg);
    let out = util::output(
        Command::new("timeout")
            .arg("120")
            .arg(&exe)
            .env("LD_LIBRARY_PATH", &fake)
            .args([
                "--steps", "200", "--gpu-us", "50", "--sweep", "0.5,2", "--gate", "fused", "--svg",
            ])
            .arg(&svg),
    )?;
    if !out.contains("every strategy computed the CPU's values") {
        return Err(format!("demo smoke: values not confirmed:\n{out}"));
    }
    let plot = std::fs::read_to_string(&svg).map_err(util::io(&svg))?;
    // The four strategies and `flag+fused` (--gate fused).
    if plot.matches("<polyline").count() != 5 {
        return Err(format!("{}: expected one line per strategy", svg.display()));
    }

    if !crate::gpu::gpu_present() {
        let o = Command::new(&exe)
            .env("LD_LIBRARY_PATH", dir.join("no-driver-here"))
            .output()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() || err.lines().count() != 1 || !err.contains("no CUDA GPU") {
            return Err(format!(
                "demo without a GPU: expected one line and a non-zero exit, got {:?}:\n{err}",
                o.status.code()
            ));
        }
    }
    eprintln!(
        "demo smoke: 5 strategies (with --gate fused) × 2 host-work lengths ran against the fake driver and matched the CPU chain"
    );
    Ok(())
}

fn write_bundle(dir: &Path, exe: &Path) -> Result<(), String> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(util::io(&bin))?;
    let dst = bin.join("gated_pipeline");
    util::copy_stripped(exe, &dst)?;
    let write = |name: &str, text: &str| -> Result<(), String> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(util::io(&p))
    };
    write("COMMIT", &format!("{}\n", util::commit()))?;
    write("run", RUN)?;
    util::run(Command::new("chmod").arg("+x").arg(dir.join("run")))
}

const RUN: &str = r#"#!/usr/bin/env bash
# ferrocuda gated-pipeline demo bundle, written by `cargo xtask demo --bundle`. Needs an NVIDIA GPU
# and its driver; no Rust toolchain, no CUDA toolkit. Arguments go to the demo
# (`run --help` lists them); without --svg the plot is written to out/gated_pipeline.svg beside
# this script.
set -u
here=$(cd "$(dirname "$0")" && pwd)
args=("$@")
case " $* " in *" --svg "*) ;; *) mkdir -p "$here/out"; args+=(--svg "$here/out/gated_pipeline.svg") ;; esac
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.max.sm --format=csv
echo "commit $(cat "$here/COMMIT" 2>/dev/null || echo unknown)"
exec timeout --kill-after=10 "${DEMO_DEADLINE_S:-300}" "$here/bin/gated_pipeline" "${args[@]}"
"#;
