// Throughput probes: the int8 instruction's peak and the GEMM tile kernel's ceiling. Part of kernels_impl.h (included by it, inside namespace qrt::cpu::QRT_ISA_NS,
// after the shared helpers), compiled once per ISA like the rest.

// Multiply-accumulates per second summed over `threads` threads, each running its own
// make_run(thread)(count) (which does `count` units of work and returns their MACs) at once:
// one warm-up call (clock ramp, caches), then calls of doubling counts for `seconds`.
template <class MakeRun>
static double all_threads_macs_per_s(int threads, double seconds, int64_t first_count, MakeRun make_run) {
  double total = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    auto run = make_run(omp_get_thread_num());
    int64_t count = first_count, macs = 0;
    run(count);
    const double t0 = omp_get_wtime();
    double t = 0.0;
    while ((t = omp_get_wtime() - t0) < seconds) {
      macs += run(count);
      count *= 2;
    }
    total += (double)macs / t;
  }
  return total;
}

// Peak multiply-accumulates per second of this path's int8 instruction, all threads
// running the register-only loop at once.
double int8_peak_macs_per_s(double seconds) {
#ifdef QRT_TILES
  return all_threads_macs_per_s(thread_count(), seconds, 1 << 8, [](int) { return tile_peak_loop; });
#else
  return all_threads_macs_per_s(thread_count(), seconds, 1 << 12, [](int) { return int8_peak_loop; });
#endif
}

// Multiply-accumulates per second of the GEMM's tile kernel alone, all threads at once, each
// on its own cache-resident rows and weight panel of depth K: what gemm_u8s8 would reach
// without epilogue, cache misses or scheduling (its ceiling on this machine, below the
// instruction peak by the kernel's loads and loop).
struct TileRun {
  const uint8_t* A;
  const int8_t* Wp;
  int64_t K;
#ifdef QRT_TILES
  alignas(64) int32_t acc[kTileBlockRows * kPanel] = {};
#else
  alignas(64) int32_t acc[kTileRows * kPanel] = {};
#endif
  int64_t operator()(int64_t calls) {  // each call starts from the last one's sums: none skipped
#ifdef QRT_TILES
    Tiles::configure(full_tiles());
    for (int64_t i = 0; i < calls; ++i) tile_ceiling_call(A, K, Wp, acc);
    Tiles::release();
    __asm__ volatile("" : : "r"(acc) : "memory");
    return calls * kTileBlockRows * kPanel * K;
#else
    for (int64_t i = 0; i < calls; ++i) gemm_tile<kTileRows>(A, K, K, Wp, acc, kPanel, acc);
    __asm__ volatile("" : : "r"(acc) : "memory");
    return calls * kTileRows * kPanel * K;
#endif
  }
};
double int8_tile_macs_per_s(int64_t K, double seconds) {
#ifdef QRT_TILES
  const int64_t rows = kTileBlockRows, slack = kPackedSlackBytes;
#else
  const int64_t rows = kTileRows, slack = 0;
#endif
  const int64_t a_bytes = (rows * K + 63) / 64 * 64, w_bytes = (K + 3) / 4 * 4 * kPanel + slack;  // per thread
  // Allocated here, not in the parallel region, where a failure could not be reported; for the
  // count read once (set_num_threads may run beside).
  const int threads = thread_count();
  auto* buffers = static_cast<uint8_t*>(std::aligned_alloc(64, threads * (a_bytes + w_bytes)));
  if (!buffers) throw std::bad_alloc();
  const double rate = all_threads_macs_per_s(threads, seconds, 16, [&](int thread) {
    uint8_t* A = buffers + thread * (a_bytes + w_bytes);
    auto* Wp = reinterpret_cast<int8_t*>(A + a_bytes);
    std::memset(A, 3, rows * K);
    std::memset(Wp, 1, w_bytes);
    return TileRun{A, Wp, K};
  });
  std::free(buffers);
  return rate;
}
