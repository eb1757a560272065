//! `cargo xtask bench [--bundle DIR] [--json FILE] [BENCH...]`, `cargo xtask bench --smoke` and
//! `cargo xtask bench-report FILE...`.
//!
//! The benchmark bundle is a folder that runs on a GPU machine with no Rust toolchain and no CUDA
//! toolkit (the device machines have python3 and the driver):
//!
//! ```text
//! DIR/run                        runs every program of DIR/programs, then prints the comparison
//! DIR/kernel_sweep               the kernels program's sweep in one device call: both of its
//!                                benchmarks twice, then ncu on the best rows (needs ncu)
//! DIR/kernel_place               the placement-only experiment in one device call: its
//!                                benchmark twice, then ncu on three pairs of rows (needs ncu)
//! DIR/kernel_k5                  64 KiB transpose stages and TMA bulk copies in one device
//!                                call: its benchmark twice, then ncu on four rows (needs ncu)
//! DIR/kernel_grid                grids and stage sizes (bytes in flight) in one device call:
//!                                its benchmark twice, then ncu on up to seven rows (needs ncu)
//! DIR/ncu_summary.py             the kernel scripts' summary of their ncu CSV: one line per launch
//! DIR/programs                   one program per line: IMPL EXECUTABLE [ARGS...] (bundle-relative)
//! DIR/bin/raw_bench              the raw driver API baseline in C (bench/raw/*.c)
//! DIR/bin/event_cost_probe       run by hand, not by DIR/run: event-call cost after each kind
//!                                of work (bench/rust/src/bin/event_cost_probe.rs says how)
//! DIR/bin/wake_probe             run by hand, not by DIR/run: how fast and at what CPU cost a
//!                                host thread learns of a GPU point after a long wait, per
//!                                mechanism (bench/rust/src/bin/wake_probe.rs says how)
//! DIR/cubin/bench_kernels.cubin  its kernels (bench/raw/bench_kernels.cu, sm_90a)
//! DIR/report.py                  the comparison printer (bench/report.py)
//! DIR/COMMIT                     the commit the bundle was built from
//! ```
//!
//! Every program listed in `DIR/programs` follows one contract, so ferrocuda's and cudarc's
//! programs slot in beside the C one: it is called as
//! `EXECUTABLE [ARGS...] --json FILE --commit STR [--samples N] [all | BENCH...]`, runs the named
//! benchmarks (names of other programs' benchmarks are skipped with a note on stderr; with none of
//! its own it exits 0), prints a table and *appends* JSON lines to FILE: one
//! `{"impl":..,"bench":"_meta","gpu":..,"driver_version":..,"commit":..}` line, then one line per
//! row, `{"impl":..,"bench":..,"regime":..,"state":..,"p50_us":..,"p90_us":..,"p99_us":..,"n":..}`
//! (more members allowed, e.g. `rate` and `rate_unit`). bench/README.md has the list of rows.
//! To add a Rust program, add it to [`RUST_PROGRAMS`].

use crate::{fake, setup, util};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Rust benchmark programs built into the bundle: (impl name in the JSON, cargo package, binary
/// target). Each follows the contract in the module docs and runs after `raw`, in this order.
pub const RUST_PROGRAMS: &[(&str, &str, &str)] = &[
    ("ferrocuda", "ferrocuda-bench", "ferrocuda_bench"),
    ("kernels", "ferrocuda-bench", "kernels_bench"),
    ("multi", "ferrocuda-bench", "multi_bench"),
    ("cudarc", "ferrocuda-bench", "cudarc_bench"),
];

/// Probes the bundle carries but `run` does not run: (cargo package, binary target). Each is run by
/// hand on the GPU machine, as its module docs say (bench/README.md names them).
pub const PROBES: &[(&str, &str)] = &[
    ("ferrocuda-bench", "event_cost_probe"),
    ("ferrocuda-bench", "wake_probe"),
];

/// Benchmarks only ferrocuda runs (they measure a mechanism the C baseline and cudarc do not have;
/// their rows compare against baselines taken in the same program). The smoke allows them.
pub const FERROCUDA_ONLY: &[&str] = &["future_wake"];

/// Seconds one program may run before the bundle calls it failed (`BENCH_DEADLINE_S` overrides it
/// on the GPU machine). The C baseline should need well under a minute; three programs must still
/// fit in the device tool's 10 minutes a command, so a hung one is cut off early.
const DEADLINE_S: u32 = 180;

const USAGE: &str = "usage: cargo xtask bench [--bundle DIR] [--json FILE] [all | BENCH...] | cargo xtask bench --smoke";

pub fn run(args: &[String]) -> Result<(), String> {
    let mut bundle: Option<PathBuf> = None;
    let mut json: Option<PathBuf> = None;
    let mut benches: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bundle" => bundle = Some(it.next().ok_or("--bundle needs a directory")?.into()),
            "--json" => json = Some(it.next().ok_or("--json needs a file")?.into()),
            "--smoke" => return smoke(),
            other if other.starts_with('-') => {
                return Err(format!("bench: unknown argument `{other}`\n{USAGE}"));
            }
            name => benches.push(name.to_owned()),
        }
    }
    let dir = bundle
        .clone()
        .unwrap_or_else(|| util::root().join("target/bench-bundle"));
    let toolkit = setup::run()?;
    write_bundle(&dir, &toolkit)?;
    println!("wrote benchmark bundle {}", dir.display());

    if bundle.is_some() {
        if json.is_some() {
            eprintln!(
                "bench: --json applies when the benchmarks run here; the bundle's `run` takes its own --json"
            );
        }
        println!(
            "on a GPU machine: {}/run [--json FILE] [--rounds N] [BENCH...]",
            dir.display()
        );
        return Ok(());
    }
    if !crate::gpu::gpu_present() {
        println!(
            "no GPU here: copy {} to a GPU machine and run `{}/run` there (it needs no Rust toolchain or CUDA toolkit)",
            dir.display(),
            dir.display()
        );
        return Ok(());
    }
    let mut cmd = Command::new(dir.join("run"));
    if let Some(j) = json {
        cmd.arg("--json").arg(j);
    }
    util::run(cmd.args(&benches))
}

/// `cargo xtask bench --smoke` (and a step of `cargo xtask test`): builds the C baseline and its
/// cubin, then runs every benchmark at 20 samples against `xtask/fake/fake_cuda.c`, a fake
/// `libcuda.so.1` that runs streams on host threads (built by [`crate::fake::build`]). Its
/// timings mean nothing; it proves on a machine without a GPU that every benchmark's protocol
/// terminates (each wait is signalled, no deadline fires) and that the JSON has a well-formed row
/// for every benchmark. Then the same for the ferrocuda and cudarc programs against the same fake
/// ([`smoke_rust`]), and `report.py` over every program's file ([`check_report`]).
pub fn smoke() -> Result<(), String> {
    let tk = setup::run()?;
    let root = util::root();
    let dir = root.join("target/bench-smoke");
    std::fs::create_dir_all(&dir).map_err(util::io(&dir))?;
    let cubin = dir.join("bench_kernels.cubin");
    build_cubin(&tk, &root.join("bench/raw/bench_kernels.cu"), &cubin)?;
    let exe = dir.join("raw_bench");
    build_raw(&tk, &exe)?;
    let fake = fake::build(&tk, &dir)?;
    let json = dir.join("smoke.jsonl");
    // Two fake devices, so that the two-GPU rows run too.
    let mut two = smoke_command(&exe, &fake, &cubin, 600);
    two.env("FAKE_CUDA_DEVICES", "2");
    let (table, text) = run_json(two, &json, &["all"])?;
    // One fake device: the two-GPU rows print SKIPPED, the one-GPU rows run, and the program
    // still succeeds.
    let (one, one_rows) = run_json(
        smoke_command(&exe, &fake, &cubin, 60),
        &dir.join("smoke-1gpu.jsonl"),
        &["multi_fanout", "multi_relay"],
    )?;
    if !one.contains(ONE_GPU_SKIP) {
        return Err(format!(
            "raw_bench on one fake GPU did not skip the two-GPU rows:\n{one}"
        ));
    }
    check_one_gpu_rows(&one_rows).map_err(|e| format!("raw_bench on one fake GPU: {e}\n{one}"))?;
    check_three_gpu_fanout(&exe, &fake, &cubin, &dir.join("smoke-3gpu.jsonl"))?;
    let names: Vec<String> = util::output(Command::new(&exe).arg("--list"))?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    check_fake_skips(&table, "raw")?;
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| !NEEDS_CONDITIONAL_NODES.contains(&n.as_str()))
        .collect();
    check_rows(&text, "raw", &names).map_err(|e| format!("{}: {e}\n{table}", json.display()))?;
    eprintln!(
        "bench smoke: {} benchmarks ran against the fake driver, JSON well-formed",
        names.len()
    );
    smoke_rust(&dir, &fake, &cubin, &names)?;
    let files = ["smoke", "smoke-ferrocuda", "smoke-cudarc", "smoke-multi"]
        .map(|f| dir.join(format!("{f}.jsonl")));
    check_report(&files)?;
    eprintln!(
        "bench smoke: report.py compared every row of the C, ferrocuda, cudarc and multi programs"
    );
    Ok(())
}

/// `bench/report.py`, which the bundle's `run` calls after the programs, over the smoke's JSON
/// files: it must read them all and print a line for every (bench, regime, state) row, with the
/// ferrocuda/raw and cudarc/raw columns. The programs' own tables are for people; this file format
/// is the one machines read.
fn check_report(files: &[PathBuf]) -> Result<(), String> {
    let out = util::output(
        Command::new("python3")
            .arg(util::root().join("bench/report.py"))
            .args(files),
    )?;
    for col in ["ferrocuda/raw p50", "cudarc/raw p50", "target"] {
        if !out.contains(col) {
            return Err(format!("report.py printed no `{col}` column:\n{out}"));
        }
    }
    for file in files {
        let text = std::fs::read_to_string(file).map_err(util::io(file))?;
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: {e}", file.display(), i + 1))?;
            let key = ["bench", "regime", "state"].map(|k| v[k].as_str().unwrap_or(""));
            if key[0] == "_meta" {
                continue;
            }
            let row = |l: &&str| l.split_whitespace().collect::<Vec<_>>().starts_with(&key);
            if !out.lines().any(|l| row(&l)) {
                return Err(format!(
                    "report.py printed no row for {key:?} of {}:\n{out}",
                    file.display()
                ));
            }
        }
    }
    Ok(())
}

/// The Rust programs that drive the GPU through ferrocuda or cudarc (not `kernels`, whose real
/// kernels no fake runs), at 20 samples against `xtask/fake/fake_cuda.c`: every benchmark they
/// implement terminates and writes well-formed rows, and both implement the same benchmarks, all
/// of them the C baseline's.
fn smoke_rust(dir: &Path, fake: &Path, cubin: &Path, raw_names: &[String]) -> Result<(), String> {
    smoke_multi(fake, cubin)?;
    let mut sets = Vec::new();
    for (name, package, bin) in RUST_PROGRAMS
        .iter()
        .filter(|p| p.0 != "kernels" && p.0 != "multi")
    {
        util::run(util::cargo().args(["build", "-p", package, "--bin", bin]))?;
        let exe = util::root().join("target/debug").join(bin);
        let json = dir.join(format!("smoke-{name}.jsonl"));
        let cmd = smoke_command(&exe, fake, cubin, 300);
        let (table, text) = run_json(cmd, &json, &["all"])?;
        let benches: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["bench"].as_str().map(str::to_owned))
            .filter(|b| b != "_meta")
            .collect();
        let names: Vec<String> = benches.iter().cloned().collect();
        if *name == "ferrocuda" {
            check_fake_skips(&table, name)?;
        }
        check_rows(&text, name, &names).map_err(|e| format!("{}: {e}\n{table}", json.display()))?;
        let allowed = |n: &str| {
            raw_names.iter().any(|r| r == n)
                || (*name == "ferrocuda" && FERROCUDA_ONLY.contains(&n))
        };
        if let Some(extra) = names.iter().find(|n| !allowed(n)) {
            return Err(format!(
                "{name}: `{extra}` is not a benchmark of the C baseline"
            ));
        }
        eprintln!(
            "bench smoke: {name}: {} benchmarks ran against xtask/fake/fake_cuda.c",
            names.len()
        );
        sets.push((*name, benches));
    }
    // ferrocuda may measure more (its own mechanisms: the GPU-write trampoline, the polling gate);
    // every benchmark cudarc runs, ferrocuda must run too, so each cudarc row has its peer.
    if let [(a, sa), (b, sb)] = &sets[..]
        && !sb.is_subset(sa)
    {
        return Err(format!(
            "{b} runs benchmarks {a} does not: {:?}",
            sb.difference(sa).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// `timeout SECS EXE --cubin CUBIN --samples 20 --warmup 2 --commit smoke` against the fake
/// driver in `fake`; the caller adds `--json` and the benchmark names ([`run_json`]).
fn smoke_command(exe: &Path, fake: &Path, cubin: &Path, secs: u32) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg(secs.to_string())
        .arg(exe)
        .env("LD_LIBRARY_PATH", fake)
        .arg("--cubin")
        .arg(cubin)
        .args(["--samples", "20", "--warmup", "2", "--commit", "smoke"]);
    cmd
}

/// Runs `cmd` with `--json JSON` before `args` (the file emptied first); returns what it printed and
/// the JSON lines it wrote.
fn run_json(mut cmd: Command, json: &Path, args: &[&str]) -> Result<(String, String), String> {
    let _ = std::fs::remove_file(json);
    let out = util::output(cmd.arg("--json").arg(json).args(args))?;
    let text = std::fs::read_to_string(json).map_err(util::io(json))?;
    Ok((out, text))
}

/// What both multi-GPU programs print on a machine with one GPU.
const ONE_GPU_SKIP: &str = "multi: SKIPPED: the two-GPU rows need 2 GPUs";

/// The rows a multi-GPU program writes on one GPU: the three `_1gpu` fan-out rows and the seven
/// relays between two streams of GPU 0 (`<chain>_1gpu`), nothing measured on two GPUs.
fn check_one_gpu_rows(text: &str) -> Result<(), String> {
    let fanout = regimes(text, "multi_fanout")?;
    let relay = regimes(text, "multi_relay")?;
    let want_fanout: Vec<String> = ["fused_1gpu", "poll_1gpu", "wait_1gpu"]
        .map(String::from)
        .to_vec();
    if fanout != want_fanout || relay.len() != 7 || !relay.iter().all(|r| r.ends_with("_1gpu")) {
        return Err(format!(
            "one-GPU rows expected, got fan-out {fanout:?}, relay {relay:?}"
        ));
    }
    Ok(())
}

/// A program's fan-out on three fake GPUs: every gate on GPU 0 alone and on all three
/// (`<gate>_3gpu`), so the C baseline and ferrocuda name N-GPU rows alike on any machine.
fn check_three_gpu_fanout(
    exe: &Path,
    fake: &Path,
    cubin: &Path,
    json: &Path,
) -> Result<(), String> {
    let mut cmd = smoke_command(exe, fake, cubin, 60);
    cmd.env("FAKE_CUDA_DEVICES", "3");
    let (out, text) = run_json(cmd, json, &["multi_fanout"])?;
    let got = regimes(&text, "multi_fanout")?;
    let want = ["fused", "poll", "wait"]
        .iter()
        .flat_map(|g| [format!("{g}_1gpu"), format!("{g}_3gpu")])
        .collect::<Vec<_>>();
    if got != want {
        return Err(format!(
            "{} on three fake GPUs: fan-out rows {got:?}, expected {want:?}\n{out}",
            exe.display()
        ));
    }
    Ok(())
}

/// The sorted regimes of `bench`'s rows in a JSON-lines result file.
fn regimes(text: &str, bench: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if v["bench"] == bench {
            out.push(v["regime"].as_str().unwrap_or("").to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// The multi-GPU program against the fake driver: with one device it must exit 0 with a `SKIPPED`
/// line for the two-GPU rows and only one-GPU rows for `all`, and nothing for another program's
/// benchmark names; with two (`FAKE_CUDA_DEVICES=2`) its fan-out and relay benchmarks must
/// terminate with well-formed rows.
fn smoke_multi(fake: &Path, cubin: &Path) -> Result<(), String> {
    util::run(util::cargo().args(["build", "-p", "ferrocuda-bench", "--bin", "multi_bench"]))?;
    let exe = util::root().join("target/debug/multi_bench");
    let dir = fake.parent().unwrap_or(fake);
    let (out, rows) = run_json(
        smoke_command(&exe, fake, cubin, 60),
        &dir.join("smoke-multi-1gpu.jsonl"),
        &["all"],
    )?;
    if !out.contains(ONE_GPU_SKIP) {
        return Err(format!("multi_bench on one fake GPU did not skip:\n{out}"));
    }
    check_one_gpu_rows(&rows).map_err(|e| format!("multi_bench on one fake GPU: {e}\n{out}"))?;
    check_three_gpu_fanout(&exe, fake, cubin, &dir.join("smoke-multi-3gpu.jsonl"))?;
    let other = util::output(smoke_command(&exe, fake, cubin, 60).arg("signal_wait_ack"))?;
    if other.contains("multi") {
        return Err(format!(
            "multi_bench ran for another program's benchmark:\n{other}"
        ));
    }
    // Two fake devices: fan-out and relays terminate and write well-formed rows (no NCCL here, so
    // `multi_allreduce` skips).
    let json = dir.join("smoke-multi.jsonl");
    let mut two = smoke_command(&exe, fake, cubin, 120);
    two.env("FAKE_CUDA_DEVICES", "2");
    let (table, text) = run_json(two, &json, &["all"])?;
    check_rows(
        &text,
        "multi",
        &["multi_fanout".to_owned(), "multi_relay".to_owned()],
    )
    .map_err(|e| format!("{}: {e}\n{table}", json.display()))?;
    eprintln!(
        "bench smoke: multi: one-GPU rows on one fake GPU; fan-out and relays ran on two fake GPUs"
    );
    Ok(())
}

/// Every line is JSON; one `_meta` line (with date and commit); every row is `imp`'s; every benchmark in `names` has a
/// row with ordered percentiles, a sample count and a state.
/// Benchmarks the fake driver cannot run: it does not emulate conditional graph nodes. The programs
/// get as far as the driver's refusal and say so on stdout (`<bench>: skipped, ...`), which
/// [`check_fake_skips`] requires, so the skip is checked rather than silent; their rows come from
/// the GPU only.
const NEEDS_CONDITIONAL_NODES: &[&str] = &["device_loop"];

/// Fails unless `out` (a program's stdout against the fake) reports each of
/// [`NEEDS_CONDITIONAL_NODES`] as skipped.
fn check_fake_skips(out: &str, program: &str) -> Result<(), String> {
    for b in NEEDS_CONDITIONAL_NODES {
        if !out.contains(&format!("{b}: skipped")) {
            return Err(format!(
                "{program}: `{b}` neither ran nor reported itself skipped against the fake driver:\n{out}"
            ));
        }
    }
    Ok(())
}

fn check_rows(text: &str, imp: &str, names: &[String]) -> Result<(), String> {
    let mut metas = 0;
    let mut seen = std::collections::BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let bench = v["bench"]
            .as_str()
            .ok_or(format!("line {}: no bench", i + 1))?;
        if bench == "_meta" {
            if v["date"].as_str().is_none() || v["commit"].as_str().is_none() {
                return Err(format!(
                    "line {}: _meta without date or commit: {line}",
                    i + 1
                ));
            }
            metas += 1;
            continue;
        }
        let p = |k: &str| v[k].as_f64().ok_or(format!("line {}: no {k}", i + 1));
        let (p50, p90, p99) = (p("p50_us")?, p("p90_us")?, p("p99_us")?);
        if !(p50 <= p90 && p90 <= p99 && v["n"].as_u64().unwrap_or(0) > 0) {
            return Err(format!("line {}: bad percentiles or n: {line}", i + 1));
        }
        if v["impl"] != imp || v["regime"].as_str().is_none() || v["state"].as_str().is_none() {
            return Err(format!(
                "line {}: impl, regime or state missing: {line}",
                i + 1
            ));
        }
        seen.insert(bench.to_owned());
    }
    if metas != 1 {
        return Err(format!("{metas} _meta lines, expected 1"));
    }
    let missing: Vec<_> = names.iter().filter(|n| !seen.contains(*n)).collect();
    if !missing.is_empty() {
        return Err(format!("no rows for {missing:?}"));
    }
    Ok(())
}

/// `cargo xtask bench-report FILE...`: the comparison table of JSON-lines result files.
pub fn report(args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        return Err("usage: cargo xtask bench-report [--markdown] FILE...".into());
    }
    util::run(
        Command::new("python3")
            .arg(util::root().join("bench/report.py"))
            .args(args),
    )
}

/// Builds everything into `dir` (replacing what a previous build put there).
pub fn write_bundle(dir: &Path, tk: &setup::Toolkit) -> Result<(), String> {
    let root = util::root();
    for sub in ["bin", "cubin"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(util::io(&p))?;
        }
        std::fs::create_dir_all(&p).map_err(util::io(&p))?;
    }
    let mut programs = String::from(
        "# IMPL EXECUTABLE [ARGS...], bundle-relative; `run` adds --json FILE --commit STR [--samples N] BENCH...\n",
    );

    let cubin = dir.join("cubin/bench_kernels.cubin");
    build_cubin(tk, &root.join("bench/raw/bench_kernels.cu"), &cubin)?;
    build_raw(tk, &dir.join("bin/raw_bench"))?;
    programs.push_str("raw bin/raw_bench --cubin cubin/bench_kernels.cubin\n");

    for (name, exe) in build_rust_programs()? {
        let dst = dir.join("bin").join(&name);
        util::copy_stripped(&exe, &dst)?;
        let _ = writeln!(
            programs,
            "{name} bin/{name} --cubin cubin/bench_kernels.cubin"
        );
    }
    for (package, bin) in PROBES {
        util::copy_stripped(
            &util::build_release(package, bin)?,
            &dir.join("bin").join(bin),
        )?;
    }

    let write = |name: &str, text: &str| -> Result<(), String> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(util::io(&p))
    };
    write("programs", &programs)?;
    write("COMMIT", &format!("{}\n", util::commit()))?;
    let report_py = root.join("bench/report.py");
    std::fs::copy(&report_py, dir.join("report.py")).map_err(util::io(&report_py))?;
    write("run", &RUN.replace("__DEADLINE__", &DEADLINE_S.to_string()))?;
    write("kernel_sweep", KERNEL_SWEEP)?;
    write("kernel_place", KERNEL_PLACE)?;
    write("kernel_k5", KERNEL_K5)?;
    write("kernel_grid", KERNEL_GRID)?;
    write("ncu_summary.py", NCU_SUMMARY_PY)?;
    util::run(
        Command::new("chmod")
            .arg("+x")
            .arg(dir.join("run"))
            .arg(dir.join("kernel_sweep"))
            .arg(dir.join("kernel_place"))
            .arg(dir.join("kernel_k5"))
            .arg(dir.join("kernel_grid")),
    )
}

/// The bundle's `ncu_summary.py`, which the kernel scripts run on their `ncu --csv` output: one
/// line per profiled launch with its time, DRAM throughput (% of peak), read and write cycles
/// active (% of elapsed DRAM cycles), bytes read and written, and L2 hit rate; where the SMs'
/// active cycles were collected too (`sm__cycles_active.{min,avg,max}`), the least and the mean
/// SM's as a share of the busiest one's (a tail where SMs wait for the last blocks shows there).
const NCU_SUMMARY_PY: &str = r##"import collections, csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:
    sys.exit()
h = rows[0]
m = collections.OrderedDict()
for r in rows[1:]:
    m.setdefault((r[h.index('ID')], r[h.index('Kernel Name')], r[h.index('Grid Size')]), {})[
        r[h.index('Metric Name')]] = r[h.index('Metric Value')].replace(',', '')
for (i, k, g), d in m.items():
    el = float(d['dram__cycles_elapsed.sum'])
    rd = float(d['dram__cycles_active_read.sum']) / el * 100
    wr = float(d['dram__cycles_active_write.sum']) / el * 100
    print(k, g, d['gpu__time_duration.sum'], 'ns', d['dram__throughput.avg.pct_of_peak_sustained_elapsed'],
          f"% rd {rd:.1f} wr {wr:.1f}", d['dram__bytes_read.sum'], d['dram__bytes_write.sum'],
          d['lts__t_sector_hit_rate.pct'],
          *([f"sm {float(d['sm__cycles_active.min']) / float(d['sm__cycles_active.max']) * 100:.1f}"
             f"/{float(d['sm__cycles_active.avg']) / float(d['sm__cycles_active.max']) * 100:.1f}"]
            if 'sm__cycles_active.max' in d else []))
"##;

/// The bundle's `kernel_sweep`: the kernels program's two benchmarks twice, then ncu on the best
/// sweep rows (bench/README.md).
const KERNEL_SWEEP: &str = r##"#!/usr/bin/env bash
# ferrocuda benchmark bundle, written by `cargo xtask bench`: the kernels' sweep in one device
# call (docs/kernels.md, "The third sweep"). The built-in kernels (`kernel_bandwidth`) and every
# row of `kernel_sweep`, two rounds, a summary, then ncu on the best variant row of each (op,
# element type) and on two built-in rows for reference. Writes env.txt, k.jsonl, sweep.log,
# summary.txt, ncu.csv and ncu.err under $OUT (or /tmp/kernel_sweep). Needs ncu at
# /usr/local/cuda/bin. FERROCUDA_KBENCH_FILTER, if set, narrows the timed rows.
#
#   kernel_sweep
set -u
B=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/kernel_sweep}
mkdir -p "$OUT"
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv
  cat "$B/COMMIT"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
export BENCH_DEADLINE_S=${BENCH_DEADLINE_S:-280}
t0=$(date +%s)
timeout 600 "$B/run" --only kernels --rounds 2 --json "$OUT/k.jsonl" kernel_bandwidth kernel_sweep \
  > "$OUT/sweep.log" 2>&1
echo "sweep rc=$? in $(( $(date +%s) - t0 )) s; WRONG rows: $(grep -c WRONG "$OUT/sweep.log")"
grep -E "failed|error" "$OUT/sweep.log" | head -5
# Every row as "name min-max" over the rounds; BEST lines per (op, element, built-in or variant).
python3 - "$OUT/k.jsonl" "$OUT/pick" > "$OUT/summary.txt" <<'PY'
import collections, json, sys
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    if 'vs_memcpy' in d:
        v[d['regime']].append(d['vs_memcpy'])
best = {}
for k, x in v.items():
    print(f"{k} {min(x):.3f}-{max(x):.3f}")
    if k[:2] in ('v_', 'b_'):
        op = 'copy2d' if 'copy2d' in k else 'transpose' if 'transpose' in k else 'row_sum'
        key = (op, 'bf16' if '_bf16_' in k else 'f32', k[:2])
        if key not in best or min(x) > best[key][1]:
            best[key] = (k, min(x))
for key, (k, m) in sorted(best.items()):
    print('BEST', *key, k, f"{m:.3f}")
open(sys.argv[2], 'w').write(','.join(
    k for (op, e, t), (k, m) in best.items() if t == 'v_' and op != 'row_sum'))
PY
grep BEST "$OUT/summary.txt"
pick=$(cat "$OUT/pick")
echo "ncu on: $pick"
FERROCUDA_KBENCH_ONCE=1 \
FERROCUDA_KBENCH_FILTER="$pick,b_copy2d_tmastore_tma_f32_s4_cap264,b_transpose_tmastore_cpasync_bf16_s4_cap264" \
  timeout 200 /usr/local/cuda/bin/ncu --clock-control none -k regex:'kbv_|ferrocuda_' -c 12 --csv \
  --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__cycles_active_read.sum,dram__cycles_active_write.sum,dram__cycles_elapsed.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct \
  "$B/bin/kernels" --cubin "$B/cubin/bench_kernels.cubin" --json /tmp/ncu.jsonl --commit ncu kernel_sweep \
  > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
echo "ncu rc=$?"
# One line per profiled launch: time, DRAM % of peak, read / write cycles active, bytes, L2 hit.
timeout 20 python3 "$B/ncu_summary.py" "$OUT/ncu.csv"
"##;

/// The bundle's `kernel_place`: the kernels program's `kernel_place` twice, a summary that sets
/// each placement-only row beside its real transpose, then ncu on three such pairs (the rows
/// `NCU_ROWS` of bench/rust/src/bin/kernels_bench.rs names). Every step has a time limit, 500 s
/// in all.
const KERNEL_PLACE: &str = r##"#!/usr/bin/env bash
# ferrocuda benchmark bundle, written by `cargo xtask bench`: the placement-only experiment in one
# device call (docs/kernels.md, "Placement-only transposes (the experiment)"). Every row of
# `kernel_place`, two rounds; a summary (each row's range over the rounds, and each placement-only
# row beside the real transpose of the same tile, transfer, depth and grid); then ncu on three
# such pairs. Writes env.txt, k.jsonl, place.log, summary.txt, ncu.csv, ncu.err and ncu.txt under
# $OUT (or /tmp/kernel_place). Needs ncu at /usr/local/cuda/bin. FERROCUDA_KBENCH_FILTER, if set,
# narrows the timed rows. Every step has a time limit, 500 s in all.
#
#   OUT=DIR kernel_place
set -u
B=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/kernel_place}
mkdir -p "$OUT"
{ date -u; timeout 20 nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv
  cat "$B/COMMIT"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
export BENCH_DEADLINE_S=${BENCH_DEADLINE_S:-120}
t0=$(date +%s)
timeout 260 "$B/run" --only kernels --rounds 2 --json "$OUT/k.jsonl" kernel_place \
  > "$OUT/place.log" 2>&1
echo "place rc=$? in $(( $(date +%s) - t0 )) s; WRONG rows: $(grep -c WRONG "$OUT/place.log")"
grep -E "failed|error|refused" "$OUT/place.log" | head -5
# Every row as "name min-max" over the rounds, then PAIR lines: placement-only, real, difference.
timeout 20 python3 - "$OUT/k.jsonl" > "$OUT/summary.txt" <<'PY'
import collections, json, sys
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get('bench') in ('kernel_place', 'kernel_bandwidth') and 'vs_memcpy' in d:
        v[d['regime']].append(d['vs_memcpy'])
for k, x in v.items():
    print(f"{k} {min(x):.3f}-{max(x):.3f}")
for k, x in v.items():
    if 'place_' not in k:
        continue
    real = k.replace('v_transpose_r64x256g4096place_', 'b_transpose_').replace('place_', '_')
    if real in v:
        y = v[real]
        print('PAIR', k, f"{min(x):.3f}-{max(x):.3f}", real, f"{min(y):.3f}-{max(y):.3f}",
              f"diff {min(x) - max(y):+.3f}..{max(x) - min(y):+.3f}")
PY
cat "$OUT/summary.txt"
# Three pairs, one launch each: f32 cp.async 4 stages default grid, f32 cp.async 2 stages one
# block per SM, bf16 128 x 256 B cp.async 3 stages one block per SM (placement-only, real).
pick='v_transpose_r64x256g4096place_ststore_cpasync_f32_s4$,b_transpose_ststore_cpasync_f32_s4$'
pick="$pick"',v_transpose_r64x256g4096place_ststore_cpasync_f32_s2_cap132$,b_transpose_ststore_cpasync_f32_s2_cap132$'
pick="$pick"',v_transpose_r128x256g4096place_ststore_cpasync_bf16_s3_cap132$,v_transpose_r128x256g4096_ststore_cpasync_bf16_s3_cap132$'
echo "ncu on: $pick"
FERROCUDA_KBENCH_ONCE=1 FERROCUDA_KBENCH_FILTER="$pick" \
  timeout 180 /usr/local/cuda/bin/ncu --clock-control none -k regex:'kbv_|ferrocuda_' -c 6 --csv \
  --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__cycles_active_read.sum,dram__cycles_active_write.sum,dram__cycles_elapsed.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct \
  "$B/bin/kernels" --cubin "$B/cubin/bench_kernels.cubin" --json /tmp/ncu.jsonl --commit ncu kernel_place \
  > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
echo "ncu rc=$?"
# One line per profiled launch: time, DRAM % of peak, read / write cycles active, bytes, L2 hit.
timeout 20 python3 "$B/ncu_summary.py" "$OUT/ncu.csv" > "$OUT/ncu.txt"
cat "$OUT/ncu.txt"
"##;

/// The bundle's `kernel_k5`: the kernels program's `kernel_k5` twice, a summary of each row's
/// range over the rounds, then ncu on four rows (the best 128 x 512 B f32 transpose, its
/// placement-only twin, and the two copies `NCU_ROWS` of bench/rust/src/bin/kernels_bench/k5.rs
/// names). Every step has a time limit, 350 s in all.
const KERNEL_K5: &str = r##"#!/usr/bin/env bash
# ferrocuda benchmark bundle, written by `cargo xtask bench`: 64 KiB transpose stages and TMA bulk
# copies in one device call (docs/kernels.md, "64 KiB transpose stages and TMA bulk copies (the
# experiment)"). Every row of `kernel_k5`, two rounds; a summary (each row's range over the
# rounds; BEST: the best 128 x 512 B f32 transpose by its worst round); then ncu on four rows: that
# transpose, its placement-only twin (same transfer and depth), the bulk-copy TMA copy at 4 stages
# and the built-in TMA copy at 3 stages, both on one block per SM. Writes env.txt, k.jsonl, k5.log,
# summary.txt, ncu.csv, ncu.err and ncu.txt under $OUT (or /tmp/kernel_k5). Needs ncu at
# /usr/local/cuda/bin. FERROCUDA_KBENCH_FILTER, if set, narrows the timed rows. Every step has a
# time limit, 350 s in all.
#
#   OUT=DIR kernel_k5
set -u
B=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/kernel_k5}
mkdir -p "$OUT"
{ date -u; timeout 20 nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv
  cat "$B/COMMIT"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
export BENCH_DEADLINE_S=${BENCH_DEADLINE_S:-85}
t0=$(date +%s)
timeout 180 "$B/run" --only kernels --rounds 2 --json "$OUT/k.jsonl" kernel_k5 \
  > "$OUT/k5.log" 2>&1
echo "k5 rc=$? in $(( $(date +%s) - t0 )) s; WRONG rows: $(grep -c WRONG "$OUT/k5.log")"
grep -E "failed|error|refused" "$OUT/k5.log" | head -5
# Every row as "name min-max" over the rounds, then the BEST 128 x 512 B f32 transpose and its
# placement-only twin (written to $OUT/pick for ncu).
timeout 15 python3 - "$OUT/k.jsonl" "$OUT/pick" > "$OUT/summary.txt" <<'PY'
import collections, json, re, sys
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get('bench') in ('kernel_k5', 'kernel_bandwidth') and 'vs_memcpy' in d:
        v[d['regime']].append(d['vs_memcpy'])
for k, x in v.items():
    print(f"{k} {min(x):.3f}-{max(x):.3f}")
real = {k: min(x) for k, x in v.items()
        if re.match(r'v_transpose_r128x512g\d+_ststore_.*_f32_', k)}
pick = []
if real:
    best = max(real, key=real.get)
    twin = re.sub(r'g\d+_ststore_', 'g4096place_ststore_', best)
    print('BEST', best, f"{real[best]:.3f}", 'twin', twin,
          f"{min(v[twin]):.3f}-{max(v[twin]):.3f}" if twin in v else 'not run')
    pick = [best + '$', twin + '$']
open(sys.argv[2], 'w').write(','.join(pick))
PY
cat "$OUT/summary.txt"
pick=$(cat "$OUT/pick" 2>/dev/null)
pick="${pick:+$pick,}"'v_copy2d_r8x2048bulk_ststore_tma_f32_s4_cap132$,b_copy2d_ststore_tma_f32_s3_cap132$'
echo "ncu on: $pick"
FERROCUDA_KBENCH_ONCE=1 FERROCUDA_KBENCH_FILTER="$pick" \
  timeout 120 /usr/local/cuda/bin/ncu --clock-control none -k regex:'kbv_|ferrocuda_' -c 4 --csv \
  --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__cycles_active_read.sum,dram__cycles_active_write.sum,dram__cycles_elapsed.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct \
  "$B/bin/kernels" --cubin "$B/cubin/bench_kernels.cubin" --json /tmp/ncu.jsonl --commit ncu kernel_k5 \
  > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
echo "ncu rc=$?"
# One line per profiled launch: time, DRAM % of peak, read / write cycles active, bytes, L2 hit.
timeout 15 python3 "$B/ncu_summary.py" "$OUT/ncu.csv" > "$OUT/ncu.txt"
cat "$OUT/ncu.txt"
"##;

/// The bundle's `kernel_grid`: the kernels program's `kernel_grid` twice, a summary of each row's
/// range over the rounds with the best rows, then ncu on up to seven rows (the three `NCU_ROWS` of
/// bench/rust/src/bin/kernels_bench/grid.rs names and the best TMA copy and best transpose of each
/// element type), with the SMs' active cycles. Every step has a time limit, 560 s in all.
const KERNEL_GRID: &str = r##"#!/usr/bin/env bash
# ferrocuda benchmark bundle, written by `cargo xtask bench`: grids and stage sizes in one device
# call (docs/kernels.md, "Grids and bytes in flight (the experiment)"). Every row of `kernel_grid`,
# two rounds; a summary (each row's range over the rounds; BEST: the best row by its worst round
# per op, element type and transfer); then ncu on the built-in TMA copy on one block per SM and on
# the default grid, the one-block-per-SM cp.async copy, and the best TMA copy and transpose of
# each element type, with the SMs' least, mean and most active cycles. Writes env.txt, k.jsonl,
# grid.log, summary.txt, ncu.csv, ncu.err and ncu.txt under $OUT (or /tmp/kernel_grid). Needs ncu
# at /usr/local/cuda/bin. FERROCUDA_KBENCH_FILTER, if set, narrows the timed rows. Every step has a
# time limit, 560 s in all.
#
#   OUT=DIR kernel_grid
set -u
B=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/kernel_grid}
mkdir -p "$OUT"
{ date -u; timeout 20 nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv
  cat "$B/COMMIT"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
export BENCH_DEADLINE_S=${BENCH_DEADLINE_S:-150}
t0=$(date +%s)
timeout 320 "$B/run" --only kernels --rounds 2 --json "$OUT/k.jsonl" kernel_grid \
  > "$OUT/grid.log" 2>&1
echo "grid rc=$? in $(( $(date +%s) - t0 )) s; WRONG rows: $(grep -c WRONG "$OUT/grid.log")"
grep -E "failed|error|refused" "$OUT/grid.log" | head -5
# Every row as "name min-max" over the rounds; BEST lines (written to $OUT/pick for ncu: the best
# TMA copy and the best transpose of each element type).
timeout 15 python3 - "$OUT/k.jsonl" "$OUT/pick" > "$OUT/summary.txt" <<'PY'
import collections, json, sys
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get('bench') in ('kernel_grid', 'kernel_bandwidth') and 'vs_memcpy' in d:
        v[d['regime']].append(d['vs_memcpy'])
best = {}
for k, x in v.items():
    print(f"{k} {min(x):.3f}-{max(x):.3f}")
    if k[:2] in ('v_', 'b_'):
        op = 'copy2d' if 'copy2d' in k else 'transpose'
        key = (op, 'bf16' if '_bf16_' in k else 'f32', 'tma' if '_tma_' in k else 'cpasync')
        if key not in best or min(x) > best[key][1]:
            best[key] = (k, min(x))
pick = []
for key, (k, m) in sorted(best.items()):
    print('BEST', *key, k, f"{m:.3f}-{max(v[k]):.3f}")
    if key[0] == 'copy2d' and key[2] == 'tma':
        pick.append(k + '$')
for e in ('f32', 'bf16'):
    tr = [best[k] for k in best if k[0] == 'transpose' and k[1] == e]
    if tr:
        pick.append(max(tr, key=lambda b: b[1])[0] + '$')
open(sys.argv[2], 'w').write(','.join(pick))
PY
cat "$OUT/summary.txt"
pick=$(cat "$OUT/pick" 2>/dev/null)
pick="${pick:+$pick,}"'b_copy2d_ststore_tma_f32_s3_cap132$,b_copy2d_ststore_tma_f32_s4$,b_copy2d_ststore_cpasync_f32_s4_cap132$'
echo "ncu on: $pick"
FERROCUDA_KBENCH_ONCE=1 FERROCUDA_KBENCH_FILTER="$pick" \
  timeout 180 /usr/local/cuda/bin/ncu --clock-control none -k regex:'kbv_|ferrocuda_' -c 7 --csv \
  --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__cycles_active_read.sum,dram__cycles_active_write.sum,dram__cycles_elapsed.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,sm__cycles_active.min,sm__cycles_active.avg,sm__cycles_active.max \
  "$B/bin/kernels" --cubin "$B/cubin/bench_kernels.cubin" --json /tmp/ncu.jsonl --commit ncu kernel_grid \
  > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
echo "ncu rc=$?"
# One line per profiled launch: time, DRAM % of peak, read / write cycles active, bytes, L2 hit,
# least / mean SM active cycles as % of the busiest SM's.
timeout 15 python3 "$B/ncu_summary.py" "$OUT/ncu.csv" > "$OUT/ncu.txt"
cat "$OUT/ncu.txt"
"##;

/// The C baseline: host `cc`, C11, warnings are errors, nothing CUDA linked (libcuda is dlopened).
fn build_raw(tk: &setup::Toolkit, out: &Path) -> Result<(), String> {
    let src = util::root().join("bench/raw");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .map_err(util::io(&src))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    util::run(
        Command::new(cc)
            .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread"])
            .arg(format!("-I{}", tk.include.display()))
            .args(&sources)
            .arg("-o")
            .arg(out)
            .args(["-ldl", "-lm"]),
    )
}

/// The baseline's kernels as an sm_90a cubin; checks with cuobjdump that every `__global__`
/// function of the source was assembled into it.
fn build_cubin(tk: &setup::Toolkit, cu: &Path, out: &Path) -> Result<(), String> {
    util::run(
        Command::new(&tk.nvcc)
            .args([
                "-gencode=arch=compute_90a,code=sm_90a",
                "--cubin",
                "-Xptxas",
                "-Werror",
            ])
            // ferrocuda's own fused-gate kernel in the file includes ferrocuda/gate.cuh.
            .arg("-I")
            .arg(util::root().join("crates/kernels/cuda/include"))
            .arg("-o")
            .arg(out)
            .arg(cu),
    )?;
    let sass = util::output(Command::new(&tk.cuobjdump).arg("-sass").arg(out))?;
    let source = std::fs::read_to_string(cu).map_err(util::io(cu))?;
    let kernels: Vec<&str> = source
        .lines()
        .filter_map(|l| l.split("__global__ void ").nth(1))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    if kernels.is_empty() {
        return Err(format!("{}: no __global__ functions found", cu.display()));
    }
    for k in &kernels {
        if !sass.contains(&format!("Function : {k}\n")) {
            return Err(format!("{}: kernel `{k}` has no SASS", out.display()));
        }
    }
    let odd = odd_descriptor_functions(&sass);
    if !odd.is_empty() {
        return Err(format!(
            "{}: a memory descriptor at an odd uniform register (`desc[UR<odd>]`, an illegal \
             instruction on the H200) in {odd:?}",
            out.display()
        ));
    }
    eprintln!("cubin: {} kernels assembled for sm_90a", kernels.len());
    Ok(())
}

/// The functions of a `cuobjdump -sass` listing with an instruction whose 64-bit memory
/// descriptor (`desc[URn]`) starts at an odd uniform register. ptxas 13.0 emitted such
/// instructions for `cp.async ... .L2::cache_hint` in partly unrolled loops, and the H200 stopped
/// the kernel with an illegal instruction; a pair must start at an even register.
fn odd_descriptor_functions(sass: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut function = "";
    for line in sass.lines() {
        if let Some(name) = line.split("Function : ").nth(1) {
            function = name.trim();
        }
        let odd = line.split("desc[UR").skip(1).any(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().is_ok_and(|n| n % 2 == 1)
        });
        if odd && out.last().is_none_or(|f| f != function) {
            out.push(function.to_owned());
        }
    }
    out
}

/// `cargo build --release` of [`RUST_PROGRAMS`]; (impl name, executable).
fn build_rust_programs() -> Result<Vec<(String, PathBuf)>, String> {
    RUST_PROGRAMS
        .iter()
        .map(|(name, package, bin)| Ok(((*name).to_owned(), util::build_release(package, bin)?)))
        .collect()
}

const RUN: &str = r#"#!/usr/bin/env bash
# ferrocuda benchmark bundle, written by `cargo xtask bench`. Needs an NVIDIA GPU, its driver and
# python3; no Rust toolchain, no CUDA toolkit. Runs every program of ./programs (raw C baseline,
# then the Rust ones), each in its own process, all appending JSON lines to one file, then prints
# the comparison (report.py). With --rounds N the programs run N times interleaved
# (raw, ferrocuda, cudarc, raw, ...) and the report takes the median of each percentile.
#
#   run [--json FILE] [--rounds N] [--samples N] [--only IMPL[,IMPL...]] [all | BENCH...]
set -u
here=$(cd "$(dirname "$0")" && pwd)
# The device machines keep NVLink multicast off: NCCL must not try it.
export NCCL_NVLS_ENABLE=0
json="$here/results.jsonl"; rounds=1; samples=(); only=""; benches=()
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --samples) samples=(--samples "$2"); shift 2 ;;
    --only) only=",$2,"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "run: unknown option $1" >&2; exit 2 ;;
    *) benches+=("$1"); shift ;;
  esac
done
[ ${#benches[@]} -gt 0 ] || benches=(all)
case "$json" in /*) ;; *) json="$PWD/$json" ;; esac
mkdir -p "$(dirname "$json")"
: > "$json"
commit=$(cat "$here/COMMIT" 2>/dev/null || echo unknown)
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.max.sm --format=csv
  # How the GPUs are linked (NVLink, PCIe) decides the two-GPU rows: print it with them.
  if [ "$(nvidia-smi -L | grep -c '^GPU ')" -gt 1 ]; then nvidia-smi topo -m; fi
fi
cd "$here"
fail=0; failed=()
for round in $(seq 1 "$rounds"); do
  while read -r impl exe args; do
    case "$impl" in ''|'#'*) continue ;; esac
    [ -z "$only" ] || [[ "$only" == *",$impl,"* ]] || continue
    echo "=== $impl (round $round of $rounds)"
    # shellcheck disable=SC2086 # args are the program's own words from ./programs
    if ! timeout --kill-after=10 "${BENCH_DEADLINE_S:-__DEADLINE__}" "./$exe" $args --json "$json" --commit "$commit" "${samples[@]}" "${benches[@]}"; then
      fail=$((fail+1)); failed+=("$impl#$round")
    fi
  done < "$here/programs"
done
echo
python3 "$here/report.py" "$json" || fail=$((fail+1))
echo "results: $json"
[ "$fail" = 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
"#;

#[cfg(test)]
mod tests {
    use super::{
        KERNEL_GRID, KERNEL_K5, KERNEL_PLACE, KERNEL_SWEEP, NCU_SUMMARY_PY, RUN,
        odd_descriptor_functions,
    };

    /// The kernel scripts' ncu summary turns one launch's metric rows (ncu's `--csv` layout: one
    /// row per metric) into one line, with the read and write cycles as shares of elapsed ones.
    #[test]
    fn ncu_summary_prints_one_line_per_launch() {
        let dir = std::env::temp_dir().join(format!("ncu-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (py, csv) = (dir.join("ncu_summary.py"), dir.join("ncu.csv"));
        std::fs::write(&py, NCU_SUMMARY_PY).unwrap();
        let head = "\"ID\",\"Process ID\",\"Process Name\",\"Host Name\",\"Kernel Name\",\"Context\",\"Stream\",\"Block Size\",\"Grid Size\",\"Device\",\"CC\",\"Section Name\",\"Metric Name\",\"Metric Unit\",\"Metric Value\"";
        let mut text = format!("{head}\n");
        let sm = [
            ("sm__cycles_active.min", "900"),
            ("sm__cycles_active.avg", "950"),
            ("sm__cycles_active.max", "1,000"),
        ];
        // Launch 0 without the SMs' cycles, launch 1 with them.
        for (id, metric, value) in [
            ("dram__cycles_elapsed.sum", "1,000"),
            ("dram__cycles_active_read.sum", "400"),
            ("dram__cycles_active_write.sum", "350"),
            ("gpu__time_duration.sum", "512,000"),
            ("dram__throughput.avg.pct_of_peak_sustained_elapsed", "86.1"),
            ("dram__bytes_read.sum", "1073741824"),
            ("dram__bytes_write.sum", "1050000000"),
            ("lts__t_sector_hit_rate.pct", "49.8"),
        ]
        .into_iter()
        .flat_map(|m| [(0, m), (1, m)])
        .chain(sm.map(|m| (1, m)))
        .map(|(id, (metric, value))| (id, metric, value))
        {
            text.push_str(&format!(
                "\"{id}\",\"1\",\"kernels\",\"h\",\"k_copy\",\"1\",\"7\",\"(384, 1, 1)\",\"(132, 1, 1)\",\"0\",\"9.0\",\"Command line profiler metrics\",\"{metric}\",\"\",\"{value}\"\n"
            ));
        }
        std::fs::write(&csv, text).unwrap();
        let out = std::process::Command::new("python3")
            .arg(&py)
            .arg(&csv)
            .output()
            .expect("python3 runs");
        let _ = std::fs::remove_dir_all(&dir);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = "k_copy (132, 1, 1) 512000 ns 86.1 % rd 40.0 wr 35.0 1073741824 1050000000 49.8";
        assert_eq!(stdout.trim(), format!("{line}\n{line} sm 90.0/95.0"));
    }

    #[test]
    fn bundle_scripts_parse_and_kernel_place_profiles_the_programs_pairs() {
        for (name, text) in [
            ("run", RUN),
            ("kernel_sweep", KERNEL_SWEEP),
            ("kernel_place", KERNEL_PLACE),
            ("kernel_k5", KERNEL_K5),
            ("kernel_grid", KERNEL_GRID),
        ] {
            let out = std::process::Command::new("bash")
                .args(["-n", "-c", text])
                .output()
                .expect("bash runs");
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The rows kernels_bench says the script profiles, each anchored at its end so that its
        // `_cap132` sibling is not profiled too.
        let bench = include_str!("../../bench/rust/src/bin/kernels_bench.rs");
        let list = bench
            .split("const NCU_ROWS")
            .nth(1)
            .and_then(|rest| rest.split("];").next())
            .expect("kernels_bench.rs has NCU_ROWS");
        let rows: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
        assert_eq!(rows.len(), 6);
        for row in rows {
            assert!(
                KERNEL_PLACE.contains(&format!("{row}$")),
                "{row} is not profiled"
            );
        }
        assert!(KERNEL_PLACE.contains("-c 6 "));
    }

    /// `script` profiles every row of the `NCU_ROWS` list in `source` (a kernels_bench file),
    /// `count` launches in all, and puts every step under a time limit, `limit_s` in all.
    fn profiles_its_rows_and_limits_every_step(
        name: &str,
        script: &str,
        source: &str,
        count: usize,
        limit_s: u32,
    ) {
        let list = source
            .split("const NCU_ROWS")
            .nth(1)
            .and_then(|rest| rest.split("];").next())
            .unwrap_or_else(|| panic!("{name}: the source has no NCU_ROWS"));
        for row in list.split('"').skip(1).step_by(2) {
            assert!(
                script.contains(&format!("{row}$")),
                "{name}: {row} is not profiled"
            );
        }
        assert!(script.contains(&format!("-c {count} ")), "{name}");
        let limits: u32 = script
            .split("timeout ")
            .skip(1)
            .filter_map(|rest| rest.split(' ').next()?.parse::<u32>().ok())
            .sum();
        assert!(limits <= limit_s, "{name}: {limits} s of time limits");
        for step in [
            "nvidia-smi",
            "\"$B/run\"",
            "python3 -",
            "/usr/local/cuda/bin/ncu",
        ] {
            for line in script
                .lines()
                .filter(|l| l.contains(step) && !l.starts_with('#'))
            {
                assert!(line.contains("timeout "), "{name}: no time limit: {line}");
            }
        }
    }

    #[test]
    fn kernel_k5_profiles_the_programs_copies_and_limits_every_step() {
        let k5 = include_str!("../../bench/rust/src/bin/kernels_bench/k5.rs");
        // Two rows from the program, two picked: one launch each; within six minutes.
        profiles_its_rows_and_limits_every_step("kernel_k5", KERNEL_K5, k5, 4, 350);
    }

    #[test]
    fn kernel_grid_profiles_the_programs_copies_and_limits_every_step() {
        let grid = include_str!("../../bench/rust/src/bin/kernels_bench/grid.rs");
        // Three rows from the program, up to four picked; within the device call's ten minutes.
        profiles_its_rows_and_limits_every_step("kernel_grid", KERNEL_GRID, grid, 7, 560);
        assert!(KERNEL_GRID.contains("sm__cycles_active.min,sm__cycles_active.avg"));
    }

    #[test]
    fn descriptors_at_odd_uniform_registers_are_found() {
        let sass = "\tFunction : good\n\
            /*0010*/ LDGSTS.E.BYPASS.128.ZFILL [R39], desc[UR8][R60.64], P5 ;\n\
            /*0020*/ STG.E desc[UR4][R38.64], R16 ;\n\
            \tFunction : bad\n\
            /*0010*/ LDGSTS.E.BYPASS.128.ZFILL [R19+UR0], desc[UR1][R66.64], P5 ;\n\
            /*0020*/ LDGSTS.E.BYPASS.128.ZFILL [R22+UR0], desc[UR11][R68.64], P3 ;\n";
        assert_eq!(odd_descriptor_functions(sass), vec!["bad".to_owned()]);
        assert!(
            odd_descriptor_functions("\tFunction : f\n STG.E desc[UR10][R2.64], R1 ;\n").is_empty()
        );
    }
}
