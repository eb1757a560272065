//! Several GPUs of one host, through ferrocuda: host signal → gated ack on every GPU
//! against one GPU (`multi_fanout`), GPU0 → GPU1 relays (`multi_relay`), and an all-reduce gated by
//! flags against the same all-reduce ungated (`multi_allreduce`, NCCL through ferrocuda-nccl).
//! The C baseline (bench/raw/bench_multi.c) measures the same fan-out and relay rows with the raw
//! driver API, under the same names.
//! Follows the program contract of bench/README.md. On a machine with one GPU it measures what one
//! GPU can: the `_1gpu` fan-out rows, the relays between two streams of GPU 0 (`<chain>_1gpu`:
//! the same chains without the link) and the all-reduce with one rank (`_1gpu`), and prints a
//! `SKIPPED` line for the two-GPU rows.

use ferrocuda_bench::{Args, Gap, Report, collect, die, now_ns, spin_for_ns, wait_geq};
use ferrocuda_driver::{
    CompletionFlag, Device, DeviceEvent, DeviceFlag, DeviceStream, Function, GateStrategy,
    LaunchArgs, LaunchConfig, Module, WaitCondition,
};
use ferrocuda_nccl::{Communicators, ReduceOp};

const BENCHES: [&str; 3] = ["multi_fanout", "multi_relay", "multi_allreduce"];
const GEQ: WaitCondition = WaitCondition::GreaterOrEqual;
const POLL: GateStrategy = GateStrategy::Polling { timeout: None };

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| die(&e.to_string()))
}

struct Gpu {
    stream: DeviceStream,
    ack: Function,
    /// `ferrocuda_fused_gate_ack`: the ack behind ferrocuda/gate.cuh's wait_flag.
    fused_ack: Function,
    _module: Module,
    /// Host-visible ack slot of this GPU.
    acked: CompletionFlag,
}

fn launch_ack(g: &Gpu, flag: &CompletionFlag, v: u64) {
    let a = flag.as_flag_ref();
    // SAFETY: ack(u64* host_slot, u64 value) of bench_kernels.cu on a live mapped flag.
    ok(unsafe {
        g.stream.launch(
            &g.ack,
            LaunchConfig::single_thread(),
            LaunchArgs::new().arg(&a).arg(&v),
        )
    });
}

/// The fused gate as the C baseline launches it: one block of 32 threads waits in its prologue for
/// the 8 bytes at `flag` (a host flag's or a device flag's address) to reach `i`, then acks `i`.
fn launch_fused_ack(g: &Gpu, flag: u64, i: u64) {
    // SAFETY: `fused_ack` is ferrocuda_fused_gate_ack; `flag` is a live flag reachable from this
    // GPU (peer access is enabled for every pair at start), the ack slot is this GPU's mapped
    // flag; no expiry counter (an expiry shows as a missing ack, which the host's 2 s deadline
    // reports).
    ok(unsafe {
        ferrocuda_bench::launch_fused_ack(
            &g.stream,
            &g.fused_ack,
            flag,
            i,
            g.acked.device_ptr(),
            i,
            1_000_000_000,
            0,
        )
    });
}

/// How each GPU of a fan-out waits for the host's flag.
#[derive(Clone, Copy)]
enum Fan {
    /// A stream gate (driver wait or polling kernel), then the ack kernel.
    Stream(GateStrategy),
    /// The ack kernel waits in its own prologue (ferrocuda/gate.cuh).
    Fused,
}

/// Host signal → gated ack on each GPU of `gpus`; sample: the signal → the last GPU's ack seen.
/// Idle regime: the host waits 30–50 µs after enqueueing, so every GPU sits at its gate.
fn fanout(args: &Args, gpus: &[Gpu], how: Fan) -> Vec<f64> {
    let flag = ok(CompletionFlag::new(gpus[0].stream.device()));
    let mut gap = Gap::default();
    for g in gpus {
        g.acked.reset();
    }
    collect(args.warmup, args.samples, |i| {
        for g in gpus {
            match how {
                Fan::Stream(strategy) => {
                    ok(g.stream.wait_value(&flag, i, GEQ, strategy));
                    launch_ack(g, &g.acked, i);
                }
                Fan::Fused => launch_fused_ack(g, flag.device_ptr(), i),
            }
        }
        spin_for_ns(gap.next_ns());
        let t0 = now_ns();
        flag.signal(i);
        let mut last = t0;
        for g in gpus {
            last = last.max(wait_geq(|| g.acked.load(), i, "multi_fanout"));
        }
        (last - t0) as f64
    })
}

#[derive(Clone, Copy)]
enum Chain {
    /// GPU0 driver wait → event → GPU1 `wait_for_event` → ack.
    Event,
    /// GPU0 driver wait → write to a pinned host flag → GPU1 driver wait on it → ack.
    HostWait,
    /// GPU0 driver wait → peer write → GPU1 driver wait → ack.
    PeerWait,
    /// GPU0 driver wait → peer write → GPU1 polling gate → ack.
    PeerPoll,
    /// GPU0 polling gate → peer write → GPU1 polling gate → ack: the all-polling chain.
    PeerPollAll,
    /// GPU0 polling relay (`relay_value`: polls, then writes GPU1's flag) → GPU1 polling gate → ack.
    PollRelay,
    /// GPU0 polling relay → GPU1's ack kernel polling in its prologue (fused gate).
    FusedRelay,
}

/// host → GPU0 gate → relay → GPU1 ack; sample: the signal → GPU1's ack seen (idle regime).
fn relay(args: &Args, g0: &Gpu, g1: &Gpu, how: Chain) -> Vec<f64> {
    let host = ok(CompletionFlag::new(g0.stream.device()));
    let on_gpu1 = ok(DeviceFlag::new(g1.stream.device()));
    let event = ok(DeviceEvent::new(g0.stream.device(), false));
    let mid = ok(CompletionFlag::new(g0.stream.device()));
    let mut gap = Gap::default();
    g1.acked.reset();
    collect(args.warmup, args.samples, |i| {
        let first = if matches!(how, Chain::PeerPollAll) {
            POLL
        } else {
            GateStrategy::DriverWait
        };
        if !matches!(how, Chain::PollRelay | Chain::FusedRelay) {
            ok(g0.stream.wait_value(&host, i, GEQ, first));
        }
        match how {
            Chain::Event => {
                ok(g0.stream.record_event(&event));
                ok(g1.stream.wait_for_event(&event));
                launch_ack(g1, &g1.acked, i);
            }
            Chain::HostWait => {
                ok(g0.stream.write_host_value(&mid, i));
                ok(g1.stream.wait_value(&mid, i, GEQ, GateStrategy::DriverWait));
                launch_ack(g1, &g1.acked, i);
            }
            Chain::PeerWait => {
                ok(g0.stream.write_value(&on_gpu1, i));
                ok(g1
                    .stream
                    .wait_value(&on_gpu1, i, GEQ, GateStrategy::DriverWait));
                launch_ack(g1, &g1.acked, i);
            }
            Chain::PeerPoll | Chain::PeerPollAll => {
                ok(g0.stream.write_value(&on_gpu1, i));
                ok(g1.stream.wait_value(&on_gpu1, i, GEQ, POLL));
                launch_ack(g1, &g1.acked, i);
            }
            Chain::PollRelay => {
                ok(g0.stream.relay_value(&host, i, GEQ, &on_gpu1, i, None));
                ok(g1.stream.wait_value(&on_gpu1, i, GEQ, POLL));
                launch_ack(g1, &g1.acked, i);
            }
            Chain::FusedRelay => {
                ok(g0.stream.relay_value(&host, i, GEQ, &on_gpu1, i, None));
                launch_fused_ack(g1, on_gpu1.device_ptr(), i);
            }
        }
        spin_for_ns(gap.next_ns());
        let t0 = now_ns();
        host.signal(i);
        (wait_geq(|| g1.acked.load(), i, "multi_relay") - t0) as f64
    })
}

/// One all-reduce step on every GPU, each GPU then writing its done flag; sample: the start of
/// the enqueue → every GPU's done flag seen. Gated: the step first waits for a host flag, which
/// the host signals right after enqueueing (what the gate costs on top of the collective).
fn allreduce(
    args: &Args,
    comms: &Communicators,
    gpus: &[Gpu],
    elems: usize,
    gate: Option<GateStrategy>,
) -> Vec<f64> {
    let streams: Vec<DeviceStream> = gpus.iter().map(|g| g.stream.clone()).collect();
    let send: Vec<_> = streams
        .iter()
        .map(|s| ok(s.alloc_zeroed::<f32>(elems)))
        .collect();
    let mut recv: Vec<_> = streams.iter().map(|s| ok(s.alloc::<f32>(elems))).collect();
    let go = ok(CompletionFlag::new(streams[0].device()));
    for g in gpus {
        g.acked.reset();
    }
    ok(comms.all_reduce(&send, &mut recv, ReduceOp::Sum, &streams));
    for s in &streams {
        ok(s.synchronize());
    }
    collect(args.warmup, args.samples, |i| {
        let t0 = now_ns();
        if let Some(strategy) = gate {
            for s in &streams {
                ok(s.wait_value(&go, i, GEQ, strategy));
            }
        }
        ok(comms.all_reduce(&send, &mut recv, ReduceOp::Sum, &streams));
        for g in gpus {
            ok(g.stream.write_host_value(&g.acked, i));
        }
        go.signal(i);
        let mut last = t0;
        for g in gpus {
            last = last.max(wait_geq(|| g.acked.load(), i, "multi_allreduce"));
        }
        (last - t0) as f64
    })
}

fn main() {
    if std::env::var("NCCL_NVLS_ENABLE").is_err() {
        // SAFETY: the first statement of main: no other thread exists yet, and NCCL (which reads
        // it) is not loaded. The device machines keep NVLink multicast off.
        unsafe { std::env::set_var("NCCL_NVLS_ENABLE", "0") };
    }
    let Some(args) = Args::parse_lenient(&BENCHES) else {
        return; // only other programs' benchmarks were asked for
    };
    let count = Device::count().unwrap_or(0);
    if count == 0 {
        println!("multi: SKIPPED: no GPU");
        return;
    }
    if count < 2 {
        println!(
            "multi: SKIPPED: the two-GPU rows need 2 GPUs (this machine has 1); one-GPU rows only"
        );
    }
    let devs: Vec<Device> = (0..count).map(|i| ok(Device::new(i))).collect();
    for a in &devs {
        for b in &devs {
            if a != b {
                ok(a.enable_peer_access(b));
            }
        }
    }
    let image = std::fs::read(&args.cubin).unwrap_or_else(|e| die(&format!("{}: {e}", args.cubin)));
    // One `Gpu` (stream, module, ack slot) per device; on one GPU a second one on GPU 0, the
    // receiving end of the one-GPU relays.
    let ends: Vec<&Device> = if count < 2 {
        vec![&devs[0], &devs[0]]
    } else {
        devs.iter().collect()
    };
    let gpus: Vec<Gpu> = ends
        .iter()
        .map(|d| {
            let m = ok(Module::from_cubin(d, &image));
            Gpu {
                stream: ok(d.new_stream()),
                ack: ok(m.function("ack")),
                fused_ack: ok(m.function("ferrocuda_fused_gate_ack")),
                _module: m,
                acked: ok(CompletionFlag::new(d)),
            }
        })
        .collect();
    // NCCL before any wait: communicator creation allocates and loads code (docs/deadlocks.md).
    let comms = if args.wants("multi_allreduce") {
        match Communicators::init_all(&devs) {
            Ok(c) => Some(c),
            Err(e) => {
                println!("multi_allreduce: SKIPPED: {e}");
                None
            }
        }
    } else {
        None
    };
    let mut r = Report::open(
        "multi",
        &args,
        &format!("{count}x {}", devs[0].name()),
        ok(Device::driver_version()),
    );
    let n = format!("{count}gpu");
    let (one_gpu, every_gpu) = (&gpus[..1], &gpus[..count]);
    if args.wants("multi_fanout") {
        for (name, how) in [
            ("wait", Fan::Stream(GateStrategy::DriverWait)),
            ("poll", Fan::Stream(POLL)),
            ("fused", Fan::Fused),
        ] {
            let mut one = fanout(&args, one_gpu, how);
            r.row("multi_fanout", &format!("{name}_1gpu"), &mut one, "");
            if count > 1 {
                let mut all = fanout(&args, every_gpu, how);
                r.row("multi_fanout", &format!("{name}_{n}"), &mut all, "");
            }
        }
    }
    if args.wants("multi_relay") {
        for (name, how) in [
            ("event", Chain::Event),
            ("host_wait", Chain::HostWait),
            ("peer_wait", Chain::PeerWait),
            ("peer_poll", Chain::PeerPoll),
            ("peer_poll_all", Chain::PeerPollAll),
            ("relay_poll", Chain::PollRelay),
            ("relay_fused", Chain::FusedRelay),
        ] {
            let mut v = relay(&args, &gpus[0], &gpus[1], how);
            let regime = if count < 2 {
                format!("{name}_1gpu")
            } else {
                name.to_string()
            };
            r.row("multi_relay", &regime, &mut v, "");
        }
    }
    if let Some(comms) = &comms {
        for (size, elems) in [("4KiB", 1024usize), ("16MiB", 4 << 20)] {
            for (name, gate) in [
                ("ungated", None),
                ("gated_wait", Some(GateStrategy::DriverWait)),
                ("gated_poll", Some(POLL)),
            ] {
                let mut v = allreduce(&args, comms, every_gpu, elems, gate);
                r.row(
                    "multi_allreduce",
                    &format!("{name}_{size}_{n}"),
                    &mut v,
                    &format!("\"bytes\":{}", elems * 4),
                );
            }
        }
    }
    for g in &gpus {
        ok(g.stream.synchronize());
    }
    // The communicators are destroyed in the background (after every stream passed them): let
    // that finish before the process exits and unloads NCCL. On 2 x H200 the program segfaulted at
    // exit without this (every row had been written); not re-run on the GPU since.
    drop(comms);
    drop(gpus);
    if let Err(e) = ferrocuda_driver::wait_for_releases(std::time::Duration::from_secs(10)) {
        eprintln!("multi: deferred releases still pending at exit: {e}");
    }
}
