#pragma once
// Naive references for the dynamic layers (ncnn-style): computed block by block from
// the layer's own parameters, independent of the library's packing and kernels.

#include <dydnn/nn/connectivity.h>
#include <dydnn/nn/group_spec.h>

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace testutil {

using dydnn::nn::Config;
using dydnn::nn::Connectivity;
using dydnn::nn::GroupSpec;

/// A connectivity to test and a description for failure messages.
struct MaskCase {
  std::string name;
  Connectivity connectivity;
};

/// Every preset for G in {1,2,3,4}, plus fluid (cross edges on and off) where G allows islands.
inline std::vector<MaskCase> all_mask_cases() {
  std::vector<MaskCase> out;
  for (int64_t g = 1; g <= 4; ++g) {
    out.push_back({"prefix G=" + std::to_string(g), Connectivity::prefix(g)});
    out.push_back({"incremental G=" + std::to_string(g), Connectivity::incremental(g)});
    out.push_back({"independent G=" + std::to_string(g), Connectivity::independent(g)});
  }
  for (bool cross : {true, false}) {
    const std::string suffix = cross ? " cross" : " late";
    out.push_back({"fluid {A}{B}" + suffix, Connectivity::fluid({{0}, {1}}, cross)});
    out.push_back({"fluid {AB}{C}" + suffix, Connectivity::fluid({{0, 1}, {2}}, cross)});
    out.push_back({"fluid {AB}{CD}" + suffix, Connectivity::fluid({{0, 1}, {2, 3}}, cross)});
  }
  return out;
}

/// Uneven group sizes for `g` groups with `base` channels in the first.
inline GroupSpec uneven(int64_t g, int64_t base) {
  std::vector<int64_t> sizes;
  for (int64_t k = 0; k < g; ++k) sizes.push_back(base + k * (k % 2 == 0 ? 1 : 2));
  return GroupSpec::counts(sizes);
}

/// Named parameters (and buffers) of a module, by name.
inline std::map<std::string, torch::Tensor> tensors_of(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value();
  for (const auto& b : m.named_buffers()) out[b.key()] = b.value();
  return out;
}

/// Group `i`'s channels inside a compact tensor that holds the groups of `active`.
inline torch::Tensor compact_group(const torch::Tensor& x, const GroupSpec& spec, Config active, int64_t i) {
  int64_t offset = 0;
  for (int64_t k = 0; k < i; ++k)
    if (active.contains(k)) offset += spec.size(k);
  return x.narrow(1, offset, spec.size(i));
}

/// `y_j = sum over active allowed inputs i of op(x_i, W_ji) + b_j`, concatenated over active j.
/// `dense_in`: one input block (index 0) read by every output group.
/// `dense_out`: one output (index 0) reading every active input group; `bias_in` adds `bias_in<i>`.
inline torch::Tensor reference_grouped(
    const torch::Tensor& x, const std::map<std::string, torch::Tensor>& p, const GroupSpec& in, const GroupSpec& out,
    const Connectivity& conn, Config config, bool dense_in, bool dense_out, bool bias_in,
    const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& op) {
  std::vector<torch::Tensor> outputs;
  const Config active_in = dense_in ? Config(1) : config;
  const int64_t out_groups = dense_out ? 1 : out.num_groups();
  for (int64_t j = 0; j < out_groups; ++j) {
    if (!dense_out && !config.contains(j)) continue;
    torch::Tensor y;
    for (int64_t i = 0; i < in.num_groups(); ++i) {
      const bool allowed = dense_in || dense_out || conn.reads(j, i);
      if (!allowed || !active_in.contains(i)) continue;
      auto term = op(compact_group(x, in, active_in, i), p.at("weight_" + std::to_string(j) + "_" + std::to_string(i)));
      if (bias_in && p.count("bias_in" + std::to_string(i))) term = term + p.at("bias_in" + std::to_string(i));
      y = y.defined() ? y + term : term;
    }
    const std::string bias = "bias_" + std::to_string(j);
    if (!bias_in && p.count(bias)) {
      auto b = p.at(bias);
      y = y + (y.dim() == 4 ? b.view({1, -1, 1, 1}) : b);
    }
    outputs.push_back(y);
  }
  return torch::cat(outputs, 1);
}

/// Leaf copies of `p` (so a reference backward does not touch the module).
inline std::map<std::string, torch::Tensor> leaf_copies(const std::map<std::string, torch::Tensor>& p) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [k, v] : p) out[k] = v.detach().clone().set_requires_grad(v.requires_grad());
  return out;
}

/// Checks `a` and `b` are close, with a message naming `what`.
inline bool close(const torch::Tensor& a, const torch::Tensor& b, double rtol, double atol) {
  return a.sizes() == b.sizes() && torch::allclose(a, b, rtol, atol);
}

}  // namespace testutil
