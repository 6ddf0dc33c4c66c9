// The kernel set every ISA provides. kernels_impl.h defines it once; kernels_<isa>.cpp
// compile that definition with their own -m flags into namespace qrt::cpu::<isa>.
#pragma once
#include "../types.h"

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
  int64_t ld = 0, head_stride = 0, part_stride = 0;
  int64_t num_seqs = 0;
  const int64_t* offsets = nullptr;  // [num_seqs + 1]
  int64_t num_heads = 0, head_dim = 0;
  float* context = nullptr;
  float* significance = nullptr;
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
// Per worker: fp32 path: contiguous K^T and V copies and up to 8 probability rows; int16
// path: int16 Q, K and V in their layouts, their scales, up to 12 score rows and their int16
// probabilities; INT8 path: u8 Q, packed K and V^T with their column sums and scales, a
// score block and its u8 probabilities. Per head one significance row.
// The bf16 attention's bf16 arrays for n keys (attention_tiles.h carves them in this order):
// Q, K^T and V in pairs (n rounded up to 32 each), 32 probability rows, two converted rows.
inline int64_t bf16_attention_halves(int64_t n, int64_t head_dim) {
  const int64_t n32 = (n + 31) / 32 * 32;
  return 3 * n32 * head_dim + 32 * n32 + 2 * head_dim;
}
inline int64_t attention_worker_floats(int64_t max_len, int64_t head_dim) {
  const int64_t np = (max_len + 63) / 64 * 64, dp = (head_dim + 63) / 64 * 64;
  const int64_t kg = (head_dim + 3) / 4, ng = (max_len + 3) / 4;
  const int64_t fp32 = (2 * head_dim + kMaxAttentionRows) * np;
  // + slack: tile paths read whole B tiles past the packed K and V^T (gemm_tiles.h)
  const int64_t int8_bytes = 2 * max_len * head_dim + np * kg * 4 + dp * ng * 4 + kAttentionRowBlock * np + kPackedSlackBytes;
  const int64_t int8 = int8_bytes / 4 + 4 * np + 2 * dp + kAttentionRowBlock * np + 64 + 6 * 16;  // + alignment
  const int64_t np_chunks = (np + kProbChunk - 1) / kProbChunk * kProbChunk;
  const int64_t dp2 = head_dim + 1, int16_halves = 2 * np * dp2 + np * dp + kMaxInt16Rows * np_chunks + dp;
  const int64_t int16 = (kMaxInt16Rows + 2) * np + dp + (int16_halves + 1) / 2;
  const int64_t most = fp32 > int8 ? fp32 : int8;
  // bf16 (tile paths): its bf16 arrays, then 32 score rows and 32 context rows.
  const int64_t n32 = (max_len + 31) / 32 * 32;
  const int64_t bf16 = (bf16_attention_halves(max_len, head_dim) + 1) / 2 + 8 + 32 * n32 + 32 * head_dim + 8;
  const int64_t most2 = most > bf16 ? most : bf16;
  return (most2 > int16 ? most2 : int16) + 64;
}
inline int64_t attention_scratch_floats(int64_t max_len, int64_t num_heads, int64_t head_dim,
                                        int64_t total_rows, int num_workers) {
  return num_workers * attention_worker_floats(max_len, head_dim) + num_heads * total_rows;
}
}  // namespace qrt

QRT_DECLARE_KERNELS(ref)
QRT_DECLARE_KERNELS(avx2)
QRT_DECLARE_KERNELS(avx512vnni)
QRT_DECLARE_KERNELS(amx)
QRT_DECLARE_KERNELS(amx_emulated)
