#include "dispatch.h"

#include <cpuid.h>
#include <omp.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace qrt {
namespace {

#define QRT_TABLE(NS, TILES) \
  KernelTable{#NS, TILES, cpu::NS::gemm_u8s8, cpu::NS::quantize_u8, cpu::NS::quantize_u8_per_row, \
              cpu::NS::layernorm, cpu::NS::attention, \
              cpu::NS::int8_peak_macs_per_s, cpu::NS::int8_tile_macs_per_s}

// Slowest first; best_supported() takes the last one this CPU runs. amx_emulated (the tile
// kernels on a scalar emulation of the tiles) runs anywhere but is never picked by default.
const KernelTable kTables[] = {QRT_TABLE(ref, false), QRT_TABLE(amx_emulated, true), QRT_TABLE(avx2, false),
                               QRT_TABLE(avx512vnni, false), QRT_TABLE(amx, true)};
constexpr int kNumTables = sizeof(kTables) / sizeof(kTables[0]);
constexpr int kAmxEmulated = 1, kAmx = 4;

bool avx512vnni_supported() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma");
}

// AMX needs three things: the CPU's AMX-TILE and AMX-INT8 (CPUID leaf 7: EDX bits 24, 25),
// the OS saving tile state (XCR0 bits 17, 18), and, on Linux, this process's permission to
// use the tile data (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA), asked once.
std::string check_amx() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 25)))
    return "the CPU has no AMX-INT8";
  if (!avx512vnni_supported()) return "the CPU has AMX but not the AVX-512 VNNI the other kernels use";
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return "the OS has not enabled XSAVE";
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & (3u << 17)) != (3u << 17)) return "the OS does not save AMX tile state (XCR0)";
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0)
    return "the OS refused AMX tile data to this process (arch_prctl ARCH_REQ_XCOMP_PERM)";
#endif
  return "";
}

const std::string& amx_refusal() {
  static const std::string why = check_amx();
  return why;
}

bool cpu_supports(int index) {
  __builtin_cpu_init();
  switch (index) {
    case 0: return true;
    case kAmxEmulated: return true;
    case 2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case 3: return avx512vnni_supported();
    case kAmx: return amx_refusal().empty();
  }
  return false;
}

int index_of(const std::string& name) {
  for (int i = 0; i < kNumTables; ++i)
    if (name == kTables[i].name) return i;
  throw std::invalid_argument("unknown ISA path '" + name +
                              "'; expected one of ref, amx_emulated, avx2, avx512vnni, amx");
}

int best_supported() {
  for (int i = kNumTables - 1; i > 0; --i)
    if (i != kAmxEmulated && cpu_supports(i)) return i;
  return 0;
}

int initial_index() {
  const char* forced = std::getenv("QUALAM_ISA");
  if (!forced || !*forced) return best_supported();
  const int i = index_of(forced);
  if (!cpu_supports(i))
    throw std::runtime_error(std::string("QUALAM_ISA=") + forced + " is not supported by this CPU" +
                             (i == kAmx ? ": " + amx_refusal() : std::string()));
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
  for (int i = 0; i < kNumTables; ++i)
    if (cpu_supports(i)) out.push_back(kTables[i].name);
  return out;
}

void set_isa(const std::string& name) {
  const int i = index_of(name);
  if (!cpu_supports(i))
    throw std::invalid_argument("ISA path '" + name + "' is not supported by this CPU" +
                                (i == kAmx ? ": " + amx_refusal() : std::string()));
  active().store(i);
}

std::string amx_status() { return amx_refusal().empty() ? "available" : "unavailable: " + amx_refusal(); }

// More threads than this made GNU OpenMP crash the process, not fail: its team start
// allocates per-thread records on the calling thread's stack (100,000 threads: a segfault
// here), and a thread it cannot create ends the process. Past a few threads per CPU,
// threads only wait for each other anyway.
int max_threads() { return std::max(kMinThreadLimit, kThreadsPerCpuLimit * omp_get_num_procs()); }

namespace {
// OMP_NUM_THREADS sets the starting count: within the limit (it cannot be refused at import).
std::atomic<int> g_threads{std::min(omp_get_max_threads(), max_threads())};
thread_local int t_threads = 0;  // a ThreadCountOverride's count on this thread; 0 = none

// GNU OpenMP keeps the threads of a parallel region for the next one; a child forked after
// that inherits the pool's bookkeeping but not its threads, and its next parallel region
// waits for them forever. So a process forked after kernels ran on several threads uses one
// (as PyTorch does); a fork before that (or from a one-thread process) keeps the count.
std::atomic<bool> g_used_threads{false};
std::atomic<bool> g_forked_after_threads{false};
const int g_at_fork = pthread_atfork(nullptr, nullptr, [] {
  if (g_used_threads.load()) g_forked_after_threads.store(true);
});
}  // namespace

static void check_thread_count(int n) {
  if (n < 1 || n > max_threads())
    throw std::invalid_argument("thread count must be in [1, " + std::to_string(max_threads()) + "] (" +
                                std::to_string(kThreadsPerCpuLimit) + " per CPU, or " +
                                std::to_string(kMinThreadLimit) + "), got " + std::to_string(n));
}

void set_num_threads(int n) {
  check_thread_count(n);
  g_threads.store(n);
}

int num_threads() { return single_threaded_after_fork() ? 1 : g_threads.load(std::memory_order_relaxed); }

int thread_count() {
  if (single_threaded_after_fork()) return 1;
  const int n = t_threads > 0 ? t_threads : g_threads.load(std::memory_order_relaxed);
  if (n > 1 && !g_used_threads.load(std::memory_order_relaxed)) g_used_threads.store(true);
  return n;
}

bool single_threaded_after_fork() { return g_forked_after_threads.load(std::memory_order_relaxed); }

ThreadCountOverride::ThreadCountOverride(int n) : saved_(t_threads) {
  check_thread_count(n);
  t_threads = n;
}
ThreadCountOverride::~ThreadCountOverride() { t_threads = saved_; }

}  // namespace qrt
