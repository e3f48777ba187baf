#pragma once
/// \file
/// `GroupSpec`: how a layer's channels are split into groups.

#include <dydnn/nn/config.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dydnn {
namespace nn {

/// The sizes of a layer's `G` channel groups; group `g` is the contiguous slice
/// `[offset(g), offset(g) + size(g))` of the channels.
///
/// Example:
/// \code
///   auto even   = GroupSpec::equal(32, 4);            // 8, 8, 8, 8
///   auto skewed = GroupSpec::ratios(32, {1, 1, 2, 4}); // 4, 4, 8, 16
///   auto exact  = GroupSpec::counts({2, 6, 8, 16});
/// \endcode
class GroupSpec {
 public:
  /// An empty spec; every method but `num_groups()` (0) requires a real one.
  GroupSpec() = default;

  /// `groups` groups of `channels / groups` channels; the remainder goes one
  /// channel each to the first groups. Throws `ValueError` when groups < 1,
  /// groups > channels or groups > 64.
  static GroupSpec equal(int64_t channels, int64_t groups);
  /// Group sizes proportional to `ratios` (rounded on the cumulative sums so they
  /// add up to `channels`). Throws `ValueError` for an empty list, a ratio <= 0, or
  /// a group that would get no channel.
  static GroupSpec ratios(int64_t channels, const std::vector<double>& ratios);
  /// Explicit sizes. Throws `ValueError` for an empty list or a size < 1.
  static GroupSpec counts(std::vector<int64_t> sizes);

  /// The number of groups `G`.
  int64_t num_groups() const { return static_cast<int64_t>(sizes_.size()); }
  /// The total number of channels.
  int64_t channels() const { return offsets_.empty() ? 0 : offsets_.back(); }
  /// The size of group `g`. Throws `IndexError` for g outside [0, G).
  int64_t size(int64_t g) const;
  /// The first channel of group `g`. Throws `IndexError` for g outside [0, G).
  int64_t offset(int64_t g) const;
  /// All sizes.
  const std::vector<int64_t>& sizes() const { return sizes_; }
  /// The channels of the active groups of `config` (groups >= G ignored).
  int64_t channels_in(Config config) const;
  /// The same split with every group `factor` times larger (a flatten of H x W).
  GroupSpec scaled(int64_t factor) const;
  /// `"[8,8,8,8]"`.
  std::string to_string() const;

  bool operator==(const GroupSpec& other) const { return sizes_ == other.sizes_; }
  bool operator!=(const GroupSpec& other) const { return sizes_ != other.sizes_; }

 private:
  explicit GroupSpec(std::vector<int64_t> sizes);
  std::vector<int64_t> sizes_;
  std::vector<int64_t> offsets_;  // offsets_[g] = first channel of g; offsets_[G] = total
};

}  // namespace nn
}  // namespace dydnn
