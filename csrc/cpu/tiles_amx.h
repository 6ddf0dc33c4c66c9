// The tile interface (tiles.h) on AMX instructions. Compiled only into kernels_amx.cpp.
#pragma once
#include <immintrin.h>

#include "tiles.h"

namespace qrt::cpu::QRT_ISA_NS {

// GCC's _tile_* macros paste their argument into the instruction text, so they take only
// literal numbers; these take a template argument through an "i" operand (%c: no '$').
// AT&T operand order: sources first, the destination tile last.
struct Tiles {
  static constexpr bool emulated = false;
  static void configure(const TileConfig& c) { _tile_loadconfig(&c); }
  static void release() { _tile_release(); }
  template <int T> static void zero() { __asm__ volatile("tilezero %%tmm%c0" : : "i"(T)); }
  template <int T> static void load(const void* p, int64_t stride) {
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm%c2" : : "r"(p), "r"(stride), "i"(T) : "memory");
  }
  template <int T> static void store(void* p, int64_t stride) {
    __asm__ volatile("tilestored %%tmm%c2, (%0,%1,1)" : : "r"(p), "r"(stride), "i"(T) : "memory");
  }
  template <int C, int A, int B> static void dpbusd() {
    __asm__ volatile("tdpbusd %%tmm%c2, %%tmm%c1, %%tmm%c0" : : "i"(C), "i"(A), "i"(B));
  }
  template <int C, int A, int B> static void dpbf16ps() {
    __asm__ volatile("tdpbf16ps %%tmm%c2, %%tmm%c1, %%tmm%c0" : : "i"(C), "i"(A), "i"(B));
  }
};

}  // namespace qrt::cpu::QRT_ISA_NS
