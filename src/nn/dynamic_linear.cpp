#include <dydnn/errors.h>
#include <dydnn/nn/dynamic_linear.h>

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

DynamicLinearImpl::DynamicLinearImpl(DynamicLinearOptions options_) : options(std::move(options_)) { reset(); }

void DynamicLinearImpl::reset() {
  DYDNN_CHECK_VALUE(!options.bias_per_input_group() || options.dense_output(), "nn",
                    "DynamicLinear: bias_per_input_group needs dense_output (the additive head)");
  DYDNN_CHECK_VALUE(!(options.dense_input() && options.dense_output()), "nn",
                    "DynamicLinear: a layer with a dense input and a dense output is not dynamic; use torch::nn::Linear");
  detail::GroupedLayout layout{options.in_groups(), options.out_groups(), options.connectivity(),
                               options.dense_input(), options.dense_output()};
  layout.validate("nn");
  weight_ = detail::GroupedWeight(*this, layout, {}, options.bias(), options.bias_per_input_group());
  config_ = options.connectivity().full_config();
}

void DynamicLinearImpl::pretty_print(std::ostream& stream) const {
  stream << fmt::format("dydnn::nn::DynamicLinear(in={}{}, out={}{}, connectivity={}, config={})",
                        options.in_groups().to_string(), options.dense_input() ? " dense" : "",
                        options.out_groups().to_string(), options.dense_output() ? " dense" : "",
                        options.connectivity().name(), config_.to_string());
}

void DynamicLinearImpl::set_config(Config config) {
  options.connectivity().check_valid(config, "DynamicLinear");
  config_ = config;
}

void DynamicLinearImpl::check_input(const torch::Tensor& input, Config config) const {
  detail::check_grouped_input(weight_.layout(), input, config, 2, "[N, features]", "DynamicLinear");
}

torch::Tensor DynamicLinearImpl::forward(const torch::Tensor& input) { return forward_at(input, config_); }

torch::Tensor DynamicLinearImpl::forward_at(const torch::Tensor& input, Config config) {
  check_input(input, config);
  auto op = [](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
    return torch::linear(x, w, b);
  };
  return detail::run_grouped(weight_, input, config, options.execution(), 0, op);
}

torch::Tensor DynamicLinearImpl::forward(const torch::Tensor& input, Config config) {
  options.connectivity().check_valid(config, "DynamicLinear");
  return forward_at(input, config);
}

StaticLayer DynamicLinearImpl::static_layer(Config config) {
  options.connectivity().check_valid(config, "DynamicLinear");
  torch::NoGradGuard no_grad;
  auto [w, b] = weight_.packed_for_inference(config);
  StaticLayer layer{"linear", {{"weight", w.clone(torch::MemoryFormat::Contiguous)}}, {}, {}};
  if (b.defined()) layer.tensors["bias"] = b.clone();
  return layer;
}

torch::nn::Linear DynamicLinearImpl::materialize(Config config) { return make_linear(static_layer(config)); }

}  // namespace nn
}  // namespace dydnn
