// Decision time of the runtime selector (issue "runtime manager", §2): the median and p99
// time of one `Selector::decide` over tables of realistic sizes, with constraints that
// change every call (so decisions switch), against the goal of <= 5 us and <= 1% of the
// smallest config's latency, which is measured here too (the default net at its smallest
// config, batch 1, 1 thread). The ladder policy is timed as the baseline.
// Writes <out>/selector.json, prints a table and with --docs a generated markdown page.
//
//   build/benchmarks/bench_selector [--out build/bench] [--docs docs/selector_benchmark.md] [--smoke]
#include <dydnn/dydnn.h>
#include <dydnn/runtime/ladder.h>
#include <dydnn/runtime/selector.h>

#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>

using namespace dydnn;

namespace {

// configs x threads x frequencies points, with latency falling with threads and frequency
// and accuracy rising with the config, as a profiled table would look.
std::vector<runtime::Point> table(int configs, int threads, int frequencies) {
  std::vector<runtime::Point> points;
  for (int c = 1; c <= configs; ++c)
    for (int t = 1; t <= threads; ++t)
      for (int f = 1; f <= frequencies; ++f) {
        runtime::Point p;
        p.config = (uint64_t{1} << c) - 1;
        p.name = fmt::format("c{}@t{}f{}", c, t, f);
        p.knobs = {{"threads", t}, {"cpu_khz", 200000.0 * f}};
        p.latency_s = 1e-4 * c / (0.6 + 0.4 * t) * (static_cast<double>(frequencies) / f);
        p.accuracy = 0.80 + 0.03 * c;
        p.power_w = 0.5 + 0.2 * t * f / frequencies + 0.1 * c;
        points.push_back(p);
      }
  return points;
}

template <typename F>
std::pair<double, double> time_calls(F&& call, int64_t calls) {
  std::vector<double> ns;
  ns.reserve(static_cast<size_t>(calls));
  for (int64_t k = 0; k < calls; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    call(k);
    const auto t1 = std::chrono::steady_clock::now();
    ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
  }
  std::sort(ns.begin(), ns.end());
  return {ns[ns.size() / 2] * 1e-3, ns[std::min(ns.size() - 1, ns.size() * 99 / 100)] * 1e-3};
}

}  // namespace

int main(int argc, char** argv) try {
  std::string out = "build/bench";
  std::string docs;
  bool smoke = false;
  for (int k = 1; k < argc; ++k) {
    const std::string a = argv[k];
    if (a == "--out" && k + 1 < argc) out = argv[++k];
    else if (a == "--docs" && k + 1 < argc) docs = argv[++k];
    else if (a == "--smoke") smoke = true;
    else dydnn::detail::throw_value_error("bench", "unknown argument '{}' (valid: --out DIR, --docs PATH, --smoke)", a);
  }
  const int64_t calls = smoke ? 1000 : 200000;

  // The smallest config's latency: the yardstick for "negligible".
  torch::set_num_threads(1);
  runtime::retain_freed_memory();
  nn::DynamicNet net(nn::NetSpec::load(std::string(DYDNN_SPEC_DIR) + "/fashion_mnist_default.spec"));
  net->eval();
  const auto smallest = net->configs().front();
  c10::InferenceMode inference;
  const auto image = torch::randn({1, 1, 28, 28});
  const double smallest_us =
      runtime::measure_latency([&] { net->forward(image, smallest); }, smoke ? 2 : 50, smoke ? 5 : 2000).median_us;

  struct Row {
    std::string policy;
    size_t points;
    double median_us, p99_us;
  };
  std::vector<Row> rows;
  const std::vector<std::array<int, 3>> sizes = {{4, 1, 1}, {4, 2, 19}, {6, 4, 19}};
  for (const auto& [configs, threads, frequencies] : sizes) {
    const auto points = table(configs, threads, frequencies);
    // A limit that moves every call between 40% and 100% of the slowest point, and
    // measurements that jitter around the prediction.
    double slowest = 0;
    for (const auto& p : points) slowest = std::max(slowest, p.latency_s);
    size_t sink = 0;
    const auto time_selector = [&](const char* label, double max_power_w) {
      runtime::Selector selector(points);
      runtime::Constraints limits;
      limits.max_power_w = max_power_w;
      const auto [median, p99] = time_calls(
          [&](int64_t k) {
            limits.max_latency_s = slowest * (0.4 + 0.6 * static_cast<double>(k % 97) / 96.0);
            const auto d = selector.decide(limits, runtime::Objective::MaxAccuracy, 1e-3 * static_cast<double>(k));
            selector.observe(d.index, d.predicted_latency_s * (1.0 + 0.05 * static_cast<double>(k % 7 - 3)));
            sink += d.index;
          },
          calls);
      rows.push_back({label, points.size(), median, p99});
    };
    time_selector("selector (decide + observe)", std::numeric_limits<double>::infinity());
    // A power cap that the prefix's best point often breaks: the slow path (a scan).
    time_selector("selector, power-capped (scan)", 1.0);
    runtime::LadderPolicy ladder(points);
    const auto [lmedian, lp99] = time_calls(
        [&](int64_t k) {
          const size_t p = ladder.decide(slowest * 0.7, 1.0, 1e-3 * static_cast<double>(k));
          ladder.observe(points[p].latency_s);
          sink += p;
        },
        calls);
    rows.push_back({"ladder (decide + observe)", points.size(), lmedian, lp99});
    if (sink == 42) std::cout << "";  // keeps the calls from being optimised away
  }

  const double goal_us = std::min(5.0, 0.01 * smallest_us);
  std::cout << fmt::format("smallest config ({}) at batch 1, 1 thread: {:.1f} us; goal: median decision <= {:.2f} us\n",
                           smallest.name(), smallest_us, goal_us);
  std::cout << fmt::format("{:<30} {:>7} {:>11} {:>9} {:>6}\n", "policy", "points", "median us", "p99 us", "goal");
  std::string page = fmt::format(
      "# Decision time of the runtime selector\n\nGenerated by `build/benchmarks/bench_selector --out build/bench "
      "--docs docs/selector_benchmark.md` (part of `make bench`); do not edit by hand.\n\n"
      "One call = `decide` + `observe` with a latency limit that changes every call (so decisions switch); "
      "{} calls per row. The goal: a median of at most 5 us and at most 1% of the smallest config's latency "
      "({} at batch 1, 1 thread: {:.1f} us here), i.e. **{:.2f} us**. Tables of configs x threads x frequencies "
      "(synthetic values, real sizes); \"power-capped\" adds a cap that the fast path's candidate often breaks, "
      "so the selector scans.\n\n| policy | points | median us | p99 us | goal |\n|---|---:|---:|---:|---|\n",
      calls, smallest.name(), smallest_us, goal_us);
  std::string json = fmt::format("{{\n  \"smoke\": {},\n  \"calls\": {},\n  \"smallest_config\": \"{}\",\n"
                                 "  \"smallest_latency_us\": {:.3f},\n  \"goal_us\": {:.4f},\n  \"rows\": [\n",
                                 smoke, calls, smallest.name(), smallest_us, goal_us);
  for (size_t k = 0; k < rows.size(); ++k) {
    const auto& r = rows[k];
    const bool met = r.median_us <= goal_us;
    std::cout << fmt::format("{:<30} {:>7} {:>11.3f} {:>9.3f} {:>6}\n", r.policy, r.points, r.median_us, r.p99_us,
                             met ? "met" : "MISSED");
    page += fmt::format("| {} | {} | {:.3f} | {:.3f} | {} |\n", r.policy, r.points, r.median_us, r.p99_us,
                        met ? "met" : "**missed**");
    json += fmt::format("    {{\"policy\": \"{}\", \"points\": {}, \"median_us\": {:.4f}, \"p99_us\": {:.4f}, "
                        "\"goal_met\": {}}}{}\n",
                        r.policy, r.points, r.median_us, r.p99_us, met, k + 1 < rows.size() ? "," : "");
  }
  json += "  ]\n}\n";
  std::filesystem::create_directories(out);
  std::ofstream(out + "/selector.json") << json;
  std::cout << "wrote " << out << "/selector.json\n";
  if (!docs.empty() && !smoke) {
    std::ofstream(docs) << page;
    std::cout << "wrote " << docs << "\n";
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_selector: " << e.what() << "\n";
  return 1;
}
