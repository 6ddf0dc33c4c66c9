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
                 float eps, int64_t rows, int64_t cols, float* out);                         \
  void attention(const AttentionArgs& args);                                                 \
  double int8_peak_macs_per_s(double seconds);                                               \
  }

namespace qrt {
// Multi-head self-attention of one packed batch, fp32. Sequence s owns rows
// [offsets[s], offsets[s+1]) of qkv ([T, 3H]: Q | K | V, heads of head_dim side by side).
// Writes context [T, H] and significance[t] = attention token t receives, summed over
// heads and over the query rows of its own sequence.
struct AttentionArgs {
  const float* qkv = nullptr;
  int64_t num_seqs = 0;
  const int64_t* offsets = nullptr;  // [num_seqs + 1]
  int64_t num_heads = 0, head_dim = 0;
  float* context = nullptr;
  float* significance = nullptr;
  int64_t max_len = 0;       // longest sequence
  int num_workers = 1;       // threads the call may use; scratch is sized for them
  float* scratch = nullptr;  // attention_scratch_floats(...) floats
};
// Per worker contiguous copies of one head's K^T and V and a block of probability rows;
// per head one significance row.
inline int64_t attention_worker_floats(int64_t max_len, int64_t head_dim) {
  return (2 * head_dim + 4) * ((max_len + 15) / 16 * 16) + 64;
}
inline int64_t attention_scratch_floats(int64_t max_len, int64_t num_heads, int64_t head_dim,
                                        int64_t total_rows, int num_workers) {
  return num_workers * attention_worker_floats(max_len, head_dim) + num_heads * total_rows;
}
}  // namespace qrt

QRT_DECLARE_KERNELS(ref)
QRT_DECLARE_KERNELS(avx2)
QRT_DECLARE_KERNELS(avx512vnni)
