#pragma once
/// \file
/// `NetSpec`: the declarative description a `DynamicNet` is built from (docs/spec.md).

#include <dydnn/nn/config.h>
#include <dydnn/nn/connectivity.h>
#include <dydnn/nn/group_spec.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace dydnn {
namespace nn {

/// The largest size a spec may give any dimension (channels, input size, kernel,
/// padding, pool, classes).
constexpr int64_t kMaxDimension = int64_t{1} << 20;

/// The kind of a feature layer.
enum class LayerKind { Conv, Linear };

/// How the classifier head combines the groups (design §2).
enum class HeadKind {
  Additive,   ///< `logits = sum_g (W_g feat_g + b_g)`: old configs stay exact
  PerConfig,  ///< one linear head per valid config
  Prefix,     ///< one sliced linear with a shared bias (slimmable-style)
};

/// "additive" | "per_config" | "prefix".
std::string to_string(HeadKind kind);

/// One feature layer of a spec (`conv ...` or `linear ...` line).
struct LayerSpec {
  LayerKind kind = LayerKind::Conv;
  /// Output channels (conv) or features (linear).
  int64_t channels = 0;
  /// Explicit group sizes (`groups=4,4,8,16`); empty = split by the spec's `groups` line.
  std::vector<int64_t> group_sizes;
  int64_t kernel = 3;       ///< conv only
  int64_t stride = 1;       ///< conv only
  int64_t padding = 0;      ///< conv only
  bool batch_norm = false;  ///< conv only (`bn`)
  bool relu = false;
  int64_t max_pool = 0;     ///< `maxpool=K`: K x K, stride K; 0 = none (conv only)
  int64_t avg_pool = 0;     ///< `avgpool=K`: K x K, stride K; 0 = none (conv only)
  bool global_avg_pool = false;  ///< `gap`: average over H x W (conv only)
};

/// An early exit (`exit after=K [avgpool=P]` line): a classifier head reading the
/// output of feature layer `after` (1-based: after the K-th `conv`/`linear` line).
struct ExitSpec {
  /// The number of feature layers before the exit: 1 .. layers - 1.
  int64_t after = 1;
  /// `avgpool=P`: P x P average pooling (stride P) before the head; 0 = none (conv layers only).
  int64_t avg_pool = 0;
};

/// A dynamic network: input shape, classes, groups, connectivity, layers, head, configs.
///
/// Example:
/// \code
///   auto spec = NetSpec::load("python/dydnn/specs/fashion_mnist_default.spec");
///   auto net = DynamicNet(spec);
/// \endcode
struct NetSpec {
  std::string name = "unnamed";
  int64_t in_channels = 1, height = 28, width = 28;
  int64_t classes = 10;
  /// The number of groups G of every layer.
  int64_t groups = 4;
  /// Relative group sizes (`groups 4 ratios=1,1,2,4`); empty = equal.
  std::vector<double> ratios;
  /// "prefix" | "incremental" | "independent" | "fluid".
  std::string connectivity = "incremental";
  /// Fluid islands (`islands=0,1/2,3`).
  std::vector<std::vector<int64_t>> islands;
  /// Fluid cross edges (`cross=on|off`).
  bool cross_edges = true;
  HeadKind head = HeadKind::Additive;
  std::vector<LayerSpec> layers;
  /// Early exits, in increasing `after` order; the final head is the last exit and is
  /// not listed here.
  std::vector<ExitSpec> exits;
  /// Declared valid configs; empty = the connectivity's.
  std::vector<Config> configs;

  /// Parses the text format; `source` names the text in errors (a file name).
  /// Throws `ValueError` naming the source, the line and the bad token.
  static NetSpec parse(const std::string& text, const std::string& source = "<spec>");
  /// Reads and parses a file. Throws `ValueError` when it cannot be read.
  static NetSpec load(const std::string& path);
  /// The canonical text (parses back to an equal spec).
  std::string to_text() const;

  /// The connectivity with the declared configs.
  Connectivity make_connectivity() const;
  /// The group split of `layer`'s output channels.
  GroupSpec group_spec(const LayerSpec& layer) const;
  /// Checks the whole spec (shapes, groups, pools, exits); throws `ValueError` naming the problem.
  void validate() const;
  /// The input shape `[C, H, W]` of each early exit's head (after its pooling; H = W = 1
  /// after a linear layer). Throws `ValueError` for an exit out of range or out of order.
  std::vector<std::array<int64_t, 3>> exit_shapes() const;
};

}  // namespace nn
}  // namespace dydnn
