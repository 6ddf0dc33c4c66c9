#include "ops.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "dispatch.h"

namespace qrt {

std::string shape_string(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

namespace {

void expect(const Shape& got, const Shape& want, const char* what) {
  if (got != want)
    throw std::invalid_argument(std::string(what) + " has shape " + shape_string(got) + ", expected " + shape_string(want));
}

void expect_scale(float scale, const char* what) {
  if (!(scale > 0.f) || scale != scale || scale == INFINITY)
    throw std::invalid_argument(std::string(what) + " must be a positive finite number");
}

void expect_zp(int32_t zp) {
  if (zp < 0 || zp > 255) throw std::invalid_argument("zero point must lie in [0, 255]");
}

}  // namespace

void gemm(const GemmCall& c) {
  const KernelTable& path = kernels();  // one path for the check and the call (set_isa may run beside)
  if (c.a_shape.size() != 2) throw std::invalid_argument("A must be 2-D [M, K], got " + shape_string(c.a_shape));
  const int64_t M = c.a_shape[0], K = c.a_shape[1], N = c.W->N();
  if (K != c.W->K())
    throw std::invalid_argument("A has K = " + std::to_string(K) + " but the weight has K = " + std::to_string(c.W->K()));
  const bool per_row = !c.q_shape.empty();
  if (per_row) expect(c.q_shape, {M}, "per-row scale/zero point");
  for (int64_t i = 0; i < (per_row ? M : 1); ++i) {
    expect_scale(c.a_scale[i], "activation scale");
    expect_zp(c.a_zp[i]);
  }
  if (c.bias) expect(c.bias_shape, {N}, "bias");
  if (c.residual) expect(c.residual_shape, {M, N}, "residual");
  expect(c.out_shape, {M, N}, "output");
  if (c.out_kind == OutKind::U8) { expect_scale(c.out_scale, "output scale"); expect_zp(c.out_zp); }
  if (c.out_kind == OutKind::BF16 && !path.tiles)
    throw std::invalid_argument(std::string("bfloat16 output runs on the tile paths (amx, amx_emulated), not on ") +
                                path.name);
  if (c.out_kind == OutKind::S32 && (c.bias || c.residual || c.gelu))
    throw std::invalid_argument("int32 output is the raw accumulator: no bias, GELU or residual");
  if (M == 0) return;
  GemmArgs a;
  a.M = M; a.A = c.A; a.lda = K;
  a.a_scale = c.a_scale; a.a_zp = c.a_zp; a.a_per_row = per_row;
  a.W = c.W->view();
  a.bias = c.bias; a.gelu = c.gelu; a.residual = c.residual; a.ldr = N;
  a.out_kind = c.out_kind; a.out = c.out; a.ldo = N;
  a.out_scale = c.out_scale; a.out_zp = c.out_zp;
  path.gemm_u8s8(a);
}

void quantize(const float* x, const Shape& shape, float scale, int32_t zp, uint8_t* out) {
  if (shape.size() != 2) throw std::invalid_argument("x must be 2-D, got " + shape_string(shape));
  expect_scale(scale, "scale");
  expect_zp(zp);
  kernels().quantize_u8(x, shape[0], shape[1], scale, zp, out);
}

void quantize_per_row(const float* x, const Shape& shape, uint8_t* out, float* scales, int32_t* zps) {
  if (shape.size() != 2) throw std::invalid_argument("x must be 2-D, got " + shape_string(shape));
  if (shape[1] < 1) throw std::invalid_argument("rows must not be empty");
  kernels().quantize_u8_per_row(x, shape[0], shape[1], out, scales, zps);
}

void layernorm(const float* x, const Shape& x_shape, const float* residual, const Shape& r_shape,
               const float* gamma, const Shape& g_shape, const float* beta, const Shape& b_shape,
               float eps, float* out, const U8Output* u8) {
  if (x_shape.size() != 2) throw std::invalid_argument("x must be 2-D, got " + shape_string(x_shape));
  if (residual) expect(r_shape, x_shape, "residual");
  expect(g_shape, {x_shape[1]}, "gamma");
  expect(b_shape, {x_shape[1]}, "beta");
  if (!(eps > 0.f)) throw std::invalid_argument("eps must be positive");
  if (u8 && !u8->per_row) { expect_scale(u8->scale, "quantization scale"); expect_zp(u8->zp); }
  kernels().layernorm(x, residual, gamma, beta, eps, x_shape[0], x_shape[1], out, u8);
}

}  // namespace qrt
