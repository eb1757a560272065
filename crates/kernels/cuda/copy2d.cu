// The ferrocuda_copy2d_* entry points: Copy2d (ferrocuda/copy2d.cuh) at its built-in tile.
#include "ferrocuda/copy2d.cuh"

FERROCUDA_TILE_KERNELS(copy2d, ferrocuda::BuiltinCopy2d)
FERROCUDA_TILE_DYNAMIC_KERNELS(copy2d, ferrocuda::BuiltinCopy2d)
