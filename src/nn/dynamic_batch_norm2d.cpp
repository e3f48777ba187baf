#include <dydnn/errors.h>
#include <dydnn/nn/dynamic_batch_norm2d.h>
#include <dydnn/nn/detail/grouped_weight.h>

#include <torch/torch.h>

namespace dydnn {
namespace nn {

DynamicBatchNorm2dOptions::DynamicBatchNorm2dOptions(GroupSpec groups)
    : groups_(std::move(groups)), connectivity_(Connectivity::incremental(std::max<int64_t>(groups_.num_groups(), 1))) {}

DynamicBatchNorm2dImpl::DynamicBatchNorm2dImpl(DynamicBatchNorm2dOptions options_) : options(std::move(options_)) {
  reset();
}

void DynamicBatchNorm2dImpl::reset() {
  const auto& groups = options.groups();
  const auto& conn = options.connectivity();
  DYDNN_CHECK_VALUE(groups.num_groups() == conn.num_groups(), "nn",
                    "DynamicBatchNorm2d: groups {} has {} groups but the connectivity '{}' has {} (they must match)",
                    groups.to_string(), groups.num_groups(), conn.name(), conn.num_groups());
  DYDNN_CHECK_VALUE(options.eps() > 0, "nn", "DynamicBatchNorm2d: eps {} (valid: > 0)", options.eps());
  DYDNN_CHECK_VALUE(options.momentum() >= 0 && options.momentum() <= 1, "nn",
                    "DynamicBatchNorm2d: momentum {} (valid: 0..1)", options.momentum());
  slots_.assign(groups.num_groups(), {});
  slot_index_.assign(groups.num_groups(), {});
  cache_.clear();
  affine_cache_.clear();
  for (int64_t j = 0; j < groups.num_groups(); ++j) {
    const bool exact = conn.group_is_exact(j);
    for (const auto& c : conn.valid_configs()) {
      if (!c.contains(j)) continue;
      const Config context = conn.context_of(j, c);
      if (slot_index_[j].count(context.mask()) != 0) continue;
      const std::string suffix = exact ? std::to_string(j) : fmt::format("{}_at_{}", j, context.name());
      const int64_t n = groups.size(j);
      Slot s;
      s.weight = register_parameter("weight_" + suffix, torch::ones({n}));
      s.bias = register_parameter("bias_" + suffix, torch::zeros({n}));
      s.running_mean = register_buffer("running_mean_" + suffix, torch::zeros({n}));
      s.running_var = register_buffer("running_var_" + suffix, torch::ones({n}));
      slot_index_[j][context.mask()] = slots_[j].size();
      slots_[j].push_back(s);
    }
  }
  frozen_.assign(groups.num_groups(), {});
  for (int64_t j = 0; j < groups.num_groups(); ++j) frozen_[j].assign(slots_[j].size(), false);
  config_ = conn.full_config();
}

void DynamicBatchNorm2dImpl::pretty_print(std::ostream& stream) const {
  stream << fmt::format("dydnn::nn::DynamicBatchNorm2d(groups={}, connectivity={}, eps={}, momentum={}, config={})",
                        options.groups().to_string(), options.connectivity().name(), options.eps(), options.momentum(),
                        config_.to_string());
}

void DynamicBatchNorm2dImpl::set_config(Config config) {
  options.connectivity().check_valid(config, "DynamicBatchNorm2d");
  config_ = config;
}

void DynamicBatchNorm2dImpl::check_group(int64_t group) const {
  DYDNN_CHECK_INDEX(group >= 0 && group < options.groups().num_groups(), "nn",
                    "DynamicBatchNorm2d: group {} is out of range (valid: 0..{})", group,
                    options.groups().num_groups() - 1);
}

void DynamicBatchNorm2dImpl::set_frozen(int64_t group, bool frozen) {
  check_group(group);
  frozen_[group].assign(frozen_[group].size(), frozen);
}

void DynamicBatchNorm2dImpl::set_frozen(int64_t group, Config config, bool frozen) {
  check_group(group);
  options.connectivity().check_valid(config, "DynamicBatchNorm2d");
  DYDNN_CHECK_VALUE(config.contains(group), "nn", "DynamicBatchNorm2d: group {} is not part of config {}", group,
                    config.to_string());
  frozen_[group][slot_of(group, config)] = frozen;
}

bool DynamicBatchNorm2dImpl::frozen(int64_t group) const {
  check_group(group);
  for (bool f : frozen_[group])
    if (!f) return false;
  return true;
}

bool DynamicBatchNorm2dImpl::frozen(int64_t group, Config config) const {
  check_group(group);
  options.connectivity().check_valid(config, "DynamicBatchNorm2d");
  DYDNN_CHECK_VALUE(config.contains(group), "nn", "DynamicBatchNorm2d: group {} is not part of config {}", group,
                    config.to_string());
  return frozen_[group][slot_of(group, config)];
}

int64_t DynamicBatchNorm2dImpl::num_slots(int64_t group) const {
  check_group(group);
  return static_cast<int64_t>(slots_[group].size());
}

std::vector<torch::Tensor> DynamicBatchNorm2dImpl::parameters_of(Config config, Config groups) const {
  options.connectivity().check_valid(config, "DynamicBatchNorm2d");
  std::vector<torch::Tensor> out;
  for (int64_t j : config.groups()) {
    if (!groups.empty() && !groups.contains(j)) continue;
    const auto& s = slot(j, config);
    out.push_back(s.weight);
    out.push_back(s.bias);
  }
  return out;
}

size_t DynamicBatchNorm2dImpl::slot_of(int64_t group, Config config) const {
  return slot_index_[group].at(options.connectivity().context_of(group, config).mask());
}

const DynamicBatchNorm2dImpl::Slot& DynamicBatchNorm2dImpl::slot(int64_t group, Config config) const {
  return slots_[group][slot_of(group, config)];
}

std::array<std::vector<torch::Tensor>, 4> DynamicBatchNorm2dImpl::slot_tensors(Config config, Config groups) const {
  std::array<std::vector<torch::Tensor>, 4> out;
  for (int64_t j : groups.groups()) {
    const auto& s = slot(j, config);
    out[0].push_back(s.weight);
    out[1].push_back(s.bias);
    out[2].push_back(s.running_mean);
    out[3].push_back(s.running_var);
  }
  return out;
}

uint64_t DynamicBatchNorm2dImpl::version_sum(Config config, Config groups) const {
  uint64_t sum = 0;
  for (int64_t j : groups.groups()) {
    const auto& s = slot(j, config);
    // Data pointers too: loading replaces a tensor's data without bumping its version.
    for (const auto* t : {&s.weight, &s.bias, &s.running_mean, &s.running_var})
      sum += detail::version_of(*t) + reinterpret_cast<uintptr_t>(t->data_ptr());
  }
  return sum;
}

std::vector<torch::Tensor> DynamicBatchNorm2dImpl::concatenated(Config config) {
  const uint64_t version = version_sum(config, config);
  auto it = cache_.find(config);
  if (it != cache_.end() && it->second.version == version) {
    // Cached tensors must follow the parameters to a new device or dtype.
    const auto& first = slot(config.groups().front(), config).weight;
    if (it->second.tensors[0].device() == first.device() && it->second.tensors[0].dtype() == first.dtype())
      return it->second.tensors;
  }
  torch::NoGradGuard no_grad;
  Cached cached{version, {}};
  for (auto& p : slot_tensors(config, config)) cached.tensors.push_back(torch::cat(p, 0));
  cache_[config] = cached;
  return cached.tensors;
}

torch::Tensor DynamicBatchNorm2dImpl::forward(const torch::Tensor& input) { return forward_at(input, config_); }

torch::Tensor DynamicBatchNorm2dImpl::forward(const torch::Tensor& input, Config config) {
  options.connectivity().check_valid(config, "DynamicBatchNorm2d");
  return forward_at(input, config);
}

torch::Tensor DynamicBatchNorm2dImpl::forward_at(const torch::Tensor& input, Config config) {
  DYDNN_CHECK_VALUE(input.defined(), "nn", "DynamicBatchNorm2d: the input tensor is undefined");
  DYDNN_CHECK_VALUE(input.dim() == 4, "nn", "DynamicBatchNorm2d: expected a 4D input [N, C, H, W] (got a {}D input)",
                    input.dim());
  const int64_t expected = options.groups().channels_in(config);
  DYDNN_CHECK_VALUE(input.size(1) == expected, "nn",
                    "DynamicBatchNorm2d: input has {} channels, but config {} needs {} (the active groups of {})",
                    input.size(1), config.to_string(), expected, options.groups().to_string());
  bool needs_grad = torch::GradMode::is_enabled() && input.requires_grad();
  bool all_frozen = true;
  for (int64_t j : config.groups()) {
    const auto& s = slot(j, config);
    needs_grad |= torch::GradMode::is_enabled() && (s.weight.requires_grad() || s.bias.requires_grad());
    all_frozen = all_frozen && frozen_[j][slot_of(j, config)];
  }
  // Frozen statistics normalise as in eval mode: one call over the cached sets (the
  // frozen part of a split training forward takes this path).
  if ((!is_training() || all_frozen) && !needs_grad) {
    auto t = concatenated(config);
    return torch::batch_norm(input, t[0], t[1], t[2], t[3], false, options.momentum(), options.eps(), true);
  }
  return normalize_groups(input, config, config);
}

torch::Tensor DynamicBatchNorm2dImpl::forward_groups(const torch::Tensor& input, Config config, Config groups) {
  check_groups(config, groups);
  DYDNN_CHECK_VALUE(input.defined() && input.dim() == 4 && input.size(1) == options.groups().channels_in(groups), "nn",
                    "DynamicBatchNorm2d: forward_groups expects [N, {}, H, W] for groups {}", 
                    options.groups().channels_in(groups), groups.to_string());
  return normalize_groups(input, config, groups);
}

void DynamicBatchNorm2dImpl::check_groups(Config config, Config groups) const {
  options.connectivity().check_valid(config, "DynamicBatchNorm2d");
  DYDNN_CHECK_VALUE((groups & config) == groups && groups.count() > 0, "nn",
                    "DynamicBatchNorm2d: groups {} must be a non-empty part of config {}", groups.to_string(),
                    config.to_string());
}

ChannelAffine DynamicBatchNorm2dImpl::affine_for_inference(Config config, Config groups) {
  check_groups(config, groups);
  const uint64_t version = version_sum(config, groups);
  for (const auto& entry : affine_cache_)
    if (entry.config == config && entry.groups == groups && entry.affine.version == version) {
      // Cached tensors must follow the parameters to a new device or dtype.
      const auto& first = slot(groups.groups().front(), config).weight;
      if (entry.affine.scale.device() == first.device() && entry.affine.scale.dtype() == first.dtype())
        return entry.affine;
    }
  torch::NoGradGuard no_grad;
  const auto [w, b, mean, var] = slot_tensors(config, groups);
  ChannelAffine affine;
  affine.scale = torch::cat(w) * torch::rsqrt(torch::cat(var) + options.eps());
  affine.shift = torch::cat(b) - torch::cat(mean) * affine.scale;
  affine.version = version;
  if (affine_cache_.size() >= kAffineCacheSize) affine_cache_.erase(affine_cache_.begin());
  affine_cache_.push_back({config, groups, affine});
  return affine;
}

torch::Tensor DynamicBatchNorm2dImpl::normalize_groups(const torch::Tensor& input, Config config, Config groups) {
  // Training updates the running statistics inside the kernel and the optimiser steps
  // through `.data()`: neither bumps a version counter, so the cached sets go. (An
  // inference call, such as a refinement's new group, leaves them for the next forward.)
  if (is_training() || torch::GradMode::is_enabled()) {
    cache_.clear();
    affine_cache_.clear();
  }
  bool all_learn = is_training();
  for (int64_t j : groups.groups()) all_learn = all_learn && !frozen_[j][slot_of(j, config)];
  if (all_learn && groups.count() > 1) {
    // One call over all channels: the per-channel statistics are the same as per group,
    // and the updated running values are copied back to each group's own buffers.
    const auto [w, b, mean, var] = slot_tensors(config, groups);
    auto running_mean = torch::cat(mean), running_var = torch::cat(var);
    auto out = torch::batch_norm(input, torch::cat(w), torch::cat(b), running_mean, running_var, true,
                                 options.momentum(), options.eps(), true);
    torch::NoGradGuard no_grad;
    int64_t offset = 0;
    for (int64_t j : groups.groups()) {
      const auto& s = slot(j, config);
      const int64_t n = options.groups().size(j);
      s.running_mean.copy_(running_mean.narrow(0, offset, n));
      s.running_var.copy_(running_var.narrow(0, offset, n));
      offset += n;
    }
    return out;
  }
  // Per group: each group's own statistics update in place, frozen groups use theirs.
  // `split` rather than `narrow`: its backward is one concatenation, where each
  // narrow's backward would allocate and add a full-size zero tensor.
  if (groups.count() == 1) {
    const int64_t j = groups.groups().front();
    const auto& s = slot(j, config);
    return torch::batch_norm(input, s.weight, s.bias, s.running_mean, s.running_var,
                             is_training() && !frozen_[j][slot_of(j, config)], options.momentum(), options.eps(), true);
  }
  std::vector<int64_t> sizes;
  for (int64_t j : groups.groups()) sizes.push_back(options.groups().size(j));
  const auto parts = input.split_with_sizes(sizes, 1);
  std::vector<torch::Tensor> outputs;
  size_t k = 0;
  for (int64_t j : groups.groups()) {
    const auto& s = slot(j, config);
    const bool train_stats = is_training() && !frozen_[j][slot_of(j, config)];
    outputs.push_back(torch::batch_norm(parts[k++], s.weight, s.bias, s.running_mean, s.running_var, train_stats,
                                        options.momentum(), options.eps(), true));
  }
  return outputs.size() == 1 ? outputs.front() : torch::cat(outputs, 1);
}

void DynamicBatchNorm2dImpl::invalidate_cache() {
  cache_.clear();
  affine_cache_.clear();
}

int64_t DynamicBatchNorm2dImpl::resident_bytes() const {
  int64_t total = 0;
  auto add = [&](const torch::Tensor& t) { total += static_cast<int64_t>(t.numel() * t.element_size()); };
  for (const auto& group : slots_)
    for (const auto& s : group) {
      add(s.weight);
      add(s.bias);
      add(s.running_mean);
      add(s.running_var);
    }
  for (const auto& entry : cache_)
    for (const auto& t : entry.second.tensors) add(t);
  for (const auto& entry : affine_cache_) {
    add(entry.affine.scale);
    add(entry.affine.shift);
  }
  return total;
}

StaticLayer DynamicBatchNorm2dImpl::static_layer(Config config) {
  options.connectivity().check_valid(config, "DynamicBatchNorm2d");
  auto t = concatenated(config);
  return StaticLayer{"batch_norm2d",
                     {{"weight", t[0].clone()}, {"bias", t[1].clone()}, {"running_mean", t[2].clone()},
                      {"running_var", t[3].clone()}},
                     {},
                     {{"eps", options.eps()}, {"momentum", options.momentum()}}};
}

torch::nn::BatchNorm2d DynamicBatchNorm2dImpl::materialize(Config config) { return make_batch_norm2d(static_layer(config)); }

}  // namespace nn
}  // namespace dydnn
