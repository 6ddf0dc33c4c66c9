// Int8 weights packed once into the layout the GEMM kernels read (types.h, kPanel).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "types.h"

namespace qrt {

class PackedWeight {
 public:
  // w: [N, K] int8 in [-127, 127] (symmetric quantization never yields -128, and the AVX2
  // path relies on it); scales: [N] per-output-channel scale.
  PackedWeight(const int8_t* w, int64_t N, int64_t K, const float* scales);
  PackedView view() const;
  int64_t K() const { return K_; }
  int64_t N() const { return N_; }
  // The original [N, K] values, read back from the packed layout.
  std::vector<int8_t> unpack() const;
  const float* scales() const { return scales_.data(); }

 private:
  int64_t K_, N_, Kg_, Np_;
  std::unique_ptr<int8_t, void (*)(void*)> data_;
  std::vector<int32_t> col_sums_;
  std::vector<float> scales_;
};

}  // namespace qrt
