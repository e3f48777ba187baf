#include <dydnn/errors.h>
#include <dydnn/nn/dynamic_net.h>
#include <dydnn/nn/kernels.h>

#include <torch/torch.h>

namespace dydnn {
namespace nn {

DynamicNetImpl::DynamicNetImpl(NetSpec spec) : spec_(std::move(spec)) {
  spec_.validate();
  connectivity_ = spec_.make_connectivity();
  int64_t h = spec_.height, w = spec_.width;
  GroupSpec previous;  // empty before the first layer: the image is a dense input
  bool flat = false;
  for (size_t k = 0; k < spec_.layers.size(); ++k) {
    Block block;
    block.spec = spec_.layers[k];
    const GroupSpec groups = spec_.group_spec(block.spec);
    const bool dense_input = previous.num_groups() == 0;
    if (block.spec.kind == LayerKind::Conv) {
      const auto& l = block.spec;
      GroupSpec in = dense_input ? GroupSpec::counts({spec_.in_channels}) : previous;
      block.conv = register_module(fmt::format("conv{}", k),
                                   DynamicConv2d(DynamicConv2dOptions(in, groups, l.kernel)
                                                     .stride(l.stride)
                                                     .padding(l.padding)
                                                     .bias(!l.batch_norm)
                                                     .connectivity(connectivity_)
                                                     .dense_input(dense_input)));
      if (l.batch_norm)
        block.bn = register_module(fmt::format("bn{}", k),
                                   DynamicBatchNorm2d(DynamicBatchNorm2dOptions(groups).connectivity(connectivity_)));
      h = (h + 2 * l.padding - l.kernel) / l.stride + 1;
      w = (w + 2 * l.padding - l.kernel) / l.stride + 1;
      block.conv_h = h;
      block.conv_w = w;
      const int64_t pool = std::max(l.max_pool, l.avg_pool);
      if (pool > 0) {
        h /= pool;
        w /= pool;
      }
      if (l.global_avg_pool) h = w = 1;
    } else {
      GroupSpec in = dense_input ? GroupSpec::counts({spec_.in_channels * h * w})
                                 : (flat ? previous : previous.scaled(h * w));
      block.linear = register_module(
          fmt::format("linear{}", k),
          DynamicLinear(DynamicLinearOptions(in, groups).connectivity(connectivity_).dense_input(dense_input)));
      flat = true;
      h = w = 1;
    }
    previous = groups;
    blocks_.push_back(block);
  }
  const auto exit_shapes = spec_.exit_shapes();
  for (size_t e = 0; e < spec_.exits.size(); ++e) {
    const auto& x = spec_.exits[e];
    const GroupSpec channels = spec_.group_spec(spec_.layers[x.after - 1]);
    const int64_t pixels = exit_shapes[e][1] * exit_shapes[e][2];
    heads_.push_back(make_head(fmt::format("exit{}", e), x.after, x.avg_pool, channels.scaled(pixels)));
  }
  heads_.push_back(make_head("head", static_cast<int64_t>(blocks_.size()), 0, flat ? previous : previous.scaled(h * w)));
  config_ = connectivity_.full_config();
}

DynamicNetImpl::Head DynamicNetImpl::make_head(const std::string& name, int64_t after, int64_t avg_pool,
                                               GroupSpec groups) {
  Head head;
  head.after = after;
  head.avg_pool = avg_pool;
  head.groups = std::move(groups);
  if (spec_.head == HeadKind::PerConfig) {
    for (const auto& c : connectivity_.valid_configs())
      head.per_config.push_back(
          register_module(name + "_" + c.name(), torch::nn::Linear(head.groups.channels_in(c), spec_.classes)));
  } else {
    head.linear = register_module(name, DynamicLinear(DynamicLinearOptions(head.groups, GroupSpec::counts({spec_.classes}))
                                                          .connectivity(connectivity_)
                                                          .dense_output(true)
                                                          .bias_per_input_group(spec_.head == HeadKind::Additive)));
  }
  return head;
}

void DynamicNetImpl::check_config(Config config) const { connectivity_.check_valid(config, "DynamicNet"); }

void DynamicNetImpl::set_config(Config config) {
  check_config(config);
  config_ = config;
  // The layers follow, so that each one reports (and runs standalone at) the net's config.
  for (auto& b : blocks_) {
    if (b.conv) b.conv->set_config(config);
    if (b.bn) b.bn->set_config(config);
    if (b.linear) b.linear->set_config(config);
  }
  for (auto& h : heads_)
    if (h.linear) h.linear->set_config(config);
}

torch::Tensor DynamicNetImpl::forward(const torch::Tensor& input) { return run(input, config_, num_exits() - 1); }

torch::Tensor DynamicNetImpl::forward(const torch::Tensor& input, Config config) {
  check_config(config);
  return run(input, config, num_exits() - 1);
}

int64_t DynamicNetImpl::check_exit(int64_t exit) const {
  if (exit == -1) return num_exits() - 1;
  DYDNN_CHECK_INDEX(exit >= 0 && exit < num_exits(), "nn", "DynamicNet '{}': exit {} is out of range (valid: 0..{}, or -1 for the final head)",
                    spec_.name, exit, num_exits() - 1);
  return exit;
}

int64_t DynamicNetImpl::exit_depth(int64_t exit) const { return heads_[check_exit(exit)].after; }

torch::Tensor DynamicNetImpl::forward_to_exit(const torch::Tensor& input, Config config, int64_t exit) {
  check_config(config);
  return run(input, config, check_exit(exit));
}

std::vector<torch::Tensor> DynamicNetImpl::forward_exits(const torch::Tensor& input, Config config) {
  check_config(config);
  check_input(input);
  std::vector<torch::Tensor> out;
  torch::Tensor x = input;
  size_t e = 0;
  for (size_t k = 0; k < blocks_.size(); ++k) {
    x = run_block(blocks_[k], x, config);
    for (; e < heads_.size() && heads_[e].after == static_cast<int64_t>(k + 1); ++e) out.push_back(run_head(e, x, config));
  }
  return out;
}

torch::Tensor DynamicNetImpl::finish_block(const Block& b, torch::Tensor x) const {
  const auto& l = b.spec;
  const bool grad = torch::GradMode::is_enabled() && x.requires_grad();
  auto relu = [grad](torch::Tensor& t) { t = grad ? torch::relu(t) : torch::relu_(t); };
  if (b.conv) {
    // ReLU and max pooling commute: pooling first leaves k*k times fewer elements.
    if (l.max_pool) x = max_pool2d_fast(x, l.max_pool);
    if (l.relu) relu(x);
    if (l.avg_pool) x = torch::avg_pool2d(x, l.avg_pool, l.avg_pool);
    if (l.global_avg_pool) x = torch::adaptive_avg_pool2d(x, {1, 1});
  } else if (l.relu) {
    relu(x);
  }
  return x;
}

torch::Tensor DynamicNetImpl::run_head(int64_t exit, torch::Tensor x, Config config) {
  Head& h = heads_[exit];
  if (h.avg_pool) x = torch::avg_pool2d(x, h.avg_pool, h.avg_pool);
  if (x.dim() != 2) x = x.flatten(1);
  if (!h.per_config.empty()) return h.per_config[connectivity_.index_of(config)]->forward(x);
  return h.linear->forward(x, config);
}

torch::Tensor DynamicNetImpl::run_block(Block& b, torch::Tensor x, Config config) {
  if (b.conv) {
    x = b.conv->forward(x, config);
    if (b.bn) x = b.bn->forward(x, config);
  } else {
    if (x.dim() != 2) x = x.flatten(1);
    x = b.linear->forward(x, config);
  }
  return finish_block(b, x);
}

void DynamicNetImpl::check_input(const torch::Tensor& input) const {
  DYDNN_CHECK_VALUE(input.defined(), "nn", "DynamicNet: the input tensor is undefined");
  DYDNN_CHECK_VALUE(input.dim() == 4 && input.size(1) == spec_.in_channels && input.size(2) == spec_.height &&
                        input.size(3) == spec_.width,
                    "nn", "DynamicNet '{}': expected input [N, {}, {}, {}] (got [{}])", spec_.name, spec_.in_channels,
                    spec_.height, spec_.width, fmt::join(input.sizes(), ", "));
}

torch::Tensor DynamicNetImpl::run(const torch::Tensor& input, Config config, int64_t exit) {
  check_input(input);
  if (torch::GradMode::is_enabled() && is_training()) {
    const Config frozen = frozen_part(config);
    const Config rest(config.mask() & ~frozen.mask());
    // The split needs the frozen groups first in channel order and to be a config itself.
    if (!frozen.empty() && !rest.empty() && frozen.highest() < rest.groups().front() && connectivity_.is_valid(frozen))
      return run_split(input, config, frozen, exit);
  }
  torch::Tensor x = input;
  for (int64_t k = 0; k < heads_[exit].after; ++k) x = run_block(blocks_[k], x, config);
  return run_head(exit, x, config);
}

torch::Tensor DynamicNetImpl::run_split(const torch::Tensor& input, Config config, Config frozen, int64_t exit) {
  const Config rest(config.mask() & ~frozen.mask());
  torch::Tensor xf = input, xt;  // frozen groups' activations (no autograd); the rest's
  for (int64_t k = 0; k < heads_[exit].after; ++k) {
    auto& b = blocks_[k];
    if (b.linear && xf.dim() != 2) {
      xf = xf.flatten(1);
      if (xt.defined()) xt = xt.flatten(1);
    }
    const torch::Tensor both = xt.defined() ? torch::cat({xf, xt}, 1) : xf;
    {
      torch::NoGradGuard no_grad;
      if (b.conv) {
        xf = b.conv->forward(xf, frozen);
        if (b.bn) xf = b.bn->forward(xf, frozen);
      } else {
        xf = b.linear->forward(xf, frozen);
      }
      xf = finish_block(b, xf);
    }
    xt = finish_block(b, run_rows(b, both, config, rest));
  }
  return run_head(exit, torch::cat({xf, xt}, 1), config);
}

torch::Tensor DynamicNetImpl::forward_block(int64_t k, const torch::Tensor& input, Config config, Config rows) {
  DYDNN_CHECK_INDEX(k >= 0 && k < num_blocks(), "nn", "DynamicNet '{}': layer {} (valid: 0..{})", spec_.name, k,
                    num_blocks() - 1);
  check_config(config);
  DYDNN_CHECK_VALUE(input.defined(), "nn", "DynamicNet: the input tensor is undefined");
  if (rows.empty()) rows = config;
  DYDNN_CHECK_VALUE(config.includes(rows), "nn", "DynamicNet '{}': rows {} are not a subset of config {}", spec_.name,
                    rows.to_string(), config.to_string());
  auto& b = blocks_[static_cast<size_t>(k)];
  torch::Tensor x = input;
  if (b.linear && x.dim() != 2) x = x.flatten(1);
  if (rows == config) {
    if (b.conv) {
      x = b.conv->forward(x, config);
      if (b.bn) x = b.bn->forward(x, config);
    } else {
      x = b.linear->forward(x, config);
    }
  } else {
    x = run_rows(b, x, config, rows);
  }
  return finish_block(b, x);
}

torch::Tensor DynamicNetImpl::run_rows(Block& b, const torch::Tensor& x, Config config, Config rows) {
  if (!b.conv) return b.linear->forward_rows(x.dim() == 2 ? x : x.flatten(1), config, rows);
  if (b.bn && !b.bn->is_training() && !torch::GradMode::is_enabled()) {
    // Eval without autograd: the BN folded into the cached row weights, one call instead
    // of two (at batch 1 each call costs microseconds whatever its size).
    const ChannelAffine bn = b.bn->affine_for_inference(config, rows);
    return b.conv->forward_rows_inference(x, config, rows, &bn);
  }
  torch::Tensor y = b.conv->forward_rows(x, config, rows);
  return b.bn ? b.bn->forward_groups(y, config, rows) : y;
}

torch::Tensor DynamicNetImpl::features(const torch::Tensor& input, Config config) {
  check_config(config);
  torch::Tensor x = input;
  for (int64_t k = 0; k < num_blocks(); ++k) x = forward_block(k, x, config);
  return x.dim() == 2 ? x : x.flatten(1);
}

torch::Tensor DynamicNetImpl::forward_head(const torch::Tensor& features, Config config) {
  check_config(config);
  DYDNN_CHECK_VALUE(features.defined() && features.dim() == 2 && features.size(1) == heads_.back().groups.channels_in(config),
                    "nn", "DynamicNet '{}': head at {} expects features [N, {}] (got [{}])", spec_.name, config.name(),
                    heads_.back().groups.channels_in(config), features.defined() ? fmt::format("{}", fmt::join(features.sizes(), ", ")) : "undefined");
  return run_head(num_exits() - 1, features, config);
}

Config DynamicNetImpl::frozen_part(Config config) const {
  check_config(config);
  auto any_trainable = [](const std::vector<torch::Tensor>& ts) {
    for (const auto& t : ts)
      if (t.requires_grad()) return true;
    return false;
  };
  Config frozen;
  for (int64_t j : config.groups()) {
    const Config group = Config::of({j});
    const Config reads(connectivity_.inputs_of(j).mask() & config.mask() & ~group.mask());
    if (!frozen.includes(reads)) continue;
    bool trainable = false;
    for (const auto& b : blocks_) {
      if (b.conv) trainable |= any_trainable(b.conv->parameters_of(config, group));
      if (b.linear) trainable |= any_trainable(b.linear->parameters_of(config, group));
      if (b.bn) trainable |= any_trainable(b.bn->parameters_of(config, group)) || (is_training() && !b.bn->frozen(j, config));
    }
    if (!trainable) frozen = frozen | group;
  }
  return frozen;
}

std::vector<torch::Tensor> DynamicNetImpl::parameters_of(Config config) const {
  check_config(config);
  std::vector<torch::Tensor> out;
  auto add = [&out](const std::vector<torch::Tensor>& ts) { out.insert(out.end(), ts.begin(), ts.end()); };
  for (const auto& b : blocks_) {
    if (b.conv) add(b.conv->parameters_of(config));
    if (b.bn) add(b.bn->parameters_of(config));
    if (b.linear) add(b.linear->parameters_of(config));
  }
  for (const auto& h : heads_) {
    if (h.linear) add(h.linear->parameters_of(config));
    if (!h.per_config.empty()) add(h.per_config[connectivity_.index_of(config)]->parameters());
  }
  return out;
}

int64_t DynamicNetImpl::parameter_count(Config config) const {
  int64_t total = 0;
  for (const auto& t : parameters_of(config)) total += t.numel();
  return total;
}

int64_t DynamicNetImpl::block_macs(const Block& b, Config config, Config rows) const {
  const auto& in = b.conv ? b.conv->options.in_groups() : b.linear->options.in_groups();
  const auto& out = b.conv ? b.conv->options.out_groups() : b.linear->options.out_groups();
  const bool dense_in = b.conv ? b.conv->options.dense_input() : b.linear->options.dense_input();
  const int64_t per_weight = b.conv ? b.spec.kernel * b.spec.kernel * b.conv_h * b.conv_w : 1;
  int64_t total = 0;
  for (int64_t j : rows.groups())
    for (int64_t i = 0; i < in.num_groups(); ++i)
      if (dense_in || (config.contains(i) && connectivity_.reads(j, i))) total += out.size(j) * in.size(i) * per_weight;
  return total;
}

int64_t DynamicNetImpl::macs(Config config) const { return macs(config, -1); }

int64_t DynamicNetImpl::macs(Config config, int64_t exit) const {
  return refine_macs(Config(), 0, config, exit);
}

int64_t DynamicNetImpl::refine_macs(Config from, int64_t from_exit, Config to, int64_t to_exit) const {
  check_config(to);
  const Head& head = heads_[check_exit(to_exit)];
  // `from` empty = nothing computed (a fresh forward).
  const int64_t done = from.empty() ? 0 : heads_[check_exit(from_exit)].after;
  const Config added(to.mask() & ~from.mask());
  int64_t total = 0;
  for (int64_t k = 0; k < head.after; ++k) total += block_macs(blocks_[k], to, k < done ? added : to);
  return total + head.groups.channels_in(to) * spec_.classes;
}

std::vector<StaticLayer> DynamicNetImpl::static_layers(Config config) {
  check_config(config);
  std::vector<StaticLayer> out;
  auto simple = [&](const char* kind, int64_t k) {
    StaticLayer s{kind, {}, {}, {}};
    if (k > 0) s.ints["kernel_size"] = k;
    out.push_back(s);
  };
  bool flat = false;
  for (auto& b : blocks_) {
    const auto& l = b.spec;
    if (b.conv) {
      out.push_back(b.conv->static_layer(config));
      if (b.bn) out.push_back(b.bn->static_layer(config));
      if (l.relu) simple("relu", 0);
      if (l.max_pool) simple("max_pool2d", l.max_pool);
      if (l.avg_pool) simple("avg_pool2d", l.avg_pool);
      if (l.global_avg_pool) simple("adaptive_avg_pool2d", 0);
    } else {
      if (!flat) simple("flatten", 0);
      flat = true;
      out.push_back(b.linear->static_layer(config));
      if (l.relu) simple("relu", 0);
    }
  }
  if (!flat) simple("flatten", 0);
  Head& head = heads_.back();
  if (!head.per_config.empty()) {
    auto& h = head.per_config[connectivity_.index_of(config)];
    out.push_back(StaticLayer{"linear", {{"weight", h->weight.detach().clone()}, {"bias", h->bias.detach().clone()}}, {}, {}});
  } else {
    out.push_back(head.linear->static_layer(config));
  }
  return out;
}

torch::nn::Sequential DynamicNetImpl::materialize(Config config) { return make_sequential(static_layers(config)); }

int64_t DynamicNetImpl::resident_bytes() const {
  int64_t total = 0;
  for (const auto& b : blocks_) {
    if (b.conv) total += b.conv->resident_bytes();
    if (b.bn) total += b.bn->resident_bytes();
    if (b.linear) total += b.linear->resident_bytes();
  }
  for (const auto& h : heads_) {
    if (h.linear) total += h.linear->resident_bytes();
    for (const auto& l : h.per_config)
      for (const auto& p : l->parameters()) total += static_cast<int64_t>(p.numel() * p.element_size());
  }
  return total;
}

void DynamicNetImpl::set_frozen_statistics(int64_t group, bool frozen) {
  for (auto& b : blocks_)
    if (b.bn) b.bn->set_frozen(group, frozen);
}

void DynamicNetImpl::set_frozen_statistics(Config config, bool frozen) {
  check_config(config);
  for (auto& b : blocks_)
    if (b.bn)
      for (int64_t j : config.groups()) b.bn->set_frozen(j, config, frozen);
}

void DynamicNetImpl::invalidate_caches() {
  for (auto& b : blocks_) {
    if (b.conv) b.conv->invalidate_cache();
    if (b.bn) b.bn->invalidate_cache();
    if (b.linear) b.linear->invalidate_cache();
  }
  for (auto& h : heads_)
    if (h.linear) h.linear->invalidate_cache();
}

void DynamicNetImpl::set_execution(Execution execution) {
  for (auto& b : blocks_) {
    if (b.conv) b.conv->options.execution(execution);
    if (b.linear) b.linear->options.execution(execution);
  }
  for (auto& h : heads_)
    if (h.linear) h.linear->options.execution(execution);
}

}  // namespace nn
}  // namespace dydnn
