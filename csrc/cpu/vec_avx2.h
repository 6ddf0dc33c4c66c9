// AVX2 + FMA primitives for kernels_impl.h.
#pragma once
#include <immintrin.h>
#include <cstdint>
#include <cstring>

namespace qrt::cpu::QRT_ISA_NS {

struct VecF {
  using reg = __m256;
  static constexpr int width = 8;
  static inline __m256i tail_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline reg load(const float* p) { return _mm256_loadu_ps(p); }
  static inline reg load(const float* p, int n) { return _mm256_maskload_ps(p, tail_mask(n)); }
  static inline void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static inline void store(float* p, reg v, int n) { _mm256_maskstore_ps(p, tail_mask(n), v); }
  // Non-temporal store of a whole vector to a 32-byte aligned p; stream_fence orders such
  // stores before the thread's later ones (so before the barrier that publishes them).
  static inline void stream(float* p, reg v) { _mm256_stream_ps(p, v); }
  static inline void stream_fence() { _mm_sfence(); }
  // Round half to even, as numpy's rint.
  static inline reg round(reg v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // Lanes n.. set to zero.
  static inline reg keep(reg v, int n) { return _mm256_and_ps(v, _mm256_castsi256_ps(tail_mask(n))); }
  // 1/x to ~1e-7 relative (one Newton step on the hardware estimate).
  static inline reg rcp(reg x) { const reg r = _mm256_rcp_ps(x); return _mm256_mul_ps(r, _mm256_fnmadd_ps(x, r, _mm256_set1_ps(2.f))); }
  static inline reg set1(float x) { return _mm256_set1_ps(x); }
  static inline reg zero() { return _mm256_setzero_ps(); }
  static inline reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static inline reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static inline reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static inline reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static inline reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static inline reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static inline reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  // x / s correctly rounded, given r = 1/s correctly rounded (vec_avx512.h explains it).
  static inline reg quotient(reg x, reg s, reg r) {
    const reg q = _mm256_mul_ps(x, r);
    return _mm256_fmadd_ps(_mm256_fnmadd_ps(q, s, x), r, q);
  }
  static inline float reduce_add(reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static inline float reduce_max(reg v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static inline reg from_i32(const int32_t* p) {
    return _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  // float(a + b); float(a + b.low * k.low + b.high * k.high) for pairs of int16 (vec_avx512.h).
  static inline reg from_i32_plus(const int32_t* a, const int32_t* b) {
    return _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)),
                                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b))));
  }
  static inline reg from_i32_dot_pairs(const int32_t* a, const int32_t* b, int32_t k) {
    const __m256i kb = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)), _mm256_set1_epi32(k));
    return _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)), kb));
  }
  // The first n int32 lanes of i, each already in T's range, stored as T.
  template <class T>
  static inline void store_lanes(T* p, __m256i i, int n) {
    alignas(32) int32_t tmp[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), i);
    for (int j = 0; j < n; ++j) p[j] = (T)tmp[j];
  }
  // Round half to even, clamp to [lo, hi], store n values of T. The clamp is on the float:
  // values beyond the int32 range convert to INT32_MIN. NaN stores lo.
  template <class T>
  static inline void store_int(T* p, reg v, int lo, int hi, int n) {
    store_lanes(p, _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps((float)lo)), _mm256_set1_ps((float)hi))), n);
  }
  static inline void store_u8(uint8_t* p, reg v, int n = width) { store_int(p, v, 0, 255, n); }
  // rint(q) + zp clamped to [0, 255], stored as n bytes; |q| < 2^31 (the quantizers bound it).
  static inline void store_u8_plus(uint8_t* p, reg q, int32_t zp, int n = width) {
    const __m256i i = _mm256_add_epi32(_mm256_cvtps_epi32(q), _mm256_set1_epi32(zp));
    store_lanes(p, _mm256_min_epi32(_mm256_max_epi32(i, _mm256_setzero_si256()), _mm256_set1_epi32(255)), n);
  }
  static inline void store_s8(int8_t* p, reg v, int n = width) { store_int(p, v, -127, 127, n); }
  static inline void store_s16(int16_t* p, reg v, int n = width) { store_int(p, v, -32767, 32767, n); }
  // p * 2^n for integral n in [-126, 127] (exp2 in kernels_impl.h): n added to the exponent field.
  static inline reg scale_pow2(reg p, reg n) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
  static inline reg abs(reg x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
};

// int32 lanes that accumulate products of int16 pairs (see vec_avx512.h); vpmaddwd cannot
// overflow here because the operands stay within +-32767.
struct VecS16 {
  using reg = __m256i;
  static inline reg zero() { return _mm256_setzero_si256(); }
  static inline reg load(const int16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static inline reg set1_pair(const int16_t* p) { int32_t x; std::memcpy(&x, p, 4); return _mm256_set1_epi32(x); }
  static inline reg dot2(reg acc, reg a, reg b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
  static inline VecF::reg to_f32(reg v) { return _mm256_cvtepi32_ps(v); }
  // lo and hi rounded to int16 (|x| <= 32767) and stored interleaved: p[2i] = lo[i], p[2i+1] = hi[i].
  static inline void store_pairs(int16_t* p, VecF::reg lo, VecF::reg hi) {
    const __m256i l = _mm256_cvtps_epi32(lo), h = _mm256_cvtps_epi32(hi);
    const __m256i pairs = _mm256_or_si256(_mm256_slli_epi32(h, 16), _mm256_and_si256(l, _mm256_set1_epi32(0xffff)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), pairs);
  }
};

// vpmaddubsw adds two u8*s8 products into s16 and saturates. To stay exact we feed it
// |A - 128| (<= 128, as u8) and W * sign(A - 128) (|W| <= 127): a pair is at most
// 2 * 128 * 127 = 32512 < 32767. The accumulator then holds sum_k (A - 128) * W.
constexpr int32_t kActShift = 128;

// Raw int32 tile for MR rows x 64 columns from init (as vec_avx512.h), in four 16-column passes.
template <int MR>
inline void gemm_tile(const uint8_t* A, int64_t lda, int64_t K, const int8_t* Wp, const int32_t* init,
                      int64_t init_stride, int32_t* C) {
  // The last group of 4 k may be partial: its activations come from a padded copy
  // (padding 0x80 contributes A - 128 = 0).
  const int64_t Kfull = K / 4, tail = K % 4;
  const int64_t Kg = Kfull + (tail ? 1 : 0);
  alignas(32) uint8_t tail_a[MR * 4];
  std::memset(tail_a, 0x80, sizeof(tail_a));
  for (int r = 0; r < MR && tail; ++r) std::memcpy(tail_a + 4 * r, A + r * lda + 4 * Kfull, tail);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i bias80 = _mm256_set1_epi8((char)0x80);
  for (int c0 = 0; c0 < 64; c0 += 16) {
    __m256i acc[MR][2];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(init + r * init_stride + c0));
      acc[r][1] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(init + r * init_stride + c0 + 8));
    }
    for (int64_t g = 0; g < Kg; ++g) {
      const int8_t* w = Wp + g * 256 + c0 * 4;
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 32));
      const uint8_t* a = g < Kfull ? A + 4 * g : tail_a;
      const int64_t stride = g < Kfull ? lda : 4;
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        int32_t a4;
        std::memcpy(&a4, a + r * stride, 4);
        const __m256i as = _mm256_xor_si256(_mm256_set1_epi32(a4), bias80);  // A - 128 as s8
        const __m256i aa = _mm256_abs_epi8(as);
        acc[r][0] = _mm256_add_epi32(acc[r][0],
            _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(w0, as)), ones));
        acc[r][1] = _mm256_add_epi32(acc[r][1],
            _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(w1, as)), ones));
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + r * 64 + c0), acc[r][0]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + r * 64 + c0 + 8), acc[r][1]);
    }
  }
}
// fp32 attention: query rows per block (x 2 vectors = 8 accumulators of 16 registers).
constexpr int kAttentionRows = 4;
constexpr int kTileRows = 4;
// int16 attention: scores in register blocks of 4 queries x 2 vectors of keys; probabilities
// x V for 4 queries at once (8 chains of 16 registers either way).
constexpr int kScoreRows = 4;
constexpr int kScoreKeyVectors = 2;
constexpr int kInt16Rows = 4;

// Register-only loop of the exact u8 x s8 step above (sign, maddubs, madd, add): the
// peak of this path. Unlike vpdpbusd, the step is a pure function of its operands, so chains
// that shared one operand were merged by the compiler into one step per iteration (which the
// probe counted four times); each chain has its own activation register, and the barrier
// tells the compiler all four change every iteration, so none is merged or hoisted.
inline int64_t int8_peak_loop(int64_t iters) {
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
  __m256i a0 = _mm256_set1_epi8(3), a1 = _mm256_set1_epi8(5), a2 = _mm256_set1_epi8(7), a3 = _mm256_set1_epi8(9);
  __m256i w = _mm256_set1_epi8(2), ones = _mm256_set1_epi16(1);
  __asm__ volatile("" : "+x"(w), "+x"(ones));
#define QRT_STEP(c, a) c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(w, a)), ones))
  for (int64_t it = 0; it < iters; ++it) {
    __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3));
    QRT_STEP(c0, a0); QRT_STEP(c1, a1); QRT_STEP(c2, a2); QRT_STEP(c3, a3);
  }
#undef QRT_STEP
  __m256i s = _mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3));
  __asm__ volatile("" : : "x"(s));
  return iters * 4 * 32;
}

}  // namespace qrt::cpu::QRT_ISA_NS
