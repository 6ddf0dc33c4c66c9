// The tile interface (tiles.h) in plain C++: what LDTILECFG, TILELOADD, TILESTORED,
// TILEZERO, TDPBUSD and TDPBF16PS do, with their shape rules checked. The kernels written
// against it are therefore tested on every CPU (packing, blocking, strides, epilogues),
// and on AMX CPUs the same tests run the real instructions.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tiles.h"

namespace qrt::cpu::QRT_ISA_NS {

struct Tiles {
  static constexpr bool emulated = true;
  struct State {
    bool configured = false;
    uint8_t rows[8] = {};
    uint16_t colsb[8] = {};
    alignas(64) uint8_t data[8][16 * 64] = {};
  };
  static State& state() {
    static thread_local State s;  // tile registers are per thread, like the real ones
    return s;
  }
  // A shape the hardware would refuse (#UD) is a kernel bug: stop loudly.
  [[noreturn]] static void fault(const char* what) {
    std::fprintf(stderr, "emulated AMX: %s\n", what);
    std::abort();
  }
  static void configure(const TileConfig& c) {
    State& s = state();
    if (c.palette != 1) fault("only palette 1 is emulated");
    for (int t = 0; t < 8; ++t) {
      if (c.rows[t] > 16 || c.colsb[t] > 64) fault("tile larger than 16 rows x 64 bytes");
      s.rows[t] = c.rows[t];
      s.colsb[t] = c.colsb[t];
    }
    std::memset(s.data, 0, sizeof(s.data));  // LDTILECFG zeroes the tiles
    s.configured = true;
  }
  static void release() { state() = State{}; }
  static State& use(int t) {
    State& s = state();
    if (!s.configured || s.rows[t] == 0 || s.colsb[t] == 0) fault("tile used before it is configured");
    return s;
  }
  template <int T> static void zero() { std::memset(use(T).data[T], 0, 16 * 64); }
  template <int T> static void load(const void* p, int64_t stride) {
    State& s = use(T);
    std::memset(s.data[T], 0, 16 * 64);  // bytes past the configured shape read as zero
    for (int r = 0; r < s.rows[T]; ++r)
      std::memcpy(s.data[T] + r * 64, static_cast<const uint8_t*>(p) + r * stride, s.colsb[T]);
  }
  template <int T> static void store(void* p, int64_t stride) {
    State& s = use(T);
    for (int r = 0; r < s.rows[T]; ++r) std::memcpy(static_cast<uint8_t*>(p) + r * stride, s.data[T] + r * 64, s.colsb[T]);
  }
  // C [M x N] (32-bit elements) += A [M x 4K] (rows of 4-element groups) . B [K x 4N] (VNNI).
  static void check_product(const State& s, int c, int a, int b) {
    if (s.rows[a] != s.rows[c]) fault("A and C have different row counts");
    if (s.colsb[b] != s.colsb[c]) fault("B and C have different row widths");
    if (s.rows[b] != s.colsb[a] / 4) fault("B's rows do not match A's 4-byte groups");
    if (c == a || c == b || a == b) fault("a product's three tiles must differ");
  }
  template <int C, int A, int B> static void dpbusd() {
    State& s = use(C);
    use(A), use(B);
    check_product(s, C, A, B);
    for (int m = 0; m < s.rows[C]; ++m)
      for (int n = 0; n < s.colsb[C] / 4; ++n) {
        int32_t acc;
        std::memcpy(&acc, s.data[C] + m * 64 + 4 * n, 4);
        for (int k = 0; k < s.colsb[A] / 4; ++k)
          for (int i = 0; i < 4; ++i)
            acc += (int32_t)s.data[A][m * 64 + 4 * k + i] * (int32_t)(int8_t)s.data[B][k * 64 + 4 * n + i];
        std::memcpy(s.data[C] + m * 64 + 4 * n, &acc, 4);
      }
  }
  static float bf16(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  template <int C, int A, int B> static void dpbf16ps() {
    State& s = use(C);
    use(A), use(B);
    check_product(s, C, A, B);
    for (int m = 0; m < s.rows[C]; ++m)
      for (int n = 0; n < s.colsb[C] / 4; ++n) {
        float acc;
        std::memcpy(&acc, s.data[C] + m * 64 + 4 * n, 4);
        for (int k = 0; k < s.colsb[A] / 4; ++k)
          for (int i = 0; i < 2; ++i)
            acc = std::fma(bf16(s.data[A] + m * 64 + 4 * k + 2 * i), bf16(s.data[B] + k * 64 + 4 * n + 2 * i), acc);
        std::memcpy(s.data[C] + m * 64 + 4 * n, &acc, 4);
      }
  }
};

}  // namespace qrt::cpu::QRT_ISA_NS
