//! Benchmark `kernel_grid` (by name, like `kernel_k5`): how the bytes the GPU has in flight and
//! the order in which blocks take their work items set the copy's and the transpose's DRAM
//! efficiency (docs/kernels.md, "Grids and bytes in flight
//! (the experiment)").
//!
//! A pipeline block keeps up to `stages - 1` stages of loads in flight, so the grid and the stage
//! size set how many bytes the GPU's reads have outstanding. The earlier sweeps moved that only in
//! 16 KiB steps per SM; this one moves it finely:
//! - the built-in copies and transposes, both transfers and stores, 2 to 4 stages, on grids of
//!   66 to 132 blocks (at most one per SM), 264, and the launcher's default;
//! - copies with 8 KiB stages (4 rows of 2 KiB, 4 to 8 stages) and 4 KiB stages (2 rows, 6 and 8
//!   stages), the same 1-row TMA boxes, on 88 to 264 blocks;
//! - the 128 x 256 B transposes (32 KiB stages) at 2 and 3 stages on 66 to 132 blocks;
//! - the built-in copies and transposes under dynamic item order (`ItemOrder::Dynamic`, `_dyn`
//!   after the op: each block takes its next item from a counter, so the blocks finish together)
//!   on one and two blocks per SM and the default grid; every other row runs under fixed order.
//!
//! On the matrices of `kernel_bandwidth` (f32 16384², bf16 23170², 1 GiB), each kernel checked
//! on the sweep's two odd-shaped matrices with poisoned destinations before and after its timed
//! launches (`WRONG` rows are not timed). Row names: `<b|v>_<op>[_<shape>]_<store>_<transfer>_<elem>_s<stages>[_cap<grid>]`.

use super::{Config, FromF32, elem_name, ok, selected, time_checked};
use ferrocuda_bench::Report;
use ferrocuda_driver::{Device, DeviceStream, Module};
use ferrocuda_kernels::{Element, ItemOrder, Kernels, Op, Pipeline, Stages, Store, Transfer};
use std::num::NonZeroU32;
use std::rc::Rc;

/// Grids of at most one block per SM of the H200 (132 SMs), then two per SM.
const GRIDS: [u32; 7] = [66, 88, 99, 110, 121, 132, 264];
/// Grids of the smaller-stage copies.
const SMALL_GRIDS: [u32; 4] = [88, 110, 132, 264];
/// Grids of the 32 KiB transposes (two blocks per SM do not fit at 3 stages).
const WIDE_GRIDS: [u32; 4] = [66, 88, 110, 132];

/// One row of `kernel_grid` before its kernel is resolved.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: String,
    op: Op,
    /// The bench cubin's kernel (`None`: the built-in one).
    kernel: Option<String>,
    /// (rows, bytes per row) of the tile.
    tile: (u32, u32),
    transfer: Transfer,
    store: Store,
    stages: u32,
    /// The grid cap (`None`: the launcher's default grid).
    max_blocks: Option<u32>,
    /// Dynamic (`_dyn` after the op in the name) or fixed item order.
    order: ItemOrder,
}

/// Every row of `kernel_grid` for element type `e` (`"f32"`, `"bf16"`), in running order.
fn rows(e: &str) -> Vec<Row> {
    let mut out = Vec::new();
    let mut push = |op: Op,
                    shape: Option<(&str, (u32, u32))>,
                    order: ItemOrder,
                    transfer: Transfer,
                    store: Store,
                    stages: u32,
                    cap: Option<u32>| {
        let suffix = cap.map_or(String::new(), |c| format!("_cap{c}"));
        let dyn_tag = if order == ItemOrder::Dynamic {
            "_dyn"
        } else {
            ""
        };
        let (t, st) = (transfer.name(), store.name());
        let (prefix, shape_tag, kernel, tile) = match shape {
            None => ("b", String::new(), None, (0, 0)),
            Some((s, tile)) => (
                "v",
                format!("_{s}"),
                Some(format!("kbv_{}_{s}_{t}_{e}_s{stages}", op.name())),
                tile,
            ),
        };
        out.push(Row {
            name: format!(
                "{prefix}_{}{dyn_tag}{shape_tag}_{st}_{t}_{e}_s{stages}{suffix}",
                op.name()
            ),
            op,
            kernel,
            tile,
            transfer,
            store,
            stages,
            max_blocks: cap,
            order,
        });
    };
    for op in [Op::Copy2d, Op::Transpose] {
        for transfer in Transfer::ALL {
            for stages in Stages::ALL.map(Stages::get) {
                for store in Store::ALL {
                    // The 4-stage cp.async copy runs on one block per SM whatever the cap
                    // (`Op::max_blocks_per_sm`): its larger grids would repeat the 132 row.
                    let one_per_sm =
                        op == Op::Copy2d && transfer == Transfer::CpAsync && stages == 4;
                    for cap in GRIDS.map(Some).into_iter().chain([None]) {
                        if one_per_sm && cap.is_none_or(|c| c > 132) {
                            continue;
                        }
                        push(op, None, ItemOrder::Fixed, transfer, store, stages, cap);
                    }
                }
            }
        }
    }
    let small: [(&str, (u32, u32), &[u32]); 2] = [
        ("r4x2048i1", (4, 2048), &[4, 5, 6, 7, 8]),
        ("r2x2048i1", (2, 2048), &[6, 8]),
    ];
    for (shape, tile, depths) in small {
        for &stages in depths {
            for transfer in Transfer::ALL {
                for store in Store::ALL {
                    for cap in SMALL_GRIDS {
                        push(
                            Op::Copy2d,
                            Some((shape, tile)),
                            ItemOrder::Fixed,
                            transfer,
                            store,
                            stages,
                            Some(cap),
                        );
                    }
                }
            }
        }
    }
    for stages in [2, 3] {
        for transfer in Transfer::ALL {
            for store in Store::ALL {
                for cap in WIDE_GRIDS {
                    let shape = Some(("r128x256g4096", (128, 256)));
                    let order = ItemOrder::Fixed;
                    push(
                        Op::Transpose,
                        shape,
                        order,
                        transfer,
                        store,
                        stages,
                        Some(cap),
                    );
                }
            }
        }
    }
    // The built-in kernels under dynamic item order, on one and two blocks per SM and the
    // launcher's default grid.
    for op in [Op::Copy2d, Op::Transpose] {
        for transfer in Transfer::ALL {
            for stages in Stages::ALL.map(Stages::get) {
                for store in Store::ALL {
                    for cap in DYNAMIC_GRIDS {
                        push(op, None, ItemOrder::Dynamic, transfer, store, stages, cap);
                    }
                }
            }
        }
    }
    out
}

/// Grids of the dynamic-order kernels: one and two blocks per SM, and the default.
const DYNAMIC_GRIDS: [Option<u32>; 3] = [Some(132), Some(264), None];

/// The selected rows for `T`, their kernels resolved in `module` (one variant per kernel).
fn configs<T: Element>(k: &Kernels, module: &Module) -> Vec<Config> {
    let mut variants = std::collections::HashMap::new();
    rows(elem_name::<T>())
        .into_iter()
        .filter(|row| selected(&row.name))
        .map(|row| {
            let variant = row.kernel.as_ref().map(|name| {
                variants
                    .entry(name.clone())
                    .or_insert_with(|| {
                        // Copies load 1-row TMA boxes, transposes whole-tile ones.
                        let box_rows = if row.op == Op::Copy2d { 1 } else { row.tile.0 };
                        let (t, n, tile) = (row.transfer, row.stages, row.tile);
                        Rc::new(ok(
                            k.variant::<T>(module, name, row.op, t, n, tile, box_rows)
                        ))
                    })
                    .clone()
            });
            // A variant's own depth is fixed in its kernel; `Stages::FOUR` stands in.
            let stages = Stages::new(row.stages).unwrap_or(Stages::FOUR);
            let mut pipeline = Pipeline::new(row.transfer, stages)
                .with_store(row.store)
                .with_item_order(row.order);
            if let Some(c) = row.max_blocks.and_then(NonZeroU32::new) {
                pipeline = pipeline.with_max_blocks(c);
            }
            Config {
                name: row.name,
                op: row.op,
                variant,
                pipeline,
                promotion: None,
                placement: false,
            }
        })
        .collect()
}

/// The experiment for element type `T` (benchmark `kernel_grid`).
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
    // The matrices of `kernel_bandwidth`: the largest square of at most 1 GiB.
    let n = ((1u64 << 30) / size_of::<T>() as u64).isqrt() as u32;
    let timed = configs.into_iter().map(|c| (c, None));
    time_checked::<T>(k, dev, s, r, bandwidth, memcpy_gbs, "kernel_grid", n, timed);
}

/// The rows the bundle's `kernel_grid` script always profiles with ncu (xtask/src/bench.rs; a
/// test there checks that it names these): the built-in TMA copy on one block per SM and on the
/// default grid, and the cp.async copy that meets the copy target.
#[cfg(test)]
const NCU_ROWS: [&str; 3] = [
    "b_copy2d_ststore_tma_f32_s3_cap132",
    "b_copy2d_ststore_tma_f32_s4",
    "b_copy2d_ststore_cpasync_f32_s4_cap132",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unique_and_name_their_kernel_store_and_grid() {
        for e in ["f32", "bf16"] {
            let rows = rows(e);
            let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), rows.len(), "{e}: duplicate row names");
            for r in &rows {
                assert!(
                    r.name.contains(&format!("_{}_", r.store.name())),
                    "{}",
                    r.name
                );
                assert!(
                    r.name.contains(&format!("_{e}_s{}", r.stages)),
                    "{}",
                    r.name
                );
                match r.max_blocks {
                    Some(c) => assert!(r.name.ends_with(&format!("_cap{c}")), "{}", r.name),
                    None => assert!(!r.name.contains("_cap"), "{}", r.name),
                }
                if let Some(k) = &r.kernel {
                    // The kernel is the row's name without the store and the grid.
                    let base = r.name.replacen("v_", "kbv_", 1);
                    let base = base.replace(&format!("_{}", r.store.name()), "");
                    let base = base.split("_cap").next().expect("a name");
                    assert_eq!(base, k);
                }
            }
            // Built-in: 2 ops x 2 transfers x 3 depths x 2 stores x 8 grids, less the 4-stage
            // cp.async copy's 264 and default grids (2 stores x 2); 7 smaller-stage copies x 2
            // transfers x 2 stores x 4 grids; 2 depths x 2 x 2 x 4 wide transposes; the built-in
            // kernels under dynamic order: 2 ops x 2 x 3 x 2 x 3 grids.
            let dynamic = 2 * 2 * 3 * 2 * 3;
            assert_eq!(
                rows.len(),
                2 * 2 * 3 * 2 * 8 - 4 + 7 * 2 * 2 * 4 + 2 * 2 * 2 * 4 + dynamic
            );
        }
    }

    #[test]
    fn the_ncu_rows_exist() {
        let rows = rows("f32");
        for n in NCU_ROWS {
            assert!(
                rows.iter().any(|r| r.name == n),
                "{n} is not a kernel_grid row"
            );
        }
    }
}
