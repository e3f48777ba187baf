#pragma once
/// \file
/// The Dynamic-OFA runtime "ladder" (design §4.3), a simple baseline policy next to
/// `Selector`: the points form a ladder ordered by accuracy (only Pareto points, fastest
/// first); the policy steps down one rung when the moving average of the last `window`
/// measured latencies exceeds the target, and steps up one rung when the accuracy is below
/// the floor and there is slack (the average is below `slack` x target), unless that rung
/// was left for being too slow within the last `memory_s` (anti-oscillation memory). For
/// "as accurate as the deadline allows", pass a floor of 1.
/// Plain C++17, no LibTorch.

#include <dydnn/runtime/selector.h>

#include <cstddef>
#include <deque>
#include <vector>

namespace dydnn {
namespace runtime {

/// Options of the ladder policy.
struct LadderOptions {
  size_t window = 20;       ///< moving-average length (Dynamic-OFA: 20 samples)
  double slack = 0.8;       ///< step up when the average is below slack x target
  double memory_s = 1.0;    ///< do not retry a rung left for being too slow within this time
};

/// Dynamic-OFA's ladder over a table of points.
class LadderPolicy {
 public:
  /// The ladder is the Pareto front of `points` (by latency), so every step up buys
  /// accuracy. Throws `ValueError` for an empty table or bad options.
  explicit LadderPolicy(const std::vector<Point>& points, LadderOptions options = {});

  /// The rung to run now for `target_latency_s` and `min_accuracy`; returns an index into
  /// the original table.
  size_t decide(double target_latency_s, double min_accuracy, double now_s);
  /// Feeds back a measured latency at the current rung.
  void observe(double measured_latency_s);
  /// The ladder's rungs, as indices into the original table, fastest first.
  const std::vector<size_t>& rungs() const { return rungs_; }
  size_t rung() const { return rung_; }

 private:
  std::vector<Point> points_;
  std::vector<size_t> rungs_;
  LadderOptions options_;
  size_t rung_ = 0;
  std::deque<double> recent_;
  double sum_ = 0;
  std::vector<double> too_slow_at_;  // per rung: when it was last left for being too slow
};

}  // namespace runtime
}  // namespace dydnn
