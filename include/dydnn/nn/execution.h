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
  /// Pick per call by the rule measured in docs/kernels.md: `PerGroup` for a
  /// convolution with grouped input whose active blocks include forbidden (zero)
  /// ones, when each call has at least `kPerGroupMinWork` output positions
  /// (N x H x W: large batches) and LibTorch runs one intra-op thread; `Packed`
  /// otherwise (batch 1, two or more threads, linear layers, the stem).
  Auto,
  /// One call over the active channels: a zero-copy view of the layer's dense weight
  /// storage when the active channels are contiguous, otherwise a gathered copy
  /// cached for the current config only.
  Packed,
  /// One call per active output group over exactly the inputs its mask allows
  /// (skips the zero blocks of `incremental` / `independent`), then a concatenation.
  PerGroup,
};

/// The smallest N x H x W of a convolution's input for which `Auto` runs per group:
/// on the default net, per-group execution skips the zero blocks and wins at batch 32
/// (14 x 14 maps: 6272 positions) but loses to one packed call at batch 1 (196), where
/// each extra oneDNN call costs about 20 us.
constexpr int64_t kPerGroupMinWork = 4096;

/// "auto", "packed" or "per_group".
std::string to_string(Execution execution);
/// Parses "auto" | "packed" | "per_group"; throws `ValueError` naming the text otherwise.
Execution execution_from_string(const std::string& text);

}  // namespace nn
}  // namespace dydnn
