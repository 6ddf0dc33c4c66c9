#include "packed_weight.h"

#include "huge_pages.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace qrt {

PackedWeight::PackedWeight(const int8_t* w, int64_t N, int64_t K, const float* scales)
    : K_(K), N_(N), Kg_((K + 3) / 4), Np_((N + kPanel - 1) / kPanel * kPanel),
      data_(nullptr, std::free) {
  if (N < 1 || K < 1) throw std::invalid_argument("weight must have N >= 1 and K >= 1");
  if (K > kMaxGemmK)
    throw std::invalid_argument("K = " + std::to_string(K) + " exceeds " + std::to_string(kMaxGemmK) +
                                ", the bound where int32 accumulation of u8 x s8 can overflow");
  const size_t bytes = (size_t)Np_ * Kg_ * 4 + kPackedSlackBytes;
  data_.reset(static_cast<int8_t*>(alloc_large(bytes)));
  std::memset(data_.get(), 0, bytes);
  col_sums_.assign(Np_, 0);
  scales_.assign(Np_, 0.f);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t p = n / kPanel, c = n % kPanel;
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int8_t v = w[n * K + k];
      if (v == -128) throw std::invalid_argument("weight value -128 found; int8 weights must lie in [-127, 127]");
      data_.get()[((p * Kg_ + k / 4) * kPanel + c) * 4 + k % 4] = v;
      sum += v;
    }
    col_sums_[n] = sum;
    scales_[n] = scales[n];
  }
}

PackedView PackedWeight::view() const {
  PackedView v;
  v.data = data_.get();
  v.col_sums = col_sums_.data();
  v.scales = scales_.data();
  v.K = K_;
  v.N = N_;
  v.Kg = Kg_;
  v.Np = Np_;
  return v;
}

std::vector<int8_t> PackedWeight::unpack() const {
  std::vector<int8_t> w(N_ * K_);
  for (int64_t n = 0; n < N_; ++n)
    for (int64_t k = 0; k < K_; ++k)
      w[n * K_ + k] = data_.get()[(((n / kPanel) * Kg_ + k / 4) * kPanel + n % kPanel) * 4 + k % 4];
  return w;
}

}  // namespace qrt
