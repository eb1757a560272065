//! `cargo xtask test`: everything that runs without a GPU. This is the CI command.

use crate::{bench, codegen, fake, hygiene, sass, setup, util};
use std::process::Stdio;
use std::time::Instant;

/// How many loom models ferrocuda-driver has (tests named `loom_*` under `--cfg loom`): the loom
/// step fails when fewer ran, so a filter or a cfg that selects none cannot pass unnoticed.
const LOOM_MODELS: usize = 10;

/// Features that compile GPU-only code; clippy and docs build them too, so GPU code is checked on CPU machines.
/// They build cust: the commands that name them need [`fake::with_cust_link`].
pub const LINT_FEATURES: &str = "ferrocuda-tests/gpu-tests,ferrocuda-tests/fake-tests,ferrocuda-driver/gpu-tests,ferrocuda-driver/cudarc,ferrocuda-driver/cust,ferrocuda-graph/cudarc,ferrocuda-graph/cust,ferrocuda-kernels/gpu-tests";

/// The toolkit the setup step found: building cust needs it (the fake driver is its libcuda).
fn found_toolkit(tk: &Option<setup::Toolkit>) -> Result<&setup::Toolkit, String> {
    tk.as_ref().ok_or_else(|| {
        "no CUDA toolkit (the setup step failed): the fake driver needs cuda.h".into()
    })
}

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
    step("hygiene", &mut || hygiene::check(&util::root()));
    step("clippy", &mut || {
        util::run(
            fake::with_cust_link(&mut util::cargo(), found_toolkit(&toolkit)?)?.args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--features",
                LINT_FEATURES,
                "--",
                "-D",
                "warnings",
            ]),
        )
    });
    step("tests", &mut || {
        util::run(util::cargo().args(["test", "--workspace"]))
    });
    step("fake-driver tests", &mut || {
        fake_driver_tests(found_toolkit(&toolkit)?)
    });
    step("loom models", &mut loom_models);
    step("doc", &mut || {
        util::run(
            fake::with_cust_link(&mut util::cargo(), found_toolkit(&toolkit)?)?
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
    // resolved to the packaged versions): `cargo add` works.
    step("package", &mut package_check);
    match bindings_check(
        codegen::libclang_available(),
        is_ci(std::env::var("CI").ok().as_deref()),
    ) {
        BindingsCheck::Run => step("bindings fresh", &mut || codegen::run(true)),
        BindingsCheck::Fail => step("bindings fresh", &mut || Err(NO_LIBCLANG_IN_CI.into())),
        BindingsCheck::Skip => eprintln!(
            "\nxtask test: libclang not found, bindings freshness not checked (install libclang-dev; \
             with CI=true this fails)"
        ),
    }

    step("bench smoke", &mut bench::smoke);
    step("demo smoke", &mut crate::demo::smoke);

    let failed: Vec<_> = steps.iter().filter(|s| s.1.is_err()).collect();
    eprintln!("\n{}", summary(&steps));
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

/// The table of the steps that ran: name, seconds, `ok` or `FAILED`.
fn summary(steps: &[(&str, Result<(), String>, f64)]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(["step", "seconds", "result"]);
    if let Some(secs) = t.column_mut(1) {
        secs.set_cell_alignment(comfy_table::CellAlignment::Right);
    }
    for (name, r, secs) in steps {
        let result = if r.is_ok() { "ok" } else { "FAILED" };
        t.add_row([(*name).to_owned(), format!("{secs:.1}"), result.to_owned()]);
    }
    t
}

/// Runs ferrocuda-driver's loom models: its lib tests named `loom`, built with `--cfg loom` (which
/// swaps the modelled state's std types for loom's) in release mode with overflow checks and
/// debug assertions (an arithmetic slip or a broken `debug_assert!` invariant of a protocol fails
/// its model), in `target/loom` so that the normal target is not rebuilt. Fails if a model fails or if fewer than [`LOOM_MODELS`] ran.
fn loom_models() -> Result<(), String> {
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    rustflags.push_str(" --cfg loom");
    let mut cmd = util::cargo();
    cmd.env("RUSTFLAGS", rustflags.trim())
        .env("CARGO_TARGET_DIR", util::root().join("target/loom"))
        .env("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "true")
        .env("CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS", "true")
        .args([
            "test",
            "-p",
            "ferrocuda-driver",
            "--lib",
            "--release",
            "loom",
            // One model at a time: loom maps and unmaps thread stacks for every execution, and two
            // models at once contend in the kernel (on 2 cores: 43 s one at a time, 55 s two).
            "--",
            "--test-threads=1",
        ])
        .stderr(Stdio::inherit());
    eprintln!(
        "$ RUSTFLAGS='--cfg loom' CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
         CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true {}",
        util::show(&cmd)
    );
    let out = cmd
        .output()
        .map_err(|e| format!("could not start `{}`: {e}", util::show(&cmd)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");
    if !out.status.success() {
        return Err(format!("a loom model failed ({})", out.status));
    }
    let ran = tests_passed(&stdout)
        .ok_or("no `test result: ok. N passed` line in the loom run's output")?;
    if ran < LOOM_MODELS {
        return Err(format!(
            "{ran} loom models ran, expected at least {LOOM_MODELS}"
        ));
    }
    Ok(())
}

/// The `N` of libtest's `test result: ok. N passed; ...` line.
fn tests_passed(stdout: &str) -> Option<usize> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|rest| rest.split_once(" passed"))
        .and_then(|(n, _)| n.parse().ok())
}

/// What `cargo xtask test` does about the bindings freshness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindingsCheck {
    /// Regenerate the bindings and compare them with the checked-in file.
    Run,
    /// Say that the check did not run, and go on.
    Skip,
    /// Fail the step: CI must check the bindings.
    Fail,
}

/// Why the step fails in CI without libclang.
const NO_LIBCLANG_IN_CI: &str = "libclang not found, and CI must check that the checked-in \
    bindings are fresh: install Debian's libclang-dev (`.ci/run` does) or set LIBCLANG_PATH";

/// Whether the `CI` environment variable says this is a CI run: `true` (what CI services set),
/// in any case, or `1`.
fn is_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The bindings check: run where libclang is; without it, fail in CI (a skipped check there
/// would let stale bindings land) and skip elsewhere.
fn bindings_check(libclang: bool, ci: bool) -> BindingsCheck {
    match (libclang, ci) {
        (true, _) => BindingsCheck::Run,
        (false, true) => BindingsCheck::Fail,
        (false, false) => BindingsCheck::Skip,
    }
}

/// The soundness regression tests against the fake driver, `xtask/fake/fake_cuda.c`, built into
/// `target/fake-tests/fake/` and put on `LD_LIBRARY_PATH`: `tests/tests/fake_*.rs` (feature
/// `fake-tests` of ferrocuda-tests), the interop tests (`tests/tests/interop_*.rs`: the other
/// library loads the same fake; cust links against it, [`fake::cust_link_dir`]), the fault tests
/// and the cust doc examples (cust is built here, not in the tests step), then the soundness suite
/// (`tests/tests/soundness.rs`, the same tests the GPU bundle runs) on two fake devices, one test
/// at a time (its tests check process-wide counters: pending futures, deferred releases). The
/// tests check that the driver they loaded is the fake, so they can neither pass against a GPU nor
/// be skipped without one; and the fake exits with status 4 if any thread, the crate's own
/// included, frees memory or loads or unloads a module while a stream waits on a value (the real
/// driver blocks there).
fn fake_driver_tests(tk: &setup::Toolkit) -> Result<(), String> {
    let fake = fake::build(tk, &util::root().join("target/fake-tests"))?;
    let fake_tests = |test: &str, devices: &str, harness: &[&str]| {
        util::run(
            fake::with_cust_link(&mut util::cargo(), tk)?
                .env("LD_LIBRARY_PATH", &fake)
                .env("FAKE_CUDA_DEVICES", devices)
                .args(["test", "-p", "ferrocuda-tests", "--features", "fake-tests"])
                .args(["--test", test, "--"])
                .args(harness),
        )
    };
    fake_tests("fake_*", "1", &[])?;
    // cudarc loads the same fake (its `libcuda.so.1` candidate) for the interop tests, and cust
    // links it (the soname of the fake it was linked against at build time).
    fake_tests("interop_*", "1", &["--test-threads=1"])?;
    // A fault breaks the context for the rest of the process: each such binary has one test.
    fake_tests("fault_*", "1", &[])?;
    // The cust doc examples (`no_run`: compiled, not run); the tests step builds no cust.
    util::run(
        fake::with_cust_link(&mut util::cargo(), tk)?
            .env("LD_LIBRARY_PATH", &fake)
            .args([
                "test",
                "-p",
                "ferrocuda-driver",
                "--features",
                "cust",
                "--doc",
            ])
            .args(["--", "interop::cust"]),
    )?;
    fake_tests("soundness", "2", &["--test-threads=1"])
}

/// Packages not published, left out of the package step.
const UNPUBLISHED: &[&str] = &[
    "xtask",
    "ferrocuda-tests",
    "ferrocuda-bench",
    "ferrocuda-demo",
];

/// `cargo package --workspace` of every published crate, each built from its `.crate` alone, with
/// a cargo home of its own in `target/package-home/`.
///
/// Why its own home: the verify build of a package that depends on another workspace package
/// takes that package's `.crate` from a local registry in the target directory, and cargo unpacks
/// it under `$CARGO_HOME/registry/src/`. Cargo never unpacks a name-version that is already
/// there, and never rebuilds a registry package whose version did not change, so after an edit
/// without a version bump the check would build the dependent crate against the stale copy. The
/// step therefore removes that home's unpacked sources (keeping its index and downloads) and
/// empties its target directory, `target/package-check/`, before each run: the user's cargo home
/// is neither written nor cleaned. The user's cargo configuration still applies (`--config`).
fn package_check() -> Result<(), String> {
    let root = util::root();
    let home = root.join("target/package-home");
    let target = root.join("target/package-check");
    for stale in [home.join("registry/src"), target.clone()] {
        if stale.exists() {
            std::fs::remove_dir_all(&stale).map_err(util::io(&stale))?;
        }
    }
    let mut cmd = util::cargo();
    cmd.env("CARGO_HOME", &home)
        .env("CARGO_TARGET_DIR", &target);
    if let Some(config) = user_cargo_config() {
        cmd.arg("--config").arg(config);
    }
    cmd.args(["package", "--workspace", "--allow-dirty"]);
    for p in UNPUBLISHED {
        cmd.args(["--exclude", p]);
    }
    eprintln!(
        "(CARGO_HOME={} CARGO_TARGET_DIR={})",
        home.display(),
        target.display()
    );
    util::run(&mut cmd)
}

/// The configuration file of the user's cargo home (`$CARGO_HOME`, else `~/.cargo`), if any.
fn user_cargo_config() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))?;
    ["config.toml", "config"]
        .iter()
        .map(|name| home.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_fails_the_bindings_check_without_libclang_elsewhere_it_skips() {
        assert_eq!(bindings_check(true, true), BindingsCheck::Run);
        assert_eq!(bindings_check(true, false), BindingsCheck::Run);
        assert_eq!(bindings_check(false, true), BindingsCheck::Fail);
        assert_eq!(bindings_check(false, false), BindingsCheck::Skip);
        assert!(NO_LIBCLANG_IN_CI.contains("libclang-dev"));
    }

    #[test]
    fn loom_step_reads_the_passed_count_of_a_successful_run_only() {
        let ok = "running 3 tests\ntest a ... ok\n\ntest result: ok. 3 passed; 0 failed; 0 ignored; \
                  0 measured; 24 filtered out; finished in 1.0s\n";
        assert_eq!(tests_passed(ok), Some(3));
        let none = "running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; \
                    25 filtered out; finished in 0.0s\n";
        assert_eq!(tests_passed(none), Some(0));
        assert_eq!(
            tests_passed("test result: FAILED. 2 passed; 1 failed;"),
            None
        );
        assert_eq!(tests_passed(""), None);
    }

    #[test]
    fn summary_has_a_row_per_step_with_its_time_and_result() {
        let steps = [
            ("fmt", Ok(()), 1.5),
            ("clippy", Err("lint".to_owned()), 42.0),
        ];
        let t = summary(&steps);
        assert_eq!(t.row_count(), 2);
        let lines: Vec<String> = t.lines().collect();
        let line = |step: &str| {
            lines
                .iter()
                .find(|l| l.contains(step))
                .cloned()
                .unwrap_or_default()
        };
        assert!(line("fmt").contains("1.5") && line("fmt").contains("ok"));
        assert!(line("clippy").contains("42.0") && line("clippy").contains("FAILED"));
    }

    #[test]
    fn ci_is_recognised_by_ci_true() {
        assert!(is_ci(Some("true")));
        assert!(is_ci(Some("TRUE")));
        assert!(is_ci(Some("1")));
        assert!(!is_ci(None));
        assert!(!is_ci(Some("")));
        assert!(!is_ci(Some("false")));
    }
}
