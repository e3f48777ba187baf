#include <dydnn/errors.h>
#include <dydnn/runtime/manager.h>
#include <dydnn/runtime/profiler.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>

namespace dydnn {
namespace runtime {

hw::Status LocalKnobs::apply(const std::map<std::string, double>& knobs) {
  std::string problems;
  for (const auto& [name, value] : knobs) {
    const auto it = applied_.find(name);
    if (it != applied_.end() && it->second == value) continue;
    hw::Status s;
    if (name == "threads") {
      torch::set_num_threads(std::max(1, static_cast<int>(value)));
    } else if (name == "cores") {
      std::vector<int> cpus;
      const auto mask = static_cast<uint64_t>(value);
      for (int c = 0; c < 64; ++c)
        if ((mask >> c) & 1U) cpus.push_back(c);
      if (!pin_process(cpus)) s = hw::Status::failure(fmt::format("cannot pin to cores {:#x}", mask));
    } else if (name.size() > 3 && name.compare(name.size() - 3, 3, "_hz") == 0 && dvfs_) {
      const int d = dvfs_->find(name.substr(0, name.size() - 3));
      s = d < 0 ? hw::Status::failure(fmt::format("no frequency domain '{}'", name))
                : dvfs_->set_frequency(static_cast<size_t>(d), static_cast<uint64_t>(value));
    } else {
      continue;  // not a knob of this process
    }
    if (s.ok) applied_[name] = value;
    else problems += (problems.empty() ? "" : "; ") + s.reason;
  }
  return problems.empty() ? hw::Status::success() : hw::Status::failure(problems);
}

namespace {

bool matches(const Point& p, const std::map<std::string, double>& state) {
  for (const auto& [name, value] : state) {
    const auto it = p.knobs.find(name);
    if (it == p.knobs.end() || it->second != value) return false;
  }
  return true;
}

}  // namespace

ModelManager::ModelManager(nn::DynamicNet net, std::vector<Point> points, SelectorOptions options,
                           std::shared_ptr<KnobApplier> knobs, std::shared_ptr<const hw::Clock> clock)
    : net_(std::move(net)), points_(std::move(points)), options_(options), knobs_(std::move(knobs)),
      clock_(std::move(clock)), slowdown_(options.ewma_alpha, options.feedback_window) {
  DYDNN_CHECK_VALUE(!net_.is_empty(), "runtime", "ModelManager: no net");
  DYDNN_CHECK_VALUE(knobs_ && clock_, "runtime", "ModelManager: a knob applier and a clock are required");
  for (size_t k = 0; k < points_.size(); ++k)
    DYDNN_CHECK_VALUE(net_->connectivity().index_of(nn::Config(points_[k].config)) >= 0, "runtime",
                      "ModelManager: point {} ('{}') is at config {:#x}, which the net '{}' does not have", k,
                      points_[k].name, points_[k].config, net_->spec().name);
  for (const auto& p : points_) depth_knobs(p.knobs, net_->num_exits());  // exit knobs the net can run
  restricted({});  // validates the table (through the Selector) and builds the unrestricted selector
  net_->eval();
}

ModelManager::~ModelManager() { stop(); }

ModelManager::Restricted& ModelManager::restricted(const std::map<std::string, double>& state) {
  auto it = by_state_.find(state);
  if (it != by_state_.end()) return it->second;
  Restricted r;
  std::vector<Point> subset;
  for (size_t k = 0; k < points_.size(); ++k)
    if (matches(points_[k], state)) {
      r.indices.push_back(k);
      subset.push_back(points_[k]);
    }
  if (!subset.empty()) r.selector = std::make_unique<Selector>(std::move(subset), options_);
  return by_state_.emplace(state, std::move(r)).first->second;
}

void ModelManager::set_targets(const Targets& targets) {
  check_constraints(targets.constraints);
  std::lock_guard<std::mutex> lock(mutex_);
  targets_ = targets;
}

Targets ModelManager::targets() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return targets_;
}

double ModelManager::slowdown() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return slowdown_.value();
}

bool ModelManager::restrict(const std::map<std::string, double>& state) {
  std::lock_guard<std::mutex> lock(mutex_);
  const bool any = restricted(state).selector != nullptr;
  if (any) state_ = state;
  return any;
}

bool ModelManager::feasible_in(const std::map<std::string, double>& state) {
  std::lock_guard<std::mutex> lock(mutex_);
  const Restricted& r = restricted(state);
  return r.selector && r.selector->best(targets_.constraints, targets_.objective, slowdown_.value()) >= 0;
}

std::optional<LogEntry> ModelManager::last_decision() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (log_.empty()) return std::nullopt;
  return log_.back();
}

size_t ModelManager::decide_locked(double now) {
  Restricted& r = restricted(state_);
  r.selector->reset_slowdown(slowdown_.value());
  const Decision d = r.selector->decide(targets_.constraints, targets_.objective, now);
  const size_t index = r.indices[d.index];
  LogEntry e;
  e.time_s = now;
  e.targets = targets_;
  e.measured_latency_s = last_latency_s_;
  e.slowdown = slowdown_.value();
  e.point = index;
  e.feasible = d.feasible;
  e.switched = index != decided_ || log_.empty();
  e.reason = d.reason;
  e.knob_status = knob_status_;
  log_.push_back(std::move(e));
  decided_ = index;
  return index;
}

size_t ModelManager::decide() {
  std::lock_guard<std::mutex> lock(mutex_);
  return decide_locked(clock_->now_s());
}

void ModelManager::apply(size_t point) {
  if (point == applied_) return;
  const Point& p = points_[point];
  net_->set_config(nn::Config(p.config));
  const auto status = knobs_->apply(p.knobs);
  std::lock_guard<std::mutex> lock(mutex_);
  knob_status_ = status.ok ? std::string() : status.reason;
  applied_ = point;
}

void ModelManager::observe(double measured_latency_s) {
  DYDNN_CHECK_VALUE(std::isfinite(measured_latency_s) && measured_latency_s > 0, "runtime",
                    "ModelManager::observe: measured latency {} s (valid: finite, > 0)", measured_latency_s);
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t at = applied_ == static_cast<size_t>(-1) ? decided_ : applied_;
  slowdown_.update(measured_latency_s / points_[at].latency_s);
  last_latency_s_ = measured_latency_s;
}

torch::Tensor ModelManager::infer(const torch::Tensor& input) {
  size_t point;
  if (running_) {
    std::lock_guard<std::mutex> lock(mutex_);
    point = decided_;
  } else {
    point = decide();
  }
  apply(point);
  const Point& p = points_[point];
  const auto depth = depth_knobs(p.knobs, net_->num_exits());
  const auto t0 = std::chrono::steady_clock::now();
  auto logits = run_at_depth(*net_, input, nn::Config(p.config), depth);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  observe(std::max(seconds, 1e-9));
  return logits;
}

void ModelManager::start(double period_s) {
  DYDNN_CHECK_VALUE(std::isfinite(period_s) && period_s > 0, "runtime", "ModelManager::start: period {} s (valid: > 0)",
                    period_s);
  stop();
  decide();
  running_ = true;
  worker_ = std::thread([this, period_s] {
    const auto period = std::chrono::duration<double>(period_s);
    while (running_) {
      std::this_thread::sleep_for(period);
      if (running_) decide();
    }
  });
}

void ModelManager::stop() {
  running_ = false;
  if (worker_.joinable()) worker_.join();
}

std::vector<LogEntry> ModelManager::log() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return log_;
}

void ModelManager::clear_log() {
  std::lock_guard<std::mutex> lock(mutex_);
  log_.clear();
}

std::string ModelManager::log_csv() const {
  const auto entries = log();
  std::string out =
      "time_s,max_latency_s,min_accuracy,max_power_w,objective,measured_latency_s,slowdown,point,config,knobs,"
      "predicted_latency_s,accuracy,feasible,switched,reason,knob_status\n";
  for (const auto& e : entries) {
    const Point& p = points_[e.point];
    std::vector<std::string> knobs;
    for (const auto& [k, v] : p.knobs) knobs.push_back(fmt::format("{}={:g}", k, v));
    out += fmt::format("{:.6f},{:g},{:g},{:g},{},{:.9f},{:.4f},{},{},{},{:.9f},{:.4f},{},{},{},\"{}\"\n", e.time_s,
                       e.targets.constraints.max_latency_s, e.targets.constraints.min_accuracy,
                       e.targets.constraints.max_power_w, to_string(e.targets.objective), e.measured_latency_s,
                       e.slowdown, e.point, nn::Config(p.config).name(), fmt::join(knobs, ";"),
                       p.latency_s * e.slowdown, p.accuracy, e.feasible ? 1 : 0, e.switched ? 1 : 0,
                       to_string(e.reason), e.knob_status);
  }
  return out;
}

SystemManager::SystemManager(std::vector<std::string> shared_knobs, std::shared_ptr<KnobApplier> knobs)
    : shared_(std::move(shared_knobs)), knobs_(std::move(knobs)) {
  DYDNN_CHECK_VALUE(!shared_.empty(), "runtime", "SystemManager: no shared knob named");
  DYDNN_CHECK_VALUE(knobs_ != nullptr, "runtime", "SystemManager: no knob applier");
}

void SystemManager::add(ModelManager& model) { models_.push_back(&model); }

std::vector<std::map<std::string, double>> SystemManager::states() const {
  // The states every model's table has (a model can only follow a state it was profiled in).
  std::set<std::vector<double>> common;
  bool first = true;
  for (const ModelManager* m : models_) {
    std::set<std::vector<double>> mine;
    for (const auto& p : m->points()) {
      std::vector<double> values;
      bool complete = true;
      for (const auto& k : shared_) {
        const auto it = p.knobs.find(k);
        if (it == p.knobs.end()) complete = false;
        else values.push_back(it->second);
      }
      if (complete) mine.insert(values);
    }
    if (first) common = mine;
    else {
      std::set<std::vector<double>> both;
      std::set_intersection(common.begin(), common.end(), mine.begin(), mine.end(), std::inserter(both, both.end()));
      common = both;
    }
    first = false;
  }
  // Cheapest first: lower knob values (frequencies, core counts) cost less power.
  std::vector<std::vector<double>> ordered(common.begin(), common.end());
  std::sort(ordered.begin(), ordered.end(), [](const std::vector<double>& a, const std::vector<double>& b) {
    double sa = 0, sb = 0;
    for (double v : a) sa += v;
    for (double v : b) sb += v;
    return sa != sb ? sa < sb : a < b;
  });
  std::vector<std::map<std::string, double>> out;
  for (const auto& values : ordered) {
    std::map<std::string, double> s;
    for (size_t k = 0; k < shared_.size(); ++k) s[shared_[k]] = values[k];
    out.push_back(std::move(s));
  }
  return out;
}

std::map<std::string, double> SystemManager::decide() {
  const auto candidates = states();
  DYDNN_CHECK_VALUE(!candidates.empty(), "runtime",
                    "SystemManager: no state of the shared knobs [{}] is in every registered model's table",
                    fmt::join(shared_, ", "));
  std::map<std::string, double> chosen = candidates.back();  // the most capable, if none suits all
  for (const auto& s : candidates) {
    bool all = true;
    for (ModelManager* m : models_) all = all && m->feasible_in(s);
    if (all) {
      chosen = s;
      break;
    }
  }
  knobs_->apply(chosen);
  state_ = chosen;
  for (ModelManager* m : models_) {
    m->restrict(chosen);
    m->decide();
  }
  return chosen;
}

}  // namespace runtime
}  // namespace dydnn
