// Portable scalar primitives for kernels_impl.h: width-1 "vectors", plain C++ loops.
// This is the reference every ISA path is tested against; it runs on any x86-64.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "exp2_cubic.h"

namespace qrt::cpu::QRT_ISA_NS {

struct VecF {
  using reg = float;
  static constexpr int width = 1;
  static inline reg load(const float* p) { return *p; }
  static inline reg load(const float* p, int) { return *p; }
  static inline void store(float* p, reg v) { *p = v; }
  static inline void store(float* p, reg v, int) { *p = v; }
  // No non-temporal stores in plain C++: ordinary ones.
  static inline void stream(float* p, reg v) { *p = v; }
  static inline void stream_fence() {}
  // Round half to even, as numpy's rint.
  static inline reg round(reg v) { return std::nearbyint(v); }
  // Lanes n.. set to zero.
  static inline reg keep(reg v, int n) { (void)n; return v; }
  // 1/x to ~1e-7 relative (one Newton step on the hardware estimate).
  static inline reg rcp(reg x) { return 1.f / x; }
  static inline reg set1(float x) { return x; }
  static inline reg zero() { return 0.f; }
  static inline reg add(reg a, reg b) { return a + b; }
  static inline reg sub(reg a, reg b) { return a - b; }
  static inline reg mul(reg a, reg b) { return a * b; }
  static inline reg fma(reg a, reg b, reg c) { return a * b + c; }
  static inline reg max(reg a, reg b) { return a > b ? a : b; }
  static inline reg min(reg a, reg b) { return a < b ? a : b; }
  static inline reg div(reg a, reg b) { return a / b; }
  static inline reg quotient(reg x, reg s, reg) { return x / s; }  // the definition the others match
  static inline float reduce_add(reg v) { return v; }
  static inline float reduce_max(reg v) { return v; }
  static inline reg from_i32(const int32_t* p) { return (float)*p; }
  // float(a + b); float(a + b.low * k.low + b.high * k.high), b and k pairs of int16 (the
  // low half first), the sums in int32.
  static inline reg from_i32_plus(const int32_t* a, const int32_t* b) { return (float)(*a + *b); }
  static inline reg from_i32_dot_pairs(const int32_t* a, const int32_t* b, int32_t k) {
    auto low = [](int32_t x) { return (int32_t)(int16_t)(uint16_t)((uint32_t)x & 0xffffu); };
    auto high = [](int32_t x) { return (int32_t)(int16_t)(uint16_t)((uint32_t)x >> 16); };
    return (float)(*a + low(*b) * low(k) + high(*b) * high(k));
  }
  static inline void store_u8(uint8_t* p, reg v, int = 1) {
    float r = std::nearbyint(v);
    *p = (uint8_t)(r < 0.f ? 0.f : (r > 255.f ? 255.f : r));
  }
  static inline void store_u8_plus(uint8_t* p, reg q, int32_t zp, int = 1) {
    const float r = std::nearbyint(q) + (float)zp;
    *p = (uint8_t)(r < 0.f ? 0.f : (r > 255.f ? 255.f : r));
  }
  static inline void store_s8(int8_t* p, reg v, int = 1) {
    float r = std::nearbyint(v);
    *p = (int8_t)(r < -127.f ? -127.f : (r > 127.f ? 127.f : r));
  }
  static inline void store_s16(int16_t* p, reg v, int = 1) {
    float r = std::nearbyint(v);
    *p = (int16_t)(r < -32767.f ? -32767.f : (r > 32767.f ? 32767.f : r));
  }
  static inline reg scale_pow2(reg p, reg n) { return std::ldexp(p, (int)n); }
  static inline reg erf(reg x) { return std::erf(x); }
  static inline reg abs(reg x) { return std::fabs(x); }
  // Round to the nearest bf16 (ties to even), as VCVTNEPS2BF16; NaN stays NaN.
  static inline void store_bf16(uint16_t* p, reg v, int = 1) {
    uint32_t b;
    std::memcpy(&b, &v, 4);
    *p = std::isnan(v) ? (uint16_t)0x7fc0 : (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
  }
  static inline reg load_bf16(const uint16_t* p) {
    const uint32_t bits = (uint32_t)*p << 16;
    float x;
    std::memcpy(&x, &bits, 4);
    return x;
  }
  static inline void store_bf16_two(uint16_t* p, reg lo, reg hi) {
    store_bf16(p, lo);
    store_bf16(p + 1, hi);
  }
  // The cubic of vec_avx512.h: p(t - floor t) 2^floor(t) (below 2^-1000, 0).
  static inline reg exp2_cubic(reg t) {
    const float n = std::floor(std::fmax(t, -1000.f)), f = t - n;
    return std::ldexp(((kExp2Cubic[3] * f + kExp2Cubic[2]) * f + kExp2Cubic[1]) * f + kExp2Cubic[0], (int)n);
  }
};

// One int32 lane; an operand lane holds an int16 pair, as on the vector paths.
struct VecS16 {
  using reg = int32_t;
  static inline reg zero() { return 0; }
  static inline reg load(const int16_t* p) { int32_t x; std::memcpy(&x, p, 4); return x; }
  static inline reg set1_pair(const int16_t* p) { return load(p); }
  static inline reg dot2(reg acc, reg a, reg b) {
    const int32_t lo = (int32_t)(int16_t)(a & 0xffff) * (int16_t)(b & 0xffff);
    const int32_t hi = (int32_t)(int16_t)((uint32_t)a >> 16) * (int16_t)((uint32_t)b >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)lo + (uint32_t)hi);  // wraps like the hardware
  }
  static inline VecF::reg to_f32(reg v) { return (float)v; }
  // lo and hi rounded to int16 and stored as one pair: p[0] = lo, p[1] = hi.
  static inline void store_pairs(int16_t* p, VecF::reg lo, VecF::reg hi) { VecF::store_s16(p, lo); VecF::store_s16(p + 1, hi); }
};

constexpr int32_t kActShift = 0;

template <int MR>
inline void gemm_tile(const uint8_t* A, int64_t lda, int64_t K, const int8_t* Wp, const int32_t* init,
                      int64_t init_stride, int32_t* C) {
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < 64; ++c) {
      int32_t acc = init[r * init_stride + c];
      for (int64_t k = 0; k < K; ++k)
        acc += (int32_t)A[r * lda + k] * (int32_t)Wp[((k / 4) * 64 + c) * 4 + (k % 4)];
      C[r * 64 + c] = acc;
    }
}
// fp32 attention: query rows per block.
constexpr int kAttentionRows = 4;
constexpr int kTileRows = 4;
// int16 attention blocks (vec_avx512.h explains them).
constexpr int kScoreRows = 4;
constexpr int kScoreKeyVectors = 2;
constexpr int kInt16Rows = 4;

// Scalar multiply-add loop: the "peak" of the reference path.
inline int64_t int8_peak_loop(int64_t iters) {
  int32_t acc[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i) {
      acc[i] += 3 * (int32_t)(it & 127);
      __asm__ volatile("" : "+r"(acc[i]));
    }
  return iters * 8;
}

}  // namespace qrt::cpu::QRT_ISA_NS
