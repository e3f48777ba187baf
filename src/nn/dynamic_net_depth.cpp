// Depth: early exits (adaptive forward, parallel exit heads) and anytime refinement.
#include <dydnn/detail/side_thread.h>
#include <dydnn/errors.h>
#include <dydnn/nn/dynamic_net.h>

#include <torch/torch.h>

#include <cmath>

namespace dydnn {
namespace nn {

std::string to_string(ExitCriterion criterion) {
  return criterion == ExitCriterion::Entropy ? "entropy" : "max_prob";
}

ExitCriterion parse_exit_criterion(const std::string& text) {
  if (text == "entropy") return ExitCriterion::Entropy;
  if (text == "max_prob") return ExitCriterion::MaxProb;
  dydnn::detail::throw_value_error("nn", "unknown exit criterion '{}' (valid: entropy, max_prob)", text);
}

at::Tensor exit_scores(const at::Tensor& logits, ExitCriterion criterion) {
  DYDNN_CHECK_VALUE(logits.defined() && logits.dim() == 2, "nn", "exit_scores: expected logits [N, classes] (got {}D)",
                    logits.defined() ? logits.dim() : 0);
  const auto log_p = torch::log_softmax(logits, 1);
  if (criterion == ExitCriterion::MaxProb) return 1 - std::get<0>(log_p.max(1)).exp();
  return -(log_p.exp() * log_p).sum(1);
}

namespace {

// What an exit decides for the rows still running: which answer here.
struct Decision {
  torch::Tensor logits, take;
};

Decision decide(const torch::Tensor& logits, ExitCriterion criterion, double threshold) {
  return {logits, exit_scores(logits, criterion) < threshold};
}

}  // namespace

AdaptiveOutput DynamicNetImpl::forward_adaptive(const torch::Tensor& input, Config config, const ExitPolicy& policy) {
  check_config(config);
  check_input(input);
  const int64_t exits = num_exits();
  DYDNN_CHECK_VALUE(policy.thresholds.empty() || static_cast<int64_t>(policy.thresholds.size()) == exits - 1, "nn",
                    "DynamicNet '{}': {} exit thresholds for {} early exit(s) (valid: {} or none; the final head always "
                    "answers)",
                    spec_.name, policy.thresholds.size(), exits - 1, exits - 1);
  for (size_t e = 0; e < policy.thresholds.size(); ++e)
    DYDNN_CHECK_VALUE(!std::isnan(policy.thresholds[e]), "nn", "DynamicNet: exit threshold {} is NaN (valid: a number)",
                      e);
  const int64_t n = input.size(0);
  const auto long_options = torch::TensorOptions().dtype(torch::kLong).device(input.device());
  if (policy.parallel_heads && !side_) side_ = std::make_shared<dydnn::detail::SideThread>();

  torch::Tensor x = input;
  torch::Tensor rows;               // the batch index of each row of x; undefined = all, in order
  torch::Tensor logits_out, exits_out;  // made when the first sample exits early
  int64_t k = 0;
  for (int64_t e = 0; e < exits; ++e) {
    const bool last = e == exits - 1;
    const double threshold = last || policy.thresholds.empty() ? -1.0 : policy.thresholds[e];
    if (!last && threshold < 0) continue;  // a disabled exit costs nothing
    for (; k < heads_[e].after; ++k) x = run_block(blocks_[k], x, config);
    Decision d;
    torch::Tensor x_next;
    if (last) {
      d.logits = run_head(e, x, config);
    } else if (policy.parallel_heads) {
      // The head and its decision on the side thread, the next exit's layers here.
      const bool grad = torch::GradMode::is_enabled();
      const bool inference = c10::InferenceMode::is_enabled();
      side_->submit([&, grad, inference] {
        torch::AutoGradMode grad_mode(grad);
        c10::InferenceMode inference_mode(inference);
        d = decide(run_head(e, x, config), policy.criterion, threshold);
      });
      x_next = x;
      int64_t next = heads_[e + 1].after;
      for (int64_t j = k; j < next; ++j) x_next = run_block(blocks_[j], x_next, config);
      side_->wait();
      k = next;
    } else {
      d = decide(run_head(e, x, config), policy.criterion, threshold);
    }
    if (last) {
      if (!logits_out.defined()) return {d.logits, torch::full({n}, e, long_options)};
      const auto idx = rows.defined() ? rows : torch::arange(n, long_options);
      logits_out.index_copy_(0, idx, d.logits);
      exits_out.index_fill_(0, idx, e);
      break;
    }
    if (n == 1 && !rows.defined()) {
      // Batch 1: one comparison decides; an exiting sample computes nothing more.
      if (d.take.item<bool>()) return {d.logits, torch::full({1}, e, long_options)};
    } else {
      const auto take = d.take.nonzero().squeeze(1);
      if (take.numel() == 0) {
        if (x_next.defined()) x = x_next;
        continue;
      }
      if (!logits_out.defined()) {
        logits_out = torch::empty({n, d.logits.size(1)}, d.logits.options());
        exits_out = torch::full({n}, -1, long_options);
      }
      const auto idx = rows.defined() ? rows : torch::arange(x.size(0), long_options);
      const auto taken = idx.index_select(0, take);
      logits_out.index_copy_(0, taken, d.logits.index_select(0, take));
      exits_out.index_fill_(0, taken, e);
      const auto keep = d.take.logical_not().nonzero().squeeze(1);
      if (keep.numel() == 0) return {logits_out, exits_out};
      rows = idx.index_select(0, keep);
      x = (x_next.defined() ? x_next : x).index_select(0, keep);
      continue;
    }
    if (x_next.defined()) x = x_next;
  }
  return {logits_out, exits_out};
}

std::pair<torch::Tensor, ActivationCache> DynamicNetImpl::forward_cached(const torch::Tensor& input, Config config,
                                                                         int64_t exit) {
  check_config(config);
  check_input(input);
  exit = check_exit(exit);
  DYDNN_CHECK_VALUE(!is_training(), "nn",
                    "DynamicNet '{}': forward_cached needs eval mode (call eval(); training-mode BatchNorm would "
                    "update its statistics)",
                    spec_.name);
  torch::NoGradGuard no_grad;
  ActivationCache cache;
  cache.config = config;
  cache.exit = exit;
  cache.batch = input.size(0);
  cache.input = input;
  torch::Tensor x = input;
  for (int64_t k = 0; k < heads_[exit].after; ++k) {
    x = run_block(blocks_[k], x, config);
    cache.blocks.push_back(x);
  }
  cache.logits = run_head(exit, x, config);
  return {cache.logits, cache};
}

bool DynamicNetImpl::can_refine(Config from, Config to) const {
  if (!connectivity_.is_valid(from) || !connectivity_.is_valid(to) || !to.includes(from)) return false;
  // Under `prefix` a group's BN statistics and its inputs change with the config.
  if (connectivity_.name() == "prefix") return false;
  const Config added(to.mask() & ~from.mask());
  for (int64_t j : from.groups())
    if (!(connectivity_.inputs_of(j) & added).empty()) return false;
  return true;
}

torch::Tensor DynamicNetImpl::refine(ActivationCache& cache, Config config, int64_t exit) {
  check_config(config);
  exit = check_exit(exit);
  const auto done = static_cast<int64_t>(cache.blocks.size());
  DYDNN_CHECK_VALUE(cache.exit >= 0 && cache.exit < num_exits() && heads_[cache.exit].after == done &&
                        cache.input.defined(),
                    "nn", "DynamicNet '{}': refine needs a cache made by forward_cached of this net", spec_.name);
  DYDNN_CHECK_VALUE(can_refine(cache.config, config), "nn",
                    "DynamicNet '{}': cannot refine from config {} to {} under connectivity '{}' (the target must add "
                    "groups that no cached group reads; valid targets: {})",
                    spec_.name, cache.config.name(), config.name(), connectivity_.name(), [&] {
                      std::vector<std::string> names;
                      for (const auto& c : connectivity_.valid_configs())
                        if (c != cache.config && can_refine(cache.config, c)) names.push_back(c.name());
                      return names.empty() ? std::string("none") : fmt::format("{}", fmt::join(names, ", "));
                    }());
  DYDNN_CHECK_VALUE(heads_[exit].after >= done, "nn",
                    "DynamicNet '{}': cannot refine from exit {} to the shallower exit {} (valid: {}..{})", spec_.name,
                    cache.exit, exit, cache.exit, num_exits() - 1);
  DYDNN_CHECK_VALUE(!is_training(), "nn", "DynamicNet '{}': refine needs eval mode (call eval())", spec_.name);
  torch::NoGradGuard no_grad;
  const Config added(config.mask() & ~cache.config.mask());
  if (added.empty() && exit == cache.exit) return cache.logits;
  torch::Tensor fresh_last;  // the new groups' output of the last cached layer
  if (!added.empty()) {
    // Old groups never read the new ones, so their cached activations stay; each layer's
    // new groups read the widened output of the layer before.
    const bool appended = added.groups().front() > cache.config.highest();
    for (int64_t k = 0; k < done; ++k) {
      Block& b = blocks_[k];
      torch::Tensor in = k == 0 ? cache.input : cache.blocks[k - 1];
      torch::Tensor fresh = finish_block(b, run_rows(b, in, config, added));
      if (k == done - 1) fresh_last = fresh;
      torch::Tensor& old = cache.blocks[k];
      if (appended) {
        old = torch::cat({old, fresh}, 1);
      } else {
        // Interleave by group: the compact layout keeps groups in increasing order.
        const GroupSpec& groups = b.conv ? b.conv->options.out_groups() : b.linear->options.out_groups();
        std::vector<int64_t> old_sizes, new_sizes;
        for (int64_t g : cache.config.groups()) old_sizes.push_back(groups.size(g));
        for (int64_t g : added.groups()) new_sizes.push_back(groups.size(g));
        auto old_parts = old.split_with_sizes(old_sizes, 1);
        auto new_parts = fresh.split_with_sizes(new_sizes, 1);
        std::vector<torch::Tensor> parts;
        size_t a = 0, c = 0;
        for (int64_t g : config.groups()) parts.push_back(cache.config.contains(g) ? old_parts[a++] : new_parts[c++]);
        old = torch::cat(parts, 1);
      }
    }
  }
  torch::Tensor x = done == 0 ? cache.input : cache.blocks.back();
  for (int64_t k = done; k < heads_[exit].after; ++k) {
    x = run_block(blocks_[k], x, config);
    cache.blocks.push_back(x);
  }
  Head& head = heads_[exit];
  if (exit == cache.exit && fresh_last.defined() && head.linear && spec_.head == HeadKind::Additive) {
    // The additive head: the old groups' logits stay, the new groups' terms are added.
    torch::Tensor f = head.avg_pool ? torch::avg_pool2d(fresh_last, head.avg_pool, head.avg_pool) : fresh_last;
    if (f.dim() != 2) f = f.flatten(1);
    cache.logits = cache.logits + head.linear->forward_columns_inference(f, config, added);
  } else {
    cache.logits = run_head(exit, x, config);
  }
  cache.config = config;
  cache.exit = exit;
  return cache.logits;
}

}  // namespace nn
}  // namespace dydnn
