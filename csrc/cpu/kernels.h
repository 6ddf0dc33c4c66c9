// The kernel set every ISA provides. kernels_impl.h defines it once; kernels_<isa>.cpp
// compile that definition with their own -m flags into namespace qrt::cpu::<isa>.
#pragma once
#include "../types.h"
#include <initializer_list>

#include "attention_scratch.h"

#define QRT_DECLARE_KERNELS(NS)                                                              \
  namespace qrt::cpu::NS {                                                                   \
  void gemm_u8s8(const GemmArgs& args);                                                     \
  void quantize_u8(const float* x, int64_t rows, int64_t cols, float scale, int32_t zp,      \
                   uint8_t* out);                                                            \
  void quantize_u8_per_row(const float* x, int64_t rows, int64_t cols, uint8_t* out,         \
                           float* scales, int32_t* zps);                                     \
  void layernorm(const float* x, const float* residual, const float* gamma, const float* beta, \
                 float eps, int64_t rows, int64_t cols, float* out, const U8Output* u8);     \
  void attention(const AttentionArgs& args);                                                 \
  double int8_peak_macs_per_s(double seconds);                                               \
  double int8_tile_macs_per_s(int64_t K, double seconds);                                    \
  }

namespace qrt {
// Multi-head self-attention of one packed batch. Sequence s owns rows [offsets[s],
// offsets[s+1]); row t of head h's queries starts at qkv + h * head_stride + t * ld, its
// keys and values part_stride and 2 * part_stride floats later (row-major [T, 3H]: ld = 3H,
// head_stride = head_dim, part_stride = H; head-major: ld = head_dim, head_stride = T *
// head_dim, part_stride = heads * T * head_dim). Writes context [T, H] and significance[t] =
// attention token t receives, summed over heads and over the query rows of its own sequence.
struct AttentionArgs {
  const float* qkv = nullptr;
  const uint16_t* qkv_bf16 = nullptr;  // BF16 precision: Q, K and V as bf16 bits, in qkv's place
  int64_t ld = 0, head_stride = 0, part_stride = 0;
  int64_t num_seqs = 0;
  const int64_t* offsets = nullptr;  // [num_seqs + 1]
  int64_t num_heads = 0, head_dim = 0;
  float* context = nullptr;
  float* significance = nullptr;  // [T] out; nullptr: not needed (the layer drops nothing)
  int64_t max_len = 0;       // longest sequence
  int num_workers = 1;       // threads the call may use; scratch is sized for them
  float* scratch = nullptr;  // attention_scratch_floats(...) floats
  AttentionPrecision precision = AttentionPrecision::F32;
};
// Rows of queries the INT8 path handles at once.
constexpr int64_t kAttentionRowBlock = 48;
// Upper bound of every ISA's fp32 query block (kAttentionRows in vec_<isa>.h): sizes scratch.
constexpr int64_t kMaxAttentionRows = 8;
// The same for the int16 path's query block (kInt16Rows), and the keys per chunk of its int16
// probability rows (kernels_impl.h prob16_at).
constexpr int64_t kMaxInt16Rows = 12;
constexpr int64_t kProbChunk = 512;
// Floats in the widest vector of any ISA: column blocks of GemmArgs::out_split must be whole
// vectors of it.
constexpr int64_t kMaxVectorFloats = 16;
// Largest head dim of the int16 attention path (its per-channel maxima live in registers).
constexpr int64_t kMaxInt16HeadDim = 256;
// Keys per tile of the bf16 attention (attention_tiles.h).
constexpr int64_t kTileKeys = 32;
namespace {  // internal linkage, as attention_scratch.h says why
// Floats of one worker's scratch: the largest of the paths' carvings (attention_scratch.h) at
// the longest sequence and every ISA's largest blocks, plus whole vectors read past the last
// array, in whole 64-byte lines.
inline int64_t attention_worker_floats(int64_t max_len, int64_t head_dim) {
  const int64_t np = round_up(max_len, 64), dv = round_up(head_dim, kMaxVectorFloats);
  ScratchCarver f32, int16, int8, bf16;
  carve_f32_attention(f32, np, head_dim, kMaxAttentionRows);
  carve_int16_attention(int16, max_len, np, head_dim, dv, kMaxInt16Rows, kProbChunk);
  carve_int8_attention(int8, max_len, head_dim, kAttentionRowBlock);
  carve_bf16_attention(bf16, round_up(max_len, kTileKeys), head_dim, kTileKeys);
  int64_t most = f32.bytes();
  for (const ScratchCarver* c : {&int16, &int8, &bf16}) most = c->bytes() > most ? c->bytes() : most;
  return round_up(most + 256, 64) / 4;
}
inline int64_t attention_scratch_floats(int64_t max_len, int64_t num_heads, int64_t head_dim,
                                        int64_t total_rows, int num_workers) {
  return num_workers * attention_worker_floats(max_len, head_dim) + num_heads * total_rows;
}
}  // namespace
}  // namespace qrt

QRT_DECLARE_KERNELS(ref)
QRT_DECLARE_KERNELS(avx2)
QRT_DECLARE_KERNELS(avx512vnni)
QRT_DECLARE_KERNELS(amx)
QRT_DECLARE_KERNELS(amx_emulated)
