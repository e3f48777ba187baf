#pragma once
/// \file
/// Keeping freed memory in the process, so repeated inference does not page-fault.

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstddef>

namespace dydnn {
namespace runtime {

/// Stops glibc's malloc from handing large freed blocks back to the OS (no `mmap`
/// below `max_block_bytes`, no trimming of the heap top below `4 * max_block_bytes`).
///
/// Why: every CPU inference allocates its activations anew. With glibc's defaults a
/// block above the (adaptive) mmap threshold is returned to the OS when freed, so the
/// next call page-faults all of it again; on the default net at batch 32 that made one
/// convolution 2-4x slower, and which calls were hit depended on the allocation
/// history (measured in docs/kernels.md). PyTorch's own advice is a caching allocator
/// such as jemalloc; this is the zero-dependency equivalent.
///
/// Cost: the process keeps up to the high-water mark of freed memory. Process-wide and
/// not thread-safe against concurrent allocations in other threads: call it once at
/// start-up. Returns false where the C library is not glibc (then it does nothing).
inline bool retain_freed_memory(size_t max_block_bytes = size_t{256} << 20) {
#if defined(__GLIBC__)
  const int bytes = static_cast<int>(max_block_bytes > (size_t{1} << 30) ? (size_t{1} << 30) : max_block_bytes);
  return mallopt(M_MMAP_THRESHOLD, bytes) == 1 && mallopt(M_TRIM_THRESHOLD, bytes > (1 << 28) ? (1 << 30) : 4 * bytes) == 1;
#else
  (void)max_block_bytes;
  return false;
#endif
}

}  // namespace runtime
}  // namespace dydnn
