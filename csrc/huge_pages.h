// Memory for large buffers on transparent huge pages where the OS offers them (Linux with
// THP in "madvise" mode). The encoder's activations and the packed weights are megabytes that
// every GEMM tile and attention task walks with row strides of kilobytes: on 4 KiB pages each
// row is a new page and a new TLB entry, on 2 MiB pages a whole tensor takes a few.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace qrt {

constexpr size_t kHugePage = size_t(2) << 20;

// `bytes` (at least one byte) aligned to `align`, a power of two; throws std::bad_alloc.
// Release with std::free.
inline void* alloc_aligned(size_t bytes, size_t align = 64) {
  const size_t size = bytes == 0 ? align : (bytes + align - 1) / align * align;  // aligned_alloc wants a multiple
  void* p = std::aligned_alloc(align, size);
  if (!p) throw std::bad_alloc();
  return p;
}

// Aligned to 64 bytes always; large blocks to 2 MiB and advised as huge pages. Release with
// std::free.
inline void* alloc_large(size_t bytes) {
  if (bytes < kHugePage) return alloc_aligned(bytes);
  void* p = alloc_aligned(bytes, kHugePage);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(p, (bytes + kHugePage - 1) / kHugePage * kHugePage, MADV_HUGEPAGE);  // a hint: failure is harmless
#endif
  return p;
}

// std::vector<T, HugePageAllocator<T>>: a vector whose large storage comes from alloc_large.
template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(alloc_large(n * sizeof(T))); }
  void deallocate(T* p, size_t) { std::free(p); }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const HugePageAllocator<U>&) const { return false; }
};

}  // namespace qrt
