// AVX-512 (F/BW/VL/DQ + VNNI) primitives for kernels_impl.h.
#pragma once
#include <immintrin.h>
#include <cstdint>
#include <cstring>

#include "exp2_cubic.h"
#include "gelu_table.h"

namespace qrt::cpu::QRT_ISA_NS {

struct VecF {
  using reg = __m512;
  static constexpr int width = 16;
  static inline __mmask16 tail_mask(int n) { return (__mmask16)((1u << n) - 1u); }
  static inline reg load(const float* p) { return _mm512_loadu_ps(p); }
  static inline reg load(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
  static inline void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static inline void store(float* p, reg v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
  // Non-temporal store of a whole vector to a 64-byte aligned p; stream_fence orders such
  // stores before the thread's later ones (so before the barrier that publishes them).
  static inline void stream(float* p, reg v) { _mm512_stream_ps(p, v); }
  static inline void stream_fence() { _mm_sfence(); }
  // Round half to even, as numpy's rint.
  static inline reg round(reg v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // Lanes n.. set to zero.
  static inline reg keep(reg v, int n) { return _mm512_maskz_mov_ps(tail_mask(n), v); }
  // 1/x to ~1e-7 relative (one Newton step on the hardware estimate).
  static inline reg rcp(reg x) { const reg r = _mm512_rcp14_ps(x); return _mm512_mul_ps(r, _mm512_fnmadd_ps(x, r, _mm512_set1_ps(2.f))); }
  static inline reg set1(float x) { return _mm512_set1_ps(x); }
  static inline reg zero() { return _mm512_setzero_ps(); }
  static inline reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static inline reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static inline reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static inline reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static inline reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static inline reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static inline float reduce_add(reg v) { return _mm512_reduce_add_ps(v); }
  static inline float reduce_max(reg v) { return _mm512_reduce_max_ps(v); }
  static inline reg from_i32(const int32_t* p) { return _mm512_cvtepi32_ps(_mm512_loadu_si512(p)); }
  // float(a + b), the sum in int32.
  static inline reg from_i32_plus(const int32_t* a, const int32_t* b) {
    return _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_loadu_si512(a), _mm512_loadu_si512(b)));
  }
  // float(a + b.low * k.low + b.high * k.high): b's lanes and k are pairs of int16, the sum in
  // int32 (vpdpwssd).
  static inline reg from_i32_dot_pairs(const int32_t* a, const int32_t* b, int32_t k) {
    return _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(_mm512_loadu_si512(a), _mm512_loadu_si512(b), _mm512_set1_epi32(k)));
  }
  // The narrowing stores take the unmasked register form for whole vectors (the masked
  // store-to-memory form was the quantizer's bottleneck).
  // Round to nearest even, clamp to [0, 255], store n bytes. The clamp is on the float:
  // values beyond the int32 range convert to INT32_MIN. NaN stores 0.
  static inline void store_u8(uint8_t* p, reg v, int n = width) {
    const __m512i i = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(255.f)));
    if (n == width) _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(i));
    else _mm512_mask_cvtepi32_storeu_epi8(p, tail_mask(n), i);
  }
  // rint(q) + zp clamped to [0, 255], stored as n bytes; |q| < 2^31 (the quantizers bound it).
  static inline void store_u8_plus(uint8_t* p, reg q, int32_t zp, int n = width) {
    const __m512i i = _mm512_max_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(q), _mm512_set1_epi32(zp)), _mm512_setzero_si512());
    if (n == width) _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtusepi32_epi8(i));
    else _mm512_mask_cvtusepi32_storeu_epi8(p, tail_mask(n), i);
  }
  // Round half to even, clamp to [-127, 127] (on the float, as store_u8), store n bytes.
  static inline void store_s8(int8_t* p, reg v, int n = width) {
    const __m512i i = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.f)), _mm512_set1_ps(127.f)));
    if (n == width) _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(i));
    else _mm512_mask_cvtepi32_storeu_epi8(p, tail_mask(n), i);
  }
  // Round half to even, saturate, store n int16. Callers keep |v| <= 32767 (no -32768).
  static inline void store_s16(int16_t* p, reg v, int n = width) {
    const __m512i i = _mm512_cvtps_epi32(v);
    if (n == width) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtsepi32_epi16(i));
    else _mm512_mask_cvtsepi32_storeu_epi16(p, tail_mask(n), i);
  }
#ifdef __AVX512BF16__
  // Round to the nearest bf16 (ties to even), n lanes stored (tile paths only: AVX512-BF16).
  static inline void store_bf16(uint16_t* p, reg v, int n = width) {
    const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
    if (n == width) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
    else _mm256_mask_storeu_epi16(p, tail_mask(n), h);
  }
  // lo then hi rounded as store_bf16: one conversion of both (VCVTNE2PS2BF16) and one store.
  static inline void store_bf16_two(uint16_t* p, reg lo, reg hi) {
    _mm512_storeu_si512(p, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
#endif
  // GELU x * Phi(x), Phi(x) = 1/2 + sign(x) g(|x|), g(t) = erf(t / sqrt 2) / 2 by a cubic on
  // each of 32 intervals of [0, 6) (gelu_table.h, |error| < 2.5e-7), whose coefficients
  // vpermt2ps picks from two registers each. Fewer instructions than the rational erf.
  static inline reg gelu(reg x) {
    const reg y = _mm512_min_ps(_mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(kGeluTableScale)),
                                _mm512_set1_ps(31.999998f));  // |x| * 32/6, below interval 32
    const __m512i i = _mm512_cvttps_epi32(y);
    const reg u = _mm512_reduce_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);  // y - floor(y)
    auto coef = [&](const float* c) { return _mm512_permutex2var_ps(_mm512_load_ps(c), i, _mm512_load_ps(c + 16)); };
    reg g = _mm512_fmadd_ps(coef(kGeluC3), u, coef(kGeluC2));
    g = _mm512_fmadd_ps(g, u, coef(kGeluC1));
    g = _mm512_fmadd_ps(g, u, coef(kGeluC0));
    // g with the sign of x: g ^ (x & sign bit) in one vpternlogd.
    const __m512i gs = _mm512_ternarylogic_epi32(_mm512_castps_si512(g), _mm512_castps_si512(x),
                                                 _mm512_set1_epi32(INT32_MIN), 0x78);
    return _mm512_mul_ps(x, _mm512_add_ps(_mm512_set1_ps(0.5f), _mm512_castsi512_ps(gs)));
  }
  // 2^t: f = t - floor(t) in [0, 1) in one instruction (vreduceps), 2^f by a degree-5 fit
  // (relative error 1.6e-7), times 2^floor(t) (vscalefps, which floors t itself and flushes
  // 2^t below the float range to 0, so t needs no clamp). Three fewer instructions than the
  // generic exp2 of kernels_impl.h, in the softmax's innermost loop.
  static inline reg exp2(reg t) {
    const reg f = _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    reg p = _mm512_fmadd_ps(_mm512_set1_ps(1.877575647085905e-3f), f, _mm512_set1_ps(8.989342488348484e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.582631751894951e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4015361070632935e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931530833244324e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.999999403953552e-1f));
    return _mm512_scalef_ps(p, t);
  }
  // 2^t within 7.5e-5 relative (a cubic, tools/exp2_cubic.py): for values that are rounded to
  // bf16 (half an ulp: 2^-9) next, two FMAs fewer than exp2.
  static inline reg exp2_cubic(reg t) {
    const reg f = _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    reg p = _mm512_fmadd_ps(_mm512_set1_ps(kExp2Cubic[3]), f, _mm512_set1_ps(kExp2Cubic[2]));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2Cubic[1]));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2Cubic[0]));
    return _mm512_scalef_ps(p, t);
  }
  static inline reg abs(reg x) { return _mm512_abs_ps(x); }
  // 16 bf16 (their bits) as floats: exact.
  static inline reg load_bf16(const uint16_t* p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  }
  static inline reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  // x / s correctly rounded, given r = 1/s correctly rounded and |x * r| finite: q = x * r is
  // within an ulp, and one correction step q + (x - q s) r rounds to the quotient (Markstein's
  // theorem; x - q s is exact with an FMA). Three FMA-unit operations instead of vdivps, whose
  // throughput is one per 8-10 cycles.
  static inline reg quotient(reg x, reg s, reg r) {
    const reg q = _mm512_mul_ps(x, r);
    return _mm512_fmadd_ps(_mm512_fnmadd_ps(q, s, x), r, q);
  }
};

// int32 lanes that accumulate products of int16 pairs: lane i of an operand holds the pair
// (p[2i], p[2i+1]); dot2 adds a.lo * b.lo + a.hi * b.hi to each lane (vpdpwssd).
struct VecS16 {
  using reg = __m512i;
  static inline reg zero() { return _mm512_setzero_si512(); }
  static inline reg load(const int16_t* p) { return _mm512_loadu_si512(p); }
  static inline reg set1_pair(const int16_t* p) { int32_t x; std::memcpy(&x, p, 4); return _mm512_set1_epi32(x); }
  // Inline asm: with the intrinsic, GCC 12 copies every accumulator twice per iteration of
  // the attention loops (the same loops on _mm512_dpbusd_epi32 compile cleanly).
  static inline reg dot2(reg acc, reg a, reg b) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
  }
  static inline VecF::reg to_f32(reg v) { return _mm512_cvtepi32_ps(v); }
  // lo and hi rounded to int16 (|x| <= 32767) and stored interleaved: p[2i] = lo[i], p[2i+1] = hi[i].
  static inline void store_pairs(int16_t* p, VecF::reg lo, VecF::reg hi) {
    const __m512i l = _mm512_cvtps_epi32(lo), h = _mm512_cvtps_epi32(hi);
    _mm512_storeu_si512(p, _mm512_or_si512(_mm512_slli_epi32(h, 16), _mm512_and_si512(l, _mm512_set1_epi32(0xffff))));
  }
};

// Activations enter vpdpbusd unshifted: acc = sum_k A * W.
constexpr int32_t kActShift = 0;

// Raw int32 tile: C[r][0..64) = init[r * init_stride + c] + sum over K of A[r, k] * W[panel
// col, k], for MR rows (init carries the zero-point correction, so no pass over C adds it).
template <int MR>
inline void gemm_tile(const uint8_t* A, int64_t lda, int64_t K, const int8_t* Wp, const int32_t* init,
                      int64_t init_stride, int32_t* C) {
  __m512i acc[MR][4];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_loadu_si512(init + r * init_stride + v * 16);
  // The last group of 4 k may be partial: its activations come from a zero-padded copy.
  const int64_t Kfull = K / 4, tail = K % 4;
  alignas(64) uint8_t tail_a[MR * 4] = {};
  for (int r = 0; r < MR && tail; ++r) std::memcpy(tail_a + 4 * r, A + r * lda + 4 * Kfull, tail);
  const int64_t Kg = Kfull + (tail ? 1 : 0);
  for (int64_t g = 0; g < Kg; ++g) {
    const int8_t* w = Wp + g * 256;
    const __m512i w0 = _mm512_load_si512(w), w1 = _mm512_load_si512(w + 64);
    const __m512i w2 = _mm512_load_si512(w + 128), w3 = _mm512_load_si512(w + 192);
    const uint8_t* a = g < Kfull ? A + 4 * g : tail_a;
    const int64_t stride = g < Kfull ? lda : 4;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      int32_t a4;
      std::memcpy(&a4, a + r * stride, 4);
      const __m512i av = _mm512_set1_epi32(a4);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, w0);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, w1);
      acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], av, w2);
      acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], av, w3);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < 4; ++v) _mm512_storeu_si512(C + r * 64 + v * 16, acc[r][v]);
}
// fp32 attention: query rows per block (x 2 vectors = 16 FMA chains of 32 registers).
constexpr int kAttentionRows = 8;
constexpr int kTileRows = 6;
// int16 attention: scores in register blocks of 6 queries x 4 vectors of keys (the GEMM
// tile's shape: 24 chains, 10 loads per 24 vpdpwssd; 8 x 2 spent 10 loads per 16 and ran
// slower); probabilities x V for 12 queries at once (24 chains over the 2 vectors of a
// 32-wide head).
constexpr int kScoreRows = 6;
constexpr int kScoreKeyVectors = 4;
constexpr int kInt16Rows = 12;

// Register-only vpdpbusd loop (12 independent chains, named so each stays in a register)
// for measuring the INT8 peak.
inline int64_t int8_peak_loop(int64_t iters) {
  __m512i c0 = _mm512_set1_epi32(0), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
  __m512i c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
  __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
  __asm__ volatile("" : "+v"(a), "+v"(b));
  for (int64_t it = 0; it < iters; ++it) {
    c0 = _mm512_dpbusd_epi32(c0, a, b); c1 = _mm512_dpbusd_epi32(c1, a, b);
    c2 = _mm512_dpbusd_epi32(c2, a, b); c3 = _mm512_dpbusd_epi32(c3, a, b);
    c4 = _mm512_dpbusd_epi32(c4, a, b); c5 = _mm512_dpbusd_epi32(c5, a, b);
    c6 = _mm512_dpbusd_epi32(c6, a, b); c7 = _mm512_dpbusd_epi32(c7, a, b);
    c8 = _mm512_dpbusd_epi32(c8, a, b); c9 = _mm512_dpbusd_epi32(c9, a, b);
    c10 = _mm512_dpbusd_epi32(c10, a, b); c11 = _mm512_dpbusd_epi32(c11, a, b);
  }
  __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                               _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
  s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)));
  __asm__ volatile("" : : "v"(s));
  return iters * 12 * 64;  // MACs
}

}  // namespace qrt::cpu::QRT_ISA_NS
