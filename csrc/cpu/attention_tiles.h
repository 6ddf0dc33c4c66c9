// bf16 attention on tiles (AttentionPrecision::BF16), for the paths that define `Tiles`.
// Included by kernels_impl.h after the fp32 attention.
//
// One (sequence, head), head_dim a multiple of 32: Q, K and V come in bf16 (the QKV GEMM
// rounds its output), K and V are put into the tiles' pair layout (a B row holds 2
// consecutive k of 16 columns). Per block of 32 query rows, 32 keys at a time: scores = Q K^T
// as 2 x 2 tiles of 16 x 16 fp32 (TDPBF16PS sums the products in fp32) into one 4 KB block,
// which stays in L1 (tile stores into a whole 32 x n score matrix ran at a fifth of the
// speed), then at once e = 2^(t - M) with t = score * log2(e) / sqrt(d) (a cubic: within
// 7.5e-5, far inside bf16's rounding): rounded to bf16 as the block's rows of P, summed per row.
// The shift M of a row is an integer upper bound of its t's (sum_c |q_c| max_j |k_jc|, scaled),
// known before any score, so no pass finds the maximum first; an integer, because scaling by
// a power of two commutes with rounding to bf16: P / sum is the same for every such shift (up
// to values flushed to zero). A row whose bound overshoots its maximum so far that its sum
// falls under 2^-90 runs again with the maximum as the shift (above that, every e within
// 2^-27 of the row's largest is a normal float; 2^-60 sent many rows of the trained model
// through the rerun, 9% slower than int16 attention at n384). Context = P V as 2 x 2 tiles
// per 32 channels, 32 keys a step, then divided by the row's sum; the significance adds
// P * bf16(1 / sum) from the bf16 rows of P (significance_of_block). Keys are padded to a
// multiple of 32 with zeros (their e are 0), query rows past the sequence are zeros whose
// outputs are dropped.

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

// From the QKV projection's bf16 output (rows of d channels, stride ld): Q rows copied with
// zero rows n..np, K^T in pairs of dims ([d / 2][np][2]) and V in pairs of keys ([np / 2][d][2]),
// keys n..np zero. Also each query row's bound on its scores, sum_c |q_c| max_j |k_jc| (w.qbound).
static void bf16_operands(const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t ld, int64_t n, int64_t np,
                          int64_t d, const Bf16AttentionScratch& w) {
  for (int64_t c = 0; c < d; ++c) w.kmax[c] = 0.f;
  for (int64_t i = 0; i < n; ++i) std::memcpy(w.qb + i * d, q + i * ld, sizeof(uint16_t) * d);
  std::memset(w.qb + n * d, 0, sizeof(uint16_t) * (np - n) * d);
  auto* kv32 = reinterpret_cast<uint32_t*>(w.kv);  // one 32-bit word = a pair of bf16
#ifdef __AVX512BF16__
  // 32 channels (64 bytes) at a time. |k| maxima as 16-bit integers (the bits of non-negative
  // floats order as the values). K: the 16 pairs of each of 16 keys (a register per key)
  // transposed into 16 pair rows of 16 keys, a 64-byte store each (a scatter per key was
  // slower). V: two keys interleaved by two permutes.
  auto row32 = [&](const uint16_t* x, bool live) { return live ? _mm512_loadu_si512(x) : _mm512_setzero_si512(); };
  const __m512i magnitude = _mm512_set1_epi16(0x7fff);
  for (int64_t c0 = 0; c0 < d; c0 += 32) {
    __m512i most = _mm512_setzero_si512();
    for (int64_t j = 0; j < n; ++j) most = _mm512_max_epu16(most, _mm512_and_si512(row32(k + j * ld + c0, true), magnitude));
    alignas(64) uint16_t bits[32];
    _mm512_store_si512(bits, most);
    VecF::store(w.kmax + c0, VecF::load_bf16(bits));
    VecF::store(w.kmax + c0 + 16, VecF::load_bf16(bits + 16));
  }
  for (int64_t j0 = 0; j0 < np; j0 += 16)  // np is whole key blocks
    for (int64_t c0 = 0; c0 < d; c0 += 32) {
      __m512i r[16];
      for (int t = 0; t < 16; ++t) r[t] = row32(k + (j0 + t) * ld + c0, j0 + t < n);
      transpose_16x16_epi32(r);
      for (int g = 0; g < 16; ++g) _mm512_storeu_si512(kv32 + (c0 / 2 + g) * np + j0, r[g]);
    }
  const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                      39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
  for (int64_t j = 0; j < np; j += 2)
    for (int64_t c0 = 0; c0 < d; c0 += 32) {
      const __m512i a = row32(v + j * ld + c0, j < n), b = row32(v + (j + 1) * ld + c0, j + 1 < n);
      uint16_t* out = w.vv + j * d + 2 * c0;
      _mm512_storeu_si512(out, _mm512_permutex2var_epi16(a, lo, b));
      _mm512_storeu_si512(out + 32, _mm512_permutex2var_epi16(a, hi, b));
    }
#else  // the same by scalar copies (amx_emulated)
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < d; ++c) w.kmax[c] = std::fmax(w.kmax[c], std::fabs(VecF::load_bf16(k + j * ld + c)));
  for (int64_t j = 0; j < np; ++j)
    for (int64_t g = 0; g < d / 2; ++g) {
      const uint32_t low = j < n ? k[j * ld + 2 * g] : 0, high = j < n ? k[j * ld + 2 * g + 1] : 0;
      kv32[g * np + j] = low | high << 16;
    }
  for (int64_t j = 0; j < np; ++j)  // key j: slot j % 2 of its pair's channels
    for (int64_t c = 0; c < d; ++c) w.vv[(j / 2 * 2) * d + 2 * c + j % 2] = j < n ? v[j * ld + c] : 0;
#endif
  for (int64_t i = 0; i < n; ++i) {  // d is whole vectors
    R b = VecF::zero();
    for (int64_t c = 0; c < d; c += W) b = VecF::fma(VecF::abs(VecF::load_bf16(q + i * ld + c)), VecF::load(w.kmax + c), b);
    w.qbound[i] = VecF::reduce_add(b);
  }
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
// zeros past n); per row the vector sums of e into w.sums (W floats a row).
static void bf16_exponentials(const Bf16AttentionScratch& w, int64_t i0, int rows, bool two, int64_t n, int64_t np,
                              int64_t d, float sl) {
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

// The significance of a block of query rows, from their bf16 rows of P: sig[j] += sum over
// rows r of P[r][j] * bf16(inv_sums[r]) (the row's 1 / sum). Two rows at a time by one
// vdpbf16ps (products of bf16s are exact in fp32): their keys interleaved, against the pair
// of their 1 / sum. No fp32 copy of e (32 rows' went out of L1, so the blocks had 16 rows
// and half as many products per tile load). Rows `rows`.. of P are zeros (made for the P V
// tiles), so an odd last row pairs with zeros. Rows of P are np wide, zero past n.
static void significance_of_block(const Bf16AttentionScratch& w, const float* inv_sums, int rows, int64_t n,
                                  int64_t np, float* sig) {
  const int pairs = (rows + 1) / 2;
  alignas(4) uint16_t inv_bf16[kTileKeys] = {};  // zero past `rows`
  for (int r = 0; r < rows; ++r) VecF::store_bf16(inv_bf16 + r, VecF::set1(inv_sums[r]), 1);
  uint32_t inv_pairs[kTileKeys / 2];  // (bf16(1 / sum) of row 2i, of row 2i + 1)
  std::memcpy(inv_pairs, inv_bf16, sizeof inv_pairs);
#ifdef __AVX512BF16__
  // unpacklo/hi interleave keys within 128-bit lanes: lane L of lo holds keys 8L..8L+3, of hi
  // keys 8L+4..8L+7; two permutes put the 32 sums back in key order.
  const __m512i first = _mm512_set_epi32(23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
  const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
  for (int64_t j = 0; j < n; j += kTileKeys) {
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    for (int p = 0; p < pairs; ++p) {
      const __m512i a = _mm512_loadu_si512(w.pb + 2 * p * np + j), b = _mm512_loadu_si512(w.pb + (2 * p + 1) * np + j);
      const __m512bh inv = (__m512bh)_mm512_set1_epi32((int)inv_pairs[p]);
      lo = _mm512_dpbf16_ps(lo, (__m512bh)_mm512_unpacklo_epi16(a, b), inv);
      hi = _mm512_dpbf16_ps(hi, (__m512bh)_mm512_unpackhi_epi16(a, b), inv);
    }
    const __m512 keys[2] = {_mm512_permutex2var_ps(lo, first, hi), _mm512_permutex2var_ps(lo, second, hi)};
    for (int v = 0; v < 2; ++v) {
      const int64_t j0 = j + 16 * v;
      if (j0 >= n) break;
      const int cnt = n - j0 < 16 ? (int)(n - j0) : 16;
      store_n(sig + j0, VecF::add(load_n(sig + j0, cnt), keys[v]), cnt);
    }
  }
#else  // the same arithmetic by scalars (amx_emulated): the odd element's product first,
       // bf16 subnormals as zeros, as vdpbf16ps does
  auto value = [](uint16_t bits) {
    const uint32_t u = (bits & 0x7f80u) ? (uint32_t)bits << 16 : (uint32_t)(bits & 0x8000u) << 16;
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
  };
  for (int64_t j = 0; j < n; ++j) {
    float total = 0.f;
    for (int p = 0; p < pairs; ++p) {
      total = std::fma(value(w.pb[(2 * p + 1) * np + j]), value((uint16_t)(inv_pairs[p] >> 16)), total);
      total = std::fma(value(w.pb[2 * p * np + j]), value((uint16_t)inv_pairs[p]), total);
    }
    sig[j] += total;
  }
#endif
}

static void attention_head_bf16(const AttentionArgs& a, int64_t s, int64_t h, float* work) {
  const int64_t off = a.offsets[s], n = a.offsets[s + 1] - off;
  const int64_t d = a.head_dim, H = a.num_heads * d, ld = a.ld;
  const int64_t np = round_up(n, kTileKeys);
  ScratchCarver carver(work);
  const Bf16AttentionScratch w = carve_bf16_attention(carver, np, d, kTileKeys);
  float* sig = head_significance(a, s, h);
  const uint16_t* q = a.qkv_bf16 + h * a.head_stride + off * ld;
  bf16_operands(q, q + a.part_stride, q + 2 * a.part_stride, ld, n, np, d, w);
  const float sl = kLog2e / std::sqrt((float)d);
  for (int64_t i0 = 0; i0 < n; i0 += kTileKeys) {
    const int rows = n - i0 < kTileKeys ? (int)(n - i0) : (int)kTileKeys;
    const bool two = rows > 16;
    for (int r = 0; r < rows; ++r) w.shift[r] = std::ceil(w.qbound[i0 + r] * sl);
    auto exponentials = [&] { bf16_exponentials(w, i0, rows, two, n, np, d, sl); };
    exponentials();
    bool overshot = false;
    for (int r = 0; r < rows; ++r) overshot |= VecF::reduce_add(VecF::load(w.sums + r * W)) < 0x1p-90f;
    if (overshot) {  // every row of the block again, shifted by its maximum
      bf16_row_maxima(w, i0, rows, two, n, np, d, sl);
      exponentials();
    }
    for (int r = rows; r < (two ? 32 : 16); ++r) std::memset(w.pb + r * np, 0, sizeof(uint16_t) * np);
    for (int64_t c0 = 0; c0 < d; c0 += 32) bf16_tiles_32(w.pb, np, w.vv + 2 * c0, 2 * d, np, two, w.ctx + c0, d);
    float inv_sums[kTileKeys];
    for (int r = 0; r < rows; ++r) inv_sums[r] = 1.f / VecF::reduce_add(VecF::load(w.sums + r * W));
    // The significance between the P V tiles and the context's stores (behind the stores, its
    // first loads stalled).
    if (sig) significance_of_block(w, inv_sums, rows, n, np, sig);
    for (int r = 0; r < rows; ++r) {
      const R inv = VecF::set1(inv_sums[r]);
      float* out = a.context + (off + i0 + r) * H + h * d;
      for (int64_t c = 0; c < d; c += W) VecF::store(out + c, VecF::mul(VecF::load(w.ctx + r * d + c), inv));
    }
  }
}
