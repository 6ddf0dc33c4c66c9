// bf16 attention on tiles (AttentionPrecision::BF16), for the paths that define `Tiles`.
// Included by kernels_impl.h after the fp32 attention, whose exp it shares.
//
// One (sequence, head), head_dim a multiple of 32: Q, K and V are rounded to bf16 once, K
// and V into the tiles' pair layout (a B row holds 2 consecutive k of 16 columns). Per block
// of 32 query rows, 32 keys at a time: scores = Q K^T as 2 x 2 tiles of 16 x 16 fp32
// (TDPBF16PS sums the products in fp32) into one 4 KB block, which stays in L1 (tile stores
// into a whole 32 x n score matrix ran at a fifth of the speed), then at once e = 2^(t - M)
// with t = score * log2(e) / sqrt(d) (a cubic: within 7.5e-5, far inside bf16's rounding):
// rounded to bf16 as the block's rows of P, summed per row.
// The shift M of a row is an integer upper bound of its t's (sum_c |q_c| max_j |k_jc|, scaled),
// known before any score, so no pass finds the maximum first; an integer, because scaling by
// a power of two commutes with rounding to bf16: P / sum is the same for every such shift (up
// to values flushed to zero). A row whose bound overshoots its maximum so far that its sum
// falls under 2^-90 runs again with the maximum as the shift (above that, every e within
// 2^-27 of the row's largest is a normal float; 2^-60 sent many rows of the trained model
// through the rerun, 9% slower than int16 attention at n384). Context = P V as 2 x 2 tiles
// per 32 channels, 32 keys a step, then divided by the row's sum; the significance adds
// e / sum (fp32). Keys are padded to a multiple of 32 with zeros (their e are 0), query rows
// past the sequence are zeros whose outputs are dropped.

// x[0, d) rounded to bf16 into out (d a multiple of the vector width or not).
static inline void bf16_row(const float* x, int64_t d, uint16_t* out) {
  int64_t c = 0;
  for (; c + 2 * W <= d; c += 2 * W) VecF::store_bf16_two(out + c, VecF::load(x + c), VecF::load(x + c + W));
  for (; c < d; c += W) {
    const int cnt = d - c < W ? (int)(d - c) : W;
    VecF::store_bf16(out + c, VecF::load(x + c, cnt), cnt);
  }
}

#ifdef __AVX512BF16__
// r[i] lane j -> r[j] lane i for 16 registers of 16 32-bit lanes: pairs of rows interleaved by
// 32 and 64 bits, then 128-bit lanes gathered in two rounds (64 shuffles for 256 words).
static inline void transpose_16x16_epi32(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // r[i + m], lane L: column 4L + m of rows i..i+3
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int m = 0; m < 4; ++m) {  // column 4L + m gathers lane L of r[m], r[4 + m], r[8 + m], r[12 + m]
    const __m512i a = _mm512_shuffle_i32x4(r[m], r[4 + m], 0x88), b = _mm512_shuffle_i32x4(r[m], r[4 + m], 0xdd);
    const __m512i c = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0x88), e = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0xdd);
    t[m] = _mm512_shuffle_i32x4(a, c, 0x88);
    t[4 + m] = _mm512_shuffle_i32x4(b, e, 0x88);
    t[8 + m] = _mm512_shuffle_i32x4(a, c, 0xdd);
    t[12 + m] = _mm512_shuffle_i32x4(b, e, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}
#endif

// Q rows, K^T in pairs of dims ([d / 2][np][2]) and V in pairs of keys ([np / 2][d][2]),
// rounded to bf16 once; keys and query rows n..np are zeros. Also each query row's bound on
// its scores, sum_c |q_c| max_j |k_jc| (w.qbound).
static void bf16_operands(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t np,
                          int64_t d, const Bf16AttentionScratch& w) {
  for (int64_t c0 = 0; c0 < d; c0 += 4 * W) {  // up to 4 vectors of channels held in registers
    const int vectors = (int)((d - c0 < 4 * W ? d - c0 : 4 * W) + W - 1) / W;
    with_constant<4>(vectors, [&](auto count) {
      constexpr int V = decltype(count)::value;
      R most[V];
      int cnt[V];
      for (int u = 0; u < V; ++u) most[u] = VecF::zero(), cnt[u] = d - c0 - u * W < W ? (int)(d - c0 - u * W) : W;
      for (int64_t j = 0; j < n; ++j)
        for (int u = 0; u < V; ++u) most[u] = VecF::max(most[u], VecF::abs(load_n(k + j * ld + c0 + u * W, cnt[u])));
      for (int u = 0; u < V; ++u) store_n(w.kmax + c0 + u * W, most[u], cnt[u]);
    });
  }
  for (int64_t i = 0; i < n; ++i) {
    bf16_row(q + i * ld, d, w.qb + i * d);
    R b = VecF::zero();
    for (int64_t c = 0; c < d; c += W) {
      const int cnt = d - c < W ? (int)(d - c) : W;
      b = VecF::fma(VecF::abs(VecF::load(q + i * ld + c, cnt)), VecF::load(w.kmax + c, cnt), b);
    }
    w.qbound[i] = VecF::reduce_add(b);
  }
  std::memset(w.qb + n * d, 0, sizeof(uint16_t) * (np - n) * d);
  auto* kv32 = reinterpret_cast<uint32_t*>(w.kv);  // one 32-bit word = a pair of bf16
#ifdef __AVX512BF16__
  // 32 channels at a time: the 16 pairs of each of 16 keys (a register per key) transposed
  // into 16 pair rows of 16 keys (a 64-byte store each; a scatter per key was slower), V's
  // two keys interleaved by two permutes.
  auto bf16_32 = [&](const float* x, bool live) {  // 32 floats as 32 bf16 (zeros if not live)
    if (!live) return _mm512_setzero_si512();
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
  };
  for (int64_t j0 = 0; j0 < np; j0 += 16)  // np is whole key blocks
    for (int64_t c0 = 0; c0 < d; c0 += 32) {
      __m512i r[16];
      for (int t = 0; t < 16; ++t) r[t] = bf16_32(k + (j0 + t) * ld + c0, j0 + t < n);
      transpose_16x16_epi32(r);
      for (int g = 0; g < 16; ++g) _mm512_storeu_si512(kv32 + (c0 / 2 + g) * np + j0, r[g]);
    }
  const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                      39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
  for (int64_t j = 0; j < np; j += 2)
    for (int64_t c0 = 0; c0 < d; c0 += 32) {
      const __m512i a = bf16_32(v + j * ld + c0, j < n), b = bf16_32(v + (j + 1) * ld + c0, j + 1 < n);
      uint16_t* out = w.vv + j * d + 2 * c0;
      _mm512_storeu_si512(out, _mm512_permutex2var_epi16(a, lo, b));
      _mm512_storeu_si512(out + 32, _mm512_permutex2var_epi16(a, hi, b));
    }
#else  // the same layouts by scalar copies (amx_emulated)
  for (int64_t j = 0; j < np; ++j) {
    if (j < n) bf16_row(k + j * ld, d, w.row);
    else std::memset(w.row, 0, sizeof(uint16_t) * d);
    for (int64_t g = 0; g < d / 2; ++g) std::memcpy(kv32 + g * np + j, w.row + 2 * g, 4);
  }
  for (int64_t j = 0; j < np; j += 2) {
    uint16_t* pair = w.vv + j * d;  // keys j, j + 1 interleaved per channel
    for (int64_t t = 0; t < 2; ++t) {
      if (j + t < n) bf16_row(v + (j + t) * ld, d, w.row);
      else std::memset(w.row, 0, sizeof(uint16_t) * d);
      for (int64_t c = 0; c < d; ++c) pair[2 * c + t] = w.row[c];
    }
  }
#endif
}

// C = A B for 16 or 32 (two) rows and 32 columns as 2 x 2 tiles of 16 x 16 fp32 (C's row
// stride ldc floats): A in bf16 rows (stride lda halves), B in the pair layout (pair row r,
// holding k = 2r and 2r + 1 of 32 columns, at b + r * ldb halves), K a multiple of 32.
static void bf16_tiles_32(const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, int64_t K, bool two,
                          float* c, int64_t ldc) {
  Tiles::zero<0>(); Tiles::zero<1>(); Tiles::zero<2>(); Tiles::zero<3>();
  for (int64_t k = 0; k < K; k += 32) {
    const uint16_t* bk = b + (k / 2) * ldb;
    Tiles::load<4>(a + k, lda * 2);
    Tiles::load<6>(bk, ldb * 2);
    Tiles::load<7>(bk + 32, ldb * 2);
    Tiles::dpbf16ps<0, 4, 6>();
    Tiles::dpbf16ps<1, 4, 7>();
    if (two) {
      Tiles::load<5>(a + 16 * lda + k, lda * 2);
      Tiles::dpbf16ps<2, 5, 6>();
      Tiles::dpbf16ps<3, 5, 7>();
    }
  }
  Tiles::store<0>(c, ldc * 4);
  Tiles::store<1>(c + 16, ldc * 4);
  if (two) {
    Tiles::store<2>(c + 16 * ldc, ldc * 4);
    Tiles::store<3>(c + 16 * ldc + 16, ldc * 4);
  }
}

// At head dim 32 the scores take one k step: the query tiles 4 and 5 are loaded once per row
// block, for all its key blocks.
static void load_query_tiles(const Bf16AttentionScratch& w, int64_t i0, bool two, int64_t d) {
  if (d != 32) return;
  Tiles::load<4>(w.qb + i0 * d, d * 2);
  if (two) Tiles::load<5>(w.qb + (i0 + 16) * d, d * 2);
}

// Scores of the 16 or 32 (two) query rows from i0 against keys [j0, j0 + 32) into `block`
// (row stride 32).
static void bf16_score_block(const Bf16AttentionScratch& w, int64_t i0, int64_t j0, bool two, int64_t np, int64_t d,
                             float* block) {
  if (d == 32) {  // load_query_tiles holds the queries
    Tiles::zero<0>(); Tiles::zero<1>();
    Tiles::load<6>(w.kv + 2 * j0, np * 4);
    Tiles::load<7>(w.kv + 2 * j0 + 32, np * 4);
    Tiles::dpbf16ps<0, 4, 6>();
    Tiles::dpbf16ps<1, 4, 7>();
    Tiles::store<0>(block, kTileKeys * 4);
    Tiles::store<1>(block + 16, kTileKeys * 4);
    if (two) {
      Tiles::zero<2>(); Tiles::zero<3>();
      Tiles::dpbf16ps<2, 5, 6>();
      Tiles::dpbf16ps<3, 5, 7>();
      Tiles::store<2>(block + 16 * kTileKeys, kTileKeys * 4);
      Tiles::store<3>(block + 16 * kTileKeys + 16, kTileKeys * 4);
    }
    return;
  }
  bf16_tiles_32(w.qb + i0 * d, d, w.kv + 2 * j0, 2 * np, d, two, block, kTileKeys);
}

static_assert(kTileKeys % (2 * W) == 0, "a key block is whole pairs of vectors");

// The exponentials of the block's `rows` rows: e = 2^(score * sl - shift[r]) into w.pb (bf16,
// zeros past n) and, with F32 (for the significance), w.e32; per row the vector sums of e
// into w.sums (W floats a row).
template <bool F32>
static void bf16_exponentials(const Bf16AttentionScratch& w, int64_t i0, int rows, bool two, int64_t n,
                              int64_t np, int64_t d, float sl) {
  load_query_tiles(w, i0, two, d);
  for (int r = 0; r < rows; ++r) VecF::store(w.sums + r * W, VecF::zero());
  const R slv = VecF::set1(sl);
  // The tiles fill the next block while the vector units read this one.
  float* blocks[2] = {w.block, w.block + kTileKeys * kTileKeys};
  bf16_score_block(w, i0, 0, two, np, d, blocks[0]);
  for (int64_t j0 = 0, b = 0; j0 < np; j0 += kTileKeys, b ^= 1) {
    if (j0 + kTileKeys < np) bf16_score_block(w, i0, j0 + kTileKeys, two, np, d, blocks[b ^ 1]);
    const int64_t live = n - j0 < kTileKeys ? n - j0 : kTileKeys;  // keys of the block below n
    for (int r = 0; r < rows; ++r) {
      const float* sr = blocks[b] + r * kTileKeys;
      const R shift = VecF::set1(-w.shift[r]);
      R sum = VecF::load(w.sums + r * W);
      uint16_t* pr = w.pb + r * np + j0;
      auto exponential = [&](int c) __attribute__((always_inline)) {
        const int64_t cnt = live - c;  // W or more: a whole vector of keys below n
        R e = VecF::zero();
        if (cnt > 0) e = VecF::exp2_cubic(VecF::fma(VecF::load(sr + c), slv, shift));
        if (cnt < W) e = VecF::keep(e, cnt > 0 ? (int)cnt : 0);
        sum = VecF::add(sum, e);
        if constexpr (F32) VecF::store(w.e32 + r * np + j0 + c, e);
        return e;
      };
      for (int c = 0; c < kTileKeys; c += 2 * W) {  // two vectors to one bf16 conversion
        const R lo = exponential(c);
        VecF::store_bf16_two(pr + c, lo, exponential(c + W));
      }
      VecF::store(w.sums + r * W, sum);
    }
  }
}

// Each of the block's rows' largest score * sl over the keys below n, into w.shift rounded up
// (the shift of a row whose bound overshot). Rarely needed: the scores are made again.
static void bf16_row_maxima(const Bf16AttentionScratch& w, int64_t i0, int rows, bool two, int64_t n, int64_t np,
                            int64_t d, float sl) {
  load_query_tiles(w, i0, two, d);
  R most[kTileKeys];  // per row, the maxima of whole vectors of keys
  float tail[kTileKeys];  // and of the keys of the last partial vector
  for (int r = 0; r < rows; ++r) most[r] = VecF::set1(-INFINITY), tail[r] = -INFINITY;
  for (int64_t j0 = 0; j0 < np; j0 += kTileKeys) {
    bf16_score_block(w, i0, j0, two, np, d, w.block);
    const int64_t live = n - j0 < kTileKeys ? n - j0 : kTileKeys, whole = live / W * W;
    for (int r = 0; r < rows; ++r) {
      const float* sr = w.block + r * kTileKeys;
      for (int64_t c = 0; c < whole; c += W) most[r] = VecF::max(most[r], VecF::load(sr + c));
      for (int64_t c = whole; c < live; ++c) tail[r] = std::fmax(tail[r], sr[c]);
    }
  }
  for (int r = 0; r < rows; ++r) w.shift[r] = std::ceil(std::fmax(VecF::reduce_max(most[r]), tail[r]) * sl);
}

static void attention_head_bf16(const AttentionArgs& a, int64_t s, int64_t h, float* work) {
  const int64_t off = a.offsets[s], n = a.offsets[s + 1] - off;
  const int64_t d = a.head_dim, H = a.num_heads * d, ld = a.ld;
  const int64_t np = round_up(n, kTileKeys);
  ScratchCarver carver(work);
  const Bf16AttentionScratch w = carve_bf16_attention(carver, np, d, kTileKeys);
  float* sig = head_significance(a, s, h);
  const float* q = a.qkv + h * a.head_stride + off * ld;
  bf16_operands(q, q + a.part_stride, q + 2 * a.part_stride, ld, n, np, d, w);
  const float sl = kLog2e / std::sqrt((float)d);
  for (int64_t i0 = 0; i0 < n; i0 += kTileKeys) {
    const int rows = n - i0 < kTileKeys ? (int)(n - i0) : (int)kTileKeys;
    const bool two = rows > 16;
    for (int r = 0; r < rows; ++r) w.shift[r] = std::ceil(w.qbound[i0 + r] * sl);
    auto exponentials = [&] {
      if (sig) bf16_exponentials<true>(w, i0, rows, two, n, np, d, sl);
      else bf16_exponentials<false>(w, i0, rows, two, n, np, d, sl);
    };
    exponentials();
    bool overshot = false;
    for (int r = 0; r < rows; ++r) overshot |= VecF::reduce_add(VecF::load(w.sums + r * W)) < 0x1p-90f;
    if (overshot) {  // every row of the block again, shifted by its maximum
      bf16_row_maxima(w, i0, rows, two, n, np, d, sl);
      exponentials();
    }
    for (int r = rows; r < (two ? 32 : 16); ++r) std::memset(w.pb + r * np, 0, sizeof(uint16_t) * np);
    for (int64_t c0 = 0; c0 < d; c0 += 32) bf16_tiles_32(w.pb, np, w.vv + 2 * c0, 2 * d, np, two, w.ctx + c0, d);
    for (int r = 0; r < rows; ++r) {
      const float inv_sum = 1.f / VecF::reduce_add(VecF::load(w.sums + r * W));
      const R inv = VecF::set1(inv_sum);
      float* out = a.context + (off + i0 + r) * H + h * d;
      for (int64_t c = 0; c < d; c += W) VecF::store(out + c, VecF::mul(VecF::load(w.ctx + r * d + c), inv));
      if (sig)
        for (int64_t j = 0; j < n; j += W) {
          const int cnt = n - j < W ? (int)(n - j) : W;
          VecF::store(sig + j, VecF::fma(VecF::load(w.e32 + r * np + j, cnt), inv, VecF::load(sig + j, cnt)), cnt);
        }
    }
  }
}
