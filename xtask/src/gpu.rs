//! `cargo xtask test-gpu [--bundle DIR]`: the GPU test suite, built here, run where a GPU is.
//!
//! The tests are built in release mode with each GPU package's `gpu-tests` feature, stripped, and
//! copied into a bundle: `DIR/bin/<test>` plus a `run` script that needs no Rust toolchain. The
//! script runs every test binary (each under a deadline), then the compute-sanitizer passes listed
//! in [`SANITIZE`], prints `gpu bundle: N passed, M failed, K skipped` (tests named `*_needs_2_gpus` are skipped,
//! and counted so, where the script sees one GPU: `nvidia-smi -L`, narrowed by
//! `CUDA_VISIBLE_DEVICES`) and exits non-zero if anything failed. The unit tests of
//! [`UNIT_TEST_PACKAGES`] go in too; where `libnccl.so.2` is on the library path, `run` sets
//! `FERROCUDA_EXPECT_NCCL=1`, so that the NCCL tests fail if they cannot load it.

use crate::{fake, setup, util};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Packages with GPU tests behind a `gpu-tests` feature.
pub const GPU_PACKAGES: &[&str] = &["ferrocuda-driver", "ferrocuda-kernels", "ferrocuda-tests"];

/// Packages whose library unit tests also go into the bundle (named after the library, e.g.
/// `ferrocuda_nccl`): they check what only a GPU machine has, here that NCCL loads.
pub const UNIT_TEST_PACKAGES: &[&str] = &["ferrocuda-nccl"];

/// compute-sanitizer passes: (tool, test binary, arguments to the test binary).
/// The tests run under it set `FERROCUDA_SANITIZER=1`, which widens their time limits.
pub const SANITIZE: &[(&str, &str, &str)] = &[
    (
        "memcheck",
        "gpu_driver",
        "--exact dropped_flag_stays_alive_until_wait_passes",
    ),
    (
        "memcheck",
        "gpu_deadlocks",
        "--exact create_use_drop_cycles_leak_nothing",
    ),
    ("memcheck", "gpu_kernels", "small_"),
    ("racecheck", "gpu_kernels", "small_"),
    ("synccheck", "gpu_kernels", "small_"),
    (
        "memcheck",
        "gpu_driver",
        "--exact dropped_buffer_used_on_another_stream_stays_alive",
    ),
    (
        "memcheck",
        "gpu_graph",
        "--exact graph_and_closures_dropped_while_replays_in_flight_stay_alive",
    ),
    (
        "memcheck",
        "gpu_multi",
        "--exact dropped_flags_and_buffers_of_either_device_stay_alive_while_the_other_waits_needs_2_gpus",
    ),
    // The soundness suite's capture tests: graphs that own the buffers their captured copies and
    // memsets touch, frees kept out of graphs, refusals (no test there waits on later work).
    ("memcheck", "soundness", "captur"),
    // Expiry counters: the GPU's add to mapped host memory must be one memcheck accepts (a
    // system-scope atomic there is invalid on PCIe hosts: docs/gates.md).
    (
        "memcheck",
        "gpu_gates",
        "--exact expired_polling_gate_is_reported",
    ),
    (
        "memcheck",
        "gpu_fused_gates",
        "--exact expired_fused_gate_skips_its_work_and_is_counted",
    ),
    // The polling relay between streams of one GPU: values, aborts, expiries, both strategies
    // downstream (every kernel waits only on work enqueued before it, so memcheck's serialised
    // launches cannot deadlock).
    (
        "memcheck",
        "gpu_multi",
        "--exact relay_forwards_values_aborts_and_expiries",
    ),
    (
        "memcheck",
        "gpu_multi",
        "--exact device_flag_gates_another_stream_of_its_device",
    ),
    // A cudarc program's handles, its slice among them, dropped while a ferrocuda gate is closed;
    // a ferrocuda buffer in a cudarc kernel, dropped likewise.
    (
        "memcheck",
        "interop_cudarc",
        "--exact handles_dropped_while_the_gate_is_closed_keep_the_cudarc_stream_until_the_work_ran",
    ),
    (
        "memcheck",
        "interop_cudarc",
        "--exact ferrocuda_buffer_in_a_cudarc_kernel_is_kept_alive_by_record_use",
    ),
    // A cust program's handles, its buffer's stream-ordered free among them, dropped while a
    // ferrocuda gate is closed; a ferrocuda buffer in a cust kernel, dropped likewise.
    (
        "memcheck",
        "interop_cust",
        "--exact handles_dropped_while_the_gate_is_closed_keep_the_cust_stream_until_the_work_ran",
    ),
    (
        "memcheck",
        "interop_cust",
        "--exact ferrocuda_buffer_in_a_cust_kernel_is_kept_alive_by_record_use",
    ),
    // The gated device loop: every handle dropped while a launch runs, and 10,000 steps whose
    // kernels read the host's values from mapped memory.
    (
        "memcheck",
        "gpu_device_loop",
        "--exact dropping_everything_while_the_loop_runs_is_safe",
    ),
    (
        "memcheck",
        "gpu_device_loop",
        "--exact ten_thousand_steps_in_one_launch_checked_both_ways",
    ),
];

/// Seconds each test binary may run before the bundle calls it failed.
const DEADLINE_S: u32 = 300;

pub fn run(args: &[String]) -> Result<(), String> {
    let mut bundle: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bundle" => bundle = Some(it.next().ok_or("--bundle needs a directory")?.into()),
            other => return Err(format!("test-gpu: unknown argument `{other}`")),
        }
    }
    let gpu_here = gpu_present();
    let dir = match (&bundle, gpu_here) {
        (Some(d), _) => d.clone(),
        (None, _) => util::root().join("target/gpu-bundle"),
    };
    let tests = build_tests()?;
    write_bundle(&dir, &tests)?;
    println!(
        "wrote GPU test bundle {} ({} test binaries)",
        dir.display(),
        tests.len()
    );
    if bundle.is_none() {
        if gpu_here {
            return util::run(&mut Command::new(dir.join("run")));
        }
        println!(
            "no GPU here: copy {} to a GPU machine and run `{}/run` there (it needs no Rust toolchain)",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// An NVIDIA device node and the driver library are both present.
pub fn gpu_present() -> bool {
    Path::new("/dev/nvidiactl").exists()
        && [
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
            "/usr/lib64/libcuda.so.1",
        ]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// Builds the GPU integration tests and the unit tests of [`UNIT_TEST_PACKAGES`]; returns (test
/// name, executable). The interop tests build cust, which links libcuda: against the fake driver
/// ([`fake::cust_link_dir`]), whose soname makes the binaries load the real driver on the GPU
/// machine.
pub fn build_tests() -> Result<Vec<(String, PathBuf)>, String> {
    let tk = setup::run()?;
    build_test_executables(
        fake::with_cust_link(&mut util::cargo(), &tk)?,
        GPU_PACKAGES,
        "gpu-tests",
        UNIT_TEST_PACKAGES,
    )
}

/// `cargo test --release --no-run` (run as `cmd`, a cargo command) for `packages` with `feature`,
/// and for `unit_packages`; the integration-test executables of `packages` and the library
/// unit-test executables of `unit_packages`.
pub fn build_test_executables(
    cmd: &mut Command,
    packages: &[&str],
    feature: &str,
    unit_packages: &[&str],
) -> Result<Vec<(String, PathBuf)>, String> {
    cmd.args([
        "test",
        "--release",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    for p in packages {
        cmd.args(["-p", p, "--features", &format!("{p}/{feature}")]);
    }
    for p in unit_packages {
        cmd.args(["-p", p]);
    }
    // Cargo names a library target after its package, with `_` for `-`.
    let unit_libs: Vec<String> = unit_packages.iter().map(|p| p.replace('-', "_")).collect();
    let out = util::output(cmd)?;
    let mut tests = Vec::new();
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact"
            || !msg["profile"]["test"].as_bool().unwrap_or(false)
        {
            continue;
        }
        let kind = |want: &str| {
            msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == want))
        };
        let name = msg["target"]["name"].as_str();
        let wanted =
            kind("test") || (kind("lib") && name.is_some_and(|n| unit_libs.iter().any(|u| u == n)));
        if let (true, Some(exe), Some(name)) = (wanted, msg["executable"].as_str(), name) {
            tests.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    if tests.is_empty() {
        return Err("no GPU test executables were built".into());
    }
    tests.sort();
    // The bundle names binaries by test target: two packages' `tests/x.rs` would overwrite each other.
    if let Some(w) = tests.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!(
            "two GPU test targets are both named `{}`: rename one",
            w[0].0
        ));
    }
    Ok(tests)
}

/// Writes `dir/bin/*` (stripped copies) and `dir/run`.
pub fn write_bundle(dir: &Path, tests: &[(String, PathBuf)]) -> Result<(), String> {
    let bin = dir.join("bin");
    if bin.exists() {
        std::fs::remove_dir_all(&bin).map_err(util::io(&bin))?;
    }
    std::fs::create_dir_all(&bin).map_err(util::io(&bin))?;
    for (name, exe) in tests {
        let dst = bin.join(name);
        util::copy_stripped(exe, &dst)?;
    }
    let run = dir.join("run");
    std::fs::write(&run, run_script()).map_err(util::io(&run))?;
    util::run(Command::new("chmod").arg("+x").arg(&run))
}

/// The bundle's `run` script.
fn run_script() -> String {
    let mut script = RUN_HEAD.replace("__DEADLINE__", &DEADLINE_S.to_string());
    for (tool, test, args) in SANITIZE {
        let _ = writeln!(script, "sanitize {tool} {test} {args}");
    }
    script.push_str(RUN_TAIL);
    script
}

const RUN_HEAD: &str = r#"#!/usr/bin/env bash
# ferrocuda GPU test bundle, written by `cargo xtask test-gpu`. Needs an NVIDIA GPU and driver,
# no Rust toolchain. Runs every test binary under a deadline, then the compute-sanitizer passes.
set -u
here=$(cd "$(dirname "$0")" && pwd)
export RUST_BACKTRACE=1
# The device machines keep NVLink multicast off: NCCL must not try it.
export NCCL_NVLS_ENABLE=0
# Where libnccl.so.2 is on the library path (the device machines have NCCL), the NCCL tests must
# load it: FERROCUDA_EXPECT_NCCL=1 makes a missing NCCL fail them instead of pass as "not installed".
nccl_on_library_path() {
  local ldc d
  ldc=$(command -v ldconfig || echo /sbin/ldconfig)
  if "$ldc" -p 2>/dev/null | grep -q 'libnccl\.so\.2 '; then return 0; fi
  local IFS=:
  for d in ${LD_LIBRARY_PATH:-}; do
    if [ -n "$d" ] && [ -e "$d/libnccl.so.2" ]; then return 0; fi
  done
  return 1
}
if nccl_on_library_path; then
  export FERROCUDA_EXPECT_NCCL=1
  echo "libnccl.so.2 is on the library path: FERROCUDA_EXPECT_NCCL=1, the NCCL tests must load it"
fi
pass=0; fail=0; skipped=0; failed=()
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
# Tests named *_needs_2_gpus are not run (and are counted as skipped, not passed) on one GPU.
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
# CUDA_VISIBLE_DEVICES=0 on a machine with several GPUs shows the tests one GPU (and lets the skip
# path be checked there).
if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
  vis=$(printf '%s' "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
  if [ "$vis" -lt "$ngpu" ]; then ngpu=$vis; fi
fi
echo "GPUs visible to the tests: $ngpu"
multi=()
if [ "$ngpu" -lt 2 ]; then multi=(--skip _needs_2_gpus); fi
# Processes using a GPU now (a test binary that was killed may linger; the machine's own checks may
# run at start-up).
others() {
  command -v nvidia-smi >/dev/null || return 0
  local apps
  apps=$(nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader 2>/dev/null)
  echo "processes on the GPUs now: ${apps:-none}"
}
others
# One line per run: its exit status and time (124/137: killed by the time limit; 86: the sanitizer
# found errors; 128+N: killed by signal N, e.g. 139 a segfault at exit).
verdict() {
  local label=$1 rc=$2 t0=$3
  if [ "$rc" = 0 ]; then
    echo "--- $label: ok in $((SECONDS-t0)) s"; pass=$((pass+1))
  else
    echo "--- $label: FAILED, exit status $rc after $((SECONDS-t0)) s"; fail=$((fail+1)); failed+=("$label")
    # Another process on the GPU time-slices with the tests and slows every wait: say if one is there.
    others
  fi
}
for t in "$here"/bin/*; do
  name=$(basename "$t")
  echo "=== test $name"
  if [ "$ngpu" -lt 2 ]; then
    n=$("$t" --list 2>/dev/null | grep -c '_needs_2_gpus: test')
    if [ "$n" -gt 0 ]; then
      echo "skipped $n test(s) of $name: they need 2 GPUs, this machine has $ngpu"
      skipped=$((skipped+n))
    fi
  fi
  t0=$SECONDS
  timeout --kill-after=10 __DEADLINE__ "$t" --test-threads=1 --nocapture "${multi[@]}" "$@"
  verdict "$name" $? $t0
done
san=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
sanitize() {
  local tool=$1 test=$2; shift 2
  if [ "$ngpu" -lt 2 ] && [[ "$*" == *_needs_2_gpus* ]]; then
    echo "=== skipped compute-sanitizer --tool $tool $test $*: needs 2 GPUs"; skipped=$((skipped+1)); return
  fi
  echo "=== compute-sanitizer --tool $tool $test $*"
  if [ ! -x "$san" ]; then
    echo "compute-sanitizer not found"; verdict "$tool:$test" 127 $SECONDS; return
  fi
  local t0=$SECONDS
  FERROCUDA_SANITIZER=1 timeout --kill-after=10 120 "$san" --tool "$tool" --error-exitcode 86 "$here/bin/$test" --test-threads=1 --nocapture "$@"
  verdict "$tool:$test" $? $t0
}
"#;

const RUN_TAIL: &str = r#"
[ "$fail" = 0 ] || echo "failed: ${failed[*]}"
echo "gpu bundle: $pass passed, $fail failed, $skipped skipped"
[ "$fail" = 0 ]
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_exe(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Where the stand-in machine has NCCL.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Nccl {
        Absent,
        /// In the loader's cache (`ldconfig -p`), as on the device machines.
        InLdconfig,
        /// In a folder of `LD_LIBRARY_PATH`.
        OnLibraryPath,
    }

    /// The stand-in test binaries: every one the sanitizer list names, the unit tests, and one
    /// more.
    fn bundle_binaries() -> Vec<String> {
        let mut names: Vec<String> = SANITIZE.iter().map(|s| s.1.to_owned()).collect();
        names.extend(UNIT_TEST_PACKAGES.iter().map(|p| p.replace('-', "_")));
        names.push("gpu_smoke".into());
        names.sort_unstable();
        names.dedup();
        names
    }

    /// What one run of the bundle's `run` printed, and what its test binaries saw.
    struct BundleRun {
        /// Its stdout and stderr.
        out: String,
        /// One line per test binary run: `NAME ARGS` (`sanitizer: NAME ARGS` under the sanitizer).
        calls: String,
        /// One line per test binary run: `NAME FERROCUDA_EXPECT_NCCL=VALUE` (`unset` if unset).
        env: String,
    }

    /// The bundle's `run` with stand-ins for the test binaries, `nvidia-smi`, `ldconfig` and
    /// compute-sanitizer. The stand-in of `gpu_multi` lists a one-GPU and a two-GPU test and, like
    /// the real binary, fails if it runs the two-GPU one where the tests see fewer than 2 GPUs.
    fn run_bundle(gpus: usize, visible: Option<&str>, nccl: Nccl) -> BundleRun {
        let dir = std::env::temp_dir().join(format!(
            "ferrocuda-bundle-test-{}-{gpus}-{}-{nccl:?}",
            std::process::id(),
            visible.unwrap_or("all")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let (bin, tools, libs) = (dir.join("bin"), dir.join("tools"), dir.join("lib"));
        for d in [&bin, &tools, &libs] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(dir.join("run"), run_script()).unwrap();
        let seen = visible.map_or(gpus, |v| v.split(',').count().min(gpus));
        let (log, env_log) = (dir.join("calls.log"), dir.join("env.log"));
        for name in bundle_binaries() {
            let (list, two_gpu_check) = if name == "gpu_multi" {
                (
                    "one_gpu_case: test\\nsome_case_needs_2_gpus: test\\n",
                    format!(
                        "if [ {seen} -lt 2 ]; then\n\
                           case \" $* \" in\n\
                             *' --skip _needs_2_gpus '*) ;;\n\
                             *' --exact '*) [[ \"$*\" == *_needs_2_gpus* ]] && exit 101 ;;\n\
                             *) exit 101 ;;\n\
                           esac\n\
                         fi\n"
                    ),
                )
            } else {
                ("a_case: test\\n", String::new())
            };
            write_exe(
                &bin.join(&name),
                &format!(
                    "#!/usr/bin/env bash\n\
                     if [ \"$1\" = --list ]; then printf '{list}'; exit 0; fi\n\
                     echo \"${{UNDER_SANITIZER:-}}{name} $*\" >> '{}'\n\
                     echo \"{name} FERROCUDA_EXPECT_NCCL=${{FERROCUDA_EXPECT_NCCL:-unset}}\" >> '{}'\n\
                     {two_gpu_check}exit 0\n",
                    log.display(),
                    env_log.display(),
                ),
            );
        }
        write_exe(
            &tools.join("nvidia-smi"),
            &format!(
                "#!/usr/bin/env bash\n\
                 if [ \"$1\" = -L ]; then for i in $(seq 0 {}); do echo \"GPU $i: Fake\"; done; fi\n",
                gpus as i64 - 1
            ),
        );
        // `ldconfig -p`: the loader's cache, with NCCL in it or not.
        let nccl_line = if nccl == Nccl::InLdconfig {
            "\tlibnccl.so.2 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnccl.so.2\n"
        } else {
            ""
        };
        write_exe(
            &tools.join("ldconfig"),
            &format!(
                "#!/usr/bin/env bash\n\
                 printf '2 libs found in cache\\n\\tlibm.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libm.so.6\\n{nccl_line}'\n"
            ),
        );
        if nccl == Nccl::OnLibraryPath {
            std::fs::write(libs.join("libnccl.so.2"), b"").unwrap();
        }
        // compute-sanitizer --tool T --error-exitcode 86 BINARY ARGS...
        write_exe(
            &tools.join("compute-sanitizer"),
            "#!/usr/bin/env bash\nshift 4\nUNDER_SANITIZER='sanitizer: ' exec \"$@\"\n",
        );
        let mut cmd = Command::new("bash");
        cmd.arg(dir.join("run"))
            .env(
                "PATH",
                format!("{}:{}", tools.display(), std::env::var("PATH").unwrap()),
            )
            .env("COMPUTE_SANITIZER", tools.join("compute-sanitizer"))
            .env(
                "LD_LIBRARY_PATH",
                format!("/nonexistent:{}", libs.display()),
            )
            .env_remove("FERROCUDA_EXPECT_NCCL")
            .env_remove("CUDA_VISIBLE_DEVICES");
        if let Some(v) = visible {
            cmd.env("CUDA_VISIBLE_DEVICES", v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run failed:\n{text}");
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        let env = std::fs::read_to_string(&env_log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        BundleRun {
            out: text,
            calls,
            env,
        }
    }

    /// On one GPU the two-GPU tests are not run and are counted as skipped (the binary's one and
    /// its sanitizer pass), also when CUDA_VISIBLE_DEVICES hides GPUs; on two they run.
    #[test]
    fn two_gpu_tests_are_skipped_and_counted_on_one_gpu() {
        let bins = bundle_binaries().len();
        let two_gpu_sanitizer_passes = SANITIZE
            .iter()
            .filter(|s| s.2.contains("_needs_2_gpus"))
            .count();
        for (gpus, visible) in [(1, None), (2, Some("0")), (2, Some("1"))] {
            let BundleRun { out, calls, .. } = run_bundle(gpus, visible, Nccl::Absent);
            let passed = bins + SANITIZE.len() - two_gpu_sanitizer_passes;
            let skipped = 1 + two_gpu_sanitizer_passes;
            assert!(
                out.contains(&format!(
                    "gpu bundle: {passed} passed, 0 failed, {skipped} skipped"
                )),
                "{gpus} GPU(s), CUDA_VISIBLE_DEVICES={visible:?}:\n{out}"
            );
            assert!(out.contains("GPUs visible to the tests: 1"), "{out}");
            for line in calls.lines() {
                if line.starts_with("sanitizer: ") {
                    assert!(!line.contains("_needs_2_gpus"), "ran: {line}");
                } else {
                    assert!(
                        line.contains("--skip _needs_2_gpus"),
                        "run without the skip: {line}"
                    );
                }
            }
        }
        for visible in [None, Some("0,1")] {
            let BundleRun { out, calls, .. } = run_bundle(2, visible, Nccl::Absent);
            let passed = bins + SANITIZE.len();
            assert!(
                out.contains(&format!("gpu bundle: {passed} passed, 0 failed, 0 skipped")),
                "{out}"
            );
            assert!(!calls.contains("--skip"), "{calls}");
            assert!(
                calls.contains(
                    "sanitizer: gpu_multi --test-threads=1 --nocapture --exact dropped_flags"
                ),
                "the two-GPU sanitizer pass did not run:\n{calls}"
            );
        }
    }

    /// `run` sets FERROCUDA_EXPECT_NCCL=1 for every test binary where libnccl.so.2 is in the
    /// loader's cache or on LD_LIBRARY_PATH, and leaves it unset elsewhere.
    #[test]
    fn nccl_on_the_library_path_makes_the_nccl_tests_expect_it() {
        let bins = bundle_binaries().len();
        for nccl in [Nccl::InLdconfig, Nccl::OnLibraryPath, Nccl::Absent] {
            let BundleRun { out, env, .. } = run_bundle(2, None, nccl);
            let expect = if nccl == Nccl::Absent { "unset" } else { "1" };
            let lines: Vec<&str> = env.lines().collect();
            // Every binary once, and the sanitizer passes.
            assert_eq!(lines.len(), bins + SANITIZE.len(), "{nccl:?}:\n{env}");
            for line in lines {
                assert!(
                    line.ends_with(&format!(" FERROCUDA_EXPECT_NCCL={expect}")),
                    "{nccl:?}: {line}"
                );
            }
            assert_eq!(
                out.contains("FERROCUDA_EXPECT_NCCL=1"),
                nccl != Nccl::Absent,
                "{nccl:?}:\n{out}"
            );
        }
    }
}
