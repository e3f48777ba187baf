#pragma once
/// \file
/// `StaticLayer`: one layer of a materialised sub-network as plain tensors, and the
/// plain `torch::nn` modules built from it.

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <map>
#include <string>
#include <vector>

namespace dydnn {
namespace nn {

/// One layer of a materialised sub-network, described with plain tensors so that
/// C++ (`torch::nn`) and Python (`torch.nn`) build the same static module.
struct StaticLayer {
  /// "conv2d", "batch_norm2d", "relu", "max_pool2d", "avg_pool2d",
  /// "adaptive_avg_pool2d", "flatten" or "linear".
  std::string kind;
  /// "weight", "bias" (conv2d, linear, batch_norm2d); "running_mean", "running_var" (batch_norm2d).
  std::map<std::string, torch::Tensor> tensors;
  /// "stride_h", "stride_w", "padding_h", "padding_w" (conv2d; the kernel size is the
  /// weight's); "kernel_size" (pools, square, stride = kernel).
  std::map<std::string, int64_t> ints;
  /// "eps", "momentum" (batch_norm2d).
  std::map<std::string, double> reals;
};

/// A `torch::nn::Conv2d` holding a "conv2d" layer's tensors.
torch::nn::Conv2d make_conv2d(const StaticLayer& layer);
/// A `torch::nn::Linear` holding a "linear" layer's tensors.
torch::nn::Linear make_linear(const StaticLayer& layer);
/// A `torch::nn::BatchNorm2d` (eval mode) holding a "batch_norm2d" layer's tensors.
torch::nn::BatchNorm2d make_batch_norm2d(const StaticLayer& layer);
/// A `torch::nn::Sequential` (eval mode) of every layer. Throws `ValueError` for an unknown kind.
torch::nn::Sequential make_sequential(const std::vector<StaticLayer>& layers);

}  // namespace nn
}  // namespace dydnn
