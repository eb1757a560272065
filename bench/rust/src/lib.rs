//! Shared plumbing of ferrocuda's benchmark programs: arguments, samples, percentiles, the table
//! and the JSON lines of the contract in `bench/README.md`; the loops ferrocuda's and cudarc's
//! programs share ([`loops`]), written against [`backend::Backend`]; ferrocuda's backend
//! ([`ferrocuda`]).

pub mod backend;
pub mod ferrocuda;
pub mod loops;

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

impl Args {
    /// Parses `std::env::args`, exiting with a message on a bad option. Benchmark names that are not
    /// in `known` (other programs' benchmarks: the bundle passes every program the same list) are
    /// skipped with a note on stderr; `None` when names were given and none is this program's (it
    /// then has nothing to run).
    pub fn parse_lenient(known: &[&str]) -> Option<Args> {
        let a = Self::parse_with(known);
        (a.ignored == 0 || !a.names.is_empty()).then_some(a)
    }

    fn parse_with(known: &[&str]) -> Args {
        let mut a = Args {
            cubin: String::new(),
            json: None,
            commit: "unknown".into(),
            samples: 2000,
            warmup: 200,
            names: vec![],
            ignored: 0,
        };
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        let value = |i: usize| {
            argv.get(i + 1)
                .cloned()
                .unwrap_or_else(|| die(&format!("{} needs a value", argv[i])))
        };
        while i < argv.len() {
            match argv[i].as_str() {
                "--cubin" => a.cubin = value(i),
                "--json" => a.json = Some(value(i)),
                "--commit" => a.commit = value(i),
                "--samples" => {
                    a.samples = value(i)
                        .parse()
                        .unwrap_or_else(|_| die("--samples needs a number"))
                }
                "--warmup" => {
                    a.warmup = value(i)
                        .parse()
                        .unwrap_or_else(|_| die("--warmup needs a number"))
                }
                "all" => {
                    i += 1;
                    continue;
                }
                n if known.contains(&n) => {
                    a.names.push(n.to_owned());
                    i += 1;
                    continue;
                }
                n if !n.starts_with('-') => {
                    eprintln!("{}: `{n}` is not one of its benchmarks: skipped", program());
                    a.ignored += 1;
                    i += 1;
                    continue;
                }
                n => die(&format!("unknown option `{n}`")),
            }
            i += 2;
        }
        if a.cubin.is_empty() {
            die("--cubin is required (the bundle's cubin/bench_kernels.cubin)");
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

/// Rows of one program run: printed as a table and appended as JSON lines.
pub struct Report {
    json: Option<std::fs::File>,
    /// The process state of the rows now being taken.
    pub state: &'static str,
    imp: &'static str,
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
        };
        let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        r.line(format!(
            "{{\"impl\":\"{imp}\",\"bench\":\"_meta\",\"gpu\":\"{gpu}\",\"driver_version\":{driver_version},\"commit\":\"{}\",\"date\":\"{date}\",\"samples\":{},\"warmup\":{}}}",
            args.commit, args.samples, args.warmup
        ));
        println!("{imp} on {gpu} (driver {driver_version})");
        println!(
            "{:<26} {:<16} {:<16} {:>9} {:>9} {:>9}",
            "bench", "regime", "state", "p50 us", "p90 us", "p99 us"
        );
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
        println!(
            "{bench:<26} {regime:<16} {:<16} {p50:>9.3} {p90:>9.3} {p99:>9.3}",
            self.state
        );
        let mut l = format!(
            "{{\"impl\":\"{}\",\"bench\":\"{bench}\",\"regime\":\"{regime}\",\"state\":\"{}\",\"p50_us\":{p50:.4},\"p90_us\":{p90:.4},\"p99_us\":{p99:.4},\"min_us\":{min:.4},\"max_us\":{max:.4},\"n\":{}",
            self.imp,
            self.state,
            samples_ns.len()
        );
        if !extra.is_empty() {
            let _ = write!(l, ",{extra}");
        }
        l.push('}');
        self.line(l);
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
