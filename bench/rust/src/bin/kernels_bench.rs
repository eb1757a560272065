//! Effective bandwidth of ferrocuda-kernels' pipeline kernels against `cuMemcpyDtoD` in the same
//! run: bytes read + written over CUDA-event time, median of 20 runs after 3 warm-up,
//! on 1 GiB inputs. Prints a table with the ratios and appends `kernel_bandwidth` JSON lines.
//!
//! Copy and transpose run with both stores (`tmastore`: TMA stores from the stage, the
//! default; `ststore`: ordinary stores from the consumer threads). With
//! `FERROCUDA_KBENCH_ONCE=1` every configuration is launched exactly once, with no warm-up
//! (for a profiler that should see each kernel and store once, e.g. `ncu` without a filter).

use ferrocuda_bench::{Args, Report, die, print_table, table};
use ferrocuda_driver::{Device, DeviceBuffer, DeviceEvent, DeviceStream};
use ferrocuda_kernels::{Element, Kernels, MatrixLayout, Pipeline, Stages, Store, Transfer};

const RUNS: usize = 20;
const WARMUP: usize = 3;

/// `FERROCUDA_KBENCH_ONCE=1`: one launch per configuration, no warm-up (for a profiler).
fn once() -> bool {
    std::env::var_os("FERROCUDA_KBENCH_ONCE").is_some_and(|v| v == "1")
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
}
impl FromF32 for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl FromF32 for half::bf16 {
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
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
            let mut cases: Vec<(String, f64, f64)> = Vec::new();
            for store in Store::ALL {
                let p = Pipeline::new(transfer, stages).with_store(store);
                let tag = |op: &str| format!("{op}_{}", store.name());
                cases.push((
                    tag("copy2d"),
                    2.0 * bytes,
                    time_ms(s, dev, || {
                        ok(k.copy_2d(s, p, &src, layout, &mut dst, layout.pitch))
                    }),
                ));
                cases.push((
                    tag("transpose"),
                    2.0 * bytes,
                    time_ms(s, dev, || {
                        ok(k.transpose(s, p, &src, layout, &mut dst, layout.pitch))
                    }),
                ));
                // Layout A/B (4 stages, full runs only): rows off the sector grid (pitch16), and
                // rows on 128-byte lines but not on 512-byte boundaries (pitch128, bf16 only).
                if stages == Stages::FOUR && !once() {
                    cases.push((
                        tag("copy2d_pitch16"),
                        2.0 * bytes,
                        time_ms(s, dev, || {
                            ok(k.copy_2d(s, p, &src, misaligned, &mut dst, misaligned.pitch))
                        }),
                    ));
                    cases.push((
                        tag("transpose_pitch16"),
                        2.0 * bytes,
                        time_ms(s, dev, || {
                            ok(k.transpose(s, p, &src, misaligned, &mut dst, misaligned.pitch))
                        }),
                    ));
                    if pitch128.pitch != layout.pitch {
                        cases.push((
                            tag("copy2d_pitch128"),
                            2.0 * bytes,
                            time_ms(s, dev, || {
                                ok(k.copy_2d(s, p, &src, pitch128, &mut dst, pitch128.pitch))
                            }),
                        ));
                        cases.push((
                            tag("transpose_pitch128"),
                            2.0 * bytes,
                            time_ms(s, dev, || {
                                ok(k.transpose(s, p, &src, pitch128, &mut dst, pitch128.pitch))
                            }),
                        ));
                    }
                }
            }
            let p = Pipeline::new(transfer, stages);
            cases.push((
                "row_sum".to_owned(),
                bytes,
                time_ms(s, dev, || ok(k.row_sum(s, p, &src, layout, &mut sums))),
            ));
            for (op, moved, ms) in cases {
                let gbs = moved / (ms * 1e6);
                let regime = format!("{op}_{}_{tname}_s{}", transfer.name(), stages.get());
                bandwidth.add_row([
                    regime.clone(),
                    format!("{ms:.3}"),
                    format!("{gbs:.1}"),
                    format!("{:.3}", gbs / memcpy_gbs),
                ]);
                let mut v = [ms * 1e6];
                r.row(
                    "kernel_bandwidth",
                    &regime,
                    &mut v,
                    &format!("\"rate\":{gbs:.1},\"rate_unit\":\"GB/s\",\"vs_memcpy\":{:.4},\"bytes\":{moved}", gbs / memcpy_gbs),
                );
            }
        }
    }
}

fn main() {
    let Some(args) = Args::parse_lenient(&["kernel_bandwidth"]) else {
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
    rows::<f32>(&k, &dev, &s, &mut r, &mut bandwidth, "f32", memcpy_gbs);
    rows::<half::bf16>(&k, &dev, &s, &mut r, &mut bandwidth, "bf16", memcpy_gbs);
    ok(s.synchronize());
    print_table(&bandwidth);
}
