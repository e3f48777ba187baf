#include <dydnn/errors.h>
#include <dydnn/nn/dynamic_linear.h>
#include <dydnn/nn/kernels.h>

#include <torch/torch.h>

namespace dydnn {
namespace nn {

namespace {
int64_t grouped_side_count(const GroupSpec& in, const GroupSpec& out) {
  return std::max<int64_t>(std::max(in.num_groups(), out.num_groups()), 1);
}
}  // namespace

DynamicLinearOptions::DynamicLinearOptions(GroupSpec in_groups, GroupSpec out_groups)
    : in_groups_(std::move(in_groups)),
      out_groups_(std::move(out_groups)),
      connectivity_(Connectivity::incremental(grouped_side_count(in_groups_, out_groups_))) {}

DynamicLinearImpl::DynamicLinearImpl(DynamicLinearOptions options_) : GroupedLayerImpl(std::move(options_)) {
  reset();
}

void DynamicLinearImpl::reset() {
  DYDNN_CHECK_VALUE(!options.bias_per_input_group() || options.dense_output(), "nn",
                    "DynamicLinear: bias_per_input_group needs dense_output (the additive head)");
  DYDNN_CHECK_VALUE(!(options.dense_input() && options.dense_output()), "nn",
                    "DynamicLinear: a layer with a dense input and a dense output is not dynamic; use torch::nn::Linear");
  detail::GroupedLayout layout{options.in_groups(), options.out_groups(), options.connectivity(),
                               options.dense_input(), options.dense_output()};
  layout.validate(kName);
  weight_ = detail::GroupedWeight(*this, layout, {}, options.bias(), options.bias_per_input_group());
  config_ = options.connectivity().full_config();
}

void DynamicLinearImpl::pretty_print(std::ostream& stream) const {
  stream << fmt::format("dydnn::nn::DynamicLinear(in={}{}, out={}{}, connectivity={}, config={})",
                        options.in_groups().to_string(), options.dense_input() ? " dense" : "",
                        options.out_groups().to_string(), options.dense_output() ? " dense" : "",
                        options.connectivity().name(), config_.to_string());
}

torch::Tensor DynamicLinearImpl::forward_at(const torch::Tensor& input, Config config) {
  detail::check_grouped_input(weight_.layout(), input, config, 2, "[N, features]", kName);
  auto op = [this](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) { return apply(x, w, b); };
  return detail::run_grouped(weight_, input, config, options.execution(), 0, op);
}

torch::Tensor DynamicLinearImpl::apply(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) const {
  return linear_fast(x, w, b);
}

StaticLayer DynamicLinearImpl::static_layer(Config config) { return static_layer_of(config, "linear", {}); }

torch::nn::Linear DynamicLinearImpl::materialize(Config config) { return make_linear(static_layer(config)); }

}  // namespace nn
}  // namespace dydnn
