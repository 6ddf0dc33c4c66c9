// Run-time choice of the kernel path: detected once from CPUID, overridable with the
// QUALAM_ISA environment variable (ref | amx_emulated | avx2 | avx512vnni | amx) or set_isa().
#pragma once
#include <string>
#include <vector>

#include "cpu/kernels.h"

namespace qrt {

struct KernelTable {
  const char* name;
  bool tiles;  // the GEMM runs on tiles, and bf16 attention is available
  void (*gemm_u8s8)(const GemmArgs&);
  void (*quantize_u8)(const float*, int64_t, int64_t, float, int32_t, uint8_t*);
  void (*quantize_u8_per_row)(const float*, int64_t, int64_t, uint8_t*, float*, int32_t*);
  void (*layernorm)(const float*, const float*, const float*, const float*, float, int64_t,
                    int64_t, float*, const U8Output*);
  void (*attention)(const AttentionArgs&);
  double (*int8_peak_macs_per_s)(double);
  double (*int8_tile_macs_per_s)(int64_t, double);
};

const KernelTable& kernels();                 // the active path
std::vector<std::string> supported_isas();    // best last
void set_isa(const std::string& name);        // throws std::invalid_argument
std::string amx_status();                     // "available", or "unavailable: <reason>"

// Thread counts lie in [1, max_threads()]: max(kMinThreadLimit, kThreadsPerCpuLimit x the CPUs
// OpenMP sees).
constexpr int kMinThreadLimit = 256, kThreadsPerCpuLimit = 4;
int max_threads();
void set_num_threads(int n);                  // throws std::invalid_argument outside [1, max_threads()]
int num_threads();                            // 1 where single_threaded_after_fork()
// Whether this process was forked after kernels ran on several threads: it then runs them on
// one, whatever the counts set (OpenMP's threads do not survive such a fork).
bool single_threaded_after_fork();

// For its lifetime, kernels called from this thread use n threads (checked as set_num_threads
// checks) instead of the process-wide count: an Engine's own thread count, without touching
// other engines'.
class ThreadCountOverride {
 public:
  explicit ThreadCountOverride(int n);
  ~ThreadCountOverride();
  ThreadCountOverride(const ThreadCountOverride&) = delete;
  ThreadCountOverride& operator=(const ThreadCountOverride&) = delete;

 private:
  int saved_;
};

}  // namespace qrt
