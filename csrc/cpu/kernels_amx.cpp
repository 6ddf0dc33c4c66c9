// Kernels for the amx path: the avx512vnni kernels with the GEMM on AMX tiles (gemm_tiles.h),
// compiled with this file's flags (CMakeLists.txt).
#include "kernels.h"
#define QRT_ISA_NS amx
#include "vec_avx512.h"
#include "tiles_amx.h"
#define QRT_TILES
#include "kernels_impl.h"
