// The int8 GEMM: panels, fused epilogues, the vector tile loop, the serial form. Part of kernels_impl.h (included by it, inside namespace qrt::cpu::QRT_ISA_NS,
// after the shared helpers), compiled once per ISA like the rest.

// The largest K whose column sums (|colsum| <= 127 K) split into int16 pairs (Panel).
constexpr int64_t kMaxPairCorrectionK = 32767;

// Two int16 as one int32 lane (low half first), the operand layout of vpdpwssd.
static inline int32_t int16_pair(int32_t low, int32_t high) {
  return (int32_t)((uint32_t)(uint16_t)low | (uint32_t)(uint16_t)high << 16);
}

// What the tiles of one weight panel share, made once per panel by gemm_rows: its columns,
// where each of their output vectors goes in row 0, the zero-point correction the
// accumulators start from and the dequantization scale a_scale * w_scale (both for a
// per-tensor activation quantization), and the bias, zero past the last column (and
// everywhere without one) so whole vectors load it.
struct Panel {
  int64_t p = 0, n0 = 0;
  int ncols = 0;
  int64_t col[kPanel / W];
  alignas(64) int32_t init[kPanel];
  // colsum as two int16 (low: colsum mod 128, high: floor(colsum / 128), |high| <= K, so for
  // K <= kMaxPairCorrectionK), so that one vpdpwssd adds the per-row correction corr * colsum
  // in int32 (int16_pair).
  alignas(64) int32_t colsum_pairs[kPanel];
  alignas(64) float scale[kPanel];
  alignas(64) float bias[kPanel];
};

static void make_panel(const GemmArgs& a, int64_t p, Panel& pn) {
  pn.p = p;
  pn.n0 = p * kPanel;
  pn.ncols = (int)(a.W.N - pn.n0 < kPanel ? a.W.N - pn.n0 : kPanel);
  for (int c = 0; c < pn.ncols; c += W) {
    const int64_t n = pn.n0 + c;
    pn.col[c / W] = a.out_split ? n / a.out_split * a.out_split_stride + n % a.out_split : n;
  }
  // Everything read through `a` is copied to locals first: the stores into pn could alias
  // it, which would keep these loops scalar (they run once per panel and row block).
  const int32_t* colsum = a.W.col_sums + pn.n0;
  const float* wscale = a.W.scales + pn.n0;  // padded to whole panels, like col_sums
  const int32_t corr = a.a_per_row ? 0 : kActShift - a.a_zp[0];
  const float a_scale = a.a_per_row ? 0.f : a.a_scale[0];
  for (int c = 0; c < kPanel; ++c) {
    pn.init[c] = corr * colsum[c];
    pn.colsum_pairs[c] = int16_pair(colsum[c] & 127, colsum[c] >> 7);
    pn.scale[c] = a_scale * wscale[c];
  }
  const float* bias = a.bias ? a.bias + pn.n0 : nullptr;
  const int nbias = bias ? pn.ncols : 0;
  for (int c = 0; c < nbias; ++c) pn.bias[c] = bias[c];
  for (int c = nbias; c < kPanel; ++c) pn.bias[c] = 0.f;
}

// The epilogue of one tile (rows of a weight panel; the accumulators already hold the exact
// zero-point correction): dequantize + bias, GELU, residual and the output conversion.
// One instantiation per output form, picked once per GEMM, so the loop has no branches and its
// pointers are locals (stores through float* could alias `a`, so fields would be reloaded).
// A whole panel runs with a constant vector count and unmasked loads and stores.
// STREAM (fp32 output only) writes whole vectors with non-temporal stores; gemm_u8s8 picks it
// for aligned outputs too large to stay in cache.
using Epilogue = void (*)(const GemmArgs&, const Panel&, const int32_t* acc, int64_t m0, int rows);

// CORRECT: the accumulators still lack the zero-point correction (the tile path, whose tiles
// start from zero), added here in int32 on the way to float: per tensor the panel's init, per
// row (kActShift - a_zp[m]) * colsum as corr * (colsum mod 128) + 128 corr * floor(colsum /
// 128), one int16-pair dot product (both factors of each fit int16) instead of a 32-bit
// multiply and an add. The same sums as a separate pass over the accumulators, without its
// loads and stores.
template <OutKind OUT, bool GELU, bool RESIDUAL, bool STREAM = false, bool CORRECT = false>
static void epilogue_tile(const GemmArgs& a, const Panel& pn, const int32_t* acc, int64_t m0, int rows) {
  static_assert(!(CORRECT && OUT == OutKind::S32), "int32 outputs take the correction pass");
  const int64_t n0 = pn.n0, ldo = a.ldo, ldr = a.ldr;
  const int ncols = pn.ncols;
  if constexpr (OUT == OutKind::S32) {
    for (int r = 0; r < rows; ++r, acc += kPanel)
      std::memcpy(static_cast<int32_t*>(a.out) + (m0 + r) * ldo + n0, acc, sizeof(int32_t) * ncols);
    return;
  }
  const float* residual = RESIDUAL ? a.residual + m0 * ldr + n0 : nullptr;
  const R inv_out = VecF::set1(1.f / a.out_scale), out_zp = VecF::set1((float)a.out_zp);
  const float* w_scale = a.W.scales + n0;
  auto run = [&](auto per_row_constant) __attribute__((always_inline)) {
    constexpr bool PER_ROW = decltype(per_row_constant)::value;
    for (int r = 0; r < rows; ++r, acc += kPanel) {
      // Per-row activations: the scale a_scale[m] * w_scale made in registers, the correction
      // (kActShift - a_zp[m]) * colsum; per tensor, both are the panel's.
      const R row_scale = VecF::set1(PER_ROW ? a.a_scale[m0 + r] : 0.f);
      const int32_t corr = PER_ROW ? kActShift - a.a_zp[m0 + r] : 0;
      const int32_t corr_pair = int16_pair(corr, 128 * corr);
      auto step = [&](int c, int n) __attribute__((always_inline)) {
        const R scale = PER_ROW ? VecF::mul(row_scale, VecF::load(w_scale + c)) : VecF::load(pn.scale + c);
        R sum;
        if constexpr (!CORRECT) sum = VecF::from_i32(acc + c);
        else if constexpr (PER_ROW) sum = VecF::from_i32_dot_pairs(acc + c, pn.colsum_pairs + c, corr_pair);
        else sum = VecF::from_i32_plus(acc + c, pn.init + c);
        R v = VecF::fma(sum, scale, VecF::load(pn.bias + c));
        if constexpr (GELU) v = gelu_vec<VecF>(v, 0);
        if constexpr (RESIDUAL) v = VecF::add(v, load_n(residual + r * ldr + c, n));
        if constexpr (OUT == OutKind::F32) {
          float* o = static_cast<float*>(a.out) + (m0 + r) * ldo + pn.col[c / W];
          if (STREAM && n == W) VecF::stream(o, v);
          else store_n(o, v, n);
#ifdef QRT_TILES
        } else if constexpr (OUT == OutKind::BF16) {
          VecF::store_bf16(static_cast<uint16_t*>(a.out) + (m0 + r) * ldo + pn.col[c / W], v, n);
#endif
        } else {
          VecF::store_u8(static_cast<uint8_t*>(a.out) + (m0 + r) * ldo + pn.col[c / W], VecF::fma(v, inv_out, out_zp), n);
        }
      };
      if (ncols == kPanel) {
#pragma GCC unroll 8
        for (int c = 0; c < kPanel; c += W) step(c, W);
      } else {
        for (int c = 0; c < ncols; c += W) step(c, ncols - c < W ? ncols - c : W);
      }
    }
  };
  if (a.a_per_row) run(std::true_type{});
  else run(std::false_type{});
}

template <OutKind OUT, bool STREAM = false, bool CORRECT = false>
static Epilogue epilogue_for(bool gelu, bool residual) {
  if (gelu) return residual ? epilogue_tile<OUT, true, true, STREAM, CORRECT> : epilogue_tile<OUT, true, false, STREAM, CORRECT>;
  return residual ? epilogue_tile<OUT, false, true, STREAM, CORRECT> : epilogue_tile<OUT, false, false, STREAM, CORRECT>;
}

// correct: the epilogue adds the zero-point correction (not for int32 outputs).
template <bool CORRECT = false>
static Epilogue pick_epilogue(const GemmArgs& a, bool stream = false) {
  const bool residual = a.residual != nullptr;
  switch (a.out_kind) {
    case OutKind::S32: return epilogue_tile<OutKind::S32, false, false>;
    case OutKind::U8: return epilogue_for<OutKind::U8, false, CORRECT>(a.gelu, residual);
#ifdef QRT_TILES  // the paths with bf16 conversions (ops.cpp refuses BF16 elsewhere)
    case OutKind::BF16: return epilogue_for<OutKind::BF16, false, CORRECT>(a.gelu, residual);
#endif
    default: return stream ? epilogue_for<OutKind::F32, true, CORRECT>(a.gelu, residual)
                           : epilogue_for<OutKind::F32, false, CORRECT>(a.gelu, residual);
  }
}

// Whether a GEMM writes its output with non-temporal stores: an fp32 output of at least
// kStreamOutputBytes, whose every output vector is aligned (base, row stride and column-block
// stride in whole vectors). An output that large does not fit the cores' own caches, so each
// of its lines would be read in only to be overwritten; streaming skips that read, bandwidth
// that large-M GEMMs wait on. Smaller outputs (the encoder's row chunks, batch-1 layers) keep
// ordinary stores and stay cached for the kernel that reads them next.
constexpr int64_t kStreamOutputBytes = int64_t(4) << 20;
static bool streams_output(const GemmArgs& a) {
  if (a.out_kind != OutKind::F32 || a.M * a.W.N * (int64_t)sizeof(float) < kStreamOutputBytes) return false;
  const bool base = reinterpret_cast<uintptr_t>(a.out) % sizeof(R) == 0;
  return base && a.ldo % W == 0 && (a.out_split == 0 || a.out_split_stride % W == 0);
}

// One tile of MR rows: the accumulators start from the zero-point correction
// (kActShift - a_zp) * colsum, the panel's (per-tensor zero point) or made here per row.
template <int MR>
static void tile_and_epilogue(const GemmArgs& a, const Panel& pn, int64_t m0, Epilogue epilogue) {
  alignas(64) int32_t acc[MR * kPanel];
  alignas(64) int32_t row_init[MR * kPanel];
  const int32_t* init = pn.init;
  int64_t init_stride = 0;
  if (a.a_per_row) {
    const int32_t* colsum = a.W.col_sums + pn.n0;
    for (int r = 0; r < MR; ++r) {
      const int32_t corr = kActShift - a.a_zp[m0 + r];
      for (int c = 0; c < kPanel; ++c) row_init[r * kPanel + c] = corr * colsum[c];  // vectorizes
    }
    init = row_init;
    init_stride = kPanel;
  }
  gemm_tile<MR>(a.A + m0 * a.lda, a.lda, a.W.K, a.W.data + pn.p * a.W.Kg * 4 * kPanel, init, init_stride, acc);
  epilogue(a, pn, acc, m0, MR);
}

// Rows [m, m_end) of a made panel, in tiles of kTileRows (the last one smaller).
static void vector_rows(const GemmArgs& a, const Panel& pn, int64_t m, int64_t m_end, Epilogue epilogue) {
  for (; m + kTileRows <= m_end; m += kTileRows) tile_and_epilogue<kTileRows>(a, pn, m, epilogue);
  if (m < m_end)
    with_constant<kTileRows - 1>((int)(m_end - m), [&](auto mr) { tile_and_epilogue<decltype(mr)::value>(a, pn, m, epilogue); });
}

// Rows [m, m_end) of weight panel p.
static void gemm_rows(const GemmArgs& a, int64_t m, int64_t m_end, int64_t p, Epilogue epilogue) {
  Panel pn;
  make_panel(a, p, pn);
  vector_rows(a, pn, m, m_end, epilogue);
}

// Runs a GEMM as (row block, panel) tasks on the threads: rows(m, m_end, panel, epilogue)
// for each. A block of up to `most` units of `unit` rows and one weight panel stay in L2 while
// the inner kernel streams over K. The blocks are made equal and their count a multiple of
// the thread count, so the static schedule gives every thread the same rows (with 72-row
// blocks, 384 rows split 216 / 168). enter() and leave() run on every thread of the region.
template <class Rows, class Enter, class Leave>
static void run_tasks(const GemmArgs& a, int64_t unit, int64_t most, Rows rows, Enter enter, Leave leave) {
  const int64_t threads = forks(a.M * a.W.Np * a.W.K > (int64_t)1 << 18) ? thread_count() : 1;
  const int64_t units = (a.M + unit - 1) / unit;
  const int64_t even_blocks = even_pieces(units, most, threads);
  const int64_t block_rows = (units + even_blocks - 1) / even_blocks * unit;
  const int64_t panels = a.W.Np / kPanel;
  const int64_t blocks = (a.M + block_rows - 1) / block_rows;
  const int64_t tasks = blocks * panels;
  const bool stream = streams_output(a);
  const Epilogue epilogue = pick_epilogue(a, stream);
#pragma omp parallel num_threads(threads) if (threads > 1 && tasks > 1)
  {
    enter();
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t b = t / panels, p = t % panels;
      rows(a, b * block_rows, (b + 1) * block_rows < a.M ? (b + 1) * block_rows : a.M, p, epilogue);
    }
    if (stream) VecF::stream_fence();  // before the region's closing barrier
    leave();
  }
}

static void gemm_vec(const GemmArgs& a) {
  run_tasks(a, kTileRows, 12, gemm_rows, [] {}, [] {});
}

#ifdef QRT_TILES
#include "gemm_tiles.h"
#endif

void gemm_u8s8(const GemmArgs& a) {
  if (a.M <= 0) return;
#ifdef QRT_TILES
  if (uses_tiles(a)) return gemm_tiles(a);
#endif
  gemm_vec(a);
}

// The same GEMM on the calling thread only (used inside parallel attention). Tile paths
// configure the thread's tiles here and leave them configured: attention() releases them.
static void gemm_serial(const GemmArgs& a) {
  const Epilogue epilogue = pick_epilogue(a);
#ifdef QRT_TILES
  if (uses_tiles(a)) {
    Tiles::configure(full_tiles());
    for (int64_t p = 0; p < a.W.Np / kPanel; ++p) tile_rows(a, 0, a.M, p, epilogue);
    return;
  }
#endif
  for (int64_t p = 0; p < a.W.Np / kPanel; ++p) gemm_rows(a, 0, a.M, p, epilogue);
}
