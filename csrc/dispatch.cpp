#include "dispatch.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace qrt {
namespace {

#define QRT_TABLE(NS) \
  KernelTable{#NS, cpu::NS::gemm_u8s8, cpu::NS::quantize_u8, cpu::NS::quantize_u8_per_row, \
              cpu::NS::layernorm, cpu::NS::attention, \
              cpu::NS::int8_peak_macs_per_s, cpu::NS::int8_tile_macs_per_s}

const KernelTable kTables[] = {QRT_TABLE(ref), QRT_TABLE(avx2), QRT_TABLE(avx512vnni)};

bool cpu_supports(int index) {
  __builtin_cpu_init();
  switch (index) {
    case 0: return true;
    case 1: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case 2:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma");
  }
  return false;
}

int index_of(const std::string& name) {
  for (int i = 0; i < 3; ++i)
    if (name == kTables[i].name) return i;
  throw std::invalid_argument("unknown ISA path '" + name + "'; expected one of ref, avx2, avx512vnni");
}

int best_supported() {
  for (int i = 2; i > 0; --i)
    if (cpu_supports(i)) return i;
  return 0;
}

int initial_index() {
  const char* forced = std::getenv("QUALAM_ISA");
  if (!forced || !*forced) return best_supported();
  const int i = index_of(forced);
  if (!cpu_supports(i))
    throw std::runtime_error(std::string("QUALAM_ISA=") + forced + " is not supported by this CPU");
  return i;
}

std::atomic<int>& active() {
  static std::atomic<int> index{initial_index()};
  return index;
}

}  // namespace

const KernelTable& kernels() { return kTables[active().load(std::memory_order_relaxed)]; }

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (int i = 0; i < 3; ++i)
    if (cpu_supports(i)) out.push_back(kTables[i].name);
  return out;
}

void set_isa(const std::string& name) {
  const int i = index_of(name);
  if (!cpu_supports(i)) throw std::invalid_argument("ISA path '" + name + "' is not supported by this CPU");
  active().store(i);
}

namespace {
std::atomic<int> g_threads{omp_get_max_threads()};
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("thread count must be >= 1");
  g_threads.store(n);
}

int num_threads() { return g_threads.load(std::memory_order_relaxed); }
int thread_count() { return num_threads(); }

}  // namespace qrt
