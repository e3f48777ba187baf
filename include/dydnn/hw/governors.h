#pragma once
/// \file
/// Simulated cpufreq governors: the baselines a runtime manager is compared with. Each one
/// follows the Linux governor's rule (see `shared/platforms.md`, "Governors") on a frequency
/// table and the policy's limits, and is driven by load samples on a virtual clock, so a run
/// is deterministic. `SimBackend` drives them; tests and studies can also feed them directly.
///
/// Example:
/// \code
///   dydnn::hw::SchedutilGovernor gov(table_hz);
///   uint64_t f = gov.start(0, table_hz.back());
///   for (int64_t t = 1000000; t <= 500000000; t += 1000000)
///     f = gov.update(t, {1.0, double(f) / double(table_hz.back())});  // back-to-back busy loop
///   // f == table_hz.back()
/// \endcode
///
/// Not thread-safe: one governor per policy, updated from one thread.

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace dydnn {
namespace hw {

/// What a policy did between two governor updates.
struct LoadSample {
  /// The fraction of the wall time the policy's busiest CPU was busy, in [0, 1]
  /// (what ondemand and conservative call load / 100). Exactly 1 means no idle time at all.
  double busy = 0;
  /// The frequency-invariant utilisation of that interval, in [0, 1]: busy time weighted by
  /// `f / f_max` (the hardware maximum), as the scheduler's PELT accounts it on arm/arm64.
  double util = 0;
};

/// "Never" for `Governor::next_update_ns`.
constexpr int64_t kNeverNs = std::numeric_limits<int64_t>::max();

/// A simulated governor for one frequency domain: the hardware table, the policy's limits
/// and the frequency it chose last.
class Governor {
 public:
  /// `table_hz`: the domain's frequencies, ascending and non-empty (`ValueError` otherwise).
  explicit Governor(std::vector<uint64_t> table_hz);
  virtual ~Governor() = default;

  /// "performance", "schedutil", ...
  virtual std::string name() const = 0;
  /// Starts governing at `now_ns` with the policy running at `cur_hz`; returns the frequency
  /// to set. Forgets everything learnt before.
  virtual uint64_t start(int64_t now_ns, uint64_t cur_hz);
  /// The policy's limits changed (table entries, min <= max; `ValueError` otherwise);
  /// returns the frequency to set now (the last choice clamped into the limits, as the
  /// kernel's `cpufreq_policy_apply_limits` does).
  virtual uint64_t limits(uint64_t min_hz, uint64_t max_hz);
  /// When the governor wants its next `update` (ns on the simulation clock); `kNeverNs` for
  /// governors that do not sample.
  virtual int64_t next_update_ns() const { return kNeverNs; }
  /// Feeds what the policy did since the last update (or `start`) and returns the frequency
  /// to set: a table entry within the limits.
  virtual uint64_t update(int64_t now_ns, const LoadSample& sample) = 0;

  /// The frequency chosen last.
  uint64_t frequency() const { return freq_; }
  uint64_t min_hz() const { return min_hz_; }  ///< the policy's lower limit now
  uint64_t max_hz() const { return max_hz_; }  ///< the policy's upper limit now
  const std::vector<uint64_t>& table() const { return table_; }

 protected:
  /// `hz` clamped into the limits, then the lowest entry >= it (CPUFREQ_RELATION_L).
  uint64_t resolve_low(double hz) const;
  /// `hz` clamped into the limits, then the highest entry <= it (CPUFREQ_RELATION_H).
  uint64_t resolve_high(double hz) const;
  /// `hz` clamped into the limits, then the closest entry, the lower one on a tie (CPUFREQ_RELATION_C).
  uint64_t resolve_closest(double hz) const;

  std::vector<uint64_t> table_;
  uint64_t min_hz_, max_hz_;
  uint64_t freq_;
};

/// `performance`: the highest frequency within the limits.
class PerformanceGovernor : public Governor {
 public:
  using Governor::Governor;
  std::string name() const override { return "performance"; }
  uint64_t start(int64_t now_ns, uint64_t cur_hz) override;
  uint64_t limits(uint64_t min_hz, uint64_t max_hz) override;
  uint64_t update(int64_t now_ns, const LoadSample& sample) override;
};

/// `powersave`: the lowest frequency within the limits.
class PowersaveGovernor : public Governor {
 public:
  using Governor::Governor;
  std::string name() const override { return "powersave"; }
  uint64_t start(int64_t now_ns, uint64_t cur_hz) override;
  uint64_t limits(uint64_t min_hz, uint64_t max_hz) override;
  uint64_t update(int64_t now_ns, const LoadSample& sample) override;
};

/// Tunables of `OndemandGovernor` (the kernel's defaults unless said otherwise).
struct OndemandOptions {
  /// Sampling period (ns). Default 10 ms (the kernel derives it from the transition latency
  /// and the tick; 10 ms is typical on arm boards).
  int64_t sampling_period_ns = 10'000'000;
  /// Load (%) above which it jumps to the maximum. Default 95 (80 without fine-grained idle
  /// accounting).
  int up_threshold = 95;
  /// After a jump to the maximum, the next sample comes this many periods later. Default 1.
  int sampling_down_factor = 1;
};

/// `ondemand`: every sampling period, load = busy / wall of the busiest CPU (%); load >
/// up_threshold jumps to the maximum (and holds it for `sampling_down_factor` periods);
/// otherwise `f = min + load * (max - min) / 100` (hardware min and max), the closest entry.
class OndemandGovernor : public Governor {
 public:
  explicit OndemandGovernor(std::vector<uint64_t> table_hz, OndemandOptions options = {});
  std::string name() const override { return "ondemand"; }
  uint64_t start(int64_t now_ns, uint64_t cur_hz) override;
  int64_t next_update_ns() const override { return next_ns_; }
  uint64_t update(int64_t now_ns, const LoadSample& sample) override;
  const OndemandOptions& options() const { return options_; }

 private:
  OndemandOptions options_;
  int64_t next_ns_ = 0;
};

/// Tunables of `ConservativeGovernor` (the kernel's defaults).
struct ConservativeOptions {
  int64_t sampling_period_ns = 10'000'000;  ///< sampling period (ns); default 10 ms
  int up_threshold = 80;                    ///< load (%) above which it steps up; default 80
  int down_threshold = 20;                  ///< load (%) below which it steps down; default 20
  int freq_step_percent = 5;                ///< step, % of the policy's max; default 5
  int sampling_down_factor = 1;             ///< step down only every this many samples; default 1
};

/// `conservative`: every sampling period, one step of `freq_step_percent`% of the policy's
/// max up when load > up_threshold, down when load < down_threshold.
class ConservativeGovernor : public Governor {
 public:
  explicit ConservativeGovernor(std::vector<uint64_t> table_hz, ConservativeOptions options = {});
  std::string name() const override { return "conservative"; }
  uint64_t start(int64_t now_ns, uint64_t cur_hz) override;
  int64_t next_update_ns() const override { return next_ns_; }
  uint64_t update(int64_t now_ns, const LoadSample& sample) override;
  const ConservativeOptions& options() const { return options_; }

 private:
  ConservativeOptions options_;
  int64_t next_ns_ = 0;
  double requested_hz_ = 0;  // the kernel's requested_freq: steps accumulate off the table
  int down_skip_ = 0;
};

/// Tunables of `SchedutilGovernor`.
struct SchedutilOptions {
  int64_t period_ns = 1'000'000;  ///< PELT period and update interval (ns); default 1 ms (kernel: 1024 us)
  double half_life_periods = 32;  ///< PELT half-life in periods; default 32
  /// Updates closer than this to the last frequency change are skipped (ns). Default 10 ms;
  /// see `schedutil_rate_limit_ns` for the kernel's rule.
  int64_t rate_limit_ns = 10'000'000;
  double headroom = 1.25;  ///< `next = headroom * f_max * util`; default 1.25
};

/// The kernel's default schedutil rate limit for a transition latency: `min(1000 x latency,
/// 10 ms)` on older kernels; `new_kernel` = true caps it at 2 ms (kernels since late 2023).
int64_t schedutil_rate_limit_ns(double transition_latency_s, bool new_kernel = false);

/// `schedutil`: util is a PELT-like average of the frequency-invariant utilisation (half-life
/// 32 periods of ~1 ms); `next = 1.25 * f_max * util`, the lowest table entry >= next; updates
/// closer than the rate limit to the last change are skipped; no decrease while the CPU had
/// no idle time since the last update. RT tasks and iowait boosting are not modelled.
class SchedutilGovernor : public Governor {
 public:
  explicit SchedutilGovernor(std::vector<uint64_t> table_hz, SchedutilOptions options = {});
  std::string name() const override { return "schedutil"; }
  uint64_t start(int64_t now_ns, uint64_t cur_hz) override;
  uint64_t limits(uint64_t min_hz, uint64_t max_hz) override;
  int64_t next_update_ns() const override { return next_ns_; }
  uint64_t update(int64_t now_ns, const LoadSample& sample) override;
  /// The PELT utilisation now, in [0, 1].
  double util() const { return util_; }
  const SchedutilOptions& options() const { return options_; }

 private:
  SchedutilOptions options_;
  int64_t next_ns_ = 0;
  int64_t last_ns_ = 0;
  int64_t last_change_ns_ = 0;
  bool need_update_ = true;  // the kernel's need_freq_update: the first update and new limits skip the rate limit
  double util_ = 0;
};

/// The simulated governors by name: performance, powersave, ondemand, conservative, schedutil.
std::vector<std::string> simulated_governors();

/// A governor with the kernel's defaults for a domain whose transitions take
/// `transition_latency_s` (schedutil's rate limit comes from it). Throws `ValueError`
/// naming the valid governors for an unknown `name`.
std::unique_ptr<Governor> make_governor(const std::string& name, std::vector<uint64_t> table_hz,
                                        double transition_latency_s = 0);

}  // namespace hw
}  // namespace dydnn
