// Kernels for the avx2 path: kernels_impl.h compiled with this file's flags (CMakeLists.txt).
#include "kernels.h"
#define QRT_ISA_NS avx2
#include "vec_avx2.h"
#include "kernels_impl.h"
