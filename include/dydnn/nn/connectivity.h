#pragma once
/// \file
/// Connectivity: which input groups each output group reads, and which configs are valid.

#include <dydnn/nn/config.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dydnn {
namespace nn {

/// The named mask families of design §2.
enum class ConnectivityKind {
  Prefix,       ///< all-to-all among active groups (slimmable); needs per-config BN
  Incremental,  ///< lower-triangular: group j reads groups i <= j (MLCAD'19)
  Independent,  ///< block-diagonal: group j reads only j (group convolution)
  Fluid,        ///< islands, incremental inside each, optional cross edges earlier -> later island
  Custom,       ///< any mask and config list given by the user
};

/// A `G x G` block mask `M[j][i]` (output group `j` reads input group `i`) plus the
/// list of configs the model declares valid. The same mask is used by every layer
/// of a `DynamicNet`.
///
/// At a config `c`, an active output group `j` reads the active inputs it is allowed
/// to: `c & inputs_of(j)`, so a config's outputs never depend on groups outside it
/// (except under `prefix`, whose configs are prefixes). Whether a group's inputs are
/// the same in every config that holds it (`group_is_exact`) decides whether its
/// BatchNorm needs more than one set of statistics: not under `incremental`,
/// `independent` or fluid without cross edges; yes under `prefix` and for the later
/// islands of fluid with cross edges.
///
/// Example:
/// \code
///   auto inc   = Connectivity::incremental(4);             // configs {0} .. {0,1,2,3}
///   auto fluid = Connectivity::fluid({{0, 1}, {2, 3}}, true); // A, AB, C*, C*D*, ABC*, ABC*D*
///   fluid.check_valid(Config::of({2, 3}), "my_layer");       // ok
/// \endcode
class Connectivity {
 public:
  /// An empty connectivity (0 groups).
  Connectivity() = default;

  /// All-to-all; valid configs are the prefixes {0}, {0,1}, ...
  static Connectivity prefix(int64_t num_groups);
  /// Lower-triangular; valid configs are the prefixes.
  static Connectivity incremental(int64_t num_groups);
  /// Block-diagonal; every non-empty subset of groups is valid.
  static Connectivity independent(int64_t num_groups);
  /// Islands (a partition of the groups, each island's groups in training order),
  /// incremental inside each island; with `cross_edges`, every group of a later
  /// island also reads all groups of the earlier islands. Valid configs: each
  /// island's prefixes alone, then all earlier islands in full plus a prefix of a
  /// later one (for {{0,1},{2,3}}: A, AB, C*, C*D*, ABC*, ABC*D*).
  static Connectivity fluid(const std::vector<std::vector<int64_t>>& islands, bool cross_edges);
  /// A user mask (`rows[j]` = bitmask of the inputs of `j`) with explicit valid configs.
  static Connectivity custom(std::vector<uint64_t> rows, std::vector<Config> valid_configs);
  /// Builds a preset by name: "prefix" | "incremental" | "independent"; use `fluid()` for islands.
  static Connectivity from_name(const std::string& name, int64_t num_groups);

  /// The same mask with a declared subset of this mask's valid configs, in the given
  /// order. Throws `ValueError` for an empty list or a config that is not valid here.
  Connectivity with_configs(std::vector<Config> configs) const;

  ConnectivityKind kind() const { return kind_; }
  /// "prefix", "incremental", "independent", "fluid" or "custom".
  std::string name() const;
  int64_t num_groups() const { return static_cast<int64_t>(rows_.size()); }
  /// Whether output group `j` reads input group `i`.
  bool reads(int64_t j, int64_t i) const { return ((rows_.at(j) >> i) & 1U) != 0; }
  /// The input groups output group `j` may read.
  Config inputs_of(int64_t j) const { return Config(rows_.at(j)); }
  /// Every group that `j` depends on through any number of layers (transitive closure).
  Config reach_of(int64_t j) const { return Config(reach_.at(j)); }
  /// The islands of a fluid mask (one island holding all groups otherwise).
  const std::vector<std::vector<int64_t>>& islands() const { return islands_; }
  /// Whether a fluid mask has cross edges.
  bool cross_edges() const { return cross_edges_; }

  /// The declared valid configs, in declaration order (smallest first for presets).
  const std::vector<Config>& valid_configs() const { return valid_; }
  /// The largest valid config (all groups for the presets).
  Config full_config() const;
  bool is_valid(Config config) const;
  /// Throws `IndexError` when `config` names a group >= G and `ValueError` when it is
  /// not declared valid; the message names `who`, the config, the mask and the valid list.
  void check_valid(Config config, const std::string& who) const;
  /// The position of `config` in `valid_configs()`, or -1.
  int64_t index_of(Config config) const;

  /// Whether output group `j` sees the same inputs (through all layers) in every valid
  /// config that contains it; true for every preset except `prefix` and fluid cross edges.
  bool group_is_exact(int64_t j) const;
  /// The inputs group `j` sees at `config` through all layers: `config & reach_of(j)`.
  /// BatchNorm keeps one set of statistics per distinct value (design §2).
  Config context_of(int64_t j, Config config) const { return config & reach_of(j); }

  /// The mask as rows of '#' (reads) and '.' (does not), output groups top to bottom.
  std::string mask_picture() const;

 private:
  Connectivity(ConnectivityKind kind, std::vector<uint64_t> rows, std::vector<Config> valid);
  ConnectivityKind kind_ = ConnectivityKind::Custom;
  std::vector<uint64_t> rows_;
  std::vector<uint64_t> reach_;
  std::vector<Config> valid_;
  std::vector<std::vector<int64_t>> islands_;
  bool cross_edges_ = false;
};

}  // namespace nn
}  // namespace dydnn
