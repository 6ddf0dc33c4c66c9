// Kernels for the ref path: kernels_impl.h compiled with this file's flags (CMakeLists.txt).
#include "kernels.h"
#define QRT_ISA_NS ref
#include "vec_ref.h"
#include "kernels_impl.h"
