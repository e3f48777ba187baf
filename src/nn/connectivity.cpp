#include <dydnn/errors.h>
#include <dydnn/nn/connectivity.h>

#include <algorithm>

namespace dydnn {
namespace nn {
namespace {

void check_group_count(int64_t num_groups, const char* who) {
  DYDNN_CHECK_VALUE(num_groups >= 1 && num_groups <= kMaxGroups, "nn", "Connectivity::{}: {} groups (valid: 1..{})",
                    who, num_groups, kMaxGroups);
}

std::vector<Config> prefixes(int64_t num_groups) {
  std::vector<Config> out;
  for (int64_t k = 1; k <= num_groups; ++k) out.push_back(Config::prefix(k));
  return out;
}

}  // namespace

Connectivity::Connectivity(ConnectivityKind kind, std::vector<uint64_t> rows, std::vector<Config> valid)
    : kind_(kind), rows_(std::move(rows)), valid_(std::move(valid)) {
  const int64_t g_count = num_groups();
  check_group_count(g_count, "custom");
  const uint64_t all = g_count == kMaxGroups ? ~uint64_t{0} : (uint64_t{1} << g_count) - 1;
  for (int64_t j = 0; j < g_count; ++j) {
    DYDNN_CHECK_VALUE((rows_[j] & ~all) == 0, "nn",
                      "Connectivity: row {} reads groups {} outside the {} groups of the mask", j,
                      Config(rows_[j] & ~all).to_string(), g_count);
    DYDNN_CHECK_VALUE(((rows_[j] >> j) & 1U) != 0, "nn",
                      "Connectivity: output group {} must read its own input group {} (row {} is {})", j, j, j,
                      Config(rows_[j]).to_string());
  }
  // Transitive closure: what a group's output depends on after any number of layers.
  reach_ = rows_;
  for (bool changed = true; changed;) {
    changed = false;
    for (int64_t j = 0; j < g_count; ++j) {
      uint64_t next = reach_[j];
      for (int64_t i = 0; i < g_count; ++i)
        if ((reach_[j] >> i) & 1U) next |= reach_[i];
      changed |= next != reach_[j];
      reach_[j] = next;
    }
  }
  DYDNN_CHECK_VALUE(!valid_.empty(), "nn", "Connectivity: the list of valid configs is empty");
  for (const auto& c : valid_) {
    DYDNN_CHECK_VALUE(!c.empty() && (c.mask() & ~all) == 0, "nn",
                      "Connectivity: valid config {} is empty or names a group outside 0..{}", c.to_string(),
                      g_count - 1);
  }
  islands_.assign(1, {});
  for (int64_t g = 0; g < g_count; ++g) islands_[0].push_back(g);
}

Connectivity Connectivity::prefix(int64_t num_groups) {
  check_group_count(num_groups, "prefix");
  std::vector<uint64_t> rows(num_groups, Config::prefix(num_groups).mask());
  return Connectivity(ConnectivityKind::Prefix, std::move(rows), prefixes(num_groups));
}

Connectivity Connectivity::incremental(int64_t num_groups) {
  check_group_count(num_groups, "incremental");
  std::vector<uint64_t> rows;
  for (int64_t j = 0; j < num_groups; ++j) rows.push_back(Config::prefix(j + 1).mask());
  return Connectivity(ConnectivityKind::Incremental, std::move(rows), prefixes(num_groups));
}

Connectivity Connectivity::independent(int64_t num_groups) {
  check_group_count(num_groups, "independent");
  DYDNN_CHECK_VALUE(num_groups <= 16, "nn",
                    "Connectivity::independent: {} groups would declare 2^{}-1 configs (valid: 1..16 groups; use "
                    "with_configs() on a custom mask for more)",
                    num_groups, num_groups);
  std::vector<uint64_t> rows;
  for (int64_t j = 0; j < num_groups; ++j) rows.push_back(uint64_t{1} << j);
  std::vector<Config> valid;
  for (uint64_t m = 1; m < (uint64_t{1} << num_groups); ++m) valid.emplace_back(m);
  std::stable_sort(valid.begin(), valid.end(), [](Config a, Config b) { return a.count() < b.count(); });
  return Connectivity(ConnectivityKind::Independent, std::move(rows), std::move(valid));
}

Connectivity Connectivity::fluid(const std::vector<std::vector<int64_t>>& islands, bool cross_edges) {
  DYDNN_CHECK_VALUE(islands.size() >= 2, "nn", "Connectivity::fluid: needs at least 2 islands (got {})",
                    islands.size());
  int64_t num_groups = 0;
  for (const auto& island : islands) num_groups += static_cast<int64_t>(island.size());
  check_group_count(num_groups, "fluid");
  uint64_t seen = 0;
  for (size_t k = 0; k < islands.size(); ++k) {
    DYDNN_CHECK_VALUE(!islands[k].empty(), "nn", "Connectivity::fluid: island {} is empty", k);
    for (int64_t g : islands[k]) {
      DYDNN_CHECK_VALUE(g >= 0 && g < num_groups, "nn",
                        "Connectivity::fluid: group {} in island {} is out of range (valid: 0..{})", g, k,
                        num_groups - 1);
      DYDNN_CHECK_VALUE(((seen >> g) & 1U) == 0, "nn", "Connectivity::fluid: group {} is in more than one island", g);
      seen |= uint64_t{1} << g;
    }
  }
  std::vector<uint64_t> rows(num_groups, 0);
  uint64_t earlier = 0;
  std::vector<Config> standalone;
  std::vector<Config> combined;
  for (const auto& island : islands) {
    uint64_t inside = 0;
    for (int64_t g : island) {
      inside |= uint64_t{1} << g;
      rows[g] = inside | (cross_edges ? earlier : 0);
      standalone.emplace_back(inside);
      if (earlier != 0) combined.emplace_back(earlier | inside);
    }
    earlier |= inside;
  }
  standalone.insert(standalone.end(), combined.begin(), combined.end());
  Connectivity out(ConnectivityKind::Fluid, std::move(rows), std::move(standalone));
  out.islands_ = islands;
  out.cross_edges_ = cross_edges;
  return out;
}

Connectivity Connectivity::custom(std::vector<uint64_t> rows, std::vector<Config> valid_configs) {
  return Connectivity(ConnectivityKind::Custom, std::move(rows), std::move(valid_configs));
}

Connectivity Connectivity::from_name(const std::string& name, int64_t num_groups) {
  if (name == "prefix") return prefix(num_groups);
  if (name == "incremental") return incremental(num_groups);
  if (name == "independent") return independent(num_groups);
  detail::throw_value_error("nn",
                            "Connectivity: unknown preset '{}' (valid: prefix, incremental, independent; fluid "
                            "needs islands)",
                            name);
}

Connectivity Connectivity::with_configs(std::vector<Config> configs) const {
  DYDNN_CHECK_VALUE(!configs.empty(), "nn", "Connectivity::with_configs: the list of configs is empty");
  for (const auto& c : configs) check_valid(c, "Connectivity::with_configs");
  Connectivity out = *this;
  out.valid_ = std::move(configs);
  return out;
}

std::string Connectivity::name() const {
  switch (kind_) {
    case ConnectivityKind::Prefix: return "prefix";
    case ConnectivityKind::Incremental: return "incremental";
    case ConnectivityKind::Independent: return "independent";
    case ConnectivityKind::Fluid: return "fluid";
    case ConnectivityKind::Custom: return "custom";
  }
  return "custom";
}

Config Connectivity::full_config() const {
  Config full;
  for (const auto& c : valid_) full = full | c;
  return full;
}

bool Connectivity::is_valid(Config config) const { return index_of(config) >= 0; }

int64_t Connectivity::index_of(Config config) const {
  auto it = std::find(valid_.begin(), valid_.end(), config);
  return it == valid_.end() ? -1 : static_cast<int64_t>(it - valid_.begin());
}

void Connectivity::check_valid(Config config, const std::string& who) const {
  DYDNN_CHECK_INDEX(config.highest() < num_groups(), "nn", "{}: config {} names group {}, but there are {} groups (valid: 0..{})",
                    who, config.to_string(), config.highest(), num_groups(), num_groups() - 1);
  DYDNN_CHECK_VALUE(is_valid(config), "nn", "{}: config {} is not valid for connectivity '{}' (valid: {})", who,
                    config.to_string(), name(), to_string(valid_));
}

bool Connectivity::group_is_exact(int64_t j) const {
  bool seen = false;
  Config context;
  for (const auto& c : valid_) {
    if (!c.contains(j)) continue;
    if (seen && context_of(j, c) != context) return false;
    context = context_of(j, c);
    seen = true;
  }
  return true;
}

std::string Connectivity::mask_picture() const {
  std::string out;
  for (int64_t j = 0; j < num_groups(); ++j) {
    for (int64_t i = 0; i < num_groups(); ++i) out += reads(j, i) ? '#' : '.';
    out += '\n';
  }
  return out;
}

}  // namespace nn
}  // namespace dydnn
