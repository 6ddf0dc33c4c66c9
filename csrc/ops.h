// Checked entry points for single kernels (used by the Python API and the tests). Each
// validates shapes, then calls the active ISA path. Throws std::invalid_argument.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "packed_weight.h"

namespace qrt {

using Shape = std::vector<int64_t>;

// "(2, 3)", "(5,)": a shape as Python writes it, for error messages.
std::string shape_string(const Shape& s);

struct GemmCall {
  const uint8_t* A; Shape a_shape;                 // [M, K]
  const float* a_scale; const int32_t* a_zp; Shape q_shape;  // [] per tensor, or [M] per row
  const PackedWeight* W;
  const float* bias = nullptr; Shape bias_shape;   // [N]
  bool gelu = false;
  const float* residual = nullptr; Shape residual_shape;  // [M, N]
  OutKind out_kind = OutKind::F32;
  void* out; Shape out_shape;                      // [M, N]
  float out_scale = 1.f; int32_t out_zp = 0;
};
void gemm(const GemmCall& call);

void quantize(const float* x, const Shape& shape, float scale, int32_t zp, uint8_t* out);
void quantize_per_row(const float* x, const Shape& shape, uint8_t* out, float* scales, int32_t* zps);
void layernorm(const float* x, const Shape& x_shape, const float* residual, const Shape& r_shape,
               const float* gamma, const Shape& g_shape, const float* beta, const Shape& b_shape,
               float eps, float* out, const U8Output* u8 = nullptr);

}  // namespace qrt
