//! Effective bandwidth of ferrocuda-kernels' pipeline kernels against `cuMemcpyDtoD` in the same
//! run: bytes read + written over CUDA-event time, median of 20 runs after 3 warm-up,
//! on 1 GiB inputs. Prints a table with the ratios and appends `kernel_bandwidth` JSON lines.
//!
//! Copy and transpose run with both stores (`tmastore`: TMA stores from the stage, the
//! default; `ststore`: ordinary stores from the consumer threads). With
//! `FERROCUDA_KBENCH_ONCE=1` every configuration is launched exactly once, with no warm-up
//! (for a profiler that should see each kernel and store once, e.g. `ncu` without a filter).
//!
//! Benchmark `kernel_sweep` (asked for by name, not part of `all`) times the tile-shape, item-order,
//! grid and L2-promotion variants of `bench/raw/kernel_variants.cuh` (in the bench cubin), each
//! first checked on two small odd-shaped matrices against a CPU reference (a mismatch is printed
//! as `WRONG` and the variant is not timed), then on the same 1 GiB matrices, and a plain
//! grid-stride copy without shared memory. `FERROCUDA_KBENCH_FILTER=a,b` runs only the
//! configurations whose row name contains `a` or `b` (both benchmarks).

use ferrocuda_bench::{Args, Report, die, print_table, table};
use ferrocuda_driver::{
    Device, DeviceBuffer, DeviceEvent, DeviceStream, LaunchArgs, LaunchConfig, Module,
};
use ferrocuda_kernels::{
    Element, Kernels, L2Promotion, MatrixLayout, Op, Pipeline, Stages, Store, Transfer, Variant,
};
use std::num::NonZeroU32;

const RUNS: usize = 20;
const WARMUP: usize = 3;

/// `FERROCUDA_KBENCH_ONCE=1`: one launch per configuration, no warm-up (for a profiler).
fn once() -> bool {
    std::env::var_os("FERROCUDA_KBENCH_ONCE").is_some_and(|v| v == "1")
}

/// Whether a configuration named `name` runs (`FERROCUDA_KBENCH_FILTER`, comma-separated
/// substrings; unset or empty: all).
fn selected(name: &str) -> bool {
    match std::env::var("FERROCUDA_KBENCH_FILTER") {
        Ok(f) if !f.is_empty() => f.split(',').any(|p| name.contains(p)),
        _ => true,
    }
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| die(&e.to_string()))
}

/// Median milliseconds of `f` between two timing events.
fn time_ms(s: &DeviceStream, dev: &Device, mut f: impl FnMut()) -> f64 {
    let (a, b) = (
        ok(DeviceEvent::new(dev, true)),
        ok(DeviceEvent::new(dev, true)),
    );
    let (warmup, runs) = if once() { (0, 1) } else { (WARMUP, RUNS) };
    let mut v = Vec::new();
    for i in 0..warmup + runs {
        ok(s.record_event(&a));
        f();
        ok(s.record_event(&b));
        ok(b.synchronize());
        if i >= warmup {
            v.push(ok(a.elapsed_time(&b)) as f64);
        }
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Host values of the element types.
trait FromF32 {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}
impl FromF32 for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}
impl FromF32 for half::bf16 {
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}

fn rows<T: Element + FromF32>(
    k: &Kernels,
    dev: &Device,
    s: &DeviceStream,
    r: &mut Report,
    bandwidth: &mut comfy_table::Table,
    tname: &str,
    memcpy_gbs: f64,
) {
    // A square matrix of 1 GiB, rows starting on 512-byte boundaries (as cuMemAllocPitch
    // lays them out). bf16's n = 23170 is not a multiple of 256 elements: with a pitch padded
    // only to 16 bytes, every other row would start mid-sector.
    let n = ((1u64 << 30) / size_of::<T>() as u64).isqrt() as u32;
    let layout = MatrixLayout::aligned::<T>(n, n);
    // The same matrix with each row 16 bytes further on: rows start 16 bytes into a sector
    // (pitch = 16 mod 128 bytes), the layout `MatrixLayout::padded` gives bf16.
    let misaligned = MatrixLayout {
        pitch: layout.pitch + (16 / size_of::<T>()) as u32,
        ..layout
    };
    // The same matrix with rows on 128-byte lines only (the layout `MatrixLayout::aligned` gave
    // before it moved to 512 bytes). Differs from `layout` only for bf16 (f32's 64 KiB pitch).
    let pitch128 = MatrixLayout {
        pitch: n.next_multiple_of((128 / size_of::<T>()) as u32),
        ..layout
    };
    let len = misaligned.span().max(layout.span()) as usize;
    // The matrix's bytes (padding is neither read nor written).
    let bytes = f64::from(n) * f64::from(n) * size_of::<T>() as f64;
    // Random-ish non-zero contents (the kernels' correctness is the GPU tests' job).
    let host: Vec<T> = (0..len)
        .map(|i| <T as FromF32>::from_f32(((i * 2_654_435_761) % 1000) as f32 + 1.0))
        .collect();
    let src = ok(s.clone_htod(&host));
    drop(host);
    let mut dst: DeviceBuffer<T> = ok(s.alloc(len));
    let mut sums: DeviceBuffer<f32> = ok(s.alloc(n.next_multiple_of(4) as usize));
    for transfer in Transfer::ALL {
        for stages in Stages::ALL {
            let regime = |op: &str| format!("{op}_{}_{tname}_s{}", transfer.name(), stages.get());
            let mut cases: Vec<(String, f64, f64)> = Vec::new();
            let mut case = |op: String, moved: f64, f: &mut dyn FnMut()| {
                if selected(&regime(&op)) {
                    cases.push((op, moved, time_ms(s, dev, f)));
                }
            };
            for store in Store::ALL {
                let p = Pipeline::new(transfer, stages).with_store(store);
                let tag = |op: &str| format!("{op}_{}", store.name());
                case(tag("copy2d"), 2.0 * bytes, &mut || {
                    ok(k.copy_2d(s, p, &src, layout, &mut dst, layout.pitch))
                });
                case(tag("transpose"), 2.0 * bytes, &mut || {
                    ok(k.transpose(s, p, &src, layout, &mut dst, layout.pitch))
                });
                // Layout A/B (4 stages, full runs only): rows off the sector grid (pitch16), and
                // rows on 128-byte lines but not on 512-byte boundaries (pitch128, bf16 only).
                if stages == Stages::FOUR && !once() {
                    case(tag("copy2d_pitch16"), 2.0 * bytes, &mut || {
                        ok(k.copy_2d(s, p, &src, misaligned, &mut dst, misaligned.pitch))
                    });
                    case(tag("transpose_pitch16"), 2.0 * bytes, &mut || {
                        ok(k.transpose(s, p, &src, misaligned, &mut dst, misaligned.pitch))
                    });
                    if pitch128.pitch != layout.pitch {
                        case(tag("copy2d_pitch128"), 2.0 * bytes, &mut || {
                            ok(k.copy_2d(s, p, &src, pitch128, &mut dst, pitch128.pitch))
                        });
                        case(tag("transpose_pitch128"), 2.0 * bytes, &mut || {
                            ok(k.transpose(s, p, &src, pitch128, &mut dst, pitch128.pitch))
                        });
                    }
                }
            }
            let p = Pipeline::new(transfer, stages);
            case("row_sum".to_owned(), bytes, &mut || {
                ok(k.row_sum(s, p, &src, layout, &mut sums))
            });
            for (op, moved, ms) in cases {
                add_row(
                    r,
                    bandwidth,
                    "kernel_bandwidth",
                    &regime(&op),
                    moved,
                    ms,
                    memcpy_gbs,
                );
            }
        }
    }
}

/// One row of the table and of the JSON lines.
fn add_row(
    r: &mut Report,
    bandwidth: &mut comfy_table::Table,
    bench: &str,
    regime: &str,
    moved: f64,
    ms: f64,
    memcpy_gbs: f64,
) {
    let gbs = moved / (ms * 1e6);
    bandwidth.add_row([
        regime.to_owned(),
        format!("{ms:.3}"),
        format!("{gbs:.1}"),
        format!("{:.3}", gbs / memcpy_gbs),
    ]);
    let mut v = [ms * 1e6];
    r.row(
        bench,
        regime,
        &mut v,
        &format!(
            "\"rate\":{gbs:.1},\"rate_unit\":\"GB/s\",\"vs_memcpy\":{:.4},\"bytes\":{moved}",
            gbs / memcpy_gbs
        ),
    );
}

fn main() {
    let Some(args) = Args::parse_lenient(&["kernel_bandwidth", "kernel_sweep"]) else {
        return; // only other programs' benchmarks were asked for
    };
    let dev = ok(Device::new(0));
    let s = ok(dev.new_stream());
    let k = ok(Kernels::load(&dev));
    let mut r = Report::open(
        "ferrocuda-kernels",
        &args,
        dev.name(),
        ok(Device::driver_version()),
    );
    let len = 1usize << 28; // 1 GiB of f32
    let a: DeviceBuffer<f32> = ok(s.alloc_zeroed(len));
    let mut b: DeviceBuffer<f32> = ok(s.alloc(len));
    let ms = time_ms(&s, &dev, || ok(s.copy_dtod(&a, &mut b)));
    let memcpy_gbs = 2.0 * (len * 4) as f64 / (ms * 1e6);
    let mut bandwidth = table(&["regime", "ms", "GB/s (read + written)", "x memcpy"], 1);
    bandwidth.add_row([
        "memcpy_dtod".to_owned(),
        format!("{ms:.3}"),
        format!("{memcpy_gbs:.1}"),
        "1.000".to_owned(),
    ]);
    r.row(
        "kernel_bandwidth",
        "memcpy_dtod",
        &mut [ms * 1e6],
        &format!("\"rate\":{memcpy_gbs:.1},\"rate_unit\":\"GB/s\",\"vs_memcpy\":1.0"),
    );
    drop((a, b));
    // `all` (no names) is the table of the built-in kernels; the sweep runs only when named.
    if args.wants("kernel_bandwidth") {
        rows::<f32>(&k, &dev, &s, &mut r, &mut bandwidth, "f32", memcpy_gbs);
        rows::<half::bf16>(&k, &dev, &s, &mut r, &mut bandwidth, "bf16", memcpy_gbs);
    }
    if args.names.iter().any(|n| n == "kernel_sweep") {
        let image =
            std::fs::read(&args.cubin).unwrap_or_else(|e| die(&format!("{}: {e}", args.cubin)));
        let module = ok(Module::from_cubin(&dev, &image));
        sweep::<f32>(&k, &dev, &s, &mut r, &mut bandwidth, &module, memcpy_gbs);
        sweep::<half::bf16>(&k, &dev, &s, &mut r, &mut bandwidth, &module, memcpy_gbs);
    }
    ok(s.synchronize());
    print_table(&bandwidth);
}

/// Copy tiles of the sweep: (rows, bytes per row), 16 KiB each.
const COPY_TILES: [(u32, u32); 5] = [(32, 512), (16, 1024), (8, 2048), (4, 4096), (1, 16384)];
/// Row-sum tiles of the sweep.
const ROW_SUM_TILES: [(u32, u32); 4] = [(32, 512), (16, 1024), (8, 2048), (4, 4096)];
/// Transpose tiles of the sweep: (rows, bytes per row, destination run of an item group).
const TRANSPOSE_TILES: [(u32, u32, u32); 7] = [
    (128, 128, 2048),
    (128, 128, 4096),
    (128, 128, 8192),
    (128, 128, 16384),
    (64, 256, 2048),
    (64, 256, 4096),
    (64, 256, 8192),
];

/// One variant kernel of the sweep with how to launch it.
struct Config {
    /// Row name: `v_<op>_<shape>[_<store>]_<transfer>_<elem>_s<stages>[_cap<blocks>][_<promotion>]`.
    name: String,
    variant: std::rc::Rc<Variant>,
    pipeline: Pipeline,
    promotion: Option<L2Promotion>,
}

fn elem_name<T: Element>() -> &'static str {
    if size_of::<T>() == 4 { "f32" } else { "bf16" }
}

/// Every configuration of the sweep for element type `T`.
fn configs<T: Element>(k: &Kernels, module: &Module) -> Vec<Config> {
    let e = elem_name::<T>();
    let mut out = Vec::new();
    let mut shapes: Vec<(Op, String, (u32, u32))> = Vec::new();
    for (r, b) in COPY_TILES {
        shapes.push((Op::Copy2d, format!("r{r}x{b}"), (r, b)));
    }
    for (r, b) in ROW_SUM_TILES {
        shapes.push((Op::RowSum, format!("r{r}x{b}"), (r, b)));
    }
    for (r, b, g) in TRANSPOSE_TILES {
        shapes.push((Op::Transpose, format!("r{r}x{b}g{g}"), (r, b)));
    }
    for (op, shape, tile) in shapes {
        for transfer in Transfer::ALL {
            for stages in Stages::ALL {
                let t = transfer.name();
                let sn = stages.get();
                let kname = format!("kbv_{}_{shape}_{t}_{e}_s{sn}", op.name());
                let v = std::rc::Rc::new(ok(
                    k.variant::<T>(module, &kname, op, transfer, stages, tile)
                ));
                let stores: &[Store] = if op == Op::RowSum {
                    &[Store::Threads]
                } else {
                    &Store::ALL
                };
                for &store in stores {
                    let st = if op == Op::RowSum {
                        String::new()
                    } else {
                        format!("_{}", store.name())
                    };
                    let base = format!("v_{}_{shape}{st}_{t}_{e}_s{sn}", op.name());
                    let p = Pipeline::new(transfer, stages).with_store(store);
                    let mut push = |suffix: String, p: Pipeline, promotion| {
                        out.push(Config {
                            name: format!("{base}{suffix}"),
                            variant: v.clone(),
                            pipeline: p,
                            promotion,
                        });
                    };
                    push(String::new(), p, None);
                    let main_store = store == Store::Tma || op == Op::RowSum;
                    // Fewer blocks per SM (1 and 2 of the 132 SMs' worth), at 4 stages.
                    if sn == 4 && main_store && op == Op::Copy2d && (tile.0 == 32 || tile.0 == 8) {
                        for cap in [132u32, 264] {
                            let c = NonZeroU32::new(cap).unwrap_or(NonZeroU32::MIN);
                            push(format!("_cap{cap}"), p.with_max_blocks(c), None);
                        }
                    }
                    // Other L2 promotions of the TMA loads, at 4 stages.
                    if sn == 4 && main_store && transfer == Transfer::Tma {
                        let others: &[(L2Promotion, &str)] = match op {
                            Op::Transpose if tile.1 == 256 => &[(L2Promotion::B256, "p256")],
                            Op::Transpose => &[],
                            _ => &[(L2Promotion::None, "pnone"), (L2Promotion::B128, "p128")],
                        };
                        for &(promo, tag) in others {
                            push(format!("_{tag}"), p, Some(promo));
                        }
                    }
                }
            }
        }
    }
    out
}

/// A deterministic pseudo-random matrix of small integers (exact in bf16 and in f32 sums).
fn matrix<T: Element + FromF32>(len: usize, seed: u64) -> Vec<T> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            <T as FromF32>::from_f32((x % 31) as f32 - 15.0)
        })
        .collect()
}

/// Runs `c` on two small odd-shaped matrices (one whose destination rows are whole 16-byte
/// pieces, so TMA stores are used, and one whose are not) with poisoned outputs, against a CPU
/// reference. True when every element of both is right.
fn check<T: Element + FromF32 + PartialEq + Copy>(
    k: &Kernels,
    s: &DeviceStream,
    c: &Config,
) -> bool {
    let op = c.variant_op();
    [(517u32, 1032u32), (520, 1029)]
        .into_iter()
        .all(|(rows, cols)| {
            let layout = MatrixLayout::aligned::<T>(rows, cols);
            let host = matrix::<T>(layout.span() as usize, u64::from(rows * cols));
            let src = ok(s.clone_htod(&host));
            let poison = <T as FromF32>::from_f32(-7777.0);
            let at = |r: u32, c: u32| host[(r * layout.pitch + c) as usize];
            match op {
                Op::RowSum => {
                    let mut out = ok(s.clone_htod(&vec![-7777.0f32; rows as usize]));
                    ok(k.launch_variant(
                        s,
                        &c.variant,
                        c.pipeline,
                        c.promotion,
                        &src,
                        layout,
                        &mut out,
                        0,
                    ));
                    let mut got = vec![0f32; rows as usize];
                    ok(s.copy_dtoh(&out, &mut got));
                    (0..rows).all(|r| {
                        let want: f64 = (0..cols)
                            .map(|cc| f64::from(FromF32::to_f32(at(r, cc))))
                            .sum();
                        f64::from(got[r as usize]) == want
                    })
                }
                Op::Copy2d | Op::Transpose => {
                    let out_layout = if op == Op::Copy2d {
                        layout
                    } else {
                        MatrixLayout::aligned::<T>(cols, rows)
                    };
                    let n = out_layout.span() as usize;
                    let mut out = ok(s.clone_htod(&vec![poison; n]));
                    ok(k.launch_variant(
                        s,
                        &c.variant,
                        c.pipeline,
                        c.promotion,
                        &src,
                        layout,
                        &mut out,
                        out_layout.pitch,
                    ));
                    let mut got = vec![poison; n];
                    ok(s.copy_dtoh(&out, &mut got));
                    (0..out_layout.rows).all(|r| {
                        (0..out_layout.cols).all(|cc| {
                            let want = if op == Op::Copy2d {
                                at(r, cc)
                            } else {
                                at(cc, r)
                            };
                            got[(r * out_layout.pitch + cc) as usize] == want
                        })
                    })
                }
            }
        })
}

impl Config {
    fn variant_op(&self) -> Op {
        if self.name.starts_with("v_copy2d") {
            Op::Copy2d
        } else if self.name.starts_with("v_row_sum") {
            Op::RowSum
        } else {
            Op::Transpose
        }
    }
}

/// The sweep for element type `T` (benchmark `kernel_sweep`).
#[allow(clippy::too_many_arguments)]
fn sweep<T: Element + FromF32 + PartialEq + Copy>(
    k: &Kernels,
    dev: &Device,
    s: &DeviceStream,
    r: &mut Report,
    bandwidth: &mut comfy_table::Table,
    module: &Module,
    memcpy_gbs: f64,
) {
    let n = ((1u64 << 30) / size_of::<T>() as u64).isqrt() as u32;
    let layout = MatrixLayout::aligned::<T>(n, n);
    let bytes = f64::from(n) * f64::from(n) * size_of::<T>() as f64;
    let host = matrix::<T>(layout.span() as usize, 0x9e37_79b9);
    let src = ok(s.clone_htod(&host));
    drop(host);
    let mut dst: DeviceBuffer<T> = ok(s.alloc(layout.span() as usize));
    let mut sums: DeviceBuffer<f32> = ok(s.alloc(n.next_multiple_of(4) as usize));
    for c in configs::<T>(k, module) {
        if !selected(&c.name) {
            continue;
        }
        if !once() && !check::<T>(k, s, &c) {
            bandwidth.add_row([c.name.clone(), "WRONG".into(), String::new(), String::new()]);
            eprintln!("{}: WRONG result on the small matrices", c.name);
            continue;
        }
        let (moved, ms) = if c.variant_op() == Op::RowSum {
            let ms = time_ms(s, dev, || {
                ok(k.launch_variant(
                    s,
                    &c.variant,
                    c.pipeline,
                    c.promotion,
                    &src,
                    layout,
                    &mut sums,
                    0,
                ))
            });
            (bytes, ms)
        } else {
            let ms = time_ms(s, dev, || {
                ok(k.launch_variant(
                    s,
                    &c.variant,
                    c.pipeline,
                    c.promotion,
                    &src,
                    layout,
                    &mut dst,
                    layout.pitch,
                ))
            });
            (2.0 * bytes, ms)
        };
        add_row(r, bandwidth, "kernel_sweep", &c.name, moved, ms, memcpy_gbs);
    }
    // The plain grid-stride copy of the same bytes (16-byte vectors), at several grids.
    let f = ok(module.function("kbv_plain_copy"));
    let n16 = (layout.span() * size_of::<T>() as u64 / 16) as u64;
    for blocks_per_sm in [4u32, 8, 16, 32] {
        let name = format!("v_plain_copy_{}_b{blocks_per_sm}", elem_name::<T>());
        if !selected(&name) {
            continue;
        }
        let cfg = LaunchConfig {
            grid: (132 * blocks_per_sm, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
            cluster: None,
        };
        let ms = time_ms(s, dev, || {
            let mut args = LaunchArgs::new();
            args.arg(&src).arg(&dst).arg(&n16);
            // SAFETY: kbv_plain_copy(const uint4* src, uint4* dst, u64 n16) reads and writes n16
            // 16-byte vectors; both buffers hold layout.span() elements, n16 * 16 bytes, and
            // start 16-byte aligned (driver allocations). The stream keeps them alive.
            ok(unsafe { s.launch(&f, cfg, &mut args) });
        });
        add_row(
            r,
            bandwidth,
            "kernel_sweep",
            &name,
            2.0 * bytes,
            ms,
            memcpy_gbs,
        );
    }
    drop((src, dst, sums));
}
