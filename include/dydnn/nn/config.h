#pragma once
/// \file
/// `Config`: the set of active groups that selects one sub-network.

#include <dydnn/errors.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace dydnn {
namespace nn {

/// The most groups a layer may have (a `Config` is a 64-bit mask).
constexpr int64_t kMaxGroups = 64;

/// A sub-network: the set of active groups, as a bitmask over the `G` groups.
///
/// A config is a set, not only a prefix: Fluid's `C*D*` is `{2,3}`. Groups are
/// numbered from 0 and named with letters in the papers (`A` = 0, `B` = 1, ...).
///
/// Example:
/// \code
///   auto ab = dydnn::nn::Config::of({0, 1});          // "AB"
///   auto cd = dydnn::nn::Config::parse("C*D*", 4);    // {2,3}
///   assert(ab.contains(1) && ab.count() == 2);
/// \endcode
class Config {
 public:
  /// The empty config (no group active); valid for no model, useful as a placeholder.
  Config() = default;
  /// A config from a raw bitmask (bit `g` set = group `g` active).
  explicit Config(uint64_t mask) : mask_(mask) {}

  /// The config holding exactly `groups`. Throws `IndexError` for a group outside [0, 63].
  static Config of(const std::vector<int64_t>& groups);
  /// Groups `0 .. count-1`. Throws `IndexError` unless 1 <= count <= 64.
  static Config prefix(int64_t count);
  /// Parses `"AB"`, `"C*D*"` (stars ignored), `"0,1"` or `"{0,1}"` for a model with
  /// `num_groups` groups. Throws `ValueError` naming the text when it is malformed or
  /// names a group >= num_groups.
  static Config parse(std::string_view text, int64_t num_groups);

  /// The raw bitmask.
  uint64_t mask() const { return mask_; }
  /// Whether group `g` is active.
  bool contains(int64_t g) const { return g >= 0 && g < kMaxGroups && ((mask_ >> g) & 1U) != 0; }
  /// Whether every group of `other` is active here.
  bool includes(Config other) const { return (other.mask_ & ~mask_) == 0; }
  /// The number of active groups.
  int64_t count() const;
  /// Whether no group is active.
  bool empty() const { return mask_ == 0; }
  /// The highest active group, or -1 when empty.
  int64_t highest() const;
  /// The active groups in increasing order.
  std::vector<int64_t> groups() const;
  /// `"{0,1}"`.
  std::string to_string() const;
  /// The papers' letter name: `"AB"` for {0,1}; groups past `Z` are written `[26]`.
  std::string name() const;

  Config operator&(Config other) const { return Config(mask_ & other.mask_); }
  Config operator|(Config other) const { return Config(mask_ | other.mask_); }
  bool operator==(Config other) const { return mask_ == other.mask_; }
  bool operator!=(Config other) const { return mask_ != other.mask_; }
  bool operator<(Config other) const { return mask_ < other.mask_; }

 private:
  uint64_t mask_ = 0;
};

/// Joins configs as `"{0}, {0,1}"` for error messages and logs.
std::string to_string(const std::vector<Config>& configs);

}  // namespace nn
}  // namespace dydnn

template <>
struct std::hash<dydnn::nn::Config> {
  size_t operator()(dydnn::nn::Config c) const noexcept { return std::hash<uint64_t>()(c.mask()); }
};
