#pragma once
/// \file
/// The runtime manager: per model, it takes targets and measurements, asks the selector
/// for an operating point, applies the point's config to the net and its knobs to the
/// hardware, and logs every decision. A `SystemManager` above several models chooses the
/// shared knobs (a cluster's frequency, a core set) for all of them (the state that the
/// most demanding model needs), then each model re-picks its config for that state.

#include <dydnn/hw/clock.h>
#include <dydnn/hw/dvfs.h>
#include <dydnn/nn/dynamic_net.h>
#include <dydnn/runtime/selector.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace dydnn {
namespace runtime {

/// Applies a point's knobs to the machine.
class KnobApplier {
 public:
  virtual ~KnobApplier() = default;
  /// Applies `knobs`; a refusal of the system comes back as a failed status (inference
  /// goes on at the old setting), never as an exception.
  virtual hw::Status apply(const std::map<std::string, double>& knobs) = 0;
};

/// The knobs of this process: `threads` (LibTorch intra-op threads), `cores` (a CPU
/// bitmask the process is pinned to) and `<domain>_hz` (a frequency, through `dvfs`).
/// Unknown knob names are ignored (another applier may own them). Changes only what
/// differs from the last applied value.
class LocalKnobs : public KnobApplier {
 public:
  explicit LocalKnobs(hw::DvfsBackend* dvfs = nullptr) : dvfs_(dvfs) {}
  hw::Status apply(const std::map<std::string, double>& knobs) override;

 private:
  hw::DvfsBackend* dvfs_;
  std::map<std::string, double> applied_;
};

/// What a model must achieve now.
struct Targets {
  Constraints constraints;
  Objective objective = Objective::MaxAccuracy;
};

/// One decision, as logged.
struct LogEntry {
  double time_s = 0;                ///< on the manager's clock
  Targets targets;
  double measured_latency_s = 0;    ///< of the inference before this decision (0: none yet)
  double slowdown = 1;              ///< the feedback factor the decision used
  size_t point = 0;                 ///< into the manager's table
  bool feasible = true;
  bool switched = false;
  Reason reason = Reason::Best;
  std::string knob_status;          ///< empty, or why the knobs could not be applied
};

/// One model's manager. Inline use: call `infer` per request (decide, apply, run,
/// measure). Threaded use: `start(period)` decides on its own thread every period from
/// the latest measurements; `infer` then only applies the latest decision and measures.
class ModelManager {
 public:
  /// `points` index the net's configs by mask; throws `ValueError` when a point's config
  /// is not one of the net's.
  ModelManager(nn::DynamicNet net, std::vector<Point> points, SelectorOptions options = {},
               std::shared_ptr<KnobApplier> knobs = std::make_shared<LocalKnobs>(),
               std::shared_ptr<const hw::Clock> clock = std::make_shared<hw::SteadyClock>());
  ~ModelManager();
  ModelManager(const ModelManager&) = delete;
  ModelManager& operator=(const ModelManager&) = delete;

  /// New targets (thread-safe); they apply from the next decision.
  void set_targets(const Targets& targets);
  Targets targets() const;
  /// One inference under the manager (input as the net takes it). Returns the logits.
  torch::Tensor infer(const torch::Tensor& input);
  /// Decides now without running anything; returns the chosen point.
  size_t decide();
  /// Feeds back a latency measured outside `infer` (e.g. a whole request's time).
  void observe(double measured_latency_s);

  /// Runs decisions on a background thread every `period_s` (> 0).
  void start(double period_s);
  /// Stops the background thread (also on destruction).
  void stop();

  const std::vector<Point>& points() const { return points_; }
  size_t current() const { return applied_; }
  double slowdown() const;
  /// A copy of the decision log.
  std::vector<LogEntry> log() const;
  void clear_log();
  /// The log as CSV (time_s, targets, measured latency, slowdown, point, config, knobs,
  /// feasible, switched, reason).
  std::string log_csv() const;

  /// Restricts the choice to points whose knobs match `state` (the system manager's
  /// shared knobs); an empty state lifts the restriction. Returns whether any point
  /// matches.
  bool restrict(const std::map<std::string, double>& state);
  /// Whether some point matching `state` meets the current targets at the current slowdown.
  bool feasible_in(const std::map<std::string, double>& state);
  /// The latest decision (none before the first), without copying the log.
  std::optional<LogEntry> last_decision() const;

 private:
  struct Restricted {
    std::vector<size_t> indices;  // into points_
    std::unique_ptr<Selector> selector;
  };
  Restricted& restricted(const std::map<std::string, double>& state);
  size_t decide_locked(double now);
  void apply(size_t point);

  nn::DynamicNet net_;
  std::vector<Point> points_;
  SelectorOptions options_;
  std::shared_ptr<KnobApplier> knobs_;
  std::shared_ptr<const hw::Clock> clock_;
  mutable std::mutex mutex_;
  Targets targets_;
  std::map<std::map<std::string, double>, Restricted> by_state_;
  std::map<std::string, double> state_;
  SlowdownFilter slowdown_;
  double last_latency_s_ = 0;
  size_t decided_ = 0, applied_ = static_cast<size_t>(-1);
  std::string knob_status_;
  std::vector<LogEntry> log_;
  std::thread worker_;
  std::atomic<bool> running_{false};
};

/// Several models sharing knobs. `decide()` picks, among the shared states found in
/// every model's table, the cheapest one in which every model has a feasible point
/// (states ordered by their knob values, so a cluster runs at the lowest frequency
/// its most demanding model needs), applies it, restricts each model to it and lets each
/// re-pick its config. When no state suits every model, the most capable state is used
/// and the models fall back.
class SystemManager {
 public:
  /// `shared_knobs` names the knobs decided here (e.g. {"policy4_hz"}); `knobs` applies
  /// them.
  SystemManager(std::vector<std::string> shared_knobs, std::shared_ptr<KnobApplier> knobs);
  /// Registers a model (not owned; it must outlive the system manager).
  void add(ModelManager& model);
  /// The shared state for the models' current targets; returns it.
  std::map<std::string, double> decide();
  const std::map<std::string, double>& state() const { return state_; }
  /// Every distinct shared state of the registered tables, cheapest first.
  std::vector<std::map<std::string, double>> states() const;

 private:
  std::vector<std::string> shared_;
  std::shared_ptr<KnobApplier> knobs_;
  std::vector<ModelManager*> models_;
  std::map<std::string, double> state_;
};

}  // namespace runtime
}  // namespace dydnn
