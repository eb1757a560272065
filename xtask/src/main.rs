//! `cargo xtask <command>`: every repository chore of ferrocuda.
//!
//! | command | what it does |
//! | --- | --- |
//! | `setup` | makes a CUDA 13.0 compiler, `cuda.h` and cuobjdump available without root |
//! | `bindgen [--check]` | regenerates `crates/cuda-sys/src/bindings.rs` (or checks it is fresh) |
//! | `ptx [--check]` | recompiles the checked-in PTX (or checks it is fresh) |
//! | `test` | the README's test command: everything that runs without a GPU |
//! | `test-gpu [--bundle DIR]` | builds the GPU tests; runs them here if a GPU is present |
//! | `bench [--bundle DIR] [--json FILE]` | builds the benchmark bundle; runs it here if a GPU is present |
//! | `bench --smoke` | runs the C baseline against a fake driver: every benchmark terminates (part of `test`) |
//! | `demo [--bundle DIR] [ARGS...]` | the gated-pipeline demo: runs it here, or bundles it for a GPU machine |
//! | `demo --smoke` | runs the demo against a fake driver: every strategy terminates and matches the CPU (part of `test`) |
//! | `bench-report [--markdown] FILE...` | compares raw / ferrocuda / cudarc rows of benchmark JSON files |
//! | `kernels` | rebuilds the CUDA kernels, checks their SASS, refreshes `crates/kernels/prebuilt/` and docs/kernels.md |

mod bench;
mod codegen;
mod demo;
mod fake;
mod gpu;
mod hygiene;
mod ptx;
mod sass;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup                    install the CUDA 13.0 compiler and headers (pip, no root) if no nvcc >= 13.0 is found
  bindgen [--check]        regenerate ferrocuda-sys's bindings from cuda.h (--check: fail if stale)
  ptx [--check]            recompile the checked-in PTX (--check: fail if stale)
  test                     fmt, hygiene, clippy, CPU tests, fake-driver tests, loom models, docs, freshness checks: the CI command
  test-gpu [--bundle DIR]  build the GPU tests; run them when a GPU is here, or write a bundle to DIR
  bench [--bundle DIR] [--json FILE] [BENCH...]
                           build the benchmarks (C baseline + Rust programs); run them when a GPU is here
  demo [--bundle DIR] [ARGS...]
                           the gated-pipeline demo: run it here (ARGS go to it), or write a bundle to DIR
  demo --smoke             run the demo against a fake driver (no GPU): every strategy terminates and agrees
  bench --smoke            run the C baseline against a fake driver (no GPU): every benchmark terminates
  bench-report [--markdown] FILE...
                           print raw / ferrocuda / cudarc side by side from benchmark JSON files
  kernels                  rebuild the CUDA kernels, check their SASS, refresh prebuilt cubins and docs
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run().map(|tk| {
            println!("nvcc: {}", tk.nvcc.display());
        }),
        Some("bindgen") => codegen::run(args[1..].iter().any(|a| a == "--check")),
        Some("ptx") => ptx::run(args[1..].iter().any(|a| a == "--check")),
        Some("test") => test::run(),
        Some("test-gpu") => gpu::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("bench-report") => bench::report(&args[1..]),
        Some("kernels") => setup::run().and_then(|tk| sass::write(&tk)),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
