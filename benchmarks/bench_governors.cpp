// The runtime manager against the Linux governors (issue "runtime manager", §6), on simulated
// boards: the Exynos 5422's A15 cluster (policy4) and the Jetson Nano's A57 cluster (policy0),
// serving one model, and two models at once on the same cluster, over two traces (frame streams
// that keep the cluster busy, and sparse requests) whose deadlines step (loose, tight, medium)
// while a background process comes and goes.
//
// The work of each config comes from the real sub-networks: each config of the default
// Fashion-MNIST net is timed here (batch 1, 1 thread) and scaled to the board by a stated factor
// and compute/memory split. Accuracies come from the demo's model file when there is one, else
// from docs/results_data/incremental.json. Everything after the timing runs on a virtual clock,
// so the results depend only on the measured latencies (and the stated assumptions).
//
// Policies: dydnn's manager (ModelManager per model; SystemManager for two), the simulated
// governors running the full model, Dynamic-OFA's ladder (on schedutil), and the best static
// (config, frequency) in hindsight. Writes <out>/governors.json, and with --docs a generated page.
//
//   build/benchmarks/bench_governors [--out build/bench] [--docs docs/governors_benchmark.md]
//                                    [--model build/demo/model.dydnn] [--smoke]
//                                    [--host-latency-us A,AB,ABC,ABCD]   (replay, instead of timing)
#include <dydnn/dydnn.h>
#include <dydnn/hw/governors.h>
#include <dydnn/hw/platform.h>
#include <dydnn/runtime/simulation.h>

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>

using namespace dydnn;

namespace {

// How much slower than this host each board's cluster runs the net at its highest frequency,
// and the share of that time which does not scale with the core clock. Both are assumptions:
// neither board was measured. Periods and deadlines are in units of the full model's latency
// on the board, so the factor only moves the jobs against the governors' fixed time constants
// (sampling periods, rate limits, PELT) and the actuation delays; the sensitivity study varies
// both.
struct Board {
  const char* platform;
  const char* domain;
  const char* label;
  double slower;  // board latency at f_max / host latency
};
const Board kBoards[] = {
    {"exynos5422", "policy4", "Exynos 5422, A15 cluster (policy4)", 8.0},
    {"jetson_nano", "policy0", "Jetson Nano, A57 cluster (policy0)", 8.0},
};
// The net's weights (at most 170 kB) fit in both clusters' L2, so most of the time is core-bound.
constexpr double kMemoryShare = 0.2;

// The traces, in units of the full model's latency at f_max (T_full) on the board. Both have the
// same phases (deadline levels and background load); they differ in how busy the models keep the
// cluster. `streaming` is the seed's setting: each model processes a stream of frames and the
// loosest deadline is the frame period, so a governor sees a busy core. `sparse` sends a request
// now and then: the core idles most of the time, and a utilisation-driven governor clocks down.
struct TraceDesign {
  const char* name;
  const char* what;
  double period1, period2;      // one request every period (model 2 from period1 / 2)
  double loose, medium, tight;  // the deadline levels
};
const TraceDesign kTraces[] = {
    {"streaming", "frame streams: the loosest deadline is the frame period; the cluster is busy most of the time",
     1.5, 2.0, 1.5, 1.25, 1.05},
    {"sparse", "requests now and then: the cluster idles most of the time", 4.0, 5.0, 3.0, 2.0, 1.25},
};
enum Level { Loose, Medium, Tight };
constexpr int kPhases = 6;
const double kBackground[kPhases] = {0.0, 0.3, 0.3, 0.0, 0.0, 0.4};
const Level kDeadline1[kPhases] = {Loose, Loose, Tight, Tight, Medium, Medium};
const Level kDeadline2[kPhases] = {Medium, Tight, Loose, Medium, Loose, Tight};
double deadline(const TraceDesign& t, Level level) {
  return level == Loose ? t.loose : level == Medium ? t.medium : t.tight;
}
// The manager's second floor: the full model's accuracy minus this (one point of top-1).
constexpr double kAccuracyDrop = 0.01;
// The sensitivity study: other board factors and memory shares.
const double kSlowerStudy[] = {4.0, 8.0, 16.0};
const double kMemoryShareStudy[] = {0.1, 0.2, 0.4};
// Timing of the sub-networks: rounds x repetitions per config.
constexpr int kRounds = 10, kRepetitions = 300;
// The goals against schedutil: relative energy saving, with no more deadline misses.
constexpr double kGoalOne = 0.19, kGoalTwo = 0.50;

const char* deadline_name(Level level) { return level == Loose ? "loose" : level == Tight ? "tight" : "medium"; }

struct Options {
  std::string out = "build/bench";
  std::string docs;
  std::string model = std::string(DYDNN_SOURCE_DIR) + "/build/demo/model.dydnn";
  std::vector<double> host_us;  // given instead of measured (to replay a run from its JSON)
  bool smoke = false;
};

struct HostConfig {
  nn::Config config;
  double median_us = 0, min_us = 0, accuracy = 0;
};

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// The test top-1 of each config of the incremental run in the committed results (the numbers
// behind docs/results.md); a small scan, as the file's layout is fixed by docs/make_results.py.
std::map<std::string, double> results_accuracy(const std::string& path) {
  std::ifstream in(path);
  DYDNN_CHECK_VALUE(in.good(), "bench", "cannot read '{}' for the accuracies", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::map<std::string, double> out;
  size_t at = text.find("\"evaluations\"");
  DYDNN_CHECK_VALUE(at != std::string::npos, "bench", "'{}' has no \"evaluations\"", path);
  for (;;) {
    const size_t c = text.find("\"config\": \"", at);
    if (c == std::string::npos) break;
    const size_t name_end = text.find('"', c + 11);
    const size_t t = text.find("\"top1\": ", name_end);
    if (t == std::string::npos) break;
    out[text.substr(c + 11, name_end - c - 11)] = std::stod(text.substr(t + 8, 32));
    at = t;
  }
  return out;
}

struct Row {
  std::string policy;
  std::string note;
  runtime::SimResult r;
};

struct Scenario {
  std::string trace, platform, domain, label, scenario;
  double t_full_s = 0;
  std::vector<Row> rows;
  const Row& row(const std::string& policy) const {
    for (const auto& r : rows)
      if (r.policy == policy) return r;
    dydnn::detail::throw_value_error("bench", "no row '{}'", policy);
  }
};

// Energy per inference (the background's left out, as in SimResult) and miss rate of each phase,
// from the marks at the phase boundaries.
struct PhaseStats {
  double energy_per_inference_j = 0, miss_rate = 0;
};
std::vector<PhaseStats> phases(const runtime::SimResult& r) {
  std::vector<runtime::SimMark> marks = {{}};
  marks.insert(marks.end(), r.marks.begin(), r.marks.end());
  marks.push_back({r.end_s, r.energy_j, r.background_energy_j, r.arrived, r.served, r.missed});
  std::vector<PhaseStats> out;
  for (size_t k = 1; k < marks.size(); ++k) {
    const auto served = static_cast<double>(marks[k].served - marks[k - 1].served);
    const auto arrived = static_cast<double>(marks[k].arrived - marks[k - 1].arrived);
    const double energy = marks[k].energy_j - marks[k].background_energy_j -
                          (marks[k - 1].energy_j - marks[k - 1].background_energy_j);
    out.push_back({served > 0 ? energy / served : 0.0,
                   arrived > 0 ? static_cast<double>(marks[k].missed - marks[k - 1].missed) / arrived : 0.0});
  }
  return out;
}

// Energy per request served within its deadline (mJ); infinite when none was.
double on_time_mj(const runtime::SimResult& r) {
  const size_t on_time = r.served - (r.missed - r.dropped);
  return on_time > 0 ? (r.energy_j - r.background_energy_j) / static_cast<double>(on_time) * 1e3
                     : std::numeric_limits<double>::infinity();
}

runtime::SimStream stream(const std::string& name, nn::DynamicNet net, const std::vector<runtime::SimConfig>& configs,
                          double t_full, const TraceDesign& design, double period, double offset,
                          const Level* deadlines, double phase_s) {
  runtime::SimStream s;
  s.name = name;
  s.net = std::move(net);
  s.configs = configs;
  s.period_s = period * t_full;
  s.offset_s = offset * t_full;
  for (int k = 0; k < kPhases; ++k) s.deadline_s.push_back({k * phase_s, deadline(design, deadlines[k]) * t_full});
  return s;
}

// The least energy fixed (config per stream, frequency) with no more misses than `max_misses`
// and every config at or above the floor; when none manages that, the one with the fewest misses.
Row best_static(const hw::Platform& platform, const std::string& domain, const runtime::SimTrace& trace,
                double floor, size_t max_misses, const std::vector<double>& marks) {
  std::vector<std::vector<size_t>> allowed;
  for (const auto& s : trace.streams) {
    allowed.emplace_back();
    for (size_t c = 0; c < s.configs.size(); ++c)
      if (s.configs[c].accuracy >= floor) allowed.back().push_back(c);
  }
  const auto table = platform.domain(domain).frequencies_hz();
  std::vector<std::vector<size_t>> combos = {{}};
  for (const auto& a : allowed) {
    std::vector<std::vector<size_t>> next;
    for (const auto& c : combos)
      for (size_t k : a) {
        next.push_back(c);
        next.back().push_back(k);
      }
    combos = next;
  }
  const auto name = [&](const runtime::SimPolicy& p) {
    std::vector<std::string> configs;
    for (size_t s = 0; s < p.static_configs.size(); ++s)
      configs.push_back(trace.streams[s].configs[p.static_configs[s]].name);
    return fmt::format("{}@{:g}MHz", fmt::join(configs, "+"), static_cast<double>(p.static_hz) * 1e-6);
  };
  for (const bool within : {true, false}) {
    Row best;
    bool found = false;
    runtime::SimOptions options;
    options.marks_s = marks;
    if (within) options.max_misses = max_misses;
    for (const auto& combo : combos)
      for (const uint64_t hz : table) {
        runtime::SimPolicy p;
        p.kind = runtime::SimPolicyKind::Static;
        p.static_configs = combo;
        p.static_hz = hz;
        const auto r = runtime::simulate(platform, domain, trace, p, options);
        if (r.aborted) continue;
        const bool better = !found || (within ? r.energy_per_inference_j < best.r.energy_per_inference_j
                                              : std::make_pair(r.missed, r.energy_per_inference_j) <
                                                    std::make_pair(best.r.missed, best.r.energy_per_inference_j));
        if (better) {
          best = {"best static (hindsight)", name(p), r};
          found = true;
        }
      }
    if (found) {
      best.note = within ? best.note + ": least energy with no more misses than schedutil"
                         : best.note + ": no static point misses as few as schedutil; the fewest misses";
      return best;
    }
  }
  dydnn::detail::throw_value_error("bench", "no static point at or above the floor {}", floor);
}

}  // namespace

int main(int argc, char** argv) try {
  const auto wall0 = std::chrono::steady_clock::now();
  Options opt;
  for (int k = 1; k < argc; ++k) {
    const std::string a = argv[k];
    const auto value = [&] {
      DYDNN_CHECK_VALUE(k + 1 < argc, "bench", "{} needs a value", a);
      return std::string(argv[++k]);
    };
    if (a == "--out") opt.out = value();
    else if (a == "--docs") opt.docs = value();
    else if (a == "--model") opt.model = value();
    else if (a == "--smoke") opt.smoke = true;
    else if (a == "--host-latency-us") {
      std::stringstream list(value());
      for (std::string item; std::getline(list, item, ',');) opt.host_us.push_back(std::stod(item));
    } else
      dydnn::detail::throw_value_error(
          "bench", "unknown argument '{}' (valid: --out DIR, --docs PATH, --model PATH, --host-latency-us A,AB,..., --smoke)",
          a);
  }
  const double phase_s = opt.smoke ? 0.25 : 10.0;

  // --- The real sub-networks on this machine ---------------------------------------------------
  torch::set_num_threads(1);
  runtime::retain_freed_memory();
  const std::string spec_path = std::string(DYDNN_SPEC_DIR) + "/fashion_mnist_default.spec";
  nn::DynamicNet net(nn::NetSpec::load(spec_path));
  net->eval();
  std::vector<HostConfig> host;
  const auto& net_configs = net->configs();
  if (!opt.host_us.empty()) {
    DYDNN_CHECK_VALUE(opt.host_us.size() == net_configs.size(), "bench",
                      "--host-latency-us has {} values for {} configs (valid: one per config, in order)",
                      opt.host_us.size(), net_configs.size());
    for (size_t k = 0; k < net_configs.size(); ++k) {
      DYDNN_CHECK_VALUE(opt.host_us[k] > 0, "bench", "--host-latency-us value {} = {} (valid: > 0)", k, opt.host_us[k]);
      host.push_back({net_configs[k], opt.host_us[k], opt.host_us[k], 0.0});
    }
  } else {
    // Rounds over the configs in turn, keeping each config's lowest round median: load on this
    // shared machine only ever adds time, and a burst of it then spoils one round, not one config.
    c10::InferenceMode inference;
    const auto image = torch::randn({1, 1, 28, 28});
    for (const auto& c : net_configs) host.push_back({c, std::numeric_limits<double>::infinity(),
                                                  std::numeric_limits<double>::infinity(), 0.0});
    for (int round = 0; round < (opt.smoke ? 2 : kRounds); ++round)
      for (auto& h : host) {
        const auto s = runtime::measure_latency([&] { net->forward(image, h.config); }, opt.smoke ? 5 : 50,
                                                opt.smoke ? 10 : kRepetitions);
        h.median_us = std::min(h.median_us, s.median_us);
        h.min_us = std::min(h.min_us, s.min_us);
      }
  }
  const double measured_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();

  std::string accuracy_source;
  bool from_artifact = false;
  if (std::filesystem::exists(opt.model)) {
    const auto art = io::load(opt.model);
    bool complete = art.net->spec().name == net->spec().name;
    for (const auto& h : host) complete = complete && art.metadata.accuracy.count(h.config) != 0;
    if (complete) {
      for (auto& h : host) h.accuracy = art.metadata.accuracy.at(h.config);
      accuracy_source = fmt::format("measured test top-1 in the model file {} (metadata.accuracy)", opt.model);
      from_artifact = true;
    }
  }
  if (!from_artifact) {
    const std::string path = std::string(DYDNN_SOURCE_DIR) + "/docs/results_data/incremental.json";
    const auto acc = results_accuracy(path);
    for (auto& h : host) {
      DYDNN_CHECK_VALUE(acc.count(h.config.name()) != 0, "bench", "'{}' has no top-1 for config {}", path,
                        h.config.name());
      h.accuracy = acc.at(h.config.name());
    }
    accuracy_source = fmt::format("docs/results.md, incremental training ({}), as {} was {}", path, opt.model,
                                  std::filesystem::exists(opt.model) ? "for another net or incomplete" : "absent");
  }
  const double full_accuracy = host.back().accuracy;
  const double floor_strict = full_accuracy;
  const double floor_loose = full_accuracy - kAccuracyDrop;

  std::cout << fmt::format("host latencies (batch 1, 1 thread, median): {}\naccuracies: {}\n",
                           fmt::join([&] {
                             std::vector<std::string> v;
                             for (const auto& h : host) v.push_back(fmt::format("{} {:.1f} us", h.config.name(), h.median_us));
                             return v;
                           }(), ", "),
                           accuracy_source);

  // --- The simulations ---------------------------------------------------------------------------
  const auto board_configs = [&](const Board& board, double slower, double memory_share) {
    const uint64_t f_max = hw::Platform::builtin(board.platform).domain(board.domain).frequencies_hz().back();
    std::vector<runtime::SimConfig> configs;
    for (const auto& h : host) {
      const double t = slower * h.median_us * 1e-6;
      configs.push_back({h.config.mask(), h.config.name(), h.accuracy, {(1 - memory_share) * t, memory_share * t, f_max}});
    }
    return configs;
  };
  const auto make_trace = [&](const TraceDesign& design, int models, const std::vector<runtime::SimConfig>& configs,
                              double t_full) {
    runtime::SimTrace trace;
    trace.duration_s = kPhases * phase_s;
    for (int k = 0; k < kPhases; ++k) trace.background.push_back({k * phase_s, kBackground[k]});
    trace.streams.push_back(
        stream("model 1", net, configs, t_full, design, design.period1, 0.0, kDeadline1, phase_s));
    if (models == 2)
      trace.streams.push_back(stream("model 2", net, configs, t_full, design, design.period2, design.period1 / 2,
                                     kDeadline2, phase_s));
    return trace;
  };
  runtime::SimOptions options;
  for (int k = 1; k < kPhases; ++k) options.marks_s.push_back(k * phase_s);

  std::vector<Scenario> scenarios;
  for (const auto& design : kTraces)
  for (const auto& board : kBoards) {
    const auto platform = hw::Platform::builtin(board.platform);
    const auto configs = board_configs(board, board.slower, kMemoryShare);
    const double t_full = board.slower * host.back().median_us * 1e-6;
    for (const int models : {1, 2}) {
      const auto trace = make_trace(design, models, configs, t_full);
      Scenario sc{design.name, board.platform, board.domain, board.label, models == 1 ? "one model" : "two models",
                  t_full, {}};
      const auto run = [&](const std::string& name, const runtime::SimPolicy& p, std::string note = {}) {
        sc.rows.push_back({name, std::move(note), runtime::simulate(platform, board.domain, trace, p, options)});
      };
      runtime::SimPolicy manager;
      manager.min_accuracy = floor_strict;
      run("dydnn manager", manager,
          models == 1 ? "ModelManager, min energy, floor = full model's top-1"
                      : "SystemManager + ModelManager per model, floor = full model's top-1");
      manager.min_accuracy = floor_loose;
      run("dydnn manager, floor -1 pt", manager, "as above, floor = full model's top-1 - 0.01");
      for (const char* g : {"schedutil", "ondemand", "conservative", "performance", "powersave"}) {
        runtime::SimPolicy p;
        p.kind = runtime::SimPolicyKind::Governor;
        p.governor = g;
        run(g, p, "full model (ABCD)");
      }
      runtime::SimPolicy ladder;
      ladder.kind = runtime::SimPolicyKind::Ladder;
      ladder.governor = "schedutil";
      ladder.min_accuracy = floor_strict;
      run("Dynamic-OFA ladder", ladder, "config by the ladder (20-sample average), frequency by schedutil");
      sc.rows.push_back(
          best_static(platform, board.domain, trace, floor_strict, sc.row("schedutil").r.missed, options.marks_s));
      scenarios.push_back(std::move(sc));
    }
  }

  // How the verdicts move with the two scaling assumptions: the manager (strict floor) against
  // schedutil for other board factors and memory shares.
  struct Sensitivity {
    std::string trace, platform, scenario;
    double slower, memory_share, saving, miss_rate, schedutil_miss_rate;
  };
  std::vector<Sensitivity> sensitivity;
  for (const auto& design : kTraces)
  for (const auto& board : kBoards) {
    const auto platform = hw::Platform::builtin(board.platform);
    for (const double slower : kSlowerStudy)
      for (const double memory_share : kMemoryShareStudy) {
        const auto configs = board_configs(board, slower, memory_share);
        const double t_full = slower * host.back().median_us * 1e-6;
        for (const int models : {1, 2}) {
          const auto trace = make_trace(design, models, configs, t_full);
          runtime::SimPolicy manager;
          manager.min_accuracy = floor_strict;
          runtime::SimPolicy schedutil;
          schedutil.kind = runtime::SimPolicyKind::Governor;
          schedutil.governor = "schedutil";
          const auto m = runtime::simulate(platform, board.domain, trace, manager);
          const auto s = runtime::simulate(platform, board.domain, trace, schedutil);
          sensitivity.push_back({design.name, board.platform, models == 1 ? "one model" : "two models", slower,
                                 memory_share,
                                 1.0 - m.energy_per_inference_j / s.energy_per_inference_j, m.miss_rate, s.miss_rate});
        }
      }
  }
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();

  // --- Goals -----------------------------------------------------------------------------------
  struct Goal {
    std::string trace, platform, scenario, policy, text;
    double saving, accuracy;
    size_t misses, schedutil_misses;
    bool met;
  };
  std::vector<Goal> goals;
  for (const auto& sc : scenarios)
    for (const char* policy : {"dydnn manager", "dydnn manager, floor -1 pt"}) {
      const auto& m = sc.row(policy).r;
      const auto& s = sc.row("schedutil").r;
      const double goal = sc.scenario == "one model" ? kGoalOne : kGoalTwo;
      const double saving = 1.0 - m.energy_per_inference_j / s.energy_per_inference_j;
      goals.push_back({sc.trace, sc.platform, sc.scenario, policy,
                       fmt::format(">= {:.0f}% less energy per inference than schedutil, no more deadline misses",
                                   goal * 100),
                       saving, m.mean_accuracy, m.missed, s.missed, saving >= goal && m.missed <= s.missed});
    }

  // --- Output ------------------------------------------------------------------------------------
  std::cout << fmt::format("\n{:<10} {:<12} {:<10} {:<28} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>7}\n",
                           "trace", "platform", "scenario", "policy", "mJ/inf", "miss %", "p50 ms", "p95 ms", "p99 ms", "acc", "sw",
                           "MHz");
  for (const auto& sc : scenarios)
    for (const auto& row : sc.rows) {
      const auto& r = row.r;
      std::cout << fmt::format(
          "{:<10} {:<12} {:<10} {:<28} {:>9.4f} {:>8.2f} {:>8.3f} {:>8.3f} {:>8.3f} {:>7.4f} {:>6} {:>7.0f}\n", sc.trace,
          sc.platform, sc.scenario, row.policy, r.energy_per_inference_j * 1e3, r.miss_rate * 100,
                               r.p50_s * 1e3, r.p95_s * 1e3, r.p99_s * 1e3, r.mean_accuracy, r.switches,
                               r.mean_job_hz * 1e-6);
    }
  for (const auto& g : goals)
    std::cout << fmt::format("goal {} / {} / {} / {}: {}: saving {:.1f}%, misses {} vs schedutil {}: {}\n", g.trace,
                             g.platform, g.scenario, g.policy, g.text, g.saving * 100, g.misses, g.schedutil_misses,
                             g.met ? "met" : "NOT met");

  std::string json = "{\n";
  json += fmt::format("  \"smoke\": {},\n  \"wall_s\": {{\"latency_measurement\": {:.3f}, \"total\": {:.3f}}},\n",
                      opt.smoke, measured_s, total_s);
  json += fmt::format("  \"host\": {{\n    \"latency\": {},\n",
                      json_string(opt.host_us.empty() ? fmt::format("measured: batch 1, 1 intra-op thread, per config "
                                                                    "the lowest median of {} rounds of {} runs "
                                                                    "(configs interleaved)",
                                                                    opt.smoke ? 2 : kRounds, opt.smoke ? 10 : kRepetitions)
                                                      : std::string("given with --host-latency-us")));
  json += fmt::format("    \"spec\": {},\n    \"configs\": [\n", json_string(spec_path));
  for (size_t k = 0; k < host.size(); ++k)
    json += fmt::format("      {{\"config\": \"{}\", \"median_us\": {:.3f}, \"min_us\": {:.3f}, \"accuracy\": {:.4f}}}{}\n",
                        host[k].config.name(), host[k].median_us, host[k].min_us, host[k].accuracy,
                        k + 1 < host.size() ? "," : "");
  json += "    ]\n  },\n";
  json += fmt::format("  \"accuracy_source\": {},\n", json_string(accuracy_source));
  json += "  \"assumptions\": {\n";
  json += "    \"board_slower_than_host\": {";
  for (size_t k = 0; k < std::size(kBoards); ++k)
    json += fmt::format("{}\"{}\": {}", k ? ", " : "", kBoards[k].platform, kBoards[k].slower);
  json += "},\n";
  json += fmt::format("    \"work\": \"Tc = {:.2f} x slower x host latency at f_ref = f_max, Tm = {:.2f} x slower x host "
                      "latency (frequency-independent), T(f) = Tc f_max / f + Tm, stretched by 1 / (1 - background)\",\n",
                      1 - kMemoryShare, kMemoryShare);
  json += "    \"power\": \"data/platforms: C V^2 f per busy core + static_w (Exynos A15: device-tree C and V, "
          "static assumed; Jetson Nano: all assumed)\",\n";
  json += "    \"energy\": \"(the cluster's energy over the run, static power and idle time included, less the "
          "background's dynamic energy) / requests served\",\n";
  json += fmt::format("    \"accuracy_floor\": {:.4f},\n    \"accuracy_floor_rule\": \"the full model's (ABCD) top-1: "
                      "what every governor baseline delivers\",\n",
                      floor_strict);
  json += fmt::format("    \"accuracy_floor_loose\": {:.4f},\n", floor_loose);
  json += "    \"manager\": \"MinEnergy subject to latency <= time left to the deadline and top-1 >= floor; points "
          "(config, frequency), latency T(f), energy = one core's dynamic power x T(f); default SelectorOptions; "
          "a frequency change must fit after the transition latency\",\n";
  json += "    \"best_static\": \"one (config per model, frequency) for the whole run, chosen after the fact: the "
          "least energy per inference with no more deadline misses than schedutil and every config at or above "
          "the floor\",\n";
  json += "    \"ladder\": \"Dynamic-OFA: rungs = Pareto configs, step down when the 20-sample average exceeds the "
          "deadline, up when below the floor with slack; frequency left to schedutil\"\n  },\n";
  const auto level_names = [](const Level* levels) {
    std::vector<std::string> v;
    for (int k = 0; k < kPhases; ++k) v.push_back(json_string(deadline_name(levels[k])));
    return fmt::format("{}", fmt::join(v, ", "));
  };
  json += fmt::format("  \"phases\": {{\"phase_s\": {}, \"count\": {}, \"background\": [{}], "
                      "\"deadline_model1\": [{}], \"deadline_model2\": [{}]}},\n",
                      phase_s, kPhases, fmt::join(kBackground, ", "), level_names(kDeadline1), level_names(kDeadline2));
  json += "  \"traces\": [\n";
  for (size_t k = 0; k < std::size(kTraces); ++k) {
    const auto& t = kTraces[k];
    json += fmt::format("    {{\"name\": \"{}\", \"what\": {}, \"unit\": \"T_full = the full model's latency at f_max "
                        "on the board\", \"period_model1\": {}, \"period_model2\": {}, \"offset_model2\": {}, "
                        "\"loose\": {}, \"medium\": {}, \"tight\": {}}}{}\n",
                        t.name, json_string(t.what), t.period1, t.period2, t.period1 / 2, t.loose, t.medium, t.tight,
                        k + 1 < std::size(kTraces) ? "," : "");
  }
  json += "  ],\n";
  json += "  \"results\": [\n";
  for (size_t i = 0; i < scenarios.size(); ++i) {
    const auto& sc = scenarios[i];
    json += fmt::format("    {{\"trace\": \"{}\", \"platform\": \"{}\", \"domain\": \"{}\", \"scenario\": \"{}\", "
                        "\"t_full_ms\": {:.4f}, \"policies\": [\n",
                        sc.trace, sc.platform, sc.domain, sc.scenario, sc.t_full_s * 1e3);
    for (size_t j = 0; j < sc.rows.size(); ++j) {
      const auto& row = sc.rows[j];
      const auto& r = row.r;
      json += fmt::format(
          "      {{\"policy\": {}, \"note\": {}, \"energy_per_inference_mj\": {:.6f}, \"energy_j\": {:.6f}, "
          "\"background_energy_j\": {:.6f}, "
          "\"miss_rate\": {:.6f}, \"missed\": {}, \"dropped\": {}, \"p50_ms\": {:.4f}, \"p95_ms\": {:.4f}, "
          "\"p99_ms\": {:.4f}, \"mean_accuracy\": {:.5f}, \"switches\": {}, \"requests\": {}, \"served\": {}, "
          "\"infeasible\": {}, \"mean_job_mhz\": {:.1f}, \"static_share\": {:.4f}, "
          "\"energy_per_on_time_inference_mj\": {}, \"phases\": [{}]}}{}\n",
          json_string(row.policy), json_string(row.note), r.energy_per_inference_j * 1e3, r.energy_j,
          r.background_energy_j, r.miss_rate,
          r.missed, r.dropped, r.p50_s * 1e3, r.p95_s * 1e3, r.p99_s * 1e3, r.mean_accuracy, r.switches, r.arrived,
          r.served, r.infeasible, r.mean_job_hz * 1e-6, r.static_energy_j / (r.energy_j - r.background_energy_j),
          std::isfinite(on_time_mj(r)) ? fmt::format("{:.6f}", on_time_mj(r)) : std::string("null"),
          fmt::join([&] {
            std::vector<std::string> v;
            for (const auto& ph : phases(r))
              v.push_back(fmt::format("{{\"energy_per_inference_mj\": {:.6f}, \"miss_rate\": {:.6f}}}",
                                      ph.energy_per_inference_j * 1e3, ph.miss_rate));
            return v;
          }(), ", "),
          j + 1 < sc.rows.size() ? "," : "");
    }
    json += fmt::format("    ]}}{}\n", i + 1 < scenarios.size() ? "," : "");
  }
  json += "  ],\n  \"sensitivity\": [\n";
  for (size_t k = 0; k < sensitivity.size(); ++k) {
    const auto& v = sensitivity[k];
    json += fmt::format("    {{\"trace\": \"{}\", \"platform\": \"{}\", \"scenario\": \"{}\", "
                        "\"board_slower_than_host\": {}, \"memory_share\": {}, \"manager_energy_saving\": {:.4f}, "
                        "\"miss_rate\": {:.6f}, \"schedutil_miss_rate\": {:.6f}}}{}\n",
                        v.trace, v.platform, v.scenario, v.slower, v.memory_share, v.saving, v.miss_rate, v.schedutil_miss_rate,
                        k + 1 < sensitivity.size() ? "," : "");
  }
  json += "  ],\n  \"goals\": [\n";
  for (size_t k = 0; k < goals.size(); ++k) {
    const auto& g = goals[k];
    json += fmt::format("    {{\"trace\": \"{}\", \"platform\": \"{}\", \"scenario\": \"{}\", \"policy\": {}, "
                        "\"goal\": {}, \"energy_saving\": {:.4f}, \"mean_accuracy\": {:.5f}, \"misses\": {}, "
                        "\"schedutil_misses\": {}, \"met\": {}}}{}\n",
                        g.trace, g.platform, g.scenario, json_string(g.policy), json_string(g.text), g.saving, g.accuracy,
                        g.misses, g.schedutil_misses, g.met, k + 1 < goals.size() ? "," : "");
  }
  json += "  ]\n}\n";
  std::filesystem::create_directories(opt.out);
  std::ofstream(opt.out + "/governors.json") << json;
  std::cout << "wrote " << opt.out << "/governors.json (" << fmt::format("{:.1f}", total_s) << " s)\n";

  if (!opt.docs.empty()) {
    std::string md = "# The runtime manager against the Linux governors (simulated boards)\n\n";
    md += "Generated by `benchmarks/bench_governors.cpp`; do not edit by hand. Reproduce with:\n\n"
          "```\nbuild/benchmarks/bench_governors --out build/bench --docs docs/governors_benchmark.md\n```\n\n";
    if (opt.smoke) md += "**This page comes from a `--smoke` run (a tiny trace): its numbers mean nothing.**\n\n";
    md += "Each board is simulated (`hw::SimBackend`, virtual clock): the numbers below are a model's, not a "
          "board's. What is measured is the latency of each sub-network on the machine that ran the benchmark; "
          "the rest follows from the stated assumptions.\n\n";
    md += fmt::format(
        "## Goals (against schedutil)\n\nEach goal is judged for the manager with the accuracy floor at the full "
        "model's top-1 ({:.4f}, what the baselines deliver) and again with the floor one point lower ({:.4f}), on "
        "both traces (see *Traces*): `streaming` is the seed's setting, `sparse` shows where the gains shrink.\n\n",
        floor_strict, floor_loose);
    md += "| trace | platform | scenario | manager | goal | energy saving | mean top-1 | misses (manager / "
          "schedutil) | met |\n|---|---|---|---|---|---:|---:|---:|---|\n";
    for (const auto& g : goals)
      md += fmt::format("| {} | {} | {} | {} | {} | {:.1f}% | {:.4f} | {} / {} | {} |\n", g.trace, g.platform,
                        g.scenario, g.policy, g.text, g.saving * 100, g.accuracy, g.misses, g.schedutil_misses,
                        g.met ? "yes" : "**no**");
    for (const auto& design : kTraces) {
      double worst_miss = 0, best_schedutil_miss = 1, lo = 1e9, hi = -1e9;
      int met = 0, met_loose = 0, count = 0;
      for (const auto& sc : scenarios) {
        if (sc.trace != design.name) continue;
        const auto& m = sc.row("dydnn manager").r;
        const auto& s = sc.row("schedutil").r;
        worst_miss = std::max(worst_miss, m.miss_rate);
        best_schedutil_miss = std::min(best_schedutil_miss, s.miss_rate);
        const double change = m.energy_per_inference_j / s.energy_per_inference_j - 1.0;
        lo = std::min(lo, change);
        hi = std::max(hi, change);
        ++count;
      }
      for (const auto& g : goals)
        if (g.trace == design.name && g.met) (g.policy == "dydnn manager" ? met : met_loose) += 1;
      md += fmt::format(
          "\n**{}**: goals met in {} of {} scenarios at the full model's accuracy and in {} of {} with the floor "
          "one point lower. The manager (floor = full model) misses at most {:.2f}% of the requests, schedutil at "
          "least {:.1f}%; the manager's energy per inference differs from schedutil's by {:+.1f}% to {:+.1f}%.\n",
          design.name, met, count, met_loose, count, worst_miss * 100, best_schedutil_miss * 100, lo * 100, hi * 100);
    }
    md += "\nWhy the gains differ. Schedutil does not know the deadlines: it sets the frequency from the "
          "utilisation. On the streaming trace the core is busy most of the time, schedutil runs near f_max, where a "
          "cycle costs the most (V^2), and still misses the tight deadlines under background load; the manager meets "
          "them with a smaller sub-network at a lower voltage. On the sparse trace schedutil clocks down to a "
          "frequency that misses most deadlines and spends little doing so, while the manager raises the frequency "
          "to meet them: it buys its near-zero miss rate with energy, which is why its saving there is small or "
          "negative. Small changes of the measured latencies move these numbers by several points, as the manager "
          "and the best static point jump between operating points; the sensitivity study at the end varies the "
          "scaling assumptions.\n";
    md += "\n## Set-up\n\n### Sub-networks (measured here) and accuracies\n\n";
    md += fmt::format("Latency of `fashion_mnist_default.spec`: {}. Accuracy: {}.\n\n",
                      opt.host_us.empty() ? fmt::format("batch 1, 1 intra-op thread, per config the lowest median of "
                                                        "{} rounds of {} runs, the configs taking turns (load on "
                                                        "this shared machine only adds time)",
                                                        opt.smoke ? 2 : kRounds, opt.smoke ? 10 : kRepetitions)
                                          : std::string("given on the command line (--host-latency-us), not measured"),
                      accuracy_source);
    md += "| config | host latency (µs) | top-1 |";
    for (const auto& b : kBoards) md += fmt::format(" {} at f_max (ms) |", b.platform);
    md += "\n|---|---:|---:|";
    for (size_t k = 0; k < std::size(kBoards); ++k) md += "---:|";
    md += "\n";
    for (const auto& h : host) {
      md += fmt::format("| {} | {:.1f} | {:.4f} |", h.config.name(), h.median_us, h.accuracy);
      for (const auto& b : kBoards) md += fmt::format(" {:.3f} |", b.slower * h.median_us * 1e-3);
      md += "\n";
    }
    md += "\n### Assumptions\n\n";
    md += fmt::format(
        "- **Scaling to the boards.** Neither board was measured. Each board's cluster is assumed to run the net "
        "k times slower than this host at its highest frequency ({}; Exynos A15 at 2.0 GHz, Nano A57 at 1.479 GHz: "
        "128-bit NEON cores against this host's AVX-512 core), a round guess. Of that time, {:.0f}% scales with the core clock "
        "(`Tc`, at f_ref = f_max) and {:.0f}% does not (`Tm`, memory); the weights fit in L2. A job takes "
        "`T(f) = Tc f_max / f + Tm`, stretched by `1 / (1 - background)`.\n",
        fmt::join([] {
          std::vector<std::string> v;
          for (const auto& b : kBoards) v.push_back(fmt::format("k = {:g} for {}", b.slower, b.platform));
          return v;
        }(), ", "),
        (1 - kMemoryShare) * 100, kMemoryShare * 100);
    md += "- **Power.** `data/platforms/*.platform`: `C V^2 f` per busy core plus the cluster's static power. "
          "Exynos A15: C and the voltages from the Linux device tree, static power (0.20 W) assumed. Jetson Nano: "
          "the whole power model assumed (no public voltage table). See `data/platforms/README.md`.\n";
    md += "- **Energy per inference** = (the cluster's energy over the whole run, static power and the idle time "
          "between requests included, less the background's dynamic energy) / requests served. The background is "
          "another program: it takes a share of the core time, so at a higher frequency it gets more done and "
          "spends more, which is not the inference's cost (`SimResult::background_energy_j`; the JSON has both).\n";
    md += fmt::format(
        "- **Accuracy floor** = {:.4f}, the full model's top-1, i.e. what every governor baseline delivers: the "
        "manager, the ladder and the static points may only use configs at least that accurate (the manager "
        "falls back to the fastest point when nothing is feasible). The row *floor -1 pt* uses {:.4f} instead.\n",
        floor_strict, floor_loose);
    md += "- **Manager.** Per request: minimum energy subject to latency <= the time left to the deadline and top-1 "
          ">= the floor, over every (config, frequency) of the cluster; predicted latency `T(f)` of the simulator, "
          "predicted energy = one core's dynamic power x `T(f)` (static power does not depend on the choice); "
          "default `SelectorOptions`; a change of frequency must fit in what is left after the transition latency, and the "
          "frequency stays put when a lower one fitted the whole budget but paying for the transition would end higher. "
          "It observes each job's latency (normalised to the frequency its point asked for), so the background "
          "raises its slowdown. One model: a `ModelManager` sets the frequency (userspace) before each job. Two "
          "models: the `SystemManager` sets the cluster to the lowest frequency at which both models have a "
          "feasible point, each model re-picks its config there, and a decision never lowers the frequency below "
          "what the other model's running job started at.\n";
    md += "- **Baselines.** The simulated `schedutil`, `ondemand`, `conservative`, `performance` and `powersave` "
          "(kernel defaults, `hw/governors.h`) with the full model (ABCD) for every request. Dynamic-OFA's ladder "
          "chooses the config (rungs: the Pareto configs; step down when the 20-sample average latency exceeds the "
          "deadline, up when below the floor with slack) and leaves the frequency to schedutil. The best static "
          "point is chosen **in hindsight**: every fixed (config per model, frequency) with configs at or above "
          "the floor was run, and the one with the least energy per inference among those with no more deadline "
          "misses than schedutil is shown.\n";
    md += "- **Serving.** Requests arrive periodically; each model runs one at a time on its own core; a request "
          "arriving while the previous one runs waits, one at most (a newer arrival replaces it and the older is "
          "dropped: a miss). A request misses when finish - arrival > its deadline.\n";
    md += fmt::format("\n### Traces\n\nTimes in units of T_full, the full model's latency at f_max on the board "
                      "(Exynos: {:.3f} ms, Nano: {:.3f} ms). Model 1 gets a request every period 1; model 2 (two-model "
                      "runs only, the same net) every period 2, from period 1 / 2.\n\n",
                      kBoards[0].slower * host.back().median_us * 1e-3, kBoards[1].slower * host.back().median_us * 1e-3);
    md += "| trace | what | period 1 | period 2 | loose | medium | tight |\n|---|---|---:|---:|---:|---:|---:|\n";
    for (const auto& t : kTraces)
      md += fmt::format("| {} | {} | {:g} | {:g} | {:g} | {:g} | {:g} |\n", t.name, t.what, t.period1, t.period2,
                        t.loose, t.medium, t.tight);
    md += fmt::format("\nBoth run the same {} phases of {:g} s:\n\n", kPhases, phase_s);
    md += "| phase | from (s) | background share | model 1 deadline | model 2 deadline |\n|---|---:|---:|---|---|\n";
    for (int k = 0; k < kPhases; ++k)
      md += fmt::format("| {} | {:g} | {:g} | {} | {} |\n", k + 1, k * phase_s, kBackground[k],
                        deadline_name(kDeadline1[k]), deadline_name(kDeadline2[k]));
    md += "\n## Results\n\nLatency = finish - arrival of the served requests (nearest rank). Switches = changes of "
          "(config, frequency) between consecutive requests of a model. MHz = the cluster's mean frequency while "
          "jobs ran. Static share = the part of the energy that is the cluster's static power (the same for every "
          "policy over the same run time). mJ per on-time inference = the energy divided by the requests served "
          "within their deadline (not the goal's measure; shown because the baselines miss many).\n";
    for (const auto& sc : scenarios) {
      const double base = sc.row("schedutil").r.energy_per_inference_j;
      md += fmt::format("\n### {} trace: {}, {}\n\n", sc.trace, sc.label, sc.scenario);
      md += "| policy | energy / inference (mJ) | vs schedutil | miss rate | p50 (ms) | p95 (ms) | p99 (ms) | mean "
            "top-1 | switches | MHz | static share | mJ per on-time inference | requests | notes "
            "|\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
      for (const auto& row : sc.rows) {
        const auto& r = row.r;
        std::string note = row.note;
        if (r.dropped) note += fmt::format("; {} dropped", r.dropped);
        if (r.infeasible) note += fmt::format("; {} decisions infeasible", r.infeasible);
        md += fmt::format(
            "| {} | {:.4f} | {:+.1f}% | {:.2f}% | {:.3f} | {:.3f} | {:.3f} | {:.4f} | {} | {:.0f} | {:.0f}% | {} | {} "
            "| {} |\n",
            row.policy, r.energy_per_inference_j * 1e3, (r.energy_per_inference_j / base - 1.0) * 100,
            r.miss_rate * 100, r.p50_s * 1e3, r.p95_s * 1e3, r.p99_s * 1e3, r.mean_accuracy, r.switches,
            r.mean_job_hz * 1e-6, r.static_energy_j / (r.energy_j - r.background_energy_j) * 100,
            std::isfinite(on_time_mj(r)) ? fmt::format("{:.3f}", on_time_mj(r)) : std::string("none on time"),
            r.arrived, note);
      }
      const std::vector<std::string> shown = {"dydnn manager", "dydnn manager, floor -1 pt", "schedutil", "ondemand",
                                              "performance", "best static (hindsight)"};
      md += "\nBy phase: energy per inference (mJ) / miss rate.\n\n| phase | background | deadlines |";
      for (const auto& p : shown) md += " " + p + " |";
      md += "\n|---|---:|---|";
      for (size_t k = 0; k < shown.size(); ++k) md += "---:|";
      md += "\n";
      std::vector<std::vector<PhaseStats>> by_policy;
      for (const auto& p : shown) by_policy.push_back(phases(sc.row(p).r));
      for (int k = 0; k < kPhases; ++k) {
        md += fmt::format("| {} | {:g} | {}{} |", k + 1, kBackground[k], deadline_name(kDeadline1[k]),
                          sc.scenario == "one model" ? "" : std::string(", ") + deadline_name(kDeadline2[k]));
        for (const auto& ph : by_policy)
          md += fmt::format(" {:.3f} / {:.1f}% |", ph[static_cast<size_t>(k)].energy_per_inference_j * 1e3,
                            ph[static_cast<size_t>(k)].miss_rate * 100);
        md += "\n";
      }
    }
    md += "\n## Sensitivity to the scaling assumptions\n\nThe manager (floor = the full model's top-1) against "
          "schedutil with the board factor and the memory share changed (the trace stays in units of T_full): "
          "energy saving per inference, and (miss rate of the manager / of schedutil). The goals are 19% (one "
          "model) and 50% (two models).\n\n| trace | platform | scenario |";
    for (const double slower : kSlowerStudy)
      for (const double memory_share : kMemoryShareStudy) md += fmt::format(" {:g}x, Tm {:.0f}% |", slower, memory_share * 100);
    md += "\n|---|---|---|";
    for (size_t k = 0; k < std::size(kSlowerStudy) * std::size(kMemoryShareStudy); ++k) md += "---:|";
    md += "\n";
    for (const auto& design : kTraces)
    for (const auto& board : kBoards)
      for (const char* scenario : {"one model", "two models"}) {
        md += fmt::format("| {} | {} | {} |", design.name, board.platform, scenario);
        for (const auto& v : sensitivity)
          if (v.trace == design.name && v.platform == board.platform && v.scenario == scenario)
            md += fmt::format(" {:.1f}% ({:.2f}% / {:.1f}%) |", v.saving * 100, v.miss_rate * 100,
                              v.schedutil_miss_rate * 100);
        md += "\n";
      }
    md += fmt::format("\nThe benchmark took {:.1f} s (of which {:.1f} s timing the sub-networks).\n", total_s,
                      measured_s);
    std::ofstream(opt.docs) << md;
    std::cout << "wrote " << opt.docs << "\n";
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_governors: " << e.what() << "\n";
  return 1;
}
