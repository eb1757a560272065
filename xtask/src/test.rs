//! `cargo xtask test`: everything that runs without a GPU. This is the CI command.

use crate::{bench, codegen, sass, setup, util};
use std::time::Instant;

/// Features that compile GPU-only code; clippy and docs build them too, so GPU code is checked on CPU machines.
pub const LINT_FEATURES: &str =
    "ferrocuda-tests/gpu-tests,ferrocuda-driver/gpu-tests,ferrocuda-kernels/gpu-tests";

pub fn run() -> Result<(), String> {
    let mut steps: Vec<(&str, Result<(), String>, f64)> = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> Result<(), String>| {
        eprintln!("\n==> {name}");
        let t = Instant::now();
        let r = f();
        if let Err(e) = &r {
            eprintln!("xtask test: step `{name}` failed: {e}");
        }
        steps.push((name, r, t.elapsed().as_secs_f64()));
    };

    let mut toolkit = None;
    step("setup", &mut || setup::run().map(|tk| toolkit = Some(tk)));
    step("fmt", &mut || {
        util::run(util::cargo().args(["fmt", "--all", "--check"]))
    });
    step("clippy", &mut || {
        util::run(util::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            LINT_FEATURES,
            "--",
            "-D",
            "warnings",
        ]))
    });
    step("tests", &mut || {
        util::run(util::cargo().args(["test", "--workspace"]))
    });
    step("doc", &mut || {
        util::run(
            util::cargo()
                .args([
                    "doc",
                    "--workspace",
                    "--no-deps",
                    "--features",
                    LINT_FEATURES,
                ])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    });
    step("ptx fresh", &mut || crate::ptx::run(true));
    step("kernels (SASS)", &mut || match &toolkit {
        Some(tk) => sass::check(tk),
        None => Err("no CUDA toolkit (the setup step failed)".into()),
    });
    // Every published crate packages and builds from its package alone (path dependencies
    // resolved to the packaged versions): `cargo add` works. Unpublished packages are excluded.
    step("package", &mut || {
        forget_packaged_builds();
        util::run(util::cargo().args([
            "package",
            "--workspace",
            "--allow-dirty",
            "--exclude",
            "xtask",
            "--exclude",
            "ferrocuda-tests",
            "--exclude",
            "ferrocuda-bench",
            "--exclude",
            "ferrocuda-demo",
        ]))
    });
    if codegen::libclang_available() {
        step("bindings fresh", &mut || codegen::run(true));
    } else {
        eprintln!(
            "\nxtask test: libclang not found, bindings freshness not checked (install libclang-dev)"
        );
    }

    step("bench smoke", &mut bench::smoke);
    step("demo smoke", &mut crate::demo::smoke);

    let failed: Vec<_> = steps.iter().filter(|s| s.1.is_err()).collect();
    eprintln!();
    for (name, r, secs) in &steps {
        eprintln!(
            "  {:<16} {:>6.1}s  {}",
            name,
            secs,
            if r.is_ok() { "ok" } else { "FAILED" }
        );
    }
    println!(
        "xtask test: {} passed, {} failed",
        steps.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} step(s) failed", failed.len()))
    }
}

/// `cargo package` verifies each crate against the packaged versions of the crates it depends on,
/// which cargo treats as registry crates: immutable, so a build of `ferrocuda-driver 0.1.0` from an
/// earlier run is reused even after the driver's source changed, and a crate using the new API
/// fails to verify. Removing the fingerprints of workspace crates built from a registry source
/// makes cargo rebuild them from the fresh packages.
fn forget_packaged_builds() {
    let debug = util::root().join("target/debug");
    let Ok(entries) = std::fs::read_dir(debug.join("deps")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".d") else {
            continue;
        };
        if !stem.starts_with("ferrocuda_") {
            continue;
        }
        let from_registry =
            std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("/registry/src/"));
        if from_registry {
            let _ =
                std::fs::remove_dir_all(debug.join(".fingerprint").join(stem.replace('_', "-")));
        }
    }
}
