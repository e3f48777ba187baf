#include <dydnn/errors.h>
#include <dydnn/nn/dynamic_conv2d.h>
#include <dydnn/nn/kernels.h>

#include <torch/torch.h>

namespace dydnn {
namespace nn {

DynamicConv2dOptions::DynamicConv2dOptions(GroupSpec in_groups, GroupSpec out_groups,
                                           torch::ExpandingArray<2> kernel_size)
    : in_groups_(std::move(in_groups)),
      out_groups_(std::move(out_groups)),
      kernel_size_(kernel_size),
      connectivity_(Connectivity::incremental(std::max<int64_t>(out_groups_.num_groups(), 1))) {}

DynamicConv2dImpl::DynamicConv2dImpl(DynamicConv2dOptions options_) : GroupedLayerImpl(std::move(options_)) {
  reset();
}

void DynamicConv2dImpl::reset() {
  for (auto k : *options.kernel_size())
    DYDNN_CHECK_VALUE(k >= 1, "nn", "DynamicConv2d: kernel size {} (valid: >= 1)", k);
  for (auto s : *options.stride()) DYDNN_CHECK_VALUE(s >= 1, "nn", "DynamicConv2d: stride {} (valid: >= 1)", s);
  for (auto p : *options.padding()) DYDNN_CHECK_VALUE(p >= 0, "nn", "DynamicConv2d: padding {} (valid: >= 0)", p);
  detail::GroupedLayout layout{options.in_groups(), options.out_groups(), options.connectivity(),
                               options.dense_input(), false};
  layout.validate(kName);
  weight_ = detail::GroupedWeight(*this, layout, std::vector<int64_t>(options.kernel_size()->begin(), options.kernel_size()->end()), options.bias(), false);
  config_ = options.connectivity().full_config();
}

void DynamicConv2dImpl::pretty_print(std::ostream& stream) const {
  stream << fmt::format("dydnn::nn::DynamicConv2d(in={}{}, out={}, kernel_size=[{}], stride=[{}], padding=[{}], "
                        "connectivity={}, config={})",
                        options.in_groups().to_string(), options.dense_input() ? " dense" : "",
                        options.out_groups().to_string(), fmt::join(*options.kernel_size(), ","),
                        fmt::join(*options.stride(), ","), fmt::join(*options.padding(), ","),
                        options.connectivity().name(), config_.to_string());
}

torch::Tensor DynamicConv2dImpl::forward_at(const torch::Tensor& input, Config config) {
  detail::check_grouped_input(weight_.layout(), input, config, 4, "[N, C, H, W]", kName);
  auto op = [this](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) { return apply(x, w, b); };
  return detail::run_grouped(weight_, input, config, options.execution(), input.size(0) * input.size(2) * input.size(3),
                             op);
}

torch::Tensor DynamicConv2dImpl::apply(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) const {
  // oneDNN's convolution has a backward too, so training takes the fast kernel as well.
  return conv2d_fast(x, w, b, *options.stride(), *options.padding());
}

std::shared_ptr<const PreparedConv2d> DynamicConv2dImpl::prepare_weight(const torch::Tensor& w,
                                                                       const torch::Tensor& b) const {
  return prepare_conv2d(w, b, *options.stride(), *options.padding());
}

StaticLayer DynamicConv2dImpl::static_layer(Config config) {
  return static_layer_of(config, "conv2d",
                         {{"stride_h", (*options.stride())[0]},
                          {"stride_w", (*options.stride())[1]},
                          {"padding_h", (*options.padding())[0]},
                          {"padding_w", (*options.padding())[1]}});
}

torch::nn::Conv2d DynamicConv2dImpl::materialize(Config config) { return make_conv2d(static_layer(config)); }

}  // namespace nn
}  // namespace dydnn
