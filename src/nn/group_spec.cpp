#include <dydnn/errors.h>
#include <dydnn/nn/group_spec.h>

#include <cmath>

namespace dydnn {
namespace nn {

GroupSpec::GroupSpec(std::vector<int64_t> sizes) : sizes_(std::move(sizes)) {
  DYDNN_CHECK_VALUE(!sizes_.empty(), "nn", "GroupSpec: needs at least one group (got an empty list)");
  DYDNN_CHECK_VALUE(num_groups() <= kMaxGroups, "nn", "GroupSpec: {} groups is too many (valid: 1..{})",
                    num_groups(), kMaxGroups);
  offsets_.assign(1, 0);
  for (size_t g = 0; g < sizes_.size(); ++g) {
    DYDNN_CHECK_VALUE(sizes_[g] >= 1, "nn", "GroupSpec: group {} has {} channels (valid: >= 1) in {}", g, sizes_[g],
                      fmt::format("[{}]", fmt::join(sizes_, ",")));
    offsets_.push_back(offsets_.back() + sizes_[g]);
  }
}

GroupSpec GroupSpec::equal(int64_t channels, int64_t groups) {
  DYDNN_CHECK_VALUE(groups >= 1 && groups <= kMaxGroups, "nn", "GroupSpec::equal: {} groups (valid: 1..{})", groups,
                    kMaxGroups);
  DYDNN_CHECK_VALUE(groups <= channels, "nn",
                    "GroupSpec::equal: {} groups for {} channels; a layer needs at least one channel per group "
                    "(valid: groups <= channels)",
                    groups, channels);
  std::vector<int64_t> sizes(groups, channels / groups);
  for (int64_t g = 0; g < channels % groups; ++g) ++sizes[g];
  return GroupSpec(std::move(sizes));
}

GroupSpec GroupSpec::ratios(int64_t channels, const std::vector<double>& ratios) {
  DYDNN_CHECK_VALUE(!ratios.empty(), "nn", "GroupSpec::ratios: needs at least one ratio (got an empty list)");
  double total = 0;
  for (double r : ratios) {
    DYDNN_CHECK_VALUE(r > 0 && std::isfinite(r), "nn", "GroupSpec::ratios: ratio {} is not positive (valid: > 0)", r);
    total += r;
  }
  std::vector<int64_t> sizes;
  double cumulative = 0;
  int64_t previous = 0;
  for (double r : ratios) {
    cumulative += r;
    auto boundary = static_cast<int64_t>(std::llround(channels * cumulative / total));
    DYDNN_CHECK_VALUE(boundary > previous, "nn",
                      "GroupSpec::ratios: {} channels split by [{}] leaves group {} empty (valid: every group >= 1 "
                      "channel)",
                      channels, fmt::join(ratios, ","), sizes.size());
    sizes.push_back(boundary - previous);
    previous = boundary;
  }
  return GroupSpec(std::move(sizes));
}

GroupSpec GroupSpec::counts(std::vector<int64_t> sizes) { return GroupSpec(std::move(sizes)); }

int64_t GroupSpec::size(int64_t g) const {
  DYDNN_CHECK_INDEX(g >= 0 && g < num_groups(), "nn", "GroupSpec: group {} is out of range (valid: 0..{})", g,
                    num_groups() - 1);
  return sizes_[g];
}

int64_t GroupSpec::offset(int64_t g) const {
  DYDNN_CHECK_INDEX(g >= 0 && g < num_groups(), "nn", "GroupSpec: group {} is out of range (valid: 0..{})", g,
                    num_groups() - 1);
  return offsets_[g];
}

int64_t GroupSpec::channels_in(Config config) const {
  int64_t total = 0;
  for (int64_t g = 0; g < num_groups(); ++g)
    if (config.contains(g)) total += sizes_[g];
  return total;
}

GroupSpec GroupSpec::scaled(int64_t factor) const {
  DYDNN_CHECK_VALUE(factor >= 1, "nn", "GroupSpec::scaled: factor {} (valid: >= 1)", factor);
  std::vector<int64_t> sizes = sizes_;
  for (auto& s : sizes) s *= factor;
  return GroupSpec(std::move(sizes));
}

std::string GroupSpec::to_string() const { return fmt::format("[{}]", fmt::join(sizes_, ",")); }

}  // namespace nn
}  // namespace dydnn
