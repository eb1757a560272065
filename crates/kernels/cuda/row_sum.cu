// The ferrocuda_row_sum_* entry points: RowSum (ferrocuda/row_sum.cuh) at its built-in tile.
#include "ferrocuda/row_sum.cuh"

FERROCUDA_TILE_KERNELS(row_sum, ferrocuda::BuiltinRowSum)
