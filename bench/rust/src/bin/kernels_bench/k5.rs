//! Benchmark `kernel_k5` (by name, like `kernel_place`): 64 KiB transpose stages and TMA bulk
//! row copies (docs/kernels.md, "64 KiB transpose stages and TMA bulk copies (the experiment)").
//!
//! In one process and against `cuMemcpyDtoD` of 1 GiB, on square matrices of about 1 GiB whose
//! side is whole tiles of every row (f32 16384, bf16 23040: a multiple of 256 elements), every row
//! with thread stores: the 128 x 512 B transposes (real, both types; placement-only, f32; f32 with
//! 8 and 16 KiB item groups), the copy whose TMA transfer is one bulk copy per tile row
//! (`kbv::BulkCopy`), and for comparison the built-in f32 transpose, the 128 x 256 B transposes,
//! the placement-only 64 x 256 B f32 transpose and the built-in copies. Every kernel is checked
//! first: placement-only ones against the CPU block swap on whole tiles, the others on the sweep's
//! two odd-shaped matrices, with poisoned destinations (`WRONG` rows are not timed); and the
//! launcher must refuse a TMA store of a thread-stores-only variant and a placement-only launch
//! on a shape that is not whole tiles, or the program stops.

use super::{
    Config, FromF32, check_place_refused, elem_name, matrix, ok, once, selected, time_checked,
};
use ferrocuda_bench::{Report, die};
use ferrocuda_driver::{Device, DeviceStream, Module};
use ferrocuda_kernels::{
    Element, ItemOrder, Kernels, MatrixLayout, Op, Pipeline, Stages, Store, Transfer,
};
use std::num::NonZeroU32;

/// What runs a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The crate's kernel.
    Builtin,
    /// A transpose variant of the bench cubin.
    Transpose,
    /// A placement-only transpose (`kbv::TileSwap`): whole tiles only.
    Placement,
    /// The copy with TMA bulk row loads (`kbv::BulkCopy`): thread stores only.
    Bulk,
}

/// One row of `kernel_k5` before its kernel is resolved.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: String,
    op: Op,
    kind: Kind,
    /// The bench cubin's kernel (`None`: the built-in one).
    kernel: Option<String>,
    /// (rows, bytes per row) of the tile.
    tile: (u32, u32),
    transfer: Transfer,
    stages: u32,
    /// `Some(132)`: one block per SM of the H200 (`_cap132`).
    max_blocks: Option<u32>,
}

/// One block per SM of the H200.
const ONE_PER_SM: Option<u32> = Some(132);

/// The rows the bundle's `kernel_k5` script always profiles with ncu (xtask/src/bench.rs; a test
/// there checks that it names these); it adds the best 128 x 512 B f32 transpose and its
/// placement-only twin.
#[cfg(test)]
const NCU_ROWS: [&str; 2] = [
    "v_copy2d_r8x2048bulk_ststore_tma_f32_s4_cap132",
    "b_copy2d_ststore_tma_f32_s3_cap132",
];

/// Every row of `kernel_k5` for element type `e` (`"f32"`, `"bf16"`), in running order.
fn rows(e: &str) -> Vec<Row> {
    use Transfer::{CpAsync, Tma};
    let st = Store::Threads.name();
    let mut out = Vec::new();
    let mut push =
        |op: Op, kind: Kind, shape: &str, tile, t: Transfer, n: u32, cap: Option<u32>| {
            let suffix = cap.map_or(String::new(), |c| format!("_cap{c}"));
            let (prefix, shape_tag, kernel) = if kind == Kind::Builtin {
                ("b", String::new(), None)
            } else {
                let k = format!("kbv_{}_{shape}_{}_{e}_s{n}", op.name(), t.name());
                ("v", format!("_{shape}"), Some(k))
            };
            out.push(Row {
                name: format!(
                    "{prefix}_{}{shape_tag}_{st}_{}_{e}_s{n}{suffix}",
                    op.name(),
                    t.name()
                ),
                op,
                kind,
                kernel,
                tile,
                transfer: t,
                stages: n,
                max_blocks: cap,
            });
        };
    let (copy, tr, place, bulk, builtin) = (
        Op::Copy2d,
        Kind::Transpose,
        Kind::Placement,
        Kind::Bulk,
        Kind::Builtin,
    );
    let t = Op::Transpose;
    if e == "f32" {
        // The built-in copies, then the bulk-row TMA copy on both grids.
        push(copy, builtin, "", (8, 2048), CpAsync, 4, ONE_PER_SM);
        push(copy, builtin, "", (8, 2048), Tma, 3, None);
        push(copy, builtin, "", (8, 2048), Tma, 3, ONE_PER_SM);
        for n in [3, 4] {
            for cap in [None, ONE_PER_SM] {
                push(copy, bulk, "r8x2048bulk", (8, 2048), Tma, n, cap);
            }
        }
        // Comparisons: the built-in transpose, 128 x 256 B, placement-only 64 x 256 B.
        for n in [2, 3] {
            for cap in [None, ONE_PER_SM] {
                push(t, builtin, "", (64, 256), CpAsync, n, cap);
            }
        }
        for n in [2, 3] {
            push(t, tr, "r128x256g4096", (128, 256), CpAsync, n, ONE_PER_SM);
        }
        push(t, place, "r64x256g4096place", (64, 256), Tma, 3, ONE_PER_SM);
    } else {
        for n in [2, 3] {
            push(t, tr, "r128x256g4096", (128, 256), CpAsync, n, ONE_PER_SM);
        }
    }
    // 64 KiB stages: one block per SM fits, so the default grid is that.
    for transfer in Transfer::ALL {
        for n in [2, 3] {
            push(t, tr, "r128x512g4096", (128, 512), transfer, n, None);
            if e == "f32" {
                push(
                    t,
                    place,
                    "r128x512g4096place",
                    (128, 512),
                    transfer,
                    n,
                    None,
                );
            }
        }
    }
    if e == "f32" {
        for shape in ["r128x512g8192", "r128x512g16384"] {
            push(t, tr, shape, (128, 512), CpAsync, 2, None);
        }
    }
    out
}

/// The side of the square matrix of `e`: the largest multiple of 256 elements (whole tiles of
/// every row) whose square of `elem_bytes`-byte elements is at most 1 GiB.
fn side(elem_bytes: u32) -> u32 {
    ((1u64 << 30) / u64::from(elem_bytes)).isqrt() as u32 / 256 * 256
}

/// The selected rows for `T`, their kernels resolved in `module` (one variant per kernel), with
/// their kinds and tiles.
fn configs<T: Element>(k: &Kernels, module: &Module) -> Vec<(Config, Kind, (u32, u32))> {
    let mut variants: std::collections::HashMap<String, std::rc::Rc<ferrocuda_kernels::Variant>> =
        std::collections::HashMap::new();
    rows(elem_name::<T>())
        .into_iter()
        .filter(|row| selected(&row.name))
        .map(|row| {
            let variant = row.kernel.as_ref().map(|name| {
                variants
                    .entry(name.clone())
                    .or_insert_with(|| {
                        let (t, n, tile) = (row.transfer, row.stages, row.tile);
                        std::rc::Rc::new(match row.kind {
                            Kind::Placement => {
                                ok(k.placement_variant::<T>(module, name, t, n, tile))
                            }
                            Kind::Bulk => ok(k.variant::<T>(module, name, row.op, t, n, tile, 1))
                                .thread_stores_only(),
                            Kind::Transpose | Kind::Builtin => {
                                ok(k.variant::<T>(module, name, row.op, t, n, tile, tile.0))
                            }
                        })
                    })
                    .clone()
            });
            // Built-in rows list 2..=4 stages only; a variant's own depth is fixed in its kernel.
            let stages = Stages::new(row.stages).unwrap_or(Stages::FOUR);
            let mut pipeline = Pipeline::new(row.transfer, stages)
                .with_store(Store::Threads)
                .with_item_order(ItemOrder::Fixed);
            if let Some(c) = row.max_blocks.and_then(NonZeroU32::new) {
                pipeline = pipeline.with_max_blocks(c);
            }
            let config = Config {
                name: row.name,
                op: row.op,
                variant,
                pipeline,
                promotion: None,
                placement: row.kind == Kind::Placement,
            };
            (config, row.kind, row.tile)
        })
        .collect()
}

/// Stops the program unless the launcher refuses thread-stores-only configuration `c` a TMA
/// store, launching nothing (the destination stays poisoned).
fn check_tma_store_refused<T: Element + FromF32 + PartialEq + Copy>(
    k: &Kernels,
    s: &DeviceStream,
    c: &Config,
) {
    let Some(v) = &c.variant else {
        return;
    };
    let (rows, cols) = (256u32, 1024u32);
    let poison = <T as FromF32>::from_f32(-7777.0);
    let layout = MatrixLayout::aligned::<T>(rows, cols);
    let src = ok(s.clone_htod(&matrix::<T>(layout.span() as usize, 11)));
    let out_layout = if c.op == Op::Transpose {
        MatrixLayout::aligned::<T>(cols, rows)
    } else {
        layout
    };
    let n = out_layout.span() as usize;
    let mut out = ok(s.clone_htod(&vec![poison; n]));
    let p = c.pipeline.with_store(Store::Tma);
    let r = k.launch_variant(s, v, p, None, &src, layout, &mut out, out_layout.pitch);
    let mut got = vec![poison; n];
    ok(s.copy_dtoh(&out, &mut got));
    if !matches!(r, Err(ferrocuda_kernels::Error::ThreadStores { .. }))
        || got.iter().any(|g| *g != poison)
    {
        die(&format!(
            "{}: a launch with TMA stores was not refused ({:?})",
            c.name,
            r.err()
        ));
    }
}

/// The experiment for element type `T` (benchmark `kernel_k5`).
#[allow(clippy::too_many_arguments)]
pub(super) fn run<T: Element + FromF32 + PartialEq + Copy>(
    k: &Kernels,
    dev: &Device,
    s: &DeviceStream,
    r: &mut Report,
    bandwidth: &mut comfy_table::Table,
    module: &Module,
    memcpy_gbs: f64,
) {
    let configs = configs::<T>(k, module);
    if configs.is_empty() {
        return;
    }
    if !once() {
        // The thread-stores-only kernels (a 64 KiB transpose, the bulk copy) refuse TMA stores,
        // the 128 x 512 B placement-only one shapes that are not whole tiles.
        let first = |kind: Kind, tile: (u32, u32)| {
            configs
                .iter()
                .find(|(_, kd, t)| *kd == kind && *t == tile)
                .map(|(c, _, _)| c)
        };
        for c in [
            first(Kind::Transpose, (128, 512)),
            first(Kind::Bulk, (8, 2048)),
        ]
        .into_iter()
        .flatten()
        {
            check_tma_store_refused::<T>(k, s, c);
        }
        if let Some(c) = first(Kind::Placement, (128, 512)) {
            check_place_refused::<T>(k, s, c, 128);
        }
    }
    let n = side(size_of::<T>() as u32);
    let timed = configs.into_iter().map(|(c, kind, tile)| {
        // A placement-only tile is square: its side in elements is its rows.
        let place = (kind == Kind::Placement).then_some(tile.0);
        (c, place)
    });
    time_checked::<T>(k, dev, s, r, bandwidth, memcpy_gbs, "kernel_k5", n, timed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unique_and_every_variant_stores_from_threads() {
        for e in ["f32", "bf16"] {
            let rows = rows(e);
            let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), rows.len(), "{e}: duplicate row names");
            for r in &rows {
                assert!(r.name.contains("_ststore_"), "{}", r.name);
                assert!(
                    r.name.contains(&format!("_{e}_s{}", r.stages)),
                    "{}",
                    r.name
                );
                assert_eq!(r.kernel.is_none(), r.kind == Kind::Builtin, "{}", r.name);
                if let Some(k) = &r.kernel {
                    // The kernel is the row's name without the store and the grid.
                    let base = r.name.replacen("v_", "kbv_", 1).replace("_ststore", "");
                    assert_eq!(base.replace("_cap132", ""), *k);
                }
            }
        }
        // f32: 3 built-in copies, 4 bulk, 4 built-in transposes, 2 + 1 comparisons, 4 + 4 of
        // 128 x 512 B, 2 item groups; bf16: 2 comparisons, 4 of 128 x 512 B.
        assert_eq!(rows("f32").len(), 3 + 4 + 4 + 3 + 8 + 2);
        assert_eq!(rows("bf16").len(), 2 + 4);
    }

    #[test]
    fn every_f32_128x512_transpose_has_a_placement_twin_and_ncu_rows_exist() {
        let rows = rows("f32");
        let has = |n: &str| rows.iter().any(|r| r.name == n);
        for r in rows
            .iter()
            .filter(|r| r.name.starts_with("v_transpose_r128x512g"))
        {
            if r.kind == Kind::Transpose {
                // The script's twin: the group replaced by g4096place.
                let (head, tail) = r.name.split_once("_ststore_").expect("a store in the name");
                let group_at = head.find('g').expect("a group in the shape");
                let twin = format!("{}g4096place_ststore_{tail}", &head[..group_at]);
                assert!(has(&twin), "{} has no twin {twin}", r.name);
            }
        }
        for n in NCU_ROWS {
            assert!(has(n), "{n} is not a kernel_k5 row");
        }
    }

    #[test]
    fn the_side_is_whole_tiles_of_every_row_and_at_most_1_gib() {
        for bytes in [4u32, 2] {
            let n = side(bytes);
            assert_eq!(n % 256, 0);
            assert!(u64::from(n) * u64::from(n) * u64::from(bytes) <= 1 << 30);
            assert!(u64::from(n + 256).pow(2) * u64::from(bytes) > 1 << 30);
        }
        assert_eq!((side(4), side(2)), (16384, 23040));
    }
}
