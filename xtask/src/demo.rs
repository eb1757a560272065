//! `cargo xtask demo [--bundle DIR] [ARGS...]`: the gated-pipeline demo (`demo/`, issue 7).
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

use crate::{bench, util};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn run(args: &[String]) -> Result<(), String> {
    let mut bundle: Option<PathBuf> = None;
    let mut rest: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bundle" => bundle = Some(it.next().ok_or("--bundle needs a directory")?.into()),
            _ => rest.push(a.clone()),
        }
    }
    let exe = bench::build_release("ferrocuda-demo", "gated_pipeline")?;
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
            util::run(cmd.args(&rest))
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

fn write_bundle(dir: &Path, exe: &Path) -> Result<(), String> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(io(&bin))?;
    let dst = bin.join("gated_pipeline");
    std::fs::copy(exe, &dst).map_err(io(exe))?;
    util::run(Command::new("strip").arg("--strip-unneeded").arg(&dst))?;
    let write = |name: &str, text: &str| -> Result<(), String> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io(&p))
    };
    write("COMMIT", &format!("{}\n", bench::commit()))?;
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
