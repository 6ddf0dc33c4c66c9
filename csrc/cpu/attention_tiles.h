// bf16 attention on tiles (AttentionPrecision::BF16), for the paths that define `Tiles`.
// Included by kernels_impl.h after the fp32 attention, whose softmax it shares.
//
// One (sequence, head), head_dim a multiple of 32: Q, K and V are rounded to bf16 once, K
// and V into the tiles' pair layout (a B row holds 2 consecutive k of 16 columns). Blocks of
// 32 query rows: scores = Q K^T as 2 x 2 tiles of 16 x 16 fp32 per 32 keys (TDPBF16PS sums
// the products in fp32); the fp32 softmax of attention_head (with the significance sums);
// probabilities rounded to bf16; context = P V as 2 x 2 tiles per 32 channels, 32 keys a step.
// Keys are padded to a multiple of 32 with zeros (their scores are not in the softmax, their
// probabilities are 0), query rows past the sequence are zeros whose outputs are dropped.

// x[0, d) rounded to bf16 into out (d a multiple of the vector width or not).
static inline void bf16_row(const float* x, int64_t d, uint16_t* out) {
  for (int64_t c = 0; c < d; c += W) {
    const int cnt = d - c < W ? (int)(d - c) : W;
    VecF::store_bf16(out + c, VecF::load(x + c, cnt), cnt);
  }
}

// Q rows, K^T in pairs of dims ([d / 2][np][2]) and V in pairs of keys ([np / 2][d][2]),
// rounded to bf16 once; keys and query rows n..np are zeros.
static void bf16_operands(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t np,
                          int64_t d, const Bf16AttentionScratch& w) {
  for (int64_t i = 0; i < n; ++i) bf16_row(q + i * ld, d, w.qb + i * d);
  std::memset(w.qb + n * d, 0, sizeof(uint16_t) * (np - n) * d);
  auto* kv32 = reinterpret_cast<uint32_t*>(w.kv);  // one 32-bit word = a pair of bf16
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

// Softmax of one row of n scores times `scale` into bf16 probabilities (out, zeros to np),
// adding the fp32 probabilities to sig unless it is nullptr: softmax_row's arithmetic, with
// the normalization, the rounding and the significance in one pass.
static void softmax_row_bf16(float* pr, int64_t n, int64_t np, float scale, float* sig, uint16_t* out) {
  const R inv = VecF::set1(1.f / exp_row(pr, n, row_max(pr, n), scale));
  for (int64_t j = 0; j < n; j += W) {
    const int cnt = n - j < W ? (int)(n - j) : W;
    const R p = VecF::mul(VecF::load(pr + j, cnt), inv);
    VecF::store_bf16(out + j, p, cnt);
    if (sig) VecF::store(sig + j, VecF::add(VecF::load(sig + j, cnt), p), cnt);
  }
  std::memset(out + n, 0, sizeof(uint16_t) * (np - n));
}

// Scores of the 16 or 32 (two) query rows from i0 against every key, 32 keys at a time, into
// w.scores (row stride np).
static void bf16_scores(const Bf16AttentionScratch& w, int64_t i0, bool two, int64_t np, int64_t d) {
  if (d == 32) {  // one k step per key block: the query tiles are loaded once for all of them
    Tiles::load<4>(w.qb + i0 * d, d * 2);
    if (two) Tiles::load<5>(w.qb + (i0 + 16) * d, d * 2);
    for (int64_t j0 = 0; j0 < np; j0 += kTileKeys) {
      float* c = w.scores + j0;
      Tiles::zero<0>(); Tiles::zero<1>();
      Tiles::load<6>(w.kv + 2 * j0, np * 4);
      Tiles::load<7>(w.kv + 2 * j0 + 32, np * 4);
      Tiles::dpbf16ps<0, 4, 6>();
      Tiles::dpbf16ps<1, 4, 7>();
      Tiles::store<0>(c, np * 4);
      Tiles::store<1>(c + 16, np * 4);
      if (two) {
        Tiles::zero<2>(); Tiles::zero<3>();
        Tiles::dpbf16ps<2, 5, 6>();
        Tiles::dpbf16ps<3, 5, 7>();
        Tiles::store<2>(c + 16 * np, np * 4);
        Tiles::store<3>(c + 16 * np + 16, np * 4);
      }
    }
    return;
  }
  for (int64_t j0 = 0; j0 < np; j0 += kTileKeys)
    bf16_tiles_32(w.qb + i0 * d, d, w.kv + 2 * j0, 2 * np, d, two, w.scores + j0, np);
}

// Context of the block's rows from its bf16 probabilities (w.pb) and V, 32 channels at a time,
// into w.ctx (row stride d).
static void bf16_context(const Bf16AttentionScratch& w, bool two, int64_t np, int64_t d) {
  for (int64_t c0 = 0; c0 < d; c0 += 32) bf16_tiles_32(w.pb, np, w.vv + 2 * c0, 2 * d, np, two, w.ctx + c0, d);
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
  const float scale = 1.f / std::sqrt((float)d);
  for (int64_t i0 = 0; i0 < n; i0 += kTileKeys) {
    const int rows = n - i0 < kTileKeys ? (int)(n - i0) : (int)kTileKeys;
    const bool two = rows > 16;
    bf16_scores(w, i0, two, np, d);
    for (int r = 0; r < rows; ++r) softmax_row_bf16(w.scores + r * np, n, np, scale, sig, w.pb + r * np);
    for (int r = rows; r < (two ? 32 : 16); ++r) std::memset(w.pb + r * np, 0, sizeof(uint16_t) * np);
    bf16_context(w, two, np, d);
    for (int r = 0; r < rows; ++r) std::memcpy(a.context + (off + i0 + r) * H + h * d, w.ctx + r * d, sizeof(float) * d);
  }
}
