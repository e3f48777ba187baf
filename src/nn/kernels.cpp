#include <dydnn/errors.h>
#include <dydnn/nn/execution.h>
#include <dydnn/nn/kernels.h>

#include <ATen/Context.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/mkldnn_convolution.h>
#include <ATen/ops/mkldnn_reorder_conv2d_weight.h>
#include <torch/torch.h>

namespace dydnn {
namespace nn {

std::string to_string(Execution execution) {
  switch (execution) {
    case Execution::Auto: return "auto";
    case Execution::Packed: return "packed";
    case Execution::PerGroup: return "per_group";
  }
  return "auto";
}

Execution execution_from_string(const std::string& text) {
  if (text == "auto") return Execution::Auto;
  if (text == "packed") return Execution::Packed;
  if (text == "per_group") return Execution::PerGroup;
  detail::throw_value_error("nn", "Execution: unknown strategy '{}' (valid: auto, packed, per_group)", text);
}

bool uses_onednn(const torch::Tensor& t) {
  return at::hasMKLDNN() && t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.layout() == torch::kStrided;
}

torch::Tensor prepare_conv2d_weight(const torch::Tensor& weight, torch::IntArrayRef stride,
                                    torch::IntArrayRef padding) {
  if (!uses_onednn(weight) || weight.dim() != 4) return {};
  torch::NoGradGuard no_grad;
  const int64_t dilation[2] = {1, 1};
  return at::mkldnn_reorder_conv2d_weight(weight.contiguous().to_mkldnn(), padding, stride, dilation, 1);
}

torch::Tensor linear_fast(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (uses_onednn(input) && input.dim() == 2 &&
      input.size(0) * weight.size(0) * weight.size(1) >= kOneDnnLinearMinMacs) {
    const int64_t zero[2] = {0, 0}, one[2] = {1, 1};
    auto out = at::mkldnn_convolution(input.reshape({input.size(0), input.size(1), 1, 1}),
                                      weight.unsqueeze(-1).unsqueeze(-1), bias, zero, one, one, 1);
    return out.view({input.size(0), weight.size(0)});
  }
  return torch::linear(input, weight, bias);
}

torch::Tensor max_pool2d_fast(const torch::Tensor& input, int64_t k) {
  DYDNN_CHECK_VALUE(k >= 1, "nn", "max_pool2d_fast: window {} (valid: >= 1)", k);
  DYDNN_CHECK_VALUE(input.dim() == 4, "nn", "max_pool2d_fast: expected a 4D input (got {}D)", input.dim());
  const int64_t h = input.size(2) / k * k, w = input.size(3) / k * k;
  DYDNN_CHECK_VALUE(h > 0 && w > 0, "nn", "max_pool2d_fast: window {} is larger than the {}x{} input", k, input.size(2),
                    input.size(3));
  if (k == 1) return input.contiguous();
  // For training, torch's pooling: its backward routes each gradient to one argmax,
  // where the chain of strided maxima below would allocate and add a full-size tensor per slice.
  if (torch::GradMode::is_enabled() && input.requires_grad()) return torch::max_pool2d(input, {k, k}, {k, k});
  // Rows first: those maxima read whole contiguous rows; the columns then read half as much.
  torch::Tensor rows;
  for (int64_t i = 0; i < k; ++i) {
    auto slice = input.slice(2, i, h, k).slice(3, 0, w);
    rows = rows.defined() ? torch::maximum(rows, slice) : slice;
  }
  torch::Tensor out;
  for (int64_t j = 0; j < k; ++j) {
    auto slice = rows.slice(3, j, w, k);
    out = out.defined() ? torch::maximum(out, slice) : slice;
  }
  return out;
}

torch::Tensor conv2d_default(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias,
                             torch::IntArrayRef stride, torch::IntArrayRef padding) {
  return at::conv2d(input, weight, bias, stride, padding);
}

}  // namespace nn
}  // namespace dydnn
