#include <dydnn/errors.h>
#include <dydnn/runtime/ladder.h>

#include <cmath>
#include <limits>

namespace dydnn {
namespace runtime {

LadderPolicy::LadderPolicy(const std::vector<Point>& points, LadderOptions options)
    : points_(points), rungs_(pareto_front(points)), options_(options) {
  DYDNN_CHECK_VALUE(!points_.empty(), "runtime", "LadderPolicy: the table of operating points is empty");
  DYDNN_CHECK_VALUE(options_.window >= 1, "runtime", "LadderPolicy: window {} (valid: >= 1)", options_.window);
  DYDNN_CHECK_VALUE(options_.slack > 0 && options_.slack <= 1, "runtime", "LadderPolicy: slack {} (valid: (0, 1])",
                    options_.slack);
  DYDNN_CHECK_VALUE(options_.memory_s >= 0, "runtime", "LadderPolicy: memory_s {} (valid: >= 0)", options_.memory_s);
  // Along the front, faster points are less accurate; keep only rungs that add accuracy.
  std::vector<size_t> ladder;
  for (const size_t k : rungs_)
    if (ladder.empty() || points_[k].accuracy > points_[ladder.back()].accuracy) ladder.push_back(k);
  rungs_ = ladder;
  too_slow_at_.assign(rungs_.size(), -std::numeric_limits<double>::infinity());
}

size_t LadderPolicy::decide(double target_latency_s, double min_accuracy, double now_s) {
  DYDNN_CHECK_VALUE(target_latency_s > 0, "runtime", "LadderPolicy::decide: target latency {} s (valid: > 0)",
                    target_latency_s);
  DYDNN_CHECK_VALUE(min_accuracy >= 0 && min_accuracy <= 1, "runtime",
                    "LadderPolicy::decide: min_accuracy {} (valid: 0..1)", min_accuracy);
  const bool full = recent_.size() >= options_.window;
  const double average = recent_.empty() ? 0.0 : sum_ / static_cast<double>(recent_.size());
  const auto move = [&](size_t to) {
    rung_ = to;
    recent_.clear();  // the old rung's latencies say nothing about the new one
    sum_ = 0;
  };
  if (full && average > target_latency_s && rung_ > 0) {
    too_slow_at_[rung_] = now_s;
    move(rung_ - 1);
  } else if (full && rung_ + 1 < rungs_.size() && now_s - too_slow_at_[rung_ + 1] >= options_.memory_s &&
             points_[rungs_[rung_]].accuracy < min_accuracy && average < options_.slack * target_latency_s) {
    move(rung_ + 1);
  }
  return rungs_[rung_];
}

void LadderPolicy::observe(double measured_latency_s) {
  DYDNN_CHECK_VALUE(std::isfinite(measured_latency_s) && measured_latency_s > 0, "runtime",
                    "LadderPolicy::observe: measured latency {} s (valid: finite, > 0)", measured_latency_s);
  recent_.push_back(measured_latency_s);
  sum_ += measured_latency_s;
  if (recent_.size() > options_.window) {
    sum_ -= recent_.front();
    recent_.pop_front();
  }
}

}  // namespace runtime
}  // namespace dydnn
