#pragma once
/// \file
/// `DynamicBatchNorm2d`: batch normalisation over grouped channels.

#include <dydnn/nn/channel_affine.h>
#include <dydnn/nn/config.h>
#include <dydnn/nn/connectivity.h>
#include <dydnn/nn/group_spec.h>
#include <dydnn/nn/static_layer.h>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <unordered_map>
#include <vector>

namespace dydnn {
namespace nn {

/// Options for `DynamicBatchNorm2d`.
struct DynamicBatchNorm2dOptions {
  /// `groups` splits the channels; the connectivity defaults to `incremental`.
  explicit DynamicBatchNorm2dOptions(GroupSpec groups);

  /// How the channels are split.
  TORCH_ARG(GroupSpec, groups);
  /// The connectivity of the layer that feeds this one; it decides which groups need
  /// statistics per config. Default: `incremental(G)`.
  TORCH_ARG(Connectivity, connectivity);
  /// Added to the variance. Default: 1e-5.
  TORCH_ARG(double, eps) = 1e-5;
  /// Running-statistics momentum. Default: 0.1.
  TORCH_ARG(double, momentum) = 0.1;
};

/// Batch normalisation whose statistics and affine parameters are kept per group,
/// and per config only where a group's inputs differ between configs.
///
/// A group `j` sees the inputs `connectivity.context_of(j, config)`. Under
/// `incremental`, `independent` and fluid without cross edges that set never
/// changes, so each group has one set (`weight_<j>`, `bias_<j>`, `running_mean_<j>`,
/// `running_var_<j>`) and a config's outputs never depend on other groups. Under
/// `prefix` (and for fluid groups with cross edges) each distinct context gets its
/// own set, suffixed `_at_<context>` (`running_mean_0_at_AB`): switchable BN, so a
/// user never recalibrates after a switch.
///
/// A group whose statistics are frozen (`set_frozen`) is normalised with its running
/// statistics even in training mode, and they no longer update (incremental training).
/// Shapes: `[N, groups.channels_in(config), H, W]` -> same.
/// Thread-safety: `forward` on one instance is not thread-safe (it may refresh a cache).
class DynamicBatchNorm2dImpl : public torch::nn::Cloneable<DynamicBatchNorm2dImpl> {
 public:
  explicit DynamicBatchNorm2dImpl(DynamicBatchNorm2dOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// Selects the sub-network for later `forward(input)` calls (validated).
  void set_config(Config config);
  Config config() const { return config_; }
  torch::Tensor forward(const torch::Tensor& input);
  /// Runs at `config` (validated) without changing the current one.
  torch::Tensor forward(const torch::Tensor& input, Config config);

  /// Freezes (or unfreezes) every statistics set of group `g`. Throws `IndexError` for
  /// a group outside [0, G).
  void set_frozen(int64_t group, bool frozen);
  /// Freezes (or unfreezes) only the statistics set group `g` uses at `config` (its
  /// context): nested training freezes `C`'s own set while `C` at `ABC*` still learns.
  /// Throws `IndexError`/`ValueError` for a bad group or config.
  void set_frozen(int64_t group, Config config, bool frozen);
  /// Whether every statistics set of group `g` is frozen.
  bool frozen(int64_t group) const;
  /// Whether the set group `g` uses at `config` is frozen.
  bool frozen(int64_t group, Config config) const;
  /// The affine parameters `config` uses (only `groups` when given).
  std::vector<torch::Tensor> parameters_of(Config config, Config groups = Config()) const;
  /// Runs only `groups` (a subset of `config`) on their compact channels, each with the
  /// statistics it has at `config`: the trainable part of a split training forward.
  torch::Tensor forward_groups(const torch::Tensor& input, Config config, Config groups);
  /// What eval mode does to `groups` (a non-empty subset of `config`) with their
  /// statistics at `config`, as a per-channel affine map over their compact channels:
  /// `scale = weight / sqrt(running_var + eps)`, `shift = bias - running_mean * scale`
  /// (cached per (config, groups); `version` changes with any of those tensors). A layer
  /// folds it into its weights (`forward_rows_inference`).
  ChannelAffine affine_for_inference(Config config, Config groups);
  /// How many statistics sets group `g` has (1 when exact).
  int64_t num_slots(int64_t group) const;

  /// The layer at `config` as plain tensors: `weight`, `bias`, `running_mean`,
  /// `running_var` of the active channels (copies), `eps`, `momentum`.
  StaticLayer static_layer(Config config);
  /// Drops the cached per-config concatenations (a training forward does it itself).
  void invalidate_cache();
  /// Bytes this layer holds: every statistics set and the per-config concatenations it caches.
  int64_t resident_bytes() const;
  /// A plain `torch::nn::BatchNorm2d` computing what `forward` computes at `config`.
  torch::nn::BatchNorm2d materialize(Config config);

  /// The options the layer was built with.
  DynamicBatchNorm2dOptions options;

 private:
  struct Slot {
    torch::Tensor weight, bias, running_mean, running_var;
  };
  torch::Tensor forward_at(const torch::Tensor& input, Config config);
  const Slot& slot(int64_t group, Config config) const;
  size_t slot_of(int64_t group, Config config) const;
  void check_group(int64_t group) const;
  torch::Tensor normalize_groups(const torch::Tensor& input, Config config, Config groups);
  std::vector<torch::Tensor> concatenated(Config config);
  uint64_t version_sum(Config config, Config groups) const;
  // Weight, bias, running mean and running variance of each of `groups` at `config`.
  std::array<std::vector<torch::Tensor>, 4> slot_tensors(Config config, Config groups) const;
  void check_groups(Config config, Config groups) const;

  Config config_;
  std::vector<std::vector<Slot>> slots_;             // [group][slot]
  std::vector<std::unordered_map<uint64_t, size_t>> slot_index_;  // [group] context mask -> slot
  std::vector<std::vector<bool>> frozen_;  // [group][slot]
  struct Cached {
    uint64_t version = 0;
    std::vector<torch::Tensor> tensors;
  };
  std::unordered_map<Config, Cached> cache_;
  struct AffineCache {
    Config config, groups;
    ChannelAffine affine;
  };
  static constexpr size_t kAffineCacheSize = 16;
  std::vector<AffineCache> affine_cache_;
};

/// A `ModuleHolder` for `DynamicBatchNorm2dImpl`.
TORCH_MODULE(DynamicBatchNorm2d);

}  // namespace nn
}  // namespace dydnn
