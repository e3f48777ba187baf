#include <dydnn/errors.h>
#include <dydnn/runtime/latency.h>
#include <dydnn/runtime/profiler.h>
#include <dydnn/train/exits.h>
#include <dydnn/train/trainer.h>

#include <torch/torch.h>

#include <sched.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

namespace dydnn {
namespace runtime {

bool pin_process(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (const int c : cpus) {
    if (c < 0 || c >= CPU_SETSIZE) return false;
    CPU_SET(c, &set);
  }
  // Every thread of the process (LibTorch's pool included): affinity is per thread on Linux.
  std::error_code ec;
  bool ok = true;
  for (std::filesystem::directory_iterator it("/proc/self/task", ec), end; !ec && it != end; it.increment(ec)) {
    const pid_t tid = static_cast<pid_t>(std::stol(it->path().filename().string()));
    ok = sched_setaffinity(tid, sizeof set, &set) == 0 && ok;
  }
  return ok && !ec;
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> out;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

namespace {

double mask_of(const std::vector<int>& cpus) {
  uint64_t mask = 0;
  for (const int c : cpus) mask |= uint64_t{1} << c;
  return static_cast<double>(mask);
}

// One hardware setting of the sweep.
struct Setting {
  int threads = 1;
  std::vector<int> cores;                                   // empty: unchanged
  std::vector<std::pair<size_t, uint64_t>> frequencies;     // (domain, Hz)
};

std::vector<Setting> settings_of(const ProfileOptions& o) {
  std::vector<std::vector<std::pair<size_t, uint64_t>>> frequency_sets = {{}};
  for (const auto& name : o.domains) {
    DYDNN_CHECK_VALUE(o.dvfs != nullptr, "runtime", "profile: domain '{}' given without a DvfsBackend", name);
    const int d = o.dvfs->find(name);
    std::vector<std::string> names;
    for (const auto& dom : o.dvfs->domains()) names.push_back(dom.name);
    DYDNN_CHECK_VALUE(d >= 0, "runtime", "profile: {} has no domain '{}' (valid: {})", o.dvfs->name(), name,
                      fmt::join(names, ", "));
    const auto& table = o.dvfs->domains()[static_cast<size_t>(d)].frequencies_hz;
    const auto& sweep = o.frequencies_hz.empty() ? table : o.frequencies_hz;
    DYDNN_CHECK_VALUE(!sweep.empty(), "runtime", "profile: domain '{}' has no frequency table; give frequencies_hz",
                      name);
    std::vector<std::vector<std::pair<size_t, uint64_t>>> next;
    for (const auto& partial : frequency_sets)
      for (const uint64_t hz : sweep) {
        auto s = partial;
        s.emplace_back(static_cast<size_t>(d), hz);
        next.push_back(std::move(s));
      }
    frequency_sets = std::move(next);
  }
  const std::vector<std::vector<int>> core_sets = o.core_sets.empty() ? std::vector<std::vector<int>>{{}} : o.core_sets;
  const long cpus = sysconf(_SC_NPROCESSORS_CONF);
  std::vector<Setting> out;
  for (const int t : o.threads) {
    DYDNN_CHECK_VALUE(t >= 1, "runtime", "profile: thread count {} (valid: >= 1)", t);
    for (const auto& cores : core_sets) {
      for (const int c : cores)
        DYDNN_CHECK_VALUE(c >= 0 && c < cpus, "runtime", "profile: core {} (valid: 0..{})", c, cpus - 1);
      for (const auto& f : frequency_sets) out.push_back({t, cores, f});
    }
  }
  return out;
}

// Batch-1 latency of `run` (warm-up, then repetitions) and, with an energy source, the
// energy of one run and the mean power over the repetitions (NaN without one).
struct Measured {
  LatencyStats latency;
  double energy_mj = std::numeric_limits<double>::quiet_NaN();
  double power_w = std::numeric_limits<double>::quiet_NaN();

  // Writes the latency and, when known, the energy and power metrics of `p`.
  void write(io::OperatingPoint& p) const {
    p.metrics[io::metric::kLatencyP50Us] = latency.median_us;
    p.metrics[io::metric::kLatencyP95Us] = latency.p95_us;
    if (std::isfinite(energy_mj)) {
      p.metrics[io::metric::kEnergyMj] = energy_mj;
      p.metrics[io::metric::kPowerW] = power_w;
    }
  }
};

Measured measure(const std::function<void()>& run, const ProfileOptions& o) {
  for (int64_t k = 0; k < o.warmup; ++k) run();
  const double e0 = o.energy ? o.energy() : std::numeric_limits<double>::quiet_NaN();
  const auto t0 = std::chrono::steady_clock::now();
  Measured m;
  m.latency = measure_latency(run, 0, o.repetitions);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double e1 = o.energy ? o.energy() : std::numeric_limits<double>::quiet_NaN();
  if (std::isfinite(e0) && std::isfinite(e1) && e1 >= e0 && seconds > 0) {
    m.energy_mj = 1e3 * (e1 - e0) / static_cast<double>(o.repetitions);
    m.power_w = (e1 - e0) / seconds;
  }
  return m;
}

// The width x exit points and the adaptive points of one config under one setting.
void profile_depth(nn::DynamicNetImpl& net, const torch::Tensor& image, nn::Config config,
                   const train::ExitStatistics& stats, const std::map<std::string, double>& knobs,
                   const ProfileOptions& o, std::vector<io::OperatingPoint>& table) {
  const int64_t exits = net.num_exits();
  if (o.exit_points)
    for (int64_t e = 0; e + 1 < exits; ++e) {
      const auto measured = measure([&] { net.forward_to_exit(image, config, e); }, o);
      io::OperatingPoint p;
      p.config = config;
      p.knobs = knobs;
      p.knobs["exit"] = static_cast<double>(e);
      measured.write(p);
      int64_t right = 0;
      for (auto c : stats.correct[e]) right += c;
      p.metrics[io::metric::kTop1] = static_cast<double>(right) / static_cast<double>(std::max<int64_t>(1, stats.count()));
      table.push_back(std::move(p));
    }
  if (o.exit_thresholds.empty()) return;
  // A sample answered by exit e also computed (and passed) the heads before it: time each
  // such path once (threshold 0 never exits, a huge one always does).
  std::vector<Measured> path;
  for (int64_t e = 0; e < exits; ++e) {
    nn::ExitPolicy policy{o.exit_criterion, std::vector<double>(static_cast<size_t>(exits - 1), 0.0), false};
    if (e + 1 < exits) policy.thresholds[static_cast<size_t>(e)] = std::numeric_limits<double>::max();
    path.push_back(measure([&] { net.forward_adaptive(image, config, policy); }, o));
  }
  for (const double t : o.exit_thresholds) {
    const auto outcome = train::evaluate_thresholds(stats, std::vector<double>(static_cast<size_t>(exits - 1), t));
    io::OperatingPoint p;
    p.config = config;
    p.knobs = knobs;
    p.knobs["exit_threshold"] = t;
    p.knobs["exit_criterion"] = o.exit_criterion == nn::ExitCriterion::MaxProb ? 1.0 : 0.0;
    double p50 = 0, p95 = 0, energy = 0, seconds = 0;
    for (int64_t e = 0; e < exits; ++e) {
      const double rate = outcome.exit_rates[static_cast<size_t>(e)];
      const Measured& m = path[static_cast<size_t>(e)];
      p.metrics[fmt::format("exit_rate_{}", e)] = rate;
      p50 += rate * m.latency.median_us;
      if (rate > 0) p95 = m.latency.p95_us;  // the deepest exit that answers
      if (rate > 0) {  // a path no sample takes costs nothing, known or not
        energy += rate * m.energy_mj;
        // The path's mean time as its power was measured (the median when the meter did not move).
        seconds += rate * (m.power_w > 0 ? 1e-3 * m.energy_mj / m.power_w : 1e-6 * m.latency.median_us);
      }
    }
    p.metrics[io::metric::kLatencyP50Us] = p50;
    p.metrics[io::metric::kLatencyP95Us] = p95;
    if (o.energy && std::isfinite(energy)) {
      p.metrics[io::metric::kEnergyMj] = energy;
      p.metrics[io::metric::kPowerW] = seconds > 0 ? 1e-3 * energy / seconds : 0.0;
    }
    p.metrics[io::metric::kTop1] = outcome.accuracy;
    table.push_back(std::move(p));
  }
}

}  // namespace

DepthKnobs depth_knobs(const std::map<std::string, double>& knobs, int64_t num_exits) {
  DepthKnobs d;
  if (const auto it = knobs.find("exit"); it != knobs.end()) {
    DYDNN_CHECK_VALUE(it->second >= 0 && it->second < static_cast<double>(num_exits), "runtime",
                      "knob exit={:g} is out of range (valid: 0..{})", it->second, num_exits - 1);
    d.exit = static_cast<int64_t>(it->second);
  }
  if (const auto it = knobs.find("exit_threshold"); it != knobs.end()) {
    DYDNN_CHECK_VALUE(num_exits > 1, "runtime", "knob exit_threshold={:g} needs a net with early exits", it->second);
    d.adaptive = true;
    d.policy.thresholds.assign(static_cast<size_t>(num_exits - 1), it->second);
    const auto c = knobs.find("exit_criterion");
    d.policy.criterion = c != knobs.end() && c->second == 1 ? nn::ExitCriterion::MaxProb : nn::ExitCriterion::Entropy;
  }
  return d;
}

torch::Tensor run_at_depth(nn::DynamicNetImpl& net, const torch::Tensor& input, nn::Config config,
                           const DepthKnobs& depth) {
  if (depth.adaptive) return net.forward_adaptive(input, config, depth.policy).logits;
  if (depth.exit >= 0) return net.forward_to_exit(input, config, depth.exit);
  return net.forward(input, config);
}

std::vector<io::OperatingPoint> profile(nn::DynamicNet net, const data::ImageDataset& validation,
                                        const data::Normalization& norm, const ProfileOptions& options) {
  DYDNN_CHECK_VALUE(!options.threads.empty(), "runtime", "profile: no thread count to try");
  DYDNN_CHECK_VALUE(options.warmup >= 0 && options.repetitions >= 1, "runtime",
                    "profile: warmup {} and repetitions {} (valid: >= 0 and >= 1)", options.warmup,
                    options.repetitions);
  DYDNN_CHECK_VALUE(validation.size() > 0, "runtime", "profile: the validation data are empty");
  const auto settings = settings_of(options);
  net->eval();

  // Accuracy depends on the config only.
  std::map<nn::Config, double> top1;
  for (const auto& e : train::evaluate_configs(*net, validation, norm)) top1[e.config] = e.metrics.top1();
  const int64_t exits = net->num_exits();
  const bool depth = exits > 1 && (options.exit_points || !options.exit_thresholds.empty());
  std::map<nn::Config, train::ExitStatistics> exit_stats;
  if (depth)
    for (const auto config : net->configs())
      exit_stats[config] = train::exit_statistics(*net, validation, norm, config, options.exit_criterion);
  for (const double t : options.exit_thresholds)
    DYDNN_CHECK_VALUE(!std::isnan(t), "runtime", "profile: an exit threshold is NaN (valid: a number)");

  const int old_threads = torch::get_num_threads();
  const auto old_cpus = allowed_cpus();
  const auto image = norm.apply(validation.images.slice(0, 0, 1));
  std::vector<io::OperatingPoint> table;
  c10::InferenceMode inference;
  for (size_t s = 0; s < settings.size(); ++s) {
    const auto& setting = settings[s];
    torch::set_num_threads(setting.threads);
    if (!setting.cores.empty())
      DYDNN_CHECK_VALUE(pin_process(setting.cores), "runtime", "profile: cannot pin the process to cores [{}]",
                        fmt::join(setting.cores, ","));
    std::map<std::string, double> knobs = {{"threads", setting.threads}};
    if (!setting.cores.empty()) knobs["cores"] = mask_of(setting.cores);
    for (const auto& [domain, hz] : setting.frequencies) {
      const auto status = options.dvfs->set_frequency(domain, hz);
      DYDNN_CHECK_VALUE(status.ok, "runtime", "profile: {}", status.reason);
      knobs[options.dvfs->domains()[domain].name + "_hz"] = static_cast<double>(hw::snap_up(
          options.dvfs->domains()[domain].frequencies_hz, hz));
    }
    for (const auto config : net->configs()) {
      io::OperatingPoint p;
      p.config = config;
      p.knobs = knobs;
      measure([&] { net->forward(image, config); }, options).write(p);  // the final head
      p.metrics[io::metric::kTop1] = top1.at(config);
      table.push_back(std::move(p));
      if (depth) profile_depth(*net, image, config, exit_stats.at(config), knobs, options, table);
    }
    if (options.progress)
      std::fprintf(stderr, "[dydnn] profiled setting %zu/%zu (threads %d%s): %zu configs%s\n", s + 1, settings.size(),
                   setting.threads,
                   setting.cores.empty() ? "" : fmt::format(", cores {}", fmt::join(setting.cores, ",")).c_str(),
                   net->configs().size(), depth ? " x exits" : "");
  }
  torch::set_num_threads(old_threads);
  if (!options.core_sets.empty()) pin_process(old_cpus);
  if (!options.domains.empty()) options.dvfs->restore();
  return table;
}

std::vector<Point> to_points(const std::vector<io::OperatingPoint>& table) {
  std::vector<Point> out;
  for (size_t k = 0; k < table.size(); ++k) {
    const auto& op = table[k];
    const auto metric = [&](const char* name) {
      const auto it = op.metrics.find(name);
      return it == op.metrics.end() ? std::numeric_limits<double>::quiet_NaN() : it->second;
    };
    Point p;
    p.config = op.config.mask();
    p.knobs = op.knobs;
    std::vector<std::string> parts;
    for (const auto& [knob, value] : op.knobs) parts.push_back(fmt::format("{}={:g}", knob, value));
    p.name = fmt::format("{}@{}", op.config.name(), fmt::join(parts, ","));
    p.latency_s = 1e-6 * metric(io::metric::kLatencyP50Us);
    p.accuracy = metric(io::metric::kTop1);
    DYDNN_CHECK_VALUE(std::isfinite(p.latency_s) && std::isfinite(p.accuracy), "runtime",
                      "operating point {} ({}) lacks {} or {}", k, p.name, io::metric::kLatencyP50Us,
                      io::metric::kTop1);
    p.power_w = metric(io::metric::kPowerW);
    const double mj = metric(io::metric::kEnergyMj);
    p.energy_j = std::isfinite(mj) ? 1e-3 * mj : std::numeric_limits<double>::quiet_NaN();
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace runtime
}  // namespace dydnn
