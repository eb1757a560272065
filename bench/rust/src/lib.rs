//! Shared plumbing of ferrocuda's benchmark programs: arguments, samples, percentiles, the table
//! and the JSON lines of the contract in `bench/README.md`; the loops ferrocuda's and cudarc's
//! programs share ([`loops`]), written against [`backend::Backend`]; ferrocuda's backend
//! ([`ferrocuda`]).

pub mod backend;
pub mod ferrocuda;
pub mod loops;
pub mod threads;

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

/// Parsed command line: `PROGRAM --cubin F --json FILE --commit STR [--samples N] [--warmup N] [all | BENCH...]`.
pub struct Args {
    /// The bench kernels' cubin.
    pub cubin: String,
    /// Where JSON lines are appended.
    pub json: Option<String>,
    /// Commit the bundle was built from.
    pub commit: String,
    /// Samples per latency row.
    pub samples: usize,
    /// Warm-up iterations per row.
    pub warmup: usize,
    /// Benchmarks asked for (empty: all).
    pub names: Vec<String>,
    /// Names of other programs' benchmarks that were ignored (lenient parsing).
    ignored: usize,
}

/// The command line as clap parses it (benchmark names are sorted into [`Args`] afterwards).
#[derive(Debug, clap::Parser)]
#[command(about = "A ferrocuda benchmark program (run by the bench bundle's `run` script)")]
struct Cli {
    /// The bench kernels' cubin (the bundle's `cubin/bench_kernels.cubin`).
    #[arg(long)]
    cubin: String,
    /// Where JSON lines are appended.
    #[arg(long)]
    json: Option<String>,
    /// Commit the bundle was built from.
    #[arg(long, default_value = "unknown")]
    commit: String,
    /// Samples per latency row.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// Warm-up iterations per row.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Benchmarks to run (`all`, or none: every one of this program's).
    names: Vec<String>,
}

impl Args {
    /// Parses `std::env::args`, exiting with clap's message on a bad option. Benchmark names that
    /// are not in `known` (other programs' benchmarks: the bundle passes every program the same
    /// list) are skipped with a note on stderr; `None` when names were given and none is this
    /// program's (it then has nothing to run).
    pub fn parse_lenient(known: &[&str]) -> Option<Args> {
        let a = Self::from_cli(<Cli as clap::Parser>::parse(), known);
        (a.ignored == 0 || !a.names.is_empty()).then_some(a)
    }

    fn from_cli(cli: Cli, known: &[&str]) -> Args {
        let mut a = Args {
            cubin: cli.cubin,
            json: cli.json,
            commit: cli.commit,
            samples: cli.samples,
            warmup: cli.warmup,
            names: vec![],
            ignored: 0,
        };
        for n in cli.names {
            if n == "all" {
                continue;
            }
            if known.contains(&n.as_str()) {
                a.names.push(n);
            } else {
                eprintln!("{}: `{n}` is not one of its benchmarks: skipped", program());
                a.ignored += 1;
            }
        }
        a
    }

    /// Whether `name` should run.
    pub fn wants(&self, name: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|n| n == name)
    }
}

/// This program's file name.
fn program() -> String {
    std::env::args()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .map_or_else(|| "bench".into(), |n| n.to_string_lossy().into_owned())
}

pub use ferrocuda_test_support::thread_cpu_ticks;

/// Prints `msg` and exits non-zero.
pub fn die(msg: &str) -> ! {
    eprintln!("ferrocuda_bench: {msg}");
    std::process::exit(1)
}

/// Nanoseconds since an arbitrary fixed point (monotonic).
pub fn now_ns() -> u64 {
    use std::sync::OnceLock;
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Spins until `load() >= v`; returns the time it saw it. Dies after 2 s (nothing may hang).
pub fn wait_geq(load: impl Fn() -> u64, v: u64, what: &str) -> u64 {
    let start = now_ns();
    loop {
        if load() >= v {
            return now_ns();
        }
        std::hint::spin_loop();
        if now_ns() - start > 2_000_000_000 {
            die(&format!("{what}: waited 2 s for {v}"));
        }
    }
}

/// Busy-waits `ns` nanoseconds.
pub fn spin_for_ns(ns: u64) {
    let t = now_ns();
    while now_ns() - t < ns {
        std::hint::spin_loop();
    }
}

/// The C baseline's idle gap: 30–50 µs from the same xorshift sequence.
pub struct Gap(u64);

impl Default for Gap {
    fn default() -> Self {
        Gap(0x9e37_79b9_7f4a_7c15)
    }
}

impl Gap {
    /// The next gap in ns.
    pub fn next_ns(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        30_000 + x % 20_001
    }
}

/// A table for people, in the one style of the benchmark programs: `header`, with the columns
/// from `numbers_from` on right-aligned. Machines read the JSON lines, never these tables.
pub fn table(header: &[&str], numbers_from: usize) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(header.iter());
    for c in t.column_iter_mut().skip(numbers_from) {
        c.set_cell_alignment(comfy_table::CellAlignment::Right);
    }
    t
}

/// Writes `table` and a newline to stdout. A failed write is ignored rather than a panic: [`Report`]
/// calls this from `drop`, where a panic during a panic's unwinding would abort the program.
pub fn print_table(table: &comfy_table::Table) {
    let _ = writeln!(std::io::stdout().lock(), "{table}");
}

/// Rows of one program run: appended as JSON lines as they are taken (what `report.py` and
/// `cargo xtask bench --smoke` read), and printed as a table for people when the report is dropped
/// (at the end of the program, or while a panic unwinds). A program that [`die`]s exits without
/// the table; the rows it took are in the JSON file.
pub struct Report {
    json: Option<std::fs::File>,
    /// The process state of the rows now being taken.
    pub state: &'static str,
    imp: &'static str,
    table: comfy_table::Table,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

impl Report {
    /// Opens the JSON file (append) and writes the `_meta` line.
    pub fn open(imp: &'static str, args: &Args, gpu: &str, driver_version: i32) -> Report {
        let json = args.json.as_ref().map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| die(&format!("{p}: {e}")))
        });
        let mut r = Report {
            json,
            state: "fresh",
            imp,
            table: table(
                &["bench", "regime", "state", "p50 us", "p90 us", "p99 us"],
                3,
            ),
        };
        let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        r.line(format!(
            "{{\"impl\":\"{imp}\",\"bench\":\"_meta\",\"gpu\":\"{gpu}\",\"driver_version\":{driver_version},\"commit\":\"{}\",\"date\":\"{date}\",\"samples\":{},\"warmup\":{}}}",
            args.commit, args.samples, args.warmup
        ));
        println!("{imp} on {gpu} (driver {driver_version})");
        r
    }

    fn line(&mut self, l: String) {
        if let Some(f) = &mut self.json {
            let _ = writeln!(f, "{l}");
        }
    }

    /// Reports one row from samples in nanoseconds; `extra` is more JSON members (`"k":v,...`).
    pub fn row(&mut self, bench: &str, regime: &str, samples_ns: &mut [f64], extra: &str) {
        samples_ns.sort_by(f64::total_cmp);
        let us = |p| pct(samples_ns, p) / 1e3;
        let (p50, p90, p99) = (us(50.0), us(90.0), us(99.0));
        let (min, max) = (
            samples_ns.first().copied().unwrap_or(f64::NAN) / 1e3,
            samples_ns.last().copied().unwrap_or(f64::NAN) / 1e3,
        );
        self.table.add_row([
            bench.to_owned(),
            regime.to_owned(),
            self.state.to_owned(),
            format!("{p50:.3}"),
            format!("{p90:.3}"),
            format!("{p99:.3}"),
        ]);
        let mut l = format!(
            "{{\"impl\":\"{}\",\"bench\":\"{bench}\",\"regime\":\"{regime}\",\"state\":\"{}\",\"p50_us\":{p50:.4},\"p90_us\":{p90:.4},\"p99_us\":{p99:.4},\"min_us\":{min:.4},\"max_us\":{max:.4},\"n\":{},\"cpu\":{}",
            self.imp,
            self.state,
            samples_ns.len(),
            threads::current_cpu()
        );
        if !extra.is_empty() {
            let _ = write!(l, ",{extra}");
        }
        l.push('}');
        self.line(l);
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        print_table(&self.table);
    }
}

/// Times `total` iterations of `f(i)` (1-based), keeping those after `warmup`; `f` returns the
/// sample in ns.
pub fn collect(warmup: usize, samples: usize, mut f: impl FnMut(u64) -> f64) -> Vec<f64> {
    let mut v = Vec::with_capacity(samples);
    for i in 1..=(warmup + samples) as u64 {
        let s = f(i);
        if i > warmup as u64 {
            v.push(s);
        }
    }
    v
}

/// A duration in ns as f64.
pub fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Threads of the fused-gate ack kernel (the C baseline's `FUSED_THREADS`): thread 0 polls, the
/// warp waits at the block barrier, as a real gated kernel's block would.
pub const FUSED_THREADS: u32 = 32;

/// Enqueues `ferrocuda_fused_gate_ack(const u64* flag, u64 target, u64* slot, u64 value,
/// u64 timeout_ns, u64* expired)` of the bench cubin on `stream`: one block of
/// [`FUSED_THREADS`] waits in its prologue (ferrocuda/gate.cuh) for the 8 bytes at `flag` to reach
/// `target`, then stores `value` to `slot`. `expired` may be 0 (no counter).
///
/// # Safety
///
/// `fused_ack` is that kernel; `flag`, `slot` and a non-zero `expired` are 8-byte slots `stream`'s
/// device can reach (mapped pinned memory, its own memory, or a peer's with peer access enabled)
/// that stay allocated until the kernel has run.
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_fused_ack(
    stream: &ferrocuda_driver::DeviceStream,
    fused_ack: &ferrocuda_driver::Function,
    flag: u64,
    target: u64,
    slot: u64,
    value: u64,
    timeout_ns: u64,
    expired: u64,
) -> ferrocuda_driver::Result<()> {
    let cfg = ferrocuda_driver::LaunchConfig {
        block: (FUSED_THREADS, 1, 1),
        ..ferrocuda_driver::LaunchConfig::single_thread()
    };
    // SAFETY: the kernel's signature and the slots' lifetimes are the caller's promise.
    unsafe {
        stream.launch(
            fused_ack,
            cfg,
            ferrocuda_driver::LaunchArgs::new()
                .arg(&flag)
                .arg(&target)
                .arg(&slot)
                .arg(&value)
                .arg(&timeout_ns)
                .arg(&expired),
        )
    }
}

#[cfg(test)]
mod args_tests {
    use super::*;
    use clap::Parser as _;

    fn args(argv: &[&str], known: &[&str]) -> std::result::Result<Args, String> {
        let argv = std::iter::once("bench").chain(argv.iter().copied());
        Cli::try_parse_from(argv)
            .map(|c| Args::from_cli(c, known))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn names_of_other_programs_are_skipped_and_all_means_every_one() {
        let a = args(
            &[
                "--cubin",
                "k.cubin",
                "--samples",
                "7",
                "launch_sync",
                "other",
                "all",
            ],
            &["launch_sync", "event_query"],
        )
        .unwrap();
        assert_eq!((a.cubin.as_str(), a.samples, a.warmup), ("k.cubin", 7, 200));
        assert_eq!(a.names, ["launch_sync"]);
        assert_eq!(a.ignored, 1);
        assert!(a.wants("launch_sync") && !a.wants("event_query"));
        let every = args(&["--cubin", "k", "all"], &["launch_sync"]).unwrap();
        assert!(every.names.is_empty() && every.wants("launch_sync"));
    }

    #[test]
    fn bad_options_are_refused() {
        let missing = args(&["launch_sync"], &[]).err().unwrap_or_default();
        assert!(missing.contains("--cubin"), "{missing}");
        assert!(args(&["--cubin", "k", "--samples", "x"], &[]).is_err());
        assert!(args(&["--cubin", "k", "--frobnicate"], &[]).is_err());
    }
}
