// Quantizers (per tensor, per row) and LayerNorm with its fused quantized output. Part of kernels_impl.h (included by it, inside namespace qrt::cpu::QRT_ISA_NS,
// after the shared helpers), compiled once per ISA like the rest.

// round(x / scale) + zp into u8 for one row. The quotient is the correctly rounded division
// (so results match the reference exactly), through VecF::quotient where 1/scale is finite.
// With CLAMP, x is first clamped to +-1024 scale: every value beyond that saturates either
// way, the product x * (1/scale) cannot overflow (a non-finite x would turn the correction
// into NaN) and the quotient converts to int32. Per-row scales bound |x / scale| by 255.
template <bool CLAMP, bool BY_RCP>
static inline void quantize_row(const float* x, int64_t cols, float scale, int32_t zp, uint8_t* out) {
  const R s = VecF::set1(scale), r = VecF::set1(1.f / scale);
  const R lim = VecF::set1(1024.f * scale), neg_lim = VecF::set1(-1024.f * scale);
  auto step = [&](int64_t c, int n) __attribute__((always_inline)) {
    R v = load_n(x + c, n);
    if (CLAMP) v = VecF::min(VecF::max(v, neg_lim), lim);
    VecF::store_u8_plus(out + c, BY_RCP ? VecF::quotient(v, s, r) : VecF::div(v, s), zp, n);
  };
  const int64_t cw = cols / W * W;
  for (int64_t c = 0; c < cw; c += W) step(c, W);
  if (cw < cols) step(cw, (int)(cols - cw));
}
template <bool CLAMP>
static inline void quantize_row(const float* x, int64_t cols, float scale, int32_t zp, uint8_t* out) {
  if (std::isfinite(1.f / scale)) quantize_row<CLAMP, true>(x, cols, scale, zp, out);
  else quantize_row<CLAMP, false>(x, cols, scale, zp, out);
}

void quantize_u8(const float* x, int64_t rows, int64_t cols, float scale, int32_t zp,
                 uint8_t* out) {
  const int64_t total = rows * cols;
#pragma omp parallel for schedule(static) num_threads(thread_count()) if (forks(total > (1 << 16)))
  for (int64_t r = 0; r < rows; ++r) quantize_row<true>(x + r * cols, cols, scale, zp, out + r * cols);
}

// The largest of x[0, n) into *hi and, WITH_MIN, the smallest into *lo, both starting from
// `init`, in four independent chains (with one, every vector waits on the latency of the
// previous min/max).
template <bool WITH_MIN>
static void extrema(const float* x, int64_t n, float init, float* hi, float* lo) {
  R hi4[4], lo4[4];
  for (int k = 0; k < 4; ++k) hi4[k] = lo4[k] = VecF::set1(init);
  int64_t j = 0;
  for (; j + 4 * W <= n; j += 4 * W)
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const R v = VecF::load(x + j + k * W);
      hi4[k] = VecF::max(hi4[k], v);
      if constexpr (WITH_MIN) lo4[k] = VecF::min(lo4[k], v);
    }
  for (; j + W <= n; j += W) {
    const R v = VecF::load(x + j);
    hi4[0] = VecF::max(hi4[0], v);
    if constexpr (WITH_MIN) lo4[0] = VecF::min(lo4[0], v);
  }
  float h = VecF::reduce_max(VecF::max(VecF::max(hi4[0], hi4[1]), VecF::max(hi4[2], hi4[3])));
  float l = -VecF::reduce_max(VecF::sub(VecF::zero(), VecF::min(VecF::min(lo4[0], lo4[1]), VecF::min(lo4[2], lo4[3]))));
  for (; j < n; ++j) {  // the last partial vector
    h = x[j] > h ? x[j] : h;
    l = x[j] < l ? x[j] : l;
  }
  *hi = h;
  if constexpr (WITH_MIN) *lo = l;
}

// Per-row quantization of one row: its scale and zero point from its range (extended to
// contain 0), then the u8 values.
static void quantize_row_per_row(const float* xr, int64_t cols, uint8_t* out, float* scale_out, int32_t* zp_out) {
  float mn, mx;
  extrema<true>(xr, cols, 0.f, &mx, &mn);  // the range always contains 0
  float scale = (mx - mn) / 255.f;
  if (!(scale > 0.f)) scale = 1.f;
  int32_t zp = (int32_t)std::nearbyint(-mn / scale);
  zp = zp < 0 ? 0 : (zp > 255 ? 255 : zp);
  *scale_out = scale;
  *zp_out = zp;
  quantize_row<false>(xr, cols, scale, zp, out);
}

void quantize_u8_per_row(const float* x, int64_t rows, int64_t cols, uint8_t* out, float* scales,
                         int32_t* zps) {
#pragma omp parallel for schedule(static) num_threads(thread_count()) if (forks(rows * cols > (1 << 16)))
  for (int64_t r = 0; r < rows; ++r) quantize_row_per_row(x + r * cols, cols, out + r * cols, scales + r, zps + r);
}

// With u8, each output row is also quantized right away, while it is in L1 (instead of a
// later pass over the whole output).
void layernorm(const float* x, const float* residual, const float* gamma, const float* beta,
               float eps, int64_t rows, int64_t cols, float* out, const U8Output* u8) {
#pragma omp parallel for schedule(static) num_threads(thread_count()) if (forks(rows * cols > (1 << 16)))
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* rr = residual ? residual + r * cols : nullptr;
    float* o = out + r * cols;
    // Sums in two chains (even and odd vectors): one chain waits on each add's latency.
    const int64_t c2 = cols / (2 * W) * (2 * W);  // whole vector pairs; then the rest
    auto x_plus_residual = [&](int64_t c, int n) __attribute__((always_inline)) {
      R v = VecF::load(xr + c, n);
      if (rr) v = VecF::add(v, VecF::load(rr + c, n));
      VecF::store(o + c, v, n);
      return v;
    };
    R sum0 = VecF::zero(), sum1 = VecF::zero();
    for (int64_t c = 0; c < c2; c += 2 * W) {
      sum0 = VecF::add(sum0, x_plus_residual(c, W));
      sum1 = VecF::add(sum1, x_plus_residual(c + W, W));
    }
    for (int64_t c = c2; c < cols; c += W) sum0 = VecF::add(sum0, x_plus_residual(c, cols - c < W ? (int)(cols - c) : W));
    const float mean = VecF::reduce_add(VecF::add(sum0, sum1)) / (float)cols;
    const R mv = VecF::set1(mean);
    auto square = [&](int64_t c, int n, R acc) __attribute__((always_inline)) {
      const R d = VecF::sub(VecF::load(o + c, n), mv);
      return VecF::fma(d, VecF::keep(d, n), acc);
    };
    R sq0 = VecF::zero(), sq1 = VecF::zero();
    for (int64_t c = 0; c < c2; c += 2 * W) {
      sq0 = square(c, W, sq0);
      sq1 = square(c + W, W, sq1);
    }
    for (int64_t c = c2; c < cols; c += W) sq0 = square(c, cols - c < W ? (int)(cols - c) : W, sq0);
    const float inv_std = 1.f / std::sqrt(VecF::reduce_add(VecF::add(sq0, sq1)) / (float)cols + eps);
    const R is = VecF::set1(inv_std);
    for (int64_t c = 0; c < cols; c += W) {
      const int n = cols - c < W ? (int)(cols - c) : W;
      const R d = VecF::mul(VecF::sub(VecF::load(o + c, n), mv), is);
      VecF::store(o + c, VecF::fma(d, VecF::load(gamma + c, n), VecF::load(beta + c, n)), n);
    }
    if (!u8) continue;
    if (u8->per_row) quantize_row_per_row(o, cols, u8->data + r * cols, u8->row_scale + r, u8->row_zp + r);
    else quantize_row<true>(o, cols, u8->scale, u8->zp, u8->data + r * cols);
  }
}
