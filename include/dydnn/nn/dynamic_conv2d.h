#pragma once
/// \file
/// `DynamicConv2d`: a 2-D convolution whose channels are split into groups.

#include <dydnn/nn/config.h>
#include <dydnn/nn/connectivity.h>
#include <dydnn/nn/detail/grouped_layer.h>
#include <dydnn/nn/execution.h>
#include <dydnn/nn/group_spec.h>
#include <dydnn/nn/static_layer.h>

#include <torch/arg.h>
#include <torch/expanding_array.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

namespace dydnn {
namespace nn {

/// Options for `DynamicConv2d`.
///
/// Example:
/// \code
///   auto conv = DynamicConv2d(DynamicConv2dOptions(GroupSpec::equal(32, 4), GroupSpec::equal(64, 4), 3)
///                                 .padding(1)
///                                 .connectivity(Connectivity::incremental(4)));
/// \endcode
struct DynamicConv2dOptions {
  /// `in_groups`/`out_groups` split the input/output channels; `kernel_size` in pixels.
  /// The connectivity defaults to `incremental` over `out_groups.num_groups()` groups.
  DynamicConv2dOptions(GroupSpec in_groups, GroupSpec out_groups, torch::ExpandingArray<2> kernel_size);

  /// How the input channels are split (one group when `dense_input`).
  TORCH_ARG(GroupSpec, in_groups);
  /// How the output channels are split; its group count is the layer's G.
  TORCH_ARG(GroupSpec, out_groups);
  /// Kernel height and width.
  TORCH_ARG(torch::ExpandingArray<2>, kernel_size);
  /// Stride. Default: 1.
  TORCH_ARG(torch::ExpandingArray<2>, stride) = 1;
  /// Zero padding on each side. Default: 0.
  TORCH_ARG(torch::ExpandingArray<2>, padding) = 0;
  /// Whether each output group has a bias. Default: true.
  TORCH_ARG(bool, bias) = true;
  /// The G x G block mask and the valid configs. Default: `incremental(G)`.
  TORCH_ARG(Connectivity, connectivity);
  /// The input is not grouped (the image at a network's stem): every active output
  /// group reads all of it, and it is always fully present. Default: false.
  TORCH_ARG(bool, dense_input) = false;
  /// Inference strategy (training always packs). Default: `Execution::Auto`.
  TORCH_ARG(Execution, execution) = Execution::Auto;
};

/// A convolution over grouped channels. At a config it takes only the active input
/// channels (a compact tensor, groups in order) and returns only the active outputs.
///
/// Each allowed block `(output group j, input group i)` is its own parameter
/// `weight_<j>_<i>` (`[out_j, in_i, kh, kw]`); each output group has `bias_<j>`.
/// The blocks are views into one dense storage, so inference at a config with
/// adjacent active groups is a zero-copy slice.
///
/// Shapes: input `[N, in_groups.channels_in(config), H, W]` (all channels when
/// `dense_input`) -> output `[N, out_groups.channels_in(config), H', W']`.
/// Thread-safety: `forward` on one instance is not thread-safe (it may refresh a cache).
/// Config handling (`set_config`, `config`, `forward(input[, config])`,
/// `invalidate_cache`, `resident_bytes`, `options`) comes from `detail::GroupedLayerImpl`.
class DynamicConv2dImpl : public detail::GroupedLayerImpl<DynamicConv2dImpl, DynamicConv2dOptions> {
 public:
  static constexpr const char* kName = "DynamicConv2d";
  explicit DynamicConv2dImpl(DynamicConv2dOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// A plain `torch::nn::Conv2d` holding exactly this config's weights (zeros where the
  /// mask forbids a block) that computes what `forward` computes at `config`.
  torch::nn::Conv2d materialize(Config config);
  /// The layer at `config` as plain tensors: "weight" (dense, zeros where the mask
  /// forbids a block) and "bias", copied; stride and padding.
  StaticLayer static_layer(Config config);

 private:
  friend class detail::GroupedLayerImpl<DynamicConv2dImpl, DynamicConv2dOptions>;
  torch::Tensor forward_at(const torch::Tensor& input, Config config);
  torch::Tensor apply(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) const;
  std::shared_ptr<const PreparedConv2d> prepare_weight(const torch::Tensor& w, const torch::Tensor& b) const;
};

/// A `ModuleHolder` for `DynamicConv2dImpl` (see LibTorch's `TORCH_MODULE`).
TORCH_MODULE(DynamicConv2d);

}  // namespace nn
}  // namespace dydnn
