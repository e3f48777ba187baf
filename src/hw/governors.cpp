#include <dydnn/errors.h>
#include <dydnn/hw/governors.h>

#include <algorithm>
#include <cmath>

namespace dydnn {
namespace hw {

namespace {

// The kernel computes load as an integer percentage, rounding down.
int load_percent(const LoadSample& s) {
  return static_cast<int>(std::floor(std::clamp(s.busy, 0.0, 1.0) * 100.0 + 1e-9));
}

bool in_table(const std::vector<uint64_t>& table, uint64_t hz) {
  return std::binary_search(table.begin(), table.end(), hz);
}

}  // namespace

Governor::Governor(std::vector<uint64_t> table_hz) : table_(std::move(table_hz)) {
  DYDNN_CHECK_VALUE(!table_.empty(), "hw", "a governor needs a frequency table (got an empty one)");
  for (size_t k = 1; k < table_.size(); ++k)
    DYDNN_CHECK_VALUE(table_[k - 1] < table_[k], "hw",
                      "a governor's frequency table must be strictly ascending (entry {} = {} Hz follows {} Hz)", k,
                      table_[k], table_[k - 1]);
  min_hz_ = table_.front();
  max_hz_ = table_.back();
  freq_ = max_hz_;
}

uint64_t Governor::start(int64_t /*now_ns*/, uint64_t cur_hz) {
  freq_ = resolve_low(static_cast<double>(cur_hz));
  return freq_;
}

uint64_t Governor::limits(uint64_t min_hz, uint64_t max_hz) {
  DYDNN_CHECK_VALUE(in_table(table_, min_hz) && in_table(table_, max_hz) && min_hz <= max_hz, "hw",
                    "{}: limits [{}, {}] Hz must be table entries with min <= max (valid: {} to {} Hz)", name(), min_hz,
                    max_hz, table_.front(), table_.back());
  min_hz_ = min_hz;
  max_hz_ = max_hz;
  freq_ = std::clamp(freq_, min_hz_, max_hz_);
  return freq_;
}

uint64_t Governor::resolve_low(double hz) const {
  const double t = std::clamp(hz, static_cast<double>(min_hz_), static_cast<double>(max_hz_));
  for (uint64_t f : table_)
    if (static_cast<double>(f) >= t) return f;
  return max_hz_;
}

uint64_t Governor::resolve_high(double hz) const {
  const double t = std::clamp(hz, static_cast<double>(min_hz_), static_cast<double>(max_hz_));
  for (auto it = table_.rbegin(); it != table_.rend(); ++it)
    if (static_cast<double>(*it) <= t) return *it;
  return min_hz_;
}

uint64_t Governor::resolve_closest(double hz) const {
  const double t = std::clamp(hz, static_cast<double>(min_hz_), static_cast<double>(max_hz_));
  const uint64_t lo = resolve_high(t), hi = resolve_low(t);
  // cpufreq_table_find_index_ac: the higher entry only when strictly closer.
  return static_cast<double>(hi) - t < t - static_cast<double>(lo) ? hi : lo;
}

uint64_t PerformanceGovernor::start(int64_t, uint64_t) { return freq_ = max_hz_; }
uint64_t PerformanceGovernor::limits(uint64_t min_hz, uint64_t max_hz) {
  Governor::limits(min_hz, max_hz);
  return freq_ = max_hz_;
}
uint64_t PerformanceGovernor::update(int64_t, const LoadSample&) { return freq_ = max_hz_; }

uint64_t PowersaveGovernor::start(int64_t, uint64_t) { return freq_ = min_hz_; }
uint64_t PowersaveGovernor::limits(uint64_t min_hz, uint64_t max_hz) {
  Governor::limits(min_hz, max_hz);
  return freq_ = min_hz_;
}
uint64_t PowersaveGovernor::update(int64_t, const LoadSample&) { return freq_ = min_hz_; }

OndemandGovernor::OndemandGovernor(std::vector<uint64_t> table_hz, OndemandOptions options)
    : Governor(std::move(table_hz)), options_(options) {
  DYDNN_CHECK_VALUE(options_.sampling_period_ns > 0, "hw", "ondemand: sampling_period_ns = {} must be > 0",
                    options_.sampling_period_ns);
  DYDNN_CHECK_VALUE(options_.up_threshold > 0 && options_.up_threshold <= 100, "hw",
                    "ondemand: up_threshold = {} is out of range (valid: 1 to 100)", options_.up_threshold);
  DYDNN_CHECK_VALUE(options_.sampling_down_factor >= 1 && options_.sampling_down_factor <= 100000, "hw",
                    "ondemand: sampling_down_factor = {} is out of range (valid: 1 to 100000)",
                    options_.sampling_down_factor);
}

uint64_t OndemandGovernor::start(int64_t now_ns, uint64_t cur_hz) {
  next_ns_ = now_ns + options_.sampling_period_ns;
  return Governor::start(now_ns, cur_hz);
}

uint64_t OndemandGovernor::update(int64_t now_ns, const LoadSample& sample) {
  const int load = load_percent(sample);
  int64_t rate_mult = 1;
  if (load > options_.up_threshold) {
    // od_update: the hold applies only on the jump itself (policy->cur < policy->max).
    if (freq_ < max_hz_) rate_mult = options_.sampling_down_factor;
    freq_ = max_hz_;
  } else {
    // The proportional rule uses the hardware range (cpuinfo min/max), not the limits;
    // the result is then clamped to the limits and taken to the closest entry.
    const double lo = static_cast<double>(table_.front()), hi = static_cast<double>(table_.back());
    freq_ = resolve_closest(lo + load * (hi - lo) / 100.0);
  }
  next_ns_ = now_ns + options_.sampling_period_ns * rate_mult;
  return freq_;
}

ConservativeGovernor::ConservativeGovernor(std::vector<uint64_t> table_hz, ConservativeOptions options)
    : Governor(std::move(table_hz)), options_(options) {
  DYDNN_CHECK_VALUE(options_.sampling_period_ns > 0, "hw", "conservative: sampling_period_ns = {} must be > 0",
                    options_.sampling_period_ns);
  DYDNN_CHECK_VALUE(
      0 <= options_.down_threshold && options_.down_threshold < options_.up_threshold && options_.up_threshold <= 100,
      "hw", "conservative: thresholds down {} / up {} are invalid (valid: 0 <= down < up <= 100)",
      options_.down_threshold, options_.up_threshold);
  DYDNN_CHECK_VALUE(options_.freq_step_percent > 0 && options_.freq_step_percent <= 100, "hw",
                    "conservative: freq_step_percent = {} is out of range (valid: 1 to 100)",
                    options_.freq_step_percent);
  DYDNN_CHECK_VALUE(options_.sampling_down_factor >= 1, "hw", "conservative: sampling_down_factor = {} must be >= 1",
                    options_.sampling_down_factor);
}

uint64_t ConservativeGovernor::start(int64_t now_ns, uint64_t cur_hz) {
  next_ns_ = now_ns + options_.sampling_period_ns;
  down_skip_ = 0;
  const uint64_t f = Governor::start(now_ns, cur_hz);
  requested_hz_ = static_cast<double>(f);
  return f;
}

uint64_t ConservativeGovernor::update(int64_t now_ns, const LoadSample& sample) {
  next_ns_ = now_ns + options_.sampling_period_ns;
  const int load = load_percent(sample);
  const double lo = static_cast<double>(min_hz_), hi = static_cast<double>(max_hz_);
  // cs_dbs_update: a requested frequency outside the limits means they changed meanwhile.
  if (requested_hz_ > hi || requested_hz_ < lo) requested_hz_ = static_cast<double>(freq_);
  const double step = hi * options_.freq_step_percent / 100.0;
  if (load > options_.up_threshold) {
    down_skip_ = 0;
    if (requested_hz_ >= hi) return freq_;
    requested_hz_ = std::min(requested_hz_ + step, hi);
    return freq_ = resolve_high(requested_hz_);
  }
  if (++down_skip_ < options_.sampling_down_factor) return freq_;
  down_skip_ = 0;
  if (load < options_.down_threshold) {
    if (requested_hz_ <= lo) return freq_;
    requested_hz_ = requested_hz_ > step ? requested_hz_ - step : lo;
    freq_ = resolve_low(requested_hz_);
  }
  return freq_;
}

int64_t schedutil_rate_limit_ns(double transition_latency_s, bool new_kernel) {
  // cpufreq_policy_transition_delay_us: LATENCY_MULTIPLIER (1000) x latency, capped.
  const double cap_ns = new_kernel ? 2e6 : 10e6;
  const double ns = std::max(0.0, transition_latency_s) * 1e9 * 1000.0;
  return static_cast<int64_t>(std::llround(std::min(ns, cap_ns)));
}

SchedutilGovernor::SchedutilGovernor(std::vector<uint64_t> table_hz, SchedutilOptions options)
    : Governor(std::move(table_hz)), options_(options) {
  DYDNN_CHECK_VALUE(options_.period_ns > 0, "hw", "schedutil: period_ns = {} must be > 0", options_.period_ns);
  DYDNN_CHECK_VALUE(options_.half_life_periods > 0, "hw", "schedutil: half_life_periods = {} must be > 0",
                    options_.half_life_periods);
  DYDNN_CHECK_VALUE(options_.rate_limit_ns >= 0, "hw", "schedutil: rate_limit_ns = {} must be >= 0",
                    options_.rate_limit_ns);
  DYDNN_CHECK_VALUE(options_.headroom >= 1, "hw", "schedutil: headroom = {} must be >= 1", options_.headroom);
}

uint64_t SchedutilGovernor::start(int64_t now_ns, uint64_t cur_hz) {
  // PELT history starts empty; the first decision is not rate-limited. The governor takes
  // the running frequency as its last choice, so the no-idle-time hold applies from the start.
  util_ = 0;
  last_ns_ = now_ns;
  next_ns_ = now_ns + options_.period_ns;
  last_change_ns_ = now_ns - options_.rate_limit_ns;
  need_update_ = false;
  return Governor::start(now_ns, cur_hz);
}

uint64_t SchedutilGovernor::limits(uint64_t min_hz, uint64_t max_hz) {
  need_update_ = true;
  return Governor::limits(min_hz, max_hz);
}

uint64_t SchedutilGovernor::update(int64_t now_ns, const LoadSample& sample) {
  const int64_t dt = now_ns - last_ns_;
  if (dt <= 0) return freq_;
  // PELT: each period decays the average by y (y^half_life = 1/2) and adds (1 - y) x the
  // period's contribution; fractions of a period decay continuously.
  const double decay =
      std::pow(0.5, static_cast<double>(dt) / static_cast<double>(options_.period_ns) / options_.half_life_periods);
  util_ = std::clamp(util_ * decay + std::clamp(sample.util, 0.0, 1.0) * (1.0 - decay), 0.0, 1.0);
  last_ns_ = now_ns;
  next_ns_ = now_ns + options_.period_ns;

  // sugov_should_update_freq: the rate limit counts from the last frequency change.
  if (!need_update_ && now_ns - last_change_ns_ < options_.rate_limit_ns) return freq_;
  uint64_t next = resolve_low(options_.headroom * static_cast<double>(table_.back()) * util_);
  // sugov_hold_freq: no idle time since the last update means a decrease would be premature.
  if (sample.busy >= 1.0 && next < freq_ && !need_update_) next = freq_;
  need_update_ = false;
  if (next != freq_) {
    freq_ = next;
    last_change_ns_ = now_ns;
  }
  return freq_;
}

std::vector<std::string> simulated_governors() {
  return {"performance", "powersave", "ondemand", "conservative", "schedutil"};
}

std::unique_ptr<Governor> make_governor(const std::string& name, std::vector<uint64_t> table_hz,
                                        double transition_latency_s) {
  if (name == "performance") return std::make_unique<PerformanceGovernor>(std::move(table_hz));
  if (name == "powersave") return std::make_unique<PowersaveGovernor>(std::move(table_hz));
  if (name == "ondemand") return std::make_unique<OndemandGovernor>(std::move(table_hz));
  if (name == "conservative") return std::make_unique<ConservativeGovernor>(std::move(table_hz));
  if (name == "schedutil") {
    SchedutilOptions options;
    options.rate_limit_ns = schedutil_rate_limit_ns(transition_latency_s);
    return std::make_unique<SchedutilGovernor>(std::move(table_hz), options);
  }
  detail::throw_value_error("hw",
                            "unknown simulated governor '{}' (valid: performance, powersave, ondemand, "
                            "conservative, schedutil)",
                            name);
}

}  // namespace hw
}  // namespace dydnn
