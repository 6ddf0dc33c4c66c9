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

constexpr int64_t kTileKeys = 32;

// x[0, d) rounded to bf16 into out (d a multiple of the vector width or not).
static inline void bf16_row(const float* x, int64_t d, uint16_t* out) {
  for (int64_t c = 0; c < d; c += W) {
    const int cnt = d - c < W ? (int)(d - c) : W;
    VecF::store_bf16(out + c, VecF::load(x + c, cnt), cnt);
  }
}

static void attention_head_bf16(const AttentionArgs& a, int64_t s, int64_t h, float* work) {
  const int64_t off = a.offsets[s], n = a.offsets[s + 1] - off;
  const int64_t d = a.head_dim, H = a.num_heads * d, ld = a.ld;
  const int64_t np = (n + kTileKeys - 1) / kTileKeys * kTileKeys;
  uint16_t* qb = reinterpret_cast<uint16_t*>(work);  // [np][d]
  uint16_t* kv = qb + np * d;                         // [d / 2][np][2]: K^T in pairs of dims
  uint16_t* vv = kv + np * d;                         // [np / 2][d][2]: V in pairs of keys
  uint16_t* pb = vv + np * d;                         // [32][np]: probabilities
  uint16_t* row = pb + kTileKeys * np;                // [2][d]: converted rows
  float* scores = reinterpret_cast<float*>(work) + (bf16_attention_halves(n, d) + 1) / 2 + 8;  // [32][np]
  float* ctx = scores + kTileKeys * np;               // [32][d]
  float* sig = a.significance + h * a.offsets[a.num_seqs] + off;
  const float* q = a.qkv + h * a.head_stride + off * ld;
  const float* k = q + a.part_stride;
  const float* v = k + a.part_stride;

  for (int64_t i = 0; i < n; ++i) bf16_row(q + i * ld, d, qb + i * d);
  std::memset(qb + n * d, 0, sizeof(uint16_t) * (np - n) * d);
  auto* kv32 = reinterpret_cast<uint32_t*>(kv);  // one 32-bit word = a pair of bf16
  for (int64_t j = 0; j < np; ++j) {
    if (j < n) bf16_row(k + j * ld, d, row);
    else std::memset(row, 0, sizeof(uint16_t) * d);
    for (int64_t g = 0; g < d / 2; ++g) std::memcpy(kv32 + g * np + j, row + 2 * g, 4);
  }
  for (int64_t j = 0; j < np; j += 2) {
    uint16_t* pair = vv + j * d;  // keys j, j + 1 interleaved per channel
    for (int64_t t = 0; t < 2; ++t) {
      if (j + t < n) bf16_row(v + (j + t) * ld, d, row);
      else std::memset(row, 0, sizeof(uint16_t) * d);
      for (int64_t c = 0; c < d; ++c) pair[2 * c + t] = row[c];
    }
  }
  for (int64_t j = 0; j < n; ++j) sig[j] = 0.f;

  const float scale = 1.f / std::sqrt((float)d);
  for (int64_t i0 = 0; i0 < n; i0 += kTileKeys) {
    const int rows = n - i0 < kTileKeys ? (int)(n - i0) : (int)kTileKeys;
    const bool two = rows > 16;
    for (int64_t j0 = 0; j0 < np; j0 += kTileKeys) {  // scores of 32 queries x 32 keys
      Tiles::zero<0>(); Tiles::zero<1>(); Tiles::zero<2>(); Tiles::zero<3>();
      for (int64_t c0 = 0; c0 < d; c0 += 32) {
        const uint16_t* kb = kv + ((c0 / 2) * np + j0) * 2;
        Tiles::load<4>(qb + i0 * d + c0, d * 2);
        Tiles::load<6>(kb, np * 4);
        Tiles::load<7>(kb + 32, np * 4);
        Tiles::dpbf16ps<0, 4, 6>();
        Tiles::dpbf16ps<1, 4, 7>();
        if (two) {
          Tiles::load<5>(qb + (i0 + 16) * d + c0, d * 2);
          Tiles::dpbf16ps<2, 5, 6>();
          Tiles::dpbf16ps<3, 5, 7>();
        }
      }
      Tiles::store<0>(scores + j0, np * 4);
      Tiles::store<1>(scores + j0 + 16, np * 4);
      if (two) {
        Tiles::store<2>(scores + 16 * np + j0, np * 4);
        Tiles::store<3>(scores + 16 * np + j0 + 16, np * 4);
      }
    }
    for (int r = 0; r < rows; ++r) {
      softmax_row(scores + r * np, n, scale, sig);
      bf16_row(scores + r * np, n, pb + r * np);
      std::memset(pb + r * np + n, 0, sizeof(uint16_t) * (np - n));
    }
    for (int r = rows; r < (two ? 32 : 16); ++r) std::memset(pb + r * np, 0, sizeof(uint16_t) * np);
    for (int64_t c0 = 0; c0 < d; c0 += 32) {  // context of 32 queries x 32 channels
      Tiles::zero<0>(); Tiles::zero<1>(); Tiles::zero<2>(); Tiles::zero<3>();
      for (int64_t k0 = 0; k0 < np; k0 += kTileKeys) {
        const uint16_t* vb = vv + ((k0 / 2) * d + c0) * 2;
        Tiles::load<4>(pb + k0, np * 2);
        Tiles::load<6>(vb, d * 4);
        Tiles::load<7>(vb + 32, d * 4);
        Tiles::dpbf16ps<0, 4, 6>();
        Tiles::dpbf16ps<1, 4, 7>();
        if (two) {
          Tiles::load<5>(pb + 16 * np + k0, np * 2);
          Tiles::dpbf16ps<2, 5, 6>();
          Tiles::dpbf16ps<3, 5, 7>();
        }
      }
      Tiles::store<0>(ctx + c0, d * 4);
      Tiles::store<1>(ctx + c0 + 16, d * 4);
      if (two) {
        Tiles::store<2>(ctx + 16 * d + c0, d * 4);
        Tiles::store<3>(ctx + 16 * d + c0 + 16, d * 4);
      }
    }
    for (int r = 0; r < rows; ++r) std::memcpy(a.context + (off + i0 + r) * H + h * d, ctx + r * d, sizeof(float) * d);
  }
}
