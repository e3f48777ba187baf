#include <dydnn/errors.h>
#include <dydnn/hw/governors.h>
#include <dydnn/runtime/manager.h>
#include <dydnn/runtime/simulation.h>

#include <algorithm>
#include <cmath>
#include <memory>

namespace dydnn {
namespace runtime {

const char* to_string(SimPolicyKind kind) {
  switch (kind) {
    case SimPolicyKind::Manager:
      return "manager";
    case SimPolicyKind::Governor:
      return "governor";
    case SimPolicyKind::Static:
      return "static";
    case SimPolicyKind::Ladder:
      return "ladder";
  }
  return "?";
}

namespace {

int64_t to_ns(double seconds) { return static_cast<int64_t>(std::llround(seconds * 1e9)); }

double value_at(const std::vector<SimStep>& steps, double t) {
  const auto it =
      std::upper_bound(steps.begin(), steps.end(), t, [](double time, const SimStep& s) { return time < s.time_s; });
  return it == steps.begin() ? steps.front().value : (it - 1)->value;
}

// A job's latency with no background, as SimBackend times it; `hz` may be a mean frequency.
double work_latency(const hw::Work& work, uint64_t max_hz, double hz) {
  const double ref = static_cast<double>(work.ref_hz != 0 ? work.ref_hz : max_hz);
  return work.compute_s * ref / hz + work.memory_s;
}

size_t find_domain(const hw::Platform& platform, const std::string& domain) {
  const int d = platform.find(domain);
  if (d < 0) {
    std::vector<std::string> names;
    for (const auto& m : platform.domains) names.push_back(m.name);
    detail::throw_value_error("runtime", "simulate: platform '{}' has no domain '{}' (valid: {})", platform.name,
                              domain, fmt::join(names, ", "));
  }
  return static_cast<size_t>(d);
}

void check_steps(const std::vector<SimStep>& steps, const std::string& what) {
  for (size_t k = 0; k < steps.size(); ++k) {
    DYDNN_CHECK_VALUE(std::isfinite(steps[k].time_s) && steps[k].time_s >= 0, "runtime",
                      "simulate: {} step {} at time {} s (valid: finite, >= 0)", what, k, steps[k].time_s);
    DYDNN_CHECK_VALUE(k == 0 || steps[k].time_s > steps[k - 1].time_s, "runtime",
                      "simulate: {} step {} at {} s is not after step {} at {} s (valid: ascending times)", what, k,
                      steps[k].time_s, k - 1, steps[k - 1].time_s);
  }
}

void check_stream(const SimStream& s, size_t index) {
  DYDNN_CHECK_VALUE(!s.configs.empty(), "runtime", "simulate: stream {} ('{}') has no configs (valid: at least one)",
                    index, s.name);
  for (size_t c = 0; c < s.configs.size(); ++c) {
    const auto& cfg = s.configs[c];
    DYDNN_CHECK_VALUE(cfg.accuracy >= 0 && cfg.accuracy <= 1, "runtime",
                      "simulate: stream {} config {} ('{}'): accuracy = {} (valid: 0..1)", index, c, cfg.name,
                      cfg.accuracy);
    const auto& w = cfg.work;
    DYDNN_CHECK_VALUE(std::isfinite(w.compute_s) && w.compute_s >= 0 && std::isfinite(w.memory_s) && w.memory_s >= 0 &&
                          w.compute_s + w.memory_s > 0,
                      "runtime",
                      "simulate: stream {} config {} ('{}'): work of {} s compute + {} s memory (valid: finite, >= 0, "
                      "sum > 0)",
                      index, c, cfg.name, w.compute_s, w.memory_s);
  }
  DYDNN_CHECK_VALUE(std::isfinite(s.period_s) && s.period_s > 0, "runtime",
                    "simulate: stream {} ('{}'): period_s = {} (valid: finite, > 0)", index, s.name, s.period_s);
  DYDNN_CHECK_VALUE(std::isfinite(s.offset_s) && s.offset_s >= 0, "runtime",
                    "simulate: stream {} ('{}'): offset_s = {} (valid: finite, >= 0)", index, s.name, s.offset_s);
  DYDNN_CHECK_VALUE(!s.deadline_s.empty(), "runtime",
                    "simulate: stream {} ('{}') has no deadline steps (valid: at least one)", index, s.name);
  check_steps(s.deadline_s, fmt::format("stream {} deadline", index));
  for (const auto& step : s.deadline_s)
    DYDNN_CHECK_VALUE(std::isfinite(step.value) && step.value > 0, "runtime",
                      "simulate: stream {} ('{}'): deadline {} s at {} s (valid: finite, > 0)", index, s.name,
                      step.value, step.time_s);
}

// Forwards the domain's frequency knob to the simulator, never below `floor_hz`: the frequency
// another model's running job was started at, which a decision for this model must not take
// away from it.
class SimKnobs : public KnobApplier {
 public:
  SimKnobs(hw::SimBackend& sim, size_t domain, std::string knob) : sim_(sim), domain_(domain), knob_(std::move(knob)) {}
  hw::Status apply(const std::map<std::string, double>& knobs) override {
    const auto it = knobs.find(knob_);
    if (it == knobs.end()) return hw::Status::success();
    return sim_.set_frequency(domain_, std::max(static_cast<uint64_t>(std::llround(it->second)), floor_hz));
  }
  uint64_t floor_hz = 0;

 private:
  hw::SimBackend& sim_;
  size_t domain_;
  std::string knob_;
};

struct Arrival {
  int64_t arrival_ns = 0;
  double deadline_s = 0;
};

struct StreamState {
  const SimStream* spec = nullptr;
  size_t next_k = 0;
  int64_t next_arrival_ns = 0;
  bool running = false;
  size_t job = 0;
  Arrival current;
  size_t config = 0;
  uint64_t hz = 0;
  int64_t start_ns = 0;
  bool waiting = false;
  Arrival queued;
  bool started_any = false;
  size_t last_config = 0;
  uint64_t last_hz = 0;
  std::vector<Point> points;  // the manager's; point k is config k / frequencies at frequency k % frequencies
  std::unique_ptr<ModelManager> manager;
  size_t decided = 0;
  std::unique_ptr<LadderPolicy> ladder;
};

}  // namespace

std::vector<Point> sim_points(const hw::Platform& platform, const std::string& domain, const SimStream& stream) {
  const size_t d = find_domain(platform, domain);
  check_stream(stream, 0);
  const auto& model = platform.domains[d];
  const auto table = model.frequencies_hz();
  std::vector<Point> points;
  for (const auto& cfg : stream.configs)
    for (const uint64_t hz : table) {
      Point p;
      p.config = cfg.mask;
      p.name = fmt::format("{}@{:g}MHz", cfg.name, static_cast<double>(hz) * 1e-6);
      p.knobs = {{model.name + "_hz", static_cast<double>(hz)}};
      p.latency_s = work_latency(cfg.work, table.back(), static_cast<double>(hz));
      p.accuracy = cfg.accuracy;
      p.power_w = model.dynamic_power_w(hz, 1.0);
      p.energy_j = p.power_w * p.latency_s;
      points.push_back(std::move(p));
    }
  return points;
}

SimResult simulate(const hw::Platform& platform, const std::string& domain, const SimTrace& trace,
                   const SimPolicy& policy, const SimOptions& options) {
  const size_t d = find_domain(platform, domain);
  const auto& model = platform.domains[d];
  DYDNN_CHECK_VALUE(std::isfinite(trace.duration_s) && trace.duration_s > 0, "runtime",
                    "simulate: duration_s = {} (valid: finite, > 0)", trace.duration_s);
  DYDNN_CHECK_VALUE(!trace.streams.empty() && trace.streams.size() <= static_cast<size_t>(model.units()), "runtime",
                    "simulate: {} streams (valid: 1 to {}, the cores of '{}')", trace.streams.size(), model.units(),
                    model.name);
  for (size_t s = 0; s < trace.streams.size(); ++s) check_stream(trace.streams[s], s);
  check_steps(trace.background, "background");
  for (const auto& step : trace.background)
    DYDNN_CHECK_VALUE(step.value >= 0 && step.value < 1, "runtime",
                      "simulate: background share {} at {} s (valid: 0 <= share < 1)", step.value, step.time_s);
  DYDNN_CHECK_VALUE(policy.min_accuracy >= 0 && policy.min_accuracy <= 1, "runtime",
                    "simulate: min_accuracy = {} (valid: 0..1)", policy.min_accuracy);
  DYDNN_CHECK_VALUE(std::isfinite(options.dispatch_s) && options.dispatch_s > 0, "runtime",
                    "simulate: dispatch_s = {} (valid: finite, > 0)", options.dispatch_s);
  for (size_t k = 0; k < options.marks_s.size(); ++k)
    DYDNN_CHECK_VALUE(options.marks_s[k] >= 0 && options.marks_s[k] < trace.duration_s &&
                          (k == 0 || options.marks_s[k] > options.marks_s[k - 1]),
                      "runtime", "simulate: mark {} at {} s (valid: ascending, 0 <= time < duration {} s)", k,
                      options.marks_s[k], trace.duration_s);
  const auto table = model.frequencies_hz();
  const auto governors = hw::simulated_governors();
  if (policy.kind == SimPolicyKind::Governor || policy.kind == SimPolicyKind::Ladder)
    DYDNN_CHECK_VALUE(std::find(governors.begin(), governors.end(), policy.governor) != governors.end(), "runtime",
                      "simulate: unknown governor '{}' (valid: {})", policy.governor, fmt::join(governors, ", "));
  if (policy.kind == SimPolicyKind::Static) {
    DYDNN_CHECK_VALUE(policy.static_configs.size() == trace.streams.size(), "runtime",
                      "simulate: {} static configs for {} streams (valid: one per stream)",
                      policy.static_configs.size(), trace.streams.size());
    for (size_t s = 0; s < trace.streams.size(); ++s)
      DYDNN_CHECK_VALUE(policy.static_configs[s] < trace.streams[s].configs.size(), "runtime",
                        "simulate: static config {} for stream {} (valid: 0 to {})", policy.static_configs[s], s,
                        trace.streams[s].configs.size() - 1);
    DYDNN_CHECK_VALUE(std::find(table.begin(), table.end(), policy.static_hz) != table.end(), "runtime",
                      "simulate: static_hz = {} is not a frequency of '{}' (valid: {})", policy.static_hz, model.name,
                      fmt::join(table, ", "));
  }
  if (policy.kind == SimPolicyKind::Manager)
    for (size_t s = 0; s < trace.streams.size(); ++s)
      DYDNN_CHECK_VALUE(!trace.streams[s].net.is_empty(), "runtime",
                        "simulate: stream {} ('{}') has no net (the manager policy needs one per stream)", s,
                        trace.streams[s].name);

  auto clock = std::make_shared<hw::VirtualClock>();
  hw::SimBackend sim(platform, clock);
  const uint64_t max_hz = table.back();
  const double transition_s = model.transition_latency_s;
  const int64_t end_ns = to_ns(trace.duration_s);
  const int64_t dispatch_ns = std::max<int64_t>(1, to_ns(options.dispatch_s));
  auto knobs = std::make_shared<SimKnobs>(sim, d, model.name + "_hz");

  std::vector<StreamState> streams(trace.streams.size());
  std::unique_ptr<SystemManager> system;
  if (policy.kind == SimPolicyKind::Manager && streams.size() > 1)
    system = std::make_unique<SystemManager>(std::vector<std::string>{model.name + "_hz"}, knobs);
  for (size_t s = 0; s < streams.size(); ++s) {
    auto& st = streams[s];
    st.spec = &trace.streams[s];
    st.next_arrival_ns = to_ns(st.spec->offset_s);
    if (policy.kind == SimPolicyKind::Manager) {
      st.points = sim_points(platform, domain, *st.spec);
      st.manager = std::make_unique<ModelManager>(st.spec->net, st.points, policy.selector, knobs, clock);
      Targets t;
      t.constraints.max_latency_s = value_at(st.spec->deadline_s, 0.0);
      t.constraints.min_accuracy = policy.min_accuracy;
      t.objective = Objective::MinEnergy;
      st.manager->set_targets(t);
      if (system) system->add(*st.manager);
    } else if (policy.kind == SimPolicyKind::Ladder) {
      std::vector<Point> rungs;
      for (const auto& cfg : st.spec->configs) {
        Point p;
        p.config = cfg.mask;
        p.name = cfg.name;
        p.latency_s = work_latency(cfg.work, max_hz, static_cast<double>(max_hz));
        p.accuracy = cfg.accuracy;
        p.power_w = model.dynamic_power_w(max_hz, 1.0);
        p.energy_j = p.power_w * p.latency_s;
        rungs.push_back(std::move(p));
      }
      st.ladder = std::make_unique<LadderPolicy>(rungs, policy.ladder);
    }
  }
  if (policy.kind == SimPolicyKind::Governor || policy.kind == SimPolicyKind::Ladder) {
    const auto status = sim.set_governor(d, policy.governor);
    DYDNN_CHECK_VALUE(status.ok, "runtime", "simulate: {}", status.reason);
  } else if (policy.kind == SimPolicyKind::Static) {
    sim.set_frequency(d, policy.static_hz);
  }

  SimResult result;
  std::vector<double> latencies;
  double accuracy_sum = 0, job_s = 0, job_hz_s = 0;

  const auto miss = [&] {
    ++result.missed;
    if (result.missed > options.max_misses) result.aborted = true;
  };

  const auto targets_for = [&](double max_latency_s) {
    Targets t;
    t.constraints.max_latency_s = std::max(max_latency_s, 1e-12);
    t.constraints.min_accuracy = policy.min_accuracy;
    t.objective = Objective::MinEnergy;
    return t;
  };

  // One manager decision for stream `s` with `budget_s` left to its deadline; returns the config.
  const auto manager_decides = [&](size_t s, double budget_s) {
    auto& st = streams[s];
    bool feasible = true;
    // `hold_hz`: the frequency is not to go below this (set to stay put, see below).
    const auto decide = [&](double limit_s, uint64_t hold_hz) {
      st.manager->set_targets(targets_for(limit_s));
      knobs->floor_hz = hold_hz;
      if (system) {
        for (size_t u = 0; u < streams.size(); ++u)
          if (u != s && streams[u].running) knobs->floor_hz = std::max(knobs->floor_hz, streams[u].hz);
        system->decide();
      } else {
        st.manager->decide();
      }
      // The system manager re-decides every model: keep each one's decision, which `observe` refers to.
      for (auto& other : streams) {
        if (!other.manager) continue;
        const auto last = other.manager->last_decision();
        if (!last) continue;
        other.decided = last->point;
        if (&other == &st) feasible = last->feasible;
      }
      if (!system) knobs->apply(st.points[st.decided].knobs);
    };
    const uint64_t before = sim.target_frequency(d);
    decide(budget_s, 0);
    const uint64_t first = sim.target_frequency(d);
    // A new frequency acts only after the transition latency: it must fit in what is left then.
    if (transition_s > 0 && first != before && budget_s - transition_s > 0) {
      decide(budget_s - transition_s, 0);
      // A lower frequency fitted the whole budget, so the current one does too, with no
      // transition: when paying for one would end above where it was, staying put is cheaper
      // (without this the choice swings between the two whenever the models take turns).
      if (first < before && sim.target_frequency(d) > before) decide(budget_s, before);
    }
    if (!feasible) ++result.infeasible;
    return st.decided / table.size();
  };

  const auto start = [&](size_t s, const Arrival& a) {
    auto& st = streams[s];
    const int64_t now = clock->now_ns();
    const double now_s = static_cast<double>(now) * 1e-9;
    switch (policy.kind) {
      case SimPolicyKind::Manager:
        st.config = manager_decides(s, a.deadline_s - static_cast<double>(now - a.arrival_ns) * 1e-9);
        break;
      case SimPolicyKind::Governor:
        st.config = st.spec->configs.size() - 1;
        break;
      case SimPolicyKind::Static:
        st.config = policy.static_configs[s];
        break;
      case SimPolicyKind::Ladder:
        st.config = st.ladder->decide(a.deadline_s, policy.min_accuracy, now_s);
        break;
    }
    st.hz = sim.target_frequency(d);
    if (st.started_any && (st.config != st.last_config || st.hz != st.last_hz)) ++result.switches;
    st.started_any = true;
    st.last_config = st.config;
    st.last_hz = st.hz;
    st.current = a;
    st.start_ns = now;
    st.job = sim.submit(d, st.spec->configs[st.config].work, 1);
    st.running = true;
  };

  const auto finish = [&](size_t s) {
    auto& st = streams[s];
    const hw::JobResult r = sim.wait(st.job);
    st.running = false;
    const double latency_s = static_cast<double>(r.end_ns - st.current.arrival_ns) * 1e-9;
    const bool missed = r.end_ns - st.current.arrival_ns > to_ns(st.current.deadline_s);
    ++result.served;
    latencies.push_back(latency_s);
    accuracy_sum += st.spec->configs[st.config].accuracy;
    job_s += r.latency_s;
    job_hz_s += r.mean_hz * r.latency_s;
    if (options.keep_requests)
      result.requests.push_back({s, static_cast<double>(st.current.arrival_ns) * 1e-9,
                                 static_cast<double>(st.start_ns) * 1e-9, static_cast<double>(r.end_ns) * 1e-9,
                                 st.current.deadline_s, st.config, st.hz, missed, false});
    if (missed) miss();
    if (st.manager && r.latency_s > 0) {
      const auto& work = st.spec->configs[st.config].work;
      const double expected_s = work_latency(work, max_hz, r.mean_hz > 0 ? r.mean_hz : static_cast<double>(st.hz));
      st.manager->observe(r.latency_s / expected_s * st.points[st.decided].latency_s);
      // An idle model's targets are the deadline in force now, for the system manager's next choice.
      st.manager->set_targets(
          targets_for(value_at(st.spec->deadline_s, static_cast<double>(clock->now_ns()) * 1e-9)));
    }
    if (st.ladder && r.latency_s > 0) st.ladder->observe(r.latency_s);
    if (st.waiting) {
      st.waiting = false;
      start(s, st.queued);
    }
  };

  const auto arrive = [&](size_t s) {
    auto& st = streams[s];
    Arrival a;
    a.arrival_ns = st.next_arrival_ns;
    a.deadline_s = value_at(st.spec->deadline_s, static_cast<double>(a.arrival_ns) * 1e-9);
    ++result.arrived;
    ++st.next_k;
    st.next_arrival_ns = to_ns(st.spec->offset_s + static_cast<double>(st.next_k) * st.spec->period_s);
    if (!st.running) {
      start(s, a);
      return;
    }
    if (st.waiting) {
      ++result.dropped;
      if (options.keep_requests)
        result.requests.push_back({s, static_cast<double>(st.queued.arrival_ns) * 1e-9, 0.0, 0.0,
                                   st.queued.deadline_s, 0, 0, true, true});
      miss();
    }
    st.waiting = true;
    st.queued = a;
  };

  size_t next_background = 0, next_mark = 0;
  for (;;) {
    const int64_t now = clock->now_ns();
    while (next_background < trace.background.size() && to_ns(trace.background[next_background].time_s) <= now)
      sim.set_background(d, trace.background[next_background++].value);
    for (size_t s = 0; s < streams.size(); ++s)
      if (streams[s].running && sim.finished(streams[s].job)) finish(s);
    while (next_mark < options.marks_s.size() && to_ns(options.marks_s[next_mark]) <= now)
      result.marks.push_back({options.marks_s[next_mark++], sim.energy_j(d), sim.background_energy_j(d),
                              result.arrived, result.served, result.missed});
    for (size_t s = 0; s < streams.size(); ++s)
      while (streams[s].next_arrival_ns <= now && streams[s].next_arrival_ns < end_ns) arrive(s);
    if (result.aborted) break;

    int64_t next = std::numeric_limits<int64_t>::max();
    bool running = false, backlog = false;
    for (const auto& st : streams) {
      if (st.next_arrival_ns < end_ns) next = std::min(next, st.next_arrival_ns);
      running = running || st.running;
      backlog = backlog || st.waiting;
    }
    if (next_background < trace.background.size()) {
      const int64_t at = to_ns(trace.background[next_background].time_s);
      if (at < end_ns) next = std::min(next, at);
    }
    if (next_mark < options.marks_s.size()) next = std::min(next, to_ns(options.marks_s[next_mark]));
    if (backlog) next = std::min(next, now + dispatch_ns);
    if (next == std::numeric_limits<int64_t>::max()) {
      if (!running) break;
      // Nothing arrives or waits any more: the running jobs just finish.
      for (size_t s = 0; s < streams.size(); ++s)
        if (streams[s].running) finish(s);
      continue;
    }
    clock->advance(next - now);
    sim.sync();
  }
  if (!result.aborted && clock->now_ns() < end_ns) {
    clock->advance(end_ns - clock->now_ns());
    sim.sync();
  }

  result.end_s = clock->now_s();
  result.energy_j = sim.energy_j(d);
  result.background_energy_j = sim.background_energy_j(d);
  result.static_energy_j = model.static_w * result.end_s;
  result.energy_per_inference_j =
      result.served > 0 ? (result.energy_j - result.background_energy_j) / static_cast<double>(result.served) : 0.0;
  result.miss_rate = result.arrived > 0 ? static_cast<double>(result.missed) / static_cast<double>(result.arrived) : 0;
  result.mean_accuracy = result.served > 0 ? accuracy_sum / static_cast<double>(result.served) : 0.0;
  result.mean_job_hz = job_s > 0 ? job_hz_s / job_s : 0.0;
  if (!latencies.empty()) {
    std::sort(latencies.begin(), latencies.end());
    const auto rank = [&](double q) {
      const auto n = static_cast<double>(latencies.size());
      const auto k = static_cast<size_t>(std::max(1.0, std::ceil(q * n)));
      return latencies[std::min(latencies.size(), k) - 1];
    };
    result.p50_s = rank(0.50);
    result.p95_s = rank(0.95);
    result.p99_s = rank(0.99);
  }
  return result;
}

}  // namespace runtime
}  // namespace dydnn
