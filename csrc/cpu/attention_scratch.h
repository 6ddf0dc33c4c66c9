// The per-worker scratch of each attention path, carved by one function per path. The same
// function sizes the scratch (with no memory, at the longest sequence and the largest per-ISA
// blocks: attention_worker_floats) and carves it at run time (at the sequence's own sizes,
// never larger), so the two cannot disagree. ISA-independent: the kernels pass their ISA's
// blocks in.
//
// Internal linkage (the unnamed namespace), like everything a kernel source includes outside
// its ISA namespace: each kernels_<isa>.cpp keeps its own copy, built with its own -m flags. A
// shared inline copy is one copy for the whole module, maybe built with AVX-512 flags, which
// an AVX2 CPU cannot run (tests/test_isa_isolation.py).
#pragma once
#include <cstdint>

#include "../types.h"

namespace qrt {
namespace {

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Hands out 64-byte-aligned arrays one after another from `base`; with base == nullptr it
// only counts the bytes they need (assuming the worst alignment of the base).
class ScratchCarver {
 public:
  explicit ScratchCarver(void* base = nullptr)
      : base_(static_cast<char*>(base)), used_(base ? 0 : 63) {
    if (base_) base_ += (64 - reinterpret_cast<uintptr_t>(base_) % 64) % 64;
  }
  template <class T>
  T* take(int64_t count) {
    used_ = round_up(used_, 64);
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += count * (int64_t)sizeof(T);
    return p;
  }
  int64_t bytes() const { return used_; }

 private:
  char* base_;
  int64_t used_;
};

// fp32: this head's K^T in key blocks, its V rows, `rows` probability rows; np keys.
struct F32AttentionScratch {
  float *kt, *vc, *prob;
};
inline F32AttentionScratch carve_f32_attention(ScratchCarver& c, int64_t np, int64_t d, int64_t rows) {
  F32AttentionScratch s;
  s.kt = c.take<float>(d * np);
  s.vc = c.take<float>(d * np);
  s.prob = c.take<float>(rows * np);
  return s;
}

// int16: `rows` score rows, the scales of Q rows, keys and V channels (dv: d rounded to whole
// vectors), int16 Q, K^T and V in their kernels' layouts, the probabilities in chunks of
// kProbChunk keys, and one converted row.
struct Int16AttentionScratch {
  float *prob, *q_scale, *k_scale, *v_scale;
  int16_t *q16, *kt16, *v16, *p16, *row;
};
inline Int16AttentionScratch carve_int16_attention(ScratchCarver& c, int64_t n, int64_t np, int64_t d, int64_t dv,
                                                   int64_t rows, int64_t prob_chunk) {
  const int64_t pairs = (d + 1) / 2;
  Int16AttentionScratch s;
  s.prob = c.take<float>(rows * np);
  s.q_scale = c.take<float>(n);
  s.k_scale = c.take<float>(np);
  s.v_scale = c.take<float>(dv);
  s.q16 = c.take<int16_t>(n * 2 * pairs);
  s.kt16 = c.take<int16_t>(np * 2 * pairs);
  s.v16 = c.take<int16_t>(np * dv);
  s.p16 = c.take<int16_t>(round_up(np, prob_chunk) * rows);
  s.row = c.take<int16_t>(2 * pairs > dv ? 2 * pairs : dv);
  return s;
}

// INT8 (sized for the longest sequence, max_len): u8 Q, a quantized s8 copy, K and V^T packed
// as GEMM weights (with the slack tile loads may read past them) with their column sums and
// scales, Q's row scales and zero points, `rows` int32/fp32 score rows and u8 probabilities.
struct Int8AttentionScratch {
  uint8_t *q8, *p8;
  int8_t *s8tmp, *kpack, *vpack;
  int32_t *ksum, *vsum, *q_zero;
  float *kscale, *vscale, *q_scale, *scores;
};
inline Int8AttentionScratch carve_int8_attention(ScratchCarver& c, int64_t max_len, int64_t d, int64_t rows) {
  const int64_t np = round_up(max_len, 64), dp = round_up(d, 64);
  const int64_t kg = (d + 3) / 4, ng = (max_len + 3) / 4;
  Int8AttentionScratch s;
  s.q8 = c.take<uint8_t>(max_len * d);
  s.s8tmp = c.take<int8_t>(max_len * d);
  s.kpack = c.take<int8_t>(np * kg * 4 + kPackedSlackBytes);
  s.vpack = c.take<int8_t>(dp * ng * 4 + kPackedSlackBytes);
  s.p8 = c.take<uint8_t>(rows * np);
  s.ksum = c.take<int32_t>(np);
  s.kscale = c.take<float>(np);
  s.vsum = c.take<int32_t>(dp);
  s.vscale = c.take<float>(dp);
  s.q_scale = c.take<float>(np);
  s.q_zero = c.take<int32_t>(np);
  s.scores = c.take<float>(rows * np);
  return s;
}

// bf16 (tile paths): Q, K^T in pairs of dims and V in pairs of keys (np = n rounded to tiles
// of `tile_keys`); `tile_keys` rows of bf16 exponentials (P); two tile_keys x tile_keys
// blocks of scores (one filled while the other is read);
// per row its shift and its sums (a vector of up to 16 floats); per channel the largest |K|;
// per query its score bound; the block's context rows.
struct Bf16AttentionScratch {
  uint16_t *qb, *kv, *vv, *pb;
  float *block, *shift, *sums, *kmax, *qbound, *ctx;
};
inline Bf16AttentionScratch carve_bf16_attention(ScratchCarver& c, int64_t np, int64_t d, int64_t tile_keys) {
  Bf16AttentionScratch s;
  s.qb = c.take<uint16_t>(np * d);
  s.kv = c.take<uint16_t>(np * d);
  s.vv = c.take<uint16_t>(np * d);
  s.pb = c.take<uint16_t>(tile_keys * np);
  s.block = c.take<float>(2 * tile_keys * tile_keys);
  s.shift = c.take<float>(tile_keys);
  s.sums = c.take<float>(tile_keys * 16);
  s.kmax = c.take<float>(d);
  s.qbound = c.take<float>(np);
  s.ctx = c.take<float>(tile_keys * d);
  return s;
}

}  // namespace
}  // namespace qrt
