#pragma once
/// \file
/// The selector: given the operating points of a model (a config under a hardware
/// setting, with its predicted latency, accuracy, power and energy), constraints and an
/// objective, it picks a point, and keeps picking as measurements come in.
///
/// - Constraints: latency <= L, accuracy >= A, power <= P, energy per inference <= E.
/// - Objectives: the most accurate feasible point, or the least energy per inference.
/// - Fallback: when no point is feasible, the fastest point, flagged infeasible.
/// - Feedback: an EWMA of measured / predicted latency (the "slowdown": how much of the
///   hardware the model gets now) rescales every point's predicted latency, so a
///   background load moves the choice.
/// - Stability: a point that asks more of the hardware must fit with `up_margin` to spare;
///   the current point is kept while it fits within `down_margin`; no switch within
///   `min_dwell_s` of the last one unless the current point breaks a constraint; a better
///   point must win by more than `switch_cost`.
///
/// Decisions allocate nothing and take well under a microsecond for tables of a few
/// hundred points (benchmarks/bench_selector.cpp). Plain C++17, no LibTorch.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace dydnn {
namespace runtime {

/// One operating point: a config under one hardware setting, and what it costs.
struct Point {
  uint64_t config = 0;                    ///< the config's group mask (`nn::Config::mask()`)
  std::string name;                       ///< for logs, e.g. "AB@threads=2"
  std::map<std::string, double> knobs;    ///< hardware setting, e.g. {"threads": 2}
  double latency_s = 0;                   ///< predicted latency per inference (median)
  double accuracy = 0;                    ///< top-1, 0..1
  double power_w = std::numeric_limits<double>::quiet_NaN();   ///< NaN: unknown
  double energy_j = std::numeric_limits<double>::quiet_NaN();  ///< per inference; NaN: power x latency

  /// Energy per inference: `energy_j`, else `power_w * latency_s`, else NaN.
  double energy_per_inference() const;
};

/// Limits a chosen point must respect. Defaults constrain nothing.
struct Constraints {
  double max_latency_s = std::numeric_limits<double>::infinity();
  double min_accuracy = 0;
  double max_power_w = std::numeric_limits<double>::infinity();
  double max_energy_j = std::numeric_limits<double>::infinity();
};

/// Throws `ValueError` naming the value unless latency, power and energy limits are > 0
/// (infinity: no limit) and the accuracy floor is in 0..1.
void check_constraints(const Constraints& constraints);

/// What to optimise among the feasible points.
enum class Objective {
  MaxAccuracy,  ///< the most accurate; ties go to the least energy, then the fastest
  MinEnergy,    ///< the least energy per inference; ties go to the most accurate
};

/// "max_accuracy" | "min_energy".
const char* to_string(Objective objective);
/// Parses `to_string`'s names; throws `ValueError` listing them.
Objective objective_from_string(const std::string& name);

/// Why a decision came out as it did (static text, so deciding allocates nothing).
enum class Reason {
  Best,          ///< the best feasible point
  Kept,          ///< the current point still fits and nothing wins by enough
  Dwell,         ///< the current point fits and the minimum dwell time has not passed
  Infeasible,    ///< nothing fits: the fastest point (fallback)
};

/// "best" | "kept" | "dwell" | "infeasible".
const char* to_string(Reason reason);

/// A selector's answer.
struct Decision {
  size_t index = 0;            ///< into the selector's points
  bool feasible = true;        ///< false for the fallback
  bool switched = false;       ///< whether it differs from the previous decision
  Reason reason = Reason::Best;
  double predicted_latency_s = 0;  ///< the point's latency scaled by the slowdown
};

/// Tuning of feedback and stability.
struct SelectorOptions {
  /// Weight of the newest filtered measured / predicted ratio in the slowdown EWMA (0..1].
  double ewma_alpha = 0.2;
  /// The EWMA is fed the median of the last `feedback_window` ratios (1..32), so a single
  /// preempted inference (a scheduler time slice: 4 ms against 0.1 ms) does not move the
  /// choice, while a lasting change does within a few inferences.
  int feedback_window = 5;
  /// A point slower than the current one is chosen only if it fits with this fraction
  /// of the latency limit to spare.
  double up_margin = 0.10;
  /// The current point is kept while its predicted latency is within this fraction above
  /// the limit (0: never knowingly miss).
  double down_margin = 0.0;
  /// No switch within this time of the previous switch, unless the current point breaks
  /// a constraint.
  double min_dwell_s = 0.0;
  /// A new point must beat the current one by more than this: accuracy points (0..1)
  /// for `MaxAccuracy`, a relative energy saving for `MinEnergy`.
  double switch_cost = 0.0;
};

/// The slowdown estimate: an EWMA of the median of the last few measured / predicted
/// latency ratios (see `SelectorOptions`). Allocation-free.
class SlowdownFilter {
 public:
  explicit SlowdownFilter(double alpha = 0.2, int window = 5);
  /// Adds one ratio (> 0, finite) and returns the new estimate.
  double update(double ratio);
  double value() const { return value_; }
  /// Sets the estimate and forgets the recent ratios.
  void reset(double value = 1.0);

 private:
  double alpha_;
  int window_;
  double value_ = 1.0;
  double recent_[32] = {};
  int count_ = 0, next_ = 0;
};

/// Picks points from a fixed table. Not thread-safe: one selector per decision loop.
///
/// Example:
/// \code
///   runtime::Selector selector(points);
///   runtime::Constraints limits;
///   limits.max_latency_s = 2e-3;
///   auto d = selector.decide(limits, runtime::Objective::MaxAccuracy, now_s);
///   apply(selector.points()[d.index]);
///   ... run one inference, measure `seconds` ...
///   selector.observe(d.index, seconds);
/// \endcode
class Selector {
 public:
  /// Throws `ValueError` for an empty table, a point with a non-positive or non-finite
  /// latency, an accuracy outside 0..1, or options out of range.
  explicit Selector(std::vector<Point> points, SelectorOptions options = {});

  /// The decision for now (`now_s`: any monotonic clock, seconds).
  Decision decide(const Constraints& constraints, Objective objective, double now_s);
  /// Feeds back one inference's measured latency at point `index`.
  void observe(size_t index, double measured_latency_s);
  /// The current slowdown (filtered measured / predicted latency; 1 at start).
  double slowdown() const { return slowdown_.value(); }
  /// Sets the slowdown (e.g. after a hardware change the table already accounts for).
  void reset_slowdown(double value = 1.0);
  const std::vector<Point>& points() const { return points_; }
  const SelectorOptions& options() const { return options_; }

  /// The best feasible point for `constraints` with latencies scaled by `slowdown`, or
  /// -1; the stateless core of `decide`.
  int best(const Constraints& constraints, Objective objective, double slowdown) const;
  /// The point with the smallest latency.
  size_t fastest() const { return fastest_; }

 private:
  // The numbers a decision reads, sorted by latency so that a scan stops at the first point
  // too slow; `index` is the point's place in `points_`.
  struct Row {
    double latency_s, accuracy, power_w, energy_j;  // unknown power: NaN (passes); unknown energy: +inf
    size_t index;
  };
  bool fits(const Row& r, const Constraints& c, double slowdown) const;
  static bool better(const Row& a, const Row& b, Objective objective);
  int scan(const Constraints& c, Objective objective, double slowdown, double up_from_latency_s) const;

  std::vector<Point> points_;
  std::vector<Row> rows_;
  std::vector<size_t> row_of_;  // point index -> row
  // prefix_best_[o][r]: the best row among rows 0..r for objective o when only latency
  // constrains, which answers most decisions with one binary search.
  std::vector<size_t> prefix_best_[2];
  SelectorOptions options_;
  size_t fastest_ = 0;
  SlowdownFilter slowdown_;
  int current_ = -1;
  double last_switch_s_ = -std::numeric_limits<double>::infinity();
};

/// The indices of the Pareto-optimal points over (latency down, energy down, accuracy up):
/// no other point is at least as good in all three and better in one. Unknown energy
/// counts as the worst. Sorted by latency.
std::vector<size_t> pareto_front(const std::vector<Point>& points);

}  // namespace runtime
}  // namespace dydnn
