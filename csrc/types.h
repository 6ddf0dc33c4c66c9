// Plain data shared by the dispatcher, the per-ISA kernels and the encoder.
// Kept free of STL containers: this header is included by translation units compiled
// with different -m flags, and identical inline/template code built for different ISAs
// must never be merged by the linker.
#pragma once
#include <cstdint>

namespace qrt {

// Int32 accumulation bound: K * 255 * 128 must stay below 2^31.
constexpr int64_t kMaxGemmK = 65793;
// Packed weight layout: panels of kPanel output columns; inside a panel, groups of 4
// consecutive k for each column ("VNNI layout"): byte ((p*Kg + g)*kPanel + c)*4 + b
// holds W[p*kPanel + c, 4*g + b] (zero where out of range).
constexpr int64_t kPanel = 64;
// Bytes readable (zero) after a packed weight's last panel: the tile GEMM's last partial 64 k
// load whole 16-row B tiles (gemm_tiles.h).
constexpr int64_t kPackedSlackBytes = 16 * kPanel * 4;

struct PackedView {
  const int8_t* data = nullptr;     // Np * Kg * 4 bytes, 64-byte aligned
  const int32_t* col_sums = nullptr;  // [Np] sum_k W[n, k]
  const float* scales = nullptr;      // [Np] per-output-channel weight scale
  int64_t K = 0, N = 0, Kg = 0, Np = 0;
};

// Threads every parallel kernel uses (dispatch.cpp; settable from Python). A global
// rather than OpenMP's per-thread setting, so calls from any Python thread agree.
int thread_count();

// How many pieces to cut `items` into so that none holds more than `most` and every one of
// `threads` threads gets the same number of them (a static split of equal pieces is even).
namespace {  // internal linkage: kernel sources of every ISA include this (cpu/attention_scratch.h)
inline int64_t even_pieces(int64_t items, int64_t most, int64_t threads) {
  const int64_t per_thread = (items + most * threads - 1) / (most * threads);
  return threads * (per_thread > 0 ? per_thread : 1);
}
}  // namespace

// BF16: v rounded to bfloat16 (ties to even), stored as its 16 bits; tile paths only.
enum class OutKind : int { F32 = 0, U8 = 1, S32 = 2, BF16 = 3 };

// C[m, n] = sum_k (A[m, k] - a_zp[m]) * W[n, k], then the epilogue:
//   S32: store C;  F32/U8: v = C * a_scale[m] * w_scale[n] + bias[n]; gelu(v); v += residual[m, n];
//   F32: store v;  BF16: store bf16(v);  U8: store clamp(round(v / out_scale) + out_zp, 0, 255).
// Output element (m, n) lives at out[m * ldo + n], or with out_split > 0 (not S32; a
// multiple of the vector width) at out[(n / out_split) * out_split_stride + m * ldo +
// n % out_split]: column blocks stored apart, e.g. QKV heads as [3 * heads][rows][head_dim].
struct GemmArgs {
  int64_t M = 0;
  const uint8_t* A = nullptr;
  int64_t lda = 0;
  const float* a_scale = nullptr;   // [M] if a_per_row else [1]
  const int32_t* a_zp = nullptr;    // [M] if a_per_row else [1]
  bool a_per_row = false;
  PackedView W;
  const float* bias = nullptr;      // [N] or null
  bool gelu = false;
  const float* residual = nullptr;  // [M, ldr] or null
  int64_t ldr = 0;
  OutKind out_kind = OutKind::F32;
  void* out = nullptr;
  int64_t ldo = 0;
  float out_scale = 1.f;
  int32_t out_zp = 0;
  int64_t out_split = 0, out_split_stride = 0;
};

// A u8 copy of a kernel's fp32 output, quantized as the next GEMM's input: with a fixed scale
// and zero point, or per row (each row's scale and zero point are then written too), exactly
// as quantize_u8 / quantize_u8_per_row would quantize the fp32 output.
struct U8Output {
  uint8_t* data = nullptr;  // [rows, cols]
  bool per_row = false;
  float scale = 1.f;        // fixed quantization
  int32_t zp = 0;
  float* row_scale = nullptr;  // per-row quantization: [rows] outputs
  int32_t* row_zp = nullptr;
};

// Arithmetic of attention's two products; softmax is fp32 in all three.
//   F32:   fp32 FMA.
//   Int16: Q (per-row scale) x K (per-key scale) and P x V (per-channel scale) as int16 pairs
//          into exact int32 sums (vpdpwssd); context errors ~1e-3 relative.
//   Int8:  Q as u8 (per-row scale, zero point) x K as s8 (per-head scale), probabilities as
//          u8 (per-row scale: row max / 255) x V as s8 (per-channel scales), on the GEMM kernel.
//   BF16:  Q, K, P and V rounded to bf16, products summed in fp32 on tiles (TDPBF16PS); tile
//          paths (amx, amx_emulated) only.
enum class AttentionPrecision { F32, Int16, Int8, BF16 };

}  // namespace qrt
