#pragma once
/// \file
/// How a dynamic layer computes a sub-network at inference time.

#include <cstdint>
#include <string>

namespace dydnn {
namespace nn {

/// The execution strategy of a grouped layer when no gradient is needed
/// (training always packs the active blocks with `torch::cat`, so autograd reaches
/// each block's own parameter).
enum class Execution {
  /// Pick per call from the measured rule in docs/kernels.md: `Packed` for every
  /// layer kind on CPU (see that table for the numbers behind it).
  Auto,
  /// One call over the active channels: a zero-copy view of the layer's dense weight
  /// storage when the active channels are contiguous, otherwise a gathered copy
  /// cached for the current config only.
  Packed,
  /// One call per active output group over exactly the inputs its mask allows
  /// (skips the zero blocks of `incremental` / `independent`), then a concatenation.
  PerGroup,
};

/// "auto", "packed" or "per_group".
std::string to_string(Execution execution);
/// Parses "auto" | "packed" | "per_group"; throws `ValueError` naming the text otherwise.
Execution execution_from_string(const std::string& text);

}  // namespace nn
}  // namespace dydnn
