#include <dydnn/errors.h>
#include <dydnn/runtime/selector.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace dydnn {
namespace runtime {

double Point::energy_per_inference() const {
  if (std::isfinite(energy_j)) return energy_j;
  if (std::isfinite(power_w)) return power_w * latency_s;
  return std::numeric_limits<double>::quiet_NaN();
}

void check_constraints(const Constraints& c) {
  const auto positive = [](double v, const char* what) {
    DYDNN_CHECK_VALUE(v > 0, "runtime", "{} {} (valid: > 0, or infinity for no limit)", what, v);
  };
  positive(c.max_latency_s, "max_latency_s");
  positive(c.max_power_w, "max_power_w");
  positive(c.max_energy_j, "max_energy_j");
  DYDNN_CHECK_VALUE(c.min_accuracy >= 0 && c.min_accuracy <= 1, "runtime", "min_accuracy {} (valid: 0..1)",
                    c.min_accuracy);
}

const char* to_string(Objective objective) {
  return objective == Objective::MaxAccuracy ? "max_accuracy" : "min_energy";
}

Objective objective_from_string(const std::string& name) {
  if (name == "max_accuracy") return Objective::MaxAccuracy;
  if (name == "min_energy") return Objective::MinEnergy;
  detail::throw_value_error("runtime", "unknown objective '{}' (valid: max_accuracy, min_energy)", name);
}

const char* to_string(Reason reason) {
  switch (reason) {
    case Reason::Best:
      return "best";
    case Reason::Kept:
      return "kept";
    case Reason::Dwell:
      return "dwell";
    case Reason::Infeasible:
      return "infeasible";
  }
  return "?";
}

SlowdownFilter::SlowdownFilter(double alpha, int window) : alpha_(alpha), window_(window) {
  DYDNN_CHECK_VALUE(alpha > 0 && alpha <= 1, "runtime", "ewma_alpha {} (valid: (0, 1])", alpha);
  DYDNN_CHECK_VALUE(window >= 1 && window <= 32, "runtime", "feedback_window {} (valid: 1..32)", window);
}

double SlowdownFilter::update(double ratio) {
  recent_[next_] = ratio;
  next_ = (next_ + 1) % window_;
  count_ = std::min(count_ + 1, window_);
  // Until half the window is in, a lone outlier would be the median: wait for company.
  if (count_ < (window_ + 1) / 2) return value_;
  double sorted[32];
  std::copy(recent_, recent_ + count_, sorted);
  const int middle = (count_ - 1) / 2;  // the lower median: an even count never picks the outlier
  std::nth_element(sorted, sorted + middle, sorted + count_);
  value_ = (1.0 - alpha_) * value_ + alpha_ * sorted[middle];
  return value_;
}

void SlowdownFilter::reset(double value) {
  value_ = value;
  count_ = next_ = 0;
}

Selector::Selector(std::vector<Point> points, SelectorOptions options)
    : points_(std::move(points)), options_(options), slowdown_(options.ewma_alpha, options.feedback_window) {
  DYDNN_CHECK_VALUE(!points_.empty(), "runtime", "Selector: the table of operating points is empty");
  for (size_t k = 0; k < points_.size(); ++k) {
    const auto& p = points_[k];
    DYDNN_CHECK_VALUE(std::isfinite(p.latency_s) && p.latency_s > 0, "runtime",
                      "Selector: point {} ('{}') has latency {} s (valid: finite, > 0)", k, p.name, p.latency_s);
    DYDNN_CHECK_VALUE(p.accuracy >= 0 && p.accuracy <= 1, "runtime",
                      "Selector: point {} ('{}') has accuracy {} (valid: 0..1)", k, p.name, p.accuracy);
    const double e = p.energy_per_inference();
    rows_.push_back({p.latency_s, p.accuracy, p.power_w, std::isfinite(e) ? e : std::numeric_limits<double>::infinity(),
                     k});
  }
  std::stable_sort(rows_.begin(), rows_.end(), [](const Row& a, const Row& b) { return a.latency_s < b.latency_s; });
  row_of_.resize(rows_.size());
  for (size_t r = 0; r < rows_.size(); ++r) row_of_[rows_[r].index] = r;
  fastest_ = rows_.front().index;
  for (const Objective o : {Objective::MaxAccuracy, Objective::MinEnergy}) {
    auto& best = prefix_best_[static_cast<int>(o)];
    best.resize(rows_.size());
    for (size_t r = 0; r < rows_.size(); ++r)
      best[r] = r == 0 || better(rows_[r], rows_[best[r - 1]], o) ? r : best[r - 1];
  }
  const auto& o = options_;
  DYDNN_CHECK_VALUE(o.ewma_alpha > 0 && o.ewma_alpha <= 1, "runtime", "Selector: ewma_alpha {} (valid: (0, 1])",
                    o.ewma_alpha);
  DYDNN_CHECK_VALUE(o.up_margin >= 0 && o.up_margin < 1, "runtime", "Selector: up_margin {} (valid: [0, 1))",
                    o.up_margin);
  DYDNN_CHECK_VALUE(o.down_margin >= 0 && o.down_margin < 1, "runtime", "Selector: down_margin {} (valid: [0, 1))",
                    o.down_margin);
  DYDNN_CHECK_VALUE(o.min_dwell_s >= 0 && std::isfinite(o.min_dwell_s), "runtime",
                    "Selector: min_dwell_s {} (valid: >= 0)", o.min_dwell_s);
  DYDNN_CHECK_VALUE(o.switch_cost >= 0 && std::isfinite(o.switch_cost), "runtime",
                    "Selector: switch_cost {} (valid: >= 0)", o.switch_cost);
}

// Everything but latency (the scans handle latency, with their margins).
bool Selector::fits(const Row& r, const Constraints& c, double slowdown) const {
  return r.accuracy >= c.min_accuracy && !(r.power_w > c.max_power_w) && !(r.energy_j * slowdown > c.max_energy_j);
}

// The slowdown scales every point's energy alike, so the comparison needs no scaling.
bool Selector::better(const Row& a, const Row& b, Objective objective) {
  if (objective == Objective::MaxAccuracy) {
    if (a.accuracy != b.accuracy) return a.accuracy > b.accuracy;
    if (a.energy_j != b.energy_j) return a.energy_j < b.energy_j;
  } else {
    if (a.energy_j != b.energy_j) return a.energy_j < b.energy_j;
    if (a.accuracy != b.accuracy) return a.accuracy > b.accuracy;
  }
  return a.latency_s < b.latency_s;
}

// The best row that fits; rows slower than `up_from_latency_s` must fit with the up margin.
// Either way the rows that may fit on latency are a prefix of the latency-sorted rows: when
// the prefix's best also meets the other constraints it is the answer, else the prefix is
// scanned.
int Selector::scan(const Constraints& c, Objective objective, double slowdown, double up_from_latency_s) const {
  const double limit = c.max_latency_s / slowdown;
  const double end_latency = std::min(limit, std::max(up_from_latency_s, limit * (1.0 - options_.up_margin)));
  const auto end = std::upper_bound(rows_.begin(), rows_.end(), end_latency,
                                    [](double l, const Row& r) { return l < r.latency_s; }) -
                   rows_.begin();
  if (end == 0) return -1;
  const size_t top = prefix_best_[static_cast<int>(objective)][static_cast<size_t>(end - 1)];
  if (fits(rows_[top], c, slowdown)) return static_cast<int>(top);
  int chosen = -1;
  for (size_t r = 0; r < static_cast<size_t>(end); ++r)
    if (fits(rows_[r], c, slowdown) && (chosen < 0 || better(rows_[r], rows_[static_cast<size_t>(chosen)], objective)))
      chosen = static_cast<int>(r);
  return chosen;
}

int Selector::best(const Constraints& constraints, Objective objective, double slowdown) const {
  const int r = scan(constraints, objective, slowdown, std::numeric_limits<double>::infinity());
  return r < 0 ? -1 : static_cast<int>(rows_[static_cast<size_t>(r)].index);
}

Decision Selector::decide(const Constraints& constraints, Objective objective, double now_s) {
  check_constraints(constraints);
  const double s = slowdown_.value();
  Decision d;
  const auto finish = [&](size_t index, bool feasible, Reason reason) {
    d.index = index;
    d.feasible = feasible;
    d.reason = reason;
    d.switched = current_ != static_cast<int>(index);
    d.predicted_latency_s = points_[index].latency_s * s;
    if (d.switched) last_switch_s_ = now_s;
    current_ = static_cast<int>(index);
    return d;
  };

  const Row* current = current_ >= 0 ? &rows_[row_of_[static_cast<size_t>(current_)]] : nullptr;
  const bool current_fits = current && current->latency_s * s <= constraints.max_latency_s * (1.0 + options_.down_margin) &&
                            fits(*current, constraints, s);
  if (current_fits && now_s - last_switch_s_ < options_.min_dwell_s)
    return finish(static_cast<size_t>(current_), true, Reason::Dwell);

  // Hysteresis: a point slower than the current one must fit with the up margin to spare;
  // staying (or going faster) needs no margin.
  const int chosen = scan(constraints, objective, s,
                          current ? current->latency_s : std::numeric_limits<double>::infinity());
  if (current_fits) {
    if (chosen < 0 || rows_[static_cast<size_t>(chosen)].index == static_cast<size_t>(current_) ||
        !better(rows_[static_cast<size_t>(chosen)], *current, objective))
      return finish(static_cast<size_t>(current_), true, Reason::Kept);
    const Row& c = rows_[static_cast<size_t>(chosen)];
    const double gain = objective == Objective::MaxAccuracy ? c.accuracy - current->accuracy
                                                            : 1.0 - c.energy_j / current->energy_j;
    // A tie in the objective (a gain of 0 from a secondary criterion) switches only when free.
    if (gain < options_.switch_cost || (gain == options_.switch_cost && options_.switch_cost > 0))
      return finish(static_cast<size_t>(current_), true, Reason::Kept);
    return finish(c.index, true, Reason::Best);
  }
  if (chosen >= 0) return finish(rows_[static_cast<size_t>(chosen)].index, true, Reason::Best);
  // The up margin only guards switching up: without it something may still fit.
  const int strict = best(constraints, objective, s);
  if (strict >= 0) return finish(static_cast<size_t>(strict), true, Reason::Best);
  return finish(fastest_, false, Reason::Infeasible);
}

void Selector::observe(size_t index, double measured_latency_s) {
  DYDNN_CHECK_INDEX(index < points_.size(), "runtime", "Selector::observe: point {} is out of range (valid: 0..{})",
                    index, points_.size() - 1);
  DYDNN_CHECK_VALUE(std::isfinite(measured_latency_s) && measured_latency_s > 0, "runtime",
                    "Selector::observe: measured latency {} s (valid: finite, > 0)", measured_latency_s);
  slowdown_.update(measured_latency_s / points_[index].latency_s);
}

void Selector::reset_slowdown(double value) {
  DYDNN_CHECK_VALUE(std::isfinite(value) && value > 0, "runtime", "Selector: slowdown {} (valid: finite, > 0)", value);
  slowdown_.reset(value);
}

std::vector<size_t> pareto_front(const std::vector<Point>& points) {
  const auto energy = [](const Point& p) {
    const double e = p.energy_per_inference();
    return std::isfinite(e) ? e : std::numeric_limits<double>::infinity();
  };
  std::vector<size_t> front;
  for (size_t a = 0; a < points.size(); ++a) {
    bool dominated = false;
    for (size_t b = 0; b < points.size() && !dominated; ++b) {
      if (a == b) continue;
      const Point &pa = points[a], &pb = points[b];
      const bool no_worse =
          pb.latency_s <= pa.latency_s && energy(pb) <= energy(pa) && pb.accuracy >= pa.accuracy;
      const bool strictly =
          pb.latency_s < pa.latency_s || energy(pb) < energy(pa) || pb.accuracy > pa.accuracy;
      dominated = no_worse && strictly;
    }
    if (!dominated) front.push_back(a);
  }
  std::sort(front.begin(), front.end(),
            [&](size_t x, size_t y) { return points[x].latency_s < points[y].latency_s; });
  return front;
}

}  // namespace runtime
}  // namespace dydnn
