#pragma once
/// \file
/// Internal: what `DynamicConv2d` and `DynamicLinear` share (config handling, the
/// grouped weight, the static description).

#include <dydnn/nn/config.h>
#include <dydnn/nn/detail/grouped_forward.h>
#include <dydnn/nn/kernels.h>
#include <dydnn/nn/static_layer.h>

#include <torch/nn/cloneable.h>

#include <map>
#include <string>

namespace dydnn {
namespace nn {
namespace detail {

/// CRTP base of the grouped layers. `Derived` provides `static constexpr const char*
/// kName`, `reset()` (which builds `weight_`) and `forward_at(input, config)`.
template <typename Derived, typename Options>
class GroupedLayerImpl : public torch::nn::Cloneable<Derived> {
 public:
  explicit GroupedLayerImpl(Options options_) : options(std::move(options_)) {}

  /// Selects the sub-network for later `forward(input)` calls. Throws `ValueError`
  /// (or `IndexError`) listing the valid configs when `config` is not one of them.
  void set_config(Config config) {
    options.connectivity().check_valid(config, Derived::kName);
    config_ = config;
  }
  /// The current config (the full one after construction).
  Config config() const { return config_; }
  /// Runs at the current config.
  torch::Tensor forward(const torch::Tensor& input) { return derived().forward_at(input, config_); }
  /// Runs at `config` (validated) without changing the current one.
  torch::Tensor forward(const torch::Tensor& input, Config config) {
    options.connectivity().check_valid(config, Derived::kName);
    return derived().forward_at(input, config);
  }
  /// Computes only the output groups `rows` (a subset of `config`; empty = all) from the
  /// compact input at `config`: with autograd the trainable part of a split training
  /// forward, without it `forward_rows_inference` (a device of distributed serving
  /// computing its groups).
  torch::Tensor forward_rows(const torch::Tensor& input, Config config, Config rows) {
    options.connectivity().check_valid(config, Derived::kName);
    // Re-packing the blocks per call for autograd costs more than the layer at batch 1.
    if (!torch::GradMode::is_enabled()) return forward_rows_inference(input, config, rows.empty() ? config : rows);
    weight_.invalidate();  // as in a training forward: a step through `.data()` follows
    auto [w, b] = weight_.packed_for_training(config, rows);
    return derived().apply(input, w, b);
  }
  /// Computes only output groups `rows` from the compact input at `config`, without
  /// autograd (the new groups of an anytime refinement, `DynamicNet::refine`), from
  /// contiguous copies of those rows cached per (config, rows) in the layout the kernel
  /// prefers. With `fold` (the eval-mode BN that follows, `affine_for_inference`) it
  /// returns the normalised output, the BN folded into the cached weights.
  torch::Tensor forward_rows_inference(const torch::Tensor& input, Config config, Config rows,
                                       const ChannelAffine* fold = nullptr) {
    const auto part = weight_.rows_for_inference(
        config, rows, fold,
        [this](const torch::Tensor& w, const torch::Tensor& b) { return derived().prepare_weight(w, b); });
    return part.prepared && uses_onednn(input) ? (*part.prepared)(input) : derived().apply(input, part.weight, part.bias);
  }
  /// The additive head's contribution of input groups `columns` (their features,
  /// compact, in group order): `sum_g W_g x_g + b_g` over those groups, without autograd.
  torch::Tensor forward_columns_inference(const torch::Tensor& input, Config config, Config columns) {
    const auto part = weight_.columns_for_inference(config, columns);
    return derived().apply(input, part.weight, part.bias);
  }
  /// The parameters `config` uses (only output groups `rows` when given).
  std::vector<torch::Tensor> parameters_of(Config config, Config rows = Config()) const {
    return weight_.parameters_of(config, rows);
  }
  /// Drops cached weight copies. A forward with autograd does it itself (LibTorch's
  /// optimisers update through `.data()`, which caches cannot see); call it after
  /// changing parameters through `.data` yourself.
  void invalidate_cache() { weight_.invalidate(); }
  /// Bytes this layer holds: its weight storage, biases and cached copies.
  int64_t resident_bytes() const { return weight_.resident_bytes(); }

  /// The options the layer was built with.
  Options options;

 protected:
  /// The layer at `config` as a `StaticLayer` of `kind` with `ints`: the dense weight
  /// (zeros where the mask forbids a block) and the bias, copied.
  StaticLayer static_layer_of(Config config, const char* kind, std::map<std::string, int64_t> ints) {
    options.connectivity().check_valid(config, Derived::kName);
    torch::NoGradGuard no_grad;
    auto [w, b] = weight_.packed_for_inference(config);
    StaticLayer layer{kind, {{"weight", w.clone(torch::MemoryFormat::Contiguous)}}, std::move(ints), {}};
    if (b.defined()) layer.tensors["bias"] = b.clone();
    return layer;
  }

  Config config_;
  GroupedWeight weight_;

 private:
  Derived& derived() { return static_cast<Derived&>(*this); }
};

}  // namespace detail
}  // namespace nn
}  // namespace dydnn
