// The ferrocuda_transpose_* entry points: Transpose (ferrocuda/transpose.cuh) at its built-in
// tile.
#include "ferrocuda/transpose.cuh"

FERROCUDA_TILE_KERNELS(transpose, ferrocuda::BuiltinTranspose)
FERROCUDA_TILE_DYNAMIC_KERNELS(transpose, ferrocuda::BuiltinTranspose)
