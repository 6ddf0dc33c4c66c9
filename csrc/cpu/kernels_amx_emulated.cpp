// Kernels for the amx_emulated path: the tile GEMM of the amx path on the scalar tile
// emulation (tiles_emulated.h) and the reference primitives, so every CPU tests it.
#include "kernels.h"
#define QRT_ISA_NS amx_emulated
#include "vec_ref.h"
#include "tiles_emulated.h"
#define QRT_TILES
#include "kernels_impl.h"
