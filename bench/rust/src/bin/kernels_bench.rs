//! Effective bandwidth of ferrocuda-kernels' pipeline kernels against `cuMemcpyDtoD` in the same
//! run: bytes read + written over CUDA-event time, median of 20 runs after 3 warm-up,
//! on 1 GiB inputs. Prints a table with the ratios and appends `kernel_bandwidth` JSON lines.
//!
//! Copy and transpose run with both stores (`tmastore`: TMA stores from the stage, the
//! default; `ststore`: ordinary stores from the consumer threads). With
//! `FERROCUDA_KBENCH_ONCE=1` every configuration is launched exactly once, with no warm-up
//! (for a profiler that should see each kernel and store once, e.g. `ncu` without a filter).
//!
//! Benchmark `kernel_sweep` (asked for by name, not part of `all`) times the built-in kernels on
//! grids of 1 and 2 blocks per SM (`b_*` rows) and the variants of `bench/raw/kernel_variants.cuh`
//! (in the bench cubin: the built-in tiles before the sweep, `v_*` rows), each first checked on two
//! small odd-shaped matrices against a CPU reference (a mismatch is printed as `WRONG` and the
//! configuration is not timed), then on the same 1 GiB matrices, and a plain grid-stride copy
//! without shared memory. `FERROCUDA_KBENCH_FILTER=a,b` runs only the
//! configurations whose row name contains `a` or `b`, or ends with `a` when written `a$` (every
//! benchmark of the program).
//!
//! Benchmark `kernel_place` (by name, like `kernel_sweep`) is the placement-only experiment
//! (docs/kernels.md, "Placement-only transposes (the experiment)"): placement-only transposes
//! (`kbv::TileSwap`: the transpose's loads, item order and destination tiles, each tile's blocks
//! swapped instead of transposed; rows `v_transpose_<shape>place_*`) beside the real transposes
//! of the same tile, transfer, depth, thread stores and grid, and two built-in copies, on square
//! matrices of 1 GiB whose side is a multiple of the tile's (f32 16384, bf16 23168). Each
//! placement-only kernel is first checked against a CPU block swap on a 256 x 384 matrix with a
//! poisoned destination (`WRONG` rows are not timed), the other rows as in the sweep; and the
//! launcher must refuse a placement-only launch with TMA stores or on a shape that is not whole
//! tiles, or the program stops.
//!
//! Benchmark `kernel_k5` (by name) is the experiment with 64 KiB transpose stages and TMA bulk
//! row copies: [`k5`] says what it runs. Benchmark `kernel_grid` (by name) moves the bytes in
//! flight by grid and stage size: [`grid`] says what it runs.

use ferrocuda_bench::{Args, Report, die, print_table, table};
use ferrocuda_driver::{
    Device, DeviceBuffer, DeviceEvent, DeviceStream, LaunchArgs, LaunchConfig, Module,
};
use ferrocuda_kernels::{
    Element, ItemOrder, Kernels, L2Promotion, MatrixLayout, Op, Pipeline, Stages, Store, Transfer,
    Variant,
};
use std::num::NonZeroU32;

// Beside this file, not in src/bin/, where cargo would take it for a program of its own.
#[path = "kernels_bench/grid.rs"]
mod grid;
#[path = "kernels_bench/k5.rs"]
mod k5;

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
        Ok(f) if !f.is_empty() => filter_matches(&f, name),
        _ => true,
    }
}

/// Whether `name` matches one of the comma-separated patterns of `filter`: a pattern matches a
/// name that contains it, or, written with a trailing `$`, a name that ends with the rest (so
/// that `.._s4$` picks a row without picking its `.._s4_cap132` sibling).
fn filter_matches(filter: &str, name: &str) -> bool {
    filter.split(',').any(|p| match p.strip_suffix('$') {
        Some(end) => name.ends_with(end),
        None => name.contains(p),
    })
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
    let Some(args) = Args::parse_lenient(&[
        "kernel_bandwidth",
        "kernel_sweep",
        "kernel_place",
        "kernel_k5",
        "kernel_grid",
    ]) else {
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
    let named = |b: &str| args.names.iter().any(|n| n == b);
    let experiments = ["kernel_sweep", "kernel_place", "kernel_k5", "kernel_grid"];
    if experiments.into_iter().any(named) {
        let image =
            std::fs::read(&args.cubin).unwrap_or_else(|e| die(&format!("{}: {e}", args.cubin)));
        let module = ok(Module::from_cubin(&dev, &image));
        if named("kernel_sweep") {
            sweep::<f32>(&k, &dev, &s, &mut r, &mut bandwidth, &module, memcpy_gbs);
            sweep::<half::bf16>(&k, &dev, &s, &mut r, &mut bandwidth, &module, memcpy_gbs);
        }
        if named("kernel_place") {
            place::<f32>(&k, &dev, &s, &mut r, &mut bandwidth, &module, memcpy_gbs);
            place::<half::bf16>(&k, &dev, &s, &mut r, &mut bandwidth, &module, memcpy_gbs);
        }
        if named("kernel_k5") {
            k5::run::<f32>(&k, &dev, &s, &mut r, &mut bandwidth, &module, memcpy_gbs);
            k5::run::<half::bf16>(&k, &dev, &s, &mut r, &mut bandwidth, &module, memcpy_gbs);
        }
        if named("kernel_grid") {
            grid::run::<f32>(&k, &dev, &s, &mut r, &mut bandwidth, &module, memcpy_gbs);
            grid::run::<half::bf16>(&k, &dev, &s, &mut r, &mut bandwidth, &module, memcpy_gbs);
        }
    }
    ok(s.synchronize());
    print_table(&bandwidth);
}

/// Variant kernels of the sweep: (op, shape name, tile (rows, bytes per row), rows per TMA load
/// box), as instantiated in `bench/raw/kernel_variants.cuh`: the built-in tiles before the sweep
/// and the built-in copy tile loaded in whole-tile boxes.
const VARIANTS: [(Op, &str, (u32, u32), u32); 4] = [
    (Op::Copy2d, "r32x512i32", (32, 512), 32),
    (Op::Copy2d, "r8x2048i8", (8, 2048), 8),
    (Op::RowSum, "r32x512", (32, 512), 32),
    (Op::Transpose, "r128x128g4096", (128, 128), 128),
];

/// The third sweep's variants (`bench/raw/kernel_variants.cuh`): (op, element type (`""` for
/// both), shape name, tile (rows, bytes per row), rows per TMA load box, depths). L2 eviction
/// hints on the built-in tiles (`h<load><store>`), deeper rings, contiguous item spans per block
/// (`c`) and 32 KiB transpose stages (128 x 256 B).
#[allow(clippy::type_complexity)]
const SWEEP3: &[(Op, &str, &str, (u32, u32), u32, &[u32])] = &[
    (Op::Copy2d, "", "r8x2048i1hfn", (8, 2048), 1, &[4]),
    (Op::Copy2d, "", "r8x2048i1hnf", (8, 2048), 1, &[4]),
    (Op::Copy2d, "", "r8x2048i1hff", (8, 2048), 1, &[4]),
    (Op::Copy2d, "", "r8x2048i1hfl", (8, 2048), 1, &[4]),
    (Op::Copy2d, "", "r8x2048i1hnl", (8, 2048), 1, &[4]),
    (Op::Copy2d, "", "r8x2048i1", (8, 2048), 1, &[6, 8]),
    (Op::Copy2d, "", "r8x2048i1c", (8, 2048), 1, &[4]),
    (Op::Transpose, "f32", "r64x256g4096hfn", (64, 256), 64, &[4]),
    (Op::Transpose, "f32", "r64x256g4096hnf", (64, 256), 64, &[4]),
    (Op::Transpose, "f32", "r64x256g4096hff", (64, 256), 64, &[4]),
    (Op::Transpose, "f32", "r64x256g4096hfl", (64, 256), 64, &[4]),
    (
        Op::Transpose,
        "bf16",
        "r128x128g4096hfn",
        (128, 128),
        128,
        &[4],
    ),
    (
        Op::Transpose,
        "bf16",
        "r128x128g4096hnf",
        (128, 128),
        128,
        &[4],
    ),
    (
        Op::Transpose,
        "bf16",
        "r128x128g4096hff",
        (128, 128),
        128,
        &[4],
    ),
    (
        Op::Transpose,
        "bf16",
        "r128x128g4096hfl",
        (128, 128),
        128,
        &[4],
    ),
    (Op::Transpose, "f32", "r64x256g4096", (64, 256), 64, &[6, 8]),
    (
        Op::Transpose,
        "bf16",
        "r128x128g4096",
        (128, 128),
        128,
        &[6, 8],
    ),
    (Op::Transpose, "f32", "r64x256g4096c", (64, 256), 64, &[4]),
    (
        Op::Transpose,
        "bf16",
        "r128x128g4096c",
        (128, 128),
        128,
        &[4],
    ),
    (
        Op::Transpose,
        "",
        "r128x256g4096",
        (128, 256),
        128,
        &[2, 3, 4],
    ),
    (
        Op::Transpose,
        "bf16",
        "r128x256g4096hff",
        (128, 256),
        128,
        &[3],
    ),
];

/// Grid caps of the sweep: 1 and 2 blocks per SM of the H200's 132.
const CAPS: [u32; 2] = [132, 264];

/// Pushes variant `v` as row `base` on `p`'s grid and as `base_cap132` on one block per SM.
fn push_both_grids(
    out: &mut Vec<Config>,
    base: &str,
    op: Op,
    v: &std::rc::Rc<Variant>,
    p: Pipeline,
    promotion: Option<L2Promotion>,
) {
    let one_per_sm = NonZeroU32::new(132).unwrap_or(NonZeroU32::MIN);
    for (suffix, p) in [("", p), ("_cap132", p.with_max_blocks(one_per_sm))] {
        out.push(Config {
            name: format!("{base}{suffix}"),
            op,
            variant: Some(v.clone()),
            pipeline: p,
            promotion,
            placement: false,
        });
    }
}

/// One configuration of the sweep with how to launch it.
struct Config {
    /// Row name: `b_<op>[_<store>]_<transfer>_<elem>_s<stages>[_cap<blocks>]` for the built-in
    /// kernels, `v_<op>_<shape>[_<store>]_<transfer>_<elem>_s<stages>[_cap<blocks>][_<promotion>]`
    /// for the variants.
    name: String,
    op: Op,
    /// `None`: the built-in kernel.
    variant: Option<std::rc::Rc<Variant>>,
    pipeline: Pipeline,
    promotion: Option<L2Promotion>,
    /// A placement-only transpose (`kernel_place`): checked against the block swap
    /// ([`swap_source`]), launched on whole tiles only.
    placement: bool,
}

fn elem_name<T: Element>() -> &'static str {
    if size_of::<T>() == 4 { "f32" } else { "bf16" }
}

/// Every configuration of the sweep for element type `T`.
fn configs<T: Element>(k: &Kernels, module: &Module) -> Vec<Config> {
    let e = elem_name::<T>();
    let mut out = Vec::new();
    let cap = |c: u32| NonZeroU32::new(c).unwrap_or(NonZeroU32::MIN);
    let stores = |op: Op| -> &'static [Store] {
        if op == Op::RowSum {
            &[Store::Threads]
        } else {
            &Store::ALL
        }
    };
    let store_tag = |op: Op, store: Store| {
        if op == Op::RowSum {
            String::new()
        } else {
            format!("_{}", store.name())
        }
    };
    // The built-in kernels on capped grids (every stage count; TMA stores, and thread stores at 4
    // stages).
    for op in Op::ALL {
        for transfer in Transfer::ALL {
            for stages in Stages::ALL {
                for &store in stores(op) {
                    if store == Store::Threads && op != Op::RowSum && stages != Stages::FOUR {
                        continue;
                    }
                    let base = format!(
                        "b_{}{}_{}_{e}_s{}",
                        op.name(),
                        store_tag(op, store),
                        transfer.name(),
                        stages.get()
                    );
                    for c in CAPS {
                        out.push(Config {
                            name: format!("{base}_cap{c}"),
                            op,
                            variant: None,
                            pipeline: Pipeline::new(transfer, stages)
                                .with_item_order(ItemOrder::Fixed)
                                .with_store(store)
                                .with_max_blocks(cap(c)),
                            promotion: None,
                            placement: false,
                        });
                    }
                }
            }
        }
    }
    // The variants at 4 stages: default grid and one block per SM; row sums with 256-byte
    // promotion (the built-in before the sweep).
    for (op, shape, tile, box_rows) in VARIANTS {
        for transfer in Transfer::ALL {
            let stages = Stages::FOUR;
            let t = transfer.name();
            let kname = format!("kbv_{}_{shape}_{t}_{e}_s4", op.name());
            let v = std::rc::Rc::new(ok(k.variant::<T>(
                module,
                &kname,
                op,
                transfer,
                stages.get(),
                tile,
                box_rows,
            )));
            for &store in stores(op) {
                let base = format!("v_{}_{shape}{}_{t}_{e}_s4", op.name(), store_tag(op, store));
                let p = Pipeline::new(transfer, stages).with_store(store);
                let promotion = (op == Op::RowSum).then_some(L2Promotion::B256);
                push_both_grids(&mut out, &base, op, &v, p, promotion);
            }
        }
    }
    // The third sweep: every depth listed, both transfers and stores, default grid and one
    // block per SM. (The pipeline's stages are the variant's own; `Stages::FOUR` stands in.)
    for &(op, only, shape, tile, box_rows, depths) in SWEEP3 {
        if !only.is_empty() && only != e {
            continue;
        }
        for transfer in Transfer::ALL {
            let t = transfer.name();
            for &stages in depths {
                let kname = format!("kbv_{}_{shape}_{t}_{e}_s{stages}", op.name());
                let v = std::rc::Rc::new(ok(
                    k.variant::<T>(module, &kname, op, transfer, stages, tile, box_rows)
                ));
                for &store in stores(op) {
                    let base = format!(
                        "v_{}_{shape}{}_{t}_{e}_s{stages}",
                        op.name(),
                        store_tag(op, store)
                    );
                    let p = Pipeline::new(transfer, Stages::FOUR).with_store(store);
                    push_both_grids(&mut out, &base, op, &v, p, None);
                }
            }
        }
    }
    out
}

impl Config {
    /// Launches the configuration on `src` (`layout`) into `dst` (copy, transpose; pitch
    /// `dst_pitch`) or `sums` (row sums).
    #[allow(clippy::too_many_arguments)]
    fn launch<T: Element>(
        &self,
        k: &Kernels,
        s: &DeviceStream,
        src: &DeviceBuffer<T>,
        layout: MatrixLayout,
        dst: &mut DeviceBuffer<T>,
        dst_pitch: u32,
        sums: &mut DeviceBuffer<f32>,
    ) {
        let p = self.pipeline;
        match (&self.variant, self.op) {
            (Some(v), Op::RowSum) => {
                ok(k.launch_variant(s, v, p, self.promotion, src, layout, sums, 0))
            }
            (Some(v), _) => {
                ok(k.launch_variant(s, v, p, self.promotion, src, layout, dst, dst_pitch))
            }
            (None, Op::Copy2d) => ok(k.copy_2d(s, p, src, layout, dst, dst_pitch)),
            (None, Op::Transpose) => ok(k.transpose(s, p, src, layout, dst, dst_pitch)),
            (None, Op::RowSum) => ok(k.row_sum(s, p, src, layout, sums)),
        }
    }
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
    let op = c.op;
    [(517u32, 1032u32), (520, 1029)]
        .into_iter()
        .all(|(rows, cols)| {
            let layout = MatrixLayout::aligned::<T>(rows, cols);
            let host = matrix::<T>(layout.span() as usize, u64::from(rows * cols));
            let src = ok(s.clone_htod(&host));
            let poison = <T as FromF32>::from_f32(-7777.0);
            let at = |r: u32, c: u32| host[(r * layout.pitch + c) as usize];
            let out_layout = match op {
                Op::Copy2d => layout,
                Op::Transpose => MatrixLayout::aligned::<T>(cols, rows),
                Op::RowSum => MatrixLayout::aligned::<T>(1, 1),
            };
            let n = out_layout.span() as usize;
            let mut out = ok(s.clone_htod(&vec![poison; n]));
            let mut sums = ok(s.clone_htod(&vec![-7777.0f32; rows as usize]));
            c.launch(k, s, &src, layout, &mut out, out_layout.pitch, &mut sums);
            if op == Op::RowSum {
                let mut got = vec![0f32; rows as usize];
                ok(s.copy_dtoh(&sums, &mut got));
                return (0..rows).all(|r| {
                    let want: f64 = (0..cols)
                        .map(|cc| f64::from(FromF32::to_f32(at(r, cc))))
                        .sum();
                    f64::from(got[r as usize]) == want
                });
            }
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
        })
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
        let moved = if c.op == Op::RowSum {
            bytes
        } else {
            2.0 * bytes
        };
        let ms = time_ms(s, dev, || {
            c.launch(k, s, &src, layout, &mut dst, layout.pitch, &mut sums)
        });
        add_row(r, bandwidth, "kernel_sweep", &c.name, moved, ms, memcpy_gbs);
    }
    // The plain grid-stride copy of the same bytes (16-byte vectors).
    let f = ok(module.function("kbv_plain_copy"));
    let n16 = (layout.span() * size_of::<T>() as u64 / 16) as u64;
    for blocks_per_sm in [32u32] {
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

/// The placement-only transposes of `kernel_place` (`kbv::TileSwap` in
/// `bench/raw/kernel_variants.cuh`): (element type, shape name of the placement-only kernel,
/// its square tile (rows, bytes per row), shape name of the real transpose at that tile (`""`:
/// the built-in kernel), depths).
#[allow(clippy::type_complexity)]
const PLACE: &[(&str, &str, (u32, u32), &str, &[u32])] = &[
    ("f32", "r64x256g4096place", (64, 256), "", &[2, 3, 4]),
    (
        "bf16",
        "r128x256g4096place",
        (128, 256),
        "r128x256g4096",
        &[2, 3],
    ),
];

/// One row of `kernel_place` before its kernel is resolved.
#[derive(Debug, Clone, PartialEq)]
struct PlaceRow {
    name: String,
    op: Op,
    /// The bench cubin's kernel (`None`: the built-in one).
    kernel: Option<String>,
    placement: bool,
    /// (rows, bytes per row) of the variant's tile.
    tile: (u32, u32),
    transfer: Transfer,
    stages: Stages,
    /// `Some(132)`: one block per SM of the H200 (`_cap132`).
    max_blocks: Option<u32>,
}

/// The side of `e`'s placement-only tile in elements.
fn place_side(e: &str, elem_bytes: u32) -> u32 {
    PLACE
        .iter()
        .find(|p| p.0 == e)
        .map_or(1, |p| p.2.1 / elem_bytes)
}

/// Every row of `kernel_place` for element type `e` (`"f32"`, `"bf16"`), in running order: the
/// built-in copies (cp.async, 4 stages, one block per SM; TMA, 3 stages, default grid), then for
/// each transfer, depth and grid the placement-only transpose and, next to it, the real one.
/// Every row stores from threads.
fn place_rows(e: &str) -> Vec<PlaceRow> {
    let Some(&(_, shape, tile, real, depths)) = PLACE.iter().find(|p| p.0 == e) else {
        return Vec::new();
    };
    let stages_of = |n: u32| Stages::new(n).unwrap_or(Stages::FOUR); // PLACE lists 2..=4 only
    let st = Store::Threads.name();
    let mut out = Vec::new();
    for (transfer, stages, max_blocks) in [
        (Transfer::CpAsync, Stages::FOUR, Some(132)),
        (Transfer::Tma, Stages::THREE, None),
    ] {
        let cap = max_blocks.map_or(String::new(), |c| format!("_cap{c}"));
        out.push(PlaceRow {
            name: format!(
                "b_copy2d_{st}_{}_{e}_s{}{cap}",
                transfer.name(),
                stages.get()
            ),
            op: Op::Copy2d,
            kernel: None,
            placement: false,
            tile: (8, 2048),
            transfer,
            stages,
            max_blocks,
        });
    }
    for transfer in Transfer::ALL {
        let t = transfer.name();
        for &n in depths {
            for max_blocks in [None, Some(132)] {
                let cap = max_blocks.map_or(String::new(), |c| format!("_cap{c}"));
                let row = |name: String, kernel: Option<String>, placement: bool| PlaceRow {
                    name,
                    op: Op::Transpose,
                    kernel,
                    placement,
                    tile,
                    transfer,
                    stages: stages_of(n),
                    max_blocks,
                };
                out.push(row(
                    format!("v_transpose_{shape}_{st}_{t}_{e}_s{n}{cap}"),
                    Some(format!("kbv_transpose_{shape}_{t}_{e}_s{n}")),
                    true,
                ));
                out.push(if real.is_empty() {
                    row(format!("b_transpose_{st}_{t}_{e}_s{n}{cap}"), None, false)
                } else {
                    row(
                        format!("v_transpose_{real}_{st}_{t}_{e}_s{n}{cap}"),
                        Some(format!("kbv_transpose_{real}_{t}_{e}_s{n}")),
                        false,
                    )
                });
            }
        }
    }
    out
}

/// The selected rows of `kernel_place` for `T`, their kernels resolved in `module` (one
/// [`Variant`] per kernel, shared by its two grids).
fn place_configs<T: Element>(k: &Kernels, module: &Module) -> Vec<Config> {
    let mut variants: std::collections::HashMap<String, std::rc::Rc<Variant>> =
        std::collections::HashMap::new();
    place_rows(elem_name::<T>())
        .into_iter()
        .filter(|row| selected(&row.name))
        .map(|row| {
            let variant = row.kernel.as_ref().map(|name| {
                variants
                    .entry(name.clone())
                    .or_insert_with(|| {
                        let (t, n) = (row.transfer, row.stages.get());
                        std::rc::Rc::new(ok(if row.placement {
                            k.placement_variant::<T>(module, name, t, n, row.tile)
                        } else {
                            k.variant::<T>(module, name, row.op, t, n, row.tile, row.tile.0)
                        }))
                    })
                    .clone()
            });
            let mut pipeline = Pipeline::new(row.transfer, row.stages)
                .with_store(Store::Threads)
                .with_item_order(ItemOrder::Fixed);
            if let Some(c) = row.max_blocks.and_then(NonZeroU32::new) {
                pipeline = pipeline.with_max_blocks(c);
            }
            Config {
                name: row.name,
                op: row.op,
                variant,
                pipeline,
                promotion: None,
                placement: row.placement,
            }
        })
        .collect()
}

/// The source element (row, column) that a block swap of `side` x `side` tiles puts at
/// destination (`r`, `c`): source (row + i, col + k) of the tile at origin (row, col) goes to
/// destination (col + i, row + k). Its own inverse, as the transpose is.
fn swap_source(side: u32, r: u32, c: u32) -> (u32, u32) {
    (c / side * side + r % side, r / side * side + c % side)
}

/// Runs placement-only configuration `c` on a 256 x 384 matrix (whole tiles of side 64 or 128)
/// with a poisoned destination, against the CPU block swap. True when every element is right.
fn check_place<T: Element + FromF32 + PartialEq + Copy>(
    k: &Kernels,
    s: &DeviceStream,
    c: &Config,
    side: u32,
) -> bool {
    let (rows, cols) = (256u32, 384u32);
    let layout = MatrixLayout::aligned::<T>(rows, cols);
    let host = matrix::<T>(layout.span() as usize, 0x5eed);
    let src = ok(s.clone_htod(&host));
    let out_layout = MatrixLayout::aligned::<T>(cols, rows);
    let poison = <T as FromF32>::from_f32(-7777.0);
    let n = out_layout.span() as usize;
    let mut out = ok(s.clone_htod(&vec![poison; n]));
    let mut sums = ok(s.clone_htod(&[0f32; 4]));
    c.launch(k, s, &src, layout, &mut out, out_layout.pitch, &mut sums);
    let mut got = vec![poison; n];
    ok(s.copy_dtoh(&out, &mut got));
    (0..out_layout.rows).all(|r| {
        (0..out_layout.cols).all(|cc| {
            let (sr, sc) = swap_source(side, r, cc);
            got[(r * out_layout.pitch + cc) as usize] == host[(sr * layout.pitch + sc) as usize]
        })
    })
}

/// Stops the program unless the launcher refuses placement-only configuration `c` on a shape
/// that is not whole tiles and with TMA stores, launching nothing (the destination stays
/// poisoned): its kernel checks no edges.
fn check_place_refused<T: Element + FromF32 + PartialEq + Copy>(
    k: &Kernels,
    s: &DeviceStream,
    c: &Config,
    side: u32,
) {
    let Some(v) = &c.variant else {
        return;
    };
    let poison = <T as FromF32>::from_f32(-7777.0);
    for (rows, cols, store) in [
        (2 * side, 3 * side + 8, Store::Threads),
        (2 * side + 1, 3 * side, Store::Threads),
        (2 * side, 3 * side, Store::Tma),
    ] {
        let layout = MatrixLayout::aligned::<T>(rows, cols);
        let src = ok(s.clone_htod(&matrix::<T>(layout.span() as usize, 7)));
        let out_layout = MatrixLayout::aligned::<T>(cols, rows);
        let n = out_layout.span() as usize;
        let mut out = ok(s.clone_htod(&vec![poison; n]));
        let p = c.pipeline.with_store(store);
        let r = k.launch_variant(s, v, p, None, &src, layout, &mut out, out_layout.pitch);
        let mut got = vec![poison; n];
        ok(s.copy_dtoh(&out, &mut got));
        if !matches!(r, Err(ferrocuda_kernels::Error::WholeTiles { .. }))
            || got.iter().any(|g| *g != poison)
        {
            die(&format!(
                "{}: a {rows} x {cols} launch with {store:?} stores was not refused ({:?})",
                c.name,
                r.err()
            ));
        }
    }
}

/// The placement-only experiment for element type `T` (benchmark `kernel_place`).
#[allow(clippy::too_many_arguments)]
fn place<T: Element + FromF32 + PartialEq + Copy>(
    k: &Kernels,
    dev: &Device,
    s: &DeviceStream,
    r: &mut Report,
    bandwidth: &mut comfy_table::Table,
    module: &Module,
    memcpy_gbs: f64,
) {
    let configs = place_configs::<T>(k, module);
    if configs.is_empty() {
        return;
    }
    let side = place_side(elem_name::<T>(), size_of::<T>() as u32);
    if !once()
        && let Some(c) = configs.iter().find(|c| c.placement)
    {
        check_place_refused::<T>(k, s, c, side);
    }
    // 1 GiB square, the side rounded down to whole tiles (f32 16384, bf16 23168).
    let n = ((1u64 << 30) / size_of::<T>() as u64).isqrt() as u32 / side * side;
    let timed = configs.into_iter().map(|c| {
        let place = c.placement.then_some(side);
        (c, place)
    });
    time_checked::<T>(
        k,
        dev,
        s,
        r,
        bandwidth,
        memcpy_gbs,
        "kernel_place",
        n,
        timed,
    );
}

/// Times each configuration as a row of benchmark `bench` on an `n` x `n` matrix (rows on
/// 512-byte boundaries), each first checked on small matrices unless timing once: a placement-only
/// kernel (`Some(side)`, its tile side) against the CPU block swap, any other against the CPU
/// reference, before and after its timed launches. A configuration that computes a wrong result
/// gets a `WRONG` row and no timing.
#[allow(clippy::too_many_arguments)]
fn time_checked<T: Element + FromF32 + PartialEq + Copy>(
    k: &Kernels,
    dev: &Device,
    s: &DeviceStream,
    r: &mut Report,
    bandwidth: &mut comfy_table::Table,
    memcpy_gbs: f64,
    bench: &str,
    n: u32,
    configs: impl IntoIterator<Item = (Config, Option<u32>)>,
) {
    let layout = MatrixLayout::aligned::<T>(n, n);
    let bytes = f64::from(n) * f64::from(n) * size_of::<T>() as f64;
    let host = matrix::<T>(layout.span() as usize, 0x9e37_79b9);
    let src = ok(s.clone_htod(&host));
    drop(host);
    let mut dst: DeviceBuffer<T> = ok(s.alloc(layout.span() as usize));
    let mut sums: DeviceBuffer<f32> = ok(s.alloc(4));
    for (c, place) in configs {
        let right = || match place {
            Some(side) => check_place::<T>(k, s, &c, side),
            None => check::<T>(k, s, &c),
        };
        let wrong = |bandwidth: &mut comfy_table::Table, when: &str| {
            bandwidth.add_row([c.name.clone(), "WRONG".into(), String::new(), String::new()]);
            eprintln!("{}: WRONG result on the small matrices {when}", c.name);
        };
        if !once() && !right() {
            wrong(bandwidth, "before timing");
            continue;
        }
        let ms = time_ms(s, dev, || {
            c.launch(k, s, &src, layout, &mut dst, layout.pitch, &mut sums)
        });
        // Again after the timed launches: a kernel whose state carries from launch to launch (a
        // dynamic item order's counters) must still be right, or its timing is not reported.
        if !once() && !right() {
            wrong(bandwidth, "after timing");
            continue;
        }
        add_row(r, bandwidth, bench, &c.name, 2.0 * bytes, ms, memcpy_gbs);
    }
    drop((src, dst, sums));
}

/// The rows the bundle's `kernel_place` script profiles with ncu (xtask/src/bench.rs; a test
/// there checks that it names these): pairs of a placement-only kernel and its real transpose.
#[cfg(test)]
const NCU_ROWS: [&str; 6] = [
    "v_transpose_r64x256g4096place_ststore_cpasync_f32_s4",
    "b_transpose_ststore_cpasync_f32_s4",
    "v_transpose_r64x256g4096place_ststore_cpasync_f32_s2_cap132",
    "b_transpose_ststore_cpasync_f32_s2_cap132",
    "v_transpose_r128x256g4096place_ststore_cpasync_bf16_s3_cap132",
    "v_transpose_r128x256g4096_ststore_cpasync_bf16_s3_cap132",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_swap_is_a_permutation_and_its_own_inverse() {
        for side in [1, 4, 64] {
            let (rows, cols) = (2 * side, 3 * side);
            // Destination is cols x rows; every source element lands exactly once.
            let mut seen = vec![false; (rows * cols) as usize];
            for r in 0..cols {
                for c in 0..rows {
                    let (sr, sc) = swap_source(side, r, c);
                    assert!(sr < rows && sc < cols, "({r}, {c}) from ({sr}, {sc})");
                    assert!(!std::mem::replace(
                        &mut seen[(sr * cols + sc) as usize],
                        true
                    ));
                    assert_eq!(swap_source(side, sr, sc), (r, c));
                }
            }
            // Within a tile, the swap keeps the element's place (unlike the transpose).
            assert_eq!(swap_source(side, 0, side - 1), (0, side - 1));
        }
        // Side 1 tiles: the swap is the transpose.
        assert_eq!(swap_source(1, 5, 9), (9, 5));
    }

    #[test]
    fn place_rows_pair_each_placement_kernel_with_its_real_transpose() {
        for (e, bytes, sides) in [("f32", 4, 3), ("bf16", 2, 2)] {
            let rows = place_rows(e);
            // Two copies, then 2 transfers x depths x 2 grids x (placement, real).
            assert_eq!(rows.len(), 2 + 2 * sides * 2 * 2, "{e}");
            let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), rows.len(), "{e}: duplicate row names");
            for pair in rows[2..].chunks(2) {
                let (p, real) = (&pair[0], &pair[1]);
                assert!(p.placement && !real.placement);
                assert_eq!(
                    (p.transfer, p.stages, p.max_blocks, p.tile),
                    (real.transfer, real.stages, real.max_blocks, real.tile)
                );
                assert_eq!(p.tile.1 / bytes, p.tile.0, "square tile");
                // The same store, transfer, type, depth and grid in the name.
                let tail = |n: &str| n.split_once("_ststore_").map(|(_, t)| t.to_owned());
                assert!(tail(&p.name).is_some());
                assert_eq!(tail(&p.name), tail(&real.name));
            }
            assert_eq!(place_side(e, bytes), 256 / bytes);
        }
        let all: Vec<String> = ["f32", "bf16"]
            .iter()
            .flat_map(|e| place_rows(e).into_iter().map(|r| r.name))
            .collect();
        for n in NCU_ROWS {
            assert!(all.iter().any(|a| a == n), "{n} is not a kernel_place row");
        }
    }

    #[test]
    fn a_dollar_pattern_matches_only_at_the_end() {
        let f = "s4$,cap264";
        assert!(filter_matches(f, "v_x_s4"));
        assert!(!filter_matches(f, "v_x_s4_cap132"));
        assert!(filter_matches(f, "b_y_s2_cap264"));
        assert!(filter_matches("s4", "v_x_s4_cap132"));
    }
}
