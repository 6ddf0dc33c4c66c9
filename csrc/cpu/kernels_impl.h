// The kernels, written once against the primitives of one vec_<isa>.h (VecF, gemm_tile,
// kActShift, kTileRows). Included only by kernels_<isa>.cpp, inside namespace
// qrt::cpu::QRT_ISA_NS, so each ISA gets its own copy compiled with its own flags.
// No STL containers here (see types.h). This file holds the helpers every kernel shares;
// the kernels are in one file per concern, included at the end in dependency order.
#include <omp.h>
#include <xmmintrin.h>

#include <cmath>
#include <cstdlib>
#include <new>
#include <cstring>
#include <type_traits>

namespace qrt::cpu::QRT_ISA_NS {

using R = VecF::reg;
constexpr int W = VecF::width;

// Whether a kernel big enough to share splits across threads: not when called from inside a
// parallel region (the encoder's row chunks), where it runs on the calling thread.
static inline bool forks(bool big) { return big && !omp_in_parallel(); }

// erf as a rational function of x on [-4, 4] (odd degree-13 numerator over even degree-8
// denominator; |error| < 1e-7; outside, erf is +-1 in float). No exp: the GELU epilogue was
// a quarter of the FFN1 GEMM's time.
static inline R erf_approx(R x) {
  x = VecF::min(VecF::max(x, VecF::set1(-4.f)), VecF::set1(4.f));
  const R x2 = VecF::mul(x, x);
  R p = VecF::fma(x2, VecF::set1(-2.72614225801306e-10f), VecF::set1(2.77068142495902e-08f));
  p = VecF::fma(x2, p, VecF::set1(-2.10102402082508e-06f));
  p = VecF::fma(x2, p, VecF::set1(-5.69250639462346e-05f));
  p = VecF::fma(x2, p, VecF::set1(-7.34990630326855e-04f));
  p = VecF::fma(x2, p, VecF::set1(-2.95459980854025e-03f));
  p = VecF::fma(x2, p, VecF::set1(-1.60960333262415e-02f));
  p = VecF::mul(x, p);
  R q = VecF::fma(x2, VecF::set1(-1.45660718464996e-05f), VecF::set1(-2.13374055278905e-04f));
  q = VecF::fma(x2, q, VecF::set1(-1.68282697438203e-03f));
  q = VecF::fma(x2, q, VecF::set1(-7.37332916720468e-03f));
  q = VecF::fma(x2, q, VecF::set1(-1.42647390514189e-02f));
  return VecF::mul(p, VecF::rcp(q));  // rcp includes a Newton step
}
template <class V>
static inline auto erf_vec(typename V::reg x, int) -> decltype(V::erf(x)) { return V::erf(x); }
template <class V>
static inline R erf_vec(R x, long) { return erf_approx(x); }

constexpr float kLog2e = 1.44269504088896341f;

// 2^t for the softmax's t <= 0: n = round(t), f = t - n in [-1/2, 1/2] (exact), 2^f by a
// degree-5 fit (relative error 2.3e-7), times 2^n. t is clamped at -126, where 2^t is
// already far below anything a probability sum notices (and AVX2's exponent trick holds).
// A path whose VecF has its own exp2 uses that instead.
template <class V>
static inline auto exp2_vec(typename V::reg t, int) -> decltype(V::exp2(t)) { return V::exp2(t); }
template <class V>
static inline typename V::reg exp2_vec(typename V::reg t, long) {  // written in V: only paths without exp2 compile it
  t = V::max(t, V::set1(-126.f));
  const typename V::reg n = V::round(t), f = V::sub(t, n);
  typename V::reg p = V::fma(V::set1(1.3266971e-3f), f, V::set1(9.6754599e-3f));
  p = V::fma(p, f, V::set1(5.5507425e-2f));
  p = V::fma(p, f, V::set1(2.4022122e-1f));
  p = V::fma(p, f, V::set1(6.9314694e-1f));
  p = V::fma(p, f, V::set1(1.0000001f));
  return V::scale_pow2(p, n);
}

// Loads and stores of cnt lanes: unmasked for whole vectors (the main loops below pass a
// constant W, so the branch folds away; AVX2's masked moves are slow).
static inline R load_n(const float* p, int cnt) { return cnt == W ? VecF::load(p) : VecF::load(p, cnt); }
static inline void store_n(float* p, R v, int cnt) {
  if (cnt == W) VecF::store(p, v);
  else VecF::store(p, v, cnt);
}

// f(std::integral_constant<int, n>) for a run-time n in [1, N]: a loop remainder (rows of a
// GEMM tile, vectors of a key block) handed to the kernel instantiated for exactly that size.
template <int N, class F>
static inline void with_constant(int n, F&& f) {
  if constexpr (N > 0) {
    if (n == N) f(std::integral_constant<int, N>{});
    else with_constant<N - 1>(n, f);
  }
}

// GELU x/2 + x/2 * erf(x / sqrt(2)); a path whose VecF has its own gelu uses that instead.
template <class V>
static inline auto gelu_vec(typename V::reg x, int) -> decltype(V::gelu(x)) { return V::gelu(x); }
template <class V>
static inline R gelu_vec(R x, long) {
  const R e = erf_vec<VecF>(VecF::mul(x, VecF::set1(0.70710678118654752f)), 0);
  const R half_x = VecF::mul(VecF::set1(0.5f), x);
  return VecF::fma(half_x, e, half_x);
}

#include "gemm_impl.h"
#include "norms_impl.h"
#include "attention_impl.h"
#include "probes_impl.h"

}  // namespace qrt::cpu::QRT_ISA_NS
