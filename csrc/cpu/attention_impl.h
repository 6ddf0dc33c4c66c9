// Attention: fp32, int16 and INT8 per (sequence, head), bf16 on tiles, and the parallel driver. Part of kernels_impl.h (included by it, inside namespace qrt::cpu::QRT_ISA_NS,
// after the shared helpers), compiled once per ISA like the rest.

// fp32 attention of one (sequence, head). K^T is stored in blocks of kKeyBlock keys,
// kt[(j / kKeyBlock) * d * kKeyBlock + c * kKeyBlock + j % kKeyBlock], so the score kernel
// reads each block as one contiguous stream.
constexpr int kKeyBlock = 2 * W;
static_assert(64 % kKeyBlock == 0 && kMaxVectorFloats % W == 0, "attention_worker_floats bounds the blocks");
static_assert(kAttentionRows <= kMaxAttentionRows, "attention scratch is sized for kMaxAttentionRows");

// Scores of kAttentionRows query rows (q, row stride ldq; a short block repeats its last
// row) against all n keys: prob[r][j] = q_r . k_j, two key vectors at a time. Kept out of
// line so the accumulators stay in registers (a running row maximum here would push the
// key vectors out of them). kt is padded to whole key blocks, so full-width loads stay in
// bounds; lanes past n are never stored.
__attribute__((noinline)) static void qk_block(const float* kt, int64_t np, int64_t n, int64_t d,
                                               const float* q, int64_t ldq, int rows, float* prob) {
  constexpr int RB = kAttentionRows;
  const float* qp[RB];
  for (int r = 0; r < RB; ++r) qp[r] = q + (r < rows ? r : rows - 1) * ldq;
  int64_t j = 0;
  for (; j + kKeyBlock <= n; j += kKeyBlock) {
    R a[RB], b[RB];
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) a[r] = b[r] = VecF::zero();
    const float* kp = kt + j * d;
    for (int64_t c = 0; c < d; ++c, kp += kKeyBlock) {
      const R ka = VecF::load(kp), kb = VecF::load(kp + W);
#pragma GCC unroll 8
      for (int r = 0; r < RB; ++r) {
        const R x = VecF::set1(qp[r][c]);
        a[r] = VecF::fma(x, ka, a[r]);
        b[r] = VecF::fma(x, kb, b[r]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      VecF::store(prob + r * np + j, a[r]);
      VecF::store(prob + r * np + j + W, b[r]);
    }
  }
  const int64_t full = j;
  for (; j < n; j += W) {  // the last, partial key block
    const int cnt = n - j < W ? (int)(n - j) : W;
    R s[RB];
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) s[r] = VecF::zero();
    const float* kp = kt + full * d + (j - full);
    for (int64_t c = 0; c < d; ++c, kp += kKeyBlock) {
      const R kv = VecF::load(kp);
#pragma GCC unroll 8
      for (int r = 0; r < RB; ++r) s[r] = VecF::fma(VecF::set1(qp[r][c]), kv, s[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) VecF::store(prob + r * np + j, s[r], cnt);
  }
}

// Context of kAttentionRows query rows: ctx[r] = sum_j prob[r][j] * V[j], two value vectors
// at a time where the head is wide enough; only `rows` rows are stored.
__attribute__((noinline)) static void pv_block(const float* vc, int64_t n, int64_t d, const float* prob,
                                               int64_t np, float* ctx, int64_t ldc, int rows) {
  constexpr int RB = kAttentionRows;
  int64_t c = 0;
  for (; c + 2 * W <= d; c += 2 * W) {
    R a[RB], b[RB];
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) a[r] = b[r] = VecF::zero();
    const float* vp = vc + c;
    for (int64_t j = 0; j < n; ++j, vp += d) {
      const R va = VecF::load(vp), vb = VecF::load(vp + W);
#pragma GCC unroll 8
      for (int r = 0; r < RB; ++r) {
        const R p = VecF::set1(prob[r * np + j]);
        a[r] = VecF::fma(p, va, a[r]);
        b[r] = VecF::fma(p, vb, b[r]);
      }
    }
    for (int r = 0; r < rows; ++r) {
      VecF::store(ctx + r * ldc + c, a[r]);
      VecF::store(ctx + r * ldc + c + W, b[r]);
    }
  }
  for (; c < d; c += W) {
    const int cnt = d - c < W ? (int)(d - c) : W;
    R s[RB];
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) s[r] = VecF::zero();
    const float* vp = vc + c;
    for (int64_t j = 0; j < n; ++j, vp += d) {
      const R vv = VecF::load(vp, cnt);
#pragma GCC unroll 8
      for (int r = 0; r < RB; ++r) s[r] = VecF::fma(VecF::set1(prob[r * np + j]), vv, s[r]);
    }
    for (int r = 0; r < rows; ++r) VecF::store(ctx + r * ldc + c, s[r], cnt);
  }
}

// exp(scale * (x - m)) in place over one row of n scores whose maximum is m; returns the
// row's sum. Computed as 2^(x * sl - m * sl), log2(e) folded into the scale.
static float exp_row(float* pr, int64_t n, float m, float scale) {
  const int64_t nw = n / W * W;  // whole vectors; then one partial one
  R sum = VecF::zero();
  const float sl = scale * kLog2e;
  const R sv = VecF::set1(sl), msv = VecF::set1(-m * sl);
  auto exp_step = [&](int64_t j, int cnt) __attribute__((always_inline)) {
    R e = exp2_vec<VecF>(VecF::fma(load_n(pr + j, cnt), sv, msv), 0);
    if (cnt < W) e = VecF::keep(e, cnt);
    store_n(pr + j, e, cnt);
    sum = VecF::add(sum, e);
  };
  for (int64_t j = 0; j < nw; j += W) exp_step(j, W);
  if (nw < n) exp_step(nw, (int)(n - nw));
  return VecF::reduce_add(sum);
}

static float row_max(const float* x, int64_t n) {
  float m;
  extrema<false>(x, n, -INFINITY, &m, nullptr);
  return m;
}

// This head's significance partials of sequence s, zeroed; nullptr when the caller needs no
// significance (no token of the layer is dropped), and then the heads skip its sums.
static float* head_significance(const AttentionArgs& a, int64_t s, int64_t h) {
  if (!a.significance) return nullptr;
  const int64_t off = a.offsets[s], n = a.offsets[s + 1] - off;
  float* sig = a.significance + h * a.offsets[a.num_seqs] + off;
  std::fill(sig, sig + n, 0.f);
  return sig;
}

// In-place stable softmax of one row of scores times `scale`; adds the probabilities to sig
// (significance) unless it is nullptr.
__attribute__((noinline)) static void softmax_row(float* pr, int64_t n, float scale, float* sig) {
  const int64_t nw = n / W * W;
  const R inv = VecF::set1(1.f / exp_row(pr, n, row_max(pr, n), scale));
  auto normalize_step = [&](int64_t j, int cnt) __attribute__((always_inline)) {
    const R p = VecF::mul(load_n(pr + j, cnt), inv);
    store_n(pr + j, p, cnt);
    if (sig) store_n(sig + j, VecF::add(load_n(sig + j, cnt), p), cnt);
  };
  for (int64_t j = 0; j < nw; j += W) normalize_step(j, W);
  if (nw < n) normalize_step(nw, (int)(n - nw));
}

// One (sequence, head): scores for blocks of kAttentionRows query rows against K^T, stable
// softmax (with the 1/sqrt(d) scale), significance partials, then probabilities x V.
static void attention_head(const AttentionArgs& a, int64_t s, int64_t h, float* work) {
  constexpr int RB = kAttentionRows;
  const int64_t off = a.offsets[s], n = a.offsets[s + 1] - off;
  const int64_t d = a.head_dim, H = a.num_heads * d, ld = a.ld;
  const int64_t np = round_up(n, kKeyBlock);
  ScratchCarver carver(work);
  const F32AttentionScratch w = carve_f32_attention(carver, np, d, RB);
  float* kt = w.kt;      // [np / kKeyBlock][d][kKeyBlock], this head's K^T
  float* vc = w.vc;      // [n][d], this head's V rows, contiguous
  float* prob = w.prob;  // [RB][np]
  float* sig = head_significance(a, s, h);  // this head's partials
  const float* q = a.qkv + h * a.head_stride + off * ld;
  const float* k = q + a.part_stride;
  const float* v = k + a.part_stride;
  const float scale = 1.f / std::sqrt((float)d);
  for (int64_t j = 0; j < n; ++j) {
    float* dst = kt + (j / kKeyBlock) * d * kKeyBlock + j % kKeyBlock;
    for (int64_t c = 0; c < d; ++c) dst[c * kKeyBlock] = k[j * ld + c];
  }
  for (int64_t j = 0; j < n; ++j) std::memcpy(vc + j * d, v + j * ld, sizeof(float) * d);
  for (int64_t i0 = 0; i0 < n; i0 += RB) {
    const int rows = n - i0 < RB ? (int)(n - i0) : RB;
    qk_block(kt, np, n, d, q + i0 * ld, ld, rows, prob);
    for (int r = 0; r < rows; ++r) softmax_row(prob + r * np, n, scale, sig);
    pv_block(vc, n, d, prob, np, a.context + (off + i0) * H + h * d, H, rows);
  }
}

#ifdef QRT_TILES
#include "attention_tiles.h"
#endif

// int16 attention: the fp32 path's loop structure with both products on int16 pairs
// (vpdpwssd / vpmaddwd: twice the multiply-adds per instruction of an fp32 FMA) and exact
// int32 sums. Q is scaled per row and K per key to +-qk_bound(d), so a head_dim-long dot
// product stays within int32; the probabilities (normalized, so they sum to 1) and V (per
// channel) to +-32767, so P V stays below 32767 * (32767 + n / 2) < 2^31 for n < 65534.
using S = VecS16::reg;

// The largest B with d * B^2 <= INT32_MAX (at most 32767).
static int32_t qk_bound(int64_t d) {
  int64_t b = (int64_t)std::sqrt((double)INT32_MAX / (double)d);
  while (b * b * d > INT32_MAX) --b;
  return (int32_t)(b < 32767 ? b : 32767);
}

// Scores of kScoreRows query rows (qp: int16, `pairs` channel pairs each) against one block
// of KV vectors of keys (kp: [pair][KV * W keys][2]), times the key scales, into prob (row
// stride np). The 24 accumulators and 4 key vectors fill the register file: the row maxima
// are left to the softmax (kept here, they were spilled and reloaded every block).
template <int KV>
__attribute__((always_inline)) static inline void qk16_keys(const int16_t* kp, int64_t pairs,
                                                            const int16_t* const* qp, const float* k_scale,
                                                            float* prob, int64_t np) {
  constexpr int RB = kScoreRows;
  S acc[RB][KV];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < KV; ++v) acc[r][v] = VecS16::zero();
  for (int64_t c = 0; c < pairs; ++c, kp += 2 * KV * W) {
    S k[KV];
#pragma GCC unroll 4
    for (int v = 0; v < KV; ++v) k[v] = VecS16::load(kp + 2 * W * v);
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const S x = VecS16::set1_pair(qp[r] + 2 * c);
#pragma GCC unroll 4
      for (int v = 0; v < KV; ++v) acc[r][v] = VecS16::dot2(acc[r][v], x, k[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < KV; ++v)
      VecF::store(prob + r * np + v * W, VecF::mul(VecS16::to_f32(acc[r][v]), VecF::load(k_scale + v * W)));
}

// Scores of kScoreRows query rows (int16, `pairs` channel pairs, row stride ldq) against all
// keys of kt ([block][pair][key][2] in blocks of kScoreKeys keys; the last block holds the
// rest, rounded up to whole vectors: np keys in all), times the key scales (the row scale is
// left to the softmax). prob rows (stride np) get all np scores. A short block repeats its
// last row into prob's spare rows (constant indices keep the accumulators in registers).
constexpr int kScoreKeys = kScoreKeyVectors * W;
__attribute__((noinline)) static void qk16_block(const int16_t* kt, int64_t np, int64_t pairs, const int16_t* q,
                                                 int64_t ldq, const float* k_scale, int rows, float* prob) {
  constexpr int RB = kScoreRows;
  const int16_t* qp[RB];
  for (int r = 0; r < RB; ++r) qp[r] = q + (r < rows ? r : rows - 1) * ldq;
  int64_t j = 0;
  for (; j + kScoreKeys <= np; j += kScoreKeys)
    qk16_keys<kScoreKeyVectors>(kt + j * 2 * pairs, pairs, qp, k_scale + j, prob + j, np);
  if (j < np)  // np - j keys, fewer than a block (short rows would waste up to 3/4 of it)
    with_constant<kScoreKeyVectors - 1>((int)((np - j) / W), [&](auto kv) {
      qk16_keys<decltype(kv)::value>(kt + j * 2 * pairs, pairs, qp, k_scale + j, prob + j, np);
    });
}

// int16 probabilities of a block of kInt16Rows query rows, laid out so that every row is the
// same compile-time distance from the next: keys in chunks of kProbChunk, [chunk][row][key].
// The P x V loop then reaches all rows from one pointer (a pointer per row ran out of
// general registers at 12 rows).
static inline int16_t* prob16_at(int16_t* p16, int64_t r, int64_t j) {
  return p16 + (j / kProbChunk) * kInt16Rows * kProbChunk + r * kProbChunk + j % kProbChunk;
}

// Softmax of `rows` rows of scores (stride np) times their per-row scales, as int16
// probabilities round(p * 32767) into p16 (prob16_at's layout; an odd n gets a zero key so
// whole pairs can be read); all rows' probabilities are added to sig (significance, unless
// nullptr) in one pass.
__attribute__((noinline)) static void softmax_rows_s16(float* prob, int64_t np, int64_t n, int rows,
                                                       const float* scale, float* sig, int16_t* p16) {
  float inv[kInt16Rows];
  for (int r = 0; r < rows; ++r) {
    float* pr = prob + r * np;
    inv[r] = 1.f / exp_row(pr, n, row_max(pr, n), scale[r]);
  }
  auto step = [&](int64_t j, int cnt) __attribute__((always_inline)) {
    R acc = VecF::zero();
    int16_t* out = prob16_at(p16, 0, j);  // chunks hold whole vectors
    for (int r = 0; r < rows; ++r, out += kProbChunk) {
      const R e = load_n(prob + r * np + j, cnt);
      VecF::store_s16(out, VecF::mul(e, VecF::set1(inv[r] * 32767.f)), cnt);
      if (sig) acc = VecF::fma(e, VecF::set1(inv[r]), acc);
    }
    if (sig) store_n(sig + j, VecF::add(load_n(sig + j, cnt), acc), cnt);
  };
  const int64_t nw = n / W * W;
  for (int64_t j = 0; j < nw; j += W) step(j, W);
  if (nw < n) step(nw, (int)(n - nw));
  for (int r = 0; r < rows && (n & 1); ++r) *prob16_at(p16, r, n) = 0;
}

// Context of RB query rows from int16 probabilities (prob16_at's layout) and V ([key pair]
// [channel][2], dv channels): ctx[r][c] = v_scale[c] * sum_j p[r][j] * V[j][c]; only `rows`
// rows and d channels stored (rows past them read stale probabilities). A block's last few
// rows take RB = kScoreRows, not all kInt16Rows.
template <int RB>
__attribute__((noinline)) static void pv16_block(const int16_t* v, int64_t n, int64_t d, int64_t dv,
                                                 const int16_t* p16, const float* v_scale, float* ctx,
                                                 int64_t ldc, int rows) {
  constexpr int64_t kChunkPairs = kProbChunk / 2;
  const int64_t pairs = (n + 1) / 2;
  for (int64_t c = 0; c < dv; c += 2 * W) {
    const bool two = c + W < dv;  // a second vector of channels
    S a[RB], b[RB];
#pragma GCC unroll 12
    for (int r = 0; r < RB; ++r) a[r] = b[r] = VecS16::zero();
    for (int64_t j0 = 0; j0 < pairs; j0 += kChunkPairs) {
      const int64_t j1 = pairs - j0 < kChunkPairs ? pairs : j0 + kChunkPairs;
      const int16_t* pj = p16 + (j0 / kChunkPairs) * kInt16Rows * kProbChunk;
      const int16_t* vp = v + 2 * c + j0 * 2 * dv;
      if (two) {
        for (int64_t j = j0; j < j1; ++j, pj += 2, vp += 2 * dv) {
          const S va = VecS16::load(vp), vb = VecS16::load(vp + 2 * W);
#pragma GCC unroll 12
          for (int r = 0; r < RB; ++r) {
            const S x = VecS16::set1_pair(pj + r * kProbChunk);
            a[r] = VecS16::dot2(a[r], x, va);
            b[r] = VecS16::dot2(b[r], x, vb);
          }
        }
      } else {
        for (int64_t j = j0; j < j1; ++j, pj += 2, vp += 2 * dv) {
          const S va = VecS16::load(vp);
#pragma GCC unroll 12
          for (int r = 0; r < RB; ++r) a[r] = VecS16::dot2(a[r], VecS16::set1_pair(pj + r * kProbChunk), va);
        }
      }
    }
    const int na = d - c < W ? (int)(d - c) : W, nb = d - c - W < W ? (int)(d - c - W) : W;
    const R sa = VecF::load(v_scale + c), sb = two ? VecF::load(v_scale + c + W) : sa;
#pragma GCC unroll 12
    for (int r = 0; r < RB; ++r) {  // constant indices: the accumulators stay in registers
      if (r >= rows) break;
      VecF::store(ctx + r * ldc + c, VecF::mul(VecS16::to_f32(a[r]), sa), na);
      if (nb > 0) VecF::store(ctx + r * ldc + c + W, VecF::mul(VecS16::to_f32(b[r]), sb), nb);
    }
  }
}

constexpr int64_t kMaxHeadVectors = kMaxInt16HeadDim / W;

static float abs_max(const float* x, int64_t n) {
  R m = VecF::zero();
  for (int64_t c = 0; c < n; c += W) {
    const int cnt = n - c < W ? (int)(n - c) : W;
    m = VecF::max(m, VecF::abs(VecF::load(x + c, cnt)));
  }
  return VecF::reduce_max(m);
}

// x[0, n) * inv as int16 into out[0, n_pad), zeros after n.
static void to_s16(const float* x, int64_t n, int64_t n_pad, float inv, int16_t* out) {
  const R iv = VecF::set1(inv);
  for (int64_t c = 0; c < n; c += W) {
    const int cnt = n - c < W ? (int)(n - c) : W;
    VecF::store_s16(out + c, VecF::mul(VecF::load(x + c, cnt), iv), cnt);
  }
  for (int64_t c = n; c < n_pad; ++c) out[c] = 0;
}

// One (sequence, head) of int16 attention: quantize Q, K, V into their layouts, then per
// block of kInt16Rows queries: scores, softmax (+ significance), probabilities x V.
static_assert(kInt16Rows % kScoreRows == 0 && kInt16Rows <= kMaxInt16Rows, "int16 attention row blocks");
static_assert(kProbChunk % W == 0, "probability chunks hold whole vectors");
// The int16 operands of one (sequence, head): Q and K scaled per row to +-qk_bound(d) (Q's
// scale folding in 1/sqrt(d)), K^T in qk16_block's layout (keys n..np zero), V in pairs of
// consecutive keys with a scale per channel; v_scale ends as the output scale.
static void s16_operands(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t np,
                         int64_t d, int64_t dv, const Int16AttentionScratch& w) {
  const int64_t pairs = (d + 1) / 2;
  float *q_scale = w.q_scale, *k_scale = w.k_scale, *v_scale = w.v_scale;
  int16_t *q16 = w.q16, *kt16 = w.kt16, *v16 = w.v16, *row = w.row;
  const float bound = (float)qk_bound(d), inv_sqrt_d = 1.f / std::sqrt((float)d);
  // One pass over the rows for Q, K and the channel maxima of V. In the row-major layout rows
  // are 3H floats apart, too far for the hardware prefetchers: prefetch 8 rows ahead.
  R vmax[kMaxHeadVectors];
  const int64_t dvec = (d + W - 1) / W;
  for (int64_t c = 0; c < dvec; ++c) vmax[c] = VecF::zero();
  for (int64_t j = 0; j < np; ++j) {
    const int64_t b0 = j / kScoreKeys * kScoreKeys, bw = np - b0 < kScoreKeys ? np - b0 : kScoreKeys;  // j's block
    int32_t* dst = reinterpret_cast<int32_t*>(kt16 + b0 * 2 * pairs) + (j - b0);
    if (j < n) {
      for (int64_t c = 0; j + 8 < n && c < d; c += 16) {
        __builtin_prefetch(q + (j + 8) * ld + c);
        __builtin_prefetch(k + (j + 8) * ld + c);
        __builtin_prefetch(v + (j + 8) * ld + c);
      }
      const float mq = abs_max(q + j * ld, d), qs = mq > 0.f ? mq / bound : 1.f;
      q_scale[j] = qs * inv_sqrt_d;
      to_s16(q + j * ld, d, 2 * pairs, 1.f / qs, q16 + j * 2 * pairs);
      const float mk = abs_max(k + j * ld, d), ks = mk > 0.f ? mk / bound : 1.f;
      k_scale[j] = ks;
      to_s16(k + j * ld, d, 2 * pairs, 1.f / ks, row);
      for (int64_t c = 0; c < dvec; ++c) {
        const int cnt = d - c * W < W ? (int)(d - c * W) : W;
        vmax[c] = VecF::max(vmax[c], VecF::abs(VecF::load(v + j * ld + c * W, cnt)));
      }
    } else {  // padding keys of the last block
      k_scale[j] = 0.f;
      for (int64_t c = 0; c < 2 * pairs; ++c) row[c] = 0;
    }
    for (int64_t c = 0; c < pairs; ++c) std::memcpy(dst + c * bw, row + 2 * c, 4);
  }
  for (int64_t c = 0; c < dvec; ++c) VecF::store(v_scale + c * W, vmax[c]);
  // v_scale: first 32767 / channel max (to quantize), then channel max / 32767^2 (the output
  // scale, with the probabilities' 1 / 32767).
  for (int64_t c = 0; c < d; ++c) v_scale[c] = v_scale[c] > 0.f ? 32767.f / v_scale[c] : 1.f;
  // V as int16 pairs of consecutive keys ([key pair][channel][2]); an odd n pairs its last
  // key with a zero one. Channels d..dv are zero (masked loads).
  for (int64_t j = 0; j < n; j += 2) {
    int16_t* dst = v16 + j * dv;
    for (int64_t c = 0; c < dv; c += W) {
      const int cnt = d - c < W ? (int)(d - c) : W;
      const R s = load_n(v_scale + c, cnt);
      const R lo = VecF::mul(load_n(v + j * ld + c, cnt), s);
      const R hi = j + 1 < n ? VecF::mul(load_n(v + (j + 1) * ld + c, cnt), s) : VecF::zero();
      VecS16::store_pairs(dst + 2 * c, lo, hi);
    }
  }
  for (int64_t c = 0; c < d; ++c) v_scale[c] = 1.f / (v_scale[c] * 32767.f);
}

static void attention_head_s16(const AttentionArgs& a, int64_t s, int64_t h, float* work) {
  constexpr int RB = kInt16Rows;
  const int64_t off = a.offsets[s], n = a.offsets[s + 1] - off;
  const int64_t d = a.head_dim, H = a.num_heads * d, ld = a.ld;
  constexpr int64_t kAlign = W % 2 ? 2 * W : W;  // whole vectors and whole key pairs (for V)
  static_assert(64 % kAlign == 0, "attention_worker_floats rounds keys to 64");
  const int64_t np = round_up(n, kAlign);
  const int64_t pairs = (d + 1) / 2, dv = round_up(d, W);
  ScratchCarver carver(work);
  const Int16AttentionScratch w = carve_int16_attention(carver, n, np, d, dv, RB, kProbChunk);
  float* sig = head_significance(a, s, h);
  const float* q = a.qkv + h * a.head_stride + off * ld;
  s16_operands(q, q + a.part_stride, q + 2 * a.part_stride, ld, n, np, d, dv, w);
  for (int64_t i0 = 0; i0 < n; i0 += RB) {
    const int rows = n - i0 < RB ? (int)(n - i0) : RB;
    for (int r0 = 0; r0 < rows; r0 += kScoreRows)
      qk16_block(w.kt16, np, pairs, w.q16 + (i0 + r0) * 2 * pairs, 2 * pairs, w.k_scale,
                 rows - r0 < kScoreRows ? rows - r0 : kScoreRows, w.prob + r0 * np);
    softmax_rows_s16(w.prob, np, n, rows, w.q_scale + i0, sig, w.p16);
    float* ctx = a.context + (off + i0) * H + h * d;
    if (rows <= kScoreRows) pv16_block<kScoreRows>(w.v16, n, d, dv, w.p16, w.v_scale, ctx, H, rows);
    else pv16_block<kInt16Rows>(w.v16, n, d, dv, w.p16, w.v_scale, ctx, H, rows);
  }
}

// Packs int8 W[n, k] = src[n * stride_n + k * stride_k] into the panel layout of types.h,
// with column sums; used for the per-head K and V^T.
static void pack_s8(const int8_t* src, int64_t N, int64_t K, int64_t stride_n, int64_t stride_k,
                    int8_t* dst, int32_t* col_sums, int64_t Np) {
  const int64_t Kg = (K + 3) / 4;
  if (Np > 0 && Kg > 0) std::memset(dst, 0, static_cast<size_t>(Np * Kg * 4));
  for (int64_t n = 0; n < Np; ++n) col_sums[n] = 0;
  for (int64_t n = 0; n < N; ++n) {
    int8_t* panel = dst + (n / kPanel) * Kg * kPanel * 4 + (n % kPanel) * 4;
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int8_t v = src[n * stride_n + k * stride_k];
      panel[(k / 4) * kPanel * 4 + k % 4] = v;
      sum += v;
    }
    col_sums[n] = sum;
  }
}

// The INT8 operands of one (sequence, head): Q as u8 with a scale and zero point per row
// (folding in 1/sqrt(d)); K as s8 with one scale (returned), V as s8 with one scale per
// channel, both packed as GEMM weights (K for Q K^T, V^T for P V) with their column sums.
static float int8_operands(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t max_len,
                           int64_t d, const Int8AttentionScratch& w) {
  const int64_t np = round_up(max_len, 64), dp = round_up(d, 64);
  uint8_t* q8 = w.q8;
  int8_t* s8tmp = w.s8tmp;
  float *q_scale = w.q_scale, *kscale = w.kscale, *vscale = w.vscale;
  int32_t* q_zero = w.q_zero;
  // K and V are quantized into s8tmp, then packed.
  const float inv_sqrt_d = 1.f / std::sqrt((float)d);
  R kmax_v = VecF::zero();
  for (int64_t i = 0; i < n; ++i) {
    R lo = VecF::zero(), hi = VecF::zero();
    for (int64_t c = 0; c < d; c += W) {
      const int cnt = d - c < W ? (int)(d - c) : W;
      const R x = VecF::load(q + i * ld + c, cnt);
      lo = VecF::min(lo, x);
      hi = VecF::max(hi, x);
      kmax_v = VecF::max(kmax_v, VecF::abs(VecF::load(k + i * ld + c, cnt)));
    }
    const float mn = -VecF::reduce_max(VecF::sub(VecF::zero(), lo)), mx = VecF::reduce_max(hi);
    const float qs = mx > mn ? (mx - mn) / 255.f : 1.f;
    const int32_t qz = (int32_t)std::nearbyint(-mn / qs);
    const R inv = VecF::set1(1.f / qs), z = VecF::set1((float)qz);
    for (int64_t c = 0; c < d; c += W) {
      const int cnt = d - c < W ? (int)(d - c) : W;
      VecF::store_u8(q8 + i * d + c, VecF::add(VecF::round(VecF::mul(VecF::load(q + i * ld + c, cnt), inv)), z), cnt);
    }
    q_scale[i] = qs * inv_sqrt_d;
    q_zero[i] = qz;
  }
  const float kmax = VecF::reduce_max(kmax_v);
  const float ks = kmax > 0.f ? kmax / 127.f : 1.f;
  const R kinv = VecF::set1(1.f / ks);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < d; c += W) {
      const int cnt = d - c < W ? (int)(d - c) : W;
      VecF::store_s8(s8tmp + j * d + c, VecF::mul(VecF::load(k + j * ld + c, cnt), kinv), cnt);
    }
  pack_s8(s8tmp, n, d, d, 1, w.kpack, w.ksum, np);
  for (int64_t c = 0; c < dp; ++c) vscale[c] = 0.f;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < d; c += W) {
      const int cnt = d - c < W ? (int)(d - c) : W;
      VecF::store(vscale + c, VecF::max(VecF::load(vscale + c, cnt), VecF::abs(VecF::load(v + j * ld + c, cnt))), cnt);
    }
  for (int64_t c = 0; c < dp; ++c) vscale[c] = vscale[c] > 0.f ? vscale[c] / 127.f : 1.f;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < d; c += W) {
      const int cnt = d - c < W ? (int)(d - c) : W;
      VecF::store_s8(s8tmp + j * d + c, VecF::div(VecF::load(v + j * ld + c, cnt), VecF::load(vscale + c, cnt)), cnt);
    }
  pack_s8(s8tmp, d, n, 1, d, w.vpack, w.vsum, dp);
  for (int64_t j = 0; j < np; ++j) kscale[j] = 1.f;  // unused: scores leave the GEMM as int32
  return ks;
}

// Rows [i0, i0 + rows) of int32 scores (w.scores, row stride np) to u8 probabilities (w.p8,
// row stride n4) with their row scales, adding to the significance.
static void int8_probabilities(const Int8AttentionScratch& w, int64_t i0, int64_t rows, int64_t n, int64_t np,
                               int64_t n4, float ks, float* sig, float* p_scale, int32_t* p_zero) {
  float *scores = w.scores, *q_scale = w.q_scale;
  uint8_t* p8 = w.p8;
  // Softmax in three passes over each row of int32 scores: scale + max; e = exp(s - max)
  // and its sum; then significance += e / sum and u8 probabilities e * 255 (the largest
  // probability is 1 / sum, so e * 255 uses the whole u8 range; row scale 1 / (255 sum)).
  for (int64_t r = 0; r < rows; ++r) {
    float* pr = scores + r * np;
    const R sc = VecF::set1(q_scale[i0 + r] * ks);
    R mx = VecF::set1(-INFINITY);
    for (int64_t j = 0; j < n; j += W) {
      const int cnt = n - j < W ? (int)(n - j) : W;
      const R x = VecF::mul(VecF::from_i32(reinterpret_cast<const int32_t*>(pr) + j), sc);
      VecF::store(pr + j, x, cnt);
      if (cnt == W) mx = VecF::max(mx, x);
    }
    float m = VecF::reduce_max(mx);
    for (int64_t j = n / W * W; j < n; ++j) m = pr[j] > m ? pr[j] : m;
    const float inv_sum = 1.f / exp_row(pr, n, m, 1.f);
    const R is = VecF::set1(inv_sum), s255 = VecF::set1(255.f);
    uint8_t* p8r = p8 + r * n4;
    for (int64_t j = 0; j < n; j += W) {
      const int cnt = n - j < W ? (int)(n - j) : W;
      const R e = VecF::load(pr + j, cnt);
      if (sig) VecF::store(sig + j, VecF::fma(e, is, VecF::load(sig + j, cnt)), cnt);
      VecF::store_u8(p8r + j, VecF::mul(e, s255), cnt);
    }
    for (int64_t j = n; j < n4; ++j) p8r[j] = 0;
    p_scale[r] = inv_sum / 255.f;
    p_zero[r] = 0;
  }
}

// One (sequence, head) on the INT8 GEMM kernel, in blocks of kAttentionRowBlock query rows.
static void attention_head_int8(const AttentionArgs& a, int64_t s, int64_t h, float* work) {
  const int64_t off = a.offsets[s], n = a.offsets[s + 1] - off;
  const int64_t d = a.head_dim, H = a.num_heads * d, ld = a.ld;
  const int64_t np = round_up(a.max_len, 64), dp = round_up(d, 64), kg = (d + 3) / 4;
  ScratchCarver carver(work);
  const Int8AttentionScratch w = carve_int8_attention(carver, a.max_len, d, kAttentionRowBlock);
  const float* q = a.qkv + h * a.head_stride + off * ld;
  float* sig = head_significance(a, s, h);
  const float ks = int8_operands(q, q + a.part_stride, q + 2 * a.part_stride, ld, n, a.max_len, d, w);

  float p_scale[kAttentionRowBlock];
  int32_t p_zero[kAttentionRowBlock];
  const int64_t n4 = (n + 3) / 4 * 4;  // u8 probability rows padded to whole k-groups
  for (int64_t i0 = 0; i0 < n; i0 += kAttentionRowBlock) {
    const int64_t rows = n - i0 < kAttentionRowBlock ? n - i0 : kAttentionRowBlock;
    GemmArgs g;  // scores = Q_block K^T
    g.M = rows; g.A = w.q8 + i0 * d; g.lda = d;
    g.a_scale = w.q_scale + i0; g.a_zp = w.q_zero + i0; g.a_per_row = true;
    g.W.data = w.kpack; g.W.col_sums = w.ksum; g.W.scales = w.kscale;
    g.W.K = d; g.W.N = n; g.W.Kg = kg; g.W.Np = (n + 63) / 64 * 64;
    g.out_kind = OutKind::S32; g.out = w.scores; g.ldo = np;  // raw int32 scores, scaled below
    gemm_serial(g);
    int8_probabilities(w, i0, rows, n, np, n4, ks, sig, p_scale, p_zero);
    GemmArgs pv;  // context = P_block V
    pv.M = rows; pv.A = w.p8; pv.lda = n4;
    pv.a_scale = p_scale; pv.a_zp = p_zero; pv.a_per_row = true;
    pv.W.data = w.vpack; pv.W.col_sums = w.vsum; pv.W.scales = w.vscale;
    pv.W.K = n; pv.W.N = d; pv.W.Kg = (n + 3) / 4; pv.W.Np = dp;
    pv.out_kind = OutKind::F32; pv.out = a.context + (off + i0) * H + h * d; pv.ldo = H;
    gemm_serial(pv);
  }
}

void attention(const AttentionArgs& a) {
  const int64_t tasks = a.num_seqs * a.num_heads;
  const int64_t T = a.offsets[a.num_seqs];
  const int64_t worker_floats = attention_worker_floats(a.max_len, a.head_dim);  // once: it carves every path
  float* sig_parts = a.scratch + a.num_workers * worker_floats;
  AttentionArgs local = a;
  local.significance = a.significance ? sig_parts : nullptr;
#pragma omp parallel num_threads(a.num_workers) if (a.num_workers > 1 && tasks > 1)
  {
    // Tiny probabilities would be denormal numbers, which cost ~100 cycles per operation:
    // flush them to zero (FTZ/DAZ) on every worker for the duration of the call.
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      float* work = a.scratch + omp_get_thread_num() * worker_floats;
      const int64_t s = t / a.num_heads, h = t % a.num_heads;
      switch (a.precision) {
        case AttentionPrecision::Int16: attention_head_s16(local, s, h, work); break;
        case AttentionPrecision::Int8: attention_head_int8(local, s, h, work); break;
#ifdef QRT_TILES
        case AttentionPrecision::BF16: Tiles::configure(full_tiles()); attention_head_bf16(local, s, h, work); break;
#endif
        default: attention_head(local, s, h, work);
      }
    }
    // Sum the heads in a fixed order: the result does not depend on the thread count.
#pragma omp for schedule(static)
    for (int64_t t = 0; t < (a.significance ? T : 0); ++t) {
      float s = 0.f;
      for (int64_t h = 0; h < a.num_heads; ++h) s += sig_parts[h * T + t];
      a.significance[t] = s;
    }
#ifdef QRT_TILES
    if (a.precision == AttentionPrecision::Int8 || a.precision == AttentionPrecision::BF16) Tiles::release();
#endif
    _mm_setcsr(csr);
  }
}
