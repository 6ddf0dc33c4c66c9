// Kernels for the avx512vnni path: kernels_impl.h compiled with this file's flags (CMakeLists.txt).
#include "kernels.h"
#define QRT_ISA_NS avx512vnni
#include "vec_avx512.h"
#include "kernels_impl.h"
