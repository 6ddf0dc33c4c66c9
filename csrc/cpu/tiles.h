// The tile interface of the AMX kernels: a tile configuration (palette 1) and, in
// tiles_amx.h and tiles_emulated.h, two implementations of the same operations:
//   configure(cfg), release(), zero<T>(), load<T>(p, stride), store<T>(p, stride),
//   dpbusd<C, A, B>() (u8 x s8 -> s32), dpbf16ps<C, A, B>() (bf16 x bf16 -> fp32).
// Tile numbers are template arguments because the instructions encode them.
// B operands are in the "VNNI" layout: row g of a B tile holds, for each of colsb / 4
// columns, 4 consecutive k (u8/s8) or 2 consecutive k (bf16): exactly one k-group row of a
// packed weight panel (types.h), so panels are read in place with a 256-byte stride.
#pragma once
#include <cstdint>

namespace qrt {

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};  // bytes per row of tiles 0..7 (8..15 reserved)
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

// Every tile 16 rows x 64 bytes: the int8 GEMM's accumulators (16 x 16 int32), activations
// (16 rows x 64 k) and weights (16 k-groups x 16 columns).
namespace {  // internal linkage, as attention_scratch.h says why
inline TileConfig full_tiles() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  return c;
}
}  // namespace

}  // namespace qrt
