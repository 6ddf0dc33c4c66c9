// The int8 GEMM on AMX-style tiles (tiles.h), for the paths that define `Tiles`. Included by
// kernels_impl.h after the vector GEMM, whose panels, epilogues and row tail it shares: the
// tiles replace only the inner product. Results are the vector path's exactly (the same
// int32 sums, the same epilogue).
//
// A task is (rows, weight panel of 64 columns). Its rows go in blocks of 32 (two A tiles) or
// 16; each block makes its 64 columns in two halves of 32 (two B tiles), so four
// accumulator tiles take 4 TDPBUSD per 2 A and 2 B tile loads: 1 KB of loads per TDPBUSD,
// more than the L2 cache delivers, so the loads must mostly hit L1. A block's rows and
// panel fit L1 at K = 384 (12 + 24 KB), not at K = 1536 (48 + 96 KB), where both halves
// read all of A from L2: so K runs in chunks of at most kTileChunkK, both halves of a chunk
// before the next (the second half reads the chunk's A from L1; the accumulators go through
// the acc buffer between chunks). B tiles are read straight from the packed panel (a k-group
// row is 256 bytes); the last partial 64 k come from a zero-padded copy of A's bytes, and B's
// rows past the end then multiply zeros (PackedWeight leaves kPackedSlackBytes readable after
// the last panel). Rows past the last multiple of 16 go through the vector tile kernel.
static_assert(kActShift == 0, "the tile path feeds activations unshifted");

constexpr int64_t kTileBlockRows = 32;
// Below this many rows, the vector kernel is as fast (bench/gemm_bench.py --paths).
constexpr int64_t kTileMinRows = 16;
// The longest K chunk: a 32-row block's A (12 KB) and the panel's B (24 KB) at K = 384 fit
// L1 (48 KB) beside the accumulators.
constexpr int64_t kTileChunkK = 384;

// Rows [m, m + 16 * ROW_TILES) x columns [32 * half, 32 * half + 32) of a panel, summed over
// k in [k0, k1) (k0 a multiple of 64; k1 = K or a multiple of 64) into acc (kPanel int32 per
// row), added to what acc holds unless k0 = 0. between() runs after each k step's products
// are issued: vector work placed there overlaps the tile unit's (tile_rows).
template <int ROW_TILES, class Between>
static void tile_block(const GemmArgs& a, int64_t m, const int8_t* panel, int half, int64_t k0, int64_t k1,
                       int32_t* acc, Between&& between) {
  const int64_t K = a.W.K, kfull = K / 64 * 64, kend = k1 < kfull ? k1 : kfull, lda = a.lda;
  const uint8_t* A = a.A + m * lda;
  const int8_t* B = panel + half * 32 * 4;
  int32_t* c = acc + half * 32;
  if (k0 == 0) {
    Tiles::zero<0>();
    Tiles::zero<1>();
    if constexpr (ROW_TILES == 2) {
      Tiles::zero<2>();
      Tiles::zero<3>();
    }
  } else {
    Tiles::load<0>(c, kPanel * 4);
    Tiles::load<1>(c + 16, kPanel * 4);
    if constexpr (ROW_TILES == 2) {
      Tiles::load<2>(c + 16 * kPanel, kPanel * 4);
      Tiles::load<3>(c + 16 * kPanel + 16, kPanel * 4);
    }
  }
  auto step = [&](const uint8_t* a0, int64_t stride, const int8_t* b) __attribute__((always_inline)) {
    Tiles::load<4>(a0, stride);
    Tiles::load<6>(b, 256);
    Tiles::load<7>(b + 64, 256);
    Tiles::dpbusd<0, 4, 6>();
    Tiles::dpbusd<1, 4, 7>();
    if constexpr (ROW_TILES == 2) {
      Tiles::load<5>(a0 + 16 * stride, stride);
      Tiles::dpbusd<2, 5, 6>();
      Tiles::dpbusd<3, 5, 7>();
    }
  };
  for (int64_t k = k0; k < kend; k += 64) {
    step(A + k, lda, B + k / 4 * 256);
    between();
  }
  if (k1 == K && kfull < K) {
    alignas(64) uint8_t tail[kTileBlockRows * 64] = {};
    for (int r = 0; r < 16 * ROW_TILES; ++r) std::memcpy(tail + r * 64, A + r * lda + kfull, K - kfull);
    step(tail, 64, B + kfull / 4 * 256);
    between();
  }
  Tiles::store<0>(c, kPanel * 4);
  Tiles::store<1>(c + 16, kPanel * 4);
  if constexpr (ROW_TILES == 2) {
    Tiles::store<2>(c + 16 * kPanel, kPanel * 4);
    Tiles::store<3>(c + 16 * kPanel + 16, kPanel * 4);
  }
}

// The K chunk of a GEMM: K in the fewest chunks of at most kTileChunkK, as equal as whole 64 k
// steps allow (K = 1553: 4 x 320 + 273, not 4 x 384 + 17).
static int64_t tile_chunk_k(int64_t K) {
  const int64_t chunks = (K + kTileChunkK - 1) / kTileChunkK;
  return ((K + chunks - 1) / chunks + 63) / 64 * 64;
}

// The int32 sums of rows [m, m + 16 * ROW_TILES) and `halves` halves of a panel into acc:
// K in chunks, both halves of each chunk before the next.
template <int ROW_TILES, class Between>
static void tile_sums(const GemmArgs& a, int64_t m, const int8_t* panel, int halves, int32_t* acc, Between&& between) {
  const int64_t K = a.W.K, chunk = tile_chunk_k(K);
  for (int64_t k0 = 0; k0 < K; k0 += chunk) {
    const int64_t k1 = k0 + chunk < K ? k0 + chunk : K;
    for (int h = 0; h < halves; ++h) tile_block<ROW_TILES>(a, m, panel, h, k0, k1, acc, between);
  }
}

// The zero-point correction the vector kernel starts its accumulators from, added after.
static void add_zero_point_correction(const GemmArgs& a, const Panel& pn, int64_t m, int rows, int32_t* acc) {
  if (!a.a_per_row) {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < kPanel; ++c) acc[r * kPanel + c] += pn.init[c];
    return;
  }
  const int32_t* colsum = a.W.col_sums + pn.n0;
  for (int r = 0; r < rows; ++r) {
    const int32_t corr = kActShift - a.a_zp[m + r];
    for (int c = 0; c < kPanel; ++c) acc[r * kPanel + c] += corr * colsum[c];
  }
}

// Rows [m, m_end) of weight panel p; the calling thread's tiles are configured. With K = 384
// the tiles finish a block's products faster than the vector units run its epilogue (GELU,
// requantization), so the epilogue of each block runs a few rows at a time between the next
// block's k steps (two accumulator buffers), where the out-of-order core overlaps the two.
static void tile_rows(const GemmArgs& a, int64_t m, int64_t m_end, int64_t p, Epilogue epilogue) {
  Panel pn;
  make_panel(a, p, pn);
  // The tiles start from zero: the epilogue adds the zero-point correction, or for int32
  // outputs (and K past kMaxPairCorrectionK) a pass over the accumulators does. `epilogue`
  // (corrected accumulators) stays for the vector rows past the last tile.
  const bool s32 = a.out_kind == OutKind::S32;
  const bool correction_pass = s32 || a.W.K > kMaxPairCorrectionK;
  const bool stream = streams_output(a);
  const Epilogue tile_epilogue = s32               ? epilogue
                                 : correction_pass ? pick_epilogue(a, stream)
                                                   : pick_epilogue<true>(a, stream);
  const int8_t* panel = a.W.data + p * a.W.Kg * 4 * kPanel;
  const int halves = pn.ncols > 32 ? 2 : 1;
  const int64_t ksteps = halves * ((a.W.K + 63) / 64);
  alignas(64) int32_t acc[2][kTileBlockRows * kPanel];
  struct Pending { int32_t* acc = nullptr; int64_t m = 0; int rows = 0, done = 0; } prev;
  auto finish = [&](int upto) {  // epilogue of the previous block's rows [done, upto)
    if (upto <= prev.done) return;
    int32_t* c = prev.acc + prev.done * kPanel;
    if (correction_pass) add_zero_point_correction(a, pn, prev.m + prev.done, upto - prev.done, c);
    tile_epilogue(a, pn, c, prev.m + prev.done, upto - prev.done);
    prev.done = upto;
  };
  int cur = 0;
  while (m + 16 <= m_end) {
    const int rows = m + 32 <= m_end ? 32 : 16;
    int64_t step = 0;
    auto between = [&] { finish((int)(prev.rows * ++step / ksteps)); };
    if (rows == 32) tile_sums<2>(a, m, panel, halves, acc[cur], between);
    else tile_sums<1>(a, m, panel, halves, acc[cur], between);
    finish(prev.rows);
    prev = Pending{acc[cur], m, rows, 0};
    cur ^= 1;
    m += rows;
  }
  finish(prev.rows);
  vector_rows(a, pn, m, m_end, epilogue);
}

static void gemm_tiles(const GemmArgs& a) {
  // Blocks of up to 4 x 32 rows; every thread that runs tiles configures its own.
  run_tasks(a, kTileBlockRows, 4, tile_rows, [] { Tiles::configure(full_tiles()); }, [] { Tiles::release(); });
}

static bool uses_tiles(const GemmArgs& a) { return a.M >= kTileMinRows; }

// Register-only TDPBUSD loop (4 independent accumulators): the tiles' int8 peak.
inline int64_t tile_peak_loop(int64_t iters) {
  Tiles::configure(full_tiles());
  Tiles::zero<0>(); Tiles::zero<1>(); Tiles::zero<2>(); Tiles::zero<3>();
  Tiles::zero<4>(); Tiles::zero<5>(); Tiles::zero<6>(); Tiles::zero<7>();
  for (int64_t it = 0; it < iters; ++it) {
    Tiles::dpbusd<0, 4, 6>();
    Tiles::dpbusd<1, 4, 7>();
    Tiles::dpbusd<2, 5, 6>();
    Tiles::dpbusd<3, 5, 7>();
  }
  Tiles::release();
  return iters * 4 * 16 * 16 * 64;
}

// tile_sums on cache-resident rows and one panel: the tile GEMM's ceiling (int8_tile_macs_per_s).
inline void tile_ceiling_call(const uint8_t* A, int64_t K, const int8_t* panel, int32_t* acc) {
  GemmArgs a;
  a.A = A;
  a.lda = K;
  a.W.K = K;
  tile_sums<2>(a, 0, panel, 2, acc, [] {});
}
