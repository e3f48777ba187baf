#pragma once
/// \file
/// `DynamicLinear`: a fully connected layer whose features are split into groups.

#include <dydnn/nn/config.h>
#include <dydnn/nn/connectivity.h>
#include <dydnn/nn/detail/grouped_layer.h>
#include <dydnn/nn/execution.h>
#include <dydnn/nn/group_spec.h>
#include <dydnn/nn/static_layer.h>

#include <torch/arg.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace dydnn {
namespace nn {

/// Options for `DynamicLinear`.
///
/// Example (an additive classifier head over 4 groups of 49-pixel channels):
/// \code
///   auto head = DynamicLinear(DynamicLinearOptions(GroupSpec::equal(64, 4).scaled(49), GroupSpec::counts({10}))
///                                 .dense_output(true)
///                                 .bias_per_input_group(true));
/// \endcode
struct DynamicLinearOptions {
  /// `in_groups`/`out_groups` split the input/output features. The connectivity
  /// defaults to `incremental` over the grouped side's group count.
  DynamicLinearOptions(GroupSpec in_groups, GroupSpec out_groups);

  /// How the input features are split (one group when `dense_input`).
  TORCH_ARG(GroupSpec, in_groups);
  /// How the output features are split (one group when `dense_output`).
  TORCH_ARG(GroupSpec, out_groups);
  /// Whether the layer has a bias. Default: true.
  TORCH_ARG(bool, bias) = true;
  /// The G x G block mask and the valid configs. Default: `incremental(G)`.
  TORCH_ARG(Connectivity, connectivity);
  /// The input is not grouped and always fully present. Default: false.
  TORCH_ARG(bool, dense_input) = false;
  /// The output is not grouped (logits): it reads every active input group. Default: false.
  TORCH_ARG(bool, dense_output) = false;
  /// With `dense_output`: one bias per input group, summed over the active groups
  /// (`y = sum_g W_g x_g + b_g`, the additive head: a config's logits never change
  /// when later groups train). Default: false (one shared bias).
  TORCH_ARG(bool, bias_per_input_group) = false;
  /// Inference strategy (training always packs). Default: `Execution::Auto`.
  TORCH_ARG(Execution, execution) = Execution::Auto;
};

/// A linear layer over grouped features; at a config it takes only the active input
/// features (compact, groups in order) and returns only the active outputs.
///
/// Parameters: `weight_<j>_<i>` (`[out_j, in_i]`) for each allowed block, `bias_<j>`
/// per output group (or `bias_in<i>` per input group with `bias_per_input_group`).
/// Shapes: input `[N, in_groups.channels_in(config)]` -> `[N, out_groups.channels_in(config)]`.
/// Thread-safety: `forward` on one instance is not thread-safe (it may refresh a cache).
/// Config handling comes from `detail::GroupedLayerImpl` (see `DynamicConv2dImpl`).
class DynamicLinearImpl : public detail::GroupedLayerImpl<DynamicLinearImpl, DynamicLinearOptions> {
 public:
  static constexpr const char* kName = "DynamicLinear";
  explicit DynamicLinearImpl(DynamicLinearOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// A plain `torch::nn::Linear` computing what `forward` computes at `config`.
  torch::nn::Linear materialize(Config config);
  /// The layer at `config` as plain tensors: "weight" `[out_active, in_active]` (dense,
  /// zeros where the mask forbids a block) and "bias", copied.
  StaticLayer static_layer(Config config);

 private:
  friend class detail::GroupedLayerImpl<DynamicLinearImpl, DynamicLinearOptions>;
  torch::Tensor forward_at(const torch::Tensor& input, Config config);
  torch::Tensor apply(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) const;
  std::shared_ptr<const PreparedConv2d> prepare_weight(const torch::Tensor&, const torch::Tensor&) const {
    return nullptr;  // BLAS reads the dense weight
  }
};

/// A `ModuleHolder` for `DynamicLinearImpl`.
TORCH_MODULE(DynamicLinear);

}  // namespace nn
}  // namespace dydnn
