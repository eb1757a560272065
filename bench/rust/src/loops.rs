//! The benchmark loops that ferrocuda's and cudarc's programs share, generic over
//! [`Backend`], and the running order of every Rust program's benchmarks ([`run`]).
//!
//! Each loop is the C baseline's (`bench/raw/bench_*.c`): the same steps, sample counts, rows and
//! names. A program lists its benchmarks as [`Bench`]es (the shared ones from [`shared`], its own
//! beside them) and [`run`] takes them in the C baseline's order, with the event rows between the
//! phases, whatever order they were listed or named in (bench/README.md, "Process states").

use crate::backend::{Backend, Mark};
use crate::{Args, Gap, Report, collect, die, now_ns, spin_for_ns, wait_geq};
use std::sync::atomic::Ordering;

/// Steps the b2b regime keeps enqueued (as the C baseline).
pub const QUEUE_AHEAD: u64 = 16;

/// One benchmark of a program: its name (the rows' `bench`, and what a user names to run it) and
/// the function that takes its rows.
pub struct Bench<B> {
    name: &'static str,
    run: fn(&B, &Args, &mut Report),
}

impl<B> Bench<B> {
    /// `name`, taken by `run`.
    pub const fn new(name: &'static str, run: fn(&B, &Args, &mut Report)) -> Self {
        Bench { name, run }
    }
}

/// The event rows, taken between the phases.
const EVENTS: [&str; 2] = ["event_record_sync", "event_query"];

/// A run of benchmarks between two passes of the event rows.
struct Phase {
    /// Its benchmarks, in running order.
    benches: &'static [&'static str],
    /// The state of its benchmarks' rows, set before each runs; `None` keeps the current one.
    state: Option<&'static str>,
    /// The state of the event rows taken after it, if any of its benchmarks ran; `None`: no
    /// event rows.
    events: Option<&'static str>,
    /// Whether the state goes back to what it was once those event rows are taken.
    restore: bool,
}

/// The phases after the first event rows, in running order: the C baseline's (`raw/main.c`;
/// bench/README.md, "Process states", has the table). A benchmark's place in its phase is its
/// place here.
const PHASES: [Phase; 4] = [
    // The GPU-write trampoline runs no host function: the rows after its event rows are fresh.
    Phase {
        benches: &["trampoline_gpuwrite"],
        state: None,
        events: Some("after_gpuwrite"),
        restore: true,
    },
    Phase {
        benches: &[
            "launch_sync",
            "elapsed_time_accuracy",
            "write_value_seen",
            "cross_stream_event_wait",
            "signal_wait_ack",
            "signal_wait_write",
            "poll_gate_stream",
            "fused_gate_stream",
            "graph_wait_gate",
            "graph_poll_gate",
            "alloc_free_device",
            "alloc_free_pinned",
        ],
        state: None,
        events: Some("before_hostfunc"),
        restore: false,
    },
    // From the first host function on, every row is `after_hostfunc`.
    Phase {
        benches: &[
            "host_func_latency",
            "host_func_throughput",
            "trampoline_hostfunc",
            "canonical_loop",
            "device_loop",
        ],
        state: Some("after_hostfunc"),
        events: Some("after_hostfunc"),
        restore: false,
    },
    // Last, so that their threads' driver calls cannot change the state of the rows above; their
    // rows are taken in whatever state the process has reached (the row says which).
    Phase {
        benches: &["future_wake"],
        state: None,
        events: None,
        restore: false,
    },
];

/// The names of the event benchmarks and of `benches`, for [`Args::parse_lenient`]. Dies if one of
/// `benches` has no place in the running order.
pub fn names<B>(benches: &[Bench<B>]) -> Vec<&'static str> {
    let mut names = EVENTS.to_vec();
    for b in benches {
        if !PHASES.iter().any(|p| p.benches.contains(&b.name)) {
            die(&format!(
                "`{}` has no place in the running order (PHASES in bench/rust/src/loops.rs)",
                b.name
            ));
        }
        names.push(b.name);
    }
    names
}

/// Runs the event rows and those of `benches` that `a` asks for, in the running order, then
/// resets `backend`.
pub fn run<B: Backend>(backend: &B, a: &Args, r: &mut Report, benches: &[Bench<B>]) {
    events(backend, a, r);
    for phase in &PHASES {
        let mut ran = 0;
        for name in phase.benches.iter().filter(|n| a.wants(n)) {
            let Some(b) = benches.iter().find(|b| b.name == *name) else {
                continue;
            };
            if let Some(state) = phase.state {
                r.state = state;
            }
            (b.run)(backend, a, r);
            ran += 1;
        }
        if let (true, Some(state)) = (ran > 0, phase.events) {
            let before = r.state;
            r.state = state;
            events(backend, a, r);
            if phase.restore {
                r.state = before;
            }
        }
    }
    backend.reset();
}

/// The benchmarks both programs have, each a loop of this module.
pub fn shared<B: Backend>() -> Vec<Bench<B>> {
    vec![
        Bench::new("launch_sync", launch_sync),
        Bench::new("elapsed_time_accuracy", elapsed_time_accuracy),
        Bench::new("write_value_seen", write_value_seen),
        Bench::new("cross_stream_event_wait", cross_stream_event_wait),
        Bench::new("signal_wait_ack", signal_wait_ack),
        Bench::new("signal_wait_write", signal_wait_write),
        Bench::new("alloc_free_device", alloc_free_device),
        Bench::new("alloc_free_pinned", alloc_free_pinned),
        Bench::new("host_func_latency", host_func_latency),
        Bench::new("host_func_throughput", host_func_throughput),
    ]
}

/// `event_record_sync` (record + synchronize on an idle stream) and `event_query` (of a completed
/// event), each if asked for.
pub fn events<B: Backend>(b: &B, a: &Args, r: &mut Report) {
    let s = b.stream();
    if a.wants("event_record_sync") {
        b.reset();
        let ev = b.new_event(false);
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            b.record_event(s, &ev);
            b.synchronize_event(&ev);
            (now_ns() - t0) as f64
        });
        r.row("event_record_sync", "idle_stream", &mut v, "");
    }
    if a.wants("event_query") {
        b.reset();
        let ev = b.new_event(false);
        b.record_event(s, &ev);
        b.synchronize_event(&ev);
        let mut v = collect(a.warmup, a.samples, |_| {
            let t0 = now_ns();
            let ready = b.is_ready(&ev);
            let t1 = now_ns();
            if !ready {
                die("event_query: a completed event is not ready");
            }
            (t1 - t0) as f64
        });
        r.row("event_query", "completed", &mut v, "");
    }
}

/// Empty kernel launch + stream synchronize.
pub fn launch_sync<B: Backend>(b: &B, a: &Args, r: &mut Report) {
    b.reset();
    let s = b.stream();
    let mut v = collect(a.warmup, a.samples, |_| {
        let t0 = now_ns();
        b.launch_empty(s);
        b.synchronize(s);
        (now_ns() - t0) as f64
    });
    r.row("launch_sync", "empty_kernel", &mut v, "");
}

/// Event elapsed time around a kernel spinning 100 µs, then 1 ms (the rows' times are the
/// elapsed times).
pub fn elapsed_time_accuracy<B: Backend>(b: &B, a: &Args, r: &mut Report) {
    b.reset();
    let s = b.stream();
    let (start, end) = (b.new_event(true), b.new_event(true));
    for (regime, ns) in [("100us", 100_000u64), ("1ms", 1_000_000)] {
        let mut v = collect(a.warmup, a.samples, |_| {
            b.record_event(s, &start);
            b.launch_spin(s, ns);
            b.record_event(s, &end);
            b.synchronize_event(&end);
            b.elapsed_time(&start, &end) as f64 * 1e6
        });
        r.row(
            "elapsed_time_accuracy",
            regime,
            &mut v,
            &format!("\"requested_us\":{:.1}", ns as f64 / 1e3),
        );
    }
}

/// Stream write of i enqueued → the host sees i.
pub fn write_value_seen<B: Backend>(b: &B, a: &Args, r: &mut Report) {
    b.reset();
    let s = b.stream();
    let mut v = collect(a.warmup, a.samples, |i| {
        let t0 = now_ns();
        b.write_ack(s, i);
        (b.wait_ack(i, "write_value_seen") - t0) as f64
    });
    r.row("write_value_seen", "idle_stream", &mut v, "");
}

/// Empty kernel and event on one stream, the second waits for the event and acks: first enqueue →
/// ack seen.
pub fn cross_stream_event_wait<B: Backend>(b: &B, a: &Args, r: &mut Report) {
    b.reset();
    let (s, s2) = (b.stream(), b.second_stream());
    let ev = b.new_event(false);
    let mut v = collect(a.warmup, a.samples, |i| {
        let t0 = now_ns();
        b.launch_empty(s);
        b.record_event(s, &ev);
        b.wait_for_event(s2, &ev);
        b.launch_ack(s2, i);
        (b.wait_ack(i, "cross_stream_event_wait") - t0) as f64
    });
    r.row("cross_stream_event_wait", "kernel_event_ack", &mut v, "");
}

/// Gate rows of [stream wait: flag ≥ i] [ack kernel].
pub fn signal_wait_ack<B: Backend>(b: &B, a: &Args, r: &mut Report) {
    let s = b.stream();
    gate_rows(b, a, r, "signal_wait_ack", |i| {
        b.wait_for_flag(s, i);
        b.launch_ack(s, i);
    });
}

/// Gate rows of [stream wait: flag ≥ i] [stream write of i to the ack slot].
pub fn signal_wait_write<B: Backend>(b: &B, a: &Args, r: &mut Report) {
    let s = b.stream();
    gate_rows(b, a, r, "signal_wait_write", |i| {
        b.wait_for_flag(s, i);
        b.write_ack(s, i);
    });
}

/// The C baseline's `run_gate`: `enqueue(i)` enqueues step i, which waits for flag ≥ i and then
/// acks i; rows `idle` and `b2b` ([`gate_regime`]), each from a reset.
pub fn gate_rows<B: Backend>(b: &B, a: &Args, r: &mut Report, bench: &str, enqueue: impl Fn(u64)) {
    for regime in [Regime::Idle, Regime::B2b] {
        b.reset();
        let mut v = gate_regime(b, a, bench, regime, &enqueue);
        r.row(bench, regime.name(), &mut v, "");
    }
}

/// How the gate benchmarks enqueue their steps.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// Step i is enqueued alone; the host waits 30–50 µs (so the GPU sits at the gate), then
    /// signals.
    Idle,
    /// [`QUEUE_AHEAD`] steps are queued ahead: the host signals step i, sees its ack, enqueues
    /// step i + 16 and signals step i + 1 at once.
    B2b,
}

impl Regime {
    /// The rows' regime name.
    pub fn name(self) -> &'static str {
        match self {
            Regime::Idle => "idle",
            Regime::B2b => "b2b",
        }
    }
}

/// One gate regime's samples: the host's signal of flag = i → the host sees ack ≥ i.
pub fn gate_regime<B: Backend>(
    b: &B,
    a: &Args,
    bench: &str,
    regime: Regime,
    enqueue: impl Fn(u64),
) -> Vec<f64> {
    match regime {
        Regime::Idle => {
            let mut gap = Gap::default();
            collect(a.warmup, a.samples, |i| {
                enqueue(i);
                spin_for_ns(gap.next_ns());
                let t0 = now_ns();
                b.signal(i);
                (b.wait_ack(i, bench) - t0) as f64
            })
        }
        Regime::B2b => {
            let total = (a.warmup + a.samples) as u64;
            for i in 1..=QUEUE_AHEAD.min(total) {
                enqueue(i);
            }
            collect(a.warmup, a.samples, |i| {
                let t0 = now_ns();
                b.signal(i);
                let t1 = b.wait_ack(i, bench);
                if i + QUEUE_AHEAD <= total {
                    enqueue(i + QUEUE_AHEAD);
                }
                (t1 - t0) as f64
            })
        }
    }
}

/// 1 MiB of stream-ordered device memory allocated and freed; host time of the pair. The stream
/// is synchronized every 256 pairs, outside the timing.
pub fn alloc_free_device<B: Backend>(b: &B, a: &Args, r: &mut Report) {
    b.reset();
    let s = b.stream();
    let mut n = 0usize;
    let mut v = collect(a.warmup, a.samples, |_| {
        let t0 = now_ns();
        b.alloc_free_device(s, 1 << 20);
        let t1 = now_ns();
        n += 1;
        if n.is_multiple_of(256) {
            b.synchronize(s);
        }
        (t1 - t0) as f64
    });
    r.row("alloc_free_device", "async_1MiB", &mut v, "");
}

/// An 8-byte slot of mapped pinned memory allocated and freed.
pub fn alloc_free_pinned<B: Backend>(b: &B, a: &Args, r: &mut Report) {
    b.reset();
    let mut v = collect(a.warmup, a.samples, |_| {
        let t0 = now_ns();
        b.alloc_free_pinned();
        (now_ns() - t0) as f64
    });
    r.row(
        "alloc_free_pinned",
        "flag_8B",
        &mut v,
        &format!("\"note\":\"{}\"", B::PINNED_NOTE),
    );
}

/// Host function enqueued on an idle stream → the time stamped inside it.
pub fn host_func_latency<B: Backend>(b: &B, a: &Args, r: &mut Report) {
    b.reset();
    let s = b.stream();
    let mark = Mark::leak();
    let mut v = collect(a.warmup, a.samples, |i| {
        let t0 = now_ns();
        b.enqueue_stamp(s, mark);
        wait_geq(
            || mark.count.load(Ordering::Acquire),
            i,
            "host_func_latency",
        );
        (mark.ran_ns.load(Ordering::Relaxed) - t0) as f64
    });
    r.row("host_func_latency", "enqueue_to_run", &mut v, "");
}

/// Batches of 1,000 host functions enqueued back to back: first enqueue → last one ran, ÷ 1,000;
/// 50 batches after 5 warm-up, the rate at the median.
pub fn host_func_throughput<B: Backend>(b: &B, _: &Args, r: &mut Report) {
    b.reset();
    let s = b.stream();
    let mark = Mark::leak();
    let mut v = collect(5, 50, |batch| {
        let t0 = now_ns();
        for _ in 0..1000 {
            b.enqueue_count(s, mark);
        }
        (wait_geq(
            || mark.count.load(Ordering::Acquire),
            batch * 1000,
            "host_func_throughput",
        ) - t0) as f64
            / 1000.0
    });
    let mut sorted = v.clone();
    sorted.sort_by(f64::total_cmp);
    let med = sorted[sorted.len() / 2];
    r.row(
        "host_func_throughput",
        "batch1000",
        &mut v,
        &format!(
            "\"rate\":{:.1},\"rate_unit\":\"callbacks/s\",\"batch\":1000",
            1e9 / med
        ),
    );
}

/// A trampoline regime's row: step i = `kickoff_and_gate(i)` (a kickoff that makes flag = i, and a
/// gate on flag ≥ i), then the ack kernel; sample = the step's first enqueue → ack seen, each
/// step on an idle stream; 5 × `--samples` steps.
pub fn trampoline<B: Backend>(
    b: &B,
    a: &Args,
    r: &mut Report,
    bench: &str,
    regime: &str,
    kickoff_and_gate: impl Fn(u64),
) {
    let s = b.stream();
    let mut v = collect(a.warmup, a.samples * 5, |i| {
        let t0 = now_ns();
        kickoff_and_gate(i);
        b.launch_ack(s, i);
        (b.wait_ack(i, bench) - t0) as f64
    });
    r.row(bench, regime, &mut v, "");
}
