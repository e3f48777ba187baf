#include <dydnn/errors.h>
#include <dydnn/runtime/anytime.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>

namespace dydnn {
namespace runtime {

namespace {

using Clock = std::chrono::steady_clock;

double micros_since(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

std::string name_of(const AnytimeStep& s) { return fmt::format("{}@{}", s.config.name(), s.exit); }

}  // namespace

std::vector<AnytimeStep> AnytimeRunner::default_steps(const nn::DynamicNetImpl& net) {
  const auto& configs = net.configs();
  const int64_t last_exit = net.num_exits() - 1;
  // The smallest config (fewest groups; the first listed among equals) that `pick` accepts.
  const auto smallest = [&](const auto& pick) {
    const nn::Config* best = nullptr;
    for (const auto& c : configs)
      if (pick(c) && (best == nullptr || c.count() < best->count())) best = &c;
    return best;
  };
  const nn::Config* start = smallest([](const nn::Config&) { return true; });
  if (!net.can_refine(*start, *start)) return {{configs.back(), last_exit}};  // e.g. prefix: nothing refines
  std::vector<AnytimeStep> steps;
  for (int64_t e = 0; e <= last_exit; ++e) steps.push_back({*start, e});
  for (const nn::Config* c = start;;) {
    c = smallest([&](const nn::Config& next) { return next != *c && net.can_refine(*c, next); });
    if (c == nullptr) return steps;
    steps.push_back({*c, last_exit});
  }
}

AnytimeRunner::AnytimeRunner(nn::DynamicNet net, std::vector<AnytimeStep> steps)
    : net_(std::move(net)), steps_(steps.empty() ? default_steps(*net_) : std::move(steps)) {
  const int64_t exits = net_->num_exits();
  for (size_t k = 0; k < steps_.size(); ++k) {
    auto& s = steps_[k];
    DYDNN_CHECK_VALUE(s.exit >= -1 && s.exit < exits, "runtime",
                      "AnytimeRunner: step {} has exit {} (valid: 0..{}, or -1 for the final head)", k, s.exit,
                      exits - 1);
    if (s.exit == -1) s.exit = exits - 1;
    const auto& valid = net_->configs();
    DYDNN_CHECK_VALUE(std::find(valid.begin(), valid.end(), s.config) != valid.end(), "runtime",
                      "AnytimeRunner: step {} has config {}, not a valid config of '{}'", k, s.config.name(),
                      net_->spec().name);
    if (k == 0) continue;
    const auto& before = steps_[k - 1];
    DYDNN_CHECK_VALUE(net_->can_refine(before.config, s.config), "runtime",
                      "AnytimeRunner: step {} ({}) cannot be refined to from step {} ({}) under connectivity '{}' "
                      "(a step may only add groups that no earlier group reads)",
                      k, name_of(s), k - 1, name_of(before), net_->connectivity().name());
    DYDNN_CHECK_VALUE(s.exit >= before.exit, "runtime",
                      "AnytimeRunner: step {} ({}) goes back to a shallower exit than step {} ({})", k, name_of(s),
                      k - 1, name_of(before));
    DYDNN_CHECK_VALUE(s.exit > before.exit || s.config != before.config, "runtime",
                      "AnytimeRunner: step {} ({}) repeats step {} (each step must add groups or go deeper)", k,
                      name_of(s), k - 1);
  }
  expected_us_.assign(steps_.size(), 0.0);
  recent_us_.resize(steps_.size());
}

void AnytimeRunner::set_window(size_t window) {
  DYDNN_CHECK_VALUE(window >= 1, "runtime", "AnytimeRunner: window {} (valid: >= 1)", window);
  window_ = window;
  for (size_t k = 0; k < steps_.size(); ++k) {
    while (recent_us_[k].size() > window_) recent_us_[k].pop_front();
    update_expected(k);
  }
}

void AnytimeRunner::set_quantile(double quantile) {
  DYDNN_CHECK_VALUE(std::isfinite(quantile) && quantile > 0 && quantile <= 1, "runtime",
                    "AnytimeRunner: quantile {} (valid: 0 < quantile <= 1)", quantile);
  quantile_ = quantile;
  for (size_t k = 0; k < steps_.size(); ++k) update_expected(k);
}

void AnytimeRunner::learn(size_t step, double micros) {
  auto& recent = recent_us_[step];
  recent.push_back(micros);
  while (recent.size() > window_) recent.pop_front();
  update_expected(step);
}

void AnytimeRunner::update_expected(size_t step) {
  const auto& recent = recent_us_[step];
  if (recent.empty()) return;
  std::vector<double> sorted(recent.begin(), recent.end());
  std::sort(sorted.begin(), sorted.end());
  const auto rank = static_cast<size_t>(std::ceil(quantile_ * static_cast<double>(sorted.size())));
  expected_us_[step] = sorted[std::min(sorted.size(), std::max<size_t>(rank, 1)) - 1];
}

AnytimeAnswer AnytimeRunner::run(const torch::Tensor& input, double budget_us,
                                 const std::function<bool(const AnytimeAnswer&)>& on_answer) {
  DYDNN_CHECK_VALUE(std::isfinite(budget_us) && budget_us > 0, "runtime",
                    "AnytimeRunner: budget {} us (valid: a positive number of microseconds)", budget_us);
  const auto start = Clock::now();
  auto [logits, cache] = net_->forward_cached(input, steps_[0].config, steps_[0].exit);
  AnytimeAnswer answer;
  answer.logits = logits;
  answer.config = steps_[0].config;
  answer.exit = steps_[0].exit;
  answer.elapsed_us = micros_since(start);
  learn(0, answer.elapsed_us);
  for (size_t k = 1;; ++k) {
    answer.complete = k == steps_.size();
    const bool go_on = !on_answer || on_answer(answer);
    if (answer.complete || !go_on) break;
    const double before = micros_since(start);
    if (expected_us_[k] > 0 && before + expected_us_[k] > budget_us) break;
    answer.logits = net_->refine(cache, steps_[k].config, steps_[k].exit);
    answer.elapsed_us = micros_since(start);
    learn(k, answer.elapsed_us - before);
    answer.step = k;
    answer.config = steps_[k].config;
    answer.exit = steps_[k].exit;
  }
  return answer;
}

void AnytimeRunner::calibrate(const torch::Tensor& input, int64_t repetitions) {
  DYDNN_CHECK_VALUE(repetitions >= 1, "runtime", "AnytimeRunner::calibrate: repetitions {} (valid: >= 1)",
                    repetitions);
  for (int64_t r = 0; r <= repetitions; ++r) {  // round 0 warms up
    auto start = Clock::now();
    auto cache = net_->forward_cached(input, steps_[0].config, steps_[0].exit).second;
    if (r > 0) learn(0, micros_since(start));
    for (size_t k = 1; k < steps_.size(); ++k) {
      start = Clock::now();
      net_->refine(cache, steps_[k].config, steps_[k].exit);
      if (r > 0) learn(k, micros_since(start));
    }
  }
}

}  // namespace runtime
}  // namespace dydnn
