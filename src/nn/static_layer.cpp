#include <dydnn/errors.h>
#include <dydnn/nn/static_layer.h>

#include <torch/torch.h>

namespace dydnn {
namespace nn {

namespace {
const torch::Tensor& tensor(const StaticLayer& layer, const char* name) {
  auto it = layer.tensors.find(name);
  DYDNN_CHECK_VALUE(it != layer.tensors.end(), "nn", "StaticLayer '{}' has no tensor '{}'", layer.kind, name);
  return it->second;
}
}  // namespace

torch::nn::Conv2d make_conv2d(const StaticLayer& layer) {
  const auto& w = tensor(layer, "weight");
  const bool bias = layer.tensors.count("bias") != 0;
  const auto& i = layer.ints;
  torch::nn::Conv2d conv(
      torch::nn::Conv2dOptions(w.size(1), w.size(0), torch::ExpandingArray<2>({w.size(2), w.size(3)}))
          .stride(torch::ExpandingArray<2>({i.at("stride_h"), i.at("stride_w")}))
          .padding(torch::ExpandingArray<2>({i.at("padding_h"), i.at("padding_w")}))
          .bias(bias));
  torch::NoGradGuard no_grad;
  conv->to(w.device(), w.scalar_type());
  conv->weight.copy_(w);
  if (bias) conv->bias.copy_(tensor(layer, "bias"));
  return conv;
}

torch::nn::Linear make_linear(const StaticLayer& layer) {
  const auto& w = tensor(layer, "weight");
  const bool bias = layer.tensors.count("bias") != 0;
  torch::nn::Linear linear(torch::nn::LinearOptions(w.size(1), w.size(0)).bias(bias));
  torch::NoGradGuard no_grad;
  linear->to(w.device(), w.scalar_type());
  linear->weight.copy_(w);
  if (bias) linear->bias.copy_(tensor(layer, "bias"));
  return linear;
}

torch::nn::BatchNorm2d make_batch_norm2d(const StaticLayer& layer) {
  const auto& w = tensor(layer, "weight");
  torch::nn::BatchNorm2d bn(
      torch::nn::BatchNorm2dOptions(w.size(0)).eps(layer.reals.at("eps")).momentum(layer.reals.at("momentum")));
  torch::NoGradGuard no_grad;
  bn->to(w.device(), w.scalar_type());
  bn->weight.copy_(w);
  bn->bias.copy_(tensor(layer, "bias"));
  bn->running_mean.copy_(tensor(layer, "running_mean"));
  bn->running_var.copy_(tensor(layer, "running_var"));
  bn->eval();
  return bn;
}

torch::nn::Sequential make_sequential(const std::vector<StaticLayer>& layers) {
  torch::nn::Sequential seq;
  for (const auto& s : layers) {
    if (s.kind == "conv2d") seq->push_back(make_conv2d(s));
    else if (s.kind == "batch_norm2d") seq->push_back(make_batch_norm2d(s));
    else if (s.kind == "linear") seq->push_back(make_linear(s));
    else if (s.kind == "relu") seq->push_back(torch::nn::ReLU());
    else if (s.kind == "max_pool2d") seq->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(s.ints.at("kernel_size"))));
    else if (s.kind == "avg_pool2d") seq->push_back(torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(s.ints.at("kernel_size"))));
    else if (s.kind == "adaptive_avg_pool2d") seq->push_back(torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)));
    else if (s.kind == "flatten") seq->push_back(torch::nn::Flatten());
    else detail::throw_value_error("nn", "make_sequential: unknown layer kind '{}'", s.kind);
  }
  seq->eval();
  return seq;
}

}  // namespace nn
}  // namespace dydnn
