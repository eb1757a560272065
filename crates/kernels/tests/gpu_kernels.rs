//! The pipeline kernels on a GPU, against CPU references: every op, both transfers, f32 and
//! bf16, 2 to 4 stages, odd shapes with partial edge tiles and padded pitches.
//!
//! Inputs are random and non-zero (a seeded generator, so a failure reproduces); outputs are
//! poisoned before every launch, and the padding past each destination row must still hold the
//! poison afterwards (nothing is written outside the matrix: with TMA stores, the destination
//! tensor map's bounds clip every edge box). Copies and transposes run with both stores (TMA
//! stores from the stage and ordinary thread stores) and both item orders (dynamic, where a grid
//! has two work items per block or more: the one-block and large tests; fixed). Copies and transposes must match
//! bit for bit; row sums within 1e-5 (f32) or 1e-2 (bf16) relative error of an f64 reference.
//! Test names say their size: `small_*` (a few tiles; what the compute-sanitizer passes of
//! `cargo xtask test-gpu` run, filtered with `small_`), `medium_*`, and `large_*` (more tiles
//! than the grid has blocks: the persistent loop). `small_one_block_grids_reuse_every_stage`
//! caps the grid at one block, so that the sanitizer passes also see every stage reused.
//!
//! Every test runs under a deadline, and every wait for the GPU is bounded: a kernel that never
//! ends (a pipeline barrier nobody arrives at) fails the test at its last mark instead of hanging
//! the suite.
#![cfg(feature = "gpu-tests")]

use ferrocuda_driver::{
    CompletionFlag, Device, DeviceBuffer, DeviceStream, GateStrategy, WaitCondition,
};
use ferrocuda_kernels::{
    Element, Error, ItemOrder, Kernels, MatrixLayout, Pipeline, Stages, Store, Transfer,
};
use ferrocuda_test_support::{deadline, mark, slack};
use half::bf16;
use std::num::NonZeroU32;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// The longest one wait for enqueued kernels may take (times [`slack`]): the largest matrix here
/// takes milliseconds.
fn sync_limit() -> Duration {
    10 * SEC * slack()
}

/// SplitMix64: small, seedable, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Host-side conversions the tests need for both element types.
trait TestElement: Element + PartialEq + std::fmt::Debug {
    /// A random non-zero value; positive when `positive` (row sums: no cancellation).
    fn random(rng: &mut Rng, positive: bool) -> Self;
    fn to_f64(self) -> f64;
    fn bits(self) -> u32;
    /// A NaN with a payload no kernel produces.
    const POISON: Self;
    /// Row-sum tolerance (relative).
    const SUM_TOLERANCE: f64;
}

impl TestElement for f32 {
    fn random(rng: &mut Rng, positive: bool) -> f32 {
        let m = rng.uniform(0.25, 1.25) as f32;
        if positive || rng.next() & 1 == 0 {
            m
        } else {
            -m
        }
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn bits(self) -> u32 {
        self.to_bits()
    }
    const POISON: f32 = f32::from_bits(0x7fc0_dead);
    const SUM_TOLERANCE: f64 = 1e-5;
}

impl TestElement for bf16 {
    fn random(rng: &mut Rng, positive: bool) -> bf16 {
        bf16::from_f32(f32::random(rng, positive))
    }
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    fn bits(self) -> u32 {
        u32::from(self.to_bits())
    }
    const POISON: bf16 = bf16::from_bits(0x7fad);
    const SUM_TOLERANCE: f64 = 1e-2;
}

/// Odd shapes: single elements, partial tiles in both dimensions, exact tiles, tall and wide.
const SMALL: &[(u32, u32)] = &[
    (1, 1),
    (1, 9),
    (7, 33),
    (32, 128),
    (33, 127),
    (31, 129),
    (129, 257),
    (128, 256),
    (255, 3),
    // Rows of whole 16-byte pieces with partial edge tiles: TMA stores whose boxes the copy
    // engine clips (copy: 45 x 200; transpose: 200 x 45, whose destination rows are 200 wide).
    (45, 200),
    (200, 45),
];

/// Many tiles per matrix, still odd.
const MEDIUM: &[(u32, u32)] = &[(3, 1029), (1000, 777), (301, 1030)];

/// Large enough that every grid is smaller than the number of tiles.
const LARGE: (u32, u32) = (2049, 4099);

/// Every transfer, depth, store and item order (row sums ignore the store and the order: they
/// run four times, which is cheap); with `max_blocks`, grids capped at that many blocks.
fn pipelines(max_blocks: Option<NonZeroU32>) -> impl Iterator<Item = Pipeline> {
    Transfer::ALL.into_iter().flat_map(move |t| {
        Stages::ALL.into_iter().flat_map(move |s| {
            Store::ALL.into_iter().flat_map(move |store| {
                [ItemOrder::Dynamic, ItemOrder::Fixed]
                    .into_iter()
                    .map(move |order| {
                        let p = Pipeline::new(t, s).with_store(store).with_item_order(order);
                        match max_blocks {
                            Some(n) => p.with_max_blocks(n),
                            None => p,
                        }
                    })
            })
        })
    })
}

/// The default grid: one block per work item up to what the SMs hold.
const DEVICE_GRID: Option<NonZeroU32> = None;
/// One block: it walks every work item, so each stage of its ring is reused many times (what
/// racecheck must see: a consumer's reads of a stage, then the producer's next copy into it).
const ONE_BLOCK: Option<NonZeroU32> = NonZeroU32::new(1);

struct Gpu {
    _device: Device,
    stream: DeviceStream,
    kernels: Kernels,
}

fn gpu() -> Gpu {
    mark("open device 0 and a stream", 0);
    let device = Device::new(0).expect("a CUDA device");
    let stream = device.new_stream().expect("a stream");
    mark("load the kernels", 0);
    let kernels = Kernels::load(&device).expect("the kernels load");
    Gpu {
        _device: device,
        stream,
        kernels,
    }
}

impl Gpu {
    fn upload<T: Element>(&self, host: &[T]) -> DeviceBuffer<T> {
        mark("upload", host.len() as u64);
        let mut buf = self.stream.alloc::<T>(host.len()).expect("alloc");
        self.stream
            .copy_htod(host, &mut buf)
            .expect("copy to device");
        buf
    }
    /// Waits (bounded) for the work enqueued so far, then copies `buf` to the host: the copy
    /// waits for nothing but itself.
    fn download<T: TestElement>(&self, buf: &DeviceBuffer<T>) -> Vec<T> {
        mark("wait for the enqueued kernels", buf.len() as u64);
        self.stream
            .synchronize_timeout(sync_limit())
            .expect("the enqueued kernels complete");
        mark("download", buf.len() as u64);
        let mut host = vec![T::POISON; buf.len()];
        self.stream.copy_dtoh(buf, &mut host).expect("copy to host");
        host
    }
}

/// A random source matrix (padding included: it must never be copied).
fn source<T: TestElement>(rng: &mut Rng, layout: MatrixLayout, positive: bool) -> Vec<T> {
    (0..layout.span())
        .map(|_| T::random(rng, positive))
        .collect()
}

/// The padded layout, with `extra` more elements of pitch (keeps 16-byte rows).
fn layout<T: Element>(rows: u32, cols: u32, extra_vectors: u32) -> MatrixLayout {
    let mut l = MatrixLayout::padded::<T>(rows, cols);
    l.pitch += extra_vectors * (16 / std::mem::size_of::<T>() as u32);
    l
}

fn check_copy<T: TestElement>(
    g: &Gpu,
    rng: &mut Rng,
    (rows, cols): (u32, u32),
    max_blocks: Option<NonZeroU32>,
) {
    for (step, p) in pipelines(max_blocks).enumerate() {
        let src_l = layout::<T>(rows, cols, (rng.next() % 2) as u32);
        let dst_l = layout::<T>(rows, cols, (rng.next() % 2) as u32);
        let src_h = source::<T>(rng, src_l, false);
        let src = g.upload(&src_h);
        let mut dst = g.upload(&vec![T::POISON; dst_l.span() as usize]);
        mark("launch copy_2d", step as u64);
        g.kernels
            .copy_2d(&g.stream, p, &src, src_l, &mut dst, dst_l.pitch)
            .expect("copy_2d launches");
        let out = g.download(&dst);
        for (i, got) in out.iter().enumerate() {
            let (r, c) = (i as u32 / dst_l.pitch, i as u32 % dst_l.pitch);
            let want = if c < cols {
                src_h[(r * src_l.pitch + c) as usize]
            } else {
                T::POISON
            };
            assert_eq!(
                got.bits(),
                want.bits(),
                "copy_2d {p:?} {rows}x{cols} ({}) at ({r},{c}): got {got:?}, want {want:?}",
                T::NAME
            );
        }
    }
}

fn check_transpose<T: TestElement>(
    g: &Gpu,
    rng: &mut Rng,
    (rows, cols): (u32, u32),
    max_blocks: Option<NonZeroU32>,
) {
    for (step, p) in pipelines(max_blocks).enumerate() {
        let src_l = layout::<T>(rows, cols, (rng.next() % 2) as u32);
        let dst_l = layout::<T>(cols, rows, (rng.next() % 2) as u32);
        let src_h = source::<T>(rng, src_l, false);
        let src = g.upload(&src_h);
        let mut dst = g.upload(&vec![T::POISON; dst_l.span() as usize]);
        mark("launch transpose", step as u64);
        g.kernels
            .transpose(&g.stream, p, &src, src_l, &mut dst, dst_l.pitch)
            .expect("transpose launches");
        let out = g.download(&dst);
        for (i, got) in out.iter().enumerate() {
            // Destination (c, r) holds source (r, c).
            let (c, r) = (i as u32 / dst_l.pitch, i as u32 % dst_l.pitch);
            let want = if r < rows {
                src_h[(r * src_l.pitch + c) as usize]
            } else {
                T::POISON
            };
            assert_eq!(
                got.bits(),
                want.bits(),
                "transpose {p:?} {rows}x{cols} ({}) at dst ({c},{r}): got {got:?}, want {want:?}",
                T::NAME
            );
        }
    }
}

fn check_row_sum<T: TestElement>(
    g: &Gpu,
    rng: &mut Rng,
    (rows, cols): (u32, u32),
    max_blocks: Option<NonZeroU32>,
) {
    for (step, p) in pipelines(max_blocks).enumerate() {
        let src_l = layout::<T>(rows, cols, (rng.next() % 2) as u32);
        let src_h = source::<T>(rng, src_l, true);
        let src = g.upload(&src_h);
        // Four poisoned slots past the end catch a write beyond the last row.
        let mut dst = g.upload(&vec![f32::POISON; rows as usize + 4]);
        mark("launch row_sum", step as u64);
        g.kernels
            .row_sum(&g.stream, p, &src, src_l, &mut dst)
            .expect("row_sum launches");
        let out = g.download(&dst);
        for r in 0..rows as usize {
            let row = &src_h[r * src_l.pitch as usize..][..cols as usize];
            let want: f64 = row.iter().map(|&x| x.to_f64()).sum();
            let rel = (f64::from(out[r]) - want).abs() / want.abs();
            assert!(
                rel <= T::SUM_TOLERANCE,
                "row_sum {p:?} {rows}x{cols} ({}) row {r}: got {}, want {want} (rel err {rel:e})",
                T::NAME,
                out[r]
            );
        }
        for (k, tail) in out[rows as usize..].iter().enumerate() {
            assert_eq!(
                tail.to_bits(),
                f32::POISON.to_bits(),
                "row_sum wrote past the last row (+{k})"
            );
        }
    }
}

#[test]
fn small_copy_2d_matches_the_source_bit_for_bit() {
    deadline(60 * SEC, || {
        let g = gpu();
        let mut rng = Rng(0xc0de_0001);
        for &shape in SMALL {
            check_copy::<f32>(&g, &mut rng, shape, DEVICE_GRID);
            check_copy::<bf16>(&g, &mut rng, shape, DEVICE_GRID);
        }
    });
}

#[test]
fn small_transpose_matches_the_reference_bit_for_bit() {
    deadline(60 * SEC, || {
        let g = gpu();
        let mut rng = Rng(0xc0de_0002);
        for &shape in SMALL {
            check_transpose::<f32>(&g, &mut rng, shape, DEVICE_GRID);
            check_transpose::<bf16>(&g, &mut rng, shape, DEVICE_GRID);
        }
    });
}

#[test]
fn small_row_sum_matches_an_f64_reference() {
    deadline(60 * SEC, || {
        let g = gpu();
        let mut rng = Rng(0xc0de_0003);
        for &shape in SMALL {
            check_row_sum::<f32>(&g, &mut rng, shape, DEVICE_GRID);
            check_row_sum::<bf16>(&g, &mut rng, shape, DEVICE_GRID);
        }
    });
}

/// Shapes with several work items, so that a single block reuses every stage across items
/// (copy, transpose) and within a row band (row sums).
const REUSE: &[(u32, u32)] = &[(129, 257), (200, 70), (33, 1100)];

#[test]
fn small_one_block_grids_reuse_every_stage() {
    deadline(60 * SEC, || {
        let g = gpu();
        let mut rng = Rng(0xc0de_0006);
        for &shape in REUSE {
            check_copy::<f32>(&g, &mut rng, shape, ONE_BLOCK);
            check_copy::<bf16>(&g, &mut rng, shape, ONE_BLOCK);
            check_transpose::<f32>(&g, &mut rng, shape, ONE_BLOCK);
            check_transpose::<bf16>(&g, &mut rng, shape, ONE_BLOCK);
            check_row_sum::<f32>(&g, &mut rng, shape, ONE_BLOCK);
            check_row_sum::<bf16>(&g, &mut rng, shape, ONE_BLOCK);
        }
    });
}

#[test]
fn medium_shapes_match_the_references() {
    deadline(120 * SEC, || {
        let g = gpu();
        let mut rng = Rng(0xc0de_0005);
        for &shape in MEDIUM {
            check_copy::<f32>(&g, &mut rng, shape, DEVICE_GRID);
            check_copy::<bf16>(&g, &mut rng, shape, DEVICE_GRID);
            check_transpose::<f32>(&g, &mut rng, shape, DEVICE_GRID);
            check_transpose::<bf16>(&g, &mut rng, shape, DEVICE_GRID);
            check_row_sum::<f32>(&g, &mut rng, shape, DEVICE_GRID);
            check_row_sum::<bf16>(&g, &mut rng, shape, DEVICE_GRID);
        }
    });
}

#[test]
fn large_matrices_exercise_the_persistent_loop() {
    deadline(120 * SEC, || {
        let g = gpu();
        let mut rng = Rng(0xc0de_0004);
        check_copy::<f32>(&g, &mut rng, LARGE, DEVICE_GRID);
        check_copy::<bf16>(&g, &mut rng, LARGE, DEVICE_GRID);
        check_transpose::<f32>(&g, &mut rng, LARGE, DEVICE_GRID);
        check_transpose::<bf16>(&g, &mut rng, LARGE, DEVICE_GRID);
        check_row_sum::<f32>(&g, &mut rng, LARGE, DEVICE_GRID);
        check_row_sum::<bf16>(&g, &mut rng, LARGE, DEVICE_GRID);
    });
}

/// Dynamic item order on two streams at once: each launch takes its items from its own counters,
/// so copies and transposes that overlap on the GPU are each whole, launch after launch.
#[test]
fn medium_dynamic_launches_on_two_streams_at_once_are_each_whole() {
    deadline(60 * SEC, || {
        let g = gpu();
        let other = g._device.new_stream().expect("a second stream");
        let mut rng = Rng(0xc0de_0007);
        let (rows, cols) = (1000, 777);
        let l = layout::<f32>(rows, cols, 0);
        let t = layout::<f32>(cols, rows, 0);
        // Two blocks: about a hundred items each, taken from the counters.
        let p = Pipeline::new(Transfer::Tma, Stages::THREE)
            .with_max_blocks(NonZeroU32::MIN.saturating_add(1));
        let src_h = source::<f32>(&mut rng, l, false);
        let src = g.upload(&src_h);
        let mut outs = Vec::new();
        for round in 0..8u64 {
            mark("launch on both streams", round);
            let mut a = g.upload(&vec![f32::POISON; l.span() as usize]);
            let mut b = g.upload(&vec![f32::POISON; t.span() as usize]);
            // The uploads are on the first stream: the second waits for them.
            g.stream
                .synchronize_timeout(sync_limit())
                .expect("uploads complete");
            g.kernels
                .copy_2d(&g.stream, p, &src, l, &mut a, l.pitch)
                .expect("copy_2d launches");
            g.kernels
                .transpose(&other, p, &src, l, &mut b, t.pitch)
                .expect("transpose launches");
            outs.push((a, b));
        }
        other
            .synchronize_timeout(sync_limit())
            .expect("the second stream's kernels complete");
        for (round, (a, b)) in outs.iter().enumerate() {
            let (a, b) = (g.download(a), g.download(b));
            for r in 0..rows {
                for c in 0..cols {
                    let want = src_h[(r * l.pitch + c) as usize].bits();
                    assert_eq!(
                        a[(r * l.pitch + c) as usize].bits(),
                        want,
                        "copy {round} ({r},{c})"
                    );
                    assert_eq!(
                        b[(c * t.pitch + r) as usize].bits(),
                        want,
                        "transpose {round} ({r},{c})"
                    );
                }
            }
        }
    });
}

/// More dynamic launches than the `Kernels` has counter pairs (8 here), all enqueued while the GPU
/// cannot run them (the stream waits on a host value): each of the first 8 holds a pair (so they
/// took the dynamic order), the rest take the fixed order, nothing in the launches blocks behind
/// the pending wait, every result is whole once the wait passes, and every pair is free again once
/// the GPU is past the launches. (Far more launches behind one wait would block in the driver,
/// whose queue of pending launches is finite.)
#[test]
fn small_more_dynamic_launches_than_counters_behind_a_host_wait_are_each_whole() {
    deadline(60 * SEC, || {
        mark("open device 0 and a stream", 0);
        let device = Device::new(0).expect("a CUDA device");
        let stream = device.new_stream().expect("a stream");
        mark("load the kernels with 8 counter pairs", 0);
        let kernels = Kernels::load_with_counter_slots(&device, 10 * SEC, 8).expect("load");
        let g = Gpu {
            _device: device,
            stream,
            kernels,
        };
        assert_eq!(g.kernels.free_counter_slots(), 8);
        let mut rng = Rng(0xc0de_0009);
        // Three items per block on one block: dynamic order where a pair is free.
        let (rows, cols) = (17, 512);
        let l = layout::<f32>(rows, cols, 0);
        let p = Pipeline::new(Transfer::Tma, Stages::TWO).with_max_blocks(NonZeroU32::MIN);
        let src_h = source::<f32>(&mut rng, l, false);
        let src = g.upload(&src_h);
        let mut outs: Vec<DeviceBuffer<f32>> = (0..20)
            .map(|_| g.upload(&vec![f32::POISON; l.span() as usize]))
            .collect();
        g.stream
            .synchronize_timeout(sync_limit())
            .expect("uploads complete");
        let go = CompletionFlag::new(&g._device).expect("a flag");
        g.stream
            .wait_value(
                &go,
                1,
                WaitCondition::GreaterOrEqual,
                GateStrategy::DriverWait,
            )
            .expect("the wait enqueues");
        for (i, out) in outs.iter_mut().enumerate() {
            mark("launch behind the wait", i as u64);
            g.kernels
                .copy_2d(&g.stream, p, &src, l, out, l.pitch)
                .expect("copy_2d launches");
            assert_eq!(
                g.kernels.free_counter_slots(),
                8 - (i + 1).min(8),
                "launch {i}"
            );
        }
        mark("release the wait", 0);
        go.signal(1);
        for (i, out) in outs.iter().enumerate() {
            let got = g.download(out);
            for r in 0..rows {
                for c in 0..cols {
                    let k = (r * l.pitch + c) as usize;
                    assert_eq!(got[k].bits(), src_h[k].bits(), "launch {i} at ({r},{c})");
                }
            }
        }
        mark("wait for the pairs to come back", 0);
        ferrocuda_driver::wait_for_releases(sync_limit()).expect("the releases complete");
        assert_eq!(g.kernels.free_counter_slots(), 8);
    });
}

/// A launch captured into a graph (dynamic order asked for, where the grid would use it) replays
/// right every time, from two executables of the graph at once too: under capture the launch
/// takes the fixed order, whose blocks need no counter that replays would share.
#[test]
fn small_captured_launches_replay_whole_from_two_executables() {
    deadline(60 * SEC, || {
        let g = gpu();
        let other = g._device.new_stream().expect("a second stream");
        let mut rng = Rng(0xc0de_0008);
        let (rows, cols) = (129, 257);
        let l = layout::<f32>(rows, cols, 0);
        let p = Pipeline::new(Transfer::CpAsync, Stages::TWO).with_max_blocks(NonZeroU32::MIN);
        let mut src = g.upload(&vec![0.0f32; l.span() as usize]);
        let mut dst = g.upload(&vec![f32::POISON; l.span() as usize]);
        g.stream
            .synchronize_timeout(sync_limit())
            .expect("uploads complete");
        mark("capture", 0);
        let graph = ferrocuda_graph::Graph::capture(&g.stream, |cap| {
            g.kernels
                .copy_2d(cap.stream(), p, &src, l, &mut dst, l.pitch)
                .expect("copy_2d captures");
            Ok(())
        })
        .expect("the capture ends");
        let (one, two) = (
            graph.instantiate().expect("instantiate"),
            graph.instantiate().expect("instantiate again"),
        );
        for replay in 0..4u64 {
            let src_h = source::<f32>(&mut rng, l, false);
            g.stream.copy_htod(&src_h, &mut src).expect("new source");
            g.stream
                .synchronize_timeout(sync_limit())
                .expect("the source is written");
            mark("replay both executables", replay);
            one.launch(&g.stream).expect("replay");
            two.launch(&other).expect("replay the twin");
            other
                .synchronize_timeout(sync_limit())
                .expect("the twin's replay completes");
            let out = g.download(&dst);
            for r in 0..rows {
                for c in 0..cols {
                    let i = (r * l.pitch + c) as usize;
                    assert_eq!(
                        out[i].bits(),
                        src_h[i].bits(),
                        "replay {replay} at ({r},{c})"
                    );
                }
            }
        }
    });
}

#[test]
fn small_bad_layouts_are_refused_before_launch() {
    deadline(60 * SEC, || {
        let g = gpu();
        let src = g.upload(&vec![1.0f32; 100 * 7]);
        let mut dst = g.upload(&vec![f32::POISON; 100 * 8]);
        // 7 f32 per row is 28 bytes: rows would not start 16-byte aligned.
        let unpadded = MatrixLayout {
            rows: 100,
            cols: 7,
            pitch: 7,
        };
        for p in pipelines(DEVICE_GRID) {
            let r = g.kernels.copy_2d(&g.stream, p, &src, unpadded, &mut dst, 8);
            assert!(matches!(r, Err(Error::Pitch { .. })), "{p:?}: {r:?}");
        }
        // A buffer too short for the layout.
        let l = MatrixLayout::padded::<f32>(100, 8);
        let mut small = g.upload(&[f32::POISON; 10]);
        let r = g
            .kernels
            .copy_2d(&g.stream, Pipeline::default(), &dst, l, &mut small, 8);
        assert!(matches!(r, Err(Error::BufferTooSmall { .. })), "{r:?}");
        // The destination was never written.
        assert!(
            g.download(&small)
                .iter()
                .all(|x| x.to_bits() == f32::POISON.to_bits())
        );
    });
}

#[test]
fn small_row_sum_needs_exactly_one_value_per_row() {
    deadline(60 * SEC, || {
        let g = gpu();
        let mut rng = Rng(0xc0de_0007);
        let l = layout::<f32>(7, 5, 0);
        let src_h = source::<f32>(&mut rng, l, true);
        let src = g.upload(&src_h);
        let mut short = g.upload(&[f32::POISON; 6]);
        let r = g
            .kernels
            .row_sum(&g.stream, Pipeline::default(), &src, l, &mut short);
        assert!(
            matches!(r, Err(Error::BufferTooSmall { needed: 7, .. })),
            "{r:?}"
        );
        // 7 values: not a multiple of 4, and enough.
        let mut exact = g.upload(&[f32::POISON; 7]);
        for (step, p) in pipelines(DEVICE_GRID).enumerate() {
            mark("launch row_sum", step as u64);
            g.kernels
                .row_sum(&g.stream, p, &src, l, &mut exact)
                .expect("row_sum launches into `rows` values");
            let out = g.download(&exact);
            for (r, got) in out.iter().enumerate() {
                let want: f64 = src_h[r * l.pitch as usize..][..5]
                    .iter()
                    .map(|&x| f64::from(x))
                    .sum();
                assert!(
                    (f64::from(*got) - want).abs() <= 1e-5 * want,
                    "{p:?} row {r}: {got} vs {want}"
                );
            }
        }
    });
}
